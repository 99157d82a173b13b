//! The membership sets of the gather state and their consensus (PROTOCOL.md §1.8), and the
//! commit token's bookkeeping (§1.9), as plain data with no timers or I/O.

use std::collections::BTreeSet;

use super::wire::{CommitEntry, CommitToken, Join};
use crate::ids::{NodeId, RingId};

/// What a received join did to the gather sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum JoinOutcome {
    /// Nothing new (old news, or from a node I consider failed).
    Ignored,
    /// The sender proposes exactly my sets: it counts towards consensus.
    Agrees,
    /// My sets grew: send a new join and restart consensus.
    Changed,
}

/// The processor and fail sets of a membership round and who agrees with them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Gather {
    me: NodeId,
    pub(crate) proc_set: BTreeSet<NodeId>,
    pub(crate) fail_set: BTreeSet<NodeId>,
    consensus: BTreeSet<NodeId>,
}

impl Gather {
    /// A round starting from the members of my current ring.
    pub(crate) fn new(me: NodeId, members: &[NodeId]) -> Gather {
        let mut proc_set: BTreeSet<NodeId> = members.iter().copied().collect();
        proc_set.insert(me);
        Gather {
            me,
            proc_set,
            fail_set: BTreeSet::new(),
            consensus: BTreeSet::from([me]),
        }
    }

    /// Restarts consensus (after my sets changed, or on re-entering gather).
    pub(crate) fn restart(&mut self) {
        self.proc_set.insert(self.me);
        self.fail_set.remove(&self.me);
        self.consensus = BTreeSet::from([self.me]);
    }

    /// My join message.
    pub(crate) fn join(&self, ring_seq: u64) -> Join {
        Join {
            ring_seq,
            proc_set: self.proc_set.iter().copied().collect(),
            fail_set: self.fail_set.iter().copied().collect(),
        }
    }

    /// Adds `node` to the processor set (a foreign message or merge detect came from it).
    /// Returns whether the set grew.
    pub(crate) fn add_processor(&mut self, node: NodeId) -> bool {
        self.proc_set.insert(node)
    }

    /// Declares `node` failed. Returns whether the set grew.
    pub(crate) fn add_failed(&mut self, node: NodeId) -> bool {
        node != self.me && self.fail_set.insert(node)
    }

    /// Applies a join from `from`; `ring_members` are the members of my current ring (fail
    /// sets are only taken whole from them, Corosync 95615b2f).
    pub(crate) fn process_join(
        &mut self,
        from: NodeId,
        join: &Join,
        ring_members: &[NodeId],
    ) -> JoinOutcome {
        let same_proc = join.proc_set.len() == self.proc_set.len()
            && join.proc_set.iter().all(|n| self.proc_set.contains(n));
        let same_fail = join.fail_set.len() == self.fail_set.len()
            && join.fail_set.iter().all(|n| self.fail_set.contains(n));
        if same_proc && same_fail {
            self.consensus.insert(from);
            return JoinOutcome::Agrees;
        }
        let proc_subset = join.proc_set.iter().all(|n| self.proc_set.contains(n));
        let fail_subset = join.fail_set.iter().all(|n| self.fail_set.contains(n));
        if (proc_subset && fail_subset) || self.fail_set.contains(&from) {
            return JoinOutcome::Ignored;
        }
        let mut changed = false;
        for &node in &join.proc_set {
            changed |= self.proc_set.insert(node);
        }
        changed |= self.proc_set.insert(from);
        if join.fail_set.contains(&self.me) {
            // It excludes me; exclude it in turn (symmetric).
            changed |= self.add_failed(from);
        } else {
            let from_my_ring = ring_members.contains(&from);
            for &node in &join.fail_set {
                // A node of another ring cannot tell me that members of my ring failed.
                if from_my_ring || !ring_members.contains(&node) {
                    changed |= self.add_failed(node);
                }
            }
        }
        if changed {
            JoinOutcome::Changed
        } else {
            JoinOutcome::Ignored
        }
    }

    /// The proposed ring: processors not failed, sorted.
    pub(crate) fn proposed(&self) -> Vec<NodeId> {
        self.proc_set.difference(&self.fail_set).copied().collect()
    }

    /// Whether every proposed member agrees with my sets.
    pub(crate) fn consensus_reached(&self) -> bool {
        self.proposed().iter().all(|n| self.consensus.contains(n))
    }

    /// Whether I would represent the proposed ring (lowest id).
    pub(crate) fn i_am_representative(&self) -> bool {
        self.proposed().first() == Some(&self.me)
    }

    /// Consensus timed out: every proposed member that did not agree is declared failed.
    /// Returns whether the fail set grew.
    pub(crate) fn fail_silent_members(&mut self) -> bool {
        let silent: Vec<NodeId> = self
            .proposed()
            .into_iter()
            .filter(|n| !self.consensus.contains(n))
            .collect();
        let mut changed = false;
        for node in silent {
            changed |= self.add_failed(node);
        }
        changed
    }
}

