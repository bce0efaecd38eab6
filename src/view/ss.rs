//! `closelab ss`: closelab's connections as `ss -tano` prints the kernel's,
//! the `netstat -n | awk '/^tcp/ {++S[$NF]} …'` counts and ss's state
//! filters. The control socket's requests live in `crate::control_proto`.
//!
//! Everything here is pure: rows are built from [`ConnInfo`] snapshots that
//! the endpoint hands out, and turned into text or JSON lines. The socket,
//! the clock and the endpoint calls live in `sys::control`.
//!
//! Recv-Q and Send-Q are what Linux reports, not smoltcp's buffer counts:
//! ss prints `rcv_nxt - copied_seq` and `write_seq - snd_una`, so the peer's
//! FIN counts as one byte in Recv-Q until the application reads the end of
//! the stream, and our own FIN counts in Send-Q until it is acknowledged.
//! Measured on Linux 6.18 with iproute2 6.1: CLOSE-WAIT with the FIN unread
//! shows Recv-Q 1 (6 with 5 unread bytes); after `read()` returned 0 it shows
//! 0; `close()` does not consume it (LAST-ACK shows `1 1`: the FIN received
//! and the FIN sent); SYN-SENT shows Send-Q 1 (the SYN); TIME-WAIT is a
//! minisocket with no queues (`0 0`). closelab's applications never read the
//! end of the stream (their reaction to it is close()), so its FIN counts in
//! CLOSE-WAIT, LAST-ACK and CLOSING.
//!
//! Timers print as ss does (`timer:(timewait,59sec,0)`, `timer:(on,312ms,1)`,
//! `timer:(keepalive,119min,0)`), except between 1 and 10 seconds, where
//! iproute2 before 6.11 prints 8.2 s as `8.200ms`: closelab prints `8.2sec`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::endpoint::ConnInfo;
use crate::event::{ConnId, TcpState};

/// Which ss timer a connection has running.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TimerKind {
    /// Retransmission timer: something sent is not acknowledged yet.
    On,
    Keepalive,
    Timewait,
}

impl TimerKind {
    pub fn name(self) -> &'static str {
        match self {
            TimerKind::On => "on",
            TimerKind::Keepalive => "keepalive",
            TimerKind::Timewait => "timewait",
        }
    }
}

/// ss's `timer:(NAME,REMAINING,COUNT)`: COUNT is the retransmissions for
/// `on`, the unanswered probes for `keepalive`, 0 for `timewait`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timer {
    pub kind: TimerKind,
    pub remaining_ms: u64,
    pub count: u32,
}

impl fmt::Display for Timer {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "timer:({},{},{})", self.kind.name(), duration(self.remaining_ms), self.count)
    }
}

/// A remaining time as ss prints it: `312ms`, `8.2sec`, `59sec`, `1min30sec`,
/// `119min` (truncated, never rounded up).
pub fn duration(ms: u64) -> String {
    let secs = ms / 1000;
    let minutes = secs / 60;
    if minutes > 9 {
        format!("{minutes}min")
    } else if minutes > 0 {
        match secs % 60 {
            0 => format!("{minutes}min"),
            s => format!("{minutes}min{s}sec"),
        }
    } else if secs >= 10 {
        format!("{secs}sec")
    } else if secs >= 1 {
        format!("{secs}.{}sec", (ms % 1000) / 100)
    } else {
        format!("{ms}ms")
    }
}

/// One line of the table: a connection, or a listening port (`conn: None`,
/// no peer).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "RowWire", try_from = "RowWire")]
pub struct Row {
    pub conn: Option<ConnId>,
    pub state: TcpState,
    pub local: SocketAddr,
    /// `None` for LISTEN (`0.0.0.0:*`).
    pub peer: Option<SocketAddr>,
    pub recv_q: u64,
    pub send_q: u64,
    pub timer: Option<Timer>,
}

