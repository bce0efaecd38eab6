//! The real `closelab lab up/down/status/exec` and `closelab listen --lab`:
//! a lab leaves nothing behind, curl in the Linux namespace talks to
//! closelab's http app (who collects TIME-WAIT depends on who closes first),
//! peer sysctls stay in the lab, two labs do not collide, `status` shows a
//! running endpoint. Needs root: without it each namespaced test prints
//! SKIPPED, except under `CI=true`, where it fails. The curl tests need curl
//! (scripts/setup installs it) and skip the same way without it.
//!
//! Every test builds its own lab (`--name`, [`util::unique_lab_name`])
//! guarded by [`util::LabGuard`] (`closelab lab down NAME` on drop, also on
//! panic), so tests run in parallel. No test runs `lab down --all` for real:
//! it would remove the labs of tests running in parallel (see
//! tests/demo_root.rs, which tests it with `--dry-run`).

use std::process::Command;
use std::time::{Duration, Instant};

use crate::util;
use nix::sys::signal::Signal;

use crate::util::{
    Closelab, LabGuard, assert_lab_gone, closelab, expect_error, has_run, lab_leftovers, require_root, root_links, run,
    run_ok, side_state_path, str_of, unique_lab_name,
};

/// closelab's address in every lab with the default subnet.
const CLOSELAB: &str = "10.201.0.2";

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether curl is there (a missing curl fails under CI).
fn require_curl(test_name: &str) -> bool {
    util::require_tool(test_name, "curl")
}

/// `closelab listen --lab NAME --port 7000 --app http --close active --json`,
/// once its TUN is attached (its first line).
#[track_caller]
fn start_http(lab: &LabGuard) -> Closelab {
    let mut l = Closelab::spawn(&mut closelab(&[
        "listen",
        "--lab",
        lab.name(),
        "--port",
        "7000",
        "--app",
        "http",
        "--close",
        "active",
        "--json",
    ]));
    l.next_line("closelab's first line (TUN attached)");
    l
}

/// curl in the lab's Linux namespace; returns the body.
#[track_caller]
fn curl(lab: &LabGuard, args: &[&str]) -> String {
    let mut argv = vec!["curl", "-sS", "--max-time", "10"];
    argv.extend_from_slice(args);
    stdout(&run_ok(&mut lab.exec(&argv)))
}

/// The Linux host's TCP sockets to closelab's port 7000: (state, local, peer).
fn linux_sockets_to_7000(lab: &LabGuard) -> Vec<(String, String, String)> {
    let out = run_ok(&mut lab.in_linux(&["ss", "-tan"]));
    let peer = format!("{CLOSELAB}:7000");
    stdout(&out)
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 5 && f[4] == peer).then(|| (f[0].to_string(), f[3].to_string(), f[4].to_string()))
        })
        .collect()
}

#[test]
fn test_lab_up_then_down_leaves_no_namespace_veth_or_tun() {
    if !require_root("test_lab_up_then_down_leaves_no_namespace_veth_or_tun") {
        return;
    }
    let name = unique_lab_name();
    let guard = LabGuard::new(&name);
    let out = run_ok(&mut closelab(&["lab", "up", "--name", &name]));
    let text = stdout(&out);
    assert!(text.starts_with(&format!("lab {name} is up\n")), "{text}");
    assert!(text.contains(&format!("closelab lab down {name}")), "{text}");

    let left = lab_leftovers(&name);
    for what in [
        format!("namespace {name}-linux"),
        format!("namespace {name}-closelab"),
        format!("state file /run/closelab/labs/{name}"),
    ] {
        assert!(left.contains(&what), "{what} missing after lab up: {left:?}");
    }
    // Everything is inside the two namespaces; the root namespace is untouched.
    assert!(!left.iter().any(|l| l.starts_with("link ")), "{left:?}");
    let (nl, nc) = (guard.ns_linux(), guard.ns_closelab());
    for (ns, dev) in [(&nl, format!("{name}-vl")), (&nc, format!("{name}-vc")), (&nc, format!("{name}-t"))] {
        let out = run_ok(Command::new("ip").args(["-n", ns, "-o", "link", "show", "dev", &dev]));
        let line = stdout(&out);
        // `lab up` returns once the veth pair transmits (operstate UP), so
        // the Linux host's first ARP request is not dropped.
        if !dev.ends_with("-t") {
            assert!(line.contains("state UP"), "{dev} not up when `lab up` returned: {line}");
        }
    }

    let out = run_ok(&mut closelab(&["lab", "down", &name]));
    assert_eq!(stdout(&out), format!("lab {name} removed\n"));
    assert_lab_gone(&name);
    assert!(!root_links().iter().any(|l| l.starts_with(&format!("{name}-"))));
    let out = run_ok(&mut closelab(&["lab", "down", &name]));
    assert_eq!(stdout(&out), format!("lab {name}: nothing to remove\n"), "down is idempotent");
    drop(guard);
}

