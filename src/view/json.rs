//! JSON lines: one object per event, for machines (`jq`, a later
//! `closelab ladder FILE.jsonl`), and the reader that turns those lines back
//! into [`Event`]s.
//!
//! Written by hand (the crate has no serde): [`line`] and [`summary_line`]
//! write, [`parse_line`] / [`parse_record`] read back exactly what they wrote,
//! and [`parse`] is a small, strict JSON parser (RFC 8259) that tests
//! elsewhere may use to inspect output. Like every view, this module does no
//! I/O beyond writing to the `Write` handed to [`JsonSink`].
//!
//! Shapes (keys in this order; every event has `t`, `side`, `type`, `conn`):
//!
//! ```text
//! {"t":0.2003,"side":"closelab","type":"segment","conn":1,"dir":"out","src":"10.201.0.2:7000","dst":"10.201.0.1:41234","flags":"F.","seq":6,"ack":6,"win":64240,"len":0}
//! {"t":0.2003,"side":"closelab","type":"state","conn":1,"from":"ESTABLISHED","to":"FIN-WAIT-1","cause":"app","action":"close"}
//! {"t":0.2003,"side":"closelab","type":"app","conn":1,"action":"send","bytes":5}
//! {"t":0.3,"side":"closelab","type":"fault","conn":1,"action":"dropped","dir":"out","rule":1,"detail":"","src":…,"dst":…,"flags":".","seq":7,"ack":7,"win":64240,"len":0}
//! {"t":0.4,"side":"linux","type":"timer","conn":1,"name":"timewait","remaining":59.8,"retrans":0}
//! {"t":0.3,"side":"closelab","type":"malformed","conn":null,"dir":"in","len":3,"reason":"…"}
//! {"t":0.5,"side":"closelab","type":"refused","conn":null,"tuple":"…","reason":"…"}
//! {"t":0.6,"side":"closelab","type":"note","conn":null,"text":"…"}
//! {"type":"summary","side":"closelab","connections":3,"reached":{"ESTABLISHED":3,"FIN-WAIT-1":3}}
//! ```
//!
//! Times are seconds with at most 6 decimals (microseconds), trailing zeros
//! trimmed. A fault on a segment that could not be parsed has no segment
//! keys. Flags use tcpdump letters; a segment with no flags at all is
//! `"none"`, as in the text timeline.

use std::fmt::{self, Write as _};
use std::io::{self, Write};
use std::net::SocketAddr;

use super::LineWriter;
use crate::event::{AppAction, Cause, ConnId, Dir, Event, EventKind, FaultAction, Side, Sink, Summary, TcpState};
use crate::wire::{Flags, Segment};

// ---------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------

/// One event as one JSON object (no trailing newline).
pub fn line(ev: &Event) -> String {
    let mut o = Obj::new();
    o.raw("t", &secs(ev.t));
    o.str("side", ev.side.name());
    o.str("type", kind_name(&ev.kind));
    match ev.conn {
        Some(c) => o.raw("conn", &c.to_string()),
        None => o.raw("conn", "null"),
    }
    match &ev.kind {
        EventKind::Segment { dir, seg } => {
            o.str("dir", dir.name());
            segment_fields(&mut o, seg);
        }
        EventKind::Malformed { dir, len, reason } => {
            o.str("dir", dir.name());
            o.raw("len", &len.to_string());
            o.str("reason", reason);
        }
        EventKind::State { from, to, cause } => {
            o.str("from", from.rfc_name());
            o.str("to", to.rfc_name());
            o.str("cause", cause.kind());
            if let Cause::App(action) = cause {
                app_fields(&mut o, *action);
            }
        }
        EventKind::App { action } => app_fields(&mut o, *action),
        EventKind::Fault { action, dir, seg, rule, detail } => {
            o.str("action", action.name());
            o.str("dir", dir.name());
            o.raw("rule", &rule.to_string());
            o.str("detail", detail);
            if let Some(seg) = seg {
                segment_fields(&mut o, seg);
            }
        }
        EventKind::Timer { name, remaining, retrans } => {
            o.str("name", name);
            o.raw("remaining", &secs(*remaining));
            o.raw("retrans", &retrans.to_string());
        }
        EventKind::Refused { tuple, reason } => {
            o.str("tuple", tuple);
            o.str("reason", reason);
        }
        EventKind::Note { text } => o.str("text", text),
    }
    o.finish()
}

/// The exit summary of one side as one JSON object; `reached` lists states
/// in [`TcpState::ALL`] order, leaving out states never reached.
pub fn summary_line(s: &Summary, side: Side) -> String {
    let mut reached = Obj::new();
    for state in TcpState::ALL {
        match s.reached.get(&state) {
            Some(&n) if n > 0 => reached.raw(state.rfc_name(), &n.to_string()),
            _ => {}
        }
    }
    let mut o = Obj::new();
    o.str("type", "summary");
    o.str("side", side.name());
    o.raw("connections", &s.connections.to_string());
    o.raw("reached", &reached.finish());
    o.finish()
}

/// `s` as a JSON string literal, quotes included. Escapes `"`, `\` and every
/// control character (U+0000–U+001F with the short forms where JSON has
/// them, plus DEL); everything else is kept as UTF-8.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn kind_name(kind: &EventKind) -> &'static str {
    match kind {
        EventKind::Segment { .. } => "segment",
        EventKind::Malformed { .. } => "malformed",
        EventKind::State { .. } => "state",
        EventKind::App { .. } => "app",
        EventKind::Fault { .. } => "fault",
        EventKind::Timer { .. } => "timer",
        EventKind::Refused { .. } => "refused",
        EventKind::Note { .. } => "note",
    }
}

