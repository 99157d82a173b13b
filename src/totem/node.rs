//! [`Node`]: the sans-IO facade of one protocol core — its state, its public inputs and
//! outputs, and the dispatch of datagrams and timers. The ordering protocol on token receipt is
//! in `token.rs`, the membership transitions in `reconfigure.rs`.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

use super::config::Config;
use super::events::{Counters, Destination, Event, Transmit};
use super::membership::Gather;
use super::ordering::{Ordering, StoredPacket};
use super::timers::{Timer, TimerTable};
use super::wire::{self, CommitToken, McastBody, Message, Token};
use crate::api::Guarantee;
use crate::error::{Error, Result};
use crate::ids::{NodeId, RingId};
use crate::prng::Prng;
use crate::time::Instant;

/// Whether the planted bug `$bug` is on; always false outside simulator builds.
macro_rules! planted {
    ($node:expr, $bug:ident) => {{
        #[cfg(feature = "sim")]
        let on = $node.config.planted_bug == super::config::PlantedBug::$bug;
        #[cfg(not(feature = "sim"))]
        let on = false;
        on
    }};
}
pub(super) use planted;

/// The protocol state of one member (PROTOCOL.md §1.7–1.9).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum State {
    /// Ordering messages on an installed ring.
    Operational,
    /// Agreeing on the members of a new ring.
    Gather,
    /// The commit token's first rotation.
    Commit,
    /// Bringing every member of the new ring the old rings' messages.
    Recovery,
}

/// A message accepted by [`Node::mcast`], waiting for the token.
#[derive(Debug)]
pub(super) struct Outgoing {
    pub(super) number: u64,
    pub(super) guarantee: Guarantee,
    pub(super) payload: Bytes,
    /// Bytes already given a seq.
    pub(super) sent: usize,
}

/// Something this node sends to itself (a one-member ring, or a new ring's first token).
#[derive(Debug)]
pub(super) enum SelfMessage {
    Token(Token),
    Commit(CommitToken),
}

/// The new ring while it recovers (PROTOCOL.md §1.9).
#[derive(Debug)]
pub(super) struct Recovery {
    /// The commit token after its first rotation (every member's entry).
    pub(super) commit: CommitToken,
    /// The new ring's members.
    pub(super) members: Vec<NodeId>,
    /// Members coming from my old ring.
    pub(super) transitional: Vec<NodeId>,
    /// The new ring's messages (encapsulated old-ring ones).
    pub(super) ordering: Ordering,
    /// Old-ring messages still to re-broadcast.
    pub(super) queue: VecDeque<Bytes>,
    /// Highest old-ring seq some transitional member delivered: safe to deliver as regular.
    pub(super) high_ring_delivered: u64,
    pub(super) i_set_retrans_flg: bool,
    pub(super) retrans_flg_count: u32,
    pub(super) install_seq: u64,
    pub(super) aru_ok_visits: u32,
    pub(super) received_flg: bool,
    /// The representative made the first token (later commit tokens are duplicates).
    pub(super) token_created: bool,
}

/// One member of a Totem ring, as a pure state machine.
///
/// It performs no I/O and reads no clock: every input carries `now`, every output is pulled.
/// After each `handle_*` call or command, drain in this order:
/// 1. [`Node::poll_transmit`] until `None`,
/// 2. [`Node::poll_event`] until `None`,
/// 3. [`Node::poll_timeout`] to know when to call [`Node::handle_timeout`].
///
/// `now` must never go backwards between calls.
///
/// A node starts in the gather state, as Corosync does: the first ring it forms is its first
/// configuration.
#[derive(Debug)]
#[allow(
    clippy::struct_excessive_bools,
    reason = "independent protocol flags, each named after the paper's variable"
)]
pub struct Node {
    pub(super) config: Config,
    pub(super) prng: Prng,
    pub(super) state: State,
    /// My ring id: the installed ring, or the proposed one from COMMIT on.
    pub(super) ring: RingId,
    /// The last installed regular configuration (`None` before the first).
    pub(super) installed: Option<(RingId, Vec<NodeId>)>,
    /// Successor on the ring being operated (or the commit token's ring).
    pub(super) next: NodeId,
    /// The installed ring's messages.
    pub(super) ordering: Ordering,
    /// The membership round (gather and after).
    pub(super) gather: Gather,
    /// The highest ring seq this node knows of (own, persisted, seen in joins).
    pub(super) known_ring_seq: u64,
    /// Delivery obligations: origins whose old-ring messages must be delivered at install.
    pub(super) deliver_members: Vec<NodeId>,
    /// The new ring while recovering.
    pub(super) recovery: Option<Recovery>,
    /// token_seq of the last accepted commit token.
    pub(super) commit_token_seq: u64,

