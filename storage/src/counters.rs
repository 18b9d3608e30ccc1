//! Engine counters shared by the foreground and the background tasks (`Cell`s, and `RefCell`s
//! for the latency histograms, borrowed only between awaits: one executor thread).

use std::cell::{Cell, RefCell};

use crate::types::LatencyHistogram;

/// Monotonic counters behind `Stats`.
#[derive(Debug, Default)]
pub struct Counters {
    /// Key+value bytes of applied entries.
    pub bytes_user: Cell<u64>,
    /// Physical bytes written to WAL segments.
    pub bytes_written_wal: Cell<u64>,
    /// Table bytes written by flushes.
    pub bytes_written_flush: Cell<u64>,
    /// Table bytes written by compactions.
    pub bytes_written_compaction: Cell<u64>,
    /// WAL fdatasync calls.
    pub syncs: Cell<u64>,
    /// Apply batches made durable by those fdatasyncs.
    pub writes_synced: Cell<u64>,
    /// Entries skipped because not newer.
    pub duplicates_skipped: Cell<u64>,
    /// Torn WAL tail records dropped at open.
    pub wal_tail_records_dropped: Cell<u64>,
    /// Compactions finished.
    pub compactions: Cell<u64>,
    /// Flushes finished.
    pub flushes: Cell<u64>,
    /// WAL group writes, submission to completion.
    pub wal_write_latency: RefCell<LatencyHistogram>,
    /// WAL fdatasyncs, submission to completion.
    pub wal_sync_latency: RefCell<LatencyHistogram>,
}

/// Adds `delta` to a counter.
pub fn add(counter: &Cell<u64>, delta: u64) {
    counter.set(counter.get() + delta);
}
