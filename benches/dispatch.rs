//! Per-segment cost of closelab's per-connection dispatch with many idle
//! connections, next to the design it replaces: smoltcp's `Interface::poll`
//! over ONE shared `SocketSet` holding every socket.
//!
//! In memory, no root, virtual time: `cargo bench --bench dispatch`.
//!
//! How it works:
//! - Connections are opened by feeding hand-made SYN and ACK packets (correct
//!   checksums, smoltcp's `wire` emitters) from many client addresses and
//!   ports; the server's ISN is read from its SYN-ACK.
//! - Then one connection receives a steady stream of in-order 100-byte data
//!   segments while all the others sit idle in ESTABLISHED. The time per
//!   segment is total / segments (std::time::Instant), median of 5 runs.
//!   Every measured segment must reach the application: the benchmark
//!   asserts the received byte counts, so it never measures a drop path.
//! - closelab: `Endpoint::receive` + `poll` + draining `transmit()` and the
//!   events (into a sink that discards them), i.e. the tool's whole
//!   per-packet path.
//! - Shared set: `Interface::poll` with a queue device, then the application
//!   reads the socket. The sockets are built one by one in one-socket sets
//!   (cheap) and then moved into the shared set; the busy socket sits in the
//!   middle of the set (ingress scans until it finds it: the average case),
//!   and egress scans every socket.
//! - Memory: RSS (VmRSS in /proc/self/status) before and after opening
//!   100,000 connections in a fresh endpoint, first thing in the process.
//!
//! Without `--bench` (e.g. `cargo test --benches`) it runs a small smoke
//! version that checks the same things in a second.

use std::collections::VecDeque;
use std::hint::black_box;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration as StdDuration, Instant as StdInstant};

use closelab::endpoint::{AppKind, ClosePolicy, Endpoint, EndpointConfig, Policy};
use closelab::event::{ConnId, Event, Sink, TcpState};
use closelab::wire::{self, FourTuple};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, ChecksumCapabilities, Device, DeviceCapabilities, Medium};
use smoltcp::socket::{Socket, tcp};
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{
    HardwareAddress, IpAddress, IpCidr, IpProtocol, Ipv4Address, Ipv4Packet, Ipv4Repr, TcpControl, TcpPacket, TcpRepr,
    TcpSeqNumber,
};

const SERVER: Ipv4Address = Ipv4Address::new(10, 0, 0, 2);
const PORT: u16 = 7000;
/// Per-connection receive and send buffer.
const BUFFER: usize = 1024;
/// Payload of each measured data segment. The client announces no MSS, so
/// smoltcp assumes 536 and ACKs every 6th segment (> 1 MSS unacknowledged);
/// the 1 KiB window is never exceeded.
const PAYLOAD: usize = 100;
/// Virtual time between two measured segments.
const GAP: Duration = Duration::from_micros(1);
/// Segments prepared (untimed) before each timed batch.
const CHUNK: usize = 10_000;
/// Give up on the shared set at 100,000 if it would take longer than this.
const SHARED_LIMIT: StdDuration = StdDuration::from_secs(20);

struct Plan {
    levels: Vec<usize>,
    runs: usize,
    /// closelab: segments per run.
    segments: usize,
    /// Shared set: wall-clock budget per run (segment count adapts).
    shared_run_budget: StdDuration,
    shared_min_segments: usize,
    mem_conns: usize,
}

impl Plan {
    fn full() -> Plan {
        Plan {
            levels: vec![1, 1_000, 10_000, 100_000],
            runs: 5,
            segments: 200_000,
            shared_run_budget: StdDuration::from_millis(150),
            shared_min_segments: 20,
            mem_conns: 100_000,
        }
    }

    fn smoke() -> Plan {
        Plan {
            levels: vec![1, 100, 1_000],
            runs: 3,
            segments: 2_000,
            shared_run_budget: StdDuration::from_millis(10),
            shared_min_segments: 5,
            mem_conns: 1_000,
        }
    }
}

// ---- packets ----

