//! A single-producer single-consumer ring of variable-size records in shared memory, Aeron
//! style: the producer claims space, writes the record in place and commits (or aborts); the
//! consumer reads records in place and releases them, possibly out of order (a zero-copy view
//! may be kept while later records are read). Positions are 64-bit and only grow, so they
//! never wrap in practice and "full" and "empty" are never confused.
//!
//! Layout of one ring at `offset` in a region: a header of [`HEADER_LEN`] bytes (capacity,
//! then the producer's tail, the consumer's head and the two sleeping flags, each on its own
//! cache line), then `capacity` bytes of records. A record is an 8-byte header (payload
//! length `u32`, kind `u32`) and the payload, padded to 8 bytes; a record never wraps: when
//! it does not fit before the end, a padding record fills the end and it starts at 0.
//!
//! The other process is not trusted: every position and record header read from shared
//! memory is checked, and a bad one is reported as [`Corrupt`] (the node then drops that
//! client), never a panic or an out-of-bounds access.

// Header fields and records sit at offsets that are multiples of 8 in a page-aligned mapping,
// and every position read from shared memory is checked to be a multiple of 8 before use.
#![allow(
    clippy::cast_ptr_alignment,
    reason = "alignment is checked where positions are read"
)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering, fence};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use super::shm::SharedMemory;

/// Bytes of a ring's header.
pub const HEADER_LEN: usize = 256;
/// Bytes of a record's header.
pub const RECORD_HEADER_LEN: usize = 8;
/// The kind of a padding record (skipped by the consumer).
const PADDING: u32 = u32::MAX;
/// Largest record kind an application layer may use.
pub const KIND_MAX: u32 = u32::MAX - 1;

const CAPACITY_AT: usize = 0;
const TAIL_AT: usize = 64;
const HEAD_AT: usize = 128;
const CONSUMER_SLEEPING_AT: usize = 192;
const PRODUCER_SLEEPING_AT: usize = 196;
/// A word the consumer publishes for the producer (the node's flow-control state, say).
const CONSUMER_STATUS_AT: usize = 200;
/// A position the producer waits for the consumer to read up to (0: none); the consumer wakes
/// it through a futex on the head once its head gets there (see [`HeadWatch::wait_read`]).
const READ_AWAITED_AT: usize = 208;
/// The 32 bits of the head a futex waits on (the low ones, which change with every release).
const HEAD_FUTEX_AT: usize = if cfg!(target_endian = "little") {
    HEAD_AT
} else {
    HEAD_AT + 4
};

/// Bytes a ring of `capacity` takes in a region.
#[must_use]
pub const fn footprint(capacity: usize) -> usize {
    HEADER_LEN + capacity
}

/// The space a record with a payload of `len` bytes takes.
#[must_use]
pub const fn record_size(len: usize) -> usize {
    (RECORD_HEADER_LEN + len + 7) & !7
}

/// Shared memory broke the ring's rules (a misbehaving or dead-and-overwritten peer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Corrupt(pub String);

impl std::fmt::Display for Corrupt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "corrupt ring: {}", self.0)
    }
}

/// Why a claim failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClaimError {
    /// Not enough free space now (`CS_ERR_TRY_AGAIN`); wait for the consumer.
    Full,
    /// Larger than the ring can ever hold (`CS_ERR_TOO_BIG`).
    TooBig,
}

/// One ring's view of its region.
#[derive(Debug, Clone)]
struct RingMemory {
    memory: Arc<SharedMemory>,
    /// Offset of the ring's header in the region.
    offset: usize,
    capacity: usize,
}

impl RingMemory {
    /// `FUTEX_WAIT` (while the head's low half holds `expected`, at most `timeout`) or
    /// `FUTEX_WAKE` (all waiters) on the head's low half: shared, not private, since the
    /// other side is another mapping, often another process.
    fn head_futex(&self, op: nix::libc::c_int, value: u32, timeout: Option<&nix::libc::timespec>) {
        let timeout = timeout.map_or(std::ptr::null(), std::ptr::from_ref);
        // SAFETY: the futex word is the (4-aligned) low half of the head, inside the mapped
        // region that `self.memory` keeps alive; FUTEX_WAIT only reads it (and returns at once
        // if it no longer holds `value`), FUTEX_WAKE does not touch it.
        unsafe {
            nix::libc::syscall(
                nix::libc::SYS_futex,
                self.memory.as_ptr().add(self.offset + HEAD_FUTEX_AT),
                op,
                value,
                timeout,
                std::ptr::null::<u32>(),
                0u32,
            );
        }
    }

    fn new(
        memory: Arc<SharedMemory>,
        offset: usize,
        capacity: usize,
    ) -> Result<RingMemory, Corrupt> {
        if !capacity.is_power_of_two() || capacity < 64 || capacity > u32::MAX as usize {
            return Err(Corrupt(format!(
                "capacity {capacity} is not a power of two in 64..4 GiB"
            )));
        }
        if offset % 64 != 0
            || offset
                .checked_add(footprint(capacity))
                .is_none_or(|end| end > memory.len())
        {
            return Err(Corrupt(format!(
                "ring at {offset} of {capacity} bytes does not fit a region of {} bytes",
                memory.len()
            )));
        }
        Ok(RingMemory {
            memory,
            offset,
            capacity,
        })
    }