#[test]
fn test_curl_http10_gets_body_and_closelab_collects_time_wait() {
    if !require_root("test_curl_http10_gets_body_and_closelab_collects_time_wait")
        || !require_curl("test_curl_http10_gets_body_and_closelab_collects_time_wait")
    {
        return;
    }
    let lab = LabGuard::up(&[]);
    let mut server = start_http(&lab);
    let body = curl(&lab, &["--http1.0", &format!("http://{CLOSELAB}:7000/")]);
    assert_eq!(body, "hello from closelab: /\n");
    // HTTP/1.0: the server closes first, so the server collects TIME-WAIT.
    server.wait_state(1, "TIME-WAIT");
    let linux = linux_sockets_to_7000(&lab);
    assert!(!linux.iter().any(|(s, _, _)| s == "TIME-WAIT"), "the client must not hold TIME-WAIT: {linux:?}");

    server.signal(Signal::SIGINT);
    let done = server.finish(Duration::from_secs(10));
    done.assert_code(0);
    let events = done.events();
    let path = side_state_path(&events, "closelab", 1);
    assert!(has_run(&path, &["ESTABLISHED", "FIN-WAIT-1"]), "{path:?}{done}");
    assert_eq!(path.last().map(String::as_str), Some("TIME-WAIT"), "{path:?}{done}");
    assert!(!path.iter().any(|s| s == "CLOSE-WAIT"), "{path:?}{done}");
    let fw1 = done.entered(1, "FIN-WAIT-1");
    assert_eq!(str_of(&fw1, "cause"), "app", "{fw1}{done}");
    let summary = done.summary();
    let reached = summary.get("reached").unwrap();
    assert_eq!(reached.get("TIME-WAIT").and_then(|v| v.as_u64()), Some(1), "{summary}{done}");
}

#[test]
fn test_curl_keepalive_client_closes_first_and_keeps_time_wait() {
    if !require_root("test_curl_keepalive_client_closes_first_and_keeps_time_wait")
        || !require_curl("test_curl_keepalive_client_closes_first_and_keeps_time_wait")
    {
        return;
    }
    let lab = LabGuard::up(&[]);
    let server = start_http(&lab);
    // HTTP/1.1 (curl's default) keeps the connection alive: closelab's http
    // app does not close it, curl closes it when it exits.
    let body = curl(&lab, &[&format!("http://{CLOSELAB}:7000/")]);
    assert_eq!(body, "hello from closelab: /\n");

    let deadline = Instant::now() + Duration::from_secs(5);
    let mut linux = linux_sockets_to_7000(&lab);
    while !linux.iter().any(|(s, _, _)| s == "TIME-WAIT") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        linux = linux_sockets_to_7000(&lab);
    }
    server.signal(Signal::SIGINT);
    let done = server.finish(Duration::from_secs(10));
    let path = side_state_path(&done.events(), "closelab", 1);
    assert!(
        linux.iter().any(|(s, _, _)| s == "TIME-WAIT"),
        "the Linux client closed first and should hold TIME-WAIT to port 7000; `ss -tan` shows {linux:?}, \
         closelab's connection went {path:?}{done}"
    );
    done.assert_code(0);
    assert!(has_run(&path, &["ESTABLISHED", "CLOSE-WAIT", "LAST-ACK", "CLOSED"]), "{path:?}{done}");
    let last_ack = done.entered(1, "LAST-ACK");
    assert_eq!(str_of(&last_ack, "cause"), "app", "{last_ack}{done}");
}

