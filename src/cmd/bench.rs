//! `closelab bench`: bulk throughput through closelab's endpoint on a TUN,
//! next to the kernel's own TCP over a veth pair, measured in the same run
//! on the same machine.
//!
//! It builds a throwaway lab (unique name; removed on success, error, panic
//! and Ctrl-C by the [`Lab`] guard). For each MTU and round it times one
//! transfer on each path, always with a Linux client in the lab's Linux
//! namespace, from `connect()` to the EOF that ends the transfer:
//! - kernel → kernel: a kernel server in closelab's namespace (on the veth
//!   end) reads until EOF and closes;
//! - kernel → closelab: closelab's endpoint (`--app sink --close passive`,
//!   no tracing) reads until EOF and closes;
//! - closelab → kernel: closelab's endpoint (`--app source:SIZE --close
//!   active`) sends and closes; the client counts every byte;
//! - kernel → closelab traced: as above with every segment formatted as a
//!   JSON line and captured as pcap, both written (batched) to /dev/null:
//!   the cost of tracing without the cost of a disk.
//!
//! Figures are Gbit/s of payload, medians over the rounds, and ratios to the
//! kernel ↔ kernel median of the same MTU. Nothing here asserts a speed.

use std::fs::File;
use std::io::{self, BufWriter, ErrorKind, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Duration as StdDuration, Instant as StdInstant};

use serde::Serialize;
use smoltcp::time::Instant;

use crate::endpoint::{AppKind, ClosePolicy, Endpoint, EndpointConfig, Policy};
use crate::event::Sink;
use crate::sys::lab::{self, Lab, LabAddrs, LabSpec};
use crate::sys::run::{self, Clock, Driver, Outcome, Signals, StopWhen, Tick};
use crate::sys::tun::{TunDevice, TunSpec};
use crate::view::PcapSink;
use crate::view::json::JsonSink;

/// Largest transfer (per path and round).
pub const MAX_SIZE: u64 = 16 << 30;
/// Smallest transfer: below it the figure is only handshake and close.
pub const MIN_SIZE: u64 = 1 << 10;
pub const MAX_ROUNDS: usize = 15;
/// Most connections one transfer is split over (`--parallel`).
pub const MAX_PARALLEL: usize = 64;
/// MTUs a lab's veth and TUN accept here.
pub const MTU_RANGE: std::ops::RangeInclusive<u32> = 1280..=9000;
/// A transfer that has not finished after this long fails (a stalled
/// endpoint must not hang the bench or CI).
const TRANSFER_LIMIT: StdDuration = StdDuration::from_secs(120);
/// How often blocked sockets and loops look at the abort flag.
const CHECK_EVERY: StdDuration = StdDuration::from_millis(50);

/// What `closelab bench` was asked, validated.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Bytes per transfer.
    pub size: u64,
    pub rounds: usize,
    pub mtus: Vec<u32>,
    /// Each transfer is split over this many connections at once (one
    /// run per value; `--size` is the total).
    pub parallel: Vec<usize>,
    /// closelab's per-connection receive and send buffer.
    pub buffer: usize,
    pub json: bool,
    /// Also run the traced kernel → closelab transfer.
    pub traced: bool,
    pub seed: u64,
    /// The lab's name (default: a unique one). It must not exist yet.
    pub name: Option<String>,
    /// Length of each connections-per-second run (0: none): the load
    /// generator against closelab and against a kernel server, `rounds`
    /// times each, alternating.
    pub load: Duration,
}

/// Longest connections-per-second run.
pub const MAX_LOAD: Duration = Duration::from_secs(60);

