//! A client's connection to its node: the handshake on the node's Unix socket (peer
//! credentials, access check, protocol version), then a sealed memfd with two rings — requests
//! (client → node) and events (node → client) — and two eventfds for wake-ups, passed to the
//! client with `SCM_RIGHTS`. The socket stays open: its closing tells each side that the other
//! is gone (a dead client, a stopped node).

use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, UnixCredentials, getsockopt, recvmsg, sendmsg,
    sockopt::PeerCredentials,
};
use serde::{Deserialize, Serialize};

use super::ring::{self, Consumer, Producer};
use super::shm::SharedMemory;
use super::zcb::ArenaBounds;
use crate::error::Error;

/// The IPC protocol version; a client of another version gets `CS_ERR_VERSION`.
pub const PROTOCOL_VERSION: u32 = 1;

/// Sizes of one connection's rings and zero-copy arena.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    /// Request ring (client → node) capacity, bytes.
    pub request_capacity: usize,
    /// Event ring (node → client) capacity, bytes.
    pub event_capacity: usize,
    /// Zero-copy send arena (`zcb_alloc`), bytes.
    #[serde(default)]
    pub zcb_capacity: usize,
}

impl Layout {
    /// Where the event ring starts in the region.
    #[must_use]
    pub fn event_offset(&self) -> usize {
        ring::footprint(self.request_capacity)
    }

    /// Where the zero-copy arena lies in the region.
    #[must_use]
    pub fn arena(&self) -> ArenaBounds {
        ArenaBounds {
            offset: self.event_offset() + ring::footprint(self.event_capacity),
            capacity: self.zcb_capacity,
        }
    }

    /// The region's length.
    #[must_use]
    pub fn region_len(&self) -> usize {
        let arena = self.arena();
        arena.offset + arena.capacity
    }
}

impl Default for Layout {
    /// Rings small enough that the node's copies into them stay in the caches: a ring is
    /// written cyclically, so all of it is in use, however little it holds. With 3 receivers
    /// of 64 KiB messages on the 2-core project machine, 2 MiB rings delivered 1.3× what 8 MiB
    /// rings did (and no less at 64 B); what does not fit waits in the node's backlog. The
    /// event ring is as large as the request ring: an EVS message is one record of each.
    fn default() -> Layout {
        Layout {
            request_capacity: 2 << 20,
            event_capacity: 2 << 20,
            zcb_capacity: 8 << 20,
        }
    }
}

/// The client's first line on the socket (`{"request":"connect",...}`, one of the node's
/// control requests).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename = "connect")]
pub struct ConnectRequest {
    /// The client's [`PROTOCOL_VERSION`].
    pub version: u32,
    /// The service (`"cpg"`, `"evs"`).
    pub service: String,
    /// CPG: deliver the totem configuration at once after connecting
    /// (`CPG_MODEL_V1_DELIVER_INITIAL_TOTEM_CONF`).
    #[serde(default)]
    pub initial_totem_conf: bool,
}

impl ConnectRequest {
    /// A request for `service` in this library's protocol version.
    #[must_use]
    pub fn new(service: &str) -> ConnectRequest {
        ConnectRequest {
            version: PROTOCOL_VERSION,
            service: service.into(),
            initial_totem_conf: false,
        }
    }
}

/// The node's answer: the layout (with the fds attached) or an error code and reason.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectAnswer {
    /// `cs_error_t` (1 = OK).
    pub code: u32,
    /// What went wrong, for people.
    pub detail: String,
    /// The rings' sizes (with OK).
    pub layout: Option<Layout>,
    /// The node's id (with OK).
    pub nodeid: u32,
    /// The largest message the cluster carries, bytes (with OK).
    #[serde(default)]
    pub max_message_size: u64,
}

/// Who is on the other end of a client socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    /// Process id.
    pub pid: u32,
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

/// The credentials of the process at the other end of `stream` (SO_PEERCRED).
pub fn peer(stream: &UnixStream) -> io::Result<Peer> {
    let credentials: UnixCredentials = getsockopt(stream, PeerCredentials)?;
    Ok(Peer {
        pid: u32::try_from(credentials.pid()).unwrap_or(0),
        uid: credentials.uid(),
        gid: credentials.gid(),
    })
}

/// One side of an established connection: its rings and wake-ups.
#[derive(Debug)]
pub struct Endpoint {
    /// What this side writes.
    pub tx: Producer,
    /// What this side reads.
    pub rx: Consumer,
    /// An eventfd written to wake the other side.
    wake_peer: OwnedFd,
    /// An eventfd readable when the other side woke this one (the client's `fd_get()`).
    wakeup: OwnedFd,
    /// The socket; end of file on it means the other side is gone.
    pub stream: UnixStream,
    region: Arc<SharedMemory>,
    /// The zero-copy arena in the region.
    pub arena: ArenaBounds,
}

