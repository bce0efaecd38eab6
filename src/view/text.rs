//! The human timeline: one line per event, columns aligned, tcpdump-style
//! segments (`[F.] seq 6 ack 6`), states in RFC spelling (`FIN-WAIT-1`).
//!
//! This view only formats; the one I/O it does is writing to the `Write` it
//! is given ([`TextSink`]). It never panics on a write error: the first error
//! (EPIPE when piped into `head`, a full disk) is kept for the caller to
//! report, and later events are not written.

use std::fmt::Write as _;
use std::io::{self, Write};

use super::LineWriter;
use crate::event::{Event, EventKind, Side, Sink, Summary, TcpState};
use crate::wire::Segment;

/// One event as one line (no trailing newline):
/// `0.200311 #1 ESTABLISHED -> FIN-WAIT-1 (app close)`.
///
/// Linux-side events carry `linux ` after the connection number; closelab's
/// side has no marker. Control characters in free text (notes, reasons,
/// details) are escaped so the event stays on one line.
pub fn line(ev: &Event) -> String {
    let mut s = format!("{:.6} ", ev.t);
    match ev.conn {
        Some(c) => {
            let _ = write!(s, "#{c} ");
        }
        None => s.push_str("#- "),
    }
    if ev.side == Side::Linux {
        s.push_str("linux ");
    }
    match &ev.kind {
        EventKind::Segment { dir, seg } => {
            // "in " and "out" take the same width so addresses line up.
            let _ = write!(s, "{:<3} {} > {} [{}] seq {}", dir.name(), seg.src, seg.dst, seg.flags, seg.seq);
            if seg.flags.ack {
                let _ = write!(s, " ack {}", seg.ack);
            }
            let _ = write!(s, " win {} len {}", seg.win, seg.len);
        }
        EventKind::Malformed { dir, len, reason } => {
            let _ = write!(s, "malformed {} {} bytes: {}", dir.name(), len, one_line(reason));
        }
        EventKind::State { from, to, cause } => {
            let _ = write!(s, "{from} -> {to} ({cause})");
        }
        EventKind::App { action } => {
            s.push_str("app ");
            s.push_str(action.name());
            if let Some(n) = action.bytes() {
                let _ = write!(s, " {n} bytes");
            }
        }
        EventKind::Fault { action, dir, seg, rule, detail } => {
            let _ = write!(s, "fault: {} {} ", action.name(), dir.name());
            match seg {
                Some(seg) => s.push_str(&compact_segment(seg)),
                None => s.push_str("malformed"),
            }
            let _ = write!(s, " (rule {rule})");
            if !detail.is_empty() {
                s.push(' ');
                s.push_str(&one_line(detail));
            }
        }
        EventKind::Timer { name, remaining, retrans } => {
            let _ = write!(s, "timer {} {:.1}s", one_line(name), remaining);
            if *retrans > 0 {
                let _ = write!(s, " retrans {retrans}");
            }
        }
        EventKind::Refused { tuple, reason } => {
            let _ = write!(s, "refused {}: {}", one_line(tuple), one_line(reason));
        }
        EventKind::Note { text } => {
            s.push_str("note: ");
            s.push_str(&one_line(text));
        }
    }
    s
}

/// Just enough to recognise a segment in a fault line: flags, then the
/// number that identifies it (a pure ACK by its ack, anything else by its
/// seq, plus ack when the ACK flag is set), and the payload length if any.
fn compact_segment(seg: &Segment) -> String {
    let mut s = format!("[{}]", seg.flags);
    if !seg.is_pure_ack() {
        let _ = write!(s, " seq {}", seg.seq);
    }
    if seg.flags.ack {
        let _ = write!(s, " ack {}", seg.ack);
    }
    if seg.len > 0 {
        let _ = write!(s, " len {}", seg.len);
    }
    s
}

/// Escapes control characters (`\n`, `\t`, `\u{1b}`) so free text cannot
/// break the one-event-per-line promise or inject terminal sequences.
fn one_line(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_string();
    }
    let mut s = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            s.extend(c.escape_default());
        } else {
            s.push(c);
        }
    }
    s
}

