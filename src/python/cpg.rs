//! `totemcast.cpg.Handle`: a CPG connection for Python (Corosync's `cpg_*` calls as methods).
//!
//! Waiting (for an answer, an event or room in the request ring) happens with the GIL released,
//! in slices of [`SLICE`] with `check_signals` in between, so Ctrl-C interrupts any wait. The
//! connection sits behind a mutex that is never held while a callback runs or while `dispatch`
//! sleeps, so other threads may send, query or finalize meanwhile (a blocking `dispatch` in a
//! dedicated thread, as in Corosync, returns when another thread finalizes the handle).

use std::collections::{BTreeSet, VecDeque};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use nix::sys::eventfd::{EfdFlags, EventFd};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::{MutexExt as _, PyOnceLock};
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};
use pyo3::{PyTraverseError, PyVisit};

use super::buffer::{InputBuffer, PyMessage};
use super::client::{self, Client, Event, Fds, McastError, Woken};
use crate::api::{DispatchFlags, Guarantee};
use crate::error::Error;
use crate::node::cpg::records;

/// Longest stretch a wait goes without checking for signals (Ctrl-C).
const SLICE: Duration = Duration::from_millis(100);
/// Most events one `dispatch` reads per release of the GIL.
const BATCH_EVENTS: usize = 1024;
/// Most payload bytes one `dispatch` reads per release of the GIL (at least one event).
const BATCH_BYTES: usize = 4 << 20;

/// The Python classes the callbacks receive (`cpg.Address`, `cpg.RingId`, `cpg.Reason`).
struct Classes {
    address: Py<PyAny>,
    ring_id: Py<PyAny>,
    /// `Reason` members by value.
    reasons: Vec<Py<PyAny>>,
}

static CLASSES: PyOnceLock<Classes> = PyOnceLock::new();

