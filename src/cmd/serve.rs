//! `closelab listen` and `closelab connect`: open the TUN device (inside a
//! lab's namespace if asked), run the endpoint on it, write the timeline /
//! JSON lines / pcap, and print the summary on exit.

use crate::config::os_error_text;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

use crate::endpoint::{Endpoint, EndpointConfig};
use crate::event::{Event, EventKind, Side, Sink};
use crate::sys::control::{BindError, Control, Target};
use smoltcp::time::Instant;

use crate::sys::linger::{Linger, SegmentClock, discard_in_flight};
use crate::sys::observe::Observer;
use crate::sys::run::{self, Clock, ConnectPlan, Connector, Driver, Idle, Outcome, Signals, StopWhen, Tick};
use crate::sys::tun::{TunDevice, TunSpec};
use crate::view::json::JsonSink;
use crate::view::text::TextSink;
use crate::view::{Filter, PcapSink, SummarySink, Tee, TraceLevel};

/// What the endpoint does on its own.
#[derive(Clone, Debug)]
pub enum Mode {
    Listen {
        port: u16,
    },
    Connect(ConnectPlan),
    /// The HTTP crawler (`connect --app get:…`).
    Crawl(crate::endpoint::crawl::CrawlConfig),
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
    /// The lab's Linux namespace: the crawler observes the server's sockets
    /// there (NETLINK_SOCK_DIAG), so both ends are in the timeline.
    pub linux_ns: Option<String>,
    pub mode: Mode,
    pub stop: StopWhen,
    pub output: Output,
    /// Serve a control socket for `closelab ss` and live close/abort/
    /// shutdown, found by this TUN or lab name.
    pub control: Option<Target>,
}

/// Runs until done or interrupted. Errors are one line naming the cause.
pub fn serve(mut opts: ServeOptions, signals: &mut Signals, out: &mut dyn Write) -> Result<Outcome, String> {
    // Before entering closelab's namespace (either way works: the observer
    // enters the Linux one on a thread of its own).
    // (The crawler observes the Linux side itself.)
    let observed_port = match &opts.mode {
        Mode::Listen { port } => Some(*port),
        Mode::Connect(plan) => Some(plan.remote.port()),
        _ => None,
    };
    let mut observer = match (&opts.linux_ns, observed_port) {
        (Some(ns), Some(port)) => {
            Some(Observer::new(ns, &[port]).map_err(|e| format!("observing the Linux side in {ns}: {e}"))?)
        }
        _ => None,
    };
    if let Some(ns) = &opts.netns {
        crate::sys::netns::enter(ns).map_err(|e| e.to_string())?;
    }
    let epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let mut pcap = match &opts.output.pcap {
        Some(path) => {
            let f = File::create(path)
                .map_err(|e| format!("cannot create pcap file {}: {}", path.display(), os_error_text(&e)))?;
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
    let mut ep = Endpoint::new(opts.endpoint.clone(), clock.now())?;
    let mut inner: Box<dyn Driver> = match &opts.mode {
        Mode::Listen { port } => {
            ep.listen(*port);
            Box::new(Idle)
        }
        Mode::Connect(plan) => Box::new(Connector::new(plan.clone(), opts.stop.finished.is_none())),
        Mode::Crawl(c) => {
            let observer = match &opts.linux_ns {
                Some(ns) => Some(crate::sys::observe::Observer::new(ns, &[c.remote.port()])?),
                None => None,
            };
            Box::new(crate::sys::crawl::CrawlDriver::new(
                crate::endpoint::crawl::Crawler::new(c.clone()),
                opts.stop.finished.is_none(),
                observer,
            ))
        }
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
            Mode::Connect(p) if p.count == 1 => format!("connecting to {} (1 connection)", p.remote),
            Mode::Connect(p) => format!("connecting to {} ({} connections, one after the other)", p.remote, p.count),
            Mode::Crawl(c) => format!(
                "crawling http://{}: {} URL(s), pool {}, {}, on error {}, budget {} connections",
                c.remote,
                c.paths.len(),
                c.pool,
                c.mode.name(),
                format!("{:?}", c.on_error).to_lowercase(),
                c.budget
            ),
        }
    );
    let note = Event { t: 0.0, side: Side::Closelab, conn: None, kind: EventKind::Note { text: started } };
    // Written in batches: the run loop flushes before it waits, so a live
    // timeline is current whenever the endpoint is idle.
    let buffered = BufWriter::with_capacity(64 * 1024, &mut *out);
    let mut main: Box<dyn MainOutput + '_> =
        if opts.output.json { Box::new(JsonSink::batched(buffered)) } else { Box::new(TextSink::batched(buffered)) };
    main.event(&note);
    for text in control_note.into_iter() {
        main.event(&Event { t: 0.0, side: Side::Closelab, conn: None, kind: EventKind::Note { text } });
    }
    main.flush();
    let last_segment = SegmentClock::default();
    let outcome = {
        let mut last = last_segment.clone();
        let mut shown = Filter { level: opts.output.trace, inner: main.as_sink() };
        let mut sinks: Vec<&mut dyn Sink> = vec![&mut shown, &mut summary, &mut last];
        if let Some(p) = pcap.as_mut() {
            sinks.push(p);
        }
        let mut tee = Tee(sinks);
        let mut driver = Observing { inner: inner.as_mut(), observer: observer.as_mut(), error: None };
        let mut outcome =
            run::run_with(&mut ep, clock, &tun, signals, &mut tee, &mut driver, opts.stop.clone(), control.as_mut());
        if let Some(e) = driver.error.take() {
            outcome = Err(io::Error::other(e));
        }
        if matches!(opts.mode, Mode::Crawl(_)) && matches!(outcome, Ok(Outcome::Interrupted)) {
            // The crawler's connections are closed, not dropped: a server
            // must not be left retransmitting to a vanished client.
            let mut stop = crate::sys::crawl::GracefulStop::new();
            let r = run::run_after_signal(&mut ep, clock, &tun, signals, &mut tee, &mut stop);
            if !matches!(r, Ok(Outcome::Done)) {
                // A second signal: RST at once.
                ep.abort_all(clock.now());
                let _ = run::run_after_signal(&mut ep, clock, &tun, signals, &mut tee, &mut Flush);
            }
        }
        if matches!(outcome, Ok(Outcome::Done)) {
            // Done by its own rule: record until both sides are quiet.
            let mut idle = Idle;
            let mut linger = Lingering {
                run: Observing { inner: &mut idle, observer: observer.as_mut(), error: None },
                linger: Linger::new(opts.endpoint.slow),
                last: last_segment,
            };
            outcome = run::run_with(&mut ep, clock, &tun, signals, &mut tee, &mut linger, StopWhen::default(), None);
        }
        // Whatever is still on its way is written down, not lost silently.
        discard_in_flight(&tun, &mut ep, clock.now(), &mut tee);
        if let Some(text) = ep.time_wait_report() {
            ep.note(clock.now(), None, text);
            ep.drain_events(&mut tee);
        }
        if let Some(o) = observer.as_mut() {
            o.flush(&ep, &mut tee);
        }
        if let Some(text) = tun.new_drops_note() {
            ep.note(clock.now(), None, text);
            ep.drain_events(&mut tee);
        }
        outcome
    };
    if let Some(n) = tun.dropped().filter(|n| *n > 0) {
        summary.summary.counted.insert("packets dropped on the TUN's kernel queue".into(), n);
    }
    summary.summary.counted.extend(ep.counted());
    main.summary(&summary.summary);
    if let Some(e) = main.error() {
        return Err(format!("writing output: {e}"));
    }
    if let Some(p) = pcap.as_mut() {
        p.finish().map_err(|e| format!("writing pcap file: {e}"))?;
    }
    outcome.map_err(|e| e.to_string())
}

/// How often the Linux side is looked at (as in the demo).
const OBSERVE_EVERY: smoltcp::time::Duration = smoltcp::time::Duration::from_millis(2);

/// A driver plus, in a lab, the Linux side's observer.
struct Observing<'a> {
    inner: &'a mut dyn Driver,
    observer: Option<&'a mut Observer>,
    error: Option<String>,
}

