//! The EVS side of the node's client handling, without I/O: [`Sessions`] owns the EVS
//! [`Service`], turns request records into service calls, answers and core multicasts, and the
//! service's events into event records. The node's IPC layer (`node::clients`) reads records
//! from a client's request ring, calls [`Sessions::serve`], writes what comes back into the
//! client's event ring, and hands totem deliveries and configurations to it.

use bytes::{Bytes, BytesMut};

use super::records::{self, Request};
use super::service::{ConnId, Output, Service};
use crate::api::Guarantee;
use crate::error::{Error, Result};
use crate::ids::NodeId;
use crate::totem::Configuration;

/// What became of one request record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Served {
    /// Release the request and write this record (kind [`records::ANSWER`]) to the client.
    Answer(Vec<u8>),
    /// Release the request; nothing to answer (a multicast: accepted, or dropped and logged).
    Done,
    /// The core's send queue is full: keep the request in the ring and serve it again when the
    /// core has room (`totem::Event::Writable`). Nothing was accepted.
    Wait,
    /// The client broke the protocol (unknown kind, malformed body): disconnect it.
    Bad(String),
}

/// Counters of the EVS sessions.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct EvsCounters {
    /// Requests served (answered or multicast).
    pub requests: u64,
    /// Multicasts accepted by the core.
    pub mcasts: u64,
    /// Multicasts the service or the core refused for good (logged, dropped): the client
    /// library checks first, so these come from clients that do not use it.
    pub mcasts_dropped: u64,
}

/// The EVS service and its clients' records.
#[derive(Debug)]
pub struct Sessions {
    service: Service,
    counters: EvsCounters,
}

impl Sessions {
    /// No connections yet, on node `me`.
    #[must_use]
    pub fn new(me: NodeId) -> Sessions {
        Sessions {
            service: Service::new(me),
            counters: EvsCounters::default(),
        }
    }

    /// The service (for status).
    #[must_use]
    pub fn service(&self) -> &Service {
        &self.service
    }

    /// Counters.
    #[must_use]
    pub fn counters(&self) -> &EvsCounters {
        &self.counters
    }

    /// A new EVS session of process `pid` (its first event, the current view, is queued).
    pub fn connect(&mut self, conn: ConnId, pid: u32) {
        self.service.connect(conn, pid);
    }

    /// The session ended (hang-up, or dropped by the node).
    pub fn disconnect(&mut self, conn: ConnId) {
        self.service.disconnect(conn);
    }

    /// Serves one request record of `conn`. A multicast goes to the core through `mcast`, with
    /// the guarantee the client chose; `mcast` returns `CS_ERR_TRY_AGAIN` when the core's send
    /// queue is full (the request then waits, see [`Served::Wait`]).
    pub fn serve(
        &mut self,
        conn: ConnId,
        kind: u32,
        body: &[u8],
        mcast: impl FnOnce(Guarantee, Bytes) -> Result<()>,
    ) -> Served {
        let Some(request) = Request::decode(kind, body) else {
            return Served::Bad(format!("malformed EVS request of kind {kind}"));
        };
        let answer = match request {
            Request::Join(keys) => self.service.join(conn, &keys).map(|()| Vec::new()),
            Request::Leave(keys) => self.service.leave(conn, &keys).map(|()| Vec::new()),
            Request::MembershipGet => {
                let (me, members) = self.service.membership();
                Ok(records::encode_membership(me, &members))
            }
            Request::McastJoined { guarantee, payload } => {
                let message = self.service.mcast_joined(conn, payload);
                return self.multicast(conn, guarantee, message, mcast);
            }
            Request::McastGroups {
                guarantee,
                groups,
                payload,
            } => {
                let message = self.service.mcast_groups(conn, &groups, payload);
                return self.multicast(conn, guarantee, message, mcast);
            }
        };
        self.counters.requests += 1;
        Served::Answer(records::encode_answer(&answer))
    }

    fn multicast(
        &mut self,
        conn: ConnId,
        guarantee: Guarantee,
        message: Result<Bytes>,
        mcast: impl FnOnce(Guarantee, Bytes) -> Result<()>,
    ) -> Served {
        let result = message.and_then(|message| mcast(guarantee, message));
        match result {
            Err(Error::TryAgain(_)) => return Served::Wait,
            Err(error) => {
                tracing::warn!(conn, %error, "EVS multicast refused");
                self.counters.mcasts_dropped += 1;
            }
            Ok(()) => self.counters.mcasts += 1,
        }
        self.counters.requests += 1;
        Served::Done
    }

    /// An EVS payload delivered by the core from `origin`.
    pub fn on_deliver(&mut self, origin: NodeId, payload: &Bytes) {
        self.service.on_deliver(origin, payload);
    }

    /// A configuration from the core (transitional and regular alike).
    pub fn on_configuration(&mut self, configuration: &Configuration) {
        self.service.on_configuration(configuration);
    }

    /// The next event as a record for `conn`: its body encoded into `out`, its kind returned.
    /// Events of connections that are gone are skipped.
    pub fn poll_record(&mut self, out: &mut BytesMut) -> Option<(ConnId, u32)> {
        loop {
            let Output { conn, event } = self.service.poll_output()?;
            if self.service.groups(conn).is_some() {
                return Some((conn, records::encode_event(&event, out)));
            }
        }
    }
}
