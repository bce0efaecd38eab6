#![no_main]
// The harness and its properties live in the library (closelab::fuzzing),
// shared with the stable-toolchain corpus test tests/it/fuzz_corpus.rs.
libfuzzer_sys::fuzz_target!(|data: &[u8]| closelab::fuzzing::control(data));
