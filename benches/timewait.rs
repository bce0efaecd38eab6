//! Memory and lookup cost of closelab's TIME-WAIT table
//! (`endpoint::timewait`): fills 1,000,000 IPv4 entries in memory, reads
//! RSS from /proc/self/statm before and after, and times a retransmitted
//! FIN hitting an entry (median of 5 rounds). The Linux baseline is read
//! in the same run: the object size of the kernel's `tw_sock_TCP` slab
//! (its TIME-WAIT mini-socket) from /proc/slabinfo.

use std::hash::RandomState;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Instant;

use closelab::endpoint::timewait::{TimeWaitTable, TwConfig, TwSeq};
use closelab::wire::{Flags, FourTuple, Segment};

const N: u32 = 1_000_000;

fn rss_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/statm").expect("read /proc/self/statm");
    let pages: u64 = s.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("statm resident field");
    pages * 4096
}

/// The size of one Linux TIME-WAIT mini-socket: `tw_sock_TCP`'s objsize in
/// /proc/slabinfo (root only; `None` without it).
fn linux_tw_objsize() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/slabinfo").ok()?;
    let line = text.lines().find(|l| l.split_whitespace().next() == Some("tw_sock_TCP"))?;
    // name active_objs num_objs objsize ...
    line.split_whitespace().nth(3)?.parse().ok()
}

fn tuple(i: u32) -> FourTuple {
    let remote = Ipv4Addr::from(0x0a00_0000 | (i >> 14));
    FourTuple {
        local: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 200, 0, 2), 80)),
        remote: SocketAddr::V4(SocketAddrV4::new(remote, 1024 + (i & 0x3fff) as u16)),
    }
}

fn main() {
    let before = rss_bytes();
    let mut t = TimeWaitTable::new(TwConfig { max: N as usize, ..TwConfig::default() }, RandomState::new());
    for i in 0..N {
        let seq = TwSeq { snd_nxt: i, rcv_nxt: i.wrapping_add(1), win: 0, ts_recent: None };
        assert!(t.insert(0, &tuple(i), u64::from(i), seq));
    }
    let after = rss_bytes();
    let per = (after - before) as f64 / f64::from(N);
    let linux = match linux_tw_objsize() {
        Some(l) => format!("Linux tw_sock_TCP {l} bytes, ratio {:.2}", per / l as f64),
        None => "Linux tw_sock_TCP size unreadable (/proc/slabinfo needs root)".to_string(),
    };
    println!(
        "timewait: {N} entries, RSS +{:.1} MiB, {per:.0} bytes per entry; {linux}",
        (after - before) as f64 / (1024.0 * 1024.0)
    );
    let segs: Vec<Segment> = (0..100_000u32)
        .map(|k| {
            let i = k.wrapping_mul(7919) % N;
            let tu = tuple(i);
            Segment {
                src: tu.remote,
                dst: tu.local,
                flags: Flags { fin: true, ack: true, ..Flags::default() },
                seq: i,
                ack: i,
                win: 502,
                len: 0,
            }
        })
        .collect();
    let mut rounds = Vec::new();
    for r in 0..5u32 {
        let start = Instant::now();
        for s in &segs {
            std::hint::black_box(t.process(1000 + r, s, None, true));
        }
        rounds.push(start.elapsed().as_nanos() as f64 / segs.len() as f64);
    }
    rounds.sort_by(f64::total_cmp);
    println!("timewait: retransmitted FIN on a TIME-WAIT entry: {:.0} ns per segment (median of 5)", rounds[2]);
}
