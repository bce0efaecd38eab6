//! `closelab lab up|down|status|exec`: what each prints, over the lab
//! module. The CLI only parses and calls these.

use std::io::Write;

use crate::sys::lab;

fn line(out: &mut dyn Write, s: &str) -> Result<(), String> {
    writeln!(out, "{s}").map_err(|e| format!("writing output: {e}"))
}

/// `lab up`: builds the lab (or prints its `ip` commands) and says where
/// everything is.
pub fn up(
    name: Option<&str>,
    subnet: Option<&str>,
    peer_sysctl: &[String],
    dry_run: bool,
    out: &mut dyn Write,
) -> Result<(), String> {
    let mut spec = match name {
        Some(n) => lab::LabSpec::new(n, subnet),
        None => lab::LabSpec::new(&lab::LabSpec::unique().name, subnet),
    }
    .map_err(|e| e.to_string())?;
    for kv in peer_sysctl {
        let (k, v) = lab::parse_peer_sysctl(kv).map_err(|e| e.to_string())?;
        spec.add_peer_sysctl(&k, &v).map_err(|e| e.to_string())?;
    }
    if dry_run {
        for c in spec.plan_up() {
            line(out, &c.to_string())?;
        }
        return Ok(());
    }
    let l = lab::Lab::up(spec).map_err(|e| e.to_string())?;
    let a = l.addrs().clone();
    let n = l.name().to_string();
    // Leave it up before printing: a closed stdout must not tear it down.
    let sysctls = l.spec().peer_sysctls.clone();
    l.keep();
    line(out, &format!("lab {n} is up"))?;
    line(
        out,
        &format!(
            "  Linux host:  {} in namespace {} (run programs there: closelab lab exec {n} -- CMD)",
            a.linux, a.ns_linux
        ),
    )?;
    line(
        out,
        &format!(
            "  closelab:    {} behind TUN {} in namespace {} (closelab listen --lab {n} --port 7000)",
            a.closelab, a.tun, a.ns_closelab
        ),
    )?;
    for (k, v) in &sysctls {
        line(out, &format!("  sysctl:      {k}={v} in {} only", a.ns_linux))?;
    }
    line(out, &format!("  remove with: closelab lab down {n}"))
}

/// `lab down NAME` (idempotent) or `lab down --all`.
pub fn down(name: Option<&str>, all: bool, dry_run: bool, out: &mut dyn Write) -> Result<(), String> {
    match (name, all) {
        (Some(_), true) => Err("give a lab name or --all, not both".into()),
        (None, false) => Err("give a lab name, or --all to remove every closelab lab".into()),
        (Some(n), false) if dry_run => {
            for c in lab::dry_run_down(n) {
                line(out, &c.to_string())?;
            }
            Ok(())
        }
        (Some(n), false) => {
            let r = lab::down(n).map_err(|e| e.to_string())?;
            if r.removed_anything() {
                line(out, &format!("lab {n} removed"))
            } else {
                line(out, &format!("lab {n}: nothing to remove"))
            }
        }
        (None, true) if dry_run => {
            for s in lab::status().map_err(|e| e.to_string())? {
                for c in lab::dry_run_down(&s.name) {
                    line(out, &c.to_string())?;
                }
            }
            Ok(())
        }
        (None, true) => {
            let names = lab::down_all().map_err(|e| e.to_string())?;
            if names.is_empty() {
                line(out, "no closelab labs to remove")?;
            }
            for n in names {
                line(out, &format!("lab {n} removed"))?;
            }
            Ok(())
        }
    }
}

/// `lab status`: one line per lab with its addresses and running endpoints.
pub fn status(out: &mut dyn Write) -> Result<(), String> {
    let labs = lab::status().map_err(|e| e.to_string())?;
    if labs.is_empty() {
        line(out, "no closelab labs")?;
    }
    for s in labs {
        let addrs = match &s.addrs {
            Some(a) => format!("linux {} closelab {} tun {}", a.linux, a.closelab, a.tun),
            None => "addresses unknown (no state file)".into(),
        };
        let endpoints = if s.endpoint_pids.is_empty() {
            "no endpoint running".to_string()
        } else {
            format!("endpoints: pid {}", s.endpoint_pids.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", "))
        };
        let broken =
            if s.ns_linux_exists && s.ns_closelab_exists { "" } else { " (incomplete: run `closelab lab down`)" };
        line(out, &format!("{}: {addrs}; {endpoints}{broken}", s.name))?;
        for (kind, pid) in crate::sys::webserver::running(&s.name) {
            line(out, &format!("  web server: {} (pid {pid}, closelab lab serve)", kind.name()))?;
        }
    }
    Ok(())
}

/// `lab exec NAME -- CMD`: runs CMD on the lab's Linux host; its exit code.
pub fn exec(name: &str, command: &[String]) -> Result<u8, String> {
    let addrs = lab::load(name).map_err(|e| e.to_string())?;
    let status = crate::sys::lab::ip_command()
        .args(["netns", "exec", &addrs.ns_linux])
        .args(command)
        .status()
        .map_err(|e| format!("cannot run `ip netns exec {} {}`: {e}", addrs.ns_linux, command.join(" ")))?;
    Ok(status.code().unwrap_or(1).clamp(0, 255) as u8)
}
