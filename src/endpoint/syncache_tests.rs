//! Tests for the SYN cache: half-open connections without buffers, the
//! backlog, cookies and the memory budget. Spoofed clients are hand-built
//! packets; the real client is a second endpoint over the in-memory link.

use super::*;
use crate::endpoint::link::Link;
use crate::endpoint::tests::{PORT, SEG, TIMER, states, t0};
use crate::endpoint::{AppKind, ClosePolicy, Endpoint, EndpointConfig, Policy};
use crate::event::{Event, EventKind, TcpState::*};
use smoltcp::wire::{TcpControl, TcpPacket, TcpRepr, TcpSeqNumber};
use std::net::SocketAddr;

fn server_cfg() -> EndpointConfig {
    let mut c = EndpointConfig::new(crate::config::parse_cidr("10.0.0.2/24").unwrap());
    c.app = AppKind::Echo;
    c.policy = Policy { close: ClosePolicy::Passive, close_after: None, rst_on_unread: false };
    c.seed = 7;
    c
}

fn server(cfg: EndpointConfig) -> Endpoint {
    let mut ep = Endpoint::new(cfg, t0()).expect("endpoint config fits smoltcp");
    ep.listen(PORT);
    ep
}

/// The 4-tuple of spoofed client `i` (10.0.0.x:port) at the server.
fn spoofed(i: u32) -> FourTuple {
    let host = 3 + (i % 250) as u8;
    let port = 10_000 + (i / 250) as u16;
    FourTuple { local: "10.0.0.2:7000".parse().unwrap(), remote: SocketAddr::from(([10, 0, 0, host], port)) }
}

/// A segment from the tuple's remote end to its local end.
fn packet(tuple: &FourTuple, control: TcpControl, seq: u32, ack: Option<u32>, payload: &[u8]) -> Vec<u8> {
    let repr = TcpRepr {
        src_port: tuple.remote.port(),
        dst_port: tuple.local.port(),
        control,
        seq_number: TcpSeqNumber(seq as i32),
        ack_number: ack.map(|a| TcpSeqNumber(a as i32)),
        window_len: 65535,
        window_scale: None,
        max_seg_size: if control == TcpControl::Syn { Some(1460) } else { None },
        sack_permitted: false,
        sack_ranges: [None; 3],
        timestamp: None,
        payload,
    };
    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{IpAddress, IpProtocol, Ipv4Packet, Ipv4Repr, Ipv6Packet, Ipv6Repr};
    let caps = ChecksumCapabilities::default();
    let (src, dst): (IpAddress, IpAddress) = (tuple.remote.ip().into(), tuple.local.ip().into());
    let (ip_len, mut p) = match (src, dst) {
        (IpAddress::Ipv4(src_addr), IpAddress::Ipv4(dst_addr)) => {
            let ip = Ipv4Repr {
                src_addr,
                dst_addr,
                next_header: IpProtocol::Tcp,
                payload_len: repr.buffer_len(),
                hop_limit: 64,
            };
            let mut p = vec![0; ip.buffer_len() + repr.buffer_len()];
            ip.emit(&mut Ipv4Packet::new_unchecked(&mut p[..]), &caps);
            (ip.buffer_len(), p)
        }
        (IpAddress::Ipv6(src_addr), IpAddress::Ipv6(dst_addr)) => {
            let ip = Ipv6Repr {
                src_addr,
                dst_addr,
                next_header: IpProtocol::Tcp,
                payload_len: repr.buffer_len(),
                hop_limit: 64,
            };
            let mut p = vec![0; ip.buffer_len() + repr.buffer_len()];
            ip.emit(&mut Ipv6Packet::new_unchecked(&mut p[..]));
            (ip.buffer_len(), p)
        }
        _ => unreachable!("one IP version per tuple"),
    };
    repr.emit(&mut TcpPacket::new_unchecked(&mut p[ip_len..]), &src, &dst, &caps);
    p
}

fn syn(tuple: &FourTuple, isn: u32) -> Vec<u8> {
    packet(tuple, TcpControl::Syn, isn, None, &[])
}

/// Everything the endpoint sends now, parsed.
fn sent(ep: &mut Endpoint, now: Instant) -> Vec<Segment> {
    ep.poll(now);
    std::iter::from_fn(|| ep.transmit()).map(|p| wire::parse(&p).unwrap()).collect()
}

