//! `closelab demo`: builds a lab with a unique name, runs seven stories on
//! real packets (closelab closes first, Linux closes first, the CLOSE_WAIT
//! leak, a web server collecting TIME-WAIT), prints a ladder with both
//! sides' states for each, and tears the lab down, also on Ctrl-C or error
//! (the `Lab` guard removes it when dropped).

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration as StdDuration;

use smoltcp::time::Duration;

use crate::cmd::story::{Story, StoryView, run_story};
use crate::endpoint::{AppKind, ClosePolicy, EndpointConfig, Policy};
use crate::event::{Event, EventKind, Side, Sink, TcpState};
use crate::sys::lab::{Lab, LabAddrs, LabSpec};
use crate::sys::peer::PeerStep;
use crate::sys::run::{Clock, Outcome, Signals};
use crate::view::json::JsonSink;

/// The demo's knobs.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    pub name: Option<String>,
    pub subnet: Option<String>,
    /// Leave the lab up afterwards.
    pub keep: bool,
    /// Run only this story (1-based).
    pub only: Option<usize>,
    pub json: bool,
    /// Hold every segment this long on the TUN path.
    pub slow: Option<Duration>,
    /// The Linux peer's tcp_fin_timeout in the lab (orphan FIN-WAIT-2).
    pub fin_timeout: u32,
    /// HTTP requests in the web-server story.
    pub requests: usize,
    pub seed: u64,
    /// Write every segment of every story to this pcap file.
    pub pcap: Option<std::path::PathBuf>,
}

impl Default for DemoOptions {
    fn default() -> DemoOptions {
        DemoOptions {
            name: None,
            subnet: None,
            keep: false,
            only: None,
            json: false,
            slow: Some(Duration::from_millis(50)),
            fin_timeout: 3,
            requests: 5,
            seed: 1,
            pcap: None,
        }
    }
}

/// One story of the demo: title, two lines of explanation, and how to run it.
pub struct DemoStory {
    pub title: &'static str,
    pub explain: [String; 2],
    pub story: Story,
    /// A line printed after the ladder, computed from the result.
    pub after: AfterLine,
}

/// The line printed after a story's ladder, from its events and closelab's
/// final connection states.
pub type AfterLine = Box<dyn Fn(&[Event], &[(u64, TcpState)]) -> String>;

/// Number of stories.
pub const STORIES: usize = 7;
/// The first story that needs Apache in the lab (`lab serve`).
pub const FIRST_WEB_STORY: usize = 5;

fn endpoint(addrs: &LabAddrs, app: AppKind, policy: Policy, opts: &DemoOptions) -> EndpointConfig {
    let mut cfg = crate::cmd::story::lab_endpoint(addrs);
    cfg.app = app;
    cfg.policy = policy;
    cfg.slow = opts.slow;
    cfg.seed = opts.seed;
    cfg.capture = opts.pcap.is_some();
    cfg
}

