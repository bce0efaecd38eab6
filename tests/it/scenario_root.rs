//! Root tests of `closelab scenario`: every built-in scenario passes
//! `--repeat 5` against a live Linux peer, `run all` exits 0 and its pcap
//! opens in tcpdump, and a scenario file with a wrong expectation exits 1
//! naming it.

use std::process::{Command, Output};
use std::time::Duration;

use crate::util;
use crate::util::{BIN, LabGuard, describe, require_root, unique_lab_name};

/// `closelab scenario run ARGS… --lab-name <unique>`, and a guard that takes
/// that lab down however the test ends.
fn scenario(args: &[&str]) -> (Command, LabGuard) {
    let lab = unique_lab_name();
    let mut c = Command::new(BIN);
    c.arg("scenario").arg("run").args(args).args(["--lab-name", &lab]);
    (c, LabGuard::new(&lab))
}

/// `scenario run all` takes about 60 s on the 2-core CI machine, one
/// scenario with `--repeat 5` at most ~40 s: killed after 3x or more.
const ALL_TIMEOUT: Duration = Duration::from_secs(300);
const REPEAT_TIMEOUT: Duration = Duration::from_secs(180);

/// Runs to completion within `timeout` (killed and reported after it); on
/// an unexpected status panics with everything printed.
#[track_caller]
fn run_expect(mut cmd: Command, code: i32, timeout: Duration) -> Output {
    let line = util::cmdline(&cmd);
    let out = util::run_within(&mut cmd, timeout);
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
    let out = run_expect(cmd, 0, REPEAT_TIMEOUT);
    let v = verdicts(&out);
    assert_eq!(v.len(), 5, "one verdict per round");
    for x in &v {
        assert_eq!(x.get("scenario").and_then(|s| s.as_str()), Some(name));
        assert_eq!(x.get("pass").and_then(|p| p.as_bool()), Some(true), "{x}");
    }
    util::assert_lab_gone(lab.name());
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
    test_time_wait_assassination_rfc1337_closelab_repeat5 => "time-wait-assassination-rfc1337-closelab",
    test_fin_retransmit_linux_repeat5 => "fin-retransmit-linux",
    test_fin_timeout_orphan_repeat5 => "fin-timeout-orphan",
    test_fin_timeout_linux_repeat5 => "fin-timeout-linux",
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
    let (cmd, lab) = scenario(&["all", "--json", "--pcap", pcap.to_str().unwrap()]);
    let out = run_expect(cmd, 0, ALL_TIMEOUT);
    let v = verdicts(&out);
    let n = closelab::scenario::file::BUILTIN.len();
    assert_eq!(v.len(), n, "one verdict per built-in scenario");
    for x in &v {
        assert_eq!(x.get("pass").and_then(|p| p.as_bool()), Some(true), "{x}");
    }
    util::assert_lab_gone(lab.name());
    // The timeline's packets (every scenario's), in order, by flags: the
    // segments, segments that arrived after the end of a run (discarded),
    // and late segments of an earlier round (written as notes).
    let after_end = closelab::sys::linger::ARRIVED_AFTER_END;
    let timeline: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let j = closelab::view::json::parse(l).ok()?;
            let field = |k: &str| j.get(k).and_then(|f| f.as_str()).map(str::to_string);
            match field("type")?.as_str() {
                "segment" => field("flags"),
                "fault" if field("detail").as_deref() == Some(after_end) => field("flags"),
                "note" => {
                    let text = field("text")?;
                    let late = text.starts_with("late segment of") || text.starts_with("closelab's answer");
                    let (_, rest) = text.split_once(": ")?;
                    let packet = !rest.starts_with("fault ") || text.contains(after_end);
                    if !(late && packet) {
                        return None;
                    }
                    Some(text.split('[').nth(1)?.split(']').next()?.to_string())
                }
                _ => None,
            }
        })
        .collect();
    assert!(timeline.len() > 100, "all built-in scenarios send more than {} segments", timeline.len());
    // The capture opens in tcpdump and holds exactly those segments.
    if !util::require_tool("scenario_root::test_run_all_exits_0_and_pcap_opens_in_tcpdump (tcpdump part)", "tcpdump") {
        return;
    }
    let td = util::run_ok(Command::new("tcpdump").args(["-nr", pcap.to_str().unwrap()]));
    let captured: Vec<String> = String::from_utf8_lossy(&td.stdout)
        .lines()
        .map(|l| {
            let flags = l.split("Flags [").nth(1).and_then(|r| r.split(']').next());
            flags.unwrap_or_else(|| panic!("tcpdump line without TCP flags: {l}")).to_string()
        })
        .collect();
    assert_eq!(captured.len(), timeline.len(), "pcap packets vs timeline segments");
    assert_eq!(captured, timeline, "flags of every packet, in timeline order");
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
    let out = run_expect(cmd, 1, REPEAT_TIMEOUT);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("ok   closelab passes ESTABLISHED -> CLOSE-WAIT -> LAST-ACK -> CLOSED"), "{stdout}");
    assert!(
        stdout.contains("FAIL closelab passes FIN-WAIT-1 -> TIME-WAIT: never reached FIN-WAIT-1"),
        "the failed expectation is named:\n{stdout}"
    );
    assert!(stdout.contains("verdict: FAIL"), "{stdout}");
    util::assert_lab_gone(lab.name());

    // A malformed file: exit 2, the line named.
    std::fs::write(
        &file,
        "name = \"x\"\nsummary = \"s\"\n[linux]\nsteps = [\"jump\"]\n[done]\nwhen = [\"linux-done\"]\n",
    )
    .unwrap();
    let mut c = Command::new(BIN);
    c.args(["scenario", "run", file.to_str().unwrap()]);
    let out = run_expect(c, 2, util::RUN_TIMEOUT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("closelab: "), "{stderr}");
    assert!(stderr.contains("my-bug.toml: line 4: unknown step `jump`"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
