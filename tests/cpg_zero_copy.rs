//! The CPG client's zero-copy paths and the calls beyond join/send: zero-copy buffers sent and
//! reused, deliveries as views of the ring, messages larger than a ring record (whole and in
//! order at every member), finalize, the initial totem confchg, iteration, flow control and
//! the message limit, on real node processes.

mod clients;
mod node_harness;

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags};

use clients::deliveries;
use node_harness::{NodeCluster, Timers};
use totemcast::api::{DispatchFlags, FlowControlState, Guarantee, IterationType};
use totemcast::cpg::{Event, Handle, Options};
use totemcast::error::CsError;
use totemcast::ids::NodeId;

const WITHIN: Duration = Duration::from_secs(30);
/// The cluster's message limit in these tests.
const MAX_MESSAGE: usize = 24 << 20;

fn socket(cluster: &NodeCluster, index: usize) -> std::path::PathBuf {
    cluster.dir.join(format!("node-{}.sock", index + 1))
}

fn cluster(name: &str, nodes: usize) -> NodeCluster {
    let mut cluster = NodeCluster::new(
        name,
        nodes,
        Timers::default(),
        0,
        &format!("max_message_size = {MAX_MESSAGE}"),
    );
    cluster.start_all();
    cluster.wait_for_ring(&(0..nodes).collect::<Vec<_>>(), WITHIN);
    cluster
}

/// Dispatches into `into` until `done` holds. Deliveries are kept as copies (a kept view
/// would hold ring space).
#[track_caller]
fn collect(handle: &mut Handle, into: &mut Vec<Event>, done: impl Fn(&[Event]) -> bool) {
    clients::collect_with(handle, into, WITHIN, detach, done);
}

/// The event with a delivery copied out of the ring.
fn detach(event: Event) -> Event {
    match event {
        Event::Deliver {
            group,
            nodeid,
            pid,
            payload,
        } => {
            let copy = payload.to_bytes();
            drop(payload);
            Event::Deliver {
                group,
                nodeid,
                pid,
                payload: message_of(copy),
            }
        }
        other => other,
    }
}

/// A heap message with these bytes (through a handle-independent path: equality is by bytes).
fn message_of(bytes: bytes::Bytes) -> totemcast::cpg::Message {
    totemcast::cpg::Message::from(bytes)
}

/// Sends, waiting while the request ring is full.
fn send(handle: &mut Handle, buffers: &[&[u8]]) {
    let len = buffers.iter().map(|b| b.len()).sum();
    let deadline = Instant::now() + WITHIN;
    loop {
        match handle.mcast_joined(Guarantee::Agreed, buffers) {
            Ok(()) => return,
            Err(error) if error.code() == CsError::TryAgain => {
                assert!(Instant::now() < deadline, "the ring stayed full");
                handle
                    .wait_writable(len, Some(Duration::from_millis(100)))
                    .unwrap();
            }
            Err(error) => panic!("{error}"),
        }
    }
}

fn joined(handle: &mut Handle, events: &mut Vec<Event>, group: &str, members: usize) {
    handle.join(group).unwrap();
    collect(handle, events, |e| {
        e.iter()
            .any(|e| matches!(e, Event::ConfChg { members: m, .. } if m.len() == members))
    });
}

