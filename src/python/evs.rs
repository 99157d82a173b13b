//! `totemcast.evs.Handle`: Corosync's `evs_*` calls as methods, over the EVS session of
//! [`crate::client`].
//!
//! It follows `cpg.Handle` (see [`super::cpg`]): waits release the GIL and run in slices with
//! signal checks (Ctrl-C); the connection sits behind a mutex that is not held while a callback
//! runs or anything sleeps (a dispatch, or a request waiting for its answer: requests are sent,
//! then polled, and abandoned on Ctrl-C), so other threads and signal handlers can use the
//! handle meanwhile; the descriptor is truthful after every call (readable while events wait,
//! else armed); a callback that raises keeps the later events queued, in order.
//!
//! The connection is a private [`Client`] over [`Session`] rather than [`crate::evs::Handle`],
//! whose calls wait inside (no event without waiting, no armed descriptor, requests that cannot
//! be interrupted); the requests are encoded as that handle encodes them.

use std::collections::{BTreeSet, VecDeque};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread::ThreadId;
use std::time::Duration;

use nix::sys::eventfd::{EfdFlags, EventFd};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::sync::{MutexExt as _, PyOnceLock};
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};
use pyo3::{PyTraverseError, PyVisit};

use super::buffer::{InputBuffer, PyMessage};
use super::cpg::{
    BATCH_BYTES, BATCH_EVENTS, SLICE, bad_handle, check_callback, finalized_while_waiting,
    resolve_socket, signal, some_object, wait_readable,
};
use super::node::PyNode;
use crate::api::{ConfigurationType, DispatchFlags, Guarantee};
use crate::client::Session;
use crate::error::Error;
use crate::ids::NodeId;
use crate::node::evs::records::{self, Request};
use crate::node::evs::{Event, GROUPS_JOINED_MAX, Key};

/// Bytes kept free in a request record for the request header (guarantee, keys) and the node's
/// headers (as [`crate::evs::Handle`] keeps).
const HEADERS_MAX: usize = 2048;

/// The Python classes handed to callbacks.
struct Classes {
    ring_id: Py<PyAny>,
    /// `ConfigurationType` members by value.
    kinds: Vec<Py<PyAny>>,
}

static CLASSES: PyOnceLock<Classes> = PyOnceLock::new();

