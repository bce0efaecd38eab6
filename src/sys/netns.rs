//! Named network namespaces (`/run/netns/<name>`, as `ip netns add` makes them):
//! enter one on a thread, run code there, read and write its sysctls.
//!
//! `setns(2)` with `CLONE_NEWNET` moves only the calling *thread*, so
//! [`in_netns`] runs its closure on a fresh thread that enters the namespace
//! and then ends: no other thread of the process ever changes namespace.
//!
//! Two `/proc` traps decide how sysctls are read and written here:
//! - `/proc/sys/net/...` is resolved against the netns of the task that opens
//!   the file (`current->nsproxy->net_ns`), so a file opened on the entered
//!   thread reaches that namespace's value. The tests check that the root
//!   namespace's value stays unchanged.
//! - `/proc/net` (= `/proc/self/net`) follows the thread-group *leader*, not
//!   the calling thread; code running inside [`in_netns`] that wants the
//!   namespace's `/proc/net/*` must read `/proc/thread-self/net/*`.
//!
//! This module never writes a sysctl outside `net.*` (everything else is
//! global to the host) and refuses to write in the namespace the process or
//! pid 1 lives in, so a lab can never change the root namespace's settings.

use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use nix::errno::Errno;
use nix::sched::{CloneFlags, setns};

/// Where `ip netns add NAME` bind-mounts its namespaces.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// What went wrong entering a namespace or touching its sysctls.
#[derive(Debug)]
pub enum NetnsError {
    /// The name cannot be a file name in `/run/netns`.
    InvalidName { ns: String },
    /// `/run/netns/<ns>` does not exist.
    NotFound { ns: String },
    /// `/run/netns/<ns>` exists but could not be opened.
    Open { ns: String, err: io::Error },
    /// `setns(2)` refused.
    Enter { ns: String, errno: Errno },
    /// The helper thread could not be started.
    Spawn { ns: String, err: io::Error },
    /// The closure run inside the namespace panicked.
    Panicked { ns: String },
    /// A sysctl key outside `net.*` or with characters that are not part of a key.
    InvalidKey { key: String, reason: &'static str },
    /// A value with a newline or control character.
    InvalidValue { key: String, value: String },
    /// The key has no file under `/proc/sys` in that namespace.
    NoSuchSysctl { ns: String, key: String },
    /// Reading or writing the sysctl failed.
    Sysctl { ns: String, key: String, value: Option<String>, err: io::Error },
    /// The named namespace is the one this process (or pid 1) runs in.
    RootNamespace { ns: String },
}

impl fmt::Display for NetnsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetnsError::InvalidName { ns } => {
                write!(f, "invalid network namespace name {ns:?}")
            }
            NetnsError::NotFound { ns } => write!(f, "network namespace {ns} does not exist (no {NETNS_RUN_DIR}/{ns})"),
            NetnsError::Open { ns, err } => {
                write!(f, "cannot open network namespace {ns}: {}", io_cause(err))
            }
            NetnsError::Enter { ns, errno } => {
                write!(f, "cannot enter network namespace {ns}: {}", errno.desc().to_lowercase())?;
                if *errno == Errno::EPERM {
                    write!(f, " (run as root or grant CAP_SYS_ADMIN)")?;
                }
                Ok(())
            }
            NetnsError::Spawn { ns, err } => {
                write!(f, "cannot start a thread for network namespace {ns}: {}", io_cause(err))
            }
            NetnsError::Panicked { ns } => {
                write!(f, "code running in network namespace {ns} panicked")
            }
            NetnsError::InvalidKey { key, reason } => {
                write!(f, "invalid sysctl key {key:?}: {reason}")
            }
            NetnsError::InvalidValue { key, value } => {
                write!(f, "invalid value {value:?} for sysctl {key}: newlines and control characters are not allowed")
            }
            NetnsError::NoSuchSysctl { ns, key } => write!(
                f,
                "sysctl {key} does not exist in network namespace {ns} (no /proc/sys/{})",
                key.replace('.', "/")
            ),
            NetnsError::Sysctl { ns, key, value: Some(v), err } => {
                write!(f, "cannot set sysctl {key}={v} in network namespace {ns}: {}", io_cause(err))
            }
            NetnsError::Sysctl { ns, key, value: None, err } => {
                write!(f, "cannot read sysctl {key} in network namespace {ns}: {}", io_cause(err))
            }
            NetnsError::RootNamespace { ns } => write!(
                f,
                "refusing to write sysctls in network namespace {ns}: it is the namespace closelab or pid 1 runs in"
            ),
        }
    }
}

