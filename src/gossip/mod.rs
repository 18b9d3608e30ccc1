//! Gossip: the authenticated datagram format and SWIM/Lifeguard membership, as sans-IO code.
//!
//! - [`wire`]: datagram header, keyed MAC, keyring (rotation), message-kind ranges.
//! - [`replay`]: per-sender sliding replay windows, applied after [`wire::open`].
//! - [`membership`]: the membership and failure-detection state machine (quinn-proto style).
//!
//! **Architecture invariant:** nothing here touches a socket, a clock or an OS RNG: time comes
//! in as `now` (milliseconds), randomness from a seeded PRNG owned by the state machine, bytes
//! go out through `poll_transmit`. The runtime and the simulator drive the same code.

pub mod membership;
pub mod replay;
pub mod wire;

pub use wire::{Kind, KindRange, NodeId};
