//! The ladder: a terminal sequence diagram of a connection, both ends at
//! once. closelab's states run down the left column, the Linux peer's states
//! (observed through sock_diag) down the right one, and segments cross the
//! middle as arrows (`dir: Out` points right, `dir: In` points left).
//!
//! ```text
//!    time  closelab 10.201.0.2:7000                                           linux 10.201.0.1:41234
//!   0.000                                                                     SYN-SENT
//!   0.000                            <------------- [S] seq 0 ---------------
//!   0.000  SYN-RECEIVED (segment)
//!   0.000                            ---------- [S.] seq 0 ack 1 ----------->
//!   0.300                            x dropped out [.] ack 7 (rule 1)
//! ```
//!
//! (whole examples: `src/view/golden/ladder_*.txt`; `CLOSELAB_BLESS=1 cargo
//! test --lib view::` rewrites them after an intended change.)
//!
//! Sequence and acknowledgement numbers are relative to each end's initial
//! sequence number, like tcpdump's, learned from the SYNs of the same
//! connection (absolute when that SYN is not in the events). Output is plain
//! ASCII unless [`LadderOptions::unicode`] asks for box-drawing arrows, and is
//! a pure function of the events: same events, same bytes.
//!
//! Like every view this module only formats; it never looks at sockets and
//! never re-derives a state from packets (states come from `State` events).
//! The helpers shared with [`super::mermaid`] (ISNs, ends of a connection,
//! segment labels) live here.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;

use crate::event::{AppAction, Cause, ConnId, Dir, Event, EventKind, Side};
use crate::wire::Segment;

/// What to draw and how wide.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LadderOptions {
    /// Target line width in columns (default 100). Arrows shrink or grow
    /// with it; text that does not fit runs past it rather than being cut.
    pub width: usize,
    /// Only this connection (plus notes that belong to no connection).
    /// `None` draws every connection; when there is more than one, every
    /// line carries its connection number (`#2`).
    pub conn: Option<ConnId>,
    /// Sequence numbers relative to each end's ISN (default true).
    pub relative_seq: bool,
    /// Box-drawing arrows (`───>`, `✗`) instead of ASCII (`--->`, `x`).
    pub unicode: bool,
}

impl Default for LadderOptions {
    fn default() -> LadderOptions {
        LadderOptions { width: 100, conn: None, relative_seq: true, unicode: false }
    }
}

/// The ladder of `events`, one line per event, each line ending in `\n`.
pub fn render(events: &[Event], opts: &LadderOptions) -> String {
    let shown = select(events, opts.conn);
    let conns = Conns::learn(&shown);
    let multi = opts.conn.is_none() && conns.count_shown(&shown) > 1;
    let tag_w = if multi { shown.iter().map(|e| tag(e.conn).len()).max().unwrap_or(0).max("conn".len()) } else { 0 };
    let lay = Layout::new(opts, tag_w);

    let mut out = String::new();
    // Header: names both ends when one connection is drawn.
    let single = if multi { None } else { shown.iter().find_map(|e| e.conn) };
    let ends = single.and_then(|c| conns.ends.get(&c).copied());
    let mut head = lay.prefix("time", "conn");
    head.push_str(&end_name(Side::Closelab, ends.map(|e| e.0)));
    pad_to(&mut head, lay.right_start(), 1);
    head.push_str(&end_name(Side::Linux, ends.map(|e| e.1)));
    push_line(&mut out, head);

    let mut introduced = std::collections::BTreeSet::new();
    for ev in &shown {
        if multi
            && let Some(c) = ev.conn
            && introduced.insert(c)
            && let Some(&(cl, peer)) = conns.ends.get(&c)
        {
            let mut s = lay.prefix("", &tag(ev.conn));
            let _ = write!(s, "== {}, {}", end_name(Side::Closelab, Some(cl)), end_name(Side::Linux, Some(peer)));
            push_line(&mut out, s);
        }
        for l in lay.event_lines(ev, &conns, opts.relative_seq) {
            push_line(&mut out, l);
        }
    }
    out
}

/// Column geometry: `time  [conn  ]left | middle | right`.
struct Layout {
    tag_w: usize,
    left: usize,
    middle: usize,
    width: usize,
    unicode: bool,
}

