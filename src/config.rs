//! Typed configuration from what a user typed: durations, byte counts,
//! addresses with prefixes. One clear error line per mistake; no I/O.

use std::net::{IpAddr, SocketAddr};

use smoltcp::time::Duration;
use smoltcp::wire::{IpAddress, IpCidr};

/// Parses `200ms`, `1.5s`, `10s`, `2m`, `500us`, `1h`. A bare number is
/// refused: the unit is never guessed.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let err = || format!("invalid duration `{s}` (expected a number with a unit: 200ms, 1.5s, 2m, 1h, 500us)");
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
pub fn parse_bytes(s: &str) -> Result<usize, String> {
    let err = || format!("invalid byte count `{s}` (expected e.g. 5, 4k, 100M)");
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
pub fn parse_cidr(s: &str) -> Result<IpCidr, String> {
    let err = |why: &str| format!("invalid address `{s}`: {why} (expected e.g. 10.201.0.2/24 or fd00:201::2/64)");
    let (ip, prefix) = s.split_once('/').ok_or_else(|| err("missing /prefix"))?;
    let ip: IpAddr = ip.parse().map_err(|_| err("not an IP address"))?;
    let prefix: u8 = prefix.parse().map_err(|_| err("bad prefix length"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if prefix > max {
        return Err(err("prefix too long"));
    }
    if ip.is_unspecified() || ip.is_multicast() {
        return Err(err("not a unicast address"));
    }
    Ok(IpCidr::new(IpAddress::from(ip), prefix))
}

/// Parses a plain IP address.
pub fn parse_ip(s: &str) -> Result<IpAddr, String> {
    s.parse().map_err(|_| format!("invalid IP address `{s}`"))
}

/// Parses `10.201.0.1:7000` or `[fd00::1]:7000`.
pub fn parse_socket_addr(s: &str) -> Result<SocketAddr, String> {
    let a: SocketAddr = s
        .parse()
        .map_err(|_| format!("invalid address `{s}` (expected IP:PORT, e.g. 10.201.0.1:7000 or [fd00::1]:7000)"))?;
    if a.port() == 0 {
        return Err(format!("invalid address `{s}`: port 0"));
    }
    Ok(a)
}

/// The first host of a prefix (`10.201.0.2/24` → `10.201.0.1`): the default
/// address of the kernel's side of the TUN link. Errors when that is the
/// address itself.
pub fn first_host(cidr: &IpCidr) -> Result<IpAddr, String> {
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
        return Err(format!(
            "address {cidr} is the first host of its prefix; give the kernel side another address with --peer-addr"
        ));
    }
    Ok(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_parse_duration() {
        assert_eq!(parse_duration("200ms"), Ok(Duration::from_millis(200)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("500us"), Ok(Duration::from_micros(500)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        for bad in ["", "200", "ms", "1.2.3s", "-1s", "5 parsecs", "1e9h"] {
            let e = parse_duration(bad).unwrap_err();
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
        assert!(first_host(&c).unwrap_err().contains("--peer-addr"));
        assert_eq!(
            parse_cidr("10.201.0.300/24").unwrap_err(),
            "invalid address `10.201.0.300/24`: not an IP address (expected e.g. 10.201.0.2/24 or fd00:201::2/64)"
        );
        assert!(parse_cidr("10.201.0.2").unwrap_err().contains("missing /prefix"));
        assert!(parse_cidr("10.201.0.2/33").unwrap_err().contains("prefix too long"));
    }

    #[test]
    fn test_parse_socket_addr() {
        assert_eq!(parse_socket_addr("10.201.0.1:7000").unwrap().port(), 7000);
        assert_eq!(parse_socket_addr("[fd00::1]:7000").unwrap().port(), 7000);
        assert!(parse_socket_addr("10.201.0.1").unwrap_err().contains("expected IP:PORT"));
        assert!(parse_socket_addr("10.201.0.1:0").unwrap_err().contains("port 0"));
        assert!(parse_socket_addr("10.201.0.1:70000").is_err());
    }
}
