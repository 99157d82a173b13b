//! Local clients of a node: their IPC sessions (rings, wake-ups, sockets) and the CPG and EVS
//! services they talk to. The driver hands over new connections, wake-ups and hang-ups, and the
//! core's deliveries and configurations; this module carries requests to the services and the
//! core, and events back into each client's event ring.
//!
//! Nothing accepted is dropped: a message the core refuses (its send queue is full) is held by
//! the node, which reads nothing more from that client until the core takes it, so the client
//! sees TRY_AGAIN when its own ring fills — before anything more is accepted. The node reads a
//! client's multicasts only while the core holds less than [`SEND_AHEAD_MAX`] unsent, and at
//! most [`SERVE_BUDGET`] per turn, so that deliveries (and the congestion below) keep up with
//! what it takes in. A client's join or leave reaches the core before its next message.
//! Control messages (join, leave, joinlist) the core refuses wait in a queue of their own. Events a client does not read in time wait in
//! a backlog: above 16 MiB the node stops reading the multicasts of the local senders whose
//! messages it receives, itself included, until it has caught up (see [`congestion`]); a
//! client that releases nothing for 5 s while events wait — or has 512 MiB waiting — is
//! disconnected with a logged reason (a slow client never blocks the ring, and blocks the
//! local senders of its own group for 5 s at most).

mod congestion;

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use serde::Serialize;

use super::cpg::records::{self, ANSWER};
use super::cpg::{ClientEvent, ConnId, Output, Service};
use crate::api::Guarantee;
use crate::error::{CsError, Error};
use crate::ids::NodeId;
use crate::ipc::connection::{Endpoint, Peer};
use crate::ipc::ring::{ClaimError, Consumer, Entry};
use crate::ipc::zcb;
use crate::node::evs;
use crate::node::services::ServiceId;
use crate::time::Instant;
use crate::totem;
use congestion::Congestion;

/// A client whose events wait while it has released nothing from its event ring for this
/// long has stopped dispatching: it is disconnected.
const STALLED_MAX: Duration = Duration::from_secs(5);
/// Most bytes of events waiting for one client, however it reads: beyond, it is disconnected.
const BACKLOG_MAX: usize = 512 << 20;
/// Most message bytes in one part of a large message (parts pipeline between the node and
/// the client).
const PART_MAX: usize = 1 << 20;

/// From this size, a message waiting in a client's backlog shares the delivery's bytes rather
/// than being copied. A shared body keeps the packet it came in alive: one datagram in a
/// cluster, at most 1 MiB on a lone node (so at most 64 times the bytes counted).
const SHARED_BODY_MIN: usize = 16 << 10;
/// The request ring's status word while the node holds a client's message for lack of room
/// in its send queue (`CPG_FLOW_CONTROL_ENABLED`), and otherwise.
pub const FLOW_CONTROL_ENABLED: u32 = 1;
/// See [`FLOW_CONTROL_ENABLED`].
pub const FLOW_CONTROL_DISABLED: u32 = 0;

/// Counters of the client side.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ClientCounters {
    /// Connections accepted.
    pub connected: u64,
    /// Connections closed by their client.
    pub closed: u64,
    /// Clients disconnected because they stopped reading their events.
    pub disconnected_slow: u64,
    /// Clients disconnected for writing garbage into their request ring.
    pub disconnected_bad: u64,
    /// Requests served.
    pub requests: u64,
    /// Times a multicast waited for the core: its send queue full, or holding as much as the
    /// node reads ahead of its deliveries.
    pub mcasts_waiting: u64,
    /// Times a local sender's multicasts were held for a local receiver behind on its events.
    pub senders_held: u64,
    /// Events written to clients' rings.
    pub events_written: u64,
}

struct Session {
    endpoint: Endpoint,
    peer: Peer,
    service: ServiceId,
    /// A message built from the client's request that the core refused for lack of room:
    /// nothing more is read from this client until the core takes it.
    ready: Option<(Guarantee, Bytes)>,
    /// A large message whose parts are arriving.
    assembly: Option<Assembly>,
    /// A request read while batching small multicasts that did not belong to the batch: the
    /// next one to serve.
    lookahead: Option<Entry>,
    /// Events that did not fit in the event ring.
    backlog: VecDeque<Backlogged>,
    backlog_bytes: usize,
    /// Since when events wait and the client has released nothing.
    stalled_since: Option<Instant>,
    /// Records went into the event ring since the last [`Clients::wake_readers`].
    written: bool,
    /// The client hung up: what it wrote before is served (it was accepted), nothing is
    /// written to it, and it leaves once nothing it sent waits for the core.
    closing: bool,
}

/// An event waiting for room in a client's event ring: its record is `head` then `body`.
struct Backlogged {
    kind: u32,
    head: Bytes,
    /// A large message's bytes, shared with the delivery (not copied); empty for the rest.
    body: Bytes,
}

impl Backlogged {
    fn len(&self) -> usize {
        self.head.len() + self.body.len()
    }
}

/// A message arriving in parts ([`records::MCAST_FIRST`], [`records::MCAST_MORE`]).
struct Assembly {
    guarantee: Guarantee,
    /// The totem payload so far (`None` when the service refused the message: its parts are
    /// read and dropped).
    message: Option<Vec<u8>>,
    /// Message bytes still to come.
    missing: usize,
}

