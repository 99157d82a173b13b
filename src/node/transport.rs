//! UDP sockets: unicast to every node of the nodelist (`udpu`) or IP multicast (`udp`).
//! Sends never block the node: a full socket buffer drops the datagram (Totem retransmits)
//! and counts it.
//!
//! Datagrams of equal size queued back to back for one destination (the packets of a large
//! message) leave in one system call as one UDP GSO buffer (`UDP_SEGMENT`): the kernel cuts it
//! into the same datagrams, as late as it can, so that on loopback, veth and bridges a window
//! of packets crosses the stack as one buffer. Receivers ask for UDP GRO and split what
//! arrives coalesced. The datagrams on the wire are the same either way; a kernel or device
//! without GSO gets them one by one.

use std::io;
use std::net::{IpAddr, SocketAddr};

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::AsRawFd;

use mio::net::UdpSocket;
use nix::errno::Errno;
use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg,
    sendmmsg, sendmsg, setsockopt, sockopt,
};
use serde::Serialize;
use socket2::{Domain, Protocol, Socket, Type};

use crate::ids::NodeId;
use crate::totem::Destination;

/// Socket-level counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TransportCounters {
    /// Datagrams handed to the kernel.
    pub datagrams_sent: u64,
    /// Bytes handed to the kernel.
    pub bytes_sent: u64,
    /// Datagrams the kernel refused (buffer full, unreachable): dropped, Totem recovers.
    pub send_errors: u64,
    /// Datagrams received.
    pub datagrams_received: u64,
    /// Bytes received.
    pub bytes_received: u64,
    /// System calls that sent several datagrams as one GSO buffer.
    pub gso_sends: u64,
    /// Receives that returned several datagrams coalesced by GRO.
    pub gro_receives: u64,
}

/// How datagrams reach the other nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// One copy per other node.
    Unicast,
    /// One copy to this multicast group (joined on the interface of the node's address).
    Multicast(SocketAddr),
}

/// The node's sockets.
#[derive(Debug)]
pub struct Transport {
    /// Every node's address, sorted by node id (including mine).
    peers: Vec<(NodeId, SocketAddr)>,
    /// The other nodes' addresses, as `SocketAddr` and as sendmmsg takes them.
    others: Vec<SocketAddr>,
    others_raw: Vec<Option<SockaddrStorage>>,
    mode: Mode,
    unicast: UdpSocket,
    multicast: Option<UdpSocket>,
    counters: TransportCounters,
    /// Whether sends may use UDP GSO (cleared for good when the kernel refuses it).
    gso: bool,
    queued: Queued,
}

/// Datagrams waiting in [`Transport::queue`] for one send: equal sizes, the last maybe shorter.
#[derive(Debug, Default)]
struct Queued {
    destination: Option<Destination>,
    bytes: Vec<u8>,
    segment: usize,
    count: usize,
    /// A shorter datagram ended the run: the next one starts a new send.
    closed: bool,
}

/// Most datagrams in one GSO send (the kernel's `UDP_MAX_SEGMENTS` is 64 on older kernels).
const GSO_SEGMENTS_MAX: usize = 64;
/// Most bytes in one GSO send: one IP packet's worth, less the IPv6 and UDP headers.
const GSO_BYTES_MAX: usize = 65_000;

/// Socket buffers large enough for a window of full datagrams from every node.
const SOCKET_BUFFER_BYTES: usize = 4 << 20;

impl Transport {
    /// Binds this node's address (and joins the multicast group in `Multicast` mode).
    pub fn bind(me: NodeId, peers: Vec<(NodeId, SocketAddr)>, mode: Mode) -> io::Result<Transport> {
        let local = peers
            .iter()
            .find(|(node, _)| *node == me)
            .map(|(_, addr)| *addr)
            .ok_or_else(|| io::Error::other(format!("node {me} has no address")))?;
        let unicast = bind_socket(local, false).map_err(|error| {
            io::Error::new(error.kind(), format!("cannot bind {local}: {error}"))
        })?;
        let multicast = match &mode {
            Mode::Unicast => None,
            Mode::Multicast(group) => {
                let socket = bind_socket(*group, true).map_err(|error| {
                    io::Error::new(error.kind(), format!("cannot bind {group}: {error}"))
                })?;
                join_group(&socket, *group, local.ip(), &unicast)?;
                Some(socket)
            }
        };
        let others: Vec<SocketAddr> = peers
            .iter()
            .filter(|(node, _)| *node != me)
            .map(|(_, addr)| *addr)
            .collect();
        let others_raw = others
            .iter()
            .map(|addr| Some(SockaddrStorage::from(*addr)))
            .collect();
        Ok(Transport {
            peers,
            others,
            others_raw,
            mode,
            unicast: UdpSocket::from_std(unicast),
            multicast: multicast.map(UdpSocket::from_std),
            counters: TransportCounters::default(),
            gso: true,
            queued: Queued::default(),
        })
    }

