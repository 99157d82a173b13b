//! The scenarios of Corosync's harness (`../shared/bench/corosync/run.sh` and `cluster3.sh`)
//! run against our node: the list of steps, the nodes they run on (one `totemcast node`
//! process on loopback, or three in network namespaces), the worker processes of each step,
//! and the memory and failure-detection scenarios.
//!
//! Every sender, receiver, ping and pong is a process of its own (`totemcast bench --role …`,
//! or a Python worker), as cpgbench's are, talking to a node process over its socket.

#![allow(
    clippy::cast_precision_loss,
    reason = "rates and times of counts far below 2^52"
)]

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader, Read as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::api::Guarantee;
use crate::node::config_file;

use super::netns::Net;
use super::progress::Progress;
use super::report::{Line, Stat};
use super::worker::{Api, Role, WorkerArgs, guarantee_name};

/// Set by SIGINT/SIGTERM: steps stop, workers and nodes are stopped, namespaces deleted.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Parts of a benchmark run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Part {
    /// One node: throughput, fan-out, round trip.
    Single,
    /// Three nodes in network namespaces: throughput, fan-out, round trip.
    Cluster3,
    /// Resident memory of a node and its clients.
    Memory,
    /// Time from `kill -9` of a node to the new configuration.
    Failover,
}

impl Part {
    /// The part named `name` (`single`, `cluster3`, `memory`, `failover`).
    #[must_use]
    pub fn parse(name: &str) -> Option<Part> {
        Some(match name {
            "single" | "one-node" => Part::Single,
            "cluster3" | "three-nodes" => Part::Cluster3,
            "memory" => Part::Memory,
            "failover" => Part::Failover,
            _ => return None,
        })
    }
}

/// Which client library a worker uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Client {
    /// `totemcast::cpg::Handle` (`totemcast bench --role …`).
    Rust,
    /// `totemcast.cpg.Handle` (the command of `--python-worker`, same arguments).
    Python,
}

/// What `totemcast bench` runs.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchOptions {
    /// Message sizes of the throughput scenarios.
    pub sizes: Vec<usize>,
    /// Seconds per throughput run.
    pub duration: f64,
    /// Repetitions.
    pub reps: u32,
    /// The `rep=` label of the first repetition (`make bench-compare` numbers its rounds).
    pub first_rep: u32,
    /// Receivers of the one-node fan-out.
    pub receivers: usize,
    /// Round trips measured on one node.
    pub lat_iters: u64,
    /// Round trips measured on three nodes.
    pub lat_iters_cluster3: u64,
    /// Guarantees measured (AGREED always first).
    pub guarantees: Vec<Guarantee>,
    /// Client libraries measured.
    pub clients: Vec<Client>,
    /// The Python worker's command line (program and arguments), for [`Client::Python`].
    pub python_worker: Option<Vec<String>>,
    /// Parts to run.
    pub parts: BTreeSet<Part>,
    /// `token` (ms) of the three-node clusters; `None`: the default (Corosync's).
    pub token_ms: Option<u32>,
    /// Kills measured in the failure-detection part.
    pub failover_reps: u32,
    /// Short memory scenarios.
    pub quick: bool,
    /// Keep the work directory (configs, node logs).
    pub keep: bool,
}

impl Default for BenchOptions {
    /// The harness's defaults (`run.sh`): 5 s, four sizes, 3 repetitions, 3 receivers,
    /// 20 000 round trips on one node, 5 000 on three.
    fn default() -> BenchOptions {
        BenchOptions {
            sizes: vec![64, 1024, 16384, 65536],
            duration: 5.0,
            reps: 3,
            first_rep: 1,
            receivers: 3,
            lat_iters: 20_000,
            lat_iters_cluster3: 5_000,
            guarantees: vec![Guarantee::Agreed, Guarantee::Safe],
            clients: vec![Client::Rust],
            python_worker: None,
            parts: [Part::Single, Part::Cluster3].into_iter().collect(),
            token_ms: None,
            failover_reps: 3,
            quick: false,
            keep: false,
        }
    }
}

impl BenchOptions {
    /// `--quick`: the harness's smoke-run figures (`DURATION=1 REPS=1 LAT_ITERS=2000`).
    pub fn quick(&mut self) {
        self.duration = 1.0;
        self.reps = 1;
        self.lat_iters = 2_000;
        self.lat_iters_cluster3 = 1_000;
        self.failover_reps = 1;
        self.quick = true;
    }
}

/// Where a step runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topology {
    /// One node on loopback.
    One,
    /// Three nodes in network namespaces.
    Three,
}

/// What a step measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// One sender, alone in its group.
    Send(Api),
    /// One sender and its receivers.
    Fanout,
    /// Ping-pong round trips.
    Latency,
}

/// One measurement: a set of worker processes run together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    /// Where.
    pub topology: Topology,
    /// What.
    pub kind: Kind,
    /// Message size (64 for round trips).
    pub size: usize,
    /// AGREED or SAFE.
    pub guarantee: Guarantee,
    /// Which client library.
    pub client: Client,
    /// The repetition label.
    pub rep: u32,
}

impl Step {
    /// The `bench=` name: the harness's (`send`, `send-zcb`, `fanout`, `latency`,
    /// `cluster3-…`), ours for batched sends (`send-batch`), `-safe` for SAFE and `py-` for
    /// the Python client.
    #[must_use]
    pub fn bench(&self) -> String {
        let base = match self.kind {
            Kind::Send(Api::Iovec) => "send",
            Kind::Send(Api::Zcb) => "send-zcb",
            Kind::Send(Api::Batch) => "send-batch",
            Kind::Fanout => "fanout",
            Kind::Latency => "latency",
        };
        let mut name = match self.topology {
            Topology::One => base.to_string(),
            Topology::Three => format!("cluster3-{base}"),
        };
        if self.guarantee == Guarantee::Safe {
            name.push_str("-safe");
        }
        if self.client == Client::Python {
            name.insert_str(0, "py-");
        }
        name
    }

