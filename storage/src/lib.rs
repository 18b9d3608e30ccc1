//! `starling-storage`: the per-core LSM engine of a Starling shard.
//!
//! One [`Engine`] runs inside one glommio executor (pinned to a core) and owns one data dir.
//! Writes go to an `O_DIRECT` write-ahead log with group commit and into an ordered memtable;
//! full memtables are flushed to SSTables (DMA-written, `mmap`-read, checksummed blocks with a
//! bloom filter) that leveled compaction merges on a low-priority task queue. Every entry
//! carries a [`Version`]; a write lands only if it is newer than the stored one (LWW).
//!
//! Map of the crate: `wal` (record codec, group-commit writer, replay), `memtable`, [`sst`]
//! (block, bloom, format, writer, reader), `manifest`, `compaction` (what to merge), `flush`
//! (background flush/compaction tasks), `recovery` (open), `engine` (the API).

mod codec;
mod compaction;
mod counters;
mod engine;
mod error;
mod flush;
#[doc(hidden)]
pub mod fuzzing;
/// The memtable, for the criterion benchmarks in `benches/` only (not a supported API).
#[doc(hidden)]
pub mod benching {
    pub use crate::memtable::Memtable;
}
mod manifest;
mod memtable;
mod merge;
mod notify;
mod recovery;
pub mod sst;
mod types;
mod wal;

pub use engine::Engine;
pub use error::{Error, Result};
pub use types::{
    Applied, BATCH_BYTES_HARD_MAX, BATCH_ENTRIES_HARD_MAX, Condition, Durability, Entry,
    KEY_BYTES_HARD_MAX, LATENCY_BOUNDS_US, LatencyHistogram, LevelStats, Limits, Options, Stats,
    VALUE_BYTES_HARD_MAX, Version,
};
