//! A client behind on its events while the node holds a backlog for it (events that did not fit
//! its event ring): a request it makes then is still answered, and a client the node drops for
//! being slow learns it. Real node processes.

mod clients;
mod node_harness;

use std::os::fd::AsFd;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags};

use node_harness::{NodeCluster, Timers};
use totemcast::api::{DispatchFlags, Guarantee};
use totemcast::cpg::{Event, Handle};
use totemcast::error::CsError;
use totemcast::ids::NodeId;

const WITHIN: Duration = Duration::from_secs(30);
/// The size of the messages: as the bench's fan-out step that hung.
const SIZE: usize = 64 << 10;

fn socket(cluster: &NodeCluster, index: usize) -> std::path::PathBuf {
    cluster.dir.join(format!("node-{}.sock", index + 1))
}

/// Two nodes: a process is one member per node, so the receiver (on node 1) and the sender
/// (on node 2) can be handles of this test process.
fn cluster(name: &str) -> NodeCluster {
    let mut cluster = NodeCluster::new(name, 2, Timers::default(), 0, "");
    cluster.start_all();
    cluster.wait_for_ring(&[0, 1], WITHIN);
    cluster
}

/// A client counter of node 1 (the receiver's).
fn client_counter(cluster: &NodeCluster, name: &str) -> u64 {
    cluster.status(0).expect("status")["counters"]["clients"][name]
        .as_u64()
        .expect("a counter")
}

/// Waits until node 1 has written `count` more events for its clients (the receiver is its
/// only one) than `before`: into the receiver's ring, or its backlog.
fn wait_handed_over(cluster: &NodeCluster, before: u64, count: u64) {
    let deadline = Instant::now() + WITHIN;
    while client_counter(cluster, "events_written") < before + count {
        assert!(Instant::now() < deadline, "node 1 never delivered them");
        std::thread::yield_now();
    }
}

/// Dispatches until `done(deliveries, confchg member counts)` holds; deliveries are counted,
/// never kept (a kept view holds ring space).
#[track_caller]
fn pump(handle: &mut Handle, seen: &mut Seen, done: impl Fn(&Seen) -> bool) {
    clients::pump(handle, seen, WITHIN, |seen, event| seen.add(&event), done);
}

#[derive(Debug, Default)]
struct Seen {
    /// Deliveries, and the sequence number each one carried, checked to be 0, 1, 2, …
    delivered: u64,
    members: usize,
}

impl Seen {
    fn add(&mut self, event: &Event) {
        match event {
            Event::Deliver { payload, .. } => {
                let seq = u64::from_le_bytes(payload[..8].try_into().unwrap());
                assert_eq!(seq, self.delivered, "out of order or lost");
                assert_eq!(payload.len(), SIZE);
                self.delivered += 1;
            }
            Event::ConfChg { members, .. } => self.members = members.len(),
            Event::TotemConfChg { .. } => {}
        }
    }
}

/// Sends `count` messages of [`SIZE`] bytes (numbered from `first`), dispatching its own
/// deliveries meanwhile, and returns once it has delivered them all: by then the node has
/// handed them to every local member too.
fn send_and_deliver(sender: &mut Handle, seen: &mut Seen, first: u64, count: u64) {
    let mut message = vec![0xAB; SIZE];
    let deadline = Instant::now() + WITHIN;
    for seq in first..first + count {
        message[..8].copy_from_slice(&seq.to_le_bytes());
        loop {
            match sender.mcast_joined(Guarantee::Agreed, &[&message]) {
                Ok(()) => break,
                Err(error) if error.code() == CsError::TryAgain => {
                    assert!(Instant::now() < deadline, "the sender's ring stayed full");
                    sender
                        .dispatch(DispatchFlags::All, |event| seen.add(&event))
                        .unwrap();
                    sender
                        .wait_writable(SIZE, Some(Duration::from_millis(10)))
                        .unwrap();
                }
                Err(error) => panic!("{error}"),
            }
        }
    }
    pump(sender, seen, |seen| seen.delivered == first + count);
}

