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
//! - Linux baseline, same run: the kernel's TCP on loopback with the same
//!   kind of traffic (100-byte segments on one connection, 1 / 1,000 /
//!   10,000 connections open as far as RLIMIT_NOFILE allows), and the
//!   kernel's slab memory per idle socket; then closelab / Linux ratios.
//!   Informational: closelab is userspace TCP handed packets in memory, the
//!   kernel figures include syscalls and both ends. See "Linux baseline"
//!   below for exactly what is measured.
//!
//! Without `--bench` (e.g. `cargo test --benches`) it runs a small smoke
//! version that checks the same things in a second.

use std::collections::HashMap;
use std::hint::black_box;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration as StdDuration, Instant as StdInstant};

use closelab::endpoint::device::MemoryDevice;
use closelab::endpoint::{AppKind, ClosePolicy, Endpoint, EndpointConfig, Policy};
use closelab::event::{ConnId, Event, Sink, TcpState};
use closelab::wire::{self, FourTuple};
use nix::libc;
use nix::sys::socket::{setsockopt, sockopt};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::ChecksumCapabilities;
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
    /// Linux: wall-clock budget per run (round trips adapt, within bounds).
    linux_run_budget: StdDuration,
    linux_min_round_trips: usize,
    linux_max_round_trips: usize,
    /// Linux: untimed round trips before each level (and to calibrate).
    linux_warmup: usize,
    /// Linux: pause for RCU frees before reading /proc/slabinfo.
    linux_settle: StdDuration,
    /// Linux: a skipped level is replaced by the largest multiple of this
    /// that fits.
    linux_extra_step: usize,
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
            linux_run_budget: StdDuration::from_millis(150),
            linux_min_round_trips: 1_000,
            linux_max_round_trips: 200_000,
            linux_warmup: 2_000,
            linux_settle: StdDuration::from_millis(200),
            linux_extra_step: 1_000,
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
            linux_run_budget: StdDuration::from_millis(2),
            linux_min_round_trips: 50,
            linux_max_round_trips: 1_000,
            linux_warmup: 50,
            linux_settle: StdDuration::from_millis(20),
            linux_extra_step: 100,
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
        let mut ep = Endpoint::new(cfg, now).expect("endpoint config fits smoltcp");
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

struct Shared {
    iface: Interface,
    dev: MemoryDevice,
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
        let mut dev = MemoryDevice::new(1500);
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

// ---- Linux baseline: the kernel's TCP on loopback ----
//
// Same kind of traffic through the Linux kernel in the same run: one
// connection carries 100-byte messages while the others sit idle in
// ESTABLISHED. Both ends of every connection are kernel sockets of this
// process on 127.0.0.1 (connect + accept on one listener).
//
// - Per segment: ONE thread ping-pongs over a TCP_NODELAY connection:
//   write(A, 100), read(B, 100), write(B, 100), read(A, 100). Each write
//   waits for the previous message to be read, so it leaves as exactly one
//   data segment (checked with TCP_INFO: data segments out == writes) and the
//   ACK rides on the reply. Wall time / (2 x round trips) = one 100-byte
//   segment delivered, including the sender's write(), the kernel TCP work
//   of both ends (loopback delivery runs in softirq on the same CPU) and the
//   receiver's read(). No thread wake-ups are measured.
// - Idle connections: loopback pairs (2 fds each); RLIMIT_NOFILE is raised
//   to its hard limit and levels that do not fit are skipped.
// - Memory: /proc/slabinfo before and after opening the idle connections and
//   again after closing them (RST, so nothing lingers in TIME-WAIT); a slab
//   cache counts if it grew on open and shrank on close by >= 0.1 object
//   per socket (the smaller of the two changes is counted, which filters
//   out other processes' churn). /proc/net/sockstat shows the buffer
//   memory (none while idle: the kernel allocates buffers lazily).

/// One loopback connection: `a` connected, `b` accepted.
struct KPair {
    a: TcpStream,
    b: TcpStream,
}

impl KPair {
    /// Closes both ends with SO_LINGER {1, 0}: RST, no TIME-WAIT left in the
    /// namespace.
    fn rst_close(self) {
        let l = libc::linger { l_onoff: 1, l_linger: 0 };
        let _ = setsockopt(&self.a, sockopt::Linger, &l);
        let _ = setsockopt(&self.b, sockopt::Linger, &l);
        drop(self.a);
        drop(self.b);
    }
}

/// (segments out, data segments out) from TCP_INFO.
fn tcp_segs(s: &TcpStream) -> Result<(u32, u32), String> {
    // SAFETY: tcp_info is plain old data; the kernel writes at most `len` bytes.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` and `len` are live locals; the kernel writes at most `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast::<libc::c_void>(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(format!("getsockopt(TCP_INFO): {}", std::io::Error::last_os_error()));
    }
    if (len as usize) < std::mem::offset_of!(libc::tcp_info, tcpi_data_segs_out) + 4 {
        return Err("TCP_INFO without tcpi_data_segs_out (kernel < 4.6)".into());
    }
    Ok((info.tcpi_segs_out, info.tcpi_data_segs_out))
}

