//! Fault tests (issue 4): two closelab endpoints over the in-memory link with
//! a virtual clock, faults from `EndpointConfig.faults`, exact state
//! sequences with their causes.
//!
//! Line numbers cited below are in
//! `~/.cargo/registry/src/*/smoltcp-0.14.0/src/socket/tcp.rs`.

use super::link::{End, Link};
use super::tests::{CLOSE, CONNECT, PORT, SEG, TIMER, ms, states, t0};
use super::*;
use crate::event::{AppAction, Event, EventKind, FaultAction, TcpState};
use crate::fault::FaultRule;

use TcpState::*;

/// One-way latency of the link.
const LATENCY_MS: u64 = 10;

/// A sink endpoint (A is 10.0.0.1, the client; B is 10.0.0.2, the server)
/// with a close policy and fault rules.
fn cfg(addr: &str, close: ClosePolicy, close_after: Option<Duration>, faults: &[&str]) -> EndpointConfig {
    let mut c = EndpointConfig::new(crate::config::parse_cidr(addr).unwrap());
    c.app = AppKind::Sink;
    c.policy = Policy { close, close_after, rst_on_unread: false };
    c.seed = 7;
    c.faults = faults.iter().map(|r| FaultRule::parse(r).unwrap()).collect();
    c
}

/// B listens; A connects sending `send` bytes. Returns the link and A's
/// connection number (B's is 1 as well: the first connection of each end).
fn bench(server: EndpointConfig, client: EndpointConfig, send: usize) -> (Link, ConnId) {
    let mut b = Endpoint::new(server, t0()).expect("endpoint config fits smoltcp");
    b.listen(PORT);
    let a = Endpoint::new(client, t0()).expect("endpoint config fits smoltcp");
    let mut link = Link::new(a, b, t0(), ms(LATENCY_MS));
    let c = link.a.connect(t0(), "10.0.0.2:7000".parse().unwrap(), send).unwrap();
    (link, c)
}

/// When `conn` entered `to` (first time); the test fails if it never did.
#[track_caller]
fn time_of(events: &[Event], conn: ConnId, to: TcpState) -> f64 {
    super::tests::time_of(events, conn, to).unwrap_or_else(|| panic!("conn {conn} never reached {to}"))
}

/// Times of the segments of `conn` seen by one end in direction `dir` that
/// satisfy `pred` (incoming: as handed to smoltcp, after the fault path;
/// outgoing: as put on the wire, after the fault path).
fn seg_times(events: &[Event], conn: ConnId, dir: Dir, pred: impl Fn(&crate::wire::Segment) -> bool) -> Vec<f64> {
    events
        .iter()
        .filter(|e| e.conn == Some(conn))
        .filter_map(|e| match &e.kind {
            EventKind::Segment { dir: d, seg } if *d == dir && pred(seg) => Some(e.t),
            _ => None,
        })
        .collect()
}

/// Fault events of one end: (time, action, direction, segment is a FIN,
/// segment is a pure ACK).
fn faults(events: &[Event]) -> Vec<(f64, FaultAction, Dir, bool, bool)> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Fault { action, dir, seg: Some(seg), .. } => {
                Some((e.t, *action, *dir, seg.flags.fin, seg.is_pure_ack()))
            }
            _ => None,
        })
        .collect()
}

/// Segments one end put on the wire that satisfy `pred`, with their time
/// since the start.
fn on_wire(link: &Link, from: End, pred: impl Fn(&crate::wire::Segment) -> bool) -> Vec<f64> {
    link.wire
        .iter()
        .filter(|(_, e, _)| *e == from)
        .filter_map(|(t, _, p)| {
            let seg = crate::wire::parse(p).unwrap();
            pred(&seg).then(|| (*t - t0()).total_micros() as f64 / 1e6)
        })
        .collect()
}

/// Rounds to the microsecond clock the events come from (event times are
/// f64 seconds).
fn us(t: f64) -> i64 {
    (t * 1e6).round() as i64
}

/// Bytes the application read, from its `app recv` events.
fn recv_bytes(events: &[Event]) -> usize {
    events
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::App { action: AppAction::Recv(n) } => Some(n),
            _ => None,
        })
        .sum()
}

fn is_fin(s: &crate::wire::Segment) -> bool {
    s.flags.fin
}

fn is_pure_ack(s: &crate::wire::Segment) -> bool {
    s.is_pure_ack()
}

