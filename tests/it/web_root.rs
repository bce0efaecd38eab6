//! The crawler (`closelab connect --app get:…`) against real web servers
//! that `closelab lab serve` starts in a lab: apache2, nginx and python's
//! http.server. Status codes and bodies (Content-Length and chunked, up to
//! 4 MiB) arrive intact; the seed's leak (`--on-error leak`) leaves one
//! CLOSE-WAIT per 404 on closelab while Apache's FIN-WAIT-2 expire, until
//! the budget fails requests; `release` reuses one connection and ends in
//! TIME-WAIT on the crawler; keep-alive ends a leaked CLOSE-WAIT once Linux
//! has forgotten the connection; `lab down` stops the servers.
//!
//! Needs root (SKIPPED otherwise, a failure under `CI=true`) and the servers
//! (scripts/setup installs apache2 and nginx; missing ones skip the same way).

use std::time::{Duration, Instant};

use crate::util::{Closelab, Finished, LabGuard, closelab, require_root, run_ok, side_state_path, str_of};
use nix::sys::signal::Signal;

const LINUX: &str = "10.201.0.1";

/// The server's binary is installed (in sbin, outside a user's PATH);
/// otherwise skipped, or failed under CI (scripts/setup installs them).
fn have(test: &str, bin: &str) -> bool {
    let found = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"].iter().any(|d| std::path::Path::new(d).join(bin).exists());
    found || closelab::testing::skip_or_fail(test, &format!("needs {bin} (scripts/setup installs it)"))
}

fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

/// closelab's pattern file of `n` bytes (byte i is i % 251).
fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

/// `lab serve` output's pid.
#[track_caller]
fn serve(lab: &LabGuard, server: &str, extra: &[&str]) -> u32 {
    let mut args = vec!["lab", "serve", lab.name(), server];
    args.extend_from_slice(extra);
    let out = run_ok(&mut closelab(&args));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let first = text.lines().next().unwrap_or("");
    assert!(first.starts_with(&format!("{server} is serving http://{LINUX}:")), "{text}");
    first.rsplit("(pid ").next().and_then(|s| s.trim_end_matches(')').parse().ok()).unwrap_or_else(|| panic!("{text}"))
}

/// The crawler's per-request notes: (path, status, body bytes, framing, fnv1a).
fn exchanges(f: &Finished) -> Vec<(String, u16, u64, String, u64)> {
    f.events()
        .iter()
        .filter(|v| str_of(v, "type") == "note")
        .filter_map(|v| {
            let t = str_of(v, "text");
            let rest = t.strip_prefix("http: GET ")?;
            let (path, rest) = rest.split_once(" -> ")?;
            let status: u16 = rest.split(' ').next()?.parse().ok()?;
            let (_, rest) = rest.split_once(", ")?;
            let bytes: u64 = rest.split(' ').next()?.parse().ok()?;
            let inner = rest.split_once('(')?.1.split_once(')')?.0;
            let (framing, sum) = inner.split_once(", fnv1a ")?;
            Some((path.to_string(), status, bytes, framing.to_string(), u64::from_str_radix(sum, 16).ok()?))
        })
        .collect()
}

fn notes(f: &Finished) -> Vec<String> {
    f.events().iter().filter(|v| str_of(v, "type") == "note").map(|v| str_of(v, "text").to_string()).collect()
}

fn crawl(lab: &LabGuard, port: u16, extra: &[&str]) -> Closelab {
    let remote = format!("{LINUX}:{port}");
    let mut args = vec!["connect", "--lab", lab.name(), remote.as_str(), "--json", "--seed", "5"];
    args.extend_from_slice(extra);
    let mut c = Closelab::spawn(&mut closelab(&args));
    c.next_line("closelab's first line");
    c
}

