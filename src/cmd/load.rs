//! `closelab load`: builds (or uses) a lab, starts the Linux side
//! (`sys::loadgen`) and closelab's endpoint on the lab's TUN, samples both
//! sides once a second (Linux through sock_diag dumps, closelab from its own
//! table), prints a line per second and the summary, and checks a story's
//! expectations. Everything stays inside the lab's two namespaces.
//!
//! closelab's endpoint runs on a scoped thread that enters the closelab
//! namespace; the main thread never changes namespace, so one `load --story`
//! can build, use and remove several labs in a row.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::rc::Rc;

use smoltcp::time::Instant;

use crate::endpoint::{AppKind, ClosePolicy, Endpoint, EndpointConfig, Policy};
use crate::event::{Cause, ConnId, Event, EventKind, Sink, TcpState};
use crate::fault::FaultRule;
use crate::load::story::{Story, Verdict};
use crate::load::{self, AppStats, Closer, LoadSpec, Pacer, Report, Sample, Server, StateCounts};
use crate::sys::lab::{self, Lab, LabAddrs, LabSpec};
use crate::sys::loadgen::{self, ClientPlan, ServerPlan, Shared, Worker};
use crate::sys::run::{self, Clock, Driver, Outcome, Signals, StopWhen, Tick};
use crate::sys::sockdiag::Diag;
use crate::sys::tun::{TunDevice, TunSpec};

/// How the per-second figures are shown.
#[derive(Clone, Copy, Debug, PartialEq)]
enum SampleView {
    Lines,
    Json,
    Table,
}

/// What `closelab load` was asked, validated.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    pub spec: LoadSpec,
    /// Use this lab (else build one and remove it afterwards).
    pub lab: Option<String>,
    pub json: bool,
    /// Redraw the per-second figures as a table in place (stdout is a
    /// terminal and not `--json`); else one line per second.
    pub redraw: bool,
    pub plot: Option<PathBuf>,
    /// Run this built-in story (or `all`) instead of `spec`.
    pub story: Option<String>,
    pub seed: u64,
}

/// Runs the load (or the stories). `Ok(true)` when every expectation held
/// (always for a plain load), `Ok(false)` when one failed.
pub fn run(opts: &LoadOptions, signals: &mut Signals, out: &mut (dyn Write + Send)) -> Result<RunEnd, String> {
    if let Some(name) = &opts.lab {
        lab::validate_name(name).map_err(|e| e.to_string())?;
        lab::load(name).map_err(|e| e.to_string())?;
    }
    let stories: Vec<Story> = match opts.story.as_deref() {
        None => {
            let report = run_one(&opts.spec, opts, signals, out, None)?;
            finish_plot(opts, &report)?;
            return Ok(if report.interrupted { RunEnd::Interrupted } else { RunEnd::Ok });
        }
        Some("all") => load::story::stories(),
        Some(name) => vec![load::story::find(name).ok_or_else(|| {
            let names: Vec<&str> = load::story::stories().iter().map(|s| s.name).collect();
            format!("unknown story `{name}` (expected one of: {}, all)", names.join(", "))
        })?],
    };
    let mut all_ok = true;
    for story in &stories {
        line(out, opts.json, &format!("story {}: {}", story.name, story.summary));
        for run in &story.runs {
            line(out, opts.json, &format!("run: {}", run.label));
            let report = run_one(&run.spec, opts, signals, out, Some(&run.label))?;
            if report.interrupted {
                return Ok(RunEnd::Interrupted);
            }
            let verdicts: Vec<Verdict> = run.expect.iter().map(|e| e.check(&report)).collect();
            for v in &verdicts {
                all_ok &= v.ok;
                if opts.json {
                    let _ = writeln!(
                        out,
                        "{{\"type\":\"load-verdict\",\"story\":\"{}\",\"run\":{},\"ok\":{},\"expect\":{},\"got\":{}}}",
                        story.name,
                        json_str(&run.label),
                        v.ok,
                        json_str(&v.expect),
                        json_str(&v.got)
                    );
                } else {
                    let _ = writeln!(out, "  {}  {} (got {})", if v.ok { "ok  " } else { "FAIL" }, v.expect, v.got);
                }
            }
            finish_plot(opts, &report)?;
        }
    }
    Ok(if all_ok { RunEnd::Ok } else { RunEnd::Failed })
}

