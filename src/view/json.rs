//! JSON lines: one object per event, for machines (`jq`, a later
//! `closelab ladder FILE.jsonl`), and the reader that turns those lines back
//! into [`Event`]s.
//!
//! The shapes are the serde derives on [`Event`] and its parts
//! (`crate::event`); this module adds the exit summary and the scenario
//! verdict, the sink, and the reader. [`parse`] gives a [`Json`] value
//! (serde_json's) for tests and tools that inspect output. Like every view,
//! this module does no I/O beyond writing to the `Write` handed to
//! [`JsonSink`].
//!
//! Shapes (keys in this order; every event has `t`, `side`, `conn`, `type`):
//!
//! ```text
//! {"t":0.2003,"side":"closelab","conn":1,"type":"segment","dir":"out","src":"10.201.0.2:7000","dst":"10.201.0.1:41234","flags":"F.","seq":6,"ack":6,"win":64240,"len":0}
//! {"t":0.2003,"side":"closelab","conn":1,"type":"state","from":"ESTABLISHED","to":"FIN-WAIT-1","cause":"app","action":"close"}
//! {"t":0.2003,"side":"closelab","conn":1,"type":"app","action":"send","bytes":5}
//! {"t":0.3,"side":"closelab","conn":1,"type":"fault","action":"dropped","dir":"out","rule":1,"detail":"","src":…,"dst":…,"flags":".","seq":7,"ack":7,"win":64240,"len":0}
//! {"t":0.4,"side":"linux","conn":1,"type":"timer","name":"timewait","remaining":59.8,"retrans":0}
//! {"t":0.3,"side":"closelab","conn":null,"type":"malformed","dir":"in","len":3,"reason":"…"}
//! {"t":0.5,"side":"closelab","conn":null,"type":"refused","tuple":"…","reason":"…"}
//! {"t":0.6,"side":"closelab","conn":null,"type":"note","text":"…"}
//! {"type":"summary","side":"closelab","connections":3,"reached":{"ESTABLISHED":3,"FIN-WAIT-1":3}}
//! {"type":"verdict","scenario":"lost-fin","round":1,"pass":false,"failures":[{"expect":"…","reason":"…"}],"error":null}
//! ```
//!
//! Times are seconds with at most 6 decimals (microseconds), trailing zeros
//! trimmed. A fault on a segment that could not be parsed has no segment
//! keys. Flags use tcpdump letters; a segment with no flags at all is
//! `"none"`, as in the text timeline. Strings are escaped as serde_json
//! does (control characters below U+0020; DEL is kept as is).

use std::collections::BTreeMap;
use std::io::{self, Write};

use serde::{Deserialize, Serialize, Serializer};

use super::LineWriter;
use crate::event::{Event, Side, Sink, Summary, TcpState};
use crate::scenario::Failure;

/// A parsed JSON value (serde_json's), for code that inspects output.
pub use serde_json::Value as Json;

/// Parses any JSON text (RFC 8259) into a [`Json`] value.
pub fn parse(s: &str) -> Result<Json, serde_json::Error> {
    serde_json::from_str(s)
}

/// Why a line could not be read back. The position is a column: callers
/// name the file and line.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{}", without_line(.0))]
    Json(#[from] serde_json::Error),
    #[error("a summary line, not an event")]
    Summary,
}

/// serde_json's message with ` at line 1 column 56` turned into
/// ` (column 56)`: a JSON-lines reader knows the line better.
fn without_line(e: &serde_json::Error) -> String {
    let what = if e.is_syntax() || e.is_eof() { "invalid JSON: " } else { "" };
    let msg = e.to_string();
    let pos = format!(" at line {} column {}", e.line(), e.column());
    match msg.strip_suffix(&pos) {
        Some(m) if e.line() == 1 => format!("{what}{m} (column {})", e.column()),
        _ => format!("{what}{msg}"),
    }
}

// ---------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------

/// One event as one JSON object (no trailing newline).
pub fn line(ev: &Event) -> String {
    to_line(ev)
}

