//! `closelab load`'s options and their validation into `LoadOptions`.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::config;
use crate::fault::FaultRule;

/// `closelab load`: the busy server's netstat picture on real packets.
#[derive(Args)]
pub(crate) struct LoadArgs {
    /// Who listens: closelab (the Linux host runs the generator), linux (closelab is the client),
    /// kernel (a kernel server in closelab's namespace: the baseline without closelab).
    #[arg(long, value_enum, default_value = "closelab")]
    pub(crate) server: ServerArg,
    /// Who closes first; the other side closes on EOF (or never, with --leak).
    #[arg(long, value_enum, default_value = "server")]
    pub(crate) closer: CloserArg,
    /// The side that does not close first never closes: the CLOSE_WAIT leak.
    #[arg(long)]
    pub(crate) leak: bool,
    /// New connections per second, e.g. 500/s or 2k/s.
    #[arg(long, default_value = "1000/s", conflicts_with = "max")]
    pub(crate) rate: String,
    /// As fast as possible (bounded by --concurrency).
    #[arg(long)]
    pub(crate) max: bool,
    /// Connections in flight at most.
    #[arg(long, default_value_t = 256)]
    pub(crate) concurrency: usize,
    /// How long to run (default 10s unless --count).
    #[arg(long)]
    pub(crate) duration: Option<String>,
    /// Stop after this many connections.
    #[arg(long)]
    pub(crate) count: Option<u64>,
    /// Bytes the client sends first.
    #[arg(long, default_value = "0")]
    pub(crate) request: String,
    /// Bytes the server answers.
    #[arg(long, default_value = "0")]
    pub(crate) response: String,
    /// HTTP/1.0 GET against closelab's http app (with --server closelab).
    #[arg(long)]
    pub(crate) http: bool,
    /// With --http: HTTP/1.1 keep-alive, N requests on each connection
    /// (then the client closes, or with --closer server the last request
    /// says `Connection: close`).
    #[arg(long = "keep-alive", value_name = "N")]
    pub(crate) keep_alive: Option<u32>,
    /// The server's port.
    #[arg(long, default_value_t = 8000)]
    pub(crate) port: u16,
    /// TCP sysctl for the Linux namespace, e.g. net.ipv4.tcp_tw_reuse=1 (repeatable).
    #[arg(long = "peer-sysctl")]
    pub(crate) peer_sysctl: Vec<String>,
    /// The Linux host's ip_local_port_range, e.g. 20000-20999.
    #[arg(long)]
    pub(crate) ports: Option<String>,
    /// listen() backlog of a Linux listener.
    #[arg(long, default_value_t = 4096)]
    pub(crate) backlog: u32,
    /// Fault rule on closelab's packet path (repeatable), e.g. "drop out ack".
    #[arg(long = "fault")]
    pub(crate) faults: Vec<String>,
    /// A handshake not done after this long counts as a timeout error.
    #[arg(long, default_value = "3s")]
    pub(crate) connect_timeout: String,
    /// closelab's receive and send buffer per connection.
    #[arg(long, default_value = "2k")]
    pub(crate) buffer: String,
    /// closelab sends RFC 7323 timestamps, as Linux does with tcp_timestamps=1 (the Linux
    /// client's tcp_tw_reuse needs them).
    #[arg(long)]
    pub(crate) timestamps: bool,
    /// closelab's TIME-WAIT length (its TIME-WAIT table; Linux: 60 s).
    #[arg(long, value_name = "DUR", default_value = "60s")]
    pub(crate) time_wait: String,
    /// closelab's TIME-WAIT table size, like tcp_max_tw_buckets.
    #[arg(long, value_name = "N")]
    pub(crate) max_tw: Option<usize>,
    /// Use this lab (default: build one and remove it afterwards).
    #[arg(long)]
    pub(crate) lab: Option<String>,
    /// Per-second lines and the summary as JSON lines.
    #[arg(long)]
    pub(crate) json: bool,
    /// Write both sides' state counts over time to this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    pub(crate) plot: Option<PathBuf>,
    /// Run a built-in story with its expectations (time-wait-pileup, port-exhaustion, close-wait-leak, syn-recv, all).
    #[arg(long)]
    pub(crate) story: Option<String>,
    /// Seed for closelab's initial sequence numbers.
    #[arg(long, default_value_t = 1)]
    pub(crate) seed: u64,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum ServerArg {
    Closelab,
    Linux,
    Kernel,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum CloserArg {
    Client,
    Server,
}

pub(crate) fn load_options(a: LoadArgs) -> Result<crate::cmd::load::LoadOptions, String> {
    use crate::load::{self, Closer, LoadSpec, Server};
    let duration = match (&a.duration, a.count) {
        (Some(d), _) => Some(load::parse_duration("--duration", d)?),
        (None, Some(_)) => None,
        (None, None) => Some(std::time::Duration::from_secs(10)),
    };
    if a.count == Some(0) {
        return Err("--count must be at least 1".into());
    }
    if a.concurrency == 0 || a.concurrency > load::MAX_CONCURRENCY {
        return Err(format!("--concurrency must be 1 to {}", load::MAX_CONCURRENCY));
    }
    if a.port < 1 {
        return Err("invalid port 0".into());
    }
    if a.http && !matches!(a.server, ServerArg::Closelab) {
        return Err("--http talks to closelab's http app: use it with --server closelab".into());
    }
    if let Some(n) = a.keep_alive {
        if !a.http {
            return Err("--keep-alive N sends N HTTP requests per connection: use it with --http".into());
        }
        if !(1..=load::MAX_KEEP_ALIVE).contains(&n) {
            return Err(format!("--keep-alive must be 1 to {} requests per connection", load::MAX_KEEP_ALIVE));
        }
    }
    let buffer = config::parse_bytes(&a.buffer)?;
    if !(64..=16 << 20).contains(&buffer) {
        return Err("--buffer must be 64 bytes to 16M".into());
    }
    let bytes = |what: &str, s: &str| -> Result<usize, String> {
        let n = config::parse_bytes(s)?;
        if n > 16 << 20 { Err(format!("{what} {s} is too large (at most 16M)")) } else { Ok(n) }
    };
    let peer_sysctls = a
        .peer_sysctl
        .iter()
        .map(|s| crate::sys::lab::parse_peer_sysctl(s).map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    for f in &a.faults {
        FaultRule::parse(f).map_err(|e| e.to_string())?;
    }
    let spec = LoadSpec {
        server: match a.server {
            ServerArg::Closelab => Server::Closelab,
            ServerArg::Linux => Server::Linux,
            ServerArg::Kernel => Server::Kernel,
        },
        closer: match a.closer {
            CloserArg::Client => Closer::Client,
            CloserArg::Server => Closer::Server,
        },
        leak: a.leak,
        rate: if a.max { None } else { Some(load::parse_rate(&a.rate)?) },
        concurrency: a.concurrency,
        duration,
        count: a.count,
        request: bytes("--request", &a.request)?,
        response: bytes("--response", &a.response)?,
        http: a.http,
        keep_alive: a.keep_alive,
        port: a.port,
        peer_sysctls,
        ports: a.ports.as_deref().map(load::parse_ports).transpose()?,
        backlog: a.backlog.clamp(1, 65535),
        faults: a.faults,
        connect_timeout: load::parse_duration("--connect-timeout", &a.connect_timeout)?,
        buffer,
        time_wait: config::time_wait(&config::TimeWaitOptions {
            len: Some(&a.time_wait),
            max: a.max_tw,
            ..Default::default()
        })?
        .time_wait,
        timestamps: a.timestamps,
    };
    let redraw = !a.json && std::io::IsTerminal::is_terminal(&std::io::stdout());
    Ok(crate::cmd::load::LoadOptions {
        spec,
        lab: a.lab,
        json: a.json,
        redraw,
        plot: a.plot,
        story: a.story,
        seed: a.seed,
    })
}
