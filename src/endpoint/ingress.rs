//! The ingress path: packets through the fault rules and slow motion, then
//! into the stack or onto the wire, and the dispatch of an incoming segment
//! to its connection, the TIME-WAIT table, the SYN cache or smoltcp's
//! closed-port answer.

use std::net::IpAddr;

use smoltcp::time::Instant;

use super::timewait::TwAction;
use super::{Endpoint, Parsed, TimeWaitSyn};
use crate::event::{Cause, ConnId, Dir, EventKind, TcpState};
use crate::wire::{self, Segment};

impl Endpoint {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn through_faults(
        &mut self,
        now: Instant,
        dir: Dir,
        packet: Vec<u8>,
        seg: Option<&Segment>,
        conn: Option<ConnId>,
        fin_seen: bool,
        release: &mut Vec<(Dir, Vec<u8>)>,
    ) {
        let mut first = Vec::new();
        if self.faults.is_empty() {
            first.push((dir, packet));
        } else {
            let mut applied = Vec::new();
            self.faults.push(now, dir, packet, seg, conn, fin_seen, &mut first, &mut applied);
            for a in applied {
                self.emit(
                    now,
                    conn,
                    EventKind::Fault {
                        action: a.action,
                        dir: a.dir,
                        seg: seg.cloned(),
                        rule: a.rule,
                        detail: a.detail,
                    },
                    None,
                );
            }
        }
        match &mut self.slow {
            None => release.extend(first),
            Some(slow) => {
                let mut ignored = Vec::new();
                for (d, p) in first {
                    let s = wire::parse(&p).ok();
                    slow.push(now, d, p, s.as_ref(), conn, fin_seen, release, &mut ignored);
                }
            }
        }
    }

    /// No fault rules and no slow motion: every packet passes at once,
    /// unchanged, so callers skip the fault path and its re-parsing.
    pub(super) fn no_faults(&self) -> bool {
        self.faults.is_empty() && self.slow.is_none()
    }

    /// Packets that passed the fault path (only raw bytes come back from
    /// it: they are parsed again here).
    pub(super) fn deliver_all(&mut self, now: Instant, release: Vec<(Dir, Vec<u8>)>) {
        for (dir, packet) in release {
            let seg = wire::parse(&packet);
            self.deliver(now, dir, packet, seg);
        }
    }

    /// A packet that passed the fault path: into the stack, or onto the wire.
    fn deliver(&mut self, now: Instant, dir: Dir, packet: Vec<u8>, seg: Parsed) {
        match dir {
            Dir::Out => self.deliver_out(now, packet, seg),
            Dir::In => {
                let conn = seg.as_ref().ok().and_then(|s| self.by_tuple.get(&s.tuple_at_receiver()).copied());
                self.dispatch(now, packet, seg, conn);
            }
        }
    }

    pub(super) fn deliver_out(&mut self, now: Instant, packet: Vec<u8>, seg: Parsed) {
        let conn = seg.as_ref().ok().and_then(|s| {
            let t = s.tuple_at_sender();
            self.find(&t).or_else(|| self.syn.by_tuple.get(&t).copied())
        });
        self.segment_event(now, conn, Dir::Out, &packet, seg);
        self.outbox.push_back(packet);
    }

