//! Fuzz harnesses: one function per untrusted input closelab reads, each
//! taking arbitrary bytes and panicking only when a property is broken.
//!
//! The `cargo fuzz` targets in `fuzz/` call these (libFuzzer, nightly), and
//! `tests/it/fuzz_corpus.rs` runs the same functions over the checked-in
//! corpus `fuzz/corpus/TARGET/` on the stable toolchain, so CI checks every
//! input the fuzzer ever found interesting. A crash the fuzzer finds goes
//! into that corpus and stays a regression test.
//!
//! Not part of closelab's interface (hidden from the docs); it lives in the
//! library so both runners share one copy. Pure like the layers it drives:
//! no I/O, no clock (the endpoint harness uses a virtual one).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{IpAddress, IpProtocol, Ipv4Packet, Ipv4Repr, Ipv6Packet, Ipv6Repr, TcpPacket};

use crate::control_proto::{ActionResult, ConnRef, Request};
use crate::endpoint::link::Link;
use crate::endpoint::{AppKind, ClosePolicy, Endpoint, EndpointConfig, Policy, TimeWaitSyn};
use crate::event::{ConnId, EventKind, TcpState};
use crate::fault::FaultRule;
use crate::view::json::{self, Record};
use crate::view::ss::Row;
use crate::view::trace;
use crate::wire::{self, Flags, ParseError};

/// A harness: any bytes in, a panic only when a property is broken.
pub type Harness = fn(&[u8]);

/// The fuzz targets by name, as `fuzz/fuzz_targets/NAME.rs` and the corpus
/// directories `fuzz/corpus/NAME/` spell them.
pub const TARGETS: &[(&str, Harness)] = &[
    ("wire", wire),
    ("endpoint", endpoint),
    ("scenario_file", scenario_file),
    ("fault_rule", fault_rule),
    ("jsonl", jsonl),
    ("control", control),
];

/// Reads the fuzzer's bytes as a little program; past the end every read
/// is 0, so any input is a complete program.
struct Bytes<'a> {
    data: &'a [u8],
}

impl<'a> Bytes<'a> {
    fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    /// Up to `n` bytes (fewer at the end).
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.data.split_at(n.min(self.data.len()));
        self.data = b;
        a
    }
}

// ---------------------------------------------------------------------------
// wire
// ---------------------------------------------------------------------------

/// The packet parser: never panics; a parsed segment's payload fits in the
/// packet behind both headers; bytes past the IP length change nothing; the
/// segment survives its JSON form and its flags their tcpdump spelling.
pub fn wire(data: &[u8]) {
    let Ok(seg) = wire::parse(data) else {
        // Errors are total too: Display never panics.
        let _ = wire::parse(data).unwrap_err().to_string();
        return;
    };
    let (ip_header, ip_len) = match data[0] >> 4 {
        4 => {
            let ip = Ipv4Packet::new_unchecked(data);
            assert!(seg.src.is_ipv4() && seg.dst.is_ipv4());
            (usize::from(ip.header_len()), usize::from(ip.total_len()))
        }
        6 => {
            let ip = Ipv6Packet::new_unchecked(data);
            assert!(seg.src.is_ipv6() && seg.dst.is_ipv6());
            (40, 40 + usize::from(ip.payload_len()))
        }
        v => panic!("parsed a segment from IP version {v}"),
    };
    assert!(ip_header >= 20 && ip_len <= data.len(), "IP lengths {ip_header}/{ip_len} in {} bytes", data.len());
    let tcp = TcpPacket::new_unchecked(&data[ip_header..ip_len]);
    let tcp_header = usize::from(tcp.header_len());
    assert!(tcp_header >= 20, "TCP header of {tcp_header} bytes");
    assert_eq!(ip_header + tcp_header + seg.len, ip_len, "payload length");
    // Trailing bytes after the IP packet (link padding) are not payload.
    let mut padded = data.to_vec();
    padded.extend_from_slice(&[0xa5; 7]);
    assert_eq!(wire::parse(&padded), Ok(seg.clone()), "padding changed the segment");
    // Cutting into the TCP header makes it unreadable, never another segment.
    if ip_len > ip_header && data[0] >> 4 == 4 {
        let mut cut = data[..ip_len - 1].to_vec();
        let total = (ip_len - 1) as u16;
        cut[2..4].copy_from_slice(&total.to_be_bytes());
        if let Ok(s) = wire::parse(&cut) {
            assert_eq!(s.len + 1, seg.len, "one byte less is one payload byte less");
        }
    }
    assert_eq!(Flags::try_from(seg.flags.to_string()), Ok(seg.flags));
    let back: wire::Segment = serde_json::from_str(&serde_json::to_string(&seg).unwrap()).unwrap();
    assert_eq!(back, seg);
    assert!(seg.seq_len() as usize >= seg.len);
}