    fn u64_at(&self, at: usize) -> &AtomicU64 {
        // SAFETY: `at` is one of the header's 8-aligned fields, inside the region (checked in
        // `new`); the region is page-aligned and lives as long as `self.memory`. Shared memory
        // is only ever accessed through atomics here, which is sound across processes.
        unsafe {
            &*self
                .memory
                .as_ptr()
                .add(self.offset + at)
                .cast::<AtomicU64>()
        }
    }

    fn u32_at(&self, at: usize) -> &AtomicU32 {
        // SAFETY: as in `u64_at`, for a 4-aligned header field.
        unsafe {
            &*self
                .memory
                .as_ptr()
                .add(self.offset + at)
                .cast::<AtomicU32>()
        }
    }

    fn tail(&self) -> &AtomicU64 {
        self.u64_at(TAIL_AT)
    }

    fn head(&self) -> &AtomicU64 {
        self.u64_at(HEAD_AT)
    }

    /// Pointer to data byte `index` (≤ capacity: an empty payload whose header takes the
    /// last 8 bytes starts one past the end).
    fn data(&self, index: usize) -> *mut u8 {
        debug_assert!(index <= self.capacity);
        // SAFETY: index ≤ capacity, and the data area is inside the region (checked in `new`):
        // the pointer is inside the region or one past its end.
        unsafe { self.memory.as_ptr().add(self.offset + HEADER_LEN + index) }
    }

    fn write_header(&self, index: usize, len: u32, kind: u32) {
        let word = u64::from(len) | (u64::from(kind) << 32);
        // SAFETY: records are 8-aligned and `index + 8 <= capacity` for every record start;
        // the header word is written atomically so a concurrent (misbehaving) reader sees old
        // or new, never a torn mix.
        unsafe { &*self.data(index).cast::<AtomicU64>() }.store(word, Ordering::Relaxed);
    }

    fn read_header(&self, index: usize) -> (u32, u32) {
        // SAFETY: as in `write_header`.
        let word = unsafe { &*self.data(index).cast::<AtomicU64>() }.load(Ordering::Relaxed);
        (word as u32, (word >> 32) as u32)
    }
}

/// Writes the header of a fresh ring of `capacity` at `offset` (the node does, once).
pub fn initialize(
    memory: &Arc<SharedMemory>,
    offset: usize,
    capacity: usize,
) -> Result<(), Corrupt> {
    let ring = RingMemory::new(Arc::clone(memory), offset, capacity)?;
    ring.u64_at(CAPACITY_AT)
        .store(capacity as u64, Ordering::Relaxed);
    ring.tail().store(0, Ordering::Relaxed);
    ring.head().store(0, Ordering::Release);
    Ok(())
}

/// Reads the capacity a ring's header states (the client does, and checks it).
#[must_use]
pub fn stated_capacity(memory: &SharedMemory, offset: usize) -> Option<usize> {
    if offset % 64 != 0 || offset + HEADER_LEN > memory.len() {
        return None;
    }
    // SAFETY: 8-aligned, inside the region (checked above).
    let word = unsafe { &*memory.as_ptr().add(offset).cast::<AtomicU64>() };
    usize::try_from(word.load(Ordering::Acquire)).ok()
}

/// The writing side.
#[derive(Debug)]
pub struct Producer {
    ring: RingMemory,
    /// My tail (the shared one is only written by me).
    tail: u64,
    /// The consumer's head when last read.
    head: u64,
}

/// Space claimed for one record; commit publishes it, drop or abort forgets it.
#[derive(Debug)]
pub struct Claim<'p> {
    producer: &'p mut Producer,
    /// Position of the record header.
    start: u64,
    len: usize,
    /// How far the tail moves on commit (padding included).
    advance: u64,
}

impl Producer {
    /// The producer of the ring of `capacity` at `offset` in `memory`.
    pub fn new(
        memory: Arc<SharedMemory>,
        offset: usize,
        capacity: usize,
    ) -> Result<Producer, Corrupt> {
        let ring = RingMemory::new(memory, offset, capacity)?;
        let tail = ring.tail().load(Ordering::Acquire);
        let head = ring.head().load(Ordering::Acquire);
        if tail % 8 != 0 || head % 8 != 0 || head > tail || tail - head > capacity as u64 {
            return Err(Corrupt(format!(
                "positions head {head} tail {tail} are not a ring's"
            )));
        }
        Ok(Producer { ring, tail, head })
    }

