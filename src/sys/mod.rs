//! Linux-only I/O edges. The only module allowed to open fds, read the clock, spawn processes or enter namespaces.
pub mod control;
pub mod demo;
pub mod lab;
pub mod labcmd;
pub mod ladder;
pub mod load;
pub mod loadgen;
pub mod netns;
pub mod observe;
pub mod peer;
pub mod run;
pub mod scenario;
pub mod serve;
pub mod sockdiag;
pub mod story;
pub mod tun;
