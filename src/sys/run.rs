//! The mio loop: moves packets between the TUN device and the sans-IO
//! endpoint, feeds it a monotonic clock, and stops on Ctrl-C (SIGINT/SIGTERM
//! through a signalfd registered with mio, so a signal is just another
//! event and the loop exits through the normal path, dropping what it owns).

use std::io;
use std::net::SocketAddr;
use std::time::Duration as StdDuration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use smoltcp::time::Instant;

use crate::endpoint::Endpoint;
use std::collections::VecDeque;

use crate::event::{Event, EventKind, Side, Sink};
use crate::sys::control::Control;
pub use crate::sys::signals::Signals;
use crate::sys::tun::TunDevice;

const TUN: Token = Token(0);
const SIGNAL: Token = Token(1);
const CONTROL: Token = Token(2);

/// A monotonic clock in smoltcp's `Instant` (which, read with
/// `Instant::now()`, would be the wall clock).
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    start: std::time::Instant,
}

impl Clock {
    pub fn new() -> Clock {
        Clock { start: std::time::Instant::now() }
    }

    pub fn now(&self) -> Instant {
        Instant::from_micros(self.start.elapsed().as_micros() as i64)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

/// Something the loop calls every iteration besides the TUN: opening
/// connections, a Linux peer, an observer, a story's end condition.
pub trait Driver {
    /// Does its work for `now`; returns when it wants to be called again at
    /// the latest, or that the run is over.
    fn tick(&mut self, now: Instant, ep: &mut Endpoint, sink: &mut dyn Sink) -> io::Result<Tick>;
}

/// What a driver wants next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tick {
    Continue(Option<Instant>),
    Stop,
}

/// A driver that does nothing (plain `listen`).
pub struct Idle;

impl Driver for Idle {
    fn tick(&mut self, _now: Instant, _ep: &mut Endpoint, _sink: &mut dyn Sink) -> io::Result<Tick> {
        Ok(Tick::Continue(None))
    }
}

/// Connections the loop opens by itself (`closelab connect`), one after the
/// other: the next opens when the previous one is gone or in TIME-WAIT.
#[derive(Clone, Debug)]
pub struct ConnectPlan {
    pub remote: SocketAddr,
    pub send: usize,
    pub count: u64,
}

/// [`ConnectPlan`] as a driver. Stops once every connection it opened is
/// gone from the table.
pub struct Connector {
    plan: ConnectPlan,
    opened: Vec<crate::event::ConnId>,
    /// Stop when all are done (false when `--exit-after` decides).
    stop_when_done: bool,
}

impl Connector {
    pub fn new(plan: ConnectPlan, stop_when_done: bool) -> Connector {
        Connector { plan, opened: Vec::new(), stop_when_done }
    }
}

impl Driver for Connector {
    fn tick(&mut self, now: Instant, ep: &mut Endpoint, _sink: &mut dyn Sink) -> io::Result<Tick> {
        let idle = match self.opened.last() {
            None => true,
            Some(id) => matches!(ep.state(*id), None | Some(crate::event::TcpState::TimeWait)),
        };
        if idle && (self.opened.len() as u64) < self.plan.count {
            let id = ep
                .connect(now, self.plan.remote, self.plan.send)
                .map_err(|e| io::Error::other(format!("connect to {}: {e}", self.plan.remote)))?;
            self.opened.push(id);
        }
        let all_done =
            self.opened.len() as u64 >= self.plan.count && self.opened.iter().all(|id| ep.state(*id).is_none());
        Ok(if all_done && self.stop_when_done { Tick::Stop } else { Tick::Continue(None) })
    }
}

/// When the loop stops by itself.
#[derive(Clone, Debug, Default)]
pub struct StopWhen {
    /// Exit once this many connections are completely finished.
    pub finished: Option<u64>,
}

/// How the loop ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Done,
    Interrupted,
}

/// Runs the endpoint on the TUN device until a stop condition, the driver
/// says stop, or a signal.
#[allow(clippy::too_many_arguments)]
pub fn run(
    ep: &mut Endpoint,
    clock: Clock,
    tun: &TunDevice,
    signals: &mut Signals,
    sink: &mut dyn Sink,
    driver: &mut dyn Driver,
    stop: StopWhen,
) -> io::Result<Outcome> {
    run_with(ep, clock, tun, signals, sink, driver, stop, None)
}

