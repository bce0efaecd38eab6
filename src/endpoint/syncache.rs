//! Half-open connections without their buffers (a SYN cache).
//!
//! A smoltcp socket owns its receive and send buffers from the moment it
//! exists (there is no API to give it buffers later), so a socket per SYN
//! costs both buffers (~128 KiB at 64 KiB each) while the handshake may
//! never complete: a SYN flood then costs memory without bound. Instead a
//! SYN for a listening port becomes a [`HalfOpen`] entry: the 4-tuple, the
//! SYN's bytes and a seed (~0.3 KiB). The SYN-ACK is made by smoltcp itself,
//! with a throwaway socket on an interface whose random generator is seeded
//! from that seed (the socket's buffers are one scratch pair, borrowed), so
//! the initial sequence number is the same every time the SYN is replayed:
//! for SYN-ACK retransmissions and when the handshake's ACK arrives. Only
//! then is the real socket made, with its full buffers: the stored SYN is
//! replayed into it (its SYN-ACK is already on the wire and is not sent
//! again) and the ACK follows, so smoltcp runs the whole state machine.
//!
//! Beyond the backlog (`--syn-backlog`, like Linux's tcp_max_syn_backlog) a
//! SYN keeps no state at all: it is answered the same way from a seed that
//! depends only on the 4-tuple, the client's ISN, a secret and the time
//! (a SYN cookie, as Linux's tcp_syncookies=1 does), and an ACK for an
//! unknown 4-tuple is checked against those seeds. The cookie's SYN keeps
//! only the MSS (rounded down to a table entry, like Linux's cookies
//! without timestamps): such a connection has no window scaling or SACK.

use smoltcp::iface::{Config, Interface, PollResult, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{HardwareAddress, IpListenEndpoint};

use std::cmp::Reverse;

use super::device::MemoryDevice;
use super::{Conn, ConnInfo, Endpoint, EndpointConfig, IdMap, TupleHashKey};
use crate::event::{Cause, ConnId, Dir, EventKind, TcpState};
use crate::wire::{self, FourTuple, Segment};
use std::collections::HashMap;

/// The first SYN-ACK retransmission timeout (smoltcp's and Linux's 1 s).
pub const SYNACK_RTO: Duration = Duration::from_secs(1);

/// How long a cookie stays valid (Linux: the counter advances every 64 s
/// and the last two are accepted).
pub const COOKIE_PERIOD: Duration = Duration::from_secs(64);

/// MSS values a cookie SYN may carry (Linux's msstab for IPv4).
pub const COOKIE_MSS: [u16; 4] = [536, 1300, 1440, 1460];

/// SYNs that got no connection, counted for `ss -s` and the summary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SynDrops {
    /// Dropped: the SYN backlog was full (and cookies are off).
    pub backlog: u64,
    /// Dropped: a connection would pass the memory budget.
    pub memory: u64,
    /// Answered with a SYN cookie (backlog full), no state kept.
    pub cookies: u64,
    /// Connections opened from a valid cookie.
    pub cookies_ok: u64,
}

impl SynDrops {
    /// The non-zero counts by name, for the exit summary.
    pub fn counted(&self) -> Vec<(String, u64)> {
        [
            ("SYN dropped (backlog full)", self.backlog),
            ("SYN or handshake ACK dropped (memory budget)", self.memory),
            ("SYN cookies sent (backlog full)", self.cookies),
            ("connections from SYN cookies", self.cookies_ok),
        ]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| (k.to_string(), n))
        .collect()
    }
}

/// The SYN cache: half-open connections by id and by 4-tuple, what they
/// hold, the handshake's scratch buffer, the cookie secret and the counts.
#[derive(Debug)]
pub(super) struct SynCache {
    pub(super) half_open: IdMap<HalfOpen>,
    pub(super) by_tuple: HashMap<FourTuple, ConnId, TupleHashKey>,
    /// Bytes held by `half_open` (see [`HalfOpen::cost`]).
    pub(super) bytes: usize,
    /// The throwaway handshake socket's receive buffer (allocated once).
    pub(super) scratch: Vec<u8>,
    /// Keys the handshake seeds and cookies.
    pub(super) secret: u64,
    /// SYNs not kept, by reason.
    pub(super) drops: SynDrops,
    /// When the last cookie was sent: ACKs of unknown 4-tuples are checked
    /// against cookies only while one can still be valid (each check
    /// replays up to 8 handshakes).
    pub(super) last_cookie: Option<Instant>,
}

