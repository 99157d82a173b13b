//! What the client libraries share: a session with the node over the IPC handshake and two
//! rings — requests that wait for their answer (keeping the events that come first), one-way
//! records written straight into the request ring, and dispatch of event records with the
//! `cs_dispatch_flags_t` rules; and the waits both client libraries share (in slices with an
//! interrupt check). Each service's handle decodes its own records.

use std::collections::VecDeque;
use std::io::Read as _;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use nix::poll::{PollFd, PollFlags};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};

use crate::api::DispatchFlags;
use crate::error::{Error, Result};
use crate::ids::NodeId;
use crate::ipc::connection::{self, Endpoint};
use crate::ipc::ring::{ClaimError, Corrupt};

pub(crate) mod busy_wait;

/// A check run while a call waits (see [`crate::cpg::Handle::set_interrupt_check`],
/// [`crate::evs::Handle::set_interrupt_check`]).
pub type InterruptCheck = Box<dyn FnMut() -> Result<()> + Send>;

/// How often a wait with an interrupt check looks at it.
const INTERRUPT_SLICE: Duration = Duration::from_millis(100);

/// A client's connection to one service of its node.
pub(crate) struct Session {
    endpoint: Endpoint,
    nodeid: NodeId,
    /// The kind of answer records.
    answer: u32,
    /// Event records read while waiting for an answer, in order: (kind, body).
    pending: VecDeque<(u32, Vec<u8>)>,
    buffer: Vec<u8>,
    /// The answer to the request in flight, when it was read before its caller polled for it
    /// (by a read of events in another thread).
    answers: VecDeque<Vec<u8>>,
    /// Answers still to come for requests whose caller stopped waiting: dropped when they come.
    stale_answers: usize,
    /// Asked between short sleeps and after signals; an error ends the wait.
    interrupt: Option<InterruptCheck>,
    /// How long a wait polls before it sleeps (see [`busy_wait`]).
    busy_poll: Duration,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("nodeid", &self.nodeid)
            .field("pending", &self.pending.len())
            .field("stale_answers", &self.stale_answers)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Connects to the node on `socket` for `service`, whose answers are records of kind
    /// `answer`.
    pub(crate) fn connect(socket: &Path, service: &str, answer: u32) -> Result<Session> {
        let (endpoint, nodeid) = connection::connect(socket, service)?;
        Ok(Session::new(endpoint, nodeid, answer))
    }

    /// Connects over `stream`, whose other end a node serves (an embedded node).
    pub(crate) fn connect_stream(
        stream: std::os::unix::net::UnixStream,
        service: &str,
        answer: u32,
    ) -> Result<Session> {
        let (endpoint, reply) =
            connection::handshake(stream, &connection::ConnectRequest::new(service))?;
        Ok(Session::new(endpoint, reply.nodeid, answer))
    }

    fn new(endpoint: Endpoint, nodeid: u32, answer: u32) -> Session {
        Session {
            endpoint,
            nodeid: NodeId(nodeid),
            answer,
            pending: VecDeque::new(),
            buffer: Vec::new(),
            answers: VecDeque::new(),
            stale_answers: 0,
            interrupt: None,
            busy_poll: busy_wait::DEFAULT,
        }
    }

    /// Sets how long a wait for the node polls before it sleeps (`CS_ERR_INVALID_PARAM`
    /// beyond [`busy_wait::MAX`]).
    pub(crate) fn set_busy_poll(&mut self, window: Duration) -> Result<()> {
        self.busy_poll = busy_wait::checked(window)?;
        Ok(())
    }

    /// How long a wait for the node polls before it sleeps.
    pub(crate) fn busy_poll(&self) -> Duration {
        self.busy_poll
    }

    /// Installs `check`, run at least every 100 ms and after every signal while a call waits;
    /// an error from it ends the wait with that error.
    pub(crate) fn set_interrupt_check(&mut self, check: Option<InterruptCheck>) {
        self.interrupt = check;
    }

    /// The node's id, from the handshake.
    pub(crate) fn nodeid(&self) -> NodeId {
        self.nodeid
    }

    /// Largest record body the request ring takes.
    pub(crate) fn payload_max(&self) -> usize {
        self.endpoint.tx.payload_max()
    }

