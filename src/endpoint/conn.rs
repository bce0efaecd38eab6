//! One connection of the table ([`Conn`]: its one-socket `SocketSet`, the
//! application and what closelab tracks beside smoltcp) and the
//! retransmission and keep-alive counts read from its segments
//! ([`SeqTracker`]).

use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;

use super::app::App;
use crate::event::{ConnId, TcpState};
use crate::wire::{self, FourTuple, Segment};

pub(super) struct Conn {
    pub(super) id: ConnId,
    pub(super) tuple: FourTuple,
    pub(super) set: SocketSet<'static>,
    pub(super) handle: SocketHandle,
    pub(super) state: TcpState,
    pub(super) app: App,
    /// A FIN was seen on this connection (either direction): fault rules can
    /// match `after-fin`.
    pub(super) fin_seen: bool,
    /// The peer's FIN has arrived.
    pub(super) peer_fin: bool,
    /// Reached ESTABLISHED at some point (counts as a finished connection).
    pub(super) synchronized: bool,
    pub(super) deadline: Option<Instant>,
    pub(super) generation: u64,
    pub(super) seq: SeqTracker,
    /// The peer's sequence space ends here (after its FIN), once its FIN
    /// has been accepted: rcv_nxt of a TIME-WAIT record.
    pub(super) peer_fin_end: Option<u32>,
    /// The peer's most recent TSval (RFC 7323's TS.Recent), when its SYN
    /// or SYN-ACK carried a timestamp option; tracked only with
    /// `--timestamps` (smoltcp keeps its own private). A TIME-WAIT record
    /// keeps it for PAWS and echoes it.
    pub(super) ts_recent: Option<u32>,
    /// An orphaned FIN-WAIT-2 ends then (`--fin-timeout`).
    pub(super) orphan_at: Option<Instant>,
    /// A retransmission limit was reached: its description; the
    /// connection is dropped at the end of the step.
    pub(super) expired: Option<String>,
}

/// Retransmissions and keep-alive probes of one connection, read from its
/// segments (smoltcp keeps its sequence numbers private).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct SeqTracker {
    /// Oldest unacknowledged sequence number.
    pub(super) snd_una: u32,
    /// Highest seq+len sent; `None` until something that occupies sequence
    /// space was sent.
    pub(super) snd_max: Option<u32>,
    pub(super) retrans: u32,
    /// Retransmissions of the oldest unacknowledged segment (the one an
    /// RTO resends first) since the ACK last advanced: what the
    /// retransmission limits count (a go-back-N round resends many
    /// segments but is one timeout).
    pub(super) head_retrans: u32,
    pub(super) probes: u32,
    /// Acknowledgment number and window field of the last segment sent
    /// with ACK.
    pub(super) last_ack: Option<u32>,
    pub(super) last_win: u16,
}

/// `a < b` in sequence space (RFC 9293 §3.4: arithmetic modulo 2^32).
pub(super) fn seq_lt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

impl Conn {
    pub(super) fn socket(&mut self) -> &mut tcp::Socket<'static> {
        self.set.get_mut::<tcp::Socket>(self.handle)
    }

    /// Updates [`Conn::ts_recent`] from a segment that arrived (called
    /// only with `--timestamps`, so nobody else pays for the option walk).
    /// The peer's SYN (or SYN-ACK) decides whether timestamps are in use:
    /// its TSval, or none. Later segments (not RSTs) replace it with a
    /// TSval not older than it when they start at or before the last ACK
    /// we sent (RFC 7323 §4.3, Linux's `tcp_replace_ts_recent`), so a
    /// segment from beyond the window does not move it.
    pub(super) fn track_ts(&mut self, packet: &[u8], seg: &Segment) {
        if seg.flags.syn && !seg.flags.rst && !self.synchronized {
            self.ts_recent = wire::tcp_timestamp(packet).map(|t| t.tsval);
            return;
        }
        let Some(recent) = self.ts_recent else { return };
        if seg.flags.rst || self.seq.last_ack.is_some_and(|a| seq_lt(a, seg.seq)) {
            return;
        }
        if let Some(t) = wire::tcp_timestamp(packet)
            && !seq_lt(t.tsval, recent)
        {
            self.ts_recent = Some(t.tsval);
        }
    }
}

impl SeqTracker {
    /// A segment the stack sent on this connection (before faults: a
    /// segment the network lost and the stack sends again is a
    /// retransmission, a fault's duplicate is not).
    pub(super) fn sent(&mut self, seg: &Segment) {
        if seg.flags.ack && !seg.flags.rst {
            self.last_ack = Some(seg.ack);
            self.last_win = seg.win;
        }
        let len = seg.seq_len();
        if len == 0 || seg.flags.rst {
            return;
        }
        let end = seg.seq.wrapping_add(len);
        let Some(max) = self.snd_max else {
            self.snd_una = seg.seq;
            self.snd_max = Some(end);
            return;
        };
        if seq_lt(seg.seq, max) {
            // Old sequence space again. With nothing outstanding it is a
            // keep-alive probe (smoltcp sends one byte at snd_nxt - 1).
            if self.snd_una == max {
                self.probes += 1;
            } else {
                self.retrans += 1;
                if seg.seq == self.snd_una {
                    self.head_retrans += 1;
                }
            }
        }
        if seq_lt(max, end) {
            self.snd_max = Some(end);
        }
    }

    /// A segment that arrived on this connection: an ACK that advances
    /// snd_una resets the retransmission count; any ACK answers the
    /// keep-alive probes.
    pub(super) fn received(&mut self, seg: &Segment) {
        if !seg.flags.ack || seg.flags.rst {
            return;
        }
        self.probes = 0;
        if let Some(max) = self.snd_max
            && seq_lt(self.snd_una, seg.ack)
            && !seq_lt(max, seg.ack)
        {
            self.snd_una = seg.ack;
            self.retrans = 0;
            self.head_retrans = 0;
        }
    }

    pub(super) fn unacked(&self) -> u32 {
        self.snd_max.map_or(0, |max| max.wrapping_sub(self.snd_una))
    }
}
