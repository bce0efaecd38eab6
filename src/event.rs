//! The one event stream. Every view (timeline, ladder, ss table, JSON lines,
//! pcap, summary) is fed from [`Event`]s; no view re-derives state from
//! packets or sockets.
//!
//! This module only describes events; it performs no I/O.

use std::fmt;
use std::net::SocketAddr;

use crate::wire::Segment;

/// TCP states, spelled as smoltcp and RFC 9293 print them (`Display`), with
/// `ss` and `netstat` spellings for the views that imitate those tools.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TcpState {
    Closed,
    Listen,
    SynSent,
    SynReceived,
    Established,
    FinWait1,
    FinWait2,
    CloseWait,
    Closing,
    LastAck,
    TimeWait,
}

impl TcpState {
    /// Every state in the order of a connection's life, CLOSED last (the
    /// order of summaries and `ss -s`).
    pub const ALL: [TcpState; 11] = [
        TcpState::Listen,
        TcpState::SynSent,
        TcpState::SynReceived,
        TcpState::Established,
        TcpState::FinWait1,
        TcpState::FinWait2,
        TcpState::CloseWait,
        TcpState::Closing,
        TcpState::LastAck,
        TcpState::TimeWait,
        TcpState::Closed,
    ];

    /// RFC 9293 / smoltcp spelling: `FIN-WAIT-1`, `TIME-WAIT`.
    pub fn rfc_name(self) -> &'static str {
        match self {
            TcpState::Closed => "CLOSED",
            TcpState::Listen => "LISTEN",
            TcpState::SynSent => "SYN-SENT",
            TcpState::SynReceived => "SYN-RECEIVED",
            TcpState::Established => "ESTABLISHED",
            TcpState::FinWait1 => "FIN-WAIT-1",
            TcpState::FinWait2 => "FIN-WAIT-2",
            TcpState::CloseWait => "CLOSE-WAIT",
            TcpState::Closing => "CLOSING",
            TcpState::LastAck => "LAST-ACK",
            TcpState::TimeWait => "TIME-WAIT",
        }
    }

    /// `ss` spelling: `ESTAB`, `SYN-RECV`, `FIN-WAIT-1`, `UNCONN` for closed.
    pub fn ss_name(self) -> &'static str {
        match self {
            TcpState::Closed => "UNCONN",
            TcpState::Established => "ESTAB",
            TcpState::SynReceived => "SYN-RECV",
            other => other.rfc_name(),
        }
    }

    /// `netstat` spelling: `TIME_WAIT`, `FIN_WAIT1`, `SYN_RECV`.
    pub fn netstat_name(self) -> &'static str {
        match self {
            TcpState::Closed => "CLOSE",
            TcpState::Listen => "LISTEN",
            TcpState::SynSent => "SYN_SENT",
            TcpState::SynReceived => "SYN_RECV",
            TcpState::Established => "ESTABLISHED",
            TcpState::FinWait1 => "FIN_WAIT1",
            TcpState::FinWait2 => "FIN_WAIT2",
            TcpState::CloseWait => "CLOSE_WAIT",
            TcpState::Closing => "CLOSING",
            TcpState::LastAck => "LAST_ACK",
            TcpState::TimeWait => "TIME_WAIT",
        }
    }

    /// Accepts the RFC, ss and netstat spellings, any case, `-` or `_`.
    pub fn parse(s: &str) -> Option<TcpState> {
        let norm: String = s.to_ascii_uppercase().chars().filter(|c| *c != '-' && *c != '_').collect();
        Some(match norm.as_str() {
            "CLOSED" | "CLOSE" | "UNCONN" => TcpState::Closed,
            "LISTEN" => TcpState::Listen,
            "SYNSENT" => TcpState::SynSent,
            "SYNRECEIVED" | "SYNRECV" => TcpState::SynReceived,
            "ESTABLISHED" | "ESTAB" => TcpState::Established,
            "FINWAIT1" => TcpState::FinWait1,
            "FINWAIT2" => TcpState::FinWait2,
            "CLOSEWAIT" => TcpState::CloseWait,
            "CLOSING" => TcpState::Closing,
            "LASTACK" => TcpState::LastAck,
            "TIMEWAIT" => TcpState::TimeWait,
            _ => return None,
        })
    }
}

impl fmt::Display for TcpState {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.rfc_name())
    }
}

impl From<smoltcp::socket::tcp::State> for TcpState {
    fn from(s: smoltcp::socket::tcp::State) -> TcpState {
        use smoltcp::socket::tcp::State as S;
        match s {
            S::Closed => TcpState::Closed,
            S::Listen => TcpState::Listen,
            S::SynSent => TcpState::SynSent,
            S::SynReceived => TcpState::SynReceived,
            S::Established => TcpState::Established,
            S::FinWait1 => TcpState::FinWait1,
            S::FinWait2 => TcpState::FinWait2,
            S::CloseWait => TcpState::CloseWait,
            S::Closing => TcpState::Closing,
            S::LastAck => TcpState::LastAck,
            S::TimeWait => TcpState::TimeWait,
        }
    }
}

/// Which end of the wire an event belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// closelab's own smoltcp endpoint.
    Closelab,
    /// The Linux kernel peer, observed through NETLINK_SOCK_DIAG.
    Linux,
}

impl Side {
    pub fn name(self) -> &'static str {
        match self {
            Side::Closelab => "closelab",
            Side::Linux => "linux",
        }
    }
}

/// Direction of a segment relative to closelab.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dir {
    In,
    Out,
}

impl Dir {
    pub fn name(self) -> &'static str {
        match self {
            Dir::In => "in",
            Dir::Out => "out",
        }
    }
}

