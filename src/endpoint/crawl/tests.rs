//! The crawler over the in-memory link against closelab's own HTTP server
//! app (paths under /missing are 404) and canned malformed servers, with a
//! virtual clock: exact statuses, state paths and counts.

use super::*;
use crate::endpoint::link::Link;
use crate::endpoint::tests::{ms, states, t0};
use crate::endpoint::{AppKind, ClosePolicy, EndpointConfig, Policy};
use crate::event::{Event, EventKind};

use TcpState::*;

const SERVER: &str = "10.0.0.2:80";

fn cfg(addr: &str, app: AppKind, close: ClosePolicy, close_after: Option<Duration>) -> EndpointConfig {
    let mut c = EndpointConfig::new(crate::config::parse_cidr(addr).unwrap());
    c.app = app;
    c.policy = Policy { close, close_after, rst_on_unread: false };
    c.seed = 11;
    c
}

fn paths(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

struct Run {
    link: Link,
    crawler: Crawler,
    events: Vec<Event>,
    #[allow(dead_code)]
    server_events: Vec<Event>,
}

/// Server app `server` (closing by `close`) on B, the crawler on A; runs
/// until the crawl is done and then `after` more of virtual time.
fn crawl(server: AppKind, close: ClosePolicy, close_after: Option<Duration>, c: CrawlConfig, after: Duration) -> Run {
    let mut b =
        Endpoint::new(cfg("10.0.0.2/24", server, close, close_after), t0()).expect("endpoint config fits smoltcp");
    b.listen(80);
    let a = Endpoint::new(cfg("10.0.0.1/24", AppKind::HttpClient, ClosePolicy::Never, None), t0())
        .expect("endpoint config fits smoltcp");
    let mut link = Link::new(a, b, t0(), ms(5));
    let mut crawler = Crawler::new(c);
    crawler.record = true;
    let end = t0() + Duration::from_secs(3600);
    let mut events = Vec::new();
    let mut server_events = Vec::new();
    loop {
        let now = link.now();
        let tick = crawler.tick(now, &mut link.a);
        events.extend(link.a.take_events());
        server_events.extend(link.b.take_events());
        if tick == CrawlTick::Done {
            break;
        }
        assert!(now < end, "crawl did not finish");
        let limit = match tick {
            CrawlTick::Continue(Some(at)) if at > now => at.min(end),
            CrawlTick::Continue(Some(_)) => now,
            _ => end,
        };
        if !link.step(limit) && limit == end {
            panic!("crawl stalled: {:?}", crawler.stats);
        }
    }
    link.run_for(after);
    events.extend(link.a.take_events());
    server_events.extend(link.b.take_events());
    Run { link, crawler, events, server_events }
}

fn config(list: &[&str]) -> CrawlConfig {
    CrawlConfig::new(SERVER.parse().unwrap(), paths(list))
}

fn statuses(r: &Run) -> Vec<(String, Result<u16, String>)> {
    r.crawler
        .exchanges
        .iter()
        .map(|d| (d.path.clone(), d.result.as_ref().map(|x| x.status).map_err(|e| e.to_string())))
        .collect()
}

fn notes(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Note { text } => Some(text.clone()),
            _ => None,
        })
        .collect()
}

fn last_state(events: &[Event], id: ConnId) -> TcpState {
    states(events, id).last().map(|s| s.1).unwrap()
}

// Tests for keep-alive and release.

#[test]
fn test_crawl_keep_alive_reuses_one_connection() {
    let r =
        crawl(AppKind::Http, ClosePolicy::Passive, None, config(&["/a", "/missing/1", "/b"]), Duration::from_secs(1));
    assert_eq!(statuses(&r), vec![("/a".into(), Ok(200)), ("/missing/1".into(), Ok(404)), ("/b".into(), Ok(200))]);
    let s = &r.crawler.stats;
    assert_eq!((s.opened, s.sent, s.reused, s.leaked), (1, 3, 2, 0));
    let body = crate::endpoint::http::fnv1a(crate::endpoint::http::FNV_START, b"hello from closelab: /a\n");
    assert_eq!(r.crawler.exchanges[0].result.as_ref().unwrap().checksum, body);
    // The crawler closes its pool at the end: it is the active closer.
    let id = r.crawler.exchanges[0].conn;
    assert_eq!(
        states(&r.events, id).iter().map(|s| s.1).collect::<Vec<_>>(),
        vec![SynSent, Established, FinWait1, TimeWait]
    );
    assert!(
        notes(&r.events).iter().any(|n| n.starts_with("crawl: 3 URLs, 3 responses (2 x 200, 1 x 404)")),
        "{:?}",
        notes(&r.events)
    );
}

