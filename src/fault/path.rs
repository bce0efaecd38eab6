//! [`FaultPath`]: the rules applied to the packets of a run.

use std::collections::BTreeMap;

use smoltcp::time::{Duration, Instant};

use super::rng::SplitMix64;
use super::*;
use crate::event::{ConnId, Dir, FaultAction};
use crate::wire::Segment;

/// What a rule did to one segment, for the event stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    pub action: FaultAction,
    /// 1-based index of the rule, in the order given to [`FaultPath::new`].
    pub rule: usize,
    pub dir: Dir,
    /// `""` for a drop (`"5%"` for a random one), `"300ms"` for a delay,
    /// `"copy sent right after"` for a duplicate, `"held until 2 later
    /// segments passed"` for a reorder.
    pub detail: String,
}

#[derive(Debug)]
struct RuleState {
    rule: FaultRule,
    matches: u64,
    rng: SplitMix64,
}

#[derive(Debug)]
pub(super) struct Held {
    dir: Dir,
    packet: Vec<u8>,
    /// 1-based rule that holds it.
    rule: usize,
    /// Later segments in `dir` still to pass before release.
    remaining: u32,
    deadline: Instant,
}

/// The fault rules of a run and the packets they are holding.
#[derive(Debug)]
pub struct FaultPath {
    rules: Vec<RuleState>,
    /// Delayed packets by (due time, arrival number): equal due times keep
    /// their arrival order.
    /// The value's `usize` is the 1-based rule that delayed it (0: only
    /// silent rules such as slow motion).
    delayed: BTreeMap<(Instant, u64), (Dir, Vec<u8>, usize)>,
    arrivals: u64,
    /// Reorder holds, oldest first.
    pub(super) held: Vec<Held>,
}

impl FaultPath {
    pub fn new(rules: Vec<FaultRule>, seed: u64) -> FaultPath {
        let rules = rules
            .into_iter()
            .enumerate()
            .map(|(i, rule)| {
                // Each rule draws from its own stream so one rule's matches do
                // not shift another's decisions; `seed=` pins a rule's stream
                // independently of its position and the run's seed.
                let s = rule.seed.unwrap_or_else(|| {
                    SplitMix64(seed ^ (i as u64 + 1).wrapping_mul(0xd1b5_4a32_d192_ed03)).next_u64()
                });
                RuleState { rule, matches: 0, rng: SplitMix64(s) }
            })
            .collect();
        FaultPath { rules, delayed: BTreeMap::new(), arrivals: 0, held: Vec::new() }
    }

    /// No rules: the endpoint may bypass the path.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// A packet enters the path. `seg` is its parsed summary (`None` if
    /// malformed: such packets pass untouched). `conn` is the endpoint's
    /// connection number for it, if any. `fin_seen` tells whether a FIN has
    /// been seen on this connection before this packet (either direction).
    ///
    /// Packets to deliver now are pushed onto `release` (0, 1 or 2 of them,
    /// or more when a reorder hold is released); what was done is pushed onto
    /// `applied`.
    #[allow(clippy::too_many_arguments)]
    pub fn push(
        &mut self,
        now: Instant,
        dir: Dir,
        packet: Vec<u8>,
        seg: Option<&Segment>,
        conn: Option<ConnId>,
        fin_seen: bool,
        release: &mut Vec<(Dir, Vec<u8>)>,
        applied: &mut Vec<Applied>,
    ) {
        let Some(seg) = seg else {
            self.emit(dir, packet, release);
            return;
        };
        let mut acting: Option<usize> = None;
        let mut extra = Duration::ZERO;
        // Every selecting rule counts and draws, even when an earlier rule
        // acts, so "the 2nd ACK" means the 2nd ACK whatever else is going on.
        for (i, r) in self.rules.iter_mut().enumerate() {
            if !r.rule.selects(dir, seg, conn, fin_seen) {
                continue;
            }
            if r.rule.silent {
                if let Action::Delay(d) = r.rule.action {
                    extra += d;
                }
                continue;
            }
            r.matches += 1;
            let fires = match (r.rule.chance, r.rule.nth) {
                (Some(p), _) => r.rng.chance(p),
                (None, Some(n)) => r.matches == n,
                (None, None) => true,
            };
            if fires && acting.is_none() {
                acting = Some(i);
            }
        }
        let Some(i) = acting else {
            self.deliver(now, now + extra, dir, packet, 0, release);
            return;
        };
        let rule = &self.rules[i].rule;
        let action = rule.action;
        let detail = match action {
            Action::Drop => rule.chance.map(|p| format!("{p}%")).unwrap_or_default(),
            Action::Delay(d) => DurationText(d).to_string(),
            Action::Dup => "copy sent right after".to_string(),
            Action::Reorder(1) => "held until 1 later segment passed".to_string(),
            Action::Reorder(n) => format!("held until {n} later segments passed"),
        };
        applied.push(Applied { action: action.fault_action(), rule: i + 1, dir, detail });
        match action {
            Action::Drop => {}
            Action::Delay(d) => self.deliver(now, now + extra + d, dir, packet, i + 1, release),
            Action::Dup => {
                let copy = packet.clone();
                self.deliver(now, now + extra, dir, packet, i + 1, release);
                self.deliver(now, now + extra, dir, copy, i + 1, release);
            }
            Action::Reorder(n) => {
                self.held.push(Held { dir, packet, rule: i + 1, remaining: n, deadline: now + REORDER_MAX_HOLD })
            }
        }
    }

