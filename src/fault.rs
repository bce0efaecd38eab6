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

use std::collections::BTreeMap;
use std::fmt;

use smoltcp::time::{Duration, Instant};

use crate::event::{ConnId, Dir, FaultAction};
use crate::wire::Segment;

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

Durations take us, ms, s or m, with decimals (1.5s). Occurrences count the
segments matching this rule, across connections unless conn= is given. When
several rules match a segment, the first one given acts.

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

/// Most segments a `reorder N` may wait for: every held packet is memory.
pub const MAX_REORDER: u32 = 1000;

const EXPECTED_ACTION: &str = "expected drop, delay DURATION, dup or reorder N";
const EXPECTED_WORD: &str = "expected in, out, syn, synack, fin, rst, ack, data, any, after-fin, \
                             conn=N, 1st, 2nd, Nth, nth=N, every, P% or seed=N";

struct Parser<'a> {
    rule: &'a str,
}

impl<'a> Parser<'a> {
    fn err(&self, word: &str, reason: String) -> RuleError {
        RuleError { rule: self.rule.to_string(), word: word.to_string(), reason }
    }

    /// `key=value` or `key value` exactly as the user wrote it (whatever
    /// whitespace was between), for messages that quote it: from the start
    /// of `key_word` to the end of `value`, both slices of the rule.
    fn written(&self, key_word: &str, value: &str) -> String {
        let base = self.rule.as_ptr() as usize;
        let start = key_word.as_ptr() as usize - base;
        let end = value.as_ptr() as usize - base + value.len();
        self.rule.get(start..end).unwrap_or(key_word).to_string()
    }

    fn parse(&self) -> Result<FaultRule, RuleError> {
        let mut words = self.rule.split_whitespace().peekable();
        let Some(first) = words.next() else {
            return Err(self.err("", format!("empty rule ({EXPECTED_ACTION})")));
        };
        // `key=value` and `key value` are the same for words that take a value.
        let mut value_of = |key: &str, inline: Option<&'a str>, what: &str, example: &str| {
            inline
                .or_else(|| words.next())
                .ok_or_else(|| self.err(key, format!("`{key}` needs {what} (e.g. `{example}`)")))
        };
        let (key, inline) = split_kv(first);
        let action = match key {
            "drop" if inline.is_none() => Action::Drop,
            "dup" | "duplicate" if inline.is_none() => Action::Dup,
            "delay" => {
                let v = value_of("delay", inline, "a duration", "delay 300ms")?;
                Action::Delay(parse_duration(v).ok_or_else(|| {
                    self.err(v, format!("bad duration `{v}` (expected a number with us, ms, s or m, e.g. `300ms`)"))
                })?)
            }
            "reorder" => {
                let v = value_of("reorder", inline, "a count", "reorder 2")?;
                match v.parse::<u32>() {
                    Ok(n) if (1..=MAX_REORDER).contains(&n) && is_digits(v) => Action::Reorder(n),
                    _ => {
                        return Err(self.err(v, format!("bad count `{v}` for reorder (expected 1 to {MAX_REORDER})")));
                    }
                }
            }
            _ => {
                return Err(self.err(first, format!("unknown action `{first}` ({EXPECTED_ACTION})")));
            }
        };
        let mut rule = FaultRule {
            action,
            chance: None,
            seed: None,
            dir: None,
            kinds: 0,
            after_fin: false,
            conn: None,
            nth: None,
            silent: false,
        };
        // The words that set each once-only field, for conflict messages.
        let mut dir_word: Option<String> = None;
        let mut chance_word: Option<String> = None;
        let mut seed_word: Option<String> = None;
        let mut conn_word: Option<String> = None;
        let mut nth_word: Option<String> = None;
        let mut any = false;

