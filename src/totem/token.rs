//! The ordering protocol on token receipt (PROTOCOL.md §1.4–1.6), in OPERATIONAL and in
//! RECOVERY (where the new ring carries only re-broadcast old-ring messages).

use bytes::Bytes;

use super::events::{Destination, Event, Position};
use super::node::{Node, SelfMessage, State, planted};
use super::ordering::{Ordering, StoredPacket};
use super::timers::Timer;
use super::wire::{
    self, CHUNK_HEADER_LEN, Chunk, MCAST_PREFIX_LEN, McastHeader, McastWriter, RtrEntry, Token,
};
use crate::ids::NodeId;
use crate::time::Instant;

impl Node {
    /// The ordering of the ring the token circulates on.
    fn active_ordering(&mut self) -> &mut Ordering {
        match &mut self.recovery {
            Some(recovery) => &mut recovery.ordering,
            None => &mut self.ordering,
        }
    }

    pub(super) fn handle_token(&mut self, now: Instant, mut token: Token) {
        let duplicate =
            token.token_seq <= self.my_token_seq && !planted!(self, AcceptDuplicateTokens);
        let accepting = matches!(self.state, State::Operational | State::Recovery);
        if !accepting || token.ring != self.ring || duplicate {
            self.counters.tokens_discarded += 1;
            return;
        }
        self.timers.stop(Timer::TokenRetransmit);
        self.last_token_sent = None;
        self.hold_cancel_sent = false;
        let recovering = self.state == State::Recovery;

        // Garbage collection (operational only): stable on two visits and delivered.
        if !recovering {
            if planted!(self, FreeBeforeStable) {
                let upto = self.ordering.my_aru;
                self.ordering.free(upto);
            } else {
                self.ordering.free(token.aru.min(self.my_last_aru));
            }
        }
        let last_aru = self.my_last_aru;
        self.my_last_aru = token.aru;

        let backlog = self.backlog();
        let mut allowance = self.allowance(&token, backlog);

        // Serve retransmit requests first.
        let mut kept = Vec::with_capacity(token.rtr.len());
        let me = self.config.node_id;
        for entry in std::mem::take(&mut token.rtr) {
            if allowance > 0 && entry.ring == self.ring {
                let ring = self.ring;
                if let Some(packet) = self.active_ordering().get(entry.seq) {
                    let mut bytes = packet.datagram(ring, entry.seq).to_vec();
                    bytes[4..8].copy_from_slice(&me.0.to_le_bytes());
                    self.multicast(Bytes::from(bytes));
                    self.counters.retransmits_sent += 1;
                    allowance -= 1;
                    continue;
                }
            }
            kept.push(entry);
        }
        token.rtr = kept;

        // Ask for what I miss, once a gap has persisted `miss_count_const` visits; scan up to
        // the token's seq so losses at the tail are requested too.
        let my_aru = self.active_ordering().my_aru;
        self.missing_visits.retain(|&seq, _| seq > my_aru);
        let missing: Vec<u64> = self.active_ordering().missing(token.seq).collect();
        for seq in missing {
            let visits = self.missing_visits.entry(seq).or_insert(0);
            *visits += 1;
            if *visits < self.config.miss_count_const {
                continue;
            }
            let entry = RtrEntry {
                ring: self.ring,
                seq,
            };
            if token.rtr.contains(&entry) {
                continue;
            }
            if token.rtr.len() >= self.config.retransmit_entries_max {
                self.counters.retransmit_list_full += 1;
                break;
            }
            token.rtr.push(entry);
            self.counters.retransmit_requests += 1;
        }

        // Never let the ring's span outgrow the receivers' window.
        let span = token.seq - token.aru;
        let room = self.config.sort_queue_capacity / 2;
        allowance = allowance.min(room.saturating_sub(span) as u32);

        // Broadcast: new messages, or in recovery the old ring's messages, encapsulated.
        let mut sent = 0;
        while sent < allowance {
            let more = if recovering {
                self.recovery.as_ref().is_some_and(|r| !r.queue.is_empty())
            } else {
                !self.send_queue.is_empty()
            };
            if !more {
                break;
            }
            token.seq += 1;
            if recovering {
                self.broadcast_recovery_packet(token.seq);
            } else {
                self.broadcast_packet(token.seq);
            }
            sent += 1;
        }
        if !recovering && sent < backlog && !self.send_queue.is_empty() {
            self.counters.flow_control_limited += 1;
        }

        // Flow-control fields.
        let backlog_now = self.backlog();
        token.fcc = (token.fcc + sent).saturating_sub(self.my_trc);
        token.backlog = (token.backlog + backlog_now).saturating_sub(self.my_pbl);
        self.my_trc = sent;
        self.my_pbl = backlog_now;

        // The aru rule: whoever has less lowers it; only the one who lowered it raises it.
        let my_aru = self.active_ordering().my_aru;
        if my_aru < token.aru || token.aru_addr == me || token.aru_addr.is_none() {
            token.aru = my_aru;
            token.aru_addr = if token.aru == token.seq {
                NodeId::NONE
            } else {
                me
            };
        }

        // Failure to receive: the aru stuck below seq, held back by the same node. Like
        // Corosync, the culprit detects itself and leaves the ring.
        if token.aru == last_aru && !token.aru_addr.is_none() {
            self.my_aru_count += 1;
        } else {
            self.my_aru_count = 0;
        }
        if self.my_aru_count > self.config.fail_recv_const && token.aru_addr == me {
            self.counters.failed_to_receive += 1;
            self.my_aru_count = 0;
            self.failed_to_receive(now);
            return;
        }

        // Accept.
        self.my_token_seq = token.token_seq;
        self.last_accepted = (token.ring, token.token_seq, token.seq, token.aru);
        token.token_seq += 1;
        self.counters.tokens_accepted += 1;

        if recovering {
            // Tell an idle representative not to hold the token while I still need visits.
            token.recovering = true;
            self.set_recovering_flag = true;
            // May install the new ring: the token then goes on as an operational one.
            self.recovery_token_visit(now, &mut token);
        } else if self.set_recovering_flag {
            token.recovering = false;
            self.set_recovering_flag = false;
        }

        // SAFE: a seq is at every member once two successive forwarded tokens carry aru ≥ it.
        self.aru_forwarded = [self.aru_forwarded[1], token.aru];
        let safe_upto = if planted!(self, SafeIgnoresStability) {
            u64::MAX
        } else {
            self.aru_forwarded[0].min(self.aru_forwarded[1])
        };
        self.active_ordering().safe_upto = safe_upto;

        if token.seq == self.last_token_seq_value && !token.recovering {
            self.seq_unchanged_visits = self.seq_unchanged_visits.saturating_add(1);
        } else {
            self.seq_unchanged_visits = 0;
            self.last_token_seq_value = token.seq;
        }

        self.timers
            .set(Timer::TokenLoss, now + self.config.token_timeout);
        let idle = self.state == State::Operational
            && self.seq_unchanged_visits >= self.config.seqno_unchanged_const
            && self.send_queue.is_empty()
            && token.rtr.is_empty()
            && token.aru == token.seq;
        if idle && self.ring.representative() == me {
            if self.held_token.is_none() {
                self.counters.token_holds += 1;
                // An idle ring sends nothing others could notice: announce it for merges.
                if !self.timers.is_set(Timer::Merge) {
                    self.timers
                        .set(Timer::Merge, now + self.config.merge_timeout);
                }
            }
            self.held_token = Some(token);
            self.timers.set(Timer::TokenHold, now + self.config.hold);
        } else {
            self.timers.stop(Timer::Merge);
            self.send_token(now, token);
        }

        let ordering = match &mut self.recovery {
            Some(recovery) => &mut recovery.ordering,
            None => &mut self.ordering,
        };
        ordering.deliver(&mut self.events, &mut self.counters);
        self.maybe_writable();
    }

