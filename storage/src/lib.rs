//! `starling-storage`: the per-core LSM engine of a Starling shard.