/// What one timed ping-pong batch measured.
struct KRun {
    spent: StdDuration,
    /// Data segments sent by both ends (must equal the writes).
    data_segs: u64,
    /// Segments without data (pure ACKs) sent by both ends.
    pure_acks: u64,
}

struct Kernel {
    listener: TcpListener,
    addr: SocketAddr,
    busy: KPair,
    idle: Vec<KPair>,
    /// Time spent opening connections, and how many.
    open_time: StdDuration,
    opened: usize,
}

impl Kernel {
    fn new() -> Result<Kernel, String> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind 127.0.0.1:0: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let busy = Kernel::pair(&listener, addr)?;
        Ok(Kernel { listener, addr, busy, idle: Vec::new(), open_time: StdDuration::ZERO, opened: 0 })
    }

    fn pair(listener: &TcpListener, addr: SocketAddr) -> Result<KPair, String> {
        let a = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
        let (b, from) = listener.accept().map_err(|e| format!("accept: {e}"))?;
        let local = a.local_addr().map_err(|e| e.to_string())?;
        if from != local {
            return Err(format!("accepted {from}, expected the connection just made from {local}"));
        }
        a.set_nodelay(true).map_err(|e| e.to_string())?;
        b.set_nodelay(true).map_err(|e| e.to_string())?;
        Ok(KPair { a, b })
    }

    /// Opens or RST-closes idle connections until there are `n`
    /// connections (the busy one included).
    fn resize(&mut self, n: usize) -> Result<(), String> {
        let want = n.saturating_sub(1);
        let t = StdInstant::now();
        let grew = want.saturating_sub(self.idle.len());
        while self.idle.len() < want {
            let p = Kernel::pair(&self.listener, self.addr)
                .map_err(|e| format!("opening idle connection {}: {e}", self.idle.len() + 2))?;
            self.idle.push(p);
        }
        if grew > 0 {
            self.open_time += t.elapsed();
            self.opened += grew;
        }
        while self.idle.len() > want {
            self.idle.pop().expect("non-empty").rst_close();
        }
        Ok(())
    }

    /// `round_trips` ping-pongs of one PAYLOAD-byte message each way on the
    /// busy connection, in this thread.
    fn run(&mut self, round_trips: usize) -> Result<KRun, String> {
        let msg = [0xa5u8; PAYLOAD];
        let mut buf = [0u8; PAYLOAD];
        let (mut a, mut b) = (&self.busy.a, &self.busy.b);
        let (sa0, da0) = tcp_segs(a)?;
        let (sb0, db0) = tcp_segs(b)?;
        let io = |e: std::io::Error| format!("ping-pong: {e}");
        let t = StdInstant::now();
        for _ in 0..round_trips {
            a.write_all(&msg).map_err(io)?;
            b.read_exact(&mut buf).map_err(io)?;
            b.write_all(&msg).map_err(io)?;
            a.read_exact(&mut buf).map_err(io)?;
        }
        let spent = t.elapsed();
        assert_eq!(black_box(buf), msg, "Linux: the message arrived intact");
        let (sa1, da1) = tcp_segs(a)?;
        let (sb1, db1) = tcp_segs(b)?;
        let data_segs = u64::from(da1.wrapping_sub(da0)) + u64::from(db1.wrapping_sub(db0));
        let all = u64::from(sa1.wrapping_sub(sa0)) + u64::from(sb1.wrapping_sub(sb0));
        assert_eq!(
            data_segs,
            2 * round_trips as u64,
            "Linux: each 100-byte write left as exactly one data segment (TCP_INFO)"
        );
        Ok(KRun { spent, data_segs, pure_acks: all - data_segs })
    }

    fn close(self) {
        for p in self.idle {
            p.rst_close();
        }
        self.busy.rst_close();
    }
}

