//! Arbitrary bytes as plaintext protocol datagrams (what a node sees after decryption).
//!
//! 1. `wire::decode` never panics, and whatever it accepts encodes back to the same bytes.
//! 2. A fresh core (gathering) fed the bytes from a member, from itself and from a stranger
//!    never panics and keeps its local invariants.
//! 3. A formed ring of three in-memory cores: the input is cut into records, each injected into
//!    one member as if another member (or itself, or a stranger) had sent it, between rounds of
//!    the honest protocol with a little workload. No core may panic or break a local invariant.
//!    (Injected datagrams are authenticated in real life only if a member sent them, so the
//!    cores may disagree afterwards; only crashes and local invariants are checked.)
//!
//! Each input is also tried behind a valid 8-byte frame header (magic, version, kind = first
//! byte mod 6, sender): libFuzzer's comparison tracing does not solve the 2-byte magic.
//!
//! Record format: `op u8, shape u8, len u16 LE, len bytes` (a short last record takes what is
//! left). `op` bits 0-1 pick the sender (0: the target's successor, 1: the third member, 2: the
//! target itself, 3: node 9, outside the nodelist), bits 2-4 how long the ring runs afterwards
//! (× 25 ms), bit 5 whether the sender's core submits a message first, bits 6-7 the target
//! (mod 3). `shape` bit 7 set: the bytes are the datagram; clear: they follow a valid header of
//! kind `shape & 7` (mod 6) naming the sender, or the target itself if bit 3 is set.

#![no_main]

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use totemcast::api::Guarantee;
use totemcast::ids::NodeId;
use totemcast::time::Instant;
use totemcast::totem::wire::{self, McastBody, McastWriter, Message};
use totemcast::totem::{Config, Destination, Node, State};

const IDS: [NodeId; 3] = [NodeId(1), NodeId(2), NodeId(3)];
const STRANGER: NodeId = NodeId(9);
/// Simulated time one datagram takes on the wire.
const HOP: Duration = Duration::from_micros(20);
/// Most steps (deliveries and timer rounds) one run of the ring may take: bounds each input.
const STEPS_MAX: usize = 4_000;

fuzz_target!(|data: &[u8]| {
    decode_and_reencode(data);
    fresh_core(data);
    if let Some((&kind, body)) = data.split_first() {
        let framed = framed(kind, IDS[1], body);
        decode_and_reencode(&framed);
        fresh_core(&framed);
    }
    formed_ring(data);
});

/// `body` behind a valid frame header of `kind` (mod 6) from `sender`.
fn framed(kind: u8, sender: NodeId, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(wire::HEADER_LEN + body.len());
    out.extend_from_slice(&wire::MAGIC.to_le_bytes());
    out.push(wire::VERSION);
    out.push(kind % 6);
    out.extend_from_slice(&sender.0.to_le_bytes());
    out.extend_from_slice(body);
    out
}

fn decode_and_reencode(data: &[u8]) {
    if let Ok(datagram) = wire::decode(data) {
        assert_eq!(reencode(&datagram), data, "decoded {datagram:?}");
    }
}

/// Re-encodes a decoded datagram, to compare bytes (as tests/wire_roundtrip.rs does).
fn reencode(datagram: &wire::Datagram<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    match &datagram.message {
        Message::Token(token) => wire::encode_token(&mut out, datagram.sender, token),
        Message::Mcast(mcast) => match &mcast.body {
            McastBody::Chunks(chunks) => {
                let mut writer = McastWriter::new(&mut out, datagram.sender, &mcast.header);
                for chunk in chunks.clone() {
                    writer.push(&chunk);
                }
            }
            McastBody::Encapsulated(inner) => {
                wire::encode_encapsulated(&mut out, datagram.sender, &mcast.header, inner);
            }
        },
        Message::MergeDetect { ring } => {
            wire::encode_merge_detect(&mut out, datagram.sender, *ring)
        }
        Message::Join(join) => wire::encode_join(&mut out, datagram.sender, join),
        Message::CommitToken(commit) => {
            wire::encode_commit_token(&mut out, datagram.sender, commit)
        }
        Message::TokenHoldCancel { ring } => {
            wire::encode_token_hold_cancel(&mut out, datagram.sender, *ring);
        }
    }
    out
}

fn fresh_core(data: &[u8]) {
    let mut node = Node::new(Config::new(IDS[0], &IDS), Instant::ZERO).expect("valid config");
    let bytes = Bytes::copy_from_slice(data);
    let mut now = Instant::ZERO;
    for from in [IDS[1], IDS[2], IDS[0], STRANGER] {
        now += HOP;
        node.handle_datagram_bytes(now, from, &bytes);
        drain(&mut node);
        node.assert_invariants();
    }
    // Its timers run on after the input.
    for _ in 0..4 {
        if let Some(due) = node.poll_timeout() {
            now = now.max(due);
            node.handle_timeout(now);
            drain(&mut node);
            node.assert_invariants();
        }
    }
}