    /// The socket for unicast traffic (register it for readability).
    pub fn unicast_socket(&mut self) -> &mut UdpSocket {
        &mut self.unicast
    }

    /// The multicast group socket, in `udp` mode.
    pub fn multicast_socket(&mut self) -> Option<&mut UdpSocket> {
        self.multicast.as_mut()
    }

    /// Counters.
    #[must_use]
    pub fn counters(&self) -> &TransportCounters {
        &self.counters
    }

    /// Whether a datagram for `destination` would go anywhere (a ring of this node alone
    /// sends nothing: the driver then neither seals nor sends).
    #[must_use]
    pub fn reaches_anyone(&self, destination: Destination) -> bool {
        match (destination, &self.mode) {
            (Destination::Node(node), _) => self
                .peers
                .binary_search_by_key(&node, |(id, _)| *id)
                .is_ok(),
            (Destination::Multicast, Mode::Multicast(_)) => true,
            (Destination::Multicast, Mode::Unicast) => !self.others.is_empty(),
        }
    }

    /// Queues one datagram for `destination`; it leaves at the latest on
    /// [`Transport::flush_queued`], in order with everything queued before it.
    pub fn queue(&mut self, destination: Destination, datagram: &[u8]) {
        let queued = &self.queued;
        let joins = self.gso
            && queued.destination == Some(destination)
            && !queued.closed
            && datagram.len() <= queued.segment
            && queued.count < GSO_SEGMENTS_MAX
            && queued.bytes.len() + datagram.len() <= GSO_BYTES_MAX;
        if !joins {
            self.flush_queued();
            self.queued.destination = Some(destination);
            self.queued.segment = datagram.len();
        }
        let queued = &mut self.queued;
        queued.closed = datagram.len() < queued.segment;
        queued.bytes.extend_from_slice(datagram);
        queued.count += 1;
    }

    /// Sends everything [`Transport::queue`] holds.
    pub fn flush_queued(&mut self) {
        let Some(destination) = self.queued.destination.take() else {
            return;
        };
        let mut queued = std::mem::take(&mut self.queued);
        if queued.count == 1 {
            self.send(destination, &queued.bytes);
        } else {
            self.send_segments(destination, &queued.bytes, queued.segment, queued.count);
        }
        queued.bytes.clear();
        queued.count = 0;
        queued.closed = false;
        self.queued = queued;
    }

    /// Sends `count` datagrams of `segment` bytes (the last maybe shorter), stored back to
    /// back in `bytes`, as one GSO buffer per receiving address.
    fn send_segments(
        &mut self,
        destination: Destination,
        bytes: &[u8],
        segment: usize,
        count: usize,
    ) {
        // One address, or every other node's (by index: no copy of the list per send).
        let single = match (destination, &self.mode) {
            (Destination::Node(node), _) => {
                match self.peers.binary_search_by_key(&node, |(id, _)| *id) {
                    Ok(index) => Some(self.peers[index].1),
                    Err(_) => return,
                }
            }
            (Destination::Multicast, Mode::Multicast(group)) => Some(*group),
            (Destination::Multicast, Mode::Unicast) => None,
        };
        let receivers = if single.is_some() {
            1
        } else {
            self.others.len()
        };
        for index in 0..receivers {
            let addr = single.unwrap_or_else(|| self.others[index]);
            if self.gso && self.send_gso(bytes, segment, count, addr) {
                continue;
            }
            for datagram in bytes.chunks(segment) {
                self.send_to(datagram, addr);
            }
        }
    }

