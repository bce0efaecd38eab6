//! The control socket's protocol: one request line (`ss`, `close 3`,
//! `abort 10.201.0.2:7000-10.201.0.1:41234`), answered by JSON lines and
//! `end`, or one line `error: MESSAGE`. An `ss` answer is one
//! [`crate::view::ss::Row`] per line; an action's answer one [`ActionResult`].
//!
//! Pure: parsing and printing only. The socket, the server loop and the
//! endpoint calls live in `sys::control`.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use smoltcp::time::Instant;

use crate::endpoint::{ConnInfo, Endpoint};
use crate::event::{ConnId, TcpState};
use crate::view::ss;
use crate::wire::FourTuple;

/// A connection named on the command line: its number (`3`, `#3`) or its
/// 4-tuple from closelab's side, `LOCAL-REMOTE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnRef {
    Id(ConnId),
    Tuple(FourTuple),
}

impl ConnRef {
    pub fn parse(s: &str) -> Result<ConnRef, String> {
        let bad = || {
            format!(
                "invalid connection `{s}` (expected its number from the timeline, e.g. 3 or #3, \
                 or LOCAL-REMOTE as closelab sees it, e.g. 10.201.0.2:7000-10.201.0.1:41234)"
            )
        };
        let digits = s.strip_prefix('#').unwrap_or(s);
        if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            return digits.parse().map(ConnRef::Id).map_err(|_| bad());
        }
        // The '-' between the two addresses: the first one outside brackets.
        let mut depth = 0i32;
        let split = s.char_indices().find(|(_, c)| {
            match c {
                '[' => depth += 1,
                ']' => depth -= 1,
                _ => {}
            }
            *c == '-' && depth == 0
        });
        let (i, _) = split.ok_or_else(bad)?;
        let local: SocketAddr = s[..i].parse().map_err(|_| bad())?;
        let remote: SocketAddr = s[i + 1..].parse().map_err(|_| bad())?;
        Ok(ConnRef::Tuple(FourTuple { local, remote }))
    }
}

impl fmt::Display for ConnRef {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            ConnRef::Id(id) => write!(f, "{id}"),
            ConnRef::Tuple(t) => write!(f, "{}-{}", t.local, t.remote),
        }
    }
}

/// What a hand on the control socket can do to a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Close,
    Abort,
    Shutdown,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Close => "close",
            Action::Abort => "abort",
            Action::Shutdown => "shutdown",
        }
    }
}

/// One request line of the control protocol. The answer is zero or more
/// JSON lines, then `end`; or a line `error: MESSAGE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// Every row ([`crate::view::ss::Row::json`] lines); the client filters and formats.
    Ss,
    /// One [`ActionResult`] line.
    Act(Action, ConnRef),
}

/// The line that ends a successful answer.
pub const END: &str = "end";
/// The prefix of an error answer.
pub const ERROR: &str = "error: ";

impl Request {
    pub fn parse(line: &str) -> Result<Request, String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let action = match words.as_slice() {
            ["ss"] => return Ok(Request::Ss),
            ["close", _] => Action::Close,
            ["abort", _] => Action::Abort,
            ["shutdown", _] => Action::Shutdown,
            _ => {
                return Err(format!(
                    "unknown request `{}` (expected ss, close CONN, abort CONN or shutdown CONN)",
                    line.trim()
                ));
            }
        };
        Ok(Request::Act(action, ConnRef::parse(words[1])?))
    }
}

impl fmt::Display for Request {
    /// The request line, without its newline.
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Request::Ss => f.write_str("ss"),
            Request::Act(a, c) => write!(f, "{} {c}", a.name()),
        }
    }
}

/// What a close/abort/shutdown by hand did: the states before and right
/// after the call (CLOSED when the connection is gone, e.g. after abort).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "ActionResultWire", from = "ActionResultWire")]
pub struct ActionResult {
    pub conn: ConnId,
    pub tuple: FourTuple,
    pub action: Action,
    pub from: TcpState,
    pub to: TcpState,
}

