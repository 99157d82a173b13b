//! CPG records in a connection's rings: requests (client → node) and events and answers (node →
//! client). The record kind says what it is; the bodies are little-endian and length-checked on
//! both sides (a client may write anything into its request ring).

use bytes::{BufMut, Bytes, BytesMut};

use super::service::{Address, ClientEvent};
use crate::api::{Guarantee, Reason};
use crate::ids::{NodeId, RingId};

/// Request: join the group in the body.
pub const JOIN: u32 = 1;
/// Request: leave the group in the body.
pub const LEAVE: u32 = 2;
/// Request: multicast (guarantee byte, then the message) to the joined group; no answer.
pub const MCAST: u32 = 3;
/// Request: the members of the group in the body.
pub const MEMBERSHIP_GET: u32 = 4;
/// Request: this node's id.
pub const LOCAL_GET: u32 = 5;

/// Request: the first part of a message too large for one record: guarantee byte, 7 zero
/// bytes, the message's total length `u64`, then its first bytes. [`MCAST_MORE`] records with
/// the rest follow at once, nothing else between them.
pub const MCAST_FIRST: u32 = 6;
/// Request: the next bytes of the message a [`MCAST_FIRST`] began.
pub const MCAST_MORE: u32 = 7;
/// Request: multicast a zero-copy buffer: guarantee byte, 7 zero bytes, then its offset in the
/// arena and its length (`u64` each).
pub const ZCB_MCAST: u32 = 8;
/// Request: `cpg_iteration`: the type byte (1 name only, 2 one group, 3 all), then the group
/// (for type 2).
pub const ITERATION: u32 = 9;

/// Answer to a JOIN, LEAVE, MEMBERSHIP_GET, LOCAL_GET or ITERATION: code `u32`, then a body.
pub const ANSWER: u32 = 100;
/// Event: a message: sender node `u32`, pid `u32`, group (length byte and name), message.
pub const DELIVER: u32 = 101;
/// Event: a group's membership change.
pub const CONFCHG: u32 = 102;
/// Event: the totem configuration.
pub const TOTEM_CONFCHG: u32 = 103;
/// Event: the first part of a message too large for one record: a [`DELIVER`] header, the
/// message's total length `u64`, its first bytes. [`DELIVER_MORE`] records follow.
pub const DELIVER_FIRST: u32 = 104;
/// Event: the next bytes of the message a [`DELIVER_FIRST`] began.
pub const DELIVER_MORE: u32 = 105;

/// Bytes before the data in a [`MCAST_FIRST`] record.
pub const MCAST_FIRST_HEADER: usize = 16;

/// The body of a [`MCAST_FIRST`] record before its data.
#[must_use]
pub fn mcast_first(guarantee: Guarantee, total: u64) -> [u8; MCAST_FIRST_HEADER] {
    let mut out = [0u8; MCAST_FIRST_HEADER];
    out[0] = u32::from(guarantee) as u8;
    out[8..].copy_from_slice(&total.to_le_bytes());
    out
}

/// The guarantee and total length of a [`MCAST_FIRST`] body (its first 16 bytes).
#[must_use]
pub fn decode_mcast_first(head: &[u8]) -> Option<(Guarantee, u64)> {
    let head: &[u8; MCAST_FIRST_HEADER] = head.get(..MCAST_FIRST_HEADER)?.try_into().ok()?;
    let guarantee = Guarantee::try_from(u32::from(head[0])).ok()?;
    Some((guarantee, u64::from_le_bytes(head[8..].try_into().ok()?)))
}

/// The body of a [`ZCB_MCAST`] record.
#[must_use]
pub fn zcb_mcast(guarantee: Guarantee, offset: u64, len: u64) -> [u8; 24] {
    let mut out = [0u8; 24];
    out[0] = u32::from(guarantee) as u8;
    out[8..16].copy_from_slice(&offset.to_le_bytes());
    out[16..].copy_from_slice(&len.to_le_bytes());
    out
}

