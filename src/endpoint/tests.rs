//! Whole-connection tests: two closelab endpoints over an in-memory link with
//! a virtual clock. They assert exact state sequences with their causes.

use super::link::{End, Link};
use super::*;
use crate::event::{AppAction, Cause, Event, EventKind, TcpState};
use crate::wire::Flags;

use TcpState::*;

pub(super) const PORT: u16 = 7000;

fn cidr(s: &str) -> IpCidr {
    crate::config::parse_cidr(s).unwrap()
}

pub(super) fn t0() -> Instant {
    Instant::from_secs(1000)
}

pub(super) fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Config for one end: A is 10.0.0.1 (client), B is 10.0.0.2 (server).
fn cfg(addr: &str, app: AppKind, close: ClosePolicy, close_after: Option<Duration>) -> EndpointConfig {
    let mut c = EndpointConfig::new(cidr(addr));
    c.app = app;
    c.policy = Policy { close, close_after, rst_on_unread: false };
    c.seed = 7;
    c
}

/// smoltcp keeps TIME-WAIT in its socket (`--time-wait-model smoltcp`).
pub(super) fn smoltcp_tw(mut c: EndpointConfig) -> EndpointConfig {
    c.time_wait_model = TimeWaitModel::Smoltcp;
    c
}

struct Bench {
    link: Link,
    client: ConnId,
}

/// B listens with `server`; A connects sending `send` bytes.
fn bench(server: EndpointConfig, client: EndpointConfig, send: usize) -> Bench {
    let mut b = Endpoint::new(server, t0()).expect("endpoint config fits smoltcp");
    b.listen(PORT);
    let a = Endpoint::new(client, t0()).expect("endpoint config fits smoltcp");
    let mut link = Link::new(a, b, t0(), ms(10));
    let remote = "10.0.0.2:7000".parse().unwrap();
    let client = link.a.connect(t0(), remote, send).unwrap();
    Bench { link, client }
}

/// (from, to, cause) of every state change of `conn`, in order.
#[track_caller]
pub(super) fn states(events: &[Event], conn: ConnId) -> Vec<(TcpState, TcpState, Cause)> {
    events
        .iter()
        .filter(|e| e.conn == Some(conn))
        .filter_map(|e| match e.kind {
            EventKind::State { from, to, cause } => Some((from, to, cause)),
            _ => None,
        })
        .collect()
}

/// The states visited, starting with the first `from`.
fn path(events: &[Event], conn: ConnId) -> Vec<TcpState> {
    let s = states(events, conn);
    let mut v: Vec<TcpState> = s.first().map(|x| vec![x.0]).unwrap_or_default();
    v.extend(s.iter().map(|x| x.1));
    v
}

pub(super) fn time_of(events: &[Event], conn: ConnId, to: TcpState) -> Option<f64> {
    events.iter().find_map(|e| match e.kind {
        EventKind::State { to: t, .. } if t == to && e.conn == Some(conn) => Some(e.t),
        _ => None,
    })
}

fn segments(events: &[Event]) -> Vec<(Dir, Flags, usize)> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Segment { dir, seg } => Some((*dir, seg.flags, seg.len)),
            _ => None,
        })
        .collect()
}

pub(super) const SEG: Cause = Cause::Segment;
pub(super) const TIMER: Cause = Cause::Timer;
pub(super) const CLOSE: Cause = Cause::App(AppAction::Close);
pub(super) const CONNECT: Cause = Cause::App(AppAction::Connect);

// Tests for the active close.

#[test]
fn test_active_close_sequences_both_sides() {
    let server = cfg("10.0.0.2/24", AppKind::Echo, ClosePolicy::Active, None);
    let client = cfg("10.0.0.1/24", AppKind::Sink, ClosePolicy::Passive, Some(ms(100)));
    let mut b = bench(server, client, 5);
    b.link.run_for(Duration::from_secs(70));
    let ev_b = b.link.b.take_events();
    let ev_a = b.link.a.take_events();
    assert_eq!(
        states(&ev_b, 1),
        vec![
            (Listen, SynReceived, SEG),
            (SynReceived, Established, SEG),
            (Established, FinWait1, CLOSE),
            (FinWait1, FinWait2, SEG),
            (FinWait2, TimeWait, SEG),
            (TimeWait, Closed, TIMER),
        ]
    );
    assert_eq!(
        states(&ev_a, b.client),
        vec![
            (Closed, SynSent, CONNECT),
            (SynSent, Established, SEG),
            (Established, CloseWait, SEG),
            (CloseWait, LastAck, CLOSE),
            (LastAck, Closed, SEG),
        ]
    );
    // The echo came back: 5 bytes received by the client.
    assert!(ev_a.iter().any(|e| e.kind == EventKind::App { action: AppAction::Recv(5) }));
    assert_eq!(b.link.a.finished(), 1);
    assert_eq!(b.link.b.finished(), 1);
    assert!(b.link.a.is_empty() && b.link.b.is_empty(), "finished connections leave the table");
}

#[test]
fn test_time_wait_lasts_exactly_smoltcp_10s() {
    let server = smoltcp_tw(cfg("10.0.0.2/24", AppKind::Hello, ClosePolicy::Active, None));
    let client = cfg("10.0.0.1/24", AppKind::Sink, ClosePolicy::Passive, Some(ms(100)));
    let mut b = bench(server, client, 0);
    let limit = t0() + Duration::from_secs(60);
    b.link.run_while(limit, |l| l.b.state(1) != Some(TimeWait));
    assert_eq!(b.link.b.state(1), Some(TimeWait));
    let entered = b.link.now();
    // The state is visible (state() and the ss-like table) while it lasts:
    // up to a millisecond before the 10 s are over ...
    b.link.run_until(entered + Duration::from_millis(9_999));
    assert_eq!(b.link.b.state(1), Some(TimeWait));
    assert_eq!(b.link.b.connections(b.link.now()).iter().map(|c| c.state).collect::<Vec<_>>(), [TimeWait]);
    // ... and gone once they are.
    b.link.run_until(limit);
    assert_eq!(b.link.b.state(1), None);
    assert!(b.link.b.is_empty());
    let ev = b.link.b.take_events();
    let tw = time_of(&ev, 1, TimeWait).expect("reached TIME-WAIT");
    let closed = time_of(&ev, 1, Closed).expect("left TIME-WAIT");
    assert!((closed - tw - 10.0).abs() < 1e-9, "TIME-WAIT lasted {}s", closed - tw);
}

#[test]
fn test_active_close_after_delay() {
    let server = cfg("10.0.0.2/24", AppKind::Echo, ClosePolicy::Active, Some(ms(200)));
    let client = cfg("10.0.0.1/24", AppKind::Sink, ClosePolicy::Passive, Some(ms(50)));
    let mut b = bench(server, client, 5);
    b.link.run_for(Duration::from_secs(1));
    let ev = b.link.b.take_events();
    let est = time_of(&ev, 1, Established).unwrap();
    let fw1 = time_of(&ev, 1, FinWait1).unwrap();
    assert!((fw1 - est - 0.2).abs() < 1e-9, "closed {}s after ESTABLISHED", fw1 - est);
}

// Tests for the passive close.

#[test]
fn test_passive_close_waits_in_close_wait() {
    let server = cfg("10.0.0.2/24", AppKind::Echo, ClosePolicy::Passive, Some(ms(300)));
    let client = cfg("10.0.0.1/24", AppKind::Sink, ClosePolicy::Active, Some(ms(100)));
    let mut b = bench(server, client, 5);
    b.link.run_for(Duration::from_secs(70));
    let ev_b = b.link.b.take_events();
    let ev_a = b.link.a.take_events();
    assert_eq!(path(&ev_b, 1), vec![Listen, SynReceived, Established, CloseWait, LastAck, Closed]);
    assert_eq!(states(&ev_b, 1)[3..], [(CloseWait, LastAck, CLOSE), (LastAck, Closed, SEG)]);
    let cw = time_of(&ev_b, 1, CloseWait).unwrap();
    let la = time_of(&ev_b, 1, LastAck).unwrap();
    assert!((la - cw - 0.3).abs() < 1e-9, "CLOSE-WAIT lasted {}", la - cw);
    assert_eq!(path(&ev_a, b.client), vec![Closed, SynSent, Established, FinWait1, FinWait2, TimeWait, Closed]);
}

// Tests for the never-closing application (the CLOSE_WAIT leak).

