//! closelab's own TIME-WAIT table: compact records that answer segments for a
//! closed 4-tuple the way Linux's `tcp_timewait_state_process`
//! (net/ipv4/tcp_minisocks.c) does, without keeping a smoltcp socket and its
//! buffers (a smoltcp TIME-WAIT connection costs ~128 KB with 64 KiB buffers;
//! Linux's TIME-WAIT mini-socket ~0.2 KB).
//!
//! Sans-IO like the rest of the endpoint: time comes in as milliseconds since
//! the endpoint's start, answers go out as [`TwAction`]s the caller turns into
//! segments and events. Lookups are one hash probe; expiry is a FIFO queue,
//! because every record shares one duration: a restarted timer pushes a new
//! queue entry and bumps the record's generation, so the stale entry is
//! skipped when it reaches the front (lazy deletion, no per-entry heap
//! allocation, no scan).
//!
//! Status: the table and its rules are complete and tested here; the
//! endpoint does not yet move connections into it (see docs/time-wait.md).

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::net::{IpAddr, SocketAddr};

use crate::event::ConnId;
use crate::wire::{FourTuple, Segment};

/// Linux's `TCP_TIMEWAIT_LEN`: 60 s, hard-coded (no sysctl changes it).
pub const LINUX_TIME_WAIT_MS: u32 = 60_000;

/// Linux's `tcp_invalid_ratelimit` default: at most one ACK per 500 ms for
/// segments that do not belong to the TIME-WAIT connection.
pub const INVALID_RATELIMIT_MS: u32 = 500;

/// An IPv4 4-tuple in 12 bytes (a `FourTuple` holds two 32-byte
/// `SocketAddr`s). IPv6 tuples go to a second map with full keys: a busy
/// IPv4 server is the case that must stay small.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(C, packed(4))]
struct V4Key {
    ips: u64,
    ports: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Key {
    V4(V4Key),
    Other(FourTuple),
}

fn key(t: &FourTuple) -> Key {
    match (t.local, t.remote) {
        (SocketAddr::V4(l), SocketAddr::V4(r)) => Key::V4(V4Key {
            ips: (u64::from(u32::from(*l.ip())) << 32) | u64::from(u32::from(*r.ip())),
            ports: (u32::from(l.port()) << 16) | u32::from(r.port()),
        }),
        _ => Key::Other(*t),
    }
}

fn tuple_of(k: &V4Key) -> FourTuple {
    let ips = k.ips;
    let ports = k.ports;
    FourTuple {
        local: SocketAddr::new(IpAddr::from(((ips >> 32) as u32).to_be_bytes()), (ports >> 16) as u16),
        remote: SocketAddr::new(IpAddr::from((ips as u32).to_be_bytes()), ports as u16),
    }
}

/// What a TIME-WAIT connection remembers (28 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TwRecord {
    /// Our next sequence number (after our FIN).
    pub snd_nxt: u32,
    /// The peer's next sequence number (after its FIN).
    pub rcv_nxt: u32,
    /// The peer's last TSval, when timestamps were negotiated.
    pub ts_recent: u32,
    /// Expiry, in ms since the endpoint's start.
    pub expires: u32,
    /// Last ACK sent for an invalid segment (rate limit), ms.
    pub last_invalid_ack: u32,
    /// The connection's number (u32 in the record: 4 billion connections
    /// per run; the caller widens it).
    pub id: u32,
    /// Bumped on every timer restart; queue entries of older generations
    /// are stale.
    generation: u16,
    has_ts: bool,
    acked_invalid: bool,
}

/// The answer to one segment, for the caller to send and show.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TwAction {
    /// A retransmitted FIN: ACK it (seq=snd_nxt, ack=rcv_nxt), timer restarted.
    AckFin { seq: u32, ack: u32 },
    /// An RST: TIME-WAIT ends (`cause: segment`), record removed.
    Killed,
    /// An RST ignored because of RFC 1337 (`tcp_rfc1337=1`).
    RstIgnored,
    /// A SYN acceptable for a new connection (seq after rcv_nxt, or a newer
    /// TSval): record removed; Linux's ISN for the new connection is
    /// `snd_nxt + 65535 + 2` (`tcp_timewait_state_process`).
    NewConnection { isn: u32 },
    /// Any other segment: ACK with the TIME-WAIT's numbers.
    Ack { seq: u32, ack: u32 },
    /// Same, but suppressed by the 500 ms rate limit (counted).
    AckLimited,
}

/// Settings of the table (`--time-wait`, `--rfc1337`, `--max-tw`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TwConfig {
    pub len_ms: u32,
    pub rfc1337: bool,
    pub max: usize,
}

