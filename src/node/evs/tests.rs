//! The EVS service on a scripted totem stream: several nodes' services, a bus that delivers every
//! multicast of a ring to all its members in one order, and configuration changes.

use std::collections::{BTreeMap, BTreeSet};

use bytes::{Bytes, BytesMut};

use super::records::{self, Request};
use super::service::{ConnId, Event, Output, Service};
use super::sessions::{Served, Sessions};
use super::wire::{GROUPS_JOINED_MAX, Key};
use crate::api::{EVS_GROUPS_PER_CALL_MAX, Guarantee};
use crate::error::{CsError, Error};
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
    events: BTreeMap<(usize, ConnId), Vec<Event>>,
    seq: u64,
}

fn id(index: usize) -> NodeId {
    NodeId(index as u32 + 1)
}

fn key(name: &str) -> Key {
    Key::new(name.as_bytes()).unwrap()
}

fn keys(names: &[&str]) -> Vec<Key> {
    names.iter().map(|name| key(name)).collect()
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

    /// New rings: each group of node indices forms one. Nodes that were in a ring get the
    /// transitional configuration (the old ring's members that come along), then the regular.
    fn configure(&mut self, groups: &[Vec<usize>]) {
        self.settle();
        for group in groups {
            self.seq += 4;
            let members: Vec<NodeId> = group.iter().map(|&i| id(i)).collect();
            let ring = RingId::new(members[0], self.seq);
            for &i in group {
                let old = std::mem::take(&mut self.rings[i]);
                let mut joined = members.clone();
                if !old.is_empty() {
                    let (kept, left): (Vec<NodeId>, Vec<NodeId>) =
                        old.iter().partition(|n| members.contains(n));
                    joined.retain(|n| !kept.contains(n));
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
                    joined,
                });
                self.rings[i] = members.clone();
                self.ring_ids[i] = ring;
            }
        }
        self.settle();
    }

    /// Delivers the queue in order to each sender's ring, then collects the outputs.
    fn settle(&mut self) {
        for (sender, payload) in std::mem::take(&mut self.queue) {
            let ring = self.rings[sender].clone();
            for (i, service) in self.services.iter_mut().enumerate() {
                if ring.contains(&id(i)) && self.rings[i] == ring {
                    service.on_deliver(id(sender), &payload);
                }
            }
        }
        for i in 0..self.services.len() {
            while let Some(Output { conn, event }) = self.services[i].poll_output() {
                self.events.entry((i, conn)).or_default().push(event);
            }
        }
    }

    fn take(&mut self, node: usize, conn: ConnId) -> Vec<Event> {
        self.events.remove(&(node, conn)).unwrap_or_default()
    }

    fn send(&mut self, node: usize, payload: Bytes) {
        self.queue.push((node, payload));
        self.settle();
    }

    fn mcast_groups(&mut self, node: usize, conn: ConnId, groups: &[&str], text: &str) {
        let payload = self.services[node]
            .mcast_groups(conn, &keys(groups), text.as_bytes())
            .unwrap();
        self.send(node, payload);
    }

    fn mcast_joined(&mut self, node: usize, conn: ConnId, text: &str) {
        let payload = self.services[node]
            .mcast_joined(conn, text.as_bytes())
            .unwrap();
        self.send(node, payload);
    }
}

fn deliver(node: u32, pid: u32, text: &'static str) -> Event {
    Event::Deliver {
        nodeid: NodeId(node),
        pid,
        payload: Bytes::from_static(text.as_bytes()),
    }
}

fn nodes(ids: &[u32]) -> Vec<NodeId> {
    ids.iter().map(|&n| NodeId(n)).collect()
}

fn code<T: std::fmt::Debug>(result: crate::Result<T>) -> CsError {
    result.unwrap_err().code()
}

