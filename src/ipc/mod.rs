//! Local IPC between client processes and their node: per connection, shared-memory rings in
//! a sealed memfd (a request ring, client → node, and an event ring, node → client).
//!
//! The only module with `unsafe` code; every block carries a `// SAFETY:` comment.
#![allow(
    unsafe_code,
    reason = "shared memory needs raw pointers; confined to this module"
)]

pub mod connection;
pub mod ring;
pub mod shm;
pub mod zcb;