/// What one request asks of the node.
enum Request {
    /// Answer it with this.
    Answer(Result<Vec<u8>, Error>),
    /// Hand this totem payload to the core.
    Message(Guarantee, Bytes),
    /// The first of a batch of small multicasts (a totem payload in the making): the ones the
    /// client queued right after it join it before it goes to the core.
    Batch(Guarantee, Vec<u8>),
    /// Write this answer record (already encoded).
    Record(Vec<u8>),
    /// Nothing (a part of a message, or a message the service refused).
    Nothing,
    /// The client broke the protocol: drop it.
    Bad(String),
}

/// Multicasts up to this size are batched with the ones the client queued right after them.
const BATCH_ITEM_MAX: usize = 4096;
/// Most bytes of one batch.
const BATCH_MAX: usize = 64 << 10;

/// Most request bytes one turn of serving a client reads. A client that writes faster than
/// that is served again on the node's next loop turn, after the core's output: the deliveries
/// of what it sent (and so the receivers' backlogs that hold it back) come in between. Read
/// without a limit, a sender that never let its ring run empty kept the node in one turn
/// while the core queued up to its 256 MiB send queue, and each local receiver's backlog grew
/// as large before the first of it was delivered (1 KiB fan-out to 3 receivers: 1.09 GB of
/// node memory within half a second).
const SERVE_BUDGET: usize = 1 << 20;

/// Local multicasts are read only while the core's send queue holds less than this: what the
/// node takes in beyond it would wait in the core, then in the receivers' backlogs, before the
/// congestion it causes could hold the sender back. The core's own limit (256 MiB, room for
/// the largest message) is no bound on memory worth having.
const SEND_AHEAD_MAX: usize = 8 << 20;

/// Bytes a request other than a multicast may have (names are at most 128).
const SMALL_REQUEST_MAX: usize = 1024;

/// Every local client and the CPG service.
pub struct Clients {
    me: NodeId,
    /// The largest message a client may send.
    max_message_size: usize,
    service: Service,
    evs: evs::Sessions,
    sessions: BTreeMap<ConnId, Session>,
    next: ConnId,
    control_backlog: VecDeque<(Guarantee, Bytes)>,
    congestion: Congestion,
    /// Reused buffers: an encoded event, a small request's body.
    scratch: BytesMut,
    request: Vec<u8>,
    counters: ClientCounters,
    /// The clients whose event rings got records since the last [`Clients::wake_readers`]:
    /// a client is woken once for all the records of a burst (one system call, not one per
    /// message to each receiver).
    written: Vec<ConnId>,
    /// The time of the last call from the driver.
    now: Instant,
    /// Clients with requests left after a turn used its [`SERVE_BUDGET`]: served again on the
    /// driver's next loop turn ([`Clients::serve_more`]).
    more: Vec<ConnId>,
    /// Clients whose next multicast waits for the core's send queue to drain below
    /// [`SEND_AHEAD_MAX`] ([`Clients::core_progress`]).
    core_waiters: Vec<ConnId>,
}

impl Clients {
    /// No clients yet, on node `me`, whose cluster carries messages up to `max_message_size`.
    #[must_use]
    pub fn new(me: NodeId, max_message_size: usize) -> Clients {
        Clients {
            me,
            max_message_size,
            service: Service::new(me),
            evs: evs::Sessions::new(me),
            sessions: BTreeMap::new(),
            next: 1,
            control_backlog: VecDeque::new(),
            congestion: Congestion::default(),
            scratch: BytesMut::new(),
            request: Vec::new(),
            counters: ClientCounters::default(),
            written: Vec::new(),
            now: Instant::ZERO,
            more: Vec::new(),
            core_waiters: Vec::new(),
        }
    }

    /// Counters.
    #[must_use]
    pub fn counters(&self) -> &ClientCounters {
        &self.counters
    }

    /// The CPG service (groups and members, for `cpgtool`).
    #[must_use]
    pub fn service(&self) -> &Service {
        &self.service
    }

    /// The EVS sessions (for status).
    #[must_use]
    pub fn evs(&self) -> &evs::Sessions {
        &self.evs
    }

    /// Sessions open now.
    #[must_use]
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether no session is open.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// A new session; returns its id (the driver registers its descriptors).
    pub fn add(
        &mut self,
        endpoint: Endpoint,
        peer: Peer,
        service: ServiceId,
        initial_totem_conf: bool,
    ) -> ConnId {
        let conn = self.next;
        self.next += 1;
        match service {
            ServiceId::Cpg => self.service.connect(conn, peer.pid, initial_totem_conf),
            ServiceId::Evs => self.evs.connect(conn, peer.pid),
        }
        self.sessions.insert(
            conn,
            Session {
                endpoint,
                peer,
                service,
                ready: None,
                assembly: None,
                lookahead: None,
                backlog: VecDeque::new(),
                backlog_bytes: 0,
                stalled_since: None,
                written: false,
                closing: false,
            },
        );
        self.counters.connected += 1;
        self.flush_events();
        conn
    }

    /// The session of `conn`, for registration.
    #[must_use]
    pub fn endpoint(&self, conn: ConnId) -> Option<&Endpoint> {
        self.sessions.get(&conn).map(|s| &s.endpoint)
    }

