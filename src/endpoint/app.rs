//! Applications and close policies: what closelab's "application" does on a
//! connection (read, write, close) and when.
//!
//! Sans-IO: an [`App`] is driven by the endpoint with the socket and `now`;
//! it never reads a clock. It returns the calls it made so the endpoint can
//! emit them as events and attribute the state changes they cause.

use std::fmt;

use smoltcp::socket::tcp;
use smoltcp::time::{Duration, Instant};

use crate::endpoint::http::{HttpError, Response, ResponseParser};
use crate::event::AppAction;

/// The one line the `hello` app sends.
pub const HELLO_LINE: &[u8] = b"hello from closelab\n";

/// What the application does with a connection's bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AppKind {
    /// Echo every byte back. Its part is done after the first echo.
    Echo,
    /// Read and discard. It has nothing to do: its part is done at once.
    Sink,
    /// Send this many bytes (a repeating pattern), never read.
    Source(usize),
    /// Send one line, never read.
    Hello,
    /// A small HTTP/1.1 responder: GET → 200, anything else → 400.
    Http,
    /// An HTTP/1.1 client connection of the crawler (`get:/PATH,…`): it
    /// sends the requests the crawler hands it and reads the responses; the
    /// crawler, not the close policy, decides when it closes.
    HttpClient,
    /// Answer the first bytes that arrive with these bytes, once (a canned
    /// server for tests and scenarios: a malformed HTTP response, …).
    Reply(Vec<u8>),
}

impl AppKind {
    /// Parses `echo`, `sink`, `source:BYTES`, `hello`, `http`.
    pub fn parse(s: &str) -> Result<AppKind, String> {
        match s {
            "echo" => Ok(AppKind::Echo),
            "sink" => Ok(AppKind::Sink),
            "hello" => Ok(AppKind::Hello),
            "http" => Ok(AppKind::Http),
            _ if s.starts_with("get:") => {
                Err(format!("app `{s}` is the HTTP client: it runs with `closelab connect`, not here"))
            }
            _ => match s.strip_prefix("source:") {
                Some(n) => {
                    crate::config::parse_bytes(n).map(AppKind::Source).map_err(|e| format!("invalid app `{s}`: {e}"))
                }
                None => Err(format!(
                    "invalid app `{s}` (expected echo, sink, source:BYTES, hello, http or, with connect, get:/PATH[,/PATH…])"
                )),
            },
        }
    }

    /// Whether the application reads what the peer sends. Writers that never
    /// read (hello, source) leave data unread, which matters for
    /// `--rst-on-unread`.
    fn reads(&self) -> bool {
        matches!(self, AppKind::Echo | AppKind::Sink | AppKind::Http | AppKind::HttpClient | AppKind::Reply(_))
    }
}

impl fmt::Display for AppKind {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            AppKind::Echo => write!(f, "echo"),
            AppKind::Sink => write!(f, "sink"),
            AppKind::Source(n) => write!(f, "source:{n}"),
            AppKind::Hello => write!(f, "hello"),
            AppKind::Http => write!(f, "http"),
            AppKind::HttpClient => write!(f, "http-client"),
            AppKind::Reply(b) => write!(f, "reply:{}B", b.len()),
        }
    }
}

/// Who closes, and how.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClosePolicy {
    /// closelab closes first (FIN-WAIT-1 → FIN-WAIT-2 → TIME-WAIT).
    Active,
    /// closelab closes after the peer's FIN (CLOSE-WAIT → LAST-ACK).
    Passive,
    /// closelab never closes: CLOSE-WAIT stays (the CLOSE_WAIT leak).
    Never,
    /// closelab sends RST (no TIME-WAIT anywhere).
    Abort,
    /// closelab shuts down its write side and keeps reading until the peer's FIN.
    Half,
}

impl ClosePolicy {
    pub fn parse(s: &str) -> Result<ClosePolicy, String> {
        Ok(match s {
            "active" => ClosePolicy::Active,
            "passive" => ClosePolicy::Passive,
            "never" => ClosePolicy::Never,
            "abort" => ClosePolicy::Abort,
            "half" => ClosePolicy::Half,
            _ => {
                return Err(format!("invalid close policy `{s}` (expected active, passive, never, abort or half)"));
            }
        })
    }
}

