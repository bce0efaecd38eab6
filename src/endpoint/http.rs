//! The HTTP/1.1 client's wire format: requests out, responses in.
//!
//! Sans-IO and bounded: [`ResponseParser`] is fed whatever bytes arrived and
//! says when a response is complete. The head is parsed by `httparse` (the
//! ecosystem's zero-copy parser, also under hyper); the body framing
//! (RFC 9112 §6: `Content-Length`, `chunked`, or until the server closes) is
//! decoded here. Nothing is buffered beyond one response head
//! ([`MAX_HEAD`]) and one chunk-size line: bodies are counted and
//! checksummed, never stored, so a huge or endless response costs no memory.
//! Every malformed input is an [`HttpError`], never a panic.

use std::fmt;

/// Longest response head accepted (status line and headers).
pub const MAX_HEAD: usize = 16 * 1024;
/// Most headers in one response.
pub const MAX_HEADERS: usize = 64;
/// Largest body accepted (a `Content-Length` or chunked total above it is
/// an error, not a wait).
pub const MAX_BODY: u64 = 1 << 30;
/// Longest chunk-size line (size, extensions, CRLF) or trailer line.
const MAX_LINE: usize = 1024;

/// FNV-1a (64-bit) offset basis: the checksum of an empty body.
pub const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a (64-bit) of `data`, continuing from `h` (tests compare bodies
/// with the files a server sent).
pub fn fnv1a(h: u64, data: &[u8]) -> u64 {
    data.iter().fold(h, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

/// How the request asks the server to treat the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpMode {
    /// HTTP/1.1, persistent (the default): the crawler reuses connections.
    KeepAlive,
    /// HTTP/1.1 with `Connection: close`: the server closes after the response.
    Close,
    /// HTTP/1.0 without keep-alive: the server closes after the response.
    Http10,
}

impl HttpMode {
    pub fn name(self) -> &'static str {
        match self {
            HttpMode::KeepAlive => "keep-alive",
            HttpMode::Close => "close",
            HttpMode::Http10 => "http1.0",
        }
    }
}

/// A GET request's bytes.
pub fn request(path: &str, host: &str, mode: HttpMode) -> Vec<u8> {
    let (version, conn) = match mode {
        HttpMode::KeepAlive => ("HTTP/1.1", ""),
        HttpMode::Close => ("HTTP/1.1", "Connection: close\r\n"),
        HttpMode::Http10 => ("HTTP/1.0", ""),
    };
    format!("GET {path} {version}\r\nHost: {host}\r\nUser-Agent: closelab\r\nAccept: */*\r\n{conn}\r\n").into_bytes()
}

/// Checks a request path: absolute, printable ASCII, bounded.
pub fn validate_path(p: &str) -> Result<(), String> {
    if !p.starts_with('/') {
        return Err(format!("invalid path `{p}`: it must start with /"));
    }
    if p.len() > 8192 {
        return Err(format!("invalid path `{}…`: longer than 8192 bytes", &p[..40]));
    }
    if let Some(c) = p.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(format!("invalid path `{p}`: character {c:?} (escape it as %XX)"));
    }
    Ok(())
}

/// Why a response could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HttpError {
    /// The status line or a header is not HTTP.
    BadHead(String),
    /// No end of the head within [`MAX_HEAD`] bytes.
    HeadTooLong,
    TooManyHeaders,
    BadContentLength(String),
    BodyTooLarge(u64),
    BadChunk(String),
    /// The server closed before the response was complete.
    Truncated(String),
    /// Bytes arrived while no request was outstanding.
    Unsolicited(usize),
    /// No complete response within the crawler's timeout.
    Timeout,
    /// No exchange at all: the connection was refused or reset, or none
    /// could be opened (the budget is spent: "too many open files").
    Connection(String),
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            HttpError::BadHead(e) => write!(f, "bad response head: {e}"),
            HttpError::HeadTooLong => write!(f, "response head longer than {MAX_HEAD} bytes"),
            HttpError::TooManyHeaders => write!(f, "more than {MAX_HEADERS} response headers"),
            HttpError::BadContentLength(v) => write!(f, "invalid content-length `{v}`"),
            HttpError::BodyTooLarge(n) => write!(f, "body of {n} bytes is above the limit of {MAX_BODY}"),
            HttpError::BadChunk(e) => write!(f, "bad chunked body: {e}"),
            HttpError::Truncated(e) => write!(f, "connection closed {e}"),
            HttpError::Unsolicited(n) => write!(f, "{n} bytes arrived with no request outstanding"),
            HttpError::Timeout => write!(f, "no complete response in time"),
            HttpError::Connection(e) => f.write_str(e),
        }
    }
}

