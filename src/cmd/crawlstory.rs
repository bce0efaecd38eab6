//! The demo's crawler stories (5 to 7): the seed's crawler against a real
//! Apache in the lab. Its HttpClient forgets to release a connection whose
//! response was a 404; Apache closes it after its keep-alive timeout and the
//! crawler sits in CLOSE-WAIT, one per 404, until it runs out of "file
//! descriptors"; released, the same connection serves every URL; and the
//! "a CLOSE_WAIT lasts 2 hours" folklore, which is the keep-alive timer and
//! only ends CLOSE-WAIT once the peer has forgotten the connection.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration as StdDuration;

use smoltcp::time::Duration;

use crate::cmd::demo::{DemoOptions, DemoStory};
use crate::cmd::story::{Story, StoryView};
use crate::endpoint::crawl::{CrawlConfig, OnError};
use crate::endpoint::{AppKind, ClosePolicy, Policy};
use crate::event::{Event, EventKind, Side, TcpState};
use crate::sys::lab::LabAddrs;

/// The port Apache listens on in the demo.
pub const PORT: u16 = 80;
/// URLs the crawler fetches; every 5th is missing (20 %).
pub const URLS: usize = 200;
/// The crawler's connection budget (its fd limit).
pub const BUDGET: usize = 32;
/// Apache's KeepAliveTimeout in the demo (Apache's default is 5 s).
pub const APACHE_KEEPALIVE: StdDuration = StdDuration::from_secs(1);

/// `/files/0001.txt`, … with every 5th replaced by `/missing/N`.
pub fn urls(n: usize) -> Vec<String> {
    (1..=n).map(|i| if i % 5 == 0 { format!("/missing/{i}") } else { format!("/files/{i:04}.txt") }).collect()
}

/// Per-state counts of `side`'s connections at time `t`, from the state
/// changes up to then (connections that reached CLOSED are gone).
pub fn counts_at(events: &[Event], side: Side, t: f64) -> BTreeMap<TcpState, usize> {
    let mut last: BTreeMap<u64, TcpState> = BTreeMap::new();
    for e in events.iter().filter(|e| e.side == side && e.t <= t) {
        if let (Some(c), EventKind::State { to, .. }) = (e.conn, &e.kind) {
            last.insert(c, *to);
        }
    }
    let mut out = BTreeMap::new();
    for s in last.values().filter(|s| !matches!(s, TcpState::Closed | TcpState::Listen)) {
        *out.entry(*s).or_insert(0) += 1;
    }
    out
}

fn netstat(c: &BTreeMap<TcpState, usize>) -> String {
    if c.is_empty() {
        return "-".into();
    }
    c.iter().map(|(s, n)| format!("{} {n}", s.netstat_name())).collect::<Vec<_>>().join(", ")
}

/// Both sides' counts once a second, as the seed's netstat lines.
pub fn timeline(events: &[Event]) -> String {
    let end = events.iter().map(|e| e.t).fold(0.0, f64::max);
    let mut lines = vec![format!("{:>6}  {:<44} {}", "t", "closelab (the crawler)", "Linux (Apache)")];
    let mut t = 1.0;
    while t < end + 1.0 {
        let at = t.min(end);
        lines.push(format!(
            "{:>5.1}s  {:<44} {}",
            at,
            netstat(&counts_at(events, Side::Closelab, at)),
            netstat(&counts_at(events, Side::Linux, at))
        ));
        t += 1.0;
    }
    lines.join("\n  ")
}

fn crawl_line(events: &[Event]) -> String {
    events
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::Note { text } if text.starts_with("crawl: ") => Some(text.clone()),
            _ => None,
        })
        .unwrap_or_else(|| "crawl: did not finish".into())
}

fn endpoint(addrs: &LabAddrs, opts: &DemoOptions, keepalive: Option<Duration>) -> crate::endpoint::EndpointConfig {
    let mut cfg = crate::cmd::story::lab_endpoint(addrs);
    cfg.app = AppKind::HttpClient;
    cfg.policy = Policy { close: ClosePolicy::Never, close_after: None, rst_on_unread: false };
    // No slow motion: 200 requests would take a minute.
    cfg.slow = None;
    cfg.seed = opts.seed;
    cfg.capture = opts.pcap.is_some();
    cfg.keep_alive = keepalive;
    cfg
}

fn crawl(addrs: &LabAddrs, paths: Vec<String>, on_error: OnError) -> CrawlConfig {
    let mut c = CrawlConfig::new(SocketAddr::new(IpAddr::V4(addrs.linux), PORT), paths);
    c.on_error = on_error;
    c.budget = BUDGET;
    c.rate = Some(50.0);
    c
}