/// Client `i`: 10.1.0.(1 + i / 50,000), port 10,000 + i % 50,000.
fn client(i: usize) -> (Ipv4Address, u16) {
    let host = 1 + (i / 50_000) as u8;
    (Ipv4Address::new(10, 1, 0, host), 10_000 + (i % 50_000) as u16)
}

fn client_isn(i: usize) -> u32 {
    (i as u32).wrapping_mul(2_654_435_761).wrapping_add(12_345)
}

/// An IPv4/TCP packet from a client to the server, checksums filled in.
fn packet(src: Ipv4Address, sport: u16, control: TcpControl, seq: u32, ack: Option<u32>, payload: &[u8]) -> Vec<u8> {
    let tcp = TcpRepr {
        src_port: sport,
        dst_port: PORT,
        control,
        seq_number: TcpSeqNumber(seq as i32),
        ack_number: ack.map(|a| TcpSeqNumber(a as i32)),
        window_len: 65_535,
        window_scale: None,
        max_seg_size: None,
        sack_permitted: false,
        sack_ranges: [None; 3],
        timestamp: None,
        payload,
    };
    let ip = Ipv4Repr {
        src_addr: src,
        dst_addr: SERVER,
        next_header: IpProtocol::Tcp,
        payload_len: tcp.buffer_len(),
        hop_limit: 64,
    };
    let caps = ChecksumCapabilities::default();
    let mut buf = vec![0u8; ip.buffer_len() + tcp.buffer_len()];
    ip.emit(&mut Ipv4Packet::new_unchecked(&mut buf[..]), &caps);
    tcp.emit(
        &mut TcpPacket::new_unchecked(&mut buf[ip.buffer_len()..]),
        &IpAddress::Ipv4(src),
        &IpAddress::Ipv4(SERVER),
        &caps,
    );
    buf
}

/// The client side of one open connection.
#[derive(Clone, Copy)]
struct Peer {
    ip: Ipv4Address,
    port: u16,
    /// Next sequence number the client sends.
    seq: u32,
    /// What the client acknowledges (server ISN + 1).
    ack: u32,
}

impl Peer {
    /// The next `n` in-order data segments.
    fn data(&mut self, n: usize) -> Vec<Vec<u8>> {
        let payload = [0x5au8; PAYLOAD];
        (0..n)
            .map(|_| {
                let p = packet(self.ip, self.port, TcpControl::Psh, self.seq, Some(self.ack), &payload);
                self.seq = self.seq.wrapping_add(PAYLOAD as u32);
                p
            })
            .collect()
    }
}

/// Finds the server's SYN-ACK to `ip:port` among `packets`; returns the
/// server's ISN.
fn syn_ack_isn<'a>(packets: impl IntoIterator<Item = &'a Vec<u8>>, ip: Ipv4Address, port: u16, isn: u32) -> u32 {
    let want = SocketAddr::new(IpAddr::V4(ip), port);
    for p in packets {
        if let Ok(s) = wire::parse(p)
            && s.flags.syn
            && s.flags.ack
            && s.dst == want
        {
            assert_eq!(s.ack, isn.wrapping_add(1), "SYN-ACK acknowledges the client's SYN");
            return s.seq;
        }
    }
    panic!("no SYN-ACK for {want}");
}

// ---- closelab ----

/// Discards events (they are closelab's product; producing them is part of
/// the per-segment cost, rendering them is not).
struct NullSink(u64);

impl Sink for NullSink {
    fn event(&mut self, ev: &Event) {
        black_box(ev);
        self.0 += 1;
    }
}

struct Lab {
    ep: Endpoint,
    now: Instant,
    sink: NullSink,
    /// Connections opened so far, in order; the first one is the busy one.
    peers: Vec<(Peer, ConnId)>,
}

impl Lab {
    fn new() -> Lab {
        let now = Instant::from_secs(1_000);
        let mut cfg = EndpointConfig::new(IpCidr::new(IpAddress::Ipv4(SERVER), 8));
        cfg.buffer = BUFFER;
        cfg.max_conns = 1_000_000;
        cfg.app = AppKind::Sink;
        cfg.policy = Policy { close: ClosePolicy::Never, close_after: None, rst_on_unread: false };
        cfg.data_events = false;
        cfg.seed = 0x5eed;
        let mut ep = Endpoint::new(cfg, now);
        ep.listen(PORT);
        Lab { ep, now, sink: NullSink(0), peers: Vec::new() }
    }

