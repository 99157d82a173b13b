//! Authenticated encryption of every datagram between nodes.
//!
//! Pure (no sockets): the driver calls [`Sealer::seal`] before sending and [`Opener::open`]
//! after receiving. Every datagram is `header ‖ ciphertext ‖ tag`; the 24-byte header is
//! authenticated as AAD:
//!
//! | bytes  | field                                                    |
//! |--------|----------------------------------------------------------|
//! | 0      | magic `0x54` (`'T'`)                                     |
//! | 1      | format version `1`                                       |
//! | 2      | cipher id: 0 none, 1 aes256-gcm, 2 chacha20-poly1305     |
//! | 3      | reserved, 0                                              |
//! | 4..8   | sender nodeid, u32 LE                                    |
//! | 8..16  | sender session, u64 LE                                   |
//! | 16..24 | counter, u64 LE                                          |
//!
//! Keys: a master key is derived from the authkey file, the cluster name and the cipher, and
//! from it one key per (sender node, session). Each sender starts its counter at 0 in every
//! session, and the nonce is the counter, so a nonce never repeats under one key as long as a
//! session number is never reused by the same node. The driver guarantees that by picking
//! sessions with [`next_session`] (realtime milliseconds, and above the last persisted session).
//!
//! Receivers drop, and count, everything that is malformed, from a node outside the nodelist,
//! unauthentic, replayed, or from a session older than the newest one seen from that node.
//!
//! [`Cipher::None`] keeps the header, the nodelist check and the replay window but neither
//! encrypts nor authenticates: anyone on the network can forge datagrams. It is for tests
//! and trusted networks only.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{AeadInOut, KeyInit};
use chacha20poly1305::ChaCha20Poly1305;
use hkdf::Hkdf;
use sha2::Sha256;

use crate::error::Error;
use crate::ids::NodeId;

/// Bytes of the authenticated header in front of every datagram.
pub const HEADER_LEN: usize = 24;
/// Bytes of the AEAD tag after the ciphertext (absent with [`Cipher::None`]).
pub const TAG_LEN: usize = 16;
/// Size of the authkey that [`write_new_authkey`] writes.
pub const AUTHKEY_LEN: usize = 256;
/// Smallest authkey [`read_authkey`] accepts.
pub const AUTHKEY_MIN_LEN: usize = 32;
/// Largest authkey [`read_authkey`] accepts.
pub const AUTHKEY_MAX_LEN: usize = 4096;

const MAGIC: u8 = 0x54;
const VERSION: u8 = 1;
const WINDOW_BLOCKS: usize = 32;
/// How far behind a sender's newest counter a datagram may arrive and still be accepted once.
/// RFC 6479: one of the 32 bitmap blocks is sacrificed so that advancing clears whole blocks.
pub const REPLAY_WINDOW: u64 = ((WINDOW_BLOCKS - 1) * 64) as u64;

/// The AEAD algorithm protecting datagrams; every node of a cluster must use the same one.
/// The discriminant is the cipher id on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Cipher {
    /// AES-256 in Galois/counter mode (fast with AES-NI / ARMv8 crypto extensions).
    Aes256Gcm = 1,
    /// ChaCha20-Poly1305 (fast everywhere in software).
    ChaCha20Poly1305 = 2,
    /// No encryption and no authentication: forgeable, for tests and trusted networks only.
    None = 0,
}

impl Cipher {
    /// The cipher for a configuration value: `"aes256-gcm"`, `"chacha20-poly1305"`, `"none"`.
    #[must_use]
    pub fn from_config_name(name: &str) -> Option<Cipher> {
        match name {
            "aes256-gcm" => Some(Cipher::Aes256Gcm),
            "chacha20-poly1305" => Some(Cipher::ChaCha20Poly1305),
            "none" => Some(Cipher::None),
            _ => None,
        }
    }

    /// The configuration name (also bound into the key derivation).
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Cipher::Aes256Gcm => "aes256-gcm",
            Cipher::ChaCha20Poly1305 => "chacha20-poly1305",
            Cipher::None => "none",
        }
    }

    /// Bytes added to every datagram: the header, plus the tag unless [`Cipher::None`].
    #[must_use]
    pub const fn overhead(self) -> usize {
        HEADER_LEN + self.tag_len()
    }

    const fn tag_len(self) -> usize {
        if matches!(self, Cipher::None) {
            0
        } else {
            TAG_LEN
        }
    }

    const fn from_wire_id(id: u8) -> Option<Cipher> {
        match id {
            0 => Some(Cipher::None),
            1 => Some(Cipher::Aes256Gcm),
            2 => Some(Cipher::ChaCha20Poly1305),
            _ => None,
        }
    }
}

/// The session number a node uses for this run: realtime milliseconds since the epoch, but
/// always above the previous run's session (`previous`, persisted by the driver) so that a
/// clock stepped backwards can never make a node reuse a session, and with it its nonces.
#[must_use]
pub fn next_session(previous: Option<u64>, now_unix_ms: u64) -> u64 {
    match previous {
        None => now_unix_ms,
        Some(previous) => {
            now_unix_ms.max(previous.checked_add(1).expect("session numbers exhausted"))
        }
    }
}

