//! Helpers shared by the tests of the Rust client handles (`cpg::Handle`, `evs::Handle`):
//! dispatching events into a list until a condition holds, and the deliveries of such a list.

#![allow(dead_code, reason = "each test file uses a different subset")]

use std::fmt::Debug;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags};
use totemcast::api::DispatchFlags;
use totemcast::error::Result;
use totemcast::{cpg, evs};

/// How long [`collect`] waits for its condition.
pub(crate) const WITHIN: Duration = Duration::from_secs(20);

/// A client handle whose events can be collected.
pub(crate) trait Events: AsFd {
    /// What its dispatch hands over.
    type Event: Delivery;

    /// `dispatch(DispatchFlags::All, handler)`.
    fn dispatch_all(&mut self, handler: impl FnMut(Self::Event)) -> Result<usize>;
}

/// An event that may be a delivery.
pub(crate) trait Delivery: Debug {
    /// The sender's node and the message, if this is a delivery.
    fn delivery(&self) -> Option<(u32, &[u8])>;
}

impl Events for cpg::Handle {
    type Event = cpg::Event;

    fn dispatch_all(&mut self, handler: impl FnMut(cpg::Event)) -> Result<usize> {
        self.dispatch(DispatchFlags::All, handler)
    }
}

impl Delivery for cpg::Event {
    fn delivery(&self) -> Option<(u32, &[u8])> {
        match self {
            cpg::Event::Deliver {
                nodeid, payload, ..
            } => Some((nodeid.0, payload)),
            _ => None,
        }
    }
}

impl Events for evs::Handle {
    type Event = evs::Event;

    fn dispatch_all(&mut self, handler: impl FnMut(evs::Event)) -> Result<usize> {
        self.dispatch(DispatchFlags::All, handler)
    }
}

impl Delivery for evs::Event {
    fn delivery(&self) -> Option<(u32, &[u8])> {
        match self {
            evs::Event::Deliver {
                nodeid, payload, ..
            } => Some((nodeid.0, payload)),
            evs::Event::ConfChg { .. } => None,
        }
    }
}

/// Dispatches `handle`'s events into `into` until `done` holds (waiting on its descriptor),
/// at most [`WITHIN`].
#[track_caller]
pub(crate) fn collect<H: Events>(
    handle: &mut H,
    into: &mut Vec<H::Event>,
    done: impl Fn(&[H::Event]) -> bool,
) {
    collect_with(handle, into, WITHIN, |event| event, done);
}

/// [`collect`] waiting at most `within`, each event passed through `keep` (say, to copy a
/// delivery out of the ring).
#[track_caller]
pub(crate) fn collect_with<H: Events>(
    handle: &mut H,
    into: &mut Vec<H::Event>,
    within: Duration,
    keep: impl Fn(H::Event) -> H::Event,
    done: impl Fn(&[H::Event]) -> bool,
) {
    let deadline = Instant::now() + within;
    while !done(into) {
        assert!(
            Instant::now() < deadline,
            "{} events so far, the last ones: {:#?}",
            into.len(),
            &into[into.len().saturating_sub(3)..]
        );
        {
            let mut fds = [PollFd::new(handle.as_fd(), PollFlags::POLLIN)];
            let _ = nix::poll::poll(&mut fds, 100u16);
        }
        handle.dispatch_all(|event| into.push(keep(event))).unwrap();
    }
}

/// Dispatches `handle`'s events into `state` with `add` until `done(state)` holds (waiting on
/// its descriptor), at most `within`. For long runs of large messages: the events are counted
/// into `state`, not kept (a kept view holds its ring space).
#[track_caller]
pub(crate) fn pump<H: Events, S: Debug>(
    handle: &mut H,
    state: &mut S,
    within: Duration,
    add: impl Fn(&mut S, H::Event),
    done: impl Fn(&S) -> bool,
) {
    let deadline = Instant::now() + within;
    while !done(state) {
        assert!(Instant::now() < deadline, "stuck at {state:?}");
        {
            let mut fds = [PollFd::new(handle.as_fd(), PollFlags::POLLIN)];
            let _ = nix::poll::poll(&mut fds, 100u16);
        }
        handle.dispatch_all(|event| add(state, event)).unwrap();
    }
}

/// The deliveries among `events`: sender node and message.
pub(crate) fn deliveries<E: Delivery>(events: &[E]) -> Vec<(u32, Vec<u8>)> {
    events
        .iter()
        .filter_map(Delivery::delivery)
        .map(|(nodeid, payload)| (nodeid, payload.to_vec()))
        .collect()
}

/// The messages delivered among `events`.
pub(crate) fn payloads<E: Delivery>(events: &[E]) -> Vec<Vec<u8>> {
    events
        .iter()
        .filter_map(Delivery::delivery)
        .map(|(_, payload)| payload.to_vec())
        .collect()
}
