//! Scenario expectations: what must hold in a run's event stream for a
//! close-bug scenario to pass. Pure functions of events, no I/O, so every
//! verdict is testable without root.

pub mod file;

use std::fmt;

use crate::event::{AppAction, Dir, Event, EventKind, Side, TcpState};
use crate::wire::Flags;

/// One expectation on a run.
#[derive(Clone, Debug, PartialEq)]
pub enum Expect {
    /// `side` visits these states in this order on connection 1 (other
    /// states may come between them).
    Path { side: Side, states: Vec<TcpState> },
    /// `side` never reaches `state` on any connection.
    Never { side: Side, state: TcpState },
    /// Segments in direction `dir` with exactly these flags (tcpdump
    /// letters) and, if `after_fin`, sent after a FIN of that direction,
    /// number at least `min` (and at most `max`).
    Segments { dir: Dir, flags: String, min: usize, max: Option<usize> },
    /// A fault rule acted at least once.
    FaultApplied,
    /// closelab's application received exactly this many bytes.
    Received { bytes: usize },
    /// `side` reaches `state` between `from` and `to` seconds after the start.
    Reached { side: Side, state: TcpState, from: f64, to: f64 },
    /// At least `min` segments with these flags in this direction, each gap
    /// between them at least as long as the one before and the last at least
    /// twice the first: exponential backoff.
    Backoff { dir: Dir, flags: String, min: usize },
    /// Linux's rule for a SYN that hits its TIME-WAIT (closelab's connection
    /// 2 reuses connection 1's 4-tuple): accepted with SYN-ACK when the SYN's
    /// sequence number is above Linux's rcv_nxt (after closelab's first
    /// FIN), answered with a bare ACK otherwise; either way connection 2 is
    /// established in the end.
    LinuxTimeWaitSyn,
    /// At the end, between `min` and `max` connections of `side` are in
    /// `state` (their last state change led there).
    InState { side: Side, state: TcpState, min: usize, max: Option<usize> },
    /// Between `min` and `max` notes contain `text` (the crawler's
    /// `http: GET … -> 404`, `too many open files`, …).
    Notes { text: String, min: usize, max: Option<usize> },
}

fn range_word(min: usize, max: Option<usize>) -> String {
    match max {
        Some(m) if m == min => format!("exactly {min}"),
        Some(m) => format!("{min} to {m}"),
        None => format!("at least {min}"),
    }
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Expect::Path { side, states } => write!(
                f,
                "{} passes {}",
                side.name(),
                states.iter().map(|s| s.rfc_name()).collect::<Vec<_>>().join(" -> ")
            ),
            Expect::Never { side, state } => write!(f, "{} never reaches {state}", side.name()),
            Expect::Segments { dir, flags, min, max } => match max {
                Some(max) if max == min => write!(f, "exactly {min} [{flags}] segment(s) {}", dir_word(*dir)),
                Some(max) => write!(f, "{min} to {max} [{flags}] segments {}", dir_word(*dir)),
                None => write!(f, "at least {min} [{flags}] segment(s) {}", dir_word(*dir)),
            },
            Expect::FaultApplied => write!(f, "a fault rule acted"),
            Expect::Received { bytes } => write!(f, "closelab received {bytes} bytes"),
            Expect::Reached { side, state, from, to } if to.is_finite() => {
                write!(f, "{} reaches {state} between {from}s and {to}s", side.name())
            }
            Expect::Reached { side, state, .. } => write!(f, "{} reaches {state}", side.name()),
            Expect::Backoff { dir, flags, min } => {
                write!(f, "at least {min} [{flags}] segments {} with doubling intervals", dir_word(*dir))
            }
            Expect::InState { side, state, min, max } => {
                write!(f, "{} {} connection(s) in {state} at the end", range_word(*min, *max), side.name())
            }
            Expect::Notes { text, min, max } => write!(f, "{} note(s) with `{text}`", range_word(*min, *max)),
            Expect::LinuxTimeWaitSyn => write!(
                f,
                "Linux answers a SYN for its TIME-WAIT 4-tuple with [S.] if its sequence number is above rcv_nxt, else with [.]"
            ),
        }
    }
}

