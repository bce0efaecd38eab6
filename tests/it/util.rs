//! Helpers for the integration tests that run the real `closelab` binary:
//! unique network namespaces removed on drop, a guard that kills a spawned
//! closelab, command runners that print everything on failure, and readers
//! for closelab's JSON lines.
//!
//! Every test that touches the network gets its own namespace (`clt` + pid +
//! counter, like ripgrep's `NEXT_ID`), so tests run in parallel and the TUN
//! device can be called `cl0` everywhere.

use std::fmt;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use closelab::view::json::{self, Json};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_closelab");

/// How long any single wait may take before the test fails with all output
/// seen so far (generous: a loaded CI machine, a debug build).
pub const WAIT: Duration = Duration::from_secs(10);

static NEXT_ID: AtomicUsize = AtomicUsize::new(0);

/// Whether the test may run: true as root; otherwise a visible SKIPPED
/// line, or a failure under CI (see `closelab::testing`).
pub use closelab::testing::{require_root, require_tool, skip_or_fail};

// ---------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------

/// The command line of `cmd` as one would type it.
pub fn cmdline(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        let a = a.to_string_lossy();
        if a.is_empty() || a.contains(char::is_whitespace) {
            s.push_str(&format!(" {a:?}"));
        } else {
            s.push(' ');
            s.push_str(&a);
        }
    }
    s
}

/// Command, status, stdout and stderr: what a failure message must show.
pub fn describe(cmd: &str, status: &dyn fmt::Display, stdout: &str, stderr: &str) -> String {
    format!(
        "\n\n==========\ncommand: {cmd}\nstatus: {status}\n\
         ---------- stdout ----------\n{stdout}\n---------- stderr ----------\n{stderr}\n==========\n"
    )
}

/// How long a command run by [`run`] may take: closelab commands that
/// should fail at once would otherwise hang the test if they started serving.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `cmd` to completion and returns its output, whatever the status.
/// Kills it and panics with what it printed after [`RUN_TIMEOUT`].
#[track_caller]
pub fn run(cmd: &mut Command) -> Output {
    run_within(cmd, RUN_TIMEOUT)
}

/// [`run`] with another time limit, for commands that run whole stories
/// (demo, scenarios): give at least 3x what the command takes here.
#[track_caller]
pub fn run_within(cmd: &mut Command, timeout: Duration) -> Output {
    run_full(cmd, None, timeout)
}

/// [`run`] with `input` written to the command's stdin (then closed).
#[track_caller]
pub fn run_input(cmd: &mut Command, input: Vec<u8>) -> Output {
    run_full(cmd, Some(input), RUN_TIMEOUT)
}

#[track_caller]
fn run_full(cmd: &mut Command, input: Option<Vec<u8>>, timeout: Duration) -> Output {
    let line = cmdline(cmd);
    let stdin = if input.is_some() { Stdio::piped() } else { Stdio::null() };
    let mut child = match cmd.stdin(stdin).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn() {
        Ok(c) => c,
        Err(e) => panic!("cannot run `{line}`: {e}"),
    };
    let writer = input.map(|data| {
        let mut w = child.stdin.take().unwrap();
        // A write error (the command exited early: EPIPE) shows in its output.
        std::thread::spawn(move || drop(w.write_all(&data)))
    });
    let read_all = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    };
    let out = read_all(Box::new(child.stdout.take().unwrap()));
    let err = read_all(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + timeout;
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                timed_out = true;
                let _ = child.kill();
                break child.wait().expect("waitpid");
            }
            Err(e) => panic!("waitpid for `{line}`: {e}"),
        }
    };
    if let Some(w) = writer {
        let _ = w.join();
    }
    let output = Output { status, stdout: out.join().unwrap_or_default(), stderr: err.join().unwrap_or_default() };
    if timed_out {
        panic!(
            "command still running after {timeout:?}, killed:{}",
            describe(
                &line,
                &output.status,
                &String::from_utf8_lossy(&output.stdout),
                &String::from_utf8_lossy(&output.stderr)
            )
        );
    }
    output
}

/// Runs `cmd`; panics with command, status, stdout and stderr unless it
/// succeeded.
#[track_caller]
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = run(cmd);
    if !out.status.success() {
        panic!(
            "command failed:{}",
            describe(
                &cmdline(cmd),
                &out.status,
                &String::from_utf8_lossy(&out.stdout),
                &String::from_utf8_lossy(&out.stderr)
            )
        );
    }
    out
}

