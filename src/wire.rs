//! Wire layer: turns a raw IP packet into the facts the rest of closelab talks
//! about (4-tuple, TCP flags, seq/ack, window, payload length; the
//! timestamp option on request).
//!
//! It never panics on malformed input: anything that is not a well-formed
//! IPv4/IPv6 TCP segment yields `None`, and callers decide what to do with it
//! (the endpoint counts and reports it; nothing is silently dropped).

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use smoltcp::wire::{IpProtocol, Ipv4Packet, Ipv6Packet, TcpPacket};

/// TCP flags in tcpdump's letters (also their JSON form: `"F."`, `"none"`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Flags {
    pub syn: bool,
    pub fin: bool,
    pub rst: bool,
    pub psh: bool,
    pub ack: bool,
}

impl Flags {
    /// Parses tcpdump's spelling (`S`, `F.`, `R.`, `P.`, `.`).
    pub fn parse(s: &str) -> Option<Flags> {
        let mut f = Flags::default();
        for c in s.chars() {
            match c {
                'S' => f.syn = true,
                'F' => f.fin = true,
                'R' => f.rst = true,
                'P' => f.psh = true,
                '.' => f.ack = true,
                _ => return None,
            }
        }
        Some(f)
    }
}

impl From<Flags> for String {
    fn from(f: Flags) -> String {
        f.to_string()
    }
}

impl TryFrom<String> for Flags {
    type Error = String;

    /// What `Display` writes, `none` included.
    fn try_from(s: String) -> Result<Flags, String> {
        match s.as_str() {
            "none" => Ok(Flags::default()),
            _ => Flags::parse(&s).ok_or_else(|| format!("bad tcp flags {s:?}")),
        }
    }
}

impl fmt::Display for Flags {
    /// tcpdump order: `S F R P` then `.` for ACK; a bare ACK prints `.`.
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        if self.syn {
            f.write_str("S")?;
        }
        if self.fin {
            f.write_str("F")?;
        }
        if self.rst {
            f.write_str("R")?;
        }
        if self.psh {
            f.write_str("P")?;
        }
        if self.ack {
            f.write_str(".")?;
        }
        if !(self.syn || self.fin || self.rst || self.psh || self.ack) {
            f.write_str("none")?;
        }
        Ok(())
    }
}

/// The identity of a connection as seen from closelab's side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FourTuple {
    pub local: SocketAddr,
    pub remote: SocketAddr,
}

impl fmt::Display for FourTuple {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{} <-> {}", self.local, self.remote)
    }
}

/// Summary of one TCP segment.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Segment {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub flags: Flags,
    pub seq: u32,
    pub ack: u32,
    pub win: u16,
    /// Payload bytes (not counting SYN/FIN).
    pub len: usize,
}

impl Segment {
    /// The 4-tuple of this segment from the receiver's point of view
    /// (`local` is the destination).
    pub fn tuple_at_receiver(&self) -> FourTuple {
        FourTuple { local: self.dst, remote: self.src }
    }

    /// The 4-tuple of this segment from the sender's point of view.
    pub fn tuple_at_sender(&self) -> FourTuple {
        FourTuple { local: self.src, remote: self.dst }
    }

    /// Sequence space the segment occupies (payload + SYN + FIN).
    pub fn seq_len(&self) -> u32 {
        self.len as u32 + self.flags.syn as u32 + self.flags.fin as u32
    }

    /// A segment with no payload, no SYN/FIN/RST: a pure ACK.
    pub fn is_pure_ack(&self) -> bool {
        self.flags.ack && !self.flags.syn && !self.flags.fin && !self.flags.rst && self.len == 0
    }
}

/// Why a packet could not be read as a TCP segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    Empty,
    UnknownVersion(u8),
    Truncated,
    NotTcp(u8),
    Fragment,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            ParseError::Empty => write!(f, "empty packet"),
            ParseError::UnknownVersion(v) => write!(f, "unknown IP version {v}"),
            ParseError::Truncated => write!(f, "truncated or malformed header"),
            ParseError::NotTcp(p) => write!(f, "not TCP (protocol {p})"),
            ParseError::Fragment => write!(f, "IP fragment"),
        }
    }
}

