//! The benchmark's client processes (`totemcast bench --role …`): the modes of Corosync's
//! `cpgbench.c` against our CPG client, with the same message header, the same loop and the
//! same `RESULT` lines, plus `watch` (failure detection) and `hold` (memory).
//!
//! - `send`: join, wait for `members` members, multicast `size`-byte messages back to back for
//!   `secs` seconds (one `mcast_joined` per message, zero-copy sends with `--zcb`, batches of
//!   `mcast_many` with `--batch`); on `CS_ERR_TRY_AGAIN` wait for room up to 1 ms, dispatch,
//!   retry; every 16 sends a non-blocking dispatch; then END; count own deliveries; rate =
//!   messages / (last own delivery − first send).
//! - `recv`: receive until the sender's END; rate from the sender's timestamp of its first
//!   message (CLOCK_MONOTONIC, shared by every process on the machine, namespaces included).
//! - `ping`/`pong`: round trips of 64-byte messages, each PING answered by a PONG; a PING
//!   unanswered for 1 s is sent again and counted as a stall.
//! - `watch`: wait for the totem configuration of `nodes` nodes, `kill -9` a node's process,
//!   report the time until a smaller configuration is delivered.
//! - `hold`: open `handles` handles over `groups` groups, optionally send messages, report
//!   this process's memory, then hold everything until stdin closes.

#![allow(
    clippy::print_stdout,
    reason = "a worker reports its RESULT lines on stdout, as cpgbench does"
)]
#![allow(
    clippy::cast_precision_loss,
    reason = "rates and times of counts far below 2^52"
)]

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use crate::api::{DispatchFlags, Guarantee};
use crate::cpg::{Event, Handle, Options, ZcbBuffer};
use crate::error::{Error, Result};
use crate::node::clock;

use super::report::{Line, latency_line};

/// cpgbench's magic, "CPGB".
const MAGIC: u32 = 0x4247_5043;
/// The header every benchmark message starts with (cpgbench's `struct hdr`).
pub const HEADER: usize = 32;
const T_DATA: u32 = 1;
const T_END: u32 = 2;
const T_PING: u32 = 3;
const T_PONG: u32 = 4;
const T_QUIT: u32 = 5;
/// Zero-copy buffers a sender rotates through (writing a buffer waits until the node has read
/// its last send; with several, it never waits in practice).
const ZCB_POOL: usize = 64;
/// Messages per `mcast_many` call.
const BATCH: usize = 64;
/// Longest single wait for events when waiting without end (see [`Worker::pump`]).
const WAKEUP_CHECK: Duration = Duration::from_secs(1);

/// What a worker process does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Throughput sender.
    Send,
    /// Fan-out receiver.
    Recv,
    /// Round-trip initiator.
    Ping,
    /// Round-trip answerer.
    Pong,
    /// Failure detection observer.
    Watch,
    /// Idle handles for the memory figure.
    Hold,
}

impl Role {
    /// The role named `name`.
    #[must_use]
    pub fn parse(name: &str) -> Option<Role> {
        Some(match name {
            "send" => Role::Send,
            "recv" => Role::Recv,
            "ping" => Role::Ping,
            "pong" => Role::Pong,
            "watch" => Role::Watch,
            "hold" => Role::Hold,
            _ => return None,
        })
    }
}

/// How a sender sends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Api {
    /// `mcast_joined`, one message per call (cpgbench's `iovec`).
    #[default]
    Iovec,
    /// `zcb_alloc` + `zcb_mcast_joined`.
    Zcb,
    /// `mcast_many`, [`BATCH`] messages per call.
    Batch,
}

impl Api {
    /// The `api=` value of the RESULT line.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Api::Iovec => "iovec",
            Api::Zcb => "zcb",
            Api::Batch => "batch",
        }
    }
}

