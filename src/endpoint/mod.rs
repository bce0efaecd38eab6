//! The sans-IO endpoint: packets and `now` in, packets and events out.
//!
//! closelab does not let smoltcp's `Interface::poll` walk a shared
//! `SocketSet`: that costs a scan of every socket per packet (measured with
//! smoltcp 0.14 on 2 cores: 102 µs per packet with 10,000 sockets) and merges transient states (a
//! simultaneous close would jump over CLOSING). Instead each connection owns a
//! one-socket `SocketSet`; a segment is looked up by 4-tuple in a hash map and
//! only that connection is stepped (`poll_ingress_single`, then the
//! application, then `poll_egress` until it has nothing more to send). The
//! state is compared before and after each step, so every change is
//! attributed to the segment, timer or application call that caused it.
//! Each packet is parsed once and its summary travels with it (only packets
//! a fault rule held back are parsed again when released).
//! Timers come from a priority queue of each connection's next deadline, so
//! idle connections cost nothing.
//!
//! This module never reads a clock, opens a file or touches the OS: callers
//! pass `now` and ask [`Endpoint::poll_at`] when to come back.

pub mod app;
mod conn;
pub mod crawl;
pub mod device;
pub mod http;
mod ingress;
pub mod link;
mod settings;
pub mod syncache;
pub mod timewait;
mod tw_path;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{HardwareAddress, IpAddress};

use app::{App, CloseCall};
pub use app::{AppKind, ClosePolicy, Policy};
use conn::{Conn, SeqTracker, seq_lt};
use device::MemoryDevice;
pub use settings::{
    CloseTimers, ConnInfo, ConnectError, EndpointConfig, EndpointError, HttpDone, TimeWaitModel, TimeWaitSyn,
};
use syncache::SynCache;
pub use syncache::SynDrops;

use crate::event::{AppAction, Cause, ConnId, Dir, Event, EventKind, FaultAction, Side, Sink, TcpState};
use crate::fault::{FaultPath, FaultRule};
use crate::wire::{self, FourTuple, Segment};

thread_local! {
    /// The clock of the TCP timestamps closelab sends (milliseconds since the
    /// endpoint's start, kept current by [`Endpoint::receive`] and
    /// [`Endpoint::poll`]). smoltcp asks for a TSval through a plain function
    /// pointer, so the value lives here, one per thread: an endpoint is
    /// ticked and polled on the thread that drives it, so endpoints on other
    /// threads (tests run in parallel) cannot move its clock back and forth.
    /// Endpoints driven by one thread share it.
    static TSVAL_CLOCK: std::cell::Cell<u32> = const { std::cell::Cell::new(1) };
}

fn tsval() -> u32 {
    TSVAL_CLOCK.with(std::cell::Cell::get)
}

/// Addresses smoltcp's interface holds (its `IFACE_MAX_ADDR_COUNT`
/// default, 2): the CLI refuses more, since a third would be ours to the
/// dispatcher but unknown to smoltcp.
pub const MAX_ADDRS: usize = 2;

/// Shortest wait before a timer that just fired may fire again.
pub const MIN_REFIRE: Duration = Duration::from_millis(1);

/// Linux's `tcp_syn_retries` default (SYN-SENT; no flag).
pub const SYN_RETRIES: u32 = 6;

/// A packet read as TCP: its summary, or why it is not a segment.
type Parsed = Result<Segment, wire::ParseError>;

/// Map of the connection table, keyed by connection numbers: closelab hands
/// them out (1, 2, 3 …), so no peer can choose colliding keys and FxHash (a
/// single multiply per word) spreads them well. A segment looks its
/// connection up several times; with SipHash those lookups and the tuple's
/// were about a quarter of the per-segment instructions.
type IdMap<V> = rustc_hash::FxHashMap<ConnId, V>;

/// Hasher for the 4-tuple table. Its keys are chosen by peers (a SYN flood
/// picks addresses and ports), so a fixed fast hash would let an attacker
/// aim every tuple at one bucket (HashDoS). foldhash's `RandomState` keys
/// its folded-multiply hash with a seed drawn per table from per-process
/// OS randomness (not `cfg.seed`, which is often fixed and visible). Not
/// cryptographic, but colliding keys cannot be computed without the seed,
/// which nothing reveals; several times cheaper than SipHash on a
/// `FourTuple`, which hashes in 8 to 14 small writes.
type TupleHashKey = foldhash::fast::RandomState;

