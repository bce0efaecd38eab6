//! The real `closelab listen` / `closelab connect` on a real TUN device,
//! against plain Linux sockets in the same network namespace. Needs root:
//! without it each test prints SKIPPED, except under `CI=true`, where it
//! fails.
//!
//! Each test has its own namespace (`util::Netns`), so all of them use the
//! TUN name `cl0`, closelab at 10.201.0.2 (fd00:201::2) and the kernel at
//! 10.201.0.1 (fd00:201::1), and run in parallel. Only
//! `test_listen_active_close` waits out smoltcp's 10 s TIME-WAIT; the others
//! are done in well under a second.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use closelab::endpoint::app::pattern_byte;
use nix::sys::signal::Signal;

use crate::util;
use crate::util::{BIN, Closelab, Netns, WAIT, assert_reached, expect_error, str_of, t_of};

/// A kernel TCP client in `ns`, connected to `addr`, with read/write timeouts
/// so a silent peer fails the test instead of hanging it.
fn connect_in(ns: &Netns, addr: &str) -> TcpStream {
    let addr: SocketAddr = addr.parse().unwrap();
    let s = ns.run(move || TcpStream::connect_timeout(&addr, WAIT));
    let s = s.unwrap_or_else(|e| panic!("kernel client cannot connect to {addr} in {}: {e}", ns.name()));
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.set_write_timeout(Some(WAIT)).unwrap();
    s
}

/// A kernel listener in `ns` on all addresses (10.201.0.1 only exists once
/// closelab has configured the TUN, and the listener must come first).
fn listen_in(ns: &Netns, port: u16) -> TcpListener {
    let l = ns.run(move || TcpListener::bind(("0.0.0.0", port)));
    l.unwrap_or_else(|e| panic!("kernel listener on port {port} in {}: {e}", ns.name()))
}

