//! `totemcast.cpg.Handle`: [`crate::cpg::Handle`] for Python (Corosync's `cpg_*` calls as
//! methods).
//!
//! * Waiting for events or for room in the request ring happens with the GIL released, in
//!   slices of [`SLICE`] with `check_signals` in between, so Ctrl-C interrupts it. The connection
//!   sits behind a mutex that is not held while a callback runs or while `dispatch` sleeps: other
//!   threads may send, query or finalize meanwhile (a blocking `dispatch` in a dedicated thread,
//!   as in Corosync, returns when another thread finalizes the handle).
//! * The wake-up descriptor (`fd_get`) tells the truth after every call: readable while events
//!   wait (here or in the ring), otherwise armed so that the node makes it readable with the
//!   next event ([`State::settle`]). `select` and asyncio need nothing else.
//! * Events are read in batches per release of the GIL; a callback that raises stops the
//!   dispatch at its event and the later events stay queued, in order, for the next one.

use std::borrow::Cow;
use std::collections::{BTreeSet, VecDeque};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use bytes::Bytes;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::eventfd::{EfdFlags, EventFd};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::{MutexExt as _, PyOnceLock};
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};
use pyo3::{PyTraverseError, PyVisit};

use super::buffer::{InputBuffer, PyMessage, PyZcbBuffer};
use super::node::PyNode;
use crate::api::{DispatchFlags, Guarantee, IterationType};
use crate::cpg::{Event, Handle, InterruptCheck, Options};
use crate::error::Error;

/// Longest stretch a wait goes without checking for signals (Ctrl-C).
pub(super) const SLICE: Duration = Duration::from_millis(100);
/// Most events one `dispatch` reads per release of the GIL.
pub(super) const BATCH_EVENTS: usize = 1024;
/// Most payload bytes one `dispatch` reads per release of the GIL (at least one event).
pub(super) const BATCH_BYTES: usize = 4 << 20;
/// Messages up to this size are copied from the caller's buffers into the ring with the GIL
/// held (they fit one ring record: no waiting). Larger ones are copied out first, then sent
/// with the GIL released, since sending them may wait for the node to read earlier parts.
const SMALL_MESSAGE: usize = 1 << 20;
/// Most messages `mcast_many` hands to the Rust handle at once.
const MANY_CHUNK: usize = 256;

/// The Python classes handed to callbacks and returned by queries.
struct Classes {
    address: Py<PyAny>,
    ring_id: Py<PyAny>,
    iteration: Py<PyAny>,
    /// `Reason` members by value.
    reasons: Vec<Py<PyAny>>,
    /// `FlowControlState` members by value.
    flow_control: Vec<Py<PyAny>>,
}

static CLASSES: PyOnceLock<Classes> = PyOnceLock::new();

