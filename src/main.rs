//! The closelab command line: clap parsing, one validation step into typed
//! configuration, dispatch, exit code. 0 success, 1 an expectation failed,
//! 2 an error (one line `closelab: …` on stderr).

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

use closelab::config;
use closelab::endpoint::{AppKind, ClosePolicy, EndpointConfig, Policy};
use closelab::fault::FaultRule;
use closelab::sys::control::{SsOptions, Target};
use closelab::sys::run::{ConnectPlan, Signals, StopWhen};
use closelab::sys::serve::{self, Mode, Output, ServeOptions};
use closelab::sys::tun::TunSpec;
use closelab::view::TraceLevel;

/// Watch TCP connections close on real packets: a userspace TCP endpoint
/// (smoltcp) on a TUN device, with every segment and state change of both ends.
#[derive(Parser)]
#[command(name = "closelab", version = closelab::cmd::packaging::VERSION)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Accept connections on a port and close them by a policy.
    Listen {
        /// Port to accept connections on.
        #[arg(long)]
        port: u16,
        #[command(flatten)]
        ep: EndpointArgs,
        /// What closelab's application does: echo, sink, source:BYTES, hello, http.
        #[arg(long, default_value = "echo")]
        app: String,
        /// Who closes and how.
        #[arg(long, value_enum, default_value = "passive")]
        close: CloseArg,
    },
    /// Open connections to a peer and close them by a policy.
    Connect {
        /// Peer address, e.g. 10.201.0.1:7000 or [fd00:201::1]:7000.
        remote: String,
        /// Bytes to send first.
        #[arg(long, default_value = "0")]
        send: String,
        /// Connections to open, one after the other.
        #[arg(long, default_value_t = 1)]
        count: u64,
        #[command(flatten)]
        ep: EndpointArgs,
        /// What closelab's application does after --send: echo, sink, source:BYTES, hello, http; or
        /// get:/PATH[,/PATH…], the HTTP crawler (see --urls, --pool, --on-error).
        #[arg(long, default_value = "sink")]
        app: String,
        /// Who closes and how.
        #[arg(long, value_enum, default_value = "active")]
        close: CloseArg,
        #[command(flatten)]
        http: HttpArgs,
    },
    /// A running closelab's connections like `ss -tano`; filter like ss (`state time-wait`,
    /// `state connected`, `exclude listening`).
    Ss {
        /// The endpoint's TUN device (default: the only endpoint running).
        #[arg(long)]
        tun: Option<String>,
        /// The endpoint's lab.
        #[arg(long)]
        lab: Option<String>,
        /// Connections per state in netstat spelling, as `netstat -n | awk '/^tcp/ {++S[$NF]} END {for(a in S) print a, S[a]}'` prints them.
        #[arg(short = 's')]
        summary: bool,
        /// One JSON object per line (per connection, or per state with -s).
        #[arg(long)]
        json: bool,
        /// Redraw every INTERVAL (default 1s) until Ctrl-C.
        #[arg(long, num_args = 0..=1, default_missing_value = "1s", value_name = "INTERVAL")]
        watch: Option<String>,
        /// ss state filter words: state NAME (repeatable), exclude NAME.
        filter: Vec<String>,
    },
    /// close() a connection of a running closelab by hand (FIN after queued data).
    Close(ConnArgs),
    /// Abort a connection of a running closelab by hand (RST).
    Abort(ConnArgs),
    /// shutdown(SHUT_WR) a connection of a running closelab by hand (FIN, keeps reading).
    Shutdown(ConnArgs),
    /// Build, inspect and remove two-namespace labs (a Linux host and a closelab host on one wire).
    Lab {
        #[command(subcommand)]
        cmd: LabCmd,
    },
    /// Named close-bug scenarios against a live Linux peer, with faults and expectations.
    Scenario {
        #[command(subcommand)]
        cmd: ScenarioCmd,
    },
    /// Build a lab, run seven close stories on real packets with both sides' states, tear it down.
    Demo {
        /// Leave the lab up afterwards for exploring.
        #[arg(long)]
        keep: bool,
        /// Run only story N (1: closelab closes first, 2: Linux closes first, 3: CLOSE_WAIT leak, 4: web server TIME-WAIT,
        /// 5: the crawler's leak against Apache, 6: the crawler releasing, 7: keep-alive and the "2 hours" folklore).
        #[arg(long, value_parser = clap::value_parser!(u8).range(1..=7))]
        only: Option<u8>,
        /// Print the event stream as JSON lines instead of ladders.
        #[arg(long)]
        json: bool,
        /// Hold every segment this long on the TUN path so each Linux state is observed ("0s" turns it off).
        #[arg(long, default_value = "50ms")]
        slow: String,
        /// Lab name (default: unique).
        #[arg(long)]
        name: Option<String>,
        /// IPv4 subnet of the lab (Linux host .1, closelab .2).
        #[arg(long, default_value = closelab::sys::lab::DEFAULT_SUBNET)]
        subnet: Option<String>,
        /// Seed for closelab's initial sequence numbers.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Write every segment of every story to this pcap file.
        #[arg(long)]
        pcap: Option<PathBuf>,
    },
    /// Drive many connections between the Linux host and closelab in a lab: both sides' netstat counts every second.
    Load(Box<LoadArgs>),
    /// Bulk throughput through closelab next to the kernel over a veth pair, in a throwaway lab (root).
    Bench(BenchArgs),
    /// Draw a saved --json stream: the terminal ladder on stdout, Mermaid and SVG pictures to files.
    Ladder {
        /// JSON lines from `closelab listen/connect/demo/scenario run --json`; `-` reads stdin.
        file: PathBuf,
        /// Only connection N.
        #[arg(long)]
        conn: Option<u64>,
        /// Only story N of a demo file (else the Nth run: scenario round, …).
        #[arg(long, alias = "run", value_parser = clap::value_parser!(u32).range(1..))]
        story: Option<u32>,
        /// Box-drawing arrows in the terminal ladder.
        #[arg(long)]
        unicode: bool,
        /// Write the ladder as a Mermaid sequenceDiagram to this file.
        #[arg(long, value_name = "OUT.mmd")]
        mermaid: Option<PathBuf>,
        /// Write the ladder as an SVG picture to this file.
        #[arg(long, value_name = "OUT.svg")]
        svg: Option<PathBuf>,
        /// Write a plot of how many connections were in each state over time to this SVG file.
        #[arg(long, value_name = "OUT.svg")]
        svg_counts: Option<PathBuf>,
        /// Whose states --svg-counts counts.
        #[arg(long, value_enum, default_value = "closelab")]
        counts_side: SideArg,
    },
    /// Print a shell completion script to stdout, e.g. `closelab completions bash > /etc/bash_completion.d/closelab`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) to stdout, or with --out write closelab.1 and one page per subcommand.
    Man {
        /// Write closelab.1, closelab-listen.1, closelab-lab-up.1, … into this directory (each path is printed).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
}

