//! totemcast: group communication with extended virtual synchrony.
//!
//! Processes join named groups, see agreed membership changes and multicast messages that
//! every member delivers in the same total order, over the Totem single-ring protocol. The
//! API has the shape of Corosync's CPG and EVS libraries.
//!
//! Layers (bottom up): the sans-IO protocol core, the node (driver, services, IPC), the
//! client libraries, and the Python binding (feature `python`). This crate builds and tests
//! without Python.

pub mod api;
pub mod bench;
pub mod cli;
mod client;
pub mod cpg;
pub mod error;
pub mod evs;
pub mod history;
pub mod ids;
pub mod ipc;
pub mod node;
pub mod prng;
pub mod time;
pub mod totem;

#[cfg(feature = "sim")]
pub mod sim;

#[cfg(feature = "python")]
mod python;

pub use error::{CsError, Error, Result};
pub use node::embedded::Node;
