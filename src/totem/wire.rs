//! The wire format of the protocol messages: versioned, explicit little-endian, decoded with
//! length checks that never panic and never allocate more than the input justifies.
//!
//! Every datagram starts with an 8-byte header: magic `0x5443` (u16), version (u8), kind (u8),
//! sender node id (u32, the node that transmitted this copy). The body depends on the kind:
//!
//! | kind | body |
//! |---|---|
//! | 0 token | ring, token_seq u64, seq u64, aru u64, aru_addr u32, fcc u32, backlog u32, flags u8 (retrans_flg, recovering), n u16, n × (ring, seq u64) |
//! | 1 mcast | ring, seq u64, origin u32, origin_prev_seq u64, flags u8, then chunks (n u16, n × chunk) or, if flags bit 0, an encapsulated old-ring mcast (len u32, bytes) |
//! | 2 merge detect | ring |
//! | 3 join | ring_seq u64, n u16, n × u32 proc set, m u16, m × u32 fail set |
//! | 4 commit token | ring, token_seq u64, memb_index u16, n u16, n × (node u32, old ring, old_aru u64, high_delivered u64, received_flg u8) |
//! | 5 token hold cancel | ring |
//!
//! A ring is `rep u32, seq u64`. A chunk is `number u64, guarantee u8, total_len u32,
//! offset u32, len u32, len bytes`: one whole application message or one fragment of one.

use crate::api::Guarantee;
use crate::ids::{NodeId, RingId};

/// First two bytes of every datagram.
pub const MAGIC: u16 = 0x5443;
/// The wire version this build speaks.
pub const VERSION: u8 = 1;
/// Length of the common header.
pub const HEADER_LEN: usize = 8;
/// Encoded length of a ring id.
pub const RING_LEN: usize = 12;
/// Length of an mcast datagram before its chunks (header, fields, chunk count).
pub const MCAST_PREFIX_LEN: usize = HEADER_LEN + RING_LEN + 8 + 4 + 8 + 1 + 2;
/// Bytes a recovery adds around an old-ring packet it re-broadcasts (the new ring's mcast
/// header, without a chunk count, and the inner length `u32`). Regular packets leave this much
/// of `netmtu` unused so that their re-broadcast still fits in one datagram, as Corosync's
/// totemsrp does: recovery never relies on IP fragmentation.
pub const ENCAPSULATION_LEN: usize = MCAST_PREFIX_LEN - 2 + 4;
/// Length of a chunk header.
pub const CHUNK_HEADER_LEN: usize = 8 + 1 + 4 + 4 + 4;
/// Most retransmit requests one token may carry on the wire.
pub const RTR_ENTRIES_MAX: usize = 256;
/// Most members one join or commit token may list on the wire.
pub const MEMBERS_MAX: usize = 1024;

/// Where a datagram's kind byte sits (after the magic and the version).
const KIND_AT: usize = 3;

/// The kind a datagram says it is, read from its header without decoding the rest (for the
/// simulator's network, which routes and checks datagrams by kind).
#[must_use]
pub fn peek_kind(bytes: &[u8]) -> Option<Kind> {
    bytes.get(KIND_AT).copied().and_then(Kind::from_byte)
}

/// Kinds of datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// The ordering token (ORF).
    Token = 0,
    /// A regular message.
    Mcast = 1,
    /// "This idle ring exists" from a representative.
    MergeDetect = 2,
    /// A membership join (or leave).
    Join = 3,
    /// The commit token of a proposed ring.
    CommitToken = 4,
    /// "Please forward the held token now".
    TokenHoldCancel = 5,
}

impl Kind {
    fn from_byte(byte: u8) -> Option<Kind> {
        Some(match byte {
            0 => Kind::Token,
            1 => Kind::Mcast,
            2 => Kind::MergeDetect,
            3 => Kind::Join,
            4 => Kind::CommitToken,
            5 => Kind::TokenHoldCancel,
            _ => return None,
        })
    }
}

