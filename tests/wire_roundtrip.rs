//! Property tests of the wire format with PRNG-generated frames: every valid frame round-trips;
//! random bytes, truncations and bit flips never panic, and a live core counts and drops them.

use bytes::Bytes;
use totemcast::api::Guarantee;
use totemcast::ids::{NodeId, RingId};
use totemcast::prng::Prng;
use totemcast::time::Instant;
use totemcast::totem::wire::{
    self, Chunk, CommitEntry, CommitToken, Join, McastBody, McastHeader, McastWriter, Message,
    RtrEntry, Token,
};
use totemcast::totem::{Config, Node};

fn ring(prng: &mut Prng) -> RingId {
    RingId {
        rep: prng.range_inclusive(1, 9) as u32,
        seq: prng.next_u64(),
    }
}

fn nodes(prng: &mut Prng, max: u64) -> Vec<NodeId> {
    let mut ids: Vec<NodeId> = (0..prng.range_inclusive(0, max))
        .map(|_| NodeId(prng.range_inclusive(1, 500) as u32))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// A random valid datagram of any kind.
fn random_frame(prng: &mut Prng) -> Vec<u8> {
    let sender = NodeId(prng.range_inclusive(1, 1000) as u32);
    let mut out = Vec::new();
    match prng.below(6) {
        0 => {
            let seq = prng.next_u64() >> 1;
            let token = Token {
                ring: ring(prng),
                token_seq: prng.next_u64(),
                seq,
                aru: prng.range_inclusive(0, seq),
                aru_addr: NodeId(prng.below(10) as u32),
                fcc: prng.next_u64() as u32,
                backlog: prng.next_u64() as u32,
                retrans_flg: prng.below(2) == 1,
                recovering: prng.below(2) == 1,
                rtr: (0..prng.below(31))
                    .map(|_| RtrEntry {
                        ring: ring(prng),
                        seq: prng.next_u64(),
                    })
                    .collect(),
            };
            wire::encode_token(&mut out, sender, &token);
        }
        1 => {
            let seq = prng.range_inclusive(1, u64::MAX >> 1);
            let header = McastHeader {
                ring: ring(prng),
                seq,
                origin: NodeId(prng.range_inclusive(1, 50) as u32),
                origin_prev_seq: prng.range_inclusive(0, seq - 1),
            };
            let mut writer = McastWriter::new(&mut out, sender, &header);
            let data: Vec<u8> = (0..300).map(|_| prng.next_u64() as u8).collect();
            for _ in 0..prng.below(8) {
                let len = prng.range_inclusive(1, 300) as usize;
                let offset = prng.below(1000) as u32;
                writer.push(&Chunk {
                    number: prng.next_u64(),
                    guarantee: Guarantee::try_from(prng.below(4) as u32).expect("0..=3"),
                    total_len: offset + len as u32 + prng.below(100) as u32,
                    offset,
                    data: &data[..len],
                });
            }
        }
        2 => wire::encode_merge_detect(&mut out, sender, ring(prng)),
        3 => {
            let join = Join {
                ring_seq: prng.next_u64(),
                proc_set: nodes(prng, 20),
                fail_set: nodes(prng, 5),
            };
            wire::encode_join(&mut out, sender, &join);
        }
        4 => {
            let members = nodes(prng, 12);
            let members = if members.is_empty() {
                vec![NodeId(1)]
            } else {
                members
            };
            let entries: Vec<CommitEntry> = members
                .iter()
                .map(|&node| CommitEntry {
                    node,
                    old_ring: ring(prng),
                    old_aru: prng.next_u64(),
                    high_delivered: prng.next_u64(),
                    received_flg: prng.below(2) == 1,
                })
                .collect();
            let commit = CommitToken {
                ring: ring(prng),
                token_seq: prng.next_u64(),
                memb_index: prng.range_inclusive(0, entries.len() as u64) as u16,
                entries,
            };
            wire::encode_commit_token(&mut out, sender, &commit);
        }
        _ => wire::encode_token_hold_cancel(&mut out, sender, ring(prng)),
    }
    out
}

/// Re-encodes a decoded datagram, to compare bytes.
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
            wire::encode_merge_detect(&mut out, datagram.sender, *ring);
        }
        Message::Join(join) => wire::encode_join(&mut out, datagram.sender, join),
        Message::CommitToken(commit) => {
            wire::encode_commit_token(&mut out, datagram.sender, commit);
        }
        Message::TokenHoldCancel { ring } => {
            wire::encode_token_hold_cancel(&mut out, datagram.sender, *ring);
        }
    }
    out
}

#[test]
fn random_valid_frames_round_trip() {
    let mut prng = Prng::from_seed(0xF8A3E);
    for _ in 0..20_000 {
        let frame = random_frame(&mut prng);
        let datagram = wire::decode(&frame).expect("a valid frame decodes");
        assert_eq!(reencode(&datagram), frame);
    }
}

#[test]
fn random_and_mutated_bytes_never_panic() {
    let mut prng = Prng::from_seed(0xBAD);
    let mut accepted = 0;
    for _ in 0..50_000 {
        // Pure noise, sometimes with a valid header so the body parsers are reached.
        let mut noise: Vec<u8> = (0..prng.below(200))
            .map(|_| prng.next_u64() as u8)
            .collect();
        if noise.len() >= 8 && prng.below(2) == 0 {
            noise[..4].copy_from_slice(&[0x43, 0x54, 1, prng.below(7) as u8]);
        }
        accepted += usize::from(wire::decode(&noise).is_ok());
        // A valid frame, truncated, extended or with bits flipped.
        let mut frame = random_frame(&mut prng);
        match prng.below(3) {
            0 => frame.truncate(prng.below(frame.len() as u64) as usize),
            1 => frame.push(prng.next_u64() as u8),
            _ => {
                for _ in 0..=prng.below(4) {
                    let at = prng.below(frame.len() as u64) as usize;
                    frame[at] ^= 1 << prng.below(8);
                }
            }
        }
        if let Ok(datagram) = wire::decode(&frame) {
            // Whatever decodes must encode back to the same bytes.
            assert_eq!(reencode(&datagram), frame);
        }
    }
    assert!(accepted < 50_000, "noise is mostly refused");
}

#[test]
fn a_live_core_counts_and_drops_garbage() {
    let ids = vec![NodeId(1), NodeId(2), NodeId(3)];
    let mut node = Node::new(Config::new(NodeId(2), &ids), Instant::ZERO).expect("valid config");
    let mut prng = Prng::from_seed(77);
    let mut buffer = Vec::new();
    for round in 0..20_000u64 {
        let mut frame = random_frame(&mut prng);
        if round % 2 == 0 {
            let at = prng.below(frame.len() as u64) as usize;
            frame[at] ^= 0x20;
        }
        let from = ids[prng.below(3) as usize];
        node.handle_datagram(Instant::from_nanos(round), from, &frame);
        node.handle_datagram_bytes(Instant::from_nanos(round), NodeId(9), &Bytes::from(frame));
        while node.poll_transmit(&mut buffer).is_some() {}
        while node.poll_event().is_some() {}
        node.assert_invariants();
    }
    let counters = node.counters();
    assert!(counters.datagrams_malformed > 1000, "{counters:?}");
    assert!(counters.datagrams_foreign >= 20_000, "{counters:?}");
    assert_eq!(counters.messages_delivered, 0, "garbage is never delivered");
}