/// How a load ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunEnd {
    Ok,
    /// An expectation of a story failed.
    Failed,
    /// Ctrl-C.
    Interrupted,
}

fn finish_plot(opts: &LoadOptions, report: &Report) -> Result<(), String> {
    if let Some(path) = &opts.plot {
        let svg = crate::view::svg::load_counts(report);
        std::fs::write(path, svg).map_err(|e| format!("cannot write plot {}: {e}", path.display()))?;
    }
    Ok(())
}

fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn line(out: &mut dyn Write, json: bool, text: &str) {
    if json {
        let _ = writeln!(out, "{{\"type\":\"note\",\"text\":{}}}", json_str(text));
    } else {
        let _ = writeln!(out, "{text}");
    }
}

/// The lab of one run: built here (removed on drop) or given.
enum LabUse {
    Built(Lab),
    Given(LabAddrs),
}

impl LabUse {
    fn addrs(&self) -> &LabAddrs {
        match self {
            LabUse::Built(l) => l.addrs(),
            LabUse::Given(a) => a,
        }
    }
}

/// One load run (a lab built for it, or `opts.lab`); prints its samples
/// and summary to `out` and returns the report.
pub(crate) fn run_one(
    spec: &LoadSpec,
    opts: &LoadOptions,
    signals: &mut Signals,
    out: &mut (dyn Write + Send),
    label: Option<&str>,
) -> Result<Report, String> {
    let lab_use = match &opts.lab {
        Some(name) => {
            let addrs = lab::load(name).map_err(|e| e.to_string())?;
            for (k, v) in &spec.peer_sysctls {
                lab::validate_peer_sysctl(k, v).map_err(|e| e.to_string())?;
                crate::sys::netns::write_sysctl(&addrs.ns_linux, k, v).map_err(|e| e.to_string())?;
            }
            LabUse::Given(addrs)
        }
        None => {
            let mut ls = LabSpec::unique();
            for (k, v) in &spec.peer_sysctls {
                ls.add_peer_sysctl(k, v).map_err(|e| e.to_string())?;
            }
            LabUse::Built(Lab::up(ls).map_err(|e| e.to_string())?)
        }
    };
    let a = lab_use.addrs().clone();
    if let Some((lo, hi)) = spec.ports {
        crate::sys::netns::write_sysctl(&a.ns_linux, "net.ipv4.ip_local_port_range", &format!("{lo} {hi}"))
            .map_err(|e| e.to_string())?;
    }
    let _ = lab::ip_command()
        .args([
            "-n",
            &a.ns_closelab,
            "link",
            "set",
            "dev",
            &a.tun,
            "txqueuelen",
            &crate::sys::tun::TXQUEUELEN.to_string(),
        ])
        .output();
    let what = match spec.server {
        Server::Closelab => format!("Linux client -> closelab {}:{}", a.closelab, spec.port),
        Server::Linux => format!("closelab client -> Linux {}:{}", a.linux, spec.port),
        Server::Kernel => {
            format!("Linux client -> kernel server in closelab's namespace {}:{} (no closelab)", a.router, spec.port)
        }
    };
    let rate = spec.rate.map_or("max".to_string(), |r| format!("{r}/s"));
    let stop = match (spec.duration, spec.count) {
        (Some(d), _) => format!("{:.1}s", d.as_secs_f64()),
        (None, Some(c)) => format!("{c} connections"),
        (None, None) => "until Ctrl-C".to_string(),
    };
    let lab_name = match &lab_use {
        LabUse::Built(l) => l.name().to_string(),
        LabUse::Given(_) => opts.lab.clone().unwrap_or_default(),
    };
    line(
        out,
        opts.json,
        &format!(
            "load on lab {lab_name}: {what}, {} closes first{}, rate {rate}, concurrency {}, {stop}",
            spec.closer.name(),
            if spec.leak { " (the other side never closes)" } else { "" },
            spec.concurrency
        ),
    );

    // The Linux side.
    let mut workers: Vec<Worker> = Vec::new();
    let client_plan = |target: SocketAddr| ClientPlan {
        target,
        rate: spec.rate,
        concurrency: spec.concurrency,
        count: spec.count,
        request: spec.request,
        response: spec.response,
        http: spec.http,
        keep_alive: spec.keep_alive,
        closer: spec.closer,
        leak: spec.leak,
        connect_timeout: spec.connect_timeout,
    };
    let server_plan = |bind: SocketAddr| ServerPlan {
        bind,
        backlog: spec.backlog,
        request: spec.request,
        response: spec.response,
        closer: spec.closer,
        leak: spec.leak,
    };
    let linux_diag = crate::sys::netns::in_netns(&a.ns_linux, Diag::new)
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("sock_diag in {}: {e}", a.ns_linux))?;
    let mut closelab_diag = None;
    let client_shared: Option<Shared>;
    match spec.server {
        Server::Closelab => {
            // The endpoint must listen before the first SYN: the generator
            // starts from the endpoint thread's first tick.
            client_shared = None;
        }
        Server::Linux => {
            let w = loadgen::spawn_server(&a.ns_linux, server_plan(SocketAddr::new(IpAddr::V4(a.linux), spec.port)))?;
            workers.push(w);
            client_shared = None;
        }
        Server::Kernel => {
            let w =
                loadgen::spawn_server(&a.ns_closelab, server_plan(SocketAddr::new(IpAddr::V4(a.router), spec.port)))?;
            workers.push(w);
            let c = loadgen::spawn_client(&a.ns_linux, client_plan(SocketAddr::new(IpAddr::V4(a.router), spec.port)));
            client_shared = Some(c.shared.clone());
            workers.push(c);
            closelab_diag = Some(
                crate::sys::netns::in_netns(&a.ns_closelab, Diag::new)
                    .map_err(|e| e.to_string())?
                    .map_err(|e| format!("sock_diag in {}: {e}", a.ns_closelab))?,
            );
        }
    }

    let spec2 = spec.clone();
    let a2 = a.clone();
    let view = match (opts.json, opts.redraw) {
        (true, _) => SampleView::Json,
        (false, true) => SampleView::Table,
        (false, false) => SampleView::Lines,
    };
    let seed = opts.seed;
    let (report, gen_worker) = std::thread::scope(|s| {
        let h = s.spawn(|| -> Result<(Report, Option<Worker>), String> {
            crate::sys::netns::enter(&a2.ns_closelab).map_err(|e| e.to_string())?;
            endpoint_run(&spec2, &a2, seed, view, linux_diag, closelab_diag, client_shared, signals, out)
        });
        h.join().unwrap_or_else(|_| Err("the endpoint thread panicked".into()))
    })?;
    drop(gen_worker);
    let mut report = report;
    for w in &mut workers {
        w.stop();
        if let Some(e) = w.shared.error() {
            report.notes.push(e);
        }
    }
    drop(workers);
    report.tun_dropped = tun_dropped(&a.ns_closelab, &a.tun);
    let _ = label;
    if opts.json {
        let _ = writeln!(out, "{}", report.json());
    } else {
        let _ = write!(out, "{}", report.text());
    }
    drop(lab_use);
    Ok(report)
}

