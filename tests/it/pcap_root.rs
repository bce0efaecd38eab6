//! Root test: the pcap of a real run opens in tcpdump and tshark and holds
//! exactly the segments of the timeline, in the same order and time.

use std::process::Command;
use std::time::Duration;

use crate::util;
use crate::util::{BIN, LabGuard, require_root, unique_lab_name};

/// `demo --only 2` takes ~1-2 s here; killed (and reported) after 60 s.
const DEMO_TIMEOUT: Duration = Duration::from_secs(60);

/// One segment: (seconds since the first segment, src, dst, flags, seq).
type Seg = (f64, String, String, String, u64);

#[test]
fn test_pcap_matches_timeline() {
    if !require_root("test_pcap_matches_timeline") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("closelab-pcap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pcap = dir.join("demo.pcap");
    let lab = LabGuard::new(&unique_lab_name());
    let mut cmd = Command::new(BIN);
    cmd.args(["demo", "--only", "2", "--json", "--name", lab.name(), "--pcap", pcap.to_str().unwrap()]);
    let out = util::run_within(&mut cmd, DEMO_TIMEOUT);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{}",
        util::describe(&util::cmdline(&cmd), &out.status, &stdout, &String::from_utf8_lossy(&out.stderr))
    );
    util::assert_lab_gone(lab.name());
    // The timeline's segments, in order.
    let mut timeline: Vec<Seg> = Vec::new();
    for line in stdout.lines() {
        let v = closelab::view::json::parse(line).expect("JSON line");
        if v.get("type").and_then(|t| t.as_str()) == Some("segment") {
            let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap().to_string();
            let t = v.get("t").and_then(|x| x.as_f64()).unwrap();
            timeline.push((t, s("src"), s("dst"), s("flags"), v.get("seq").and_then(|x| x.as_u64()).unwrap()));
        }
    }
    assert!(timeline.len() >= 8, "a whole close has at least 8 segments, got {}", timeline.len());
    let t0 = timeline[0].0;

    if util::require_tool("pcap_root::test_pcap_matches_timeline (tcpdump part)", "tcpdump") {
        // -tt: seconds since the epoch; -S: absolute sequence numbers.
        let td = util::run_ok(Command::new("tcpdump").args(["-tt", "-nn", "-S", "-r", pcap.to_str().unwrap()]));
        let lines: Vec<String> = String::from_utf8_lossy(&td.stdout).lines().map(str::to_string).collect();
        assert_eq!(lines.len(), timeline.len(), "tcpdump packets vs timeline segments:\n{}", lines.join("\n"));
        let p0: f64 = lines[0].split(' ').next().unwrap().parse().unwrap();
        for (line, (t, src, dst, flags, seq)) in lines.iter().zip(&timeline) {
            // 1733333333.123456 IP 10.201.0.1.41234 > 10.201.0.2.7002: Flags [S], seq 1, …
            let at: f64 = line.split(' ').next().unwrap().parse().unwrap();
            // Both clocks have microsecond resolution.
            assert!(((at - p0) - (t - t0)).abs() < 3e-6, "{line}: at {:.6}s, timeline {:.6}s", at - p0, t - t0);
            let dotted = |a: &str| a.replacen(':', ".", 1);
            assert!(line.contains(&format!(" IP {} > {}: ", dotted(src), dotted(dst))), "{line} vs {src} > {dst}");
            assert!(line.contains(&format!("Flags [{flags}]")), "{line} vs flags [{flags}]");
            // tcpdump prints seq only for segments that occupy sequence space.
            if line.contains(" seq ") {
                assert!(
                    line.contains(&format!("seq {seq},")) || line.contains(&format!("seq {seq}:")),
                    "{line} vs seq {seq}"
                );
            }
        }
    }
    if util::require_tool("pcap_root::test_pcap_matches_timeline (tshark part)", "tshark") {
        let ts = util::run_ok(Command::new("tshark").args([
            "-n",
            "-r",
            pcap.to_str().unwrap(),
            "-T",
            "fields",
            "-e",
            "frame.time_relative",
            "-e",
            "tcp.flags.str",
        ]));
        let rows: Vec<String> = String::from_utf8_lossy(&ts.stdout).lines().map(str::to_string).collect();
        assert_eq!(rows.len(), timeline.len(), "tshark packets vs timeline segments:\n{}", rows.join("\n"));
        for (row, (t, ..)) in rows.iter().zip(&timeline) {
            let rel: f64 = row.split('\t').next().unwrap().parse().unwrap();
            assert!((rel - (t - t0)).abs() < 3e-6, "tshark {row} vs timeline {:.6}s", t - t0);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
