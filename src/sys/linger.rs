//! The end of a run (a demo story, a scenario round, `listen`/`connect`):
//! keep recording until both sides are quiet, then write whatever is still
//! in flight as explicit `discarded` events, so no segment vanishes between
//! runs or shows up in the next one.
//!
//! "Quiet" means: closelab's fault rules and slow motion hold nothing, the
//! Linux script (if any) has finished, no Linux socket has a retransmission
//! timer running, and no segment crossed the TUN for [`QUIET`] (plus twice
//! the slow-motion hold: a reply to the last segment takes that long). A
//! peer that never stops (a FIN retransmitted forever) is given up on after
//! [`LINGER_MAX`].

use crate::endpoint::Endpoint;
use crate::event::{Dir, Event, EventKind, FaultAction, Secs, Side, Sink};
use crate::sys::tun::TunDevice;
use crate::wire;

/// No segment for this long (and nothing else pending): the run is quiet.
/// Longer than Linux's delayed ACK (40 ms) and a lab round trip; shorter than
/// Linux's minimum RTO (200 ms), whose retransmissions the timer check sees.
pub const QUIET: Secs = 0.15;

/// The longest a run lingers after its end condition held.
pub const LINGER_MAX: Secs = 1.5;

/// What a discarded event says about a segment held at the end.
pub const HELD_AT_END: &str = "discarded at end of round";

/// What a discarded event says about a segment read from the TUN after the
/// end (it reached closelab's side of the wire but no endpoint processed it).
pub const ARRIVED_AFTER_END: &str = "arrived after the end of the round; discarded";

/// Decides when a finished run may stop.
#[derive(Clone, Debug)]
pub struct Linger {
    since: Option<Secs>,
    quiet: Secs,
}

impl Linger {
    /// `slow`: the slow-motion hold of every segment, if any.
    pub fn new(slow: Option<smoltcp::time::Duration>) -> Linger {
        let slow = slow.map_or(0.0, |d| d.total_micros() as f64 / 1e6);
        Linger { since: None, quiet: QUIET + 2.0 * slow }
    }

    /// Called once the run's own end condition holds (and at every tick
    /// after): whether it may stop at `t`. `last_segment`: time of the last
    /// segment seen; `busy`: something is still pending (held packets, a
    /// running script, a Linux retransmission timer). Always lingers at
    /// least the quiet time: the last step may just have caused a segment.
    pub fn over(&mut self, t: Secs, last_segment: Option<Secs>, busy: bool) -> bool {
        let since = *self.since.get_or_insert(t);
        if t - since >= LINGER_MAX {
            return true;
        }
        let silent = last_segment.is_none_or(|l| t - l >= self.quiet);
        t - since >= self.quiet && silent && !busy
    }

    /// Whether the end condition has held (lingering has begun).
    pub fn started(&self) -> bool {
        self.since.is_some()
    }
}

/// Time of the last segment event (either direction, either side) in
/// `events`, looking back from the end.
pub fn last_segment(events: &[Event]) -> Option<Secs> {
    events.iter().rev().find(|e| matches!(e.kind, EventKind::Segment { .. })).map(|e| e.t)
}

/// Records the time of the last segment event passing through (for runs
/// that keep no event list).
#[derive(Clone, Debug, Default)]
pub struct SegmentClock(pub std::rc::Rc<std::cell::Cell<Option<Secs>>>);

impl Sink for SegmentClock {
    fn event(&mut self, ev: &Event) {
        if matches!(ev.kind, EventKind::Segment { .. }) {
            self.0.set(Some(ev.t));
        }
    }
}

/// The end of a run: every packet waiting in the TUN (sent by Linux, not
/// read yet) and every packet fault rules or slow motion hold is written as
/// a `discarded` fault event, then the endpoint's events are drained into
/// `sink`. Returns how many were discarded. TUN read errors end the drain
/// (the run is over either way).
pub fn discard_in_flight(
    tun: &TunDevice,
    ep: &mut Endpoint,
    now: smoltcp::time::Instant,
    sink: &mut dyn Sink,
) -> usize {
    let t = ep.secs(now);
    let mut buf = vec![0u8; 65536];
    let mut n = 0;
    // Bounded: a peer flooding the TUN cannot keep the run from ending.
    for _ in 0..10_000 {
        let len = match tun.recv(&mut buf) {
            Ok(Some(len)) => len,
            Ok(None) | Err(_) => break,
        };
        let raw = &buf[..len];
        let seg = wire::parse(raw).ok();
        let conn = seg.as_ref().and_then(|s| ep.find(&s.tuple_at_receiver()));
        sink.event(&Event {
            t,
            side: Side::Closelab,
            conn,
            kind: EventKind::Fault {
                action: FaultAction::Discarded,
                dir: Dir::In,
                seg,
                rule: 0,
                detail: ARRIVED_AFTER_END.to_string(),
            },
        });
        // It did cross the TUN: the pcap keeps it.
        sink.packet(t, Dir::In, raw);
        n += 1;
    }
    n += ep.discard_held(now, HELD_AT_END);
    ep.drain_events(sink);
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_linger_waits_the_quiet_time_then_stops_when_silent() {
        let mut l = Linger::new(None);
        assert!(!l.started());
        // Done at 1.0, the last segment long before: still waits QUIET.
        assert!(!l.over(1.0, Some(0.2), false));
        assert!(l.started());
        assert!(!l.over(1.1, Some(0.2), false));
        assert!(l.over(1.0 + QUIET + 1e-9, Some(0.2), false));
    }

    #[test]
    fn test_linger_waits_for_silence_and_pending_work() {
        let mut l = Linger::new(None);
        assert!(!l.over(1.0, None, false));
        // A segment at 1.1 restarts the quiet time.
        assert!(!l.over(1.2, Some(1.1), false));
        assert!(l.over(1.1 + QUIET + 1e-9, Some(1.1), false));
        let mut l = Linger::new(None);
        assert!(!l.over(1.0, None, true));
        assert!(!l.over(1.0 + QUIET + 1e-9, None, true), "busy: keeps recording");
        assert!(l.over(1.0 + LINGER_MAX + 1e-9, Some(1.0 + LINGER_MAX), true), "but not longer than LINGER_MAX");
    }

    #[test]
    fn test_linger_quiet_time_covers_slow_motion_round_trip() {
        let mut l = Linger::new(Some(smoltcp::time::Duration::from_millis(50)));
        assert!(!l.over(1.0, None, false));
        assert!(!l.over(1.0 + QUIET + 1e-9, None, false));
        assert!(l.over(1.0 + QUIET + 0.1 + 1e-9, None, false));
    }
}
