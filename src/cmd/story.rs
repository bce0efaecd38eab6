//! Running one story in a lab: a fresh closelab endpoint on the lab's TUN,
//! a Linux peer script in the Linux namespace, the sock_diag observer, all in
//! one loop and one event stream, until the story's end condition holds.
//! The demo and the scenarios are built on this.

use std::cell::RefCell;
use std::io;
use std::rc::Rc;
use std::time::Duration as StdDuration;

use smoltcp::time::{Duration, Instant};

use crate::endpoint::{Endpoint, EndpointConfig};
use crate::event::{ConnId, Event, EventKind, Side, Sink, TcpState};
use crate::sys::linger::{Linger, discard_in_flight, last_segment};
use crate::sys::observe::Observer;
use crate::sys::peer::{Peer, PeerMsg, PeerStep};
use crate::sys::run::{self, Clock, Driver, Outcome, Signals, StopWhen, Tick};
use crate::sys::tun::TunDevice;
use crate::view::Tee;
use crate::wire::FourTuple;

/// What a story's end condition can look at.
pub struct StoryView<'a> {
    pub events: &'a [Event],
    pub ep: &'a Endpoint,
    pub peer_done: bool,
    /// Linux sockets of the story (not listeners) that exist right now.
    pub linux_open: usize,
    /// Seconds since the story started.
    pub t: f64,
    /// The story's crawler, if it has one.
    pub crawler: Option<&'a crate::endpoint::crawl::Crawler>,
}

impl StoryView<'_> {
    /// Whether `side` has reached `state` (on any connection).
    pub fn reached(&self, side: Side, state: TcpState) -> bool {
        self.events.iter().any(|e| e.side == side && matches!(e.kind, EventKind::State { to, .. } if to == state))
    }

    /// Time `side` first reached `state`.
    pub fn reached_at(&self, side: Side, state: TcpState) -> Option<f64> {
        self.events.iter().find_map(|e| match e.kind {
            EventKind::State { to, .. } if e.side == side && to == state => Some(e.t),
            _ => None,
        })
    }

    /// closelab connections in `state` right now.
    pub fn closelab_in(&self, state: TcpState) -> usize {
        let mut last: std::collections::HashMap<Option<ConnId>, TcpState> = Default::default();
        for e in self.events {
            if let (Side::Closelab, EventKind::State { to, .. }) = (e.side, &e.kind) {
                last.insert(e.conn, *to);
            }
        }
        last.values().filter(|s| **s == state).count()
    }
}

/// A story: closelab's endpoint settings, the Linux script, when it is over.
pub struct Story {
    pub endpoint: EndpointConfig,
    pub port: u16,
    pub peer: Vec<PeerStep>,
    /// Ports whose Linux sockets are observed.
    pub observe_ports: Vec<u16>,
    pub done: Box<dyn Fn(&StoryView) -> bool>,
    /// Give up (error) after this long.
    pub timeout: StdDuration,
    /// closelab connects to a Linux listener once the Linux script has
    /// called listen(); `None`: closelab listens on `port`.
    pub connect: Option<Connect>,
    /// closelab runs this HTTP crawler from the start (against a server
    /// already running on the Linux host, e.g. from `lab serve`).
    pub crawl: Option<crate::endpoint::crawl::CrawlConfig>,
}

/// closelab's side as a client: where to, what to send first, how many
/// connections one after the other (the next once the previous one is gone),
/// from which local port.
#[derive(Clone, Debug)]
pub struct Connect {
    pub to: std::net::SocketAddr,
    pub send: usize,
    pub count: usize,
    pub local_port: Option<u16>,
}

/// How a story ended.
pub struct StoryResult {
    pub outcome: Outcome,
    pub events: Vec<Event>,
    /// closelab's connections at the end (for counts like TIME_WAIT 5).
    pub closelab_states: Vec<(ConnId, TcpState)>,
}

/// Records a copy of every event for the driver's end condition.
#[derive(Clone, Default)]
struct Recorder(Rc<RefCell<Vec<Event>>>);

impl Sink for Recorder {
    fn event(&mut self, ev: &Event) {
        self.0.borrow_mut().push(ev.clone());
    }
}

struct StoryDriver {
    peer: Peer,
    observer: Observer,
    recorder: Recorder,
    done: Box<dyn Fn(&StoryView) -> bool>,
    start: Instant,
    deadline: Instant,
    error: Option<String>,
    connect: Option<Connect>,
    /// The Linux listener is up: closelab may connect.
    listening: bool,
    /// closelab's connections opened so far.
    opened: Vec<ConnId>,
    /// Keeps recording after the end condition until both sides are quiet.
    linger: Linger,
    crawler: Option<crate::endpoint::crawl::Crawler>,
}

const OBSERVE_EVERY: Duration = Duration::from_millis(2);

