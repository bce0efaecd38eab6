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

/// `lab down NAME` (idempotent; stops the endpoints running in the lab and
/// says which) or `lab down --all` (says what it removes; skips labs with
/// running endpoints unless `force`).
pub fn down(name: Option<&str>, all: bool, force: bool, dry_run: bool, out: &mut dyn Write) -> Result<(), String> {
    match (name, all) {
        (Some(_), true) => Err("give a lab name or --all, not both".into()),
        (None, false) => Err("give a lab name, or --all to remove every closelab lab".into()),
        (Some(_), false) if force => Err("--force goes with --all (lab down NAME always stops its endpoints)".into()),
        (Some(n), false) if dry_run => {
            for c in lab::dry_run_down(n) {
                line(out, &c.to_string())?;
            }
            Ok(())
        }
        (Some(n), false) => {
            lab::validate_name(n).map_err(|e| e.to_string())?;
            stop_endpoints(&endpoints_of(n)?, out)?;
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
            let labs = lab::status().map_err(|e| e.to_string())?;
            if labs.is_empty() {
                line(out, "no closelab labs to remove")?;
            }
            let mut skipped = 0;
            for s in labs {
                let pids = without_self(&s.endpoint_pids);
                if !pids.is_empty() && !force {
                    line(
                        out,
                        &format!(
                            "lab {}: skipped, endpoints running ({}); stop them or use --force",
                            s.name,
                            describe_pids(&pids)
                        ),
                    )?;
                    skipped += 1;
                    continue;
                }
                stop_endpoints(&pids, out)?;
                if lab::down(&s.name).map_err(|e| e.to_string())?.removed_anything() {
                    line(out, &format!("lab {} removed", s.name))?;
                }
            }
            if skipped > 0 {
                return Err(format!("{skipped} lab(s) with running endpoints left up (--force removes them)"));
            }
            Ok(())
        }
    }
}

/// Endpoints (processes in the lab's closelab namespace or holding its TUN)
/// of lab `name`, this process excluded.
fn endpoints_of(name: &str) -> Result<Vec<u32>, String> {
    let labs = lab::status().map_err(|e| e.to_string())?;
    Ok(labs.into_iter().find(|s| s.name == name).map(|s| without_self(&s.endpoint_pids)).unwrap_or_default())
}

fn without_self(pids: &[u32]) -> Vec<u32> {
    pids.iter().copied().filter(|p| *p != std::process::id()).collect()
}

/// `pid 123 (closelab listen --lab x --port 7000), …`
fn describe_pids(pids: &[u32]) -> String {
    pids.iter().map(|p| format!("pid {p} ({})", cmdline(*p))).collect::<Vec<_>>().join(", ")
}

/// A process's command line, as `ps` shows it (`?` once it is gone).
fn cmdline(pid: u32) -> String {
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(raw) if !raw.is_empty() => String::from_utf8_lossy(&raw).trim_end_matches('\0').replace('\0', " "),
        _ => "?".into(),
    }
}

/// How long a stopped endpoint gets to exit on SIGTERM before SIGKILL.
const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// SIGTERM to each endpoint, SIGKILL to those still there after
/// [`STOP_GRACE`]; says which were stopped.
fn stop_endpoints(pids: &[u32], out: &mut dyn Write) -> Result<(), String> {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let alive = |p: u32| std::path::Path::new(&format!("/proc/{p}")).exists() && !is_zombie(p);
    let names: Vec<(u32, String)> = pids.iter().map(|p| (*p, cmdline(*p))).collect();
    for (p, _) in &names {
        let _ = kill(Pid::from_raw(*p as i32), Signal::SIGTERM);
    }
    let start = std::time::Instant::now();
    while names.iter().any(|(p, _)| alive(*p)) && start.elapsed() < STOP_GRACE {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    for (p, cmd) in &names {
        if alive(*p) {
            let _ = kill(Pid::from_raw(*p as i32), Signal::SIGKILL);
            line(out, &format!("killed endpoint pid {p} ({cmd}): it did not exit on SIGTERM"))?;
        } else {
            line(out, &format!("stopped endpoint pid {p} ({cmd})"))?;
        }
    }
    Ok(())
}

/// A process that has exited but was not reaped yet counts as gone.
fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| rest.starts_with('Z')))
        .unwrap_or(true)
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
            format!("endpoints: {}", describe_pids(&s.endpoint_pids))
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