    /// The ring's capacity in bytes.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.ring.capacity
    }

    /// Largest payload a record can carry.
    #[must_use]
    pub fn payload_max(&self) -> usize {
        self.ring.capacity / 2 - RECORD_HEADER_LEN
    }

    /// Bytes free now.
    pub fn free(&mut self) -> Result<usize, Corrupt> {
        self.refresh_head()?;
        Ok(self.ring.capacity - (self.tail - self.head) as usize)
    }

    fn refresh_head(&mut self) -> Result<(), Corrupt> {
        let head = self.ring.head().load(Ordering::Acquire);
        if head < self.head || head > self.tail || head % 8 != 0 {
            return Err(Corrupt(format!(
                "head {head} outside {}..={}",
                self.head, self.tail
            )));
        }
        self.head = head;
        Ok(())
    }

    /// Claims space for a payload of `len` bytes. A record may take up to half the ring, so
    /// that one always fits once the ring drains, whatever the wrap position.
    pub fn claim(&mut self, len: usize) -> Result<Result<Claim<'_>, ClaimError>, Corrupt> {
        if len > self.payload_max() {
            return Ok(Err(ClaimError::TooBig));
        }
        let size = record_size(len) as u64;
        let capacity = self.ring.capacity as u64;
        let index = self.tail % capacity;
        let contiguous = capacity - index;
        let padding = if size <= contiguous { 0 } else { contiguous };
        let need = padding + size;
        if self.tail + need - self.head > capacity {
            self.refresh_head()?;
            if self.tail + need - self.head > capacity {
                return Ok(Err(ClaimError::Full));
            }
        }
        if padding > 0 {
            // Unpublished until commit: the consumer never reads past the tail.
            let len = (padding - RECORD_HEADER_LEN as u64) as u32;
            self.ring.write_header(index as usize, len, PADDING);
        }
        Ok(Ok(Claim {
            start: self.tail + padding,
            len,
            advance: need,
            producer: self,
        }))
    }

    /// Claims, copies `payload` in and commits; returns whether the consumer must be woken.
    pub fn push(&mut self, kind: u32, payload: &[u8]) -> Result<Result<bool, ClaimError>, Corrupt> {
        Ok(match self.claim(payload.len())? {
            Ok(mut claim) => {
                claim.payload_mut().copy_from_slice(payload);
                Ok(claim.commit(kind))
            }
            Err(error) => Err(error),
        })
    }

    /// The position after the last committed record: once the consumer's head reaches it,
    /// everything committed so far was consumed.
    #[must_use]
    pub fn position(&self) -> u64 {
        self.tail
    }

    /// A watch on how far the consumer has released (usable without the producer).
    #[must_use]
    pub fn head_watch(&self) -> HeadWatch {
        HeadWatch {
            ring: self.ring.clone(),
        }
    }

    /// The word the consumer publishes with [`Consumer::set_status`].
    #[must_use]
    pub fn consumer_status(&self) -> u32 {
        self.ring.u32_at(CONSUMER_STATUS_AT).load(Ordering::Acquire)
    }

    /// Whether the consumer sleeps and must be woken for what was committed (clears its mark).
    #[must_use = "a sleeping consumer must be woken"]
    pub fn take_wake(&self) -> bool {
        // Pairs with the consumer's fence between setting its sleeping flag and re-reading the
        // tail: one of the two sides sees the other.
        fence(Ordering::SeqCst);
        let flag = self.ring.u32_at(CONSUMER_SLEEPING_AT);
        flag.load(Ordering::Relaxed) == 1 && flag.swap(0, Ordering::SeqCst) == 1
    }

    /// Marks the producer as waiting for space; returns false (and clears the mark) if space
    /// for `len` appeared meanwhile. The consumer wakes a sleeping producer when it releases.
    pub fn prepare_to_wait(&mut self, len: usize) -> Result<bool, Corrupt> {
        self.ring
            .u32_at(PRODUCER_SLEEPING_AT)
            .store(1, Ordering::SeqCst);
        // Pairs with the consumer's fence between storing its head and looking at the mark:
        // it sees the mark, or this side sees the head it stored.
        fence(Ordering::SeqCst);
        let need = 2 * record_size(len);
        if self.free()? >= need.min(self.ring.capacity) {
            self.ring
                .u32_at(PRODUCER_SLEEPING_AT)
                .store(0, Ordering::SeqCst);
            return Ok(false);
        }
        Ok(true)
    }
}

impl<'p> Claim<'p> {
    /// The record's payload, to be written in place.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let index = (self.start % self.producer.ring.capacity as u64) as usize;
        // SAFETY: [index + 8, index + 8 + len) lies inside the data area (claim checked that
        // the record fits before the end), and is beyond the published tail: the consumer does
        // not read it and no other reference to it exists while this claim borrows the producer
        // mutably.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.producer.ring.data(index + RECORD_HEADER_LEN),
                self.len,
            )
        }
    }

    /// Publishes the record with `kind` (≤ [`KIND_MAX`]); returns whether the consumer sleeps
    /// and must be woken.
    #[must_use = "a sleeping consumer must be woken"]
    pub fn commit(self, kind: u32) -> bool {
        self.publish(kind).take_wake()
    }

    /// Publishes the record without asking whether the consumer sleeps: for batches, which
    /// end with one [`Producer::take_wake`] (a full fence costs more than a small record).
    pub fn commit_batched(self, kind: u32) {
        self.publish(kind);
    }

    fn publish(self, kind: u32) -> &'p mut Producer {
        assert!(kind <= KIND_MAX, "record kind {kind} is reserved");
        let producer = self.producer;
        let ring = &producer.ring;
        let index = (self.start % ring.capacity as u64) as usize;
        ring.write_header(index, self.len as u32, kind);
        producer.tail += self.advance;
        ring.tail().store(producer.tail, Ordering::Release);
        producer
    }

    /// Forgets the claim (the same as dropping it).
    pub fn abort(self) {}
}

/// How far a ring's consumer has released, watched from the producer's side.
#[derive(Clone, Debug)]
pub struct HeadWatch {
    ring: RingMemory,
}

