//! Replication: hybrid logical clocks ([`hlc`]), rumor dissemination, anti-entropy and write acks, as a sans-IO state machine
//! per shard ([`replicator::Replicator`]), plus the message codec ([`wire`]) and the tombstone
//! GC / resync decision ([`gc`]).
//!
//! Nothing here owns a socket, a file or a clock: the runtime (and `starling-sim`) feed events
//! with the current time and perform the returned actions.

pub mod anti_entropy;
pub mod cpisync;
pub mod dissemination;
pub mod gc;
pub mod hlc;
pub mod replicator;
pub mod ring;
pub mod store;
pub mod types;
pub mod wire;

pub use replicator::{Ack, Action, AntiEntropyMode, Config, Context, Replicator, Stats};
pub use store::{MemStore, Store};
pub use types::{Entry, NodeId, Peer, PeerInfo, Version};

#[cfg(test)]
mod replicator_tests;
#[cfg(test)]
mod wire_tests;
