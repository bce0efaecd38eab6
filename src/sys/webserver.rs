//! `closelab lab serve L apache|nginx|python`: a real web server in a lab's
//! Linux namespace, with a generated config and document root, so the
//! crawler (`connect --app get:…`) meets the TCP behaviour of the program
//! people run in production.
//!
//! Everything lives in `/run/closelab/web/<LAB>/<KIND>/` (config, pid file,
//! logs, the generated root); the server runs in its own process group and
//! keeps running after `lab serve` returns, like the lab itself, until
//! [`stop`] (called by `lab down`) ends it.

use std::fs;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::event::TcpState;

/// Where the servers' files live.
pub const WEB_DIR: &str = "/run/closelab/web";

/// The generated root: `/files/0001.txt` … `/files/NNNN.txt` exist,
/// `/big/1m.bin` and `/big/4m.bin` carry closelab's byte pattern
/// (byte i is i % 251), nginx serves the same files under `/chunked/`
/// with chunked encoding (through its SSI filter), and nothing under
/// `/missing/` exists.
pub const FILES: usize = 200;
pub const BIG: [(&str, usize); 2] = [("1m.bin", 1 << 20), ("4m.bin", 4 << 20)];

/// The body of `/files/NNNN.txt`.
pub fn file_body(i: usize) -> String {
    format!("closelab file {i:04}\n")
}

/// Which program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerKind {
    Apache,
    Nginx,
    Python,
}

impl ServerKind {
    pub fn parse(s: &str) -> Result<ServerKind, String> {
        match s {
            "apache" | "apache2" | "httpd" => Ok(ServerKind::Apache),
            "nginx" => Ok(ServerKind::Nginx),
            "python" | "python3" => Ok(ServerKind::Python),
            _ => Err(format!("unknown web server `{s}` (expected apache, nginx or python)")),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ServerKind::Apache => "apache",
            ServerKind::Nginx => "nginx",
            ServerKind::Python => "python",
        }
    }

    fn binary(self) -> &'static str {
        match self {
            ServerKind::Apache => "apache2",
            ServerKind::Nginx => "nginx",
            ServerKind::Python => "python3",
        }
    }
}

/// A validated `lab serve` request.
#[derive(Clone, Debug)]
pub struct ServeSpec {
    pub lab: String,
    pub kind: ServerKind,
    pub port: u16,
    /// Idle keep-alive connections are closed by the server after this long
    /// (Apache's `KeepAliveTimeout`, default 5 s; nginx's
    /// `keepalive_timeout`, default 75 s).
    pub keepalive_timeout: Option<Duration>,
    /// Serve this directory instead of the generated root.
    pub root: Option<PathBuf>,
}

/// A running server.
#[derive(Clone, Debug)]
pub struct Running {
    pub kind: ServerKind,
    pub pid: u32,
    pub addr: SocketAddr,
    pub root: PathBuf,
    pub dir: PathBuf,
}

fn dir_of(lab: &str, kind: ServerKind) -> PathBuf {
    Path::new(WEB_DIR).join(lab).join(kind.name())
}

/// Finds a program in PATH or the sbin directories (where Debian puts
/// apache2 and nginx, outside a user's PATH).
fn find_binary(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin", "/usr/bin"].iter().map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Writes the generated document root (idempotent).
pub fn write_root(root: &Path) -> Result<(), String> {
    let err = |p: &Path, e: std::io::Error| format!("cannot write {}: {e}", p.display());
    for d in ["files", "big"] {
        fs::create_dir_all(root.join(d)).map_err(|e| err(&root.join(d), e))?;
    }
    for i in 1..=FILES {
        let p = root.join(format!("files/{i:04}.txt"));
        fs::write(&p, file_body(i)).map_err(|e| err(&p, e))?;
    }
    for (name, size) in BIG {
        let p = root.join("big").join(name);
        let data: Vec<u8> = (0..size).map(crate::endpoint::app::pattern_byte).collect();
        fs::write(&p, data).map_err(|e| err(&p, e))?;
    }
    let p = root.join("index.html");
    fs::write(&p, "<html><body>closelab lab web server</body></html>\n").map_err(|e| err(&p, e))?;
    // The servers' workers run as nobody: everything world-readable,
    // whatever the umask.
    for p in [root.to_path_buf(), root.join("files"), root.join("big")] {
        set_mode(&p, 0o755)?;
    }
    for i in 1..=FILES {
        set_mode(&root.join(format!("files/{i:04}.txt")), 0o644)?;
    }
    for (name, _) in BIG {
        set_mode(&root.join("big").join(name), 0o644)?;
    }
    set_mode(&root.join("index.html"), 0o644)?;
    Ok(())
}

fn set_mode(p: &Path, mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).map_err(|e| format!("cannot chmod {}: {e}", p.display()))
}

