//! `closelab ladder FILE.jsonl` on the real binary, no root needed. The JSON
//! lines come from a real run: two closelab endpoints over the in-memory
//! link with a virtual clock (the server plays closelab; the client's state
//! changes, application calls and timers stand in for the Linux side), with
//! a fault that drops the server's last ACK once. Files go to a directory
//! per test, removed on drop.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use closelab::endpoint::link::Link;
use closelab::endpoint::{AppKind, ClosePolicy, Endpoint, EndpointConfig, Policy};
use closelab::event::{Event, EventKind, Side, Summary};
use closelab::fault::FaultRule;
use closelab::view::json;
use smoltcp::time::{Duration, Instant};

use crate::util;
use crate::util::{cmdline, describe, expect_error, run};

static NEXT_DIR: AtomicUsize = AtomicUsize::new(0);

/// A scratch directory, unique per test, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        let n = NEXT_DIR.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("closelab-ladder-cli-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn file(&self, name: &str, body: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, body).unwrap();
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn cfg(addr: &str, app: AppKind, close: ClosePolicy, close_after: Option<Duration>, seed: u64) -> EndpointConfig {
    let mut c = EndpointConfig::new(closelab::config::parse_cidr(addr).unwrap());
    c.app = app;
    c.policy = Policy { close, close_after, rst_on_unread: false };
    c.seed = seed;
    c
}

/// Three echo connections 300 ms apart to a server that closes first; its
/// last ACK of the first connection is dropped, so the client retransmits
/// its FIN. 30 s of virtual time: every TIME-WAIT ends.
fn events() -> Vec<Event> {
    let t0 = Instant::from_secs(1000);
    let mut server = cfg("10.0.0.2/24", AppKind::Echo, ClosePolicy::Active, None, 7);
    server.faults = vec![FaultRule::parse("drop out ack after-fin 1st").unwrap()];
    let client = cfg("10.0.0.1/24", AppKind::Sink, ClosePolicy::Passive, Some(Duration::from_millis(100)), 8);
    let mut b = Endpoint::new(server, t0).expect("endpoint config fits smoltcp");
    b.listen(7000);
    let a = Endpoint::new(client, t0).expect("endpoint config fits smoltcp");
    let mut link = Link::new(a, b, t0, Duration::from_millis(10));
    for _ in 0..3 {
        let now = link.now();
        link.a.connect(now, "10.0.0.2:7000".parse().unwrap(), 5).unwrap();
        link.run_for(Duration::from_millis(300));
    }
    link.run_for(Duration::from_secs(70));
    let mut events = link.b.take_events();
    // The client's own segments are the server's seen from the other end.
    events.extend(link.a.take_events().into_iter().filter_map(|mut e| {
        matches!(e.kind, EventKind::State { .. } | EventKind::App { .. } | EventKind::Timer { .. }).then(|| {
            e.side = Side::Linux;
            e
        })
    }));
    events.sort_by(|x, y| x.t.total_cmp(&y.t));
    events
}

/// The events as `closelab listen --json` writes them, summary line last.
fn jsonl(events: &[Event]) -> String {
    let mut s: String = events.iter().map(|e| json::line(e) + "\n").collect();
    s.push_str(&json::summary_line(&Summary::from_events(events, Side::Closelab), Side::Closelab));
    s.push('\n');
    s
}

fn note(text: &str) -> Event {
    Event { t: 0.0, side: Side::Closelab, conn: None, kind: EventKind::Note { text: text.into() } }
}

fn closelab(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Command {
    let mut c = Command::new(util::BIN);
    c.arg("ladder");
    for a in args {
        c.arg(a);
    }
    c
}

/// Runs `cmd`, expects exit 0 and nothing on stderr; returns stdout.
#[track_caller]
fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let ctx = describe(&cmdline(cmd), &out.status, &stdout, &stderr);
    assert_eq!(out.status.code(), Some(0), "expected success{ctx}");
    assert_eq!(stderr, "", "{ctx}");
    stdout
}

/// Well-formed by `roxmltree` and, when python3 is installed,
/// by Python's parser (skipped visibly without it, except under CI=true).
#[track_caller]
fn assert_svg(path: &Path) -> String {
    let svg = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(svg.starts_with("<?xml"), "{svg}");
    if let Err(e) = roxmltree::Document::parse(&svg) {
        panic!("{}: not well-formed: {e}\n{svg}", path.display());
    }
    let py = Command::new("python3")
        .args(["-c", "import xml.dom.minidom,sys; xml.dom.minidom.parse(sys.argv[1])"])
        .arg(path)
        .output();
    match py {
        Ok(o) => {
            assert!(o.status.success(), "python3 refuses {}: {}", path.display(), String::from_utf8_lossy(&o.stderr))
        }
        Err(e) => {
            util::skip_or_fail(&format!("python3 check of {}", path.display()), &format!("cannot run python3: {e}"));
        }
    }
    svg
}

