//! Watches the Linux peer's sockets through NETLINK_SOCK_DIAG (what `ss`
//! uses) and turns what changed since the last look into events on the
//! Linux side of the timeline: states (cause `observed`, never inferred from
//! packets), TIME-WAIT and orphan timers, retransmissions.
//!
//! Linux's transient states can last microseconds; the demo's slow motion
//! holds every segment on the TUN path so each one lasts longer than the
//! polling interval.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

use crate::endpoint::Endpoint;
use crate::event::{ConnId, Event, EventKind, Secs, Side, Sink, TcpState};
use crate::sys::sockdiag::{Diag, KernelSocket, TimerKind};
use crate::wire::FourTuple;

/// One look at the Linux side.
pub struct Observer {
    diag: Diag,
    ports: HashSet<u16>,
    prev: HashMap<(SocketAddr, SocketAddr), KernelSocket>,
    /// Linux 4-tuple → closelab connection number of the Linux socket that
    /// has that 4-tuple now, remembered after the connection has left
    /// closelab's table; forgotten when that socket goes (a later socket on
    /// the same 4-tuple is another connection).
    conns: HashMap<(SocketAddr, SocketAddr), ConnId>,
    /// A Linux socket first seen connecting (SYN-SENT) while closelab still
    /// had an old connection on that 4-tuple (TIME-WAIT): it is not that
    /// connection, whatever the table says until closelab replaces it.
    not_conn: HashMap<(SocketAddr, SocketAddr), ConnId>,
    /// Events of Linux sockets whose closelab connection does not exist yet
    /// (Linux's SYN-SENT is seen before closelab gets the SYN): held until it
    /// does, then emitted with their original time.
    pending: Vec<((SocketAddr, SocketAddr), Event)>,
    /// Time of the last full dump.
    last_dump: Option<Secs>,
}

/// A full sock_diag dump walks the kernel's whole TCP hash table (~1.7 ms of
/// kernel time on a large host); exact lookups of known 4-tuples cost
/// microseconds. Known sockets are looked up at every poll; a dump finds new
/// ones this often.
const DUMP_EVERY: Secs = 0.05;

/// How long an event waits for its closelab connection before it is
/// emitted without one.
const PENDING_MAX: Secs = 2.0;

/// Above this many known sockets a poll dumps instead of looking each up.
const LOOKUPS_MAX: usize = 32;

impl Observer {
    /// Opens a sock_diag socket inside network namespace `ns`; it keeps
    /// reading that namespace from any thread.
    pub fn new(ns: &str, ports: &[u16]) -> Result<Observer, String> {
        let diag = crate::sys::netns::in_netns(ns, Diag::new).map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
        Ok(Observer {
            diag,
            ports: ports.iter().copied().collect(),
            prev: HashMap::new(),
            conns: HashMap::new(),
            not_conn: HashMap::new(),
            pending: Vec::new(),
            last_dump: None,
        })
    }

    /// Looks at Linux's sockets of interest and emits what changed.
    pub fn poll(&mut self, t: Secs, ep: &Endpoint, sink: &mut dyn Sink) -> Result<(), String> {
        let ports = &self.ports;
        let wanted = |s: &KernelSocket| ports.contains(&s.local.port()) || ports.contains(&s.remote.port());
        let mut now: HashMap<(SocketAddr, SocketAddr), KernelSocket> = HashMap::new();
        if self.last_dump.is_none_or(|d| t - d >= DUMP_EVERY) {
            self.last_dump = Some(t);
            for s in self.diag.dump_tcp_family(false).map_err(|e| e.to_string())? {
                if wanted(&s) {
                    now.insert((s.local, s.remote), s);
                }
            }
        } else {
            // Known sockets: the ones seen last time and every connection
            // closelab has (Linux's end is its remote end).
            let mut known: HashSet<(SocketAddr, SocketAddr)> = self.prev.keys().copied().collect();
            // closelab as a server (its port observed) or as a client
            // (the Linux server's port observed).
            known.extend(
                ep.tuples()
                    .filter(|t| ports.contains(&t.local.port()) || ports.contains(&t.remote.port()))
                    .map(|t| (t.remote, t.local)),
            );
            if known.len() > LOOKUPS_MAX {
                // Many connections: one dump costs less than their lookups.
                self.last_dump = None;
                return self.poll(t, ep, sink);
            }
            for (local, remote) in known {
                if let Some(s) = self.diag.lookup(local, remote).map_err(|e| e.to_string())?
                    && wanted(&s)
                {
                    now.insert((s.local, s.remote), s);
                }
            }
        }
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
                    EventKind::State {
                        from: TcpState::TimeWait,
                        to: TcpState::Closed,
                        cause: crate::event::Cause::Observed,
                    },
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
                    emit(
                        sink,
                        EventKind::State {
                            from: TcpState::Closed,
                            to: new.state,
                            cause: crate::event::Cause::Observed,
                        },
                    );
                    timer_event(None, new, &mut |k| emit(&mut *sink, k));
                }
                (Some(old), Some(new)) => {
                    if old.state != new.state {
                        emit(
                            sink,
                            EventKind::State { from: old.state, to: new.state, cause: crate::event::Cause::Observed },
                        );
                    }
                    timer_event(Some(old), new, &mut |k| emit(&mut *sink, k));
                }
                (Some(old), None) => {
                    emit(
                        sink,
                        EventKind::State {
                            from: old.state,
                            to: TcpState::Closed,
                            cause: crate::event::Cause::Observed,
                        },
                    );
                    if !self.pending.iter().any(|(k, _)| *k == key) {
                        self.forget(key);
                    }
                }
                (None, None) => {}
            }
        }
        self.prev = now;
        Ok(())
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
    fn emit_for(
        &mut self,
        key: (SocketAddr, SocketAddr),
        t: Secs,
        ep: &Endpoint,
        sink: &mut dyn Sink,
        kind: EventKind,
    ) {
        let conn = self.conn_of(key, ep);
        let ev = Event { t, side: Side::Linux, conn, kind };
        if conn.is_none() || self.pending.iter().any(|(k, _)| *k == key) {
            self.pending.push((key, ev));
        } else {
            sink.event(&ev);
        }
    }

    /// The Linux socket at `key` is gone: its binding goes with it.
    fn forget(&mut self, key: (SocketAddr, SocketAddr)) {
        self.conns.remove(&key);
        self.not_conn.remove(&key);
    }

    /// The current Linux sockets of interest.
    pub fn sockets(&self) -> impl Iterator<Item = &KernelSocket> {
        self.prev.values()
    }

    fn conn_of(&mut self, key: (SocketAddr, SocketAddr), ep: &Endpoint) -> Option<ConnId> {
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