#[test]
fn test_peer_sysctl_lands_in_the_lab_only() {
    if !require_root("test_peer_sysctl_lands_in_the_lab_only") {
        return;
    }
    let proc_key = "/proc/sys/net/ipv4/tcp_fin_timeout";
    let root_before = std::fs::read_to_string(proc_key).unwrap();
    let value = if root_before.trim() == "7" { "9" } else { "7" };
    let name = unique_lab_name();
    let lab = LabGuard::new(&name);
    let out = run_ok(&mut closelab(&[
        "lab",
        "up",
        "--name",
        &name,
        "--peer-sysctl",
        &format!("net.ipv4.tcp_fin_timeout={value}"),
    ]));
    let text = stdout(&out);
    assert!(text.contains(&format!("net.ipv4.tcp_fin_timeout={value} in {name}-linux only")), "{text}");
    let inside = stdout(&run_ok(&mut lab.in_linux(&["cat", proc_key])));
    assert_eq!(inside.trim(), value, "tcp_fin_timeout in {name}-linux");
    // closelab's namespace starts from the kernel's compiled-in default.
    let other = stdout(&run_ok(Command::new("ip").args(["netns", "exec", &lab.ns_closelab(), "cat", proc_key])));
    assert_eq!(other.trim(), "60", "tcp_fin_timeout in {name}-closelab");
    assert_eq!(std::fs::read_to_string(proc_key).unwrap(), root_before, "the root namespace's value changed");
}

/// Refused before anything is built, so this runs (and must hold) without root too.
#[test]
fn test_peer_sysctl_tw_recycle_refused() {
    let name = unique_lab_name();
    let _lab = LabGuard::new(&name);
    let line = expect_error(
        &mut closelab(&["lab", "up", "--name", &name, "--peer-sysctl", "net.ipv4.tcp_tw_recycle=1"]),
        "removed in Linux 4.12",
    );
    assert!(line.contains("net.ipv4.tcp_tw_recycle"), "{line}");
    assert_lab_gone(&name);
}

#[test]
fn test_two_labs_at_once_do_not_collide() {
    if !require_root("test_two_labs_at_once_do_not_collide") {
        return;
    }
    let a = LabGuard::up(&[]);
    let b = LabGuard::up(&[]);
    for lab in [&a, &b] {
        let line = lab.status_line().unwrap_or_else(|| panic!("lab {} not in `lab status`", lab.name()));
        assert_eq!(
            line,
            format!("{}: linux 10.201.0.1 closelab {CLOSELAB} tun {}-t; no endpoint running", lab.name(), lab.name())
        );
    }
    // Same addresses, separate wires: each Linux host reaches its own closelab.
    if require_curl("test_two_labs_at_once_do_not_collide") {
        let mut sa = start_http(&a);
        let mut sb = start_http(&b);
        assert_eq!(curl(&a, &["--http1.0", &format!("http://{CLOSELAB}:7000/a")]), "hello from closelab: /a\n");
        assert_eq!(curl(&b, &["--http1.0", &format!("http://{CLOSELAB}:7000/b")]), "hello from closelab: /b\n");
        sa.wait_state(1, "TIME-WAIT");
        sb.wait_state(1, "TIME-WAIT");
        for s in [sa, sb] {
            s.signal(Signal::SIGINT);
            let done = s.finish(Duration::from_secs(10));
            done.assert_code(0);
            assert_eq!(done.summary().get("connections").and_then(|v| v.as_u64()), Some(1), "{done}");
        }
    }
    let out = run_ok(&mut closelab(&["lab", "down", a.name()]));
    assert_eq!(stdout(&out), format!("lab {} removed\n", a.name()));
    assert_lab_gone(a.name());
    assert!(b.status_line().is_some(), "removing {} removed {} too", a.name(), b.name());
    assert_eq!(lab_leftovers(b.name()).len(), 3, "{:?}", lab_leftovers(b.name()));
    run_ok(&mut closelab(&["lab", "down", b.name()]));
    assert_lab_gone(b.name());
}

