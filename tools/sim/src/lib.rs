//! `starling-sim`: N nodes' real replication state machines on a virtual clock.
//!
//! One seeded RNG (xoshiro256++) drives everything (network draws, write origins, crash times,
//! and the seeds of every node's own RNG), and events are processed in `(time, sequence)` order,
//! so the same configuration and seed replay the same run bit for bit. A long run can save
//! itself and resume later ([`snapshot`]) with the same outcome.
//!
//! **Architecture invariant:** the simulator only moves bytes and time; every protocol decision
//! is made by the same `starling::replication` code the runtime drives.

mod members;
pub mod network;
pub mod queue;
pub mod report;
pub mod snapshot;
pub mod world;

pub use report::Report;
pub use snapshot::{SnapshotError, SnapshotPlan};
pub use world::{SimConfig, resume, run, run_saving};