fn segment_fields(o: &mut Obj, seg: &Segment) {
    o.str("src", &seg.src.to_string());
    o.str("dst", &seg.dst.to_string());
    o.str("flags", &seg.flags.to_string());
    o.raw("seq", &seg.seq.to_string());
    o.raw("ack", &seg.ack.to_string());
    o.raw("win", &seg.win.to_string());
    o.raw("len", &seg.len.to_string());
}

fn app_fields(o: &mut Obj, action: AppAction) {
    o.str("action", action.name());
    if let Some(n) = action.bytes() {
        o.raw("bytes", &n.to_string());
    }
}

/// Seconds with at most 6 decimals, trailing zeros trimmed: `0.2003`, `1`.
/// JSON has no NaN or infinity; those become `null` (and fail to read back
/// as a time, which is the honest outcome).
fn secs(x: f64) -> String {
    if !x.is_finite() {
        return "null".to_string();
    }
    let mut s = format!("{x:.6}");
    while s.ends_with('0') {
        s.pop();
    }
    if s.ends_with('.') {
        s.pop();
    }
    if s == "-0" {
        s = "0".to_string();
    }
    s
}

/// Builds one object, keys in insertion order.
struct Obj {
    s: String,
}

impl Obj {
    fn new() -> Obj {
        Obj { s: String::from("{") }
    }

    fn key(&mut self, key: &str) {
        if self.s.len() > 1 {
            self.s.push(',');
        }
        self.s.push_str(&quote(key));
        self.s.push(':');
    }

    fn str(&mut self, key: &str, value: &str) {
        self.key(key);
        self.s.push_str(&quote(value));
    }

    fn raw(&mut self, key: &str, value: &str) {
        self.key(key);
        self.s.push_str(value);
    }

    fn finish(mut self) -> String {
        self.s.push('}');
        self.s
    }
}

// ---------------------------------------------------------------------------
// Sink
// ---------------------------------------------------------------------------

/// Writes [`line`] plus a newline for every event, flushing each line. The
/// first write error (EPIPE, disk full) is kept and reported by
/// [`JsonSink::error`]; nothing is written after it and nothing panics.
pub struct JsonSink<W: Write> {
    out: LineWriter<W>,
}

impl<W: Write> JsonSink<W> {
    pub fn new(out: W) -> JsonSink<W> {
        JsonSink { out: LineWriter::new(out) }
    }

    /// Writes only when the run loop flushes (see [`LineWriter::batched`]).
    pub fn batched(out: W) -> JsonSink<W> {
        JsonSink { out: LineWriter::batched(out) }
    }

    /// The first write error, if any.
    pub fn error(&self) -> Option<&io::Error> {
        self.out.error()
    }

    /// Writes a [`summary_line`] through the same error handling.
    pub fn summary(&mut self, s: &Summary, side: Side) {
        let text = summary_line(s, side);
        self.out.write_line(&text);
        self.out.flush();
    }

    pub fn get_ref(&self) -> &W {
        self.out.get_ref()
    }

    pub fn get_mut(&mut self) -> &mut W {
        self.out.get_mut()
    }

    pub fn into_inner(self) -> W {
        self.out.into_inner()
    }
}

impl<W: Write> Sink for JsonSink<W> {
    fn event(&mut self, ev: &Event) {
        let text = line(ev);
        self.out.write_line(&text);
    }

    fn flush(&mut self) {
        self.out.flush();
    }
}

// ---------------------------------------------------------------------------
// Reading events back
// ---------------------------------------------------------------------------

/// One line of a JSON-lines file as written by this module.
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    Event(Event),
    Summary { side: Side, summary: Summary },
}

/// Reads one line written by [`line`] or [`summary_line`]. Unknown keys are
/// ignored (newer writers may add some); missing or mistyped keys are errors
/// that name the key.
pub fn parse_record(s: &str) -> Result<Record, String> {
    let json = parse(s)?;
    let o = Fields::new(&json)?;
    let ty = o.str("type")?;
    let side = side(o.str("side")?)?;
    if ty == "summary" {
        return parse_summary(&o).map(|summary| Record::Summary { side, summary });
    }
    let t = o.f64("t")?;
    let conn: Option<ConnId> = match o.get("conn")? {
        Json::Null => None,
        v => Some(as_int(v, "conn")?),
    };
    let kind = match ty {
        "segment" => EventKind::Segment { dir: dir(o.str("dir")?)?, seg: segment(&o)? },
        "malformed" => {
            EventKind::Malformed { dir: dir(o.str("dir")?)?, len: o.int("len")?, reason: o.str("reason")?.to_string() }
        }
        "state" => {
            let cause = match o.str("cause")? {
                "segment" => Cause::Segment,
                "timer" => Cause::Timer,
                "observed" => Cause::Observed,
                "app" => Cause::App(app_action(&o)?),
                other => return Err(format!("unknown cause {}", quote(other))),
            };
            EventKind::State { from: state(&o, "from")?, to: state(&o, "to")?, cause }
        }
        "app" => EventKind::App { action: app_action(&o)? },
        "fault" => {
            let action = match o.str("action")? {
                "dropped" => FaultAction::Dropped,
                "delayed" => FaultAction::Delayed,
                "duplicated" => FaultAction::Duplicated,
                "reordered" => FaultAction::Reordered,
                other => return Err(format!("unknown fault action {}", quote(other))),
            };
            let has_seg = ["src", "dst", "flags", "seq", "ack", "win", "len"].iter().any(|k| o.has(k));
            EventKind::Fault {
                action,
                dir: dir(o.str("dir")?)?,
                seg: if has_seg { Some(segment(&o)?) } else { None },
                rule: o.int("rule")?,
                detail: o.str("detail")?.to_string(),
            }
        }
        "timer" => EventKind::Timer {
            name: o.str("name")?.to_string(),
            remaining: o.f64("remaining")?,
            retrans: o.int("retrans")?,
        },
        "refused" => EventKind::Refused { tuple: o.str("tuple")?.to_string(), reason: o.str("reason")?.to_string() },
        "note" => EventKind::Note { text: o.str("text")?.to_string() },
        other => return Err(format!("unknown event type {}", quote(other))),
    };
    Ok(Record::Event(Event { t, side, conn, kind }))
}