        while let Some(word) = words.next() {
            let (key, inline) = split_kv(word);
            let mut value_of = |what: &str, example: &str| {
                inline
                    .or_else(|| words.next())
                    .ok_or_else(|| self.err(key, format!("`{key}` needs {what} (e.g. `{example}`)")))
            };
            let once = |slot: &mut Option<String>, shown: String, hint: &str| match slot {
                Some(old) => Err(self.err(word, format!("`{shown}` conflicts with `{old}`{hint}"))),
                None => {
                    *slot = Some(shown);
                    Ok(())
                }
            };
            match key {
                "in" | "out" if inline.is_none() => {
                    once(&mut dir_word, word.to_string(), " (leave out the direction for both)")?;
                    rule.dir = Some(if key == "in" { Dir::In } else { Dir::Out });
                }
                "syn" | "synack" | "fin" | "rst" | "ack" | "data" if inline.is_none() => {
                    rule.kinds |= KINDS.iter().find(|(_, n)| *n == key).map(|(b, _)| *b).unwrap_or(0);
                }
                "any" if inline.is_none() => any = true,
                "after-fin" if inline.is_none() => rule.after_fin = true,
                "every" if inline.is_none() => {
                    once(&mut nth_word, word.to_string(), "")?;
                }
                "first" if inline.is_none() => {
                    once(&mut nth_word, word.to_string(), "")?;
                    rule.nth = Some(1);
                }
                "conn" => {
                    let v = value_of("a connection number", "conn=1")?;
                    let n = v.parse::<u64>().ok().filter(|n| *n >= 1 && is_digits(v)).ok_or_else(|| {
                        self.err(v, format!("bad connection number `{v}` (connections count from 1)"))
                    })?;
                    once(&mut conn_word, self.written(word, v), "")?;
                    rule.conn = Some(n);
                }
                "nth" => {
                    let v = value_of("a number", "nth=3")?;
                    let n = v
                        .parse::<u64>()
                        .ok()
                        .filter(|n| *n >= 1 && is_digits(v))
                        .ok_or_else(|| self.err(v, format!("bad occurrence `{v}` (occurrences count from 1)")))?;
                    once(&mut nth_word, self.written(word, v), "")?;
                    rule.nth = Some(n);
                }
                "seed" => {
                    let v = value_of("a number", "seed=7")?;
                    let s = v
                        .parse::<u64>()
                        .ok()
                        .filter(|_| is_digits(v))
                        .ok_or_else(|| self.err(v, format!("bad seed `{v}` (expected an unsigned integer)")))?;
                    once(&mut seed_word, self.written(word, v), "")?;
                    rule.seed = Some(s);
                }
                _ if inline.is_none() && word.ends_with('%') => {
                    let p = parse_number(&word[..word.len() - 1])
                        .filter(|p| (0.0..=100.0).contains(p))
                        .ok_or_else(|| self.err(word, format!("bad percentage `{word}` (expected 0% to 100%)")))?;
                    once(&mut chance_word, word.to_string(), "")?;
                    rule.chance = Some(p);
                }
                _ if inline.is_none() && word.starts_with(|c: char| c.is_ascii_digit()) => {
                    let n = parse_ordinal(word).map_err(|reason| self.err(word, reason))?;
                    once(&mut nth_word, word.to_string(), "")?;
                    rule.nth = Some(n);
                }
                _ => return Err(self.err(word, format!("unknown word `{word}` ({EXPECTED_WORD})"))),
            }
        }
        if any {
            rule.kinds = 0;
        }
        if let (Some(seed), None) = (&seed_word, &chance_word) {
            return Err(self.err(seed, format!("`{seed}` only applies to a random rule (e.g. `drop 5% seed=7`)")));
        }
        // `every` is what random rules do anyway; a specific occurrence is not.
        if let (Some(nth), Some(_), Some(_)) = (&nth_word, &chance_word, rule.nth) {
            return Err(self
                .err(nth, format!("`{nth}` cannot be combined with a percentage (random rules act on every match)")));
        }
        Ok(rule)
    }
}

fn split_kv(word: &str) -> (&str, Option<&str>) {
    match word.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => (word, None),
    }
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// A plain decimal: digits with at most one point (no sign, exponent, inf).
fn parse_number(s: &str) -> Option<f64> {
    let ok = s.bytes().any(|b| b.is_ascii_digit())
        && s.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && s.bytes().filter(|b| *b == b'.').count() <= 1;
    if ok { s.parse().ok() } else { None }
}

/// The same grammar as `--slow` and every other duration closelab reads
/// ([`crate::config::parse_duration`]: us, ms, s, m, h, decimals); a
/// delay is at most a day, already far beyond any lab.
fn parse_duration(s: &str) -> Option<Duration> {
    let d = crate::config::parse_duration(s).ok()?;
    (d <= Duration::from_secs(86_400)).then_some(d)
}

/// `1st`, `2nd`, `3rd`, `4th`, `11th`, `21st` …; the suffix must be right.
fn parse_ordinal(word: &str) -> Result<u64, String> {
    let digits_end = word.find(|c: char| !c.is_ascii_digit()).unwrap_or(word.len());
    let (num, suffix) = word.split_at(digits_end);
    let n: u64 = num.parse().map_err(|_| format!("unknown word `{word}` ({EXPECTED_WORD})"))?;
    if !matches!(suffix, "st" | "nd" | "rd" | "th") {
        return Err(format!("unknown word `{word}` ({EXPECTED_WORD})"));
    }
    if n == 0 {
        return Err(format!("bad occurrence `{word}` (occurrences count from 1)"));
    }
    let right = ordinal(n);
    if right != word {
        return Err(format!("bad ordinal `{word}` (did you mean `{right}`?)"));
    }
    Ok(n)
}

