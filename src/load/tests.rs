use super::story::{self, Expect, Side};
use super::*;

fn sample(t: f64, completed: u64, closelab_tw: u64, linux_tw: u64) -> Sample {
    let mut closelab = [0; 11];
    closelab[state_index(TcpState::TimeWait)] = closelab_tw;
    let mut linux = [0; 11];
    linux[state_index(TcpState::TimeWait)] = linux_tw;
    Sample {
        t,
        linux,
        closelab,
        started: completed,
        completed,
        errors: BTreeMap::new(),
        rate: 0.0,
        requests: None,
        req_rate: 0.0,
        rss: 0,
    }
}

fn report(samples: Vec<Sample>) -> Report {
    let client = AppStats { completed: samples.last().map_or(0, |s| s.completed), ..AppStats::default() };
    Report {
        spec: LoadSpec::default(),
        elapsed: samples.last().map_or(0.0, |s| s.t),
        samples,
        client,
        interrupted: false,
        tun_dropped: None,
        notes: Vec::new(),
    }
}

// Tests for parsing.

#[test]
fn test_parse_rate() {
    assert_eq!(parse_rate("500/s"), Ok(500.0));
    assert_eq!(parse_rate("500"), Ok(500.0));
    assert_eq!(parse_rate("2k/s"), Ok(2000.0));
    assert_eq!(parse_rate("1.5k"), Ok(1500.0));
    assert!(parse_rate("fast").unwrap_err().starts_with("invalid rate `fast`"));
    assert!(parse_rate("0/s").unwrap_err().contains("above 0"));
    assert!(parse_rate("-5").is_err());
    assert!(parse_rate("1e9").is_err());
    assert!(parse_rate("99999999").unwrap_err().contains("at most"));
}

#[test]
fn test_parse_ports() {
    assert_eq!(parse_ports("20000-20999"), Ok((20000, 20999)));
    assert_eq!(parse_ports("1024-1024"), Ok((1024, 1024)));
    assert!(parse_ports("3000-2000").unwrap_err().contains("empty"));
    assert!(parse_ports("80-2000").unwrap_err().contains("1024-65535"));
    assert!(parse_ports("2000-70000").unwrap_err().contains("1024-65535"));
    assert!(parse_ports("2000").unwrap_err().contains("LO-HI"));
}

#[test]
fn test_parse_duration() {
    assert_eq!(parse_duration("--duration", "2s"), Ok(Duration::from_secs(2)));
    assert!(parse_duration("--duration", "0s").unwrap_err().contains("longer than 0s"));
    assert!(parse_duration("--duration", "soon").unwrap_err().starts_with("--duration: invalid duration"));
    assert!(parse_duration("--duration", "25h").unwrap_err().contains("too long"));
}

// Tests for pacing.

#[test]
fn test_pacer_rate() {
    let mut p = Pacer::new(Some(100.0));
    assert_eq!(p.due(0.0), 1);
    p.started(1);
    assert_eq!(p.due(0.005), 0);
    assert_eq!(p.due(0.0101), 1);
    p.started(1);
    assert_eq!(p.next_at(), Some(0.02));
    assert_eq!(p.due(0.5), 16, "a stall is caught up only by a bounded burst");
    p.started(16);
    // The schedule moved: the next is due right after the burst, not 31 more.
    assert_eq!(p.due(0.5), 0);
}

#[test]
fn test_pacer_max() {
    let mut p = Pacer::new(None);
    assert_eq!(p.due(0.0), u64::MAX);
    assert_eq!(p.next_at(), None);
}

// Tests for the histogram.

#[test]
fn test_histogram_percentiles() {
    let mut h = Histogram::default();
    assert_eq!(h.percentile(50.0), None);
    for v in 1..=1000u64 {
        h.record(v);
    }
    let p50 = h.percentile(50.0).unwrap();
    assert!((500..=530).contains(&p50), "{p50}");
    let p99 = h.percentile(99.0).unwrap();
    assert!((990..=1000).contains(&p99), "{p99}");
    assert_eq!(h.percentile(100.0), Some(1000));
    assert_eq!(h.max(), 1000);
    assert_eq!(h.count(), 1000);
}