    /// The client closed its socket (or died): the requests it wrote before are served first
    /// (`mcast_joined` returned OK for them), then PROCDOWN for its membership. If the core has
    /// no room for its message now, the session stays closing until [`Clients::writable`]
    /// has handed everything to the core.
    pub fn hang_up(&mut self, conn: ConnId, core: &mut totem::Node, now: Instant) {
        let Some(session) = self.sessions.get_mut(&conn) else {
            return;
        };
        session.closing = true;
        session.backlog.clear();
        session.backlog_bytes = 0;
        session.stalled_since = None;
        self.congestion.set_backlog(conn, 0);
        self.serve_session(conn, core, now);
        self.finish_closing(conn, core, now);
        self.resume_held(core, now);
    }

    /// Lets a closing session go once nothing it sent waits for the core.
    fn finish_closing(&mut self, conn: ConnId, core: &mut totem::Node, now: Instant) {
        if !self.sessions.get(&conn).is_some_and(|s| {
            // Everything it wrote was accepted: a request held back (for a receiver
            // behind, or for the core) is read and sent before it goes.
            s.closing && s.ready.is_none() && s.lookahead.is_none() && !s.endpoint.rx.has_unread()
        }) {
            return;
        }
        if let Some(session) = self.sessions.remove(&conn) {
            self.congestion.remove(conn);
            self.counters.closed += 1;
            self.disconnect(conn, session.service);
            self.route(core, now);
        }
    }

    fn disconnect(&mut self, conn: ConnId, service: ServiceId) {
        match service {
            ServiceId::Cpg => self.service.disconnect(conn),
            ServiceId::Evs => self.evs.disconnect(conn),
        }
    }

    /// Drops a misbehaving or slow client (closing its descriptors, which takes them out of
    /// the driver's poll set) and logs why.
    fn drop_client(&mut self, conn: ConnId, why: &str) {
        if let Some(session) = self.sessions.remove(&conn) {
            self.congestion.remove(conn);
            tracing::warn!(
                conn,
                pid = session.peer.pid,
                uid = session.peer.uid,
                why,
                "client disconnected"
            );
            self.disconnect(conn, session.service);
        }
    }

    /// The client woke the node: serve its requests and flush its backlog (and serve the
    /// senders held for it if it has caught up).
    pub fn serve(&mut self, conn: ConnId, core: &mut totem::Node, now: Instant) {
        self.serve_session(conn, core, now);
        self.resume_held(core, now);
    }

    /// Whether clients wait to be served again ([`Clients::serve_more`]): the driver must not
    /// sleep then.
    #[must_use]
    pub fn has_more(&self) -> bool {
        !self.more.is_empty()
    }

    /// After the core's output: serves the clients whose multicasts waited for its send queue
    /// to drain, once it has. Whether it served any (the core has output then).
    pub fn core_progress(&mut self, core: &mut totem::Node, now: Instant) -> bool {
        if self.core_waiters.is_empty() || core.send_queue_bytes() >= SEND_AHEAD_MAX {
            return false;
        }
        let waiters = std::mem::take(&mut self.core_waiters);
        self.serve_again(waiters, core, now);
        true
    }

    /// Serves `conns` (which may have hung up meanwhile: those leave once served).
    fn serve_again(&mut self, conns: Vec<ConnId>, core: &mut totem::Node, now: Instant) {
        for conn in conns {
            self.serve_session(conn, core, now);
            self.finish_closing(conn, core, now);
        }
        self.resume_held(core, now);
    }

    /// Serves again the clients whose last turn used its budget.
    pub fn serve_more(&mut self, core: &mut totem::Node, now: Instant) {
        if self.more.is_empty() {
            return;
        }
        let more = std::mem::take(&mut self.more);
        self.serve_again(more, core, now);
    }

    /// Serves the senders held for receivers that have caught up (or left).
    fn resume_held(&mut self, core: &mut totem::Node, now: Instant) {
        if self.congestion.none_held() {
            return;
        }
        for conn in self.congestion.held() {
            if !self.must_wait(conn) {
                tracing::debug!(conn, "held sender served again");
                self.congestion.release(conn);
                self.serve_session(conn, core, now);
                self.finish_closing(conn, core, now);
            }
        }
    }

    /// Whether `sender`'s multicasts wait for a local receiver of them that is behind.
    fn must_wait(&self, sender: ConnId) -> bool {
        self.congestion
            .congested()
            .any(|receiver| self.receives_from(receiver, sender))
    }

    /// Whether `receiver` gets the multicasts of `sender`: a CPG client those of its group's
    /// members, and itself. EVS clients are taken as one audience (a message names its groups
    /// only when it is sent).
    fn receives_from(&self, receiver: ConnId, sender: ConnId) -> bool {
        if receiver == sender {
            return true;
        }
        let service = |conn| self.sessions.get(&conn).map(|s| s.service);
        match (service(receiver), service(sender)) {
            (Some(ServiceId::Cpg), Some(ServiceId::Cpg)) => self
                .service
                .joined_group(sender)
                .is_some_and(|group| self.service.joined_group(receiver) == Some(group)),
            (Some(ServiceId::Evs), Some(ServiceId::Evs)) => true,
            _ => false,
        }
    }

