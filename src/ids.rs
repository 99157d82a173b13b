//! Identifiers shared by the protocol core, the node and the simulator.

use std::fmt;

/// A node's id in the cluster (`nodeid` in the configuration); never zero for a real node
/// (the default, 0, is [`NodeId::NONE`]).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct NodeId(pub u32);

impl NodeId {
    /// The absent node (`aru_addr` of a token nobody holds back).
    pub const NONE: NodeId = NodeId(0);

    /// Whether this is [`NodeId::NONE`].
    #[must_use]
    pub const fn is_none(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A ring: its representative (the lowest member id) and its sequence number. Ring ids never
/// repeat; a new ring's `seq` is above every ring seq its members know.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct RingId {
    /// The representative.
    pub rep: u32,
    /// The ring sequence number.
    pub seq: u64,
}

impl RingId {
    /// The ring `(rep, seq)`.
    #[must_use]
    pub const fn new(rep: NodeId, seq: u64) -> RingId {
        RingId { rep: rep.0, seq }
    }

    /// The representative as a [`NodeId`].
    #[must_use]
    pub const fn representative(self) -> NodeId {
        NodeId(self.rep)
    }
}

impl fmt::Debug for RingId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ring({}:{})", self.rep, self.seq)
    }
}

/// A message's identity: the node that submitted it and that node's counter. Counters start
/// from a value that never repeats across a node's restarts (see the core's config).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageId {
    /// The originating node.
    pub origin: NodeId,
    /// The origin's message counter.
    pub number: u64,
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "m{}.{}", self.origin.0, self.number)
    }
}
