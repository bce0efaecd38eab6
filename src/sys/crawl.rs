//! `closelab connect --app get:…`: the crawler as a driver of the mio loop.
//! All decisions are in the sans-IO [`Crawler`]; this only hands it the
//! clock's `now` and decides when the run is over.

use std::io;

use smoltcp::time::{Duration, Instant};

use crate::endpoint::Endpoint;
use crate::endpoint::crawl::{CrawlTick, Crawler};
use crate::event::Sink;
use crate::sys::observe::Observer;
use crate::sys::run::{Driver, Tick};

/// Runs a [`Crawler`]. Once every URL was tried it stops when closelab's
/// connections are all gone (TIME-WAIT included), unless connections were
/// leaked: those stay in CLOSE-WAIT for as long as the process lives, which
/// is the point of the leak, so the run goes on until Ctrl-C (or
/// `--exit-after`).
pub struct CrawlDriver {
    pub crawler: Crawler,
    stop_when_done: bool,
    told: bool,
    /// The server's sockets in a lab's Linux namespace.
    observer: Option<Observer>,
}

/// How often the server's sockets are looked at (a sock_diag lookup per
/// known socket, a full dump every few of them).
const OBSERVE_EVERY: Duration = Duration::from_millis(5);

impl CrawlDriver {
    pub fn new(crawler: Crawler, stop_when_done: bool, observer: Option<Observer>) -> CrawlDriver {
        CrawlDriver { crawler, stop_when_done, told: false, observer }
    }
}

impl Driver for CrawlDriver {
    fn tick(&mut self, now: Instant, ep: &mut Endpoint, sink: &mut dyn Sink) -> io::Result<Tick> {
        let tick = self.crawler.tick(now, ep);
        let observe_at = match self.observer.as_mut() {
            Some(o) => {
                // The crawler's own events first, so the server's states are
                // matched to connections that are in the stream already.
                ep.drain_events(sink);
                o.poll(ep.secs(now), ep, sink).map_err(io::Error::other)?;
                Some(now + OBSERVE_EVERY)
            }
            None => None,
        };
        let soonest = |at: Option<Instant>| [at, observe_at].into_iter().flatten().min();
        match tick {
            CrawlTick::Continue(at) => Ok(Tick::Continue(soonest(at))),
            CrawlTick::Done => {
                let leaked = self.crawler.leaked().len();
                if leaked > 0 && !self.told {
                    self.told = true;
                    ep.note(
                        now,
                        None,
                        format!(
                            "crawler: {leaked} leaked connection(s) stay open (CLOSE-WAIT once the server closes) until closelab exits: Ctrl-C"
                        ),
                    );
                }
                if self.stop_when_done && leaked == 0 && ep.is_empty() {
                    if let Some(o) = self.observer.as_mut() {
                        o.flush(ep, sink);
                    }
                    Ok(Tick::Stop)
                } else {
                    Ok(Tick::Continue(soonest(None)))
                }
            }
        }
    }
}

/// After Ctrl-C: close every open connection (FIN), give the peer
/// [`GRACE`] to finish the close, then RST whatever is still open, so the
/// server is never left in FIN-WAIT-1 or ESTABLISHED towards an endpoint
/// that is gone. A second signal ends the grace at once (the run loop
/// returns; the caller then aborts).
pub struct GracefulStop {
    deadline: Option<Instant>,
}

/// How long the peer gets to answer our FINs after Ctrl-C.
pub const GRACE: Duration = Duration::from_secs(1);

impl GracefulStop {
    pub fn new() -> GracefulStop {
        GracefulStop { deadline: None }
    }
}

impl Default for GracefulStop {
    fn default() -> Self {
        GracefulStop::new()
    }
}

impl Driver for GracefulStop {
    fn tick(&mut self, now: Instant, ep: &mut Endpoint, _sink: &mut dyn Sink) -> io::Result<Tick> {
        let deadline = match self.deadline {
            Some(d) => d,
            None => {
                let n = ep.close_all(now);
                let open = ep.open_count();
                if open > 0 || n > 0 {
                    ep.note(
                        now,
                        None,
                        format!("interrupted: closing {n} connection(s) (FIN); RST for any still open after {GRACE}"),
                    );
                }
                *self.deadline.insert(now + GRACE)
            }
        };
        if ep.open_count() == 0 {
            return Ok(Tick::Stop);
        }
        if now >= deadline {
            let n = ep.abort_all(now);
            ep.note(now, None, format!("interrupted: {n} connection(s) still open after {GRACE}: RST"));
            return Ok(Tick::Stop);
        }
        Ok(Tick::Continue(Some(deadline)))
    }
}