/// The shape of the exit summary line.
#[derive(Serialize, Deserialize)]
#[serde(tag = "type", rename = "summary")]
struct SummaryLine {
    side: Side,
    connections: u64,
    #[serde(serialize_with = "reached")]
    reached: BTreeMap<TcpState, u64>,
    /// Counts outside the connections (dropped SYNs, SYN cookies, TUN
    /// queue drops); left out when empty.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    counted: BTreeMap<String, u64>,
}

/// `reached` in [`TcpState::ALL`] order (CLOSED last), states never reached
/// left out.
fn reached<S: Serializer>(m: &BTreeMap<TcpState, u64>, s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(TcpState::ALL.iter().filter_map(|st| m.get(st).filter(|n| **n > 0).map(|n| (st, n))))
}

/// The exit summary of one side as one JSON object; `reached` lists states
/// in [`TcpState::ALL`] order, leaving out states never reached.
pub fn summary_line(s: &Summary, side: Side) -> String {
    to_line(&SummaryLine { side, connections: s.connections, reached: s.reached.clone(), counted: s.counted.clone() })
}

/// One scenario round's verdict (`closelab scenario --json`).
#[derive(Serialize)]
#[serde(tag = "type", rename = "verdict")]
pub struct Verdict<'a> {
    pub scenario: &'a str,
    pub round: usize,
    pub pass: bool,
    #[serde(serialize_with = "failures")]
    pub failures: &'a [Failure],
    pub error: Option<&'a str>,
}

fn failures<S: Serializer>(f: &&[Failure], s: S) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct One<'a> {
        expect: &'a str,
        reason: &'a str,
    }
    s.collect_seq(f.iter().map(|f| One { expect: &f.expect, reason: &f.reason }))
}

/// A verdict as one JSON object.
pub fn verdict_line(v: &Verdict) -> String {
    to_line(v)
}

/// Serializes one of this module's shapes. They hold only strings, numbers
/// and maps with string keys, which serde_json always writes.
fn to_line<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("JSON-lines shapes always serialize")
}

// ---------------------------------------------------------------------------
// Sink
// ---------------------------------------------------------------------------

/// Writes [`line`] plus a newline for every event, flushing each line. The
/// first write error (EPIPE, disk full) is kept and reported by
/// [`JsonSink::error`]; nothing is written after it and nothing panics.
pub struct JsonSink<W: Write> {
    out: LineWriter<W>,
}

impl<W: Write> JsonSink<W> {
    pub fn new(out: W) -> JsonSink<W> {
        JsonSink { out: LineWriter::new(out) }
    }

    /// Writes only when the run loop flushes (see [`LineWriter::batched`]).
    pub fn batched(out: W) -> JsonSink<W> {
        JsonSink { out: LineWriter::batched(out) }
    }

    /// The first write error, if any.
    pub fn error(&self) -> Option<&io::Error> {
        self.out.error()
    }

    /// Writes a [`summary_line`] through the same error handling.
    pub fn summary(&mut self, s: &Summary, side: Side) {
        let text = summary_line(s, side);
        self.out.write_line(&text);
        self.out.flush();
    }

    pub fn get_ref(&self) -> &W {
        self.out.get_ref()
    }

    pub fn get_mut(&mut self) -> &mut W {
        self.out.get_mut()
    }

    pub fn into_inner(self) -> W {
        self.out.into_inner()
    }
}

impl<W: Write> Sink for JsonSink<W> {
    fn event(&mut self, ev: &Event) {
        let text = line(ev);
        self.out.write_line(&text);
    }

    fn flush(&mut self) {
        self.out.flush();
    }
}

// ---------------------------------------------------------------------------
// Reading events back
// ---------------------------------------------------------------------------

/// One line of a JSON-lines file as written by this module.
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    Event(Event),
    Summary { side: Side, summary: Summary },
}