    /// One GSO send; false when the kernel refused GSO itself (then never tried again), so
    /// that the caller sends the datagrams one by one.
    fn send_gso(&mut self, bytes: &[u8], segment: usize, count: usize, addr: SocketAddr) -> bool {
        let Ok(segment_size) = u16::try_from(segment) else {
            return false;
        };
        let cmsgs = [ControlMessage::UdpGsoSegments(&segment_size)];
        let iov = [IoSlice::new(bytes)];
        let target = SockaddrStorage::from(addr);
        match sendmsg(
            self.unicast.as_raw_fd(),
            &iov,
            &cmsgs,
            MsgFlags::MSG_DONTWAIT,
            Some(&target),
        ) {
            Ok(_) => {
                self.counters.gso_sends += 1;
                self.counters.datagrams_sent += count as u64;
                self.counters.bytes_sent += bytes.len() as u64;
                true
            }
            // Datagrams larger than the path MTU (a netmtu written larger than the link's) may
            // be fragmented by IP, but not cut by GSO: these go one by one.
            Err(Errno::EMSGSIZE) => false,
            // No GSO here (an old kernel, a device without checksum offload): one by one.
            Err(Errno::EIO | Errno::EINVAL | Errno::EOPNOTSUPP | Errno::ENOPROTOOPT) => {
                tracing::debug!(%addr, "UDP GSO refused; sending datagrams one by one");
                self.gso = false;
                false
            }
            Err(error) => {
                self.counters.send_errors += count as u64;
                tracing::trace!(%addr, %error, "send failed");
                true
            }
        }
    }

    /// Sends one datagram to `destination`.
    pub fn send(&mut self, destination: Destination, datagram: &[u8]) {
        match (destination, &self.mode) {
            (Destination::Node(node), _) => {
                if let Ok(index) = self.peers.binary_search_by_key(&node, |(id, _)| *id) {
                    let addr = self.peers[index].1;
                    self.send_to(datagram, addr);
                }
            }
            (Destination::Multicast, Mode::Multicast(group)) => {
                let group = *group;
                self.send_to(datagram, group);
            }
            (Destination::Multicast, Mode::Unicast) => self.fan_out(datagram),
        }
    }