/// The close policy with its timing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    pub close: ClosePolicy,
    /// For active/abort/half: delay after ESTABLISHED (default: when the app
    /// has done its part). For passive: delay after the peer's FIN (default 0).
    pub close_after: Option<Duration>,
    /// Imitate Linux: close() with unread received data sends RST
    /// (RFC 2525 §2.17) instead of FIN.
    pub rst_on_unread: bool,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy { close: ClosePolicy::Passive, close_after: None, rst_on_unread: false }
    }
}

/// An application call the policy wants made now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CloseCall {
    Close,
    Shutdown,
    Abort,
}

/// Per-connection application state.
#[derive(Debug)]
pub(crate) struct App {
    kind: AppKind,
    policy: Policy,
    /// Bytes still to queue for the initial `--send` (connect) or `source`.
    to_send: usize,
    /// Offset into the source pattern, so the byte stream is reproducible.
    sent_total: usize,
    /// Bytes read and not yet written back (echo) or answered (http).
    pending: Vec<u8>,
    /// Received bytes (for http request parsing).
    request: Vec<u8>,
    /// The app has done its part (first echo, line, bytes, response).
    done: bool,
    /// Echo: has echoed at least once.
    echoed: bool,
    /// HTTP wants the connection closed after the response is queued.
    http_close: bool,
    /// The app has called close/shutdown/abort.
    pub(crate) closed: Option<CloseCall>,
    /// Bytes received in total (for tests and summaries).
    pub(crate) received: usize,
    /// FNV-1a (64-bit) of every byte read, in order, when asked to verify
    /// (tests check content). Off by default: hashing every byte cost ~17 %
    /// of a bulk receive.
    pub(crate) checksum: Option<u64>,
    pub(crate) established_at: Option<Instant>,
    pub(crate) peer_fin_at: Option<Instant>,
    /// The HTTP client's side of the connection (`HttpClient` only).
    pub(crate) client: Option<Box<ClientConn>>,
}

/// One HTTP client connection: requests sent and not yet answered, the
/// response parser, and what it finished.
#[derive(Debug, Default)]
pub(crate) struct ClientConn {
    parser: ResponseParser,
    /// Paths of requests sent, oldest first.
    outstanding: std::collections::VecDeque<String>,
    /// Responses (or errors) completed since the endpoint last looked.
    pub(crate) results: Vec<(String, Result<Response, HttpError>)>,
    /// A protocol error: nothing more is parsed, the connection is aborted.
    failed: bool,
    eof_seen: bool,
}

impl ClientConn {
    pub(crate) fn sent(&mut self, path: String) {
        self.outstanding.push_back(path);
    }

    fn fail(&mut self, e: HttpError) {
        let path = self.outstanding.pop_front().unwrap_or_default();
        self.results.push((path, Err(e)));
        self.outstanding.clear();
        self.failed = true;
    }

    /// Bytes the server sent.
    fn bytes(&mut self, mut data: &[u8]) {
        while !data.is_empty() && !self.failed {
            if self.outstanding.is_empty() {
                return self.fail(HttpError::Unsolicited(data.len()));
            }
            match self.parser.feed(data) {
                Ok((n, done)) => {
                    data = &data[n..];
                    if let Some(r) = done {
                        let path = self.outstanding.pop_front().unwrap_or_default();
                        self.results.push((path, Ok(r)));
                    }
                }
                Err(e) => self.fail(e),
            }
        }
    }

    /// The server closed its side.
    fn eof(&mut self) {
        if self.eof_seen || self.failed {
            return;
        }
        self.eof_seen = true;
        if self.outstanding.is_empty() {
            return;
        }
        let idle = self.parser.idle();
        match self.parser.eof() {
            Ok(Some(r)) => {
                let path = self.outstanding.pop_front().unwrap_or_default();
                self.results.push((path, Ok(r)));
            }
            Ok(None) if idle => self.fail(HttpError::Truncated("before the response".into())),
            Ok(None) => {}
            Err(e) => self.fail(e),
        }
        if !self.outstanding.is_empty() && !self.failed {
            self.fail(HttpError::Truncated("before the response".into()));
        }
    }

