//! The endpoint's side of the TIME-WAIT table (Linux model): handing a
//! connection over to it, its expiry, its answers to segments for a
//! TIME-WAIT 4-tuple, and its counters.

use smoltcp::time::{Duration, Instant};

use super::timewait::{self, TwAction, TwSeq};
use super::{Endpoint, TimeWaitModel, seq_lt, tsval};
use crate::event::{Cause, ConnId, Dir, EventKind, TcpState};
use crate::wire::{self, FourTuple, Segment};

impl Endpoint {
    /// TIME-WAIT records due at `now` end: `TIME-WAIT -> CLOSED (timer)`.
    pub(super) fn expire_time_wait(&mut self, now: Instant) {
        let now_ms = self.ms(now);
        if self.tw.poll_at().is_none_or(|at| at > now_ms) {
            return;
        }
        let mut gone = Vec::new();
        self.tw.expire(now_ms, |_, id| gone.push(id));
        for id in gone {
            log::debug!("endpoint: conn={id} TIME-WAIT over");
            self.finished += 1;
            self.emit(
                now,
                Some(id),
                EventKind::State { from: TcpState::TimeWait, to: TcpState::Closed, cause: Cause::Timer },
                None,
            );
        }
    }

    /// Milliseconds since the start (the TIME-WAIT table's clock; a run of
    /// more than 49 days stops at u32::MAX).
    pub(super) fn ms(&self, now: Instant) -> u32 {
        if now <= self.start { 0 } else { (now - self.start).total_millis().min(u64::from(u32::MAX)) as u32 }
    }

    /// The connection number of a TIME-WAIT record.
    pub(super) fn tw_id(&self, tuple: &FourTuple) -> Option<ConnId> {
        if self.tw.is_empty() {
            return None;
        }
        self.tw.get(tuple).map(|r| ConnId::from(r.id))
    }

    /// Entries in the TIME-WAIT table now (Linux model).
    pub fn time_wait_count(&self) -> usize {
        self.tw.len()
    }

    /// Connections that skipped TIME-WAIT because the table was full
    /// (`--max-tw`, like Linux's "time wait bucket table overflow").
    pub fn time_wait_overflows(&self) -> u64 {
        self.tw.overflows
    }

    /// A line for the end of a run about the TIME-WAIT table (Linux model),
    /// when there is something to say: entries left, overflows, ACKs held
    /// back by the rate limit.
    pub fn time_wait_report(&self) -> Option<String> {
        let (n, over, limited) = (self.tw.len(), self.tw.overflows, self.tw.limited);
        if self.cfg.time_wait_model != TimeWaitModel::Linux || (n, over, limited) == (0, 0, 0) {
            return None;
        }
        let len = Duration::from_millis(u64::from(self.cfg.time_wait.len_ms));
        Some(format!(
            "TIME-WAIT table at exit: {n} in TIME-WAIT (--time-wait {len}), {over} skipped TIME-WAIT because the table was full (--max-tw {}), {limited} ACKs held back by the 500 ms rate limit",
            self.cfg.time_wait.max
        ))
    }

    /// ACKs of the TIME-WAIT table suppressed by the 500 ms rate limit.
    pub fn time_wait_acks_limited(&self) -> u64 {
        self.tw.limited
    }

