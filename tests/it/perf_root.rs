//! Root tests for bulk work: `--trace` levels on a real TUN (what is printed,
//! what the pcap still gets) and `closelab bench` (its JSON, its lab gone
//! afterwards, Ctrl-C). Behaviour only: no figure is asserted.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use closelab::endpoint::app::pattern_byte;
use nix::sys::signal::Signal;
use serde_json::Value as Json;

use crate::util;
use crate::util::{BIN, Closelab, LabGuard, Netns, WAIT, str_of, unique_lab_name};

const BULK: usize = 4 << 20;

/// A kernel client sends `BULK` pattern bytes to 10.201.0.2:7000, half-closes
/// and waits for closelab's FIN.
fn send_bulk(ns: &Netns) {
    let addr: SocketAddr = "10.201.0.2:7000".parse().unwrap();
    let mut s = ns.run(move || TcpStream::connect_timeout(&addr, WAIT)).expect("connect to closelab");
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.set_write_timeout(Some(WAIT)).unwrap();
    let data: Vec<u8> = (0..BULK).map(pattern_byte).collect();
    s.write_all(&data).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut b = [0u8; 16];
    assert_eq!(s.read(&mut b).expect("EOF from closelab"), 0, "closelab's sink sends nothing");
}

fn listen_sink(ns: &Netns, extra: &str) -> Closelab {
    Closelab::start(
        ns,
        &format!(
            "listen --tun cl0 --addr 10.201.0.2/24 --port 7000 --app sink --close passive --exit-after 1 --seed 3 --json {extra}"
        ),
    )
}

fn types(events: &[Json]) -> Vec<String> {
    events.iter().map(|v| str_of(v, "type").to_string()).collect()
}

/// `--trace none`: the start note and the summary, nothing per segment or
/// per state; the summary still counts every state the connection reached.
#[test]
fn test_trace_none_prints_only_summary() {
    if !util::require_root("test_trace_none_prints_only_summary") {
        return;
    }
    let ns = Netns::new();
    let cl = listen_sink(&ns, "--trace none");
    send_bulk(&ns);
    let done = cl.finish(WAIT);
    done.assert_code(0);
    let events = done.events();
    let t = types(&events);
    assert_eq!(t.last().map(String::as_str), Some("summary"), "{done}");
    assert!(t[..t.len() - 1].iter().all(|x| x == "note"), "only notes before the summary: {t:?}{done}");
    assert!(str_of(&events[0], "text").starts_with("closelab on cl0"), "{done}");
    util::assert_reached(
        &done.summary(),
        1,
        &[("SYN-RECEIVED", 1), ("ESTABLISHED", 1), ("CLOSE-WAIT", 1), ("LAST-ACK", 1), ("CLOSED", 1)],
    );
}

/// `--trace states`: the exact state path with causes, no segment and no
/// `app recv` lines (the close call is still shown).
#[test]
fn test_trace_states_prints_states_not_segments() {
    if !util::require_root("test_trace_states_prints_states_not_segments") {
        return;
    }
    let ns = Netns::new();
    let cl = listen_sink(&ns, "--trace states");
    send_bulk(&ns);
    let done = cl.finish(WAIT);
    done.assert_code(0);
    let events = done.events();
    let t = types(&events);
    assert!(!t.iter().any(|x| x == "segment"), "no segment lines: {t:?}{done}");
    let apps: Vec<String> =
        events.iter().filter(|v| str_of(v, "type") == "app").map(|v| str_of(v, "action").into()).collect();
    assert_eq!(apps, ["close"], "only the close call among app lines{done}");
    assert_eq!(done.states(1), ["LISTEN", "SYN-RECEIVED", "ESTABLISHED", "CLOSE-WAIT", "LAST-ACK", "CLOSED"], "{done}");
    assert_eq!(str_of(&done.entered(1, "CLOSE-WAIT"), "cause"), "segment", "{done}");
}