/// Needs no root: `--dry-run` only prints.
#[test]
fn test_lab_up_dry_run_prints_ip_commands_and_creates_nothing() {
    let name = unique_lab_name();
    let _lab = LabGuard::new(&name);
    let out = run_ok(&mut closelab(&[
        "lab",
        "up",
        "--name",
        &name,
        "--dry-run",
        "--peer-sysctl",
        "net.ipv4.tcp_fin_timeout=5",
    ]));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.first(), Some(&format!("ip netns add {name}-linux").as_str()), "{text}");
    for want in [
        format!("ip netns add {name}-closelab"),
        format!("ip -n {name}-linux link add {name}-vl type veth peer name {name}-vc netns {name}-closelab"),
        format!("ip -n {name}-closelab tuntap add dev {name}-t mode tun"),
        format!("ip netns exec {name}-closelab sysctl -w net.ipv4.conf.{name}-vc.proxy_arp=1"),
        format!("ip netns exec {name}-linux sysctl -w net.ipv4.tcp_fin_timeout=5"),
        format!("ip -n {name}-closelab route add {CLOSELAB}/32 dev {name}-t"),
    ] {
        assert!(lines.contains(&want.as_str()), "missing `{want}` in:\n{text}");
    }
    for l in &lines {
        assert!(l.starts_with("ip "), "not an ip command: {l}");
        assert!(l.contains(&format!("{name}-")), "not scoped to the lab: {l}");
    }
    assert_lab_gone(&name);

    let out = run_ok(&mut closelab(&["lab", "down", &name, "--dry-run"]));
    assert_eq!(
        stdout(&out),
        format!(
            "ip netns del {name}-linux\nip netns del {name}-closelab\nrm -f /run/closelab/labs/{name}\nrm -f /run/closelab/ctl/lab-{name}.sock\n"
        )
    );
}

#[test]
fn test_lab_status_lists_running_endpoint_pid() {
    if !require_root("test_lab_status_lists_running_endpoint_pid") {
        return;
    }
    let lab = LabGuard::up(&[]);
    let line = lab.status_line().expect("lab in status");
    assert!(line.ends_with("; no endpoint running"), "{line}");
    let mut server = Closelab::spawn(&mut closelab(&["listen", "--lab", lab.name(), "--port", "7000", "--json"]));
    server.next_line("closelab's first line (TUN attached)");
    let pid = server.pid().as_raw();
    let line = lab.status_line().expect("lab in status");
    assert!(line.contains(&format!("; endpoints: pid {pid} (")), "expected pid {pid}: {line}");
    assert!(line.contains("listen --lab"), "the endpoint's command line is shown: {line}");
    server.signal(Signal::SIGINT);
    server.finish(Duration::from_secs(10)).assert_code(0);
    let line = lab.status_line().expect("lab in status");
    assert!(line.ends_with("; no endpoint running"), "{line}");
    // `lab down` while nothing runs; then the guard's down finds nothing.
    let out = run(&mut closelab(&["lab", "down", lab.name()]));
    assert!(out.status.success());
    assert_lab_gone(lab.name());
}
