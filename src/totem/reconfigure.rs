//! Membership changes (PROTOCOL.md §1.7–1.10): failure detection, the gather state and its
//! consensus, the commit token's two rotations, recovery of the old rings' messages, and the
//! installation of the new ring with its transitional and regular configurations.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;

use super::events::{Configuration, ConfigurationKind, Event};
use super::membership::{Gather, JoinOutcome, new_commit_token, transitional_members};
use super::node::{Node, Recovery, SelfMessage, State, planted, successor};
use super::ordering::{Ordering, StoredPacket};
use super::timers::Timer;
use super::wire::{self, CommitToken, Join, McastBody, Message, Token};
use crate::ids::{NodeId, RingId};
use crate::time::Instant;

impl Node {
    /// Moves to `next`, asserting that the transition is one of the protocol's (W5,
    /// PROTOCOL.md §1.7–1.9).
    fn enter(&mut self, next: State) {
        let legal = matches!(
            (self.state, next),
            (
                State::Operational | State::Gather | State::Commit | State::Recovery,
                State::Gather
            ) | (State::Gather, State::Commit)
                | (State::Commit, State::Recovery)
                | (State::Recovery, State::Operational)
        );
        assert!(legal, "W5: illegal transition {:?} -> {next:?}", self.state);
        self.state = next;
    }

    /// W4: the commit token I am about to fill is well formed for me.
    fn assert_commit(&self, commit: &CommitToken) {
        assert!(
            usize::from(commit.memb_index) <= commit.entries.len(),
            "W4: memb_index {} above {} members",
            commit.memb_index,
            commit.entries.len()
        );
        assert!(
            commit
                .entries
                .windows(2)
                .all(|pair| pair[0].node < pair[1].node),
            "W4: commit token members not sorted"
        );
        assert_eq!(
            commit.ring.representative(),
            commit.entries[0].node,
            "W4: rep not lowest"
        );
        let installed = self.installed_ring().map_or(0, |ring| ring.seq);
        assert!(
            commit.ring.seq > installed,
            "W4: new ring {:?} not above my ring seq {installed} (node {})",
            commit.ring,
            self.config.node_id
        );
    }

    /// Members of the installed ring (empty before the first).
    pub(super) fn installed_members(&self) -> Vec<NodeId> {
        self.installed
            .as_ref()
            .map(|(_, members)| members.clone())
            .unwrap_or_default()
    }

    /// Enters (or re-enters) the gather state: announce my sets, restart consensus.
    pub(super) fn gather_enter(&mut self, now: Instant) {
        if self.state == State::Recovery {
            // Abandon the new ring; the old ring's messages were never touched.
            self.recovery = None;
            self.counters.recoveries_failed += 1;
        }
        if let Some((ring, _)) = &self.installed {
            self.ring = *ring;
        }
        self.enter(State::Gather);
        self.counters.gathers += 1;
        self.gather.restart();
        self.self_message = None;
        self.held_token = None;
        self.last_token_sent = None;
        for timer in [
            Timer::TokenLoss,
            Timer::TokenRetransmit,
            Timer::TokenHold,
            Timer::Merge,
        ] {
            self.timers.stop(timer);
        }
        self.timers.stop(Timer::SelfToken);
        self.timers
            .set(Timer::Consensus, now + self.config.consensus_timeout);
        self.send_join(now);
        self.check_consensus(now);
    }

    /// Multicasts my join and arms the next one.
    pub(super) fn send_join(&mut self, now: Instant) {
        if self.state != State::Gather {
            return;
        }
        let join = self.gather.join(self.known_ring_seq);
        let mut bytes = Vec::with_capacity(64);
        wire::encode_join(&mut bytes, self.config.node_id, &join);
        self.multicast(Bytes::from(bytes));
        let jitter = jitter(&mut self.prng, self.config.send_join);
        self.timers
            .set(Timer::Join, now + self.config.join_timeout + jitter);
    }