impl SynCache {
    pub(super) fn new(seed: u64) -> SynCache {
        SynCache {
            half_open: IdMap::default(),
            by_tuple: HashMap::with_hasher(TupleHashKey::default()),
            bytes: 0,
            scratch: Vec::new(),
            secret: mix(seed ^ 0x636c_6f73_656c_6162),
            drops: SynDrops::default(),
            last_cookie: None,
        }
    }

    /// Whether a timer `(id, generation)` is a live half-open connection's.
    pub(super) fn is_timer(&self, id: ConnId, generation: u64) -> bool {
        self.half_open.get(&id).is_some_and(|h| h.generation == generation)
    }

    /// `ss` rows of the half-open connections.
    pub(super) fn infos(&self, now: Instant) -> impl Iterator<Item = ConnInfo> + '_ {
        self.half_open.values().map(move |h| ConnInfo {
            id: h.id,
            tuple: h.tuple,
            state: TcpState::SynReceived,
            recv_q: 0,
            send_q: 0,
            deadline: Some(if h.deadline > now { h.deadline - now } else { Duration::ZERO }),
            retrans: h.retries,
            probes: 0,
            unacked: 1,
            peer_fin: false,
        })
    }
}

/// A SYN that is waiting for its handshake's ACK.
#[derive(Debug)]
pub struct HalfOpen {
    pub id: ConnId,
    pub tuple: FourTuple,
    /// The client's ISN (the SYN's sequence number) and ours (the SYN-ACK's).
    pub client_isn: u32,
    pub isn: u32,
    /// The SYN as received (IP header included).
    pub syn: Box<[u8]>,
    pub seed: u64,
    pub since: Instant,
    /// SYN-ACKs sent again.
    pub retries: u32,
    pub deadline: Instant,
    pub generation: u64,
}

impl HalfOpen {
    /// Bytes this entry holds, for the memory budget: the entry, the SYN,
    /// and its two map slots.
    pub fn cost(&self) -> usize {
        std::mem::size_of::<HalfOpen>() + self.syn.len() + HALF_OPEN_MAP_SLOTS
    }
}

/// Two hash-map slots (by 4-tuple, by id) with their control bytes.
pub const HALF_OPEN_MAP_SLOTS: usize =
    std::mem::size_of::<(FourTuple, ConnId)>() + std::mem::size_of::<(ConnId, HalfOpen)>() + 2;

/// splitmix64: a keyed, well-mixed seed for the handshake's ISN.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The seed of a handshake: the endpoint's secret, the 4-tuple, the
/// client's ISN and a salt (a counter for cached SYNs, the cookie period
/// and MSS for cookies).
pub fn seed(secret: u64, tuple: &FourTuple, client_isn: u32, salt: u64) -> u64 {
    let mut h = mix(secret ^ salt);
    for part in [
        ip_bits(tuple.local.ip()),
        ip_bits(tuple.remote.ip()),
        ((tuple.local.port() as u64) << 16) | tuple.remote.port() as u64,
        client_isn as u64,
    ] {
        h = mix(h ^ part);
    }
    h | 1
}

/// smoltcp's random generator (sPCG32, `smoltcp::rand::Rand`): state
/// `s` steps to `s * M + A`; a draw returns `s >> (29 - (s >> 61))`.
const PCG_M: u64 = 0xbb2e_fcec_3c39_611d;
const PCG_A: u64 = 0x7590_ef39;

/// M's inverse modulo 2^64 (M is odd), by Newton's iteration.
const PCG_M_INV: u64 = {
    let mut x = PCG_M;
    let mut i = 0;
    while i < 6 {
        x = x.wrapping_mul(2u64.wrapping_sub(PCG_M.wrapping_mul(x)));
        i += 1;
    }
    x
};

/// The state before the step that leads to `s`.
const fn pcg_back(s: u64) -> u64 {
    s.wrapping_sub(PCG_A).wrapping_mul(PCG_M_INV)
}