fn joined_pair(cluster: &NodeCluster) -> (Handle, Seen, Handle, Seen) {
    let mut receiver = Handle::connect(socket(cluster, 0)).unwrap();
    let mut at_receiver = Seen::default();
    receiver.join("fanout").unwrap();
    pump(&mut receiver, &mut at_receiver, |seen| seen.members == 1);
    let mut sender = Handle::connect(socket(cluster, 1)).unwrap();
    let mut sent = Seen::default();
    sender.join("fanout").unwrap();
    pump(&mut sender, &mut sent, |seen| seen.members == 2);
    pump(&mut receiver, &mut at_receiver, |seen| seen.members == 2);
    (receiver, at_receiver, sender, sent)
}

/// The hang of the bench's fan-out step: a receiver behind on its events asks the node
/// something (`local_get`) while the node holds more events for it than its ring holds. The
/// answer comes after those events. The request used to keep the events it read
/// meanwhile as views of the ring: the ring filled with them, the node waited for room, the
/// receiver for the answer, forever.
#[test]
fn a_request_behind_a_backlog_larger_than_the_ring_is_answered() {
    let cluster = cluster("cpg-backlog-request");
    let (mut receiver, mut at_receiver, mut sender, mut sent) = joined_pair(&cluster);
    // 26 MiB for a receiver that reads nothing meanwhile: 2 MiB fill its ring, the rest waits
    // in the node's backlog, above the 16 MiB at which the node holds its multicasts.
    let count = 416;
    let before = client_counter(&cluster, "events_written");
    send_and_deliver(&mut sender, &mut sent, 0, count);
    wait_handed_over(&cluster, before, count);
    let (answered, answer) = mpsc::channel();
    let asking = std::thread::spawn(move || {
        let nodeid = receiver.local_get();
        answered.send(nodeid).unwrap();
        receiver
    });
    let nodeid = answer
        .recv_timeout(WITHIN)
        .expect("local_get behind the backlog was never answered");
    assert_eq!(nodeid.unwrap(), NodeId(1));
    assert_eq!(client_counter(&cluster, "disconnected_slow"), 0);
    let mut receiver = asking.join().unwrap();
    // Nothing was lost or reordered: the events read while waiting come first.
    pump(&mut receiver, &mut at_receiver, |seen| {
        seen.delivered == count
    });
    // And the connection still works both ways.
    send_and_deliver(&mut sender, &mut sent, count, 1);
    pump(&mut receiver, &mut at_receiver, |seen| {
        seen.delivered == count + 1
    });
}

/// Writing into a zero-copy buffer waits until the node has read its last send. The node holds
/// this client's multicasts until it has read its events (more than 16 MiB waiting)
/// — and the thread that would read them is the one waiting in the write: both waited
/// forever. Now the node reads the requests a buffer waits for.
#[test]
fn writing_into_a_sent_buffer_does_not_wait_for_the_backlog_throttle() {
    let cluster = cluster("cpg-zcb-throttle");
    let (receiver, _received, mut sender, mut sent) = joined_pair(&cluster);
    // The receiver reads nothing: 26 MiB put its backlog above the throttle.
    let before = client_counter(&cluster, "events_written");
    send_and_deliver(&mut sender, &mut sent, 0, 416);
    wait_handed_over(&cluster, before, 416);
    let mut receiver = receiver;
    let mut buffer = receiver.zcb_alloc(SIZE).unwrap();
    buffer[..8].copy_from_slice(&416u64.to_le_bytes());
    receiver
        .zcb_mcast_joined(Guarantee::Agreed, &mut buffer, SIZE)
        .unwrap();
    let (written, done) = mpsc::channel();
    let writer = std::thread::spawn(move || {
        buffer[..8].copy_from_slice(&417u64.to_le_bytes());
        written.send(()).unwrap();
        (receiver, buffer)
    });
    done.recv_timeout(WITHIN)
        .expect("the write into the sent buffer never returned");
    let (_receiver, buffer) = writer.join().unwrap();
    assert!(!buffer.in_flight());
    // The node read the send: it is delivered (after the 416 the sender sent before it).
    pump(&mut sender, &mut sent, |seen| seen.delivered == 417);
}

