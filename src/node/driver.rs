//! The event loop that feeds the sans-IO core from UDP sockets and the monotonic clock, and
//! carries its outputs to the sockets, the history log, the state file and the logs. No
//! protocol decisions are made here.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::time::Duration;

use mio::{Events, Interest, Poll, Token};
use serde_json::json;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;

use std::io::Read as _;
use std::os::fd::AsRawFd;

use mio::unix::SourceFd;

use super::busy_poll::BusyPoll;
use super::clients::Clients;
use super::clock;
use super::config_file::{CipherName, FileConfig, Transport as TransportKind};
use super::control::{self, Connection, ControlSocket, ReadOutcome, Request};
use super::crypto::{Cipher, ClusterKey, Opener, Sealer};
use super::services::ServiceId;
use super::state_file::{NodeState, StateFile};
use super::transport::{Mode, RecvBatch, Transport};
use super::workload::Workload;
use crate::error::Error;
use crate::ipc;

use crate::history::{AppMessageId, HistoryEvent, ProcessId, Record, app_id, payload_hash};
use crate::ids::NodeId;
use crate::time::Instant;
use crate::totem::{self, ConfigurationKind, Event};

/// What `totemcast node` was asked to do.
#[derive(Clone, Debug, Default)]
pub struct NodeOptions {
    /// The configuration file.
    pub config: PathBuf,
    /// This node's id, when the config cannot tell (several local addresses).
    pub nodeid: Option<u32>,
    /// Record the history (PROTOCOL.md §2.1) as JSON lines here (appended).
    pub history: Option<PathBuf>,
    /// Run the test workload at this many messages per second.
    pub workload_rate: Option<u32>,
}

const UNICAST: Token = Token(0);
const MULTICAST: Token = Token(1);
const CONTROL: Token = Token(2);
const SIGNALS: Token = Token(3);
const FIRST_CONNECTION: usize = 16;
/// Tokens of IPC sessions: `CLIENT_BASE + 2 × conn` is its wake-up, `+ 1` its socket.
const CLIENT_BASE: usize = 1 << 40;

/// Most IPC sessions at once (each maps its rings: 24 MiB of address space, resident only
/// as used).
const SESSIONS_MAX: usize = 4096;

/// Largest datagram we accept (UDP's limit).
const DATAGRAM_MAX: usize = 65_536;

/// Runs one node in the foreground until SIGTERM or SIGINT.
pub fn run(config: FileConfig, options: &NodeOptions) -> Result<(), String> {
    let mut driver = Driver::start(config, options)?;
    driver
        .run(Stop::Signals)
        .map_err(|error| format!("node stopped: {error}"))
}

/// What an embedded node's owner asks of its driver thread.
#[derive(Debug)]
pub enum Command {
    /// Serve a local client on this end of a socket pair.
    Connect(std::os::unix::net::UnixStream),
    /// Leave the ring and stop.
    Stop,
}

/// How a running driver learns to stop and of local clients.
pub enum Stop {
    /// SIGTERM or SIGINT (a node in the foreground).
    Signals,
    /// Commands from the owner, each followed by a wake-up of the waker this hands back.
    Commands {
        /// The commands.
        commands: std::sync::mpsc::Receiver<Command>,
        /// Receives the waker the owner must call after sending a command.
        waker: std::sync::mpsc::SyncSender<std::sync::Arc<mio::Waker>>,
    },
}

/// Starts a node whose driver runs on the calling thread with `stop` (an embedded node's
/// thread). Returns when it stops; errors at start come back before anything runs.
pub fn run_embedded(config: FileConfig, options: &NodeOptions, stop: Stop) -> Result<(), String> {
    let mut driver = Driver::start(config, options)?;
    driver
        .run(stop)
        .map_err(|error| format!("node stopped: {error}"))
}

struct Driver {
    me: NodeId,
    config: FileConfig,
    core: totem::Node,
    sealer: Sealer,
    opener: Opener,
    transport: Transport,
    control: ControlSocket,
    connections: BTreeMap<usize, Connection>,
    next_connection: usize,
    state: NodeState,
    state_file: StateFile,
    process: ProcessId,
    history: Option<BufWriter<File>>,
    workload: Option<Workload>,
    /// Workload messages accepted by the core, by message number, until originated.
    numbered: BTreeMap<u64, AppMessageId>,
    clients: Clients,
    started: Instant,
    buffers: Buffers,
}

