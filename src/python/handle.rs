//! What `totemcast.cpg.Handle` ([`super::cpg`]) and `totemcast.evs.Handle` ([`super::evs`])
//! share: a Rust handle ([`Connection`]) behind a mutex, and the waiting, dispatching and
//! finalizing around it ([`Core`]).
//!
//! * Waiting for events or for room in the request ring happens with the GIL released, in
//!   slices of [`SLICE`] with `check_signals` in between, so Ctrl-C interrupts it. The connection
//!   sits behind a mutex that is not held while a callback runs or while `dispatch` sleeps: other
//!   threads may send, query or finalize meanwhile (a blocking `dispatch` in a dedicated thread,
//!   as in Corosync, returns when another thread finalizes the handle).
//! * A request waits for the node's answer with the connection held, the GIL released and an
//!   interrupt check installed on the Rust handle that runs Python's signal handlers (see
//!   [`Core::request`]).
//! * The wake-up descriptor (`fd_get`) tells the truth after every call: readable while events
//!   wait (here or in the ring), otherwise armed so that the node makes it readable with the
//!   next event ([`State::settle`]). `select` and asyncio need nothing else.
//! * Events are read in batches per release of the GIL; a callback that raises stops the
//!   dispatch at its event and the later events stay queued, in order, for the next one.

use std::collections::VecDeque;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::ThreadId;
use std::time::Duration;

use nix::poll::{PollFd, PollFlags};
use nix::sys::eventfd::{EfdFlags, EventFd};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::sync::MutexExt as _;
use pyo3::{PyTraverseError, PyVisit};

use crate::api::DispatchFlags;
use crate::client::{InterruptCheck, busy_wait};
use crate::error::Error;

/// Longest stretch a wait goes without checking for signals (Ctrl-C).
pub(super) const SLICE: Duration = Duration::from_millis(100);
/// Most events one `dispatch` reads per release of the GIL.
const BATCH_EVENTS: usize = 1024;
/// Most payload bytes one `dispatch` reads per release of the GIL (at least one event).
const BATCH_BYTES: usize = 4 << 20;

/// What a Python handle needs of its Rust handle ([`crate::cpg::Handle`],
/// [`crate::evs::Handle`]).
pub(super) trait Connection: Send {
    /// What the handle's dispatch hands over.
    type Event: Send;

    /// The next event if one is there (never waits).
    fn try_next_event(&mut self) -> Result<Option<Self::Event>, Error>;

    /// Makes the descriptor readable with the next event; false if an event may be waiting.
    fn arm_descriptor(&mut self) -> Result<bool, Error>;

    /// Installs (or removes) the check run while a call waits.
    fn set_interrupt_check(&mut self, check: Option<InterruptCheck>);

    /// Sets how long the handle's own waits poll before they sleep.
    fn set_busy_poll(&mut self, window: Duration) -> Result<(), Error>;

    /// After `CS_ERR_TRY_AGAIN`: asks for a wake-up once a message of `len` bytes fits; false
    /// when it fits already.
    fn notify_when_writable(&mut self, len: usize) -> Result<bool, Error>;

    /// The eventfd the node writes to wake this side.
    fn wakeup_eventfd(&self) -> Result<BorrowedFd<'_>, Error>;

    /// The message bytes of a delivery (0 for other events), for the batch limit.
    fn payload_len(event: &Self::Event) -> usize;
}

/// `wakeup_eventfd` as [`Connection`] has it (CPG's fails once finalized, EVS's cannot).
trait IntoWakeup<'a> {
    fn into_wakeup(self) -> Result<BorrowedFd<'a>, Error>;
}

impl<'a> IntoWakeup<'a> for BorrowedFd<'a> {
    fn into_wakeup(self) -> Result<BorrowedFd<'a>, Error> {
        Ok(self)
    }
}

impl<'a> IntoWakeup<'a> for Result<BorrowedFd<'a>, Error> {
    fn into_wakeup(self) -> Result<BorrowedFd<'a>, Error> {
        self
    }
}

