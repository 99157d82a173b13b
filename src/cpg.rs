//! The CPG client library (closed process groups), Corosync's `cpg_*` API in Rust: a [`Handle`]
//! talks to its node over a Unix socket handshake and two shared-memory rings.
//!
//! ```no_run
//! use totemcast::api::{DispatchFlags, Guarantee};
//! use totemcast::cpg::{Event, Handle};
//!
//! let mut handle = Handle::connect("/run/totemcast/totemcast.sock")?;
//! handle.join("workers")?;
//! handle.mcast_joined(Guarantee::Agreed, &[b"hello"])?;
//! handle.dispatch(DispatchFlags::One, |event| {
//!     if let Event::ConfChg { members, .. } = event {
//!         println!("{} members", members.len());
//!     }
//! })?;
//! # Ok::<(), totemcast::Error>(())
//! ```
//!
//! Zero copy both ways: a delivered [`Message`] is a read-only view of the node's event ring
//! (see there for what holding it costs), and [`Handle::zcb_alloc`] hands out a buffer in
//! shared memory that [`Handle::zcb_mcast_joined`] sends without the library copying it.

use std::collections::VecDeque;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};

use crate::api::{DispatchFlags, FlowControlState, Guarantee, IterationType};
use crate::client::{self, busy_wait};
use crate::error::{Error, Result};
use crate::ids::{NodeId, RingId};
use crate::ipc::connection::{self, ConnectRequest, Endpoint};
use crate::ipc::ring::{ClaimError, Corrupt, Entry, Pinned};
use crate::ipc::zcb::Arena;
use crate::node::clients::FLOW_CONTROL_ENABLED;
use crate::node::cpg::records;
use crate::node::cpg::service::check_name;

pub use crate::client::InterruptCheck;
pub use crate::ipc::zcb::ZcbBuffer;
pub use crate::node::cpg::Address;

/// Most message bytes in one request record of a large message.
const PART_MAX: usize = 1 << 20;

/// A delivered message: a read-only view of the node's event ring (zero copy) or, for a
/// message larger than a ring record, a buffer of its own. Cheap to clone; `to_vec()` or
/// [`Message::to_bytes`] keep a copy that holds no ring space.
///
/// A view holds its ring space until its last clone is dropped (in any thread, at any time:
/// inside a `dispatch` callback, after it, or while the handle waits in
/// [`Handle::wait_for_event`]); that drop gives the space back at once and wakes the node if
/// it waits for it. While held views fill the ring, the node keeps this handle's events
/// waiting and writes them as views are dropped: holding views is a legitimate way to slow
/// one's own deliveries down, but only for a while — a client that releases nothing for 5 s
/// while events wait (or has 512 MiB waiting) is disconnected. Keep a copy to hold messages
/// longer.
#[derive(Clone)]
pub struct Message(Repr);

#[derive(Clone)]
enum Repr {
    /// The record and where the message starts in it.
    Ring(Arc<Pinned>, usize),
    Heap(Bytes),
}

impl Message {
    /// Whether this is a view of the ring (holding ring space while it lives).
    #[must_use]
    pub fn is_zero_copy(&self) -> bool {
        matches!(self.0, Repr::Ring(..))
    }

    /// A copy that holds no ring space.
    #[must_use]
    pub fn to_bytes(&self) -> Bytes {
        match &self.0 {
            Repr::Ring(..) => Bytes::copy_from_slice(self),
            Repr::Heap(bytes) => bytes.clone(),
        }
    }
}

impl From<Bytes> for Message {
    fn from(bytes: Bytes) -> Message {
        Message(Repr::Heap(bytes))
    }
}

impl std::ops::Deref for Message {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.0 {
            Repr::Ring(record, start) => &record[*start..],
            Repr::Heap(bytes) => bytes,
        }
    }
}

impl AsRef<[u8]> for Message {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl PartialEq for Message {
    fn eq(&self, other: &Message) -> bool {
        **self == **other
    }
}

impl Eq for Message {}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = &self[..self.len().min(32)];
        write!(f, "Message({} bytes: {shown:?}", self.len())?;
        f.write_str(if self.len() > 32 { "…)" } else { ")" })
    }
}

/// What [`Handle::dispatch`] hands over, in delivery order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A message of the joined group.
    Deliver {
        /// The group.
        group: Bytes,
        /// The sender's node.
        nodeid: NodeId,
        /// The sender's process.
        pid: u32,
        /// The message.
        payload: Message,
    },
    /// A membership change of the joined group.
    ConfChg {
        /// The group.
        group: Bytes,
        /// Members after the change, sorted by (node, pid).
        members: Vec<Address>,
        /// Who left, with why.
        left: Vec<Address>,
        /// Who joined, with why.
        joined: Vec<Address>,
    },
    /// The totem configuration (after every membership sync, and at once when asked for with
    /// [`Options::initial_totem_conf`]).
    TotemConfChg {
        /// The ring.
        ring: RingId,
        /// Its nodes, sorted.
        nodes: Vec<NodeId>,
    },
}

/// An entry of [`Handle::iteration`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IterationEntry {
    /// The group.
    pub group: Bytes,
    /// The member's node (0 for [`IterationType::NameOnly`]).
    pub nodeid: NodeId,
    /// The member's process (0 for [`IterationType::NameOnly`]).
    pub pid: u32,
}

/// How a handle is set up (`cpg_model_initialize`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// Deliver the current totem configuration at once
    /// (`CPG_MODEL_V1_DELIVER_INITIAL_TOTEM_CONF`).
    pub initial_totem_conf: bool,
}

