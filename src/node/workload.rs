//! A test workload inside the node (`totemcast node --workload RATE`): multicasts of all four
//! guarantees with self-describing payloads, recorded in the history so that the simulator's
//! checkers can judge a real cluster. Not for applications (they use CPG).

use std::time::Duration;

use bytes::Bytes;

use crate::api::Guarantee;
use crate::history::{AppMessageId, ProcessId, write_app_header};
use crate::prng::Prng;
use crate::time::Instant;

/// Submits at a steady rate.
#[derive(Debug)]
pub struct Workload {
    origin: ProcessId,
    interval: Duration,
    next_at: Instant,
    counter: u64,
    paused: bool,
    prng: Prng,
}

impl Workload {
    /// `rate` messages per second from `origin`, starting at `now`.
    #[must_use]
    pub fn new(origin: ProcessId, rate: u32, seed: u64, now: Instant) -> Workload {
        Workload {
            origin,
            interval: Duration::from_secs(1) / rate.max(1),
            next_at: now,
            counter: 0,
            paused: false,
            prng: Prng::from_seed(seed),
        }
    }

    /// Changes the rate from `now` on; 0 pauses. Message ids go on from where they were.
    pub fn set_rate(&mut self, rate: u32, now: Instant) {
        self.paused = rate == 0;
        self.interval = Duration::from_secs(1) / rate.max(1);
        self.next_at = now;
    }

    /// When the next message is due (`None` while paused).
    #[must_use]
    pub fn next_at(&self) -> Option<Instant> {
        (!self.paused).then_some(self.next_at)
    }

    /// The next message if it is due at `now`: its id, guarantee and payload. Call
    /// [`Workload::accepted`] or [`Workload::refused`] with the outcome of the send.
    pub fn due(&mut self, now: Instant) -> Option<(AppMessageId, Guarantee, Bytes)> {
        if self.paused || now < self.next_at {
            return None;
        }
        let id = AppMessageId {
            origin: self.origin,
            counter: self.counter,
        };
        let guarantee = match self.prng.below(8) {
            0 => Guarantee::Unordered,
            1 => Guarantee::Fifo,
            2 | 3 => Guarantee::Safe,
            _ => Guarantee::Agreed,
        };
        let size = if self.prng.below(20) == 0 {
            self.prng.range_inclusive(2_000, 100_000) as usize
        } else {
            self.prng.range_inclusive(20, 1_000) as usize
        };
        let mut payload = Vec::with_capacity(size);
        write_app_header(id, &mut payload);
        let fill = self.prng.next_u64().to_le_bytes();
        while payload.len() < size {
            payload.push(fill[payload.len() % 8]);
        }
        Some((id, guarantee, Bytes::from(payload)))
    }

    /// The send was accepted: the next message gets the next counter.
    pub fn accepted(&mut self, now: Instant) {
        self.counter += 1;
        // After a stall (e.g. SIGSTOP) catch up by a few messages at most, not a flood.
        let catch_up_limit = self.next_at + self.interval * 4;
        self.next_at = if now > catch_up_limit {
            now
        } else {
            self.next_at
        } + self.interval;
    }

    /// The send was refused (flow control): retry after one interval.
    pub fn refused(&mut self, now: Instant) {
        self.next_at = now + self.interval;
    }
}