/// What made a state change happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// The segment processed just before (the last `Segment` event with
    /// `dir: In` of the same connection).
    Segment,
    /// A timer: TIME-WAIT expiry, retransmission, keep-alive, user timeout.
    Timer,
    /// An application call; the action is named (`close`, `abort`, `shutdown`,
    /// `connect`, `listen`).
    App(AppAction),
    /// Observed on the Linux side by polling sock_diag: the kernel does not
    /// tell why.
    Observed,
}

impl Cause {
    /// The JSON spelling: `segment`, `timer`, `app`, `observed`.
    pub fn kind(self) -> &'static str {
        match self {
            Cause::Segment => "segment",
            Cause::Timer => "timer",
            Cause::App(_) => "app",
            Cause::Observed => "observed",
        }
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Cause::App(a) => write!(f, "app {}", a.name()),
            other => f.write_str(other.kind()),
        }
    }
}

/// Application calls on a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AppAction {
    Listen,
    Connect,
    Accept,
    /// Bytes queued for sending.
    Send(usize),
    /// Bytes read and consumed.
    Recv(usize),
    /// close(): FIN after queued data.
    Close,
    /// close() with unread data, imitating Linux (RFC 2525 §2.17): RST.
    CloseUnread,
    /// shutdown(SHUT_WR): FIN, keeps reading.
    Shutdown,
    /// abort / SO_LINGER {1,0}: RST.
    Abort,
    /// Close with SO_LINGER {1,0} (Linux side): RST.
    LingerClose,
}

impl AppAction {
    pub fn name(self) -> &'static str {
        match self {
            AppAction::Listen => "listen",
            AppAction::Connect => "connect",
            AppAction::Accept => "accept",
            AppAction::Send(_) => "send",
            AppAction::Recv(_) => "recv",
            AppAction::Close => "close",
            AppAction::CloseUnread => "close-unread",
            AppAction::Shutdown => "shutdown",
            AppAction::Abort => "abort",
            AppAction::LingerClose => "linger-close",
        }
    }

    pub fn bytes(self) -> Option<usize> {
        match self {
            AppAction::Send(n) | AppAction::Recv(n) => Some(n),
            _ => None,
        }
    }
}

/// What a fault rule did to a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultAction {
    Dropped,
    Delayed,
    Duplicated,
    Reordered,
}

impl FaultAction {
    pub fn name(self) -> &'static str {
        match self {
            FaultAction::Dropped => "dropped",
            FaultAction::Delayed => "delayed",
            FaultAction::Duplicated => "duplicated",
            FaultAction::Reordered => "reordered",
        }
    }
}

/// Connection number as shown in the timeline (`#1`). Numbers start at 1 and
/// are never reused within a run.
pub type ConnId = u64;

/// Seconds since the start of the run, as a float (the timeline's clock).
pub type Secs = f64;

/// What happened.
#[derive(Clone, Debug, PartialEq)]
pub enum EventKind {
    /// A segment crossed closelab's link. `conn` is `None` for segments that
    /// belong to no connection (e.g. an RST answering a stray segment).
    Segment { dir: Dir, seg: Segment },
    /// A segment that could not be parsed as TCP (kept, never panicked on).
    Malformed { dir: Dir, len: usize, reason: String },
    /// A state change and what caused it.
    State { from: TcpState, to: TcpState, cause: Cause },
    /// An application call.
    App { action: AppAction },
    /// A fault rule acted on a segment.
    Fault { action: FaultAction, dir: Dir, seg: Option<Segment>, rule: usize, detail: String },
    /// A timer observed on the Linux side (`timewait 59.8s`).
    Timer { name: String, remaining: Secs, retrans: u32 },
    /// A connection could not be created (limit reached, …).
    Refused { tuple: String, reason: String },
    /// Free text for stories and scenario steps.
    Note { text: String },
}

/// One entry of the stream.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub t: Secs,
    pub side: Side,
    pub conn: Option<ConnId>,
    pub kind: EventKind,
}

/// Where events go. Views implement this; the endpoint pushes into it.
pub trait Sink {
    fn event(&mut self, ev: &Event);

    /// The raw bytes of the segment just reported by `event` (only when the
    /// endpoint captures, for pcap).
    fn packet(&mut self, _t: Secs, _dir: Dir, _raw: &[u8]) {}

    /// A batch of events is complete: write out what is buffered. The run
    /// loop calls it before it waits, so a live timeline is never behind
    /// while bulk transfers write in large chunks.
    fn flush(&mut self) {}
}

impl Sink for Vec<Event> {
    fn event(&mut self, ev: &Event) {
        self.push(ev.clone());
    }
}

/// Per-state counts of how many connections ever reached each state: the
/// exit summary.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub reached: std::collections::BTreeMap<TcpState, u64>,
    pub connections: u64,
}

impl Summary {
    pub fn from_events<'a>(events: impl IntoIterator<Item = &'a Event>, side: Side) -> Summary {
        let mut s = Summary::default();
        let mut seen = std::collections::HashSet::new();
        let mut seen_state = std::collections::HashSet::new();
        for ev in events {
            if ev.side != side {
                continue;
            }
            if let (Some(c), EventKind::State { to, .. }) = (ev.conn, &ev.kind) {
                if seen.insert(c) {
                    s.connections += 1;
                }
                if seen_state.insert((c, *to)) {
                    *s.reached.entry(*to).or_insert(0) += 1;
                }
            }
        }
        s
    }
}

/// Helper for views: format an address as `ip:port` with IPv6 in brackets.
pub fn addr(a: &SocketAddr) -> String {
    a.to_string()
}
