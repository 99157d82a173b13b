//! The CPG service (closed process groups): its messages in the totem stream and its state
//! machine. The node wires it to the core and to the clients' rings.

pub mod records;
pub mod service;
pub mod wire;

#[cfg(test)]
mod tests;

pub use service::{Address, ClientEvent, ConnId, ConnState, Output, Service};