/// [`run`], also answering requests on a control socket (`closelab ss`,
/// `closelab close N`) between packets.
#[allow(clippy::too_many_arguments)]
pub fn run_with(
    ep: &mut Endpoint,
    clock: Clock,
    tun: &TunDevice,
    signals: &mut Signals,
    sink: &mut dyn Sink,
    driver: &mut dyn Driver,
    stop: StopWhen,
    control: Option<&mut Control>,
) -> io::Result<Outcome> {
    run_counting(ep, clock, tun, signals, sink, driver, stop, control, 0)
}

/// The loop once more after a signal ended it (a graceful stop closing the
/// connections): only a further signal interrupts it.
pub fn run_after_signal(
    ep: &mut Endpoint,
    clock: Clock,
    tun: &TunDevice,
    signals: &mut Signals,
    sink: &mut dyn Sink,
    driver: &mut dyn Driver,
) -> io::Result<Outcome> {
    let seen = signals.count();
    run_counting(ep, clock, tun, signals, sink, driver, StopWhen::default(), None, seen)
}

/// [`run_with`], ignoring the first `seen` signals at the start.
#[allow(clippy::too_many_arguments)]
fn run_counting(
    ep: &mut Endpoint,
    clock: Clock,
    tun: &TunDevice,
    signals: &mut Signals,
    sink: &mut dyn Sink,
    driver: &mut dyn Driver,
    stop: StopWhen,
    control: Option<&mut Control>,
    seen: u32,
) -> io::Result<Outcome> {
    let mut poll = Poll::new()?;
    let tun_fd = tun.raw_fd();
    poll.registry().register(&mut SourceFd(&tun_fd), TUN, Interest::READABLE)?;
    let sig_fd = signals.raw_fd();
    poll.registry().register(&mut SourceFd(&sig_fd), SIGNAL, Interest::READABLE)?;
    let ctl_fd = control.as_ref().map(|c| c.raw_fd());
    if let Some(fd) = &ctl_fd {
        poll.registry().register(&mut SourceFd(fd), CONTROL, Interest::READABLE)?;
    }
    let result = run_registered(ep, clock, tun, &mut poll, signals, sink, driver, stop, control, seen);
    // The fds outlive this loop (the demo reuses the TUN for every story).
    let _ = poll.registry().deregister(&mut SourceFd(&tun_fd));
    let _ = poll.registry().deregister(&mut SourceFd(&sig_fd));
    if let Some(fd) = &ctl_fd {
        let _ = poll.registry().deregister(&mut SourceFd(fd));
    }
    result
}

