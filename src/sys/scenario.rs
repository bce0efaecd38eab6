//! `closelab scenario`: named close-bug scenarios run in a lab against a live
//! Linux peer, with faults on closelab's packet path and expectations on both
//! sides that pass or fail (exit 0 / 1; 2 on error).

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration as StdDuration;

use smoltcp::time::Duration;

use crate::endpoint::{AppKind, ClosePolicy, EndpointConfig, Policy};
use crate::event::{Dir, Event, Side, TcpState};
use crate::fault::FaultRule;
use crate::scenario::{self, Expect};
use crate::sys::lab::{Lab, LabAddrs, LabSpec};
use crate::sys::peer::PeerStep;
use crate::sys::run::{Clock, Outcome, Signals};
use crate::sys::story::{Story, StoryView, run_story};
use crate::view::json::{JsonSink, quote};

/// A scenario of the catalogue.
pub struct Scenario {
    pub name: &'static str,
    pub summary: &'static str,
    build: fn(&Ctx) -> (Story, Vec<Expect>),
}

/// What a scenario is built from.
pub struct Ctx {
    pub addrs: LabAddrs,
    pub seed: u64,
    pub port: u16,
}

impl Ctx {
    fn server(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.addrs.closelab), self.port)
    }

    fn endpoint(&self, app: AppKind, close: ClosePolicy, after_ms: Option<u64>, faults: &[&str]) -> EndpointConfig {
        let mut cfg = crate::sys::story::lab_endpoint(&self.addrs);
        cfg.app = app;
        cfg.policy = Policy { close, close_after: after_ms.map(Duration::from_millis), rst_on_unread: false };
        cfg.slow = Some(Duration::from_millis(20));
        cfg.seed = self.seed;
        cfg.faults = faults.iter().map(|f| FaultRule::parse(f).expect("built-in rule")).collect();
        cfg
    }

    fn story(&self, endpoint: EndpointConfig, peer: Vec<PeerStep>, done: fn(&StoryView) -> bool) -> Story {
        Story {
            endpoint,
            port: self.port,
            peer,
            observe_ports: vec![self.port],
            done: Box::new(done),
            timeout: StdDuration::from_secs(20),
        }
    }
}

fn ms(n: u64) -> StdDuration {
    StdDuration::from_millis(n)
}

use TcpState::*;

fn path(side: Side, states: &[TcpState]) -> Expect {
    Expect::Path { side, states: states.to_vec() }
}

/// The tcp_fin_timeout the scenario lab sets for the Linux host.
pub const FIN_TIMEOUT: u32 = 3;