    /// A join from `from` (PROTOCOL.md §1.8).
    pub(super) fn handle_join(&mut self, now: Instant, from: NodeId, join: &Join) {
        let me = self.config.node_id;
        if !join.proc_set.contains(&from) {
            self.counters.datagrams_malformed += 1;
            return;
        }
        if join.fail_set.contains(&from) {
            self.handle_leave(now, from, join);
            return;
        }
        match self.state {
            State::Operational => {
                let members = self.installed_members();
                // Corosync cfbb021e: ignore joins that exclude me, and old news from members.
                if join.fail_set.contains(&me)
                    || (members.contains(&from) && join.ring_seq < self.ring.seq)
                {
                    return;
                }
                self.known_ring_seq = self.known_ring_seq.max(join.ring_seq);
                self.gather = Gather::new(me, &members);
                let outcome = self.gather.process_join(from, join, &members);
                self.gather_enter(now);
                if outcome == JoinOutcome::Agrees {
                    self.gather.process_join(from, join, &members);
                    self.check_consensus(now);
                }
            }
            State::Gather => {
                self.known_ring_seq = self.known_ring_seq.max(join.ring_seq);
                let members = self.installed_members();
                match self.gather.process_join(from, join, &members) {
                    JoinOutcome::Agrees => self.check_consensus(now),
                    JoinOutcome::Changed => self.gather_enter(now),
                    JoinOutcome::Ignored => {}
                }
            }
            State::Commit | State::Recovery => {
                // Only a member of the proposed ring that knows of it stops this attempt.
                let proposed = self.gather.proposed();
                if !proposed.contains(&from) || join.ring_seq < self.ring.seq {
                    return;
                }
                self.known_ring_seq = self.known_ring_seq.max(join.ring_seq);
                // A new membership question: start from the ring being formed, not from the
                // last round's fail set (carrying it over excludes healthy nodes round after
                // round); consensus timeouts fail whoever really is silent.
                let members = self.installed_members();
                self.gather = Gather::new(me, &proposed);
                self.gather.process_join(from, join, &members);
                self.gather_enter(now);
            }
        }
    }

    /// A leave from `from` ([`Node::leave`]): it is failed at once wherever it matters to the
    /// ring being operated or formed. A leave older than my ring (a previous incarnation's,
    /// delayed) is ignored, as are leaves of nodes that play no part in my ring.
    fn handle_leave(&mut self, now: Instant, from: NodeId, join: &Join) {
        if join.ring_seq < self.ring.seq {
            return;
        }
        let me = self.config.node_id;
        self.counters.leaves_received += 1;
        match self.state {
            State::Operational => {
                let members = self.installed_members();
                if members.contains(&from) {
                    self.gather = Gather::new(me, &members);
                    self.gather.add_failed(from);
                    self.gather_enter(now);
                }
            }
            State::Gather => {
                if self.gather.add_failed(from) {
                    self.gather_enter(now);
                }
            }
            State::Commit | State::Recovery => {
                let proposed = self.gather.proposed();
                if proposed.contains(&from) {
                    self.gather = Gather::new(me, &proposed);
                    self.gather.add_failed(from);
                    self.gather_enter(now);
                }
            }
        }
    }

    /// A message of another ring from `from` (a foreign mcast or a merge detect).
    pub(super) fn handle_foreign(&mut self, now: Instant, from: NodeId, ring: RingId) {
        let members = self.installed_members();
        // Late traffic of an older ring of my own members is old news.
        let stale = members.contains(&from) && ring.seq < self.ring.seq;
        if ring == self.ring || stale {
            self.counters.datagrams_foreign += 1;
            return;
        }
        match self.state {
            State::Operational => {
                self.counters.foreign_triggers += 1;
                self.gather = Gather::new(self.config.node_id, &members);
                self.gather.add_processor(from);
                self.gather_enter(now);
            }
            State::Gather => {
                if self.gather.add_processor(from) {
                    self.counters.foreign_triggers += 1;
                    self.gather_enter(now);
                }
            }
            State::Commit | State::Recovery => self.counters.datagrams_foreign += 1,
        }
    }

    /// The idle representative announces its ring so that other partitions notice it.
    pub(super) fn send_merge_detect(&mut self, now: Instant) {
        if self.state != State::Operational || self.held_token.is_none() {
            return;
        }
        let mut bytes = Vec::with_capacity(wire::HEADER_LEN + wire::RING_LEN);
        wire::encode_merge_detect(&mut bytes, self.config.node_id, self.ring);
        self.multicast(Bytes::from(bytes));
        self.counters.merge_detects_sent += 1;
        self.timers
            .set(Timer::Merge, now + self.config.merge_timeout);
    }

    /// No consensus in time: whoever did not agree has failed.
    pub(super) fn consensus_timeout(&mut self, now: Instant) {
        if self.state != State::Gather {
            return;
        }
        self.gather.fail_silent_members();
        self.gather_enter(now);
    }

    /// No token for `token` ms.
    pub(super) fn token_lost(&mut self, now: Instant) {
        self.counters.token_losses += 1;
        match self.state {
            State::Operational => {
                self.gather = Gather::new(self.config.node_id, &self.installed_members());
                self.gather_enter(now);
            }
            State::Commit | State::Recovery => self.gather_enter(now),
            State::Gather => {}
        }
    }