#[allow(clippy::too_many_arguments)]
fn run_registered(
    ep: &mut Endpoint,
    clock: Clock,
    tun: &TunDevice,
    poll: &mut Poll,
    signals: &mut Signals,
    sink: &mut dyn Sink,
    driver: &mut dyn Driver,
    stop: StopWhen,
    mut control: Option<&mut Control>,
    seen: u32,
) -> io::Result<Outcome> {
    let tun_fd = tun.raw_fd();
    // A signal during setup (taken by the watchdog) ends the run at once.
    if signals.interrupted() && signals.count() > seen {
        return Ok(Outcome::Interrupted);
    }
    let mut events = Events::with_capacity(64);
    let mut wire = Wire::new();
    let mut drops = DropWatch::new(tun, clock.now());
    loop {
        let now = clock.now();
        let more = wire.read_batch(tun, ep, now)?;
        ep.poll(now);
        let tick = driver.tick(now, ep, sink)?;
        wire.write_all(tun, ep)?;
        if let Some(interest) = wire.interest_change() {
            poll.registry().reregister(&mut SourceFd(&tun_fd), TUN, interest)?;
        }
        ep.drain_events(sink);
        drops.check(tun, ep, clock.now(), sink);
        // The batch is complete: write it out before waiting.
        sink.flush();
        if let Some(n) = stop.finished
            && ep.finished() >= n
        {
            return Ok(Outcome::Done);
        }
        let driver_at = match tick {
            Tick::Stop => return Ok(Outcome::Done),
            Tick::Continue(at) => at,
        };
        // Idle control clients are dropped on time, not when the next
        // request happens to come.
        let control_at = control.as_deref_mut().and_then(|c| {
            c.expire(now);
            c.poll_at()
        });
        let timeout = [ep.poll_at(), driver_at, control_at, drops.next_check()].into_iter().flatten().min().map(|at| {
            let now = clock.now();
            if at <= now { StdDuration::ZERO } else { StdDuration::from_micros((at - now).total_micros()) }
        });
        // Packets left unread: mio will not report the TUN readable again.
        let timeout = if more { Some(StdDuration::ZERO) } else { timeout };
        match poll.poll(&mut events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        for ev in events.iter() {
            if ev.token() == SIGNAL && signals.pending() {
                ep.drain_events(sink);
                sink.flush();
                return Ok(Outcome::Interrupted);
            }
            // What a request did (a close by hand) goes out at the top of
            // the loop like any other step.
            if let (CONTROL, Some(c)) = (ev.token(), control.as_deref_mut()) {
                c.serve(clock.now(), ep);
            }
        }
    }
}

/// Packets read per batch at most: bounds the time before the batch's
/// replies go out (and what is held in between).
const BATCH: usize = 256;

/// The packet path between the TUN and the endpoint: one buffer for reads,
/// a backlog for writes the TUN refused (it would block).
struct Wire {
    /// Large enough for any IP packet: nothing is truncated.
    buf: Vec<u8>,
    backlog: VecDeque<Vec<u8>>,
    want_write: bool,
}

impl Wire {
    fn new() -> Wire {
        Wire { buf: vec![0u8; 65536], backlog: VecDeque::new(), want_write: false }
    }

    /// Reads until the TUN has nothing more (edge-triggered mio reports a
    /// readable TUN once per arrival burst) or [`BATCH`] packets were read,
    /// as one endpoint batch: a burst is acknowledged once. `Ok(true)`:
    /// packets may be left, come back without waiting.
    fn read_batch(&mut self, tun: &TunDevice, ep: &mut Endpoint, now: Instant) -> io::Result<bool> {
        ep.begin_batch();
        let mut read = 0;
        let more = loop {
            if read == BATCH {
                break true;
            }
            match tun.recv(&mut self.buf) {
                Ok(Some(n)) => {
                    read += 1;
                    ep.receive(now, self.buf[..n].to_vec());
                }
                Ok(None) => break false,
                Err(e) => {
                    ep.end_batch(now);
                    return Err(io::Error::new(e.kind(), format!("reading from TUN device {}: {e}", tun.name())));
                }
            }
        };
        ep.end_batch(now);
        Ok(more)
    }

    /// Writes what the endpoint has to send, in order; what the TUN refuses
    /// waits in the backlog until it is writable.
    fn write_all(&mut self, tun: &TunDevice, ep: &mut Endpoint) -> io::Result<()> {
        let err = |e: io::Error| io::Error::new(e.kind(), format!("writing to TUN device {}: {e}", tun.name()));
        while let Some(p) = self.backlog.front() {
            if !tun.send(p).map_err(err)? {
                break;
            }
            self.backlog.pop_front();
        }
        while let Some(p) = ep.transmit() {
            if !(self.backlog.is_empty() && tun.send(&p).map_err(err)?) {
                self.backlog.push_back(p);
            }
        }
        Ok(())
    }

    /// The TUN's new mio interest if writability must now be watched (or no
    /// longer).
    fn interest_change(&mut self) -> Option<Interest> {
        let need_write = !self.backlog.is_empty();
        if need_write == self.want_write {
            return None;
        }
        self.want_write = need_write;
        Some(if need_write { Interest::READABLE | Interest::WRITABLE } else { Interest::READABLE })
    }
}

/// Watches the TUN's kernel queue drop counter and writes a note into the
/// timeline when it grew: those packets never reached closelab, so nothing
/// else in its output could show them.
struct DropWatch {
    next: Option<Instant>,
}

/// How often the counter is read (a procfs read costs a few microseconds).
const DROP_CHECK_EVERY: smoltcp::time::Duration = smoltcp::time::Duration::from_millis(200);

impl DropWatch {
    fn new(tun: &TunDevice, now: Instant) -> DropWatch {
        let available = tun.dropped().is_some();
        DropWatch { next: available.then_some(now) }
    }

    fn next_check(&self) -> Option<Instant> {
        // Only while the loop is awake anyway would be cheaper, but then a
        // burst that ends in silence would never be reported.
        self.next
    }

    fn check(&mut self, tun: &TunDevice, ep: &Endpoint, now: Instant, sink: &mut dyn Sink) {
        let Some(next) = self.next else { return };
        if now < next {
            return;
        }
        self.next = Some(now + DROP_CHECK_EVERY);
        if let Some(text) = tun.new_drops_note() {
            sink.event(&Event { t: ep.secs(now), side: Side::Closelab, conn: None, kind: EventKind::Note { text } });
        }
    }
}