fn classes(py: Python<'_>) -> PyResult<&'static Classes> {
    CLASSES.get_or_try_init(py, || {
        let cpg = py.import("totemcast.cpg")?;
        let reason = cpg.getattr("Reason")?;
        let reasons = (0..=5u32)
            .map(|value| reason.call1((value,)).map(Bound::unbind))
            .collect::<PyResult<_>>()?;
        Ok(Classes {
            address: cpg.getattr("Address")?.unbind(),
            ring_id: cpg.getattr("RingId")?.unbind(),
            reasons,
        })
    })
}

/// The connection and what the handle remembers about group names.
struct State {
    /// `None` once finalized.
    client: Option<Client>,
    /// Group names that were given as `str`: callbacks get them back as `str`.
    str_groups: BTreeSet<Bytes>,
}

/// The Python objects a handle holds (kept apart for the garbage collector).
#[derive(Default)]
struct Refs {
    deliver: Option<Py<PyAny>>,
    confchg: Option<Py<PyAny>>,
    totem_confchg: Option<Py<PyAny>>,
    context: Option<Py<PyAny>>,
}

/// A connection to the local node's CPG service; see the stub (`_native.pyi`) for the Python
/// documentation.
#[pyclass(frozen, name = "Handle", module = "totemcast.cpg")]
pub(crate) struct PyCpgHandle {
    state: Mutex<State>,
    refs: Mutex<Refs>,
    /// Duplicates of the wake-up eventfd and the socket, valid while this object lives.
    fds: Fds,
    /// Readable once the handle is finalized: wakes every waiter.
    cancel: OwnedFd,
    finalized: AtomicBool,
    nodeid: u32,
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

fn bad_handle() -> PyErr {
    Error::BadHandle("the handle is finalized".into()).into()
}

fn finalized_while_waiting() -> PyErr {
    Error::BadHandle("the handle was finalized while this call waited".into()).into()
}

fn node_gone() -> PyErr {
    Error::Library("the node closed the connection".into()).into()
}

/// The socket to use: the argument, else `$TOTEMCAST_SOCKET`, else the default.
fn resolve_socket(socket: Option<PathBuf>) -> PathBuf {
    socket
        .or_else(|| {
            std::env::var_os("TOTEMCAST_SOCKET")
                .filter(|value| !value.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| PathBuf::from(crate::node::config_file::DEFAULT_SOCKET))
}

fn check_callback(name: &str, callback: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
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

fn some_object(object: Option<Bound<'_, PyAny>>) -> Option<Py<PyAny>> {
    object.filter(|o| !o.is_none()).map(Bound::unbind)
}

/// Adds a note to an exception (PEP 678), best effort.
fn with_note(py: Python<'_>, error: PyErr, note: &str) -> PyErr {
    let _ = error.value(py).call_method1("add_note", (note,));
    error
}

impl PyCpgHandle {
    /// Locks the connection (GIL released while waiting for the lock); `BadHandleError` once
    /// finalized.
    fn lock<'a>(&'a self, py: Python<'_>) -> PyResult<MutexGuard<'a, State>> {
        let guard = self
            .state
            .lock_py_attached(py)
            .unwrap_or_else(PoisonError::into_inner);
        if guard.client.is_none() {
            return Err(bad_handle());
        }
        Ok(guard)
    }

    fn is_finalized(&self) -> bool {
        self.finalized.load(Ordering::Acquire)
    }

    /// Waits one slice for the node without the GIL (the caller may hold the connection lock),
    /// then checks for signals.
    fn wait_slice(&self, py: Python<'_>, slice: Duration) -> PyResult<Woken> {
        let fds = &self.fds;
        let cancel = &self.cancel;
        let woken = py.detach(|| client::wait(fds, cancel, slice))?;
        py.check_signals()?;
        Ok(woken)
    }

    /// Sends a request and waits for its answer. JOIN and LEAVE are retried while the node says
    /// BUSY (the handle's previous join or leave is still on its way), as libcpg does.
    fn request(&self, py: Python<'_>, kind: u32, body: &[u8]) -> PyResult<Vec<u8>> {
        let mut guard = self.lock(py)?;
        let result = self.request_locked(py, &mut guard, kind, body);
        if let Some(client) = guard.client.as_mut() {
            client.settle();
        }
        result
    }

    fn request_locked(
        &self,
        py: Python<'_>,
        guard: &mut MutexGuard<'_, State>,
        kind: u32,
        body: &[u8],
    ) -> PyResult<Vec<u8>> {
        loop {
            let client = guard.client.as_mut().ok_or_else(bad_handle)?;
            client.send_request(kind, body)?;
            match self.await_answer(py, guard)? {
                Err(Error::Busy(_)) if matches!(kind, records::JOIN | records::LEAVE) => {
                    // Progress shows as an event for this handle (its join or leave delivered).
                    self.wait_for_progress(py, guard)?;
                }
                answer => return answer.map_err(PyErr::from),
            }
        }
    }

    fn await_answer(
        &self,
        py: Python<'_>,
        guard: &mut MutexGuard<'_, State>,
    ) -> PyResult<client::Answer> {
        loop {
            let client = guard.client.as_mut().ok_or_else(bad_handle)?;
            if let Some(answer) = client.poll_answer()? {
                return Ok(answer);
            }
            if !client.arm() {
                continue;
            }
            let woken = self.wait_slice(py, SLICE)?;
            if self.is_finalized() {
                return Err(finalized_while_waiting());
            }
            if woken == Woken::Closed {
                return Err(node_gone());
            }
        }
    }

    fn wait_for_progress(&self, py: Python<'_>, guard: &mut MutexGuard<'_, State>) -> PyResult<()> {
        let client = guard.client.as_mut().ok_or_else(bad_handle)?;
        let mut events = std::mem::take(&mut client.pending);
        let read = client.read_events(usize::MAX, usize::MAX, &mut events);
        client.pending = events;
        read?;
        if client.arm() {
            let woken = self.wait_slice(py, SLICE)?;
            if self.is_finalized() {
                return Err(finalized_while_waiting());
            }
            if woken == Woken::Closed {
                return Err(node_gone());
            }
        }
        Ok(())
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
        let is_str = |group: &Bytes| {
            self.state
                .lock_py_attached(py)
                .unwrap_or_else(PoisonError::into_inner)
                .str_groups
                .contains(group)
        };
        match event {
            Event::Deliver {
                group,
                nodeid,
                pid,
                payload,
            } => {
                let group = group_object(py, &group, is_str(&group));
                let message = Bound::new(py, PyMessage::from_bytes(payload))?;
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
        let mut guard = self
            .state
            .lock_py_attached(py)
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(client) = guard.client.as_mut() {
            while let Some(event) = events.pop_back() {
                client.pending.push_front(event);
            }
            client.settle();
        }
    }

    /// Sends the messages of `messages` in order, waiting for room as `patience` allows;
    /// returns how many were accepted, and the error that stopped it early, if one did. The
    /// node is woken once per batch (and before any wait).
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
        if let Some(client) = slot.as_mut().and_then(|guard| guard.client.as_mut()) {
            client.wake_node();
            client.settle();
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
        for message in messages.try_iter()? {
            let input = InputBuffer::get(&message?)?;
            loop {
                let client = slot
                    .as_mut()
                    .and_then(|guard| guard.client.as_mut())
                    .ok_or_else(finalized_while_waiting)?;
                match client.mcast(guarantee, input.len(), false, |out| input.copy_to(py, out)) {
                    Ok(Some(())) => {
                        *sent += 1;
                        break;
                    }
                    Ok(None) => {}
                    Err(McastError::Cs(error)) => return Err(error.into()),
                    Err(McastError::Fill(error)) => return Err(error),
                }
                // The ring is full: let the node see the batch so far, then wait for its "room
                // made" wake-up (older wake-ups are forgotten here; `settle` restores them).
                client.wake_node();
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
                client.clear_wakeup();
                *slot = None;
                let woken = self.wait_slice(py, slice);
                *slot = Some(
                    self.state
                        .lock_py_attached(py)
                        .unwrap_or_else(PoisonError::into_inner),
                );
                if woken? == Woken::Closed && !self.is_finalized() {
                    return Err(node_gone());
                }
            }
        }
        Ok(())
    }
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
        if node.as_ref().is_some_and(|node| !node.is_none()) {
            return Err(Error::NotSupported(
                "embedded nodes (Handle(node=...)) are not available yet; run `totemcast node` \
                 and connect with socket="
                    .into(),
            )
            .into());
        }
        if initial_totem_conf {
            return Err(Error::NotSupported(
                "initial_totem_conf=True needs the node to take the flag at connection time, \
                 which it does not yet"
                    .into(),
            )
            .into());
        }
        let socket = resolve_socket(socket);
        let client = py.detach(|| Client::connect(&socket))?;
        let fds = client.fds()?;
        let cancel = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
            .map_err(|errno| Error::Library(format!("eventfd: {errno}").into()))?;
        Ok(PyCpgHandle {
            nodeid: client.nodeid().0,
            state: Mutex::new(State {
                client: Some(client),
                str_groups: BTreeSet::new(),
            }),
            refs: Mutex::new(Refs {
                deliver: some_object(deliver),
                confchg: some_object(confchg),
                totem_confchg: some_object(totem_confchg),
                context: some_object(context),
            }),
            fds,
            cancel: OwnedFd::from(cancel),
            finalized: AtomicBool::new(false),
        })
    }

    fn join(&self, py: Python<'_>, group: GroupName) -> PyResult<()> {
        let mut guard = self.lock(py)?;
        // Before the request: its confchg may be dispatched by another thread at once.
        let name = Bytes::copy_from_slice(&group.bytes);
        if group.is_str {
            guard.str_groups.insert(name);
        } else {
            guard.str_groups.remove(&name);
        }
        let result = self.request_locked(py, &mut guard, records::JOIN, &group.bytes);
        if let Some(client) = guard.client.as_mut() {
            client.settle();
        }
        result.map(drop)
    }

    fn leave(&self, py: Python<'_>, group: GroupName) -> PyResult<()> {
        self.request(py, records::LEAVE, &group.bytes).map(drop)
    }

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
        let len = inputs.iter().map(InputBuffer::len).sum();
        let mut guard = self.lock(py)?;
        let client = guard.client.as_mut().ok_or_else(bad_handle)?;
        let attempt = client.mcast(guarantee, len, true, |out| {
            let mut at = 0;
            for input in &inputs {
                input.copy_to(py, &mut out[at..at + input.len()])?;
                at += input.len();
            }
            Ok::<(), PyErr>(())
        });
        match attempt {
            Ok(Some(())) => Ok(()),
            Ok(None) => Err(Error::TryAgain(
                "the request ring is full (the handle's descriptor becomes readable when the \
                 node has made room)"
                    .into(),
            )
            .into()),
            Err(McastError::Cs(error)) => Err(error.into()),
            Err(McastError::Fill(error)) => Err(error),
        }
    }

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
                let client = guard.client.as_mut().ok_or_else(bad_handle)?;
                py.detach(|| client.read_events(max_events, max_bytes, &mut batch))?;
                if batch.is_empty() {
                    match flags {
                        DispatchFlags::All => {
                            client.settle();
                            return Ok(count);
                        }
                        DispatchFlags::OneNonblocking => {
                            client.settle();
                            return Err(Error::TryAgain("no event is waiting".into()).into());
                        }
                        DispatchFlags::One | DispatchFlags::Blocking => {
                            if !client.arm() {
                                continue;
                            }
                        }
                    }
                    drop(guard);
                    let woken = this.wait_slice(py, SLICE)?;
                    if this.is_finalized() {
                        return Ok(count);
                    }
                    if woken == Woken::Closed {
                        return Err(node_gone());
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
                if let Ok(mut guard) = this.lock(py)
                    && let Some(client) = guard.client.as_mut()
                {
                    client.settle();
                }
                return Ok(count);
            }
        }
    }

    fn fd_get(&self) -> PyResult<i32> {
        if self.is_finalized() {
            return Err(bad_handle());
        }
        Ok(self.fds.wakeup.as_fd().as_raw_fd())
    }

    fn fileno(&self) -> PyResult<i32> {
        self.fd_get()
    }

    fn membership_get<'py>(
        &self,
        py: Python<'py>,
        group: GroupName,
    ) -> PyResult<Bound<'py, PyList>> {
        let body = self.request(py, records::MEMBERSHIP_GET, &group.bytes)?;
        let members = client::decode_members(&body)?;
        let classes = classes(py)?;
        let undefined = &classes.reasons[0];
        let items = members
            .into_iter()
            .map(|(nodeid, pid)| classes.address.call1(py, (nodeid.0, pid, undefined)))
            .collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, items)
    }

    fn local_get(&self, py: Python<'_>) -> PyResult<u32> {
        let body = self.request(py, records::LOCAL_GET, &[])?;
        Ok(client::decode_nodeid(&body)?.0)
    }

    fn max_atomic_msgsize_get(&self, py: Python<'_>) -> PyResult<usize> {
        let guard = self.lock(py)?;
        Ok(guard.client.as_ref().map_or(0, Client::max_atomic_msgsize))
    }

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

    #[pyo3(signature = (r#type, group = None))]
    fn iteration(&self, r#type: u32, group: Option<GroupName>) -> PyResult<()> {
        let _ = (r#type, group);
        if self.is_finalized() {
            return Err(bad_handle());
        }
        Err(not_yet("iteration"))
    }

    fn flow_control_state_get(&self) -> PyResult<()> {
        if self.is_finalized() {
            return Err(bad_handle());
        }
        Err(not_yet("flow_control_state_get"))
    }

    fn zcb_alloc(&self, size: usize) -> PyResult<()> {
        let _ = size;
        if self.is_finalized() {
            return Err(bad_handle());
        }
        Err(not_yet("zcb_alloc"))
    }

    fn zcb_free(&self, buf: Bound<'_, PyAny>) -> PyResult<()> {
        let _ = buf;
        if self.is_finalized() {
            return Err(bad_handle());
        }
        Err(not_yet("zcb_free"))
    }

    fn zcb_mcast_joined(
        &self,
        guarantee: u32,
        buf: Bound<'_, PyAny>,
        length: usize,
    ) -> PyResult<()> {
        let _ = (guarantee, buf, length);
        if self.is_finalized() {
            return Err(bad_handle());
        }
        Err(not_yet("zcb_mcast_joined"))
    }

    fn finalize(&self, py: Python<'_>) -> PyResult<()> {
        if self.finalized.swap(true, Ordering::AcqRel) {
            return Err(Error::BadHandle("the handle is finalized already".into()).into());
        }
        // Wake every waiter (they see `finalized` and give up the connection lock).
        let _ = nix::unistd::write(&self.cancel, &1u64.to_ne_bytes());
        let client = {
            let mut guard = self
                .state
                .lock_py_attached(py)
                .unwrap_or_else(PoisonError::into_inner);
            guard.client.take()
        };
        if let Some(client) = client {
            client.shutdown();
            drop(client);
        }
        let refs = std::mem::take(&mut *self.refs.lock().unwrap_or_else(PoisonError::into_inner));
        drop(refs);
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

    fn __repr__(&self, py: Python<'_>) -> String {
        if self.is_finalized() {
            return format!("<totemcast.cpg.Handle nodeid={} finalized>", self.nodeid);
        }
        let guard = self
            .state
            .lock_py_attached(py)
            .unwrap_or_else(PoisonError::into_inner);
        let group = guard.client.as_ref().and_then(Client::group).map_or_else(
            || "None".to_owned(),
            |g| format!("{:?}", String::from_utf8_lossy(g)),
        );
        format!(
            "<totemcast.cpg.Handle nodeid={} group={group}>",
            self.nodeid
        )
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

fn not_yet(what: &str) -> PyErr {
    Error::NotSupported(format!("Handle.{what}() is not available in this version yet").into())
        .into()
}

impl Drop for PyCpgHandle {
    fn drop(&mut self) {
        // A forked child may hold copies of the socket: end the connection for the node now.
        let _ = self.fds.stream.shutdown(std::net::Shutdown::Both);
    }
}
