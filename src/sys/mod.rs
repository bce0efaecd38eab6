//! Linux-only I/O edges. The only module allowed to open fds, read the clock, spawn processes or enter namespaces.
pub mod control;
pub mod crawl;
pub mod files;
pub mod lab;
pub mod linger;
pub mod loadgen;
pub mod netns;
pub mod observe;
pub mod peer;
pub mod run;
pub mod signals;
pub mod sockdiag;
pub mod tun;
pub mod webserver;