// Tests for drawing a file.

#[test]
fn test_ladder_prints_and_writes_mermaid_and_svg() {
    let dir = Scratch::new();
    let events = events();
    let trace = dir.file("trace.jsonl", &jsonl(&events));
    let (mmd, svg, counts) = (dir.path("x.mmd"), dir.path("y.svg"), dir.path("z.svg"));
    let stdout = ok(&mut closelab(&[&trace, &"--mermaid", &mmd, &"--svg", &svg, &"--svg-counts", &counts]));

    // All three connections, each line tagged, both sides' states.
    let header = stdout.lines().next().unwrap();
    assert!(header.starts_with("   time  conn  closelab") && header.ends_with("linux"), "{stdout}");
    for c in 1..=3 {
        assert!(stdout.contains(&format!("  #{c}    == closelab 10.0.0.2:7000, linux 10.0.0.1:")), "{stdout}");
    }
    for state in ["SYN-RECEIVED (segment)", "FIN-WAIT-1 (app close)", "FIN-WAIT-2 (segment)", "TIME-WAIT (segment)"] {
        assert_eq!(stdout.matches(state).count(), 3, "{state}\n{stdout}");
    }
    for state in ["SYN-SENT (app connect)", "CLOSE-WAIT (segment)", "LAST-ACK (app close)"] {
        assert_eq!(stdout.matches(state).count(), 3, "{state}\n{stdout}");
    }
    assert_eq!(stdout.matches("CLOSED (timer)").count(), 3, "every TIME-WAIT ends:\n{stdout}");
    assert!(stdout.contains(" x dropped out [.] ack 7 (rule 1)\n"), "{stdout}");
    assert!(stdout.contains("- [S.] seq 0 ack 1 -") && stdout.contains("-->\n"), "relative numbers, arrows:\n{stdout}");

    let mermaid = std::fs::read_to_string(&mmd).unwrap();
    assert!(
        mermaid.starts_with("sequenceDiagram\n    participant C1 as closelab 10.0.0.2:7000 (conn 1)\n"),
        "{mermaid}"
    );
    assert!(mermaid.contains("    C1-xL1: [.] ack 7 (dropped, rule 1)\n"), "{mermaid}");

    let ladder = assert_svg(&svg);
    assert!(ladder.contains(">[.] ack 7 (dropped, rule 1)</text>"), "{ladder}");
    assert!(ladder.contains(">TIME-WAIT</text>") && ladder.contains(">LAST-ACK</text>"));
    assert!(ladder.contains(">#3</text>"));

    let plot = assert_svg(&counts);
    // 300 ms apart, 10 s each: the three TIME-WAITs overlap.
    assert!(plot.contains(">TIME-WAIT (max 3)</text>"), "{plot}");
    assert!(plot.contains(">3 connections, 18 state changes (from State events)</text>"), "{plot}");
}

#[test]
fn test_one_connection_unicode_and_linux_counts() {
    let dir = Scratch::new();
    let trace = dir.file("trace.jsonl", &jsonl(&events()));
    let svg = dir.path("two.svg");
    let counts = dir.path("linux.svg");
    let stdout = ok(&mut closelab(&[
        &trace,
        &"--conn",
        &"2",
        &"--unicode",
        &"--svg",
        &svg,
        &"--svg-counts",
        &counts,
        &"--counts-side",
        &"linux",
    ]));
    let header = stdout.lines().next().unwrap();
    assert!(header.starts_with("   time  closelab 10.0.0.2:7000 "), "{stdout}");
    assert!(header.contains(" linux 10.0.0.1:"), "{stdout}");
    assert!(!stdout.contains("#1") && !stdout.contains("dropped"), "{stdout}");
    assert!(stdout.contains("───>\n"), "{stdout}");
    let ladder = assert_svg(&svg);
    assert!(ladder.contains(">10.0.0.2:7000</text>"), "{ladder}");
    let plot = assert_svg(&counts);
    assert!(plot.contains("<title>linux: connections in each state</title>"), "{plot}");
    assert!(plot.contains(">CLOSE-WAIT (max 1)</text>") && !plot.contains("TIME-WAIT"), "{plot}");
}