/// The seven stories, for a lab with these addresses (5 to 7 from crawlstory).
pub fn stories(addrs: &LabAddrs, opts: &DemoOptions) -> Vec<DemoStory> {
    let server = |port| SocketAddr::new(IpAddr::V4(addrs.closelab), port);
    let ms = Duration::from_millis;
    let timeout = StdDuration::from_secs(20);
    let fin_timeout = opts.fin_timeout;
    let requests = opts.requests;
    let mut http = Vec::new();
    for i in 1..=requests {
        http.push(PeerStep::Connect(server(7004)));
        http.push(PeerStep::SendBytes(format!("GET /{i} HTTP/1.0\r\nHost: closelab\r\n\r\n").into_bytes()));
        http.push(PeerStep::ReadToEof);
        // A moment before close() so Linux's short CLOSE-WAIT is observed.
        http.push(PeerStep::Sleep(StdDuration::from_millis(60)));
        http.push(PeerStep::Close);
    }
    vec![
        DemoStory {
            title: "closelab closes first",
            explain: [
                "The active closer passes FIN-WAIT-1, FIN-WAIT-2 and ends in TIME-WAIT for 60 s, like Linux.".into(),
                "The passive closer passes CLOSE-WAIT until its application closes, then LAST-ACK.".into(),
            ],
            story: Story {
                endpoint: endpoint(addrs, AppKind::Echo, Policy { close: ClosePolicy::Active, close_after: Some(ms(300)), rst_on_unread: false }, opts),
                port: 7001,
                peer: vec![
                    PeerStep::Connect(server(7001)),
                    PeerStep::Send(5),
                    PeerStep::Read(5),
                    PeerStep::ReadToEof,
                    PeerStep::Sleep(StdDuration::from_millis(300)),
                    PeerStep::Close,
                ],
                observe_ports: vec![7001],
                done: Box::new(|v: &StoryView| {
                    v.peer_done && v.reached(Side::Closelab, TcpState::TimeWait) && v.linux_open == 0 && v.reached(Side::Linux, TcpState::LastAck)
                }),
                timeout,
                crawl: None,
                connect: None,
            },
            after: Box::new(|_, _| "closelab keeps TIME-WAIT 60 s, as Linux does, in a ~100-byte record of its own table (the smoltcp socket and its buffers are already freed); the demo moves on.".into()),
        },
        DemoStory {
            title: "Linux closes first",
            explain: [
                "Now the Linux host calls close() first: Linux passes FIN-WAIT-1, FIN-WAIT-2 and keeps TIME-WAIT for 60 s.".into(),
                "closelab waits 300 ms in CLOSE-WAIT before its application closes, then LAST-ACK.".into(),
            ],
            story: Story {
                endpoint: endpoint(addrs, AppKind::Echo, Policy { close: ClosePolicy::Passive, close_after: Some(ms(300)), rst_on_unread: false }, opts),
                port: 7002,
                peer: vec![PeerStep::Connect(server(7002)), PeerStep::Send(5), PeerStep::Read(5), PeerStep::Close],
                observe_ports: vec![7002],
                done: Box::new(|v: &StoryView| {
                    v.peer_done && v.reached(Side::Linux, TcpState::TimeWait) && v.reached(Side::Closelab, TcpState::Closed)
                }),
                timeout,
                crawl: None,
                connect: None,
            },
            after: Box::new(|_, _| {
                "Linux keeps TIME-WAIT for 60 s (TCP_TIMEWAIT_LEN, hard-coded; tcp_fin_timeout does not change it); the demo does not wait it out.".into()
            }),
        },
        DemoStory {
            title: "the CLOSE_WAIT leak",
            explain: [
                "The HttpClient that forgot to release its connection: Linux closes, closelab's application never calls close().".into(),
                format!("Linux's orphaned FIN-WAIT-2 ends after tcp_fin_timeout ({fin_timeout} s in this lab); CLOSE-WAIT on closelab stays."),
            ],
            story: Story {
                endpoint: endpoint(addrs, AppKind::Echo, Policy { close: ClosePolicy::Never, close_after: None, rst_on_unread: false }, opts),
                port: 7003,
                peer: vec![PeerStep::Connect(server(7003)), PeerStep::Send(5), PeerStep::Read(5), PeerStep::Close],
                observe_ports: vec![7003],
                done: Box::new(|v: &StoryView| {
                    v.peer_done
                        && v.reached(Side::Linux, TcpState::FinWait2)
                        && v.linux_open == 0
                        && v.reached_at(Side::Linux, TcpState::FinWait2).is_some_and(|t| v.t > t + 0.5)
                        && v.closelab_in(TcpState::CloseWait) == 1
                }),
                timeout,
                crawl: None,
                connect: None,
            },
            after: Box::new(|events, states| {
                let fw2 = events.iter().find_map(|e| match e.kind {
                    EventKind::State { to: TcpState::FinWait2, .. } if e.side == Side::Linux => Some(e.t),
                    _ => None,
                });
                let gone = events.iter().rev().find_map(|e| match e.kind {
                    EventKind::State { from: TcpState::FinWait2, to: TcpState::Closed, .. } if e.side == Side::Linux => Some(e.t),
                    _ => None,
                });
                let cw = states.iter().filter(|(_, s)| *s == TcpState::CloseWait).count();
                let lived = match (fw2, gone) {
                    (Some(a), Some(b)) => format!(" after {:.1} s", b - a),
                    _ => String::new(),
                };
                format!(
                    "Linux's FIN-WAIT-2 went away{lived}; closelab still has CLOSE_WAIT {cw}. No kernel setting ends CLOSE-WAIT: only the application's close() does."
                )
            }),
        },
        DemoStory {
            title: "a web server collecting TIME-WAIT",
            explain: [
                format!("A Linux client makes {requests} HTTP/1.0 requests to closelab's http app, one after the other."),
                "Under HTTP/1.0 (or Connection: close) the server closes first, so the server collects TIME-WAIT.".into(),
            ],
            story: Story {
                endpoint: endpoint(addrs, AppKind::Http, Policy { close: ClosePolicy::Active, close_after: None, rst_on_unread: false }, opts),
                port: 7004,
                peer: http,
                observe_ports: vec![7004],
                done: Box::new(move |v: &StoryView| v.peer_done && v.linux_open == 0 && v.closelab_in(TcpState::TimeWait) == requests),
                timeout: StdDuration::from_secs(30),
                crawl: None,
                connect: None,
            },
            after: Box::new(|_, states| {
                let tw = states.iter().filter(|(_, s)| *s == TcpState::TimeWait).count();
                format!("closelab, counted as `netstat -n | awk '/^tcp/ {{++S[$NF]}} END {{for(a in S) print a, S[a]}}'` would: TIME_WAIT {tw}")
            }),
        },
    ]
    .into_iter()
    .chain(crate::cmd::crawlstory::stories(addrs, opts))
    .collect()
}