impl Endpoint {
    /// Wakes the other side (after a commit or release that asked for it).
    pub fn wake_peer(&self) {
        // An eventfd counter only saturates after 2^64 - 2 wake-ups; EAGAIN then still means
        // the peer has a wake-up pending.
        let _ = nix::unistd::write(&self.wake_peer, &1u64.to_ne_bytes());
    }

    /// The descriptor that becomes readable when the other side wakes this one.
    #[must_use]
    pub fn wakeup_fd(&self) -> RawFd {
        self.wakeup.as_fd().as_raw_fd()
    }

    /// The wake-up descriptor, borrowed (for `poll`).
    #[must_use]
    pub fn wakeup(&self) -> std::os::fd::BorrowedFd<'_> {
        self.wakeup.as_fd()
    }

    /// Whether the other side is gone (its end of the socket closed), without waiting.
    #[must_use]
    pub fn peer_gone(&self) -> bool {
        closed(self.stream.as_raw_fd())
    }

    /// Duplicates of what wakes the other side and tells whether it is gone, for a waiter
    /// apart from this endpoint (a zero-copy buffer).
    pub fn peer_link(&self) -> io::Result<PeerLink> {
        Ok(PeerLink {
            wake: self.wake_peer.try_clone()?,
            stream: self.stream.as_fd().try_clone_to_owned()?,
        })
    }

    /// Makes this side's wake-up descriptor readable again: for a wait that consumed a wake-up
    /// meant for something else (one descriptor carries both kinds).
    pub fn rearm_wakeup(&self) {
        let _ = nix::unistd::write(&self.wakeup, &1u64.to_ne_bytes());
    }

    /// Consumes pending wake-ups (non-blocking).
    pub fn clear_wakeup(&self) {
        let mut counter = [0u8; 8];
        let _ = nix::unistd::read(&self.wakeup, &mut counter);
    }

    /// The shared region.
    #[must_use]
    pub fn region(&self) -> &Arc<SharedMemory> {
        &self.region
    }
}

/// Whether the other end of the socket `fd` is closed, without waiting.
fn closed(fd: RawFd) -> bool {
    let mut byte = [0u8; 1];
    match nix::sys::socket::recv(fd, &mut byte, MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT) {
        Ok(0) => true,
        Ok(_) | Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => false,
        Err(_) => true,
    }
}

/// What wakes the other side of a connection and tells whether it is gone
/// ([`Endpoint::peer_link`]).
#[derive(Debug)]
pub struct PeerLink {
    wake: OwnedFd,
    stream: OwnedFd,
}

impl PeerLink {
    /// Wakes the other side.
    pub fn wake(&self) {
        let _ = nix::unistd::write(&self.wake, &1u64.to_ne_bytes());
    }

    /// Whether the other side is gone (its end of the socket closed).
    #[must_use]
    pub fn gone(&self) -> bool {
        closed(self.stream.as_raw_fd())
    }
}

fn eventfd() -> io::Result<OwnedFd> {
    let fd = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?;
    Ok(OwnedFd::from(fd))
}

fn write_line(stream: &mut UnixStream, value: &impl Serialize) -> io::Result<()> {
    let mut line = serde_json::to_vec(value).map_err(io::Error::from)?;
    line.push(b'\n');
    stream.write_all(&line)
}

/// Reads one line (at most 4 KiB) byte by byte, so nothing after it is consumed.
fn read_line(stream: &mut UnixStream) -> io::Result<Vec<u8>> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < 4096 {
        if stream.read(&mut byte)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if byte[0] == b'\n' {
            return Ok(line);
        }
        line.push(byte[0]);
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        "line longer than 4 KiB",
    ))
}