/// Why a datagram was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than the header or than a field it announces.
    Truncated,
    /// Not our magic number.
    BadMagic,
    /// A version this build does not speak.
    UnsupportedVersion(u8),
    /// An unknown kind byte.
    UnknownKind(u8),
    /// Bytes left after the message.
    TrailingBytes,
    /// A field out of range (named).
    Invalid(&'static str),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Truncated => write!(f, "truncated datagram"),
            DecodeError::BadMagic => write!(f, "bad magic number"),
            DecodeError::UnsupportedVersion(v) => write!(f, "unsupported wire version {v}"),
            DecodeError::UnknownKind(k) => write!(f, "unknown message kind {k}"),
            DecodeError::TrailingBytes => write!(f, "trailing bytes after the message"),
            DecodeError::Invalid(what) => write!(f, "invalid {what}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// A retransmit request in a token: "I lack message `seq` of `ring`".
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct RtrEntry {
    /// The ring the message was sent on.
    pub ring: RingId,
    /// Its seq.
    pub seq: u64,
}

/// The ordering token (ORF token, PROTOCOL.md §1.2).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Token {
    /// The ring this token belongs to.
    pub ring: RingId,
    /// Goes up by one at every accepted hop; filters retransmitted copies.
    pub token_seq: u64,
    /// Highest message seq assigned on this ring.
    pub seq: u64,
    /// All-received-up-to: the ring's low-water mark.
    pub aru: u64,
    /// The member that set `aru` below `seq`, or none.
    pub aru_addr: NodeId,
    /// Messages broadcast during the last rotation.
    pub fcc: u32,
    /// Sum of the members' send backlogs.
    pub backlog: u32,
    /// Recovery only: someone still re-broadcasts old-ring messages.
    pub retrans_flg: bool,
    /// Someone has not installed the ring yet: an idle representative must not hold the
    /// token then (those members need token visits to install).
    pub recovering: bool,
    /// Retransmit requests.
    pub rtr: Vec<RtrEntry>,
}

/// The fixed fields of a regular message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct McastHeader {
    /// The ring it was sent on.
    pub ring: RingId,
    /// Its place in the ring's order.
    pub seq: u64,
    /// The node that originated it (a retransmitting node keeps this).
    pub origin: NodeId,
    /// The seq of the origin's previous message on this ring, 0 if none.
    pub origin_prev_seq: u64,
}

/// One application message, or one fragment of one, inside a regular message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunk<'a> {
    /// The origin's message number.
    pub number: u64,
    /// The message's guarantee.
    pub guarantee: Guarantee,
    /// Length of the whole message.
    pub total_len: u32,
    /// Where this fragment starts in the message.
    pub offset: u32,
    /// The fragment's bytes.
    pub data: &'a [u8],
}

impl Chunk<'_> {
    /// Whether this chunk ends its message.
    #[must_use]
    pub fn is_last(&self) -> bool {
        self.offset as usize + self.data.len() == self.total_len as usize
    }
}

/// The validated chunks of a regular message, decoded as they are iterated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunks<'a> {
    remaining: u16,
    bytes: &'a [u8],
}

impl<'a> Iterator for Chunks<'a> {
    type Item = Chunk<'a>;

    fn next(&mut self) -> Option<Chunk<'a>> {
        if self.remaining == 0 {
            return None;
        }
        let mut reader = Reader::new(self.bytes);
        // Validated by `decode`; a failure here would mean a bug, so stop instead of panicking.
        let chunk = read_chunk(&mut reader).ok()?;
        self.bytes = reader.rest();
        self.remaining -= 1;
        Some(chunk)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining as usize, Some(self.remaining as usize))
    }
}

impl ExactSizeIterator for Chunks<'_> {}

/// What a regular message carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum McastBody<'a> {
    /// Application messages and fragments.
    Chunks(Chunks<'a>),
    /// A complete old-ring regular message, re-broadcast during recovery (already validated
    /// to decode as a non-encapsulated mcast).
    Encapsulated(&'a [u8]),
}

/// A regular message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mcast<'a> {
    /// Fixed fields.
    pub header: McastHeader,
    /// Payload.
    pub body: McastBody<'a>,
}

