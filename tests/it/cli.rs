//! Command-line errors of the real binary, no root needed: every mistake
//! exits 2 with exactly one stderr line `closelab: …` naming what was wrong,
//! and nothing on stdout.
//!
//! Run as root, each command gets a throwaway network namespace
//! (`unshare --net`), so a validation bug that let closelab start serving
//! could not create a TUN device in the host's namespace.

use std::process::Command;

use crate::util;
use crate::util::{BIN, expect_error};

/// `closelab ARGS…`, in a fresh anonymous network namespace when root.
fn closelab(args: &[&str]) -> Command {
    let mut c = if nix::unistd::geteuid().is_root() {
        let mut c = Command::new("unshare");
        c.args(["--net", "--", BIN]);
        c
    } else {
        Command::new(BIN)
    };
    c.args(args);
    c
}

/// `closelab listen EXTRA…` plus a valid `--tun`, `--addr` and `--port`
/// for each of them `extra` leaves out (clap refuses a repeated `--tun` or
/// `--port`).
fn listen(extra: &[&str]) -> Command {
    let mut args = vec!["listen"];
    for (flag, value) in [("--tun", "cl0"), ("--addr", "10.201.0.2/24"), ("--port", "7000")] {
        if !extra.contains(&flag) {
            args.extend([flag, value]);
        }
    }
    args.extend(extra);
    closelab(&args)
}

// Tests for addresses.

#[test]
fn test_malformed_address() {
    let line = expect_error(&mut listen(&["--addr", "10.201.0.300/24"]), "invalid address");
    assert_eq!(
        line,
        "closelab: invalid address `10.201.0.300/24`: not an IP address (expected e.g. 10.201.0.2/24 or fd00:201::2/64)"
    );
    expect_error(&mut listen(&["--addr", "fd00::201::2/64"]), "invalid address `fd00::201::2/64`");
    expect_error(&mut listen(&["--addr", "10.201.0.2"]), "missing /prefix");
    expect_error(&mut listen(&["--addr", "10.201.0.2/33"]), "prefix too long");
    expect_error(&mut listen(&["--addr", ""]), "invalid address");
}

#[test]
fn test_missing_addr_and_tun() {
    expect_error(&mut closelab(&["listen", "--tun", "cl0", "--port", "7000"]), "--addr is required");
    expect_error(&mut closelab(&["listen", "--addr", "10.201.0.2/24", "--port", "7000"]), "--tun NAME is required");
}

#[test]
fn test_peer_addr_errors() {
    expect_error(&mut listen(&["--peer-addr", "10.201.0.2"]), "--peer-addr 10.201.0.2 is closelab's own address");
    expect_error(&mut listen(&["--peer-addr", "fd00:201::1"]), "no --addr of the same family");
}

#[test]
fn test_lab_excludes_tun_and_addr() {
    expect_error(&mut listen(&["--lab", "x"]), "leave out --tun, --addr and --peer-addr");
}

#[test]
fn test_connect_remote_errors() {
    let base = ["--tun", "cl0", "--addr", "10.201.0.2/24"];
    let with = |remote: &str| {
        let mut a = vec!["connect", remote];
        a.extend(base);
        closelab(&a)
    };
    expect_error(&mut with("10.201.0.1"), "invalid address `10.201.0.1`");
    expect_error(&mut with("10.201.0.1:70000"), "invalid address");
    expect_error(&mut with("[fd00:201::1]:7000"), "no --addr of the same IP family");
}

/// Addresses that are not a host: the limited broadcast (which smoltcp
/// refuses with a panic), the prefix's own broadcast and network address, a
/// /0 prefix, a broadcast peer and connect target.
#[test]
fn test_more_addresses_than_smoltcp_holds() {
    let mut c = closelab(&[
        "listen",
        "--tun",
        "clx0",
        "--port",
        "7000",
        "--addr",
        "10.209.0.2/24",
        "--addr",
        "10.209.1.2/24",
        "--addr",
        "10.209.2.2/24",
    ]);
    expect_error(&mut c, "at most 2 --addr (smoltcp's interface holds 2 addresses, e.g. one IPv4 and one IPv6)");
}

