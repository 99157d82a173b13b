//! Real node processes for integration tests: per-node configs in a scratch directory, the
//! `totemcast` binary started and signalled, histories read back for the checkers.

#![allow(dead_code, reason = "each test file uses a different subset")]
#![allow(
    clippy::print_stderr,
    reason = "tests say where they kept their evidence"
)]

use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use totemcast::history::{History, HistoryEvent, ProcessId, Record};
use totemcast::ids::{NodeId, RingId};
use totemcast::node::clock;

/// The binary under test.
pub(crate) const BINARY: &str = env!("CARGO_BIN_EXE_totemcast");

/// Timers of a test cluster, short enough for tests and long enough for a loaded machine.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timers {
    /// `token`, ms.
    pub token: u64,
    /// `consensus`, ms.
    pub consensus: u64,
}

impl Default for Timers {
    fn default() -> Timers {
        Timers {
            token: 600,
            consensus: 720,
        }
    }
}

/// A cluster of node processes on loopback.
pub(crate) struct NodeCluster {
    pub(crate) dir: PathBuf,
    pub(crate) addrs: Vec<String>,
    pub(crate) timers: Timers,
    children: Vec<Option<Child>>,
    /// The incarnation each node runs (or ran last).
    incarnations: Vec<u32>,
    workload: u32,
}

impl NodeCluster {
    /// Writes configs for `count` nodes on `addrs` (one per node; default free loopback ports)
    /// with `extra` lines in `[totem]`; does not start them.
    pub(crate) fn new(
        name: &str,
        count: usize,
        timers: Timers,
        workload: u32,
        extra: &str,
    ) -> NodeCluster {
        let addrs = (0..count).map(|_| free_loopback_addr()).collect();
        NodeCluster::with_addrs(name, addrs, timers, workload, extra)
    }

