//! The CPG connection behind `totemcast.cpg.Handle` (no `PyO3` here).
//!
//! It speaks the same records as [`crate::cpg::Handle`] over the same rings, and adds what the
//! Python front needs and the Rust handle does not offer yet:
//!
//! * **Non-blocking steps.** [`Client::send_request`] / [`Client::poll_answer`] and
//!   [`Client::read_events`] never wait; the caller waits on [`Client::fds`] in slices with
//!   the GIL released and checks for Ctrl-C in between.
//! * **A wake-up descriptor that tells the truth.** After every operation [`Client::settle`]
//!   either marks the event ring as asleep (the node then writes the eventfd on its next event)
//!   or, when events are already waiting (in the ring or in [`Client::pending`]), makes the
//!   eventfd readable itself. So `select`/asyncio on `fd_get()` see every event without polling.
//! * **One copy per delivery.** A payload is copied once, from the ring into a `Bytes`
//!   (`crate::cpg::Handle` copies into a scratch buffer first).
//! * **Batches.** Multicasts are committed with one wake-up of the node per batch, events are
//!   read many per call.
//! * **Interrupted requests.** A request whose caller gave up waiting (Ctrl-C) keeps its place:
//!   its answer is recognised and applied when it comes.
//!
//! When `crate::cpg::Handle` grows these (a wait with a timeout, arming the descriptor, one
//! event at a time), this module can shrink to a thin adapter over it.

use std::collections::VecDeque;
use std::io::Read as _;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use bytes::Bytes;

use crate::api::Guarantee;
use crate::error::{Error, Result};
use crate::ids::NodeId;
use crate::ipc::connection::{self, Endpoint};
use crate::ipc::ring::{ClaimError, Corrupt};
use crate::node::cpg::records;
use crate::node::cpg::service::check_name;

pub(crate) use crate::node::cpg::ClientEvent as Event;

/// Room the node needs beyond a message in the rings (its CPG header); as `crate::cpg::Handle`.
const HEADER_ROOM: usize = 256;

/// Most event bytes released between unconditional wake-ups of the node.
///
/// The node does not reliably mark itself as waiting for room when it backlogs an event
/// (`node/clients.rs` asks `prepare_to_wait(0)`, which finds room for an empty record and clears
/// the mark), so a client that woke it only on the mark could strand the backlog. A backlog forms
/// only when the event ring (capacity C) holds more than C - R bytes for a record of R <= C/2;
/// waking the node every T <= C/4 bytes released means some wake-up comes when at least C - T >= R
/// is free, so the node's flush goes through. At one wake-up per MiB read the cost is nil.
const WAKE_EVERY_BYTES_MAX: usize = 1 << 20;

/// A request sent and not answered yet.
#[derive(Debug)]
struct InFlight {
    kind: u32,
    body: Bytes,
}

/// Descriptors to wait on, duplicated so that a waiter can poll them without holding the
/// client (which another thread may use or finalize meanwhile).
#[derive(Debug)]
pub(crate) struct Fds {
    /// The client's wake-up eventfd (what `fd_get()` returns).
    pub(crate) wakeup: OwnedFd,
    /// The socket to the node: readable (end of file) when the node goes away.
    pub(crate) stream: UnixStream,
}

/// One connection to the node's CPG service.
#[derive(Debug)]
pub(crate) struct Client {
    endpoint: Endpoint,
    nodeid: NodeId,
    /// The group joined (set when the node accepted the join, cleared when it accepted a leave).
    group: Option<Bytes>,
    /// Requests sent, oldest first; answers come in the same order.
    in_flight: VecDeque<InFlight>,
    /// Events read while looking for an answer, or handed back by the dispatcher, in order.
    pub(crate) pending: VecDeque<Event>,
    /// Event bytes released since the node was last woken for room.
    released: usize,
    /// Wake the node each time this many event bytes were released.
    wake_every: usize,
}

/// What came back for a request.
pub(crate) type Answer = Result<Vec<u8>>;

