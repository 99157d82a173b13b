//! The CPG service on a scripted totem stream: several nodes' services, a bus that delivers every
//! multicast of a ring to all its members in one order, and configuration changes.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::service::{Address, ClientEvent, ConnId, ConnState, Output, Service};
use crate::api::{Guarantee, Reason};
use crate::error::CsError;
use crate::ids::{NodeId, RingId};
use crate::totem::{Configuration, ConfigurationKind};

struct Bus {
    services: Vec<Service>,
    /// The ring each node is in (node ids, sorted), by node index.
    rings: Vec<Vec<NodeId>>,
    ring_ids: Vec<RingId>,
    /// Multicasts not yet delivered: (sender index, payload).
    queue: Vec<(usize, Bytes)>,
    /// Events per (node index, conn).
    events: BTreeMap<(usize, ConnId), Vec<ClientEvent>>,
    seq: u64,
}

fn id(index: usize) -> NodeId {
    NodeId(index as u32 + 1)
}

impl Bus {
    fn new(nodes: usize) -> Bus {
        let mut bus = Bus {
            services: (0..nodes).map(|i| Service::new(id(i))).collect(),
            rings: vec![Vec::new(); nodes],
            ring_ids: vec![RingId::default(); nodes],
            queue: Vec::new(),
            events: BTreeMap::new(),
            seq: 4,
        };
        bus.configure(&[(0..nodes).collect()]);
        bus
    }

    /// New rings: each group of node indices forms one.
    fn configure(&mut self, groups: &[Vec<usize>]) {
        self.settle();
        for group in groups {
            self.seq += 4;
            let members: Vec<NodeId> = group.iter().map(|&i| id(i)).collect();
            let ring = RingId::new(members[0], self.seq);
            for &i in group {
                let old = std::mem::take(&mut self.rings[i]);
                if !old.is_empty() {
                    let kept: Vec<NodeId> = old
                        .iter()
                        .filter(|n| members.contains(n))
                        .copied()
                        .collect();
                    let left = old
                        .iter()
                        .filter(|n| !members.contains(n))
                        .copied()
                        .collect();
                    self.services[i].on_configuration(&Configuration {
                        kind: ConfigurationKind::Transitional,
                        ring,
                        old_ring: self.ring_ids[i],
                        members: kept,
                        left,
                        joined: Vec::new(),
                    });
                }
                self.services[i].on_configuration(&Configuration {
                    kind: ConfigurationKind::Regular,
                    ring,
                    old_ring: ring,
                    members: members.clone(),
                    left: Vec::new(),
                    joined: members.clone(),
                });
                self.rings[i] = members.clone();
                self.ring_ids[i] = ring;
            }
        }
        self.settle();
    }

    /// Moves outputs to the queue and delivers until nothing is left.
    fn settle(&mut self) {
        loop {
            for i in 0..self.services.len() {
                while let Some(output) = self.services[i].poll_output() {
                    match output {
                        Output::Multicast { payload, .. } => self.queue.push((i, payload)),
                        Output::Event { conn, event } => {
                            self.events.entry((i, conn)).or_default().push(event);
                        }
                    }
                }
            }
            if self.queue.is_empty() {
                return;
            }
            for (sender, payload) in std::mem::take(&mut self.queue) {
                let ring = self.rings[sender].clone();
                for (i, service) in self.services.iter_mut().enumerate() {
                    if ring.contains(&id(i)) && self.rings[i] == ring {
                        service.on_deliver(id(sender), &payload);
                    }
                }
            }
        }
    }

    fn take(&mut self, node: usize, conn: ConnId) -> Vec<ClientEvent> {
        self.events.remove(&(node, conn)).unwrap_or_default()
    }

    fn mcast(&mut self, node: usize, conn: ConnId, text: &str) {
        let payload = self.services[node].mcast(conn, text.as_bytes()).unwrap();
        self.queue.push((node, payload));
        self.settle();
    }
}

fn addr(node: u32, pid: u32, reason: Reason) -> Address {
    Address {
        nodeid: NodeId(node),
        pid,
        reason,
    }
}

fn confchg(members: &[(u32, u32)], left: &[Address], joined: &[Address]) -> ClientEvent {
    ClientEvent::ConfChg {
        group: Bytes::from_static(b"g"),
        members: members
            .iter()
            .map(|&(n, p)| addr(n, p, Reason::Undefined))
            .collect(),
        left: left.to_vec(),
        joined: joined.to_vec(),
    }
}

