//! The EVS service (extended virtual synchrony, Corosync's `evs_*`): group keys as local receive
//! filters, multicasts to joined or given groups in the totem stream's order, and every totem
//! configuration, transitional and regular, for every connection. [`service`] has the semantics
//! and the Corosync facts they rest on; [`Sessions`] is what the node's IPC layer calls.

pub mod records;
pub mod service;
pub mod sessions;
pub mod wire;

#[cfg(test)]
mod tests;

pub use service::{ConnId, Event, Output, Service};
pub use sessions::{EvsCounters, Served, Sessions};
pub use wire::{GROUPS_JOINED_MAX, Key};