impl Row {
    /// The row for one connection, with Linux's queue accounting (module
    /// documentation). `keep_alive`: the endpoint sends keep-alives.
    pub fn from_conn(c: &ConnInfo, keep_alive: bool) -> Row {
        use TcpState::*;
        let (recv_q, send_q) = match c.state {
            // A minisocket in Linux: no queues.
            TimeWait => (0, 0),
            s => {
                let fin_in = c.peer_fin && matches!(s, CloseWait | LastAck | Closing);
                let syn_or_fin_out = matches!(s, SynSent | FinWait1 | Closing | LastAck);
                (c.recv_q as u64 + fin_in as u64, c.send_q as u64 + syn_or_fin_out as u64)
            }
        };
        let remaining_ms = c.deadline.map(|d| d.total_millis());
        let timer = match (c.state, remaining_ms) {
            (_, None) => None,
            (TimeWait, Some(ms)) => Some(Timer { kind: TimerKind::Timewait, remaining_ms: ms, count: 0 }),
            (_, Some(ms)) if c.unacked > 0 => Some(Timer { kind: TimerKind::On, remaining_ms: ms, count: c.retrans }),
            (Established | CloseWait | FinWait1 | FinWait2 | Closing | LastAck, Some(ms)) if keep_alive => {
                Some(Timer { kind: TimerKind::Keepalive, remaining_ms: ms, count: c.probes })
            }
            // An application timer (a delayed close) or the user timeout:
            // not a TCP timer ss would show.
            _ => None,
        };
        Row {
            conn: Some(c.id),
            state: c.state,
            local: c.tuple.local,
            peer: Some(c.tuple.remote),
            recv_q,
            send_q,
            timer,
        }
    }

    /// A LISTEN row for a port on one of closelab's addresses. closelab
    /// keeps no accept queue (a connection exists from its SYN on): 0 0.
    pub fn listen(local: SocketAddr) -> Row {
        Row { conn: None, state: TcpState::Listen, local, peer: None, recv_q: 0, send_q: 0, timer: None }
    }

    /// The peer as ss prints it: `10.201.0.1:41234`, `0.0.0.0:*`, `[::]:*`.
    pub fn peer_text(&self) -> String {
        match self.peer {
            Some(p) => p.to_string(),
            None if self.local.is_ipv4() => "0.0.0.0:*".into(),
            None => "[::]:*".into(),
        }
    }

    /// The connection as one JSON object (no newline):
    /// `{"conn":1,"state":"CLOSE-WAIT","local":"10.201.0.2:7000","peer":"10.201.0.1:41234","recv_q":1,"send_q":0,"timer":null}`,
    /// with `"timer":{"name":"timewait","remaining":8.2,"count":0}` when one
    /// runs. States use the RFC spelling of the event stream.
    pub fn json(&self) -> String {
        serde_json::to_string(self).expect("a row always serializes")
    }

    /// Reads back what [`Row::json`] wrote.
    pub fn parse(line: &str) -> Result<Row, serde_json::Error> {
        serde_json::from_str(line)
    }
}

/// The JSON shape of a [`Row`]: the peer as ss prints it, `*` port for none.
#[derive(Serialize, Deserialize)]
struct RowWire {
    conn: Option<ConnId>,
    state: TcpState,
    local: SocketAddr,
    peer: String,
    recv_q: u64,
    send_q: u64,
    timer: Option<TimerWire>,
}

#[derive(Serialize, Deserialize)]
struct TimerWire {
    name: TimerKind,
    /// Seconds, at most 3 decimals (the milliseconds ss shows).
    #[serde(serialize_with = "crate::event::secs")]
    remaining: f64,
    count: u32,
}

impl From<Row> for RowWire {
    fn from(r: Row) -> RowWire {
        RowWire {
            conn: r.conn,
            state: r.state,
            local: r.local,
            peer: r.peer_text(),
            recv_q: r.recv_q,
            send_q: r.send_q,
            timer: r.timer.map(|t| TimerWire {
                name: t.kind,
                remaining: t.remaining_ms as f64 / 1000.0,
                count: t.count,
            }),
        }
    }
}

impl TryFrom<RowWire> for Row {
    type Error = String;