    /// [`NodeCluster::new`] with given addresses.
    pub(crate) fn with_addrs(
        name: &str,
        addrs: Vec<String>,
        timers: Timers,
        workload: u32,
        extra: &str,
    ) -> NodeCluster {
        let dir = std::env::temp_dir().join(format!("totemcast-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let authkey = dir.join("authkey");
        let status = Command::new(BINARY)
            .args(["keygen", "-o"])
            .arg(&authkey)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "keygen failed");
        let mut nodelist = String::new();
        for (index, addr) in addrs.iter().enumerate() {
            let _ = writeln!(
                nodelist,
                "[[node]]\nnodeid = {}\naddr = \"{addr}\"",
                index + 1
            );
        }
        for index in 0..addrs.len() {
            let config = format!(
                "[totem]\ncluster_name = \"{name}\"\ntoken = {}\ntoken_coefficient = 0\n\
                 consensus = {}\n{extra}\n[crypto]\nauthkey = \"{}\"\n[ipc]\nsocket = \"{}\"\n\
                 [system]\nstate_dir = \"{}\"\n{nodelist}",
                timers.token,
                timers.consensus,
                authkey.display(),
                dir.join(format!("node-{}.sock", index + 1)).display(),
                dir.join(format!("state-{}", index + 1)).display(),
            );
            std::fs::write(dir.join(format!("node-{}.toml", index + 1)), config).unwrap();
        }
        let count = addrs.len();
        NodeCluster {
            dir,
            addrs,
            timers,
            children: (0..count).map(|_| None).collect(),
            incarnations: vec![0; count],
            workload,
        }
    }

    /// Number of nodes.
    pub(crate) fn len(&self) -> usize {
        self.children.len()
    }

    /// The config file of node `index` (0-based).
    pub(crate) fn config(&self, index: usize) -> PathBuf {
        self.dir.join(format!("node-{}.toml", index + 1))
    }

    /// The history file of node `index`.
    pub(crate) fn history_file(&self, index: usize) -> PathBuf {
        self.dir.join(format!("history-{}.jsonl", index + 1))
    }

    /// Starts node `index` (again), with `prefix` before the binary (e.g. `ip netns exec`).
    pub(crate) fn start_with(&mut self, index: usize, prefix: &[String]) {
        assert!(self.children[index].is_none(), "node {} runs", index + 1);
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("log-{}.txt", index + 1)))
            .unwrap();
        let mut command = match prefix.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(BINARY);
                command
            }
            None => Command::new(BINARY),
        };
        command
            .arg("node")
            .arg("--config")
            .arg(self.config(index))
            .args(["--nodeid", &(index + 1).to_string()])
            .arg("--history")
            .arg(self.history_file(index));
        if self.workload > 0 {
            command.args(["--workload", &self.workload.to_string()]);
        }
        let child = command
            .env("TOTEMCAST_LOG", "totemcast=info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.children[index] = Some(child);
    }

    /// Starts node `index` on this machine.
    pub(crate) fn start(&mut self, index: usize) {
        self.start_with(index, &[]);
    }

    /// Starts every node.
    pub(crate) fn start_all(&mut self) {
        for index in 0..self.len() {
            self.start(index);
        }
    }

    pub(crate) fn pid(&self, index: usize) -> Pid {
        let child = self.children[index].as_ref().expect("node runs");
        Pid::from_raw(i32::try_from(child.id()).unwrap())
    }

    /// `kill -9`, then records the crash in the node's history (the node cannot).
    pub(crate) fn kill(&mut self, index: usize) {
        let mut child = self.children[index].take().expect("node runs");
        child.kill().unwrap();
        child.wait().unwrap();
        let process = self.process(index);
        let record = Record {
            time: clock::now(),
            process,
            event: HistoryEvent::Crash,
        };
        let mut file = std::fs::File::options()
            .append(true)
            .open(self.history_file(index))
            .unwrap();
        // A record cut short by the kill would merge with ours: start on a new line.
        file.write_all(b"\n").unwrap();
        record.write_json_line(&mut file).unwrap();
        self.incarnations[index] += 1;
    }

    /// SIGTERM and wait for a clean exit (exit status 0).
    pub(crate) fn stop(&mut self, index: usize) {
        kill(self.pid(index), Signal::SIGTERM).unwrap();
        let mut child = self.children[index].take().unwrap();
        let status = child.wait().unwrap();
        assert!(status.success(), "node {} exited with {status}", index + 1);
        self.incarnations[index] += 1;
    }

    /// SIGSTOP.
    pub(crate) fn pause(&self, index: usize) {
        kill(self.pid(index), Signal::SIGSTOP).unwrap();
    }

    /// SIGCONT.
    pub(crate) fn resume(&self, index: usize) {
        kill(self.pid(index), Signal::SIGCONT).unwrap();
    }

    /// Whether node `index` runs.
    pub(crate) fn running(&self, index: usize) -> bool {
        self.children[index].is_some()
    }

    /// The history process id of node `index`'s current (or last) incarnation.
    pub(crate) fn process(&self, index: usize) -> ProcessId {
        ProcessId {
            node: NodeId(u32::try_from(index).unwrap() + 1),
            incarnation: self.incarnations[index],
        }
    }

    /// `totemcast status --json` of node `index`, through the library call.
    pub(crate) fn status(&self, index: usize) -> Option<Value> {
        let socket = self.dir.join(format!("node-{}.sock", index + 1));
        totemcast::node::driver::status(&socket).ok()
    }

    /// Waits until the nodes `members` (0-based) report one operational ring made of exactly
    /// them, and returns it.
    pub(crate) fn wait_for_ring(&self, members: &[usize], within: Duration) -> RingId {
        let expected: Vec<u64> = members.iter().map(|&i| i as u64 + 1).collect();
        let deadline = std::time::Instant::now() + within;
        loop {
            let last = members.iter().map(|&i| self.status(i)).collect::<Vec<_>>();
            let rings: Vec<Option<RingId>> = last
                .iter()
                .map(|status| {
                    let status = status.as_ref()?;
                    let members: Vec<u64> = status["members"]
                        .as_array()?
                        .iter()
                        .filter_map(Value::as_u64)
                        .collect();
                    if status["state"] != "operational" || members != expected {
                        return None;
                    }
                    Some(RingId {
                        rep: u32::try_from(status["ring_id"]["nodeid"].as_u64()?).ok()?,
                        seq: status["ring_id"]["seq"].as_u64()?,
                    })
                })
                .collect();
            if let Some(Some(first)) = rings.first()
                && rings.iter().all(|ring| *ring == Some(*first))
            {
                return *first;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no common ring of {expected:?} within {within:?}; last status: {last:#?}\nlogs in {}",
                self.dir.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until each running node delivered `more` messages beyond what it had delivered
    /// when called (the workload runs through whatever the test did).
    pub(crate) fn wait_for_traffic(&self, more: u64, within: Duration) {
        let delivered = |index: usize| {
            self.status(index)
                .and_then(|status| status["counters"]["protocol"]["messages_delivered"].as_u64())
                .unwrap_or(0)
        };
        let running: Vec<usize> = (0..self.len()).filter(|&i| self.running(i)).collect();
        let start: Vec<u64> = running.iter().map(|&i| delivered(i)).collect();
        let deadline = std::time::Instant::now() + within;
        while !running
            .iter()
            .zip(&start)
            .all(|(&index, &start)| delivered(index) >= start + more)
        {
            assert!(
                std::time::Instant::now() < deadline,
                "deliveries stalled; logs in {}",
                self.dir.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// [`NodeCluster::wait_for_traffic`] for the nodes `members` (0-based) only: the others may
    /// be cut off and deliver nothing.
    pub(crate) fn wait_for_traffic_on(&self, members: &[usize], more: u64, within: Duration) {
        let delivered = |index: usize| {
            self.status(index)
                .and_then(|status| status["counters"]["protocol"]["messages_delivered"].as_u64())
                .unwrap_or(0)
        };
        let start: Vec<u64> = members.iter().map(|&i| delivered(i)).collect();
        let deadline = std::time::Instant::now() + within;
        while !members
            .iter()
            .zip(&start)
            .all(|(&index, &start)| delivered(index) >= start + more)
        {
            assert!(
                std::time::Instant::now() < deadline,
                "deliveries of {members:?} stalled; logs in {}",
                self.dir.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every node's history so far.
    pub(crate) fn history(&self) -> History {
        let files: Vec<PathBuf> = (0..self.len())
            .map(|index| self.history_file(index))
            .filter(|path| path.exists())
            .collect();
        History::from_json_logs(&files).unwrap()
    }

    /// Sets the test workload of a running node (0 stops it).
    pub(crate) fn set_workload(&self, index: usize, rate: u32) {
        let socket = self.dir.join(format!("node-{}.sock", index + 1));
        let request = totemcast::node::control::Request::Workload { rate };
        let answer =
            totemcast::node::control::ask(&socket, &request, Duration::from_secs(5)).unwrap();
        assert_eq!(answer["ok"], true, "{answer}");
    }

    /// The authkey file every node of the cluster reads.
    pub(crate) fn authkey(&self) -> PathBuf {
        self.dir.join("authkey")
    }

    /// Whether node `index` was started and its process has not exited (reaps it if it has).
    pub(crate) fn alive(&mut self, index: usize) -> bool {
        self.children[index]
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }
}

impl Drop for NodeCluster {
    fn drop(&mut self) {
        for child in self.children.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("node logs and histories kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A loopback address with a port that was free a moment ago.
pub(crate) fn free_loopback_addr() -> String {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap().to_string()
}

/// The first regular configuration at `process` recorded after `after` whose members are
/// exactly `members` (1-based node ids), with its time.
pub(crate) fn first_configuration_after(
    history: &History,
    process: ProcessId,
    after: totemcast::time::Instant,
    members: &[u32],
) -> Option<totemcast::time::Instant> {
    history.of(process).find_map(|record| match &record.event {
        HistoryEvent::ConfReg { members: m, .. }
            if record.time > after && m.iter().map(|n| n.0).eq(members.iter().copied()) =>
        {
            Some(record.time)
        }
        _ => None,
    })
}

/// Path helper for messages.
pub(crate) fn show(path: &Path) -> String {
    path.display().to_string()
}

/// Stops the workload, waits until every running node delivered every message (L2 on the
/// recorded histories), stops the nodes cleanly, then runs every safety checker.
#[cfg(feature = "sim")]
pub(crate) fn quiesce_and_check(cluster: &mut NodeCluster) {
    let running: Vec<usize> = (0..cluster.len()).filter(|&i| cluster.running(i)).collect();
    for &index in &running {
        cluster.set_workload(index, 0);
    }
    let live: Vec<_> = running.iter().map(|&i| cluster.process(i)).collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let missing = totemcast::sim::checker::check_all_delivered(&cluster.history(), &live);
        if missing.is_empty() {
            break;
        }
        if std::time::Instant::now() >= deadline {
            let statuses: Vec<_> = running.iter().map(|&i| cluster.status(i)).collect();
            panic!(
                "not delivered everywhere: {:#?}\nstatus of the running nodes: {statuses:#?}\n\
                 logs in {}",
                &missing[..missing.len().min(5)],
                cluster.dir.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for index in running {
        cluster.stop(index);
    }
    let history = cluster.history();
    let submits = history
        .records
        .iter()
        .filter(|r| matches!(r.event, totemcast::history::HistoryEvent::Submit { .. }))
        .count();
    assert!(submits > 50, "the workload ran ({submits} submits)");
    let violations = totemcast::sim::checker::check_safety(&history);
    assert!(
        violations.is_empty(),
        "{violations:#?}\nlogs in {}",
        cluster.dir.display()
    );
}