fn notes(ev: &[Event]) -> Vec<String> {
    ev.iter()
        .filter_map(|e| match &e.kind {
            EventKind::Note { text } => Some(text.clone()),
            _ => None,
        })
        .collect()
}

// Tests for half-open connections.

#[test]
fn test_half_open_costs_no_buffers() {
    let mut cfg = server_cfg();
    cfg.syn_backlog = 20_000;
    let mut ep = server(cfg);
    for i in 0..20_000 {
        ep.receive(t0(), syn(&spoofed(i), 1000 + i));
    }
    let out = sent(&mut ep, t0());
    assert_eq!(out.len(), 20_000, "one SYN-ACK per SYN");
    assert!(out.iter().all(|s| s.flags.syn && s.flags.ack));
    assert_eq!(ep.half_open(), 20_000);
    assert_eq!(ep.len(), 20_000);
    let per = ep.memory() / 20_000;
    assert!(per <= 4096, "{per} bytes per half-open connection (64 KiB buffers are not allocated)");
    // The SYN-ACK's receive window is the one a full connection advertises.
    assert_eq!(ep.state(1), Some(SynReceived));
}

#[test]
fn test_half_open_handshake_completes_with_the_same_isn() {
    let mut ep = server(server_cfg());
    let t = spoofed(0);
    ep.receive(t0(), syn(&t, 5000));
    let first = sent(&mut ep, t0());
    assert_eq!(first.len(), 1);
    // The SYN-ACK is lost; its retransmission after 1 s carries the same ISN.
    let again = sent(&mut ep, t0() + Duration::from_secs(1));
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].seq, again[0].ack), (first[0].seq, 5001));
    // The client's SYN again: answered with the same SYN-ACK.
    ep.receive(t0() + Duration::from_millis(1500), syn(&t, 5000));
    let dup = sent(&mut ep, t0() + Duration::from_millis(1500));
    assert_eq!(dup[0].seq, first[0].seq);
    // The handshake's ACK with data: the real connection is made and echoes.
    let now = t0() + Duration::from_secs(2);
    let isn = first[0].seq;
    ep.receive(now, packet(&t, TcpControl::None, 5001, Some(isn.wrapping_add(1)), b"hello"));
    let out = sent(&mut ep, now);
    assert_eq!(ep.half_open(), 0);
    assert_eq!(ep.state(1), Some(Established));
    let echo = out.iter().find(|s| s.len == 5).expect("echoed");
    assert_eq!((echo.seq, echo.ack), (isn.wrapping_add(1), 5006));
    assert!(!out.iter().any(|s| s.flags.syn), "the SYN-ACK is not sent again");
    let ev = ep.take_events();
    assert_eq!(states(&ev, 1), vec![(Listen, SynReceived, SEG), (SynReceived, Established, SEG)]);
}

#[test]
fn test_half_open_gives_up_at_the_handshake_timeout() {
    let mut ep = server(server_cfg());
    ep.receive(t0(), syn(&spoofed(0), 1));
    let mut synacks = sent(&mut ep, t0()).len();
    let mut now = t0();
    for _ in 0..200 {
        now += Duration::from_millis(500);
        synacks += sent(&mut ep, now).len();
    }
    // SYN-ACKs at 0, 1, 3, 7 and 15 s; the next (31 s, Linux's fifth
    // retry) would come after the 30 s handshake timeout: silence, no RST.
    assert_eq!(synacks, 5);
    assert_eq!(ep.len(), 0);
    let ev = ep.take_events();
    assert_eq!(states(&ev, 1), vec![(Listen, SynReceived, SEG), (SynReceived, Closed, TIMER)]);
}

#[test]
fn test_half_open_rst_at_rcv_nxt_ends_it() {
    let mut ep = server(server_cfg());
    let t = spoofed(0);
    ep.receive(t0(), syn(&t, 100));
    sent(&mut ep, t0());
    // Out of window: ignored.
    ep.receive(t0(), packet(&t, TcpControl::Rst, 90_000, None, &[]));
    assert_eq!(ep.half_open(), 1);
    ep.receive(t0(), packet(&t, TcpControl::Rst, 101, None, &[]));
    assert_eq!(ep.half_open(), 0);
    assert_eq!(ep.memory(), ep.config().buffer, "only the scratch buffer is left");
}