impl Default for TwConfig {
    fn default() -> TwConfig {
        TwConfig { len_ms: LINUX_TIME_WAIT_MS, rfc1337: false, max: 262_144 }
    }
}

/// `a < b` in sequence space (RFC 9293 §3.4).
fn before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

/// The table. `S` is the hasher (the endpoint passes its keyed tuple hasher).
pub struct TimeWaitTable<S> {
    cfg: TwConfig,
    v4: HashMap<V4Key, TwRecord, S>,
    other: HashMap<FourTuple, TwRecord, S>,
    /// (expires, generation, key) in expiry order.
    queue: VecDeque<(u32, u16, V4Key)>,
    other_queue: VecDeque<(u32, u16, FourTuple)>,
    /// Connections that skipped TIME-WAIT because the table was full.
    pub overflows: u64,
    /// ACKs suppressed by the rate limit.
    pub limited: u64,
}

impl<S: BuildHasher + Clone> TimeWaitTable<S> {
    pub fn new(cfg: TwConfig, hasher: S) -> TimeWaitTable<S> {
        TimeWaitTable {
            cfg,
            v4: HashMap::with_hasher(hasher.clone()),
            other: HashMap::with_hasher(hasher),
            queue: VecDeque::new(),
            other_queue: VecDeque::new(),
            overflows: 0,
            limited: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.v4.len() + self.other.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Puts a connection into TIME-WAIT at `now_ms`. `false` (and an
    /// overflow counted) when the table is full, like Linux past
    /// `tcp_max_tw_buckets` ("TCP: time wait bucket table overflow").
    pub fn insert(
        &mut self,
        now_ms: u32,
        tuple: &FourTuple,
        id: ConnId,
        snd_nxt: u32,
        rcv_nxt: u32,
        ts: Option<u32>,
    ) -> bool {
        if self.len() >= self.cfg.max {
            self.overflows += 1;
            return false;
        }
        let expires = now_ms.saturating_add(self.cfg.len_ms);
        let rec = TwRecord {
            snd_nxt,
            rcv_nxt,
            ts_recent: ts.unwrap_or(0),
            expires,
            last_invalid_ack: 0,
            id: id as u32,
            generation: 0,
            has_ts: ts.is_some(),
            acked_invalid: false,
        };
        match key(tuple) {
            Key::V4(k) => {
                let generation = self.v4.get(&k).map_or(0, |r| r.generation.wrapping_add(1));
                self.v4.insert(k, TwRecord { generation, ..rec });
                self.queue.push_back((expires, generation, k));
            }
            Key::Other(t) => {
                let generation = self.other.get(&t).map_or(0, |r| r.generation.wrapping_add(1));
                self.other.insert(t, TwRecord { generation, ..rec });
                self.other_queue.push_back((expires, generation, t));
            }
        }
        true
    }

    pub fn get(&self, tuple: &FourTuple) -> Option<&TwRecord> {
        match key(tuple) {
            Key::V4(k) => self.v4.get(&k),
            Key::Other(t) => self.other.get(&t),
        }
    }

    fn get_mut(&mut self, k: &Key) -> Option<&mut TwRecord> {
        match k {
            Key::V4(k) => self.v4.get_mut(k),
            Key::Other(t) => self.other.get_mut(t),
        }
    }

    fn remove(&mut self, k: &Key) {
        match k {
            Key::V4(k) => {
                self.v4.remove(k);
            }
            Key::Other(t) => {
                self.other.remove(t);
            }
        }
    }

    /// A segment for a 4-tuple in the table; `None` when the tuple is not in
    /// TIME-WAIT. `tsval`: the segment's timestamp option, if any.
    pub fn process(&mut self, now_ms: u32, seg: &Segment, tsval: Option<u32>) -> Option<TwAction> {
        let k = key(&seg.tuple_at_receiver());
        let cfg = self.cfg;
        let rec = self.get_mut(&k)?;
        let f = seg.flags;
        // PAWS (RFC 7323 §5): with timestamps, an older TSval is an old
        // duplicate.
        let paws_reject = rec.has_ts && tsval.is_some_and(|v| before(v, rec.ts_recent));
        if f.rst {
            // RFC 1337: TIME-WAIT assassination hazard; Linux kills the
            // TIME-WAIT socket on an in-window RST unless tcp_rfc1337=1.
            if paws_reject || seg.seq != rec.rcv_nxt && !f.syn {
                // Out of window: treated like any other segment.
                return Some(self.invalid_ack(&k, now_ms));
            }
            if cfg.rfc1337 {
                return Some(TwAction::RstIgnored);
            }
            self.remove(&k);
            return Some(TwAction::Killed);
        }
        if f.syn && !f.ack && !paws_reject {
            // tcp_timewait_state_process: a SYN is acceptable when its
            // sequence is after rcv_nxt, or (with timestamps) its TSval is
            // newer than ts_recent.
            let seq_ok = before(rec.rcv_nxt, seg.seq);
            let ts_ok = rec.has_ts && tsval.is_some_and(|v| before(rec.ts_recent, v));
            if seq_ok || ts_ok {
                let isn = rec.snd_nxt.wrapping_add(65535 + 2);
                self.remove(&k);
                return Some(TwAction::NewConnection { isn });
            }
        }
        if f.fin && !paws_reject && seg.seq.wrapping_add(seg.len as u32).wrapping_add(1) == rec.rcv_nxt {
            // The peer's FIN again (our last ACK was lost): re-ACK and
            // restart the timer (RFC 9293 §3.10.7.4).
            rec.expires = now_ms.saturating_add(cfg.len_ms);
            rec.generation = rec.generation.wrapping_add(1);
            if let Some(t) = tsval {
                rec.ts_recent = t;
            }
            let (seq, ack, expires, generation) = (rec.snd_nxt, rec.rcv_nxt, rec.expires, rec.generation);
            match k {
                Key::V4(k) => self.queue.push_back((expires, generation, k)),
                Key::Other(t) => self.other_queue.push_back((expires, generation, t)),
            }
            return Some(TwAction::AckFin { seq, ack });
        }
        Some(self.invalid_ack(&k, now_ms))
    }

    fn invalid_ack(&mut self, k: &Key, now_ms: u32) -> TwAction {
        let rec = self.get_mut(k).expect("record exists");
        if rec.acked_invalid && now_ms.wrapping_sub(rec.last_invalid_ack) < INVALID_RATELIMIT_MS {
            self.limited += 1;
            return TwAction::AckLimited;
        }
        rec.acked_invalid = true;
        rec.last_invalid_ack = now_ms;
        TwAction::Ack { seq: rec.snd_nxt, ack: rec.rcv_nxt }
    }

    /// Earliest expiry still queued (may be stale: then `expire` finds
    /// nothing and the caller asks again).
    pub fn poll_at(&self) -> Option<u32> {
        [self.queue.front().map(|e| e.0), self.other_queue.front().map(|e| e.0)].into_iter().flatten().min()
    }

    /// Removes every record due at `now_ms`, calling `f(tuple, id)` for each
    /// (the caller emits `TIME-WAIT -> CLOSED (timer)`).
    pub fn expire(&mut self, now_ms: u32, mut f: impl FnMut(FourTuple, ConnId)) {
        while let Some(&(at, generation, k)) = self.queue.front() {
            if at > now_ms {
                break;
            }
            self.queue.pop_front();
            if let Some(r) = self.v4.get(&k)
                && r.generation == generation
            {
                let id = ConnId::from(r.id);
                self.v4.remove(&k);
                f(tuple_of(&k), id);
            }
        }
        while let Some(&(at, generation, t)) = self.other_queue.front() {
            if at > now_ms {
                break;
            }
            self.other_queue.pop_front();
            if let Some(r) = self.other.get(&t)
                && r.generation == generation
            {
                let id = ConnId::from(r.id);
                self.other.remove(&t);
                f(t, id);
            }
        }
    }

    /// Every entry with its remaining time (for `ss`), unordered.
    pub fn entries(&self, now_ms: u32) -> impl Iterator<Item = (FourTuple, ConnId, u32)> + '_ {
        let left = move |r: &TwRecord| r.expires.saturating_sub(now_ms);
        self.v4
            .iter()
            .map(move |(k, r)| (tuple_of(k), ConnId::from(r.id), left(r)))
            .chain(self.other.iter().map(move |(t, r)| (*t, ConnId::from(r.id), left(r))))
    }
}

#[cfg(test)]
mod tests {
    // Tests for the TIME-WAIT table.
    use std::hash::RandomState;

    use super::*;
    use crate::wire::Flags;

    fn tuple() -> FourTuple {
        FourTuple { local: "10.0.0.2:80".parse().unwrap(), remote: "10.0.0.1:40000".parse().unwrap() }
    }

    fn seg(flags: &str, seq: u32, ack: u32) -> Segment {
        let t = tuple();
        Segment { src: t.remote, dst: t.local, flags: Flags::parse(flags).unwrap(), seq, ack, win: 64240, len: 0 }
    }

    fn table(rfc1337: bool) -> TimeWaitTable<RandomState> {
        let mut t = TimeWaitTable::new(TwConfig { len_ms: 60_000, rfc1337, max: 4 }, RandomState::new());
        // Our snd_nxt 1001, the peer's rcv_nxt 5001 (after its FIN at 5000).
        assert!(t.insert(0, &tuple(), 7, 1001, 5001, None));
        t
    }

    #[test]
    fn test_time_wait_fin_reacked_and_timer_restarted() {
        let mut t = table(false);
        assert_eq!(t.process(30_000, &seg("F.", 5000, 1001), None), Some(TwAction::AckFin { seq: 1001, ack: 5001 }));
        let mut gone = Vec::new();
        t.expire(60_000, |tu, id| gone.push((tu, id)));
        assert!(gone.is_empty(), "the restart moved expiry to 90 s");
        t.expire(90_000, |tu, id| gone.push((tu, id)));
        assert_eq!(gone, vec![(tuple(), 7)]);
        assert!(t.is_empty());
    }

    #[test]
    fn test_time_wait_timeout_default_60s() {
        let mut t = TimeWaitTable::new(TwConfig::default(), RandomState::new());
        t.insert(5, &tuple(), 1, 1, 1, None);
        assert_eq!(t.poll_at(), Some(60_005));
        assert_eq!(t.entries(20_005).map(|e| e.2).collect::<Vec<_>>(), vec![40_000]);
    }

    #[test]
    fn test_time_wait_rst_kills_without_rfc1337() {
        let mut t = table(false);
        assert_eq!(t.process(1, &seg("R", 5001, 0), None), Some(TwAction::Killed));
        assert!(t.get(&tuple()).is_none());
    }

    #[test]
    fn test_time_wait_rst_ignored_with_rfc1337() {
        let mut t = table(true);
        assert_eq!(t.process(1, &seg("R", 5001, 0), None), Some(TwAction::RstIgnored));
        assert!(t.get(&tuple()).is_some());
    }

    #[test]
    fn test_time_wait_syn_above_rcv_nxt_accepted_with_linux_isn() {
        let mut t = table(false);
        assert_eq!(t.process(1, &seg("S", 9000, 0), None), Some(TwAction::NewConnection { isn: 1001 + 65537 }));
        assert!(t.is_empty());
    }

    #[test]
    fn test_time_wait_syn_below_rcv_nxt_acked_then_rate_limited() {
        let mut t = table(false);
        assert_eq!(t.process(1, &seg("S", 100, 0), None), Some(TwAction::Ack { seq: 1001, ack: 5001 }));
        assert_eq!(t.process(400, &seg("S", 100, 0), None), Some(TwAction::AckLimited));
        assert_eq!(t.limited, 1);
        assert_eq!(t.process(501, &seg("S", 100, 0), None), Some(TwAction::Ack { seq: 1001, ack: 5001 }));
    }

    #[test]
    fn test_time_wait_syn_with_newer_tsval_accepted() {
        let mut t = TimeWaitTable::new(TwConfig::default(), RandomState::new());
        t.insert(0, &tuple(), 1, 1001, 5001, Some(777));
        assert_eq!(t.process(1, &seg("S", 100, 0), Some(700)), Some(TwAction::Ack { seq: 1001, ack: 5001 }));
        assert_eq!(t.process(600, &seg("S", 100, 0), Some(778)), Some(TwAction::NewConnection { isn: 1001 + 65537 }));
    }

    #[test]
    fn test_time_wait_overflow_counted() {
        let mut t = table(false);
        for p in 1..=3u16 {
            let mut tu = tuple();
            tu.remote.set_port(p);
            assert!(t.insert(0, &tu, 1, 1, 1, None));
        }
        let mut tu = tuple();
        tu.remote.set_port(9);
        assert!(!t.insert(0, &tu, 1, 1, 1, None));
        assert_eq!(t.overflows, 1);
    }

    #[test]
    fn test_time_wait_ipv6_tuple() {
        let mut t = TimeWaitTable::new(TwConfig::default(), RandomState::new());
        let tu = FourTuple { local: "[fd00::2]:80".parse().unwrap(), remote: "[fd00::1]:4000".parse().unwrap() };
        t.insert(0, &tu, 3, 1, 1, None);
        let mut gone = Vec::new();
        t.expire(60_000, |tu, id| gone.push((tu, id)));
        assert_eq!(gone, vec![(tu, 3)]);
    }
}