impl Client {
    /// Connects to the node listening on `socket` (blocks for the handshake).
    pub(crate) fn connect(socket: &Path) -> Result<Client> {
        let (endpoint, nodeid) = connection::connect(socket, "cpg")?;
        let mut client = Client {
            endpoint,
            nodeid: NodeId(nodeid),
            group: None,
            in_flight: VecDeque::new(),
            pending: VecDeque::new(),
            released: 0,
            wake_every: 0,
        };
        // The event ring is not measured on this side; the node gives both rings one size.
        client.wake_every = (client.endpoint.tx.capacity() / 4).clamp(1, WAKE_EVERY_BYTES_MAX);
        client.settle();
        Ok(client)
    }

    /// Duplicates of the descriptors to wait on.
    pub(crate) fn fds(&self) -> Result<Fds> {
        let failed = |error: std::io::Error| Error::Library(format!("dup: {error}").into());
        Ok(Fds {
            wakeup: self
                .endpoint
                .wakeup()
                .try_clone_to_owned()
                .map_err(failed)?,
            stream: self.endpoint.stream.try_clone().map_err(failed)?,
        })
    }

    /// The node's id (from the handshake).
    pub(crate) fn nodeid(&self) -> NodeId {
        self.nodeid
    }

    /// The group this handle joined, if any.
    pub(crate) fn group(&self) -> Option<&Bytes> {
        self.group.as_ref()
    }

    /// The largest message this handle can send.
    pub(crate) fn max_atomic_msgsize(&self) -> usize {
        self.endpoint.tx.payload_max() - HEADER_ROOM
    }

    /// Ends the connection for the node and for every waiter, whoever else holds a duplicate
    /// of the socket.
    pub(crate) fn shutdown(&self) {
        let _ = self.endpoint.stream.shutdown(std::net::Shutdown::Both);
    }

    /// Writes a request (JOIN, LEAVE, MEMBERSHIP_GET, LOCAL_GET) into the ring; its answer comes
    /// from [`Client::poll_answer`]. `CS_ERR_TRY_AGAIN` if the ring is full.
    pub(crate) fn send_request(&mut self, kind: u32, body: &[u8]) -> Result<()> {
        if matches!(
            kind,
            records::JOIN | records::LEAVE | records::MEMBERSHIP_GET
        ) {
            check_name(body)?;
        }
        match self.endpoint.tx.push(kind, body).map_err(lost)? {
            Ok(wake) => {
                if wake {
                    self.endpoint.wake_peer();
                }
            }
            Err(_) => return Err(Error::TryAgain("the request ring is full".into())),
        }
        self.in_flight.push_back(InFlight {
            kind,
            body: Bytes::copy_from_slice(body),
        });
        Ok(())
    }

    /// Reads records until the answer to the newest request arrives (events go to
    /// [`Client::pending`], answers to requests given up on are applied and dropped). `None`:
    /// not there yet; arm with [`Client::arm`] and wait.
    pub(crate) fn poll_answer(&mut self) -> Result<Option<Answer>> {
        if self.in_flight.is_empty() {
            return Ok(None);
        }
        self.endpoint.clear_wakeup();
        loop {
            let Some(entry) = self.endpoint.rx.read_next().map_err(lost)? else {
                return Ok(None);
            };
            let body = self.endpoint.rx.payload(&entry);
            let answer = if entry.kind == records::ANSWER {
                Some(decode_answer(body))
            } else {
                if let Some(event) = records::decode_event(entry.kind, body) {
                    self.pending.push_back(event);
                }
                None
            };
            self.released += entry.len();
            let wake = self.endpoint.rx.release(entry);
            self.wake_for_room(wake);
            if let Some(answer) = answer {
                let request = self
                    .in_flight
                    .pop_front()
                    .ok_or_else(|| Error::Library("an answer without a request".into()))?;
                self.apply(&request, answer.as_ref().map(|_| ()));
                if self.in_flight.is_empty() {
                    return Ok(Some(answer));
                }
            }
        }
    }

    /// Keeps the client's view of its membership in step with accepted joins and leaves.
    fn apply(&mut self, request: &InFlight, result: std::result::Result<(), &Error>) {
        if result.is_ok() {
            match request.kind {
                records::JOIN => self.group = Some(request.body.clone()),
                records::LEAVE => self.group = None,
                _ => {}
            }
        }
    }

