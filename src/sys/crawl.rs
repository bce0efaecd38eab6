//! `closelab connect --app get:…`: the crawler as a driver of the mio loop.
//! All decisions are in the sans-IO [`Crawler`]; this only hands it the
//! clock's `now` and decides when the run is over.

use std::io;

use smoltcp::time::Instant;

use crate::endpoint::Endpoint;
use crate::endpoint::crawl::{CrawlTick, Crawler};
use crate::event::Sink;
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
}

impl CrawlDriver {
    pub fn new(crawler: Crawler, stop_when_done: bool) -> CrawlDriver {
        CrawlDriver { crawler, stop_when_done, told: false }
    }
}

impl Driver for CrawlDriver {
    fn tick(&mut self, now: Instant, ep: &mut Endpoint, _sink: &mut dyn Sink) -> io::Result<Tick> {
        match self.crawler.tick(now, ep) {
            CrawlTick::Continue(at) => Ok(Tick::Continue(at)),
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
                    Ok(Tick::Stop)
                } else {
                    Ok(Tick::Continue(None))
                }
            }
        }
    }
}