/// The longest closelab waits at the end of a run for closes under way. The
/// wait ends as soon as nothing is closing, so this only bounds a run whose
/// sockets stay closing (a leak story's FIN-WAIT-2) or a machine so loaded
/// that the kernel's softirq has not yet delivered the last FINs; either way
/// the run says so in a note.
const SETTLE: smoltcp::time::Duration = smoltcp::time::Duration::from_secs(3);

/// Runs the endpoint until no connection on either side is in FIN-WAIT-1,
/// FIN-WAIT-2, CLOSING or LAST-ACK (each waits for a segment already due
/// from the peer), or until `until`. closelab's side is the endpoint's own
/// table, or the kernel server's sockets (`--server kernel`, `closelab`);
/// the Linux side is always its sock_diag dump.
struct Settle<'a> {
    until: Instant,
    /// Some connection was still closing when the run ended.
    waited: bool,
    linux: &'a mut Diag,
    closelab: Option<&'a mut Diag>,
    /// The Linux generator (server closelab), draining: its connections
    /// in flight count as closing until they end.
    client: Option<&'a Shared>,
    notes: &'a mut Vec<String>,
}

const CLOSING: [TcpState; 4] = [TcpState::FinWait1, TcpState::FinWait2, TcpState::Closing, TcpState::LastAck];

