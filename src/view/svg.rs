//! SVG pictures of the event stream, to open in any browser: [`ladder`]
//! draws the ladder of [`super::ladder`] (two lifelines, segments as arrows,
//! each end's state where it changes, faults in red), and [`counts`] plots
//! how many connections were in each state over time (a web server's
//! TIME-WAIT pile-up as a curve).
//!
//! ```text
//!   time       closelab 10.201.0.2:7000              linux 10.201.0.1:41234
//!  0.000             |                                  [SYN-SENT]
//!  0.000             | <-------- [S] seq 0 ------------     |
//!  0.000 (segment) [SYN-RECEIVED]                           |
//!  0.300             | - - [.] ack 7 (dropped, rule 1) -x   |
//! ```
//!
//! (whole examples: `src/view/golden/svg_*.svg`; `CLOSELAB_BLESS=1 cargo
//! test --lib view::` rewrites them after an intended change.)
//!
//! The files are self-contained: no scripts, no stylesheets, fonts or
//! images from elsewhere; text is `font-family="monospace"` and escaped with
//! [`super::xml::escape`], and the tests parse every picture with
//! `roxmltree`. The layout is computed from the text (a monospace
//! character is 0.6 em wide) with coordinates rounded to 0.1, so the same
//! events give the same bytes. Like every view this module only formats:
//! states come from `State` events, never from packets.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use super::ladder::{Conns, app_text, end_name, fault_text, one_line, select};
use super::xml::escape;
use crate::event::{Cause, ConnId, Dir, Event, EventKind, FaultAction, Side, TcpState};
use crate::wire::Segment;

/// Font size in px, and the width of one monospace character at that size.
const FONT: f64 = 12.0;
const CW: f64 = FONT * 0.6;
/// Height of one ladder row, and where the first row starts (below the
/// boxes naming both ends).
const ROW: f64 = 24.0;
const TOP: f64 = 56.0;
/// Where a dropped segment's arrow ends, as a fraction of the way across.
const DROP_AT: f64 = 0.62;

const GREY: &str = "#6b7280";
const INK: &str = "#111827";
const SOFT: &str = "#374151";
const RED: &str = "#dc2626";
const AMBER: &str = "#b45309";

/// One row of the picture, before it is placed.
enum Item {
    /// `closelab 10.201.0.2:7000, linux 10.201.0.1:41236` when several
    /// connections share the picture.
    Intro(String),
    /// One line of a note (wrapped to the picture's width).
    Note(String),
    Arrow {
        dir: Dir,
        label: String,
        color: &'static str,
    },
    /// A segment a fault rule dropped: dashed, ending in a cross.
    Dropped {
        dir: Dir,
        label: String,
    },
    /// Text between the lifelines: other faults (red cross), malformed
    /// packets and refusals.
    Middle {
        text: String,
        fault: bool,
    },
    State {
        side: Side,
        state: TcpState,
        cause: Option<String>,
    },
    /// An application call or a timer, beside its end's lifeline.
    Aside {
        side: Side,
        text: String,
    },
}

struct Row {
    time: Option<String>,
    tag: Option<String>,
    item: Item,
}

