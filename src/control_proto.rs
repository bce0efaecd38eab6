//! The control socket's protocol: one request line (`ss`, `close 3`,
//! `abort 10.201.0.2:7000-10.201.0.1:41234`), answered by JSON lines and
//! `end`, or one line `error: MESSAGE`. An `ss` answer is one
//! [`crate::view::ss::Row`] per line; an action's answer one [`ActionResult`].
//!
//! Pure: parsing and printing only. The socket, the server loop and the
//! endpoint calls live in `sys::control`.

use std::fmt;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::event::{ConnId, TcpState};
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
