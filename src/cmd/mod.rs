//! The subcommands: one module per `closelab` subcommand, each taking the
//! options clap parsed, validating them into typed configuration and
//! returning the exit code. `main` only parses and dispatches.
pub mod bench;
pub mod cli;
pub mod crawlstory;
pub mod demo;
pub mod labcmd;
pub mod ladder;
pub mod load;
pub mod packaging;
pub mod scenario;
pub mod serve;
pub mod story;