fn drain(node: &mut Node) {
    while node.poll_transmit_bytes().is_some() {}
    while node.poll_event().is_some() {}
}

/// Three cores and the datagrams between them (lossless, in order).
struct Ring {
    nodes: Vec<Node>,
    now: Instant,
    /// (to index, from node, datagram)
    wire: VecDeque<(usize, NodeId, Bytes)>,
    payload: u64,
}

impl Ring {
    fn new() -> Ring {
        Ring {
            nodes: IDS
                .iter()
                .map(|&id| Node::new(Config::new(id, &IDS), Instant::ZERO).expect("valid config"))
                .collect(),
            now: Instant::ZERO,
            wire: VecDeque::new(),
            payload: 0,
        }
    }

    /// Moves every transmitted datagram onto the wire and drops the events.
    fn collect(&mut self) {
        for (index, node) in self.nodes.iter_mut().enumerate() {
            while let Some((destination, bytes)) = node.poll_transmit_bytes() {
                match destination {
                    Destination::Node(to) => {
                        if let Some(to) = IDS.iter().position(|&id| id == to) {
                            self.wire.push_back((to, IDS[index], bytes));
                        }
                    }
                    Destination::Multicast => {
                        for to in (0..IDS.len()).filter(|&to| to != index) {
                            self.wire.push_back((to, IDS[index], bytes.clone()));
                        }
                    }
                }
            }
            while node.poll_event().is_some() {}
        }
    }

    /// Delivers datagrams and fires timers until `until` (or the step budget runs out).
    fn run(&mut self, until: Instant, mut done: impl FnMut(&Ring) -> bool) {
        for _ in 0..STEPS_MAX {
            self.collect();
            if done(self) {
                return;
            }
            if let Some((to, from, bytes)) = self.wire.pop_front() {
                self.now += HOP;
                self.nodes[to].handle_datagram_bytes(self.now, from, &bytes);
                self.nodes[to].assert_invariants();
                continue;
            }
            let Some(due) = self.nodes.iter().filter_map(Node::poll_timeout).min() else {
                return;
            };
            if due > until {
                return;
            }
            self.now = self.now.max(due);
            for node in &mut self.nodes {
                if node.poll_timeout().is_some_and(|due| due <= self.now) {
                    node.handle_timeout(self.now);
                    node.assert_invariants();
                }
            }
        }
    }

    fn formed(&self) -> bool {
        self.nodes
            .iter()
            .all(|node| node.state() == State::Operational && node.members() == IDS)
            && self
                .nodes
                .windows(2)
                .all(|pair| pair[0].installed_ring() == pair[1].installed_ring())
    }

    fn submit(&mut self, index: usize) {
        self.payload += 1;
        let payload = Bytes::from(
            self.payload
                .to_le_bytes()
                .repeat(1 + self.payload as usize % 7),
        );
        let _ = self.nodes[index].mcast(self.now, Guarantee::Agreed, payload);
    }
}

fn formed_ring(data: &[u8]) {
    let mut ring = Ring::new();
    ring.run(Instant::ZERO + Duration::from_secs(30), Ring::formed);
    assert!(ring.formed(), "three honest cores form a ring");
    ring.submit(0);
    ring.submit(1);
    let mut rest = data;
    while let Some((&op, tail)) = rest.split_first() {
        let (shape, tail) = tail.split_first().map_or((0x80, tail), |(&s, t)| (s, t));
        let len = match tail {
            [lo, hi, ..] => usize::from(u16::from_le_bytes([*lo, *hi])),
            _ => tail.len(),
        };
        let tail = tail.get(2..).unwrap_or(&[]);
        let (bytes, after) = tail.split_at(len.min(tail.len()));
        rest = after;

        let target = usize::from(op >> 6) % IDS.len();
        let from = match op & 3 {
            0 => IDS[(target + 1) % IDS.len()],
            1 => IDS[(target + 2) % IDS.len()],
            2 => IDS[target],
            _ => STRANGER,
        };
        if op & 0x20 != 0
            && let Some(index) = IDS.iter().position(|&id| id == from)
        {
            ring.submit(index);
        }
        ring.now += HOP;
        let now = ring.now;
        let datagram = if shape & 0x80 != 0 {
            bytes.to_vec()
        } else {
            let sender = if shape & 8 != 0 { IDS[target] } else { from };
            framed(shape & 7, sender, bytes)
        };
        ring.nodes[target].handle_datagram(now, from, &datagram);
        ring.nodes[target].assert_invariants();
        let pause = Duration::from_millis(25 * u64::from((op >> 2) & 7));
        ring.run(now + pause, |_| false);
    }
    let now = ring.now;
    ring.run(now + Duration::from_secs(1), |_| false);
    for node in &ring.nodes {
        node.assert_invariants();
    }
}
