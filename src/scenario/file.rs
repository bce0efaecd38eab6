//! Scenario files: a close bug described in TOML, without Rust. Every
//! built-in scenario is such a file shipped inside the binary
//! (`scenarios/*.toml`), so the format is proved on all of them.
//!
//! ```toml
//! name = "lost-final-ack"
//! summary = "closelab's final ACK is dropped: Linux retransmits its FIN"
//!
//! [lab]
//! peer_sysctl = ["net.ipv4.tcp_fin_timeout=3"]   # Linux namespace only
//! slow = "20ms"                                   # hold each segment (observe Linux states)
//! timeout = "20s"                                 # give up (error) after this long
//!
//! [closelab]
//! mode = "listen"              # or "connect" (to the Linux listener; `send = BYTES` first,
//!                              # `count = N` connections, `local_port = P`)
//! app = "echo"                 # echo, sink, source:BYTES, hello, http
//! close = "active"             # active, passive, never, abort, half
//! close_after = "200ms"
//! rst_on_unread = false
//! keepalive = "1s"             # optional
//! timeout = "5s"               # optional smoltcp user timeout
//! time_wait_model = "linux"    # or "smoltcp" (smoltcp's own TIME-WAIT socket, 10 s)
//! time_wait = "60s"            # linux model: TIME-WAIT length (default 60s)
//! rfc1337 = false              # linux model: ignore an RST in TIME-WAIT
//! max_tw = 262144              # linux model: TIME-WAIT table size
//! time_wait_syn = "accept"     # smoltcp model: or "drop"
//! fin_timeout = "60s"          # linux model: orphaned FIN-WAIT-2 (tcp_fin_timeout)
//! retries = 15                 # linux model: tcp_retries2
//! orphan_retries = 0           # linux model: tcp_orphan_retries (0 means 8)
//! synack_retries = 5           # linux model: tcp_synack_retries
//! faults = ["drop out ack after-fin 1st"]
//!
//! [linux]
//! steps = ["connect", "send 5", "read 5", "read-eof", "sleep 200ms", "close"]
//!
//! [done]                       # the run is over when all of these hold
//! when = ["linux-done", "linux-gone", "reached closelab TIME-WAIT"]
//!
//! [[expect]]
//! path = "closelab FIN-WAIT-1 FIN-WAIT-2 TIME-WAIT"
//! [[expect]]
//! segments = "in F."
//! min = 2
//! ```
//!
//! Errors name the file's line. Parsing is pure: addresses are filled in by
//! the runner from the lab.

use std::fmt;
use std::time::Duration as StdDuration;

use serde::Deserialize;
use smoltcp::time::Duration;
use toml::Spanned;

use super::Expect;
use crate::endpoint::timewait::TwConfig;
use crate::endpoint::{AppKind, ClosePolicy, Policy, TimeWaitModel, TimeWaitSyn};
use crate::event::{Dir, Side, TcpState};
use crate::fault::FaultRule;