#[test]
fn test_stdin() {
    let input = jsonl(&events());
    let mut cmd = closelab(&[&"-", &"--conn", &"1"]);
    let out = util::run_input(&mut cmd, input.into_bytes());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let ctx = describe(&cmdline(&cmd), &out.status, &stdout, &String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{ctx}");
    assert!(stdout.contains("TIME-WAIT (segment)") && stdout.contains(" x dropped out"), "{ctx}");
}

// Tests for files with several runs.

#[test]
fn test_demo_stories_and_scenario_verdicts() {
    let dir = Scratch::new();
    let run = events();
    let mut demo = vec![note("lab x: Linux host 10.0.0.1"), note("story 1: closelab closes first"), note("  why")];
    demo.extend(run.iter().cloned());
    demo.push(note("story 2: again"));
    demo.extend(run.iter().filter(|e| e.conn == Some(3)).cloned());
    let trace = dir.file("demo.jsonl", &jsonl(&demo));
    let stdout = ok(&mut closelab(&[&trace]));
    assert!(stdout.starts_with("story 1: closelab closes first\n   time  conn  closelab"), "{stdout}");
    assert!(stdout.contains("\n\nstory 2: again\n   time  closelab 10.0.0.2:7000"), "{stdout}");
    assert!(stdout.contains("\n# why\n"), "{stdout}");
    assert!(!stdout.contains("lab x"), "the preamble has nothing to draw:\n{stdout}");

    let svg = dir.path("story.svg");
    let line = expect_error(&mut closelab(&[&trace, &"--svg", &svg]), "add --story N");
    assert!(line.contains("holds 2 runs (story 1: closelab closes first, story 2: again)"), "{line}");
    let one = ok(&mut closelab(&[&trace, &"--story", &"2", &"--svg", &svg]));
    assert!(one.starts_with("story 2: again\n"), "{one}");
    assert!(!one.contains("story 1"));
    assert!(!assert_svg(&svg).contains(">#3</text>"), "one connection: no tags");
    expect_error(
        &mut closelab(&[&trace, &"--story", &"5"]),
        "has no story 5 (it has: story 1: closelab closes first, story 2: again)",
    );

    // `scenario run --json`: verdict lines end runs and are not events.
    let verdict = |name: &str, pass: bool| {
        format!(r#"{{"type":"verdict","scenario":"{name}","round":1,"pass":{pass},"failures":[],"error":null}}"#)
    };
    let sc =
        format!("{}{}\n{}{}\n", jsonl(&run), verdict("lost-final-ack", true), jsonl(&run), verdict("lost-fin", false));
    let trace = dir.file("scenarios.jsonl", &sc);
    let stdout = ok(&mut closelab(&[&trace, &"--conn", &"1"]));
    assert!(stdout.starts_with("scenario lost-final-ack round 1: PASS\n"), "{stdout}");
    assert!(stdout.contains("\n\nscenario lost-fin round 1: FAIL\n"), "{stdout}");
    let counts = dir.path("c.svg");
    ok(&mut closelab(&[&trace, &"--run", &"2", &"--svg-counts", &counts]));
    assert!(assert_svg(&counts).contains(">TIME-WAIT (max 3)</text>"));
}

// Tests for errors.

#[test]
fn test_malformed_line_names_file_and_line() {
    let dir = Scratch::new();
    let mut body = jsonl(&events()[..3]).lines().take(3).map(|l| format!("{l}\n")).collect::<String>();
    body.push('\n');
    body.push_str("{\"side\":\"closelab\",\"type\":\"note\",\"conn\":null,\"text\":\"x\"}\n");
    let trace = dir.file("trace.jsonl", &body);
    let line = expect_error(&mut closelab(&[&trace]), "missing field");
    assert_eq!(line, format!("closelab: {}:5: missing field `t` (column 56)", trace.display()));

    let trace = dir.file("garbage.jsonl", "{\"t\":0}\nhello\n");
    expect_error(&mut closelab(&[&trace]), "garbage.jsonl:1: ");
    let trace = dir.file("bad.jsonl", &format!("{}not json\n", jsonl(&events()[..2])));
    expect_error(&mut closelab(&[&trace]), "bad.jsonl:4: invalid JSON");
}

#[test]
fn test_other_errors() {
    let dir = Scratch::new();
    let missing = dir.path("missing.jsonl");
    let line = expect_error(&mut closelab(&[&missing]), "cannot read");
    assert_eq!(line, format!("closelab: cannot read {}: no such file or directory", missing.display()));
    let empty = dir.file("empty.jsonl", "\n");
    expect_error(&mut closelab(&[&empty]), "empty.jsonl: no events");
    let trace = dir.file("trace.jsonl", &jsonl(&events()));
    expect_error(&mut closelab(&[&trace, &"--conn", &"9"]), "has no connection #9 (it has: #1 #2 #3)");
    expect_error(&mut closelab(&[&trace, &"--story", &"0"]), "--story");
    let nowhere = dir.path("no/such/dir/x.svg");
    expect_error(&mut closelab(&[&trace, &"--svg", &nowhere]), "cannot write");
}
