//! Arbitrary bytes as what clients write into their request rings, consumed by the node's client
//! code path (`node::clients::Clients`: ring reading, request decoding, messages in parts and
//! zero-copy blocks, the CPG and EVS services, event writing, backlogs, hang-ups) on a
//! one-node ring of a real protocol core in simulated time.
//!
//! Up to three sessions are set up as the node sets them up (`ipc::connection::accept` on a
//! socket pair: a sealed memfd with two rings and an arena); slots 0 and 1 are CPG clients,
//! slot 2 an EVS client. The target plays the clients with the ring primitives directly, so it
//! can write anything a misbehaving process could. The node must never panic, the core must
//! keep its invariants, and every record the node writes into an event ring must be well
//! formed (an answer with a valid code, an event or a delivery header that decodes).
//!
//! Record format: `op u8, kind u8, len u16 LE, len bytes` (a short last record takes what is
//! left). `op` bits 0-1 pick the client (mod 3); bit 2: the bytes are written raw into the
//! shared memory of that client's region (at the offset their first two bytes give, mod the
//! region's length) instead of as a record; bit 3: the client does not wake the node (it is
//! served at the next wake-up); bit 4: the client reads its event ring afterwards; bit 5: the
//! client hangs up afterwards (a new one connects for its slot next time); bits 6-7: rounds
//! of the core to run afterwards (deliveries, configurations). `kind` 0-8 are the CPG request
//! kinds 1-9 (JOIN, LEAVE, MCAST, MEMBERSHIP_GET, LOCAL_GET, MCAST_FIRST, MCAST_MORE, ZCB_MCAST,
//! ITERATION; EVS numbers its five requests 1-5 too), 9 is ANSWER, 10 the padding kind;
//! anything else is itself.

#![no_main]

use std::os::unix::fs::FileExt as _;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use totemcast::ids::NodeId;
use totemcast::ipc::connection::{self, ConnectRequest, Layout, Offer, Peer};
use totemcast::ipc::ring::{Consumer, Producer};
use totemcast::node::clients::Clients;
use totemcast::node::cpg::{ConnId, records};
use totemcast::node::evs;
use totemcast::node::services::ServiceId;
use totemcast::time::Instant;
use totemcast::totem::{Config, Event, Node, State};

const ME: NodeId = NodeId(1);
/// Small rings, so that full rings, wrap-around and backlogs happen with short inputs.
const LAYOUT: Layout = Layout {
    request_capacity: 4096,
    event_capacity: 4096,
    zcb_capacity: 4096,
};
/// The cluster's largest message: beyond one record (2040 bytes), so messages go in parts.
const MAX_MESSAGE_SIZE: usize = 16 << 10;
/// Most core steps one round may take: bounds each input.
const STEPS_MAX: usize = 64;

fuzz_target!(|data: &[u8]| {
    let mut node = TestNode::new();
    let mut clients: [Option<Client>; 3] = [None, None, None];
    let mut rest = data;
    while let Some((&op, tail)) = rest.split_first() {
        let (kind, tail) = tail.split_first().map_or((4, tail), |(&k, t)| (k, t));
        let len = match tail {
            [lo, hi, ..] => usize::from(u16::from_le_bytes([*lo, *hi])),
            _ => tail.len(),
        };
        let tail = tail.get(2..).unwrap_or(&[]);
        let (bytes, after) = tail.split_at(len.min(tail.len()));
        rest = after;

        let slot = usize::from(op & 3) % clients.len();
        let client = clients[slot].get_or_insert_with(|| node.connect(slot));
        if op & 4 != 0 {
            client.scribble(bytes);
        } else {
            client.write(request_kind(kind), bytes);
        }
        if op & 8 == 0 {
            client.wake(&mut node);
        }
        if op & 16 != 0 {
            client.read_events();
        }
        if op & 32 != 0 {
            let client = clients[slot].take().expect("present");
            node.hang_up(client.conn);
        }
        node.run(usize::from(op >> 6));
    }
    // Everyone is served, reads what it got and goes; the node settles.
    for client in clients.iter_mut().flatten() {
        client.wake(&mut node);
        client.read_events();
    }
    node.run(4);
    for client in clients.iter_mut().flatten() {
        client.read_events();
    }
    for client in clients.into_iter().flatten() {
        node.hang_up(client.conn);
    }
    node.run(4);
    node.core.assert_invariants();
});

