//! The Linux side of a lab as sock_diag reports it (what `ss` shows):
//! sockets and their timers, and [`Tracker`], which turns two looks at
//! them into events on the Linux side of the timeline: states (cause
//! `observed`, never inferred from packets), TIME-WAIT and orphan timers,
//! retransmissions. Pure: the looks come from `sys::sockdiag`, taken by
//! `sys::observe`; here they are maps, so the diff is tested without root.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

use crate::endpoint::Endpoint;
use crate::event::{Cause, ConnId, Event, EventKind, Secs, Side, Sink, TcpState};
use crate::wire::FourTuple;

/// One TCP socket as the kernel reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelSocket {
    pub state: TcpState,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub timer: Option<KernelTimer>,
    /// `idiag_rqueue`: unread bytes (+1 for an unread FIN); accept-queue
    /// length for `LISTEN`.
    pub recv_q: u32,
    /// `idiag_wqueue`: unacknowledged bytes; backlog for `LISTEN`.
    pub send_q: u32,
    /// Socket inode; 0 when no file refers to the socket (orphans, `TIME-WAIT`
    /// and `FIN-WAIT-2` mini-sockets, pending requests, connections still in
    /// a listener's accept queue).
    pub inode: u32,
    /// The application has closed the socket but the kernel still runs the
    /// connection (e.g. an orphaned `FIN-WAIT-2`, `LAST-ACK`, `FIN-WAIT-1`).
    /// Never set for `TIME-WAIT`, `SYN-RECV` requests or connections waiting
    /// in an accept queue (those have inode 0 too but nobody closed them).
    pub orphan: bool,
}

/// The one timer the kernel reports for a socket (`ss -o`'s `timer:(…)`).
#[derive(Clone, Debug, PartialEq)]
pub struct KernelTimer {
    pub kind: TimerKind,
    /// `idiag_expires`: milliseconds until the timer fires (0 if overdue).
    pub remaining_ms: u64,
    /// `idiag_retrans`: retransmissions for `on`, probes sent for `keepalive`
    /// and `persist`, 0 for `timewait`.
    pub retrans: u32,
}

/// `idiag_timer`: 1 retransmit, 2 keepalive, 3 TIME-WAIT, 4 zero-window probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerKind {
    /// Retransmission (also tail-loss probe / RACK reordering timeout).
    On,
    Keepalive,
    TimeWait,
    /// Zero-window probe.
    Persist,
    Other(u8),
}

impl TimerKind {
    pub fn from_raw(raw: u8) -> Option<TimerKind> {
        match raw {
            0 => None,
            1 => Some(TimerKind::On),
            2 => Some(TimerKind::Keepalive),
            3 => Some(TimerKind::TimeWait),
            4 => Some(TimerKind::Persist),
            other => Some(TimerKind::Other(other)),
        }
    }

    /// The name `ss` prints in `timer:(name,…)`.
    pub fn name(self) -> &'static str {
        match self {
            TimerKind::On => "on",
            TimerKind::Keepalive => "keepalive",
            TimerKind::TimeWait => "timewait",
            TimerKind::Persist => "persist",
            TimerKind::Other(_) => "unknown",
        }
    }
}

/// A Linux socket's key: (its local address, its remote address).
pub type SocketKey = (SocketAddr, SocketAddr);

/// How long an event waits for its closelab connection before it is
/// emitted without one.
pub const PENDING_MAX: Secs = 2.0;

/// What the last look saw, and which closelab connection each Linux socket
/// belongs to.
#[derive(Default)]
pub struct Tracker {
    prev: HashMap<SocketKey, KernelSocket>,
    /// Linux 4-tuple → closelab connection number of the Linux socket that
    /// has that 4-tuple now, remembered after the connection has left
    /// closelab's table; forgotten when that socket goes (a later socket on
    /// the same 4-tuple is another connection).
    conns: HashMap<SocketKey, ConnId>,
    /// A Linux socket first seen connecting (SYN-SENT) while closelab still
    /// had an old connection on that 4-tuple (TIME-WAIT): it is not that
    /// connection, whatever the table says until closelab replaces it.
    not_conn: HashMap<SocketKey, ConnId>,
    /// Events of Linux sockets whose closelab connection does not exist yet
    /// (Linux's SYN-SENT is seen before closelab gets the SYN): held until it
    /// does, then emitted with their original time.
    pending: Vec<(SocketKey, Event)>,
}

impl Tracker {
    pub fn new() -> Tracker {
        Tracker::default()
    }

    /// The sockets seen last time.
    pub fn known(&self) -> impl Iterator<Item = &SocketKey> {
        self.prev.keys()
    }