impl std::error::Error for NetnsError {}

/// `io::Error` text without the "(os error N)" suffix, lowercased first letter.
pub(crate) use crate::config::os_error_text as io_cause;

fn ns_path(ns: &str) -> Result<PathBuf, NetnsError> {
    if ns.is_empty() || ns == "." || ns == ".." || ns.contains('/') || ns.contains('\0') {
        return Err(NetnsError::InvalidName { ns: ns.to_string() });
    }
    Ok(PathBuf::from(NETNS_RUN_DIR).join(ns))
}

/// Whether `/run/netns/<ns>` exists.
pub fn exists(ns: &str) -> bool {
    ns_path(ns).map(|p| p.exists()).unwrap_or(false)
}

/// Names in `/run/netns`, sorted. A missing directory means no namespaces.
pub fn list() -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    match std::fs::read_dir(NETNS_RUN_DIR) {
        Ok(dir) => {
            for entry in dir {
                if let Some(name) = entry?.file_name().to_str() {
                    names.push(name.to_string());
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    names.sort();
    Ok(names)
}

/// The (device, inode) identity of a namespace, comparable with
/// `stat("/proc/<pid>/ns/net")`.
pub fn ns_id(ns: &str) -> Result<(u64, u64), NetnsError> {
    let path = ns_path(ns)?;
    match std::fs::metadata(&path) {
        Ok(m) => Ok((m.dev(), m.ino())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(NetnsError::NotFound { ns: ns.to_string() }),
        Err(err) => Err(NetnsError::Open { ns: ns.to_string(), err }),
    }
}

/// Move the *current thread* into the named network namespace.
///
/// Only this thread changes namespace; prefer [`in_netns`], which does it on
/// a thread of its own.
pub fn enter(ns_name: &str) -> Result<(), NetnsError> {
    let path = ns_path(ns_name)?;
    let file = File::open(&path).map_err(|err| {
        if err.kind() == io::ErrorKind::NotFound {
            NetnsError::NotFound { ns: ns_name.to_string() }
        } else {
            NetnsError::Open { ns: ns_name.to_string(), err }
        }
    })?;
    setns(&file, CloneFlags::CLONE_NEWNET).map_err(|errno| NetnsError::Enter { ns: ns_name.to_string(), errno })?;
    log::debug!("netns: entered ns={ns_name}");
    Ok(())
}

/// Run `f` on a new thread inside the named network namespace and return its
/// result. The thread ends with `f`, so the namespace change never leaks.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> Result<T, NetnsError> {
    let name = ns.to_string();
    let handle = std::thread::Builder::new()
        .name(format!("netns-{ns}"))
        .spawn(move || -> Result<T, NetnsError> {
            enter(&name)?;
            Ok(f())
        })
        .map_err(|err| NetnsError::Spawn { ns: ns.to_string(), err })?;
    handle.join().map_err(|_| NetnsError::Panicked { ns: ns.to_string() })?
}

/// `net.ipv4.tcp_fin_timeout` → `/proc/sys/net/ipv4/tcp_fin_timeout`, after
/// checking the key is a `net.*` key made of key characters.
pub fn sysctl_path(key: &str) -> Result<PathBuf, NetnsError> {
    let bad = |reason| NetnsError::InvalidKey { key: key.to_string(), reason };
    if !key.starts_with("net.") {
        return Err(bad("only per-namespace net.* sysctls can be set in a namespace"));
    }
    let mut path = PathBuf::from("/proc/sys");
    for part in key.split('.') {
        if part.is_empty() {
            return Err(bad("empty component"));
        }
        if !part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
            return Err(bad("allowed characters are a-z, A-Z, 0-9, '_', '-' and '.'"));
        }
        path.push(part);
    }
    Ok(path)
}

fn check_value(key: &str, value: &str) -> Result<(), NetnsError> {
    if value.is_empty() || value.chars().any(|c| c.is_control() && c != '\t') {
        return Err(NetnsError::InvalidValue { key: key.to_string(), value: value.to_string() });
    }
    Ok(())
}

fn same_file(a: &str, b: &str) -> Option<bool> {
    let a = std::fs::metadata(a).ok()?;
    let b = std::fs::metadata(b).ok()?;
    Some(a.dev() == b.dev() && a.ino() == b.ino())
}

/// Set a `net.*` sysctl inside the named namespace (the equivalent of
/// `ip netns exec NS sysctl -w key=value`, without needing procps).
pub fn write_sysctl(ns: &str, key: &str, value: &str) -> Result<(), NetnsError> {
    let path = sysctl_path(key)?;
    check_value(key, value)?;
    let (ns_s, key_s, value_s) = (ns.to_string(), key.to_string(), value.to_string());
    in_netns(ns, move || {
        // The entered thread vs the thread-group leader (/proc/self) and pid 1:
        // if they share the namespace, a write here would change the host.
        let here = "/proc/thread-self/ns/net";
        if same_file(here, "/proc/self/ns/net") == Some(true) || same_file(here, "/proc/1/ns/net") == Some(true) {
            return Err(NetnsError::RootNamespace { ns: ns_s });
        }
        let mut file = match std::fs::OpenOptions::new().write(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(NetnsError::NoSuchSysctl { ns: ns_s, key: key_s });
            }
            Err(err) => {
                return Err(NetnsError::Sysctl { ns: ns_s, key: key_s, value: Some(value_s), err });
            }
        };
        // One write(2) with the trailing newline, as sysctl(8) does.
        io::Write::write_all(&mut file, format!("{value_s}\n").as_bytes()).map_err(|err| NetnsError::Sysctl {
            ns: ns_s,
            key: key_s,
            value: Some(value_s),
            err,
        })
    })?
}

/// Read a `net.*` sysctl inside the named namespace, trimmed of the trailing
/// newline (multi-value sysctls keep their tabs).
pub fn read_sysctl(ns: &str, key: &str) -> Result<String, NetnsError> {
    let path = sysctl_path(key)?;
    let (ns_s, key_s) = (ns.to_string(), key.to_string());
    in_netns(ns, move || match std::fs::read_to_string(&path) {
        Ok(s) => Ok(s.trim_end_matches('\n').to_string()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(NetnsError::NoSuchSysctl { ns: ns_s, key: key_s }),
        Err(err) => Err(NetnsError::Sysctl { ns: ns_s, key: key_s, value: None, err }),
    })?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::require_root;
    use std::process::Command;
    use std::sync::atomic::{AtomicUsize, Ordering};

    static NEXT_ID: AtomicUsize = AtomicUsize::new(0);

    /// A namespace made with `ip netns add`, deleted on drop.
    struct TestNs(String);

    impl TestNs {
        fn new() -> TestNs {
            let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
            let name = format!("clnstest{}-{id}", std::process::id());
            let out = Command::new("ip").args(["netns", "add", &name]).output().unwrap();
            assert!(out.status.success(), "ip netns add {name}: {out:?}");
            TestNs(name)
        }
    }

    impl Drop for TestNs {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
        }
    }

    fn root_value(key: &str) -> String {
        std::fs::read_to_string(sysctl_path(key).unwrap()).unwrap().trim_end().to_string()
    }

    #[test]
    fn test_sysctl_path() {
        assert_eq!(
            sysctl_path("net.ipv4.tcp_fin_timeout").unwrap(),
            PathBuf::from("/proc/sys/net/ipv4/tcp_fin_timeout")
        );
        assert_eq!(
            sysctl_path("net.ipv4.conf.demo-vc.proxy_arp").unwrap(),
            PathBuf::from("/proc/sys/net/ipv4/conf/demo-vc/proxy_arp")
        );
        for bad in ["kernel.pid_max", "net..ipv4", "net.ipv4.", "net.ipv4/../../kernel", "net.a b"] {
            assert!(sysctl_path(bad).is_err(), "{bad} accepted");
        }
        assert_eq!(
            sysctl_path("vm.swappiness").unwrap_err().to_string(),
            "invalid sysctl key \"vm.swappiness\": only per-namespace net.* sysctls can be set in a namespace"
        );
    }

    #[test]
    fn test_invalid_names() {
        for bad in ["", ".", "..", "a/b"] {
            assert!(matches!(enter(bad), Err(NetnsError::InvalidName { .. })));
            assert!(!exists(bad));
        }
    }

    #[test]
    fn test_enter_missing_names_namespace() {
        let err = in_netns("closelab-no-such-ns", || ()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "network namespace closelab-no-such-ns does not exist (no /run/netns/closelab-no-such-ns)"
        );
    }

    #[test]
    fn test_write_sysctl_lands_in_namespace_only() {
        if !require_root("test_write_sysctl_lands_in_namespace_only") {
            return;
        }
        let ns = TestNs::new();
        let key = "net.ipv4.tcp_fin_timeout";
        let before = root_value(key);
        // A value nobody uses by default, so a leak into the root ns would show.
        let value = if before == "7" { "8" } else { "7" };
        write_sysctl(&ns.0, key, value).unwrap();
        assert_eq!(read_sysctl(&ns.0, key).unwrap(), value);
        // Seen the same way by an independent process inside the namespace.
        let out = Command::new("ip")
            .args(["netns", "exec", &ns.0, "cat", "/proc/sys/net/ipv4/tcp_fin_timeout"])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), value);
        assert_eq!(root_value(key), before, "root namespace value changed");
    }

    #[test]
    fn test_sysctl_missing_key_is_named() {
        if !require_root("test_sysctl_missing_key_is_named") {
            return;
        }
        let ns = TestNs::new();
        let err = write_sysctl(&ns.0, "net.ipv4.tcp_tw_recycle", "1").unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "sysctl net.ipv4.tcp_tw_recycle does not exist in network namespace {} (no /proc/sys/net/ipv4/tcp_tw_recycle)",
                ns.0
            )
        );
        assert!(matches!(read_sysctl(&ns.0, "net.ipv4.nope"), Err(NetnsError::NoSuchSysctl { .. })));
    }

    #[test]
    fn test_in_netns_moves_only_the_thread() {
        if !require_root("test_in_netns_moves_only_the_thread") {
            return;
        }
        let ns = TestNs::new();
        let mine = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
        let (inside, thread_dev) = in_netns(&ns.0, || {
            (
                std::fs::read_link("/proc/thread-self/ns/net").unwrap(),
                std::fs::read_to_string("/proc/thread-self/net/dev").unwrap(),
            )
        })
        .unwrap();
        assert_ne!(inside, mine);
        let (dev, ino) = ns_id(&ns.0).unwrap();
        let meta = std::fs::metadata("/proc/thread-self/ns/net").unwrap();
        assert_ne!((meta.dev(), meta.ino()), (dev, ino));
        assert_eq!(inside.to_string_lossy(), format!("net:[{ino}]"));
        // A fresh namespace has only loopback; /proc/thread-self/net shows it.
        let ifaces: Vec<&str> = thread_dev.lines().skip(2).map(|l| l.trim()).collect();
        assert_eq!(ifaces.len(), 1, "{thread_dev}");
        assert!(ifaces[0].starts_with("lo:"), "{thread_dev}");
        // This thread never moved.
        assert_eq!(std::fs::read_link("/proc/thread-self/ns/net").unwrap(), mine);
    }

    #[test]
    fn test_refuses_root_namespace() {
        if !require_root("test_refuses_root_namespace") {
            return;
        }
        // `ip netns attach NAME PID` names the namespace this process (and,
        // outside containers, pid 1) lives in: the root namespace the guard
        // must refuse. Our own pid always works where /proc/1 may be hidden.
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let name = format!("clnstestroot{}-{id}", std::process::id());
        let pid = std::process::id().to_string();
        let out = Command::new("ip").args(["netns", "attach", &name, &pid]).output().unwrap();
        assert!(out.status.success(), "ip netns attach {name} {pid} failed: {out:?}");
        let ns = TestNs(name);
        let key = "net.ipv4.tcp_fin_timeout";
        let before = root_value(key);
        // Writing the value it already has: even if the guard failed, nothing changes.
        let err = write_sysctl(&ns.0, key, &before).unwrap_err();
        assert!(matches!(err, NetnsError::RootNamespace { .. }), "{err}");
        assert_eq!(root_value(key), before);
    }
}