fn any_closing(c: &StateCounts) -> bool {
    CLOSING.iter().any(|s| c[load::state_index(*s)] > 0)
}

impl Driver for Settle<'_> {
    fn tick(&mut self, now: Instant, ep: &mut Endpoint, _sink: &mut dyn Sink) -> io::Result<Tick> {
        let closing = match self.closelab.as_deref_mut() {
            Some(d) => any_closing(&LoadDriver::diag_counts(d, self.notes)),
            None => ep.connections(now).iter().any(|c| CLOSING.contains(&c.state)),
        } || any_closing(&LoadDriver::diag_counts(self.linux, self.notes))
            || self.client.is_some_and(|c| c.snapshot().in_flight > 0);
        if !closing {
            return Ok(Tick::Stop);
        }
        if now >= self.until {
            self.notes.push(format!(
                "connections still closing (FIN-WAIT-1/2, CLOSING or LAST-ACK) {:.0}s after the run ended; the last sample counts them there",
                SETTLE.total_millis() as f64 / 1000.0
            ));
            return Ok(Tick::Stop);
        }
        self.waited = true;
        Ok(Tick::Continue(Some((now + smoltcp::time::Duration::from_millis(20)).min(self.until))))
    }
}

/// The kernel's count of packets dropped on the TUN's queue, from `ip -s link`.
fn tun_dropped(ns: &str, dev: &str) -> Option<u64> {
    let o = lab::ip_command().args(["-n", ns, "-s", "link", "show", "dev", dev]).output().ok()?;
    let text = String::from_utf8_lossy(&o.stdout);
    let mut lines = text.lines();
    while let Some(l) = lines.next() {
        if l.trim_start().starts_with("TX:") {
            let nums: Vec<u64> = lines.next()?.split_whitespace().filter_map(|w| w.parse().ok()).collect();
            return nums.get(3).copied();
        }
    }
    None
}

