//! Root tests of `closelab load`: each built-in story for a few seconds
//! with `--json`, its verdicts and counts asserted, every lab removed;
//! Ctrl-C prints the summary and removes the lab.

use std::process::Command;
use std::time::Duration;

use closelab::view::json::{self, Json};

use crate::util::{BIN, Closelab, LabGuard, assert_lab_gone, cmdline, describe, require_root, run_within};

/// The longest run here (the port-exhaustion story's three runs) takes
/// ~12 s on this machine: killed and reported after 10x that.
const LOAD_TIMEOUT: Duration = Duration::from_secs(120);

struct Run {
    code: Option<i32>,
    lines: Vec<Json>,
    text: String,
    /// `lab down` for every lab the run's notes name, on drop: a run that
    /// timed out (killed) or a test that panics leaves no lab behind. After
    /// a run that removed its labs itself, `lab down` finds nothing to do.
    _labs: Vec<LabGuard>,
}

fn load(args: &[&str]) -> Run {
    let mut c = Command::new(BIN);
    c.arg("load").arg("--json").args(args);
    let line = cmdline(&c);
    let out = run_within(&mut c, LOAD_TIMEOUT);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let text = describe(&line, &out.status, &stdout, &String::from_utf8_lossy(&out.stderr));
    // The guards first, from the raw lines: a line that is not JSON panics
    // below, and the labs named before it must still go.
    let guards = stdout.lines().filter_map(lab_of).map(|n| LabGuard::new(&n)).collect();
    let lines =
        stdout.lines().map(|l| json::parse(l).unwrap_or_else(|e| panic!("bad JSON {l:?}: {e}{text}"))).collect();
    Run { code: out.status.code(), lines, text, _labs: guards }
}

fn of_type<'a>(r: &'a Run, t: &str) -> Vec<&'a Json> {
    r.lines.iter().filter(|v| v.get("type").and_then(Json::as_str) == Some(t)).collect()
}

/// Lab names from the `load on lab NAME:` notes.
fn labs(r: &Run) -> Vec<String> {
    of_type(r, "note")
        .iter()
        .filter_map(|v| v.get("text").and_then(Json::as_str))
        .filter_map(|t| t.strip_prefix("load on lab "))
        .map(|t| t.split(':').next().unwrap_or("").to_string())
        .collect()
}

fn num(v: &Json, path: &[&str]) -> u64 {
    let mut cur = v;
    for k in path {
        match cur.get(k) {
            Some(x) => cur = x,
            None => return 0,
        }
    }
    cur.as_u64().unwrap_or(0)
}

#[track_caller]
fn assert_story_passes(story: &str, runs: usize) {
    let r = load(&["--story", story]);
    assert_eq!(r.code, Some(0), "story {story} must pass{}", r.text);
    let verdicts = of_type(&r, "load-verdict");
    assert!(!verdicts.is_empty(), "{}", r.text);
    for v in &verdicts {
        assert_eq!(v.get("ok").and_then(Json::as_bool), Some(true), "{}", r.text);
    }
    assert_eq!(of_type(&r, "load-summary").len(), runs, "{}", r.text);
    assert!(!of_type(&r, "load-sample").is_empty(), "{}", r.text);
    let names = labs(&r);
    assert_eq!(names.len(), runs, "{}", r.text);
    for n in names {
        assert_lab_gone(&n);
    }
}

#[test]
fn load_story_time_wait_pileup_root() {
    if !require_root("load_story_time_wait_pileup_root") {
        return;
    }
    assert_story_passes("time-wait-pileup", 2);
}

#[test]
fn load_story_close_wait_leak_root() {
    if !require_root("load_story_close_wait_leak_root") {
        return;
    }
    assert_story_passes("close-wait-leak", 1);
}

#[test]
fn load_story_syn_recv_root() {
    if !require_root("load_story_syn_recv_root") {
        return;
    }
    assert_story_passes("syn-recv", 2);
}

/// tcp_tw_reuse=0 and =2 run out of ports; =1 reuses TIME-WAIT ports once
/// closelab sends timestamps (`--timestamps`), which tcp_tw_reuse needs.
#[test]
fn load_port_exhaustion_root() {
    if !require_root("load_port_exhaustion_root") {
        return;
    }
    for (reuse, timestamps) in [("0", false), ("2", false), ("1", true)] {
        let sysctl = format!("net.ipv4.tcp_tw_reuse={reuse}");
        let mut args = vec![
            "--closer",
            "client",
            "--rate",
            "300/s",
            "--duration",
            "3s",
            "--ports",
            "20000-20499",
            "--peer-sysctl",
            &sysctl,
            "--peer-sysctl",
            "net.ipv4.tcp_timestamps=1",
        ];
        if timestamps {
            args.push("--timestamps");
        }
        let r = load(&args);
        assert_eq!(r.code, Some(0), "{}", r.text);
        let s = of_type(&r, "load-summary");
        assert_eq!(s.len(), 1, "{}", r.text);
        let refused = num(s[0], &["errors", "EADDRNOTAVAIL"]);
        if timestamps {
            assert_eq!(refused, 0, "tw_reuse=1 with timestamps reuses ports{}", r.text);
            assert!(num(s[0], &["completed"]) > 600, "more connections than ports{}", r.text);
        } else {
            assert!(refused > 0, "tw_reuse={reuse}: EADDRNOTAVAIL expected{}", r.text);
            let tw = num(s[0], &["peak_linux", "TIME_WAIT"]);
            assert!((450..=500).contains(&tw), "500 ports, got {tw} TIME_WAIT{}", r.text);
        }
        assert_eq!(num(s[0], &["completed"]), num(s[0], &["connected"]), "{}", r.text);
        for n in labs(&r) {
            assert_lab_gone(&n);
        }
    }
}