fn classes(py: Python<'_>) -> PyResult<&'static Classes> {
    CLASSES.get_or_try_init(py, || {
        let cpg = py.import("totemcast.cpg")?;
        let members = |name: &str, count: u32| -> PyResult<Vec<Py<PyAny>>> {
            let class = cpg.getattr(name)?;
            (0..count)
                .map(|value| class.call1((value,)).map(Bound::unbind))
                .collect()
        };
        Ok(Classes {
            address: cpg.getattr("Address")?.unbind(),
            ring_id: cpg.getattr("RingId")?.unbind(),
            iteration: cpg.getattr("IterationDescription")?.unbind(),
            reasons: members("Reason", 6)?,
            flow_control: members("FlowControlState", 2)?,
        })
    })
}

/// The connection and what the Python layer keeps beside it.
struct State {
    /// `None` once finalized.
    handle: Option<Handle>,
    /// Events read ahead of the callbacks: handed back by a dispatch whose callback raised,
    /// or read while arming the descriptor. They come before anything in the handle.
    pending: VecDeque<Event>,
    /// Group names that were given as `str`: callbacks get them back as `str`.
    str_groups: BTreeSet<Bytes>,
}

impl State {
    fn handle(&mut self) -> PyResult<&mut Handle> {
        self.handle.as_mut().ok_or_else(bad_handle)
    }

    /// Moves events into `out` (first those pending here, then from the handle) until it holds
    /// `max` events or the payloads read reach `max_bytes`. Never waits.
    fn read_events(
        &mut self,
        max: usize,
        max_bytes: usize,
        out: &mut VecDeque<Event>,
    ) -> Result<(), Error> {
        let mut bytes = 0;
        while out.len() < max && bytes < max_bytes {
            let event = match self.pending.pop_front() {
                Some(event) => event,
                None => match self.handle.as_mut() {
                    Some(handle) => match handle.try_next_event()? {
                        Some(event) => event,
                        None => break,
                    },
                    None => break,
                },
            };
            if let Event::Deliver { payload, .. } = &event {
                bytes += payload.len();
            }
            out.push_back(event);
        }
        Ok(())
    }

    /// Marks the handle as asleep on its event ring so the node makes the descriptor readable
    /// with its next event. False if events are waiting (read them instead of sleeping).
    ///
    /// `arm_descriptor` arms but consumes a wake-up the node may give in the same instant; the
    /// `try_next_event` after it catches the event that wake-up was for.
    fn arm(&mut self) -> Result<bool, Error> {
        if !self.pending.is_empty() {
            return Ok(false);
        }
        let Some(handle) = self.handle.as_mut() else {
            return Ok(false);
        };
        if !handle.arm_descriptor()? {
            return Ok(false);
        }
        if let Some(event) = handle.try_next_event()? {
            self.pending.push_back(event);
            return Ok(false);
        }
        Ok(true)
    }

    /// Leaves the descriptor truthful after a call: armed if nothing waits, else readable. If
    /// the connection failed, readable too, so that a `select` loop calls `dispatch` and learns
    /// why.
    fn settle(&mut self, wakeup: &OwnedFd) {
        if self.handle.is_some() && !matches!(self.arm(), Ok(true)) {
            signal(wakeup);
        }
    }
}

/// Makes the wake-up descriptor readable.
pub(super) fn signal(wakeup: &OwnedFd) {
    let _ = nix::unistd::write(wakeup, &1u64.to_ne_bytes());
}

/// Consumes pending wake-ups of the descriptor.
fn clear(wakeup: &OwnedFd) {
    let mut counter = [0u8; 8];
    let _ = nix::unistd::read(wakeup, &mut counter);
}

/// Waits up to `timeout` for the wake-up descriptor or `cancel` (finalize); never consumes.
pub(super) fn wait_readable(
    wakeup: &OwnedFd,
    cancel: &OwnedFd,
    timeout: Duration,
) -> Result<(), Error> {
    let millis = u16::try_from(timeout.as_millis().max(1)).unwrap_or(u16::MAX);
    let mut set = [
        PollFd::new(wakeup.as_fd(), PollFlags::POLLIN),
        PollFd::new(cancel.as_fd(), PollFlags::POLLIN),
    ];
    match poll(&mut set, PollTimeout::from(millis)) {
        Ok(_) | Err(nix::errno::Errno::EINTR) => Ok(()),
        Err(errno) => Err(Error::Library(format!("poll: {errno}").into())),
    }
}

/// The Python objects a handle holds (kept apart for the garbage collector).
#[derive(Default)]
struct Refs {
    deliver: Option<Py<PyAny>>,
    confchg: Option<Py<PyAny>>,
    totem_confchg: Option<Py<PyAny>>,
    context: Option<Py<PyAny>>,
}

/// A connection to the local node's CPG service (Corosync's `cpg_*` calls as methods).
///
/// A handle is in at most one group at a time. Every member of a group delivers the group's
/// messages and membership changes in the same total order, its own included. Callbacks run
/// inside `dispatch`, in delivery order:
///
/// - `deliver(handle, group, nodeid, pid, msg)`: `msg` is a read-only `Message` buffer, a view
///   of the node's shared ring; keep `bytes(msg)` if you store it.
/// - `confchg(handle, group, members, left, joined)`: lists of `cpg.Address`; a joiner sees its
///   own join first, a leaver its own leave.
/// - `totem_confchg(handle, ring_id, nodeids)`: a new totem ring (`cpg.RingId`).
///
/// `group` comes back as `str` if it was joined as `str`, else `bytes`. The node is found through
/// `socket=`, else `$TOTEMCAST_SOCKET`, else `cpg.DEFAULT_SOCKET`. Waits release the GIL and
/// Ctrl-C interrupts them; the handle may be shared between threads. `initial_totem_conf=True`
/// delivers the totem configuration right after the first confchg. `node=` (an embedded
/// `totemcast.Node`) talks to that node without a socket. A handle is a context manager that
/// finalizes on exit.
///
/// Raises LibraryError (no node on the socket), AccessError, VersionError, TypeError (a callback
/// that is not callable).
#[pyclass(frozen, name = "Handle", module = "totemcast.cpg")]
pub(crate) struct PyCpgHandle {
    state: Mutex<State>,
    refs: Mutex<Refs>,
    /// A duplicate of the handle's wake-up eventfd, written to keep `fd_get()` readable while
    /// events wait in `pending`.
    wakeup: OwnedFd,
    /// A duplicate of the handle's descriptor (what `fd_get()` returns: readable on a wake-up
    /// or when the node is gone); valid while this object lives, so waiters may poll it
    /// without holding the connection.
    watch: OwnedFd,
    /// Readable once the handle is finalized: wakes every waiter.
    cancel: OwnedFd,
    finalized: AtomicBool,
    nodeid: u32,
    /// The thread whose request waits with the connection held (see `request`).
    requesting: Mutex<Option<ThreadId>>,
    /// Set by a `finalize` from a signal handler during a request of its thread.
    close_pending: Arc<AtomicBool>,
}

/// A group name from Python: its bytes and whether it was a `str`.
struct GroupName {
    bytes: Vec<u8>,
    is_str: bool,
}

impl<'a, 'py> FromPyObject<'a, 'py> for GroupName {
    type Error = PyErr;

    fn extract(object: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        if let Ok(text) = object.cast::<PyString>() {
            return Ok(GroupName {
                bytes: text.to_str()?.as_bytes().to_vec(),
                is_str: true,
            });
        }
        if let Ok(bytes) = object.cast::<PyBytes>() {
            return Ok(GroupName {
                bytes: bytes.as_bytes().to_vec(),
                is_str: false,
            });
        }
        Err(PyTypeError::new_err(format!(
            "a group name is str or bytes, not {}",
            object.get_type().name()?
        )))
    }
}

pub(super) fn bad_handle() -> PyErr {
    Error::BadHandle("the handle is finalized".into()).into()
}

pub(super) fn finalized_while_waiting() -> PyErr {
    Error::BadHandle("the handle was finalized while this call waited".into()).into()
}

/// The socket to use: the argument, else `$TOTEMCAST_SOCKET`, else the default.
pub(super) fn resolve_socket(socket: Option<PathBuf>) -> PathBuf {
    socket
        .or_else(|| {
            std::env::var_os("TOTEMCAST_SOCKET")
                .filter(|value| !value.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| PathBuf::from(crate::node::config_file::DEFAULT_SOCKET))
}

pub(super) fn check_callback(name: &str, callback: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
    match callback {
        Some(callback) if !callback.is_none() && !callback.is_callable() => Err(
            PyTypeError::new_err(format!("{name} must be callable or None")),
        ),
        _ => Ok(()),
    }
}

/// The group as Python sees it: `str` if it was given as `str`.
fn group_object<'py>(py: Python<'py>, group: &Bytes, as_str: bool) -> Bound<'py, PyAny> {
    if as_str && let Ok(text) = std::str::from_utf8(group) {
        return PyString::new(py, text).into_any();
    }
    PyBytes::new(py, group).into_any()
}

pub(super) fn some_object(object: Option<Bound<'_, PyAny>>) -> Option<Py<PyAny>> {
    object.filter(|o| !o.is_none()).map(Bound::unbind)
}

/// The interrupt check a request installs on the handle: runs Python's signal handlers; the
/// exception one raises goes to `raised` and ends the wait with CS_ERR_INTERRUPT, as does a
/// `finalize` by one of them (`close_pending`).
fn interrupt_check(
    raised: Arc<Mutex<Option<PyErr>>>,
    close_pending: Arc<AtomicBool>,
) -> InterruptCheck {
    Box::new(move || {
        #[allow(
            clippy::redundant_closure_for_method_calls,
            reason = "the method's lifetime is not general enough"
        )]
        let checked = Python::attach(|py| py.check_signals());
        if let Err(error) = checked {
            *raised.lock().unwrap_or_else(PoisonError::into_inner) = Some(error);
            return Err(Error::Interrupt("interrupted by a signal".into()));
        }
        if close_pending.load(Ordering::Acquire) {
            return Err(Error::Interrupt("finalized by a signal handler".into()));
        }
        Ok(())
    })
}