    /// token_seq of the last accepted token on this ring.
    pub(super) my_token_seq: u64,
    /// White-box: (ring, token_seq, seq, aru) of the last token this node accepted.
    pub(super) last_accepted: (RingId, u64, u64, u64),
    /// The token's aru at my previous visit.
    pub(super) my_last_aru: u64,
    /// Consecutive visits with an unchanged aru held back by someone.
    pub(super) my_aru_count: u32,
    /// token.seq at my previous visit, and for how many visits it has not changed.
    pub(super) last_token_seq_value: u64,
    pub(super) seq_unchanged_visits: u32,
    /// Arus of the tokens I forwarded on my last two visits (SAFE delivery).
    pub(super) aru_forwarded: [u64; 2],
    /// Visits each missing seq has been seen missing.
    pub(super) missing_visits: BTreeMap<u64, u32>,
    /// Flow control: packets I sent on my previous visit, my backlog then.
    pub(super) my_trc: u32,
    pub(super) my_pbl: u32,
    /// Seq of my previous packet on this ring (chains a sender's packets).
    pub(super) my_last_sent_seq: u64,

    /// The last token or commit token I forwarded, encoded, for retransmission.
    pub(super) last_token_sent: Option<Bytes>,
    /// A token or commit token for myself.
    pub(super) self_message: Option<SelfMessage>,
    /// A token held by this idle representative.
    pub(super) held_token: Option<Token>,
    /// Whether a hold cancel was sent since the last token visit.
    pub(super) hold_cancel_sent: bool,
    /// Whether I set the token's `recovering` flag (and must clear it once installed).
    pub(super) set_recovering_flag: bool,

    pub(super) send_queue: VecDeque<Outgoing>,
    pub(super) send_queue_bytes: usize,
    pub(super) next_message_number: u64,
    pub(super) refused_since_writable: bool,

    /// Whether this node left the ring ([`Node::leave`]); it then ignores all input.
    pub(super) departed: bool,

    pub(super) transmits: VecDeque<(Destination, Bytes)>,
    pub(super) events: VecDeque<Event>,
    pub(super) timers: TimerTable,
    pub(super) counters: Counters,
}

impl Node {
    /// A node that starts gathering at `now` to form a ring with whoever answers.
    pub fn new(config: Config, now: Instant) -> Result<Node> {
        config.validate()?;
        let me = config.node_id;
        let mut node = Node {
            prng: Prng::derive(config.rng_seed, u64::from(me.0)),
            state: State::Gather,
            ring: RingId::new(me, config.ring_seq_start),
            installed: None,
            next: me,
            ordering: Ordering::new(me, RingId::default(), config.message_size_max),
            gather: Gather::new(me, &[]),
            known_ring_seq: config.ring_seq_start,
            deliver_members: Vec::new(),
            recovery: None,
            commit_token_seq: 0,
            my_token_seq: 0,
            last_accepted: (RingId::default(), 0, 0, 0),
            my_last_aru: 0,
            my_aru_count: 0,
            last_token_seq_value: 0,
            seq_unchanged_visits: 0,
            aru_forwarded: [0; 2],
            missing_visits: BTreeMap::new(),
            my_trc: 0,
            my_pbl: 0,
            my_last_sent_seq: 0,
            last_token_sent: None,
            self_message: None,
            held_token: None,
            hold_cancel_sent: false,
            set_recovering_flag: false,
            send_queue: VecDeque::new(),
            send_queue_bytes: 0,
            next_message_number: config.message_number_start,
            refused_since_writable: false,
            departed: false,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            timers: TimerTable::default(),
            counters: Counters::default(),
            config,
        };
        node.ordering.agreed_on_receipt = planted!(node, AgreedOnReceipt);
        node.gather_enter(now);
        Ok(node)
    }