const TIME_W: usize = 7;
/// Room for the longest closelab state with its cause,
/// `CLOSED (app close-unread)`.
const LEFT_W: usize = 25;
/// Room kept for the peer column (`timer on 0.4s retrans 1`).
const RIGHT_MIN: usize = 24;
const MIDDLE_MIN: usize = 24;

impl Layout {
    fn new(opts: &LadderOptions, tag_w: usize) -> Layout {
        let prefix = TIME_W + 2 + if tag_w > 0 { tag_w + 2 } else { 0 };
        let middle = opts.width.saturating_sub(prefix + LEFT_W + RIGHT_MIN).max(MIDDLE_MIN);
        Layout { tag_w, left: LEFT_W, middle, width: opts.width, unicode: opts.unicode }
    }

    fn prefix(&self, time: &str, tag: &str) -> String {
        let mut s = format!("{time:>TIME_W$}  ");
        if self.tag_w > 0 {
            let _ = write!(s, "{tag:<w$}  ", w = self.tag_w);
        }
        s
    }

    fn prefix_w(&self) -> usize {
        TIME_W + 2 + if self.tag_w > 0 { self.tag_w + 2 } else { 0 }
    }

    fn middle_start(&self) -> usize {
        self.prefix_w() + self.left
    }

    fn right_start(&self) -> usize {
        self.middle_start() + self.middle
    }

    fn column(&self, side: Side) -> usize {
        match side {
            Side::Closelab => self.prefix_w(),
            Side::Linux => self.right_start(),
        }
    }

    /// The lines one event draws (notes may wrap into several).
    fn event_lines(&self, ev: &Event, conns: &Conns, relative: bool) -> Vec<String> {
        let time = format!("{:.3}", ev.t);
        let mut s = self.prefix(&time, &tag(ev.conn));
        let at = |s: &mut String, col: usize, text: &str| {
            pad_to(s, col, 0);
            s.push_str(text);
        };
        match &ev.kind {
            EventKind::Segment { dir, seg } => {
                let mut label = conns.label(ev.conn, *dir, seg, relative);
                if ev.conn.is_none() {
                    // A segment of no connection: say whom it is with.
                    match dir {
                        Dir::Out => {
                            let _ = write!(label, " to {}", seg.dst);
                        }
                        Dir::In => {
                            let _ = write!(label, " from {}", seg.src);
                        }
                    }
                }
                at(&mut s, self.middle_start() + 1, &self.arrow(*dir, &label));
            }
            EventKind::State { to, cause, .. } => {
                let text = match cause {
                    // Every Linux-side state is observed; saying so on each
                    // line would be noise.
                    Cause::Observed => to.rfc_name().to_string(),
                    other => format!("{} ({other})", to.rfc_name()),
                };
                at(&mut s, self.column(ev.side), &text);
            }
            EventKind::App { action } => at(&mut s, self.column(ev.side), &app_text(*action)),
            EventKind::Timer { name, remaining, retrans } => {
                let mut text = format!("timer {} {remaining:.1}s", one_line(name));
                if *retrans > 0 {
                    let _ = write!(text, " retrans {retrans}");
                }
                at(&mut s, self.column(ev.side), &text);
            }
            EventKind::Fault { .. } => {
                let mark = if self.unicode { "✗" } else { "x" };
                let text = format!("{mark} {}", fault_text(ev, conns, relative));
                at(&mut s, self.middle_start() + 1, &text);
            }
            EventKind::Malformed { dir, len, reason } => {
                let text = format!("? malformed {} {len} bytes: {}", dir.name(), one_line(reason));
                at(&mut s, self.middle_start() + 1, &text);
            }
            EventKind::Refused { tuple, reason } => {
                let text = format!("! refused {}: {}", one_line(tuple), one_line(reason));
                at(&mut s, self.middle_start() + 1, &text);
            }
            EventKind::Note { text } => return wrap_note(&one_line(text), self.width),
        }
        vec![s]
    }