/// Raises RLIMIT_NOFILE's soft limit to the hard limit; returns (old soft,
/// new soft). (nix's `resource` feature is not enabled in Cargo.toml, so
/// this goes through nix's libc re-export.)
fn raise_nofile() -> Result<(u64, u64), String> {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain syscalls on a local struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return Err(format!("getrlimit: {}", std::io::Error::last_os_error()));
    }
    let old: u64 = r.rlim_cur;
    if r.rlim_cur != r.rlim_max {
        r.rlim_cur = r.rlim_max;
        // SAFETY: plain syscall reading a local struct.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) } != 0 {
            return Err(format!("setrlimit: {}", std::io::Error::last_os_error()));
        }
    }
    Ok((old, r.rlim_cur))
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(3, |d| d.count())
}

/// Local ports available for connect() (net.ipv4.ip_local_port_range).
fn ephemeral_ports() -> Option<usize> {
    let s = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut it = s.split_whitespace().map(|x| x.parse::<usize>());
    let (lo, hi) = (it.next()?.ok()?, it.next()?.ok()?);
    Some(hi + 1 - lo)
}

#[derive(Clone, Copy)]
struct SlabCache {
    active: i64,
    objsize: i64,
}

/// /proc/slabinfo (root only): name -> active objects and object size.
fn slabinfo() -> Result<HashMap<String, SlabCache>, String> {
    let s = std::fs::read_to_string("/proc/slabinfo").map_err(|e| format!("/proc/slabinfo: {e}"))?;
    let mut m = HashMap::new();
    for line in s.lines().skip(2) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 4 {
            continue;
        }
        if let (Ok(active), Ok(objsize)) = (f[1].parse(), f[3].parse()) {
            m.insert(f[0].to_string(), SlabCache { active, objsize });
        }
    }
    Ok(m)
}

/// From /proc/net/sockstat: TCP (inuse, mem in pages).
fn sockstat_tcp() -> Option<(i64, i64)> {
    let s = std::fs::read_to_string("/proc/net/sockstat").ok()?;
    let line = s.lines().find(|l| l.starts_with("TCP:"))?;
    let f: Vec<&str> = line.split_whitespace().collect();
    let get = |k: &str| f.iter().position(|x| *x == k).and_then(|i| f.get(i + 1)?.parse().ok());
    Some((get("inuse")?, get("mem")?))
}

/// SLUB merges caches of the same size and flags, and /proc/slabinfo shows
/// a merged cache under one of its names: the other names that share
/// `name`'s cache (from the symlinks in /sys/kernel/slab).
fn slab_aliases(name: &str) -> Vec<String> {
    let Ok(target) = std::fs::read_link(format!("/sys/kernel/slab/{name}")) else { return Vec::new() };
    let Ok(dir) = std::fs::read_dir("/sys/kernel/slab") else { return Vec::new() };
    let mut v: Vec<String> = dir
        .filter_map(|e| e.ok())
        .filter(|e| std::fs::read_link(e.path()).is_ok_and(|t| t == target))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != name)
        .collect();
    v.sort();
    v
}