/// Reads back one event written by [`line`]: `parse_line(&line(ev)) == ev`
/// for every event whose times have at most 6 decimals. A summary line is an
/// error here; use [`parse_record`] to accept both.
pub fn parse_line(s: &str) -> Result<Event, String> {
    match parse_record(s)? {
        Record::Event(ev) => Ok(ev),
        Record::Summary { .. } => Err("a summary line, not an event".to_string()),
    }
}

fn parse_summary(o: &Fields) -> Result<Summary, String> {
    let mut s = Summary { connections: o.int("connections")?, ..Summary::default() };
    let reached = match o.get("reached")? {
        Json::Obj(members) => members,
        _ => return Err("key \"reached\" must be an object".to_string()),
    };
    for (name, count) in reached {
        let st = TcpState::parse(name).ok_or_else(|| format!("unknown state {} in \"reached\"", quote(name)))?;
        let n = as_int(count, name)?;
        s.reached.insert(st, n);
    }
    Ok(s)
}

fn side(s: &str) -> Result<Side, String> {
    match s {
        "closelab" => Ok(Side::Closelab),
        "linux" => Ok(Side::Linux),
        other => Err(format!("unknown side {}", quote(other))),
    }
}

fn dir(s: &str) -> Result<Dir, String> {
    match s {
        "in" => Ok(Dir::In),
        "out" => Ok(Dir::Out),
        other => Err(format!("unknown dir {}", quote(other))),
    }
}

fn state(o: &Fields, key: &str) -> Result<TcpState, String> {
    let s = o.str(key)?;
    TcpState::parse(s).ok_or_else(|| format!("unknown state {} in {}", quote(s), quote(key)))
}

fn app_action(o: &Fields) -> Result<AppAction, String> {
    let name = o.str("action")?;
    let bytes = || o.int("bytes");
    let action = match name {
        "listen" => AppAction::Listen,
        "connect" => AppAction::Connect,
        "accept" => AppAction::Accept,
        "send" => return Ok(AppAction::Send(bytes()?)),
        "recv" => return Ok(AppAction::Recv(bytes()?)),
        "close" => AppAction::Close,
        "close-unread" => AppAction::CloseUnread,
        "shutdown" => AppAction::Shutdown,
        "abort" => AppAction::Abort,
        "linger-close" => AppAction::LingerClose,
        other => return Err(format!("unknown app action {}", quote(other))),
    };
    if o.has("bytes") {
        return Err(format!("key \"bytes\" given for app action {}", quote(name)));
    }
    Ok(action)
}

fn segment(o: &Fields) -> Result<Segment, String> {
    let addr = |key: &str| -> Result<SocketAddr, String> {
        let s = o.str(key)?;
        s.parse().map_err(|_| format!("key {} is not an address: {}", quote(key), quote(s)))
    };
    let flags_text = o.str("flags")?;
    let flags = if flags_text == "none" {
        Flags::default()
    } else {
        Flags::parse(flags_text).ok_or_else(|| format!("bad tcp flags {}", quote(flags_text)))?
    };
    Ok(Segment {
        src: addr("src")?,
        dst: addr("dst")?,
        flags,
        seq: o.int("seq")?,
        ack: o.int("ack")?,
        win: o.int("win")?,
        len: o.int("len")?,
    })
}

/// Typed access to an object's members with errors that name the key.
struct Fields<'a> {
    members: &'a [(String, Json)],
}

impl<'a> Fields<'a> {
    fn new(json: &'a Json) -> Result<Fields<'a>, String> {
        match json {
            Json::Obj(members) => Ok(Fields { members }),
            _ => Err("expected a JSON object".to_string()),
        }
    }

    fn has(&self, key: &str) -> bool {
        self.members.iter().any(|(k, _)| k == key)
    }

    fn get(&self, key: &str) -> Result<&'a Json, String> {
        self.members.iter().find(|(k, _)| k == key).map(|(_, v)| v).ok_or_else(|| format!("missing key {}", quote(key)))
    }

    fn str(&self, key: &str) -> Result<&'a str, String> {
        self.get(key)?.as_str().ok_or_else(|| format!("key {} must be a string", quote(key)))
    }

    fn f64(&self, key: &str) -> Result<f64, String> {
        self.get(key)?.as_f64().ok_or_else(|| format!("key {} must be a number", quote(key)))
    }

    fn int<T: TryFrom<u64>>(&self, key: &str) -> Result<T, String> {
        as_int(self.get(key)?, key)
    }
}

/// A non-negative integer that fits `T` and that an `f64` holds exactly:
/// numbers above 2^53 are refused rather than silently rounded.
fn as_int<T: TryFrom<u64>>(v: &Json, key: &str) -> Result<T, String> {
    let n = v.as_u64().ok_or_else(|| format!("key {} must be a non-negative integer up to 2^53", quote(key)))?;
    T::try_from(n).map_err(|_| format!("key {} out of range: {n}", quote(key)))
}

// ---------------------------------------------------------------------------
// A small JSON parser
// ---------------------------------------------------------------------------

