//! What the core hands to its caller: datagrams to send, events to deliver, and counters.

use bytes::Bytes;

use crate::api::Guarantee;
use crate::ids::{NodeId, RingId};

/// Where a datagram goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Destination {
    /// To every node of the nodelist except this one (members or not: foreign-message and
    /// merge detection depend on non-members hearing it).
    Multicast,
    /// To one node.
    Node(NodeId),
}

/// A datagram written into the caller's buffer by [`super::Node::poll_transmit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Where to send it.
    pub destination: Destination,
    /// Its length at the start of the buffer.
    pub len: usize,
}

/// A message's place in a ring's total order: the ring, the seq of the packet with its last
/// fragment, and its index among the messages completed in that packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// The ring it was originated on.
    pub ring: RingId,
    /// Seq of the packet with its last fragment.
    pub seq: u64,
    /// Index among messages completed in that packet.
    pub index: u32,
}

/// A message delivered to the application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The node that submitted it.
    pub origin: NodeId,
    /// The origin's message number.
    pub number: u64,
    /// Its guarantee.
    pub guarantee: Guarantee,
    /// Its place in the total order.
    pub position: Position,
    /// The message.
    pub payload: Bytes,
}

/// Regular or transitional.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigurationKind {
    /// A new ring's configuration.
    Regular,
    /// Members that move together from the old ring to the new one (EVS).
    Transitional,
}

/// A configuration change, in total order with the deliveries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Configuration {
    /// Regular or transitional.
    pub kind: ConfigurationKind,
    /// The ring (for a transitional configuration, the new ring it leads to).
    pub ring: RingId,
    /// For a transitional configuration, the old ring; for a regular one, the ring itself.
    pub old_ring: RingId,
    /// Members, sorted.
    pub members: Vec<NodeId>,
    /// Nodes that left (transitional) — empty for regular configurations.
    pub left: Vec<NodeId>,
    /// Nodes that joined (regular) — empty for transitional configurations.
    pub joined: Vec<NodeId>,
}

/// An output of the core, drained with [`super::Node::poll_event`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Deliver a message.
    Deliver(Delivery),
    /// A configuration change.
    Configuration(Configuration),
    /// White-box: this node's message `number` got its place in the total order.
    Originated {
        /// The message number returned by `mcast`.
        number: u64,
        /// Its place.
        position: Position,
    },
    /// The send queue has room again after an `mcast` was refused.
    Writable,
    /// Store this ring seq durably (the state file) before anything else: a restarted node
    /// starts from it so that its ring ids never repeat.
    PersistRingSeq(u64),
}

/// Counters of one core (all monotonic).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counters {
    /// Tokens accepted.
    pub tokens_accepted: u64,
    /// Token copies discarded as duplicates or stale.
    pub tokens_discarded: u64,
    /// Token retransmissions sent.
    pub token_retransmits: u64,
    /// Times the token was declared lost.
    pub token_losses: u64,
    /// Times an idle representative held the token.
    pub token_holds: u64,
    /// Token hold cancels sent.
    pub token_hold_cancels: u64,
    /// New regular messages (packets) broadcast.
    pub mcasts_sent: u64,
    /// Regular messages received (new ones).
    pub mcasts_received: u64,
    /// Regular messages received twice or outside the window.
    pub mcasts_discarded: u64,
    /// Regular messages re-broadcast on request.
    pub retransmits_sent: u64,
    /// Retransmit requests added to tokens.
    pub retransmit_requests: u64,
    /// Token visits on which the retransmit list was full.
    pub retransmit_list_full: u64,
    /// Datagrams that failed to decode or broke a protocol rule.
    pub datagrams_malformed: u64,
    /// Datagrams of another ring or from outside the nodelist.
    pub datagrams_foreign: u64,
    /// Application messages accepted by `mcast`.
    pub messages_accepted: u64,
    /// Application messages refused with `CS_ERR_TRY_AGAIN`.
    pub messages_refused: u64,
    /// Application messages delivered.
    pub messages_delivered: u64,
    /// Bytes of application messages delivered.
    pub bytes_delivered: u64,
    /// Token visits on which flow control allowed fewer packets than were waiting.
    pub flow_control_limited: u64,
    /// Failure-to-receive detections (this node was the aru culprit too long).
    pub failed_to_receive: u64,
    /// Messages dropped because their fragments did not fit together.
    pub fragments_inconsistent: u64,
    /// Old-ring messages dropped at installation (after a gap, from a departed origin).
    pub messages_dropped_after_gap: u64,
    /// Times the gather state was entered.
    pub gathers: u64,
    /// Commit tokens accepted (first rotation).
    pub commits: u64,
    /// Recoveries started.
    pub recoveries: u64,
    /// Recoveries abandoned (token loss or a join during recovery).
    pub recoveries_failed: u64,
    /// Old-ring messages re-broadcast during recovery.
    pub recovery_messages_sent: u64,
    /// Rings installed.
    pub rings_installed: u64,
    /// Transitional configurations with at least one node that left.
    pub transitional_with_left: u64,
    /// Messages delivered in a transitional configuration.
    pub delivered_in_transitional: u64,
    /// Merge detects sent by this idle representative.
    pub merge_detects_sent: u64,
    /// Foreign messages that started a membership round.
    pub foreign_triggers: u64,
    /// Recoveries of a ring formed from three or more old rings (a merge of three).
    pub merges_of_three: u64,
    /// Leave messages that removed a node from a ring being operated or formed.
    pub leaves_received: u64,
}
