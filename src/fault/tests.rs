//! Tests of the rule grammar and the packet path.
use super::*;
use crate::wire::{self, Flags};
use smoltcp::time::Instant;

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
        "invalid fault rule `delay 300`: bad duration `300` (expected a number with us, ms, s, m or h, at most 24h, e.g. `300ms`)"
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
    assert_eq!(err("drop conn 2 conn=3"), "invalid fault rule `drop conn 2 conn=3`: `conn=3` conflicts with `conn 2`");
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
    assert_eq!(applied, vec![Applied { action: FaultAction::Dropped, rule: 1, dir: Dir::Out, detail: String::new() }]);
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