    /// The look at time `t` (`now`: every socket of interest): emits what
    /// changed since the last one into `sink`.
    pub fn update(&mut self, t: Secs, now: HashMap<SocketKey, KernelSocket>, ep: &Endpoint, sink: &mut dyn Sink) {
        let mut keys: Vec<_> =
            now.keys().chain(self.prev.keys()).copied().collect::<HashSet<_>>().into_iter().collect();
        keys.sort();
        // Held events first, in order, once their connection is known.
        let held = std::mem::take(&mut self.pending);
        for (key, mut ev) in held {
            match self.conn_of(key, ep) {
                Some(c) => {
                    ev.conn = Some(c);
                    sink.event(&ev);
                }
                None if t - ev.t > PENDING_MAX => sink.event(&ev),
                None => self.pending.push((key, ev)),
            }
        }
        for key in keys {
            // TIME-WAIT is a socket's last state: another state on its
            // 4-tuple is a new socket (Linux accepted a SYN on it). The old
            // one ends on its own connection, the new one starts on its own.
            if let (Some(old), Some(new)) = (self.prev.get(&key), now.get(&key))
                && old.state == TcpState::TimeWait
                && new.state != TcpState::TimeWait
            {
                self.emit_for(
                    key,
                    t,
                    ep,
                    sink,
                    EventKind::State { from: TcpState::TimeWait, to: TcpState::Closed, cause: Cause::Observed },
                );
                self.forget(key);
                self.prev.remove(&key);
            }
            if let (None, Some(new)) = (self.prev.get(&key), now.get(&key))
                && new.state == TcpState::SynSent
                && let Some(c) = ep.find(&FourTuple { local: key.1, remote: key.0 })
                && !matches!(ep.state(c), Some(TcpState::Listen | TcpState::SynReceived | TcpState::Established))
            {
                self.not_conn.insert(key, c);
            }
            let conn = self.conn_of(key, ep);
            let listener = now.get(&key).or(self.prev.get(&key)).is_some_and(|s| s.state == TcpState::Listen);
            let wait = conn.is_none() && !listener;
            let pending = &mut self.pending;
            let mut emit = |sink: &mut dyn Sink, kind| {
                let ev = Event { t, side: Side::Linux, conn, kind };
                if wait || pending.iter().any(|(k, _)| *k == key) {
                    pending.push((key, ev));
                } else {
                    sink.event(&ev);
                }
            };
            match (self.prev.get(&key), now.get(&key)) {
                (None, Some(new)) => {
                    emit(sink, EventKind::State { from: TcpState::Closed, to: new.state, cause: Cause::Observed });
                    timer_event(None, new, &mut |k| emit(&mut *sink, k));
                }
                (Some(old), Some(new)) => {
                    if old.state != new.state {
                        emit(sink, EventKind::State { from: old.state, to: new.state, cause: Cause::Observed });
                    }
                    timer_event(Some(old), new, &mut |k| emit(&mut *sink, k));
                }
                (Some(old), None) => {
                    emit(sink, EventKind::State { from: old.state, to: TcpState::Closed, cause: Cause::Observed });
                    if !self.pending.iter().any(|(k, _)| *k == key) {
                        self.forget(key);
                    }
                }
                (None, None) => {}
            }
        }
        self.prev = now;
    }

    /// Emits every held event (end of a story): nothing observed is lost.
    pub fn flush(&mut self, ep: &Endpoint, sink: &mut dyn Sink) {
        for (key, mut ev) in std::mem::take(&mut self.pending) {
            ev.conn = self.conn_of(key, ep);
            sink.event(&ev);
        }
    }

    /// Whether a Linux socket of interest has a retransmission running (it
    /// will send again: the run is not quiet).
    pub fn retransmitting(&self) -> bool {
        self.prev.values().any(|s| s.timer.as_ref().is_some_and(|t| t.kind == TimerKind::On))
    }

    /// One event for the socket at `key` now, held if its connection is
    /// not known yet.
    fn emit_for(&mut self, key: SocketKey, t: Secs, ep: &Endpoint, sink: &mut dyn Sink, kind: EventKind) {
        let conn = self.conn_of(key, ep);
        let ev = Event { t, side: Side::Linux, conn, kind };
        if conn.is_none() || self.pending.iter().any(|(k, _)| *k == key) {
            self.pending.push((key, ev));
        } else {
            sink.event(&ev);
        }
    }

    /// The Linux socket at `key` is gone: its binding goes with it.
    fn forget(&mut self, key: SocketKey) {
        self.conns.remove(&key);
        self.not_conn.remove(&key);
    }

    /// The current Linux sockets of interest.
    pub fn sockets(&self) -> impl Iterator<Item = &KernelSocket> {
        self.prev.values()
    }

    fn conn_of(&mut self, key: SocketKey, ep: &Endpoint) -> Option<ConnId> {
        if let Some(c) = self.conns.get(&key) {
            return Some(*c);
        }
        let tuple = FourTuple { local: key.1, remote: key.0 };
        let c = ep.find(&tuple)?;
        if self.not_conn.get(&key) == Some(&c) {
            return None;
        }
        self.not_conn.remove(&key);
        self.conns.insert(key, c);
        Some(c)
    }
}

/// A timer worth showing: entering a timewait-style timer (TIME-WAIT, orphan
/// FIN-WAIT-2), or a retransmission (its count went up).
fn timer_event(old: Option<&KernelSocket>, new: &KernelSocket, emit: &mut dyn FnMut(EventKind)) {
    let Some(timer) = &new.timer else { return };
    let old_timer = old.and_then(|o| o.timer.as_ref());
    let state_changed = old.is_none_or(|o| o.state != new.state);
    let show = match timer.kind {
        TimerKind::TimeWait => state_changed || old_timer.is_none_or(|t| t.kind != TimerKind::TimeWait),
        TimerKind::On => timer.retrans > old_timer.map_or(0, |t| t.retrans),
        TimerKind::Keepalive => old_timer.is_none_or(|t| t.kind != TimerKind::Keepalive || timer.retrans > t.retrans),
        _ => false,
    };
    if show {
        emit(EventKind::Timer {
            name: timer.kind.name().to_string(),
            remaining: timer.remaining_ms as f64 / 1000.0,
            retrans: timer.retrans,
        });
    }
}

#[cfg(test)]
mod tests;