fn io_error(what: &str, path: &Path, err: &io::Error) -> Error {
    let detail = format!("{what} {}: {err}", path.display()).into();
    match err.kind() {
        io::ErrorKind::NotFound => Error::NotExist(detail),
        io::ErrorKind::PermissionDenied => Error::Access(detail),
        _ => Error::FailedOperation(detail),
    }
}

/// Writes a new random authkey of [`AUTHKEY_LEN`] bytes to `path`, readable by its owner
/// only. Refuses to replace an existing file: overwriting the key of a running cluster would
/// cut this node off from it.
pub fn write_new_authkey(path: &Path) -> Result<(), Error> {
    let at = path.display();
    let mut key = [0u8; AUTHKEY_LEN];
    getrandom::fill(&mut key)
        .map_err(|err| Error::NoResources(format!("no random bytes for {at}: {err}").into()))?;
    // The mode is set by open(2) itself so the key is never, even briefly, readable by others.
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o400)
        .open(path)
        .map_err(|err| match err.kind() {
            io::ErrorKind::AlreadyExists => Error::Exist(
                format!("authkey file {at} already exists; refusing to overwrite it").into(),
            ),
            _ => io_error("cannot create authkey file", path, &err),
        })?;
    if let Err(err) = file.write_all(&key).and_then(|()| file.sync_all()) {
        // We created the file, so removing the partial key is ours to do; a retry then works.
        let _ = std::fs::remove_file(path);
        return Err(io_error("cannot write authkey file", path, &err));
    }
    // The directory entry must be durable too, or a crash could lose a key reported written.
    let parent = path.parent().filter(|dir| !dir.as_os_str().is_empty());
    if let Err(err) = File::open(parent.unwrap_or(Path::new("."))).and_then(|dir| dir.sync_all()) {
        tracing::warn!(path = %at, %err, "cannot fsync the authkey's directory");
    }
    tracing::info!(path = %at, bytes = AUTHKEY_LEN, "wrote a new authkey");
    Ok(())
}

/// Reads an authkey file: it must be a regular file of [`AUTHKEY_MIN_LEN`] to
/// [`AUTHKEY_MAX_LEN`] bytes, owned by this process's user or root, with no access for group
/// or others (like ssh, a key others can read is refused rather than silently used).
pub fn read_authkey(path: &Path) -> Result<Vec<u8>, Error> {
    let at = path.display();
    let file = File::open(path).map_err(|err| match err.kind() {
        io::ErrorKind::NotFound => Error::NotExist(
            format!(
                "authkey file {at} does not exist; create it with keygen, copy it to every node"
            )
            .into(),
        ),
        _ => io_error("cannot open authkey file", path, &err),
    })?;
    // Checked on the open file, not the path, so the file we read is the file we checked.
    let meta = file
        .metadata()
        .map_err(|err| io_error("cannot stat authkey file", path, &err))?;
    let mode = meta.mode() & 0o7777;
    let refusal = if !meta.is_file() {
        Some(format!("authkey {at} is not a regular file"))
    } else if mode & 0o077 != 0 {
        Some(format!(
            "authkey file {at} has mode {mode:04o}: group or others can access it; \
             run `chmod 0400 {at}`"
        ))
    } else if meta.uid() != nix::unistd::geteuid().as_raw() && meta.uid() != 0 {
        Some(format!(
            "authkey file {at} is owned by uid {}, not by this user or root",
            meta.uid()
        ))
    } else {
        None
    };
    if let Some(detail) = refusal {
        return Err(Error::Access(detail.into()));
    }
    let accepted = AUTHKEY_MIN_LEN as u64..=AUTHKEY_MAX_LEN as u64;
    let mut key = Vec::with_capacity(AUTHKEY_MAX_LEN);
    let size = if accepted.contains(&meta.len()) {
        // Bounded, and checked again, in case the file changes after the size check.
        file.take(AUTHKEY_MAX_LEN as u64 + 1)
            .read_to_end(&mut key)
            .map_err(|err| io_error("cannot read authkey file", path, &err))?;
        key.len() as u64
    } else {
        meta.len()
    };
    if !accepted.contains(&size) {
        return Err(Error::InvalidParam(
            format!(
                "authkey file {at} is {size} bytes; an authkey must be {AUTHKEY_MIN_LEN} to \
                 {AUTHKEY_MAX_LEN} bytes (keygen writes {AUTHKEY_LEN})"
            )
            .into(),
        ));
    }
    Ok(key)
}

/// The cluster-wide master key, bound to the authkey, the cluster name and the cipher, from
/// which every (node, session) key is derived. Debug output hides the key.
#[derive(Clone)]
pub struct ClusterKey {
    master: [u8; 32],
    cipher: Cipher,
}

