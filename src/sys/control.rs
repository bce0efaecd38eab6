//! The control socket of a running endpoint (`closelab listen`/`connect`)
//! and its client (`closelab ss`, `closelab close|abort|shutdown CONN`).
//!
//! A Unix stream socket in [`CTL_DIR`], named after what the user types to
//! find it: `lab-<LAB>.sock` for `--lab`, `tun-<TUN>.sock` for `--tun`. TUN
//! names are per network namespace (every root test uses `cl0` in its own),
//! so a TUN in a namespace other than pid 1's is `tun-<TUN>@<NETNS>.sock`,
//! NETNS being its `ip netns` name; `closelab ss --tun cl0` run in the same
//! namespace (`ip netns exec NETNS closelab ss --tun cl0`) finds it, and so
//! does one run elsewhere when only one namespace serves `cl0`.
//!
//! Only the endpoint's owner may use it: the socket file is mode 0600 (made
//! under a temporary name and renamed into place, so it is never reachable
//! with wider permissions) and every connection's SO_PEERCRED uid must be
//! the endpoint's effective uid, else it is answered
//! `error: permission denied: …` and closed.
//!
//! Protocol: one request line (`ss`, `close 3`, `abort 10.201.0.2:7000-10.201.0.1:41234`,
//! see [`crate::control_proto::Request`]); the answer is JSON lines and `end`, or one
//! line `error: MESSAGE`; then the endpoint closes the connection. The
//! endpoint serves it from its mio loop without ever blocking: the socket
//! and its connections are registered with an inner `Poll`, whose fd the
//! loop watches (`run::run_with`).

use crate::config::os_error_text;
use std::collections::HashMap;
use std::fs;
use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration as StdDuration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use smoltcp::time::Instant;

pub use crate::control_proto::answer;
use crate::control_proto::{Action, ActionResult, ConnRef, END, ERROR, Request};
use crate::endpoint::Endpoint;
use crate::sys::netns;
use crate::view::ss::{self, Filter, Row};

/// Where control sockets live.
pub const CTL_DIR: &str = "/run/closelab/ctl";

/// How long a client waits for an answer.
const CLIENT_TIMEOUT: StdDuration = StdDuration::from_secs(5);

/// A request longer than this is refused (the longest real one is an IPv6
/// 4-tuple, well under 200 bytes).
const MAX_REQUEST: usize = 4096;

/// A client that has not sent its request and read its answer within this
/// is dropped (an idle client held its slot forever: 1,100 of them starved
/// `closelab ss`).
pub const IDLE_TIMEOUT: smoltcp::time::Duration = smoltcp::time::Duration::from_secs(5);

/// Clients served at once; a new one past it evicts the oldest.
pub const MAX_CLIENTS: usize = 128;

/// `sun_path` holds 108 bytes with its NUL.
const MAX_PATH: usize = 107;

/// Which endpoint a control socket belongs to: what the user passed to
/// `listen`/`connect` and passes again to `ss`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Tun(String),
    Lab(String),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            Target::Tun(t) => write!(f, "TUN {t}"),
            Target::Lab(l) => write!(f, "lab {l}"),
        }
    }
}

/// The socket's file name for `target`; `netns` is the network namespace
/// of a TUN outside pid 1's (labs are unique by name anyway).
pub fn file_name(target: &Target, netns: Option<&str>) -> String {
    match (target, netns) {
        (Target::Lab(l), _) => format!("lab-{l}.sock"),
        (Target::Tun(t), None) => format!("tun-{t}.sock"),
        (Target::Tun(t), Some(ns)) => format!("tun-{t}@{ns}.sock"),
    }
}