    /// Shows a segment for a TIME-WAIT record and the table's answer (sent,
    /// noted, or the end of TIME-WAIT). `seg_tsval`: the segment's TSval,
    /// read when the record keeps timestamps. `true`: a SYN that ended
    /// TIME-WAIT; the caller starts the new connection from it.
    pub(super) fn time_wait_answer(
        &mut self,
        now: Instant,
        id: ConnId,
        packet: &[u8],
        seg: &Segment,
        seg_tsval: Option<u32>,
        action: TwAction,
    ) -> bool {
        self.segment_event(now, Some(id), Dir::In, packet, Ok(seg.clone()));
        let len = Duration::from_millis(u64::from(self.cfg.time_wait.len_ms));
        let tuple = seg.tuple_at_receiver();
        let (note, ack) = match action {
            TwAction::AckFin { seq, ack, win, tsecr } => (
                Some(format!(
                    "TIME-WAIT: the peer's FIN again (our last ACK lost or late): ACK again, timer restarted ({len})"
                )),
                Some((seq, ack, win, tsecr)),
            ),
            TwAction::Absorbed => {
                (Some(format!("TIME-WAIT: ACK at rcv_nxt, no answer, timer restarted ({len})")), None)
            }
            TwAction::Killed => {
                self.note(
                    now,
                    Some(id),
                    "RST at rcv_nxt ends TIME-WAIT (TIME-WAIT assassination, RFC 1337; as Linux with tcp_rfc1337=0)"
                        .into(),
                );
                let kind = EventKind::State { from: TcpState::TimeWait, to: TcpState::Closed, cause: Cause::Segment };
                self.emit(now, Some(id), kind, None);
                self.finished += 1;
                return false;
            }
            TwAction::RstIgnored => {
                (Some("RST ignored in TIME-WAIT (--rfc1337, as Linux with tcp_rfc1337=1)".to_string()), None)
            }
            TwAction::RstOutOfWindow => {
                let recent = self.tw.get(&tuple).and_then(|r| r.ts_recent());
                let text = match (seg_tsval, recent) {
                    (Some(v), Some(r)) if timewait::paws_older(v, r) => {
                        format!("TIME-WAIT: RST with an old TSval {v} (ts_recent {r}) ignored (PAWS, RFC 7323)")
                    }
                    _ => "TIME-WAIT: RST not at rcv_nxt ignored".to_string(),
                };
                (Some(text), None)
            }
            TwAction::NewConnection { isn, rcv_nxt } => {
                let why = match seg_tsval {
                    Some(v) if !seq_lt(rcv_nxt, seg.seq) => format!(
                        "seq {} not after rcv_nxt {rcv_nxt}, but its TSval {v} newer than the peer's last (RFC 6191)",
                        seg.seq
                    ),
                    _ => format!("seq {} after rcv_nxt {rcv_nxt}", seg.seq),
                };
                self.note(
                    now,
                    Some(id),
                    format!(
                        "new SYN ({why}) ends TIME-WAIT, as Linux does; the new connection's ISN is Linux's: {isn} (snd_nxt + 65537)"
                    ),
                );
                let kind = EventKind::State { from: TcpState::TimeWait, to: TcpState::Closed, cause: Cause::Segment };
                self.emit(now, Some(id), kind, None);
                self.finished += 1;
                return true;
            }
            TwAction::Ack { seq, ack, win, tsecr, restarted } => {
                let why = match (seg_tsval, tsecr) {
                    (Some(v), Some(r)) if timewait::paws_older(v, r) => {
                        format!("a segment with an old TSval {v} (ts_recent {r}: PAWS, RFC 7323)")
                    }
                    _ if seg.flags.syn && !seg.flags.ack => "a SYN not after rcv_nxt (or no listener)".to_string(),
                    _ => "a segment outside the TIME-WAIT's window".to_string(),
                };
                let timer = if restarted { format!(", timer restarted ({len})") } else { String::new() };
                (Some(format!("TIME-WAIT answers {why} with its ACK{timer}")), Some((seq, ack, win, tsecr)))
            }
            TwAction::AckLimited { restarted } => {
                let timer = if restarted { format!(", timer restarted ({len})") } else { String::new() };
                (
                    Some(format!(
                        "TIME-WAIT: ACK not sent, at most one per 500 ms (Linux's tcp_invalid_ratelimit){timer}"
                    )),
                    None,
                )
            }
        };
        if let Some(text) = note {
            self.note(now, Some(id), text);
        }
        if let Some((seq, ack, win, tsecr)) = ack {
            let flags = wire::Flags { ack: true, ..wire::Flags::default() };
            // With timestamps, as Linux's tcp_v4_timewait_ack: our clock,
            // the peer's last TSval echoed.
            let ts = tsecr.map(|tsecr| wire::Timestamp { tsval: tsval(), tsecr });
            let packet = wire::tcp_packet_ts(tuple.local, tuple.remote, flags, seq, ack, win, ts);
            self.send_detached(now, id, packet);
        }
        false
    }

    /// Sends a packet made by closelab itself (a TIME-WAIT record's answer)
    /// through the fault path like the stack's own.
    fn send_detached(&mut self, now: Instant, id: ConnId, packet: Vec<u8>) {
        let seg = wire::parse(&packet);
        if self.no_faults() {
            self.deliver_out(now, packet, seg);
            return;
        }
        let mut release = Vec::new();
        self.through_faults(now, Dir::Out, packet, seg.as_ref().ok(), Some(id), true, &mut release);
        self.deliver_all(now, release);
    }

    /// Hands a connection that reached TIME-WAIT to the table (Linux
    /// model) once its final ACK is out: the smoltcp socket and its buffers
    /// are freed. Past `--max-tw` the connection skips TIME-WAIT, as Linux
    /// past tcp_max_tw_buckets. `true` when the connection is gone.
    pub(super) fn retire_time_wait(&mut self, now: Instant, id: ConnId) -> bool {
        if self.cfg.time_wait_model != TimeWaitModel::Linux {
            return false;
        }
        let Some(c) = self.conns.get(&id) else { return false };
        if c.state != TcpState::TimeWait {
            return false;
        }
        let Some(rcv_nxt) = c.peer_fin_end else { return false };
        if c.seq.last_ack != Some(rcv_nxt) {
            // The final ACK is not out yet (smoltcp's delayed ACK).
            return false;
        }
        let (tuple, snd_nxt, win, ts_recent) = (c.tuple, c.seq.snd_max.unwrap_or(0), c.seq.last_win, c.ts_recent);
        // Finished (for --exit-after) once TIME-WAIT is over, as with
        // smoltcp's own TIME-WAIT.
        self.remove(id);
        let now_ms = self.ms(now);
        if !self.tw.insert(now_ms, &tuple, id, TwSeq { snd_nxt, rcv_nxt, win, ts_recent }) {
            let max = self.cfg.time_wait.max;
            self.note(
                now,
                Some(id),
                format!("TCP: time wait bucket table overflow (--max-tw {max}): the connection skips TIME-WAIT"),
            );
            let kind = EventKind::State { from: TcpState::TimeWait, to: TcpState::Closed, cause: Cause::Segment };
            self.emit(now, Some(id), kind, None);
            self.finished += 1;
        }
        true
    }
}