// ---------------------------------------------------------------------------
// endpoint
// ---------------------------------------------------------------------------

const EP4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const PEER4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const EP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);
const PEER6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
const LISTEN_PORT: u16 = 7000;
const MAX_OPS: usize = 256;

/// Fault rules the endpoint harness can switch on (one bit each).
const FUZZ_FAULTS: &[&str] =
    &["drop in fin 1st", "delay 300ms out", "dup out fin", "reorder 2 in data", "drop 30% seed=3", "drop out ack"];

/// What the fuzzer, playing the peer, knows of one connection from the
/// segments closelab sent on it.
#[derive(Clone, Copy, Default)]
struct PeerView {
    /// The peer's next sequence number (closelab's last ACK).
    seq: u32,
    /// What the peer would acknowledge (closelab's seq + seq_len).
    ack: u32,
}

/// The endpoint fed arbitrary packet sequences by a fuzzer playing the peer:
/// raw bytes, well-formed segments with any flags, options, sequence numbers
/// (near what closelab expects, or anywhere) and payload, checksums right or
/// wrong; time jumps; application close/abort/shutdown; outgoing connects.
///
/// Properties: nothing panics; every packet closelab sends parses (TCP, or
/// smoltcp's ICMP answers) and comes from its own address; every state change starts where the connection's
/// last one ended; event times never go back; [`Endpoint::connections`]
/// agrees with the state events; after `poll(now)` nothing is due at `now`
/// again (no timer spins); and ten minutes of virtual time with no input
/// take a bounded number of polls.
pub fn endpoint(data: &[u8]) {
    let mut r = Bytes { data };
    let (c0, c1, c2) = (r.u8(), r.u8(), r.u8());
    let mut cfg = EndpointConfig::new(crate::config::parse_cidr("10.0.0.2/24").unwrap());
    cfg.addrs.push(crate::config::parse_cidr("fd00::2/64").unwrap());
    cfg.seed = u64::from(c2);
    cfg.buffer = 4096;
    cfg.max_conns = 6;
    cfg.app = match c0 % 6 {
        0 => AppKind::Echo,
        1 => AppKind::Sink,
        2 => AppKind::Source(5000),
        3 => AppKind::Hello,
        4 => AppKind::Http,
        _ => AppKind::Reply(b"HTTP/1.1 200 OK\r\n\r\n".to_vec()),
    };
    let close = [ClosePolicy::Active, ClosePolicy::Passive, ClosePolicy::Never, ClosePolicy::Abort, ClosePolicy::Half]
        [usize::from(c0 / 6 % 5)];
    let close_after = (c0 & 0x80 != 0).then(|| Duration::from_millis(u64::from(c2) * 10));
    cfg.policy = Policy { close, close_after, rst_on_unread: c1 & 0x40 != 0 };
    cfg.keep_alive = (c1 & 0x80 != 0).then(|| Duration::from_secs(1));
    cfg.user_timeout = (c2 & 1 != 0).then(|| Duration::from_secs(5));
    cfg.time_wait_syn = if c2 & 2 != 0 { TimeWaitSyn::Drop } else { TimeWaitSyn::Accept };
    cfg.faults = FUZZ_FAULTS
        .iter()
        .enumerate()
        .filter(|(i, _)| c1 & (1 << i) != 0)
        .map(|(_, s)| FaultRule::parse(s).expect("fuzz fault rules parse"))
        .collect();
    cfg.capture = c2 & 4 != 0;
    cfg.data_events = c2 & 8 == 0;

    let start = Instant::from_secs(1000);
    let mut now = start;
    let mut ep = Endpoint::new(cfg, now).expect("endpoint config fits smoltcp");
    ep.listen(LISTEN_PORT);
    let mut check = Checker::default();
    let mut peers: HashMap<(SocketAddr, SocketAddr), PeerView> = HashMap::new();

    for _ in 0..MAX_OPS {
        if r.is_empty() {
            break;
        }
        match r.u8() % 8 {
            0 => {
                let n = usize::from(r.u8());
                ep.receive(now, r.take(n).to_vec());
            }
            1..=3 => {
                let packet = segment(&mut r, &mut peers);
                ep.receive(now, packet);
            }
            4 => {
                let b = r.u8();
                let d = match b >> 6 {
                    0 => Duration::from_micros(u64::from(b) * 10),
                    1 => Duration::from_millis(u64::from(b & 0x3f) * 20),
                    2 => Duration::from_secs(u64::from(b & 0x3f)),
                    _ => Duration::from_secs(u64::from(b & 0x3f) * 60),
                };
                now += d;
            }
            5 => {
                let id = ConnId::from(r.u8() % 8);
                match r.u8() % 3 {
                    0 => ep.close(now, id),
                    1 => ep.abort(now, id),
                    _ => ep.shutdown(now, id),
                };
            }
            6 => {
                let b = r.u8();
                let remote = if b & 1 == 0 {
                    SocketAddr::new(IpAddr::V4(PEER4), 8000 + u16::from(b >> 6))
                } else {
                    SocketAddr::new(IpAddr::V6(PEER6), 8000 + u16::from(b >> 6))
                };
                let _ = ep.connect(now, remote, usize::from(r.u8()) * 16);
            }
            _ => {
                let b = r.u8();
                ep.note(now, None, format!("note {b}"));
            }
        }
        if ep.poll_at().is_some_and(|at| at <= now) {
            ep.poll(now);
        }
        if let Some(at) = ep.poll_at() {
            assert!(at > now, "due again at once after poll: {at} <= {now}");
        }
        check.drain(&mut ep, now, &mut peers);
    }

    // No more input: ten minutes of time alone (past every handshake
    // timeout, TIME-WAIT and retransmission backoff) without spinning.
    let limit = now + Duration::from_secs(600);
    let mut polls = 0u32;
    while let Some(at) = ep.poll_at() {
        if at > limit {
            break;
        }
        assert!(at > now, "poll_at went back: {at} <= {now}");
        now = at;
        ep.poll(now);
        check.drain(&mut ep, now, &mut peers);
        polls += 1;
        assert!(polls < 100_000, "ten idle minutes took more than 100000 polls");
    }
    let _ = ep.discard_held(now, "end of fuzz input");
    check.drain(&mut ep, now, &mut peers);
}