/// Implements [`Connection`] for the `Handle` of the client library `crate::$service` by its
/// methods of the same names.
macro_rules! connection {
    ($service:ident) => {
        impl Connection for crate::$service::Handle {
            type Event = crate::$service::Event;

            fn try_next_event(&mut self) -> Result<Option<Self::Event>, Error> {
                crate::$service::Handle::try_next_event(self)
            }

            fn arm_descriptor(&mut self) -> Result<bool, Error> {
                crate::$service::Handle::arm_descriptor(self)
            }

            fn set_interrupt_check(&mut self, check: Option<InterruptCheck>) {
                crate::$service::Handle::set_interrupt_check(self, check);
            }

            fn set_busy_poll(&mut self, window: Duration) -> Result<(), Error> {
                crate::$service::Handle::set_busy_poll(self, window)
            }

            fn notify_when_writable(&mut self, len: usize) -> Result<bool, Error> {
                crate::$service::Handle::notify_when_writable(self, len)
            }

            fn wakeup_eventfd(&self) -> Result<BorrowedFd<'_>, Error> {
                crate::$service::Handle::wakeup_eventfd(self).into_wakeup()
            }

            fn payload_len(event: &Self::Event) -> usize {
                if let crate::$service::Event::Deliver { payload, .. } = event {
                    payload.len()
                } else {
                    0
                }
            }
        }
    };
}

connection!(cpg);
connection!(evs);

/// The connection and the events read ahead of the callbacks.
pub(super) struct State<C: Connection> {
    /// `None` once finalized.
    handle: Option<C>,
    /// Events read ahead of the callbacks: handed back by a dispatch whose callback raised,
    /// or read while arming the descriptor. They come before anything in the handle.
    pending: VecDeque<C::Event>,
}

impl<C: Connection> State<C> {
    pub(super) fn handle(&mut self) -> PyResult<&mut C> {
        self.handle.as_mut().ok_or_else(bad_handle)
    }

