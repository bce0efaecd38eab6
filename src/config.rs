//! Typed configuration from what a user typed: durations, byte counts,
//! addresses with prefixes. One clear error line per mistake; no I/O.

use std::net::{IpAddr, SocketAddr};

use smoltcp::time::Duration;
use smoltcp::wire::{IpAddress, IpCidr};

/// What is wrong with a value a user typed. Each message is one line that
/// quotes the input and says what would be right.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot set peer sysctl {key:?}: {reason}")]
    PeerSysctl { key: String, reason: String },
    /// `net.ipv4.tcp_tw_recycle` no longer exists; said plainly, not pretended.
    #[error(
        "net.ipv4.tcp_tw_recycle was removed in Linux 4.12 because it broke clients behind NAT; it cannot be set (use tcp_tw_reuse for outgoing connections, or fix who closes first)"
    )]
    TwRecycle,
    #[error("invalid duration `{0}` (expected a number with a unit: 200ms, 1.5s, 2m, 1h, 500us)")]
    Duration(String),
    #[error("invalid byte count `{0}` (expected e.g. 5, 4k, 100M)")]
    Bytes(String),
    #[error("invalid address `{input}`: {why} (expected e.g. 10.201.0.2/24 or fd00:201::2/64)")]
    Cidr { input: String, why: String },
    #[error("invalid IP address `{0}`")]
    Ip(String),
    #[error("invalid keepalive `{0}`: at least 1s (Linux's TCP_KEEPIDLE minimum)")]
    Keepalive(String),
    #[error("unknown TIME-WAIT model `{0}` (linux or smoltcp)")]
    TimeWaitModel(String),
    #[error("invalid time-wait-syn `{0}` (accept or drop)")]
    TimeWaitSyn(String),
    #[error("invalid TIME-WAIT length `{0}` (1ms to 1h; Linux: 60s)")]
    TimeWaitLen(String),
    #[error("invalid max-tw {0} (0 to {max})", max = MAX_TW_ENTRIES)]
    MaxTw(usize),
    #[error("invalid fin-timeout `{0}` (1ms to 1h; Linux: 60s)")]
    FinTimeout(String),
    #[error("invalid {name} {n} ({min} to {max})", max = MAX_RETRIES)]
    Retries { name: &'static str, n: u32, min: u32 },
    #[error("the smoltcp TIME-WAIT model takes no {0}; use the linux model")]
    LinuxModelOnly(&'static str),
    #[error("time-wait-syn is for the smoltcp TIME-WAIT model (the linux model follows Linux's rule for a SYN)")]
    SmoltcpModelOnly,
    #[error("invalid {what} `{input}`: must be longer than 0s")]
    ZeroTimer { what: String, input: String },
    #[error("invalid buffer size `{0}` (1 byte to 1G)")]
    Buffer(String),
    #[error("invalid --syn-backlog {0} (1 to {max})", max = MAX_SYN_BACKLOG)]
    SynBacklog(usize),
    #[error("invalid --max-memory `{0}` (at most 1024G)")]
    MaxMemory(String),
    #[error("--max-memory `{input}` cannot hold one connection with {buffer}-byte buffers (needs {need} bytes)")]
    MemoryTooSmall { input: String, buffer: usize, need: usize },
    #[error("invalid peer address {ip}: {why}")]
    PeerNotUnicast { ip: IpAddr, why: &'static str },
    #[error("invalid peer address {ip}: {why} {cidr}")]
    PeerNotHost { ip: IpAddr, why: &'static str, cidr: IpCidr },
    #[error("invalid address `{0}` (expected IP:PORT, e.g. 10.201.0.1:7000 or [fd00::1]:7000)")]
    SocketAddr(String),
    #[error("invalid address `{0}`: port 0")]
    Port0(String),
    #[error("address {0} is the first host of its prefix; give the kernel side another address with --peer-addr")]
    FirstHost(IpCidr),
}

// Bridge until cmd/ and sys/ have typed errors (issue 11).
impl From<ConfigError> for String {
    fn from(e: ConfigError) -> String {
        e.to_string()
    }
}

/// An I/O error's text without the " (os error N)" Rust appends, first
/// letter lowercased: "no such file or directory". The one copy; the ones
/// in `sys/` move here when their files get typed errors (issue 11).
pub fn os_error_text(e: &std::io::Error) -> String {
    let s = e.to_string();
    let s = s.split(" (os error").next().unwrap_or(&s);
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

/// Parses `200ms`, `1.5s`, `10s`, `2m`, `500us`, `1h`. A bare number is
/// refused: the unit is never guessed.
pub fn parse_duration(s: &str) -> Result<Duration, ConfigError> {
    let err = || ConfigError::Duration(s.to_string());
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(err)?;
    let (num, unit) = t.split_at(split);
    if num.is_empty() {
        return Err(err());
    }
    let value: f64 = num.parse().map_err(|_| err())?;
    let micros_per = match unit {
        "us" | "µs" => 1.0,
        "ms" => 1e3,
        "s" | "sec" => 1e6,
        "m" | "min" => 60e6,
        "h" => 3600e6,
        _ => return Err(err()),
    };
    let micros = value * micros_per;
    if !micros.is_finite() || !(0.0..=1e15).contains(&micros) {
        return Err(err());
    }
    Ok(Duration::from_micros(micros.round() as u64))
}

/// Parses a byte count: `100`, `4k`/`4KiB`, `100M`/`100MiB`, `1G`.
pub fn parse_bytes(s: &str) -> Result<usize, ConfigError> {
    let err = || ConfigError::Bytes(s.to_string());
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: usize = num.parse().map_err(|_| err())?;
    let mult: usize = match unit {
        "" | "B" => 1,
        "k" | "K" | "KiB" | "kB" => 1 << 10,
        "M" | "MiB" | "MB" => 1 << 20,
        "G" | "GiB" | "GB" => 1 << 30,
        _ => return Err(err()),
    };
    n.checked_mul(mult).ok_or_else(err)
}

/// Parses `10.201.0.2/24` or `fd00::2/64`. The prefix is required: it
/// decides which peer address is on-link.
pub fn parse_cidr(s: &str) -> Result<IpCidr, ConfigError> {
    let err = |why: &str| ConfigError::Cidr { input: s.to_string(), why: why.to_string() };
    let (ip, prefix) = s.split_once('/').ok_or_else(|| err("missing /prefix"))?;
    let ip: IpAddr = ip.parse().map_err(|_| err("not an IP address"))?;
    let prefix: u8 = prefix.parse().map_err(|_| err("bad prefix length"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if prefix > max {
        return Err(err("prefix too long"));
    }
    // A host needs an on-link neighbour: at least two host addresses, and a
    // prefix that is not most of the Internet.
    let (min, most) = if ip.is_ipv4() { (8, 30) } else { (16, 126) };
    if prefix < min || prefix > most {
        return Err(err(&format!("prefix /{prefix} out of range (/{min} to /{most})")));
    }
    if let Some(why) = not_unicast(ip) {
        return Err(err(&format!("{why}, not a unicast host address")));
    }
    let cidr = IpCidr::new(IpAddress::from(ip), prefix);
    if let Some(why) = not_host_of(ip, &cidr) {
        return Err(err(why));
    }
    Ok(cidr)
}

/// Parses a plain IP address.
pub fn parse_ip(s: &str) -> Result<IpAddr, ConfigError> {
    s.parse().map_err(|_| ConfigError::Ip(s.to_string()))
}

/// Largest per-connection buffer (`--buffer`, a scenario's `buffer`): 1 GiB.
pub const MAX_BUFFER: usize = 1 << 30;

/// Linux refuses `TCP_KEEPIDLE` below 1 s; a shorter keep-alive would probe
/// without end.
pub const MIN_KEEPALIVE: Duration = Duration::from_secs(1);

/// A keep-alive idle time: at least 1 s, like Linux's `TCP_KEEPIDLE` minimum.
pub fn parse_keepalive(s: &str) -> Result<Duration, ConfigError> {
    let d = parse_duration(s)?;
    if d < MIN_KEEPALIVE {
        return Err(ConfigError::Keepalive(s.to_string()));
    }
    Ok(d)
}

/// Longest TIME-WAIT closelab keeps (`--time-wait`): an hour, 60 times
/// Linux's (the table counts milliseconds in 32 bits).
pub const MAX_TIME_WAIT: Duration = Duration::from_secs(3600);

/// Largest TIME-WAIT table (`--max-tw`): ~4 M entries, ~450 MB at the
/// measured ~106 bytes each.
pub const MAX_TW_ENTRIES: usize = 4 << 20;

/// How closelab closes, from the options (CLI or scenario file): `model`
/// (`linux` or `smoltcp`), `len` (`--time-wait`), `rfc1337`, `max`
/// (`--max-tw`), `syn` (`--time-wait-syn`, smoltcp model only) and Linux's
/// close timers (linux model only).
#[derive(Default)]
pub struct TimeWaitOptions<'a> {
    pub model: Option<&'a str>,
    pub len: Option<&'a str>,
    pub rfc1337: bool,
    pub max: Option<usize>,
    pub syn: Option<&'a str>,
    pub fin_timeout: Option<&'a str>,
    pub retries: Option<u32>,
    pub orphan_retries: Option<u32>,
    pub synack_retries: Option<u32>,
}

/// The validated settings.
pub struct CloseSettings {
    pub model: crate::endpoint::TimeWaitModel,
    pub time_wait: crate::endpoint::timewait::TwConfig,
    pub syn: crate::endpoint::TimeWaitSyn,
    pub timers: crate::endpoint::CloseTimers,
}

/// Most retransmissions any limit allows (Linux caps its sysctls at 255).
pub const MAX_RETRIES: u32 = 255;

/// The validated TIME-WAIT and close-timer settings.
pub fn time_wait(o: &TimeWaitOptions) -> Result<CloseSettings, ConfigError> {
    use crate::endpoint::{CloseTimers, TimeWaitModel, TimeWaitSyn, timewait::TwConfig};
    let model = match o.model {
        None | Some("linux") => TimeWaitModel::Linux,
        Some("smoltcp") => TimeWaitModel::Smoltcp,
        Some(other) => return Err(ConfigError::TimeWaitModel(other.to_string())),
    };
    let syn = match o.syn {
        None | Some("accept") => TimeWaitSyn::Accept,
        Some("drop") => TimeWaitSyn::Drop,
        Some(other) => return Err(ConfigError::TimeWaitSyn(other.to_string())),
    };
    let mut time_wait = TwConfig { rfc1337: o.rfc1337, ..TwConfig::default() };
    if let Some(len) = o.len {
        let d = parse_duration(len)?;
        if d < Duration::from_millis(1) || d > MAX_TIME_WAIT {
            return Err(ConfigError::TimeWaitLen(len.to_string()));
        }
        time_wait.len_ms = d.total_millis() as u32;
    }
    if let Some(max) = o.max {
        if max > MAX_TW_ENTRIES {
            return Err(ConfigError::MaxTw(max));
        }
        time_wait.max = max;
    }
    let mut timers = CloseTimers::default();
    if let Some(t) = o.fin_timeout {
        let d = parse_duration(t)?;
        if d < Duration::from_millis(1) || d > MAX_TIME_WAIT {
            return Err(ConfigError::FinTimeout(t.to_string()));
        }
        timers.fin_timeout = Some(d);
    }
    for (v, name, min, slot) in [
        (o.retries, "retries", 1, &mut timers.retries),
        (o.orphan_retries, "orphan-retries", 0, &mut timers.orphan_retries),
        (o.synack_retries, "synack-retries", 1, &mut timers.synack_retries),
    ] {
        if let Some(n) = v {
            if !(min..=MAX_RETRIES).contains(&n) {
                return Err(ConfigError::Retries { name, n, min });
            }
            *slot = n;
        }
    }
    if model == TimeWaitModel::Smoltcp {
        let linux_only = [
            (o.len.is_some(), "TIME-WAIT length (smoltcp's is a fixed 10 s)"),
            (o.rfc1337, "rfc1337 (smoltcp's TIME-WAIT always accepts an in-window RST)"),
            (o.max.is_some(), "max-tw (smoltcp's TIME-WAIT is a socket like any other)"),
            (o.fin_timeout.is_some(), "fin-timeout (smoltcp keeps FIN-WAIT-2 forever)"),
            (
                o.retries.is_some() || o.orphan_retries.is_some() || o.synack_retries.is_some(),
                "retransmission limits (smoltcp retransmits without end)",
            ),
        ];
        if let Some((_, what)) = linux_only.iter().find(|(given, _)| *given) {
            return Err(ConfigError::LinuxModelOnly(what));
        }
        timers = CloseTimers::none();
    } else if o.syn.is_some() {
        return Err(ConfigError::SmoltcpModelOnly);
    }
    Ok(CloseSettings { model, time_wait, syn, timers })
}

/// A timer that must be longer than zero (`what` names it in the error).
pub fn parse_timer(s: &str, what: &str) -> Result<Duration, ConfigError> {
    let d = parse_duration(s)?;
    if d == Duration::ZERO {
        return Err(ConfigError::ZeroTimer { what: what.to_string(), input: s.to_string() });
    }
    Ok(d)
}

/// A per-connection buffer size: 1 byte to 1 GiB.
pub fn parse_buffer(s: &str) -> Result<usize, ConfigError> {
    let n = parse_bytes(s)?;
    if n == 0 || n > MAX_BUFFER {
        return Err(ConfigError::Buffer(s.to_string()));
    }
    Ok(n)
}

/// Most half-open connections `--syn-backlog` allows (Linux's
/// tcp_max_syn_backlog is an int; a half-open entry here is ~0.4 KB, so this
/// is ~400 MB at most).
pub const MAX_SYN_BACKLOG: usize = 1 << 20;

/// `--syn-backlog`: 1 to [`MAX_SYN_BACKLOG`].
pub fn parse_syn_backlog(n: usize) -> Result<usize, ConfigError> {
    if !(1..=MAX_SYN_BACKLOG).contains(&n) {
        return Err(ConfigError::SynBacklog(n));
    }
    Ok(n)
}

/// Largest `--max-memory`: 1 TiB (a bound, not a promise).
pub const MAX_MEMORY: usize = 1 << 40;

/// `--max-memory`: at least one connection's two buffers, at most
/// [`MAX_MEMORY`].
pub fn parse_max_memory(s: &str, buffer: usize) -> Result<usize, ConfigError> {
    let n = parse_bytes(s)?;
    if n > MAX_MEMORY {
        return Err(ConfigError::MaxMemory(s.to_string()));
    }
    // The handshake's scratch buffer plus one connection's two buffers.
    let need = 3 * buffer;
    if n < need {
        return Err(ConfigError::MemoryTooSmall { input: s.to_string(), buffer, need });
    }
    Ok(n)
}

/// Why `ip` cannot be a host address of an endpoint or a peer (broadcast,
/// multicast, loopback, unspecified), or `None` if it can.
pub fn not_unicast(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) if v4.is_broadcast() => Some("the broadcast address"),
        IpAddr::V4(v4) if v4.is_multicast() => Some("a multicast address"),
        IpAddr::V4(v4) if v4.is_unspecified() => Some("the unspecified address"),
        IpAddr::V4(v4) if v4.is_loopback() => Some("a loopback address"),
        IpAddr::V4(v4) if v4.octets()[0] >= 240 => Some("a reserved (class E) address"),
        IpAddr::V4(v4) if v4.octets()[0] == 0 => Some("in 0.0.0.0/8 (this network)"),
        IpAddr::V6(v6) if v6.is_multicast() => Some("a multicast address"),
        IpAddr::V6(v6) if v6.is_unspecified() => Some("the unspecified address"),
        IpAddr::V6(v6) if v6.is_loopback() => Some("a loopback address"),
        _ => None,
    }
}

/// Why `ip` cannot be a host on the prefix `cidr` (its network or
/// broadcast address), or `None`. Addresses outside the prefix pass.
pub fn not_host_of(ip: IpAddr, cidr: &IpCidr) -> Option<&'static str> {
    let len = cidr.prefix_len() as u32;
    match (ip, IpAddr::from(cidr.address())) {
        (IpAddr::V4(ip), IpAddr::V4(net)) if len < 31 => {
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            let (ip, net) = (u32::from(ip), u32::from(net));
            if ip & mask != net & mask {
                None
            } else if ip & !mask == 0 {
                Some("the network address of its prefix")
            } else if ip & !mask == !mask {
                Some("the broadcast address of its prefix")
            } else {
                None
            }
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) if len < 127 => {
            let mask = if len == 0 { 0 } else { u128::MAX << (128 - len) };
            let (ip, net) = (u128::from(ip), u128::from(net));
            // RFC 4291 §2.6.1: all-zero host bits is the subnet-router anycast address.
            (ip & mask == net & mask && ip & !mask == 0).then_some("the subnet-router anycast address of its prefix")
        }
        _ => None,
    }
}

/// A peer's address (`--peer-addr`, a connect target): unicast and, when on
/// `cidr`'s prefix, neither its network nor its broadcast address.
pub fn check_peer(ip: IpAddr, cidr: Option<&IpCidr>) -> Result<(), ConfigError> {
    if let Some(why) = not_unicast(ip) {
        return Err(ConfigError::PeerNotUnicast { ip, why });
    }
    if let Some((why, cidr)) = cidr.and_then(|c| not_host_of(ip, c).map(|why| (why, *c))) {
        return Err(ConfigError::PeerNotHost { ip, why, cidr });
    }
    Ok(())
}

/// Parses `10.201.0.1:7000` or `[fd00::1]:7000`.
pub fn parse_socket_addr(s: &str) -> Result<SocketAddr, ConfigError> {
    let a: SocketAddr = s.parse().map_err(|_| ConfigError::SocketAddr(s.to_string()))?;
    if a.port() == 0 {
        return Err(ConfigError::Port0(s.to_string()));
    }
    Ok(a)
}

/// The first host of a prefix (`10.201.0.2/24` → `10.201.0.1`): the default
/// address of the kernel's side of the TUN link. Errors when that is the
/// address itself.
pub fn first_host(cidr: &IpCidr) -> Result<IpAddr, ConfigError> {
    let ip: IpAddr = cidr.address().into();
    let first: IpAddr = match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let mask = if cidr.prefix_len() == 0 { 0 } else { u32::MAX << (32 - cidr.prefix_len()) };
            IpAddr::V4(((bits & mask) + 1).into())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let mask = if cidr.prefix_len() == 0 { 0 } else { u128::MAX << (128 - cidr.prefix_len()) };
            IpAddr::V6(((bits & mask) + 1).into())
        }
    };
    if first == ip {
        return Err(ConfigError::FirstHost(*cidr));
    }
    Ok(first)
}