#[test]
fn test_never_close_stays_in_close_wait_for_an_hour() {
    let server = cfg("10.0.0.2/24", AppKind::Echo, ClosePolicy::Never, None);
    let client = cfg("10.0.0.1/24", AppKind::Sink, ClosePolicy::Active, Some(ms(100)));
    let mut b = bench(server, client, 5);
    b.link.run_for(Duration::from_secs(3600));
    assert_eq!(b.link.b.state(1), Some(CloseWait));
    let ev_b = b.link.b.take_events();
    assert_eq!(path(&ev_b, 1), vec![Listen, SynReceived, Established, CloseWait]);
    // The peer closed (an orphan, as close() on Linux): its FIN-WAIT-2 ended
    // after Linux's 60 s tcp_fin_timeout, without a segment.
    assert_eq!(b.link.a.state(b.client), None);
    let ev_a = b.link.a.take_events();
    let fw2 = time_of(&ev_a, b.client, FinWait2).unwrap();
    assert_eq!(states(&ev_a, b.client).last(), Some(&(FinWait2, Closed, TIMER)));
    assert!((time_of(&ev_a, b.client, Closed).unwrap() - fw2 - 60.0).abs() < 1e-9);
    let after: Vec<_> = ev_a.iter().filter(|e| e.t > fw2 && matches!(e.kind, EventKind::Segment { .. })).collect();
    assert!(after.is_empty(), "nothing sent when FIN-WAIT-2 ends: {after:?}");
    // Recv-Q of a CLOSE-WAIT socket: everything read; the peer's FIN is the
    // only thing left (ss would count it as 1 byte).
    let info = b.link.b.connections(b.link.now());
    assert_eq!(info[0].state, CloseWait);
    assert_eq!(info[0].recv_q, 0);
}

// Tests for abort.

#[test]
fn test_abort_sends_rst_and_skips_time_wait() {
    let server = cfg("10.0.0.2/24", AppKind::Echo, ClosePolicy::Abort, Some(ms(200)));
    let client = cfg("10.0.0.1/24", AppKind::Sink, ClosePolicy::Passive, None);
    let mut b = bench(server, client, 5);
    b.link.run_for(Duration::from_secs(60));
    let ev_b = b.link.b.take_events();
    let ev_a = b.link.a.take_events();
    assert_eq!(
        states(&ev_b, 1),
        vec![
            (Listen, SynReceived, SEG),
            (SynReceived, Established, SEG),
            (Established, Closed, Cause::App(AppAction::Abort)),
        ]
    );
    assert_eq!(path(&ev_a, b.client), vec![Closed, SynSent, Established, Closed]);
    let out_rst = segments(&ev_b).iter().filter(|(d, f, _)| *d == Dir::Out && f.rst).count();
    assert_eq!(out_rst, 1);
    for ev in ev_a.iter().chain(&ev_b) {
        if let EventKind::State { to, .. } = ev.kind {
            assert_ne!(to, TimeWait);
        }
    }
}

// Tests for half close.

#[test]
fn test_half_close_data_after_our_fin_arrives_intact() {
    // B shuts down its write side at once; A keeps sending 100 KiB after
    // B's FIN, then closes.
    let server = cfg("10.0.0.2/24", AppKind::Sink, ClosePolicy::Half, Some(ms(0)));
    let mut client = cfg("10.0.0.1/24", AppKind::Sink, ClosePolicy::Passive, Some(ms(0)));
    client.buffer = 8 * 1024;
    let mut b = bench(server, client, 100 * 1024);
    b.link.run_for(Duration::from_secs(70));
    let ev_b = b.link.b.take_events();
    let ev_a = b.link.a.take_events();
    assert_eq!(
        states(&ev_b, 1),
        vec![
            (Listen, SynReceived, SEG),
            (SynReceived, Established, SEG),
            (Established, FinWait1, Cause::App(AppAction::Shutdown)),
            (FinWait1, FinWait2, SEG),
            (FinWait2, TimeWait, SEG),
            (TimeWait, Closed, TIMER),
        ]
    );
    let fin_at = time_of(&ev_b, 1, FinWait1).unwrap();
    let received: usize = ev_b
        .iter()
        .filter(|e| e.t > fin_at)
        .filter_map(|e| match e.kind {
            EventKind::App { action: AppAction::Recv(n) } => Some(n),
            _ => None,
        })
        .sum();
    assert!(received > 90 * 1024, "only {received} bytes after our FIN");
    let total: usize = ev_b
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::App { action: AppAction::Recv(n) } => Some(n),
            _ => None,
        })
        .sum();
    assert_eq!(total, 100 * 1024);
    assert_eq!(path(&ev_a, b.client)[..4], [Closed, SynSent, Established, CloseWait]);
}

#[test]
fn test_half_close_bytes_are_exact() {
    // Exact bytes: the sink side checks the pattern byte by byte through
    // the raw segments on the wire.
    let server = cfg("10.0.0.2/24", AppKind::Sink, ClosePolicy::Half, Some(ms(0)));
    let client = cfg("10.0.0.1/24", AppKind::Sink, ClosePolicy::Passive, Some(ms(0)));
    let mut b = bench(server, client, 3000);
    b.link.run_for(Duration::from_secs(30));
    let mut stream = Vec::new();
    for (_, from, p) in &b.link.wire {
        if *from != End::A {
            continue;
        }
        let seg = crate::wire::parse(p).unwrap();
        if seg.len > 0 {
            let payload = &p[p.len() - seg.len..];
            stream.extend_from_slice(payload);
        }
    }
    assert_eq!(stream.len(), 3000);
    for (i, b) in stream.iter().enumerate() {
        assert_eq!(*b, app::pattern_byte(i), "byte {i}");
    }
}

// Tests for the simultaneous close.

#[test]
fn test_simultaneous_close_passes_closing_on_both_sides() {
    // The client is ESTABLISHED at 20 ms, the server at 30 ms (10 ms wire).
    // Both close at 120 ms, so each FIN is in flight when the other side
    // closes, and the FINs cross.
    let server = cfg("10.0.0.2/24", AppKind::Sink, ClosePolicy::Active, Some(ms(90)));
    let client = cfg("10.0.0.1/24", AppKind::Sink, ClosePolicy::Active, Some(ms(100)));
    let mut b = bench(server, client, 0);
    b.link.run_for(Duration::from_secs(70));
    let ev_b = b.link.b.take_events();
    let ev_a = b.link.a.take_events();
    let expected = [Established, FinWait1, Closing, TimeWait, Closed];
    assert_eq!(path(&ev_b, 1)[2..], expected[..]);
    assert_eq!(path(&ev_a, b.client)[2..], expected[..]);
    assert_eq!(
        states(&ev_b, 1)[2..],
        [(Established, FinWait1, CLOSE), (FinWait1, Closing, SEG), (Closing, TimeWait, SEG), (TimeWait, Closed, TIMER),]
    );
}

// Tests for dispatch and bad input.

#[test]
fn test_syn_to_closed_port_gets_rst_ack() {
    let server = cfg("10.0.0.2/24", AppKind::Sink, ClosePolicy::Passive, None);
    let client = cfg("10.0.0.1/24", AppKind::Sink, ClosePolicy::Passive, None);
    let b_ep = Endpoint::new(server, t0()).expect("endpoint config fits smoltcp"); // not listening
    let a = Endpoint::new(client, t0()).expect("endpoint config fits smoltcp");
    let mut link = Link::new(a, b_ep, t0(), ms(10));
    let c = link.a.connect(t0(), "10.0.0.2:7000".parse().unwrap(), 0).unwrap();
    link.run_for(Duration::from_secs(5));
    let ev_b = link.b.take_events();
    let out: Vec<_> = segments(&ev_b).into_iter().filter(|s| s.0 == Dir::Out).collect();
    assert_eq!(out, vec![(Dir::Out, Flags::parse("R.").unwrap(), 0)]);
    assert!(link.b.is_empty());
    let ev_a = link.a.take_events();
    assert_eq!(path(&ev_a, c), vec![Closed, SynSent, Closed]);
}

#[test]
fn test_max_conns_refuses_with_rst() {
    let mut server = cfg("10.0.0.2/24", AppKind::Sink, ClosePolicy::Never, None);
    server.max_conns = 1;
    let client = cfg("10.0.0.1/24", AppKind::Sink, ClosePolicy::Never, None);
    let mut b = bench(server, client, 0);
    b.link.run_for(ms(500));
    let second = b.link.a.connect(b.link.now(), "10.0.0.2:7000".parse().unwrap(), 0).unwrap();
    b.link.run_for(ms(500));
    let ev_b = b.link.b.take_events();
    assert!(
        ev_b.iter()
            .any(|e| matches!(&e.kind, EventKind::Refused { reason, .. } if reason == "connection limit 1 reached"))
    );
    assert_eq!(b.link.b.len(), 1);
    assert_eq!(b.link.a.state(second), None, "refused connection closed and removed");
}

