//! The two-namespace lab: an ordinary Linux host and closelab's endpoint, each
//! in its own network namespace, joined by a veth pair. Built by running
//! iproute2's `ip`, so `--dry-run` prints exactly the commands that run.
//!
//! ```text
//!  <NAME>-linux                       <NAME>-closelab
//! ┌───────────────────────┐          ┌──────────────────────────────────────┐
//! │ kernel TCP (the peer) │          │ ip_forward=1, proxy_arp on <NAME>-vc │
//! │ <NAME>-vl  .1/prefix  ├── veth ──┤ <NAME>-vc  last host/prefix          │
//! └───────────────────────┘          │ <NAME>-t (TUN) ← route .2/32         │
//!                                    │  └ closelab's smoltcp endpoint .2    │
//!                                    └──────────────────────────────────────┘
//! ```
//!
//! The endpoint address (.2) sits on no kernel interface: the Linux host ARPs
//! for it on the wire, the closelab namespace answers by proxy ARP and
//! forwards to the TUN, where smoltcp owns the address. Everything lives in
//! the two namespaces; this module never adds routes to or sets sysctls in
//! the root namespace ([`super::netns::write_sysctl`] refuses it). Deleting
//! the namespaces removes the veth pair and the TUN with them.
//!
//! Sysctls are not set with `sysctl(8)`: a thread enters the namespace and
//! writes `/proc/sys/...` (same effect, no procps needed). [`LabSpec::plan_up`]
//! shows them as the equivalent `ip netns exec NS sysctl -w key=value`.
//!
//! Each lab leaves a state file in [`STATE_DIR`] so `status` and `down --all`
//! find it; `down --all` also removes `X-linux`/`X-closelab` pairs left
//! without one (a crash before the file was written).

use std::collections::BTreeSet;
use std::fmt;
use std::fs;
use std::io;
use std::net::Ipv4Addr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::netns::{self, NetnsError, io_cause};

/// Where each lab's state file lives (one `key=value` file per lab).
pub const STATE_DIR: &str = "/run/closelab/labs";
/// The subnet a lab uses when none is given.
pub const DEFAULT_SUBNET: &str = "10.201.0.0/24";
/// MTU of the TUN (and so the endpoint's).
pub const TUN_MTU: u32 = 1500;
pub use crate::config::{PEER_SYSCTL_EXTRA, parse_peer_sysctl, validate_peer_sysctl};

// ---------------------------------------------------------------------------
// Errors

/// What went wrong planning, building, inspecting or removing a lab.
#[derive(Debug)]
pub enum LabError {
    InvalidName {
        name: String,
    },
    InvalidSubnet {
        subnet: String,
        reason: String,
    },
    /// A peer sysctl the lab may not set (see [`validate_peer_sysctl`]).
    PeerSysctl(crate::config::ConfigError),
    AlreadyExists {
        name: String,
        ns: String,
    },
    IpNotFound,
    NotRoot,
    /// Run inside another network namespace (e.g. under `ip netns exec`),
    /// whose private mount of /run/netns would hold the lab's namespace
    /// files: the host would see dead references.
    NotInHostNetns {
        ns: String,
    },
    CmdSpawn {
        cmd: String,
        err: io::Error,
    },
    CmdFailed {
        cmd: String,
        stderr: String,
    },
    Netns(NetnsError),
    StateFile {
        path: PathBuf,
        op: &'static str,
        err: io::Error,
    },
    Scan {
        path: PathBuf,
        err: io::Error,
    },
    /// A dead endpoint's control socket file could not be removed.
    ControlSocket {
        path: PathBuf,
        err: io::Error,
    },
    /// Building failed and removing the half-built lab failed too.
    Rollback {
        cause: Box<LabError>,
        cleanup: Box<LabError>,
    },
    /// No lab of that name is up.
    NotFound {
        name: String,
    },
    /// A link did not become operationally up in time (see [`wait_link_up`]).
    LinkNotUp {
        ns: String,
        dev: String,
        state: String,
        waited: std::time::Duration,
    },
}

impl fmt::Display for LabError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LabError::InvalidName { name } => {
                write!(f, "invalid lab name {name:?}: use 1 to 10 characters a-z, 0-9 or '-', starting with a letter")
            }
            LabError::InvalidSubnet { subnet, reason } => {
                write!(f, "invalid subnet {subnet:?}: {reason}")
            }
            LabError::PeerSysctl(e) => e.fmt(f),
            LabError::AlreadyExists { name, ns } => {
                write!(f, "lab {name} already exists (namespace {ns}); run `closelab lab down {name}`")
            }
            LabError::IpNotFound => write!(f, "the `ip` binary (iproute2) was not found in PATH; install iproute2"),
            LabError::NotRoot => {
                write!(f, "not root: creating network namespaces needs root or CAP_NET_ADMIN plus CAP_SYS_ADMIN")
            }
            LabError::NotInHostNetns { ns } => write!(
                f,
                "cannot build a lab from inside network namespace {ns} (e.g. under `ip netns exec`): \
                 its namespaces would be invisible or dead on the host; run closelab lab up from the host's namespace"
            ),
            LabError::CmdSpawn { cmd, err } => {
                write!(f, "cannot run `{cmd}`: {}", io_cause(err))
            }
            LabError::CmdFailed { cmd, stderr } => write!(f, "`{cmd}` failed: {stderr}"),
            LabError::Netns(e) => e.fmt(f),
            LabError::StateFile { path, op, err } => {
                write!(f, "cannot {op} lab state file {}: {}", path.display(), io_cause(err))
            }
            LabError::ControlSocket { path, err } => {
                write!(f, "cannot remove stale control socket {}: {}", path.display(), io_cause(err))
            }
            LabError::Scan { path, err } => {
                write!(f, "cannot read {}: {}", path.display(), io_cause(err))
            }
            LabError::NotFound { name } => write!(
                f,
                "no lab named {name} is up (start one with `closelab lab up --name {name}`; `closelab lab status` lists labs)"
            ),
            LabError::LinkNotUp { ns, dev, state, waited } => write!(
                f,
                "link {dev} in network namespace {ns} is not up after {} ms (operational state {state})",
                waited.as_millis()
            ),
            LabError::Rollback { cause, cleanup } => {
                write!(f, "{cause} (and removing the half-built lab failed: {cleanup})")
            }
        }
    }
}

impl std::error::Error for LabError {}

impl From<crate::config::ConfigError> for LabError {
    fn from(e: crate::config::ConfigError) -> LabError {
        LabError::PeerSysctl(e)
    }
}

impl From<NetnsError> for LabError {
    fn from(e: NetnsError) -> LabError {
        LabError::Netns(e)
    }
}

// ---------------------------------------------------------------------------
// Validation

/// A lab name: 1..=10 characters `[a-z0-9-]`, starting with a letter, so
/// `<NAME>-closelab` and `<NAME>-vl` fit (interface names max 15 bytes).
pub fn validate_name(name: &str) -> Result<(), LabError> {
    let ok = (1..=10).contains(&name.len())
        && name.as_bytes()[0].is_ascii_lowercase()
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok { Ok(()) } else { Err(LabError::InvalidName { name: name.to_string() }) }
}