/// The catalogue.
pub fn catalogue() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "active-close",
            summary: "closelab closes first: FIN-WAIT-1, FIN-WAIT-2, TIME-WAIT; Linux passes CLOSE-WAIT and LAST-ACK",
            build: |c| {
                let ep = c.endpoint(AppKind::Echo, ClosePolicy::Active, Some(200), &[]);
                let peer = vec![PeerStep::Connect(c.server()), PeerStep::Send(5), PeerStep::Read(5), PeerStep::ReadToEof, PeerStep::Sleep(ms(200)), PeerStep::Close];
                let s = c.story(ep, peer, |v| v.peer_done && v.linux_open == 0 && v.reached(Side::Closelab, TimeWait));
                (s, vec![
                    path(Side::Closelab, &[Established, FinWait1, FinWait2, TimeWait]),
                    path(Side::Linux, &[Established, CloseWait, LastAck, Closed]),
                    Expect::Never { side: Side::Linux, state: TimeWait },
                ])
            },
        },
        Scenario {
            name: "passive-close",
            summary: "Linux closes first: Linux ends in TIME-WAIT (60 s); closelab passes CLOSE-WAIT and LAST-ACK",
            build: |c| {
                let ep = c.endpoint(AppKind::Echo, ClosePolicy::Passive, Some(200), &[]);
                let peer = vec![PeerStep::Connect(c.server()), PeerStep::Send(5), PeerStep::Read(5), PeerStep::Close];
                let s = c.story(ep, peer, |v| v.peer_done && v.reached(Side::Linux, TimeWait) && v.reached(Side::Closelab, Closed));
                (s, vec![
                    path(Side::Closelab, &[Established, CloseWait, LastAck, Closed]),
                    path(Side::Linux, &[Established, FinWait1, FinWait2, TimeWait]),
                    Expect::Never { side: Side::Closelab, state: TimeWait },
                ])
            },
        },
        Scenario {
            name: "close-wait-leak",
            summary: "closelab never closes: CLOSE-WAIT persists; Linux's orphaned FIN-WAIT-2 ends after tcp_fin_timeout (3 s here)",
            build: |c| {
                let ep = c.endpoint(AppKind::Echo, ClosePolicy::Never, None, &[]);
                let peer = vec![PeerStep::Connect(c.server()), PeerStep::Send(5), PeerStep::Read(5), PeerStep::Close];
                let s = c.story(ep, peer, |v| {
                    v.peer_done && v.reached(Side::Linux, FinWait2) && v.linux_open == 0 && v.closelab_in(CloseWait) == 1
                });
                (s, vec![
                    path(Side::Closelab, &[Established, CloseWait]),
                    Expect::Never { side: Side::Closelab, state: LastAck },
                    path(Side::Linux, &[FinWait1, FinWait2, Closed]),
                ])
            },
        },
        Scenario {
            name: "lost-final-ack",
            summary: "closelab's final ACK is dropped: Linux in LAST-ACK retransmits its FIN and closelab's TIME-WAIT re-ACKs it",
            build: |c| {
                let ep = c.endpoint(AppKind::Echo, ClosePolicy::Active, Some(200), &["drop out ack after-fin 1st"]);
                let peer = vec![PeerStep::Connect(c.server()), PeerStep::Send(5), PeerStep::Read(5), PeerStep::ReadToEof, PeerStep::Sleep(ms(200)), PeerStep::Close];
                let s = c.story(ep, peer, |v| v.peer_done && v.linux_open == 0 && v.reached(Side::Closelab, TimeWait));
                (s, vec![
                    Expect::FaultApplied,
                    path(Side::Closelab, &[FinWait1, FinWait2, TimeWait]),
                    path(Side::Linux, &[CloseWait, LastAck, Closed]),
                    // Linux's FIN twice (original and retransmission); the
                    // first final ACK was dropped (a fault event, not on the
                    // wire), the re-ACK from TIME-WAIT crossed.
                    Expect::Segments { dir: Dir::In, flags: "F.".into(), min: 2, max: None },
                    Expect::Segments { dir: Dir::Out, flags: ".".into(), min: 1, max: None },
                ])
            },
        },
        Scenario {
            name: "lost-fin",
            summary: "closelab's first FIN is dropped; smoltcp retransmits it and the close completes",
            build: |c| {
                let ep = c.endpoint(AppKind::Echo, ClosePolicy::Active, Some(200), &["drop out fin 1st"]);
                let peer = vec![PeerStep::Connect(c.server()), PeerStep::Send(5), PeerStep::Read(5), PeerStep::ReadToEof, PeerStep::Sleep(ms(200)), PeerStep::Close];
                let s = c.story(ep, peer, |v| v.peer_done && v.linux_open == 0 && v.reached(Side::Closelab, TimeWait));
                (s, vec![
                    Expect::FaultApplied,
                    Expect::Segments { dir: Dir::Out, flags: "F.".into(), min: 1, max: None },
                    path(Side::Closelab, &[FinWait1, FinWait2, TimeWait]),
                    path(Side::Linux, &[CloseWait, LastAck, Closed]),
                ])
            },
        },
        Scenario {
            name: "rst-on-unread",
            summary: "closelab (--rst-on-unread, like Linux) closes with unread data: RST instead of FIN, no TIME-WAIT anywhere",
            build: |c| {
                let mut ep = c.endpoint(AppKind::Hello, ClosePolicy::Active, Some(300), &[]);
                ep.policy.rst_on_unread = true;
                let peer = vec![PeerStep::Connect(c.server()), PeerStep::Send(5), PeerStep::Sleep(ms(800))];
                let s = c.story(ep, peer, |v| v.peer_done && v.reached(Side::Closelab, Closed));
                (s, vec![
                    path(Side::Closelab, &[Established, Closed]),
                    Expect::Segments { dir: Dir::Out, flags: "R.".into(), min: 1, max: Some(1) },
                    Expect::Segments { dir: Dir::Out, flags: "F.".into(), min: 0, max: Some(0) },
                    Expect::Never { side: Side::Closelab, state: TimeWait },
                    Expect::Never { side: Side::Linux, state: TimeWait },
                ])
            },
        },
        Scenario {
            name: "linger-abort",
            summary: "Linux closes with SO_LINGER {1,0}: RST, no TIME-WAIT on either side",
            build: |c| {
                let ep = c.endpoint(AppKind::Echo, ClosePolicy::Passive, None, &[]);
                let peer = vec![PeerStep::Connect(c.server()), PeerStep::Send(5), PeerStep::Read(5), PeerStep::LingerClose];
                let s = c.story(ep, peer, |v| v.peer_done && v.reached(Side::Closelab, Closed) && v.linux_open == 0);
                (s, vec![
                    path(Side::Closelab, &[Established, Closed]),
                    Expect::Segments { dir: Dir::In, flags: "R.".into(), min: 1, max: None },
                    Expect::Never { side: Side::Closelab, state: TimeWait },
                    Expect::Never { side: Side::Linux, state: TimeWait },
                ])
            },
        },
        Scenario {
            name: "half-close",
            summary: "closelab shuts down writing at once; Linux keeps sending 64 KiB after closelab's FIN; every byte arrives",
            build: |c| {
                let ep = c.endpoint(AppKind::Sink, ClosePolicy::Half, Some(0), &[]);
                let peer = vec![PeerStep::Connect(c.server()), PeerStep::ReadToEof, PeerStep::Send(64 * 1024), PeerStep::Close];
                let s = c.story(ep, peer, |v| v.peer_done && v.linux_open == 0 && v.reached(Side::Closelab, TimeWait));
                (s, vec![
                    path(Side::Closelab, &[Established, FinWait1, FinWait2, TimeWait]),
                    path(Side::Linux, &[CloseWait, LastAck, Closed]),
                    Expect::Received { bytes: 64 * 1024 },
                ])
            },
        },
    ]
}

