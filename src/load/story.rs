//! The four built-in load stories: the busy server's `netstat` picture,
//! each as one or more load runs with expectations on their per-second
//! samples. Durations are a few seconds so they run in CI; every expected
//! number is scaled to the run (rate × seconds), never a fixed count.

use std::fmt;
use std::time::Duration;

use super::{Closer, LoadSpec, Report, Server};
use crate::event::TcpState;

/// closelab's TIME-WAIT length: its table's default, Linux's 60 s.
pub const CLOSELAB_TIME_WAIT: f64 = crate::endpoint::timewait::LINUX_TIME_WAIT_MS as f64 / 1000.0;
/// Linux's TIME-WAIT length: `TCP_TIMEWAIT_LEN`, hard-coded, no sysctl.
pub const LINUX_TIME_WAIT: f64 = 60.0;

/// Which side a count is read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Linux,
    Closelab,
}

impl Side {
    fn linux(self) -> bool {
        self == Side::Linux
    }
    fn name(self) -> &'static str {
        match self {
            Side::Linux => "linux",
            Side::Closelab => "closelab",
        }
    }
}

/// One expectation on a load run.
#[derive(Clone, Debug, PartialEq)]
pub enum Expect {
    /// At the last sample, `side`'s TIME-WAIT count is within `tolerance`
    /// (a fraction) of the connections completed in the last `secs`
    /// seconds: rate × TIME-WAIT length once the run is longer than
    /// TIME-WAIT (the plateau), everything completed so far before that.
    TimeWait { side: Side, secs: f64, tolerance: f64 },
    /// The client saw between `min` and `max` errors of this errno.
    Errors { errno: &'static str, min: u64, max: Option<u64> },
    /// `side`'s count of `state` never falls from one sample to the next and
    /// ends at no less than `fraction` of the connections completed.
    Grows { side: Side, state: TcpState, fraction: f64 },
    /// At the last sample `side`'s `state` count is under half of
    /// `other_side`'s `other` count.
    EndsBelowHalf { side: Side, state: TcpState, other_side: Side, other: TcpState },
    /// The highest count of `state` on `side` over all samples.
    Peak { side: Side, state: TcpState, min: u64, max: Option<u64> },
    /// The count of `state` on `side` at the last sample.
    End { side: Side, state: TcpState, min: u64, max: Option<u64> },
    /// At least this many connections completed (the run did real work).
    Completed { min: u64 },
}

fn range(min: u64, max: Option<u64>) -> String {
    match max {
        Some(m) if m == min => format!("exactly {min}"),
        Some(m) if min == 0 => format!("at most {m}"),
        Some(m) => format!("{min} to {m}"),
        None => format!("at least {min}"),
    }
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Expect::TimeWait { side, secs, tolerance } => write!(
                f,
                "{} TIME_WAIT = connections completed in the last {secs}s (±{:.0}%)",
                side.name(),
                tolerance * 100.0
            ),
            Expect::Errors { errno, min, max } => write!(f, "{} {errno} errors", range(*min, *max)),
            Expect::Grows { side, state, fraction } => write!(
                f,
                "{} {} never falls and ends at ≥ {:.0}% of completed",
                side.name(),
                state.netstat_name(),
                fraction * 100.0
            ),
            Expect::EndsBelowHalf { side, state, other_side, other } => write!(
                f,
                "{} {} ends below half of {} {}",
                side.name(),
                state.netstat_name(),
                other_side.name(),
                other.netstat_name()
            ),
            Expect::Peak { side, state, min, max } => {
                write!(f, "{} {} peaks at {}", side.name(), state.netstat_name(), range(*min, *max))
            }
            Expect::End { side, state, min, max } => {
                write!(f, "{} {} ends at {}", side.name(), state.netstat_name(), range(*min, *max))
            }
            Expect::Completed { min } => write!(f, "at least {min} connections completed"),
        }
    }
}

/// An expectation's outcome: whether it held, and what was measured.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    pub ok: bool,
    pub expect: String,
    pub got: String,
}

fn within(v: u64, min: u64, max: Option<u64>) -> bool {
    v >= min && max.is_none_or(|m| v <= m)
}

/// Connections completed between `t - secs` and the last sample, from the
/// cumulative per-second counts (linear between samples).
pub fn completed_within(r: &Report, secs: f64) -> f64 {
    let Some(last) = r.last() else { return 0.0 };
    let from = last.t - secs;
    let at = |t: f64| -> f64 {
        let mut prev = (0.0, 0.0);
        for s in &r.samples {
            if s.t >= t {
                let (t0, c0) = prev;
                if s.t <= t0 {
                    return s.completed as f64;
                }
                return c0 + (s.completed as f64 - c0) * (t - t0) / (s.t - t0);
            }
            prev = (s.t, s.completed as f64);
        }
        prev.1
    };
    last.completed as f64 - if from <= 0.0 { 0.0 } else { at(from) }
}