/// A parsed JSON value. Objects keep their members in document order (and a
/// duplicated key is a parse error), so tests can check key order.
#[derive(Clone, Debug, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    /// Every number is an `f64`: integers are exact up to 2^53.
    Num(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    /// The member `key` of an object; `None` for other values.
    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Obj(members) => members.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Json::Num(n) => Some(*n),
            _ => None,
        }
    }

    /// A non-negative integer that an `f64` holds exactly (≤ 2^53).
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Json::Num(n) if *n >= 0.0 && n.fract() == 0.0 && *n <= 9_007_199_254_740_992.0 => Some(*n as u64),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Json::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Json]> {
        match self {
            Json::Arr(a) => Some(a),
            _ => None,
        }
    }

    pub fn as_object(&self) -> Option<&[(String, Json)]> {
        match self {
            Json::Obj(m) => Some(m),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Json::Null)
    }
}

impl fmt::Display for Json {
    /// Compact JSON; numbers in Rust's shortest round-trip form.
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Json::Null => f.write_str("null"),
            Json::Bool(b) => write!(f, "{b}"),
            Json::Num(n) if !n.is_finite() => f.write_str("null"),
            Json::Num(n) => write!(f, "{n}"),
            Json::Str(s) => f.write_str(&quote(s)),
            Json::Arr(items) => {
                f.write_str("[")?;
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{v}")?;
                }
                f.write_str("]")
            }
            Json::Obj(members) => {
                f.write_str("{")?;
                for (i, (k, v)) in members.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{}:{v}", quote(k))?;
                }
                f.write_str("}")
            }
        }
    }
}

/// Nesting deeper than this is refused instead of risking the stack.
const MAX_DEPTH: usize = 128;

/// Parses one JSON text (RFC 8259, strict: no trailing commas, no comments,
/// no leading zeros, no raw control characters in strings, no lone
/// surrogates). Errors name the byte offset.
pub fn parse(s: &str) -> Result<Json, String> {
    let mut p = Parser { b: s.as_bytes(), i: 0, depth: 0 };
    p.ws();
    let v = p.value()?;
    p.ws();
    if p.i != p.b.len() {
        return Err(p.err("trailing characters after the value"));
    }
    Ok(v)
}

struct Parser<'a> {
    b: &'a [u8],
    i: usize,
    depth: usize,
}