    /// Moves events into `out`, first those pending, then from the ring, until it holds `max`
    /// events or the payloads read reach `max_bytes` (at least one event is read). Never waits.
    pub(crate) fn read_events(
        &mut self,
        max: usize,
        max_bytes: usize,
        out: &mut VecDeque<Event>,
    ) -> Result<()> {
        while out.len() < max {
            match self.pending.pop_front() {
                Some(event) => out.push_back(event),
                None => break,
            }
        }
        if out.len() >= max {
            return Ok(());
        }
        self.endpoint.clear_wakeup();
        let mut bytes = 0usize;
        let mut wake = false;
        while out.len() < max && bytes < max_bytes {
            let Some(entry) = self.endpoint.rx.read_next().map_err(lost)? else {
                break;
            };
            let body = self.endpoint.rx.payload(&entry);
            bytes += body.len();
            if entry.kind == records::ANSWER {
                // The answer to a request whose caller gave up waiting (Ctrl-C).
                let answer = decode_answer(body);
                if let Some(request) = self.in_flight.pop_front() {
                    self.apply(&request, answer.as_ref().map(|_| ()));
                }
            } else if let Some(event) = records::decode_event(entry.kind, body) {
                out.push_back(event);
            }
            self.released += entry.len();
            wake |= self.endpoint.rx.release_batched(entry);
        }
        let wake = wake && self.endpoint.rx.take_producer_wake();
        self.wake_for_room(wake);
        Ok(())
    }

    /// Wakes the node after releases: when it asked for it (`asked`), and once per
    /// `wake_every` bytes released in any case (see [`WAKE_EVERY_BYTES_MAX`]).
    fn wake_for_room(&mut self, asked: bool) {
        if asked || self.released >= self.wake_every {
            self.released = 0;
            self.endpoint.wake_peer();
        }
    }

    /// Marks the client as asleep on its event ring, so the node writes the wake-up eventfd
    /// with its next record. False if records are already waiting in the ring (read them).
    pub(crate) fn arm(&mut self) -> bool {
        self.endpoint.rx.prepare_to_sleep()
    }

    /// Leaves the wake-up descriptor truthful: readable if events wait (pending or in the
    /// ring), else armed so that the node makes it readable with the next event.
    pub(crate) fn settle(&mut self) {
        self.endpoint.clear_wakeup();
        if !self.pending.is_empty() || !self.endpoint.rx.prepare_to_sleep() {
            self.signal_self();
        }
    }

    /// Makes the wake-up descriptor readable.
    pub(crate) fn signal_self(&self) {
        let _ = nix::unistd::write(self.endpoint.wakeup(), &1u64.to_ne_bytes());
    }

    /// Consumes pending wake-ups.
    pub(crate) fn clear_wakeup(&self) {
        self.endpoint.clear_wakeup();
    }

    /// Multicasts one message of `len` bytes written by `fill` (which sees exactly `len`
    /// bytes). Nothing is committed if `fill` fails. `Ok(None)`: the ring is full (nothing was
    /// accepted; the producer is marked as waiting, so the node wakes this client when it makes
    /// room). `commit_now` wakes the node if it sleeps; batches wake it once with
    /// [`Client::wake_node`].
    pub(crate) fn mcast<E>(
        &mut self,
        guarantee: Guarantee,
        len: usize,
        commit_now: bool,
        fill: impl FnOnce(&mut [u8]) -> std::result::Result<(), E>,
    ) -> std::result::Result<Option<()>, McastError<E>> {
        if self.group.is_none() {
            return Err(McastError::Cs(Error::NotExist(
                "this handle has not joined a group".into(),
            )));
        }
        let limit = self.max_atomic_msgsize();
        if len > limit {
            return Err(McastError::Cs(Error::TooBig(
                format!("message of {len} bytes exceeds the limit of {limit} bytes").into(),
            )));
        }
        loop {
            let mut claim = match self.endpoint.tx.claim(1 + len).map_err(lost)? {
                Ok(claim) => claim,
                Err(ClaimError::Full) => {
                    if self.endpoint.tx.prepare_to_wait(1 + len).map_err(lost)? {
                        return Ok(None);
                    }
                    continue;
                }
                Err(ClaimError::TooBig) => {
                    return Err(McastError::Cs(Error::TooBig("larger than the ring".into())));
                }
            };
            let out = claim.payload_mut();
            out[0] = u32::from(guarantee) as u8;
            fill(&mut out[1..]).map_err(McastError::Fill)?;
            if commit_now {
                if claim.commit(records::MCAST) {
                    self.endpoint.wake_peer();
                }
            } else {
                claim.commit_batched(records::MCAST);
            }
            return Ok(Some(()));
        }
    }