/// Options of `scenario run`.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub json: bool,
    pub repeat: usize,
    pub seed: u64,
    pub name: Option<String>,
}

/// Runs the named scenarios (or `all`); returns whether every expectation
/// held.
pub fn run(names: &[String], opts: RunOptions, signals: &mut Signals, out: &mut dyn Write) -> Result<bool, String> {
    let all = catalogue();
    let chosen: Vec<&Scenario> = if names.len() == 1 && names[0] == "all" {
        all.iter().collect()
    } else {
        names
            .iter()
            .map(|n| {
                all.iter().find(|s| s.name == n).ok_or_else(|| {
                    format!(
                        "unknown scenario `{n}` (known: {})",
                        all.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
                    )
                })
            })
            .collect::<Result<_, _>>()?
    };
    crate::sys::lab::check_ip_binary().map_err(|e| e.to_string())?;
    let mut spec = match &opts.name {
        Some(n) => LabSpec::new(n, None).map_err(|e| e.to_string())?,
        None => LabSpec::unique(),
    };
    spec.add_peer_sysctl("net.ipv4.tcp_fin_timeout", &FIN_TIMEOUT.to_string()).map_err(|e| e.to_string())?;
    let lab = Lab::up(spec).map_err(|e| e.to_string())?;
    let addrs = lab.addrs().clone();
    let tun = crate::sys::story::open_lab_tun(&addrs)?;
    let clock = Clock::new();
    let w = |out: &mut dyn Write, s: &str| writeln!(out, "{s}").map_err(|e| format!("writing output: {e}"));
    let mut table = Vec::new();
    let mut port = 7100u16;
    let mut interrupted = false;
    'outer: for sc in &chosen {
        for round in 1..=opts.repeat {
            port += 1;
            let ctx = Ctx { addrs: addrs.clone(), seed: opts.seed.wrapping_add(round as u64), port };
            let (story, expects) = (sc.build)(&ctx);
            let mut events: Vec<Event> = Vec::new();
            let result = if opts.json {
                let mut js = JsonSink::new(&mut *out);
                let mut tee = crate::view::Tee(vec![&mut js, &mut events]);
                run_story(story, &addrs.ns_linux, &tun, clock, signals, &mut tee)
            } else {
                run_story(story, &addrs.ns_linux, &tun, clock, signals, &mut events)
            };
            let (failures, error) = match result {
                Ok(r) if r.outcome == Outcome::Interrupted => {
                    interrupted = true;
                    break 'outer;
                }
                Ok(_) => (scenario::verdict(&expects, &events), None),
                Err(e) => (Vec::new(), Some(e)),
            };
            let pass = failures.is_empty() && error.is_none();
            if opts.json {
                let fails: Vec<String> = failures
                    .iter()
                    .map(|f| format!("{{\"expect\":{},\"reason\":{}}}", quote(&f.expect), quote(&f.reason)))
                    .collect();
                w(out, &format!(
                    "{{\"type\":\"verdict\",\"scenario\":{},\"round\":{round},\"pass\":{pass},\"failures\":[{}],\"error\":{}}}",
                    quote(sc.name),
                    fails.join(","),
                    error.as_deref().map(quote).unwrap_or_else(|| "null".into())
                ))?;
            } else {
                w(out, &format!("scenario {} (round {round}/{}): {}", sc.name, opts.repeat, sc.summary))?;
                let mut sorted = events.clone();
                sorted.sort_by(|a, b| a.t.total_cmp(&b.t));
                for e in sorted.iter().filter(|e| e.conn == Some(1) || e.conn.is_none()) {
                    w(out, &format!("  {}", crate::view::text::line(e)))?;
                }
                for x in &expects {
                    let mark = if failures.iter().any(|f| f.expect == x.to_string()) { "FAIL" } else { "ok  " };
                    w(out, &format!("  {mark} {x}"))?;
                }
                for f in &failures {
                    w(out, &format!("  FAIL {}: {}", f.expect, f.reason))?;
                    if let Some(t) = f.around {
                        for e in scenario::around(&sorted, t, 0.3) {
                            w(out, &format!("       | {}", crate::view::text::line(e)))?;
                        }
                    }
                }
                if let Some(e) = &error {
                    w(out, &format!("  ERROR {e}"))?;
                }
                w(out, &format!("  verdict: {}\n", if pass { "PASS" } else { "FAIL" }))?;
            }
            table.push((sc.name, round, pass));
        }
    }
    drop(tun);
    lab.down().map_err(|e| e.to_string())?;
    if interrupted {
        return Err("interrupted".into());
    }
    if !opts.json && table.len() > 1 {
        w(out, "scenario                  result")?;
        for (name, round, pass) in &table {
            let label = if opts.repeat > 1 { format!("{name} #{round}") } else { name.to_string() };
            w(out, &format!("{label:<25} {}", if *pass { "PASS" } else { "FAIL" }))?;
        }
    }
    let passed = table.iter().all(|(_, _, p)| *p);
    let n_pass = table.iter().filter(|(_, _, p)| *p).count();
    if !opts.json {
        w(out, &format!("{n_pass}/{} passed", table.len()))?;
    }
    Ok(passed)
}
