//! The EVS client library (extended virtual synchrony), Corosync's `evs_*` API in Rust: a
//! [`Handle`] talks to its node over a Unix socket handshake and two shared-memory rings.
//!
//! Groups are 32-byte keys (1–32 bytes, zero-padded) and only a **receive filter**: a handle
//! gets each message sent to at least one group it joined, once, with the sender's node and
//! pid; joining and leaving are local to the handle's node and announce nothing. Every totem
//! configuration, transitional and regular, arrives as an [`Event::ConfChg`] with its ring ids;
//! a new handle's first event is the current one. See [`crate::node::evs::service`] for the
//! exact rules and where they differ from Corosync.
//!
//! ```no_run
//! use totemcast::api::{DispatchFlags, Guarantee};
//! use totemcast::evs::{Event, Handle};
//!
//! let mut handle = Handle::connect("/run/totemcast/totemcast.sock")?;
//! handle.join(&["workers", "audit"])?;
//! handle.mcast_groups(Guarantee::Safe, &["workers"], &[b"hello"])?;
//! handle.dispatch(DispatchFlags::One, |event| {
//!     if let Event::Deliver { nodeid, payload, .. } = event {
//!         println!("{} bytes from node {nodeid}", payload.len());
//!     }
//! })?;
//! # Ok::<(), totemcast::Error>(())
//! ```

use std::collections::BTreeSet;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::Path;
use std::time::Duration;

use crate::api::{DispatchFlags, EVS_GROUPS_PER_CALL_MAX, Guarantee};
use crate::client::Session;
use crate::error::{Error, Result};
use crate::ids::NodeId;
use crate::node::evs::records::{self, Request};

pub use crate::client::InterruptCheck;
pub use crate::node::evs::{Event, GROUPS_JOINED_MAX, Key};
pub use crate::totem::ConfigurationKind;

/// Bytes a handle keeps free for the request header (guarantee, keys) and the node's headers.
const HEADERS_MAX: usize = 2048;
const _: () =
    assert!(HEADERS_MAX >= records::mcast_groups_header_len(EVS_GROUPS_PER_CALL_MAX) + 256);

/// A connection to the node's EVS service.
#[derive(Debug)]
pub struct Handle {
    session: Session,
    /// What `fd_get` returns: readable when the node wakes this side (its eventfd) or when the
    /// node is gone (the socket's end of file).
    watch: OwnedFd,
    /// The keys joined (as the node accepted them, or as an interrupted request will have
    /// them).
    joined: BTreeSet<Key>,
}

impl Handle {
    /// Connects to the node listening on `socket`. The first event is the current
    /// configuration (once the node has one).
    pub fn connect(socket: impl AsRef<Path>) -> Result<Handle> {
        Handle::new(Session::connect(socket.as_ref(), "evs", records::ANSWER)?)
    }

    /// Connects over `stream`, whose other end a node serves (see
    /// [`crate::Node::evs`]).
    pub fn connect_stream(stream: std::os::unix::net::UnixStream) -> Result<Handle> {
        Handle::new(Session::connect_stream(stream, "evs", records::ANSWER)?)
    }

    fn new(session: Session) -> Result<Handle> {
        Ok(Handle {
            watch: session.watch()?,
            session,
            joined: BTreeSet::new(),
        })
    }

    /// This node's id (from the handshake; no request).
    #[must_use]
    pub fn nodeid(&self) -> NodeId {
        self.session.nodeid()
    }

    /// Installs `check`, run at least every 100 ms and after every signal while a call of this
    /// handle waits (for a request's answer, for an event). An error from it ends the wait
    /// with that error: a binding uses it to honour Ctrl-C. A request whose wait ends so still
    /// takes effect at the node and its answer is dropped; a join or leave counts as done
    /// unless the node is bound to refuse it.
    pub fn set_interrupt_check(&mut self, check: Option<InterruptCheck>) {
        self.session.set_interrupt_check(check);
    }

    /// Sets how long a wait for the node (for events, an answer or room) polls without
    /// sleeping before it sleeps: 50 µs by default, `Duration::ZERO` to sleep at once,
    /// `CS_ERR_INVALID_PARAM` above 10 ms. A reply within the window costs no wake-up of this
    /// process; a longer wait costs one window of CPU. Waits on [`Handle::fd_get`] are the
    /// caller's and never poll.
    pub fn set_busy_poll(&mut self, window: Duration) -> Result<()> {
        self.session.set_busy_poll(window)
    }