/// The endpoint. See the module documentation.
pub struct Endpoint {
    iface: Interface,
    cfg: EndpointConfig,
    start: Instant,
    conns: IdMap<Conn>,
    by_tuple: HashMap<FourTuple, ConnId, TupleHashKey>,
    listen_ports: HashSet<u16>,
    timers: BinaryHeap<Reverse<(Instant, ConnId, u64)>>,
    next_id: ConnId,
    next_port: u16,
    faults: FaultPath,
    slow: Option<FaultPath>,
    /// Packets for the wire, in order.
    outbox: VecDeque<Vec<u8>>,
    /// Events (with raw bytes for segment events when capturing).
    events: Vec<(Event, Option<Vec<u8>>)>,
    /// Connections that reached CLOSED after being synchronized.
    finished: u64,
    /// An empty set for segments that belong to no connection: smoltcp then
    /// answers as a closed port does (RST).
    empty: SocketSet<'static>,
    /// Inside [`begin_batch`](Endpoint::begin_batch)…[`end_batch`](Endpoint::end_batch):
    /// connections whose egress waits for the end of the batch.
    batch: Option<Vec<ConnId>>,
    dev: MemoryDevice,
    /// Scratch list for the application's calls in one step (kept to
    /// reuse its allocation).
    actions: Vec<AppAction>,
    /// HTTP exchanges finished since [`Endpoint::take_http`] was last called.
    http_done: Vec<HttpDone>,
    /// Half-open connections without buffers, cookies, SYN drops.
    syn: SynCache,
    /// Connections in TIME-WAIT whose socket is gone (Linux model).
    tw: timewait::TimeWaitTable<TupleHashKey>,
}

impl Endpoint {
    /// Creates an endpoint; `now` is the start of the run's clock (events'
    /// `t` counts from it).
    pub fn new(cfg: EndpointConfig, now: Instant) -> Result<Endpoint, EndpointError> {
        let mut dev = MemoryDevice::new(cfg.mtu);
        let mut config = Config::new(HardwareAddress::Ip);
        config.random_seed = cfg.seed;
        let mut iface = Interface::new(config, &mut dev, now);
        let mut refused = None;
        iface.update_ip_addrs(|addrs| {
            for a in &cfg.addrs {
                if addrs.push(*a).is_err() {
                    refused = Some(*a);
                    break;
                }
            }
        });
        if let Some(addr) = refused {
            return Err(EndpointError::TooManyAddrs { addr, max: MAX_ADDRS });
        }
        for gw in &cfg.gateways {
            let added = match gw {
                IpAddr::V4(v4) => iface.routes_mut().add_default_ipv4_route(*v4).map(drop),
                IpAddr::V6(v6) => iface.routes_mut().add_default_ipv6_route(*v6).map(drop),
            };
            added.map_err(|_| EndpointError::RouteTableFull(*gw))?;
        }
        let faults = FaultPath::new(cfg.faults.clone(), cfg.seed);
        let tuple_key = TupleHashKey::default();
        let slow = cfg.slow.map(|d| FaultPath::new(vec![FaultRule::slow(d)], cfg.seed));
        Ok(Endpoint {
            iface,
            start: now,
            conns: IdMap::default(),
            by_tuple: HashMap::with_hasher(tuple_key.clone()),
            listen_ports: HashSet::new(),
            timers: BinaryHeap::new(),
            next_id: 1,
            next_port: 49152 + (cfg.seed % 8192) as u16,
            faults,
            slow,
            outbox: VecDeque::new(),
            events: Vec::new(),
            finished: 0,
            empty: SocketSet::new(Vec::new()),
            batch: None,
            dev,
            actions: Vec::new(),
            http_done: Vec::new(),
            syn: SynCache::new(cfg.seed),
            tw: timewait::TimeWaitTable::new(cfg.time_wait, tuple_key),
            cfg,
        })
    }

    pub fn config(&self) -> &EndpointConfig {
        &self.cfg
    }

    /// Seconds since the start of the run.
    pub fn secs(&self, now: Instant) -> f64 {
        (now - self.start).total_micros() as f64 / 1e6
    }

    /// Accept connections on `port` (any of closelab's addresses).
    pub fn listen(&mut self, port: u16) {
        self.listen_ports.insert(port);
    }

    /// Opens a connection to `remote`. Returns its number.
    pub fn connect(&mut self, now: Instant, remote: SocketAddr, initial_send: usize) -> Result<ConnId, ConnectError> {
        self.connect_from(now, remote, None, initial_send)
    }

    /// Opens a connection to `remote` from `local_port` (or an ephemeral
    /// port). A fixed port lets a new connection reuse the 4-tuple of one
    /// the peer still holds in TIME-WAIT.
    pub fn connect_from(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        local_port: Option<u16>,
        initial_send: usize,
    ) -> Result<ConnId, ConnectError> {
        if self.conns.len() >= self.cfg.max_conns {
            return Err(ConnectError::Limit(self.cfg.max_conns));
        }
        let local_ip: IpAddr = self
            .cfg
            .addrs
            .iter()
            .map(|c| IpAddr::from(c.address()))
            .find(|ip| ip.is_ipv4() == remote.is_ipv4())
            .ok_or(ConnectError::NoLocalAddress(remote.ip()))?;
        let mut port = None;
        if let Some(p) = local_port {
            let tuple = FourTuple { local: SocketAddr::new(local_ip, p), remote };
            if p == 0 || self.by_tuple.contains_key(&tuple) {
                return Err(ConnectError::Invalid(format!("local port {p} is in use for {remote}")));
            }
            port = Some(p);
        }
        for _ in 0..if port.is_some() { 0 } else { 16384 } {
            let p = self.next_port;
            self.next_port = if self.next_port == 65535 { 49152 } else { self.next_port + 1 };
            let tuple = FourTuple { local: SocketAddr::new(local_ip, p), remote };
            if !self.by_tuple.contains_key(&tuple) {
                port = Some(p);
                break;
            }
        }
        let port = port.ok_or(ConnectError::NoFreePort)?;
        let tuple = FourTuple { local: SocketAddr::new(local_ip, port), remote };
        let id = self.new_conn(tuple, initial_send);
        let conn = self.conns.get_mut(&id).expect("just inserted");
        let r = conn.set.get_mut::<tcp::Socket>(conn.handle).connect(
            self.iface.context(),
            (IpAddress::from(remote.ip()), remote.port()),
            (IpAddress::from(local_ip), port),
        );
        if let Err(e) = r {
            self.remove(id);
            return Err(ConnectError::Invalid(e.to_string()));
        }
        self.app_event(now, id, AppAction::Connect);
        self.note_state(now, id, Cause::App(AppAction::Connect));
        self.step(now, id, None);
        Ok(id)
    }

