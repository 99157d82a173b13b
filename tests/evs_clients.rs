//! EVS clients (`totemcast::evs::Handle`) on real node processes: group keys as a receive
//! filter, `mcast_groups` to groups the sender did not join, one order at every receiver, and
//! node-level configurations (transitional, then regular) with their ring ids when a node dies.

mod clients;
mod node_harness;

use clients::{WITHIN, collect, payloads};
use node_harness::{NodeCluster, Timers};
use totemcast::api::Guarantee;
use totemcast::error::CsError;
use totemcast::evs::{ConfigurationKind, Event, Handle};
use totemcast::ids::NodeId;

fn socket(cluster: &NodeCluster, index: usize) -> std::path::PathBuf {
    cluster.dir.join(format!("node-{}.sock", index + 1))
}

#[test]
fn keys_filter_deliveries_and_configurations_carry_ring_ids() {
    let mut cluster = NodeCluster::new("evs", 3, Timers::default(), 0, "");
    cluster.start_all();
    cluster.wait_for_ring(&[0, 1, 2], WITHIN);
    let mut handles: Vec<Handle> = (0..3)
        .map(|i| Handle::connect(socket(&cluster, i)).unwrap())
        .collect();
    let mut events: Vec<Vec<Event>> = vec![Vec::new(); 3];
    handles[0].join(&[b"red".as_slice()]).unwrap();
    handles[1].join(&[b"red".as_slice(), b"blue"]).unwrap();
    handles[2].join(&[b"blue"]).unwrap();
    assert_eq!(
        handles[0]
            .join(&vec![b"k".as_slice(); 51])
            .unwrap_err()
            .code(),
        CsError::TooManyGroups
    );
    let (me, nodes) = handles[2].membership_get().unwrap();
    assert_eq!(me, NodeId(3));
    assert_eq!(nodes, vec![NodeId(1), NodeId(2), NodeId(3)]);

    // Node 3's handle sends to "red" without having joined it, node 1's to its own group.
    for i in 0..50u32 {
        handles[2]
            .mcast_groups(Guarantee::Agreed, &[b"red"], &[format!("r{i}").as_bytes()])
            .unwrap();
        handles[0]
            .mcast_joined(Guarantee::Safe, &[format!("j{i}").as_bytes()])
            .unwrap();
        handles[2]
            .mcast_joined(Guarantee::Agreed, &[format!("b{i}").as_bytes()])
            .unwrap();
    }
    collect(&mut handles[0], &mut events[0], |e| {
        payloads(e).len() == 100
    });
    collect(&mut handles[1], &mut events[1], |e| {
        payloads(e).len() == 150
    });
    collect(&mut handles[2], &mut events[2], |e| payloads(e).len() == 50);
    let red: Vec<Vec<u8>> = payloads(&events[1])
        .into_iter()
        .filter(|p| p[0] != b'b')
        .collect();
    assert_eq!(payloads(&events[0]), red, "one order for the red messages");
    assert!(payloads(&events[2]).iter().all(|p| p[0] == b'b'));
    let blue: Vec<Vec<u8>> = payloads(&events[1])
        .into_iter()
        .filter(|p| p[0] == b'b')
        .collect();
    assert_eq!(payloads(&events[2]), blue);

    // A node dies: a transitional, then a regular configuration, with ring ids.
    cluster.kill(2);
    collect(&mut handles[0], &mut events[0], |e| {
        e.iter().any(|e| {
            matches!(e, Event::ConfChg { kind: ConfigurationKind::Regular, members, .. }
                if members.len() == 2)
        })
    });
    let confchgs: Vec<&Event> = events[0]
        .iter()
        .filter(|e| matches!(e, Event::ConfChg { .. }))
        .collect();
    let [.., transitional, regular] = confchgs[..] else {
        panic!("{confchgs:#?}");
    };
    let (
        Event::ConfChg {
            kind: ConfigurationKind::Transitional,
            ring: next,
            old_ring,
            left,
            ..
        },
        Event::ConfChg {
            kind: ConfigurationKind::Regular,
            ring,
            members,
            ..
        },
    ) = (transitional, regular)
    else {
        panic!("{confchgs:#?}");
    };
    assert_eq!(left, &vec![NodeId(3)]);
    assert_eq!(members, &vec![NodeId(1), NodeId(2)]);
    assert_eq!(next, ring);
    assert!(ring.seq > old_ring.seq, "{ring:?} after {old_ring:?}");
    assert_eq!(
        handles[1].membership_get().unwrap().1,
        vec![NodeId(1), NodeId(2)]
    );
}
