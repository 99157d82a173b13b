//! The received messages of the current ring and their delivery in the four guarantees.
//!
//! Packets (regular messages, one seq each) are kept by seq until they are stable at every
//! member and delivered. Each packet carries chunks: whole application messages or fragments of
//! one. A sender's messages are contiguous in its own stream of chunks, so each sender has at
//! most one message in reassembly at a time.
//!
//! Delivery rules (PROTOCOL.md §1.5):
//! - AGREED: in total order — by (packet seq, chunk index) — once every earlier packet is here.
//! - SAFE: like AGREED, and the packet completing the message is at or below `safe_upto`: the
//!   smaller aru of the tokens this node forwarded on its last two visits, so every member has
//!   it. A SAFE message that is not yet safe blocks everything after it in the total order.
//! - FIFO: as soon as every earlier message of the same sender on this ring has been delivered.
//!   A FIFO message may overtake other senders' messages (it never waits for a hole in another
//!   sender's traffic), never its own sender's. When nothing overtakes, it is delivered exactly
//!   where AGREED would deliver it.
//! - UNORDERED: as soon as all its fragments are here, in any order; reliable, no order promise.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

use super::events::{Counters, Delivery, Event, Position};
use super::wire::{Chunk, McastHeader};
use crate::api::Guarantee;
use crate::ids::{NodeId, RingId};

/// One chunk of a stored packet.
#[derive(Clone, Debug)]
struct StoredChunk {
    number: u64,
    guarantee: Guarantee,
    total_len: u32,
    offset: u32,
    data: Bytes,
    /// Index among the chunks of this packet that end a message (meaningful if `last`).
    completion_index: u32,
    last: bool,
}

/// A regular message received (or sent) on the current ring.
#[derive(Clone, Debug)]
pub(crate) struct StoredPacket {
    origin: NodeId,
    origin_prev_seq: u64,
    /// The datagram as received, for retransmission (`None`: see [`StoredPacket::from_parts`]).
    datagram: Option<Bytes>,
    chunks: Vec<StoredChunk>,
    /// Recovery: the old-ring regular message this one carries (it has no chunks itself).
    pub(crate) encapsulated: Option<Bytes>,
}

impl StoredPacket {
    /// A stored packet over `datagram`, whose decoded chunks `chunks` borrow from it.
    pub(crate) fn new<'a>(
        datagram: &Bytes,
        header: &McastHeader,
        chunks: impl Iterator<Item = Chunk<'a>>,
    ) -> StoredPacket {
        let chunks = chunks.map(|chunk| {
            let data = if chunk.data.is_empty() {
                Bytes::new()
            } else {
                datagram.slice_ref(chunk.data)
            };
            (chunk, data)
        });
        StoredPacket::from_parts(Some(datagram.clone()), header, chunks)
    }

    /// A stored packet of chunks (their data in `Bytes` of their own, whatever the chunks'
    /// `data` says); without a datagram for
    /// a packet of this node's own that no other node needs (the cluster is this node alone):
    /// one is written from the chunks if it is ever asked for ([`StoredPacket::datagram`]).
    pub(crate) fn from_parts<'a>(
        datagram: Option<Bytes>,
        header: &McastHeader,
        chunks: impl Iterator<Item = (Chunk<'a>, Bytes)>,
    ) -> StoredPacket {
        let mut completion_index = 0;
        let chunks = chunks
            .map(|(chunk, data)| {
                // The chunk's own `data` may be left empty: its bytes are `data`.
                let last = Chunk {
                    data: &data,
                    ..chunk
                }
                .is_last();
                let stored = StoredChunk {
                    number: chunk.number,
                    guarantee: chunk.guarantee,
                    total_len: chunk.total_len,
                    offset: chunk.offset,
                    data,
                    completion_index,
                    last,
                };
                completion_index += u32::from(last);
                stored
            })
            .collect();
        StoredPacket {
            origin: header.origin,
            origin_prev_seq: header.origin_prev_seq,
            datagram,
            chunks,
            encapsulated: None,
        }
    }

    /// The datagram of this packet, `seq` of `ring`: as received, or written now from the
    /// chunks for a packet that was never sent.
    pub(crate) fn datagram(&self, ring: RingId, seq: u64) -> Bytes {
        if let Some(datagram) = &self.datagram {
            return datagram.clone();
        }
        let header = McastHeader {
            ring,
            seq,
            origin: self.origin,
            origin_prev_seq: self.origin_prev_seq,
        };
        let mut bytes = Vec::new();
        let mut writer = super::wire::McastWriter::new(&mut bytes, self.origin, &header);
        for chunk in &self.chunks {
            writer.push(&Chunk {
                number: chunk.number,
                guarantee: chunk.guarantee,
                total_len: chunk.total_len,
                offset: chunk.offset,
                data: &chunk.data,
            });
        }
        Bytes::from(bytes)
    }

    /// The datagram to re-broadcast during the next recovery: the message itself, or, for a
    /// recovery packet of this ring (its content belonged to an older ring and was delivered
    /// when this ring was installed), an empty message at the same place, so that receivers
    /// see no hole and the origin's chain stays whole. (Encapsulation does not nest.)
    pub(crate) fn for_recovery(&self, ring: RingId, seq: u64) -> Bytes {
        if self.encapsulated.is_none() {
            return self.datagram(ring, seq);
        }
        let header = McastHeader {
            ring,
            seq,
            origin: self.origin,
            origin_prev_seq: self.origin_prev_seq,
        };
        let mut bytes = Vec::with_capacity(super::wire::MCAST_PREFIX_LEN);
        super::wire::McastWriter::new(&mut bytes, self.origin, &header);
        Bytes::from(bytes)
    }

    /// A stored recovery packet over `datagram` that carries the old-ring message `inner`.
    pub(crate) fn encapsulated(
        datagram: &Bytes,
        header: &McastHeader,
        inner: &[u8],
    ) -> StoredPacket {
        StoredPacket {
            origin: header.origin,
            origin_prev_seq: header.origin_prev_seq,
            datagram: Some(datagram.clone()),
            chunks: Vec::new(),
            encapsulated: Some(datagram.slice_ref(inner)),
        }
    }
}