#[test]
fn load_story_port_exhaustion_root() {
    if !require_root("load_story_port_exhaustion_root") {
        return;
    }
    assert_story_passes("port-exhaustion", 3);
}

#[test]
fn load_plot_and_kernel_baseline_root() {
    if !require_root("load_plot_and_kernel_baseline_root") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("closelab-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let svg = dir.join("load.svg");
    let r = load(&["--count", "300", "--rate", "300/s", "--plot", svg.to_str().unwrap()]);
    assert_eq!(r.code, Some(0), "{}", r.text);
    let s = of_type(&r, "load-summary");
    assert_eq!(num(s[0], &["completed"]), 300, "{}", r.text);
    assert_eq!(num(s[0], &["peak_closelab", "TIME_WAIT"]), 300, "{}", r.text);
    let pic = std::fs::read_to_string(&svg).unwrap();
    assert!(pic.contains("closelab TIME_WAIT (max 300)"), "{pic}");
    roxmltree::Document::parse(&pic).expect("well-formed SVG");
    let _ = std::fs::remove_dir_all(&dir);

    let r = load(&["--server", "kernel", "--count", "200", "--rate", "400/s"]);
    assert_eq!(r.code, Some(0), "{}", r.text);
    let s = of_type(&r, "load-summary");
    assert_eq!(num(s[0], &["completed"]), 200, "{}", r.text);
    assert_eq!(num(s[0], &["peak_closelab", "TIME_WAIT"]), 200, "kernel server closes first{}", r.text);
}

#[test]
fn load_http_keep_alive_both_closers_root() {
    if !require_root("load_http_keep_alive_both_closers_root") {
        return;
    }
    // 4 requests on each of 60 connections. closelab's http app as the
    // server: the last request says `Connection: close`, so closelab closes
    // first and keeps the TIME-WAIT; with the client closing first after
    // its 4th response, the Linux side does.
    for (closer, closelab_tw, linux_tw) in [("server", 60, 0), ("client", 0, 60)] {
        let r = load(&["--http", "--keep-alive", "4", "--closer", closer, "--count", "60", "--rate", "200/s"]);
        assert_eq!(r.code, Some(0), "{}", r.text);
        let s = of_type(&r, "load-summary");
        assert_eq!(num(s[0], &["completed"]), 60, "{closer}{}", r.text);
        assert_eq!(num(s[0], &["requests"]), 240, "{closer}: 4 responses per connection{}", r.text);
        assert_eq!(s[0].get("errors").map(|e| e.to_string()), Some("{}".to_string()), "{closer}{}", r.text);
        assert_eq!(num(s[0], &["peak_closelab", "TIME_WAIT"]), closelab_tw, "{closer}{}", r.text);
        assert_eq!(num(s[0], &["peak_linux", "TIME_WAIT"]), linux_tw, "{closer}{}", r.text);
        assert!(of_type(&r, "load-sample").iter().all(|v| v.get("requests").is_some()), "{}", r.text);
    }
}

#[test]
fn load_sigint_prints_summary_and_removes_lab_root() {
    if !require_root("load_sigint_prints_summary_and_removes_lab_root") {
        return;
    }
    // Killed on drop if the test fails before it exits; its lab is taken
    // down by a guard once its note names it.
    let mut child = Closelab::spawn(Command::new(BIN).args(["load", "--json", "--duration", "60s", "--rate", "200/s"]));
    let mut guard = None;
    // Each line within util::WAIT; the first sample means the load runs.
    loop {
        let l = child.next_line("a load-sample line");
        if let Some(name) = lab_of(&l) {
            guard = Some(LabGuard::new(&name));
        }
        if l.contains("\"load-sample\"") {
            break;
        }
    }
    let lab = guard.unwrap_or_else(|| panic!("no `load on lab` note before the first sample"));
    child.signal(nix::sys::signal::Signal::SIGINT);
    let done = child.finish(Duration::from_secs(30));
    done.assert_code(130);
    let summary =
        done.lines.iter().find(|l| l.contains("\"load-summary\"")).unwrap_or_else(|| panic!("no summary{done}"));
    assert!(summary.contains("\"interrupted\":true"), "{summary}");
    assert_lab_gone(lab.name());
}

/// The lab named by a `load on lab NAME: …` note line.
fn lab_of(line: &str) -> Option<String> {
    line.split("load on lab ").nth(1).map(|t| t.split(':').next().unwrap_or("").to_string())
}
