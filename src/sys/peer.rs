//! The Linux side, driven: a thread that enters the lab's Linux namespace
//! and runs a script of ordinary kernel socket calls (connect, listen/accept,
//! send, read, shutdown, close, close with SO_LINGER {1,0}, sleep), reporting
//! each call over a channel so it lands in the same timeline as closelab's.
//!
//! Blocking calls are fine here: the thread is not the event loop. Every read
//! has a timeout so a story that goes wrong ends with an error, not a hang.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::event::AppAction;

/// One call of the Linux application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerStep {
    /// connect() to closelab.
    Connect(SocketAddr),
    /// bind() + listen() on the Linux host.
    Listen(SocketAddr),
    /// accept() one connection.
    Accept,
    /// write() this many bytes of the pattern.
    Send(usize),
    /// write() these bytes.
    SendBytes(Vec<u8>),
    /// read() exactly this many bytes.
    Read(usize),
    /// read() until the peer's FIN.
    ReadToEof,
    /// shutdown(SHUT_WR).
    Shutdown,
    /// close().
    Close,
    /// setsockopt(SO_LINGER, {1, 0}) then close(): RST.
    LingerClose,
    /// Do nothing for this long.
    Sleep(Duration),
    /// bind() to this local port (SO_REUSEADDR), then connect().
    ConnectFrom(u16, SocketAddr),
    /// SO_KEEPALIVE on, with TCP_KEEPIDLE/KEEPINTVL/KEEPCNT if given.
    Keepalive(Option<(u32, u32, u32)>),
    /// read() until it fails (e.g. ETIMEDOUT after keep-alive gave up).
    ReadError,
    /// `ip link set dev DEV down` / `up` in the Linux namespace: the host
    /// vanishes from the wire (and comes back).
    LinkDown(String),
    LinkUp(String),
}

/// What the Linux application did, for the timeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerMsg {
    /// A call made on the connection between `local` and `remote` (Linux's
    /// view; `None` before connect).
    Action { local: Option<SocketAddr>, remote: Option<SocketAddr>, action: AppAction },
    /// The script stopped on an error.
    Error(String),
    /// Something the Linux application saw that is not a call (an error a
    /// step expected).
    Note(String),
    /// The script ran to its end.
    Done,
}

/// A running script.
pub struct Peer {
    rx: Receiver<PeerMsg>,
    join: Option<JoinHandle<()>>,
    done: bool,
}

impl Peer {
    /// Starts `steps` in a thread inside network namespace `ns`.
    pub fn spawn(ns: &str, steps: Vec<PeerStep>, read_timeout: Duration) -> Peer {
        let (tx, rx) = mpsc::channel();
        let ns = ns.to_string();
        let join = std::thread::Builder::new()
            .name("linux-peer".into())
            .spawn(move || {
                if let Err(e) = crate::sys::netns::enter(&ns) {
                    let _ = tx.send(PeerMsg::Error(e.to_string()));
                    return;
                }
                let mut script = Script { stream: None, listener: None, read_timeout, sent: 0 };
                for step in steps {
                    match script.run(&step, &tx) {
                        Ok(()) => {}
                        Err(e) => {
                            let _ = tx.send(PeerMsg::Error(format!("linux peer: {step:?}: {e}")));
                            return;
                        }
                    }
                }
                let _ = tx.send(PeerMsg::Done);
            })
            .expect("spawning a thread");
        Peer { rx, join: Some(join), done: false }
    }

    /// Messages that arrived since the last call.
    pub fn messages(&mut self) -> Vec<PeerMsg> {
        let mut v = Vec::new();
        loop {
            match self.rx.try_recv() {
                Ok(m) => {
                    if matches!(m, PeerMsg::Done | PeerMsg::Error(_)) {
                        self.done = true;
                    }
                    v.push(m);
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    self.done = true;
                    break;
                }
            }
        }
        v
    }

    /// The script has finished (or failed).
    pub fn finished(&self) -> bool {
        self.done
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        // A script blocked in read() ends at its read timeout; do not wait
        // for it here, its sockets are closed when the thread ends.
        let _ = self.join.take();
    }
}

struct Script {
    stream: Option<TcpStream>,
    listener: Option<TcpListener>,
    read_timeout: Duration,
    sent: usize,
}

impl Script {
    fn report(&self, tx: &mpsc::Sender<PeerMsg>, action: AppAction) {
        let (local, remote) = match &self.stream {
            Some(s) => (s.local_addr().ok(), s.peer_addr().ok()),
            None => (None, None),
        };
        let _ = tx.send(PeerMsg::Action { local, remote, action });
    }

    fn stream(&mut self) -> io::Result<&mut TcpStream> {
        self.stream.as_mut().ok_or_else(|| io::Error::other("no connection (connect or accept first)"))
    }

