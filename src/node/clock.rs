//! The node's clocks: the protocol's [`Instant`] is CLOCK_MONOTONIC in nanoseconds, a time base
//! that every process on the machine shares (network namespaces included), so histories
//! recorded by several nodes on one machine can be merged by time.

use nix::time::{ClockId, clock_gettime};

use crate::time::Instant;

/// The monotonic clock now.
#[must_use]
pub fn now() -> Instant {
    let spec =
        clock_gettime(ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC is always available");
    let nanos = u64::try_from(spec.tv_sec()).unwrap_or(0) * 1_000_000_000
        + u64::try_from(spec.tv_nsec()).unwrap_or(0);
    Instant::from_nanos(nanos)
}

/// Wall-clock milliseconds since the Unix epoch (only to seed values that must grow across
/// restarts; never for protocol timing).
#[must_use]
pub fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_never_goes_back() {
        let first = now();
        let second = now();
        assert!(second >= first);
        assert!(first.as_nanos() > 0);
        assert!(unix_millis() > 1_600_000_000_000);
    }
}