#[test]
fn test_crawl_connection_close_mode_server_closes_first() {
    let mut c = config(&["/a", "/b"]);
    c.mode = HttpMode::Close;
    // closelab's server app closes after a `Connection: close` response
    // under the active policy.
    let r = crawl(AppKind::Http, ClosePolicy::Active, None, c, Duration::from_secs(1));
    assert_eq!(statuses(&r), vec![("/a".into(), Ok(200)), ("/b".into(), Ok(200))]);
    assert_eq!(r.crawler.stats.opened, 2);
    for d in &r.crawler.exchanges {
        // The server's FIN comes with the response: the crawler is the
        // passive closer and never holds TIME-WAIT.
        let path: Vec<TcpState> = states(&r.events, d.conn).iter().map(|s| s.1).collect();
        assert_eq!(path, vec![SynSent, Established, CloseWait, LastAck, Closed], "{}", d.path);
    }
}

#[test]
fn test_crawl_http10_body_until_close() {
    let mut c = config(&["/x"]);
    c.mode = HttpMode::Http10;
    // A 1.0 server that delimits the body by closing.
    let reply = b"HTTP/1.0 200 OK\r\nServer: old\r\n\r\nbody until close".to_vec();
    let r = crawl(AppKind::Reply(reply), ClosePolicy::Active, None, c, Duration::from_secs(1));
    let resp = r.crawler.exchanges[0].result.clone().unwrap();
    assert_eq!((resp.status, resp.body_len, resp.framing), (200, 16, crate::endpoint::http::Framing::Eof));
}

// Tests for the leak (--on-error leak) and the budget.

#[test]
fn test_crawl_leak_holds_close_wait_forever() {
    let mut c = config(&["/missing/1", "/a", "/missing/2", "/b"]);
    c.on_error = OnError::Leak;
    // The server ends every connection 1 s after it began (a keep-alive
    // timeout): the leaked ones then sit in CLOSE-WAIT.
    let r = crawl(AppKind::Http, ClosePolicy::Active, Some(Duration::from_secs(1)), c, Duration::from_secs(3600));
    assert_eq!(
        statuses(&r),
        vec![
            ("/missing/1".into(), Ok(404)),
            ("/a".into(), Ok(200)),
            ("/missing/2".into(), Ok(404)),
            ("/b".into(), Ok(200)),
        ]
    );
    let leaked = r.crawler.leaked();
    assert_eq!(leaked.len(), 2);
    assert_eq!(r.crawler.stats.leaked, 2);
    for id in &leaked {
        assert_eq!(r.link.a.state(*id), Some(CloseWait), "an hour later");
        assert_eq!(last_state(&r.events, *id), CloseWait);
    }
    assert!(notes(&r.events).iter().any(|n| n.contains("404 for /missing/1: connection not released")));
}

#[test]
fn test_crawl_budget_spent_fails_requests() {
    let mut c = config(&["/missing/1", "/missing/2", "/a", "/b"]);
    c.on_error = OnError::Leak;
    c.budget = 2;
    let r = crawl(AppKind::Http, ClosePolicy::Passive, None, c, Duration::from_secs(1));
    let got = statuses(&r);
    assert_eq!(got[0], ("/missing/1".into(), Ok(404)));
    assert_eq!(got[1], ("/missing/2".into(), Ok(404)));
    assert_eq!(got[2], ("/a".into(), Err("too many open files".into())));
    assert_eq!(got[3].0, "/b");
    assert_eq!(r.crawler.stats.no_fd, 2);
    assert!(
        notes(&r.events)
            .iter()
            .any(|n| n == "http: GET /a failed: too many open files (2 connections held, --max-conns 2)")
    );
}