/// A message being put back together from its fragments.
#[derive(Debug)]
struct Partial {
    number: u64,
    guarantee: Guarantee,
    total_len: u32,
    buffer: Vec<u8>,
}

/// An UNORDERED message whose fragments arrive in any order.
#[derive(Debug, Default)]
struct UnorderedPartial {
    received: u64,
    fragments: BTreeMap<u32, Bytes>,
    last_position: Option<Position>,
}

/// Where one sender's stream has been consumed up to.
#[derive(Debug, Default)]
struct SenderStream {
    /// Seq of the packet being (or last) consumed; 0 before the first.
    packet: u64,
    /// Next chunk index in that packet.
    next_chunk: usize,
    /// The message in reassembly.
    partial: Option<Partial>,
}

impl SenderStream {
    fn consumed(&self, seq: u64, chunk: usize) -> bool {
        seq < self.packet || (seq == self.packet && chunk < self.next_chunk)
    }
}

/// The packets of the current ring and the delivery state.
#[derive(Debug)]
pub(crate) struct Ordering {
    ring: RingId,
    me: NodeId,
    message_size_max: usize,
    packets: BTreeMap<u64, StoredPacket>,
    /// Every seq at or below this was freed (stable everywhere and delivered).
    pub(crate) freed_upto: u64,
    /// All-received-up-to: every seq at or below is here (or was freed).
    pub(crate) my_aru: u64,
    /// Highest seq received.
    pub(crate) high_seq_received: u64,
    /// Total-order cursor: every chunk before (seq, chunk) is consumed.
    cursor_seq: u64,
    cursor_chunk: usize,
    /// Packets with seq ≤ this were fully passed by the total-order cursor.
    pub(crate) delivered_upto: u64,
    /// Highest seq known to be at every member (see the module docs).
    pub(crate) safe_upto: u64,
    senders: BTreeMap<NodeId, SenderStream>,
    /// Planted bug (simulator builds): AGREED delivered on receipt like UNORDERED.
    pub(crate) agreed_on_receipt: bool,
    /// Senders whose FIFO walk may progress (new packet, or the total order consumed theirs).
    dirty: Vec<NodeId>,
    /// `(origin, origin_prev_seq)` → seq: the next packet in each sender's chain.
    chain: BTreeMap<(NodeId, u64), u64>,
    unordered: BTreeMap<(NodeId, u64), UnorderedPartial>,
}