/// `--trace none --pcap`: the timeline is silent but the capture still has
/// every segment: the handshake, all `BULK` payload bytes, both FINs.
#[test]
fn test_trace_none_pcap_keeps_every_segment() {
    if !util::require_root("test_trace_none_pcap_keeps_every_segment") {
        return;
    }
    let ns = Netns::new();
    let dir = std::env::temp_dir().join(format!("closelab-perf-{}-{}", std::process::id(), ns.name()));
    std::fs::create_dir_all(&dir).unwrap();
    let pcap = dir.join("bulk.pcap");
    let cl = listen_sink(&ns, &format!("--trace none --pcap {}", pcap.display()));
    send_bulk(&ns);
    let done = cl.finish(WAIT);
    done.assert_code(0);
    assert!(done.events().iter().all(|v| str_of(v, "type") != "segment"), "{done}");
    let bytes = std::fs::read(&pcap).unwrap();
    let records = pcap_records(&bytes);
    let _ = std::fs::remove_dir_all(&dir);
    // IPv4 + TCP: payload = total length - IHL*4 - data offset*4; flags byte
    // 13 of TCP. Retransmitted segments count once: what matters is the
    // highest sequence number the client's data reached.
    let (mut isn, mut end) = (None, 0u32);
    let (mut syns, mut fins) = (0, 0);
    for r in &records {
        let ihl = usize::from(r[0] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([r[2], r[3]]));
        let tcp = &r[ihl..];
        let off = usize::from(tcp[12] >> 4) * 4;
        let flags = tcp[13];
        syns += usize::from(flags & 0x02 != 0);
        fins += usize::from(flags & 0x01 != 0);
        if r[16..20] == [10, 201, 0, 2] {
            let seq = u32::from_be_bytes(tcp[4..8].try_into().unwrap());
            if flags & 0x02 != 0 {
                isn = Some(seq);
                continue;
            }
            let len = total - ihl - off;
            if len == 0 {
                continue;
            }
            let reach = seq.wrapping_add(len as u32).wrapping_sub(isn.expect("SYN first") + 1);
            end = end.max(reach);
        }
    }
    let payload_in = end as usize;
    assert_eq!(syns, 2, "SYN and SYN-ACK in the pcap");
    assert_eq!(fins, 2, "both FINs in the pcap");
    assert_eq!(payload_in, BULK, "every payload byte the client sent is in the pcap");
}

/// The records of a little-endian microsecond pcap file.
fn pcap_records(b: &[u8]) -> Vec<&[u8]> {
    assert_eq!(&b[..4], &0xa1b2_c3d4u32.to_le_bytes(), "pcap magic");
    let mut out = Vec::new();
    let mut i = 24;
    while i + 16 <= b.len() {
        let len = u32::from_le_bytes(b[i + 8..i + 12].try_into().unwrap()) as usize;
        out.push(&b[i + 16..i + 16 + len]);
        i += 16 + len;
    }
    assert_eq!(i, b.len(), "pcap ends on a record boundary");
    out
}

