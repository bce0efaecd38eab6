//! Classic pcap output (the format tcpdump and Wireshark read), for the
//! packets that crossed closelab's link.
//!
//! Records use LINKTYPE_RAW (101): each record is a bare IP packet, IPv4 or
//! IPv6, exactly as it crossed the TUN device. The file is written
//! little-endian with microsecond timestamps (magic `0xa1b2c3d4`); readers
//! detect the byte order from the magic. Packets are never truncated.
//!
//! This view only writes to the `Write` it is given; it opens no file and
//! reads no clock: the caller passes each packet's time.

use std::io::{self, Write};
use std::time::Duration;

/// LINKTYPE_RAW: the packet begins with an IPv4 or IPv6 header.
pub const LINKTYPE_RAW: u32 = 101;

/// Snapshot length announced in the header. Well above any IP packet
/// (65,535 bytes without jumbograms); 262,144 is what tcpdump itself uses
/// and the largest readers accept without complaint.
pub const SNAPLEN: u32 = 262_144;

const MAGIC_MICROS: u32 = 0xa1b2_c3d4;

/// Writes a pcap stream: the global header on creation, one record per
/// [`PcapWriter::packet`].
#[derive(Debug)]
pub struct PcapWriter<W: Write> {
    w: W,
}

impl<W: Write> PcapWriter<W> {
    /// Writes the global header.
    pub fn new(mut w: W) -> io::Result<Self> {
        let mut h = [0u8; 24];
        h[0..4].copy_from_slice(&MAGIC_MICROS.to_le_bytes());
        h[4..6].copy_from_slice(&2u16.to_le_bytes()); // version 2.4
        h[6..8].copy_from_slice(&4u16.to_le_bytes());
        // thiszone (GMT offset) and sigfigs stay 0, as every writer does.
        h[16..20].copy_from_slice(&SNAPLEN.to_le_bytes());
        h[20..24].copy_from_slice(&LINKTYPE_RAW.to_le_bytes());
        w.write_all(&h)?;
        Ok(PcapWriter { w })
    }

