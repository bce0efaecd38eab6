//! The one event stream. Every view (timeline, ladder, ss table, JSON lines,
//! pcap, summary) is fed from [`Event`]s; no view re-derives state from
//! packets or sockets.
//!
//! This module only describes events; it performs no I/O. The types derive
//! serde's traits: their JSON form is the JSON-lines format of
//! `crate::view::json` (shapes documented there).

use std::fmt;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize, Serializer};

use crate::wire::Segment;

/// TCP states, spelled as smoltcp and RFC 9293 print them (`Display`), with
/// `ss` and `netstat` spellings for the views that imitate those tools.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
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

/// JSON writes the RFC spelling ...
impl Serialize for TcpState {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.rfc_name())
    }
}

/// ... and reads any spelling [`TcpState::parse`] accepts.
impl TryFrom<String> for TcpState {
    type Error = String;

    fn try_from(s: String) -> Result<TcpState, String> {
        TcpState::parse(&s).ok_or_else(|| format!("unknown state {s:?}"))
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
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

/// What made a state change happen. In JSON: `"cause":"app","action":"close"`
/// (the action only for `app`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "CauseWire", try_from = "CauseWire")]
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

/// Application calls on a connection. In JSON: `"action":"send","bytes":5`
/// (bytes only for send and recv).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "AppWire", try_from = "AppWire")]
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultAction {
    Dropped,
    Delayed,
    Duplicated,
    Reordered,
    /// Still held by a rule (or slow motion) when the run or round ended:
    /// never delivered.
    Discarded,
}

impl FaultAction {
    pub fn name(self) -> &'static str {
        match self {
            FaultAction::Dropped => "dropped",
            FaultAction::Delayed => "delayed",
            FaultAction::Duplicated => "duplicated",
            FaultAction::Reordered => "reordered",
            FaultAction::Discarded => "discarded",
        }
    }
}

/// Connection number as shown in the timeline (`#1`). Numbers start at 1 and
/// are never reused within a run.
pub type ConnId = u64;

/// Seconds since the start of the run, as a float (the timeline's clock).
pub type Secs = f64;

/// What happened; `type` in JSON, the variant's fields beside it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum EventKind {
    /// A segment crossed closelab's link. `conn` is `None` for segments that
    /// belong to no connection (e.g. an RST answering a stray segment).
    Segment {
        dir: Dir,
        #[serde(flatten)]
        seg: Segment,
    },
    /// A segment that could not be parsed as TCP (kept, never panicked on).
    Malformed { dir: Dir, len: usize, reason: String },
    /// A state change and what caused it.
    State {
        from: TcpState,
        to: TcpState,
        #[serde(flatten)]
        cause: Cause,
    },
    /// An application call.
    App {
        #[serde(flatten)]
        action: AppAction,
    },
    /// A fault rule acted on a segment; `seg` is `None` (no segment keys)
    /// when the segment could not be parsed.
    Fault {
        action: FaultAction,
        dir: Dir,
        rule: usize,
        detail: String,
        #[serde(flatten, deserialize_with = "fault_segment")]
        seg: Option<Segment>,
    },
    /// A timer observed on the Linux side (`timewait 59.8s`).
    Timer {
        name: String,
        #[serde(serialize_with = "secs", deserialize_with = "read_secs")]
        remaining: Secs,
        retrans: u32,
    },
    /// A connection could not be created (limit reached, …).
    Refused { tuple: String, reason: String },
    /// Free text for stories and scenario steps.
    Note { text: String },
}

/// One entry of the stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    #[serde(serialize_with = "secs", deserialize_with = "read_secs")]
    pub t: Secs,
    pub side: Side,
    pub conn: Option<ConnId>,
    #[serde(flatten)]
    pub kind: EventKind,
}

/// Times a JSON line may carry, in seconds either side of the run's start
/// (about 31 years): beyond it a float no longer holds microseconds, so a
/// time would not read back as written.
pub const MAX_SECS: f64 = 1e9;

/// Reads a time written by [`secs`]: a number within [`MAX_SECS`]
/// (found by fuzzing: `1e303` read back as a different number).
pub fn read_secs<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let x = f64::deserialize(d)?;
    if x.abs() > MAX_SECS {
        return Err(serde::de::Error::custom(format!("time {x:e} s out of range (at most {MAX_SECS:e} s)")));
    }
    Ok(x)
}

