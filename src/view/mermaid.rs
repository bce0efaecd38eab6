//! The ladder as a Mermaid `sequenceDiagram`, for READMEs, issues and
//! anything that renders Markdown:
//!
//! ```text
//! sequenceDiagram
//!     participant C as closelab 10.201.0.2:7000
//!     participant L as linux 10.201.0.1:41234
//!     L->>C: [S] seq 0
//!     Note over C: SYN-RECEIVED (segment)
//!     C->>L: [S.] seq 0 ack 1
//!     C-xL: [.] ack 7 (dropped, rule 1)
//!     Note over L: timer on 0.2s
//! ```
//!
//! Same conventions as [`super::ladder`]: closelab on the left (`C`), the
//! Linux peer on the right (`L`), sequence numbers relative to each end's
//! ISN. A segment a fault rule dropped ends in a cross (`-x`); the other
//! fault actions, notes, malformed packets and refusals are notes over both
//! ends, since their segment (if any) shows up as its own arrow when it is
//! finally delivered. When several connections are drawn each gets its own
//! pair of participants (`C1`/`L1`, `C2`/`L2` …).
//!
//! Mermaid's parser ends a message at `;` and treats `#` as a comment, so
//! free text is written with its entity codes (`#59;`, `#35;`), and so are
//! `:`, `<` and `>`. Like every view, this module only formats.

use std::fmt::Write as _;

use super::ladder::{Conns, app_text, end_name, fault_text, one_line, select};
use crate::event::{Cause, ConnId, Dir, Event, EventKind, FaultAction, Side};

/// The diagram of `conn` (or of every connection), relative sequence
/// numbers; ends in `\n`.
pub fn render(events: &[Event], conn: Option<ConnId>) -> String {
    render_with(events, conn, true)
}

/// [`render`] with the choice of relative or absolute sequence numbers.
pub fn render_with(events: &[Event], conn: Option<ConnId>, relative_seq: bool) -> String {
    let shown = select(events, conn);
    let conns = Conns::learn(&shown);
    let multi = conn.is_none() && conns.count_shown(&shown) > 1;

    let mut out = String::from("sequenceDiagram\n");
    // Participants, closelab's left of its peer, connections in id order.
    let ids: Vec<Option<ConnId>> = if multi {
        let mut ids: Vec<ConnId> = shown.iter().filter_map(|e| e.conn).collect();
        ids.sort_unstable();
        ids.dedup();
        ids.into_iter().map(Some).collect()
    } else {
        vec![shown.iter().find_map(|e| e.conn)]
    };
    for id in &ids {
        let ends = id.and_then(|c| conns.ends.get(&c).copied());
        let suffix = if multi { id.map(|c| format!(" (conn {c})")).unwrap_or_default() } else { String::new() };
        for side in [Side::Closelab, Side::Linux] {
            let addr = ends.map(|(cl, peer)| if side == Side::Closelab { cl } else { peer });
            let alias = format!("{}{suffix}", end_name(side, addr));
            let _ = writeln!(out, "    participant {} as {}", actor(side, *id, multi), escape_alias(&alias));
        }
    }
    let (first, last) = match (ids.first(), ids.last()) {
        (Some(f), Some(l)) => (actor(Side::Closelab, *f, multi), actor(Side::Linux, *l, multi)),
        _ => ("C".to_string(), "L".to_string()),
    };
    let everyone = format!("{first},{last}");

    for ev in shown {
        // With several pairs, an event of no connection belongs to none of
        // them: a note over everyone.
        if multi && ev.conn.is_none() {
            let _ = writeln!(out, "    Note over {everyone}: {}", text(&loose_text(ev, &conns, relative_seq)));
            continue;
        }
        let id = ev.conn;
        let me = actor(ev.side, id, multi);
        let c = actor(Side::Closelab, id, multi);
        let l = actor(Side::Linux, id, multi);
        let pair = format!("{c},{l}");
        match &ev.kind {
            EventKind::Segment { dir, seg } if ev.conn.is_some() => {
                let label = conns.label(ev.conn, *dir, seg, relative_seq);
                let (from, to) = if *dir == Dir::Out { (&c, &l) } else { (&l, &c) };
                let _ = writeln!(out, "    {from}->>{to}: {}", text(&label));
            }
            EventKind::Fault { action: FaultAction::Dropped, dir, seg: Some(seg), rule, detail }
                if ev.conn.is_some() =>
            {
                let label = conns.label(ev.conn, *dir, seg, relative_seq);
                let (from, to) = if *dir == Dir::Out { (&c, &l) } else { (&l, &c) };
                let mut why = format!("dropped, rule {rule}");
                if !detail.is_empty() {
                    let _ = write!(why, ", {detail}");
                }
                let _ = writeln!(out, "    {from}-x{to}: {}", text(&format!("{label} ({why})")));
            }
            EventKind::State { to, cause, .. } => {
                let s = match cause {
                    Cause::Observed => to.rfc_name().to_string(),
                    other => format!("{} ({other})", to.rfc_name()),
                };
                let _ = writeln!(out, "    Note over {me}: {}", text(&s));
            }
            EventKind::App { action } => {
                let _ = writeln!(out, "    Note over {me}: {}", text(&app_text(*action)));
            }
            EventKind::Timer { name, remaining, retrans } => {
                let mut s = format!("timer {name} {remaining:.1}s");
                if *retrans > 0 {
                    let _ = write!(s, " retrans {retrans}");
                }
                let _ = writeln!(out, "    Note over {me}: {}", text(&s));
            }
            _ => {
                let over = if ev.conn.is_some() { &pair } else { &everyone };
                let _ = writeln!(out, "    Note over {over}: {}", text(&loose_text(ev, &conns, relative_seq)));
            }
        }
    }
    out
}