#[test]
fn a_message_reaches_each_connection_that_joined_one_of_its_groups_once() {
    let mut bus = Bus::new(2);
    // On node 1: joined a; joined b; joined a and b; joined c; joined nothing.
    let filters: [(ConnId, &[&str]); 5] = [
        (1, &["a"]),
        (2, &["b"]),
        (3, &["a", "b"]),
        (4, &["c"]),
        (5, &[]),
    ];
    for (conn, groups) in filters {
        bus.services[0].connect(conn, 100 + conn as u32);
        bus.services[0].join(conn, &keys(groups)).unwrap();
    }
    bus.services[1].connect(1, 200);
    bus.settle();
    for conn in 1..=5 {
        bus.take(0, conn);
    }
    bus.take(1, 1);
    bus.mcast_groups(1, 1, &["a", "b"], "to a and b");
    let message = deliver(2, 200, "to a and b");
    for conn in 1..=3 {
        assert_eq!(bus.take(0, conn), vec![message.clone()], "conn {conn}");
    }
    for conn in 4..=5 {
        assert!(bus.take(0, conn).is_empty(), "conn {conn} joined neither");
    }
    assert!(bus.take(1, 1).is_empty(), "the sender joined neither");
    bus.mcast_groups(1, 1, &["z"], "to nobody here");
    for conn in 1..=5 {
        assert!(bus.take(0, conn).is_empty());
    }
    // The same key twice in one send is one key: still one delivery.
    bus.mcast_groups(1, 1, &["a", "a"], "twice");
    assert_eq!(bus.take(0, 1), vec![deliver(2, 200, "twice")]);
    assert_eq!(bus.services[0].malformed(), 0);
}

#[test]
fn mcast_groups_needs_no_join_and_mcast_joined_goes_to_every_joined_group() {
    let mut bus = Bus::new(2);
    bus.services[0].connect(1, 10);
    bus.services[1].connect(1, 20);
    bus.services[1].connect(2, 21);
    bus.services[1].join(1, &keys(&["a"])).unwrap();
    bus.services[1].join(2, &keys(&["b"])).unwrap();
    bus.settle();
    bus.take(0, 1);
    bus.take(1, 1);
    bus.take(1, 2);
    // Node 1's connection joined nothing and sends to a.
    bus.mcast_groups(0, 1, &["a"], "unjoined sender");
    assert_eq!(bus.take(1, 1), vec![deliver(1, 10, "unjoined sender")]);
    assert!(bus.take(1, 2).is_empty());
    assert!(
        bus.take(0, 1).is_empty(),
        "it did not join a: no self-delivery"
    );
    assert_eq!(
        code(bus.services[0].mcast_joined(1, b"x")),
        CsError::NotExist,
        "mcast_joined with nothing joined (Corosync: OK and lost)"
    );
    // Joined a and b: its mcast_joined reaches both groups and itself (self-delivery), once.
    bus.services[0].join(1, &keys(&["a", "b"])).unwrap();
    bus.mcast_joined(0, 1, "joined sender");
    let message = deliver(1, 10, "joined sender");
    assert_eq!(bus.take(0, 1), vec![message.clone()]);
    assert_eq!(bus.take(1, 1), vec![message.clone()]);
    assert_eq!(bus.take(1, 2), vec![message]);
    assert_eq!(
        code(bus.services[0].mcast_groups(1, &[], b"x")),
        CsError::InvalidParam,
        "a message to no group (Corosync: OK and lost)"
    );
    assert_eq!(
        code(bus.services[0].mcast_joined(9, b"x")),
        CsError::BadHandle
    );
    // Zero-length messages are messages.
    bus.mcast_groups(1, 2, &["b"], "");
    assert_eq!(bus.take(0, 1), vec![deliver(2, 21, "")]);
}