fn ordinal(n: u64) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

/// Canonical duration text: the largest of m, s, ms, us that is exact, so it
/// parses back to the same value.
struct DurationText(Duration);

impl fmt::Display for DurationText {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let us = self.0.total_micros();
        if us != 0 && us.is_multiple_of(60_000_000) {
            write!(f, "{}m", us / 60_000_000)
        } else if us != 0 && us.is_multiple_of(1_000_000) {
            write!(f, "{}s", us / 1_000_000)
        } else if us.is_multiple_of(1_000) {
            write!(f, "{}ms", us / 1_000)
        } else {
            write!(f, "{us}us")
        }
    }
}

/// splitmix64 (Steele, Lea, Flood 2014): tiny, fast, good enough for drop
/// decisions, and every seed (0 included) gives a full-period stream.
#[derive(Clone, Debug)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// True with probability `percent`/100.
    fn chance(&mut self, percent: f64) -> bool {
        // 53 random bits give a uniform float in [0, 1).
        let x = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        x * 100.0 < percent
    }
}

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
struct Held {
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
    held: Vec<Held>,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{self, Flags};

    use smoltcp::wire::{TcpControl, TcpRepr, TcpSeqNumber};

    /// A real IPv4/TCP packet with tcpdump-style `flags`; `seq` identifies it.
    fn packet(flags: &str, seq: u32, len: usize) -> Vec<u8> {
        let f = Flags::parse(flags).unwrap();
        let control = if f.syn {
            TcpControl::Syn
        } else if f.fin {
            TcpControl::Fin
        } else if f.rst {
            TcpControl::Rst
        } else if f.psh {
            TcpControl::Psh
        } else {
            TcpControl::None
        };
        let payload = vec![b'a'; len];
        let tcp = TcpRepr {
            src_port: 40000,
            dst_port: 80,
            control,
            seq_number: TcpSeqNumber(seq as i32),
            ack_number: f.ack.then_some(TcpSeqNumber(1)),
            window_len: 64240,
            window_scale: None,
            max_seg_size: None,
            sack_permitted: false,
            sack_ranges: [None; 3],
            timestamp: None,
            payload: &payload,
        };
        crate::wire::ipv4_packet(&tcp)
    }

    fn t(ms: i64) -> Instant {
        Instant::from_millis(ms)
    }