impl Ordering {
    pub(crate) fn new(me: NodeId, ring: RingId, message_size_max: usize) -> Ordering {
        Ordering {
            ring,
            me,
            message_size_max,
            packets: BTreeMap::new(),
            freed_upto: 0,
            my_aru: 0,
            high_seq_received: 0,
            cursor_seq: 1,
            cursor_chunk: 0,
            delivered_upto: 0,
            safe_upto: 0,
            senders: BTreeMap::new(),
            agreed_on_receipt: false,
            dirty: Vec::new(),
            chain: BTreeMap::new(),
            unordered: BTreeMap::new(),
        }
    }

    /// Whether `seq` of `ring` has been received here (or was freed after everyone had it).
    pub(crate) fn has(&self, ring: RingId, seq: u64) -> bool {
        ring == self.ring && (seq <= self.my_aru || self.packets.contains_key(&seq))
    }

    /// The ring these packets belong to.
    pub(crate) fn ring(&self) -> RingId {
        self.ring
    }

    /// Stored packets with seq in `range`, in seq order.
    pub(crate) fn packets_in(
        &self,
        range: std::ops::RangeInclusive<u64>,
    ) -> impl Iterator<Item = (u64, &StoredPacket)> {
        self.packets
            .range(range)
            .map(|(&seq, packet)| (seq, packet))
    }

    /// Highest seq delivered in total order (the cursor's last complete packet).
    pub(crate) fn high_delivered(&self) -> u64 {
        self.delivered_upto
    }

    /// Recovery, installation step 3 (PROTOCOL.md §1.9): delivers what is left of this (old)
    /// ring in seq order: everything up to the first hole, then only messages whose origin is
    /// in `origins`; never a message whose origin's chain of packets has a gap before it (it
    /// may depend on the missing one). Everything else is dropped. SAFE messages
    /// are delivered: every member of the transitional configuration has them.
    /// Returns the number of messages dropped.
    pub(crate) fn deliver_remaining(
        &mut self,
        origins: &[NodeId],
        events: &mut VecDeque<Event>,
        counters: &mut Counters,
    ) -> u64 {
        let mut dropped = 0;
        let mut broken: Vec<NodeId> = Vec::new();
        let seqs: Vec<u64> = self
            .packets
            .range(self.cursor_seq..)
            .map(|(&seq, _)| seq)
            .collect();
        // Up to the first hole every message is delivered, whatever its origin: some member may
        // have delivered it already (a SAFE one, in the regular configuration).
        let mut expected = self.cursor_seq;
        let mut hole_seen = false;
        for seq in seqs {
            hole_seen |= seq != expected;
            expected = seq + 1;
            let packet = &self.packets[&seq];
            let origin = packet.origin;
            let prev = packet.origin_prev_seq;
            let chunks = packet.chunks.clone();
            let start = if seq == self.cursor_seq {
                self.cursor_chunk
            } else {
                0
            };
            let stream = self.senders.entry(origin).or_default();
            // No packet of this origin lies between `prev` and `seq`: its stream has reached
            // `prev` (or beyond) exactly when nothing of it is missing before this packet.
            let chained = stream.packet >= prev;
            if !chained && !broken.contains(&origin) {
                broken.push(origin);
            }
            let allowed = (!hole_seen || origins.contains(&origin)) && !broken.contains(&origin);
            if stream.packet < seq {
                stream.packet = seq;
                stream.next_chunk = 0;
            }
            for (index, chunk) in chunks.iter().enumerate().skip(start) {
                let stream = self.senders.get_mut(&origin).expect("present");
                if stream.consumed(seq, index) {
                    continue;
                }
                if allowed {
                    self.consume(origin, seq, chunk, events, counters);
                } else {
                    stream.next_chunk = index + 1;
                    stream.partial = None;
                    dropped += u64::from(chunk.last);
                }
            }
            self.delivered_upto = seq;
            self.cursor_seq = seq + 1;
            self.cursor_chunk = 0;
        }
        counters.messages_dropped_after_gap += dropped;
        dropped
    }

    /// The stored packet of `seq`, for retransmission.
    pub(crate) fn get(&self, seq: u64) -> Option<&StoredPacket> {
        self.packets.get(&seq)
    }

