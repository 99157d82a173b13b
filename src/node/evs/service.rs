//! The EVS service of a node, as a pure state machine: local connections' requests and the
//! totem stream's deliveries and configurations go in; totem payloads (returned to the caller,
//! whose core decides acceptance) and events for local connections come out ([`Output`]).
//! No I/O, no clock; iteration is over ordered maps, so the same inputs give the same outputs.
//!
//! Semantics (Corosync's EVS, COROSYNC-REFERENCE §3, with the changes ARCHITECTURE §3 asks for):
//!
//! - **Groups are a receive filter, local to the node.** A connection's joined keys are a set
//!   kept here and nowhere else: a join or leave is not a totem message and has no event. It
//!   takes effect at the point of the local delivery stream where it is served.
//! - **Delivery:** a message carries the keys it was sent to; it is delivered, once, to every
//!   local connection that joined at least one of them (the sender's own connection included,
//!   if it joined one), with the sender's node id and pid (Corosync gave the node only).
//! - `mcast_joined` sends to every key the connection joined; `mcast_groups` to the keys given,
//!   joined or not. The guarantee is not the service's business: the caller hands the payload to
//!   the core with it, and all four are honoured there (Corosync sent everything AGREED).
//! - **Configurations:** every totem configuration, transitional and regular, goes to every
//!   connection as a [`Event::ConfChg`] with its kind, its ring ids and its node lists (Corosync
//!   did not say which kind and its library passed a NULL ring id). A new connection first gets
//!   the current view (the last configuration, with empty left and joined lists), as Corosync
//!   sent the last confchg on connect; before the first configuration there is none to send.
//! - **Calls:** at most 50 keys ([`crate::api::EVS_GROUPS_PER_CALL_MAX`]) per `join`, `leave`
//!   or `mcast_groups` (`CS_ERR_TOO_MANY_GROUPS`, which Corosync only checked in join) and at
//!   most [`GROUPS_JOINED_MAX`] joined at once (Corosync had no total). Joining a key already
//!   joined is a no-op (Corosync appended a duplicate that a single leave did not undo); a leave
//!   naming a key not joined is `CS_ERR_NOT_EXIST` and removes nothing (Corosync had removed the
//!   keys before it). An empty join or leave is a no-op, as in Corosync. `mcast_joined` with
//!   nothing joined is `CS_ERR_NOT_EXIST` and `mcast_groups` to no key `CS_ERR_INVALID_PARAM`
//!   (Corosync returned OK and delivered the message to nobody). A delivery does not say which
//!   of the receiver's groups it matched (Corosync neither).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;

use super::wire::{self, GROUPS_JOINED_MAX, Key, Mcast, check_count};
use crate::error::{Error, Result};
use crate::ids::{NodeId, RingId};
use crate::totem::{Configuration, ConfigurationKind};

/// A local connection (one handle of a client).
pub type ConnId = u64;

/// What a local connection receives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A message sent to a group it joined.
    Deliver {
        /// The sender's node.
        nodeid: NodeId,
        /// The sender's process.
        pid: u32,
        /// The message.
        payload: Bytes,
    },
    /// A totem configuration (node level).
    ConfChg {
        /// Transitional (the old ring's members that move on together) or regular (the new
        /// ring).
        kind: ConfigurationKind,
        /// The new ring (for a transitional configuration, the ring it leads to).
        ring: RingId,
        /// For a transitional configuration, the old ring its members come from; for a regular
        /// one, the ring itself.
        old_ring: RingId,
        /// Its nodes, sorted.
        members: Vec<NodeId>,
        /// Nodes that left (transitional configurations), sorted.
        left: Vec<NodeId>,
        /// Nodes that joined (regular configurations), sorted.
        joined: Vec<NodeId>,
    },
}

/// An event for a local connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    /// The connection.
    pub conn: ConnId,
    /// The event.
    pub event: Event,
}

#[derive(Debug)]
struct Conn {
    pid: u32,
    groups: BTreeSet<Key>,
}

/// The last configuration.
#[derive(Clone, Debug)]
struct View {
    kind: ConfigurationKind,
    ring: RingId,
    old_ring: RingId,
    members: Vec<NodeId>,
}

/// The EVS service of one node.
#[derive(Debug)]
pub struct Service {
    me: NodeId,
    conns: BTreeMap<ConnId, Conn>,
    /// The receive filter indexed by key: who joined it.
    joined: BTreeMap<Key, BTreeSet<ConnId>>,
    view: Option<View>,
    outputs: VecDeque<Output>,
    /// EVS payloads that did not decode.
    malformed: u64,
}

impl Service {
    /// The service of node `me`, before any configuration.
    #[must_use]
    pub fn new(me: NodeId) -> Service {
        Service {
            me,
            conns: BTreeMap::new(),
            joined: BTreeMap::new(),
            view: None,
            outputs: VecDeque::new(),
            malformed: 0,
        }
    }

    /// The next output.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// `evs_membership_get`: this node and the nodes of the last configuration (transitional or
    /// regular, as the last confchg said; none before the first).
    #[must_use]
    pub fn membership(&self) -> (NodeId, Vec<NodeId>) {
        let members = self
            .view
            .as_ref()
            .map(|view| view.members.clone())
            .unwrap_or_default();
        (self.me, members)
    }

    /// The keys a connection joined, sorted (`None`: no such connection).
    #[must_use]
    pub fn groups(&self, conn: ConnId) -> Option<&BTreeSet<Key>> {
        self.conns.get(&conn).map(|c| &c.groups)
    }

