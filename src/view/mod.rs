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
/// once, or, [`batched`](Self::batched), only when told to ([`flush`](Self::flush):
/// the run loop does before it waits). The first I/O error (EPIPE when piped
/// into `head`, say) is kept and nothing is written after it; it is never a
/// panic. The text and JSON sinks write through it.
pub struct LineWriter<W: Write> {
    out: W,
    error: Option<std::io::Error>,
    batched: bool,
}

impl<W: Write> LineWriter<W> {
    pub fn new(out: W) -> LineWriter<W> {
        LineWriter { out, error: None, batched: false }
    }

    /// Lines are flushed only by [`flush`](Self::flush) (give it a
    /// `BufWriter`, so a batch is one write).
    pub fn batched(out: W) -> LineWriter<W> {
        LineWriter { out, error: None, batched: true }
    }

    /// Writes out what is buffered, keeping the first error.
    pub fn flush(&mut self) {
        if self.error.is_none()
            && let Err(e) = self.out.flush()
        {
            self.error = Some(e);
        }
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
            .and_then(|()| if self.batched { Ok(()) } else { self.out.flush() });
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

    fn flush(&mut self) {
        for s in self.0.iter_mut() {
            s.flush();
        }
    }
}

/// How much of the stream the main output shows (`--trace`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TraceLevel {
    /// Every event: segments, states, application calls, faults, notes.
    #[default]
    Segments,
    /// Everything but segments and application data (`app recv 1448`).
    States,
    /// Nothing per event: only the summary at exit.
    None,
}

impl TraceLevel {
    /// Whether an event of this kind is shown at this level.
    pub fn shows(self, kind: &EventKind) -> bool {
        match self {
            TraceLevel::Segments => true,
            TraceLevel::States => !matches!(
                kind,
                EventKind::Segment { .. }
                    | EventKind::App { action: crate::event::AppAction::Recv(_) | crate::event::AppAction::Send(_) }
            ),
            TraceLevel::None => false,
        }
    }
}

/// Passes on the events a [`TraceLevel`] shows (and their packets: a pcap
/// behind it sees what the timeline shows).
pub struct Filter<'a> {
    pub level: TraceLevel,
    pub inner: &'a mut dyn Sink,
}

impl Sink for Filter<'_> {
    fn event(&mut self, ev: &Event) {
        if self.level.shows(&ev.kind) {
            self.inner.event(ev);
        }
    }

    fn packet(&mut self, t: Secs, dir: Dir, raw: &[u8]) {
        if self.level == TraceLevel::Segments {
            self.inner.packet(t, dir, raw);
        }
    }

    fn flush(&mut self) {
        self.inner.flush();
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

    fn flush(&mut self) {
        if self.error.is_none()
            && let Err(e) = self.writer.flush()
        {
            self.error = Some(e);
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