#[test]
fn test_crawl_release_closes_after_error_too() {
    let mut c = config(&["/missing/1", "/missing/2", "/a"]);
    c.budget = 1;
    let r = crawl(AppKind::Http, ClosePolicy::Passive, None, c, Duration::from_secs(1));
    assert_eq!(r.crawler.stats.no_fd, 0);
    assert_eq!(r.crawler.stats.responses(), 3);
    assert_eq!(r.crawler.held(), 0);
}

// Tests for the stale check, eviction and timeouts.

#[test]
fn test_crawl_stale_check_closes_server_closed_connection() {
    let mut c = config(&["/a", "/b"]);
    c.rate = Some(0.2); // one request every 5 s; the server closes after 1 s
    let r = crawl(AppKind::Http, ClosePolicy::Active, Some(Duration::from_secs(1)), c, Duration::from_secs(1));
    assert_eq!(statuses(&r), vec![("/a".into(), Ok(200)), ("/b".into(), Ok(200))]);
    assert_eq!((r.crawler.stats.stale, r.crawler.stats.opened), (1, 2));
    let first = r.crawler.exchanges[0].conn;
    let path: Vec<TcpState> = states(&r.events, first).iter().map(|s| s.1).collect();
    assert_eq!(path, vec![SynSent, Established, CloseWait, LastAck, Closed]);
}

#[test]
fn test_crawl_evict_idle_closes_first() {
    let mut c = config(&["/a", "/b"]);
    c.rate = Some(0.2);
    c.evict_idle = Some(Duration::from_millis(500));
    let r = crawl(AppKind::Http, ClosePolicy::Active, Some(Duration::from_secs(1)), c, Duration::from_secs(1));
    // The first is evicted; the second is closed with the pool at the end.
    assert_eq!((r.crawler.stats.evicted, r.crawler.stats.stale), (1, 0));
    let first = r.crawler.exchanges[0].conn;
    let path: Vec<TcpState> = states(&r.events, first).iter().map(|s| s.1).collect();
    assert_eq!(&path[..3], &[SynSent, Established, FinWait1]);
}

#[test]
fn test_crawl_timeout_aborts() {
    let mut c = config(&["/a"]);
    c.timeout = Duration::from_secs(2);
    let r = crawl(AppKind::Sink, ClosePolicy::Never, None, c, Duration::from_secs(1));
    assert_eq!(statuses(&r), vec![("/a".into(), Err("no complete response in time".into()))]);
    assert_eq!(r.crawler.stats.timeouts, 1);
    let id = r.crawler.exchanges[0].conn;
    assert_eq!(last_state(&r.events, id), Closed);
}

#[test]
fn test_crawl_refused() {
    // Nobody listens on port 81: RST|ACK.
    let c = CrawlConfig::new("10.0.0.2:81".parse().unwrap(), paths(&["/a"]));
    let r = crawl(AppKind::Http, ClosePolicy::Passive, None, c, Duration::from_secs(1));
    assert_eq!(r.crawler.stats.errors, 1);
    assert!(statuses(&r)[0].1.as_ref().unwrap_err().contains("refused or reset"));
}

// Tests for malformed responses: an error event and an aborted connection.

fn malformed(reply: &[u8], close: ClosePolicy) -> (String, Run) {
    let r = crawl(AppKind::Reply(reply.to_vec()), close, None, config(&["/a"]), Duration::from_secs(1));
    let err = statuses(&r)[0].1.clone().unwrap_err();
    (err, r)
}