    /// This node held the ring's aru back for `fail_recv_const` visits: like Corosync, it
    /// excludes itself (it forms a ring of its own; a merge brings it back).
    pub(super) fn failed_to_receive(&mut self, now: Instant) {
        let members = self.installed_members();
        self.gather = Gather::new(self.config.node_id, &members);
        for member in members {
            self.gather.add_failed(member);
        }
        self.gather_enter(now);
    }

    /// In gather: if every proposed member agrees and I represent them, start the commit.
    fn check_consensus(&mut self, now: Instant) {
        if self.state != State::Gather
            || !self.gather.consensus_reached()
            || !self.gather.i_am_representative()
        {
            return;
        }
        let proposed = self.gather.proposed();
        if planted!(self, SingletonSkipsCommit) && proposed == [self.config.node_id] {
            self.enter(State::Operational);
            return;
        }
        let mut known = self.known_ring_seq.max(self.ring.seq);
        if planted!(self, RingSeqNotAdvanced) {
            known = self
                .installed_ring()
                .map_or(known, |ring| ring.seq.saturating_sub(4));
        }
        let commit = new_commit_token(self.config.node_id, &proposed, known);
        self.commit_enter(now, commit);
    }

    /// A commit token (PROTOCOL.md §1.8–1.9).
    pub(super) fn handle_commit(&mut self, now: Instant, commit: CommitToken) {
        let me = self.config.node_id;
        let members: Vec<NodeId> = commit.entries.iter().map(|e| e.node).collect();
        let Some(position) = members.iter().position(|&n| n == me) else {
            self.counters.datagrams_foreign += 1;
            return;
        };
        if commit.ring.representative() != members[0] {
            self.counters.datagrams_malformed += 1;
            return;
        }
        match self.state {
            State::Gather => {
                // First rotation: my sets agree, the ring is new, and it is my turn.
                let fresh =
                    commit.ring.seq > self.ring.seq && commit.ring.seq > self.known_ring_seq;
                if fresh
                    && members == self.gather.proposed()
                    && usize::from(commit.memb_index) == position
                {
                    self.commit_enter(now, commit);
                } else {
                    self.counters.tokens_discarded += 1;
                }
            }
            State::Commit => {
                let complete = usize::from(commit.memb_index) == members.len();
                if commit.ring == self.ring && complete && commit.token_seq > self.commit_token_seq
                {
                    self.recovery_enter(now, commit);
                } else {
                    self.counters.tokens_discarded += 1;
                }
            }
            State::Recovery => {
                // The second rotation is back at the representative: the new ring starts.
                let first_return = self.recovery.as_ref().is_some_and(|r| !r.token_created);
                if commit.ring == self.ring
                    && me == members[0]
                    && first_return
                    && commit.token_seq > self.commit_token_seq
                {
                    self.commit_token_seq = commit.token_seq;
                    self.timers.stop(Timer::TokenRetransmit);
                    self.last_token_sent = None;
                    let recovery = self.recovery.as_mut().expect("recovering");
                    recovery.token_created = true;
                    // The flag is mine to clear once my queue is empty.
                    recovery.i_set_retrans_flg = !recovery.queue.is_empty();
                    let token = Token {
                        ring: self.ring,
                        token_seq: 1,
                        aru_addr: me,
                        retrans_flg: recovery.i_set_retrans_flg,
                        ..Token::default()
                    };
                    self.handle_token(now, token);
                } else {
                    self.counters.tokens_discarded += 1;
                }
            }
            State::Operational => self.counters.tokens_discarded += 1,
        }
    }

    /// Forwards a commit token to the next member of its ring.
    fn forward_commit(&mut self, now: Instant, commit: CommitToken) {
        let members: Vec<NodeId> = commit.entries.iter().map(|e| e.node).collect();
        self.next = successor(&members, self.config.node_id);
        if self.next == self.config.node_id {
            self.self_message = Some(SelfMessage::Commit(commit));
            self.timers.set(Timer::SelfToken, now);
            return;
        }
        let mut bytes = Vec::with_capacity(32 + commit.entries.len() * 37);
        wire::encode_commit_token(&mut bytes, self.config.node_id, &commit);
        let bytes = Bytes::from(bytes);
        self.transmits
            .push_back((super::events::Destination::Node(self.next), bytes.clone()));
        self.last_token_sent = Some(bytes);
        self.timers
            .set(Timer::TokenRetransmit, now + self.config.token_retransmit);
    }