/// A large message arriving in parts.
struct Assembly {
    group: Bytes,
    nodeid: NodeId,
    pid: u32,
    message: Vec<u8>,
    missing: usize,
}

/// A connection to the node's CPG service: at most one group at a time (as in Corosync).
/// Dropping it finalizes.
pub struct Handle {
    /// `None` once finalized.
    endpoint: Option<Endpoint>,
    /// What `fd_get` returns: readable when the node wakes this side (its eventfd) or when the
    /// node is gone (the socket's end of file).
    watch: Epoll,
    arena: Arena,
    nodeid: NodeId,
    max_message_size: usize,
    /// The group joined (set when the node accepted the join, cleared when it accepted a leave).
    group: Option<Bytes>,
    /// Events read while waiting for an answer, in order.
    pending: VecDeque<Event>,
    assembly: Option<Assembly>,
    buffer: Vec<u8>,
    /// Requests whose wait was interrupted, oldest first: their answers come before any
    /// other's and are applied when they do.
    abandoned: VecDeque<(u32, Bytes)>,
    /// Asked between short sleeps and after signals; an error ends the wait.
    interrupt: Option<InterruptCheck>,
    /// How long a wait polls before it sleeps (see [`Handle::set_busy_poll`]).
    busy_poll: Duration,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle")
            .field("nodeid", &self.nodeid)
            .field("group", &self.group)
            .field("finalized", &self.endpoint.is_none())
            .finish_non_exhaustive()
    }
}

impl Handle {
    /// Connects to the node listening on `socket` (`cpg_initialize`).
    pub fn connect(socket: impl AsRef<Path>) -> Result<Handle> {
        Handle::connect_with(socket, Options::default())
    }

    /// Connects to the node listening on `socket` with `options` (`cpg_model_initialize`).
    pub fn connect_with(socket: impl AsRef<Path>, options: Options) -> Result<Handle> {
        let (endpoint, answer) = connection::connect_with(socket.as_ref(), &request(options))?;
        Handle::new(endpoint, &answer)
    }

    /// Connects over `stream`, a socket whose other end a node serves (an embedded node's
    /// local handles use a socket pair).
    pub fn connect_stream(stream: UnixStream, options: Options) -> Result<Handle> {
        let (endpoint, answer) = connection::handshake(stream, &request(options))?;
        Handle::new(endpoint, &answer)
    }