/// A worker's arguments (cpgbench's options, plus ours).
#[derive(Clone, Debug, PartialEq)]
pub struct WorkerArgs {
    /// The mode.
    pub role: Role,
    /// The node's socket.
    pub socket: PathBuf,
    /// `-g`: the group.
    pub group: String,
    /// `-s`: message size in bytes (at least the 32-byte header).
    pub size: usize,
    /// `-t`: seconds of sending.
    pub secs: f64,
    /// `-n`: most messages (send, hold) or round trips (ping).
    pub count: Option<u64>,
    /// `-w`: round trips not counted (ping).
    pub warmup: u64,
    /// `-m`: members to wait for before sending.
    pub members: usize,
    /// How a sender sends.
    pub api: Api,
    /// `--guarantee`.
    pub guarantee: Guarantee,
    /// `-T`: the process ends after this many seconds whatever happens.
    pub timeout_s: u32,
    /// `--kill PID` (watch): the node process to kill.
    pub kill: Option<i32>,
    /// `--nodes N` (watch): nodes of the configuration before the kill.
    pub nodes: usize,
    /// `--handles N` (hold).
    pub handles: usize,
    /// `--groups N` (hold).
    pub groups: usize,
    /// `--group-offset N` (hold): the first handle joins group `N % groups`.
    pub group_offset: usize,
    /// `--busy-poll US`: the handle's busy-poll window in µs (`None`: the handle's default).
    pub busy_poll_us: Option<u64>,
}

impl Default for WorkerArgs {
    fn default() -> WorkerArgs {
        WorkerArgs {
            role: Role::Send,
            socket: PathBuf::from(crate::cli::DEFAULT_SOCKET),
            group: "bench".into(),
            size: 64,
            secs: 5.0,
            count: None,
            warmup: 1000,
            members: 1,
            api: Api::Iovec,
            guarantee: Guarantee::Agreed,
            timeout_s: 120,
            kill: None,
            nodes: 3,
            handles: 1,
            groups: 1,
            group_offset: 0,
            busy_poll_us: None,
        }
    }
}

impl WorkerArgs {
    /// The command-line arguments that make a worker with these arguments (what
    /// [`super::parse_worker`] reads back).
    #[must_use]
    pub fn to_args(&self) -> Vec<String> {
        let defaults = WorkerArgs::default();
        let role = match self.role {
            Role::Send => "send",
            Role::Recv => "recv",
            Role::Ping => "ping",
            Role::Pong => "pong",
            Role::Watch => "watch",
            Role::Hold => "hold",
        };
        let mut args = vec![
            "--role".to_string(),
            role.to_string(),
            "--socket".to_string(),
            self.socket.display().to_string(),
            "-g".to_string(),
            self.group.clone(),
            "-s".to_string(),
            self.size.to_string(),
            "-t".to_string(),
            self.secs.to_string(),
            "-T".to_string(),
            self.timeout_s.to_string(),
        ];
        let mut push = |flag: &str, value: String| {
            args.push(flag.to_string());
            args.push(value);
        };
        if let Some(count) = self.count {
            push("-n", count.to_string());
        }
        if self.warmup != defaults.warmup {
            push("-w", self.warmup.to_string());
        }
        if self.members != defaults.members {
            push("-m", self.members.to_string());
        }
        if self.guarantee != defaults.guarantee {
            push("--guarantee", guarantee_name(self.guarantee).to_string());
        }
        if let Some(pid) = self.kill {
            push("--kill", pid.to_string());
        }
        if self.nodes != defaults.nodes {
            push("--nodes", self.nodes.to_string());
        }
        if self.handles != defaults.handles {
            push("--handles", self.handles.to_string());
        }
        if self.groups != defaults.groups {
            push("--groups", self.groups.to_string());
        }
        if self.group_offset != defaults.group_offset {
            push("--group-offset", self.group_offset.to_string());
        }
        if let Some(us) = self.busy_poll_us {
            push("--busy-poll", us.to_string());
        }
        match self.api {
            Api::Iovec => {}
            Api::Zcb => args.push("-z".to_string()),
            Api::Batch => args.push("--batch".to_string()),
        }
        args
    }
}

/// CLOCK_MONOTONIC in nanoseconds (the clock cpgbench uses).
fn now_ns() -> u64 {
    clock::now().as_nanos()
}

/// cpgbench's `struct hdr`, little-endian.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Header {
    kind: u32,
    seq: u64,
    t_ns: u64,
    pid: u32,
    nodeid: u32,
}