impl ActionResult {
    /// One JSON line:
    /// `{"conn":1,"local":"10.201.0.2:7000","peer":"10.201.0.1:41234","action":"close","from":"CLOSE-WAIT","to":"LAST-ACK"}`.
    pub fn json(&self) -> String {
        serde_json::to_string(self).expect("an action result always serializes")
    }

    /// Reads back what [`ActionResult::json`] wrote.
    pub fn parse(line: &str) -> Result<ActionResult, serde_json::Error> {
        serde_json::from_str(line)
    }
}

/// The JSON shape of an [`ActionResult`].
#[derive(Serialize, Deserialize)]
struct ActionResultWire {
    conn: ConnId,
    local: SocketAddr,
    peer: SocketAddr,
    action: Action,
    from: TcpState,
    to: TcpState,
}

impl From<ActionResult> for ActionResultWire {
    fn from(r: ActionResult) -> ActionResultWire {
        let ActionResult { conn, tuple, action, from, to } = r;
        ActionResultWire { conn, local: tuple.local, peer: tuple.remote, action, from, to }
    }
}

impl From<ActionResultWire> for ActionResult {
    fn from(w: ActionResultWire) -> ActionResult {
        let ActionResultWire { conn, local, peer, action, from, to } = w;
        ActionResult { conn, tuple: FourTuple { local, remote: peer }, action, from, to }
    }
}

impl fmt::Display for ActionResult {
    /// `conn 1 10.201.0.2:7000-10.201.0.1:41234: close: CLOSE-WAIT -> LAST-ACK`.
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "conn {} {}-{}: {}: ", self.conn, self.tuple.local, self.tuple.remote, self.action.name())?;
        if self.from == self.to {
            write!(f, "state stays {}", self.from)
        } else {
            write!(f, "{} -> {}", self.from, self.to)
        }
    }
}

/// The answer to one request line (pure: the endpoint and `now` are
/// parameters), newline-terminated lines ending with `end`, or one
/// `error: …` line.
pub fn answer(line: &str, now: Instant, ep: &mut Endpoint) -> String {
    let req = match Request::parse(line) {
        Ok(r) => r,
        Err(e) => return format!("{ERROR}{e}\n"),
    };
    match req {
        Request::Ss => {
            let ips: Vec<IpAddr> = ep.config().addrs.iter().map(|c| IpAddr::from(c.address())).collect();
            let listening: Vec<SocketAddr> =
                ep.listen_ports().into_iter().flat_map(|p| ips.iter().map(move |ip| SocketAddr::new(*ip, p))).collect();
            let rows = ss::rows(&ep.connections(now), &listening, ep.config().keep_alive.is_some());
            let mut out: String = rows.iter().map(|r| r.json() + "\n").collect();
            for (name, n) in ep.counted() {
                out.push_str(&ss::counted_json(&name, n));
                out.push('\n');
            }
            out.push_str(END);
            out.push('\n');
            out
        }
        Request::Act(action, conn) => {
            let conns = ep.connections(now);
            let found = match conn {
                ConnRef::Id(id) => conns.iter().find(|c| c.id == id),
                ConnRef::Tuple(t) => conns.iter().find(|c| c.tuple == t),
            };
            let Some(info) = found else {
                return format!("{ERROR}{}\n", not_found(conn, &conns));
            };
            let (id, tuple, from) = (info.id, info.tuple, info.state);
            if ep.state(id).is_none() {
                return format!(
                    "{ERROR}connection {id} is in TIME-WAIT: only a record in closelab's TIME-WAIT table is left, nothing to {}\n",
                    action.name()
                );
            }
            match action {
                Action::Close => ep.close(now, id),
                Action::Abort => ep.abort(now, id),
                Action::Shutdown => ep.shutdown(now, id),
            };
            let to = ep.state(id).unwrap_or(TcpState::Closed);
            format!("{}\n{END}\n", ActionResult { conn: id, tuple, action, from, to }.json())
        }
    }
}

