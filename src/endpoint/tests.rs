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

struct Bench {
    link: Link,
    client: ConnId,
}

/// B listens with `server`; A connects sending `send` bytes.
fn bench(server: EndpointConfig, client: EndpointConfig, send: usize) -> Bench {
    let mut b = Endpoint::new(server, t0());
    b.listen(PORT);
    let a = Endpoint::new(client, t0());
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
    b.link.run_for(Duration::from_secs(60));
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
    let server = cfg("10.0.0.2/24", AppKind::Hello, ClosePolicy::Active, None);
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
    b.link.run_for(Duration::from_secs(60));
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
    // The peer (smoltcp) has no FIN-WAIT-2 timeout either.
    assert_eq!(b.link.a.state(b.client), Some(FinWait2));
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
    b.link.run_for(Duration::from_secs(60));
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
    b.link.run_for(Duration::from_secs(60));
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
    let b_ep = Endpoint::new(server, t0()); // not listening
    let a = Endpoint::new(client, t0());
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
    let mut ep = Endpoint::new(cfg("10.0.0.2/24", AppKind::Echo, ClosePolicy::Active, None), t0());
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
fn test_time_wait_syn_cause_before_effect() {
    let server = cfg("10.0.0.2/24", AppKind::Hello, ClosePolicy::Active, None);
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