/// Reads one line written by [`line`] or [`summary_line`]. Unknown keys are
/// ignored (newer writers may add some); missing or mistyped keys are errors
/// that name the key.
pub fn parse_record(s: &str) -> Result<Record, ReadError> {
    // Straight from the text, so that errors carry a column.
    let event_err = match serde_json::from_str::<Event>(s) {
        Ok(ev) => return Ok(Record::Event(ev)),
        Err(e) => e,
    };
    let is_summary = |v: &Json| v.get("type").and_then(Json::as_str) == Some("summary");
    match serde_json::from_str::<Json>(s) {
        Ok(v) if is_summary(&v) => {
            let l: SummaryLine = serde_json::from_str(s)?;
            let summary = Summary { connections: l.connections, reached: l.reached, counted: l.counted };
            Ok(Record::Summary { side: l.side, summary })
        }
        _ => Err(event_err.into()),
    }
}

/// Reads back one event written by [`line`]: `parse_line(&line(ev)) == ev`
/// for every event whose times have at most 6 decimals. A summary line is an
/// error here; use [`parse_record`] to accept both.
pub fn parse_line(s: &str) -> Result<Event, ReadError> {
    match parse_record(s)? {
        Record::Event(ev) => Ok(ev),
        Record::Summary { .. } => Err(ReadError::Summary),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{AppAction, Cause, Dir, EventKind, FaultAction};
    use crate::wire::{Flags, Segment};

    fn seg(src: &str, dst: &str, flags: &str, seq: u32, ack: u32, len: usize) -> Segment {
        Segment {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            flags: Flags::parse(flags).unwrap(),
            seq,
            ack,
            win: 64240,
            len,
        }
    }

    fn ev(t: f64, side: Side, conn: Option<u64>, kind: EventKind) -> Event {
        Event { t, side, conn, kind }
    }

    const CLIENT: &str = "10.201.0.1:41234";
    const SERVER: &str = "10.201.0.2:7000";

    /// One event of every kind (and the variants that change the shape),
    /// with the exact line each must produce. Times are chosen to survive
    /// the 6-decimal format exactly.
    fn samples() -> Vec<(Event, &'static str)> {
        let c = Side::Closelab;
        vec![
            (
                ev(0.2003, c, Some(1), EventKind::Segment { dir: Dir::Out, seg: seg(SERVER, CLIENT, "F.", 6, 6, 0) }),
                r#"{"t":0.2003,"side":"closelab","conn":1,"type":"segment","dir":"out","src":"10.201.0.2:7000","dst":"10.201.0.1:41234","flags":"F.","seq":6,"ack":6,"win":64240,"len":0}"#,
            ),
            (
                ev(
                    0.0,
                    c,
                    None,
                    EventKind::Segment {
                        dir: Dir::In,
                        seg: seg("[fd00::1]:5555", "[fd00::2]:7000", "S", 4294967295, 0, 0),
                    },
                ),
                r#"{"t":0,"side":"closelab","conn":null,"type":"segment","dir":"in","src":"[fd00::1]:5555","dst":"[fd00::2]:7000","flags":"S","seq":4294967295,"ack":0,"win":64240,"len":0}"#,
            ),
            (
                ev(
                    0.25,
                    c,
                    Some(2),
                    EventKind::Segment {
                        dir: Dir::In,
                        seg: Segment { flags: Flags::default(), ..seg(CLIENT, SERVER, ".", 1, 2, 3) },
                    },
                ),
                r#"{"t":0.25,"side":"closelab","conn":2,"type":"segment","dir":"in","src":"10.201.0.1:41234","dst":"10.201.0.2:7000","flags":"none","seq":1,"ack":2,"win":64240,"len":3}"#,
            ),
            (
                ev(
                    0.2003,
                    c,
                    Some(1),
                    EventKind::State {
                        from: TcpState::Established,
                        to: TcpState::FinWait1,
                        cause: Cause::App(AppAction::Close),
                    },
                ),
                r#"{"t":0.2003,"side":"closelab","conn":1,"type":"state","from":"ESTABLISHED","to":"FIN-WAIT-1","cause":"app","action":"close"}"#,
            ),
            (
                ev(
                    1.5,
                    c,
                    Some(1),
                    EventKind::State { from: TcpState::Listen, to: TcpState::SynReceived, cause: Cause::Segment },
                ),
                r#"{"t":1.5,"side":"closelab","conn":1,"type":"state","from":"LISTEN","to":"SYN-RECEIVED","cause":"segment"}"#,
            ),
            (
                ev(
                    10.0,
                    c,
                    Some(1),
                    EventKind::State { from: TcpState::TimeWait, to: TcpState::Closed, cause: Cause::Timer },
                ),
                r#"{"t":10,"side":"closelab","conn":1,"type":"state","from":"TIME-WAIT","to":"CLOSED","cause":"timer"}"#,
            ),
            (
                ev(
                    0.201,
                    Side::Linux,
                    Some(1),
                    EventKind::State { from: TcpState::FinWait1, to: TcpState::FinWait2, cause: Cause::Observed },
                ),
                r#"{"t":0.201,"side":"linux","conn":1,"type":"state","from":"FIN-WAIT-1","to":"FIN-WAIT-2","cause":"observed"}"#,
            ),
            (
                ev(0.2003, c, Some(1), EventKind::App { action: AppAction::Close }),
                r#"{"t":0.2003,"side":"closelab","conn":1,"type":"app","action":"close"}"#,
            ),
            (
                ev(0.2003, c, Some(1), EventKind::App { action: AppAction::Send(5) }),
                r#"{"t":0.2003,"side":"closelab","conn":1,"type":"app","action":"send","bytes":5}"#,
            ),
            (
                ev(0.5, c, Some(3), EventKind::App { action: AppAction::Recv(0) }),
                r#"{"t":0.5,"side":"closelab","conn":3,"type":"app","action":"recv","bytes":0}"#,
            ),
            (
                ev(0.5, Side::Linux, Some(3), EventKind::App { action: AppAction::LingerClose }),
                r#"{"t":0.5,"side":"linux","conn":3,"type":"app","action":"linger-close"}"#,
            ),
            (
                ev(
                    0.3,
                    c,
                    Some(1),
                    EventKind::Fault {
                        action: FaultAction::Dropped,
                        dir: Dir::Out,
                        seg: Some(seg(SERVER, CLIENT, ".", 7, 7, 0)),
                        rule: 1,
                        detail: String::new(),
                    },
                ),
                r#"{"t":0.3,"side":"closelab","conn":1,"type":"fault","action":"dropped","dir":"out","rule":1,"detail":"","src":"10.201.0.2:7000","dst":"10.201.0.1:41234","flags":".","seq":7,"ack":7,"win":64240,"len":0}"#,
            ),
            (
                ev(
                    0.3,
                    c,
                    None,
                    EventKind::Fault {
                        action: FaultAction::Delayed,
                        dir: Dir::In,
                        seg: None,
                        rule: 2,
                        detail: "by 200ms".into(),
                    },
                ),
                r#"{"t":0.3,"side":"closelab","conn":null,"type":"fault","action":"delayed","dir":"in","rule":2,"detail":"by 200ms"}"#,
            ),
            (
                ev(
                    0.4,
                    Side::Linux,
                    Some(1),
                    EventKind::Timer { name: "timewait".into(), remaining: 59.8, retrans: 0 },
                ),
                r#"{"t":0.4,"side":"linux","conn":1,"type":"timer","name":"timewait","remaining":59.8,"retrans":0}"#,
            ),
            (
                ev(0.4, Side::Linux, Some(1), EventKind::Timer { name: "on".into(), remaining: 0.312, retrans: 2 }),
                r#"{"t":0.4,"side":"linux","conn":1,"type":"timer","name":"on","remaining":0.312,"retrans":2}"#,
            ),
            (
                ev(
                    0.3,
                    c,
                    None,
                    EventKind::Malformed { dir: Dir::In, len: 3, reason: "truncated or malformed header".into() },
                ),
                r#"{"t":0.3,"side":"closelab","conn":null,"type":"malformed","dir":"in","len":3,"reason":"truncated or malformed header"}"#,
            ),
            (
                ev(
                    0.5,
                    c,
                    None,
                    EventKind::Refused {
                        tuple: "10.201.0.1:5555 -> 10.201.0.2:7000".into(),
                        reason: "connection limit 10 reached".into(),
                    },
                ),
                r#"{"t":0.5,"side":"closelab","conn":null,"type":"refused","tuple":"10.201.0.1:5555 -> 10.201.0.2:7000","reason":"connection limit 10 reached"}"#,
            ),
            (
                ev(0.6, c, None, EventKind::Note { text: "story 1: closelab closes first".into() }),
                r#"{"t":0.6,"side":"closelab","conn":null,"type":"note","text":"story 1: closelab closes first"}"#,
            ),
        ]
    }

    // Tests for writing.

    #[test]
    fn test_line_exact_for_every_kind() {
        for (e, want) in samples() {
            assert_eq!(line(&e), want, "{e:?}");
        }
    }

    #[test]
    fn test_time_keeps_microseconds_and_trims_zeros() {
        let t = |t: f64| line(&ev(t, Side::Closelab, None, EventKind::Note { text: String::new() }));
        let want = |t: &str| format!(r#"{{"t":{t},"side":"closelab","conn":null,"type":"note","text":""}}"#);
        assert_eq!(t(0.200311), want("0.200311"));
        assert_eq!(t(0.2003114), want("0.200311"));
        assert_eq!(t(0.000001), want("0.000001"));
        assert_eq!(t(12.0), want("12"));
        assert_eq!(t(-0.0000001), want("0"));
        assert_eq!(t(f64::NAN), want("null"));
    }

    #[test]
    fn test_note_escaping() {
        let e = ev(
            0.6,
            Side::Closelab,
            None,
            EventKind::Note { text: "say \"hi\" \\ a\nb\tc\r\u{1}\u{8}\u{c}\u{7f} é ☃".into() },
        );
        let l = line(&e);
        assert_eq!(
            l,
            r#"{"t":0.6,"side":"closelab","conn":null,"type":"note","text":"say \"hi\" \\ a\nb\tc\r\u0001\b\f é ☃"}"#
        );
        assert_eq!(parse_line(&l).unwrap(), e);
        // And a generic parser sees the same text.
        let j = parse(&l).unwrap();
        assert_eq!(j.get("text").and_then(Json::as_str), Some("say \"hi\" \\ a\nb\tc\r\u{1}\u{8}\u{c}\u{7f} é ☃"));
    }

    #[test]
    fn test_summary_line() {
        let mut s = Summary { connections: 3, ..Summary::default() };
        s.reached.insert(TcpState::FinWait1, 3);
        s.reached.insert(TcpState::Established, 3);
        s.reached.insert(TcpState::Closing, 0);
        let l = summary_line(&s, Side::Closelab);
        assert_eq!(
            l,
            r#"{"type":"summary","side":"closelab","connections":3,"reached":{"ESTABLISHED":3,"FIN-WAIT-1":3}}"#
        );
        s.reached.remove(&TcpState::Closing);
        assert_eq!(parse_record(&l).unwrap(), Record::Summary { side: Side::Closelab, summary: s });
        assert_eq!(parse_line(&l).unwrap_err().to_string(), "a summary line, not an event");
        let empty = summary_line(&Summary::default(), Side::Linux);
        assert_eq!(empty, r#"{"type":"summary","side":"linux","connections":0,"reached":{}}"#);
    }

    // Tests for reading events back.

    #[test]
    fn test_round_trip_every_kind() {
        for (e, _) in samples() {
            assert_eq!(parse_line(&line(&e)).unwrap(), e.clone());
        }
        let all_actions = [
            AppAction::Listen,
            AppAction::Connect,
            AppAction::Accept,
            AppAction::Send(1 << 20),
            AppAction::Recv(7),
            AppAction::Close,
            AppAction::CloseUnread,
            AppAction::Shutdown,
            AppAction::Abort,
            AppAction::LingerClose,
        ];
        for action in all_actions {
            let e = ev(0.125, Side::Closelab, Some(9), EventKind::App { action });
            assert_eq!(parse_line(&line(&e)).unwrap(), e);
            let cause = Cause::App(action);
            let e = ev(
                0.125,
                Side::Linux,
                Some(9),
                EventKind::State { from: TcpState::CloseWait, to: TcpState::LastAck, cause },
            );
            assert_eq!(parse_line(&line(&e)).unwrap(), e);
        }
        for (i, &from) in TcpState::ALL.iter().enumerate() {
            let to = TcpState::ALL[(i + 1) % TcpState::ALL.len()];
            let e = ev(3.75, Side::Closelab, Some(1), EventKind::State { from, to, cause: Cause::Segment });
            assert_eq!(parse_line(&line(&e)).unwrap(), e);
        }
        for action in [FaultAction::Dropped, FaultAction::Delayed, FaultAction::Duplicated, FaultAction::Reordered] {
            let e = ev(
                0.5,
                Side::Closelab,
                Some(u32::MAX as u64),
                EventKind::Fault {
                    action,
                    dir: Dir::In,
                    seg: Some(seg(CLIENT, SERVER, "FRP.", 1, 2, 3)),
                    rule: 7,
                    detail: "x".into(),
                },
            );
            assert_eq!(parse_line(&line(&e)).unwrap(), e);
        }
    }

    #[test]
    fn test_parse_line_accepts_reordered_keys_and_unknown_keys() {
        let l = r#"{"type":"note","extra":[1,{"a":null}],"conn":4,"text":"hi","side":"linux","t":2.5}"#;
        assert_eq!(parse_line(l).unwrap(), ev(2.5, Side::Linux, Some(4), EventKind::Note { text: "hi".into() }));
    }

    #[test]
    fn test_parse_line_errors_name_the_problem() {
        let cases = [
            ("", "invalid JSON: EOF while parsing a value (column 0)"),
            ("[]", "invalid type: sequence, expected struct Event"),
            (r#"{"side":"closelab","conn":null,"type":"note","text":"x"}"#, "missing field `t`"),
            (
                r#"{"t":"0","side":"closelab","conn":null,"type":"note","text":"x"}"#,
                "invalid type: string \"0\", expected f64",
            ),
            (
                r#"{"t":0,"side":"moon","conn":null,"type":"note","text":"x"}"#,
                "unknown variant `moon`, expected `closelab` or `linux`",
            ),
            (
                r#"{"t":0,"side":"linux","conn":null,"type":"boom"}"#,
                "unknown variant `boom`, expected one of `segment`",
            ),
            (
                r#"{"t":0,"side":"linux","type":"note","conn":-1,"text":"x"}"#,
                "invalid value: integer `-1`, expected u64",
            ),
            (
                r#"{"t":0,"side":"linux","conn":1.5,"type":"note","text":"x"}"#,
                "invalid type: floating point `1.5`, expected u64",
            ),
            (
                r#"{"t":0,"side":"linux","conn":1,"type":"app","action":"send"}"#,
                "app action \"send\" without key \"bytes\"",
            ),
            (
                r#"{"t":0,"side":"linux","conn":1,"type":"app","action":"close","bytes":3}"#,
                "key \"bytes\" given for app action \"close\"",
            ),
            (r#"{"t":0,"side":"linux","conn":1,"type":"app","action":"jump"}"#, "unknown app action \"jump\""),
            (
                r#"{"t":0,"side":"linux","conn":1,"type":"state","from":"NOPE","to":"CLOSED","cause":"timer"}"#,
                "unknown state \"NOPE\"",
            ),
            (
                r#"{"t":0,"side":"linux","conn":1,"type":"state","from":"LISTEN","to":"CLOSED","cause":"magic"}"#,
                "unknown cause \"magic\"",
            ),
            (
                r#"{"t":0,"side":"closelab","conn":1,"type":"segment","dir":"in","src":"10.0.0.1:1","dst":"10.0.0.2:2","flags":"S","seq":4294967296,"ack":0,"win":1,"len":0}"#,
                "invalid value: integer `4294967296`, expected u32",
            ),
            (
                r#"{"t":0,"side":"closelab","conn":1,"type":"segment","dir":"in","src":"10.0.0.1:1","dst":"10.0.0.2:2","flags":"S","seq":0,"ack":0,"win":65536,"len":0}"#,
                "invalid value: integer `65536`, expected u16",
            ),
            (
                r#"{"t":0,"side":"closelab","conn":1,"type":"segment","dir":"in","src":"nowhere","dst":"10.0.0.2:2","flags":"S","seq":0,"ack":0,"win":1,"len":0}"#,
                "invalid socket address syntax",
            ),
            (
                r#"{"t":0,"side":"closelab","conn":1,"type":"segment","dir":"in","src":"10.0.0.1:1","dst":"10.0.0.2:2","flags":"SX","seq":0,"ack":0,"win":1,"len":0}"#,
                "bad tcp flags \"SX\"",
            ),
            (
                r#"{"t":0,"side":"closelab","conn":1,"type":"fault","action":"dropped","dir":"in","rule":1,"detail":"","flags":"S"}"#,
                "missing field `src`",
            ),
            (
                r#"{"t":0,"side":"closelab","conn":1,"type":"segment","dir":"up"}"#,
                "unknown variant `up`, expected `in` or `out`",
            ),
        ];
        for (input, want) in cases {
            let err = parse_line(input).expect_err(input).to_string();
            assert!(err.contains(want), "{input}: {err}");
        }
    }

    // Tests for the JSON helpers.

    #[test]
    fn test_parse_gives_serde_json_values() {
        let j = parse(r#"{"a":[1,-2.5e1,true,null,"s"],"b":{}}"#).unwrap();
        assert_eq!(j.get("a").and_then(Json::as_array).map(Vec::len), Some(5));
        assert!(parse("{} {}").is_err());
        assert!(parse("[1,]").is_err());
    }

    #[test]
    fn test_verdict_line() {
        let failures = [Failure { expect: "a \"b\"".into(), reason: "c".into(), around: Some(1.0) }];
        let v = Verdict { scenario: "lost-fin", round: 2, pass: false, failures: &failures, error: None };
        assert_eq!(
            verdict_line(&v),
            r#"{"type":"verdict","scenario":"lost-fin","round":2,"pass":false,"failures":[{"expect":"a \"b\"","reason":"c"}],"error":null}"#
        );
        let v = Verdict { scenario: "x", round: 1, pass: false, failures: &[], error: Some("no peer") };
        assert_eq!(
            verdict_line(&v),
            r#"{"type":"verdict","scenario":"x","round":1,"pass":false,"failures":[],"error":"no peer"}"#
        );
    }

    // Tests for the sink.

    struct BrokenPipe;

    impl Write for BrokenPipe {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from(io::ErrorKind::BrokenPipe))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn test_sink_writes_lines_and_keeps_errors() {
        let mut sink = JsonSink::new(Vec::new());
        let e = ev(0.25, Side::Closelab, None, EventKind::Note { text: "x".into() });
        sink.event(&e);
        sink.summary(&Summary::default(), Side::Closelab);
        assert!(sink.error().is_none());
        let out = String::from_utf8(sink.into_inner()).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(parse_line(lines[0]).unwrap(), e.clone());
        assert!(matches!(parse_record(lines[1]), Ok(Record::Summary { side: Side::Closelab, .. })));

        let mut broken = JsonSink::new(BrokenPipe);
        broken.event(&e);
        broken.event(&e);
        assert_eq!(broken.error().map(|e| e.kind()), Some(io::ErrorKind::BrokenPipe));
    }
}
