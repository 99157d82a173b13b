//! CPG client processes for integration tests: the test binary re-executes itself in "client
//! mode" (the test [`client_mode`], run alone with an environment variable set; without it,
//! it checks the test messages and the reports the client mode relies on), and the child drives one `totemcast::cpg::Handle` as the parent commands it on stdin, reporting every
//! answer, accepted multicast and event as one JSON line on stdout. The parent side
//! ([`Fleet`]) starts, commands, waits on and kills these processes, and checks what they saw.
//!
//! Message payloads carry the sender's pid and a sequence number followed by a filler that
//! depends on both, so that a receiver can tell which message it got and whether it is intact.

#![allow(dead_code, reason = "each test file uses a different subset")]
#![allow(
    clippy::print_stderr,
    reason = "a client process reports its own failures"
)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command as Process, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags};
use serde::{Deserialize, Serialize};
use totemcast::api::{DispatchFlags, Guarantee, Reason};
use totemcast::cpg::{Event, Handle};
use totemcast::error::{CsError, Error};

/// The environment variable that turns the test binary into a client: the node's socket.
const CLIENT_SOCKET: &str = "TOTEMCAST_TEST_CPG_CLIENT";
/// The name of the client-mode test, as libtest knows it.
const CLIENT_TEST: &str = "cpg_harness::client_mode";
/// Bytes before a payload's filler: pid `u32`, seq `u64`.
pub(crate) const PAYLOAD_HEADER: usize = 12;

/// `cs_error_t` codes as the reports carry them.
pub(crate) const OK: u32 = 1;

/// What the parent asks a client to do (one JSON line on its stdin).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Command {
    /// `join(group)`; answered.
    Join(String),
    /// `leave(group)`; answered.
    Leave(String),
    /// Multicast messages `first..first + count` (until told to stop), retrying TRY_AGAIN;
    /// each accepted one is reported, then `SendDone`.
    Send {
        first: u64,
        count: u64,
        size_min: usize,
        size_spread: usize,
    },
    /// Ends the running `Send` (reported as `SendDone`).
    StopSending,
    /// Stops dispatching for good (a slow client); commands are still obeyed.
    Stall,
    /// `membership_get(group)`; answered.
    Membership(String),
    /// `local_get()`; answered.
    LocalGet,
}

/// What a client reports (one JSON line on its stdout).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Report {
    /// Connected to its node.
    Ready { pid: u32, nodeid: u32 },
    /// The result of a call (`code` 1 is OK); `members` for `membership_get`.
    Answer {
        call: String,
        code: u32,
        detail: String,
        members: Vec<(u32, u32)>,
    },
    /// `mcast_joined` returned OK for message `seq`.
    Accepted { seq: u64 },
    /// `mcast_joined` returned TRY_AGAIN for message `seq` (its request ring is full): once
    /// per run of refusals.
    TryAgain { seq: u64 },
    /// `mcast_joined` failed (not with TRY_AGAIN) for message `seq`; the `Send` ends.
    Refused { seq: u64, code: u32 },
    /// The `Send` ended.
    SendDone { accepted: u64 },
    /// A message: its sender, what its payload says (pid and seq), its length, and whether the
    /// payload is a well-formed test message of the sending pid.
    Deliver {
        group: String,
        nodeid: u32,
        pid: u32,
        seq: u64,
        len: usize,
        intact: bool,
    },
    /// A confchg: members (node, pid), left and joined (node, pid, reason).
    ConfChg {
        group: String,
        members: Vec<(u32, u32)>,
        left: Vec<(u32, u32, u32)>,
        joined: Vec<(u32, u32, u32)>,
    },
    /// A totem confchg: the nodes.
    Totem { nodes: Vec<u32> },
    /// The connection failed (dispatch or a call said so); the client exits after this.
    Lost { code: u32, detail: String },
}

/// Payload of test message `seq` of process `pid`, `size` bytes (at least the header).
pub(crate) fn payload(pid: u32, seq: u64, size: usize) -> Vec<u8> {
    let size = size.max(PAYLOAD_HEADER);
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&pid.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend((PAYLOAD_HEADER..size).map(|i| filler(pid, seq, i)));
    out
}

fn filler(pid: u32, seq: u64, index: usize) -> u8 {
    (seq as u8)
        .wrapping_mul(31)
        .wrapping_add(pid as u8)
        .wrapping_add(index as u8)
}