#[test]
fn test_half_open_wrong_ack_draws_rst() {
    let mut ep = server(server_cfg());
    let t = spoofed(0);
    ep.receive(t0(), syn(&t, 100));
    let isn = sent(&mut ep, t0())[0].seq;
    ep.receive(t0(), packet(&t, TcpControl::None, 101, Some(isn.wrapping_add(7)), &[]));
    let out = sent(&mut ep, t0());
    assert!(out.len() == 1 && out[0].flags.rst && out[0].seq == isn.wrapping_add(7));
    assert_eq!(ep.half_open(), 1, "the half-open connection stays (RFC 9293 §3.10.7.3)");
}

// Tests for the backlog and the memory budget.

#[test]
fn test_backlog_full_drops_syns_silently_and_counts_them() {
    let mut cfg = server_cfg();
    cfg.syn_backlog = 10;
    cfg.syncookies = false;
    let mut ep = server(cfg);
    for i in 0..50 {
        ep.receive(t0(), syn(&spoofed(i), 1));
    }
    let out = sent(&mut ep, t0());
    assert_eq!(out.len(), 10, "no RST for a dropped SYN");
    assert_eq!(ep.half_open(), 10);
    assert_eq!(ep.syn_drops(), SynDrops { backlog: 40, ..SynDrops::default() });
    let n = notes(&ep.take_events());
    assert_eq!(n, vec!["SYN backlog 10 full: dropping new SYNs (counted in ss -s and the exit summary)".to_string()]);
}

#[test]
fn test_memory_budget_drops_syns_and_completions() {
    let mut cfg = server_cfg();
    // Room for the scratch buffer and about five full connections.
    cfg.max_memory = 64 * 1024 + 5 * 140 * 1024;
    let mut ep = server(cfg);
    for i in 0..10 {
        ep.receive(t0(), syn(&spoofed(i), 1));
    }
    let isns: Vec<u32> = sent(&mut ep, t0()).iter().map(|s| s.seq).collect();
    assert_eq!(ep.half_open(), 10, "half-open connections are small");
    // Completing a handshake allocates the buffers: only what fits does; the
    // other ACKs are dropped (the client retransmits), as Linux drops an
    // ACK when the accept queue is full.
    for (i, isn) in isns.iter().enumerate() {
        ep.receive(t0(), packet(&spoofed(i as u32), TcpControl::None, 2, Some(isn.wrapping_add(1)), &[]));
    }
    sent(&mut ep, t0());
    let full = ep.len() - ep.half_open();
    assert!((1..10).contains(&full), "{full} full connections");
    assert!(ep.memory() <= ep.config().max_memory);
    assert_eq!(ep.syn_drops().memory, 10 - full as u64);
    assert!(notes(&ep.take_events())[0].starts_with("memory budget 782336 bytes reached"));
    // A new SYN that could not complete within the budget is dropped too.
    let mut cfg = server_cfg();
    cfg.max_memory = 100 * 1024;
    let mut ep = server(cfg);
    ep.receive(t0(), syn(&spoofed(0), 1));
    assert!(sent(&mut ep, t0()).is_empty());
    assert_eq!(ep.syn_drops(), SynDrops { memory: 1, ..SynDrops::default() });
}

// Tests for SYN cookies.

#[test]
fn test_cookie_past_the_backlog_opens_a_connection() {
    let mut cfg = server_cfg();
    cfg.syn_backlog = 1;
    let mut ep = server(cfg);
    ep.receive(t0(), syn(&spoofed(0), 1));
    let t = spoofed(1);
    ep.receive(t0(), syn(&t, 777));
    let out = sent(&mut ep, t0());
    assert_eq!(out.len(), 2, "both SYNs answered");
    assert_eq!(ep.half_open(), 1, "the cookie keeps no state");
    assert_eq!(ep.syn_drops().cookies, 1);
    let cookie = out[1].seq;
    // A forged ACK is not a cookie.
    ep.receive(t0(), packet(&spoofed(2), TcpControl::None, 5, Some(cookie.wrapping_add(1)), &[]));
    assert!(sent(&mut ep, t0())[0].flags.rst);
    // The real ACK, 10 s later, with data.
    let now = t0() + Duration::from_secs(10);
    ep.receive(now, packet(&t, TcpControl::None, 778, Some(cookie.wrapping_add(1)), b"abc"));
    let out = sent(&mut ep, now);
    let echo = out.iter().find(|s| s.len == 3).expect("echoed on the cookie's connection");
    assert_eq!((echo.seq, echo.ack), (cookie.wrapping_add(1), 781));
    assert_eq!(ep.syn_drops().cookies_ok, 1);
    let id = ep.connections(now).iter().find(|c| c.tuple == t).map(|c| c.id).unwrap();
    assert_eq!(ep.state(id), Some(Established));
}

