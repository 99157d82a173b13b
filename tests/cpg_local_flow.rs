//! Flow control between a group's local senders and its local receivers: a sender faster than
//! a receiver on its own node is held (`CS_ERR_TRY_AGAIN`, flow control ENABLED) while that
//! receiver is behind, instead of piling up events until the node drops the receiver; and a
//! receiver that stops reading is dropped after 5 s even when no further event comes for it,
//! which lets the held sender go on. Real node processes, one node; the receiver is a client
//! process (one process is one member of a group per node), the sender this test.

mod clients;
mod cpg_harness;
mod node_harness;

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use cpg_harness::{Command, Fleet};
use node_harness::{BINARY, NodeCluster, Timers};
use totemcast::api::{DispatchFlags, FlowControlState, Guarantee};
use totemcast::cpg::{Event, Handle};
use totemcast::error::CsError;

const WITHIN: Duration = Duration::from_secs(60);
const GROUP: &str = "flow";
/// The size of the messages: as the bench's fan-out step whose receivers were dropped.
const SIZE: usize = 64 << 10;
/// Bytes a sender may get accepted while a receiver of its group reads nothing: its rings
/// (a few MiB), the node's 16 MiB throttle and what the core has in flight, with room to
/// spare — far below the 512 MiB at which the node drops a receiver.
const SENT_WHILE_HELD_MAX: usize = 96 << 20;

fn one_node(name: &str) -> NodeCluster {
    let mut cluster = NodeCluster::new(name, 1, Timers::default(), 0, "");
    cluster.start_all();
    cluster.wait_for_ring(&[0], WITHIN);
    cluster
}

fn socket(cluster: &NodeCluster) -> std::path::PathBuf {
    cluster.dir.join("node-1.sock")
}

fn client_counter(cluster: &NodeCluster, name: &str) -> u64 {
    cluster.status(0).expect("status")["counters"]["clients"][name]
        .as_u64()
        .expect("a counter")
}

#[derive(Debug, Default)]
struct Seen {
    /// Own deliveries, each checked to be intact and to carry the next sequence number.
    delivered: u64,
    members: usize,
}

impl Seen {
    fn add(&mut self, event: &Event) {
        match event {
            Event::Deliver { payload, .. } => {
                let (_, seq, intact) = cpg_harness::parse(payload);
                assert!(intact && payload.len() == SIZE, "message {seq} damaged");
                assert_eq!(seq, self.delivered, "out of order or lost");
                self.delivered += 1;
            }
            Event::ConfChg { members, .. } => self.members = members.len(),
            Event::TotemConfChg { .. } => {}
        }
    }
}

/// Dispatches until `done` holds.
#[track_caller]
fn pump(handle: &mut Handle, seen: &mut Seen, done: impl Fn(&Seen) -> bool) {
    clients::pump(handle, seen, WITHIN, |seen, event| seen.add(&event), done);
}

/// A receiver process and this test's sender handle, both members of one group on the node.
fn joined_pair(cluster: &NodeCluster, fleet: &mut Fleet) -> (usize, Handle, Seen) {
    let receiver = fleet.spawn("receiver", &socket(cluster));
    fleet.call_ok(receiver, &Command::Join(GROUP.into()));
    let mut sender = Handle::connect(socket(cluster)).unwrap();
    let mut sent = Seen::default();
    sender.join(GROUP).unwrap();
    pump(&mut sender, &mut sent, |seen| seen.members == 2);
    fleet.wait("the receiver sees the sender join", |fleet| {
        fleet.procs[receiver]
            .last_members(GROUP)
            .is_some_and(|members| members.len() == 2)
    });
    (receiver, sender, sent)
}

fn signal(fleet: &Fleet, index: usize, signal: Signal) {
    let pid = i32::try_from(fleet.procs[index].pid).expect("a pid");
    kill(Pid::from_raw(pid), signal).expect("signal the receiver");
}

/// Sends numbered messages from `*next` while the receiver reads nothing, reading its own
/// deliveries so that only the receiver falls behind, until the node holds it: its sends are
/// refused, its own events all read, and flow control is on. Returns the bytes accepted.
fn send_until_held(
    cluster: &NodeCluster,
    sender: &mut Handle,
    sent: &mut Seen,
    next: &mut u64,
) -> usize {
    let pid = std::process::id();
    let mut accepted = 0;
    let deadline = Instant::now() + WITHIN;
    loop {
        assert!(
            accepted <= SENT_WHILE_HELD_MAX,
            "{accepted} bytes accepted while a receiver read nothing: the sender was never held"
        );
        assert!(Instant::now() < deadline, "the sender was never held");
        let message = cpg_harness::payload(pid, *next, SIZE);
        match sender.mcast_joined(Guarantee::Agreed, &[&message]) {
            Ok(()) => {
                *next += 1;
                accepted += SIZE;
                sender
                    .dispatch(DispatchFlags::All, |event| sent.add(&event))
                    .unwrap();
            }
            Err(error) if error.code() == CsError::TryAgain => {
                let own = sender
                    .dispatch(DispatchFlags::All, |event| sent.add(&event))
                    .unwrap();
                if own == 0
                    && sender.flow_control_state_get().unwrap() == FlowControlState::Enabled
                    && client_counter(cluster, "senders_held") > 0
                    && !sender
                        .wait_writable(SIZE, Some(Duration::from_millis(50)))
                        .unwrap()
                {
                    return accepted;
                }
            }
            Err(error) => panic!("{error}"),
        }
    }
}