    /// This node's id.
    #[must_use]
    pub fn id(&self) -> NodeId {
        self.config.node_id
    }

    /// The configuration it runs with.
    #[must_use]
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The protocol state.
    #[must_use]
    pub fn state(&self) -> State {
        self.state
    }

    /// My ring id (the proposed ring from the commit state on).
    #[must_use]
    pub fn ring(&self) -> RingId {
        self.ring
    }

    /// The installed ring, if any.
    #[must_use]
    pub fn installed_ring(&self) -> Option<RingId> {
        self.installed.as_ref().map(|(ring, _)| *ring)
    }

    /// The installed ring's members, sorted (empty before the first ring).
    #[must_use]
    pub fn members(&self) -> &[NodeId] {
        self.installed.as_ref().map_or(&[], |(_, members)| members)
    }

    /// The counters.
    #[must_use]
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// All-received-up-to on the installed ring.
    #[must_use]
    pub fn my_aru(&self) -> u64 {
        self.ordering.my_aru
    }

    /// White-box: `(ring, token_seq, seq, aru)` of the last token this node accepted, as
    /// forwarded.
    #[must_use]
    pub fn last_accepted_token(&self) -> (RingId, u64, u64, u64) {
        self.last_accepted
    }

    /// White-box, while recovering: (old-ring messages still to re-broadcast, visits with the
    /// retransmit flag clear, install seq, aru on the new ring).
    #[must_use]
    pub fn recovery_progress(&self) -> Option<(usize, u32, u64, u64)> {
        self.recovery.as_ref().map(|r| {
            (
                r.queue.len(),
                r.retrans_flg_count,
                r.install_seq,
                r.ordering.my_aru,
            )
        })
    }

    /// White-box: every seq at or below this was freed after it became stable.
    #[must_use]
    pub fn freed_upto(&self) -> u64 {
        self.ordering.freed_upto
    }

    /// Bytes accepted by `mcast` and not yet given a seq.
    #[must_use]
    pub fn send_queue_bytes(&self) -> usize {
        self.send_queue_bytes
    }

    /// White-box: whether this node has received `seq` of `ring`.
    #[must_use]
    pub fn has_received(&self, ring: RingId, seq: u64) -> bool {
        self.ordering.has(ring, seq)
    }

    /// Accepts `payload` for multicast with `guarantee`, or refuses it before accepting.
    ///
    /// Returns the message number (unique for this incarnation), which later events name.
    /// `CS_ERR_TOO_BIG` if it exceeds `message_size_max`; `CS_ERR_TRY_AGAIN` if the send
    /// queue is full — nothing was accepted then, and [`Event::Writable`] follows once there
    /// is room. An accepted message is never dropped by this node; while no ring is installed
    /// it waits for one.
    pub fn mcast(&mut self, now: Instant, guarantee: Guarantee, payload: Bytes) -> Result<u64> {
        if self.departed {
            return Err(Error::Library("this node has left the ring".into()));
        }
        if payload.len() > self.config.message_size_max {
            return Err(Error::TooBig(
                format!(
                    "message of {} bytes exceeds the limit of {} bytes",
                    payload.len(),
                    self.config.message_size_max
                )
                .into(),
            ));
        }
        if self.send_queue_bytes + payload.len() > self.config.send_queue_bytes_max {
            self.counters.messages_refused += 1;
            self.refused_since_writable = true;
            return Err(Error::TryAgain(
                format!(
                    "send queue holds {} of {} bytes",
                    self.send_queue_bytes, self.config.send_queue_bytes_max
                )
                .into(),
            ));
        }
        let number = self.next_message_number;
        self.next_message_number += 1;
        self.send_queue_bytes += payload.len();
        self.send_queue.push_back(Outgoing {
            number,
            guarantee,
            payload,
            sent: 0,
        });
        self.counters.messages_accepted += 1;
        if self.state == State::Operational {
            self.cancel_hold(now);
        }
        Ok(number)
    }