#[allow(clippy::too_many_arguments)]
fn endpoint_run(
    spec: &LoadSpec,
    a: &LabAddrs,
    seed: u64,
    view: SampleView,
    linux_diag: Diag,
    closelab_diag: Option<Diag>,
    client_shared: Option<Shared>,
    signals: &mut Signals,
    out: &mut (dyn Write + Send),
) -> Result<(Report, Option<Worker>), String> {
    let own = IpAddr::V4(a.closelab);
    let tun_spec =
        TunSpec { name: a.tun.clone(), mtu: 1500, peer_addrs: Vec::new(), own_addrs: vec![own], configure: false };
    let tun = TunDevice::open(&tun_spec).map_err(|e| e.to_string())?;
    lab::wait_link_up(&a.ns_closelab, tun.name(), lab::LINK_UP_TIMEOUT).map_err(|e| e.to_string())?;
    let cidr = crate::config::parse_cidr(&format!("{}/{}", a.closelab, a.prefix))?;
    let mut cfg = EndpointConfig::new(cidr);
    cfg.seed = seed;
    cfg.buffer = spec.buffer;
    cfg.time_wait = spec.time_wait;
    cfg.timestamps = spec.timestamps;
    cfg.max_conns = 2_000_000;
    cfg.data_events = false;
    cfg.faults =
        spec.faults.iter().map(|f| FaultRule::parse(f).map_err(|e| e.to_string())).collect::<Result<_, _>>()?;
    let close = match (spec.server, spec.closer, spec.leak) {
        (Server::Closelab, Closer::Server, _) => ClosePolicy::Active,
        (Server::Closelab, Closer::Client, true) => ClosePolicy::Never,
        (Server::Closelab, Closer::Client, false) => ClosePolicy::Passive,
        (_, Closer::Client, _) => ClosePolicy::Active,
        (_, Closer::Server, true) => ClosePolicy::Never,
        (_, Closer::Server, false) => ClosePolicy::Passive,
    };
    cfg.app = match spec.server {
        Server::Closelab if spec.http => AppKind::Http,
        Server::Closelab if spec.response > 0 => AppKind::Source(spec.response),
        _ => AppKind::Sink,
    };
    cfg.policy = Policy { close, close_after: None, rst_on_unread: false };
    let clock = Clock::new();
    let mut ep = Endpoint::new(cfg, clock.now())?;
    let counter = Rc::new(RefCell::new(Counter::default()));
    let mut sink = CounterSink(counter.clone());
    let mut driver = LoadDriver {
        spec: spec.clone(),
        ns_linux: a.ns_linux.clone(),
        target: SocketAddr::new(IpAddr::V4(a.closelab), spec.port),
        remote: SocketAddr::new(IpAddr::V4(a.linux), spec.port),
        start: clock.now(),
        pacer: Pacer::new(spec.rate),
        counter,
        client: client_shared,
        generator: None,
        linux_diag,
        closelab_diag,
        samples: Vec::new(),
        next_sample: 1.0,
        view,
        drawn: 0,
        out,
        notes: Vec::new(),
        page: page_size(),
    };
    if spec.server == Server::Closelab {
        ep.listen(spec.port);
    }
    let outcome = run::run(&mut ep, clock, &tun, signals, &mut sink, &mut driver, StopWhen::default())
        .map_err(|e| e.to_string())?;
    // Closes already under way (a FIN on its way) finish before the last
    // sample, so the summary counts the TIME-WAIT they end in; not after
    // Ctrl-C, which stops at once.
    let mut settled = false;
    // The run's length (and so its rate) ends here, before the wait.
    let elapsed = driver.secs(clock.now());
    if !matches!(outcome, Outcome::Interrupted) {
        // The run is over: the generator opens nothing more, so the
        // settle only waits for connections already started.
        if let Some(g) = driver.generator.as_ref() {
            g.drain();
        }
        let mut settle = Settle {
            until: clock.now() + SETTLE,
            waited: false,
            linux: &mut driver.linux_diag,
            closelab: driver.closelab_diag.as_mut(),
            client: driver.client.as_ref(),
            notes: &mut driver.notes,
        };
        run::run(&mut ep, clock, &tun, signals, &mut sink, &mut settle, StopWhen::default())
            .map_err(|e| e.to_string())?;
        settled = settle.waited;
    }
    let now = clock.now();
    let t = driver.secs(now);
    // The last partial second, so the summary covers the whole run.
    if settled || driver.samples.last().is_none_or(|s| t - s.t > 0.05) {
        driver.sample(now, &ep);
    }
    if let Some(g) = driver.generator.as_mut() {
        g.stop();
    }
    let client = driver.client_stats();
    let report = Report {
        spec: spec.clone(),
        samples: std::mem::take(&mut driver.samples),
        elapsed,
        client,
        interrupted: outcome == Outcome::Interrupted,
        tun_dropped: None,
        notes: std::mem::take(&mut driver.notes),
    };
    Ok((report, driver.generator.take()))
}

fn page_size() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE).ok().flatten().map_or(4096, |p| p as u64)
}

/// The whole process's resident memory (closelab's endpoint dominates it:
/// the generator keeps no per-connection buffers in user space).
fn rss(page: u64) -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()))
        .map_or(0, |pages| pages * page)
}

/// closelab's own connections as a client (`--server linux`), counted from
/// the event stream's state changes.
#[derive(Default)]
struct Counter {
    stats: AppStats,
    started_at: HashMap<ConnId, f64>,
    established: std::collections::HashSet<ConnId>,
}

struct CounterSink(Rc<RefCell<Counter>>);