/// Seconds in JSON: at most 6 decimals (microseconds), trailing zeros
/// trimmed (`0.2003`, `1`), never an exponent. JSON has no NaN or infinity;
/// those become `null` (and fail to read back as a time, which is the honest
/// outcome). Written as a raw JSON number because serde_json's float
/// formatting prints `1.0` and `1e-6`.
pub fn secs<S: Serializer>(x: &f64, s: S) -> Result<S::Ok, S::Error> {
    if !x.is_finite() {
        return s.serialize_none();
    }
    let mut text = format!("{x:.6}");
    while text.ends_with('0') {
        text.pop();
    }
    if text.ends_with('.') {
        text.pop();
    }
    if text == "-0" {
        text = "0".to_string();
    }
    serde_json::value::RawValue::from_string(text).map_err(serde::ser::Error::custom)?.serialize(s)
}

/// A fault's segment keys: all of them or none (a segment that could not be
/// parsed); some of them is an error naming the first one missing.
fn fault_segment<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Segment>, D::Error> {
    #[derive(Deserialize)]
    struct Keys {
        src: Option<SocketAddr>,
        dst: Option<SocketAddr>,
        flags: Option<crate::wire::Flags>,
        seq: Option<u32>,
        ack: Option<u32>,
        win: Option<u16>,
        len: Option<usize>,
    }
    let k = Keys::deserialize(d)?;
    match k {
        Keys { src: None, dst: None, flags: None, seq: None, ack: None, win: None, len: None } => Ok(None),
        Keys {
            src: Some(src),
            dst: Some(dst),
            flags: Some(flags),
            seq: Some(seq),
            ack: Some(ack),
            win: Some(win),
            len: Some(len),
        } => Ok(Some(Segment { src, dst, flags, seq, ack, win, len })),
        k => {
            let missing = [
                ("src", k.src.is_none()),
                ("dst", k.dst.is_none()),
                ("flags", k.flags.is_none()),
                ("seq", k.seq.is_none()),
                ("ack", k.ack.is_none()),
                ("win", k.win.is_none()),
                ("len", k.len.is_none()),
            ];
            let first = missing.iter().find(|(_, m)| *m).map_or("?", |(name, _)| name);
            Err(serde::de::Error::missing_field(first))
        }
    }
}

/// The JSON shape of [`Cause`].
#[derive(Serialize, Deserialize)]
struct CauseWire {
    cause: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    action: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bytes: Option<usize>,
}

impl From<Cause> for CauseWire {
    fn from(c: Cause) -> CauseWire {
        match c {
            Cause::App(a) => {
                let a = AppWire::from(a);
                CauseWire { cause: "app".into(), action: Some(a.action), bytes: a.bytes }
            }
            other => CauseWire { cause: other.kind().into(), action: None, bytes: None },
        }
    }
}

impl TryFrom<CauseWire> for Cause {
    type Error = String;

    fn try_from(w: CauseWire) -> Result<Cause, String> {
        let plain = |c: Cause| match w.action {
            None => Ok(c),
            Some(_) => Err(format!("key \"action\" given for cause {:?}", w.cause)),
        };
        match w.cause.as_str() {
            "segment" => plain(Cause::Segment),
            "timer" => plain(Cause::Timer),
            "observed" => plain(Cause::Observed),
            "app" => match &w.action {
                Some(action) => AppWire { action: action.clone(), bytes: w.bytes }.try_into().map(Cause::App),
                None => Err("cause \"app\" without key \"action\"".into()),
            },
            other => Err(format!("unknown cause {other:?}")),
        }
    }
}

/// The JSON shape of [`AppAction`].
#[derive(Serialize, Deserialize)]
struct AppWire {
    action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bytes: Option<usize>,
}

impl From<AppAction> for AppWire {
    fn from(a: AppAction) -> AppWire {
        AppWire { action: a.name().into(), bytes: a.bytes() }
    }
}

impl TryFrom<AppWire> for AppAction {
    type Error = String;

    fn try_from(w: AppWire) -> Result<AppAction, String> {
        let bytes = || w.bytes.ok_or_else(|| format!("app action {:?} without key \"bytes\"", w.action));
        let action = match w.action.as_str() {
            "send" => return Ok(AppAction::Send(bytes()?)),
            "recv" => return Ok(AppAction::Recv(bytes()?)),
            "listen" => AppAction::Listen,
            "connect" => AppAction::Connect,
            "accept" => AppAction::Accept,
            "close" => AppAction::Close,
            "close-unread" => AppAction::CloseUnread,
            "shutdown" => AppAction::Shutdown,
            "abort" => AppAction::Abort,
            "linger-close" => AppAction::LingerClose,
            other => return Err(format!("unknown app action {other:?}")),
        };
        match w.bytes {
            None => Ok(action),
            Some(_) => Err(format!("key \"bytes\" given for app action {:?}", w.action)),
        }
    }
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
    /// Counts that belong to no connection, by name (`SYN dropped (backlog
    /// full)`, `SYN cookies sent`, …): filled from the endpoint's counters
    /// at exit; zero counts are left out.
    pub counted: std::collections::BTreeMap<String, u64>,
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
