//! The TUN device: our own type over `tun_tap::Iface::without_packet_info`,
//! non-blocking, registered with mio. I/O errors are returned, never
//! panicked on (smoltcp's `TunTapInterface` panics). Configuration of the
//! kernel side of the link (MTU, address, up) shells out to iproute2 `ip`,
//! so every step can be printed as the command a person would type.

use std::fmt;
use std::io;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::path::Path;

use smoltcp::wire::IpCidr;

/// What to open and how to configure it.
#[derive(Clone, Debug)]
pub struct TunSpec {
    pub name: String,
    pub mtu: usize,
    /// Addresses for the kernel's side of the link (with prefix).
    pub peer_addrs: Vec<IpCidr>,
    /// closelab's own addresses: must not be assigned to any kernel interface.
    pub own_addrs: Vec<IpAddr>,
    /// Configure the link (MTU, addresses, up). The lab's TUN is already
    /// configured: then only `up` is ensured.
    pub configure: bool,
}

/// Errors opening or configuring the TUN device; each names the device and
/// the cause.
#[derive(Debug)]
pub enum TunError {
    BadName(String),
    NoDevice,
    Permission(String),
    Busy(String),
    NotTun(String),
    AddressInUse { addr: IpAddr, dev: String },
    NoIp,
    Command { cmd: String, stderr: String },
    Io { name: String, err: io::Error },
}

impl fmt::Display for TunError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            TunError::BadName(n) => {
                write!(f, "invalid TUN name `{n}` (1 to 15 characters, letters, digits, `-`, `_`, `.`)")
            }
            TunError::NoDevice => {
                write!(f, "cannot open TUN device: /dev/net/tun does not exist (load the tun module: modprobe tun)")
            }
            TunError::Permission(n) => {
                write!(f, "cannot open TUN device {n}: permission denied (run as root or grant CAP_NET_ADMIN)")
            }
            TunError::Busy(n) => write!(f, "cannot open TUN device {n}: name already in use by another process"),
            TunError::NotTun(n) => write!(
                f,
                "cannot open TUN device {n}: name already in use by a network interface that is not a TUN device"
            ),
            TunError::AddressInUse { addr, dev } => {
                write!(f, "address {addr} is already in use on {dev} in this network namespace")
            }
            TunError::NoIp => write!(f, "the `ip` binary (iproute2) was not found in PATH; install iproute2"),
            TunError::Command { cmd, stderr } => write!(f, "`{cmd}` failed: {stderr}"),
            TunError::Io { name, err } => write!(f, "TUN device {name}: {err}"),
        }
    }
}

impl std::error::Error for TunError {}

/// The TUN's kernel queue length (`txqueuelen`, which also sizes the TUN's
/// packet ring). Packets the kernel routes to the TUN wait there until
/// closelab reads them; when it is full they are dropped and only counted
/// (`tx_dropped`). Linux's default of 500 lost 76,262 packets of a burst of
/// 12,000 connects; 16,384 queued packets hold such a burst (one SYN per
/// connection, then a few packets each as the endpoint catches up) and cost
/// a ring of 16,384 pointers (128 KiB) plus the packets actually waiting.
pub const TXQUEUELEN: u32 = 16_384;

/// The timeline note for `new` packets the TUN's queue dropped.
pub fn drop_note(tun: &str, new: u64, total: u64) -> String {
    format!(
        "the TUN's kernel queue dropped {new} packets before closelab read them ({total} since start; {tun}'s tx_dropped, txqueuelen {TXQUEUELEN})"
    )
}

/// An open TUN device. Dropping it closes the fd: a non-persistent device
/// disappears with it; on a persistent one the addresses closelab added are
/// removed again.
pub struct TunDevice {
    iface: tun_tap::Iface,
    name: String,
    persistent: bool,
    added: Vec<IpCidr>,
    /// The queue's drop counter when closelab attached.
    dropped_at_open: Option<u64>,
    /// Drops already written into the timeline (every run loop on this
    /// device shares it, so none is reported twice).
    drops_reported: std::cell::Cell<u64>,
}