    /// A short description for the progress display.
    #[must_use]
    pub fn label(&self) -> String {
        let nodes = match self.topology {
            Topology::One => "1 node",
            Topology::Three => "3 nodes",
        };
        let client = match self.client {
            Client::Rust => "rust",
            Client::Python => "python",
        };
        let what = match self.kind {
            Kind::Latency => "round trip".to_string(),
            _ => format!("{} B", self.size),
        };
        let bench = self.bench();
        let guarantee = guarantee_name(self.guarantee);
        format!(
            "{nodes} · {bench} · {what} · {guarantee} · {client} · rep {}",
            self.rep
        )
    }
}

/// The throughput and round-trip steps of `options`, in the harness's order: per
/// repetition, per size the sends and fan-outs, then the round trips; the one-node part,
/// then the three-node part.
#[must_use]
pub fn plan(options: &BenchOptions) -> Vec<Step> {
    let mut steps = Vec::new();
    for (part, topology) in [
        (Part::Single, Topology::One),
        (Part::Cluster3, Topology::Three),
    ] {
        if !options.parts.contains(&part) {
            continue;
        }
        for rep in options.first_rep..options.first_rep + options.reps {
            let step = |kind, size, guarantee, client| Step {
                topology,
                kind,
                size,
                guarantee,
                client,
                rep,
            };
            for &size in &options.sizes {
                for &client in &options.clients {
                    for &guarantee in &options.guarantees {
                        let agreed = guarantee == Guarantee::Agreed;
                        let rust = client == Client::Rust;
                        // The harness's sends (a) and (b), our batched sends, then (c).
                        steps.push(step(Kind::Send(Api::Iovec), size, guarantee, client));
                        if agreed && rust && topology == Topology::One {
                            steps.push(step(Kind::Send(Api::Zcb), size, guarantee, client));
                        }
                        if agreed {
                            steps.push(step(Kind::Send(Api::Batch), size, guarantee, client));
                        }
                        if rust || topology == Topology::One {
                            steps.push(step(Kind::Fanout, size, guarantee, client));
                        }
                    }
                }
            }
            for &client in &options.clients {
                for &guarantee in &options.guarantees {
                    steps.push(step(Kind::Latency, 64, guarantee, client));
                }
            }
        }
    }
    steps
}

/// Resident memory of a process (`/proc/PID/status`), KiB.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcMemory {
    /// `VmRSS`.
    pub rss_kb: u64,
    /// `RssAnon`: private memory.
    pub anon_kb: u64,
    /// `RssShmem`: shared memory resident (the IPC rings).
    pub shmem_kb: u64,
    /// `VmHWM`: the peak RSS.
    pub hwm_kb: u64,
}

impl ProcMemory {
    /// The memory of process `pid` (`"self"` for this one).
    pub fn of(pid: &str) -> std::io::Result<ProcMemory> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        Ok(ProcMemory::parse(&text))
    }

    fn parse(status: &str) -> ProcMemory {
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
                .unwrap_or(0)
        };
        ProcMemory {
            rss_kb: field("VmRSS"),
            anon_kb: field("RssAnon"),
            shmem_kb: field("RssShmem"),
            hwm_kb: field("VmHWM"),
        }
    }
}

