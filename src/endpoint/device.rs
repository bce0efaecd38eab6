//! An in-memory smoltcp `Device` (medium IP): it offers the packets queued
//! in `rx` and captures everything smoltcp transmits in `tx`. The endpoint
//! queues at most the one packet it is stepping with; the benchmark's
//! shared-`SocketSet` baseline uses it as a plain queue. Replies made during
//! ingress (RSTs, challenge ACKs, the TIME-WAIT re-ACK) leave through the
//! receive call's TxToken, so both paths capture.

use std::collections::VecDeque;

use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

pub struct MemoryDevice {
    pub rx: VecDeque<Vec<u8>>,
    pub tx: Vec<Vec<u8>>,
    mtu: usize,
}

impl MemoryDevice {
    pub fn new(mtu: usize) -> MemoryDevice {
        MemoryDevice { rx: VecDeque::new(), tx: Vec::new(), mtu }
    }
}

pub struct RxToken(Vec<u8>);

pub struct TxToken<'a>(&'a mut Vec<Vec<u8>>);

impl phy::RxToken for RxToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = vec![0u8; len];
        let r = f(&mut buf);
        self.0.push(buf);
        r
    }
}

impl Device for MemoryDevice {
    type RxToken<'a> = RxToken;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _now: Instant) -> Option<(RxToken, TxToken<'_>)> {
        let p = self.rx.pop_front()?;
        Some((RxToken(p), TxToken(&mut self.tx)))
    }

    fn transmit(&mut self, _now: Instant) -> Option<TxToken<'_>> {
        Some(TxToken(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = self.mtu;
        caps
    }
}