fn secs_ms(d: Duration) -> String {
    format!("{}ms", d.as_millis().max(1))
}

/// Apache's config: one mpm_event server, static files, keep-alive on.
pub fn apache_conf(dir: &Path, root: &Path, ip: Ipv4Addr, port: u16, keepalive: Option<Duration>) -> String {
    let m = "/usr/lib/apache2/modules";
    let d = dir.display();
    let r = root.display();
    let ka = keepalive.map(secs_ms).unwrap_or_else(|| "5".into());
    format!(
        "# Generated by closelab lab serve.
LoadModule mpm_event_module {m}/mod_mpm_event.so
LoadModule authz_core_module {m}/mod_authz_core.so
LoadModule mime_module {m}/mod_mime.so
LoadModule dir_module {m}/mod_dir.so
ServerRoot {d}
ServerName closelab-lab
Listen {ip}:{port}
User nobody
Group nogroup
PidFile {d}/apache.pid
DefaultRuntimeDir {d}
Mutex file:{d} default
ErrorLog {d}/error.log
LogLevel warn
TypesConfig /dev/null
AddType text/plain .txt
AddType application/octet-stream .bin
KeepAlive On
KeepAliveTimeout {ka}
MaxKeepAliveRequests 0
StartServers 1
ServerLimit 2
ThreadsPerChild 32
MaxRequestWorkers 64
DocumentRoot {r}
<Directory />
    Require all denied
</Directory>
<Directory {r}>
    Require all granted
</Directory>
"
    )
}

/// nginx's config: one worker, static files, keep-alive on.
pub fn nginx_conf(dir: &Path, root: &Path, ip: Ipv4Addr, port: u16, keepalive: Option<Duration>) -> String {
    let d = dir.display();
    let r = root.display();
    let ka = keepalive.map(secs_ms).unwrap_or_else(|| "75s".into());
    format!(
        "# Generated by closelab lab serve.
daemon off;
worker_processes 1;
user nobody nogroup;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    types {{ text/plain txt; application/octet-stream bin; text/html html; }}
    default_type application/octet-stream;
    keepalive_timeout {ka};
    keepalive_requests 100000;
    server {{
        listen {ip}:{port};
        root {r};
        # Same files through the SSI filter: no Content-Length, chunked.
        location /chunked/ {{
            alias {r}/big/;
            ssi on;
            ssi_types *;
        }}
    }}
}}
"
    )
}