fn request_kind(selector: u8) -> u32 {
    match selector {
        0..=8 => u32::from(selector) + 1,
        9 => records::ANSWER,
        // The ring's padding kind: a producer may not commit it (raw bytes can write it).
        10 => u32::MAX,
        other => u32::from(other),
    }
}

/// A one-node ring and its clients, in simulated time.
struct TestNode {
    core: Node,
    clients: Clients,
    now: Instant,
}

impl TestNode {
    fn new() -> TestNode {
        let mut node = TestNode {
            core: Node::new(Config::new(ME, &[ME]), Instant::ZERO).expect("valid config"),
            clients: Clients::new(ME, MAX_MESSAGE_SIZE),
            now: Instant::ZERO,
        };
        for _ in 0..STEPS_MAX {
            if node.core.state() == State::Operational {
                break;
            }
            node.step();
        }
        assert_eq!(
            node.core.state(),
            State::Operational,
            "one node forms a ring"
        );
        node
    }

    /// A new client session, set up as the node sets one up.
    fn connect(&mut self, slot: usize) -> Client {
        let (node_side, client_side) = UnixStream::pair().expect("socket pair");
        let service = if slot == 2 {
            ServiceId::Evs
        } else {
            ServiceId::Cpg
        };
        let request = ConnectRequest::new(service.name());
        let offer = Offer {
            nodeid: ME.0,
            layout: LAYOUT,
            max_message_size: MAX_MESSAGE_SIZE,
        };
        let endpoint = connection::accept(node_side, &request, &offer, None)
            .expect("accept")
            .expect("not refused");
        let region = Arc::clone(endpoint.region());
        let tx = Producer::new(Arc::clone(&region), 0, LAYOUT.request_capacity).expect("ring");
        let rx = Consumer::new(
            Arc::clone(&region),
            LAYOUT.event_offset(),
            LAYOUT.event_capacity,
        )
        .expect("ring");
        let peer = Peer {
            pid: 1000 + slot as u32,
            uid: 0,
            gid: 0,
        };
        let conn = self.clients.add(endpoint, peer, service, slot == 1);
        self.clients.serve(conn, &mut self.core, self.now);
        self.pump();
        Client {
            conn,
            service,
            tx,
            rx,
            region,
            _socket: client_side,
            buffer: Vec::new(),
            scribbled: false,
        }
    }

    fn hang_up(&mut self, conn: ConnId) {
        self.clients.hang_up(conn, &mut self.core, self.now);
        self.pump();
    }

    /// Carries the core's events to the clients until quiet (datagrams go nowhere: one node).
    fn pump(&mut self) {
        loop {
            while self.core.poll_transmit_bytes().is_some() {}
            let Some(event) = self.core.poll_event() else {
                break;
            };
            match event {
                Event::Deliver(delivery) => match ServiceId::of(&delivery.payload) {
                    Some(ServiceId::Cpg) => self.clients.deliver(
                        delivery.origin,
                        &delivery.payload,
                        &mut self.core,
                        self.now,
                    ),
                    Some(ServiceId::Evs) => self.clients.deliver_evs(
                        delivery.origin,
                        &delivery.payload,
                        &mut self.core,
                        self.now,
                    ),
                    None => {}
                },
                Event::Configuration(configuration) => {
                    self.clients
                        .configuration(&configuration, &mut self.core, self.now);
                }
                Event::Writable => self.clients.writable(&mut self.core, self.now),
                Event::Originated { .. } | Event::PersistRingSeq(_) => {}
            }
        }
        self.core.assert_invariants();
    }