/// `closelab bench`: Gbit/s of kernel -> closelab and closelab -> kernel next to kernel <-> kernel.
#[derive(Args)]
struct BenchArgs {
    /// Bytes per transfer, e.g. 100M or 1G.
    #[arg(long, default_value = "1G")]
    size: String,
    /// Rounds per path (the medians are printed).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// MTU of the lab's veth pair and TUN (repeatable), e.g. --mtu 1500 --mtu 9000.
    #[arg(long = "mtu", default_values_t = [1500u32, 9000])]
    mtus: Vec<u32>,
    /// closelab's receive and send buffer per connection.
    #[arg(long, default_value = "1M")]
    buffer: String,
    /// Skip the traced run (every segment as JSON and pcap, written to /dev/null).
    #[arg(long)]
    no_traced: bool,
    /// Results as JSON lines.
    #[arg(long)]
    json: bool,
    /// Seed for closelab's initial sequence numbers.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Name of the throwaway lab (default: unique); removed at the end.
    #[arg(long)]
    name: Option<String>,
}

/// `closelab load`: the busy server's netstat picture on real packets.
#[derive(Args)]
struct LoadArgs {
    /// Who listens: closelab (the Linux host runs the generator), linux (closelab is the client),
    /// kernel (a kernel server in closelab's namespace: the baseline without closelab).
    #[arg(long, value_enum, default_value = "closelab")]
    server: ServerArg,
    /// Who closes first; the other side closes on EOF (or never, with --leak).
    #[arg(long, value_enum, default_value = "server")]
    closer: CloserArg,
    /// The side that does not close first never closes: the CLOSE_WAIT leak.
    #[arg(long)]
    leak: bool,
    /// New connections per second, e.g. 500/s or 2k/s.
    #[arg(long, default_value = "1000/s", conflicts_with = "max")]
    rate: String,
    /// As fast as possible (bounded by --concurrency).
    #[arg(long)]
    max: bool,
    /// Connections in flight at most.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// How long to run (default 10s unless --count).
    #[arg(long)]
    duration: Option<String>,
    /// Stop after this many connections.
    #[arg(long)]
    count: Option<u64>,
    /// Bytes the client sends first.
    #[arg(long, default_value = "0")]
    request: String,
    /// Bytes the server answers.
    #[arg(long, default_value = "0")]
    response: String,
    /// HTTP/1.0 GET against closelab's http app (with --server closelab).
    #[arg(long)]
    http: bool,
    /// The server's port.
    #[arg(long, default_value_t = 8000)]
    port: u16,
    /// TCP sysctl for the Linux namespace, e.g. net.ipv4.tcp_tw_reuse=1 (repeatable).
    #[arg(long = "peer-sysctl")]
    peer_sysctl: Vec<String>,
    /// The Linux host's ip_local_port_range, e.g. 20000-20999.
    #[arg(long)]
    ports: Option<String>,
    /// listen() backlog of a Linux listener.
    #[arg(long, default_value_t = 4096)]
    backlog: u32,
    /// Fault rule on closelab's packet path (repeatable), e.g. "drop out ack".
    #[arg(long = "fault")]
    faults: Vec<String>,
    /// A handshake not done after this long counts as a timeout error.
    #[arg(long, default_value = "3s")]
    connect_timeout: String,
    /// closelab's receive and send buffer per connection.
    #[arg(long, default_value = "2k")]
    buffer: String,
    /// closelab sends RFC 7323 timestamps, as Linux does with tcp_timestamps=1 (the Linux
    /// client's tcp_tw_reuse needs them).
    #[arg(long)]
    timestamps: bool,
    /// closelab's TIME-WAIT length (its TIME-WAIT table; Linux: 60 s).
    #[arg(long, value_name = "DUR", default_value = "60s")]
    time_wait: String,
    /// closelab's TIME-WAIT table size, like tcp_max_tw_buckets.
    #[arg(long, value_name = "N")]
    max_tw: Option<usize>,
    /// Use this lab (default: build one and remove it afterwards).
    #[arg(long)]
    lab: Option<String>,
    /// Per-second lines and the summary as JSON lines.
    #[arg(long)]
    json: bool,
    /// Write both sides' state counts over time to this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    /// Run a built-in story with its expectations (time-wait-pileup, port-exhaustion, close-wait-leak, syn-recv, all).
    #[arg(long)]
    story: Option<String>,
    /// Seed for closelab's initial sequence numbers.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[derive(Clone, Copy, ValueEnum)]
enum ServerArg {
    Closelab,
    Linux,
    Kernel,
}

#[derive(Clone, Copy, ValueEnum)]
enum CloserArg {
    Client,
    Server,
}

fn load_options(a: LoadArgs) -> Result<closelab::sys::load::LoadOptions, String> {
    use closelab::load::{self, Closer, LoadSpec, Server};
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
        .map(|s| closelab::sys::lab::parse_peer_sysctl(s).map_err(|e| e.to_string()))
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
    Ok(closelab::sys::load::LoadOptions { spec, lab: a.lab, json: a.json, plot: a.plot, story: a.story, seed: a.seed })
}

/// The HTTP crawler's knobs (`connect --app get:…` or `--urls FILE`).
#[derive(Args)]
struct HttpArgs {
    /// URL list for the crawler: one /PATH or http://HOST/PATH per line (# comments); implies the crawler.
    #[arg(long, value_name = "FILE")]
    urls: Option<PathBuf>,
    /// Connections the crawler uses at once (keep-alive connections are reused from this pool).
    #[arg(long, default_value_t = 1)]
    pool: usize,
    /// Requests started per second (default: as fast as the pool allows), e.g. 50 or 0.5.
    #[arg(long)]
    rate: Option<f64>,
    /// How requests treat the connection.
    #[arg(long = "http", value_enum, default_value = "keep-alive")]
    http_mode: HttpModeArg,
    /// What happens to a connection whose response is not 2xx: release it (the fix) or leak it (the bug).
    #[arg(long, value_enum, default_value = "release")]
    on_error: OnErrorArg,
    /// Close pooled connections idle this long (HttpClient's evictIdleConnections).
    #[arg(long, value_name = "DUR")]
    evict_idle: Option<String>,
    /// Abort a request not answered this long after it started (connect included).
    #[arg(long, value_name = "DUR", default_value = "10s")]
    http_timeout: String,
}

#[derive(Clone, Copy, ValueEnum)]
enum HttpModeArg {
    /// HTTP/1.1, persistent connections reused from the pool.
    KeepAlive,
    /// HTTP/1.1 with `Connection: close`: the server closes after each response.
    Close,
    /// HTTP/1.0: the server closes after each response.
    #[value(name = "1.0")]
    Http10,
}

#[derive(Clone, Copy, ValueEnum)]
enum OnErrorArg {
    /// Release the connection like any other (back to the pool, or closed).
    Release,
    /// Never close or reuse it: the CLOSE_WAIT leak.
    Leak,
}

#[derive(Clone, Copy, ValueEnum)]
enum SideArg {
    /// closelab's own endpoint.
    Closelab,
    /// The Linux peer (observed through sock_diag).
    Linux,
}

#[derive(Subcommand)]
enum LabCmd {
    /// Build a lab: namespaces <NAME>-linux and <NAME>-closelab joined by a veth pair.
    Up {
        /// Lab name (1-10 characters a-z, 0-9, '-'); default: a unique one.
        #[arg(long)]
        name: Option<String>,
        /// IPv4 subnet of the wire (Linux host .1, closelab .2).
        #[arg(long, default_value = closelab::sys::lab::DEFAULT_SUBNET)]
        subnet: Option<String>,
        /// TCP sysctl for the Linux namespace only, e.g. net.ipv4.tcp_fin_timeout=5 (repeatable).
        #[arg(long = "peer-sysctl")]
        peer_sysctl: Vec<String>,
        /// Print the exact ip commands instead of running them.
        #[arg(long)]
        dry_run: bool,
    },
    /// Remove a lab (idempotent), stopping the endpoints running in it, or every closelab lab with --all.
    Down {
        /// The lab to remove (as given to `lab up --name`; `lab status` lists them).
        name: Option<String>,
        /// Remove every closelab lab left behind (after a crash or kill -9); labs with running
        /// endpoints are skipped unless --force.
        #[arg(long)]
        all: bool,
        /// With --all: also remove labs whose endpoints are running (they are stopped).
        #[arg(long)]
        force: bool,
        /// Print the exact ip commands instead of running them.
        #[arg(long)]
        dry_run: bool,
    },
    /// List labs, their addresses and running endpoints.
    Status,
    /// Start a real web server (apache, nginx or python's http.server) on the lab's Linux host,
    /// with a generated config and doc root; `lab down` stops it.
    Serve {
        name: String,
        /// apache, nginx or python.
        server: String,
        /// Close idle keep-alive connections after this long (Apache KeepAliveTimeout, nginx keepalive_timeout).
        #[arg(long, value_name = "DUR")]
        keepalive_timeout: Option<String>,
        /// Serve this directory instead of the generated one.
        #[arg(long, value_name = "DIR")]
        root: Option<PathBuf>,
        /// Port on the Linux host's address.
        #[arg(long, default_value_t = 80)]
        port: u16,
    },
    /// Run a command on the lab's Linux host, e.g. `closelab lab exec demo -- curl http://10.201.0.2:7000/`.
    Exec {
        /// The lab whose Linux host runs the command.
        name: String,
        /// The command and its arguments (after `--`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        command: Vec<String>,
    },
}

#[derive(Subcommand)]
enum ScenarioCmd {
    /// Name and explain each scenario.
    List,
    /// Run scenarios by name, your own scenario files (FILE.toml), or `all`, in a fresh lab;
    /// exit 0 if every expectation holds, 1 if one fails.
    Run {
        /// Scenario names (`closelab scenario list`), scenario files (FILE.toml), or `all`.
        #[arg(required = true)]
        names: Vec<String>,
        /// Machine-readable report: events and one verdict object per run, as JSON lines.
        #[arg(long)]
        json: bool,
        /// Run each scenario N times.
        #[arg(long, default_value_t = 1)]
        repeat: usize,
        /// Seed for closelab's initial sequence numbers and random faults.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Lab name (default: unique).
        #[arg(long)]
        lab_name: Option<String>,
        /// Write every segment of every run to this pcap file.
        #[arg(long)]
        pcap: Option<PathBuf>,
        /// Extra fault rule for every scenario, after its own (repeatable), e.g. "drop 5% seed=3".
        #[arg(long = "fault")]
        faults: Vec<String>,
    },
}

/// A connection of a running endpoint.
#[derive(Args)]
struct ConnArgs {
    /// Its number in the timeline (3 or #3), or LOCAL-REMOTE as closelab sees it (10.201.0.2:7000-10.201.0.1:41234).
    conn: String,
    /// The endpoint's TUN device (default: the only endpoint running).
    #[arg(long)]
    tun: Option<String>,
    /// The endpoint's lab.
    #[arg(long)]
    lab: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum CloseArg {
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
enum TraceArg {
    Segments,
    States,
    None,
}

#[derive(Clone, Copy, ValueEnum)]
enum TwModelArg {
    /// closelab's TIME-WAIT table: Linux's rules, 60 s, ~100 bytes per entry.
    Linux,
    /// smoltcp's own TIME-WAIT socket: 10 s, buffers kept, SYN per --time-wait-syn.
    Smoltcp,
}

#[derive(Clone, Copy, ValueEnum)]
enum TwSynArg {
    /// Replace TIME-WAIT with a new connection at once (as Linux does for a higher sequence number).
    Accept,
    /// Hand the SYN to the TIME-WAIT socket: smoltcp drops it and the client stalls.
    Drop,
}

#[derive(Args)]
struct EndpointArgs {
    /// TUN device to create (or attach to, if persistent).
    #[arg(long)]
    tun: Option<String>,
    /// closelab's own address with prefix, e.g. 10.201.0.2/24 (repeat for IPv4 and IPv6).
    #[arg(long = "addr")]
    addr: Vec<String>,
    /// Address of the kernel's side of the TUN link (default: first host of each --addr prefix).
    #[arg(long = "peer-addr")]
    peer_addr: Vec<String>,
    /// MTU of the TUN link.
    #[arg(long, default_value_t = 1500)]
    mtu: usize,
    /// Run in a lab's closelab namespace (see `closelab lab up`): no --tun/--addr needed.
    #[arg(long)]
    lab: Option<String>,
    /// Delay of the close: after ESTABLISHED (active, abort, half) or after the peer's FIN (passive).
    #[arg(long)]
    close_after: Option<String>,
    /// Like Linux (RFC 2525 §2.17): close() with unread received data sends RST, not FIN.
    #[arg(long)]
    rst_on_unread: bool,
    /// Exit 0 once this many connections are completely finished (TIME-WAIT included).
    #[arg(long)]
    exit_after: Option<u64>,
    /// Concurrent connections allowed; beyond it a SYN gets RST.
    #[arg(long, default_value_t = 100_000)]
    max_conns: usize,
    /// Print the event stream as JSON lines.
    #[arg(long)]
    json: bool,
    /// Write every segment that crossed the TUN to this pcap file.
    #[arg(long)]
    pcap: Option<PathBuf>,
    /// What the timeline shows: every segment, only state changes (and notes, faults, app calls), or nothing
    /// but the summary (bulk transfers then format nothing per segment; --pcap still gets every segment).
    #[arg(long, value_enum, default_value = "segments")]
    trace: TraceArg,
    /// Fault rule on the packet path (repeatable), e.g. "drop out ack after-fin 1st".
    #[arg(long = "fault")]
    faults: Vec<String>,
    /// Seed for initial sequence numbers and random faults (default: varies per run).
    #[arg(long)]
    seed: Option<u64>,
    /// Send keep-alives after this idle time.
    #[arg(long)]
    keepalive: Option<String>,
    /// Hold every segment this long on the TUN path (slow motion).
    #[arg(long)]
    slow: Option<String>,
    /// Reset a connection that gets no answer for this long (smoltcp's user timeout; any state).
    #[arg(long)]
    timeout: Option<String>,
    /// Who keeps TIME-WAIT: closelab's compact table with Linux's rules and close timers (the
    /// socket is freed), or smoltcp as it is (TIME-WAIT in its socket, fixed 10 s, a new SYN per
    /// --time-wait-syn, no FIN-WAIT-2 timeout, no retransmission limit).
    #[arg(long, value_enum, default_value = "linux")]
    time_wait_model: TwModelArg,
    /// TIME-WAIT length [default: 60s, Linux's TCP_TIMEWAIT_LEN].
    #[arg(long, value_name = "DUR")]
    time_wait: Option<String>,
    /// Ignore an RST in TIME-WAIT, like net.ipv4.tcp_rfc1337=1 (default: it ends TIME-WAIT, like 0).
    #[arg(long)]
    rfc1337: bool,
    /// Most connections in TIME-WAIT, like tcp_max_tw_buckets: past it a closing connection skips
    /// TIME-WAIT (noted and counted) [default: 262144].
    #[arg(long, value_name = "N")]
    max_tw: Option<usize>,
    /// Send RFC 7323 TCP timestamps, as Linux does with tcp_timestamps=1 (needed for the peer's
    /// tcp_tw_reuse).
    #[arg(long)]
    timestamps: bool,
    /// With --time-wait-model smoltcp: what to do with a new SYN for a 4-tuple in TIME-WAIT
    /// [default: accept].
    #[arg(long, value_enum)]
    time_wait_syn: Option<TwSynArg>,
    /// An orphaned FIN-WAIT-2 (closelab's application called close()) ends after this long,
    /// silently, like net.ipv4.tcp_fin_timeout [default: 60s].
    #[arg(long, value_name = "DUR")]
    fin_timeout: Option<String>,
    /// Retransmissions of a segment before the connection is dropped, like tcp_retries2
    /// [default: 15].
    #[arg(long, value_name = "N")]
    retries: Option<u32>,
    /// The same once closelab's application has closed, like tcp_orphan_retries (0 means 8)
    /// [default: 0].
    #[arg(long, value_name = "N")]
    orphan_retries: Option<u32>,
    /// SYN-ACK retransmissions before a half-open connection is freed, like tcp_synack_retries
    /// [default: 5].
    #[arg(long, value_name = "N")]
    synack_retries: Option<u32>,
    /// Receive and send buffer per connection.
    #[arg(long, default_value = "64k")]
    buffer: String,
    /// Half-open (SYN-RECEIVED) connections kept, like Linux's tcp_max_syn_backlog; they cost no buffers.
    #[arg(long, default_value_t = 4096)]
    syn_backlog: usize,
    /// Past the SYN backlog: answer SYNs with SYN cookies (on, like tcp_syncookies=1) or drop them (off).
    #[arg(long, value_enum, default_value = "on")]
    syncookies: OnOff,
    /// Memory budget of the connections (buffers included); past it new SYNs and handshake ACKs are dropped.
    #[arg(long, default_value = "1G")]
    max_memory: String,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OnOff {
    On,
    Off,
}

fn close_policy(c: CloseArg) -> ClosePolicy {
    match c {
        CloseArg::Active => ClosePolicy::Active,
        CloseArg::Passive => ClosePolicy::Passive,
        CloseArg::Never => ClosePolicy::Never,
        CloseArg::Abort => ClosePolicy::Abort,
        CloseArg::Half => ClosePolicy::Half,
    }
}

/// The validation step: what the user typed → typed configuration.
fn serve_options(ep: EndpointArgs, app: &str, close: CloseArg, mode: Mode) -> Result<ServeOptions, String> {
    let app = AppKind::parse(app)?;
    let mut linux_ns = None;
    let (addrs, peer_addrs, tun_name, netns, configure) = match &ep.lab {
        Some(lab) => {
            if ep.tun.is_some() || !ep.addr.is_empty() || !ep.peer_addr.is_empty() {
                return Err("--lab sets the TUN device and addresses; leave out --tun, --addr and --peer-addr".into());
            }
            let info = closelab::sys::lab::load(lab).map_err(|e| e.to_string())?;
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
            if addrs.len() > closelab::endpoint::MAX_ADDRS {
                return Err(format!(
                    "at most {} --addr (smoltcp's interface holds {} addresses, e.g. one IPv4 and one IPv6)",
                    closelab::endpoint::MAX_ADDRS,
                    closelab::endpoint::MAX_ADDRS
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
fn crawl_config(
    remote: std::net::SocketAddr,
    app: &str,
    http: &HttpArgs,
    ep: &mut EndpointArgs,
) -> Result<closelab::endpoint::crawl::CrawlConfig, String> {
    use closelab::endpoint::crawl::{self, OnError};
    use closelab::endpoint::http::HttpMode;
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
fn crawl_endpoint(mut opts: ServeOptions) -> ServeOptions {
    opts.endpoint.app = AppKind::HttpClient;
    opts.endpoint.policy.close = ClosePolicy::Never;
    opts
}

fn run(cli: Cli) -> Result<ExitCode, String> {
    match cli.cmd {
        Cmd::Listen { port, ep, app, close } => {
            if port == 0 {
                return Err("invalid port 0".into());
            }
            let opts = serve_options(ep, &app, close, Mode::Listen { port })?;
            endpoint(opts)
        }
        Cmd::Connect { remote, send, count, mut ep, app, close, http } => {
            let remote = config::parse_socket_addr(&remote)?;
            let send = config::parse_bytes(&send)?;
            if app == "http" {
                return Err(
                    "--app http is closelab's HTTP server (it answers requests and sends none): to fetch from a server use --app get:/PATH[,/PATH…] or --urls FILE"
                        .into(),
                );
            }
            if app.starts_with("get:") || http.urls.is_some() {
                if send != 0 || count != 1 {
                    return Err("--send and --count do not apply to the HTTP crawler (its URLs decide)".into());
                }
                let crawl = crawl_config(remote, &app, &http, &mut ep)?;
                let opts = serve_options(ep, "sink", close, Mode::Crawl(crawl))?;
                return endpoint(crawl_endpoint(opts));
            }
            let opts = serve_options(ep, &app, close, Mode::Connect(ConnectPlan { remote, send, count }))?;
            endpoint(opts)
        }
        Cmd::Ss { tun, lab, summary, json, watch, mut filter } => {
            let watch = watch_interval(watch, &mut filter)?;
            let filter = closelab::view::ss::Filter::parse(&filter)?;
            let opts = SsOptions { tun, lab, summary, json, watch, filter };
            closelab::sys::control::ss(&opts, &mut std::io::stdout().lock())?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Close(c) => conn_action(closelab::control_proto::Action::Close, c),
        Cmd::Abort(c) => conn_action(closelab::control_proto::Action::Abort, c),
        Cmd::Shutdown(c) => conn_action(closelab::control_proto::Action::Shutdown, c),
        Cmd::Lab { cmd } => lab(cmd),
        Cmd::Scenario { cmd: ScenarioCmd::List } => {
            for (name, summary) in closelab::sys::scenario::list() {
                println!("{name:<32} {summary}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Scenario { cmd: ScenarioCmd::Run { names, json, repeat, seed, lab_name, pcap, faults } } => {
            if repeat == 0 {
                return Err("--repeat must be at least 1".into());
            }
            let mut signals = Signals::block().map_err(|e| format!("cannot set up signal handling: {e}"))?;
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            let faults =
                faults.iter().map(|f| FaultRule::parse(f).map_err(|e| e.to_string())).collect::<Result<_, _>>()?;
            let opts = closelab::sys::scenario::RunOptions { json, repeat, seed, name: lab_name, pcap, faults };
            let ok = closelab::sys::scenario::run(&names, opts, &mut signals, &mut out)?;
            Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        Cmd::Demo { keep, only, json, slow, name, subnet, seed, pcap } => {
            let slow = config::parse_duration(&slow)?;
            let opts = closelab::sys::demo::DemoOptions {
                name,
                subnet,
                keep,
                only: only.map(usize::from),
                json,
                slow: (slow > smoltcp::time::Duration::ZERO).then_some(slow),
                seed,
                pcap,
                ..Default::default()
            };
            demo(opts)
        }
        Cmd::Load(args) => {
            let opts = load_options(*args)?;
            let mut signals = Signals::block().map_err(|e| format!("cannot set up signal handling: {e}"))?;
            let mut out = std::io::stdout();
            Ok(match closelab::sys::load::run(&opts, &mut signals, &mut out)? {
                closelab::sys::load::RunEnd::Ok => ExitCode::SUCCESS,
                closelab::sys::load::RunEnd::Failed => ExitCode::from(1),
                closelab::sys::load::RunEnd::Interrupted => ExitCode::from(130),
            })
        }
        Cmd::Bench(a) => {
            let opts = closelab::sys::bench::BenchOptions {
                size: config::parse_bytes(&a.size)? as u64,
                rounds: a.rounds,
                mtus: a.mtus,
                buffer: config::parse_bytes(&a.buffer)?,
                json: a.json,
                traced: !a.no_traced,
                seed: a.seed,
                name: a.name,
            };
            opts.validate()?;
            let mut signals = Signals::block().map_err(|e| format!("cannot set up signal handling: {e}"))?;
            let mut out = std::io::stdout();
            Ok(match closelab::sys::bench::run(&opts, &mut signals, &mut out)? {
                closelab::sys::bench::BenchEnd::Done => ExitCode::SUCCESS,
                closelab::sys::bench::BenchEnd::Interrupted => ExitCode::from(130),
            })
        }
        Cmd::Ladder { file, conn, story, unicode, mermaid, svg, svg_counts, counts_side } => {
            let job = closelab::sys::ladder::LadderJob {
                input: file,
                conn,
                story: story.map(|n| n as usize),
                unicode,
                mermaid,
                svg,
                svg_counts,
                counts_side: match counts_side {
                    SideArg::Closelab => closelab::event::Side::Closelab,
                    SideArg::Linux => closelab::event::Side::Linux,
                },
            };
            let stdout = std::io::stdout();
            closelab::sys::ladder::run(&job, &mut stdout.lock())?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Completions { shell } => {
            closelab::cmd::packaging::completions(shell, Cli::command(), &mut std::io::stdout().lock())?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Man { out } => {
            closelab::cmd::packaging::man(Cli::command(), out.as_deref(), &mut std::io::stdout().lock())?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn lab(cmd: LabCmd) -> Result<ExitCode, String> {
    use closelab::sys::labcmd;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match cmd {
        LabCmd::Up { name, subnet, peer_sysctl, dry_run } => {
            labcmd::up(name.as_deref(), subnet.as_deref(), &peer_sysctl, dry_run, &mut out)?
        }
        LabCmd::Down { name, all, force, dry_run } => labcmd::down(name.as_deref(), all, force, dry_run, &mut out)?,
        LabCmd::Status => labcmd::status(&mut out)?,
        LabCmd::Serve { name, server, keepalive_timeout, root, port } => {
            use closelab::sys::webserver::{ServeSpec, ServerKind, serve_cmd};
            let kind = ServerKind::parse(&server)?;
            let keepalive_timeout = match keepalive_timeout.as_deref().map(config::parse_duration).transpose()? {
                Some(d) if d == smoltcp::time::Duration::ZERO || d > smoltcp::time::Duration::from_secs(3600) => {
                    return Err("--keepalive-timeout must be above 0s and at most 1h".into());
                }
                d => d.map(|d| std::time::Duration::from_micros(d.total_micros())),
            };
            if port == 0 {
                return Err("invalid port 0".into());
            }
            closelab::sys::lab::validate_name(&name).map_err(|e| e.to_string())?;
            serve_cmd(&ServeSpec { lab: name, kind, port, keepalive_timeout, root }, &mut out)?
        }
        LabCmd::Exec { name, command } => return labcmd::exec(&name, &command).map(ExitCode::from),
    }
    Ok(ExitCode::SUCCESS)
}

fn demo(opts: closelab::sys::demo::DemoOptions) -> Result<ExitCode, String> {
    let mut signals = Signals::block().map_err(|e| format!("cannot set up signal handling: {e}"))?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match closelab::sys::demo::run(opts, &mut signals, &mut out)? {
        closelab::sys::run::Outcome::Done => Ok(ExitCode::SUCCESS),
        closelab::sys::run::Outcome::Interrupted => Ok(ExitCode::from(130)),
    }
}

/// `--watch [INTERVAL]`: a filter word right after a bare `--watch`
/// (`ss --watch state time-wait`) is the filter's, not an interval.
fn watch_interval(watch: Option<String>, filter: &mut Vec<String>) -> Result<Option<std::time::Duration>, String> {
    let Some(w) = watch else { return Ok(None) };
    let d = match config::parse_duration(&w) {
        Ok(d) => d,
        Err(_) if matches!(w.as_str(), "state" | "exclude" | "excl") => {
            filter.insert(0, w);
            config::parse_duration("1s")?
        }
        Err(e) => return Err(e.into()),
    };
    if d == smoltcp::time::Duration::ZERO {
        return Err("--watch needs an interval above 0, e.g. --watch 500ms".into());
    }
    Ok(Some(std::time::Duration::from_micros(d.total_micros())))
}

fn conn_action(action: closelab::control_proto::Action, c: ConnArgs) -> Result<ExitCode, String> {
    closelab::sys::control::act(action, &c.conn, c.tun.as_deref(), c.lab.as_deref(), &mut std::io::stdout().lock())?;
    Ok(ExitCode::SUCCESS)
}

fn endpoint(opts: ServeOptions) -> Result<ExitCode, String> {
    let mut signals = Signals::block().map_err(|e| format!("cannot set up signal handling: {e}"))?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    serve::serve(opts, &mut signals, &mut out)?;
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if matches!(e.kind(), clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion) => {
            e.exit()
        }
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => e.exit(),
        Err(e) => {
            // One line, like every other error: clap's message without its
            // usage block, its lines joined.
            let text = e.render().to_string();
            let msg: Vec<&str> = text
                .lines()
                .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
                .map(|l| l.trim())
                .filter(|l| !l.is_empty())
                .collect();
            let line = msg.join(" ");
            eprintln!("closelab: {} (see --help)", line.trim_start_matches("error: "));
            return ExitCode::from(2);
        }
    };
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("closelab: {e}");
            ExitCode::from(2)
        }
    }
}
