//! Root test: the pcap of a real run opens in tcpdump and tshark and holds
//! exactly the segments of the timeline, in the same order and time.

use std::process::Command;

use crate::util;
use crate::util::{BIN, describe, require_root, unique_lab_name};

fn tool(name: &str) -> Option<()> {
    match Command::new(name).arg("--version").output() {
        Ok(_) => Some(()),
        Err(_) if std::env::var("CI").as_deref() != Ok("true") => {
            eprintln!("SKIPPED part of test_pcap_matches_timeline: {name} not installed (scripts/setup installs it)");
            None
        }
        Err(e) => panic!("{name} not installed in CI: {e}"),
    }
}

#[test]
fn test_pcap_matches_timeline() {
    if !require_root("test_pcap_matches_timeline") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("closelab-pcap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pcap = dir.join("demo.pcap");
    let lab = unique_lab_name();
    let mut cmd = Command::new(BIN);
    cmd.args(["demo", "--only", "2", "--json", "--name", &lab, "--pcap", pcap.to_str().unwrap()]);
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{}",
        describe(&format!("{cmd:?}"), &out.status, &stdout, &String::from_utf8_lossy(&out.stderr))
    );
    util::assert_lab_gone(&lab);
    // The timeline's segments, in order: (src, dst, flags, seq).
    let mut timeline = Vec::new();
    for line in stdout.lines() {
        let v = closelab::view::json::parse(line).expect("JSON line");
        if v.get("type").and_then(|t| t.as_str()) == Some("segment") {
            let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap().to_string();
            timeline.push((s("src"), s("dst"), s("flags"), v.get("seq").and_then(|x| x.as_u64()).unwrap()));
        }
    }
    assert!(timeline.len() >= 8, "a whole close has at least 8 segments, got {}", timeline.len());

    if tool("tcpdump").is_some() {
        let td = Command::new("tcpdump").args(["-nn", "-S", "-r", pcap.to_str().unwrap()]).output().unwrap();
        assert!(td.status.success(), "tcpdump -r: {}", String::from_utf8_lossy(&td.stderr));
        let lines: Vec<String> = String::from_utf8_lossy(&td.stdout).lines().map(str::to_string).collect();
        assert_eq!(lines.len(), timeline.len(), "tcpdump packets vs timeline segments:\n{}", lines.join("\n"));
        for (line, (src, dst, _flags, seq)) in lines.iter().zip(&timeline) {
            // tcpdump writes 10.201.0.1.41234 > 10.201.0.2.7002
            let dotted = |a: &str| a.replacen(':', ".", 1);
            assert!(line.contains(&format!("{} > {}", dotted(src), dotted(dst))), "{line} vs {src} > {dst}");
            // tcpdump prints seq only for segments that occupy sequence space.
            if line.contains(" seq ") {
                assert!(
                    line.contains(&format!("seq {seq},")) || line.contains(&format!("seq {seq}:")),
                    "{line} vs seq {seq}"
                );
            }
        }
    }
    if tool("tshark").is_some() {
        let ts = Command::new("tshark").args(["-n", "-r", pcap.to_str().unwrap()]).output().unwrap();
        assert!(ts.status.success(), "tshark -r: {}", String::from_utf8_lossy(&ts.stderr));
        let n = String::from_utf8_lossy(&ts.stdout).lines().filter(|l| l.contains("TCP")).count();
        assert_eq!(n, timeline.len(), "tshark packets vs timeline segments");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
