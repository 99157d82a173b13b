//! `totemcast.cpg.Handle`: [`crate::cpg::Handle`] for Python (Corosync's `cpg_*` calls as
//! methods), over the scaffolding it shares with `totemcast.evs.Handle` ([`super::handle`]:
//! waits without the GIL, Ctrl-C, the truthful descriptor, dispatch with callbacks).

use std::borrow::Cow;
use std::collections::{BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};
use pyo3::{PyTraverseError, PyVisit};

use super::buffer::{InputBuffer, PyMessage, PyZcbBuffer};
use super::handle::{
    Core, SLICE, State, bad_handle, busy_poll_window, check_callback, clear,
    finalized_while_waiting, resolve_socket, ring_full, send_or_notify,
};
use super::node::PyNode;
use crate::api::{Guarantee, IterationType};
use crate::cpg::{Event, Handle, Options};

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
/// `totemcast.Node`) talks to that node without a socket. `busy_poll=` is how many seconds a
/// wait polls for the node before it sleeps (50 µs by default, 0: sleep at once, at most 0.01).
/// A handle is a context manager that finalizes on exit.
///
/// Raises LibraryError (no node on the socket), AccessError, VersionError, TypeError (a callback
/// that is not callable), InvalidParamError (`busy_poll` out of range).
#[pyclass(frozen, name = "Handle", module = "totemcast.cpg")]
pub(crate) struct PyCpgHandle {
    core: Core<Handle>,
    /// Group names that were given as `str`: callbacks get them back as `str`.
    str_groups: Mutex<BTreeSet<Bytes>>,
}

/// The callbacks' places in [`Core`]'s list.
const DELIVER: usize = 0;
const CONFCHG: usize = 1;
const TOTEM_CONFCHG: usize = 2;

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

