//! The CPG service of a node, as a pure state machine: local connections' requests and the
//! totem stream's deliveries and configurations go in; multicasts for the core and events for
//! local connections come out ([`Output`]). The same inputs give the same outputs on every node,
//! which is what keeps group membership identical everywhere (COROSYNC-REFERENCE §4).
//!
//! Group membership is replicated: a join, a leave and a message are totem messages, applied in
//! total order. After every regular configuration the nodes resynchronize (§4.9): each one
//! multicasts its **joinlist** (the processes joined on it); once the joinlists of every member
//! of the new ring are delivered, the membership is recomputed from them — members of nodes that
//! are gone leave with NODEDOWN, members no list names leave with PROCDOWN (the zombies of
//! corosync PR #828 cannot survive this), members new to this side join with NODEUP — one
//! confchg per group carrying both lists, then the totem confchg to every connection. CPG
//! messages delivered while a sync runs are held and applied right after it, in order, so that
//! every node applies them to the same membership.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;

use super::wire::{Group, Message};
use crate::api::{CPG_MAX_NAME_LENGTH, Guarantee, Reason};
use crate::error::{Error, Result};
use crate::ids::{NodeId, RingId};
use crate::totem::{Configuration, ConfigurationKind};

/// A local connection (one handle of a client).
pub type ConnId = u64;

/// A group member: node and process id.
pub type Member = (NodeId, u32);

/// An entry of a confchg list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Address {
    /// The node.
    pub nodeid: NodeId,
    /// The process.
    pub pid: u32,
    /// Why it is listed.
    pub reason: Reason,
}

/// What a local connection receives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientEvent {
    /// A message of its group.
    Deliver {
        /// The group.
        group: Group,
        /// The sender's node.
        nodeid: NodeId,
        /// The sender's process.
        pid: u32,
        /// The message.
        payload: Bytes,
    },
    /// A membership change of its group.
    ConfChg {
        /// The group.
        group: Group,
        /// Members after the change, sorted by (node, pid).
        members: Vec<Address>,
        /// Who left.
        left: Vec<Address>,
        /// Who joined.
        joined: Vec<Address>,
    },
    /// The totem configuration after a sync (model V1).
    TotemConfChg {
        /// The ring.
        ring: RingId,
        /// Its nodes, sorted.
        nodes: Vec<NodeId>,
    },
}

/// What the service asks of the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Multicast this payload through the core, never dropping it (join, leave and joinlist
    /// messages must all go out; application messages were accepted already).
    Multicast {
        /// Its guarantee.
        guarantee: Guarantee,
        /// The payload.
        payload: Bytes,
    },
    /// Write this event to a local connection.
    Event {
        /// The connection.
        conn: ConnId,
        /// The event.
        event: ClientEvent,
    },
}

/// A connection's place in the join/leave cycle (COROSYNC-REFERENCE §4.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnState {
    /// In no group.
    Unjoined,
    /// Its join is multicast, not yet delivered.
    JoinStarted,
    /// A member.
    Joined,
    /// Its leave is multicast, not yet delivered (still receives).
    LeaveStarted,
}

#[derive(Debug)]
struct Conn {
    pid: u32,
    group: Option<Group>,
    state: ConnState,
    /// `CPG_MODEL_V1_DELIVER_INITIAL_TOTEM_CONF`, until the first confchg delivered it.
    initial_totem_conf: bool,
}

impl Conn {
    fn receives(&self, group: &[u8]) -> bool {
        matches!(self.state, ConnState::Joined | ConnState::LeaveStarted)
            && self.group.as_deref() == Some(group)
    }
}

#[derive(Debug)]
struct Sync {
    ring: RingId,
    nodes: Vec<NodeId>,
    /// Nodes of the last synced configuration that did not come through the transitional one.
    down: Vec<NodeId>,
    lists: BTreeMap<NodeId, Vec<(u32, Group)>>,
}

