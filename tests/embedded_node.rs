//! Embedded nodes (`totemcast::Node`): two nodes on threads of this process form a ring; their
//! local CPG and EVS handles (socket pairs, no filesystem socket) and a client through the
//! node's socket all see one order; stopping a node is a clean leave; configuration errors
//! come back from `Node::start`.

mod clients;
mod node_harness;

use std::fmt::Write as _;
use std::path::Path;

use clients::{collect, payloads};
use totemcast::Node;
use totemcast::api::{DispatchFlags, Guarantee};
use totemcast::cpg::{Event, Handle};
use totemcast::error::CsError;
use totemcast::ids::NodeId;

fn config(dir: &Path, addrs: &[String], index: usize) -> String {
    let mut nodes = String::new();
    for (i, addr) in addrs.iter().enumerate() {
        writeln!(nodes, "[[node]]\nnodeid = {}\naddr = \"{addr}\"", i + 1).unwrap();
    }
    format!(
        "[totem]\ncluster_name = \"embedded\"\ntoken = 600\nconsensus = 720\n\
         [crypto]\ncipher = \"none\"\n[ipc]\nsocket = \"{}\"\n[system]\nstate_dir = \"{}\"\n{nodes}",
        dir.join(format!("node-{}.sock", index + 1)).display(),
        dir.join(format!("state-{}", index + 1)).display(),
    )
}

#[test]
fn two_embedded_nodes_serve_local_handles_and_socket_clients() {
    let dir = std::env::temp_dir().join(format!("totemcast-embedded-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let addrs: Vec<String> = (0..2).map(|_| node_harness::free_loopback_addr()).collect();
    let one = Node::from_toml(&config(&dir, &addrs, 0), Some(1)).unwrap();
    let two = Node::from_toml(&config(&dir, &addrs, 1), Some(2)).unwrap();
    assert_eq!((one.nodeid(), two.nodeid()), (NodeId(1), NodeId(2)));

    // A second node on the same address is refused at start, with the reason.
    let error = Node::from_toml(&config(&dir, &addrs, 0), Some(1)).unwrap_err();
    assert_eq!(error.code(), CsError::Library);
    assert!(error.to_string().contains("in use"), "{error}");
    let error = Node::from_toml("[totem]\ntokn = 5\n", None).unwrap_err();
    assert_eq!(error.code(), CsError::InvalidParam);
    assert!(error.to_string().contains("tokn"), "{error}");

    let mut local_one = one.cpg().unwrap();
    let mut local_two = two.cpg().unwrap();
    let mut events = [Vec::new(), Vec::new()];
    for (i, handle) in [&mut local_one, &mut local_two].into_iter().enumerate() {
        handle.join("embedded").unwrap();
        collect(handle, &mut events[i], |e| {
            e.iter()
                .any(|e| matches!(e, Event::ConfChg { members, .. } if members.len() == i + 1))
        });
    }
    assert_eq!(local_two.local_get().unwrap(), NodeId(2));
    for round in 0..200u32 {
        let handle = if round % 2 == 0 {
            &mut local_one
        } else {
            &mut local_two
        };
        handle
            .mcast_joined(Guarantee::Agreed, &[&round.to_le_bytes()])
            .unwrap();
    }
    for (i, handle) in [&mut local_one, &mut local_two].into_iter().enumerate() {
        collect(handle, &mut events[i], |e| payloads(e).len() == 200);
    }
    assert_eq!(payloads(&events[0]), payloads(&events[1]));

    // A client through the node's socket (one process is in a group once per node: this
    // one uses another group).
    let mut remote = Handle::connect(one.socket()).unwrap();
    let mut remote_events = Vec::new();
    remote.join("remote").unwrap();
    remote
        .mcast_joined(Guarantee::Safe, &[b"through the socket"])
        .unwrap();
    collect(&mut remote, &mut remote_events, |e| payloads(e).len() == 1);
    assert_eq!(
        payloads(&remote_events),
        vec![b"through the socket".to_vec()]
    );

    // EVS through the embedded node too.
    let mut evs = two.evs().unwrap();
    evs.join(&[b"k"]).unwrap();
    assert_eq!(evs.membership_get().unwrap().0, NodeId(2));

    // Stopping a node is a clean leave: the other moves on to a ring of one at once.
    two.stop().unwrap();
    collect(&mut local_one, &mut events[0], |e| {
        e.iter()
            .any(|e| matches!(e, Event::TotemConfChg { nodes, .. } if nodes == &[NodeId(1)]))
    });
    let status = one.status().unwrap();
    assert_eq!(status["members"], serde_json::json!([1]));
    assert_eq!(status["counters"]["protocol"]["token_losses"], 0);
    drop(one);
    // Its handles now find the node gone.
    assert_eq!(
        local_one
            .dispatch(DispatchFlags::Blocking, |_| {})
            .unwrap_err()
            .code(),
        CsError::Library
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