impl Driver for StoryDriver {
    fn tick(&mut self, now: Instant, ep: &mut Endpoint, sink: &mut dyn Sink) -> io::Result<Tick> {
        let t = ep.secs(now);
        // `sink` already records into `self.recorder` (see run_story).
        let tee = sink;
        for m in self.peer.messages() {
            match m {
                PeerMsg::Action { action: crate::event::AppAction::Listen, .. } if self.connect.is_some() => {
                    tee.event(&Event {
                        t,
                        side: Side::Linux,
                        conn: None,
                        kind: EventKind::App { action: crate::event::AppAction::Listen },
                    });
                    self.listening = true;
                }
                PeerMsg::Action { local, remote, action } => {
                    let conn = match (local, remote) {
                        (Some(l), Some(r)) => ep.find(&FourTuple { local: r, remote: l }),
                        _ => None,
                    };
                    tee.event(&Event { t, side: Side::Linux, conn, kind: EventKind::App { action } });
                }
                PeerMsg::Note(text) => {
                    tee.event(&Event { t, side: Side::Linux, conn: None, kind: EventKind::Note { text } })
                }
                PeerMsg::Error(e) => self.error = Some(e),
                PeerMsg::Done => {}
            }
        }
        if let (true, Some(c)) = (self.listening, &self.connect) {
            let previous_gone = self.opened.last().is_none_or(|id| ep.state(*id).is_none());
            if self.opened.len() < c.count && previous_gone {
                match ep.connect_from(now, c.to, c.local_port, c.send) {
                    Ok(id) => self.opened.push(id),
                    Err(e) => self.error = Some(format!("closelab cannot connect to {}: {e}", c.to)),
                }
            }
        }
        if let Some(c) = self.crawler.as_mut() {
            c.tick(now, ep);
        }
        if let Err(e) = self.observer.poll(t, ep, tee) {
            self.error = Some(format!("observing the Linux side: {e}"));
        }
        if self.error.is_some() {
            return Ok(Tick::Stop);
        }
        let events = self.recorder.0.borrow();
        let linux_open = self.observer.sockets().filter(|s| s.state != TcpState::Listen).count();
        let view = StoryView {
            events: &events,
            ep,
            peer_done: self.peer.finished(),
            linux_open,
            t: (now - self.start).total_micros() as f64 / 1e6,
            crawler: self.crawler.as_ref(),
        };
        // Once the end condition has held, the story is over: it only
        // records until both sides are quiet.
        let done = self.linger.started() || (self.done)(&view);
        let last = last_segment(&events);
        drop(events);
        if done {
            let busy = !self.peer.finished() || ep.holds_packets() || self.observer.retransmitting();
            if self.linger.over(t, last, busy) || now >= self.deadline {
                return Ok(Tick::Stop);
            }
            return Ok(Tick::Continue(Some(now + OBSERVE_EVERY)));
        }
        if now >= self.deadline {
            self.error = Some("story did not finish in time".into());
            return Ok(Tick::Stop);
        }
        Ok(Tick::Continue(Some(now + OBSERVE_EVERY)))
    }
}

/// Runs a story on `tun` (already open in the lab's closelab namespace).
pub fn run_story(
    story: Story,
    ns_linux: &str,
    tun: &TunDevice,
    clock: Clock,
    signals: &mut Signals,
    sink: &mut dyn Sink,
) -> Result<StoryResult, String> {
    let observer = Observer::new(ns_linux, &story.observe_ports)?;
    let start = clock.now();
    let linger = Linger::new(story.endpoint.slow);
    let mut ep = Endpoint::new(story.endpoint, start)?;
    if story.connect.is_none() && story.crawl.is_none() {
        ep.listen(story.port);
    }
    let peer = Peer::spawn(ns_linux, story.peer, story.timeout);
    let recorder = Recorder::default();
    let mut driver = StoryDriver {
        peer,
        observer,
        recorder: recorder.clone(),
        done: story.done,
        start,
        deadline: start + Duration::from_micros(story.timeout.as_micros() as u64),
        error: None,
        connect: story.connect,
        listening: false,
        opened: Vec::new(),
        linger,
        crawler: story.crawl.map(crate::endpoint::crawl::Crawler::new),
    };
    let outcome = {
        let mut rec = recorder.clone();
        let mut tee = Tee(vec![sink, &mut rec]);
        let outcome = run::run(&mut ep, clock, tun, signals, &mut tee, &mut driver, StopWhen::default())
            .map_err(|e| e.to_string())?;
        // What is still on its way is written down, not carried into the
        // next story; Linux events held for their connection come out too.
        discard_in_flight(tun, &mut ep, clock.now(), &mut tee);
        driver.observer.flush(&ep, &mut tee);
        outcome
    };
    if let Some(e) = driver.error.take() {
        return Err(e);
    }
    let now = clock.now();
    let closelab_states = ep.connections(now).into_iter().map(|c| (c.id, c.state)).collect();
    let events = recorder.0.borrow().clone();
    Ok(StoryResult { outcome, events, closelab_states })
}

/// Opens the lab's persistent TUN from inside its closelab namespace (the
/// fd keeps working from any thread) without configuring it: the lab did.
pub fn open_lab_tun(addrs: &crate::sys::lab::LabAddrs) -> Result<TunDevice, String> {
    let spec = crate::sys::tun::TunSpec {
        name: addrs.tun.clone(),
        mtu: 1500,
        peer_addrs: vec![],
        own_addrs: vec![],
        configure: false,
    };
    let tun = crate::sys::netns::in_netns(&addrs.ns_closelab, move || TunDevice::open(&spec))
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    // Until the kernel has activated the TUN's qdisc (after attaching), a
    // segment forwarded to it is dropped: the first SYN would wait 1 s.
    crate::sys::lab::wait_link_up(&addrs.ns_closelab, &addrs.tun, crate::sys::lab::LINK_UP_TIMEOUT)
        .map_err(|e| e.to_string())?;
    Ok(tun)
}

/// closelab's endpoint settings in a lab: its address, the lab router as
/// gateway.
pub fn lab_endpoint(addrs: &crate::sys::lab::LabAddrs) -> EndpointConfig {
    let cidr =
        crate::config::parse_cidr(&format!("{}/{}", addrs.closelab, addrs.prefix)).expect("lab address is valid");
    let mut cfg = EndpointConfig::new(cidr);
    cfg.gateways = vec![std::net::IpAddr::V4(addrs.router)];
    cfg
}
