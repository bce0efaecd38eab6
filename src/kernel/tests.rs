//! The diff of two sock_diag looks, without root: hand-made looks and an
//! in-memory endpoint that has (or has not) the connection.

use super::*;
use crate::endpoint::EndpointConfig;
use crate::wire::Flags;
use smoltcp::time::Instant;

const LINUX: &str = "10.0.0.1:40000";
const CLOSELAB: &str = "10.0.0.2:7000";

fn key() -> SocketKey {
    (LINUX.parse().unwrap(), CLOSELAB.parse().unwrap())
}

/// An endpoint listening on 7000; with `conn`, Linux's handshake made
/// connection 1 (a half-open connection is the SYN cache's, not yet in the
/// table).
fn endpoint(conn: bool) -> Endpoint {
    let mut ep = Endpoint::new(EndpointConfig::new(crate::config::parse_cidr("10.0.0.2/24").unwrap()), Instant::ZERO)
        .expect("endpoint config fits smoltcp");
    ep.listen(7000);
    if conn {
        let (linux, us) = key();
        ep.receive(Instant::ZERO, crate::wire::tcp_packet(linux, us, Flags::parse("S").unwrap(), 1000, 0, 65535));
        let synack = crate::wire::parse(&ep.transmit().expect("a SYN-ACK")).unwrap();
        let ack =
            crate::wire::tcp_packet(linux, us, Flags::parse(".").unwrap(), 1001, synack.seq.wrapping_add(1), 65535);
        ep.receive(Instant::ZERO, ack);
        assert_eq!(ep.find(&FourTuple { local: us, remote: linux }), Some(1));
    }
    ep
}

fn sock(state: TcpState, timer: Option<(TimerKind, u32)>) -> KernelSocket {
    KernelSocket {
        state,
        local: key().0,
        remote: key().1,
        timer: timer.map(|(kind, retrans)| KernelTimer { kind, remaining_ms: 1500, retrans }),
        recv_q: 0,
        send_q: 0,
        inode: 1,
        orphan: false,
    }
}

fn look(s: Option<KernelSocket>) -> HashMap<SocketKey, KernelSocket> {
    s.into_iter().map(|s| ((s.local, s.remote), s)).collect()
}

/// Each event as `conn: text`.
fn shown(ev: &[Event]) -> Vec<String> {
    ev.iter()
        .map(|e| {
            assert_eq!(e.side, Side::Linux);
            let what = match &e.kind {
                EventKind::State { from, to, cause } => format!("{from} -> {to} ({cause:?})"),
                EventKind::Timer { name, retrans, .. } => format!("timer {name} retrans {retrans}"),
                other => format!("{other:?}"),
            };
            format!("{:?} {:.1} {what}", e.conn, e.t)
        })
        .collect()
}

#[test]
fn test_a_close_seen_in_looks_becomes_states_and_timers() {
    use TcpState::*;
    let ep = endpoint(true);
    let mut tr = Tracker::new();
    let mut ev: Vec<Event> = Vec::new();
    let looks = [
        Some(sock(Established, None)),
        Some(sock(FinWait1, Some((TimerKind::On, 0)))),
        // Same state, one retransmission more: a timer event.
        Some(sock(FinWait1, Some((TimerKind::On, 1)))),
        Some(sock(FinWait1, Some((TimerKind::On, 1)))),
        Some(sock(FinWait2, None)),
        Some(sock(TimeWait, Some((TimerKind::TimeWait, 0)))),
        None,
    ];
    for (i, l) in looks.into_iter().enumerate() {
        tr.update(0.1 * (i + 1) as f64, look(l), &ep, &mut ev);
    }
    assert_eq!(
        shown(&ev),
        [
            "Some(1) 0.1 CLOSED -> ESTABLISHED (Observed)",
            "Some(1) 0.2 ESTABLISHED -> FIN-WAIT-1 (Observed)",
            "Some(1) 0.3 timer on retrans 1",
            "Some(1) 0.5 FIN-WAIT-1 -> FIN-WAIT-2 (Observed)",
            "Some(1) 0.6 FIN-WAIT-2 -> TIME-WAIT (Observed)",
            "Some(1) 0.6 timer timewait retrans 0",
            "Some(1) 0.7 TIME-WAIT -> CLOSED (Observed)",
        ]
    );
    assert!(tr.sockets().next().is_none(), "the socket is gone");
}

#[test]
fn test_events_wait_for_their_connection_then_go_without_one() {
    // Linux's SYN-SENT is seen before closelab has the connection: held,
    // then emitted with its own time once PENDING_MAX has passed.
    let ep = endpoint(false);
    let mut tr = Tracker::new();
    let mut ev: Vec<Event> = Vec::new();
    tr.update(0.1, look(Some(sock(TcpState::SynSent, Some((TimerKind::On, 0))))), &ep, &mut ev);
    tr.update(1.0, look(Some(sock(TcpState::SynSent, Some((TimerKind::On, 1))))), &ep, &mut ev);
    assert!(ev.is_empty(), "{:?}", shown(&ev));
    assert!(tr.retransmitting());
    tr.update(2.2, look(Some(sock(TcpState::SynSent, Some((TimerKind::On, 1))))), &ep, &mut ev);
    assert_eq!(shown(&ev), ["None 0.1 CLOSED -> SYN-SENT (Observed)"]);
    // The rest comes out at the end of the story: nothing is lost.
    tr.flush(&ep, &mut ev);
    assert_eq!(shown(&ev)[1..], ["None 1.0 timer on retrans 1"]);
}

#[test]
fn test_events_held_get_the_connection_once_it_exists() {
    let mut tr = Tracker::new();
    let mut ev: Vec<Event> = Vec::new();
    tr.update(0.1, look(Some(sock(TcpState::SynSent, None))), &endpoint(false), &mut ev);
    assert!(ev.is_empty());
    let ep = endpoint(true);
    tr.update(0.2, look(Some(sock(TcpState::Established, None))), &ep, &mut ev);
    assert_eq!(
        shown(&ev),
        ["Some(1) 0.1 CLOSED -> SYN-SENT (Observed)", "Some(1) 0.2 SYN-SENT -> ESTABLISHED (Observed)"]
    );
}

#[test]
fn test_a_new_socket_on_a_time_wait_tuple_ends_the_old_one_first() {
    // Linux accepted a SYN on its TIME-WAIT's 4-tuple: the old socket ends
    // (TIME-WAIT -> CLOSED), then the new one starts; never TIME-WAIT -> SYN-RECV.
    let ep = endpoint(true);
    let mut tr = Tracker::new();
    let mut ev: Vec<Event> = Vec::new();
    tr.update(0.1, look(Some(sock(TcpState::TimeWait, None))), &ep, &mut ev);
    tr.update(0.2, look(Some(sock(TcpState::SynReceived, None))), &ep, &mut ev);
    assert_eq!(
        shown(&ev),
        [
            "Some(1) 0.1 CLOSED -> TIME-WAIT (Observed)",
            "Some(1) 0.2 TIME-WAIT -> CLOSED (Observed)",
            "Some(1) 0.2 CLOSED -> SYN-RECEIVED (Observed)",
        ]
    );
}