impl ClusterKey {
    /// HKDF-SHA256 with the authkey as input key material and the cluster name as salt, so
    /// two clusters sharing an authkey still cannot read or inject each other's datagrams.
    /// The authkey's size is checked by [`read_authkey`], not here.
    #[must_use]
    pub fn derive(authkey: &[u8], cluster_name: &str, cipher: Cipher) -> ClusterKey {
        let hkdf = Hkdf::<Sha256>::new(Some(cluster_name.as_bytes()), authkey);
        let mut master = [0u8; 32];
        hkdf.expand_multi_info(
            &[b"totemcast v1 datagram ", cipher.name().as_bytes()],
            &mut master,
        )
        .expect("32 bytes is a valid HKDF-SHA256 output length");
        ClusterKey { master, cipher }
    }

    /// The cipher this key is for.
    #[must_use]
    pub fn cipher(&self) -> Cipher {
        self.cipher
    }

    fn session_aead(&self, node: NodeId, session: u64) -> SessionAead {
        let hkdf = Hkdf::<Sha256>::from_prk(&self.master).expect("32 bytes is a valid PRK");
        let mut key = [0u8; 32];
        hkdf.expand_multi_info(
            &[
                b"totemcast v1 session",
                &node.0.to_le_bytes(),
                &session.to_le_bytes(),
            ],
            &mut key,
        )
        .expect("32 bytes is a valid HKDF-SHA256 output length");
        SessionAead::new(self.cipher, &key)
    }
}

impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterKey")
            .field("cipher", &self.cipher)
            .field("master", &"<hidden>")
            .finish()
    }
}

/// A keyed AEAD instance for one (node, session).
enum SessionAead {
    // Boxed: the AES key schedule is several hundred bytes, the other variants are small.
    Aes(Box<Aes256Gcm>),
    ChaCha(ChaCha20Poly1305),
    Plain,
}

impl SessionAead {
    fn new(cipher: Cipher, key: &[u8; 32]) -> SessionAead {
        match cipher {
            Cipher::Aes256Gcm => SessionAead::Aes(Box::new(Aes256Gcm::new(&(*key).into()))),
            Cipher::ChaCha20Poly1305 => SessionAead::ChaCha(ChaCha20Poly1305::new(&(*key).into())),
            Cipher::None => SessionAead::Plain,
        }
    }

    /// Encrypts `buf` in place and returns the tag to append (empty for `Plain`).
    fn seal(&self, counter: u64, aad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN] {
        let nonce = nonce(counter).into();
        let tag = match self {
            SessionAead::Aes(gcm) => gcm.encrypt_inout_detached(&nonce, aad, buf.into()),
            SessionAead::ChaCha(chacha) => chacha.encrypt_inout_detached(&nonce, aad, buf.into()),
            SessionAead::Plain => return [0; TAG_LEN],
        };
        tag.expect("a UDP datagram is far below the AEAD length limits")
            .into()
    }

    /// Decrypts `buf` in place if `tag` authenticates it with `aad`.
    fn open(&self, counter: u64, aad: &[u8], buf: &mut [u8], tag: &[u8]) -> bool {
        let nonce = nonce(counter).into();
        let Ok(tag) = <[u8; TAG_LEN]>::try_from(tag).map(Into::into) else {
            // Only `Plain` datagrams have no tag: they are unauthenticated by design.
            return matches!(self, SessionAead::Plain);
        };
        match self {
            SessionAead::Aes(gcm) => gcm.decrypt_inout_detached(&nonce, aad, buf.into(), &tag),
            SessionAead::ChaCha(chacha) => {
                chacha.decrypt_inout_detached(&nonce, aad, buf.into(), &tag)
            }
            SessionAead::Plain => return false,
        }
        .is_ok()
    }
}

impl fmt::Debug for SessionAead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            SessionAead::Aes(_) => "aes256-gcm",
            SessionAead::ChaCha(_) => "chacha20-poly1305",
            SessionAead::Plain => "none",
        };
        write!(f, "SessionAead({name}, key hidden)")
    }
}

/// Unique per key because each (node, session) has its own key and counters never repeat.
fn nonce(counter: u64) -> [u8; 12] {
    let mut nonce = [0u8; 12];
    nonce[..8].copy_from_slice(&counter.to_le_bytes());
    nonce
}

struct Header {
    cipher: Cipher,
    node: NodeId,
    session: u64,
    counter: u64,
}

impl Header {
    fn encode(&self) -> [u8; HEADER_LEN] {
        let mut bytes = [0u8; HEADER_LEN];
        bytes[0] = MAGIC;
        bytes[1] = VERSION;
        bytes[2] = self.cipher as u8;
        bytes[4..8].copy_from_slice(&self.node.0.to_le_bytes());
        bytes[8..16].copy_from_slice(&self.session.to_le_bytes());
        bytes[16..24].copy_from_slice(&self.counter.to_le_bytes());
        bytes
    }

    fn decode(datagram: &[u8]) -> Result<Header, DropReason> {
        let Some(bytes) = datagram.first_chunk::<HEADER_LEN>() else {
            return Err(DropReason::Malformed);
        };
        // A nonzero reserved byte means a format we do not understand, not one to ignore.
        if bytes[0] != MAGIC || bytes[1] != VERSION || bytes[3] != 0 {
            return Err(DropReason::Malformed);
        }
        let cipher = Cipher::from_wire_id(bytes[2]).ok_or(DropReason::Malformed)?;
        let le32 = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        let le64 = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        Ok(Header {
            cipher,
            node: NodeId(le32(4)),
            session: le64(8),
            counter: le64(16),
        })
    }
}

