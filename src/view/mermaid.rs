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
