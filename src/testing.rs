//! Test support shared by the unit tests beside the code and the integration
//! tests in `tests/it/`: the one place that decides whether a test that
//! cannot run here (no root, no IPv6, a tool not installed) is skipped or
//! fails, and whether golden files may be rewritten.
//!
//! Not part of closelab's interface (hidden from the docs); it lives in the
//! library only so both kinds of tests share one copy.

use std::io::Write;

/// Whether this is a CI run: `CI` set to anything but empty, `0` or `false`
/// (CI services set `CI=true`; `.ci/run` does).
pub fn in_ci() -> bool {
    ci_value(std::env::var("CI").ok().as_deref())
}

fn ci_value(v: Option<&str>) -> bool {
    !matches!(v, None | Some("" | "0" | "false"))
}

/// A test that cannot run here: under CI it fails (panics with `test` and
/// `why`); otherwise it prints `SKIPPED test: why` and returns false, so a
/// test reads `if !skip_or_fail(..) { return; }` or uses it as a guard.
///
/// The line goes to the process's stderr handle (fd 2) with `write_all`,
/// not `eprintln!`: libtest captures the print macros of a passing test and
/// would hide the skip. When `CLOSELAB_SKIP_LOG` names a file (scripts/test
/// sets it), the line is also appended there, so the suite can count skips.
#[track_caller]
pub fn skip_or_fail(test: &str, why: &str) -> bool {
    skip_or_fail_in(in_ci(), test, why)
}

#[track_caller]
fn skip_or_fail_in(ci: bool, test: &str, why: &str) -> bool {
    if ci {
        panic!("{test}: {why}, and CI forbids skipping");
    }
    let line = format!("SKIPPED {test}: {why}\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
    if let Some(path) = std::env::var_os("CLOSELAB_SKIP_LOG")
        && let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path)
    {
        let _ = f.write_all(line.as_bytes());
    }
    false
}

/// True when the test may do root work (namespaces, TUN devices);
/// otherwise [`skip_or_fail`].
#[track_caller]
pub fn require_root(test: &str) -> bool {
    nix::unistd::geteuid().is_root() || skip_or_fail(test, "needs root (run as root, as CI does)")
}

/// True when `tool --version` runs; otherwise [`skip_or_fail`] (the setup
/// script installs every tool the tests use).
#[track_caller]
pub fn require_tool(test: &str, tool: &str) -> bool {
    let runs = std::process::Command::new(tool)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok();
    runs || skip_or_fail(test, &format!("needs {tool} (scripts/setup installs it)"))
}

/// Whether golden-file comparisons should rewrite the files instead: only
/// with `CLOSELAB_BLESS=1`, and never under CI (a CI run that blessed would
/// pass whatever the output). Any other value of `CLOSELAB_BLESS` is a
/// mistake and panics rather than silently comparing or blessing.
#[track_caller]
pub fn bless() -> bool {
    match bless_mode(std::env::var("CLOSELAB_BLESS").ok().as_deref(), in_ci()) {
        Ok(b) => b,
        Err(e) => panic!("{e}"),
    }
}

fn bless_mode(bless: Option<&str>, ci: bool) -> Result<bool, String> {
    match bless {
        None | Some("" | "0") => Ok(false),
        Some("1") if ci => Err("CLOSELAB_BLESS=1 under CI: golden files are never rewritten in CI".into()),
        Some("1") => Ok(true),
        Some(other) => Err(format!("CLOSELAB_BLESS={other:?}: set it to 1 to rewrite golden files, or unset it")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_ci_values() {
        assert!(!ci_value(None));
        for off in ["", "0", "false"] {
            assert!(!ci_value(Some(off)), "{off:?}");
        }
        for on in ["true", "1", "yes"] {
            assert!(ci_value(Some(on)), "{on:?}");
        }
    }

    #[test]
    fn test_bless_only_with_1_and_never_in_ci() {
        assert_eq!(bless_mode(None, false), Ok(false));
        assert_eq!(bless_mode(Some("0"), false), Ok(false));
        assert_eq!(bless_mode(Some(""), true), Ok(false));
        assert_eq!(bless_mode(Some("1"), false), Ok(true));
        assert!(bless_mode(Some("1"), true).unwrap_err().contains("never rewritten in CI"));
        assert!(bless_mode(Some("yes"), false).unwrap_err().contains("set it to 1"));
        assert!(bless_mode(Some("true"), true).is_err());
    }

    #[test]
    fn test_skip_fails_in_ci() {
        let r = std::panic::catch_unwind(|| skip_or_fail_in(true, "t", "needs x"));
        let msg = r.unwrap_err().downcast::<String>().unwrap();
        assert_eq!(*msg, "t: needs x, and CI forbids skipping");
    }
}