/// A seed whose interface answers a SYN with ISN `isn`: smoltcp cannot
/// be told an ISN, but it draws it from the interface's generator, so the
/// seed is run backwards from a state that draws `isn`. An IPv4
/// interface draws once when it is made (the IP ident, redrawn while it
/// is 0), then the ISN. `salt` varies the bits the draw does not show.
/// `tests.rs` checks the SYN-ACK really carries `isn`.
pub fn seed_for_isn(isn: u32, salt: u64) -> u64 {
    let mut low = salt & ((1 << 29) - 1);
    loop {
        // Top three bits 0: the draw is bits 29..61 of the state.
        let s_isn = ((isn as u64) << 29) | low;
        let s_ident = pcg_back(s_isn);
        let ident = (s_ident >> (29 - (s_ident >> 61))) as u32;
        if (ident ^ (ident >> 16)) as u16 != 0 {
            return pcg_back(s_ident);
        }
        low = (low + 1) & ((1 << 29) - 1);
    }
}

fn ip_bits(ip: std::net::IpAddr) -> u64 {
    match ip {
        std::net::IpAddr::V4(v4) => u32::from(v4) as u64,
        std::net::IpAddr::V6(v6) => {
            let b = u128::from(v6);
            (b as u64) ^ ((b >> 64) as u64)
        }
    }
}

/// An interface like the endpoint's, with its random generator (and so
/// the next ISN) seeded by `seed`.
pub fn interface(cfg: &EndpointConfig, seed: u64, dev: &mut MemoryDevice, now: Instant) -> Interface {
    let mut config = Config::new(HardwareAddress::Ip);
    config.random_seed = seed;
    let mut iface = Interface::new(config, dev, now);
    iface.update_ip_addrs(|addrs| {
        for a in &cfg.addrs {
            // More than the interface can hold is a configuration error
            // the CLI prevents; ignore extra ones rather than panic.
            let _ = addrs.push(*a);
        }
    });
    for gw in &cfg.gateways {
        match gw {
            std::net::IpAddr::V4(v4) => {
                let _ = iface.routes_mut().add_default_ipv4_route(*v4);
            }
            std::net::IpAddr::V6(v6) => {
                let _ = iface.routes_mut().add_default_ipv6_route(*v6);
            }
        }
    }
    iface
}

/// Feeds `syn` to `sock` (listening on the SYN's destination) on an
/// interface seeded with `seed` and lets it answer once; returns the set
/// holding the socket, now in SYN-RECEIVED (or not, if smoltcp refused the
/// SYN), and what it sent (the SYN-ACK) in `dev.tx`.
pub fn replay<'a>(
    cfg: &EndpointConfig,
    seed: u64,
    now: Instant,
    syn: &[u8],
    tuple: &FourTuple,
    mut sock: tcp::Socket<'a>,
    dev: &mut MemoryDevice,
) -> (SocketSet<'a>, smoltcp::iface::SocketHandle) {
    let mut iface = interface(cfg, seed, dev, now);
    let ep = IpListenEndpoint { addr: Some(tuple.local.ip().into()), port: tuple.local.port() };
    let mut set = SocketSet::new(Vec::with_capacity(1));
    let listening = sock.listen(ep).is_ok();
    let handle = set.add(sock);
    if listening {
        dev.rx.push_back(syn.to_vec());
        iface.poll_ingress_single(now, dev, &mut set);
        dev.rx.clear();
        for _ in 0..4 {
            if iface.poll_egress(now, dev, &mut set) == PollResult::None {
                break;
            }
        }
    }
    (set, handle)
}

/// The SYN-ACK smoltcp sends for `syn` with `seed`, using `scratch` as the
/// throwaway socket's receive buffer (its size sets the advertised window
/// and scale, so it is the size of a real connection's buffer).
pub fn synack(
    cfg: &EndpointConfig,
    seed: u64,
    now: Instant,
    syn: &[u8],
    tuple: &FourTuple,
    scratch: &mut [u8],
    dev: &mut MemoryDevice,
) -> Vec<Vec<u8>> {
    let mut sock = tcp::Socket::new(tcp::SocketBuffer::new(scratch), tcp::SocketBuffer::new(Vec::new()));
    if cfg.timestamps {
        // As the real connection's socket: the SYN-ACK offers timestamps.
        sock.set_tsval_generator(Some(super::tsval));
    }
    let before = dev.tx.len();
    let (set, _) = replay(cfg, seed, now, syn, tuple, sock, dev);
    drop(set);
    dev.tx.drain(before..).collect()
}

/// Cookie seeds carry this bit in their salt, so they never equal a cached
/// SYN's seed (salted by its connection number).
const COOKIE_SALT: u64 = 1 << 63;

