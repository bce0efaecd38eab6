//! Linux-only I/O edges. The only module allowed to open fds, read the clock, spawn processes or enter namespaces.
pub mod sockdiag;
pub mod run;
pub mod control;
pub mod tun;
pub mod lab;
pub mod labcmd;
pub mod netns;
pub mod serve;
pub mod observe;
pub mod peer;
pub mod story;
pub mod demo;
pub mod scenario;
pub mod ladder;