/// A membership join (PROTOCOL.md §1.8).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Join {
    /// Largest ring seq the sender knows.
    pub ring_seq: u64,
    /// Processors the sender considers for the new ring, sorted.
    pub proc_set: Vec<NodeId>,
    /// Processors it considers failed, sorted.
    pub fail_set: Vec<NodeId>,
}

/// One member's entry in a commit token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct CommitEntry {
    /// The member.
    pub node: NodeId,
    /// Its old ring.
    pub old_ring: RingId,
    /// Its aru on the old ring.
    pub old_aru: u64,
    /// Highest seq it delivered on the old ring.
    pub high_delivered: u64,
    /// Whether it already has every old-ring message its old-ring peers have.
    pub received_flg: bool,
}

/// The commit token of a proposed ring (PROTOCOL.md §1.9).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct CommitToken {
    /// The new ring.
    pub ring: RingId,
    /// Filters retransmitted copies.
    pub token_seq: u64,
    /// How many members filled their entry.
    pub memb_index: u16,
    /// The members, sorted, with their entries.
    pub entries: Vec<CommitEntry>,
}

/// A decoded message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// The ordering token.
    Token(Token),
    /// A regular message.
    Mcast(Mcast<'a>),
    /// A merge detect of an idle ring.
    MergeDetect {
        /// The sender's ring.
        ring: RingId,
    },
    /// A join.
    Join(Join),
    /// A commit token.
    CommitToken(CommitToken),
    /// A token hold cancel.
    TokenHoldCancel {
        /// The sender's ring.
        ring: RingId,
    },
}

/// A decoded datagram: who transmitted it and what it says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Datagram<'a> {
    /// The transmitting node.
    pub sender: NodeId,
    /// The message.
    pub message: Message<'a>,
}

/// Decodes one datagram, checking every length and range.
pub fn decode(bytes: &[u8]) -> Result<Datagram<'_>, DecodeError> {
    let mut reader = Reader::new(bytes);
    let (kind, sender) = read_header(&mut reader)?;
    let message = match kind {
        Kind::Token => Message::Token(read_token(&mut reader)?),
        Kind::Mcast => Message::Mcast(read_mcast(&mut reader, true)?),
        Kind::MergeDetect => Message::MergeDetect {
            ring: reader.ring()?,
        },
        Kind::Join => Message::Join(read_join(&mut reader)?),
        Kind::CommitToken => Message::CommitToken(read_commit(&mut reader)?),
        Kind::TokenHoldCancel => Message::TokenHoldCancel {
            ring: reader.ring()?,
        },
    };
    if !reader.rest().is_empty() {
        return Err(DecodeError::TrailingBytes);
    }
    Ok(Datagram { sender, message })
}