/// Parse `A.B.C.D/P` with 8 <= P <= 24 and no host bits set.
pub fn parse_subnet(s: &str) -> Result<(Ipv4Addr, u8), LabError> {
    let bad = |reason: String| LabError::InvalidSubnet { subnet: s.to_string(), reason };
    let cidr = || bad("expected an IPv4 CIDR like 10.201.0.0/24".to_string());
    let (addr, prefix) = s.trim().split_once('/').ok_or_else(cidr)?;
    let addr: Ipv4Addr = addr.parse().map_err(|_| cidr())?;
    let prefix: u8 = prefix.parse().map_err(|_| cidr())?;
    if !(8..=24).contains(&prefix) {
        return Err(bad(format!("/{prefix} is not allowed: the prefix must be /24 or wider (at most /8)")));
    }
    let mask = u32::MAX << (32 - prefix);
    let net = Ipv4Addr::from(u32::from(addr) & mask);
    if net != addr {
        return Err(bad(format!("host bits are set; did you mean {net}/{prefix}?")));
    }
    let first = addr.octets()[0];
    if first == 0 || first == 127 || first >= 224 {
        return Err(bad("0.0.0.0/8, 127.0.0.0/8 and 224.0.0.0/3 cannot hold a lab".to_string()));
    }
    Ok((net, prefix))
}

// ---------------------------------------------------------------------------
// Spec, addresses and the plan

/// What a lab should be: its name, subnet and the Linux peer's sysctls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabSpec {
    pub name: String,
    /// Network address of the subnet (host bits zero).
    pub subnet: Ipv4Addr,
    pub prefix: u8,
    /// Set in `<NAME>-linux` only, in order; see [`validate_peer_sysctl`].
    pub peer_sysctls: Vec<(String, String)>,
}

/// Where everything of a lab is: addresses, namespaces, interface names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabAddrs {
    /// The Linux host (on `<NAME>-vl`): subnet .1.
    pub linux: Ipv4Addr,
    /// closelab's endpoint (smoltcp behind the TUN, on no kernel interface): .2.
    pub closelab: Ipv4Addr,
    /// The closelab namespace's veth end `<NAME>-vc`: the last usable host.
    pub router: Ipv4Addr,
    pub prefix: u8,
    /// The persistent TUN in `<NAME>-closelab`, for the endpoint to attach to.
    pub tun: String,
    pub ns_linux: String,
    pub ns_closelab: String,
    /// `<NAME>-vl`, in `<NAME>-linux`.
    pub veth_linux: String,
    /// `<NAME>-vc`, in `<NAME>-closelab`.
    pub veth_closelab: String,
}

static NEXT_LAB: AtomicUsize = AtomicUsize::new(0);

impl LabSpec {
    /// A spec from what the user typed; `subnet` defaults to [`DEFAULT_SUBNET`].
    pub fn new(name: &str, subnet: Option<&str>) -> Result<LabSpec, LabError> {
        validate_name(name)?;
        let (subnet, prefix) = parse_subnet(subnet.unwrap_or(DEFAULT_SUBNET))?;
        Ok(LabSpec { name: name.to_string(), subnet, prefix, peer_sysctls: Vec::new() })
    }

    /// A fresh name `cl` + 6 hex digits (3 from the pid, 3 from a process-wide
    /// counter), skipping names whose namespaces or state file exist; default
    /// subnet. Two labs with the same subnet do not clash: each lab's
    /// namespaces are isolated from every other.
    pub fn unique() -> LabSpec {
        let pid = std::process::id() as usize & 0xfff;
        let mut name = String::new();
        for _ in 0..0x1000 {
            let n = NEXT_LAB.fetch_add(1, Ordering::Relaxed) & 0xfff;
            name = format!("cl{pid:03x}{n:03x}");
            if !netns::exists(&format!("{name}-linux"))
                && !netns::exists(&format!("{name}-closelab"))
                && !state_path(&name).exists()
            {
                break;
            }
        }
        LabSpec::new(&name, None).expect("generated lab names are valid")
    }

    /// Add a sysctl for the Linux peer, validated.
    pub fn add_peer_sysctl(&mut self, key: &str, value: &str) -> Result<(), LabError> {
        validate_peer_sysctl(key, value)?;
        self.peer_sysctls.push((key.to_string(), value.to_string()));
        Ok(())
    }

    /// Re-check everything (the fields are public).
    pub fn validate(&self) -> Result<(), LabError> {
        validate_name(&self.name)?;
        let cidr = format!("{}/{}", self.subnet, self.prefix);
        let (net, prefix) = parse_subnet(&cidr)?;
        debug_assert_eq!((net, prefix), (self.subnet, self.prefix));
        for (key, value) in &self.peer_sysctls {
            validate_peer_sysctl(key, value)?;
        }
        Ok(())
    }

    /// The subnet as `A.B.C.D/P`.
    pub fn cidr(&self) -> String {
        format!("{}/{}", self.subnet, self.prefix)
    }

    pub fn addrs(&self) -> LabAddrs {
        let net = u32::from(self.subnet);
        let hostmask = u32::MAX >> self.prefix;
        let n = &self.name;
        LabAddrs {
            linux: Ipv4Addr::from(net + 1),
            closelab: Ipv4Addr::from(net + 2),
            router: Ipv4Addr::from((net | hostmask) - 1),
            prefix: self.prefix,
            tun: format!("{n}-t"),
            ns_linux: format!("{n}-linux"),
            ns_closelab: format!("{n}-closelab"),
            veth_linux: format!("{n}-vl"),
            veth_closelab: format!("{n}-vc"),
        }
    }

    /// The commands [`Lab::up`] runs, in order. Sysctl lines show the
    /// equivalent `sysctl -w`; `up` writes `/proc/sys` from inside the
    /// namespace instead. (`up` also writes the state file, not shown.)
    pub fn plan_up(&self) -> Vec<Cmd> {
        self.steps().iter().map(Step::cmd).collect()
    }