/// Peer sysctls allowed besides `net.ipv4.tcp_*`.
pub const PEER_SYSCTL_EXTRA: &[&str] =
    &["net.core.somaxconn", "net.ipv4.ip_local_port_range", "net.ipv4.ip_local_reserved_ports"];

const TW_RECYCLE: &str = "net.ipv4.tcp_tw_recycle";

/// Check a sysctl the lab may set on the Linux peer (in `<NAME>-linux` only).
pub fn validate_peer_sysctl(key: &str, value: &str) -> Result<(), ConfigError> {
    let bad = |reason: &str| ConfigError::PeerSysctl { key: key.to_string(), reason: reason.to_string() };
    if key == TW_RECYCLE {
        return Err(ConfigError::TwRecycle);
    }
    if key.is_empty() || !key.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.') {
        return Err(bad("allowed characters are a-z, 0-9, '_' and '.'"));
    }
    if !(key.starts_with("net.ipv4.tcp_") || PEER_SYSCTL_EXTRA.contains(&key)) {
        return Err(bad(
            "only net.ipv4.tcp_*, net.core.somaxconn, net.ipv4.ip_local_port_range and net.ipv4.ip_local_reserved_ports can be set on the peer",
        ));
    }
    if value.trim().is_empty() || value.chars().any(|c| c.is_control() && c != '\t') {
        return Err(bad("the value must be non-empty and on one line"));
    }
    Ok(())
}