/// A TCP segment from the fuzzer-peer to closelab with a valid IP header.
fn segment(r: &mut Bytes, peers: &mut HashMap<(SocketAddr, SocketAddr), PeerView>) -> Vec<u8> {
    let how = r.u8();
    let v6 = how & 1 != 0;
    let (src_ip, dst_ip) = if v6 { (IpAddr::V6(PEER6), IpAddr::V6(EP6)) } else { (IpAddr::V4(PEER4), IpAddr::V4(EP4)) };
    // A connection closelab knows (it sent on it), or a fresh port.
    let known: Vec<(&(SocketAddr, SocketAddr), &PeerView)> =
        peers.iter().filter(|((l, _), _)| l.ip() == dst_ip).collect();
    let pick = r.u8();
    let ((local, remote), view) = if how & 2 != 0 && !known.is_empty() {
        let mut known = known;
        known.sort_by_key(|(k, _)| **k);
        let (k, v) = known[usize::from(pick) % known.len()];
        (*k, *v)
    } else {
        let dst_port = if pick & 0x80 != 0 { LISTEN_PORT + 1 } else { LISTEN_PORT };
        let l = SocketAddr::new(dst_ip, dst_port);
        let rem = SocketAddr::new(src_ip, 40000 + u16::from(pick & 3));
        ((l, rem), peers.get(&(l, rem)).copied().unwrap_or(PeerView { seq: 1_000_000, ack: 0 }))
    };
    let flags = r.u8();
    let seq = if how & 4 != 0 { r.u32() } else { view.seq.wrapping_add(r.u8() as i8 as u32) };
    let ack = if how & 8 != 0 { r.u32() } else { view.ack.wrapping_add(r.u8() as i8 as u32) };
    let window = r.u16();
    let opts = r.take(usize::from(how >> 6) * 4 + if how & 0x10 != 0 { 20 } else { 0 }).to_vec();
    let opts_len = opts.len().div_ceil(4) * 4;
    let payload_len = usize::from(r.u8() % 128) * if how & 0x20 != 0 { 11 } else { 1 };
    // The peer's next segment follows this one.
    let seq_len = payload_len as u32 + u32::from(flags & 3 != 0) + u32::from(flags & 3 == 3);
    peers.entry((local, remote)).or_insert(view).seq = seq.wrapping_add(seq_len);
    let tcp_len = 20 + opts_len + payload_len;

    let caps = ChecksumCapabilities::default();
    let ip_len = if v6 { 40 } else { 20 };
    let mut buf = vec![0u8; ip_len + tcp_len];
    let (src, dst) = (IpAddress::from(src_ip), IpAddress::from(dst_ip));
    match (src_ip, dst_ip) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let ip = Ipv4Repr {
                src_addr: s,
                dst_addr: d,
                next_header: IpProtocol::Tcp,
                payload_len: tcp_len,
                hop_limit: 64,
            };
            ip.emit(&mut Ipv4Packet::new_unchecked(&mut buf[..]), &caps);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let ip = Ipv6Repr {
                src_addr: s,
                dst_addr: d,
                next_header: IpProtocol::Tcp,
                payload_len: tcp_len,
                hop_limit: 64,
            };
            ip.emit(&mut Ipv6Packet::new_unchecked(&mut buf[..]));
        }
        _ => unreachable!("one family"),
    }
    let mut tcp = TcpPacket::new_unchecked(&mut buf[ip_len..]);
    tcp.set_src_port(remote.port());
    tcp.set_dst_port(local.port());
    tcp.set_seq_number(smoltcp::wire::TcpSeqNumber(seq as i32));
    tcp.set_ack_number(smoltcp::wire::TcpSeqNumber(ack as i32));
    tcp.set_header_len((20 + opts_len) as u8);
    tcp.clear_flags();
    tcp.set_fin(flags & 1 != 0);
    tcp.set_syn(flags & 2 != 0);
    tcp.set_rst(flags & 4 != 0);
    tcp.set_psh(flags & 8 != 0);
    tcp.set_ack(flags & 0x10 != 0);
    tcp.set_urg(flags & 0x20 != 0);
    tcp.set_ece(flags & 0x40 != 0);
    tcp.set_cwr(flags & 0x80 != 0);
    tcp.set_window_len(window);
    tcp.options_mut()[..opts.len()].copy_from_slice(&opts);
    for (i, b) in tcp.payload_mut().iter_mut().enumerate() {
        *b = b'a' + (i % 26) as u8;
    }
    tcp.fill_checksum(&src, &dst);
    // Now and then a bit flipped after the checksum.
    if how & 0x20 != 0 && flags & 0x20 != 0 {
        let at = usize::from(r.u8()) % buf.len();
        buf[at] ^= 1 << (r.u8() % 8);
    }
    buf
}