// 1. A lost FIN.

#[test]
fn test_lost_fin_is_retransmitted_after_the_rto() {
    // A closes 100 ms after ESTABLISHED (t = 120 ms) and loses that FIN.
    let server = cfg("10.0.0.2/24", ClosePolicy::Passive, Some(ms(100)), &[]);
    let client = cfg("10.0.0.1/24", ClosePolicy::Active, Some(ms(100)), &["drop out fin 1st"]);
    let (mut link, c) = bench(server, client, 0);
    link.run_for(Duration::from_secs(70));
    let ev_a = link.a.take_events();
    let ev_b = link.b.take_events();

    // The close sequence completes in spite of the loss.
    assert_eq!(
        states(&ev_a, c),
        vec![
            (Closed, SynSent, CONNECT),
            (SynSent, Established, SEG),
            (Established, FinWait1, CLOSE),
            (FinWait1, FinWait2, SEG),
            (FinWait2, TimeWait, SEG),
            (TimeWait, Closed, TIMER),
        ]
    );
    assert_eq!(
        states(&ev_b, 1),
        vec![
            (Listen, SynReceived, SEG),
            (SynReceived, Established, SEG),
            (Established, CloseWait, SEG),
            (CloseWait, LastAck, CLOSE),
            (LastAck, Closed, SEG),
        ]
    );

    // smoltcp sent two FINs: the first was dropped by rule 1 (a fault event,
    // never on the wire), the second is the only FIN from A on the wire.
    let dropped: Vec<_> = ev_a
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Fault { action, dir, seg: Some(seg), rule, detail } => {
                Some((e.t, *action, *dir, seg.flags.fin, *rule, detail.clone()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(dropped.len(), 1, "{dropped:?}");
    let (t_drop, action, dir, fin, rule, detail) = dropped[0].clone();
    assert_eq!((action, dir, fin, rule, detail.as_str()), (FaultAction::Dropped, Dir::Out, true, 1, ""));
    assert_eq!(us(t_drop), us(time_of(&ev_a, c, FinWait1)), "the FIN is sent by close()");
    let fins_on_wire = on_wire(&link, End::A, is_fin);
    assert_eq!(fins_on_wire.len(), 1, "{fins_on_wire:?}");
    assert_eq!(seg_times(&ev_a, c, Dir::Out, is_fin), fins_on_wire);
    let fins_sent = dropped.len() + fins_on_wire.len();
    assert_eq!(fins_sent, 2);

    // The retransmission comes one RTO later. The handshake measured an RTT
    // of 20 ms, so RFC 6298 gives srtt + 4 * rttvar = 20 + 40 = 60 ms, which
    // smoltcp clamps up to RTTE_MIN_RTO = 1000 ms (tcp.rs:155, :217).
    assert_eq!(us(fins_on_wire[0] - t_drop), 1_000_000, "RTO");
    // B only learns of the close then.
    assert_eq!(us(time_of(&ev_b, 1, CloseWait) - fins_on_wire[0]), us(0.010));
    // TIME-WAIT: closelab's table, Linux's 60 s (smoltcp's own would be its
    // fixed 10 s, CLOSE_DELAY, tcp.rs:301).
    assert_eq!(us(time_of(&ev_a, c, Closed) - time_of(&ev_a, c, TimeWait)), 60_000_000);
    assert!(link.a.is_empty() && link.b.is_empty());
    assert_eq!((link.a.finished(), link.b.finished()), (1, 1));
}

// 2. A lost final ACK.

#[test]
fn test_lost_final_ack_fin_is_retransmitted_and_re_acked_from_time_wait() {
    // A closes first (t = 120 ms); B closes 100 ms after A's FIN and A loses
    // its ACK of B's FIN (the first pure ACK it sends after a FIN was seen).
    let server = cfg("10.0.0.2/24", ClosePolicy::Passive, Some(ms(100)), &[]);
    let client = cfg("10.0.0.1/24", ClosePolicy::Active, Some(ms(100)), &["drop out ack after-fin 1st"]);
    let (mut link, c) = bench(server, client, 0);
    link.run_for(Duration::from_secs(70));
    let ev_a = link.a.take_events();
    let ev_b = link.b.take_events();

    assert_eq!(
        states(&ev_a, c)[2..],
        [
            (Established, FinWait1, CLOSE),
            (FinWait1, FinWait2, SEG),
            (FinWait2, TimeWait, SEG),
            (TimeWait, Closed, TIMER),
        ]
    );
    assert_eq!(
        states(&ev_b, 1)[2..],
        [(Established, CloseWait, SEG), (CloseWait, LastAck, CLOSE), (LastAck, Closed, SEG)]
    );

    let tw = time_of(&ev_a, c, TimeWait);
    // The lost ACK: dropped by A at the moment it entered TIME-WAIT.
    assert_eq!(
        faults(&ev_a).iter().map(|f| (us(f.0), f.1, f.2, f.3, f.4)).collect::<Vec<_>>(),
        vec![(us(tw), FaultAction::Dropped, Dir::Out, false, true)]
    );

    // B, in LAST-ACK, retransmits its FIN after one RTO: two FINs from B on
    // the wire, 1 s apart.
    let b_fins = on_wire(&link, End::B, is_fin);
    assert_eq!(b_fins.len(), 2, "{b_fins:?}");
    assert_eq!(us(b_fins[1] - b_fins[0]), 1_000_000);
    assert_eq!(us(b_fins[0]), us(time_of(&ev_b, 1, LastAck)));

    // A (TIME-WAIT) receives the retransmission and re-ACKs it at once: the
    // only ACK from A on the wire after its FIN.
    let a_fin_in = seg_times(&ev_a, c, Dir::In, is_fin);
    assert_eq!(a_fin_in.len(), 2);
    assert_eq!(us(a_fin_in[0]), us(tw));
    let retransmitted_fin_at_a = a_fin_in[1];
    assert_eq!(us(retransmitted_fin_at_a), us(b_fins[1] + 0.010));
    let fin_wait_1 = time_of(&ev_a, c, FinWait1);
    let a_acks: Vec<f64> = on_wire(&link, End::A, is_pure_ack).into_iter().filter(|t| *t > fin_wait_1).collect();
    assert_eq!(a_acks.iter().map(|t| us(*t)).collect::<Vec<_>>(), vec![us(retransmitted_fin_at_a)]);

    // B reaches CLOSED through that re-ACK: the segment processed just
    // before B's LAST-ACK → CLOSED is a pure ACK that arrived one latency
    // after the re-ACK was sent.
    let closed_at = ev_b
        .iter()
        .position(|e| matches!(e.kind, EventKind::State { from: LastAck, to: Closed, .. }))
        .expect("B closed");
    let cause_seg = ev_b[..closed_at]
        .iter()
        .rev()
        .find_map(|e| match &e.kind {
            EventKind::Segment { dir: Dir::In, seg } if e.conn == Some(1) => Some((e.t, seg.clone())),
            _ => None,
        })
        .unwrap();
    assert!(cause_seg.1.is_pure_ack(), "{cause_seg:?}");
    assert_eq!(us(cause_seg.0), us(a_acks[0] + 0.010));
    assert_eq!(us(ev_b[closed_at].t), us(cause_seg.0));

    // TIME-WAIT restarts on the retransmitted FIN (Linux's
    // tcp_timewait_state_process, which closelab's table follows): it ends
    // 60 s after that FIN, not 60 s after A entered TIME-WAIT. (smoltcp's
    // own TIME-WAIT restarts too, on its 10 s: for it the duplicate FIN is
    // a "keep-alive or window probe", tcp.rs:1725, and it calls
    // `set_for_close` before a rate-limited challenge ACK, tcp.rs:1797.)
    let closed = time_of(&ev_a, c, Closed);
    assert_eq!(us(closed - retransmitted_fin_at_a), 60_000_000);
    assert_eq!(us(closed - tw), 61_000_000, "TIME-WAIT was restarted, so it lasted 61 s in all");
    assert!(link.a.is_empty() && link.b.is_empty());
}

// 3. Simultaneous close made by faults.

/// A closes at 100 ms (80 ms after its ESTABLISHED at 20 ms), B at 140 ms
/// (110 ms after its ESTABLISHED at 30 ms): 40 ms apart, more than the 10 ms
/// one-way latency.
fn simultaneous(fa: &[&str], fb: &[&str]) -> (Vec<Event>, Vec<Event>, ConnId) {
    let server = cfg("10.0.0.2/24", ClosePolicy::Active, Some(ms(110)), fb);
    let client = cfg("10.0.0.1/24", ClosePolicy::Active, Some(ms(80)), fa);
    let (mut link, c) = bench(server, client, 0);
    link.run_for(Duration::from_secs(70));
    assert!(link.a.is_empty() && link.b.is_empty());
    let ev_a = link.a.take_events();
    let ev_b = link.b.take_events();
    assert_eq!(us(time_of(&ev_a, c, FinWait1)), us(0.100));
    (ev_a, ev_b, c)
}

#[test]
fn test_simultaneous_close_made_by_delaying_fins() {
    // Without faults the closes do not overlap: A's FIN reaches B at 110 ms,
    // 30 ms before B would close, so B is a passive closer.
    let (ev_a, ev_b, c) = simultaneous(&[], &[]);
    assert_eq!(
        states(&ev_a, c)[2..],
        [
            (Established, FinWait1, CLOSE),
            (FinWait1, FinWait2, SEG),
            (FinWait2, TimeWait, SEG),
            (TimeWait, Closed, TIMER)
        ]
    );
    assert_eq!(
        states(&ev_b, 1)[2..],
        [(Established, CloseWait, SEG), (CloseWait, LastAck, CLOSE), (LastAck, Closed, SEG)]
    );

    // With faults: each end holds its own FINs so that both are put on the
    // wire at 150 ms (A's 50 ms after its close, B's 10 ms after). Each end
    // then receives the other's FIN in FIN-WAIT-1, before any ACK of its own
    // FIN: CLOSING on both sides. The same delay on both ends could not do
    // this: shifting both FINs by the same amount leaves the gap between
    // them (40 ms here) as it was, and FINs cross only when that gap is
    // below the one-way latency.
    let (ev_a, ev_b, c) = simultaneous(&["delay 50ms out fin"], &["delay 10ms out fin"]);
    let expected =
        [(Established, FinWait1, CLOSE), (FinWait1, Closing, SEG), (Closing, TimeWait, SEG), (TimeWait, Closed, TIMER)];
    assert_eq!(states(&ev_a, c)[2..], expected);
    assert_eq!(states(&ev_b, 1)[2..], expected);
    // The delays acted (one FIN each, no retransmission needed).
    for (ev, conn, close_at) in [(&ev_a, c, 0.100), (&ev_b, 1, 0.140)] {
        assert_eq!(
            faults(ev).iter().map(|f| (us(f.0), f.1, f.2, f.3)).collect::<Vec<_>>(),
            vec![(us(close_at), FaultAction::Delayed, Dir::Out, true)]
        );
        assert_eq!(seg_times(ev, conn, Dir::Out, is_fin).iter().map(|t| us(*t)).collect::<Vec<_>>(), vec![us(0.150)]);
        assert_eq!(us(time_of(ev, conn, Closing)), us(0.160));
        assert_eq!(us(time_of(ev, conn, TimeWait)), us(0.170));
    }
}

// 4. The challenge-ACK limiter on retransmitted FINs in TIME-WAIT.

#[test]
fn test_smoltcp_time_wait_re_acks_retransmitted_fins_at_most_once_per_second() {
    // B (LAST-ACK side) never hears an ACK of its FIN (`drop in ack
    // after-fin`), so it retransmits the FIN with exponential backoff, and
    // sends every FIN twice (`dup out fin`). A (TIME-WAIT side) delays each
    // second copy by 500 ms, so FINs reach A every 0.5 s or so.
    let server = cfg("10.0.0.2/24", ClosePolicy::Passive, Some(ms(100)), &["drop in ack after-fin", "dup out fin"]);
    let a_rules = [
        "delay 500ms in fin 2nd",
        "delay 500ms in fin 4th",
        "delay 500ms in fin 6th",
        "delay 500ms in fin 8th",
        "delay 500ms in fin 10th",
    ];
    // smoltcp's own TIME-WAIT (closelab's table re-ACKs every FIN, as Linux).
    let client = super::tests::smoltcp_tw(cfg("10.0.0.1/24", ClosePolicy::Active, Some(ms(100)), &a_rules));
    let (mut link, c) = bench(server, client, 0);
    link.run_for(Duration::from_secs(120));
    let ev_a = link.a.take_events();
    let ev_b = link.b.take_events();

    assert_eq!(
        states(&ev_a, c)[2..],
        [
            (Established, FinWait1, CLOSE),
            (FinWait1, FinWait2, SEG),
            (FinWait2, TimeWait, SEG),
            (TimeWait, Closed, TIMER),
        ]
    );
    let tw = time_of(&ev_a, c, TimeWait);
    let rel = |v: Vec<f64>| v.into_iter().map(|t| us(t - tw)).collect::<Vec<_>>();

    // B's FIN went out at LAST-ACK and was retransmitted after 1, 2, 4, 8
    // and 16 s (RTO backoff), each time twice.
    let b_fins = on_wire(&link, End::B, is_fin);
    let la = time_of(&ev_b, 1, LastAck);
    let expected_b: Vec<i64> = [0.0, 1.0, 3.0, 7.0, 15.0, 31.0].iter().flat_map(|s| [us(*s), us(*s)]).collect();
    assert_eq!(b_fins.iter().map(|t| us(t - la)).collect::<Vec<_>>(), expected_b);

    // FINs that reached A's socket while it was in TIME-WAIT (the first FIN,
    // at TIME-WAIT entry, excluded), relative to TIME-WAIT entry.
    let fins: Vec<f64> = seg_times(&ev_a, c, Dir::In, is_fin).into_iter().filter(|t| us(*t) > us(tw)).collect();
    assert_eq!(rel(fins.clone()), [0.5, 1.0, 1.5, 3.0, 3.5, 7.0, 7.5, 15.0, 15.5].map(us).to_vec());
    // A's ACKs: the one for the first FIN at TIME-WAIT entry (the normal
    // in-window ACK, not rate-limited) and then re-ACKs.
    let acks: Vec<f64> = seg_times(&ev_a, c, Dir::Out, is_pure_ack).into_iter().filter(|t| us(*t) >= us(tw)).collect();
    assert_eq!(rel(acks.clone()), [0.0, 0.5, 1.5, 3.0, 7.0, 15.0].map(us).to_vec());
    let re_acks = &acks[1..];
    // 9 FINs, 5 re-ACKs: the FINs at 1.0, 3.5, 7.5 and 15.5 s came less than
    // 1 s after the previous re-ACK and got none (B's genuine first
    // retransmission at 1.0 s among them: the duplicate at 0.5 s had used
    // the budget). smoltcp answers such duplicate FINs through
    // `challenge_ack_reply` (tcp.rs:1830), which sends nothing while
    // `now < challenge_ack_timer` and otherwise sets the timer to now + 1 s
    // (tcp.rs:1539-1550). The FIN exemption above it (tcp.rs:1818-1828) only
    // covers segments with payload.
    assert_eq!(fins.len(), 9);
    assert_eq!(re_acks.len(), 5);
    for w in re_acks.windows(2) {
        assert!(us(w[1] - w[0]) >= 1_000_000, "re-ACKs {w:?} less than 1 s apart");
    }
    // At most one re-ACK in any 1 s window (each window starting at a re-ACK
    // is the worst case).
    for &start in re_acks {
        let n = re_acks.iter().filter(|t| us(**t) >= us(start) && us(**t) < us(start + 1.0)).count();
        assert_eq!(n, 1, "re-ACKs in [{start}, {start}+1s)");
    }
    // Every re-ACK answers a FIN that arrived at that instant, and every FIN
    // within 1 s of the previous re-ACK went unanswered.
    for &f in &fins {
        let answered = re_acks.iter().any(|a| us(*a) == us(f));
        let last = re_acks.iter().rfind(|a| us(**a) < us(f)).copied().unwrap_or(f64::NEG_INFINITY);
        assert_eq!(answered, us(f - last) >= 1_000_000, "FIN at {f}: answered={answered}, previous re-ACK at {last}");
    }
    // B dropped every one of them (rule 1): 6 ACKs in all.
    let b_drops = faults(&ev_b).into_iter().filter(|f| f.1 == FaultAction::Dropped).count();
    assert_eq!(b_drops, 6);

    // Every FIN restarted TIME-WAIT, answered or not (tcp.rs:1797-1798 runs
    // before the limiter): it ended 10 s after the last one (15.5 s).
    let closed = time_of(&ev_a, c, Closed);
    assert_eq!(us(closed - fins[fins.len() - 1]), 10_000_000);
    // B's next retransmission (31 s) finds no connection at A: RST (as for a
    // closed port), and B leaves LAST-ACK through it.
    let rst_out: Vec<f64> = ev_a
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Segment { dir: Dir::Out, seg } if seg.flags.rst && e.conn.is_none() => Some(e.t),
            _ => None,
        })
        .collect();
    assert_eq!(rel(rst_out), vec![us(31.0), us(31.0)]);
    assert_eq!(states(&ev_b, 1).last(), Some(&(LastAck, Closed, SEG)));
    assert_eq!(us(time_of(&ev_b, 1, Closed) - la), us(31.020));
    assert!(link.a.is_empty() && link.b.is_empty());
}

// 5. A bulk transfer under loss and reordering.

/// Bytes of the transfer: the 100 MiB. smoltcp is built with
/// opt-level 3 even in debug builds (Cargo.toml), which brings this test from
/// ~33 s to ~7 s under `cargo test`.
const BULK: usize = 100 << 20;

/// FNV-1a (64-bit) of the first `n` bytes of the `--send` pattern.
fn pattern_fnv1a(n: usize) -> u64 {
    (0..n).fold(0xcbf2_9ce4_8422_2325u64, |h, i| (h ^ u64::from(app::pattern_byte(i))).wrapping_mul(0x100_0000_01b3))
}

/// How a bulk transfer ended.
#[derive(Debug, PartialEq)]
enum BulkEnd {
    /// Both ends closed and forgot the connection.
    Closed,
    /// The smoltcp defect pinned in
    /// `test_smoltcp_fin_on_duplicate_data_then_dup_acks_hangs_fin_wait_1`:
    /// every byte arrived, but A sits in FIN-WAIT-1 with no timer facing
    /// B in ESTABLISHED, forever.
    HungFinWait1,
}

/// `bytes` from A to B with the faults of seed `seed`: every segment
/// crosses exactly one 5% drop (its sender's outgoing path), so the loss is
/// 5% in each direction; 5% of A's data segments and of B's ACKs are also
/// held back until 2 later segments have passed. Asserts the data arrived
/// byte for byte and the faults acted, then how the close went.
#[track_caller]
fn bulk(seed: u64, bytes: usize) -> BulkEnd {
    let fa = [format!("drop 5% seed={seed} out"), format!("reorder 2 5% seed={} out data", seed + 100)];
    let fb = [format!("drop 5% seed={} out", seed + 200), format!("reorder 2 5% seed={} out", seed + 300)];
    let fa: Vec<&str> = fa.iter().map(String::as_str).collect();
    let fb: Vec<&str> = fb.iter().map(String::as_str).collect();
    // A closes as soon as all its data is queued (its FIN follows the data);
    // B closes on A's FIN.
    let mut server = cfg("10.0.0.2/24", ClosePolicy::Passive, None, &fb);
    let mut client = cfg("10.0.0.1/24", ClosePolicy::Active, None, &fa);
    server.buffer = 64 * 1024;
    client.buffer = 64 * 1024;
    server.data_events = true;
    server.verify = true;
    let (mut link, _) = bench(server, client, bytes);

    let mut received = 0usize;
    let mut checksum = None;
    let (mut st_a, mut st_b) = (Vec::new(), Vec::new());
    let (mut drops, mut reorders) = (0usize, 0usize);
    let mut drain = |link: &mut Link, received: &mut usize| {
        for (ev, st) in [(link.a.take_events(), &mut st_a), (link.b.take_events(), &mut st_b)] {
            for e in ev {
                match e.kind {
                    EventKind::App { action: AppAction::Recv(n) } => *received += n,
                    EventKind::State { from, to, cause } => st.push((from, to, cause)),
                    EventKind::Fault { action: FaultAction::Dropped, .. } => drops += 1,
                    EventKind::Fault { action: FaultAction::Reordered, .. } => reorders += 1,
                    _ => {}
                }
            }
        }
        link.wire.clear();
    };
    // Virtual time is free; the bound only stops a runaway.
    let limit = t0() + Duration::from_secs(7 * 86400);
    let mut steps = 0u64;
    while link.step(limit) {
        // The connection leaves B's table once CLOSED: keep the last value.
        if let Some(sum) = link.b.app_checksum(1) {
            checksum = Some(sum);
        }
        steps += 1;
        if steps.is_multiple_of(256) {
            drain(&mut link, &mut received);
        }
    }
    drain(&mut link, &mut received);

    // Byte-identical: exactly `bytes` read by B's application, and the
    // FNV-1a of what it read equals that of the pattern A sent.
    assert_eq!(received, bytes, "seed {seed}");
    assert_eq!(checksum, Some(pattern_fnv1a(bytes)), "seed {seed}");
    // The faults really acted (about 5% each).
    let segments = bytes / 1460;
    assert!(
        drops > segments / 40 && reorders > segments / 80,
        "seed {seed}: drops={drops} reorders={reorders} of ~{segments}"
    );
    assert_eq!(st_a[..3], [(Closed, SynSent, CONNECT), (SynSent, Established, SEG), (Established, FinWait1, CLOSE)]);

    if link.a.is_empty() && link.b.is_empty() {
        assert_eq!((link.a.finished(), link.b.finished()), (1, 1));
        // Each end went through its close states (loss may add or skip
        // transient ones, e.g. FIN-WAIT-1 straight to TIME-WAIT when B's
        // FIN carries the ACK of A's FIN).
        assert_eq!(st_a.last().unwrap(), &(TimeWait, Closed, TIMER), "seed {seed}: {st_a:?}");
        assert!(st_a.iter().any(|s| s.1 == TimeWait), "seed {seed}: {st_a:?}");
        assert_eq!(st_b[2..4], [(Established, CloseWait, SEG), (CloseWait, LastAck, CLOSE)], "seed {seed}: {st_b:?}");
        assert_eq!(st_b.last().unwrap().1, Closed, "seed {seed}: {st_b:?}");
        return BulkEnd::Closed;
    }
    // Anything else stuck is a new bug, not the known one.
    let (a, b) = (link.a.connections(link.now()), link.b.connections(link.now()));
    assert_eq!(
        (
            a.iter().map(|c| (c.state, c.send_q, c.deadline)).collect::<Vec<_>>(),
            b.iter().map(|c| (c.state, c.recv_q, c.deadline)).collect::<Vec<_>>()
        ),
        (vec![(FinWait1, 0, None)], vec![(Established, 0, None)]),
        "seed {seed}: stuck, but not in the known smoltcp FIN-WAIT-1 hang: {a:?} {b:?}"
    );
    assert_eq!(st_a.len(), 3, "seed {seed}: A left FIN-WAIT-1: {st_a:?}");
    assert_eq!(st_b.last().unwrap().1, Established, "seed {seed}: {st_b:?}");
    BulkEnd::HungFinWait1
}

// 100 MiB under seeded 5% loss and reordering, for seeds 1 to 8 (~5 s each
// under `cargo test`, one test each so libtest spreads them over its
// threads). Every seed delivers every byte intact; seeds 1, 3, 4 and 8 then
// hit the smoltcp FIN-WAIT-1 hang pinned below, the others close cleanly.
// A seed that changes sides means smoltcp's or closelab's loss recovery
// changed: find out why before updating the expectation.
macro_rules! bulk_seeds {
    ($($test:ident => $seed:literal, $end:ident;)*) => {
        $(
            #[test]
            fn $test() {
                assert_eq!(bulk($seed, BULK), BulkEnd::$end, "seed {}", $seed);
            }
        )*
    };
}

bulk_seeds! {
    test_bulk_100mib_under_loss_seed_1_arrives_intact_then_hangs => 1, HungFinWait1;
    test_bulk_100mib_under_loss_seed_2_arrives_intact_and_closes => 2, Closed;
    test_bulk_100mib_under_loss_seed_3_arrives_intact_then_hangs => 3, HungFinWait1;
    test_bulk_100mib_under_loss_seed_4_arrives_intact_then_hangs => 4, HungFinWait1;
    test_bulk_100mib_under_loss_seed_5_arrives_intact_and_closes => 5, Closed;
    test_bulk_100mib_under_loss_seed_6_arrives_intact_and_closes => 6, Closed;
    test_bulk_100mib_under_loss_seed_7_arrives_intact_and_closes => 7, Closed;
    test_bulk_100mib_under_loss_seed_8_arrives_intact_then_hangs => 8, HungFinWait1;
}

// A smoltcp 0.14 defect found by the transfer above: pinned here.

#[test]
fn test_smoltcp_fin_on_duplicate_data_then_dup_acks_hangs_fin_wait_1() {
    // A sends 10 segments and closes at once, so the FIN rides on the 10th.
    // The 1st data segment is lost, and so is its fast retransmission (the
    // 11th data segment A sends).
    let server = cfg("10.0.0.2/24", ClosePolicy::Passive, None, &[]);
    let client = cfg("10.0.0.1/24", ClosePolicy::Active, None, &["drop out data 1st", "drop out data 11th"]);
    let (mut link, c) = bench(server, client, 10 * 1460);
    link.run_for(Duration::from_secs(3600));
    let ev_a = link.a.take_events();
    let ev_b = link.b.take_events();

    // 1. B receives segments 2-10 out of order; it keeps their data but
    //    drops the FIN on the 10th ("ignoring FIN because we don't have full
    //    data yet", tcp.rs:1867-1876), which is legitimate.
    // 2. A's RTO resends everything (go-back-N). Segment 1 fills the hole:
    //    B acknowledges all the data but not the FIN. The resent 10th segment
    //    (data already received + the FIN B still lacks) is then judged "not
    //    in window", because smoltcp's acceptability test ends a segment at
    //    `seq + payload.len()` (tcp.rs:1713), leaving out the FIN that RFC
    //    9293 counts in SEG.LEN; B only ACKs it, FIN ignored again.
    // 3. A gets those ACKs (all data acknowledged, FIN outstanding) as
    //    duplicate ACKs, and the third one arms fast retransmit
    //    (tcp.rs:2120). In dispatch the fast-retransmit timer is turned into
    //    the idle timer (tcp.rs:2509), but nothing is sent: fast retransmit
    //    needs data in the send buffer (tcp.rs:2301) and the FIN is not
    //    "unsent" (tcp.rs:2370). No timer is left: the FIN is never sent
    //    again.
    // Either fix alone would end the hang (a bare FIN from A's RTO would be
    // accepted by B). When this test fails, smoltcp (or closelab) has fixed
    // it: turn the assertions round.
    assert_eq!(
        states(&ev_a, c),
        vec![(Closed, SynSent, CONNECT), (SynSent, Established, SEG), (Established, FinWait1, CLOSE)]
    );
    assert_eq!(states(&ev_b, 1), vec![(Listen, SynReceived, SEG), (SynReceived, Established, SEG)]);
    let a = link.a.connections(link.now());
    assert_eq!((a[0].state, a[0].send_q, a[0].deadline), (FinWait1, 0, None), "FIN-WAIT-1 with no timer");
    let b = link.b.connections(link.now());
    assert_eq!((b[0].state, b[0].recv_q, b[0].deadline), (Established, 0, None));
    assert_eq!(recv_bytes(&ev_b), 10 * 1460);
    // A's FIN went out twice (with the 10th segment, then with its go-back-N
    // resend at 1.04 s) and never again in the hour that followed.
    let a_fins = on_wire(&link, End::A, is_fin);
    assert_eq!(a_fins.iter().map(|t| us(*t)).collect::<Vec<_>>(), vec![us(0.020), us(1.040)]);
    // Both reached B, carrying 1460 bytes of data each.
    let b_fins: Vec<usize> = ev_b
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Segment { dir: Dir::In, seg } if seg.flags.fin => Some(seg.len),
            _ => None,
        })
        .collect();
    assert_eq!(b_fins, vec![1460, 1460]);
}