/// `net.ipv4.tcp_fin_timeout=5` → `("net.ipv4.tcp_fin_timeout", "5")`, validated.
pub fn parse_peer_sysctl(s: &str) -> Result<(String, String), ConfigError> {
    let Some((key, value)) = s.split_once('=') else {
        return Err(ConfigError::PeerSysctl {
            key: s.to_string(),
            reason: "expected KEY=VALUE, e.g. net.ipv4.tcp_fin_timeout=5".to_string(),
        });
    };
    let (key, value) = (key.trim(), value.trim());
    validate_peer_sysctl(key, value)?;
    Ok((key.to_string(), value.to_string()))
}

/// A web server closelab can run in a lab (`lab serve`, a scenario's `[web]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerKind {
    Apache,
    Nginx,
    Python,
}

impl ServerKind {
    pub fn parse(s: &str) -> Result<ServerKind, String> {
        match s {
            "apache" | "apache2" | "httpd" => Ok(ServerKind::Apache),
            "nginx" => Ok(ServerKind::Nginx),
            "python" | "python3" => Ok(ServerKind::Python),
            _ => Err(format!("unknown web server `{s}` (expected apache, nginx or python)")),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ServerKind::Apache => "apache",
            ServerKind::Nginx => "nginx",
            ServerKind::Python => "python",
        }
    }