    fn new(endpoint: Endpoint, answer: &connection::ConnectAnswer) -> Result<Handle> {
        let watch = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)
            .and_then(|epoll| {
                epoll.add(endpoint.wakeup(), EpollEvent::new(EpollFlags::EPOLLIN, 0))?;
                let hangup = EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP;
                epoll.add(&endpoint.stream, EpollEvent::new(hangup, 1))?;
                Ok(epoll)
            })
            .map_err(|errno| Error::Library(format!("epoll: {errno}").into()))?;
        let arena = Arena::new(
            Arc::clone(endpoint.region()),
            endpoint.arena,
            endpoint.tx.head_watch(),
            Some(
                endpoint
                    .peer_link()
                    .map_err(|error| Error::Library(format!("dup: {error}").into()))?,
            ),
        );
        let max_message_size = match usize::try_from(answer.max_message_size) {
            Ok(0) | Err(_) => endpoint.tx.payload_max() - 256,
            Ok(max) => max,
        };
        Ok(Handle {
            endpoint: Some(endpoint),
            watch,
            arena,
            nodeid: NodeId(answer.nodeid),
            max_message_size,
            group: None,
            pending: VecDeque::new(),
            assembly: None,
            buffer: Vec::new(),
            abandoned: VecDeque::new(),
            interrupt: None,
            busy_poll: busy_wait::DEFAULT,
        })
    }

    /// This node's id (from the handshake; no request).
    #[must_use]
    pub fn nodeid(&self) -> NodeId {
        self.nodeid
    }

    /// Installs `check`, run at least every 100 ms and after every signal while a call of this
    /// handle waits (for a request's answer, for room in the request ring, for an event). An
    /// error from it ends the wait with that error: a binding uses it to honour Ctrl-C. A
    /// request whose wait ends so still takes effect at the node; its answer is applied when
    /// it comes (a join then counts as joined).
    pub fn set_interrupt_check(&mut self, check: Option<InterruptCheck>) {
        self.interrupt = check;
    }

    /// Sets how long a wait for the node (for events, an answer or room) polls without
    /// sleeping before it sleeps: 50 µs by default, `Duration::ZERO` to sleep at once,
    /// `CS_ERR_INVALID_PARAM` above 10 ms. A reply within the window costs no wake-up of this
    /// process; a longer wait costs one window of CPU. Waits on [`Handle::fd_get`] are the
    /// caller's and never poll.
    pub fn set_busy_poll(&mut self, window: Duration) -> Result<()> {
        self.busy_poll = busy_wait::checked(window)?;
        Ok(())
    }

    /// How long a wait for the node polls before it sleeps (see [`Handle::set_busy_poll`]).
    #[must_use]
    pub fn busy_poll(&self) -> Duration {
        self.busy_poll
    }

    /// Makes the descriptor ([`Handle::fd_get`]) become readable with the next event; false
    /// when an event is already waiting (read it first). For callers that wait on the
    /// descriptor themselves.
    pub fn arm_descriptor(&mut self) -> Result<bool> {
        self.wait_for_event(Some(Duration::ZERO))
            .map(|ready| !ready)
    }

    fn endpoint_ref(&self) -> Result<&Endpoint> {
        self.endpoint
            .as_ref()
            .ok_or_else(|| Error::BadHandle("the handle was finalized".into()))
    }

    fn endpoint(&mut self) -> Result<&mut Endpoint> {
        self.endpoint
            .as_mut()
            .ok_or_else(|| Error::BadHandle("the handle was finalized".into()))
    }

    /// `cpg_finalize`: closes the connection (the node reports this process as gone from its
    /// group). Every later call returns `CS_ERR_BAD_HANDLE`, as does a second finalize.
    pub fn finalize(&mut self) -> Result<()> {
        self.endpoint()?;
        self.endpoint = None;
        self.arena.close();
        self.pending.clear();
        self.assembly = None;
        self.group = None;
        Ok(())
    }

    /// `cpg_join`: joins `group` (1–128 bytes). The join is complete when its confchg arrives.
    pub fn join(&mut self, group: impl AsRef<[u8]>) -> Result<()> {
        let group = group.as_ref();
        self.endpoint()?;
        check_name(group)?;
        self.request(records::JOIN, group)?;
        self.group = Some(Bytes::copy_from_slice(group));
        Ok(())
    }

    /// `cpg_leave`: leaves `group`; this handle receives the leave's confchg and may join again.
    pub fn leave(&mut self, group: impl AsRef<[u8]>) -> Result<()> {
        self.request(records::LEAVE, group.as_ref())?;
        self.group = None;
        Ok(())
    }

    /// `cpg_mcast_joined`: multicasts the concatenation of `buffers` to the joined group.
    /// `CS_ERR_TRY_AGAIN` when the request ring has no room (nothing was accepted);
    /// `CS_ERR_NOT_EXIST` before a join; `CS_ERR_TOO_BIG` beyond
    /// [`Handle::max_atomic_msgsize_get`]. A message larger than a ring record goes in parts:
    /// once its first part is accepted, this waits for room for the rest (it is delivered
    /// whole or not at all).
    pub fn mcast_joined(&mut self, guarantee: Guarantee, buffers: &[&[u8]]) -> Result<()> {
        let len: usize = buffers.iter().map(|b| b.len()).sum();
        self.check_send(len)?;
        let endpoint = self.endpoint.as_mut().expect("checked");
        if len < endpoint.tx.payload_max() {
            if !write_small(endpoint, guarantee, buffers, len)? {
                return Err(if endpoint.peer_gone() { gone() } else { full() });
            }
            if endpoint.tx.take_wake() {
                endpoint.wake_peer();
            }
            return Ok(());
        }
        self.write_parts(guarantee, buffers, len)
    }

    /// Multicasts each of `messages` (as [`Handle::mcast_joined`] would) until the request ring
    /// is full, waking the node once; returns how many were accepted (possibly none — then
    /// wait on [`Handle::fd_get`] or retry). Errors only if the first cannot be sent for
    /// another reason.
    pub fn mcast_many<'m>(
        &mut self,
        guarantee: Guarantee,
        messages: impl IntoIterator<Item = &'m [u8]>,
    ) -> Result<usize> {
        let mut accepted = 0;
        for message in messages {
            if let Err(error) = self.check_send(message.len()) {
                return if accepted == 0 { Err(error) } else { break };
            }
            let endpoint = self.endpoint.as_mut().expect("checked");
            if 1 + message.len() > endpoint.tx.payload_max() {
                self.wake_if_needed()?;
                match self.mcast_joined(guarantee, &[message]) {
                    Ok(()) => {}
                    Err(Error::TryAgain(_)) => break,
                    Err(error) if accepted == 0 => return Err(error),
                    Err(_) => break,
                }
            } else if !write_small(endpoint, guarantee, &[message], message.len())? {
                break;
            }
            accepted += 1;
        }
        self.wake_if_needed()?;
        if accepted == 0 && self.endpoint()?.peer_gone() {
            return Err(gone());
        }
        Ok(accepted)
    }

    fn wake_if_needed(&mut self) -> Result<()> {
        let endpoint = self.endpoint()?;
        if endpoint.tx.take_wake() {
            endpoint.wake_peer();
        }
        Ok(())
    }

    fn check_send(&mut self, len: usize) -> Result<()> {
        self.endpoint()?;
        if self.group.is_none() {
            return Err(Error::NotExist("this handle has not joined a group".into()));
        }
        if len > self.max_message_size {
            return Err(Error::TooBig(
                format!(
                    "message of {len} bytes exceeds the limit of {} bytes",
                    self.max_message_size
                )
                .into(),
            ));
        }
        Ok(())
    }

    /// Writes a message larger than a record as a first part and more parts.
    fn write_parts(&mut self, guarantee: Guarantee, buffers: &[&[u8]], len: usize) -> Result<()> {
        let endpoint = self.endpoint.as_mut().expect("checked");
        let part = PART_MAX.min(endpoint.tx.payload_max() - records::MCAST_FIRST_HEADER);
        let mut source = Gather::new(buffers);
        let first = part.min(len);
        match endpoint
            .tx
            .claim(records::MCAST_FIRST_HEADER + first)
            .map_err(lost)?
        {
            Ok(mut claim) => {
                let out = claim.payload_mut();
                out[..records::MCAST_FIRST_HEADER]
                    .copy_from_slice(&records::mcast_first(guarantee, len as u64));
                source.fill(&mut out[records::MCAST_FIRST_HEADER..]);
                claim.commit_batched(records::MCAST_FIRST);
            }
            Err(ClaimError::Full) => {
                return Err(if endpoint.peer_gone() { gone() } else { full() });
            }
            Err(ClaimError::TooBig) => unreachable!("parts fit a record"),
        }
        // Once the first part is in, the message is finished whatever happens: an interrupt
        // would leave half a message at the node.
        let check = self.interrupt.take();
        let rest = self.write_rest(&mut source, part, len - first);
        self.interrupt = check;
        rest?;
        self.wake_if_needed()
    }

    /// The parts after the first of a large message.
    fn write_rest(&mut self, source: &mut Gather<'_>, part: usize, mut left: usize) -> Result<()> {
        while left > 0 {
            let next = part.min(left);
            let endpoint = self.endpoint.as_mut().expect("checked");
            match endpoint.tx.claim(next).map_err(lost)? {
                Ok(mut claim) => {
                    source.fill(claim.payload_mut());
                    claim.commit_batched(records::MCAST_MORE);
                    left -= next;
                }
                Err(ClaimError::Full) => {
                    if endpoint.tx.take_wake() {
                        endpoint.wake_peer();
                    }
                    self.wait_for_room(next)?;
                }
                Err(ClaimError::TooBig) => unreachable!("parts fit a record"),
            }
        }
        self.wake_if_needed()
    }

    /// `cpg_zcb_alloc`: a buffer of `size` bytes in shared memory, to fill in place and send
    /// with [`Handle::zcb_mcast_joined`]; dropping it is `cpg_zcb_free`. `CS_ERR_TOO_BIG` beyond
    /// the message limit, `CS_ERR_NO_MEMORY` beyond the arena, `CS_ERR_TRY_AGAIN` while the
    /// arena is taken by other buffers (or sends the node has not read yet).
    pub fn zcb_alloc(&mut self, size: usize) -> Result<ZcbBuffer> {
        self.endpoint()?;
        if size > self.max_message_size {
            return Err(Error::TooBig(
                format!(
                    "{size} bytes exceed the message limit of {} bytes",
                    self.max_message_size
                )
                .into(),
            ));
        }
        if size > self.arena.capacity() {
            return Err(Error::NoMemory(
                format!(
                    "{size} bytes exceed the zero-copy arena of {} bytes",
                    self.arena.capacity()
                )
                .into(),
            ));
        }
        self.arena
            .alloc(size)
            .ok_or_else(|| Error::TryAgain("the zero-copy arena is full".into()))
    }

    /// `cpg_zcb_mcast_joined`: multicasts the first `len` bytes of `buffer` without copying
    /// them here (the node reads them from shared memory). The buffer stays this handle's: it
    /// can be sent again, and writing into it waits until the node has read this send.
    pub fn zcb_mcast_joined(
        &mut self,
        guarantee: Guarantee,
        buffer: &mut ZcbBuffer,
        len: usize,
    ) -> Result<()> {
        self.check_send(len)?;
        if !self.arena.owns(buffer) {
            return Err(Error::InvalidParam(
                "the buffer was allocated by another handle".into(),
            ));
        }
        if len > buffer.len() {
            return Err(Error::InvalidParam(
                format!("{len} bytes from a buffer of {}", buffer.len()).into(),
            ));
        }
        let (offset, _) = buffer.block();
        let endpoint = self.endpoint.as_mut().expect("checked");
        let body = records::zcb_mcast(guarantee, offset, len as u64);
        match endpoint.tx.push(records::ZCB_MCAST, &body).map_err(lost)? {
            Ok(wake) => {
                buffer.mark_sent(endpoint.tx.position());
                if wake {
                    endpoint.wake_peer();
                }
                Ok(())
            }
            Err(_) => Err(if endpoint.peer_gone() { gone() } else { full() }),
        }
    }

    /// `cpg_membership_get`: the members of `group`, sorted by (node, pid).
    pub fn membership_get(&mut self, group: impl AsRef<[u8]>) -> Result<Vec<(NodeId, u32)>> {
        let body = self.request(records::MEMBERSHIP_GET, group.as_ref())?;
        let count = body
            .get(..4)
            .map_or(0, |b| u32::from_le_bytes(b.try_into().expect("4")) as usize);
        let entries = body.get(4..).unwrap_or_default();
        if entries.len() != count * 8 {
            return Err(Error::Library("malformed membership answer".into()));
        }
        Ok(entries
            .chunks_exact(8)
            .map(|e| {
                (
                    NodeId(u32::from_le_bytes(e[..4].try_into().expect("4"))),
                    u32::from_le_bytes(e[4..].try_into().expect("4")),
                )
            })
            .collect())
    }

    /// `cpg_iteration_*`: every group name ([`IterationType::NameOnly`]), the members of
    /// `group` ([`IterationType::OneGroup`]) or every member of every group
    /// ([`IterationType::All`]), sorted by group, then (node, pid).
    pub fn iteration(
        &mut self,
        kind: IterationType,
        group: Option<&[u8]>,
    ) -> Result<Vec<IterationEntry>> {
        let group = match (kind, group) {
            (IterationType::OneGroup, None) => {
                return Err(Error::InvalidParam("ONE_GROUP needs a group".into()));
            }
            (IterationType::OneGroup, Some(group)) => group,
            _ => &[],
        };
        let mut body = vec![u32::from(kind) as u8];
        body.extend_from_slice(group);
        let answer = self.request(records::ITERATION, &body)?;
        let entries = records::decode_iteration(&answer)
            .ok_or_else(|| Error::Library("malformed iteration answer".into()))?;
        Ok(entries
            .into_iter()
            .map(|(group, nodeid, pid)| IterationEntry { group, nodeid, pid })
            .collect())
    }

    /// `cpg_local_get`: this node's id.
    pub fn local_get(&mut self) -> Result<NodeId> {
        let body = self.request(records::LOCAL_GET, &[])?;
        let bytes: [u8; 4] = body
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| Error::Library("malformed local_get answer".into()))?;
        let nodeid = NodeId(u32::from_le_bytes(bytes));
        debug_assert_eq!(nodeid, self.nodeid);
        Ok(nodeid)
    }

    /// `cpg_max_atomic_msgsize_get`: the largest message the cluster carries (delivered whole
    /// or not at all).
    pub fn max_atomic_msgsize_get(&self) -> Result<usize> {
        self.endpoint_ref()?;
        Ok(self.max_message_size)
    }

    /// `cpg_flow_control_state_get`: `Enabled` while the node holds this handle's messages (for
    /// lack of room in its send queue, or for a client on the node that receives them and is
    /// more than 16 MiB behind on its events), or the request ring is over three quarters
    /// full — sends may get `CS_ERR_TRY_AGAIN` then.
    pub fn flow_control_state_get(&mut self) -> Result<FlowControlState> {
        let endpoint = self.endpoint()?;
        let held = endpoint.tx.consumer_status() == FLOW_CONTROL_ENABLED;
        let capacity = endpoint.tx.capacity();
        let crowded = endpoint.tx.free().map_err(lost)? < capacity / 4;
        Ok(if held || crowded {
            FlowControlState::Enabled
        } else {
            FlowControlState::Disabled
        })
    }

    /// `cpg_fd_get`: readable when events may be waiting or the node is gone (for `poll`,
    /// `select`, asyncio; then call [`Handle::dispatch`], which tells which).
    pub fn fd_get(&self) -> Result<RawFd> {
        self.endpoint_ref()?;
        Ok(self.watch.0.as_raw_fd())
    }

    /// The eventfd the node writes to wake this side (for bindings that make the descriptor
    /// readable themselves, say while events they took out wait in their own queue).
    pub fn wakeup_eventfd(&self) -> Result<std::os::fd::BorrowedFd<'_>> {
        Ok(self.endpoint_ref()?.wakeup())
    }

    /// `cpg_dispatch`: hands events to `handler`. `One` waits for one event, `All` handles what
    /// is there without waiting, `OneNonblocking` handles one or returns `CS_ERR_TRY_AGAIN`,
    /// `Blocking` handles events until the connection ends. Returns how many were handled.
    pub fn dispatch(
        &mut self,
        flags: DispatchFlags,
        mut handler: impl FnMut(Event),
    ) -> Result<usize> {
        let mut count = 0;
        loop {
            match self.try_next_event()? {
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
                    DispatchFlags::One | DispatchFlags::Blocking => {
                        self.wait_for_event(None)?;
                    }
                },
            }
        }
    }

    /// The next event if one is there (never waits): the building block of `dispatch` for
    /// callers that wait themselves (on [`Handle::fd_get`] or [`Handle::wait_for_event`]).
    pub fn try_next_event(&mut self) -> Result<Option<Event>> {
        if let Some(event) = self.pending.pop_front() {
            return Ok(Some(event));
        }
        self.endpoint()?;
        loop {
            let Some((entry, event)) = self.read_record(true)? else {
                // Nothing more: count as asleep, so that the node makes the descriptor
                // readable with its next event (callers wait on it), after consuming the
                // wake-ups that brought us here.
                let endpoint = self.endpoint.as_mut().expect("checked");
                endpoint.clear_wakeup();
                if endpoint.rx.prepare_to_sleep() {
                    if endpoint.peer_gone() {
                        return Err(gone());
                    }
                    return Ok(None);
                }
                continue;
            };
            if let Some(event) = event {
                return Ok(Some(event));
            }
            if entry == records::ANSWER {
                // The answer to a request whose wait was interrupted.
                let Some((kind, body)) = self.abandoned.pop_front() else {
                    return Err(Error::Library("an answer nobody asked for".into()));
                };
                self.apply_late_answer(kind, &body);
            }
        }
    }

    /// Waits until an event may be there or `timeout` passes; false on timeout. Returns at
    /// once if events are pending. `CS_ERR_LIBRARY` when the node has gone away.
    pub fn wait_for_event(&mut self, timeout: Option<Duration>) -> Result<bool> {
        if !self.pending.is_empty() {
            return Ok(true);
        }
        let endpoint = self.endpoint()?;
        if !endpoint.rx.prepare_to_sleep() {
            return Ok(true);
        }
        self.sleep(timeout)
    }

    /// Reads the next record of the event ring: its kind and the event it completes. A
    /// delivery is pinned in place when `pin` holds, else copied out; other records are decoded
    /// and released.
    fn read_record(&mut self, pin: bool) -> Result<Option<(u32, Option<Event>)>> {
        let endpoint = self.endpoint.as_mut().expect("checked by callers");
        let Some(entry) = endpoint.rx.read_next().map_err(lost)? else {
            return Ok(None);
        };
        let kind = entry.kind;
        if kind == records::DELIVER && pin {
            let payload = endpoint.rx.payload(&entry);
            let (nodeid, pid, group, start) = records::decode_deliver_header(payload)
                .ok_or_else(|| Error::Library("malformed delivery".into()))?;
            let record = Arc::new(endpoint.rx.pin(entry));
            let event = Event::Deliver {
                group,
                nodeid,
                pid,
                payload: Message(Repr::Ring(record, start)),
            };
            return Ok(Some((kind, Some(event))));
        }
        let event = match kind {
            records::DELIVER_FIRST | records::DELIVER_MORE => self.assemble(&entry)?,
            records::ANSWER => {
                endpoint.rx.copy(&entry, &mut self.buffer);
                None
            }
            records::DELIVER => {
                let payload = endpoint.rx.payload(&entry);
                let (nodeid, pid, group, start) = records::decode_deliver_header(payload)
                    .ok_or_else(|| Error::Library("malformed delivery".into()))?;
                Some(Event::Deliver {
                    group,
                    nodeid,
                    pid,
                    payload: Message(Repr::Heap(Bytes::copy_from_slice(&payload[start..]))),
                })
            }
            _ => records::decode_event(kind, endpoint.rx.payload(&entry)).map(from_service),
        };
        let endpoint = self.endpoint.as_mut().expect("checked by callers");
        if endpoint.rx.release(entry) {
            endpoint.wake_peer();
        }
        Ok(Some((kind, event)))
    }

    /// Adds a part of a large message; the message once complete.
    fn assemble(&mut self, entry: &Entry) -> Result<Option<Event>> {
        let endpoint = self.endpoint.as_mut().expect("checked by callers");
        let bad = || Error::Library("malformed parts of a large delivery".into());
        if entry.kind == records::DELIVER_FIRST {
            let payload = endpoint.rx.payload(entry);
            let (nodeid, pid, group, start) =
                records::decode_deliver_header(payload).ok_or_else(bad)?;
            let total = payload
                .get(start..start + 8)
                .map(|b| u64::from_le_bytes(b.try_into().expect("8")))
                .ok_or_else(bad)?;
            let total = usize::try_from(total).map_err(|_| bad())?;
            let first = &payload[start + 8..];
            if total > self.max_message_size || first.len() > total {
                return Err(bad());
            }
            let mut message = Vec::with_capacity(total);
            message.extend_from_slice(first);
            self.assembly = Some(Assembly {
                group,
                nodeid,
                pid,
                missing: total - first.len(),
                message,
            });
        } else {
            let assembly = self.assembly.as_mut().ok_or_else(bad)?;
            let payload = endpoint.rx.payload(entry);
            if payload.len() > assembly.missing {
                return Err(bad());
            }
            assembly.message.extend_from_slice(payload);
            assembly.missing -= payload.len();
        }
        if self.assembly.as_ref().is_some_and(|a| a.missing == 0) {
            let a = self.assembly.take().expect("present");
            return Ok(Some(Event::Deliver {
                group: a.group,
                nodeid: a.nodeid,
                pid: a.pid,
                payload: Message(Repr::Heap(Bytes::from(a.message))),
            }));
        }
        Ok(None)
    }

    /// Sends a request and waits for its answer; events that come first are kept for dispatch.
    fn request(&mut self, kind: u32, body: &[u8]) -> Result<Vec<u8>> {
        let endpoint = self.endpoint()?;
        match endpoint.tx.push(kind, body).map_err(lost)? {
            Ok(wake) => {
                if wake {
                    endpoint.wake_peer();
                }
            }
            Err(_) => return Err(if endpoint.peer_gone() { gone() } else { full() }),
        }
        // Events that come first are copied out of the ring, not kept as views: the answer may
        // wait behind more events than the ring holds (the node writes it after them, and stops
        // reading requests while a client's backlog is large), so every record read here must
        // give its space back, or the node could never write the answer.
        loop {
            match self.read_record(false)? {
                Some((records::ANSWER, _)) => {
                    if let Some((kind, body)) = self.abandoned.pop_front() {
                        self.apply_late_answer(kind, &body);
                        continue;
                    }
                    return answer(&self.buffer);
                }
                Some((_, Some(event))) => self.pending.push_back(event),
                Some((_, None)) => {}
                None => {
                    let endpoint = self.endpoint.as_mut().expect("checked");
                    if endpoint.rx.prepare_to_sleep()
                        && let Err(error) = self.sleep(None)
                    {
                        if matches!(error, Error::Interrupt(_)) {
                            self.abandoned
                                .push_back((kind, Bytes::copy_from_slice(body)));
                        }
                        return Err(error);
                    }
                }
            }
        }
    }

    /// The answer (in `buffer`) to a request whose wait was interrupted: what it changes.
    fn apply_late_answer(&mut self, kind: u32, body: &Bytes) {
        if answer(&self.buffer).is_ok() {
            match kind {
                records::JOIN => self.group = Some(body.clone()),
                records::LEAVE => self.group = None,
                _ => {}
            }
        }
    }

    /// Waits until the node released room for a record of `len` bytes.
    fn wait_for_room(&mut self, len: usize) -> Result<()> {
        self.wait_writable(len, None).map(|_| ())
    }

    /// After `CS_ERR_TRY_AGAIN`: waits until the request ring may have room for a message of
    /// `len` bytes, or `timeout` passes (false then). Events that arrive meanwhile stay
    /// queued.
    pub fn wait_writable(&mut self, len: usize, timeout: Option<Duration>) -> Result<bool> {
        if self.notify_when_writable(len)? {
            let slept = self.sleep(timeout);
            // The node wakes this side through one descriptor for room and for events alike:
            // a wake-up for an event that came meanwhile was consumed here, and the node gives
            // no other until the events are read. Callers that wait on `fd_get` must see them.
            if let Some(endpoint) = &self.endpoint
                && endpoint.rx.has_unread()
            {
                endpoint.rearm_wakeup();
            }
            return slept;
        }
        Ok(true)
    }

    /// After `CS_ERR_TRY_AGAIN`, for callers that wait on [`Handle::fd_get`] themselves
    /// (asyncio): asks the node to make the descriptor readable once it has released room for
    /// a message of `len` bytes; false when the room is already there (retry at once).
    pub fn notify_when_writable(&mut self, len: usize) -> Result<bool> {
        let endpoint = self.endpoint()?;
        let record = (1 + len).min(endpoint.tx.payload_max());
        endpoint.tx.prepare_to_wait(record).map_err(lost)
    }

    /// Sleeps until the node wakes this side, goes away, or `timeout` passes (false then);
    /// with an interrupt check, in slices, asking it after each.
    fn sleep(&mut self, timeout: Option<Duration>) -> Result<bool> {
        let endpoint = self
            .endpoint
            .as_ref()
            .ok_or_else(|| Error::BadHandle("the handle was finalized".into()))?;
        let spin = self.busy_poll;
        client::sleep_interruptible(&mut self.interrupt, timeout, |timeout| {
            client::sleep_once(endpoint, spin, timeout)
        })
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.arena.close();
    }
}

