//! How the node waits for work: for a short while after its last work it keeps polling
//! without sleeping, giving the CPU to anyone else runnable in between, and only then sleeps.
//!
//! Why: most of a local round trip was spent waking sleeping processes, not working. On a
//! virtual machine a CPU that went idle takes tens of microseconds to run a task woken there
//! (the host must schedule the virtual CPU again), and a request-reply exchange wakes the node
//! twice per message. A node that polls for `busy_poll` microseconds after its last work sees
//! the next request at once, while the requester's CPU stays busy. Yielding between polls keeps
//! the polling from taking the CPU from the clients and the other nodes of an oversubscribed
//! host (measured: with plain spinning three nodes on two cores lost 15-20 % of their
//! throughput and their round trip got 40 % longer; with yielding both got better). Linux's
//! `net.core.busy_poll` and Aeron's idle strategies make the same trade: a little CPU while
//! traffic flows for much less latency.

use std::time::Duration;

use crate::time::Instant;

/// The default `system.busy_poll`.
pub const DEFAULT: Duration = Duration::from_micros(50);

/// The largest `system.busy_poll`: polling longer keeps a CPU busy for little gain.
pub const MAX: Duration = Duration::from_millis(10);

/// When the node last had work, and how long it keeps polling after that.
#[derive(Debug)]
pub struct BusyPoll {
    window: Duration,
    last_work: Option<Instant>,
}

impl BusyPoll {
    /// Polls for `window` after each piece of work (`Duration::ZERO`: never).
    #[must_use]
    pub fn new(window: Duration) -> BusyPoll {
        BusyPoll {
            window,
            last_work: None,
        }
    }

    /// Notes that the node had work at `now`.
    pub fn worked(&mut self, now: Instant) {
        self.last_work = Some(now);
    }

    /// Whether the node should poll without sleeping at `now`.
    #[must_use]
    pub fn polling(&self, now: Instant) -> bool {
        self.last_work
            .is_some_and(|last| now.saturating_duration_since(last) < self.window)
    }

    /// How long the node may wait for events at `now`, given the `timeout` of its timers: not
    /// at all while polling (after giving the CPU to whoever else is runnable), else `timeout`.
    /// A timer due now needs neither: the node has work already.
    #[must_use]
    pub fn wait(&self, now: Instant, timeout: Option<Duration>) -> Option<Duration> {
        if timeout == Some(Duration::ZERO) || !self.polling(now) {
            return timeout;
        }
        std::thread::yield_now();
        Some(Duration::ZERO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_polls_only_within_the_window_after_work() {
        let start = Instant::from_nanos(1_000_000);
        let mut busy = BusyPoll::new(Duration::from_micros(50));
        let timers = Some(Duration::from_millis(500));
        assert_eq!(busy.wait(start, timers), timers, "no work yet");
        busy.worked(start);
        let soon = start + Duration::from_micros(49);
        assert_eq!(busy.wait(soon, timers), Some(Duration::ZERO));
        assert_eq!(
            busy.wait(soon, None),
            Some(Duration::ZERO),
            "even without timers"
        );
        let due = Some(Duration::ZERO);
        assert_eq!(busy.wait(soon, due), due, "a timer due now: work already");
        let later = start + Duration::from_micros(50);
        assert_eq!(busy.wait(later, timers), timers);
        assert_eq!(busy.wait(later, None), None);
    }

    #[test]
    fn a_zero_window_never_polls() {
        let start = Instant::from_nanos(1_000_000);
        let mut busy = BusyPoll::new(Duration::ZERO);
        busy.worked(start);
        assert!(!busy.polling(start));
        assert_eq!(busy.wait(start, None), None);
    }
}