    /// Application close() on a connection, by hand (live control).
    pub fn close(&mut self, now: Instant, id: ConnId) -> bool {
        self.app_call(now, id, CloseCall::Close)
    }

    /// Connections that still involve the peer: neither closed nor in
    /// TIME-WAIT (nor listening).
    pub fn open_count(&self) -> usize {
        self.conns
            .values()
            .filter(|c| !matches!(c.state, TcpState::TimeWait | TcpState::Closed | TcpState::Listen))
            .count()
    }

    /// Shutting down: accept no new connection and close() every connection
    /// the application has not closed yet (FIN after queued data). Returns
    /// how many were closed.
    pub fn close_all(&mut self, now: Instant) -> usize {
        self.listen_ports.clear();
        let ids: Vec<ConnId> = self
            .conns
            .values()
            .filter(|c| c.app.closed.is_none() && !matches!(c.state, TcpState::TimeWait | TcpState::Closed))
            .map(|c| c.id)
            .collect();
        for &id in &ids {
            self.app_call(now, id, CloseCall::Close);
        }
        ids.len()
    }

    /// The end of a shutdown: RST for every connection still open (see
    /// [`Endpoint::open_count`]), so the peer forgets it instead of
    /// retransmitting to an endpoint that is gone. Returns how many.
    pub fn abort_all(&mut self, now: Instant) -> usize {
        let ids: Vec<ConnId> = self
            .conns
            .values()
            .filter(|c| !matches!(c.state, TcpState::TimeWait | TcpState::Closed | TcpState::Listen))
            .map(|c| c.id)
            .collect();
        for &id in &ids {
            self.app_call(now, id, CloseCall::Abort);
        }
        ids.len()
    }

    /// Application abort (RST) on a connection, by hand.
    pub fn abort(&mut self, now: Instant, id: ConnId) -> bool {
        self.app_call(now, id, CloseCall::Abort)
    }

    /// shutdown(SHUT_WR) on a connection, by hand.
    pub fn shutdown(&mut self, now: Instant, id: ConnId) -> bool {
        self.app_call(now, id, CloseCall::Shutdown)
    }

    fn app_call(&mut self, now: Instant, id: ConnId, call: CloseCall) -> bool {
        if !self.conns.contains_key(&id) {
            return false;
        }
        self.do_close(now, id, call);
        self.step(now, id, None);
        true
    }

    /// Sends an HTTP request on a client connection (app `HttpClient`).
    /// Returns false if the connection is gone, closed, or not a client.
    pub fn http_send(&mut self, now: Instant, id: ConnId, path: &str, request: &[u8]) -> bool {
        let Some(c) = self.conns.get_mut(&id) else { return false };
        if !c.app.http_send(path.to_string(), request) {
            return false;
        }
        self.step(now, id, None);
        true
    }

    /// A request sent on this client connection waits for its response.
    pub fn http_busy(&self, id: ConnId) -> bool {
        self.conns.get(&id).and_then(|c| c.app.client.as_ref()).is_some_and(|c| c.busy())
    }

    /// HTTP exchanges finished since the last call, in order.
    pub fn take_http(&mut self) -> Vec<HttpDone> {
        std::mem::take(&mut self.http_done)
    }

    /// Whether the peer's FIN has arrived on a connection.
    pub fn peer_closed(&self, id: ConnId) -> Option<bool> {
        self.conns.get(&id).map(|c| c.peer_fin)
    }

    /// A line of free text in the event stream (a driver's note).
    pub fn note(&mut self, now: Instant, conn: Option<ConnId>, text: String) {
        self.emit(now, conn, EventKind::Note { text }, None);
    }

    /// A packet read from the wire.
    pub fn receive(&mut self, now: Instant, packet: Vec<u8>) {
        self.tick_tsval(now);
        let seg = wire::parse(&packet);
        let live = match &seg {
            Ok(s) => self.by_tuple.get(&s.tuple_at_receiver()).copied(),
            Err(_) => None,
        };
        if self.no_faults() {
            // Nothing can hold, drop or reorder it: the packet goes in now,
            // with the summary and connection just looked up.
            self.dispatch(now, packet, seg, live);
            return;
        }
        // Fault rules see TIME-WAIT records as connections too (after a FIN).
        let (conn, fin_seen) = match live {
            Some(id) => (Some(id), self.conns[&id].fin_seen),
            None => {
                let tw = seg.as_ref().ok().and_then(|s| self.tw_id(&s.tuple_at_receiver()));
                (tw, tw.is_some())
            }
        };
        let mut release = Vec::new();
        self.through_faults(now, Dir::In, packet, seg.as_ref().ok(), conn, fin_seen, &mut release);
        self.deliver_all(now, release);
    }

