//! The EVS service's messages inside the totem stream, and its group keys.
//!
//! A payload starts with the service byte [`SERVICE`] and an operation byte. The only operation
//! is a multicast: the sender's pid (`u32`, little-endian), the number of group keys (`u16`,
//! 1..=[`GROUPS_JOINED_MAX`]), each key as a length byte and its bytes without the trailing zero
//! padding (0..=32 bytes, so a short key costs a few bytes, not 32), then the message to the end
//! of the payload.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

use crate::api::{EVS_GROUP_KEY_LENGTH, EVS_GROUPS_PER_CALL_MAX};
use crate::error::{Error, Result};

/// The service byte of EVS messages.
pub const SERVICE: u8 = crate::node::services::ServiceId::Evs.byte();

const OP_MCAST: u8 = 1;

/// Bytes of a multicast before its first key.
const HEADER_LEN: usize = 8;

/// Most groups one connection may have joined at a time (`CS_ERR_TOO_MANY_GROUPS` beyond); it
/// bounds the node's memory per connection and the keys an `evs_mcast_joined` carries.
/// Corosync set no total (only 50 per call).
pub const GROUPS_JOINED_MAX: usize = 1024;

// A mcast_groups message fits in a multicast's key count.
const _: () = assert!(EVS_GROUPS_PER_CALL_MAX <= GROUPS_JOINED_MAX);
const _: () = assert!(GROUPS_JOINED_MAX <= u16::MAX as usize);

/// An EVS group: an opaque 32-byte key compared over all 32 bytes (Corosync's
/// `struct evs_group`). A key is given as 1..=32 bytes and zero-padded, so `b"a"` and `b"a\0"`
/// are the same key. Keys order by their bytes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Key([u8; EVS_GROUP_KEY_LENGTH]);

impl Key {
    /// The key of `name`: 1..=32 bytes, zero-padded to 32. `CS_ERR_INVALID_PARAM` when empty,
    /// `CS_ERR_NAME_TOO_LONG` beyond 32 bytes.
    pub fn new(name: &[u8]) -> Result<Key> {
        if name.is_empty() {
            return Err(Error::InvalidParam(
                "an EVS group key must not be empty".into(),
            ));
        }
        if name.len() > EVS_GROUP_KEY_LENGTH {
            return Err(Error::NameTooLong(
                format!(
                    "EVS group key is {} bytes, the limit is {EVS_GROUP_KEY_LENGTH}",
                    name.len()
                )
                .into(),
            ));
        }
        let mut key = [0; EVS_GROUP_KEY_LENGTH];
        key[..name.len()].copy_from_slice(name);
        Ok(Key(key))
    }

    /// A key from all of its 32 bytes (any value, as a C caller fills `struct evs_group`).
    #[must_use]
    pub const fn from_array(bytes: [u8; EVS_GROUP_KEY_LENGTH]) -> Key {
        Key(bytes)
    }

    /// All 32 bytes.
    #[must_use]
    pub const fn as_array(&self) -> &[u8; EVS_GROUP_KEY_LENGTH] {
        &self.0
    }

    /// The key without its trailing zero bytes (empty for the all-zero key).
    #[must_use]
    pub fn trimmed(&self) -> &[u8] {
        let len = self.0.iter().rposition(|&b| b != 0).map_or(0, |at| at + 1);
        &self.0[..len]
    }

    /// Keys from names, each checked as [`Key::new`] does; `CS_ERR_TOO_MANY_GROUPS` for more
    /// than [`EVS_GROUPS_PER_CALL_MAX`] names.
    pub fn list<N: AsRef<[u8]>>(names: &[N]) -> Result<Vec<Key>> {
        check_count(names.len())?;
        names.iter().map(|name| Key::new(name.as_ref())).collect()
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key(\"{}\")", self.trimmed().escape_ascii())
    }
}

/// All 32 bytes: a [`Key`] can be given wherever key names are (`Key::new` of them is itself).
impl AsRef<[u8]> for Key {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl TryFrom<&[u8]> for Key {
    type Error = Error;

    fn try_from(name: &[u8]) -> Result<Key> {
        Key::new(name)
    }
}

impl TryFrom<&str> for Key {
    type Error = Error;

    fn try_from(name: &str) -> Result<Key> {
        Key::new(name.as_bytes())
    }
}

/// At most [`EVS_GROUPS_PER_CALL_MAX`] groups in one call (`CS_ERR_TOO_MANY_GROUPS`).
pub fn check_count(count: usize) -> Result<()> {
    if count > EVS_GROUPS_PER_CALL_MAX {
        return Err(Error::TooManyGroups(
            format!("{count} groups in one call, the limit is {EVS_GROUPS_PER_CALL_MAX}").into(),
        ));
    }
    Ok(())
}

/// An EVS multicast as delivered by totem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mcast {
    /// The sending process.
    pub pid: u32,
    /// The groups it is for (1..=[`GROUPS_JOINED_MAX`]).
    pub groups: Vec<Key>,
    /// The message.
    pub payload: Bytes,
}

