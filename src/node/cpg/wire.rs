//! The CPG service's messages inside the totem stream. Every payload the node multicasts starts
//! with a service byte; CPG's is [`SERVICE`], followed by an operation byte and its fields
//! (little-endian, length-checked; a group name is 1..=128 bytes with a length byte).

use bytes::{BufMut, Bytes, BytesMut};

use crate::api::{CPG_MAX_NAME_LENGTH, Reason};
use crate::ids::RingId;

/// The service byte of CPG messages.
pub const SERVICE: u8 = crate::node::services::ServiceId::Cpg.byte();

const OP_JOIN: u8 = 1;
const OP_LEAVE: u8 = 2;
const OP_MCAST: u8 = 3;
const OP_JOINLIST: u8 = 4;
const OP_MCAST_BATCH: u8 = 5;

/// A group name: 1..=128 bytes.
pub type Group = Bytes;

/// One CPG message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// Process `pid` of the sending node joins `group`.
    Join {
        /// The joining process.
        pid: u32,
        /// The group.
        group: Group,
    },
    /// Process `pid` of the sending node leaves `group` (LEAVE, or PROCDOWN when it died).
    Leave {
        /// The leaving process.
        pid: u32,
        /// LEAVE or PROCDOWN.
        reason: Reason,
        /// The group.
        group: Group,
    },
    /// An application message of process `pid` to `group`.
    Mcast {
        /// The sending process.
        pid: u32,
        /// The group.
        group: Group,
        /// The message.
        payload: Bytes,
    },
    /// Consecutive application messages of process `pid` to `group`, sent as one totem
    /// message (the node batches small messages a client queued back to back).
    McastBatch {
        /// The sending process.
        pid: u32,
        /// The group.
        group: Group,
        /// The messages: each a length (`u32`) and its bytes (checked at decode).
        items: Bytes,
    },
    /// After a configuration change: every joined process of the sending node (the sync).
    JoinList {
        /// The ring this list is for.
        ring: RingId,
        /// `(pid, group)` of every local member.
        entries: Vec<(u32, Group)>,
    },
}

fn put_group(out: &mut BytesMut, group: &[u8]) {
    debug_assert!(!group.is_empty() && group.len() <= CPG_MAX_NAME_LENGTH);
    out.put_u8(group.len() as u8);
    out.put_slice(group);
}

impl Message {
    /// The message as a totem payload.
    #[must_use]
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(16);
        out.put_u8(SERVICE);
        match self {
            Message::Join { pid, group } => {
                out.put_u8(OP_JOIN);
                out.put_u32_le(*pid);
                put_group(&mut out, group);
            }
            Message::Leave { pid, reason, group } => {
                out.put_u8(OP_LEAVE);
                out.put_u32_le(*pid);
                out.put_u8(u32::from(*reason) as u8);
                put_group(&mut out, group);
            }
            Message::Mcast {
                pid,
                group,
                payload,
            } => return encode_mcast(*pid, group, payload),
            Message::McastBatch { pid, group, items } => {
                let mut out = mcast_batch_prefix(*pid, group, items.len());
                out.extend_from_slice(items);
                return Bytes::from(out);
            }
            Message::JoinList { ring, entries } => {
                out.put_u8(OP_JOINLIST);
                out.put_u32_le(ring.rep);
                out.put_u64_le(ring.seq);
                out.put_u32_le(entries.len() as u32);
                for (pid, group) in entries {
                    out.put_u32_le(*pid);
                    put_group(&mut out, group);
                }
            }
        }
        out.freeze()
    }

    /// Decodes a totem payload of the CPG service; `None` if it is not one or is malformed.
    /// Payloads share `bytes`' storage (no copy).
    #[must_use]
    pub fn decode(bytes: &Bytes) -> Option<Message> {
        let mut reader = Reader { bytes, at: 0 };
        if reader.u8()? != SERVICE {
            return None;
        }
        let message = match reader.u8()? {
            OP_JOIN => Message::Join {
                pid: reader.u32()?,
                group: reader.group()?,
            },
            OP_LEAVE => Message::Leave {
                pid: reader.u32()?,
                reason: match Reason::try_from(u32::from(reader.u8()?)).ok()? {
                    reason @ (Reason::Leave | Reason::ProcDown) => reason,
                    _ => return None,
                },
                group: reader.group()?,
            },
            OP_MCAST => {
                let pid = reader.u32()?;
                let group = reader.group()?;
                let payload = bytes.slice(reader.at..);
                reader.at = bytes.len();
                Message::Mcast {
                    pid,
                    group,
                    payload,
                }
            }
            OP_MCAST_BATCH => {
                let pid = reader.u32()?;
                let group = reader.group()?;
                let items = bytes.slice(reader.at..);
                if batch_items(&items).any(|item| item.is_none()) {
                    return None;
                }
                reader.at = bytes.len();
                Message::McastBatch { pid, group, items }
            }
            OP_JOINLIST => {
                let ring = RingId {
                    rep: reader.u32()?,
                    seq: reader.u64()?,
                };
                let count = reader.u32()? as usize;
                // Each entry takes at least 6 bytes: a lying count cannot make us allocate.
                if count > (bytes.len() - reader.at) / 6 {
                    return None;
                }
                let mut entries = Vec::with_capacity(count);
                for _ in 0..count {
                    entries.push((reader.u32()?, reader.group()?));
                }
                Message::JoinList { ring, entries }
            }
            _ => return None,
        };
        (reader.at == bytes.len()).then_some(message)
    }
}