impl Expect {
    pub fn check(&self, r: &Report) -> Verdict {
        let last = r.last();
        let end = |side: Side, s: TcpState| last.map_or(0, |x| x.get(side.linux(), s));
        let (ok, got) = match self {
            Expect::TimeWait { side, secs, tolerance } => {
                let want = completed_within(r, *secs);
                let have = end(*side, TcpState::TimeWait) as f64;
                let ok = want > 0.0 && (have - want).abs() <= tolerance * want;
                (ok, format!("{have:.0} TIME_WAIT, {want:.0} completed in the last {secs}s"))
            }
            Expect::Errors { errno, min, max } => {
                let n = r.errors(errno);
                (within(n, *min, *max), format!("{n}"))
            }
            Expect::Grows { side, state, fraction } => {
                let series: Vec<u64> = r.samples.iter().map(|s| s.get(side.linux(), *state)).collect();
                let fell = series.windows(2).position(|w| w[1] < w[0]);
                let last_v = series.last().copied().unwrap_or(0);
                let completed = last.map_or(0, |s| s.completed);
                let ok = fell.is_none() && completed > 0 && last_v as f64 >= fraction * completed as f64;
                let shown: Vec<String> = series.iter().map(u64::to_string).collect();
                (ok, format!("{} (completed {completed})", shown.join(" ")))
            }
            Expect::EndsBelowHalf { side, state, other_side, other } => {
                let (a, b) = (end(*side, *state), end(*other_side, *other));
                (b > 0 && 2 * a < b, format!("{a} vs {b}"))
            }
            Expect::Peak { side, state, min, max } => {
                let p = r.peak(side.linux(), *state);
                (within(p, *min, *max), format!("{p}"))
            }
            Expect::End { side, state, min, max } => {
                let v = end(*side, *state);
                (last.is_some() && within(v, *min, *max), format!("{v}"))
            }
            Expect::Completed { min } => (r.client.completed >= *min, format!("{}", r.client.completed)),
        };
        Verdict { ok, expect: self.to_string(), got }
    }
}

/// One run of a story: a load and what must hold.
#[derive(Clone, Debug)]
pub struct StoryRun {
    pub label: String,
    pub spec: LoadSpec,
    pub expect: Vec<Expect>,
}

/// A built-in story.
#[derive(Clone, Debug)]
pub struct Story {
    pub name: &'static str,
    pub summary: &'static str,
    pub runs: Vec<StoryRun>,
}

fn secs(s: u64) -> Option<Duration> {
    Some(Duration::from_secs(s))
}

fn sysctl(k: &str, v: &str) -> (String, String) {
    (k.to_string(), v.to_string())
}

