//! The `cargo fuzz` targets as property tests on the stable toolchain: every
//! file of `fuzz/corpus/TARGET/` (hand-made seeds, the inputs the fuzzer
//! found that reach new code, and every crash it ever found) goes through
//! the same harness the fuzzer runs (`closelab::fuzzing`), which asserts
//! the target's properties. Then a fixed number of seeded mutations of each
//! file (bit flips, byte changes, cuts, splices) go through it too, so the
//! test reaches a little beyond the corpus yet gives the same result on
//! every run.

use std::fs;
use std::panic;
use std::path::{Path, PathBuf};

use closelab::fuzzing::TARGETS;

/// Mutations per corpus file: enough to cross the seeds' branches, few
/// enough that a debug build runs all targets in seconds.
const MUTATIONS: usize = 8;

fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

/// SplitMix64: a fixed sequence for a fixed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// A mutation of `data` in libFuzzer's spirit; `other` is spliced in.
fn mutate(rng: &mut Rng, data: &[u8], other: &[u8]) -> Vec<u8> {
    let mut d = data.to_vec();
    for _ in 0..1 + rng.below(4) {
        match rng.below(6) {
            0 if !d.is_empty() => {
                let i = rng.below(d.len());
                d[i] ^= 1 << rng.below(8);
            }
            1 if !d.is_empty() => {
                let i = rng.below(d.len());
                d[i] = [0, 0xff, 0x7f, 0x80, b'\n', b'"', b'9'][rng.below(7)];
            }
            2 => d.truncate(rng.below(d.len() + 1)),
            3 if !d.is_empty() => {
                let i = rng.below(d.len());
                d.remove(i);
            }
            4 => {
                let i = rng.below(d.len() + 1);
                let j = rng.below(other.len() + 1);
                let k = (j + rng.below(32)).min(other.len());
                d.splice(i..i, other[j..k].iter().copied());
            }
            _ => {
                let i = rng.below(d.len() + 1);
                d.insert(i, rng.next() as u8);
            }
        }
    }
    d
}

/// Runs one input, naming it if a property fails.
fn run(name: &str, harness: fn(&[u8]), input: &[u8]) {
    if panic::catch_unwind(|| harness(input)).is_err() {
        panic!("fuzz harness {name} failed on input {input:?}");
    }
}

#[test]
fn test_fuzz_corpus_every_target() {
    for (target, harness) in TARGETS {
        let files = corpus(target);
        assert!(files.len() >= 10, "corpus of {target}: only {} files", files.len());
        let inputs: Vec<Vec<u8>> = files.iter().map(|f| fs::read(f).unwrap()).collect();
        let mut rng = Rng(0x5eed ^ target.len() as u64);
        for (file, input) in files.iter().zip(&inputs) {
            run(&format!("{target} {}", file.display()), *harness, input);
            for m in 0..MUTATIONS {
                let other = &inputs[rng.below(inputs.len())];
                let mutated = mutate(&mut rng, input, other);
                run(&format!("{target} {} mutation {m}", file.display()), *harness, &mutated);
            }
        }
    }
}

#[test]
fn test_fuzz_targets_match_the_corpus_dirs() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    for (target, _) in TARGETS {
        assert!(dir.join("fuzz_targets").join(format!("{target}.rs")).is_file(), "no fuzz target {target}");
    }
    let mut dirs: Vec<String> =
        fs::read_dir(dir.join("corpus")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    dirs.sort();
    let mut names: Vec<String> = TARGETS.iter().map(|(t, _)| t.to_string()).collect();
    names.sort();
    assert_eq!(dirs, names);
}

// Regression tests for what the fuzzer found (their inputs are in the corpus).

