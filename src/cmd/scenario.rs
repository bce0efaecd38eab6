//! `closelab scenario`: close-bug scenarios (built-in files or the user's
//! own `.toml`) run in a lab against a live Linux peer, with faults on
//! closelab's packet path and expectations on both sides that pass or fail
//! (exit 0 / 1; 2 on error).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use crate::cmd::story::{Story, StoryView, lab_endpoint, open_lab_tun, run_story};
use crate::event::{ConnId, Dir, Event, EventKind, Side, Sink};
use crate::fault::FaultRule;
use crate::scenario;
use crate::scenario::file::{self, Done, Mode, ScenarioSpec, Step};
use crate::sys::lab::{Lab, LabAddrs, LabSpec};
use crate::sys::peer::PeerStep;
use crate::sys::run::{Clock, Outcome, Signals};
use crate::view::json::{JsonSink, Verdict, verdict_line};
use crate::view::{PcapSink, Tee};
use crate::wire::{FourTuple, Segment};

/// The built-in catalogue, parsed (they are tested to parse).
pub fn catalogue() -> Vec<ScenarioSpec> {
    file::BUILTIN
        .iter()
        .map(|(name, text)| file::parse(text).unwrap_or_else(|e| panic!("built-in scenario {name}: {e}")))
        .collect()
}

/// Finds a scenario by name, or reads a file (a name ending in `.toml` or
/// containing `/`).
pub fn load(name: &str) -> Result<ScenarioSpec, String> {
    if name.ends_with(".toml") || name.contains('/') {
        let text = crate::sys::files::read_scenario(std::path::Path::new(name)).map_err(|e| e.to_string())?;
        return file::parse(&text).map_err(|e| format!("{name}: {e}"));
    }
    catalogue().into_iter().find(|s| s.name == name).ok_or_else(|| {
        format!(
            "unknown scenario `{name}` (known: {}; or give a .toml file)",
            file::BUILTIN.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
        )
    })
}

/// The story (closelab endpoint, Linux script, end condition) of a scenario
/// in a lab, on `port`.
fn story(spec: &ScenarioSpec, addrs: &LabAddrs, port: u16, seed: u64, capture: bool, extra: &[FaultRule]) -> Story {
    let closelab = SocketAddr::new(IpAddr::V4(addrs.closelab), port);
    let linux = SocketAddr::new(IpAddr::V4(addrs.linux), port);
    let mut cfg = lab_endpoint(addrs);
    cfg.app = spec.app.clone();
    cfg.policy = spec.policy;
    if let Mode::Crawl(_) = spec.mode {
        cfg.app = crate::endpoint::AppKind::HttpClient;
        cfg.policy.close = crate::endpoint::ClosePolicy::Never;
    }
    cfg.keep_alive = spec.keep_alive;
    cfg.user_timeout = spec.user_timeout;
    cfg.time_wait_syn = spec.time_wait_syn;
    cfg.time_wait_model = spec.time_wait_model;
    cfg.time_wait = spec.time_wait;
    cfg.close_timers = spec.close_timers;
    // The scenario's own rules first: `--fault` rules are numbered after them.
    cfg.faults = spec.faults.iter().chain(extra).cloned().collect();
    cfg.slow = spec.slow;
    cfg.seed = seed;
    cfg.capture = capture;
    let peer = spec
        .steps
        .iter()
        .map(|s| match s {
            Step::Connect => PeerStep::Connect(closelab),
            Step::ConnectFrom(p) => PeerStep::ConnectFrom(*p, closelab),
            Step::Listen => PeerStep::Listen(linux),
            Step::Accept => PeerStep::Accept,
            Step::Send(n) => PeerStep::Send(*n),
            Step::SendText(t) => PeerStep::SendBytes(t.clone().into_bytes()),
            Step::Read(n) => PeerStep::Read(*n),
            Step::ReadEof => PeerStep::ReadToEof,
            Step::ReadError => PeerStep::ReadError,
            Step::Shutdown => PeerStep::Shutdown,
            Step::Close => PeerStep::Close,
            Step::LingerClose => PeerStep::LingerClose,
            Step::Sleep(d) => PeerStep::Sleep(*d),
            Step::Keepalive(p) => PeerStep::Keepalive(*p),
            Step::LinkDown => PeerStep::LinkDown(addrs.veth_linux.clone()),
            Step::LinkUp => PeerStep::LinkUp(addrs.veth_linux.clone()),
        })
        .collect();
    let done = spec.done.clone();
    Story {
        endpoint: cfg,
        port,
        peer,
        observe_ports: vec![port],
        done: Box::new(move |v: &StoryView| done.iter().all(|d| holds(d, v))),
        timeout: spec.timeout,
        connect: match spec.mode {
            Mode::Listen | Mode::Crawl(_) => None,
            Mode::Connect { send, count, local_port } => {
                Some(crate::cmd::story::Connect { to: linux, send, count, local_port })
            }
        },
        crawl: match &spec.mode {
            Mode::Crawl(c) => cfg_crawl(c, linux),
            _ => None,
        },
    }
}