impl Header {
    fn write(&self, out: &mut [u8]) {
        out[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        out[4..8].copy_from_slice(&self.kind.to_le_bytes());
        out[8..16].copy_from_slice(&self.seq.to_le_bytes());
        out[16..24].copy_from_slice(&self.t_ns.to_le_bytes());
        out[24..28].copy_from_slice(&self.pid.to_le_bytes());
        out[28..32].copy_from_slice(&self.nodeid.to_le_bytes());
    }

    /// Only the fields that change per message.
    fn write_seq(out: &mut [u8], seq: u64, t_ns: u64) {
        out[8..16].copy_from_slice(&seq.to_le_bytes());
        out[16..24].copy_from_slice(&t_ns.to_le_bytes());
    }

    fn read(bytes: &[u8]) -> Option<Header> {
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4"));
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8"));
        if bytes.len() < HEADER || u32_at(0) != MAGIC {
            return None;
        }
        Some(Header {
            kind: u32_at(4),
            seq: u64_at(8),
            t_ns: u64_at(16),
            pid: u32_at(24),
            nodeid: u32_at(28),
        })
    }
}

/// What the callbacks of cpgbench count (its globals, flags included).
#[derive(Debug, Default)]
#[allow(
    clippy::struct_excessive_bools,
    reason = "cpgbench's flags, one per message kind"
)]
struct State {
    nodeid: u32,
    pid: u32,
    members: usize,
    self_joined: bool,
    self_delivered: u64,
    self_last_ns: u64,
    self_end_seen: bool,
    rx_count: u64,
    rx_bytes: u64,
    rx_first_send_ns: u64,
    rx_last_ns: u64,
    rx_next_seq: u64,
    rx_gaps: u64,
    rx_end_seen: bool,
    ping_wait_seq: Option<u64>,
    pong_ns: Option<u64>,
    self_latency: Vec<u64>,
    reply: Option<(Header, usize)>,
    quit_seen: bool,
    /// The last totem configuration: its node count and when it arrived.
    totem: Option<(usize, u64)>,
}

impl State {
    fn on_event(&mut self, event: Event) {
        let t = now_ns();
        match event {
            Event::Deliver {
                nodeid,
                pid,
                payload,
                ..
            } => {
                let Some(m) = Header::read(&payload) else {
                    return;
                };
                let own = nodeid.0 == self.nodeid && pid == self.pid;
                self.deliver(&m, own, payload.len(), t);
            }
            Event::ConfChg { members, .. } => {
                self.members = members.len();
                if members
                    .iter()
                    .any(|a| a.nodeid.0 == self.nodeid && a.pid == self.pid)
                {
                    self.self_joined = true;
                }
            }
            Event::TotemConfChg { nodes, .. } => self.totem = Some((nodes.len(), t)),
        }
    }

    fn deliver(&mut self, m: &Header, own: bool, len: usize, t: u64) {
        match m.kind {
            T_DATA if own => {
                self.self_delivered += 1;
                self.self_last_ns = t;
            }
            T_DATA => {
                if self.rx_count == 0 {
                    self.rx_first_send_ns = m.t_ns;
                    self.rx_next_seq = m.seq;
                }
                if m.seq != self.rx_next_seq {
                    self.rx_gaps += 1;
                }
                self.rx_next_seq = m.seq + 1;
                self.rx_count += 1;
                self.rx_bytes += len as u64;
                self.rx_last_ns = t;
            }
            T_END if own => self.self_end_seen = true,
            T_END => self.rx_end_seen = true,
            T_PING if own => {
                if let Some(slot) = self.self_latency.get_mut(m.seq as usize) {
                    *slot = t.saturating_sub(m.t_ns);
                }
            }
            T_PING => self.reply = Some((*m, len)),
            T_PONG if !own && Some(m.seq) == self.ping_wait_seq => self.pong_ns = Some(t),
            T_QUIT if !own => self.quit_seen = true,
            _ => {}
        }
    }
}

struct Worker {
    handle: Handle,
    state: State,
    guarantee: Guarantee,
    try_again: u64,
    /// Waits that ended by timeout with events waiting (the descriptor was not woken).
    wakeups_missed: u64,
    /// Waits of [`WAKEUP_CHECK`] that ended without any event.
    idle_waits: u64,
}

impl Worker {
    fn connect(args: &WorkerArgs, options: Options) -> Result<Worker> {
        let mut handle = Handle::connect_with(&args.socket, options)?;
        if let Some(us) = args.busy_poll_us {
            handle.set_busy_poll(Duration::from_micros(us))?;
        }
        let nodeid = handle.local_get()?.0;
        Ok(Worker {
            handle,
            state: State {
                nodeid,
                pid: std::process::id(),
                ..State::default()
            },
            guarantee: args.guarantee,
            try_again: 0,
            wakeups_missed: 0,
            idle_waits: 0,
        })
    }