/// A canonical SYN for a cookie: the 4-tuple, the client's ISN, a fixed
/// window and one MSS from [`COOKIE_MSS`]: everything an ACK lets us
/// rebuild.
pub fn cookie_syn(tuple: &FourTuple, client_isn: u32, mss: u16) -> Vec<u8> {
    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{IpAddress, IpProtocol, Ipv4Packet, Ipv4Repr, Ipv6Packet, Ipv6Repr, TcpPacket, TcpRepr};
    let tcp = TcpRepr {
        src_port: tuple.remote.port(),
        dst_port: tuple.local.port(),
        control: smoltcp::wire::TcpControl::Syn,
        seq_number: smoltcp::wire::TcpSeqNumber(client_isn as i32),
        ack_number: None,
        window_len: 65535,
        window_scale: None,
        max_seg_size: Some(mss),
        sack_permitted: false,
        sack_ranges: [None; 3],
        timestamp: None,
        payload: &[],
    };
    let caps = ChecksumCapabilities::default();
    let (src, dst): (IpAddress, IpAddress) = (tuple.remote.ip().into(), tuple.local.ip().into());
    match (src, dst) {
        (IpAddress::Ipv4(s4), IpAddress::Ipv4(d4)) => {
            let ip = Ipv4Repr {
                src_addr: s4,
                dst_addr: d4,
                next_header: IpProtocol::Tcp,
                payload_len: tcp.buffer_len(),
                hop_limit: 64,
            };
            let mut buf = vec![0; ip.buffer_len() + tcp.buffer_len()];
            ip.emit(&mut Ipv4Packet::new_unchecked(&mut buf[..]), &caps);
            tcp.emit(&mut TcpPacket::new_unchecked(&mut buf[ip.buffer_len()..]), &src, &dst, &caps);
            buf
        }
        (IpAddress::Ipv6(s6), IpAddress::Ipv6(d6)) => {
            let ip = Ipv6Repr {
                src_addr: s6,
                dst_addr: d6,
                next_header: IpProtocol::Tcp,
                payload_len: tcp.buffer_len(),
                hop_limit: 64,
            };
            let mut buf = vec![0; ip.buffer_len() + tcp.buffer_len()];
            ip.emit(&mut Ipv6Packet::new_unchecked(&mut buf[..]));
            tcp.emit(&mut TcpPacket::new_unchecked(&mut buf[ip.buffer_len()..]), &src, &dst, &caps);
            buf
        }
        _ => Vec::new(),
    }
}

/// The MSS option of a TCP segment in an IP packet, if any.
fn syn_mss(packet: &[u8]) -> Option<u16> {
    use smoltcp::wire::{IpVersion, Ipv4Packet, Ipv6Packet, TcpOption, TcpPacket};
    let tcp: &[u8] = match IpVersion::of_packet(packet).ok()? {
        IpVersion::Ipv4 => {
            let ip = Ipv4Packet::new_checked(packet).ok()?;
            &packet[ip.header_len() as usize..]
        }
        IpVersion::Ipv6 => {
            Ipv6Packet::new_checked(packet).ok()?;
            &packet[40..]
        }
    };
    let t = TcpPacket::new_checked(tcp).ok()?;
    let mut opts = t.options();
    while !opts.is_empty() {
        let (rest, opt) = TcpOption::parse(opts).ok()?;
        match opt {
            TcpOption::EndOfList => break,
            TcpOption::MaxSegmentSize(m) => return Some(m),
            _ => {}
        }
        opts = rest;
    }
    None
}

impl Endpoint {
    /// Bytes one full connection costs: both buffers and the entry with its
    /// smoltcp socket.
    pub fn conn_cost(&self) -> usize {
        2 * self.cfg.buffer + std::mem::size_of::<Conn>() + std::mem::size_of::<tcp::Socket>() + 64
    }

    /// Memory the connection table accounts for: full connections at
    /// [`conn_cost`](Self::conn_cost), half-open ones at their entry's size,
    /// and the handshake's scratch buffer.
    pub fn memory(&self) -> usize {
        self.conns.len() * self.conn_cost() + self.syn.bytes + self.syn.scratch.len()
    }

    /// Half-open connections (SYN-RECEIVED without buffers).
    pub fn half_open(&self) -> usize {
        self.syn.half_open.len()
    }

    /// SYNs dropped or answered without state, by reason.
    pub fn syn_drops(&self) -> SynDrops {
        self.syn.drops
    }

