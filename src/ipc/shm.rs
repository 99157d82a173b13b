//! Shared memory between the node and one client: a sealed memfd mapped read-write in both
//! processes. The only place that maps or unmaps memory.
//!
//! The node creates the memfd and seals its size before handing it over, so a client cannot
//! shrink it under the node's feet (which would turn the node's next access into SIGBUS).

use std::io;
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;

use nix::fcntl::{FcntlArg, SealFlag, fcntl};
use nix::sys::memfd::{MFdFlags, memfd_create};
use nix::sys::mman::{MapFlags, ProtFlags, mmap, munmap};
use nix::sys::stat::fstat;
use nix::unistd::ftruncate;

/// A mapping of a memfd, shared with another process.
#[derive(Debug)]
pub struct SharedMemory {
    ptr: NonNull<u8>,
    len: usize,
    fd: OwnedFd,
}

// SAFETY: the mapping is plain memory owned by this value until drop; every access to its
// contents goes through the atomics and bounds-checked copies of `ring`, which are sound from
// any thread.
unsafe impl Send for SharedMemory {}
// SAFETY: as above: `&SharedMemory` only hands out the base pointer and length.
unsafe impl Sync for SharedMemory {}

impl SharedMemory {
    /// A new zeroed region of `len` bytes, sealed against resizing.
    pub fn create(name: &str, len: usize) -> io::Result<SharedMemory> {
        let fd = memfd_create(name, MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING)?;
        ftruncate(&fd, i64::try_from(len).map_err(io::Error::other)?)?;
        fcntl(
            &fd,
            FcntlArg::F_ADD_SEALS(
                SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL,
            ),
        )?;
        SharedMemory::map(fd, len)
    }

    /// Maps a region received from the node. Its size must be `expected` bytes and sealed:
    /// anything else is refused.
    pub fn open(fd: OwnedFd, expected: usize) -> io::Result<SharedMemory> {
        let size = usize::try_from(fstat(&fd)?.st_size).unwrap_or(0);
        if size != expected {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("shared memory of {size} bytes, expected {expected}"),
            ));
        }
        let seals = fcntl(&fd, FcntlArg::F_GET_SEALS)?;
        let needed = SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW;
        if !SealFlag::from_bits_truncate(seals).contains(needed) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "shared memory that can be resized is refused",
            ));
        }
        SharedMemory::map(fd, expected)
    }

    fn map(fd: OwnedFd, len: usize) -> io::Result<SharedMemory> {
        let length = NonZeroUsize::new(len).ok_or_else(|| io::Error::other("empty region"))?;
        // SAFETY: a fresh shared mapping of a file we hold open; no existing Rust reference
        // aliases it. It is unmapped exactly once, in Drop.
        let ptr = unsafe {
            mmap(
                None,
                length,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                &fd,
                0,
            )?
        };
        Ok(SharedMemory {
            ptr: ptr.cast(),
            len,
            fd,
        })
    }

    /// The memfd (to pass to the other process).
    #[must_use]
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The base address of the mapping.
    #[must_use]
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Its length in bytes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it is empty (never: regions are at least one page).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for SharedMemory {
    fn drop(&mut self) {
        // SAFETY: the mapping was created by `map` with this pointer and length and is not
        // used after drop (rings hold an `Arc<SharedMemory>`).
        let _ = unsafe { munmap(self.ptr.cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::cast_ptr_alignment, reason = "mappings are page-aligned")]
    fn a_region_is_shared_through_its_fd_and_sealed() {
        let first = SharedMemory::create("test", 8192).unwrap();
        let fd = first.fd().try_clone_to_owned().unwrap();
        let second = SharedMemory::open(fd, 8192).unwrap();
        // Two mappings of one file: what one writes the other reads.
        // SAFETY: both pointers are valid for 8192 bytes and 8-aligned (page-aligned).
        unsafe {
            first.as_ptr().cast::<u64>().write_volatile(0xDEAD_BEEF);
            assert_eq!(second.as_ptr().cast::<u64>().read_volatile(), 0xDEAD_BEEF);
        }
        assert!(
            ftruncate(first.fd(), 4096).is_err(),
            "sealed against shrinking"
        );
        let wrong = first.fd().try_clone_to_owned().unwrap();
        assert!(SharedMemory::open(wrong, 4096).is_err());
        let unsealed = memfd_create("x", MFdFlags::MFD_CLOEXEC).unwrap();
        ftruncate(&unsealed, 4096).unwrap();
        assert!(SharedMemory::open(unsealed, 4096).is_err());
    }
}
