//! Zero-copy send buffers (`cpg_zcb_*`): an arena in the connection's region that the client
//! allocates blocks from and fills in place. A send names a block (offset and length) in a
//! request record; the node copies the message out of the arena straight into the totem
//! message it builds (the one copy it must make anyway: the core keeps it for
//! retransmission), so the application's bytes are never copied by the client.
//!
//! A block can be sent again (Corosync's semantics): writing into it waits until the node has
//! read the previous send, which it has normally done long before — the wait is a check of the
//! request ring's head. A block dropped while a send is in flight returns to the free list
//! only once the node has read it.
//!
//! When the wait is real, the buffer asks the node to read up to its send and sleeps on a
//! futex on the request ring's head, which the node wakes once it has. The node reads that far
//! even while it holds this client's multicasts (a local receiver of them, maybe this client,
//! is behind on its events: the backlog throttle), since the thread waiting here may be the
//! one that would read those events — holding would wait for it forever. The wait ends without the read when the connection ends
//! (the handle finalized, the node gone): nobody reads the block any more.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::connection::PeerLink;
use super::ring::HeadWatch;
use super::shm::SharedMemory;
use crate::error::Error;

/// How long a wait for the node sleeps between looks at whether the connection ended.
const WAIT_SLICE: Duration = Duration::from_millis(100);

/// Blocks are multiples of this (and aligned to it).
const BLOCK_ALIGN: usize = 64;

/// Where the arena lies in a region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArenaBounds {
    /// Offset of the arena in the region.
    pub offset: usize,
    /// Its length.
    pub capacity: usize,
}

impl ArenaBounds {
    /// The region offset of the block (`offset`, `len`) a request names, if it lies inside
    /// the arena (the node checks every block a client names).
    #[must_use]
    pub fn block(&self, offset: u64, len: u64) -> Option<usize> {
        let end = offset.checked_add(len)?;
        (end <= self.capacity as u64).then(|| self.offset + offset as usize)
    }
}

/// Copies `len` bytes at region offset `at` (checked with [`ArenaBounds::block`]) to the end
/// of `out` (the node's side).
pub fn copy_block(memory: &SharedMemory, at: usize, len: usize, out: &mut Vec<u8>) {
    assert!(
        at.checked_add(len).is_some_and(|end| end <= memory.len()),
        "block outside the region"
    );
    out.reserve(len);
    let start = out.len();
    // SAFETY: the source lies inside the mapped region (asserted above); `out` has room for
    // `len` more bytes after `reserve`, and heap and shared memory cannot overlap. A client
    // writing into its block meanwhile can only change the bytes of its own message.
    unsafe {
        std::ptr::copy_nonoverlapping(memory.as_ptr().add(at), out.as_mut_ptr().add(start), len);
        out.set_len(start + len);
    }
}

#[derive(Debug, Default)]
struct Allocator {
    /// Free blocks: offset → length, coalesced.
    free: BTreeMap<usize, usize>,
    /// Blocks dropped while the node may still read them: (request position, offset, length).
    deferred: Vec<(u64, usize, usize)>,
}

impl Allocator {
    fn give_back(&mut self, offset: usize, len: usize) {
        let mut start = offset;
        let mut end = offset + len;
        if let Some((&before, &before_len)) = self.free.range(..offset).next_back()
            && before + before_len == start
        {
            self.free.remove(&before);
            start = before;
        }
        if let Some(after_len) = self.free.remove(&end) {
            end += after_len;
        }
        self.free.insert(start, end - start);
    }

    fn reclaim(&mut self, head: u64) {
        let mut index = 0;
        while index < self.deferred.len() {
            let (position, offset, len) = self.deferred[index];
            if position <= head {
                self.deferred.swap_remove(index);
                self.give_back(offset, len);
            } else {
                index += 1;
            }
        }
    }

    fn take(&mut self, len: usize) -> Option<usize> {
        let (&offset, &free) = self.free.iter().find(|&(_, &free)| free >= len)?;
        self.free.remove(&offset);
        if free > len {
            self.free.insert(offset + len, free - len);
        }
        Some(offset)
    }
}

#[derive(Debug)]
struct Shared {
    memory: Arc<SharedMemory>,
    bounds: ArenaBounds,
    allocator: Mutex<Allocator>,
    watch: HeadWatch,
    /// Wakes the node and tells whether it is gone (`None` in unit tests without a node, and
    /// once the connection ends: its duplicate of the socket must not keep the connection
    /// open).
    peer: Mutex<Option<PeerLink>>,
    /// Set when the connection ends: nobody reads the arena any more, so nothing waits.
    closed: AtomicBool,
}

/// The client's arena: hands out [`ZcbBuffer`]s.
#[derive(Clone, Debug)]
pub struct Arena {
    shared: Arc<Shared>,
}