impl Driver for Observing<'_> {
    fn tick(&mut self, now: Instant, ep: &mut Endpoint, sink: &mut dyn Sink) -> io::Result<Tick> {
        let tick = self.inner.tick(now, ep, sink)?;
        let Some(o) = self.observer.as_deref_mut() else { return Ok(tick) };
        if let Err(e) = o.poll(ep.secs(now), ep, sink) {
            self.error = Some(format!("observing the Linux side: {e}"));
            return Ok(Tick::Stop);
        }
        Ok(match tick {
            Tick::Stop => Tick::Stop,
            Tick::Continue(at) => {
                let next = now + OBSERVE_EVERY;
                Tick::Continue(Some(at.map_or(next, |a| a.min(next))))
            }
        })
    }
}

/// After the run: keeps it going (observer included) until both sides are
/// quiet.
struct Lingering<'a> {
    run: Observing<'a>,
    linger: Linger,
    last: SegmentClock,
}

impl Driver for Lingering<'_> {
    fn tick(&mut self, now: Instant, ep: &mut Endpoint, sink: &mut dyn Sink) -> io::Result<Tick> {
        if self.run.tick(now, ep, sink)? == Tick::Stop {
            return Ok(Tick::Stop);
        }
        let busy = ep.holds_packets() || self.run.observer.as_deref().is_some_and(|o| o.retransmitting());
        if self.linger.over(ep.secs(now), self.last.0.get(), busy) {
            return Ok(Tick::Stop);
        }
        Ok(Tick::Continue(Some(now + OBSERVE_EVERY)))
    }
}

/// A driver that stops at once: one loop pass writes what is queued.
struct Flush;

impl Driver for Flush {
    fn tick(
        &mut self,
        _now: smoltcp::time::Instant,
        _ep: &mut Endpoint,
        _sink: &mut dyn Sink,
    ) -> io::Result<run::Tick> {
        Ok(run::Tick::Stop)
    }
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