impl Parser<'_> {
    fn err(&self, what: &str) -> String {
        format!("invalid JSON at byte {}: {what}", self.i)
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    fn expect(&mut self, c: u8) -> Result<(), String> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(self.err(&format!("expected '{}'", c as char)))
        }
    }

    fn value(&mut self) -> Result<Json, String> {
        match self.peek() {
            None => Err(self.err("unexpected end of input")),
            Some(b'{') => self.nested(Parser::object),
            Some(b'[') => self.nested(Parser::array),
            Some(b'"') => self.string().map(Json::Str),
            Some(b't') => self.literal("true", Json::Bool(true)),
            Some(b'f') => self.literal("false", Json::Bool(false)),
            Some(b'n') => self.literal("null", Json::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(self.err("unexpected character")),
        }
    }

    fn nested(&mut self, f: fn(&mut Self) -> Result<Json, String>) -> Result<Json, String> {
        if self.depth >= MAX_DEPTH {
            return Err(self.err("nested too deeply"));
        }
        self.depth += 1;
        let v = f(self);
        self.depth -= 1;
        v
    }

    fn literal(&mut self, word: &str, v: Json) -> Result<Json, String> {
        if self.b[self.i..].starts_with(word.as_bytes()) {
            self.i += word.len();
            Ok(v)
        } else {
            Err(self.err("unexpected character"))
        }
    }

    fn object(&mut self) -> Result<Json, String> {
        self.expect(b'{')?;
        let mut members: Vec<(String, Json)> = Vec::new();
        self.ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(Json::Obj(members));
        }
        loop {
            self.ws();
            if self.peek() != Some(b'"') {
                return Err(self.err("expected a string key"));
            }
            let at = self.i;
            let key = self.string()?;
            if members.iter().any(|(k, _)| *k == key) {
                return Err(format!("invalid JSON at byte {at}: duplicate key {}", quote(&key)));
            }
            self.ws();
            self.expect(b':')?;
            self.ws();
            let v = self.value()?;
            members.push((key, v));
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    return Ok(Json::Obj(members));
                }
                _ => return Err(self.err("expected ',' or '}'")),
            }
        }
    }

    fn array(&mut self) -> Result<Json, String> {
        self.expect(b'[')?;
        let mut items = Vec::new();
        self.ws();
        if self.peek() == Some(b']') {
            self.i += 1;
            return Ok(Json::Arr(items));
        }
        loop {
            self.ws();
            items.push(self.value()?);
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b']') => {
                    self.i += 1;
                    return Ok(Json::Arr(items));
                }
                _ => return Err(self.err("expected ',' or ']'")),
            }
        }
    }

    fn string(&mut self) -> Result<String, String> {
        self.expect(b'"')?;
        // The input is a &str and we only split at ASCII bytes, so the
        // collected bytes stay valid UTF-8.
        let mut out: Vec<u8> = Vec::new();
        loop {
            let Some(c) = self.peek() else {
                return Err(self.err("unterminated string"));
            };
            match c {
                b'"' => {
                    self.i += 1;
                    break;
                }
                b'\\' => {
                    self.i += 1;
                    let e = self.peek().ok_or_else(|| self.err("unterminated escape"))?;
                    self.i += 1;
                    let ch = match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => self.unicode_escape()?,
                        _ => {
                            self.i -= 1;
                            return Err(self.err("unknown escape"));
                        }
                    };
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                }
                0x00..=0x1f => return Err(self.err("control character in string")),
                _ => {
                    out.push(c);
                    self.i += 1;
                }
            }
        }
        String::from_utf8(out).map_err(|_| self.err("invalid UTF-8 in string"))
    }

    /// After `\u`: four hex digits, or a surrogate pair `\uD83D\uDE00`.
    fn unicode_escape(&mut self) -> Result<char, String> {
        let hi = self.hex4()?;
        let code = match hi {
            0xD800..=0xDBFF => {
                if !self.b[self.i..].starts_with(b"\\u") {
                    return Err(self.err("lone high surrogate"));
                }
                self.i += 2;
                let lo = self.hex4()?;
                if !(0xDC00..=0xDFFF).contains(&lo) {
                    return Err(self.err("high surrogate not followed by a low one"));
                }
                0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
            }
            0xDC00..=0xDFFF => return Err(self.err("lone low surrogate")),
            c => c,
        };
        char::from_u32(code).ok_or_else(|| self.err("invalid code point"))
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let mut v = 0u32;
        for _ in 0..4 {
            let d =
                self.peek().and_then(|c| (c as char).to_digit(16)).ok_or_else(|| self.err("expected 4 hex digits"))?;
            v = v * 16 + d;
            self.i += 1;
        }
        Ok(v)
    }

    fn number(&mut self) -> Result<Json, String> {
        let start = self.i;
        let digits = |p: &mut Self| -> usize {
            let from = p.i;
            while let Some(b'0'..=b'9') = p.peek() {
                p.i += 1;
            }
            p.i - from
        };
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => {
                self.i += 1;
                if let Some(b'0'..=b'9') = self.peek() {
                    return Err(self.err("leading zero in number"));
                }
            }
            Some(b'1'..=b'9') => {
                digits(self);
            }
            _ => return Err(self.err("expected a digit")),
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if digits(self) == 0 {
                return Err(self.err("expected a digit after '.'"));
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            if digits(self) == 0 {
                return Err(self.err("expected a digit in the exponent"));
            }
        }
        // Only ASCII digits, sign, '.', 'e' were consumed: valid UTF-8.
        let text = std::str::from_utf8(&self.b[start..self.i]).map_err(|_| self.err("bad number"))?;
        let n: f64 = text.parse().map_err(|_| self.err("bad number"))?;
        if !n.is_finite() {
            return Err(format!("invalid JSON at byte {start}: number out of range"));
        }
        Ok(Json::Num(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(src: &str, dst: &str, flags: &str, seq: u32, ack: u32, len: usize) -> Segment {
        Segment {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            flags: Flags::parse(flags).unwrap(),
            seq,
            ack,
            win: 64240,
            len,
        }
    }

    fn ev(t: f64, side: Side, conn: Option<u64>, kind: EventKind) -> Event {
        Event { t, side, conn, kind }
    }

    const CLIENT: &str = "10.201.0.1:41234";
    const SERVER: &str = "10.201.0.2:7000";

    /// One event of every kind (and the variants that change the shape),
    /// with the exact line each must produce. Times are chosen to survive
    /// the 6-decimal format exactly.
    fn samples() -> Vec<(Event, &'static str)> {
        let c = Side::Closelab;
        vec![
            (
                ev(0.2003, c, Some(1), EventKind::Segment { dir: Dir::Out, seg: seg(SERVER, CLIENT, "F.", 6, 6, 0) }),
                r#"{"t":0.2003,"side":"closelab","type":"segment","conn":1,"dir":"out","src":"10.201.0.2:7000","dst":"10.201.0.1:41234","flags":"F.","seq":6,"ack":6,"win":64240,"len":0}"#,
            ),
            (
                ev(
                    0.0,
                    c,
                    None,
                    EventKind::Segment {
                        dir: Dir::In,
                        seg: seg("[fd00::1]:5555", "[fd00::2]:7000", "S", 4294967295, 0, 0),
                    },
                ),
                r#"{"t":0,"side":"closelab","type":"segment","conn":null,"dir":"in","src":"[fd00::1]:5555","dst":"[fd00::2]:7000","flags":"S","seq":4294967295,"ack":0,"win":64240,"len":0}"#,
            ),
            (
                ev(
                    0.25,
                    c,
                    Some(2),
                    EventKind::Segment {
                        dir: Dir::In,
                        seg: Segment { flags: Flags::default(), ..seg(CLIENT, SERVER, ".", 1, 2, 3) },
                    },
                ),
                r#"{"t":0.25,"side":"closelab","type":"segment","conn":2,"dir":"in","src":"10.201.0.1:41234","dst":"10.201.0.2:7000","flags":"none","seq":1,"ack":2,"win":64240,"len":3}"#,
            ),
            (
                ev(
                    0.2003,
                    c,
                    Some(1),
                    EventKind::State {
                        from: TcpState::Established,
                        to: TcpState::FinWait1,
                        cause: Cause::App(AppAction::Close),
                    },
                ),
                r#"{"t":0.2003,"side":"closelab","type":"state","conn":1,"from":"ESTABLISHED","to":"FIN-WAIT-1","cause":"app","action":"close"}"#,
            ),
            (
                ev(
                    1.5,
                    c,
                    Some(1),
                    EventKind::State { from: TcpState::Listen, to: TcpState::SynReceived, cause: Cause::Segment },
                ),
                r#"{"t":1.5,"side":"closelab","type":"state","conn":1,"from":"LISTEN","to":"SYN-RECEIVED","cause":"segment"}"#,
            ),
            (
                ev(
                    10.0,
                    c,
                    Some(1),
                    EventKind::State { from: TcpState::TimeWait, to: TcpState::Closed, cause: Cause::Timer },
                ),
                r#"{"t":10,"side":"closelab","type":"state","conn":1,"from":"TIME-WAIT","to":"CLOSED","cause":"timer"}"#,
            ),
            (
                ev(
                    0.201,
                    Side::Linux,
                    Some(1),
                    EventKind::State { from: TcpState::FinWait1, to: TcpState::FinWait2, cause: Cause::Observed },
                ),
                r#"{"t":0.201,"side":"linux","type":"state","conn":1,"from":"FIN-WAIT-1","to":"FIN-WAIT-2","cause":"observed"}"#,
            ),
            (
                ev(0.2003, c, Some(1), EventKind::App { action: AppAction::Close }),
                r#"{"t":0.2003,"side":"closelab","type":"app","conn":1,"action":"close"}"#,
            ),
            (
                ev(0.2003, c, Some(1), EventKind::App { action: AppAction::Send(5) }),
                r#"{"t":0.2003,"side":"closelab","type":"app","conn":1,"action":"send","bytes":5}"#,
            ),
            (
                ev(0.5, c, Some(3), EventKind::App { action: AppAction::Recv(0) }),
                r#"{"t":0.5,"side":"closelab","type":"app","conn":3,"action":"recv","bytes":0}"#,
            ),
            (
                ev(0.5, Side::Linux, Some(3), EventKind::App { action: AppAction::LingerClose }),
                r#"{"t":0.5,"side":"linux","type":"app","conn":3,"action":"linger-close"}"#,
            ),
            (
                ev(
                    0.3,
                    c,
                    Some(1),
                    EventKind::Fault {
                        action: FaultAction::Dropped,
                        dir: Dir::Out,
                        seg: Some(seg(SERVER, CLIENT, ".", 7, 7, 0)),
                        rule: 1,
                        detail: String::new(),
                    },
                ),
                r#"{"t":0.3,"side":"closelab","type":"fault","conn":1,"action":"dropped","dir":"out","rule":1,"detail":"","src":"10.201.0.2:7000","dst":"10.201.0.1:41234","flags":".","seq":7,"ack":7,"win":64240,"len":0}"#,
            ),
            (
                ev(
                    0.3,
                    c,
                    None,
                    EventKind::Fault {
                        action: FaultAction::Delayed,
                        dir: Dir::In,
                        seg: None,
                        rule: 2,
                        detail: "by 200ms".into(),
                    },
                ),
                r#"{"t":0.3,"side":"closelab","type":"fault","conn":null,"action":"delayed","dir":"in","rule":2,"detail":"by 200ms"}"#,
            ),
            (
                ev(
                    0.4,
                    Side::Linux,
                    Some(1),
                    EventKind::Timer { name: "timewait".into(), remaining: 59.8, retrans: 0 },
                ),
                r#"{"t":0.4,"side":"linux","type":"timer","conn":1,"name":"timewait","remaining":59.8,"retrans":0}"#,
            ),
            (
                ev(0.4, Side::Linux, Some(1), EventKind::Timer { name: "on".into(), remaining: 0.312, retrans: 2 }),
                r#"{"t":0.4,"side":"linux","type":"timer","conn":1,"name":"on","remaining":0.312,"retrans":2}"#,
            ),
            (
                ev(
                    0.3,
                    c,
                    None,
                    EventKind::Malformed { dir: Dir::In, len: 3, reason: "truncated or malformed header".into() },
                ),
                r#"{"t":0.3,"side":"closelab","type":"malformed","conn":null,"dir":"in","len":3,"reason":"truncated or malformed header"}"#,
            ),
            (
                ev(
                    0.5,
                    c,
                    None,
                    EventKind::Refused {
                        tuple: "10.201.0.1:5555 -> 10.201.0.2:7000".into(),
                        reason: "connection limit 10 reached".into(),
                    },
                ),
                r#"{"t":0.5,"side":"closelab","type":"refused","conn":null,"tuple":"10.201.0.1:5555 -> 10.201.0.2:7000","reason":"connection limit 10 reached"}"#,
            ),
            (
                ev(0.6, c, None, EventKind::Note { text: "story 1: closelab closes first".into() }),
                r#"{"t":0.6,"side":"closelab","type":"note","conn":null,"text":"story 1: closelab closes first"}"#,
            ),
        ]
    }

    // Tests for writing.

    #[test]
    fn test_line_exact_for_every_kind() {
        for (e, want) in samples() {
            assert_eq!(line(&e), want, "{e:?}");
        }
    }

    #[test]
    fn test_time_keeps_microseconds_and_trims_zeros() {
        assert_eq!(secs(0.200311), "0.200311");
        assert_eq!(secs(0.2003114), "0.200311");
        assert_eq!(secs(12.0), "12");
        assert_eq!(secs(-0.0000001), "0");
        assert_eq!(secs(f64::NAN), "null");
    }

    #[test]
    fn test_note_escaping() {
        let e = ev(
            0.6,
            Side::Closelab,
            None,
            EventKind::Note { text: "say \"hi\" \\ a\nb\tc\r\u{1}\u{8}\u{c}\u{7f} é ☃".into() },
        );
        let l = line(&e);
        assert_eq!(
            l,
            r#"{"t":0.6,"side":"closelab","type":"note","conn":null,"text":"say \"hi\" \\ a\nb\tc\r\u0001\b\f\u007f é ☃"}"#
        );
        assert_eq!(parse_line(&l).unwrap(), e);
        // And a generic parser sees the same text.
        let j = parse(&l).unwrap();
        assert_eq!(j.get("text").and_then(Json::as_str), Some("say \"hi\" \\ a\nb\tc\r\u{1}\u{8}\u{c}\u{7f} é ☃"));
    }

    #[test]
    fn test_summary_line() {
        let mut s = Summary { connections: 3, ..Summary::default() };
        s.reached.insert(TcpState::FinWait1, 3);
        s.reached.insert(TcpState::Established, 3);
        s.reached.insert(TcpState::Closing, 0);
        let l = summary_line(&s, Side::Closelab);
        assert_eq!(
            l,
            r#"{"type":"summary","side":"closelab","connections":3,"reached":{"ESTABLISHED":3,"FIN-WAIT-1":3}}"#
        );
        s.reached.remove(&TcpState::Closing);
        assert_eq!(parse_record(&l).unwrap(), Record::Summary { side: Side::Closelab, summary: s });
        assert_eq!(parse_line(&l), Err("a summary line, not an event".to_string()));
        let empty = summary_line(&Summary::default(), Side::Linux);
        assert_eq!(empty, r#"{"type":"summary","side":"linux","connections":0,"reached":{}}"#);
    }

    // Tests for reading events back.

    #[test]
    fn test_round_trip_every_kind() {
        for (e, _) in samples() {
            assert_eq!(parse_line(&line(&e)), Ok(e.clone()));
        }
        let all_actions = [
            AppAction::Listen,
            AppAction::Connect,
            AppAction::Accept,
            AppAction::Send(1 << 20),
            AppAction::Recv(7),
            AppAction::Close,
            AppAction::CloseUnread,
            AppAction::Shutdown,
            AppAction::Abort,
            AppAction::LingerClose,
        ];
        for action in all_actions {
            let e = ev(0.125, Side::Closelab, Some(9), EventKind::App { action });
            assert_eq!(parse_line(&line(&e)), Ok(e));
            let cause = Cause::App(action);
            let e = ev(
                0.125,
                Side::Linux,
                Some(9),
                EventKind::State { from: TcpState::CloseWait, to: TcpState::LastAck, cause },
            );
            assert_eq!(parse_line(&line(&e)), Ok(e));
        }
        for (i, &from) in TcpState::ALL.iter().enumerate() {
            let to = TcpState::ALL[(i + 1) % TcpState::ALL.len()];
            let e = ev(3.75, Side::Closelab, Some(1), EventKind::State { from, to, cause: Cause::Segment });
            assert_eq!(parse_line(&line(&e)), Ok(e));
        }
        for action in [FaultAction::Dropped, FaultAction::Delayed, FaultAction::Duplicated, FaultAction::Reordered] {
            let e = ev(
                0.5,
                Side::Closelab,
                Some(u32::MAX as u64),
                EventKind::Fault {
                    action,
                    dir: Dir::In,
                    seg: Some(seg(CLIENT, SERVER, "FRP.", 1, 2, 3)),
                    rule: 7,
                    detail: "x".into(),
                },
            );
            assert_eq!(parse_line(&line(&e)), Ok(e));
        }
    }

    #[test]
    fn test_parse_line_accepts_reordered_keys_and_unknown_keys() {
        let l = r#"{"type":"note","extra":[1,{"a":null}],"conn":4,"text":"hi","side":"linux","t":2.5}"#;
        assert_eq!(parse_line(l), Ok(ev(2.5, Side::Linux, Some(4), EventKind::Note { text: "hi".into() })));
    }

    #[test]
    fn test_parse_line_errors_name_the_problem() {
        let cases = [
            ("", "invalid JSON at byte 0: unexpected end of input"),
            ("[]", "expected a JSON object"),
            (r#"{"side":"closelab","type":"note","conn":null,"text":"x"}"#, "missing key \"t\""),
            (r#"{"t":"0","side":"closelab","type":"note","conn":null,"text":"x"}"#, "key \"t\" must be a number"),
            (r#"{"t":0,"side":"moon","type":"note","conn":null,"text":"x"}"#, "unknown side \"moon\""),
            (r#"{"t":0,"side":"linux","type":"boom","conn":null}"#, "unknown event type \"boom\""),
            (
                r#"{"t":0,"side":"linux","type":"note","conn":-1,"text":"x"}"#,
                "key \"conn\" must be a non-negative integer up to 2^53",
            ),
            (
                r#"{"t":0,"side":"linux","type":"note","conn":1.5,"text":"x"}"#,
                "key \"conn\" must be a non-negative integer up to 2^53",
            ),
            (r#"{"t":0,"side":"linux","type":"app","conn":1,"action":"send"}"#, "missing key \"bytes\""),
            (
                r#"{"t":0,"side":"linux","type":"app","conn":1,"action":"close","bytes":3}"#,
                "key \"bytes\" given for app action \"close\"",
            ),
            (r#"{"t":0,"side":"linux","type":"app","conn":1,"action":"jump"}"#, "unknown app action \"jump\""),
            (
                r#"{"t":0,"side":"linux","type":"state","conn":1,"from":"NOPE","to":"CLOSED","cause":"timer"}"#,
                "unknown state \"NOPE\" in \"from\"",
            ),
            (
                r#"{"t":0,"side":"linux","type":"state","conn":1,"from":"LISTEN","to":"CLOSED","cause":"magic"}"#,
                "unknown cause \"magic\"",
            ),
            (
                r#"{"t":0,"side":"closelab","type":"segment","conn":1,"dir":"in","src":"10.0.0.1:1","dst":"10.0.0.2:2","flags":"S","seq":4294967296,"ack":0,"win":1,"len":0}"#,
                "key \"seq\" out of range: 4294967296",
            ),
            (
                r#"{"t":0,"side":"closelab","type":"segment","conn":1,"dir":"in","src":"10.0.0.1:1","dst":"10.0.0.2:2","flags":"S","seq":0,"ack":0,"win":65536,"len":0}"#,
                "key \"win\" out of range: 65536",
            ),
            (
                r#"{"t":0,"side":"closelab","type":"segment","conn":1,"dir":"in","src":"nowhere","dst":"10.0.0.2:2","flags":"S","seq":0,"ack":0,"win":1,"len":0}"#,
                "key \"src\" is not an address: \"nowhere\"",
            ),
            (
                r#"{"t":0,"side":"closelab","type":"segment","conn":1,"dir":"in","src":"10.0.0.1:1","dst":"10.0.0.2:2","flags":"SX","seq":0,"ack":0,"win":1,"len":0}"#,
                "bad tcp flags \"SX\"",
            ),
            (
                r#"{"t":0,"side":"closelab","type":"fault","conn":1,"action":"dropped","dir":"in","rule":1,"detail":"","flags":"S"}"#,
                "missing key \"src\"",
            ),
            (r#"{"t":0,"side":"closelab","type":"segment","conn":1,"dir":"up"}"#, "unknown dir \"up\""),
        ];
        for (input, want) in cases {
            assert_eq!(parse_line(input), Err(want.to_string()), "{input}");
        }
    }

    // Tests for the JSON parser.

    #[test]
    fn test_parse_values() {
        let j = parse(" {\"a\" : [1, -2.5e1, 0, true, false, null, \"s\"], \"b\": {}, \"c\": []} \n").unwrap();
        assert_eq!(
            j,
            Json::Obj(vec![
                (
                    "a".into(),
                    Json::Arr(vec![
                        Json::Num(1.0),
                        Json::Num(-25.0),
                        Json::Num(0.0),
                        Json::Bool(true),
                        Json::Bool(false),
                        Json::Null,
                        Json::Str("s".into()),
                    ])
                ),
                ("b".into(), Json::Obj(vec![])),
                ("c".into(), Json::Arr(vec![])),
            ])
        );
        assert_eq!(j.to_string(), r#"{"a":[1,-25,0,true,false,null,"s"],"b":{},"c":[]}"#);
        assert_eq!(parse("0.000001"), Ok(Json::Num(0.000001)));
        assert_eq!(parse("1E+2"), Ok(Json::Num(100.0)));
        assert_eq!(parse("9007199254740992").unwrap().as_u64(), Some(1 << 53));
        assert_eq!(parse("9007199254740994").unwrap().as_u64(), None);
    }

    #[test]
    fn test_parse_string_escapes() {
        let j = parse(r#""\" \\ \/ \b \f \n \r \t \u0041 \u00e9 \u2603 \uD83D\uDE00""#).unwrap();
        assert_eq!(j, Json::Str("\" \\ / \u{8} \u{c} \n \r \t A é ☃ 😀".into()));
        assert_eq!(parse("\"raw é ☃ 😀\""), Ok(Json::Str("raw é ☃ 😀".into())));
    }

    #[test]
    fn test_parse_errors() {
        let bad = [
            ("", "unexpected end of input"),
            ("{", "expected a string key"),
            ("{\"a\":1,}", "expected a string key"),
            ("[1,]", "unexpected character"),
            ("[1 2]", "expected ',' or ']'"),
            ("{\"a\" 1}", "expected ':'"),
            ("{\"a\":1 \"b\":2}", "expected ',' or '}'"),
            ("{\"a\":1,\"a\":2}", "duplicate key \"a\""),
            ("\"abc", "unterminated string"),
            ("\"a\nb\"", "control character in string"),
            ("\"\\x\"", "unknown escape"),
            ("\"\\u12\"", "expected 4 hex digits"),
            ("\"\\uD83D\"", "lone high surrogate"),
            ("\"\\uD83D\\u0041\"", "high surrogate not followed by a low one"),
            ("\"\\uDE00\"", "lone low surrogate"),
            ("01", "leading zero in number"),
            ("-", "expected a digit"),
            ("1.", "expected a digit after '.'"),
            ("1e", "expected a digit in the exponent"),
            (".5", "unexpected character"),
            ("1e999", "number out of range"),
            ("tru", "unexpected character"),
            ("nul", "unexpected character"),
            ("NaN", "unexpected character"),
            ("{} {}", "trailing characters after the value"),
            ("'a'", "unexpected character"),
        ];
        for (input, want) in bad {
            let err = parse(input).expect_err(input);
            assert!(err.contains(want), "{input:?}: {err}");
        }
        assert_eq!(parse("[1,]"), Err("invalid JSON at byte 3: unexpected character".to_string()));
    }

    #[test]
    fn test_parse_refuses_deep_nesting() {
        let deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert!(parse(&deep).unwrap_err().contains("nested too deeply"));
        let ok = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(parse(&ok).is_ok());
    }

    // Tests for the sink.

    struct BrokenPipe;

    impl Write for BrokenPipe {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from(io::ErrorKind::BrokenPipe))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn test_sink_writes_lines_and_keeps_errors() {
        let mut sink = JsonSink::new(Vec::new());
        let e = ev(0.25, Side::Closelab, None, EventKind::Note { text: "x".into() });
        sink.event(&e);
        sink.summary(&Summary::default(), Side::Closelab);
        assert!(sink.error().is_none());
        let out = String::from_utf8(sink.into_inner()).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(parse_line(lines[0]), Ok(e.clone()));
        assert!(matches!(parse_record(lines[1]), Ok(Record::Summary { side: Side::Closelab, .. })));

        let mut broken = JsonSink::new(BrokenPipe);
        broken.event(&e);
        broken.event(&e);
        assert_eq!(broken.error().map(|e| e.kind()), Some(io::ErrorKind::BrokenPipe));
    }
}
