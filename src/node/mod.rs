//! The node (executive): drives the protocol core with real UDP sockets and a real clock.
//!
//! Everything here is I/O and bookkeeping; protocol decisions stay in [`crate::totem`].

pub mod busy_poll;
pub mod clients;
pub mod clock;
pub mod config_file;
pub mod control;
pub mod cpg;
pub mod crypto;
pub mod driver;
pub mod embedded;
pub mod evs;
pub mod services;
pub mod state_file;
pub mod transport;
pub mod workload;
