//! closelab's own TIME-WAIT table: compact records that answer segments for a
//! closed 4-tuple the way Linux's `tcp_timewait_state_process`
//! (net/ipv4/tcp_minisocks.c) does, without keeping a smoltcp socket and its
//! buffers (a smoltcp TIME-WAIT connection costs ~128 KB with 64 KiB buffers;
//! Linux's TIME-WAIT mini-socket ~0.2 KB).
//!
//! Sans-IO like the rest of the endpoint: time comes in as milliseconds since
//! the endpoint's start, answers go out as [`TwAction`]s the caller turns into
//! segments and events. Lookups are one hash probe. Expiry: every record
//! gets one entry in a FIFO queue (one for IPv4, one for IPv6) when it is inserted (all share one
//! duration, so the queue is in time order). A restart only moves the
//! record's expiry; when its queue entry comes due and the record has been
//! restarted since, the entry moves to a small heap ordered by the new
//! expiry. Each record has exactly one pending entry whatever a peer sends
//! (a flood of ACKs cannot grow the queue), no scan, no allocation per
//! entry beyond the queue slot.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(C, packed(4))]
struct V4Key {
    ips: u64,
    ports: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
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

/// What a TIME-WAIT connection remembers (32 bytes).
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
    /// Our receive window field as last sent (answers repeat it).
    pub win: u16,
    /// The connection's number (u32 in the record: 4 billion connections
    /// per run; the caller widens it).
    pub id: u32,
    /// Tells this record's queue entry from one left by an earlier record
    /// of the same 4-tuple.
    generation: u16,
    has_ts: bool,
    acked_invalid: bool,
}

impl TwRecord {
    /// The peer's most recent TSval, when timestamps were negotiated
    /// (what the record's answers echo as TSecr).
    pub fn ts_recent(&self) -> Option<u32> {
        self.has_ts.then_some(self.ts_recent)
    }
}

/// `tsval` is older than `ts_recent`: PAWS (RFC 7323 §5) rejects the
/// segment as an old duplicate.
pub fn paws_older(tsval: u32, ts_recent: u32) -> bool {
    before(tsval, ts_recent)
}

/// A connection's sequence state as it enters TIME-WAIT (what
/// [`TimeWaitTable::insert`] keeps of it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TwSeq {
    /// Our next sequence number (after our FIN).
    pub snd_nxt: u32,
    /// The peer's next sequence number (after its FIN).
    pub rcv_nxt: u32,
    /// Our receive window field as last sent.
    pub win: u16,
    /// The peer's most recent TSval, when timestamps were negotiated
    /// (`None`: they were not; PAWS and the TSval rule for SYNs are off).
    pub ts_recent: Option<u32>,
}

