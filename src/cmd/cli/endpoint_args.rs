//! The options every endpoint subcommand shares (`listen`, `connect`) and
//! the HTTP crawler's, validated into `ServeOptions`.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::cmd::serve::{Mode, Output, ServeOptions};
use crate::config;
use crate::endpoint::{AppKind, ClosePolicy, EndpointConfig, Policy};
use crate::fault::FaultRule;
use crate::sys::control::Target;
use crate::sys::run::StopWhen;
use crate::sys::tun::TunSpec;
use crate::view::TraceLevel;

/// The HTTP crawler's knobs (`connect --app get:…` or `--urls FILE`).
#[derive(Args)]
pub(crate) struct HttpArgs {
    /// URL list for the crawler: one /PATH or http://HOST/PATH per line (# comments); implies the crawler.
    #[arg(long, value_name = "FILE")]
    pub(crate) urls: Option<PathBuf>,
    /// Connections the crawler uses at once (keep-alive connections are reused from this pool).
    #[arg(long, default_value_t = 1)]
    pub(crate) pool: usize,
    /// Requests started per second (default: as fast as the pool allows), e.g. 50 or 0.5.
    #[arg(long)]
    pub(crate) rate: Option<f64>,
    /// How requests treat the connection.
    #[arg(long = "http", value_enum, default_value = "keep-alive")]
    pub(crate) http_mode: HttpModeArg,
    /// What happens to a connection whose response is not 2xx: release it (the fix) or leak it (the bug).
    #[arg(long, value_enum, default_value = "release")]
    pub(crate) on_error: OnErrorArg,
    /// Close pooled connections idle this long (HttpClient's evictIdleConnections).
    #[arg(long, value_name = "DUR")]
    pub(crate) evict_idle: Option<String>,
    /// Abort a request not answered this long after it started (connect included).
    #[arg(long, value_name = "DUR", default_value = "10s")]
    pub(crate) http_timeout: String,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum HttpModeArg {
    /// HTTP/1.1, persistent connections reused from the pool.
    KeepAlive,
    /// HTTP/1.1 with `Connection: close`: the server closes after each response.
    Close,
    /// HTTP/1.0: the server closes after each response.
    #[value(name = "1.0")]
    Http10,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum OnErrorArg {
    /// Release the connection like any other (back to the pool, or closed).
    Release,
    /// Never close or reuse it: the CLOSE_WAIT leak.
    Leak,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum CloseArg {
    /// closelab closes first: FIN-WAIT-1, FIN-WAIT-2, TIME-WAIT.
    Active,
    /// closelab closes after the peer's FIN: CLOSE-WAIT, LAST-ACK.
    Passive,
    /// closelab never closes: CLOSE-WAIT stays (the leak).
    Never,
    /// closelab sends RST: no TIME-WAIT anywhere.
    Abort,
    /// closelab shuts down its write side and keeps reading.
    Half,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum TraceArg {
    Segments,
    States,
    None,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum TwModelArg {
    /// closelab's TIME-WAIT table: Linux's rules, 60 s, ~100 bytes per entry.
    Linux,
    /// smoltcp's own TIME-WAIT socket: 10 s, buffers kept, SYN per --time-wait-syn.
    Smoltcp,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum TwSynArg {
    /// Replace TIME-WAIT with a new connection at once (as Linux does for a higher sequence number).
    Accept,
    /// Hand the SYN to the TIME-WAIT socket: smoltcp drops it and the client stalls.
    Drop,
}

#[derive(Args)]
pub(crate) struct EndpointArgs {
    /// TUN device to create (or attach to, if persistent).
    #[arg(long)]
    pub(crate) tun: Option<String>,
    /// closelab's own address with prefix, e.g. 10.201.0.2/24 (repeat for IPv4 and IPv6).
    #[arg(long = "addr")]
    pub(crate) addr: Vec<String>,
    /// Address of the kernel's side of the TUN link (default: first host of each --addr prefix).
    #[arg(long = "peer-addr")]
    pub(crate) peer_addr: Vec<String>,
    /// MTU of the TUN link.
    #[arg(long, default_value_t = 1500)]
    pub(crate) mtu: usize,
    /// Run in a lab's closelab namespace (see `closelab lab up`): no --tun/--addr needed.
    #[arg(long)]
    pub(crate) lab: Option<String>,
    /// Delay of the close: after ESTABLISHED (active, abort, half) or after the peer's FIN (passive).
    #[arg(long)]
    pub(crate) close_after: Option<String>,
    /// Like Linux (RFC 2525 §2.17): close() with unread received data sends RST, not FIN.
    #[arg(long)]
    pub(crate) rst_on_unread: bool,
    /// Exit 0 once this many connections are completely finished (TIME-WAIT included).
    #[arg(long)]
    pub(crate) exit_after: Option<u64>,
    /// Concurrent connections allowed; beyond it a SYN gets RST.
    #[arg(long, default_value_t = 100_000)]
    pub(crate) max_conns: usize,
    /// Print the event stream as JSON lines.
    #[arg(long)]
    pub(crate) json: bool,
    /// Write every segment that crossed the TUN to this pcap file.
    #[arg(long)]
    pub(crate) pcap: Option<PathBuf>,
    /// What the timeline shows: every segment, only state changes (and notes, faults, app calls), or nothing
    /// but the summary (bulk transfers then format nothing per segment; --pcap still gets every segment).
    #[arg(long, value_enum, default_value = "segments")]
    pub(crate) trace: TraceArg,
    /// Fault rule on the packet path (repeatable), e.g. "drop out ack after-fin 1st".
    #[arg(long = "fault")]
    pub(crate) faults: Vec<String>,
    /// Seed for initial sequence numbers and random faults (default: varies per run).
    #[arg(long)]
    pub(crate) seed: Option<u64>,
    /// Send keep-alives after this idle time.
    #[arg(long)]
    pub(crate) keepalive: Option<String>,
    /// Hold every segment this long on the TUN path (slow motion).
    #[arg(long)]
    pub(crate) slow: Option<String>,
    /// Reset a connection that gets no answer for this long (smoltcp's user timeout; any state).
    #[arg(long)]
    pub(crate) timeout: Option<String>,
    /// Who keeps TIME-WAIT: closelab's compact table with Linux's rules and close timers (the
    /// socket is freed), or smoltcp as it is (TIME-WAIT in its socket, fixed 10 s, a new SYN per
    /// --time-wait-syn, no FIN-WAIT-2 timeout, no retransmission limit).
    #[arg(long, value_enum, default_value = "linux")]
    pub(crate) time_wait_model: TwModelArg,
    /// TIME-WAIT length [default: 60s, Linux's TCP_TIMEWAIT_LEN].
    #[arg(long, value_name = "DUR")]
    pub(crate) time_wait: Option<String>,
    /// Ignore an RST in TIME-WAIT, like net.ipv4.tcp_rfc1337=1 (default: it ends TIME-WAIT, like 0).
    #[arg(long)]
    pub(crate) rfc1337: bool,
    /// Most connections in TIME-WAIT, like tcp_max_tw_buckets: past it a closing connection skips
    /// TIME-WAIT (noted and counted) [default: 262144].
    #[arg(long, value_name = "N")]
    pub(crate) max_tw: Option<usize>,
    /// Send RFC 7323 TCP timestamps, as Linux does with tcp_timestamps=1 (needed for the peer's
    /// tcp_tw_reuse).
    #[arg(long)]
    pub(crate) timestamps: bool,
    /// With --time-wait-model smoltcp: what to do with a new SYN for a 4-tuple in TIME-WAIT
    /// [default: accept].
    #[arg(long, value_enum)]
    pub(crate) time_wait_syn: Option<TwSynArg>,
    /// An orphaned FIN-WAIT-2 (closelab's application called close()) ends after this long,
    /// silently, like net.ipv4.tcp_fin_timeout [default: 60s].
    #[arg(long, value_name = "DUR")]
    pub(crate) fin_timeout: Option<String>,
    /// Retransmissions of a segment before the connection is dropped, like tcp_retries2
    /// [default: 15].
    #[arg(long, value_name = "N")]
    pub(crate) retries: Option<u32>,
    /// The same once closelab's application has closed, like tcp_orphan_retries (0 means 8)
    /// [default: 0].
    #[arg(long, value_name = "N")]
    pub(crate) orphan_retries: Option<u32>,
    /// SYN-ACK retransmissions before a half-open connection is freed, like tcp_synack_retries
    /// [default: 5].
    #[arg(long, value_name = "N")]
    pub(crate) synack_retries: Option<u32>,
    /// Receive and send buffer per connection.
    #[arg(long, default_value = "64k")]
    pub(crate) buffer: String,
    /// Half-open (SYN-RECEIVED) connections kept, like Linux's tcp_max_syn_backlog; they cost no buffers.
    #[arg(long, default_value_t = 4096)]
    pub(crate) syn_backlog: usize,
    /// Past the SYN backlog: answer SYNs with SYN cookies (on, like tcp_syncookies=1) or drop them (off).
    #[arg(long, value_enum, default_value = "on")]
    pub(crate) syncookies: OnOff,
    /// Memory budget of the connections (buffers included); past it new SYNs and handshake ACKs are dropped.
    #[arg(long, default_value = "1G")]
    pub(crate) max_memory: String,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum OnOff {
    On,
    Off,
}

pub(crate) fn close_policy(c: CloseArg) -> ClosePolicy {
    match c {
        CloseArg::Active => ClosePolicy::Active,
        CloseArg::Passive => ClosePolicy::Passive,
        CloseArg::Never => ClosePolicy::Never,
        CloseArg::Abort => ClosePolicy::Abort,
        CloseArg::Half => ClosePolicy::Half,
    }
}

/// The validation step: what the user typed → typed configuration.
pub(crate) fn serve_options(ep: EndpointArgs, app: &str, close: CloseArg, mode: Mode) -> Result<ServeOptions, String> {
    let app = AppKind::parse(app)?;
    let mut linux_ns = None;
    let (addrs, peer_addrs, tun_name, netns, configure) = match &ep.lab {
        Some(lab) => {
            if ep.tun.is_some() || !ep.addr.is_empty() || !ep.peer_addr.is_empty() {
                return Err("--lab sets the TUN device and addresses; leave out --tun, --addr and --peer-addr".into());
            }
            let info = crate::sys::lab::load(lab).map_err(|e| e.to_string())?;
            let cidr = config::parse_cidr(&format!("{}/{}", info.closelab, info.prefix))?;
            linux_ns = Some(info.ns_linux.clone());
            (vec![cidr], Vec::new(), info.tun.clone(), Some(info.ns_closelab.clone()), false)
        }
        None => {
            let tun = ep.tun.clone().ok_or("--tun NAME is required (or --lab NAME)")?;
            if ep.addr.is_empty() {
                return Err("--addr is required: closelab's own address with prefix, e.g. --addr 10.201.0.2/24".into());
            }
            let addrs = ep.addr.iter().map(|a| config::parse_cidr(a)).collect::<Result<Vec<_>, _>>()?;
            if addrs.len() > crate::endpoint::MAX_ADDRS {
                return Err(format!(
                    "at most {} --addr (smoltcp's interface holds {} addresses, e.g. one IPv4 and one IPv6)",
                    crate::endpoint::MAX_ADDRS,
                    crate::endpoint::MAX_ADDRS
                ));
            }
            let mut peers = Vec::new();
            if ep.peer_addr.is_empty() {
                for a in &addrs {
                    let ip = config::first_host(a)?;
                    peers.push(config::parse_cidr(&format!("{ip}/{}", a.prefix_len()))?);
                }
            } else {
                for p in &ep.peer_addr {
                    let ip = config::parse_ip(p)?;
                    let own_cidr = addrs.iter().find(|a| IpAddr::from(a.address()).is_ipv4() == ip.is_ipv4()).copied();
                    config::check_peer(ip, own_cidr.as_ref()).map_err(|e| format!("--peer-addr: {e}"))?;
                    let own = addrs
                        .iter()
                        .find(|a| IpAddr::from(a.address()).is_ipv4() == ip.is_ipv4())
                        .ok_or_else(|| format!("--peer-addr {ip} has no --addr of the same family"))?;
                    if IpAddr::from(own.address()) == ip {
                        return Err(format!("--peer-addr {ip} is closelab's own address"));
                    }
                    peers.push(config::parse_cidr(&format!("{ip}/{}", own.prefix_len()))?);
                }
            }
            (addrs, peers, tun, None, true)
        }
    };
    let remote = match &mode {
        Mode::Connect(plan) => Some(plan.remote),
        Mode::Crawl(c) => Some(c.remote),
        Mode::Listen { .. } => None,
    };
    if let Some(remote) = remote
        && !addrs.iter().any(|a| IpAddr::from(a.address()).is_ipv4() == remote.is_ipv4())
    {
        return Err(format!("cannot connect to {remote}: no --addr of the same IP family"));
    }
    if let Mode::Connect(plan) = &mode {
        let ip = plan.remote.ip();
        let own = addrs.iter().find(|a| IpAddr::from(a.address()).is_ipv4() == ip.is_ipv4());
        config::check_peer(ip, own).map_err(|e| format!("cannot connect to {}: {e}", plan.remote))?;
        if own.is_some_and(|a| IpAddr::from(a.address()) == ip) {
            return Err(format!("cannot connect to {}: that is closelab's own address", plan.remote));
        }
    }
    let dur = |s: &Option<String>| s.as_deref().map(config::parse_duration).transpose();
    let mut cfg = EndpointConfig::new(addrs[0]);
    cfg.addrs = addrs.clone();
    cfg.gateways = peer_addrs.iter().map(|p| IpAddr::from(p.address())).collect();
    if !(576..=65535).contains(&ep.mtu) {
        return Err(format!("invalid MTU {} (576 to 65535)", ep.mtu));
    }
    cfg.mtu = ep.mtu;
    cfg.seed = ep.seed.unwrap_or_else(|| {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        (t.as_nanos() as u64) ^ ((std::process::id() as u64) << 32) | 1
    });
    cfg.buffer = config::parse_buffer(&ep.buffer)?;
    if ep.max_conns == 0 {
        return Err("--max-conns must be at least 1".into());
    }
    cfg.max_conns = ep.max_conns;
    cfg.syn_backlog = config::parse_syn_backlog(ep.syn_backlog)?;
    cfg.syncookies = ep.syncookies == OnOff::On;
    cfg.max_memory = config::parse_max_memory(&ep.max_memory, cfg.buffer)?;
    cfg.keep_alive = ep.keepalive.as_deref().map(config::parse_keepalive).transpose()?;
    cfg.user_timeout = ep.timeout.as_deref().map(|t| config::parse_timer(t, "timeout")).transpose()?;
    cfg.slow = dur(&ep.slow)?;
    cfg.app = app;
    cfg.policy =
        Policy { close: close_policy(close), close_after: dur(&ep.close_after)?, rst_on_unread: ep.rst_on_unread };
    let close = config::time_wait(&config::TimeWaitOptions {
        model: Some(match ep.time_wait_model {
            TwModelArg::Linux => "linux",
            TwModelArg::Smoltcp => "smoltcp",
        }),
        len: ep.time_wait.as_deref(),
        rfc1337: ep.rfc1337,
        max: ep.max_tw,
        syn: ep.time_wait_syn.map(|s| match s {
            TwSynArg::Accept => "accept",
            TwSynArg::Drop => "drop",
        }),
        fin_timeout: ep.fin_timeout.as_deref(),
        retries: ep.retries,
        orphan_retries: ep.orphan_retries,
        synack_retries: ep.synack_retries,
    })?;
    (cfg.time_wait_model, cfg.time_wait, cfg.time_wait_syn) = (close.model, close.time_wait, close.syn);
    cfg.close_timers = close.timers;
    cfg.timestamps = ep.timestamps;
    cfg.faults = ep.faults.iter().map(|f| FaultRule::parse(f).map_err(|e| e.to_string())).collect::<Result<_, _>>()?;
    let tun = TunSpec {
        name: tun_name,
        mtu: ep.mtu,
        peer_addrs,
        own_addrs: addrs.iter().map(|a| IpAddr::from(a.address())).collect(),
        configure,
    };
    let control = Some(match &ep.lab {
        Some(lab) => Target::Lab(lab.clone()),
        None => Target::Tun(tun.name.clone()),
    });
    Ok(ServeOptions {
        endpoint: cfg,
        tun,
        netns,
        linux_ns,
        mode,
        stop: StopWhen { finished: ep.exit_after },
        output: Output {
            json: ep.json,
            pcap: ep.pcap,
            trace: match ep.trace {
                TraceArg::Segments => TraceLevel::Segments,
                TraceArg::States => TraceLevel::States,
                TraceArg::None => TraceLevel::None,
            },
        },
        control,
    })
}

/// The crawler's validation step. `--max-conns` becomes its budget (the
/// connections it may hold, like an fd limit); the endpoint's own table then
/// only bounds memory, so TIME-WAIT entries never fail a request.
pub(crate) fn crawl_config(
    remote: std::net::SocketAddr,
    app: &str,
    http: &HttpArgs,
    ep: &mut EndpointArgs,
) -> Result<crate::endpoint::crawl::CrawlConfig, String> {
    use crate::endpoint::crawl::{self, OnError};
    use crate::endpoint::http::HttpMode;
    let mut paths = Vec::new();
    if app.starts_with("get:") {
        paths = crawl::parse_get(app)?;
    } else if app != "sink" {
        return Err(format!("--urls is the crawler's URL list: leave out --app {app} (or use --app get:/PATH)"));
    }
    if let Some(file) = &http.urls {
        const MAX_FILE: u64 = 64 << 20;
        let name = file.display().to_string();
        let meta = std::fs::metadata(file).map_err(|e| format!("cannot read URL list {name}: {e}"))?;
        if meta.len() > MAX_FILE {
            return Err(format!("URL list {name} is larger than 64 MiB"));
        }
        let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read URL list {name}: {e}"))?;
        paths.extend(crawl::parse_url_list(&name, &text)?);
    }
    if paths.len() > crawl::MAX_URLS {
        return Err(format!("more than {} URLs", crawl::MAX_URLS));
    }
    let mut c = crawl::CrawlConfig::new(remote, paths);
    if !(1..=10_000).contains(&http.pool) {
        return Err(format!("invalid --pool {} (1 to 10000)", http.pool));
    }
    c.pool = http.pool;
    if let Some(r) = http.rate
        && !(r.is_finite() && r > 0.0 && r <= 100_000.0)
    {
        return Err(format!("invalid --rate {r} (requests per second, above 0 and at most 100000)"));
    }
    c.rate = http.rate;
    c.mode = match http.http_mode {
        HttpModeArg::KeepAlive => HttpMode::KeepAlive,
        HttpModeArg::Close => HttpMode::Close,
        HttpModeArg::Http10 => HttpMode::Http10,
    };
    c.on_error = match http.on_error {
        OnErrorArg::Release => OnError::Release,
        OnErrorArg::Leak => OnError::Leak,
    };
    c.evict_idle = http.evict_idle.as_deref().map(config::parse_duration).transpose()?;
    if c.evict_idle == Some(smoltcp::time::Duration::ZERO) {
        return Err("--evict-idle must be longer than 0s".into());
    }
    c.timeout = config::parse_duration(&http.http_timeout)?;
    if c.timeout == smoltcp::time::Duration::ZERO {
        return Err("--http-timeout must be longer than 0s".into());
    }
    if ep.max_conns == 0 {
        return Err("--max-conns must be at least 1".into());
    }
    c.budget = ep.max_conns;
    ep.max_conns = ep.max_conns.max(100_000);
    Ok(c)
}

/// The endpoint settings every crawler connection needs: the HTTP client app.
pub(crate) fn crawl_endpoint(mut opts: ServeOptions) -> ServeOptions {
    opts.endpoint.app = AppKind::HttpClient;
    opts.endpoint.policy.close = ClosePolicy::Never;
    opts
}