/// [`file_name`] read back: the target and the namespace of a TUN.
pub fn parse_file_name(name: &str) -> Option<(Target, Option<String>)> {
    let stem = name.strip_suffix(".sock")?;
    if let Some(l) = stem.strip_prefix("lab-") {
        return (!l.is_empty()).then(|| (Target::Lab(l.to_string()), None));
    }
    let t = stem.strip_prefix("tun-")?;
    match t.split_once('@') {
        Some((tun, ns)) if !tun.is_empty() && !ns.is_empty() => {
            Some((Target::Tun(tun.to_string()), Some(ns.to_string())))
        }
        Some(_) => None,
        None => (!t.is_empty()).then(|| (Target::Tun(t.to_string()), None)),
    }
}

/// How `--tun`/`--lab` spell a socket's target in messages.
fn flag_of(name: &str) -> String {
    match parse_file_name(name) {
        Some((Target::Tun(t), None)) => format!("--tun {t}"),
        // What to type: from the host, `--tun T` names the host's TUN T.
        Some((Target::Tun(t), Some(ns))) => match ns.strip_prefix("netns-") {
            Some(inode) => format!("`closelab ss --tun {t}` run inside its unnamed network namespace (inode {inode})"),
            None => format!("`ip netns exec {ns} closelab ss --tun {t}`"),
        },
        Some((Target::Lab(l), _)) => format!("--lab {l}"),
        None => name.to_string(),
    }
}

/// The calling thread's network namespace: `None` for pid 1's (the host's),
/// its `ip netns` name, or `netns-INODE` for an unnamed one.
pub fn netns_label() -> io::Result<Option<String>> {
    let own = fs::metadata("/proc/thread-self/ns/net")?;
    let id = (own.dev(), own.ino());
    // Only root may look at pid 1's namespace; others fall back to "not
    // a named one" below.
    let init = fs::metadata("/proc/1/ns/net").ok().map(|m| (m.dev(), m.ino()));
    if init == Some(id) {
        return Ok(None);
    }
    for name in netns::list()? {
        if netns::ns_id(&name).ok() == Some(id) {
            return Ok(Some(name));
        }
    }
    Ok(if init.is_none() { None } else { Some(format!("netns-{}", id.1)) })
}

/// The control socket path for `target` seen from the calling thread.
pub fn socket_path(target: &Target) -> io::Result<PathBuf> {
    let ns = match target {
        Target::Lab(_) => None,
        Target::Tun(_) => netns_label()?,
    };
    let path = Path::new(CTL_DIR).join(file_name(target, ns.as_deref()));
    if path.as_os_str().len() <= MAX_PATH {
        return Ok(path);
    }
    // A long namespace name: its inode is short and as unique.
    let ino = fs::metadata("/proc/thread-self/ns/net")?.ino();
    Ok(Path::new(CTL_DIR).join(file_name(target, Some(&format!("netns-{ino}")))))
}

// ---------------------------------------------------------------------------
// The endpoint's side
// ---------------------------------------------------------------------------

/// Why the control socket could not be set up.
#[derive(Debug)]
pub enum BindError {
    /// A live endpoint answers on the path already.
    Busy {
        target: Target,
        path: PathBuf,
        pid: Option<i32>,
    },
    Io {
        what: String,
        err: io::Error,
    },
}

impl std::fmt::Display for BindError {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            BindError::Busy { target, path, pid } => {
                let pid = pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
                write!(
                    f,
                    "another closelab endpoint{pid} is already running for {target} (control socket {})",
                    path.display()
                )
            }
            BindError::Io { what, err } => write!(f, "{what}: {}", os_error_text(err)),
        }
    }
}

impl std::error::Error for BindError {}

const LISTENER: Token = Token(0);

static NEXT_TMP: AtomicUsize = AtomicUsize::new(0);

struct Client {
    stream: UnixStream,
    input: Vec<u8>,
    output: Vec<u8>,
    written: usize,
    answered: bool,
}

impl Client {
    fn new(stream: UnixStream) -> Client {
        Client { stream, input: Vec::new(), output: Vec::new(), written: 0, answered: false }
    }
}