/// The totem payload of a multicast up to its message: the caller appends the message's
/// `len` bytes (from wherever they are: one copy in all).
#[must_use]
pub fn mcast_prefix(pid: u32, group: &[u8], len: usize) -> Vec<u8> {
    debug_assert!(!group.is_empty() && group.len() <= CPG_MAX_NAME_LENGTH);
    let mut out = Vec::with_capacity(7 + group.len() + len);
    out.put_u8(SERVICE);
    out.put_u8(OP_MCAST);
    out.put_u32_le(pid);
    out.put_u8(group.len() as u8);
    out.put_slice(group);
    out
}

/// The totem payload of a batch of multicasts up to its items: the caller appends each item
/// as [`put_batch_item`] does.
#[must_use]
pub fn mcast_batch_prefix(pid: u32, group: &[u8], len: usize) -> Vec<u8> {
    debug_assert!(!group.is_empty() && group.len() <= CPG_MAX_NAME_LENGTH);
    let mut out = Vec::with_capacity(7 + group.len() + len);
    out.put_u8(SERVICE);
    out.put_u8(OP_MCAST_BATCH);
    out.put_u32_le(pid);
    out.put_u8(group.len() as u8);
    out.put_slice(group);
    out
}

/// The messages of a [`Message::McastBatch`], each sharing `items`' storage (`None` for a
/// malformed rest).
pub fn batch_items(items: &Bytes) -> impl Iterator<Item = Option<Bytes>> + '_ {
    let mut at = 0;
    std::iter::from_fn(move || {
        if at == items.len() {
            return None;
        }
        let item = items
            .get(at..at + 4)
            .map(|len| u32::from_le_bytes(len.try_into().expect("4")) as usize)
            .and_then(|len| {
                let start = at + 4;
                let end = start.checked_add(len).filter(|&end| end <= items.len())?;
                Some((start, end))
            });
        if let Some((start, end)) = item {
            at = end;
            Some(Some(items.slice(start..end)))
        } else {
            at = items.len();
            Some(None)
        }
    })
}

/// The payload of [`Message::Mcast`] written straight from the application's bytes.
#[must_use]
pub fn encode_mcast(pid: u32, group: &[u8], payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(7 + group.len() + payload.len());
    out.put_u8(SERVICE);
    out.put_u8(OP_MCAST);
    out.put_u32_le(pid);
    put_group(&mut out, group);
    out.put_slice(payload);
    out.freeze()
}

struct Reader<'b> {
    bytes: &'b Bytes,
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, len: usize) -> Option<&[u8]> {
        let slice = self.bytes.get(self.at..self.at.checked_add(len)?)?;
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

    fn group(&mut self) -> Option<Group> {
        let len = usize::from(self.u8()?);
        if len == 0 || len > CPG_MAX_NAME_LENGTH {
            return None;
        }
        let start = self.at;
        self.take(len)?;
        Some(self.bytes.slice(start..start + len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::NodeId;

    #[test]
    fn batches_round_trip_and_a_cut_item_is_refused() {
        let items: [&[u8]; 3] = [b"a", b"", b"ccc"];
        let mut payload = mcast_batch_prefix(9, b"g", 0);
        let header = payload.len();
        let mut boundaries = vec![payload.len()];
        for item in items {
            payload.extend_from_slice(&(item.len() as u32).to_le_bytes());
            payload.extend_from_slice(item);
            boundaries.push(payload.len());
        }
        let bytes = Bytes::from(payload);
        let Some(Message::McastBatch {
            pid,
            group,
            items: raw,
        }) = Message::decode(&bytes)
        else {
            panic!("a batch decodes");
        };
        assert_eq!((pid, &group[..]), (9, &b"g"[..]));
        let decoded: Vec<Bytes> = batch_items(&raw).map(Option::unwrap).collect();
        assert_eq!(decoded, items.map(Bytes::from_static));
        let message = Message::decode(&bytes).unwrap();
        assert_eq!(Message::decode(&message.encode()), Some(message));
        for cut in header..bytes.len() {
            let decoded = Message::decode(&bytes.slice(..cut));
            assert_eq!(
                decoded.is_some(),
                boundaries.contains(&cut),
                "cut at {cut}: {decoded:?}"
            );
        }
    }

    #[test]
    fn messages_round_trip_and_garbage_is_refused() {
        let group = Bytes::from_static(b"group");
        let messages = [
            Message::Join {
                pid: 7,
                group: group.clone(),
            },
            Message::Leave {
                pid: 7,
                reason: Reason::ProcDown,
                group: group.clone(),
            },
            Message::Mcast {
                pid: 7,
                group: group.clone(),
                payload: Bytes::from_static(b""),
            },
            Message::Mcast {
                pid: u32::MAX,
                group: Bytes::from(vec![b'g'; 128]),
                payload: Bytes::from(vec![1; 5000]),
            },
            Message::JoinList {
                ring: RingId::new(NodeId(2), 40),
                entries: vec![(1, group.clone()), (2, Bytes::from_static(b"x"))],
            },
        ];
        for message in messages {
            let bytes = message.encode();
            assert_eq!(Message::decode(&bytes), Some(message.clone()));
            for cut in 0..bytes.len().min(40) {
                if !matches!(message, Message::Mcast { .. }) || cut < 7 {
                    assert_eq!(
                        Message::decode(&bytes.slice(..cut)),
                        None,
                        "{message:?} cut at {cut}"
                    );
                }
            }
        }
        let mut leave_join = Message::Leave {
            pid: 1,
            reason: Reason::Leave,
            group,
        }
        .encode()
        .to_vec();
        leave_join[6] = u32::from(Reason::Join) as u8;
        assert_eq!(Message::decode(&Bytes::from(leave_join)), None);
        let mut lying = vec![SERVICE, OP_JOINLIST];
        lying.extend_from_slice(&[0; 12]);
        lying.extend_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(Message::decode(&Bytes::from(lying)), None);
        assert_eq!(Message::decode(&Bytes::from_static(&[2, 1])), None);
    }
}