    fn join(&mut self, group: &str) -> Result<()> {
        loop {
            match self.handle.join(group) {
                Ok(()) => break,
                Err(Error::TryAgain(_)) => std::thread::sleep(Duration::from_millis(10)),
                Err(error) => return Err(error),
            }
        }
        while !self.state.self_joined {
            self.pump(None)?;
        }
        Ok(())
    }

    /// Waits up to `timeout` (`None`: without end) for an event, then runs every waiting
    /// event (cpgbench's `pump`: poll, then `cpg_dispatch(CS_DISPATCH_ALL)`).
    ///
    /// A wait without end is made of waits of [`WAKEUP_CHECK`]: one that times out although
    /// events were waiting is a missed wake-up, counted (and reported) rather than a hang.
    fn pump(&mut self, timeout: Option<Duration>) -> Result<()> {
        let woken = match timeout {
            Some(Duration::ZERO) => true,
            Some(timeout) => self.handle.wait_for_event(Some(timeout))?,
            None => self.handle.wait_for_event(Some(WAKEUP_CHECK))?,
        };
        let state = &mut self.state;
        let handled = self
            .handle
            .dispatch(DispatchFlags::All, |event| state.on_event(event))?;
        if timeout.is_none() && !woken {
            if handled > 0 {
                self.wakeups_missed += 1;
            } else {
                // A second without any event while waiting for some: a request makes the node
                // look at this connection again (and fails if it has closed it).
                self.idle_waits += 1;
                self.handle.local_get()?;
            }
        }
        Ok(())
    }

    /// After `CS_ERR_TRY_AGAIN`: wait for room (at most 1 ms, as cpgbench polls), dispatch.
    fn back_off(&mut self, len: usize) -> Result<()> {
        self.try_again += 1;
        self.handle
            .wait_writable(len, Some(Duration::from_millis(1)))?;
        self.pump(Some(Duration::ZERO))
    }

    fn mcast(&mut self, message: &[u8]) -> Result<()> {
        loop {
            match self.handle.mcast_joined(self.guarantee, &[message]) {
                Ok(()) => return Ok(()),
                Err(Error::TryAgain(_)) => self.back_off(message.len())?,
                Err(error) => return Err(error),
            }
        }
    }

    fn zcb_mcast(&mut self, buffer: &mut ZcbBuffer, len: usize) -> Result<()> {
        loop {
            match self.handle.zcb_mcast_joined(self.guarantee, buffer, len) {
                Ok(()) => return Ok(()),
                Err(Error::TryAgain(_)) => self.back_off(len)?,
                Err(error) => return Err(error),
            }
        }
    }

    fn wait_members(&mut self, want: usize) -> Result<()> {
        while self.state.members < want {
            self.pump(None)?;
        }
        Ok(())
    }

    fn header(&self, kind: u32) -> Header {
        Header {
            kind,
            pid: self.state.pid,
            nodeid: self.state.nodeid,
            ..Header::default()
        }
    }
}

fn emit(line: &Line) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Runs a worker; its RESULT lines go to stdout.
pub fn run(args: &WorkerArgs) -> Result<()> {
    // Never hang a benchmark run (cpgbench's alarm()): SIGALRM ends the process.
    nix::unistd::alarm::set(args.timeout_s.max(1));
    let size = args.size.max(HEADER);
    match args.role {
        Role::Hold => return hold(args),
        Role::Watch => return watch(args),
        _ => {}
    }
    let mut worker = Worker::connect(args, Options::default())?;
    worker.join(&args.group)?;
    match args.role {
        Role::Send => send(&mut worker, args, size),
        Role::Recv => recv(&mut worker),
        Role::Ping => ping(&mut worker, args, size),
        Role::Pong => pong(&mut worker),
        Role::Hold | Role::Watch => unreachable!("handled above"),
    }?;
    worker.handle.finalize()
}