fn not_found(conn: ConnRef, conns: &[ConnInfo]) -> String {
    match conn {
        ConnRef::Tuple(t) => {
            let reversed = FourTuple { local: t.remote, remote: t.local };
            if conns.iter().any(|c| c.tuple == reversed) {
                format!(
                    "no connection {conn} (a 4-tuple is LOCAL-REMOTE as closelab sees it: {}-{})",
                    reversed.local, reversed.remote
                )
            } else {
                format!("no connection {conn}")
            }
        }
        ConnRef::Id(_) if conns.is_empty() => format!("no connection {conn} (no connections open)"),
        ConnRef::Id(_) => {
            let mut ids: Vec<String> = conns.iter().take(10).map(|c| c.id.to_string()).collect();
            if conns.len() > 10 {
                ids.push("…".into());
            }
            format!("no connection {conn} (open: {})", ids.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::link::Link;
    use crate::endpoint::{AppKind, ClosePolicy, EndpointConfig, Policy};
    use crate::view::ss::Row;
    use smoltcp::time::Duration;

    // Tests for control requests.

    #[test]
    fn test_conn_ref() {
        assert_eq!(ConnRef::parse("3"), Ok(ConnRef::Id(3)));
        assert_eq!(ConnRef::parse("#3"), Ok(ConnRef::Id(3)));
        let t = ConnRef::parse("10.201.0.2:7000-10.201.0.1:41234").unwrap();
        assert_eq!(t.to_string(), "10.201.0.2:7000-10.201.0.1:41234");
        let t6 = ConnRef::parse("[fd00:201::2]:7000-[fd00:201::1]:41234").unwrap();
        assert_eq!(t6.to_string(), "[fd00:201::2]:7000-[fd00:201::1]:41234");
        for bad in ["", "#", "x", "-1", "10.201.0.2:7000", "10.201.0.2-10.201.0.1", "3-"] {
            let e = ConnRef::parse(bad).unwrap_err();
            assert!(e.starts_with(&format!("invalid connection `{bad}` (expected")), "{e}");
        }
    }

    #[test]
    fn test_request_lines() {
        assert_eq!(Request::parse("ss"), Ok(Request::Ss));
        assert_eq!(Request::parse("close #1\n"), Ok(Request::Act(Action::Close, ConnRef::Id(1))));
        let r = Request::parse("abort 10.201.0.2:7000-10.201.0.1:41234").unwrap();
        assert_eq!(r.to_string(), "abort 10.201.0.2:7000-10.201.0.1:41234");
        assert_eq!(Request::parse("shutdown 2").unwrap().to_string(), "shutdown 2");
        assert!(Request::parse("reboot").unwrap_err().starts_with("unknown request `reboot`"));
        assert!(Request::parse("close").is_err());
        assert!(Request::parse("close x").unwrap_err().starts_with("invalid connection `x`"));
    }

    #[test]
    fn test_action_result() {
        let r = ActionResult {
            conn: 1,
            tuple: FourTuple { local: "10.201.0.2:7000".parse().unwrap(), remote: "10.201.0.1:41234".parse().unwrap() },
            action: Action::Close,
            from: TcpState::CloseWait,
            to: TcpState::LastAck,
        };
        assert_eq!(r.to_string(), "conn 1 10.201.0.2:7000-10.201.0.1:41234: close: CLOSE-WAIT -> LAST-ACK");
        assert_eq!(
            r.json(),
            r#"{"conn":1,"local":"10.201.0.2:7000","peer":"10.201.0.1:41234","action":"close","from":"CLOSE-WAIT","to":"LAST-ACK"}"#
        );
        assert_eq!(ActionResult::parse(&r.json()).unwrap(), r);
        let same = ActionResult { to: TcpState::CloseWait, ..r };
        assert_eq!(same.to_string(), "conn 1 10.201.0.2:7000-10.201.0.1:41234: close: state stays CLOSE-WAIT");
    }

    // Tests for the server's answers.

    fn cfg(addr: &str, close: ClosePolicy) -> EndpointConfig {
        let mut c = EndpointConfig::new(crate::config::parse_cidr(addr).unwrap());
        c.app = AppKind::Echo;
        c.policy = Policy { close, close_after: None, rst_on_unread: false };
        c.seed = 3;
        c
    }

    /// B (10.0.0.2, never closes) listens; A connects, sends 5 bytes and
    /// closes after 100 ms: B sits in CLOSE-WAIT.
    fn close_wait() -> Link {
        let mut b = Endpoint::new(cfg("10.0.0.2/24", ClosePolicy::Never), Instant::from_secs(1))
            .expect("endpoint config fits smoltcp");
        b.listen(7000);
        let mut client = cfg("10.0.0.1/24", ClosePolicy::Active);
        client.policy.close_after = Some(Duration::from_millis(100));
        let a = Endpoint::new(client, Instant::from_secs(1)).expect("endpoint config fits smoltcp");
        let mut link = Link::new(a, b, Instant::from_secs(1), Duration::from_millis(10));
        link.a.connect(Instant::from_secs(1), "10.0.0.2:7000".parse().unwrap(), 5).unwrap();
        link.run_for(Duration::from_secs(1));
        assert_eq!(link.b.state(1), Some(TcpState::CloseWait));
        link
    }

    #[test]
    fn test_answer_ss() {
        let mut link = close_wait();
        let now = link.now();
        let a = answer("ss", now, &mut link.b);
        let lines: Vec<&str> = a.lines().collect();
        assert_eq!(lines.len(), 3, "{a}");
        assert_eq!(
            lines[0],
            r#"{"conn":null,"state":"LISTEN","local":"10.0.0.2:7000","peer":"0.0.0.0:*","recv_q":0,"send_q":0,"timer":null}"#
        );
        let row = Row::parse(lines[1]).unwrap();
        assert_eq!(
            (row.conn, row.state, row.recv_q, row.send_q, row.timer),
            (Some(1), TcpState::CloseWait, 1, 0, None)
        );
        assert_eq!(lines[2], "end");
    }

    #[test]
    fn test_answer_close_by_hand() {
        let mut link = close_wait();
        let now = link.now();
        let tuple = link.b.connections(now)[0].tuple;
        let a = answer(&format!("close {}-{}", tuple.local, tuple.remote), now, &mut link.b);
        let lines: Vec<&str> = a.lines().collect();
        assert_eq!(lines.len(), 2, "{a}");
        let r = ActionResult::parse(lines[0]).unwrap();
        assert_eq!((r.conn, r.from, r.to), (1, TcpState::CloseWait, TcpState::LastAck));
        let ev = link.b.take_events();
        assert!(ev.iter().any(|e| matches!(
            e.kind,
            crate::event::EventKind::State {
                from: TcpState::CloseWait,
                to: TcpState::LastAck,
                cause: crate::event::Cause::App(crate::event::AppAction::Close)
            }
        )));
        link.run_for(Duration::from_secs(1));
        assert_eq!(link.b.state(1), None, "LAST-ACK ended");
        assert_eq!(answer("close 1", link.now(), &mut link.b), "error: no connection 1 (no connections open)\n");
    }

    #[test]
    fn test_answer_shutdown_and_abort() {
        let mut link = close_wait();
        let now = link.now();
        let r = answer("shutdown #1", now, &mut link.b);
        assert!(r.contains(r#""action":"shutdown","from":"CLOSE-WAIT","to":"LAST-ACK""#), "{r}");
        let mut link = close_wait();
        let now = link.now();
        let r = answer("abort 1", now, &mut link.b);
        assert!(r.contains(r#""action":"abort","from":"CLOSE-WAIT","to":"CLOSED""#), "{r}");
    }

    #[test]
    fn test_answer_errors() {
        let mut link = close_wait();
        let now = link.now();
        let tuple = link.b.connections(now)[0].tuple;
        assert_eq!(answer("close 9", now, &mut link.b), "error: no connection 9 (open: 1)\n");
        assert_eq!(
            answer(&format!("close {}-{}", tuple.remote, tuple.local), now, &mut link.b),
            format!(
                "error: no connection {}-{} (a 4-tuple is LOCAL-REMOTE as closelab sees it: {}-{})\n",
                tuple.remote, tuple.local, tuple.local, tuple.remote
            )
        );
        assert!(answer("reboot", now, &mut link.b).starts_with("error: unknown request `reboot`"));
        assert_eq!(link.b.state(1), Some(TcpState::CloseWait), "errors change nothing");
    }
}
