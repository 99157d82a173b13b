//! The Totem single-ring protocol core: a pure state machine (sans-IO).
//!
//! Determinism contract: the core holds no sockets, no clock, no threads and no global
//! randomness. Time is always an argument ([`crate::time::Instant`]), randomness comes from
//! its own seeded [`crate::prng::Prng`], and no iteration order depends on a randomized hash.
//! The same inputs therefore give the same outputs, under the real driver and the simulator.
//!
//! See [`Node`] for the polling order.

pub mod config;
pub mod events;
mod membership;
mod node;
mod ordering;
mod reconfigure;
pub mod timers;
mod token;
pub mod wire;

pub use config::Config;
#[cfg(feature = "sim")]
pub use config::PlantedBug;
pub use events::{
    Configuration, ConfigurationKind, Counters, Delivery, Destination, Event, Position, Transmit,
};
pub use node::{Node, State};
