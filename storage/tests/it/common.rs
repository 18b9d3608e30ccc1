//! Helpers: run a future on a fresh glommio executor, make data dirs on a real filesystem.

use std::future::Future;
use std::path::Path;

use starling_storage::{Durability, Entry, Options, Version};

/// Runs `make()` to completion on a new glommio executor thread.
pub fn run<F, Fut, T>(make: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
    T: Send + 'static,
{
    glommio::LocalExecutorBuilder::default()
        .spawn(make)
        .expect("spawn executor")
        .join()
        .expect("executor thread")
}

/// A temporary dir under the target dir (not /tmp: tmpfs has no O_DIRECT).
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir")
}

/// Small-memtable options so tests exercise flushes and compactions.
pub fn small_options(dir: &Path) -> Options {
    let mut options = Options::new(dir);
    options.memtable_bytes_max = 64 << 10;
    options.wal_segment_bytes = 1 << 20;
    options.table_bytes_target = 64 << 10;
    options.l1_bytes_target = 256 << 10;
    options.durability = Durability::Sync;
    options
}

/// A put.
pub fn put(key: &[u8], value: &[u8], hlc: u64) -> Entry {
    Entry {
        key: key.to_vec(),
        value: Some(value.to_vec()),
        version: Version { hlc, node: 1 },
    }
}

/// A tombstone.
pub fn delete(key: &[u8], hlc: u64) -> Entry {
    Entry {
        key: key.to_vec(),
        value: None,
        version: Version { hlc, node: 1 },
    }
}