    /// Opens connections until there are `n`.
    fn grow(&mut self, n: usize) {
        let mut out = Vec::new();
        while self.peers.len() < n {
            let i = self.peers.len();
            let (ip, port) = client(i);
            let isn = client_isn(i);
            self.ep.receive(self.now, packet(ip, port, TcpControl::Syn, isn, None, &[]));
            out.clear();
            while let Some(p) = self.ep.transmit() {
                out.push(p);
            }
            let server_isn = syn_ack_isn(&out, ip, port, isn);
            let peer = Peer { ip, port, seq: isn.wrapping_add(1), ack: server_isn.wrapping_add(1) };
            self.ep.receive(self.now, packet(ip, port, TcpControl::None, peer.seq, Some(peer.ack), &[]));
            while self.ep.transmit().is_some() {}
            self.ep.drain_events(&mut self.sink);
            let tuple = FourTuple {
                local: SocketAddr::new(IpAddr::V4(SERVER), PORT),
                remote: SocketAddr::new(IpAddr::V4(ip), port),
            };
            let id = self.ep.find(&tuple).expect("connection exists after the handshake");
            assert_eq!(self.ep.state(id), Some(TcpState::Established), "connection {i} established");
            self.peers.push((peer, id));
            self.now += Duration::from_micros(3);
        }
        assert_eq!(self.ep.len(), n);
        // Let handshake-era timers (SYN-ACK retransmission, handshake
        // timeout) come due and be discarded now, not during a measurement.
        self.now += Duration::from_secs(31);
        self.ep.poll(self.now);
        while self.ep.transmit().is_some() {}
        self.ep.drain_events(&mut self.sink);
    }

    /// Sends `n` data segments on the busy connection; returns the time
    /// spent in closelab (packet preparation excluded).
    fn run(&mut self, n: usize) -> StdDuration {
        let (mut peer, id) = self.peers[0];
        let before = self.ep.received(id).expect("busy connection exists");
        let mut spent = StdDuration::ZERO;
        let mut left = n;
        while left > 0 {
            let batch = peer.data(left.min(CHUNK));
            left -= batch.len();
            let t = StdInstant::now();
            for p in batch {
                self.ep.receive(self.now, p);
                self.ep.poll(self.now);
                while let Some(out) = self.ep.transmit() {
                    black_box(out);
                }
                self.ep.drain_events(&mut self.sink);
                self.now += GAP;
            }
            spent += t.elapsed();
        }
        self.peers[0].0 = peer;
        let after = self.ep.received(id).expect("busy connection still exists");
        assert_eq!(after - before, n * PAYLOAD, "closelab: every measured segment reached the application");
        assert_eq!(self.ep.state(id), Some(TcpState::Established));
        spent
    }
}

// ---- shared SocketSet baseline ----

/// A device with a receive queue that keeps what smoltcp transmits.
struct QueueDevice {
    rx: VecDeque<Vec<u8>>,
    tx: Vec<Vec<u8>>,
}

struct RxToken(Vec<u8>);
struct TxToken<'a>(&'a mut Vec<Vec<u8>>);

impl phy::RxToken for RxToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = vec![0u8; len];
        let r = f(&mut buf);
        self.0.push(buf);
        r
    }
}

impl Device for QueueDevice {
    type RxToken<'a> = RxToken;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _now: Instant) -> Option<(RxToken, TxToken<'_>)> {
        let p = self.rx.pop_front()?;
        Some((RxToken(p), TxToken(&mut self.tx)))
    }

    fn transmit(&mut self, _now: Instant) -> Option<TxToken<'_>> {
        Some(TxToken(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = 1500;
        caps
    }
}