fn read_header(reader: &mut Reader<'_>) -> Result<(Kind, NodeId), DecodeError> {
    if reader.u16()? != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    let version = reader.u8()?;
    if version != VERSION {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    let byte = reader.u8()?;
    let kind = Kind::from_byte(byte).ok_or(DecodeError::UnknownKind(byte))?;
    let sender = NodeId(reader.u32()?);
    if sender.is_none() {
        return Err(DecodeError::Invalid("sender node id 0"));
    }
    Ok((kind, sender))
}

fn read_token(reader: &mut Reader<'_>) -> Result<Token, DecodeError> {
    let ring = reader.ring()?;
    let token_seq = reader.u64()?;
    let seq = reader.u64()?;
    let aru = reader.u64()?;
    let aru_addr = NodeId(reader.u32()?);
    let fcc = reader.u32()?;
    let backlog = reader.u32()?;
    let flags = reader.u8()?;
    if flags & !3 != 0 {
        return Err(DecodeError::Invalid("token flags"));
    }
    let (retrans_flg, recovering) = (flags & 1 != 0, flags & 2 != 0);
    let count = reader.u16()? as usize;
    if count > RTR_ENTRIES_MAX {
        return Err(DecodeError::Invalid("retransmit list length"));
    }
    // Each entry is 20 bytes: check before allocating.
    if reader.rest().len() < count * 20 {
        return Err(DecodeError::Truncated);
    }
    let mut rtr = Vec::with_capacity(count);
    for _ in 0..count {
        rtr.push(RtrEntry {
            ring: reader.ring()?,
            seq: reader.u64()?,
        });
    }
    if aru > seq {
        return Err(DecodeError::Invalid("token aru above seq"));
    }
    Ok(Token {
        ring,
        token_seq,
        seq,
        aru,
        aru_addr,
        fcc,
        backlog,
        retrans_flg,
        recovering,
        rtr,
    })
}

fn read_mcast_header(reader: &mut Reader<'_>) -> Result<(McastHeader, u8), DecodeError> {
    let ring = reader.ring()?;
    let seq = reader.u64()?;
    let origin = NodeId(reader.u32()?);
    let origin_prev_seq = reader.u64()?;
    let flags = reader.u8()?;
    if seq == 0 {
        return Err(DecodeError::Invalid("mcast seq 0"));
    }
    if origin.is_none() {
        return Err(DecodeError::Invalid("mcast origin 0"));
    }
    if origin_prev_seq >= seq {
        return Err(DecodeError::Invalid("mcast origin_prev_seq"));
    }
    if flags & !1 != 0 {
        return Err(DecodeError::Invalid("mcast flags"));
    }
    Ok((
        McastHeader {
            ring,
            seq,
            origin,
            origin_prev_seq,
        },
        flags,
    ))
}

fn read_mcast<'a>(
    reader: &mut Reader<'a>,
    allow_encapsulated: bool,
) -> Result<Mcast<'a>, DecodeError> {
    let (header, flags) = read_mcast_header(reader)?;
    if flags & 1 != 0 {
        if !allow_encapsulated {
            return Err(DecodeError::Invalid("nested encapsulation"));
        }
        let len = reader.u32()? as usize;
        let inner = reader.bytes(len)?;
        let mut inner_reader = Reader::new(inner);
        let (kind, _) = read_header(&mut inner_reader)?;
        if kind != Kind::Mcast {
            return Err(DecodeError::Invalid("encapsulated message kind"));
        }
        read_mcast(&mut inner_reader, false)?;
        if !inner_reader.rest().is_empty() {
            return Err(DecodeError::TrailingBytes);
        }
        return Ok(Mcast {
            header,
            body: McastBody::Encapsulated(inner),
        });
    }
    let count = reader.u16()?;
    let start = reader.rest();
    for _ in 0..count {
        read_chunk(reader)?;
    }
    let consumed = start.len() - reader.rest().len();
    let chunks = Chunks {
        remaining: count,
        bytes: &start[..consumed],
    };
    Ok(Mcast {
        header,
        body: McastBody::Chunks(chunks),
    })
}

fn read_chunk<'a>(reader: &mut Reader<'a>) -> Result<Chunk<'a>, DecodeError> {
    let number = reader.u64()?;
    let guarantee = match reader.u8()? {
        0 => Guarantee::Unordered,
        1 => Guarantee::Fifo,
        2 => Guarantee::Agreed,
        3 => Guarantee::Safe,
        _ => return Err(DecodeError::Invalid("chunk guarantee")),
    };
    let total_len = reader.u32()?;
    let offset = reader.u32()?;
    let len = reader.u32()?;
    if u64::from(offset) + u64::from(len) > u64::from(total_len) {
        return Err(DecodeError::Invalid("chunk range"));
    }
    if len == 0 && total_len != 0 {
        return Err(DecodeError::Invalid("empty fragment"));
    }
    let data = reader.bytes(len as usize)?;
    Ok(Chunk {
        number,
        guarantee,
        total_len,
        offset,
        data,
    })
}