#[test]
fn at_most_fifty_groups_per_call() {
    let mut service = Service::new(NodeId(1));
    service.connect(1, 1);
    let fifty: Vec<Key> = (0..50).map(|i| key(&format!("g{i}"))).collect();
    let fifty_one: Vec<Key> = (0..51).map(|i| key(&format!("h{i}"))).collect();
    assert_eq!(EVS_GROUPS_PER_CALL_MAX, 50);
    let error = service.join(1, &fifty_one).unwrap_err();
    assert_eq!(error.code(), CsError::TooManyGroups);
    assert_eq!(u32::from(error.code()), 30, "CS_ERR_TOO_MANY_GROUPS");
    assert!(service.groups(1).unwrap().is_empty(), "nothing joined");
    service.join(1, &fifty).unwrap();
    // The total is not limited to 50: another call adds 50 more.
    service.join(1, &fifty_one[..50]).unwrap();
    assert_eq!(service.groups(1).unwrap().len(), 100);
    assert_eq!(code(service.leave(1, &fifty_one)), CsError::TooManyGroups);
    assert_eq!(
        code(service.mcast_groups(1, &fifty_one, b"m")),
        CsError::TooManyGroups
    );
    assert!(service.mcast_groups(1, &fifty, b"m").is_ok());
    // mcast_joined carries all 100.
    let payload = service.mcast_joined(1, b"m").unwrap();
    let mcast = super::wire::Mcast::decode(&payload).unwrap();
    assert_eq!(mcast.groups.len(), 100);
    service.leave(1, &fifty).unwrap();
    assert_eq!(service.groups(1).unwrap().len(), 50);
}

#[test]
fn a_connection_joins_at_most_groups_joined_max() {
    let mut service = Service::new(NodeId(1));
    service.connect(1, 1);
    let all: Vec<Key> = (0..GROUPS_JOINED_MAX as u32)
        .map(|i| Key::new(&i.to_le_bytes()).unwrap())
        .collect();
    for chunk in all.chunks(EVS_GROUPS_PER_CALL_MAX) {
        service.join(1, chunk).unwrap();
    }
    // Joining again what is joined is fine; one more is not.
    service.join(1, &all[..10]).unwrap();
    assert_eq!(
        code(service.join(1, &keys(&["more"]))),
        CsError::TooManyGroups
    );
    let payload = service.mcast_joined(1, b"m").unwrap();
    assert_eq!(
        super::wire::Mcast::decode(&payload).unwrap().groups.len(),
        GROUPS_JOINED_MAX
    );
}

#[test]
fn keys_are_zero_padded_to_32_bytes() {
    let padded = {
        let mut bytes = [0u8; 32];
        bytes[0] = b'a';
        bytes
    };
    assert_eq!(key("a"), Key::new(&padded).unwrap());
    assert_eq!(key("a"), Key::from_array(padded));
    assert_eq!(key("a"), Key::new(b"a\0\0\0").unwrap());
    assert_ne!(key("a"), key("ab"));
    assert_ne!(
        Key::new(b"\0a").unwrap(),
        key("a"),
        "only trailing zeros pad"
    );
    assert_eq!(key("a").trimmed(), b"a");
    assert_eq!(Key::new(&[b'k'; 32]).unwrap().as_array(), &[b'k'; 32]);
    assert_eq!(code(Key::new(b"")), CsError::InvalidParam);
    assert_eq!(code(Key::new(&[b'k'; 33])), CsError::NameTooLong);
    assert_eq!(code(Key::list(&["a", ""])), CsError::InvalidParam);
    assert_eq!(
        format!("{:?}", Key::new(b"a\x01").unwrap()),
        "Key(\"a\\x01\")"
    );
    // A connection that joined "a" gets what is sent to "a\0…\0", and leaves it by either name.
    let mut bus = Bus::new(1);
    bus.services[0].connect(1, 1);
    bus.services[0].join(1, &[key("a")]).unwrap();
    bus.services[0]
        .join(1, &[Key::new(&padded).unwrap()])
        .unwrap();
    assert_eq!(bus.services[0].groups(1).unwrap().len(), 1);
    bus.settle();
    bus.take(0, 1);
    let payload = bus.services[0]
        .mcast_groups(1, &[Key::new(&padded).unwrap()], b"m")
        .unwrap();
    bus.send(0, payload);
    assert_eq!(bus.take(0, 1).len(), 1);
    bus.services[0]
        .leave(1, &[Key::new(&padded).unwrap()])
        .unwrap();
    assert!(bus.services[0].groups(1).unwrap().is_empty());
}

