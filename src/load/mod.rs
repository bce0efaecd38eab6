//! `closelab load`, the pure part: what a load run is (validated options),
//! rate pacing, the per-second samples of both sides, connect-time
//! percentiles, peaks, the text and JSON renderings, and the built-in
//! stories with their expectations. No I/O and no clock: the OS side
//! (`sys::loadgen`, `cmd::load`) passes times in and reads results out, so
//! everything here is testable without root.

pub mod story;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use crate::event::TcpState;

/// Who listens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Server {
    /// closelab's endpoint listens; the load generator runs on kernel sockets
    /// in the Linux namespace.
    Closelab,
    /// A Linux kernel listener in the Linux namespace; closelab's endpoint is
    /// the client.
    Linux,
    /// A Linux kernel listener in closelab's namespace (on the lab router
    /// address), the generator in the Linux namespace: the same wire without
    /// closelab, the baseline for closelab's rate.
    Kernel,
}

impl Server {
    pub fn name(self) -> &'static str {
        match self {
            Server::Closelab => "closelab",
            Server::Linux => "linux",
            Server::Kernel => "kernel",
        }
    }
}

/// Who closes first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Closer {
    Client,
    Server,
}

impl Closer {
    pub fn name(self) -> &'static str {
        match self {
            Closer::Client => "client",
            Closer::Server => "server",
        }
    }
}

/// Everything a load run needs, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadSpec {
    pub server: Server,
    pub closer: Closer,
    /// The side that does not close first never closes (CLOSE-WAIT leak).
    pub leak: bool,
    /// New connections per second; `None`: as fast as possible.
    pub rate: Option<f64>,
    /// Connections in flight at most (handshake to close on the client).
    pub concurrency: usize,
    pub duration: Option<Duration>,
    pub count: Option<u64>,
    pub request: usize,
    pub response: usize,
    /// HTTP GETs against closelab's http app (server closelab only).
    pub http: bool,
    /// HTTP/1.1 keep-alive: this many requests per connection (`None`:
    /// one HTTP/1.0 request; the server closes after it).
    pub keep_alive: Option<u32>,
    pub port: u16,
    /// Sysctls for the Linux namespace (validated by the lab).
    pub peer_sysctls: Vec<(String, String)>,
    /// The Linux host's ip_local_port_range.
    pub ports: Option<(u16, u16)>,
    /// listen() backlog of a Linux listener.
    pub backlog: u32,
    /// Fault rules on closelab's packet path (as typed; the endpoint parses).
    pub faults: Vec<String>,
    /// A handshake that has not completed after this long counts as a timeout.
    pub connect_timeout: Duration,
    /// closelab's buffer per connection.
    pub buffer: usize,
    /// closelab's TIME-WAIT table (length, size).
    pub time_wait: crate::endpoint::timewait::TwConfig,
    /// closelab sends RFC 7323 timestamps.
    pub timestamps: bool,
}

impl Default for LoadSpec {
    fn default() -> LoadSpec {
        LoadSpec {
            server: Server::Closelab,
            closer: Closer::Server,
            leak: false,
            rate: Some(1000.0),
            concurrency: 256,
            duration: Some(Duration::from_secs(10)),
            count: None,
            request: 0,
            response: 0,
            http: false,
            keep_alive: None,
            port: 8000,
            peer_sysctls: Vec::new(),
            ports: None,
            backlog: 4096,
            faults: Vec::new(),
            connect_timeout: Duration::from_secs(3),
            buffer: 2048,
            time_wait: crate::endpoint::timewait::TwConfig::default(),
            timestamps: false,
        }
    }
}

/// Largest rate accepted (far above what one core reaches).
pub const MAX_RATE: f64 = 10_000_000.0;
/// Most connections in flight.
pub const MAX_CONCURRENCY: usize = 60_000;
/// Requests per connection `--keep-alive` takes at most.
pub const MAX_KEEP_ALIVE: u32 = 100_000;
/// Longest run.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// `500`, `500/s`, `2k/s`, `1.5k`: connections per second.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    let err = || format!("invalid rate `{s}` (expected connections per second, e.g. 500/s, 2k/s or --max)");
    let t = s.trim();
    let t = t.strip_suffix("/s").unwrap_or(t);
    let (num, mult) = match t.strip_suffix(['k', 'K']) {
        Some(n) => (n, 1000.0),
        None => (t, 1.0),
    };
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(err());
    }
    let v: f64 = num.parse::<f64>().map_err(|_| err())? * mult;
    if !v.is_finite() || v <= 0.0 {
        return Err(format!("invalid rate `{s}`: must be above 0 (or use --max)"));
    }
    if v > MAX_RATE {
        return Err(format!("invalid rate `{s}`: at most {MAX_RATE} connections per second"));
    }
    Ok(v)
}