/// The ladder of `conn` (or of every connection, each line tagged `#N`
/// when there are several) as an SVG document; relative sequence numbers,
/// like the terminal ladder. Rows follow the order of `events`.
pub fn ladder(events: &[Event], conn: Option<ConnId>) -> String {
    let shown = select(events, conn);
    let conns = Conns::learn(&shown);
    let multi = conn.is_none() && conns.count_shown(&shown) > 1;
    let single = if multi { None } else { shown.iter().find_map(|e| e.conn) };
    let ends = single.and_then(|c| conns.ends.get(&c).copied());

    let mut rows = Vec::new();
    let mut introduced = BTreeSet::new();
    for ev in &shown {
        let tag = multi.then(|| tag(ev.conn));
        if multi
            && let Some(c) = ev.conn
            && introduced.insert(c)
            && let Some(&(cl, peer)) = conns.ends.get(&c)
        {
            let text = format!("{}, {}", end_name(Side::Closelab, Some(cl)), end_name(Side::Linux, Some(peer)));
            rows.push(Row { time: None, tag: tag.clone(), item: Item::Intro(text) });
        }
        let item = item(ev, &conns);
        let (time, tag) = match item {
            Item::Note(_) => (None, None),
            _ => (Some(format!("{:.3}", ev.t)), tag),
        };
        rows.push(Row { time, tag, item });
    }

    // Widths: each end's column grows to its longest text, the middle to
    // its longest label.
    let mut left = 150.0_f64;
    let mut right = 150.0_f64;
    let mut middle = 360.0_f64;
    let mut bump = |side: Side, w: f64| match side {
        Side::Closelab => left = left.max(w),
        Side::Linux => right = right.max(w),
    };
    for side in [Side::Closelab, Side::Linux] {
        let (name, addr) = head_lines(side, ends);
        bump(side, tw(&name).max(tw(&addr)) / 2.0 + 10.0);
    }
    for row in &rows {
        match &row.item {
            Item::State { side, state, cause } => {
                bump(*side, box_w(*state) / 2.0 + cause.as_ref().map_or(0.0, |c| 6.0 + tw(c)));
            }
            Item::Aside { side, text } => bump(*side, 10.0 + tw(text)),
            Item::Arrow { label, .. } => middle = middle.max(tw(label) + 48.0),
            Item::Dropped { label, .. } => middle = middle.max((tw(label) + 24.0) / DROP_AT),
            Item::Middle { text, .. } => middle = middle.max(28.0 + tw(text) + 12.0),
            Item::Intro(text) => middle = middle.max(tw(text) + 24.0),
            Item::Note(_) => {}
        }
    }
    let time_chars = rows.iter().filter_map(|r| r.time.as_ref()).map(|t| t.chars().count()).max().unwrap_or(0);
    let time_end = 8.0 + time_chars.max("time".len()) as f64 * CW;
    let tag_x = time_end + 10.0;
    let tag_chars = rows.iter().filter_map(|r| r.tag.as_ref()).map(|t| t.chars().count()).max().unwrap_or(0);
    let col_end = if multi { tag_x + tag_chars as f64 * CW } else { time_end };
    let cl_x = col_end + 10.0 + left;
    let ln_x = cl_x + middle;
    let width = (ln_x + right + 10.0).ceil();

    // Notes wrap at the width the rest of the picture needs.
    let note_chars = (((width - 16.0) / CW).floor() as usize).max(20);
    let rows: Vec<Row> = rows
        .into_iter()
        .flat_map(|r| match r.item {
            Item::Note(text) => wrap(&text, note_chars)
                .into_iter()
                .map(|l| Row { time: None, tag: None, item: Item::Note(l) })
                .collect(),
            _ => vec![r],
        })
        .collect();
    let height = (TOP + rows.len() as f64 * ROW + 12.0).ceil();

    let mut out = String::new();
    let title = match multi {
        true => {
            let ids: BTreeSet<ConnId> = shown.iter().filter_map(|e| e.conn).collect();
            format!("closelab ladder: {} connections", ids.len())
        }
        false => format!(
            "closelab ladder: {}, {}",
            end_name(Side::Closelab, ends.map(|e| e.0)),
            end_name(Side::Linux, ends.map(|e| e.1))
        ),
    };
    open_svg(&mut out, width, height, &title);
    for x in [cl_x, ln_x] {
        line(&mut out, x, 44.0, x, height - 8.0, "#9ca3af", 1.5, None);
    }
    for (side, x) in [(Side::Closelab, cl_x), (Side::Linux, ln_x)] {
        let (name, addr) = head_lines(side, ends);
        let half = tw(&name).max(tw(&addr)) / 2.0 + 8.0;
        let _ = writeln!(
            out,
            r##"<rect x="{}" y="8" width="{}" height="36" rx="4" fill="#f9fafb" stroke="{GREY}"/>"##,
            num(x - half),
            num(2.0 * half)
        );
        if addr.is_empty() {
            text(&mut out, x, 30.0, "middle", INK, r#" font-weight="bold""#, &name);
        } else {
            text(&mut out, x, 23.0, "middle", INK, r#" font-weight="bold""#, &name);
            text(&mut out, x, 38.0, "middle", SOFT, "", &addr);
        }
    }
    text(&mut out, time_end, 38.0, "end", GREY, "", "time");

    let mid = (cl_x + ln_x) / 2.0;
    for (i, row) in rows.iter().enumerate() {
        let top = TOP + i as f64 * ROW;
        let base = top + 16.0;
        if let Some(t) = &row.time {
            text(&mut out, time_end, base, "end", GREY, "", t);
        }
        if let Some(t) = &row.tag {
            text(&mut out, tag_x, base, "start", GREY, "", t);
        }
        let side_x = |s: Side| if s == Side::Closelab { cl_x } else { ln_x };
        match &row.item {
            Item::Intro(t) => text(&mut out, mid, base, "middle", SOFT, r#" font-weight="bold""#, t),
            Item::Note(t) => {
                let _ = writeln!(
                    out,
                    r##"<rect x="4" y="{}" width="{}" height="18" fill="#fefce8"/>"##,
                    num(top + 3.0),
                    num(tw(t) + 8.0)
                );
                text(&mut out, 8.0, base, "start", SOFT, r#" font-style="italic""#, t);
            }
            Item::Arrow { dir, label, color } => {
                let y = top + 17.0;
                let (from, to) = ends_of(*dir, cl_x, ln_x);
                let head = if to > from { to - 9.0 } else { to + 9.0 };
                line(&mut out, from, y, head, y, color, 1.5, None);
                let _ = writeln!(
                    out,
                    r#"<polygon points="{},{} {},{} {},{}" fill="{color}"/>"#,
                    num(to),
                    num(y),
                    num(head),
                    num(y - 4.0),
                    num(head),
                    num(y + 4.0)
                );
                text(&mut out, mid, top + 11.0, "middle", color, "", label);
            }
            Item::Dropped { dir, label } => {
                let y = top + 17.0;
                let (from, to) = ends_of(*dir, cl_x, ln_x);
                let cx = from + (to - from) * DROP_AT;
                line(&mut out, from, y, cx, y, RED, 1.5, Some("6 4"));
                cross(&mut out, cx, y, 5.0);
                // Over the dashed part, clear of the cross.
                text(&mut out, (from + cx) / 2.0, top + 11.0, "middle", RED, "", label);
            }
            Item::Middle { text: t, fault: true } => {
                cross(&mut out, cl_x + 16.0, top + 12.0, 4.0);
                text(&mut out, cl_x + 28.0, base, "start", RED, "", t);
            }
            Item::Middle { text: t, fault: false } => text(&mut out, cl_x + 12.0, base, "start", AMBER, "", t),
            Item::State { side, state, cause } => {
                let x = side_x(*side);
                let w = box_w(*state);
                let (fill, stroke) = state_colors(*state);
                let _ = writeln!(
                    out,
                    r#"<rect x="{}" y="{}" width="{}" height="17" rx="3" fill="{fill}" stroke="{stroke}"/>"#,
                    num(x - w / 2.0),
                    num(top + 4.0),
                    num(w)
                );
                text(&mut out, x, base, "middle", INK, "", state.rfc_name());
                if let Some(c) = cause {
                    match side {
                        Side::Closelab => text(&mut out, x - w / 2.0 - 6.0, base, "end", GREY, "", c),
                        Side::Linux => text(&mut out, x + w / 2.0 + 6.0, base, "start", GREY, "", c),
                    }
                }
            }
            Item::Aside { side, text: t } => {
                let x = side_x(*side);
                let _ = writeln!(out, r#"<circle cx="{}" cy="{}" r="2.5" fill="{SOFT}"/>"#, num(x), num(top + 12.0));
                match side {
                    Side::Closelab => text(&mut out, x - 10.0, base, "end", SOFT, "", t),
                    Side::Linux => text(&mut out, x + 10.0, base, "start", SOFT, "", t),
                }
            }
        }
    }
    out.push_str("</svg>\n");
    out
}

/// What one event draws.
fn item(ev: &Event, conns: &Conns) -> Item {
    match &ev.kind {
        EventKind::Segment { dir, seg } => {
            let mut label = conns.label(ev.conn, *dir, seg, true);
            if ev.conn.is_none() {
                match dir {
                    Dir::Out => {
                        let _ = write!(label, " to {}", seg.dst);
                    }
                    Dir::In => {
                        let _ = write!(label, " from {}", seg.src);
                    }
                }
            }
            Item::Arrow { dir: *dir, label, color: seg_color(seg) }
        }
        EventKind::Fault { action: FaultAction::Dropped, dir, seg: Some(seg), rule, detail } => {
            let mut why = format!("dropped, rule {rule}");
            if !detail.is_empty() {
                let _ = write!(why, ", {}", one_line(detail));
            }
            Item::Dropped { dir: *dir, label: format!("{} ({why})", conns.label(ev.conn, *dir, seg, true)) }
        }
        EventKind::Fault { .. } => Item::Middle { text: fault_text(ev, conns, true), fault: true },
        EventKind::Malformed { dir, len, reason } => {
            Item::Middle { text: format!("? malformed {} {len} bytes: {}", dir.name(), one_line(reason)), fault: false }
        }
        EventKind::Refused { tuple, reason } => {
            Item::Middle { text: format!("! refused {}: {}", one_line(tuple), one_line(reason)), fault: false }
        }
        EventKind::State { to, cause, .. } => Item::State {
            side: ev.side,
            state: *to,
            // As in the terminal ladder: every Linux state is observed.
            cause: match cause {
                Cause::Observed => None,
                other => Some(format!("({other})")),
            },
        },
        EventKind::App { action } => Item::Aside { side: ev.side, text: app_text(*action) },
        EventKind::Timer { name, remaining, retrans } => {
            let mut text = format!("timer {} {remaining:.1}s", one_line(name));
            if *retrans > 0 {
                let _ = write!(text, " retrans {retrans}");
            }
            Item::Aside { side: ev.side, text }
        }
        EventKind::Note { text } => Item::Note(one_line(text)),
    }
}

/// The two lines of an end's header box: `closelab` and its address (empty
/// when unknown).
fn head_lines(side: Side, ends: Option<(std::net::SocketAddr, std::net::SocketAddr)>) -> (String, String) {
    let addr = ends.map(|(cl, peer)| if side == Side::Closelab { cl } else { peer });
    (side.name().to_string(), addr.map(|a| a.to_string()).unwrap_or_default())
}

/// (sender x, receiver x) of a segment: `Out` goes from closelab (left) to
/// Linux (right).
fn ends_of(dir: Dir, cl_x: f64, ln_x: f64) -> (f64, f64) {
    match dir {
        Dir::Out => (cl_x, ln_x),
        Dir::In => (ln_x, cl_x),
    }
}

/// RST red, SYN blue, FIN violet, the rest ink: a close reads at a glance.
fn seg_color(seg: &Segment) -> &'static str {
    if seg.flags.rst {
        RED
    } else if seg.flags.syn {
        "#2563eb"
    } else if seg.flags.fin {
        "#7c3aed"
    } else {
        INK
    }
}

/// Box fill and border of a state: opening blue, open green, the active
/// closer's states amber, TIME-WAIT violet, the passive closer's red.
fn state_colors(s: TcpState) -> (&'static str, &'static str) {
    use TcpState::*;
    match s {
        Closed | Listen => ("#f3f4f6", "#9ca3af"),
        SynSent | SynReceived => ("#dbeafe", "#3b82f6"),
        Established => ("#dcfce7", "#16a34a"),
        FinWait1 | FinWait2 | Closing => ("#fef3c7", "#d97706"),
        TimeWait => ("#ede9fe", "#7c3aed"),
        CloseWait | LastAck => ("#fee2e2", "#dc2626"),
    }
}

fn box_w(s: TcpState) -> f64 {
    tw(s.rfc_name()) + 12.0
}

/// `#1`, or `#-` for events of no connection.
fn tag(conn: Option<ConnId>) -> String {
    match conn {
        Some(c) => format!("#{c}"),
        None => "#-".to_string(),
    }
}

/// `text` cut into lines of at most `width` characters at spaces (a word
/// longer than that gets a line of its own).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut cur = String::new();
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        if !cur.is_empty() && cur.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut cur));
        }
        if !cur.is_empty() {
            cur.push(' ');
        }
        cur.push_str(word);
    }
    lines.push(cur);
    lines
}