fn meminfo_kib(key: &str) -> Option<i64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    s.lines().find(|l| l.starts_with(key))?.split_whitespace().nth(1)?.parse().ok()
}

/// A slab cache that grew and shrank with the kernel sockets.
struct CacheUse {
    name: String,
    objsize: i64,
    /// Objects per socket: on open, on close; `min` of the two is counted.
    open: f64,
    close: f64,
}

enum KMem {
    Slab {
        sockets: usize,
        caches: Vec<CacheUse>,
        /// Counted bytes per socket.
        per_socket: f64,
        /// Other caches' net change per socket during the opening (noise).
        other: f64,
    },
    /// /proc/slabinfo unreadable: Slab in /proc/meminfo, whole system.
    Meminfo {
        sockets: usize,
        per_socket: f64,
        why: String,
    },
    Unavailable(String),
}

struct KMemReport {
    mem: KMem,
    /// /proc/net/sockstat TCP inuse and mem (pages) changes on open.
    sockstat: Option<(i64, i64)>,
    open_us: f64,
}

enum KLevel {
    Measured { ns: Vec<f64>, data_segs: u64, pure_acks: u64 },
    Skipped(String),
}

struct LinuxReport {
    nofile: (u64, u64),
    fds_at_start: usize,
    /// (connections, result), in the order of `plan.levels`, then the
    /// largest level that fits if a planned level was skipped.
    levels: Vec<(usize, KLevel)>,
    extra: Option<usize>,
    round_trips: usize,
    mem: KMemReport,
}

/// Opens `n` connections (busy one included) from one, snapshots the
/// slabs, closes them again.
fn kernel_memory(k: &mut Kernel, n: usize, settle: StdDuration) -> Result<KMemReport, String> {
    k.resize(1)?;
    std::thread::sleep(settle);
    let sockets = 2 * (n - 1);
    let s0 = slabinfo();
    let m0 = meminfo_kib("Slab:");
    let st0 = sockstat_tcp();
    let t = StdInstant::now();
    k.resize(n)?;
    let open_us = t.elapsed().as_secs_f64() * 1e6 / (n - 1) as f64;
    let s1 = slabinfo();
    let m1 = meminfo_kib("Slab:");
    let st1 = sockstat_tcp();
    k.resize(1)?;
    // Sockets' dentries (and slab pages) are freed after an RCU grace period.
    std::thread::sleep(settle);
    let s2 = slabinfo();
    let sockstat = st0.zip(st1).map(|((i0, p0), (i1, p1))| (i1 - i0, p1 - p0));
    let mem = match (s0, s1, s2) {
        (Ok(s0), Ok(s1), Ok(s2)) => {
            let thr = (sockets as f64 * 0.1).max(1.0);
            let mut caches = Vec::new();
            let mut counted_names = std::collections::HashSet::new();
            for (name, c1) in &s1 {
                let (Some(c0), Some(c2)) = (s0.get(name), s2.get(name)) else { continue };
                let open = (c1.active - c0.active) as f64;
                let close = (c1.active - c2.active) as f64;
                if open >= thr && close >= thr {
                    counted_names.insert(name.clone());
                    caches.push(CacheUse {
                        name: name.clone(),
                        objsize: c1.objsize,
                        open: open / sockets as f64,
                        close: close / sockets as f64,
                    });
                }
            }
            caches.sort_by(|x, y| {
                let bx = x.open.min(x.close) * x.objsize as f64;
                let by = y.open.min(y.close) * y.objsize as f64;
                by.total_cmp(&bx)
            });
            let per_socket = caches.iter().map(|c| c.open.min(c.close) * c.objsize as f64).sum();
            let other: f64 = s1
                .iter()
                .filter(|(name, _)| !counted_names.contains(*name))
                .filter_map(|(name, c1)| s0.get(name).map(|c0| ((c1.active - c0.active) * c1.objsize) as f64))
                .sum::<f64>()
                / sockets as f64;
            KMem::Slab { sockets, caches, per_socket, other }
        }
        (Err(why), ..) | (_, Err(why), _) | (.., Err(why)) => match (m0, m1) {
            (Some(a), Some(b)) => KMem::Meminfo { sockets, per_socket: ((b - a) * 1024) as f64 / sockets as f64, why },
            _ => KMem::Unavailable(why),
        },
    };
    Ok(KMemReport { mem, sockstat, open_us })
}