/// The (pid, seq) a payload names and whether the rest is the filler they imply.
pub(crate) fn parse(payload: &[u8]) -> (u32, u64, bool) {
    if payload.len() < PAYLOAD_HEADER {
        return (0, 0, false);
    }
    let pid = u32::from_le_bytes(payload[..4].try_into().expect("4"));
    let seq = u64::from_le_bytes(payload[4..12].try_into().expect("8"));
    let intact = payload[PAYLOAD_HEADER..]
        .iter()
        .enumerate()
        .all(|(i, &b)| b == filler(pid, seq, i + PAYLOAD_HEADER));
    (pid, seq, intact)
}

/// Size of message `seq` of a `Send` (deterministic, between `min` and `min + spread`).
pub(crate) fn size_of(seq: u64, size_min: usize, size_spread: usize) -> usize {
    size_min + (seq.wrapping_mul(7919) % (size_spread as u64 + 1)) as usize
}

/// Client mode when re-executed by [`Fleet::spawn`] (then it never returns). Otherwise a check
/// of what a client relies on: test messages parse back to their sender and seq and tell a
/// damaged or short one, and reports and commands survive their JSON lines.
#[test]
fn client_mode() {
    if let Some(socket) = std::env::var_os(CLIENT_SOCKET) {
        client_main(&PathBuf::from(socket));
    }
    for size in [0, PAYLOAD_HEADER, PAYLOAD_HEADER + 1, 1000] {
        let mut message = payload(4242, 77, size);
        assert_eq!(message.len(), size.max(PAYLOAD_HEADER));
        assert_eq!(parse(&message), (4242, 77, true));
        if let Some(last) = message.last_mut().filter(|_| size > PAYLOAD_HEADER) {
            *last ^= 1;
            assert_eq!(parse(&message), (4242, 77, false), "a damaged byte");
        }
    }
    assert!(!parse(&[0; PAYLOAD_HEADER - 1]).2, "a short payload");
    let lines = [
        serde_json::to_string(&Command::Send {
            first: 1,
            count: 2,
            size_min: 3,
            size_spread: 4,
        }),
        serde_json::to_string(&Report::ConfChg {
            group: "g".into(),
            members: vec![(1, 2)],
            left: vec![(1, 3, 5)],
            joined: Vec::new(),
        }),
    ];
    let [command, report] = lines.map(Result::unwrap);
    assert!(matches!(
        serde_json::from_str(&command).unwrap(),
        Command::Send { size_spread: 4, .. }
    ));
    assert!(matches!(
        serde_json::from_str(&report).unwrap(),
        Report::ConfChg { left, .. } if left == [(1, 3, 5)]
    ));
}

/// One line to stdout, flushed (so that a killed client leaves whole lines behind).
fn report(report: &Report) {
    let mut line = serde_json::to_vec(report).expect("serializable");
    line.push(b'\n');
    let mut out = std::io::stdout().lock();
    if out.write_all(&line).and_then(|()| out.flush()).is_err() {
        // The parent is gone.
        std::process::exit(0);
    }
}

fn code(error: &Error) -> u32 {
    u32::from(error.code())
}

fn event_report(event: &Event) -> Report {
    match event {
        Event::Deliver {
            group,
            nodeid,
            pid,
            payload,
        } => {
            let (claimed, seq, intact) = parse(&payload[..]);
            Report::Deliver {
                group: String::from_utf8_lossy(&group[..]).into_owned(),
                nodeid: nodeid.0,
                pid: *pid,
                seq,
                len: payload.len(),
                intact: intact && claimed == *pid,
            }
        }
        Event::ConfChg {
            group,
            members,
            left,
            joined,
        } => Report::ConfChg {
            group: String::from_utf8_lossy(&group[..]).into_owned(),
            members: members.iter().map(|a| (a.nodeid.0, a.pid)).collect(),
            left: left
                .iter()
                .map(|a| (a.nodeid.0, a.pid, u32::from(a.reason)))
                .collect(),
            joined: joined
                .iter()
                .map(|a| (a.nodeid.0, a.pid, u32::from(a.reason)))
                .collect(),
        },
        Event::TotemConfChg { nodes, .. } => Report::Totem {
            nodes: nodes.iter().map(|n| n.0).collect(),
        },
    }
}

struct Job {
    next: u64,
    end: u64,
    size_min: usize,
    size_spread: usize,
    accepted: u64,
    /// The last `mcast_joined` returned TRY_AGAIN.
    refused: bool,
}