#[test]
fn test_non_host_addresses() {
    for (addr, why) in [
        ("255.255.255.255/24", "the broadcast address, not a unicast host address"),
        ("10.201.0.255/24", "the broadcast address of its prefix"),
        ("10.201.0.0/24", "the network address of its prefix"),
        ("10.201.0.2/0", "prefix /0 out of range (/8 to /30)"),
    ] {
        let line = expect_error(&mut listen(&["--addr", addr]), why);
        assert!(line.starts_with(&format!("closelab: invalid address `{addr}`: ")), "{line}");
    }
    expect_error(
        &mut listen(&["--peer-addr", "255.255.255.255"]),
        "--peer-addr: invalid peer address 255.255.255.255: the broadcast address",
    );
    expect_error(
        &mut listen(&["--peer-addr", "10.201.0.255"]),
        "invalid peer address 10.201.0.255: the broadcast address of its prefix 10.201.0.2/24",
    );
    let base = ["--tun", "cl0", "--addr", "10.201.0.2/24"];
    for (remote, why) in [
        ("255.255.255.255:7000", "the broadcast address"),
        ("10.201.0.255:7000", "the broadcast address of its prefix"),
        ("224.0.0.1:7000", "a multicast address"),
        ("10.201.0.2:7000", "closelab's own address"),
    ] {
        let mut a = vec!["connect", remote];
        a.extend(base);
        expect_error(&mut closelab(&a), &format!("cannot connect to {remote}: "));
        expect_error(&mut closelab(&a), why);
    }
}

/// Timers that would fire without end: a keep-alive shorter than Linux's
/// 1 s `TCP_KEEPIDLE` minimum (0s wedged the endpoint), a zero timeout.
#[test]
fn test_keepalive_and_timer_bounds() {
    for v in ["0s", "1us", "500ms"] {
        let line = expect_error(&mut listen(&["--keepalive", v]), "at least 1s");
        assert_eq!(line, format!("closelab: invalid keepalive `{v}`: at least 1s (Linux's TCP_KEEPIDLE minimum)"));
    }
    expect_error(&mut listen(&["--timeout", "0s"]), "invalid timeout `0s`: must be longer than 0s");
}

/// The SYN-flood bounds: a backlog of at least one entry, a memory budget
/// that holds at least one connection, cookies on or off.
#[test]
fn test_syn_backlog_and_memory_bounds() {
    for v in ["0", "2000000"] {
        expect_error(&mut listen(&["--syn-backlog", v]), &format!("invalid --syn-backlog {v} (1 to 1048576)"));
    }
    expect_error(&mut listen(&["--syn-backlog", "x"]), "invalid value 'x' for '--syn-backlog");
    let line = expect_error(&mut listen(&["--max-memory", "100k"]), "cannot hold one connection");
    assert_eq!(
        line,
        "closelab: --max-memory `100k` cannot hold one connection with 65536-byte buffers (needs 196608 bytes)"
    );
    expect_error(&mut listen(&["--max-memory", "2000G"]), "invalid --max-memory `2000G` (at most 1024G)");
    expect_error(&mut listen(&["--max-memory", "lots"]), "invalid byte count `lots`");
    expect_error(&mut listen(&["--syncookies", "2"]), "invalid value '2' for '--syncookies");
}

/// TIME-WAIT options: bounded length, a known model, options that only one
/// model has.
#[test]
fn test_time_wait_options_validated() {
    for v in ["0s", "0.1ms", "2h"] {
        let line = expect_error(&mut listen(&["--time-wait", v]), "invalid TIME-WAIT length");
        assert_eq!(line, format!("closelab: invalid TIME-WAIT length `{v}` (1ms to 1h; Linux: 60s)"));
    }
    let line = expect_error(&mut listen(&["--time-wait-model", "bsd"]), "invalid value 'bsd'");
    assert!(line.contains("[possible values: linux, smoltcp]"), "{line}");
    expect_error(
        &mut listen(&["--time-wait-model", "smoltcp", "--time-wait", "5s"]),
        "the smoltcp TIME-WAIT model takes no TIME-WAIT length (smoltcp's is a fixed 10 s); use the linux model",
    );
    expect_error(&mut listen(&["--time-wait-model", "smoltcp", "--rfc1337"]), "takes no rfc1337");
    expect_error(&mut listen(&["--time-wait-syn", "drop"]), "time-wait-syn is for the smoltcp TIME-WAIT model");
    expect_error(&mut listen(&["--max-tw", "99999999"]), "invalid max-tw 99999999 (0 to 4194304)");
}

#[test]
fn test_fault_counts_bounded() {
    let line = expect_error(&mut listen(&["--fault", "reorder 999999999"]), "bad count `999999999` for reorder");
    assert!(line.contains("1 to 1000"), "{line}");
}

// Tests for ports.

#[test]
fn test_port_zero() {
    expect_error(&mut listen(&["--port", "0"]), "invalid port 0");
}

