//! The rule parser: words to a [`FaultRule`], each mistake a [`RuleError`]
//! naming the word.

use std::fmt;

use smoltcp::time::Duration;

use super::*;

/// Most segments a `reorder N` may wait for: every held packet is memory.
pub const MAX_REORDER: u32 = 1000;

pub(super) const EXPECTED_ACTION: &str = "expected drop, delay DURATION, dup or reorder N";
pub(super) const EXPECTED_WORD: &str = "expected in, out, syn, synack, fin, rst, ack, data, any, after-fin, \
                             conn=N, 1st, 2nd, Nth, nth=N, every, P% or seed=N";

pub(super) struct Parser<'a> {
    pub(super) rule: &'a str,
}

impl<'a> Parser<'a> {
    pub(super) fn err(&self, word: &str, reason: String) -> RuleError {
        RuleError { rule: self.rule.to_string(), word: word.to_string(), reason }
    }

    /// `key=value` or `key value` exactly as the user wrote it (whatever
    /// whitespace was between), for messages that quote it: from the start
    /// of `key_word` to the end of `value`, both slices of the rule.
    pub(super) fn written(&self, key_word: &str, value: &str) -> String {
        let base = self.rule.as_ptr() as usize;
        let start = key_word.as_ptr() as usize - base;
        let end = value.as_ptr() as usize - base + value.len();
        self.rule.get(start..end).unwrap_or(key_word).to_string()
    }

    pub(super) fn parse(&self) -> Result<FaultRule, RuleError> {
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
                    self.err(
                        v,
                        format!(
                            "bad duration `{v}` (expected a number with us, ms, s, m or h, at most 24h, e.g. `300ms`)"
                        ),
                    )
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

pub(super) fn split_kv(word: &str) -> (&str, Option<&str>) {
    match word.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => (word, None),
    }
}

pub(super) fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// A plain decimal: digits with at most one point (no sign, exponent, inf).
pub(super) fn parse_number(s: &str) -> Option<f64> {
    let ok = s.bytes().any(|b| b.is_ascii_digit())
        && s.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && s.bytes().filter(|b| *b == b'.').count() <= 1;
    if ok { s.parse().ok() } else { None }
}

/// The same grammar as `--slow` and every other duration closelab reads
/// ([`crate::config::parse_duration`]: us, ms, s, m, h, decimals); a
/// delay is at most a day, already far beyond any lab.
pub(super) fn parse_duration(s: &str) -> Option<Duration> {
    let d = crate::config::parse_duration(s).ok()?;
    (d <= Duration::from_secs(86_400)).then_some(d)
}

/// `1st`, `2nd`, `3rd`, `4th`, `11th`, `21st` …; the suffix must be right.
pub(super) fn parse_ordinal(word: &str) -> Result<u64, String> {
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

pub(super) fn ordinal(n: u64) -> String {
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
pub(super) struct DurationText(pub(super) Duration);

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