// 5. The end of a run: what the fault path still holds.

#[test]
fn test_discard_held_writes_each_held_segment_as_discarded() {
    // A delays its FIN by 1 s; the run ends 100 ms after the close, while
    // the FIN is still held: it is written as discarded (with its segment
    // and the rule), never delivered, and nothing is held afterwards.
    let client = cfg("10.0.0.1/24", ClosePolicy::Active, Some(ms(50)), &["delay 1s out fin"]);
    let server = cfg("10.0.0.2/24", ClosePolicy::Passive, None, &[]);
    let (mut link, c) = bench(server, client, 0);
    let end = t0() + ms(150);
    link.run_until(end);
    assert!(link.a.holds_packets(), "the FIN is held at the end");
    assert_eq!(link.a.discard_held(end, "discarded at end of round"), 1);
    assert!(!link.a.holds_packets());
    let ev = link.a.take_events();
    let discarded: Vec<_> = ev
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Fault { action: FaultAction::Discarded, dir, seg, rule, detail } => {
                Some((e.conn, *dir, seg.as_ref().map(|s| s.flags.fin), *rule, detail.clone()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        discarded,
        vec![(Some(c), Dir::Out, Some(true), 1, "discarded at end of round (held by rule 1)".to_string())]
    );
    assert_eq!(link.a.discard_held(end, "again"), 0);
}