impl std::error::Error for HttpError {}

/// How the body is delimited (RFC 9112 §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    Length(u64),
    Chunked,
    /// Until the server closes.
    Eof,
}

impl Framing {
    pub fn name(self) -> &'static str {
        match self {
            Framing::Length(_) => "content-length",
            Framing::Chunked => "chunked",
            Framing::Eof => "until-close",
        }
    }
}

/// A complete response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    /// The server allows another request on this connection.
    pub keep_alive: bool,
    pub framing: Framing,
    pub body_len: u64,
    /// FNV-1a (64-bit) of the body's bytes (after de-chunking).
    pub checksum: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chunk {
    /// Reading a chunk-size line (so many bytes of it so far).
    Size,
    Data(u64),
    /// After a chunk's data: expecting CR LF (`true` once CR was seen).
    DataEnd(bool),
    /// Trailer lines after the last chunk; `true` while the line is empty so far.
    Trailer(bool),
}

#[derive(Clone, Debug)]
enum Body {
    Length(u64),
    Chunked(Chunk),
    Eof,
}

#[derive(Debug)]
enum State {
    Head,
    Body { resp: Response, body: Body },
}

/// Reads a stream of responses, one after the other (keep-alive).
#[derive(Debug)]
pub struct ResponseParser {
    state: State,
    /// The head read so far (at most [`MAX_HEAD`] bytes), or the current
    /// chunk-size line (at most `MAX_LINE`).
    buf: Vec<u8>,
    /// Bytes of the current trailer line.
    line: usize,
}

impl Default for ResponseParser {
    fn default() -> ResponseParser {
        ResponseParser::new()
    }
}

impl ResponseParser {
    pub fn new() -> ResponseParser {
        ResponseParser { state: State::Head, buf: Vec::new(), line: 0 }
    }

    /// Nothing of a response has arrived yet.
    pub fn idle(&self) -> bool {
        matches!(self.state, State::Head) && self.buf.is_empty()
    }

    /// Feeds bytes. Returns how many were used and the response they
    /// completed, if any; the caller feeds the rest again (the next
    /// response on the connection).
    pub fn feed(&mut self, data: &[u8]) -> Result<(usize, Option<Response>), HttpError> {
        let mut used = 0;
        loop {
            let rest = &data[used..];
            match &mut self.state {
                State::Head => {
                    if rest.is_empty() {
                        return Ok((used, None));
                    }
                    let before = self.buf.len();
                    let take = rest.len().min(MAX_HEAD - before);
                    self.buf.extend_from_slice(&rest[..take]);
                    match parse_head(&self.buf)? {
                        None if self.buf.len() >= MAX_HEAD => return Err(HttpError::HeadTooLong),
                        None => return Ok((used + take, None)),
                        Some((n, resp, body)) => {
                            used += n - before;
                            self.buf.clear();
                            if (100..200).contains(&resp.status) {
                                // An interim response (100 Continue): the real one follows.
                                continue;
                            }
                            match body {
                                Body::Length(0) => return Ok((used, Some(resp))),
                                body => self.state = State::Body { resp, body },
                            }
                        }
                    }
                }
                State::Body { resp, body } => {
                    let n = body_step(resp, body, &mut self.buf, &mut self.line, rest)?;
                    used += n;
                    let complete = matches!(body, Body::Length(0));
                    if complete {
                        let State::Body { resp, .. } = std::mem::replace(&mut self.state, State::Head) else {
                            unreachable!("in the body state")
                        };
                        return Ok((used, Some(resp)));
                    }
                    if used == data.len() {
                        return Ok((used, None));
                    }
                }
            }
        }
    }