#[test]
fn test_malformed_packets_never_panic() {
    let mut ep = Endpoint::new(cfg("10.0.0.2/24", AppKind::Echo, ClosePolicy::Active, None), t0())
        .expect("endpoint config fits smoltcp");
    ep.listen(PORT);
    let mut junk: Vec<Vec<u8>> = vec![vec![], vec![0x45], vec![0x60; 39], vec![0xff; 1500]];
    // A valid SYN header truncated at every length, and with garbage options.
    let mut syn = vec![0x45u8, 0, 0, 44, 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2];
    syn.extend_from_slice(&[
        0x9c, 0x40, 0x1b, 0x58, 0, 0, 0, 1, 0, 0, 0, 0, 0x60, 0x02, 0xff, 0xff, 0, 0, 0, 0, 2, 4, 0xff,
    ]);
    for n in 0..syn.len() {
        junk.push(syn[..n].to_vec());
    }
    for i in 0..2000u32 {
        let mut p = syn.clone();
        let idx = (i as usize * 7) % p.len();
        p[idx] ^= (i % 251) as u8 | 1;
        junk.push(p);
    }
    for p in junk {
        ep.receive(t0(), p);
        ep.poll(t0());
        while ep.transmit().is_some() {}
    }
    let ev = ep.take_events();
    assert!(ev.iter().any(|e| matches!(e.kind, EventKind::Malformed { .. })));
}

#[test]
fn test_lookup_does_not_touch_other_connections() {
    // 1,000 idle connections; one more closes normally, and the others see
    // no events at all (no scan, no spurious state changes).
    let server = cfg("10.0.0.2/24", AppKind::Sink, ClosePolicy::Never, None);
    let client = cfg("10.0.0.1/24", AppKind::Sink, ClosePolicy::Never, None);
    let mut b = bench(server, client, 0);
    for _ in 0..999 {
        let now = b.link.now();
        b.link.a.connect(now, "10.0.0.2:7000".parse().unwrap(), 0).unwrap();
    }
    b.link.run_for(Duration::from_secs(1));
    assert_eq!(b.link.b.len(), 1000);
    b.link.b.take_events();
    let now = b.link.now();
    assert!(b.link.b.abort(now, 500));
    b.link.run_for(Duration::from_secs(1));
    let ev = b.link.b.take_events();
    assert!(ev.iter().all(|e| e.conn == Some(500) || e.conn.is_none()), "{ev:?}");
    assert_eq!(b.link.b.len(), 999);
}

// Tests for the per-connection counters behind `closelab ss`.

/// A FIN that never arrives: every copy after the first is a retransmission,
/// counted until the peer's ACK advances; the FIN stays unacknowledged.
#[test]
fn test_retransmitted_fin_is_counted_until_acked() {
    let mut server = cfg("10.0.0.2/24", AppKind::Echo, ClosePolicy::Active, None);
    server.faults = vec![crate::fault::FaultRule::parse("drop out fin").unwrap()];
    let client = cfg("10.0.0.1/24", AppKind::Sink, ClosePolicy::Never, None);
    let mut b = bench(server, client, 5);
    b.link.run_for(Duration::from_secs(8));
    let ev = b.link.b.take_events();
    let fins =
        ev.iter().filter(|e| matches!(&e.kind, EventKind::Fault { seg: Some(s), .. } if s.flags.fin)).count() as u32;
    assert!(fins >= 3, "{fins} FINs in 8 s");
    let info = &b.link.b.connections(b.link.now())[0];
    assert_eq!(info.state, FinWait1);
    // The FIN rides on the echo: 5 bytes and the FIN are outstanding.
    assert_eq!((info.retrans, info.unacked, info.send_q, info.probes), (fins - 1, 6, 5, 0), "{info:?}");
    assert!(info.deadline.is_some(), "the retransmission timer is armed");
}

#[test]
fn test_retrans_resets_when_the_ack_advances() {
    let mut server = cfg("10.0.0.2/24", AppKind::Echo, ClosePolicy::Active, None);
    server.faults = vec![crate::fault::FaultRule::parse("drop out fin 1st").unwrap()];
    let client = cfg("10.0.0.1/24", AppKind::Sink, ClosePolicy::Never, None);
    let mut b = bench(server, client, 5);
    b.link.run_for(Duration::from_secs(5));
    let info = &b.link.b.connections(b.link.now())[0];
    assert_eq!(info.state, FinWait2, "the retransmitted FIN got through");
    assert_eq!((info.retrans, info.unacked), (0, 0), "{info:?}");
    // The client never closes: CLOSE-WAIT with the FIN received.
    let info = &b.link.a.connections(b.link.now())[0];
    assert_eq!((info.state, info.peer_fin, info.retrans), (CloseWait, true, 0), "{info:?}");
}

/// Keep-alive probes re-send old sequence space with nothing outstanding:
/// counted as probes, not retransmissions; answered probes reset.
#[test]
fn test_keep_alive_probes_are_not_retransmissions() {
    let mut server = cfg("10.0.0.2/24", AppKind::Echo, ClosePolicy::Never, None);
    server.keep_alive = Some(Duration::from_secs(1));
    let client = cfg("10.0.0.1/24", AppKind::Sink, ClosePolicy::Never, None);
    let mut b = bench(server, client, 5);
    b.link.run_for(Duration::from_millis(500));
    b.link.b.take_events();
    b.link.run_for(Duration::from_millis(3500));
    let probes = b
        .link
        .b
        .take_events()
        .iter()
        .filter(|e| matches!(&e.kind, EventKind::Segment { dir: Dir::Out, seg } if seg.len == 1))
        .count();
    assert!(probes >= 2, "{probes} keep-alive probes in 3.5 s");
    let info = &b.link.b.connections(b.link.now())[0];
    assert_eq!(info.state, Established);
    assert_eq!((info.retrans, info.probes, info.unacked), (0, 0, 0), "answered probes: {info:?}");
}

fn seg_out(seq: u32, len: usize, flags: &str) -> Segment {
    Segment {
        src: "10.0.0.2:7000".parse().unwrap(),
        dst: "10.0.0.1:40000".parse().unwrap(),
        flags: Flags::parse(flags).unwrap(),
        seq,
        ack: 0,
        win: 1000,
        len,
    }
}

fn ack_in(ack: u32) -> Segment {
    Segment { ack, ..seg_out(0, 0, ".") }
}

#[test]
fn test_seq_tracker_counts_retransmissions_and_probes() {
    // Near the wrap: sequence arithmetic is modulo 2^32.
    let isn = u32::MAX - 1;
    let mut t = SeqTracker::default();
    t.sent(&seg_out(isn, 0, "S."));
    assert_eq!((t.unacked(), t.retrans), (1, 0));
    t.sent(&seg_out(isn, 0, "S."));
    assert_eq!((t.unacked(), t.retrans), (1, 1), "SYN-ACK again");
    t.received(&ack_in(isn.wrapping_add(1)));
    assert_eq!((t.unacked(), t.retrans), (0, 0));
    t.sent(&seg_out(isn.wrapping_add(1), 100, "P."));
    t.sent(&seg_out(isn.wrapping_add(101), 0, "F."));
    assert_eq!(t.unacked(), 101);
    t.sent(&seg_out(isn.wrapping_add(1), 100, "P."));
    t.sent(&seg_out(isn.wrapping_add(1), 100, "P."));
    assert_eq!(t.retrans, 2);
    // A partial ACK advances snd_una: Linux resets icsk_retransmits.
    t.received(&ack_in(isn.wrapping_add(101)));
    assert_eq!((t.unacked(), t.retrans), (1, 0));
    // An ACK beyond anything sent is ignored; a duplicate does nothing.
    t.received(&ack_in(isn.wrapping_add(500)));
    t.received(&ack_in(isn.wrapping_add(101)));
    assert_eq!((t.unacked(), t.retrans), (1, 0));
    t.received(&ack_in(isn.wrapping_add(102)));
    assert_eq!(t.unacked(), 0);
    // Keep-alive: one byte at snd_nxt - 1 with nothing outstanding.
    t.sent(&seg_out(isn.wrapping_add(101), 1, "."));
    t.sent(&seg_out(isn.wrapping_add(101), 1, "."));
    assert_eq!((t.probes, t.retrans, t.unacked()), (2, 0, 0));
    t.received(&ack_in(isn.wrapping_add(102)));
    assert_eq!(t.probes, 0, "any ACK answers the probes");
    // RSTs and pure ACKs occupy no sequence space.
    t.sent(&seg_out(isn.wrapping_add(50), 0, "R."));
    t.sent(&seg_out(isn.wrapping_add(50), 0, "."));
    assert_eq!((t.probes, t.retrans, t.unacked()), (0, 0, 0));
}