/// The totem payload of a multicast of process `pid` to `groups` (1..=[`GROUPS_JOINED_MAX`]
/// keys; the caller checked), written straight from the application's bytes.
#[must_use]
pub fn encode_mcast<'k>(
    pid: u32,
    groups: impl ExactSizeIterator<Item = &'k Key> + Clone,
    payload: &[u8],
) -> Bytes {
    debug_assert!(groups.len() > 0 && groups.len() <= GROUPS_JOINED_MAX);
    let keys: usize = groups.clone().map(|key| 1 + key.trimmed().len()).sum();
    let mut out = BytesMut::with_capacity(HEADER_LEN + keys + payload.len());
    out.put_u8(SERVICE);
    out.put_u8(OP_MCAST);
    out.put_u32_le(pid);
    out.put_u16_le(groups.len() as u16);
    for key in groups {
        let name = key.trimmed();
        out.put_u8(name.len() as u8);
        out.put_slice(name);
    }
    out.put_slice(payload);
    out.freeze()
}

impl Mcast {
    /// The payload as totem carries it.
    #[must_use]
    pub fn encode(&self) -> Bytes {
        encode_mcast(self.pid, self.groups.iter(), &self.payload)
    }

    /// Decodes a totem payload of the EVS service; `None` if it is not one or is malformed.
    /// The message shares `bytes`' storage (no copy).
    #[must_use]
    pub fn decode(bytes: &Bytes) -> Option<Mcast> {
        let header = bytes.get(..HEADER_LEN)?;
        if header[0] != SERVICE || header[1] != OP_MCAST {
            return None;
        }
        let pid = u32::from_le_bytes(header[2..6].try_into().ok()?);
        let count = usize::from(u16::from_le_bytes(header[6..8].try_into().ok()?));
        // Each key takes at least its length byte: a lying count cannot make us allocate.
        if count == 0 || count > GROUPS_JOINED_MAX || count > bytes.len() - HEADER_LEN {
            return None;
        }
        let mut at = HEADER_LEN;
        let mut groups = Vec::with_capacity(count);
        for _ in 0..count {
            let len = usize::from(*bytes.get(at)?);
            if len > EVS_GROUP_KEY_LENGTH {
                return None;
            }
            let name = bytes.get(at + 1..at + 1 + len)?;
            let mut key = [0; EVS_GROUP_KEY_LENGTH];
            key[..len].copy_from_slice(name);
            groups.push(Key(key));
            at += 1 + len;
        }
        Some(Mcast {
            pid,
            groups,
            payload: bytes.slice(at..),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multicasts_round_trip_and_garbage_is_refused() {
        let key = |name: &[u8]| Key::new(name).unwrap();
        let messages = [
            Mcast {
                pid: 7,
                groups: vec![key(b"a")],
                payload: Bytes::new(),
            },
            Mcast {
                pid: u32::MAX,
                groups: vec![key(&[0xFF; 32]), Key::default(), key(b"a\0b")],
                payload: Bytes::from(vec![1; 5000]),
            },
            Mcast {
                pid: 1,
                groups: (0..GROUPS_JOINED_MAX)
                    .map(|i| key(&(i as u32 + 1).to_le_bytes()))
                    .collect(),
                payload: Bytes::from_static(b"x"),
            },
        ];
        for message in messages {
            let bytes = message.encode();
            assert_eq!(Mcast::decode(&bytes), Some(message.clone()));
            let header: usize = HEADER_LEN
                + message
                    .groups
                    .iter()
                    .map(|k| 1 + k.trimmed().len())
                    .sum::<usize>();
            for cut in (0..header).step_by(7) {
                assert_eq!(Mcast::decode(&bytes.slice(..cut)), None, "cut at {cut}");
            }
            assert_eq!(Mcast::decode(&bytes.slice(..header - 1)), None);
        }
        // No groups, too many groups, a lying count, a key longer than 32 bytes, another
        // service, another operation.
        let garbage: [&[u8]; 6] = [
            &[SERVICE, OP_MCAST, 0, 0, 0, 0, 0, 0],
            &[SERVICE, OP_MCAST, 0, 0, 0, 0, 0x01, 0x04, 0],
            &[SERVICE, OP_MCAST, 0, 0, 0, 0, 3, 0, 0, 0],
            &[SERVICE, OP_MCAST, 0, 0, 0, 0, 1, 0, 33, 1, 1],
            &[1, OP_MCAST, 0, 0, 0, 0, 1, 0, 0],
            &[SERVICE, 9, 0, 0, 0, 0, 1, 0, 0],
        ];
        for bytes in garbage {
            assert_eq!(
                Mcast::decode(&Bytes::copy_from_slice(bytes)),
                None,
                "{bytes:?}"
            );
        }
        let mut many = vec![SERVICE, OP_MCAST, 0, 0, 0, 0];
        many.extend_from_slice(&(GROUPS_JOINED_MAX as u16 + 1).to_le_bytes());
        many.extend_from_slice(&[0; GROUPS_JOINED_MAX + 1]);
        assert_eq!(Mcast::decode(&Bytes::from(many)), None);
        // The all-zero key is a key (length 0 on the wire).
        let zero = encode_mcast(1, [Key::default()].iter(), b"");
        assert_eq!(Mcast::decode(&zero).unwrap().groups, vec![Key::default()]);
    }

    #[test]
    fn short_keys_cost_their_length_on_the_wire() {
        let bytes = encode_mcast(1, [Key::new(b"ab").unwrap()].iter(), b"m");
        assert_eq!(bytes.len(), HEADER_LEN + 3 + 1);
    }
}