/// The node's side: answers a client whose request line was read, refusing it with `error`
/// or setting up its rings. The stream must be blocking for the short handshake.
pub fn accept(
    mut stream: UnixStream,
    request: &ConnectRequest,
    offer: &Offer,
    refuse: Option<Error>,
) -> io::Result<Option<Endpoint>> {
    let Offer {
        nodeid,
        layout,
        max_message_size,
    } = *offer;
    let refusal = refuse.or_else(|| {
        (request.version != PROTOCOL_VERSION).then(|| {
            Error::Version(
                format!(
                    "client speaks IPC version {}, the node {PROTOCOL_VERSION}",
                    request.version
                )
                .into(),
            )
        })
    });
    if let Some(error) = refusal {
        let answer = ConnectAnswer {
            code: u32::from(error.code()),
            detail: error.detail().to_owned(),
            layout: None,
            nodeid,
            max_message_size: 0,
        };
        write_line(&mut stream, &answer)?;
        return Ok(None);
    }
    let region = Arc::new(SharedMemory::create("totemcast-ipc", layout.region_len())?);
    let bad = |error: ring::Corrupt| io::Error::other(error.0);
    ring::initialize(&region, 0, layout.request_capacity).map_err(bad)?;
    ring::initialize(&region, layout.event_offset(), layout.event_capacity).map_err(bad)?;
    let node_wakeup = eventfd()?;
    let client_wakeup = eventfd()?;
    let answer = ConnectAnswer {
        code: 1,
        detail: String::new(),
        layout: Some(layout),
        nodeid,
        max_message_size: max_message_size as u64,
    };
    let mut line = serde_json::to_vec(&answer).map_err(io::Error::from)?;
    line.push(b'\n');
    let fds = [
        region.fd().as_raw_fd(),
        node_wakeup.as_raw_fd(),
        client_wakeup.as_raw_fd(),
    ];
    // The node counts as asleep on its request ring before the client can write anything, so
    // that the client's first request wakes it (no wake-up is lost to the handshake).
    let mut rx = Consumer::new(Arc::clone(&region), 0, layout.request_capacity).map_err(bad)?;
    let fresh = rx.prepare_to_sleep();
    debug_assert!(fresh, "a new ring is empty");
    let tx = Producer::new(
        Arc::clone(&region),
        layout.event_offset(),
        layout.event_capacity,
    )
    .map_err(bad)?;
    sendmsg::<()>(
        stream.as_raw_fd(),
        &[IoSlice::new(&line)],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::MSG_NOSIGNAL,
        None,
    )?;
    Ok(Some(Endpoint {
        rx,
        tx,
        wake_peer: client_wakeup,
        wakeup: node_wakeup,
        stream,
        region,
        arena: layout.arena(),
    }))
}

/// What the node offers a client it accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offer {
    /// The node's id.
    pub nodeid: u32,
    /// Ring and arena sizes.
    pub layout: Layout,
    /// The largest message the cluster carries.
    pub max_message_size: usize,
}

/// Reads a client's request line (the node calls this before [`accept`]).
pub fn read_request(stream: &mut UnixStream) -> io::Result<ConnectRequest> {
    let line = read_line(stream)?;
    serde_json::from_slice(&line).map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))
}

/// The client's side: connects to the node on `path` for `service`; the endpoint and the
/// node's id.
pub fn connect(path: &std::path::Path, service: &str) -> Result<(Endpoint, u32), Error> {
    let (endpoint, answer) = connect_with(path, &ConnectRequest::new(service))?;
    Ok((endpoint, answer.nodeid))
}

/// The client's side: connects to the node on `path` with `request`; the endpoint and the
/// node's answer.
pub fn connect_with(
    path: &std::path::Path,
    request: &ConnectRequest,
) -> Result<(Endpoint, ConnectAnswer), Error> {
    let stream = UnixStream::connect(path).map_err(|error| {
        Error::Library(format!("cannot reach a node at {}: {error}", path.display()).into())
    })?;
    handshake(stream, request)
}