#[test]
fn zero_copy_sends_large_messages_and_the_other_calls() {
    let cluster = cluster("cpg-zcb", 2);
    let mut a = Handle::connect_with(
        socket(&cluster, 0),
        Options {
            initial_totem_conf: true,
        },
    )
    .unwrap();
    let mut b = Handle::connect(socket(&cluster, 1)).unwrap();
    let (mut seen_a, mut seen_b) = (Vec::new(), Vec::new());

    assert_eq!(a.max_atomic_msgsize_get().unwrap(), MAX_MESSAGE);
    joined(&mut a, &mut seen_a, "zcb", 1);
    // The initial totem confchg follows the handle's first confchg (as in Corosync).
    collect(&mut a, &mut seen_a, |e| e.len() >= 2);
    assert!(matches!(&seen_a[0], Event::ConfChg { .. }), "{seen_a:?}");
    assert!(
        matches!(&seen_a[1], Event::TotemConfChg { nodes, .. } if nodes == &[NodeId(1), NodeId(2)]),
        "{seen_a:?}"
    );
    joined(&mut b, &mut seen_b, "zcb", 2);

    // Zero-copy buffers: filled in place, sent, reused (the write waits for the node's read).
    let mut buffer = a.zcb_alloc(1000).unwrap();
    buffer.fill(b'1');
    a.zcb_mcast_joined(Guarantee::Agreed, &mut buffer, 1000)
        .unwrap();
    buffer[..3].copy_from_slice(b"two");
    a.zcb_mcast_joined(Guarantee::Safe, &mut buffer, 3).unwrap();
    let mut foreign = b.zcb_alloc(10).unwrap();
    assert_eq!(
        a.zcb_mcast_joined(Guarantee::Agreed, &mut foreign, 10)
            .unwrap_err()
            .code(),
        CsError::InvalidParam
    );
    assert_eq!(
        a.zcb_mcast_joined(Guarantee::Agreed, &mut buffer, 1001)
            .unwrap_err()
            .code(),
        CsError::InvalidParam
    );
    assert_eq!(
        a.zcb_alloc(MAX_MESSAGE + 1).unwrap_err().code(),
        CsError::TooBig
    );
    assert_eq!(
        a.zcb_alloc(MAX_MESSAGE).unwrap_err().code(),
        CsError::NoMemory,
        "larger than the arena"
    );
    drop(buffer);

    // Messages larger than a ring record, between small ones: whole, in order, everywhere.
    let large: Vec<Vec<u8>> = [5usize << 20, 9 << 20, MAX_MESSAGE]
        .iter()
        .enumerate()
        .map(|(i, &len)| (0..len).map(|j| (j * 7 + i) as u8).collect())
        .collect();
    for (i, message) in large.iter().enumerate() {
        let (head, tail) = message.split_at(message.len() / 3);
        send(&mut a, &[head, tail]);
        send(&mut b, &[format!("small {i}").as_bytes()]);
    }
    assert_eq!(
        a.mcast_joined(Guarantee::Agreed, &[&vec![0u8; MAX_MESSAGE + 1]])
            .unwrap_err()
            .code(),
        CsError::TooBig
    );
    let want = 2 + 2 * large.len();

    collect(&mut a, &mut seen_a, |e| deliveries(e).len() == want);
    collect(&mut b, &mut seen_b, |e| deliveries(e).len() == want);
    let order = deliveries(&seen_a);
    assert_eq!(deliveries(&seen_b), order, "one order at both members");
    assert_eq!(order[0], (1, vec![b'1'; 1000]));
    assert_eq!(order[1], (1, b"two".to_vec()));
    let from_a: Vec<&Vec<u8>> = order[2..]
        .iter()
        .filter(|(node, _)| *node == 1)
        .map(|(_, m)| m)
        .collect();
    assert_eq!(from_a, large.iter().collect::<Vec<_>>());

    // Deliveries are views of the ring; holding many is fine until they are dropped.
    for i in 0..500u32 {
        a.mcast_joined(Guarantee::Agreed, &[&i.to_le_bytes()])
            .unwrap();
    }
    let mut held = Vec::new();
    let deadline = Instant::now() + WITHIN;
    while held.len() < 500 {
        assert!(Instant::now() < deadline, "{} of 500", held.len());
        b.wait_for_event(Some(Duration::from_millis(100))).unwrap();
        while let Some(event) = b.try_next_event().unwrap() {
            if let Event::Deliver { payload, .. } = event {
                assert!(payload.is_zero_copy());
                held.push(payload);
            }
        }
    }
    for (i, payload) in held.iter().enumerate() {
        assert_eq!(&payload[..], &(i as u32).to_le_bytes());
    }
    drop(held);

    // Iteration of groups and members.
    let pid = std::process::id();
    let all = b.iteration(IterationType::All, None).unwrap();
    assert_eq!(
        all.iter().map(|e| (e.nodeid, e.pid)).collect::<Vec<_>>(),
        vec![(NodeId(1), pid), (NodeId(2), pid)]
    );
    assert!(all.iter().all(|e| &e.group[..] == b"zcb"));
    let names = b.iteration(IterationType::NameOnly, None).unwrap();
    assert_eq!(names.len(), 1);
    assert_eq!(
        b.iteration(IterationType::OneGroup, Some(b"zcb")).unwrap(),
        all
    );
    assert!(
        b.iteration(IterationType::OneGroup, Some(b"none"))
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        b.iteration(IterationType::OneGroup, None)
            .unwrap_err()
            .code(),
        CsError::InvalidParam
    );

    // Flow control: off while the ring is empty; on once the node stops reading (it is
    // stopped here) and sends are refused; every accepted message arrives after it resumes.
    let mut c = Handle::connect(socket(&cluster, 0)).unwrap();
    let mut seen_c = Vec::new();
    joined(&mut c, &mut seen_c, "flood", 1);
    assert_eq!(
        c.flow_control_state_get().unwrap(),
        FlowControlState::Disabled
    );
    cluster.pause(0);
    let chunk = vec![7u8; 64 << 10];
    let mut accepted = 0;
    loop {
        match c.mcast_joined(Guarantee::Agreed, &[&chunk]) {
            Ok(()) => accepted += 1,
            Err(error) if error.code() == CsError::TryAgain => break,
            Err(error) => panic!("{error}"),
        }
        assert!(accepted < 1000, "a 2 MiB ring took 64 MiB");
    }
    assert_eq!(
        c.flow_control_state_get().unwrap(),
        FlowControlState::Enabled
    );
    cluster.resume(0);
    collect(&mut c, &mut seen_c, |e| deliveries(e).len() == accepted);
    assert!(deliveries(&seen_c).iter().all(|(_, m)| m == &chunk));
    assert_eq!(
        c.flow_control_state_get().unwrap(),
        FlowControlState::Disabled
    );

    // Finalize: every later call, and a second finalize, is CS_ERR_BAD_HANDLE.
    b.finalize().unwrap();
    assert_eq!(b.finalize().unwrap_err().code(), CsError::BadHandle);
    assert_eq!(
        b.dispatch(DispatchFlags::All, |_| {}).unwrap_err().code(),
        CsError::BadHandle
    );
    assert_eq!(b.join("x").unwrap_err().code(), CsError::BadHandle);
    assert_eq!(
        b.mcast_joined(Guarantee::Agreed, &[b"x"])
            .unwrap_err()
            .code(),
        CsError::BadHandle
    );
    assert_eq!(b.fd_get().unwrap_err().code(), CsError::BadHandle);
    assert_eq!(b.local_get().unwrap_err().code(), CsError::BadHandle);
    // The other member sees it go.
    collect(&mut a, &mut seen_a, |e| {
        e.iter().any(|e| {
            matches!(e, Event::ConfChg { left, .. }
                if left.first().is_some_and(|l| l.nodeid == NodeId(2)))
        })
    });
}

