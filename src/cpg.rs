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

use std::collections::VecDeque;
use std::io::Read as _;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::Path;

use bytes::Bytes;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::api::{DispatchFlags, Guarantee};
use crate::error::{Error, Result};
use crate::ids::NodeId;
use crate::ipc::connection::{self, Endpoint};
use crate::ipc::ring::ClaimError;
use crate::node::cpg::records;
use crate::node::cpg::service::check_name;

pub use crate::node::cpg::{Address, ClientEvent as Event};

/// A connection to the node's CPG service: at most one group at a time (as in Corosync).
#[derive(Debug)]
pub struct Handle {
    endpoint: Endpoint,
    nodeid: NodeId,
    /// The group joined (set when the node accepted the join, cleared when it accepted a leave).
    group: Option<Bytes>,
    /// Events read while waiting for an answer, in order.
    pending: VecDeque<Event>,
    buffer: Vec<u8>,
}

impl Handle {
    /// Connects to the node listening on `socket`.
    pub fn connect(socket: impl AsRef<Path>) -> Result<Handle> {
        let (endpoint, nodeid) = connection::connect(socket.as_ref(), "cpg")?;
        Ok(Handle {
            endpoint,
            nodeid: NodeId(nodeid),
            group: None,
            pending: VecDeque::new(),
            buffer: Vec::new(),
        })
    }

    /// `cpg_join`: joins `group` (1–128 bytes). The join is complete when its confchg arrives.
    pub fn join(&mut self, group: impl AsRef<[u8]>) -> Result<()> {
        let group = group.as_ref();
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
    /// `CS_ERR_TRY_AGAIN` when the request ring is full (nothing was accepted);
    /// `CS_ERR_NOT_EXIST` before a join; `CS_ERR_TOO_BIG` beyond
    /// [`Handle::max_atomic_msgsize_get`].
    pub fn mcast_joined(&mut self, guarantee: Guarantee, buffers: &[&[u8]]) -> Result<()> {
        if self.group.is_none() {
            return Err(Error::NotExist("this handle has not joined a group".into()));
        }
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
        let mut claim = match self.endpoint.tx.claim(1 + len).map_err(lost)? {
            Ok(claim) => claim,
            Err(ClaimError::Full) => {
                return Err(Error::TryAgain("the request ring is full".into()));
            }
            Err(ClaimError::TooBig) => return Err(Error::TooBig("larger than the ring".into())),
        };
        let out = claim.payload_mut();
        out[0] = u32::from(guarantee) as u8;
        let mut at = 1;
        for buffer in buffers {
            out[at..at + buffer.len()].copy_from_slice(buffer);
            at += buffer.len();
        }
        if claim.commit(records::MCAST) {
            self.endpoint.wake_peer();
        }
        Ok(())
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

    /// `cpg_max_atomic_msgsize_get`: the largest message this handle can send.
    #[must_use]
    pub fn max_atomic_msgsize_get(&self) -> usize {
        // The request ring holds any record of up to half its size; the node adds a small CPG
        // header and the receivers' event rings are as large.
        self.endpoint.tx.payload_max() - 256
    }

    /// `cpg_fd_get`: readable when events may be waiting (for `poll`, `select`, asyncio).
    #[must_use]
    pub fn fd_get(&self) -> RawFd {
        self.endpoint.wakeup_fd()
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
            match self.next_event()? {
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
    fn next_event(&mut self) -> Result<Option<Event>> {
        if let Some(event) = self.pending.pop_front() {
            return Ok(Some(event));
        }
        self.endpoint.clear_wakeup();
        while let Some(kind) = self.read_record()? {
            if let Some(event) = records::decode_event(kind, &self.buffer) {
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
        if self.endpoint.rx.release(entry) {
            self.endpoint.wake_peer();
        }
        Ok(Some(entry.kind))
    }

    /// Sends a request and waits for its answer; events that come first are kept for dispatch.
    fn request(&mut self, kind: u32, body: &[u8]) -> Result<Vec<u8>> {
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
                Some(records::ANSWER) => return answer(&self.buffer),
                Some(kind) => {
                    if let Some(event) = records::decode_event(kind, &self.buffer) {
                        self.pending.push_back(event);
                    }
                }
                None => self.wait()?,
            }
        }
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
fn lost(error: crate::ipc::ring::Corrupt) -> Error {
    Error::Library(format!("the connection to the node is broken: {error}").into())
}

impl AsFd for Handle {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.endpoint.wakeup()
    }
}

impl AsRawFd for Handle {
    fn as_raw_fd(&self) -> RawFd {
        self.fd_get()
    }
}