impl Arena {
    /// The arena at `bounds` in `memory`, whose sends are consumed as `watch` shows; `peer`
    /// wakes the node when a buffer waits for it.
    #[must_use]
    pub fn new(
        memory: Arc<SharedMemory>,
        bounds: ArenaBounds,
        watch: HeadWatch,
        peer: Option<PeerLink>,
    ) -> Arena {
        let mut allocator = Allocator::default();
        if bounds.capacity >= BLOCK_ALIGN {
            allocator
                .free
                .insert(0, bounds.capacity / BLOCK_ALIGN * BLOCK_ALIGN);
        }
        Arena {
            shared: Arc::new(Shared {
                memory,
                bounds,
                allocator: Mutex::new(allocator),
                watch,
                peer: Mutex::new(peer),
                closed: AtomicBool::new(false),
            }),
        }
    }

    /// The arena's size: no buffer can be larger.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.shared.bounds.capacity
    }

    /// A buffer of `len` bytes (zeroed on first use of its memory, otherwise holding old
    /// bytes), or `None` when the arena has no free block that large now.
    #[must_use]
    pub fn alloc(&self, len: usize) -> Option<ZcbBuffer> {
        let size = len.max(1).div_ceil(BLOCK_ALIGN) * BLOCK_ALIGN;
        let mut allocator = self.lock();
        let offset = if let Some(offset) = allocator.take(size) {
            offset
        } else {
            allocator.reclaim(self.shared.watch.head());
            allocator.take(size)?
        };
        Some(ZcbBuffer {
            shared: Arc::clone(&self.shared),
            offset,
            size,
            len,
            in_flight: None,
        })
    }

    /// Whether `buffer` came from this arena.
    #[must_use]
    pub fn owns(&self, buffer: &ZcbBuffer) -> bool {
        Arc::ptr_eq(&self.shared, &buffer.shared)
    }

    /// The connection ended: buffers stop waiting for the node.
    pub fn close(&self) {
        self.shared.closed.store(true, Ordering::Release);
        *self
            .shared
            .peer
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Allocator> {
        self.shared
            .allocator
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// A block of the arena, readable and writable in place (`Deref<Target = [u8]>`, and
/// `DerefMut`, which first waits until the node has read this buffer's last send). Freed
/// when dropped (`cpg_zcb_free`).
#[derive(Debug)]
pub struct ZcbBuffer {
    shared: Arc<Shared>,
    /// Offset in the arena.
    offset: usize,
    /// Bytes reserved.
    size: usize,
    /// Bytes usable.
    len: usize,
    /// The request ring position the node must pass before this block may change.
    in_flight: Option<u64>,
}

impl ZcbBuffer {
    /// The block as a request names it: (offset in the arena, length).
    #[must_use]
    pub fn block(&self) -> (u64, u64) {
        (self.offset as u64, self.len as u64)
    }

    /// Whether the node may still be reading a send of this buffer.
    #[must_use]
    pub fn in_flight(&self) -> bool {
        self.in_flight
            .is_some_and(|position| position > self.shared.watch.head())
            && !self.shared.closed.load(Ordering::Acquire)
    }

    /// Records a send that the node has read once the request ring's head passes `position`.
    pub fn mark_sent(&mut self, position: u64) {
        self.in_flight = Some(position);
    }

    /// Waits until the node has read this buffer's last send, asleep until the node says it
    /// has (see the module's notes). `CS_ERR_LIBRARY` if the connection ended first: the
    /// node will not read the block any more, so writing into it is harmless then.
    pub fn wait_until_read(&mut self) -> Result<(), Error> {
        let Some(position) = self.in_flight else {
            return Ok(());
        };
        let shared = &self.shared;
        let mut asked = false;
        let mut tested = false;
        while self.in_flight() {
            let gone = {
                let peer = shared.peer.lock().unwrap_or_else(PoisonError::into_inner);
                match &*peer {
                    // No node to ask (unit tests drive the ring by hand).
                    None if !shared.closed.load(Ordering::Acquire) => None,
                    None => Some(true),
                    Some(peer) => {
                        if !asked {
                            shared.watch.await_read(position);
                            peer.wake();
                            asked = true;
                        }
                        Some(tested && peer.gone())
                    }
                }
            };
            match gone {
                None => std::thread::yield_now(),
                Some(true) => {
                    shared.closed.store(true, Ordering::Release);
                    self.in_flight = None;
                    return Err(Error::Library(
                        "the connection ended before the node read the buffer".into(),
                    ));
                }
                // Sleeps without the lock; whether the node is gone is asked after a slice
                // that timed out.
                Some(false) => tested = !shared.watch.wait_read(position, WAIT_SLICE),
            }
        }
        self.in_flight = None;
        Ok(())
    }

    /// A raw pointer to the block (for the Python buffer protocol); writes through it must
    /// follow [`ZcbBuffer::wait_until_read`].
    #[must_use]
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        // SAFETY: the block lies inside the arena, inside the mapped region (allocated from
        // the arena's bounds, checked at connect).
        unsafe {
            self.shared
                .memory
                .as_ptr()
                .add(self.shared.bounds.offset + self.offset)
        }
    }
}

impl std::ops::Deref for ZcbBuffer {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: the block lies inside the mapped region, which `self.shared` keeps alive; the
        // allocator hands it to this buffer alone. The node only reads it.
        unsafe {
            std::slice::from_raw_parts(
                self.shared
                    .memory
                    .as_ptr()
                    .add(self.shared.bounds.offset + self.offset),
                self.len,
            )
        }
    }
}