    /// First rotation: fill my entry, adopt the new ring id, persist its seq, pass it on.
    fn commit_enter(&mut self, now: Instant, mut commit: CommitToken) {
        self.assert_commit(&commit);
        let me = self.config.node_id;
        let old_ring = self.installed_ring().unwrap_or_default();
        if let Some(entry) = commit.entries.iter_mut().find(|e| e.node == me) {
            entry.old_ring = old_ring;
            entry.old_aru = self.ordering.my_aru;
            entry.high_delivered = self.ordering.high_delivered();
            entry.received_flg = self.ordering.my_aru == self.ordering.high_seq_received;
        }
        commit.memb_index += 1;
        self.commit_token_seq = commit.token_seq;
        commit.token_seq += 1;
        self.ring = commit.ring;
        self.known_ring_seq = self.known_ring_seq.max(commit.ring.seq);
        self.events
            .push_back(Event::PersistRingSeq(commit.ring.seq));
        self.enter(State::Commit);
        self.counters.commits += 1;
        self.timers.stop(Timer::Join);
        self.timers.stop(Timer::Consensus);
        self.timers
            .set(Timer::TokenLoss, now + self.config.token_timeout);
        self.forward_commit(now, commit);
    }

    /// Second rotation: learn every member's old-ring state, queue what others lack.
    fn recovery_enter(&mut self, now: Instant, mut commit: CommitToken) {
        self.commit_token_seq = commit.token_seq;
        commit.token_seq += 1;
        let members: Vec<NodeId> = commit.entries.iter().map(|e| e.node).collect();
        let mut old_rings: Vec<RingId> = commit.entries.iter().map(|e| e.old_ring).collect();
        old_rings.sort_unstable();
        old_rings.dedup();
        if old_rings.len() >= 3 {
            self.counters.merges_of_three += 1;
        }
        let old_ring = self.installed_ring();
        let transitional = old_ring
            .map(|ring| transitional_members(&commit, ring))
            .unwrap_or_default();
        let entries: Vec<_> = commit
            .entries
            .iter()
            .filter(|e| transitional.contains(&e.node))
            .copied()
            .collect();
        // A member lacks old-ring messages if it reported a gap, or if its aru is below what I
        // hold (the received flag only says "no gap here", not "nothing missing at the end").
        // Only the others matter: what I hold, I have.
        let me = self.config.node_id;
        let high = self.ordering.high_seq_received;
        let others: Vec<_> = entries.iter().filter(|e| e.node != me).collect();
        let low = others
            .iter()
            .map(|e| e.old_aru)
            .min()
            .unwrap_or(high)
            .min(high);
        let high_ring_delivered = entries.iter().map(|e| e.high_delivered).max().unwrap_or(0);
        let mut queue = VecDeque::new();
        if others.iter().any(|e| !e.received_flg || e.old_aru < high) {
            self.deliver_members.clone_from(&transitional);
            if low < high {
                let old_ring = self.ordering.ring();
                for (seq, packet) in self.ordering.packets_in(low + 1..=high) {
                    queue.push_back(packet.for_recovery(old_ring, seq));
                }
            }
        } else if self.deliver_members.is_empty() {
            self.deliver_members.clone_from(&transitional);
        }
        self.recovery = Some(Recovery {
            ordering: Ordering::new(self.config.node_id, self.ring, self.config.message_size_max),
            commit: commit.clone(),
            members,
            transitional,
            queue,
            high_ring_delivered,
            i_set_retrans_flg: false,
            retrans_flg_count: 0,
            install_seq: 0,
            aru_ok_visits: 0,
            received_flg: false,
            token_created: false,
        });
        if let Some(recovery) = &mut self.recovery {
            recovery.ordering.agreed_on_receipt = self.ordering.agreed_on_receipt;
        }
        self.enter(State::Recovery);
        self.counters.recoveries += 1;
        self.reset_token_state();
        self.timers
            .set(Timer::TokenLoss, now + self.config.token_timeout);
        self.forward_commit(now, commit);
    }