impl BenchOptions {
    /// Checks every bound; the error is the one line `main` prints.
    pub fn validate(&self) -> Result<(), String> {
        if !(MIN_SIZE..=MAX_SIZE).contains(&self.size) {
            return Err(format!("--size must be 1k to 16G (got {} bytes)", self.size));
        }
        if !(1..=MAX_ROUNDS).contains(&self.rounds) {
            return Err(format!("--rounds must be 1 to {MAX_ROUNDS} (got {})", self.rounds));
        }
        if self.mtus.is_empty() {
            return Err("--mtu needs at least one value".into());
        }
        if let Some(m) = self.mtus.iter().find(|m| !MTU_RANGE.contains(m)) {
            return Err(format!("--mtu must be {} to {} (got {m})", MTU_RANGE.start(), MTU_RANGE.end()));
        }
        if self.parallel.is_empty() {
            return Err("--parallel needs at least one value".into());
        }
        if let Some(p) = self.parallel.iter().find(|p| !(1..=MAX_PARALLEL).contains(*p)) {
            return Err(format!("--parallel must be 1 to {MAX_PARALLEL} connections (got {p})"));
        }
        if let Some(p) = self.parallel.iter().find(|&&p| self.size / (p as u64) < MIN_SIZE) {
            return Err(format!("--size {} split over {p} connections is under 1k each", self.size));
        }
        if self.load > MAX_LOAD {
            return Err(format!("--load must be at most 60s (got {:?})", self.load));
        }
        if let Some(n) = &self.name {
            lab::validate_name(n).map_err(|e| e.to_string())?;
        }
        if !(4096..=(64 << 20)).contains(&self.buffer) {
            return Err(format!("--buffer must be 4k to 64M (got {} bytes)", self.buffer));
        }
        Ok(())
    }
}

/// The paths measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Path {
    /// Kernel ↔ kernel over the lab's veth pair: the baseline.
    KernelToKernel,
    KernelToCloselab,
    CloselabToKernel,
    /// Kernel → closelab with JSON lines and pcap written to /dev/null.
    KernelToCloselabTraced,
}

impl Path {
    fn label(self) -> &'static str {
        match self {
            Path::KernelToKernel => "kernel -> kernel (veth)",
            Path::KernelToCloselab => "kernel -> closelab (trace none)",
            Path::CloselabToKernel => "closelab -> kernel (trace none)",
            Path::KernelToCloselabTraced => "kernel -> closelab (--json + --pcap to /dev/null)",
        }
    }
}

/// One path at one MTU: every round's figure and the median.
#[derive(Clone, Debug, Serialize)]
pub struct Figure {
    pub mtu: u32,
    /// Connections the transfer was split over.
    pub parallel: usize,
    pub path: Path,
    pub bytes: u64,
    pub gbps: Vec<f64>,
    pub median_gbps: f64,
    /// Median over the kernel ↔ kernel median of the same MTU.
    pub ratio: Option<f64>,
}

/// How a bench ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchEnd {
    Done,
    Interrupted,
}

/// The machine, for the record (figures mean little without it).
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub kernel: String,
}

fn machine() -> Machine {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").map_or("unknown".into(), |s| s.trim().into());
    Machine { cpus, cpu_model, kernel }
}