#[test]
fn test_histogram_buckets_cover_their_values() {
    for v in [0u64, 1, 15, 16, 17, 31, 32, 1000, 65_535, 1 << 40] {
        let i = Histogram::index(v);
        assert!(Histogram::upper(i) >= v, "{v}");
        assert!(i == 0 || Histogram::upper(i - 1) < v, "{v}");
    }
}

// Tests for rendering.

#[test]
fn test_sample_text_and_json() {
    let mut s = sample(3.0, 900, 850, 0);
    s.linux[state_index(TcpState::Established)] = 2;
    s.errors.insert("EADDRNOTAVAIL".into(), 12);
    s.rate = 300.0;
    s.rss = 21_000_000;
    assert_eq!(
        sample_text(&s),
        "t=3s   linux: ESTABLISHED 2 | closelab: TIME_WAIT 850 | 300 conn/s, 900 done, errors: EADDRNOTAVAIL 12 | rss 21.0 MB"
    );
    assert_eq!(
        sample_json(&s),
        r#"{"type":"load-sample","t":3.0,"linux":{"ESTABLISHED":2},"closelab":{"TIME_WAIT":850},"started":900,"completed":900,"rate":300.0,"errors":{"EADDRNOTAVAIL":12},"rss":21000000}"#
    );
}