/// The endpoint's control socket: serves requests when [`Control::serve`]
/// is called (the mio loop does when [`Control::raw_fd`] is readable) and
/// removes its file on drop.
pub struct Control {
    listener: UnixListener,
    path: PathBuf,
    ino: u64,
    owner: u32,
    poll: Poll,
    events: Events,
    clients: HashMap<Token, Client>,
    /// Clients by arrival with their deadline: all share [`IDLE_TIMEOUT`],
    /// so the front is always the next to expire (tokens are never reused;
    /// a client already gone is skipped).
    deadlines: std::collections::VecDeque<(Instant, Token)>,
    next_token: usize,
    /// Clients dropped for idling or evicted (shown in the debug log).
    pub timed_out: u64,
}

impl Control {
    /// Creates the socket for `target` (in the calling thread's network
    /// namespace for a TUN). A stale file (its endpoint was killed) is
    /// replaced; a live one is [`BindError::Busy`].
    pub fn bind(target: &Target) -> Result<Control, BindError> {
        let io_err = |what: String| move |err| BindError::Io { what, err };
        let path = socket_path(target).map_err(io_err("cannot tell this thread's network namespace".into()))?;
        fs::create_dir_all(CTL_DIR).map_err(io_err(format!("cannot create {CTL_DIR}")))?;
        // Stale (ECONNREFUSED) or absent is fine: the rename below replaces it.
        if let Ok(s) = UnixStream::connect(&path) {
            let pid = getsockopt(&s, PeerCredentials).ok().map(|c| c.pid());
            return Err(BindError::Busy { target: target.clone(), path, pid });
        }
        // Bind under a short private name, restrict it, then rename it into
        // place: the socket is never reachable with wider permissions.
        let n = NEXT_TMP.fetch_add(1, Ordering::Relaxed);
        let tmp = Path::new(CTL_DIR).join(format!(".tmp-{}-{n}.sock", std::process::id()));
        let _ = fs::remove_file(&tmp);
        let listener =
            UnixListener::bind(&tmp).map_err(io_err(format!("cannot create control socket {}", tmp.display())))?;
        let placed =
            fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600)).and_then(|()| fs::rename(&tmp, &path));
        if let Err(e) = placed {
            let _ = fs::remove_file(&tmp);
            return Err(BindError::Io { what: format!("cannot create control socket {}", path.display()), err: e });
        }
        let setup = || -> io::Result<(u64, Poll)> {
            let ino = fs::metadata(&path)?.ino();
            listener.set_nonblocking(true)?;
            let poll = Poll::new()?;
            poll.registry().register(&mut SourceFd(&listener.as_raw_fd()), LISTENER, Interest::READABLE)?;
            Ok((ino, poll))
        };
        let (ino, poll) = match setup() {
            Ok(v) => v,
            Err(e) => {
                let _ = fs::remove_file(&path);
                return Err(BindError::Io { what: format!("cannot serve control socket {}", path.display()), err: e });
            }
        };
        log::debug!("control: listening path={}", path.display());
        Ok(Control {
            listener,
            path,
            ino,
            owner: nix::unistd::geteuid().as_raw(),
            poll,
            events: Events::with_capacity(64),
            clients: HashMap::new(),
            deadlines: std::collections::VecDeque::new(),
            next_token: 1,
            timed_out: 0,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A file descriptor that becomes readable when a request may be
    /// waiting (the inner `Poll`'s epoll fd).
    pub fn raw_fd(&self) -> RawFd {
        self.poll.as_raw_fd()
    }

    /// Accepts, reads, answers and writes whatever is ready; never blocks.
    pub fn serve(&mut self, now: Instant, ep: &mut Endpoint) {
        // Until the inner Poll is drained: the loop watches its fd
        // edge-triggered, so readiness left behind would never be reported
        // again. Bounded all the same (only the owner can connect).
        for _ in 0..1024 {
            if let Err(e) = self.poll.poll(&mut self.events, Some(StdDuration::ZERO)) {
                if e.kind() != ErrorKind::Interrupted {
                    log::warn!("control: poll failed: {e}");
                }
                return;
            }
            if self.events.is_empty() {
                return;
            }
            let tokens: Vec<Token> = self.events.iter().map(|e| e.token()).collect();
            for t in tokens {
                if t == LISTENER {
                    self.accept(now, ep);
                } else {
                    self.progress(t, now, ep);
                }
            }
        }
    }

    fn accept(&mut self, now: Instant, ep: &mut Endpoint) {
        loop {
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!("control: accept failed: {e}");
                    return;
                }
            };
            if let Err(e) = stream.set_nonblocking(true) {
                log::warn!("control: {e}");
                continue;
            }
            let mut client = Client::new(stream);
            match getsockopt(&client.stream, PeerCredentials) {
                Ok(c) if c.uid() == self.owner => {}
                Ok(c) => {
                    log::debug!("control: refused uid={} pid={}", c.uid(), c.pid());
                    client.output = format!(
                        "{ERROR}permission denied: uid {} may not control this endpoint (only its owner, uid {})\n",
                        c.uid(),
                        self.owner
                    )
                    .into_bytes();
                    client.answered = true;
                }
                Err(e) => {
                    client.output =
                        format!("{ERROR}permission denied: cannot read the peer's credentials ({e})\n").into_bytes();
                    client.answered = true;
                }
            }
            let token = Token(self.next_token);
            self.next_token += 1;
            let fd = client.stream.as_raw_fd();
            if let Err(e) =
                self.poll.registry().register(&mut SourceFd(&fd), token, Interest::READABLE | Interest::WRITABLE)
            {
                log::warn!("control: {e}");
                continue;
            }
            if self.clients.len() >= MAX_CLIENTS {
                // The oldest is the one most likely idle.
                while let Some((_, old)) = self.deadlines.pop_front() {
                    if self.drop_client(old) {
                        self.timed_out += 1;
                        log::debug!("control: evicted the oldest client (limit {MAX_CLIENTS})");
                        break;
                    }
                }
            }
            self.clients.insert(token, client);
            self.deadlines.push_back((now + IDLE_TIMEOUT, token));
            self.progress(token, now, ep);
        }
    }

    /// Reads a request if one is complete, answers it, writes what the
    /// socket takes; drops the client once the answer is out (or on error).
    fn progress(&mut self, token: Token, now: Instant, ep: &mut Endpoint) {
        let Some(c) = self.clients.get_mut(&token) else { return };
        let mut done = false;
        if !c.answered {
            let mut eof = false;
            let mut buf = [0u8; 1024];
            loop {
                match c.stream.read(&mut buf) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(n) => c.input.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => {
                        eof = true;
                        done = true;
                        break;
                    }
                }
                if c.input.len() > MAX_REQUEST {
                    break;
                }
            }
            if let Some(i) = c.input.iter().position(|b| *b == b'\n') {
                let line = String::from_utf8_lossy(&c.input[..i]).into_owned();
                c.output = answer(&line, now, ep).into_bytes();
                c.answered = true;
            } else if c.input.len() > MAX_REQUEST {
                c.output = format!("{ERROR}request longer than {MAX_REQUEST} bytes\n").into_bytes();
                c.answered = true;
            } else if eof {
                // A liveness probe (connect and close), or a client gone.
                done = true;
            }
        }
        if c.answered && !done {
            while c.written < c.output.len() {
                match c.stream.write(&c.output[c.written..]) {
                    Ok(n) => c.written += n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            done = true;
        }
        if done {
            self.drop_client(token);
        }
    }

    fn drop_client(&mut self, token: Token) -> bool {
        match self.clients.remove(&token) {
            Some(c) => {
                let _ = self.poll.registry().deregister(&mut SourceFd(&c.stream.as_raw_fd()));
                true
            }
            None => false,
        }
    }

    /// When the oldest client times out, if any client is connected.
    pub fn poll_at(&self) -> Option<Instant> {
        self.deadlines.iter().find(|(_, t)| self.clients.contains_key(t)).map(|(at, _)| *at)
    }

    /// Drops the clients whose [`IDLE_TIMEOUT`] has passed (closing their
    /// connection); stale queue entries are popped on the way.
    pub fn expire(&mut self, now: Instant) {
        while let Some(&(at, token)) = self.deadlines.front() {
            if self.clients.contains_key(&token) && at > now {
                return;
            }
            self.deadlines.pop_front();
            if self.drop_client(token) {
                self.timed_out += 1;
                log::debug!("control: client timed out after {IDLE_TIMEOUT}");
            }
        }
    }

    /// Clients connected now.
    pub fn clients(&self) -> usize {
        self.clients.len()
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        // Only our own file: a later endpoint may have replaced it.
        if fs::metadata(&self.path).is_ok_and(|m| m.ino() == self.ino) {
            let _ = fs::remove_file(&self.path);
        }
    }
}