/// Seals this node's outgoing datagrams; one per node run (one session).
#[derive(Debug)]
pub struct Sealer {
    aead: SessionAead,
    cipher: Cipher,
    node: NodeId,
    session: u64,
    next_counter: u64,
}

impl Sealer {
    /// A sealer for `node` in `session` (see [`next_session`]); the counter starts at 0.
    #[must_use]
    pub fn new(key: &ClusterKey, node: NodeId, session: u64) -> Sealer {
        Sealer {
            aead: key.session_aead(node, session),
            cipher: key.cipher,
            node,
            session,
            next_counter: 0,
        }
    }

    /// Replaces `out` with the datagram carrying `plaintext`:
    /// `plaintext.len() + cipher.overhead()` bytes.
    pub fn seal(&mut self, plaintext: &[u8], out: &mut Vec<u8>) {
        let counter = self.next_counter;
        // Unreachable in practice (2^64 datagrams), but a wrapped counter would reuse nonces.
        self.next_counter = counter
            .checked_add(1)
            .expect("datagram counter exhausted: nonces would repeat");
        let header = Header {
            cipher: self.cipher,
            node: self.node,
            session: self.session,
            counter,
        }
        .encode();
        out.clear();
        out.reserve(plaintext.len() + self.cipher.overhead());
        out.extend_from_slice(&header);
        out.extend_from_slice(plaintext);
        let tag = self.aead.seal(counter, &header, &mut out[HEADER_LEN..]);
        out.extend_from_slice(&tag[..self.cipher.tag_len()]);
    }

    /// How many datagrams this sealer has sealed.
    #[must_use]
    pub fn sealed(&self) -> u64 {
        self.next_counter
    }

    /// The session this sealer writes into every header.
    #[must_use]
    pub fn session(&self) -> u64 {
        self.session
    }
}

/// Why [`Opener::open`] dropped a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Too short, wrong magic, version or reserved byte, or an unknown cipher id.
    Malformed,
    /// The sender is not in the nodelist.
    UnknownNode,
    /// A well-formed header naming another cipher than ours (a misconfigured node).
    CipherMismatch,
    /// The tag does not authenticate the header and ciphertext (wrong key, or tampered).
    Unauthentic,
    /// The counter was already accepted, or is more than [`REPLAY_WINDOW`] behind the newest.
    Replayed,
    /// From a session older than the newest authenticated one from that node (it restarted).
    StaleSession,
    /// Not from the address of the node it names (checked before anything else, so that a
    /// datagram from elsewhere cannot move that node's session or replay window).
    WrongSource,
}

/// What an [`Opener`] accepted and dropped, by reason.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CryptoCounters {
    /// Datagrams opened and returned.
    pub opened: u64,
    /// Drops for [`DropReason::Malformed`].
    pub malformed: u64,
    /// Drops for [`DropReason::UnknownNode`].
    pub unknown_node: u64,
    /// Drops for [`DropReason::CipherMismatch`].
    pub cipher_mismatch: u64,
    /// Drops for [`DropReason::Unauthentic`].
    pub unauthentic: u64,
    /// Drops for [`DropReason::Replayed`].
    pub replayed: u64,
    /// Drops for [`DropReason::StaleSession`].
    pub stale_session: u64,
    /// Drops for [`DropReason::WrongSource`].
    pub wrong_source: u64,
}

impl CryptoCounters {
    /// All drops, whatever the reason.
    #[must_use]
    pub fn dropped(&self) -> u64 {
        self.malformed
            + self.unknown_node
            + self.cipher_mismatch
            + self.unauthentic
            + self.replayed
            + self.stale_session
    }

    fn count(&mut self, reason: DropReason) {
        let counter = match reason {
            DropReason::Malformed => &mut self.malformed,
            DropReason::UnknownNode => &mut self.unknown_node,
            DropReason::CipherMismatch => &mut self.cipher_mismatch,
            DropReason::Unauthentic => &mut self.unauthentic,
            DropReason::Replayed => &mut self.replayed,
            DropReason::StaleSession => &mut self.stale_session,
            DropReason::WrongSource => &mut self.wrong_source,
        };
        *counter += 1;
    }
}

/// Sliding replay window over counters (RFC 6479): the newest counter and a ring of bitmap
/// blocks, so advancing costs at most one store per block instead of a shift of the bitmap.
#[derive(Debug)]
struct ReplayWindow {
    top: u64,
    bitmap: [u64; WINDOW_BLOCKS],
}

impl ReplayWindow {
    fn new() -> ReplayWindow {
        ReplayWindow {
            top: 0,
            bitmap: [0; WINDOW_BLOCKS],
        }
    }

    fn slot(counter: u64) -> (usize, u64) {
        ((counter / 64) as usize % WINDOW_BLOCKS, 1 << (counter % 64))
    }