/// The exit summary, several lines without a trailing newline:
///
/// ```text
/// summary: 3 connections
///   reached ESTABLISHED 3
///   reached FIN-WAIT-1 3
/// ```
///
/// States appear in [`TcpState::ALL`] order; states never reached are left
/// out.
pub fn summary(s: &Summary) -> String {
    let noun = if s.connections == 1 { "connection" } else { "connections" };
    let mut out = format!("summary: {} {}", s.connections, noun);
    for state in TcpState::ALL {
        match s.reached.get(&state) {
            Some(&n) if n > 0 => {
                let _ = write!(out, "\n  reached {state} {n}");
            }
            _ => {}
        }
    }
    for (name, n) in &s.counted {
        let _ = write!(out, "\n  {name} {n}");
    }
    out
}

/// Writes [`line`] plus a newline for every event, flushing each line so a
/// live timeline shows up at once.
pub struct TextSink<W: Write> {
    out: LineWriter<W>,
}

impl<W: Write> TextSink<W> {
    pub fn new(out: W) -> TextSink<W> {
        TextSink { out: LineWriter::new(out) }
    }

    /// Writes only when the run loop flushes (see [`LineWriter::batched`]).
    pub fn batched(out: W) -> TextSink<W> {
        TextSink { out: LineWriter::batched(out) }
    }

    /// The first write error, if any. After it nothing more is written.
    pub fn error(&self) -> Option<&io::Error> {
        self.out.error()
    }