fn deliver(node: u32, pid: u32, text: &'static str) -> ClientEvent {
    ClientEvent::Deliver {
        group: Bytes::from_static(b"g"),
        nodeid: NodeId(node),
        pid,
        payload: Bytes::from_static(text.as_bytes()),
    }
}

fn only_confchgs_and_deliveries(events: Vec<ClientEvent>) -> Vec<ClientEvent> {
    events
        .into_iter()
        .filter(|e| !matches!(e, ClientEvent::TotemConfChg { .. }))
        .collect()
}

#[test]
fn joins_are_seen_first_by_the_joiner_and_messages_by_every_member() {
    let mut bus = Bus::new(2);
    bus.services[0].connect(1, 100, true);
    bus.services[1].connect(1, 200, false);
    bus.take(0, 1);
    bus.take(1, 1);
    bus.services[0].join(1, b"g").unwrap();
    assert_eq!(bus.services[0].state(1), Some(ConnState::JoinStarted));
    bus.settle();
    assert_eq!(bus.services[0].state(1), Some(ConnState::Joined));
    let events = bus.take(0, 1);
    assert_eq!(
        events[0],
        confchg(&[(1, 100)], &[], &[addr(1, 100, Reason::Join)])
    );
    assert!(
        matches!(&events[1], ClientEvent::TotemConfChg { nodes, .. } if nodes.len() == 2),
        "the initial totem confchg follows the first confchg: {events:?}"
    );
    bus.services[1].join(1, b"g").unwrap();
    bus.settle();
    let both = [(1, 100), (2, 200)];
    let joined = [addr(2, 200, Reason::Join)];
    assert_eq!(bus.take(1, 1), vec![confchg(&both, &[], &joined)]);
    assert_eq!(bus.take(0, 1), vec![confchg(&both, &[], &joined)]);
    bus.mcast(0, 1, "hello");
    bus.mcast(1, 1, "");
    let expected = vec![deliver(1, 100, "hello"), deliver(2, 200, "")];
    assert_eq!(
        bus.take(0, 1),
        expected,
        "self-delivery, zero-length messages"
    );
    assert_eq!(bus.take(1, 1), expected);
    assert_eq!(
        bus.services[0].membership(b"g"),
        vec![(NodeId(1), 100), (NodeId(2), 200)]
    );
}

#[test]
fn api_errors_follow_corosync_and_fix_its_leave() {
    let mut bus = Bus::new(1);
    let s = &mut bus.services[0];
    s.connect(1, 100, false);
    s.connect(2, 100, false);
    let code = |r: crate::Result<()>| r.unwrap_err().code();
    assert_eq!(code(s.join(1, b"")), CsError::InvalidParam);
    assert_eq!(code(s.join(1, &[b'x'; 129])), CsError::NameTooLong);
    assert!(s.join(1, &[b'x'; 128]).is_ok());
    assert_eq!(
        code(s.join(1, b"g")),
        CsError::Exist,
        "one group per handle"
    );
    assert_eq!(
        code(s.leave(1, &[b'x'; 128])),
        CsError::Busy,
        "join in flight"
    );
    assert_eq!(
        code(s.join(2, &[b'x'; 128])),
        CsError::Exist,
        "one membership per pid"
    );
    assert_eq!(s.mcast(2, &[]).unwrap_err().code(), CsError::NotExist);
    assert_eq!(code(s.leave(2, b"g")), CsError::NotExist);
    assert_eq!(code(s.join(9, b"g")), CsError::BadHandle);
    bus.settle();
    let s = &mut bus.services[0];
    assert_eq!(code(s.leave(1, b"other")), CsError::NotExist);
    s.leave(1, &[b'x'; 128]).unwrap();
    assert_eq!(code(s.leave(1, &[b'x'; 128])), CsError::NotExist);
    assert_eq!(code(s.join(1, b"g")), CsError::Busy, "leave in flight");
    bus.settle();
    // The leaver saw its own leave; the handle can join again (Corosync 3.x cannot).
    let events = only_confchgs_and_deliveries(bus.take(0, 1));
    assert!(
        matches!(events.last(), Some(ClientEvent::ConfChg { left, members, .. })
        if left == &[addr(1, 100, Reason::Leave)] && members.is_empty())
    );
    assert_eq!(bus.services[0].state(1), Some(ConnState::Unjoined));
    bus.services[0].join(1, b"g").unwrap();
    bus.settle();
    assert_eq!(bus.services[0].membership(b"g"), vec![(NodeId(1), 100)]);
}