/// Adds a note to an exception (PEP 678), best effort.
fn with_note(py: Python<'_>, error: PyErr, note: &str) -> PyErr {
    let _ = error.value(py).call_method1("add_note", (note,));
    error
}

/// A message's bytes borrowed from the caller's buffers, or copied into one owned buffer
/// (messages larger than [`SMALL_MESSAGE`] or non-contiguous pieces).
fn gather<'b>(py: Python<'_>, inputs: &'b [InputBuffer<'_>]) -> PyResult<Vec<Cow<'b, [u8]>>> {
    inputs.iter().map(|input| input.as_slice(py)).collect()
}

/// How long `mcast_many` waits for room in the request ring.
#[derive(Clone, Copy, Debug)]
enum Patience {
    /// Not at all.
    None,
    /// As long as it takes.
    Forever,
    /// Until then.
    Until(Instant),
}

impl PyCpgHandle {
    /// Locks the connection (GIL released while waiting for the lock); `BadHandleError` once
    /// finalized.
    fn lock<'a>(&'a self, py: Python<'_>) -> PyResult<MutexGuard<'a, State>> {
        if self.in_own_request() {
            return Err(Error::Busy(
                "a request of this handle waits in this thread (a signal handler called it)".into(),
            )
            .into());
        }
        let guard = self.lock_any(py);
        if guard.handle.is_none() {
            return Err(bad_handle());
        }
        Ok(guard)
    }

