//! The Linux side of `closelab load`: a load generator and a listener on
//! kernel sockets, each a thread that enters a lab namespace with setns (as
//! `sys::peer` does) and runs its own mio loop: non-blocking, many
//! connections in flight, one token per connection (no scans on the packet
//! path; only the handshake-timeout check walks the table, ten times a second).
//!
//! Counters go into an [`AppStats`] behind a mutex, copied there at most
//! every 10 ms, so the sampler never slows the sockets down.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

use crate::endpoint::http::ResponseParser;
use crate::load::{AppStats, Closer, Pacer};

/// The errno name of an I/O error (`EADDRNOTAVAIL`), or its kind.
pub fn errno_name(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => format!("{:?}", nix::errno::Errno::from_raw(code)),
        None => format!("{:?}", e.kind()),
    }
}

/// What the generator does.
#[derive(Clone, Debug)]
pub struct ClientPlan {
    pub target: SocketAddr,
    pub rate: Option<f64>,
    pub concurrency: usize,
    pub count: Option<u64>,
    pub request: usize,
    pub response: usize,
    /// Send `GET / HTTP/1.0` and read to EOF.
    pub http: bool,
    /// HTTP/1.1 keep-alive instead: this many requests on each connection,
    /// each response read to its end (Content-Length or chunked); then the
    /// client closes (`closer: Client`) or asks the server to with
    /// `Connection: close` on the last request.
    pub keep_alive: Option<u32>,
    pub closer: Closer,
    /// With `closer: Server`: never close after EOF (the client leaks CLOSE-WAIT).
    pub leak: bool,
    pub connect_timeout: Duration,
}

/// Shared between a thread and whoever samples it.
#[derive(Clone, Default)]
pub struct Shared {
    pub stats: Arc<Mutex<AppStats>>,
    stop: Arc<AtomicBool>,
    /// No new connections; the ones in flight finish (the run's end).
    drain: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
    error: Arc<Mutex<Option<String>>>,
}

impl Shared {
    pub fn snapshot(&self) -> AppStats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }
    /// The thread finished by itself (count reached) or failed.
    pub fn done(&self) -> bool {
        self.done.load(Ordering::Relaxed)
    }
    pub fn error(&self) -> Option<String> {
        self.error.lock().ok().and_then(|e| e.clone())
    }
}

/// A running generator or listener thread.
pub struct Worker {
    pub shared: Shared,
    join: Option<JoinHandle<()>>,
}

impl Worker {
    /// Starts no more connections; those in flight go on to their end
    /// (the thread keeps running, and keeps any leaked sockets open, until
    /// [`Worker::stop`]).
    pub fn drain(&self) {
        self.shared.drain.store(true, Ordering::Relaxed);
    }

    /// Stops the thread and waits for it.
    pub fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop();
    }
}

const PATTERN: [u8; 4096] = [b'x'; 4096];
const HTTP_GET: &[u8] = b"GET / HTTP/1.0\r\n\r\n";
const HTTP_GET_KEEP: &[u8] = b"GET / HTTP/1.1\r\nHost: closelab\r\n\r\n";
const HTTP_GET_LAST: &[u8] = b"GET / HTTP/1.1\r\nHost: closelab\r\nConnection: close\r\n\r\n";
const FLUSH: Duration = Duration::from_millis(10);

enum Phase {
    Connecting,
    Sending { sent: usize },
    Reading { got: usize },
}

struct ClientConn {
    stream: TcpStream,
    phase: Phase,
    started: Instant,
    /// Keep-alive: responses read so far, and the parser of the next one.
    answered: u32,
    parser: Option<Box<ResponseParser>>,
}