    fn steps(&self) -> Vec<Step> {
        let a = self.addrs();
        let (nl, nc) = (a.ns_linux.as_str(), a.ns_closelab.as_str());
        let (vl, vc, tun) = (a.veth_linux.as_str(), a.veth_closelab.as_str(), a.tun.as_str());
        let ip = |ns: &str, args: &[&str]| {
            let mut argv = vec!["ip", "-n", ns];
            argv.extend_from_slice(args);
            Step::Ip(Cmd::new(&argv))
        };
        let sysctl =
            |ns: &str, key: String, value: &str| Step::Sysctl { ns: ns.to_string(), key, value: value.to_string() };
        let linux_cidr = format!("{}/{}", a.linux, a.prefix);
        let router_cidr = format!("{}/{}", a.router, a.prefix);
        let endpoint = format!("{}/32", a.closelab);
        let mtu = TUN_MTU.to_string();

        let mut steps = vec![
            Step::NetnsAdd(nl.to_string()),
            Step::NetnsAdd(nc.to_string()),
            ip(nl, &["link", "set", "dev", "lo", "up"]),
            ip(nc, &["link", "set", "dev", "lo", "up"]),
            ip(nl, &["link", "add", vl, "type", "veth", "peer", "name", vc, "netns", nc]),
            ip(nc, &["tuntap", "add", "dev", tun, "mode", "tun"]),
            ip(nc, &["link", "set", "dev", tun, "mtu", &mtu]),
            // Forward between the veth and the TUN, and answer ARP for the
            // endpoint's address on the veth (proxy ARP needs forwarding on).
            sysctl(nc, "net.ipv4.ip_forward".into(), "1"),
            sysctl(nc, format!("net.ipv4.conf.{vc}.proxy_arp"), "1"),
            // Proxy ARP replies are otherwise delayed by up to proxy_delay
            // (0.8 s): the first connection of every run would stall.
            sysctl(nc, format!("net.ipv4.neigh.{vc}.proxy_delay"), "0"),
            // New namespaces copy conf.all/default from the host, which may
            // have rp_filter on; the effective value is the max of both.
            sysctl(nc, "net.ipv4.conf.all.rp_filter".into(), "0"),
            sysctl(nc, format!("net.ipv4.conf.{vc}.rp_filter"), "0"),
            sysctl(nc, format!("net.ipv4.conf.{tun}.rp_filter"), "0"),
            // Keep the kernel's IPv6 router solicitations and MLD reports off
            // the TUN: the endpoint should see only the lab's traffic.
            sysctl(nc, format!("net.ipv6.conf.{tun}.disable_ipv6"), "1"),
        ];
        for (key, value) in &self.peer_sysctls {
            steps.push(sysctl(nl, key.clone(), value));
        }
        steps.extend([
            ip(nl, &["addr", "add", &linux_cidr, "dev", vl]),
            ip(nc, &["addr", "add", &router_cidr, "dev", vc]),
            ip(nl, &["link", "set", "dev", vl, "up"]),
            ip(nc, &["link", "set", "dev", vc, "up"]),
            ip(nc, &["link", "set", "dev", tun, "up"]),
            // The TUN has no carrier until the endpoint attaches; the route
            // is accepted (flagged linkdown) and used once it does.
            ip(nc, &["route", "add", &endpoint, "dev", tun]),
        ]);
        steps
    }
}

/// One command line, as argv.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmd {
    pub argv: Vec<String>,
}

impl Cmd {
    pub fn new(argv: &[&str]) -> Cmd {
        Cmd { argv: argv.iter().map(|s| s.to_string()).collect() }
    }
}

/// Shell-quoted, one line: `ip netns add demo-linux`.
impl fmt::Display for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, arg) in self.argv.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            f.write_str(&shell_quote(arg))?;
        }
        Ok(())
    }
}

fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty() && arg.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-./:=@%+,".contains(&b));
    if plain { arg.to_string() } else { format!("'{}'", arg.replace('\'', r"'\''")) }
}

enum Step {
    NetnsAdd(String),
    Ip(Cmd),
    Sysctl { ns: String, key: String, value: String },
}