    /// Seqs in `(my_aru, upto]` that are missing.
    pub(crate) fn missing(&self, upto: u64) -> impl Iterator<Item = u64> + '_ {
        (self.my_aru + 1..=upto).filter(|seq| !self.packets.contains_key(seq))
    }

    /// Whether a packet with `seq` would be stored (not a duplicate, inside `window`).
    pub(crate) fn wants(&self, seq: u64, window: u64) -> bool {
        seq > self.my_aru && seq <= self.my_aru + window && !self.packets.contains_key(&seq)
    }

    /// Stores a new packet. Returns false for a duplicate or one outside `window`.
    pub(crate) fn insert(
        &mut self,
        seq: u64,
        packet: StoredPacket,
        window: u64,
        events: &mut VecDeque<Event>,
        counters: &mut Counters,
    ) -> bool {
        if !self.wants(seq, window) {
            return false;
        }
        self.deliver_unordered_on_receipt(seq, &packet, events, counters);
        self.chain
            .insert((packet.origin, packet.origin_prev_seq), seq);
        self.senders.entry(packet.origin).or_default();
        if !self.dirty.contains(&packet.origin) {
            self.dirty.push(packet.origin);
        }
        self.packets.insert(seq, packet);
        self.high_seq_received = self.high_seq_received.max(seq);
        while self.packets.contains_key(&(self.my_aru + 1)) {
            self.my_aru += 1;
        }
        true
    }

    /// Frees packets at or below `upto` that were also delivered.
    pub(crate) fn free(&mut self, upto: u64) {
        let upto = upto.min(self.delivered_upto).min(self.my_aru);
        while let Some(entry) = self.packets.first_entry() {
            if *entry.key() > upto {
                break;
            }
            let packet = entry.remove();
            self.chain.remove(&(packet.origin, packet.origin_prev_seq));
        }
        self.freed_upto = self.freed_upto.max(upto);
    }

    /// Delivers everything deliverable: the total order first, then every sender's FIFO run.
    /// (A FIFO run never unblocks the total order, so one pass of each is enough.)
    pub(crate) fn deliver(&mut self, events: &mut VecDeque<Event>, counters: &mut Counters) {
        self.advance_total(events, counters);
        let mut dirty = std::mem::take(&mut self.dirty);
        // Sorted, so the order of deliveries never depends on arrival history.
        dirty.sort_unstable();
        for &sender in &dirty {
            self.advance_sender(sender, events, counters);
        }
        dirty.clear();
        self.dirty = dirty;
    }

    fn position(&self, seq: u64, chunk: &StoredChunk) -> Position {
        Position {
            ring: self.ring,
            seq,
            index: chunk.completion_index,
        }
    }

    /// Moves the total-order cursor as far as holes and SAFE allow.
    fn advance_total(&mut self, events: &mut VecDeque<Event>, counters: &mut Counters) {
        loop {
            let seq = self.cursor_seq;
            let Some(packet) = self.packets.get(&seq) else {
                return;
            };
            let origin = packet.origin;
            let chunk_count = packet.chunks.len();
            // Entering the packet moves its origin's stream here, even when it has no chunks
            // (a recovery packet): every earlier packet of that origin has been passed.
            let stream = self.senders.entry(origin).or_default();
            if stream.packet < seq {
                stream.packet = seq;
                stream.next_chunk = 0;
            }
            while self.cursor_chunk < chunk_count {
                let index = self.cursor_chunk;
                let chunk = self.packets[&seq].chunks[index].clone();
                let stream = self.senders.entry(origin).or_default();
                if !stream.consumed(seq, index) {
                    if chunk.guarantee == Guarantee::Safe && chunk.last && seq > self.safe_upto {
                        return;
                    }
                    self.consume(origin, seq, &chunk, events, counters);
                    if !self.dirty.contains(&origin) {
                        self.dirty.push(origin);
                    }
                }
                self.cursor_chunk += 1;
            }
            self.delivered_upto = seq;
            self.cursor_seq = seq + 1;
            self.cursor_chunk = 0;
        }
    }

    /// Walks one sender's chain delivering FIFO messages; stops at an AGREED or SAFE chunk the
    /// total order has not consumed.
    fn advance_sender(
        &mut self,
        sender: NodeId,
        events: &mut VecDeque<Event>,
        counters: &mut Counters,
    ) {
        loop {
            let Some(stream) = self.senders.get(&sender) else {
                return;
            };
            let mut seq = stream.packet;
            let mut index = stream.next_chunk;
            let finished = seq == 0
                || self
                    .packets
                    .get(&seq)
                    .is_none_or(|p| index >= p.chunks.len());
            if finished {
                let Some(&next) = self.chain.get(&(sender, seq)) else {
                    return;
                };
                if next <= stream.packet {
                    return;
                }
                seq = next;
                index = 0;
            }
            let Some(packet) = self.packets.get(&seq) else {
                return;
            };
            let Some(chunk) = packet.chunks.get(index).cloned() else {
                // A packet without chunks (recovery): pass it.
                let stream = self.senders.get_mut(&sender).expect("present");
                stream.packet = seq;
                stream.next_chunk = 0;
                continue;
            };
            if matches!(chunk.guarantee, Guarantee::Agreed | Guarantee::Safe) {
                return;
            }
            let stream = self.senders.get_mut(&sender).expect("present");
            stream.packet = seq;
            stream.next_chunk = index;
            self.consume(sender, seq, &chunk, events, counters);
        }
    }

    /// Consumes the next chunk of `origin`'s stream, delivering the message it completes.
    fn consume(
        &mut self,
        origin: NodeId,
        seq: u64,
        chunk: &StoredChunk,
        events: &mut VecDeque<Event>,
        counters: &mut Counters,
    ) {
        let position = self.position(seq, chunk);
        let message_size_max = self.message_size_max;
        let stream = self.senders.get_mut(&origin).expect("stream exists");
        debug_assert_eq!(stream.packet, seq);
        stream.next_chunk += 1;
        if on_receipt(self.agreed_on_receipt, chunk.guarantee) {
            return; // delivered on receipt
        }
        let payload = if chunk.offset == 0 && chunk.last {
            stream.partial = None;
            chunk.data.clone()
        } else {
            if chunk.offset == 0 {
                if chunk.total_len as usize > message_size_max {
                    counters.fragments_inconsistent += 1;
                    stream.partial = None;
                    return;
                }
                stream.partial = Some(Partial {
                    number: chunk.number,
                    guarantee: chunk.guarantee,
                    total_len: chunk.total_len,
                    buffer: Vec::with_capacity(chunk.total_len as usize),
                });
            }
            let fits = stream.partial.as_ref().is_some_and(|partial| {
                partial.number == chunk.number
                    && partial.guarantee == chunk.guarantee
                    && partial.total_len == chunk.total_len
                    && partial.buffer.len() == chunk.offset as usize
            });
            if !fits {
                counters.fragments_inconsistent += 1;
                stream.partial = None;
                return;
            }
            let partial = stream.partial.as_mut().expect("checked");
            partial.buffer.extend_from_slice(&chunk.data);
            if !chunk.last {
                return;
            }
            Bytes::from(stream.partial.take().expect("checked").buffer)
        };
        counters.messages_delivered += 1;
        counters.bytes_delivered += payload.len() as u64;
        events.push_back(Event::Deliver(Delivery {
            origin,
            number: chunk.number,
            guarantee: chunk.guarantee,
            position,
            payload,
        }));
    }

    fn deliver_unordered_on_receipt(
        &mut self,
        seq: u64,
        packet: &StoredPacket,
        events: &mut VecDeque<Event>,
        counters: &mut Counters,
    ) {
        let agreed_on_receipt = self.agreed_on_receipt;
        for chunk in packet
            .chunks
            .iter()
            .filter(|c| on_receipt(agreed_on_receipt, c.guarantee))
        {
            let position = self.position(seq, chunk);
            let payload = if chunk.offset == 0 && chunk.last {
                (chunk.data.clone(), position)
            } else {
                if chunk.total_len as usize > self.message_size_max {
                    counters.fragments_inconsistent += 1;
                    continue;
                }
                let key = (packet.origin, chunk.number);
                let partial = self.unordered.entry(key).or_default();
                if partial
                    .fragments
                    .insert(chunk.offset, chunk.data.clone())
                    .is_none()
                {
                    partial.received += chunk.data.len() as u64;
                }
                if chunk.last {
                    partial.last_position = Some(position);
                }
                if partial.received < u64::from(chunk.total_len) {
                    continue;
                }
                let partial = self.unordered.remove(&key).expect("present");
                // The message's position is that of its last fragment, whenever it arrived.
                let position = partial.last_position.unwrap_or(position);
                let mut buffer = Vec::with_capacity(chunk.total_len as usize);
                for (offset, data) in partial.fragments {
                    if offset as usize != buffer.len() {
                        counters.fragments_inconsistent += 1;
                        break;
                    }
                    buffer.extend_from_slice(&data);
                }
                if buffer.len() != chunk.total_len as usize {
                    continue;
                }
                (Bytes::from(buffer), position)
            };
            let (payload, position) = payload;
            counters.messages_delivered += 1;
            counters.bytes_delivered += payload.len() as u64;
            events.push_back(Event::Deliver(Delivery {
                origin: packet.origin,
                number: chunk.number,
                guarantee: chunk.guarantee,
                position,
                payload,
            }));
        }
    }

    /// Panics if a local invariant is broken (called by the simulator after every step).
    pub(crate) fn assert_invariants(&self, capacity: u64) {
        assert!(
            self.my_aru <= self.high_seq_received,
            "W2: my_aru above high_seq_received"
        );
        assert!(
            self.delivered_upto <= self.my_aru,
            "W2: delivered beyond my_aru"
        );
        assert!(
            self.freed_upto <= self.delivered_upto,
            "freed beyond delivered"
        );
        assert!(
            self.high_seq_received.saturating_sub(self.freed_upto) <= 2 * capacity,
            "W6: sort queue span {} exceeds twice the capacity {capacity}",
            self.high_seq_received - self.freed_upto
        );
        assert!(
            self.packets.len() as u64 <= 2 * capacity,
            "W6: sort queue too long"
        );
        if let Some((&first, _)) = self.packets.first_key_value() {
            assert!(first > self.freed_upto, "a freed packet is still stored");
        }
        let _ = self.me;
    }
}