    /// A request waits for its response.
    pub(crate) fn busy(&self) -> bool {
        !self.outstanding.is_empty()
    }
}

/// The repeating byte pattern of `source` and `--send`: byte `i` of the
/// stream is `i % 251` (a prime, so it does not align with buffer sizes).
pub fn pattern_byte(i: usize) -> u8 {
    (i % PATTERN_PERIOD) as u8
}

const PATTERN_PERIOD: usize = 251;

/// The pattern from byte 0, 17 periods long: any offset within a period
/// is followed by at least 16 whole periods (4016 bytes) to copy at once.
static PATTERN: [u8; PATTERN_PERIOD * 17] = {
    let mut t = [0u8; PATTERN_PERIOD * 17];
    let mut i = 0;
    while i < t.len() {
        t[i] = (i % PATTERN_PERIOD) as u8;
        i += 1;
    }
    t
};

/// Fills `buf` with stream bytes `start..start + buf.len()` of the pattern
/// by copying whole runs (a division per byte cost ~8 % of a bulk send).
pub fn fill_pattern(buf: &mut [u8], start: usize) {
    let mut off = start % PATTERN_PERIOD;
    let mut done = 0;
    while done < buf.len() {
        let n = (buf.len() - done).min(PATTERN.len() - off);
        buf[done..done + n].copy_from_slice(&PATTERN[off..off + n]);
        done += n;
        off = (off + n) % PATTERN_PERIOD;
    }
}

impl App {
    pub(crate) fn new(kind: AppKind, policy: Policy, initial_send: usize, verify: bool) -> App {
        let to_send = initial_send
            + match kind {
                AppKind::Source(n) => n,
                _ => 0,
            };
        let mut pending = Vec::new();
        if kind == AppKind::Hello {
            pending.extend_from_slice(HELLO_LINE);
        }
        let client = (kind == AppKind::HttpClient).then(Box::default);
        App {
            kind,
            policy,
            to_send,
            sent_total: 0,
            pending,
            request: Vec::new(),
            done: false,
            echoed: false,
            http_close: false,
            closed: None,
            received: 0,
            checksum: verify.then_some(0xcbf2_9ce4_8422_2325),
            established_at: None,
            peer_fin_at: None,
            client,
        }
    }