// ---------------------------------------------------------------------------
// The client's side
// ---------------------------------------------------------------------------

/// A control socket found for what the user asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Located {
    pub path: PathBuf,
    /// `TUN cl0`, `lab demo`: for messages.
    pub what: String,
}

/// Picks the control socket from `--tun`/`--lab`, or the only one running.
pub fn locate(tun: Option<&str>, lab: Option<&str>) -> Result<Located, String> {
    let not_running = |what: &str, path: &Path| {
        format!("no closelab endpoint is running for {what} (no control socket {})", path.display())
    };
    match (tun, lab) {
        (Some(_), Some(_)) => Err("give --tun or --lab, not both".into()),
        (None, Some(l)) => {
            let target = Target::Lab(l.to_string());
            let path = Path::new(CTL_DIR).join(file_name(&target, None));
            if !exists(&path) {
                return Err(not_running(&target.to_string(), &path));
            }
            Ok(Located { path, what: target.to_string() })
        }
        (Some(t), None) => {
            let target = Target::Tun(t.to_string());
            let path = socket_path(&target)
                .map_err(|e| format!("cannot tell this thread's network namespace: {}", os_error_text(&e)))?;
            if exists(&path) {
                return Ok(Located { path, what: target.to_string() });
            }
            // From the host's namespace, a live endpoint on this TUN name in
            // another one (started with `ip netns exec NS closelab …`).
            let in_host = netns_label()
                .map_err(|e| format!("cannot tell this thread's network namespace: {}", os_error_text(&e)))?
                .is_none();
            if !in_host {
                return Err(not_running(&target.to_string(), &path));
            }
            let mut others: Vec<(String, String)> = socket_names()?
                .into_iter()
                .filter_map(|n| match parse_file_name(&n) {
                    Some((Target::Tun(x), Some(ns))) if x == t && live(&n) => Some((n, ns)),
                    _ => None,
                })
                .collect();
            match others.len() {
                0 => Err(not_running(&target.to_string(), &path)),
                1 => {
                    let (name, ns) = others.remove(0);
                    Ok(Located {
                        path: Path::new(CTL_DIR).join(name),
                        what: format!("{target} (network namespace {ns})"),
                    })
                }
                _ => Err(format!(
                    "closelab endpoints run on TUN {t} in several network namespaces ({}): run closelab ss in the right one, \
                     e.g. `ip netns exec {} closelab ss --tun {t}`",
                    others.iter().map(|(_, ns)| ns.as_str()).collect::<Vec<_>>().join(", "),
                    others[0].1
                )),
            }
        }
        (None, None) => {
            let live: Vec<String> = socket_names()?.into_iter().filter(|n| live(n)).collect();
            let path = choose(&live)?;
            let what = match parse_file_name(&path) {
                Some((target, Some(ns))) => format!("{target} (network namespace {ns})"),
                Some((target, None)) => target.to_string(),
                None => path.clone(),
            };
            Ok(Located { path: Path::new(CTL_DIR).join(path), what })
        }
    }
}