    /// One copy of `datagram` to every other node in one system call (sendmmsg); whatever the
    /// kernel did not take is retried one by one (a stale ICMP error fails the whole call).
    fn fan_out(&mut self, datagram: &[u8]) {
        if self.others.is_empty() {
            return;
        }
        let slices: Vec<[IoSlice<'_>; 1]> = self
            .others
            .iter()
            .map(|_| [IoSlice::new(datagram)])
            .collect();
        let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(self.others.len(), None);
        let sent = sendmmsg(
            self.unicast.as_raw_fd(),
            &mut headers,
            &slices,
            &self.others_raw,
            [],
            MsgFlags::MSG_DONTWAIT,
        )
        .map_or(0, Iterator::count);
        self.counters.datagrams_sent += sent as u64;
        self.counters.bytes_sent += (sent * datagram.len()) as u64;
        for index in sent..self.others.len() {
            let addr = self.others[index];
            self.send_to(datagram, addr);
        }
    }

    fn send_to(&mut self, datagram: &[u8], addr: SocketAddr) {
        match self.unicast.send_to(datagram, addr) {
            Ok(_) => {
                self.counters.datagrams_sent += 1;
                self.counters.bytes_sent += datagram.len() as u64;
            }
            Err(error) => {
                self.counters.send_errors += 1;
                tracing::trace!(%addr, %error, "send failed");
            }
        }
    }

    /// Receives up to [`RecvBatch::CAPACITY`] buffers of datagrams from the unicast
    /// (`multicast == false`) or the group socket in one system call (recvmmsg); returns the
    /// number of datagrams, 0 when there is nothing.
    pub fn recv_batch(&mut self, multicast: bool, batch: &mut RecvBatch) -> io::Result<usize> {
        batch.received.clear();
        let fd = if multicast {
            match &self.multicast {
                Some(socket) => socket.as_raw_fd(),
                None => return Ok(0),
            }
        } else {
            self.unicast.as_raw_fd()
        };
        loop {
            let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(
                batch.buffers.len(),
                Some(nix::cmsg_space!(i32)),
            );
            let mut slices: Vec<[IoSliceMut<'_>; 1]> = batch
                .buffers
                .iter_mut()
                .map(|buffer| [IoSliceMut::new(buffer)])
                .collect();
            match recvmmsg(
                fd,
                &mut headers,
                slices.iter_mut(),
                MsgFlags::MSG_DONTWAIT,
                None,
            ) {
                Ok(results) => {
                    for (buffer, message) in results.enumerate() {
                        let from = message.address.as_ref().and_then(socket_addr);
                        let len = message.bytes;
                        // Datagrams coalesced by GRO: all `segment` bytes, the last maybe less.
                        let segment = message
                            .cmsgs()
                            .into_iter()
                            .flatten()
                            .find_map(|cmsg| match cmsg {
                                ControlMessageOwned::UdpGroSegments(size) => {
                                    usize::try_from(size).ok().filter(|&size| size > 0)
                                }
                                _ => None,
                            })
                            .unwrap_or(len.max(1));
                        if len > segment {
                            self.counters.gro_receives += 1;
                        }
                        let mut start = 0;
                        loop {
                            let end = (start + segment).min(len);
                            batch.received.push(Received {
                                buffer,
                                start,
                                end,
                                from,
                            });
                            self.counters.datagrams_received += 1;
                            start = end;
                            if start >= len {
                                break;
                            }
                        }
                        self.counters.bytes_received += len as u64;
                    }
                    return Ok(batch.received.len());
                }
                Err(Errno::EAGAIN) => return Ok(0),
                // Linux reports an ICMP port-unreachable (a peer that is down) on the next
                // receive; it says nothing about the datagrams waiting.
                Err(Errno::ECONNREFUSED | Errno::EINTR) => {}
                Err(errno) => return Err(errno.into()),
            }
        }
    }

    /// Whether `from` is the configured address of `node` (multicast datagrams are sent from
    /// the sender's unicast socket, so the same holds for them).
    #[must_use]
    pub fn source_matches(&self, node: NodeId, from: SocketAddr) -> bool {
        self.peers
            .binary_search_by_key(&node, |(id, _)| *id)
            .is_ok_and(|index| self.peers[index].1 == from)
    }
}

/// Receive buffers for [`Transport::recv_batch`].
#[derive(Debug)]
pub struct RecvBatch {
    buffers: Vec<Vec<u8>>,
    /// Where each datagram received by the last call sits, and its source.
    received: Vec<Received>,
}

/// One datagram of a [`RecvBatch`] (a buffer holds several when GRO coalesced them).
#[derive(Clone, Copy, Debug)]
struct Received {
    buffer: usize,
    start: usize,
    end: usize,
    from: Option<SocketAddr>,
}

impl RecvBatch {
    /// Receive buffers per system call (each may hold several datagrams coalesced by GRO).
    pub const CAPACITY: usize = 32;

    /// Buffers for [`RecvBatch::CAPACITY`] datagrams of up to `datagram_max` bytes.
    #[must_use]
    pub fn new(datagram_max: usize) -> RecvBatch {
        RecvBatch {
            buffers: (0..Self::CAPACITY).map(|_| vec![0; datagram_max]).collect(),
            received: Vec::with_capacity(Self::CAPACITY * 4),
        }
    }

    /// Datagrams received by the last call.
    #[must_use]
    pub fn len(&self) -> usize {
        self.received.len()
    }

    /// Whether the last call received nothing.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.received.is_empty()
    }

    /// Datagram `index` of the last call and its source.
    #[must_use]
    pub fn get(&self, index: usize) -> (&[u8], Option<SocketAddr>) {
        let received = self.received[index];
        (
            &self.buffers[received.buffer][received.start..received.end],
            received.from,
        )
    }
}

fn socket_addr(storage: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = storage.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    storage
        .as_sockaddr_in6()
        .map(|v6| SocketAddr::V6((*v6).into()))
}

fn bind_socket(addr: SocketAddr, shared: bool) -> io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if shared {
        // Several nodes on one host listen on the same group address.
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    // Best effort: the kernel caps these at net.core.{r,w}mem_max.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER_BYTES);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER_BYTES);
    socket.set_nonblocking(true)?;
    // Best effort: without GRO every datagram arrives on its own, as before.
    let _ = setsockopt(&socket, sockopt::UdpGroSegment, &true);
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

fn join_group(
    socket: &std::net::UdpSocket,
    group: SocketAddr,
    interface: IpAddr,
    sender: &std::net::UdpSocket,
) -> io::Result<()> {
    let sender = socket2::SockRef::from(sender);
    match (group.ip(), interface) {
        (IpAddr::V4(group), IpAddr::V4(interface)) => {
            socket.join_multicast_v4(&group, &interface)?;
            sender.set_multicast_if_v4(&interface)?;
            sender.set_multicast_loop_v4(true)?;
            sender.set_multicast_ttl_v4(1)?;
        }
        (IpAddr::V6(group), IpAddr::V6(_)) => {
            socket.join_multicast_v6(&group, 0)?;
            sender.set_multicast_loop_v6(true)?;
        }
        _ => {
            return Err(io::Error::other(
                "the multicast group and the node address are of different IP families",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback_cluster(nodes: u32) -> (Vec<SocketAddr>, Vec<Transport>) {
        let addrs: Vec<SocketAddr> = (0..nodes)
            .map(|_| {
                let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                probe.local_addr().unwrap()
            })
            .collect();
        let peers: Vec<(NodeId, SocketAddr)> = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| (NodeId(i as u32 + 1), *a))
            .collect();
        let transports = (1..=nodes)
            .map(|id| Transport::bind(NodeId(id), peers.clone(), Mode::Unicast).unwrap())
            .collect();
        (addrs, transports)
    }

    /// Receives until `want` datagrams came (loopback delivery is immediate but not
    /// synchronous with the send) or 5 s passed.
    fn receive(transport: &mut Transport, want: usize) -> Vec<(Vec<u8>, SocketAddr)> {
        let mut batch = RecvBatch::new(65_536);
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while got.len() < want && std::time::Instant::now() < deadline {
            transport.recv_batch(false, &mut batch).unwrap();
            for index in 0..batch.len() {
                let (datagram, from) = batch.get(index);
                got.push((datagram.to_vec(), from.unwrap()));
            }
        }
        got
    }

    #[test]
    fn queued_datagrams_leave_in_order_as_one_gso_send_and_arrive_one_by_one() {
        let (addrs, mut transports) = loopback_cluster(3);
        // A run of equal datagrams ended by a shorter one, then a longer one (a new run), then
        // a token to one node: three sends per destination, in this order.
        let mut sent: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; 1200]).collect();
        sent.push(vec![20; 300]);
        sent.push(vec![21; 1400]);
        for datagram in &sent {
            transports[0].queue(Destination::Multicast, datagram);
        }
        transports[0].queue(Destination::Node(NodeId(3)), b"token");
        transports[0].flush_queued();
        let counters = transports[0].counters().clone();
        assert_eq!(counters.datagrams_sent, 2 * 22 + 1);
        assert_eq!(counters.send_errors, 0);
        assert_eq!(
            counters.gso_sends, 2,
            "one GSO send per other node: {counters:?}"
        );
        for node in [1, 2] {
            let want = if node == 2 { 23 } else { 22 };
            let got = receive(&mut transports[node], want);
            assert!(got.iter().all(|(_, from)| *from == addrs[0]));
            let mut expected = sent.clone();
            if node == 2 {
                expected.push(b"token".to_vec());
            }
            let got: Vec<Vec<u8>> = got.into_iter().map(|(datagram, _)| datagram).collect();
            assert_eq!(got, expected, "node {}", node + 1);
            assert_eq!(transports[node].counters().datagrams_received, want as u64);
            // Loopback hands the GSO buffer over whole: the receiver split it.
            assert!(transports[node].counters().gro_receives >= 1);
        }
    }

    #[test]
    fn unicast_fans_out_to_every_other_node() {
        let (addrs, mut transports) = loopback_cluster(3);
        transports[0].send(Destination::Multicast, b"hello");
        transports[0].send(Destination::Node(NodeId(3)), b"token");
        assert_eq!(transports[0].counters().datagrams_sent, 3);
        let mut batch = RecvBatch::new(64);
        let mut got = Vec::new();
        for (index, transport) in transports.iter_mut().enumerate().skip(1) {
            // Loopback delivery is immediate but not synchronous with send: poll until seen.
            let want = if index == 2 { 2 } else { 1 };
            let mut seen = 0;
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while seen < want && std::time::Instant::now() < deadline {
                transport.recv_batch(false, &mut batch).unwrap();
                for received in 0..batch.len() {
                    let (datagram, from) = batch.get(received);
                    let from = from.unwrap();
                    assert_eq!(from, addrs[0]);
                    assert!(transport.source_matches(NodeId(1), from));
                    assert!(!transport.source_matches(NodeId(2), from));
                    got.push((index, datagram.to_vec()));
                    seen += 1;
                }
            }
        }
        got.sort();
        assert_eq!(
            got,
            vec![
                (1, b"hello".to_vec()),
                (2, b"hello".to_vec()),
                (2, b"token".to_vec())
            ]
        );
    }
}