    /// Fires the core's next timer.
    fn step(&mut self) {
        if let Some(due) = self.core.poll_timeout() {
            self.now = self.now.max(due);
            self.core.handle_timeout(self.now);
        } else {
            self.now += Duration::from_millis(10);
        }
        self.pump();
    }

    fn run(&mut self, rounds: usize) {
        for _ in 0..rounds * 4 {
            self.step();
        }
    }
}

/// The client side of one session, played by hand.
struct Client {
    conn: ConnId,
    service: ServiceId,
    tx: Producer,
    rx: Consumer,
    region: Arc<totemcast::ipc::shm::SharedMemory>,
    /// Kept open: closing it is what a hang-up looks like to the driver.
    _socket: UnixStream,
    buffer: Vec<u8>,
    /// It wrote raw bytes over its event ring: what it reads there proves nothing.
    scribbled: bool,
}

impl Client {
    /// Writes a record if it fits (a full ring is what a real client sees as TRY_AGAIN).
    fn write(&mut self, kind: u32, body: &[u8]) {
        if kind == u32::MAX {
            return;
        }
        if let Ok(Ok(mut claim)) = self.tx.claim(body.len()) {
            claim.payload_mut().copy_from_slice(body);
            let _ = claim.commit(kind);
        }
    }

    /// Writes `bytes` raw into the shared region, at the offset their first two bytes name.
    fn scribble(&mut self, bytes: &[u8]) {
        let Some((offset, payload)) = bytes.split_first_chunk::<2>() else {
            return;
        };
        let len = self.region.len();
        let offset = usize::from(u16::from_le_bytes(*offset)) * 8 % len;
        let payload = &payload[..payload.len().min(len - offset)];
        self.scribbled |= offset + payload.len() > LAYOUT.event_offset();
        let memfd = std::fs::File::from(self.region.fd().try_clone_to_owned().expect("dup"));
        memfd
            .write_all_at(payload, offset as u64)
            .expect("the memfd takes writes");
    }

    /// Wakes the node: it serves this client (as on its eventfd).
    fn wake(&mut self, node: &mut TestNode) {
        node.clients.serve(self.conn, &mut node.core, node.now);
        node.pump();
    }

    /// Reads the event ring: the node writes only well-formed records.
    fn read_events(&mut self) {
        loop {
            let entry = match self.rx.read_next() {
                Ok(Some(entry)) => entry,
                // A ring this client scribbled over, or the end.
                Ok(None) | Err(_) => return,
            };
            self.rx.copy(&entry, &mut self.buffer);
            let _ = self.rx.release(entry);
            if self.scribbled {
                continue;
            }
            if entry.kind == records::ANSWER {
                let code = self
                    .buffer
                    .first_chunk::<4>()
                    .map(|code| u32::from_le_bytes(*code));
                assert!(
                    code.is_some_and(
                        |code| code == 1 || totemcast::Error::from_code(code, "").is_ok()
                    ),
                    "the node wrote an answer without a valid code: {:?}",
                    &self.buffer[..self.buffer.len().min(16)]
                );
            } else {
                assert!(
                    self.well_formed(entry.kind),
                    "the node wrote a {:?} record of kind {} that does not decode: {:?}",
                    self.service,
                    entry.kind,
                    &self.buffer[..self.buffer.len().min(32)]
                );
            }
        }
    }

    /// Whether an event record the node wrote (in `buffer`) is one of its service's.
    fn well_formed(&self, kind: u32) -> bool {
        let body = &self.buffer;
        match self.service {
            ServiceId::Evs => evs::records::decode_event(kind, body).is_some(),
            ServiceId::Cpg => match kind {
                records::DELIVER => records::decode_deliver_header(body).is_some(),
                records::DELIVER_FIRST => records::decode_deliver_header(body)
                    .is_some_and(|(_, _, _, start)| body.len() >= start + 8),
                records::DELIVER_MORE => true,
                kind => records::decode_event(kind, body).is_some(),
            },
        }
    }
}
