//! Which local clients are behind on their events, and which local senders wait for them.
//!
//! A local sender can hand messages to the node faster than the group's local receivers read
//! them (on one node nothing else slows it: the ring's token never leaves the host). Without a
//! brake, their backlogs would grow until the node drops them. So while a receiver's backlog
//! is above the throttle, the multicasts of the senders whose messages it receives wait
//! unread in their request rings (they see `CS_ERR_TRY_AGAIN` once those fill, and flow control
//! ENABLED), and they are read again once it has caught up. Messages from other nodes are never
//! held: a slow client does not slow the ring, it is dropped once it stalls.

use std::collections::BTreeSet;

use crate::node::cpg::ConnId;

/// Bytes of events waiting for a client above which the node holds the multicasts of the local
/// senders it receives from (itself included): they are slowed down by `CS_ERR_TRY_AGAIN`
/// instead of piling up events for it.
pub(super) const THROTTLE: usize = 16 << 20;

/// The sessions with events waiting, those above the throttle, and the senders held for them.
/// Sets, not flags in each session: the node looks at them on every request it reads, and they
/// are empty while every client keeps up.
#[derive(Debug, Default)]
pub(super) struct Congestion {
    /// Sessions with events in their backlog: their stall clock runs.
    backlogged: BTreeSet<ConnId>,
    /// Sessions whose backlog is above the throttle.
    congested: BTreeSet<ConnId>,
    /// Sessions whose next multicast waits for a congested receiver.
    held: BTreeSet<ConnId>,
}

impl Congestion {
    /// Records the bytes waiting in `conn`'s backlog.
    pub(super) fn set_backlog(&mut self, conn: ConnId, bytes: usize) {
        set(&mut self.backlogged, conn, bytes > 0);
        if set(&mut self.congested, conn, bytes > THROTTLE) {
            tracing::debug!(
                conn,
                congested = bytes > THROTTLE,
                bytes,
                "receiver congestion"
            );
        }
    }

    /// Forgets `conn` (it left).
    pub(super) fn remove(&mut self, conn: ConnId) {
        self.backlogged.remove(&conn);
        self.congested.remove(&conn);
        self.held.remove(&conn);
    }

    /// Whether no session is above the throttle (nothing to hold anyone for).
    pub(super) fn is_clear(&self) -> bool {
        self.congested.is_empty()
    }

    /// Sessions with events in their backlog.
    pub(super) fn backlogged(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.backlogged.iter().copied()
    }

    /// Sessions above the throttle.
    pub(super) fn congested(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.congested.iter().copied()
    }

    /// Holds `conn`'s multicasts; whether it was not held already.
    pub(super) fn hold(&mut self, conn: ConnId) -> bool {
        self.held.insert(conn)
    }

    /// Stops holding `conn` (what held it is gone).
    pub(super) fn release(&mut self, conn: ConnId) {
        self.held.remove(&conn);
    }

    /// The senders held now.
    pub(super) fn held(&self) -> Vec<ConnId> {
        self.held.iter().copied().collect()
    }

    /// Whether no sender is held.
    pub(super) fn none_held(&self) -> bool {
        self.held.is_empty()
    }
}

/// Adds or removes `conn`; whether that changed the set.
fn set(members: &mut BTreeSet<ConnId>, conn: ConnId, member: bool) -> bool {
    if member {
        members.insert(conn)
    } else {
        members.remove(&conn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backlog_counts_as_congested_only_above_the_throttle() {
        let mut congestion = Congestion::default();
        congestion.set_backlog(1, 10);
        assert!(congestion.is_clear());
        assert_eq!(congestion.backlogged().collect::<Vec<_>>(), [1]);
        congestion.set_backlog(1, THROTTLE + 1);
        assert_eq!(congestion.congested().collect::<Vec<_>>(), [1]);
        congestion.set_backlog(1, THROTTLE);
        assert!(congestion.is_clear());
        congestion.set_backlog(1, 0);
        assert_eq!(congestion.backlogged().count(), 0);
    }

    #[test]
    fn a_session_that_leaves_is_forgotten_everywhere() {
        let mut congestion = Congestion::default();
        congestion.set_backlog(1, 2 * THROTTLE);
        assert!(congestion.hold(1));
        assert!(!congestion.hold(1), "held twice");
        assert!(congestion.hold(2));
        congestion.remove(1);
        assert!(congestion.is_clear());
        assert_eq!(congestion.backlogged().count(), 0);
        assert_eq!(congestion.held(), [2]);
        congestion.release(2);
        assert!(congestion.none_held());
    }
}
