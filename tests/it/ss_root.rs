//! `closelab ss` and live `close/abort/shutdown` against a running
//! `closelab listen`/`connect` on a real TUN, with kernel clients in the same
//! network namespace. Needs root: without it each test prints SKIPPED,
//! except under `CI=true`, where it fails.
//!
//! Each test has its own namespace (`util::Netns`), so all use the TUN name
//! `cl0`: their control sockets differ by namespace
//! (`/run/closelab/ctl/tun-cl0@<NETNS>.sock`), and every `closelab ss` runs
//! in the test's namespace, as a user would with `ip netns exec`.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use closelab::event::TcpState;
use closelab::view::json::{self, Json};
use nix::sys::signal::Signal;

use crate::util;
use crate::util::{BIN, Closelab, Netns, WAIT, describe, expect_error, run, run_ok, str_of};

const LISTEN: &str = "listen --tun cl0 --addr 10.201.0.2/24 --port 7000 --app echo --json --seed 5";

/// A kernel TCP client in `ns` connected to closelab's port 7000 that has
/// had `msg` echoed back.
fn echo_client(ns: &Netns, msg: &[u8]) -> TcpStream {
    let addr: SocketAddr = "10.201.0.2:7000".parse().unwrap();
    let mut s = ns.run(move || TcpStream::connect_timeout(&addr, WAIT)).expect("kernel client connects to closelab");
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.set_write_timeout(Some(WAIT)).unwrap();
    s.write_all(msg).unwrap();
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back).unwrap();
    assert_eq!(back, msg);
    s
}

