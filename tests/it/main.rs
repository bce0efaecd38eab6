//! closelab's integration tests, one test binary (one link, one libtest run
//! that schedules every test on the same thread pool) with a module per
//! area and the shared helpers in [`util`].
//!
//! Tests named `*_root` need root and network namespaces: outside CI they
//! print a SKIPPED line, with `CI=true` a skip fails.

mod util;

mod cli;
mod control_root;
mod demo_root;
mod endpoint_root;
mod fuzz_corpus;
mod lab_root;
mod ladder_cli;
mod layering;
mod load_cli;
mod load_root;
mod packaging_cli;
mod pcap_root;
mod perf_root;
mod records_root;
mod scenario_root;
mod ss_root;
mod synflood_root;
mod web_cli;
mod web_root;