/// Bodies intact from `server`: small files, a 404, 1 and 4 MiB by
/// Content-Length (and chunked where the server does it).
fn bodies_intact(test: &str, server: &str, bin: &str, chunked: bool) {
    if !require_root(test) || !have(test, bin) {
        return;
    }
    let lab = LabGuard::up(&[]);
    serve(&lab, server, &[]);
    let mut urls = vec!["/files/0001.txt", "/missing/a", "/big/1m.bin", "/big/4m.bin", "/files/0200.txt"];
    if chunked {
        urls.extend(["/chunked/1m.bin", "/chunked/4m.bin"]);
    }
    let app = format!("--app=get:{}", urls.join(","));
    let f = crawl(&lab, 80, &[&app]).finish(Duration::from_secs(60));
    f.assert_code(0);
    let got = exchanges(&f);
    let paths: Vec<&str> = got.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(paths, urls, "{f}");
    let small = |i: usize| format!("closelab file {i:04}\n").into_bytes();
    for (path, status, bytes, framing, sum) in &got {
        let want: Option<Vec<u8>> = match path.as_str() {
            "/files/0001.txt" => Some(small(1)),
            "/files/0200.txt" => Some(small(200)),
            "/big/1m.bin" | "/chunked/1m.bin" => Some(pattern(1 << 20)),
            "/big/4m.bin" | "/chunked/4m.bin" => Some(pattern(4 << 20)),
            _ => None,
        };
        match want {
            Some(body) => {
                assert_eq!(*status, 200, "{path}{f}");
                assert_eq!((*bytes, *sum), (body.len() as u64, fnv1a(&body)), "{path}: body differs{f}");
                let want_framing = if path.starts_with("/chunked/") { "chunked" } else { "content-length" };
                assert_eq!(framing, want_framing, "{path}");
            }
            None => assert_eq!(*status, 404, "{path}{f}"),
        }
    }
    assert!(notes(&f).iter().any(|n| n.contains(&format!("{} responses", urls.len()))), "{f}");
}

#[test]
fn test_apache_bodies_intact() {
    bodies_intact("test_apache_bodies_intact", "apache", "apache2", false);
}

#[test]
fn test_nginx_bodies_intact_content_length_and_chunked() {
    bodies_intact("test_nginx_bodies_intact_content_length_and_chunked", "nginx", "nginx", true);
}

#[test]
fn test_python_http10_server_closes_each() {
    let test = "test_python_http10_server_closes_each";
    if !require_root(test) || !have(test, "python3") {
        return;
    }
    let lab = LabGuard::up(&[]);
    serve(&lab, "python", &[]);
    let f = crawl(&lab, 80, &["--app", "get:/files/0007.txt,/missing/b,/big/1m.bin"]).finish(Duration::from_secs(60));
    f.assert_code(0);
    let got = exchanges(&f);
    assert_eq!(got.iter().map(|e| e.1).collect::<Vec<_>>(), vec![200, 404, 200], "{f}");
    assert_eq!((got[2].2, got[2].4), (1 << 20, fnv1a(&pattern(1 << 20))));
    // HTTP/1.0: the server closes first, every time; closelab, the passive
    // closer, goes CLOSE-WAIT -> LAST-ACK and never holds TIME-WAIT.
    for conn in 1..=3 {
        let path = side_state_path(&f.events(), "closelab", conn);
        assert_eq!(path, ["CLOSED", "SYN-SENT", "ESTABLISHED", "CLOSE-WAIT", "LAST-ACK", "CLOSED"], "conn {conn}{f}");
        // python, the active closer, holds the TIME-WAIT (observed in its namespace).
        let linux = side_state_path(&f.events(), "linux", conn);
        assert!(linux.iter().any(|s| s == "FIN-WAIT-1"), "linux conn {conn}: {linux:?}{f}");
    }
}

/// 50 URLs, every 5th missing, one at a time (the seed's crawler).
fn url_file(dir: &str) -> String {
    let path = format!("{}/urls-{}.txt", dir, std::process::id());
    let text: String = (1..=50)
        .map(|i| if i % 5 == 0 { format!("/missing/{i}\n") } else { format!("http://{LINUX}/files/{i:04}.txt\n") })
        .collect();
    std::fs::write(&path, text).unwrap();
    path
}