#[test]
fn join_is_idempotent_and_a_leave_is_all_or_nothing() {
    let mut service = Service::new(NodeId(1));
    service.connect(1, 1);
    let joined = |s: &Service| -> Vec<Key> { s.groups(1).unwrap().iter().copied().collect() };
    // Nothing to join or leave: OK, nothing changes (as in Corosync).
    service.join(1, &[]).unwrap();
    service.leave(1, &[]).unwrap();
    assert!(joined(&service).is_empty());
    // Duplicates, in one call and across calls, are one key; one leave undoes them.
    service.join(1, &keys(&["a", "a", "b"])).unwrap();
    service.join(1, &keys(&["a"])).unwrap();
    assert_eq!(joined(&service), keys(&["a", "b"]));
    // Leaving a key not joined: NOT_EXIST, and "a" listed before it stays joined.
    assert_eq!(
        code(service.leave(1, &keys(&["a", "c"]))),
        CsError::NotExist
    );
    assert_eq!(joined(&service), keys(&["a", "b"]));
    service.leave(1, &keys(&["a", "a"])).unwrap();
    assert_eq!(joined(&service), keys(&["b"]));
    assert_eq!(code(service.leave(1, &keys(&["a"]))), CsError::NotExist);
    assert_eq!(code(service.join(7, &keys(&["a"]))), CsError::BadHandle);
    assert_eq!(code(service.leave(7, &[])), CsError::BadHandle);
}

#[test]
fn every_connection_gets_transitional_then_regular_configurations_with_ring_ids() {
    let mut bus = Bus::new(3);
    let first = bus.ring_ids[0];
    // A new connection first gets the current view.
    bus.services[0].connect(1, 10);
    bus.services[0].connect(2, 11);
    bus.services[2].connect(1, 30);
    bus.settle();
    let view = Event::ConfChg {
        kind: ConfigurationKind::Regular,
        ring: first,
        old_ring: first,
        members: nodes(&[1, 2, 3]),
        left: Vec::new(),
        joined: Vec::new(),
    };
    assert_eq!(bus.take(0, 1), vec![view.clone()]);
    assert_eq!(bus.take(0, 2), vec![view.clone()]);
    assert_eq!(bus.take(2, 1), vec![view]);
    assert_eq!(bus.services[0].membership(), (NodeId(1), nodes(&[1, 2, 3])));
    // Node 3 goes away: nodes 1 and 2 go through a transitional and a regular configuration.
    bus.configure(&[vec![0, 1], vec![2]]);
    let ring = bus.ring_ids[0];
    assert!(ring.seq > first.seq);
    let expected = vec![
        Event::ConfChg {
            kind: ConfigurationKind::Transitional,
            ring,
            old_ring: first,
            members: nodes(&[1, 2]),
            left: nodes(&[3]),
            joined: Vec::new(),
        },
        Event::ConfChg {
            kind: ConfigurationKind::Regular,
            ring,
            old_ring: ring,
            members: nodes(&[1, 2]),
            left: Vec::new(),
            joined: Vec::new(),
        },
    ];
    assert_eq!(bus.take(0, 1), expected, "joined or not, every connection");
    assert_eq!(bus.take(0, 2), expected);
    assert_eq!(bus.services[0].membership(), (NodeId(1), nodes(&[1, 2])));
    let alone = bus.take(2, 1);
    assert!(matches!(&alone[..], [
        Event::ConfChg { kind: ConfigurationKind::Transitional, members: t, left, .. },
        Event::ConfChg { kind: ConfigurationKind::Regular, members: r, .. },
    ] if t == &nodes(&[3]) && left == &nodes(&[1, 2]) && r == &nodes(&[3])));
    // They merge again: node 3 is in the regular configuration's joined list at nodes 1 and 2.
    bus.configure(&[vec![0, 1, 2]]);
    let merged = bus.ring_ids[0];
    let events = bus.take(0, 1);
    assert_eq!(
        events,
        vec![
            Event::ConfChg {
                kind: ConfigurationKind::Transitional,
                ring: merged,
                old_ring: ring,
                members: nodes(&[1, 2]),
                left: Vec::new(),
                joined: Vec::new(),
            },
            Event::ConfChg {
                kind: ConfigurationKind::Regular,
                ring: merged,
                old_ring: merged,
                members: nodes(&[1, 2, 3]),
                left: Vec::new(),
                joined: nodes(&[3]),
            },
        ]
    );
    // Between the two, membership_get says what the last confchg said.
    let mut service = Service::new(NodeId(5));
    assert_eq!(service.membership(), (NodeId(5), Vec::new()));
    service.connect(1, 1);
    assert_eq!(
        service.poll_output(),
        None,
        "no view before the first configuration"
    );
    service.on_configuration(&Configuration {
        kind: ConfigurationKind::Transitional,
        ring: merged,
        old_ring: ring,
        members: nodes(&[5]),
        left: nodes(&[6]),
        joined: Vec::new(),
    });
    assert_eq!(service.membership(), (NodeId(5), nodes(&[5])));
    service.connect(2, 2);
    let outputs: Vec<Output> = std::iter::from_fn(|| service.poll_output()).collect();
    assert_eq!(outputs.len(), 2);
    assert!(
        matches!(&outputs[1], Output { conn: 2, event: Event::ConfChg {
        kind: ConfigurationKind::Transitional, left, joined, .. } } if left.is_empty() && joined.is_empty())
    );
}