    fn is_fresh(&self, counter: u64) -> bool {
        if counter > self.top {
            return true;
        }
        if self.top - counter >= REPLAY_WINDOW {
            return false;
        }
        let (block, bit) = Self::slot(counter);
        self.bitmap[block] & bit == 0
    }

    fn mark(&mut self, counter: u64) {
        if counter > self.top {
            let top_block = self.top / 64;
            let advance = (counter / 64 - top_block).min(WINDOW_BLOCKS as u64);
            for step in 1..=advance {
                self.bitmap[((top_block + step) % WINDOW_BLOCKS as u64) as usize] = 0;
            }
            self.top = counter;
        }
        let (block, bit) = Self::slot(counter);
        self.bitmap[block] |= bit;
    }
}

#[derive(Debug)]
struct PeerSession {
    session: u64,
    aead: SessionAead,
    window: ReplayWindow,
}

#[derive(Debug)]
struct Peer {
    node: NodeId,
    current: Option<PeerSession>,
    // The key last derived for a newer session that has not authenticated yet, so a burst of
    // datagrams from a restarting peer (or of forgeries) runs HKDF once, not per datagram.
    candidate: Option<(u64, SessionAead)>,
}

/// Opens datagrams from the nodes of the nodelist, with replay protection per sender.
#[derive(Debug)]
pub struct Opener {
    key: ClusterKey,
    // Sorted by node id: the nodelist is small and a binary search needs no hashing.
    peers: Vec<Peer>,
    counters: CryptoCounters,
    derivations: u64,
}

impl Opener {
    /// An opener accepting datagrams from `nodes` only.
    #[must_use]
    pub fn new(key: &ClusterKey, nodes: &[NodeId]) -> Opener {
        let mut nodes = nodes.to_vec();
        nodes.sort_unstable();
        nodes.dedup();
        Opener {
            key: key.clone(),
            peers: nodes
                .into_iter()
                .map(|node| Peer {
                    node,
                    current: None,
                    candidate: None,
                })
                .collect(),
            counters: CryptoCounters::default(),
            derivations: 0,
        }
    }

    /// Replaces `out` with the plaintext of `datagram` and returns its sender, or says why
    /// the datagram was dropped (leaving `out` empty). Never panics, whatever the input.
    pub fn open(&mut self, datagram: &[u8], out: &mut Vec<u8>) -> Result<NodeId, DropReason> {
        self.open_from(datagram, out, |_| true)
    }

    /// [`Opener::open`] for a datagram that arrived from somewhere `from_node` can judge: it is
    /// asked, before any decryption or state change, whether the datagram's source is the
    /// address of the node the header names.
    pub fn open_from(
        &mut self,
        datagram: &[u8],
        out: &mut Vec<u8>,
        from_node: impl FnOnce(NodeId) -> bool,
    ) -> Result<NodeId, DropReason> {
        out.clear();
        let result = self.open_inner(datagram, out, from_node);
        match result {
            Ok(_) => self.counters.opened += 1,
            Err(reason) => {
                out.clear();
                self.counters.count(reason);
            }
        }
        result
    }

    fn open_inner(
        &mut self,
        datagram: &[u8],
        out: &mut Vec<u8>,
        from_node: impl FnOnce(NodeId) -> bool,
    ) -> Result<NodeId, DropReason> {
        let header = Header::decode(datagram)?;
        if header.cipher != self.key.cipher {
            return Err(DropReason::CipherMismatch);
        }
        let body_len = datagram.len() - HEADER_LEN;
        let Some(ciphertext_len) = body_len.checked_sub(header.cipher.tag_len()) else {
            return Err(DropReason::Malformed);
        };
        let (aad, body) = datagram.split_at(HEADER_LEN);
        let (ciphertext, tag) = body.split_at(ciphertext_len);
        let index = self
            .peers
            .binary_search_by_key(&header.node, |peer| peer.node)
            .map_err(|_| DropReason::UnknownNode)?;
        if !from_node(header.node) {
            return Err(DropReason::WrongSource);
        }
        let peer = &mut self.peers[index];
        out.extend_from_slice(ciphertext);

        if let Some(current) = &mut peer.current {
            if header.session < current.session {
                return Err(DropReason::StaleSession);
            }
            if header.session == current.session {
                // Checked before decrypting so replays cost no AEAD work.
                if !current.window.is_fresh(header.counter) {
                    return Err(DropReason::Replayed);
                }
                if !current.aead.open(header.counter, aad, out, tag) {
                    return Err(DropReason::Unauthentic);
                }
                current.window.mark(header.counter);
                return Ok(header.node);
            }
        }

        // First contact with this node, or it restarted with a newer session.
        let keyed = match peer.candidate.take() {
            Some((session, keyed)) if session == header.session => keyed,
            _ => {
                self.derivations += 1;
                self.key.session_aead(header.node, header.session)
            }
        };
        if !keyed.open(header.counter, aad, out, tag) {
            peer.candidate = Some((header.session, keyed));
            return Err(DropReason::Unauthentic);
        }
        if let Some(previous) = &peer.current {
            tracing::info!(node = %header.node, previous = previous.session,
                session = header.session, "peer started a new session (restarted)");
        }
        let mut window = ReplayWindow::new();
        window.mark(header.counter);
        peer.current = Some(PeerSession {
            session: header.session,
            aead: keyed,
            window,
        });
        Ok(header.node)
    }

