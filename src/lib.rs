//! closelab: watch TCP connections close on real packets.
//!
//! The layers, from the wire up:
//!
//! - [`wire`] reads raw IP packets into segment summaries; it never panics on
//!   malformed input.
//! - [`event`] is the one event stream (segment in/out, state change, app
//!   action, fault applied) that feeds every view.
//! - [`endpoint`] is the sans-IO core: a table of connections keyed by
//!   4-tuple, each with its own one-socket smoltcp `SocketSet`, stepped alone
//!   so every state change is attributed to the segment, timer or application
//!   call that caused it. Packets and `now` go in; packets and events come out.
//! - [`fault`] holds the rules applied on the packet path (drop, delay,
//!   duplicate, reorder) as a sans-IO filter.
//! - [`scenario`] holds the expectations a close-bug scenario checks on the
//!   event stream (pure; the lab runner is `cmd::scenario`).
//! - [`kernel`] is the Linux side as sock_diag reports it, and the diff of
//!   two looks into Linux-side events (pure; the looks are `sys::observe`'s).
//! - [`control_proto`] is the control socket's request and answer lines
//!   (pure; the server is `sys::control`).
//! - [`view`] renders events: timeline lines, JSON lines, pcap, summaries.
//! - [`sys`] is the only place that touches the OS: the TUN device and mio
//!   loop, the network-namespace lab, the Linux kernel peer and sock_diag.
//!   Nothing outside `sys` opens fds, reads the clock, spawns processes or
//!   enters namespaces.
//! - [`cmd`] is one module per subcommand: clap's options in, validated
//!   into typed configuration, run over `sys`, exit code out.
//! - [`config`] turns what a user typed (durations, addresses, policies) into
//!   typed configuration, with one clear error per mistake.

pub mod cmd;
pub mod config;
pub mod control_proto;
pub mod endpoint;
pub mod event;
pub mod fault;
#[doc(hidden)]
pub mod fuzzing;
pub mod kernel;
pub mod load;
pub mod scenario;
pub mod sys;
#[doc(hidden)]
pub mod testing;
pub mod view;
pub mod wire;