    /// An incoming packet; `conn` is the connection its 4-tuple maps to now.
    pub(super) fn dispatch(&mut self, now: Instant, packet: Vec<u8>, seg: Parsed, conn: Option<ConnId>) {
        let seg = match seg {
            Ok(seg) => seg,
            Err(e @ wire::ParseError::NotTcp(_)) => {
                // ICMP, neighbour discovery and the like: smoltcp answers what
                // it knows (echo requests); not part of the timeline.
                log::debug!("endpoint: non-tcp packet in len={} ({e})", packet.len());
                self.stateless(now, packet, None);
                return;
            }
            Err(e) => {
                self.emit(
                    now,
                    None,
                    EventKind::Malformed { dir: Dir::In, len: packet.len(), reason: e.to_string() },
                    None,
                );
                self.stateless(now, packet, None);
                return;
            }
        };
        if !self.cfg.addrs.iter().any(|a| IpAddr::from(a.address()) == seg.dst.ip()) {
            // RFC 1122 §4.2.3.10: TCP ignores segments to a broadcast address;
            // nor is any other address of the prefix closelab's. smoltcp would
            // answer both with an RST *from* that address (found by fuzzing).
            let reason = format!("addressed to {}, not to closelab (dropped, as Linux does)", seg.dst.ip());
            self.emit(now, None, EventKind::Malformed { dir: Dir::In, len: packet.len(), reason }, None);
            return;
        }
        let tuple = seg.tuple_at_receiver();
        let bare_syn = seg.flags.syn && !seg.flags.ack && !seg.flags.rst;
        let mut syn_shown = false;
        // The ISN Linux gives a connection that reuses a TIME-WAIT 4-tuple.
        let mut tw_isn = None;
        let ours = self.cfg.addrs.iter().any(|c| IpAddr::from(c.address()) == tuple.local.ip());
        let listening = ours && self.listen_ports.contains(&tuple.local.port());
        if conn.is_none() && !self.tw.is_empty() {
            let now_ms = self.ms(now);
            // Only a record that kept the peer's TSval reads the option
            // (and only --timestamps makes such records): without it, no
            // second lookup and no option walk per segment.
            let tsval = if self.cfg.timestamps && self.tw.get(&tuple).is_some_and(|r| r.ts_recent().is_some()) {
                wire::tcp_timestamp(&packet).map(|t| t.tsval)
            } else {
                None
            };
            if let Some((id, action)) = self.tw.process(now_ms, &seg, tsval, listening) {
                if let TwAction::NewConnection { isn, .. } = action {
                    tw_isn = Some(isn);
                }
                if !self.time_wait_answer(now, id, &packet, &seg, tsval, action) {
                    return;
                }
                // A SYN that ended TIME-WAIT, already shown: it starts the
                // new connection below.
                syn_shown = true;
            }
        }
        if let Some(id) = conn {
            let in_tw = self.conns[&id].state == TcpState::TimeWait;
            if !(in_tw && bare_syn && self.cfg.time_wait_syn == TimeWaitSyn::Accept) {
                self.step(now, id, Some((packet, seg)));
                return;
            }
            // A new incarnation of the 4-tuple: retire TIME-WAIT first. Never
            // call listen() on the TIME-WAIT socket itself (smoltcp would
            // silently discard TIME-WAIT). Cause before effect: the SYN is
            // shown arriving at the TIME-WAIT connection, then TIME-WAIT
            // ends, then the new connection starts from the same segment.
            self.segment_event(now, Some(id), Dir::In, &packet, Ok(seg.clone()));
            syn_shown = true;
            self.emit(
                now,
                Some(id),
                EventKind::Note { text: "new SYN for this 4-tuple ends TIME-WAIT (closelab accepts it, as Linux does for a higher sequence number)".into() },
                None,
            );
            self.emit(
                now,
                Some(id),
                EventKind::State { from: TcpState::TimeWait, to: TcpState::Closed, cause: Cause::Segment },
                None,
            );
            self.finish(id);
        }
        if let Some(&id) = self.syn.by_tuple.get(&tuple) {
            self.half_open_segment(now, id, packet, seg);
            return;
        }
        if bare_syn && listening {
            if self.conns.len() + self.syn.half_open.len() >= self.cfg.max_conns {
                self.emit(
                    now,
                    None,
                    EventKind::Refused {
                        tuple: format!("{} -> {}", tuple.remote, tuple.local),
                        reason: format!("connection limit {} reached", self.cfg.max_conns),
                    },
                    None,
                );
                self.stateless(now, packet, Some(seg));
                return;
            }
            self.syn(now, tuple, packet, seg, syn_shown, tw_isn);
            return;
        }
        let (packet, seg) = match listening && seg.flags.ack && !seg.flags.syn && !seg.flags.rst {
            true => match self.cookie_ack(now, tuple, packet, seg) {
                Some(back) => back,
                None => return,
            },
            false => (packet, seg),
        };
        self.stateless(now, packet, Some(seg));
    }

    /// A packet that belongs to no connection (`seg` if it is TCP): smoltcp
    /// with an empty socket set answers as for a closed port.
    pub(super) fn stateless(&mut self, now: Instant, packet: Vec<u8>, seg: Option<Segment>) {
        if let Some(seg) = seg {
            self.segment_event(now, None, Dir::In, &packet, Ok(seg));
        }
        self.dev.rx.push_back(packet);
        self.iface.poll_ingress_single(now, &mut self.dev, &mut self.empty);
        self.dev.rx.clear();
        self.flush_tx(now, None);
    }
}