    fn ensure_scratch(&mut self) {
        if self.syn.scratch.len() != self.cfg.buffer {
            self.syn.scratch = vec![0u8; self.cfg.buffer];
        }
    }

    /// Index of the cookie period `now` falls in.
    fn cookie_period(&self, now: Instant) -> u64 {
        (now - self.start).total_micros() / COOKIE_PERIOD.total_micros()
    }

    /// A bare SYN for a listening port and a new 4-tuple.
    /// Whether one more full connection would pass the memory budget; if
    /// so the drop is counted (and noted the first time).
    fn over_budget(&mut self, now: Instant) -> bool {
        let scratch = if self.syn.scratch.is_empty() { self.cfg.buffer } else { 0 };
        if self.memory() + scratch + self.conn_cost() <= self.cfg.max_memory {
            return false;
        }
        self.syn.drops.memory += 1;
        if self.syn.drops.memory == 1 {
            let text = format!(
                "memory budget {} bytes reached: dropping new SYNs and handshake ACKs (counted in ss -s and the exit summary)",
                self.cfg.max_memory
            );
            self.emit(now, None, EventKind::Note { text }, None);
        }
        true
    }

    /// A SYN for a listening port: a half-open connection, answered by a
    /// SYN-ACK. `isn`: the ISN to answer with (a SYN that reused a
    /// TIME-WAIT 4-tuple gets Linux's); otherwise one from the keyed seed.
    pub(super) fn syn(
        &mut self,
        now: Instant,
        tuple: FourTuple,
        packet: Vec<u8>,
        seg: Segment,
        shown: bool,
        isn: Option<u32>,
    ) {
        if self.over_budget(now) {
            if !shown {
                self.segment_event(now, None, Dir::In, &packet, Ok(seg));
            }
            return;
        }
        if self.syn.half_open.len() >= self.cfg.syn_backlog {
            if self.cfg.syncookies {
                self.send_cookie(now, tuple, packet, seg, shown);
                return;
            }
            self.syn.drops.backlog += 1;
            if self.syn.drops.backlog == 1 {
                let text = format!(
                    "SYN backlog {} full: dropping new SYNs (counted in ss -s and the exit summary)",
                    self.cfg.syn_backlog
                );
                self.emit(now, None, EventKind::Note { text }, None);
            }
            if !shown {
                self.segment_event(now, None, Dir::In, &packet, Ok(seg));
            }
            return;
        }
        let id = self.next_id;
        self.next_id += 1;
        let seed = seed(self.syn.secret, &tuple, seg.seq, id);
        let seed = isn.map_or(seed, |isn| seed_for_isn(isn, seed));
        let client_isn = seg.seq;
        if !shown {
            self.segment_event(now, Some(id), Dir::In, &packet, Ok(seg));
        }
        self.emit(
            now,
            Some(id),
            EventKind::State { from: TcpState::Listen, to: TcpState::SynReceived, cause: Cause::Segment },
            None,
        );
        let h = HalfOpen {
            id,
            tuple,
            client_isn,
            isn: 0,
            syn: packet.into_boxed_slice(),
            seed,
            since: now,
            retries: 0,
            deadline: now + SYNACK_RTO,
            generation: 1,
        };
        self.syn.bytes += h.cost();
        self.timers.push(Reverse((h.deadline, id, h.generation)));
        self.syn.half_open.insert(id, h);
        self.syn.by_tuple.insert(tuple, id);
        self.send_synack(now, id);
    }

    /// Sends the SYN-ACK of a half-open connection (again).
    fn send_synack(&mut self, now: Instant, id: ConnId) {
        self.ensure_scratch();
        let Some(h) = self.syn.half_open.get_mut(&id) else { return };
        let out = synack(&self.cfg, h.seed, now, &h.syn, &h.tuple, &mut self.syn.scratch, &mut self.dev);
        if let Some(s) = out.first().and_then(|p| wire::parse(p).ok()) {
            h.isn = s.seq;
        }
        for p in out {
            self.send(now, Some(id), p);
        }
    }

    fn drop_half_open(&mut self, id: ConnId) -> Option<HalfOpen> {
        let h = self.syn.half_open.remove(&id)?;
        self.syn.by_tuple.remove(&h.tuple);
        self.syn.bytes -= h.cost();
        Some(h)
    }