/// Values clap itself rejects (not a u16, a missing required flag, an
/// unknown choice or flag) follow the same contract as closelab's own
/// checks: one line `closelab: …`, exit 2.
#[test]
fn test_argument_syntax_errors_are_one_closelab_line() {
    expect_error(&mut listen(&["--port", "70000"]), "70000");
    expect_error(&mut listen(&["--port", "abc"]), "abc");
    expect_error(&mut closelab(&["listen", "--tun", "cl0", "--addr", "10.201.0.2/24"]), "--port");
    expect_error(&mut listen(&["--close", "sideways"]), "sideways");
    expect_error(&mut listen(&["--bogus"]), "--bogus");
    expect_error(&mut closelab(&["frobnicate"]), "frobnicate");
}

// Tests for durations, sizes and other values.

#[test]
fn test_malformed_duration() {
    let msg = "(expected a number with a unit: 200ms, 1.5s, 2m, 1h, 500us)";
    for (flag, value) in [
        ("--close-after", "2x"),
        ("--close-after", "5"),
        ("--keepalive", "soon"),
        ("--slow", "1.5.s"),
        ("--timeout", "ms"),
    ] {
        let line = expect_error(&mut listen(&[flag, value]), msg);
        assert_eq!(line, format!("closelab: invalid duration `{value}` {msg}"));
    }
}

#[test]
fn test_malformed_fault_rule() {
    let line = expect_error(&mut listen(&["--fault", "drop out akc"]), "invalid fault rule `drop out akc`");
    assert!(line.contains("unknown word `akc`"), "{line}");
}

#[test]
fn test_malformed_app() {
    expect_error(&mut listen(&["--app", "bogus"]), "invalid app `bogus`");
}

#[test]
fn test_malformed_sizes() {
    expect_error(&mut listen(&["--buffer", "1q"]), "invalid byte count `1q`");
    expect_error(&mut listen(&["--buffer", "0"]), "invalid buffer size `0` (1 byte to 1G)");
    expect_error(&mut listen(&["--buffer", "99999999999999"]), "invalid buffer size `99999999999999` (1 byte to 1G)");
    expect_error(&mut listen(&["--mtu", "100"]), "invalid MTU 100 (576 to 65535)");
    let mut a = vec!["connect", "10.201.0.1:7000", "--tun", "cl0", "--addr", "10.201.0.2/24", "--send", "five"];
    expect_error(&mut closelab(&a), "invalid byte count `five`");
    a.truncate(6);
    a.extend(["--app", "source:lots"]);
    expect_error(&mut closelab(&a), "source:lots");
}

#[test]
fn test_malformed_tun_name() {
    expect_error(&mut listen(&["--tun", "cl0/x"]), "invalid TUN name `cl0/x`");
    expect_error(&mut listen(&["--tun", "a-name-of-16-chr"]), "invalid TUN name");
}

// Tests for help and version (not errors: stdout, exit 0).

#[test]
fn test_help_and_version() {
    let out = util::run_ok(&mut closelab(&["--version"]));
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("closelab {}\n", closelab::cmd::packaging::VERSION));
    assert!(closelab::cmd::packaging::VERSION.starts_with(&format!("{} (smoltcp 0.", env!("CARGO_PKG_VERSION"))));
    let out = util::run_ok(&mut closelab(&["listen", "--help"]));
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("--exit-after"), "{help}");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
}

// Tests for files the user names.

/// A FIFO as scenario file used to block in open() for ever (with SIGINT and
/// SIGTERM blocked); /dev/zero was read until the OOM killer came. Both are
/// one error line now (run's own 30 s guard turns a hang into a failure).
#[test]
fn test_scenario_file_must_be_regular() {
    let dir = std::env::temp_dir().join(format!("closelab-cli-fifo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("s.toml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let f = fifo.to_str().unwrap().to_string();
    let line = expect_error(&mut closelab(&["scenario", "run", &f]), "not a regular file (a FIFO)");
    assert_eq!(line, format!("closelab: cannot read scenario file {f}: not a regular file (a FIFO)"));
    expect_error(&mut closelab(&["scenario", "run", "/dev/zero"]), "not a regular file (a character device)");
    let big = dir.join("big.toml");
    std::fs::write(&big, vec![b'#'; (1 << 20) + 1]).unwrap();
    expect_error(&mut closelab(&["scenario", "run", big.to_str().unwrap()]), "larger than 1048576 bytes");
    expect_error(&mut closelab(&["ladder", "/dev/zero"]), "cannot read /dev/zero: not a regular file");
    expect_error(&mut closelab(&["ladder", f.as_str()]), "not a regular file (a FIFO)");
    let _ = std::fs::remove_dir_all(&dir);
}
