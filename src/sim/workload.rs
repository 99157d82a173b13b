//! The seeded client workload: which node submits when, with what size and guarantee, and the
//! self-describing payloads that let the checkers follow every message black-box.

use std::time::Duration;

use bytes::Bytes;

use super::history::{AppMessageId, ProcessId};
use super::options::WorkloadOptions;
use crate::api::Guarantee;
use crate::prng::Prng;

pub use crate::history::{APP_HEADER_LEN, app_id, payload_hash};

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
        crate::history::write_app_header(AppMessageId { origin, counter }, &mut bytes);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::NodeId;
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
    }
}
