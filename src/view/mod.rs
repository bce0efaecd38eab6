//! Views of the event stream.
pub mod text;
pub mod json;
pub mod pcap;