#[test]
fn a_closed_connection_leaves_with_procdown_even_mid_join() {
    let mut bus = Bus::new(2);
    bus.services[0].connect(1, 100, false);
    bus.services[1].connect(1, 200, false);
    bus.services[1].join(1, b"g").unwrap();
    bus.settle();
    bus.services[0].join(1, b"g").unwrap();
    // Gone before its join was delivered: no ghost member afterwards.
    bus.services[0].disconnect(1);
    bus.take(1, 1);
    bus.settle();
    let events = bus.take(1, 1);
    assert_eq!(
        events,
        vec![
            confchg(&[(1, 100), (2, 200)], &[], &[addr(1, 100, Reason::Join)]),
            confchg(&[(2, 200)], &[addr(1, 100, Reason::ProcDown)], &[]),
        ]
    );
    for s in &bus.services {
        assert_eq!(s.membership(b"g"), vec![(NodeId(2), 200)]);
    }
}

#[test]
fn node_failure_gives_nodedown_then_the_totem_confchg_and_a_merge_gives_nodeup() {
    let mut bus = Bus::new(3);
    for i in 0..3 {
        bus.services[i].connect(1, 10 * (i as u32 + 1), false);
        bus.services[i].join(1, b"g").unwrap();
    }
    bus.settle();
    for i in 0..3 {
        bus.take(i, 1);
    }
    // Node 3 fails: 1 and 2 form a ring.
    bus.configure(&[vec![0, 1], vec![2]]);
    let events = bus.take(0, 1);
    assert_eq!(
        events[0],
        confchg(&[(1, 10), (2, 20)], &[addr(3, 30, Reason::NodeDown)], &[])
    );
    assert!(matches!(&events[1], ClientEvent::TotemConfChg { nodes, .. }
        if nodes == &[NodeId(1), NodeId(2)]));
    assert_eq!(events.len(), 2);
    let alone = bus.take(2, 1);
    assert_eq!(
        alone[0],
        confchg(
            &[(3, 30)],
            &[addr(1, 10, Reason::NodeDown), addr(2, 20, Reason::NodeDown)],
            &[]
        )
    );
    // Meanwhile node 1's process leaves and node 3's process sends.
    bus.services[0].leave(1, b"g").unwrap();
    bus.settle();
    bus.mcast(2, 1, "alone");
    bus.take(0, 1);
    bus.take(1, 1);
    bus.take(2, 1);
    // Merge: each side sees the other's members arrive with NODEUP, and nobody else.
    bus.configure(&[vec![0, 1, 2]]);
    let merged = [(2, 20), (3, 30)];
    assert_eq!(
        only_confchgs_and_deliveries(bus.take(1, 1)),
        vec![confchg(&merged, &[], &[addr(3, 30, Reason::NodeUp)])]
    );
    assert_eq!(
        only_confchgs_and_deliveries(bus.take(2, 1)),
        vec![confchg(&merged, &[], &[addr(2, 20, Reason::NodeUp)])]
    );
    assert!(
        only_confchgs_and_deliveries(bus.take(0, 1)).is_empty(),
        "node 1's handle left"
    );
    for s in &bus.services {
        assert_eq!(s.membership(b"g"), vec![(NodeId(2), 20), (NodeId(3), 30)]);
    }
}

