//! Fault rules on the packet path: drop, delay, duplicate or reorder chosen
//! segments, in either direction, so a lab can lose exactly the segment a
//! close depends on (the last ACK, a FIN, a retransmitted FIN …).
//!
//! This is a sans-IO filter, like smoltcp's `phy::FaultInjector` but targeted:
//! the endpoint hands every packet to a [`FaultPath`] together with `now`, and
//! gets back the packets to deliver now plus what was done to them. It never
//! reads a clock (time is a parameter; ask [`FaultPath::poll_at`] when to come
//! back) and never touches the OS. Randomness comes from a seeded splitmix64
//! generator, so a run is reproducible from its seed (and, unlike
//! `FaultInjector`, seed 0 is an ordinary seed).
//!
//! # Rule grammar
//!
//! A rule is a list of words separated by spaces. The first word is the
//! action; the other words filter which segments it acts on, in any order.
//!
//! ```text
//! action (first word, required):
//!   drop                 drop the segment
//!   delay DURATION       deliver it DURATION later (also delay=DURATION)
//!   dup | duplicate      deliver it and, right after, a copy
//!   reorder N            hold it until N later segments in the same direction
//!                        have passed (at most 1s, then it is released anyway)
//!   ... P%               random form: act with probability P (0-100), on
//!                        every match; `seed=N` overrides the run's seed
//! direction:             in (towards closelab) | out (from closelab); default both
//! segment kinds, any of: syn (SYN without ACK), synack, fin, rst,
//!                        ack (pure ACK: no payload, no SYN/FIN/RST),
//!                        data (payload > 0), any (default)
//! after-fin              only on a connection that has already seen a FIN
//! conn=N | conn N        only connection #N
//! occurrence:            1st | first | 2nd | 3rd | Nth | nth=N | every (default)
//! DURATION:              number with unit us, ms, s, m or h; decimals allowed (1.5s),
//!                        as config::parse_duration reads (--slow too)
//! ```
//!
//! Occurrences count the segments that match *this* rule's filters (per rule,
//! not per connection, unless `conn=` narrows it), whether or not an earlier
//! rule acted on them. When several rules match one segment, the first
//! matching rule (in the order given) that fires acts and the others do not.
//! Packets that are not well-formed TCP pass untouched.
//!
//! Slow motion is not a rule the user writes: [`FaultRule::slow`] builds a
//! silent delay on every segment. Silent rules report nothing and take no part
//! in the first-match choice: their delay adds to whatever the acting rule
//! did, so slow motion keeps the order of everything it slows.

use std::fmt;

use smoltcp::time::Duration;

use crate::event::{ConnId, Dir, FaultAction};
use crate::wire::Segment;

mod parse;
mod path;
mod rng;
#[cfg(test)]
mod tests;

pub use parse::MAX_REORDER;
use parse::{DurationText, Parser, ordinal};
pub use path::{Applied, FaultPath};

/// The rule grammar with examples, for `--help` and the README.
pub const GRAMMAR: &str = "\
A fault rule is words separated by spaces; the first word is the action.

  drop                 drop the segment
  delay DURATION       deliver it DURATION later (also delay=DURATION)
  dup | duplicate      deliver it and, right after, a copy
  reorder N            hold it until N later segments in the same direction
                       have passed (at most 1s, then release it anyway)
  ACTION P%            random: act with probability P (0-100) on every match;
                       seed=N overrides the run's seed for this rule

Filters (any order, all must hold):
  in | out             direction relative to closelab (default both)
  syn synack fin rst   segment kinds, any of (default any); syn has no ACK,
  ack data any         ack is a pure ACK (no payload, no SYN/FIN/RST),
                       data has payload
  after-fin            only on a connection that has already seen a FIN
  conn=N | conn N      only connection #N
  1st 2nd 3rd Nth      only the Nth segment matching this rule (also first,
  nth=N | every        nth=N); every is the default

Durations take us, ms, s (sec), m (min) or h, with decimals (1.5s), up to
24h. Occurrences count the segments matching this rule, across connections
unless conn= is given. When several rules match a segment, the first one
given acts.

Examples:
  drop out ack after-fin 1st     lose closelab's last ACK: the peer retransmits its FIN
  drop in fin 1st                lose the peer's first FIN
  delay 300ms in fin             hold every incoming FIN for 300ms
  dup out fin                    send every FIN twice
  reorder 2 out data             let two later outgoing segments overtake a data segment
  drop 5% seed=7                 lose 5% of all segments, reproducibly
  drop in rst conn=3             ignore RSTs sent to connection #3
";

/// Longest a `reorder` hold lasts before the segment is released anyway.
pub const REORDER_MAX_HOLD: Duration = Duration::from_millis(1000);

/// What a rule does to a segment it fires on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Drop,
    Delay(Duration),
    Dup,
    /// Hold until this many later segments in the same direction have passed.
    Reorder(u32),
}