/// The guarantee, offset and length of a [`ZCB_MCAST`] body.
#[must_use]
pub fn decode_zcb_mcast(body: &[u8]) -> Option<(Guarantee, u64, u64)> {
    let body: &[u8; 24] = body.try_into().ok()?;
    let guarantee = Guarantee::try_from(u32::from(body[0])).ok()?;
    Some((
        guarantee,
        u64::from_le_bytes(body[8..16].try_into().ok()?),
        u64::from_le_bytes(body[16..].try_into().ok()?),
    ))
}

/// Writes a [`DELIVER`] header (everything before the message) into `out`.
pub fn deliver_header(nodeid: NodeId, pid: u32, group: &[u8], out: &mut BytesMut) {
    out.clear();
    out.put_u32_le(nodeid.0);
    out.put_u32_le(pid);
    out.put_u8(group.len() as u8);
    out.put_slice(group);
}

/// The sender, group and where the message starts in a [`DELIVER`] or [`DELIVER_FIRST`] body.
#[must_use]
pub fn decode_deliver_header(body: &[u8]) -> Option<(NodeId, u32, Bytes, usize)> {
    let mut r = Reader { body, at: 0 };
    let nodeid = NodeId(r.u32()?);
    let pid = r.u32()?;
    let group = r.group()?;
    Some((nodeid, pid, group, r.at))
}

/// An entry of an [`ITERATION`] answer: group, node, pid.
pub type IterationEntry = (Bytes, NodeId, u32);

/// Encodes the entries of an [`ITERATION`] answer.
#[must_use]
pub fn encode_iteration(entries: &[IterationEntry]) -> Vec<u8> {
    let mut out = BytesMut::new();
    out.put_u32_le(entries.len() as u32);
    for (group, nodeid, pid) in entries {
        out.put_u8(group.len() as u8);
        out.put_slice(group);
        out.put_u32_le(nodeid.0);
        out.put_u32_le(*pid);
    }
    out.to_vec()
}

/// Decodes an [`ITERATION`] answer.
#[must_use]
pub fn decode_iteration(body: &[u8]) -> Option<Vec<IterationEntry>> {
    let mut r = Reader { body, at: 0 };
    let count = r.u32()? as usize;
    if count > body.len() / 10 {
        return None;
    }
    let entries = (0..count)
        .map(|_| Some((r.group()?, NodeId(r.u32()?), r.u32()?)))
        .collect::<Option<Vec<_>>>()?;
    (r.at == body.len()).then_some(entries)
}

/// Encodes an event into `out` (a ring claim is written from it); returns its kind.
pub fn encode_event(event: &ClientEvent, out: &mut BytesMut) -> u32 {
    out.clear();
    match event {
        ClientEvent::Deliver {
            group,
            nodeid,
            pid,
            payload,
        } => {
            out.put_u32_le(nodeid.0);
            out.put_u32_le(*pid);
            out.put_u8(group.len() as u8);
            out.put_slice(group);
            out.put_slice(payload);
            DELIVER
        }
        ClientEvent::ConfChg {
            group,
            members,
            left,
            joined,
        } => {
            out.put_u8(group.len() as u8);
            out.put_slice(group);
            for list in [members, left, joined] {
                out.put_u32_le(list.len() as u32);
            }
            for address in members.iter().chain(left).chain(joined) {
                out.put_u32_le(address.nodeid.0);
                out.put_u32_le(address.pid);
                out.put_u32_le(u32::from(address.reason));
            }
            CONFCHG
        }
        ClientEvent::TotemConfChg { ring, nodes } => {
            out.put_u32_le(ring.rep);
            out.put_u64_le(ring.seq);
            out.put_u32_le(nodes.len() as u32);
            for node in nodes {
                out.put_u32_le(node.0);
            }
            TOTEM_CONFCHG
        }
    }
}

