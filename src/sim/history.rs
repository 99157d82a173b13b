//! The simulator records the crate's [`crate::history`] model.

pub use crate::history::*;
