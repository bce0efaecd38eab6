//! Watches the Linux peer's sockets through NETLINK_SOCK_DIAG (what `ss`
//! uses): the looks are taken here, and [`crate::kernel::Tracker`] turns
//! what changed since the last one into Linux-side events.
//!
//! Linux's transient states can last microseconds; the demo's slow motion
//! holds every segment on the TUN path so each one lasts longer than the
//! polling interval.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

use crate::endpoint::Endpoint;
use crate::event::{Secs, Sink};
use crate::kernel::{KernelSocket, SocketKey, Tracker};
use crate::sys::sockdiag::Diag;

/// One look at the Linux side.
pub struct Observer {
    diag: Diag,
    ports: HashSet<u16>,
    tracker: Tracker,
    /// Time of the last full dump.
    last_dump: Option<Secs>,
}

/// A full sock_diag dump walks the kernel's whole TCP hash table (~1.7 ms of
/// kernel time on a large host); exact lookups of known 4-tuples cost
/// microseconds. Known sockets are looked up at every poll; a dump finds new
/// ones this often.
const DUMP_EVERY: Secs = 0.05;

/// Above this many known sockets a poll dumps instead of looking each up.
const LOOKUPS_MAX: usize = 32;

impl Observer {
    /// Opens a sock_diag socket inside network namespace `ns`; it keeps
    /// reading that namespace from any thread.
    pub fn new(ns: &str, ports: &[u16]) -> Result<Observer, String> {
        let diag = crate::sys::netns::in_netns(ns, Diag::new).map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
        Ok(Observer { diag, ports: ports.iter().copied().collect(), tracker: Tracker::new(), last_dump: None })
    }

    /// Looks at Linux's sockets of interest and emits what changed.
    pub fn poll(&mut self, t: Secs, ep: &Endpoint, sink: &mut dyn Sink) -> Result<(), String> {
        let ports = &self.ports;
        let wanted = |s: &KernelSocket| ports.contains(&s.local.port()) || ports.contains(&s.remote.port());
        let mut now: HashMap<SocketKey, KernelSocket> = HashMap::new();
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
            let mut known: HashSet<(SocketAddr, SocketAddr)> = self.tracker.known().copied().collect();
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
        self.tracker.update(t, now, ep, sink);
        Ok(())
    }

    /// Emits every held event (end of a story): nothing observed is lost.
    pub fn flush(&mut self, ep: &Endpoint, sink: &mut dyn Sink) {
        self.tracker.flush(ep, sink);
    }

    /// Whether a Linux socket of interest has a retransmission running (it
    /// will send again: the run is not quiet).
    pub fn retransmitting(&self) -> bool {
        self.tracker.retransmitting()
    }

    /// The current Linux sockets of interest.
    pub fn sockets(&self) -> impl Iterator<Item = &KernelSocket> {
        self.tracker.sockets()
    }
}