#[test]
fn messages_during_a_sync_are_applied_after_it_in_one_order() {
    let mut bus = Bus::new(2);
    for i in 0..2 {
        bus.services[i].connect(1, 1, false);
        bus.services[i].join(1, b"g").unwrap();
    }
    bus.settle();
    bus.take(0, 1);
    bus.take(1, 1);
    // A new ring: node 2's message is ordered before node 1's joinlist.
    let payload = bus.services[1].mcast(1, b"early").unwrap();
    bus.seq += 4;
    let ring = RingId::new(NodeId(1), bus.seq);
    let members = vec![NodeId(1), NodeId(2)];
    for i in 0..2 {
        for kind in [ConfigurationKind::Transitional, ConfigurationKind::Regular] {
            bus.services[i].on_configuration(&Configuration {
                kind,
                ring,
                old_ring: bus.ring_ids[i],
                members: members.clone(),
                left: Vec::new(),
                joined: Vec::new(),
            });
        }
        bus.ring_ids[i] = ring;
    }
    for i in 0..2 {
        bus.services[i].on_deliver(NodeId(2), &payload);
        assert!(bus.services[i].syncing());
    }
    bus.settle();
    for i in 0..2 {
        let events = bus.take(i, 1);
        assert!(
            matches!(events[0], ClientEvent::TotemConfChg { .. }),
            "{events:?}"
        );
        assert_eq!(events[1], deliver(2, 1, "early"));
    }
}

/// Corosync PR #828's shape: a sync cut short by the next ring. Node 2, cut off, forms a ring
/// alone; its process dies during the change, so the PROCDOWN is ordered in that ring before
/// node 2's joinlist and held by the sync — and a merge starts before the joinlist arrives.
/// Node 2's joinlist for the merged ring must already reflect the leave: otherwise the others
/// take the dead process back (NODEUP) while node 2 drops it afterwards, a ghost for good.
#[test]
fn a_sync_cut_short_by_the_next_ring_leaves_no_ghost() {
    let mut bus = Bus::new(3);
    bus.services[0].connect(1, 100, false);
    bus.services[0].join(1, b"g").unwrap();
    bus.services[1].connect(1, 200, false);
    bus.services[1].join(1, b"g").unwrap();
    bus.settle();
    bus.configure(&[vec![0, 2]]);
    assert_eq!(bus.services[0].membership(b"g"), vec![(NodeId(1), 100)]);

    let config = |service: &mut Service, kind, ring, old_ring, members: &[u32]| {
        service.on_configuration(&Configuration {
            kind,
            ring,
            old_ring,
            members: members.iter().map(|&n| NodeId(n)).collect(),
            left: Vec::new(),
            joined: Vec::new(),
        });
    };
    let drain = |service: &mut Service| {
        let mut multicasts = Vec::new();
        while let Some(output) = service.poll_output() {
            if let Output::Multicast { payload, .. } = output {
                multicasts.push(payload);
            }
        }
        multicasts
    };
    bus.services[1].disconnect(1);
    let leave = drain(&mut bus.services[1]);
    assert_eq!(leave.len(), 1, "the PROCDOWN leave");
    bus.seq += 4;
    let alone = RingId::new(NodeId(2), bus.seq);
    let before = bus.ring_ids[1];
    config(
        &mut bus.services[1],
        ConfigurationKind::Transitional,
        alone,
        before,
        &[2],
    );
    config(
        &mut bus.services[1],
        ConfigurationKind::Regular,
        alone,
        alone,
        &[2],
    );
    let joinlist = drain(&mut bus.services[1]);
    assert_eq!(
        joinlist.len(),
        1,
        "the joinlist of the lone ring (never delivered)"
    );
    bus.services[1].on_deliver(NodeId(2), &leave[0]);
    assert!(bus.services[1].syncing());
    assert_eq!(bus.services[1].held(), 1);
    bus.ring_ids[1] = alone;

    bus.seq += 4;
    let all = RingId::new(NodeId(1), bus.seq);
    for i in 0..3 {
        let kept: &[u32] = if i == 1 { &[2] } else { &[1, 3] };
        let old = bus.ring_ids[i];
        config(
            &mut bus.services[i],
            ConfigurationKind::Transitional,
            all,
            old,
            kept,
        );
        config(
            &mut bus.services[i],
            ConfigurationKind::Regular,
            all,
            all,
            &[1, 2, 3],
        );
        bus.rings[i] = vec![NodeId(1), NodeId(2), NodeId(3)];
        bus.ring_ids[i] = all;
    }
    bus.settle();
    for (i, service) in bus.services.iter().enumerate() {
        assert!(!service.syncing());
        assert_eq!(
            service.membership(b"g"),
            vec![(NodeId(1), 100)],
            "node {}: the dead process must be gone",
            i + 1
        );
    }
    let events = only_confchgs_and_deliveries(bus.take(0, 1));
    assert!(
        matches!(events.last(), Some(ClientEvent::ConfChg { members, .. })
            if members == &[addr(1, 100, Reason::Undefined)]),
        "node 1's member sees itself alone last: {events:?}"
    );
}