    fn tick_tsval(&self, now: Instant) {
        if self.cfg.timestamps {
            TSVAL_CLOCK.with(|c| c.set(self.ms(now).wrapping_add(1)));
        }
    }

    /// Packets read together from the wire follow: each goes through ingress
    /// and the application at once, but a connection's egress (data, and
    /// the ACK smoltcp owes for every second segment) runs once at
    /// [`end_batch`](Self::end_batch), as a kernel with GRO acknowledges a
    /// burst with one ACK. Replies made during ingress (RST, challenge ACK)
    /// still go out in order.
    pub fn begin_batch(&mut self) {
        self.batch.get_or_insert_with(Vec::new);
    }

    /// Runs the egress deferred since [`begin_batch`](Self::begin_batch).
    pub fn end_batch(&mut self, now: Instant) {
        let Some(ids) = self.batch.take() else { return };
        for id in ids {
            if self.conns.contains_key(&id) {
                self.step(now, id, None);
            }
        }
    }

    /// Runs timers and releases delayed packets due at `now`.
    pub fn poll(&mut self, now: Instant) {
        self.tick_tsval(now);
        for _ in 0..1_000_000 {
            let mut release = Vec::new();
            if let Some(slow) = &mut self.slow {
                slow.poll(now, &mut release);
            }
            self.faults.poll(now, &mut release);
            let mut progressed = !release.is_empty();
            self.deliver_all(now, release);
            while let Some(Reverse((at, id, generation))) = self.timers.peek().copied() {
                if at > now {
                    break;
                }
                self.timers.pop();
                let live = self.conns.get(&id).is_some_and(|c| c.generation == generation);
                if !live && self.syn.is_timer(id, generation) {
                    self.half_open_timer(now, id);
                    progressed = true;
                    continue;
                }
                if live {
                    if let Some(c) = self.conns.get_mut(&id) {
                        c.deadline = None;
                    }
                    self.step(now, id, None);
                    progressed = true;
                    self.no_refire(now, id);
                }
            }
            self.expire_time_wait(now);
            if !progressed {
                return;
            }
        }
        log::warn!("endpoint: poll did not settle at t={}", self.secs(now));
    }

    /// The guard against a timer that fires again at the same instant: a
    /// connection whose timer step leaves it due at `now` again (nothing
    /// will change by stepping it at the same instant) waits
    /// [`MIN_REFIRE`] instead, so no timer can spin the loop.
    fn no_refire(&mut self, now: Instant, id: ConnId) {
        let Some(c) = self.conns.get_mut(&id) else { return };
        if c.deadline.is_some_and(|at| at <= now) {
            let at = now + MIN_REFIRE;
            c.deadline = Some(at);
            c.generation += 1;
            self.timers.push(Reverse((at, id, c.generation)));
            log::debug!("endpoint: conn={id} timer due again at once, deferred to t={}", self.secs(at));
        }
    }

    /// Everything the endpoint dropped or answered outside a connection,
    /// by name, non-zero counts only (`ss -s`, the exit summary): SYN
    /// backlog and memory drops, cookies, TIME-WAIT table overflows and
    /// rate-limited TIME-WAIT ACKs.
    pub fn counted(&self) -> Vec<(String, u64)> {
        let mut out = self.syn_drops().counted();
        for (name, n) in [
            ("TIME-WAIT skipped (table full, --max-tw)", self.time_wait_overflows()),
            ("TIME-WAIT ACKs not sent (rate limit)", self.time_wait_acks_limited()),
        ] {
            if n > 0 {
                out.push((name.to_string(), n));
            }
        }
        out
    }

    /// When to call [`poll`](Self::poll) next.
    pub fn poll_at(&self) -> Option<Instant> {
        let timer = self.timers.peek().map(|Reverse((at, _, _))| *at);
        let tw = self.tw.poll_at().map(|ms| self.start + Duration::from_millis(u64::from(ms)));
        [timer, tw, self.faults.poll_at(), self.slow.as_ref().and_then(|s| s.poll_at())].into_iter().flatten().min()
    }

    /// Whether fault rules or slow motion hold a packet right now.
    pub fn holds_packets(&self) -> bool {
        self.faults.holds_any() || self.slow.as_ref().is_some_and(|s| s.holds_any())
    }

    /// Ends a run: every packet fault rules or slow motion still hold is
    /// dropped and written as a `discarded` fault event with its segment and
    /// `why` (nothing vanishes without a word). Returns how many.
    pub fn discard_held(&mut self, now: Instant, why: &str) -> usize {
        let mut held = self.faults.take_held();
        if let Some(slow) = &mut self.slow {
            held.extend(slow.take_held());
        }
        let n = held.len();
        for (dir, packet, rule) in held {
            let seg = wire::parse(&packet).ok();
            let conn = seg.as_ref().and_then(|s| {
                let tuple = if dir == Dir::Out { s.tuple_at_sender() } else { s.tuple_at_receiver() };
                self.find(&tuple)
            });
            let holder = if rule == 0 { "slow motion".to_string() } else { format!("rule {rule}") };
            let detail = format!("{why} (held by {holder})");
            self.emit(now, conn, EventKind::Fault { action: FaultAction::Discarded, dir, seg, rule, detail }, None);
        }
        n
    }

