//! The sans-IO endpoint.
