//! CPG clients (`totemcast::cpg::Handle`) on real node processes: joins and confchgs, one order
//! of messages at every member, membership queries, errors, a leave that completes, a closed
//! handle (PROCDOWN) and a killed node (NODEDOWN, then the totem confchg).

mod clients;
mod node_harness;

use std::time::{Duration, Instant};

use clients::{WITHIN, collect, deliveries};
use node_harness::{NodeCluster, Timers};
use totemcast::api::{Guarantee, Reason};
use totemcast::cpg::{Event, Handle};
use totemcast::error::CsError;
use totemcast::ids::NodeId;

fn socket(cluster: &NodeCluster, index: usize) -> std::path::PathBuf {
    cluster.dir.join(format!("node-{}.sock", index + 1))
}

#[test]
fn three_nodes_one_group_one_order_and_membership_changes() {
    let mut cluster = NodeCluster::new("cpg", 3, Timers::default(), 0, "");
    cluster.start_all();
    cluster.wait_for_ring(&[0, 1, 2], WITHIN);
    let pid = std::process::id();
    let mut handles: Vec<Handle> = (0..3)
        .map(|i| Handle::connect(socket(&cluster, i)).unwrap())
        .collect();
    let mut events: Vec<Vec<Event>> = vec![Vec::new(); 3];
    assert_eq!(handles[1].local_get().unwrap(), NodeId(2));

    // Errors before a join.
    assert_eq!(
        handles[0]
            .mcast_joined(Guarantee::Agreed, &[b"x"])
            .unwrap_err()
            .code(),
        CsError::NotExist
    );
    assert_eq!(
        handles[0].join("").unwrap_err().code(),
        CsError::InvalidParam
    );
    assert_eq!(
        handles[0].join([b'x'; 129]).unwrap_err().code(),
        CsError::NameTooLong
    );
    assert_eq!(handles[0].leave("g").unwrap_err().code(), CsError::NotExist);

    // Joins, one at a time: each joiner sees its own join first.
    for i in 0..3 {
        handles[i].join("g").unwrap();
        let want = i + 1;
        collect(&mut handles[i], &mut events[i], |e| {
            e.iter()
                .any(|e| matches!(e, Event::ConfChg { members, .. } if members.len() == want))
        });
        match &events[i][0] {
            Event::ConfChg { joined, .. } => {
                assert_eq!(joined[0].nodeid, NodeId(i as u32 + 1));
                assert_eq!(joined[0].pid, pid);
                assert_eq!(joined[0].reason, Reason::Join);
            }
            other => panic!("first event {other:?}"),
        }
    }
    assert_eq!(handles[0].join("h").unwrap_err().code(), CsError::Exist);
    let members = handles[2].membership_get("g").unwrap();
    assert_eq!(
        members,
        vec![(NodeId(1), pid), (NodeId(2), pid), (NodeId(3), pid)]
    );

    // cpgtool sees the group, as JSON through the library and as a table through the binary.
    let groups = totemcast::node::driver::groups(&socket(&cluster, 0)).unwrap();
    assert_eq!(groups["groups"][0]["name"], "g");
    assert_eq!(groups["groups"][0]["members"].as_array().unwrap().len(), 3);
    let table = std::process::Command::new(node_harness::BINARY)
        .args(["cpgtool", "--socket"])
        .arg(socket(&cluster, 1))
        .output()
        .unwrap();
    assert!(table.status.success());
    let table = String::from_utf8(table.stdout).unwrap();
    assert!(table.lines().nth(1) == Some("g"), "{table}");
    assert_eq!(table.lines().count(), 5, "{table}");

    // A client that writes garbage into its request ring is dropped; nobody else notices.
    let (mut rogue, _) = totemcast::ipc::connection::connect(&socket(&cluster, 0), "cpg").unwrap();
    let wake = rogue.tx.push(999, b"garbage").unwrap().unwrap();
    if wake {
        rogue.wake_peer();
    }
    let deadline = Instant::now() + WITHIN;
    while cluster.status(0).unwrap()["counters"]["clients"]["disconnected_bad"] != 1 {
        assert!(
            Instant::now() < deadline,
            "the rogue client was not dropped"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut byte = [0u8; 1];
    assert_eq!(
        std::io::Read::read(&mut &rogue.stream, &mut byte).unwrap(),
        0,
        "the node closed the rogue's socket"
    );

    // Every handle sends; every handle delivers all of it in one order.
    for round in 0..100u32 {
        for (i, handle) in handles.iter_mut().enumerate() {
            let guarantee = if round % 3 == 0 {
                Guarantee::Safe
            } else {
                Guarantee::Agreed
            };
            let text = format!("{i}:{round}");
            handle
                .mcast_joined(guarantee, &[text.as_bytes(), b"!"])
                .unwrap();
        }
    }
    for i in 0..3 {
        collect(&mut handles[i], &mut events[i], |e| {
            deliveries(e).len() == 300
        });
    }
    let order = deliveries(&events[0]);
    assert_eq!(deliveries(&events[1]), order);
    assert_eq!(deliveries(&events[2]), order);
    for i in 0..3u32 {
        let own: Vec<&Vec<u8>> = order
            .iter()
            .filter(|d| d.0 == i + 1)
            .map(|d| &d.1)
            .collect();
        let expected: Vec<Vec<u8>> = (0..100).map(|r| format!("{i}:{r}!").into_bytes()).collect();
        assert_eq!(
            own,
            expected.iter().collect::<Vec<_>>(),
            "sender order of node {}",
            i + 1
        );
    }

    // A leave completes, the handle can join again.
    handles[1].leave("g").unwrap();
    collect(&mut handles[1], &mut events[1], |e| {
        e.iter().any(|e| matches!(e, Event::ConfChg { left, .. } if left.len() == 1 && left[0].reason == Reason::Leave))
    });
    assert_eq!(
        handles[1]
            .mcast_joined(Guarantee::Agreed, &[b"x"])
            .unwrap_err()
            .code(),
        CsError::NotExist
    );
    handles[1].join("g").unwrap();
    collect(&mut handles[0], &mut events[0], |e| {
        e.iter()
            .filter(|e| matches!(e, Event::ConfChg { members, .. } if members.len() == 3))
            .count()
            >= 2
    });

    // A closed handle leaves with PROCDOWN.
    let closed = handles.remove(1);
    events.remove(1);
    drop(closed);
    collect(&mut handles[0], &mut events[0], |e| {
        e.iter().any(|e| matches!(e, Event::ConfChg { left, .. } if left.first().is_some_and(|a| a.reason == Reason::ProcDown)))
    });

    // A killed node: NODEDOWN, then the totem confchg of the new ring.
    cluster.kill(2);
    collect(&mut handles[0], &mut events[0], |e| {
        e.iter()
            .any(|e| matches!(e, Event::TotemConfChg { nodes, .. } if nodes.len() == 2))
    });
    let down = events[0]
        .iter()
        .position(|e| matches!(e, Event::ConfChg { left, .. } if left.first().is_some_and(|a| a.reason == Reason::NodeDown && a.nodeid == NodeId(3))))
        .expect("a NODEDOWN confchg");
    let totem = events[0]
        .iter()
        .rposition(|e| matches!(e, Event::TotemConfChg { nodes, .. } if nodes.len() == 2))
        .unwrap();
    assert!(down < totem, "NODEDOWN comes before the totem confchg");
    assert_eq!(
        handles[0].membership_get("g").unwrap(),
        vec![(NodeId(1), pid)]
    );
}

/// Regression: a message sent right after `join` returned could reach the core before the
/// join (the node served the next request before routing the join), so it was delivered to
/// nobody. Every round here joins, sends at once and must get its own message.
#[test]
fn a_message_sent_right_after_join_is_delivered() {
    for nodes in [1usize, 2] {
        let mut cluster = NodeCluster::new(
            &format!("cpg-join-send-{nodes}"),
            nodes,
            Timers::default(),
            0,
            "",
        );
        cluster.start_all();
        cluster.wait_for_ring(&(0..nodes).collect::<Vec<_>>(), WITHIN);
        let mut handle = Handle::connect(socket(&cluster, 0)).unwrap();
        for round in 0..20u32 {
            let guarantee = if round % 2 == 0 {
                Guarantee::Agreed
            } else {
                Guarantee::Safe
            };
            handle.join("g").unwrap();
            handle
                .mcast_joined(guarantee, &[&round.to_le_bytes()])
                .unwrap();
            let mut events = Vec::new();
            collect(&mut handle, &mut events, |e| !deliveries(e).is_empty());
            assert_eq!(
                deliveries(&events),
                vec![(1, round.to_le_bytes().to_vec())],
                "{nodes} nodes, round {round}"
            );
            handle.leave("g").unwrap();
            collect(&mut handle, &mut events, |e| {
                e.iter()
                    .any(|e| matches!(e, Event::ConfChg { left, .. } if !left.is_empty()))
            });
        }
    }
}