    /// How long a wait for the node polls before it sleeps (see [`Handle::set_busy_poll`]).
    #[must_use]
    pub fn busy_poll(&self) -> Duration {
        self.session.busy_poll()
    }

    /// `evs_join`: adds `groups` (at most 50 keys of 1–32 bytes) to this handle's filter.
    /// Joining a key already joined changes nothing. `CS_ERR_TOO_MANY_GROUPS` beyond 50 keys
    /// or [`GROUPS_JOINED_MAX`] joined in all.
    pub fn join<N: AsRef<[u8]>>(&mut self, groups: &[N]) -> Result<()> {
        let keys = Key::list(groups)?;
        match self.request(&Request::Join(keys.clone())) {
            Ok(_) => self.joined.extend(keys),
            // Abandoned: the node still serves it, and a join within the limits succeeds.
            Err(error @ Error::Interrupt(_)) => {
                if self.joined.len() + keys.len() <= GROUPS_JOINED_MAX {
                    self.joined.extend(keys);
                }
                return Err(error);
            }
            Err(error) => return Err(error),
        }
        Ok(())
    }

    /// `evs_leave`: removes `groups` (at most 50) from this handle's filter. `CS_ERR_NOT_EXIST`
    /// if one of them is not joined; then nothing is removed.
    pub fn leave<N: AsRef<[u8]>>(&mut self, groups: &[N]) -> Result<()> {
        let keys = Key::list(groups)?;
        let result = self.request(&Request::Leave(keys.clone()));
        // Abandoned: the node still serves it, all or nothing.
        let abandoned = matches!(result, Err(Error::Interrupt(_)))
            && keys.iter().all(|key| self.joined.contains(key));
        if result.is_ok() || abandoned {
            for key in &keys {
                self.joined.remove(key);
            }
        }
        result.map(|_| ())
    }

    /// The keys this handle joined, sorted.
    pub fn joined(&self) -> impl Iterator<Item = &Key> {
        self.joined.iter()
    }

    /// `evs_mcast_joined`: multicasts the concatenation of `buffers` to every group this handle
    /// joined. `CS_ERR_NOT_EXIST` if it joined none; `CS_ERR_TRY_AGAIN` when the request ring
    /// is full (nothing was accepted); `CS_ERR_TOO_BIG` beyond
    /// [`Handle::max_atomic_msgsize_get`].
    pub fn mcast_joined(&mut self, guarantee: Guarantee, buffers: &[&[u8]]) -> Result<()> {
        if self.joined.is_empty() {
            return Err(Error::NotExist("this handle has joined no group".into()));
        }
        let len = self.message_len(buffers)?;
        self.session.send(records::MCAST_JOINED, 1 + len, |out| {
            out[0] = u32::from(guarantee) as u8;
            copy_buffers(&mut out[1..], buffers);
        })
    }

    /// `evs_mcast_groups`: multicasts the concatenation of `buffers` to `groups` (1–50 keys),
    /// which this handle need not have joined. It is delivered to it only if it joined one.
    pub fn mcast_groups<N: AsRef<[u8]>>(
        &mut self,
        guarantee: Guarantee,
        groups: &[N],
        buffers: &[&[u8]],
    ) -> Result<()> {
        let keys = Key::list(groups)?;
        if keys.is_empty() {
            return Err(Error::InvalidParam(
                "a message must be sent to at least one group".into(),
            ));
        }
        let len = self.message_len(buffers)?;
        let header = records::mcast_groups_header_len(keys.len());
        self.session
            .send(records::MCAST_GROUPS, header + len, |out| {
                let at = records::write_mcast_groups_header(out, guarantee, &keys);
                copy_buffers(&mut out[at..], buffers);
            })
    }

    /// `evs_membership_get`: this node's id and the nodes of the current configuration.
    pub fn membership_get(&mut self) -> Result<(NodeId, Vec<NodeId>)> {
        let body = self.request(&Request::MembershipGet)?;
        let (me, members) = records::decode_membership(&body)
            .ok_or_else(|| Error::Library("malformed membership answer".into()))?;
        debug_assert_eq!(me, self.session.nodeid());
        Ok((me, members))
    }