struct Shared {
    iface: Interface,
    dev: QueueDevice,
    now: Instant,
    /// The busy connection (client 0) and its socket while not in a set.
    busy: (Peer, Option<Socket<'static>>),
    received: usize,
    /// Idle ESTABLISHED sockets, not in a set.
    idle: Vec<Socket<'static>>,
    /// Clients opened so far (busy one included).
    opened: usize,
    /// Time spent opening connections (to project the 100,000 case).
    build_time: StdDuration,
}

impl Shared {
    fn new() -> Shared {
        let now = Instant::from_secs(1_000);
        let mut dev = QueueDevice { rx: VecDeque::new(), tx: Vec::new() };
        let mut config = Config::new(HardwareAddress::Ip);
        config.random_seed = 0x5eed;
        let mut iface = Interface::new(config, &mut dev, now);
        iface.update_ip_addrs(|a| {
            a.push(IpCidr::new(IpAddress::Ipv4(SERVER), 8)).expect("one address fits");
        });
        let mut s = Shared {
            iface,
            dev,
            now,
            busy: (Peer { ip: SERVER, port: 0, seq: 0, ack: 0 }, None),
            received: 0,
            idle: Vec::new(),
            opened: 0,
            build_time: StdDuration::ZERO,
        };
        let (peer, sock) = s.open();
        s.busy = (peer, Some(sock));
        s
    }

    /// Opens the next connection in a one-socket set (no scan), then takes
    /// the ESTABLISHED socket out of it.
    fn open(&mut self) -> (Peer, Socket<'static>) {
        let t = StdInstant::now();
        let i = self.opened;
        self.opened += 1;
        let (ip, port) = client(i);
        let isn = client_isn(i);
        let mut set = SocketSet::new(Vec::with_capacity(1));
        let mut sock =
            tcp::Socket::new(tcp::SocketBuffer::new(vec![0u8; BUFFER]), tcp::SocketBuffer::new(vec![0u8; BUFFER]));
        sock.listen(PORT).expect("listen");
        let h = set.add(sock);
        self.dev.rx.push_back(packet(ip, port, TcpControl::Syn, isn, None, &[]));
        self.iface.poll(self.now, &mut self.dev, &mut set);
        let server_isn = syn_ack_isn(&self.dev.tx, ip, port, isn);
        self.dev.tx.clear();
        let peer = Peer { ip, port, seq: isn.wrapping_add(1), ack: server_isn.wrapping_add(1) };
        self.dev.rx.push_back(packet(ip, port, TcpControl::None, peer.seq, Some(peer.ack), &[]));
        self.iface.poll(self.now, &mut self.dev, &mut set);
        self.dev.tx.clear();
        assert_eq!(set.get::<tcp::Socket>(h).state(), tcp::State::Established, "shared: connection {i} established");
        self.now += Duration::from_micros(3);
        self.build_time += t.elapsed();
        (peer, set.remove(h))
    }

    /// Opens connections until there are `n` (busy one included).
    fn grow(&mut self, n: usize) {
        while self.opened < n {
            let (_, sock) = self.open();
            self.idle.push(sock);
        }
    }