    fn try_from(w: RowWire) -> Result<Row, String> {
        let peer = match w.peer.ends_with(":*") {
            true => None,
            false => Some(w.peer.parse().map_err(|_| format!("invalid address {:?}", w.peer))?),
        };
        let timer = w.timer.map(|t| Timer {
            kind: t.name,
            remaining_ms: (t.remaining * 1000.0).round() as u64,
            count: t.count,
        });
        Ok(Row { conn: w.conn, state: w.state, local: w.local, peer, recv_q: w.recv_q, send_q: w.send_q, timer })
    }
}

/// The rows of an endpoint: a LISTEN row per listening address and port,
/// then every connection in number order.
pub fn rows(conns: &[ConnInfo], listening: &[SocketAddr], keep_alive: bool) -> Vec<Row> {
    let mut v: Vec<Row> = listening.iter().map(|a| Row::listen(*a)).collect();
    v.extend(conns.iter().map(|c| Row::from_conn(c, keep_alive)));
    v
}

/// Splits `10.0.0.1:80` / `[fd00::1]:80` into the two ss columns.
fn addr_port(a: &SocketAddr) -> (String, String) {
    let ip = match a.ip() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    };
    (ip, a.port().to_string())
}

/// The table as `ss -tano` lays it out: state left-aligned, the queues in
/// six columns, addresses right-aligned against their `:port`, then the
/// timer and closelab's connection number (`closelab close N`).
pub fn table(rows: &[Row]) -> String {
    struct Cells {
        state: &'static str,
        recv_q: String,
        send_q: String,
        local: (String, String),
        peer: (String, String),
        timer: String,
        conn: String,
    }
    let cells: Vec<Cells> = rows
        .iter()
        .map(|r| {
            let peer = match r.peer {
                Some(p) => addr_port(&p),
                None if r.local.is_ipv4() => (Ipv4Addr::UNSPECIFIED.to_string(), "*".into()),
                None => (format!("[{}]", Ipv6Addr::UNSPECIFIED), "*".into()),
            };
            Cells {
                state: r.state.ss_name(),
                recv_q: r.recv_q.to_string(),
                send_q: r.send_q.to_string(),
                local: addr_port(&r.local),
                peer,
                timer: r.timer.map(|t| t.to_string()).unwrap_or_default(),
                conn: r.conn.map(|c| c.to_string()).unwrap_or_default(),
            }
        })
        .collect();
    let w = |min: usize, f: &dyn Fn(&Cells) -> usize| cells.iter().map(f).fold(min, usize::max);
    let state_w = w("State".len(), &|c| c.state.len());
    let rq_w = w(6, &|c| c.recv_q.len());
    let sq_w = w(6, &|c| c.send_q.len());
    let la_w = w("Local Address".len(), &|c| c.local.0.len());
    let lp_w = w("Port".len(), &|c| c.local.1.len());
    let pa_w = w("Peer Address".len(), &|c| c.peer.0.len());
    let pp_w = w("Port".len(), &|c| c.peer.1.len());
    let tm_w = w("Timer".len(), &|c| c.timer.len());
    let line = |c: [&str; 9]| {
        let s = format!(
            "{:<state_w$} {:<rq_w$} {:<sq_w$} {:>la_w$}:{:<lp_w$} {:>pa_w$}:{:<pp_w$} {:<tm_w$} {}",
            c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8]
        );
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(["State", "Recv-Q", "Send-Q", "Local Address", "Port", "Peer Address", "Port", "Timer", "Conn"]);
    for c in &cells {
        out.push_str(&line([
            c.state, &c.recv_q, &c.send_q, &c.local.0, &c.local.1, &c.peer.0, &c.peer.1, &c.timer, &c.conn,
        ]));
    }
    out
}

// ---------------------------------------------------------------------------
// `-s`: the netstat | awk counts
// ---------------------------------------------------------------------------