impl std::ops::DerefMut for ZcbBuffer {
    /// Waits first until the node has read the last send ([`ZcbBuffer::wait_until_read`]);
    /// if the connection ended meanwhile, the block is written all the same (nobody reads it
    /// any more; the next send says `CS_ERR_LIBRARY`).
    fn deref_mut(&mut self) -> &mut [u8] {
        let _ = self.wait_until_read();
        let len = self.len;
        let pointer = self.as_mut_ptr();
        // SAFETY: as in `deref`; the block is this buffer's alone and the node has finished
        // reading it (waited above), so this is the only access.
        unsafe { std::slice::from_raw_parts_mut(pointer, len) }
    }
}

impl Drop for ZcbBuffer {
    fn drop(&mut self) {
        let mut allocator = self
            .shared
            .allocator
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match self.in_flight {
            Some(position) if self.in_flight() => {
                allocator.deferred.push((position, self.offset, self.size));
            }
            _ => allocator.give_back(self.offset, self.size),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipc::ring::{self, Consumer, Producer};

    fn arena(capacity: usize) -> (Arena, Producer, Consumer) {
        let ring_capacity = 1024;
        let memory = Arc::new(
            SharedMemory::create("zcb-test", ring::footprint(ring_capacity) + capacity).unwrap(),
        );
        ring::initialize(&memory, 0, ring_capacity).unwrap();
        let producer = Producer::new(Arc::clone(&memory), 0, ring_capacity).unwrap();
        let consumer = Consumer::new(Arc::clone(&memory), 0, ring_capacity).unwrap();
        let bounds = ArenaBounds {
            offset: ring::footprint(ring_capacity),
            capacity,
        };
        (
            Arena::new(memory, bounds, producer.head_watch(), None),
            producer,
            consumer,
        )
    }

    #[test]
    fn blocks_are_disjoint_and_come_back_coalesced() {
        let (arena, _producer, _consumer) = arena(4096);
        let mut a = arena.alloc(100).unwrap();
        let mut b = arena.alloc(1000).unwrap();
        a.fill(1);
        b.fill(2);
        assert!(a.iter().all(|&x| x == 1) && b.iter().all(|&x| x == 2));
        assert_eq!((a.len(), b.len()), (100, 1000));
        assert!(arena.alloc(4096).is_none(), "no block that large is free");
        drop(a);
        drop(b);
        let whole = arena.alloc(4096).expect("coalesced again");
        assert_eq!(whole.block(), (0, 4096));
    }

    #[test]
    fn a_sent_block_waits_for_the_node_before_changing_or_being_reused() {
        let (arena, mut producer, mut consumer) = arena(128);
        let mut buffer = arena.alloc(128).unwrap();
        buffer.fill(7);
        let (offset, len) = buffer.block();
        assert!(producer.push(1, &offset.to_le_bytes()).unwrap().is_ok());
        buffer.mark_sent(producer.position());
        assert!(buffer.in_flight());
        drop(buffer);
        assert!(arena.alloc(64).is_none(), "the node has not read it yet");
        // The node reads the block, then releases the request.
        let entry = consumer.read_next().unwrap().unwrap();
        let bounds = arena.shared.bounds;
        let at = bounds.block(offset, len).unwrap();
        let mut copied = Vec::new();
        copy_block(&arena.shared.memory, at, len as usize, &mut copied);
        assert_eq!(copied, vec![7u8; 128]);
        let _ = consumer.release(entry);
        assert!(
            arena.alloc(128).is_some(),
            "reclaimed after the node read it"
        );
        assert_eq!(bounds.block(100, 29), None, "beyond the arena");
        assert_eq!(bounds.block(u64::MAX, 2), None);
    }

    #[test]
    fn writing_into_a_sent_block_waits_for_the_read() {
        let (arena, mut producer, mut consumer) = arena(64);
        let mut buffer = arena.alloc(64).unwrap();
        assert!(producer.push(1, b"send").unwrap().is_ok());
        buffer.mark_sent(producer.position());
        let node = std::thread::spawn(move || {
            loop {
                if let Some(entry) = consumer.read_next().unwrap() {
                    let _ = consumer.release(entry);
                    return;
                }
                std::thread::yield_now();
            }
        });
        buffer.fill(3); // waits for the thread above
        assert!(!buffer.in_flight());
        node.join().unwrap();
        // After the connection ends nothing waits, whatever the ring says.
        assert!(producer.push(1, b"again").unwrap().is_ok());
        buffer.mark_sent(producer.position());
        assert!(buffer.in_flight());
        arena.close();
        assert!(!buffer.in_flight());
        buffer.fill(4);
    }
}