    /// What this opener has accepted and dropped so far.
    #[must_use]
    pub fn counters(&self) -> &CryptoCounters {
        &self.counters
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prng::Prng;

    const AUTHKEY: [u8; 64] = [7; 64];
    const NODES: [NodeId; 3] = [NodeId(1), NodeId(2), NodeId(3)];
    const CIPHERS: [Cipher; 3] = [Cipher::Aes256Gcm, Cipher::ChaCha20Poly1305, Cipher::None];
    const AEADS: [Cipher; 2] = [Cipher::Aes256Gcm, Cipher::ChaCha20Poly1305];

    fn key(cipher: Cipher) -> ClusterKey {
        ClusterKey::derive(&AUTHKEY, "alpha", cipher)
    }

    /// Node 2, session 100, and an opener for nodes 1 to 3.
    fn pair(cipher: Cipher) -> (Sealer, Opener) {
        (
            Sealer::new(&key(cipher), NodeId(2), 100),
            Opener::new(&key(cipher), &NODES),
        )
    }

    fn seal(sealer: &mut Sealer, plaintext: &[u8]) -> Vec<u8> {
        let mut out = vec![0xAA; 7];
        sealer.seal(plaintext, &mut out);
        out
    }

    fn open(opener: &mut Opener, datagram: &[u8]) -> Result<Vec<u8>, DropReason> {
        let mut out = vec![0xAA; 7];
        let result = opener.open(datagram, &mut out);
        assert!(
            result.is_ok() || out.is_empty(),
            "a drop leaves `out` empty"
        );
        result.map(|_| out)
    }

    #[test]
    fn round_trips_with_every_cipher() {
        for cipher in CIPHERS {
            let (mut sealer, mut opener) = pair(cipher);
            for plaintext in [&b""[..], b"x", &[0x5A; 1400]] {
                let datagram = seal(&mut sealer, plaintext);
                assert_eq!(datagram.len(), plaintext.len() + cipher.overhead());
                assert_eq!(datagram[..4], [0x54, 1, cipher as u8, 0]);
                let body = &datagram[HEADER_LEN..HEADER_LEN + plaintext.len()];
                assert_eq!(
                    body == plaintext,
                    cipher == Cipher::None || plaintext.is_empty()
                );
                assert_eq!(open(&mut opener, &datagram).unwrap(), plaintext);
            }
            assert_eq!((sealer.sealed(), opener.counters().opened), (3, 3));
            assert_eq!(Cipher::from_config_name(cipher.name()), Some(cipher));
        }
        // Nonce and key differ per datagram and per (node, session): no keystream is reused.
        for cipher in AEADS {
            let mut sealer = Sealer::new(&key(cipher), NodeId(2), 100);
            let mut datagrams = vec![seal(&mut sealer, b"same"), seal(&mut sealer, b"same")];
            for (node, session) in [(2, 101), (3, 100)] {
                let mut other = Sealer::new(&key(cipher), NodeId(node), session);
                datagrams.push(seal(&mut other, b"same"));
            }
            let ciphertext = |d: &Vec<u8>| d[HEADER_LEN..d.len() - TAG_LEN].to_vec();
            let mut bodies: Vec<Vec<u8>> = datagrams.iter().map(ciphertext).collect();
            bodies.sort_unstable();
            bodies.dedup();
            assert_eq!(bodies.len(), 4);
        }
        assert_eq!(Cipher::from_config_name("aes128-gcm"), None);
        assert_eq!(
            (Cipher::Aes256Gcm.overhead(), Cipher::None.overhead()),
            (40, 24)
        );
    }

    #[test]
    fn another_authkey_or_cluster_name_is_unauthentic() {
        for cipher in AEADS {
            let datagram = seal(&mut pair(cipher).0, b"hello");
            for other in [
                ClusterKey::derive(&[8; 64], "alpha", cipher),
                ClusterKey::derive(&AUTHKEY, "beta", cipher),
            ] {
                let mut opener = Opener::new(&other, &NODES);
                assert_eq!(open(&mut opener, &datagram), Err(DropReason::Unauthentic));
            }
        }
    }

    #[test]
    fn every_flipped_bit_is_dropped_without_moving_the_window() {
        for cipher in AEADS {
            let (mut sealer, mut opener) = pair(cipher);
            let datagram = seal(&mut sealer, b"some payload");
            for (byte, bit) in (0..datagram.len()).flat_map(|byte| (0..8).map(move |b| (byte, b))) {
                let mut tampered = datagram.clone();
                tampered[byte] ^= 1 << bit;
                let result = open(&mut opener, &tampered);
                match byte {
                    0..4 => assert!(matches!(
                        result,
                        Err(DropReason::Malformed | DropReason::CipherMismatch)
                    )),
                    // Node 2 with bit 0 flipped is node 3, which is listed: the tag decides.
                    4..8 if (byte, bit) != (4, 0) => {
                        assert_eq!(result, Err(DropReason::UnknownNode));
                    }
                    _ => assert_eq!(result, Err(DropReason::Unauthentic), "byte {byte}"),
                }
            }
            assert_eq!(open(&mut opener, &datagram).unwrap(), b"some payload");
        }
    }

    #[test]
    fn truncations_are_malformed_or_unauthentic() {
        for cipher in AEADS {
            let (mut sealer, mut opener) = pair(cipher);
            let datagram = seal(&mut sealer, &[1; 100]);
            for len in 0..datagram.len() {
                let expected = if len < cipher.overhead() {
                    DropReason::Malformed
                } else {
                    DropReason::Unauthentic
                };
                assert_eq!(open(&mut opener, &datagram[..len]), Err(expected), "{len}");
            }
            assert!(open(&mut opener, &datagram).is_ok());
        }
    }

    #[test]
    fn replays_are_dropped_within_and_beyond_the_window() {
        for cipher in CIPHERS {
            let (mut sealer, mut opener) = pair(cipher);
            let datagrams: Vec<Vec<u8>> = (0..3000).map(|_| seal(&mut sealer, b"d")).collect();
            // In and out of order within the window: each accepted exactly once.
            for index in [10, 5, 0, 9, 7, 11, 6] {
                assert!(open(&mut opener, &datagrams[index]).is_ok());
                assert_eq!(
                    open(&mut opener, &datagrams[index]),
                    Err(DropReason::Replayed)
                );
            }
            assert!(open(&mut opener, &datagrams[2999]).is_ok());
            let oldest = 2999 - REPLAY_WINDOW as usize + 1;
            assert_eq!(
                open(&mut opener, &datagrams[oldest - 1]),
                Err(DropReason::Replayed)
            );
            assert!(open(&mut opener, &datagrams[oldest]).is_ok());
            // Shares its bitmap block with counters 0..64, which advancing must have cleared.
            assert!(open(&mut opener, &datagrams[2048 + 5]).is_ok());
            assert_eq!(open(&mut opener, &datagrams[1]), Err(DropReason::Replayed));
            assert_eq!(
                (opener.counters().opened, opener.counters().replayed),
                (10, 9)
            );
        }
    }

    #[test]
    fn unknown_nodes_and_other_ciphers_are_dropped() {
        for cipher in CIPHERS {
            let mut opener = Opener::new(&key(cipher), &NODES);
            let stranger = seal(&mut Sealer::new(&key(cipher), NodeId(9), 1), b"hi");
            assert_eq!(open(&mut opener, &stranger), Err(DropReason::UnknownNode));
            let other = CIPHERS.into_iter().find(|&c| c != cipher).unwrap();
            let misconfigured = seal(&mut Sealer::new(&key(other), NodeId(2), 1), b"hi");
            assert_eq!(
                open(&mut opener, &misconfigured),
                Err(DropReason::CipherMismatch)
            );
            let expected = CryptoCounters {
                unknown_node: 1,
                cipher_mismatch: 1,
                ..Default::default()
            };
            assert_eq!(opener.counters(), &expected);
        }
    }

    #[test]
    fn a_restart_with_a_newer_session_makes_the_old_one_stale() {
        for cipher in CIPHERS {
            let (mut old, mut opener) = pair(cipher);
            let (early, late) = (seal(&mut old, b"a"), seal(&mut old, b"b"));
            assert!(open(&mut opener, &early).is_ok());
            let mut restarted = Sealer::new(&key(cipher), NodeId(2), next_session(Some(100), 50));
            assert_eq!(restarted.session(), 101);
            assert_eq!(
                open(&mut opener, &seal(&mut restarted, b"c")).unwrap(),
                b"c"
            );
            assert_eq!(open(&mut opener, &late), Err(DropReason::StaleSession));
            assert_eq!(
                open(&mut opener, &seal(&mut restarted, b"d")).unwrap(),
                b"d"
            );
            assert_eq!(opener.derivations, 2, "one key derivation per session");
        }
        assert_eq!(
            (next_session(None, 1234), next_session(Some(10), 1234)),
            (1234, 1234)
        );
    }

    #[test]
    fn a_datagram_from_the_wrong_address_changes_nothing() {
        for cipher in CIPHERS {
            let (mut sealer, mut opener) = pair(cipher);
            assert!(open(&mut opener, &seal(&mut sealer, b"a")).is_ok());
            // Correctly sealed with a newer session, but not from node 2's address.
            let mut elsewhere = Sealer::new(&key(cipher), NodeId(2), u64::MAX / 2);
            let mut out = Vec::new();
            let foreign = seal(&mut elsewhere, b"x");
            assert_eq!(
                opener.open_from(&foreign, &mut out, |_| false),
                Err(DropReason::WrongSource)
            );
            assert!(out.is_empty());
            assert_eq!(opener.counters().wrong_source, 1);
            // Node 2's own session still opens.
            assert_eq!(open(&mut opener, &seal(&mut sealer, b"b")).unwrap(), b"b");
        }
    }

    #[test]
    fn forgeries_with_huge_counters_or_sessions_change_nothing() {
        for cipher in AEADS {
            let (mut sealer, mut opener) = pair(cipher);
            let first = seal(&mut sealer, b"first");
            let second = seal(&mut sealer, b"second");
            assert!(open(&mut opener, &first).is_ok());
            for field in [16..24, 8..16] {
                let mut forged = first.clone();
                forged[field].copy_from_slice(&u64::MAX.to_le_bytes());
                assert_eq!(open(&mut opener, &forged), Err(DropReason::Unauthentic));
            }
            assert_eq!(open(&mut opener, &second).unwrap(), b"second");
            assert_eq!(open(&mut opener, &first), Err(DropReason::Replayed));
        }
    }

    #[test]
    fn random_bytes_never_panic_and_are_all_counted() {
        let mut prng = Prng::from_seed(0x7074_6f74);
        for cipher in CIPHERS {
            let (_, mut opener) = pair(cipher);
            let mut out = Vec::new();
            for round in 0..3000 {
                let len = prng.below(120) as usize;
                let mut datagram: Vec<u8> = (0..len).map(|_| prng.next_u64() as u8).collect();
                // Half get a plausible header so they reach the deeper checks.
                if round % 2 == 0 && len >= 8 {
                    datagram[..4].copy_from_slice(&[MAGIC, VERSION, cipher as u8, 0]);
                    datagram[4..8].copy_from_slice(&(1 + prng.below(4) as u32).to_le_bytes());
                }
                let _ = opener.open(&datagram, &mut out);
                assert!(out.len() <= datagram.len());
            }
            let counters = opener.counters();
            assert_eq!(counters.opened + counters.dropped(), 3000);
            assert!(counters.malformed > 0 && counters.unknown_node > 0);
            let authentic = counters.opened > 0;
            assert_eq!(authentic, cipher == Cipher::None, "{counters:?}");
            assert_eq!(counters.unauthentic > 0, cipher != Cipher::None);
        }
    }

    /// A unique directory under the system temp dir, removed on drop.
    struct TempDir(std::path::PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            let name = format!("totemcast-crypto-{}", getrandom::u64().unwrap());
            let dir = std::env::temp_dir().join(name);
            std::fs::create_dir(&dir).unwrap();
            TempDir(dir)
        }

        /// Sets the mode after creation, so the umask cannot change it.
        fn file(&self, name: &str, bytes: &[u8], mode: u32) -> std::path::PathBuf {
            use std::os::unix::fs::PermissionsExt;
            let path = self.0.join(name);
            std::fs::write(&path, bytes).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            path
        }
    }

