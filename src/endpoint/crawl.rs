//! The crawler: one HTTP client spread over many connections, with the
//! connection pool and release policies of a real client library
//! (Apache HttpClient's `PoolingHttpClientConnectionManager`, whose misuse
//! is the classic CLOSE_WAIT leak).
//!
//! Sans-IO, like the endpoint it drives: [`Crawler::tick`] takes `now` and
//! the [`Endpoint`], opens and reuses connections through its public API,
//! reads finished exchanges from [`Endpoint::take_http`] and says when it
//! wants to be called again. It never reads a clock; tests run it over the
//! in-memory link.
//!
//! Its state is per connection the crawler holds (its "file descriptors"):
//! opening, busy with a request, idle in the pool, or leaked (a non-2xx
//! response under `--on-error leak`: never reused, never closed, exactly
//! the seed's bug). Closed connections are the endpoint's business (FIN-WAIT,
//! TIME-WAIT, LAST-ACK) and no longer count against the budget, as a closed
//! fd does not.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use smoltcp::time::{Duration, Instant};

use super::http::{self, HttpError, HttpMode};
use super::{Endpoint, HttpDone};
use crate::event::{ConnId, TcpState};

/// What happens to a connection whose response was not 2xx.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnError {
    /// Release it like any other (back to the pool, or closed): the fix.
    Release,
    /// Never touch it again (the seed's bug): it stays open, and once the
    /// server closes it sits in CLOSE-WAIT until the process exits.
    Leak,
}

/// Everything the crawler needs, validated by the CLI.
#[derive(Clone, Debug)]
pub struct CrawlConfig {
    pub remote: SocketAddr,
    /// `Host:` header value.
    pub host: String,
    pub paths: Vec<String>,
    /// Connections used at once (busy or idle in the pool).
    pub pool: usize,
    pub mode: HttpMode,
    pub on_error: OnError,
    /// Close pooled connections idle this long (HttpClient's
    /// `evictIdleConnections`).
    pub evict_idle: Option<Duration>,
    /// Connections the crawler may hold open at once (leaked ones
    /// included): the file-descriptor limit's stand-in.
    pub budget: usize,
    /// Requests started per second (None: as fast as the pool allows).
    pub rate: Option<f64>,
    /// A request not answered this long after it was started (connect
    /// included) is aborted and counted as a timeout.
    pub timeout: Duration,
}

impl CrawlConfig {
    pub fn new(remote: SocketAddr, paths: Vec<String>) -> CrawlConfig {
        CrawlConfig {
            remote,
            host: remote.to_string(),
            paths,
            pool: 1,
            mode: HttpMode::KeepAlive,
            on_error: OnError::Release,
            evict_idle: None,
            budget: 1024,
            rate: None,
            timeout: Duration::from_secs(10),
        }
    }
}

/// Parses `get:/a,/b`: the paths.
pub fn parse_get(app: &str) -> Result<Vec<String>, String> {
    let list = app.strip_prefix("get:").ok_or_else(|| format!("invalid app `{app}`"))?;
    let paths: Vec<String> = list.split(',').map(|p| p.trim().to_string()).filter(|p| !p.is_empty()).collect();
    if paths.is_empty() {
        return Err(format!("app `{app}` names no path (expected get:/PATH[,/PATH…])"));
    }
    for p in &paths {
        http::validate_path(p)?;
    }
    Ok(paths)
}

/// Most URLs one crawl takes (from `get:` and a URL file together).
pub const MAX_URLS: usize = 1_000_000;

/// Reads a URL list: one path (`/a`) or URL (`http://host:port/a`) per line;
/// blank lines and `#` comments are skipped. `name` names the file in errors.
pub fn parse_url_list(name: &str, text: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let path = match l.strip_prefix("http://") {
            Some(rest) => match rest.find('/') {
                Some(i) => &rest[i..],
                None => "/",
            },
            None if l.starts_with("https://") => {
                return Err(format!("{name}:{}: https is not supported (closelab speaks plain HTTP)", i + 1));
            }
            None => l,
        };
        http::validate_path(path).map_err(|e| format!("{name}:{}: {e}", i + 1))?;
        if out.len() >= MAX_URLS {
            return Err(format!("{name}: more than {MAX_URLS} URLs"));
        }
        out.push(path.to_string());
    }
    if out.is_empty() {
        return Err(format!("{name}: no URL in the file"));
    }
    Ok(out)
}

