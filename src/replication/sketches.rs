//! One partition's CPISync sketch with its element → key index, kept in step with the store.
//!
//! The replicator feeds every entry that becomes durable (local writes, applied rumors and sync
//! entries) through [`PartitionIndex::observe`], which replaces the key's old element by the new
//! one (last writer wins, like the store). Tombstones are entries too and stay in the set.
//! Anything the replicator does not see (tombstone GC, a lost data directory, writes made
//! around it) is caught by comparing the index's digest with the store's digest before a
//! session: a mismatch rebuilds the index from `Store::for_each_in_partition`.
//!
//! Memory: a `PartitionSketch` is ~256 KiB plus its element set; the index adds about
//! (key length + 60) bytes per entry.

use std::collections::HashMap;

use crate::reconcile::{self, PartitionSketch};

use super::store::Store;
use super::types::{Entry, Version, element_of};
use super::wire::Digest;

/// Sketch, element → key index and digest of one partition.
#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
pub struct PartitionIndex {
    sketch: PartitionSketch,
    by_key: HashMap<Vec<u8>, (Version, u64)>,
    by_element: HashMap<u64, Vec<u8>>,
    digest: Digest,
}

/// The reconcile element of an entry (distinct from the digest's `types::element_of`).
pub fn reconcile_element(key: &[u8], version: Version) -> u64 {
    reconcile::element_of(key, &reconcile::version_bytes(version.hlc, version.node))
}

impl PartitionIndex {
    /// Builds the index of `partition` from the store (one pass).
    pub fn build(store: &dyn Store, partition: u16) -> Box<PartitionIndex> {
        let mut index = Box::new(PartitionIndex {
            sketch: PartitionSketch::new(),
            by_key: HashMap::new(),
            by_element: HashMap::new(),
            digest: Digest::default(),
        });
        let mut elements = Vec::new();
        store.for_each_in_partition(partition, &mut |entry| {
            let element = reconcile_element(&entry.key, entry.version);
            elements.push(element);
            index.add(entry.key.clone(), entry.version, element);
        });
        index.sketch.insert_batch(&elements);
        index
    }

    /// A durable entry: replaces the key's element if `version` is newer. Returns whether it
    /// changed the index.
    pub fn observe(&mut self, entry: &Entry) -> bool {
        if let Some(&(stored, old)) = self.by_key.get(&entry.key) {
            if stored >= entry.version {
                return false;
            }
            self.sketch.remove_batch(&[old]);
            self.by_element.remove(&old);
            self.digest.count -= 1;
            self.digest.sum = self.digest.sum.wrapping_sub(element_of(&entry.key, stored));
        }
        let element = reconcile_element(&entry.key, entry.version);
        self.sketch.insert_batch(&[element]);
        self.add(entry.key.clone(), entry.version, element);
        true
    }

    fn add(&mut self, key: Vec<u8>, version: Version, element: u64) {
        self.digest.count += 1;
        self.digest.sum = self.digest.sum.wrapping_add(element_of(&key, version));
        self.by_element.insert(element, key.clone());
        self.by_key.insert(key, (version, element));
    }

    /// The sketch to run sessions against.
    pub fn sketch(&self) -> &PartitionSketch {
        &self.sketch
    }

    /// The key whose current version has reconcile element `element`.
    pub fn key_of(&self, element: u64) -> Option<&[u8]> {
        self.by_element.get(&element).map(Vec::as_slice)
    }

    /// Digest of the indexed entries, comparable with `anti_entropy::digest` of the store.
    pub fn digest(&self) -> Digest {
        self.digest
    }

    /// Number of indexed entries.
    pub fn len(&self) -> u64 {
        self.digest.count
    }

    /// Whether no entry is indexed.
    pub fn is_empty(&self) -> bool {
        self.digest.count == 0
    }
}

#[cfg(test)]
mod tests {
    use super::super::anti_entropy;
    use super::super::store::MemStore;
    use super::*;

    fn entry(key: &str, hlc: u64, tombstone: bool) -> Entry {
        Entry {
            key: key.as_bytes().to_vec(),
            value: if tombstone { None } else { Some(b"v".to_vec()) },
            version: Version { hlc, node: 1 },
        }
    }

    #[test]
    fn observe_keeps_index_equal_to_a_rebuild() {
        let mut store = MemStore::new(1);
        let mut index = PartitionIndex::build(&store, 0);
        let updates = [
            entry("a", 1, false),
            entry("b", 2, false),
            entry("a", 3, false),
            entry("a", 2, false), // older: ignored
            entry("b", 4, true),  // tombstone replaces the value
            entry("c", 5, false),
        ];
        for update in &updates {
            let newer = store.apply(std::slice::from_ref(update))[0];
            assert_eq!(index.observe(update), newer);
        }
        let rebuilt = PartitionIndex::build(&store, 0);
        assert_eq!(index.digest(), anti_entropy::digest(&store, 0));
        assert_eq!(index.digest(), rebuilt.digest());
        assert_eq!(index.sketch().len(), 3);
        let a3 = reconcile_element(b"a", Version { hlc: 3, node: 1 });
        let a1 = reconcile_element(b"a", Version { hlc: 1, node: 1 });
        assert_eq!(index.key_of(a3), Some(&b"a"[..]));
        assert_eq!(index.key_of(a1), None);
        assert!(index.sketch().contains(a3) && !index.sketch().contains(a1));
    }
}