#[test]
fn messages_and_configurations_interleave_in_the_stream_order() {
    let mut bus = Bus::new(2);
    bus.services[0].connect(1, 1);
    bus.services[0].join(1, &keys(&["g"])).unwrap();
    bus.settle();
    bus.take(0, 1);
    let before = bus.services[1].mcast_groups_for_test("before");
    let after = bus.services[1].mcast_groups_for_test("after");
    bus.queue.push((1, before));
    bus.configure(&[vec![0, 1]]);
    bus.send(1, after);
    let events = bus.take(0, 1);
    assert_eq!(events.len(), 4, "{events:?}");
    assert_eq!(events[0], deliver(2, 0, "before"));
    assert!(matches!(
        events[1],
        Event::ConfChg {
            kind: ConfigurationKind::Transitional,
            ..
        }
    ));
    assert!(matches!(
        events[2],
        Event::ConfChg {
            kind: ConfigurationKind::Regular,
            ..
        }
    ));
    assert_eq!(events[3], deliver(2, 0, "after"));
}

impl Service {
    /// A multicast to "g" from a connection of its own (connection 99, pid 0).
    fn mcast_groups_for_test(&mut self, text: &str) -> Bytes {
        if self.groups(99).is_none() {
            self.connect(99, 0);
        }
        self.mcast_groups(99, &keys(&["g"]), text.as_bytes())
            .unwrap()
    }
}

#[test]
fn a_closed_connection_gets_nothing_more() {
    let mut bus = Bus::new(1);
    bus.services[0].connect(1, 1);
    bus.services[0].connect(2, 2);
    bus.services[0].join(1, &keys(&["g"])).unwrap();
    bus.services[0].join(2, &keys(&["g"])).unwrap();
    bus.settle();
    bus.take(0, 1);
    bus.take(0, 2);
    bus.services[0].disconnect(1);
    assert_eq!(bus.services[0].connections(), 1);
    assert_eq!(bus.services[0].groups(1), None);
    bus.mcast_groups(0, 2, &["g"], "m");
    bus.configure(&[vec![0]]);
    assert!(bus.take(0, 1).is_empty());
    assert_eq!(bus.take(0, 2).len(), 3);
    // Its id may be used again, with a fresh filter.
    bus.services[0].connect(1, 3);
    assert!(bus.services[0].groups(1).unwrap().is_empty());
    bus.services[0].disconnect(9);
}

#[test]
fn payloads_that_do_not_decode_are_counted_and_dropped() {
    let mut service = Service::new(NodeId(1));
    service.connect(1, 1);
    service.join(1, &keys(&["g"])).unwrap();
    let _ = service.poll_output();
    for garbage in [&[2u8, 9][..], &[2, 1, 0], &[]] {
        service.on_deliver(NodeId(2), &Bytes::copy_from_slice(garbage));
    }
    assert_eq!(service.malformed(), 3);
    assert_eq!(service.poll_output(), None);
}