/// Parses an IP packet (no link header) into a [`Segment`].
pub fn parse(packet: &[u8]) -> Result<Segment, ParseError> {
    let first = *packet.first().ok_or(ParseError::Empty)?;
    let (src_ip, dst_ip, tcp): (IpAddr, IpAddr, &[u8]) = match first >> 4 {
        4 => {
            let ip = Ipv4Packet::new_checked(packet).map_err(|_| ParseError::Truncated)?;
            if ip.more_frags() || ip.frag_offset() != 0 {
                return Err(ParseError::Fragment);
            }
            if ip.next_header() != IpProtocol::Tcp {
                return Err(ParseError::NotTcp(ip.next_header().into()));
            }
            let payload = &packet[usize::from(ip.header_len())..usize::from(ip.total_len())];
            (IpAddr::V4(ip.src_addr()), IpAddr::V4(ip.dst_addr()), payload)
        }
        6 => {
            let ip = Ipv6Packet::new_checked(packet).map_err(|_| ParseError::Truncated)?;
            if ip.next_header() != IpProtocol::Tcp {
                return Err(ParseError::NotTcp(ip.next_header().into()));
            }
            let len = usize::from(ip.payload_len());
            let payload = &packet[40..40 + len];
            (IpAddr::V6(ip.src_addr()), IpAddr::V6(ip.dst_addr()), payload)
        }
        v => return Err(ParseError::UnknownVersion(v)),
    };
    let tcp = TcpPacket::new_checked(tcp).map_err(|_| ParseError::Truncated)?;
    Ok(Segment {
        src: SocketAddr::new(src_ip, tcp.src_port()),
        dst: SocketAddr::new(dst_ip, tcp.dst_port()),
        flags: Flags { syn: tcp.syn(), fin: tcp.fin(), rst: tcp.rst(), psh: tcp.psh(), ack: tcp.ack() },
        seq: tcp.seq_number().0 as u32,
        ack: tcp.ack_number().0 as u32,
        win: tcp.window_len(),
        len: tcp.payload().len(),
    })
}

/// An RFC 7323 timestamp option's two values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timestamp {
    pub tsval: u32,
    pub tsecr: u32,
}

/// A bare TCP segment (no options, no payload) from `src` to `dst` as an
/// IP packet with valid checksums: the answers of closelab's TIME-WAIT
/// table, which has no smoltcp socket to make them. `src` and `dst` must be
/// of one family (else the packet is empty).
pub fn tcp_packet(src: SocketAddr, dst: SocketAddr, flags: Flags, seq: u32, ack: u32, win: u16) -> Vec<u8> {
    tcp_packet_ts(src, dst, flags, seq, ack, win, None)
}

/// [`tcp_packet`], with a timestamp option when `ts` is given, laid out as
/// Linux's `tcp_v4_timewait_ack` / `tcp_v6_timewait_ack` do: NOP, NOP,
/// TS (kind 8, length 10), a 32-byte TCP header.
pub fn tcp_packet_ts(
    src: SocketAddr,
    dst: SocketAddr,
    flags: Flags,
    seq: u32,
    ack: u32,
    win: u16,
    ts: Option<Timestamp>,
) -> Vec<u8> {
    use smoltcp::wire::{TcpControl, TcpRepr, TcpSeqNumber};
    let control = match (flags.syn, flags.fin, flags.rst, flags.psh) {
        (true, _, _, _) => TcpControl::Syn,
        (_, true, _, _) => TcpControl::Fin,
        (_, _, true, _) => TcpControl::Rst,
        (_, _, _, true) => TcpControl::Psh,
        _ => TcpControl::None,
    };
    let tcp = TcpRepr {
        src_port: src.port(),
        dst_port: dst.port(),
        control,
        seq_number: TcpSeqNumber(seq as i32),
        ack_number: flags.ack.then_some(TcpSeqNumber(ack as i32)),
        window_len: win,
        window_scale: None,
        max_seg_size: None,
        sack_permitted: false,
        sack_ranges: [None; 3],
        timestamp: None,
        payload: &[],
    };
    let mut opts = [0u8; 12];
    let opts: &[u8] = match ts {
        Some(t) => {
            opts[..4].copy_from_slice(&[TCPOPT_NOP, TCPOPT_NOP, TCPOPT_TIMESTAMP, TCPOLEN_TIMESTAMP]);
            opts[4..8].copy_from_slice(&t.tsval.to_be_bytes());
            opts[8..].copy_from_slice(&t.tsecr.to_be_bytes());
            &opts
        }
        None => &[],
    };
    ip_packet(src.ip(), dst.ip(), &tcp, opts)
}

