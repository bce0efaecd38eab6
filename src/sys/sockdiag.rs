//! The Linux kernel's own view of its TCP sockets, read through
//! `NETLINK_SOCK_DIAG` (`inet_diag`, what `ss` uses), never by parsing `ss`.
//!
//! A netlink socket belongs to the network namespace of the thread that
//! created it, so [`Diag::new`] must run on a thread that is already inside
//! the lab's namespace; the [`Diag`] keeps reading that namespace afterwards
//! even if it is used from another thread.
//!
//! What the kernel reports, mapped without reinterpretation:
//!
//! - Full sockets, `TIME_WAIT` sockets and pending connection requests are
//!   dumped. A `TIME_WAIT` mini-socket is reported with its *substate*: an
//!   orphaned `FIN_WAIT_2` (the application closed, the peer has not sent its
//!   FIN, `tcp_fin_timeout` ≤ 60 s) lives in a timewait mini-socket and shows
//!   as `FIN-WAIT-2` with a `timewait` timer and inode 0, exactly as
//!   `ss -tano` prints `FIN-WAIT-2 … timer:(timewait,59sec,0)`.
//! - Pending requests (`TCP_NEW_SYN_RECV`) are reported by the kernel as
//!   `SYN_RECV`; both map to [`TcpState::SynReceived`].
//! - For `LISTEN` sockets `recv_q` is the accept-queue length and `send_q` the
//!   backlog. For other sockets `recv_q` is `rcv_nxt - copied_seq`, so a
//!   received FIN the application has not read counts as 1 byte: an idle
//!   `CLOSE-WAIT` socket shows `recv_q == 1`.
//! - Kernels ≥ 6.7 also dump sockets that are bound but neither listening nor
//!   connected (`TCP_BOUND_INACTIVE`); they are reported as `CLOSE` and map
//!   to [`TcpState::Closed`].
//!
//! Cost: a dump ([`Diag::dump_tcp`], [`Diag::dump_tcp_family`]) walks the
//! kernel's *global* TCP established hash table, whose size follows host
//! memory, not the namespace's socket count: ~1–2 ms of kernel time per
//! dump on a large host even when the namespace holds three sockets.
//! [`Diag::lookup`] asks for one socket by its 4-tuple and costs a hash
//! lookup (microseconds), so a poller that already knows the tuples it cares
//! about should look them up and dump only to discover new ones.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::time::Duration;

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, NLMSG_NOOP, NLMSG_OVERRUN, NetlinkHeader, NetlinkMessage,
};
use netlink_packet_sock_diag::{
    AF_INET, AF_INET6, INET_DIAG_SHUTDOWN, IPPROTO_TCP, SOCK_DIAG_BY_FAMILY, SockDiagMessage,
    inet::{ExtensionFlags, InetRequest, SocketId, StateFlags},
};
use netlink_sys::{Socket, SocketAddr as NetlinkAddr, protocols::NETLINK_SOCK_DIAG};

use crate::event::TcpState;

pub use crate::kernel::{KernelSocket, KernelTimer, TimerKind};

#[derive(Debug)]
pub enum DiagError {
    Open(io::Error),
    Send(io::Error),
    Recv(io::Error),
    /// The kernel answered with this errno (positive, e.g. 2 for `ENOENT`).
    Kernel(i32),
    Decode(String),
}

impl fmt::Display for DiagError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DiagError::Open(e) => write!(f, "cannot open NETLINK_SOCK_DIAG socket: {e}"),
            DiagError::Send(e) => write!(f, "cannot send sock_diag request: {e}"),
            DiagError::Recv(e) => write!(f, "cannot receive sock_diag reply: {e}"),
            DiagError::Kernel(errno) => {
                write!(f, "kernel refused sock_diag request: {}", io::Error::from_raw_os_error(*errno))
            }
            DiagError::Decode(what) => write!(f, "malformed sock_diag reply: {what}"),
        }
    }
}

impl std::error::Error for DiagError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DiagError::Open(e) | DiagError::Send(e) | DiagError::Recv(e) => Some(e),
            DiagError::Kernel(_) | DiagError::Decode(_) => None,
        }
    }
}

/// Dump all TCP sockets (IPv4 and IPv6, all states incl. TIME-WAIT and
/// LISTEN) in the current thread's network namespace.
pub fn dump_tcp() -> Result<Vec<KernelSocket>, DiagError> {
    Diag::new()?.dump_tcp()
}

/// A reusable sock_diag reader. The netlink socket stays bound to the network
/// namespace the creating thread was in.
pub struct Diag {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

/// Netlink dump datagrams are capped by the kernel at 32 KiB; twice that
/// leaves room, and truncation is still detected (`MSG_TRUNC`).
const RECV_BUF_LEN: usize = 64 * 1024;
/// A dump of the local kernel answers in microseconds; this only bounds a hang.
const RECV_TIMEOUT: Duration = Duration::from_secs(5);

impl Diag {
    pub fn new() -> Result<Diag, DiagError> {
        let mut socket = Socket::new(NETLINK_SOCK_DIAG).map_err(DiagError::Open)?;
        socket.bind_auto().map_err(DiagError::Open)?;
        socket.connect(&NetlinkAddr::new(0, 0)).map_err(DiagError::Open)?;
        let timeout = nix::sys::time::TimeVal::new(RECV_TIMEOUT.as_secs() as _, RECV_TIMEOUT.subsec_micros() as _);
        nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::ReceiveTimeout, &timeout)
            .map_err(|e| DiagError::Open(io::Error::from(e)))?;
        Ok(Diag { socket, seq: 0, buf: vec![0; RECV_BUF_LEN] })
    }

    /// Dump all TCP sockets (IPv4 then IPv6, every state).
    pub fn dump_tcp(&mut self) -> Result<Vec<KernelSocket>, DiagError> {
        let mut out = self.dump_tcp_family(false)?;
        out.extend(self.dump_tcp_family(true)?);
        Ok(out)
    }

    /// Dump the TCP sockets of one address family (every state): IPv4 when
    /// `v6` is false, IPv6 (including dual-stack sockets, whose IPv4 peers
    /// show as `::ffff:a.b.c.d`) when it is true. Each dump walks the whole
    /// global hash table once, so dumping only the family in use halves the
    /// cost of [`Diag::dump_tcp`].
    pub fn dump_tcp_family(&mut self, v6: bool) -> Result<Vec<KernelSocket>, DiagError> {
        let mut out = Vec::new();
        let family = if v6 { AF_INET6 } else { AF_INET };
        self.dump_family(family, &mut out)?;
        Ok(out)
    }