/// The event-stream properties of the endpoint harness.
#[derive(Default)]
struct Checker {
    last_t: f64,
    /// Each connection's state after its last state event.
    state: HashMap<ConnId, TcpState>,
}

impl Checker {
    fn drain(&mut self, ep: &mut Endpoint, now: Instant, peers: &mut HashMap<(SocketAddr, SocketAddr), PeerView>) {
        while let Some(p) = ep.transmit() {
            let seg = match wire::parse(&p) {
                Ok(seg) => seg,
                // smoltcp answers some non-TCP input itself (ICMP protocol
                // unreachable, echo replies), as a Linux host would.
                Err(ParseError::NotTcp(1 | 58)) => continue,
                Err(e) => panic!("closelab sent an unreadable packet ({e}): {p:?}"),
            };
            assert!(seg.src.ip() == IpAddr::V4(EP4) || seg.src.ip() == IpAddr::V6(EP6), "sent from {}", seg.src);
            let v = peers.entry((seg.src, seg.dst)).or_default();
            v.ack = seg.seq.wrapping_add(seg.seq_len());
            if seg.flags.ack {
                v.seq = seg.ack;
            }
        }
        let secs = ep.secs(now);
        for ev in ep.take_events() {
            assert!(ev.t >= self.last_t && ev.t <= secs, "event at {} after {} (now {secs})", ev.t, self.last_t);
            self.last_t = ev.t;
            if let (Some(id), EventKind::State { from, to, .. }) = (ev.conn, &ev.kind) {
                assert_ne!(from, to, "conn {id}: state change to the same state");
                if let Some(prev) = self.state.insert(id, *to) {
                    assert_eq!(prev, *from, "conn {id}: {from} -> {to} after reaching {prev}");
                } else {
                    assert!(matches!(from, TcpState::Listen | TcpState::Closed), "conn {id} starts in {from}");
                }
            }
        }
        for c in ep.connections(now) {
            let seen = self.state.get(&c.id).copied();
            assert_eq!(seen, Some(c.state), "conn {}: table says {}, events said {seen:?}", c.id, c.state);
        }
    }
}