    /// Serves one session's requests and flushes its backlog.
    fn serve_session(&mut self, conn: ConnId, core: &mut totem::Node, now: Instant) {
        let Some(session) = self.sessions.get_mut(&conn) else {
            return;
        };
        session.endpoint.clear_wakeup();
        self.now = now;
        self.flush_backlog(conn);
        // Every way out goes through `route`: a client dropped here (a corrupt ring, a bad
        // request, its backlog) must leave its group now, not at the next unrelated event.
        let mut read = 0;
        loop {
            if self.sessions.get(&conn).is_some_and(|s| s.ready.is_some()) {
                // A join or leave this client asked for goes first: its messages are ordered
                // after it (a message sent right after a join must not overtake it).
                self.route(core, now);
                let Some(session) = self.sessions.get_mut(&conn) else {
                    break;
                };
                let (guarantee, message) = session.ready.take().expect("checked");
                let refused = !self.control_backlog.is_empty()
                    || !offer(core, now, guarantee, message.clone(), conn, session);
                if refused {
                    tracing::debug!(conn, "multicast waits for room in the core");
                    session.ready = Some((guarantee, message));
                    session.endpoint.rx.set_status(FLOW_CONTROL_ENABLED);
                    self.counters.mcasts_waiting += 1;
                    break;
                }
            }
            let Some(session) = self.sessions.get_mut(&conn) else {
                break;
            };
            if read >= SERVE_BUDGET {
                if !self.more.contains(&conn) {
                    self.more.push(conn);
                }
                break;
            }
            let next = match session.lookahead.take() {
                Some(entry) => Ok(Some(entry)),
                None => session.endpoint.rx.read_next(),
            };
            let entry = match next {
                Ok(Some(entry)) => entry,
                Ok(None) => {
                    if session.endpoint.rx.prepare_to_sleep() {
                        break;
                    }
                    continue;
                }
                Err(corrupt) => {
                    self.counters.disconnected_bad += 1;
                    self.drop_client(conn, &corrupt.0);
                    break;
                }
            };
            // A new multicast waits while the core holds SEND_AHEAD_MAX unsent (served again
            // once it has sent some: `core_progress`).
            if core.send_queue_bytes() >= SEND_AHEAD_MAX && self.starts_multicast(conn, &entry) {
                self.hold_back(conn, entry);
                if !self.core_waiters.contains(&conn) {
                    tracing::debug!(conn, "multicast waits for the core to send what it has");
                    self.core_waiters.push(conn);
                    self.counters.mcasts_waiting += 1;
                }
                break;
            }
            // A message read already went to the core (it was accepted); a new one waits
            // while a local receiver of it is behind, until that one has caught up (it wakes
            // the node then) — unless a zero-copy buffer waits for it to be read (the thread
            // waiting there may be the one that would read the events).
            if !self.congestion.is_clear() && self.held_back(conn, &entry) {
                self.hold_back(conn, entry);
                if self.congestion.hold(conn) {
                    tracing::debug!(conn, "sender held for a receiver behind");
                    self.counters.senders_held += 1;
                }
                break;
            }
            read += entry.len();
            let request = self.read_request(conn, &entry);
            let Some(session) = self.sessions.get_mut(&conn) else {
                break;
            };
            // Everything the node keeps was copied out: the client may reuse the space (and
            // its zero-copy buffer) now.
            if session.endpoint.rx.release(entry) {
                session.endpoint.wake_peer();
            }
            self.counters.requests += 1;
            match request {
                Request::Answer(answer) => {
                    let (status, reply) = match answer {
                        Ok(reply) => (1u32, reply),
                        Err(error) => (u32::from(error.code()), error.detail().as_bytes().to_vec()),
                    };
                    let mut record = Vec::with_capacity(4 + reply.len());
                    record.extend_from_slice(&status.to_le_bytes());
                    record.extend_from_slice(&reply);
                    self.write(conn, ANSWER, &[&record], &Bytes::new());
                }
                Request::Record(record) => self.write(conn, ANSWER, &[&record], &Bytes::new()),
                Request::Message(guarantee, message) => {
                    session.ready = Some((guarantee, message));
                }
                Request::Batch(guarantee, mut message) => {
                    self.extend_batch(conn, guarantee, &mut message);
                    if let Some(session) = self.sessions.get_mut(&conn) {
                        session.ready = Some((guarantee, message.into()));
                    }
                }
                Request::Nothing => {}
                Request::Bad(why) => {
                    self.counters.disconnected_bad += 1;
                    self.drop_client(conn, &why);
                    break;
                }
            }
        }
        if let Some(session) = self.sessions.get(&conn) {
            session.endpoint.rx.wake_read_waiter();
        }
        self.route(core, now);
    }

    /// Whether `entry` begins a multicast that must wait for a local receiver behind on its
    /// events.
    fn held_back(&self, conn: ConnId, entry: &Entry) -> bool {
        let Some(session) = self.sessions.get(&conn) else {
            return false;
        };
        self.starts_multicast(conn, entry)
            && !session.endpoint.rx.read_awaited()
            && self.must_wait(conn)
    }

    /// Keeps `entry`, a multicast not read yet, for the client's next turn, and shows the
    /// client that its sends are held (`CPG_FLOW_CONTROL_ENABLED`).
    fn hold_back(&mut self, conn: ConnId, entry: Entry) {
        let session = self.sessions.get_mut(&conn).expect("served");
        session.lookahead = Some(entry);
        session.endpoint.rx.set_status(FLOW_CONTROL_ENABLED);
    }