fn send(worker: &mut Worker, args: &WorkerArgs, size: usize) -> Result<()> {
    let max = args.count.unwrap_or(u64::MAX);
    worker.wait_members(args.members)?;
    let mut message = vec![0xab_u8; size];
    worker.header(T_DATA).write(&mut message);
    let mut pool: Vec<ZcbBuffer> = Vec::new();
    if args.api == Api::Zcb {
        for _ in 0..ZCB_POOL {
            let mut buffer = worker.handle.zcb_alloc(size)?;
            buffer.copy_from_slice(&message);
            pool.push(buffer);
        }
    }
    let mut batch: Vec<Vec<u8>> = if args.api == Api::Batch {
        vec![message.clone(); BATCH]
    } else {
        Vec::new()
    };
    let t_first = now_ns();
    let deadline = t_first + (args.secs * 1e9) as u64;
    let mut sent = 0u64;
    let mut next_pump = 16;
    while sent < max {
        let t = now_ns();
        if t >= deadline {
            break;
        }
        match args.api {
            Api::Iovec => {
                Header::write_seq(&mut message, sent, t);
                worker.mcast(&message)?;
                sent += 1;
            }
            Api::Zcb => {
                let index = (sent % ZCB_POOL as u64) as usize;
                // Writing into a buffer the node has not read yet waits, and the node may be
                // waiting for us to read our own deliveries: dispatch meanwhile.
                while pool[index].in_flight() {
                    worker.pump(Some(Duration::from_millis(1)))?;
                }
                let buffer = &mut pool[index];
                Header::write_seq(buffer, sent, t);
                worker.zcb_mcast(buffer, size)?;
                sent += 1;
            }
            Api::Batch => {
                let n = (max - sent).min(BATCH as u64) as usize;
                for (i, m) in batch[..n].iter_mut().enumerate() {
                    Header::write_seq(m, sent + i as u64, t);
                }
                let accepted = worker
                    .handle
                    .mcast_many(worker.guarantee, batch[..n].iter().map(Vec::as_slice))?;
                if accepted == 0 {
                    worker.back_off(size)?;
                }
                sent += accepted as u64;
            }
        }
        if sent >= next_pump {
            // Consume own deliveries as they come.
            worker.pump(Some(Duration::ZERO))?;
            next_pump = sent + 16;
        }
    }
    let t_stop = now_ns();
    let mut end = message.clone();
    let mut header = worker.header(T_END);
    header.seq = sent;
    header.t_ns = t_stop;
    header.write(&mut end);
    worker.mcast(&end)?;
    while worker.state.self_delivered < sent || !worker.state.self_end_seen {
        worker.pump(None)?;
    }
    drop(pool);
    let elapsed = (worker.state.self_last_ns.max(t_first + 1) - t_first) as f64 / 1e9;
    let send_elapsed = (t_stop.max(t_first + 1) - t_first) as f64 / 1e9;
    emit(&Line::from_pairs([
        ("role", "sender".to_string()),
        ("api", args.api.name().to_string()),
        ("size", size.to_string()),
        ("members", worker.state.members.to_string()),
        ("msgs", sent.to_string()),
        ("secs", format!("{elapsed:.3}")),
        ("msgs_s", format!("{:.0}", sent as f64 / elapsed)),
        (
            "MBps",
            format!("{:.2}", sent as f64 * size as f64 / elapsed / 1e6),
        ),
        (
            "send_phase_msgs_s",
            format!("{:.0}", sent as f64 / send_elapsed),
        ),
        ("try_again", worker.try_again.to_string()),
        ("guarantee", guarantee_name(args.guarantee).to_string()),
        ("wakeups_missed", worker.wakeups_missed.to_string()),
        ("idle_waits", worker.idle_waits.to_string()),
    ]));
    Ok(())
}

fn recv(worker: &mut Worker) -> Result<()> {
    while !worker.state.rx_end_seen {
        worker.pump(None)?;
    }
    let s = &worker.state;
    let elapsed = if s.rx_count == 0 {
        1.0
    } else {
        s.rx_last_ns.saturating_sub(s.rx_first_send_ns).max(1) as f64 / 1e9
    };
    let size = s.rx_bytes.checked_div(s.rx_count).unwrap_or(0);
    emit(&Line::from_pairs([
        ("role", "receiver".to_string()),
        ("size", size.to_string()),
        ("msgs", s.rx_count.to_string()),
        ("secs", format!("{elapsed:.3}")),
        ("msgs_s", format!("{:.0}", s.rx_count as f64 / elapsed)),
        ("MBps", format!("{:.2}", s.rx_bytes as f64 / elapsed / 1e6)),
        ("gaps", s.rx_gaps.to_string()),
        ("wakeups_missed", worker.wakeups_missed.to_string()),
        ("idle_waits", worker.idle_waits.to_string()),
    ]));
    Ok(())
}