fn read_node_list(reader: &mut Reader<'_>) -> Result<Vec<NodeId>, DecodeError> {
    let count = reader.u16()? as usize;
    if count > MEMBERS_MAX {
        return Err(DecodeError::Invalid("member list length"));
    }
    if reader.rest().len() < count * 4 {
        return Err(DecodeError::Truncated);
    }
    let mut nodes = Vec::with_capacity(count);
    for _ in 0..count {
        let node = NodeId(reader.u32()?);
        if node.is_none() || nodes.last().is_some_and(|&last| last >= node) {
            return Err(DecodeError::Invalid(
                "member list (must be sorted, unique, non-zero)",
            ));
        }
        nodes.push(node);
    }
    Ok(nodes)
}

fn read_join(reader: &mut Reader<'_>) -> Result<Join, DecodeError> {
    let ring_seq = reader.u64()?;
    let proc_set = read_node_list(reader)?;
    let fail_set = read_node_list(reader)?;
    Ok(Join {
        ring_seq,
        proc_set,
        fail_set,
    })
}

fn read_commit(reader: &mut Reader<'_>) -> Result<CommitToken, DecodeError> {
    const ENTRY_LEN: usize = 4 + RING_LEN + 8 + 8 + 1;
    let ring = reader.ring()?;
    let token_seq = reader.u64()?;
    let memb_index = reader.u16()?;
    let count = reader.u16()? as usize;
    if count == 0 || count > MEMBERS_MAX {
        return Err(DecodeError::Invalid("commit token member count"));
    }
    if usize::from(memb_index) > count {
        return Err(DecodeError::Invalid("commit token memb_index"));
    }
    if reader.rest().len() < count * ENTRY_LEN {
        return Err(DecodeError::Truncated);
    }
    let mut entries: Vec<CommitEntry> = Vec::with_capacity(count);
    for _ in 0..count {
        let entry = CommitEntry {
            node: NodeId(reader.u32()?),
            old_ring: reader.ring()?,
            old_aru: reader.u64()?,
            high_delivered: reader.u64()?,
            received_flg: reader.flag()?,
        };
        if entry.node.is_none() || entries.last().is_some_and(|last| last.node >= entry.node) {
            return Err(DecodeError::Invalid(
                "commit token members (must be sorted, unique)",
            ));
        }
        entries.push(entry);
    }
    Ok(CommitToken {
        ring,
        token_seq,
        memb_index,
        entries,
    })
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes }
    }

    fn rest(&self) -> &'a [u8] {
        self.bytes
    }

    fn bytes(&mut self, len: usize) -> Result<&'a [u8], DecodeError> {
        if self.bytes.len() < len {
            return Err(DecodeError::Truncated);
        }
        let (head, tail) = self.bytes.split_at(len);
        self.bytes = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let bytes = self.bytes(N)?;
        let mut array = [0; N];
        array.copy_from_slice(bytes);
        Ok(array)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    fn flag(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::Invalid("boolean")),
        }
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn ring(&mut self) -> Result<RingId, DecodeError> {
        Ok(RingId {
            rep: self.u32()?,
            seq: self.u64()?,
        })
    }
}

fn put_header(out: &mut Vec<u8>, kind: Kind, sender: NodeId) {
    out.extend_from_slice(&MAGIC.to_le_bytes());
    out.push(VERSION);
    out.push(kind as u8);
    out.extend_from_slice(&sender.0.to_le_bytes());
}

fn put_ring(out: &mut Vec<u8>, ring: RingId) {
    out.extend_from_slice(&ring.rep.to_le_bytes());
    out.extend_from_slice(&ring.seq.to_le_bytes());
}

fn put_nodes(out: &mut Vec<u8>, nodes: &[NodeId]) {
    out.extend_from_slice(&(nodes.len() as u16).to_le_bytes());
    for node in nodes {
        out.extend_from_slice(&node.0.to_le_bytes());
    }
}

