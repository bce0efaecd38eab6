//! A saved `--json` stream read back for the pictures (`closelab ladder
//! FILE.jsonl`): lines → [`Event`]s, split into [`Run`]s.
//!
//! One file may hold several runs whose connection numbers each start at 1:
//! `closelab demo --json` writes four stories, each opened by a note
//! `story N: …`; `closelab scenario run --json` ends each run with a
//! `{"type":"verdict",…}` line. A new run starts at each such note and after
//! each verdict. Summary lines are skipped; any other line that is not an
//! event is an error naming its line number, never skipped.
//!
//! Pure: bytes in, runs out. Reading the file is `cmd::ladder`'s job.

use std::fmt;

use super::json::{self, Record};
use crate::event::{ConnId, Event, EventKind};

/// Events that belong together: one story, one scenario round, or the
/// whole stream of `listen`/`connect`.
#[derive(Clone, Debug, PartialEq)]
pub struct Run {
    /// `story 1: closelab closes first` (the note, which is not repeated in
    /// `events`), `scenario lost-final-ack round 1: PASS`, or none.
    pub title: Option<String>,
    /// In time order; notes stay after the event they followed.
    pub events: Vec<Event>,
}

impl Run {
    /// The connection numbers in the run, ascending.
    pub fn conns(&self) -> Vec<ConnId> {
        let mut ids: Vec<ConnId> = self.events.iter().filter_map(|e| e.conn).collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// The story number of a title `story N: …`.
    pub fn story(&self) -> Option<usize> {
        let rest = self.title.as_deref()?.strip_prefix("story ")?;
        rest.split(':').next()?.trim().parse().ok()
    }

    fn only_notes(&self) -> bool {
        self.events.iter().all(|e| matches!(e.kind, EventKind::Note { .. }))
    }
}

/// A line that is not what closelab writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineError {
    /// 1-based.
    pub line: usize,
    pub message: String,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// Reads JSON lines (blank lines and a `\r` before `\n` are fine) into
/// runs. A run that holds only notes (the demo's preamble) is dropped when
/// another run has events to draw. No events at all gives no runs.
pub fn read(input: &[u8]) -> Result<Vec<Run>, LineError> {
    let mut runs = Vec::new();
    let mut cur = Run { title: None, events: Vec::new() };
    for (i, raw) in input.split(|b| *b == b'\n').enumerate() {
        let line = i + 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let text = std::str::from_utf8(raw)
            .map_err(|e| LineError { line, message: format!("not UTF-8 (byte {})", e.valid_up_to()) })?;
        if text.trim().is_empty() {
            continue;
        }
        match json::parse_record(text) {
            Ok(Record::Summary { .. }) => {}
            Ok(Record::Event(ev)) => match &ev.kind {
                EventKind::Note { text } if ev.conn.is_none() && text.starts_with("story ") => {
                    let done = std::mem::replace(&mut cur, Run { title: Some(text.clone()), events: Vec::new() });
                    push(&mut runs, done);
                }
                _ => cur.events.push(ev),
            },
            Err(message) => match verdict_title(text) {
                Some(title) => {
                    cur.title.get_or_insert(title);
                    let done = std::mem::replace(&mut cur, Run { title: None, events: Vec::new() });
                    push(&mut runs, done);
                }
                None => return Err(LineError { line, message: message.to_string() }),
            },
        }
    }
    push(&mut runs, cur);
    if runs.iter().any(|r| !r.only_notes()) {
        runs.retain(|r| !r.only_notes());
    }
    for r in &mut runs {
        sort(&mut r.events);
    }
    Ok(runs)
}

fn push(runs: &mut Vec<Run>, run: Run) {
    if run.title.is_some() || !run.events.is_empty() {
        runs.push(run);
    }
}

/// `scenario NAME round R: PASS` for a scenario runner's verdict line.
fn verdict_title(line: &str) -> Option<String> {
    let j = json::parse(line).ok()?;
    if j.get("type")?.as_str()? != "verdict" {
        return None;
    }
    let name = j.get("scenario").and_then(json::Json::as_str).unwrap_or("?");
    let mut title = format!("scenario {}", super::ladder::one_line(name));
    if let Some(round) = j.get("round").and_then(json::Json::as_u64) {
        title.push_str(&format!(" round {round}"));
    }
    match j.get("pass").and_then(json::Json::as_bool) {
        Some(true) => title.push_str(": PASS"),
        Some(false) => title.push_str(": FAIL"),
        None => {}
    }
    Some(title)
}

/// Time order for the picture (events the Linux observer held back carry
/// their original time), stable, with each note kept right after the event
/// it followed in the stream: notes carry no meaningful time.
fn sort(events: &mut Vec<Event>) {
    let mut anchor = f64::NEG_INFINITY;
    let mut keyed: Vec<(f64, Event)> = Vec::with_capacity(events.len());
    for ev in events.drain(..) {
        let key = match ev.kind {
            EventKind::Note { .. } => anchor,
            _ => {
                if ev.t.is_finite() {
                    anchor = ev.t;
                }
                ev.t
            }
        };
        keyed.push((key, ev));
    }
    keyed.sort_by(|a, b| a.0.total_cmp(&b.0));
    events.extend(keyed.into_iter().map(|(_, e)| e));
}

/// The run `--story N` means: with demo stories, the one titled `story N:`;
/// otherwise the Nth run (1-based).
pub fn pick(runs: &[Run], n: usize) -> Option<usize> {
    if runs.iter().any(|r| r.story().is_some()) {
        runs.iter().position(|r| r.story() == Some(n))
    } else {
        n.checked_sub(1).filter(|i| *i < runs.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Side, Summary};
    use crate::view::json::{line, summary_line};
    use crate::view::ladder::tests::active_close;

    fn note(text: &str) -> Event {
        Event { t: 0.0, side: Side::Closelab, conn: None, kind: EventKind::Note { text: text.into() } }
    }

    fn lines(events: &[Event]) -> String {
        events.iter().map(|e| line(e) + "\n").collect()
    }

    #[test]
    fn test_one_run_round_trips() {
        let mut text = lines(&active_close());
        text.push_str(&summary_line(&Summary::default(), Side::Closelab));
        text.push_str("\n\n");
        let runs = read(text.as_bytes()).unwrap();
        assert_eq!(runs, vec![Run { title: None, events: active_close() }]);
        assert_eq!(runs[0].conns(), vec![1]);
        assert_eq!(read(b"").unwrap(), vec![]);
        assert_eq!(read(b"\n  \r\n").unwrap(), vec![]);
    }

    #[test]
    fn test_demo_stories_split_and_preamble_dropped() {
        let mut evs = vec![note("lab x: Linux host 10.201.0.1"), note("slow motion: …")];
        for n in 1..=2 {
            evs.push(note(&format!("story {n}: title {n}")));
            evs.push(note("  explanation"));
            evs.extend(active_close().into_iter().skip(1));
            evs.push(note("  after"));
        }
        evs.push(note("lab x removed"));
        let runs = read(lines(&evs).as_bytes()).unwrap();
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[0].title.as_deref(), Some("story 1: title 1"));
        assert_eq!(runs[1].story(), Some(2));
        assert_eq!(runs[0].events.first(), Some(&note("  explanation")));
        assert_eq!(runs[0].events.last(), Some(&note("  after")));
        assert_eq!(runs[1].events.last(), Some(&note("lab x removed")));
        assert_eq!(pick(&runs, 2), Some(1));
        assert_eq!(pick(&runs, 3), None);
        // `demo --only 3`: one run titled story 3.
        let only: Vec<Event> = std::iter::once(note("story 3: leak")).chain(active_close()).collect();
        let runs = read(lines(&only).as_bytes()).unwrap();
        assert_eq!(pick(&runs, 3), Some(0));
        assert_eq!(pick(&runs, 1), None);
    }

    #[test]
    fn test_scenario_verdicts_end_runs() {
        let mut text = lines(&active_close());
        text.push_str(
            r#"{"type":"verdict","scenario":"lost-final-ack","round":1,"pass":true,"failures":[],"error":null}"#,
        );
        text.push('\n');
        text.push_str(&lines(&active_close()));
        text.push_str(r#"{"type":"verdict","scenario":"lost-fin","round":2,"pass":false,"failures":[{"expect":"x","reason":"y"}],"error":null}"#);
        text.push('\n');
        let runs = read(text.as_bytes()).unwrap();
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[0].title.as_deref(), Some("scenario lost-final-ack round 1: PASS"));
        assert_eq!(runs[1].title.as_deref(), Some("scenario lost-fin round 2: FAIL"));
        assert_eq!(runs[1].events, active_close());
        assert_eq!(pick(&runs, 2), Some(1));
        assert_eq!(pick(&runs, 0), None);
    }

    #[test]
    fn test_events_sorted_by_time_notes_stay_put() {
        let mut evs = active_close();
        // The observer reported a Linux state late, with its original time.
        let late = evs.remove(1);
        evs.insert(9, note("after the eighth"));
        evs.insert(12, late.clone());
        let runs = read(lines(&evs).as_bytes()).unwrap();
        let got = &runs[0].events;
        assert_eq!(got[1], late);
        let i = got.iter().position(|e| *e == note("after the eighth")).unwrap();
        assert_eq!(got[i - 1], evs[8]);
        assert!(got.windows(2).all(|w| w[0].t <= w[1].t || matches!(w[1].kind, EventKind::Note { .. })));
    }

    #[test]
    fn test_errors_name_the_line() {
        let mut text = lines(&active_close()[..3]);
        text.push_str("{\"side\":\"closelab\",\"type\":\"note\",\"conn\":null,\"text\":\"x\"}\n");
        assert_eq!(read(text.as_bytes()), Err(LineError { line: 4, message: "missing field `t` (column 56)".into() }));
        let err = read(b"\n\nnot json\n").unwrap_err();
        assert_eq!(err.line, 3);
        assert_eq!(err.to_string(), format!("line 3: {}", err.message));
        assert_eq!(read(b"{}\n\xff\n").unwrap_err().line, 1);
        assert_eq!(read(b"\xff\n").unwrap_err(), LineError { line: 1, message: "not UTF-8 (byte 0)".into() });
        // Only verdicts are skipped, not any typed object.
        let err = read(br#"{"type":"verdic","scenario":"x"}"#).unwrap_err();
        assert_eq!(err.line, 1);
    }
}
