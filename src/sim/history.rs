//! The recorded history of a run (PROTOCOL.md §2.1): one ordered log per process incarnation,
//! merged into one list in recording order. The simulator writes it; a real node can write the
//! same events as JSON lines; the checkers read it.

use crate::api::Guarantee;
use crate::ids::{NodeId, RingId};
use crate::time::Instant;

/// One incarnation of a node: `incarnation` goes up by one at every restart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProcessId {
    /// The node.
    pub node: NodeId,
    /// Restarts of the node before this incarnation.
    pub incarnation: u32,
}

/// An application message's identity, written by the workload into the payload so that the
/// checkers can follow it black-box: origin incarnation and the origin's counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AppMessageId {
    /// The submitting incarnation.
    pub origin: ProcessId,
    /// Per-incarnation counter, from 0 in submit order.
    pub counter: u64,
}

/// Where a message sits in a ring's total order (the core's own type).
pub use crate::totem::Position;

/// One event of a process's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HistoryEvent {
    /// The incarnation started.
    Start,
    /// The incarnation ended by a crash (no more events from it).
    Crash,
    /// The API accepted `msg` (refused sends are not recorded).
    Submit {
        /// The message.
        msg: AppMessageId,
        /// Its guarantee.
        guarantee: Guarantee,
        /// A hash of its payload.
        payload_hash: u64,
        /// Its length in bytes.
        len: usize,
    },
    /// White-box: the token holder gave `msg` its place in the total order.
    Originate {
        /// The message.
        msg: AppMessageId,
        /// Its place.
        position: Position,
    },
    /// A regular configuration was installed.
    ConfReg {
        /// The ring.
        ring: RingId,
        /// Its members, sorted.
        members: Vec<NodeId>,
        /// Members that were not in the transitional configuration before it.
        joined: Vec<NodeId>,
        /// Always empty for a regular configuration (lefts are on the transitional one).
        left: Vec<NodeId>,
    },
    /// A transitional configuration was installed (between `old_ring` and `new_ring`).
    ConfTrans {
        /// The previous regular ring.
        old_ring: RingId,
        /// The next regular ring.
        new_ring: RingId,
        /// Members of `old_ring` that move to `new_ring` together, sorted.
        members: Vec<NodeId>,
        /// Members of `old_ring` that do not.
        left: Vec<NodeId>,
    },
    /// `msg` was delivered to the application.
    Deliver {
        /// The message.
        msg: AppMessageId,
        /// Its guarantee.
        guarantee: Guarantee,
        /// White-box: its place in the total order.
        position: Position,
        /// A hash of the delivered payload.
        payload_hash: u64,
        /// The delivered length.
        len: usize,
    },
}

/// One event with its process and the (simulated or real) time it was recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// When.
    pub time: Instant,
    /// Which incarnation.
    pub process: ProcessId,
    /// What.
    pub event: HistoryEvent,
}

/// The merged logs of a run, in recording order (each process's events keep their order).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    /// Every record, in recording order.
    pub records: Vec<Record>,
}

impl History {
    /// Appends one record.
    pub fn push(&mut self, time: Instant, process: ProcessId, event: HistoryEvent) {
        self.records.push(Record {
            time,
            process,
            event,
        });
    }

    /// The records of one incarnation, in order.
    pub fn of(&self, process: ProcessId) -> impl Iterator<Item = &Record> {
        self.records.iter().filter(move |r| r.process == process)
    }

    /// Every incarnation that appears, sorted.
    #[must_use]
    pub fn processes(&self) -> Vec<ProcessId> {
        let mut all: Vec<ProcessId> = self.records.iter().map(|r| r.process).collect();
        all.sort_unstable();
        all.dedup();
        all
    }
}