/// The answer to one segment, for the caller to send and show.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TwAction {
    /// A retransmitted FIN (our last ACK was lost): ACK it again
    /// (seq=snd_nxt, ack=rcv_nxt), timer restarted. Never rate-limited
    /// (it occupies sequence space). `tsecr`: with timestamps, the
    /// answer carries a timestamp option echoing ts_recent (Linux's
    /// `tcp_v4_timewait_ack`).
    AckFin { seq: u32, ack: u32, win: u16, tsecr: Option<u32> },
    /// A bare ACK exactly at rcv_nxt: no answer, timer restarted (Linux's
    /// `inet_twsk_reschedule`).
    Absorbed,
    /// An RST at rcv_nxt: TIME-WAIT ends (`cause: segment`), record removed.
    Killed,
    /// The same RST ignored because of RFC 1337 (`tcp_rfc1337=1`).
    RstIgnored,
    /// An RST not at rcv_nxt (or failing PAWS): ignored, no answer.
    RstOutOfWindow,
    /// A SYN acceptable for a new connection (seq after rcv_nxt, or a newer
    /// TSval): record removed; Linux's ISN for the new connection is
    /// `snd_nxt + 65535 + 2` (`tcp_timewait_state_process`).
    NewConnection { isn: u32, rcv_nxt: u32 },
    /// Any other segment: ACK with the TIME-WAIT's numbers; `restarted`
    /// when it carried ACK (or failed PAWS), which restarts the timer;
    /// `tsecr` as for `AckFin`.
    Ack { seq: u32, ack: u32, win: u16, tsecr: Option<u32>, restarted: bool },
    /// Same, but suppressed by the 500 ms rate limit (counted).
    AckLimited { restarted: bool },
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
    /// (expires, generation, key) of IPv4 records in insertion order =
    /// expiry order (kept apart from the others so an entry is 20 bytes,
    /// not the size of a pair of IPv6 socket addresses).
    queue: VecDeque<(u32, u16, V4Key)>,
    /// The same for the other records (IPv6).
    queue_other: VecDeque<(u32, u16, FourTuple)>,
    /// Entries of records restarted after insertion, by their new expiry.
    requeued: BinaryHeap<Reverse<(u32, u16, Key)>>,
    /// Generation for the next record.
    next_generation: u16,
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
            queue_other: VecDeque::new(),
            requeued: BinaryHeap::new(),
            next_generation: 0,
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

    /// Puts a connection into TIME-WAIT at `now_ms` with its sequence state.
    /// `false` (and an overflow counted) when the table is full, like Linux
    /// past `tcp_max_tw_buckets` ("TCP: time wait bucket table overflow").
    pub fn insert(&mut self, now_ms: u32, tuple: &FourTuple, id: ConnId, seq: TwSeq) -> bool {
        if self.len() >= self.cfg.max {
            self.overflows += 1;
            return false;
        }
        let expires = now_ms.saturating_add(self.cfg.len_ms);
        let rec = TwRecord {
            snd_nxt: seq.snd_nxt,
            rcv_nxt: seq.rcv_nxt,
            ts_recent: seq.ts_recent.unwrap_or(0),
            expires,
            last_invalid_ack: 0,
            win: seq.win,
            id: id as u32,
            generation: self.next_generation,
            has_ts: seq.ts_recent.is_some(),
            acked_invalid: false,
        };
        self.next_generation = self.next_generation.wrapping_add(1);
        match key(tuple) {
            Key::V4(k) => {
                self.v4.insert(k, rec);
                self.queue.push_back((expires, rec.generation, k));
            }
            Key::Other(t) => {
                self.other.insert(t, rec);
                self.queue_other.push_back((expires, rec.generation, t));
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

    /// A segment for a 4-tuple in the table: the connection's number and
    /// the answer, or `None` when the tuple is not in TIME-WAIT. `tsval`: the
    /// segment's timestamp option, if any; `listener`: a listening socket
    /// would take a new connection on this port. The order of the checks
    /// is `tcp_timewait_state_process`'s for the TIME-WAIT substate.
    pub fn process(
        &mut self,
        now_ms: u32,
        seg: &Segment,
        tsval: Option<u32>,
        listener: bool,
    ) -> Option<(ConnId, TwAction)> {
        let k = key(&seg.tuple_at_receiver());
        let cfg = self.cfg;
        let rec = self.get_mut(&k)?;
        let id = ConnId::from(rec.id);
        let f = seg.flags;
        // PAWS (RFC 7323 §5): with timestamps, an older TSval is an old
        // duplicate.
        let paws_reject = rec.has_ts && tsval.is_some_and(|v| paws_older(v, rec.ts_recent));
        if !paws_reject && seg.seq == rec.rcv_nxt && (seg.seq_len() == 0 || f.rst) {
            // In window: only a reset or a bare ACK can be here.
            if rec.has_ts
                && let Some(t) = tsval
            {
                rec.ts_recent = t;
            }
            if f.rst {
                // TIME-WAIT assassination (RFC 1337): Linux kills the
                // TIME-WAIT socket unless tcp_rfc1337=1.
                if cfg.rfc1337 {
                    return Some((id, TwAction::RstIgnored));
                }
                self.remove(&k);
                return Some((id, TwAction::Killed));
            }
            self.restart(&k, now_ms);
            return Some((id, TwAction::Absorbed));
        }
        if f.syn && !f.rst && !f.ack && !paws_reject {
            // A SYN is acceptable when its sequence is after rcv_nxt, or
            // (with timestamps) its TSval is newer than ts_recent.
            let seq_ok = before(rec.rcv_nxt, seg.seq);
            let ts_ok = rec.has_ts && tsval.is_some_and(|v| before(rec.ts_recent, v));
            if (seq_ok || ts_ok) && !listener {
                // tcp_v4_rcv: TCP_TW_SYN without a listener falls through
                // to the TIME-WAIT's ACK (no rate limit, no restart).
                let (seq, ack, win, tsecr) = (rec.snd_nxt, rec.rcv_nxt, rec.win, rec.ts_recent());
                return Some((id, TwAction::Ack { seq, ack, win, tsecr, restarted: false }));
            }
            if seq_ok || ts_ok {
                let rcv_nxt = rec.rcv_nxt;
                let isn = match rec.snd_nxt.wrapping_add(65535 + 2) {
                    0 => 1,
                    n => n,
                };
                self.remove(&k);
                return Some((id, TwAction::NewConnection { isn, rcv_nxt }));
            }
        }
        if f.rst {
            return Some((id, TwAction::RstOutOfWindow));
        }
        // Out of window: answered with an ACK. A segment with ACK (or an
        // old duplicate by PAWS) restarts the timer; an ACK-less SYN does
        // not (it may be a new SYN with a random sequence below rcv_nxt).
        let restarted = paws_reject || f.ack;
        if restarted {
            self.restart(&k, now_ms);
        }
        let rec = self.get_mut(&k).expect("record exists");
        let (seq, ack, win, tsecr) = (rec.snd_nxt, rec.rcv_nxt, rec.win, rec.ts_recent());
        if f.fin && seg.seq.wrapping_add(seg.seq_len()) == ack {
            return Some((id, TwAction::AckFin { seq, ack, win, tsecr }));
        }
        // tcp_oow_rate_limited: data without SYN is not part of an ACK
        // loop and is always answered; bare ACKs and SYNs at most once per
        // 500 ms (tcp_invalid_ratelimit).
        if seg.seq_len() != 0 && !f.syn {
            return Some((id, TwAction::Ack { seq, ack, win, tsecr, restarted }));
        }
        if rec.acked_invalid && now_ms.wrapping_sub(rec.last_invalid_ack) < INVALID_RATELIMIT_MS {
            self.limited += 1;
            return Some((id, TwAction::AckLimited { restarted }));
        }
        rec.acked_invalid = true;
        rec.last_invalid_ack = now_ms;
        Some((id, TwAction::Ack { seq, ack, win, tsecr, restarted }))
    }

    /// Restarts a record's timer (its queue entry notices when it comes due).
    fn restart(&mut self, k: &Key, now_ms: u32) {
        let len = self.cfg.len_ms;
        if let Some(rec) = self.get_mut(k) {
            rec.expires = now_ms.saturating_add(len);
        }
    }

    /// Earliest expiry pending (may belong to a restarted record: then
    /// `expire` moves it and the caller asks again).
    pub fn poll_at(&self) -> Option<u32> {
        self.fronts().into_iter().flatten().min()
    }

    /// The expiry at the head of each pending list: IPv4 queue, other
    /// queue, restarted heap.
    fn fronts(&self) -> [Option<u32>; 3] {
        [self.queue.front().map(|e| e.0), self.queue_other.front().map(|e| e.0), self.requeued.peek().map(|e| e.0.0)]
    }

    /// Pending expiry entries (one per record at most, plus stale ones of
    /// removed records).
    #[cfg(test)]
    fn pending(&self) -> usize {
        self.queue.len() + self.queue_other.len() + self.requeued.len()
    }

    /// Removes every record due at `now_ms`, calling `f(tuple, id)` for each
    /// (the caller emits `TIME-WAIT -> CLOSED (timer)`).
    pub fn expire(&mut self, now_ms: u32, mut f: impl FnMut(FourTuple, ConnId)) {
        loop {
            let fronts = self.fronts();
            let Some(due) = fronts.into_iter().flatten().min().filter(|d| *d <= now_ms) else { return };
            let (at, generation, k) = if fronts[0] == Some(due) {
                let (at, g, k) = self.queue.pop_front().expect("front");
                (at, g, Key::V4(k))
            } else if fronts[1] == Some(due) {
                let (at, g, t) = self.queue_other.pop_front().expect("front");
                (at, g, Key::Other(t))
            } else {
                self.requeued.pop().expect("peeked").0
            };
            let Some(rec) = self.get_mut(&k) else { continue };
            if rec.generation != generation {
                continue;
            }
            if rec.expires > at {
                let entry = (rec.expires, generation, k);
                self.requeued.push(Reverse(entry));
                continue;
            }
            let id = ConnId::from(rec.id);
            self.remove(&k);
            let tuple = match k {
                Key::V4(v) => tuple_of(&v),
                Key::Other(t) => t,
            };
            f(tuple, id);
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
        assert!(t.insert(0, &tuple(), 7, TwSeq { snd_nxt: 1001, rcv_nxt: 5001, win: 502, ts_recent: None }));
        t
    }

    fn answer(t: &mut TimeWaitTable<RandomState>, now: u32, flags: &str, seq: u32, ack: u32) -> Option<TwAction> {
        t.process(now, &seg(flags, seq, ack), None, true).map(|(id, a)| {
            assert_eq!(id, 7);
            a
        })
    }

    fn expired(t: &mut TimeWaitTable<RandomState>, now: u32) -> Vec<(FourTuple, ConnId)> {
        let mut gone = Vec::new();
        t.expire(now, |tu, id| gone.push((tu, id)));
        gone
    }

    #[test]
    fn test_time_wait_fin_reacked_every_time_and_timer_restarted() {
        let mut t = table(false);
        let re_ack = Some(TwAction::AckFin { seq: 1001, ack: 5001, win: 502, tsecr: None });
        assert_eq!(answer(&mut t, 30_000, "F.", 5000, 1001), re_ack);
        // A FIN occupies sequence space: never rate-limited.
        assert_eq!(answer(&mut t, 30_001, "F.", 5000, 1001), re_ack);
        assert_eq!(t.poll_at(), Some(60_000));
        assert!(expired(&mut t, 60_000).is_empty(), "the restart moved expiry to 90 s");
        assert_eq!(t.poll_at(), Some(90_001));
        assert!(expired(&mut t, 90_000).is_empty());
        assert_eq!(expired(&mut t, 90_001), vec![(tuple(), 7)]);
        assert!(t.is_empty());
        assert_eq!(t.poll_at(), None);
    }

    #[test]
    fn test_time_wait_bare_ack_at_rcv_nxt_absorbed_and_restarts() {
        let mut t = table(false);
        assert_eq!(answer(&mut t, 10_000, ".", 5001, 1001), Some(TwAction::Absorbed));
        assert!(expired(&mut t, 60_000).is_empty());
        assert_eq!(expired(&mut t, 70_000), vec![(tuple(), 7)]);
    }

    #[test]
    fn test_time_wait_ack_flood_keeps_one_pending_entry() {
        let mut t = table(false);
        for now in 1..=10_000 {
            answer(&mut t, now, ".", 5001, 1001);
        }
        assert_eq!(t.pending(), 1);
        assert!(expired(&mut t, 60_000).is_empty());
        assert_eq!(t.pending(), 1);
        assert_eq!(expired(&mut t, 70_000), vec![(tuple(), 7)]);
    }

    #[test]
    fn test_time_wait_restarted_entries_expire_in_time_order() {
        // A (t=0) restarted at 50 s, B (t=10 s) restarted at 20 s: B must
        // expire at 80 s, before A at 110 s.
        let mut t = TimeWaitTable::new(TwConfig::default(), RandomState::new());
        let (a, mut b) = (tuple(), tuple());
        b.remote.set_port(40001);
        t.insert(0, &a, 1, TwSeq { snd_nxt: 1, rcv_nxt: 100, win: 0, ts_recent: None });
        t.insert(10_000, &b, 2, TwSeq { snd_nxt: 1, rcv_nxt: 100, win: 0, ts_recent: None });
        let ack = |tu: &FourTuple| Segment {
            src: tu.remote,
            dst: tu.local,
            flags: Flags::parse(".").unwrap(),
            seq: 100,
            ack: 1,
            win: 1,
            len: 0,
        };
        t.process(20_000, &ack(&b), None, true);
        t.process(50_000, &ack(&a), None, true);
        let mut gone = Vec::new();
        for now in (0..=120_000).step_by(1_000) {
            t.expire(now, |_, id| gone.push((now, id)));
        }
        assert_eq!(gone, vec![(80_000, 2), (110_000, 1)]);
    }

    #[test]
    fn test_time_wait_timeout_default_60s() {
        let mut t = TimeWaitTable::new(TwConfig::default(), RandomState::new());
        t.insert(5, &tuple(), 1, TwSeq { snd_nxt: 1, rcv_nxt: 1, win: 0, ts_recent: None });
        assert_eq!(t.poll_at(), Some(60_005));
        assert_eq!(t.entries(20_005).map(|e| e.2).collect::<Vec<_>>(), vec![40_000]);
    }

    #[test]
    fn test_time_wait_rst_kills_without_rfc1337() {
        let mut t = table(false);
        assert_eq!(answer(&mut t, 1, "R", 5001, 0), Some(TwAction::Killed));
        assert!(t.get(&tuple()).is_none());
    }

    #[test]
    fn test_time_wait_rst_ignored_with_rfc1337() {
        let mut t = table(true);
        assert_eq!(answer(&mut t, 1, "R", 5001, 0), Some(TwAction::RstIgnored));
        assert!(t.get(&tuple()).is_some());
    }

    #[test]
    fn test_time_wait_rst_out_of_window_ignored() {
        let mut t = table(false);
        assert_eq!(answer(&mut t, 1, "R", 4000, 0), Some(TwAction::RstOutOfWindow));
        assert!(t.get(&tuple()).is_some());
    }

    #[test]
    fn test_time_wait_syn_above_rcv_nxt_accepted_with_linux_isn() {
        let mut t = table(false);
        assert_eq!(answer(&mut t, 1, "S", 9000, 0), Some(TwAction::NewConnection { isn: 1001 + 65537, rcv_nxt: 5001 }));
        assert!(t.is_empty());
    }

    #[test]
    fn test_time_wait_syn_below_rcv_nxt_acked_then_rate_limited_no_restart() {
        let mut t = table(false);
        let ack = Some(TwAction::Ack { seq: 1001, ack: 5001, win: 502, tsecr: None, restarted: false });
        assert_eq!(answer(&mut t, 1, "S", 100, 0), ack);
        assert_eq!(answer(&mut t, 400, "S", 100, 0), Some(TwAction::AckLimited { restarted: false }));
        assert_eq!(t.limited, 1);
        assert_eq!(answer(&mut t, 501, "S", 100, 0), ack);
        assert_eq!(expired(&mut t, 60_000), vec![(tuple(), 7)], "an ACK-less SYN does not restart the timer");
    }

    #[test]
    fn test_time_wait_syn_above_rcv_nxt_without_listener_acked() {
        let mut t = table(false);
        let ack = (7, TwAction::Ack { seq: 1001, ack: 5001, win: 502, tsecr: None, restarted: false });
        assert_eq!(t.process(1, &seg("S", 9000, 0), None, false), Some(ack));
        assert_eq!(t.process(2, &seg("S", 9000, 0), None, false), Some(ack), "not rate-limited");
        assert!(t.get(&tuple()).is_some());
    }

    #[test]
    fn test_time_wait_data_always_acked() {
        let mut t = table(false);
        let mut data = seg("P.", 5001, 1001);
        data.len = 10;
        let ack = TwAction::Ack { seq: 1001, ack: 5001, win: 502, tsecr: None, restarted: true };
        assert_eq!(t.process(1, &data, None, true), Some((7, ack)));
        assert_eq!(t.process(2, &data, None, true), Some((7, ack)));
        assert_eq!(t.limited, 0);
    }

    fn ts_table() -> TimeWaitTable<RandomState> {
        let mut t = TimeWaitTable::new(TwConfig::default(), RandomState::new());
        t.insert(0, &tuple(), 1, TwSeq { snd_nxt: 1001, rcv_nxt: 5001, win: 502, ts_recent: Some(777) });
        t
    }

    #[test]
    fn test_time_wait_syn_with_newer_tsval_accepted() {
        let mut t = ts_table();
        let older = t.process(1, &seg("S", 100, 0), Some(700), true).map(|x| x.1);
        let ack = TwAction::Ack { seq: 1001, ack: 5001, win: 502, tsecr: Some(777), restarted: true };
        assert_eq!(older, Some(ack), "PAWS");
        let newer = t.process(600, &seg("S", 100, 0), Some(778), true).map(|x| x.1);
        assert_eq!(newer, Some(TwAction::NewConnection { isn: 1001 + 65537, rcv_nxt: 5001 }));
    }

    #[test]
    fn test_time_wait_timestamps_echoed_and_paws() {
        let mut t = ts_table();
        assert_eq!(t.get(&tuple()).unwrap().ts_recent(), Some(777));
        // A retransmitted FIN (out of window) is ACKed echoing ts_recent,
        // which it does not change.
        let re_ack = TwAction::AckFin { seq: 1001, ack: 5001, win: 502, tsecr: Some(777) };
        assert_eq!(t.process(1, &seg("F.", 5000, 1001), Some(900), true).map(|x| x.1), Some(re_ack));
        assert_eq!(t.get(&tuple()).unwrap().ts_recent(), Some(777));
        // A bare ACK at rcv_nxt with an old TSval fails PAWS: ACKed (not
        // absorbed), timer restarted; with a newer one it is absorbed and
        // becomes ts_recent.
        let paws = TwAction::Ack { seq: 1001, ack: 5001, win: 502, tsecr: Some(777), restarted: true };
        assert_eq!(t.process(2, &seg(".", 5001, 1001), Some(776), true).map(|x| x.1), Some(paws));
        assert_eq!(t.process(3, &seg(".", 5001, 1001), Some(800), true).map(|x| x.1), Some(TwAction::Absorbed));
        assert_eq!(t.get(&tuple()).unwrap().ts_recent(), Some(800));
        // An RST at rcv_nxt with an old TSval: ignored, TIME-WAIT stays.
        assert_eq!(t.process(4, &seg("R", 5001, 0), Some(799), true).map(|x| x.1), Some(TwAction::RstOutOfWindow));
        assert!(t.get(&tuple()).is_some());
        // A segment without the option is not checked (Linux's saw_tstamp).
        assert_eq!(t.process(5, &seg(".", 5001, 1001), None, true).map(|x| x.1), Some(TwAction::Absorbed));
        // TSvals compare in sequence space: one after a wrap is newer.
        let mut t = TimeWaitTable::new(TwConfig::default(), RandomState::new());
        t.insert(0, &tuple(), 1, TwSeq { snd_nxt: 1001, rcv_nxt: 5001, win: 502, ts_recent: Some(u32::MAX - 1) });
        assert_eq!(t.process(1, &seg(".", 5001, 1001), Some(3), true).map(|x| x.1), Some(TwAction::Absorbed));
    }

    #[test]
    fn test_time_wait_without_timestamps_tsval_ignored() {
        // A record without timestamps neither checks nor echoes them.
        let mut t = table(false);
        assert_eq!(t.get(&tuple()).unwrap().ts_recent(), None);
        assert_eq!(t.process(1, &seg(".", 5001, 1001), Some(1), true).map(|x| x.1), Some(TwAction::Absorbed));
        let ack = TwAction::Ack { seq: 1001, ack: 5001, win: 502, tsecr: None, restarted: false };
        assert_eq!(t.process(2, &seg("S", 100, 0), Some(u32::MAX / 2), true).map(|x| x.1), Some(ack));
    }

    #[test]
    fn test_time_wait_overflow_counted() {
        let mut t = table(false);
        for p in 1..=3u16 {
            let mut tu = tuple();
            tu.remote.set_port(p);
            assert!(t.insert(0, &tu, 1, TwSeq { snd_nxt: 1, rcv_nxt: 1, win: 0, ts_recent: None }));
        }
        let mut tu = tuple();
        tu.remote.set_port(9);
        assert!(!t.insert(0, &tu, 1, TwSeq { snd_nxt: 1, rcv_nxt: 1, win: 0, ts_recent: None }));
        assert_eq!(t.overflows, 1);
    }

    fn expired_any(t: &mut TimeWaitTable<RandomState>, now: u32) -> Vec<(FourTuple, ConnId)> {
        let mut gone = Vec::new();
        t.expire(now, |tu, id| gone.push((tu, id)));
        gone
    }

    #[test]
    fn test_time_wait_ipv6_tuple() {
        let mut t = TimeWaitTable::new(TwConfig::default(), RandomState::new());
        let tu = FourTuple { local: "[fd00::2]:80".parse().unwrap(), remote: "[fd00::1]:4000".parse().unwrap() };
        t.insert(0, &tu, 3, TwSeq { snd_nxt: 1, rcv_nxt: 1, win: 0, ts_recent: None });
        assert_eq!(expired_any(&mut t, 60_000), vec![(tu, 3)]);
    }

    #[test]
    fn test_time_wait_ipv4_and_ipv6_expire_in_time_order() {
        let mut t = TimeWaitTable::new(TwConfig { len_ms: 60_000, rfc1337: false, max: 8 }, RandomState::new());
        let v6 = FourTuple { local: "[fd00::2]:80".parse().unwrap(), remote: "[fd00::1]:4000".parse().unwrap() };
        let seq = TwSeq { snd_nxt: 1, rcv_nxt: 1, win: 0, ts_recent: None };
        assert!(t.insert(0, &v6, 1, seq));
        assert!(t.insert(5, &tuple(), 2, seq));
        assert!(t.insert(10, &v6_other(), 3, seq));
        assert_eq!(t.poll_at(), Some(60_000));
        assert_eq!(expired(&mut t, 60_004), vec![(v6, 1)]);
        assert_eq!(expired(&mut t, 60_009), vec![(tuple(), 2)]);
        assert_eq!(expired(&mut t, 60_010), vec![(v6_other(), 3)]);
        assert_eq!((t.len(), t.pending(), t.poll_at()), (0, 0, None));
    }

    fn v6_other() -> FourTuple {
        FourTuple { local: "[fd00::2]:80".parse().unwrap(), remote: "[fd00::1]:4001".parse().unwrap() }
    }
}