/// Claims, fills and commits (without waking) a message that fits one record; false when the
/// ring is full.
fn write_small(
    endpoint: &mut Endpoint,
    guarantee: Guarantee,
    buffers: &[&[u8]],
    len: usize,
) -> Result<bool> {
    match endpoint.tx.claim(1 + len).map_err(lost)? {
        Ok(mut claim) => {
            let out = claim.payload_mut();
            out[0] = u32::from(guarantee) as u8;
            Gather::new(buffers).fill(&mut out[1..]);
            claim.commit_batched(records::MCAST);
            Ok(true)
        }
        Err(ClaimError::Full) => Ok(false),
        Err(ClaimError::TooBig) => unreachable!("checked against payload_max"),
    }
}

/// Copies an iovec out in consecutive pieces.
struct Gather<'b> {
    buffers: &'b [&'b [u8]],
    index: usize,
    offset: usize,
}

impl<'b> Gather<'b> {
    fn new(buffers: &'b [&'b [u8]]) -> Gather<'b> {
        Gather {
            buffers,
            index: 0,
            offset: 0,
        }
    }

    /// Fills `out` with the next `out.len()` bytes.
    fn fill(&mut self, out: &mut [u8]) {
        let mut at = 0;
        while at < out.len() {
            let buffer = self.buffers[self.index];
            let take = (buffer.len() - self.offset).min(out.len() - at);
            out[at..at + take].copy_from_slice(&buffer[self.offset..self.offset + take]);
            at += take;
            self.offset += take;
            if self.offset == buffer.len() {
                self.index += 1;
                self.offset = 0;
            }
        }
    }
}