/// Appends an encoded token to `out`.
pub fn encode_token(out: &mut Vec<u8>, sender: NodeId, token: &Token) {
    debug_assert!(token.rtr.len() <= RTR_ENTRIES_MAX);
    put_header(out, Kind::Token, sender);
    put_ring(out, token.ring);
    out.extend_from_slice(&token.token_seq.to_le_bytes());
    out.extend_from_slice(&token.seq.to_le_bytes());
    out.extend_from_slice(&token.aru.to_le_bytes());
    out.extend_from_slice(&token.aru_addr.0.to_le_bytes());
    out.extend_from_slice(&token.fcc.to_le_bytes());
    out.extend_from_slice(&token.backlog.to_le_bytes());
    out.push(u8::from(token.retrans_flg) | (u8::from(token.recovering) << 1));
    out.extend_from_slice(&(token.rtr.len() as u16).to_le_bytes());
    for entry in &token.rtr {
        put_ring(out, entry.ring);
        out.extend_from_slice(&entry.seq.to_le_bytes());
    }
}

fn put_mcast_header(out: &mut Vec<u8>, sender: NodeId, header: &McastHeader, flags: u8) {
    put_header(out, Kind::Mcast, sender);
    put_ring(out, header.ring);
    out.extend_from_slice(&header.seq.to_le_bytes());
    out.extend_from_slice(&header.origin.0.to_le_bytes());
    out.extend_from_slice(&header.origin_prev_seq.to_le_bytes());
    out.push(flags);
}

/// Writes a regular message chunk by chunk into a caller-owned buffer.
#[derive(Debug)]
pub struct McastWriter<'a> {
    out: &'a mut Vec<u8>,
    count_at: usize,
    count: u16,
}