    /// Writes the exit [`summary`] through the same error handling.
    pub fn summary(&mut self, s: &Summary) {
        let text = summary(s);
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

impl<W: Write> Sink for TextSink<W> {
    fn event(&mut self, ev: &Event) {
        let text = line(ev);
        self.out.write_line(&text);
    }

    fn flush(&mut self) {
        self.out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{AppAction, Cause, Dir, FaultAction};
    use crate::wire::Flags;

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

    fn ev(t: f64, conn: Option<u64>, kind: EventKind) -> Event {
        Event { t, side: Side::Closelab, conn, kind }
    }

    const CLIENT: &str = "10.201.0.1:41234";
    const SERVER: &str = "10.201.0.2:7000";

    // Tests for segment lines.

    #[test]
    fn test_segment_syn_in_shows_seq_without_ack() {
        let e = ev(0.0, Some(1), EventKind::Segment { dir: Dir::In, seg: seg(CLIENT, SERVER, "S", 3127, 0, 0) });
        assert_eq!(line(&e), "0.000000 #1 in  10.201.0.1:41234 > 10.201.0.2:7000 [S] seq 3127 win 64240 len 0");
    }

    #[test]
    fn test_segment_out_with_ack() {
        let e = ev(0.0, Some(1), EventKind::Segment { dir: Dir::Out, seg: seg(SERVER, CLIENT, "S.", 100, 3128, 0) });
        assert_eq!(
            line(&e),
            "0.000000 #1 out 10.201.0.2:7000 > 10.201.0.1:41234 [S.] seq 100 ack 3128 win 64240 len 0"
        );
        let e = ev(0.200311, Some(1), EventKind::Segment { dir: Dir::Out, seg: seg(SERVER, CLIENT, "F.", 6, 6, 0) });
        assert_eq!(line(&e), "0.200311 #1 out 10.201.0.2:7000 > 10.201.0.1:41234 [F.] seq 6 ack 6 win 64240 len 0");
    }

    #[test]
    fn test_segment_without_conn_and_ipv6() {
        let e = ev(
            1.5,
            None,
            EventKind::Segment { dir: Dir::Out, seg: seg("[fd00::2]:7000", "[fd00::1]:5555", "R", 0, 0, 0) },
        );
        assert_eq!(line(&e), "1.500000 #- out [fd00::2]:7000 > [fd00::1]:5555 [R] seq 0 win 64240 len 0");
    }

    // Tests for state, app and linux-side lines.

    #[test]
    fn test_state_lines_name_the_cause() {
        let e = ev(
            0.0,
            Some(1),
            EventKind::State { from: TcpState::Listen, to: TcpState::SynReceived, cause: Cause::Segment },
        );
        assert_eq!(line(&e), "0.000000 #1 LISTEN -> SYN-RECEIVED (segment)");
        let e = ev(
            0.200311,
            Some(1),
            EventKind::State {
                from: TcpState::Established,
                to: TcpState::FinWait1,
                cause: Cause::App(AppAction::Close),
            },
        );
        assert_eq!(line(&e), "0.200311 #1 ESTABLISHED -> FIN-WAIT-1 (app close)");
        let e =
            ev(10.0, Some(2), EventKind::State { from: TcpState::TimeWait, to: TcpState::Closed, cause: Cause::Timer });
        assert_eq!(line(&e), "10.000000 #2 TIME-WAIT -> CLOSED (timer)");
    }

    #[test]
    fn test_linux_side_is_marked() {
        let e = Event {
            t: 0.201,
            side: Side::Linux,
            conn: Some(1),
            kind: EventKind::State { from: TcpState::FinWait1, to: TcpState::FinWait2, cause: Cause::Observed },
        };
        assert_eq!(line(&e), "0.201000 #1 linux FIN-WAIT-1 -> FIN-WAIT-2 (observed)");
    }

    #[test]
    fn test_app_lines() {
        let e = ev(0.200311, Some(1), EventKind::App { action: AppAction::Close });
        assert_eq!(line(&e), "0.200311 #1 app close");
        let e = ev(0.200311, Some(1), EventKind::App { action: AppAction::Send(5) });
        assert_eq!(line(&e), "0.200311 #1 app send 5 bytes");
        let e = ev(0.3, Some(1), EventKind::App { action: AppAction::Recv(0) });
        assert_eq!(line(&e), "0.300000 #1 app recv 0 bytes");
        let e = ev(0.3, Some(1), EventKind::App { action: AppAction::CloseUnread });
        assert_eq!(line(&e), "0.300000 #1 app close-unread");
    }

    // Tests for fault lines.

    #[test]
    fn test_fault_pure_ack_identified_by_ack() {
        let e = ev(
            0.3,
            Some(1),
            EventKind::Fault {
                action: FaultAction::Dropped,
                dir: Dir::Out,
                seg: Some(seg(SERVER, CLIENT, ".", 7, 7, 0)),
                rule: 1,
                detail: String::new(),
            },
        );
        assert_eq!(line(&e), "0.300000 #1 fault: dropped out [.] ack 7 (rule 1)");
    }

    #[test]
    fn test_fault_fin_and_data_show_seq_and_detail() {
        let e = ev(
            0.3,
            Some(1),
            EventKind::Fault {
                action: FaultAction::Delayed,
                dir: Dir::In,
                seg: Some(seg(CLIENT, SERVER, "F.", 6, 7, 0)),
                rule: 2,
                detail: "by 200ms".into(),
            },
        );
        assert_eq!(line(&e), "0.300000 #1 fault: delayed in [F.] seq 6 ack 7 (rule 2) by 200ms");
        let e = ev(
            0.3,
            Some(1),
            EventKind::Fault {
                action: FaultAction::Duplicated,
                dir: Dir::Out,
                seg: Some(seg(SERVER, CLIENT, "P.", 1, 6, 5)),
                rule: 3,
                detail: String::new(),
            },
        );
        assert_eq!(line(&e), "0.300000 #1 fault: duplicated out [P.] seq 1 ack 6 len 5 (rule 3)");
    }

    #[test]
    fn test_fault_without_segment_says_malformed() {
        let e = ev(
            0.3,
            None,
            EventKind::Fault {
                action: FaultAction::Reordered,
                dir: Dir::In,
                seg: None,
                rule: 4,
                detail: String::new(),
            },
        );
        assert_eq!(line(&e), "0.300000 #- fault: reordered in malformed (rule 4)");
    }

    // Tests for the remaining kinds.

    #[test]
    fn test_malformed_line() {
        let e = ev(
            0.3,
            None,
            EventKind::Malformed { dir: Dir::In, len: 3, reason: "truncated or malformed header".into() },
        );
        assert_eq!(line(&e), "0.300000 #- malformed in 3 bytes: truncated or malformed header");
    }

    #[test]
    fn test_timer_line() {
        let e = Event {
            t: 0.4,
            side: Side::Linux,
            conn: Some(1),
            kind: EventKind::Timer { name: "timewait".into(), remaining: 59.8, retrans: 0 },
        };
        assert_eq!(line(&e), "0.400000 #1 linux timer timewait 59.8s");
        let e = Event {
            t: 0.4,
            side: Side::Linux,
            conn: Some(1),
            kind: EventKind::Timer { name: "on".into(), remaining: 0.312, retrans: 1 },
        };
        assert_eq!(line(&e), "0.400000 #1 linux timer on 0.3s retrans 1");
    }

    #[test]
    fn test_refused_and_note_lines() {
        let e = ev(
            0.5,
            None,
            EventKind::Refused {
                tuple: "10.201.0.1:5555 -> 10.201.0.2:7000".into(),
                reason: "connection limit 10 reached".into(),
            },
        );
        assert_eq!(line(&e), "0.500000 #- refused 10.201.0.1:5555 -> 10.201.0.2:7000: connection limit 10 reached");
        let e = ev(0.6, None, EventKind::Note { text: "story 1: closelab closes first".into() });
        assert_eq!(line(&e), "0.600000 #- note: story 1: closelab closes first");
    }

    #[test]
    fn test_control_characters_stay_on_one_line() {
        let e = ev(0.6, None, EventKind::Note { text: "a\nb\tc\u{1b}[31m \"q\" é".into() });
        assert_eq!(line(&e), "0.600000 #- note: a\\nb\\tc\\u{1b}[31m \"q\" é");
    }

    // Tests for the summary.

    #[test]
    fn test_summary_in_state_order_skipping_zero() {
        let mut s = Summary { connections: 3, ..Summary::default() };
        s.reached.insert(TcpState::TimeWait, 2);
        s.reached.insert(TcpState::FinWait1, 3);
        s.reached.insert(TcpState::Established, 3);
        s.reached.insert(TcpState::Closing, 0);
        assert_eq!(
            summary(&s),
            "summary: 3 connections\n  reached ESTABLISHED 3\n  reached FIN-WAIT-1 3\n  reached TIME-WAIT 2"
        );
        let one = Summary { connections: 1, ..Summary::default() };
        assert_eq!(summary(&one), "summary: 1 connection");
    }

    // Tests for the sink.

    #[test]
    fn test_sink_writes_lines() {
        let mut sink = TextSink::new(Vec::new());
        sink.event(&ev(0.0, Some(1), EventKind::App { action: AppAction::Close }));
        sink.event(&ev(0.5, None, EventKind::Note { text: "x".into() }));
        assert!(sink.error().is_none());
        assert_eq!(String::from_utf8(sink.into_inner()).unwrap(), "0.000000 #1 app close\n0.500000 #- note: x\n");
    }

    struct BrokenPipe {
        writes: usize,
    }

    impl Write for BrokenPipe {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            self.writes += 1;
            Err(io::Error::from(io::ErrorKind::BrokenPipe))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn test_sink_remembers_epipe_and_stops_writing() {
        let mut sink = TextSink::new(BrokenPipe { writes: 0 });
        sink.event(&ev(0.0, Some(1), EventKind::App { action: AppAction::Close }));
        sink.event(&ev(0.1, Some(1), EventKind::App { action: AppAction::Close }));
        assert_eq!(sink.error().map(|e| e.kind()), Some(io::ErrorKind::BrokenPipe));
        assert_eq!(sink.get_ref().writes, 1);
    }
}