/// `LO-HI` within 1024..=65535, LO <= HI.
pub fn parse_ports(s: &str) -> Result<(u16, u16), String> {
    let err = |why: &str| format!("invalid port range `{s}`: {why}");
    let (lo, hi) = s.trim().split_once('-').ok_or_else(|| err("expected LO-HI, e.g. 20000-20999"))?;
    let lo: u32 = lo.trim().parse().map_err(|_| err("expected LO-HI, e.g. 20000-20999"))?;
    let hi: u32 = hi.trim().parse().map_err(|_| err("expected LO-HI, e.g. 20000-20999"))?;
    if lo > hi {
        return Err(err("empty (LO is above HI)"));
    }
    if lo < 1024 || hi > 65535 {
        return Err(err("ports must lie within 1024-65535"));
    }
    // Linux wants the two ends of different parity for an even split; a
    // range of one port is still a range.
    Ok((lo as u16, hi as u16))
}

/// A duration for load (`--duration`, `--connect-timeout`): above 0, at most a day.
pub fn parse_duration(what: &str, s: &str) -> Result<Duration, String> {
    let d = crate::config::parse_duration(s).map_err(|e| format!("{what}: {e}"))?;
    let d = Duration::from_micros(d.total_micros());
    if d.is_zero() {
        return Err(format!("{what} must be longer than 0s"));
    }
    if d > MAX_DURATION {
        return Err(format!("{what} {s} is too long (at most 24h)"));
    }
    Ok(d)
}

// ---------------------------------------------------------------------------
// Pacing

/// How many connections may have been started by a time: `rate` per second
/// from the start, one at once; unlimited without a rate. Late starts are
/// caught up (a burst) only up to `max_burst`, so a stall does not turn into
/// a flood afterwards.
#[derive(Clone, Debug)]
pub struct Pacer {
    rate: Option<f64>,
    /// Start of the schedule (moves forward when a burst is cut).
    origin: f64,
    issued: u64,
    max_burst: u64,
}

impl Pacer {
    pub fn new(rate: Option<f64>) -> Pacer {
        let max_burst = rate.map_or(u64::MAX, |r| ((r / 20.0).ceil() as u64).max(16));
        Pacer { rate, origin: 0.0, issued: 0, max_burst }
    }

    /// Connections to start now (`t` seconds after the start).
    pub fn due(&mut self, t: f64) -> u64 {
        let Some(rate) = self.rate else { return u64::MAX };
        let target = ((t - self.origin) * rate).floor() as u64 + 1;
        let due = target.saturating_sub(self.issued);
        if due > self.max_burst {
            // Forget what could not be started in time.
            let skip = due - self.max_burst;
            self.origin += skip as f64 / rate;
            return self.max_burst;
        }
        due
    }

    /// Record `n` started.
    pub fn started(&mut self, n: u64) {
        self.issued += n;
    }

    /// When the next connection is due (seconds), `None` when unpaced.
    pub fn next_at(&self) -> Option<f64> {
        self.rate.map(|r| self.origin + self.issued as f64 / r)
    }
}

// ---------------------------------------------------------------------------
// Connect-time histogram

/// Connect times in microseconds, in log-linear buckets (16 per power of
/// two: every percentile within ~4.5 %), constant memory.
#[derive(Clone, Debug)]
pub struct Histogram {
    buckets: Vec<u64>,
    count: u64,
    max: u64,
    sum: u128,
}

const SUB: u32 = 16;

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram { buckets: vec![0; 64 * SUB as usize], count: 0, max: 0, sum: 0 }
    }
}

impl Histogram {
    fn index(v: u64) -> usize {
        if v < SUB as u64 {
            return v as usize;
        }
        let msb = 63 - v.leading_zeros();
        let shift = msb - 4;
        let sub = ((v >> shift) as u32) - SUB;
        ((shift + 1) * SUB + sub) as usize
    }

    /// The largest value in bucket `i`.
    fn upper(i: usize) -> u64 {
        let i = i as u32;
        if i < SUB {
            return i as u64;
        }
        let shift = i / SUB - 1;
        let sub = (i % SUB + SUB) as u64;
        ((sub + 1) << shift) - 1
    }

