//! Arbitrary bytes at the decryption path (`node::crypto`), for every cipher.
//!
//! 1. `Opener::open` on the bytes (as they are, and with a valid header prefix for the cipher)
//!    never panics, leaves `out` empty on a drop, accepts nothing unauthenticated under an AEAD
//!    cipher, and drops a second copy of whatever it accepted as a replay.
//! 2. Round trip: the bytes sealed as plaintext open to the same bytes from the sealing node;
//!    again is a replay; another cipher's opener refuses them; a copy with one bit flipped is
//!    refused under an AEAD cipher and does not disturb the next genuine datagram.
//! 3. Replay window and sessions (cipher `none`, so the fuzzer picks counters and sessions): the
//!    input is cut into 3-byte records `op u8, value u16 LE`, each one datagram; the opener's
//!    verdicts must match a model (per sender: newest session, top counter, counters seen).
//!    `op` bits 0-1 pick the sender (nodes 1-3, or 9 outside the nodelist), bits 2-3 the session
//!    (the sender's current, one above, one below, or `value` itself), bits 4-5 the counter
//!    (`value`, `top - value`, `top + value`, or around the window's edge).

#![no_main]

use std::collections::BTreeSet;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use totemcast::ids::NodeId;
use totemcast::node::crypto::{
    Cipher, ClusterKey, DropReason, HEADER_LEN, Opener, REPLAY_WINDOW, Sealer,
};

const AUTHKEY: [u8; 64] = [0x5A; 64];
const CLUSTER: &str = "fuzz";
const NODES: [NodeId; 3] = [NodeId(1), NodeId(2), NodeId(3)];
const CIPHERS: [Cipher; 3] = [Cipher::Aes256Gcm, Cipher::ChaCha20Poly1305, Cipher::None];

fn keys() -> &'static [ClusterKey] {
    static KEYS: OnceLock<Vec<ClusterKey>> = OnceLock::new();
    KEYS.get_or_init(|| {
        CIPHERS
            .iter()
            .map(|&cipher| ClusterKey::derive(&AUTHKEY, CLUSTER, cipher))
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    for key in keys() {
        arbitrary_datagram(key, data);
        let mut with_header = data.to_vec();
        if with_header.len() >= 4 {
            with_header[..4].copy_from_slice(&[0x54, 1, key.cipher() as u8, 0]);
            arbitrary_datagram(key, &with_header);
        }
        round_trip(key, data);
    }
    replay_window(data);
});

fn arbitrary_datagram(key: &ClusterKey, datagram: &[u8]) {
    let mut opener = Opener::new(key, &NODES);
    let mut out = vec![0xEE; 3];
    let accepted = match opener.open(datagram, &mut out) {
        Ok(node) => {
            assert_eq!(key.cipher(), Cipher::None, "an AEAD accepted a forgery");
            assert!(NODES.contains(&node));
            assert_eq!(out, datagram[HEADER_LEN..]);
            let again = opener.open(datagram, &mut out);
            assert_eq!(again, Err(DropReason::Replayed));
            assert!(out.is_empty());
            1
        }
        Err(reason) => {
            assert!(out.is_empty(), "a drop ({reason:?}) leaves `out` empty");
            if datagram.len() < HEADER_LEN {
                assert_eq!(reason, DropReason::Malformed);
            }
            0
        }
    };
    // Every open is counted once: the first as opened or dropped, a replay as dropped.
    assert_eq!(opener.counters().opened, accepted);
    assert_eq!(opener.counters().dropped(), 1);
}

