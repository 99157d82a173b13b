//! EVS records in a connection's rings: requests (client → node) and events and answers (node →
//! client). The record kind says what it is; bodies are little-endian and length-checked on
//! both sides (a client may write anything into its request ring). Group keys travel as their
//! 32 bytes.

use bytes::{BufMut, Bytes, BytesMut};

use super::service::Event;
use super::wire::Key;
use crate::api::{EVS_GROUP_KEY_LENGTH, Guarantee};
use crate::error::{Error, Result};
use crate::ids::{NodeId, RingId};
use crate::totem::ConfigurationKind;

/// Request: join the keys of the body (32 bytes each).
pub const JOIN: u32 = 1;
/// Request: leave the keys of the body (32 bytes each).
pub const LEAVE: u32 = 2;
/// Request: multicast to the joined groups (guarantee byte, then the message); no answer.
pub const MCAST_JOINED: u32 = 3;
/// Request: multicast to the groups given (guarantee byte, key count byte, the keys, then the
/// message); no answer.
pub const MCAST_GROUPS: u32 = 4;
/// Request: this node's id and the nodes of the current configuration.
pub const MEMBERSHIP_GET: u32 = 5;

/// Answer to a JOIN, LEAVE or MEMBERSHIP_GET: code `u32` (1 = OK), then the answer's body, or
/// the error's detail in UTF-8.
pub const ANSWER: u32 = 100;
/// Event: a message.
pub const DELIVER: u32 = 101;
/// Event: a configuration.
pub const CONFCHG: u32 = 102;

/// A request as read from a client's ring (messages borrow the record).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request<'b> {
    /// `evs_join`.
    Join(Vec<Key>),
    /// `evs_leave`.
    Leave(Vec<Key>),
    /// `evs_mcast_joined`.
    McastJoined {
        /// The guarantee.
        guarantee: Guarantee,
        /// The message.
        payload: &'b [u8],
    },
    /// `evs_mcast_groups`.
    McastGroups {
        /// The guarantee.
        guarantee: Guarantee,
        /// The groups (the service checks how many).
        groups: Vec<Key>,
        /// The message.
        payload: &'b [u8],
    },
    /// `evs_membership_get`.
    MembershipGet,
}

/// Bytes before the message in a MCAST_GROUPS request to `groups` keys.
#[must_use]
pub const fn mcast_groups_header_len(groups: usize) -> usize {
    2 + EVS_GROUP_KEY_LENGTH * groups
}

/// Writes a MCAST_GROUPS request's header (at most 255 keys; the caller checked) at the start of
/// `out`; returns its length, where the message goes.
pub fn write_mcast_groups_header(out: &mut [u8], guarantee: Guarantee, groups: &[Key]) -> usize {
    out[0] = u32::from(guarantee) as u8;
    out[1] = u8::try_from(groups.len()).expect("at most 255 keys");
    let mut at = 2;
    for key in groups {
        out[at..at + EVS_GROUP_KEY_LENGTH].copy_from_slice(key.as_array());
        at += EVS_GROUP_KEY_LENGTH;
    }
    at
}

fn put_keys(out: &mut Vec<u8>, keys: &[Key]) {
    for key in keys {
        out.extend_from_slice(key.as_array());
    }
}

/// Keys of a JOIN or LEAVE body: a multiple of 32 bytes.
fn keys(body: &[u8]) -> Option<Vec<Key>> {
    if body.len() % EVS_GROUP_KEY_LENGTH != 0 {
        return None;
    }
    Some(
        body.chunks_exact(EVS_GROUP_KEY_LENGTH)
            .map(|chunk| Key::from_array(chunk.try_into().expect("32 bytes")))
            .collect(),
    )
}

fn guarantee(byte: u8) -> Option<Guarantee> {
    Guarantee::try_from(u32::from(byte)).ok()
}

impl<'b> Request<'b> {
    /// Its record kind.
    #[must_use]
    pub fn kind(&self) -> u32 {
        match self {
            Request::Join(_) => JOIN,
            Request::Leave(_) => LEAVE,
            Request::McastJoined { .. } => MCAST_JOINED,
            Request::McastGroups { .. } => MCAST_GROUPS,
            Request::MembershipGet => MEMBERSHIP_GET,
        }
    }

    /// Encodes the body into `out` (cleared first); returns the record kind.
    pub fn encode(&self, out: &mut Vec<u8>) -> u32 {
        out.clear();
        match self {
            Request::Join(keys) | Request::Leave(keys) => put_keys(out, keys),
            Request::McastJoined { guarantee, payload } => {
                out.push(u32::from(*guarantee) as u8);
                out.extend_from_slice(payload);
            }
            Request::McastGroups {
                guarantee,
                groups,
                payload,
            } => {
                out.resize(mcast_groups_header_len(groups.len()), 0);
                write_mcast_groups_header(out, *guarantee, groups);
                out.extend_from_slice(payload);
            }
            Request::MembershipGet => {}
        }
        self.kind()
    }