    /// Feeds one datagram from node `from`. Malformed or foreign datagrams are counted and
    /// dropped; they never fail the call.
    pub fn handle_datagram(&mut self, now: Instant, from: NodeId, datagram: &[u8]) {
        // One copy into shared storage: stored chunks and deliveries borrow from it.
        self.handle_datagram_bytes(now, from, &Bytes::copy_from_slice(datagram));
    }

    /// [`Node::handle_datagram`] for a datagram already in shared storage (no copy).
    pub fn handle_datagram_bytes(&mut self, now: Instant, from: NodeId, bytes: &Bytes) {
        if self.departed {
            return;
        }
        if self.config.nodes.binary_search(&from).is_err() || from == self.config.node_id {
            self.counters.datagrams_foreign += 1;
            return;
        }
        let decoded = match wire::decode(bytes) {
            Ok(decoded) if decoded.sender == from => decoded,
            _ => {
                self.counters.datagrams_malformed += 1;
                return;
            }
        };
        match decoded.message {
            Message::Token(token) => self.handle_token(now, token),
            Message::Mcast(mcast) => self.handle_mcast(now, from, bytes, mcast),
            Message::TokenHoldCancel { ring } => {
                if ring == self.ring && self.state == State::Operational {
                    self.cancel_hold(now);
                } else {
                    self.counters.datagrams_foreign += 1;
                }
            }
            Message::MergeDetect { ring } => self.handle_foreign(now, from, ring),
            Message::Join(join) => self.handle_join(now, from, &join),
            Message::CommitToken(commit) => self.handle_commit(now, commit),
        }
    }

    fn handle_mcast(&mut self, now: Instant, from: NodeId, bytes: &Bytes, mcast: wire::Mcast<'_>) {
        if mcast.header.ring != self.ring {
            self.handle_foreign(now, from, mcast.header.ring);
            return;
        }
        let window = self.config.sort_queue_capacity;
        let seq = mcast.header.seq;
        let packet = match (self.state, mcast.body) {
            // Recovery messages occupy seqs of the new ring. A member that already installed it
            // still stores them (they fill its seq space; their content is an old ring's).
            (State::Recovery | State::Operational, McastBody::Encapsulated(inner)) => {
                if self.state == State::Operational && !self.ordering.wants(seq, window) {
                    self.counters.mcasts_discarded += 1;
                    return;
                }
                StoredPacket::encapsulated(bytes, &mcast.header, inner)
            }
            (State::Operational | State::Gather, McastBody::Chunks(chunks)) => {
                if !self.ordering.wants(seq, window) {
                    // Mostly retransmissions for someone else: drop before storing anything.
                    self.counters.mcasts_discarded += 1;
                    return;
                }
                StoredPacket::new(bytes, &mcast.header, chunks)
            }
            _ => {
                self.counters.datagrams_foreign += 1;
                return;
            }
        };
        self.receive_packet(seq, packet);
    }

    /// Leaves the ring for good: multicasts a leave (a join that lists this node as failed,
    /// Corosync's `memb_leave_message`) so that the others form a new ring at once instead of
    /// waiting for the token timeout, and from then on ignores all input and timers. The leave
    /// goes out twice: it is one datagram on a lossy network, and a lost one only costs the
    /// token timeout.
    pub fn leave(&mut self, _now: Instant) {
        if self.departed {
            return;
        }
        let me = self.config.node_id;
        let mut proc_set = match self.state {
            State::Operational => self.installed_members(),
            _ => self.gather.proposed(),
        };
        if let Err(at) = proc_set.binary_search(&me) {
            proc_set.insert(at, me);
        }
        let join = wire::Join {
            ring_seq: self.known_ring_seq.max(self.ring.seq),
            proc_set,
            fail_set: vec![me],
        };
        let mut bytes = Vec::with_capacity(64);
        wire::encode_join(&mut bytes, me, &join);
        let bytes = Bytes::from(bytes);
        self.multicast(bytes.clone());
        self.multicast(bytes);
        self.departed = true;
        self.timers = TimerTable::default();
        self.self_message = None;
        self.held_token = None;
    }

