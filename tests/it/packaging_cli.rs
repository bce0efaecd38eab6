//! Packaging, no root needed: `closelab completions SHELL`, `closelab man`
//! and `--version`, all generated from the clap definitions the parser uses.

use std::process::Command;

use crate::util::{BIN, expect_error, run_ok};

fn stdout_of(args: &[&str]) -> String {
    let out = run_ok(Command::new(BIN).args(args));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "", "closelab {args:?} wrote to stderr");
    String::from_utf8(out.stdout).unwrap()
}

/// Every top-level subcommand, as `closelab --help` lists them.
const SUBCOMMANDS: &[&str] = &[
    "listen",
    "connect",
    "ss",
    "close",
    "abort",
    "shutdown",
    "lab",
    "scenario",
    "demo",
    "load",
    "bench",
    "ladder",
    "completions",
    "man",
];

#[test]
fn completions_name_every_subcommand() {
    for shell in ["bash", "zsh", "fish"] {
        let script = stdout_of(&["completions", shell]);
        for sub in SUBCOMMANDS {
            assert!(script.contains(sub), "{shell} completions miss {sub}:\n{script}");
        }
        // Nested subcommands and options are there too.
        for word in ["status", "time-wait-model", "peer-sysctl"] {
            assert!(script.contains(word), "{shell} completions miss {word}");
        }
    }
}

#[test]
fn completions_for_an_unknown_shell_is_one_error_line() {
    expect_error(Command::new(BIN).args(["completions", "ksh"]), "invalid value 'ksh'");
    expect_error(Command::new(BIN).args(["completions"]), "<SHELL>");
}

#[test]
fn man_page_is_roff_naming_the_subcommands() {
    let page = stdout_of(&["man"]);
    let th = page.lines().find(|l| !l.starts_with(".ie") && !l.starts_with(".el")).unwrap();
    assert!(th.starts_with(".TH closelab 1"), "man page must start with .TH:\n{page}");
    for sub in SUBCOMMANDS {
        assert!(page.contains(&format!("closelab\\-{sub}")), "man page misses {sub}");
    }
}

#[test]
fn man_out_writes_a_page_per_subcommand() {
    let dir = std::env::temp_dir().join(format!("closelab-man-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let listed = stdout_of(&["man", "--out", dir.to_str().unwrap()]);
    for page in ["closelab.1", "closelab-listen.1", "closelab-lab-up.1", "closelab-scenario-run.1"] {
        let path = dir.join(page);
        assert!(listed.lines().any(|l| l == path.to_str().unwrap()), "{page} not listed:\n{listed}");
        let roff = std::fs::read_to_string(&path).unwrap();
        assert!(roff.contains(".TH "), "{page} has no .TH");
    }
    std::fs::remove_dir_all(&dir).unwrap();
    expect_error(Command::new(BIN).args(["man", "--out", "/nonexistent/closelab"]), "not a directory");
}

#[test]
fn version_names_smoltcp() {
    let v = stdout_of(&["--version"]);
    assert!(v.starts_with(&format!("closelab {} (smoltcp 0.", env!("CARGO_PKG_VERSION"))), "{v}");
    assert!(v.ends_with(")\n"), "{v}");
}