/// An event decoded from a record (payloads copied out of the ring).
#[must_use]
pub fn decode_event(kind: u32, body: &[u8]) -> Option<ClientEvent> {
    let mut r = Reader { body, at: 0 };
    let event = match kind {
        DELIVER => {
            let nodeid = NodeId(r.u32()?);
            let pid = r.u32()?;
            let group = r.group()?;
            let payload = Bytes::copy_from_slice(r.rest());
            ClientEvent::Deliver {
                group,
                nodeid,
                pid,
                payload,
            }
        }
        CONFCHG => {
            let group = r.group()?;
            let counts = [r.u32()? as usize, r.u32()? as usize, r.u32()? as usize];
            if counts.iter().sum::<usize>() > body.len() / 12 {
                return None;
            }
            let mut lists: [Vec<Address>; 3] = Default::default();
            for (list, count) in lists.iter_mut().zip(counts) {
                for _ in 0..count {
                    list.push(Address {
                        nodeid: NodeId(r.u32()?),
                        pid: r.u32()?,
                        reason: Reason::try_from(r.u32()?).ok()?,
                    });
                }
            }
            let [members, left, joined] = lists;
            ClientEvent::ConfChg {
                group,
                members,
                left,
                joined,
            }
        }
        TOTEM_CONFCHG => {
            let ring = RingId {
                rep: r.u32()?,
                seq: r.u64()?,
            };
            let count = r.u32()? as usize;
            if count > body.len() / 4 {
                return None;
            }
            let nodes = (0..count)
                .map(|_| r.u32().map(NodeId))
                .collect::<Option<Vec<_>>>()?;
            ClientEvent::TotemConfChg { ring, nodes }
        }
        _ => return None,
    };
    (r.at == body.len() || kind == DELIVER).then_some(event)
}

/// A MCAST request body: the guarantee byte, then the message.
#[must_use]
pub fn decode_mcast(body: &[u8]) -> Option<(Guarantee, &[u8])> {
    let (&guarantee, payload) = body.split_first()?;
    Some((Guarantee::try_from(u32::from(guarantee)).ok()?, payload))
}

struct Reader<'b> {
    body: &'b [u8],
    at: usize,
}

impl<'b> Reader<'b> {
    fn take(&mut self, len: usize) -> Option<&'b [u8]> {
        let slice = self.body.get(self.at..self.at.checked_add(len)?)?;
        self.at += len;
        Some(slice)
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn group(&mut self) -> Option<Bytes> {
        let len = usize::from(*self.take(1)?.first()?);
        if len == 0 {
            return None;
        }
        Some(Bytes::copy_from_slice(self.take(len)?))
    }

    fn rest(&mut self) -> &'b [u8] {
        let rest = &self.body[self.at..];
        self.at = self.body.len();
        rest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip() {
        let group = Bytes::from_static(b"g");
        let address = |n, p, r| Address {
            nodeid: NodeId(n),
            pid: p,
            reason: r,
        };
        let events = [
            ClientEvent::Deliver {
                group: group.clone(),
                nodeid: NodeId(3),
                pid: 9,
                payload: Bytes::from_static(b"payload"),
            },
            ClientEvent::ConfChg {
                group,
                members: vec![address(1, 2, Reason::Undefined)],
                left: vec![address(3, 4, Reason::NodeDown)],
                joined: vec![address(1, 2, Reason::Join), address(5, 6, Reason::NodeUp)],
            },
            ClientEvent::TotemConfChg {
                ring: RingId::new(NodeId(1), 8),
                nodes: vec![NodeId(1), NodeId(2)],
            },
        ];
        let mut out = BytesMut::new();
        for event in events {
            let kind = encode_event(&event, &mut out);
            assert_eq!(decode_event(kind, &out), Some(event));
            for cut in 0..out.len().min(12) {
                if kind != DELIVER || cut < 9 {
                    assert_eq!(decode_event(kind, &out[..cut]), None);
                }
            }
        }
        assert_eq!(decode_mcast(&[2, 7]), Some((Guarantee::Agreed, &[7u8][..])));
        assert_eq!(decode_mcast(&[9]), None);
        assert_eq!(decode_mcast(&[]), None);
    }
}