impl Sink for CounterSink {
    fn event(&mut self, ev: &Event) {
        let (Some(id), EventKind::State { from, to, cause }) = (ev.conn, &ev.kind) else { return };
        let mut c = self.0.borrow_mut();
        let Some(&t0) = c.started_at.get(&id) else { return };
        if *from == TcpState::SynSent && *to == TcpState::Established {
            c.stats.connected += 1;
            c.stats.connect_us.record(((ev.t - t0).max(0.0) * 1e6) as u64);
            c.established.insert(id);
            return;
        }
        let done = match to {
            TcpState::TimeWait => true,
            TcpState::Closed if *from == TcpState::LastAck => true,
            TcpState::Closed => {
                let err = match (c.established.contains(&id), cause) {
                    (false, Cause::Timer) => "ETIMEDOUT",
                    (false, _) => "ECONNREFUSED",
                    (true, Cause::Timer) => "ETIMEDOUT",
                    (true, _) => "ECONNRESET",
                };
                c.stats.error(err);
                c.stats.in_flight -= 1;
                c.started_at.remove(&id);
                c.established.remove(&id);
                return;
            }
            _ => false,
        };
        if done {
            c.stats.completed += 1;
            c.stats.in_flight -= 1;
            c.started_at.remove(&id);
            c.established.remove(&id);
        }
    }
}

struct LoadDriver<'o> {
    spec: LoadSpec,
    ns_linux: String,
    /// closelab's listening address (server closelab).
    target: SocketAddr,
    /// The Linux listener (server linux).
    remote: SocketAddr,
    start: Instant,
    pacer: Pacer,
    counter: Rc<RefCell<Counter>>,
    /// The generator's counters (server closelab or kernel).
    client: Option<Shared>,
    generator: Option<Worker>,
    linux_diag: Diag,
    closelab_diag: Option<Diag>,
    samples: Vec<Sample>,
    next_sample: f64,
    view: SampleView,
    /// Lines of the table last drawn (`SampleView::Table`).
    drawn: usize,
    out: &'o mut (dyn Write + Send),
    notes: Vec<String>,
    page: u64,
}

impl LoadDriver<'_> {
    fn secs(&self, now: Instant) -> f64 {
        (now - self.start).total_micros() as f64 / 1e6
    }

    fn client_stats(&self) -> AppStats {
        match &self.client {
            Some(s) => s.snapshot(),
            None => self.counter.borrow().stats.clone(),
        }
    }

    fn diag_counts(diag: &mut Diag, notes: &mut Vec<String>) -> StateCounts {
        match diag.dump_tcp_family(false) {
            Ok(socks) => load::count_states(socks.iter().map(|s| s.state)),
            Err(e) => {
                let msg = format!("sock_diag dump failed: {e}");
                if !notes.contains(&msg) {
                    notes.push(msg);
                }
                [0; 11]
            }
        }
    }

    fn sample(&mut self, now: Instant, ep: &Endpoint) {
        let t = self.secs(now);
        let linux = Self::diag_counts(&mut self.linux_diag, &mut self.notes);
        let closelab = match self.closelab_diag.as_mut() {
            Some(d) => Self::diag_counts(d, &mut self.notes),
            None => {
                let mut c = load::count_states(ep.connections(now).iter().map(|c| c.state));
                c[load::state_index(TcpState::Listen)] += ep.listen_ports().len() as u64;
                c
            }
        };
        let stats = self.client_stats();
        let (pt, pc, pr) = self.samples.last().map_or((0.0, 0, 0), |s| (s.t, s.completed, s.requests.unwrap_or(0)));
        let per_s = |now: u64, before: u64| if t > pt { now.saturating_sub(before) as f64 / (t - pt) } else { 0.0 };
        let rate = per_s(stats.completed, pc);
        let s = Sample {
            t,
            linux,
            closelab,
            started: stats.started,
            completed: stats.completed,
            errors: stats.errors.clone(),
            rate,
            requests: self.spec.http.then_some(stats.requests),
            req_rate: per_s(stats.requests, pr),
            rss: rss(self.page),
        };
        match self.view {
            SampleView::Json => {
                let _ = writeln!(self.out, "{}", load::sample_json(&s));
            }
            SampleView::Lines => {
                let _ = writeln!(self.out, "{}", load::sample_text(&s));
            }
            SampleView::Table => {
                let table = load::sample_table(&s);
                if self.drawn > 0 {
                    // Back to the first line of the last table, and clear
                    // from there down (ANSI CPL and ED).
                    let _ = write!(self.out, "\x1b[{}F\x1b[J", self.drawn);
                }
                let _ = writeln!(self.out, "{table}");
                self.drawn = table.lines().count();
            }
        }
        let _ = self.out.flush();
        self.samples.push(s);
    }

    fn open(&mut self, now: Instant, ep: &mut Endpoint) {
        let t = self.secs(now);
        let (in_flight, started) = {
            let c = self.counter.borrow();
            (c.stats.in_flight, c.stats.started)
        };
        let left = self.spec.count.map_or(u64::MAX, |c| c.saturating_sub(started));
        let room = (self.spec.concurrency as u64).saturating_sub(in_flight);
        let n = self.pacer.due(t).min(room).min(left).min(256);
        for _ in 0..n {
            let mut c = self.counter.borrow_mut();
            c.stats.started += 1;
            match ep.connect(now, self.remote, self.spec.request) {
                Ok(id) => {
                    c.stats.in_flight += 1;
                    c.started_at.insert(id, ep.secs(now));
                }
                Err(e) => c.stats.error(&e.to_string()),
            }
        }
        self.pacer.started(n);
    }

    fn finished(&self) -> bool {
        let Some(count) = self.spec.count else { return false };
        let s = self.client_stats();
        s.started >= count && s.in_flight == 0
    }
}