/// What the crawler counted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CrawlStats {
    /// Requests sent on a connection.
    pub sent: u64,
    /// Responses by status code.
    pub status: BTreeMap<u16, u64>,
    /// Body bytes of all responses.
    pub body_bytes: u64,
    /// Requests that found the budget spent ("Too many open files").
    pub no_fd: u64,
    /// Exchanges that failed: protocol errors, timeouts, connections reset
    /// or refused.
    pub errors: u64,
    pub timeouts: u64,
    pub opened: u64,
    /// Requests sent on a connection that had served one before.
    pub reused: u64,
    /// Pooled connections found closed by the server before reuse.
    pub stale: u64,
    pub evicted: u64,
    /// Connections leaked (`--on-error leak`).
    pub leaked: u64,
}

impl CrawlStats {
    /// Responses received.
    pub fn responses(&self) -> u64 {
        self.status.values().sum()
    }

    /// One line: `200 requests: 160 x 200, 40 x 404; 0 failed …`.
    pub fn line(&self, urls: usize) -> String {
        let codes: Vec<String> = self.status.iter().map(|(c, n)| format!("{n} x {c}")).collect();
        format!(
            "crawl: {urls} URLs, {} responses ({}), {} body bytes; {} failed: too many open files (budget spent), {} other errors ({} timeouts); {} connections opened, {} reused requests, {} stale, {} evicted, {} leaked",
            self.responses(),
            if codes.is_empty() { "none".to_string() } else { codes.join(", ") },
            self.body_bytes,
            self.no_fd,
            self.errors,
            self.timeouts,
            self.opened,
            self.reused,
            self.stale,
            self.evicted,
            self.leaked
        )
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Held {
    /// SYN sent; the request `path` goes out once ESTABLISHED.
    Opening {
        path: String,
        since: Instant,
    },
    Busy {
        path: String,
        since: Instant,
    },
    Idle {
        since: Instant,
    },
    /// The server said it closes after this response: the crawler reads
    /// to its FIN, then closes (so the server is the active closer).
    Draining {
        since: Instant,
    },
}

#[derive(Clone, Debug)]
struct Conn {
    id: ConnId,
    held: Held,
}

/// Whether the crawl is over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrawlTick {
    /// Call again at this time at the latest (or on any packet).
    Continue(Option<Instant>),
    /// Every URL was tried and the pool was closed. Leaked connections stay.
    Done,
}

/// The crawler. See the module documentation.
pub struct Crawler {
    cfg: CrawlConfig,
    next: usize,
    /// Connections in use (at most `pool`): every scan is over these only.
    conns: Vec<Conn>,
    /// Leaked connections: held, never looked at again.
    leaked: Vec<ConnId>,
    next_start: Option<Instant>,
    pub stats: CrawlStats,
    done: bool,
    /// Every exchange, in order, when `record` is set (tests look at them;
    /// a long crawl does not keep one entry per URL).
    pub exchanges: Vec<HttpDone>,
    pub record: bool,
}

impl Crawler {
    pub fn new(cfg: CrawlConfig) -> Crawler {
        Crawler {
            cfg,
            next: 0,
            conns: Vec::new(),
            leaked: Vec::new(),
            next_start: None,
            stats: CrawlStats::default(),
            done: false,
            exchanges: Vec::new(),
            record: false,
        }
    }

    pub fn config(&self) -> &CrawlConfig {
        &self.cfg
    }

    /// Connections the crawler holds (its open "fds"), leaked ones included.
    pub fn held(&self) -> usize {
        self.conns.len() + self.leaked.len()
    }