fn cfg_crawl(c: &crate::scenario::file::CrawlSpec, server: SocketAddr) -> Option<crate::endpoint::crawl::CrawlConfig> {
    let mut cc = crate::endpoint::crawl::CrawlConfig::new(server, c.paths.clone());
    cc.pool = c.pool;
    cc.rate = c.rate;
    cc.on_error = c.on_error;
    cc.mode = c.http;
    cc.budget = c.budget;
    Some(cc)
}

fn holds(d: &Done, v: &StoryView) -> bool {
    match d {
        Done::LinuxDone => v.peer_done,
        Done::LinuxGone => v.linux_open == 0,
        Done::Reached(side, state) => v.reached(*side, *state),
        Done::Time(t) => v.t >= *t,
        Done::After(side, state, d) => v.reached_at(*side, *state).is_some_and(|t| v.t >= t + d),
        Done::CrawlDone => v.crawler.is_some_and(|c| c.is_done()),
    }
}

/// Stops a scenario's web server when dropped (also on error).
struct WebGuard(String, crate::sys::webserver::ServerKind);

impl Drop for WebGuard {
    fn drop(&mut self) {
        if let Err(e) = crate::sys::webserver::stop_kind(&self.0, self.1) {
            log::warn!("scenario: stopping the web server: {e}");
        }
    }
}

/// Options of `scenario run`.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub json: bool,
    pub repeat: usize,
    pub seed: u64,
    pub name: Option<String>,
    pub pcap: Option<PathBuf>,
    /// Extra fault rules for every scenario (`--fault`), after its own.
    pub faults: Vec<FaultRule>,
}

/// Sets the scenario's peer sysctls in the Linux namespace and puts the
/// previous values back when dropped (one lab serves every scenario).
struct Sysctls {
    ns: String,
    saved: Vec<(String, String)>,
}

impl Sysctls {
    fn apply(ns: &str, wanted: &[(String, String)]) -> Result<Sysctls, String> {
        let mut s = Sysctls { ns: ns.to_string(), saved: Vec::new() };
        for (k, v) in wanted {
            let old = crate::sys::netns::read_sysctl(ns, k).map_err(|e| e.to_string())?;
            crate::sys::netns::write_sysctl(ns, k, v).map_err(|e| e.to_string())?;
            s.saved.push((k.clone(), old));
        }
        Ok(s)
    }
}

impl Drop for Sysctls {
    fn drop(&mut self) {
        for (k, v) in self.saved.iter().rev() {
            let _ = crate::sys::netns::write_sysctl(&self.ns, k, v.trim());
        }
    }
}