/// Runs closelab with `args` (not in a namespace) and checks the error
/// contract: exit 2, nothing on stdout, exactly one stderr line starting
/// `closelab: ` and containing `needle`. Returns that line.
#[track_caller]
pub fn expect_error(cmd: &mut Command, needle: &str) -> String {
    let out = run(cmd);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let ctx = describe(&cmdline(cmd), &out.status, &stdout, &stderr);
    assert_eq!(out.status.code(), Some(2), "expected exit status 2{ctx}");
    assert_eq!(stdout, "", "an error must print nothing on stdout{ctx}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected exactly one line on stderr{ctx}");
    assert!(stderr.ends_with('\n'), "stderr line must end with a newline{ctx}");
    assert!(lines[0].starts_with("closelab: "), "stderr must start with `closelab: `{ctx}");
    assert!(lines[0].contains(needle), "stderr must mention {needle:?}{ctx}");
    lines[0].to_string()
}

// ---------------------------------------------------------------------------
// Network namespaces
// ---------------------------------------------------------------------------

/// A network namespace made with `ip netns add` (loopback up), deleted on
/// drop, also when the test panics.
pub struct Netns {
    name: String,
}

impl Netns {
    pub fn new() -> Netns {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let name = format!("clt{}x{id}", std::process::id());
        // Interface-name rules (IFNAMSIZ) keep the name usable anywhere.
        assert!(name.len() <= 15, "namespace name {name} longer than 15 characters");
        run_ok(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns { name };
        run_ok(Command::new("ip").args(["-n", &ns.name, "link", "set", "lo", "up"]));
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip netns exec NAME PROGRAM`: a process in the namespace (with /sys
    /// remounted for it, as a user would run closelab).
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// `ip -n NAME ARGS…`.
    pub fn ip(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["-n", &self.name]).args(args);
        c
    }

    /// Runs `f` on a thread inside the namespace. Sockets made there stay in
    /// the namespace after the thread ends, so `f` can return a connected
    /// `TcpStream` or a bound `TcpListener` for the test thread to use.
    #[track_caller]
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        match closelab::sys::netns::in_netns(&self.name, f) {
            Ok(v) => v,
            Err(e) => panic!("in network namespace {}: {e}", self.name),
        }
    }

    /// The TCP sockets of the namespace from `ss -tan`: (state, local, peer).
    pub fn tcp_sockets(&self) -> Vec<(String, String, String)> {
        let out = run_ok(self.command("ss").arg("-tan"));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .skip(1)
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() >= 5).then(|| (f[0].to_string(), f[3].to_string(), f[4].to_string()))
            })
            .collect()
    }

    /// `ss -tan` as text, for failure messages.
    pub fn ss(&self) -> String {
        String::from_utf8_lossy(&run_ok(self.command("ss").arg("-tan")).stdout).into_owned()
    }

    /// Whether a network interface `dev` exists in the namespace.
    pub fn has_link(&self, dev: &str) -> bool {
        run(&mut self.ip(&["link", "show", "dev", dev])).status.success()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let out = run(Command::new("ip").args(["netns", "del", &self.name]));
        if !out.status.success() && !std::thread::panicking() {
            panic!("ip netns del {}: {}", self.name, String::from_utf8_lossy(&out.stderr));
        }
    }
}

// ---------------------------------------------------------------------------
// A running closelab
// ---------------------------------------------------------------------------

/// A closelab process with its stdout read line by line as it appears.
/// Killed (SIGKILL) on drop if still running, so a failing test leaves no
/// process behind in its namespace.
pub struct Closelab {
    cmd: String,
    child: Child,
    lines: Receiver<String>,
    stdout: Vec<String>,
    stderr: Option<JoinHandle<String>>,
}

impl Closelab {
    /// Starts `closelab ARGS…` in `ns` (`args` split at whitespace) and
    /// waits for its first line, written once the TUN device is open and
    /// configured. Panics with stderr if it exits first.
    #[track_caller]
    pub fn start(ns: &Netns, args: &str) -> Closelab {
        let mut c = Closelab::spawn(ns.command(BIN).args(args.split_whitespace()));
        c.next_line("closelab's first line (TUN device ready)");
        c
    }

    /// Spawns `cmd` with stdout and stderr piped.
    #[track_caller]
    pub fn spawn(cmd: &mut Command) -> Closelab {
        let line = cmdline(cmd);
        let mut child = match cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn() {
            Ok(c) => c,
            Err(e) => panic!("cannot spawn `{line}`: {e}"),
        };
        let (tx, rx) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let mut err = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        Closelab { cmd: line, child, lines: rx, stdout: Vec::new(), stderr: Some(stderr) }
    }

    pub fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.child.id() as i32)
    }

    /// Kills the process and panics with everything it wrote.
    #[track_caller]
    fn fail(&mut self, why: &str) -> ! {
        let status = match self.child.try_wait() {
            Ok(Some(s)) => s.to_string(),
            _ => {
                let _ = self.child.kill();
                match self.child.wait() {
                    Ok(s) => format!("{s} (killed by the test)"),
                    Err(e) => format!("unknown: {e}"),
                }
            }
        };
        while let Ok(l) = self.lines.recv_timeout(Duration::from_millis(500)) {
            self.stdout.push(l);
        }
        let stderr = self.stderr.take().and_then(|h| h.join().ok()).unwrap_or_default();
        panic!("{why}{}", describe(&self.cmd, &status, &self.stdout.join("\n"), &stderr));
    }

    /// The next stdout line (within [`WAIT`]).
    #[track_caller]
    pub fn next_line(&mut self, what: &str) -> String {
        match self.lines.recv_timeout(WAIT) {
            Ok(l) => {
                self.stdout.push(l.clone());
                l
            }
            Err(RecvTimeoutError::Timeout) => self.fail(&format!("timed out waiting for {what}")),
            Err(RecvTimeoutError::Disconnected) => self.fail(&format!("closelab exited before {what}")),
        }
    }

    /// Reads JSON lines until one satisfies `pred` (within [`WAIT`]) and
    /// returns it.
    #[track_caller]
    pub fn wait_for(&mut self, what: &str, pred: impl Fn(&Json) -> bool) -> Json {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.stdout.push(l.clone());
                    let v = match json::parse(&l) {
                        Ok(v) => v,
                        Err(e) => self.fail(&format!("stdout line is not JSON ({e}): {l}")),
                    };
                    if pred(&v) {
                        return v;
                    }
                }
                Err(RecvTimeoutError::Timeout) => self.fail(&format!("timed out waiting for {what}")),
                Err(RecvTimeoutError::Disconnected) => self.fail(&format!("closelab exited before {what}")),
            }
        }
    }

    /// Waits for closelab connection `conn` to enter `state`.
    #[track_caller]
    pub fn wait_state(&mut self, conn: u64, state: &str) -> Json {
        self.wait_for(&format!("conn {conn} entering {state}"), |v| {
            is_state(v) && v.get("conn").and_then(Json::as_u64) == Some(conn) && str_of(v, "to") == state
        })
    }

    /// Sends `sig` to closelab.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(self.pid(), sig).expect("kill(2) on closelab");
    }

    /// Waits (within `timeout`) for closelab to exit by itself and collects
    /// its whole output. Kills it and fails the test on timeout.
    #[track_caller]
    pub fn finish(mut self, timeout: Duration) -> Finished {
        let deadline = Instant::now() + timeout;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(s)) => break s,
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
                Ok(None) => self.fail(&format!("closelab still running after {timeout:?}")),
                Err(e) => self.fail(&format!("waitpid: {e}")),
            }
        };
        // The reader thread ends at EOF, which follows the exit.
        while let Ok(l) = self.lines.recv_timeout(WAIT) {
            self.stdout.push(l);
        }
        let stderr = self.stderr.take().and_then(|h| h.join().ok()).unwrap_or_default();
        Finished { cmd: self.cmd.clone(), status, lines: std::mem::take(&mut self.stdout), stderr }
    }
}

impl Drop for Closelab {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A closelab that has exited: status, stdout lines, stderr.
pub struct Finished {
    pub cmd: String,
    pub status: ExitStatus,
    pub lines: Vec<String>,
    pub stderr: String,
}

impl fmt::Display for Finished {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&describe(&self.cmd, &self.status, &self.lines.join("\n"), &self.stderr))
    }
}

impl Finished {
    /// Asserts the exit code (printing everything otherwise).
    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Finished {
        assert_eq!(self.status.code(), Some(code), "unexpected exit status{self}");
        self
    }

    /// Every stdout line as JSON; panics on a line that is not.
    #[track_caller]
    pub fn events(&self) -> Vec<Json> {
        self.lines
            .iter()
            .map(|l| json::parse(l).unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {l}{self}")))
            .collect()
    }

    /// The states closelab connection `conn` went through, from the first
    /// change's `from` on: `["LISTEN", "SYN-RECEIVED", …]`.
    #[track_caller]
    pub fn states(&self, conn: u64) -> Vec<String> {
        state_path(&self.events(), conn)
    }

    /// The state-change events of `conn`.
    pub fn state_events(&self, conn: u64) -> Vec<Json> {
        self.events()
            .into_iter()
            .filter(|v| is_state(v) && v.get("conn").and_then(Json::as_u64) == Some(conn))
            .collect()
    }

    /// The state change of `conn` into `to`.
    #[track_caller]
    pub fn entered(&self, conn: u64, to: &str) -> Json {
        self.state_events(conn)
            .into_iter()
            .find(|v| str_of(v, "to") == to)
            .unwrap_or_else(|| panic!("conn {conn} never entered {to}{self}"))
    }

    /// The last line, which must be the summary.
    #[track_caller]
    pub fn summary(&self) -> Json {
        let last = self.lines.last().unwrap_or_else(|| panic!("no output{self}"));
        let v = json::parse(last).unwrap_or_else(|e| panic!("last line is not JSON ({e}){self}"));
        assert_eq!(str_of(&v, "type"), "summary", "last line must be the summary{self}");
        v
    }
}

// ---------------------------------------------------------------------------
// JSON lines
// ---------------------------------------------------------------------------

/// `v[key]` as a string, or "" if missing or not a string.
pub fn str_of<'a>(v: &'a Json, key: &str) -> &'a str {
    v.get(key).and_then(Json::as_str).unwrap_or("")
}

/// `v[key]` as seconds.
#[track_caller]
pub fn t_of(v: &Json) -> f64 {
    v.get("t").and_then(Json::as_f64).unwrap_or_else(|| panic!("no `t` in {v}"))
}

pub fn is_state(v: &Json) -> bool {
    str_of(v, "type") == "state"
}

/// The states connection `conn` went through, in order, checking that each
/// change starts where the previous one ended.
#[track_caller]
pub fn state_path(events: &[Json], conn: u64) -> Vec<String> {
    let mut path: Vec<String> = Vec::new();
    for v in events.iter().filter(|v| is_state(v) && v.get("conn").and_then(Json::as_u64) == Some(conn)) {
        let (from, to) = (str_of(v, "from"), str_of(v, "to"));
        match path.last() {
            None => path.push(from.to_string()),
            Some(last) => assert_eq!(last, from, "state change {v} does not start where the last one ended"),
        }
        path.push(to.to_string());
    }
    path
}

/// Checks a summary's `reached` object against exactly `expected`.
#[track_caller]
pub fn assert_reached(summary: &Json, connections: u64, expected: &[(&str, u64)]) {
    assert_eq!(summary.get("connections").and_then(Json::as_u64), Some(connections), "summary: {summary}");
    let reached = summary.get("reached").and_then(Json::as_object).unwrap_or_else(|| panic!("no `reached`: {summary}"));
    let mut got: Vec<(String, u64)> =
        reached.iter().map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(u64::MAX))).collect();
    let mut want: Vec<(String, u64)> = expected.iter().map(|(k, n)| (k.to_string(), *n)).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want, "summary: {summary}");
}

// ---------------------------------------------------------------------------
// Labs (`closelab lab …`, `closelab demo --name …`): tests/lab_root.rs and
// tests/demo_root.rs
// ---------------------------------------------------------------------------

static NEXT_LAB: AtomicUsize = AtomicUsize::new(0);

/// Where `closelab lab up` keeps one state file per lab.
pub const LAB_STATE_DIR: &str = "/run/closelab/labs";

/// `n` in base 36 (digits, then a-z).
fn base36(mut n: usize) -> String {
    let digits = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut s = Vec::new();
    loop {
        s.push(digits[n % 36]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    s.reverse();
    String::from_utf8(s).unwrap()
}

/// A lab name no other test uses: `t` + pid (base 36) + `-` + counter
/// (base 36), at most 10 characters (pid_max 4194304 is 5 base-36 digits),
/// skipping names left over from a crashed run. The library's own tests use
/// `cl…` names and `util::Netns` uses `clt…` namespaces: no clash.
pub fn unique_lab_name() -> String {
    let pid = base36(std::process::id() as usize);
    loop {
        let n = base36(NEXT_LAB.fetch_add(1, Ordering::Relaxed));
        let name = format!("t{pid}-{n}");
        assert!(name.len() <= 10, "lab name {name} longer than 10 characters");
        if lab_leftovers(&name).is_empty() {
            return name;
        }
    }
}

/// `closelab ARGS…`.
pub fn closelab(args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args);
    c
}

/// Namespace names from `ip netns list` (first word of each line).
pub fn netns_names() -> Vec<String> {
    let out = run_ok(Command::new("ip").args(["netns", "list"]));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// Link names in the root network namespace from `ip -o link show`
/// (`veth0@if3` → `veth0`).
pub fn root_links() -> Vec<String> {
    let out = run_ok(Command::new("ip").args(["-o", "link", "show"]));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .collect()
}

/// Everything of lab `name` that exists on this host: its namespaces
/// (`<name>-linux`, `<name>-closelab`, or any other `<name>-*`), its state
/// file, links named `<name>-*` in the root namespace. Empty when gone.
pub fn lab_leftovers(name: &str) -> Vec<String> {
    let prefix = format!("{name}-");
    let mut left: Vec<String> =
        netns_names().into_iter().filter(|n| n.starts_with(&prefix)).map(|n| format!("namespace {n}")).collect();
    left.extend(
        root_links().into_iter().filter(|l| l.starts_with(&prefix)).map(|l| format!("link {l} in the root namespace")),
    );
    let state = std::path::Path::new(LAB_STATE_DIR).join(name);
    if state.exists() {
        left.push(format!("state file {}", state.display()));
    }
    left
}

/// Asserts nothing of lab `name` is left (see [`lab_leftovers`]).
#[track_caller]
pub fn assert_lab_gone(name: &str) {
    let left = lab_leftovers(name);
    assert!(left.is_empty(), "lab {name} left behind: {left:?}");
}

/// A lab removed with `closelab lab down NAME` on drop, also when the test
/// panics (`lab down` is idempotent, so a test may remove it first).
pub struct LabGuard {
    name: String,
}

impl LabGuard {
    /// Guards a lab someone else creates (e.g. `closelab demo --name NAME`).
    pub fn new(name: &str) -> LabGuard {
        LabGuard { name: name.to_string() }
    }

    /// `closelab lab up --name <unique> EXTRA…`; panics with the output if it fails.
    #[track_caller]
    pub fn up(extra: &[&str]) -> LabGuard {
        let guard = LabGuard::new(&unique_lab_name());
        let mut args = vec!["lab", "up", "--name", guard.name.as_str()];
        args.extend_from_slice(extra);
        run_ok(&mut closelab(&args));
        guard
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `<name>-linux`: the Linux host's namespace.
    pub fn ns_linux(&self) -> String {
        format!("{}-linux", self.name)
    }

    /// `<name>-closelab`: closelab's namespace.
    pub fn ns_closelab(&self) -> String {
        format!("{}-closelab", self.name)
    }

    /// `closelab lab exec NAME -- ARGS…`.
    pub fn exec(&self, args: &[&str]) -> Command {
        let mut c = closelab(&["lab", "exec", &self.name, "--"]);
        c.args(args);
        c
    }

    /// `ip netns exec <name>-linux ARGS…`.
    pub fn in_linux(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns_linux()]).args(args);
        c
    }

    /// This lab's line of `closelab lab status`, if listed.
    #[track_caller]
    pub fn status_line(&self) -> Option<String> {
        let out = run_ok(&mut closelab(&["lab", "status"]));
        let prefix = format!("{}: ", self.name);
        String::from_utf8_lossy(&out.stdout).lines().find(|l| l.starts_with(&prefix)).map(str::to_string)
    }
}

impl Drop for LabGuard {
    fn drop(&mut self) {
        let out = run(&mut closelab(&["lab", "down", &self.name]));
        if !out.status.success() && !std::thread::panicking() {
            panic!("cleanup `closelab lab down {}` failed: {}", self.name, String::from_utf8_lossy(&out.stderr));
        }
    }
}

/// The state changes on `side` ("closelab" or "linux") of connection `conn`
/// as a path `[from, to, to, …]`, checking each change starts where the last
/// one ended.
#[track_caller]
pub fn side_state_path(events: &[Json], side: &str, conn: u64) -> Vec<String> {
    let mine: Vec<Json> = events
        .iter()
        .filter(|v| str_of(v, "side") == side && v.get("conn").and_then(Json::as_u64) == Some(conn))
        .cloned()
        .collect();
    state_path(&mine, conn)
}

/// Whether `window` occurs in `path` as consecutive entries.
pub fn has_run(path: &[String], window: &[&str]) -> bool {
    path.windows(window.len()).any(|w| w.iter().zip(window).all(|(a, b)| a == b))
}