    /// The program `lab serve` starts.
    pub fn binary(self) -> &'static str {
        match self {
            ServerKind::Apache => "apache2",
            ServerKind::Nginx => "nginx",
            ServerKind::Python => "python3",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_error_text_strips_the_code() {
        let e = std::io::Error::from_raw_os_error(2);
        assert_eq!(os_error_text(&e), "no such file or directory");
        assert_eq!(os_error_text(&std::io::Error::other("Odd")), "odd");
    }

    #[test]
    fn test_parse_duration() {
        assert_eq!(parse_duration("200ms"), Ok(Duration::from_millis(200)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("500us"), Ok(Duration::from_micros(500)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        for bad in ["", "200", "ms", "1.2.3s", "-1s", "5 parsecs", "1e9h"] {
            let e = parse_duration(bad).unwrap_err().to_string();
            assert!(e.starts_with(&format!("invalid duration `{bad}`")), "{e}");
        }
    }

    #[test]
    fn test_parse_bytes() {
        assert_eq!(parse_bytes("5"), Ok(5));
        assert_eq!(parse_bytes("4k"), Ok(4096));
        assert_eq!(parse_bytes("100M"), Ok(100 << 20));
        assert!(parse_bytes("x").is_err());
        assert!(parse_bytes("5q").is_err());
        assert!(parse_bytes("99999999999999999999G").is_err());
    }

    #[test]
    fn test_parse_cidr_and_first_host() {
        let c = parse_cidr("10.201.0.2/24").unwrap();
        assert_eq!(first_host(&c).unwrap().to_string(), "10.201.0.1");
        let c = parse_cidr("fd00:201::2/64").unwrap();
        assert_eq!(first_host(&c).unwrap().to_string(), "fd00:201::1");
        let c = parse_cidr("10.201.0.1/24").unwrap();
        assert!(first_host(&c).unwrap_err().to_string().contains("--peer-addr"));
        assert_eq!(
            parse_cidr("10.201.0.300/24").unwrap_err().to_string(),
            "invalid address `10.201.0.300/24`: not an IP address (expected e.g. 10.201.0.2/24 or fd00:201::2/64)"
        );
        assert!(parse_cidr("10.201.0.2").unwrap_err().to_string().contains("missing /prefix"));
        assert!(parse_cidr("10.201.0.2/33").unwrap_err().to_string().contains("prefix too long"));
    }

    #[test]
    fn test_parse_cidr_refuses_non_hosts() {
        for (bad, why) in [
            ("255.255.255.255/24", "the broadcast address"),
            ("10.201.0.255/24", "the broadcast address of its prefix"),
            ("10.201.0.0/24", "the network address of its prefix"),
            ("10.201.0.2/0", "prefix /0 out of range"),
            ("10.201.0.2/31", "prefix /31 out of range"),
            ("127.0.0.2/8", "a loopback address"),
            ("224.0.0.1/24", "a multicast address"),
            ("0.0.0.0/24", "the unspecified address"),
            ("fd00::/64", "subnet-router anycast"),
            ("fd00::2/0", "prefix /0 out of range"),
            ("ff02::1/64", "a multicast address"),
        ] {
            let e = parse_cidr(bad).unwrap_err().to_string();
            assert!(e.starts_with(&format!("invalid address `{bad}`: ")) && e.contains(why), "{bad}: {e}");
        }
        assert!(parse_cidr("10.201.0.254/24").is_ok());
    }

    #[test]
    fn test_check_peer() {
        let c = parse_cidr("10.201.0.2/24").unwrap();
        assert!(check_peer("10.201.0.1".parse().unwrap(), Some(&c)).is_ok());
        assert!(check_peer("192.0.2.1".parse().unwrap(), Some(&c)).is_ok());
        assert_eq!(
            check_peer("255.255.255.255".parse().unwrap(), Some(&c)).unwrap_err().to_string(),
            "invalid peer address 255.255.255.255: the broadcast address"
        );
        assert_eq!(
            check_peer("10.201.0.255".parse().unwrap(), Some(&c)).unwrap_err().to_string(),
            "invalid peer address 10.201.0.255: the broadcast address of its prefix 10.201.0.2/24"
        );
        assert!(
            check_peer("10.201.0.0".parse().unwrap(), Some(&c)).unwrap_err().to_string().contains("network address")
        );
    }

    #[test]
    fn test_keepalive_timer_and_buffer_bounds() {
        assert_eq!(parse_keepalive("1s"), Ok(Duration::from_secs(1)));
        for bad in ["0s", "1us", "999ms"] {
            assert!(parse_keepalive(bad).unwrap_err().to_string().contains("at least 1s"), "{bad}");
        }
        assert!(parse_timer("0s", "timeout").unwrap_err().to_string().contains("longer than 0s"));
        assert_eq!(parse_timer("1us", "timeout"), Ok(Duration::from_micros(1)));
        assert_eq!(parse_buffer("1G"), Ok(1 << 30));
        assert!(parse_buffer("99999999999999").unwrap_err().to_string().contains("1 byte to 1G"));
        assert!(parse_buffer("0").is_err());
    }

    #[test]
    fn test_parse_socket_addr() {
        assert_eq!(parse_socket_addr("10.201.0.1:7000").unwrap().port(), 7000);
        assert_eq!(parse_socket_addr("[fd00::1]:7000").unwrap().port(), 7000);
        assert!(parse_socket_addr("10.201.0.1").unwrap_err().to_string().contains("expected IP:PORT"));
        assert!(parse_socket_addr("10.201.0.1:0").unwrap_err().to_string().contains("port 0"));
        assert!(parse_socket_addr("10.201.0.1:70000").is_err());
    }
}