    /// Open connections.
    #[must_use]
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// EVS payloads that did not decode (dropped).
    #[must_use]
    pub fn malformed(&self) -> u64 {
        self.malformed
    }

    /// A new local connection of process `pid`; it gets the current view first.
    pub fn connect(&mut self, conn: ConnId, pid: u32) {
        self.disconnect(conn);
        self.conns.insert(
            conn,
            Conn {
                pid,
                groups: BTreeSet::new(),
            },
        );
        if let Some(view) = &self.view {
            let event = Event::ConfChg {
                kind: view.kind,
                ring: view.ring,
                old_ring: view.old_ring,
                members: view.members.clone(),
                left: Vec::new(),
                joined: Vec::new(),
            };
            self.outputs.push_back(Output { conn, event });
        }
    }

    /// The connection closed: it leaves every group (nothing goes on the wire; EVS groups are
    /// local filters). Its undelivered outputs stay queued; the caller drops them.
    pub fn disconnect(&mut self, conn: ConnId) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        for key in &c.groups {
            self.unindex(*key, conn);
        }
    }

    fn conn(&mut self, conn: ConnId) -> Result<&mut Conn> {
        self.conns
            .get_mut(&conn)
            .ok_or_else(|| Error::BadHandle(format!("no connection {conn}").into()))
    }

    fn unindex(&mut self, key: Key, conn: ConnId) {
        if let Some(set) = self.joined.get_mut(&key) {
            set.remove(&conn);
            if set.is_empty() {
                self.joined.remove(&key);
            }
        }
    }

    /// `evs_join`: adds `groups` to the connection's filter (keys already joined stay joined).
    pub fn join(&mut self, conn: ConnId, groups: &[Key]) -> Result<()> {
        check_count(groups.len())?;
        let c = self.conn(conn)?;
        let new: BTreeSet<Key> = groups
            .iter()
            .filter(|key| !c.groups.contains(key))
            .copied()
            .collect();
        if c.groups.len() + new.len() > GROUPS_JOINED_MAX {
            return Err(Error::TooManyGroups(
                format!(
                    "{} groups joined and {} more, the limit is {GROUPS_JOINED_MAX}",
                    c.groups.len(),
                    new.len()
                )
                .into(),
            ));
        }
        c.groups.extend(&new);
        for key in new {
            self.joined.entry(key).or_default().insert(conn);
        }
        Ok(())
    }

    /// `evs_leave`: removes `groups` from the connection's filter; `CS_ERR_NOT_EXIST` (and
    /// nothing removed) if one of them is not joined.
    pub fn leave(&mut self, conn: ConnId, groups: &[Key]) -> Result<()> {
        check_count(groups.len())?;
        let c = self.conn(conn)?;
        if let Some(key) = groups.iter().find(|key| !c.groups.contains(key)) {
            return Err(Error::NotExist(
                format!("this handle has not joined the group {key:?}").into(),
            ));
        }
        for key in groups {
            c.groups.remove(key);
        }
        for key in groups {
            self.unindex(*key, conn);
        }
        Ok(())
    }

    /// `evs_mcast_joined`: the totem payload carrying `payload` to every group the connection
    /// joined, or why not. The caller hands it to the core with the guarantee.
    pub fn mcast_joined(&mut self, conn: ConnId, payload: &[u8]) -> Result<Bytes> {
        let c = self.conn(conn)?;
        if c.groups.is_empty() {
            return Err(Error::NotExist("this handle has joined no group".into()));
        }
        Ok(wire::encode_mcast(c.pid, c.groups.iter(), payload))
    }

    /// `evs_mcast_groups`: the totem payload carrying `payload` to `groups` (1..=50, joined or
    /// not; the same key twice counts once), or why not.
    pub fn mcast_groups(&mut self, conn: ConnId, groups: &[Key], payload: &[u8]) -> Result<Bytes> {
        let pid = self.conn(conn)?.pid;
        if groups.is_empty() {
            return Err(Error::InvalidParam(
                "a message must be sent to at least one group".into(),
            ));
        }
        check_count(groups.len())?;
        let groups: BTreeSet<&Key> = groups.iter().collect();
        Ok(wire::encode_mcast(pid, groups.iter().copied(), payload))
    }

    /// A configuration from the core: every connection hears of it.
    pub fn on_configuration(&mut self, configuration: &Configuration) {
        let view = View {
            kind: configuration.kind,
            ring: configuration.ring,
            old_ring: configuration.old_ring,
            members: configuration.members.clone(),
        };
        for &conn in self.conns.keys() {
            self.outputs.push_back(Output {
                conn,
                event: Event::ConfChg {
                    kind: view.kind,
                    ring: view.ring,
                    old_ring: view.old_ring,
                    members: view.members.clone(),
                    left: configuration.left.clone(),
                    joined: configuration.joined.clone(),
                },
            });
        }
        self.view = Some(view);
    }

    /// An EVS payload delivered by the core from node `origin`: to every local connection that
    /// joined one of its groups, once each, in connection order.
    pub fn on_deliver(&mut self, origin: NodeId, payload: &Bytes) {
        let Some(Mcast {
            pid,
            groups,
            payload,
        }) = Mcast::decode(payload)
        else {
            self.malformed += 1;
            return;
        };
        let mut receivers: BTreeSet<ConnId> = BTreeSet::new();
        for key in &groups {
            if let Some(conns) = self.joined.get(key) {
                receivers.extend(conns);
            }
        }
        for conn in receivers {
            self.outputs.push_back(Output {
                conn,
                event: Event::Deliver {
                    nodeid: origin,
                    pid,
                    payload: payload.clone(),
                },
            });
        }
    }
}