/// The kernel's `tx_dropped` counter of interface `name` in the calling
/// thread's network namespace: packets routed to the TUN that its full
/// queue dropped before closelab could read them. Read from
/// `/proc/thread-self/net/dev` (per thread, so right after `setns`;
/// `/sys/class/net` shows the namespace /sys was mounted in).
pub fn tx_dropped(name: &str) -> io::Result<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/net/dev")?;
    parse_tx_dropped(&text, name)
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no counters for {name} in /proc/net/dev")))
}

/// The transmit `drop` column of `name` in /proc/net/dev text: after the
/// name, 8 receive then 8 transmit fields (bytes packets errs drop …).
fn parse_tx_dropped(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (dev, rest) = l.split_once(':')?;
        if dev.trim() != name {
            return None;
        }
        rest.split_whitespace().nth(11)?.parse().ok()
    })
}

fn valid_name(n: &str) -> bool {
    !n.is_empty() && n.len() <= 15 && n.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// Checks that iproute2's `ip` can be run.
pub fn check_ip() -> Result<(), TunError> {
    match crate::sys::lab::ip_command().arg("-V").output() {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(TunError::NoIp),
        Err(e) => Err(TunError::Command { cmd: "ip -V".into(), stderr: e.to_string() }),
    }
}

fn ip(args: &[String]) -> Result<(), TunError> {
    let cmd = format!("ip {}", args.join(" "));
    log::debug!("tun: run {cmd}");
    let out = crate::sys::lab::ip_command().args(args).output().map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => TunError::NoIp,
        _ => TunError::Command { cmd: cmd.clone(), stderr: e.to_string() },
    })?;
    if !out.status.success() {
        return Err(TunError::Command { cmd, stderr: String::from_utf8_lossy(&out.stderr).trim().to_string() });
    }
    Ok(())
}

/// Interface that holds `addr` in the current network namespace, if any.
fn holder_of(addr: IpAddr) -> Option<String> {
    let addrs = nix::ifaddrs::getifaddrs().ok()?;
    for ifa in addrs {
        let Some(sa) = ifa.address else { continue };
        let ip = if let Some(v4) = sa.as_sockaddr_in() {
            IpAddr::V4(v4.ip())
        } else if let Some(v6) = sa.as_sockaddr_in6() {
            IpAddr::V6(v6.ip())
        } else {
            continue;
        };
        if ip == addr {
            return Some(ifa.interface_name);
        }
    }
    None
}