/// Sends numbered messages from `*next` up to `end`, reading its own deliveries, waiting
/// whenever the node holds it; returns once it has delivered them all.
fn send_rest(sender: &mut Handle, sent: &mut Seen, next: &mut u64, end: u64) {
    let pid = std::process::id();
    let deadline = Instant::now() + WITHIN;
    while *next < end {
        let message = cpg_harness::payload(pid, *next, SIZE);
        match sender.mcast_joined(Guarantee::Agreed, &[&message]) {
            Ok(()) => *next += 1,
            Err(error) if error.code() == CsError::TryAgain => {
                assert!(Instant::now() < deadline, "the sender stayed held");
                sender
                    .wait_writable(SIZE, Some(Duration::from_millis(10)))
                    .unwrap();
            }
            Err(error) => panic!("{error}"),
        }
        sender
            .dispatch(DispatchFlags::All, |event| sent.add(&event))
            .unwrap();
    }
    pump(sender, sent, |seen| seen.delivered == end);
}

/// The fan-out bench's failure: a sender on the node outran a receiver on the node until the
/// receiver's backlog reached 512 MiB and the node dropped it. Now the sender is held while
/// the receiver is behind (here: stopped with SIGSTOP), and the receiver gets everything, in
/// order and intact, once it reads again.
#[test]
fn a_local_sender_waits_for_a_local_receiver_behind_and_nobody_is_dropped() {
    let cluster = one_node("cpg-local-flow");
    let mut fleet = Fleet::new(WITHIN);
    let (receiver, mut sender, mut sent) = joined_pair(&cluster, &mut fleet);
    signal(&fleet, receiver, Signal::SIGSTOP);
    let mut next = 0;
    let accepted = send_until_held(&cluster, &mut sender, &mut sent, &mut next);
    signal(&fleet, receiver, Signal::SIGCONT);
    assert!(accepted > 16 << 20, "held after only {accepted} bytes");
    // The congestion threshold (16 MiB), what the node reads ahead of the core's deliveries
    // (8 MiB) and the rings: the node's memory grows with what it takes in before it holds
    // the sender.
    assert!(accepted < 40 << 20, "held after {accepted} bytes");
    let end = next * 3;
    send_rest(&mut sender, &mut sent, &mut next, end);
    fleet.wait("the receiver delivers everything", |fleet| {
        fleet.procs[receiver].delivered() as u64 >= end || fleet.procs[receiver].ended
    });
    let me = (sent_node(&mut sender), std::process::id());
    let expected: Vec<_> = (0..end).map(|seq| (me.0, me.1, seq)).collect();
    assert_eq!(fleet.procs[receiver].deliveries(GROUP), expected);
    assert!(
        fleet.procs[receiver]
            .events(GROUP)
            .iter()
            .all(|event| !matches!(event, cpg_harness::GroupEvent::Deliver(_, _, false))),
        "a damaged message"
    );
    assert_eq!(client_counter(&cluster, "disconnected_slow"), 0);
    assert_eq!(
        sender.flow_control_state_get().unwrap(),
        FlowControlState::Disabled
    );
}

fn sent_node(sender: &mut Handle) -> u32 {
    sender.local_get().expect("local_get").0
}

/// A receiver that stops reading while the sender is held for it gets no further events, so
/// nothing writes to it again: it is dropped all the same once it has read nothing for 5 s,
/// and then the sender's held messages go out.
#[test]
fn a_receiver_that_stops_reading_is_dropped_without_further_events_and_frees_the_sender() {
    let cluster = one_node("cpg-local-stall");
    let mut fleet = Fleet::new(WITHIN);
    let (receiver, mut sender, mut sent) = joined_pair(&cluster, &mut fleet);
    fleet.command(receiver, &Command::Stall);
    let mut next = 0;
    send_until_held(&cluster, &mut sender, &mut sent, &mut next);
    let deadline = Instant::now() + WITHIN;
    while client_counter(&cluster, "disconnected_slow") == 0 {
        assert!(
            Instant::now() < deadline,
            "the node never dropped the stalled receiver"
        );
        std::thread::yield_now();
    }
    let end = next + 100;
    send_rest(&mut sender, &mut sent, &mut next, end);
    assert_eq!(sent.delivered, end);
}

/// A sender that never lets its ring run empty, fanning 1 KiB messages out to three local
/// receivers (the fan-out bench): the node took in up to its core's 256 MiB send queue before
/// the first of it was delivered and its congestion could hold the sender, and held as much
/// again in each receiver's backlog: 950 MB of node memory within a second. It now reads at
/// most 8 MiB ahead of the core's deliveries, 1 MiB per turn (measured: 92-98 MB).
#[test]
fn a_fast_local_fan_out_keeps_the_node_memory_bounded() {
    let cluster = one_node("cpg-local-memory");
    let socket = socket(&cluster);
    let worker = |role: &str, secs: &str| {
        std::process::Command::new(BINARY)
            .args(["bench", "--role", role, "--socket"])
            .arg(&socket)
            .args(["-g", "memory", "-s", "1024", "-m", "4", "-t", secs])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let receivers: Vec<_> = (0..3).map(|_| worker("recv", "2")).collect();
    assert!(
        worker("send", "2").wait().unwrap().success(),
        "the sender failed"
    );
    for mut receiver in receivers {
        assert!(receiver.wait().unwrap().success(), "a receiver failed");
    }
    let status = std::fs::read_to_string(format!("/proc/{}/status", cluster.pid(0))).unwrap();
    let peak_kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    assert!(
        peak_kib < 400 << 10,
        "the node's resident memory peaked at {} MiB",
        peak_kib >> 10
    );
}