/// The stories, with CI durations (a few seconds per run).
pub fn stories() -> Vec<Story> {
    let web = LoadSpec {
        closer: Closer::Server,
        rate: Some(400.0),
        duration: secs(4),
        request: 64,
        response: 256,
        ..LoadSpec::default()
    };
    let tw_closelab = Expect::TimeWait { side: Side::Closelab, secs: CLOSELAB_TIME_WAIT, tolerance: 0.10 };
    let tw_linux = Expect::TimeWait { side: Side::Linux, secs: LINUX_TIME_WAIT, tolerance: 0.10 };
    let time_wait = Story {
        name: "time-wait-pileup",
        summary: "the side that closes first holds one TIME_WAIT per request: rate x TIME-WAIT length",
        runs: vec![
            StoryRun {
                label: "closelab is the web server and closes first".into(),
                spec: LoadSpec { server: Server::Closelab, ..web.clone() },
                expect: vec![
                    Expect::Completed { min: 1000 },
                    tw_closelab,
                    Expect::End { side: Side::Linux, state: TcpState::TimeWait, min: 0, max: Some(5) },
                    Expect::Errors { errno: "EADDRNOTAVAIL", min: 0, max: Some(0) },
                ],
            },
            StoryRun {
                label: "the Linux host is the web server and closes first".into(),
                spec: LoadSpec { server: Server::Linux, ..web },
                expect: vec![
                    Expect::Completed { min: 1000 },
                    tw_linux,
                    Expect::End { side: Side::Closelab, state: TcpState::TimeWait, min: 0, max: Some(5) },
                ],
            },
        ],
    };

    // 500 ports, 300 connections/s: the range is used up after ~1.7 s of
    // TIME-WAIT on the client (500 / 60 s ≈ 8/s is all it can sustain).
    let exhaust = |reuse: &str| LoadSpec {
        server: Server::Closelab,
        closer: Closer::Client,
        rate: Some(300.0),
        duration: secs(4),
        ports: Some((20000, 20499)),
        peer_sysctls: vec![sysctl("net.ipv4.tcp_tw_reuse", reuse), sysctl("net.ipv4.tcp_timestamps", "1")],
        // tcp_tw_reuse reuses a TIME-WAIT port only when both ends sent
        // timestamps.
        timestamps: true,
        ..LoadSpec::default()
    };
    let ports = Story {
        name: "port-exhaustion",
        summary: "the Linux client closes first with 500 local ports: EADDRNOTAVAIL; tcp_tw_reuse=1 (with timestamps) ends it, 2 does not on a veth",
        runs: vec![
            StoryRun {
                label: "tcp_tw_reuse=0".into(),
                spec: exhaust("0"),
                expect: vec![
                    Expect::Errors { errno: "EADDRNOTAVAIL", min: 100, max: None },
                    Expect::Peak { side: Side::Linux, state: TcpState::TimeWait, min: 450, max: Some(500) },
                ],
            },
            StoryRun {
                label: "tcp_tw_reuse=2 (the default: loopback only)".into(),
                spec: exhaust("2"),
                expect: vec![Expect::Errors { errno: "EADDRNOTAVAIL", min: 100, max: None }],
            },
            StoryRun {
                label: "tcp_tw_reuse=1".into(),
                spec: exhaust("1"),
                expect: vec![
                    Expect::Errors { errno: "EADDRNOTAVAIL", min: 0, max: Some(0) },
                    Expect::Completed { min: 1000 },
                ],
            },
        ],
    };

    let leak = Story {
        name: "close-wait-leak",
        summary: "closelab never closes: CLOSE_WAIT climbs by the rate; Linux's orphaned FIN_WAIT2 ends after tcp_fin_timeout",
        runs: vec![StoryRun {
            label: "tcp_fin_timeout=1".into(),
            spec: LoadSpec {
                server: Server::Closelab,
                closer: Closer::Client,
                leak: true,
                rate: Some(200.0),
                duration: secs(5),
                request: 64,
                peer_sysctls: vec![sysctl("net.ipv4.tcp_fin_timeout", "1")],
                ..LoadSpec::default()
            },
            expect: vec![
                Expect::Completed { min: 500 },
                Expect::Grows { side: Side::Closelab, state: TcpState::CloseWait, fraction: 0.9 },
                Expect::EndsBelowHalf {
                    side: Side::Linux,
                    state: TcpState::FinWait2,
                    other_side: Side::Closelab,
                    other: TcpState::CloseWait,
                },
            ],
        }],
    };

    // closelab's handshake ACKs are lost: every connection stays SYN-RECV on
    // Linux until its request queue (the listen backlog) is full.
    let half_open = |cookies: &str| LoadSpec {
        server: Server::Linux,
        closer: Closer::Server,
        rate: Some(100.0),
        duration: secs(3),
        concurrency: 10_000,
        backlog: 8,
        faults: vec!["drop out ack".to_string()],
        peer_sysctls: vec![sysctl("net.ipv4.tcp_syncookies", cookies)],
        ..LoadSpec::default()
    };
    let syn_recv = Story {
        name: "syn-recv",
        summary: "closelab never sends the handshake's last ACK to a Linux listener with backlog 8: SYN_RECV fills it; syncookies decide who else gets in",
        runs: vec![
            StoryRun {
                label: "tcp_syncookies=0: beyond the backlog SYNs are dropped".into(),
                spec: half_open("0"),
                expect: vec![
                    Expect::Peak { side: Side::Linux, state: TcpState::SynReceived, min: 1, max: Some(9) },
                    Expect::End { side: Side::Closelab, state: TcpState::SynSent, min: 100, max: None },
                ],
            },
            StoryRun {
                label: "tcp_syncookies=1: beyond the backlog SYNs get cookies".into(),
                spec: half_open("1"),
                expect: vec![
                    Expect::Peak { side: Side::Linux, state: TcpState::SynReceived, min: 1, max: Some(9) },
                    Expect::End { side: Side::Closelab, state: TcpState::SynSent, min: 0, max: Some(5) },
                    Expect::End { side: Side::Closelab, state: TcpState::Established, min: 200, max: None },
                ],
            },
        ],
    };
    vec![time_wait, ports, leak, syn_recv]
}

/// A story by name.
pub fn find(name: &str) -> Option<Story> {
    stories().into_iter().find(|s| s.name == name)
}