    /// Builds the shared set of `n` sockets with the busy one in the middle,
    /// runs `f` with it, then takes the sockets back out.
    fn with_set<R>(&mut self, n: usize, f: impl FnOnce(&mut Shared, &mut SocketSet<'static>, SocketHandle) -> R) -> R {
        self.grow(n);
        let idle = std::mem::take(&mut self.idle);
        let mut set = SocketSet::new(Vec::with_capacity(n));
        let mut handles = Vec::with_capacity(idle.len());
        let mut idle = idle.into_iter();
        for s in idle.by_ref().take((n - 1) / 2) {
            handles.push(set.add(s));
        }
        let busy = set.add(self.busy.1.take().expect("busy socket is out of any set"));
        for s in idle.by_ref() {
            handles.push(set.add(s));
        }
        assert_eq!(set.iter().count(), n);
        let r = f(self, &mut set, busy);
        self.idle = handles.into_iter().map(|h| set.remove(h)).collect();
        self.busy.1 = Some(set.remove(busy));
        r
    }

    /// Sends `n` data segments to the busy socket through `Interface::poll`
    /// on the shared set; returns the time spent (packet preparation
    /// excluded).
    fn run(&mut self, set: &mut SocketSet<'static>, busy: SocketHandle, n: usize) -> StdDuration {
        let before = self.received;
        let mut spent = StdDuration::ZERO;
        let mut left = n;
        let mut scratch = [0u8; BUFFER];
        while left > 0 {
            let batch = self.busy.0.data(left.min(CHUNK));
            left -= batch.len();
            let t = StdInstant::now();
            for p in batch {
                self.dev.rx.push_back(p);
                self.iface.poll(self.now, &mut self.dev, set);
                let sock = set.get_mut::<tcp::Socket>(busy);
                while sock.can_recv() {
                    self.received += sock.recv_slice(&mut scratch).expect("recv");
                }
                for out in self.dev.tx.drain(..) {
                    black_box(out);
                }
                self.now += GAP;
            }
            spent += t.elapsed();
        }
        assert_eq!(self.received - before, n * PAYLOAD, "shared set: every measured segment reached the application");
        assert_eq!(set.get::<tcp::Socket>(busy).state(), tcp::State::Established);
        spent
    }
}

// ---- measurement ----

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

fn ns_per(d: StdDuration, n: usize) -> f64 {
    d.as_nanos() as f64 / n as f64
}

/// Median and best of the runs.
fn median_and_best(v: Vec<f64>) -> (f64, f64) {
    let best = v.iter().copied().fold(f64::INFINITY, f64::min);
    (median(v), best)
}

/// Median ns/segment on the shared set of `n` sockets, and segments per run.
fn measure_shared(shared: &mut Shared, n: usize, plan: &Plan) -> (f64, usize) {
    shared.with_set(n, |s, set, busy| {
        // Let handshake-era timers pass, outside the measurement.
        s.now += Duration::from_secs(31);
        s.iface.poll(s.now, &mut s.dev, set);
        s.dev.tx.clear();
        let calib = 5;
        let est = ns_per(s.run(set, busy, calib), calib).max(1.0);
        let per_run =
            ((plan.shared_run_budget.as_nanos() as f64 / est) as usize).clamp(plan.shared_min_segments, plan.segments);
        let v = (0..plan.runs).map(|_| ns_per(s.run(set, busy, per_run), per_run)).collect();
        (median(v), per_run)
    })
}

/// Resident set size in KiB.
fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A ratio with as many decimals as are meaningful: 0.98, 27.2, 1,179.
fn ratio(r: f64) -> String {
    if r < 10.0 {
        format!("{r:.2}")
    } else if r < 100.0 {
        format!("{r:.1}")
    } else {
        thousands(r.round() as u64)
    }
}

/// The 1-minute load average: other work on the machine makes the figures
/// noisy, so the report shows it.
fn loadavg() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()
}

fn human_ns(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.1} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.1} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

enum SharedResult {
    Measured { ns: f64, per_run: usize },
    Skipped(String),
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let plan = if full { Plan::full() } else { Plan::smoke() };
    let started = StdInstant::now();
    let load_start = loadavg();
    if !full {
        eprintln!("dispatch: smoke run (use `cargo bench --bench dispatch` for the real figures)");
    }

    // Memory first, while the heap is fresh.
    eprintln!("dispatch: memory: opening {} connections", thousands(plan.mem_conns as u64));
    let (mem_before, mem_after) = {
        let mut lab = Lab::new();
        let before = rss_kib();
        lab.grow(plan.mem_conns);
        let after = rss_kib();
        assert_eq!(lab.ep.len(), plan.mem_conns);
        (before, after)
    };

    // closelab: one endpoint per level, runs interleaved across the levels
    // so that load from elsewhere on the machine hits every level alike.
    let closelab = {
        let mut labs: Vec<Lab> = plan
            .levels
            .iter()
            .map(|&n| {
                eprintln!("dispatch: closelab with {} connections", thousands(n as u64));
                let mut lab = Lab::new();
                lab.grow(n);
                lab.run(plan.segments / 10 + 1); // warm-up
                lab
            })
            .collect();
        let mut runs = vec![Vec::new(); labs.len()];
        for _ in 0..plan.runs {
            for (lab, v) in labs.iter_mut().zip(&mut runs) {
                v.push(ns_per(lab.run(plan.segments), plan.segments));
            }
        }
        runs.into_iter().map(median_and_best).collect::<Vec<_>>()
    };