/// Starts the server and waits until it listens.
pub fn start(spec: &ServeSpec) -> Result<Running, String> {
    let addrs = crate::sys::lab::load(&spec.lab).map_err(|e| e.to_string())?;
    if spec.kind == ServerKind::Python && spec.keepalive_timeout.is_some() {
        return Err(
            "python's http.server answers HTTP/1.0 and closes after every response: --keepalive-timeout does not apply"
                .into(),
        );
    }
    let bin = find_binary(spec.kind.binary()).ok_or_else(|| {
        format!(
            "cannot find {} (install it: scripts/setup, or apt-get install {})",
            spec.kind.binary(),
            match spec.kind {
                ServerKind::Apache => "apache2",
                ServerKind::Nginx => "nginx",
                ServerKind::Python => "python3",
            }
        )
    })?;
    let dir = dir_of(&spec.lab, spec.kind);
    if let Some(pid) = read_pid(&dir)
        && alive(pid, &dir)
    {
        return Err(format!(
            "{} already runs in lab {} (pid {pid}); stop it with closelab lab down {}",
            spec.kind.name(),
            spec.lab,
            spec.lab
        ));
    }
    fs::create_dir_all(dir.join("tmp")).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    for p in [Path::new("/run/closelab"), Path::new(WEB_DIR), &Path::new(WEB_DIR).join(&spec.lab), &dir] {
        set_mode(p, 0o755)?;
    }
    let root = match &spec.root {
        Some(r) => {
            let r = fs::canonicalize(r).map_err(|e| format!("invalid --root {}: {e}", r.display()))?;
            if !r.is_dir() {
                return Err(format!("invalid --root {}: not a directory", r.display()));
            }
            r
        }
        None => {
            let r = dir.join("root");
            write_root(&r)?;
            r
        }
    };
    let ip = addrs.linux;
    let log =
        fs::File::create(dir.join("output.log")).map_err(|e| format!("cannot create log in {}: {e}", dir.display()))?;
    let mut cmd = crate::sys::lab::ip_command();
    cmd.args(["netns", "exec", &addrs.ns_linux]).arg(&bin);
    match spec.kind {
        ServerKind::Apache => {
            let conf = dir.join("apache.conf");
            write_file(&conf, &apache_conf(&dir, &root, ip, spec.port, spec.keepalive_timeout))?;
            cmd.arg("-f").arg(&conf).arg("-DFOREGROUND");
        }
        ServerKind::Nginx => {
            let conf = dir.join("nginx.conf");
            write_file(&conf, &nginx_conf(&dir, &root, ip, spec.port, spec.keepalive_timeout))?;
            cmd.arg("-p").arg(&dir).arg("-e").arg(dir.join("error.log")).arg("-c").arg(&conf);
        }
        ServerKind::Python => {
            cmd.args(["-m", "http.server", &spec.port.to_string(), "--bind", &ip.to_string(), "--directory"])
                .arg(&root);
        }
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        // Its own process group: Ctrl-C on the terminal that ran `lab
        // serve` does not reach it, and stop() ends all its workers.
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    let pid = child.id();
    let started = start_time(pid).unwrap_or_default();
    write_file(&dir.join("pid"), &format!("{pid} {started}\n"))?;
    // The child is not waited for here: `lab down` stops it; an exit
    // before it listens is reported below from its log.
    std::mem::forget(child);
    let addr = SocketAddr::new(ip.into(), spec.port);
    wait_listening(&addrs.ns_linux, addr, pid, &dir)?;
    log::info!("webserver: started kind={} pid={pid} addr={addr}", spec.kind.name());
    Ok(Running { kind: spec.kind, pid, addr, root, dir })
}

fn write_file(p: &Path, text: &str) -> Result<(), String> {
    let mut f = fs::File::create(p).map_err(|e| format!("cannot write {}: {e}", p.display()))?;
    f.write_all(text.as_bytes()).map_err(|e| format!("cannot write {}: {e}", p.display()))
}

/// Waits (5 s at most) until a socket listens on `addr` in the namespace,
/// as sock_diag sees it (no test connection that would leave a TIME-WAIT).
fn wait_listening(ns: &str, addr: SocketAddr, pid: u32, dir: &Path) -> Result<(), String> {
    let mut diag = crate::sys::netns::in_netns(ns, crate::sys::sockdiag::Diag::new)
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let start = Instant::now();
    loop {
        let socks = diag.dump_tcp_family(false).map_err(|e| e.to_string())?;
        if socks.iter().any(|s| s.state == TcpState::Listen && s.local == addr) {
            return Ok(());
        }
        if !alive(pid, dir) || start.elapsed() > Duration::from_secs(5) {
            let _ = stop_dir(dir);
            let log = fs::read_to_string(dir.join("output.log")).unwrap_or_default()
                + &fs::read_to_string(dir.join("error.log")).unwrap_or_default();
            let last = log.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no output").to_string();
            return Err(format!(
                "the web server did not start listening on {addr}: {last} (logs in {})",
                dir.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn read_pid(dir: &Path) -> Option<u32> {
    fs::read_to_string(dir.join("pid")).ok()?.split_whitespace().next()?.parse().ok()
}

/// Fields of /proc/PID/stat after the command name: state is the first,
/// the start time (clock ticks since boot) the 20th.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(stat.rsplit_once(')')?.1.split_whitespace().map(str::to_string).collect())
}

fn start_time(pid: u32) -> Option<u64> {
    stat_fields(pid)?.get(19)?.parse().ok()
}

/// The process is ours and has not exited: same pid and start time as
/// recorded (a recycled pid is never signalled), not a zombie.
fn alive(pid: u32, dir: &Path) -> bool {
    let Some(f) = stat_fields(pid) else { return false };
    if f.first().is_some_and(|s| s == "Z") {
        return false;
    }
    let recorded = fs::read_to_string(dir.join("pid")).ok().and_then(|t| t.split_whitespace().nth(1)?.parse().ok());
    recorded.is_some() && recorded == start_time(pid)
}

/// Stops the server whose files are in `dir`: SIGTERM to its process
/// group, SIGKILL after 3 s. True if one was running.
fn stop_dir(dir: &Path) -> Result<bool, String> {
    let Some(pid) = read_pid(dir) else { return Ok(false) };
    let running = alive(pid, dir);
    if running {
        let pg = Pid::from_raw(pid as i32);
        let _ = killpg(pg, Signal::SIGTERM);
        let start = Instant::now();
        while alive(pid, dir) && start.elapsed() < Duration::from_secs(3) {
            reap(pid);
            std::thread::sleep(Duration::from_millis(20));
        }
        if alive(pid, dir) {
            let _ = killpg(pg, Signal::SIGKILL);
        }
        reap(pid);
    }
    let _ = fs::remove_file(dir.join("pid"));
    Ok(running)
}

/// Collects the exit status if the server is our own child (the process
/// that ran `lab serve` and `lab down` in one, e.g. a test).
fn reap(pid: u32) {
    use nix::sys::wait::{WaitPidFlag, waitpid};
    let _ = waitpid(Pid::from_raw(pid as i32), Some(WaitPidFlag::WNOHANG));
}

/// Stops every server of a lab and removes its files; returns the kinds
/// that were running. Called by `lab down`.
pub fn stop(lab: &str) -> Result<Vec<ServerKind>, String> {
    let mut stopped = Vec::new();
    for kind in [ServerKind::Apache, ServerKind::Nginx, ServerKind::Python] {
        let dir = dir_of(lab, kind);
        if dir.exists() && stop_dir(&dir)? {
            stopped.push(kind);
        }
    }
    let lab_dir = Path::new(WEB_DIR).join(lab);
    if lab_dir.exists() {
        fs::remove_dir_all(&lab_dir).map_err(|e| format!("cannot remove {}: {e}", lab_dir.display()))?;
    }
    Ok(stopped)
}

/// Stops one server of a lab (a scenario's, after its run) and removes
/// its directory.
pub fn stop_kind(lab: &str, kind: ServerKind) -> Result<bool, String> {
    let dir = dir_of(lab, kind);
    if !dir.exists() {
        return Ok(false);
    }
    let was = stop_dir(&dir)?;
    fs::remove_dir_all(&dir).map_err(|e| format!("cannot remove {}: {e}", dir.display()))?;
    Ok(was)
}

/// Servers running in a lab (for `lab status`).
pub fn running(lab: &str) -> Vec<(ServerKind, u32)> {
    [ServerKind::Apache, ServerKind::Nginx, ServerKind::Python]
        .into_iter()
        .filter_map(|k| {
            let dir = dir_of(lab, k);
            let pid = read_pid(&dir)?;
            alive(pid, &dir).then_some((k, pid))
        })
        .collect()
}

/// `lab serve`'s output.
pub fn serve_cmd(spec: &ServeSpec, out: &mut dyn Write) -> Result<(), String> {
    let r = start(spec)?;
    let w = |out: &mut dyn Write, s: String| writeln!(out, "{s}").map_err(|e| format!("writing output: {e}"));
    w(out, format!("{} is serving http://{}/ in lab {} (pid {})", r.kind.name(), r.addr, spec.lab, r.pid))?;
    if spec.root.is_none() {
        w(
            out,
            format!(
                "  doc root {}: /files/0001.txt … /files/{FILES:04}.txt, /big/1m.bin, /big/4m.bin{}; nothing under /missing/",
                r.root.display(),
                if r.kind == ServerKind::Nginx { ", /chunked/1m.bin and /chunked/4m.bin (chunked)" } else { "" }
            ),
        )?;
    } else {
        w(out, format!("  doc root {}", r.root.display()))?;
    }
    let ka = match (r.kind, spec.keepalive_timeout) {
        (ServerKind::Python, _) => "no keep-alive (HTTP/1.0: the server closes after every response)".to_string(),
        (_, Some(d)) if d.subsec_millis() == 0 => format!("keep-alive timeout {}s", d.as_secs()),
        (_, Some(d)) => format!("keep-alive timeout {}", secs_ms(d)),
        (ServerKind::Apache, None) => "keep-alive timeout 5s (Apache's default)".into(),
        (ServerKind::Nginx, None) => "keep-alive timeout 75s (nginx's default)".into(),
    };
    w(out, format!("  {ka}; config and logs in {}", r.dir.display()))?;
    w(
        out,
        format!(
            "  crawl it: closelab connect --lab {} {} --app get:/files/0001.txt,/missing/1 --on-error leak",
            spec.lab, r.addr
        ),
    )?;
    w(out, format!("  stopped by: closelab lab down {}", spec.lab))
}
