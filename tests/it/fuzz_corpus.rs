//! The `cargo fuzz` targets as property tests on the stable toolchain: every
//! file of `fuzz/corpus/TARGET/` (hand-made seeds, the inputs the fuzzer
//! found that reach new code, and every crash it ever found) goes through
//! the same harness the fuzzer runs (`closelab::fuzzing`), which asserts
//! the target's properties. Then a fixed number of seeded mutations of each
//! file (bit flips, byte changes, cuts, splices) go through it too, so the
//! test reaches a little beyond the corpus yet gives the same result on
//! every run.

use std::fs;
use std::panic;
use std::path::{Path, PathBuf};

use closelab::fuzzing::TARGETS;

/// Mutations per corpus file: enough to cross the seeds' branches, few
/// enough that a debug build runs all targets in seconds.
const MUTATIONS: usize = 8;

fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

/// SplitMix64: a fixed sequence for a fixed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// A mutation of `data` in libFuzzer's spirit; `other` is spliced in.
fn mutate(rng: &mut Rng, data: &[u8], other: &[u8]) -> Vec<u8> {
    let mut d = data.to_vec();
    for _ in 0..1 + rng.below(4) {
        match rng.below(6) {
            0 if !d.is_empty() => {
                let i = rng.below(d.len());
                d[i] ^= 1 << rng.below(8);
            }
            1 if !d.is_empty() => {
                let i = rng.below(d.len());
                d[i] = [0, 0xff, 0x7f, 0x80, b'\n', b'"', b'9'][rng.below(7)];
            }
            2 => d.truncate(rng.below(d.len() + 1)),
            3 if !d.is_empty() => {
                let i = rng.below(d.len());
                d.remove(i);
            }
            4 => {
                let i = rng.below(d.len() + 1);
                let j = rng.below(other.len() + 1);
                let k = (j + rng.below(32)).min(other.len());
                d.splice(i..i, other[j..k].iter().copied());
            }
            _ => {
                let i = rng.below(d.len() + 1);
                d.insert(i, rng.next() as u8);
            }
        }
    }
    d
}

/// Runs one input, naming it if a property fails.
fn run(name: &str, harness: fn(&[u8]), input: &[u8]) {
    if panic::catch_unwind(|| harness(input)).is_err() {
        panic!("fuzz harness {name} failed on input {input:?}");
    }
}

#[test]
fn test_fuzz_corpus_every_target() {
    for (target, harness) in TARGETS {
        let files = corpus(target);
        assert!(files.len() >= 10, "corpus of {target}: only {} files", files.len());
        let inputs: Vec<Vec<u8>> = files.iter().map(|f| fs::read(f).unwrap()).collect();
        let mut rng = Rng(0x5eed ^ target.len() as u64);
        for (file, input) in files.iter().zip(&inputs) {
            run(&format!("{target} {}", file.display()), *harness, input);
            for m in 0..MUTATIONS {
                let other = &inputs[rng.below(inputs.len())];
                let mutated = mutate(&mut rng, input, other);
                run(&format!("{target} {} mutation {m}", file.display()), *harness, &mutated);
            }
        }
    }
}

#[test]
fn test_fuzz_targets_match_the_corpus_dirs() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    for (target, _) in TARGETS {
        assert!(dir.join("fuzz_targets").join(format!("{target}.rs")).is_file(), "no fuzz target {target}");
    }
    let mut dirs: Vec<String> =
        fs::read_dir(dir.join("corpus")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    dirs.sort();
    let mut names: Vec<String> = TARGETS.iter().map(|(t, _)| t.to_string()).collect();
    names.sort();
    assert_eq!(dirs, names);
}