    /// Sends the token to the successor (or to myself on a one-member ring).
    pub(super) fn send_token(&mut self, now: Instant, token: Token) {
        self.timers.stop(Timer::TokenHold);
        if self.next == self.config.node_id {
            self.self_message = Some(SelfMessage::Token(token));
            self.timers.set(Timer::SelfToken, now);
            return;
        }
        let mut bytes = Vec::with_capacity(64 + token.rtr.len() * 20);
        wire::encode_token(&mut bytes, self.config.node_id, &token);
        let bytes = Bytes::from(bytes);
        self.transmits
            .push_back((Destination::Node(self.next), bytes.clone()));
        self.last_token_sent = Some(bytes);
        self.timers
            .set(Timer::TokenRetransmit, now + self.config.token_retransmit);
    }

    /// Forwards a held token at once, or asks the representative to.
    pub(super) fn cancel_hold(&mut self, now: Instant) {
        if let Some(token) = self.held_token.take() {
            self.send_token(now, token);
        } else if self.seq_unchanged_visits >= self.config.seqno_unchanged_const
            && !self.hold_cancel_sent
            && self.ring.representative() != self.config.node_id
        {
            let mut bytes = Vec::with_capacity(wire::HEADER_LEN + wire::RING_LEN);
            wire::encode_token_hold_cancel(&mut bytes, self.config.node_id, self.ring);
            self.multicast(Bytes::from(bytes));
            self.hold_cancel_sent = true;
            self.counters.token_hold_cancels += 1;
        }
    }