    /// The next packet for the wire.
    pub fn transmit(&mut self) -> Option<Vec<u8>> {
        self.outbox.pop_front()
    }

    /// Hands buffered events to a sink, in order.
    pub fn drain_events(&mut self, sink: &mut dyn Sink) {
        for (ev, raw) in self.events.drain(..) {
            sink.event(&ev);
            if let (Some(raw), EventKind::Segment { dir, .. }) = (raw, &ev.kind) {
                sink.packet(ev.t, *dir, &raw);
            }
        }
    }

    /// Takes buffered events (tests).
    pub fn take_events(&mut self) -> Vec<Event> {
        self.events.drain(..).map(|(e, _)| e).collect()
    }

    /// Connections completely finished (reached CLOSED after having been
    /// synchronized, TIME-WAIT included).
    pub fn finished(&self) -> u64 {
        self.finished
    }

    /// Number of connections with a socket, half-open ones included
    /// (TIME-WAIT records of the Linux model are counted by
    /// [`Endpoint::time_wait_count`]).
    pub fn len(&self) -> usize {
        self.conns.len() + self.syn.half_open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty() && self.syn.half_open.is_empty()
    }

    /// State of a connection with a socket: `None` once it is gone (closed,
    /// or a record in the TIME-WAIT table, which is found by 4-tuple).
    pub fn state(&self, id: ConnId) -> Option<TcpState> {
        match self.conns.get(&id) {
            Some(c) => Some(c.state),
            None => self.syn.half_open.contains_key(&id).then_some(TcpState::SynReceived),
        }
    }

    /// Bytes the application has received on a connection.
    pub fn received(&self, id: ConnId) -> Option<usize> {
        self.conns.get(&id).map(|c| c.app.received)
    }

    /// FNV-1a (64-bit) of every byte the application has read on a
    /// connection, in order (tests compare it with the sent pattern).
    pub fn app_checksum(&self, id: ConnId) -> Option<u64> {
        self.conns.get(&id).and_then(|c| c.app.checksum)
    }

    /// A snapshot of every connection (TIME-WAIT records included), ordered
    /// by number.
    pub fn connections(&self, now: Instant) -> Vec<ConnInfo> {
        let mut v: Vec<ConnInfo> = self
            .conns
            .values()
            .map(|c| {
                let s = c.set.get::<tcp::Socket>(c.handle);
                ConnInfo {
                    id: c.id,
                    tuple: c.tuple,
                    state: c.state,
                    recv_q: s.recv_queue(),
                    send_q: s.send_queue(),
                    deadline: c.deadline.map(|d| if d > now { d - now } else { Duration::ZERO }),
                    retrans: c.seq.retrans,
                    probes: c.seq.probes,
                    unacked: c.seq.unacked(),
                    peer_fin: c.peer_fin,
                }
            })
            .collect();
        v.extend(self.syn.infos(now));
        let now_ms = self.ms(now);
        v.extend(self.tw.entries(now_ms).map(|(tuple, id, left)| ConnInfo {
            id,
            tuple,
            state: TcpState::TimeWait,
            recv_q: 0,
            send_q: 0,
            deadline: Some(Duration::from_millis(u64::from(left))),
            retrans: 0,
            probes: 0,
            unacked: 0,
            peer_fin: true,
        }));
        v.sort_by_key(|c| c.id);
        v
    }

    /// Ports closelab accepts connections on, sorted.
    pub fn listen_ports(&self) -> Vec<u16> {
        let mut v: Vec<u16> = self.listen_ports.iter().copied().collect();
        v.sort_unstable();
        v
    }

    /// The 4-tuples of every connection with a socket (unordered).
    pub fn tuples(&self) -> impl Iterator<Item = &FourTuple> {
        self.by_tuple.keys()
    }

    /// Looks up a connection (or TIME-WAIT record) by its 4-tuple.
    pub fn find(&self, tuple: &FourTuple) -> Option<ConnId> {
        self.by_tuple.get(tuple).copied().or_else(|| self.tw_id(tuple))
    }

    // ---- internals ----

    fn new_conn(&mut self, tuple: FourTuple, initial_send: usize) -> ConnId {
        let id = self.next_id;
        self.next_id += 1;
        let mut set = SocketSet::new(Vec::with_capacity(1));
        let handle = set.add(self.new_socket());
        self.insert_conn(id, tuple, set, handle, initial_send);
        id
    }