    /// The one TCP socket whose own address is `local` and whose peer is
    /// `remote`, in any state, or `None` if the kernel has no such socket.
    ///
    /// An exact `SOCK_DIAG_BY_FAMILY` query (no `NLM_F_DUMP`): the kernel
    /// runs the same hash lookup as for an incoming segment, so it costs
    /// microseconds whatever the size of the hash table. It finds full
    /// sockets, `TIME-WAIT` / orphaned `FIN-WAIT-2` mini-sockets and pending
    /// `SYN-RECV` requests, reported exactly as a dump reports them.
    ///
    /// - A listener is found with `remote` = `0.0.0.0:0` (`[::]:0` for
    ///   IPv6) and `local` its bound address (`0.0.0.0:port` when bound to
    ///   the wildcard).
    /// - When no connection matches, the kernel falls back to the listener
    ///   that would accept a SYN for that tuple (possibly a wildcard one) and
    ///   answers with it; such an answer is not the socket asked for and is
    ///   returned as `None`. Only a socket whose addresses and ports equal the
    ///   request is returned (an IPv4 address and its `::ffff:` mapped form
    ///   count as equal).
    /// - Two IPv4 addresses query the IPv4 family; otherwise the query is
    ///   IPv6, with an IPv4 address given in mapped form (how dual-stack
    ///   sockets are reported). An IPv6 scope id (link-local) is passed as
    ///   the interface; a socket bound with `SO_BINDTODEVICE` to a
    ///   non-link-local address is not found (its device is not in the
    ///   tuple).
    pub fn lookup(&mut self, local: SocketAddr, remote: SocketAddr) -> Result<Option<KernelSocket>, DiagError> {
        Ok(self.query_one(local, remote)?.filter(|s| same_endpoint(s.local, local) && same_endpoint(s.remote, remote)))
    }

    /// The kernel's raw answer to an exact query: the socket it found for
    /// the tuple, which may be a listener standing in for a missing
    /// connection (see [`Diag::lookup`]); `None` for `ENOENT`.
    fn query_one(&mut self, local: SocketAddr, remote: SocketAddr) -> Result<Option<KernelSocket>, DiagError> {
        let seq = self.next_seq();
        self.send(&lookup_request(local, remote, seq))?;
        loop {
            let n = self.recv_datagram()?;
            let mut got = Vec::new();
            match parse_datagram(&self.buf[..n], seq, &mut got) {
                Err(DiagError::Kernel(errno)) if errno == nix::libc::ENOENT => return Ok(None),
                Err(e) => return Err(e),
                Ok(progress) => {
                    if let Some(sock) = got.into_iter().next() {
                        return Ok(Some(sock));
                    }
                    if progress == Progress::Done {
                        return Err(DiagError::Decode("NLMSG_DONE without a socket answering an exact query".into()));
                    }
                    // Only messages of an earlier, abandoned request: the
                    // answer is still to come.
                }
            }
        }
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn send(&mut self, request: &[u8]) -> Result<(), DiagError> {
        let sent = self.socket.send(request, 0).map_err(DiagError::Send)?;
        if sent != request.len() {
            return Err(DiagError::Send(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("sent {sent} of {} bytes", request.len()),
            )));
        }
        Ok(())
    }

    /// Receive one datagram into `self.buf`; its length.
    fn recv_datagram(&mut self) -> Result<usize, DiagError> {
        let n = loop {
            match self.socket.recv(&mut &mut self.buf[..], nix::libc::MSG_TRUNC) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(DiagError::Recv(e)),
            }
        };
        if n > self.buf.len() {
            return Err(DiagError::Decode(format!("datagram of {n} bytes truncated to {}", self.buf.len())));
        }
        Ok(n)
    }

    fn dump_family(&mut self, family: u8, out: &mut Vec<KernelSocket>) -> Result<(), DiagError> {
        let seq = self.next_seq();
        self.send(&dump_request(family, seq))?;
        loop {
            let n = self.recv_datagram()?;
            if parse_datagram(&self.buf[..n], seq, out)? == Progress::Done {
                return Ok(());
            }
        }
    }
}

/// Whether two endpoints are the same address and port, an IPv4 address and
/// its `::ffff:` mapped form being the same (the IPv6 scope is ignored).
fn same_endpoint(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && a.ip().to_canonical() == b.ip().to_canonical()
}

/// `inet_diag_req_v2` for every TCP socket of `family`, as a netlink dump.
fn dump_request(family: u8, seq: u32) -> Vec<u8> {
    let socket_id = if family == AF_INET6 { SocketId::new_v6() } else { SocketId::new_v4() };
    inet_request(NLM_F_REQUEST | NLM_F_DUMP, family, socket_id, seq)
}

/// `INET_DIAG_NOCOOKIE` in both halves of `idiag_cookie`: match any socket.
const NO_COOKIE: [u8; 8] = [0xff; 8];

/// `inet_diag_req_v2` for the one TCP socket `local` → `remote` (an exact
/// query, not a dump). `idiag_src`/`idiag_sport` are the socket's own side.
fn lookup_request(local: SocketAddr, remote: SocketAddr, seq: u32) -> Vec<u8> {
    let (family, source_address, destination_address, interface_id) = match (local, remote) {
        (SocketAddr::V4(l), SocketAddr::V4(r)) => (AF_INET, IpAddr::V4(*l.ip()), IpAddr::V4(*r.ip()), 0),
        _ => {
            let v6 = |a: SocketAddr| match a {
                SocketAddr::V4(a) => a.ip().to_ipv6_mapped(),
                SocketAddr::V6(a) => *a.ip(),
            };
            let scope = [local, remote]
                .into_iter()
                .find_map(|a| match a {
                    SocketAddr::V6(a) if a.scope_id() != 0 => Some(a.scope_id()),
                    _ => None,
                })
                .unwrap_or(0);
            (AF_INET6, IpAddr::V6(v6(local)), IpAddr::V6(v6(remote)), scope)
        }
    };
    let socket_id = SocketId {
        source_port: local.port(),
        destination_port: remote.port(),
        source_address,
        destination_address,
        interface_id,
        cookie: NO_COOKIE,
    };
    inet_request(NLM_F_REQUEST, family, socket_id, seq)
}