    fn lock_any<'a>(&'a self, py: Python<'_>) -> MutexGuard<'a, State> {
        self.state
            .lock_py_attached(py)
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn is_finalized(&self) -> bool {
        self.finalized.load(Ordering::Acquire)
    }

    /// Waits one slice (GIL released, connection not held) for the descriptor or a finalize,
    /// then checks for signals.
    fn wait_slice(&self, py: Python<'_>, slice: Duration) -> PyResult<()> {
        let (watch, cancel) = (&self.watch, &self.cancel);
        py.detach(|| wait_readable(watch, cancel, slice))?;
        py.check_signals()
    }

    /// Runs a request (it waits for the node's answer with the GIL released, checking for
    /// signals every 100 ms and after each: Ctrl-C ends the wait, and the request still takes
    /// effect), then leaves the descriptor truthful. JOIN and LEAVE are retried while the node
    /// answers BUSY (this handle's previous join or leave is still on its way), as libcpg does.
    ///
    /// A signal handler runs while the connection is held: one that calls this handle gets
    /// BusyError, except `finalize`, which the request completes when its wait ends.
    fn request<T: Send>(
        &self,
        py: Python<'_>,
        retry_busy: bool,
        call: impl Fn(&mut Handle) -> Result<T, Error> + Sync,
    ) -> PyResult<T> {
        let mut guard = self.lock(py)?;
        loop {
            let handle = guard.handle()?;
            let raised = Arc::new(Mutex::new(None));
            let check = interrupt_check(Arc::clone(&raised), Arc::clone(&self.close_pending));
            handle.set_interrupt_check(Some(check));
            *self.requesting() = Some(std::thread::current().id());
            let result = py.detach(|| call(handle));
            *self.requesting() = None;
            handle.set_interrupt_check(None);
            let raised = raised.lock().unwrap_or_else(PoisonError::into_inner).take();
            if self.close_pending.swap(false, Ordering::AcqRel) {
                // Finalized by a signal handler during the wait (see `finalize`).
                self.close(&mut guard);
                return Err(raised.unwrap_or_else(finalized_while_waiting));
            }
            match (result, raised) {
                (Err(Error::Interrupt(_)), Some(error)) => {
                    guard.settle(&self.wakeup);
                    return Err(error);
                }
                (Err(Error::Busy(_)), _) if retry_busy => {
                    // Progress shows as an event for this handle (its join or leave delivered).
                    let state = &mut *guard;
                    let mut events = std::mem::take(&mut state.pending);
                    let read = state.read_events(usize::MAX, usize::MAX, &mut events);
                    state.pending = events;
                    read?;
                    if state.arm()? {
                        drop(guard);
                        self.wait_slice(py, SLICE)?;
                        guard = self.lock_any(py);
                        if guard.handle.is_none() {
                            return Err(finalized_while_waiting());
                        }
                    }
                }
                (result, _) => {
                    guard.settle(&self.wakeup);
                    return result.map_err(PyErr::from);
                }
            }
        }
    }

    /// The thread whose request waits with the connection held (its signal handlers run then).
    fn requesting(&self) -> MutexGuard<'_, Option<ThreadId>> {
        self.requesting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether this thread holds the connection in a request (the caller is a signal handler).
    fn in_own_request(&self) -> bool {
        *self.requesting() == Some(std::thread::current().id())
    }

    /// Closes the connection and drops the callbacks (`finalize`, after `finalized` is set).
    fn close(&self, guard: &mut MutexGuard<'_, State>) {
        let handle = guard.handle.take();
        let pending = std::mem::take(&mut guard.pending);
        drop(pending);
        if let Some(mut handle) = handle {
            let _ = handle.finalize();
        }
        let refs = std::mem::take(&mut *self.refs.lock().unwrap_or_else(PoisonError::into_inner));
        drop(refs);
    }

    /// Runs the callback for `event` (if one is set).
    fn call(&self, handle: &Bound<'_, Self>, event: Event) -> PyResult<()> {
        let py = handle.py();
        let callback = {
            let refs = self.refs.lock().unwrap_or_else(PoisonError::into_inner);
            match &event {
                Event::Deliver { .. } => refs.deliver.as_ref().map(|c| c.clone_ref(py)),
                Event::ConfChg { .. } => refs.confchg.as_ref().map(|c| c.clone_ref(py)),
                Event::TotemConfChg { .. } => refs.totem_confchg.as_ref().map(|c| c.clone_ref(py)),
            }
        };
        let Some(callback) = callback else {
            return Ok(());
        };
        let is_str = |group: &Bytes| self.lock_any(py).str_groups.contains(group);
        match event {
            Event::Deliver {
                group,
                nodeid,
                pid,
                payload,
            } => {
                let group = group_object(py, &group, is_str(&group));
                let message = if payload.is_zero_copy() {
                    PyMessage::from_view(payload)
                } else {
                    PyMessage::from_bytes(payload.to_bytes())
                };
                let message = Bound::new(py, message)?;
                callback.call1(py, (handle, group, nodeid.0, pid, message))?;
            }
            Event::ConfChg {
                group,
                members,
                left,
                joined,
            } => {
                let classes = classes(py)?;
                let list = |addresses: Vec<crate::cpg::Address>| -> PyResult<Bound<'_, PyList>> {
                    let items = addresses
                        .into_iter()
                        .map(|a| {
                            let reason = &classes.reasons[u32::from(a.reason) as usize];
                            classes.address.call1(py, (a.nodeid.0, a.pid, reason))
                        })
                        .collect::<PyResult<Vec<_>>>()?;
                    PyList::new(py, items)
                };
                let group = group_object(py, &group, is_str(&group));
                let args = (handle, group, list(members)?, list(left)?, list(joined)?);
                callback.call1(py, args)?;
            }
            Event::TotemConfChg { ring, nodes } => {
                let ring_id = classes(py)?.ring_id.call1(py, (ring.rep, ring.seq))?;
                let nodes = PyList::new(py, nodes.iter().map(|n| n.0))?;
                callback.call1(py, (handle, ring_id, nodes))?;
            }
        }
        Ok(())
    }

    /// Puts events a dispatch could not run back in front of the queue.
    fn hand_back(&self, py: Python<'_>, mut events: VecDeque<Event>) {
        let mut guard = self.lock_any(py);
        if guard.handle.is_some() {
            while let Some(event) = events.pop_back() {
                guard.pending.push_front(event);
            }
            guard.settle(&self.wakeup);
        }
    }

