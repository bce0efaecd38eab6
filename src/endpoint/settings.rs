//! The endpoint's configuration and public data types: the TIME-WAIT and
//! close-timer settings, [`EndpointConfig`], the finished HTTP exchanges,
//! the errors of [`Endpoint::new`](super::Endpoint::new) and
//! [`Endpoint::connect`](super::Endpoint::connect), and [`ConnInfo`], a
//! connection as the views see it.

use std::fmt;
use std::net::IpAddr;

use smoltcp::time::Duration;
use smoltcp::wire::IpCidr;

use super::{AppKind, Policy, http, timewait};
use crate::event::{ConnId, TcpState};
use crate::fault::FaultRule;
use crate::wire::FourTuple;

/// What to do with a bare SYN for a 4-tuple that is in TIME-WAIT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeWaitSyn {
    /// Replace the TIME-WAIT connection with a new one at once. Linux does
    /// this when the SYN's sequence number is above rcv_nxt; without it the
    /// client stalls for seconds (SYN backoff 1, 2, 4, 8 s).
    Accept,
    /// Hand the SYN to the TIME-WAIT socket, which is what smoltcp alone does:
    /// it is silently dropped until TIME-WAIT ends.
    Drop,
}

/// Who keeps a connection's TIME-WAIT (`--time-wait-model`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeWaitModel {
    /// closelab's own compact table ([`timewait`]) with Linux's rules: the
    /// smoltcp socket and its buffers are freed once the final ACK is sent.
    Linux,
    /// smoltcp's socket keeps TIME-WAIT (its fixed 10 s, SYNs as
    /// [`TimeWaitSyn`] says): smoltcp as it is.
    Smoltcp,
}

impl TimeWaitModel {
    pub fn name(self) -> &'static str {
        match self {
            TimeWaitModel::Linux => "linux",
            TimeWaitModel::Smoltcp => "smoltcp",
        }
    }
}

/// Linux's close timers that smoltcp does not have, each named after its
/// sysctl. Retransmissions are counted per segment (smoltcp's backoff: RTO
/// at least 1 s, doubling up to 60 s), not converted into Linux's time
/// budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CloseTimers {
    /// `tcp_fin_timeout`: an orphaned FIN-WAIT-2 (the application called
    /// close(), not shutdown()) ends this long after it began, silently.
    /// `None`: never (smoltcp alone).
    pub fin_timeout: Option<Duration>,
    /// `tcp_retries2`: retransmissions of one segment before the
    /// connection is dropped (ETIMEDOUT, no segment sent).
    pub retries: u32,
    /// `tcp_orphan_retries` for connections the application has closed:
    /// 0 means 8, as on Linux.
    pub orphan_retries: u32,
    /// `tcp_synack_retries`: SYN-ACK retransmissions before a half-open
    /// connection is freed.
    pub synack_retries: u32,
}

impl Default for CloseTimers {
    /// Linux's defaults: 60 s, 15, 0 (= 8), 5.
    fn default() -> CloseTimers {
        CloseTimers { fin_timeout: Some(Duration::from_secs(60)), retries: 15, orphan_retries: 0, synack_retries: 5 }
    }
}

impl CloseTimers {
    /// smoltcp alone: no FIN-WAIT-2 timeout, retransmissions without end.
    pub fn none() -> CloseTimers {
        CloseTimers { fin_timeout: None, retries: u32::MAX, orphan_retries: u32::MAX, synack_retries: u32::MAX }
    }
}