    /// Writes one packet (a bare IP packet) seen at `t`, counted from the
    /// Unix epoch or from the start of the run. Packets longer than
    /// [`SNAPLEN`] are refused rather than truncated.
    pub fn packet(&mut self, t: Duration, data: &[u8]) -> io::Result<()> {
        let len = u32::try_from(data.len()).ok().filter(|n| *n <= SNAPLEN).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("pcap: packet of {} bytes exceeds snaplen {SNAPLEN}", data.len()),
            )
        })?;
        // The seconds field is 32 bits: enough until 2106.
        let secs = u32::try_from(t.as_secs())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("pcap: timestamp {t:?} out of range")))?;
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&secs.to_le_bytes());
        h[4..8].copy_from_slice(&t.subsec_micros().to_le_bytes());
        h[8..12].copy_from_slice(&len.to_le_bytes()); // incl_len
        h[12..16].copy_from_slice(&len.to_le_bytes()); // orig_len
        self.w.write_all(&h)?;
        self.w.write_all(data)
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }

    pub fn get_ref(&self) -> &W {
        &self.w
    }

    pub fn get_mut(&mut self) -> &mut W {
        &mut self.w
    }

    pub fn into_inner(self) -> W {
        self.w
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{
        IpAddress, IpProtocol, Ipv6Address, Ipv6Packet, Ipv6Repr, TcpControl, TcpPacket, TcpRepr, TcpSeqNumber,
    };

    fn syn() -> TcpRepr<'static> {
        TcpRepr {
            src_port: 40000,
            dst_port: 80,
            control: TcpControl::Syn,
            seq_number: TcpSeqNumber(1000),
            ack_number: None,
            window_len: 64240,
            window_scale: Some(7),
            max_seg_size: Some(1460),
            sack_permitted: true,
            sack_ranges: [None; 3],
            timestamp: None,
            payload: &[],
        }
    }

    /// A real IPv4 SYN 10.0.0.1:40000 > 10.0.0.2:80 with valid checksums.
    fn syn_v4() -> Vec<u8> {
        let tcp = syn();
        crate::wire::ipv4_packet(&tcp)
    }

    /// The same SYN over IPv6, fd00::1 > fd00::2.
    fn syn_v6() -> Vec<u8> {
        let tcp = syn();
        let src = Ipv6Address::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
        let dst = Ipv6Address::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);
        let ip = Ipv6Repr {
            src_addr: src,
            dst_addr: dst,
            next_header: IpProtocol::Tcp,
            payload_len: tcp.buffer_len(),
            hop_limit: 64,
        };
        let caps = ChecksumCapabilities::default();
        let mut buf = vec![0; ip.buffer_len() + tcp.buffer_len()];
        ip.emit(&mut Ipv6Packet::new_unchecked(&mut buf[..]));
        tcp.emit(
            &mut TcpPacket::new_unchecked(&mut buf[ip.buffer_len()..]),
            &IpAddress::Ipv6(src),
            &IpAddress::Ipv6(dst),
            &caps,
        );
        buf
    }

    #[test]
    fn test_header_and_record_bytes() {
        let mut w = PcapWriter::new(Vec::new()).unwrap();
        w.packet(Duration::new(0x0102_0304, 5_006_007), &[0x45, 0xaa, 0xbb]).unwrap();
        w.flush().unwrap();
        #[rustfmt::skip]
        let expected: Vec<u8> = vec![
            0xd4, 0xc3, 0xb2, 0xa1, // magic, microseconds, little-endian
            2, 0, 4, 0,             // version 2.4
            0, 0, 0, 0,             // thiszone
            0, 0, 0, 0,             // sigfigs
            0, 0, 4, 0,             // snaplen 262144
            101, 0, 0, 0,           // LINKTYPE_RAW
            4, 3, 2, 1,             // ts_sec
            0x8e, 0x13, 0, 0,       // ts_usec 5006 (sub-microseconds dropped)
            3, 0, 0, 0,             // incl_len
            3, 0, 0, 0,             // orig_len
            0x45, 0xaa, 0xbb,
        ];
        assert_eq!(w.into_inner(), expected);
    }

    #[test]
    fn test_never_truncates() {
        let mut w = PcapWriter::new(Vec::new()).unwrap();
        let big = vec![0x45; 65_535];
        w.packet(Duration::ZERO, &big).unwrap();
        let out = w.into_inner();
        assert_eq!(out.len(), 24 + 16 + 65_535);
        assert_eq!(&out[32..36], &65_535u32.to_le_bytes());
        assert_eq!(&out[36..40], &65_535u32.to_le_bytes());
        // Beyond snaplen is an error, not a silently cut record.
        let mut w = PcapWriter::new(Vec::new()).unwrap();
        let err = w.packet(Duration::ZERO, &vec![0; SNAPLEN as usize + 1]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(w.into_inner().len(), 24);
    }

    /// Removes the file when the test ends, pass or fail.
    struct TempFile(std::path::PathBuf);

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn test_tcpdump_reads_it() {
        if !crate::testing::require_tool("pcap::test_tcpdump_reads_it", "tcpdump") {
            return;
        }
        let file = TempFile(std::env::temp_dir().join(format!("closelab-pcap-test-{}.pcap", std::process::id())));
        let mut w = PcapWriter::new(std::fs::File::create(&file.0).unwrap()).unwrap();
        w.packet(Duration::new(1, 250_000), &syn_v4()).unwrap();
        w.packet(Duration::new(2, 0), &syn_v6()).unwrap();
        w.flush().unwrap();
        drop(w);
        let out = std::process::Command::new("tcpdump").arg("-nr").arg(&file.0).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let report =
            format!("tcpdump -nr {}\nstatus: {}\nstdout:\n{stdout}\nstderr:\n{stderr}", file.0.display(), out.status);
        assert!(out.status.success(), "{report}");
        assert!(stdout.contains("IP 10.0.0.1.40000 > 10.0.0.2.80: Flags [S], seq 1000"), "{report}");
        assert!(stdout.contains("IP6 fd00::1.40000 > fd00::2.80: Flags [S], seq 1000"), "{report}");
        assert!(!stdout.contains("truncated") && !stderr.contains("truncated"), "{report}");
        assert_eq!(stdout.lines().count(), 2, "{report}");
    }
}