    /// Decodes a request record; `None` for an unknown kind or a malformed body.
    #[must_use]
    pub fn decode(kind: u32, body: &'b [u8]) -> Option<Request<'b>> {
        Some(match kind {
            JOIN => Request::Join(keys(body)?),
            LEAVE => Request::Leave(keys(body)?),
            MCAST_JOINED => {
                let (&byte, payload) = body.split_first()?;
                Request::McastJoined {
                    guarantee: guarantee(byte)?,
                    payload,
                }
            }
            MCAST_GROUPS => {
                let (&byte, rest) = body.split_first()?;
                let (&count, rest) = rest.split_first()?;
                let len = EVS_GROUP_KEY_LENGTH * usize::from(count);
                let groups = keys(rest.get(..len)?)?;
                Request::McastGroups {
                    guarantee: guarantee(byte)?,
                    groups,
                    payload: &rest[len..],
                }
            }
            MEMBERSHIP_GET if body.is_empty() => Request::MembershipGet,
            _ => return None,
        })
    }
}

/// An ANSWER record's body for `result`.
#[must_use]
pub fn encode_answer(result: &Result<Vec<u8>>) -> Vec<u8> {
    let (code, body) = match result {
        Ok(body) => (1u32, body.as_slice()),
        Err(error) => (u32::from(error.code()), error.detail().as_bytes()),
    };
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&code.to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// The result an ANSWER record's body carries.
pub fn decode_answer(body: &[u8]) -> Result<Vec<u8>> {
    let code = body
        .get(..4)
        .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
        .ok_or_else(|| Error::Library("malformed answer".into()))?;
    let rest = &body[4..];
    if code == 1 {
        return Ok(rest.to_vec());
    }
    let detail = String::from_utf8_lossy(rest).into_owned();
    Err(Error::from_code(code, detail.clone())
        .unwrap_or_else(|_| Error::Library(format!("unknown code {code}: {detail}").into())))
}

/// The body of a MEMBERSHIP_GET answer: this node, the count, the nodes.
#[must_use]
pub fn encode_membership(me: NodeId, members: &[NodeId]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + 4 * members.len());
    out.extend_from_slice(&me.0.to_le_bytes());
    out.extend_from_slice(&(members.len() as u32).to_le_bytes());
    for node in members {
        out.extend_from_slice(&node.0.to_le_bytes());
    }
    out
}

/// A MEMBERSHIP_GET answer's body.
#[must_use]
pub fn decode_membership(body: &[u8]) -> Option<(NodeId, Vec<NodeId>)> {
    let mut r = Reader { body, at: 0 };
    let me = NodeId(r.u32()?);
    let count = r.u32()? as usize;
    if count.checked_mul(4)? != body.len() - r.at {
        return None;
    }
    let members = (0..count)
        .map(|_| r.u32().map(NodeId))
        .collect::<Option<Vec<_>>>()?;
    Some((me, members))
}

const KIND_REGULAR: u8 = 0;
const KIND_TRANSITIONAL: u8 = 1;

/// Encodes an event into `out` (a ring claim is written from it); returns its kind.
pub fn encode_event(event: &Event, out: &mut BytesMut) -> u32 {
    out.clear();
    match event {
        Event::Deliver {
            nodeid,
            pid,
            payload,
        } => {
            out.put_u32_le(nodeid.0);
            out.put_u32_le(*pid);
            out.put_slice(payload);
            DELIVER
        }
        Event::ConfChg {
            kind,
            ring,
            old_ring,
            members,
            left,
            joined,
        } => {
            out.put_u8(match kind {
                ConfigurationKind::Regular => KIND_REGULAR,
                ConfigurationKind::Transitional => KIND_TRANSITIONAL,
            });
            for ring in [ring, old_ring] {
                out.put_u32_le(ring.rep);
                out.put_u64_le(ring.seq);
            }
            for list in [members, left, joined] {
                out.put_u32_le(list.len() as u32);
            }
            for node in members.iter().chain(left).chain(joined) {
                out.put_u32_le(node.0);
            }
            CONFCHG
        }
    }
}

/// An event decoded from a record (payloads copied out of the ring); `None` for an unknown kind
/// or a malformed body.
#[must_use]
pub fn decode_event(kind: u32, body: &[u8]) -> Option<Event> {
    let mut r = Reader { body, at: 0 };
    match kind {
        DELIVER => Some(Event::Deliver {
            nodeid: NodeId(r.u32()?),
            pid: r.u32()?,
            payload: Bytes::copy_from_slice(&body[r.at..]),
        }),
        CONFCHG => {
            let kind = match r.u8()? {
                KIND_REGULAR => ConfigurationKind::Regular,
                KIND_TRANSITIONAL => ConfigurationKind::Transitional,
                _ => return None,
            };
            let ring = r.ring()?;
            let old_ring = r.ring()?;
            let counts = [r.u32()? as usize, r.u32()? as usize, r.u32()? as usize];
            let total = counts
                .iter()
                .try_fold(0usize, |sum, &n| sum.checked_add(n))?;
            if total.checked_mul(4)? != body.len() - r.at {
                return None;
            }
            let mut lists: [Vec<NodeId>; 3] = Default::default();
            for (list, count) in lists.iter_mut().zip(counts) {
                for _ in 0..count {
                    list.push(NodeId(r.u32()?));
                }
            }
            let [members, left, joined] = lists;
            Some(Event::ConfChg {
                kind,
                ring,
                old_ring,
                members,
                left,
                joined,
            })
        }
        _ => None,
    }
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

    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn ring(&mut self) -> Option<RingId> {
        Some(RingId {
            rep: self.u32()?,
            seq: self.u64()?,
        })
    }
}