/// `accept` with a deadline.
fn accept_within(l: &TcpListener, timeout: Duration) -> (TcpStream, SocketAddr) {
    l.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + timeout;
    loop {
        match l.accept() {
            Ok((s, peer)) => {
                s.set_nonblocking(false).unwrap();
                s.set_read_timeout(Some(WAIT)).unwrap();
                s.set_write_timeout(Some(WAIT)).unwrap();
                return (s, peer);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => panic!("kernel listener: no connection from closelab within {timeout:?}: {e}"),
        }
    }
}

/// Reads until EOF; panics if any byte arrives.
#[track_caller]
fn expect_eof(s: &mut TcpStream) {
    let mut b = [0u8; 64];
    match s.read(&mut b) {
        Ok(0) => {}
        Ok(n) => panic!("expected EOF (closelab's FIN), got {n} more bytes: {:?}", &b[..n]),
        Err(e) => panic!("expected EOF (closelab's FIN), got {e}"),
    }
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// The kernel's TCP sockets of `ns` with this local and peer address.
fn kernel_states(ns: &Netns, local: &str, peer: &str) -> Vec<String> {
    ns.tcp_sockets().into_iter().filter(|(_, l, p)| l == local && p == peer).map(|(s, _, _)| s).collect()
}

// Tests for listen with closelab as the active closer.

/// closelab closes first after echoing: FIN-WAIT-1, FIN-WAIT-2 (the Linux
/// client ACKs the FIN), TIME-WAIT (the client's FIN), then CLOSED by the
/// TIME-WAIT timer (`--time-wait 1s`; `--exit-after` waits for it). The
/// passive Linux client never enters TIME-WAIT.
#[test]
fn test_listen_active_close() {
    if !util::require_root("test_listen_active_close") {
        return;
    }
    let ns = Netns::new();
    let mut cl = Closelab::start(
        &ns,
        "listen --tun cl0 --addr 10.201.0.2/24 --port 7000 --app echo --close active --close-after 200ms --exit-after 1 --time-wait 1s --seed 5 --json",
    );
    let mut client = connect_in(&ns, "10.201.0.2:7000");
    let local = client.local_addr().unwrap().to_string();
    client.write_all(b"hello").unwrap();
    let mut echo = [0u8; 5];
    client.read_exact(&mut echo).unwrap();
    assert_eq!(&echo, b"hello");
    expect_eof(&mut client);
    // Close only once closelab has seen the ACK of its FIN, so FIN-WAIT-2
    // is not skipped by a FIN riding on that ACK.
    cl.wait_state(1, "FIN-WAIT-2");
    drop(client);
    cl.wait_state(1, "TIME-WAIT");
    assert_eq!(
        kernel_states(&ns, &local, "10.201.0.2:7000"),
        Vec::<String>::new(),
        "the Linux client closed second: no TIME-WAIT on its side\n{}",
        ns.ss()
    );
    let done = cl.finish(Duration::from_secs(15));
    done.assert_code(0);
    assert_eq!(
        done.states(1),
        strs(&["LISTEN", "SYN-RECEIVED", "ESTABLISHED", "FIN-WAIT-1", "FIN-WAIT-2", "TIME-WAIT", "CLOSED"]),
        "{done}"
    );
    let fw1 = done.entered(1, "FIN-WAIT-1");
    assert_eq!((str_of(&fw1, "cause"), str_of(&fw1, "action")), ("app", "close"), "{done}");
    let est = done.entered(1, "ESTABLISHED");
    let delay = t_of(&fw1) - t_of(&est);
    // Never before the 200 ms; the upper end is 10x (a loaded machine runs
    // the timer late, never early).
    assert!((0.2..2.0).contains(&delay), "--close-after 200ms, closed after {delay} s{done}");
    for to in ["FIN-WAIT-2", "TIME-WAIT"] {
        assert_eq!(str_of(&done.entered(1, to), "cause"), "segment", "{to}{done}");
    }
    // closelab's TIME-WAIT table keeps it the --time-wait given (1 s).
    let tw = done.entered(1, "TIME-WAIT");
    let closed = done.entered(1, "CLOSED");
    assert_eq!(str_of(&closed, "cause"), "timer", "{done}");
    let lasted = t_of(&closed) - t_of(&tw);
    // Never shorter than 1 s (millisecond clock of the table); up to 3x
    // longer on a loaded machine, whose loop wakes late.
    assert!((0.999..=3.0).contains(&lasted), "TIME-WAIT lasted {lasted} s, expected 1 s{done}");
    assert_reached(
        &done.summary(),
        1,
        &[
            ("SYN-RECEIVED", 1),
            ("ESTABLISHED", 1),
            ("FIN-WAIT-1", 1),
            ("FIN-WAIT-2", 1),
            ("TIME-WAIT", 1),
            ("CLOSED", 1),
        ],
    );
}

// Tests for listen with closelab as the passive closer.

/// The Linux client closes first: closelab goes CLOSE-WAIT, LAST-ACK,
/// CLOSED, and the client's socket is in TIME-WAIT (Linux: 60 s).
#[test]
fn test_listen_passive_close_linux_time_wait() {
    if !util::require_root("test_listen_passive_close_linux_time_wait") {
        return;
    }
    let ns = Netns::new();
    let cl = Closelab::start(
        &ns,
        "listen --tun cl0 --addr 10.201.0.2/24 --port 7000 --app echo --close passive --exit-after 1 --seed 5 --json",
    );
    let mut client = connect_in(&ns, "10.201.0.2:7000");
    let local = client.local_addr().unwrap().to_string();
    client.write_all(b"hello").unwrap();
    let mut echo = [0u8; 5];
    client.read_exact(&mut echo).unwrap();
    assert_eq!(&echo, b"hello");
    drop(client);
    let done = cl.finish(WAIT);
    done.assert_code(0);
    assert_eq!(
        done.states(1),
        strs(&["LISTEN", "SYN-RECEIVED", "ESTABLISHED", "CLOSE-WAIT", "LAST-ACK", "CLOSED"]),
        "{done}"
    );
    assert_eq!(str_of(&done.entered(1, "CLOSE-WAIT"), "cause"), "segment", "{done}");
    let la = done.entered(1, "LAST-ACK");
    assert_eq!((str_of(&la, "cause"), str_of(&la, "action")), ("app", "close"), "{done}");
    assert_eq!(str_of(&done.entered(1, "CLOSED"), "cause"), "segment", "{done}");
    assert_reached(
        &done.summary(),
        1,
        &[("SYN-RECEIVED", 1), ("ESTABLISHED", 1), ("CLOSE-WAIT", 1), ("LAST-ACK", 1), ("CLOSED", 1)],
    );
    // The active closer is the one left in TIME-WAIT: the Linux client.
    assert_eq!(kernel_states(&ns, &local, "10.201.0.2:7000"), strs(&["TIME-WAIT"]), "\n{}", ns.ss());
}

// Tests for connect against a Linux listener.

/// closelab connects, sends 5 bytes and closes at once; the Linux server
/// reads exactly those bytes, sees EOF, and closes second.
#[test]
fn test_connect_active_close() {
    if !util::require_root("test_connect_active_close") {
        return;
    }
    let ns = Netns::new();
    let listener = listen_in(&ns, 7001);
    let mut cl = Closelab::start(
        &ns,
        "connect 10.201.0.1:7001 --tun cl0 --addr 10.201.0.2/24 --send 5 --close active --seed 5 --json",
    );
    let (mut server, peer) = accept_within(&listener, WAIT);
    assert_eq!(peer.ip().to_string(), "10.201.0.2");
    let mut got = [0u8; 5];
    server.read_exact(&mut got).unwrap();
    assert_eq!(got.to_vec(), (0..5).map(pattern_byte).collect::<Vec<_>>());
    expect_eof(&mut server);
    cl.wait_state(1, "FIN-WAIT-2");
    drop(server);
    cl.wait_state(1, "TIME-WAIT");
    // TIME-WAIT would take 10 s to end: stop here.
    cl.signal(Signal::SIGINT);
    let done = cl.finish(WAIT);
    done.assert_code(0);
    assert_eq!(
        done.states(1),
        strs(&["CLOSED", "SYN-SENT", "ESTABLISHED", "FIN-WAIT-1", "FIN-WAIT-2", "TIME-WAIT"]),
        "{done}"
    );
    let syn = done.entered(1, "SYN-SENT");
    assert_eq!((str_of(&syn, "cause"), str_of(&syn, "action")), ("app", "connect"), "{done}");
    let fw1 = done.entered(1, "FIN-WAIT-1");
    assert_eq!((str_of(&fw1, "cause"), str_of(&fw1, "action")), ("app", "close"), "{done}");
    assert_reached(
        &done.summary(),
        1,
        &[("SYN-SENT", 1), ("ESTABLISHED", 1), ("FIN-WAIT-1", 1), ("FIN-WAIT-2", 1), ("TIME-WAIT", 1)],
    );
    assert!(
        !ns.tcp_sockets().iter().any(|(s, l, _)| s == "TIME-WAIT" && l.ends_with(":7001")),
        "the Linux server closed second: no TIME-WAIT on its side\n{}",
        ns.ss()
    );
}

/// The Linux server reads the 5 bytes and closes first: closelab goes
/// CLOSE-WAIT, LAST-ACK, CLOSED and exits by itself; the server's socket is
/// in TIME-WAIT.
#[test]
fn test_connect_passive_close() {
    if !util::require_root("test_connect_passive_close") {
        return;
    }
    let ns = Netns::new();
    let listener = listen_in(&ns, 7001);
    let cl = Closelab::start(
        &ns,
        "connect 10.201.0.1:7001 --tun cl0 --addr 10.201.0.2/24 --send 5 --close passive --seed 5 --json",
    );
    let (mut server, peer) = accept_within(&listener, WAIT);
    let mut got = [0u8; 5];
    server.read_exact(&mut got).unwrap();
    assert_eq!(got.to_vec(), (0..5).map(pattern_byte).collect::<Vec<_>>());
    drop(server);
    let done = cl.finish(WAIT);
    done.assert_code(0);
    assert_eq!(
        done.states(1),
        strs(&["CLOSED", "SYN-SENT", "ESTABLISHED", "CLOSE-WAIT", "LAST-ACK", "CLOSED"]),
        "{done}"
    );
    let la = done.entered(1, "LAST-ACK");
    assert_eq!((str_of(&la, "cause"), str_of(&la, "action")), ("app", "close"), "{done}");
    let sent: u64 = done
        .events()
        .iter()
        .filter(|v| str_of(v, "type") == "app" && str_of(v, "action") == "send")
        .filter_map(|v| v.get("bytes").and_then(|b| b.as_u64()))
        .sum();
    assert_eq!(sent, 5, "--send 5{done}");
    assert_reached(
        &done.summary(),
        1,
        &[("SYN-SENT", 1), ("ESTABLISHED", 1), ("CLOSE-WAIT", 1), ("LAST-ACK", 1), ("CLOSED", 1)],
    );
    assert_eq!(kernel_states(&ns, "10.201.0.1:7001", &peer.to_string()), strs(&["TIME-WAIT"]), "\n{}", ns.ss());
}

// Tests for IPv6.

/// A full exchange over IPv6: handshake, echo, the Linux client closes,
/// closelab closes passively; the client ends in TIME-WAIT.
#[test]
fn test_ipv6_listen_passive_close() {
    if !util::require_root("test_ipv6_listen_passive_close") {
        return;
    }
    let ns = Netns::new();
    let cl = Closelab::start(
        &ns,
        "listen --tun cl0 --addr fd00:201::2/64 --port 7000 --app echo --close passive --exit-after 1 --seed 5 --json",
    );
    let mut client = connect_in(&ns, "[fd00:201::2]:7000");
    let local = client.local_addr().unwrap();
    assert_eq!(local.ip().to_string(), "fd00:201::1");
    client.write_all(b"hello over IPv6").unwrap();
    let mut echo = [0u8; 15];
    client.read_exact(&mut echo).unwrap();
    assert_eq!(&echo, b"hello over IPv6");
    drop(client);
    let done = cl.finish(WAIT);
    done.assert_code(0);
    assert_eq!(
        done.states(1),
        strs(&["LISTEN", "SYN-RECEIVED", "ESTABLISHED", "CLOSE-WAIT", "LAST-ACK", "CLOSED"]),
        "{done}"
    );
    let segs: Vec<_> = done.events().into_iter().filter(|v| str_of(v, "type") == "segment").collect();
    assert!(!segs.is_empty(), "{done}");
    for s in &segs {
        let (src, dst) = (str_of(s, "src"), str_of(s, "dst"));
        let (ours, theirs) = if str_of(s, "dir") == "in" { (dst, src) } else { (src, dst) };
        assert_eq!(ours, "[fd00:201::2]:7000", "{s}{done}");
        assert_eq!(theirs, local.to_string(), "{s}{done}");
    }
    assert_eq!(kernel_states(&ns, &local.to_string(), "[fd00:201::2]:7000"), strs(&["TIME-WAIT"]), "\n{}", ns.ss());
}

// Tests for signals.

/// SIGINT (and SIGTERM) end closelab cleanly: exit 0, the summary as the
/// last line, and the non-persistent TUN device gone with it.
#[test]
fn test_signal_exits_0_with_summary() {
    if !util::require_root("test_signal_exits_0_with_summary") {
        return;
    }
    let ns = Netns::new();
    let args = "listen --tun cl0 --addr 10.201.0.2/24 --port 7000 --app echo --close never --seed 5 --json";
    let mut cl = Closelab::start(&ns, args);
    assert!(ns.has_link("cl0"));
    let mut client = connect_in(&ns, "10.201.0.2:7000");
    client.write_all(b"hi").unwrap();
    let mut echo = [0u8; 2];
    client.read_exact(&mut echo).unwrap();
    cl.wait_state(1, "ESTABLISHED");
    cl.signal(Signal::SIGINT);
    let done = cl.finish(WAIT);
    done.assert_code(0);
    assert_eq!(done.stderr, "", "{done}");
    assert_reached(&done.summary(), 1, &[("SYN-RECEIVED", 1), ("ESTABLISHED", 1)]);
    assert!(!ns.has_link("cl0"), "TUN device cl0 still exists after closelab exited{done}");
    drop(client);

    // SIGTERM the same way; the name is free again.
    let cl = Closelab::start(&ns, args);
    cl.signal(Signal::SIGTERM);
    let done = cl.finish(WAIT);
    done.assert_code(0);
    assert_reached(&done.summary(), 0, &[]);
    assert!(!ns.has_link("cl0"), "TUN device cl0 still exists after closelab exited{done}");
}

// Tests for errors that need root to set up.

/// Without root (uid 65534, no capabilities) opening the TUN device fails
/// with a hint.
#[test]
fn test_error_not_root() {
    if !util::require_root("test_error_not_root") {
        return;
    }
    let ns = Netns::new();
    let args = ["listen", "--tun", "cl0", "--addr", "10.201.0.2/24", "--port", "7000"];
    let mut cmd = if util::run(Command::new("setpriv").arg("--version")).status.success() {
        let mut c = ns.command("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN]).args(args);
        c
    } else {
        drop_root_in(&ns, &args)
    };
    let line = expect_error(&mut cmd, "permission denied (run as root or grant CAP_NET_ADMIN)");
    assert_eq!(line, "closelab: cannot open TUN device cl0: permission denied (run as root or grant CAP_NET_ADMIN)");
    assert!(!ns.has_link("cl0"));
}

/// Without setpriv: enter the namespace and drop to uid/gid 65534 between
/// fork and exec.
fn drop_root_in(ns: &Netns, args: &[&str]) -> Command {
    use std::os::unix::process::CommandExt;
    let nsfile = std::fs::File::open(format!("/run/netns/{}", ns.name())).unwrap();
    let mut c = Command::new(BIN);
    c.args(args);
    // SAFETY: only async-signal-safe syscalls run between fork and exec;
    // `nsfile` is moved into the closure and outlives the exec.
    unsafe {
        c.pre_exec(move || {
            use nix::unistd::{Gid, Uid, setgid, setgroups, setuid};
            nix::sched::setns(&nsfile, nix::sched::CloneFlags::CLONE_NEWNET)?;
            setgroups(&[])?;
            setgid(Gid::from_raw(65534))?;
            setuid(Uid::from_raw(65534))?;
            Ok(())
        });
    }
    c
}

/// A second closelab on a TUN name that a running closelab holds fails, and
/// leaves the first one working.
#[test]
fn test_error_tun_in_use_by_closelab() {
    if !util::require_root("test_error_tun_in_use_by_closelab") {
        return;
    }
    let ns = Netns::new();
    let mut first = Closelab::start(
        &ns,
        "listen --tun cl0 --addr 10.201.0.2/24 --port 7000 --app echo --close passive --seed 5 --json",
    );
    let mut second = ns.command(BIN);
    second.args(["listen", "--tun", "cl0", "--addr", "10.201.0.2/24", "--port", "7001"]);
    let line = expect_error(&mut second, "already in use");
    assert!(line.contains("cl0"), "the error must name the device: {line}");
    // The first closelab and its link are untouched.
    let mut client = connect_in(&ns, "10.201.0.2:7000");
    client.write_all(b"still here").unwrap();
    let mut echo = [0u8; 10];
    client.read_exact(&mut echo).unwrap();
    assert_eq!(&echo, b"still here");
    first.wait_state(1, "ESTABLISHED");
    first.signal(Signal::SIGINT);
    first.finish(WAIT).assert_code(0);
}

/// A TUN name taken by an interface of another kind: a bridge, a veth, the
/// loopback. (Not `dummy`: kernels without CONFIG_DUMMY lack it.)
#[test]
fn test_error_tun_name_is_not_a_tun() {
    if !util::require_root("test_error_tun_name_is_not_a_tun") {
        return;
    }
    let ns = Netns::new();
    util::run_ok(&mut ns.ip(&["link", "add", "cl0", "type", "bridge"]));
    util::run_ok(&mut ns.ip(&["link", "add", "cl1", "type", "veth", "peer", "name", "cl1p"]));
    for dev in ["cl0", "cl1", "lo"] {
        let mut cmd = ns.command(BIN);
        cmd.args(["listen", "--tun", dev, "--addr", "10.201.0.2/24", "--port", "7000"]);
        let line = expect_error(&mut cmd, "not a TUN device");
        assert_eq!(
            line,
            format!(
                "closelab: cannot open TUN device {dev}: name already in use by a network interface that is not a TUN device"
            )
        );
    }
    // The interfaces are left as they were: no address added.
    for dev in ["cl0", "cl1"] {
        let addrs = util::run_ok(&mut ns.ip(&["-o", "addr", "show", "dev", dev]));
        assert_eq!(String::from_utf8_lossy(&addrs.stdout), "", "{dev}");
    }
}

/// closelab's own address (or the kernel side's) already on another
/// interface of the namespace: refused before any TUN device exists.
#[test]
fn test_error_address_in_use() {
    if !util::require_root("test_error_address_in_use") {
        return;
    }
    let ns = Netns::new();
    util::run_ok(&mut ns.ip(&["addr", "add", "10.201.0.2/32", "dev", "lo"]));
    let mut cmd = ns.command(BIN);
    cmd.args(["listen", "--tun", "cl0", "--addr", "10.201.0.2/24", "--port", "7000"]);
    let line = expect_error(&mut cmd, "already in use");
    assert_eq!(line, "closelab: address 10.201.0.2 is already in use on lo in this network namespace");
    assert!(!ns.has_link("cl0"));

    let mut cmd = ns.command(BIN);
    cmd.args(["listen", "--tun", "cl0", "--addr", "10.202.0.2/24", "--peer-addr", "10.201.0.2", "--port", "7000"]);
    let line = expect_error(&mut cmd, "already in use");
    assert_eq!(line, "closelab: address 10.201.0.2 is already in use on lo in this network namespace");
    assert!(!ns.has_link("cl0"));
}
