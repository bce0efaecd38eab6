//! The TUN's kernel queue: packets the kernel queued for closelab and dropped
//! because closelab had not read them yet (the device's `tx_dropped`, what
//! `ip -s link` shows as TX dropped and `/sys/class/net/TUN/statistics/
//! tx_dropped` holds), and raising that queue's length.
//!
//! Read from `/proc/thread-self/net/dev`, which shows the network namespace
//! of the reading thread: `/sys/class/net` shows the namespace sysfs was
//! mounted in, which is not closelab's after `--lab` entered a namespace
//! with setns(2).

use std::fmt::Write as _;

use crate::event::{Event, EventKind, Side, Sink};

/// The queue length closelab gives its TUN (the kernel's default is 500:
/// a burst of 12,000 connects lost 76,262 packets with it).
pub const TXQUEUELEN: u32 = 10_000;

/// How often the counter is read (one small procfs read).
pub const CHECK_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// Sets the TUN's `txqueuelen` (`ip link set dev TUN txqueuelen N`, in the
/// calling thread's namespace). An error is returned as a note's text: the
/// endpoint still works with a shorter queue, and the drops are counted.
pub fn raise_txqueuelen(dev: &str, len: u32) -> Result<(), String> {
    let out = crate::sys::lab::ip_command()
        .args(["link", "set", "dev", dev, "txqueuelen", &len.to_string()])
        .output()
        .map_err(|e| format!("cannot run ip to set txqueuelen of {dev}: {e}"))?;
    if !out.status.success() {
        return Err(format!("cannot set txqueuelen {len} on {dev}: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(())
}

/// The transmit `drop` count of `dev` in a `/proc/net/dev` text.
pub fn parse_tx_dropped(text: &str, dev: &str) -> Option<u64> {
    text.lines().skip(2).find_map(|l| {
        let (name, rest) = l.split_once(':')?;
        if name.trim() != dev {
            return None;
        }
        // Receive: bytes packets errs drop fifo frame compressed multicast,
        // then Transmit: bytes packets errs drop …
        rest.split_whitespace().nth(11)?.parse().ok()
    })
}

/// `dev`'s transmit drops now, in the calling thread's namespace.
pub fn tx_dropped(dev: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/net/dev").ok()?;
    parse_tx_dropped(&text, dev)
}

/// Watches one TUN's drop counter: a note when it grew, the total for the
/// summary.
#[derive(Debug)]
pub struct TunDrops {
    dev: String,
    /// The count when closelab started (a lab's TUN may have dropped before).
    base: Option<u64>,
    last: u64,
    next: std::time::Instant,
    /// The queue length closelab set, if it could.
    queue: Option<u32>,
}

impl TunDrops {
    pub fn new(dev: &str, queue: Option<u32>) -> TunDrops {
        TunDrops { dev: dev.to_string(), base: tx_dropped(dev), last: 0, next: std::time::Instant::now(), queue }
    }

    /// Drops since closelab started.
    pub fn total(&self) -> u64 {
        self.last
    }

    /// Reads the counter if it is time; emits a note at `t` when it grew.
    pub fn check(&mut self, t: f64, sink: &mut dyn Sink) {
        let now = std::time::Instant::now();
        if now < self.next {
            return;
        }
        self.next = now + CHECK_EVERY;
        self.read(t, sink);
    }

    /// Reads the counter now (at exit); emits a note when it grew.
    pub fn read(&mut self, t: f64, sink: &mut dyn Sink) {
        let (Some(base), Some(n)) = (self.base, tx_dropped(&self.dev)) else { return };
        let total = n.saturating_sub(base);
        if total > self.last {
            let mut text = format!(
                "the TUN's kernel queue dropped {} packets before closelab read them ({} since start; {}'s tx_dropped)",
                total - self.last,
                total,
                self.dev
            );
            if let Some(len) = self.queue {
                let _ = write!(text, ", txqueuelen {len}");
            }
            self.last = total;
            sink.event(&Event { t, side: Side::Closelab, conn: None, kind: EventKind::Note { text } });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEV: &str = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo: 3517850   38314    0    0    0     0          0         0  3517850   38314    0    0    0     0       0          0
   cl0:  880126   20003    0    0    0     0          0         0   880310   20007    0 76262    0     0       0          0
";

    #[test]
    fn test_tx_dropped_is_the_transmit_drop_column() {
        assert_eq!(parse_tx_dropped(DEV, "cl0"), Some(76262));
        assert_eq!(parse_tx_dropped(DEV, "lo"), Some(0));
        assert_eq!(parse_tx_dropped(DEV, "cl1"), None);
        assert_eq!(parse_tx_dropped("", "cl0"), None);
    }

    #[test]
    fn test_loopback_counter_is_readable() {
        // Every namespace has lo: the procfs file is there and parses.
        assert!(tx_dropped("lo").is_some());
    }
}
