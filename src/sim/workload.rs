//! The seeded client workload: which node submits when, with what size and guarantee, and the
//! self-describing payloads that let the checkers follow every message black-box.

use std::time::Duration;

use bytes::Bytes;

use super::history::{AppMessageId, ProcessId};
use super::options::WorkloadOptions;
use crate::api::Guarantee;
use crate::ids::NodeId;
use crate::prng::Prng;

/// Bytes at the start of every payload: magic, node, incarnation, counter.
pub const APP_HEADER_LEN: usize = 4 + 4 + 4 + 8;
const APP_MAGIC: u32 = 0xA11C_E5ED;

/// Draws submits.
#[derive(Debug)]
pub struct Workload {
    options: WorkloadOptions,
    prng: Prng,
}

impl Workload {
    /// A workload drawing from `prng`.
    #[must_use]
    pub fn new(options: WorkloadOptions, prng: Prng) -> Workload {
        Workload { options, prng }
    }

    /// Time until a node's next submit.
    pub fn interval(&mut self) -> Duration {
        let mean = u64::try_from(self.options.interval_mean.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(self.prng.below(mean.saturating_mul(2).max(1)))
    }

    /// The guarantee of the next message.
    pub fn guarantee(&mut self) -> Guarantee {
        let weights = self.options.guarantee_weights;
        let total: u64 = weights.iter().sum();
        let mut roll = self.prng.below(total.max(1));
        for (index, weight) in weights.iter().enumerate() {
            if roll < *weight {
                return Guarantee::try_from(index as u32).expect("0..=3");
            }
            roll -= weight;
        }
        Guarantee::Agreed
    }

    /// The payload of message `counter` of `origin`: the id, then seeded bytes.
    pub fn payload(&mut self, origin: ProcessId, counter: u64) -> Bytes {
        let large_max = self.options.large_max as u64;
        let size = if self.prng.chance(self.options.large) {
            self.prng
                .range_inclusive((64 << 10).min(large_max), large_max) as usize
        } else if self.prng.chance(self.options.medium) {
            self.prng.range_inclusive(1, (64 << 10).min(large_max)) as usize
        } else {
            self.prng.range_inclusive(0, self.options.small_max as u64) as usize
        };
        let size = size.max(APP_HEADER_LEN);
        let mut bytes = Vec::with_capacity(size);
        bytes.extend_from_slice(&APP_MAGIC.to_le_bytes());
        bytes.extend_from_slice(&origin.node.0.to_le_bytes());
        bytes.extend_from_slice(&origin.incarnation.to_le_bytes());
        bytes.extend_from_slice(&counter.to_le_bytes());
        let mut state = self.prng.next_u64();
        while bytes.len() < size {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let take = (size - bytes.len()).min(8);
            bytes.extend_from_slice(&state.to_le_bytes()[..take]);
        }
        Bytes::from(bytes)
    }
}

/// The message id written at the start of `payload`, if it has one.
#[must_use]
pub fn app_id(payload: &[u8]) -> Option<AppMessageId> {
    let header = payload.get(..APP_HEADER_LEN)?;
    let word =
        |range: std::ops::Range<usize>| u32::from_le_bytes(header[range].try_into().ok()?).into();
    let magic: Option<u32> = word(0..4);
    if magic? != APP_MAGIC {
        return None;
    }
    let node: u32 = word(4..8)?;
    let incarnation: u32 = word(8..12)?;
    let counter = u64::from_le_bytes(header[12..20].try_into().ok()?);
    Some(AppMessageId {
        origin: ProcessId {
            node: NodeId(node),
            incarnation,
        },
        counter,
    })
}

/// A 64-bit hash of `bytes`, 32 bytes at a time in four independent lanes (payloads are
/// megabytes; this runs for every submit and every delivery).
#[must_use]
pub fn payload_hash(bytes: &[u8]) -> u64 {
    const MULTIPLIER: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut lanes = [
        0x243F_6A88_85A3_08D3,
        0x1319_8A2E_0370_7344,
        0xA409_3822_299F_31D0,
        0x082E_FA98_EC4E_6C89,
    ];
    let mut blocks = bytes.chunks_exact(32);
    for block in &mut blocks {
        for (lane, word) in lanes.iter_mut().zip(block.chunks_exact(8)) {
            let word = u64::from_le_bytes(word.try_into().expect("eight bytes"));
            *lane = (*lane ^ word).wrapping_mul(MULTIPLIER).rotate_left(29);
        }
    }
    let mut hash = bytes.len() as u64;
    for lane in lanes {
        hash = crate::prng::splitmix64(hash ^ lane);
    }
    for word in blocks.remainder().chunks(8) {
        let mut padded = [0u8; 8];
        padded[..word.len()].copy_from_slice(word);
        hash = crate::prng::splitmix64(hash ^ u64::from_le_bytes(padded));
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prng::Ratio;

    #[test]
    fn payloads_carry_their_id() {
        let options = WorkloadOptions {
            interval_mean: Duration::from_millis(1),
            small_max: 100,
            medium: Ratio::ZERO,
            large: Ratio::ZERO,
            large_max: 1 << 20,
            guarantee_weights: [1, 1, 1, 1],
            send_queue_bytes_max: 1 << 22,
        };
        let mut workload = Workload::new(options, Prng::from_seed(3));
        let origin = ProcessId {
            node: NodeId(4),
            incarnation: 2,
        };
        let payload = workload.payload(origin, 99);
        assert!(payload.len() >= APP_HEADER_LEN && payload.len() <= 100.max(APP_HEADER_LEN));
        assert_eq!(
            app_id(&payload),
            Some(AppMessageId {
                origin,
                counter: 99
            })
        );
        assert_eq!(app_id(&payload[..10]), None);
        assert_eq!(app_id(&[0; 32]), None);
        assert_ne!(payload_hash(b"a"), payload_hash(b"b"));
        assert_ne!(payload_hash(b"a"), payload_hash(b"a\0"));
        assert_ne!(
            payload_hash(&[1; 9]),
            payload_hash(&[1, 1, 1, 1, 1, 1, 1, 1, 2])
        );
    }
}