    fn rule(s: &str) -> FaultRule {
        FaultRule::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    fn path(rules: &[&str]) -> FaultPath {
        FaultPath::new(rules.iter().map(|s| rule(s)).collect(), 1)
    }

    /// The sequence numbers of released packets, with direction.
    fn ids(release: &[(Dir, Vec<u8>)]) -> Vec<(Dir, u32)> {
        release.iter().map(|(d, p)| (*d, wire::parse(p).unwrap().seq)).collect()
    }

    /// Pushes one well-formed segment; returns what was released now and the
    /// actions applied.
    #[track_caller]
    fn send(
        p: &mut FaultPath,
        now: Instant,
        dir: Dir,
        flags: &str,
        seq: u32,
        conn: Option<ConnId>,
        fin_seen: bool,
    ) -> (Vec<(Dir, u32)>, Vec<Applied>) {
        let len = if flags.contains('P') { 10 } else { 0 };
        let pkt = packet(flags, seq, len);
        let seg = wire::parse(&pkt).unwrap();
        let (mut release, mut applied) = (Vec::new(), Vec::new());
        p.push(now, dir, pkt, Some(&seg), conn, fin_seen, &mut release, &mut applied);
        (ids(&release), applied)
    }

    /// Whether a segment passes at once (true) or not (dropped or held).
    #[track_caller]
    fn passes(p: &mut FaultPath, dir: Dir, flags: &str, conn: Option<ConnId>, fin_seen: bool) -> bool {
        let (released, _) = send(p, t(0), dir, flags, 7, conn, fin_seen);
        !released.is_empty()
    }

    // Tests for parsing.

    #[test]
    fn test_parse_good() {
        let r = rule("drop out ack after-fin 1st");
        assert_eq!(r.action, Action::Drop);
        assert_eq!(r.dir, Some(Dir::Out));
        assert_eq!(r.kinds, K_ACK);
        assert!(r.after_fin);
        assert_eq!(r.nth, Some(1));
        assert_eq!(rule("delay 300ms").action, Action::Delay(Duration::from_millis(300)));
        assert_eq!(rule("delay=1.5s").action, Action::Delay(Duration::from_millis(1500)));
        assert_eq!(rule("delay 250us").action, Action::Delay(Duration::from_micros(250)));
        assert_eq!(rule("delay 2m").action, Action::Delay(Duration::from_secs(120)));
        // The grammar of --slow and every other duration (config::parse_duration).
        assert_eq!(rule("delay 1h").action, Action::Delay(Duration::from_secs(3600)));
        assert_eq!(rule("delay 24h").action, Action::Delay(Duration::from_secs(86_400)));
        assert_eq!(rule("delay=1.5sec").action, Action::Delay(Duration::from_millis(1500)));
        assert_eq!(rule("duplicate fin").action, Action::Dup);
        assert_eq!(rule("reorder 2 out data").action, Action::Reorder(2));
        assert_eq!(rule("reorder=3").action, Action::Reorder(3));
        let r = rule("dup 2.5% seed=9 in");
        assert_eq!((r.action, r.chance, r.seed, r.dir), (Action::Dup, Some(2.5), Some(9), Some(Dir::In)));
        assert_eq!(rule("drop conn 4").conn, Some(4));
        assert_eq!(rule("drop conn=4").conn, Some(4));
        assert_eq!(rule("drop nth=12").nth, Some(12));
        assert_eq!(rule("drop first").nth, Some(1));
        assert_eq!(rule("drop 22nd").nth, Some(22));
        assert_eq!(rule("drop 11th").nth, Some(11));
        assert_eq!(rule("drop every").nth, None);
        assert_eq!(rule("drop 5% every").chance, Some(5.0));
        assert_eq!(rule("drop syn fin").kinds, K_SYN | K_FIN);
        assert_eq!(rule("drop syn any").kinds, 0);
        assert_eq!(rule("  drop   in  ").dir, Some(Dir::In));
        assert!(!rule("drop").is_silent());
    }

    #[test]
    fn test_parse_errors_exact_text() {
        let err = |s: &str| FaultRule::parse(s).unwrap_err().to_string();
        assert_eq!(
            err("drop out akc"),
            "invalid fault rule `drop out akc`: unknown word `akc` (expected in, out, syn, synack, fin, \
             rst, ack, data, any, after-fin, conn=N, 1st, 2nd, Nth, nth=N, every, P% or seed=N)"
        );
        assert_eq!(
            err("dorp in"),
            "invalid fault rule `dorp in`: unknown action `dorp` (expected drop, delay DURATION, dup or reorder N)"
        );
        assert_eq!(err(""), "invalid fault rule ``: empty rule (expected drop, delay DURATION, dup or reorder N)");
        assert_eq!(
            err("delay 300"),
            "invalid fault rule `delay 300`: bad duration `300` (expected a number with us, ms, s or m, e.g. `300ms`)"
        );
        assert_eq!(err("delay"), "invalid fault rule `delay`: `delay` needs a duration (e.g. `delay 300ms`)");
        assert_eq!(err("drop 150%"), "invalid fault rule `drop 150%`: bad percentage `150%` (expected 0% to 100%)");
        assert_eq!(
            err("drop in out"),
            "invalid fault rule `drop in out`: `out` conflicts with `in` (leave out the direction for both)"
        );
        assert_eq!(err("drop 2st"), "invalid fault rule `drop 2st`: bad ordinal `2st` (did you mean `2nd`?)");
        assert_eq!(
            err("drop 5% 1st"),
            "invalid fault rule `drop 5% 1st`: `1st` cannot be combined with a percentage (random rules act on every match)"
        );
        assert_eq!(
            err("drop seed=3"),
            "invalid fault rule `drop seed=3`: `seed=3` only applies to a random rule (e.g. `drop 5% seed=7`)"
        );
        assert_eq!(err("reorder 0"), "invalid fault rule `reorder 0`: bad count `0` for reorder (expected 1 to 1000)");
        assert_eq!(
            err("drop conn=0"),
            "invalid fault rule `drop conn=0`: bad connection number `0` (connections count from 1)"
        );
        assert_eq!(err("drop 0th"), "invalid fault rule `drop 0th`: bad occurrence `0th` (occurrences count from 1)");
        assert_eq!(err("drop 1st 2nd"), "invalid fault rule `drop 1st 2nd`: `2nd` conflicts with `1st`");
        // The bad word is available on its own.
        assert_eq!(FaultRule::parse("drop out akc").unwrap_err().word(), "akc");
        // Found by fuzzing: the word is quoted as written (`seed 7`, even
        // with a no-break space), never respelled `seed=7`.
        for (rule, word) in [
            ("drop seed 7", "seed 7"),
            ("drop seed\u{a0}7", "seed\u{a0}7"),
            ("drop seed=7", "seed=7"),
            ("drop 5% nth  3", "nth  3"),
        ] {
            let e = FaultRule::parse(rule).unwrap_err();
            assert_eq!(e.word(), word, "{rule:?}");
            assert!(e.to_string().contains(&format!("`{word}`")), "{e}");
        }
        assert_eq!(
            err("drop conn 2 conn=3"),
            "invalid fault rule `drop conn 2 conn=3`: `conn=3` conflicts with `conn 2`"
        );
        for bad in [
            "drop=3",
            "delay -1ms",
            "delay 1e3ms",
            "delay ms",
            "delay 1.2.3s",
            "delay 25h",
            "dup -5%",
            "drop in=1",
            "drop conn",
            "drop conn=x",
            "drop nth=0",
            "drop seed=x 5%",
            "drop 3x",
            "drop 5% 5%",
            "drop conn=1 conn=2",
            "reorder",
            "reorder 1.5",
            "drop after_fin",
            "drop nan%",
            "delay 100000000m",
        ] {
            assert!(FaultRule::parse(bad).is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn test_display_round_trip() {
        for (input, canonical) in [
            ("drop", "drop"),
            ("drop out ack after-fin 1st", "drop out ack after-fin 1st"),
            ("1st after-fin ack out drop", "unparsable"),
            ("drop first after-fin ack out", "drop out ack after-fin 1st"),
            ("delay=1.5s in fin", "delay 1500ms in fin"),
            ("delay 60s", "delay 1m"),
            ("delay 1h", "delay 60m"),
            ("delay 2s", "delay 2s"),
            ("delay 0.25ms", "delay 250us"),
            ("delay 0ms", "delay 0ms"),
            ("duplicate out fin", "dup out fin"),
            ("reorder=2 data out", "reorder 2 out data"),
            ("drop seed=7 2.5%", "drop 2.5% seed=7"),
            ("dup 5% every", "dup 5%"),
            ("drop data rst ack fin synack syn", "drop syn synack fin rst ack data"),
            ("drop conn 3 nth=21", "drop conn=3 21st"),
            ("drop any in", "drop in"),
        ] {
            let Ok(r) = FaultRule::parse(input) else {
                assert_eq!(canonical, "unparsable", "{input}");
                continue;
            };
            assert_eq!(r.to_string(), canonical, "{input}");
            assert_eq!(rule(canonical), r, "{canonical} parses back");
        }
        let slow = FaultRule::slow(Duration::from_millis(50));
        assert!(slow.is_silent());
        assert_eq!(slow.to_string(), "slow 50ms");
    }

    #[test]
    fn test_grammar_examples_parse() {
        let examples: Vec<&str> = GRAMMAR
            .split("Examples:\n")
            .nth(1)
            .unwrap()
            .lines()
            .filter_map(|l| l.trim().split("  ").next())
            .filter(|r| !r.is_empty())
            .collect();
        assert!(examples.len() >= 5);
        for ex in examples {
            let r = rule(ex);
            assert_eq!(rule(&r.to_string()), r, "{ex}");
        }
    }

    // Tests for matching.

    #[test]
    fn test_match_direction() {
        let mut p = path(&["drop in"]);
        assert!(!passes(&mut p, Dir::In, "S", None, false));
        assert!(passes(&mut p, Dir::Out, "S", None, false));
        let mut p = path(&["drop out"]);
        assert!(passes(&mut p, Dir::In, "S", None, false));
        assert!(!passes(&mut p, Dir::Out, "S", None, false));
        let mut p = path(&["drop"]);
        assert!(!passes(&mut p, Dir::In, "S", None, false));
        assert!(!passes(&mut p, Dir::Out, "S", None, false));
    }

    #[test]
    fn test_match_kinds() {
        let cases: [(&str, &[&str]); 7] = [
            ("syn", &["S"]),
            ("synack", &["S."]),
            ("fin", &["F.", "F"]),
            ("rst", &["R", "R."]),
            ("ack", &["."]),
            ("data", &["P.", "P"]),
            ("any", &["S", "S.", "F.", "R", ".", "P."]),
        ];
        let all = ["S", "S.", "F.", "F", "R", "R.", ".", "P.", "P"];
        for (kind, hits) in cases {
            let mut p = path(&[&format!("drop {kind}")]);
            for flags in all {
                let dropped = !passes(&mut p, Dir::In, flags, None, false);
                assert_eq!(dropped, hits.contains(&flags) || kind == "any", "drop {kind} on {flags}");
            }
        }
        // Kinds combine with "or".
        let mut p = path(&["drop syn rst"]);
        assert!(!passes(&mut p, Dir::In, "S", None, false));
        assert!(!passes(&mut p, Dir::In, "R", None, false));
        assert!(passes(&mut p, Dir::In, ".", None, false));
        // A FIN carrying data is both fin and data; a FIN-ACK is not a pure ACK.
        let mut p = path(&["drop ack"]);
        assert!(passes(&mut p, Dir::In, "F.", None, false));
    }

    #[test]
    fn test_match_after_fin() {
        let mut p = path(&["drop after-fin"]);
        assert!(passes(&mut p, Dir::In, ".", Some(1), false));
        assert!(!passes(&mut p, Dir::In, ".", Some(1), true));
    }

    #[test]
    fn test_match_conn() {
        let mut p = path(&["drop conn=2"]);
        assert!(passes(&mut p, Dir::In, ".", Some(1), false));
        assert!(passes(&mut p, Dir::In, ".", None, false));
        assert!(!passes(&mut p, Dir::In, ".", Some(2), false));
    }

    #[test]
    fn test_occurrence_counts_per_rule_across_connections() {
        let mut p = path(&["drop out ack 2nd"]);
        assert!(passes(&mut p, Dir::Out, ".", Some(1), false));
        assert!(passes(&mut p, Dir::Out, "S", Some(2), false)); // not a match: not counted
        assert!(!passes(&mut p, Dir::Out, ".", Some(2), false)); // the 2nd match, another conn
        assert!(passes(&mut p, Dir::Out, ".", Some(1), false));
        assert!(passes(&mut p, Dir::Out, ".", Some(2), false));
        // With conn= the count is that connection's.
        let mut p = path(&["drop out ack conn=2 2nd"]);
        assert!(passes(&mut p, Dir::Out, ".", Some(1), false));
        assert!(passes(&mut p, Dir::Out, ".", Some(1), false));
        assert!(passes(&mut p, Dir::Out, ".", Some(2), false));
        assert!(!passes(&mut p, Dir::Out, ".", Some(2), false));
        assert!(passes(&mut p, Dir::Out, ".", Some(2), false));
    }

    #[test]
    fn test_drop_first_pure_ack_after_fin() {
        // Lose closelab's last ACK: the peer's FIN is retransmitted.
        let mut p = path(&["drop out ack after-fin 1st"]);
        assert!(passes(&mut p, Dir::Out, ".", Some(1), false)); // ACK before any FIN
        assert!(passes(&mut p, Dir::Out, "F.", Some(1), false)); // our FIN
        assert!(passes(&mut p, Dir::In, ".", Some(1), true)); // wrong direction
        assert!(passes(&mut p, Dir::In, "F.", Some(1), true)); // peer's FIN
        let (released, applied) = send(&mut p, t(5), Dir::Out, ".", 99, Some(1), true);
        assert!(released.is_empty());
        assert_eq!(
            applied,
            vec![Applied { action: FaultAction::Dropped, rule: 1, dir: Dir::Out, detail: String::new() }]
        );
        assert!(passes(&mut p, Dir::Out, ".", Some(1), true)); // the re-ACK gets through
    }

    #[test]
    fn test_first_matching_rule_acts_others_still_count() {
        let mut p = path(&["delay 100ms out ack 1st", "drop out ack 2nd", "dup out"]);
        let (r, a) = send(&mut p, t(0), Dir::Out, ".", 1, None, false);
        assert!(r.is_empty());
        assert_eq!((a.len(), a[0].action, a[0].rule), (1, FaultAction::Delayed, 1));
        // Rule 2 counted the first ACK although rule 1 acted on it.
        let (r, a) = send(&mut p, t(0), Dir::Out, ".", 2, None, false);
        assert!(r.is_empty());
        assert_eq!((a.len(), a[0].action, a[0].rule), (1, FaultAction::Dropped, 2));
        let (r, a) = send(&mut p, t(0), Dir::Out, ".", 3, None, false);
        assert_eq!(r, vec![(Dir::Out, 3), (Dir::Out, 3)]);
        assert_eq!((a.len(), a[0].action, a[0].rule), (1, FaultAction::Duplicated, 3));
        assert_eq!(a[0].detail, "copy sent right after");
    }

    // Tests for delay, duplicate and reorder on a virtual clock.

    #[test]
    fn test_delay_release_times() {
        let mut p = path(&["delay 300ms in fin", "delay 100ms in data"]);
        let (r, a) = send(&mut p, t(0), Dir::In, "F.", 1, None, false);
        assert!(r.is_empty());
        assert_eq!(a[0].detail, "300ms");
        assert_eq!(p.poll_at(), Some(t(300)));
        let (r, _) = send(&mut p, t(50), Dir::In, "P.", 2, None, false);
        assert!(r.is_empty());
        assert_eq!(p.poll_at(), Some(t(150)));
        // Same due time as the FIN (200 + 100): order of arrival is kept.
        let (r, _) = send(&mut p, t(200), Dir::In, "P.", 3, None, false);
        assert!(r.is_empty());
        // Unmatched segments are not held back.
        let (r, _) = send(&mut p, t(200), Dir::Out, ".", 4, None, false);
        assert_eq!(r, vec![(Dir::Out, 4)]);

        let mut release = Vec::new();
        p.poll(t(149), &mut release);
        assert!(release.is_empty());
        p.poll(t(150), &mut release);
        assert_eq!(ids(&release), vec![(Dir::In, 2)]);
        release.clear();
        assert_eq!(p.poll_at(), Some(t(300)));
        p.poll(t(299), &mut release);
        assert!(release.is_empty());
        p.poll(t(1000), &mut release);
        assert_eq!(ids(&release), vec![(Dir::In, 1), (Dir::In, 3)]);
        assert_eq!(p.poll_at(), None);
    }

    #[test]
    fn test_dup_copy_right_after_original() {
        let mut p = path(&["dup out fin"]);
        let (r, a) = send(&mut p, t(0), Dir::Out, "F.", 5, None, false);
        assert_eq!(r, vec![(Dir::Out, 5), (Dir::Out, 5)]);
        assert_eq!(a[0].action, FaultAction::Duplicated);
        let (r, a) = send(&mut p, t(0), Dir::Out, ".", 6, None, false);
        assert_eq!(r, vec![(Dir::Out, 6)]);
        assert!(a.is_empty());
    }

    #[test]
    fn test_reorder_after_n_later_segments() {
        let mut p = path(&["reorder 2 out data 1st"]);
        let (r, a) = send(&mut p, t(0), Dir::Out, "P.", 1, None, false);
        assert!(r.is_empty());
        assert_eq!(a[0].action, FaultAction::Reordered);
        assert_eq!(a[0].detail, "held until 2 later segments passed");
        assert_eq!(p.poll_at(), Some(t(1000)));
        // Other direction does not count.
        let (r, _) = send(&mut p, t(1), Dir::In, ".", 100, None, false);
        assert_eq!(r, vec![(Dir::In, 100)]);
        let (r, _) = send(&mut p, t(2), Dir::Out, "P.", 2, None, false);
        assert_eq!(r, vec![(Dir::Out, 2)]);
        let (r, _) = send(&mut p, t(3), Dir::Out, "P.", 3, None, false);
        assert_eq!(r, vec![(Dir::Out, 3), (Dir::Out, 1)]);
        assert_eq!(p.poll_at(), None);
    }

    #[test]
    fn test_reorder_released_after_one_second() {
        let mut p = path(&["reorder 3 in"]);
        let (r, _) = send(&mut p, t(0), Dir::In, "F.", 1, None, false);
        assert!(r.is_empty());
        let mut release = Vec::new();
        p.poll(t(999), &mut release);
        assert!(release.is_empty());
        p.poll(t(1000), &mut release);
        assert_eq!(ids(&release), vec![(Dir::In, 1)]);
        assert!(p.held.is_empty());
    }

    #[test]
    fn test_delayed_release_counts_for_reorder() {
        let mut p = path(&["reorder 1 out 1st", "delay 10ms out"]);
        let (r, _) = send(&mut p, t(0), Dir::Out, ".", 1, None, false);
        assert!(r.is_empty());
        let (r, _) = send(&mut p, t(0), Dir::Out, ".", 2, None, false);
        assert!(r.is_empty());
        let mut release = Vec::new();
        p.poll(t(10), &mut release);
        assert_eq!(ids(&release), vec![(Dir::Out, 2), (Dir::Out, 1)]);
    }

    #[test]
    fn test_flush_releases_everything() {
        let mut p = path(&["reorder 5 in 1st", "delay 1s out", "delay 2s in"]);
        send(&mut p, t(0), Dir::In, ".", 1, None, false);
        send(&mut p, t(0), Dir::In, ".", 2, None, false);
        send(&mut p, t(0), Dir::Out, ".", 3, None, false);
        let mut release = Vec::new();
        p.flush(&mut release);
        assert_eq!(ids(&release), vec![(Dir::Out, 3), (Dir::In, 2), (Dir::In, 1)]);
        assert_eq!(p.poll_at(), None);
    }

    // Tests for random loss.

    fn drops(p: &mut FaultPath, n: u32) -> Vec<u32> {
        (0..n).filter(|_| !passes(p, Dir::In, ".", None, false)).collect()
    }

    #[test]
    fn test_random_drop_reproducible() {
        let rules = || vec![rule("drop 5%")];
        let a = drops(&mut FaultPath::new(rules(), 42), 10_000);
        let b = drops(&mut FaultPath::new(rules(), 42), 10_000);
        let c = drops(&mut FaultPath::new(rules(), 43), 10_000);
        assert_eq!(a, b);
        assert_ne!(a, c);
        // Binomial(10000, 0.05): mean 500, sd ~22; 5 sd either way.
        assert!((390..=610).contains(&a.len()), "{} drops", a.len());
        assert!((390..=610).contains(&c.len()), "{} drops", c.len());
        // Seed 0 is an ordinary seed.
        let z = drops(&mut FaultPath::new(rules(), 0), 10_000);
        assert!((390..=610).contains(&z.len()), "{} drops", z.len());
        // 0% and 100% are exact.
        assert!(drops(&mut FaultPath::new(vec![rule("drop 0%")], 1), 1000).is_empty());
        assert_eq!(drops(&mut FaultPath::new(vec![rule("drop 100%")], 1), 1000).len(), 1000);
    }

    #[test]
    fn test_seed_word_overrides_path_seed() {
        let a = drops(&mut FaultPath::new(vec![rule("drop 30% seed=5")], 1), 500);
        let b = drops(&mut FaultPath::new(vec![rule("drop 30% seed=5")], 2), 500);
        assert_eq!(a, b);
        // …and the stream does not depend on the rule's position.
        let c = drops(&mut FaultPath::new(vec![rule("drop out"), rule("drop 30% seed=5")], 2), 500);
        assert_eq!(a, c);
        let d = drops(&mut FaultPath::new(vec![rule("drop 30%")], 1), 500);
        assert_ne!(a, d);
    }

    #[test]
    fn test_random_dup() {
        let mut p = FaultPath::new(vec![rule("dup 50%")], 3);
        let mut copies = 0;
        for i in 0..1000 {
            let (r, a) = send(&mut p, t(0), Dir::Out, ".", i, None, false);
            assert_eq!(r.len(), 1 + a.len());
            copies += a.len();
        }
        assert!((400..=600).contains(&copies), "{copies}");
    }

    // Tests for pass-through and slow motion.

    #[test]
    fn test_malformed_passes_untouched() {
        let mut p = path(&["drop", "delay 1s"]);
        let junk = vec![0x45, 0, 0];
        let (mut release, mut applied) = (Vec::new(), Vec::new());
        p.push(t(0), Dir::In, junk.clone(), None, Some(1), true, &mut release, &mut applied);
        assert_eq!(release, vec![(Dir::In, junk)]);
        assert!(applied.is_empty());
    }

    #[test]
    fn test_empty_path() {
        let mut p = FaultPath::new(Vec::new(), 0);
        assert!(p.is_empty());
        assert!(!path(&["drop"]).is_empty());
        assert_eq!(send(&mut p, t(0), Dir::In, "S", 1, None, false).0, vec![(Dir::In, 1)]);
        assert_eq!(p.poll_at(), None);
    }

    #[test]
    fn test_slow_is_silent_and_adds_to_acting_rule() {
        let slow = FaultRule::slow(Duration::from_millis(50));
        let mut p = FaultPath::new(vec![rule("delay 100ms in fin"), rule("dup out"), rule("drop in rst"), slow], 1);
        // Slowed only: nothing reported.
        let (r, a) = send(&mut p, t(0), Dir::In, ".", 1, None, false);
        assert!(r.is_empty() && a.is_empty());
        // Delay adds to slow motion.
        let (r, a) = send(&mut p, t(0), Dir::In, "F.", 2, None, false);
        assert!(r.is_empty());
        assert_eq!((a.len(), a[0].rule, a[0].detail.as_str()), (1, 1, "100ms"));
        // Duplicates are slowed too, and stay together.
        let (r, _) = send(&mut p, t(10), Dir::Out, ".", 3, None, false);
        assert!(r.is_empty());
        // Drops stay drops.
        let (r, a) = send(&mut p, t(10), Dir::In, "R", 4, None, false);
        assert!(r.is_empty());
        assert_eq!(a[0].action, FaultAction::Dropped);
        assert_eq!(p.poll_at(), Some(t(50)));
        let mut release = Vec::new();
        p.poll(t(60), &mut release);
        assert_eq!(ids(&release), vec![(Dir::In, 1), (Dir::Out, 3), (Dir::Out, 3)]);
        release.clear();
        p.poll(t(150), &mut release);
        assert_eq!(ids(&release), vec![(Dir::In, 2)]);
    }
}