    /// The largest message this handle can send.
    #[must_use]
    pub fn max_atomic_msgsize_get(&self) -> usize {
        // The request ring holds any record of up to half its size; the keys of a
        // mcast_groups request and the node's headers fit in the margin, and the receivers'
        // event rings are as large.
        self.session.payload_max() - HEADERS_MAX
    }

    /// `evs_fd_get`: readable when events may be waiting or the node is gone (for `poll`,
    /// `select`, asyncio; then call [`Handle::dispatch`], which tells which).
    #[must_use]
    pub fn fd_get(&self) -> RawFd {
        self.watch.as_raw_fd()
    }

    /// The eventfd the node writes to wake this side (for bindings that make the descriptor
    /// readable themselves, say while events they took out wait in their own queue).
    #[must_use]
    pub fn wakeup_eventfd(&self) -> BorrowedFd<'_> {
        self.session.wakeup()
    }

    /// `evs_dispatch`: hands events to `handler`. `One` waits for one event, `All` handles what
    /// is there without waiting, `OneNonblocking` handles one or returns `CS_ERR_TRY_AGAIN`,
    /// `Blocking` handles events until the connection ends. Returns how many were handled.
    pub fn dispatch(&mut self, flags: DispatchFlags, handler: impl FnMut(Event)) -> Result<usize> {
        self.session.dispatch(flags, records::decode_event, handler)
    }

    /// The next event if one is there (never waits): the building block of `dispatch` for
    /// callers that wait themselves (on [`Handle::fd_get`] or [`Handle::wait_for_event`]).
    /// When there is none, the descriptor is armed (see [`Handle::arm_descriptor`]).
    /// `CS_ERR_LIBRARY` once no event is left and the node is gone.
    pub fn try_next_event(&mut self) -> Result<Option<Event>> {
        self.session.try_next_event(records::decode_event)
    }

    /// Waits until an event may be there or `timeout` passes; false on timeout. Returns at
    /// once if events are pending. `CS_ERR_LIBRARY` when the node has gone away.
    pub fn wait_for_event(&mut self, timeout: Option<Duration>) -> Result<bool> {
        self.session.wait_for_event(timeout)
    }

    /// Makes the descriptor ([`Handle::fd_get`]) become readable with the next event; false
    /// when an event is already waiting (read it first). For callers that wait on the
    /// descriptor themselves.
    pub fn arm_descriptor(&mut self) -> Result<bool> {
        self.wait_for_event(Some(Duration::ZERO))
            .map(|ready| !ready)
    }

    /// After `CS_ERR_TRY_AGAIN`, for callers that wait on [`Handle::fd_get`] themselves
    /// (asyncio): asks the node to make the descriptor readable once it has released room for
    /// a multicast of `len` bytes (to as many groups as one call takes); false when the room
    /// is already there (retry at once).
    pub fn notify_when_writable(&mut self, len: usize) -> Result<bool> {
        let header = records::mcast_groups_header_len(EVS_GROUPS_PER_CALL_MAX);
        self.session.notify_when_writable(header + len)
    }

    fn message_len(&self, buffers: &[&[u8]]) -> Result<usize> {
        let len: usize = buffers.iter().map(|b| b.len()).sum();
        if len > self.max_atomic_msgsize_get() {
            return Err(Error::TooBig(
                format!(
                    "message of {len} bytes exceeds the limit of {} bytes",
                    self.max_atomic_msgsize_get()
                )
                .into(),
            ));
        }
        Ok(len)
    }

    fn request(&mut self, request: &Request<'_>) -> Result<Vec<u8>> {
        let mut body = Vec::new();
        let kind = request.encode(&mut body);
        records::decode_answer(&self.session.request(kind, &body)?)
    }
}

fn copy_buffers(out: &mut [u8], buffers: &[&[u8]]) {
    let mut at = 0;
    for buffer in buffers {
        out[at..at + buffer.len()].copy_from_slice(buffer);
        at += buffer.len();
    }
}

impl AsFd for Handle {
    /// The descriptor of [`Handle::fd_get`].
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.watch.as_fd()
    }
}

impl AsRawFd for Handle {
    fn as_raw_fd(&self) -> RawFd {
        self.fd_get()
    }
}

#[cfg(test)]
mod tests {
    //! A handle against a node without totem: one thread serves it with the node's
    //! [`Sessions`] over the real handshake and rings, and delivers each multicast at once (a
    //! ring of one node).

    use std::collections::VecDeque;
    use std::io::Read as _;
    use std::os::unix::net::UnixListener;