    pub fn record(&mut self, micros: u64) {
        self.buckets[Self::index(micros)] += 1;
        self.count += 1;
        self.max = self.max.max(micros);
        self.sum += micros as u128;
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        self.count += other.count;
        self.max = self.max.max(other.max);
        self.sum += other.sum;
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    /// The `p`-th percentile (0..=100) in microseconds, `None` when empty:
    /// the upper edge of the bucket holding it, never above the maximum.
    pub fn percentile(&self, p: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((p / 100.0 * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(Self::upper(i).min(self.max));
            }
        }
        Some(self.max)
    }
}

// ---------------------------------------------------------------------------
// Counters of one side's application

/// What one side's application (the generator, or closelab's connector)
/// counted so far. Cumulative.
#[derive(Clone, Debug, Default)]
pub struct AppStats {
    pub started: u64,
    pub connected: u64,
    /// Connections the client finished (closed or saw closed).
    pub completed: u64,
    /// Errors by errno name (`EADDRNOTAVAIL`, `ECONNREFUSED`, `ECONNRESET`,
    /// `timeout`).
    pub errors: BTreeMap<String, u64>,
    pub connect_us: Histogram,
    pub in_flight: u64,
    /// Connections whose fd the application keeps without closing (--leak).
    pub leaked: u64,
    /// HTTP responses read in full (`--http`).
    pub requests: u64,
}

impl AppStats {
    pub fn error(&mut self, name: &str) {
        *self.errors.entry(name.to_string()).or_default() += 1;
    }

    pub fn errors_total(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// Text an errno is known by (`EADDRNOTAVAIL`), and what it means.
pub fn errno_meaning(name: &str) -> &'static str {
    match name {
        "EADDRNOTAVAIL" => "Cannot assign requested address",
        "ECONNREFUSED" => "Connection refused",
        "ECONNRESET" => "Connection reset by peer",
        "ETIMEDOUT" => "Connection timed out",
        "EMFILE" => "Too many open files",
        "timeout" => "handshake not done within --connect-timeout",
        _ => "",
    }
}

// ---------------------------------------------------------------------------
// Samples

/// Counts by state, indexed like [`TcpState::ALL`].
pub type StateCounts = [u64; 11];

pub fn state_index(s: TcpState) -> usize {
    TcpState::ALL.iter().position(|x| *x == s).unwrap_or(TcpState::ALL.len() - 1)
}

pub fn count_states(states: impl IntoIterator<Item = TcpState>) -> StateCounts {
    let mut c = [0; 11];
    for s in states {
        c[state_index(s)] += 1;
    }
    c
}

/// One second of a run: both sides' states and the client's counters.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Seconds since the start.
    pub t: f64,
    pub linux: StateCounts,
    pub closelab: StateCounts,
    /// Client counters, cumulative.
    pub started: u64,
    pub completed: u64,
    pub errors: BTreeMap<String, u64>,
    /// Connections completed per second since the previous sample.
    pub rate: f64,
    /// HTTP responses read, cumulative (`--http` runs only).
    pub requests: Option<u64>,
    /// HTTP responses per second since the previous sample.
    pub req_rate: f64,
    /// closelab's resident memory in bytes (the whole closelab process).
    pub rss: u64,
}

impl Sample {
    pub fn get(&self, linux: bool, s: TcpState) -> u64 {
        if linux { self.linux[state_index(s)] } else { self.closelab[state_index(s)] }
    }
}

fn counts_text(c: &StateCounts) -> String {
    let mut parts = Vec::new();
    for s in TcpState::ALL {
        let n = c[state_index(s)];
        if n > 0 && s != TcpState::Closed {
            parts.push(format!("{} {n}", s.netstat_name()));
        }
    }
    if parts.is_empty() { "-".to_string() } else { parts.join(" ") }
}

/// State counts as a JSON object: netstat names in [`TcpState::ALL`]'s
/// order, zero counts left out.
struct CountsJson<'a>(&'a StateCounts);

impl serde::Serialize for CountsJson<'_> {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        ser.collect_map(TcpState::ALL.iter().filter_map(|&s| {
            let n = self.0[state_index(s)];
            (n > 0 && s != TcpState::Closed).then_some((s.netstat_name(), n))
        }))
    }
}

/// `x` rounded to `places` decimals, for JSON figures.
fn round(x: f64, places: i32) -> f64 {
    let k = 10f64.powi(places);
    (x * k).round() / k
}