fn inet_request(flags: u16, family: u8, socket_id: SocketId, seq: u32) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header.sequence_number = seq;
    let mut packet = NetlinkMessage::new(
        header,
        SockDiagMessage::InetRequest(InetRequest {
            family,
            protocol: IPPROTO_TCP,
            // Only for `orphan`: tells an accept-queue child (shutdown 0 or
            // RCV only) from a socket the application closed (SEND too).
            extensions: ExtensionFlags::SHUTDOWN,
            // Every bit, including TCP_NEW_SYN_RECV (12), which the crate's
            // StateFlags::all() lacks. Exact queries ignore it.
            states: StateFlags::from_bits_retain(u32::MAX),
            socket_id,
        })
        .into(),
    );
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf);
    buf
}

#[derive(Debug, PartialEq, Eq)]
enum Progress {
    More,
    Done,
}

const NLMSG_HDR_LEN: usize = 16;
const INET_DIAG_MSG_LEN: usize = 72;
/// `SEND_SHUTDOWN` in `sk_shutdown`.
const SEND_SHUTDOWN: u8 = 2;

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn u16_ne(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}

fn u32_ne(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Parse one netlink datagram of the dump answering request `seq`, appending
/// sockets to `out`. Messages with another sequence number (left over from an
/// earlier, abandoned dump on the same socket) are skipped.
fn parse_datagram(data: &[u8], seq: u32, out: &mut Vec<KernelSocket>) -> Result<Progress, DiagError> {
    let mut off = 0;
    while off < data.len() {
        let rest = &data[off..];
        if rest.len() < NLMSG_HDR_LEN {
            return Err(DiagError::Decode(format!("{} trailing bytes after the last netlink message", rest.len())));
        }
        let len = u32_ne(rest, 0) as usize;
        let kind = u16_ne(rest, 4);
        let msg_seq = u32_ne(rest, 8);
        if len < NLMSG_HDR_LEN || len > rest.len() {
            return Err(DiagError::Decode(format!("netlink message length {len} with {} bytes left", rest.len())));
        }
        let payload = &rest[NLMSG_HDR_LEN..len];
        off += align4(len).min(rest.len());
        if msg_seq != seq {
            continue;
        }
        match kind {
            NLMSG_NOOP => {}
            NLMSG_DONE => {
                // A dump that failed part-way reports its errno here.
                if payload.len() >= 4 {
                    let code = u32_ne(payload, 0) as i32;
                    if code < 0 {
                        return Err(DiagError::Kernel(code.saturating_neg()));
                    }
                }
                return Ok(Progress::Done);
            }
            NLMSG_ERROR => {
                if payload.len() < 4 {
                    return Err(DiagError::Decode(format!("NLMSG_ERROR with {} byte payload", payload.len())));
                }
                let code = u32_ne(payload, 0) as i32;
                if code != 0 {
                    return Err(DiagError::Kernel(code.saturating_neg()));
                }
                // 0 is an acknowledgement; we never ask for one. Ignore it.
            }
            NLMSG_OVERRUN => return Err(DiagError::Decode("NLMSG_OVERRUN".into())),
            SOCK_DIAG_BY_FAMILY => out.push(parse_inet_diag_msg(payload)?),
            other => {
                return Err(DiagError::Decode(format!("unexpected netlink message type {other}")));
            }
        }
    }
    Ok(Progress::More)
}

fn tcp_state(raw: u8) -> Option<TcpState> {
    Some(match raw {
        1 => TcpState::Established,
        2 => TcpState::SynSent,
        3 | 12 => TcpState::SynReceived,
        4 => TcpState::FinWait1,
        5 => TcpState::FinWait2,
        6 => TcpState::TimeWait,
        // 13 is TCP_BOUND_INACTIVE, a dump-only pseudo-state; the kernel
        // reports such sockets as CLOSE, but accept it either way.
        7 | 13 => TcpState::Closed,
        8 => TcpState::CloseWait,
        9 => TcpState::LastAck,
        10 => TcpState::Listen,
        11 => TcpState::Closing,
        _ => return None,
    })
}

fn socket_addr(family: u8, addr: &[u8], port_be: &[u8], if_index: u32) -> SocketAddr {
    let port = u16::from_be_bytes([port_be[0], port_be[1]]);
    if family == AF_INET {
        let ip = Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]);
        SocketAddr::V4(SocketAddrV4::new(ip, port))
    } else {
        let mut octets = [0u8; 16];
        octets.copy_from_slice(&addr[..16]);
        let ip = Ipv6Addr::from(octets);
        // The bound interface only matters as a scope for link-local addresses.
        let scope = if ip.is_unicast_link_local() { if_index } else { 0 };
        SocketAddr::V6(SocketAddrV6::new(ip, port, 0, scope))
    }
}