/// A buffer waiting for a node that dies gives up with CS_ERR_LIBRARY (it used to spin
/// forever); a plain write into it then goes through (nobody reads the block any more).
#[test]
fn a_buffer_waiting_for_a_dead_node_gives_up() {
    let mut cluster = cluster("cpg-zcb-node-dies");
    let mut handle = Handle::connect(socket(&cluster, 0)).unwrap();
    let mut seen = Seen::default();
    handle.join("g").unwrap();
    pump(&mut handle, &mut seen, |seen| seen.members == 1);
    let mut buffer = handle.zcb_alloc(64).unwrap();
    cluster.pause(0);
    handle
        .zcb_mcast_joined(Guarantee::Agreed, &mut buffer, 64)
        .unwrap();
    assert!(buffer.in_flight(), "a stopped node read the send");
    cluster.kill(0);
    let (outcome, done) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let result = buffer.wait_until_read();
        outcome.send(result).unwrap();
        buffer
    });
    let result = done
        .recv_timeout(WITHIN)
        .expect("the wait for a dead node never ended");
    assert_eq!(result.unwrap_err().code(), CsError::Library);
    let mut buffer = waiter.join().unwrap();
    assert!(!buffer.in_flight());
    buffer.fill(1);
}

/// A client that stops reading is disconnected by a node that stays up (`disconnected_slow`):
/// its descriptor becomes readable, and dispatch and sends say CS_ERR_LIBRARY from then on —
/// never 0 events forever.
#[test]
fn a_client_the_node_drops_for_being_slow_learns_it() {
    let cluster = cluster("cpg-dropped-slow");
    let (mut receiver, _received, mut sender, mut sent) = joined_pair(&cluster);
    assert!(receiver.arm_descriptor().unwrap(), "nothing waits");
    // Fill its ring and start a backlog; then the node drops it once events still come 5 s
    // after it last read (the sender keeps sending, one message per own delivery).
    send_and_deliver(&mut sender, &mut sent, 0, 200);
    let deadline = Instant::now() + WITHIN;
    let mut count = 200;
    loop {
        if client_counter(&cluster, "disconnected_slow") == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the node never dropped the receiver"
        );
        send_and_deliver(&mut sender, &mut sent, count, 1);
        count += 1;
    }
    let mut fds = [PollFd::new(receiver.as_fd(), PollFlags::POLLIN)];
    let ready = nix::poll::poll(&mut fds, 20_000u16).unwrap();
    assert_eq!(ready, 1, "the descriptor did not wake");
    // The events in its ring may come first; then the error, every time.
    let mut events = 0;
    let error = loop {
        match receiver.dispatch(DispatchFlags::All, |_| events += 1) {
            Ok(0) => panic!("dispatch returned 0 events on a dropped connection"),
            Ok(_) => {}
            Err(error) => break error,
        }
    };
    assert_eq!(error.code(), CsError::Library, "{error}");
    for flags in [DispatchFlags::All, DispatchFlags::OneNonblocking] {
        let error = receiver.dispatch(flags, |_| events += 1).unwrap_err();
        assert_eq!(error.code(), CsError::Library, "{flags:?}: {error}");
    }
    assert!(
        receiver
            .local_get()
            .is_err_and(|e| e.code() == CsError::Library)
    );
    let chunk = vec![0u8; 60 << 10];
    let error = (0..1000)
        .find_map(|_| {
            receiver
                .mcast_many(Guarantee::Agreed, [&chunk[..]; 16])
                .err()
        })
        .expect("sends to a node that dropped the client never failed");
    assert_eq!(error.code(), CsError::Library, "{error}");
    // The sender goes on.
    send_and_deliver(&mut sender, &mut sent, count, 1);
}