    /// The server closed its side. Returns the response that the close
    /// completes (a body delimited by the close), or an error if one was
    /// cut short.
    pub fn eof(&mut self) -> Result<Option<Response>, HttpError> {
        match std::mem::replace(&mut self.state, State::Head) {
            State::Head if self.buf.is_empty() => Ok(None),
            State::Head => Err(HttpError::Truncated(format!("after {} bytes of the response head", self.buf.len()))),
            State::Body { resp, body: Body::Eof } => Ok(Some(resp)),
            State::Body { resp, body: Body::Length(left) } => {
                Err(HttpError::Truncated(format!("after {} of {} body bytes", resp.body_len, resp.body_len + left)))
            }
            State::Body { resp, body: Body::Chunked(_) } => {
                Err(HttpError::Truncated(format!("in a chunked body after {} bytes", resp.body_len)))
            }
        }
    }
}

/// Parses a complete head: its length, the response and its body framing.
fn parse_head(buf: &[u8]) -> Result<Option<(usize, Response, Body)>, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut r = httparse::Response::new(&mut headers);
    let n = match r.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::TooManyHeaders),
        Err(e) => return Err(HttpError::BadHead(e.to_string())),
    };
    let version = r.version.unwrap_or(1);
    let status = r.code.unwrap_or(0);
    if !(100..=999).contains(&status) {
        return Err(HttpError::BadHead(format!("status {status}")));
    }
    let mut length: Option<u64> = None;
    let mut chunked = None;
    let mut conn_close = false;
    let mut conn_keep = false;
    for h in r.headers.iter() {
        let value = String::from_utf8_lossy(h.value);
        let value = value.trim();
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = parse_length(value)?;
            if length.is_some_and(|l| l != n) {
                return Err(HttpError::BadContentLength(format!("{} and {n}", length.unwrap_or(0))));
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // RFC 9112 §6.1: chunked must be the last coding; anything else
            // is read until the close.
            let last = value.rsplit(',').next().unwrap_or("").trim();
            chunked = Some(last.eq_ignore_ascii_case("chunked"));
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in value.split(',') {
                let t = token.trim();
                conn_close |= t.eq_ignore_ascii_case("close");
                conn_keep |= t.eq_ignore_ascii_case("keep-alive");
            }
        }
    }
    // RFC 9112 §6.3: no body for 1xx, 204, 304 (and HEAD, never sent).
    let no_body = (100..200).contains(&status) || status == 204 || status == 304;
    let (body, framing) = if no_body {
        (Body::Length(0), Framing::Length(0))
    } else {
        match (chunked, length) {
            // Transfer-Encoding overrides Content-Length (§6.3 rule 3).
            (Some(true), _) => (Body::Chunked(Chunk::Size), Framing::Chunked),
            (Some(false), _) => (Body::Eof, Framing::Eof),
            (None, Some(n)) => (Body::Length(n), Framing::Length(n)),
            (None, None) => (Body::Eof, Framing::Eof),
        }
    };
    let persistent = if version == 0 { conn_keep && !conn_close } else { !conn_close };
    let keep_alive = persistent && framing != Framing::Eof && !(chunked.is_some() && length.is_some());
    let resp = Response {
        status,
        reason: r.reason.unwrap_or("").to_string(),
        version,
        keep_alive,
        framing,
        body_len: 0,
        checksum: FNV_START,
    };
    Ok(Some((n, resp, body)))
}

/// RFC 9110 §8.6: one or more digits (a list of equal values is allowed).
fn parse_length(v: &str) -> Result<u64, HttpError> {
    let bad = || HttpError::BadContentLength(v.chars().take(40).collect());
    let mut out = None;
    for part in v.split(',') {
        let p = part.trim();
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let n: u64 = p.parse().map_err(|_| bad())?;
        if n > MAX_BODY {
            return Err(HttpError::BodyTooLarge(n));
        }
        if out.is_some_and(|o| o != n) {
            return Err(bad());
        }
        out = Some(n);
    }
    out.ok_or_else(bad)
}