    /// Reads and writes what the socket allows; returns the calls made.
    pub(crate) fn io(&mut self, sock: &mut tcp::Socket, actions: &mut Vec<AppAction>) {
        let reading = match self.closed {
            None | Some(CloseCall::Shutdown) => self.kind.reads(),
            // After close() the application is gone; closelab keeps draining
            // so the peer is never stalled by a zero window.
            Some(CloseCall::Close) => true,
            Some(CloseCall::Abort) => false,
        };
        if reading && sock.can_recv() {
            let mut got = 0;
            // Keep what the app consumes (echo, http) straight from smoltcp's
            // buffer, without an intermediate copy.
            let keep = self.closed.is_none() || self.closed == Some(CloseCall::Shutdown);
            while sock.can_recv() {
                let (kind, pending, request, checksum, client) =
                    (&self.kind, &mut self.pending, &mut self.request, &mut self.checksum, &mut self.client);
                let r = sock.recv(|buf| {
                    if let Some(sum) = checksum {
                        *sum = buf.iter().fold(*sum, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
                    }
                    if keep {
                        match (kind, client) {
                            (AppKind::Echo, _) => pending.extend_from_slice(buf),
                            (AppKind::Http, _) => request.extend_from_slice(buf),
                            (AppKind::HttpClient, Some(c)) => c.bytes(buf),
                            _ => {}
                        }
                    }
                    (buf.len(), buf.len())
                });
                match r {
                    Ok(n) if n > 0 => got += n,
                    _ => break,
                }
            }
            if got > 0 {
                self.received += got;
                actions.push(AppAction::Recv(got));
                if let (AppKind::Reply(bytes), false) = (&self.kind, self.echoed) {
                    self.pending.extend_from_slice(bytes);
                    self.echoed = true;
                }
            }
        }
        if let Some(c) = self.client.as_mut()
            && self.closed.is_none()
            && !sock.may_recv()
            && sock.state() != tcp::State::SynSent
            && sock.state() != tcp::State::Closed
        {
            c.eof();
        }
        if self.kind == AppKind::Http && self.closed.is_none() {
            self.http_answer();
        }
        if self.closed.is_none() && sock.may_send() {
            let mut queued = 0;
            while self.to_send > 0 && sock.can_send() {
                let start = self.sent_total;
                let want = self.to_send;
                let n = sock
                    .send(|buf| {
                        let n = buf.len().min(want);
                        fill_pattern(&mut buf[..n], start);
                        (n, n)
                    })
                    .unwrap_or(0);
                if n == 0 {
                    break;
                }
                self.to_send -= n;
                self.sent_total += n;
                queued += n;
            }
            if self.to_send == 0 && !self.pending.is_empty() && sock.can_send() {
                let n = sock.send_slice(&self.pending).unwrap_or(0);
                self.pending.drain(..n);
                queued += n;
                if n > 0 && self.kind == AppKind::Echo {
                    self.echoed = true;
                }
            }
            if queued > 0 {
                actions.push(AppAction::Send(queued));
            }
        }
        if !self.done && self.to_send == 0 && self.pending.is_empty() {
            self.done = match self.kind {
                AppKind::Echo => self.echoed,
                AppKind::Sink | AppKind::Source(_) | AppKind::Hello => true,
                AppKind::Http => self.http_close,
                AppKind::HttpClient => false,
                AppKind::Reply(_) => self.echoed,
            };
        }
    }

    /// Turns a complete request in `self.request` into a response in
    /// `self.pending`.
    fn http_answer(&mut self) {
        while let Some(end) = find(&self.request, b"\r\n\r\n") {
            let head: Vec<u8> = self.request.drain(..end + 4).collect();
            let (response, close) = http_response(&head);
            self.pending.extend_from_slice(&response);
            if close {
                self.http_close = true;
                self.request.clear();
                break;
            }
        }
    }

    /// Which close call the policy wants now, if any, and when it will want
    /// one if not yet.
    pub(crate) fn due_close(&self, now: Instant, peer_fin: bool) -> (Option<CloseCall>, Option<Instant>) {
        if self.closed.is_some() {
            return (None, None);
        }
        if let Some(c) = &self.client {
            // The crawler closes; the app only aborts on a protocol error.
            return (c.failed.then_some(CloseCall::Abort), None);
        }
        let Some(est) = self.established_at else { return (None, None) };
        let call = match self.policy.close {
            ClosePolicy::Never => return (None, None),
            ClosePolicy::Passive => {
                let Some(fin) = self.peer_fin_at else { return (None, None) };
                let at = fin + self.policy.close_after.unwrap_or(Duration::ZERO);
                return if now >= at && self.pending.is_empty() && self.to_send == 0 {
                    (Some(CloseCall::Close), None)
                } else if now >= at {
                    // Still writing what the app owes; close when it is queued.
                    (None, None)
                } else {
                    (None, Some(at))
                };
            }
            ClosePolicy::Active => CloseCall::Close,
            ClosePolicy::Abort => CloseCall::Abort,
            ClosePolicy::Half => CloseCall::Shutdown,
        };
        // An HTTP server closes only when the protocol says so (HTTP/1.0 or
        // `Connection: close`); with keep-alive it waits for the client.
        // After a keep-alive exchange the client closes first: once every
        // response is queued, the server closes too (no CLOSE-WAIT leak).
        if self.kind == AppKind::Http && self.policy.close_after.is_none() {
            let answered = self.pending.is_empty() && self.to_send == 0;
            return if self.done || (peer_fin && answered) { (Some(call), None) } else { (None, None) };
        }
        match self.policy.close_after {
            Some(d) => {
                let at = est + d;
                if now >= at { (Some(call), None) } else { (None, Some(at)) }
            }
            None if self.done => (Some(call), None),
            // The peer closed before the app did its part (e.g. echo with no
            // data): an active closer still closes.
            None if peer_fin => (Some(call), None),
            None => (None, None),
        }
    }

    /// Queues an HTTP request on a client connection; false if this is not
    /// one, or it already closed or failed.
    pub(crate) fn http_send(&mut self, path: String, bytes: &[u8]) -> bool {
        match self.client.as_mut() {
            Some(c) if !c.failed && self.closed.is_none() => {
                c.sent(path);
                self.pending.extend_from_slice(bytes);
                true
            }
            _ => false,
        }
    }

    pub(crate) fn rst_on_unread(&self) -> bool {
        self.policy.rst_on_unread
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The HTTP responder: returns the response and whether the connection must
/// close after it (HTTP/1.0 without keep-alive, `Connection: close`, or a bad
/// request).
pub fn http_response(head: &[u8]) -> (Vec<u8>, bool) {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or("");
    let parts: Vec<&str> = request_line.split(' ').collect();
    let mut connection = None;
    for l in lines {
        if let Some((k, v)) = l.split_once(':')
            && k.trim().eq_ignore_ascii_case("connection")
        {
            connection = Some(v.trim().to_ascii_lowercase());
        }
    }
    let valid = parts.len() == 3 && parts[2].starts_with("HTTP/1.");
    if !valid || parts[0] != "GET" {
        let body = "bad request\n";
        let version = if valid { parts[2] } else { "HTTP/1.1" };
        let resp = format!(
            "{version} 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        return (resp.into_bytes(), true);
    }
    let version = parts[2];
    let close = match connection.as_deref() {
        Some("close") => true,
        Some("keep-alive") => false,
        _ => version == "HTTP/1.0",
    };
    // A server with files that exist and files that do not: any path
    // starting with /missing is not found.
    let (status, body) = if parts[1].starts_with("/missing") {
        ("404 Not Found", format!("not found: {}\n", parts[1]))
    } else {
        ("200 OK", format!("hello from closelab: {}\n", parts[1]))
    };
    let conn_header = if close { "close" } else { "keep-alive" };
    let resp = format!(
        "{version} {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: {conn_header}\r\n\r\n{body}",
        body.len()
    );
    (resp.into_bytes(), close)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_fill_pattern_matches_pattern_byte() {
        for start in [0, 1, 250, 251, 4015, 4016, 100_000] {
            for len in [0, 1, 250, 4016, 4017, 20_000] {
                let mut buf = vec![0u8; len];
                fill_pattern(&mut buf, start);
                let want: Vec<u8> = (start..start + len).map(pattern_byte).collect();
                assert_eq!(buf, want, "start {start} len {len}");
            }
        }
    }

    #[test]
    fn test_app_parse() {
        assert_eq!(AppKind::parse("echo"), Ok(AppKind::Echo));
        assert_eq!(AppKind::parse("source:10"), Ok(AppKind::Source(10)));
        assert_eq!(AppKind::parse("source:1k"), Ok(AppKind::Source(1024)));
        assert!(AppKind::parse("source:x").unwrap_err().contains("invalid app `source:x`"));
        assert!(AppKind::parse("ech").unwrap_err().contains("expected echo"));
        assert_eq!(ClosePolicy::parse("half"), Ok(ClosePolicy::Half));
        assert!(ClosePolicy::parse("x").is_err());
    }

    #[test]
    fn test_http_versions_and_connection_header() {
        let (r, close) = http_response(b"GET / HTTP/1.0\r\n\r\n");
        assert!(close);
        let r = String::from_utf8(r).unwrap();
        assert!(r.starts_with("HTTP/1.0 200 OK\r\n"), "{r}");
        assert!(r.ends_with("\r\n\r\nhello from closelab: /\n"), "{r}");
        let (_, close) = http_response(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(!close);
        let (_, close) = http_response(b"GET /a HTTP/1.1\r\nConnection: close\r\n\r\n");
        assert!(close);
        let (_, close) = http_response(b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        assert!(!close);
        let (r, close) = http_response(b"POST / HTTP/1.1\r\n\r\n");
        assert!(close);
        assert!(String::from_utf8(r).unwrap().starts_with("HTTP/1.1 400 Bad Request"));
        let (_, close) = http_response(b"garbage\r\n\r\n");
        assert!(close);
    }
}