    /// Whether `entry` begins a multicast.
    fn starts_multicast(&self, conn: ConnId, entry: &Entry) -> bool {
        let Some(session) = self.sessions.get(&conn) else {
            return false;
        };
        match session.service {
            ServiceId::Cpg => {
                session.assembly.is_none()
                    && matches!(
                        entry.kind,
                        records::MCAST | records::MCAST_FIRST | records::ZCB_MCAST
                    )
            }
            ServiceId::Evs => matches!(
                entry.kind,
                evs::records::MCAST_JOINED | evs::records::MCAST_GROUPS
            ),
        }
    }

    /// Reads one request (copying what the node keeps out of shared memory).
    fn read_request(&mut self, conn: ConnId, entry: &Entry) -> Request {
        let Some(session) = self.sessions.get_mut(&conn) else {
            return Request::Nothing;
        };
        let rx = &session.endpoint.rx;
        if session.service == ServiceId::Evs {
            if entry.len() > rx_payload_max(session) {
                return Request::Bad("an EVS request larger than a record".into());
            }
            rx.copy(entry, &mut self.request);
            let mut message = None;
            let served = self
                .evs
                .serve(conn, entry.kind, &self.request, |guarantee, m| {
                    message = Some((guarantee, m));
                    Ok(())
                });
            return match (served, message) {
                (_, Some((guarantee, m))) => Request::Message(guarantee, m),
                (evs::Served::Answer(answer), None) => Request::Record(answer),
                (evs::Served::Done | evs::Served::Wait, None) => Request::Nothing,
                (evs::Served::Bad(why), None) => Request::Bad(why),
            };
        }
        if let Some(assembly) = &mut session.assembly {
            if entry.kind != records::MCAST_MORE {
                return Request::Bad(format!(
                    "request kind {} inside the parts of a multicast",
                    entry.kind
                ));
            }
            if entry.len() > assembly.missing {
                return Request::Bad("a multicast's parts exceed its length".into());
            }
            if let Some(message) = &mut assembly.message {
                rx.append(entry, 0..entry.len(), message);
            }
            assembly.missing -= entry.len();
            if assembly.missing > 0 {
                return Request::Nothing;
            }
            let assembly = session.assembly.take().expect("present");
            return match assembly.message {
                Some(message) => Request::Message(assembly.guarantee, message.into()),
                None => Request::Nothing,
            };
        }
        let mut head = Vec::new();
        match entry.kind {
            records::MCAST => {
                rx.append(entry, 0..entry.len().min(1), &mut head);
                let Some((guarantee, _)) = records::decode_mcast(&head) else {
                    return Request::Bad("malformed multicast request".into());
                };
                let len = entry.len() - 1;
                if len > self.max_message_size {
                    return Request::Bad(format!("a multicast of {len} bytes"));
                }
                if len <= BATCH_ITEM_MAX {
                    return self.read_batch(conn, entry, guarantee);
                }
                // The library checks the handle's state first; a client that sends anyway
                // only loses its own message.
                let Ok(mut message) = self.service.mcast_prefix(conn, len) else {
                    return Request::Nothing;
                };
                rx.append(entry, 1..entry.len(), &mut message);
                Request::Message(guarantee, message.into())
            }
            records::MCAST_FIRST => {
                rx.append(
                    entry,
                    0..entry.len().min(records::MCAST_FIRST_HEADER),
                    &mut head,
                );
                let Some((guarantee, total)) = records::decode_mcast_first(&head) else {
                    return Request::Bad("malformed first part of a multicast".into());
                };
                let first = entry.len() - records::MCAST_FIRST_HEADER;
                let Ok(total) = usize::try_from(total) else {
                    return Request::Bad("a multicast longer than memory".into());
                };
                if total > self.max_message_size || first > total {
                    return Request::Bad(format!(
                        "a multicast of {total} bytes beginning with {first}"
                    ));
                }
                let mut message = self.service.mcast_prefix(conn, total).ok();
                if let Some(message) = &mut message {
                    rx.append(entry, records::MCAST_FIRST_HEADER..entry.len(), message);
                }
                if first == total {
                    return message
                        .map_or(Request::Nothing, |m| Request::Message(guarantee, m.into()));
                }
                session.assembly = Some(Assembly {
                    guarantee,
                    message,
                    missing: total - first,
                });
                Request::Nothing
            }
            records::ZCB_MCAST => {
                rx.append(entry, 0..entry.len().min(24), &mut head);
                let Some((guarantee, offset, len)) = records::decode_zcb_mcast(&head) else {
                    return Request::Bad("malformed zero-copy multicast".into());
                };
                let arena = session.endpoint.arena;
                let Some(at) = arena.block(offset, len) else {
                    return Request::Bad(format!(
                        "zero-copy block {offset}+{len} outside its arena of {}",
                        arena.capacity
                    ));
                };
                let len = len as usize;
                if len > self.max_message_size {
                    return Request::Bad(format!("a multicast of {len} bytes"));
                }
                let Ok(mut message) = self.service.mcast_prefix(conn, len) else {
                    return Request::Nothing;
                };
                zcb::copy_block(session.endpoint.region(), at, len, &mut message);
                Request::Message(guarantee, message.into())
            }
            kind => {
                if entry.len() > SMALL_REQUEST_MAX {
                    return Request::Bad(format!(
                        "request of kind {kind} with {} bytes",
                        entry.len()
                    ));
                }
                rx.copy(entry, &mut self.request);
                let body = std::mem::take(&mut self.request);
                let request = self.small_request(conn, kind, &body);
                self.request = body;
                request
            }
        }
    }

