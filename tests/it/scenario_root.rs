//! Root tests of `closelab scenario`: every built-in scenario passes
//! `--repeat 5` against a live Linux peer, `run all` exits 0 and its pcap
//! opens in tcpdump, and a scenario file with a wrong expectation exits 1
//! naming it.

use std::process::{Command, Output};

use crate::util;
use crate::util::{BIN, describe, require_root, unique_lab_name};

fn scenario(args: &[&str]) -> (Command, String) {
    let lab = unique_lab_name();
    let mut c = Command::new(BIN);
    c.arg("scenario").arg("run").args(args).args(["--lab-name", &lab]);
    (c, lab)
}

/// Runs to completion (scenarios bound their own time); on an unexpected
/// status panics with everything printed.
#[track_caller]
fn run_expect(mut cmd: Command, code: i32) -> Output {
    let line = format!("{cmd:?}");
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {line}: {e}"));
    if out.status.code() != Some(code) {
        panic!(
            "expected exit {code}:{}",
            describe(&line, &out.status, &String::from_utf8_lossy(&out.stdout), &String::from_utf8_lossy(&out.stderr))
        );
    }
    out
}

/// Each verdict line of a `--json` run.
fn verdicts(out: &Output) -> Vec<closelab::view::json::Json> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("\"type\":\"verdict\""))
        .map(|l| closelab::view::json::parse(l).expect("verdict line is JSON"))
        .collect()
}

fn repeat5(name: &str) {
    if !require_root(&format!("scenario {name} --repeat 5")) {
        return;
    }
    let (cmd, lab) = scenario(&[name, "--repeat", "5", "--json"]);
    let out = run_expect(cmd, 0);
    let v = verdicts(&out);
    assert_eq!(v.len(), 5, "one verdict per round");
    for x in &v {
        assert_eq!(x.get("scenario").and_then(|s| s.as_str()), Some(name));
        assert_eq!(x.get("pass").and_then(|p| p.as_bool()), Some(true), "{x}");
    }
    util::assert_lab_gone(&lab);
}

macro_rules! repeat_tests {
    ($($test:ident => $name:literal,)*) => {
        $(
            #[test]
            fn $test() {
                repeat5($name);
            }
        )*

        #[test]
        fn test_every_builtin_has_a_repeat_test() {
            let tested = [$($name),*];
            for (name, _) in closelab::scenario::file::BUILTIN {
                assert!(tested.contains(name), "built-in scenario {name} has no --repeat 5 test");
            }
        }
    };
}

repeat_tests! {
    test_active_close_repeat5 => "active-close",
    test_passive_close_repeat5 => "passive-close",
    test_close_wait_leak_repeat5 => "close-wait-leak",
    test_close_wait_leak_shutdown_repeat5 => "close-wait-leak-shutdown",
    test_simultaneous_close_repeat5 => "simultaneous-close",
    test_lost_final_ack_repeat5 => "lost-final-ack",
    test_lost_final_ack_linux_repeat5 => "lost-final-ack-linux",
    test_lost_fin_repeat5 => "lost-fin",
    test_rst_on_unread_repeat5 => "rst-on-unread",
    test_rst_on_unread_smoltcp_repeat5 => "rst-on-unread-smoltcp",
    test_rst_on_unread_linux_repeat5 => "rst-on-unread-linux",
    test_linger_abort_repeat5 => "linger-abort",
    test_half_close_repeat5 => "half-close",
    test_time_wait_syn_repeat5 => "time-wait-syn",
    test_time_wait_syn_smoltcp_repeat5 => "time-wait-syn-smoltcp",
    test_time_wait_assassination_repeat5 => "time-wait-assassination",
    test_time_wait_assassination_linux_repeat5 => "time-wait-assassination-linux",
    test_time_wait_assassination_rfc1337_repeat5 => "time-wait-assassination-rfc1337",
    test_time_wait_syn_linux_repeat5 => "time-wait-syn-linux",
    test_fin_retransmit_forever_repeat5 => "fin-retransmit-forever",
    test_keepalive_dead_peer_repeat5 => "keepalive-dead-peer",
    test_crawler_close_wait_leak_repeat5 => "crawler-close-wait-leak",
}

#[test]
fn test_run_all_exits_0_and_pcap_opens_in_tcpdump() {
    if !require_root("test_run_all_exits_0_and_pcap_opens_in_tcpdump") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("closelab-scenario-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pcap = dir.join("all.pcap");
    let (cmd, lab) = scenario(&["all", "--pcap", pcap.to_str().unwrap()]);
    let out = run_expect(cmd, 0);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let n = closelab::scenario::file::BUILTIN.len();
    assert!(stdout.contains(&format!("{n}/{n} passed")), "{stdout}");
    util::assert_lab_gone(&lab);
    // The capture opens in tcpdump and holds as many segments as the
    // timeline's segment lines (every scenario's).
    if !util::require_tool("scenario_root::test_run_all_exits_0_and_pcap_opens_in_tcpdump (tcpdump part)", "tcpdump") {
        return;
    }
    let td = Command::new("tcpdump").args(["-nr", pcap.to_str().unwrap()]).output().unwrap();
    assert!(td.status.success(), "tcpdump -r failed: {}", String::from_utf8_lossy(&td.stderr));
    let lines = String::from_utf8_lossy(&td.stdout).lines().filter(|l| l.contains(" IP ")).count();
    assert!(lines > 100, "tcpdump read only {lines} packets");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn test_wrong_expectation_exits_1_and_names_it() {
    if !require_root("test_wrong_expectation_exits_1_and_names_it") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("closelab-wrong-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("my-bug.toml");
    // A passive close, wrongly expecting closelab to end in TIME-WAIT.
    std::fs::write(
        &file,
        r#"name = "my-bug"
summary = "closelab should end in TIME-WAIT (it does not: Linux closed first)"

[closelab]
app = "echo"
close = "passive"

[linux]
steps = ["connect", "send 5", "read 5", "close"]

[done]
when = ["linux-done", "reached closelab CLOSED"]

[[expect]]
path = "closelab ESTABLISHED CLOSE-WAIT LAST-ACK CLOSED"
[[expect]]
path = "closelab FIN-WAIT-1 TIME-WAIT"
"#,
    )
    .unwrap();
    let (cmd, lab) = scenario(&[file.to_str().unwrap()]);
    let out = run_expect(cmd, 1);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("ok   closelab passes ESTABLISHED -> CLOSE-WAIT -> LAST-ACK -> CLOSED"), "{stdout}");
    assert!(
        stdout.contains("FAIL closelab passes FIN-WAIT-1 -> TIME-WAIT: missing FIN-WAIT-1"),
        "the failed expectation is named:\n{stdout}"
    );
    assert!(stdout.contains("verdict: FAIL"), "{stdout}");
    util::assert_lab_gone(&lab);

    // A malformed file: exit 2, the line named.
    std::fs::write(
        &file,
        "name = \"x\"\nsummary = \"s\"\n[linux]\nsteps = [\"jump\"]\n[done]\nwhen = [\"linux-done\"]\n",
    )
    .unwrap();
    let mut c = Command::new(BIN);
    c.args(["scenario", "run", file.to_str().unwrap()]);
    let out = run_expect(c, 2);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("closelab: "), "{stderr}");
    assert!(stderr.contains("my-bug.toml: line 4: unknown step `jump`"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