const TCPOPT_EOL: u8 = 0;
const TCPOPT_NOP: u8 = 1;
const TCPOPT_TIMESTAMP: u8 = 8;
const TCPOLEN_TIMESTAMP: u8 = 10;

/// The timestamp option of a TCP segment in an IP packet (as [`parse`]
/// reads it: IPv4 with any header length, IPv6 with TCP as the first next
/// header), if it has one. A light walk over the options, for the callers
/// that need the peer's TSval (only with `--timestamps`); never panics,
/// a malformed option list counts as none.
pub fn tcp_timestamp(packet: &[u8]) -> Option<Timestamp> {
    let ip_len = match packet.first()? >> 4 {
        4 => (usize::from(packet[0] & 0x0f) * 4).max(20),
        6 => 40,
        _ => return None,
    };
    let tcp = packet.get(ip_len..)?;
    let doff = usize::from(tcp.get(12)? >> 4) * 4;
    let mut opts = tcp.get(20..doff)?;
    while let [kind, rest @ ..] = opts {
        match *kind {
            TCPOPT_EOL => return None,
            TCPOPT_NOP => opts = rest,
            _ => {
                let len = usize::from(*rest.first()?);
                if len < 2 || len > opts.len() {
                    return None;
                }
                if *kind == TCPOPT_TIMESTAMP && len == usize::from(TCPOLEN_TIMESTAMP) {
                    let be = |b: &[u8]| u32::from_be_bytes(b.try_into().expect("4 bytes"));
                    return Some(Timestamp { tsval: be(&opts[2..6]), tsecr: be(&opts[6..10]) });
                }
                opts = &opts[len..];
            }
        }
    }
    None
}

/// A TCP segment in an IP packet with valid checksums. `opts` (a multiple
/// of 4 bytes, already padded) are TCP options in place of the repr's own,
/// only for segments without payload; usually empty.
fn ip_packet(src: IpAddr, dst: IpAddr, tcp: &smoltcp::wire::TcpRepr, opts: &[u8]) -> Vec<u8> {
    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{IpAddress, Ipv4Repr, Ipv6Repr};
    debug_assert!(opts.len().is_multiple_of(4) && opts.len() <= 40, "TCP options padded to 32-bit words");
    debug_assert!(opts.is_empty() || (tcp.payload.is_empty() && tcp.header_len() == 20), "options replace none");
    let caps = ChecksumCapabilities::default();
    let (ip_len, src_ip, dst_ip) = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => (20, IpAddress::Ipv4(s), IpAddress::Ipv4(d)),
        (IpAddr::V6(s), IpAddr::V6(d)) => (40, IpAddress::Ipv6(s), IpAddress::Ipv6(d)),
        _ => return Vec::new(),
    };
    let tcp_len = tcp.buffer_len() + opts.len();
    let mut buf = vec![0; ip_len + tcp_len];
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let ip = Ipv4Repr {
                src_addr: s,
                dst_addr: d,
                next_header: IpProtocol::Tcp,
                payload_len: tcp_len,
                hop_limit: 64,
            };
            ip.emit(&mut Ipv4Packet::new_unchecked(&mut buf[..]), &caps);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let ip = Ipv6Repr {
                src_addr: s,
                dst_addr: d,
                next_header: IpProtocol::Tcp,
                payload_len: tcp_len,
                hop_limit: 64,
            };
            ip.emit(&mut Ipv6Packet::new_unchecked(&mut buf[..]));
        }
        _ => unreachable!("families checked above"),
    }
    let mut packet = TcpPacket::new_unchecked(&mut buf[ip_len..]);
    tcp.emit(&mut packet, &src_ip, &dst_ip, &caps);
    if !opts.is_empty() {
        // The header grows over the (empty) payload; the checksum covers it.
        packet.set_header_len((20 + opts.len()) as u8);
        packet.options_mut().copy_from_slice(opts);
        packet.fill_checksum(&src_ip, &dst_ip);
    }
    buf
}

