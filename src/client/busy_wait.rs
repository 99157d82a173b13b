//! How a client waits for its node: for a short while it polls its descriptors without
//! sleeping, giving the CPU to anyone else runnable in between, and only then sleeps.
//!
//! Why: the node polls the same way after its work (see `crate::node::busy_poll`), and what
//! was left of a local round trip was the wake-up of the client that sleeps for the answer: a
//! task woken on a virtual CPU that went idle waits tens of microseconds before it runs. A
//! client that polls for a reply that comes within the window is not woken at all. Measured
//! here: the local ping-pong round trip fell from 48–50 µs to 18–21 µs, and the fan-out was
//! the same or better. A client that waits longer than the window sleeps as before, so an idle
//! client costs one window of CPU per wait, not more.

use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollTimeout, poll};

use crate::error::{Error, Result};

/// A handle's busy-poll window unless set otherwise: the node's default.
pub(crate) const DEFAULT: Duration = crate::node::busy_poll::DEFAULT;

/// The longest window a handle takes: polling longer keeps a CPU busy for little gain.
pub(crate) const MAX: Duration = crate::node::busy_poll::MAX;

/// `window` if a handle may poll that long; `CS_ERR_INVALID_PARAM` beyond [`MAX`].
pub(crate) fn checked(window: Duration) -> Result<Duration> {
    if window > MAX {
        return Err(Error::InvalidParam(
            format!(
                "busy_poll of {} µs is above the maximum of {} µs",
                window.as_micros(),
                MAX.as_micros()
            )
            .into(),
        ));
    }
    Ok(window)
}

/// `poll(fds, timeout)` (`None`: no timeout) that first polls without sleeping for up to
/// `spin` (never longer than `timeout`), yielding the CPU between polls. Returns what `poll`
/// returns: how many descriptors are ready, 0 on timeout.
pub(crate) fn poll_spinning(
    fds: &mut [PollFd],
    spin: Duration,
    timeout: Option<Duration>,
) -> std::result::Result<i32, Errno> {
    let spin = timeout.map_or(spin, |timeout| spin.min(timeout));
    let mut left = timeout;
    if !spin.is_zero() {
        let start = Instant::now();
        loop {
            let ready = poll(fds, PollTimeout::ZERO)?;
            if ready > 0 {
                return Ok(ready);
            }
            let spent = start.elapsed();
            if spent >= spin {
                left = timeout.map(|timeout| timeout.saturating_sub(spent));
                break;
            }
            std::thread::yield_now();
        }
        if left == Some(Duration::ZERO) {
            return Ok(0);
        }
    }
    let timeout = left.map_or(PollTimeout::NONE, |left| {
        // Round up: a wait of 0.4 ms must not become a poll that returns at once.
        let millis = left.as_nanos().div_ceil(1_000_000);
        PollTimeout::try_from(millis).unwrap_or(PollTimeout::MAX)
    });
    poll(fds, timeout)
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use nix::poll::PollFlags;
    use nix::sys::eventfd::{EfdFlags, EventFd};

    use super::*;

    #[test]
    fn a_window_above_the_maximum_is_refused() {
        assert_eq!(checked(MAX).unwrap(), MAX);
        assert_eq!(checked(Duration::ZERO).unwrap(), Duration::ZERO);
        let error = checked(MAX + Duration::from_micros(1)).unwrap_err();
        assert!(matches!(error, Error::InvalidParam(_)), "{error:?}");
        assert!(error.to_string().contains("10001 µs"), "{error}");
    }

    #[test]
    fn a_ready_descriptor_is_seen_while_spinning() {
        let event = EventFd::from_flags(EfdFlags::EFD_NONBLOCK).unwrap();
        event.write(1).unwrap();
        let mut fds = [PollFd::new(event.as_fd(), PollFlags::POLLIN)];
        let ready = poll_spinning(&mut fds, Duration::from_millis(10), None).unwrap();
        assert_eq!(ready, 1);
        assert!(fds[0].revents().unwrap().contains(PollFlags::POLLIN));
    }

    #[test]
    fn a_descriptor_made_ready_after_the_window_wakes_the_sleep() {
        let event = EventFd::from_flags(EfdFlags::EFD_NONBLOCK).unwrap();
        let writer = event.as_fd().try_clone_to_owned().unwrap();
        let mut fds = [PollFd::new(event.as_fd(), PollFlags::POLLIN)];
        let spin = Duration::from_micros(200);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                // After the window: the poller sleeps by then, or is about to.
                std::thread::sleep(spin * 5);
                nix::unistd::write(&writer, &1u64.to_ne_bytes()).unwrap();
            });
            let ready = poll_spinning(&mut fds, spin, None).unwrap();
            assert_eq!(ready, 1);
        });
    }

    #[test]
    fn the_timeout_bounds_spinning_and_sleeping() {
        let event = EventFd::from_flags(EfdFlags::EFD_NONBLOCK).unwrap();
        let mut fds = [PollFd::new(event.as_fd(), PollFlags::POLLIN)];
        let start = Instant::now();
        let ready = poll_spinning(
            &mut fds,
            Duration::from_secs(1),
            Some(Duration::from_millis(20)),
        )
        .unwrap();
        assert_eq!(ready, 0);
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(20), "{waited:?}");
        assert!(
            waited < Duration::from_millis(900),
            "spun the full window: {waited:?}"
        );
        let ready =
            poll_spinning(&mut fds, Duration::from_millis(5), Some(Duration::ZERO)).unwrap();
        assert_eq!(ready, 0, "a zero timeout never waits");
    }
}