// ---------------------------------------------------------------------------
// Text inputs
// ---------------------------------------------------------------------------

/// The scenario file parser: any text gives a spec or an error naming a line
/// of the file in one line of text; a parsed spec's fault rules print back
/// to themselves.
pub fn scenario_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match crate::scenario::file::parse(text) {
        Ok(spec) => {
            for f in &spec.faults {
                assert_eq!(FaultRule::parse(&f.to_string()).as_ref(), Ok(f), "{f}");
            }
            assert!(!spec.name.is_empty());
        }
        Err(e) => {
            let lines = text.matches('\n').count() + 1;
            assert!(e.line >= 1 && e.line <= lines, "line {} of {lines}", e.line);
            assert!(!e.message.is_empty(), "empty message");
            assert!(!e.to_string().contains('\n'), "error is not one line: {e}");
        }
    }
}

/// The fault-rule parser: a parsed rule's canonical spelling parses back
/// to the same rule; an error names the rule and a word of it, in one line.
pub fn fault_rule(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match FaultRule::parse(text) {
        Ok(rule) => {
            let canon = rule.to_string();
            assert_eq!(FaultRule::parse(&canon), Ok(rule.clone()), "{text:?} printed as {canon:?}");
            assert_eq!(FaultRule::parse(&canon).unwrap().to_string(), canon);
        }
        Err(e) => {
            assert_eq!(e.rule(), text);
            assert!(text.contains(e.word()), "bad word {:?} is not in {text:?}", e.word());
            let _ = e.to_string();
        }
    }
}

