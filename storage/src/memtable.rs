//! The memtable: an ordered in-memory map of the newest writes, single-threaded by design.
//!
//! Invariant: holds at most one version per key (the newest applied); `bytes` approximates its
//! heap footprint (key + value + a fixed per-entry overhead) so the flush threshold tracks RSS.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::ops::Bound;

use crate::codec::compare_keys;
use crate::types::Version;

/// Heap overhead per entry beyond key and value bytes (B-tree slot, two `Vec` headers and
/// allocator rounding), so `memtable_bytes_max` bounds real memory.
pub const ENTRY_OVERHEAD_BYTES: usize = 80;

/// A borrowed key with the fast comparison of [`compare_keys`] (same order as `[u8]`).
#[repr(transparent)]
#[derive(PartialEq, Eq)]
pub struct KeyRef([u8]);

impl KeyRef {
    /// Views `bytes` as a `KeyRef`.
    #[allow(unsafe_code)]
    pub fn new(bytes: &[u8]) -> &KeyRef {
        // SAFETY: `KeyRef` is `repr(transparent)` over `[u8]`, so the pointer cast keeps the
        // layout and the slice length metadata, and the lifetime is carried over unchanged.
        unsafe { &*(std::ptr::from_ref::<[u8]>(bytes) as *const KeyRef) }
    }
}

impl Ord for KeyRef {
    fn cmp(&self, other: &Self) -> Ordering {
        compare_keys(&self.0, &other.0)
    }
}

impl PartialOrd for KeyRef {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// An owned memtable key ordered like [`KeyRef`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemKey(pub Vec<u8>);

impl Borrow<KeyRef> for MemKey {
    fn borrow(&self) -> &KeyRef {
        KeyRef::new(&self.0)
    }
}

impl Ord for MemKey {
    fn cmp(&self, other: &Self) -> Ordering {
        compare_keys(&self.0, &other.0)
    }
}

impl PartialOrd for MemKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// One memtable slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemValue {
    /// The version.
    pub version: Version,
    /// The value or `None` for a tombstone.
    pub value: Option<Vec<u8>>,
}

/// An owned entry as produced by every iterator in the crate.
pub type Item = (Vec<u8>, Version, Option<Vec<u8>>);

/// The ordered map plus its size accounting.
#[derive(Debug, Default)]
pub struct Memtable {
    map: BTreeMap<MemKey, MemValue>,
    bytes: usize,
}

fn footprint(key: &[u8], value: &MemValue) -> usize {
    key.len() + value.value.as_ref().map_or(0, Vec::len) + ENTRY_OVERHEAD_BYTES
}

impl Memtable {
    /// The slot for `key`.
    pub fn get(&self, key: &[u8]) -> Option<&MemValue> {
        self.map.get(KeyRef::new(key))
    }

    /// Inserts or replaces the slot for `key`.
    pub fn insert(&mut self, key: Vec<u8>, value: MemValue) {
        let added = footprint(&key, &value);
        match self.map.entry(MemKey(key)) {
            std::collections::btree_map::Entry::Occupied(mut slot) => {
                self.bytes -= footprint(&slot.key().0, slot.get());
                slot.insert(value);
            }
            std::collections::btree_map::Entry::Vacant(slot) => {
                slot.insert(value);
            }
        }
        self.bytes += added;
    }

    /// Approximate heap bytes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Entries with key `>= start`, in order.
    pub fn range_from<'a>(
        &'a self,
        start: &[u8],
    ) -> impl Iterator<Item = (&'a Vec<u8>, &'a MemValue)> + use<'a> {
        self.map
            .range::<KeyRef, _>((Bound::Included(KeyRef::new(start)), Bound::Unbounded))
            .map(|(k, v)| (&k.0, v))
    }

    /// Every entry, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&Vec<u8>, &MemValue)> {
        self.map.iter().map(|(k, v)| (&k.0, v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_accounting_follows_replacements() {
        let mut table = Memtable::default();
        let value = |n: usize| MemValue {
            version: Version::default(),
            value: Some(vec![0; n]),
        };
        table.insert(b"k".to_vec(), value(10));
        assert_eq!(table.bytes(), 1 + 10 + ENTRY_OVERHEAD_BYTES);
        table.insert(b"k".to_vec(), value(3));
        assert_eq!(table.bytes(), 1 + 3 + ENTRY_OVERHEAD_BYTES);
        assert_eq!(table.iter().count(), 1);
    }
}