impl<'a> McastWriter<'a> {
    /// Starts a regular message at the end of `out`.
    pub fn new(out: &'a mut Vec<u8>, sender: NodeId, header: &McastHeader) -> McastWriter<'a> {
        put_mcast_header(out, sender, header, 0);
        let count_at = out.len();
        out.extend_from_slice(&0u16.to_le_bytes());
        McastWriter {
            out,
            count_at,
            count: 0,
        }
    }

    /// Appends one chunk; returns where its data starts in the output buffer.
    pub fn push(&mut self, chunk: &Chunk<'_>) -> usize {
        debug_assert!(chunk.offset as usize + chunk.data.len() <= chunk.total_len as usize);
        self.out.extend_from_slice(&chunk.number.to_le_bytes());
        self.out.push(chunk.guarantee as u8);
        self.out.extend_from_slice(&chunk.total_len.to_le_bytes());
        self.out.extend_from_slice(&chunk.offset.to_le_bytes());
        self.out
            .extend_from_slice(&(chunk.data.len() as u32).to_le_bytes());
        let data_at = self.out.len();
        self.out.extend_from_slice(chunk.data);
        self.count += 1;
        self.out[self.count_at..self.count_at + 2].copy_from_slice(&self.count.to_le_bytes());
        data_at
    }

    /// Chunks written so far.
    #[must_use]
    pub fn chunk_count(&self) -> u16 {
        self.count
    }
}

/// Appends a regular message of the new ring that carries `inner`, a complete old-ring one.
pub fn encode_encapsulated(out: &mut Vec<u8>, sender: NodeId, header: &McastHeader, inner: &[u8]) {
    put_mcast_header(out, sender, header, 1);
    out.extend_from_slice(&(inner.len() as u32).to_le_bytes());
    out.extend_from_slice(inner);
}

/// Appends an encoded merge detect.
pub fn encode_merge_detect(out: &mut Vec<u8>, sender: NodeId, ring: RingId) {
    put_header(out, Kind::MergeDetect, sender);
    put_ring(out, ring);
}

/// Appends an encoded token hold cancel.
pub fn encode_token_hold_cancel(out: &mut Vec<u8>, sender: NodeId, ring: RingId) {
    put_header(out, Kind::TokenHoldCancel, sender);
    put_ring(out, ring);
}

/// Appends an encoded join.
pub fn encode_join(out: &mut Vec<u8>, sender: NodeId, join: &Join) {
    put_header(out, Kind::Join, sender);
    out.extend_from_slice(&join.ring_seq.to_le_bytes());
    put_nodes(out, &join.proc_set);
    put_nodes(out, &join.fail_set);
}

/// Appends an encoded commit token.
pub fn encode_commit_token(out: &mut Vec<u8>, sender: NodeId, commit: &CommitToken) {
    put_header(out, Kind::CommitToken, sender);
    put_ring(out, commit.ring);
    out.extend_from_slice(&commit.token_seq.to_le_bytes());
    out.extend_from_slice(&commit.memb_index.to_le_bytes());
    out.extend_from_slice(&(commit.entries.len() as u16).to_le_bytes());
    for entry in &commit.entries {
        out.extend_from_slice(&entry.node.0.to_le_bytes());
        put_ring(out, entry.old_ring);
        out.extend_from_slice(&entry.old_aru.to_le_bytes());
        out.extend_from_slice(&entry.high_delivered.to_le_bytes());
        out.push(u8::from(entry.received_flg));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RING: RingId = RingId { rep: 1, seq: 8 };

    fn round_trip(bytes: &[u8]) -> Datagram<'_> {
        let datagram = decode(bytes).expect("decodes");
        // Every strict prefix must be refused, never panic.
        for cut in 0..bytes.len() {
            assert!(
                decode(&bytes[..cut]).is_err(),
                "prefix of {cut} bytes decoded"
            );
        }
        datagram
    }

    #[test]
    fn token_round_trips() {
        let token = Token {
            ring: RING,
            token_seq: 77,
            seq: 1000,
            aru: 990,
            aru_addr: NodeId(3),
            fcc: 12,
            backlog: 4,
            retrans_flg: true,
            recovering: true,
            rtr: vec![
                RtrEntry {
                    ring: RING,
                    seq: 991,
                },
                RtrEntry {
                    ring: RING,
                    seq: 995,
                },
            ],
        };
        let mut out = Vec::new();
        encode_token(&mut out, NodeId(2), &token);
        let datagram = round_trip(&out);
        assert_eq!(datagram.sender, NodeId(2));
        assert_eq!(datagram.message, Message::Token(token));
    }

    #[test]
    fn mcast_round_trips_with_chunks() {
        let header = McastHeader {
            ring: RING,
            seq: 5,
            origin: NodeId(4),
            origin_prev_seq: 2,
        };
        let chunks = [
            Chunk {
                number: 1,
                guarantee: Guarantee::Agreed,
                total_len: 3,
                offset: 0,
                data: b"abc",
            },
            Chunk {
                number: 2,
                guarantee: Guarantee::Safe,
                total_len: 0,
                offset: 0,
                data: b"",
            },
            Chunk {
                number: 3,
                guarantee: Guarantee::Fifo,
                total_len: 100,
                offset: 10,
                data: b"xy",
            },
        ];
        let mut out = Vec::new();
        let mut writer = McastWriter::new(&mut out, NodeId(4), &header);
        for chunk in &chunks {
            writer.push(chunk);
        }
        assert_eq!(writer.chunk_count(), 3);
        assert_eq!(out.len(), MCAST_PREFIX_LEN + 3 * CHUNK_HEADER_LEN + 5);
        let Message::Mcast(mcast) = round_trip(&out).message else {
            panic!("not an mcast")
        };
        assert_eq!(mcast.header, header);
        let McastBody::Chunks(decoded) = mcast.body else {
            panic!("not chunks")
        };
        assert_eq!(decoded.len(), 3);
        assert_eq!(decoded.collect::<Vec<_>>(), chunks);
        assert!(chunks[0].is_last() && chunks[1].is_last() && !chunks[2].is_last());
    }

    #[test]
    fn encapsulated_mcast_round_trips_once() {
        let old = McastHeader {
            ring: RING,
            seq: 9,
            origin: NodeId(2),
            origin_prev_seq: 0,
        };
        let mut inner = Vec::new();
        McastWriter::new(&mut inner, NodeId(2), &old).push(&Chunk {
            number: 7,
            guarantee: Guarantee::Agreed,
            total_len: 1,
            offset: 0,
            data: b"z",
        });
        let new = McastHeader {
            ring: RingId { rep: 1, seq: 12 },
            seq: 1,
            origin: NodeId(3),
            origin_prev_seq: 0,
        };
        let mut out = Vec::new();
        encode_encapsulated(&mut out, NodeId(3), &new, &inner);
        assert_eq!(out.len(), ENCAPSULATION_LEN + inner.len());
        let Message::Mcast(mcast) = round_trip(&out).message else {
            panic!("not an mcast")
        };
        assert_eq!(mcast.body, McastBody::Encapsulated(&inner));
        // Encapsulating an encapsulated message is refused.
        let mut twice = Vec::new();
        encode_encapsulated(&mut twice, NodeId(3), &new, &out);
        assert_eq!(
            decode(&twice),
            Err(DecodeError::Invalid("nested encapsulation"))
        );
    }

    #[test]
    fn membership_messages_round_trip() {
        let join = Join {
            ring_seq: 44,
            proc_set: vec![NodeId(1), NodeId(2), NodeId(5)],
            fail_set: vec![NodeId(5)],
        };
        let mut out = Vec::new();
        encode_join(&mut out, NodeId(1), &join);
        assert_eq!(round_trip(&out).message, Message::Join(join));

        let commit = CommitToken {
            ring: RingId { rep: 1, seq: 48 },
            token_seq: 3,
            memb_index: 1,
            entries: vec![
                CommitEntry {
                    node: NodeId(1),
                    old_ring: RING,
                    old_aru: 10,
                    high_delivered: 9,
                    received_flg: true,
                },
                CommitEntry {
                    node: NodeId(2),
                    ..CommitEntry::default()
                },
            ],
        };
        out.clear();
        encode_commit_token(&mut out, NodeId(1), &commit);
        assert_eq!(round_trip(&out).message, Message::CommitToken(commit));

        out.clear();
        encode_merge_detect(&mut out, NodeId(6), RING);
        assert_eq!(
            round_trip(&out).message,
            Message::MergeDetect { ring: RING }
        );
        out.clear();
        encode_token_hold_cancel(&mut out, NodeId(6), RING);
        assert_eq!(
            round_trip(&out).message,
            Message::TokenHoldCancel { ring: RING }
        );
    }

    #[test]
    fn bad_headers_are_refused() {
        let mut out = Vec::new();
        encode_merge_detect(&mut out, NodeId(6), RING);
        let mut bad = out.clone();
        bad[0] ^= 1;
        assert_eq!(decode(&bad), Err(DecodeError::BadMagic));
        let mut bad = out.clone();
        bad[2] = 9;
        assert_eq!(decode(&bad), Err(DecodeError::UnsupportedVersion(9)));
        let mut bad = out.clone();
        bad[3] = 6;
        assert_eq!(decode(&bad), Err(DecodeError::UnknownKind(6)));
        let mut bad = out.clone();
        bad[4..8].copy_from_slice(&[0; 4]);
        assert_eq!(decode(&bad), Err(DecodeError::Invalid("sender node id 0")));
        let mut bad = out.clone();
        bad.push(0);
        assert_eq!(decode(&bad), Err(DecodeError::TrailingBytes));
    }

    #[test]
    fn hostile_counts_do_not_allocate() {
        // A token claiming the maximum retransmit list with no bytes behind it.
        let mut out = Vec::new();
        encode_token(&mut out, NodeId(1), &Token::default());
        let len = out.len();
        out[len - 2..].copy_from_slice(&(RTR_ENTRIES_MAX as u16).to_le_bytes());
        assert_eq!(decode(&out), Err(DecodeError::Truncated));
        out[len - 2..].copy_from_slice(&u16::MAX.to_le_bytes());
        assert_eq!(
            decode(&out),
            Err(DecodeError::Invalid("retransmit list length"))
        );
    }
}