impl HeadWatch {
    /// The consumer's head: every record that ends at or before it was consumed.
    #[must_use]
    pub fn head(&self) -> u64 {
        self.ring.head().load(Ordering::Acquire)
    }

    /// Asks the consumer to read up to `position` (it may have paused reading; see
    /// [`Consumer::read_awaited`]) and to wake [`HeadWatch::wait_read`] when its head gets
    /// there. The caller then wakes the consumer.
    pub fn await_read(&self, position: u64) {
        self.ring
            .u64_at(READ_AWAITED_AT)
            .fetch_max(position, Ordering::SeqCst);
    }

    /// Sleeps until the head reaches `position` (asked for with [`HeadWatch::await_read`]) or
    /// `timeout` passes; whether it got there. Returns at once if it is there.
    #[must_use]
    pub fn wait_read(&self, position: u64, timeout: std::time::Duration) -> bool {
        // Pairs with the fence in `Consumer::wake_read_waiter`: the consumer sees the position
        // awaited, or this side sees the head it stored before looking.
        fence(Ordering::SeqCst);
        let head = self.head();
        if head >= position {
            return true;
        }
        let timeout = nix::libc::timespec {
            tv_sec: nix::libc::time_t::try_from(timeout.as_secs())
                .unwrap_or(nix::libc::time_t::MAX),
            tv_nsec: nix::libc::c_long::from(timeout.subsec_nanos()),
        };
        // Returns at once if the consumer released meanwhile (the low bits changed).
        self.ring
            .head_futex(nix::libc::FUTEX_WAIT, head as u32, Some(&timeout));
        self.head() >= position
    }
}

/// A record read by the consumer and not yet released.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    start: u64,
    end: u64,
    /// The record's kind.
    pub kind: u32,
    len: u32,
}

impl Entry {
    /// Payload length.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether the payload is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The reading side.
#[derive(Debug)]
pub struct Consumer {
    ring: RingMemory,
    /// Next record to read.
    read: u64,
    /// The producer's tail when last read.
    tail: u64,
    /// What was released, shared with the [`Pinned`] views, which release themselves.
    releases: Arc<Releases>,
}

/// What a consumer has released, shared by the consumer and its [`Pinned`] views: a view
/// releases its record when dropped, in whatever thread, at once — not at the consumer's next
/// call, which may never come while it sleeps with nothing left to read and the producer
/// waits for that very space.
struct Releases {
    ring: RingMemory,
    state: Mutex<ReleaseState>,
    /// `state.head`, readable without the lock (mine: the ring's shared head is written by me
    /// too, but a misbehaving producer could overwrite it).
    head: AtomicU64,
    /// Records handed out by `read_next` and not released yet.
    pinned: AtomicUsize,
    /// Wakes the producer (see [`Consumer::set_producer_waker`]).
    waker: OnceLock<Box<dyn Fn() + Send + Sync>>,
}

struct ReleaseState {
    /// Everything before it is released (the shared head mirrors it).
    head: u64,
    /// Released records beyond `head`, by start → end.
    released: BTreeMap<u64, u64>,
}

impl std::fmt::Debug for Releases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Releases")
            .field("head", &self.head.load(Ordering::Relaxed))
            .field("pinned", &self.pinned.load(Ordering::Relaxed))
            .field("waker", &self.waker.get().is_some())
            .finish_non_exhaustive()
    }
}

impl Releases {
    /// Releases `entry`; returns whether the head moved (space was freed).
    fn release(&self, entry: Entry) -> bool {
        self.pinned.fetch_sub(1, Ordering::Relaxed);
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if entry.start != state.head {
            state.released.insert(entry.start, entry.end);
            return false;
        }
        let mut head = entry.end;
        while let Some(end) = state.released.remove(&head) {
            head = end;
        }
        state.head = head;
        // The mirror first: whoever sees the producer react to the shared head sees it too.
        self.head.store(head, Ordering::Release);
        self.ring.head().store(head, Ordering::Release);
        true
    }

    /// Whether the producer waits for space and must be woken (clears its mark).
    fn take_producer_wake(&self) -> bool {
        // Pairs with the fence in `Producer::prepare_to_wait` between setting its mark and
        // reading the head: one of the two sides sees the other.
        fence(Ordering::SeqCst);
        let flag = self.ring.u32_at(PRODUCER_SLEEPING_AT);
        flag.load(Ordering::Relaxed) == 1 && flag.swap(0, Ordering::SeqCst) == 1
    }
}

/// A record's payload kept in place after it was read, released when the last view is dropped
/// (in any thread), which wakes a producer waiting for the space (see
/// [`Consumer::set_producer_waker`]). Holding it keeps the region mapped, so it can never
/// dangle; it does hold ring space, so a consumer that keeps many fills its ring, and the
/// producer then waits until some are dropped.
///
/// Only for rings whose producer is trusted (the node's event ring read by a client), as for
/// [`Consumer::payload`].
#[derive(Debug)]
pub struct Pinned {
    memory: Arc<SharedMemory>,
    /// Offset of the payload in the region.
    at: usize,
    entry: Entry,
    releases: Arc<Releases>,
}