// Tests for a SYN that ends TIME-WAIT.

#[test]
fn test_time_wait_syn_cause_before_effect_smoltcp_model() {
    let server = smoltcp_tw(cfg("10.0.0.2/24", AppKind::Hello, ClosePolicy::Active, None));
    let client = cfg("10.0.0.1/24", AppKind::Sink, ClosePolicy::Passive, Some(ms(100)));
    let mut b = bench(server, client, 0);
    b.link.run_for(Duration::from_secs(2));
    assert_eq!(b.link.b.state(1), Some(TimeWait));
    let port = b.link.a.take_events().iter().find_map(|e| match &e.kind {
        EventKind::Segment { seg, .. } => Some(seg.src.port()),
        _ => None,
    });
    b.link.b.take_events();
    let now = b.link.now();
    let remote = "10.0.0.2:7000".parse().unwrap();
    b.link.a.connect_from(now, remote, port, 0).unwrap();
    b.link.run_for(Duration::from_secs(1));
    let ev = b.link.b.take_events();
    // The SYN arrives at the TIME-WAIT connection first, then TIME-WAIT
    // ends, then connection 2 starts from that segment.
    let syn = ev
        .iter()
        .position(|e| e.conn == Some(1) && matches!(&e.kind, EventKind::Segment { dir: Dir::In, seg } if seg.flags.syn))
        .expect("SYN shown on the TIME-WAIT connection");
    let ended = ev
        .iter()
        .position(|e| e.conn == Some(1) && e.kind == EventKind::State { from: TimeWait, to: Closed, cause: SEG })
        .expect("TIME-WAIT ended by the segment");
    let new = ev.iter().position(|e| e.conn == Some(2)).expect("new connection");
    assert!(syn < ended && ended < new, "order: syn {syn}, ended {ended}, new {new}");
    assert!(
        !ev.iter()
            .any(|e| e.conn == Some(2) && matches!(&e.kind, EventKind::Segment { dir: Dir::In, seg } if seg.flags.syn)),
        "the SYN is shown once"
    );
    // Connection 2 ran its whole story (hello, active close).
    assert_eq!(path(&ev, 2), vec![Listen, SynReceived, Established, FinWait1, FinWait2, TimeWait]);
}

/// A zero keep-alive (the CLI refuses it; the library clamps it to Linux's
/// 1 s minimum) used to send a probe per egress call: 10,000 at one instant.
#[test]
fn test_keep_alive_zero_does_not_storm() {
    let mut server = cfg("10.0.0.2/24", AppKind::Echo, ClosePolicy::Never, None);
    server.keep_alive = Some(Duration::ZERO);
    let client = cfg("10.0.0.1/24", AppKind::Sink, ClosePolicy::Never, None);
    let mut b = bench(server, client, 5);
    b.link.run_for(Duration::from_millis(500));
    b.link.b.take_events();
    b.link.run_for(Duration::from_secs(5));
    let probes = b
        .link
        .b
        .take_events()
        .iter()
        .filter(|e| matches!(&e.kind, EventKind::Segment { dir: Dir::Out, seg } if seg.len == 1))
        .count();
    assert!((3..=6).contains(&probes), "{probes} keep-alive probes in 5 s at the 1 s minimum");
}

// Tests for closelab's TIME-WAIT table (the Linux model, the default).

/// The hello server closes first; returns the bench once B's connection 1
/// is in TIME-WAIT, and the instant it got there.
fn in_time_wait(server: EndpointConfig) -> (Bench, Instant) {
    in_time_wait_with(server, tw_client())
}

/// The client of [`in_time_wait`]: reads, closes 100 ms after the server.
fn tw_client() -> EndpointConfig {
    cfg("10.0.0.1/24", AppKind::Sink, ClosePolicy::Passive, Some(ms(100)))
}

/// [`in_time_wait`] with the client's config given.
fn in_time_wait_with(server: EndpointConfig, client: EndpointConfig) -> (Bench, Instant) {
    let mut b = bench(server, client, 0);
    let limit = t0() + Duration::from_secs(5);
    let tw = |l: &Link| l.b.connections(l.now()).iter().any(|c| c.id == 1 && c.state == TimeWait);
    b.link.run_while(limit, |l| !tw(l));
    assert!(tw(&b.link), "connection 1 reached TIME-WAIT");
    let at = b.link.now();
    (b, at)
}

#[test]
fn test_time_wait_linux_model_frees_the_socket_and_lasts_60s() {
    let (mut b, entered) = in_time_wait(cfg("10.0.0.2/24", AppKind::Hello, ClosePolicy::Active, None));
    // The socket and its buffers are gone; a record remains.
    assert!(b.link.b.is_empty());
    assert_eq!(b.link.b.state(1), None);
    assert_eq!(b.link.b.time_wait_count(), 1);
    assert_eq!(b.link.b.finished(), 0, "finished once TIME-WAIT is over");
    let c = b.link.b.connections(b.link.now());
    assert_eq!((c.len(), c[0].state, c[0].deadline), (1, TimeWait, Some(Duration::from_secs(60))));
    b.link.run_until(entered + Duration::from_millis(59_999));
    assert_eq!(b.link.b.time_wait_count(), 1);
    b.link.run_until(entered + Duration::from_secs(61));
    assert_eq!(b.link.b.time_wait_count(), 0);
    assert_eq!(b.link.b.finished(), 1);
    assert!(b.link.b.connections(b.link.now()).is_empty());
    let ev = b.link.b.take_events();
    assert_eq!(
        states(&ev, 1),
        vec![
            (Listen, SynReceived, SEG),
            (SynReceived, Established, SEG),
            (Established, FinWait1, CLOSE),
            (FinWait1, FinWait2, SEG),
            (FinWait2, TimeWait, SEG),
            (TimeWait, Closed, TIMER),
        ]
    );
    let tw = time_of(&ev, 1, TimeWait).unwrap();
    let closed = time_of(&ev, 1, Closed).unwrap();
    assert!((closed - tw - 60.0).abs() < 1e-9, "TIME-WAIT lasted {}s", closed - tw);
    // The final ACK went out before the socket was freed.
    let last_out = ev.iter().rev().find_map(|e| match &e.kind {
        EventKind::Segment { dir: Dir::Out, seg } => Some(seg.flags.to_string()),
        _ => None,
    });
    assert_eq!(last_out.as_deref(), Some("."));
}

#[test]
fn test_time_wait_length_is_configurable() {
    let mut server = cfg("10.0.0.2/24", AppKind::Hello, ClosePolicy::Active, None);
    server.time_wait.len_ms = 2_000;
    let (mut b, _) = in_time_wait(server);
    b.link.run_for(Duration::from_secs(3));
    let ev = b.link.b.take_events();
    let closed = time_of(&ev, 1, Closed).unwrap() - time_of(&ev, 1, TimeWait).unwrap();
    assert!((closed - 2.0).abs() < 1e-9, "TIME-WAIT lasted {closed}s");
}

/// A segment from A's side of connection 1 to B, built by hand.
fn to_b(b: &Bench, flags: &str, seq_from_rcv_nxt: i64, len: usize) -> (Vec<u8>, Segment) {
    let info = b.link.b.connections(b.link.now()).into_iter().find(|c| c.id == 1).unwrap();
    let rec = b.link.b.tw.get(&info.tuple).copied().unwrap();
    let seq = (i64::from(rec.rcv_nxt) + seq_from_rcv_nxt) as u32;
    let mut p = crate::wire::tcp_packet(
        info.tuple.remote,
        info.tuple.local,
        Flags::parse(flags).unwrap(),
        seq,
        rec.snd_nxt,
        1000,
    );
    if len > 0 {
        // Payload bytes: rebuild with a payload through smoltcp's repr.
        let mut seg = crate::wire::parse(&p).unwrap();
        seg.len = len;
        p = payload_packet(&seg);
    }
    let seg = crate::wire::parse(&p).unwrap();
    (p, seg)
}