    /// An arrow filling the middle column less one space each side, the
    /// label centred on it: `----- [F.] seq 6 ack 6 ----->`.
    fn arrow(&self, dir: Dir, label: &str) -> String {
        let (dash, right, left) = if self.unicode { ("─", ">", "<") } else { ("-", ">", "<") };
        let room = self.middle.saturating_sub(2);
        let label_w = label.chars().count() + 2;
        let dashes = room.saturating_sub(label_w + 1).max(4);
        let a = dashes / 2;
        let b = dashes - a;
        // Both directions put the label at the same column.
        match dir {
            Dir::Out => format!("{} {label} {}{right}", dash.repeat(a), dash.repeat(b)),
            Dir::In => format!("{left}{} {label} {}", dash.repeat(a - 1), dash.repeat(b + 1)),
        }
    }
}

/// `closelab 10.201.0.2:7000`, or the bare side name if the address is
/// unknown.
pub(crate) fn end_name(side: Side, addr: Option<SocketAddr>) -> String {
    match addr {
        Some(a) => format!("{} {a}", side.name()),
        None => side.name().to_string(),
    }
}

/// `app close`, `app send 5`.
pub(crate) fn app_text(action: AppAction) -> String {
    match action.bytes() {
        Some(n) => format!("app {} {n}", action.name()),
        None => format!("app {}", action.name()),
    }
}

/// `dropped out [.] ack 7 (rule 1) detail` for a `Fault` event.
pub(crate) fn fault_text(ev: &Event, conns: &Conns, relative: bool) -> String {
    let EventKind::Fault { action, dir, seg, rule, detail } = &ev.kind else {
        return String::new();
    };
    let what = match seg {
        Some(seg) => conns.label(ev.conn, *dir, seg, relative),
        None => "malformed".to_string(),
    };
    let mut s = format!("{} {} {what} (rule {rule})", action.name(), dir.name());
    if !detail.is_empty() {
        s.push(' ');
        s.push_str(&one_line(detail));
    }
    s
}

/// The events a view draws: those of `conn` plus notes of no connection,
/// or everything.
pub(crate) fn select(events: &[Event], conn: Option<ConnId>) -> Vec<&Event> {
    events
        .iter()
        .filter(|e| match conn {
            None => true,
            Some(c) => e.conn == Some(c) || (e.conn.is_none() && matches!(e.kind, EventKind::Note { .. })),
        })
        .collect()
}

/// What the views learn about each connection before drawing it: the
/// initial sequence number of each end and the two addresses.
#[derive(Default)]
pub(crate) struct Conns {
    /// ISN per connection and direction of the SYN (`Out`: closelab's).
    isn: BTreeMap<(ConnId, DirKey), u32>,
    /// (closelab, peer) addresses from the first segment seen.
    pub(crate) ends: BTreeMap<ConnId, (SocketAddr, SocketAddr)>,
}

/// `Dir` has no `Ord`; this stands in for it as a map key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum DirKey {
    In,
    Out,
}

fn key(d: Dir) -> DirKey {
    match d {
        Dir::In => DirKey::In,
        Dir::Out => DirKey::Out,
    }
}

fn other(d: Dir) -> Dir {
    match d {
        Dir::In => Dir::Out,
        Dir::Out => Dir::In,
    }
}

impl Conns {
    /// One pass over the events. The first SYN of each direction sets that
    /// end's ISN (a retransmitted SYN carries the same one); segments a
    /// fault acted on count too, so a dropped SYN still anchors the numbers.
    pub(crate) fn learn(events: &[&Event]) -> Conns {
        let mut c = Conns::default();
        for ev in events {
            let Some(id) = ev.conn else { continue };
            let (dir, seg) = match &ev.kind {
                EventKind::Segment { dir, seg } => (*dir, seg),
                EventKind::Fault { dir, seg: Some(seg), .. } => (*dir, seg),
                _ => continue,
            };
            if seg.flags.syn {
                c.isn.entry((id, key(dir))).or_insert(seg.seq);
            }
            let ends = match dir {
                Dir::Out => (seg.src, seg.dst),
                Dir::In => (seg.dst, seg.src),
            };
            c.ends.entry(id).or_insert(ends);
        }
        c
    }