/// Runs the named scenarios (or `all`); returns whether every expectation
/// held.
pub fn run(names: &[String], opts: RunOptions, signals: &mut Signals, out: &mut dyn Write) -> Result<bool, String> {
    let chosen: Vec<ScenarioSpec> = if names.len() == 1 && names[0] == "all" {
        catalogue()
    } else {
        names.iter().map(|n| load(n)).collect::<Result<_, _>>()?
    };
    if signals.interrupted() {
        return Err("interrupted".into());
    }
    let rounds = chosen.len().saturating_mul(opts.repeat);
    if rounds > MAX_ROUNDS {
        return Err(format!(
            "{} scenario(s) × --repeat {} is {rounds} rounds; at most {MAX_ROUNDS} (each round takes its own port)",
            chosen.len(),
            opts.repeat
        ));
    }
    crate::sys::lab::check_ip_binary().map_err(|e| e.to_string())?;
    let mut pcap = match &opts.pcap {
        Some(path) => {
            let f =
                File::create(path).map_err(|e| format!("cannot create pcap file {}: {}", path.display(), e.kind()))?;
            let epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            Some(
                PcapSink::new(BufWriter::new(f), epoch)
                    .map_err(|e| format!("writing pcap file {}: {e}", path.display()))?,
            )
        }
        None => None,
    };
    let spec = match &opts.name {
        Some(n) => LabSpec::new(n, None).map_err(|e| e.to_string())?,
        None => LabSpec::unique(),
    };
    let lab = Lab::up(spec).map_err(|e| e.to_string())?;
    if signals.interrupted() {
        // Dropping the lab removes it.
        return Err("interrupted".into());
    }
    let addrs = lab.addrs().clone();
    let tun = open_lab_tun(&addrs)?;
    let clock = Clock::new();
    let w = |out: &mut dyn Write, s: &str| writeln!(out, "{s}").map_err(|e| format!("writing output: {e}"));
    let mut table = Vec::new();
    let mut port = 7100u16;
    let mut interrupted = false;
    let mut earlier = Earlier::default();
    'outer: for sc in &chosen {
        for round in 1..=opts.repeat {
            port += 1;
            let sysctls = Sysctls::apply(&addrs.ns_linux, &sc.peer_sysctls)?;
            if let Some(p) = pcap.as_mut() {
                p.set_epoch(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default());
            }
            // A real web server on the Linux host for this run, on its port.
            let server = match &sc.server {
                Some(w) => {
                    let spec = crate::sys::webserver::ServeSpec {
                        lab: lab.name().to_string(),
                        kind: w.kind,
                        port,
                        keepalive_timeout: w.keepalive_timeout,
                        root: None,
                    };
                    crate::sys::webserver::start(&spec).map_err(|e| format!("scenario {}: {e}", sc.name))?;
                    Some(WebGuard(lab.name().to_string(), w.kind))
                }
                None => None,
            };
            let story = story(sc, &addrs, port, opts.seed.wrapping_add(round as u64), pcap.is_some(), &opts.faults);
            let mut events: Vec<Event> = Vec::new();
            let note = Event {
                t: 0.0,
                side: Side::Closelab,
                conn: None,
                kind: EventKind::Note {
                    text: format!("scenario {} (round {round}/{}): {}", sc.name, opts.repeat, sc.summary),
                },
            };
            let result = {
                let mut js = JsonSink::new(&mut *out);
                let mut sinks: Vec<&mut dyn crate::event::Sink> = vec![&mut events];
                if opts.json {
                    sinks.push(&mut js);
                }
                if let Some(p) = pcap.as_mut() {
                    sinks.push(p);
                }
                let mut tee = Tee(sinks);
                tee.event(&note);
                let mut late = LateLabel { inner: &mut tee, earlier: &earlier };
                run_story(story, &addrs.ns_linux, &tun, clock, signals, &mut late)
            };
            earlier.add(format!("{} round {round}", sc.name), port, &events);
            drop(sysctls);
            drop(server);
            // A scenario that took the Linux link down gets it back, also
            // when it failed half-way.
            if sc.steps.contains(&Step::LinkDown) {
                let dev = addrs.veth_linux.clone();
                let _ = crate::sys::netns::in_netns(&addrs.ns_linux, move || {
                    crate::sys::lab::ip_command().args(["link", "set", "dev", &dev, "up"]).status()
                });
                // Its route comes back with it; give the link a moment.
                let _ =
                    crate::sys::lab::wait_link_up(&addrs.ns_linux, &addrs.veth_linux, crate::sys::lab::LINK_UP_TIMEOUT);
            }
            let (failures, error) = match result {
                Ok(r) if r.outcome == Outcome::Interrupted => {
                    interrupted = true;
                    break 'outer;
                }
                Ok(_) => (scenario::verdict(&sc.expects, &events), None),
                Err(e) => (Vec::new(), Some(e)),
            };
            let pass = failures.is_empty() && error.is_none();
            if opts.json {
                let v = Verdict { scenario: &sc.name, round, pass, failures: &failures, error: error.as_deref() };
                w(out, &verdict_line(&v))?;
            } else {
                report(out, sc, &events, &failures, error.as_deref(), pass)?;
            }
            table.push((sc.name.clone(), round, pass));
        }
    }
    drop(tun);
    lab.down().map_err(|e| e.to_string())?;
    if let Some(p) = pcap.as_mut() {
        p.finish().map_err(|e| format!("writing pcap file: {e}"))?;
    }
    if interrupted {
        return Err("interrupted".into());
    }
    if !opts.json && table.len() > 1 {
        let label =
            |name: &str, round: usize| if opts.repeat > 1 { format!("{name} #{round}") } else { name.to_string() };
        // The column fits the longest label (time-wait-assassination-rfc1337 #10 …).
        let width = table.iter().map(|(n, r, _)| label(n, *r).chars().count()).max().unwrap_or(0).max("scenario".len());
        w(out, &format!("{:<width$}  result", "scenario"))?;
        for (name, round, pass) in &table {
            w(out, &format!("{:<width$}  {}", label(name, *round), if *pass { "PASS" } else { "FAIL" }))?;
        }
    }
    let n_pass = table.iter().filter(|(_, _, p)| *p).count();
    if !opts.json {
        w(out, &format!("{n_pass}/{} passed", table.len()))?;
    }
    Ok(n_pass == table.len())
}

/// Most rounds one run may have: each takes its own port (7101 up), so that
/// no round's 4-tuples are an earlier round's.
pub const MAX_ROUNDS: usize = 10_000;

/// What earlier rounds of this run used, to name a late segment's round.
#[derive(Default)]
struct Earlier {
    /// The round's port (closelab's listening port or the Linux listener's)
    /// → `scenario round N`.
    by_port: std::collections::HashMap<u16, String>,
    /// closelab's view of a 4-tuple → round and connection number.
    by_tuple: std::collections::HashMap<FourTuple, (String, ConnId)>,
}