    fn run(&mut self, step: &PeerStep, tx: &mpsc::Sender<PeerMsg>) -> io::Result<()> {
        match step {
            PeerStep::Connect(to) => {
                let s = TcpStream::connect_timeout(to, self.read_timeout)?;
                s.set_read_timeout(Some(self.read_timeout))?;
                s.set_nodelay(true)?;
                self.stream = Some(s);
                self.report(tx, AppAction::Connect);
            }
            PeerStep::Listen(at) => {
                self.listener = Some(TcpListener::bind(at)?);
                let _ = tx.send(PeerMsg::Action { local: Some(*at), remote: None, action: AppAction::Listen });
            }
            PeerStep::Accept => {
                let l = self.listener.as_ref().ok_or_else(|| io::Error::other("accept without listen"))?;
                let (s, _) = l.accept()?;
                s.set_read_timeout(Some(self.read_timeout))?;
                s.set_nodelay(true)?;
                self.stream = Some(s);
                self.report(tx, AppAction::Accept);
            }
            PeerStep::Send(n) => {
                let start = self.sent;
                let data: Vec<u8> = (0..*n).map(|i| crate::endpoint::app::pattern_byte(start + i)).collect();
                self.stream()?.write_all(&data)?;
                self.sent += n;
                self.report(tx, AppAction::Send(*n));
            }
            PeerStep::SendBytes(b) => {
                self.stream()?.write_all(b)?;
                self.report(tx, AppAction::Send(b.len()));
            }
            PeerStep::Read(n) => {
                let mut buf = vec![0u8; *n];
                self.stream()?.read_exact(&mut buf)?;
                self.report(tx, AppAction::Recv(*n));
            }
            PeerStep::ReadToEof => {
                let mut buf = Vec::new();
                self.stream()?.read_to_end(&mut buf)?;
                self.report(tx, AppAction::Recv(buf.len()));
            }
            PeerStep::Shutdown => {
                self.stream()?.shutdown(Shutdown::Write)?;
                self.report(tx, AppAction::Shutdown);
            }
            PeerStep::Close => {
                self.report(tx, AppAction::Close);
                self.stream = None;
            }
            PeerStep::LingerClose => {
                let s = self.stream()?;
                let linger = nix::libc::linger { l_onoff: 1, l_linger: 0 };
                nix::sys::socket::setsockopt(&s.as_fd(), nix::sys::socket::sockopt::Linger, &linger)
                    .map_err(io::Error::from)?;
                self.report(tx, AppAction::LingerClose);
                self.stream = None;
            }
            PeerStep::Sleep(d) => std::thread::sleep(*d),
            PeerStep::ConnectFrom(port, to) => {
                let s = connect_from(*port, *to)?;
                s.set_read_timeout(Some(self.read_timeout))?;
                s.set_nodelay(true)?;
                self.stream = Some(s);
                self.report(tx, AppAction::Connect);
            }
            PeerStep::Keepalive(params) => {
                use nix::sys::socket::{setsockopt, sockopt};
                let s = self.stream()?.as_fd().try_clone_to_owned()?;
                setsockopt(&s, sockopt::KeepAlive, &true).map_err(io::Error::from)?;
                if let Some((idle, intvl, cnt)) = params {
                    setsockopt(&s, sockopt::TcpKeepIdle, idle).map_err(io::Error::from)?;
                    setsockopt(&s, sockopt::TcpKeepInterval, intvl).map_err(io::Error::from)?;
                    setsockopt(&s, sockopt::TcpKeepCount, cnt).map_err(io::Error::from)?;
                }
            }
            PeerStep::ReadError => {
                // Wait as long as it takes: the error is what we wait for.
                let s = self.stream()?;
                s.set_read_timeout(None)?;
                let mut buf = [0u8; 4096];
                let err = loop {
                    match s.read(&mut buf) {
                        Ok(0) => break io::Error::other("end of stream"),
                        Ok(_) => continue,
                        Err(e) => break e,
                    }
                };
                let _ = tx.send(PeerMsg::Note(format!("linux read() failed: {}", err.kind())));
                self.stream = None;
            }
            PeerStep::LinkDown(dev) | PeerStep::LinkUp(dev) => {
                let up = matches!(step, PeerStep::LinkUp(_));
                let out = crate::sys::lab::ip_command()
                    .args(["link", "set", "dev", dev, if up { "up" } else { "down" }])
                    .output()?;
                if !out.status.success() {
                    return Err(io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_string()));
                }
                let _ = tx.send(PeerMsg::Note(format!("linux link {dev} {}", if up { "up" } else { "down" })));
            }
        }
        Ok(())
    }
}

/// connect() from a fixed local port, with SO_REUSEADDR so the port can be
/// reused right after the previous connection on it closed.
fn connect_from(port: u16, to: SocketAddr) -> io::Result<TcpStream> {
    use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, SockaddrStorage, sockopt};
    let family = if to.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
    let fd = socket::socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None).map_err(io::Error::from)?;
    socket::setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(io::Error::from)?;
    let local: SocketAddr =
        if to.is_ipv4() { ([0, 0, 0, 0], port).into() } else { (std::net::Ipv6Addr::UNSPECIFIED, port).into() };
    socket::bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrStorage::from(local)).map_err(io::Error::from)?;
    socket::connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrStorage::from(to)).map_err(io::Error::from)?;
    Ok(TcpStream::from(fd))
}