impl Action {
    /// The event-stream name of what was done.
    pub fn fault_action(self) -> FaultAction {
        match self {
            Action::Drop => FaultAction::Dropped,
            Action::Delay(_) => FaultAction::Delayed,
            Action::Dup => FaultAction::Duplicated,
            Action::Reorder(_) => FaultAction::Reordered,
        }
    }
}

// Segment kinds, as bits; no bit set means any segment.
const K_SYN: u8 = 1 << 0;
const K_SYNACK: u8 = 1 << 1;
const K_FIN: u8 = 1 << 2;
const K_RST: u8 = 1 << 3;
const K_ACK: u8 = 1 << 4;
const K_DATA: u8 = 1 << 5;
const KINDS: [(u8, &str); 6] =
    [(K_SYN, "syn"), (K_SYNACK, "synack"), (K_FIN, "fin"), (K_RST, "rst"), (K_ACK, "ack"), (K_DATA, "data")];

/// One parsed fault rule. Build it with [`FaultRule::parse`] (or
/// [`FaultRule::slow`]); `Display` prints the canonical spelling, which parses
/// back to the same rule.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultRule {
    action: Action,
    /// Probability in percent, for the random forms.
    chance: Option<f64>,
    seed: Option<u64>,
    dir: Option<Dir>,
    kinds: u8,
    after_fin: bool,
    conn: Option<ConnId>,
    /// Only the nth match (1-based); `None` is every match.
    nth: Option<u64>,
    silent: bool,
}

impl FaultRule {
    /// Parses one rule (see the module docs or [`GRAMMAR`]).
    pub fn parse(s: &str) -> Result<FaultRule, RuleError> {
        Parser { rule: s }.parse()
    }

    /// Slow motion: delay every segment in both directions by `d`, silently
    /// (no fault event) and on top of whatever other rule acts.
    pub fn slow(d: Duration) -> FaultRule {
        FaultRule {
            action: Action::Delay(d),
            chance: None,
            seed: None,
            dir: None,
            kinds: 0,
            after_fin: false,
            conn: None,
            nth: None,
            silent: true,
        }
    }

    /// A silent rule (slow motion) does not show as a fault event.
    pub fn is_silent(&self) -> bool {
        self.silent
    }

    pub fn action(&self) -> Action {
        self.action
    }

    /// Whether this rule's filters select the segment (occurrence and chance
    /// aside).
    fn selects(&self, dir: Dir, seg: &Segment, conn: Option<ConnId>, fin_seen: bool) -> bool {
        if self.dir.is_some_and(|d| d != dir) {
            return false;
        }
        if self.conn.is_some() && self.conn != conn {
            return false;
        }
        if self.after_fin && !fin_seen {
            return false;
        }
        if self.kinds == 0 {
            return true;
        }
        let f = seg.flags;
        let has = |k: u8| self.kinds & k != 0;
        (f.syn && has(if f.ack { K_SYNACK } else { K_SYN }))
            || (has(K_FIN) && f.fin)
            || (has(K_RST) && f.rst)
            || (has(K_ACK) && seg.is_pure_ack())
            || (has(K_DATA) && seg.len > 0)
    }
}

impl fmt::Display for FaultRule {
    /// Canonical order: action, chance, seed, direction, kinds, after-fin,
    /// conn, occurrence. A silent rule prints as `slow DURATION`, which is
    /// not a rule a user can write.
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self.action {
            Action::Delay(d) if self.silent => return write!(f, "slow {}", DurationText(d)),
            Action::Drop => f.write_str("drop")?,
            Action::Delay(d) => write!(f, "delay {}", DurationText(d))?,
            Action::Dup => f.write_str("dup")?,
            Action::Reorder(n) => write!(f, "reorder {n}")?,
        }
        if let Some(p) = self.chance {
            write!(f, " {p}%")?;
        }
        if let Some(s) = self.seed {
            write!(f, " seed={s}")?;
        }
        if let Some(d) = self.dir {
            write!(f, " {}", d.name())?;
        }
        for (bit, name) in KINDS {
            if self.kinds & bit != 0 {
                write!(f, " {name}")?;
            }
        }
        if self.after_fin {
            f.write_str(" after-fin")?;
        }
        if let Some(c) = self.conn {
            write!(f, " conn={c}")?;
        }
        if let Some(n) = self.nth {
            write!(f, " {}", ordinal(n))?;
        }
        Ok(())
    }
}

/// A rule that could not be parsed. `Display` is one line naming the rule and
/// the bad word.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleError {
    rule: String,
    word: String,
    reason: String,
}

impl RuleError {
    /// The rule as the user wrote it.
    pub fn rule(&self) -> &str {
        &self.rule
    }

    /// The word that was wrong (empty for an empty rule).
    pub fn word(&self) -> &str {
        &self.word
    }
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "invalid fault rule `{}`: {}", self.rule, self.reason)
    }
}

impl std::error::Error for RuleError {}