fn dir_word(d: Dir) -> &'static str {
    match d {
        Dir::In => "from the peer",
        Dir::Out => "from closelab",
    }
}

/// Why an expectation failed, with the time of the events that matter.
#[derive(Clone, Debug, PartialEq)]
pub struct Failure {
    pub expect: String,
    pub reason: String,
    /// Time near which to show the events around the failure.
    pub around: Option<f64>,
}

/// Checks one expectation.
pub fn check(expect: &Expect, events: &[Event]) -> Result<(), Failure> {
    let fail = |reason: String, around: Option<f64>| Failure { expect: expect.to_string(), reason, around };
    match expect {
        Expect::Path { side, states } => {
            let seen: Vec<(TcpState, f64)> = events
                .iter()
                .filter(|e| e.side == *side && e.conn == Some(1))
                .filter_map(|e| match e.kind {
                    EventKind::State { to, .. } => Some((to, e.t)),
                    _ => None,
                })
                .collect();
            let mut i = 0;
            let mut last_t = None;
            for (s, t) in &seen {
                if i < states.len() && *s == states[i] {
                    i += 1;
                    last_t = Some(*t);
                }
            }
            if i == states.len() {
                Ok(())
            } else {
                let got = seen.iter().map(|(s, _)| s.rfc_name()).collect::<Vec<_>>().join(" -> ");
                Err(fail(
                    format!("missing {} (seen: {})", states[i], if got.is_empty() { "no state change" } else { &got }),
                    last_t,
                ))
            }
        }
        Expect::Never { side, state } => match events
            .iter()
            .find(|e| e.side == *side && matches!(e.kind, EventKind::State { to, .. } if to == *state))
        {
            None => Ok(()),
            Some(e) => Err(fail(format!("reached {state} at {:.6}", e.t), Some(e.t))),
        },
        Expect::Segments { dir, flags, min, max } => {
            let want = Flags::parse(flags);
            let matching: Vec<f64> = events
                .iter()
                .filter_map(|e| match &e.kind {
                    EventKind::Segment { dir: d, seg } if d == dir && Some(seg.flags) == want => Some(e.t),
                    _ => None,
                })
                .collect();
            let n = matching.len();
            if n < *min || max.is_some_and(|m| n > m) {
                Err(fail(format!("saw {n}"), matching.last().copied()))
            } else {
                Ok(())
            }
        }
        Expect::FaultApplied => {
            if events.iter().any(|e| matches!(e.kind, EventKind::Fault { .. })) {
                Ok(())
            } else {
                Err(fail("no fault rule acted".into(), None))
            }
        }
        Expect::Received { bytes } => {
            let got: usize = events
                .iter()
                .filter(|e| e.side == Side::Closelab)
                .filter_map(|e| match e.kind {
                    EventKind::App { action: AppAction::Recv(n) } => Some(n),
                    _ => None,
                })
                .sum();
            if got == *bytes { Ok(()) } else { Err(fail(format!("received {got}"), None)) }
        }
        Expect::Reached { side, state, from, to } => {
            let at = events.iter().find_map(|e| match e.kind {
                EventKind::State { to: s, .. } if e.side == *side && s == *state => Some(e.t),
                _ => None,
            });
            match at {
                None => Err(fail("never reached".into(), None)),
                Some(t) if t < *from || t > *to => Err(fail(format!("reached at {t:.3}s"), Some(t))),
                Some(_) => Ok(()),
            }
        }
        Expect::Backoff { dir, flags, min } => {
            let want = Flags::parse(flags);
            let times: Vec<f64> = events
                .iter()
                .filter_map(|e| match &e.kind {
                    EventKind::Segment { dir: d, seg } if d == dir && Some(seg.flags) == want => Some(e.t),
                    _ => None,
                })
                .collect();
            if times.len() < *min {
                return Err(fail(format!("saw {}", times.len()), times.last().copied()));
            }
            let gaps: Vec<f64> = times.windows(2).map(|w| w[1] - w[0]).collect();
            let shown = gaps.iter().map(|g| format!("{g:.2}s")).collect::<Vec<_>>().join(", ");
            // A few ms of scheduling jitter is allowed between equal gaps.
            let growing = gaps.windows(2).all(|w| w[1] + 0.02 >= w[0]);
            let doubled = gaps.len() >= 2 && gaps[gaps.len() - 1] >= 2.0 * gaps[0] - 0.02;
            if growing && doubled { Ok(()) } else { Err(fail(format!("intervals {shown}"), times.last().copied())) }
        }
        Expect::InState { side, state, min, max } => {
            let mut last = std::collections::HashMap::new();
            for e in events.iter().filter(|e| e.side == *side) {
                if let (Some(c), EventKind::State { to, .. }) = (e.conn, &e.kind) {
                    last.insert(c, *to);
                }
            }
            let n = last.values().filter(|s| **s == *state).count();
            if n < *min || max.is_some_and(|m| n > m) { Err(fail(format!("{n} at the end"), None)) } else { Ok(()) }
        }
        Expect::Notes { text, min, max } => {
            let n = events
                .iter()
                .filter(|e| matches!(&e.kind, EventKind::Note { text: t } if t.contains(text.as_str())))
                .count();
            if n < *min || max.is_some_and(|m| n > m) { Err(fail(format!("saw {n}"), None)) } else { Ok(()) }
        }
        Expect::LinuxTimeWaitSyn => {
            let segs = |conn: u64| {
                events.iter().filter(move |e| e.conn == Some(conn) && e.side == Side::Closelab).filter_map(|e| match &e
                    .kind
                {
                    EventKind::Segment { dir, seg } => Some((*dir, seg, e.t)),
                    _ => None,
                })
            };
            let Some((_, fin, _)) = segs(1).rfind(|(d, s, _)| *d == Dir::Out && s.flags.fin) else {
                return Err(fail("connection 1 sent no FIN".into(), None));
            };
            let rcv_nxt = fin.seq.wrapping_add(fin.len as u32).wrapping_add(1);
            let Some((_, syn, t)) = segs(2).find(|(d, s, _)| *d == Dir::Out && s.flags.syn) else {
                return Err(fail("connection 2 sent no SYN".into(), None));
            };
            let Some((_, answer, _)) = segs(2).find(|(d, _, _)| *d == Dir::In) else {
                return Err(fail("Linux never answered connection 2".into(), Some(t)));
            };
            // RFC 1982 serial arithmetic, as the kernel's after().
            let above = (syn.seq.wrapping_sub(rcv_nxt) as i32) > 0;
            let want = if above { "S." } else { "." };
            let got = answer.flags.to_string();
            let how = if above { "above" } else { "not above" };
            if got != want {
                return Err(fail(
                    format!("SYN seq {} is {how} rcv_nxt {rcv_nxt}, Linux answered [{got}]", syn.seq),
                    Some(t),
                ));
            }
            let established = events.iter().any(|e| {
                e.conn == Some(2)
                    && e.side == Side::Closelab
                    && matches!(e.kind, EventKind::State { to: TcpState::Established, .. })
            });
            if !established {
                return Err(fail("connection 2 was never established".into(), Some(t)));
            }
            Ok(())
        }
    }
}

