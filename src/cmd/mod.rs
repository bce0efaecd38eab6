//! The subcommands: one module per `closelab` subcommand, each taking the
//! options clap parsed, validating them into typed configuration and
//! returning the exit code. `main` only parses and dispatches.
pub mod packaging;