/// Connections per state, in [`TcpState::ALL`] order, leaving out states
/// with none and LISTEN (`netstat -n` lists no listening sockets).
pub fn counts(rows: &[Row]) -> Vec<(TcpState, u64)> {
    TcpState::ALL
        .iter()
        .filter(|s| **s != TcpState::Listen)
        .map(|s| (*s, rows.iter().filter(|r| r.state == *s).count() as u64))
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// `TIME_WAIT 3` lines: exactly what `netstat -n | awk '/^tcp/ {++S[$NF]}
/// END {for(a in S) print a, S[a]}'` prints for the same sockets (awk's
/// order is unspecified; closelab's is the state order).
pub fn counts_text(counts: &[(TcpState, u64)]) -> String {
    counts.iter().map(|(s, n)| format!("{} {n}\n", s.netstat_name())).collect()
}

/// One `{"state":"TIME_WAIT","count":3}` object per count (netstat spelling,
/// as in the text).
pub fn count_json(state: TcpState, n: u64) -> String {
    #[derive(Serialize)]
    struct Count {
        state: &'static str,
        count: u64,
    }
    serde_json::to_string(&Count { state: state.netstat_name(), count: n }).expect("a count always serializes")
}

/// A count that belongs to no socket (`SYN cookies sent (backlog full)`,
/// …), as one JSON object: `{"counted":"…","count":3}`.
pub fn counted_json(name: &str, n: u64) -> String {
    #[derive(Serialize)]
    struct Counted<'a> {
        counted: &'a str,
        count: u64,
    }
    serde_json::to_string(&Counted { counted: name, count: n }).expect("a count always serializes")
}

/// Reads a [`counted_json`] line; `None` for anything else (a row).
pub fn parse_counted(line: &str) -> Option<(String, u64)> {
    #[derive(Deserialize)]
    struct Counted {
        counted: String,
        count: u64,
    }
    if !line.starts_with("{\"counted\"") {
        return None;
    }
    serde_json::from_str::<Counted>(line).ok().map(|c| (c.counted, c.count))
}

/// What `closelab ss` prints for the (already filtered) rows: the table,
/// the `-s` counts, or their JSON objects — one per line, or with `array`
/// (`--watch --json`) one JSON array per snapshot on one line. `-s` also
/// lists `counted`: the endpoint's counts outside the sockets (dropped
/// SYNs, SYN cookies), after the states.
pub fn render(rows: Vec<Row>, counted: &[(String, u64)], summary: bool, json: bool, array: bool) -> String {
    let objects: Vec<String> = match (summary, json) {
        (true, false) => {
            let mut text = counts_text(&counts(&rows));
            for (name, n) in counted {
                text.push_str(&format!("{name} {n}\n"));
            }
            return text;
        }
        (false, false) => return table(&rows),
        (true, true) => counts(&rows)
            .into_iter()
            .map(|(s, n)| count_json(s, n))
            .chain(counted.iter().map(|(name, n)| counted_json(name, *n)))
            .collect(),
        (false, true) => rows.iter().map(Row::json).collect(),
    };
    if array { format!("[{}]\n", objects.join(",")) } else { objects.into_iter().map(|o| o + "\n").collect() }
}

// ---------------------------------------------------------------------------
// Filters
// ---------------------------------------------------------------------------

/// ss's state filter: `state NAME` (repeatable, a union) and `exclude NAME`.
/// Without any `state`, every state is shown (closelab ss is `ss -a`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    states: Vec<TcpState>,
}

impl Default for Filter {
    fn default() -> Filter {
        let mut states = TcpState::ALL.to_vec();
        states.sort();
        Filter { states }
    }
}

/// The states a name in `state NAME` stands for: every TCP state in any
/// spelling (`established`, `ESTAB`, `TIME_WAIT`, `listening`) and ss's
/// groups as `man ss` defines them (iproute2 6.1 behaves so).
pub fn state_group(name: &str) -> Option<Vec<TcpState>> {
    use TcpState::*;
    let all = TcpState::ALL.to_vec();
    let without = |out: &[TcpState]| all.iter().copied().filter(|s| !out.contains(s)).collect::<Vec<_>>();
    Some(match name.to_ascii_lowercase().as_str() {
        "all" => all.clone(),
        // All states except listening and closed.
        "connected" => without(&[Listen, Closed]),
        // Connected states except SYN-SENT.
        "synchronized" => without(&[Listen, Closed, SynSent]),
        // Kept as minisockets by Linux.
        "bucket" => vec![SynReceived, TimeWait],
        "big" => without(&[SynReceived, TimeWait]),
        "listening" => vec![Listen],
        other => vec![TcpState::parse(other)?],
    })
}