    impl std::ops::Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn keygen_writes_an_owner_only_key_once() {
        let dir = TempDir::new();
        let path = dir.0.join("authkey");
        write_new_authkey(&path).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(
            (meta.len(), meta.mode() & 0o777),
            (AUTHKEY_LEN as u64, 0o400)
        );
        let key = read_authkey(&path).unwrap();
        assert!(key.len() == AUTHKEY_LEN && key.iter().any(|&byte| byte != 0));
        let err = write_new_authkey(&path).unwrap_err();
        assert!(
            matches!(&err, Error::Exist(d) if d.contains("refusing to overwrite")),
            "{err}"
        );
        assert_eq!(read_authkey(&path).unwrap(), key);
    }

    #[test]
    fn read_authkey_refuses_open_modes_wrong_sizes_and_missing_files() {
        let dir = TempDir::new();
        for mode in [0o644, 0o640, 0o604, 0o420] {
            let path = dir.file(&format!("mode-{mode:o}"), &[1; 64], mode);
            let err = read_authkey(&path).unwrap_err();
            let (octal, shown) = (format!("{mode:04o}"), path.display().to_string());
            assert!(
                matches!(&err, Error::Access(d) if d.contains(&octal) && d.contains("chmod 0400")
                    && d.contains(&shown)),
                "{err}"
            );
        }
        assert!(read_authkey(&dir.file("mode-600", &[1; 64], 0o600)).is_ok());
        for size in [0, 31, 4097] {
            let err = read_authkey(&dir.file(&format!("{size}"), &vec![1; size], 0o400));
            let err = err.unwrap_err();
            let said = format!("is {size} bytes");
            assert!(
                matches!(&err, Error::InvalidParam(d) if d.contains(&said)),
                "{err}"
            );
        }
        for size in [32, 4096] {
            let path = dir.file(&format!("ok-{size}"), &vec![2; size], 0o400);
            assert_eq!(read_authkey(&path).unwrap(), vec![2; size]);
        }
        let err = read_authkey(&dir.0.join("missing")).unwrap_err();
        assert!(
            matches!(&err, Error::NotExist(d) if d.contains("does not exist")),
            "{err}"
        );
    }

    #[test]
    fn debug_output_hides_key_material() {
        let key = ClusterKey::derive(&AUTHKEY, "alpha", Cipher::ChaCha20Poly1305);
        let printed = format!("{key:?} {:?}", pair(Cipher::ChaCha20Poly1305));
        let master = format!("{:?}", key.master);
        assert!(printed.contains("hidden") && !printed.contains(&master[1..master.len() - 1]));
    }
}