/// A join whose wait is interrupted (the binding's Ctrl-C) still takes effect: its late answer
/// makes the handle joined, and nothing is mistaken for an event.
#[test]
fn an_interrupted_join_takes_effect_when_its_answer_comes() {
    let cluster = cluster("cpg-interrupt", 1);
    let mut handle = Handle::connect(socket(&cluster, 0)).unwrap();
    assert_eq!(handle.nodeid(), NodeId(1));
    let checks = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counted = std::sync::Arc::clone(&checks);
    handle.set_interrupt_check(Some(Box::new(move || {
        counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Err(totemcast::Error::Interrupt("interrupted".into()))
    })));
    // The node is stopped: the answer cannot come before the check runs.
    cluster.pause(0);
    let error = handle.join("late").unwrap_err();
    assert_eq!(error.code(), CsError::Interrupt);
    assert_eq!(checks.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(
        handle
            .mcast_joined(Guarantee::Agreed, &[b"x"])
            .unwrap_err()
            .code(),
        CsError::NotExist,
        "not joined before the answer"
    );
    cluster.resume(0);
    handle.set_interrupt_check(None);
    // The descriptor is armed or an event waits.
    let _ = handle.arm_descriptor().unwrap();
    let mut events = Vec::new();
    collect(&mut handle, &mut events, |e| {
        e.iter().any(|e| matches!(e, Event::ConfChg { .. }))
    });
    handle.mcast_joined(Guarantee::Agreed, &[b"after"]).unwrap();
    collect(&mut handle, &mut events, |e| deliveries(e).len() == 1);
    assert_eq!(handle.membership_get("late").unwrap().len(), 1);
}

/// A client that waits on its descriptor learns that its node died: the descriptor becomes
/// readable and the next call says CS_ERR_LIBRARY (non-blocking calls included).
#[test]
fn the_descriptor_wakes_when_the_node_dies() {
    let mut cluster = cluster("cpg-node-dies", 1);
    let mut handle = Handle::connect(socket(&cluster, 0)).unwrap();
    handle.join("g").unwrap();
    let mut events = Vec::new();
    collect(&mut handle, &mut events, |e| !e.is_empty());
    assert!(handle.arm_descriptor().unwrap(), "nothing waits");
    cluster.kill(0);
    let mut fds = [PollFd::new(handle.as_fd(), PollFlags::POLLIN)];
    let ready = nix::poll::poll(&mut fds, 20_000u16).unwrap();
    assert_eq!(ready, 1, "the descriptor did not wake within 20 s");
    for flags in [DispatchFlags::All, DispatchFlags::OneNonblocking] {
        assert_eq!(
            handle.dispatch(flags, |_| {}).unwrap_err().code(),
            CsError::Library,
            "{flags:?}"
        );
    }
    // Sends fill the ring nobody reads, then say the node is gone.
    let chunk = vec![0u8; 60 << 10];
    let error = (0..1000)
        .find_map(|_| handle.mcast_many(Guarantee::Agreed, [&chunk[..]; 16]).err())
        .expect("sends to a dead node never failed");
    assert_eq!(error.code(), CsError::Library, "{error}");
}