fn classes(py: Python<'_>) -> PyResult<&'static Classes> {
    CLASSES.get_or_try_init(py, || {
        let evs = py.import("totemcast.evs")?;
        let kind = evs.getattr("ConfigurationType")?;
        Ok(Classes {
            ring_id: evs.getattr("RingId")?.unbind(),
            kinds: (0..2)
                .map(|value| kind.call1((value,)).map(Bound::unbind))
                .collect::<PyResult<_>>()?,
        })
    })
}

/// A connection to the node's EVS service and the keys it joined (for `mcast_joined`'s check
/// and `joined()`).
struct Client {
    session: Session,
    /// The keys joined (as the node accepted them, or as an interrupted request will have
    /// them).
    joined: BTreeSet<Key>,
}

impl Client {
    fn new(session: Session) -> Client {
        Client {
            session,
            joined: BTreeSet::new(),
        }
    }

    /// After a join's answer (`Some`) or once it was abandoned (`None`: the node still serves
    /// it, and a join within the limits succeeds).
    fn joined(&mut self, keys: Vec<Key>, answered: Option<&[u8]>) {
        if answered.is_some() || self.joined.len() + keys.len() <= GROUPS_JOINED_MAX {
            self.joined.extend(keys);
        }
    }

    /// After a leave's answer (`Some`) or once it was abandoned (`None`: the node still serves
    /// it, all or nothing).
    fn left(&mut self, keys: &[Key], answered: Option<&[u8]>) {
        if answered.is_some() || keys.iter().all(|key| self.joined.contains(key)) {
            for key in keys {
                self.joined.remove(key);
            }
        }
    }

    fn max_atomic_msgsize_get(&self) -> usize {
        self.session.payload_max() - HEADERS_MAX
    }

    fn check_len(&self, len: usize) -> Result<(), Error> {
        let max = self.max_atomic_msgsize_get();
        if len > max {
            return Err(Error::TooBig(
                format!("message of {len} bytes exceeds the limit of {max} bytes").into(),
            ));
        }
        Ok(())
    }

    /// Writes a multicast request of `len` bytes filled by `fill`. `Ok(false)`: the ring is
    /// full, nothing was sent, and the node will make the descriptor readable once it has
    /// made room.
    fn send(&mut self, kind: u32, len: usize, fill: impl Fn(&mut [u8])) -> Result<bool, Error> {
        loop {
            match self.session.send(kind, len, &fill) {
                Ok(()) => return Ok(true),
                Err(Error::TryAgain(_)) => {
                    if self.session.notify_when_writable(len)? {
                        return Ok(false);
                    }
                }
                Err(error) => return Err(error),
            }
        }
    }
}

/// The connection and what the Python layer keeps beside it.
struct State {
    /// `None` once finalized.
    client: Option<Client>,
    /// Events read ahead of the callbacks (handed back by a dispatch whose callback raised,
    /// or read while arming the descriptor); they come before anything in the session.
    pending: VecDeque<Event>,
}

impl State {
    fn client(&mut self) -> PyResult<&mut Client> {
        self.client.as_mut().ok_or_else(bad_handle)
    }

    /// Moves events into `out` (those pending here first) until it holds `max` events or the
    /// payloads reach `max_bytes`. Never waits.
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
                None => match self.client.as_mut() {
                    Some(client) => match client.session.try_next_event(records::decode_event)? {
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

    /// Marks the session as asleep so the node makes the descriptor readable with its next
    /// event; false if events wait (read them instead of sleeping). `CS_ERR_LIBRARY` if the
    /// node is gone.
    fn arm(&mut self) -> Result<bool, Error> {
        if !self.pending.is_empty() {
            return Ok(false);
        }
        let Some(client) = self.client.as_mut() else {
            return Ok(false);
        };
        // Notices a node that went away; consumes a wake-up given meanwhile, whose event the
        // read after it catches.
        if client.session.wait_for_event(Some(Duration::ZERO))? {
            return Ok(false);
        }
        if let Some(event) = client.session.try_next_event(records::decode_event)? {
            self.pending.push_back(event);
            return Ok(false);
        }
        Ok(true)
    }

    /// Leaves the descriptor truthful after a call: armed if nothing waits, else readable
    /// (also when the connection failed, so that a `select` loop dispatches and learns why).
    fn settle(&mut self, wakeup: &OwnedFd) {
        if self.client.is_some() && !matches!(self.arm(), Ok(true)) {
            signal(wakeup);
        }
    }
}

/// The right to run a request (see [`PyEvsHandle::take_turn`]).
struct Turn<'a> {
    _guard: MutexGuard<'a, ()>,
    owner: &'a Mutex<Option<ThreadId>>,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        *self.owner.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }
}

/// The Python objects a handle holds (kept apart for the garbage collector).
#[derive(Default)]
struct Refs {
    deliver: Option<Py<PyAny>>,
    confchg: Option<Py<PyAny>>,
    context: Option<Py<PyAny>>,
}

/// A connection to the node's EVS service (Corosync's `evs_*` calls as methods).
///
/// Groups are keys of 1 to 32 bytes (`str` as UTF-8, or `bytes`), zero-padded to 32, and only
/// a receive filter: the handle gets each message sent to a group it joined, once. Where groups
/// are taken, one `str` or `bytes` is one group, else an iterable of them; at most 50 per call
/// (TooManyGroupsError). Callbacks run inside `dispatch`, in delivery order:
///
/// - `deliver(handle, nodeid, pid, msg)`: a message from process `pid` on node `nodeid`; `msg`
///   is a read-only `Message` buffer.
/// - `confchg(handle, members, left, joined, ring_id, kind)`: a totem configuration (node ids,
///   sorted), in Corosync's order with the ring id (`RingId`) and the kind last:
///   `ConfigurationType.TRANSITIONAL` (the old ring's nodes that move on; `left`) or `.REGULAR`
///   (the new ring; `joined`). The first event is the current configuration.
///
/// The node is `node=` (an embedded `totemcast.Node`), else the one on `socket=`, else on
/// `$TOTEMCAST_SOCKET`, else on `DEFAULT_SOCKET`. Waits release the GIL and Ctrl-C interrupts
/// them; the handle may be shared between threads. A handle is a context manager that finalizes
/// on exit.
///
/// Raises LibraryError (no node), AccessError, VersionError, InvalidParamError (both `node` and
/// `socket`), TypeError (a callback that is not callable, a `node` that is not a Node).
#[pyclass(frozen, name = "Handle", module = "totemcast.evs")]
pub(crate) struct PyEvsHandle {
    state: Mutex<State>,
    refs: Mutex<Refs>,
    /// Held by the request in flight (one at a time), and the thread that runs it.
    turn: Mutex<()>,
    turn_owner: Mutex<Option<ThreadId>>,
    /// A duplicate of the session's wake-up eventfd, written to keep `fd_get()` readable while
    /// events wait in `pending`.
    wakeup: OwnedFd,
    /// What `fd_get()` returns: readable on a wake-up or when the node is gone (an epoll
    /// descriptor over the eventfd and the socket); valid while this object lives, so waiters
    /// may poll it without holding the connection.
    watch: OwnedFd,
    /// Readable once the handle is finalized: wakes every waiter.
    cancel: OwnedFd,
    finalized: AtomicBool,
    nodeid: u32,
}

/// Group keys from Python: one `str` or `bytes`, or an iterable of them.
struct Groups(Vec<Vec<u8>>);

fn key_bytes(object: &Bound<'_, PyAny>) -> PyResult<Option<Vec<u8>>> {
    if let Ok(text) = object.cast::<PyString>() {
        return Ok(Some(text.to_str()?.as_bytes().to_vec()));
    }
    if let Ok(bytes) = object.cast::<PyBytes>() {
        return Ok(Some(bytes.as_bytes().to_vec()));
    }
    Ok(None)
}

impl<'a, 'py> FromPyObject<'a, 'py> for Groups {
    type Error = PyErr;

    fn extract(object: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        if let Some(key) = key_bytes(&object)? {
            return Ok(Groups(vec![key]));
        }
        let not_groups = |what: &Bound<'_, PyAny>| -> PyResult<PyErr> {
            Ok(PyTypeError::new_err(format!(
                "groups are a str or bytes key, or an iterable of them, not {}",
                what.get_type().name()?
            )))
        };
        let Ok(items) = object.try_iter() else {
            return Err(not_groups(&object)?);
        };
        let mut keys = Vec::new();
        for item in items {
            let item = item?;
            match key_bytes(&item)? {
                Some(key) => keys.push(key),
                None => return Err(not_groups(&item)?),
            }
        }
        Ok(Groups(keys))
    }
}

impl Groups {
    fn keys(&self) -> Result<Vec<Key>, Error> {
        Key::list(&self.0)
    }
}

impl PyEvsHandle {
    /// Locks the connection (GIL released while waiting); `BadHandleError` once finalized.
    fn lock<'a>(&'a self, py: Python<'_>) -> PyResult<MutexGuard<'a, State>> {
        let guard = self.lock_any(py);
        if guard.client.is_none() {
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

    /// Runs `request`: sends it, then waits for its answer in slices (the connection not held,
    /// the GIL released, signals checked between them) and hands the answer's body to
    /// `answered(client, Some(body))`. If a signal handler raises meanwhile (Ctrl-C), the
    /// request is abandoned (it still reaches the node; `answered(client, None)` records what
    /// it will do) and the exception propagates. One request of a handle at a time.
    fn request<T>(
        &self,
        py: Python<'_>,
        request: &Request<'_>,
        answered: impl FnOnce(&mut Client, Option<&[u8]>) -> Result<T, Error>,
    ) -> PyResult<T> {
        let _turn = self.take_turn(py)?;
        {
            let mut guard = self.lock(py)?;
            let mut body = Vec::new();
            let kind = request.encode(&mut body);
            guard.client()?.session.start_request(kind, &body)?;
        }
        loop {
            let mut guard = self.lock_any(py);
            let Some(client) = guard.client.as_mut() else {
                return Err(finalized_while_waiting());
            };
            let polled = py.detach(|| client.session.poll_answer());
            let result = match polled {
                Ok(Some(answer)) => {
                    records::decode_answer(&answer).and_then(|body| answered(client, Some(&body)))
                }
                Ok(None) => {
                    drop(guard);
                    if let Err(error) = self.wait_slice(py, SLICE) {
                        let mut guard = self.lock_any(py);
                        if let Some(client) = guard.client.as_mut() {
                            client.session.abandon_request();
                            let _ = answered(client, None);
                            guard.settle(&self.wakeup);
                        }
                        return Err(error);
                    }
                    continue;
                }
                Err(error) => Err(error),
            };
            guard.settle(&self.wakeup);
            return result.map_err(PyErr::from);
        }
    }

    /// The right to run a request; a request of this handle started in this thread and still
    /// waiting (a signal handler calling the handle) is BusyError rather than a deadlock.
    fn take_turn<'a>(&'a self, py: Python<'_>) -> PyResult<Turn<'a>> {
        let me = std::thread::current().id();
        let owner = || {
            self.turn_owner
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
        };
        if *owner() == Some(me) {
            return Err(Error::Busy(
                "a request of this handle waits in this thread (a signal handler called it)".into(),
            )
            .into());
        }
        let guard = self
            .turn
            .lock_py_attached(py)
            .unwrap_or_else(PoisonError::into_inner);
        *owner() = Some(me);
        Ok(Turn {
            _guard: guard,
            owner: &self.turn_owner,
        })
    }

    /// Runs the callback for `event` (if one is set).
    fn call(&self, handle: &Bound<'_, Self>, event: Event) -> PyResult<()> {
        let py = handle.py();
        let callback = {
            let refs = self.refs.lock().unwrap_or_else(PoisonError::into_inner);
            match &event {
                Event::Deliver { .. } => refs.deliver.as_ref().map(|c| c.clone_ref(py)),
                Event::ConfChg { .. } => refs.confchg.as_ref().map(|c| c.clone_ref(py)),
            }
        };
        let Some(callback) = callback else {
            return Ok(());
        };
        match event {
            Event::Deliver {
                nodeid,
                pid,
                payload,
            } => {
                let message = Bound::new(py, PyMessage::from_bytes(payload))?;
                callback.call1(py, (handle, nodeid.0, pid, message))?;
            }
            Event::ConfChg {
                kind,
                ring,
                members,
                left,
                joined,
                ..
            } => {
                let classes = classes(py)?;
                let ids = |nodes: Vec<NodeId>| PyList::new(py, nodes.into_iter().map(|n| n.0));
                let ring_id = classes.ring_id.call1(py, (ring.rep, ring.seq))?;
                let kind = &classes.kinds[u32::from(ConfigurationType::from(kind)) as usize];
                let args = (
                    handle,
                    ids(members)?,
                    ids(left)?,
                    ids(joined)?,
                    ring_id,
                    kind.clone_ref(py),
                );
                callback.call1(py, args)?;
            }
        }
        Ok(())
    }

    /// Puts events a dispatch could not run back in front of the queue.
    fn hand_back(&self, py: Python<'_>, mut events: VecDeque<Event>) {
        let mut guard = self.lock_any(py);
        if guard.client.is_some() {
            while let Some(event) = events.pop_back() {
                guard.pending.push_front(event);
            }
            guard.settle(&self.wakeup);
        }
    }

    /// Sends a multicast: `header_len` bytes written by `header`, then the buffers.
    fn send(
        &self,
        py: Python<'_>,
        kind: u32,
        buffers: &Bound<'_, PyTuple>,
        header_len: usize,
        header: impl Fn(&mut [u8]) -> usize,
    ) -> PyResult<()> {
        let inputs = buffers
            .iter()
            .map(|buffer| InputBuffer::get(&buffer))
            .collect::<PyResult<Vec<_>>>()?;
        let len: usize = inputs.iter().map(InputBuffer::len).sum();
        let mut guard = self.lock(py)?;
        let client = guard.client()?;
        client.check_len(len)?;
        if kind == records::MCAST_JOINED && client.joined.is_empty() {
            return Err(Error::NotExist("this handle has joined no group".into()).into());
        }
        let pieces = inputs
            .iter()
            .map(|input| input.as_slice(py))
            .collect::<PyResult<Vec<_>>>()?;
        let sent = client.send(kind, header_len + len, |out| {
            let mut at = header(out);
            for piece in &pieces {
                out[at..at + piece.len()].copy_from_slice(piece);
                at += piece.len();
            }
        })?;
        if sent {
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
}

/// Connects to the node given as `node=`, or on the socket.
fn connect(
    py: Python<'_>,
    node: Option<&Bound<'_, PyAny>>,
    socket: Option<PathBuf>,
) -> PyResult<Session> {
    if let Some(node) = node.filter(|node| !node.is_none()) {
        let stream = PyNode::stream_of(node, socket.as_ref())?;
        return Ok(py.detach(|| Session::connect_stream(stream, "evs", records::ANSWER))?);
    }
    let socket = resolve_socket(socket);
    Ok(py.detach(|| Session::connect(&socket, "evs", records::ANSWER))?)
}

#[pymethods]
#[allow(
    clippy::needless_pass_by_value,
    reason = "PyO3 hands arguments over by value"
)]
impl PyEvsHandle {
    #[new]
    #[pyo3(signature = (deliver = None, confchg = None, *, context = None, node = None, socket = None))]
    fn new(
        py: Python<'_>,
        deliver: Option<Bound<'_, PyAny>>,
        confchg: Option<Bound<'_, PyAny>>,
        context: Option<Bound<'_, PyAny>>,
        node: Option<Bound<'_, PyAny>>,
        socket: Option<PathBuf>,
    ) -> PyResult<PyEvsHandle> {
        check_callback("deliver", deliver.as_ref())?;
        check_callback("confchg", confchg.as_ref())?;
        let session = connect(py, node.as_ref(), socket)?;
        let nodeid = session.nodeid().0;
        let failed = |error: std::io::Error| Error::Library(format!("dup: {error}").into());
        let wakeup = session.wakeup().try_clone_to_owned().map_err(failed)?;
        let watch = session.watch()?;
        let cancel = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
            .map_err(|errno| Error::Library(format!("eventfd: {errno}").into()))?;
        let mut state = State {
            client: Some(Client::new(session)),
            pending: VecDeque::new(),
        };
        state.settle(&wakeup);
        Ok(PyEvsHandle {
            state: Mutex::new(state),
            refs: Mutex::new(Refs {
                deliver: some_object(deliver),
                confchg: some_object(confchg),
                context: some_object(context),
            }),
            turn: Mutex::new(()),
            turn_owner: Mutex::new(None),
            wakeup,
            watch,
            cancel: OwnedFd::from(cancel),
            finalized: AtomicBool::new(false),
            nodeid,
        })
    }

    /// `evs_join`: adds `groups` (at most 50 keys) to this handle's receive filter.
    ///
    /// Joining a key again changes nothing. Raises TooManyGroupsError, InvalidParamError (an
    /// empty key), NameTooLongError (over 32 bytes), BadHandleError.
    fn join(&self, py: Python<'_>, groups: Groups) -> PyResult<()> {
        let keys = groups.keys()?;
        self.request(py, &Request::Join(keys.clone()), |client, answer| {
            client.joined(keys, answer);
            Ok(())
        })
    }

    /// `evs_leave`: removes `groups` (at most 50 keys) from this handle's filter.
    ///
    /// All or none: NotExistError if one of them is not joined. Also TooManyGroupsError,
    /// InvalidParamError, NameTooLongError, BadHandleError.
    fn leave(&self, py: Python<'_>, groups: Groups) -> PyResult<()> {
        let keys = groups.keys()?;
        self.request(py, &Request::Leave(keys.clone()), |client, answer| {
            client.left(&keys, answer);
            Ok(())
        })
    }

    /// The keys this handle has joined, sorted, as 32-byte `bytes` (zero-padded).
    fn joined<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let mut guard = self.lock(py)?;
        let keys: Vec<Bound<'py, PyBytes>> = guard
            .client()?
            .joined
            .iter()
            .map(|key| PyBytes::new(py, key.as_array()))
            .collect();
        PyList::new(py, keys)
    }

    /// `evs_mcast_joined`: multicasts the concatenation of `buffers` to every joined group.
    ///
    /// `buffers` are buffer-protocol objects, copied once into the node's ring; never waits.
    /// Raises TryAgainError (ring full, nothing sent; the descriptor becomes readable when the
    /// node made room), NotExistError (nothing joined), TooBigError, InvalidParamError
    /// (guarantee), TypeError (not a buffer), BadHandleError.
    #[pyo3(signature = (guarantee, *buffers))]
    fn mcast_joined(
        &self,
        py: Python<'_>,
        guarantee: u32,
        buffers: &Bound<'_, PyTuple>,
    ) -> PyResult<()> {
        let guarantee = Guarantee::try_from(guarantee)?;
        self.send(py, records::MCAST_JOINED, buffers, 1, |out| {
            out[0] = u32::from(guarantee) as u8;
            1
        })
    }

    /// `evs_mcast_groups`: multicasts the concatenation of `buffers` to `groups` (1 to 50
    /// keys), joined or not (the handle gets it only if it joined one of them).
    ///
    /// Raises TooManyGroupsError, InvalidParamError (no group, a bad key or guarantee),
    /// NameTooLongError, TryAgainError, TooBigError, BadHandleError.
    #[pyo3(signature = (guarantee, groups, *buffers))]
    fn mcast_groups(
        &self,
        py: Python<'_>,
        guarantee: u32,
        groups: Groups,
        buffers: &Bound<'_, PyTuple>,
    ) -> PyResult<()> {
        let guarantee = Guarantee::try_from(guarantee)?;
        let keys = groups.keys()?;
        if keys.is_empty() {
            return Err(
                Error::InvalidParam("a message must be sent to at least one group".into()).into(),
            );
        }
        let header_len = records::mcast_groups_header_len(keys.len());
        self.send(py, records::MCAST_GROUPS, buffers, header_len, |out| {
            records::write_mcast_groups_header(out, guarantee, &keys)
        })
    }

    /// `evs_membership_get`: `(local_nodeid, nodeids)` of the current configuration.
    fn membership_get<'py>(&self, py: Python<'py>) -> PyResult<(u32, Bound<'py, PyList>)> {
        let (me, members) = self.request(py, &Request::MembershipGet, |_, answer| {
            answer
                .and_then(records::decode_membership)
                .ok_or_else(|| Error::Library("malformed membership answer".into()))
        })?;
        Ok((me.0, PyList::new(py, members.into_iter().map(|n| n.0))?))
    }

    /// The largest message this handle can send, in bytes.
    fn max_atomic_msgsize_get(&self, py: Python<'_>) -> PyResult<usize> {
        Ok(self.lock(py)?.client()?.max_atomic_msgsize_get())
    }

    /// `evs_dispatch`: runs the callbacks of waiting events in order; returns how many ran.
    ///
    /// `DispatchFlags.ALL` (default): what waits now; `ONE`: waits for one; `ONE_NONBLOCKING`:
    /// one or TryAgainError; `BLOCKING`: until the handle is finalized. Waits release the GIL;
    /// Ctrl-C raises KeyboardInterrupt. If a callback raises, the exception propagates and the
    /// later events stay queued, in order. Raises BadHandleError once finalized, LibraryError
    /// when the node is gone.
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
                    let armed = match guard.arm() {
                        Ok(armed) => armed,
                        // The node is gone: say so (the descriptor stays readable).
                        Err(error) => {
                            signal(&this.wakeup);
                            return if count > 0 {
                                Ok(count)
                            } else {
                                Err(error.into())
                            };
                        }
                    };
                    if !armed {
                        continue; // events came meanwhile
                    }
                    match flags {
                        DispatchFlags::All => return Ok(count),
                        DispatchFlags::OneNonblocking => {
                            return Err(Error::TryAgain("no event is waiting".into()).into());
                        }
                        DispatchFlags::One | DispatchFlags::Blocking => {}
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

    /// `evs_fd_get`: a descriptor readable while events wait (for select, selectors,
    /// `loop.add_reader`), after a TryAgainError once the node made room, and once the node is
    /// gone (`dispatch` then raises LibraryError).
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

    /// `evs_context_get`: the object given as `context=` or to `context_set`.
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

    /// `evs_context_set`: remembers `context` for `context_get()`.
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

    /// `evs_finalize`: closes the connection. A waiting `dispatch` returns; every later call
    /// raises BadHandleError, a second `finalize` too.
    fn finalize(&self, py: Python<'_>) -> PyResult<()> {
        if self.finalized.swap(true, Ordering::AcqRel) {
            return Err(Error::BadHandle("the handle is finalized already".into()).into());
        }
        signal(&self.cancel);
        let (client, pending) = {
            let mut guard = self.lock_any(py);
            (guard.client.take(), std::mem::take(&mut guard.pending))
        };
        drop(pending);
        drop(client);
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

    fn __repr__(&self) -> String {
        if self.is_finalized() {
            return format!("<totemcast.evs.Handle nodeid={} finalized>", self.nodeid);
        }
        format!("<totemcast.evs.Handle nodeid={}>", self.nodeid)
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Ok(refs) = self.refs.try_lock() {
            for object in [&refs.deliver, &refs.confchg, &refs.context]
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
