//! What the client libraries share: a session with the node over the IPC handshake and two
//! rings — requests that wait for their answer (keeping the events that come first), one-way
//! records written straight into the request ring, and dispatch of event records with the
//! `cs_dispatch_flags_t` rules. Each service's handle decodes its own records.

use std::collections::VecDeque;
use std::io::Read as _;
use std::os::fd::{AsFd, BorrowedFd, RawFd};
use std::path::Path;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::api::DispatchFlags;
use crate::error::{Error, Result};
use crate::ids::NodeId;
use crate::ipc::connection::{self, Endpoint};
use crate::ipc::ring::{ClaimError, Corrupt};

/// A client's connection to one service of its node.
#[derive(Debug)]
pub(crate) struct Session {
    endpoint: Endpoint,
    nodeid: NodeId,
    /// The kind of answer records.
    answer: u32,
    /// Event records read while waiting for an answer, in order: (kind, body).
    pending: VecDeque<(u32, Vec<u8>)>,
    buffer: Vec<u8>,
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
        }
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

    /// Writes a one-way record of `len` bytes filled in place by `fill`. `CS_ERR_TRY_AGAIN`
    /// when the request ring is full (nothing was written).
    pub(crate) fn send(
        &mut self,
        kind: u32,
        len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<()> {
        let mut claim = match self.endpoint.tx.claim(len).map_err(lost)? {
            Ok(claim) => claim,
            Err(ClaimError::Full) => {
                return Err(Error::TryAgain("the request ring is full".into()));
            }
            Err(ClaimError::TooBig) => return Err(Error::TooBig("larger than the ring".into())),
        };
        fill(claim.payload_mut());
        if claim.commit(kind) {
            self.endpoint.wake_peer();
        }
        Ok(())
    }

    /// Sends a request and waits for its answer record; returns the record's body (the service
    /// decodes it). Events that come first are kept for dispatch.
    pub(crate) fn request(&mut self, kind: u32, body: &[u8]) -> Result<Vec<u8>> {
        match self.endpoint.tx.push(kind, body).map_err(lost)? {
            Ok(wake) => {
                if wake {
                    self.endpoint.wake_peer();
                }
            }
            Err(_) => return Err(Error::TryAgain("the request ring is full".into())),
        }
        loop {
            match self.read_record()? {
                Some(kind) if kind == self.answer => return Ok(std::mem::take(&mut self.buffer)),
                Some(kind) => self.pending.push_back((kind, self.buffer.clone())),
                None => self.wait()?,
            }
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
            if let Some(event) = decode(kind, &self.buffer) {
                return Ok(Some(event));
            }
        }
        Ok(None)
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
        let mut fds = [
            PollFd::new(self.endpoint.stream.as_fd(), PollFlags::POLLIN),
            PollFd::new(self.endpoint.wakeup(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(errno) => return Err(Error::Library(format!("poll: {errno}").into())),
        }
        if fds[0].revents().is_some_and(|r| !r.is_empty()) {
            let mut byte = [0u8; 1];
            match (&self.endpoint.stream).read(&mut byte) {
                Ok(0) | Err(_) => {
                    return Err(Error::Library("the node closed the connection".into()));
                }
                Ok(_) => {}
            }
        }
        self.endpoint.clear_wakeup();
        Ok(())
    }

    /// The wake-up descriptor as a raw fd (`*_fd_get`).
    pub(crate) fn raw_fd(&self) -> RawFd {
        self.endpoint.wakeup_fd()
    }
}

#[allow(clippy::needless_pass_by_value, reason = "used as a map_err function")]
fn lost(error: Corrupt) -> Error {
    Error::Library(format!("the connection to the node is broken: {error}").into())
}
