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
    /// `side` visits exactly these states one after the other on connection
    /// 1: consecutive state changes, nothing in between (a subsequence would
    /// let `ESTABLISHED CLOSED`, an RST, pass a whole graceful close).
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
            let want: Vec<TcpState> = states.clone();
            let found =
                want.is_empty() || seen.windows(want.len()).any(|w| w.iter().map(|(s, _)| *s).eq(want.iter().copied()));
            if found {
                Ok(())
            } else {
                // Report where the longest prefix of `states` ran and the
                // state that broke it.
                let mut best = (0, None);
                for start in 0..seen.len() {
                    let n = seen[start..].iter().zip(&want).take_while(|((s, _), w)| s == *w).count();
                    if n > best.0 {
                        best = (n, Some(seen[start + n - 1].1));
                    }
                }
                let got = seen.iter().map(|(s, _)| s.rfc_name()).collect::<Vec<_>>().join(" -> ");
                let got = if got.is_empty() { "no state change".to_string() } else { got };
                let reason = match best.0 {
                    0 => format!("never reached {} (seen: {got})", want[0]),
                    n => format!("no {} right after {} (seen: {got})", want[n], want[n - 1]),
                };
                Err(fail(reason, best.1))
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
    fn test_path_passes_consecutive_states_and_fails_with_reason() {
        let ev = run();
        let ok = Expect::Path { side: Side::Closelab, states: vec![FinWait1, FinWait2, TimeWait] };
        assert_eq!(check(&ok, &ev), Ok(()));
        assert_eq!(check(&Expect::Path { side: Side::Closelab, states: vec![FinWait2] }, &ev), Ok(()));
        let bad = Expect::Path { side: Side::Closelab, states: vec![FinWait1, Closing, TimeWait] };
        let f = check(&bad, &ev).unwrap_err();
        assert_eq!(f.expect, "closelab passes FIN-WAIT-1 -> CLOSING -> TIME-WAIT");
        assert_eq!(f.reason, "no CLOSING right after FIN-WAIT-1 (seen: FIN-WAIT-1 -> FIN-WAIT-2 -> TIME-WAIT)");
        assert_eq!(f.around, Some(0.1));
        let none = Expect::Path { side: Side::Linux, states: vec![TimeWait] };
        assert_eq!(check(&none, &ev).unwrap_err().reason, "never reached TIME-WAIT (seen: CLOSE-WAIT)");
    }

    #[test]
    fn test_path_is_not_a_subsequence() {
        // FIN-WAIT-1 and TIME-WAIT are both there, in order, but FIN-WAIT-2
        // came between them: a path that skips it does not match.
        let ev = run();
        let skip = Expect::Path { side: Side::Closelab, states: vec![FinWait1, TimeWait] };
        let f = check(&skip, &ev).unwrap_err();
        assert_eq!(f.reason, "no TIME-WAIT right after FIN-WAIT-1 (seen: FIN-WAIT-1 -> FIN-WAIT-2 -> TIME-WAIT)");
        // An RST expectation (ESTABLISHED then CLOSED) fails on a graceful close.
        let mut graceful = vec![st(0.0, Side::Closelab, SynReceived, Established)];
        graceful.extend(run());
        graceful.push(st(10.4, Side::Closelab, TimeWait, Closed));
        let rst = Expect::Path { side: Side::Closelab, states: vec![Established, Closed] };
        assert!(check(&rst, &graceful).unwrap_err().reason.starts_with("no CLOSED right after ESTABLISHED"));
        let abort =
            vec![st(0.0, Side::Closelab, SynReceived, Established), st(0.2, Side::Closelab, Established, Closed)];
        assert_eq!(check(&rst, &abort), Ok(()));
        // Only connection 1 counts.
        let mut other = abort.clone();
        other[1].conn = Some(2);
        assert!(check(&rst, &other).is_err());
    }

    fn recv(t: f64, side: Side, n: usize) -> Event {
        Event { t, side, conn: Some(1), kind: EventKind::App { action: AppAction::Recv(n) } }
    }

    #[test]
    fn test_received_counts_closelab_bytes_only() {
        let ev = vec![recv(0.1, Side::Closelab, 3), recv(0.2, Side::Closelab, 2), recv(0.3, Side::Linux, 100)];
        assert_eq!(check(&Expect::Received { bytes: 5 }, &ev), Ok(()));
        let f = check(&Expect::Received { bytes: 6 }, &ev).unwrap_err();
        assert_eq!((f.expect.as_str(), f.reason.as_str(), f.around), ("closelab received 6 bytes", "received 5", None));
        assert_eq!(check(&Expect::Received { bytes: 105 }, &ev).unwrap_err().reason, "received 5");
        assert_eq!(check(&Expect::Received { bytes: 1 }, &[]).unwrap_err().reason, "received 0");
    }

    #[test]
    fn test_reached_in_window_too_early_too_late_never() {
        let ev = run(); // closelab enters TIME-WAIT at 0.4
        let reached = |from, to| Expect::Reached { side: Side::Closelab, state: TimeWait, from, to };
        assert_eq!(check(&reached(0.4, 0.4), &ev), Ok(()));
        assert_eq!(check(&reached(0.0, f64::INFINITY), &ev), Ok(()));
        let early = check(&reached(0.5, 1.0), &ev).unwrap_err();
        assert_eq!((early.reason.as_str(), early.around), ("reached at 0.400s", Some(0.4)));
        assert_eq!(early.expect, "closelab reaches TIME-WAIT between 0.5s and 1s");
        let late = check(&reached(0.0, 0.39), &ev).unwrap_err();
        assert_eq!(late.reason, "reached at 0.400s");
        let never = Expect::Reached { side: Side::Linux, state: TimeWait, from: 0.0, to: f64::INFINITY };
        let f = check(&never, &ev).unwrap_err();
        assert_eq!((f.reason.as_str(), f.around), ("never reached", None));
        assert_eq!(f.expect, "linux reaches TIME-WAIT");
    }

    #[test]
    fn test_backoff_needs_count_growth_and_doubling() {
        let at = |ts: &[f64]| ts.iter().map(|t| seg(*t, Dir::In, "S")).collect::<Vec<_>>();
        let backoff = |min| Expect::Backoff { dir: Dir::In, flags: "S".into(), min };
        // 1, 2, 4 s gaps: exponential.
        assert_eq!(check(&backoff(4), &at(&[0.0, 1.0, 3.0, 7.0])), Ok(()));
        // Too few.
        let f = check(&backoff(5), &at(&[0.0, 1.0, 3.0, 7.0])).unwrap_err();
        assert_eq!((f.reason.as_str(), f.around), ("saw 4", Some(7.0)));
        // Equal gaps: growing but never doubled.
        let f = check(&backoff(4), &at(&[0.0, 1.0, 2.0, 3.0])).unwrap_err();
        assert_eq!(f.reason, "intervals 1.00s, 1.00s, 1.00s");
        // Doubled overall but shrinking in the middle.
        let f = check(&backoff(4), &at(&[0.0, 1.0, 4.0, 4.5, 7.0])).unwrap_err();
        assert_eq!(f.reason, "intervals 1.00s, 3.00s, 0.50s, 2.50s");
        // A single gap cannot show doubling.
        assert_eq!(check(&backoff(2), &at(&[0.0, 1.0])).unwrap_err().reason, "intervals 1.00s");
        // Other flags and the other direction do not count.
        let mut ev = at(&[0.0, 1.0, 3.0]);
        ev.push(seg(7.0, Dir::Out, "S"));
        ev.push(seg(7.0, Dir::In, "S."));
        assert_eq!(check(&backoff(4), &ev).unwrap_err().reason, "saw 3");
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