/// `C`/`L` for a single connection, `C3`/`L3` when several are drawn.
fn actor(side: Side, conn: Option<ConnId>, multi: bool) -> String {
    let letter = if side == Side::Closelab { "C" } else { "L" };
    match (multi, conn) {
        (true, Some(c)) => format!("{letter}{c}"),
        _ => letter.to_string(),
    }
}

/// The text of an event drawn as a note over both ends.
fn loose_text(ev: &Event, conns: &Conns, relative: bool) -> String {
    match &ev.kind {
        EventKind::Segment { dir, seg } => {
            let label = conns.label(ev.conn, *dir, seg, relative);
            format!("stray {} {label} {} > {}", dir.name(), seg.src, seg.dst)
        }
        EventKind::Fault { .. } => fault_text(ev, conns, relative),
        EventKind::Malformed { dir, len, reason } => format!("malformed {} {len} bytes: {reason}", dir.name()),
        EventKind::Refused { tuple, reason } => format!("refused {tuple}: {reason}"),
        EventKind::Note { text } => text.clone(),
        EventKind::State { to, .. } => format!("{} {}", ev.side.name(), to.rfc_name()),
        EventKind::App { action } => format!("{} {}", ev.side.name(), app_text(*action)),
        EventKind::Timer { name, remaining, .. } => format!("{} timer {name} {remaining:.1}s", ev.side.name()),
    }
}

