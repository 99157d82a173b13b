//! Local clients of a node: their IPC sessions (rings, wake-ups, sockets) and the CPG service
//! they talk to. The driver hands over new connections, wake-ups and hang-ups, and the core's
//! CPG deliveries and configurations; this module carries requests to the service and the core,
//! and events back into each client's event ring.
//!
//! Nothing accepted is dropped: a multicast the core refuses (its send queue is full) stays in
//! the client's request ring until the core has room, so the client sees TRY_AGAIN when its own
//! ring fills — before anything is accepted. Control messages (join, leave, joinlist) the core
//! refuses wait in a queue of their own. Events a client does not read in time wait in a bounded
//! backlog; beyond it the client is disconnected with a logged reason (a slow client never
//! blocks the ring or other clients).

use std::collections::{BTreeMap, VecDeque};

use bytes::{Bytes, BytesMut};
use serde::Serialize;

use super::cpg::records::{self, ANSWER};
use super::cpg::{ConnId, Output, Service};
use crate::api::Guarantee;
use crate::error::{CsError, Error};
use crate::ids::NodeId;
use crate::ipc::connection::{Endpoint, Peer};
use crate::ipc::ring::{ClaimError, Entry};
use crate::time::Instant;
use crate::totem;

/// Most bytes of events waiting for one slow client before it is disconnected.
const BACKLOG_MAX: usize = 64 << 20;

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
    /// Times a multicast waited for room in the core.
    pub mcasts_waiting: u64,
    /// Events written to clients' rings.
    pub events_written: u64,
}

struct Session {
    endpoint: Endpoint,
    peer: Peer,
    /// A request read but not served yet (a multicast waiting for room in the core).
    pending: Option<Entry>,
    /// Events that did not fit in the event ring: (kind, body).
    backlog: VecDeque<(u32, Bytes)>,
    backlog_bytes: usize,
}

/// Every local client and the CPG service.
pub struct Clients {
    me: NodeId,
    service: Service,
    sessions: BTreeMap<ConnId, Session>,
    next: ConnId,
    control_backlog: VecDeque<(Guarantee, Bytes)>,
    /// Reused buffers: an encoded event, a request's body.
    scratch: BytesMut,
    request: Vec<u8>,
    counters: ClientCounters,
}

impl Clients {
    /// No clients yet, on node `me`.
    #[must_use]
    pub fn new(me: NodeId) -> Clients {
        Clients {
            me,
            service: Service::new(me),
            sessions: BTreeMap::new(),
            next: 1,
            control_backlog: VecDeque::new(),
            scratch: BytesMut::new(),
            request: Vec::new(),
            counters: ClientCounters::default(),
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

    /// A new session; returns its id (the driver registers its descriptors).
    pub fn add(&mut self, endpoint: Endpoint, peer: Peer) -> ConnId {
        let conn = self.next;
        self.next += 1;
        self.service.connect(conn, peer.pid, false);
        self.sessions.insert(
            conn,
            Session {
                endpoint,
                peer,
                pending: None,
                backlog: VecDeque::new(),
                backlog_bytes: 0,
            },
        );
        self.counters.connected += 1;
        conn
    }

    /// The session of `conn`, for registration.
    #[must_use]
    pub fn endpoint(&self, conn: ConnId) -> Option<&Endpoint> {
        self.sessions.get(&conn).map(|s| &s.endpoint)
    }

    /// The client closed its socket (or died): PROCDOWN for its membership.
    pub fn hang_up(&mut self, conn: ConnId, core: &mut totem::Node, now: Instant) {
        if self.sessions.remove(&conn).is_some() {
            self.counters.closed += 1;
            self.service.disconnect(conn);
            self.route(core, now);
        }
    }

    /// Drops a misbehaving or slow client (closing its descriptors, which takes them out of
    /// the driver's poll set) and logs why.
    fn drop_client(&mut self, conn: ConnId, why: &str) {
        if let Some(session) = self.sessions.remove(&conn) {
            tracing::warn!(
                conn,
                pid = session.peer.pid,
                uid = session.peer.uid,
                why,
                "client disconnected"
            );
            self.service.disconnect(conn);
        }
    }

    /// The client woke the node: serve its requests and flush its backlog.
    pub fn serve(&mut self, conn: ConnId, core: &mut totem::Node, now: Instant) {
        let Some(session) = self.sessions.get_mut(&conn) else {
            return;
        };
        session.endpoint.clear_wakeup();
        self.flush_backlog(conn);
        loop {
            let Some(session) = self.sessions.get_mut(&conn) else {
                return;
            };
            let entry = match session.pending.take() {
                Some(entry) => entry,
                None => match session.endpoint.rx.read_next() {
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
                        return;
                    }
                },
            };
            session.endpoint.rx.copy(&entry, &mut self.request);
            let body = std::mem::take(&mut self.request);
            let served = self.request_one(conn, entry.kind, &body, core, now);
            self.request = body;
            let Some(session) = self.sessions.get_mut(&conn) else {
                return;
            };
            if served {
                self.counters.requests += 1;
                if session.endpoint.rx.release(entry) {
                    session.endpoint.wake_peer();
                }
            } else {
                // The core's queue is full: keep the request; `writable` retries it.
                session.pending = Some(entry);
                self.counters.mcasts_waiting += 1;
                break;
            }
        }
        self.route(core, now);
    }

    /// Serves one request; false if it must wait for room in the core.
    fn request_one(
        &mut self,
        conn: ConnId,
        kind: u32,
        body: &[u8],
        core: &mut totem::Node,
        now: Instant,
    ) -> bool {
        let answer: Result<Vec<u8>, Error> = match kind {
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
            records::MCAST => {
                let Some((guarantee, payload)) = records::decode_mcast(body) else {
                    self.counters.disconnected_bad += 1;
                    self.drop_client(conn, "malformed multicast request");
                    return true;
                };
                // The library checks the handle's state first; a client that sends anyway only
                // loses its own message.
                if let Ok(message) = self.service.mcast(conn, payload) {
                    match core.mcast(now, guarantee, message) {
                        Err(Error::TryAgain(_)) => return false,
                        Err(error) => tracing::warn!(conn, %error, "multicast refused"),
                        Ok(_) => {}
                    }
                }
                return true;
            }
            other => {
                self.counters.disconnected_bad += 1;
                self.drop_client(conn, &format!("unknown request kind {other}"));
                return true;
            }
        };
        let (status, reply) = match answer {
            Ok(reply) => (1u32, reply),
            Err(error) => (u32::from(error.code()), error.detail().as_bytes().to_vec()),
        };
        let mut record = Vec::with_capacity(4 + reply.len());
        record.extend_from_slice(&status.to_le_bytes());
        record.extend_from_slice(&reply);
        self.write(conn, ANSWER, &record);
        true
    }

    /// The core has room again: control messages first, then waiting clients.
    pub fn writable(&mut self, core: &mut totem::Node, now: Instant) {
        self.route(core, now);
        let waiting: Vec<ConnId> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.pending.is_some())
            .map(|(&id, _)| id)
            .collect();
        for conn in waiting {
            self.serve(conn, core, now);
        }
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
    }