/// `closelab bench` with a tiny size: one bench-start line, one result per
/// path and connection count with one round each (the transfer split over
/// 1 and over 3 connections: 3 x 87381 bytes moved), ratios against the
/// kernel baseline, and its lab removed afterwards.
#[test]
fn test_bench_tiny_json() {
    if !util::require_root("test_bench_tiny_json") {
        return;
    }
    let lab = LabGuard::new(&unique_lab_name());
    let mut cmd = Command::new(BIN);
    cmd.args(["bench", "--size", "256k", "--rounds", "1", "--mtu", "1500", "--parallel", "1", "--parallel", "3"]);
    cmd.args(["--load", "1s", "--json", "--name", lab.name()]);
    let out = util::run_within(&mut cmd, Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let shown = util::describe(&util::cmdline(&cmd), &out.status, &stdout, &String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{shown}");
    util::assert_lab_gone(lab.name());
    let lines: Vec<Json> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}{shown}")))
        .collect();
    assert_eq!(str_of(&lines[0], "type"), "bench-start", "{shown}");
    assert_eq!(str_of(&lines[0], "lab"), lab.name(), "{shown}");
    assert!(lines[0]["machine"]["cpus"].as_u64().unwrap() >= 1, "{shown}");
    let results: Vec<&Json> = lines[1..].iter().filter(|v| str_of(v, "type") == "bench-result").collect();
    // Then connections/s: the kernel server, then closelab with its ratio.
    let rates: Vec<&Json> = lines[1..].iter().filter(|v| str_of(v, "type") == "bench-conn-rate").collect();
    assert_eq!(lines.len(), 1 + results.len() + rates.len(), "{shown}");
    assert_eq!(rates.iter().map(|v| str_of(v, "server")).collect::<Vec<_>>(), ["kernel", "closelab"], "{shown}");
    for r in &rates {
        assert!(r["median_conn_per_s"].as_f64().unwrap() > 0.0, "{shown}");
        assert_eq!(r["ratio"].is_null(), str_of(r, "server") == "kernel", "{shown}");
    }
    assert!(rates[1]["peak_rss"][0].as_u64().unwrap() > 0, "{shown}");
    assert!(rates[0]["peak_time_wait"][0].as_u64().unwrap() > 0, "the kernel server closes first{shown}");
    let paths: Vec<(&str, u64)> =
        results.iter().map(|v| (str_of(v, "path"), v["parallel"].as_u64().unwrap())).collect();
    let each = ["kernel-to-kernel", "kernel-to-closelab", "closelab-to-kernel", "kernel-to-closelab-traced"];
    let want: Vec<(&str, u64)> = [1, 3].iter().flat_map(|&p| each.iter().map(move |&e| (e, p))).collect();
    assert_eq!(paths, want, "{shown}");
    for r in results {
        assert_eq!(r["mtu"], 1500, "{shown}");
        let bytes = if r["parallel"] == 1 { 256 * 1024 } else { 3 * 87381 };
        assert_eq!(r["bytes"], bytes, "{shown}");
        let rounds = r["gbps"].as_array().unwrap();
        assert_eq!(rounds.len(), 1, "{shown}");
        assert!(rounds[0].as_f64().unwrap() > 0.0, "{shown}");
        assert_eq!(r["median_gbps"], rounds[0], "{shown}");
        assert_eq!(r["ratio"].is_null(), str_of(r, "path") == "kernel-to-kernel", "{shown}");
    }
}

/// Ctrl-C during a bench ends it with 130 and removes its lab.
#[test]
fn test_bench_interrupted_removes_lab() {
    if !util::require_root("test_bench_interrupted_removes_lab") {
        return;
    }
    let lab = LabGuard::new(&unique_lab_name());
    let mut cl = Closelab::spawn(Command::new(BIN).args([
        "bench",
        "--size",
        "16G",
        "--rounds",
        "1",
        "--mtu",
        "1500",
        "--json",
        "--name",
        lab.name(),
    ]));
    let start = cl.next_line("bench-start");
    assert!(start.contains("\"bench-start\""), "{start}");
    std::thread::sleep(Duration::from_millis(300));
    cl.signal(Signal::SIGINT);
    let done = cl.finish(Duration::from_secs(20));
    done.assert_code(130);
    util::assert_lab_gone(lab.name());
}

/// Bad options: one line, exit 2, before any lab is built.
#[test]
fn test_bench_bad_options() {
    for (args, needle) in [
        (&["bench", "--size", "10"][..], "closelab: --size must be 1k to 16G (got 10 bytes)"),
        (&["bench", "--rounds", "0"][..], "closelab: --rounds must be 1 to 15 (got 0)"),
        (&["bench", "--mtu", "100"][..], "closelab: --mtu must be 1280 to 9000 (got 100)"),
    ] {
        util::expect_error(&mut util::closelab(args), needle);
    }
}