/// Random joins, leaves, sends to random groups and configuration changes, applied alike at
/// every node: every node gives the same events for the same total order, and each connection
/// gets exactly the messages sent to a group it had joined when they were delivered, once.
#[test]
fn every_node_gives_the_same_events_for_the_same_order() {
    use crate::prng::Prng;
    const NODES: usize = 3;
    const CONNS: u64 = 4;
    const GROUPS: [&str; 4] = ["a", "b", "c", "d"];
    let (mut delivered, mut filtered) = (0, 0);
    for seed in 0..30 {
        let mut prng = Prng::from_seed(seed);
        let mut bus = Bus::new(NODES);
        for node in 0..NODES {
            for conn in 1..=CONNS {
                bus.services[node].connect(conn, conn as u32);
            }
        }
        bus.settle();
        for conn in 1..=CONNS {
            let view = bus.take(0, conn);
            assert_eq!(view.len(), 1);
            for i in 1..NODES {
                assert_eq!(bus.take(i, conn), view);
            }
        }
        let pick = |prng: &mut Prng| -> Vec<Key> {
            let count = prng.below(3) as usize;
            (0..count)
                .map(|_| key(GROUPS[prng.below(GROUPS.len() as u64) as usize]))
                .collect()
        };
        let mut sent = 0u32;
        for _ in 0..200 {
            let conn = 1 + prng.below(CONNS);
            match prng.below(10) {
                0..=2 => {
                    let groups = pick(&mut prng);
                    for service in &mut bus.services {
                        service.join(conn, &groups).unwrap();
                    }
                }
                3 | 4 => {
                    let groups = pick(&mut prng);
                    let results: BTreeSet<bool> = bus
                        .services
                        .iter_mut()
                        .map(|s| s.leave(conn, &groups).is_ok())
                        .collect();
                    assert_eq!(results.len(), 1, "seed {seed}: the same answer everywhere");
                }
                9 => bus.configure(&[(0..NODES).collect()]),
                _ => {
                    let node = prng.below(NODES as u64) as usize;
                    let groups = pick(&mut prng);
                    let text = sent.to_le_bytes();
                    sent += 1;
                    let (payload, to) = if groups.is_empty() {
                        let Ok(payload) = bus.services[node].mcast_joined(conn, &text) else {
                            continue;
                        };
                        (payload, bus.services[node].groups(conn).unwrap().clone())
                    } else {
                        let payload = bus.services[node]
                            .mcast_groups(conn, &groups, &text)
                            .unwrap();
                        (payload, groups.iter().copied().collect())
                    };
                    // The receivers, by the filters as they are at delivery.
                    let receivers: Vec<ConnId> = (1..=CONNS)
                        .filter(|&c| !bus.services[0].groups(c).unwrap().is_disjoint(&to))
                        .collect();
                    bus.send(node, payload);
                    delivered += receivers.len();
                    filtered += CONNS as usize - receivers.len();
                    for receiver in 1..=CONNS {
                        let expected = if receivers.contains(&receiver) {
                            vec![Event::Deliver {
                                nodeid: id(node),
                                pid: conn as u32,
                                payload: Bytes::copy_from_slice(&text),
                            }]
                        } else {
                            Vec::new()
                        };
                        for i in 0..NODES {
                            assert_eq!(
                                bus.take(i, receiver),
                                expected,
                                "seed {seed}: node {} conn {receiver}",
                                i + 1
                            );
                        }
                    }
                }
            }
            bus.settle();
            // Configuration events: the same at every node.
            for conn in 1..=CONNS {
                let first = bus.take(0, conn);
                for i in 1..NODES {
                    assert_eq!(bus.take(i, conn), first, "seed {seed}");
                }
            }
        }
    }
    assert!(
        delivered > 1000 && filtered > 1000,
        "{delivered} {filtered}"
    );
}