/// `EADDRNOTAVAIL 12 timeout 3`, or `-`.
fn errors_text(e: &BTreeMap<String, u64>) -> String {
    if e.is_empty() { "-".to_string() } else { e.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(" ") }
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// The per-second line: `t=3s linux: TIME_WAIT 900 | closelab: LISTEN 1 | 300 conn/s, 900 done, errors: - | rss 21.0 MB`.
pub fn sample_text(s: &Sample) -> String {
    let errors = errors_text(&s.errors);
    let requests = match s.requests {
        Some(n) => format!(", {n} requests ({:.0}/s)", s.req_rate),
        None => String::new(),
    };
    format!(
        "t={:<4} linux: {} | closelab: {} | {:.0} conn/s, {} done{requests}, errors: {} | rss {}",
        format!("{:.0}s", s.t),
        counts_text(&s.linux),
        counts_text(&s.closelab),
        s.rate,
        s.completed,
        errors,
        mb(s.rss)
    )
}

/// The per-second figures as a table, for a terminal that redraws it in
/// place: the client's counters, then both sides' counts by state (the
/// states either side has), netstat spelling.
pub fn sample_table(s: &Sample) -> String {
    let errors = errors_text(&s.errors);
    let requests = match s.requests {
        Some(n) => format!("  requests {n} ({:.0}/s)", s.req_rate),
        None => String::new(),
    };
    let mut out = format!(
        "t={:.0}s  {:.0} conn/s  done {}{requests}  errors {errors}  rss {}\n{:<12} {:>9} {:>9}",
        s.t,
        s.rate,
        s.completed,
        mb(s.rss),
        "state",
        "linux",
        "closelab"
    );
    for st in TcpState::ALL {
        let (l, c) = (s.linux[state_index(st)], s.closelab[state_index(st)]);
        if (l > 0 || c > 0) && st != TcpState::Closed {
            let _ = write!(out, "\n{:<12} {l:>9} {c:>9}", st.netstat_name());
        }
    }
    out
}

/// The per-second JSON line.
pub fn sample_json(s: &Sample) -> String {
    #[derive(serde::Serialize)]
    struct Line<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        t: f64,
        linux: CountsJson<'a>,
        closelab: CountsJson<'a>,
        started: u64,
        completed: u64,
        rate: f64,
        #[serde(skip_serializing_if = "Option::is_none")]
        requests: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        req_rate: Option<f64>,
        errors: &'a BTreeMap<String, u64>,
        rss: u64,
    }
    let line = Line {
        kind: "load-sample",
        t: round(s.t, 3),
        linux: CountsJson(&s.linux),
        closelab: CountsJson(&s.closelab),
        started: s.started,
        completed: s.completed,
        rate: round(s.rate, 1),
        requests: s.requests,
        req_rate: s.requests.map(|_| round(s.req_rate, 1)),
        errors: &s.errors,
        rss: s.rss,
    };
    serde_json::to_string(&line).expect("a sample serializes")
}

// ---------------------------------------------------------------------------
// Summary

/// The end of a run: totals, connect-time percentiles, each state's peak.
#[derive(Clone, Debug)]
pub struct Report {
    pub spec: LoadSpec,
    pub samples: Vec<Sample>,
    /// Seconds the generator ran.
    pub elapsed: f64,
    pub client: AppStats,
    /// Whether Ctrl-C ended the run.
    pub interrupted: bool,
    /// Packets the kernel dropped on the TUN's queue (never reached closelab).
    pub tun_dropped: Option<u64>,
    /// Errors of the sampler or generator that did not stop the run.
    pub notes: Vec<String>,
}

impl Report {
    /// The peak of a state over all samples.
    pub fn peak(&self, linux: bool, s: TcpState) -> u64 {
        self.samples.iter().map(|x| x.get(linux, s)).max().unwrap_or(0)
    }

    pub fn last(&self) -> Option<&Sample> {
        self.samples.last()
    }

    /// Completed connections per second over the whole run.
    pub fn rate(&self) -> f64 {
        if self.elapsed > 0.0 { self.client.completed as f64 / self.elapsed } else { 0.0 }
    }

    pub fn errors(&self, name: &str) -> u64 {
        self.client.errors.get(name).copied().unwrap_or(0)
    }

    fn peaks(&self, linux: bool) -> StateCounts {
        let mut p = [0; 11];
        for s in TcpState::ALL {
            p[state_index(s)] = self.peak(linux, s);
        }
        p
    }