fn request(options: Options) -> ConnectRequest {
    ConnectRequest {
        initial_totem_conf: options.initial_totem_conf,
        ..ConnectRequest::new("cpg")
    }
}

fn full() -> Error {
    Error::TryAgain("the request ring is full (the node is behind)".into())
}

fn gone() -> Error {
    Error::Library("the node closed the connection".into())
}

/// A non-delivery event from the node's records.
fn from_service(event: crate::node::cpg::ClientEvent) -> Event {
    use crate::node::cpg::ClientEvent;
    match event {
        ClientEvent::Deliver {
            group,
            nodeid,
            pid,
            payload,
        } => Event::Deliver {
            group,
            nodeid,
            pid,
            payload: Message(Repr::Heap(payload)),
        },
        ClientEvent::ConfChg {
            group,
            members,
            left,
            joined,
        } => Event::ConfChg {
            group,
            members,
            left,
            joined,
        },
        ClientEvent::TotemConfChg { ring, nodes } => Event::TotemConfChg { ring, nodes },
    }
}

fn answer(body: &[u8]) -> Result<Vec<u8>> {
    let code = body
        .get(..4)
        .map(|b| u32::from_le_bytes(b.try_into().expect("4")))
        .ok_or_else(|| Error::Library("malformed answer".into()))?;
    let rest = body[4..].to_vec();
    if code == 1 {
        return Ok(rest);
    }
    let detail = String::from_utf8_lossy(&rest).into_owned();
    Err(Error::from_code(code, detail.clone())
        .unwrap_or_else(|_| Error::Library(format!("unknown code {code}: {detail}").into())))
}

