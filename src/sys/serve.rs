//! `closelab listen` and `closelab connect`: open the TUN device (inside a
//! lab's namespace if asked), run the endpoint on it, write the timeline /
//! JSON lines / pcap, and print the summary on exit.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

use crate::endpoint::{Endpoint, EndpointConfig};
use crate::event::{Event, EventKind, Side, Sink};
use crate::sys::control::{BindError, Control, Target};
use crate::sys::run::{self, Clock, ConnectPlan, Connector, Driver, Idle, Outcome, Signals, StopWhen};
use crate::sys::tun::{TunDevice, TunSpec};
use crate::view::json::JsonSink;
use crate::view::text::TextSink;
use crate::view::{Filter, PcapSink, SummarySink, Tee, TraceLevel};

/// What the endpoint does on its own.
#[derive(Clone, Debug)]
pub enum Mode {
    Listen { port: u16 },
    Connect(ConnectPlan),
}

/// Where the event stream goes.
#[derive(Clone, Debug, Default)]
pub struct Output {
    pub json: bool,
    /// What the main output shows; the summary is always printed.
    pub trace: TraceLevel,
    pub pcap: Option<PathBuf>,
}

/// Everything `listen`/`connect` need, already validated.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    pub endpoint: EndpointConfig,
    pub tun: TunSpec,
    /// Network namespace to enter before opening the TUN (a lab's).
    pub netns: Option<String>,
    pub mode: Mode,
    pub stop: StopWhen,
    pub output: Output,
    /// Serve a control socket for `closelab ss` and live close/abort/
    /// shutdown, found by this TUN or lab name.
    pub control: Option<Target>,
}

/// Runs until done or interrupted. Errors are one line naming the cause.
pub fn serve(mut opts: ServeOptions, signals: &mut Signals, out: &mut dyn Write) -> Result<Outcome, String> {
    if let Some(ns) = &opts.netns {
        crate::sys::netns::enter(ns).map_err(|e| e.to_string())?;
    }
    let epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let mut pcap = match &opts.output.pcap {
        Some(path) => {
            let f = File::create(path)
                .map_err(|e| format!("cannot create pcap file {}: {}", path.display(), io_reason(&e)))?;
            Some(
                PcapSink::new(BufWriter::new(f), epoch)
                    .map_err(|e| format!("writing pcap file {}: {e}", path.display()))?,
            )
        }
        None => None,
    };
    let tun = TunDevice::open(&opts.tun).map_err(|e| e.to_string())?;
    // After the TUN: a second endpoint on the same TUN is told so by the
    // TUN itself. Without /run/closelab/ctl (not root) the endpoint still
    // runs, and says what is missing.
    let (mut control, control_note) = match &opts.control {
        None => (None, None),
        Some(target) => match Control::bind(target) {
            Ok(c) => {
                let note = format!("control socket: {}", c.path().display());
                (Some(c), Some(note))
            }
            Err(e @ BindError::Busy { .. }) => return Err(e.to_string()),
            Err(e) => (
                None,
                Some(format!(
                    "control socket unavailable ({e}): closelab ss and live close will not reach this endpoint"
                )),
            ),
        },
    };
    if let Some(ns) = &opts.netns {
        // A lab's TUN only transmits once the kernel has activated it after
        // the attach; until then the first SYN's answer would be dropped.
        crate::sys::lab::wait_link_up(ns, tun.name(), crate::sys::lab::LINK_UP_TIMEOUT).map_err(|e| e.to_string())?;
    }
    let clock = Clock::new();
    opts.endpoint.capture = opts.output.pcap.is_some();
    // Nothing is formatted, or even built, per segment unless shown.
    let segments = opts.output.trace == TraceLevel::Segments;
    opts.endpoint.segment_events &= segments;
    opts.endpoint.data_events &= segments;
    let mut ep = Endpoint::new(opts.endpoint.clone(), clock.now());
    let mut driver: Box<dyn Driver> = match &opts.mode {
        Mode::Listen { port } => {
            ep.listen(*port);
            Box::new(Idle)
        }
        Mode::Connect(plan) => Box::new(Connector::new(plan.clone(), opts.stop.finished.is_none())),
    };
    let mut summary = SummarySink::new(Side::Closelab);
    let started = format!(
        "closelab on {} ({}): {}",
        tun.name(),
        opts.endpoint.addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", "),
        match &opts.mode {
            Mode::Listen { port } => format!(
                "listening on port {port}, app {}, close {}",
                opts.endpoint.app,
                format!("{:?}", opts.endpoint.policy.close).to_lowercase()
            ),
            Mode::Connect(p) => format!("connecting to {} ({} connection(s))", p.remote, p.count),
        }
    );
    let note = Event { t: 0.0, side: Side::Closelab, conn: None, kind: EventKind::Note { text: started } };
    // Written in batches: the run loop flushes before it waits, so a live
    // timeline is current whenever the endpoint is idle.
    let buffered = BufWriter::with_capacity(64 * 1024, &mut *out);
    let mut main: Box<dyn MainOutput + '_> =
        if opts.output.json { Box::new(JsonSink::batched(buffered)) } else { Box::new(TextSink::batched(buffered)) };
    main.event(&note);
    if let Some(text) = control_note {
        main.event(&Event { t: 0.0, side: Side::Closelab, conn: None, kind: EventKind::Note { text } });
    }
    main.flush();
    let outcome = {
        let mut shown = Filter { level: opts.output.trace, inner: main.as_sink() };
        let mut sinks: Vec<&mut dyn Sink> = vec![&mut shown, &mut summary];
        if let Some(p) = pcap.as_mut() {
            sinks.push(p);
        }
        let mut tee = Tee(sinks);
        run::run_with(&mut ep, clock, &tun, signals, &mut tee, driver.as_mut(), opts.stop.clone(), control.as_mut())
    };
    main.summary(&summary.summary);
    if let Some(e) = main.error() {
        return Err(format!("writing output: {e}"));
    }
    if let Some(p) = pcap.as_mut() {
        p.finish().map_err(|e| format!("writing pcap file: {e}"))?;
    }
    outcome.map_err(|e| e.to_string())
}

/// The main output (text or JSON) with its summary line and error.
trait MainOutput: Sink {
    fn as_sink(&mut self) -> &mut dyn Sink;
    fn summary(&mut self, s: &crate::event::Summary);
    fn error(&self) -> Option<&io::Error>;
}

impl<W: Write> MainOutput for TextSink<W> {
    fn as_sink(&mut self) -> &mut dyn Sink {
        self
    }
    fn summary(&mut self, s: &crate::event::Summary) {
        TextSink::summary(self, s)
    }
    fn error(&self) -> Option<&io::Error> {
        TextSink::error(self)
    }
}

impl<W: Write> MainOutput for JsonSink<W> {
    fn as_sink(&mut self) -> &mut dyn Sink {
        self
    }
    fn summary(&mut self, s: &crate::event::Summary) {
        JsonSink::summary(self, s, Side::Closelab)
    }
    fn error(&self) -> Option<&io::Error> {
        JsonSink::error(self)
    }
}

/// An I/O error's cause in lowercase, without Rust's "(os error N)".
fn io_reason(e: &io::Error) -> String {
    let s = e.to_string();
    let s = match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    };
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().collect::<String>() + c.as_str(),
        None => s,
    }
}