fn ping(worker: &mut Worker, args: &WorkerArgs, size: usize) -> Result<()> {
    let iters = args.count.unwrap_or(20_000);
    let total = iters + args.warmup;
    let mut rtt = vec![0u64; total as usize];
    worker.state.self_latency = vec![0; total as usize];
    worker.wait_members(2)?;
    let mut message = vec![0xab_u8; size];
    let mut stalls = 0u64;
    for i in 0..total {
        let mut header = worker.header(T_PING);
        header.seq = i;
        worker.state.pong_ns = None;
        worker.state.ping_wait_seq = Some(i);
        let t0 = now_ns();
        header.t_ns = t0;
        header.write(&mut message);
        worker.mcast(&message)?;
        // Poll with a timeout: a missed wake-up or a lost PING shows up as a stall (counted)
        // instead of a hang.
        let mut last = t0;
        let pong = loop {
            if let Some(pong) = worker.state.pong_ns {
                break pong;
            }
            worker.pump(Some(Duration::from_millis(100)))?;
            if worker.state.pong_ns.is_none() && now_ns() - last > 1_000_000_000 {
                stalls += 1;
                last = now_ns();
                worker.mcast(&message)?;
            }
        };
        rtt[i as usize] = pong - t0;
    }
    while worker.state.self_latency[total as usize - 1] == 0 {
        worker.pump(Some(Duration::from_millis(10)))?;
    }
    let mut quit = worker.header(T_QUIT);
    quit.seq = total;
    quit.write(&mut message);
    worker.mcast(&message)?;
    emit(&Line::from_pairs([
        ("role", "ping_rtt_info".to_string()),
        ("size", size.to_string()),
        ("stalls", stalls.to_string()),
        ("guarantee", guarantee_name(args.guarantee).to_string()),
    ]));
    let warm = args.warmup as usize;
    if let Some(line) = latency_line("ping_rtt", &mut rtt[warm..]) {
        emit(&line);
    }
    let mut own = std::mem::take(&mut worker.state.self_latency);
    if let Some(line) = latency_line("ping_self_delivery", &mut own[warm..]) {
        emit(&line);
    }
    Ok(())
}

fn pong(worker: &mut Worker) -> Result<()> {
    let mut message = Vec::new();
    while !worker.state.quit_seen {
        worker.pump(Some(Duration::from_millis(100)))?;
        if let Some((mut header, len)) = worker.state.reply.take() {
            message.resize(len, 0xcd);
            header.kind = T_PONG;
            header.pid = worker.state.pid;
            header.nodeid = worker.state.nodeid;
            header.write(&mut message);
            worker.mcast(&message)?;
        }
    }
    Ok(())
}

/// Waits for a configuration of `nodes` nodes, kills `--kill` (if given), and reports the
/// time to the next, smaller configuration.
fn watch(args: &WorkerArgs) -> Result<()> {
    let options = Options {
        initial_totem_conf: true,
    };
    let mut worker = Worker::connect(args, options)?;
    worker.join(&args.group)?;
    while worker.state.totem.is_none_or(|(n, _)| n < args.nodes) {
        worker.pump(None)?;
    }
    emit(&Line::from_pairs([
        ("role", "watch_ready".to_string()),
        ("nodes", args.nodes.to_string()),
    ]));
    let Some(pid) = args.kill else {
        return worker.handle.finalize();
    };
    let t0 = now_ns();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .map_err(|errno| Error::Library(format!("kill {pid}: {errno}").into()))?;
    let (after, t1) = loop {
        worker.pump(None)?;
        if let Some((n, t)) = worker.state.totem
            && n < args.nodes
        {
            break (n, t);
        }
    };
    emit(&Line::from_pairs([
        ("role", "failover".to_string()),
        ("nodes_before", args.nodes.to_string()),
        ("nodes_after", after.to_string()),
        ("detect_ms", format!("{:.1}", (t1 - t0) as f64 / 1e6)),
    ]));
    worker.handle.finalize()
}