/// The one running endpoint among `live` socket names, or what to pick.
pub fn choose(live: &[String]) -> Result<String, String> {
    match live {
        [] => Err(format!(
            "no closelab endpoint is running (no control socket in {CTL_DIR}; start one with closelab listen or closelab connect)"
        )),
        [one] => Ok(one.clone()),
        many => Err(format!(
            "several closelab endpoints are running: pick one with {}",
            many.iter().map(|n| flag_of(n)).collect::<Vec<_>>().join(", ")
        )),
    }
}

/// Whether an endpoint answers on socket `name` (a killed one leaves its
/// file behind). Owned by someone else counts as live: that is not ours to
/// judge, and `request` will say permission denied.
fn live(name: &str) -> bool {
    match UnixStream::connect(Path::new(CTL_DIR).join(name)) {
        Ok(_) => true,
        Err(e) => e.kind() == ErrorKind::PermissionDenied,
    }
}

fn exists(path: &Path) -> bool {
    // symlink_metadata: a socket file, whatever its permissions.
    fs::symlink_metadata(path).is_ok()
}

/// Socket file names in [`CTL_DIR`], sorted (none if it does not exist).
fn socket_names() -> Result<Vec<String>, String> {
    let dir = match fs::read_dir(CTL_DIR) {
        Ok(d) => d,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot list {CTL_DIR}: {}", os_error_text(&e))),
    };
    let mut names: Vec<String> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| !n.starts_with('.') && parse_file_name(n).is_some())
        .collect();
    names.sort();
    Ok(names)
}