/// The group as Python sees it: `str` if it was given as `str`.
fn group_object<'py>(py: Python<'py>, group: &Bytes, as_str: bool) -> Bound<'py, PyAny> {
    if as_str && let Ok(text) = std::str::from_utf8(group) {
        return PyString::new(py, text).into_any();
    }
    PyBytes::new(py, group).into_any()
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
    /// Runs the callback for `event` (if one is set).
    fn call(&self, handle: &Bound<'_, Self>, event: Event) -> PyResult<()> {
        let py = handle.py();
        let kind = match &event {
            Event::Deliver { .. } => DELIVER,
            Event::ConfChg { .. } => CONFCHG,
            Event::TotemConfChg { .. } => TOTEM_CONFCHG,
        };
        let Some(callback) = self.core.callback(py, kind) else {
            return Ok(());
        };
        let is_str = |group: &Bytes| self.str_groups().contains(group);
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

    /// Sends one message (any size) through the Rust handle. `Ok(false)`: the ring is full and
    /// nothing was sent; the node is asked to wake the descriptor when it has made room.
    fn send(
        py: Python<'_>,
        guard: &mut MutexGuard<'_, State<Handle>>,
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
        send_or_notify(handle, len, |handle| {
            Ok(if let Some(message) = &owned {
                py.detach(|| handle.mcast_joined(guarantee, &[message]))
            } else {
                let pieces = gather(py, inputs)?;
                let slices: Vec<&[u8]> = pieces.iter().map(|piece| &piece[..]).collect();
                handle.mcast_joined(guarantee, &slices)
            })
        })
    }

    /// The group names given as `str`.
    fn str_groups(&self) -> MutexGuard<'_, BTreeSet<Bytes>> {
        self.str_groups
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
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
        let mut slot = match self.core.lock(py) {
            Ok(guard) => Some(guard),
            Err(error) => return (0, Err(error)),
        };
        let result = self.send_loop(py, &mut slot, guarantee, messages, patience, &mut sent);
        if let Some(guard) = slot.as_mut() {
            guard.settle(self.core.wakeup());
        }
        (sent, result)
    }

    fn send_loop<'a>(
        &'a self,
        py: Python<'_>,
        slot: &mut Option<MutexGuard<'a, State<Handle>>>,
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
            clear(self.core.wakeup());
            *slot = None;
            let waited = self.core.wait_slice(py, slice);
            let mut guard = self.core.lock_any(py);
            if guard.handle().is_err() {
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
        initial_totem_conf = false, context = None, node = None, socket = None,
        busy_poll = 5e-05
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
        busy_poll: f64,
    ) -> PyResult<PyCpgHandle> {
        let busy_poll = busy_poll_window(busy_poll)?;
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
        let nodeid = handle.nodeid().0;
        let callbacks = vec![deliver, confchg, totem_confchg];
        Ok(PyCpgHandle {
            core: Core::new("cpg", handle, nodeid, callbacks, context, busy_poll)?,
            str_groups: Mutex::new(BTreeSet::new()),
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
            let guard = self.core.lock(py)?;
            let name = Bytes::copy_from_slice(&group.bytes);
            if group.is_str {
                self.str_groups().insert(name);
            } else {
                self.str_groups().remove(&name);
            }
            drop(guard);
        }
        self.core
            .request(py, true, |handle| handle.join(&group.bytes))
    }

    /// `cpg_leave`: leaves `group`; the handle sees its own leave and may join again.
    ///
    /// Raises NotExistError (not in `group`), InvalidParamError, NameTooLongError,
    /// BadHandleError.
    fn leave(&self, py: Python<'_>, group: GroupName) -> PyResult<()> {
        crate::node::cpg::service::check_name(&group.bytes)?;
        self.core
            .request(py, true, |handle| handle.leave(&group.bytes))
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
        let mut guard = self.core.lock(py)?;
        if Self::send(py, &mut guard, guarantee, &inputs)? {
            Ok(())
        } else {
            Err(ring_full())
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
        let this = slf.get();
        this.core
            .dispatch(slf.py(), flags, |event| this.call(slf, event))
    }

    /// `cpg_fd_get`: a descriptor readable while events wait (for select, selectors,
    /// `loop.add_reader`); also after a TryAgainError once the node made room.
    fn fd_get(&self) -> PyResult<i32> {
        self.core.fd_get()
    }

    /// Seconds a wait of this handle (in `dispatch`, for an answer, for room to send) polls
    /// for the node without sleeping before it sleeps (`busy_poll=`).
    #[getter]
    fn busy_poll(&self) -> f64 {
        self.core.busy_poll().as_secs_f64()
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
        let members = self
            .core
            .request(py, false, |handle| handle.membership_get(&group.bytes))?;
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
        Ok(self.core.request(py, false, Handle::local_get)?.0)
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
        let entries = self
            .core
            .request(py, false, |handle| handle.iteration(kind, group.as_deref()))?;
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
        Ok(self.core.lock(py)?.handle()?.max_atomic_msgsize_get()?)
    }

    /// `cpg_flow_control_state_get`: `FlowControlState.ENABLED` while sends may get
    /// TryAgainError (the node holds this handle's messages, or its ring is over 3/4 full).
    fn flow_control_state_get(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let state = self.core.lock(py)?.handle()?.flow_control_state_get()?;
        Ok(classes(py)?.flow_control[u32::from(state) as usize].clone_ref(py))
    }

    /// `cpg_zcb_alloc`: a writable `cpg.ZcbBuffer` of `size` bytes in shared memory.
    fn zcb_alloc(&self, py: Python<'_>, size: usize) -> PyResult<PyZcbBuffer> {
        let buffer = self.core.lock(py)?.handle()?.zcb_alloc(size)?;
        Ok(PyZcbBuffer::new(buffer))
    }

    /// `cpg_zcb_free`: frees a buffer from `zcb_alloc` (its views must be released first).
    fn zcb_free(&self, py: Python<'_>, buf: &Bound<'_, PyAny>) -> PyResult<()> {
        if self.core.is_finalized() {
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
        let mut guard = self.core.lock(py)?;
        let handle = guard.handle()?;
        buffer.get().with(py, "sending", |buffer| {
            Ok(handle.zcb_mcast_joined(guarantee, buffer, length)?)
        })
    }

    /// `cpg_context_get`: the object given as `context=` or to `context_set`.
    fn context_get(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.core.context_get(py)
    }

    /// `cpg_context_set`: remembers `context` for `context_get()`.
    fn context_set(&self, context: Bound<'_, PyAny>) -> PyResult<()> {
        self.core.context_set(context)
    }

    /// `cpg_finalize`: closes the connection (the node reports PROCDOWN unless the handle left).
    ///
    /// A waiting `dispatch` returns; every later call raises BadHandleError, a second
    /// `finalize` too (as in Corosync).
    fn finalize(&self, py: Python<'_>) -> PyResult<()> {
        self.core.finalize(py)
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, PyTuple>) -> PyResult<bool> {
        self.core.exit(py)
    }

    fn __repr__(&self) -> String {
        self.core.repr()
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        self.core.traverse(&visit)
    }

    fn __clear__(&self) {
        self.core.clear();
    }
}
