//! Views of the event stream: every rendering (timeline, JSON lines, pcap,
//! summary, ladder) is a [`Sink`] or a function of events. No view looks at
//! sockets or re-derives state from packets.
pub mod json;
pub mod ladder;
pub mod mermaid;
pub mod pcap;
pub mod ss;
pub mod svg;
pub mod text;
pub mod trace;
pub mod xml;

use std::collections::HashSet;
use std::io::Write;

use crate::event::{ConnId, Dir, Event, EventKind, Secs, Side, Sink, Summary, TcpState};

/// Writes whole lines to `W`, flushing each so a live timeline shows at
/// once. The first I/O error (EPIPE when piped into `head`, say) is kept and
/// nothing is written after it; it is never a panic. The text and JSON sinks
/// write through it.
pub struct LineWriter<W: Write> {
    out: W,
    error: Option<std::io::Error>,
}

impl<W: Write> LineWriter<W> {
    pub fn new(out: W) -> LineWriter<W> {
        LineWriter { out, error: None }
    }

    /// The first write error, if any.
    pub fn error(&self) -> Option<&std::io::Error> {
        self.error.as_ref()
    }

    pub fn write_line(&mut self, text: &str) {
        if self.error.is_some() {
            return;
        }
        let res = self
            .out
            .write_all(text.as_bytes())
            .and_then(|()| self.out.write_all(b"\n"))
            .and_then(|()| self.out.flush());
        if let Err(e) = res {
            self.error = Some(e);
        }
    }

    pub fn get_ref(&self) -> &W {
        &self.out
    }

    pub fn get_mut(&mut self) -> &mut W {
        &mut self.out
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

/// Sends every event to several sinks.
pub struct Tee<'a>(pub Vec<&'a mut dyn Sink>);

impl Sink for Tee<'_> {
    fn event(&mut self, ev: &Event) {
        for s in self.0.iter_mut() {
            s.event(ev);
        }
    }

    fn packet(&mut self, t: Secs, dir: Dir, raw: &[u8]) {
        for s in self.0.iter_mut() {
            s.packet(t, dir, raw);
        }
    }
}

/// Writes the raw bytes of every segment event to a pcap stream; time is the
/// run's clock plus `epoch` (so timestamps match the timeline).
pub struct PcapSink<W: Write> {
    writer: pcap::PcapWriter<W>,
    epoch: std::time::Duration,
    error: Option<std::io::Error>,
    pub packets: u64,
}

impl<W: Write> PcapSink<W> {
    pub fn new(w: W, epoch: std::time::Duration) -> std::io::Result<PcapSink<W>> {
        Ok(PcapSink { writer: pcap::PcapWriter::new(w)?, epoch, error: None, packets: 0 })
    }

    /// Restarts the clock: a new run whose `t` counts from 0 again starts
    /// at `epoch` (stories and scenario rounds each start at t = 0).
    pub fn set_epoch(&mut self, epoch: std::time::Duration) {
        self.epoch = epoch;
    }

    /// The first write error, if any.
    pub fn finish(&mut self) -> std::io::Result<()> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        self.writer.flush()
    }
}

impl<W: Write> Sink for PcapSink<W> {
    fn event(&mut self, _ev: &Event) {}

    fn packet(&mut self, t: Secs, _dir: Dir, raw: &[u8]) {
        if self.error.is_some() {
            return;
        }
        let at = self.epoch + std::time::Duration::from_secs_f64(t.max(0.0));
        match self.writer.packet(at, raw) {
            Ok(()) => self.packets += 1,
            Err(e) => self.error = Some(e),
        }
    }
}

/// Counts, incrementally, how many connections reached each state.
#[derive(Default)]
pub struct SummarySink {
    pub side: Option<Side>,
    seen: HashSet<ConnId>,
    seen_state: HashSet<(ConnId, TcpState)>,
    pub summary: Summary,
}

impl SummarySink {
    pub fn new(side: Side) -> SummarySink {
        SummarySink { side: Some(side), ..SummarySink::default() }
    }
}

impl Sink for SummarySink {
    fn event(&mut self, ev: &Event) {
        if self.side.is_some_and(|s| s != ev.side) {
            return;
        }
        if let (Some(c), EventKind::State { to, .. }) = (ev.conn, &ev.kind) {
            if self.seen.insert(c) {
                self.summary.connections += 1;
            }
            if self.seen_state.insert((c, *to)) {
                *self.summary.reached.entry(*to).or_insert(0) += 1;
            }
        }
    }
}