    /// Moves events into `out` (first those pending here, then from the handle) until it holds
    /// `max` events or the payloads read reach `max_bytes`. Never waits.
    fn read_events(
        &mut self,
        max: usize,
        max_bytes: usize,
        out: &mut VecDeque<C::Event>,
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
            bytes += C::payload_len(&event);
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
    pub(super) fn settle(&mut self, wakeup: &OwnedFd) {
        if self.handle.is_some() && !matches!(self.arm(), Ok(true)) {
            signal(wakeup);
        }
    }
}

/// The Python objects a handle holds (kept apart for the garbage collector).
#[derive(Default)]
struct Refs {
    /// One per kind of event, as the Python handle numbers them.
    callbacks: Vec<Option<Py<PyAny>>>,
    context: Option<Py<PyAny>>,
}

/// A Python handle's connection and what it keeps beside it; the `#[pyclass]` wraps one and
/// adds its service's calls.
pub(super) struct Core<C: Connection> {
    /// `cpg` or `evs`, for `repr`.
    service: &'static str,
    state: Mutex<State<C>>,
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
    /// How long a wait polls before it sleeps (`busy_poll=`, see [`busy_wait`]).
    busy_poll: Duration,
    finalized: AtomicBool,
    nodeid: u32,
    /// The thread whose request waits with the connection held (see `request`).
    requesting: Mutex<Option<ThreadId>>,
    /// Set by a `finalize` from a signal handler during a request of its thread.
    close_pending: Arc<AtomicBool>,
}

impl<C: Connection + AsFd> Core<C> {
    /// Wraps `handle` (of node `nodeid`) with `callbacks`, one per kind of event, and
    /// `context`; its waits and the handle's poll for `busy_poll` before they sleep. The
    /// descriptor is left truthful.
    pub(super) fn new(
        service: &'static str,
        mut handle: C,
        nodeid: u32,
        callbacks: Vec<Option<Bound<'_, PyAny>>>,
        context: Option<Bound<'_, PyAny>>,
        busy_poll: Duration,
    ) -> PyResult<Core<C>> {
        handle.set_busy_poll(busy_poll)?;
        let failed = |error: std::io::Error| Error::Library(format!("dup: {error}").into());
        let wakeup = handle
            .wakeup_eventfd()?
            .try_clone_to_owned()
            .map_err(failed)?;
        let watch = handle.as_fd().try_clone_to_owned().map_err(failed)?;
        let cancel = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
            .map_err(|errno| Error::Library(format!("eventfd: {errno}").into()))?;
        let mut state = State {
            handle: Some(handle),
            pending: VecDeque::new(),
        };
        state.settle(&wakeup);
        Ok(Core {
            service,
            state: Mutex::new(state),
            refs: Mutex::new(Refs {
                callbacks: callbacks.into_iter().map(some_object).collect(),
                context: some_object(context),
            }),
            wakeup,
            watch,
            cancel: OwnedFd::from(cancel),
            busy_poll,
            finalized: AtomicBool::new(false),
            nodeid,
            requesting: Mutex::new(None),
            close_pending: Arc::new(AtomicBool::new(false)),
        })
    }
}

impl<C: Connection> Core<C> {
    /// Locks the connection (GIL released while waiting for the lock); `BadHandleError` once
    /// finalized, `BusyError` in a signal handler while a request of its thread waits.
    pub(super) fn lock<'a>(&'a self, py: Python<'_>) -> PyResult<MutexGuard<'a, State<C>>> {
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

    /// Locks the connection, finalized or not.
    pub(super) fn lock_any<'a>(&'a self, py: Python<'_>) -> MutexGuard<'a, State<C>> {
        self.state
            .lock_py_attached(py)
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn is_finalized(&self) -> bool {
        self.finalized.load(Ordering::Acquire)
    }

    /// The duplicate of the wake-up eventfd (see [`signal`], [`clear`]).
    pub(super) fn wakeup(&self) -> &OwnedFd {
        &self.wakeup
    }

    /// Waits one slice (GIL released, connection not held) for the descriptor or a finalize,
    /// polling for `busy_poll` before it sleeps, then checks for signals.
    pub(super) fn wait_slice(&self, py: Python<'_>, slice: Duration) -> PyResult<()> {
        let (watch, cancel, spin) = (&self.watch, &self.cancel, self.busy_poll);
        py.detach(|| wait_readable(watch, cancel, spin, slice))?;
        py.check_signals()
    }

    /// How long a wait polls before it sleeps.
    pub(super) fn busy_poll(&self) -> Duration {
        self.busy_poll
    }

    /// Runs a request (it waits for the node's answer with the GIL released, checking for
    /// signals every 100 ms and after each: Ctrl-C ends the wait, and the request still takes
    /// effect), then leaves the descriptor truthful. With `retry_busy`, the request is retried
    /// while the node answers BUSY (this handle's previous join or leave is still on its way),
    /// as libcpg does.
    ///
    /// A signal handler runs while the connection is held: one that calls this handle gets
    /// BusyError, except `finalize`, which the request completes when its wait ends.
    pub(super) fn request<T: Send>(
        &self,
        py: Python<'_>,
        retry_busy: bool,
        call: impl Fn(&mut C) -> Result<T, Error> + Sync,
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
    fn close(&self, guard: &mut MutexGuard<'_, State<C>>) {
        let handle = guard.handle.take();
        let pending = std::mem::take(&mut guard.pending);
        drop(pending);
        drop(handle);
        let refs = std::mem::take(&mut *self.refs.lock().unwrap_or_else(PoisonError::into_inner));
        drop(refs);
    }

    /// The callback for events of kind `index`, if one is set.
    pub(super) fn callback(&self, py: Python<'_>, index: usize) -> Option<Py<PyAny>> {
        let refs = self.refs.lock().unwrap_or_else(PoisonError::into_inner);
        refs.callbacks
            .get(index)
            .and_then(Option::as_ref)
            .map(|callback| callback.clone_ref(py))
    }

    /// Puts events a dispatch could not run back in front of the queue.
    fn hand_back(&self, py: Python<'_>, mut events: VecDeque<C::Event>) {
        let mut guard = self.lock_any(py);
        if guard.handle.is_some() {
            while let Some(event) = events.pop_back() {
                guard.pending.push_front(event);
            }
            guard.settle(&self.wakeup);
        }
    }

    /// `*_dispatch`: hands waiting events to `call` in order; how many it ran. See the Python
    /// handles' `dispatch` for the flags; a `call` that fails stops the dispatch at its event
    /// and the later events stay queued.
    pub(super) fn dispatch(
        &self,
        py: Python<'_>,
        flags: u32,
        mut call: impl FnMut(C::Event) -> PyResult<()>,
    ) -> PyResult<usize> {
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
                let mut guard = match self.lock(py) {
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
                    guard.settle(&self.wakeup);
                    return Err(error.into());
                }
                if batch.is_empty() {
                    let armed = match guard.arm() {
                        Ok(armed) => armed,
                        // The node is gone: say so (the descriptor stays readable).
                        Err(error) => {
                            signal(&self.wakeup);
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
                    self.wait_slice(py, SLICE)?;
                    if self.is_finalized() {
                        return Ok(count);
                    }
                    continue;
                }
            }
            while let Some(event) = batch.pop_front() {
                if let Err(error) = call(event) {
                    self.hand_back(py, std::mem::take(&mut batch));
                    return Err(error);
                }
                count += 1;
                if self.is_finalized() {
                    return Ok(count);
                }
            }
            if one {
                let mut guard = self.lock_any(py);
                guard.settle(&self.wakeup);
                return Ok(count);
            }
        }
    }

    /// `*_fd_get`.
    pub(super) fn fd_get(&self) -> PyResult<i32> {
        if self.is_finalized() {
            return Err(bad_handle());
        }
        Ok(self.watch.as_raw_fd())
    }

    /// `*_context_get`.
    pub(super) fn context_get(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        if self.is_finalized() {
            return Err(bad_handle());
        }
        let refs = self.refs.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(refs
            .context
            .as_ref()
            .map_or_else(|| py.None(), |context| context.clone_ref(py)))
    }

    /// `*_context_set`.
    pub(super) fn context_set(&self, context: Bound<'_, PyAny>) -> PyResult<()> {
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

    /// `*_finalize`: a second one is BadHandleError.
    pub(super) fn finalize(&self, py: Python<'_>) -> PyResult<()> {
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

    /// `__exit__`: finalizes unless finalized already.
    pub(super) fn exit(&self, py: Python<'_>) -> PyResult<bool> {
        if !self.is_finalized() {
            self.finalize(py)?;
        }
        Ok(false)
    }

    /// `__repr__`.
    pub(super) fn repr(&self) -> String {
        let (service, nodeid) = (self.service, self.nodeid);
        if self.is_finalized() {
            return format!("<totemcast.{service}.Handle nodeid={nodeid} finalized>");
        }
        format!("<totemcast.{service}.Handle nodeid={nodeid}>")
    }

    /// `__traverse__`.
    pub(super) fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Ok(refs) = self.refs.try_lock() {
            for object in refs.callbacks.iter().chain([&refs.context]).flatten() {
                visit.call(object)?;
            }
        }
        Ok(())
    }

    /// `__clear__`.
    pub(super) fn clear(&self) {
        let refs = self
            .refs
            .lock()
            .map(|mut refs| std::mem::take(&mut *refs))
            .unwrap_or_default();
        drop(refs);
    }
}

/// Sends with `send` until the ring takes it: `Ok(true)`; `Ok(false)` when the ring is full,
/// nothing was sent and the node will make the descriptor readable once it has made room for
/// `len` bytes. `send` fails with the Python error, or succeeds with the handle's result.
pub(super) fn send_or_notify<C: Connection>(
    handle: &mut C,
    len: usize,
    mut send: impl FnMut(&mut C) -> PyResult<Result<(), Error>>,
) -> PyResult<bool> {
    loop {
        match send(handle)? {
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

/// The error of a send that found the ring full (see [`send_or_notify`]).
pub(super) fn ring_full() -> PyErr {
    Error::TryAgain(
        "the request ring is full (the handle's descriptor becomes readable when the node has \
         made room)"
            .into(),
    )
    .into()
}

/// Makes the wake-up descriptor readable.
pub(super) fn signal(wakeup: &OwnedFd) {
    let _ = nix::unistd::write(wakeup, &1u64.to_ne_bytes());
}

/// Consumes pending wake-ups of the descriptor.
pub(super) fn clear(wakeup: &OwnedFd) {
    let mut counter = [0u8; 8];
    let _ = nix::unistd::read(wakeup, &mut counter);
}

/// Waits up to `timeout` (polling for `spin` first) for the wake-up descriptor or `cancel`
/// (finalize); never consumes.
fn wait_readable(
    wakeup: &OwnedFd,
    cancel: &OwnedFd,
    spin: Duration,
    timeout: Duration,
) -> Result<(), Error> {
    let mut set = [
        PollFd::new(wakeup.as_fd(), PollFlags::POLLIN),
        PollFd::new(cancel.as_fd(), PollFlags::POLLIN),
    ];
    match busy_wait::poll_spinning(&mut set, spin, Some(timeout.max(Duration::from_millis(1)))) {
        Ok(_) | Err(nix::errno::Errno::EINTR) => Ok(()),
        Err(errno) => Err(Error::Library(format!("poll: {errno}").into())),
    }
}

/// The window of a Python handle's `busy_poll=` (seconds, 0 to 0.01).
pub(super) fn busy_poll_window(seconds: f64) -> PyResult<Duration> {
    if !(seconds.is_finite() && seconds >= 0.0) {
        return Err(Error::InvalidParam(
            format!("busy_poll must be a number of seconds from 0 to 0.01, not {seconds}").into(),
        )
        .into());
    }
    Ok(busy_wait::checked(Duration::from_secs_f64(seconds))?)
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

fn some_object(object: Option<Bound<'_, PyAny>>) -> Option<Py<PyAny>> {
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