/// Writes up to `total` bytes on a non-blocking socket, `chunk(sent)` at a
/// time, resuming at `*sent`. `Ok(false)`: it would block (go on when it is
/// writable again).
fn write_nb<'a>(
    stream: &mut TcpStream,
    sent: &mut usize,
    total: usize,
    chunk: impl Fn(usize) -> &'a [u8],
) -> io::Result<bool> {
    while *sent < total {
        match stream.write(chunk(*sent)) {
            Ok(n) => *sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// What a keep-alive connection does after its `answered`-th response.
#[derive(Debug, PartialEq)]
enum Next {
    Request,
    Close,
    /// The last request asked the server to close: read to EOF.
    AwaitEof,
}

fn after_response(answered: u32, per_conn: u32, closer: Closer) -> Next {
    match (answered < per_conn, closer) {
        (true, _) => Next::Request,
        (false, Closer::Client) => Next::Close,
        (false, Closer::Server) => Next::AwaitEof,
    }
}

/// The request a keep-alive connection sends next: the last one asks the
/// server to close when the server is the closer.
fn keep_alive_request(answered: u32, per_conn: u32, closer: Closer) -> &'static [u8] {
    if answered + 1 >= per_conn && closer == Closer::Server { HTTP_GET_LAST } else { HTTP_GET_KEEP }
}

/// Starts the generator in network namespace `ns`.
pub fn spawn_client(ns: &str, plan: ClientPlan) -> Worker {
    let shared = Shared::default();
    let sh = shared.clone();
    let ns = ns.to_string();
    let join = std::thread::Builder::new()
        .name("load-client".into())
        .spawn(move || {
            let r = crate::sys::netns::enter(&ns).map_err(|e| e.to_string()).and_then(|()| {
                let mut c = Client::new(plan, sh.clone()).map_err(|e| format!("load generator: {e}"))?;
                c.run().map_err(|e| format!("load generator: {e}"))
            });
            if let Err(e) = r
                && let Ok(mut slot) = sh.error.lock()
            {
                *slot = Some(e);
            }
            sh.done.store(true, Ordering::Relaxed);
        })
        .expect("spawning a thread");
    Worker { shared, join: Some(join) }
}

struct Client {
    plan: ClientPlan,
    shared: Shared,
    poll: Poll,
    conns: Vec<Option<ClientConn>>,
    free: Vec<usize>,
    leaked: Vec<TcpStream>,
    stats: AppStats,
}

impl Client {
    fn new(plan: ClientPlan, shared: Shared) -> io::Result<Client> {
        Ok(Client {
            plan,
            shared,
            poll: Poll::new()?,
            conns: Vec::new(),
            free: Vec::new(),
            leaked: Vec::new(),
            stats: AppStats::default(),
        })
    }

    fn run(&mut self) -> io::Result<()> {
        let start = Instant::now();
        let mut pacer = Pacer::new(self.plan.rate);
        let mut events = Events::with_capacity(1024);
        let mut last_flush = start;
        let mut last_scan = start;
        loop {
            if self.shared.stop.load(Ordering::Relaxed) {
                break;
            }
            let t = start.elapsed().as_secs_f64();
            let left = match self.shared.drain.load(Ordering::Relaxed) {
                true => 0,
                false => self.plan.count.map_or(u64::MAX, |c| c.saturating_sub(self.stats.started)),
            };
            if left == 0 && self.stats.in_flight == 0 && self.plan.count.is_some_and(|c| self.stats.started >= c) {
                break;
            }
            let room = (self.plan.concurrency as u64).saturating_sub(self.stats.in_flight);
            let n = pacer.due(t).min(room).min(left).min(4096);
            for _ in 0..n {
                self.open();
            }
            pacer.started(n);
            let now = Instant::now();
            if now - last_scan >= Duration::from_millis(100) {
                self.expire(now);
                last_scan = now;
            }
            if now - last_flush >= FLUSH {
                self.flush();
                last_flush = now;
            }
            let wait = match pacer.next_at() {
                _ if room == 0 || left == 0 => FLUSH,
                Some(at) => Duration::from_secs_f64((at - start.elapsed().as_secs_f64()).clamp(0.0, 0.01)),
                None => Duration::ZERO,
            };
            match self.poll.poll(&mut events, Some(wait)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            for ev in events.iter() {
                self.handle(ev.token().0);
            }
        }
        self.flush();
        Ok(())
    }

    fn flush(&mut self) {
        self.stats.leaked = self.leaked.len() as u64;
        if let Ok(mut s) = self.shared.stats.lock() {
            *s = self.stats.clone();
        }
    }

    fn open(&mut self) {
        self.stats.started += 1;
        let mut stream = match TcpStream::connect(self.plan.target) {
            Ok(s) => s,
            Err(e) => {
                self.stats.error(&errno_name(&e));
                return;
            }
        };
        let idx = self.free.pop().unwrap_or_else(|| {
            self.conns.push(None);
            self.conns.len() - 1
        });
        if let Err(e) = self.poll.registry().register(&mut stream, Token(idx), Interest::READABLE | Interest::WRITABLE)
        {
            self.stats.error(&errno_name(&e));
            self.free.push(idx);
            return;
        }
        self.stats.in_flight += 1;
        let parser = self.plan.keep_alive.map(|_| Box::default());
        self.conns[idx] =
            Some(ClientConn { stream, phase: Phase::Connecting, started: Instant::now(), answered: 0, parser });
    }

    /// Handshakes that took longer than the timeout.
    fn expire(&mut self, now: Instant) {
        for idx in 0..self.conns.len() {
            let late = matches!(&self.conns[idx], Some(c) if matches!(c.phase, Phase::Connecting) && now - c.started > self.plan.connect_timeout);
            if late {
                self.stats.error("timeout");
                self.end(idx, false);
            }
        }
    }

    /// Removes a connection: closes it (`completed`), or keeps the fd open
    /// forever (`leak`).
    fn end(&mut self, idx: usize, completed: bool) {
        if let Some(mut c) = self.conns[idx].take() {
            let _ = self.poll.registry().deregister(&mut c.stream);
            self.stats.in_flight -= 1;
            if completed {
                self.stats.completed += 1;
                if self.plan.leak && self.plan.closer == Closer::Server {
                    self.leaked.push(c.stream);
                }
            }
            self.free.push(idx);
        }
    }

    fn handle(&mut self, idx: usize) {
        let plan = &self.plan;
        let Some(Some(c)) = self.conns.get_mut(idx) else { return };
        if let Phase::Connecting = c.phase {
            match c.stream.take_error() {
                Ok(Some(e)) | Err(e) => {
                    self.stats.error(&errno_name(&e));
                    return self.end(idx, false);
                }
                Ok(None) => {}
            }
            match c.stream.peer_addr() {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(e) => {
                    self.stats.error(&errno_name(&e));
                    return self.end(idx, false);
                }
            }
            self.stats.connected += 1;
            self.stats.connect_us.record(c.started.elapsed().as_micros() as u64);
            c.phase = Phase::Sending { sent: 0 };
        }
        if c.parser.is_some() {
            return self.keep_alive(idx);
        }
        if let Phase::Sending { sent } = &mut c.phase {
            let total = if plan.http { HTTP_GET.len() } else { plan.request };
            let chunk =
                |at: usize| if plan.http { &HTTP_GET[at..] } else { &PATTERN[..(total - at).min(PATTERN.len())] };
            match write_nb(&mut c.stream, sent, total, chunk) {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => {
                    self.stats.error(&errno_name(&e));
                    return self.end(idx, false);
                }
            }
            if plan.closer == Closer::Client && !plan.http && plan.response == 0 {
                return self.end(idx, true);
            }
            c.phase = Phase::Reading { got: 0 };
        }
        if let Phase::Reading { got } = &mut c.phase {
            let mut buf = [0u8; 4096];
            loop {
                match c.stream.read(&mut buf) {
                    Ok(0) => {
                        if plan.http {
                            self.stats.requests += 1;
                        }
                        return self.end(idx, true);
                    }
                    Ok(n) => {
                        *got += n;
                        if plan.closer == Closer::Client && !plan.http && *got >= plan.response {
                            return self.end(idx, true);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        self.stats.error(&errno_name(&e));
                        return self.end(idx, false);
                    }
                }
            }
        }
    }

    /// An HTTP/1.1 keep-alive connection after its handshake: request,
    /// response (parsed to its end), `keep_alive` times, then the close.
    /// A response cut short or malformed counts as error `http`; one
    /// server close before the last response as `http-eof`.
    fn keep_alive(&mut self, idx: usize) {
        let (per_conn, closer) = (self.plan.keep_alive.unwrap_or(1), self.plan.closer);
        let Some(Some(c)) = self.conns.get_mut(idx) else { return };
        let mut buf = [0u8; 4096];
        loop {
            if let Phase::Sending { sent } = &mut c.phase {
                let req = keep_alive_request(c.answered, per_conn, closer);
                match write_nb(&mut c.stream, sent, req.len(), |at| &req[at..]) {
                    Ok(true) => {}
                    Ok(false) => return,
                    Err(e) => {
                        self.stats.error(&errno_name(&e));
                        return self.end(idx, false);
                    }
                }
                c.phase = Phase::Reading { got: 0 };
            }
            let n = match c.stream.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.stats.error(&errno_name(&e));
                    return self.end(idx, false);
                }
            };
            let Some(parser) = c.parser.as_mut() else { return };
            if n == 0 {
                let done = c.answered >= per_conn;
                let cut = !matches!(parser.eof(), Ok(None));
                if !done || cut {
                    self.stats.error(if cut { "http" } else { "http-eof" });
                }
                return self.end(idx, done && !cut);
            }
            let mut used = 0;
            while used < n {
                match parser.feed(&buf[used..n]) {
                    Ok((k, Some(_))) => {
                        used += k;
                        c.answered += 1;
                        self.stats.requests += 1;
                        match after_response(c.answered, per_conn, closer) {
                            Next::Request if used == n => c.phase = Phase::Sending { sent: 0 },
                            // More bytes than the responses asked for.
                            Next::Request | Next::Close if used < n => {
                                self.stats.error("http");
                                return self.end(idx, false);
                            }
                            Next::Close => return self.end(idx, true),
                            Next::Request | Next::AwaitEof => {}
                        }
                    }
                    Ok((k, None)) => used += k.max(1).min(n - used),
                    Err(_) => {
                        self.stats.error("http");
                        return self.end(idx, false);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod keep_alive_tests {
    use super::*;

    #[test]
    fn test_keep_alive_requests_and_close() {
        // Three requests; the client closes after the third response, or
        // (server closes) the third request says Connection: close.
        let seq: Vec<Next> = (1..=3).map(|a| after_response(a, 3, Closer::Client)).collect();
        assert_eq!(seq, [Next::Request, Next::Request, Next::Close]);
        assert_eq!(after_response(3, 3, Closer::Server), Next::AwaitEof);
        let reqs: Vec<&[u8]> = (0..3).map(|a| keep_alive_request(a, 3, Closer::Server)).collect();
        assert_eq!(reqs, [HTTP_GET_KEEP, HTTP_GET_KEEP, HTTP_GET_LAST]);
        assert!((0..3).all(|a| keep_alive_request(a, 3, Closer::Client) == HTTP_GET_KEEP));
        assert_eq!(keep_alive_request(0, 1, Closer::Server), HTTP_GET_LAST);
    }
}

// ---------------------------------------------------------------------------
// The kernel listener

/// What the listener does with each connection.
#[derive(Clone, Debug)]
pub struct ServerPlan {
    pub bind: SocketAddr,
    pub backlog: u32,
    pub request: usize,
    pub response: usize,
    pub closer: Closer,
    /// With `closer: Client`: never close after the client's FIN (CLOSE-WAIT).
    pub leak: bool,
}

struct ServerConn {
    stream: TcpStream,
    got: usize,
    sent: usize,
}

/// Starts a listener in network namespace `ns`; returns once it listens
/// (or could not).
pub fn spawn_server(ns: &str, plan: ServerPlan) -> Result<Worker, String> {
    let shared = Shared::default();
    let sh = shared.clone();
    let ns = ns.to_string();
    let (tx, rx) = mpsc::channel();
    let join = std::thread::Builder::new()
        .name("load-server".into())
        .spawn(move || {
            let listener = crate::sys::netns::enter(&ns).map_err(|e| e.to_string()).and_then(|()| {
                listen(plan.bind, plan.backlog).map_err(|e| format!("cannot listen on {}: {e}", plan.bind))
            });
            let listener = match listener {
                Ok(l) => {
                    let _ = tx.send(Ok(()));
                    l
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    sh.done.store(true, Ordering::Relaxed);
                    return;
                }
            };
            if let Err(e) = serve(listener, plan, &sh)
                && let Ok(mut slot) = sh.error.lock()
            {
                *slot = Some(format!("load server: {e}"));
            }
            sh.done.store(true, Ordering::Relaxed);
        })
        .expect("spawning a thread");
    match rx.recv() {
        Ok(Ok(())) => Ok(Worker { shared, join: Some(join) }),
        Ok(Err(e)) => {
            let _ = join.join();
            Err(e)
        }
        Err(_) => Err("load server thread ended before listening".into()),
    }
}

/// A non-blocking listener with an exact backlog (std's is fixed at 128).
fn listen(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    use nix::sys::socket::{self, AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage, sockopt};
    let family = if addr.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
    let fd = socket::socket(family, SockType::Stream, SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC, None)?;
    socket::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    socket::bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrStorage::from(addr))?;
    let backlog = Backlog::new(backlog.min(i32::MAX as u32) as i32).map_err(io::Error::from)?;
    socket::listen(&fd, backlog)?;
    // SAFETY: the fd is a listening TCP socket we own; ownership moves into std's listener.
    let std_listener = unsafe { std::net::TcpListener::from_raw_fd(fd.into_raw_fd()) };
    Ok(TcpListener::from_std(std_listener))
}

const LISTENER: Token = Token(usize::MAX - 1);

fn serve(mut listener: TcpListener, plan: ServerPlan, shared: &Shared) -> io::Result<()> {
    let mut poll = Poll::new()?;
    poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut events = Events::with_capacity(1024);
    let mut conns: Vec<Option<ServerConn>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut leaked: Vec<TcpStream> = Vec::new();
    let mut stats = AppStats::default();
    let mut last_flush = Instant::now();
    while !shared.stop.load(Ordering::Relaxed) {
        match poll.poll(&mut events, Some(FLUSH)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        for ev in events.iter() {
            if ev.token() == LISTENER {
                loop {
                    match listener.accept() {
                        Ok((mut stream, _)) => {
                            let idx = free.pop().unwrap_or_else(|| {
                                conns.push(None);
                                conns.len() - 1
                            });
                            poll.registry().register(
                                &mut stream,
                                Token(idx),
                                Interest::READABLE | Interest::WRITABLE,
                            )?;
                            stats.started += 1;
                            stats.in_flight += 1;
                            conns[idx] = Some(ServerConn { stream, got: 0, sent: 0 });
                            if step(&mut conns[idx], &plan, &mut stats, &mut leaked) {
                                free.push(idx);
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            stats.error(&errno_name(&e));
                            break;
                        }
                    }
                }
            } else if step(&mut conns[ev.token().0], &plan, &mut stats, &mut leaked) {
                free.push(ev.token().0);
            }
        }
        if last_flush.elapsed() >= FLUSH {
            stats.leaked = leaked.len() as u64;
            if let Ok(mut s) = shared.stats.lock() {
                *s = stats.clone();
            }
            last_flush = Instant::now();
        }
    }
    Ok(())
}

/// Advances one server connection; true when it is gone from the table.
fn step(slot: &mut Option<ServerConn>, plan: &ServerPlan, stats: &mut AppStats, leaked: &mut Vec<TcpStream>) -> bool {
    let Some(c) = slot else { return false };
    let mut buf = [0u8; 4096];
    let mut eof = false;
    // Read what is there: the request, or (closer client) up to the FIN.
    loop {
        match c.stream.read(&mut buf) {
            Ok(0) => {
                eof = true;
                break;
            }
            Ok(n) => c.got += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                stats.error(&errno_name(&e));
                stats.in_flight -= 1;
                *slot = None;
                return true;
            }
        }
    }
    if c.got >= plan.request || eof {
        while c.sent < plan.response {
            match c.stream.write(&PATTERN[..(plan.response - c.sent).min(PATTERN.len())]) {
                Ok(n) => c.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    stats.error(&errno_name(&e));
                    stats.in_flight -= 1;
                    *slot = None;
                    return true;
                }
            }
        }
        let close = match plan.closer {
            Closer::Server => true,
            Closer::Client => eof,
        };
        if close {
            stats.in_flight -= 1;
            stats.completed += 1;
            let c = slot.take().expect("checked above");
            if plan.leak && plan.closer == Closer::Client {
                leaked.push(c.stream);
            }
            return true;
        }
    }
    false
}
