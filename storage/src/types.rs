//! The public data types: versions, entries, limits, options, stats.

use std::path::PathBuf;

use crate::error::{Error, Result};

/// Hard maximum key size in bytes (the data model's limit).
pub const KEY_BYTES_HARD_MAX: usize = 4096;
/// Hard maximum value size in bytes.
pub const VALUE_BYTES_HARD_MAX: usize = 1 << 20;
/// Hard maximum of entries per batch.
pub const BATCH_ENTRIES_HARD_MAX: usize = 65_536;
/// Hard maximum of bytes per batch.
pub const BATCH_BYTES_HARD_MAX: usize = 64 << 20;

/// `(hlc, node)`: the field order gives the total order (larger hlc wins, then larger node).
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    /// Hybrid logical clock: 48-bit physical milliseconds + 16-bit logical counter.
    pub hlc: u64,
    /// The node that wrote the version (tie breaker).
    pub node: u64,
}

/// One stored entry; `value: None` is a tombstone.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The key, 1..=`key_bytes_max` bytes.
    pub key: Vec<u8>,
    /// The value, or `None` for a tombstone.
    pub value: Option<Vec<u8>>,
    /// The version; the larger version wins.
    pub version: Version,
}

impl Entry {
    /// Key plus value bytes (what `Stats::bytes_user` counts).
    pub fn user_bytes(&self) -> usize {
        self.key.len() + self.value.as_ref().map_or(0, Vec::len)
    }
}

/// Size limits; they can only be lowered below the hard maxima.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest key in bytes (hard max 4,096).
    pub key_bytes_max: usize,
    /// Largest value in bytes (hard max 1 MiB).
    pub value_bytes_max: usize,
    /// Most entries in one `apply` batch.
    pub batch_entries_max: usize,
    /// Most key+value bytes in one `apply` batch.
    pub batch_bytes_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            key_bytes_max: KEY_BYTES_HARD_MAX,
            value_bytes_max: VALUE_BYTES_HARD_MAX,
            batch_entries_max: 4096,
            batch_bytes_max: 16 << 20,
        }
    }
}

impl Limits {
    fn validate(&self) -> Result<()> {
        let checks = [
            ("key_bytes_max", self.key_bytes_max, KEY_BYTES_HARD_MAX),
            (
                "value_bytes_max",
                self.value_bytes_max,
                VALUE_BYTES_HARD_MAX,
            ),
            (
                "batch_entries_max",
                self.batch_entries_max,
                BATCH_ENTRIES_HARD_MAX,
            ),
            (
                "batch_bytes_max",
                self.batch_bytes_max,
                BATCH_BYTES_HARD_MAX,
            ),
        ];
        for (name, value, hard_max) in checks {
            if value > hard_max {
                return Err(Error::InvalidOptions(format!(
                    "Limits::{name} = {value} is above the hard maximum {hard_max}; limits can only be lowered"
                )));
            }
            if value == 0 {
                return Err(Error::InvalidOptions(format!(
                    "Limits::{name} must be at least 1"
                )));
            }
        }
        Ok(())
    }

    /// Checks one entry against the key and value limits.
    pub(crate) fn check_entry(&self, entry: &Entry) -> Result<()> {
        if entry.key.is_empty() {
            return Err(Error::LimitExceeded {
                limit: "key_bytes_min",
                max: 1,
                actual: 0,
            });
        }
        check_limit("key_bytes_max", self.key_bytes_max, entry.key.len())?;
        if let Some(value) = &entry.value {
            check_limit("value_bytes_max", self.value_bytes_max, value.len())?;
        }
        Ok(())
    }

    /// Checks a whole batch: entry count, total bytes, and every entry.
    pub(crate) fn check_batch(&self, batch: &[Entry]) -> Result<()> {
        check_limit("batch_entries_max", self.batch_entries_max, batch.len())?;
        let bytes: usize = batch.iter().map(Entry::user_bytes).sum();
        check_limit("batch_bytes_max", self.batch_bytes_max, bytes)?;
        batch.iter().try_for_each(|e| self.check_entry(e))
    }
}