/// The built-in scenarios, as shipped.
pub const BUILTIN: &[(&str, &str)] = &[
    ("active-close", include_str!("../../scenarios/active-close.toml")),
    ("passive-close", include_str!("../../scenarios/passive-close.toml")),
    ("close-wait-leak", include_str!("../../scenarios/close-wait-leak.toml")),
    ("close-wait-leak-shutdown", include_str!("../../scenarios/close-wait-leak-shutdown.toml")),
    ("simultaneous-close", include_str!("../../scenarios/simultaneous-close.toml")),
    ("lost-final-ack", include_str!("../../scenarios/lost-final-ack.toml")),
    ("lost-final-ack-linux", include_str!("../../scenarios/lost-final-ack-linux.toml")),
    ("lost-fin", include_str!("../../scenarios/lost-fin.toml")),
    ("rst-on-unread", include_str!("../../scenarios/rst-on-unread.toml")),
    ("rst-on-unread-smoltcp", include_str!("../../scenarios/rst-on-unread-smoltcp.toml")),
    ("rst-on-unread-linux", include_str!("../../scenarios/rst-on-unread-linux.toml")),
    ("linger-abort", include_str!("../../scenarios/linger-abort.toml")),
    ("half-close", include_str!("../../scenarios/half-close.toml")),
    ("time-wait-syn", include_str!("../../scenarios/time-wait-syn.toml")),
    ("time-wait-syn-smoltcp", include_str!("../../scenarios/time-wait-syn-smoltcp.toml")),
    ("time-wait-assassination", include_str!("../../scenarios/time-wait-assassination.toml")),
    ("time-wait-assassination-linux", include_str!("../../scenarios/time-wait-assassination-linux.toml")),
    ("time-wait-assassination-rfc1337", include_str!("../../scenarios/time-wait-assassination-rfc1337.toml")),
    (
        "time-wait-assassination-rfc1337-closelab",
        include_str!("../../scenarios/time-wait-assassination-rfc1337-closelab.toml"),
    ),
    ("time-wait-syn-linux", include_str!("../../scenarios/time-wait-syn-linux.toml")),
    ("fin-retransmit-forever", include_str!("../../scenarios/fin-retransmit-forever.toml")),
    ("fin-retransmit-linux", include_str!("../../scenarios/fin-retransmit-linux.toml")),
    ("fin-timeout-orphan", include_str!("../../scenarios/fin-timeout-orphan.toml")),
    ("fin-timeout-linux", include_str!("../../scenarios/fin-timeout-linux.toml")),
    ("keepalive-dead-peer", include_str!("../../scenarios/keepalive-dead-peer.toml")),
    ("crawler-close-wait-leak", include_str!("../../scenarios/crawler-close-wait-leak.toml")),
];

/// A Linux step, with the closelab address left symbolic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// connect() to closelab's port.
    Connect,
    /// connect() to closelab's port from this local port (SO_REUSEADDR).
    ConnectFrom(u16),
    /// listen() on the Linux host's address, on the scenario's port.
    Listen,
    Accept,
    Send(usize),
    SendText(String),
    Read(usize),
    ReadEof,
    /// read() until an error (e.g. the connection timed out).
    ReadError,
    Shutdown,
    Close,
    LingerClose,
    Sleep(StdDuration),
    /// SO_KEEPALIVE, with TCP_KEEPIDLE / TCP_KEEPINTVL / TCP_KEEPCNT when
    /// given (otherwise the namespace's tcp_keepalive_* sysctls apply).
    Keepalive(Option<(u32, u32, u32)>),
    /// Take the Linux host's link down (the peer vanishes) / up again.
    LinkDown,
    LinkUp,
}

/// When a run is over.
#[derive(Clone, Debug, PartialEq)]
pub enum Done {
    /// The Linux script has finished.
    LinuxDone,
    /// No Linux socket of the scenario is open.
    LinuxGone,
    /// `side` reached `state` at some point.
    Reached(Side, TcpState),
    /// At least this long since the start.
    Time(f64),
    /// At least `secs` after `side` reached `state`.
    After(Side, TcpState, f64),
    /// The crawler (`mode = "crawl"`) has tried every URL.
    CrawlDone,
}

/// How closelab takes part.
#[derive(Clone, Debug, PartialEq)]
pub enum Mode {
    Listen,
    /// Connect `count` times, one after the other, from `local_port` if
    /// given, sending `send` bytes first each time.
    Connect {
        send: usize,
        count: usize,
        local_port: Option<u16>,
    },
    /// The HTTP crawler against the web server of `[lab] server`.
    Crawl(CrawlSpec),
}

/// The crawler of a `mode = "crawl"` scenario (the server's address is the
/// runner's business).
#[derive(Clone, Debug, PartialEq)]
pub struct CrawlSpec {
    pub paths: Vec<String>,
    pub pool: usize,
    pub rate: Option<f64>,
    pub on_error: crate::endpoint::crawl::OnError,
    pub http: crate::endpoint::http::HttpMode,
    pub budget: usize,
}