    /// A segment for a half-open connection's 4-tuple.
    pub(super) fn half_open_segment(&mut self, now: Instant, id: ConnId, packet: Vec<u8>, seg: Segment) {
        let Some(h) = self.syn.half_open.get(&id) else { return };
        let (client_isn, isn, tuple) = (h.client_isn, h.isn, h.tuple);
        if seg.flags.rst {
            let at_rcv_nxt = seg.seq == client_isn.wrapping_add(1);
            self.segment_event(now, Some(id), Dir::In, &packet, Ok(seg));
            // RFC 9293 §3.10.7.3: an RST in the window ends SYN-RECEIVED.
            if at_rcv_nxt {
                self.drop_half_open(id);
                self.emit(
                    now,
                    Some(id),
                    EventKind::State { from: TcpState::SynReceived, to: TcpState::Closed, cause: Cause::Segment },
                    None,
                );
            }
            return;
        }
        if seg.flags.syn && !seg.flags.ack {
            if seg.seq == client_isn {
                // The client's SYN again: our SYN-ACK was lost.
                self.segment_event(now, Some(id), Dir::In, &packet, Ok(seg));
                self.send_synack(now, id);
            } else {
                // A new incarnation: the old attempt is gone.
                self.drop_half_open(id);
                self.emit(
                    now,
                    Some(id),
                    EventKind::State { from: TcpState::SynReceived, to: TcpState::Closed, cause: Cause::Segment },
                    None,
                );
                self.syn(now, tuple, packet, seg, false, None);
            }
            return;
        }
        if seg.flags.ack && !seg.flags.syn && seg.ack == isn.wrapping_add(1) {
            if self.over_budget(now) {
                // No room for the buffers: drop the ACK and keep the
                // half-open connection (the client retransmits, or answers
                // the next SYN-ACK), as Linux drops it with a full accept
                // queue.
                self.segment_event(now, Some(id), Dir::In, &packet, Ok(seg));
                return;
            }
            let h = self.drop_half_open(id).expect("looked up above");
            if self.open_from_syn(now, id, h.tuple, h.seed, &h.syn, h.generation) {
                self.step(now, id, Some((packet, seg)));
            }
            return;
        }
        if seg.flags.ack {
            // An unacceptable ACK in SYN-RECEIVED draws an RST (RFC 9293
            // §3.10.7.3); smoltcp with no socket answers just that.
            self.stateless(now, packet, Some(seg));
        } else {
            self.segment_event(now, Some(id), Dir::In, &packet, Ok(seg));
        }
    }

    /// Makes the real connection `id` (full buffers) by replaying `syn`
    /// with `seed`: the socket is then in SYN-RECEIVED with the ISN already
    /// sent. Its SYN-ACK is not sent again.
    fn open_from_syn(
        &mut self,
        now: Instant,
        id: ConnId,
        tuple: FourTuple,
        seed: u64,
        syn: &[u8],
        generation: u64,
    ) -> bool {
        let sock = self.new_socket();
        let before = self.dev.tx.len();
        let (set, handle) = replay(&self.cfg, seed, now, syn, &tuple, sock, &mut self.dev);
        let sent: Vec<Vec<u8>> = self.dev.tx.drain(before..).collect();
        self.insert_conn(id, tuple, set, handle, 0);
        let timestamps = self.cfg.timestamps;
        let c = self.conns.get_mut(&id).expect("just inserted");
        c.generation = generation + 1;
        if timestamps {
            // The SYN decides whether timestamps are in use (the live
            // connection never saw it: the cache answered it).
            c.ts_recent = wire::tcp_timestamp(syn).map(|t| t.tsval);
        }
        c.state = c.socket().state().into();
        for p in &sent {
            if let Ok(s) = wire::parse(p) {
                c.seq.sent(&s);
            }
        }
        if c.state != TcpState::SynReceived {
            log::warn!("endpoint: replaying the SYN of conn={id} gave {}", c.state);
            self.remove(id);
            return false;
        }
        true
    }

