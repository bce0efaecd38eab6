//! The real `closelab demo` in its own lab: the four stories' states on both
//! sides, and that the lab is gone after the demo ends, is interrupted
//! (SIGINT) or is killed (SIGKILL, then `closelab lab down NAME`). Needs
//! root: without it each test prints SKIPPED, except under `CI=true`, where
//! it fails.
//!
//! Every test names its lab (`--name`, [`util::unique_lab_name`]) and guards
//! it with [`util::LabGuard`], so tests run in parallel with each other and
//! with other test binaries' labs, and a failing test leaves nothing behind.
//! One demo run serves every story assertion (the demo takes ~7 s).
//!
//! `closelab lab down --all` is only run here with `--dry-run`: for real it
//! removes every closelab lab on the host, including those of tests running
//! in parallel (this binary's, the library's `sys::lab` tests, another
//! `cargo test`), and a lock could only serialize the tests that take it.
//! The cleanup after `kill -9` is tested with `lab down NAME`, which runs
//! the same removal per lab (`down --all` is `down` of every known name; the
//! library's `test_down_all_without_state_file` covers the name discovery).

use std::time::Duration;

use closelab::view::json::Json;
use nix::sys::signal::Signal;

use crate::util::{
    Closelab, LabGuard, assert_lab_gone, closelab, has_run, lab_leftovers, require_root, run_ok, side_state_path,
    str_of, t_of, unique_lab_name,
};

/// How long the whole demo may take (it needs ~7 s; slow CI machines more).
const DEMO_TIMEOUT: Duration = Duration::from_secs(90);

/// The events of each story: `stories[0]` is story 1. A story starts at the
/// note whose text begins `story N:` and runs to the next one.
#[track_caller]
fn split_stories(events: &[Json]) -> Vec<Vec<Json>> {
    let mut stories: Vec<Vec<Json>> = Vec::new();
    for v in events {
        let text = str_of(v, "text");
        if str_of(v, "type") == "note" && text.starts_with("story ") {
            let n: usize = text["story ".len()..]
                .split(':')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("bad story note {v}"));
            assert_eq!(n, stories.len() + 1, "stories out of order at {v}");
            stories.push(Vec::new());
        }
        if let Some(s) = stories.last_mut() {
            s.push(v.clone());
        }
    }
    stories
}

fn state_events<'a>(events: &'a [Json], side: &str, conn: u64) -> Vec<&'a Json> {
    events
        .iter()
        .filter(|v| {
            str_of(v, "type") == "state"
                && str_of(v, "side") == side
                && v.get("conn").and_then(Json::as_u64) == Some(conn)
        })
        .collect()
}

/// The first state change of `side`/`conn` into `to`.
#[track_caller]
fn entered<'a>(events: &'a [Json], side: &str, conn: u64, to: &str) -> &'a Json {
    state_events(events, side, conn)
        .into_iter()
        .find(|v| str_of(v, "to") == to)
        .unwrap_or_else(|| panic!("{side} conn {conn} never entered {to}"))
}

/// Spawns `closelab demo --json --name NAME` and waits until closelab's
/// connection of story 1 is ESTABLISHED: the lab is built and story 1 is in
/// the middle of its 300 ms before closelab closes.
#[track_caller]
fn demo_mid_story_1(name: &str) -> Closelab {
    let mut demo = Closelab::spawn(&mut closelab(&["demo", "--json", "--name", name]));
    demo.wait_for("story 1 to start", |v| str_of(v, "text").starts_with("story 1:"));
    demo.wait_for("closelab's story-1 connection to be ESTABLISHED", |v| {
        str_of(v, "side") == "closelab" && str_of(v, "type") == "state" && str_of(v, "to") == "ESTABLISHED"
    });
    demo
}