/// Whether messages of `guarantee` are delivered on receipt (UNORDERED; AGREED too under the
/// planted bug).
fn on_receipt(agreed_on_receipt: bool, guarantee: Guarantee) -> bool {
    guarantee == Guarantee::Unordered || (agreed_on_receipt && guarantee == Guarantee::Agreed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::totem::wire::McastWriter;

    #[test]
    fn a_packet_never_sent_writes_the_datagram_it_would_have_sent() {
        let header = McastHeader {
            ring: RingId { rep: 1, seq: 8 },
            seq: 42,
            origin: NodeId(1),
            origin_prev_seq: 40,
        };
        let message = Bytes::from_static(b"hello, ring");
        let chunks = [
            Chunk {
                number: 7,
                guarantee: Guarantee::Agreed,
                total_len: 5,
                offset: 0,
                data: &message[..5],
            },
            Chunk {
                number: 8,
                guarantee: Guarantee::Safe,
                total_len: 20,
                offset: 3,
                data: &message[5..],
            },
        ];
        let mut sent = Vec::new();
        let mut writer = McastWriter::new(&mut sent, NodeId(1), &header);
        let at: Vec<usize> = chunks.iter().map(|chunk| writer.push(chunk)).collect();
        // As the token's sender gives them: the chunks' bytes apart, their `data` empty.
        let unsent = StoredPacket::from_parts(
            None,
            &header,
            chunks.iter().map(|chunk| {
                let data = message.slice_ref(chunk.data);
                (
                    Chunk {
                        data: &[],
                        ..*chunk
                    },
                    data,
                )
            }),
        );
        assert_eq!(unsent.datagram(header.ring, header.seq), sent);
        let datagram = Bytes::from(sent.clone());
        let received = chunks.iter().zip(at).map(|(chunk, at)| Chunk {
            data: &datagram[at..at + chunk.data.len()],
            ..*chunk
        });
        let stored = StoredPacket::new(&datagram, &header, received);
        assert_eq!(stored.datagram(header.ring, header.seq), sent);
        let ends: Vec<bool> = unsent.chunks.iter().map(|chunk| chunk.last).collect();
        assert_eq!(ends, [true, false]);
        assert_eq!(unsent.chunks[1].data, message[5..]);
    }
}