/// Sends one request and returns the answer's lines before `end`; an
/// `error: …` answer, a refused or missing socket are errors naming the
/// endpoint.
pub fn request(at: &Located, req: &Request) -> Result<Vec<String>, String> {
    let path = at.path.display();
    let mut s = match UnixStream::connect(&at.path) {
        Ok(s) => s,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(format!("no closelab endpoint is running for {} (no control socket {path})", at.what));
        }
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
            return Err(format!(
                "no closelab endpoint is running for {} (stale control socket {path}: its endpoint was killed)",
                at.what
            ));
        }
        Err(e) if e.kind() == ErrorKind::PermissionDenied => {
            let owner = fs::symlink_metadata(&at.path).map(|m| format!(", uid {},", m.uid())).unwrap_or_default();
            return Err(format!(
                "control socket {path}: permission denied (only the endpoint's owner{owner} may use it)"
            ));
        }
        Err(e) => return Err(format!("cannot connect to control socket {path}: {}", os_error_text(&e))),
    };
    let io = |e: io::Error| {
        if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) {
            format!("{}: no answer on control socket {path} within {}s", at.what, CLIENT_TIMEOUT.as_secs())
        } else {
            format!("{}: control socket {path}: {}", at.what, os_error_text(&e))
        }
    };
    s.set_read_timeout(Some(CLIENT_TIMEOUT)).map_err(io)?;
    s.set_write_timeout(Some(CLIENT_TIMEOUT)).map_err(io)?;
    // A refused client is answered and closed without being read: its
    // write may fail while the answer waits to be read.
    let sent = s.write_all(format!("{req}\n").as_bytes());
    let mut lines = Vec::new();
    for line in BufReader::new(s).lines() {
        let line = match (line, &sent) {
            (Ok(l), _) => l,
            (Err(_), Err(e)) => return Err(io(io::Error::new(e.kind(), e.to_string()))),
            (Err(e), Ok(())) => return Err(io(e)),
        };
        if line == END {
            return Ok(lines);
        }
        if let Some(msg) = line.strip_prefix(ERROR) {
            return Err(format!("{}: {msg}", at.what));
        }
        lines.push(line);
    }
    match sent {
        Err(e) => Err(io(e)),
        Ok(()) => Err(format!("{}: the endpoint closed the control socket {path} without an answer", at.what)),
    }
}

