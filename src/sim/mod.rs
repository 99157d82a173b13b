//! The deterministic simulator (feature `sim`): N protocol cores on a virtual clock over a
//! seeded faulty network, a seeded workload, recorded histories and the property checkers.
//!
//! One seed reproduces one run exactly: every random choice (options, network, workload, the
//! cores' own PRNGs) is drawn from streams derived from it.

pub mod checker;
pub mod cluster;
pub mod faults;
pub mod history;
pub mod network;
pub mod options;
pub mod workload;

pub use cluster::{Cluster, Outcome, Stats, run};
pub use options::{Faults, Options};