    /// Recovery bookkeeping on each token visit (PROTOCOL.md §1.9, "RECOVERY state").
    pub(super) fn recovery_token_visit(&mut self, now: Instant, token: &mut Token) {
        let Some(recovery) = self.recovery.as_mut() else {
            return;
        };
        if !recovery.queue.is_empty() {
            token.retrans_flg = true;
            recovery.i_set_retrans_flg = true;
        } else if recovery.i_set_retrans_flg {
            token.retrans_flg = false;
            recovery.i_set_retrans_flg = false;
        }
        if token.retrans_flg {
            recovery.retrans_flg_count = 0;
        } else {
            recovery.retrans_flg_count = recovery.retrans_flg_count.saturating_add(1);
        }
        if recovery.retrans_flg_count == 2 {
            recovery.install_seq = token.seq;
        }
        let count = recovery.retrans_flg_count;
        if count >= 2 && recovery.ordering.my_aru >= recovery.install_seq && !recovery.received_flg
        {
            recovery.received_flg = true;
            self.deliver_members.clone_from(&recovery.transitional);
        }
        if count >= 3 && token.aru >= recovery.install_seq {
            recovery.aru_ok_visits += 1;
        } else {
            recovery.aru_ok_visits = 0;
        }
        if recovery.aru_ok_visits >= 2 {
            self.install(now);
        }
    }

    /// Installs the new ring in one local step (PROTOCOL.md §1.9, "Shift to OPERATIONAL").
    fn install(&mut self, _now: Instant) {
        let Some(mut recovery) = self.recovery.take() else {
            return;
        };
        let old = self.installed.take();

        // Old-ring messages recovered on the new ring go back to their place in the old ring.
        if let Some((old_ring, _)) = &old {
            let recovered: Vec<Bytes> = recovery
                .ordering
                .packets_in(1..=u64::MAX)
                .filter_map(|(_, packet)| packet.encapsulated.clone())
                .collect();
            for inner in recovered {
                let Ok(wire::Datagram {
                    message: Message::Mcast(mcast),
                    ..
                }) = wire::decode(&inner)
                else {
                    continue;
                };
                let McastBody::Chunks(chunks) = mcast.body else {
                    continue;
                };
                if mcast.header.ring != *old_ring {
                    continue;
                }
                let seq = mcast.header.seq;
                let packet = StoredPacket::new(&inner, &mcast.header, chunks);
                self.ordering.insert(
                    seq,
                    packet,
                    u64::MAX / 4,
                    &mut self.events,
                    &mut self.counters,
                );
            }
            // 1. The old ring in order while there is no hole; SAFE up to what some
            //    transitional member already delivered.
            self.ordering.safe_upto = self.ordering.safe_upto.max(recovery.high_ring_delivered);
            self.ordering.deliver(&mut self.events, &mut self.counters);
            // 2. The transitional configuration.
            let left: Vec<NodeId> = old
                .as_ref()
                .map(|(_, members)| {
                    members
                        .iter()
                        .copied()
                        .filter(|m| !recovery.transitional.contains(m))
                        .collect()
                })
                .unwrap_or_default();
            if !left.is_empty() {
                self.counters.transitional_with_left += 1;
            }
            self.events.push_back(Event::Configuration(Configuration {
                kind: ConfigurationKind::Transitional,
                ring: recovery.commit.ring,
                old_ring: *old_ring,
                members: recovery.transitional.clone(),
                left,
                joined: Vec::new(),
            }));
            // 3. What is left of the old ring, from the delivery obligations' origins.
            let before = self.counters.messages_delivered;
            self.ordering.deliver_remaining(
                &self.deliver_members,
                &mut self.events,
                &mut self.counters,
            );
            self.counters.delivered_in_transitional += self.counters.messages_delivered - before;
        }
        // 4. The regular configuration.
        let joined: Vec<NodeId> = recovery
            .members
            .iter()
            .copied()
            .filter(|m| !recovery.transitional.contains(m))
            .collect();
        self.events.push_back(Event::Configuration(Configuration {
            kind: ConfigurationKind::Regular,
            ring: recovery.commit.ring,
            old_ring: recovery.commit.ring,
            members: recovery.members.clone(),
            left: Vec::new(),
            joined,
        }));
        // 5. Install. A message cut into fragments on the old ring starts over on the new one:
        //    its first fragments stay behind in the old ring, where nobody can complete it.
        if let Some(front) = self.send_queue.front_mut() {
            front.sent = 0;
        }
        recovery.ordering.agreed_on_receipt = self.ordering.agreed_on_receipt;
        self.ordering = recovery.ordering;
        self.installed = Some((recovery.commit.ring, recovery.members.clone()));
        self.gather = Gather::new(self.config.node_id, &recovery.members);
        self.deliver_members.clear();
        self.enter(State::Operational);
        self.counters.rings_installed += 1;
        self.next = successor(&recovery.members, self.config.node_id);
    }
}

/// A random delay in `0..max` (the `send_join` jitter).
fn jitter(prng: &mut crate::prng::Prng, max: Duration) -> Duration {
    let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
    if nanos == 0 {
        Duration::ZERO
    } else {
        Duration::from_nanos(prng.below(nanos))
    }
}