fn payload_packet(seg: &Segment) -> Vec<u8> {
    use smoltcp::wire::{TcpControl, TcpRepr, TcpSeqNumber};
    let data = vec![b'x'; seg.len];
    let tcp = TcpRepr {
        src_port: seg.src.port(),
        dst_port: seg.dst.port(),
        control: TcpControl::Psh,
        seq_number: TcpSeqNumber(seg.seq as i32),
        ack_number: Some(TcpSeqNumber(seg.ack as i32)),
        window_len: seg.win,
        window_scale: None,
        max_seg_size: None,
        sack_permitted: false,
        sack_ranges: [None; 3],
        timestamp: None,
        payload: &data,
    };
    let (IpAddr::V4(src), IpAddr::V4(dst)) = (seg.src.ip(), seg.dst.ip()) else { panic!("IPv4 test") };
    let mut p = crate::wire::tcp_packet(seg.src, seg.dst, Flags::parse(".").unwrap(), 0, 0, 0);
    p.truncate(20);
    let mut buf = vec![0; 20 + tcp.buffer_len()];
    buf[..20].copy_from_slice(&p);
    let mut ip = smoltcp::wire::Ipv4Packet::new_unchecked(&mut buf[..]);
    ip.set_total_len((20 + tcp.buffer_len()) as u16);
    ip.fill_checksum();
    let caps = smoltcp::phy::ChecksumCapabilities::default();
    tcp.emit(&mut smoltcp::wire::TcpPacket::new_unchecked(&mut buf[20..]), &src.into(), &dst.into(), &caps);
    buf
}

/// Feeds one segment to B and returns B's events and what B sent.
fn answer_of(b: &mut Bench, packet: Vec<u8>) -> (Vec<Event>, Vec<Segment>) {
    let (ev, out) = raw_answer_of(b, packet);
    (ev, out.iter().map(|p| crate::wire::parse(p).unwrap()).collect())
}

/// [`answer_of`] with the packets B sent as bytes.
fn raw_answer_of(b: &mut Bench, packet: Vec<u8>) -> (Vec<Event>, Vec<Vec<u8>>) {
    let now = b.link.now();
    b.link.b.receive(now, packet);
    let mut out = Vec::new();
    while let Some(p) = b.link.b.transmit() {
        out.push(p);
    }
    (b.link.b.take_events(), out)
}