/// Runs the bench; results go to `out` as text or JSON lines.
pub fn run(opts: &BenchOptions, signals: &mut Signals, out: &mut dyn Write) -> Result<BenchEnd, String> {
    opts.validate()?;
    let spec = match &opts.name {
        Some(n) => LabSpec::new(n, None).map_err(|e| e.to_string())?,
        None => LabSpec::unique(),
    };
    let lab = Lab::up(spec).map_err(|e| e.to_string())?;
    let a = lab.addrs().clone();
    let m = machine();
    let head = format!(
        "closelab bench on lab {} ({} CPUs, {}, Linux {}): {} per transfer, {} round(s), closelab buffer {}",
        lab.name(),
        m.cpus,
        m.cpu_model,
        m.kernel,
        bytes_text(opts.size),
        opts.rounds,
        bytes_text(opts.buffer as u64)
    );
    if opts.json {
        let line = serde_json::json!({"type": "bench-start", "lab": lab.name(), "machine": m, "bytes": opts.size,
            "rounds": opts.rounds, "buffer": opts.buffer});
        writeln!(out, "{line}").map_err(write_err)?;
    } else {
        writeln!(out, "{head}").map_err(write_err)?;
    }
    let mut paths = vec![Path::KernelToKernel, Path::KernelToCloselab, Path::CloselabToKernel];
    if opts.traced {
        paths.push(Path::KernelToCloselabTraced);
    }
    let mut port = 5001u16;
    let mut results = Vec::new();
    for (&mtu, &parallel) in opts.mtus.iter().flat_map(|m| opts.parallel.iter().map(move |p| (m, p))) {
        set_mtu(&a, mtu)?;
        // Every connection moves the same share; the figure counts what moved.
        let bytes = opts.size / parallel as u64 * parallel as u64;
        let mut figures: Vec<Vec<f64>> = vec![Vec::new(); paths.len()];
        for _ in 0..opts.rounds {
            for (i, &path) in paths.iter().enumerate() {
                port += 1;
                let secs = match measure(&a, path, Transfer { mtu, port, parallel }, opts, signals)? {
                    Some(s) => s,
                    None => return Ok(BenchEnd::Interrupted),
                };
                figures[i].push(bytes as f64 * 8.0 / secs / 1e9);
            }
        }
        let base = median(&figures[0]);
        for (i, &path) in paths.iter().enumerate() {
            let med = median(&figures[i]);
            let r = Figure {
                mtu,
                parallel,
                path,
                bytes,
                gbps: figures[i].clone(),
                median_gbps: med,
                ratio: (path != Path::KernelToKernel && base > 0.0).then(|| med / base),
            };
            if opts.json {
                let mut v = serde_json::to_value(&r).map_err(|e| e.to_string())?;
                v["type"] = "bench-result".into();
                writeln!(out, "{v}").map_err(write_err)?;
            } else {
                let ratio = r.ratio.map_or(String::new(), |x| format!("  {x:.2}x veth"));
                let all = r.gbps.iter().map(|g| format!("{g:.2}")).collect::<Vec<_>>().join(" ");
                let conns = format!("{parallel} conn");
                writeln!(
                    out,
                    "  MTU {mtu:<5} {conns:<7} {:<50} {med:>7.2} Gbit/s{ratio}  (rounds: {all})",
                    path.label()
                )
                .map_err(write_err)?;
            }
            results.push(r);
        }
    }
    if !opts.load.is_zero() && conn_rate(opts, lab.name(), signals, out)? == BenchEnd::Interrupted {
        return Ok(BenchEnd::Interrupted);
    }
    lab.down().map_err(|e| e.to_string())?;
    Ok(BenchEnd::Done)
}

/// One connections-per-second figure: a server's completed rate per round,
/// and what closelab's memory held at its peak.
#[derive(Clone, Debug, Serialize)]
pub struct ConnFigure {
    pub server: &'static str,
    pub seconds: f64,
    pub conn_per_s: Vec<f64>,
    pub median_conn_per_s: f64,
    /// Median over the kernel server's median.
    pub ratio: Option<f64>,
    /// closelab's peak RSS (bytes) and TIME-WAIT entries in each round.
    pub peak_rss: Vec<u64>,
    pub peak_time_wait: Vec<u64>,
}

/// The load generator (`closelab load --max --closer server --concurrency
/// 256 --buffer 64k`) against closelab and against a kernel server in the
/// same lab, alternating, `rounds` times each.
fn conn_rate(opts: &BenchOptions, lab: &str, signals: &mut Signals, out: &mut dyn Write) -> Result<BenchEnd, String> {
    use crate::event::TcpState;
    use crate::load::{LoadSpec, Server};
    let spec = |server| LoadSpec {
        server,
        rate: None,
        concurrency: 256,
        duration: Some(opts.load),
        buffer: 64 << 10,
        ..LoadSpec::default()
    };
    let lo = crate::cmd::load::LoadOptions {
        spec: spec(Server::Closelab),
        lab: Some(lab.to_string()),
        json: true,
        redraw: false,
        plot: None,
        story: None,
        seed: opts.seed,
    };
    let servers = [(Server::Kernel, "kernel"), (Server::Closelab, "closelab")];
    let mut rates = vec![Vec::new(); 2];
    let mut rss = vec![Vec::new(); 2];
    let mut tw = vec![Vec::new(); 2];
    for _ in 0..opts.rounds {
        for (i, &(server, _)) in servers.iter().enumerate() {
            let mut quiet = std::io::sink();
            let r = crate::cmd::load::run_one(&spec(server), &lo, signals, &mut quiet, None)?;
            if r.interrupted {
                return Ok(BenchEnd::Interrupted);
            }
            rates[i].push(r.rate());
            rss[i].push(r.samples.iter().map(|s| s.rss).max().unwrap_or(0));
            tw[i].push(r.peak(false, TcpState::TimeWait));
        }
    }
    let base = median(&rates[0]);
    for (i, &(server, name)) in servers.iter().enumerate() {
        let med = median(&rates[i]);
        let f = ConnFigure {
            server: name,
            seconds: opts.load.as_secs_f64(),
            conn_per_s: rates[i].clone(),
            median_conn_per_s: med,
            ratio: (server != Server::Kernel && base > 0.0).then(|| med / base),
            peak_rss: if server == Server::Closelab { rss[i].clone() } else { Vec::new() },
            peak_time_wait: tw[i].clone(),
        };
        if opts.json {
            let mut v = serde_json::to_value(&f).map_err(|e| e.to_string())?;
            v["type"] = "bench-conn-rate".into();
            writeln!(out, "{v}").map_err(write_err)?;
        } else {
            let ratio = f.ratio.map_or(String::new(), |x| format!("  {x:.2}x kernel"));
            let all = f.conn_per_s.iter().map(|g| format!("{g:.0}")).collect::<Vec<_>>().join(" ");
            let mem = match (f.peak_rss.iter().max(), f.peak_time_wait.iter().max()) {
                (Some(&m), Some(&t)) => format!(", closelab peak RSS {:.1} MB with {t} TIME-WAIT", m as f64 / 1e6),
                _ => String::new(),
            };
            let label = format!("connect/close, server {name} ({}s runs)", f.seconds);
            writeln!(out, "  {label:<64} {med:>8.0} conn/s{ratio}  (rounds: {all}{mem})").map_err(write_err)?;
        }
    }
    Ok(BenchEnd::Done)
}