#[test]
fn records_round_trip_and_truncated_bodies_are_refused() {
    let groups = vec![key("a"), Key::new(&[0xFF; 32]).unwrap()];
    let requests = [
        Request::Join(groups.clone()),
        Request::Join(Vec::new()),
        Request::Leave(groups.clone()),
        Request::McastJoined {
            guarantee: Guarantee::Safe,
            payload: b"message",
        },
        Request::McastJoined {
            guarantee: Guarantee::Unordered,
            payload: b"",
        },
        Request::McastGroups {
            guarantee: Guarantee::Fifo,
            groups: groups.clone(),
            payload: b"message",
        },
        Request::McastGroups {
            guarantee: Guarantee::Agreed,
            groups: vec![key("g")],
            payload: b"",
        },
        Request::MembershipGet,
    ];
    let mut body = Vec::new();
    for request in &requests {
        let kind = request.encode(&mut body);
        assert_eq!(kind, request.kind());
        assert_eq!(Request::decode(kind, &body).as_ref(), Some(request));
        let header = match request {
            Request::Join(_) | Request::Leave(_) | Request::MembershipGet => body.len(),
            Request::McastJoined { .. } => 1,
            Request::McastGroups { groups, .. } => records::mcast_groups_header_len(groups.len()),
        };
        for cut in 0..header {
            let cut_keys = matches!(request, Request::Join(_) | Request::Leave(_)) && cut % 32 == 0;
            if !cut_keys {
                assert_eq!(
                    Request::decode(kind, &body[..cut]),
                    None,
                    "{request:?} at {cut}"
                );
            }
        }
    }
    // Unknown kinds, bad guarantees, a membership request with a body.
    assert_eq!(Request::decode(99, &[]), None);
    assert_eq!(Request::decode(records::MCAST_JOINED, &[4, 1]), None);
    assert_eq!(Request::decode(records::MCAST_GROUPS, &[4, 0]), None);
    assert_eq!(Request::decode(records::MEMBERSHIP_GET, &[0]), None);

    let events = [
        Event::Deliver {
            nodeid: NodeId(3),
            pid: 9,
            payload: Bytes::from_static(b"payload"),
        },
        Event::Deliver {
            nodeid: NodeId(3),
            pid: 9,
            payload: Bytes::new(),
        },
        Event::ConfChg {
            kind: ConfigurationKind::Transitional,
            ring: RingId::new(NodeId(1), 12),
            old_ring: RingId::new(NodeId(2), 8),
            members: nodes(&[1, 3]),
            left: nodes(&[2]),
            joined: Vec::new(),
        },
        Event::ConfChg {
            kind: ConfigurationKind::Regular,
            ring: RingId::new(NodeId(1), u64::MAX),
            old_ring: RingId::new(NodeId(1), u64::MAX),
            members: nodes(&[1, 3, 4]),
            left: Vec::new(),
            joined: nodes(&[4]),
        },
    ];
    let mut out = BytesMut::new();
    for event in events {
        let kind = records::encode_event(&event, &mut out);
        assert_eq!(records::decode_event(kind, &out), Some(event.clone()));
        let fixed = if kind == records::DELIVER {
            8
        } else {
            out.len()
        };
        for cut in 0..fixed {
            assert_eq!(
                records::decode_event(kind, &out[..cut]),
                None,
                "{event:?} at {cut}"
            );
        }
        if kind == records::CONFCHG {
            let mut longer = out.to_vec();
            longer.push(0);
            assert_eq!(records::decode_event(kind, &longer), None);
            let mut bad_kind = out.to_vec();
            bad_kind[0] = 2;
            assert_eq!(records::decode_event(kind, &bad_kind), None);
        }
    }
    assert_eq!(records::decode_event(99, &[0; 16]), None);

    // Answers and the membership answer.
    let ok = records::encode_answer(&Ok(records::encode_membership(NodeId(2), &nodes(&[1, 2]))));
    let body = records::decode_answer(&ok).unwrap();
    assert_eq!(
        records::decode_membership(&body),
        Some((NodeId(2), nodes(&[1, 2])))
    );
    for cut in 0..body.len() {
        assert_eq!(records::decode_membership(&body[..cut]), None);
    }
    let error = records::encode_answer(&Err(Error::NotExist("not joined".into())));
    assert_eq!(
        records::decode_answer(&error),
        Err(Error::NotExist("not joined".into()))
    );
    assert_eq!(
        records::decode_answer(&[1, 0]).unwrap_err().code(),
        CsError::Library
    );
    let unknown = records::decode_answer(&29u32.to_le_bytes()).unwrap_err();
    assert_eq!(unknown.code(), CsError::Library);
}