    /// Packets needed to send everything queued.
    fn backlog(&self) -> u32 {
        let space = self.packet_bytes_max() - MCAST_PREFIX_LEN;
        let bytes = match &self.recovery {
            Some(recovery) => recovery.queue.iter().map(|d| d.len() + 4).sum(),
            None => self.send_queue_bytes + self.send_queue.len() * CHUNK_HEADER_LEN,
        };
        bytes.div_ceil(space).min(u32::MAX as usize) as u32
    }

    /// Packets I may send on this visit (PROTOCOL.md §1.6).
    fn allowance(&self, token: &Token, backlog: u32) -> u32 {
        let window = self.config.window_size;
        let mut allowance = self
            .config
            .max_messages
            .min(window.saturating_sub(token.fcc));
        let total_backlog = (token.backlog + backlog).saturating_sub(self.my_pbl);
        if total_backlog > 0 {
            let share = u64::from(window) * u64::from(backlog) / u64::from(total_backlog);
            if share > 0 {
                allowance = allowance.min(share as u32);
            }
        }
        // Retransmissions count against the allowance; never starve them entirely.
        allowance.max(1)
    }

    fn next_header(&mut self, seq: u64) -> McastHeader {
        assert!(
            seq > self.my_last_sent_seq,
            "W1: token seq {seq} is not above this node's previous message seq {} \
             (an accepted token went backwards)",
            self.my_last_sent_seq
        );
        let header = McastHeader {
            ring: self.ring,
            seq,
            origin: self.config.node_id,
            origin_prev_seq: self.my_last_sent_seq,
        };
        self.my_last_sent_seq = seq;
        header
    }