impl Driver for LoadDriver<'_> {
    fn tick(&mut self, now: Instant, ep: &mut Endpoint, _sink: &mut dyn Sink) -> io::Result<Tick> {
        let t = self.secs(now);
        if self.spec.server == Server::Closelab && self.generator.is_none() && self.client.is_none() {
            let plan = ClientPlan {
                target: self.target,
                rate: self.spec.rate,
                concurrency: self.spec.concurrency,
                count: self.spec.count,
                request: if self.spec.http { 0 } else { self.spec.request },
                response: self.spec.response,
                http: self.spec.http,
                keep_alive: self.spec.keep_alive,
                closer: self.spec.closer,
                leak: self.spec.leak,
                connect_timeout: self.spec.connect_timeout,
            };
            let g = loadgen::spawn_client(&self.ns_linux, plan);
            self.client = Some(g.shared.clone());
            self.generator = Some(g);
        }
        if self.spec.server == Server::Linux {
            self.open(now, ep);
        }
        if t >= self.next_sample {
            self.sample(now, ep);
            self.next_sample = (t.floor() + 1.0).max(self.next_sample + 1.0);
        }
        let over = self.spec.duration.is_some_and(|d| t >= d.as_secs_f64());
        let gen_done = self.client.as_ref().is_some_and(|c| c.done()) && self.spec.server != Server::Linux;
        if over || self.finished() || gen_done {
            if let Some(e) = self.client.as_ref().and_then(|c| c.error()) {
                return Err(io::Error::other(e));
            }
            return Ok(Tick::Stop);
        }
        let mut next = self.start + smoltcp::time::Duration::from_micros((self.next_sample * 1e6) as u64);
        if let Some(d) = self.spec.duration {
            next = next.min(self.start + smoltcp::time::Duration::from_micros(d.as_micros() as u64));
        }
        if self.spec.server == Server::Linux
            && let Some(at) = self.pacer.next_at()
        {
            next = next.min(self.start + smoltcp::time::Duration::from_micros((at * 1e6) as u64));
        }
        if self.client.is_some() {
            // Poll the generator's end (count reached) at least every 50 ms.
            next = next.min(now + smoltcp::time::Duration::from_millis(50));
        }
        Ok(Tick::Continue(Some(next)))
    }
}