/// An IPv4 or IPv6 SYN from 10.0.0.1 / fd00::1 to `dst` port 7000, with
/// valid checksums.
fn syn_to(dst: std::net::IpAddr) -> Vec<u8> {
    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{IpAddress, IpProtocol, Ipv4Packet, Ipv4Repr, Ipv6Packet, Ipv6Repr, TcpPacket, TcpRepr};
    let src: std::net::IpAddr = if dst.is_ipv4() { "10.0.0.1".parse().unwrap() } else { "fd00::1".parse().unwrap() };
    let tcp = TcpRepr {
        src_port: 40000,
        dst_port: 7000,
        control: smoltcp::wire::TcpControl::Syn,
        seq_number: smoltcp::wire::TcpSeqNumber(1),
        ack_number: None,
        window_len: 65535,
        window_scale: None,
        max_seg_size: None,
        sack_permitted: false,
        sack_ranges: [None; 3],
        timestamp: None,
        payload: &[],
    };
    let caps = ChecksumCapabilities::default();
    let ip_len = if dst.is_ipv4() { 20 } else { 40 };
    let mut buf = vec![0; ip_len + tcp.buffer_len()];
    match (src, dst) {
        (std::net::IpAddr::V4(s), std::net::IpAddr::V4(d)) => Ipv4Repr {
            src_addr: s,
            dst_addr: d,
            next_header: IpProtocol::Tcp,
            payload_len: tcp.buffer_len(),
            hop_limit: 64,
        }
        .emit(&mut Ipv4Packet::new_unchecked(&mut buf[..]), &caps),
        (std::net::IpAddr::V6(s), std::net::IpAddr::V6(d)) => Ipv6Repr {
            src_addr: s,
            dst_addr: d,
            next_header: IpProtocol::Tcp,
            payload_len: tcp.buffer_len(),
            hop_limit: 64,
        }
        .emit(&mut Ipv6Packet::new_unchecked(&mut buf[..])),
        _ => unreachable!(),
    }
    tcp.emit(&mut TcpPacket::new_unchecked(&mut buf[ip_len..]), &IpAddress::from(src), &IpAddress::from(dst), &caps);
    buf
}

#[test]
fn test_fuzz_found_segment_to_broadcast_or_other_prefix_address_is_dropped_and_shown() {
    use closelab::endpoint::{Endpoint, EndpointConfig};
    use closelab::event::EventKind;
    use smoltcp::time::{Duration, Instant};
    let mut cfg = EndpointConfig::new(closelab::config::parse_cidr("10.0.0.2/24").unwrap());
    cfg.addrs.push(closelab::config::parse_cidr("fd00::2/64").unwrap());
    let t0 = Instant::from_secs(1000);
    let mut ep = Endpoint::new(cfg, t0).expect("endpoint config fits smoltcp");
    ep.listen(7000);
    for dst in ["10.0.0.255", "10.0.0.77", "fd00::2:0:0:2"] {
        ep.receive(t0, syn_to(dst.parse().unwrap()));
        ep.poll(t0 + Duration::from_millis(1));
        // smoltcp alone answered with an RST *from* `dst`.
        assert_eq!(ep.transmit(), None, "{dst}: closelab answered");
        let events = ep.take_events();
        let reasons: Vec<&str> = events
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::Malformed { reason, .. } => Some(reason.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(reasons, [format!("addressed to {dst}, not to closelab (dropped, as Linux does)")], "{events:?}");
        assert_eq!(ep.len(), 0, "{dst}: a connection was created");
    }
    // closelab's own addresses still answer.
    for dst in ["10.0.0.2", "fd00::2"] {
        ep.receive(t0, syn_to(dst.parse().unwrap()));
        let p = ep.transmit().expect("SYN-ACK");
        let seg = closelab::wire::parse(&p).unwrap();
        assert_eq!((seg.src.ip().to_string(), seg.flags.to_string()), (dst.to_string(), "S.".to_string()));
    }
}

#[test]
fn test_fuzz_found_json_time_out_of_range_is_an_error() {
    use closelab::view::json;
    let e = json::parse_line(r#"{"t":1e303,"side":"closelab","conn":1,"type":"note","text":"x"}"#).unwrap_err();
    assert_eq!(e.to_string(), "time 1e303 s out of range (at most 1e9 s) (column 10)");
    let e = json::parse_line(
        r#"{"t":-1e308,"side":"linux","conn":1,"type":"timer","name":"on","remaining":0,"retrans":0}"#,
    )
    .unwrap_err();
    assert!(e.to_string().starts_with("time -1e308 s out of range"), "{e}");
    let e =
        json::parse_line(r#"{"t":1,"side":"linux","conn":1,"type":"timer","name":"on","remaining":2e9,"retrans":0}"#)
            .unwrap_err();
    assert!(e.to_string().starts_with("time 2e9 s out of range"), "{e}");
    // The largest time reads back as written.
    let ok = r#"{"t":999999999.999999,"side":"closelab","conn":1,"type":"note","text":"x"}"#;
    assert_eq!(json::line(&json::parse_line(ok).unwrap()), ok);
}