#[test]
fn test_crawl_malformed_responses_abort() {
    let cases: [(&[u8], &str); 5] = [
        (b"HTTP/1.1 2x0 OK\r\n\r\n", "bad response head: invalid response status"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n", "invalid content-length `-5`"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n", "body of 99999999999 bytes is above the limit"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nxyz\r\n", "bad chunked body: invalid chunk size `xyz`"),
        (b"hello\r\n\r\n", "bad response head"),
    ];
    for (reply, want) in cases {
        let (err, r) = malformed(reply, ClosePolicy::Never);
        assert!(err.contains(want), "{err} / {want}");
        let id = r.crawler.exchanges[0].conn;
        let s = states(&r.events, id);
        assert_eq!(s.last().unwrap().1, Closed, "{want}");
        assert_eq!(s.last().unwrap().2, crate::event::Cause::App(crate::event::AppAction::Abort));
        assert!(notes(&r.events).iter().any(|n| n.contains(want) && n.ends_with("(connection aborted)")));
        assert_eq!(r.crawler.held(), 0);
    }
}

#[test]
fn test_crawl_truncated_body_at_close() {
    let (err, r) = malformed(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc", ClosePolicy::Active);
    assert_eq!(err, "connection closed after 3 of 100 body bytes");
    let (err, _) = malformed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nabc", ClosePolicy::Active);
    assert_eq!(err, "connection closed in a chunked body after 3 bytes");
    let id = r.crawler.exchanges[0].conn;
    assert_eq!(r.link.a.state(id), None);
}

#[test]
fn test_crawl_overlong_head_bounded() {
    let mut reply = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
    reply.extend(std::iter::repeat_n(b'a', 40_000));
    let (err, _) = malformed(&reply, ClosePolicy::Never);
    assert_eq!(err, "response head longer than 16384 bytes");
}

#[test]
fn test_parse_get_and_url_list() {
    assert_eq!(parse_get("get:/a,/b").unwrap(), paths(&["/a", "/b"]));
    assert!(parse_get("get:").unwrap_err().contains("names no path"));
    assert!(parse_get("get:a").unwrap_err().contains("must start with /"));
    let list = parse_url_list("urls.txt", "# c\n/a\n\nhttp://10.0.0.2:80/b?x=1\nhttp://h\n").unwrap();
    assert_eq!(list, paths(&["/a", "/b?x=1", "/"]));
    assert_eq!(parse_url_list("u", "/a\nb\n").unwrap_err(), "u:2: invalid path `b`: it must start with /");
    assert!(parse_url_list("u", "https://x/a").unwrap_err().contains("https is not supported"));
    assert_eq!(parse_url_list("u", "# only\n").unwrap_err(), "u: no URL in the file");
}

#[test]
fn test_crawl_many_leaks_count_exactly() {
    let list: Vec<String> = (0..500).map(|i| format!("/missing/{i}")).collect();
    let mut c = CrawlConfig::new(SERVER.parse().unwrap(), list);
    c.on_error = OnError::Leak;
    c.budget = 100;
    c.pool = 4;
    let r = crawl(AppKind::Http, ClosePolicy::Passive, None, c, Duration::from_secs(1));
    let s = &r.crawler.stats;
    assert_eq!((s.leaked, s.no_fd, s.opened, s.responses()), (100, 400, 100, 100));
    assert_eq!(r.crawler.held(), 100);
    // The server never closes them: all ESTABLISHED, none closed by the crawler.
    assert!(r.crawler.leaked().iter().all(|id| r.link.a.state(*id) == Some(Established)));
}

#[test]
fn test_close_all_then_abort_all_after_a_stop() {
    let mut c = config(&["/missing/1", "/missing/2"]);
    c.on_error = OnError::Leak;
    let mut r = crawl(AppKind::Http, ClosePolicy::Never, None, c, Duration::from_secs(1));
    assert_eq!(r.link.a.open_count(), 2);
    // The server never closes (policy never): FIN from us, FIN-WAIT-2 then.
    let now = r.link.now();
    assert_eq!(r.link.a.close_all(now), 2);
    r.link.run_for(Duration::from_secs(1));
    let ids = r.crawler.leaked();
    for id in &ids {
        assert_eq!(r.link.a.state(*id), Some(FinWait2));
    }
    assert_eq!(r.link.a.open_count(), 2);
    let now = r.link.now();
    assert_eq!(r.link.a.abort_all(now), 2);
    assert_eq!(r.link.a.open_count(), 0);
    r.link.run_for(Duration::from_secs(1));
    // The server got the RSTs: its connections are gone.
    assert!(r.link.b.is_empty());
}