/// The JSON-lines reader: every line that reads as an event or a summary
/// writes back to a line that reads as the same thing (one normalization:
/// times are rounded to microseconds), and the whole input reads as runs
/// or fails naming one of its lines.
pub fn jsonl(data: &[u8]) {
    for raw in data.split(|b| *b == b'\n') {
        let Ok(text) = std::str::from_utf8(raw) else { continue };
        match json::parse_record(text) {
            Ok(Record::Event(ev)) => {
                let line = json::line(&ev);
                let back = json::parse_line(&line).unwrap_or_else(|e| panic!("{line}: {e}"));
                assert_eq!(json::line(&back), line, "{text}");
                let again = json::parse_line(&json::line(&back)).unwrap();
                assert_eq!(again, back, "{line}");
            }
            Ok(Record::Summary { side, summary }) => {
                let line = json::summary_line(&summary, side);
                match json::parse_record(&line) {
                    Ok(Record::Summary { side: s2, summary: back }) => {
                        assert_eq!(s2, side);
                        assert_eq!(json::summary_line(&back, s2), line);
                    }
                    other => panic!("{line} read back as {other:?}"),
                }
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
    match trace::read(data) {
        Ok(runs) => {
            for run in runs {
                let _ = (run.conns(), run.story());
            }
        }
        Err(e) => {
            let lines = data.split(|b| *b == b'\n').count();
            assert!(e.line >= 1 && e.line <= lines, "line {} of {lines}", e.line);
        }
    }
}

/// The control protocol, both ends: a request line that parses prints
/// back to itself; the server's answer to any line is JSON lines then
/// `end`, or one `error: …` line; answer lines the client reads (ss rows,
/// action results) print back to themselves.
pub fn control(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    // The server answers the first line of a request.
    let line = text.split('\n').next().unwrap_or("");
    match Request::parse(line) {
        Ok(req) => {
            assert_eq!(Request::parse(&req.to_string()), Ok(req), "{line:?} printed as {req}");
            if let Request::Act(_, c) = req {
                assert_eq!(ConnRef::parse(&c.to_string()), Ok(c));
            }
            answer_against_fixture(line);
        }
        Err(e) => assert!(!e.contains('\n') || line.contains('\n'), "error is not one line: {e}"),
    }
    for l in text.lines() {
        if let Ok(row) = Row::parse(l) {
            assert_eq!(Row::parse(&row.json()).unwrap(), row, "{l}");
        }
        if let Ok(res) = ActionResult::parse(l) {
            assert_eq!(ActionResult::parse(&res.json()).unwrap(), res, "{l}");
            let _ = res.to_string();
        }
    }
}

/// Answers `line` on an endpoint holding connection 1 in CLOSE-WAIT (the
/// peer closed, closelab never does) and checks the answer's shape.
fn answer_against_fixture(line: &str) {
    let mut b_cfg = EndpointConfig::new(crate::config::parse_cidr("10.0.0.2/24").unwrap());
    b_cfg.policy = Policy { close: ClosePolicy::Never, close_after: None, rst_on_unread: false };
    b_cfg.buffer = 4096;
    let mut a_cfg = EndpointConfig::new(crate::config::parse_cidr("10.0.0.1/24").unwrap());
    a_cfg.policy = Policy { close: ClosePolicy::Active, close_after: None, rst_on_unread: false };
    a_cfg.buffer = 4096;
    let start = Instant::from_secs(1000);
    let mut b = Endpoint::new(b_cfg, start).expect("endpoint config fits smoltcp");
    b.listen(LISTEN_PORT);
    let mut a = Endpoint::new(a_cfg, start).expect("endpoint config fits smoltcp");
    a.connect(start, SocketAddr::new(IpAddr::V4(EP4), LISTEN_PORT), 0).expect("fixture connects");
    let mut link = Link::new(a, b, start, Duration::from_millis(1));
    link.run_for(Duration::from_millis(50));
    let now = link.now();
    let before = link.b.connections(now);
    let out = crate::control_proto::answer(line, now, &mut link.b);
    assert!(out.ends_with('\n'), "{out:?}");
    let lines: Vec<&str> = out.lines().collect();
    if let Some(msg) = lines[0].strip_prefix(crate::control_proto::ERROR) {
        assert_eq!(lines.len(), 1, "{out:?}");
        assert!(!msg.is_empty());
        return;
    }
    assert_eq!(lines.last(), Some(&crate::control_proto::END), "{out:?}");
    for l in &lines[..lines.len() - 1] {
        match Request::parse(line).unwrap() {
            Request::Ss => {
                let row = Row::parse(l).unwrap_or_else(|e| panic!("{l}: {e}"));
                assert_eq!(row.json(), *l);
            }
            Request::Act(_, _) => {
                let res = ActionResult::parse(l).unwrap_or_else(|e| panic!("{l}: {e}"));
                let was = before.iter().find(|c| c.id == res.conn).expect("acted on a known connection");
                assert_eq!(was.state, res.from);
                assert_eq!(link.b.state(res.conn).unwrap_or(TcpState::Closed), res.to);
            }
        }
    }
}