/// `handles` handles over `groups` groups; the first sends `count` messages of `size` bytes
/// (delivered to every handle of its group) before this process reports its memory.
fn hold(args: &WorkerArgs) -> Result<()> {
    let mut workers = Vec::with_capacity(args.handles);
    for index in 0..args.handles {
        let mut worker = Worker::connect(args, Options::default())?;
        let group = format!(
            "{}-{}",
            args.group,
            (args.group_offset + index) % args.groups.max(1)
        );
        worker.join(&group)?;
        workers.push(worker);
    }
    let count = args.count.unwrap_or(0);
    if count > 0 && !workers.is_empty() {
        let size = args.size.max(HEADER);
        let mut message = vec![0xab_u8; size];
        let header = workers[0].header(T_DATA);
        header.write(&mut message);
        for seq in 0..count {
            Header::write_seq(&mut message, seq, now_ns());
            workers[0].mcast(&message)?;
            // Keep every handle reading (the others of the group receive it too).
            if seq % 16 == 15 {
                for worker in &mut workers {
                    worker.pump(Some(Duration::ZERO))?;
                }
            }
        }
        while workers[0].state.self_delivered < count {
            workers[0].pump(None)?;
        }
        for worker in &mut workers[1..] {
            worker.pump(Some(Duration::ZERO))?;
        }
    }
    let memory = super::scenarios::ProcMemory::of("self")
        .map_err(|error| Error::Library(format!("/proc/self/status: {error}").into()))?;
    emit(&Line::from_pairs([
        ("role", "hold".to_string()),
        ("handles", args.handles.to_string()),
        ("groups", args.groups.to_string()),
        ("rss_kb", memory.rss_kb.to_string()),
        ("anon_kb", memory.anon_kb.to_string()),
        ("shmem_kb", memory.shmem_kb.to_string()),
    ]));
    // Hold, reading what arrives, until the orchestrator has measured the node and closes
    // our stdin.
    let closed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = std::sync::Arc::clone(&closed);
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
        flag.store(true, std::sync::atomic::Ordering::Release);
    });
    let wait = Duration::from_millis(if workers.len() == 1 { 50 } else { 5 });
    while !closed.load(std::sync::atomic::Ordering::Acquire) {
        if let [worker] = &mut workers[..] {
            worker.pump(Some(wait))?;
        } else {
            for worker in &mut workers {
                worker.pump(Some(Duration::ZERO))?;
            }
            std::thread::sleep(wait);
        }
    }
    for mut worker in workers {
        worker.handle.finalize()?;
    }
    Ok(())
}

/// `agreed`, `safe`, …
#[must_use]
pub fn guarantee_name(guarantee: Guarantee) -> &'static str {
    match guarantee {
        Guarantee::Unordered => "unordered",
        Guarantee::Fifo => "fifo",
        Guarantee::Agreed => "agreed",
        Guarantee::Safe => "safe",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_is_cpgbench_struct_hdr() {
        let header = Header {
            kind: T_PING,
            seq: 7,
            t_ns: 0x0102_0304_0506_0708,
            pid: 42,
            nodeid: 3,
        };
        let mut bytes = [0u8; 40];
        header.write(&mut bytes);
        // magic "CPGB" as a little-endian u32, as x86 cpgbench writes it.
        assert_eq!(&bytes[..4], b"CPGB");
        assert_eq!(Header::read(&bytes), Some(header));
        Header::write_seq(&mut bytes, 9, 10);
        assert_eq!(Header::read(&bytes).unwrap().seq, 9);
        assert!(Header::read(&bytes[..31]).is_none());
        bytes[0] = 0;
        assert!(Header::read(&bytes).is_none());
    }

    #[test]
    fn receivers_count_gaps_and_own_messages_apart() {
        let mut state = State {
            nodeid: 1,
            pid: 10,
            ..State::default()
        };
        let data = |seq| Header {
            kind: T_DATA,
            seq,
            t_ns: 100,
            pid: 20,
            nodeid: 2,
        };
        state.deliver(&data(5), false, 64, 1000);
        state.deliver(&data(6), false, 64, 1100);
        state.deliver(&data(8), false, 64, 1200);
        state.deliver(&data(0), true, 64, 1300);
        assert_eq!((state.rx_count, state.rx_gaps, state.rx_bytes), (3, 1, 192));
        assert_eq!(state.rx_first_send_ns, 100);
        assert_eq!((state.self_delivered, state.self_last_ns), (1, 1300));
        let end = Header {
            kind: T_END,
            ..data(9)
        };
        state.deliver(&end, false, 64, 1400);
        assert!(state.rx_end_seen && !state.self_end_seen);
    }
}
