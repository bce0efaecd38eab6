//! The command line: clap's definitions (the same ones `closelab
//! completions` and `closelab man` render), one validation step into typed
//! configuration per subcommand, and the dispatch to `cmd::*`. `main` only
//! parses and calls [`run`]. 0 success, 1 an expectation failed, 2 an error
//! (one line `closelab: …` on stderr), 130 interrupted.

mod endpoint_args;
mod load_args;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

use crate::cmd::serve::{self, Mode, ServeOptions};
use crate::config;
use crate::fault::FaultRule;
use crate::sys::control::SsOptions;
use crate::sys::run::{ConnectPlan, Signals};

use endpoint_args::*;
use load_args::*;

/// Watch TCP connections close on real packets: a userspace TCP endpoint
/// (smoltcp) on a TUN device, with every segment and state change of both ends.
#[derive(Parser)]
#[command(name = "closelab", version = crate::cmd::packaging::VERSION)]
pub struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
pub(crate) enum Cmd {
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
        #[arg(long, default_value = crate::sys::lab::DEFAULT_SUBNET)]
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
pub(crate) struct BenchArgs {
    /// Bytes per transfer, e.g. 100M or 1G.
    #[arg(long, default_value = "1G")]
    pub(crate) size: String,
    /// Rounds per path (the medians are printed).
    #[arg(long, default_value_t = 3)]
    pub(crate) rounds: usize,
    /// MTU of the lab's veth pair and TUN (repeatable), e.g. --mtu 1500 --mtu 9000.
    #[arg(long = "mtu", default_values_t = [1500u32, 9000])]
    pub(crate) mtus: Vec<u32>,
    /// Connections each transfer is split over, at once (repeatable; one run per value).
    #[arg(long, default_values_t = [1usize, 8])]
    pub(crate) parallel: Vec<usize>,
    /// Length of each connections/s run against closelab and a kernel server (0s: none).
    #[arg(long, default_value = "5s")]
    pub(crate) load: String,
    /// closelab's receive and send buffer per connection.
    #[arg(long, default_value = "1M")]
    pub(crate) buffer: String,
    /// Skip the traced run (every segment as JSON and pcap, written to /dev/null).
    #[arg(long)]
    pub(crate) no_traced: bool,
    /// Results as JSON lines.
    #[arg(long)]
    pub(crate) json: bool,
    /// Seed for closelab's initial sequence numbers.
    #[arg(long, default_value_t = 1)]
    pub(crate) seed: u64,
    /// Name of the throwaway lab (default: unique); removed at the end.
    #[arg(long)]
    pub(crate) name: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum SideArg {
    /// closelab's own endpoint.
    Closelab,
    /// The Linux peer (observed through sock_diag).
    Linux,
}

#[derive(Subcommand)]
pub(crate) enum LabCmd {
    /// Build a lab: namespaces <NAME>-linux and <NAME>-closelab joined by a veth pair.
    Up {
        /// Lab name (1-10 characters a-z, 0-9, '-'); default: a unique one.
        #[arg(long)]
        name: Option<String>,
        /// IPv4 subnet of the wire (Linux host .1, closelab .2).
        #[arg(long, default_value = crate::sys::lab::DEFAULT_SUBNET)]
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
pub(crate) enum ScenarioCmd {
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
pub(crate) struct ConnArgs {
    /// Its number in the timeline (3 or #3), or LOCAL-REMOTE as closelab sees it (10.201.0.2:7000-10.201.0.1:41234).
    pub(crate) conn: String,
    /// The endpoint's TUN device (default: the only endpoint running).
    #[arg(long)]
    pub(crate) tun: Option<String>,
    /// The endpoint's lab.
    #[arg(long)]
    pub(crate) lab: Option<String>,
}

/// Runs a parsed command line; `Err` is the one line for stderr (exit 2).
pub fn run(cli: Cli) -> Result<ExitCode, String> {
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
            let filter = crate::view::ss::Filter::parse(&filter)?;
            let opts = SsOptions { tun, lab, summary, json, watch, filter };
            crate::sys::control::ss(&opts, &mut std::io::stdout().lock())?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Close(c) => conn_action(crate::control_proto::Action::Close, c),
        Cmd::Abort(c) => conn_action(crate::control_proto::Action::Abort, c),
        Cmd::Shutdown(c) => conn_action(crate::control_proto::Action::Shutdown, c),
        Cmd::Lab { cmd } => lab(cmd),
        Cmd::Scenario { cmd: ScenarioCmd::List } => {
            for (name, summary) in crate::cmd::scenario::list() {
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
            let opts = crate::cmd::scenario::RunOptions { json, repeat, seed, name: lab_name, pcap, faults };
            let ok = crate::cmd::scenario::run(&names, opts, &mut signals, &mut out)?;
            Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        Cmd::Demo { keep, only, json, slow, name, subnet, seed, pcap } => {
            let slow = config::parse_duration(&slow)?;
            let opts = crate::cmd::demo::DemoOptions {
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
            Ok(match crate::cmd::load::run(&opts, &mut signals, &mut out)? {
                crate::cmd::load::RunEnd::Ok => ExitCode::SUCCESS,
                crate::cmd::load::RunEnd::Failed => ExitCode::from(1),
                crate::cmd::load::RunEnd::Interrupted => ExitCode::from(130),
            })
        }
        Cmd::Bench(a) => {
            let opts = crate::cmd::bench::BenchOptions {
                size: config::parse_bytes(&a.size)? as u64,
                rounds: a.rounds,
                mtus: a.mtus,
                parallel: a.parallel,
                load: match a.load.trim() {
                    "0" | "0s" => std::time::Duration::ZERO,
                    l => crate::load::parse_duration("--load", l)?,
                },
                buffer: config::parse_bytes(&a.buffer)?,
                json: a.json,
                traced: !a.no_traced,
                seed: a.seed,
                name: a.name,
            };
            opts.validate()?;
            let mut signals = Signals::block().map_err(|e| format!("cannot set up signal handling: {e}"))?;
            let mut out = std::io::stdout();
            Ok(match crate::cmd::bench::run(&opts, &mut signals, &mut out)? {
                crate::cmd::bench::BenchEnd::Done => ExitCode::SUCCESS,
                crate::cmd::bench::BenchEnd::Interrupted => ExitCode::from(130),
            })
        }
        Cmd::Ladder { file, conn, story, unicode, mermaid, svg, svg_counts, counts_side } => {
            let job = crate::cmd::ladder::LadderJob {
                input: file,
                conn,
                story: story.map(|n| n as usize),
                unicode,
                mermaid,
                svg,
                svg_counts,
                counts_side: match counts_side {
                    SideArg::Closelab => crate::event::Side::Closelab,
                    SideArg::Linux => crate::event::Side::Linux,
                },
            };
            let stdout = std::io::stdout();
            crate::cmd::ladder::run(&job, &mut stdout.lock())?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Completions { shell } => {
            crate::cmd::packaging::completions(shell, Cli::command(), &mut std::io::stdout().lock())?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Man { out } => {
            crate::cmd::packaging::man(Cli::command(), out.as_deref(), &mut std::io::stdout().lock())?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub(crate) fn lab(cmd: LabCmd) -> Result<ExitCode, String> {
    use crate::cmd::labcmd;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match cmd {
        LabCmd::Up { name, subnet, peer_sysctl, dry_run } => {
            labcmd::up(name.as_deref(), subnet.as_deref(), &peer_sysctl, dry_run, &mut out)?
        }
        LabCmd::Down { name, all, force, dry_run } => labcmd::down(name.as_deref(), all, force, dry_run, &mut out)?,
        LabCmd::Status => labcmd::status(&mut out)?,
        LabCmd::Serve { name, server, keepalive_timeout, root, port } => {
            use crate::sys::webserver::{ServeSpec, ServerKind, serve_cmd};
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
            crate::sys::lab::validate_name(&name).map_err(|e| e.to_string())?;
            serve_cmd(&ServeSpec { lab: name, kind, port, keepalive_timeout, root }, &mut out)?
        }
        LabCmd::Exec { name, command } => return labcmd::exec(&name, &command).map(ExitCode::from),
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn demo(opts: crate::cmd::demo::DemoOptions) -> Result<ExitCode, String> {
    let mut signals = Signals::block().map_err(|e| format!("cannot set up signal handling: {e}"))?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match crate::cmd::demo::run(opts, &mut signals, &mut out)? {
        crate::sys::run::Outcome::Done => Ok(ExitCode::SUCCESS),
        crate::sys::run::Outcome::Interrupted => Ok(ExitCode::from(130)),
    }
}

/// `--watch [INTERVAL]`: a filter word right after a bare `--watch`
/// (`ss --watch state time-wait`) is the filter's, not an interval.
pub(crate) fn watch_interval(
    watch: Option<String>,
    filter: &mut Vec<String>,
) -> Result<Option<std::time::Duration>, String> {
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

pub(crate) fn conn_action(action: crate::control_proto::Action, c: ConnArgs) -> Result<ExitCode, String> {
    crate::sys::control::act(action, &c.conn, c.tun.as_deref(), c.lab.as_deref(), &mut std::io::stdout().lock())?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn endpoint(opts: ServeOptions) -> Result<ExitCode, String> {
    let mut signals = Signals::block().map_err(|e| format!("cannot set up signal handling: {e}"))?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    serve::serve(opts, &mut signals, &mut out)?;
    Ok(ExitCode::SUCCESS)
}