impl Step {
    fn cmd(&self) -> Cmd {
        match self {
            Step::NetnsAdd(ns) => Cmd::new(&["ip", "netns", "add", ns]),
            Step::Ip(cmd) => cmd.clone(),
            Step::Sysctl { ns, key, value } => {
                Cmd::new(&["ip", "netns", "exec", ns, "sysctl", "-w", &format!("{key}={value}")])
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Running commands

fn is_executable(p: &Path) -> bool {
    fs::metadata(p).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

/// A `Command` for iproute2's `ip`, found as [`check_ip_binary`] finds it
/// (falls back to plain `ip`, whose spawn error then says it is missing).
pub fn ip_command() -> Command {
    Command::new(ip_binary().unwrap_or_else(|| PathBuf::from("ip")))
}

/// PATH first, then the sbin directories a non-root PATH often lacks.
fn ip_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join("ip"))
        .find(|p| is_executable(p))
}

/// Fail early, with a hint, when iproute2 is missing.
pub fn check_ip_binary() -> Result<(), LabError> {
    ip_binary().map(|_| ()).ok_or(LabError::IpNotFound)
}

/// Root, or both capabilities `ip netns add` needs (unshare + bind mount, and
/// link configuration).
fn check_privileges() -> Result<(), LabError> {
    const CAP_NET_ADMIN: u32 = 12;
    const CAP_SYS_ADMIN: u32 = 21;
    let cap_eff = fs::read_to_string("/proc/self/status").ok().and_then(|s| {
        s.lines().find_map(|l| l.strip_prefix("CapEff:")).and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
    });
    let ok = match cap_eff {
        Some(caps) => caps & (1 << CAP_NET_ADMIN) != 0 && caps & (1 << CAP_SYS_ADMIN) != 0,
        None => nix::unistd::geteuid().is_root(),
    };
    if ok { Ok(()) } else { Err(LabError::NotRoot) }
}

/// Labs are built from the host's network namespace only: `ip netns exec`
/// also gives its command a private mount of /run/netns, so namespaces named
/// there are dead references on the host ("Peer netns reference is
/// invalid").
fn check_host_netns() -> Result<(), LabError> {
    match crate::sys::control::netns_label() {
        Ok(Some(ns)) => Err(LabError::NotInHostNetns { ns }),
        _ => Ok(()),
    }
}

fn run(cmd: &Cmd) -> Result<(), LabError> {
    run_output(cmd).map(|_| ())
}

/// Runs `cmd` (an `ip` command line) and returns its stdout.
fn run_output(cmd: &Cmd) -> Result<String, LabError> {
    let ip = ip_binary().ok_or(LabError::IpNotFound)?;
    log::debug!("lab: run cmd={cmd:?}", cmd = cmd.to_string());
    let out = Command::new(ip)
        .args(&cmd.argv[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|err| LabError::CmdSpawn { cmd: cmd.to_string(), err })?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut stderr: String = stderr.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ");
    if stderr.is_empty() {
        stderr = format!("{}", out.status);
    }
    Err(LabError::CmdFailed { cmd: cmd.to_string(), stderr })
}

/// How long [`Lab::up`] waits for the veth pair to be operationally up, and
/// a sensible bound for [`wait_link_up`] after attaching to the TUN.
pub const LINK_UP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The operational state (RFC 2863) of `dev` in network namespace `ns` as
/// `ip -o link show` prints it: `UP`, `DOWN`, `UNKNOWN`, `LOWERLAYERDOWN`...
pub fn operstate(ns: &str, dev: &str) -> Result<String, LabError> {
    let out = run_output(&Cmd::new(&["ip", "-n", ns, "-o", "link", "show", "dev", dev]))?;
    let mut words = out.split_whitespace();
    Ok(words.by_ref().find(|w| *w == "state").and_then(|_| words.next()).unwrap_or("UNKNOWN").to_string())
}

/// Wait until `dev` in `ns` is operationally UP, polling `ip link`.
///
/// Carrier comes on at once (`ip link set up` on the second veth end,
/// attaching to a TUN), but the kernel replaces the device's transmit qdisc
/// (`noop`, which drops everything and counts it as TX dropped) with the real
/// one only when its linkwatch work runs, which needs RTNL and is late when
/// other namespaces are being built or torn down. Until then whatever the
/// device sends is lost: the Linux host's first ARP request (retried only
/// after 1 s), a SYN forwarded to the TUN (retransmitted after 1 s), a UDP
/// datagram (never). linkwatch sets the operational state to UP in the same
/// step in which it activates the qdisc, so UP means the device transmits.
pub fn wait_link_up(ns: &str, dev: &str, timeout: std::time::Duration) -> Result<(), LabError> {
    let start = std::time::Instant::now();
    loop {
        let state = operstate(ns, dev)?;
        if state == "UP" {
            log::debug!("lab: {dev} in {ns} up after {} us", start.elapsed().as_micros());
            return Ok(());
        }
        if start.elapsed() >= timeout {
            return Err(LabError::LinkNotUp {
                ns: ns.to_string(),
                dev: dev.to_string(),
                state,
                waited: start.elapsed(),
            });
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

fn run_step(step: &Step) -> Result<(), LabError> {
    match step {
        Step::NetnsAdd(_) | Step::Ip(_) => run(&step.cmd()),
        Step::Sysctl { ns, key, value } => {
            log::debug!("lab: sysctl ns={ns} {key}={value}");
            match netns::write_sysctl(ns, key, value) {
                // A kernel without IPv6 sends no IPv6 onto the TUN anyway.
                Err(NetnsError::NoSuchSysctl { .. })
                    if key.starts_with("net.ipv6.") && !Path::new("/proc/sys/net/ipv6/conf").exists() =>
                {
                    log::debug!("lab: skip {key}: no ipv6 in this kernel");
                    Ok(())
                }
                r => r.map_err(LabError::from),
            }
        }
    }
}

// ---------------------------------------------------------------------------
// State files

fn state_path(name: &str) -> PathBuf {
    Path::new(STATE_DIR).join(name)
}

/// The state file's text: `key=value` lines.
fn state_text(spec: &LabSpec, created_pid: u32) -> String {
    let a = spec.addrs();
    let mut s = format!(
        "name={}\nsubnet={}\nlinux_addr={}\ncloselab_addr={}\nrouter_addr={}\ntun={}\ncreated_pid={}\n",
        spec.name,
        spec.cidr(),
        a.linux,
        a.closelab,
        a.router,
        a.tun,
        created_pid
    );
    for (key, value) in &spec.peer_sysctls {
        s.push_str(&format!("peer_sysctl={key}={value}\n"));
    }
    s
}

/// What a state file says (unknown keys are ignored, for later versions).
#[derive(Debug, Clone, PartialEq, Eq)]
struct StateFile {
    spec: LabSpec,
    created_pid: Option<u32>,
}

fn parse_state(text: &str) -> Option<StateFile> {
    let (mut name, mut subnet, mut created_pid, mut peer) = (None, None, None, Vec::new());
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        match k {
            "name" => name = Some(v),
            "subnet" => subnet = Some(v),
            "created_pid" => created_pid = v.parse().ok(),
            "peer_sysctl" => {
                if let Some((k, v)) = v.split_once('=') {
                    peer.push((k.to_string(), v.to_string()));
                }
            }
            _ => {}
        }
    }
    let mut spec = LabSpec::new(name?, Some(subnet?)).ok()?;
    spec.peer_sysctls = peer;
    Some(StateFile { spec, created_pid })
}

fn write_state(spec: &LabSpec) -> Result<(), LabError> {
    let path = state_path(&spec.name);
    let err = |op, err| LabError::StateFile { path: path.clone(), op, err };
    fs::create_dir_all(STATE_DIR).map_err(|e| err("create the directory of", e))?;
    let tmp = Path::new(STATE_DIR).join(format!(".{}.tmp", spec.name));
    fs::write(&tmp, state_text(spec, std::process::id())).map_err(|e| err("write", e))?;
    fs::rename(&tmp, &path).map_err(|e| err("write", e))
}

fn read_state(name: &str) -> Option<StateFile> {
    parse_state(&fs::read_to_string(state_path(name)).ok()?)
}

/// The addresses of a lab that is up (its state file and both namespaces
/// exist).
pub fn load(name: &str) -> Result<LabAddrs, LabError> {
    validate_name(name)?;
    let state = read_state(name).ok_or_else(|| LabError::NotFound { name: name.to_string() })?;
    let addrs = state.spec.addrs();
    if !netns::exists(&addrs.ns_closelab) || !netns::exists(&addrs.ns_linux) {
        return Err(LabError::NotFound { name: name.to_string() });
    }
    Ok(addrs)
}

/// Remove the state file; true if there was one.
fn remove_state(name: &str) -> Result<bool, LabError> {
    let path = state_path(name);
    match fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(err) => Err(LabError::StateFile { path, op: "remove", err }),
    }
}

// ---------------------------------------------------------------------------
// The guard

/// A running lab. Dropping it removes the lab unless [`Lab::keep`] was called.
#[derive(Debug)]
pub struct Lab {
    spec: LabSpec,
    addrs: LabAddrs,
    armed: bool,
}

impl Lab {
    /// Build the lab: runs [`LabSpec::plan_up`] in order, writes the state
    /// file once both namespaces exist, and returns once both veth ends are
    /// operationally up ([`wait_link_up`]): the Linux host's first ARP
    /// request is then not lost. Fails if either namespace already exists;
    /// on any failure removes what it created.
    ///
    /// The TUN only gets carrier when an endpoint attaches: whoever attaches
    /// should [`wait_link_up`] on it before the first packet can arrive.
    pub fn up(spec: LabSpec) -> Result<Lab, LabError> {
        spec.validate()?;
        check_ip_binary()?;
        check_privileges()?;
        check_host_netns()?;
        let addrs = spec.addrs();
        for ns in [&addrs.ns_linux, &addrs.ns_closelab] {
            if netns::exists(ns) {
                return Err(LabError::AlreadyExists { name: spec.name.clone(), ns: ns.clone() });
            }
        }
        log::info!("lab: up name={} subnet={}", spec.name, spec.cidr());
        let mut created: Vec<String> = Vec::new();
        let mut wrote_state = false;
        let mut failure = None;
        for step in spec.steps() {
            let result = run_step(&step).and_then(|()| {
                if let Step::NetnsAdd(ns) = &step {
                    created.push(ns.clone());
                    if created.len() == 2 {
                        write_state(&spec)?;
                        wrote_state = true;
                    }
                }
                Ok(())
            });
            if let Err(cause) = result {
                // Lost a race with another `up` of the same name.
                failure = Some(match &step {
                    Step::NetnsAdd(ns) if !created.contains(ns) && netns::exists(ns) => {
                        LabError::AlreadyExists { name: spec.name.clone(), ns: ns.clone() }
                    }
                    _ => cause,
                });
                break;
            }
        }
        if failure.is_none() {
            // Not in the printed plan: carrier is on, but the veth pair only
            // transmits once the kernel has activated its qdiscs.
            failure = [(&addrs.ns_linux, &addrs.veth_linux), (&addrs.ns_closelab, &addrs.veth_closelab)]
                .into_iter()
                .find_map(|(ns, dev)| wait_link_up(ns, dev, LINK_UP_TIMEOUT).err());
        }
        if let Some(cause) = failure {
            return Err(match rollback(&spec.name, &created, wrote_state) {
                Ok(()) => cause,
                Err(cleanup) => LabError::Rollback { cause: Box::new(cause), cleanup: Box::new(cleanup) },
            });
        }
        Ok(Lab { spec, addrs, armed: true })
    }

    pub fn addrs(&self) -> &LabAddrs {
        &self.addrs
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    pub fn spec(&self) -> &LabSpec {
        &self.spec
    }

    /// Leave the lab up (for `closelab lab up`); `closelab lab down` removes it.
    pub fn keep(mut self) {
        self.armed = false;
    }

    /// Remove the lab now, reporting failures (Drop can only log them).
    pub fn down(mut self) -> Result<(), LabError> {
        self.armed = false;
        down(&self.spec.name).map(|_| ())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.armed
            && let Err(e) = down(&self.spec.name)
        {
            log::warn!("lab: cleanup of {} failed: {e}", self.spec.name);
        }
    }
}

/// Remove only what this `up` created, newest first.
fn rollback(name: &str, created: &[String], wrote_state: bool) -> Result<(), LabError> {
    log::debug!("lab: rollback name={name}");
    let mut first_err = None;
    for ns in created.iter().rev() {
        if netns::exists(ns)
            && let Err(e) = run(&Cmd::new(&["ip", "netns", "del", ns]))
        {
            first_err.get_or_insert(e);
        }
    }
    if wrote_state && let Err(e) = remove_state(name) {
        first_err.get_or_insert(e);
    }
    first_err.map_or(Ok(()), Err)
}

// ---------------------------------------------------------------------------
// down, down --all, status

/// What [`down`] removed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DownReport {
    pub name: String,
    pub namespaces_removed: Vec<String>,
    pub state_file_removed: bool,
    /// The lab's control socket file, left behind by an endpoint that was
    /// killed (SIGKILL cannot run its cleanup).
    pub control_socket_removed: bool,
}

impl DownReport {
    pub fn removed_anything(&self) -> bool {
        !self.namespaces_removed.is_empty() || self.state_file_removed || self.control_socket_removed
    }
}

/// The control socket file an endpoint in lab `name` serves.
fn control_socket(name: &str) -> PathBuf {
    let target = crate::sys::control::Target::Lab(name.to_string());
    Path::new(crate::sys::control::CTL_DIR).join(crate::sys::control::file_name(&target, None))
}

/// Removes the lab's control socket file if no endpoint answers on it
/// (a live one removes its own file when it exits). Whether it did.
fn remove_stale_control_socket(name: &str) -> Result<bool, LabError> {
    let path = control_socket(name);
    match std::os::unix::net::UnixStream::connect(&path) {
        Ok(_) => Ok(false),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(_) => match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(err) => Err(LabError::ControlSocket { path, err }),
        },
    }
}

/// The commands [`down`] runs (the last one it does from Rust).
pub fn dry_run_down(name: &str) -> Vec<Cmd> {
    vec![
        Cmd::new(&["ip", "netns", "del", &format!("{name}-linux")]),
        Cmd::new(&["ip", "netns", "del", &format!("{name}-closelab")]),
        Cmd::new(&["rm", "-f", &state_path(name).to_string_lossy()]),
        Cmd::new(&["rm", "-f", &control_socket(name).to_string_lossy()]),
    ]
}

/// Remove a lab: both namespaces (with them the veth pair and the TUN) and
/// the state file. Idempotent: whatever does not exist is skipped.
///
/// A namespace that a process still runs in (an endpoint) is only unnamed by
/// `ip netns del`; the kernel frees it when that process exits.
pub fn down(name: &str) -> Result<DownReport, LabError> {
    validate_name(name)?;
    // Web servers from `lab serve` first: they would outlive their namespace.
    if let Err(e) = crate::sys::webserver::stop(name) {
        log::warn!("lab: down name={name}: {e}");
    }
    let mut report = DownReport { name: name.to_string(), ..DownReport::default() };
    for ns in [format!("{name}-linux"), format!("{name}-closelab")] {
        if netns::exists(&ns) {
            check_ip_binary()?;
            check_privileges()?;
            run(&Cmd::new(&["ip", "netns", "del", &ns]))?;
            report.namespaces_removed.push(ns);
        }
    }
    report.state_file_removed = remove_state(name)?;
    report.control_socket_removed = remove_stale_control_socket(name)?;
    if report.removed_anything() {
        log::info!("lab: down name={name} removed={:?}", report.namespaces_removed);
    }
    Ok(report)
}

/// Every lab this host knows: names with a state file, plus names `X` with
/// both `X-linux` and `X-closelab` namespaces (built before a crash).
fn known_labs() -> Result<BTreeSet<String>, LabError> {
    let mut names = BTreeSet::new();
    match fs::read_dir(STATE_DIR) {
        Ok(dir) => {
            for entry in dir {
                let entry = entry.map_err(|err| LabError::Scan { path: STATE_DIR.into(), err })?;
                if let Some(name) = entry.file_name().to_str()
                    && validate_name(name).is_ok()
                {
                    names.insert(name.to_string());
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(err) => {
            return Err(LabError::Scan { path: STATE_DIR.into(), err });
        }
    }
    let all = netns::list().map_err(|err| LabError::Scan { path: netns::NETNS_RUN_DIR.into(), err })?;
    for ns in &all {
        if let Some(name) = ns.strip_suffix("-linux")
            && validate_name(name).is_ok()
            && all.contains(&format!("{name}-closelab"))
        {
            names.insert(name.to_string());
        }
    }
    Ok(names)
}

/// Remove every lab: those with a state file and every `X-linux`/`X-closelab`
/// pair (a lab that crashed before writing one). Returns the names removed.
pub fn down_all() -> Result<Vec<String>, LabError> {
    down_all_matching(|_| true)
}

/// `down_all` restricted to some names (tests must not remove each other's labs).
fn down_all_matching(keep_going: impl Fn(&str) -> bool) -> Result<Vec<String>, LabError> {
    let mut removed = Vec::new();
    for name in known_labs()? {
        if keep_going(&name) && down(&name)?.removed_anything() {
            removed.push(name);
        }
    }
    Ok(removed)
}

/// One lab as `status` sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabStatus {
    pub name: String,
    /// From the state file; `None` for a lab that crashed before writing it.
    pub addrs: Option<LabAddrs>,
    pub subnet: Option<String>,
    pub peer_sysctls: Vec<(String, String)>,
    pub state_file: bool,
    pub created_pid: Option<u32>,
    pub ns_linux_exists: bool,
    pub ns_closelab_exists: bool,
    /// Processes with a thread in `<NAME>-closelab` or the lab's TUN open:
    /// running endpoints.
    pub endpoint_pids: Vec<u32>,
}

/// Every known lab, by name.
pub fn status() -> Result<Vec<LabStatus>, LabError> {
    let mut out = Vec::new();
    for name in known_labs()? {
        let state = read_state(&name);
        let (ns_linux, ns_closelab) = (format!("{name}-linux"), format!("{name}-closelab"));
        let ns_closelab_exists = netns::exists(&ns_closelab);
        let endpoint_pids =
            if ns_closelab_exists { endpoint_pids(&ns_closelab, &format!("{name}-t"))? } else { Vec::new() };
        out.push(LabStatus {
            addrs: state.as_ref().map(|s| s.spec.addrs()),
            subnet: state.as_ref().map(|s| s.spec.cidr()),
            peer_sysctls: state.as_ref().map(|s| s.spec.peer_sysctls.clone()).unwrap_or_default(),
            state_file: state_path(&name).exists(),
            created_pid: state.and_then(|s| s.created_pid),
            ns_linux_exists: netns::exists(&ns_linux),
            ns_closelab_exists,
            endpoint_pids,
            name,
        });
    }
    Ok(out)
}

/// Pids with any thread in the namespace (`/proc/PID/task/TID/ns/net` has the
/// namespace's inode) or an fd attached to the TUN (fdinfo `iff:\tNAME`):
/// an endpoint may enter the namespace only to open the TUN. Processes that
/// vanish or cannot be read while scanning are skipped.
fn endpoint_pids(ns: &str, tun: &str) -> Result<Vec<u32>, LabError> {
    let id = match netns::ns_id(ns) {
        Ok(id) => id,
        Err(NetnsError::NotFound { .. }) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let iff = format!("iff:\t{tun}");
    let proc_dir = fs::read_dir("/proc").map_err(|err| LabError::Scan { path: "/proc".into(), err })?;
    let mut pids = Vec::new();
    for entry in proc_dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let base = entry.path();
        let in_ns = fs::read_dir(base.join("task"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|t| fs::metadata(t.path().join("ns/net")).map(|m| (m.dev(), m.ino()) == id).unwrap_or(false));
        let has_tun = in_ns
            || fs::read_dir(base.join("fd")).into_iter().flatten().flatten().any(|fd| {
                fs::read_link(fd.path()).is_ok_and(|t| t == Path::new("/dev/net/tun"))
                    && fs::read_to_string(base.join("fdinfo").join(fd.file_name()))
                        .is_ok_and(|info| info.lines().any(|l| l == iff))
            });
        if in_ns || has_tun {
            pids.push(pid);
        }
    }
    pids.sort_unstable();
    Ok(pids)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::require_root;

    fn demo() -> LabSpec {
        let mut spec = LabSpec::new("demo", None).unwrap();
        spec.add_peer_sysctl("net.ipv4.tcp_fin_timeout", "5").unwrap();
        spec
    }

    // Tests for names, subnets and peer sysctls.

    #[test]
    fn test_name_validation() {
        for ok in ["demo", "a", "lab-1", "abcdefghij", "x9-"] {
            assert!(validate_name(ok).is_ok(), "{ok} refused");
        }
        for bad in ["", "1abc", "-a", "Demo", "abcdefghijk", "a_b", "a.b", "a/b", "é"] {
            assert!(validate_name(bad).is_err(), "{bad} accepted");
        }
        assert_eq!(
            LabSpec::new("Demo", None).unwrap_err().to_string(),
            "invalid lab name \"Demo\": use 1 to 10 characters a-z, 0-9 or '-', starting with a letter"
        );
    }

    #[test]
    fn test_subnet_parsing() {
        assert_eq!(parse_subnet(DEFAULT_SUBNET).unwrap(), (Ipv4Addr::new(10, 201, 0, 0), 24));
        assert_eq!(parse_subnet("172.16.0.0/12").unwrap(), (Ipv4Addr::new(172, 16, 0, 0), 12));
        let err = |s: &str| parse_subnet(s).unwrap_err().to_string();
        assert_eq!(
            err("10.201.0.0/25"),
            "invalid subnet \"10.201.0.0/25\": /25 is not allowed: the prefix must be /24 or wider (at most /8)"
        );
        assert_eq!(
            err("10.201.0.5/24"),
            "invalid subnet \"10.201.0.5/24\": host bits are set; did you mean 10.201.0.0/24?"
        );
        assert_eq!(err("10.201.0.0"), "invalid subnet \"10.201.0.0\": expected an IPv4 CIDR like 10.201.0.0/24");
        for bad in ["fd00::/64", "10.201.0.0/x", "10.0.0.0/7", "127.0.0.0/8", "224.0.0.0/8", ""] {
            assert!(parse_subnet(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn test_addrs() {
        let a = LabSpec::new("demo", None).unwrap().addrs();
        assert_eq!(a.linux, Ipv4Addr::new(10, 201, 0, 1));
        assert_eq!(a.closelab, Ipv4Addr::new(10, 201, 0, 2));
        assert_eq!(a.router, Ipv4Addr::new(10, 201, 0, 254));
        assert_eq!(a.prefix, 24);
        assert_eq!(
            (a.tun.as_str(), a.ns_linux.as_str(), a.ns_closelab.as_str()),
            ("demo-t", "demo-linux", "demo-closelab")
        );
        assert_eq!((a.veth_linux.as_str(), a.veth_closelab.as_str()), ("demo-vl", "demo-vc"));
        let wide = LabSpec::new("wide", Some("10.1.0.0/16")).unwrap().addrs();
        assert_eq!(wide.router, Ipv4Addr::new(10, 1, 255, 254));
        // The longest name still fits IFNAMSIZ (15 bytes + NUL).
        let long = LabSpec::new("abcdefghij", None).unwrap().addrs();
        assert!(long.veth_closelab.len() <= 15 && long.tun.len() <= 15);
    }

    #[test]
    fn test_tw_recycle_refused() {
        let text = "net.ipv4.tcp_tw_recycle was removed in Linux 4.12 because it broke clients behind NAT; it cannot be set (use tcp_tw_reuse for outgoing connections, or fix who closes first)";
        assert_eq!(validate_peer_sysctl("net.ipv4.tcp_tw_recycle", "1").unwrap_err().to_string(), text);
        assert_eq!(parse_peer_sysctl("net.ipv4.tcp_tw_recycle=0").unwrap_err().to_string(), text);
        let mut spec = demo();
        assert_eq!(spec.add_peer_sysctl("net.ipv4.tcp_tw_recycle", "1").unwrap_err().to_string(), text);
        // A spec built by hand is checked again by up().
        spec.peer_sysctls.push(("net.ipv4.tcp_tw_recycle".into(), "1".into()));
        assert_eq!(spec.validate().unwrap_err().to_string(), text);
    }

    #[test]
    fn test_peer_sysctl_validation() {
        assert_eq!(
            parse_peer_sysctl("net.ipv4.tcp_fin_timeout=5").unwrap(),
            ("net.ipv4.tcp_fin_timeout".to_string(), "5".to_string())
        );
        assert!(parse_peer_sysctl("net.core.somaxconn = 4096").is_ok());
        assert!(parse_peer_sysctl("net.ipv4.ip_local_port_range=40000 40100").is_ok());
        assert_eq!(
            parse_peer_sysctl("kernel.pid_max=10").unwrap_err().to_string(),
            "cannot set peer sysctl \"kernel.pid_max\": only net.ipv4.tcp_*, net.core.somaxconn, net.ipv4.ip_local_port_range and net.ipv4.ip_local_reserved_ports can be set on the peer"
        );
        assert_eq!(
            parse_peer_sysctl("net/ipv4/tcp_fin_timeout=5").unwrap_err().to_string(),
            "cannot set peer sysctl \"net/ipv4/tcp_fin_timeout\": allowed characters are a-z, 0-9, '_' and '.'"
        );
        assert!(parse_peer_sysctl("net.ipv4.tcp_fin_timeout").is_err());
        assert!(parse_peer_sysctl("net.ipv4.tcp_fin_timeout=").is_err());
        assert!(validate_peer_sysctl("net.ipv4.tcp_fin_timeout", "5\n6").is_err());
    }

    // Tests for the plan.

    #[test]
    fn test_plan_up_exact() {
        let plan: Vec<String> = demo().plan_up().iter().map(|c| c.to_string()).collect();
        assert_eq!(
            plan,
            [
                "ip netns add demo-linux",
                "ip netns add demo-closelab",
                "ip -n demo-linux link set dev lo up",
                "ip -n demo-closelab link set dev lo up",
                "ip -n demo-linux link add demo-vl type veth peer name demo-vc netns demo-closelab",
                "ip -n demo-closelab tuntap add dev demo-t mode tun",
                "ip -n demo-closelab link set dev demo-t mtu 1500",
                "ip netns exec demo-closelab sysctl -w net.ipv4.ip_forward=1",
                "ip netns exec demo-closelab sysctl -w net.ipv4.conf.demo-vc.proxy_arp=1",
                "ip netns exec demo-closelab sysctl -w net.ipv4.neigh.demo-vc.proxy_delay=0",
                "ip netns exec demo-closelab sysctl -w net.ipv4.conf.all.rp_filter=0",
                "ip netns exec demo-closelab sysctl -w net.ipv4.conf.demo-vc.rp_filter=0",
                "ip netns exec demo-closelab sysctl -w net.ipv4.conf.demo-t.rp_filter=0",
                "ip netns exec demo-closelab sysctl -w net.ipv6.conf.demo-t.disable_ipv6=1",
                "ip netns exec demo-linux sysctl -w net.ipv4.tcp_fin_timeout=5",
                "ip -n demo-linux addr add 10.201.0.1/24 dev demo-vl",
                "ip -n demo-closelab addr add 10.201.0.254/24 dev demo-vc",
                "ip -n demo-linux link set dev demo-vl up",
                "ip -n demo-closelab link set dev demo-vc up",
                "ip -n demo-closelab link set dev demo-t up",
                "ip -n demo-closelab route add 10.201.0.2/32 dev demo-t",
            ]
        );
        // Nothing in the plan runs outside the lab's two namespaces.
        for cmd in demo().plan_up() {
            let a = &cmd.argv;
            let scoped = (a[1] == "-n" && a[2].starts_with("demo-")) || (a[1] == "netns" && a[3].starts_with("demo-"));
            assert!(scoped, "{cmd} is not scoped to the lab");
        }
    }

    #[test]
    fn test_dry_run_down() {
        let cmds: Vec<String> = dry_run_down("demo").iter().map(|c| c.to_string()).collect();
        assert_eq!(
            cmds,
            [
                "ip netns del demo-linux",
                "ip netns del demo-closelab",
                "rm -f /run/closelab/labs/demo",
                "rm -f /run/closelab/ctl/lab-demo.sock"
            ]
        );
    }

    #[test]
    fn test_cmd_display_quotes() {
        let cmd = Cmd::new(&["ip", "netns", "exec", "x", "sysctl", "-w", "a.b=1 2", "it's", ""]);
        assert_eq!(cmd.to_string(), r"ip netns exec x sysctl -w 'a.b=1 2' 'it'\''s' ''");
    }

    #[test]
    fn test_unique_names() {
        let (a, b) = (LabSpec::unique(), LabSpec::unique());
        assert_ne!(a.name, b.name);
        for s in [&a, &b] {
            assert!(s.name.starts_with("cl") && s.name.len() == 8, "{}", s.name);
            assert!(validate_name(&s.name).is_ok());
            assert_eq!(s.cidr(), DEFAULT_SUBNET);
        }
    }

    #[test]
    fn test_state_file_roundtrip() {
        let spec = demo();
        let text = state_text(&spec, 42);
        assert_eq!(
            text,
            "name=demo\nsubnet=10.201.0.0/24\nlinux_addr=10.201.0.1\ncloselab_addr=10.201.0.2\n\
             router_addr=10.201.0.254\ntun=demo-t\ncreated_pid=42\n\
             peer_sysctl=net.ipv4.tcp_fin_timeout=5\n"
        );
        assert_eq!(parse_state(&text), Some(StateFile { spec, created_pid: Some(42) }));
        assert_eq!(parse_state("name=demo\n"), None);
    }

    // Root tests: each builds its own lab with a unique name.

    fn ip_ok(args: &[&str]) -> (bool, String) {
        let out = Command::new("ip").args(args).output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr))
    }

    fn root_sysctl(key: &str) -> String {
        fs::read_to_string(netns::sysctl_path(key).unwrap()).unwrap().trim_end().to_string()
    }

    fn assert_gone(name: &str) {
        assert!(!netns::exists(&format!("{name}-linux")), "{name}-linux left");
        assert!(!netns::exists(&format!("{name}-closelab")), "{name}-closelab left");
        assert!(!state_path(name).exists(), "state file of {name} left");
    }

    #[test]
    fn test_up_builds_lab_and_down_removes_it() {
        if !require_root("test_up_builds_lab_and_down_removes_it") {
            return;
        }
        let forward_before = root_sysctl("net.ipv4.ip_forward");
        let key = "net.ipv4.tcp_fin_timeout";
        let fin_before = root_sysctl(key);
        let value = if fin_before == "5" { "6" } else { "5" };
        let mut spec = LabSpec::unique();
        spec.add_peer_sysctl(key, value).unwrap();
        let lab = Lab::up(spec).unwrap();
        let a = lab.addrs().clone();
        let name = lab.name().to_string();
        for (ns, dev) in [(&a.ns_linux, &a.veth_linux), (&a.ns_closelab, &a.veth_closelab), (&a.ns_closelab, &a.tun)] {
            let (ok, out) = ip_ok(&["-n", ns, "link", "show", "dev", dev]);
            assert!(ok && out.contains(",UP"), "{dev} in {ns}: {out}");
        }
        let (_, route) = ip_ok(&["-n", &a.ns_closelab, "route", "show", "10.201.0.2/32"]);
        assert!(route.contains(&format!("dev {}", a.tun)), "{route}");
        let (_, addrs) = ip_ok(&["-n", &a.ns_linux, "-4", "addr", "show", "dev", &a.veth_linux]);
        assert!(addrs.contains("inet 10.201.0.1/24"), "{addrs}");
        let (_, addrs) = ip_ok(&["-n", &a.ns_closelab, "-4", "addr", "show"]);
        assert!(addrs.contains("inet 10.201.0.254/24"), "{addrs}");
        assert!(!addrs.contains("10.201.0.2/"), "endpoint address on a kernel interface: {addrs}");
        assert_eq!(netns::read_sysctl(&a.ns_closelab, "net.ipv4.ip_forward").unwrap(), "1");
        let proxy = format!("net.ipv4.conf.{}.proxy_arp", a.veth_closelab);
        assert_eq!(netns::read_sysctl(&a.ns_closelab, &proxy).unwrap(), "1");
        assert_eq!(root_sysctl("net.ipv4.ip_forward"), forward_before, "root ns changed");
        // The peer sysctl lands in the Linux namespace only; closelab's starts
        // from the compiled-in default (60).
        assert_eq!(netns::read_sysctl(&a.ns_linux, key).unwrap(), value);
        assert_eq!(netns::read_sysctl(&a.ns_closelab, key).unwrap(), "60");
        assert_eq!(root_sysctl(key), fin_before, "root namespace value changed");

        let st = status().unwrap();
        let me = st.iter().find(|s| s.name == name).expect("lab in status");
        assert!(me.state_file && me.ns_linux_exists && me.ns_closelab_exists);
        assert_eq!(me.addrs.as_ref(), Some(&a));
        assert_eq!(me.created_pid, Some(std::process::id()));
        assert!(me.endpoint_pids.is_empty(), "{:?}", me.endpoint_pids);
        assert_eq!(me.peer_sysctls, vec![(key.to_string(), value.to_string())]);

        lab.down().unwrap();
        assert_gone(&name);
        let again = down(&name).unwrap();
        assert!(!again.removed_anything(), "{again:?}");
    }

    #[test]
    fn test_linux_host_reaches_tun_through_proxy_arp() {
        if !require_root("test_linux_host_reaches_tun_through_proxy_arp") {
            return;
        }
        let lab = Lab::up(LabSpec::unique()).unwrap();
        let a = lab.addrs().clone();
        let tun_name = a.tun.clone();
        let tun =
            netns::in_netns(&a.ns_closelab, move || tun_tap::Iface::without_packet_info(&tun_name, tun_tap::Mode::Tun))
                .unwrap()
                .expect("attach to the lab's TUN");
        tun.set_non_blocking().unwrap();
        // Attaching turns the carrier on, but until the kernel has activated
        // the TUN's qdisc a packet forwarded to it is dropped (TX dropped 1)
        // and a UDP datagram is never sent again: wait as an endpoint must.
        wait_link_up(&a.ns_closelab, &a.tun, LINK_UP_TIMEOUT).unwrap();
        // An attached TUN is a running endpoint for `status`.
        let st = status().unwrap();
        let me = st.iter().find(|s| s.name == lab.name()).unwrap();
        // (contains, not equals: a process another test thread spawns at this
        // moment inherits the TUN descriptor until it execs.)
        assert!(me.endpoint_pids.contains(&std::process::id()), "{:?}", me.endpoint_pids);

        let dst = std::net::SocketAddrV4::new(a.closelab, 9);
        netns::in_netns(&a.ns_linux, move || {
            let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
            s.send_to(b"closelab", dst).unwrap();
        })
        .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        let mut buf = [0u8; 2048];
        loop {
            match tun.recv(&mut buf) {
                Ok(n) if n >= 20 && buf[0] >> 4 == 4 => {
                    assert_eq!(buf[9], 17, "not UDP");
                    assert_eq!(&buf[12..16], &a.linux.octets());
                    assert_eq!(&buf[16..20], &a.closelab.octets());
                    break;
                }
                Ok(n) => panic!("unexpected packet on the TUN: {:02x?}", &buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Proxy ARP answers at once (proxy_delay=0); 2 s is generous.
                    assert!(std::time::Instant::now() < deadline, "no packet reached the TUN");
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(e) => panic!("tun recv: {e}"),
            }
        }
        drop(tun);
        lab.down().unwrap();
    }

    #[test]
    fn test_up_rolls_back_on_failure() {
        if !require_root("test_up_rolls_back_on_failure") {
            return;
        }
        let mut spec = LabSpec::unique();
        let name = spec.name.clone();
        // Valid by name, missing in the kernel: fails after both namespaces,
        // the veth and the TUN exist.
        spec.add_peer_sysctl("net.ipv4.tcp_no_such_knob", "1").unwrap();
        let err = Lab::up(spec).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "sysctl net.ipv4.tcp_no_such_knob does not exist in network namespace {name}-linux (no /proc/sys/net/ipv4/tcp_no_such_knob)"
            )
        );
        assert_gone(&name);
    }

    #[test]
    fn test_up_refuses_existing_namespace() {
        if !require_root("test_up_refuses_existing_namespace") {
            return;
        }
        let spec = LabSpec::unique();
        let name = spec.name.clone();
        let ns = format!("{name}-closelab");
        assert!(ip_ok(&["netns", "add", &ns]).0);
        let err = Lab::up(spec).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("lab {name} already exists (namespace {ns}); run `closelab lab down {name}`")
        );
        // Not ours: left alone by up, removed by down.
        assert!(netns::exists(&ns));
        assert!(!netns::exists(&format!("{name}-linux")));
        assert_eq!(down(&name).unwrap().namespaces_removed, vec![ns]);
        assert_gone(&name);
    }

    #[test]
    fn test_down_all_without_state_file() {
        if !require_root("test_down_all_without_state_file") {
            return;
        }
        let lab = Lab::up(LabSpec::unique()).unwrap();
        let name = lab.name().to_string();
        lab.keep();
        // As if `up` had crashed before writing the state file.
        assert!(remove_state(&name).unwrap());
        let st = status().unwrap();
        let me = st.iter().find(|s| s.name == name).expect("found by its namespaces");
        assert!(!me.state_file && me.addrs.is_none() && me.ns_linux_exists);
        // Other tests' labs are running: only this one goes.
        let removed = down_all_matching(|n| n == name).unwrap();
        assert_eq!(removed, vec![name.clone()]);
        assert_gone(&name);
        assert!(down_all_matching(|n| n == name).unwrap().is_empty());
    }
}