/// Consumes body bytes from `data`; returns how many. `Body::Length(0)`
/// afterwards means the body is complete.
fn body_step(
    resp: &mut Response,
    body: &mut Body,
    line: &mut Vec<u8>,
    trailer_len: &mut usize,
    data: &[u8],
) -> Result<usize, HttpError> {
    let mut used = 0;
    while used < data.len() {
        let rest = &data[used..];
        match body {
            Body::Length(0) => break,
            Body::Length(left) => {
                let n = (*left).min(rest.len() as u64) as usize;
                take(resp, &rest[..n])?;
                *left -= n as u64;
                used += n;
            }
            Body::Eof => {
                take(resp, rest)?;
                used += rest.len();
            }
            Body::Chunked(Chunk::Data(left)) => {
                let n = (*left).min(rest.len() as u64) as usize;
                take(resp, &rest[..n])?;
                *left -= n as u64;
                used += n;
                if *left == 0 {
                    *body = Body::Chunked(Chunk::DataEnd(false));
                }
            }
            Body::Chunked(Chunk::DataEnd(cr)) => {
                let b = rest[0];
                used += 1;
                match (b, *cr) {
                    (b'\r', false) => *cr = true,
                    (b'\n', _) => *body = Body::Chunked(Chunk::Size),
                    _ => return Err(HttpError::BadChunk("no CRLF after a chunk's data".into())),
                }
            }
            Body::Chunked(Chunk::Size) => {
                let Some(lf) = rest.iter().position(|&b| b == b'\n') else {
                    if line.len() + rest.len() > MAX_LINE {
                        return Err(HttpError::BadChunk(format!("chunk-size line longer than {MAX_LINE} bytes")));
                    }
                    line.extend_from_slice(rest);
                    used += rest.len();
                    continue;
                };
                if line.len() + lf > MAX_LINE {
                    return Err(HttpError::BadChunk(format!("chunk-size line longer than {MAX_LINE} bytes")));
                }
                line.extend_from_slice(&rest[..lf]);
                used += lf + 1;
                let size = chunk_size(line)?;
                line.clear();
                if resp.body_len.saturating_add(size) > MAX_BODY {
                    return Err(HttpError::BodyTooLarge(resp.body_len.saturating_add(size)));
                }
                *body = if size == 0 {
                    *trailer_len = 0;
                    Body::Chunked(Chunk::Trailer(true))
                } else {
                    Body::Chunked(Chunk::Data(size))
                };
            }
            Body::Chunked(Chunk::Trailer(empty)) => {
                let b = rest[0];
                used += 1;
                match b {
                    b'\n' if *empty => *body = Body::Length(0),
                    b'\n' => {
                        *empty = true;
                        *trailer_len = 0;
                    }
                    b'\r' => {}
                    _ => {
                        *empty = false;
                        *trailer_len += 1;
                        if *trailer_len > MAX_LINE {
                            return Err(HttpError::BadChunk(format!("trailer line longer than {MAX_LINE} bytes")));
                        }
                    }
                }
            }
        }
    }
    Ok(used)
}

fn take(resp: &mut Response, bytes: &[u8]) -> Result<(), HttpError> {
    resp.body_len += bytes.len() as u64;
    if resp.body_len > MAX_BODY {
        return Err(HttpError::BodyTooLarge(resp.body_len));
    }
    resp.checksum = fnv1a(resp.checksum, bytes);
    Ok(())
}