impl TunDevice {
    /// Creates (or attaches to a persistent) TUN device and configures it.
    pub fn open(spec: &TunSpec) -> Result<TunDevice, TunError> {
        if !valid_name(&spec.name) {
            return Err(TunError::BadName(spec.name.clone()));
        }
        if spec.configure {
            check_ip()?;
        }
        // Asked through a socket ioctl, so the answer is about this thread's
        // network namespace (/sys/class/net shows the namespace /sys was
        // mounted in, which differs after setns). If the name exists and
        // TUNSETIFF then succeeds, it was a persistent TUN device; if it is
        // another kind of interface, TUNSETIFF fails with EINVAL.
        let exists = nix::net::if_::if_nametoindex(spec.name.as_str()).is_ok();
        let persistent = exists;
        if spec.configure {
            for own in &spec.own_addrs {
                if let Some(dev) = holder_of(*own) {
                    return Err(TunError::AddressInUse { addr: *own, dev });
                }
            }
            for peer in &spec.peer_addrs {
                let a: IpAddr = peer.address().into();
                if let Some(dev) = holder_of(a)
                    && dev != spec.name
                {
                    return Err(TunError::AddressInUse { addr: a, dev });
                }
            }
        }
        if !Path::new("/dev/net/tun").exists() {
            return Err(TunError::NoDevice);
        }
        let iface = tun_tap::Iface::without_packet_info(&spec.name, tun_tap::Mode::Tun).map_err(|e| {
            match e.raw_os_error() {
                Some(libc_errno) if libc_errno == nix::libc::EPERM || libc_errno == nix::libc::EACCES => {
                    TunError::Permission(spec.name.clone())
                }
                Some(n) if n == nix::libc::EBUSY => TunError::Busy(spec.name.clone()),
                Some(n) if n == nix::libc::ENOENT || n == nix::libc::ENODEV => TunError::NoDevice,
                Some(n) if n == nix::libc::EINVAL => TunError::NotTun(spec.name.clone()),
                _ => TunError::Io { name: spec.name.clone(), err: e },
            }
        })?;
        iface.set_non_blocking().map_err(|err| TunError::Io { name: spec.name.clone(), err })?;
        // tun-tap opens /dev/net/tun without O_CLOEXEC: every `ip` (or
        // server) child would inherit the device and keep it attached.
        // SAFETY: the descriptor is the Iface's, open for as long as `iface`.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(iface.as_raw_fd()) };
        nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC))
            .map_err(|e| TunError::Io { name: spec.name.clone(), err: io::Error::from(e) })?;
        let mut dev = TunDevice {
            iface,
            name: spec.name.clone(),
            persistent,
            added: Vec::new(),
            dropped_at_open: None,
            drops_reported: Default::default(),
        };
        if spec.configure {
            ip(&["link".into(), "set".into(), "dev".into(), spec.name.clone(), "mtu".into(), spec.mtu.to_string()])?;
            for peer in &spec.peer_addrs {
                let a: IpAddr = peer.address().into();
                if holder_of(a).is_some() {
                    continue;
                }
                let mut args = vec![];
                if a.is_ipv6() {
                    args.push("-6".to_string());
                }
                args.extend(["addr".into(), "add".into(), peer.to_string(), "dev".into(), spec.name.clone()]);
                if a.is_ipv6() {
                    // No duplicate address detection: the link has exactly
                    // two ends and DAD would delay the first packets by ~1 s.
                    args.push("nodad".into());
                }
                ip(&args)?;
                dev.added.push(*peer);
            }
        }
        ip(&[
            "link".into(),
            "set".into(),
            "dev".into(),
            spec.name.clone(),
            "txqueuelen".into(),
            TXQUEUELEN.to_string(),
            "up".into(),
        ])?;
        dev.dropped_at_open = tx_dropped(&spec.name)
            .inspect_err(|e| log::warn!("tun: cannot read the drop counter of {}: {e}", spec.name))
            .ok();
        Ok(dev)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the device existed (persistent) before closelab opened it.
    pub fn was_persistent(&self) -> bool {
        self.persistent
    }

    /// Packets the TUN's kernel queue dropped since closelab attached
    /// (`None` if the counter cannot be read). Call it from a thread in the
    /// TUN's network namespace.
    pub fn dropped(&self) -> Option<u64> {
        let now = tx_dropped(&self.name).ok()?;
        Some(now.saturating_sub(self.dropped_at_open?))
    }

    /// The note for drops not yet reported, if the counter grew.
    pub fn new_drops_note(&self) -> Option<String> {
        let total = self.dropped()?;
        let new = total.checked_sub(self.drops_reported.get()).filter(|n| *n > 0)?;
        self.drops_reported.set(total);
        Some(drop_note(&self.name, new, total))
    }

    /// Reads one packet; `Ok(None)` when none is waiting. EINTR is retried:
    /// under edge-triggered mio, reporting it as "nothing waiting" would
    /// leave packets unread until the next one arrives.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        loop {
            match self.iface.recv(buf) {
                Ok(n) => return Ok(Some(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes one packet; `Ok(false)` when the device would block. EINTR
    /// is retried.
    pub fn send(&self, pkt: &[u8]) -> io::Result<bool> {
        loop {
            match self.iface.send(pkt) {
                Ok(n) if n == pkt.len() => return Ok(true),
                Ok(n) => return Err(io::Error::other(format!("short write to TUN: {n} of {} bytes", pkt.len()))),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        self.iface.as_raw_fd()
    }
}

impl Drop for TunDevice {
    fn drop(&mut self) {
        if self.persistent {
            for a in &self.added {
                let _ = ip(&["addr".into(), "del".into(), a.to_string(), "dev".into(), self.name.clone()]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_parse_tx_dropped() {
        let text = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     100       2    0    0    0     0          0         0      100       2    0    0    0     0       0          0
cl1-t: 5000000   4000    0    3    0     0          0         0  9000000    7000    0 76262    0     0       0          0
";
        assert_eq!(parse_tx_dropped(text, "cl1-t"), Some(76262));
        assert_eq!(parse_tx_dropped(text, "lo"), Some(0));
        assert_eq!(parse_tx_dropped(text, "cl1"), None);
        assert_eq!(parse_tx_dropped("garbage", "cl1-t"), None);
    }
}