#[allow(clippy::needless_pass_by_value, reason = "used as a map_err function")]
fn lost(error: Corrupt) -> Error {
    Error::Library(format!("the connection to the node is broken: {error}").into())
}

impl AsFd for Handle {
    /// The descriptor of [`Handle::fd_get`].
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.watch.0.as_fd()
    }
}

impl AsRawFd for Handle {
    fn as_raw_fd(&self) -> RawFd {
        self.as_fd().as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipc::connection::{Layout, Offer, accept, read_request};
    use bytes::BytesMut;
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

    /// A handle and the node's end of its connection, over a socket pair.
    fn connected() -> (Handle, Endpoint) {
        let (client, mut node) = UnixStream::pair().unwrap();
        let serve = std::thread::spawn(move || {
            let request = read_request(&mut node).unwrap();
            let offer = Offer {
                nodeid: 1,
                layout: Layout {
                    request_capacity: 4096,
                    event_capacity: 4096,
                    zcb_capacity: 4096,
                },
                max_message_size: 1000,
            };
            accept(node, &request, &offer, None).unwrap().unwrap()
        });
        let handle = Handle::connect_stream(client, Options::default()).unwrap();
        (handle, serve.join().unwrap())
    }

    /// Deliveries a caller keeps as views (`Message`s held past `dispatch`, as a Python
    /// callback storing its messages does) and drops after the last read: their ring space
    /// goes back at the drop, waking the node that waits for it. The client has nothing left
    /// to read and sleeps; the space used to stay taken until its next read, which only the
    /// node's next event would bring: neither side moved.
    #[test]
    fn views_dropped_after_the_last_read_wake_the_node_waiting_for_their_space() {
        let (mut handle, mut node) = connected();
        let mut header = BytesMut::new();
        records::deliver_header(NodeId(1), 7, b"g", &mut header);
        let record = [&header[..], &[5u8; 200]].concat();
        let mut written = 0;
        while node.tx.push(records::DELIVER, &record).unwrap().is_ok() {
            written += 1;
        }
        assert!(
            node.tx.prepare_to_wait(record.len()).unwrap(),
            "the node waits for room for its next event"
        );
        let mut kept = Vec::new();
        let handled = handle
            .dispatch(DispatchFlags::All, |event| kept.push(event))
            .unwrap();
        assert_eq!(handled, written);
        assert!(kept.iter().all(|event| matches!(
            event,
            Event::Deliver { payload, .. } if payload.is_zero_copy()
        )));
        assert!(
            !handle.wait_for_event(Some(Duration::ZERO)).unwrap(),
            "nothing is left to read: the client sleeps"
        );
        node.clear_wakeup();
        drop(kept);
        assert!(readable(node.wakeup()), "the waiting node was not woken");
        assert_eq!(
            node.tx.free().unwrap(),
            node.tx.capacity(),
            "space still taken"
        );
    }

    /// The busy-poll window: 50 µs unless set, at most 10 ms, and a wait that spins sees an
    /// event the node writes meanwhile, whether it comes within the window or after it.
    #[test]
    fn busy_poll_is_bounded_and_waits_see_events_in_and_after_the_window() {
        let (mut handle, mut node) = connected();
        assert_eq!(handle.busy_poll(), Duration::from_micros(50));
        let error = handle.set_busy_poll(Duration::from_millis(11)).unwrap_err();
        assert_eq!(error.code(), crate::error::CsError::InvalidParam);
        assert_eq!(handle.busy_poll(), Duration::from_micros(50), "unchanged");
        let mut header = BytesMut::new();
        records::deliver_header(NodeId(1), 7, b"g", &mut header);
        for (window, delay) in [
            (Duration::from_millis(10), Duration::ZERO),
            (Duration::from_micros(100), Duration::from_millis(20)),
            (Duration::ZERO, Duration::from_millis(1)),
        ] {
            handle.set_busy_poll(window).unwrap();
            let record = [&header[..], &[1u8; 8]].concat();
            std::thread::scope(|scope| {
                scope.spawn(|| {
                    std::thread::sleep(delay);
                    if node.tx.push(records::DELIVER, &record).unwrap().unwrap() {
                        node.wake_peer();
                    }
                });
                assert!(
                    handle
                        .wait_for_event(Some(Duration::from_secs(10)))
                        .unwrap()
                );
            });
            let event = handle.try_next_event().unwrap();
            assert!(
                matches!(event, Some(Event::Deliver { .. })),
                "{window:?}: {event:?}"
            );
            assert!(handle.try_next_event().unwrap().is_none());
        }
    }

    fn readable(fd: std::os::fd::BorrowedFd<'_>) -> bool {
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        poll(&mut fds, PollTimeout::ZERO).unwrap() == 1
    }

    /// A wait in slices (the one a request with an interrupt check makes) whose slice ends
    /// just before the node writes an event and wakes it: the wake-up must stay pending. It
    /// used to be consumed after the poll that had timed out, the node had cleared the
    /// sleeping mark when giving it, and the next slices slept forever over a waiting record.
    #[test]
    fn a_wake_up_after_a_timed_out_poll_is_not_lost() {
        let (mut handle, mut node) = connected();
        assert!(handle.endpoint().unwrap().rx.prepare_to_sleep(), "asleep");
        let ready = client::sleep_once_then(
            handle.endpoint().unwrap(),
            Duration::ZERO,
            Some(Duration::ZERO),
            || {
                // The node, right after the poll timed out: an event, and the wake-up it owes.
                assert!(node.tx.push(records::ANSWER, b"late").unwrap().unwrap());
                node.wake_peer();
            },
        )
        .unwrap();
        assert!(!ready, "the poll itself saw nothing");
        assert!(
            readable(handle.wakeup_eventfd().unwrap()),
            "the wake-up given after the poll was consumed"
        );
        assert!(readable(handle.as_fd()), "fd_get is not readable");
        assert!(
            client::sleep_once(handle.endpoint().unwrap(), Duration::ZERO, None).unwrap(),
            "the next sleep must return"
        );
    }
}