    /// Whether [`Node::leave`] was called.
    #[must_use]
    pub fn has_left(&self) -> bool {
        self.departed
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.departed {
            return;
        }
        while let Some(timer) = self.timers.pop_expired(now) {
            match timer {
                Timer::SelfToken => match self.self_message.take() {
                    Some(SelfMessage::Token(token)) => self.handle_token(now, token),
                    Some(SelfMessage::Commit(commit)) => self.handle_commit(now, commit),
                    None => {}
                },
                Timer::TokenHold => {
                    if let Some(token) = self.held_token.take() {
                        self.send_token(now, token);
                    }
                }
                Timer::TokenRetransmit => {
                    if let Some(bytes) = &self.last_token_sent {
                        self.transmits
                            .push_back((Destination::Node(self.next), bytes.clone()));
                        self.counters.token_retransmits += 1;
                        self.timers
                            .set(Timer::TokenRetransmit, now + self.config.token_retransmit);
                    }
                }
                Timer::TokenLoss => self.token_lost(now),
                Timer::Join => self.send_join(now),
                Timer::Consensus => self.consensus_timeout(now),
                Timer::Merge => self.send_merge_detect(now),
            }
        }
    }

    /// Writes the next datagram into `buf` (replacing its contents).
    pub fn poll_transmit(&mut self, buf: &mut Vec<u8>) -> Option<Transmit> {
        let (destination, bytes) = self.transmits.pop_front()?;
        buf.clear();
        buf.extend_from_slice(&bytes);
        Some(Transmit {
            destination,
            len: bytes.len(),
        })
    }

    /// [`Node::poll_transmit`] without the copy: the datagram in shared storage.
    pub fn poll_transmit_bytes(&mut self) -> Option<(Destination, Bytes)> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Node::handle_timeout`] must be called next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// Stores a received packet in the ordering of the ring it belongs to and delivers.
    pub(super) fn receive_packet(&mut self, seq: u64, packet: StoredPacket) {
        let window = self.config.sort_queue_capacity;
        let ordering = match &mut self.recovery {
            Some(recovery) => &mut recovery.ordering,
            None => &mut self.ordering,
        };
        if ordering.insert(seq, packet, window, &mut self.events, &mut self.counters) {
            self.counters.mcasts_received += 1;
            ordering.deliver(&mut self.events, &mut self.counters);
        } else {
            self.counters.mcasts_discarded += 1;
        }
    }

    /// Queues a multicast datagram.
    pub(super) fn multicast(&mut self, bytes: Bytes) {
        self.transmits.push_back((Destination::Multicast, bytes));
    }

    /// Panics if a local invariant is broken. The simulator calls it after every step.
    pub fn assert_invariants(&self) {
        self.ordering
            .assert_invariants(self.config.sort_queue_capacity);
        if let Some(recovery) = &self.recovery {
            recovery
                .ordering
                .assert_invariants(self.config.sort_queue_capacity);
            assert_eq!(
                self.state,
                State::Recovery,
                "W5: recovery state outside RECOVERY"
            );
            assert!(
                recovery.members.contains(&self.config.node_id),
                "W5: self not in new ring"
            );
        }
        if let Some((ring, members)) = &self.installed {
            assert!(
                members.binary_search(&self.config.node_id).is_ok(),
                "W5: self not a member"
            );
            assert_eq!(
                ring.representative(),
                members[0],
                "W4: representative is not the lowest"
            );
            assert!(self.ring.seq >= ring.seq, "W5: my ring id went backwards");
        }
        assert!(
            self.known_ring_seq >= self.ring.seq,
            "known ring seq below my ring's"
        );
        assert!(
            !self.gather.fail_set.contains(&self.config.node_id),
            "W5: self in fail set"
        );
        assert!(
            self.missing_visits.len() as u64 <= self.config.sort_queue_capacity,
            "W6"
        );
        assert!(
            self.send_queue_bytes <= self.config.send_queue_bytes_max,
            "W6: send queue"
        );
        if self.state == State::Operational {
            assert!(self.installed.is_some(), "W5: operational without a ring");
        }
    }
}

/// The member after `me` in ring order.
pub(super) fn successor(members: &[NodeId], me: NodeId) -> NodeId {
    let index = members.binary_search(&me).expect("a member");
    members[(index + 1) % members.len()]
}