    // The shared SocketSet.
    let mut shared_results = Vec::new();
    {
        let mut shared = Shared::new();
        let mut prev: Option<(usize, f64)> = None;
        for &n in &plan.levels {
            if n >= 100_000
                && let Some((pn, pns)) = prev
            {
                // Linear projection from the previous level (a scan per
                // packet), plus the time to open the extra sockets.
                let est_ns = pns * n as f64 / pn as f64;
                let segs = (5 + plan.runs * plan.shared_min_segments) as f64;
                let build = shared.build_time.as_secs_f64() / shared.opened as f64 * (n - shared.opened) as f64;
                let projected = StdDuration::from_secs_f64(build + est_ns * segs / 1e9);
                if projected > SHARED_LIMIT {
                    shared_results.push(SharedResult::Skipped(format!(
                        "skipped (too slow: ~{}/segment at {})",
                        human_ns(pns),
                        thousands(pn as u64)
                    )));
                    continue;
                }
            }
            eprintln!("dispatch: shared SocketSet with {} sockets", thousands(n as u64));
            let (ns, per_run) = measure_shared(&mut shared, n, &plan);
            prev = Some((n, ns));
            shared_results.push(SharedResult::Measured { ns, per_run });
        }
    }

    // Report.
    let (base, best_base) = closelab[0];
    let shared_base = match &shared_results[0] {
        SharedResult::Measured { ns, .. } => *ns,
        SharedResult::Skipped(_) => f64::NAN,
    };
    println!();
    println!(
        "cost per data segment ({PAYLOAD}-byte payload, in order, on one connection; the others idle in ESTABLISHED)"
    );
    println!(
        "median of {} runs; closelab: {} segments per run, runs interleaved across the levels; shared set: segments per run shown",
        plan.runs,
        thousands(plan.segments as u64)
    );
    println!();
    println!(
        "               closelab per-connection dispatch         shared SocketSet (Interface::poll, the design we avoid)"
    );
    println!(
        "  connections   ns/segment   ratio to 1   (best run)       ns/segment   ratio to 1   shared/closelab   segments/run"
    );
    for (i, &n) in plan.levels.iter().enumerate() {
        let (c, best) = closelab[i];
        let left = format!(
            "{:>13}  {:>11}  {:>11}  {:>11}",
            thousands(n as u64),
            thousands(c.round() as u64),
            ratio(c / base),
            format!("({})", thousands(best.round() as u64))
        );
        match &shared_results[i] {
            SharedResult::Measured { ns, per_run } => println!(
                "{left}    {:>13}  {:>11}  {:>16}x  {:>13}",
                thousands(ns.round() as u64),
                ratio(ns / shared_base),
                ratio(ns / c),
                thousands(*per_run as u64)
            ),
            SharedResult::Skipped(why) => println!("{left}     {why}"),
        }
    }
    println!();
    match (mem_before, mem_after) {
        (Some(b), Some(a)) => {
            let per = (a.saturating_sub(b)) as f64 * 1024.0 / plan.mem_conns as f64;
            println!(
                "memory: ~{:.1} KB per idle connection ({} B buffers each way; RSS +{:.1} MiB for {} connections)",
                per / 1000.0,
                BUFFER,
                a.saturating_sub(b) as f64 / 1024.0,
                thousands(plan.mem_conns as u64)
            );
        }
        _ => println!("memory: unknown (no /proc/self/status)"),
    }
    let last = *plan.levels.last().expect("levels");
    let (last_median, last_best) = closelab[closelab.len() - 1];
    let r = last_median / base;
    println!(
        "target: closelab ratio at {} <= 1.5x: {} ({r:.2}x on medians, {:.2}x on best runs) (informational)",
        thousands(last as u64),
        if r <= 1.5 { "PASS" } else { "FAIL" },
        last_best / best_base
    );
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    match (load_start, loadavg()) {
        (Some(a), Some(b)) => println!(
            "elapsed: {:.1} s; load average {a:.2} at start, {b:.2} at end on {cores} cores (other work on the machine inflates and scatters the figures)",
            started.elapsed().as_secs_f64()
        ),
        _ => println!("elapsed: {:.1} s", started.elapsed().as_secs_f64()),
    }
}