fn notes(ev: &[Event]) -> Vec<String> {
    ev.iter()
        .filter_map(|e| match &e.kind {
            EventKind::Note { text } => Some(text.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn test_time_wait_table_answers_each_segment_as_linux() {
    let (mut b, _) = in_time_wait(cfg("10.0.0.2/24", AppKind::Hello, ClosePolicy::Active, None));
    b.link.b.take_events();
    let rec = {
        let t = b.link.b.connections(b.link.now())[0].tuple;
        b.link.b.tw.get(&t).copied().unwrap()
    };
    let acks = |out: &[Segment]| out.iter().map(|s| (s.flags.to_string(), s.seq, s.ack)).collect::<Vec<_>>();
    let tw_ack = vec![(".".to_string(), rec.snd_nxt, rec.rcv_nxt)];

    // A retransmitted FIN: ACK every time (never rate-limited).
    for _ in 0..2 {
        let (p, _) = to_b(&b, "F.", -1, 0);
        let (ev, out) = answer_of(&mut b, p);
        assert_eq!(acks(&out), tw_ack);
        assert!(ev.iter().all(|e| e.conn == Some(1)), "shown on connection 1: {ev:?}");
        assert!(notes(&ev)[0].starts_with("TIME-WAIT: the peer's FIN again"), "{ev:?}");
    }
    // A bare ACK at rcv_nxt: no answer.
    let (p, _) = to_b(&b, ".", 0, 0);
    let (_, out) = answer_of(&mut b, p);
    assert!(out.is_empty());
    // Data: always ACKed.
    for _ in 0..2 {
        let (p, _) = to_b(&b, "P.", 0, 10);
        let (_, out) = answer_of(&mut b, p);
        assert_eq!(acks(&out), tw_ack);
    }
    // An old ACK (out of window): ACKed once, then rate-limited.
    let (p, _) = to_b(&b, ".", -1000, 0);
    let (_, out) = answer_of(&mut b, p.clone());
    assert_eq!(acks(&out), tw_ack);
    let (ev, out) = answer_of(&mut b, p);
    assert!(out.is_empty());
    assert!(notes(&ev)[0].contains("at most one per 500 ms"), "{ev:?}");
    assert_eq!(b.link.b.time_wait_acks_limited(), 1);
    // A SYN below rcv_nxt: ACK (after the rate limit's 500 ms).
    b.link.run_for(ms(600));
    let (p, _) = to_b(&b, "S", -100, 0);
    let (_, out) = answer_of(&mut b, p);
    assert_eq!(acks(&out), tw_ack);
    // An RST not at rcv_nxt: ignored, TIME-WAIT stays.
    let (p, _) = to_b(&b, "R", 5, 0);
    let (_, out) = answer_of(&mut b, p);
    assert!(out.is_empty());
    assert_eq!(b.link.b.time_wait_count(), 1);
    // An RST at rcv_nxt: TIME-WAIT ends (RFC 1337 assassination).
    let (p, _) = to_b(&b, "R", 0, 0);
    let (ev, out) = answer_of(&mut b, p);
    assert!(out.is_empty());
    assert_eq!(b.link.b.time_wait_count(), 0);
    assert_eq!(states(&ev, 1), vec![(TimeWait, Closed, SEG)]);
}

#[test]
fn test_time_wait_rst_ignored_with_rfc1337() {
    let mut server = cfg("10.0.0.2/24", AppKind::Hello, ClosePolicy::Active, None);
    server.time_wait.rfc1337 = true;
    let (mut b, _) = in_time_wait(server);
    b.link.b.take_events();
    let (p, _) = to_b(&b, "R", 0, 0);
    let (ev, out) = answer_of(&mut b, p);
    assert!(out.is_empty());
    assert_eq!(b.link.b.time_wait_count(), 1);
    assert!(states(&ev, 1).is_empty());
    assert_eq!(notes(&ev), vec!["RST ignored in TIME-WAIT (--rfc1337, as Linux with tcp_rfc1337=1)".to_string()]);
}

#[test]
fn test_time_wait_linux_model_syn_above_rcv_nxt_starts_connection_2() {
    let (mut b, _) = in_time_wait(cfg("10.0.0.2/24", AppKind::Hello, ClosePolicy::Active, None));
    b.link.b.take_events();
    let rec = {
        let t = b.link.b.connections(b.link.now())[0].tuple;
        b.link.b.tw.get(&t).copied().unwrap()
    };
    let (p, _) = to_b(&b, "S", 1000, 0);
    let (ev, out) = answer_of(&mut b, p);
    // Cause before effect: the SYN on connection 1, TIME-WAIT ends, then
    // connection 2 starts from that segment and answers [S.].
    let syn = ev.iter().position(|e| e.conn == Some(1) && matches!(&e.kind, EventKind::Segment { dir: Dir::In, .. }));
    let ended = ev.iter().position(|e| e.conn == Some(1) && matches!(e.kind, EventKind::State { to: Closed, .. }));
    let new = ev.iter().position(|e| e.conn == Some(2));
    assert!(syn < ended && ended < new && syn.is_some(), "order: {syn:?} {ended:?} {new:?}");
    assert_eq!(states(&ev, 1), vec![(TimeWait, Closed, SEG)]);
    assert_eq!(states(&ev, 2), vec![(Listen, SynReceived, SEG)]);
    let isn = rec.snd_nxt.wrapping_add(65537);
    assert!(notes(&ev)[0].contains(&format!("the new connection's ISN is Linux's: {isn}")), "{:?}", notes(&ev));
    // The SYN-ACK carries Linux's ISN (tcp_timewait_state_process: the old
    // snd_nxt + 65535 + 2), not a random one.
    assert_eq!(out.iter().map(|s| (s.flags.to_string(), s.seq)).collect::<Vec<_>>(), [("S.".to_string(), isn)]);
    assert_eq!(b.link.b.time_wait_count(), 0);
}

#[test]
fn test_time_wait_overflow_skips_time_wait() {
    let mut server = cfg("10.0.0.2/24", AppKind::Hello, ClosePolicy::Active, None);
    server.time_wait.max = 0;
    let client = cfg("10.0.0.1/24", AppKind::Sink, ClosePolicy::Passive, Some(ms(100)));
    let mut b = bench(server, client, 0);
    b.link.run_for(Duration::from_secs(2));
    let ev = b.link.b.take_events();
    assert_eq!(states(&ev, 1)[3..], [(FinWait1, FinWait2, SEG), (FinWait2, TimeWait, SEG), (TimeWait, Closed, SEG)]);
    assert!(notes(&ev).iter().any(|n| n.starts_with("TCP: time wait bucket table overflow (--max-tw 0)")));
    assert_eq!((b.link.b.time_wait_count(), b.link.b.time_wait_overflows()), (0, 1));
    assert_eq!(b.link.b.counted(), [("TIME-WAIT skipped (table full, --max-tw)".to_string(), 1)]);
    assert!(b.link.a.counted().is_empty());
    assert!(b.link.b.is_empty());
}

// Tests for Linux's other close timers.

#[test]
fn test_fin_timeout_only_for_orphans_not_after_shutdown() {
    // shutdown() (half close): the application still reads, no timer.
    let server = cfg("10.0.0.2/24", AppKind::Echo, ClosePolicy::Never, None);
    let client = cfg("10.0.0.1/24", AppKind::Sink, ClosePolicy::Half, Some(ms(100)));
    let mut b = bench(server, client, 5);
    b.link.run_for(Duration::from_secs(600));
    assert_eq!(b.link.a.state(b.client), Some(FinWait2));
    // A shorter --fin-timeout for an orphan.
    let server = cfg("10.0.0.2/24", AppKind::Echo, ClosePolicy::Never, None);
    let mut client = cfg("10.0.0.1/24", AppKind::Sink, ClosePolicy::Active, Some(ms(100)));
    client.close_timers.fin_timeout = Some(Duration::from_secs(3));
    let mut b = bench(server, client, 5);
    b.link.run_for(Duration::from_secs(10));
    let ev = b.link.a.take_events();
    let lasted = time_of(&ev, b.client, Closed).unwrap() - time_of(&ev, b.client, FinWait2).unwrap();
    assert!((lasted - 3.0).abs() < 1e-9, "FIN-WAIT-2 lasted {lasted}s");
    assert!(notes(&ev).iter().any(|n| n.starts_with("orphaned FIN-WAIT-2 ends after --fin-timeout 3.000s")));
}

/// A's FIN never reaches B: A retransmits it with smoltcp's backoff (RTO 1
/// s, doubling) and gives up after exactly N retransmissions.
fn fin_to_dead_peer(orphan_retries: u32, close: ClosePolicy) -> (Vec<Event>, ConnId) {
    let mut server = cfg("10.0.0.2/24", AppKind::Sink, ClosePolicy::Never, None);
    server.faults = vec![crate::fault::FaultRule::parse("drop in fin").unwrap()];
    let mut client = cfg("10.0.0.1/24", AppKind::Sink, close, Some(ms(100)));
    client.close_timers.orphan_retries = orphan_retries;
    let mut b = bench(server, client, 0);
    b.link.run_for(Duration::from_secs(400));
    (b.link.a.take_events(), b.client)
}

fn fins_out(ev: &[Event]) -> Vec<f64> {
    ev.iter()
        .filter_map(|e| match &e.kind {
            EventKind::Segment { dir: Dir::Out, seg } if seg.flags.fin => Some(e.t),
            _ => None,
        })
        .collect()
}

#[test]
fn test_orphan_retries_end_after_exactly_n_retransmissions() {
    let (ev, c) = fin_to_dead_peer(3, ClosePolicy::Active);
    let fins = fins_out(&ev);
    assert_eq!(fins.len(), 4, "the FIN and 3 retransmissions: {fins:?}");
    let gaps: Vec<i64> = fins.windows(2).map(|w| ((w[1] - w[0]) * 1000.0).round() as i64).collect();
    assert_eq!(gaps, [1000, 2000, 4000], "smoltcp's backoff");
    assert_eq!(states(&ev, c).last(), Some(&(FinWait1, Closed, TIMER)));
    let closed = time_of(&ev, c, Closed).unwrap();
    assert_eq!(((closed - fins[3]) * 1000.0).round() as i64, 8000, "when the 4th retransmission was due");
    let n = notes(&ev);
    assert!(n.iter().any(|t| t.starts_with("3 retransmissions unanswered")), "{n:?}");
    // 0 means 8, as on Linux.
    let (ev, _) = fin_to_dead_peer(0, ClosePolicy::Active);
    assert_eq!(fins_out(&ev).len(), 9);
}

#[test]
fn test_smoltcp_alone_retransmits_the_fin_without_end() {
    let mut server = cfg("10.0.0.2/24", AppKind::Sink, ClosePolicy::Never, None);
    server.faults = vec![crate::fault::FaultRule::parse("drop in fin").unwrap()];
    let mut client = cfg("10.0.0.1/24", AppKind::Sink, ClosePolicy::Active, Some(ms(100)));
    client.close_timers = CloseTimers::none();
    let mut b = bench(server, client, 0);
    b.link.run_for(Duration::from_secs(1200));
    assert_eq!(b.link.a.state(b.client), Some(FinWait1));
    assert!(fins_out(&b.link.a.take_events()).len() > 20);
}

#[test]
fn test_synack_retries_free_the_half_open_connection() {
    // B's SYN-ACKs never reach A.
    let mut server = cfg("10.0.0.2/24", AppKind::Sink, ClosePolicy::Never, None);
    server.faults = vec![crate::fault::FaultRule::parse("drop out synack").unwrap()];
    server.close_timers.synack_retries = 2;
    let client = cfg("10.0.0.1/24", AppKind::Sink, ClosePolicy::Never, None);
    let mut b = bench(server, client, 0);
    b.link.run_for(Duration::from_secs(10));
    let ev = b.link.b.take_events();
    let synacks = ev.iter().filter(|e| matches!(&e.kind, EventKind::Fault { seg: Some(s), .. } if s.flags.syn)).count();
    // A's SYN retransmissions that came while B was half-open: each is
    // answered with the SYN-ACK again (as Linux's tcp_check_req does), which
    // the timer's limit does not count (Linux counts num_timeout only).
    let closed_at = ev.iter().position(|e| matches!(e.kind, EventKind::State { to: Closed, .. })).expect("closed");
    let dup_syns = ev[..closed_at]
        .iter()
        .filter(|e| matches!(&e.kind, EventKind::Segment { dir: Dir::In, seg, .. } if seg.flags.syn))
        .count()
        - 1;
    assert!(dup_syns >= 1, "A retransmits its SYN within 10 s");
    assert_eq!(synacks, 3 + dup_syns, "the SYN-ACK, 2 timer retransmissions and one per repeated SYN");
    assert_eq!(states(&ev, 1), vec![(Listen, SynReceived, SEG), (SynReceived, Closed, TIMER)]);
    assert!(notes(&ev).iter().any(|n| n.contains("--synack-retries (tcp_synack_retries) = 2")), "{:?}", notes(&ev));
    assert!(b.link.b.is_empty());
}

/// (sender, TSval, TSecr) of every segment on the wire that carries a
/// timestamp option; `None` for segments without one.
fn wire_timestamps(link: &Link) -> Vec<Option<(End, u32, u32)>> {
    use smoltcp::wire::{Ipv4Packet, TcpPacket, TcpRepr};
    let caps = smoltcp::phy::ChecksumCapabilities::default();
    link.wire
        .iter()
        .map(|(_, from, bytes)| {
            let ip = Ipv4Packet::new_checked(&bytes[..]).unwrap();
            let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
            let repr = TcpRepr::parse(&tcp, &ip.src_addr().into(), &ip.dst_addr().into(), &caps).unwrap();
            repr.timestamp.map(|t| (*from, t.tsval, t.tsecr))
        })
        .collect()
}

#[test]
fn test_timestamps_are_sent_only_when_asked() {
    let server = cfg("10.0.0.2/24", AppKind::Hello, ClosePolicy::Active, None);
    let client = cfg("10.0.0.1/24", AppKind::Sink, ClosePolicy::Passive, Some(ms(100)));
    let mut b = bench(server.clone(), client.clone(), 0);
    b.link.run_for(Duration::from_secs(2));
    assert!(b.link.wire.len() >= 7, "handshake, data and close on the wire");
    assert!(wire_timestamps(&b.link).iter().all(Option::is_none), "no timestamps by default");

    let (mut server, mut client) = (server, client);
    server.timestamps = true;
    client.timestamps = true;
    let mut b = bench(server, client, 0);
    b.link.run_for(Duration::from_secs(2));
    let ts = wire_timestamps(&b.link);
    assert!(ts.iter().all(Option::is_some), "every segment carries TSopt: {ts:?}");
    let ts: Vec<(End, u32, u32)> = ts.into_iter().flatten().collect();
    // The SYN echoes nothing; every later segment echoes a TSval the other
    // end sent; each end's TSval never goes back.
    assert_eq!(ts[0].2, 0);
    for end in [End::A, End::B] {
        let vals: Vec<u32> = ts.iter().filter(|t| t.0 == end).map(|t| t.1).collect();
        assert!(vals.windows(2).all(|w| w[0] <= w[1]), "{end:?} TSvals {vals:?}");
        assert!(vals.last() > vals.first(), "{end:?} TSval advances with the clock: {vals:?}");
    }
    for (i, t) in ts.iter().enumerate().skip(1) {
        assert!(ts[..i].iter().any(|p| p.0 != t.0 && p.1 == t.2), "segment {i} echoes a TSval of the peer: {ts:?}");
    }
}

// TIME-WAIT records with timestamps (`--timestamps` on both ends).

/// The hello server and its client, both with `--timestamps`.
fn ts_pair() -> (EndpointConfig, EndpointConfig) {
    let mut server = cfg("10.0.0.2/24", AppKind::Hello, ClosePolicy::Active, None);
    let mut client = tw_client();
    server.timestamps = true;
    client.timestamps = true;
    (server, client)
}

/// The TCP options of a packet as smoltcp reads them (checksum verified):
/// (TSval, TSecr) if it has a timestamp, and the TCP header length.
fn tcp_ts(p: &[u8]) -> (Option<(u32, u32)>, usize) {
    use smoltcp::wire::{Ipv4Packet, TcpPacket, TcpRepr};
    let caps = smoltcp::phy::ChecksumCapabilities::default();
    let ip = Ipv4Packet::new_checked(p).unwrap();
    let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
    let repr = TcpRepr::parse(&tcp, &ip.src_addr().into(), &ip.dst_addr().into(), &caps).unwrap();
    (repr.timestamp.map(|t| (t.tsval, t.tsecr)), usize::from(tcp.header_len()))
}

/// [`to_b`] (no payload) with a timestamp option carrying `tsval`.
fn to_b_ts(b: &Bench, flags: &str, seq_from_rcv_nxt: i64, tsval: u32) -> Vec<u8> {
    let (_, seg) = to_b(b, flags, seq_from_rcv_nxt, 0);
    let ts = crate::wire::Timestamp { tsval, tsecr: 1 };
    crate::wire::tcp_packet_ts(seg.src, seg.dst, seg.flags, seg.seq, seg.ack, seg.win, Some(ts))
}

/// B's TIME-WAIT record of connection 1.
fn tw_record(b: &Bench) -> timewait::TwRecord {
    let t = b.link.b.connections(b.link.now()).iter().find(|c| c.id == 1).unwrap().tuple;
    b.link.b.tw.get(&t).copied().unwrap()
}

#[test]
fn test_time_wait_timestamps_record_keeps_peer_tsval_and_answers_echo_it() {
    let (server, client) = ts_pair();
    let (mut b, _) = in_time_wait_with(server, client);
    b.link.b.take_events();
    // The record keeps the TSval of A's last segment (its FIN, which B
    // ACKed: at or before B's last ACK).
    let last_from_a = b.link.wire.iter().rev().find(|(_, from, _)| *from == End::A).unwrap();
    let (Some((peer_tsval, _)), _) = tcp_ts(&last_from_a.2) else { panic!("A sends timestamps") };
    assert!(crate::wire::parse(&last_from_a.2).unwrap().flags.fin, "A's FIN is its last segment");
    let rec = tw_record(&b);
    assert_eq!(rec.ts_recent(), Some(peer_tsval));

    // A retransmitted FIN (with a newer TSval): ACKed, the answer carries
    // TSopt echoing the record's ts_recent (as Linux's tcp_v4_timewait_ack),
    // and TSval from closelab's clock.
    for k in 1..=2 {
        let p = to_b_ts(&b, "F.", -1, peer_tsval.wrapping_add(k));
        let (ev, out) = raw_answer_of(&mut b, p);
        assert!(notes(&ev)[0].starts_with("TIME-WAIT: the peer's FIN again"), "{ev:?}");
        assert_eq!(out.len(), 1);
        let seg = crate::wire::parse(&out[0]).unwrap();
        assert_eq!((seg.flags.to_string(), seg.seq, seg.ack), (".".to_string(), rec.snd_nxt, rec.rcv_nxt));
        let (ts, header) = tcp_ts(&out[0]);
        let (tsval, tsecr) = ts.expect("the answer carries TSopt");
        assert_eq!(tsecr, peer_tsval, "echoes ts_recent, which an out-of-window FIN does not change");
        assert_ne!(tsval, 0);
        assert_eq!(header, 32, "NOP NOP TS");
    }
    // Data is answered the same way.
    let (data, _) = to_b(&b, "P.", 0, 10);
    let (_, out) = raw_answer_of(&mut b, data);
    assert_eq!(tcp_ts(&out[0]).0.map(|t| t.1), Some(peer_tsval));
}

#[test]
fn test_time_wait_timestamps_paws_answered_as_linux() {
    let (server, client) = ts_pair();
    let (mut b, _) = in_time_wait_with(server, client);
    b.link.run_for(Duration::from_secs(10));
    b.link.b.take_events();
    let recent = tw_record(&b).ts_recent().unwrap();
    let left = |b: &Bench| b.link.b.connections(b.link.now())[0].deadline;
    assert_eq!(left(&b), Some(Duration::from_secs(50)));

    // A bare ACK at rcv_nxt would be absorbed; with a TSval older than
    // ts_recent PAWS rejects it: ACKed (echoing ts_recent), timer
    // restarted (Linux's tcp_timewait_state_process).
    let old = recent.wrapping_sub(1000);
    let p = to_b_ts(&b, ".", 0, old);
    let (ev, out) = raw_answer_of(&mut b, p);
    assert_eq!(out.len(), 1, "{ev:?}");
    assert_eq!(tcp_ts(&out[0]).0.map(|t| t.1), Some(recent));
    let n = notes(&ev);
    assert!(n[0].contains(&format!("old TSval {old} (ts_recent {recent}: PAWS")), "{n:?}");
    assert!(n[0].ends_with("timer restarted (60s)") || n[0].contains("timer restarted"), "{n:?}");
    assert_eq!(left(&b), Some(Duration::from_secs(60)));
    assert_eq!(tw_record(&b).ts_recent(), Some(recent), "a rejected segment does not move ts_recent");

    // An RST at rcv_nxt with an old TSval: ignored, TIME-WAIT stays.
    let p = to_b_ts(&b, "R", 0, old);
    let (ev, out) = raw_answer_of(&mut b, p);
    assert!(out.is_empty());
    assert_eq!(b.link.b.time_wait_count(), 1);
    assert!(notes(&ev)[0].contains("PAWS"), "{:?}", notes(&ev));

    // The same ACK with a newer TSval: in window, absorbed, ts_recent moves.
    let newer = recent.wrapping_add(5);
    let p = to_b_ts(&b, ".", 0, newer);
    let (_, out) = raw_answer_of(&mut b, p);
    assert!(out.is_empty());
    assert_eq!(tw_record(&b).ts_recent(), Some(newer));
}

#[test]
fn test_time_wait_timestamps_syn_with_newer_tsval_starts_connection_2() {
    let (server, client) = ts_pair();
    let (mut b, _) = in_time_wait_with(server, client);
    b.link.b.take_events();
    let rec = tw_record(&b);
    let recent = rec.ts_recent().unwrap();
    // A SYN below rcv_nxt without a timestamp, then with an old one: the
    // TIME-WAIT's ACK (the second after the 500 ms rate limit).
    let (p, _) = to_b(&b, "S", -100, 0);
    let (_, out) = answer_of(&mut b, p);
    assert_eq!(out.iter().map(|s| (s.seq, s.ack)).collect::<Vec<_>>(), [(rec.snd_nxt, rec.rcv_nxt)]);
    b.link.run_for(ms(600));
    b.link.b.take_events();
    let p = to_b_ts(&b, "S", -100, recent.wrapping_sub(1));
    let (_, out) = answer_of(&mut b, p);
    assert_eq!(out.iter().map(|s| (s.seq, s.ack)).collect::<Vec<_>>(), [(rec.snd_nxt, rec.rcv_nxt)], "PAWS");
    assert_eq!(b.link.b.time_wait_count(), 1);

    // At rcv_nxt (not after it) but with a newer TSval: TIME-WAIT ends and
    // connection 2 starts from the SYN (RFC 6191, as Linux).
    let syn_tsval = recent.wrapping_add(1000);
    let p = to_b_ts(&b, "S", 0, syn_tsval);
    let (ev, out) = raw_answer_of(&mut b, p);
    assert_eq!(states(&ev, 1), vec![(TimeWait, Closed, SEG)]);
    assert_eq!(states(&ev, 2), vec![(Listen, SynReceived, SEG)]);
    let n = notes(&ev);
    assert!(n[0].contains(&format!("its TSval {syn_tsval} newer than the peer's last (RFC 6191)")), "{n:?}");
    let isn = rec.snd_nxt.wrapping_add(65537);
    assert!(n[0].contains(&format!("the new connection's ISN is Linux's: {isn}")), "{n:?}");
    assert_eq!(out.len(), 1);
    let synack = crate::wire::parse(&out[0]).unwrap();
    assert_eq!((synack.flags.to_string(), synack.seq), ("S.".to_string(), isn));
    assert_eq!(tcp_ts(&out[0]).0.map(|t| t.1), Some(syn_tsval), "the new connection's SYN-ACK echoes the SYN");
    assert_eq!(b.link.b.time_wait_count(), 0);
}

#[test]
fn test_time_wait_syn_below_rcv_nxt_with_newer_tsval_starts_connection_2() {
    // Strictly below rcv_nxt (where the sequence rule alone would refuse).
    let (server, client) = ts_pair();
    let (mut b, _) = in_time_wait_with(server, client);
    b.link.b.take_events();
    let recent = tw_record(&b).ts_recent().unwrap();
    let p = to_b_ts(&b, "S", -100, recent.wrapping_add(1));
    let (ev, out) = answer_of(&mut b, p);
    assert_eq!(states(&ev, 2), vec![(Listen, SynReceived, SEG)]);
    assert_eq!(out.iter().map(|s| s.flags.to_string()).collect::<Vec<_>>(), ["S."]);
}

#[test]
fn test_time_wait_answers_carry_no_options_without_timestamps() {
    // Neither end, only the server, only the client: timestamps are not
    // negotiated, the record keeps no TSval, answers carry no options and
    // a segment's TSval changes nothing (no PAWS).
    for (server_ts, client_ts) in [(false, false), (true, false), (false, true)] {
        let mut server = cfg("10.0.0.2/24", AppKind::Hello, ClosePolicy::Active, None);
        let mut client = tw_client();
        server.timestamps = server_ts;
        client.timestamps = client_ts;
        let (mut b, _) = in_time_wait_with(server, client);
        b.link.b.take_events();
        let rec = tw_record(&b);
        assert_eq!(rec.ts_recent(), None, "server {server_ts} client {client_ts}");
        let (p, _) = to_b(&b, "F.", -1, 0);
        let (_, out) = raw_answer_of(&mut b, p);
        assert_eq!(out.len(), 1);
        assert_eq!(tcp_ts(&out[0]), (None, 20), "server {server_ts} client {client_ts}");
        // An "old" TSval on an ACK at rcv_nxt: still absorbed.
        let p = to_b_ts(&b, ".", 0, 1);
        let (_, out) = raw_answer_of(&mut b, p);
        assert!(out.is_empty());
        let p = to_b_ts(&b, ".", 0, u32::MAX / 2 + 5);
        let (_, out) = raw_answer_of(&mut b, p);
        assert!(out.is_empty());
    }
}

/// A live connection's TS.Recent: set from the peer's SYN, moved by a
/// segment at or before the last ACK sent, not by one beyond it, nor by an
/// older TSval (RFC 7323 §4.3).
#[test]
fn test_timestamps_ts_recent_tracked_on_live_connection() {
    let mut server = cfg("10.0.0.2/24", AppKind::Sink, ClosePolicy::Never, None);
    let mut client = cfg("10.0.0.1/24", AppKind::Sink, ClosePolicy::Never, None);
    server.timestamps = true;
    client.timestamps = true;
    let mut b = bench(server, client, 0);
    b.link.run_for(Duration::from_secs(1));
    let c = &b.link.b.conns[&1];
    assert_eq!(c.state, Established);
    let syn = b.link.wire.iter().find(|(_, from, _)| *from == End::A).unwrap();
    let syn_tsval = tcp_ts(&syn.2).0.unwrap().0;
    let recent = c.ts_recent.expect("the peer's SYN carried TSopt");
    assert!(!seq_lt(recent, syn_tsval), "at least the SYN's TSval");
    let (tuple, last_ack) = (c.tuple, c.seq.last_ack.unwrap());
    let send = |b: &mut Bench, seq: u32, tsval: u32| {
        let ts = crate::wire::Timestamp { tsval, tsecr: 1 };
        let ack = b.link.b.conns[&1].seq.snd_max.unwrap();
        let p =
            crate::wire::tcp_packet_ts(tuple.remote, tuple.local, Flags::parse(".").unwrap(), seq, ack, 1000, Some(ts));
        let now = b.link.now();
        b.link.b.receive(now, p);
        b.link.b.conns[&1].ts_recent
    };
    assert_eq!(send(&mut b, last_ack.wrapping_add(5000), recent + 100), Some(recent), "beyond the last ACK");
    assert_eq!(send(&mut b, last_ack, recent.wrapping_sub(10)), Some(recent), "older TSval");
    assert_eq!(send(&mut b, last_ack, recent + 50), Some(recent + 50));

    // Without the option in the peer's SYN nothing is tracked.
    let mut server = cfg("10.0.0.2/24", AppKind::Sink, ClosePolicy::Never, None);
    server.timestamps = true;
    let client = cfg("10.0.0.1/24", AppKind::Sink, ClosePolicy::Never, None);
    let mut b = bench(server, client, 0);
    b.link.run_for(Duration::from_secs(1));
    assert_eq!(b.link.b.conns[&1].ts_recent, None);
}

#[test]
fn more_addresses_than_smoltcp_holds_are_refused() {
    let mut c = cfg("10.0.0.2/24", AppKind::Sink, ClosePolicy::Never, None);
    c.addrs.push(cidr("fd00::2/64"));
    assert!(Endpoint::new(c.clone(), t0()).is_ok(), "two addresses fit");
    c.addrs.push(cidr("10.0.1.2/24"));
    assert_eq!(c.addrs.len(), MAX_ADDRS + 1);
    let err = Endpoint::new(c, t0()).err().expect("a third address is refused");
    assert_eq!(err, EndpointError::TooManyAddrs { addr: cidr("10.0.1.2/24"), max: MAX_ADDRS });
    assert_eq!(err.to_string(), "cannot add address 10.0.1.2/24: the interface holds at most 2");
}

#[test]
fn test_data_and_fin_in_fin_wait_acked_at_once_under_linux_model() {
    // Linux ACKs the FIN that ends FIN-WAIT at once (tcp_fin calls
    // tcp_send_ack). smoltcp delays an ACK 10 ms, and a delay timer that
    // data started keeps running when the FIN comes: long enough for a
    // Linux peer's tail loss probe to send its FIN again, whose second ACK
    // from our TIME-WAIT then draws an RST (docs/smoltcp-notes.md). Under
    // the Linux model nothing is delayed once our FIN is queued; smoltcp's
    // own model keeps smoltcp's delay.
    for (model, delayed) in [(TimeWaitModel::Linux, false), (TimeWaitModel::Smoltcp, true)] {
        let mut server = cfg("10.0.0.2/24", AppKind::Hello, ClosePolicy::Active, None);
        server.time_wait_model = model;
        let client = cfg("10.0.0.1/24", AppKind::Sink, ClosePolicy::Never, None);
        let mut b = bench(server, client, 0);
        let fw2 = |l: &Link| l.b.state(1) == Some(FinWait2);
        b.link.run_while(t0() + Duration::from_secs(2), |l| !fw2(l));
        assert!(fw2(&b.link), "{model:?}: B in FIN-WAIT-2");
        let ev = b.link.b.take_events();
        let last_in = ev
            .iter()
            .rev()
            .find_map(|e| match &e.kind {
                EventKind::Segment { dir: Dir::In, seg } => Some(seg.clone()),
                _ => None,
            })
            .unwrap();
        let (rcv_nxt, snd_nxt) = (last_in.seq.wrapping_add(last_in.len as u32), last_in.ack);
        let (src, dst) = (last_in.src, last_in.dst);
        let ack = Flags::parse(".").unwrap();
        let mut data = crate::wire::parse(&crate::wire::tcp_packet(src, dst, ack, rcv_nxt, snd_nxt, 1000)).unwrap();
        data.len = 10;
        let (_, out) = answer_of(&mut b, payload_packet(&data));
        let acks: Vec<u32> = out.iter().map(|s| s.ack).collect();
        assert_eq!(acks, if delayed { vec![] } else { vec![rcv_nxt + 10] }, "{model:?}: data in FIN-WAIT-2");
        // The FIN right after: ACKed at once under Linux's model; under
        // smoltcp's, the running timer holds the ACK of both.
        let fin = crate::wire::tcp_packet(src, dst, Flags::parse("F.").unwrap(), rcv_nxt + 10, snd_nxt, 1000);
        let (ev, out) = answer_of(&mut b, fin);
        assert_eq!(states(&ev, 1), vec![(FinWait2, TimeWait, SEG)], "{model:?}");
        let acks: Vec<u32> = out.iter().map(|s| s.ack).collect();
        assert_eq!(acks, if delayed { vec![] } else { vec![rcv_nxt + 11] }, "{model:?}: the FIN");
    }
}