    /// Packs the front of the send queue into one packet with `seq` and multicasts it.
    fn broadcast_packet(&mut self, seq: u64) {
        let header = self.next_header(seq);
        // A cluster of this node alone: no other node will ever want the packet, so its
        // chunks share the messages' bytes and no datagram is written (a copy of every
        // message less on the way to local receivers).
        let alone = self.config.nodes == [self.config.node_id];
        // Sized to what the queue holds (at most a datagram): packets stay in the sort queue
        // until stable, and netmtu can be large (a cluster of one node).
        let queued = self.send_queue_bytes + self.send_queue.len() * CHUNK_HEADER_LEN;
        let packet_max = self.packet_bytes_max();
        let mut bytes = if alone {
            Vec::new()
        } else {
            Vec::with_capacity(packet_max.min(MCAST_PREFIX_LEN + queued))
        };
        let mut writer = McastWriter::new(&mut bytes, self.config.node_id, &header);
        let mut space = packet_max - MCAST_PREFIX_LEN;
        let mut completed = 0;
        let mut originated = Vec::new();
        // Each chunk without its data, and its data: where it sits in `bytes`, or (alone) the
        // message's own bytes.
        let mut written: Vec<(Chunk<'static>, ChunkData)> = Vec::new();
        while let Some(front) = self.send_queue.front_mut() {
            if written.len() == usize::from(u16::MAX) {
                break; // the wire counts a packet's chunks in 16 bits
            }
            let remaining = front.payload.len() - front.sent;
            if space < CHUNK_HEADER_LEN + remaining.min(1) {
                break;
            }
            let take = remaining.min(space - CHUNK_HEADER_LEN);
            let range = front.sent..front.sent + take;
            let chunk = Chunk {
                number: front.number,
                guarantee: front.guarantee,
                total_len: front.payload.len() as u32,
                offset: front.sent as u32,
                data: &front.payload[range.clone()],
            };
            let data = if alone {
                ChunkData::Shared(front.payload.slice(range))
            } else {
                ChunkData::At(writer.push(&chunk), take)
            };
            written.push((Chunk { data: &[], ..chunk }, data));
            front.sent += take;
            space -= CHUNK_HEADER_LEN + take;
            if front.sent < front.payload.len() {
                break;
            }
            let done = self.send_queue.pop_front().expect("front exists");
            self.send_queue_bytes -= done.payload.len();
            originated.push((done.number, completed));
            completed += 1;
        }
        for (number, index) in originated {
            self.events.push_back(Event::Originated {
                number,
                position: Position {
                    ring: self.ring,
                    seq,
                    index,
                },
            });
        }
        self.counters.mcasts_sent += 1;
        let datagram = (!alone).then(|| Bytes::from(bytes));
        // Stored from what was written, without decoding our own datagram again.
        let chunks = written.into_iter().map(|(chunk, data)| match data {
            ChunkData::At(at, len) => {
                let datagram = datagram
                    .as_ref()
                    .expect("chunks are written into a datagram");
                (chunk, datagram.slice(at..at + len))
            }
            ChunkData::Shared(data) => (chunk, data),
        });
        let packet = StoredPacket::from_parts(datagram.clone(), &header, chunks);
        if let Some(datagram) = datagram {
            self.multicast(datagram);
        }
        self.receive_packet(seq, packet);
    }

    /// Most bytes of a regular packet: `netmtu` less the room its re-broadcast by a recovery
    /// needs ([`wire::ENCAPSULATION_LEN`]).
    fn packet_bytes_max(&self) -> usize {
        self.config.netmtu - wire::ENCAPSULATION_LEN
    }

    /// Re-broadcasts the next old-ring message, encapsulated, as new-ring message `seq`.
    fn broadcast_recovery_packet(&mut self, seq: u64) {
        let Some(inner) = self.recovery.as_mut().and_then(|r| r.queue.pop_front()) else {
            return;
        };
        let header = self.next_header(seq);
        let mut bytes = Vec::with_capacity(wire::ENCAPSULATION_LEN + inner.len());
        wire::encode_encapsulated(&mut bytes, self.config.node_id, &header, &inner);
        let bytes = Bytes::from(bytes);
        let inner_at = bytes.len() - inner.len();
        let packet = StoredPacket::encapsulated(&bytes, &header, &bytes[inner_at..]);
        self.counters.recovery_messages_sent += 1;
        self.counters.mcasts_sent += 1;
        self.multicast(bytes);
        self.receive_packet(seq, packet);
    }

    fn maybe_writable(&mut self) {
        if self.refused_since_writable
            && self.send_queue_bytes <= self.config.send_queue_bytes_max / 2
        {
            self.refused_since_writable = false;
            self.events.push_back(Event::Writable);
        }
    }

    /// Resets the per-ring token state when a new ring starts.
    pub(super) fn reset_token_state(&mut self) {
        self.my_token_seq = 0;
        self.my_last_aru = 0;
        self.my_aru_count = 0;
        self.last_token_seq_value = 0;
        self.seq_unchanged_visits = 0;
        self.aru_forwarded = [0; 2];
        self.missing_visits.clear();
        self.my_trc = 0;
        self.my_pbl = 0;
        self.my_last_sent_seq = 0;
        self.held_token = None;
        self.hold_cancel_sent = false;
        self.last_token_sent = None;
        self.set_recovering_flag = false;
    }
}

/// Where a chunk of a packet being built finds its data.
enum ChunkData {
    /// In the packet's datagram: (offset, length).
    At(usize, usize),
    /// In the message's own bytes (a packet that is never sent).
    Shared(Bytes),
}