/// Strong colours for the count curves, one per state.
fn state_line(s: TcpState) -> &'static str {
    use TcpState::*;
    match s {
        Closed => "#9ca3af",
        Listen => "#6b7280",
        SynSent => "#0ea5e9",
        SynReceived => "#2563eb",
        Established => "#16a34a",
        FinWait1 => "#f59e0b",
        FinWait2 => "#ea580c",
        Closing => "#a16207",
        CloseWait => "#dc2626",
        LastAck => "#db2777",
        TimeWait => "#7c3aed",
    }
}

fn state_index(s: TcpState) -> usize {
    TcpState::ALL.iter().position(|x| *x == s).unwrap_or(0)
}

/// How many of `side`'s connections were in each state over time, as an
/// SVG plot: one step line per state that ever held a connection (CLOSED
/// is not drawn: it is where connections go, not a state they hold), a
/// legend with each state's peak, time in seconds across and connections
/// up. Computed from `State` events only; a connection first seen in the
/// middle of the stream counts from its first state change. Events are
/// taken in time order (stable), the time axis spans every event given.
pub fn counts(events: &[Event], side: Side) -> String {
    let mut changes: Vec<(f64, ConnId, TcpState)> = events
        .iter()
        .filter(|e| e.side == side && e.t.is_finite())
        .filter_map(|e| match (e.conn, &e.kind) {
            (Some(c), EventKind::State { to, .. }) => Some((bounded_t(e.t), c, *to)),
            _ => None,
        })
        .collect();
    changes.sort_by(|a, b| a.0.total_cmp(&b.0));

    let n = TcpState::ALL.len();
    let mut current: BTreeMap<ConnId, TcpState> = BTreeMap::new();
    let mut count = vec![0u64; n];
    // The counts after the last change at each distinct time.
    let mut steps: Vec<(f64, Vec<u64>)> = Vec::new();
    for &(t, c, to) in &changes {
        if let Some(prev) = current.insert(c, to) {
            count[state_index(prev)] -= 1;
        }
        count[state_index(to)] += 1;
        match steps.last_mut() {
            Some((lt, snap)) if *lt == t => snap.clone_from(&count),
            _ => steps.push((t, count.clone())),
        }
    }
    let mut peak = vec![0u64; n];
    for (_, snap) in &steps {
        for (p, c) in peak.iter_mut().zip(snap) {
            *p = (*p).max(*c);
        }
    }
    let drawn: Vec<TcpState> =
        TcpState::ALL.into_iter().filter(|s| *s != TcpState::Closed && peak[state_index(*s)] > 0).collect();

    // Axes.
    let times = events.iter().map(|e| e.t).filter(|t| t.is_finite()).map(bounded_t);
    let t_min = times.clone().fold(f64::INFINITY, f64::min);
    let t_max = times.fold(f64::NEG_INFINITY, f64::max);
    let (t_min, t_max) = if t_min.is_finite() { (t_min, t_max) } else { (0.0, 1.0) };
    let t_max = if t_max - t_min < 1e-6 { t_min + 1.0 } else { t_max };
    let x_step = nice((t_max - t_min) / 8.0);
    let k_lo = (t_min / x_step + 1e-9).floor() as i64;
    let k_hi = (t_max / x_step - 1e-9).ceil() as i64;
    let (x_lo, x_hi) = (k_lo as f64 * x_step, k_hi.max(k_lo + 1) as f64 * x_step);
    let decimals = (-(x_step.log10() + 1e-9).floor()).max(0.0) as usize;
    let top_count = drawn.iter().map(|s| peak[state_index(*s)]).max().unwrap_or(0).max(1);
    let y_step = if top_count <= 10 { 1 } else { nice(top_count as f64 / 8.0).round() as u64 };
    let y_hi = top_count.div_ceil(y_step) * y_step;

    let (width, height) = (800.0, 420.0);
    let (px0, px1, py0, py1) = (64.0, 600.0, 52.0, 364.0);
    let x_of = |t: f64| px0 + (t - x_lo) / (x_hi - x_lo) * (px1 - px0);
    let y_of = |c: u64| py1 - c as f64 / y_hi as f64 * (py1 - py0);

    let mut out = String::new();
    let title = format!("{}: connections in each state", side.name());
    open_svg(&mut out, width, height, &title);
    text(&mut out, px0, 22.0, "start", INK, r#" font-weight="bold""#, &title);
    let conns = current.len();
    let sub = format!(
        "{conns} connection{}, {} state change{} (from State events)",
        if conns == 1 { "" } else { "s" },
        changes.len(),
        if changes.len() == 1 { "" } else { "s" }
    );
    text(&mut out, px0, 38.0, "start", GREY, "", &sub);
    for k in k_lo..=k_hi.max(k_lo + 1) {
        let t = k as f64 * x_step;
        let x = x_of(t);
        line(&mut out, x, py0, x, py1, "#e5e7eb", 1.0, None);
        line(&mut out, x, py1, x, py1 + 5.0, SOFT, 1.0, None);
        text(&mut out, x, py1 + 18.0, "middle", SOFT, "", &format!("{t:.decimals$}"));
    }
    let mut c = 0;
    while c <= y_hi {
        let y = y_of(c);
        line(&mut out, px0, y, px1, y, "#e5e7eb", 1.0, None);
        line(&mut out, px0 - 5.0, y, px0, y, SOFT, 1.0, None);
        text(&mut out, px0 - 8.0, y + 4.0, "end", SOFT, "", &c.to_string());
        c += y_step;
    }
    text(&mut out, (px0 + px1) / 2.0, py1 + 40.0, "middle", SOFT, "", "time (s)");
    let ym = (py0 + py1) / 2.0;
    let rotate = format!(r#" transform="rotate(-90 {} {})""#, num(20.0), num(ym));
    text(&mut out, 20.0, ym, "middle", SOFT, &rotate, "connections");

    if drawn.is_empty() {
        let msg = format!("no state changes on the {} side", side.name());
        text(&mut out, (px0 + px1) / 2.0, ym, "middle", GREY, "", &msg);
    }
    for (i, s) in drawn.iter().enumerate() {
        let idx = state_index(*s);
        let mut pts = vec![(x_of(t_min), y_of(0))];
        let mut prev = 0;
        for (t, snap) in &steps {
            if snap[idx] != prev {
                pts.push((x_of(*t), y_of(prev)));
                pts.push((x_of(*t), y_of(snap[idx])));
                prev = snap[idx];
            }
        }
        pts.push((x_of(t_max), y_of(prev)));
        let points: Vec<String> = pts.iter().map(|(x, y)| format!("{},{}", num(*x), num(*y))).collect();
        let color = state_line(*s);
        let _ =
            writeln!(out, r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"/>"#, points.join(" "));
        let ly = py0 + 8.0 + i as f64 * 20.0;
        line(&mut out, px1 + 20.0, ly - 4.0, px1 + 44.0, ly - 4.0, color, 3.0, None);
        let label = format!("{} (max {})", s.rfc_name(), peak[idx]);
        text(&mut out, px1 + 52.0, ly, "start", INK, "", &label);
    }
    // The axes last: a curve resting at 0 disappears into the time axis.
    line(&mut out, px0, py1, px1, py1, SOFT, 1.0, None);
    line(&mut out, px0, py0, px0, py1, SOFT, 1.0, None);
    out.push_str("</svg>\n");
    out
}

/// 1, 2 or 5 times a power of ten, the smallest not below `raw`.
/// Largest time (either sign) the plot places: ~31,700 years. Times
/// beyond it are drawn at its edge, so the span, and with it the number of
/// ticks, stays finite whatever a hostile file says (`t: 1e308`).
const MAX_T: f64 = 1e12;

fn bounded_t(t: f64) -> f64 {
    t.clamp(-MAX_T, MAX_T)
}

fn nice(raw: f64) -> f64 {
    if !raw.is_finite() || raw <= 0.0 {
        return 1.0;
    }
    let mag = 10f64.powf(raw.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if m * mag >= raw * (1.0 - 1e-9) {
            return m * mag;
        }
    }
    10.0 * mag
}

// Drawing primitives.

fn open_svg(out: &mut String, width: f64, height: f64, title: &str) {
    let (w, h) = (num(width), num(height));
    let _ = writeln!(out, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="monospace" font-size="{FONT}">"#
    );
    let _ = writeln!(out, "<title>{}</title>", escape(title));
    let _ = writeln!(out, r##"<rect width="{w}" height="{h}" fill="#ffffff"/>"##);
}

/// `<text>`; `extra` is more attributes, written as given (callers pass
/// constants or numbers).
fn text(out: &mut String, x: f64, y: f64, anchor: &str, fill: &str, extra: &str, content: &str) {
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" text-anchor="{anchor}" fill="{fill}"{extra}>{}</text>"#,
        num(x),
        num(y),
        escape(content)
    );
}

#[allow(clippy::too_many_arguments)]
fn line(out: &mut String, x1: f64, y1: f64, x2: f64, y2: f64, stroke: &str, w: f64, dash: Option<&str>) {
    let dash = dash.map(|d| format!(r#" stroke-dasharray="{d}""#)).unwrap_or_default();
    let _ = writeln!(
        out,
        r#"<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="{stroke}" stroke-width="{}"{dash}/>"#,
        num(x1),
        num(y1),
        num(x2),
        num(y2),
        num(w)
    );
}

/// A red ✗ centred on (x, y).
fn cross(out: &mut String, x: f64, y: f64, r: f64) {
    line(out, x - r, y - r, x + r, y + r, RED, 2.0, None);
    line(out, x - r, y + r, x + r, y - r, RED, 2.0, None);
}

/// Width of `s` in px.
fn tw(s: &str) -> f64 {
    s.chars().count() as f64 * CW
}

/// A coordinate rounded to 0.1, without a trailing `.0` or a `-0`.
fn num(x: f64) -> String {
    let s = format!("{:.1}", x);
    let s = s.strip_suffix(".0").unwrap_or(&s);
    if s == "-0" { "0".to_string() } else { s.to_string() }
}

/// A `closelab load` run as a count chart: every state that held a
/// connection on either side, one line per side and state (closelab solid,
/// Linux dashed), from the per-second samples.
pub fn load_counts(report: &crate::load::Report) -> String {
    let samples = &report.samples;
    let mut series: Vec<(bool, TcpState, u64)> = Vec::new();
    for linux in [false, true] {
        for s in TcpState::ALL {
            let p = report.peak(linux, s);
            if s != TcpState::Closed && p > 0 {
                series.push((linux, s, p));
            }
        }
    }
    let t_max = samples.last().map_or(1.0, |s| s.t).max(1.0);
    let x_step = nice(t_max / 8.0);
    let k_hi = (t_max / x_step - 1e-9).ceil().max(1.0) as i64;
    let x_hi = k_hi as f64 * x_step;
    let decimals = (-(x_step.log10() + 1e-9).floor()).max(0.0) as usize;
    let top = series.iter().map(|s| s.2).max().unwrap_or(0).max(1);
    let y_step = if top <= 10 { 1 } else { nice(top as f64 / 8.0).round() as u64 };
    let y_hi = top.div_ceil(y_step) * y_step;
    let (width, height) = (860.0, 420.0);
    let (px0, px1, py0, py1) = (64.0, 600.0, 52.0, 364.0);
    let x_of = |t: f64| px0 + t / x_hi * (px1 - px0);
    let y_of = |c: u64| py1 - c as f64 / y_hi as f64 * (py1 - py0);
    let mut out = String::new();
    let title = format!("closelab load: connections in each state ({} server)", report.spec.server.name());
    open_svg(&mut out, width, height, &title);
    text(&mut out, px0, 22.0, "start", INK, r#" font-weight="bold""#, &title);
    let sub = format!(
        "{} completed in {:.1}s, one sample per second; closelab solid, linux dashed",
        report.client.completed, report.elapsed
    );
    text(&mut out, px0, 38.0, "start", GREY, "", &sub);
    for k in 0..=k_hi {
        let t = k as f64 * x_step;
        let x = x_of(t);
        line(&mut out, x, py0, x, py1, "#e5e7eb", 1.0, None);
        text(&mut out, x, py1 + 18.0, "middle", SOFT, "", &format!("{t:.decimals$}"));
    }
    let mut c = 0;
    while c <= y_hi {
        let y = y_of(c);
        line(&mut out, px0, y, px1, y, "#e5e7eb", 1.0, None);
        text(&mut out, px0 - 8.0, y + 4.0, "end", SOFT, "", &c.to_string());
        c += y_step;
    }
    text(&mut out, (px0 + px1) / 2.0, py1 + 40.0, "middle", SOFT, "", "time (s)");
    if series.is_empty() {
        text(&mut out, (px0 + px1) / 2.0, (py0 + py1) / 2.0, "middle", GREY, "", "no connections sampled");
    }
    for (i, (linux, s, peak)) in series.iter().enumerate() {
        let mut pts = vec![(x_of(0.0), y_of(0))];
        pts.extend(samples.iter().map(|x| (x_of(x.t), y_of(x.get(*linux, *s)))));
        let points: Vec<String> = pts.iter().map(|(x, y)| format!("{},{}", num(*x), num(*y))).collect();
        let color = state_line(*s);
        let dash = if *linux { r#" stroke-dasharray="6 4""# } else { "" };
        let _ = writeln!(
            out,
            r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"{dash}/>"#,
            points.join(" ")
        );
        let ly = py0 + 8.0 + i as f64 * 20.0;
        line(&mut out, px1 + 20.0, ly - 4.0, px1 + 44.0, ly - 4.0, color, 3.0, linux.then_some("6 4"));
        let label = format!("{} {} (max {peak})", if *linux { "linux" } else { "closelab" }, s.netstat_name());
        text(&mut out, px1 + 52.0, ly, "start", INK, "", &label);
    }
    line(&mut out, px0, py1, px1, py1, SOFT, 1.0, None);
    line(&mut out, px0, py0, px0, py1, SOFT, 1.0, None);
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::ladder::tests::{active_close, golden, with_second_conn};

    /// Well-formed by `roxmltree` and, when python3 is there,
    /// by Python's XML parser too (skipped visibly without it, except
    /// under CI=true).
    #[track_caller]
    pub(crate) fn assert_well_formed(name: &str, svg: &str) {
        if let Err(e) = roxmltree::Document::parse(svg) {
            panic!("{name}: not well-formed: {e}\n{svg}");
        }
        python_parses(name, svg);
    }

    #[track_caller]
    fn python_parses(name: &str, svg: &str) {
        let dir = std::env::temp_dir().join(format!("closelab-svg-{}-{name}", std::process::id()));
        std::fs::write(&dir, svg).unwrap();
        let res = std::process::Command::new("python3")
            .args(["-c", "import xml.dom.minidom,sys; xml.dom.minidom.parse(sys.argv[1])"])
            .arg(&dir)
            .output();
        let _ = std::fs::remove_file(&dir);
        match res {
            Ok(o) => assert!(o.status.success(), "{name}: python3 refuses it: {}", String::from_utf8_lossy(&o.stderr)),
            Err(e) => {
                crate::testing::skip_or_fail(&format!("python3 check of {name}"), &format!("cannot run python3: {e}"));
            }
        }
    }

    fn state(t: f64, conn: ConnId, from: TcpState, to: TcpState, cause: Cause) -> Event {
        Event { t, side: Side::Closelab, conn: Some(conn), kind: EventKind::State { from, to, cause } }
    }

    /// Five connections to a web server that closes first, one every 0.5 s:
    /// each reaches TIME-WAIT 0.2 s after it opened and stays 10 s.
    fn five_time_waits() -> Vec<Event> {
        use TcpState::*;
        let mut v = Vec::new();
        for c in 1..=5u64 {
            let t = (c - 1) as f64 * 0.5;
            v.push(state(t, c, Listen, SynReceived, Cause::Segment));
            v.push(state(t + 0.01, c, SynReceived, Established, Cause::Segment));
            v.push(state(t + 0.1, c, Established, FinWait1, Cause::App(crate::event::AppAction::Close)));
            v.push(state(t + 0.15, c, FinWait1, FinWait2, Cause::Segment));
            v.push(state(t + 0.2, c, FinWait2, TimeWait, Cause::Segment));
        }
        // Connection 1's TIME-WAIT ends, the others' are still there.
        v.push(state(10.2, 1, TimeWait, Closed, Cause::Timer));
        v.push(Event {
            t: 11.0,
            side: Side::Linux,
            conn: Some(1),
            kind: EventKind::State { from: Established, to: CloseWait, cause: Cause::Observed },
        });
        v
    }

    // Tests for the ladder picture.

    #[test]
    fn test_golden_ladder_active_close() {
        let got = ladder(&active_close(), None);
        golden("svg_ladder_active_close.svg", &got);
        assert_well_formed("active_close", &got);
        assert_eq!(got, ladder(&active_close(), Some(1)));
    }

    #[test]
    fn test_golden_ladder_all_conns() {
        let got = ladder(&with_second_conn(), None);
        golden("svg_ladder_all_conns.svg", &got);
        assert_well_formed("all_conns", &got);
        assert!(got.contains(">closelab 10.201.0.2:7000, linux 10.201.0.1:41236</text>"), "{got}");
        assert!(got.contains(">#2</text>"));
    }

    #[test]
    fn test_ladder_shows_what_the_terminal_ladder_shows() {
        let got = ladder(&active_close(), Some(1));
        // Both ends named, relative numbers, states where they change.
        assert!(got.contains(">closelab</text>") && got.contains(">10.201.0.2:7000</text>"));
        assert!(got.contains(">linux</text>") && got.contains(">10.201.0.1:41234</text>"));
        for label in ["[S] seq 0", "[S.] seq 0 ack 1", "[P.] seq 1 ack 6 len 5", "[F.] seq 6 ack 6"] {
            assert!(got.contains(&format!(">{label}</text>")), "{label}");
        }
        for state in ["SYN-RECEIVED", "FIN-WAIT-1", "FIN-WAIT-2", "TIME-WAIT", "CLOSE-WAIT", "LAST-ACK"] {
            assert!(got.contains(&format!(">{state}</text>")), "{state}");
        }
        assert!(got.contains(">(app close)</text>") && got.contains(">(timer)</text>"));
        // The dropped ACK: dashed red, a cross, labelled.
        assert!(got.contains(r##"stroke="#dc2626" stroke-width="1.5" stroke-dasharray="6 4"/>"##));
        assert!(got.contains(">[.] ack 7 (dropped, rule 1)</text>"));
        assert!(got.contains(">timer on 0.2s</text>") && got.contains(">timer on 0.4s retrans 1</text>"));
        assert!(got.contains(">10.300</text>"));
        // No scripts, nothing fetched.
        for bad in ["<script", "href", "url(", "@import", "<image", "<foreignObject"] {
            assert!(!got.contains(bad), "{bad}");
        }
        assert!(got.contains(r#"font-family="monospace""#));
    }

    #[test]
    fn test_ladder_escapes_free_text() {
        let loose = |t: f64, kind: EventKind| Event { t, side: Side::Closelab, conn: None, kind };
        let evil = "a <b> & \"c\" 'd' ]]> \u{1b}[31m\nnext \u{ffff}";
        let events = vec![
            loose(0.0, EventKind::Note { text: evil.into() }),
            loose(1.0, EventKind::Malformed { dir: Dir::In, len: 3, reason: evil.into() }),
            loose(2.0, EventKind::Refused { tuple: "<x>".into(), reason: evil.into() }),
            loose(
                3.0,
                EventKind::Fault {
                    action: FaultAction::Delayed,
                    dir: Dir::In,
                    seg: None,
                    rule: 2,
                    detail: evil.into(),
                },
            ),
            Event {
                t: 4.0,
                side: Side::Linux,
                conn: Some(1),
                kind: EventKind::Timer { name: "<on>".into(), remaining: 1.0, retrans: 0 },
            },
        ];
        let got = ladder(&events, None);
        assert_well_formed("escapes", &got);
        assert!(
            got.contains("a &lt;b&gt; &amp; &quot;c&quot; &#39;d&#39; ]]&gt; \\u{1b}[31m\\nnext \\u{ffff}"),
            "{got}"
        );
        assert!(!got.contains('\u{1b}'));
        assert!(got.contains(">timer &lt;on&gt; 1.0s</text>"));
    }

    #[test]
    fn test_ladder_long_notes_wrap_and_labels_widen() {
        let words = "word ".repeat(80);
        let events = vec![Event { t: 0.0, side: Side::Closelab, conn: None, kind: EventKind::Note { text: words } }];
        let got = ladder(&events, None);
        assert_well_formed("wrap", &got);
        assert!(got.matches(r#"font-style="italic""#).count() >= 3, "{got}");
        let one = ladder(&active_close()[..5], None);
        let wide = {
            let mut v = active_close();
            v.push(Event {
                t: 11.0,
                side: Side::Closelab,
                conn: Some(1),
                kind: EventKind::Refused { tuple: "x".repeat(120), reason: "limit".into() },
            });
            ladder(&v, Some(1))
        };
        let width =
            |s: &str| s.split("width=\"").nth(1).and_then(|w| w.split('"').next()).unwrap().parse::<f64>().unwrap();
        assert!(width(&wide) > width(&one) + 400.0, "{} {}", width(&wide), width(&one));
    }

    #[test]
    fn test_ladder_empty() {
        let got = ladder(&[], None);
        assert_well_formed("empty", &got);
        assert!(got.contains(">closelab</text>") && got.contains(">linux</text>"));
    }

    // Tests for the counts plot.

    /// The points of the step line drawn after `label` in the legend's order.
    fn polyline_of(svg: &str, color: &str) -> Vec<(f64, f64)> {
        let needle = format!(r#"fill="none" stroke="{color}""#);
        let line = svg.lines().find(|l| l.starts_with("<polyline") && l.contains(&needle)).expect(color);
        let pts = line.split("points=\"").nth(1).unwrap().split('"').next().unwrap();
        pts.split(' ')
            .map(|p| {
                let (x, y) = p.split_once(',').unwrap();
                (x.parse().unwrap(), y.parse().unwrap())
            })
            .collect()
    }

    #[test]
    fn test_golden_counts_time_wait_pile_up() {
        let got = counts(&five_time_waits(), Side::Closelab);
        golden("svg_counts_time_wait.svg", &got);
        assert_well_formed("counts", &got);
        assert!(got.contains(">TIME-WAIT (max 5)</text>"), "{got}");
        assert!(got.contains(">ESTABLISHED (max 1)</text>"));
        assert!(!got.contains(">CLOSED ("), "CLOSED is not drawn");
        assert!(got.contains(">5 connections, 26 state changes (from State events)</text>"));
        // The TIME-WAIT curve climbs one step per connection to 5, then
        // drops to 4 when the first TIME-WAIT ends.
        let tw = polyline_of(&got, state_line(TcpState::TimeWait));
        let ys: Vec<f64> = tw.iter().map(|p| p.1).collect();
        let level = |c: u64| num(364.0 - c as f64 / 5.0 * (364.0 - 52.0)).parse::<f64>().unwrap();
        let mut want = vec![level(0)];
        for c in 1..=5 {
            want.extend([level(c - 1), level(c)]);
        }
        want.extend([level(5), level(4), level(4)]);
        assert_eq!(ys, want);
        // Rising at 0.2, 0.7, 1.2, 1.7, 2.2 s: strictly later each time.
        let rises: Vec<f64> = tw.windows(2).filter(|w| w[1].1 < w[0].1).map(|w| w[0].0).collect();
        assert_eq!(rises.len(), 5);
        assert!(rises.windows(2).all(|w| w[1] > w[0]), "{rises:?}");
        // Axes: ticks in seconds up to 12, counts 0 to 5.
        assert!(got.contains(">time (s)</text>") && got.contains(">connections</text>"));
        assert!(got.contains(">0</text>") && got.contains(">12</text>") && got.contains(">5</text>"));
    }

    #[test]
    fn test_counts_only_the_side_asked_for() {
        let got = counts(&five_time_waits(), Side::Linux);
        assert_well_formed("counts_linux", &got);
        assert!(got.contains(">CLOSE-WAIT (max 1)</text>"), "{got}");
        assert!(!got.contains("TIME-WAIT"));
        let none = counts(&[], Side::Closelab);
        assert_well_formed("counts_empty", &none);
        assert!(none.contains(">no state changes on the closelab side</text>"));
    }

    /// Two state changes at t = -1e308 and 1e308 used to make ~2^64 ticks.
    #[test]
    fn test_counts_hostile_times_are_bounded() {
        use TcpState::*;
        let v = vec![
            state(-1e308, 1, Listen, SynReceived, Cause::Segment),
            state(1e308, 1, SynReceived, Established, Cause::Segment),
            state(f64::MAX, 2, Listen, SynReceived, Cause::Segment),
        ];
        let got = counts(&v, Side::Closelab);
        assert_well_formed("counts_hostile", &got);
        let ticks = got.matches("<line").count();
        assert!(ticks < 60, "{ticks} lines");
        assert!(got.len() < 20_000, "{} bytes", got.len());
    }

    #[test]
    fn test_counts_many_connections_use_coarser_ticks() {
        use TcpState::*;
        let mut v = Vec::new();
        for c in 1..=250u64 {
            let t = c as f64 * 0.01;
            v.push(state(t, c, Listen, SynReceived, Cause::Segment));
            v.push(state(t, c, SynReceived, Established, Cause::Segment));
        }
        let got = counts(&v, Side::Closelab);
        assert_well_formed("counts_many", &got);
        assert!(got.contains(">ESTABLISHED (max 250)</text>"), "{got}");
        assert!(!got.contains(">SYN-RECEIVED"), "a state held for no time at all has no curve");
        assert!(got.contains(">50</text>") && got.contains(">250</text>") && !got.contains(">25</text>"));
        assert!(got.contains(">0.5</text>") && got.contains(">2.5</text>"));
    }

    #[test]
    fn test_nice_steps() {
        assert_eq!(nice(0.12), 0.2);
        assert_eq!(nice(1.0), 1.0);
        assert_eq!(nice(1.3), 2.0);
        assert_eq!(nice(3.0), 5.0);
        assert_eq!(nice(6.0), 10.0);
        assert_eq!(nice(0.0), 1.0);
        assert_eq!(num(-0.04), "0");
        assert_eq!(num(12.25), "12.2");
        assert_eq!(num(3.0), "3");
    }
}