    fn deliver(
        &mut self,
        now: Instant,
        at: Instant,
        dir: Dir,
        packet: Vec<u8>,
        rule: usize,
        release: &mut Vec<(Dir, Vec<u8>)>,
    ) {
        if at <= now {
            self.emit(dir, packet, release);
        } else {
            self.delayed.insert((at, self.arrivals), (dir, packet, rule));
            self.arrivals += 1;
        }
    }

    /// Releases a packet and any reorder holds its passing completes (each
    /// right after the packet that completed it).
    fn emit(&mut self, dir: Dir, packet: Vec<u8>, release: &mut Vec<(Dir, Vec<u8>)>) {
        let mut queue = std::collections::VecDeque::from([(dir, packet)]);
        while let Some((d, p)) = queue.pop_front() {
            release.push((d, p));
            let mut i = 0;
            while i < self.held.len() {
                if self.held[i].dir == d {
                    self.held[i].remaining -= 1;
                    if self.held[i].remaining == 0 {
                        let h = self.held.remove(i);
                        queue.push_back((h.dir, h.packet));
                        continue;
                    }
                }
                i += 1;
            }
        }
    }

    /// Delayed packets whose time has come, and reorder holds that reached
    /// their deadline, in time order.
    pub fn poll(&mut self, now: Instant, release: &mut Vec<(Dir, Vec<u8>)>) {
        loop {
            let delay_due = self.delayed.first_key_value().map(|(k, _)| k.0).filter(|t| *t <= now);
            let hold_due = self
                .held
                .iter()
                .enumerate()
                .filter(|(_, h)| h.deadline <= now)
                .min_by_key(|(i, h)| (h.deadline, *i))
                .map(|(i, h)| (i, h.deadline));
            match (delay_due, hold_due) {
                (Some(t), Some((_, d))) if t <= d => self.pop_delayed(release),
                (Some(_), None) => self.pop_delayed(release),
                (_, Some((i, _))) => {
                    let h = self.held.remove(i);
                    self.emit(h.dir, h.packet, release);
                }
                (None, None) => return,
            }
        }
    }

    fn pop_delayed(&mut self, release: &mut Vec<(Dir, Vec<u8>)>) {
        if let Some((_, (dir, packet, _))) = self.delayed.pop_first() {
            self.emit(dir, packet, release);
        }
    }

    /// Earliest time a delayed packet (or a reorder hold) is due.
    pub fn poll_at(&self) -> Option<Instant> {
        let delay = self.delayed.first_key_value().map(|(k, _)| k.0);
        let hold = self.held.iter().map(|h| h.deadline).min();
        match (delay, hold) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Releases everything held (shutdown/flush): delayed packets in due
    /// order, then remaining reorder holds oldest first.
    pub fn flush(&mut self, release: &mut Vec<(Dir, Vec<u8>)>) {
        while !self.delayed.is_empty() {
            self.pop_delayed(release);
        }
        for h in std::mem::take(&mut self.held) {
            release.push((h.dir, h.packet));
        }
    }

    /// Takes everything held without releasing it (the end of a run): each
    /// packet with the 1-based rule holding it (0: a silent rule such as
    /// slow motion), delayed packets in due order, then reorder holds.
    pub fn take_held(&mut self) -> Vec<(Dir, Vec<u8>, usize)> {
        let mut v: Vec<_> = std::mem::take(&mut self.delayed).into_values().collect();
        v.extend(std::mem::take(&mut self.held).into_iter().map(|h| (h.dir, h.packet, h.rule)));
        v
    }

    /// Whether any packet is held (delayed or waiting for a reorder).
    pub fn holds_any(&self) -> bool {
        !self.delayed.is_empty() || !self.held.is_empty()
    }
}
