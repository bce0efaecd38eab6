//! An in-memory wire between two endpoints with a virtual clock: the test
//! bench for everything that decides (policies, faults, expectations,
//! rendering), with no root and no sleeping. Time jumps from event to event,
//! so a 10 s TIME-WAIT or an hour of CLOSE-WAIT takes microseconds.

use std::collections::VecDeque;

use smoltcp::time::{Duration, Instant};

use super::Endpoint;

/// Which end of the link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    A,
    B,
}

/// Two endpoints joined by a wire with a fixed one-way latency.
pub struct Link {
    pub a: Endpoint,
    pub b: Endpoint,
    now: Instant,
    latency: Duration,
    /// Packets in flight: (arrival time, destination, bytes), in send order.
    flight: VecDeque<(Instant, End, Vec<u8>)>,
    /// Every packet put on the wire, with its time and sender (tests check
    /// exact bytes here).
    pub wire: Vec<(Instant, End, Vec<u8>)>,
}

impl Link {
    pub fn new(a: Endpoint, b: Endpoint, start: Instant, latency: Duration) -> Link {
        Link { a, b, now: start, latency, flight: VecDeque::new(), wire: Vec::new() }
    }

    pub fn now(&self) -> Instant {
        self.now
    }

    pub fn end(&mut self, e: End) -> &mut Endpoint {
        match e {
            End::A => &mut self.a,
            End::B => &mut self.b,
        }
    }

    /// Moves what both endpoints transmitted onto the wire.
    fn collect(&mut self) {
        while let Some(p) = self.a.transmit() {
            self.wire.push((self.now, End::A, p.clone()));
            self.flight.push_back((self.now + self.latency, End::B, p));
        }
        while let Some(p) = self.b.transmit() {
            self.wire.push((self.now, End::B, p.clone()));
            self.flight.push_back((self.now + self.latency, End::A, p));
        }
    }

    /// When something next happens on the link, if anything.
    pub fn next_event(&mut self) -> Option<Instant> {
        self.collect();
        let flight = self.flight.iter().map(|(t, _, _)| *t).min();
        [flight, self.a.poll_at(), self.b.poll_at()].into_iter().flatten().min()
    }

    /// Advances to the next event (never past `limit`) and processes it.
    /// Returns false when nothing is left to do before `limit`.
    pub fn step(&mut self, limit: Instant) -> bool {
        let Some(next) = self.next_event() else {
            self.now = self.now.max(limit);
            return false;
        };
        if next > limit {
            self.now = limit;
            return false;
        }
        if next > self.now {
            self.now = next;
        }
        let now = self.now;
        // Deliver due packets in send order.
        let mut keep = VecDeque::new();
        while let Some((t, to, p)) = self.flight.pop_front() {
            if t <= now {
                self.end(to).receive(now, p);
            } else {
                keep.push_back((t, to, p));
            }
        }
        self.flight = keep;
        self.a.poll(now);
        self.b.poll(now);
        self.collect();
        true
    }

    /// Runs until `limit` of virtual time or until nothing is left to do.
    pub fn run_until(&mut self, limit: Instant) {
        while self.step(limit) {}
    }

    /// Runs for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let limit = self.now + d;
        self.run_until(limit);
    }

    /// Runs until `cond` holds (checked after every event) or `limit`.
    pub fn run_while(&mut self, limit: Instant, mut cond: impl FnMut(&Link) -> bool) {
        while cond(self) && self.step(limit) {}
    }
}