/// The CPG service of one node.
#[derive(Debug)]
pub struct Service {
    me: NodeId,
    members: BTreeMap<Group, BTreeSet<Member>>,
    conns: BTreeMap<ConnId, Conn>,
    /// The ring and nodes of the last completed sync.
    ring: Option<(RingId, Vec<NodeId>)>,
    /// Members of the last transitional configuration.
    transitional: Option<Vec<NodeId>>,
    sync: Option<Sync>,
    held: Vec<(NodeId, Message)>,
    outputs: VecDeque<Output>,
    /// CPG payloads that did not decode.
    malformed: u64,
}

impl Service {
    /// The service of node `me`, before any configuration.
    #[must_use]
    pub fn new(me: NodeId) -> Service {
        Service {
            me,
            members: BTreeMap::new(),
            conns: BTreeMap::new(),
            ring: None,
            transitional: None,
            sync: None,
            held: Vec::new(),
            outputs: VecDeque::new(),
            malformed: 0,
        }
    }

    /// The next output.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// The members of `group`, sorted by (node, pid).
    #[must_use]
    pub fn membership(&self, group: &[u8]) -> Vec<Member> {
        self.members
            .get(group)
            .map(|set| set.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Every group with members, sorted.
    pub fn groups(&self) -> impl Iterator<Item = (&Group, &BTreeSet<Member>)> {
        self.members.iter()
    }

    /// A connection's state.
    #[must_use]
    pub fn state(&self, conn: ConnId) -> Option<ConnState> {
        self.conns.get(&conn).map(|c| c.state)
    }

    /// The group a connection is in (or joining or leaving).
    #[must_use]
    pub fn joined_group(&self, conn: ConnId) -> Option<&[u8]> {
        self.conns.get(&conn).and_then(|c| c.group.as_deref())
    }

    /// Whether a sync is running (its confchgs are not out yet).
    #[must_use]
    pub fn syncing(&self) -> bool {
        self.sync.is_some()
    }

    /// CPG messages held until the running sync completes.
    #[must_use]
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// CPG payloads that did not decode (dropped).
    #[must_use]
    pub fn malformed(&self) -> u64 {
        self.malformed
    }

    /// A new local connection of process `pid`.
    pub fn connect(&mut self, conn: ConnId, pid: u32, initial_totem_conf: bool) {
        self.conns.insert(
            conn,
            Conn {
                pid,
                group: None,
                state: ConnState::Unjoined,
                initial_totem_conf,
            },
        );
    }

    /// The connection closed (finalize, exit or crash): a member leaves with PROCDOWN — also
    /// one whose join is still in flight, so that it cannot become a ghost.
    pub fn disconnect(&mut self, conn: ConnId) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        if let (ConnState::JoinStarted | ConnState::Joined, Some(group)) = (c.state, c.group) {
            self.multicast(
                Guarantee::Agreed,
                &Message::Leave {
                    pid: c.pid,
                    reason: Reason::ProcDown,
                    group,
                },
            );
        }
    }

    fn conn(&mut self, conn: ConnId) -> Result<&mut Conn> {
        self.conns
            .get_mut(&conn)
            .ok_or_else(|| Error::BadHandle(format!("no connection {conn}").into()))
    }

    /// `cpg_join`.
    pub fn join(&mut self, conn: ConnId, group: &[u8]) -> Result<()> {
        check_name(group)?;
        let c = self.conn(conn)?;
        match c.state {
            ConnState::Unjoined => {}
            ConnState::JoinStarted | ConnState::Joined => {
                return Err(Error::Exist("this handle is in a group already".into()));
            }
            ConnState::LeaveStarted => {
                return Err(Error::Busy("this handle is still leaving its group".into()));
            }
        }
        let pid = c.pid;
        let taken = self.conns.values().any(|other| {
            other.pid == pid
                && other.state != ConnState::Unjoined
                && other.group.as_deref() == Some(group)
        });
        if taken {
            return Err(Error::Exist(
                format!("process {pid} is in this group through another handle").into(),
            ));
        }
        let group = Bytes::copy_from_slice(group);
        let c = self.conn(conn)?;
        c.state = ConnState::JoinStarted;
        c.group = Some(group.clone());
        self.multicast(Guarantee::Agreed, &Message::Join { pid, group });
        Ok(())
    }

    /// `cpg_leave`. The name is checked first, as for a join (`CS_ERR_NAME_TOO_LONG` beyond
    /// 128 bytes, as Corosync's library answers).
    pub fn leave(&mut self, conn: ConnId, group: &[u8]) -> Result<()> {
        check_name(group)?;
        let c = self.conn(conn)?;
        match c.state {
            ConnState::Unjoined | ConnState::LeaveStarted => {
                return Err(Error::NotExist("this handle is in no group".into()));
            }
            ConnState::JoinStarted => {
                return Err(Error::Busy(
                    "this handle's join is still in progress".into(),
                ));
            }
            ConnState::Joined => {}
        }
        if c.group.as_deref() != Some(group) {
            return Err(Error::NotExist("this handle is not in that group".into()));
        }
        c.state = ConnState::LeaveStarted;
        let (pid, group) = (c.pid, c.group.clone().expect("joined"));
        self.multicast(
            Guarantee::Agreed,
            &Message::Leave {
                pid,
                reason: Reason::Leave,
                group,
            },
        );
        Ok(())
    }

    /// `cpg_mcast_joined`: the totem payload carrying `payload` (one copy), or why not. The
    /// caller hands it to the core (its flow control decides acceptance).
    pub fn mcast(&mut self, conn: ConnId, payload: &[u8]) -> Result<Bytes> {
        let (pid, group) = self.sender(conn)?;
        Ok(super::wire::encode_mcast(pid, group, payload))
    }

    /// [`Service::mcast`] for a message of `len` bytes that the caller appends to the returned
    /// buffer (copying it once, from wherever it is).
    pub fn mcast_prefix(&self, conn: ConnId, len: usize) -> Result<Vec<u8>> {
        let (pid, group) = self.sender(conn)?;
        Ok(super::wire::mcast_prefix(pid, group, len))
    }

    /// A batch of small multicasts (see [`super::wire::Message::McastBatch`]): the totem
    /// payload up to its items, with room for `len` bytes of them.
    pub fn mcast_batch_prefix(&self, conn: ConnId, len: usize) -> Result<Vec<u8>> {
        let (pid, group) = self.sender(conn)?;
        Ok(super::wire::mcast_batch_prefix(pid, group, len))
    }

    /// The process and group of a connection that may send (joined, or its join on the way).
    fn sender(&self, conn: ConnId) -> Result<(u32, &Group)> {
        let c = self
            .conns
            .get(&conn)
            .ok_or_else(|| Error::BadHandle(format!("no connection {conn}").into()))?;
        match (c.state, &c.group) {
            (ConnState::JoinStarted | ConnState::Joined, Some(group)) => Ok((c.pid, group)),
            _ => Err(Error::NotExist("this handle has not joined a group".into())),
        }
    }

    fn multicast(&mut self, guarantee: Guarantee, message: &Message) {
        self.outputs.push_back(Output::Multicast {
            guarantee,
            payload: message.encode(),
        });
    }

    fn emit(&mut self, conn: ConnId, event: ClientEvent) {
        self.outputs.push_back(Output::Event { conn, event });
    }

    /// A configuration from the core.
    pub fn on_configuration(&mut self, configuration: &Configuration) {
        match configuration.kind {
            ConfigurationKind::Transitional => {
                self.transitional = Some(configuration.members.clone());
            }
            ConfigurationKind::Regular => {
                // A sync still running was cut short by this ring. The messages it held were
                // delivered in its ring, which ends here: apply them now, before this node's
                // joinlist is taken, so that the joinlist says what they did. (Applied after
                // the next sync instead, a leave held here would drop the process on this node
                // only, while its joinlist had brought it back at the others: a ghost.)
                if self.sync.take().is_some() {
                    for (origin, message) in std::mem::take(&mut self.held) {
                        self.apply(origin, message);
                    }
                }
                let down = match (&self.ring, self.transitional.take()) {
                    (Some((_, synced)), Some(kept)) => synced
                        .iter()
                        .filter(|n| !kept.contains(n))
                        .copied()
                        .collect(),
                    (Some((_, synced)), None) => synced.clone(),
                    (None, _) => Vec::new(),
                };
                self.sync = Some(Sync {
                    ring: configuration.ring,
                    nodes: configuration.members.clone(),
                    down,
                    lists: BTreeMap::new(),
                });
                let mut entries: Vec<(u32, Group)> = Vec::new();
                for (group, set) in &self.members {
                    for &(node, pid) in set {
                        if node == self.me {
                            entries.push((pid, group.clone()));
                        }
                    }
                }
                self.multicast(
                    Guarantee::Agreed,
                    &Message::JoinList {
                        ring: configuration.ring,
                        entries,
                    },
                );
            }
        }
    }

    /// A CPG payload delivered by the core from node `origin`.
    pub fn on_deliver(&mut self, origin: NodeId, payload: &Bytes) {
        let Some(message) = Message::decode(payload) else {
            self.malformed += 1;
            return;
        };
        match message {
            Message::JoinList { ring, entries } => {
                let Some(sync) = &mut self.sync else {
                    return;
                };
                if ring != sync.ring || !sync.nodes.contains(&origin) {
                    return;
                }
                sync.lists.insert(origin, entries);
                if sync.lists.len() == sync.nodes.len() {
                    self.activate();
                }
            }
            message if self.sync.is_some() => self.held.push((origin, message)),
            message => self.apply(origin, message),
        }
    }

    /// Every joinlist of the new ring is here: recompute membership, tell the local members.
    fn activate(&mut self) {
        let sync = self.sync.take().expect("a sync runs");
        let mut fresh: BTreeMap<Group, BTreeSet<Member>> = BTreeMap::new();
        for (&node, entries) in &sync.lists {
            for (pid, group) in entries {
                fresh.entry(group.clone()).or_default().insert((node, *pid));
            }
        }
        let groups: BTreeSet<Group> = self.members.keys().chain(fresh.keys()).cloned().collect();
        for group in groups {
            let empty = BTreeSet::new();
            let old = self.members.get(&group).unwrap_or(&empty);
            let new = fresh.get(&group).unwrap_or(&empty);
            let left: Vec<Address> = old
                .difference(new)
                .map(|&(nodeid, pid)| Address {
                    nodeid,
                    pid,
                    reason: if sync.nodes.contains(&nodeid) && !sync.down.contains(&nodeid) {
                        Reason::ProcDown
                    } else {
                        Reason::NodeDown
                    },
                })
                .collect();
            let joined: Vec<Address> = new
                .difference(old)
                .map(|&(nodeid, pid)| Address {
                    nodeid,
                    pid,
                    reason: Reason::NodeUp,
                })
                .collect();
            if left.is_empty() && joined.is_empty() {
                continue;
            }
            let members = listing(new);
            let receivers = self.receivers(&group);
            self.confchg(&receivers, &group, &members, &left, &joined);
        }
        fresh.retain(|_, set| !set.is_empty());
        self.members = fresh;
        let conns: Vec<ConnId> = self.conns.keys().copied().collect();
        for conn in conns {
            self.emit(
                conn,
                ClientEvent::TotemConfChg {
                    ring: sync.ring,
                    nodes: sync.nodes.clone(),
                },
            );
            if let Some(c) = self.conns.get_mut(&conn) {
                c.initial_totem_conf = false;
            }
        }
        self.ring = Some((sync.ring, sync.nodes));
        for (origin, message) in std::mem::take(&mut self.held) {
            self.apply(origin, message);
        }
    }

    /// One confchg of `group`, the same for each of `receivers`.
    fn confchg(
        &mut self,
        receivers: &[ConnId],
        group: &Group,
        members: &[Address],
        left: &[Address],
        joined: &[Address],
    ) {
        for &conn in receivers {
            self.emit(
                conn,
                ClientEvent::ConfChg {
                    group: group.clone(),
                    members: members.to_vec(),
                    left: left.to_vec(),
                    joined: joined.to_vec(),
                },
            );
        }
    }

    fn receivers(&self, group: &[u8]) -> Vec<ConnId> {
        self.conns
            .iter()
            .filter(|(_, c)| c.receives(group))
            .map(|(&id, _)| id)
            .collect()
    }

    fn apply(&mut self, origin: NodeId, message: Message) {
        match message {
            Message::Join { pid, group } => {
                let set = self.members.entry(group.clone()).or_default();
                if !set.insert((origin, pid)) {
                    return;
                }
                let members = listing(set);
                let mut own_conn = None;
                if origin == self.me {
                    own_conn = self.conns.iter_mut().find_map(|(&id, c)| {
                        (c.pid == pid
                            && c.state == ConnState::JoinStarted
                            && c.group.as_deref() == Some(&group[..]))
                        .then(|| {
                            c.state = ConnState::Joined;
                            id
                        })
                    });
                }
                let joined = [Address {
                    nodeid: origin,
                    pid,
                    reason: Reason::Join,
                }];
                // The joiner first: a process sees its own join before anything of the group.
                let mut receivers = self.receivers(&group);
                if let Some(id) = own_conn {
                    receivers.retain(|&r| r != id);
                    receivers.insert(0, id);
                }
                self.confchg(&receivers, &group, &members, &[], &joined);
                for conn in receivers {
                    self.initial_totem_conf(conn);
                }
            }
            Message::Leave { pid, reason, group } => {
                let Some(set) = self.members.get_mut(&group) else {
                    return;
                };
                if !set.remove(&(origin, pid)) {
                    return;
                }
                let members = listing(set);
                if set.is_empty() {
                    self.members.remove(&group);
                }
                let left = [Address {
                    nodeid: origin,
                    pid,
                    reason,
                }];
                let receivers = self.receivers(&group);
                self.confchg(&receivers, &group, &members, &left, &[]);
                if origin == self.me {
                    // The leave is complete: the handle may join again.
                    for c in self.conns.values_mut() {
                        if c.pid == pid
                            && c.state == ConnState::LeaveStarted
                            && c.group.as_deref() == Some(&group[..])
                        {
                            c.state = ConnState::Unjoined;
                            c.group = None;
                        }
                    }
                }
            }
            Message::McastBatch { pid, group, items } => {
                let receivers = self.receivers(&group);
                for payload in super::wire::batch_items(&items).flatten() {
                    for &conn in &receivers {
                        self.emit(
                            conn,
                            ClientEvent::Deliver {
                                group: group.clone(),
                                nodeid: origin,
                                pid,
                                payload: payload.clone(),
                            },
                        );
                    }
                }
            }
            Message::Mcast {
                pid,
                group,
                payload,
            } => {
                for conn in self.receivers(&group) {
                    self.emit(
                        conn,
                        ClientEvent::Deliver {
                            group: group.clone(),
                            nodeid: origin,
                            pid,
                            payload: payload.clone(),
                        },
                    );
                }
            }
            Message::JoinList { .. } => {}
        }
    }

    /// After a connection's first confchg, its initial totem confchg if it asked for one.
    fn initial_totem_conf(&mut self, conn: ConnId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if !c.initial_totem_conf {
            return;
        }
        c.initial_totem_conf = false;
        if let Some((ring, nodes)) = self.ring.clone() {
            self.emit(conn, ClientEvent::TotemConfChg { ring, nodes });
        }
    }
}

fn listing(set: &BTreeSet<Member>) -> Vec<Address> {
    set.iter()
        .map(|&(nodeid, pid)| Address {
            nodeid,
            pid,
            reason: Reason::Undefined,
        })
        .collect()
}

/// A group name must be 1..=128 bytes.
pub fn check_name(group: &[u8]) -> Result<()> {
    if group.is_empty() {
        return Err(Error::InvalidParam("a group name must not be empty".into()));
    }
    if group.len() > CPG_MAX_NAME_LENGTH {
        return Err(Error::NameTooLong(
            format!(
                "group name is {} bytes, the limit is {CPG_MAX_NAME_LENGTH}",
                group.len()
            )
            .into(),
        ));
    }
    Ok(())
}