#[test]
fn test_demo_json_shows_every_story_on_both_sides() {
    if !require_root("test_demo_json_shows_all_four_stories_on_both_sides") {
        return;
    }
    let name = unique_lab_name();
    let _guard = LabGuard::new(&name);
    let demo = Closelab::spawn(&mut closelab(&["demo", "--json", "--name", &name]));
    let done = demo.finish(DEMO_TIMEOUT);
    done.assert_code(0);
    let events = done.events();
    let ctx = &done;

    // Every event has the documented keys.
    for v in &events {
        for key in ["t", "side", "type", "conn"] {
            assert!(v.get(key).is_some(), "event without {key:?}: {v}{ctx}");
        }
        assert!(matches!(str_of(v, "side"), "closelab" | "linux"), "bad side in {v}{ctx}");
        if str_of(v, "type") == "state" {
            for key in ["from", "to", "cause"] {
                assert!(!str_of(v, key).is_empty(), "state event without {key:?}: {v}{ctx}");
            }
            if str_of(v, "side") == "linux" {
                assert_eq!(str_of(v, "cause"), "observed", "Linux states are observed, never inferred: {v}{ctx}");
            }
        }
    }
    let first = str_of(&events[0], "text");
    assert!(first.starts_with(&format!("lab {name}: ")), "first note names the lab: {first}{ctx}");
    assert!(first.contains("tcp_fin_timeout=3"), "{first}{ctx}");
    assert_eq!(str_of(events.last().unwrap(), "text"), format!("lab {name} removed"), "{ctx}");

    let stories = split_stories(&events);
    assert_eq!(stories.len(), 7, "expected 7 stories{ctx}");

    // Story 1: closelab closes first.
    let s1 = &stories[0];
    let cl = side_state_path(s1, "closelab", 1);
    let lx = side_state_path(s1, "linux", 1);
    assert!(has_run(&cl, &["ESTABLISHED", "FIN-WAIT-1", "FIN-WAIT-2", "TIME-WAIT"]), "story 1 closelab {cl:?}{ctx}");
    assert!(has_run(&lx, &["ESTABLISHED", "CLOSE-WAIT", "LAST-ACK"]), "story 1 linux {lx:?}{ctx}");
    let fw1 = entered(s1, "closelab", 1, "FIN-WAIT-1");
    assert_eq!(str_of(fw1, "cause"), "app", "closelab's close() starts it: {fw1}{ctx}");
    assert_eq!(str_of(fw1, "action"), "close", "{fw1}{ctx}");
    assert_eq!(str_of(entered(s1, "closelab", 1, "TIME-WAIT"), "cause"), "segment", "{ctx}");
    assert!(
        t_of(entered(s1, "linux", 1, "CLOSE-WAIT")) >= t_of(fw1),
        "Linux enters CLOSE-WAIT only after closelab's FIN{ctx}"
    );
    assert!(
        !state_events(s1, "closelab", 1).iter().any(|v| str_of(v, "to") == "CLOSE-WAIT"),
        "the active closer never passes CLOSE-WAIT{ctx}"
    );

    // Story 2: Linux closes first, keeps TIME-WAIT 60 s.
    let s2 = &stories[1];
    let cl = side_state_path(s2, "closelab", 1);
    let lx = side_state_path(s2, "linux", 1);
    assert!(has_run(&lx, &["ESTABLISHED", "FIN-WAIT-1", "FIN-WAIT-2", "TIME-WAIT"]), "story 2 linux {lx:?}{ctx}");
    assert!(has_run(&cl, &["ESTABLISHED", "CLOSE-WAIT", "LAST-ACK", "CLOSED"]), "story 2 closelab {cl:?}{ctx}");
    let last_ack = entered(s2, "closelab", 1, "LAST-ACK");
    assert_eq!(str_of(last_ack, "cause"), "app", "closelab's application closes: {last_ack}{ctx}");
    let tw_at = s2
        .iter()
        .position(|v| str_of(v, "side") == "linux" && str_of(v, "type") == "state" && str_of(v, "to") == "TIME-WAIT")
        .unwrap();
    let timer = s2[tw_at..]
        .iter()
        .find(|v| str_of(v, "side") == "linux" && str_of(v, "type") == "timer" && str_of(v, "name") == "timewait")
        .unwrap_or_else(|| panic!("no Linux timewait timer event after its TIME-WAIT{ctx}"));
    let remaining = timer.get("remaining").and_then(Json::as_f64).unwrap();
    // Seen a little after Linux entered TIME-WAIT (how long after depends
    // on the machine's load): at most 60 s, and far above tcp_fin_timeout.
    assert!(
        (10.0..=60.0).contains(&remaining),
        "Linux TIME-WAIT is TCP_TIMEWAIT_LEN = 60 s, not tcp_fin_timeout (3 s): {timer}{ctx}"
    );

    // Story 3: the CLOSE_WAIT leak.
    let s3 = &stories[2];
    let cl = side_state_path(s3, "closelab", 1);
    let lx = side_state_path(s3, "linux", 1);
    assert_eq!(cl.last().map(String::as_str), Some("CLOSE-WAIT"), "story 3 closelab stays in CLOSE-WAIT: {cl:?}{ctx}");
    assert!(!cl.iter().any(|s| s == "LAST-ACK"), "story 3 closelab must not close: {cl:?}{ctx}");
    assert!(has_run(&lx, &["FIN-WAIT-1", "FIN-WAIT-2", "CLOSED"]), "story 3 linux {lx:?}{ctx}");
    let fw2 = t_of(entered(s3, "linux", 1, "FIN-WAIT-2"));
    let gone = state_events(s3, "linux", 1)
        .into_iter()
        .find(|v| str_of(v, "from") == "FIN-WAIT-2" && str_of(v, "to") == "CLOSED")
        .map(t_of)
        .unwrap();
    // Never before 3 s less the sock_diag polling slack; the upper end is 3x
    // the timeout, since a loaded machine observes the end late.
    assert!(
        (2.5..=9.0).contains(&(gone - fw2)),
        "the orphaned FIN-WAIT-2 should end after tcp_fin_timeout = 3 s, lasted {:.2} s{ctx}",
        gone - fw2
    );
    let orphan = s3
        .iter()
        .find(|v| str_of(v, "side") == "linux" && str_of(v, "type") == "timer" && str_of(v, "name") == "timewait")
        .unwrap_or_else(|| panic!("no Linux timewait timer for the orphaned FIN-WAIT-2{ctx}"));
    let remaining = orphan.get("remaining").and_then(Json::as_f64).unwrap();
    assert!(remaining > 0.0 && remaining <= 3.0, "FIN-WAIT-2 timer is tcp_fin_timeout: {orphan}{ctx}");

    // Story 4: a web server collecting TIME-WAIT.
    let s4 = &stories[3];
    for conn in 1..=5 {
        let cl = side_state_path(s4, "closelab", conn);
        assert!(has_run(&cl, &["FIN-WAIT-1", "FIN-WAIT-2", "TIME-WAIT"]), "story 4 closelab conn {conn}: {cl:?}{ctx}");
        let lx = side_state_path(s4, "linux", conn);
        assert!(has_run(&lx, &["ESTABLISHED", "CLOSE-WAIT", "LAST-ACK"]), "story 4 linux conn {conn}: {lx:?}{ctx}");
        assert!(!lx.iter().any(|s| s == "TIME-WAIT"), "the client must not collect TIME-WAIT: {lx:?}{ctx}");
    }
    assert!(state_events(s4, "closelab", 6).is_empty(), "story 4 has exactly 5 connections{ctx}");
    let tw_note = s4.iter().rev().find(|v| str_of(v, "text").contains("TIME_WAIT")).map(|v| str_of(v, "text"));
    assert!(tw_note.is_some_and(|t| t.ends_with("TIME_WAIT 5")), "{tw_note:?}{ctx}");

    // Story 5: the crawler leaks a connection per 404 until its budget of
    // 32 is spent; Apache's FIN-WAIT-2 all expire, closelab's CLOSE-WAIT stay.
    let s5 = &stories[4];
    for conn in 1..=32 {
        let cl = side_state_path(s5, "closelab", conn);
        assert_eq!(cl.last().map(String::as_str), Some("CLOSE-WAIT"), "story 5 closelab conn {conn}: {cl:?}{ctx}");
        let lx = side_state_path(s5, "linux", conn);
        assert!(has_run(&lx, &["FIN-WAIT-1", "FIN-WAIT-2", "CLOSED"]), "story 5 linux conn {conn}: {lx:?}{ctx}");
    }
    assert!(state_events(s5, "closelab", 33).is_empty(), "story 5: the budget is 32 connections{ctx}");
    let failed = s5.iter().filter(|v| str_of(v, "text").contains("failed: too many open files (32")).count();
    assert_eq!(failed, 40, "story 5: 200 URLs, 160 answered{ctx}");
    // Story 6: released, one connection serves all 200 and ends in TIME-WAIT.
    let s6 = &stories[5];
    let cl = side_state_path(s6, "closelab", 1);
    assert!(has_run(&cl, &["ESTABLISHED", "FIN-WAIT-1", "TIME-WAIT"]), "story 6 closelab {cl:?}{ctx}");
    assert!(state_events(s6, "closelab", 2).is_empty(), "story 6 uses one connection{ctx}");
    assert!(has_run(&side_state_path(s6, "linux", 1), &["LAST-ACK", "CLOSED"]), "story 6 linux{ctx}");
    // Story 7: keep-alive ends the leaked CLOSE-WAIT by the peer's RST.
    let s7 = &stories[6];
    let end = entered(s7, "closelab", 1, "CLOSED");
    assert_eq!((str_of(end, "from"), str_of(end, "cause")), ("CLOSE-WAIT", "segment"), "story 7{ctx}");

    assert_lab_gone(&name);
}