/// A TCP segment from 10.0.0.1 to 10.0.0.2 as a real IPv4 packet with
/// valid checksums, for tests.
#[cfg(test)]
pub(crate) fn ipv4_packet(tcp: &smoltcp::wire::TcpRepr) -> Vec<u8> {
    ip_packet([10, 0, 0, 1].into(), [10, 0, 0, 2].into(), tcp, &[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_tcp_packet_parses_back_v4_and_v6() {
        let ack = Flags::parse(".").unwrap();
        for (src, dst) in [("10.0.0.2:80", "10.0.0.1:4000"), ("[fd00::2]:80", "[fd00::1]:4000")] {
            let (src, dst): (SocketAddr, SocketAddr) = (src.parse().unwrap(), dst.parse().unwrap());
            let p = tcp_packet(src, dst, ack, 1001, 5001, 502);
            let seg = parse(&p).unwrap();
            assert_eq!(seg, Segment { src, dst, flags: ack, seq: 1001, ack: 5001, win: 502, len: 0 });
        }
        let v4: SocketAddr = "10.0.0.2:80".parse().unwrap();
        let v6: SocketAddr = "[fd00::1]:4000".parse().unwrap();
        assert!(tcp_packet(v4, v6, ack, 1, 1, 1).is_empty());
    }

    /// The timestamp option as Linux's TIME-WAIT ACK lays it out (NOP,
    /// NOP, TS: a 32-byte header), lengths and checksums right for v4 and
    /// v6: smoltcp parses it back (checking the checksum) and so does
    /// [`tcp_timestamp`].
    #[test]
    fn test_tcp_packet_ts_bytes_v4_and_v6() {
        use smoltcp::phy::ChecksumCapabilities;
        use smoltcp::wire::{IpAddress, TcpRepr};
        let ack = Flags::parse(".").unwrap();
        let ts = Timestamp { tsval: 0x0102_0304, tsecr: 0xfffe_fdfc };
        let caps = ChecksumCapabilities::default();
        for (src, dst) in [("10.0.0.2:80", "10.0.0.1:4000"), ("[fd00::2]:80", "[fd00::1]:4000")] {
            let (src, dst): (SocketAddr, SocketAddr) = (src.parse().unwrap(), dst.parse().unwrap());
            let p = tcp_packet_ts(src, dst, ack, 1001, 5001, 502, Some(ts));
            let ip_len = if src.is_ipv4() { 20 } else { 40 };
            assert_eq!(p.len(), ip_len + 32);
            let tcp = &p[ip_len..];
            assert_eq!(tcp[12] >> 4, 8, "data offset: 8 words");
            assert_eq!(&tcp[20..], &[1, 1, 8, 10, 1, 2, 3, 4, 0xff, 0xfe, 0xfd, 0xfc]);
            let (s, d, payload) = match (src.ip(), dst.ip()) {
                (IpAddr::V4(s), IpAddr::V4(d)) => {
                    let ip = Ipv4Packet::new_checked(&p[..]).unwrap();
                    assert!(ip.verify_checksum());
                    assert_eq!(usize::from(ip.total_len()), p.len());
                    (IpAddress::Ipv4(s), IpAddress::Ipv4(d), ip.payload())
                }
                (IpAddr::V6(s), IpAddr::V6(d)) => {
                    let ip = Ipv6Packet::new_checked(&p[..]).unwrap();
                    assert_eq!(usize::from(ip.payload_len()), 32);
                    (IpAddress::Ipv6(s), IpAddress::Ipv6(d), ip.payload())
                }
                _ => unreachable!(),
            };
            let tcp = TcpPacket::new_checked(payload).unwrap();
            assert!(tcp.verify_checksum(&s, &d), "checksum covers the options");
            let repr = TcpRepr::parse(&tcp, &s, &d, &caps).unwrap();
            assert_eq!(repr.timestamp.map(|t| (t.tsval, t.tsecr)), Some((ts.tsval, ts.tsecr)));
            assert_eq!((repr.seq_number.0 as u32, repr.ack_number.map(|a| a.0 as u32)), (1001, Some(5001)));
            assert!(repr.payload.is_empty());
            assert_eq!(tcp_timestamp(&p), Some(ts));
            let seg = parse(&p).unwrap();
            assert_eq!(seg, Segment { src, dst, flags: ack, seq: 1001, ack: 5001, win: 502, len: 0 });
            // Without a timestamp: no options at all.
            let bare = tcp_packet_ts(src, dst, ack, 1001, 5001, 502, None);
            assert_eq!(bare, tcp_packet(src, dst, ack, 1001, 5001, 502));
            assert_eq!((bare.len(), bare[ip_len + 12] >> 4), (ip_len + 20, 5));
            assert_eq!(tcp_timestamp(&bare), None);
        }
    }

    /// smoltcp's layout (MSS, window scale, TS, EOL padding) is found too;
    /// malformed option lists and every truncation are no timestamp, never
    /// a panic.
    #[test]
    fn test_tcp_timestamp_parser() {
        use smoltcp::wire::{TcpControl, TcpRepr, TcpSeqNumber, TcpTimestampRepr};
        let repr = TcpRepr {
            src_port: 1,
            dst_port: 2,
            control: TcpControl::Syn,
            seq_number: TcpSeqNumber(7),
            ack_number: None,
            window_len: 100,
            window_scale: Some(7),
            max_seg_size: Some(1460),
            sack_permitted: true,
            sack_ranges: [None; 3],
            timestamp: Some(TcpTimestampRepr { tsval: 42, tsecr: 0 }),
            payload: &[],
        };
        let p = ipv4_packet(&repr);
        assert_eq!(tcp_timestamp(&p), Some(Timestamp { tsval: 42, tsecr: 0 }));
        for n in 0..p.len() {
            assert_eq!(tcp_timestamp(&p[..n]), None, "prefix {n}");
        }
        // An option whose length runs past the header, or is 0/1.
        for bad_len in [0u8, 1, 40] {
            let mut q = p.clone();
            q[20 + 20 + 1] = bad_len;
            assert_eq!(tcp_timestamp(&q), None, "length {bad_len}");
        }
        // No options.
        let plain = tcp_packet("10.0.0.1:1".parse().unwrap(), "10.0.0.2:2".parse().unwrap(), Flags::default(), 1, 0, 0);
        assert_eq!(tcp_timestamp(&plain), None);
        assert_eq!(tcp_timestamp(&[]), None);
    }

    #[test]
    fn test_flags_display_like_tcpdump() {
        let f = Flags { fin: true, ack: true, ..Flags::default() };
        assert_eq!(f.to_string(), "F.");
        let f = Flags { syn: true, ..Flags::default() };
        assert_eq!(f.to_string(), "S");
        let f = Flags { ack: true, ..Flags::default() };
        assert_eq!(f.to_string(), ".");
        assert_eq!(Flags::parse("R.").unwrap().to_string(), "R.");
        assert_eq!(Flags::parse("X"), None);
    }

    #[test]
    fn test_parse_malformed_never_panics() {
        assert_eq!(parse(&[]), Err(ParseError::Empty));
        assert_eq!(parse(&[0x45]), Err(ParseError::Truncated));
        assert_eq!(parse(&[0x75, 0, 0]), Err(ParseError::UnknownVersion(7)));
        // Every prefix of a valid-looking header must be handled.
        let mut pkt = vec![0x45u8, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2];
        pkt.extend_from_slice(&[0x1f, 0x40, 0x1b, 0x58, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
        for n in 0..pkt.len() {
            assert!(parse(&pkt[..n]).is_err(), "prefix {n}");
        }
        let seg = parse(&pkt).unwrap();
        assert_eq!(seg.src.to_string(), "10.0.0.1:8000");
        assert_eq!(seg.dst.to_string(), "10.0.0.2:7000");
        assert_eq!(seg.flags.to_string(), "S");
        assert_eq!(seg.seq, 1);
        assert_eq!(seg.win, 0xffff);
        // A lying total_len larger than the buffer is rejected, not sliced.
        let mut bad = pkt.clone();
        bad[3] = 200;
        assert_eq!(parse(&bad), Err(ParseError::Truncated));
    }
}