    /// The first message of a batch of small multicasts (see [`Request::Batch`]).
    fn read_batch(&mut self, conn: ConnId, first: &Entry, guarantee: Guarantee) -> Request {
        let Ok(mut message) = self.service.mcast_batch_prefix(conn, BATCH_MAX) else {
            return Request::Nothing;
        };
        let Some(session) = self.sessions.get(&conn) else {
            return Request::Nothing;
        };
        batch_item(&session.endpoint.rx, first, &mut message);
        Request::Batch(guarantee, message)
    }

    /// Adds the small multicasts with the same guarantee that the client queued after the
    /// first of a batch, as one totem message (one pass through the core for all of them);
    /// the first other request is kept for next.
    fn extend_batch(&mut self, conn: ConnId, guarantee: Guarantee, message: &mut Vec<u8>) {
        let Some(session) = self.sessions.get_mut(&conn) else {
            return;
        };
        let endpoint = &mut session.endpoint;
        let mut wake = false;
        let mut head = Vec::with_capacity(1);
        // A corrupt ring shows again on the next read, which drops the client.
        while let Ok(Some(next)) = endpoint.rx.read_next() {
            head.clear();
            endpoint.rx.append(&next, 0..next.len().min(1), &mut head);
            let same = next.kind == records::MCAST
                && records::decode_mcast(&head).is_some_and(|(g, _)| g == guarantee)
                && next.len() - 1 <= BATCH_ITEM_MAX
                && message.len() + 4 + next.len() <= BATCH_MAX;
            if !same {
                session.lookahead = Some(next);
                break;
            }
            batch_item(&endpoint.rx, &next, message);
            wake |= endpoint.rx.release_batched(next);
            self.counters.requests += 1;
        }
        if wake && endpoint.rx.take_producer_wake() {
            endpoint.wake_peer();
        }
    }

    /// Serves a request that is answered.
    fn small_request(&mut self, conn: ConnId, kind: u32, body: &[u8]) -> Request {
        Request::Answer(match kind {
            records::JOIN => self.service.join(conn, body).map(|()| Vec::new()),
            records::LEAVE => self.service.leave(conn, body).map(|()| Vec::new()),
            records::MEMBERSHIP_GET => super::cpg::service::check_name(body).map(|()| {
                let members = self.service.membership(body);
                let mut out = Vec::with_capacity(4 + 8 * members.len());
                out.extend_from_slice(&(members.len() as u32).to_le_bytes());
                for (node, pid) in members {
                    out.extend_from_slice(&node.0.to_le_bytes());
                    out.extend_from_slice(&pid.to_le_bytes());
                }
                out
            }),
            records::LOCAL_GET => Ok(self.me.0.to_le_bytes().to_vec()),
            records::ITERATION => self.iteration(body),
            other => return Request::Bad(format!("unknown request kind {other}")),
        })
    }

    /// `cpg_iteration`: groups (type 1), one group's members (2) or every member (3).
    fn iteration(&self, body: &[u8]) -> Result<Vec<u8>, Error> {
        let (&kind, group) = body
            .split_first()
            .ok_or_else(|| Error::InvalidParam("no iteration type".into()))?;
        let entries: Vec<records::IterationEntry> = match kind {
            1 => self
                .service
                .groups()
                .map(|(name, _)| (name.clone(), NodeId(0), 0))
                .collect(),
            2 => {
                super::cpg::service::check_name(group)?;
                let name = Bytes::copy_from_slice(group);
                self.service
                    .membership(group)
                    .into_iter()
                    .map(|(node, pid)| (name.clone(), node, pid))
                    .collect()
            }
            3 => self
                .service
                .groups()
                .flat_map(|(name, members)| {
                    members
                        .iter()
                        .map(move |&(node, pid)| (name.clone(), node, pid))
                })
                .collect(),
            other => {
                return Err(Error::InvalidParam(
                    format!("iteration type {other} is not 1, 2 or 3").into(),
                ));
            }
        };
        Ok(records::encode_iteration(&entries))
    }