/// Linux's TCP sockets with closelab, by `ss` state name.
fn linux_states(lab: &LabGuard) -> Vec<String> {
    let out = run_ok(&mut lab.in_linux(&["ss", "-tan", "dst", "10.201.0.2"]));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[test]
fn test_leak_story_close_wait_per_404_then_too_many_open_files() {
    let test = "test_leak_story_close_wait_per_404_then_too_many_open_files";
    if !require_root(test) || !have(test, "apache2") {
        return;
    }
    let lab = LabGuard::up(&["--peer-sysctl", "net.ipv4.tcp_fin_timeout=3"]);
    serve(&lab, "apache", &["--keepalive-timeout", "1s"]);
    let urls = url_file(&std::env::temp_dir().to_string_lossy());
    let mut c = crawl(&lab, 80, &["--urls", &urls, "--on-error", "leak", "--max-conns", "6"]);
    // Each 404 leaks its connection; Apache closes it after its keep-alive
    // timeout and closelab, which never closes it, sits in CLOSE-WAIT.
    for conn in 1..=6 {
        c.wait_state(conn, "CLOSE-WAIT");
    }
    // Apache's side: orphaned FIN-WAIT-2 after its lingering close, gone
    // after tcp_fin_timeout (3 s here); closelab's CLOSE-WAIT stays.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen_fin_wait_2 = false;
    loop {
        let states = linux_states(&lab);
        seen_fin_wait_2 |= states.iter().any(|s| s == "FIN-WAIT-2");
        if seen_fin_wait_2 && states.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "Linux still has {states:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let ss = run_ok(&mut closelab(&["ss", "--lab", lab.name(), "-s"]));
    assert_eq!(String::from_utf8_lossy(&ss.stdout).trim(), "CLOSE_WAIT 6");
    c.signal(Signal::SIGINT);
    let f = c.finish(Duration::from_secs(10));
    let _ = std::fs::remove_file(&urls);
    let got = exchanges(&f);
    // 30 URLs answered (24 x 200, 6 x 404): the 6th 404 spends the budget
    // and the other 20 fail.
    assert_eq!(got.len(), 30, "{f}");
    assert_eq!(got.iter().filter(|e| e.1 == 404).count(), 6);
    let failed = notes(&f).iter().filter(|n| n.contains("failed: too many open files (6 connections held")).count();
    assert_eq!(failed, 20, "{f}");
    let counts = notes(&f).into_iter().find(|n| n.starts_with("crawl: ")).unwrap();
    assert!(counts.starts_with("crawl: 50 URLs, 30 responses (24 x 200, 6 x 404)"), "{counts}");
    assert!(counts.contains("20 failed: too many open files"), "{counts}");
    for conn in 1..=6 {
        // CLOSE-WAIT until Ctrl-C, whose graceful stop closes it.
        let cl = side_state_path(&f.events(), "closelab", conn);
        assert_eq!(&cl[2..5], ["ESTABLISHED", "CLOSE-WAIT", "LAST-ACK"], "conn {conn}{f}");
        // The same connection on Apache's side, observed through sock_diag:
        // FIN-WAIT-2 for seconds (its FIN-WAIT-1 lasts microseconds and may
        // fall between two samples), then forgotten.
        let lx = side_state_path(&f.events(), "linux", conn);
        assert!(lx.iter().any(|s| s == "FIN-WAIT-2"), "linux conn {conn}: {lx:?}{f}");
        assert_eq!(lx.last().map(String::as_str), Some("CLOSED"), "linux conn {conn}: {lx:?}{f}");
    }
}

#[test]
fn test_release_story_one_connection_time_wait_on_crawler() {
    let test = "test_release_story_one_connection_time_wait_on_crawler";
    if !require_root(test) || !have(test, "apache2") {
        return;
    }
    let lab = LabGuard::up(&["--peer-sysctl", "net.ipv4.tcp_fin_timeout=3"]);
    serve(&lab, "apache", &["--keepalive-timeout", "1s"]);
    let urls = url_file(&std::env::temp_dir().to_string_lossy());
    let f = crawl(&lab, 80, &["--urls", &urls, "--on-error", "release", "--max-conns", "6"])
        .finish(Duration::from_secs(60));
    f.assert_code(0);
    let _ = std::fs::remove_file(&urls);
    let got = exchanges(&f);
    assert_eq!(got.iter().filter(|e| e.1 == 200).count(), 40, "{f}");
    assert_eq!(got.iter().filter(|e| e.1 == 404).count(), 10, "{f}");
    // One keep-alive connection served all 50; the crawler closed it at
    // the end, first, and holds its TIME-WAIT (60 s, a record in closelab's
    // table) when it exits, as a Linux client would.
    let path = side_state_path(&f.events(), "closelab", 1);
    assert_eq!(path, ["CLOSED", "SYN-SENT", "ESTABLISHED", "FIN-WAIT-1", "TIME-WAIT"], "{f}");
    assert!(f.lines.iter().any(|l| l.contains("TIME-WAIT table at exit: 1 in TIME-WAIT")), "{f}");
    assert!(side_state_path(&f.events(), "closelab", 2).is_empty(), "{f}");
}

#[test]
fn test_keepalive_ends_leaked_close_wait_once_linux_forgot() {
    let test = "test_keepalive_ends_leaked_close_wait_once_linux_forgot";
    if !require_root(test) || !have(test, "apache2") {
        return;
    }
    let lab = LabGuard::up(&["--peer-sysctl", "net.ipv4.tcp_fin_timeout=3"]);
    serve(&lab, "apache", &["--keepalive-timeout", "1s"]);
    let mut c = crawl(&lab, 80, &["--app", "get:/missing/x", "--on-error", "leak", "--keepalive", "2s"]);
    c.wait_state(1, "CLOSE-WAIT");
    // Probes are answered while Apache's FIN-WAIT-2 lives; the first one
    // after it expired draws an RST.
    let closed = c.wait_for("conn 1 closed by the peer's RST", |v| {
        crate::util::is_state(v)
            && str_of(v, "side") == "closelab"
            && v.get("conn").and_then(|c| c.as_u64()) == Some(1)
            && str_of(v, "to") == "CLOSED"
    });
    assert_eq!(str_of(&closed, "from"), "CLOSE-WAIT");
    assert_eq!(str_of(&closed, "cause"), "segment");
    c.signal(Signal::SIGINT);
    let f = c.finish(Duration::from_secs(10));
    let rst_in = f
        .events()
        .iter()
        .any(|v| str_of(v, "type") == "segment" && str_of(v, "dir") == "in" && str_of(v, "flags").contains('R'));
    assert!(rst_in, "{f}");
}

#[test]
fn test_lab_down_stops_the_servers() {
    let test = "test_lab_down_stops_the_servers";
    if !require_root(test) || !have(test, "apache2") || !have(test, "nginx") {
        return;
    }
    let lab = LabGuard::up(&[]);
    let pids =
        [serve(&lab, "apache", &[]), serve(&lab, "nginx", &["--port", "81"]), serve(&lab, "python", &["--port", "82"])];
    let status = String::from_utf8_lossy(&run_ok(&mut closelab(&["lab", "status"])).stdout).into_owned();
    for (kind, pid) in ["apache", "nginx", "python"].iter().zip(pids) {
        assert!(status.contains(&format!("  web server: {kind} (pid {pid}, closelab lab serve)")), "{status}");
    }
    let again = crate::util::run(&mut closelab(&["lab", "serve", lab.name(), "nginx", "--port", "81"]));
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("nginx already runs in lab"));
    run_ok(&mut closelab(&["lab", "down", lab.name()]));
    for pid in pids {
        // Gone, or a zombie waiting for init to reap it: not running.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rsplit_once(')').map(|s| s.1.trim_start().chars().next().unwrap_or('?'));
        assert!(matches!(state, None | Some('Z') | Some('X')), "pid {pid} still runs: {stat}");
    }
    assert!(!std::path::Path::new(&format!("/run/closelab/web/{}", lab.name())).exists());
}

#[test]
fn test_sigint_closes_the_crawlers_connections_so_the_server_forgets_them() {
    let test = "test_sigint_closes_the_crawlers_connections_so_the_server_forgets_them";
    if !require_root(test) || !have(test, "nginx") {
        return;
    }
    let lab = LabGuard::up(&[]);
    // nginx keeps an idle connection 75 s: a leaked one is ESTABLISHED on
    // both ends when closelab is stopped.
    serve(&lab, "nginx", &[]);
    let mut c = crawl(&lab, 80, &["--app", "get:/missing/1", "--on-error", "leak"]);
    c.wait_for("the crawl's end", |v| str_of(v, "text").starts_with("crawl: "));
    assert_eq!(linux_states(&lab), ["ESTAB"]);
    c.signal(Signal::SIGINT);
    let f = c.finish(Duration::from_secs(10));
    f.assert_code(0);
    let path = side_state_path(&f.events(), "closelab", 1);
    assert_eq!(&path[..4], ["CLOSED", "SYN-SENT", "ESTABLISHED", "FIN-WAIT-1"], "{f}");
    assert!(notes(&f).iter().any(|n| n.starts_with("interrupted: closing 1 connection(s) (FIN)")), "{f}");
    // nginx got the FIN, closed, and holds nothing towards the vanished
    // client (no FIN-WAIT-1 retransmitting, no ESTABLISHED).
    let deadline = Instant::now() + Duration::from_secs(5);
    while !linux_states(&lab).is_empty() {
        assert!(Instant::now() < deadline, "nginx still has {:?}{f}", linux_states(&lab));
        std::thread::sleep(Duration::from_millis(50));
    }
}