/// Checks every expectation; returns the failures.
pub fn verdict(expects: &[Expect], events: &[Event]) -> Vec<Failure> {
    expects.iter().filter_map(|x| check(x, events).err()).collect()
}

/// The events within `window` seconds of `t`, for a failure report.
pub fn around(events: &[Event], t: f64, window: f64) -> Vec<&Event> {
    events.iter().filter(|e| (e.t - t).abs() <= window).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Cause;
    use crate::wire::Segment;

    fn st(t: f64, side: Side, from: TcpState, to: TcpState) -> Event {
        Event { t, side, conn: Some(1), kind: EventKind::State { from, to, cause: Cause::Segment } }
    }

    fn seg(t: f64, dir: Dir, flags: &str) -> Event {
        let s = Segment {
            src: "10.0.0.1:1".parse().unwrap(),
            dst: "10.0.0.2:2".parse().unwrap(),
            flags: Flags::parse(flags).unwrap(),
            seq: 1,
            ack: 1,
            win: 1,
            len: 0,
        };
        Event { t, side: Side::Closelab, conn: Some(1), kind: EventKind::Segment { dir, seg: s } }
    }

    use TcpState::*;

    fn seg_at(conn: u64, dir: Dir, flags: &str, seq: u32) -> Event {
        let mut e = seg(0.5, dir, flags);
        e.conn = Some(conn);
        if let EventKind::Segment { seg, .. } = &mut e.kind {
            seg.seq = seq;
        }
        e
    }

    #[test]
    fn test_linux_time_wait_syn_rule_both_ways() {
        let est = |c| Event {
            t: 1.0,
            side: Side::Closelab,
            conn: Some(c),
            kind: EventKind::State { from: SynSent, to: Established, cause: Cause::Segment },
        };
        // Connection 1's FIN at seq 100: Linux's rcv_nxt is 101.
        let base = vec![seg_at(1, Dir::Out, "F.", 100)];
        let with = |syn: u32, answer: &str| {
            let mut v = base.clone();
            v.extend([seg_at(2, Dir::Out, "S", syn), seg_at(2, Dir::In, answer, 7), est(2)]);
            check(&Expect::LinuxTimeWaitSyn, &v)
        };
        assert_eq!(with(500, "S."), Ok(()));
        assert_eq!(with(50, "."), Ok(()));
        // Wrapping: 0xffff_fff0 is before 101.
        assert_eq!(with(0xffff_fff0, "."), Ok(()));
        assert_eq!(with(500, ".").unwrap_err().reason, "SYN seq 500 is above rcv_nxt 101, Linux answered [.]");
        assert_eq!(with(101, "S.").unwrap_err().reason, "SYN seq 101 is not above rcv_nxt 101, Linux answered [S.]");
    }

    fn run() -> Vec<Event> {
        vec![
            st(0.1, Side::Closelab, Established, FinWait1),
            seg(0.1, Dir::Out, "F."),
            st(0.2, Side::Linux, Established, CloseWait),
            st(0.3, Side::Closelab, FinWait1, FinWait2),
            seg(0.4, Dir::In, "F."),
            st(0.4, Side::Closelab, FinWait2, TimeWait),
            seg(0.4, Dir::Out, "."),
            seg(0.9, Dir::Out, "."),
        ]
    }

    #[test]
    fn test_path_subsequence_passes_and_fails_with_reason() {
        let ev = run();
        let ok = Expect::Path { side: Side::Closelab, states: vec![FinWait1, FinWait2, TimeWait] };
        assert_eq!(check(&ok, &ev), Ok(()));
        let bad = Expect::Path { side: Side::Closelab, states: vec![FinWait1, Closing, TimeWait] };
        let f = check(&bad, &ev).unwrap_err();
        assert_eq!(f.expect, "closelab passes FIN-WAIT-1 -> CLOSING -> TIME-WAIT");
        assert_eq!(f.reason, "missing CLOSING (seen: FIN-WAIT-1 -> FIN-WAIT-2 -> TIME-WAIT)");
        assert_eq!(f.around, Some(0.1));
    }

    #[test]
    fn test_never_and_segments() {
        let ev = run();
        assert!(check(&Expect::Never { side: Side::Linux, state: TimeWait }, &ev).is_ok());
        let f = check(&Expect::Never { side: Side::Closelab, state: TimeWait }, &ev).unwrap_err();
        assert_eq!(f.reason, "reached TIME-WAIT at 0.400000");
        let two_acks = Expect::Segments { dir: Dir::Out, flags: ".".into(), min: 2, max: None };
        assert!(check(&two_acks, &ev).is_ok());
        let one = Expect::Segments { dir: Dir::Out, flags: ".".into(), min: 1, max: Some(1) };
        assert_eq!(check(&one, &ev).unwrap_err().reason, "saw 2");
        assert_eq!(one.to_string(), "exactly 1 [.] segment(s) from closelab");
        assert!(check(&Expect::FaultApplied, &ev).is_err());
        assert_eq!(verdict(&[one, two_acks], &ev).len(), 1);
    }
}