/// Starts Apache for the crawler stories; `Ok(false)` if it is not
/// installed (the demo then skips them, unless asked for one by --only).
fn start_apache(lab: &str, only: Option<usize>) -> Result<bool, String> {
    let spec = crate::sys::webserver::ServeSpec {
        lab: lab.to_string(),
        kind: crate::sys::webserver::ServerKind::Apache,
        port: crate::cmd::crawlstory::PORT,
        keepalive_timeout: Some(crate::cmd::crawlstory::APACHE_KEEPALIVE),
        root: None,
    };
    match crate::sys::webserver::start(&spec) {
        Ok(_) => Ok(true),
        Err(e) if e.starts_with("cannot find") && only.is_none() => Ok(false),
        Err(e) => Err(format!("story {}: {e}", only.unwrap_or(FIRST_WEB_STORY))),
    }
}

/// Runs the demo. Returns whether it was interrupted.
pub fn run(opts: DemoOptions, signals: &mut Signals, out: &mut dyn Write) -> Result<Outcome, String> {
    crate::sys::lab::check_ip_binary().map_err(|e| e.to_string())?;
    let mut pcap = match &opts.pcap {
        Some(path) => {
            let f = std::fs::File::create(path)
                .map_err(|e| format!("cannot create pcap file {}: {}", path.display(), e.kind()))?;
            let epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            Some(
                crate::view::PcapSink::new(std::io::BufWriter::new(f), epoch)
                    .map_err(|e| format!("writing pcap file {}: {e}", path.display()))?,
            )
        }
        None => None,
    };
    let mut spec = match &opts.name {
        Some(n) => LabSpec::new(n, opts.subnet.as_deref()).map_err(|e| e.to_string())?,
        None => {
            let mut s = LabSpec::unique();
            if let Some(sub) = &opts.subnet {
                s = LabSpec::new(&s.name, Some(sub)).map_err(|e| e.to_string())?;
            }
            s
        }
    };
    spec.add_peer_sysctl("net.ipv4.tcp_fin_timeout", &opts.fin_timeout.to_string()).map_err(|e| e.to_string())?;
    let lab = Lab::up(spec).map_err(|e| e.to_string())?;
    if signals.interrupted() {
        // Dropping the lab removes it.
        return Ok(Outcome::Interrupted);
    }
    let addrs = lab.addrs().clone();
    let w = |out: &mut dyn Write, s: &str| writeln!(out, "{s}").map_err(|e| format!("writing output: {e}"));
    let mut json = JsonSink::new(Vec::new());
    let mut note = |out: &mut dyn Write, json_mode: bool, text: String| -> Result<(), String> {
        if json_mode {
            json.event(&Event { t: 0.0, side: Side::Closelab, conn: None, kind: EventKind::Note { text } });
            let buf = std::mem::take(json.get_mut());
            out.write_all(&buf).map_err(|e| format!("writing output: {e}"))
        } else {
            w(out, &text)
        }
    };
    note(
        out,
        opts.json,
        format!(
            "lab {}: Linux host {} (namespace {}), closelab {} on TUN {} (namespace {}); tcp_fin_timeout={} in {} only",
            lab.name(),
            addrs.linux,
            addrs.ns_linux,
            addrs.closelab,
            addrs.tun,
            addrs.ns_closelab,
            opts.fin_timeout,
            addrs.ns_linux
        ),
    )?;
    if let Some(slow) = opts.slow {
        note(
            out,
            opts.json,
            format!(
                "slow motion: every segment is held {} ms on the TUN path so each Linux state is observed",
                slow.total_millis()
            ),
        )?;
    }
    let tun = crate::cmd::story::open_lab_tun(&addrs)?;
    let clock = Clock::new();
    let mut outcome = Outcome::Done;
    let mut apache: Option<bool> = None;
    for (i, story) in stories(&addrs, &opts).into_iter().enumerate() {
        let n = i + 1;
        if opts.only.is_some_and(|o| o != n) {
            continue;
        }
        if n >= FIRST_WEB_STORY {
            let up = match apache {
                Some(up) => up,
                None => *apache.insert(start_apache(lab.name(), opts.only)?),
            };
            if !up {
                note(
                    out,
                    opts.json,
                    format!("story {n} skipped: apache2 is not installed (scripts/setup installs it)"),
                )?;
                continue;
            }
        }
        if !opts.json {
            w(out, "")?;
        }
        note(out, opts.json, format!("story {n}: {}", story.title))?;
        if let Some(p) = pcap.as_mut() {
            p.set_epoch(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default());
        }
        for line in &story.explain {
            note(out, opts.json, format!("  {line}"))?;
        }
        let result = if opts.json {
            let mut sink = JsonSink::new(&mut *out);
            let r = {
                let mut sinks: Vec<&mut dyn Sink> = vec![&mut sink];
                if let Some(p) = pcap.as_mut() {
                    sinks.push(p);
                }
                run_story(story.story, &addrs.ns_linux, &tun, clock, signals, &mut crate::view::Tee(sinks))
            };
            if let Some(e) = sink.error() {
                return Err(format!("writing output: {e}"));
            }
            r?
        } else {
            let mut sink = Vec::<Event>::new();
            let mut sinks: Vec<&mut dyn Sink> = vec![&mut sink];
            if let Some(p) = pcap.as_mut() {
                sinks.push(p);
            }
            let r = run_story(story.story, &addrs.ns_linux, &tun, clock, signals, &mut crate::view::Tee(sinks))?;
            let ladder = ladder(&r.events);
            w(out, &ladder)?;
            let others = r.events.iter().filter_map(|e| e.conn).max().unwrap_or(0);
            if others > 1 {
                w(out, &format!("  (connections 2 to {others} went the same way; --json shows every segment)"))?;
            }
            r
        };
        if result.outcome == Outcome::Interrupted {
            outcome = Outcome::Interrupted;
            note(out, opts.json, "interrupted: removing the lab".into())?;
            break;
        }
        note(out, opts.json, format!("  {}", (story.after)(&result.events, &result.closelab_states)))?;
    }
    drop(tun);
    if let Some(p) = pcap.as_mut() {
        p.finish().map_err(|e| format!("writing pcap file: {e}"))?;
    }
    if opts.keep && outcome == Outcome::Done {
        let name = lab.name().to_string();
        lab.keep();
        let pid = keep_endpoint(&name)?;
        note(
            out,
            opts.json,
            format!(
                "lab {name} left up (--keep) with an endpoint (pid {pid}: closelab listen --lab {name} --port {KEEP_PORT} \
                 --close never, CLOSE-WAIT stays as in story 3): make a connection with \
                 `closelab lab exec {name} -- python3 -c \"import socket; s=socket.create_connection(('{}', {KEEP_PORT})); s.close()\"`, \
                 look with `closelab ss --lab {name}`; `closelab lab down {name}` stops the endpoint and removes the lab",
                addrs.closelab
            ),
        )?;
    } else {
        let name = lab.name().to_string();
        lab.down().map_err(|e| e.to_string())?;
        note(out, opts.json, format!("lab {name} removed"))?;
    }
    Ok(outcome)
}

