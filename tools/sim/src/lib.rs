//! `starling-sim`: N nodes' real replication state machines on a virtual clock.
//!
//! One seeded `SmallRng` drives everything (network draws, write origins, crash times, and the
//! seeds of every node's own RNG), and events are processed in `(time, sequence)` order, so the
//! same configuration and seed replay the same run bit for bit.
//!
//! **Architecture invariant:** the simulator only moves bytes and time; every protocol decision
//! is made by the same `starling::replication` code the runtime drives.

mod members;
pub mod network;
pub mod queue;
pub mod report;
pub mod world;

pub use report::Report;
pub use world::{SimConfig, run};