    /// The core has room again: control messages first, then waiting clients.
    pub fn writable(&mut self, core: &mut totem::Node, now: Instant) {
        tracing::debug!("the core has room again");
        self.route(core, now);
        let waiting: Vec<ConnId> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.ready.is_some())
            .map(|(&id, _)| id)
            .collect();
        for conn in waiting {
            self.serve_session(conn, core, now);
            self.finish_closing(conn, core, now);
        }
        self.resume_held(core, now);
    }

    /// A CPG delivery from the core.
    pub fn deliver(
        &mut self,
        origin: NodeId,
        payload: &Bytes,
        core: &mut totem::Node,
        now: Instant,
    ) {
        self.service.on_deliver(origin, payload);
        self.route(core, now);
        self.resume_held(core, now);
    }

    /// An EVS delivery from the core.
    pub fn deliver_evs(
        &mut self,
        origin: NodeId,
        payload: &Bytes,
        core: &mut totem::Node,
        now: Instant,
    ) {
        self.evs.on_deliver(origin, payload);
        self.route(core, now);
        self.resume_held(core, now);
    }

    /// A configuration from the core (transitional or regular).
    pub fn configuration(
        &mut self,
        configuration: &totem::Configuration,
        core: &mut totem::Node,
        now: Instant,
    ) {
        self.service.on_configuration(configuration);
        self.evs.on_configuration(configuration);
        self.route(core, now);
        self.resume_held(core, now);
    }

    /// When a client with events waiting will have released nothing for too long (see
    /// [`Clients::handle_timeout`]).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.congestion
            .backlogged()
            .filter_map(|conn| self.sessions.get(&conn)?.stalled_since)
            .min()
            .map(|since| since + STALLED_MAX)
    }

    /// Disconnects the clients that have released nothing for too long while events waited
    /// for them (whether more events come or not), and serves the senders held for them.
    pub fn handle_timeout(&mut self, core: &mut totem::Node, now: Instant) {
        self.now = now;
        let stalled: Vec<ConnId> = self
            .congestion
            .backlogged()
            .filter(|conn| self.sessions.get(conn).is_some_and(|s| s.stalled(now)))
            .collect();
        for conn in stalled {
            self.drop_slow(conn);
        }
        self.route(core, now);
        self.resume_held(core, now);
    }

    /// Wakes the clients that sleep while records wait in their event rings. The driver calls
    /// it before it waits for anything (and may call it more often): until then, records
    /// written to a client are published but the client may not have been told.
    pub fn wake_readers(&mut self) {
        for conn in self.written.drain(..) {
            let Some(session) = self.sessions.get_mut(&conn) else {
                continue;
            };
            session.written = false;
            if session.endpoint.tx.take_wake() {
                session.endpoint.wake_peer();
            }
        }
    }

    /// Carries the service's outputs to the core and the clients.
    fn route(&mut self, core: &mut totem::Node, now: Instant) {
        self.now = now;
        self.flush_events();
        while let Some((guarantee, payload)) = self.control_backlog.pop_front() {
            if let Err(error) = core.mcast(now, guarantee, payload.clone()) {
                if matches!(error.code(), CsError::TryAgain) {
                    self.control_backlog.push_front((guarantee, payload));
                    break;
                }
                tracing::error!(%error, "a CPG control message was refused");
            }
        }
    }

    /// Writes the service's events to the clients; keeps its multicasts for the core.
    fn flush_events(&mut self) {
        let mut scratch = std::mem::take(&mut self.scratch);
        while let Some(output) = self.service.poll_output() {
            match output {
                Output::Multicast { guarantee, payload } => {
                    self.control_backlog.push_back((guarantee, payload));
                }
                Output::Event {
                    conn,
                    event:
                        ClientEvent::Deliver {
                            group,
                            nodeid,
                            pid,
                            payload,
                        },
                } => {
                    records::deliver_header(nodeid, pid, &group, &mut scratch);
                    self.write_deliver(conn, &scratch, &payload);
                }
                Output::Event { conn, event } => {
                    let kind = records::encode_event(&event, &mut scratch);
                    self.write(conn, kind, &[&scratch], &Bytes::new());
                }
            }
        }
        while let Some((conn, kind)) = self.evs.poll_record(&mut scratch) {
            self.write(conn, kind, &[&scratch], &Bytes::new());
        }
        self.scratch = scratch;
    }

    /// Writes a message to a client: one record, or parts when it is larger than a record.
    fn write_deliver(&mut self, conn: ConnId, header: &[u8], payload: &Bytes) {
        let Some(session) = self.sessions.get(&conn) else {
            return;
        };
        let record_max = session.endpoint.tx.payload_max();
        if header.len() + payload.len() <= record_max {
            self.write(conn, records::DELIVER, &[header], payload);
            return;
        }
        let part = PART_MAX.min(record_max - header.len() - 8);
        let total = (payload.len() as u64).to_le_bytes();
        self.write(
            conn,
            records::DELIVER_FIRST,
            &[header, &total],
            &payload.slice(..part),
        );
        let mut at = part;
        while at < payload.len() {
            let end = payload.len().min(at + part);
            self.write(conn, records::DELIVER_MORE, &[], &payload.slice(at..end));
            at = end;
        }
    }

    /// Writes one record (the concatenation of `head` and `body`) to a client's event ring,
    /// or to its backlog when the ring is full.
    fn write(&mut self, conn: ConnId, kind: u32, head: &[&[u8]], body: &Bytes) {
        let Some(session) = self.sessions.get_mut(&conn) else {
            return;
        };
        if session.closing {
            return;
        }
        self.counters.events_written += 1;
        if session.backlog.is_empty() {
            match try_write(&mut session.endpoint, kind, head, body) {
                Written::Yes => {
                    session.mark_written(conn, &mut self.written);
                    return;
                }
                Written::Full => {}
                Written::Never(why) => {
                    self.counters.disconnected_bad += 1;
                    self.drop_client(conn, why);
                    return;
                }
            }
        }
        let waiting = if body.len() >= SHARED_BODY_MIN {
            Backlogged {
                kind,
                head: Bytes::from(head.concat()),
                body: body.clone(),
            }
        } else {
            let mut record = head.concat();
            record.extend_from_slice(body);
            Backlogged {
                kind,
                head: Bytes::from(record),
                body: Bytes::new(),
            }
        };
        session.backlog_bytes += waiting.len();
        session.backlog.push_back(waiting);
        session.stalled_since.get_or_insert(self.now);
        if session.stalled(self.now) || session.backlog_bytes > BACKLOG_MAX {
            self.drop_slow(conn);
            return;
        }
        self.congestion.set_backlog(conn, session.backlog_bytes);
        if session.backlog.len() == 1 {
            // Ask the client to wake the node when it releases room (or write at once if
            // room appeared meanwhile).
            self.flush_backlog(conn);
        }
    }

    /// Disconnects a client that does not read its events (logging how far behind it is).
    fn drop_slow(&mut self, conn: ConnId) {
        let Some(session) = self.sessions.get(&conn) else {
            return;
        };
        let idle = session.stalled_since.map_or(Duration::ZERO, |since| {
            self.now.saturating_duration_since(since)
        });
        let why = format!(
            "it stopped reading its events ({} bytes waiting, nothing read for {:.1} s)",
            session.backlog_bytes,
            idle.as_secs_f64()
        );
        self.counters.disconnected_slow += 1;
        self.drop_client(conn, &why);
    }

    /// Writes what the backlog holds while there is room; otherwise asks the client to wake
    /// the node once it has released room for the first record waiting.
    fn flush_backlog(&mut self, conn: ConnId) {
        self.write_backlog(conn);
        if let Some(session) = self.sessions.get(&conn) {
            self.congestion.set_backlog(conn, session.backlog_bytes);
        }
    }

    /// See [`Clients::flush_backlog`].
    fn write_backlog(&mut self, conn: ConnId) {
        let Some(session) = self.sessions.get_mut(&conn) else {
            return;
        };
        while let Some(waiting) = session.backlog.front() {
            match try_write(
                &mut session.endpoint,
                waiting.kind,
                &[&waiting.head],
                &waiting.body,
            ) {
                Written::Yes => {}
                Written::Full => match session.endpoint.tx.prepare_to_wait(waiting.len()) {
                    Ok(true) => {
                        tracing::debug!(
                            conn,
                            backlog = session.backlog_bytes,
                            "waiting for room in the event ring"
                        );
                        return;
                    }
                    Ok(false) => continue,
                    Err(_) => {
                        self.counters.disconnected_bad += 1;
                        self.drop_client(conn, "it corrupted its event ring");
                        return;
                    }
                },
                Written::Never(why) => {
                    self.counters.disconnected_bad += 1;
                    self.drop_client(conn, why);
                    return;
                }
            }
            session.backlog_bytes -= waiting.len();
            session.backlog.pop_front();
            session.mark_written(conn, &mut self.written);
            // It reads: the clock of a stalled client starts again.
            session.stalled_since = (!session.backlog.is_empty()).then_some(self.now);
        }
    }
}

