//! Fault rules on the packet path.