/// Everything the endpoint needs to know; built by the CLI's validation step.
#[derive(Clone, Debug)]
pub struct EndpointConfig {
    /// closelab's own addresses (with prefix: decides what is on-link).
    pub addrs: Vec<IpCidr>,
    /// Next hop for anything off-link (the kernel side of the TUN).
    pub gateways: Vec<IpAddr>,
    pub mtu: usize,
    /// Seeds ISNs and random faults. 0 repeats the same ISNs every run.
    pub seed: u64,
    /// Per-connection receive and send buffer size.
    pub buffer: usize,
    /// Beyond this many connections, a SYN gets RST.
    pub max_conns: usize,
    /// A connection that is not ESTABLISHED this long after its SYN is reset
    /// (bounds memory under a SYN flood).
    pub handshake_timeout: Duration,
    /// Half-open connections kept (like Linux's tcp_max_syn_backlog); beyond
    /// it a SYN is dropped (or answered with a cookie, see `syncookies`).
    pub syn_backlog: usize,
    /// Beyond the backlog, answer SYNs with a SYN cookie (no state) instead
    /// of dropping them, like Linux's tcp_syncookies=1.
    pub syncookies: bool,
    /// Memory budget of the connection table in bytes (see
    /// [`Endpoint::memory`](super::Endpoint::memory)); a SYN that would pass it is dropped.
    pub max_memory: usize,
    pub keep_alive: Option<Duration>,
    /// smoltcp's user timeout (`set_timeout`): RST after this long without
    /// an answer, in every state (smoltcp issue #1202).
    pub user_timeout: Option<Duration>,
    pub app: AppKind,
    pub policy: Policy,
    /// With [`TimeWaitModel::Smoltcp`] only: a SYN for a TIME-WAIT 4-tuple.
    pub time_wait_syn: TimeWaitSyn,
    pub time_wait_model: TimeWaitModel,
    /// TIME-WAIT length, RFC 1337 and the table's size (Linux model).
    pub time_wait: timewait::TwConfig,
    /// Linux's close timers: `--fin-timeout`, `--retries`,
    /// `--orphan-retries`, `--synack-retries`.
    pub close_timers: CloseTimers,
    pub faults: Vec<FaultRule>,
    /// Keep raw bytes of each segment for pcap sinks.
    pub capture: bool,
    /// Also emit `app send/recv` events (on by default; bulk transfers turn
    /// them off to keep the timeline short).
    pub data_events: bool,
    /// Emit an event for every segment (the timeline). Off, only state
    /// changes, notes and faults are events: bulk transfers then format
    /// nothing per segment. A pcap (`capture`) still gets every segment.
    pub segment_events: bool,
    /// Hash every byte the application reads ([`Endpoint::app_checksum`](super::Endpoint::app_checksum));
    /// per-byte work nobody asked for otherwise.
    pub verify: bool,
    /// Hold every segment this long in both directions (slow motion).
    pub slow: Option<Duration>,
    /// Send RFC 7323 timestamps (as Linux with tcp_timestamps=1 does);
    /// smoltcp then echoes the peer's.
    pub timestamps: bool,
}

impl EndpointConfig {
    /// A config with closelab's defaults for one address.
    pub fn new(addr: IpCidr) -> EndpointConfig {
        EndpointConfig {
            addrs: vec![addr],
            gateways: Vec::new(),
            mtu: 1500,
            seed: 1,
            buffer: 64 * 1024,
            max_conns: 100_000,
            handshake_timeout: Duration::from_secs(30),
            syn_backlog: 4096,
            syncookies: true,
            max_memory: 1 << 30,
            keep_alive: None,
            user_timeout: None,
            app: AppKind::Sink,
            policy: Policy::default(),
            time_wait_syn: TimeWaitSyn::Accept,
            time_wait_model: TimeWaitModel::Linux,
            time_wait: timewait::TwConfig::default(),
            close_timers: CloseTimers::default(),
            faults: Vec::new(),
            capture: false,
            data_events: true,
            segment_events: true,
            verify: false,
            slow: None,
            timestamps: false,
        }
    }
}

/// A finished HTTP exchange of the client app: the response, or why there
/// is none (the connection was then aborted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpDone {
    pub conn: ConnId,
    pub path: String,
    pub result: Result<http::Response, http::HttpError>,
}

/// Errors of [`Endpoint::new`](super::Endpoint::new): the configuration asks for more than
/// smoltcp's interface holds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error("cannot add address {addr}: the interface holds at most {max}")]
    TooManyAddrs { addr: IpCidr, max: usize },
    #[error("cannot add the default route via {0}: the route table is full")]
    RouteTableFull(IpAddr),
}

// Bridge until cmd/ and sys/ have typed errors (issue 11).
impl From<EndpointError> for String {
    fn from(e: EndpointError) -> String {
        e.to_string()
    }
}

/// Errors of [`Endpoint::connect`](super::Endpoint::connect).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectError {
    NoLocalAddress(IpAddr),
    NoFreePort,
    Limit(usize),
    Invalid(String),
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            ConnectError::NoLocalAddress(ip) => write!(f, "no local address of the same family as {ip}"),
            ConnectError::NoFreePort => write!(f, "no free local port"),
            ConnectError::Limit(n) => write!(f, "connection limit {n} reached"),
            ConnectError::Invalid(e) => write!(f, "cannot connect: {e}"),
        }
    }
}

impl std::error::Error for ConnectError {}

/// A connection as the views see it (`closelab ss`).
#[derive(Clone, Debug, PartialEq)]
pub struct ConnInfo {
    pub id: ConnId,
    pub tuple: FourTuple,
    pub state: TcpState,
    pub recv_q: usize,
    pub send_q: usize,
    /// Next deadline of this connection, if any, relative to now.
    pub deadline: Option<Duration>,
    /// Retransmissions not yet acknowledged: outgoing segments that started
    /// in sequence space already sent, since the peer's ACK last advanced
    /// (Linux's `icsk_retransmits`, the count in ss's `timer:(on,…,N)`).
    pub retrans: u32,
    /// Keep-alive probes sent since the peer last answered (Linux's
    /// `icsk_probes_out`, the count in ss's `timer:(keepalive,…,N)`).
    pub probes: u32,
    /// Sequence space sent and not yet acknowledged (SYN and FIN count 1).
    pub unacked: u32,
    /// The peer's FIN has arrived.
    pub peer_fin: bool,
}