fn round_trip(key: &ClusterKey, plaintext: &[u8]) {
    let session = plaintext
        .first_chunk::<8>()
        .map_or(1, |bytes| u64::from_le_bytes(*bytes));
    let mut sealer = Sealer::new(key, NodeId(2), session);
    let mut opener = Opener::new(key, &NODES);
    let mut sealed = Vec::new();
    let mut out = Vec::new();
    sealer.seal(plaintext, &mut sealed);
    assert_eq!(sealed.len(), plaintext.len() + key.cipher().overhead());
    assert_eq!(opener.open(&sealed, &mut out), Ok(NodeId(2)));
    assert_eq!(out, plaintext);
    assert_eq!(opener.open(&sealed, &mut out), Err(DropReason::Replayed));

    for other in keys().iter().filter(|other| other.cipher() != key.cipher()) {
        let mut theirs = Opener::new(other, &NODES);
        assert_eq!(
            theirs.open(&sealed, &mut out),
            Err(DropReason::CipherMismatch)
        );
    }

    // A second genuine datagram and a copy of it with one bit flipped, the bit picked by the
    // input; the tampered copy goes first.
    sealer.seal(plaintext, &mut sealed);
    let bits = sealed.len() * 8;
    let pick = plaintext.iter().fold(plaintext.len(), |acc, &b| {
        acc.wrapping_mul(31).wrapping_add(usize::from(b))
    });
    let bit = pick % bits;
    let mut tampered = sealed.clone();
    tampered[bit / 8] ^= 1 << (bit % 8);
    let verdict = opener.open(&tampered, &mut out);
    if key.cipher() != Cipher::None {
        assert!(verdict.is_err(), "a flipped bit {bit} was accepted");
        assert_eq!(opener.open(&sealed, &mut out), Ok(NodeId(2)));
        assert_eq!(out, plaintext);
    }
}

/// Per sender: newest session, highest counter accepted in it, counters accepted in it.
type Model = [Option<(u64, u64, BTreeSet<u64>)>; 3];

fn replay_window(data: &[u8]) {
    let key = &keys()[2];
    assert_eq!(key.cipher(), Cipher::None);
    let mut opener = Opener::new(key, &NODES);
    let mut model: Model = [None, None, None];
    let mut out = Vec::new();
    for record in data.chunks_exact(3) {
        let op = record[0];
        let value = u64::from(u16::from_le_bytes([record[1], record[2]]));
        let index = usize::from(op & 3);
        let node = NODES.get(index).copied().unwrap_or(NodeId(9));
        let current = model.get(index).and_then(Option::as_ref);
        let (session, top) = current.map_or((1000, 0), |(session, top, _)| (*session, *top));
        let session = match (op >> 2) & 3 {
            0 => session,
            1 => session + 1,
            2 => session.saturating_sub(1),
            _ => value,
        };
        let counter = match (op >> 4) & 3 {
            0 => value,
            1 => top.saturating_sub(value),
            2 => top.saturating_add(value),
            _ => (top + value % 8).saturating_sub(REPLAY_WINDOW + 4),
        };
        let mut datagram = Vec::with_capacity(HEADER_LEN + 1);
        datagram.extend_from_slice(&[0x54, 1, Cipher::None as u8, 0]);
        datagram.extend_from_slice(&node.0.to_le_bytes());
        datagram.extend_from_slice(&session.to_le_bytes());
        datagram.extend_from_slice(&counter.to_le_bytes());
        datagram.push(op);

        let expected = expect(&mut model, index, session, counter).map(|()| node);
        let verdict = opener.open(&datagram, &mut out);
        assert_eq!(
            verdict, expected,
            "node {node:?} session {session} counter {counter}; model {model:?}"
        );
        if verdict.is_ok() {
            assert_eq!(out, [op]);
        }
    }
}

/// What the opener must say, updating the model as the opener should update itself.
fn expect(model: &mut Model, index: usize, session: u64, counter: u64) -> Result<(), DropReason> {
    let Some(slot) = model.get_mut(index) else {
        return Err(DropReason::UnknownNode);
    };
    match slot {
        Some((current, top, seen)) if session == *current => {
            let fresh =
                counter > *top || (*top - counter < REPLAY_WINDOW && !seen.contains(&counter));
            if !fresh {
                return Err(DropReason::Replayed);
            }
            *top = (*top).max(counter);
            seen.insert(counter);
            let floor = top.saturating_sub(REPLAY_WINDOW);
            seen.retain(|&c| c >= floor);
            Ok(())
        }
        Some((current, _, _)) if session < *current => Err(DropReason::StaleSession),
        _ => {
            *slot = Some((session, counter, BTreeSet::from([counter])));
            Ok(())
        }
    }
}