const FILTER_HELP: &str = "expected `state NAME` or `exclude NAME`; NAME is a TCP state (established, syn-sent, syn-recv, \
fin-wait-1, fin-wait-2, time-wait, closed, close-wait, last-ack, listening, closing) or all, connected, synchronized, bucket, big";

impl Filter {
    /// Parses the words after `closelab ss`.
    pub fn parse<S: AsRef<str>>(words: &[S]) -> Result<Filter, String> {
        let mut include: Option<Vec<TcpState>> = None;
        let mut exclude = Vec::new();
        let mut it = words.iter().map(|w| w.as_ref());
        while let Some(w) = it.next() {
            let into = match w {
                "state" => include.get_or_insert_with(Vec::new),
                "exclude" | "excl" => &mut exclude,
                other => {
                    return Err(match state_group(other) {
                        Some(_) => format!("unknown filter `{other}`: write `state {other}`"),
                        None => format!("unknown filter `{other}`: {FILTER_HELP}"),
                    });
                }
            };
            let name = it.next().ok_or_else(|| format!("`{w}` needs a state name: {FILTER_HELP}"))?;
            let states = state_group(name).ok_or_else(|| format!("unknown state `{name}`: {FILTER_HELP}"))?;
            into.extend(states);
        }
        let mut states = include.unwrap_or_else(|| TcpState::ALL.to_vec());
        states.retain(|s| !exclude.contains(s));
        states.sort();
        states.dedup();
        Ok(Filter { states })
    }

    pub fn matches(&self, state: TcpState) -> bool {
        self.states.contains(&state)
    }