impl Session {
    /// Notes that records went into this client's event ring, for [`Clients::wake_readers`].
    fn mark_written(&mut self, conn: ConnId, written: &mut Vec<ConnId>) {
        if !self.written {
            self.written = true;
            written.push(conn);
        }
    }

    /// Whether events have waited for this client while it released nothing for too long.
    fn stalled(&self, now: Instant) -> bool {
        self.stalled_since
            .is_some_and(|since| now.saturating_duration_since(since) >= STALLED_MAX)
    }
}

fn rx_payload_max(session: &Session) -> usize {
    // Both rings of a connection have the node's layout.
    session.endpoint.tx.payload_max()
}

/// Appends a small multicast request to a batch: its length (`u32`) and its bytes.
fn batch_item(rx: &Consumer, entry: &Entry, message: &mut Vec<u8>) {
    let len = entry.len() - 1;
    message.extend_from_slice(&(len as u32).to_le_bytes());
    rx.append(entry, 1..entry.len(), message);
}

/// Offers a client's message to the core; false (keeping it) when the core has no room.
fn offer(
    core: &mut totem::Node,
    now: Instant,
    guarantee: Guarantee,
    message: Bytes,
    conn: ConnId,
    session: &mut Session,
) -> bool {
    match core.mcast(now, guarantee, message) {
        Err(Error::TryAgain(_)) => return false,
        Err(error) => tracing::warn!(conn, %error, "multicast refused"),
        Ok(_) => {}
    }
    session.endpoint.rx.set_status(FLOW_CONTROL_DISABLED);
    true
}

/// What became of a record written to a client's event ring.
enum Written {
    Yes,
    /// No room now: keep it for later.
    Full,
    /// It can never be written (the client corrupted its ring, or the record is larger than
    /// the ring): the client must go.
    Never(&'static str),
}

/// Writes a record (the concatenation of `head` and `body`) if the ring has room. The caller
/// notes the client for [`Clients::wake_readers`].
fn try_write(endpoint: &mut Endpoint, kind: u32, head: &[&[u8]], body: &[u8]) -> Written {
    let len = head.iter().map(|part| part.len()).sum::<usize>() + body.len();
    match endpoint.tx.claim(len) {
        Ok(Ok(mut claim)) => {
            let out = claim.payload_mut();
            let mut at = 0;
            for part in head.iter().chain([&body]) {
                out[at..at + part.len()].copy_from_slice(part);
                at += part.len();
            }
            claim.commit_batched(kind);
            Written::Yes
        }
        Ok(Err(ClaimError::Full)) => Written::Full,
        Ok(Err(ClaimError::TooBig)) => Written::Never("an event larger than its event ring"),
        Err(_) => Written::Never("it corrupted its event ring"),
    }
}
