//! The core's timers: one optional deadline per kind, fired in a fixed order.

use crate::time::Instant;

/// Kinds of timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Timer {
    /// A token addressed to this node itself (one-node ring or the initial token).
    SelfToken = 0,
    /// Forward the token held by an idle representative.
    TokenHold = 1,
    /// Re-send the last forwarded token.
    TokenRetransmit = 2,
    /// No token for `token` ms.
    TokenLoss = 3,
    /// Re-send my join (gather).
    Join = 4,
    /// Give up waiting for consensus (gather).
    Consensus = 5,
    /// Announce an idle ring (merge detect).
    Merge = 6,
}

const TIMERS: [Timer; 7] = [
    Timer::SelfToken,
    Timer::TokenHold,
    Timer::TokenRetransmit,
    Timer::TokenLoss,
    Timer::Join,
    Timer::Consensus,
    Timer::Merge,
];

/// Deadlines by timer kind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TimerTable {
    deadlines: [Option<Instant>; 7],
}

impl TimerTable {
    /// Arms `timer` for `at` (replacing an earlier deadline).
    pub fn set(&mut self, timer: Timer, at: Instant) {
        self.deadlines[timer as usize] = Some(at);
    }

    /// Disarms `timer`.
    pub fn stop(&mut self, timer: Timer) {
        self.deadlines[timer as usize] = None;
    }

    /// Whether `timer` is armed.
    #[must_use]
    pub fn is_set(&self, timer: Timer) -> bool {
        self.deadlines[timer as usize].is_some()
    }

    /// The earliest deadline.
    #[must_use]
    pub fn next(&self) -> Option<Instant> {
        self.deadlines.iter().flatten().min().copied()
    }

    /// Disarms and returns the first (in kind order) timer due at `now`.
    pub fn pop_expired(&mut self, now: Instant) -> Option<Timer> {
        for timer in TIMERS {
            if self.deadlines[timer as usize].is_some_and(|at| at <= now) {
                self.deadlines[timer as usize] = None;
                return Some(timer);
            }
        }
        None
    }
}