    pub fn apply(&self, rows: Vec<Row>) -> Vec<Row> {
        rows.into_iter().filter(|r| self.matches(r.state)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::json;
    use crate::wire::FourTuple;
    use smoltcp::time::Duration;

    fn info(id: ConnId, state: TcpState, remote: &str) -> ConnInfo {
        ConnInfo {
            id,
            tuple: FourTuple { local: "10.201.0.2:7000".parse().unwrap(), remote: remote.parse().unwrap() },
            state,
            recv_q: 0,
            send_q: 0,
            deadline: None,
            retrans: 0,
            probes: 0,
            unacked: 0,
            peer_fin: false,
        }
    }

    fn listen() -> Vec<SocketAddr> {
        vec!["10.201.0.2:7000".parse().unwrap()]
    }

    // Tests for the timer format.

    #[test]
    fn test_duration_like_ss() {
        let cases = [
            (0, "0ms"),
            (312, "312ms"),
            (999, "999ms"),
            (1000, "1.0sec"),
            (1099, "1.0sec"),
            (8260, "8.2sec"),
            (9999, "9.9sec"),
            (10_000, "10sec"),
            (59_999, "59sec"),
            (60_000, "1min"),
            (90_500, "1min30sec"),
            (599_000, "9min59sec"),
            (600_000, "10min"),
            (7_140_000, "119min"),
        ];
        for (ms, want) in cases {
            assert_eq!(duration(ms), want, "{ms} ms");
        }
    }

    // Tests for Linux's queue accounting.

    #[test]
    fn test_close_wait_counts_the_fin_in_recv_q() {
        let mut c = info(1, TcpState::CloseWait, "10.201.0.1:41234");
        c.peer_fin = true;
        assert_eq!((Row::from_conn(&c, false).recv_q, Row::from_conn(&c, false).send_q), (1, 0));
        c.recv_q = 5;
        assert_eq!(Row::from_conn(&c, false).recv_q, 6, "5 unread bytes and the FIN");
        // close() does not consume it; our FIN counts in Send-Q until ACKed.
        c.state = TcpState::LastAck;
        c.recv_q = 0;
        let r = Row::from_conn(&c, false);
        assert_eq!((r.recv_q, r.send_q), (1, 1));
    }

    #[test]
    fn test_queues_of_other_states() {
        let mut c = info(1, TcpState::SynSent, "10.201.0.1:7000");
        assert_eq!((Row::from_conn(&c, false).recv_q, Row::from_conn(&c, false).send_q), (0, 1), "the SYN");
        c.state = TcpState::FinWait1;
        c.send_q = 5;
        assert_eq!(Row::from_conn(&c, false).send_q, 6, "5 bytes and the FIN");
        c.state = TcpState::FinWait2;
        c.send_q = 0;
        assert_eq!(Row::from_conn(&c, false).send_q, 0);
        c.state = TcpState::TimeWait;
        c.peer_fin = true;
        c.recv_q = 3;
        let r = Row::from_conn(&c, false);
        assert_eq!((r.recv_q, r.send_q), (0, 0), "a minisocket has no queues");
        c.state = TcpState::Established;
        c.recv_q = 3;
        assert_eq!(Row::from_conn(&c, false).recv_q, 3);
    }

    // Tests for timers.

    #[test]
    fn test_timers() {
        let mut c = info(1, TcpState::TimeWait, "10.201.0.1:41234");
        c.deadline = Some(Duration::from_millis(8260));
        assert_eq!(Row::from_conn(&c, false).timer.unwrap().to_string(), "timer:(timewait,8.2sec,0)");
        c.state = TcpState::LastAck;
        c.unacked = 1;
        c.retrans = 3;
        c.deadline = Some(Duration::from_millis(1000));
        assert_eq!(Row::from_conn(&c, true).timer.unwrap().to_string(), "timer:(on,1.0sec,3)");
        c.state = TcpState::Established;
        c.unacked = 0;
        c.retrans = 0;
        c.probes = 2;
        c.deadline = Some(Duration::from_secs(7140));
        assert_eq!(Row::from_conn(&c, true).timer.unwrap().to_string(), "timer:(keepalive,119min,2)");
        // Without keep-alive, an idle connection's deadline is an
        // application timer: nothing ss would print.
        assert_eq!(Row::from_conn(&c, false).timer, None);
        c.deadline = None;
        assert_eq!(Row::from_conn(&c, true).timer, None);
    }

    // Tests for the table.

    #[test]
    fn test_table_exact() {
        let mut a = info(1, TcpState::Established, "10.201.0.1:41234");
        a.recv_q = 0;
        let mut b = info(2, TcpState::CloseWait, "10.201.0.1:41236");
        b.peer_fin = true;
        let mut c = info(3, TcpState::TimeWait, "10.201.0.1:5");
        c.deadline = Some(Duration::from_millis(8260));
        let t = table(&rows(&[a, b, c], &listen(), false));
        assert_eq!(
            t,
            "\
State      Recv-Q Send-Q Local Address:Port Peer Address:Port  Timer                     Conn
LISTEN     0      0         10.201.0.2:7000      0.0.0.0:*
ESTAB      0      0         10.201.0.2:7000   10.201.0.1:41234                           1
CLOSE-WAIT 1      0         10.201.0.2:7000   10.201.0.1:41236                           2
TIME-WAIT  0      0         10.201.0.2:7000   10.201.0.1:5     timer:(timewait,8.2sec,0) 3
"
        );
    }

    #[test]
    fn test_table_ipv6_and_empty() {
        let r = Row {
            conn: Some(7),
            state: TcpState::SynReceived,
            local: "[fd00:201::2]:7000".parse().unwrap(),
            peer: Some("[fd00:201::1]:50000".parse().unwrap()),
            recv_q: 0,
            send_q: 0,
            timer: Some(Timer { kind: TimerKind::On, remaining_ms: 312, count: 1 }),
        };
        let l = Row::listen("[fd00:201::2]:7000".parse().unwrap());
        assert_eq!(
            table(&[l, r]),
            "\
State    Recv-Q Send-Q Local Address:Port  Peer Address:Port  Timer              Conn
LISTEN   0      0      [fd00:201::2]:7000          [::]:*
SYN-RECV 0      0      [fd00:201::2]:7000 [fd00:201::1]:50000 timer:(on,312ms,1) 7
"
        );
        assert_eq!(table(&[]), "State Recv-Q Send-Q Local Address:Port Peer Address:Port Timer Conn\n");
    }

    #[test]
    fn test_row_json_round_trip() {
        let mut c = info(3, TcpState::TimeWait, "10.201.0.1:41234");
        c.deadline = Some(Duration::from_millis(8260));
        let r = Row::from_conn(&c, false);
        let j = r.json();
        assert_eq!(
            j,
            r#"{"conn":3,"state":"TIME-WAIT","local":"10.201.0.2:7000","peer":"10.201.0.1:41234","recv_q":0,"send_q":0,"timer":{"name":"timewait","remaining":8.26,"count":0}}"#
        );
        assert_eq!(Row::parse(&j).unwrap(), r);
        let l = Row::listen("[fd00::2]:7000".parse().unwrap());
        assert_eq!(
            l.json(),
            r#"{"conn":null,"state":"LISTEN","local":"[fd00::2]:7000","peer":"[::]:*","recv_q":0,"send_q":0,"timer":null}"#
        );
        assert_eq!(Row::parse(&l.json()).unwrap(), l);
        assert!(Row::parse(r#"{"conn":1}"#).unwrap_err().to_string().contains("state"));
        assert!(Row::parse("not json").is_err());
    }

    // Tests for `-s`.

    #[test]
    fn test_counts_in_netstat_spelling_and_state_order() {
        let mk = |id, s| info(id, s, "10.201.0.1:1");
        let conns = [
            mk(1, TcpState::TimeWait),
            mk(2, TcpState::CloseWait),
            mk(3, TcpState::Established),
            mk(4, TcpState::TimeWait),
            mk(5, TcpState::FinWait1),
            mk(6, TcpState::TimeWait),
            mk(7, TcpState::Established),
        ];
        let r = rows(&conns, &listen(), false);
        let c = counts(&r);
        assert_eq!(counts_text(&c), "ESTABLISHED 2\nFIN_WAIT1 1\nCLOSE_WAIT 1\nTIME_WAIT 3\n");
        assert_eq!(count_json(TcpState::CloseWait, 2), r#"{"state":"CLOSE_WAIT","count":2}"#);
        assert_eq!(counts_text(&counts(&rows(&[], &listen(), false))), "", "LISTEN is not counted");
    }

    #[test]
    fn test_render_shapes() {
        let mut a = info(1, TcpState::CloseWait, "10.201.0.1:41234");
        a.peer_fin = true;
        let b = info(2, TcpState::Established, "10.201.0.1:41236");
        let r = rows(&[a, b], &listen(), false);
        assert_eq!(render(r.clone(), &[], true, false, false), "ESTABLISHED 1\nCLOSE_WAIT 1\n");
        assert_eq!(
            render(r.clone(), &[], true, true, false),
            "{\"state\":\"ESTABLISHED\",\"count\":1}\n{\"state\":\"CLOSE_WAIT\",\"count\":1}\n"
        );
        assert_eq!(
            render(r.clone(), &[], true, true, true),
            "[{\"state\":\"ESTABLISHED\",\"count\":1},{\"state\":\"CLOSE_WAIT\",\"count\":1}]\n"
        );
        let lines = render(r.clone(), &[], false, true, false);
        assert_eq!(lines.lines().count(), 3);
        for l in lines.lines() {
            json::parse(l).unwrap();
        }
        let arr = json::parse(render(r.clone(), &[], false, true, true).trim_end()).unwrap();
        assert_eq!(arr.as_array().map(|a| a.len()), Some(3));
        assert_eq!(render(r.clone(), &[], false, false, false), table(&r));
        assert_eq!(render(Vec::new(), &[], false, true, true), "[]\n");
        assert_eq!(render(Vec::new(), &[], true, false, false), "");
    }

    #[test]
    fn test_render_counted_after_the_states() {
        let r = rows(&[info(2, TcpState::SynReceived, "10.201.0.9:41236")], &listen(), false);
        let counted = vec![("SYN cookies sent (backlog full)".to_string(), 7)];
        assert_eq!(render(r.clone(), &counted, true, false, false), "SYN_RECV 1\nSYN cookies sent (backlog full) 7\n");
        assert_eq!(
            render(r.clone(), &counted, true, true, false),
            "{\"state\":\"SYN_RECV\",\"count\":1}\n{\"counted\":\"SYN cookies sent (backlog full)\",\"count\":7}\n"
        );
        // Only -s shows them; the table is sockets only.
        assert_eq!(render(r.clone(), &counted, false, false, false), table(&r));
        let line = counted_json("SYN dropped (backlog full)", 3);
        assert_eq!(parse_counted(&line), Some(("SYN dropped (backlog full)".to_string(), 3)));
        assert_eq!(parse_counted(&r[0].json()), None);
    }

    // Tests for filters.

    #[test]
    fn test_filters_like_ss() {
        use TcpState::*;
        let f = |w: &[&str]| Filter::parse(w).unwrap();
        let all = Filter::default();
        assert_eq!(f(&[]), all);
        assert!(f(&["state", "time-wait"]).matches(TimeWait));
        assert!(!f(&["state", "time-wait"]).matches(CloseWait));
        let tw_cw = f(&["state", "time-wait", "state", "CLOSE_WAIT"]);
        assert!(tw_cw.matches(TimeWait) && tw_cw.matches(CloseWait) && !tw_cw.matches(Established));
        assert!(f(&["state", "established"]).matches(Established));
        assert!(f(&["state", "ESTAB"]).matches(Established));
        assert!(f(&["state", "listening"]).matches(Listen));
        assert!(f(&["state", "syn-recv"]).matches(SynReceived));
        let connected = f(&["state", "connected"]);
        for s in TcpState::ALL {
            assert_eq!(connected.matches(s), !matches!(s, Listen | Closed), "{s}");
        }
        let sync = f(&["state", "synchronized"]);
        assert!(!sync.matches(SynSent) && sync.matches(TimeWait) && !sync.matches(Listen));
        let bucket = f(&["state", "bucket"]);
        assert!(bucket.matches(SynReceived) && bucket.matches(TimeWait) && !bucket.matches(Established));
        assert!(!f(&["state", "big"]).matches(TimeWait) && f(&["state", "big"]).matches(Listen));
        let ex = f(&["exclude", "listening"]);
        assert!(!ex.matches(Listen) && ex.matches(Established));
        let ex = f(&["state", "connected", "exclude", "time-wait"]);
        assert!(!ex.matches(TimeWait) && ex.matches(CloseWait));
    }

    #[test]
    fn test_filter_errors_name_the_word() {
        assert_eq!(Filter::parse(&["time-wait"]).unwrap_err(), "unknown filter `time-wait`: write `state time-wait`");
        assert!(Filter::parse(&["state"]).unwrap_err().starts_with("`state` needs a state name: "));
        assert!(Filter::parse(&["state", "nope"]).unwrap_err().starts_with("unknown state `nope`: "));
        assert!(Filter::parse(&["dport", ":7000"]).unwrap_err().starts_with("unknown filter `dport`: expected"));
    }

    #[test]
    fn test_filter_apply_keeps_order() {
        let conns = [
            info(1, TcpState::CloseWait, "10.201.0.1:1"),
            info(2, TcpState::Established, "10.201.0.1:2"),
            info(3, TcpState::CloseWait, "10.201.0.1:3"),
        ];
        let r = Filter::parse(&["state", "close-wait"]).unwrap().apply(rows(&conns, &listen(), false));
        assert_eq!(r.iter().map(|r| r.conn).collect::<Vec<_>>(), vec![Some(1), Some(3)]);
    }
}