/// A real web server on the Linux host (`[lab] server`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerSpec {
    pub kind: crate::config::ServerKind,
    pub keepalive_timeout: Option<StdDuration>,
}

/// A parsed scenario.
#[derive(Clone, Debug)]
pub struct ScenarioSpec {
    pub name: String,
    pub summary: String,
    pub explain: Option<String>,
    pub peer_sysctls: Vec<(String, String)>,
    pub slow: Option<Duration>,
    pub timeout: StdDuration,
    pub mode: Mode,
    pub server: Option<ServerSpec>,
    pub app: AppKind,
    pub policy: Policy,
    pub keep_alive: Option<Duration>,
    pub user_timeout: Option<Duration>,
    pub time_wait_syn: TimeWaitSyn,
    pub time_wait_model: TimeWaitModel,
    pub time_wait: TwConfig,
    pub close_timers: crate::endpoint::CloseTimers,
    pub faults: Vec<FaultRule>,
    pub steps: Vec<Step>,
    pub done: Vec<Done>,
    pub expects: Vec<Expect>,
}

/// A mistake in a scenario file: the line and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    name: Spanned<String>,
    summary: String,
    explain: Option<String>,
    #[serde(default)]
    lab: RawLab,
    #[serde(default)]
    closelab: RawCloselab,
    #[serde(default)]
    linux: RawLinux,
    done: RawDone,
    #[serde(default)]
    expect: Vec<Spanned<RawExpect>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLab {
    #[serde(default)]
    peer_sysctl: Vec<Spanned<String>>,
    slow: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    server: Option<Spanned<String>>,
    server_keepalive_timeout: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCloselab {
    #[serde(default)]
    urls: Vec<Spanned<String>>,
    generate_urls: Option<usize>,
    missing_every: Option<usize>,
    pool: Option<usize>,
    rate: Option<f64>,
    on_error: Option<Spanned<String>>,
    http: Option<Spanned<String>>,
    max_conns: Option<usize>,
    mode: Option<Spanned<String>>,
    send: Option<Spanned<String>>,
    count: Option<usize>,
    local_port: Option<u16>,
    app: Option<Spanned<String>>,
    close: Option<Spanned<String>>,
    close_after: Option<Spanned<String>>,
    #[serde(default)]
    rst_on_unread: bool,
    keepalive: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    time_wait_syn: Option<Spanned<String>>,
    time_wait_model: Option<Spanned<String>>,
    time_wait: Option<Spanned<String>>,
    #[serde(default)]
    rfc1337: bool,
    max_tw: Option<usize>,
    fin_timeout: Option<Spanned<String>>,
    retries: Option<u32>,
    orphan_retries: Option<u32>,
    synack_retries: Option<u32>,
    #[serde(default)]
    faults: Vec<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLinux {
    #[serde(default)]
    steps: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDone {
    when: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExpect {
    path: Option<Spanned<String>>,
    never: Option<Spanned<String>>,
    segments: Option<Spanned<String>>,
    min: Option<usize>,
    max: Option<usize>,
    fault: Option<bool>,
    received: Option<usize>,
    reached: Option<Spanned<String>>,
    within: Option<Spanned<String>>,
    backoff: Option<Spanned<String>>,
    linux_time_wait_syn: Option<bool>,
    in_state: Option<Spanned<String>>,
    note: Option<String>,
}

/// Parses a scenario file. An error is one line: control characters the
/// file's strings carry into a message (`"li\nux-done"`) are escaped
/// (found by fuzzing).
pub fn parse(text: &str) -> Result<ScenarioSpec, FileError> {
    parse_lines(text).map_err(|e| FileError { line: e.line, message: crate::view::ladder::one_line(&e.message) })
}

fn parse_lines(text: &str) -> Result<ScenarioSpec, FileError> {
    let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
    let raw: Raw = toml::from_str(text).map_err(|e| FileError {
        line: e.span().map(|s| line_of(s.start)).unwrap_or(1),
        message: e.message().trim().to_string(),
    })?;
    let err = |span: std::ops::Range<usize>, message: String| FileError { line: line_of(span.start), message };
    // Parses a Spanned<String> with `f`, turning its error into a line error.
    macro_rules! field {
        ($s:expr, $f:expr) => {{
            let s: &Spanned<String> = $s;
            ($f)(s.get_ref().as_str()).map_err(|m: String| err(s.span(), m))?
        }};
    }
    let dur = |s: &str| crate::config::parse_duration(s).map_err(String::from);
    let std_dur = |s: &str| {
        crate::config::parse_duration(s).map(|d| StdDuration::from_micros(d.total_micros())).map_err(String::from)
    };

    let name = raw.name.get_ref().clone();
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(err(raw.name.span(), format!("invalid name `{name}` (letters, digits, `-`, `_`)")));
    }
    let mut peer_sysctls = Vec::new();
    for s in &raw.lab.peer_sysctl {
        let kv = field!(s, |v: &str| crate::config::parse_peer_sysctl(v).map_err(|e| e.to_string()));
        peer_sysctls.push(kv);
    }
    let slow = match &raw.lab.slow {
        Some(s) => Some(field!(s, dur)).filter(|d| *d > Duration::ZERO),
        None => Some(Duration::from_millis(20)),
    };
    let timeout = match &raw.lab.timeout {
        Some(s) => field!(s, std_dur),
        None => StdDuration::from_secs(20),
    };
    let c = &raw.closelab;
    let send = match &c.send {
        Some(s) => field!(s, |v: &str| crate::config::parse_bytes(v).map_err(String::from)),
        None => 0,
    };
    let mode = match c.mode.as_ref().map(|m| (m, m.get_ref().as_str())) {
        None | Some((_, "listen")) => Mode::Listen,
        Some((_, "connect")) => Mode::Connect { send, count: c.count.unwrap_or(1).max(1), local_port: c.local_port },
        Some((m, "crawl")) => Mode::Crawl(crawl_spec(c).map_err(|e| err(m.span(), e))?),
        Some((m, other)) => {
            return Err(err(m.span(), format!("invalid mode `{other}` (expected listen, connect or crawl)")));
        }
    };
    let server = match &raw.lab.server {
        Some(s) => Some(ServerSpec {
            kind: field!(s, crate::config::ServerKind::parse),
            keepalive_timeout: match &raw.lab.server_keepalive_timeout {
                Some(k) => Some(field!(k, std_dur)),
                None => None,
            },
        }),
        None => None,
    };
    if let (Mode::Crawl(_), None, Some(m)) = (&mode, &server, &c.mode) {
        return Err(err(
            m.span(),
            "mode = \"crawl\" needs a web server: [lab] server = \"apache\", \"nginx\" or \"python\"".into(),
        ));
    }
    let app = match &c.app {
        Some(s) => field!(s, AppKind::parse),
        None => AppKind::Echo,
    };
    let close = match &c.close {
        Some(s) => field!(s, ClosePolicy::parse),
        None => ClosePolicy::Passive,
    };
    let close_after = match &c.close_after {
        Some(s) => Some(field!(s, dur)),
        None => None,
    };
    let keep_alive = match &c.keepalive {
        Some(s) => Some(field!(s, |v: &str| crate::config::parse_keepalive(v).map_err(String::from))),
        None => None,
    };
    let user_timeout = match &c.timeout {
        Some(s) => Some(field!(s, |v: &str| crate::config::parse_timer(v, "timeout").map_err(String::from))),
        None => None,
    };
    // Errors point at the first TIME-WAIT option given (the rules are
    // config::time_wait's, shared with the CLI).
    let tw_span = [&c.time_wait_model, &c.time_wait, &c.time_wait_syn, &c.fin_timeout]
        .into_iter()
        .flatten()
        .map(|v| v.span())
        .next()
        .unwrap_or(0..0);
    let close_settings = crate::config::time_wait(&crate::config::TimeWaitOptions {
        model: c.time_wait_model.as_ref().map(|v| v.get_ref().as_str()),
        len: c.time_wait.as_ref().map(|v| v.get_ref().as_str()),
        rfc1337: c.rfc1337,
        max: c.max_tw,
        syn: c.time_wait_syn.as_ref().map(|v| v.get_ref().as_str()),
        fin_timeout: c.fin_timeout.as_ref().map(|v| v.get_ref().as_str()),
        retries: c.retries,
        orphan_retries: c.orphan_retries,
        synack_retries: c.synack_retries,
    })
    .map_err(|m| err(tw_span, m.to_string()))?;
    let mut faults = Vec::new();
    for f in &c.faults {
        faults.push(field!(f, |s: &str| FaultRule::parse(s).map_err(|e| e.to_string())));
    }
    let mut steps = Vec::new();
    for s in &raw.linux.steps {
        steps.push(field!(s, parse_step));
    }
    let mut done = Vec::new();
    for d in &raw.done.when {
        done.push(field!(d, parse_done));
    }
    let mut expects = Vec::new();
    for e in &raw.expect {
        let span = e.span();
        let x = e.get_ref();
        let mut got = Vec::new();
        if let Some(p) = &x.path {
            got.push(field!(p, |s: &str| {
                let (side, rest) = side_and_rest(s)?;
                let states = rest.split_whitespace().map(state).collect::<Result<Vec<_>, _>>()?;
                if states.is_empty() {
                    return Err("path needs at least one state".into());
                }
                Ok(Expect::Path { side, states })
            }));
        }
        if let Some(n) = &x.never {
            got.push(field!(n, |s: &str| {
                let (side, st) = side_state(s)?;
                Ok(Expect::Never { side, state: st })
            }));
        }
        if let Some(sg) = &x.segments {
            let (min, max) = (x.min.unwrap_or(1), x.max);
            got.push(field!(sg, |s: &str| {
                let (dir, flags) = dir_flags(s)?;
                Ok(Expect::Segments { dir, flags, min, max })
            }));
        }
        if let Some(b) = &x.backoff {
            let min = x.min.unwrap_or(3);
            got.push(field!(b, |s: &str| {
                let (dir, flags) = dir_flags(s)?;
                Ok(Expect::Backoff { dir, flags, min })
            }));
        }
        if x.fault == Some(true) {
            got.push(Expect::FaultApplied);
        }
        if x.linux_time_wait_syn == Some(true) {
            got.push(Expect::LinuxTimeWaitSyn);
        }
        if let Some(n) = x.received {
            got.push(Expect::Received { bytes: n });
        }
        if let Some(st) = &x.in_state {
            let (side, state) = field!(st, side_state);
            got.push(Expect::InState { side, state, min: x.min.unwrap_or(1), max: x.max });
        }
        if let Some(t) = &x.note {
            got.push(Expect::Notes { text: t.clone(), min: x.min.unwrap_or(1), max: x.max });
        }
        if let Some(r) = &x.reached {
            let (side, st) = field!(r, side_state);
            let (from, to) = match &x.within {
                Some(w) => field!(w, |s: &str| {
                    let (a, b) =
                        s.split_once("..").ok_or_else(|| format!("invalid time range `{s}` (expected e.g. 2s..5s)"))?;
                    let secs = |v: &str| crate::config::parse_duration(v).map(|d| d.total_micros() as f64 / 1e6);
                    Ok((secs(a)?, secs(b)?))
                }),
                None => (0.0, f64::INFINITY),
            };
            got.push(Expect::Reached { side, state: st, from, to });
        } else if let Some(w) = &x.within {
            return Err(err(w.span(), "`within` needs `reached`".into()));
        }
        match got.len() {
            1 => expects.push(got.pop().expect("one")),
            0 => return Err(err(span, "an [[expect]] needs one of path, never, segments, backoff, fault, received, reached, linux_time_wait_syn, in_state, note".into())),
            _ => return Err(err(span, "one kind of expectation per [[expect]]".into())),
        }
    }
    Ok(ScenarioSpec {
        name,
        summary: raw.summary,
        explain: raw.explain,
        peer_sysctls,
        slow,
        timeout,
        mode,
        server,
        app,
        policy: Policy { close, close_after, rst_on_unread: c.rst_on_unread },
        keep_alive,
        user_timeout,
        time_wait_syn: close_settings.syn,
        time_wait_model: close_settings.model,
        time_wait: close_settings.time_wait,
        close_timers: close_settings.timers,
        faults,
        steps,
        done,
        expects,
    })
}

/// The crawler's settings of `[closelab]`: `urls` and/or `generate_urls = N`
/// (`/files/0001.txt` … with every `missing_every`-th a `/missing/N`).
fn crawl_spec(c: &RawCloselab) -> Result<CrawlSpec, String> {
    use crate::endpoint::crawl::OnError;
    use crate::endpoint::http::HttpMode;
    let mut paths = Vec::new();
    for u in &c.urls {
        crate::endpoint::http::validate_path(u.get_ref())?;
        paths.push(u.get_ref().clone());
    }
    if let Some(n) = c.generate_urls {
        if n == 0 || n > 100_000 {
            return Err(format!("invalid generate_urls {n} (1 to 100000)"));
        }
        let every = c.missing_every.unwrap_or(0);
        paths.extend(
            (1..=n).map(|i| {
                if every > 0 && i % every == 0 { format!("/missing/{i}") } else { format!("/files/{i:04}.txt") }
            }),
        );
    }
    if paths.is_empty() {
        return Err("mode = \"crawl\" needs urls = [\"/PATH\", …] or generate_urls = N".into());
    }
    let on_error = match c.on_error.as_ref().map(|s| s.get_ref().as_str()) {
        None | Some("release") => OnError::Release,
        Some("leak") => OnError::Leak,
        Some(o) => return Err(format!("invalid on_error `{o}` (expected release or leak)")),
    };
    let http = match c.http.as_ref().map(|s| s.get_ref().as_str()) {
        None | Some("keep-alive") => HttpMode::KeepAlive,
        Some("close") => HttpMode::Close,
        Some("1.0") => HttpMode::Http10,
        Some(o) => return Err(format!("invalid http `{o}` (expected keep-alive, close or 1.0)")),
    };
    let pool = c.pool.unwrap_or(1);
    if !(1..=10_000).contains(&pool) {
        return Err(format!("invalid pool {pool} (1 to 10000)"));
    }
    if let Some(r) = c.rate
        && !(r.is_finite() && r > 0.0 && r <= 100_000.0)
    {
        return Err(format!("invalid rate {r} (requests per second, above 0 and at most 100000)"));
    }
    let budget = c.max_conns.unwrap_or(1024);
    if budget == 0 {
        return Err("max_conns must be at least 1".into());
    }
    Ok(CrawlSpec { paths, pool, rate: c.rate, on_error, http, budget })
}

fn side(s: &str) -> Result<Side, String> {
    match s {
        "closelab" => Ok(Side::Closelab),
        "linux" => Ok(Side::Linux),
        _ => Err(format!("unknown side `{s}` (expected closelab or linux)")),
    }
}

fn state(s: &str) -> Result<TcpState, String> {
    TcpState::parse(s).ok_or_else(|| format!("unknown state `{s}`"))
}

fn side_and_rest(s: &str) -> Result<(Side, &str), String> {
    let (a, rest) = s.trim().split_once(' ').ok_or_else(|| format!("expected `SIDE STATE…`, got `{s}`"))?;
    Ok((side(a)?, rest.trim()))
}

fn side_state(s: &str) -> Result<(Side, TcpState), String> {
    let (sd, rest) = side_and_rest(s)?;
    Ok((sd, state(rest)?))
}

fn dir_flags(s: &str) -> Result<(Dir, String), String> {
    let (d, flags) =
        s.trim().split_once(' ').ok_or_else(|| format!("expected `in FLAGS` or `out FLAGS`, got `{s}`"))?;
    let dir = match d {
        "in" => Dir::In,
        "out" => Dir::Out,
        _ => return Err(format!("unknown direction `{d}` (expected in or out)")),
    };
    crate::wire::Flags::parse(flags).ok_or_else(|| format!("invalid flags `{flags}` (tcpdump letters: S F R P .)"))?;
    Ok((dir, flags.to_string()))
}

/// Parses one Linux step.
pub fn parse_step(s: &str) -> Result<Step, String> {
    let mut words = s.split_whitespace();
    let verb = words.next().unwrap_or("");
    let rest: Vec<&str> = words.collect();
    let one = |what: &str| -> Result<&str, String> {
        match rest.as_slice() {
            [v] => Ok(*v),
            _ => Err(format!("step `{verb}` needs {what}")),
        }
    };
    let none = || if rest.is_empty() { Ok(()) } else { Err(format!("step `{verb}` takes no argument")) };
    Ok(match verb {
        "connect" => {
            none()?;
            Step::Connect
        }
        "connect-from" => {
            Step::ConnectFrom(one("a local port")?.parse().map_err(|_| format!("invalid port in `{s}`"))?)
        }
        "listen" => {
            none()?;
            Step::Listen
        }
        "accept" => {
            none()?;
            Step::Accept
        }
        "send" => Step::Send(crate::config::parse_bytes(one("a byte count")?)?),
        "send-text" => {
            let text = s.trim_start().strip_prefix("send-text").unwrap_or("").trim_start();
            Step::SendText(text.replace("\\r", "\r").replace("\\n", "\n"))
        }
        "read" => Step::Read(crate::config::parse_bytes(one("a byte count")?)?),
        "read-eof" => {
            none()?;
            Step::ReadEof
        }
        "read-error" => {
            none()?;
            Step::ReadError
        }
        "shutdown" => {
            none()?;
            Step::Shutdown
        }
        "close" => {
            none()?;
            Step::Close
        }
        "linger-close" => {
            none()?;
            Step::LingerClose
        }
        "sleep" => {
            let d = crate::config::parse_duration(one("a duration")?)?;
            Step::Sleep(StdDuration::from_micros(d.total_micros()))
        }
        "keepalive" if rest.is_empty() => Step::Keepalive(None),
        "keepalive" => {
            let (mut idle, mut intvl, mut cnt) = (None, None, None);
            for w in &rest {
                let (k, v) = w.split_once('=').ok_or_else(|| format!("expected idle=N intvl=N cnt=N, got `{w}`"))?;
                let n: u32 = v.trim_end_matches('s').parse().map_err(|_| format!("invalid number in `{w}`"))?;
                match k {
                    "idle" => idle = Some(n),
                    "intvl" => intvl = Some(n),
                    "cnt" => cnt = Some(n),
                    _ => return Err(format!("unknown keepalive setting `{k}` (idle, intvl, cnt)")),
                }
            }
            match (idle, intvl, cnt) {
                (Some(idle), Some(intvl), Some(cnt)) => Step::Keepalive(Some((idle, intvl, cnt))),
                _ => return Err("keepalive needs idle=SECS intvl=SECS cnt=N".into()),
            }
        }
        "link-down" => {
            none()?;
            Step::LinkDown
        }
        "link-up" => {
            none()?;
            Step::LinkUp
        }
        _ => {
            return Err(format!(
                "unknown step `{verb}` (expected connect, connect-from PORT, listen, accept, send N, send-text TEXT, read N, read-eof, read-error, shutdown, close, linger-close, sleep D, keepalive [idle=S intvl=S cnt=N], link-down, link-up)"
            ));
        }
    })
}

/// Parses one `done` condition.
pub fn parse_done(s: &str) -> Result<Done, String> {
    let words: Vec<&str> = s.split_whitespace().collect();
    Ok(match words.as_slice() {
        ["linux-done"] => Done::LinuxDone,
        ["linux-gone"] => Done::LinuxGone,
        ["crawl-done"] => Done::CrawlDone,
        ["reached", sd, st] => Done::Reached(side(sd)?, state(st)?),
        ["time", d] => Done::Time(crate::config::parse_duration(d)?.total_micros() as f64 / 1e6),
        ["after", sd, st, d] => Done::After(
            side(sd)?,
            state(st)?,
            crate::config::parse_duration(d.trim_start_matches('+'))?.total_micros() as f64 / 1e6,
        ),
        _ => {
            return Err(format!(
                "unknown condition `{s}` (expected linux-done, linux-gone, crawl-done, reached SIDE STATE, time D, after SIDE STATE D)"
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_every_builtin_parses_and_is_named_as_its_file() {
        for (name, text) in BUILTIN {
            let spec = parse(text).unwrap_or_else(|e| panic!("{name}.toml: {e}"));
            assert_eq!(&spec.name, name);
            assert!(!spec.expects.is_empty(), "{name} has no expectation");
            assert!(!spec.done.is_empty(), "{name} has no end condition");
        }
    }

    #[test]
    fn test_errors_name_the_line() {
        let text = "name = \"x\"\nsummary = \"s\"\n[linux]\nsteps = [\"connect\", \"jump\"]\n[done]\nwhen = [\"linux-done\"]\n";
        let e = parse(text).unwrap_err();
        assert_eq!(e.line, 4);
        assert!(e.message.starts_with("unknown step `jump`"), "{}", e.message);

        let text =
            "name = \"x\"\nsummary = \"s\"\n[closelab]\nfaults = [\"drop out akc\"]\n[done]\nwhen = [\"linux-done\"]\n";
        let e = parse(text).unwrap_err();
        assert_eq!(e.line, 4);
        assert!(e.message.contains("unknown word `akc`"), "{}", e.message);

        let text = "name = \"x\"\nsummary = \"s\"\n[done]\nwhen = [\"linux-done\"]\n\n[[expect]]\npath = \"closelab FIN-WAIT-9\"\n";
        let e = parse(text).unwrap_err();
        assert_eq!(e, FileError { line: 7, message: "unknown state `FIN-WAIT-9`".into() });

        let text = "name = \"x\"\nsummary = \"s\"\nbogus = 1\n[done]\nwhen = [\"linux-done\"]\n";
        let e = parse(text).unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.message.contains("unknown field `bogus`"), "{}", e.message);

        let e = parse("name = \"x\"\nsummary = \n").unwrap_err();
        assert_eq!(e.line, 2);

        // Found by fuzzing: a string's newline stays out of the one-line error.
        let text = "name = \"x\"\nsummary = \"s\"\n[done]\nwhen = [\"li\\nux-done\"]\n";
        let e = parse(text).unwrap_err();
        assert_eq!(e.line, 4);
        assert!(e.message.starts_with("unknown condition `li\\nux-done` (expected"), "{}", e.message);
    }

    #[test]
    fn test_steps_and_conditions() {
        assert_eq!(parse_step("send 4k"), Ok(Step::Send(4096)));
        assert_eq!(
            parse_step("send-text GET / HTTP/1.0\\r\\n\\r\\n"),
            Ok(Step::SendText("GET / HTTP/1.0\r\n\r\n".into()))
        );
        assert_eq!(parse_step("keepalive idle=1 intvl=1 cnt=3"), Ok(Step::Keepalive(Some((1, 1, 3)))));
        assert!(parse_step("close now").unwrap_err().contains("takes no argument"));
        assert_eq!(parse_done("after linux FIN-WAIT-2 +0.5s"), Ok(Done::After(Side::Linux, TcpState::FinWait2, 0.5)));
        assert_eq!(parse_done("reached closelab TIME-WAIT"), Ok(Done::Reached(Side::Closelab, TcpState::TimeWait)));
        assert!(parse_done("whenever").is_err());
    }
}