    use bytes::{Bytes, BytesMut};
    use nix::poll::{PollFd, PollFlags, PollTimeout};

    use super::*;
    use crate::error::CsError;
    use crate::ids::RingId;
    use crate::ipc::connection::{Endpoint, Layout, Offer, accept, read_request};
    use crate::node::evs::{Served, Sessions};
    use crate::totem::Configuration;

    const RING: RingId = RingId { rep: 1, seq: 8 };

    /// Takes one client's handshake (the node's side of it).
    fn handshake(listener: &UnixListener) -> Endpoint {
        let (mut stream, _) = listener.accept().unwrap();
        let request = read_request(&mut stream).unwrap();
        assert_eq!(request.service, "evs");
        let offer = Offer {
            nodeid: 1,
            layout: Layout {
                request_capacity: 1 << 16,
                event_capacity: 1 << 16,
                zcb_capacity: 0,
            },
            max_message_size: 1 << 15,
        };
        accept(stream, &request, &offer, None).unwrap().unwrap()
    }

    /// A socket path of its own for test `name`.
    fn socket(name: &str) -> (std::path::PathBuf, UnixListener) {
        let dir = std::env::temp_dir().join(format!("totemcast-evs-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("node.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        (path, listener)
    }

    /// Whether `fd` is readable within `timeout`.
    fn readable(fd: BorrowedFd<'_>, timeout: u16) -> bool {
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        nix::poll::poll(&mut fds, PollTimeout::from(timeout)).unwrap() > 0
    }

    /// Serves one client until it hangs up; returns the guarantees of its multicasts.
    fn serve(listener: &UnixListener) -> Vec<Guarantee> {
        let mut endpoint = handshake(listener);
        let mut sessions = Sessions::new(NodeId(1));
        sessions.on_configuration(&Configuration {
            kind: ConfigurationKind::Regular,
            ring: RING,
            old_ring: RING,
            members: vec![NodeId(1)],
            left: Vec::new(),
            joined: vec![NodeId(1)],
        });
        sessions.connect(1, std::process::id());
        let mut guarantees = Vec::new();
        let mut out = BytesMut::new();
        let mut body = Vec::new();
        loop {
            while let Some((conn, kind)) = sessions.poll_record(&mut out) {
                assert_eq!(conn, 1);
                write(&mut endpoint, kind, &out);
            }
            if let Some(entry) = endpoint.rx.read_next().unwrap() {
                endpoint.rx.copy(&entry, &mut body);
                let mut sent = VecDeque::new();
                let served = sessions.serve(1, entry.kind, &body, |guarantee, payload| {
                    guarantees.push(guarantee);
                    sent.push_back(payload);
                    Ok(())
                });
                if endpoint.rx.release(entry) {
                    endpoint.wake_peer();
                }
                match served {
                    Served::Answer(answer) => write(&mut endpoint, records::ANSWER, &answer),
                    Served::Done => {}
                    other => panic!("{other:?}"),
                }
                for payload in sent {
                    sessions.on_deliver(NodeId(1), &payload);
                }
                continue;
            }
            if !endpoint.rx.prepare_to_sleep() {
                continue;
            }
            let mut fds = [
                PollFd::new(endpoint.stream.as_fd(), PollFlags::POLLIN),
                PollFd::new(endpoint.wakeup(), PollFlags::POLLIN),
            ];
            nix::poll::poll(&mut fds, PollTimeout::NONE).unwrap();
            if fds[0].revents().is_some_and(|r| !r.is_empty()) {
                let mut byte = [0u8; 1];
                if matches!((&endpoint.stream).read(&mut byte), Ok(0) | Err(_)) {
                    return guarantees;
                }
            }
            endpoint.clear_wakeup();
        }
    }

    fn write(endpoint: &mut Endpoint, kind: u32, body: &[u8]) {
        if endpoint.tx.push(kind, body).unwrap().unwrap() {
            endpoint.wake_peer();
        }
    }

    fn next(handle: &mut Handle) -> Event {
        let mut event = None;
        handle
            .dispatch(DispatchFlags::One, |e| event = Some(e))
            .unwrap();
        event.unwrap()
    }

    #[test]
    fn a_handle_joins_sends_and_receives_through_a_node() {
        let (path, listener) = socket("joins");
        let guarantees = std::thread::scope(|scope| {
            let node = scope.spawn(|| serve(&listener));
            let mut handle = Handle::connect(&path).unwrap();
            assert!(handle.as_fd().as_raw_fd() >= 0);
            assert_eq!(handle.fd_get(), handle.as_raw_fd());
            // The current view first.
            assert_eq!(
                next(&mut handle),
                Event::ConfChg {
                    kind: ConfigurationKind::Regular,
                    ring: RING,
                    old_ring: RING,
                    members: vec![NodeId(1)],
                    left: Vec::new(),
                    joined: Vec::new(),
                }
            );
            assert_eq!(
                handle.dispatch(DispatchFlags::All, |_| {}).unwrap(),
                0,
                "nothing else"
            );
            assert_eq!(
                handle
                    .dispatch(DispatchFlags::OneNonblocking, |_| {})
                    .unwrap_err()
                    .code(),
                CsError::TryAgain
            );
            // Checked here, before anything is sent.
            let error = handle.mcast_joined(Guarantee::Agreed, &[b"x"]).unwrap_err();
            assert_eq!(error.code(), CsError::NotExist);
            let many: Vec<String> = (0..51).map(|i| format!("g{i}")).collect();
            assert_eq!(
                handle.join(&many).unwrap_err().code(),
                CsError::TooManyGroups
            );
            assert_eq!(
                handle.join(&[""]).unwrap_err().code(),
                CsError::InvalidParam
            );
            assert_eq!(
                handle.join(&["k".repeat(33)]).unwrap_err().code(),
                CsError::NameTooLong
            );
            let no_groups: [&str; 0] = [];
            let error = handle
                .mcast_groups(Guarantee::Agreed, &no_groups, &[b"x"])
                .unwrap_err();
            assert_eq!(error.code(), CsError::InvalidParam);
            let huge = vec![0u8; handle.max_atomic_msgsize_get() + 1];
            let error = handle
                .mcast_groups(Guarantee::Agreed, &["a"], &[&huge])
                .unwrap_err();
            assert_eq!(error.code(), CsError::TooBig);
            // Answered by the node.
            assert_eq!(handle.leave(&["a"]).unwrap_err().code(), CsError::NotExist);
            handle.join(&["a", "b"]).unwrap();
            assert_eq!(handle.joined().count(), 2);
            assert_eq!(
                handle.membership_get().unwrap(),
                (NodeId(1), vec![NodeId(1)])
            );
            let pid = std::process::id();
            handle
                .mcast_joined(Guarantee::Safe, &[b"to a ", b"and b"])
                .unwrap();
            assert_eq!(
                next(&mut handle),
                Event::Deliver {
                    nodeid: NodeId(1),
                    pid,
                    payload: Bytes::from_static(b"to a and b"),
                }
            );
            // To a group it did not join: nothing comes back; to one it did: once.
            handle
                .mcast_groups(Guarantee::Unordered, &["c"], &[b"to c"])
                .unwrap();
            handle
                .mcast_groups(Guarantee::Fifo, &[Key::new(b"b").unwrap()], &[b"to b"])
                .unwrap();
            assert_eq!(
                next(&mut handle),
                Event::Deliver {
                    nodeid: NodeId(1),
                    pid,
                    payload: Bytes::from_static(b"to b"),
                }
            );
            handle.leave(&["a"]).unwrap();
            handle
                .mcast_groups(Guarantee::Agreed, &["a", "b"], &[])
                .unwrap();
            // A request answered after an event: the event waits for dispatch.
            assert_eq!(handle.membership_get().unwrap().0, NodeId(1));
            assert_eq!(
                next(&mut handle),
                Event::Deliver {
                    nodeid: NodeId(1),
                    pid,
                    payload: Bytes::new(),
                }
            );
            drop(handle);
            node.join().unwrap()
        });
        assert_eq!(
            guarantees,
            [
                Guarantee::Safe,
                Guarantee::Unordered,
                Guarantee::Fifo,
                Guarantee::Agreed
            ]
        );
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    /// Arms the descriptor when no event waits (a wake-up given meanwhile says "maybe": read
    /// again).
    fn arm(handle: &mut Handle) {
        loop {
            assert_eq!(handle.try_next_event().unwrap(), None, "no event waits");
            if handle.arm_descriptor().unwrap() {
                return;
            }
        }
    }

    #[test]
    fn events_without_waiting_and_an_armed_descriptor() {
        let (path, listener) = socket("events");
        std::thread::scope(|scope| {
            let node = scope.spawn(|| serve(&listener));
            let mut handle = Handle::connect(&path).unwrap();
            assert_eq!(handle.nodeid(), NodeId(1));
            assert_ne!(handle.wakeup_eventfd().as_raw_fd(), handle.fd_get());
            // The current view comes without a dispatch, then nothing: the descriptor is armed.
            assert!(handle.wait_for_event(None).unwrap());
            assert!(matches!(
                handle.try_next_event().unwrap(),
                Some(Event::ConfChg { .. })
            ));
            arm(&mut handle);
            assert!(!readable(handle.as_fd(), 0));
            assert!(
                !handle
                    .wait_for_event(Some(Duration::from_millis(1)))
                    .unwrap()
            );
            // A delivery makes it readable (armed again after the request).
            handle.join(&["a"]).unwrap();
            arm(&mut handle);
            handle.mcast_joined(Guarantee::Agreed, &[b"hi"]).unwrap();
            assert!(readable(handle.as_fd(), 5000));
            let event = loop {
                if let Some(event) = handle.try_next_event().unwrap() {
                    break event;
                }
                assert!(handle.wait_for_event(Some(Duration::from_secs(5))).unwrap());
            };
            assert!(matches!(event, Event::Deliver { payload, .. } if payload == b"hi"[..]));
            // An event already waiting: arming says so, and the event is still there.
            arm(&mut handle);
            handle.mcast_joined(Guarantee::Agreed, &[b"again"]).unwrap();
            assert!(readable(handle.as_fd(), 5000));
            assert!(!handle.arm_descriptor().unwrap());
            assert!(handle.try_next_event().unwrap().is_some());
            // The request ring has room: nothing to wait for.
            assert!(!handle.notify_when_writable(100).unwrap());
            drop(handle);
            node.join().unwrap();
        });
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn an_interrupt_check_ends_waits_and_an_interrupted_join_counts() {
        let (path, listener) = socket("interrupt");
        std::thread::scope(|scope| {
            // A node that never answers nor sends, until the client hangs up.
            let node = scope.spawn(|| {
                let endpoint = handshake(&listener);
                let mut byte = [0u8; 1];
                let _ = (&endpoint.stream).read(&mut byte);
            });
            let mut handle = Handle::connect(&path).unwrap();
            let asked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let counter = std::sync::Arc::clone(&asked);
            handle.set_interrupt_check(Some(Box::new(move || {
                if counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 3 == 2 {
                    return Err(Error::Interrupt("test".into()));
                }
                Ok(())
            })));
            let error = handle.join(&["a", "b"]).unwrap_err();
            assert_eq!(error.code(), CsError::Interrupt);
            assert_eq!(asked.load(std::sync::atomic::Ordering::Relaxed), 3);
            // The node still serves the join: it counts (and so does an interrupted leave).
            assert_eq!(handle.joined().count(), 2);
            let error = handle.leave(&["a"]).unwrap_err();
            assert_eq!(error.code(), CsError::Interrupt);
            assert_eq!(handle.joined().count(), 1);
            let error = handle.dispatch(DispatchFlags::One, |_| {}).unwrap_err();
            assert_eq!(error.code(), CsError::Interrupt);
            // A timed wait asks it too, and ends on time.
            asked.store(0, std::sync::atomic::Ordering::Relaxed);
            assert!(
                !handle
                    .wait_for_event(Some(Duration::from_millis(150)))
                    .unwrap()
            );
            assert_eq!(asked.load(std::sync::atomic::Ordering::Relaxed), 2);
            handle.set_interrupt_check(None);
            assert!(
                !handle
                    .wait_for_event(Some(Duration::from_millis(10)))
                    .unwrap()
            );
            drop(handle);
            node.join().unwrap();
        });
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn a_gone_node_makes_the_descriptor_readable_and_reads_fail() {
        let (path, listener) = socket("gone");
        let mut handle = std::thread::scope(|scope| {
            let node = scope.spawn(|| drop(handshake(&listener)));
            let handle = Handle::connect(&path).unwrap();
            node.join().unwrap();
            handle
        });
        assert!(readable(handle.as_fd(), 5000));
        let error = handle.try_next_event().unwrap_err();
        assert_eq!(error.code(), CsError::Library);
        assert_eq!(
            handle.wait_for_event(None).unwrap_err().code(),
            CsError::Library
        );
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }
}
