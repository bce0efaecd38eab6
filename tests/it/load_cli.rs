//! `closelab load` input errors: one line, exit 2, before any lab is built.

use crate::util::{closelab, expect_error};

#[test]
fn load_rejects_bad_rate() {
    expect_error(&mut closelab(&["load", "--rate", "fast"]), "invalid rate `fast`");
    expect_error(&mut closelab(&["load", "--rate", "0/s"]), "must be above 0");
}

#[test]
fn load_rejects_bad_duration() {
    expect_error(&mut closelab(&["load", "--duration", "soon"]), "--duration: invalid duration `soon`");
    expect_error(&mut closelab(&["load", "--duration", "0s"]), "--duration must be longer than 0s");
}

#[test]
fn load_rejects_bad_port_range() {
    expect_error(&mut closelab(&["load", "--ports", "3000-2000"]), "invalid port range `3000-2000`: empty");
    expect_error(&mut closelab(&["load", "--ports", "80-2000"]), "ports must lie within 1024-65535");
    expect_error(&mut closelab(&["load", "--ports", "20000-70000"]), "ports must lie within 1024-65535");
}

#[test]
fn load_rejects_unknown_lab_and_story() {
    expect_error(&mut closelab(&["load", "--lab", "nosuchlab9"]), "no lab named nosuchlab9 is up");
    expect_error(&mut closelab(&["load", "--lab", "Bad_Name"]), "invalid lab name");
    expect_error(&mut closelab(&["load", "--story", "nope"]), "unknown story `nope`");
    expect_error(&mut closelab(&["load", "--peer-sysctl", "net.ipv4.tcp_tw_recycle=1"]), "tcp_tw_recycle was removed");
}
