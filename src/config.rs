//! Typed configuration from user input.