fn write_err(e: io::Error) -> String {
    format!("writing output: {e}")
}

fn bytes_text(n: u64) -> String {
    match n {
        n if n >= 1 << 30 && n % (1 << 30) == 0 => format!("{} GiB", n >> 30),
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{} KiB", n >> 10),
        n => format!("{n} bytes"),
    }
}

/// The middle figure (mean of the middle two for an even count).
pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 { s[n / 2] } else { (s[n / 2 - 1] + s[n / 2]) / 2.0 }
}

/// Both veth ends and the TUN to `mtu` (the route to the endpoint follows
/// the TUN's MTU, so Linux's MSS does too).
fn set_mtu(a: &LabAddrs, mtu: u32) -> Result<(), String> {
    let m = mtu.to_string();
    for (ns, dev) in [(&a.ns_linux, &a.veth_linux), (&a.ns_closelab, &a.veth_closelab), (&a.ns_closelab, &a.tun)] {
        let o = lab::ip_command()
            .args(["-n", ns, "link", "set", "dev", dev, "mtu", &m])
            .output()
            .map_err(|e| format!("cannot run ip: {e}"))?;
        if !o.status.success() {
            return Err(format!(
                "cannot set MTU {mtu} on {dev} in {ns}: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ));
        }
    }
    Ok(())
}

/// One transfer's shape: the MTU, the server's port, the connections.
#[derive(Clone, Copy, Debug)]
struct Transfer {
    mtu: u32,
    port: u16,
    parallel: usize,
}

/// One transfer on one path: its duration in seconds, `None` on Ctrl-C.
fn measure(
    a: &LabAddrs,
    path: Path,
    t: Transfer,
    opts: &BenchOptions,
    signals: &mut Signals,
) -> Result<Option<f64>, String> {
    let Transfer { mtu, port, parallel } = t;
    let each = opts.size / parallel as u64;
    let abort = AtomicBool::new(false);
    let done = AtomicBool::new(false);
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let sending = path != Path::CloselabToKernel;
    let target = match path {
        Path::KernelToKernel => SocketAddr::new(IpAddr::V4(a.router), port),
        _ => SocketAddr::new(IpAddr::V4(a.closelab), port),
    };
    let (abort, done, ready_tx) = (&abort, &done, &ready_tx);
    std::thread::scope(move |s| {
        let client = s.spawn(move || {
            let r = (|| {
                crate::sys::netns::enter(&a.ns_linux).map_err(|e| e.to_string())?;
                wait_ready(&ready_rx, abort)?;
                parallel_transfer(target, each, parallel, sending, abort)
            })();
            done.store(true, Ordering::SeqCst);
            r
        });
        let server: Result<Option<()>, String> = if path == Path::KernelToKernel {
            let srv = s.spawn(move || {
                let r = (|| {
                    crate::sys::netns::enter(&a.ns_closelab).map_err(|e| e.to_string())?;
                    kernel_sink(SocketAddr::new(IpAddr::V4(a.router), port), parallel, ready_tx, abort)
                })();
                if r.is_err() {
                    abort.store(true, Ordering::SeqCst);
                }
                r
            });
            // The main thread watches for Ctrl-C while the kernel works.
            let mut interrupted = false;
            while !(srv.is_finished() && client.is_finished()) {
                if !interrupted && signals.interrupted() {
                    interrupted = true;
                    abort.store(true, Ordering::SeqCst);
                }
                std::thread::sleep(StdDuration::from_millis(10));
            }
            let r = srv.join().unwrap_or_else(|_| Err("the kernel server thread panicked".into()));
            if interrupted { Ok(None) } else { r.map(Some) }
        } else {
            // The endpoint runs on a scoped thread in closelab's namespace.
            let h = s.spawn(move || {
                crate::sys::netns::enter(&a.ns_closelab).map_err(|e| e.to_string())?;
                closelab_server(a, path, t, each, opts, signals, ready_tx, done)
            });
            let r = h.join().unwrap_or_else(|_| Err("the endpoint thread panicked".into()));
            if !matches!(r, Ok(Some(()))) {
                abort.store(true, Ordering::SeqCst);
            }
            r
        };
        let client = client.join().unwrap_or_else(|_| Err("the client thread panicked".into()));
        match server? {
            None => Ok(None),
            Some(()) => client.map(Some).map_err(|e| format!("{}, MTU {mtu}: {e}", path.label())),
        }
    })
}

/// Waits until the server side listens (or gave up).
fn wait_ready(ready: &mpsc::Receiver<()>, abort: &AtomicBool) -> Result<(), String> {
    for _ in 0..200 {
        if ready.recv_timeout(CHECK_EVERY).is_ok() {
            return Ok(());
        }
        if abort.load(Ordering::SeqCst) {
            return Err("aborted".into());
        }
    }
    Err("the server side did not start within 10 s".into())
}

/// `parallel` clients at once, each moving `each` bytes: the seconds from
/// before the first `connect()` to the last EOF.
fn parallel_transfer(
    target: SocketAddr,
    each: u64,
    parallel: usize,
    sending: bool,
    abort: &AtomicBool,
) -> Result<f64, String> {
    if parallel == 1 {
        return client_transfer(target, each, sending, abort);
    }
    let start = StdInstant::now();
    std::thread::scope(|s| {
        let clients: Vec<_> =
            (0..parallel).map(|_| s.spawn(move || client_transfer(target, each, sending, abort))).collect();
        let mut first_err = None;
        for (i, c) in clients.into_iter().enumerate() {
            let r = c.join().unwrap_or_else(|_| Err("a client thread panicked".into()));
            if let Err(e) = r {
                // One failure ends the others' waits too.
                abort.store(true, Ordering::SeqCst);
                first_err.get_or_insert(format!("connection {} of {parallel}: {e}", i + 1));
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(start.elapsed().as_secs_f64()),
        }
    })
}

/// The Linux client: connects, sends `size` bytes and half-closes, then
/// waits for EOF (`sending`), or reads until EOF and checks it got `size`
/// bytes. Returns the seconds from before `connect()` to EOF.
fn client_transfer(target: SocketAddr, size: u64, sending: bool, abort: &AtomicBool) -> Result<f64, String> {
    let start = StdInstant::now();
    let mut s = TcpStream::connect_timeout(&target, StdDuration::from_secs(5))
        .map_err(|e| format!("connecting to {target}: {e}"))?;
    s.set_read_timeout(Some(CHECK_EVERY)).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(CHECK_EVERY)).map_err(|e| e.to_string())?;
    let check = || -> Result<(), String> {
        if abort.load(Ordering::SeqCst) {
            return Err("aborted".into());
        }
        if start.elapsed() > TRANSFER_LIMIT {
            return Err(format!("not done after {} s", TRANSFER_LIMIT.as_secs()));
        }
        Ok(())
    };
    let mut buf = vec![0u8; 256 * 1024];
    if sending {
        let mut left = size;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            match s.write(&buf[..n]) {
                Ok(w) => left -= w as u64,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {
                    check()?
                }
                Err(e) => return Err(format!("sending: {e}")),
            }
        }
        s.shutdown(Shutdown::Write).map_err(|e| format!("shutdown: {e}"))?;
    }
    let mut got = 0u64;
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got += n as u64,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {
                check()?
            }
            Err(e) => return Err(format!("receiving after {got} bytes: {e}")),
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let want = if sending { 0 } else { size };
    if got != want {
        return Err(format!("received {got} bytes, expected {want}"));
    }
    Ok(secs)
}

/// The kernel baseline's server: accepts `parallel` connections, reads
/// each to EOF (a thread each) and closes it.
fn kernel_sink(bind: SocketAddr, parallel: usize, ready: &mpsc::Sender<()>, abort: &AtomicBool) -> Result<(), String> {
    let l = TcpListener::bind(bind).map_err(|e| format!("binding {bind}: {e}"))?;
    l.set_nonblocking(true).map_err(|e| e.to_string())?;
    let _ = ready.send(());
    let start = StdInstant::now();
    std::thread::scope(|s| {
        let mut readers = Vec::new();
        while readers.len() < parallel {
            match l.accept() {
                Ok((conn, _)) => readers.push(s.spawn(move || read_to_eof(conn, start, abort))),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if abort.load(Ordering::SeqCst) || start.elapsed() > TRANSFER_LIMIT {
                        abort.store(true, Ordering::SeqCst);
                        break;
                    }
                    std::thread::sleep(StdDuration::from_millis(1));
                }
                Err(e) => {
                    abort.store(true, Ordering::SeqCst);
                    return Err(format!("accept: {e}"));
                }
            }
        }
        let accepted = readers.len();
        for r in readers {
            r.join().unwrap_or_else(|_| Err("a kernel server thread panicked".into()))?;
        }
        if accepted < parallel { Err(format!("{accepted} of {parallel} connections arrived")) } else { Ok(()) }
    })
}