/// The commit token of a new ring made by its representative `me`: the next ring seq is 4
/// above every seq known (PROTOCOL.md §1.10).
pub(crate) fn new_commit_token(me: NodeId, members: &[NodeId], known_seq: u64) -> CommitToken {
    debug_assert_eq!(
        members.first(),
        Some(&me),
        "the representative is the lowest member"
    );
    CommitToken {
        ring: RingId::new(me, known_seq + 4),
        token_seq: 0,
        memb_index: 0,
        entries: members
            .iter()
            .map(|&node| CommitEntry {
                node,
                ..CommitEntry::default()
            })
            .collect(),
    }
}

/// Members of the new ring coming from my old ring: those whose entry names the same old ring
/// (compare ring ids, not membership — Corosync 8671945c).
pub(crate) fn transitional_members(commit: &CommitToken, old_ring: RingId) -> Vec<NodeId> {
    commit
        .entries
        .iter()
        .filter(|e| e.old_ring == old_ring)
        .map(|e| e.node)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(list: &[u32]) -> Vec<NodeId> {
        list.iter().map(|&n| NodeId(n)).collect()
    }

    fn join(proc_set: &[u32], fail_set: &[u32]) -> Join {
        Join {
            ring_seq: 4,
            proc_set: ids(proc_set),
            fail_set: ids(fail_set),
        }
    }

    #[test]
    fn identical_joins_reach_consensus() {
        let mut gather = Gather::new(NodeId(1), &ids(&[1, 2, 3]));
        assert!(!gather.consensus_reached());
        assert_eq!(
            gather.process_join(NodeId(2), &join(&[1, 2, 3], &[]), &ids(&[1, 2, 3])),
            JoinOutcome::Agrees
        );
        assert_eq!(
            gather.process_join(NodeId(3), &join(&[1, 2, 3], &[]), &ids(&[1, 2, 3])),
            JoinOutcome::Agrees
        );
        assert!(gather.consensus_reached());
        assert!(gather.i_am_representative());
    }

    #[test]
    fn larger_sets_are_merged_and_restart_consensus() {
        let mut gather = Gather::new(NodeId(2), &ids(&[1, 2]));
        let outcome = gather.process_join(NodeId(3), &join(&[2, 3, 4], &[4]), &ids(&[1, 2]));
        assert_eq!(outcome, JoinOutcome::Changed);
        assert_eq!(gather.proposed(), ids(&[1, 2, 3]));
        // Old news is ignored.
        assert_eq!(
            gather.process_join(NodeId(3), &join(&[2, 3], &[]), &ids(&[1, 2])),
            JoinOutcome::Ignored
        );
    }

    #[test]
    fn exclusion_is_symmetric_and_self_is_never_failed() {
        let mut gather = Gather::new(NodeId(1), &ids(&[1, 2, 3]));
        let outcome = gather.process_join(NodeId(3), &join(&[1, 2, 3], &[1]), &ids(&[1, 2, 3]));
        assert_eq!(outcome, JoinOutcome::Changed);
        assert!(gather.fail_set.contains(&NodeId(3)));
        assert!(!gather.fail_set.contains(&NodeId(1)));
        assert!(!gather.add_failed(NodeId(1)));
        // A failed node's joins are ignored.
        assert_eq!(
            gather.process_join(NodeId(3), &join(&[1, 2, 3, 5], &[]), &ids(&[1, 2, 3])),
            JoinOutcome::Ignored
        );
    }

    #[test]
    fn foreign_nodes_cannot_fail_my_ring_members() {
        let mut gather = Gather::new(NodeId(1), &ids(&[1, 2]));
        gather.process_join(NodeId(7), &join(&[1, 2, 7, 8], &[2, 8]), &ids(&[1, 2]));
        assert!(!gather.fail_set.contains(&NodeId(2)));
        assert!(gather.fail_set.contains(&NodeId(8)));
    }

    #[test]
    fn consensus_timeout_fails_the_silent() {
        let mut gather = Gather::new(NodeId(1), &ids(&[1, 2, 3]));
        gather.process_join(NodeId(2), &join(&[1, 2, 3], &[]), &ids(&[1, 2, 3]));
        assert!(gather.fail_silent_members());
        assert_eq!(gather.proposed(), ids(&[1, 2]));
        gather.restart();
        assert!(!gather.consensus_reached());
        // Alone in the end: a singleton has consensus at once.
        let alone = Gather::new(NodeId(5), &[]);
        assert!(alone.consensus_reached() && alone.i_am_representative());
    }

    #[test]
    fn commit_token_and_transitional_members() {
        let mut commit = new_commit_token(NodeId(1), &ids(&[1, 2, 4]), 40);
        assert_eq!(commit.ring, RingId::new(NodeId(1), 44));
        let old = RingId::new(NodeId(1), 40);
        commit.entries[0].old_ring = old;
        commit.entries[1].old_ring = RingId::new(NodeId(2), 36);
        commit.entries[2].old_ring = old;
        assert_eq!(transitional_members(&commit, old), ids(&[1, 4]));
    }
}