    /// A socket with both full buffers and the configured timers.
    fn new_socket(&self) -> tcp::Socket<'static> {
        let mut sock = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0u8; self.cfg.buffer]),
            tcp::SocketBuffer::new(vec![0u8; self.cfg.buffer]),
        );
        sock.set_timeout(Some(self.cfg.handshake_timeout));
        if self.cfg.timestamps {
            sock.set_tsval_generator(Some(tsval));
        }
        // Linux's TCP_KEEPIDLE minimum: a shorter keep-alive probes without end.
        sock.set_keep_alive(self.cfg.keep_alive.map(|d| d.max(crate::config::MIN_KEEPALIVE)));
        sock
    }

    fn insert_conn(
        &mut self,
        id: ConnId,
        tuple: FourTuple,
        set: SocketSet<'static>,
        handle: SocketHandle,
        initial_send: usize,
    ) {
        let app = App::new(self.cfg.app.clone(), self.cfg.policy, initial_send, self.cfg.verify);
        self.conns.insert(
            id,
            Conn {
                id,
                tuple,
                set,
                handle,
                state: TcpState::Closed,
                app,
                fin_seen: false,
                peer_fin: false,
                synchronized: false,
                deadline: None,
                generation: 0,
                seq: SeqTracker::default(),
                peer_fin_end: None,
                ts_recent: None,
                orphan_at: None,
                expired: None,
            },
        );
        self.by_tuple.insert(tuple, id);
    }

    fn remove(&mut self, id: ConnId) {
        if let Some(c) = self.conns.remove(&id) {
            self.by_tuple.remove(&c.tuple);
        }
    }

    fn finish(&mut self, id: ConnId) {
        if let Some(c) = self.conns.get(&id)
            && c.synchronized
        {
            self.finished += 1;
        }
        self.remove(id);
    }

    /// Steps one connection: ingress (if a packet is given), application,
    /// egress; emits each state change with its cause; reschedules its timer.
    fn step(&mut self, now: Instant, id: ConnId, input: Option<(Vec<u8>, Segment)>) {
        self.step_shown(now, id, input, false);
    }

    /// [`step`](Self::step); `shown`: the input's segment event was already
    /// emitted (a SYN that ended TIME-WAIT on the same 4-tuple).
    fn step_shown(&mut self, now: Instant, id: ConnId, input: Option<(Vec<u8>, Segment)>, shown: bool) {
        let ingress = input.is_some();
        // A nested step (a fault path releasing a held packet while this
        // one sends) can end this connection: every access below checks.
        if input.is_none()
            && let Some(c) = self.conns.get(&id)
            && c.state == TcpState::FinWait2
            && c.orphan_at.is_some_and(|at| at <= now)
        {
            let t = self.cfg.close_timers.fin_timeout.unwrap_or_default();
            self.drop_conn(
                now,
                id,
                format!(
                    "orphaned FIN-WAIT-2 ends after --fin-timeout {t} (tcp_fin_timeout): no segment sent, as Linux"
                ),
            );
            return;
        }
        if let Some((packet, seg)) = input {
            let Some(c) = self.conns.get_mut(&id) else { return };
            let had_fin = c.peer_fin;
            let fin_end = seg.flags.fin.then(|| seg.seq.wrapping_add(seg.seq_len()));
            c.fin_seen |= seg.flags.fin;
            if self.cfg.timestamps {
                c.track_ts(&packet, &seg);
            }
            c.seq.received(&seg);
            if !shown {
                self.segment_event(now, Some(id), Dir::In, &packet, Ok(seg));
            }
            self.dev.rx.push_back(packet);
            let c = self.conns.get_mut(&id).expect("stepped connection exists");
            self.iface.poll_ingress_single(now, &mut self.dev, &mut c.set);
            self.dev.rx.clear();
            self.note_state(now, id, Cause::Segment);
            if let Some(c) = self.conns.get_mut(&id)
                && !had_fin
                && c.peer_fin
            {
                c.peer_fin_end = fin_end;
            }
            self.flush_tx(now, Some(id));
            let Some(c) = self.conns.get(&id) else { return };
            if c.state == TcpState::Listen {
                // An RST during the handshake sends smoltcp's socket back to
                // LISTEN; the connection is gone.
                self.remove(id);
                return;
            }
        }
        self.run_app(now, id);
        // Only bulk data is batched: a connection that is closing (or
        // opening) steps at once, so close sequences stay exactly as
        // without batching.
        let established = self.conns.get(&id).is_some_and(|c| c.state == TcpState::Established);
        if ingress
            && established
            && let Some(batch) = self.batch.as_mut()
        {
            // Repeats (a connection interleaved with another) only cost an
            // egress pass that finds nothing.
            if batch.last() != Some(&id) {
                batch.push(id);
            }
            return;
        }
        // Egress: at most one segment per call, so loop. Anything that
        // changes state here is a timer (retransmission, TIME-WAIT expiry,
        // user timeout).
        for _ in 0..10_000 {
            // Sending can run a nested step (a fault path releasing a held
            // packet) that ends this connection.
            let Some(c) = self.conns.get_mut(&id) else { return };
            let r = self.iface.poll_egress(now, &mut self.dev, &mut c.set);
            let sent = !self.dev.tx.is_empty();
            self.note_state(now, id, Cause::Timer);
            self.flush_tx(now, Some(id));
            if r == smoltcp::iface::PollResult::None && !sent {
                break;
            }
            // Sending may have freed buffer space for the application.
            if !self.conns.contains_key(&id) {
                return;
            }
            self.run_app(now, id);
        }
        if let Some(why) = self.conns.get_mut(&id).and_then(|c| c.expired.take()) {
            self.drop_conn(now, id, why);
            return;
        }
        if self.retire_time_wait(now, id) {
            return;
        }
        self.reschedule(now, id);
    }

    /// Ends a connection by one of Linux's close timers: a note naming it,
    /// `STATE -> CLOSED (timer)`, the socket freed without a segment (Linux
    /// reports ETIMEDOUT to the application and sends nothing).
    fn drop_conn(&mut self, now: Instant, id: ConnId, why: String) {
        let Some(c) = self.conns.get(&id) else { return };
        let from = c.state;
        self.note(now, Some(id), why);
        self.emit(now, Some(id), EventKind::State { from, to: TcpState::Closed, cause: Cause::Timer }, None);
        self.finish(id);
    }

    /// The retransmission limit of a connection now, and its name.
    fn retry_limit(&self, c: &Conn) -> (u32, &'static str) {
        let t = &self.cfg.close_timers;
        match c.state {
            TcpState::SynReceived => (t.synack_retries, "--synack-retries (tcp_synack_retries)"),
            TcpState::SynSent => (SYN_RETRIES, "tcp_syn_retries"),
            _ if c.app.closed == Some(CloseCall::Close) => {
                let n = if t.orphan_retries == 0 { 8 } else { t.orphan_retries };
                (n, "--orphan-retries (tcp_orphan_retries; the application has closed)")
            }
            _ => (t.retries, "--retries (tcp_retries2)"),
        }
    }

    fn run_app(&mut self, now: Instant, id: ConnId) {
        let Some(c) = self.conns.get_mut(&id) else { return };
        let mut actions = std::mem::take(&mut self.actions);
        let sock = c.set.get_mut::<tcp::Socket>(c.handle);
        c.app.io(sock, &mut actions);
        let done = match c.app.client.as_mut() {
            Some(cl) if !cl.results.is_empty() => std::mem::take(&mut cl.results),
            _ => Vec::new(),
        };
        let (call, _) = c.app.due_close(now, c.peer_fin);
        if self.cfg.data_events {
            for &a in &actions {
                self.app_event(now, id, a);
            }
        }
        actions.clear();
        self.actions = actions;
        for (path, result) in done {
            let text = match &result {
                Ok(r) => format!(
                    "http: GET {path} -> {} {}, {} body bytes ({}, fnv1a {:016x}), {}",
                    r.status,
                    r.reason,
                    r.body_len,
                    r.framing.name(),
                    r.checksum,
                    if r.keep_alive { "keep-alive" } else { "server closes" }
                ),
                Err(e) => format!("http: GET {path} failed: {e} (connection aborted)"),
            };
            self.emit(now, Some(id), EventKind::Note { text }, None);
            self.http_done.push(HttpDone { conn: id, path, result });
        }
        if let Some(call) = call {
            self.do_close(now, id, call);
        }
    }

    fn do_close(&mut self, now: Instant, id: ConnId, call: CloseCall) {
        let c = self.conns.get_mut(&id).expect("connection exists");
        if c.app.closed.is_some() && call != CloseCall::Abort {
            return;
        }
        let rst_on_unread = c.app.rst_on_unread();
        let sock = c.set.get_mut::<tcp::Socket>(c.handle);
        let action = match call {
            // RFC 2525 §2.17: Linux answers close() with unread data by RST.
            CloseCall::Close if rst_on_unread && sock.recv_queue() > 0 => {
                sock.abort();
                AppAction::CloseUnread
            }
            CloseCall::Close => {
                sock.close();
                AppAction::Close
            }
            CloseCall::Shutdown => {
                sock.close();
                AppAction::Shutdown
            }
            CloseCall::Abort => {
                sock.abort();
                AppAction::Abort
            }
        };
        if matches!(action, AppAction::Close | AppAction::Shutdown) && self.cfg.time_wait_model == TimeWaitModel::Linux
        {
            // Linux ACKs the FIN that ends FIN-WAIT-1/2 at once (`tcp_fin`
            // calls `tcp_send_ack`); smoltcp delays it 10 ms like any ACK,
            // and a delay timer a request started keeps running. Longer
            // than the Linux peer's tail loss probe on a fast path, that
            // delay makes the peer send its FIN again; our TIME-WAIT's
            // second ACK then reaches a closed socket, whose RST ends our
            // TIME-WAIT (docs/smoltcp-notes.md, "Delayed ACK of the
            // peer's FIN"). So once our FIN is queued, nothing is delayed.
            sock.set_ack_delay(None);
        }
        c.app.closed = Some(match action {
            AppAction::CloseUnread => CloseCall::Abort,
            _ => call,
        });
        self.app_event(now, id, action);
        self.note_state(now, id, Cause::App(action));
    }

    /// Compares the socket's state with the last one seen and emits the change.
    fn note_state(&mut self, now: Instant, id: ConnId, cause: Cause) {
        let c = self.conns.get_mut(&id).expect("connection exists");
        let new: TcpState = c.socket().state().into();
        let old = c.state;
        if new == old {
            return;
        }
        c.state = new;
        c.orphan_at = match (new, c.app.closed, self.cfg.close_timers.fin_timeout) {
            (TcpState::FinWait2, Some(CloseCall::Close), Some(t)) => Some(now + t),
            _ => None,
        };
        match new {
            TcpState::Established => {
                c.synchronized = true;
                if c.app.established_at.is_none() {
                    c.app.established_at = Some(now);
                }
                // The handshake timeout must not fire on an idle connection.
                let t = self.cfg.user_timeout;
                c.socket().set_timeout(t);
            }
            TcpState::CloseWait | TcpState::Closing | TcpState::TimeWait | TcpState::LastAck
                if cause == Cause::Segment =>
            {
                if matches!(
                    (old, new),
                    (TcpState::Established, TcpState::CloseWait)
                        | (TcpState::FinWait1, TcpState::Closing)
                        | (TcpState::FinWait1, TcpState::TimeWait)
                        | (TcpState::FinWait2, TcpState::TimeWait)
                        | (TcpState::SynReceived, TcpState::CloseWait)
                ) {
                    c.peer_fin = true;
                    if c.app.peer_fin_at.is_none() {
                        c.app.peer_fin_at = Some(now);
                    }
                }
            }
            _ => {}
        }
        if matches!(
            new,
            TcpState::FinWait1
                | TcpState::FinWait2
                | TcpState::Closing
                | TcpState::TimeWait
                | TcpState::CloseWait
                | TcpState::LastAck
        ) {
            c.synchronized = true;
        }
        log::debug!("endpoint: conn={id} state={old}=>{new} cause={cause}");
        self.emit(now, Some(id), EventKind::State { from: old, to: new, cause }, None);
    }

    /// Sends what smoltcp just transmitted through the device.
    fn flush_tx(&mut self, now: Instant, id: Option<ConnId>) {
        if self.dev.tx.is_empty() {
            return;
        }
        // Sending can step another connection (a fault path releasing an
        // incoming packet), which fills and flushes `dev.tx` itself: take
        // the batch out first, and give its buffer back afterwards.
        let mut sent = std::mem::take(&mut self.dev.tx);
        for p in sent.drain(..) {
            self.send(now, id, p);
        }
        if self.dev.tx.is_empty() {
            self.dev.tx = sent;
        }
    }

    fn send(&mut self, now: Instant, id: Option<ConnId>, packet: Vec<u8>) {
        let seg = wire::parse(&packet);
        let limit = id.and_then(|i| self.conns.get(&i)).map(|c| self.retry_limit(c));
        let fin_seen = match id.and_then(|i| self.conns.get_mut(&i)) {
            Some(c) => {
                if c.expired.is_some() {
                    // Dropped by a retransmission limit: nothing more goes out.
                    return;
                }
                let before = c.fin_seen;
                if let Ok(s) = &seg {
                    c.fin_seen |= s.flags.fin;
                    c.seq.sent(s);
                    if let Some((n, name)) = limit
                        && c.seq.head_retrans > n
                    {
                        // The retransmission that would exceed the limit is
                        // not sent: Linux gives up when that timer fires.
                        c.expired = Some(format!(
                            "{n} retransmissions unanswered: the connection is dropped ({name} = {n}), no segment sent, as Linux"
                        ));
                        return;
                    }
                }
                before
            }
            None => false,
        };
        if self.no_faults() {
            self.deliver_out(now, packet, seg);
            return;
        }
        let mut release = Vec::new();
        self.through_faults(now, Dir::Out, packet, seg.as_ref().ok(), id, fin_seen, &mut release);
        self.deliver_all(now, release);
    }

    fn reschedule(&mut self, now: Instant, id: ConnId) {
        let Some(c) = self.conns.get_mut(&id) else { return };
        let sock_at = self.iface.poll_at(now, &c.set).map(|t| if t < now { now } else { t });
        let (_, app_at) = c.app.due_close(now, c.peer_fin);
        let next = [sock_at, app_at, c.orphan_at].into_iter().flatten().min();
        log::trace!(
            "endpoint: conn={id} state={} next={next:?} sock_at={sock_at:?} app_at={app_at:?} now={now}",
            c.state
        );
        if c.state == TcpState::Closed && next.is_none() {
            self.finish(id);
            return;
        }
        if next != c.deadline {
            c.deadline = next;
            c.generation += 1;
            if let Some(at) = next {
                self.timers.push(Reverse((at, id, c.generation)));
            }
        }
    }

    fn segment_event(&mut self, now: Instant, conn: Option<ConnId>, dir: Dir, packet: &[u8], seg: Parsed) {
        match seg {
            Ok(_) if !self.cfg.segment_events && !self.cfg.capture => {}
            Ok(seg) => {
                let raw = self.cfg.capture.then(|| packet.to_vec());
                self.emit(now, conn, EventKind::Segment { dir, seg }, raw);
            }
            Err(wire::ParseError::NotTcp(_)) => {}
            Err(e) => {
                self.emit(now, conn, EventKind::Malformed { dir, len: packet.len(), reason: e.to_string() }, None)
            }
        }
    }

    fn app_event(&mut self, now: Instant, id: ConnId, action: AppAction) {
        self.emit(now, Some(id), EventKind::App { action }, None);
    }

    fn emit(&mut self, now: Instant, conn: Option<ConnId>, kind: EventKind, raw: Option<Vec<u8>>) {
        let ev = Event { t: self.secs(now), side: Side::Closelab, conn, kind };
        self.events.push((ev, raw));
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod fault_tests;

// The tests (`use super::*`) build addresses; nothing else here names the type.
#[cfg(test)]
use smoltcp::wire::IpCidr;