#[test]
fn test_demo_sigint_mid_story_exits_130_and_removes_the_lab() {
    if !require_root("test_demo_sigint_mid_story_exits_130_and_removes_the_lab") {
        return;
    }
    let name = unique_lab_name();
    let _guard = LabGuard::new(&name);
    let demo = demo_mid_story_1(&name);
    assert!(!lab_leftovers(&name).is_empty(), "the demo's lab should exist while it runs");
    demo.signal(Signal::SIGINT);
    let done = demo.finish(Duration::from_secs(10));
    done.assert_code(130);
    let texts: Vec<String> = done.events().iter().map(|v| str_of(v, "text").to_string()).collect();
    assert!(texts.iter().any(|t| t == "interrupted: removing the lab"), "{done}");
    assert_eq!(texts.last().map(String::as_str), Some(format!("lab {name} removed").as_str()), "{done}");
    assert!(!texts.iter().any(|t| t.starts_with("story 2:")), "interrupted in story 1, yet went on{done}");
    assert_lab_gone(&name);
}

#[test]
fn test_demo_killed_with_sigkill_is_cleaned_up_by_lab_down() {
    if !require_root("test_demo_killed_with_sigkill_is_cleaned_up_by_lab_down") {
        return;
    }
    let name = unique_lab_name();
    let guard = LabGuard::new(&name);
    let demo = demo_mid_story_1(&name);
    demo.signal(Signal::SIGKILL);
    let done = demo.finish(Duration::from_secs(10));
    assert_eq!(done.status.code(), None, "killed by SIGKILL{done}");

    // Nothing ran the guard: the lab is left behind, and `status` says so.
    let left = lab_leftovers(&name);
    for ns in [format!("namespace {name}-linux"), format!("namespace {name}-closelab")] {
        assert!(left.contains(&ns), "{ns} should be left after kill -9: {left:?}");
    }
    let line = guard.status_line().unwrap_or_else(|| panic!("lab {name} not in `closelab lab status`"));
    assert!(line.contains("no endpoint running"), "the killed demo is no endpoint: {line}");

    // `down --all --dry-run` would remove it, and removes nothing.
    let out = run_ok(&mut closelab(&["lab", "down", "--all", "--dry-run"]));
    let plan = String::from_utf8_lossy(&out.stdout);
    for cmd in [format!("ip netns del {name}-linux"), format!("ip netns del {name}-closelab")] {
        assert!(plan.lines().any(|l| l == cmd), "`down --all --dry-run` lacks `{cmd}`:\n{plan}");
    }
    assert_eq!(lab_leftovers(&name), left, "--dry-run removed something");

    let out = run_ok(&mut closelab(&["lab", "down", &name]));
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("lab {name} removed\n"));
    assert_lab_gone(&name);
    let out = run_ok(&mut closelab(&["lab", "down", &name]));
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("lab {name}: nothing to remove\n"), "idempotent");
    drop(guard);
}