fn check_limit(limit: &'static str, max: usize, actual: usize) -> Result<()> {
    if actual > max {
        return Err(Error::LimitExceeded { limit, max, actual });
    }
    Ok(())
}

/// When an `apply` resolves.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// After the group commit holding the write is on disk (fdatasync).
    #[default]
    Sync,
    /// Immediately; the WAL is written in the background without fdatasync (benchmarks).
    None,
}

/// A precondition for `Engine::apply_if`, evaluated on the live (non-tombstone) state.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Condition {
    /// Write only if the key has no live value (SET NX).
    Absent,
    /// Write only if the key has a live value (SET XX).
    Present,
}

/// Engine options; every tuning knob has a default.
#[derive(Clone, Debug)]
pub struct Options {
    /// The data directory (created if missing); must support `O_DIRECT`.
    pub dir: PathBuf,
    /// When writes are acknowledged.
    pub durability: Durability,
    /// Memtable size that triggers a flush: its arena's real bytes (nodes, keys, values).
    /// Up to two memtables exist at once (one being flushed).
    pub memtable_bytes_max: usize,
    /// Table bytes that may stay mapped into the process (its file-backed RSS): past this,
    /// the tables' data pages are unmapped (they stay in the page cache).
    pub table_mapped_bytes_max: usize,
    /// Size limits.
    pub limits: Limits,
    /// Preallocated size of one WAL segment file.
    pub wal_segment_bytes: u64,
    /// Target size of one SSTable produced by compaction.
    pub table_bytes_target: u64,
    /// Number of L0 tables that triggers an L0 -> L1 compaction.
    pub l0_compaction_trigger: usize,
    /// Target size of L1; each deeper level is `level_size_multiplier` times larger.
    pub l1_bytes_target: u64,
    /// Growth factor between levels.
    pub level_size_multiplier: u64,
    /// Run compactions automatically in the background (tests may turn this off).
    pub background_compaction: bool,
    /// Share of the compaction task queue (foreground queue has 1000).
    pub compaction_shares: usize,
}

impl Options {
    /// Defaults for `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Options {
            dir: dir.into(),
            durability: Durability::Sync,
            memtable_bytes_max: 64 << 20,
            table_mapped_bytes_max: 64 << 20,
            limits: Limits::default(),
            wal_segment_bytes: 64 << 20,
            table_bytes_target: 32 << 20,
            l0_compaction_trigger: 4,
            l1_bytes_target: 256 << 20,
            level_size_multiplier: 10,
            background_compaction: true,
            compaction_shares: 100,
        }
    }

    /// Rejects options the engine cannot honour.
    pub(crate) fn validate(&self) -> Result<()> {
        self.limits.validate()?;
        let positive = [
            ("memtable_bytes_max", self.memtable_bytes_max as u64),
            ("table_mapped_bytes_max", self.table_mapped_bytes_max as u64),
            ("wal_segment_bytes", self.wal_segment_bytes),
            ("table_bytes_target", self.table_bytes_target),
            ("l0_compaction_trigger", self.l0_compaction_trigger as u64),
            ("l1_bytes_target", self.l1_bytes_target),
            ("compaction_shares", self.compaction_shares as u64),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(Error::InvalidOptions(format!("{name} must be positive")));
            }
        }
        if self.level_size_multiplier < 2 {
            return Err(Error::InvalidOptions(
                "level_size_multiplier must be at least 2".into(),
            ));
        }
        Ok(())
    }
}

/// The outcome of `Engine::apply`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Per input index: was the entry newer than the stored one (and so written)?
    pub applied: Vec<bool>,
}

impl Applied {
    /// How many entries were written.
    pub fn count(&self) -> usize {
        self.applied.iter().filter(|a| **a).count()
    }
}

/// Files and bytes of one LSM level.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LevelStats {
    /// Number of tables.
    pub files: usize,
    /// Total bytes of the tables.
    pub bytes: u64,
}

/// Upper bounds of the [`LatencyHistogram`] buckets in microseconds (a last, unbounded bucket
/// follows): from a cache-flush on a fast NVMe device to a stalled disk.
pub const LATENCY_BOUNDS_US: [u64; 14] = [
    25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
];