fn linux_baseline(plan: &Plan) -> Result<LinuxReport, String> {
    let nofile = raise_nofile()?;
    let limit = nofile.1 as usize;
    let fds_at_start = open_fds();
    let ports = ephemeral_ports();
    // 2 fds per connection + the listener, a few spare.
    let fits = |n: usize| fds_at_start + 2 * n + 1 + 8 <= limit && ports.is_none_or(|p| n <= p);
    let why_not = |n: usize| {
        let mut why = Vec::new();
        if fds_at_start + 2 * n + 1 + 8 > limit {
            why.push(format!(
                "needs {} fds (2 per connection + the listener; {} already open) > RLIMIT_NOFILE {} (the hard limit)",
                thousands((2 * n + 1) as u64),
                fds_at_start,
                thousands(limit as u64)
            ));
        }
        if let Some(p) = ports
            && n > p
        {
            why.push(format!(
                "{} connections > {} local ports to one listener",
                thousands(n as u64),
                thousands(p as u64)
            ));
        }
        format!("skipped: {}", why.join("; "))
    };
    let measured: Vec<usize> = plan.levels.iter().copied().filter(|&n| fits(n)).collect();
    let top = *measured.last().ok_or("not even one connection fits the fd limit")?;
    // If a planned level was skipped, also measure the largest round level
    // that fits (a multiple of 1,000 or of the plan's step).
    let extra = if measured.len() < plan.levels.len() {
        let step = plan.linux_extra_step;
        let max = (limit.saturating_sub(fds_at_start + 1 + 8) / 2).min(ports.unwrap_or(usize::MAX));
        let n = max / step * step;
        (n > top).then_some(n)
    } else {
        None
    };
    let mut levels_run = measured.clone();
    levels_run.extend(extra);
    let biggest = *levels_run.last().expect("at least one level");

    let mut k = Kernel::new()?;
    let mem = kernel_memory(&mut k, biggest.max(2), plan.linux_settle)?;

    // Calibrate on one connection.
    k.run(plan.linux_warmup)?;
    let est = ns_per(k.run(plan.linux_warmup)?.spent, plan.linux_warmup).max(1.0);
    let round_trips = ((plan.linux_run_budget.as_nanos() as f64 / est) as usize)
        .clamp(plan.linux_min_round_trips, plan.linux_max_round_trips);

    // Runs go up the levels and back down (ABBA), so that drifting load
    // from elsewhere on the machine hits every level alike.
    let mut results: HashMap<usize, (Vec<f64>, u64, u64)> = HashMap::new();
    let up = plan.runs.div_ceil(2);
    let down = plan.runs - up;
    let mut order: Vec<(usize, usize)> = levels_run.iter().map(|&n| (n, up)).collect();
    order.extend(levels_run.iter().rev().map(|&n| (n, down)));
    for (n, runs) in order {
        if runs == 0 {
            continue;
        }
        eprintln!("dispatch: Linux loopback with {} connections", thousands(n as u64));
        k.resize(n)?;
        k.run(plan.linux_warmup)?;
        let e = results.entry(n).or_default();
        for _ in 0..runs {
            let r = k.run(round_trips)?;
            e.0.push(ns_per(r.spent, 2 * round_trips));
            e.1 += r.data_segs;
            e.2 += r.pure_acks;
        }
    }
    k.close();

    let mut levels: Vec<(usize, KLevel)> = plan
        .levels
        .iter()
        .map(|&n| {
            let l = match results.remove(&n) {
                Some((ns, data_segs, pure_acks)) => KLevel::Measured { ns, data_segs, pure_acks },
                None => KLevel::Skipped(why_not(n)),
            };
            (n, l)
        })
        .collect();
    if let Some(n) = extra {
        let (ns, data_segs, pure_acks) = results.remove(&n).expect("extra level measured");
        levels.push((n, KLevel::Measured { ns, data_segs, pure_acks }));
    }
    Ok(LinuxReport { nofile, fds_at_start, levels, extra, round_trips, mem })
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

/// The Linux baseline and the closelab-vs-Linux comparison.
fn print_linux(l: &LinuxReport, plan: &Plan, closelab: &[(f64, f64)], closelab_mem: Option<f64>) {
    let linux_median = |lv: &KLevel| match lv {
        KLevel::Measured { ns, .. } => Some(median(ns.clone())),
        KLevel::Skipped(_) => None,
    };
    let lbase = l.levels.first().and_then(|(_, lv)| linux_median(lv)).unwrap_or(f64::NAN);
    println!();
    println!(
        "Linux baseline, same run: the kernel's TCP on loopback (127.0.0.1), both ends of every connection in this process"
    );
    println!(
        "  measured: one thread ping-pongs {PAYLOAD}-byte messages on one TCP_NODELAY connection: write(A) read(B) write(B) read(A);"
    );
    println!(
        "  ns/segment = wall time / (2 x round trips) = one {PAYLOAD}-byte data segment delivered, with its write() and read() syscalls"
    );
    println!(
        "  and the TCP work of both ends (loopback delivery runs in softirq on the same CPU; the ACK rides on the reply; no thread wake-ups)"
    );
    println!(
        "  the other connections: idle loopback pairs in ESTABLISHED (2 fds each); RLIMIT_NOFILE {}, {} fds open before",
        if l.nofile.0 == l.nofile.1 {
            format!("{} (already the hard limit)", thousands(l.nofile.1))
        } else {
            format!("raised {} -> {} (the hard limit)", thousands(l.nofile.0), thousands(l.nofile.1))
        },
        l.fds_at_start
    );
    println!(
        "  median of {} runs, {} round trips ({} segments) per run; runs go up the levels, then down",
        plan.runs,
        thousands(l.round_trips as u64),
        thousands(2 * l.round_trips as u64)
    );
    println!();
    println!("  connections   ns/segment   ratio to 1   (best run)   data segments/write   pure ACKs/segment");
    for (n, lv) in &l.levels {
        let label = if Some(*n) == l.extra { "  (largest that fits)" } else { "" };
        match lv {
            KLevel::Measured { ns, data_segs, pure_acks } => {
                let (m, best) = median_and_best(ns.clone());
                println!(
                    "{:>13}  {:>11}  {:>11}  {:>11}  {:>20.2}  {:>18.3}{label}",
                    thousands(*n as u64),
                    thousands(m.round() as u64),
                    ratio(m / lbase),
                    format!("({})", thousands(best.round() as u64)),
                    *data_segs as f64 / (2 * l.round_trips * ns.len()) as f64,
                    *pure_acks as f64 / *data_segs as f64
                );
            }
            KLevel::Skipped(why) => println!("{:>13}  {why}", thousands(*n as u64)),
        }
    }
    println!();
    let m = &l.mem;
    let mut linux_mem = None;
    match &m.mem {
        KMem::Slab { sockets, caches, per_socket, other } => {
            linux_mem = Some(*per_socket);
            println!(
                "Linux memory per idle connection: {} idle loopback connections opened = {} kernel sockets (both ends here)",
                thousands((sockets / 2) as u64),
                thousands(*sockets as u64)
            );
            println!(
                "  counted: kernel slab objects in /proc/slabinfo, caches that grew on open AND shrank on close by >= 0.1 object/socket"
            );
            println!("  (the smaller change counts); objects per kernel socket:");
            for c in caches {
                let k = c.open.min(c.close);
                let aliases = slab_aliases(&c.name);
                let merged = if aliases.is_empty() {
                    String::new()
                } else {
                    format!("   (merged cache, also: {})", aliases.join(", "))
                };
                println!(
                    "    {:<22} {:>6} B x {:.2} (open {:.2}, close {:.2}) = {:>6.0} B{merged}",
                    c.name,
                    c.objsize,
                    k,
                    c.open,
                    c.close,
                    k * c.objsize as f64
                );
            }
            println!(
                "    = {:.0} B per kernel socket (one end), {:.0} B per loopback connection (both ends)",
                per_socket,
                2.0 * per_socket
            );
            println!(
                "  not counted: other caches' net change while opening ({:+.0} B/socket: other processes' churn), the fd table (8 B/fd), free slots in slabs",
                other
            );
        }
        KMem::Meminfo { sockets, per_socket, why } => {
            linux_mem = Some(*per_socket);
            println!(
                "Linux memory per idle connection: ~{:.0} B per kernel socket (Slab in /proc/meminfo over {} sockets, whole system: noisy; {why})",
                per_socket,
                thousands(*sockets as u64)
            );
        }
        KMem::Unavailable(why) => println!("Linux memory per idle connection: unavailable ({why})"),
    }
    if let Some((inuse, pages)) = m.sockstat {
        let signed = |v: i64| format!("{}{}", if v < 0 { "-" } else { "+" }, thousands(v.unsigned_abs()));
        println!(
            "  buffers: /proc/net/sockstat TCP inuse {}, mem {} pages: an idle kernel socket holds no buffers (allocated lazily)",
            signed(inuse),
            signed(pages)
        );
    }
    println!("  opening: {:.1} µs per loopback connection (connect + accept)", m.open_us);

    // Comparison.
    println!();
    println!("closelab vs Linux");
    println!(
        "  caveat: informational, not like for like: closelab = smoltcp in this process, packets handed over in memory (receive side + its ACKs, no syscalls); Linux = kernel TCP over loopback incl. write()/read() syscalls and both ends' TCP work"
    );
    println!("     connections   closelab ns/segment   Linux ns/segment   closelab/Linux");
    for (n, lv) in &l.levels {
        // The extra Linux level is compared with the next planned level.
        let Some(i) = plan.levels.iter().position(|&p| p >= *n) else { continue };
        let c = closelab[i].0;
        let (label, note) = if plan.levels[i] == *n {
            (thousands(*n as u64), String::new())
        } else {
            (
                format!("{} / {}", thousands(*n as u64), thousands(plan.levels[i] as u64)),
                format!("   (Linux at {}, closelab at {})", thousands(*n as u64), thousands(plan.levels[i] as u64)),
            )
        };
        match linux_median(lv) {
            Some(ln) => println!(
                "{label:>16}  {:>20}  {:>17}  {:>14}x{note}",
                thousands(c.round() as u64),
                thousands(ln.round() as u64),
                ratio(c / ln)
            ),
            None => println!("{label:>16}  {:>20}  {:>17}", thousands(c.round() as u64), "(skipped)"),
        }
    }
    match (closelab_mem, linux_mem) {
        (Some(c), Some(k)) => println!(
            "  memory per idle connection: closelab {:.0} B (one end: RSS, incl. 2 x {BUFFER} B buffers) vs Linux {:.0} B per kernel socket (one end, no buffers): {}x; vs {:.0} B per loopback pair: {}x",
            c,
            k,
            ratio(c / k),
            2.0 * k,
            ratio(c / (2.0 * k))
        ),
        _ => println!("  memory per idle connection: no comparison (a figure is missing)"),
    }
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

    // The Linux kernel's TCP on loopback, same run.
    let linux = linux_baseline(&plan);

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
    let mut closelab_mem = None;
    match (mem_before, mem_after) {
        (Some(b), Some(a)) => {
            let per = (a.saturating_sub(b)) as f64 * 1024.0 / plan.mem_conns as f64;
            closelab_mem = Some(per);
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
    match &linux {
        Ok(l) => print_linux(l, &plan, &closelab, closelab_mem),
        Err(e) => println!("\nLinux baseline: unavailable ({e})"),
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