/// `closelab ARGS…` in `ns` (`args` split at whitespace).
fn closelab_in(ns: &Netns, args: &str) -> Command {
    let mut c = ns.command(BIN);
    c.args(args.split_whitespace());
    c
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Runs `closelab ARGS…` in `ns` until its stdout satisfies `pred` (within
/// [`WAIT`]): the kernel's ACKs and FINs arrive on their own time.
#[track_caller]
fn ss_until(ns: &Netns, args: &str, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let mut cmd = closelab_in(ns, args);
        let out = run_ok(&mut cmd);
        let text = stdout(&out);
        if pred(&text) {
            return text;
        }
        if Instant::now() > deadline {
            panic!(
                "closelab {args}: expected output never appeared{}",
                describe(&util::cmdline(&cmd), &out.status, &text, &String::from_utf8_lossy(&out.stderr))
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until every connection of `conns` has entered `state`, in any order.
#[track_caller]
fn wait_all(cl: &mut Closelab, conns: &[u64], state: &str) {
    let left = std::cell::RefCell::new(conns.to_vec());
    cl.wait_for(&format!("conns {conns:?} entering {state}"), |v| {
        if util::is_state(v) && str_of(v, "to") == state {
            left.borrow_mut().retain(|c| v.get("conn").and_then(Json::as_u64) != Some(*c));
        }
        left.borrow().is_empty()
    });
}

/// Waits for the note naming the control socket and returns its path.
#[track_caller]
fn control_path(cl: &mut Closelab) -> String {
    let note = cl.wait_for("the control socket note", |v| {
        str_of(v, "type") == "note" && str_of(v, "text").starts_with("control socket: ")
    });
    str_of(&note, "text")["control socket: ".len()..].to_string()
}

/// The `netstat -n | awk '/^tcp/ {++S[$NF]} …'` one-liner over `lines`, its output sorted (awk's
/// `for (a in S)` order is unspecified).
fn netstat_awk(lines: &str) -> Vec<String> {
    let out = util::run_input(
        Command::new("awk").arg("/^tcp/ {++S[$NF]} END {for(a in S) print a, S[a]}"),
        lines.as_bytes().to_vec(),
    );
    assert!(out.status.success(), "awk: {}", String::from_utf8_lossy(&out.stderr));
    let mut v: Vec<String> = stdout(&out).lines().map(str::to_string).collect();
    v.sort();
    v
}

// The table as `closelab ss` lays it out for 10.201.0.x addresses, with
// no timers: `sw` is the State column's width (its longest state), and the
// peer's Port column is five wide once a row has a client port.

fn header(sw: usize) -> String {
    format!("{:<sw$} Recv-Q Send-Q Local Address:Port Peer Address:Port  Timer Conn\n", "State")
}

fn row(sw: usize, state: &str, rq: u64, sq: u64, port: u16, conn: u64) -> String {
    format!("{state:<sw$} {rq:<6} {sq:<6}    10.201.0.2:7000   10.201.0.1:{port:<5}       {conn}\n")
}

fn listen_row(sw: usize) -> String {
    format!("{:<sw$} 0      0         10.201.0.2:7000      0.0.0.0:*\n", "LISTEN")
}

/// A table with the LISTEN row only (the peer's Port column is 4 wide).
const LISTEN_ONLY: &str = "\
State  Recv-Q Send-Q Local Address:Port Peer Address:Port Timer Conn
LISTEN 0      0         10.201.0.2:7000      0.0.0.0:*
";

// Tests for the table, filters and counts.

/// Three kernel clients: ESTAB rows; two close: CLOSE-WAIT rows whose
/// Recv-Q counts the FIN; filters; `-s` against the netstat | awk
/// one-liner; then close, abort and shutdown by hand show in the timeline.
#[test]
fn test_ss_rows_filters_counts_and_live_control() {
    if !util::require_root("test_ss_rows_filters_counts_and_live_control") {
        return;
    }
    let ns = Netns::new();
    let mut cl = Closelab::start(&ns, &format!("{LISTEN} --close never"));
    let path = control_path(&mut cl);
    assert_eq!(path, format!("/run/closelab/ctl/tun-cl0@{}.sock", ns.name()));
    let meta = std::fs::metadata(&path).unwrap();
    assert!(meta.file_type().is_socket(), "{path}");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{path}: owner only");

    let c1 = echo_client(&ns, b"one");
    let c2 = echo_client(&ns, b"two");
    let mut c3 = echo_client(&ns, b"three");
    let ports: Vec<u16> = [&c1, &c2, &c3].iter().map(|c| c.local_addr().unwrap().port()).collect();
    let estab = format!(
        "{}{}{}{}{}",
        header(6),
        listen_row(6),
        row(6, "ESTAB", 0, 0, ports[0], 1),
        row(6, "ESTAB", 0, 0, ports[1], 2),
        row(6, "ESTAB", 0, 0, ports[2], 3)
    );
    // Until the kernel has ACKed every echo (Send-Q 0).
    let out = ss_until(&ns, "ss --tun cl0", |o| o == estab);
    assert_eq!(out, estab);

    drop(c1);
    drop(c2);
    wait_all(&mut cl, &[1, 2], "CLOSE-WAIT");
    let cw = format!(
        "{}{}{}{}{}",
        header(10),
        listen_row(10),
        row(10, "CLOSE-WAIT", 1, 0, ports[0], 1),
        row(10, "CLOSE-WAIT", 1, 0, ports[1], 2),
        row(10, "ESTAB", 0, 0, ports[2], 3)
    );
    assert_eq!(stdout(&run_ok(&mut closelab_in(&ns, "ss --tun cl0"))), cw, "Recv-Q counts the unread FIN");

    // Filters select rows as ss's do.
    let filtered = |f: &str| stdout(&run_ok(&mut closelab_in(&ns, &format!("ss --tun cl0 {f}"))));
    let cw_rows = row(10, "CLOSE-WAIT", 1, 0, ports[0], 1) + &row(10, "CLOSE-WAIT", 1, 0, ports[1], 2);
    assert_eq!(filtered("state close-wait"), format!("{}{cw_rows}", header(10)));
    assert_eq!(filtered("state CLOSE_WAIT"), format!("{}{cw_rows}", header(10)));
    assert_eq!(filtered("state established"), format!("{}{}", header(5), row(5, "ESTAB", 0, 0, ports[2], 3)));
    assert_eq!(
        filtered("state connected"),
        format!("{}{cw_rows}{}", header(10), row(10, "ESTAB", 0, 0, ports[2], 3)),
        "connected: all but LISTEN and CLOSED"
    );
    assert_eq!(filtered("state listening"), LISTEN_ONLY);
    assert_eq!(filtered("exclude close-wait exclude established"), LISTEN_ONLY);
    assert_eq!(
        filtered("state time-wait"),
        "State Recv-Q Send-Q Local Address:Port Peer Address:Port Timer Conn\n",
        "no rows: the header only"
    );
    let line = expect_error(&mut closelab_in(&ns, "ss --tun cl0 close-wait"), "unknown filter");
    assert_eq!(line, "closelab: unknown filter `close-wait`: write `state close-wait`");

    // -s: the netstat | awk counts, in state order.
    let summary = stdout(&run_ok(&mut closelab_in(&ns, "ss --tun cl0 -s")));
    assert_eq!(summary, "ESTABLISHED 1\nCLOSE_WAIT 2\n");
    assert_eq!(stdout(&run_ok(&mut closelab_in(&ns, "ss --tun cl0 -s state close-wait"))), "CLOSE_WAIT 2\n");
    assert_eq!(
        stdout(&run_ok(&mut closelab_in(&ns, "ss --tun cl0 -s --json"))),
        "{\"state\":\"ESTABLISHED\",\"count\":1}\n{\"state\":\"CLOSE_WAIT\",\"count\":2}\n"
    );
    // The same sockets as netstat -n lines (no LISTEN: netstat -n lists
    // none), through the one-liner people run in production.
    let rows: Vec<Json> = stdout(&run_ok(&mut closelab_in(&ns, "ss --tun cl0 --json")))
        .lines()
        .map(|l| json::parse(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert_eq!(rows.len(), 4);
    assert_eq!(str_of(&rows[0], "state"), "LISTEN");
    assert!(rows[0].get("conn").unwrap().is_null());
    assert_eq!(str_of(&rows[1], "state"), "CLOSE-WAIT");
    assert_eq!(rows[1].get("recv_q").and_then(Json::as_u64), Some(1));
    assert_eq!(str_of(&rows[1], "peer"), format!("10.201.0.1:{}", ports[0]));
    let netstat: String = rows
        .iter()
        .filter(|r| str_of(r, "state") != "LISTEN")
        .map(|r| {
            let state = TcpState::parse(str_of(r, "state")).unwrap();
            format!(
                "tcp {} {} {} {} {}\n",
                r.get("recv_q").unwrap(),
                r.get("send_q").unwrap(),
                str_of(r, "local"),
                str_of(r, "peer"),
                state.netstat_name()
            )
        })
        .collect();
    let mut ours: Vec<String> = summary.lines().map(str::to_string).collect();
    ours.sort();
    assert_eq!(netstat_awk(&netstat), ours, "closelab ss -s has the shape of the awk one-liner");

    // close 1 by hand: CLOSE-WAIT -> LAST-ACK (app close) -> CLOSED.
    let out = run_ok(&mut closelab_in(&ns, "close 1 --tun cl0"));
    assert_eq!(
        stdout(&out),
        format!("conn 1 10.201.0.2:7000-10.201.0.1:{}: close: CLOSE-WAIT -> LAST-ACK\n", ports[0])
    );
    let la = cl.wait_state(1, "LAST-ACK");
    assert_eq!((str_of(&la, "cause"), str_of(&la, "action")), ("app", "close"), "{la}");
    let closed = cl.wait_state(1, "CLOSED");
    assert_eq!(str_of(&closed, "cause"), "segment", "{closed}");
    let line = expect_error(&mut closelab_in(&ns, "close #1 --tun cl0"), "no connection 1");
    assert_eq!(line, "closelab: TUN cl0: no connection 1 (open: 2, 3)");

    // abort by 4-tuple (closelab's view, LOCAL-REMOTE): RST, CLOSED.
    let tuple = format!("10.201.0.2:7000-10.201.0.1:{}", ports[1]);
    let out = run_ok(&mut closelab_in(&ns, &format!("abort {tuple} --tun cl0")));
    assert_eq!(stdout(&out), format!("conn 2 {tuple}: abort: CLOSE-WAIT -> CLOSED\n"));
    let ab = cl.wait_state(2, "CLOSED");
    assert_eq!((str_of(&ab, "cause"), str_of(&ab, "action")), ("app", "abort"), "{ab}");
    let reversed = format!("10.201.0.1:{}-10.201.0.2:7000", ports[2]);
    let line = expect_error(&mut closelab_in(&ns, &format!("close {reversed} --tun cl0")), "LOCAL-REMOTE");
    assert_eq!(
        line,
        format!(
            "closelab: TUN cl0: no connection {reversed} (a 4-tuple is LOCAL-REMOTE as closelab sees it: 10.201.0.2:7000-10.201.0.1:{})",
            ports[2]
        )
    );

    // shutdown #3: closelab's FIN; the kernel client reads EOF.
    let out = run_ok(&mut closelab_in(&ns, "shutdown #3 --tun cl0"));
    assert_eq!(
        stdout(&out),
        format!("conn 3 10.201.0.2:7000-10.201.0.1:{}: shutdown: ESTABLISHED -> FIN-WAIT-1\n", ports[2])
    );
    let fw1 = cl.wait_state(3, "FIN-WAIT-1");
    assert_eq!(str_of(&fw1, "action"), "shutdown", "{fw1}");
    let mut b = [0u8; 8];
    assert_eq!(c3.read(&mut b).unwrap(), 0, "closelab's FIN reached the kernel client");
    cl.wait_state(3, "FIN-WAIT-2");

    cl.signal(Signal::SIGINT);
    cl.finish(WAIT).assert_code(0);
    assert!(!std::path::Path::new(&path).exists(), "{path} removed on exit");
    let line = expect_error(&mut closelab_in(&ns, "ss --tun cl0"), "no closelab endpoint");
    assert_eq!(line, format!("closelab: no closelab endpoint is running for TUN cl0 (no control socket {path})"));
    c3.shutdown(Shutdown::Both).ok();
}

/// TIME-WAIT (closelab closes first) has a `timewait` timer counting down
/// from the default 60 s (Linux's TCP_TIMEWAIT_LEN); the queues of a
/// TIME-WAIT record are 0 0.
#[test]
fn test_ss_time_wait_timer_counts_down() {
    if !util::require_root("test_ss_time_wait_timer_counts_down") {
        return;
    }
    let ns = Netns::new();
    let mut cl = Closelab::start(&ns, &format!("{LISTEN} --close active"));
    let mut c = echo_client(&ns, b"x");
    let mut b = [0u8; 8];
    assert_eq!(c.read(&mut b).unwrap(), 0, "closelab closes after its echo");
    drop(c);
    cl.wait_state(1, "TIME-WAIT");
    let remaining = || {
        let out = stdout(&run_ok(&mut closelab_in(&ns, "ss --tun cl0 --json state time-wait")));
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 1, "{out}");
        let v = json::parse(lines[0]).unwrap();
        assert_eq!(
            (v.get("recv_q").and_then(Json::as_u64), v.get("send_q").and_then(Json::as_u64)),
            (Some(0), Some(0))
        );
        let t = v.get("timer").unwrap_or_else(|| panic!("no timer: {v}"));
        assert_eq!((str_of(t, "name"), t.get("count").and_then(Json::as_u64)), ("timewait", Some(0)), "{v}");
        t.get("remaining").and_then(Json::as_f64).unwrap()
    };
    let first = remaining();
    std::thread::sleep(Duration::from_millis(300));
    let second = remaining();
    // The default is Linux's 60 s (smoltcp's own would be 10 s; the first
    // read comes well within 30 s of entering TIME-WAIT), counting down: at
    // least the 300 ms slept passed between the two reads.
    assert!(first > 30.0 && first <= 60.0, "{first}");
    assert!(second > 0.0 && second <= first - 0.3 + 0.001, "{first} then {second}");
    let text = stdout(&run_ok(&mut closelab_in(&ns, "ss --tun cl0 state time-wait")));
    let row = text.lines().nth(1).unwrap_or_else(|| panic!("no row: {text}"));
    assert!(row.starts_with("TIME-WAIT 0      0 "), "{row}");
    let timer = row.split_whitespace().find(|w| w.starts_with("timer:")).unwrap_or_else(|| panic!("{row}"));
    assert!(timer.starts_with("timer:(timewait,") && timer.ends_with("sec,0)"), "{timer}");
    assert_eq!(stdout(&run_ok(&mut closelab_in(&ns, "ss --tun cl0 -s"))), "TIME_WAIT 1\n");
    assert_eq!(stdout(&run_ok(&mut closelab_in(&ns, "ss --tun cl0 -s state bucket"))), "TIME_WAIT 1\n");
    assert_eq!(stdout(&run_ok(&mut closelab_in(&ns, "ss --tun cl0 -s state big"))), "");
    cl.signal(Signal::SIGINT);
    cl.finish(WAIT).assert_code(0);
}

/// `--time-wait 1s`: the record's timer ends it, then the timeline says `TIME-WAIT -> CLOSED (timer)` and `ss` shows nothing.
#[test]
fn test_ss_time_wait_short_then_gone() {
    if !util::require_root("test_ss_time_wait_short_then_gone") {
        return;
    }
    let ns = Netns::new();
    let mut cl = Closelab::start(&ns, &format!("{LISTEN} --close active --time-wait 1s"));
    let mut c = echo_client(&ns, b"x");
    let mut b = [0u8; 8];
    assert_eq!(c.read(&mut b).unwrap(), 0, "closelab closes after its echo");
    drop(c);
    cl.wait_state(1, "TIME-WAIT");
    cl.wait_for("TIME-WAIT -> CLOSED (timer)", |v| {
        util::is_state(v)
            && str_of(v, "from") == "TIME-WAIT"
            && str_of(v, "to") == "CLOSED"
            && str_of(v, "cause") == "timer"
    });
    let after = stdout(&run_ok(&mut closelab_in(&ns, "ss --tun cl0 -s")));
    assert_eq!(after, "", "no TIME-WAIT left");
    cl.signal(Signal::SIGINT);
    cl.finish(WAIT).assert_code(0);
}

/// `--watch 100ms` redraws in place (clear screen, then the table).
#[test]
fn test_ss_watch_redraws() {
    if !util::require_root("test_ss_watch_redraws") {
        return;
    }
    let ns = Netns::new();
    let mut cl = Closelab::start(&ns, &format!("{LISTEN} --close never"));
    control_path(&mut cl);
    let mut watch = Closelab::spawn(&mut closelab_in(&ns, "ss --tun cl0 --watch 100ms"));
    let mut clears = 0;
    let started = Instant::now();
    while clears < 3 {
        let l = watch.next_line("a redraw");
        if let Some(rest) = l.strip_prefix("\x1b[H\x1b[2J") {
            assert_eq!(rest, "Every 100ms: closelab ss, TUN cl0 (Ctrl-C to stop)");
            clears += 1;
        } else {
            assert!(l.is_empty() || LISTEN_ONLY.lines().any(|x| x == l), "{l:?}");
        }
    }
    // A lower bound only (it cannot fail on a slow machine): three redraws
    // 100 ms apart take at least 200 ms, so this fails only if --watch
    // stops waiting between redraws (a busy loop).
    assert!(started.elapsed() >= Duration::from_millis(200), "three redraws 100 ms apart");
    watch.signal(Signal::SIGINT);
    drop(watch);
    cl.signal(Signal::SIGINT);
    cl.finish(WAIT).assert_code(0);
}

// Tests for the control socket.

/// Another user is refused: by the socket's mode 0600, and (socket opened
/// up by hand) by SO_PEERCRED. The endpoint keeps serving its owner.
#[test]
fn test_control_socket_refuses_other_users() {
    if !util::require_root("test_control_socket_refuses_other_users") {
        return;
    }
    let ns = Netns::new();
    let mut cl = Closelab::start(&ns, &format!("{LISTEN} --close never"));
    let path = control_path(&mut cl);
    let _c = echo_client(&ns, b"hi");
    cl.wait_state(1, "ESTABLISHED");
    let as_nobody = |args: &str| {
        let mut c = ns.command("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN]).args(args.split_whitespace());
        c
    };
    let line = expect_error(&mut as_nobody("ss --tun cl0"), "permission denied");
    assert_eq!(
        line,
        format!("closelab: control socket {path}: permission denied (only the endpoint's owner, uid 0, may use it)")
    );
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    for args in ["ss --tun cl0", "abort 1 --tun cl0"] {
        let line = expect_error(&mut as_nobody(args), "permission denied");
        assert_eq!(
            line,
            "closelab: TUN cl0: permission denied: uid 65534 may not control this endpoint (only its owner, uid 0)"
        );
    }
    let out = ss_until(&ns, "ss --tun cl0 state established", |o| o.lines().count() == 2);
    assert!(out.lines().nth(1).unwrap().ends_with(" 1"), "the refused abort did nothing: {out}");
    cl.signal(Signal::SIGINT);
    cl.finish(WAIT).assert_code(0);
}

/// Removes a file on drop (a control socket the test made itself).
struct RemoveOnDrop(String);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A socket file left by a killed endpoint is replaced; one that answers
/// makes a second endpoint refuse to start.
#[test]
fn test_stale_control_socket_replaced_live_one_refused() {
    if !util::require_root("test_stale_control_socket_replaced_live_one_refused") {
        return;
    }
    let ns = Netns::new();
    let path = format!("/run/closelab/ctl/tun-cl0@{}.sock", ns.name());
    let _cleanup = RemoveOnDrop(path.clone());
    std::fs::create_dir_all("/run/closelab/ctl").unwrap();
    drop(UnixListener::bind(&path).unwrap());
    assert!(std::path::Path::new(&path).exists(), "a stale socket file");
    let mut cl = Closelab::start(&ns, &format!("{LISTEN} --close never"));
    assert_eq!(control_path(&mut cl), path);
    let out = run_ok(&mut closelab_in(&ns, "ss --tun cl0"));
    assert_eq!(stdout(&out), LISTEN_ONLY);
    cl.signal(Signal::SIGINT);
    cl.finish(WAIT).assert_code(0);
    assert!(!std::path::Path::new(&path).exists());

    let live = UnixListener::bind(&path).unwrap();
    let line = expect_error(&mut closelab_in(&ns, &format!("{LISTEN} --close never")), "already running");
    assert_eq!(
        line,
        format!(
            "closelab: another closelab endpoint (pid {}) is already running for TUN cl0 (control socket {path})",
            std::process::id()
        )
    );
    drop(live);
}

/// `closelab connect` serves the control socket too.
#[test]
fn test_ss_and_close_on_connect() {
    if !util::require_root("test_ss_and_close_on_connect") {
        return;
    }
    let ns = Netns::new();
    let l = ns.run(|| TcpListener::bind(("0.0.0.0", 7100))).unwrap();
    let mut cl =
        Closelab::start(&ns, "connect 10.201.0.1:7100 --tun cl0 --addr 10.201.0.2/24 --close never --json --seed 5");
    cl.wait_state(1, "ESTABLISHED");
    let (mut peer, _) = l.accept().unwrap();
    peer.set_read_timeout(Some(WAIT)).unwrap();
    let out = stdout(&run_ok(&mut closelab_in(&ns, "ss --tun cl0")));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "no LISTEN row for connect: {out}");
    assert!(
        lines[1].starts_with("ESTAB ") && lines[1].contains(" 10.201.0.1:7100 ") && lines[1].ends_with(" 1"),
        "{out}"
    );
    let out = run_ok(&mut closelab_in(&ns, "close 1 --tun cl0"));
    assert!(stdout(&out).ends_with(": close: ESTABLISHED -> FIN-WAIT-1\n"), "{}", stdout(&out));
    let mut b = [0u8; 4];
    assert_eq!(peer.read(&mut b).unwrap(), 0, "closelab's FIN");
    cl.wait_state(1, "FIN-WAIT-2");
    cl.signal(Signal::SIGINT);
    cl.finish(WAIT).assert_code(0);
}

/// A lab endpoint's socket is named after the lab; `closelab ss --lab`
/// finds it from anywhere.
#[test]
fn test_ss_lab_endpoint() {
    if !util::require_root("test_ss_lab_endpoint") {
        return;
    }
    let lab = util::LabGuard::up(&[]);
    let mut cl = Closelab::spawn(&mut util::closelab(&["listen", "--lab", lab.name(), "--port", "7000", "--json"]));
    cl.next_line("closelab's first line (TUN attached)");
    let path = control_path(&mut cl);
    assert_eq!(path, format!("/run/closelab/ctl/lab-{}.sock", lab.name()));
    let out = stdout(&run_ok(&mut util::closelab(&["ss", "--lab", lab.name()])));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[1].starts_with("LISTEN ") && lines[1].contains(".2:7000 ") && lines[1].ends_with(":*"), "{out}");
    cl.signal(Signal::SIGINT);
    cl.finish(WAIT).assert_code(0);
    assert!(!std::path::Path::new(&path).exists());
}

// Tests for errors (no root needed).

#[test]
fn test_ss_errors_without_endpoint() {
    let tun = format!("nx{}", std::process::id());
    let line = expect_error(&mut util::closelab(&["ss", "--tun", &tun]), "no closelab endpoint");
    assert_eq!(
        line,
        format!(
            "closelab: no closelab endpoint is running for TUN {tun} (no control socket /run/closelab/ctl/tun-{tun}.sock)"
        )
    );
    let line = expect_error(&mut util::closelab(&["close", "3", "--lab", &tun]), "no closelab endpoint");
    assert_eq!(
        line,
        format!(
            "closelab: no closelab endpoint is running for lab {tun} (no control socket /run/closelab/ctl/lab-{tun}.sock)"
        )
    );
    expect_error(&mut util::closelab(&["ss", "--tun", "a", "--lab", "b"]), "give --tun or --lab, not both");
    expect_error(&mut util::closelab(&["abort", "x", "--tun", &tun]), "invalid connection `x`");
    expect_error(&mut util::closelab(&["ss", "state", "nope"]), "unknown state `nope`");
    expect_error(&mut util::closelab(&["ss", "--watch", "0s"]), "--watch needs an interval above 0");
    let out = run(&mut util::closelab(&["ss", "--help"]));
    assert!(out.status.success());
}