/// Message and note text: control characters escaped to `\n` etc., and
/// the characters Mermaid's lexer would act on written as entity codes.
fn text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in one_line(s).chars() {
        match c {
            ';' | '#' | ':' | '<' | '>' => {
                let _ = write!(out, "#{};", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// A participant alias runs to the end of the line, but `;` and `#` still
/// end it; colons are fine there (`10.201.0.2:7000`).
fn escape_alias(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in one_line(s).chars() {
        match c {
            ';' | '#' => {
                let _ = write!(out, "#{};", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::ladder::tests::{C_ISN, L_ISN, active_close, golden, with_second_conn};

    #[test]
    fn test_golden_active_close() {
        golden("mermaid_active_close.mmd", &render(&active_close(), None));
    }

    #[test]
    fn test_golden_all_connections_get_their_own_pair() {
        let got = render(&with_second_conn(), None);
        golden("mermaid_all_conns.mmd", &got);
        assert!(got.contains("    participant C2 as closelab 10.201.0.2:7000 (conn 2)\n"));
        assert!(got.contains(
            "    Note over C1,L2: refused 10.201.0.1#58;41236 -#62; 10.201.0.2#58;7000#58; half-open limit 1 reached\n"
        ));
    }

    #[test]
    fn test_filter_by_conn() {
        let events = with_second_conn();
        assert_eq!(render(&events, Some(1)), render(&active_close(), None));
        let two = render(&events, Some(2));
        assert_eq!(
            two,
            "sequenceDiagram
    participant C as closelab 10.201.0.2:7000
    participant L as linux 10.201.0.1:41236
    Note over C,L: closelab closes first#59; its last ACK is lost
    L->>C: [S] seq 0
    C->>L: [R.] seq 0 ack 1
"
        );
    }

    #[test]
    fn test_relative_and_absolute_numbers() {
        let rel = render(&active_close(), Some(1));
        assert!(rel.contains("    L->>C: [S] seq 0\n"));
        assert!(rel.contains("    C->>L: [S.] seq 0 ack 1\n"));
        assert!(rel.contains("    C->>L: [F.] seq 6 ack 6\n"));
        assert!(rel.contains("    C-xL: [.] ack 7 (dropped, rule 1)\n"));
        let abs = render_with(&active_close(), Some(1), false);
        assert!(abs.contains(&format!("    C->>L: [S.] seq {C_ISN} ack {}\n", L_ISN + 1)));
        assert!(abs.contains("    C-xL: [.] ack 3127000007 (dropped, rule 1)\n"));
    }

    // Tests for escaping.

    /// Every line is one statement Mermaid's lexer reads as we mean it: no
    /// `;` or `#` outside entity codes, no `:` after the one that starts
    /// the text, no line breaks inside.
    #[track_caller]
    fn assert_mermaid_safe(diagram: &str) {
        for line in diagram.lines().skip(1) {
            let mut rest = line;
            let mut plain = String::new();
            while let Some(i) = rest.find('#') {
                plain.push_str(&rest[..i]);
                let after = &rest[i + 1..];
                let end = after.find(';').unwrap_or_else(|| panic!("bare # in {line:?}"));
                assert!(after[..end].chars().all(|c| c.is_ascii_digit()) && end > 0, "{line:?}");
                rest = &after[end + 1..];
            }
            plain.push_str(rest);
            assert!(!plain.contains(';'), "{line:?}");
            if !line.trim_start().starts_with("participant ") {
                assert_eq!(plain.matches(':').count(), 1, "{line:?}");
            }
            assert!(!line.chars().any(char::is_control), "{line:?}");
        }
    }

    #[test]
    fn test_free_text_is_escaped() {
        let ev = |conn: Option<u64>, kind: EventKind| Event { t: 0.0, side: Side::Closelab, conn, kind };
        let events = vec![
            ev(None, EventKind::Note { text: "a; b # c: <d>\nnext %% line".into() }),
            ev(Some(1), EventKind::Refused { tuple: "x".into(), reason: "wrap: no;".into() }),
            ev(None, EventKind::Malformed { dir: Dir::In, len: 3, reason: "truncated: #1".into() }),
            ev(
                Some(1),
                EventKind::Fault {
                    action: FaultAction::Dropped,
                    dir: Dir::In,
                    seg: None,
                    rule: 3,
                    detail: "a;b".into(),
                },
            ),
        ];
        // A malformed packet belongs to no connection: two "connections",
        // so C1/L1 and notes over everyone.
        let got = render(&events, None);
        assert_mermaid_safe(&got);
        assert!(got.contains("    Note over C1,L1: a#59; b #35; c#58; #60;d#62;\\nnext %% line\n"), "{got}");
        assert!(got.contains("    Note over C1,L1: refused x#58; wrap#58; no#59;\n"), "{got}");
        assert!(got.contains("    Note over C1,L1: malformed in 3 bytes#58; truncated#58; #35;1\n"), "{got}");
        assert!(got.contains("    Note over C1,L1: dropped in malformed (rule 3) a#59;b\n"), "{got}");
        let one = render(&events, Some(1));
        assert_mermaid_safe(&one);
        assert!(one.contains("    participant C as closelab\n"), "{one}");
        assert!(one.contains("    Note over C,L: a#59; b #35; c#58; #60;d#62;\\nnext %% line\n"), "{one}");
        assert_mermaid_safe(&render(&with_second_conn(), None));
        assert_mermaid_safe(&render(&active_close(), Some(1)));
    }

    #[test]
    fn test_stray_segment_and_empty_input() {
        let seg = crate::wire::Segment {
            src: "10.201.0.2:7000".parse().unwrap(),
            dst: "10.201.0.1:5555".parse().unwrap(),
            flags: crate::wire::Flags::parse("R.").unwrap(),
            seq: 0,
            ack: 9,
            win: 0,
            len: 0,
        };
        let events =
            vec![Event { t: 0.0, side: Side::Closelab, conn: None, kind: EventKind::Segment { dir: Dir::Out, seg } }];
        assert_eq!(
            render(&events, None),
            "sequenceDiagram
    participant C as closelab
    participant L as linux
    Note over C,L: stray out [R.] seq 0 ack 9 10.201.0.2#58;7000 #62; 10.201.0.1#58;5555
"
        );
        assert_eq!(render(&[], None), "sequenceDiagram\n    participant C as closelab\n    participant L as linux\n");
    }
}