/// What `closelab ss` shows.
#[derive(Clone, Debug, Default)]
pub struct SsOptions {
    pub tun: Option<String>,
    pub lab: Option<String>,
    pub summary: bool,
    pub json: bool,
    /// Redraw every interval until interrupted.
    pub watch: Option<StdDuration>,
    pub filter: Filter,
}

/// `closelab ss`: one snapshot, or one per interval with `watch`.
pub fn ss(opts: &SsOptions, out: &mut dyn Write) -> Result<(), String> {
    let at = locate(opts.tun.as_deref(), opts.lab.as_deref())?;
    loop {
        let lines = request(&at, &Request::Ss)?;
        let (counted, rows): (Vec<&String>, Vec<&String>) = lines.iter().partition(|l| ss::parse_counted(l).is_some());
        let counted: Vec<(String, u64)> = counted.iter().filter_map(|l| ss::parse_counted(l)).collect();
        let rows = rows
            .iter()
            .map(|l| Row::parse(l).map_err(|e| format!("{}: bad answer on the control socket: {e}: {l}", at.what)))
            .collect::<Result<Vec<Row>, String>>()?;
        let body = ss::render(opts.filter.apply(rows), &counted, opts.summary, opts.json, opts.watch.is_some());
        let text = match opts.watch {
            Some(every) if !opts.json => format!(
                "\x1b[H\x1b[2JEvery {}: closelab ss, {} (Ctrl-C to stop)\n\n{body}",
                ss::duration(every.as_millis() as u64),
                at.what
            ),
            _ => body,
        };
        match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
            Ok(()) => {}
            // `closelab ss | head`: the reader is done, so are we.
            Err(e) if e.kind() == ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(format!("writing output: {}", os_error_text(&e))),
        }
        match opts.watch {
            Some(every) => std::thread::sleep(every),
            None => return Ok(()),
        }
    }
}

/// `closelab close|abort|shutdown CONN`: prints what happened.
pub fn act(
    action: Action,
    conn: &str,
    tun: Option<&str>,
    lab: Option<&str>,
    out: &mut dyn Write,
) -> Result<(), String> {
    let conn = ConnRef::parse(conn)?;
    let at = locate(tun, lab)?;
    let lines = request(&at, &Request::Act(action, conn))?;
    let [line] = lines.as_slice() else {
        return Err(format!("{}: unexpected answer on the control socket: {lines:?}", at.what));
    };
    let result =
        ActionResult::parse(line).map_err(|e| format!("{}: bad answer on the control socket: {e}: {line}", at.what))?;
    writeln!(out, "{result}").map_err(|e| format!("writing output: {}", os_error_text(&e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_file_names_round_trip() {
        let cases = [
            (Target::Tun("cl0".into()), None, "tun-cl0.sock"),
            (Target::Tun("cl0".into()), Some("clt12x3"), "tun-cl0@clt12x3.sock"),
            (Target::Lab("demo".into()), None, "lab-demo.sock"),
        ];
        for (t, ns, name) in cases {
            assert_eq!(file_name(&t, ns), name);
            assert_eq!(parse_file_name(name), Some((t, ns.map(str::to_string))));
        }
        for bad in ["tun-.sock", "lab-.sock", "tun-cl0@.sock", "x.sock", "tun-cl0", ".tmp-1-0.sock"] {
            assert_eq!(parse_file_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn test_choose_the_only_endpoint() {
        assert!(
            choose(&[])
                .unwrap_err()
                .starts_with("no closelab endpoint is running (no control socket in /run/closelab/ctl")
        );
        assert_eq!(choose(&["lab-demo.sock".into()]), Ok("lab-demo.sock".into()));
        assert_eq!(
            choose(&["lab-demo.sock".into(), "tun-cl0.sock".into(), "tun-cl0@ns1.sock".into()]).unwrap_err(),
            "several closelab endpoints are running: pick one with --lab demo, --tun cl0, `ip netns exec ns1 closelab ss --tun cl0`"
        );
    }
}
