//! The control socket under abuse: idle clients are timed out and cannot
//! starve `closelab ss`; `lab down` removes the control socket file an
//! endpoint killed with SIGKILL left behind. Needs root (SKIPPED otherwise,
//! a failure under `CI=true`).

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::util;
use crate::util::{Closelab, LabGuard, Netns, closelab, run_ok, str_of};

/// The control socket path from closelab's `control socket: PATH` note.
#[track_caller]
fn control_path(cl: &mut Closelab) -> PathBuf {
    let note = cl.wait_for("the control socket note", |v| str_of(v, "text").starts_with("control socket: "));
    PathBuf::from(str_of(&note, "text").trim_start_matches("control socket: "))
}

/// 300 clients connect and send nothing (more than the 128 served at once):
/// `closelab ss` still answers, and every idle client is closed by the
/// endpoint after its idle timeout (5 s), without a request coming.
#[test]
fn test_idle_control_clients_time_out_and_cannot_starve_ss() {
    if !util::require_root("test_idle_control_clients_time_out_and_cannot_starve_ss") {
        return;
    }
    let ns = Netns::new();
    let mut cl = Closelab::start(&ns, "listen --tun cl0 --addr 10.201.0.2/24 --port 7000 --json");
    let path = control_path(&mut cl);
    let idle: Vec<UnixStream> =
        (0..300).map(|i| UnixStream::connect(&path).unwrap_or_else(|e| panic!("idle client {i}: {e}"))).collect();
    let out = run_ok(ns.command(util::BIN).args(["ss", "--tun", "cl0"]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("LISTEN"), "ss answered despite 300 idle clients:\n{text}");
    // Each idle client sees EOF: closed by the endpoint (evicted or timed
    // out). The read timeout only keeps a broken endpoint from hanging the
    // test.
    for (i, mut s) in idle.into_iter().enumerate() {
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut b = [0u8; 16];
        match s.read(&mut b) {
            Ok(0) => {}
            Ok(n) => panic!("idle client {i} got {n} bytes: {:?}", &b[..n]),
            Err(e) => panic!("idle client {i} was not closed by the endpoint: {e}"),
        }
    }
    cl.signal(Signal::SIGINT);
    cl.finish(util::WAIT).assert_code(0);
}

/// An endpoint killed with SIGKILL cannot remove its control socket file;
/// `lab down` does (and says the lab was removed).
#[test]
fn test_lab_down_removes_a_killed_endpoints_control_socket() {
    if !util::require_root("test_lab_down_removes_a_killed_endpoints_control_socket") {
        return;
    }
    let lab = LabGuard::up(&[]);
    let mut cl = Closelab::spawn(&mut closelab(&["listen", "--lab", lab.name(), "--port", "7000", "--json"]));
    let path = control_path(&mut cl);
    cl.signal(Signal::SIGKILL);
    let done = cl.finish(util::WAIT);
    assert!(!done.status.success(), "{done}");
    assert!(path.exists(), "SIGKILL leaves {} behind", path.display());
    let out = run_ok(&mut closelab(&["lab", "down", lab.name()]));
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("lab {} removed\n", lab.name()));
    assert!(!path.exists(), "lab down removed {}", path.display());
}