/// The client's side of the handshake on a connected `stream` (a node's socket, or one end of
/// a socket pair whose other end an embedded node serves).
pub fn handshake(
    mut stream: UnixStream,
    request: &ConnectRequest,
) -> Result<(Endpoint, ConnectAnswer), Error> {
    let library = |message: String| Error::Library(message.into());
    write_line(&mut stream, request).map_err(|error| library(format!("handshake: {error}")))?;
    // The answer line and its descriptors arrive in one message.
    let mut buffer = vec![0u8; 4096];
    let mut cmsg = nix::cmsg_space!([RawFd; 3]);
    let (len, raw_fds) = {
        let mut iov = [IoSliceMut::new(&mut buffer)];
        let message = recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(|error| library(format!("handshake: {error}")))?;
        let mut fds = Vec::new();
        for control in message
            .cmsgs()
            .map_err(|error| library(error.to_string()))?
        {
            if let ControlMessageOwned::ScmRights(received) = control {
                fds.extend(received);
            }
        }
        (message.bytes, fds)
    };
    let fds: Vec<OwnedFd> = raw_fds
        .into_iter()
        // SAFETY: SCM_RIGHTS installed these descriptors in this process for us alone; each is
        // wrapped exactly once and so closed exactly once.
        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
        .collect();
    let line = buffer[..len].strip_suffix(b"\n").unwrap_or(&buffer[..len]);
    let answer: ConnectAnswer = serde_json::from_slice(line)
        .map_err(|error| library(format!("bad handshake answer: {error}")))?;
    if answer.code != 1 {
        let unknown = format!(
            "the node refused with unknown code {}: {}",
            answer.code, answer.detail
        );
        return Err(
            Error::from_code(answer.code, answer.detail).unwrap_or(Error::Library(unknown.into()))
        );
    }
    let layout = answer
        .layout
        .ok_or_else(|| library("handshake answer without a layout".into()))?;
    let [region_fd, node_wakeup, client_wakeup]: [OwnedFd; 3] = fds
        .try_into()
        .map_err(|_| library("handshake answer without its three descriptors".into()))?;
    let region = Arc::new(
        SharedMemory::open(region_fd, layout.region_len())
            .map_err(|error| library(format!("shared memory: {error}")))?,
    );
    let bad = |error: ring::Corrupt| library(error.0);
    let rx = Consumer::new(
        Arc::clone(&region),
        layout.event_offset(),
        layout.event_capacity,
    )
    .map_err(bad)?;
    // A delivery kept as a view (`cpg::Message`) releases its space when dropped, whenever
    // that is: then it wakes the node itself if the node waits for that space.
    let waker = node_wakeup
        .try_clone()
        .map_err(|error| library(format!("dup: {error}")))?;
    rx.set_producer_waker(move || {
        let _ = nix::unistd::write(&waker, &1u64.to_ne_bytes());
    });
    let endpoint = Endpoint {
        tx: Producer::new(Arc::clone(&region), 0, layout.request_capacity).map_err(bad)?,
        rx,
        wake_peer: node_wakeup,
        wakeup: client_wakeup,
        stream,
        region,
        arena: layout.arena(),
    };
    Ok((endpoint, answer))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve_one(
        listener: &std::os::unix::net::UnixListener,
        refuse: Option<Error>,
    ) -> Option<Endpoint> {
        let (mut stream, _) = listener.accept().unwrap();
        let request = read_request(&mut stream).unwrap();
        let offer = Offer {
            nodeid: 7,
            layout: Layout {
                request_capacity: 4096,
                event_capacity: 8192,
                zcb_capacity: 4096,
            },
            max_message_size: 1000,
        };
        accept(stream, &request, &offer, refuse).unwrap()
    }

    #[test]
    fn a_client_and_the_node_share_rings_and_wake_each_other() {
        let dir = std::env::temp_dir().join(format!("totemcast-conn-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("node.sock");
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let node = std::thread::scope(|scope| {
            let server = scope.spawn(|| serve_one(&listener, None));
            let (mut client, nodeid) = connect(&path, "cpg").unwrap();
            assert_eq!(nodeid, 7);
            let mut node = server.join().unwrap().unwrap();
            // Client → node.
            let wake = client.tx.push(3, b"join").unwrap().unwrap();
            assert!(wake, "the node counts as asleep from the handshake on");
            client.wake_peer();
            let wake = client.tx.push(4, b"more").unwrap().unwrap();
            assert!(!wake, "woken once, not twice");
            let entry = node.rx.read_next().unwrap().unwrap();
            assert_eq!((entry.kind, node.rx.payload(&entry)), (3, &b"join"[..]));
            node.rx.release(entry);
            let entry = node.rx.read_next().unwrap().unwrap();
            assert_eq!(entry.kind, 4);
            node.rx.release(entry);
            // Node → client, with a wake-up through the client's fd.
            assert!(client.rx.prepare_to_sleep());
            assert!(node.tx.push(9, b"deliver").unwrap().unwrap());
            node.wake_peer();
            let mut poll = [nix::poll::PollFd::new(
                client.wakeup.as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            assert_eq!(nix::poll::poll(&mut poll, 5000u16).unwrap(), 1);
            client.clear_wakeup();
            let entry = client.rx.read_next().unwrap().unwrap();
            assert_eq!(client.rx.payload(&entry), b"deliver");
            client.rx.release(entry);
            // The client goes away: the node reads end of file.
            drop(client);
            node
        });
        let mut byte = [0u8; 1];
        assert_eq!((&node.stream).read(&mut byte).unwrap(), 0);
        // A refused client gets the code and the reason.
        let error = std::thread::scope(|scope| {
            scope.spawn(|| {
                serve_one(
                    &listener,
                    Some(Error::Access("uid 1000 is not allowed".into())),
                )
            });
            connect(&path, "cpg").unwrap_err()
        });
        assert_eq!(error.code(), crate::error::CsError::Access);
        assert!(error.to_string().contains("uid 1000"), "{error}");
        let peer = {
            let (a, _b) = UnixStream::pair().unwrap();
            super::peer(&a).unwrap()
        };
        assert_eq!(peer.pid, std::process::id());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