    /// How many connections the shown events hold; events of no connection
    /// other than notes count as one more.
    pub(crate) fn count_shown(&self, events: &[&Event]) -> usize {
        let mut ids = std::collections::BTreeSet::new();
        let mut stray = false;
        for ev in events {
            match ev.conn {
                Some(c) => {
                    ids.insert(c);
                }
                None => stray |= !matches!(ev.kind, EventKind::Note { .. }),
            }
        }
        ids.len() + usize::from(stray)
    }

    /// A segment as tcpdump would name it: `[F.] seq 6 ack 6`. A pure ACK
    /// shows only its ack; `len` appears for payload, `win 0` for a closed
    /// window (the other windows are noise in a close).
    pub(crate) fn label(&self, conn: Option<ConnId>, dir: Dir, seg: &Segment, relative: bool) -> String {
        let base = |d: Dir| if relative { conn.and_then(|c| self.isn.get(&(c, key(d))).copied()) } else { None };
        let seq = seg.seq.wrapping_sub(base(dir).unwrap_or(0));
        let ack = seg.ack.wrapping_sub(base(other(dir)).unwrap_or(0));
        let mut s = format!("[{}]", seg.flags);
        if !seg.is_pure_ack() {
            let _ = write!(s, " seq {seq}");
        }
        if seg.flags.ack {
            let _ = write!(s, " ack {ack}");
        }
        if seg.len > 0 {
            let _ = write!(s, " len {}", seg.len);
        }
        if seg.win == 0 && !seg.flags.rst {
            s.push_str(" win 0");
        }
        s
    }
}

/// `#1`, or `#-` for events of no connection.
fn tag(conn: Option<ConnId>) -> String {
    match conn {
        Some(c) => format!("#{c}"),
        None => "#-".to_string(),
    }
}

/// Pads `s` with spaces up to column `col` (counted in chars), or by `min`
/// spaces if it is already there.
fn pad_to(s: &mut String, col: usize, min: usize) {
    let n = s.chars().count();
    let pad = if n + min > col { min } else { col - n };
    s.extend(std::iter::repeat_n(' ', pad));
}

fn push_line(out: &mut String, line: String) {
    out.push_str(line.trim_end());
    out.push('\n');
}

/// `# text`, wrapped at `width` on spaces; every line starts with `# `.
fn wrap_note(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut cur = String::from("#");
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        if cur.len() > 1 && cur.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::replace(&mut cur, String::from("#")));
        }
        cur.push(' ');
        cur.push_str(word);
    }
    lines.push(cur);
    lines
}