    /// Sends one message (any size) through the Rust handle. `Ok(false)`: the ring is full and
    /// nothing was sent; the node is asked to wake the descriptor when it has made room.
    fn send(
        py: Python<'_>,
        guard: &mut MutexGuard<'_, State>,
        guarantee: Guarantee,
        inputs: &[InputBuffer<'_>],
    ) -> PyResult<bool> {
        let len: usize = inputs.iter().map(InputBuffer::len).sum();
        let handle = guard.handle()?;
        // Copied out only for a large message: sending it may wait for the node between parts,
        // which must not happen with the GIL held (nor with the GIL released while borrowing).
        let owned = if len > SMALL_MESSAGE {
            let mut message = Vec::with_capacity(len);
            for piece in gather(py, inputs)? {
                message.extend_from_slice(&piece);
            }
            Some(message)
        } else {
            None
        };
        loop {
            let sent = if let Some(message) = &owned {
                py.detach(|| handle.mcast_joined(guarantee, &[message]))
            } else {
                let pieces = gather(py, inputs)?;
                let slices: Vec<&[u8]> = pieces.iter().map(|piece| &piece[..]).collect();
                handle.mcast_joined(guarantee, &slices)
            };
            match sent {
                Ok(()) => return Ok(true),
                // Ask for a wake-up once there is room; if there is room already, try again.
                Err(Error::TryAgain(_)) => {
                    if handle.notify_when_writable(len)? {
                        return Ok(false);
                    }
                }
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// Sends the messages of `messages` in order, waiting for room as `patience` allows;
    /// returns how many were sent, and the error that stopped it early, if one did.
    fn send_many(
        &self,
        py: Python<'_>,
        guarantee: Guarantee,
        messages: &Bound<'_, PyAny>,
        patience: Patience,
    ) -> (usize, PyResult<()>) {
        let mut sent = 0usize;
        let mut slot = match self.lock(py) {
            Ok(guard) => Some(guard),
            Err(error) => return (0, Err(error)),
        };
        let result = self.send_loop(py, &mut slot, guarantee, messages, patience, &mut sent);
        if let Some(guard) = slot.as_mut() {
            guard.settle(&self.wakeup);
        }
        (sent, result)
    }

    fn send_loop<'a>(
        &'a self,
        py: Python<'_>,
        slot: &mut Option<MutexGuard<'a, State>>,
        guarantee: Guarantee,
        messages: &Bound<'_, PyAny>,
        patience: Patience,
        sent: &mut usize,
    ) -> PyResult<()> {
        let mut iterator = messages.try_iter()?;
        let mut chunk: VecDeque<InputBuffer<'_>> = VecDeque::new();
        loop {
            // Refill the chunk: small messages go to the Rust handle together.
            while chunk.len() < MANY_CHUNK {
                match iterator.next() {
                    Some(message) => chunk.push_back(InputBuffer::get(&message?)?),
                    None => break,
                }
            }
            let Some(first) = chunk.front() else {
                return Ok(());
            };
            let guard = slot.as_mut().ok_or_else(finalized_while_waiting)?;
            let accepted = if first.len() > SMALL_MESSAGE {
                usize::from(Self::send(
                    py,
                    guard,
                    guarantee,
                    std::slice::from_ref(first),
                )?)
            } else {
                let small = chunk
                    .iter()
                    .take_while(|m| m.len() <= SMALL_MESSAGE)
                    .count();
                let pieces = chunk
                    .iter()
                    .take(small)
                    .map(|m| m.as_slice(py))
                    .collect::<PyResult<Vec<_>>>()?;
                let handle = guard.handle()?;
                let accepted =
                    handle.mcast_many(guarantee, pieces.iter().map(|piece| &piece[..]))?;
                if accepted == 0 && !handle.notify_when_writable(chunk[0].len())? {
                    continue; // room appeared meanwhile
                }
                accepted
            };
            *sent += accepted;
            chunk.drain(..accepted);
            if accepted > 0 {
                continue;
            }
            // The ring is full: wait for the node's "room made" wake-up (wake-ups for events
            // are dropped here; `settle` restores the descriptor afterwards).
            let slice = match patience {
                Patience::None => return Ok(()),
                Patience::Forever => SLICE,
                Patience::Until(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(());
                    }
                    left.min(SLICE)
                }
            };
            clear(&self.wakeup);
            *slot = None;
            let waited = self.wait_slice(py, slice);
            let guard = self.lock_any(py);
            if guard.handle.is_none() {
                return Err(finalized_while_waiting());
            }
            *slot = Some(guard);
            waited?;
        }
    }
}

#[pymethods]
#[allow(
    clippy::needless_pass_by_value,
    reason = "PyO3 hands arguments over by value"
)]
impl PyCpgHandle {
    #[new]
    #[pyo3(signature = (
        deliver = None, confchg = None, totem_confchg = None, *,
        initial_totem_conf = false, context = None, node = None, socket = None
    ))]
    #[allow(
        clippy::too_many_arguments,
        reason = "the Python signature of Handle()"
    )]
    fn new(
        py: Python<'_>,
        deliver: Option<Bound<'_, PyAny>>,
        confchg: Option<Bound<'_, PyAny>>,
        totem_confchg: Option<Bound<'_, PyAny>>,
        initial_totem_conf: bool,
        context: Option<Bound<'_, PyAny>>,
        node: Option<Bound<'_, PyAny>>,
        socket: Option<PathBuf>,
    ) -> PyResult<PyCpgHandle> {
        check_callback("deliver", deliver.as_ref())?;
        check_callback("confchg", confchg.as_ref())?;
        check_callback("totem_confchg", totem_confchg.as_ref())?;
        let options = Options { initial_totem_conf };
        let handle = if let Some(node) = node.as_ref().filter(|node| !node.is_none()) {
            let stream = PyNode::stream_of(node, socket.as_ref())?;
            py.detach(|| Handle::connect_stream(stream, options))?
        } else {
            let socket = resolve_socket(socket);
            py.detach(|| Handle::connect_with(&socket, options))?
        };
        let failed = |error: std::io::Error| Error::Library(format!("dup: {error}").into());
        let wakeup = handle
            .wakeup_eventfd()?
            .try_clone_to_owned()
            .map_err(failed)?;
        let watch = handle.as_fd().try_clone_to_owned().map_err(failed)?;
        let cancel = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
            .map_err(|errno| Error::Library(format!("eventfd: {errno}").into()))?;
        let nodeid = handle.nodeid();
        let mut state = State {
            handle: Some(handle),
            pending: VecDeque::new(),
            str_groups: BTreeSet::new(),
        };
        state.settle(&wakeup);
        Ok(PyCpgHandle {
            nodeid: nodeid.0,
            state: Mutex::new(state),
            refs: Mutex::new(Refs {
                deliver: some_object(deliver),
                confchg: some_object(confchg),
                totem_confchg: some_object(totem_confchg),
                context: some_object(context),
            }),
            wakeup,
            watch,
            cancel: OwnedFd::from(cancel),
            finalized: AtomicBool::new(false),
            requesting: Mutex::new(None),
            close_pending: Arc::new(AtomicBool::new(false)),
        })
    }

    /// `cpg_join`: joins `group` (`str` or `bytes`, 1 to 128 bytes).
    ///
    /// Returns once the node accepted the join; it is complete when this handle's own confchg
    /// arrives. Waits while the handle's previous leave is on its way. Raises ExistError
    /// (in a group already, or this process is in `group`), InvalidParamError (empty name),
    /// NameTooLongError, TryAgainError, BadHandleError.
    fn join(&self, py: Python<'_>, group: GroupName) -> PyResult<()> {
        {
            // Before the request: its confchg may be dispatched by another thread at once.
            let mut guard = self.lock(py)?;
            let name = Bytes::copy_from_slice(&group.bytes);
            if group.is_str {
                guard.str_groups.insert(name);
            } else {
                guard.str_groups.remove(&name);
            }
        }
        self.request(py, true, |handle| handle.join(&group.bytes))
    }

    /// `cpg_leave`: leaves `group`; the handle sees its own leave and may join again.
    ///
    /// Raises NotExistError (not in `group`), InvalidParamError, NameTooLongError,
    /// BadHandleError.
    fn leave(&self, py: Python<'_>, group: GroupName) -> PyResult<()> {
        crate::node::cpg::service::check_name(&group.bytes)?;
        self.request(py, true, |handle| handle.leave(&group.bytes))
    }

    /// `cpg_mcast_joined`: multicasts the concatenation of `buffers` to the joined group.
    ///
    /// `buffers` is an iovec of objects with the buffer protocol (bytes, bytearray, memoryview,
    /// array, numpy arrays, Message), copied once into the node's ring; never waits for room.
    /// Raises TryAgainError (ring full, nothing sent; the descriptor becomes readable when the
    /// node made room), NotExistError (not joined), TooBigError (beyond
    /// `max_atomic_msgsize_get()`), InvalidParamError (guarantee), TypeError (not a buffer).
    #[pyo3(signature = (guarantee, *buffers))]
    fn mcast_joined(
        &self,
        py: Python<'_>,
        guarantee: u32,
        buffers: &Bound<'_, PyTuple>,
    ) -> PyResult<()> {
        let guarantee = Guarantee::try_from(guarantee)?;
        let inputs = buffers
            .iter()
            .map(|buffer| InputBuffer::get(&buffer))
            .collect::<PyResult<Vec<_>>>()?;
        let mut guard = self.lock(py)?;
        if Self::send(py, &mut guard, guarantee, &inputs)? {
            Ok(())
        } else {
            Err(Error::TryAgain(
                "the request ring is full (the handle's descriptor becomes readable when the \
                 node has made room)"
                    .into(),
            )
            .into())
        }
    }

    /// Multicasts each buffer of `messages` as one message, in order; returns how many were sent.
    ///
    /// The batch path: one wake-up of the node per chunk of messages. When the ring is full it
    /// waits for room (GIL released, Ctrl-C honoured): with `timeout=None` until all are sent,
    /// else at most `timeout` seconds (`0`: never), then returns the count sent; the messages
    /// from there on were not sent. An error after some messages notes how many were sent.
    #[pyo3(signature = (guarantee, messages, *, timeout = None))]
    fn mcast_many(
        &self,
        py: Python<'_>,
        guarantee: u32,
        messages: &Bound<'_, PyAny>,
        timeout: Option<f64>,
    ) -> PyResult<usize> {
        let guarantee = Guarantee::try_from(guarantee)?;
        let patience = match timeout {
            None => Patience::Forever,
            Some(seconds) if seconds.is_nan() || seconds < 0.0 => {
                return Err(PyValueError::new_err("timeout must be None or >= 0"));
            }
            Some(0.0) => Patience::None,
            Some(seconds) => Duration::try_from_secs_f64(seconds)
                .ok()
                .and_then(|timeout| Instant::now().checked_add(timeout))
                .map_or(Patience::Forever, Patience::Until),
        };
        match self.send_many(py, guarantee, messages, patience) {
            (sent, Ok(())) => Ok(sent),
            (0, Err(error)) => Err(error),
            (sent, Err(error)) => Err(with_note(
                py,
                error,
                &format!("the first {sent} messages of this call were sent"),
            )),
        }
    }

    /// `cpg_dispatch`: runs the callbacks of waiting events in order; returns how many ran.
    ///
    /// `DispatchFlags.ALL` (default): what waits now; `ONE`: waits for one; `ONE_NONBLOCKING`:
    /// one or TryAgainError; `BLOCKING`: until the handle is finalized (by a callback or another
    /// thread). Waits release the GIL; Ctrl-C raises KeyboardInterrupt. If a callback raises,
    /// the exception propagates and the later events stay queued, in order, for the next
    /// dispatch. Raises BadHandleError once finalized, LibraryError when the node is gone.
    #[pyo3(signature = (flags = 2))]
    fn dispatch(slf: &Bound<'_, Self>, flags: u32) -> PyResult<usize> {
        let py = slf.py();
        let this = slf.get();
        let flags = DispatchFlags::try_from(flags)?;
        let one = matches!(flags, DispatchFlags::One | DispatchFlags::OneNonblocking);
        let (max_events, max_bytes) = if one {
            (1, usize::MAX)
        } else {
            (BATCH_EVENTS, BATCH_BYTES)
        };
        let mut count = 0;
        let mut batch = VecDeque::new();
        let mut entered = false;
        loop {
            {
                let mut guard = match this.lock(py) {
                    Ok(guard) => guard,
                    // Finalized by a callback or another thread meanwhile: the dispatch ends.
                    Err(_) if entered => return Ok(count),
                    Err(error) => return Err(error),
                };
                entered = true;
                let state = &mut *guard;
                if let Err(error) =
                    py.detach(|| state.read_events(max_events, max_bytes, &mut batch))
                {
                    guard.settle(&this.wakeup);
                    return Err(error.into());
                }
                if batch.is_empty() {
                    match flags {
                        DispatchFlags::All => {
                            guard.settle(&this.wakeup);
                            return Ok(count);
                        }
                        DispatchFlags::OneNonblocking => {
                            guard.settle(&this.wakeup);
                            return Err(Error::TryAgain("no event is waiting".into()).into());
                        }
                        DispatchFlags::One | DispatchFlags::Blocking => {
                            if !guard.arm()? {
                                continue;
                            }
                        }
                    }
                    drop(guard);
                    this.wait_slice(py, SLICE)?;
                    if this.is_finalized() {
                        return Ok(count);
                    }
                    continue;
                }
            }
            while let Some(event) = batch.pop_front() {
                if let Err(error) = this.call(slf, event) {
                    this.hand_back(py, std::mem::take(&mut batch));
                    return Err(error);
                }
                count += 1;
                if this.is_finalized() {
                    return Ok(count);
                }
            }
            if one {
                let mut guard = this.lock_any(py);
                guard.settle(&this.wakeup);
                return Ok(count);
            }
        }
    }

    /// `cpg_fd_get`: a descriptor readable while events wait (for select, selectors,
    /// `loop.add_reader`); also after a TryAgainError once the node made room.
    fn fd_get(&self) -> PyResult<i32> {
        if self.is_finalized() {
            return Err(bad_handle());
        }
        Ok(self.watch.as_raw_fd())
    }

    /// The same as `fd_get()`, so that a handle can be passed to `select`.
    fn fileno(&self) -> PyResult<i32> {
        self.fd_get()
    }

    /// `cpg_membership_get`: the members of any group the node knows, sorted, as `cpg.Address`.
    fn membership_get<'py>(
        &self,
        py: Python<'py>,
        group: GroupName,
    ) -> PyResult<Bound<'py, PyList>> {
        crate::node::cpg::service::check_name(&group.bytes)?;
        let members = self.request(py, false, |handle| handle.membership_get(&group.bytes))?;
        let classes = classes(py)?;
        let undefined = &classes.reasons[0];
        let items = members
            .into_iter()
            .map(|(nodeid, pid)| classes.address.call1(py, (nodeid.0, pid, undefined)))
            .collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, items)
    }

    /// `cpg_local_get`: the local node's id.
    fn local_get(&self, py: Python<'_>) -> PyResult<u32> {
        Ok(self.request(py, false, Handle::local_get)?.0)
    }

    /// `cpg_iteration_*`: a snapshot list of `cpg.IterationDescription(group, nodeid, pid)`.
    ///
    /// `IterationType.NAME_ONLY`: every group (nodeid, pid 0); `ONE_GROUP`: the members of
    /// `group`; `ALL`: every member of every group. Group names are `bytes`.
    #[pyo3(signature = (r#type, group = None))]
    fn iteration<'py>(
        &self,
        py: Python<'py>,
        r#type: u32,
        group: Option<GroupName>,
    ) -> PyResult<Bound<'py, PyList>> {
        let kind = IterationType::try_from(r#type)?;
        if let Some(group) = &group {
            crate::node::cpg::service::check_name(&group.bytes)?;
        }
        let group = group.map(|g| g.bytes);
        let entries = self.request(py, false, |handle| handle.iteration(kind, group.as_deref()))?;
        let classes = classes(py)?;
        let items = entries
            .into_iter()
            .map(|e| {
                let group = PyBytes::new(py, &e.group);
                classes.iteration.call1(py, (group, e.nodeid.0, e.pid))
            })
            .collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, items)
    }

    /// `cpg_max_atomic_msgsize_get`: the largest message, delivered whole or not at all.
    fn max_atomic_msgsize_get(&self, py: Python<'_>) -> PyResult<usize> {
        Ok(self.lock(py)?.handle()?.max_atomic_msgsize_get()?)
    }

    /// `cpg_flow_control_state_get`: `FlowControlState.ENABLED` while sends may get
    /// TryAgainError (the node holds this handle's messages, or its ring is over 3/4 full).
    fn flow_control_state_get(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let state = self.lock(py)?.handle()?.flow_control_state_get()?;
        Ok(classes(py)?.flow_control[u32::from(state) as usize].clone_ref(py))
    }

    /// `cpg_zcb_alloc`: a writable `cpg.ZcbBuffer` of `size` bytes in shared memory.
    fn zcb_alloc(&self, py: Python<'_>, size: usize) -> PyResult<PyZcbBuffer> {
        let buffer = self.lock(py)?.handle()?.zcb_alloc(size)?;
        Ok(PyZcbBuffer::new(buffer))
    }

    /// `cpg_zcb_free`: frees a buffer from `zcb_alloc` (its views must be released first).
    fn zcb_free(&self, py: Python<'_>, buf: &Bound<'_, PyAny>) -> PyResult<()> {
        if self.is_finalized() {
            return Err(bad_handle());
        }
        let buffer = buf
            .cast::<PyZcbBuffer>()
            .map_err(|_| PyTypeError::new_err("zcb_free takes a buffer from zcb_alloc"))?;
        buffer.get().free(py)
    }

    /// `cpg_zcb_mcast_joined`: multicasts the first `length` bytes of `buf` without a copy by
    /// the library (release its memoryviews first).
    fn zcb_mcast_joined(
        &self,
        py: Python<'_>,
        guarantee: u32,
        buf: &Bound<'_, PyAny>,
        length: usize,
    ) -> PyResult<()> {
        let guarantee = Guarantee::try_from(guarantee)?;
        let buffer = buf
            .cast::<PyZcbBuffer>()
            .map_err(|_| PyTypeError::new_err("zcb_mcast_joined takes a buffer from zcb_alloc"))?;
        let mut guard = self.lock(py)?;
        let handle = guard.handle()?;
        buffer.get().with(py, "sending", |buffer| {
            Ok(handle.zcb_mcast_joined(guarantee, buffer, length)?)
        })
    }

    /// `cpg_context_get`: the object given as `context=` or to `context_set`.
    fn context_get(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        if self.is_finalized() {
            return Err(bad_handle());
        }
        let refs = self.refs.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(refs
            .context
            .as_ref()
            .map_or_else(|| py.None(), |context| context.clone_ref(py)))
    }

    /// `cpg_context_set`: remembers `context` for `context_get()`.
    fn context_set(&self, context: Bound<'_, PyAny>) -> PyResult<()> {
        if self.is_finalized() {
            return Err(bad_handle());
        }
        let old = {
            let mut refs = self.refs.lock().unwrap_or_else(PoisonError::into_inner);
            std::mem::replace(&mut refs.context, some_object(Some(context)))
        };
        drop(old);
        Ok(())
    }

    /// `cpg_finalize`: closes the connection (the node reports PROCDOWN unless the handle left).
    ///
    /// A waiting `dispatch` returns; every later call raises BadHandleError, a second
    /// `finalize` too (as in Corosync).
    fn finalize(&self, py: Python<'_>) -> PyResult<()> {
        if self.finalized.swap(true, Ordering::AcqRel) {
            return Err(Error::BadHandle("the handle is finalized already".into()).into());
        }
        // Wake every waiter (they see `finalized` and give up the connection lock).
        signal(&self.cancel);
        if self.in_own_request() {
            // A signal handler, while a request of this thread holds the connection: the
            // request ends its wait and closes it.
            self.close_pending.store(true, Ordering::Release);
            return Ok(());
        }
        let mut guard = self.lock_any(py);
        self.close(&mut guard);
        Ok(())
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, PyTuple>) -> PyResult<bool> {
        if !self.is_finalized() {
            self.finalize(py)?;
        }
        Ok(false)
    }

    fn __repr__(&self) -> String {
        if self.is_finalized() {
            return format!("<totemcast.cpg.Handle nodeid={} finalized>", self.nodeid);
        }
        format!("<totemcast.cpg.Handle nodeid={}>", self.nodeid)
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Ok(refs) = self.refs.try_lock() {
            for object in [
                &refs.deliver,
                &refs.confchg,
                &refs.totem_confchg,
                &refs.context,
            ]
            .into_iter()
            .flatten()
            {
                visit.call(object)?;
            }
        }
        Ok(())
    }

    fn __clear__(&self) {
        let refs = self
            .refs
            .lock()
            .map(|mut refs| std::mem::take(&mut *refs))
            .unwrap_or_default();
        drop(refs);
    }
}