    /// A configuration from the core.
    pub fn configuration(
        &mut self,
        configuration: &totem::Configuration,
        core: &mut totem::Node,
        now: Instant,
    ) {
        self.service.on_configuration(configuration);
        self.route(core, now);
    }

    /// Carries the service's outputs to the core and the clients.
    fn route(&mut self, core: &mut totem::Node, now: Instant) {
        let mut scratch = std::mem::take(&mut self.scratch);
        while let Some(output) = self.service.poll_output() {
            match output {
                Output::Multicast { guarantee, payload } => {
                    self.control_backlog.push_back((guarantee, payload));
                }
                Output::Event { conn, event } => {
                    let kind = records::encode_event(&event, &mut scratch);
                    self.write(conn, kind, &scratch);
                }
            }
        }
        self.scratch = scratch;
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

    /// Writes one record to a client's event ring, or to its backlog when the ring is full.
    fn write(&mut self, conn: ConnId, kind: u32, body: &[u8]) {
        let Some(session) = self.sessions.get_mut(&conn) else {
            return;
        };
        self.counters.events_written += 1;
        if session.backlog.is_empty() {
            match try_write(&mut session.endpoint, kind, body) {
                Written::Yes => return,
                Written::Full => {}
                Written::Never(why) => {
                    self.counters.disconnected_bad += 1;
                    self.drop_client(conn, why);
                    return;
                }
            }
        }
        session.backlog_bytes += body.len();
        session
            .backlog
            .push_back((kind, Bytes::copy_from_slice(body)));
        // Ask the client to wake the node when it releases room.
        let _ = session.endpoint.tx.prepare_to_wait(0);
        if session.backlog_bytes > BACKLOG_MAX {
            self.counters.disconnected_slow += 1;
            self.drop_client(conn, "it stopped reading its events (backlog over 64 MiB)");
        }
    }

    fn flush_backlog(&mut self, conn: ConnId) {
        let Some(session) = self.sessions.get_mut(&conn) else {
            return;
        };
        while let Some((kind, body)) = session.backlog.front() {
            match try_write(&mut session.endpoint, *kind, body) {
                Written::Yes => {}
                Written::Full => {
                    let _ = session.endpoint.tx.prepare_to_wait(0);
                    return;
                }
                Written::Never(why) => {
                    self.counters.disconnected_bad += 1;
                    self.drop_client(conn, why);
                    return;
                }
            }
            session.backlog_bytes -= body.len();
            session.backlog.pop_front();
        }
    }
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

/// Writes a record if the ring has room; wakes the client when it sleeps.
fn try_write(endpoint: &mut Endpoint, kind: u32, body: &[u8]) -> Written {
    match endpoint.tx.push(kind, body) {
        Ok(Ok(wake)) => {
            if wake {
                endpoint.wake_peer();
            }
            Written::Yes
        }
        Ok(Err(ClaimError::Full)) => Written::Full,
        Ok(Err(ClaimError::TooBig)) => Written::Never("an event larger than its event ring"),
        Err(_) => Written::Never("it corrupted its event ring"),
    }
}
