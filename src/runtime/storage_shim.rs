//! TEMPORARY in-memory stand-in for `starling-storage` with its documented API, used until the
//! storage branch is merged. Deleted at merge.
#![allow(missing_docs, clippy::unused_async)]

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    pub hlc: u64,
    pub node: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
    pub version: Version,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    pub key_bytes_max: usize,
    pub value_bytes_max: usize,
    pub batch_entries_max: usize,
    pub batch_bytes_max: usize,
}
impl Default for Limits {
    fn default() -> Self {
        Limits {
            key_bytes_max: 4096,
            value_bytes_max: 1 << 20,
            batch_entries_max: 4096,
            batch_bytes_max: 16 << 20,
        }
    }
}
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    #[default]
    Sync,
    None,
}
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Condition {
    Absent,
    Present,
}
#[derive(Clone, Debug)]
pub struct Options {
    pub dir: PathBuf,
    pub durability: Durability,
    pub memtable_bytes_max: usize,
    pub limits: Limits,
}
impl Options {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Options {
            dir: dir.into(),
            durability: Durability::Sync,
            memtable_bytes_max: 64 << 20,
            limits: Limits::default(),
        }
    }
}
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{limit} exceeded: {actual} > {max}")]
    LimitExceeded {
        limit: &'static str,
        max: usize,
        actual: usize,
    },
    #[error("the engine is closed")]
    Closed,
}
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    pub applied: Vec<bool>,
}
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LevelStats {
    pub files: usize,
    pub bytes: u64,
}
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub bytes_user: u64,
    pub bytes_written_wal: u64,
    pub bytes_written_flush: u64,
    pub bytes_written_compaction: u64,
    pub write_amplification: f64,
    pub levels: Vec<LevelStats>,
    pub memtable_bytes: u64,
    pub syncs: u64,
    pub writes_synced: u64,
    pub duplicates_skipped: u64,
    pub wal_tail_records_dropped: u64,
    pub live_keys: u64,
    pub compactions: u64,
    pub flushes: u64,
}

pub struct Engine {
    map: RefCell<BTreeMap<Vec<u8>, Entry>>,
    hlc_max: std::cell::Cell<u64>,
}

impl Engine {
    pub async fn open(_options: Options) -> Result<Engine, Error> {
        Ok(Engine {
            map: RefCell::new(BTreeMap::new()),
            hlc_max: std::cell::Cell::new(0),
        })
    }
    pub async fn apply(&self, batch: Vec<Entry>) -> Result<Applied, Error> {
        let mut applied = Vec::new();
        {
            let mut map = self.map.borrow_mut();
            for e in batch {
                self.hlc_max.set(self.hlc_max.get().max(e.version.hlc));
                let newer = map.get(&e.key).is_none_or(|old| old.version < e.version);
                applied.push(newer);
                if newer {
                    map.insert(e.key.clone(), e);
                }
            }
        }
        glommio::yield_if_needed().await;
        Ok(Applied { applied })
    }
    pub async fn apply_if(&self, entry: Entry, condition: Condition) -> Result<bool, Error> {
        let live = self.get(&entry.key)?.is_some_and(|e| e.value.is_some());
        if live != (condition == Condition::Present) {
            return Ok(false);
        }
        Ok(self.apply(vec![entry]).await?.applied[0])
    }
    pub fn get(&self, key: &[u8]) -> Result<Option<Entry>, Error> {
        Ok(self.map.borrow().get(key).cloned())
    }
    pub fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, Error> {
        Ok(self
            .map
            .borrow()
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .filter(|(k, e)| e.value.is_some() && after.is_none_or(|a| k.as_slice() > a))
            .take(limit)
            .map(|(_, e)| e.clone())
            .collect())
    }
    pub fn live_keys(&self) -> u64 {
        self.map
            .borrow()
            .values()
            .filter(|e| e.value.is_some())
            .count() as u64
    }
    pub fn hlc_max(&self) -> u64 {
        self.hlc_max.get()
    }
    pub fn stats(&self) -> Stats {
        Stats {
            live_keys: self.live_keys(),
            ..Stats::default()
        }
    }
    pub async fn close(self) -> Result<(), Error> {
        Ok(())
    }
}