struct Buffers {
    receive: RecvBatch,
    plain: Vec<u8>,
    sealed: Vec<u8>,
}

impl Driver {
    fn start(config: FileConfig, options: &NodeOptions) -> Result<Driver, String> {
        let me = config
            .select_local_node(options.nodeid)
            .map_err(|error| error.to_string())?;
        let cipher = match config.crypto.cipher {
            CipherName::Aes256Gcm => Cipher::Aes256Gcm,
            CipherName::ChaCha20Poly1305 => Cipher::ChaCha20Poly1305,
            CipherName::None => Cipher::None,
        };
        let authkey = if cipher == Cipher::None {
            tracing::warn!("cipher = \"none\": datagrams are neither authenticated nor encrypted");
            Vec::new()
        } else {
            super::crypto::read_authkey(&config.crypto.authkey)
                .map_err(|error| error.to_string())?
        };
        // The sockets first: a second node with this id fails here, before it touches the
        // state file of the one running.
        let peers = config
            .nodes
            .iter()
            .map(|node| (node.nodeid, node.addr))
            .collect();
        let mode = match (config.totem.transport, config.totem.mcastaddr) {
            (TransportKind::Udp, Some(group)) => Mode::Multicast(group),
            _ => Mode::Unicast,
        };
        let transport = Transport::bind(me, peers, mode).map_err(|error| error.to_string())?;
        let control = ControlSocket::bind(&config.ipc.socket).map_err(|error| error.to_string())?;
        let state_file =
            StateFile::open(&config.system.state_dir, me).map_err(|error| error.to_string())?;
        let previous = state_file.load().map_err(|error| error.to_string())?;
        if previous.is_none() {
            tracing::info!(path = %state_file.path().display(), "no state file: starting afresh");
        }
        let state = NodeState::next_start(previous, clock::unix_millis());
        // Stored before the first datagram: the session and ring seq must grow even if this
        // run is killed at once.
        state_file
            .store(&state)
            .map_err(|error| error.to_string())?;

        let key = ClusterKey::derive(&authkey, &config.totem.cluster_name, cipher);
        let sealer = Sealer::new(&key, me, state.session);
        let opener = Opener::new(&key, &config.node_ids());

        let mut core_config = config
            .core_config(me, cipher.overhead())
            .map_err(|error| error.to_string())?;
        core_config.ring_seq_start = state.ring_seq;
        core_config.rng_seed = state.session ^ u64::from(me.0).rotate_left(32);
        let now = clock::now();
        let core = totem::Node::new(core_config, now).map_err(|error| error.to_string())?;

        let process = ProcessId {
            node: me,
            incarnation: state.incarnation,
        };
        let history = match &options.history {
            Some(path) => Some(BufWriter::new(
                File::options()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|error| format!("{}: {error}", path.display()))?,
            )),
            None => None,
        };
        let workload = options
            .workload_rate
            .map(|rate| Workload::new(process, rate, state.session, now));
        tracing::info!(
            nodeid = me.0,
            incarnation = state.incarnation,
            cluster = %config.totem.cluster_name,
            cipher = cipher.name(),
            "node started"
        );
        let max_message_size = config.totem.max_message_size;
        let mut driver = Driver {
            me,
            config,
            core,
            sealer,
            opener,
            transport,
            control,
            connections: BTreeMap::new(),
            next_connection: FIRST_CONNECTION,
            state,
            state_file,
            process,
            history,
            workload,
            numbered: BTreeMap::new(),
            clients: Clients::new(me, max_message_size),
            started: now,
            buffers: Buffers {
                receive: RecvBatch::new(DATAGRAM_MAX),
                plain: Vec::with_capacity(DATAGRAM_MAX),
                sealed: Vec::with_capacity(DATAGRAM_MAX),
            },
        };
        driver.record(now, HistoryEvent::Start);
        Ok(driver)
    }

    fn run(&mut self, stop_source: Stop) -> io::Result<()> {
        let mut poll = Poll::new()?;
        let registry = poll.registry();
        registry.register(self.transport.unicast_socket(), UNICAST, Interest::READABLE)?;
        if let Some(socket) = self.transport.multicast_socket() {
            registry.register(socket, MULTICAST, Interest::READABLE)?;
        }
        registry.register(self.control.listener(), CONTROL, Interest::READABLE)?;
        let (mut signals, commands) = match stop_source {
            Stop::Signals => {
                let mut signals = Signals::new([SIGTERM, SIGINT])?;
                registry.register(&mut signals, SIGNALS, Interest::READABLE)?;
                (Some(signals), None)
            }
            Stop::Commands { commands, waker } => {
                let _ = waker.send(std::sync::Arc::new(mio::Waker::new(registry, SIGNALS)?));
                (None, Some(commands))
            }
        };
        let mut events = Events::with_capacity(64);
        let mut stop = None;
        let mut busy = BusyPoll::new(self.config.system.busy_poll);
        while stop.is_none() {
            let now = clock::now();
            let deadline = [
                self.core.poll_timeout(),
                self.clients.poll_timeout(),
                self.workload.as_ref().and_then(Workload::next_at),
            ]
            .into_iter()
            .flatten()
            .min();
            let timeout = if self.clients.has_more() {
                // A client has requests left from its last turn: look at the sockets, then
                // serve it again.
                Some(Duration::ZERO)
            } else {
                deadline.map(|deadline| deadline.saturating_duration_since(now))
            };
            match poll.poll(&mut events, busy.wait(now, timeout)) {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(error),
            }
            for event in &events {
                match event.token() {
                    UNICAST => self.receive(false)?,
                    MULTICAST => self.receive(true)?,
                    CONTROL => self.accept(&poll)?,
                    SIGNALS => {
                        if let Some(signals) = &mut signals {
                            stop = signals.pending().next().or(stop);
                        }
                        for command in commands.iter().flat_map(|c| c.try_iter()) {
                            match command {
                                Command::Connect(stream) => self.local_client(&poll, stream)?,
                                Command::Stop => stop = Some(SIGTERM),
                            }
                        }
                    }
                    Token(id) if id >= CLIENT_BASE => self.client_event(&poll, id),
                    Token(id) => self.serve(&poll, id),
                }
            }
            let now = clock::now();
            if !events.is_empty() {
                busy.worked(now);
            }
            self.clients.serve_more(&mut self.core, now);
            if self.core.poll_timeout().is_some_and(|due| due <= now) {
                self.core.handle_timeout(now);
            }
            if self.clients.poll_timeout().is_some_and(|due| due <= now) {
                self.clients.handle_timeout(&mut self.core, now);
            }
            self.run_workload(now);
            self.flush(now);
            if self.clients.core_progress(&mut self.core, now) {
                self.flush(now);
            }
        }
        let signal = stop.unwrap_or(SIGTERM);
        tracing::info!(signal, "leaving the ring");
        let now = clock::now();
        self.core.leave(now);
        self.flush(now);
        self.record(now, HistoryEvent::Crash);
        self.flush_history();
        Ok(())
    }

    /// Drains one socket into the core.
    fn receive(&mut self, multicast: bool) -> io::Result<()> {
        // Each batch is one system call; the core's output goes out between batches so that a
        // busy socket does not hold back the token.
        while self
            .transport
            .recv_batch(multicast, &mut self.buffers.receive)?
            > 0
        {
            let now = clock::now();
            for index in 0..self.buffers.receive.len() {
                let (datagram, from) = self.buffers.receive.get(index);
                let transport = &self.transport;
                let opened = self
                    .opener
                    .open_from(datagram, &mut self.buffers.plain, |node| {
                        from.is_some_and(|from| transport.source_matches(node, from))
                    });
                match opened {
                    Ok(node) if node == self.me => {}
                    Ok(node) => self.core.handle_datagram(now, node, &self.buffers.plain),
                    Err(reason) => tracing::debug!(?reason, ?from, "datagram dropped"),
                }
            }
            self.flush(now);
        }
        Ok(())
    }

    fn run_workload(&mut self, now: Instant) {
        let Some(workload) = &mut self.workload else {
            return;
        };
        while let Some((id, guarantee, payload)) = workload.due(now) {
            let hash = payload_hash(&payload);
            let len = payload.len();
            let Ok(number) = self.core.mcast(now, guarantee, payload) else {
                workload.refused(now);
                break;
            };
            workload.accepted(now);
            self.numbered.insert(number, id);
            let event = HistoryEvent::Submit {
                msg: id,
                guarantee,
                payload_hash: hash,
                len,
            };
            record(&mut self.history, self.process, now, event);
        }
    }

    /// Sends what the core wants sent and carries out its events.
    fn flush(&mut self, now: Instant) {
        // Events can make more output (a delivery answered by the CPG service): until quiet.
        loop {
            let mut quiet = true;
            while let Some((destination, datagram)) = self.core.poll_transmit_bytes() {
                if self.transport.reaches_anyone(destination) {
                    self.sealer.seal(&datagram, &mut self.buffers.sealed);
                    self.transport.queue(destination, &self.buffers.sealed);
                }
                quiet = false;
            }
            // Out before the events, which may take long (deliveries to clients): the token
            // must not wait for them.
            self.transport.flush_queued();
            while let Some(event) = self.core.poll_event() {
                self.handle_event(now, event);
                quiet = false;
            }
            if quiet {
                break;
            }
        }
        // Once per burst of deliveries, not once per message: see `Clients::wake_readers`.
        self.clients.wake_readers();
        self.flush_history();
    }

    fn handle_event(&mut self, now: Instant, event: Event) {
        match event {
            Event::Deliver(delivery) => {
                match ServiceId::of(&delivery.payload) {
                    Some(ServiceId::Cpg) => {
                        self.clients.deliver(
                            delivery.origin,
                            &delivery.payload,
                            &mut self.core,
                            now,
                        );
                        return;
                    }
                    Some(ServiceId::Evs) => {
                        self.clients.deliver_evs(
                            delivery.origin,
                            &delivery.payload,
                            &mut self.core,
                            now,
                        );
                        return;
                    }
                    None => {}
                }
                if let Some(msg) = app_id(&delivery.payload) {
                    let event = HistoryEvent::Deliver {
                        msg,
                        guarantee: delivery.guarantee,
                        position: delivery.position,
                        payload_hash: payload_hash(&delivery.payload),
                        len: delivery.payload.len(),
                    };
                    self.record(now, event);
                }
            }
            Event::Originated { number, position } => {
                if let Some(msg) = self.numbered.remove(&number) {
                    self.record(now, HistoryEvent::Originate { msg, position });
                }
            }
            Event::Configuration(configuration) => {
                self.clients
                    .configuration(&configuration, &mut self.core, now);
                let event = match configuration.kind {
                    ConfigurationKind::Regular => {
                        tracing::info!(
                            ring = %format_args!("{}:{}", configuration.ring.rep, configuration.ring.seq),
                            members = ?ids(&configuration.members),
                            joined = ?ids(&configuration.joined),
                            "regular configuration"
                        );
                        HistoryEvent::ConfReg {
                            ring: configuration.ring,
                            members: configuration.members,
                            joined: configuration.joined,
                            left: configuration.left,
                        }
                    }
                    ConfigurationKind::Transitional => {
                        tracing::info!(
                            members = ?ids(&configuration.members),
                            left = ?ids(&configuration.left),
                            "transitional configuration"
                        );
                        HistoryEvent::ConfTrans {
                            old_ring: configuration.old_ring,
                            new_ring: configuration.ring,
                            members: configuration.members,
                            left: configuration.left,
                        }
                    }
                };
                self.record(now, event);
            }
            Event::PersistRingSeq(seq) => {
                self.state.ring_seq = seq;
                if let Err(error) = self.state_file.store(&self.state) {
                    // The ring goes on; only a restart could reuse a ring id.
                    tracing::error!(%error, "cannot store the ring seq");
                }
            }
            Event::Writable => {
                self.clients.writable(&mut self.core, now);
            }
        }
    }

    fn record(&mut self, now: Instant, event: HistoryEvent) {
        record(&mut self.history, self.process, now, event);
    }

    fn flush_history(&mut self) {
        if let Some(history) = &mut self.history
            && let Err(error) = history.flush()
        {
            tracing::error!(%error, "cannot write the history; no longer recording it");
            self.history = None;
        }
    }

    /// A local client of an embedded node, served like one that came through the socket.
    fn local_client(
        &mut self,
        poll: &Poll,
        stream: std::os::unix::net::UnixStream,
    ) -> io::Result<()> {
        stream.set_nonblocking(true)?;
        let mut connection = Connection::local(stream);
        let id = self.next_connection;
        self.next_connection += 1;
        poll.registry()
            .register(connection.stream(), Token(id), Interest::READABLE)?;
        self.connections.insert(id, connection);
        self.serve(poll, id);
        Ok(())
    }

    fn accept(&mut self, poll: &Poll) -> io::Result<()> {
        while let Some(mut connection) = self.control.accept(self.connections.len())? {
            let id = self.next_connection;
            self.next_connection += 1;
            poll.registry()
                .register(connection.stream(), Token(id), Interest::READABLE)?;
            self.connections.insert(id, connection);
            // Edge-triggered: the request may already be there.
            self.serve(poll, id);
        }
        Ok(())
    }

    fn serve(&mut self, poll: &Poll, id: usize) {
        let Some(connection) = self.connections.get_mut(&id) else {
            return;
        };
        let answer = match connection.read() {
            ReadOutcome::Pending => return,
            ReadOutcome::Request(Request::Connect {
                version,
                service,
                initial_totem_conf,
            }) => {
                let connection = self.connections.remove(&id).expect("present");
                let request = ipc::connection::ConnectRequest {
                    version,
                    service,
                    initial_totem_conf,
                };
                self.connect(poll, connection, &request);
                return;
            }
            ReadOutcome::Request(Request::Status) => Some(self.status()),
            ReadOutcome::Request(Request::Groups) => Some(self.groups()),
            ReadOutcome::Request(Request::Workload { rate }) => {
                let now = clock::now();
                match &mut self.workload {
                    Some(workload) => workload.set_rate(rate, now),
                    None if rate > 0 => {
                        let workload = Workload::new(self.process, rate, self.state.session, now);
                        self.workload = Some(workload);
                    }
                    None => {}
                }
                Some(json!({ "ok": true }))
            }
            ReadOutcome::Invalid(message) => Some(json!({ "error": message })),
            ReadOutcome::Closed => None,
        };
        let mut connection = self.connections.remove(&id).expect("present");
        if let Some(answer) = answer {
            connection.answer(&answer);
        }
        let _ = poll.registry().deregister(connection.stream());
    }

    /// The IPC handshake of a client on a control connection.
    fn connect(
        &mut self,
        poll: &Poll,
        mut connection: Connection,
        request: &ipc::connection::ConnectRequest,
    ) {
        let _ = poll.registry().deregister(connection.stream());
        let stream = std::os::unix::net::UnixStream::from(std::os::fd::OwnedFd::from(
            connection.into_stream(),
        ));
        if let Err(error) = self.open_session(poll, stream, request) {
            tracing::warn!(%error, "client handshake failed");
        }
    }

    fn open_session(
        &mut self,
        poll: &Poll,
        stream: std::os::unix::net::UnixStream,
        request: &ipc::connection::ConnectRequest,
    ) -> io::Result<()> {
        stream.set_nonblocking(false)?;
        let peer = ipc::connection::peer(&stream)?;
        let refuse = self.refusal(&peer, &request.service);
        let offer = ipc::connection::Offer {
            nodeid: self.me.0,
            layout: ipc::connection::Layout::default(),
            max_message_size: self.config.totem.max_message_size,
        };
        let Some(endpoint) = ipc::connection::accept(stream, request, &offer, refuse)? else {
            return Ok(());
        };
        endpoint.stream.set_nonblocking(true)?;
        let wakeup = endpoint.wakeup_fd();
        let socket = endpoint.stream.as_raw_fd();
        let service = ServiceId::from_name(&request.service).expect("refused otherwise");
        let conn = self
            .clients
            .add(endpoint, peer, service, request.initial_totem_conf);
        let token = CLIENT_BASE + 2 * conn as usize;
        poll.registry()
            .register(&mut SourceFd(&wakeup), Token(token), Interest::READABLE)?;
        poll.registry()
            .register(&mut SourceFd(&socket), Token(token + 1), Interest::READABLE)?;
        tracing::debug!(conn, pid = peer.pid, uid = peer.uid, "client connected");
        // Whatever it wrote while the session was being registered.
        self.clients.serve(conn, &mut self.core, clock::now());
        Ok(())
    }

    /// Why a client may not connect (root, this node's user and the configured uids and gids
    /// may; others get CS_ERR_ACCESS), or an unknown service.
    fn refusal(&self, peer: &ipc::connection::Peer, service: &str) -> Option<Error> {
        if ServiceId::from_name(service).is_none() {
            return Some(Error::NotSupported(
                format!("no service {service:?}").into(),
            ));
        }
        if self.clients.len() >= SESSIONS_MAX {
            return Some(Error::NoResources(
                format!("the node serves its maximum of {SESSIONS_MAX} connections").into(),
            ));
        }
        let ipc = &self.config.ipc;
        let allowed = peer.uid == 0
            || peer.gid == 0
            || peer.uid == nix::unistd::geteuid().as_raw()
            || ipc.allowed_uids.contains(&peer.uid)
            || ipc.allowed_gids.contains(&peer.gid);
        (!allowed).then(|| {
            Error::Access(
                format!(
                    "uid {} gid {} is not in [ipc] allowed_uids/allowed_gids",
                    peer.uid, peer.gid
                )
                .into(),
            )
        })
    }

    /// A wake-up or a socket event of an IPC session.
    fn client_event(&mut self, poll: &Poll, token: usize) {
        let conn = ((token - CLIENT_BASE) / 2) as u64;
        let now = clock::now();
        if (token - CLIENT_BASE) % 2 == 0 {
            self.clients.serve(conn, &mut self.core, now);
            return;
        }
        let Some(endpoint) = self.clients.endpoint(conn) else {
            return;
        };
        let mut byte = [0u8; 1];
        match (&endpoint.stream).read(&mut byte) {
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            // End of file (the client is gone), an error, or bytes it must not send.
            _ => {
                let wakeup = endpoint.wakeup_fd();
                let socket = endpoint.stream.as_raw_fd();
                let _ = poll.registry().deregister(&mut SourceFd(&wakeup));
                let _ = poll.registry().deregister(&mut SourceFd(&socket));
                self.clients.hang_up(conn, &mut self.core, now);
            }
        }
    }

    fn groups(&self) -> serde_json::Value {
        let groups: Vec<serde_json::Value> = self
            .clients
            .service()
            .groups()
            .map(|(name, members)| {
                json!({
                    "name": String::from_utf8_lossy(name),
                    "members": members
                        .iter()
                        .map(|(node, pid)| json!({ "nodeid": node.0, "pid": pid }))
                        .collect::<Vec<_>>(),
                })
            })
            .collect();
        json!({ "nodeid": self.me.0, "groups": groups })
    }

    fn status(&self) -> serde_json::Value {
        let ring = self.core.installed_ring();
        json!({
            "nodeid": self.me.0,
            "cluster_name": self.config.totem.cluster_name,
            "incarnation": self.process.incarnation,
            "state": format!("{:?}", self.core.state()).to_lowercase(),
            "ring_id": ring.map(|ring| json!({ "nodeid": ring.rep, "seq": ring.seq })),
            "members": ids(self.core.members()),
            "uptime_s": clock::now().saturating_duration_since(self.started).as_secs_f64(),
            "counters": {
                "protocol": self.core.counters(),
                "crypto": self.opener.counters(),
                "transport": self.transport.counters(),
                "clients": self.clients.counters(),
                "cpg": {
                    "syncing": self.clients.service().syncing(),
                    "held": self.clients.service().held(),
                    "malformed": self.clients.service().malformed(),
                    "groups": self.clients.service().groups().count(),
                },
                "evs": {
                    "connections": self.clients.evs().service().connections(),
                    "malformed": self.clients.evs().service().malformed(),
                    "requests": self.clients.evs().counters().requests,
                    "mcasts": self.clients.evs().counters().mcasts,
                    "mcasts_dropped": self.clients.evs().counters().mcasts_dropped,
                },
                "send_queue_bytes": self.core.send_queue_bytes(),
            },
        })
    }
}

fn record(
    history: &mut Option<BufWriter<File>>,
    process: ProcessId,
    now: Instant,
    event: HistoryEvent,
) {
    if let Some(writer) = history {
        let record = Record {
            time: now,
            process,
            event,
        };
        if let Err(error) = record.write_json_line(writer) {
            tracing::error!(%error, "cannot write the history");
        }
    }
}

fn ids(nodes: &[NodeId]) -> Vec<u32> {
    nodes.iter().map(|node| node.0).collect()
}

/// Asks the node on `socket` for its status (`totemcast status`).
pub fn status(socket: &std::path::Path) -> io::Result<serde_json::Value> {
    control::ask(socket, &Request::Status, Duration::from_secs(5))
}

/// Asks the node on `socket` for its CPG groups and members (`totemcast cpgtool`).
pub fn groups(socket: &std::path::Path) -> io::Result<serde_json::Value> {
    control::ask(socket, &Request::Groups, Duration::from_secs(5))
}
