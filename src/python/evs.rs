//! `totemcast.evs.Handle`: [`crate::evs::Handle`] for Python (Corosync's `evs_*` calls as
//! methods), over the scaffolding it shares with `totemcast.cpg.Handle` ([`super::handle`]:
//! waits without the GIL, Ctrl-C, the truthful descriptor, dispatch with callbacks).

use std::path::PathBuf;

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};
use pyo3::{PyTraverseError, PyVisit};

use super::buffer::{InputBuffer, PyMessage};
use super::handle::{
    Core, busy_poll_window, check_callback, resolve_socket, ring_full, send_or_notify,
};
use super::node::PyNode;
use crate::api::{ConfigurationType, Guarantee};
use crate::error::Error;
use crate::evs::{Event, Handle, Key};
use crate::ids::NodeId;

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
/// them; the handle may be shared between threads. `busy_poll=` is how many seconds a wait polls
/// for the node before it sleeps (50 µs by default, 0: sleep at once, at most 0.01). A handle is
/// a context manager that finalizes on exit.
///
/// Raises LibraryError (no node), AccessError, VersionError, InvalidParamError (both `node` and
/// `socket`, `busy_poll` out of range), TypeError (a callback that is not callable, a `node` that is not a Node).
#[pyclass(frozen, name = "Handle", module = "totemcast.evs")]
pub(crate) struct PyEvsHandle {
    core: Core<Handle>,
}

/// The callbacks' places in [`Core`]'s list.
const DELIVER: usize = 0;
const CONFCHG: usize = 1;

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
    /// Runs the callback for `event` (if one is set).
    fn call(&self, handle: &Bound<'_, Self>, event: Event) -> PyResult<()> {
        let py = handle.py();
        let kind = match &event {
            Event::Deliver { .. } => DELIVER,
            Event::ConfChg { .. } => CONFCHG,
        };
        let Some(callback) = self.core.callback(py, kind) else {
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

    /// Sends a multicast of `buffers` with `send` (never waits for room).
    fn send(
        &self,
        py: Python<'_>,
        buffers: &Bound<'_, PyTuple>,
        send: impl Fn(&mut Handle, &[&[u8]]) -> Result<(), Error>,
    ) -> PyResult<()> {
        let inputs = buffers
            .iter()
            .map(|buffer| InputBuffer::get(&buffer))
            .collect::<PyResult<Vec<_>>>()?;
        let len: usize = inputs.iter().map(InputBuffer::len).sum();
        let mut guard = self.core.lock(py)?;
        let handle = guard.handle()?;
        let accepted = send_or_notify(handle, len, |handle| {
            let pieces = inputs
                .iter()
                .map(|input| input.as_slice(py))
                .collect::<PyResult<Vec<_>>>()?;
            let slices: Vec<&[u8]> = pieces.iter().map(|piece| &piece[..]).collect();
            Ok(send(handle, &slices))
        })?;
        drop(guard);
        if accepted { Ok(()) } else { Err(ring_full()) }
    }
}

/// Connects to the node given as `node=`, or on the socket.
fn connect(
    py: Python<'_>,
    node: Option<&Bound<'_, PyAny>>,
    socket: Option<PathBuf>,
) -> PyResult<Handle> {
    if let Some(node) = node.filter(|node| !node.is_none()) {
        let stream = PyNode::stream_of(node, socket.as_ref())?;
        return Ok(py.detach(|| Handle::connect_stream(stream))?);
    }
    let socket = resolve_socket(socket);
    Ok(py.detach(|| Handle::connect(&socket))?)
}

#[pymethods]
#[allow(
    clippy::needless_pass_by_value,
    reason = "PyO3 hands arguments over by value"
)]
impl PyEvsHandle {
    #[new]
    #[pyo3(signature = (
        deliver = None, confchg = None, *, context = None, node = None, socket = None,
        busy_poll = 5e-05
    ))]
    fn new(
        py: Python<'_>,
        deliver: Option<Bound<'_, PyAny>>,
        confchg: Option<Bound<'_, PyAny>>,
        context: Option<Bound<'_, PyAny>>,
        node: Option<Bound<'_, PyAny>>,
        socket: Option<PathBuf>,
        busy_poll: f64,
    ) -> PyResult<PyEvsHandle> {
        let busy_poll = busy_poll_window(busy_poll)?;
        check_callback("deliver", deliver.as_ref())?;
        check_callback("confchg", confchg.as_ref())?;
        let handle = connect(py, node.as_ref(), socket)?;
        let nodeid = handle.nodeid().0;
        Ok(PyEvsHandle {
            core: Core::new(
                "evs",
                handle,
                nodeid,
                vec![deliver, confchg],
                context,
                busy_poll,
            )?,
        })
    }

    /// `evs_join`: adds `groups` (at most 50 keys) to this handle's receive filter.
    ///
    /// Joining a key again changes nothing. Raises TooManyGroupsError, InvalidParamError (an
    /// empty key), NameTooLongError (over 32 bytes), BadHandleError.
    fn join(&self, py: Python<'_>, groups: Groups) -> PyResult<()> {
        groups.keys()?;
        self.core
            .request(py, false, |handle| handle.join(&groups.0))
    }

    /// `evs_leave`: removes `groups` (at most 50 keys) from this handle's filter.
    ///
    /// All or none: NotExistError if one of them is not joined. Also TooManyGroupsError,
    /// InvalidParamError, NameTooLongError, BadHandleError.
    fn leave(&self, py: Python<'_>, groups: Groups) -> PyResult<()> {
        groups.keys()?;
        self.core
            .request(py, false, |handle| handle.leave(&groups.0))
    }

    /// The keys this handle has joined, sorted, as 32-byte `bytes` (zero-padded).
    fn joined<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let mut guard = self.core.lock(py)?;
        let keys: Vec<Bound<'py, PyBytes>> = guard
            .handle()?
            .joined()
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
        self.send(py, buffers, |handle, buffers| {
            handle.mcast_joined(guarantee, buffers)
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
        self.send(py, buffers, |handle, buffers| {
            handle.mcast_groups(guarantee, &keys, buffers)
        })
    }

    /// `evs_membership_get`: `(local_nodeid, nodeids)` of the current configuration.
    fn membership_get<'py>(&self, py: Python<'py>) -> PyResult<(u32, Bound<'py, PyList>)> {
        let (me, members) = self.core.request(py, false, Handle::membership_get)?;
        Ok((me.0, PyList::new(py, members.into_iter().map(|n| n.0))?))
    }

    /// The largest message this handle can send, in bytes.
    fn max_atomic_msgsize_get(&self, py: Python<'_>) -> PyResult<usize> {
        Ok(self.core.lock(py)?.handle()?.max_atomic_msgsize_get())
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
        let this = slf.get();
        this.core
            .dispatch(slf.py(), flags, |event| this.call(slf, event))
    }

    /// `evs_fd_get`: a descriptor readable while events wait (for select, selectors,
    /// `loop.add_reader`), after a TryAgainError once the node made room, and once the node is
    /// gone (`dispatch` then raises LibraryError).
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

    /// `evs_context_get`: the object given as `context=` or to `context_set`.
    fn context_get(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.core.context_get(py)
    }

    /// `evs_context_set`: remembers `context` for `context_get()`.
    fn context_set(&self, context: Bound<'_, PyAny>) -> PyResult<()> {
        self.core.context_set(context)
    }

    /// `evs_finalize`: closes the connection. A waiting `dispatch` returns; every later call
    /// raises BadHandleError, a second `finalize` too.
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