/// Reads a kernel connection until EOF, then closes it.
fn read_to_eof(mut s: TcpStream, start: StdInstant, abort: &AtomicBool) -> Result<(), String> {
    s.set_nonblocking(false).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(CHECK_EVERY)).map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {
                if abort.load(Ordering::SeqCst) || start.elapsed() > TRANSFER_LIMIT {
                    return Err("aborted".into());
                }
            }
            Err(e) => return Err(format!("kernel server: {e}")),
        }
    }
}

/// closelab's endpoint on the lab's TUN for one transfer; `Ok(None)` on
/// Ctrl-C. Stops when the client is done.
#[allow(clippy::too_many_arguments)]
fn closelab_server(
    a: &LabAddrs,
    path: Path,
    t: Transfer,
    each: u64,
    opts: &BenchOptions,
    signals: &mut Signals,
    ready: &mpsc::Sender<()>,
    done: &AtomicBool,
) -> Result<Option<()>, String> {
    let Transfer { mtu, port, .. } = t;
    let own = IpAddr::V4(a.closelab);
    let spec = TunSpec {
        name: a.tun.clone(),
        mtu: mtu as usize,
        peer_addrs: Vec::new(),
        own_addrs: vec![own],
        configure: false,
    };
    let tun = TunDevice::open(&spec).map_err(|e| e.to_string())?;
    lab::wait_link_up(&a.ns_closelab, tun.name(), lab::LINK_UP_TIMEOUT).map_err(|e| e.to_string())?;
    let cidr = crate::config::parse_cidr(&format!("{}/{}", a.closelab, a.prefix))?;
    let mut cfg = EndpointConfig::new(cidr);
    cfg.seed = opts.seed;
    cfg.mtu = mtu as usize;
    cfg.buffer = opts.buffer;
    let traced = path == Path::KernelToCloselabTraced;
    cfg.segment_events = traced;
    cfg.data_events = traced;
    cfg.capture = traced;
    if path == Path::CloselabToKernel {
        cfg.app = AppKind::Source(each as usize);
        cfg.policy = Policy { close: ClosePolicy::Active, close_after: None, rst_on_unread: false };
    } else {
        cfg.app = AppKind::Sink;
        cfg.policy = Policy { close: ClosePolicy::Passive, close_after: None, rst_on_unread: false };
    }
    let clock = Clock::new();
    let mut ep = Endpoint::new(cfg, clock.now())?;
    ep.listen(port);
    let _ = ready.send(());
    let mut driver = UntilDone(done);
    let outcome = if traced {
        let null = |what: &str| File::create("/dev/null").map_err(|e| format!("cannot open /dev/null for {what}: {e}"));
        let mut json = JsonSink::batched(BufWriter::with_capacity(64 * 1024, null("JSON")?));
        let epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let mut pcap = PcapSink::new(BufWriter::with_capacity(256 * 1024, null("pcap")?), epoch)
            .map_err(|e| format!("pcap: {e}"))?;
        let mut tee = crate::view::Tee(vec![&mut json, &mut pcap]);
        run::run(&mut ep, clock, &tun, signals, &mut tee, &mut driver, StopWhen::default())
    } else {
        run::run(&mut ep, clock, &tun, signals, &mut Nothing, &mut driver, StopWhen::default())
    };
    match outcome.map_err(|e| e.to_string())? {
        Outcome::Done => Ok(Some(())),
        Outcome::Interrupted => Ok(None),
    }
}