impl std::ops::Deref for Pinned {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: `Consumer::pin` checked (through `read_next`) that the payload lies inside
        // the region, which `self.memory` keeps mapped. The producer does not write the record
        // again before the consumer releases it, and that only happens after this view is
        // dropped (its entry is handed back in `Drop`).
        unsafe { std::slice::from_raw_parts(self.memory.as_ptr().add(self.at), self.entry.len()) }
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        let releases = &self.releases;
        // Without a waker the mark stays for the consumer's next release to see.
        if releases.release(self.entry)
            && let Some(wake) = releases.waker.get()
            && releases.take_producer_wake()
        {
            wake();
        }
    }
}

impl Consumer {
    /// The consumer of the ring of `capacity` at `offset` in `memory`.
    pub fn new(
        memory: Arc<SharedMemory>,
        offset: usize,
        capacity: usize,
    ) -> Result<Consumer, Corrupt> {
        let ring = RingMemory::new(memory, offset, capacity)?;
        let head = ring.head().load(Ordering::Acquire);
        if head % 8 != 0 {
            return Err(Corrupt(format!("head {head} is not 8-aligned")));
        }
        let releases = Releases {
            ring: ring.clone(),
            state: Mutex::new(ReleaseState {
                head,
                released: BTreeMap::new(),
            }),
            head: AtomicU64::new(head),
            pinned: AtomicUsize::new(0),
            waker: OnceLock::new(),
        };
        Ok(Consumer {
            ring,
            read: head,
            tail: head,
            releases: Arc::new(releases),
        })
    }

    /// Installs what wakes the producer when a dropped [`Pinned`] view frees space it waits
    /// for (the consumer's owner is not there to do it: it may be asleep, with nothing left to
    /// read). The first one installed stays.
    pub fn set_producer_waker(&self, wake: impl Fn() + Send + Sync + 'static) {
        let _ = self.releases.waker.set(Box::new(wake));
    }

    /// Keeps `entry`'s payload as a view that outlives this borrow; it is released when the
    /// view is dropped.
    #[must_use]
    pub fn pin(&self, entry: Entry) -> Pinned {
        let index = (entry.start % self.ring.capacity as u64) as usize;
        Pinned {
            memory: Arc::clone(&self.ring.memory),
            at: self.ring.offset + HEADER_LEN + index + RECORD_HEADER_LEN,
            entry,
            releases: Arc::clone(&self.releases),
        }
    }

    /// Everything before it is released.
    fn head(&self) -> u64 {
        self.releases.head.load(Ordering::Acquire)
    }

    /// Publishes a word for the producer (see [`Producer::consumer_status`]).
    pub fn set_status(&self, status: u32) {
        self.ring
            .u32_at(CONSUMER_STATUS_AT)
            .store(status, Ordering::Release);
    }

    /// Records read and not yet released.
    #[must_use]
    pub fn outstanding(&self) -> usize {
        self.releases.pinned.load(Ordering::Relaxed)
    }

    /// The next record, if one is published; its payload stays valid until released.
    pub fn read_next(&mut self) -> Result<Option<Entry>, Corrupt> {
        let capacity = self.ring.capacity as u64;
        loop {
            if self.read == self.tail {
                let tail = self.ring.tail().load(Ordering::Acquire);
                // Read after the tail: a view dropped in another thread may have moved the
                // head, and the producer may have written into that space already.
                let head = self.head();
                if tail < self.tail || tail - head > capacity || tail % 8 != 0 {
                    return Err(Corrupt(format!(
                        "tail {tail} outside {}..={}",
                        self.tail,
                        head + capacity
                    )));
                }
                self.tail = tail;
                if self.read == self.tail {
                    return Ok(None);
                }
            }
            let index = (self.read % capacity) as usize;
            let (len, kind) = self.ring.read_header(index);
            let size = record_size(len as usize) as u64;
            let fits = index as u64 + size <= capacity && self.read + size <= self.tail;
            if !fits {
                return Err(Corrupt(format!(
                    "record of {len} bytes at {} does not fit (tail {})",
                    self.read, self.tail
                )));
            }
            let entry = Entry {
                start: self.read,
                end: self.read + size,
                kind,
                len,
            };
            self.read = entry.end;
            if kind == PADDING {
                if index as u64 + size != capacity {
                    return Err(Corrupt(format!(
                        "padding at {} short of the end",
                        entry.start
                    )));
                }
                self.releases.pinned.fetch_add(1, Ordering::Relaxed);
                self.release_batched(entry);
                continue;
            }
            self.releases.pinned.fetch_add(1, Ordering::Relaxed);
            return Ok(Some(entry));
        }
    }

    /// A view of `entry`'s payload, valid until it is released. Only for rings whose producer
    /// is trusted (the node's event ring read by a client): a misbehaving producer could change
    /// the bytes under the view. The node copies untrusted requests with [`Consumer::copy`].
    #[must_use]
    pub fn payload(&self, entry: &Entry) -> &[u8] {
        let index = (entry.start % self.ring.capacity as u64) as usize;
        // SAFETY: `read_next` checked that the record lies inside the data area; the producer does
        // not write it again before the consumer releases it (the head stays before it), and a
        // released entry is never read again by this consumer.
        unsafe {
            std::slice::from_raw_parts(self.ring.data(index + RECORD_HEADER_LEN), entry.len())
        }
    }

    /// Copies `entry`'s payload into `out` (replacing its contents).
    pub fn copy(&self, entry: &Entry, out: &mut Vec<u8>) {
        out.clear();
        self.append(entry, 0..entry.len(), out);
    }