#[test]
fn test_summary_peaks() {
    let r = report(vec![sample(1.0, 100, 100, 0), sample(2.0, 200, 180, 3), sample(3.0, 300, 150, 1)]);
    assert_eq!(r.peak(false, TcpState::TimeWait), 180);
    assert_eq!(r.peak(true, TcpState::TimeWait), 3);
    let text = r.text();
    assert!(text.contains("peak closelab: TIME_WAIT 180"), "{text}");
    assert!(text.contains("peak linux: TIME_WAIT 3"), "{text}");
    assert!(text.contains("300 completed in 3.0s (100 conn/s)"), "{text}");
    assert!(r.json().contains(r#""peak_closelab":{"TIME_WAIT":180}"#));
}

#[test]
fn test_sample_table_lists_states_of_either_side() {
    let mut s = sample(3.0, 900, 850, 0);
    s.linux[state_index(TcpState::Established)] = 2;
    s.closelab[state_index(TcpState::Listen)] = 1;
    s.rate = 300.0;
    s.rss = 21_000_000;
    assert_eq!(
        sample_table(&s),
        "t=3s  300 conn/s  done 900  errors -  rss 21.0 MB\n\
         state            linux  closelab\n\
         LISTEN               0         1\n\
         ESTABLISHED          2         0\n\
         TIME_WAIT            0       850"
    );
}

#[test]
fn test_http_requests_in_sample_and_summary() {
    // Keep-alive: 3 responses per connection. Samples and the summary
    // carry the requests only for --http runs.
    let mut s = sample(2.0, 100, 0, 0);
    s.rate = 50.0;
    s.requests = Some(300);
    s.req_rate = 150.0;
    assert_eq!(
        sample_text(&s),
        "t=2s   linux: - | closelab: - | 50 conn/s, 100 done, 300 requests (150/s), errors: - | rss 0.0 MB"
    );
    let v: serde_json::Value = serde_json::from_str(&sample_json(&s)).unwrap();
    assert_eq!((v["requests"].as_u64(), v["req_rate"].as_f64()), (Some(300), Some(150.0)));
    let mut r = report(vec![s]);
    assert!(!r.text().contains("requests:") && !r.json().contains("\"requests\""), "not an --http run");
    r.spec.http = true;
    r.client.requests = 300;
    assert!(r.text().contains("requests: 300 HTTP responses (150/s, 3.0 per connection)"), "{}", r.text());
    let v: serde_json::Value = serde_json::from_str(&r.json()).unwrap();
    assert_eq!(v["requests"].as_u64(), Some(300));
    assert_eq!(v["connect_us"]["p50"], serde_json::Value::Null, "no samples: null, as before");
}

// Tests for story expectations.

#[test]
fn test_time_wait_growth_before_plateau() {
    // 4 s at 100/s with a 10 s TIME-WAIT: everything is still in TIME-WAIT.
    let r = report((1..=4).map(|t| sample(t as f64, 100 * t, 100 * t, 0)).collect());
    let e = Expect::TimeWait { side: Side::Closelab, secs: 10.0, tolerance: 0.1 };
    assert!(e.check(&r).ok, "{:?}", e.check(&r));
    let short = report((1..=4).map(|t| sample(t as f64, 100 * t, 50 * t, 0)).collect());
    assert!(!e.check(&short).ok);
}

#[test]
fn test_time_wait_plateau() {
    // 10 s at 100/s with a 2 s TIME-WAIT: the count settles at 200.
    let r = report((1..=10).map(|t| sample(t as f64, 100 * t, (100 * t).min(200), 0)).collect());
    let e = Expect::TimeWait { side: Side::Closelab, secs: 2.0, tolerance: 0.1 };
    assert!(e.check(&r).ok, "{:?}", e.check(&r));
    let r = report((1..=10).map(|t| sample(t as f64, 100 * t, 100 * t, 0)).collect());
    assert!(!e.check(&r).ok, "no plateau must fail");
}

#[test]
fn test_time_wait_fails_without_traffic() {
    let r = report(vec![sample(1.0, 0, 0, 0)]);
    assert!(!Expect::TimeWait { side: Side::Linux, secs: 60.0, tolerance: 0.1 }.check(&r).ok);
}

#[test]
fn test_grows_and_errors() {
    let mut rising = report((1..=4).map(|t| sample(t as f64, 100 * t, 0, 0)).collect());
    for (i, s) in rising.samples.iter_mut().enumerate() {
        s.closelab[state_index(TcpState::CloseWait)] = 100 * (i as u64 + 1);
    }
    let g = Expect::Grows { side: Side::Closelab, state: TcpState::CloseWait, fraction: 0.9 };
    assert!(g.check(&rising).ok);
    rising.samples[2].closelab[state_index(TcpState::CloseWait)] = 50;
    assert!(!g.check(&rising).ok, "a fall must fail");

    let mut r = report(vec![sample(1.0, 10, 0, 0)]);
    let none = Expect::Errors { errno: "EADDRNOTAVAIL", min: 0, max: Some(0) };
    let some = Expect::Errors { errno: "EADDRNOTAVAIL", min: 1, max: None };
    assert!(none.check(&r).ok && !some.check(&r).ok);
    r.client.error("EADDRNOTAVAIL");
    assert!(!none.check(&r).ok && some.check(&r).ok);
}

#[test]
fn test_stories_are_short_and_named() {
    let all = story::stories();
    let names: Vec<&str> = all.iter().map(|s| s.name).collect();
    assert_eq!(names, ["time-wait-pileup", "port-exhaustion", "close-wait-leak", "syn-recv"]);
    for s in &all {
        for run in &s.runs {
            assert!(run.spec.duration.unwrap() <= Duration::from_secs(5), "{}: {}", s.name, run.label);
            assert!(!run.expect.is_empty());
        }
    }
}

#[test]
fn test_summary_notes_in_text_and_json() {
    let mut r = report(vec![sample(1.0, 10, 10, 0)]);
    assert!(r.json().ends_with(r#""interrupted":false,"notes":[]}"#), "{}", r.json());
    r.notes.push("sock_diag dump failed: \"x\"".into());
    assert!(r.text().contains("note: sock_diag dump failed: \"x\""), "{}", r.text());
    let v: serde_json::Value = serde_json::from_str(&r.json()).unwrap();
    assert_eq!(v["notes"][0], "sock_diag dump failed: \"x\"");
}
