//! The layering the README's Design section promises, checked on the
//! source: the sans-IO core (`wire`, `event`, `config`, `control_proto`,
//! `endpoint/`, `fault/`, `scenario/`, `view/`, `load/`) imports neither the
//! OS edges (`sys/`) nor the subcommands (`cmd/`) and touches no file,
//! process, thread, environment or clock; `sys/` never imports `cmd/`; and
//! `main.rs` reaches the library only through `cmd`. Test code (`mod tests`
//! blocks, `*tests.rs` files) may do what it likes.

use std::path::{Path, PathBuf};

/// Folder or file under `src/` → the strings its non-test code may not contain.
const PURE: &[&str] = &[
    "wire.rs",
    "event.rs",
    "config.rs",
    "control_proto.rs",
    "kernel.rs",
    "endpoint",
    "fault",
    "scenario",
    "view",
    "load",
];
const PURE_FORBIDS: &[&str] = &[
    "crate::sys",
    "crate::cmd",
    "super::sys",
    "std::fs",
    "std::process",
    "std::thread",
    "std::env",
    "std::net::TcpStream",
    "std::net::TcpListener",
    "std::net::UdpSocket",
    "Instant::now",
    "SystemTime",
    "nix::",
    "mio::",
    "tun_tap",
];
const SYS_FORBIDS: &[&str] = &["crate::cmd", "super::cmd"];
const MAIN_FORBIDS: &[&str] =
    &["closelab::sys", "closelab::endpoint", "closelab::view", "closelab::config", "closelab::fault"];

/// The non-test lines of a source file that contain a forbidden string, as
/// `line N: text`. Comments are skipped; a `#[cfg(test)]` item ends the
/// scan (the crate keeps its unit tests last in a file).
fn violations(source: &str, forbids: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for (i, line) in source.lines().enumerate() {
        let code = line.trim_start();
        if code.starts_with("#[cfg(test)]") {
            break;
        }
        if code.starts_with("//") {
            continue;
        }
        for f in forbids {
            if code.contains(f) {
                out.push(format!("line {}: `{f}` in {}", i + 1, code));
            }
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    if dir.is_file() {
        out.push(dir.to_path_buf());
        return;
    }
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let p = entry.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

fn check(paths: &[&str], forbids: &[&str]) -> Vec<String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    for p in paths {
        let path = src.join(p);
        assert!(path.exists(), "{} is named by the layering rules but does not exist", path.display());
        rust_files(&path, &mut files);
    }
    assert!(!files.is_empty());
    let mut bad = Vec::new();
    for f in files {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        if name.ends_with("tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        for v in violations(&text, forbids) {
            bad.push(format!("{}: {v}", f.strip_prefix(&src).unwrap().display()));
        }
    }
    bad
}

#[test]
fn test_core_imports_no_os_edge_or_command() {
    let bad = check(PURE, PURE_FORBIDS);
    assert!(bad.is_empty(), "the sans-IO core reaches outside itself:\n{}", bad.join("\n"));
}

#[test]
fn test_sys_imports_no_command() {
    let bad = check(&["sys"], SYS_FORBIDS);
    assert!(bad.is_empty(), "sys/ imports a subcommand:\n{}", bad.join("\n"));
}

#[test]
fn test_main_only_dispatches_to_cmd() {
    let bad = check(&["main.rs"], MAIN_FORBIDS);
    assert!(bad.is_empty(), "main.rs reaches past cmd:\n{}", bad.join("\n"));
    let main = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/main.rs")).unwrap();
    let code = main.lines().filter(|l| !l.trim_start().starts_with("//") && !l.trim().is_empty()).count();
    assert!(code <= 60, "main.rs has {code} lines of code: clap definitions and option checks belong in cmd::cli");
}

#[test]
fn test_checker_finds_what_it_forbids() {
    let src = "use std::io;\n// crate::sys in a comment is fine\nuse crate::sys::tun;\nfn f() { let _ = std::fs::read(\"x\"); }\n#[cfg(test)]\nmod tests { use crate::sys::lab; }\n";
    assert_eq!(
        violations(src, PURE_FORBIDS),
        [
            "line 3: `crate::sys` in use crate::sys::tun;",
            "line 4: `std::fs` in fn f() { let _ = std::fs::read(\"x\"); }"
        ]
    );
}
