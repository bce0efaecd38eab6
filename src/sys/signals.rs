//! SIGINT and SIGTERM, handled the same way in every phase.
//!
//! `main` blocks both before any thread starts and reads them through a
//! signalfd: inside the run loop a signal is just another mio event. Outside
//! it (lab setup, the Linux peer starting, files being read) nobody reads
//! the fd, so a watchdog thread polls it: a signal left unread for
//! [`UNREAD`] is taken by the watchdog and noted, and every phase's next
//! check ([`Signals::interrupted`], the run loop's start) sees it. If the
//! main thread still has not looked after [`STUCK`] more, or a second
//! signal comes meanwhile, the process exits with 130 at once (a lab may
//! then be left: `closelab lab down --all` removes it), so `timeout 5
//! closelab …` always ends closelab.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Once;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

/// How long a signal may stay unread before the watchdog takes it.
pub const UNREAD: Duration = Duration::from_secs(1);

/// How long the main thread has to notice a signal the watchdog took.
pub const STUCK: Duration = Duration::from_secs(3);

/// Signals the watchdog read off the fd.
static TAKEN: AtomicU32 = AtomicU32::new(0);
/// Of those, how many the main thread has seen.
static SEEN: AtomicU32 = AtomicU32::new(0);
static WATCHDOG: Once = Once::new();

/// SIGINT and SIGTERM as a file descriptor. Create it in `main` before any
/// thread starts, so every thread inherits the blocked mask and the signal
/// can only arrive here.
pub struct Signals {
    fd: SignalFd,
    count: u32,
}

impl Signals {
    pub fn block() -> io::Result<Signals> {
        let mut mask = SigSet::empty();
        mask.add(Signal::SIGINT);
        mask.add(Signal::SIGTERM);
        mask.thread_block().map_err(io::Error::from)?;
        let fd =
            SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC).map_err(io::Error::from)?;
        let watch = fd.as_fd().try_clone_to_owned()?;
        WATCHDOG.call_once(move || {
            let _ = std::thread::Builder::new().name("closelab-signals".into()).spawn(move || watchdog(watch));
        });
        Ok(Signals { fd, count: 0 })
    }

    /// Whether a new signal arrived (consumes it).
    pub fn pending(&mut self) -> bool {
        if matches!(self.fd.read_signal(), Ok(Some(_))) {
            self.count += 1;
            return true;
        }
        let taken = TAKEN.load(Ordering::SeqCst);
        let seen = SEEN.swap(taken, Ordering::SeqCst);
        if taken > seen {
            self.count += taken - seen;
            return true;
        }
        false
    }

    /// Whether any signal has arrived so far (a check point for phases
    /// outside the run loop).
    pub fn interrupted(&mut self) -> bool {
        self.pending();
        self.count > 0
    }

    /// Signals received so far.
    pub fn count(&self) -> u32 {
        self.count
    }

    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }
}

fn watchdog(fd: OwnedFd) {
    let mut unread_since: Option<Instant> = None;
    let mut taken_at: Option<Instant> = None;
    loop {
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        let ready = poll(&mut fds, PollTimeout::from(100u16)).unwrap_or(0) > 0;
        let now = Instant::now();
        if ready {
            let since = *unread_since.get_or_insert(now);
            if now - since >= UNREAD || taken_at.is_some() {
                // The signal is still there: nobody is reading. Take it.
                let mut buf = [0u8; 128];
                if nix::unistd::read(&fd, &mut buf).is_ok() {
                    TAKEN.fetch_add(1, Ordering::SeqCst);
                    unread_since = None;
                    if taken_at.is_some_and(|_| SEEN.load(Ordering::SeqCst) < TAKEN.load(Ordering::SeqCst)) {
                        give_up("second signal");
                    }
                    taken_at.get_or_insert(now);
                }
            }
        } else {
            unread_since = None;
        }
        if SEEN.load(Ordering::SeqCst) >= TAKEN.load(Ordering::SeqCst) {
            taken_at = None;
        } else if taken_at.is_some_and(|t| now - t >= STUCK) {
            give_up("no phase noticed the signal");
        }
    }
}

fn give_up(why: &str) -> ! {
    eprintln!("closelab: interrupted ({why}); if a lab was being built, `closelab lab down --all` removes it");
    std::process::exit(130)
}