    /// Appends bytes `range` of `entry`'s payload to `out`.
    ///
    /// # Panics
    /// If `range` is not inside the payload.
    pub fn append(&self, entry: &Entry, range: std::ops::Range<usize>, out: &mut Vec<u8>) {
        assert!(
            range.start <= range.end && range.end <= entry.len(),
            "range {range:?} outside a payload of {}",
            entry.len()
        );
        let index = (entry.start % self.ring.capacity as u64) as usize;
        let len = range.end - range.start;
        if len == 0 {
            return;
        }
        out.reserve(len);
        let at = out.len();
        // SAFETY: the source lies inside the record's payload, inside the data area (checked
        // by `read_next` and the assertion above); `out` has room for `len` more bytes after
        // `reserve`, and the two cannot overlap (one is shared memory, the other our heap). A
        // misbehaving producer writing meanwhile can only change the bytes it sends us.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.ring.data(index + RECORD_HEADER_LEN + range.start),
                out.as_mut_ptr().add(at),
                len,
            );
            out.set_len(at + len);
        }
    }

    /// Releases a record read by [`Consumer::read_next`] (in any order); returns whether the producer
    /// waits for space and must be woken.
    pub fn release(&mut self, entry: Entry) -> bool {
        self.release_batched(entry) && self.take_producer_wake()
    }

    /// [`Consumer::release`] without asking whether the producer waits (for batches, which
    /// end with one [`Consumer::take_producer_wake`]); returns whether space was freed.
    pub fn release_batched(&mut self, entry: Entry) -> bool {
        self.releases.release(entry)
    }

    /// Whether the producer waits for space and must be woken (clears its mark); for batches
    /// of [`Consumer::release`] whose results were ignored.
    #[must_use = "a waiting producer must be woken"]
    pub fn take_producer_wake(&self) -> bool {
        self.releases.take_producer_wake()
    }

    /// Whether the producer waits for this consumer to read further than it has released
    /// ([`HeadWatch::await_read`]): a consumer that paused reading must read on.
    #[must_use]
    pub fn read_awaited(&self) -> bool {
        self.ring.u64_at(READ_AWAITED_AT).load(Ordering::Acquire) > self.head()
    }

    /// Wakes a producer waiting in [`HeadWatch::wait_read`] for a position the head has
    /// reached (after releases; cheap when nobody waits).
    pub fn wake_read_waiter(&self) {
        fence(Ordering::SeqCst);
        let awaited = self.ring.u64_at(READ_AWAITED_AT);
        let position = awaited.load(Ordering::Relaxed);
        if position == 0 || position > self.head() {
            return;
        }
        // A later wait (a larger position) stays asked for.
        let _ = awaited.compare_exchange(position, 0, Ordering::SeqCst, Ordering::Relaxed);
        self.ring
            .head_futex(nix::libc::FUTEX_WAKE, i32::MAX as u32, None);
    }

    /// Whether the producer published records this consumer has not read yet.
    #[must_use]
    pub fn has_unread(&self) -> bool {
        self.ring.tail().load(Ordering::Acquire) != self.read
    }

    /// Marks the consumer as about to sleep; returns false (and clears the mark) if a record
    /// arrived meanwhile. The producer wakes a sleeping consumer on its next commit.
    pub fn prepare_to_sleep(&mut self) -> bool {
        let flag = self.ring.u32_at(CONSUMER_SLEEPING_AT);
        flag.store(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if self.ring.tail().load(Ordering::Acquire) != self.read {
            flag.store(0, Ordering::SeqCst);
            return false;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(capacity: usize) -> (Producer, Consumer, Arc<SharedMemory>) {
        let memory =
            Arc::new(SharedMemory::create("ring-test", footprint(capacity).max(4096)).unwrap());
        initialize(&memory, 0, capacity).unwrap();
        let producer = Producer::new(Arc::clone(&memory), 0, capacity).unwrap();
        let consumer = Consumer::new(Arc::clone(&memory), 0, capacity).unwrap();
        (producer, consumer, memory)
    }

    #[test]
    fn an_empty_record_in_the_last_eight_bytes_goes_through() {
        // Two records of 120 bytes and an empty one bring the tail to 248 of 256: the next
        // empty record's header takes the last 8 bytes and its payload starts at the end.
        let (mut producer, mut consumer, _memory) = pair(256);
        for len in [112, 112, 0, 0] {
            producer.push(7, &vec![3; len]).unwrap().unwrap();
            let entry = consumer.read_next().unwrap().unwrap();
            assert_eq!(consumer.payload(&entry), &vec![3; len][..]);
            let mut out = vec![9];
            consumer.copy(&entry, &mut out);
            assert_eq!(out.len(), len);
            consumer.release(entry);
        }
        assert_eq!(producer.free().unwrap(), 256);
    }

    #[test]
    fn records_go_through_in_order_with_wrap_and_padding() {
        let (mut producer, mut consumer, _memory) = pair(1024);
        let mut expected = std::collections::VecDeque::new();
        let mut counter = 0u32;
        for round in 0..2000usize {
            let len = (round * 37) % 300;
            let payload: Vec<u8> = (0..len).map(|i| (i as u32 ^ counter) as u8).collect();
            match producer.push(counter, &payload).unwrap() {
                Ok(_) => {
                    expected.push_back((counter, payload));
                    counter += 1;
                }
                Err(ClaimError::Full) => {
                    let entry = consumer
                        .read_next()
                        .unwrap()
                        .expect("full ring has records");
                    let (kind, payload) = expected.pop_front().unwrap();
                    assert_eq!(entry.kind, kind);
                    assert_eq!(consumer.payload(&entry), &payload[..]);
                    consumer.release(entry);
                }
                Err(ClaimError::TooBig) => unreachable!("300 < 504"),
            }
        }
        while let Some(entry) = consumer.read_next().unwrap() {
            let (kind, payload) = expected.pop_front().unwrap();
            assert_eq!((entry.kind, consumer.payload(&entry)), (kind, &payload[..]));
            consumer.release(entry);
        }
        assert!(expected.is_empty());
        assert_eq!(producer.free().unwrap(), 1024);
        assert_eq!(
            producer.claim(505).unwrap().unwrap_err(),
            ClaimError::TooBig
        );
    }

    #[test]
    fn aborted_claims_publish_nothing_and_views_release_out_of_order() {
        let (mut producer, mut consumer, _memory) = pair(256);
        let mut claim = producer.claim(10).unwrap().unwrap();
        claim.payload_mut().fill(7);
        claim.abort();
        assert_eq!(consumer.read_next().unwrap(), None);
        for kind in 0..3 {
            producer.push(kind, &[kind as u8; 40]).unwrap().unwrap();
        }
        let a = consumer.read_next().unwrap().unwrap();
        let b = consumer.read_next().unwrap().unwrap();
        let c = consumer.read_next().unwrap().unwrap();
        let free = producer.free().unwrap();
        // Releasing b and c while a's view is pinned frees nothing yet.
        consumer.release(b);
        consumer.release(c);
        assert_eq!(producer.free().unwrap(), free);
        assert_eq!(consumer.payload(&a), &[0u8; 40][..]);
        assert_eq!(consumer.outstanding(), 1);
        consumer.release(a);
        assert_eq!(consumer.outstanding(), 0);
        assert_eq!(producer.free().unwrap(), 256);
    }

    #[test]
    fn sleeping_flags_ask_for_exactly_the_needed_wake_ups() {
        let (mut producer, mut consumer, _memory) = pair(256);
        assert!(consumer.prepare_to_sleep());
        assert!(
            producer.push(1, b"x").unwrap().unwrap(),
            "the sleeper must be woken"
        );
        assert!(
            !producer.push(2, b"y").unwrap().unwrap(),
            "it was woken already"
        );
        assert!(
            !consumer.prepare_to_sleep(),
            "records are waiting: no sleep"
        );
        // Fill the ring; the producer waits; a release wakes it.
        while producer.push(3, &[0; 40]).unwrap().is_ok() {}
        assert!(producer.prepare_to_wait(40).unwrap());
        let entry = consumer.read_next().unwrap().unwrap();
        assert!(consumer.release(entry));
    }

    #[test]
    fn garbage_in_shared_memory_is_reported_not_followed() {
        let (mut producer, mut consumer, memory) = pair(256);
        producer.push(1, b"hello").unwrap().unwrap();
        // A peer overwrites the record header with a huge length.
        // SAFETY: offset HEADER_LEN is the first record header, inside the region, 8-aligned.
        unsafe {
            memory
                .as_ptr()
                .add(HEADER_LEN)
                .cast::<u64>()
                .write_volatile(0xFFFF_0000 | (1 << 32));
        }
        assert!(consumer.read_next().is_err());
        // A peer moves the tail beyond what the ring can hold.
        let (_producer, mut consumer, memory) = pair(256);
        // SAFETY: TAIL_AT is the 8-aligned tail field of the ring header.
        unsafe {
            memory
                .as_ptr()
                .add(TAIL_AT)
                .cast::<u64>()
                .write_volatile(10_000);
        }
        assert!(consumer.read_next().is_err());
        // A consumer that moves its head backwards.
        let (mut producer, _consumer, memory) = pair(256);
        producer.push(1, &[0; 100]).unwrap().unwrap();
        producer.push(1, &[0; 100]).unwrap().unwrap();
        // SAFETY: HEAD_AT is the 8-aligned head field.
        unsafe {
            memory
                .as_ptr()
                .add(HEAD_AT)
                .cast::<u64>()
                .write_volatile(u64::MAX);
        }
        assert!(producer.free().is_err());
        // Random bytes everywhere: never a panic.
        let (_producer, mut consumer, memory) = pair(1024);
        let mut state = 0x1234_5678_9ABC_DEF0u64;
        for round in 0..2000 {
            for word in 0..(footprint(1024) / 8) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                if word * 8 == CAPACITY_AT || (round % 3 == 0 && word * 8 == TAIL_AT) {
                    continue;
                }
                // SAFETY: word * 8 < footprint(1024) ≤ the region length, 8-aligned.
                unsafe {
                    memory
                        .as_ptr()
                        .add(word * 8)
                        .cast::<u64>()
                        .write_volatile(state % 4096);
                }
            }
            for _ in 0..10 {
                match consumer.read_next() {
                    Ok(Some(entry)) => {
                        let mut out = Vec::new();
                        consumer.copy(&entry, &mut out);
                        consumer.release(entry);
                    }
                    Ok(None) | Err(_) => break,
                }
            }
            if let Ok(fresh) = Consumer::new(Arc::clone(&memory), 0, 1024) {
                consumer = fresh;
            }
        }
    }

    #[test]
    fn two_threads_move_a_million_records_intact() {
        let (mut producer, mut consumer, _memory) = pair(1 << 16);
        let count = 1_000_000u32;
        let writer = std::thread::spawn(move || {
            let mut sent = 0u32;
            while sent < count {
                let len = (sent % 61) as usize;
                match producer.claim(len).unwrap() {
                    Ok(mut claim) => {
                        for (i, byte) in claim.payload_mut().iter_mut().enumerate() {
                            *byte = (sent as usize + i) as u8;
                        }
                        let _ = claim.commit(sent);
                        sent += 1;
                    }
                    Err(_) => std::hint::spin_loop(),
                }
            }
        });
        let mut received = 0u32;
        while received < count {
            match consumer.read_next().unwrap() {
                Some(entry) => {
                    assert_eq!(entry.kind, received);
                    let payload = consumer.payload(&entry);
                    assert_eq!(payload.len(), (received % 61) as usize);
                    for (i, byte) in payload.iter().enumerate() {
                        assert_eq!(*byte, (received as usize + i) as u8);
                    }
                    consumer.release(entry);
                    received += 1;
                }
                None => std::hint::spin_loop(),
            }
        }
        writer.join().unwrap();
    }

    #[test]
    fn pinned_views_hold_their_space_until_dropped_in_any_order_and_thread() {
        let (mut producer, mut consumer, _memory) = pair(256);
        for kind in 0..3 {
            assert!(producer.push(kind, &[kind as u8; 40]).unwrap().is_ok());
        }
        let views: Vec<Pinned> = (0..3)
            .map(|_| {
                let entry = consumer.read_next().unwrap().unwrap();
                consumer.pin(entry)
            })
            .collect();
        assert_eq!(producer.free().unwrap(), 256 - 3 * 48);
        let [first, second, third]: [Pinned; 3] = views.try_into().unwrap();
        // Dropping a later one first frees nothing: the head waits for the first.
        drop(third);
        assert_eq!(producer.free().unwrap(), 256 - 3 * 48);
        assert_eq!(&first[..], &[0u8; 40][..]);
        std::thread::spawn(move || assert_eq!(&second[..], &[1u8; 40][..]))
            .join()
            .unwrap();
        assert_eq!(
            producer.free().unwrap(),
            256 - 3 * 48,
            "the first holds the head"
        );
        assert_eq!(consumer.outstanding(), 1);
        drop(first);
        assert_eq!(producer.free().unwrap(), 256, "the drop released all three");
        assert_eq!(consumer.outstanding(), 0);
        // A view outlives its consumer (the mapping stays).
        assert!(producer.push(9, b"late").unwrap().is_ok());
        let entry = consumer.read_next().unwrap().unwrap();
        let late = consumer.pin(entry);
        drop(consumer);
        assert_eq!(&late[..], b"late");
        assert_eq!(consumer_status_round_trip(), 7);
    }

    /// A producer waiting for space held by views is woken by the drop of the view that frees
    /// it, in whatever thread, with no call of the consumer after it (its owner may sleep with
    /// nothing left to read). A view dropped out of order frees nothing and wakes nobody.
    #[test]
    fn dropping_the_view_that_frees_space_wakes_a_waiting_producer() {
        let (mut producer, mut consumer, _memory) = pair(256);
        let wakes = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&wakes);
        consumer.set_producer_waker(move || {
            counted.fetch_add(1, Ordering::SeqCst);
        });
        while producer.push(1, &[7; 40]).unwrap().is_ok() {}
        let mut views = Vec::new();
        while let Some(entry) = consumer.read_next().unwrap() {
            views.push(consumer.pin(entry));
        }
        assert_eq!(views.len(), 5);
        assert_eq!(consumer.read_next().unwrap(), None, "everything was read");
        assert!(producer.prepare_to_wait(40).unwrap(), "the producer waits");
        drop(views.pop());
        assert_eq!(
            wakes.load(Ordering::SeqCst),
            0,
            "out of order: nothing freed"
        );
        std::thread::spawn(move || drop(views)).join().unwrap();
        assert_eq!(
            wakes.load(Ordering::SeqCst),
            1,
            "the producer was not woken"
        );
        assert_eq!(producer.free().unwrap(), 256);
        assert_eq!(consumer.outstanding(), 0);
        // Without a waker the mark stays set for the consumer's next release to see.
        let (mut producer, mut consumer, _memory) = pair(256);
        while producer.push(1, &[7; 40]).unwrap().is_ok() {}
        let first = consumer.read_next().unwrap().unwrap();
        let view = consumer.pin(first);
        let second = consumer.read_next().unwrap().unwrap();
        assert!(producer.prepare_to_wait(40).unwrap());
        drop(view);
        assert!(consumer.release(second), "the mark was lost");
    }

    fn consumer_status_round_trip() -> u32 {
        let (producer, consumer, _memory) = pair(64);
        consumer.set_status(7);
        let watch = producer.head_watch();
        assert_eq!(watch.head(), 0);
        producer.consumer_status()
    }
}