    fn pct(&self, p: f64) -> String {
        match self.client.connect_us.percentile(p) {
            Some(us) => format!("{:.3} ms", us as f64 / 1000.0),
            None => "-".to_string(),
        }
    }

    /// The exit summary, several lines.
    pub fn text(&self) -> String {
        let c = &self.client;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "summary: {} started, {} connected, {} completed in {:.1}s ({:.0} conn/s){}",
            c.started,
            c.connected,
            c.completed,
            self.elapsed,
            self.rate(),
            if self.interrupted { ", interrupted" } else { "" }
        );
        if self.spec.http {
            let per = if c.completed > 0 { c.requests as f64 / c.completed as f64 } else { 0.0 };
            let rate = if self.elapsed > 0.0 { c.requests as f64 / self.elapsed } else { 0.0 };
            let _ = writeln!(out, "requests: {} HTTP responses ({rate:.0}/s, {per:.1} per connection)", c.requests);
        }
        let _ = writeln!(
            out,
            "connect time: p50 {} p90 {} p99 {} max {} ({} samples)",
            self.pct(50.0),
            self.pct(90.0),
            self.pct(99.0),
            if c.connect_us.count() > 0 { format!("{:.3} ms", c.connect_us.max() as f64 / 1000.0) } else { "-".into() },
            c.connect_us.count()
        );
        if c.errors.is_empty() {
            let _ = writeln!(out, "errors: none");
        } else {
            for (k, v) in &c.errors {
                let m = errno_meaning(k);
                let _ =
                    writeln!(out, "errors: {k} {v}{}", if m.is_empty() { String::new() } else { format!(" ({m})") });
            }
        }
        let _ = writeln!(out, "peak linux: {}", counts_text(&self.peaks(true)));
        let _ = writeln!(out, "peak closelab: {}", counts_text(&self.peaks(false)));
        let rss = self.samples.iter().map(|s| s.rss).max().unwrap_or(0);
        let _ = writeln!(out, "peak rss: {}", mb(rss));
        if let Some(d) = self.tun_dropped {
            let _ = writeln!(out, "tun queue drops: {d}");
        }
        if c.leaked > 0 {
            let _ = writeln!(out, "leaked (never closed by the client): {}", c.leaked);
        }
        for n in &self.notes {
            let _ = writeln!(out, "note: {n}");
        }
        out
    }

    /// The exit summary as one JSON line.
    pub fn json(&self) -> String {
        #[derive(serde::Serialize)]
        struct ConnectUs {
            p50: Option<u64>,
            p90: Option<u64>,
            p99: Option<u64>,
            max: u64,
        }
        #[derive(serde::Serialize)]
        struct Line<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            server: &'static str,
            closer: &'static str,
            started: u64,
            connected: u64,
            completed: u64,
            #[serde(skip_serializing_if = "Option::is_none")]
            requests: Option<u64>,
            elapsed: f64,
            rate: f64,
            connect_us: ConnectUs,
            errors: &'a BTreeMap<String, u64>,
            peak_linux: CountsJson<'a>,
            peak_closelab: CountsJson<'a>,
            peak_rss: u64,
            tun_dropped: Option<u64>,
            interrupted: bool,
            notes: &'a [String],
        }
        let c = &self.client;
        let (peak_linux, peak_closelab) = (self.peaks(true), self.peaks(false));
        let line = Line {
            kind: "load-summary",
            server: self.spec.server.name(),
            closer: self.spec.closer.name(),
            started: c.started,
            connected: c.connected,
            completed: c.completed,
            requests: self.spec.http.then_some(c.requests),
            elapsed: round(self.elapsed, 3),
            rate: round(self.rate(), 1),
            connect_us: ConnectUs {
                p50: c.connect_us.percentile(50.0),
                p90: c.connect_us.percentile(90.0),
                p99: c.connect_us.percentile(99.0),
                max: c.connect_us.max(),
            },
            errors: &c.errors,
            peak_linux: CountsJson(&peak_linux),
            peak_closelab: CountsJson(&peak_closelab),
            peak_rss: self.samples.iter().map(|s| s.rss).max().unwrap_or(0),
            tun_dropped: self.tun_dropped,
            interrupted: self.interrupted,
            notes: &self.notes,
        };
        serde_json::to_string(&line).expect("a summary serializes")
    }
}

#[cfg(test)]
mod tests;
