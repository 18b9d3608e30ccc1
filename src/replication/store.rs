//! The replicator's read-only view of storage, and an in-memory store for tests and the
//! simulator.
//!
//! Reads are synchronous (the engine's `get` and iteration are); writes are *not* made through
//! this trait: the replicator emits `Action::Apply` and learns the outcome from
//! `Replicator::applied` once the batch is durable, which keeps the core sans-IO.

use std::collections::BTreeMap;

use super::types::{Entry, Version, partition_of};

/// What the replicator reads from its shard's storage.
pub trait Store {
    /// The stored version of `key` (tombstones included), if any.
    fn version(&self, key: &[u8]) -> Option<Version>;
    /// The stored entry of `key` (tombstones included), if any.
    fn entry(&self, key: &[u8]) -> Option<Entry>;
    /// Calls `visit` for every stored entry of `partition` (tombstones included).
    fn for_each_in_partition(&self, partition: u16, visit: &mut dyn FnMut(&Entry));
}

/// An in-memory, version-aware store: one ordered map per partition.
#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Debug)]
pub struct MemStore {
    partitions: Vec<BTreeMap<Vec<u8>, Entry>>,
}

impl MemStore {
    /// An empty store for a cluster with `partitions` partitions.
    pub fn new(partitions: u16) -> MemStore {
        assert!(partitions > 0, "a cluster has at least one partition");
        MemStore {
            partitions: vec![BTreeMap::new(); usize::from(partitions)],
        }
    }

    /// Applies `batch` version-aware; returns per entry whether it was newer (and written).
    pub fn apply(&mut self, batch: &[Entry]) -> Vec<bool> {
        batch.iter().map(|entry| self.apply_one(entry)).collect()
    }

    fn apply_one(&mut self, entry: &Entry) -> bool {
        let partition = partition_of(&entry.key, self.partitions.len() as u16);
        let map = &mut self.partitions[usize::from(partition)];
        match map.get(&entry.key) {
            Some(stored) if stored.version >= entry.version => false,
            _ => {
                map.insert(entry.key.clone(), entry.clone());
                true
            }
        }
    }

    /// One page of a bulk pull, as the transfer stream serves it: stored entries (tombstones
    /// included) of the partitions `keep` accepts, in key order strictly after `after`, at
    /// most `limit`; and whether more follow.
    pub fn entries_page(
        &self,
        after: Option<&[u8]>,
        keep: &dyn Fn(u16) -> bool,
        limit: usize,
    ) -> (Vec<Entry>, bool) {
        use std::ops::Bound;
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut page: Vec<Entry> = (0u16..)
            .zip(&self.partitions)
            .filter(|(partition, _)| keep(*partition))
            .flat_map(|(_, map)| {
                map.range::<[u8], _>((lower, Bound::Unbounded))
                    .take(limit + 1)
                    .map(|(_, entry)| entry.clone())
            })
            .collect();
        page.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        let more = page.len() > limit;
        page.truncate(limit);
        (page, more)
    }

    /// Number of stored entries, tombstones included.
    pub fn len(&self) -> usize {
        self.partitions.iter().map(BTreeMap::len).sum()
    }

    /// Whether the store holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every entry (a crash that lost the data directory).
    pub fn clear(&mut self) {
        self.partitions.iter_mut().for_each(BTreeMap::clear);
    }

    fn map_of(&self, key: &[u8]) -> &BTreeMap<Vec<u8>, Entry> {
        &self.partitions[usize::from(partition_of(key, self.partitions.len() as u16))]
    }
}

impl Store for MemStore {
    fn version(&self, key: &[u8]) -> Option<Version> {
        self.map_of(key).get(key).map(|entry| entry.version)
    }

    fn entry(&self, key: &[u8]) -> Option<Entry> {
        self.map_of(key).get(key).cloned()
    }

    fn for_each_in_partition(&self, partition: u16, visit: &mut dyn FnMut(&Entry)) {
        if let Some(map) = self.partitions.get(usize::from(partition)) {
            map.values().for_each(visit);
        }
    }
}