#[test]
fn test_cookie_expires_after_two_periods() {
    let mut cfg = server_cfg();
    cfg.syn_backlog = 0;
    let mut ep = server(cfg);
    let t = spoofed(1);
    ep.receive(t0(), syn(&t, 777));
    let cookie = sent(&mut ep, t0())[0].seq;
    let late = t0() + COOKIE_PERIOD * 2 + Duration::from_secs(1);
    ep.receive(late, packet(&t, TcpControl::None, 778, Some(cookie.wrapping_add(1)), &[]));
    assert!(sent(&mut ep, late)[0].flags.rst);
    assert_eq!(ep.syn_drops().cookies_ok, 0);
}

/// A real client over the link connects while spoofed SYNs fill the
/// backlog and never complete.
#[test]
fn test_real_client_connects_during_a_flood() {
    for cookies in [true, false] {
        let mut cfg = server_cfg();
        cfg.syn_backlog = 100;
        cfg.syncookies = cookies;
        cfg.handshake_timeout = Duration::from_secs(5);
        let mut b = server(cfg);
        for i in 0..1000 {
            b.receive(t0(), syn(&spoofed(i), i));
        }
        while b.transmit().is_some() {}
        let mut client = EndpointConfig::new(crate::config::parse_cidr("10.0.0.1/24").unwrap());
        client.seed = 3;
        let a = Endpoint::new(client, t0()).expect("endpoint config fits smoltcp");
        let mut link = Link::new(a, b, t0(), Duration::from_millis(10));
        let id = link.a.connect(t0(), "10.0.0.2:7000".parse().unwrap(), 0).unwrap();
        link.run_for(Duration::from_secs(40));
        let ev = link.a.take_events();
        let reached = states(&ev, id).iter().any(|s| s.1 == Established);
        if cookies {
            assert!(reached, "cookie handshake");
            assert_eq!(link.b.syn_drops().cookies_ok, 1);
        } else {
            // Without cookies the client's SYN is dropped until the flood's
            // half-open connections time out (5 s here), then it connects on
            // a SYN retransmission (at 7 s).
            assert!(reached, "connects once the backlog drains");
            assert!(link.b.syn_drops().backlog >= 901);
        }
    }
}

#[test]
fn test_seed_for_isn_makes_smoltcp_answer_with_that_isn() {
    // smoltcp cannot be told an ISN; the seed run backwards from the state
    // that draws it must make the SYN-ACK carry exactly that ISN, for IPv4
    // (one draw for the IP ident first) and IPv6, at the edges of u32.
    let v4 = spoofed(1);
    let v6 = FourTuple { local: "[fd00::2]:7000".parse().unwrap(), remote: "[fd00::9]:40000".parse().unwrap() };
    for (addr, tuple) in [("10.0.0.2/24", v4), ("fd00::2/64", v6)] {
        let mut cfg = server_cfg();
        cfg.addrs = vec![crate::config::parse_cidr(addr).unwrap()];
        let syn = syn(&tuple, 4242);
        for (i, isn) in [0u32, 1, 65537, 0x8000_0000, u32::MAX - 1, u32::MAX, 0x1234_5678].into_iter().enumerate() {
            let mut dev = MemoryDevice::new(1500);
            let mut scratch = vec![0u8; 1024];
            let salt = super::seed(cfg.seed, &tuple, 4242, i as u64);
            let out = synack(&cfg, seed_for_isn(isn, salt), t0(), &syn, &tuple, &mut scratch, &mut dev);
            let s = crate::wire::parse(&out[0]).unwrap();
            assert_eq!((s.flags.to_string(), s.seq), ("S.".to_string(), isn), "{addr} isn {isn}");
        }
    }
}