/// Reports what is pending in `handle`, then that the connection is lost, and exits.
fn lose(handle: &mut Handle, error: &Error) -> ! {
    let _ = handle.dispatch(DispatchFlags::All, |event| report(&event_report(&event)));
    report(&Report::Lost {
        code: code(error),
        detail: error.to_string(),
    });
    std::process::exit(0);
}

fn client_main(socket: &Path) -> ! {
    let (commands_tx, commands) = mpsc::channel::<Command>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            match serde_json::from_str(&line) {
                Ok(command) => {
                    if commands_tx.send(command).is_err() {
                        break;
                    }
                }
                Err(error) => {
                    eprintln!("client: bad command {line:?}: {error}");
                    std::process::exit(3);
                }
            }
        }
        // The parent closed stdin or died: this client ends (its handle closes with it).
        std::process::exit(0);
    });
    // The node may still be starting: its socket appears when it listens.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut handle = loop {
        match Handle::connect(socket) {
            Ok(handle) => break handle,
            Err(error) if Instant::now() < deadline && error.code() == CsError::Library => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(error) => {
                report(&Report::Lost {
                    code: code(&error),
                    detail: error.to_string(),
                });
                std::process::exit(1);
            }
        }
    };
    let nodeid = match handle.local_get() {
        Ok(nodeid) => nodeid.0,
        Err(error) => lose(&mut handle, &error),
    };
    report(&Report::Ready {
        pid: std::process::id(),
        nodeid,
    });
    let pid = std::process::id();
    let mut inbox: VecDeque<Command> = VecDeque::new();
    let mut job: Option<Job> = None;
    let mut stalled = false;
    loop {
        let mut busy = false;
        loop {
            match commands.try_recv() {
                Ok(command) => inbox.push_back(command),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => std::process::exit(0),
            }
        }
        while let Some(command) = inbox.pop_front() {
            busy = true;
            obey(&mut handle, command, &mut job, &mut stalled);
        }
        if !stalled {
            match handle.dispatch(DispatchFlags::All, |event| report(&event_report(&event))) {
                Ok(count) => busy |= count > 0,
                Err(error) => lose(&mut handle, &error),
            }
        }
        if let Some(running) = &mut job {
            for _ in 0..32 {
                if running.next >= running.end {
                    report(&Report::SendDone {
                        accepted: running.accepted,
                    });
                    job = None;
                    break;
                }
                let seq = running.next;
                let message = payload(
                    pid,
                    seq,
                    size_of(seq, running.size_min, running.size_spread),
                );
                match handle.mcast_joined(Guarantee::Agreed, &[&message]) {
                    Ok(()) => {
                        report(&Report::Accepted { seq });
                        running.next += 1;
                        running.accepted += 1;
                        running.refused = false;
                        busy = true;
                    }
                    Err(error) if error.code() == CsError::TryAgain => {
                        if !running.refused {
                            report(&Report::TryAgain { seq });
                            running.refused = true;
                        }
                        break;
                    }
                    Err(error) => {
                        report(&Report::Refused {
                            seq,
                            code: code(&error),
                        });
                        report(&Report::SendDone {
                            accepted: running.accepted,
                        });
                        job = None;
                        break;
                    }
                }
            }
        }
        if busy {
            continue;
        }
        // Nothing to do: wait a little for an event (or, stalled, for a command). The handle
        // has no "request ring writable" notification, so a refused send retries after this.
        if stalled {
            match commands.recv_timeout(Duration::from_millis(10)) {
                Ok(command) => inbox.push_back(command),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => std::process::exit(0),
            }
        } else {
            let mut fds = [PollFd::new(handle.as_fd(), PollFlags::POLLIN)];
            let _ = nix::poll::poll(&mut fds, 10u16);
        }
    }
}