/// Stops the loop once the client is done.
struct UntilDone<'a>(&'a AtomicBool);

impl Driver for UntilDone<'_> {
    fn tick(&mut self, now: Instant, _ep: &mut Endpoint, _sink: &mut dyn Sink) -> io::Result<Tick> {
        if self.0.load(Ordering::SeqCst) {
            return Ok(Tick::Stop);
        }
        let every = smoltcp::time::Duration::from_millis(CHECK_EVERY.as_millis() as u64);
        Ok(Tick::Continue(Some(now + every)))
    }
}

/// The untraced runs' sink: state changes only, nobody reads them.
struct Nothing;

impl Sink for Nothing {
    fn event(&mut self, _ev: &crate::event::Event) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> BenchOptions {
        BenchOptions {
            size: 1 << 20,
            rounds: 3,
            mtus: vec![1500],
            parallel: vec![1, 8],
            buffer: 1 << 20,
            json: false,
            traced: true,
            seed: 1,
            name: None,
            load: Duration::from_secs(1),
        }
    }

    #[test]
    fn test_median() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }

    #[test]
    fn test_validate_bounds() {
        assert!(opts().validate().is_ok());
        let e = BenchOptions { size: 10, ..opts() }.validate().unwrap_err();
        assert_eq!(e, "--size must be 1k to 16G (got 10 bytes)");
        let e = BenchOptions { rounds: 0, ..opts() }.validate().unwrap_err();
        assert_eq!(e, "--rounds must be 1 to 15 (got 0)");
        let e = BenchOptions { mtus: vec![1500, 65000], ..opts() }.validate().unwrap_err();
        assert_eq!(e, "--mtu must be 1280 to 9000 (got 65000)");
        let e = BenchOptions { mtus: vec![], ..opts() }.validate().unwrap_err();
        assert_eq!(e, "--mtu needs at least one value");
        let e = BenchOptions { buffer: 100, ..opts() }.validate().unwrap_err();
        assert_eq!(e, "--buffer must be 4k to 64M (got 100 bytes)");
        let e = BenchOptions { parallel: vec![1, 65], ..opts() }.validate().unwrap_err();
        assert_eq!(e, "--parallel must be 1 to 64 connections (got 65)");
        let e = BenchOptions { load: Duration::from_secs(61), ..opts() }.validate().unwrap_err();
        assert_eq!(e, "--load must be at most 60s (got 61s)");
        let e = BenchOptions { parallel: vec![], ..opts() }.validate().unwrap_err();
        assert_eq!(e, "--parallel needs at least one value");
        let e = BenchOptions { size: 4096, parallel: vec![8], ..opts() }.validate().unwrap_err();
        assert_eq!(e, "--size 4096 split over 8 connections is under 1k each");
    }

    #[test]
    fn test_bytes_text() {
        assert_eq!(bytes_text(1 << 30), "1 GiB");
        assert_eq!(bytes_text(3 << 20), "3 MiB");
        assert_eq!(bytes_text(1536), "1536 bytes");
    }
}
