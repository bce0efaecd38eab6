//! Views of the event stream.