/// Parse one `inet_diag_msg` and its attributes.
fn parse_inet_diag_msg(p: &[u8]) -> Result<KernelSocket, DiagError> {
    if p.len() < INET_DIAG_MSG_LEN {
        return Err(DiagError::Decode(format!(
            "inet_diag_msg of {} bytes, expected at least {INET_DIAG_MSG_LEN}",
            p.len()
        )));
    }
    let family = p[0];
    if family != AF_INET && family != AF_INET6 {
        return Err(DiagError::Decode(format!("address family {family}")));
    }
    let state = tcp_state(p[1]).ok_or_else(|| DiagError::Decode(format!("unknown TCP state {}", p[1])))?;
    let timer_raw = p[2];
    let retrans = p[3] as u32;
    // struct inet_diag_sockid at 4: sport, dport (big-endian), src[16],
    // dst[16], if, cookie[2].
    let if_index = u32_ne(p, 40);
    let local = socket_addr(family, &p[8..24], &p[4..6], if_index);
    let remote = socket_addr(family, &p[24..40], &p[6..8], if_index);
    let expires = u32_ne(p, 52);
    let recv_q = u32_ne(p, 56);
    let send_q = u32_ne(p, 60);
    let inode = u32_ne(p, 68);

    let mut shutdown = None;
    let mut attrs = &p[INET_DIAG_MSG_LEN..];
    while attrs.len() >= 4 {
        let len = u16_ne(attrs, 0) as usize;
        let kind = u16_ne(attrs, 2) & 0x3fff;
        if len < 4 || len > attrs.len() {
            return Err(DiagError::Decode(format!("attribute length {len} with {} bytes left", attrs.len())));
        }
        if kind == INET_DIAG_SHUTDOWN && len >= 5 {
            shutdown = Some(attrs[4]);
        }
        attrs = &attrs[align4(len).min(attrs.len())..];
    }

    let timer = TimerKind::from_raw(timer_raw).map(|kind| KernelTimer { kind, remaining_ms: expires as u64, retrans });
    let orphan = inode == 0
        && match state {
            TcpState::TimeWait | TcpState::SynReceived | TcpState::Listen | TcpState::Closed => false,
            // Full sockets carry sk_shutdown: close() sets SEND_SHUTDOWN, a
            // connection waiting in an accept queue has not. Mini-sockets
            // (an orphaned FIN-WAIT-2 in timewait form) carry no attributes.
            _ => shutdown.is_none_or(|s| s & SEND_SHUTDOWN != 0),
        };
    Ok(KernelSocket { state, local, remote, timer, recv_q, send_q, inode, orphan })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::time::Instant;

    // ---- decoding, no privileges needed ----

    fn nlmsg(kind: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let len = NLMSG_HDR_LEN + payload.len();
        let mut m = Vec::new();
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&0u16.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(payload);
        while m.len() % 4 != 0 {
            m.push(0);
        }
        m
    }

    #[allow(clippy::too_many_arguments)]
    fn diag_msg(
        family: u8,
        state: u8,
        timer: u8,
        retrans: u8,
        local: ([u8; 16], u16),
        remote: ([u8; 16], u16),
        expires: u32,
        queues: (u32, u32),
        inode: u32,
        shutdown: Option<u8>,
    ) -> Vec<u8> {
        let mut p = vec![family, state, timer, retrans];
        p.extend_from_slice(&local.1.to_be_bytes());
        p.extend_from_slice(&remote.1.to_be_bytes());
        p.extend_from_slice(&local.0);
        p.extend_from_slice(&remote.0);
        p.extend_from_slice(&0u32.to_ne_bytes()); // if
        p.extend_from_slice(&[0xff; 8]); // cookie
        p.extend_from_slice(&expires.to_ne_bytes());
        p.extend_from_slice(&queues.0.to_ne_bytes());
        p.extend_from_slice(&queues.1.to_ne_bytes());
        p.extend_from_slice(&0u32.to_ne_bytes()); // uid
        p.extend_from_slice(&inode.to_ne_bytes());
        if let Some(s) = shutdown {
            p.extend_from_slice(&5u16.to_ne_bytes());
            p.extend_from_slice(&INET_DIAG_SHUTDOWN.to_ne_bytes());
            p.extend_from_slice(&[s, 0, 0, 0]);
        }
        p
    }

    fn v4(a: [u8; 4]) -> [u8; 16] {
        let mut o = [0; 16];
        o[..4].copy_from_slice(&a);
        o
    }

    #[test]
    fn decodes_sockets_done_and_skips_stale_messages() {
        let mut dgram = nlmsg(
            SOCK_DIAG_BY_FAMILY,
            6, // stale: another dump
            &diag_msg(AF_INET, 1, 0, 0, (v4([1, 1, 1, 1]), 1), (v4([2, 2, 2, 2]), 2), 0, (0, 0), 1, None),
        );
        dgram.extend(nlmsg(
            SOCK_DIAG_BY_FAMILY,
            7,
            &diag_msg(AF_INET, 5, 3, 0, (v4([10, 0, 0, 1]), 40000), (v4([10, 0, 0, 2]), 80), 59_000, (0, 0), 0, None),
        ));
        dgram.extend(nlmsg(
            SOCK_DIAG_BY_FAMILY,
            7,
            &diag_msg(
                AF_INET6,
                12,
                1,
                2,
                (Ipv6Addr::LOCALHOST.octets(), 443),
                (Ipv6Addr::LOCALHOST.octets(), 5555),
                312,
                (0, 0),
                0,
                None,
            ),
        ));
        dgram.extend(nlmsg(
            SOCK_DIAG_BY_FAMILY,
            7,
            &diag_msg(
                AF_INET,
                1,
                0,
                0,
                (v4([10, 0, 0, 2]), 80),
                (v4([10, 0, 0, 1]), 40001),
                0,
                (0, 0),
                0,
                Some(0), // waiting in an accept queue
            ),
        ));
        let mut out = Vec::new();
        assert_eq!(parse_datagram(&dgram, 7, &mut out).unwrap(), Progress::More);
        assert_eq!(out.len(), 3);
        assert_eq!(
            out[0],
            KernelSocket {
                state: TcpState::FinWait2,
                local: "10.0.0.1:40000".parse().unwrap(),
                remote: "10.0.0.2:80".parse().unwrap(),
                timer: Some(KernelTimer { kind: TimerKind::TimeWait, remaining_ms: 59_000, retrans: 0 }),
                recv_q: 0,
                send_q: 0,
                inode: 0,
                orphan: true,
            }
        );
        assert_eq!(out[1].state, TcpState::SynReceived);
        assert_eq!(out[1].local, "[::1]:443".parse().unwrap());
        assert_eq!(out[1].timer.as_ref().unwrap().kind.name(), "on");
        assert_eq!(out[1].timer.as_ref().unwrap().retrans, 2);
        assert!(!out[1].orphan);
        assert!(!out[2].orphan, "accept-queue child is not an orphan");

        let done = nlmsg(NLMSG_DONE, 7, &0i32.to_ne_bytes());
        assert_eq!(parse_datagram(&done, 7, &mut out).unwrap(), Progress::Done);
        assert_eq!(out.len(), 3);
    }

    #[test]
    fn kernel_errors_and_garbage_are_errors_not_panics() {
        let mut out = Vec::new();
        let err = nlmsg(NLMSG_ERROR, 1, &(-2i32).to_ne_bytes());
        assert!(matches!(parse_datagram(&err, 1, &mut out), Err(DiagError::Kernel(2))));
        let done = nlmsg(NLMSG_DONE, 1, &(-4i32).to_ne_bytes());
        assert!(matches!(parse_datagram(&done, 1, &mut out), Err(DiagError::Kernel(4))));
        let short = nlmsg(SOCK_DIAG_BY_FAMILY, 1, &[2, 1, 0]);
        assert!(matches!(parse_datagram(&short, 1, &mut out), Err(DiagError::Decode(_))));
        let bad_state = nlmsg(
            SOCK_DIAG_BY_FAMILY,
            1,
            &diag_msg(AF_INET, 99, 0, 0, (v4([0; 4]), 0), (v4([0; 4]), 0), 0, (0, 0), 0, None),
        );
        assert!(matches!(parse_datagram(&bad_state, 1, &mut out), Err(DiagError::Decode(_))));
        let mut bad_attr = diag_msg(AF_INET, 1, 0, 0, (v4([0; 4]), 0), (v4([0; 4]), 0), 0, (0, 0), 0, None);
        bad_attr.extend_from_slice(&[200, 0, 8, 0]);
        assert!(matches!(
            parse_datagram(&nlmsg(SOCK_DIAG_BY_FAMILY, 1, &bad_attr), 1, &mut out),
            Err(DiagError::Decode(_))
        ));
        // Every prefix of a valid datagram and a few corrupted lengths.
        let good = nlmsg(
            SOCK_DIAG_BY_FAMILY,
            1,
            &diag_msg(AF_INET, 1, 0, 0, (v4([0; 4]), 0), (v4([0; 4]), 0), 0, (0, 0), 0, Some(0)),
        );
        // An empty datagram is no message yet; every other prefix is cut in
        // a header, the message or its attribute and must be refused, not
        // read as a shorter socket.
        out.clear();
        assert!(matches!(parse_datagram(&good[..0], 1, &mut out), Ok(Progress::More)));
        for cut in 1..good.len() {
            let r = parse_datagram(&good[..cut], 1, &mut out);
            assert!(matches!(r, Err(DiagError::Decode(_))), "prefix of {cut} bytes: {r:?}");
        }
        for len in [0u32, 1, 15, 16, 17, 500, u32::MAX] {
            let mut g = good.clone();
            g[..4].copy_from_slice(&len.to_ne_bytes());
            let r = parse_datagram(&g, 1, &mut out);
            assert!(matches!(r, Err(DiagError::Decode(_))), "length field {len}: {r:?}");
        }
        assert!(out.is_empty(), "nothing parsed from a broken datagram: {out:?}");
        assert!(matches!(parse_datagram(&good, 1, &mut out), Ok(Progress::More)));
        assert_eq!(out.len(), 1);
        assert_eq!(
            DiagError::Kernel(2).to_string(),
            format!("kernel refused sock_diag request: {}", io::Error::from_raw_os_error(2))
        );
        assert_eq!(TimerKind::Other(9).name(), "unknown");
        assert_eq!(TimerKind::Persist.name(), "persist");
        assert_eq!(TimerKind::Keepalive.name(), "keepalive");
    }

    #[test]
    fn request_asks_for_every_state_of_tcp() {
        let r = dump_request(AF_INET6, 42);
        assert_eq!(r.len(), NLMSG_HDR_LEN + 56);
        assert_eq!(u16_ne(&r, 4), SOCK_DIAG_BY_FAMILY);
        assert_eq!(u16_ne(&r, 6), NLM_F_REQUEST | NLM_F_DUMP);
        assert_eq!(u32_ne(&r, 8), 42);
        assert_eq!(&r[16..18], &[AF_INET6, IPPROTO_TCP]);
        assert_eq!(u32_ne(&r, 20), u32::MAX);
    }

    #[test]
    fn lookup_request_names_one_socket() {
        let r = lookup_request("10.0.0.1:40000".parse().unwrap(), "10.0.0.2:80".parse().unwrap(), 9);
        assert_eq!(r.len(), NLMSG_HDR_LEN + 56);
        assert_eq!(u16_ne(&r, 4), SOCK_DIAG_BY_FAMILY);
        assert_eq!(u16_ne(&r, 6), NLM_F_REQUEST, "exact query: no NLM_F_DUMP");
        assert_eq!(u32_ne(&r, 8), 9);
        assert_eq!(&r[16..18], &[AF_INET, IPPROTO_TCP]);
        assert_eq!(r[18], ExtensionFlags::SHUTDOWN.bits());
        assert_eq!(u32_ne(&r, 20), u32::MAX);
        // inet_diag_sockid: sport, dport big-endian; src = the socket's own.
        assert_eq!(&r[24..26], &40000u16.to_be_bytes());
        assert_eq!(&r[26..28], &80u16.to_be_bytes());
        assert_eq!(&r[28..32], &[10, 0, 0, 1]);
        assert_eq!(&r[32..44], &[0; 12]);
        assert_eq!(&r[44..48], &[10, 0, 0, 2]);
        assert_eq!(u32_ne(&r, 60), 0);
        assert_eq!(&r[64..72], &[0xff; 8], "INET_DIAG_NOCOOKIE twice");

        // Mixed families: IPv6 with the IPv4 side mapped; scope → idiag_if.
        let r = lookup_request("[fe80::1%7]:443".parse().unwrap(), "192.0.2.1:5555".parse().unwrap(), 10);
        assert_eq!(r[16], AF_INET6);
        assert_eq!(&r[28..44], &"fe80::1".parse::<Ipv6Addr>().unwrap().octets());
        assert_eq!(&r[44..60], &Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped().octets());
        assert_eq!(u32_ne(&r, 60), 7);

        assert!(same_endpoint("[::ffff:127.0.0.1]:80".parse().unwrap(), "127.0.0.1:80".parse().unwrap()));
        assert!(!same_endpoint("0.0.0.0:80".parse().unwrap(), "127.0.0.1:80".parse().unwrap()));
    }

    // ---- the real kernel, in a private network namespace ----

    /// Bring `lo` up in the calling thread's network namespace.
    fn loopback_up() -> io::Result<()> {
        use nix::libc;
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        // SAFETY: plain socket/ioctl calls on a zeroed, NUL-terminated ifreq
        // that outlives them; the fd is owned and closed by OwnedFd.
        unsafe {
            let raw = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
            if raw < 0 {
                return Err(io::Error::last_os_error());
            }
            let fd = OwnedFd::from_raw_fd(raw);
            let mut ifr: libc::ifreq = std::mem::zeroed();
            for (dst, src) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
                *dst = *src as libc::c_char;
            }
            if libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFFLAGS as _, &mut ifr) < 0 {
                return Err(io::Error::last_os_error());
            }
            ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            if libc::ioctl(fd.as_raw_fd(), libc::SIOCSIFFLAGS as _, &ifr) < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }

    fn find(socks: &[KernelSocket], local: SocketAddr, remote: SocketAddr) -> Option<&KernelSocket> {
        socks.iter().find(|s| s.local == local && s.remote == remote)
    }

    /// Dump until `pred` holds (loopback delivery is asynchronous), at most 1 s.
    fn wait_for(diag: &mut Diag, what: &str, pred: impl Fn(&[KernelSocket]) -> bool) -> Vec<KernelSocket> {
        let start = Instant::now();
        loop {
            let socks = diag.dump_tcp().expect("dump_tcp");
            if pred(&socks) {
                return socks;
            }
            if start.elapsed() > Duration::from_secs(1) {
                panic!("timed out waiting for {what}; kernel reports {socks:#?}");
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// The value, or a visible skip (a failure under CI) naming why the
    /// IPv6 part of a test could not run.
    #[track_caller]
    fn or_skip<T>(test: &str, r: io::Result<T>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                crate::testing::skip_or_fail(test, &format!("cannot bind an IPv6 socket in the namespace: {e}"));
                None
            }
        }
    }

    #[test]
    fn close_sequence_in_private_netns() {
        if !crate::testing::require_root("sockdiag::close_sequence_in_private_netns") {
            return;
        }
        std::thread::spawn(|| {
            // Created before unshare: stays bound to the original namespace.
            let mut host = Diag::new().expect("host Diag");
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
            loopback_up().expect("bring lo up");
            let mut diag = Diag::new().expect("Diag in new netns");

            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let server_addr = listener.local_addr().unwrap();
            let mut client = TcpStream::connect(server_addr).unwrap();
            let client_addr = client.local_addr().unwrap();
            let (mut server, _) = listener.accept().unwrap();

            let socks = wait_for(&mut diag, "ESTABLISHED pair", |s| {
                find(s, client_addr, server_addr).map(|k| k.state) == Some(TcpState::Established)
                    && find(s, server_addr, client_addr).map(|k| k.state) == Some(TcpState::Established)
            });
            let l = socks.iter().find(|s| s.state == TcpState::Listen).expect("listener");
            assert_eq!(l.local, server_addr);
            assert_eq!(l.remote, "0.0.0.0:0".parse().unwrap());
            assert_eq!(l.recv_q, 0, "accept queue empty after accept()");
            assert!(l.send_q > 0, "send_q of a listener is its backlog");
            assert_ne!(l.inode, 0);
            assert!(!l.orphan);
            let c = find(&socks, client_addr, server_addr).unwrap();
            assert_ne!(c.inode, 0);
            assert!(!c.orphan);
            assert_eq!(c.timer, None, "idle ESTABLISHED without SO_KEEPALIVE has no timer");
            // The namespace is private: the host's reader does not see it.
            let host_socks = host.dump_tcp().expect("host dump");
            assert!(find(&host_socks, client_addr, server_addr).is_none());

            // Data the server has not read shows in its Recv-Q.
            client.write_all(b"abc").unwrap();
            wait_for(&mut diag, "Recv-Q 3", |s| find(s, server_addr, client_addr).map(|k| k.recv_q) == Some(3));
            let mut three = [0u8; 3];
            server.read_exact(&mut three).unwrap();

            // Active close by the client: orphaned FIN-WAIT-2 / CLOSE-WAIT.
            drop(client);
            let socks = wait_for(&mut diag, "FIN-WAIT-2 / CLOSE-WAIT", |s| {
                find(s, client_addr, server_addr).map(|k| k.state) == Some(TcpState::FinWait2)
                    && find(s, server_addr, client_addr).map(|k| k.state) == Some(TcpState::CloseWait)
            });
            let c = find(&socks, client_addr, server_addr).unwrap();
            eprintln!("orphaned FIN-WAIT-2 as the kernel reports it: {c:?}");
            assert_eq!(c.inode, 0);
            assert!(c.orphan, "closed by the application: orphan");
            let t = c.timer.as_ref().expect("orphaned FIN-WAIT-2 has a timer");
            // Linux turns it into a timewait mini-socket (substate FIN_WAIT2)
            // running tcp_fin_timeout (60 s in a fresh namespace).
            assert_eq!(t.kind, TimerKind::TimeWait);
            assert!((50_000..=60_000).contains(&t.remaining_ms), "{t:?}");
            let s = find(&socks, server_addr, client_addr).unwrap();
            assert_eq!(s.recv_q, 1, "the unread FIN counts as one byte in Recv-Q");
            assert_eq!(s.send_q, 0);
            assert_ne!(s.inode, 0);
            assert!(!s.orphan);

            // Passive close: server LAST-ACK -> gone, client TIME-WAIT.
            drop(server);
            let socks = wait_for(&mut diag, "TIME-WAIT and server gone", |s| {
                find(s, client_addr, server_addr).map(|k| k.state) == Some(TcpState::TimeWait)
                    && find(s, server_addr, client_addr).is_none()
            });
            let c = find(&socks, client_addr, server_addr).unwrap();
            assert_eq!(c.inode, 0);
            assert!(!c.orphan, "TIME-WAIT is never reported as orphan");
            assert_eq!((c.recv_q, c.send_q), (0, 0));
            let t = c.timer.as_ref().expect("TIME-WAIT timer");
            assert_eq!(t.kind, TimerKind::TimeWait);
            assert_eq!(t.kind.name(), "timewait");
            assert_eq!(t.retrans, 0);
            assert!((50_000..=60_000).contains(&t.remaining_ms), "{t:?}");
            assert!(socks.iter().all(|s| s.local.is_ipv4()));

            // A connection still in the accept queue has inode 0 too, but
            // nobody closed it: not an orphan. The listener counts it.
            let queued = TcpStream::connect(server_addr).unwrap();
            let queued_addr = queued.local_addr().unwrap();
            let socks = wait_for(&mut diag, "queued child", |s| {
                find(s, server_addr, queued_addr).map(|k| k.state) == Some(TcpState::Established)
                    && s.iter().any(|k| k.state == TcpState::Listen && k.recv_q == 1)
            });
            let child = find(&socks, server_addr, queued_addr).unwrap();
            assert_eq!(child.inode, 0);
            assert!(!child.orphan, "{child:?}");

            // IPv6 sockets come from the second (AF_INET6) dump.
            if let Some(l6) = or_skip("sockdiag::close_sequence_in_private_netns (IPv6)", TcpListener::bind("[::1]:0"))
            {
                let a6 = l6.local_addr().unwrap();
                let socks = diag.dump_tcp().unwrap();
                assert!(socks.iter().any(|s| s.state == TcpState::Listen && s.local == a6));
            }
        })
        .join()
        .expect("netns test thread panicked");
    }

    /// `KernelSocket`s equal but for the time left on their timer (which
    /// runs between two queries).
    fn same_but_time_left(a: &KernelSocket, b: &KernelSocket) -> bool {
        let strip = |s: &KernelSocket| {
            let mut s = s.clone();
            if let Some(t) = &mut s.timer {
                t.remaining_ms = 0;
            }
            s
        };
        strip(a) == strip(b)
    }

    /// Look up until `pred` holds (loopback delivery is asynchronous), at
    /// most 1 s.
    fn wait_lookup(
        diag: &mut Diag,
        local: SocketAddr,
        remote: SocketAddr,
        what: &str,
        pred: impl Fn(Option<&KernelSocket>) -> bool,
    ) -> Option<KernelSocket> {
        let start = Instant::now();
        loop {
            let sock = diag.lookup(local, remote).expect("lookup");
            if pred(sock.as_ref()) {
                return sock;
            }
            if start.elapsed() > Duration::from_secs(1) {
                panic!("timed out waiting for {what}; kernel reports {sock:#?}");
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Per-call wall time and thread system (kernel) time of `f`, in µs.
    fn cost(iterations: u32, mut f: impl FnMut()) -> (f64, f64) {
        fn thread_sys_us() -> f64 {
            use nix::libc;
            // SAFETY: getrusage fills the zeroed struct it is given.
            let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
            // SAFETY: as above; `ru` is a live local.
            assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) }, 0);
            ru.ru_stime.tv_sec as f64 * 1e6 + ru.ru_stime.tv_usec as f64
        }
        let sys0 = thread_sys_us();
        let t0 = Instant::now();
        for _ in 0..iterations {
            f();
        }
        let wall = t0.elapsed().as_secs_f64() * 1e6;
        let sys = thread_sys_us() - sys0;
        (wall / iterations as f64, sys / iterations as f64)
    }

    #[test]
    fn lookup_in_private_netns() {
        if !crate::testing::require_root("sockdiag::lookup_in_private_netns") {
            return;
        }
        std::thread::spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
            loopback_up().expect("bring lo up");
            let mut diag = Diag::new().expect("Diag in new netns");
            let any4: SocketAddr = "0.0.0.0:0".parse().unwrap();

            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let server_addr = listener.local_addr().unwrap();

            // A listener: remote 0.0.0.0:0.
            let l = diag.lookup(server_addr, any4).unwrap().expect("listener by (local, 0.0.0.0:0)");
            assert_eq!(l.state, TcpState::Listen);
            assert_eq!((l.local, l.remote), (server_addr, any4));
            assert_ne!(l.inode, 0);

            let mut client = TcpStream::connect(server_addr).unwrap();
            let client_addr = client.local_addr().unwrap();
            let (mut server, _) = listener.accept().unwrap();

            // ESTABLISHED, both ends, as the dump reports them.
            let c = wait_lookup(&mut diag, client_addr, server_addr, "client ESTABLISHED", |s| {
                s.map(|k| k.state) == Some(TcpState::Established)
            })
            .unwrap();
            let s = wait_lookup(&mut diag, server_addr, client_addr, "server ESTABLISHED", |s| {
                s.map(|k| k.state) == Some(TcpState::Established)
            })
            .unwrap();
            assert_eq!((c.local, c.remote), (client_addr, server_addr));
            assert_eq!((s.local, s.remote), (server_addr, client_addr));
            assert_ne!(c.inode, 0);
            assert_ne!(s.inode, 0);
            let dump = diag.dump_tcp_family(false).unwrap();
            assert_eq!(find(&dump, client_addr, server_addr), Some(&c));
            assert_eq!(find(&dump, server_addr, client_addr), Some(&s));
            assert_eq!(find(&dump, server_addr, any4), Some(&l));

            // No such socket: ENOENT → None.
            let nowhere: SocketAddr = "127.0.0.1:1".parse().unwrap();
            let nobody: SocketAddr = "127.0.0.2:2".parse().unwrap();
            assert_eq!(diag.lookup(nowhere, nobody).unwrap(), None);
            assert_eq!(diag.lookup(client_addr, nobody).unwrap(), None);
            // A missing connection to the listener's address: the kernel
            // answers with the listener, lookup does not.
            let raw = diag.query_one(server_addr, nobody).unwrap();
            eprintln!("kernel's answer for a missing connection to a listener: {raw:?}");
            assert_eq!(raw.map(|k| k.state), Some(TcpState::Listen));
            assert_eq!(diag.lookup(server_addr, nobody).unwrap(), None);
            // A wildcard listener is found by its wildcard address only.
            let wild = TcpListener::bind("0.0.0.0:0").unwrap();
            let wild_port = wild.local_addr().unwrap().port();
            let w = diag.lookup(SocketAddr::from(([0, 0, 0, 0], wild_port)), any4).unwrap().expect("wildcard listener");
            assert_eq!(w.state, TcpState::Listen);
            assert_eq!(diag.lookup(SocketAddr::from(([127, 0, 0, 1], wild_port)), any4).unwrap(), None);
            drop(wild);

            // Active close by the client: orphaned FIN-WAIT-2 / CLOSE-WAIT.
            client.write_all(b"abc").unwrap();
            let mut three = [0u8; 3];
            server.read_exact(&mut three).unwrap();
            drop(client);
            let c = wait_lookup(&mut diag, client_addr, server_addr, "FIN-WAIT-2", |s| {
                s.map(|k| k.state) == Some(TcpState::FinWait2)
            })
            .unwrap();
            let s = wait_lookup(&mut diag, server_addr, client_addr, "CLOSE-WAIT", |s| {
                s.map(|k| k.state) == Some(TcpState::CloseWait)
            })
            .unwrap();
            assert!(c.orphan);
            assert_eq!(c.inode, 0);
            let t = c.timer.as_ref().expect("orphaned FIN-WAIT-2 timer");
            assert_eq!(t.kind, TimerKind::TimeWait);
            assert!((50_000..=60_000).contains(&t.remaining_ms), "{t:?}");
            assert_eq!(s.recv_q, 1, "the unread FIN");
            assert!(!s.orphan);
            let dump = diag.dump_tcp().unwrap();
            assert!(same_but_time_left(find(&dump, client_addr, server_addr).unwrap(), &c));
            assert_eq!(find(&dump, server_addr, client_addr), Some(&s));

            // Passive close: client TIME-WAIT, server gone.
            drop(server);
            let c = wait_lookup(&mut diag, client_addr, server_addr, "TIME-WAIT", |s| {
                s.map(|k| k.state) == Some(TcpState::TimeWait)
            })
            .unwrap();
            wait_lookup(&mut diag, server_addr, client_addr, "server gone", |s| s.is_none());
            assert_eq!(c.inode, 0);
            assert!(!c.orphan);
            let t = c.timer.as_ref().expect("TIME-WAIT timer");
            assert_eq!(t.kind, TimerKind::TimeWait);
            assert_eq!(t.retrans, 0);
            assert!((50_000..=60_000).contains(&t.remaining_ms), "{t:?}");
            let dump = diag.dump_tcp().unwrap();
            assert!(same_but_time_left(find(&dump, client_addr, server_addr).unwrap(), &c));

            // A pending request (SYN-RECV): with TCP_DEFER_ACCEPT the
            // listener drops the client's bare ACK, so the request socket
            // stays while the client is already ESTABLISHED.
            {
                use nix::libc;
                use std::os::fd::AsRawFd;
                let secs: libc::c_int = 30;
                // SAFETY: setsockopt on a live fd with a c_int option value.
                let rc = unsafe {
                    libc::setsockopt(
                        listener.as_raw_fd(),
                        libc::IPPROTO_TCP,
                        libc::TCP_DEFER_ACCEPT,
                        (&secs as *const libc::c_int).cast(),
                        std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                    )
                };
                assert_eq!(rc, 0, "TCP_DEFER_ACCEPT: {}", io::Error::last_os_error());
            }
            let pending = TcpStream::connect(server_addr).unwrap();
            let pending_addr = pending.local_addr().unwrap();
            let r = wait_lookup(&mut diag, server_addr, pending_addr, "SYN-RECV request", |s| s.is_some()).unwrap();
            eprintln!("pending request as the kernel reports it: {r:?}");
            assert_eq!(r.state, TcpState::SynReceived);
            assert_eq!((r.local, r.remote), (server_addr, pending_addr));
            assert_eq!(r.inode, 0);
            assert!(!r.orphan);
            let dump = diag.dump_tcp().unwrap();
            assert!(same_but_time_left(find(&dump, server_addr, pending_addr).unwrap(), &r));
            assert_eq!(diag.lookup(pending_addr, server_addr).unwrap().map(|k| k.state), Some(TcpState::Established));

            // IPv6, and one family per dump.
            if let Some(l6) = or_skip("sockdiag::lookup_in_private_netns (IPv6)", TcpListener::bind("[::1]:0")) {
                let a6 = l6.local_addr().unwrap();
                let any6: SocketAddr = "[::]:0".parse().unwrap();
                let l = diag.lookup(a6, any6).unwrap().expect("IPv6 listener");
                assert_eq!((l.state, l.local, l.remote), (TcpState::Listen, a6, any6));
                let c6 = TcpStream::connect(a6).unwrap();
                let c6_addr = c6.local_addr().unwrap();
                let (_s6, _) = l6.accept().unwrap();
                let c = wait_lookup(&mut diag, c6_addr, a6, "IPv6 ESTABLISHED", |s| {
                    s.map(|k| k.state) == Some(TcpState::Established)
                })
                .unwrap();
                assert_eq!((c.local, c.remote), (c6_addr, a6));
                assert!(diag.lookup(a6, "[::1]:1".parse().unwrap()).unwrap().is_none());
                let v6 = diag.dump_tcp_family(true).unwrap();
                let v4 = diag.dump_tcp_family(false).unwrap();
                assert!(v6.iter().all(|s| s.local.is_ipv6()));
                assert!(v4.iter().all(|s| s.local.is_ipv4()));
                assert_eq!(find(&v6, c6_addr, a6), Some(&c));
                assert!(find(&v4, server_addr, any4).is_some());

                // Dual stack: an IPv6 socket talking to an IPv4 peer is
                // reported in mapped form and found by either spelling.
                if let Some(ds) = or_skip("sockdiag::lookup_in_private_netns (dual stack)", TcpListener::bind("[::]:0"))
                {
                    let port = ds.local_addr().unwrap().port();
                    let to: SocketAddr = SocketAddr::from(([127, 0, 0, 1], port));
                    let c4 = TcpStream::connect(to).unwrap();
                    let c4_addr = c4.local_addr().unwrap();
                    let (_a, _) = ds.accept().unwrap();
                    let mapped = |a: SocketAddr| match a {
                        SocketAddr::V4(a) => SocketAddr::new(IpAddr::V6(a.ip().to_ipv6_mapped()), a.port()),
                        v6 => v6,
                    };
                    let by_v6 = diag.lookup(mapped(to), mapped(c4_addr)).unwrap();
                    let by_v4 = diag.lookup(to, c4_addr).unwrap();
                    eprintln!("dual-stack accepted socket: by mapped {by_v6:?}, by IPv4 {by_v4:?}");
                    let by_v6 = by_v6.expect("dual-stack socket by its mapped addresses");
                    assert_eq!(by_v6.state, TcpState::Established);
                    assert_eq!(by_v6.local, mapped(to));
                    let dump = diag.dump_tcp_family(true).unwrap();
                    assert_eq!(find(&dump, mapped(to), mapped(c4_addr)), Some(&by_v6));
                }
            }

            // What it costs: lookup vs dump, here in a namespace with a
            // handful of sockets.
            const N: u32 = 200;
            let (hit_wall, hit_sys) = cost(N, || {
                assert!(diag.lookup(pending_addr, server_addr).unwrap().is_some());
            });
            let (miss_wall, miss_sys) = cost(N, || {
                assert!(diag.lookup(nowhere, nobody).unwrap().is_none());
            });
            let (v4_wall, v4_sys) = cost(N, || {
                diag.dump_tcp_family(false).unwrap();
            });
            let (all_wall, all_sys) = cost(N, || {
                diag.dump_tcp().unwrap();
            });
            let sockets = diag.dump_tcp().unwrap().len();
            eprintln!(
                "sock_diag cost per call over {N} calls ({sockets} sockets in the namespace), \
                 wall / kernel (thread system time, sampled per tick: \
                 meaningless below a few ms in total):\n  \
                 lookup (found)        {hit_wall:8.1} µs / {hit_sys:8.1} µs\n  \
                 lookup (ENOENT)       {miss_wall:8.1} µs / {miss_sys:8.1} µs\n  \
                 dump_tcp_family(v4)   {v4_wall:8.1} µs / {v4_sys:8.1} µs\n  \
                 dump_tcp (v4 + v6)    {all_wall:8.1} µs / {all_sys:8.1} µs"
            );
            drop(pending);
        })
        .join()
        .expect("netns test thread panicked");
    }
}