impl Earlier {
    fn add(&mut self, label: String, port: u16, events: &[Event]) {
        for e in events {
            if let (EventKind::Segment { dir, seg }, Some(c)) = (&e.kind, e.conn) {
                self.by_tuple.entry(closelab_tuple(*dir, seg)).or_insert_with(|| (label.clone(), c));
            }
        }
        self.by_port.insert(port, label);
    }

    /// `scenario round N (#c)` for a segment of an earlier round.
    fn label(&self, dir: Dir, seg: &Segment) -> Option<String> {
        let tuple = closelab_tuple(dir, seg);
        if let Some((label, c)) = self.by_tuple.get(&tuple) {
            return Some(format!("{label} (#{c})"));
        }
        self.by_port.get(&tuple.local.port()).or_else(|| self.by_port.get(&tuple.remote.port())).cloned()
    }
}

/// The 4-tuple as closelab sees it (`local` is closelab's end).
fn closelab_tuple(dir: Dir, seg: &Segment) -> FourTuple {
    match dir {
        Dir::Out => seg.tuple_at_sender(),
        Dir::In => seg.tuple_at_receiver(),
    }
}

/// Passes events on, except that a segment of no connection whose 4-tuple
/// belongs to an earlier round (it arrived after that round ended, or is
/// closelab's answer to such a one) becomes a note naming that round: it is
/// neither counted in this round's expectations nor shown as this round's.
/// Raw packets pass unchanged (the pcap has every segment).
struct LateLabel<'a> {
    inner: &'a mut dyn Sink,
    earlier: &'a Earlier,
}

impl Sink for LateLabel<'_> {
    fn event(&mut self, ev: &Event) {
        let (dir, seg, fault) = match &ev.kind {
            EventKind::Segment { dir, seg } => (*dir, seg, None),
            EventKind::Fault { action, dir, seg: Some(seg), rule, detail } => {
                (*dir, seg, Some(format!("fault {} by rule {rule} {detail}: ", action.name())))
            }
            _ => return self.inner.event(ev),
        };
        let label = match ev.conn {
            None => self.earlier.label(dir, seg),
            Some(_) => None,
        };
        let Some(label) = label else { return self.inner.event(ev) };
        let what = match (dir, &fault) {
            (Dir::Out, None) => "closelab's answer (closed port) to a late segment of",
            _ => "late segment of",
        };
        let mut text = format!(
            "{what} {label}: {}{} {} > {} [{}] seq {}",
            fault.unwrap_or_default(),
            dir.name(),
            seg.src,
            seg.dst,
            seg.flags,
            seg.seq
        );
        if seg.flags.ack {
            text.push_str(&format!(" ack {}", seg.ack));
        }
        text.push_str(&format!(" len {} (that round had ended)", seg.len));
        self.inner.event(&Event { t: ev.t, side: ev.side, conn: None, kind: EventKind::Note { text } });
    }

    fn packet(&mut self, t: f64, dir: Dir, raw: &[u8]) {
        self.inner.packet(t, dir, raw)
    }
}

/// The human report of one run: the ladder, each expectation, the verdict.
fn report(
    out: &mut dyn Write,
    sc: &ScenarioSpec,
    events: &[Event],
    failures: &[scenario::Failure],
    error: Option<&str>,
    pass: bool,
) -> Result<(), String> {
    let w = |out: &mut dyn Write, s: &str| writeln!(out, "{s}").map_err(|e| format!("writing output: {e}"));
    let mut sorted = events.to_vec();
    sorted.sort_by(|a, b| a.t.total_cmp(&b.t));
    w(out, &crate::view::ladder::render(&sorted, &crate::view::ladder::LadderOptions::default()))?;
    if let Some(x) = &sc.explain {
        w(out, &format!("  {x}"))?;
    }
    for x in &sc.expects {
        let mark = if failures.iter().any(|f| f.expect == x.to_string()) { "FAIL" } else { "ok  " };
        w(out, &format!("  {mark} {x}"))?;
    }
    for f in failures {
        w(out, &format!("  FAIL {}: {}", f.expect, f.reason))?;
        if let Some(t) = f.around {
            for e in scenario::around(&sorted, t, 0.3) {
                w(out, &format!("       | {}", crate::view::text::line(e)))?;
            }
        }
    }
    if let Some(e) = error {
        w(out, &format!("  ERROR {e}"))?;
    }
    w(out, &format!("  verdict: {}\n", if pass { "PASS" } else { "FAIL" }))
}

/// `scenario list`: name and summary of each built-in scenario.
pub fn list() -> Vec<(String, String)> {
    catalogue().into_iter().map(|s| (s.name, s.summary)).collect()
}