#[test]
fn sessions_serve_records_and_pass_every_guarantee_to_the_core() {
    let mut sessions = Sessions::new(NodeId(1));
    sessions.on_configuration(&Configuration {
        kind: ConfigurationKind::Regular,
        ring: RingId::new(NodeId(1), 4),
        old_ring: RingId::new(NodeId(1), 4),
        members: nodes(&[1, 2]),
        left: Vec::new(),
        joined: nodes(&[1, 2]),
    });
    sessions.connect(1, 42);
    let mut out = BytesMut::new();
    assert_eq!(sessions.poll_record(&mut out), Some((1, records::CONFCHG)));
    let never = |_: Guarantee, _: Bytes| -> crate::Result<()> { panic!("no multicast") };
    let mut body = Vec::new();
    let kind = Request::Join(keys(&["g"])).encode(&mut body);
    assert_eq!(
        sessions.serve(1, kind, &body, never),
        Served::Answer(records::encode_answer(&Ok(Vec::new())))
    );
    let kind = Request::Leave(keys(&["x"])).encode(&mut body);
    let Served::Answer(answer) = sessions.serve(1, kind, &body, never) else {
        panic!("an answer");
    };
    assert_eq!(
        records::decode_answer(&answer).unwrap_err().code(),
        CsError::NotExist
    );
    let kind = Request::MembershipGet.encode(&mut body);
    let Served::Answer(answer) = sessions.serve(1, kind, &body, never) else {
        panic!("an answer");
    };
    assert_eq!(
        records::decode_membership(&records::decode_answer(&answer).unwrap()),
        Some((NodeId(1), nodes(&[1, 2])))
    );
    // Every guarantee reaches the core as the client chose it.
    for guarantee in [
        Guarantee::Unordered,
        Guarantee::Fifo,
        Guarantee::Agreed,
        Guarantee::Safe,
    ] {
        for request in [
            Request::McastJoined {
                guarantee,
                payload: b"m",
            },
            Request::McastGroups {
                guarantee,
                groups: keys(&["g", "h"]),
                payload: b"m",
            },
        ] {
            let kind = request.encode(&mut body);
            let mut seen = None;
            let served = sessions.serve(1, kind, &body, |g, payload| {
                seen = Some((g, payload));
                Ok(())
            });
            assert_eq!(served, Served::Done);
            let (g, payload) = seen.expect("multicast");
            assert_eq!(g, guarantee);
            sessions.on_deliver(NodeId(1), &payload);
            assert_eq!(sessions.poll_record(&mut out), Some((1, records::DELIVER)));
            assert_eq!(
                records::decode_event(records::DELIVER, &out),
                Some(Event::Deliver {
                    nodeid: NodeId(1),
                    pid: 42,
                    payload: Bytes::from_static(b"m"),
                })
            );
        }
    }
    // A full core: the request waits; a refusal for good drops it; garbage drops the client.
    let kind = Request::McastJoined {
        guarantee: Guarantee::Agreed,
        payload: b"m",
    }
    .encode(&mut body);
    let full = |_: Guarantee, _: Bytes| Err(Error::TryAgain("full".into()));
    assert_eq!(sessions.serve(1, kind, &body, full), Served::Wait);
    let too_big = |_: Guarantee, _: Bytes| Err(Error::TooBig("big".into()));
    assert_eq!(sessions.serve(1, kind, &body, too_big), Served::Done);
    assert_eq!(sessions.counters().mcasts, 8);
    assert_eq!(sessions.counters().mcasts_dropped, 1);
    assert!(matches!(sessions.serve(1, 77, &[], never), Served::Bad(_)));
    assert!(matches!(
        sessions.serve(1, records::JOIN, &[1; 31], never),
        Served::Bad(_)
    ));
    // Events of a connection that is gone are not written.
    let kind = Request::McastJoined {
        guarantee: Guarantee::Agreed,
        payload: b"late",
    }
    .encode(&mut body);
    let mut late = None;
    let served = sessions.serve(1, kind, &body, |_, payload| {
        late = Some(payload);
        Ok(())
    });
    assert_eq!(served, Served::Done);
    sessions.on_deliver(NodeId(2), &late.unwrap());
    sessions.disconnect(1);
    assert_eq!(sessions.poll_record(&mut out), None);
}