/// Escapes control characters so free text (notes, reasons) cannot break
/// the layout or inject terminal sequences.
pub(crate) fn one_line(text: &str) -> String {
    let mut s = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            s.extend(c.escape_default());
        } else {
            s.push(c);
        }
    }
    s
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::event::{FaultAction, TcpState};
    use crate::wire::Flags;

    pub(crate) const CLIENT: &str = "10.201.0.1:41234";
    pub(crate) const SERVER: &str = "10.201.0.2:7000";
    /// closelab's ISN, close to the wrap so relative numbers must wrap too.
    pub(crate) const C_ISN: u32 = 4_294_967_290;
    /// The Linux client's ISN.
    pub(crate) const L_ISN: u32 = 3_127_000_000;

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

    fn c(t: f64, conn: u64, kind: EventKind) -> Event {
        Event { t, side: Side::Closelab, conn: Some(conn), kind }
    }

    fn l(t: f64, conn: u64, kind: EventKind) -> Event {
        Event { t, side: Side::Linux, conn: Some(conn), kind }
    }

    fn seg_in(t: f64, flags: &str, seq: u32, ack: u32, len: usize) -> Event {
        c(t, 1, EventKind::Segment { dir: Dir::In, seg: seg(CLIENT, SERVER, flags, seq, ack, len) })
    }

    fn seg_out(t: f64, flags: &str, seq: u32, ack: u32, len: usize) -> Event {
        c(t, 1, EventKind::Segment { dir: Dir::Out, seg: seg(SERVER, CLIENT, flags, seq, ack, len) })
    }

    fn state(t: f64, from: TcpState, to: TcpState, cause: Cause) -> Event {
        c(t, 1, EventKind::State { from, to, cause })
    }

    fn observed(t: f64, from: TcpState, to: TcpState) -> Event {
        l(t, 1, EventKind::State { from, to, cause: Cause::Observed })
    }

    /// A complete active close by closelab (the server) with absolute
    /// numbers: handshake, 5 bytes each way, closelab closes, Linux
    /// (CLOSE-WAIT, LAST-ACK) closes too, closelab's last ACK is dropped,
    /// Linux retransmits its FIN and TIME-WAIT re-ACKs it (what TIME-WAIT
    /// is for: re-ACKing a retransmitted FIN whose last ACK was lost).
    pub(crate) fn active_close() -> Vec<Event> {
        use TcpState::*;
        let (ci, li) = (C_ISN, L_ISN);
        vec![
            Event {
                t: 0.0,
                side: Side::Closelab,
                conn: None,
                kind: EventKind::Note { text: "closelab closes first; its last ACK is lost".into() },
            },
            observed(0.0, Closed, SynSent),
            seg_in(0.0001, "S", li, 0, 0),
            state(0.0001, Listen, SynReceived, Cause::Segment),
            seg_out(0.0001, "S.", ci, li + 1, 0),
            seg_in(0.0002, ".", li + 1, ci.wrapping_add(1), 0),
            state(0.0002, SynReceived, Established, Cause::Segment),
            observed(0.0003, SynSent, Established),
            seg_in(0.1, "P.", li + 1, ci.wrapping_add(1), 5),
            c(0.1, 1, EventKind::App { action: AppAction::Recv(5) }),
            c(0.1, 1, EventKind::App { action: AppAction::Send(5) }),
            seg_out(0.1, "P.", ci.wrapping_add(1), li + 6, 5),
            seg_in(0.15, ".", li + 6, ci.wrapping_add(6), 0),
            c(0.2, 1, EventKind::App { action: AppAction::Close }),
            state(0.2, Established, FinWait1, Cause::App(AppAction::Close)),
            seg_out(0.2, "F.", ci.wrapping_add(6), li + 6, 0),
            seg_in(0.201, ".", li + 6, ci.wrapping_add(7), 0),
            state(0.201, FinWait1, FinWait2, Cause::Segment),
            observed(0.21, Established, CloseWait),
            l(0.3, 1, EventKind::App { action: AppAction::Close }),
            observed(0.3, CloseWait, LastAck),
            seg_in(0.3, "F.", li + 6, ci.wrapping_add(7), 0),
            state(0.3, FinWait2, TimeWait, Cause::Segment),
            c(
                0.3,
                1,
                EventKind::Fault {
                    action: FaultAction::Dropped,
                    dir: Dir::Out,
                    seg: Some(seg(SERVER, CLIENT, ".", ci.wrapping_add(7), li + 7, 0)),
                    rule: 1,
                    detail: String::new(),
                },
            ),
            l(0.31, 1, EventKind::Timer { name: "on".into(), remaining: 0.2, retrans: 0 }),
            seg_in(0.51, "F.", li + 6, ci.wrapping_add(7), 0),
            seg_out(0.51, ".", ci.wrapping_add(7), li + 7, 0),
            l(0.52, 1, EventKind::Timer { name: "on".into(), remaining: 0.39, retrans: 1 }),
            observed(0.52, LastAck, Closed),
            state(10.3, TimeWait, Closed, Cause::Timer),
        ]
    }

    /// A second connection interleaved with the first: a SYN refused by a
    /// full table, answered with RST.
    pub(crate) fn with_second_conn() -> Vec<Event> {
        let other = "10.201.0.1:41236";
        let mut v = active_close();
        v.insert(12, c(0.12, 2, EventKind::Segment { dir: Dir::In, seg: seg(other, SERVER, "S", 77, 0, 0) }));
        v.insert(13, c(0.12, 2, EventKind::Segment { dir: Dir::Out, seg: seg(SERVER, other, "R.", 0, 78, 0) }));
        v.insert(
            14,
            Event {
                t: 0.12,
                side: Side::Closelab,
                conn: None,
                kind: EventKind::Refused {
                    tuple: format!("{other} -> {SERVER}"),
                    reason: "half-open limit 1 reached".into(),
                },
            },
        );
        v
    }

    /// Compares `got` with `src/view/golden/NAME`; `CLOSELAB_BLESS=1`
    /// rewrites the file instead (then review the diff), never under CI.
    #[track_caller]
    pub(crate) fn golden(name: &str, got: &str) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/view/golden").join(name);
        if crate::testing::bless() {
            std::fs::write(&path, got).unwrap();
            return;
        }
        let want = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (CLOSELAB_BLESS=1 creates it)", path.display()));
        assert!(got == want, "{} differs; got:\n{got}\nwant:\n{want}", path.display());
    }

    #[test]
    fn test_golden_active_close() {
        golden("ladder_active_close.txt", &render(&active_close(), &LadderOptions::default()));
    }

    #[test]
    fn test_golden_all_connections_are_tagged() {
        let got = render(&with_second_conn(), &LadderOptions::default());
        golden("ladder_all_conns.txt", &got);
        assert!(got.contains("  #2    == closelab 10.201.0.2:7000, linux 10.201.0.1:41236\n"), "{got}");
        assert!(
            got.lines()
                .skip(1)
                .all(|l| l.starts_with('#') || l.contains(" #1 ") || l.contains(" #2 ") || l.contains(" #- "))
        );
    }

    #[test]
    fn test_ascii_by_default_and_within_width() {
        for width in [100, 120] {
            let got = render(&active_close(), &LadderOptions { width, ..LadderOptions::default() });
            assert!(got.is_ascii());
            for line in got.lines() {
                assert!(line.chars().count() <= width, "{width}: {line:?}");
            }
        }
    }

    #[test]
    fn test_narrow_width_keeps_labels_whole() {
        let got = render(&active_close(), &LadderOptions { width: 40, ..LadderOptions::default() });
        assert!(got.contains(" -- [P.] seq 1 ack 6 len 5 -->\n"), "{got}");
        assert!(got.contains(" <- [P.] seq 1 ack 1 len 5 ---\n"), "{got}");
    }

    #[test]
    fn test_unicode_arrows() {
        let opts = LadderOptions { unicode: true, ..LadderOptions::default() };
        let got = render(&active_close(), &opts);
        assert!(got.contains("─── [S.] seq 0 ack 1 ───"), "{got}");
        assert!(got.contains("───>\n") && got.contains(" <───"), "{got}");
        assert!(got.contains(" ✗ dropped out [.] ack 7 (rule 1)\n"), "{got}");
        assert!(!got.contains("--"));
        // Same geometry as ASCII: one char for one char.
        let ascii = render(&active_close(), &LadderOptions::default());
        let widths = |s: &str| s.lines().map(|l| l.chars().count()).collect::<Vec<_>>();
        assert_eq!(widths(&got), widths(&ascii));
    }

    // Tests for sequence numbers.

    #[test]
    fn test_relative_numbers_start_at_zero_even_across_the_wrap() {
        let got = render(&active_close(), &LadderOptions::default());
        assert!(got.contains(" [S] seq 0 "));
        assert!(got.contains(" [S.] seq 0 ack 1 "));
        assert!(got.contains(" [P.] seq 1 ack 6 len 5 "));
        // closelab's ISN + 6 wraps past 2^32; relative numbers do not care.
        assert!(got.contains(" [F.] seq 6 ack 6 "));
        assert!(got.contains(" x dropped out [.] ack 7 (rule 1)\n"));
    }

    #[test]
    fn test_absolute_numbers_on_request() {
        let got = render(&active_close(), &LadderOptions { relative_seq: false, ..LadderOptions::default() });
        assert!(got.contains(&format!(" [S] seq {L_ISN} ")));
        assert!(got.contains(&format!(" [S.] seq {C_ISN} ack {} ", L_ISN + 1)));
        assert!(got.contains(" [F.] seq 0 ack 3127000006 "), "{got}");
        assert!(got.contains(" x dropped out [.] ack 3127000007 (rule 1)\n"));
    }

    #[test]
    fn test_each_end_is_relative_only_if_its_syn_was_seen() {
        // No SYN at all: absolute, like tcpdump joining mid-stream.
        let mid: Vec<Event> = active_close().into_iter().skip(8).collect();
        let got = render(&mid, &LadderOptions::default());
        assert!(got.contains(" [P.] seq 3127000001 ack 4294967291 len 5 "), "{got}");
        // Only the peer's SYN: its numbers are relative, closelab's are not.
        let mut no_synack = active_close();
        no_synack.remove(4);
        let got = render(&no_synack, &LadderOptions::default());
        assert!(got.contains(" [P.] seq 1 ack 4294967291 len 5 "), "{got}");
        assert!(got.contains(" [P.] seq 4294967291 ack 6 len 5 "), "{got}");
    }

    #[test]
    fn test_dropped_syn_still_anchors_the_numbers() {
        let syn = seg(CLIENT, SERVER, "S", 1000, 0, 0);
        let events = vec![
            c(
                0.0,
                1,
                EventKind::Fault {
                    action: FaultAction::Dropped,
                    dir: Dir::In,
                    seg: Some(syn.clone()),
                    rule: 1,
                    detail: String::new(),
                },
            ),
            c(1.0, 1, EventKind::Segment { dir: Dir::In, seg: syn }),
        ];
        let got = render(&events, &LadderOptions::default());
        assert!(got.contains(" x dropped in [S] seq 0 (rule 1)\n"), "{got}");
        assert!(got.contains(" [S] seq 0 "), "{got}");
    }

    // Tests for connection filtering.

    #[test]
    fn test_filter_keeps_the_conn_and_loose_notes() {
        let events = with_second_conn();
        let one = render(&events, &LadderOptions { conn: Some(1), ..LadderOptions::default() });
        assert_eq!(one, render(&active_close(), &LadderOptions::default()));
        let two = render(&events, &LadderOptions { conn: Some(2), ..LadderOptions::default() });
        let want = format!(
            "{:>7}  {:<67}{}\n{}\n{}\n{}\n",
            "time",
            "closelab 10.201.0.2:7000",
            "linux 10.201.0.1:41236",
            "# closelab closes first; its last ACK is lost",
            "  0.120                            <------------- [S] seq 0 ---------------",
            // closelab's side of conn 2 sent no SYN: its seq stays absolute.
            "  0.120                            ---------- [R.] seq 0 ack 1 ----------->",
        );
        assert_eq!(two, want);
        let none = render(&events, &LadderOptions { conn: Some(9), ..LadderOptions::default() });
        assert_eq!(
            none,
            "   time  closelab                                                           linux\n# closelab closes first; its last ACK is lost\n"
        );
    }

    // Tests for the other kinds of events.

    #[test]
    fn test_loose_events_notes_and_middle_lines() {
        let loose = |t: f64, kind: EventKind| Event { t, side: Side::Closelab, conn: None, kind };
        let events = vec![
            loose(
                0.0,
                EventKind::Note {
                    text: "a note\nwith a newline and \u{1b}[31m escape that is long enough to wrap at forty".into(),
                },
            ),
            loose(1.0, EventKind::Malformed { dir: Dir::In, len: 3, reason: "truncated or malformed header".into() }),
            loose(2.0, EventKind::Refused { tuple: "a -> b".into(), reason: "limit".into() }),
            loose(3.0, EventKind::Segment { dir: Dir::Out, seg: seg(SERVER, "10.201.0.1:5555", "R.", 0, 9, 0) }),
            loose(
                4.0,
                EventKind::Fault {
                    action: FaultAction::Delayed,
                    dir: Dir::In,
                    seg: None,
                    rule: 2,
                    detail: "by 200ms".into(),
                },
            ),
            c(5.0, 1, EventKind::Timer { name: "keepalive".into(), remaining: 7200.0, retrans: 0 }),
            l(6.0, 1, EventKind::App { action: AppAction::LingerClose }),
        ];
        let got = render(&events, &LadderOptions { width: 80, ..LadderOptions::default() });
        golden("ladder_loose.txt", &got);
        assert!(!got.contains('\u{1b}'));
        assert!(got.lines().all(|l| !l.starts_with('#') || l.chars().count() <= 80));
    }
}