    /// Wakes the node if it sleeps (after multicasts committed without waking it).
    pub(crate) fn wake_node(&self) {
        if self.endpoint.tx.take_wake() {
            self.endpoint.wake_peer();
        }
    }
}

/// Why a multicast failed: a `cs_error_t`, or the caller's `fill`.
#[derive(Debug)]
pub(crate) enum McastError<E> {
    /// A totemcast error.
    Cs(Error),
    /// The error of the function that writes the message.
    Fill(E),
}

impl<E> From<Error> for McastError<E> {
    fn from(error: Error) -> Self {
        McastError::Cs(error)
    }
}

/// What a wait on the node's descriptors saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Woken {
    /// The wake-up descriptor or the cancel descriptor is readable, or the time ran out.
    Maybe,
    /// The node closed the connection (or the client shut it down).
    Closed,
}

/// Waits up to `timeout` for the wake-up descriptor, the socket or `cancel` (readable when the
/// handle is finalized). Never consumes a wake-up.
pub(crate) fn wait(fds: &Fds, cancel: &OwnedFd, timeout: std::time::Duration) -> Result<Woken> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let millis = u16::try_from(timeout.as_millis().max(1)).unwrap_or(u16::MAX);
    let mut set = [
        PollFd::new(fds.wakeup.as_fd(), PollFlags::POLLIN),
        PollFd::new(fds.stream.as_fd(), PollFlags::POLLIN),
        PollFd::new(cancel.as_fd(), PollFlags::POLLIN),
    ];
    match poll(&mut set, PollTimeout::from(millis)) {
        Ok(_) | Err(nix::errno::Errno::EINTR) => {}
        Err(errno) => return Err(Error::Library(format!("poll: {errno}").into())),
    }
    if set[1].revents().is_some_and(|r| !r.is_empty()) {
        // The node writes nothing on the socket after the handshake: readable means closed.
        let mut byte = [0u8; 1];
        match (&fds.stream).read(&mut byte) {
            Ok(0) | Err(_) => return Ok(Woken::Closed),
            Ok(_) => {}
        }
    }
    Ok(Woken::Maybe)
}

fn decode_answer(body: &[u8]) -> Answer {
    let code = body
        .get(..4)
        .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
        .ok_or_else(|| Error::Library("malformed answer".into()))?;
    let rest = body[4..].to_vec();
    if code == 1 {
        return Ok(rest);
    }
    let detail = String::from_utf8_lossy(&rest).into_owned();
    Err(Error::from_code(code, detail.clone())
        .unwrap_or_else(|_| Error::Library(format!("unknown code {code}: {detail}").into())))
}

/// The members in a MEMBERSHIP_GET answer.
pub(crate) fn decode_members(body: &[u8]) -> Result<Vec<(NodeId, u32)>> {
    let count = body.get(..4).map_or(0, |b| {
        u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize
    });
    let entries = body.get(4..).unwrap_or_default();
    if entries.len() != count * 8 {
        return Err(Error::Library("malformed membership answer".into()));
    }
    Ok(entries
        .chunks_exact(8)
        .map(|e| {
            (
                NodeId(u32::from_le_bytes(e[..4].try_into().expect("4 bytes"))),
                u32::from_le_bytes(e[4..].try_into().expect("4 bytes")),
            )
        })
        .collect())
}

/// The node id in a LOCAL_GET answer.
pub(crate) fn decode_nodeid(body: &[u8]) -> Result<NodeId> {
    let bytes: [u8; 4] = body
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| Error::Library("malformed local_get answer".into()))?;
    Ok(NodeId(u32::from_le_bytes(bytes)))
}

#[allow(clippy::needless_pass_by_value, reason = "used as a map_err function")]
fn lost(error: Corrupt) -> Error {
    Error::Library(format!("the connection to the node is broken: {error}").into())
}