    /// The descriptor that is readable when events may be waiting.
    pub(crate) fn wakeup(&self) -> BorrowedFd<'_> {
        self.endpoint.wakeup()
    }

    /// A new descriptor that is readable when the node wakes this side (its eventfd) or is gone
    /// (the socket's end of file), as [`crate::cpg::Handle::fd_get`]'s: for callers that wait
    /// themselves.
    pub(crate) fn watch(&self) -> Result<OwnedFd> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)
            .and_then(|epoll| {
                epoll.add(
                    self.endpoint.wakeup(),
                    EpollEvent::new(EpollFlags::EPOLLIN, 0),
                )?;
                let hangup = EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP;
                epoll.add(&self.endpoint.stream, EpollEvent::new(hangup, 1))?;
                Ok(epoll)
            })
            .map_err(|errno| Error::Library(format!("epoll: {errno}").into()))?;
        Ok(epoll.0)
    }

    /// Writes a one-way record of `len` bytes filled in place by `fill`. `CS_ERR_TRY_AGAIN`
    /// when the request ring is full (nothing was written), `CS_ERR_LIBRARY` then if the node
    /// is gone.
    pub(crate) fn send(
        &mut self,
        kind: u32,
        len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<()> {
        let claimed = self.endpoint.tx.claim(len).map_err(lost)?;
        let mut claim = match claimed {
            Ok(claim) => claim,
            Err(ClaimError::Full) => return Err(self.full()),
            Err(ClaimError::TooBig) => return Err(Error::TooBig("larger than the ring".into())),
        };
        fill(claim.payload_mut());
        if claim.commit(kind) {
            self.endpoint.wake_peer();
        }
        Ok(())
    }

    /// Why a record did not fit the request ring: the node is gone, or behind.
    fn full(&self) -> Error {
        if self.endpoint.peer_gone() {
            Error::Library("the node closed the connection".into())
        } else {
            Error::TryAgain("the request ring is full".into())
        }
    }

    /// Sends a request and waits for its answer record; returns the record's body (the service
    /// decodes it). Events that come first are kept for dispatch. A wait ended by the interrupt
    /// check abandons the request (it still reaches the node; its answer is dropped).
    pub(crate) fn request(&mut self, kind: u32, body: &[u8]) -> Result<Vec<u8>> {
        self.start_request(kind, body)?;
        loop {
            let waited = match self.poll_answer() {
                Ok(Some(answer)) => return Ok(answer),
                Ok(None) => self.wait(),
                Err(error) => Err(error),
            };
            if let Err(error) = waited {
                if matches!(error, Error::Interrupt(_)) {
                    self.abandon_request();
                }
                return Err(error);
            }
        }
    }

    /// Sends a request whose answer the caller then takes with [`Session::poll_answer`] (or
    /// gives up with [`Session::abandon_request`]); one at a time.
    pub(crate) fn start_request(&mut self, kind: u32, body: &[u8]) -> Result<()> {
        match self.endpoint.tx.push(kind, body).map_err(lost)? {
            Ok(wake) => {
                if wake {
                    self.endpoint.wake_peer();
                }
                Ok(())
            }
            Err(_) => Err(Error::TryAgain("the request ring is full".into())),
        }
    }

    /// The answer to the request in flight if it has come; events read meanwhile are kept for
    /// dispatch. Never waits: when the answer is not there, the session counts as asleep, so the
    /// node makes the descriptor readable with its next record. `CS_ERR_LIBRARY` when the node
    /// has gone away.
    pub(crate) fn poll_answer(&mut self) -> Result<Option<Vec<u8>>> {
        loop {
            if let Some(answer) = self.answers.pop_front() {
                return Ok(Some(answer));
            }
            match self.read_record()? {
                Some(kind) if kind == self.answer => self.keep_answer(),
                Some(kind) => self.pending.push_back((kind, self.buffer.clone())),
                // Asleep, and the node still there (its wake-up meanwhile is consumed: read on).
                None => {
                    if self.endpoint.rx.prepare_to_sleep()
                        && !sleep_once(&self.endpoint, Duration::ZERO, Some(Duration::ZERO))?
                    {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// Gives up waiting for the request in flight: it still reaches the node, and its answer
    /// is dropped.
    pub(crate) fn abandon_request(&mut self) {
        if self.answers.pop_front().is_none() {
            self.stale_answers += 1;
        }
    }

    /// Keeps the answer record in `buffer` for [`Session::poll_answer`], or drops it if its
    /// request was abandoned.
    fn keep_answer(&mut self) {
        if self.stale_answers > 0 {
            self.stale_answers -= 1;
        } else {
            self.answers.push_back(std::mem::take(&mut self.buffer));
        }
    }

    /// Hands events to `handler`, `decode` turning records into events (records it does not
    /// know are skipped). `One` waits for one event, `All` handles what is there without
    /// waiting, `OneNonblocking` handles one or returns `CS_ERR_TRY_AGAIN`, `Blocking` handles
    /// events until the connection ends. Returns how many were handled.
    pub(crate) fn dispatch<E>(
        &mut self,
        flags: DispatchFlags,
        decode: impl Fn(u32, &[u8]) -> Option<E>,
        mut handler: impl FnMut(E),
    ) -> Result<usize> {
        let mut count = 0;
        loop {
            match self.next_event(&decode)? {
                Some(event) => {
                    handler(event);
                    count += 1;
                    if matches!(flags, DispatchFlags::One | DispatchFlags::OneNonblocking) {
                        return Ok(count);
                    }
                }
                None => match flags {
                    DispatchFlags::All => return Ok(count),
                    DispatchFlags::OneNonblocking => {
                        return Err(Error::TryAgain("no event is waiting".into()));
                    }
                    DispatchFlags::One | DispatchFlags::Blocking => self.wait()?,
                },
            }
        }
    }

    /// The next event if one is there (never waits).
    fn next_event<E>(&mut self, decode: impl Fn(u32, &[u8]) -> Option<E>) -> Result<Option<E>> {
        while let Some((kind, body)) = self.pending.pop_front() {
            if let Some(event) = decode(kind, &body) {
                return Ok(Some(event));
            }
        }
        self.endpoint.clear_wakeup();
        while let Some(kind) = self.read_record()? {
            if kind == self.answer {
                self.keep_answer();
                continue;
            }
            if let Some(event) = decode(kind, &self.buffer) {
                return Ok(Some(event));
            }
        }
        Ok(None)
    }

    /// The next event if one is there (never waits), for callers that wait on the descriptor
    /// themselves. When there is none, the session counts as asleep, so the node makes the
    /// descriptor readable with its next record. `CS_ERR_LIBRARY` once no event is left and
    /// the node is gone.
    pub(crate) fn try_next_event<E>(
        &mut self,
        decode: impl Fn(u32, &[u8]) -> Option<E>,
    ) -> Result<Option<E>> {
        loop {
            if let Some(event) = self.next_event(&decode)? {
                return Ok(Some(event));
            }
            if self.endpoint.rx.prepare_to_sleep() {
                if self.endpoint.peer_gone() {
                    return Err(Error::Library("the node closed the connection".into()));
                }
                return Ok(None);
            }
        }
    }

    /// Waits until an event may be there or `timeout` passes; false on timeout. Returns at
    /// once if records wait. `CS_ERR_LIBRARY` when the node has gone away.
    pub(crate) fn wait_for_event(&mut self, timeout: Option<Duration>) -> Result<bool> {
        if !self.pending.is_empty() || !self.endpoint.rx.prepare_to_sleep() {
            return Ok(true);
        }
        self.sleep(timeout)
    }

    /// Copies the next record of the event ring into `buffer` and releases it; its kind.
    fn read_record(&mut self) -> Result<Option<u32>> {
        let Some(entry) = self.endpoint.rx.read_next().map_err(lost)? else {
            return Ok(None);
        };
        self.endpoint.rx.copy(&entry, &mut self.buffer);
        let kind = entry.kind;
        if self.endpoint.rx.release(entry) {
            self.endpoint.wake_peer();
        }
        Ok(Some(kind))
    }

    /// Sleeps until the node writes something (or goes away).
    fn wait(&mut self) -> Result<()> {
        if !self.endpoint.rx.prepare_to_sleep() {
            return Ok(());
        }
        self.sleep(None).map(|_| ())
    }

    /// Sleeps (marked asleep already) until the node wakes this side, goes away, or `timeout`
    /// passes (false then); with an interrupt check, in slices, asking it after each.
    fn sleep(&mut self, timeout: Option<Duration>) -> Result<bool> {
        let (endpoint, spin) = (&self.endpoint, self.busy_poll);
        sleep_interruptible(&mut self.interrupt, timeout, |timeout| {
            sleep_once(endpoint, spin, timeout)
        })
    }

    /// After `CS_ERR_TRY_AGAIN`, for callers that wait on the descriptor themselves: asks the
    /// node to make it readable once it has released room for a record of `len` bytes; false
    /// when the room is there already (retry at once).
    pub(crate) fn notify_when_writable(&mut self, len: usize) -> Result<bool> {
        let record = len.min(self.endpoint.tx.payload_max());
        self.endpoint.tx.prepare_to_wait(record).map_err(lost)
    }
}

/// Sleeps with `sleep_once` until it returns true or `timeout` passes (false then); with an
/// interrupt check, in slices, asking it after each (its error ends the wait).
pub(crate) fn sleep_interruptible(
    interrupt: &mut Option<InterruptCheck>,
    timeout: Option<Duration>,
    mut sleep_once: impl FnMut(Option<Duration>) -> Result<bool>,
) -> Result<bool> {
    let Some(check) = interrupt else {
        return sleep_once(timeout);
    };
    let deadline = timeout.map(|timeout| std::time::Instant::now() + timeout);
    loop {
        let left = deadline.map(|d| d.saturating_duration_since(std::time::Instant::now()));
        let slice = left.map_or(INTERRUPT_SLICE, |left| left.min(INTERRUPT_SLICE));
        let ready = sleep_once(Some(slice))?;
        check()?;
        if ready {
            return Ok(true);
        }
        if left.is_some_and(|left| left <= slice) {
            return Ok(false);
        }
    }
}

/// One sleep until the node wakes `endpoint`'s side, goes away (`CS_ERR_LIBRARY`), or
/// `timeout` passes (false then), polling for `spin` before it sleeps; a signal counts as a
/// wake-up.
pub(crate) fn sleep_once(
    endpoint: &Endpoint,
    spin: Duration,
    timeout: Option<Duration>,
) -> Result<bool> {
    sleep_once_then(endpoint, spin, timeout, || {})
}

/// [`sleep_once`], running `after_poll` between the poll and the look at what it reported (a
/// test puts the node's wake-up there).
pub(crate) fn sleep_once_then(
    endpoint: &Endpoint,
    spin: Duration,
    timeout: Option<Duration>,
    after_poll: impl FnOnce(),
) -> Result<bool> {
    let mut fds = [
        PollFd::new(endpoint.stream.as_fd(), PollFlags::POLLIN),
        PollFd::new(endpoint.wakeup(), PollFlags::POLLIN),
    ];
    let ready = match busy_wait::poll_spinning(&mut fds, spin, timeout) {
        Ok(ready) => ready > 0,
        Err(nix::errno::Errno::EINTR) => true,
        Err(errno) => return Err(Error::Library(format!("poll: {errno}").into())),
    };
    after_poll();
    if fds[0].revents().is_some_and(|r| !r.is_empty()) {
        let mut byte = [0u8; 1];
        match (&endpoint.stream).read(&mut byte) {
            Ok(0) | Err(_) => {
                return Err(Error::Library("the node closed the connection".into()));
            }
            Ok(_) => {}
        }
    }
    // Consume only a wake-up this poll reported: one that comes after a poll that timed out
    // must stay pending, or it is lost (the node cleared our sleeping mark when it gave it,
    // and the record it was for waits in the ring unseen).
    let woken = fds[1]
        .revents()
        .is_some_and(|r| r.contains(PollFlags::POLLIN));
    if woken {
        endpoint.clear_wakeup();
    }
    Ok(ready)
}

#[allow(clippy::needless_pass_by_value, reason = "used as a map_err function")]
fn lost(error: Corrupt) -> Error {
    Error::Library(format!("the connection to the node is broken: {error}").into())
}