#[test]
fn cpg_messages_that_do_not_decode_are_counted() {
    let mut service = Service::new(NodeId(1));
    service.on_deliver(NodeId(2), &Bytes::from_static(&[1, 99]));
    assert_eq!(service.malformed(), 1);
    let _ = Guarantee::Agreed;
}

/// Random joins, leaves, messages, closed connections and partitions: after every sync, each
/// node's membership of every group is exactly the processes joined on the nodes of its ring —
/// no ghosts, nobody missing — and after healing every node agrees.
#[test]
fn random_churn_and_partitions_never_leave_ghosts() {
    use crate::prng::Prng;
    const NODES: usize = 4;
    const GROUPS: [&[u8]; 2] = [b"a", b"b"];
    for seed in 0..40 {
        let mut prng = Prng::from_seed(seed);
        let mut bus = Bus::new(NODES);
        // (node, conn, pid) of every open connection.
        let mut conns: Vec<(usize, ConnId, u32)> = Vec::new();
        let mut next_conn = 1;
        for node in 0..NODES {
            for _ in 0..2 {
                let pid = 100 * (node as u32 + 1) + next_conn as u32;
                bus.services[node].connect(next_conn, pid, false);
                conns.push((node, next_conn, pid));
                next_conn += 1;
            }
        }
        for _ in 0..120 {
            let (node, conn, pid) = conns[prng.below(conns.len() as u64) as usize];
            let group = GROUPS[prng.below(2) as usize];
            match prng.below(10) {
                0..=2 => {
                    let _ = bus.services[node].join(conn, group);
                }
                3 | 4 => {
                    let _ = bus.services[node].leave(conn, group);
                }
                5 | 6 => {
                    if let Ok(payload) = bus.services[node].mcast(conn, b"m") {
                        bus.queue.push((node, payload));
                    }
                }
                7 => {
                    // The process dies and a new one of the same pid connects.
                    bus.services[node].disconnect(conn);
                    conns.retain(|c| c.1 != conn);
                    bus.services[node].connect(next_conn, pid, false);
                    conns.push((node, next_conn, pid));
                    next_conn += 1;
                }
                8 => {
                    let mut order: Vec<usize> = (0..NODES).collect();
                    prng.shuffle(&mut order);
                    let cut = 1 + prng.below(NODES as u64 - 1) as usize;
                    let (left, right) = order.split_at(cut);
                    let mut groups = vec![left.to_vec(), right.to_vec()];
                    for g in &mut groups {
                        g.sort_unstable();
                    }
                    bus.configure(&groups);
                    check_membership(&bus, &conns, &GROUPS, seed);
                }
                _ => {
                    bus.configure(&[(0..NODES).collect()]);
                    check_membership(&bus, &conns, &GROUPS, seed);
                }
            }
            bus.settle();
        }
        bus.configure(&[(0..NODES).collect()]);
        check_membership(&bus, &conns, &GROUPS, seed);
        for group in GROUPS {
            let first = bus.services[0].membership(group);
            for service in &bus.services {
                assert_eq!(service.membership(group), first, "seed {seed}");
            }
        }
    }
}

/// Each node's view of each group equals the processes joined on the nodes of its ring.
fn check_membership(bus: &Bus, conns: &[(usize, ConnId, u32)], groups: &[&[u8]], seed: u64) {
    for (i, service) in bus.services.iter().enumerate() {
        for &group in groups {
            let mut expected: Vec<(NodeId, u32)> = conns
                .iter()
                .filter(|&&(node, conn, _)| {
                    bus.rings[i].contains(&id(node))
                        && bus.services[node].state(conn) == Some(ConnState::Joined)
                        && bus.services[node].joined_group(conn) == Some(group)
                })
                .map(|&(node, _, pid)| (id(node), pid))
                .collect();
            expected.sort_unstable();
            assert_eq!(
                service.membership(group),
                expected,
                "seed {seed}: node {} group {:?}",
                i + 1,
                String::from_utf8_lossy(group)
            );
        }
    }
}