/// The port of the endpoint `demo --keep` leaves running.
pub const KEEP_PORT: u16 = 7003;

/// Starts the endpoint `--keep` leaves in the lab: this binary's
/// `listen --lab NAME --port 7003 --close never` in its own process group
/// (Ctrl-C in the terminal does not reach it; `lab down` stops it), its
/// output discarded. Returns its pid once its control socket is there.
fn keep_endpoint(name: &str) -> Result<u32, String> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find closelab's own binary: {e}"))?;
    let port = KEEP_PORT.to_string();
    let child = std::process::Command::new(exe)
        .args(["listen", "--lab", name, "--port", &port, "--close", "never"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start the kept endpoint: {e}"))?;
    let pid = child.id();
    let sock = crate::sys::control::socket_path(&crate::sys::control::Target::Lab(name.to_string()))
        .map_err(|e| format!("cannot find the kept endpoint's control socket: {e}"))?;
    let start = std::time::Instant::now();
    while !sock.exists() {
        if start.elapsed() > StdDuration::from_secs(10) {
            return Err(format!(
                "the kept endpoint (pid {pid}) did not start; `closelab lab down {name}` removes the lab"
            ));
        }
        std::thread::sleep(StdDuration::from_millis(20));
    }
    // Not waited for: it outlives the demo, and `lab down` stops it.
    drop(child);
    Ok(pid)
}

fn ladder(events: &[Event]) -> String {
    // The crawler's requests that found no connection belong to none: the
    // crawl's count line sums them up.
    let mut events: Vec<Event> = events
        .iter()
        .filter(|e| !(e.conn.is_none() && matches!(&e.kind, EventKind::Note { text } if text.starts_with("http: GET"))))
        .cloned()
        .collect();
    // Linux events held until their closelab connection existed carry their
    // original time: order by time for the picture.
    events.sort_by(|a, b| a.t.total_cmp(&b.t));
    crate::view::ladder::render(&events, &crate::view::ladder::LadderOptions { conn: Some(1), ..Default::default() })
}