/// A chunk-size line without its LF: hex digits, optional `;extensions`,
/// optional CR.
fn chunk_size(line: &[u8]) -> Result<u64, HttpError> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let end = line.iter().position(|&b| b == b';').unwrap_or(line.len());
    let hex = line[..end].trim_ascii();
    let text = String::from_utf8_lossy(hex);
    if hex.is_empty() || hex.len() > 16 || !hex.iter().all(|b| b.is_ascii_hexdigit()) {
        return Err(HttpError::BadChunk(format!("invalid chunk size `{}`", text.chars().take(40).collect::<String>())));
    }
    u64::from_str_radix(&text, 16).map_err(|_| HttpError::BadChunk(format!("invalid chunk size `{text}`")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `data` in pieces of `step` bytes; returns the responses.
    #[track_caller]
    fn feed_all(data: &[u8], step: usize) -> Result<Vec<Response>, HttpError> {
        let mut p = ResponseParser::new();
        let mut out = Vec::new();
        for piece in data.chunks(step.max(1)) {
            let mut off = 0;
            while off < piece.len() {
                let (n, r) = p.feed(&piece[off..])?;
                assert!(n > 0 || r.is_some(), "no progress");
                off += n;
                out.extend(r);
            }
        }
        out.extend(p.eof()?);
        Ok(out)
    }

    fn body_of(r: &Response) -> (u64, u64) {
        (r.body_len, r.checksum)
    }

    #[test]
    fn test_content_length_any_split() {
        let data =
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nno\n";
        for step in [1, 2, 7, 1000] {
            let r = feed_all(data, step).unwrap();
            assert_eq!(r.len(), 2, "step {step}");
            assert_eq!((r[0].status, r[0].keep_alive, r[0].framing), (200, true, Framing::Length(5)));
            assert_eq!(body_of(&r[0]), (5, fnv1a(FNV_START, b"hello")));
            assert_eq!((r[1].status, r[1].reason.as_str()), (404, "Not Found"));
            assert_eq!(body_of(&r[1]), (3, fnv1a(FNV_START, b"no\n")));
        }
    }

    #[test]
    fn test_chunked_with_extensions_and_trailers() {
        let data = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;name=x\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\n";
        for step in [1, 3, 1000] {
            let r = feed_all(data, step).unwrap();
            assert_eq!(r.len(), 1);
            assert_eq!(r[0].framing, Framing::Chunked);
            assert!(r[0].keep_alive);
            assert_eq!(body_of(&r[0]), (11, fnv1a(FNV_START, b"hello world")));
        }
    }

    #[test]
    fn test_http10_body_until_close() {
        let r = feed_all(b"HTTP/1.0 200 OK\r\nServer: x\r\n\r\nabc", 2).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].version, r[0].keep_alive, r[0].framing), (0, false, Framing::Eof));
        assert_eq!(body_of(&r[0]), (3, fnv1a(FNV_START, b"abc")));
        let r = feed_all(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n", 5).unwrap();
        assert!(r[0].keep_alive);
        let r = feed_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx", 5).unwrap();
        assert!(!r[0].keep_alive);
    }

    #[test]
    fn test_no_body_statuses_and_interim() {
        let r = feed_all(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n", 4)
            .unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].status, r[0].body_len), (304, 0));
    }

    // Tests for malformed responses: an error, never a panic, never a wait
    // for more bytes than the limits allow.

    #[test]
    fn test_bad_status_line() {
        for bad in [&b"HTTP/1.1 2x0 OK\r\n\r\n"[..], b"ICY 200 OK\r\n\r\n", b"HTTP/2 200\r\n\r\n", b"\x00\x01\r\n\r\n"]
        {
            let e = feed_all(bad, 3).unwrap_err();
            assert!(matches!(e, HttpError::BadHead(_)), "{bad:?}: {e}");
        }
        assert_eq!(feed_all(b"HTTP/1.1 042 Odd\r\n\r\n", 100).unwrap_err(), HttpError::BadHead("status 42".into()));
    }

    #[test]
    fn test_overlong_head_is_bounded() {
        let mut p = ResponseParser::new();
        let mut data = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
        data.extend(std::iter::repeat_n(b'a', 100_000));
        let mut off = 0;
        let err = loop {
            match p.feed(&data[off..]) {
                Ok((n, None)) => off += n,
                Ok((_, Some(r))) => panic!("unexpected {r:?}"),
                Err(e) => break e,
            }
            assert!(p.buf.len() <= MAX_HEAD);
        };
        assert_eq!(err, HttpError::HeadTooLong);
        assert!(off < MAX_HEAD);
        let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..100 {
            many.extend(format!("H{i}: v\r\n").bytes());
        }
        many.extend(b"\r\n");
        assert_eq!(feed_all(&many, 1000).unwrap_err(), HttpError::TooManyHeaders);
    }

    #[test]
    fn test_bad_content_length() {
        for (v, want) in [
            ("-5", HttpError::BadContentLength("-5".into())),
            ("+5", HttpError::BadContentLength("+5".into())),
            ("5x", HttpError::BadContentLength("5x".into())),
            ("", HttpError::BadContentLength("".into())),
            ("5, 6", HttpError::BadContentLength("5, 6".into())),
            ("99999999999999999999999", HttpError::BadContentLength("99999999999999999999999".into())),
            ("1073741825", HttpError::BodyTooLarge(1_073_741_825)),
        ] {
            let data = format!("HTTP/1.1 200 OK\r\nContent-Length: {v}\r\n\r\n");
            assert_eq!(feed_all(data.as_bytes(), 7).unwrap_err(), want, "{v}");
        }
        let two = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n";
        assert!(matches!(feed_all(two, 100).unwrap_err(), HttpError::BadContentLength(_)));
        // Equal values in a list are one length.
        assert_eq!(feed_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nab", 100).unwrap()[0].body_len, 2);
    }

    #[test]
    fn test_truncated_bodies() {
        let e = feed_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", 2).unwrap_err();
        assert_eq!(e, HttpError::Truncated("after 3 of 10 body bytes".into()));
        let e = feed_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\nabc", 2).unwrap_err();
        assert_eq!(e, HttpError::Truncated("in a chunked body after 3 bytes".into()));
        let e = feed_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n", 2).unwrap_err();
        assert!(matches!(e, HttpError::Truncated(_)));
        let e = feed_all(b"HTTP/1.1 200 OK\r\nContent-", 2).unwrap_err();
        assert_eq!(e, HttpError::Truncated("after 25 bytes of the response head".into()));
    }

    #[test]
    fn test_bad_chunks() {
        let cases: [(&[u8], &str); 5] = [
            (b"zz\r\n", "invalid chunk size `zz`"),
            (b"-1\r\n", "invalid chunk size `-1`"),
            (b"11111111111111111\r\n", "invalid chunk size `11111111111111111`"),
            (b"3\r\nabcX", "no CRLF after a chunk's data"),
            (b"\r\n", "invalid chunk size ``"),
        ];
        for (body, want) in cases {
            let mut data = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            data.extend_from_slice(body);
            assert_eq!(feed_all(&data, 3).unwrap_err(), HttpError::BadChunk(want.into()), "{body:?}");
        }
        let mut long = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1".to_vec();
        long.extend(std::iter::repeat_n(b';', 5000));
        assert!(matches!(feed_all(&long, 100).unwrap_err(), HttpError::BadChunk(e) if e.contains("longer than")));
        let huge = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n";
        assert_eq!(feed_all(huge, 100).unwrap_err(), HttpError::BodyTooLarge(u64::MAX));
    }

    #[test]
    fn test_random_bytes_never_panic() {
        // A small xorshift: seeded, so a failure repeats.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let prefixes: [&[u8]; 3] = [
            b"",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n",
        ];
        for round in 0..3000 {
            let mut data = prefixes[round % 3].to_vec();
            let len = (x % 200) as usize;
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let alphabet = b"0123456789abcdef\r\n;: HTTP/1.";
                data.push(alphabet[(x % alphabet.len() as u64) as usize]);
            }
            let _ = feed_all(&data, 1 + (x % 9) as usize);
        }
    }

    #[test]
    fn test_request_bytes() {
        assert_eq!(
            request("/a", "h:80", HttpMode::KeepAlive),
            b"GET /a HTTP/1.1\r\nHost: h:80\r\nUser-Agent: closelab\r\nAccept: */*\r\n\r\n"
        );
        assert!(String::from_utf8(request("/a", "h", HttpMode::Close)).unwrap().contains("\r\nConnection: close\r\n"));
        assert!(request("/a", "h", HttpMode::Http10).starts_with(b"GET /a HTTP/1.0\r\n"));
        assert!(validate_path("a").is_err());
        assert!(validate_path("/a b").is_err());
        assert!(validate_path("/a%20b?x=1").is_ok());
    }
}