/// The command line that runs this program: `$TOTEMCAST_BENCH_SELF` (set by the Python
/// front to `python -m totemcast`), else this executable.
fn self_command() -> Result<Vec<String>, String> {
    if let Some(argv) = std::env::var("TOTEMCAST_BENCH_SELF")
        .ok()
        .map(|text| {
            text.split_whitespace()
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .filter(|argv| !argv.is_empty())
    {
        return Ok(argv);
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    Ok(vec![exe.display().to_string()])
}

/// Worker processes and the nodes they talk to.
struct Env<'a> {
    options: &'a BenchOptions,
    /// This program (see [`self_command`]).
    exe: Vec<String>,
    progress: &'a mut Progress,
}

impl Env<'_> {
    /// The command that runs a worker of `client` with `args` in front of it (`ip netns exec
    /// NS`).
    fn worker(&self, client: Client, prefix: &[String], args: &WorkerArgs) -> Command {
        let mut line: Vec<String> = prefix.to_vec();
        match client {
            Client::Rust => {
                line.extend(self.exe.iter().cloned());
                line.push("bench".into());
            }
            Client::Python => line.extend(self.options.python_worker.clone().unwrap_or_default()),
        }
        line.extend(args.to_args());
        let mut command = Command::new(&line[0]);
        command.args(&line[1..]);
        command
    }

    /// Runs `workers` together (in this order: receivers before their sender), waits for all,
    /// and returns their RESULT lines.
    /// On a failure, the clients' counters of the node on `diagnose` (asked before the workers
    /// still running are stopped) go into the error, for whoever looks into it.
    fn run_workers(
        &mut self,
        workers: Vec<Command>,
        deadline: Duration,
        diagnose: Option<&Path>,
    ) -> Result<Vec<Line>, String> {
        let mut running = Vec::new();
        for mut command in workers {
            let label = describe(&command);
            let mut child = command
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|error| format!("cannot start a worker: {error}"))?;
            let mut stdout = child.stdout.take().expect("piped");
            let mut stderr = child.stderr.take().expect("piped");
            let out = std::thread::spawn(move || {
                let mut text = String::new();
                let _ = stdout.read_to_string(&mut text);
                text
            });
            let err = std::thread::spawn(move || {
                let mut text = String::new();
                let _ = stderr.read_to_string(&mut text);
                text
            });
            running.push(Running {
                label,
                child,
                out,
                err,
                status: None,
            });
        }
        let started = Instant::now();
        let mut failure = None;
        while running.iter().any(|r| r.status.is_none()) {
            for worker in &mut running {
                if worker.status.is_none() {
                    worker.status = worker.child.try_wait().map_err(|e| e.to_string())?;
                    if worker.status.is_some_and(|s| !s.success()) && failure.is_none() {
                        failure = Some(format!("a worker failed ({})", worker.status.unwrap()));
                    }
                }
            }
            if failure.is_some() || INTERRUPTED.load(Ordering::Relaxed) {
                failure.get_or_insert_with(|| "interrupted".into());
                break;
            }
            if started.elapsed() > deadline {
                failure = Some(format!(
                    "the workers did not finish within {} s",
                    deadline.as_secs()
                ));
                break;
            }
            self.progress.tick();
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut lines = Vec::new();
        let mut errors = String::new();
        let stuck: Vec<&str> = running
            .iter()
            .filter(|worker| worker.status.is_none())
            .map(|worker| worker.label.as_str())
            .collect();
        if failure.is_some()
            && let Some(socket) = diagnose
        {
            let clients = crate::node::driver::status(socket)
                .map_or_else(|e| e.to_string(), |s| s["counters"]["clients"].to_string());
            let _ = writeln!(errors, "the node's clients: {clients}");
        }
        if failure.is_some() && !stuck.is_empty() {
            let _ = writeln!(errors, "still running: {}", stuck.join("; "));
            // A Python worker dumps its threads' stacks on SIGUSR1 (faulthandler).
            for worker in running.iter().filter(|worker| worker.status.is_none()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(worker.child.id() as i32),
                    nix::sys::signal::Signal::SIGUSR1,
                );
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        for mut worker in running {
            if worker.status.is_none() {
                let _ = worker.child.kill();
                let _ = worker.child.wait();
            }
            let out = worker.out.join().unwrap_or_default();
            lines.extend(out.lines().filter_map(Line::parse));
            let err = worker.err.join().unwrap_or_default();
            if !err.trim().is_empty() {
                let _ = writeln!(errors, "[{}] {}", worker.label, err.trim());
            }
        }
        match failure {
            Some(failure) => Err(format!("{failure}\n{}", errors.trim())),
            None => Ok(lines),
        }
    }

    fn deadline(&self) -> Duration {
        Duration::from_secs_f64(self.options.duration * 3.0 + 60.0)
    }

    /// Runs one step on `nodes`; its RESULT lines tagged with `bench` and `rep`.
    fn step(&mut self, nodes: &Nodes, step: &Step) -> Result<Vec<Line>, String> {
        let three = step.topology == Topology::Three;
        let group = format!("{}-{}-{}", step.bench(), step.size, step.rep);
        let base = WorkerArgs {
            socket: nodes.socket(0),
            group,
            size: step.size,
            secs: self.options.duration,
            guarantee: step.guarantee,
            timeout_s: self.deadline().as_secs() as u32,
            ..WorkerArgs::default()
        };
        let round_trips = if three {
            self.options.lat_iters_cluster3
        } else {
            self.options.lat_iters
        };
        let mut workers = Vec::new();
        match step.kind {
            Kind::Send(api) => {
                let args = WorkerArgs {
                    role: Role::Send,
                    api,
                    ..base
                };
                workers.push(self.worker(step.client, &nodes.prefix(0), &args));
            }
            Kind::Fanout => {
                // One node: RECEIVERS on it; three nodes: one on node 2 and one on node 3.
                let receivers = if three { 2 } else { self.options.receivers };
                for index in 0..receivers {
                    let node = if three { 1 + index % 2 } else { 0 };
                    let args = WorkerArgs {
                        role: Role::Recv,
                        socket: nodes.socket(node),
                        ..base.clone()
                    };
                    workers.push(self.worker(step.client, &nodes.prefix(node), &args));
                }
                let args = WorkerArgs {
                    role: Role::Send,
                    members: receivers + 1,
                    ..base
                };
                workers.push(self.worker(step.client, &nodes.prefix(0), &args));
            }
            Kind::Latency => {
                let peer = usize::from(three);
                let args = WorkerArgs {
                    role: Role::Pong,
                    socket: nodes.socket(peer),
                    ..base.clone()
                };
                workers.push(self.worker(step.client, &nodes.prefix(peer), &args));
                let warmup = if three { 500 } else { 1000 };
                let args = WorkerArgs {
                    role: Role::Ping,
                    count: Some(round_trips),
                    warmup: warmup.min(round_trips),
                    ..base
                };
                workers.push(self.worker(step.client, &nodes.prefix(0), &args));
            }
        }
        let before = NodeSample::take(nodes);
        let mut lines = self.run_workers(workers, self.deadline(), Some(&nodes.socket(0)))?;
        let after = NodeSample::take(nodes);
        // Messages sent: the sender's count, or a ping's round trips (each two messages).
        let sent = lines
            .iter()
            .find(|line| line.role() == "sender")
            .and_then(|line| line.number("msgs"))
            .or_else(|| (step.kind == Kind::Latency).then_some(2.0 * round_trips as f64));
        if let (Some(msgs), Some(before), Some(after)) = (sent, before, after) {
            let mut stats = after.since(&before, msgs);
            stats.set("size", step.size.max(super::worker::HEADER).to_string());
            // What flow control allowed per token visit, for the report's bounds.
            stats.set(
                "max_messages",
                nodes.configs[0].totem.max_messages.to_string(),
            );
            lines.push(stats);
        }
        for line in &mut lines {
            line.set("bench", step.bench());
            line.set("rep", step.rep.to_string());
        }
        Ok(lines)
    }
}

/// Where the nodes' time went during a step: their CPU time and run-queue waits (all nodes,
/// from `/proc/PID/task/*/schedstat`), and node 1's protocol and transport counters.
#[derive(Clone, Debug)]
struct NodeSample {
    at: std::time::Instant,
    run_ns: u64,
    wait_ns: u64,
    counters: serde_json::Value,
}

impl NodeSample {
    fn take(nodes: &Nodes) -> Option<NodeSample> {
        let (mut run_ns, mut wait_ns) = (0, 0);
        for index in 0..nodes.children.len() {
            let pid = nodes.pid(index)?;
            for task in std::fs::read_dir(format!("/proc/{pid}/task"))
                .ok()?
                .flatten()
            {
                let text = std::fs::read_to_string(task.path().join("schedstat")).ok()?;
                let mut fields = text
                    .split_whitespace()
                    .map(|f| f.parse::<u64>().unwrap_or(0));
                run_ns += fields.next().unwrap_or(0);
                wait_ns += fields.next().unwrap_or(0);
            }
        }
        let status = crate::node::driver::status(&nodes.socket(0)).ok()?;
        Some(NodeSample {
            at: std::time::Instant::now(),
            run_ns,
            wait_ns,
            counters: status["counters"].clone(),
        })
    }

    /// The `role=node_stats` line of the step between `before` and this, in which the
    /// sender sent `msgs` messages.
    fn since(&self, before: &NodeSample, msgs: f64) -> Line {
        let delta = |group: &str, name: &str| {
            let value = |s: &NodeSample| s.counters[group][name].as_u64().unwrap_or(0);
            value(self).saturating_sub(value(before)) as f64
        };
        let cpu_ms = self.run_ns.saturating_sub(before.run_ns) as f64 / 1e6;
        let wait_ms = self.wait_ns.saturating_sub(before.wait_ns) as f64 / 1e6;
        let tokens = delta("protocol", "tokens_accepted");
        let packets = delta("protocol", "mcasts_sent");
        let msgs = msgs.max(1.0);
        // Node 1 accepts the token once per rotation.
        let elapsed_us = self.at.saturating_duration_since(before.at).as_secs_f64() * 1e6;
        Line::from_pairs([
            ("role", "node_stats".to_string()),
            ("msgs", format!("{msgs:.0}")),
            ("nodes_cpu_ms", format!("{cpu_ms:.0}")),
            ("nodes_runqueue_wait_ms", format!("{wait_ms:.0}")),
            ("cpu_us_per_msg", format!("{:.2}", cpu_ms * 1e3 / msgs)),
            ("tokens", format!("{tokens:.0}")),
            ("msgs_per_token", format!("{:.1}", msgs / tokens.max(1.0))),
            (
                "rotation_us",
                format!("{:.1}", elapsed_us / tokens.max(1.0)),
            ),
            ("packets", format!("{packets:.0}")),
            ("packets_per_msg", format!("{:.3}", packets / msgs)),
            (
                "core_msgs",
                format!("{:.0}", delta("protocol", "messages_delivered")),
            ),
            (
                "retransmits",
                format!("{:.0}", delta("protocol", "retransmits_sent")),
            ),
            (
                "flow_control_limited",
                format!("{:.0}", delta("protocol", "flow_control_limited")),
            ),
            (
                "token_holds",
                format!("{:.0}", delta("protocol", "token_holds")),
            ),
            (
                "datagrams_sent",
                format!("{:.0}", delta("transport", "datagrams_sent")),
            ),
        ])
    }
}

struct Running {
    /// Role, group and node socket, for messages.
    label: String,
    child: Child,
    out: std::thread::JoinHandle<String>,
    err: std::thread::JoinHandle<String>,
    status: Option<std::process::ExitStatus>,
}

/// A worker's command in a few words: its `--role`, `-g` and `--socket` values.
fn describe(command: &Command) -> String {
    let args: Vec<String> = command
        .get_args()
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect();
    let after = |flag: &str| {
        args.iter()
            .position(|arg| arg == flag)
            .and_then(|at| args.get(at + 1))
            .map_or("?", String::as_str)
    };
    format!(
        "{} in {} on {}",
        after("--role"),
        after("-g"),
        after("--socket")
    )
}

/// `totemcast node` processes: one on loopback or three in network namespaces. Stopped
/// (SIGTERM, then SIGKILL) on drop, before their namespaces are deleted.
struct Nodes {
    dir: PathBuf,
    children: Vec<Option<Child>>,
    configs: Vec<config_file::FileConfig>,
    net: Option<Net>,
}

impl Nodes {
    /// Starts `count` nodes (three go into namespaces) in `dir` and waits until they form
    /// one ring.
    fn start(
        exe: &[String],
        dir: &Path,
        count: usize,
        token_ms: Option<u32>,
    ) -> Result<Nodes, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let net = if count > 1 {
            Some(Net::create(count)?)
        } else {
            None
        };
        let addrs: Vec<String> = if count > 1 {
            (0..count).map(|index| Net::addr(index, 5405)).collect()
        } else {
            let port = std::net::UdpSocket::bind("127.0.0.1:0")
                .and_then(|socket| socket.local_addr())
                .map_err(|e| format!("no free port: {e}"))?;
            vec![port.to_string()]
        };
        let mut nodes = Nodes {
            dir: dir.to_path_buf(),
            children: Vec::new(),
            configs: Vec::new(),
            net,
        };
        for index in 0..count {
            let text = node_config(dir, index, &addrs, token_ms);
            let path = dir.join(format!("node-{}.toml", index + 1));
            std::fs::write(&path, &text).map_err(|e| format!("{}: {e}", path.display()))?;
            let config = config_file::parse(&text, &path).map_err(|e| e.to_string())?;
            nodes.configs.push(config);
            let log = std::fs::File::create(dir.join(format!("node-{}.log", index + 1)))
                .map_err(|e| e.to_string())?;
            let argv: Vec<String> = nodes
                .prefix(index)
                .into_iter()
                .chain(exe.iter().cloned())
                .collect();
            let mut command = Command::new(&argv[0]);
            command.args(&argv[1..]);
            let child = command
                .arg("node")
                .arg("--config")
                .arg(&path)
                .args(["--nodeid", &(index + 1).to_string()])
                .env("TOTEMCAST_LOG", "totemcast=info")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .map_err(|e| format!("cannot start a node: {e}"))?;
            nodes.children.push(Some(child));
        }
        nodes.wait_ring(count, Duration::from_secs(60))?;
        Ok(nodes)
    }

    /// Waits until every running node is operational in a ring of `members` nodes.
    fn wait_ring(&mut self, members: usize, timeout: Duration) -> Result<(), String> {
        let started = Instant::now();
        loop {
            let ready = (0..self.children.len())
                .filter(|&index| self.children[index].is_some())
                .all(|index| {
                    crate::node::driver::status(&self.socket(index)).is_ok_and(|status| {
                        status["state"] == "operational"
                            && status["members"].as_array().map(Vec::len) == Some(members)
                    })
                });
            if ready {
                return Ok(());
            }
            for (index, child) in self.children.iter_mut().enumerate() {
                if let Some(child) = child
                    && let Ok(Some(status)) = child.try_wait()
                {
                    return Err(format!(
                        "node {} exited ({status}); see {}",
                        index + 1,
                        self.dir.join(format!("node-{}.log", index + 1)).display()
                    ));
                }
            }
            if INTERRUPTED.load(Ordering::Relaxed) {
                return Err("interrupted".into());
            }
            if started.elapsed() > timeout {
                return Err(format!(
                    "the nodes did not form a ring of {members} within {} s; logs in {}",
                    timeout.as_secs(),
                    self.dir.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn socket(&self, index: usize) -> PathBuf {
        self.configs[index].ipc.socket.clone()
    }

    fn prefix(&self, index: usize) -> Vec<String> {
        self.net
            .as_ref()
            .map_or_else(Vec::new, |net| net.prefix(index))
    }

    fn pid(&self, index: usize) -> Option<u32> {
        self.children[index].as_ref().map(Child::id)
    }

    /// Forgets node `index` after someone killed it.
    fn reap(&mut self, index: usize) {
        if let Some(mut child) = self.children[index].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn stop(&mut self) {
        for child in self.children.iter().flatten() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let started = Instant::now();
        for child in self
            .children
            .iter_mut()
            .filter_map(Option::take)
            .collect::<Vec<_>>()
        {
            let mut child = child;
            while started.elapsed() < Duration::from_secs(5) {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        self.stop();
        // `net` is dropped after this: the namespaces go once nothing runs in them.
    }
}

/// The configuration of node `index` of a cluster on `addrs` (crypto off, as in the
/// Corosync harness).
fn node_config(dir: &Path, index: usize, addrs: &[String], token_ms: Option<u32>) -> String {
    use std::fmt::Write as _;
    let mut text = String::from("[totem]\ncluster_name = \"bench\"\n");
    if let Some(token) = token_ms {
        let _ = writeln!(text, "token = {token}");
    }
    let _ = write!(
        text,
        "[crypto]\ncipher = \"none\"\n[ipc]\nsocket = \"{}\"\n[system]\nstate_dir = \"{}\"\n",
        dir.join(format!("node-{}.sock", index + 1)).display(),
        dir.join(format!("state-{}", index + 1)).display(),
    );
    for (number, addr) in addrs.iter().enumerate() {
        let _ = write!(
            text,
            "[[node]]\nnodeid = {}\naddr = \"{addr}\"\n",
            number + 1
        );
    }
    text
}

/// A scratch directory, removed on drop unless kept.
struct WorkDir {
    path: PathBuf,
    keep: bool,
}

impl WorkDir {
    fn new(keep: bool) -> Result<WorkDir, String> {
        let path = std::env::temp_dir().join(format!("totemcast-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(WorkDir { path, keep })
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if self.keep {
            tracing::info!(dir = %self.path.display(), "work directory kept");
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Runs every part of `options`, adding the tagged RESULT lines to `lines` as they come. A
/// step that fails is reported and skipped (as run.sh does); the error lists the failures.
pub fn run(
    options: &BenchOptions,
    progress: &mut Progress,
    lines: &mut Vec<Line>,
) -> Result<(), String> {
    let exe = self_command()?;
    let work = WorkDir::new(options.keep)?;
    let steps = plan(options);
    let memory = if options.parts.contains(&Part::Memory) {
        memory_cases(options.quick)
    } else {
        Vec::new()
    };
    let failover_reps = if options.parts.contains(&Part::Failover) {
        options.failover_reps
    } else {
        0
    };
    progress.set_total(steps.len() + memory.len() + failover_reps as usize);
    let mut env = Env {
        options,
        exe: exe.clone(),
        progress,
    };
    // The machine's copy rate bounds the large fan-out: measured here, next to it.
    if let Some(step) = steps
        .iter()
        .find(|s| s.topology == Topology::One && s.kind == Kind::Fanout && s.size >= 64 << 10)
    {
        lines.push(super::copy_rate::measure(step.size));
    }
    let mut failures = Vec::new();
    // A failed step leaves a `role=failed` line (its reason in one word-joined token), so
    // that reports say what is missing and why.
    let mut check = |env: &mut Env<'_>,
                     label: &str,
                     (bench, rep, size): (String, u32, usize),
                     outcome: Result<(Vec<Line>, String), String>| {
        match outcome {
            Ok((mine, summary)) => {
                env.progress.end(&summary);
                lines.extend(mine);
            }
            Err(error) => {
                env.progress.end("FAILED");
                env.progress.warn(&format!("FAILED: {label}: {error}"));
                let first = error.lines().next().unwrap_or("").to_string();
                lines.push(Line::from_pairs([
                    ("bench", bench),
                    ("rep", rep.to_string()),
                    ("size", size.to_string()),
                    ("role", "failed".to_string()),
                    (
                        "reason",
                        first.split_whitespace().collect::<Vec<_>>().join("_"),
                    ),
                ]));
                failures.push(format!("{label}: {first}"));
            }
        }
        if INTERRUPTED.load(Ordering::Relaxed) {
            Err("interrupted".to_string())
        } else {
            Ok(())
        }
    };
    for (topology, count, name) in [(Topology::One, 1, "one"), (Topology::Three, 3, "three")] {
        let mine: Vec<&Step> = steps.iter().filter(|s| s.topology == topology).collect();
        if mine.is_empty() {
            continue;
        }
        env.progress.note(&format!(
            "starting {count} node(s) for the {name}-node scenarios"
        ));
        let nodes = Nodes::start(&exe, &work.path.join(name), count, None)?;
        for step in mine {
            let label = step.label();
            env.progress.begin(&label);
            let outcome = env.step(&nodes, step).map(|l| {
                let s = summary(&l);
                (l, s)
            });
            check(
                &mut env,
                &label,
                (step.bench(), step.rep, step.size),
                outcome,
            )?;
        }
    }
    for case in &memory {
        let label = format!("memory · {}", case.name);
        env.progress.begin(&label);
        let dir = work.path.join(format!("memory-{}", case.name));
        let outcome = memory_case(&mut env, &dir, case).map(|line| {
            let s = format!(
                "node {} KiB RSS ({} KiB private)",
                line.get("node_rss_kb").unwrap_or("?"),
                line.get("node_anon_kb").unwrap_or("?")
            );
            (vec![line], s)
        });
        check(&mut env, &label, ("memory".into(), 1, case.size), outcome)?;
    }
    for rep in options.first_rep..options.first_rep + failover_reps {
        let label = format!("failure detection · kill -9 · rep {rep}");
        env.progress.begin(&label);
        let dir = work.path.join(format!("failover-{rep}"));
        let outcome = failover(&mut env, &dir, rep).map(|line| {
            let s = format!(
                "{} ms (bound {} ms)",
                line.get("detect_ms").unwrap_or("?"),
                line.get("bound_ms").unwrap_or("?")
            );
            (vec![line], s)
        });
        check(&mut env, &label, ("failover".into(), rep, 0), outcome)?;
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} step(s) failed: {}",
            failures.len(),
            failures.join("; ")
        ))
    }
}

/// A few words on a step's result for the progress display.
fn summary(lines: &[Line]) -> String {
    let role = |name: &'static str| lines.iter().filter(move |l| l.role() == name);
    if let Some(ping) = role("ping_rtt").next() {
        return format!(
            "median {} µs, p99 {} µs",
            ping.get("median_us").unwrap_or("?"),
            ping.get("p99_us").unwrap_or("?")
        );
    }
    let mut parts = Vec::new();
    if let Some(sender) = role("sender").next() {
        parts.push(format!(
            "{} msg/s, {} MB/s",
            sender.get("msgs_s").unwrap_or("?"),
            sender.get("MBps").unwrap_or("?")
        ));
    }
    if let Some(stats) = role("node_stats").next() {
        parts.push(format!(
            "node CPU {} µs/msg",
            stats.get("cpu_us_per_msg").unwrap_or("?")
        ));
    }
    let missed: f64 = lines
        .iter()
        .filter_map(|l| l.number("wakeups_missed"))
        .sum();
    if missed > 0.0 {
        parts.push(format!("{missed} missed wake-ups"));
    }
    let idle: f64 = lines.iter().filter_map(|l| l.number("idle_waits")).sum();
    if idle > 0.0 {
        parts.push(format!("{idle} idle 1 s waits"));
    }
    if let Some(stat) = Stat::of(role("receiver").filter_map(|l| l.number("MBps"))) {
        parts.push(format!(
            "receivers {:.1} MB/s each (median of {})",
            stat.median, stat.count
        ));
    }
    parts.join("; ")
}

/// One memory scenario.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryCase {
    /// Its name (no spaces: it goes into a RESULT line).
    pub name: String,
    /// Client processes (one handle each).
    pub clients: usize,
    /// Groups they are spread over.
    pub groups: usize,
    /// Size of the messages the first client sends.
    pub size: usize,
    /// Messages it sends (delivered to every client of its group).
    pub msgs: u64,
}

/// The memory scenarios: an idle node, one client, 100 clients over 1, 10 and 100 groups,
/// one client sending messages of growing size, and 100 clients receiving.
#[must_use]
pub fn memory_cases(quick: bool) -> Vec<MemoryCase> {
    // Enough bytes to go around the rings several times.
    let volume: u64 = if quick { 32 << 20 } else { 128 << 20 };
    let msgs = |size: usize| (volume / size as u64).clamp(64, 500_000);
    let case = |name: &str, clients, groups, size, msgs| MemoryCase {
        name: name.to_string(),
        clients,
        groups,
        size,
        msgs,
    };
    let mut cases = vec![
        case("idle-node", 0, 1, 0, 0),
        case("1-client", 1, 1, 0, 0),
        case("100-clients-1-group", 100, 1, 0, 0),
        case("100-clients-10-groups", 100, 10, 0, 0),
        case("100-clients-100-groups", 100, 100, 0, 0),
    ];
    for size in [64, 1024, 65536, 1 << 20] {
        cases.push(case(
            &format!("1-client-sends-{size}B"),
            1,
            1,
            size,
            msgs(size),
        ));
    }
    cases.push(case(
        "100-clients-1-group-receive-1024B",
        100,
        1,
        1024,
        msgs(1024) / 4,
    ));
    cases
}

/// Starts a node and `case.clients` client processes, samples their memory once the first
/// client has sent its messages and everything was delivered.
fn memory_case(env: &mut Env<'_>, dir: &Path, case: &MemoryCase) -> Result<Line, String> {
    let nodes = Nodes::start(&env.exe, dir, 1, None)?;
    let mut clients: Vec<(Child, ChildStdin)> = Vec::new();
    // A client process, once it has joined (and sent): its first RESULT line says so.
    let spawn = |index: usize, count: u64| -> Result<(Child, ChildStdin), String> {
        let args = WorkerArgs {
            role: Role::Hold,
            socket: nodes.socket(0),
            group: "bench-memory".into(),
            size: case.size,
            count: Some(count),
            groups: case.groups,
            handles: 1,
            // Client `index` is in group `index % groups`.
            group_offset: index,
            timeout_s: 600,
            ..WorkerArgs::default()
        };
        let mut child = Command::new(&env.exe[0])
            .args(&env.exe[1..])
            .arg("bench")
            .args(args.to_args())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start a client: {e}"))?;
        let stdin = child.stdin.take().expect("piped");
        let mut reader = BufReader::new(child.stdout.take().expect("piped"));
        let mut text = String::new();
        loop {
            text.clear();
            if reader.read_line(&mut text).map_err(|e| e.to_string())? == 0 {
                return Err("a memory client ended early".into());
            }
            if Line::parse(text.trim_end()).is_some() {
                return Ok((child, stdin));
            }
        }
    };
    // The others first (they join and wait), then the first client, which sends.
    for index in 1..case.clients {
        let (child, stdin) = spawn(index, 0)?;
        clients.push((child, stdin));
        env.progress.tick();
    }
    let mut first = None;
    if case.clients > 0 {
        let (child, stdin) = spawn(0, case.msgs)?;
        first = Some(ProcMemory::of(&child.id().to_string()).map_err(|e| e.to_string())?);
        clients.insert(0, (child, stdin));
    }
    let pid = nodes.pid(0).expect("running").to_string();
    let node = ProcMemory::of(&pid).map_err(|e| e.to_string())?;
    let others = Stat::of(
        clients
            .iter()
            .skip(1)
            .filter_map(|(child, _)| ProcMemory::of(&child.id().to_string()).ok())
            .map(|m| m.rss_kb as f64),
    );
    for (mut child, stdin) in clients {
        drop(stdin);
        let _ = child.wait();
    }
    drop(nodes);
    let client = first.unwrap_or_default();
    let show = |v: u64| {
        if case.clients == 0 {
            "-".to_string()
        } else {
            v.to_string()
        }
    };
    Ok(Line::from_pairs([
        ("bench", "memory".to_string()),
        ("rep", "1".to_string()),
        ("role", "memory".to_string()),
        ("case", case.name.clone()),
        ("clients", case.clients.to_string()),
        ("groups", case.groups.to_string()),
        ("size", case.size.to_string()),
        ("msgs", case.msgs.to_string()),
        ("node_rss_kb", node.rss_kb.to_string()),
        ("node_anon_kb", node.anon_kb.to_string()),
        ("node_shmem_kb", node.shmem_kb.to_string()),
        ("node_hwm_kb", node.hwm_kb.to_string()),
        ("client_rss_kb", show(client.rss_kb)),
        ("client_anon_kb", show(client.anon_kb)),
        ("client_shmem_kb", show(client.shmem_kb)),
        (
            "other_clients_rss_kb",
            others.map_or("-".into(), |s| format!("{:.0}", s.median)),
        ),
    ]))
}

/// Three nodes; a client on node 1 kills node 3 and times the new configuration.
fn failover(env: &mut Env<'_>, dir: &Path, rep: u32) -> Result<Line, String> {
    let mut nodes = Nodes::start(&env.exe, dir, 3, env.options.token_ms)?;
    let victim = 2;
    let args = WorkerArgs {
        role: Role::Watch,
        socket: nodes.socket(0),
        group: "bench-watch".into(),
        kill: Some(nodes.pid(victim).expect("running") as i32),
        nodes: 3,
        timeout_s: 120,
        ..WorkerArgs::default()
    };
    let watch = env.worker(Client::Rust, &nodes.prefix(0), &args);
    let lines = env.run_workers(vec![watch], Duration::from_secs(120), None);
    nodes.reap(victim);
    let lines = lines?;
    let mut line = lines
        .into_iter()
        .find(|line| line.role() == "failover")
        .ok_or("the watcher reported no new configuration")?;
    let totem = &nodes.configs[0].totem;
    let token = totem.token.as_millis() as u64;
    let consensus = totem.consensus.as_millis() as u64;
    line.set("bench", "failover");
    line.set("rep", rep.to_string());
    line.set("impl", "totemcast");
    line.set("token_ms", token.to_string());
    line.set("consensus_ms", consensus.to_string());
    line.set(
        "bound_ms",
        format!("{:.0}", super::report::bound_ms(token, consensus)),
    );
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_follows_the_harness_then_adds_ours() {
        let options = BenchOptions {
            sizes: vec![64, 65536],
            reps: 1,
            ..BenchOptions::default()
        };
        let steps = plan(&options);
        let names: Vec<String> = steps
            .iter()
            .filter(|s| s.topology == Topology::One && s.size == 64)
            .map(Step::bench)
            .collect();
        assert_eq!(
            names,
            [
                "send",
                "send-zcb",
                "send-batch",
                "fanout",
                "send-safe",
                "fanout-safe",
                "latency",
                "latency-safe"
            ]
        );
        let three: Vec<String> = steps
            .iter()
            .filter(|s| s.topology == Topology::Three && s.size == 65536)
            .map(Step::bench)
            .collect();
        assert_eq!(
            three,
            [
                "cluster3-send",
                "cluster3-send-batch",
                "cluster3-fanout",
                "cluster3-send-safe",
                "cluster3-fanout-safe"
            ]
        );
        // The one-node part comes first.
        assert_eq!(steps[0].topology, Topology::One);
        assert_eq!(steps.last().unwrap().bench(), "cluster3-latency-safe");
    }

    #[test]
    fn repetitions_are_labelled_from_first_rep() {
        let options = BenchOptions {
            sizes: vec![64],
            reps: 2,
            first_rep: 5,
            guarantees: vec![Guarantee::Agreed],
            parts: [Part::Single].into_iter().collect(),
            ..BenchOptions::default()
        };
        let reps: BTreeSet<u32> = plan(&options).iter().map(|s| s.rep).collect();
        assert_eq!(reps.into_iter().collect::<Vec<_>>(), [5, 6]);
        let only_memory = BenchOptions {
            parts: [Part::Memory].into_iter().collect(),
            ..options
        };
        assert!(plan(&only_memory).is_empty());
    }

    #[test]
    fn python_steps_are_named_for_summaries() {
        let options = BenchOptions {
            sizes: vec![64],
            reps: 1,
            guarantees: vec![Guarantee::Agreed],
            clients: vec![Client::Rust, Client::Python],
            ..BenchOptions::default()
        };
        let names: BTreeSet<String> = plan(&options).iter().map(Step::bench).collect();
        for name in [
            "py-send",
            "py-send-batch",
            "py-fanout",
            "py-latency",
            "py-cluster3-send",
            "py-cluster3-send-batch",
            "py-cluster3-latency",
        ] {
            assert!(names.contains(name), "{name} missing from {names:?}");
        }
        assert!(!names.contains("py-send-zcb"));
    }

    #[test]
    fn labels_say_where_what_and_how() {
        let step = Step {
            topology: Topology::Three,
            kind: Kind::Send(Api::Batch),
            size: 1024,
            guarantee: Guarantee::Agreed,
            client: Client::Rust,
            rep: 2,
        };
        assert_eq!(
            step.label(),
            "3 nodes · cluster3-send-batch · 1024 B · agreed · rust · rep 2"
        );
    }

    #[test]
    fn proc_status_fields_are_read_in_kib() {
        let status = "Name:\ttotemcast\nVmHWM:\t   12000 kB\nVmRSS:\t   10000 kB\n\
                      RssAnon:\t    3000 kB\nRssFile:\t    5000 kB\nRssShmem:\t    2000 kB\n";
        assert_eq!(
            ProcMemory::parse(status),
            ProcMemory {
                rss_kb: 10_000,
                anon_kb: 3_000,
                shmem_kb: 2_000,
                hwm_kb: 12_000
            }
        );
        let me = ProcMemory::of("self").unwrap();
        assert!(me.rss_kb > 0 && me.hwm_kb >= me.rss_kb);
    }

    #[test]
    fn node_configs_parse_and_carry_the_token() {
        let dir = Path::new("/tmp/x");
        let addrs = vec![Net::addr(0, 5405), Net::addr(1, 5405), Net::addr(2, 5405)];
        let text = node_config(dir, 1, &addrs, Some(1000));
        let config = config_file::parse(&text, Path::new("x.toml")).unwrap();
        // Corosync's arithmetic: token + 650 ms per node beyond two, consensus 1.2 × token.
        assert_eq!(config.totem.token, Duration::from_millis(1650));
        assert_eq!(config.totem.consensus, Duration::from_millis(1980));
        assert_eq!(config.ipc.socket, dir.join("node-2.sock"));
        assert_eq!(config.nodes.len(), 3);
    }

    #[test]
    fn memory_cases_cover_clients_groups_and_sizes() {
        let cases = memory_cases(true);
        assert!(cases.iter().any(|c| c.clients == 100 && c.groups == 100));
        assert!(cases.iter().any(|c| c.clients == 1 && c.size == 1 << 20));
        for case in &cases {
            assert!(!case.name.contains(' '));
            assert!(case.msgs == 0 || case.msgs >= 64);
        }
    }
}