/// Stories 5, 6 and 7.
pub fn stories(addrs: &LabAddrs, opts: &DemoOptions) -> Vec<DemoStory> {
    let fin_timeout = opts.fin_timeout;
    let ka = APACHE_KEEPALIVE.as_secs();
    vec![
        DemoStory {
            title: "the seed's crawler: HttpClient leaks every connection that got a 404",
            explain: [
                format!("closelab crawls {URLS} URLs (every 5th missing) from Apache, one connection at a time, never releasing one whose answer was not 2xx."),
                format!("Apache closes each leaked connection after KeepAliveTimeout ({ka} s): CLOSE-WAIT climbs on the crawler while Apache's FIN-WAIT-2 expire (tcp_fin_timeout {fin_timeout} s, after Apache's 2 s lingering close); at {BUDGET} connections the crawler is out of fds."),
            ],
            story: Story {
                endpoint: endpoint(addrs, opts, None),
                port: PORT,
                peer: Vec::new(),
                observe_ports: vec![PORT],
                done: Box::new(|v: &StoryView| {
                    v.crawler.is_some_and(|c| c.is_done() && v.closelab_in(TcpState::CloseWait) == c.leaked().len())
                        && v.linux_open == 0
                }),
                timeout: StdDuration::from_secs(60),
                connect: None,
                crawl: Some(crawl(addrs, urls(URLS), OnError::Leak)),
            },
            after: Box::new(|events, states| {
                let cw = states.iter().filter(|(_, s)| *s == TcpState::CloseWait).count();
                format!(
                    "{}\n  {}\n  closelab keeps CLOSE_WAIT {cw} for as long as the crawler runs; Apache forgot them all. The fix is in the code: release the connection on the error path too.",
                    timeline(events),
                    crawl_line(events)
                )
            }),
        },
        DemoStory {
            title: "the same crawler, releasing every connection",
            explain: [
                "Released after the 404 too, the connection goes back to the pool and serves the next URL: keep-alive reuses it for all of them.".into(),
                "When the crawl is over, the crawler closes its pool first and holds the TIME-WAIT; Apache passes LAST-ACK.".into(),
            ],
            story: Story {
                endpoint: endpoint(addrs, opts, None),
                port: PORT,
                peer: Vec::new(),
                observe_ports: vec![PORT],
                done: Box::new(|v: &StoryView| {
                    v.crawler.is_some_and(|c| c.is_done()) && v.reached(Side::Closelab, TcpState::TimeWait) && v.linux_open == 0
                }),
                timeout: StdDuration::from_secs(60),
                connect: None,
                crawl: Some(crawl(addrs, urls(URLS), OnError::Release)),
            },
            after: Box::new(|events, states| {
                let tw = states.iter().filter(|(_, s)| *s == TcpState::TimeWait).count();
                format!("{}\n  {}\n  closelab: TIME_WAIT {tw}, CLOSE_WAIT 0.", timeline(events), crawl_line(events))
            }),
        },
        DemoStory {
            title: "\"a CLOSE_WAIT lasts at least 2 hours\"?",
            explain: [
                "One leaked connection again, now with keep-alive on the crawler (2 s here; Linux's default is 7200 s idle: the folklore's 2 hours).".into(),
                "Probes are answered while Apache's FIN-WAIT-2 lives; the first one after Apache forgot the connection draws an RST. Without keep-alive CLOSE-WAIT never ends.".into(),
            ],
            story: Story {
                endpoint: endpoint(addrs, opts, Some(Duration::from_secs(2))),
                port: PORT,
                peer: Vec::new(),
                observe_ports: vec![PORT],
                done: Box::new(|v: &StoryView| {
                    v.reached(Side::Closelab, TcpState::CloseWait)
                        && v.events.iter().any(|e| {
                            e.side == Side::Closelab
                                && matches!(e.kind, EventKind::State { from: TcpState::CloseWait, to: TcpState::Closed, .. })
                        })
                }),
                timeout: StdDuration::from_secs(40),
                connect: None,
                crawl: Some(crawl(addrs, vec!["/missing/x".into()], OnError::Leak)),
            },
            after: Box::new(|events, _| {
                let cw = events.iter().find_map(|e| match e.kind {
                    EventKind::State { to: TcpState::CloseWait, .. } if e.side == Side::Closelab => Some(e.t),
                    _ => None,
                });
                let end = events.iter().find_map(|e| match e.kind {
                    EventKind::State { from: TcpState::CloseWait, to: TcpState::Closed, .. } if e.side == Side::Closelab => Some(e.t),
                    _ => None,
                });
                match (cw, end) {
                    (Some(a), Some(b)) => format!("CLOSE-WAIT lasted {:.1} s: until Linux had forgotten the connection and answered a keep-alive probe with RST. The 2 hours are tcp_keepalive_time (7200 s), not a CLOSE-WAIT timer.", b - a),
                    _ => "CLOSE-WAIT did not end.".into(),
                }
            }),
        },
    ]
}