    /// The connections leaked so far.
    pub fn leaked(&self) -> Vec<ConnId> {
        self.leaked.clone()
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Does the crawler's work for `now`.
    pub fn tick(&mut self, now: Instant, ep: &mut Endpoint) -> CrawlTick {
        if self.done {
            return CrawlTick::Done;
        }
        for d in ep.take_http() {
            self.finished(now, ep, d);
        }
        self.check(now, ep);
        self.evict(now, ep);
        self.start_requests(now, ep);
        // Another pass: a connection may have become ESTABLISHED or idle.
        for d in ep.take_http() {
            self.finished(now, ep, d);
        }
        let active = self
            .conns
            .iter()
            .any(|c| matches!(c.held, Held::Opening { .. } | Held::Busy { .. } | Held::Draining { .. }));
        if self.next >= self.cfg.paths.len() && !active {
            for c in std::mem::take(&mut self.conns) {
                // The crawler is done: HttpClient.close() closes the pool.
                ep.close(now, c.id);
            }
            self.done = true;
            let line = self.stats.line(self.cfg.paths.len());
            ep.note(now, None, line);
            return CrawlTick::Done;
        }
        CrawlTick::Continue(self.next_deadline())
    }

    fn next_deadline(&self) -> Option<Instant> {
        let mut at: Vec<Instant> = Vec::new();
        for c in &self.conns {
            match &c.held {
                Held::Opening { since, .. } | Held::Busy { since, .. } => at.push(*since + self.cfg.timeout),
                Held::Idle { since } => {
                    if let Some(d) = self.cfg.evict_idle {
                        at.push(*since + d)
                    }
                }
                Held::Draining { since } => at.push(*since + self.cfg.timeout),
            }
        }
        if self.next < self.cfg.paths.len() {
            at.extend(self.next_start);
        }
        at.into_iter().min()
    }

    fn index(&self, id: ConnId) -> Option<usize> {
        self.conns.iter().position(|c| c.id == id)
    }

    /// An exchange the endpoint finished.
    fn finished(&mut self, now: Instant, ep: &mut Endpoint, d: HttpDone) {
        let Some(i) = self.index(d.conn) else { return };
        match &d.result {
            Ok(r) => {
                *self.stats.status.entry(r.status).or_insert(0) += 1;
                self.stats.body_bytes += r.body_len;
                let good = (200..300).contains(&r.status);
                if !good && self.cfg.on_error == OnError::Leak {
                    // The bug: the error path returns without releasing.
                    self.conns.remove(i);
                    self.leaked.push(d.conn);
                    self.stats.leaked += 1;
                    ep.note(
                        now,
                        Some(d.conn),
                        format!("crawler: {} for {}: connection not released (--on-error leak)", r.status, d.path),
                    );
                } else if r.keep_alive && self.cfg.mode == HttpMode::KeepAlive {
                    self.conns[i].held = Held::Idle { since: now };
                } else if !r.keep_alive && ep.peer_closed(d.conn) == Some(false) {
                    self.conns[i].held = Held::Draining { since: now };
                } else {
                    // Not reusable: release closes it (after the server's
                    // FIN this is LAST-ACK).
                    self.conns.remove(i);
                    ep.close(now, d.conn);
                }
            }
            Err(_) => {
                // The app aborted the connection.
                self.stats.errors += 1;
                if d.result == Err(HttpError::Timeout) {
                    self.stats.timeouts += 1;
                }
                self.conns.remove(i);
            }
        }
        self.record(d);
    }

    fn record(&mut self, d: HttpDone) {
        if self.record {
            self.exchanges.push(d);
        }
    }

    /// Connections that went away under the crawler, and timeouts.
    fn check(&mut self, now: Instant, ep: &mut Endpoint) {
        let mut i = 0;
        while i < self.conns.len() {
            let c = &self.conns[i];
            let state = ep.state(c.id);
            let gone = matches!(state, None | Some(TcpState::Closed));
            match c.held.clone() {
                Held::Opening { path, since } if gone => {
                    let id = c.id;
                    self.conns.remove(i);
                    self.fail(now, ep, id, path, "connection refused or reset before it was established");
                    let _ = since;
                    continue;
                }
                Held::Opening { path, since } if state == Some(TcpState::Established) => {
                    self.conns[i].held = Held::Busy { path: path.clone(), since };
                    let req = http::request(&path, &self.cfg.host, self.cfg.mode);
                    let id = self.conns[i].id;
                    self.stats.sent += 1;
                    if !ep.http_send(now, id, &path, &req) {
                        self.conns.remove(i);
                        self.fail(now, ep, id, path, "connection closed before the request");
                        continue;
                    }
                }
                Held::Busy { path, since } | Held::Opening { path, since } if now >= since + self.cfg.timeout => {
                    let id = c.id;
                    self.conns.remove(i);
                    ep.abort(now, id);
                    self.stats.timeouts += 1;
                    self.stats.errors += 1;
                    ep.note(
                        now,
                        Some(id),
                        format!("http: GET {path} failed: {} (connection aborted)", HttpError::Timeout),
                    );
                    self.record(HttpDone { conn: id, path, result: Err(HttpError::Timeout) });
                    continue;
                }
                Held::Busy { path, .. } if gone && !ep.http_busy(c.id) => {
                    // Reset while busy and the app had nothing to report.
                    let id = c.id;
                    self.conns.remove(i);
                    self.fail(now, ep, id, path, "connection reset during the request");
                    continue;
                }
                Held::Draining { since }
                    if gone || ep.peer_closed(c.id) == Some(true) || now >= since + self.cfg.timeout =>
                {
                    let id = c.id;
                    self.conns.remove(i);
                    ep.close(now, id);
                    continue;
                }
                Held::Idle { .. } if gone => {
                    // Reset while pooled: nothing to close.
                    self.conns.remove(i);
                    continue;
                }
                _ => {}
            }
            i += 1;
        }
    }

    fn fail(&mut self, now: Instant, ep: &mut Endpoint, id: ConnId, path: String, why: &str) {
        self.stats.errors += 1;
        ep.note(now, Some(id), format!("http: GET {path} failed: {why}"));
        self.record(HttpDone { conn: id, path, result: Err(HttpError::Connection(why.to_string())) });
    }

    fn evict(&mut self, now: Instant, ep: &mut Endpoint) {
        let Some(d) = self.cfg.evict_idle else { return };
        let mut i = 0;
        while i < self.conns.len() {
            if let Held::Idle { since } = self.conns[i].held
                && now >= since + d
            {
                let id = self.conns.remove(i).id;
                self.stats.evicted += 1;
                ep.note(now, Some(id), format!("crawler: idle {d} in the pool: evicted (--evict-idle)"));
                ep.close(now, id);
                continue;
            }
            i += 1;
        }
    }

    fn start_requests(&mut self, now: Instant, ep: &mut Endpoint) {
        while self.next < self.cfg.paths.len() {
            if self.next_start.is_some_and(|t| now < t) {
                return;
            }
            let path = self.cfg.paths[self.next].clone();
            // Reuse the most recently used idle connection (HttpClient's
            // pool is LIFO), after a stale check.
            let mut reuse = None;
            while let Some(i) = self.conns.iter().rposition(|c| matches!(c.held, Held::Idle { .. })) {
                let id = self.conns[i].id;
                let fresh = ep.state(id) == Some(TcpState::Established) && ep.peer_closed(id) == Some(false);
                if fresh {
                    reuse = Some(i);
                    break;
                }
                // Stale: the server closed it while it sat in the pool.
                self.conns.remove(i);
                self.stats.stale += 1;
                ep.note(
                    now,
                    Some(id),
                    "crawler: pooled connection closed by the server (stale check): closing it".into(),
                );
                ep.close(now, id);
            }
            if let Some(i) = reuse {
                let id = self.conns[i].id;
                let req = http::request(&path, &self.cfg.host, self.cfg.mode);
                self.conns[i].held = Held::Busy { path: path.clone(), since: now };
                self.stats.sent += 1;
                self.stats.reused += 1;
                if !ep.http_send(now, id, &path, &req) {
                    self.conns.remove(i);
                    self.fail(now, ep, id, path, "pooled connection could not send");
                }
                self.advance(now);
                continue;
            }
            if self.conns.len() >= self.cfg.pool {
                return;
            }
            if self.held() >= self.cfg.budget {
                // The fd limit: socket() fails with EMFILE.
                self.stats.no_fd += 1;
                ep.note(
                    now,
                    None,
                    format!(
                        "http: GET {path} failed: too many open files ({} connections held, --max-conns {})",
                        self.held(),
                        self.cfg.budget
                    ),
                );
                self.record(HttpDone {
                    conn: 0,
                    path,
                    result: Err(HttpError::Connection("too many open files".into())),
                });
                self.advance(now);
                continue;
            }
            match ep.connect(now, self.cfg.remote, 0) {
                Ok(id) => {
                    self.stats.opened += 1;
                    self.conns.push(Conn { id, held: Held::Opening { path, since: now } });
                    // Connected at once (never over a real wire, but cheap to handle).
                    self.check(now, ep);
                }
                Err(e) => {
                    self.stats.errors += 1;
                    ep.note(now, None, format!("http: GET {path} failed: cannot connect to {}: {e}", self.cfg.remote));
                    self.record(HttpDone { conn: 0, path, result: Err(HttpError::Connection(e.to_string())) });
                }
            }
            self.advance(now);
        }
    }

    fn advance(&mut self, now: Instant) {
        self.next += 1;
        if let Some(r) = self.cfg.rate {
            self.next_start = Some(now + Duration::from_micros((1e6 / r) as u64));
        }
    }
}

#[cfg(test)]
mod tests;