/// A latency distribution: counts per bucket of [`LATENCY_BOUNDS_US`] (not cumulative; the last
/// bucket is everything slower) and the sum, like a Prometheus histogram.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LatencyHistogram {
    /// Count per bucket; index `LATENCY_BOUNDS_US.len()` is the unbounded one.
    pub buckets: [u64; LATENCY_BOUNDS_US.len() + 1],
    /// Sum of all recorded latencies in microseconds.
    pub sum_us: u64,
}

impl LatencyHistogram {
    /// Records one latency.
    pub fn record(&mut self, latency: std::time::Duration) {
        let (bucket, us) = Self::bucket_of(latency);
        self.buckets[bucket] += 1;
        self.sum_us = self.sum_us.saturating_add(us);
    }

    /// The bucket a latency falls in (the first whose bound is not below it) and the latency in
    /// whole microseconds (saturating): what every histogram over [`LATENCY_BOUNDS_US`] records.
    pub fn bucket_of(latency: std::time::Duration) -> (usize, u64) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        (LATENCY_BOUNDS_US.partition_point(|&bound| bound < us), us)
    }

    /// Latencies recorded.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

/// Engine counters.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Key+value bytes of applied entries.
    pub bytes_user: u64,
    /// Bytes written to the WAL (including alignment rewrites of the tail block and, in
    /// `Durability::Sync`, the zeros written ahead of the log).
    pub bytes_written_wal: u64,
    /// Bytes of tables written by memtable flushes.
    pub bytes_written_flush: u64,
    /// Bytes of tables written by compactions.
    pub bytes_written_compaction: u64,
    /// `(wal + flush + compaction) / user`, 0 before any write.
    pub write_amplification: f64,
    /// Per level (index 0 = L0).
    pub levels: Vec<LevelStats>,
    /// Bytes of the memtables (active + immutable): their arenas' real size.
    pub memtable_bytes: u64,
    /// Upper bound of the table bytes mapped into the process (fault-around windows touched).
    pub table_mapped_bytes: u64,
    /// How often the tables' data pages were unmapped to stay within
    /// `Options::table_mapped_bytes_max`.
    pub table_mapped_releases: u64,
    /// fdatasync calls on the WAL.
    pub syncs: u64,
    /// Batches made durable by those syncs (`writes_synced / syncs` = group commit factor).
    pub writes_synced: u64,
    /// Time of each WAL group's `O_DIRECT` write, from submission to completion as the writer
    /// task sees it (device time plus the wait for the executor to reap it).
    pub wal_write_latency: LatencyHistogram,
    /// Time of each WAL fdatasync, measured the same way (the `etcd_disk_wal_fsync_duration`
    /// of this engine).
    pub wal_sync_latency: LatencyHistogram,
    /// Entries not written because their version was not newer.
    pub duplicates_skipped: u64,
    /// Torn WAL tail records dropped at recovery.
    pub wal_tail_records_dropped: u64,
    /// Exact count of keys with a live value.
    pub live_keys: u64,
    /// Compactions run.
    pub compactions: u64,
    /// Memtable flushes run.
    pub flushes: u64,
}

#[cfg(test)]
mod latency_tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn latencies_land_in_the_first_bucket_whose_bound_is_not_below_them() {
        let mut histogram = LatencyHistogram::default();
        for micros in [0, 25, 26, 1_000, 1_000_001] {
            histogram.record(Duration::from_micros(micros));
        }
        histogram.record(Duration::MAX);
        let last = LATENCY_BOUNDS_US.len();
        let mut expected = [0u64; LATENCY_BOUNDS_US.len() + 1];
        expected[0] = 2; // 0 and 25 (bounds are inclusive)
        expected[1] = 1; // 26
        expected[5] = 1; // 1,000
        expected[last] = 2; // above the largest bound, and Duration::MAX
        assert_eq!(histogram.buckets, expected);
        assert_eq!(histogram.count(), 6);
        assert_eq!(histogram.sum_us, u64::MAX, "the sum saturates");
    }
}