fn obey(handle: &mut Handle, command: Command, job: &mut Option<Job>, stalled: &mut bool) {
    let (call, result) = match command {
        Command::Join(group) => ("join", handle.join(group).map(|()| Vec::new())),
        Command::Leave(group) => ("leave", handle.leave(group).map(|()| Vec::new())),
        Command::Membership(group) => (
            "membership_get",
            handle
                .membership_get(group)
                .map(|members| members.iter().map(|&(n, p)| (n.0, p)).collect()),
        ),
        Command::LocalGet => ("local_get", handle.local_get().map(|_| Vec::new())),
        Command::Send {
            first,
            count,
            size_min,
            size_spread,
        } => {
            *job = Some(Job {
                next: first,
                end: first.saturating_add(count),
                size_min,
                size_spread,
                accepted: 0,
                refused: false,
            });
            return;
        }
        Command::StopSending => {
            if let Some(running) = job.take() {
                report(&Report::SendDone {
                    accepted: running.accepted,
                });
            }
            return;
        }
        Command::Stall => {
            *stalled = true;
            return;
        }
    };
    match result {
        Ok(members) => report(&Report::Answer {
            call: call.into(),
            code: OK,
            detail: String::new(),
            members,
        }),
        Err(error) => {
            report(&Report::Answer {
                call: call.into(),
                code: code(&error),
                detail: error.to_string(),
                members: Vec::new(),
            });
            if error.code() == CsError::Library {
                lose(handle, &error);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The parent side.

enum Line {
    Report(Report),
    /// Anything else the child printed (libtest's chatter, a panic).
    Noise(String),
    Eof,
}

/// One client process as the parent sees it.
pub(crate) struct Proc {
    /// A name for messages.
    pub(crate) name: String,
    /// Its process id (= its CPG pid).
    pub(crate) pid: u32,
    /// Its node.
    pub(crate) nodeid: u32,
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    /// Everything it reported, in order.
    pub(crate) reports: Vec<Report>,
    noise: Vec<String>,
    /// Its stdout ended (it exited or was killed, and every line it wrote is in `reports`).
    pub(crate) ended: bool,
}

/// A group event as seen by one process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum GroupEvent {
    /// A message: sender (node, pid), seq, intact.
    Deliver((u32, u32), u64, bool),
    /// A confchg: members, left, joined.
    ConfChg(Vec<(u32, u32)>, Vec<(u32, u32, u32)>, Vec<(u32, u32, u32)>),
}

impl Proc {
    /// (node, pid): its member address.
    pub(crate) fn member(&self) -> (u32, u32) {
        (self.nodeid, self.pid)
    }

    /// Its events of `group`, in order.
    pub(crate) fn events(&self, group: &str) -> Vec<GroupEvent> {
        self.reports
            .iter()
            .filter_map(|report| match report {
                Report::Deliver {
                    group: g,
                    nodeid,
                    pid,
                    seq,
                    intact,
                    ..
                } if g == group => Some(GroupEvent::Deliver((*nodeid, *pid), *seq, *intact)),
                Report::ConfChg {
                    group: g,
                    members,
                    left,
                    joined,
                } if g == group => Some(GroupEvent::ConfChg(
                    members.clone(),
                    left.clone(),
                    joined.clone(),
                )),
                _ => None,
            })
            .collect()
    }

    /// Its deliveries of `group`: (sender node, sender pid, seq).
    pub(crate) fn deliveries(&self, group: &str) -> Vec<(u32, u32, u64)> {
        self.events(group)
            .into_iter()
            .filter_map(|event| match event {
                GroupEvent::Deliver((n, p), seq, _) => Some((n, p, seq)),
                GroupEvent::ConfChg(..) => None,
            })
            .collect()
    }

    /// Number of deliveries in any group.
    pub(crate) fn delivered(&self) -> usize {
        self.reports
            .iter()
            .filter(|r| matches!(r, Report::Deliver { .. }))
            .count()
    }

    /// The seqs of its accepted multicasts.
    pub(crate) fn accepted(&self) -> Vec<u64> {
        self.reports
            .iter()
            .filter_map(|r| match r {
                Report::Accepted { seq } => Some(*seq),
                _ => None,
            })
            .collect()
    }

    /// Whether its last send was refused with TRY_AGAIN (its request ring was full then).
    pub(crate) fn refused(&self) -> bool {
        self.reports
            .iter()
            .rev()
            .find(|r| matches!(r, Report::Accepted { .. } | Report::TryAgain { .. }))
            .is_some_and(|r| matches!(r, Report::TryAgain { .. }))
    }

    /// How many `Send`s ended.
    pub(crate) fn sends_done(&self) -> usize {
        self.reports
            .iter()
            .filter(|r| matches!(r, Report::SendDone { .. }))
            .count()
    }

    /// The members of its last confchg of `group`.
    pub(crate) fn last_members(&self, group: &str) -> Option<Vec<(u32, u32)>> {
        self.events(group)
            .into_iter()
            .rev()
            .find_map(|event| match event {
                GroupEvent::ConfChg(members, ..) => Some(members),
                GroupEvent::Deliver(..) => None,
            })
    }

    /// Whether it has seen a confchg of `group` with `who` in the left list for `reason`.
    pub(crate) fn saw_leave(&self, group: &str, who: (u32, u32), reason: Reason) -> bool {
        self.events(group).iter().any(|event| {
            matches!(event, GroupEvent::ConfChg(_, left, _)
                if left.contains(&(who.0, who.1, u32::from(reason))))
        })
    }

    /// The answers it reported.
    pub(crate) fn answers(&self) -> Vec<&Report> {
        self.reports
            .iter()
            .filter(|r| matches!(r, Report::Answer { .. }))
            .collect()
    }

    fn describe(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "--- {} (pid {}, node {}){}: {} reports, the last ones:",
            self.name,
            self.pid,
            self.nodeid,
            if self.ended { ", ended" } else { "" },
            self.reports.len()
        );
        for report in &self.reports[self.reports.len().saturating_sub(8)..] {
            let _ = writeln!(out, "    {report:?}");
        }
        let accepted = self.accepted().len();
        let _ = writeln!(
            out,
            "    ({accepted} accepted, {} delivered)",
            self.delivered()
        );
        for line in self.noise.iter().filter(|l| !l.trim().is_empty()) {
            let _ = writeln!(out, "    stdout: {line}");
        }
    }
}

/// The client processes of one test.
pub(crate) struct Fleet {
    pub(crate) procs: Vec<Proc>,
    tx: Sender<(usize, Line)>,
    rx: Receiver<(usize, Line)>,
    /// Default deadline of waits.
    pub(crate) within: Duration,
}

impl Fleet {
    /// No processes yet; waits give up after `within`.
    pub(crate) fn new(within: Duration) -> Fleet {
        let (tx, rx) = mpsc::channel();
        Fleet {
            procs: Vec::new(),
            tx,
            rx,
            within,
        }
    }

    /// Starts a client of the node on `socket` and waits until it is connected; its index.
    pub(crate) fn spawn(&mut self, name: &str, socket: &Path) -> usize {
        let index = self.spawn_no_wait(name, socket);
        self.wait(&format!("{name} connected"), |fleet| {
            fleet.procs[index].pid != 0 || fleet.procs[index].ended
        });
        assert!(
            !self.procs[index].ended,
            "{name} could not connect:\n{}",
            self.describe()
        );
        index
    }

    /// Starts a client of the node on `socket` (it keeps trying to connect for 20 s).
    pub(crate) fn spawn_no_wait(&mut self, name: &str, socket: &Path) -> usize {
        let index = self.procs.len();
        let mut child = Process::new(std::env::current_exe().expect("the test binary"))
            .args([
                CLIENT_TEST,
                "--exact",
                "--nocapture",
                "--test-threads=1",
                "-q",
            ])
            .env(CLIENT_SOCKET, socket)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("re-execute the test binary");
        let stdout = child.stdout.take().expect("piped");
        let tx = self.tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let parsed = match serde_json::from_str::<Report>(&line) {
                    Ok(report) => Line::Report(report),
                    Err(_) => Line::Noise(line),
                };
                if tx.send((index, parsed)).is_err() {
                    return;
                }
            }
            let _ = tx.send((index, Line::Eof));
        });
        self.procs.push(Proc {
            name: name.into(),
            pid: 0,
            nodeid: 0,
            stdin: child.stdin.take(),
            child: Some(child),
            reports: Vec::new(),
            noise: Vec::new(),
            ended: false,
        });
        index
    }

    fn take(&mut self, (index, line): (usize, Line)) {
        let proc = &mut self.procs[index];
        match line {
            Line::Report(report) => {
                if let Report::Ready { pid, nodeid } = &report {
                    proc.pid = *pid;
                    proc.nodeid = *nodeid;
                }
                proc.reports.push(report);
            }
            Line::Noise(line) => proc.noise.push(line),
            Line::Eof => proc.ended = true,
        }
    }

    /// Takes in whatever the processes reported so far (never waits).
    pub(crate) fn pump(&mut self) {
        while let Ok(line) = self.rx.try_recv() {
            self.take(line);
        }
    }

    /// Waits until `done` holds (checked after each report), at most `self.within`; panics with
    /// what every process reported last.
    #[track_caller]
    pub(crate) fn wait(&mut self, what: &str, done: impl Fn(&Fleet) -> bool) {
        let within = self.within;
        self.wait_within(what, within, done);
    }

    /// [`Fleet::wait`] with its own deadline.
    #[track_caller]
    pub(crate) fn wait_within(
        &mut self,
        what: &str,
        within: Duration,
        done: impl Fn(&Fleet) -> bool,
    ) {
        let deadline = Instant::now() + within;
        self.pump();
        loop {
            if done(self) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for: {what}\n{}",
                self.describe()
            );
            // Take in what arrives for a few milliseconds before checking again: a check scans
            // every report, and reports come in bursts of thousands.
            let batch_end = (Instant::now() + Duration::from_millis(5)).min(deadline);
            while let Some(left) = batch_end
                .checked_duration_since(Instant::now())
                .filter(|left| !left.is_zero())
            {
                match self.rx.recv_timeout(left) {
                    Ok(line) => self.take(line),
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => unreachable!("the fleet holds a sender"),
                }
            }
        }
    }

    /// Sends `command` to process `index`.
    pub(crate) fn command(&mut self, index: usize, command: &Command) {
        let mut line = serde_json::to_vec(command).expect("serializable");
        line.push(b'\n');
        let proc = &mut self.procs[index];
        let stdin = proc.stdin.as_mut().expect("the process runs");
        stdin
            .write_all(&line)
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|error| panic!("{} does not listen: {error}", proc.name));
    }

    /// Sends a call to process `index` and waits for its answer: (code, members).
    #[track_caller]
    pub(crate) fn call(&mut self, index: usize, command: &Command) -> (u32, Vec<(u32, u32)>) {
        let before = self.procs[index].answers().len();
        self.command(index, command);
        let name = self.procs[index].name.clone();
        self.wait(&format!("{name} answers {command:?}"), |fleet| {
            fleet.procs[index].answers().len() > before || fleet.procs[index].ended
        });
        match self.procs[index].answers().get(before) {
            Some(Report::Answer { code, members, .. }) => (*code, members.clone()),
            _ => panic!("{name} ended without answering\n{}", self.describe()),
        }
    }

    /// A call that must succeed.
    #[track_caller]
    pub(crate) fn call_ok(&mut self, index: usize, command: &Command) -> Vec<(u32, u32)> {
        let (code, members) = self.call(index, command);
        assert_eq!(
            code,
            OK,
            "{} answered {command:?} with code {code}\n{}",
            self.procs[index].name,
            self.describe()
        );
        members
    }

    /// `kill -9` process `index`, and waits until everything it wrote is read.
    pub(crate) fn kill(&mut self, index: usize) {
        if let Some(mut child) = self.procs[index].child.take() {
            child.kill().expect("kill");
            child.wait().expect("wait");
        }
        self.procs[index].stdin = None;
        let name = self.procs[index].name.clone();
        self.wait(&format!("the output of killed {name}"), |fleet| {
            fleet.procs[index].ended
        });
    }

    /// Waits until process `index` ended by itself (after a lost connection), and reaps it.
    pub(crate) fn wait_exit(&mut self, index: usize) {
        let name = self.procs[index].name.clone();
        self.wait(&format!("{name} exits"), |fleet| fleet.procs[index].ended);
        if let Some(mut child) = self.procs[index].child.take() {
            child.wait().expect("wait");
        }
        self.procs[index].stdin = None;
    }

    /// What every process reported last, for failure messages.
    pub(crate) fn describe(&self) -> String {
        let mut out = String::new();
        for proc in &self.procs {
            proc.describe(&mut out);
        }
        out
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for proc in &mut self.procs {
            proc.stdin = None;
            if let Some(mut child) = proc.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Checks.

/// Checks the confchgs `proc` saw in `group` since its `nth` own join (0-based): the first
/// group event of that join is its own join (joined = [(me, JOIN)]), every member list is
/// sorted by (node, pid) without repeats, and each confchg follows from the one before
/// (members = before − left + joined), until its own leave (if any).
#[track_caller]
pub(crate) fn check_confchgs(proc: &Proc, group: &str, nth: usize) {
    let me = proc.member();
    let own_join = (me.0, me.1, u32::from(Reason::Join));
    let events = proc.events(group);
    let joins: Vec<usize> = events
        .iter()
        .enumerate()
        .filter(
            |(_, e)| matches!(e, GroupEvent::ConfChg(_, _, joined) if joined.contains(&own_join)),
        )
        .map(|(i, _)| i)
        .collect();
    let Some(&start) = joins.get(nth) else {
        panic!(
            "{}: no own join #{nth} in {group:?}; events: {events:?}",
            proc.name
        );
    };
    // Before its first join nothing of the group arrives; between a leave and the next join,
    // nothing either.
    let previous_end = if nth == 0 {
        0
    } else {
        own_leave_after(proc, &events, joins[nth - 1]).map_or(start, |at| at + 1)
    };
    assert!(
        previous_end == start,
        "{}: events of {group:?} before its own join #{nth}: {:?}",
        proc.name,
        &events[previous_end..start]
    );
    let GroupEvent::ConfChg(members, left, joined) = &events[start] else {
        unreachable!()
    };
    assert_eq!(
        (left.as_slice(), joined.as_slice()),
        (&[][..], &[own_join][..]),
        "{}: its own join confchg",
        proc.name
    );
    assert!(members.contains(&me), "{}: not in its own join", proc.name);
    let end = own_leave_after(proc, &events, start).map_or(events.len(), |at| at + 1);
    let mut before: Option<BTreeSet<(u32, u32)>> = None;
    for event in &events[start..end] {
        let GroupEvent::ConfChg(members, left, joined) = event else {
            continue;
        };
        assert!(
            members.windows(2).all(|w| w[0] < w[1]),
            "{}: members not sorted by (node, pid): {members:?}",
            proc.name
        );
        let after: BTreeSet<(u32, u32)> = members.iter().copied().collect();
        if let Some(before) = &before {
            let mut expected = before.clone();
            for &(n, p, _) in left {
                assert!(
                    expected.remove(&(n, p)),
                    "{}: {n}:{p} left but was no member; {event:?}",
                    proc.name
                );
            }
            for &(n, p, _) in joined {
                assert!(
                    expected.insert((n, p)),
                    "{}: {n}:{p} joined but was a member; {event:?}",
                    proc.name
                );
            }
            assert_eq!(after, expected, "{}: members after {event:?}", proc.name);
        }
        before = Some(after);
    }
}

/// Where `proc` saw its own leave (LEAVE) after event `from`.
fn own_leave_after(proc: &Proc, events: &[GroupEvent], from: usize) -> Option<usize> {
    let me = proc.member();
    events
        .iter()
        .enumerate()
        .skip(from + 1)
        .find(|(_, e)| matches!(e, GroupEvent::ConfChg(_, left, _) if left.iter().any(|&(n, p, _)| (n, p) == me)))
        .map(|(i, _)| i)
}

/// The events of `proc` in `group` from the confchg in which `who` joined (its `nth` join).
#[track_caller]
pub(crate) fn from_join_of(
    proc: &Proc,
    group: &str,
    who: (u32, u32),
    nth: usize,
) -> Vec<GroupEvent> {
    try_from_join_of(proc, group, who, nth).unwrap_or_else(|| {
        panic!(
            "{} never saw join #{nth} of {who:?}; its confchgs: {:?}",
            proc.name,
            proc.events(group)
                .iter()
                .filter(|e| matches!(e, GroupEvent::ConfChg(..)))
                .collect::<Vec<_>>()
        )
    })
}

/// The events of `proc` in `group` from the last confchg in which `who` joined (`None` if it
/// saw none).
pub(crate) fn from_last_join_of(
    proc: &Proc,
    group: &str,
    who: (u32, u32),
) -> Option<Vec<GroupEvent>> {
    let events = proc.events(group);
    let join = (who.0, who.1, u32::from(Reason::Join));
    let at = events
        .iter()
        .rposition(|e| matches!(e, GroupEvent::ConfChg(_, _, joined) if joined.contains(&join)))?;
    Some(events[at..].to_vec())
}

/// [`from_join_of`], `None` if `proc` has not seen that join (yet).
pub(crate) fn try_from_join_of(
    proc: &Proc,
    group: &str,
    who: (u32, u32),
    nth: usize,
) -> Option<Vec<GroupEvent>> {
    let events = proc.events(group);
    let join = (who.0, who.1, u32::from(Reason::Join));
    let at = events
        .iter()
        .enumerate()
        .filter(|(_, e)| matches!(e, GroupEvent::ConfChg(_, _, joined) if joined.contains(&join)))
        .nth(nth)?
        .0;
    Some(events[at..].to_vec())
}

/// Whether `proc` saw `who` join `group` (reason JOIN).
pub(crate) fn saw_join(proc: &Proc, group: &str, who: (u32, u32)) -> bool {
    let join = (who.0, who.1, u32::from(Reason::Join));
    proc.events(group)
        .iter()
        .any(|e| matches!(e, GroupEvent::ConfChg(_, _, joined) if joined.contains(&join)))
}

/// Every pair of `procs` saw the same events of `group` from the later one's (first) join on:
/// the same messages and confchgs in the same order.
#[track_caller]
pub(crate) fn check_same_history(procs: &[&Proc], group: &str) {
    for (i, a) in procs.iter().enumerate() {
        for b in &procs[i + 1..] {
            let (earlier, later) = if a.member() != b.member() && saw_join(a, group, b.member()) {
                (a, b)
            } else {
                (b, a)
            };
            let tail = from_join_of(earlier, group, later.member(), 0);
            let own = from_join_of(later, group, later.member(), 0);
            if tail != own {
                let at = (0..tail.len().max(own.len())).find(|&k| tail.get(k) != own.get(k));
                panic!(
                    "{} and {} differ from {}'s join on ({} and {} events), first at {at:?}: \
                     {:?} vs {:?}",
                    earlier.name,
                    later.name,
                    later.name,
                    tail.len(),
                    own.len(),
                    at.and_then(|at| tail.get(at)),
                    at.and_then(|at| own.get(at)),
                );
            }
        }
    }
}

/// What `dead` saw of `group` (it was killed) is a prefix of what `alive` saw, from the later
/// one's join on.
#[track_caller]
pub(crate) fn check_prefix_history(dead: &Proc, alive: &Proc, group: &str) {
    let later = if saw_join(alive, group, dead.member()) {
        dead.member()
    } else {
        alive.member()
    };
    let own = from_join_of(dead, group, later, 0);
    let other = from_join_of(alive, group, later, 0);
    if !other.starts_with(&own) {
        let at = (0..own.len()).find(|&k| other.get(k) != own.get(k));
        panic!(
            "{} saw {} events, not a prefix of {}'s {}; first difference at {at:?}: {:?} vs {:?}",
            dead.name,
            own.len(),
            alive.name,
            other.len(),
            at.and_then(|at| own.get(at)),
            at.and_then(|at| other.get(at)),
        );
    }
}

/// Every message that each of `senders` had accepted is delivered exactly once, intact and in
/// the sender's order, at every one of `receivers`; nothing else of theirs is delivered.
#[track_caller]
pub(crate) fn check_exactly_once(receivers: &[&Proc], senders: &[&Proc], group: &str) {
    for receiver in receivers {
        let mut by_sender: BTreeMap<(u32, u32), Vec<u64>> = BTreeMap::new();
        for event in receiver.events(group) {
            if let GroupEvent::Deliver(from, seq, intact) = event {
                assert!(
                    intact,
                    "{}: message {seq} of {from:?} is damaged",
                    receiver.name
                );
                by_sender.entry(from).or_default().push(seq);
            }
        }
        for sender in senders {
            let accepted = sender.accepted();
            let delivered = by_sender.get(&sender.member()).cloned().unwrap_or_default();
            assert_eq!(
                delivered.len(),
                accepted.len(),
                "{} delivered {} messages of {}, which had {} accepted",
                receiver.name,
                delivered.len(),
                sender.name,
                accepted.len()
            );
            assert_eq!(
                delivered, accepted,
                "{}: messages of {} (in the sender's order)",
                receiver.name, sender.name
            );
        }
    }
}

/// Waits until every one of `receivers` delivered in `group` every message that `senders`
/// had accepted (after the senders finished).
#[track_caller]
pub(crate) fn wait_all_delivered(
    fleet: &mut Fleet,
    receivers: &[usize],
    senders: &[usize],
    group: &str,
) {
    let group = group.to_owned();
    fleet.wait("every accepted message delivered everywhere", |fleet| {
        let expected: usize = senders
            .iter()
            .map(|&s| fleet.procs[s].accepted().len())
            .sum();
        receivers.iter().all(|&r| {
            let senders: BTreeSet<(u32, u32)> =
                senders.iter().map(|&s| fleet.procs[s].member()).collect();
            fleet.procs[r]
                .deliveries(&group)
                .iter()
                .filter(|(n, p, _)| senders.contains(&(*n, *p)))
                .count()
                >= expected
        })
    });
}

/// Waits until each of `procs` saw a confchg of `group` whose members are exactly those of
/// `expected` (process indices).
#[track_caller]
pub(crate) fn wait_members(fleet: &mut Fleet, procs: &[usize], expected: &[usize], group: &str) {
    let mut want: Vec<(u32, u32)> = expected.iter().map(|&i| fleet.procs[i].member()).collect();
    want.sort_unstable();
    let what = format!("members {want:?} of {group:?} at {procs:?}");
    fleet.wait(&what, |fleet| {
        procs
            .iter()
            .all(|&i| fleet.procs[i].last_members(group).as_ref() == Some(&want))
    });
}