    /// A half-open connection's timer: resend the SYN-ACK, or give up
    /// silently (as Linux does) after `--synack-retries` retransmissions
    /// (`close_timers.synack_retries`, Linux's tcp_synack_retries) or the
    /// handshake timeout.
    pub(super) fn half_open_timer(&mut self, now: Instant, id: ConnId) {
        let timeout = self.cfg.handshake_timeout;
        let limit = self.cfg.close_timers.synack_retries;
        let Some(h) = self.syn.half_open.get_mut(&id) else { return };
        let end = h.since + timeout;
        if h.retries >= limit || now >= end {
            let why = if h.retries >= limit {
                format!(
                    "{limit} retransmissions unanswered: the connection is dropped (--synack-retries (tcp_synack_retries) = {limit}), no segment sent, as Linux"
                )
            } else {
                format!(
                    "no ACK within the {timeout} handshake timeout: the half-open connection is dropped, no segment sent"
                )
            };
            self.drop_half_open(id);
            self.note(now, Some(id), why);
            self.emit(
                now,
                Some(id),
                EventKind::State { from: TcpState::SynReceived, to: TcpState::Closed, cause: Cause::Timer },
                None,
            );
            return;
        }
        h.retries += 1;
        let backoff = SYNACK_RTO * (1u32 << h.retries.min(10));
        h.deadline = (now + backoff).min(end);
        h.generation += 1;
        self.timers.push(Reverse((h.deadline, id, h.generation)));
        self.send_synack(now, id);
    }

    /// Beyond the backlog: answer with a SYN-ACK whose ISN is a cookie.
    fn send_cookie(&mut self, now: Instant, tuple: FourTuple, packet: Vec<u8>, seg: Segment, shown: bool) {
        let want = syn_mss(&packet).unwrap_or(536);
        let idx = COOKIE_MSS.iter().rposition(|m| *m <= want).unwrap_or(0);
        let canonical = cookie_syn(&tuple, seg.seq, COOKIE_MSS[idx]);
        let salt = COOKIE_SALT | (self.cookie_period(now) << 2) | idx as u64;
        let seed = seed(self.syn.secret, &tuple, seg.seq, salt);
        self.syn.drops.cookies += 1;
        self.syn.last_cookie = Some(now);
        if self.syn.drops.cookies == 1 {
            let text = format!(
                "SYN backlog {} full: answering new SYNs with SYN cookies (no state; counted in ss -s and the exit summary)",
                self.cfg.syn_backlog
            );
            self.emit(now, None, EventKind::Note { text }, None);
        }
        if !shown {
            self.segment_event(now, None, Dir::In, &packet, Ok(seg));
        }
        self.ensure_scratch();
        let out = synack(&self.cfg, seed, now, &canonical, &tuple, &mut self.syn.scratch, &mut self.dev);
        for p in out {
            self.send(now, None, p);
        }
    }

    /// An ACK for a listening port and an unknown 4-tuple: if it answers a
    /// cookie of this period or the last, the connection is made.
    /// Returns the segment back if it is not for a cookie.
    pub(super) fn cookie_ack(
        &mut self,
        now: Instant,
        tuple: FourTuple,
        packet: Vec<u8>,
        seg: Segment,
    ) -> Option<(Vec<u8>, Segment)> {
        if self.syn.last_cookie.is_none_or(|t| now - t > COOKIE_PERIOD * 2) {
            return Some((packet, seg));
        }
        let client_isn = seg.seq.wrapping_sub(1);
        let period = self.cookie_period(now);
        self.ensure_scratch();
        for p in [period, period.wrapping_sub(1)] {
            for (idx, mss) in COOKIE_MSS.iter().enumerate() {
                let canonical = cookie_syn(&tuple, client_isn, *mss);
                let seed = seed(self.syn.secret, &tuple, client_isn, COOKIE_SALT | (p << 2) | idx as u64);
                let out = synack(&self.cfg, seed, now, &canonical, &tuple, &mut self.syn.scratch, &mut self.dev);
                let isn = out.first().and_then(|p| wire::parse(p).ok()).map(|s| s.seq);
                if isn.map(|i| i.wrapping_add(1)) == Some(seg.ack) {
                    if self.over_budget(now) {
                        self.segment_event(now, None, Dir::In, &packet, Ok(seg));
                        return None;
                    }
                    let id = self.next_id;
                    self.next_id += 1;
                    self.emit(
                        now,
                        Some(id),
                        EventKind::State { from: TcpState::Listen, to: TcpState::SynReceived, cause: Cause::Segment },
                        None,
                    );
                    if self.open_from_syn(now, id, tuple, seed, &canonical, 0) {
                        self.syn.drops.cookies_ok += 1;
                        self.step(now, id, Some((packet, seg)));
                    } else {
                        self.segment_event(now, None, Dir::In, &packet, Ok(seg));
                    }
                    return None;
                }
            }
        }
        Some((packet, seg))
    }
}

#[cfg(test)]
#[path = "syncache_tests.rs"]
mod tests;
