//! The memtable: an ordered map of the newest writes, single-threaded by design.
//!
//! Keys, versions and values live in an [`arena::Arena`] (one record per key:
//! `hlc u64 | node u64 | value address u64 | value len u32 | key len u32 | key | value`);
//! the order is a `BTreeMap` of 40-byte slots (the key's first 16 bytes as two big-endian words,
//! a pointer to the key in the arena, its length, the record's address). Most comparisons
//! are decided by the inline word, so a lookup touches a handful of B-tree nodes instead of
//! one heap key per comparison; and there are no per-entry allocations (16 B keys and 100 B
//! values: ~230 B an entry, against ~350 B as a `BTreeMap` of `Vec`s).
//!
//! Point lookups (`get`, `find`, and the first step of `insert`) go through a hash table of
//! record addresses keyed by xxh3 of the key instead: ~2 cache misses instead of a B-tree walk
//! of ~5 levels (the walk was two thirds of the storage apply under redis-benchmark's SETs).
//! Only a new key walks the B-tree, to insert itself in order.
//!
//! **Invariants:** at most one record per key (the newest version written); `map` and `hashes`
//! hold the same records; `bytes` is the arena's real size (records, replaced values,
//! alignment, skipped chunk tails) plus `INDEX_BYTES_PER_ENTRY` per key for the B-tree and the
//! hash table, so `memtable_bytes_max` bounds memory.
//! Every slot's key pointer points into this memtable's arena, which never moves or frees a
//! chunk while the memtable lives (the map is dropped before the arena).

mod arena;

use std::cell::Cell;
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use arena::Arena;

use crate::codec::compare_keys;
use crate::types::Version;

/// Index bytes counted per key. The B-tree: a 40 B slot (32 B key, 8 B record address) in
/// leaves of 11 slots (~456 B) that random inserts keep ~2/3 full and sequential ones ~6/11
/// full, plus the inner nodes (~1/6 more): 90 B. The hash table: 8 B + 1 control byte per
/// bucket at a load between 7/16 and 7/8 (it doubles when 7/8 full): up to 21 B.
pub const INDEX_BYTES_PER_ENTRY: usize = 90 + 21;
/// `value len` of a tombstone.
const TOMBSTONE: u32 = u32::MAX;

// Field offsets in a record.
const HLC_AT: usize = 0;
const NODE_AT: usize = 8;
const VALUE_ADDRESS_AT: usize = 16;
const LENS_AT: usize = 24;
const KEY_AT: usize = 32;

/// One memtable slot, borrowed from the arena.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Slot<'a> {
    /// The version.
    pub version: Version,
    /// The value or `None` for a tombstone.
    pub value: Option<&'a [u8]>,
}

/// Where a key's record sits in one memtable's arena, as `find` returned it: valid for that
/// memtable's whole life (a key's record never moves; `insert` and `replace_at` overwrite it in
/// place), so a caller that decided on a write can store it without a second lookup.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Record(u64);

/// An owned entry as produced by every iterator in the crate.
pub type Item = (Vec<u8>, Version, Option<Vec<u8>>);

/// A key in the B-tree: its first 16 bytes inline, the whole key behind a pointer.
///
/// 16 bytes, not 8: keys often share their first 8 bytes (`key:0000…` from redis-benchmark,
/// `/registry/…` in Kubernetes), and a tie on the inline words costs a cache miss into the
/// arena per comparison (measured: 32 % of a GET-bound node's CPU with 8 inline bytes).
///
/// `ptr` is a `Cell` so that `insert` can search with the caller's key and, on a miss, point
/// the very key the vacant entry inserts at the arena's copy (same bytes, so the same order):
/// one B-tree walk per insert instead of a lookup and then an insert.
#[derive(Clone, Debug)]
struct IndexKey {
    prefix: [u64; 2],
    ptr: Cell<*const u8>,
    len: usize,
}

impl IndexKey {
    /// A key viewing `bytes`, which must outlive every use of it (the arena's bytes for
    /// stored keys; the caller's probe for the duration of one lookup).
    fn new(bytes: &[u8]) -> IndexKey {
        let mut words = [0u8; 16];
        let head = bytes.len().min(16);
        words[..head].copy_from_slice(&bytes[..head]);
        let (high, low) = words.split_at(8);
        IndexKey {
            prefix: [
                u64::from_be_bytes(high.try_into().unwrap_or_default()),
                u64::from_be_bytes(low.try_into().unwrap_or_default()),
            ],
            ptr: Cell::new(bytes.as_ptr()),
            len: bytes.len(),
        }
    }

    #[allow(unsafe_code)]
    fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr..ptr + len` was a live `&[u8]` when the key was made (`new`), and it
        // still is: stored keys point into the memtable's arena, whose chunks never move and
        // outlive the map (module invariants); probe keys live only inside the one lookup
        // call that borrows the caller's slice; `insert` repoints a probe at the arena's copy
        // of the same `len` bytes before the map keeps it.
        unsafe { std::slice::from_raw_parts(self.ptr.get(), self.len) }
    }
}

impl PartialEq for IndexKey {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for IndexKey {}

impl Ord for IndexKey {
    /// Byte order of the keys: zero-padded big-endian words compare like the bytes, and a
    /// tie on them (including "a" against "a\0") is settled by the whole keys.
    fn cmp(&self, other: &Self) -> Ordering {
        self.prefix
            .cmp(&other.prefix)
            .then_with(|| compare_keys(self.bytes(), other.bytes()))
    }
}

impl PartialOrd for IndexKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The ordered index plus the arena holding the entries.
#[derive(Debug, Default)]
pub struct Memtable {
    /// Declared before `arena`: dropped first, while the bytes its keys point to still live.
    map: BTreeMap<IndexKey, u64>,
    /// The same records by `key_hash` of their keys, for point lookups.
    hashes: hashbrown::HashTable<u64>,
    arena: Arena,
}

/// Asks the CPU to load the cache line holding `address` (no effect where there is no such
/// instruction). Never dereferences: any address is allowed.
#[inline(always)]
fn prefetch_line(address: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 is a hint; it does not fault or read memory architecturally, whatever
    // the address.
    #[allow(unsafe_code)]
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(address.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = address;
}

/// The hash `hashes` is keyed by.
fn key_hash(key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key)
}

impl Memtable {
    fn slot(&self, record: u64) -> Slot<'_> {
        let version = Version {
            hlc: self.arena.u64_at(record, HLC_AT),
            node: self.arena.u64_at(record, NODE_AT),
        };
        let value_len = self.arena.u64_at(record, LENS_AT) as u32;
        let value = (value_len != TOMBSTONE).then(|| {
            let address = self.arena.u64_at(record, VALUE_ADDRESS_AT);
            self.arena.bytes(address, value_len as usize)
        });
        Slot { version, value }
    }

    /// The slot for `key`.
    pub fn get(&self, key: &[u8]) -> Option<Slot<'_>> {
        self.find(key).map(|(_, slot)| slot)
    }

    /// The record and slot for `key`; the record lets `replace_at` write it without a lookup.
    pub fn find(&self, key: &[u8]) -> Option<(Record, Slot<'_>)> {
        self.find_hashed(key, key_hash(key))
            .map(|record| (Record(record), self.slot(record)))
    }

    /// Starts loading the record `key` most likely has (its first hash-table candidate) into
    /// the cache, and returns at once. A pipelined batch prefetches all its keys before it
    /// looks them up, so their cache misses overlap instead of queueing one after another.
    /// A hint: any key is fine, a wrong guess only wastes a cache line.
    pub fn prefetch(&self, key: &[u8]) {
        if let Some(&record) = self.hashes.iter_hash(key_hash(key)).next() {
            // The record's first two lines: its header and key, and the start of its value.
            let start = self.arena.bytes(record, KEY_AT).as_ptr();
            prefetch_line(start);
            prefetch_line(start.wrapping_add(64));
        }
    }

    fn find_hashed(&self, key: &[u8], hash: u64) -> Option<u64> {
        self.hashes
            .find(hash, |&record| record_key(&self.arena, record) == key)
            .copied()
    }

    /// Inserts or replaces the slot for `key` (values below 4 GiB), and returns whether the key
    /// was here before and live (`None`: it was not here). Only a new key walks the B-tree.
    pub fn insert(&mut self, key: &[u8], version: Version, value: Option<&[u8]>) -> Option<bool> {
        let hash = key_hash(key);
        if let Some(record) = self.find_hashed(key, hash) {
            return Some(self.replace(record, version, value));
        }
        let Entry::Vacant(vacant) = self.map.entry(IndexKey::new(key)) else {
            unreachable!("a key missing from the hash table is missing from the B-tree");
        };
        let (record, key_address) = write_record(&mut self.arena, key, version, value);
        let stored = self.arena.bytes(key_address, key.len());
        vacant.key().ptr.set(stored.as_ptr());
        vacant.insert(record);
        let arena = &self.arena;
        self.hashes
            .insert_unique(hash, record, |&other| key_hash(record_key(arena, other)));
        debug_assert_eq!(self.hashes.len(), self.map.len());
        None
    }

    /// Overwrites the record `find` returned for a key of this memtable, like `insert` but
    /// without the lookup, and returns whether it held a live value before.
    pub fn replace_at(&mut self, record: Record, version: Version, value: Option<&[u8]>) -> bool {
        self.replace(record.0, version, value)
    }

    fn write_fields(&mut self, record: u64, version: Version, value_address: u64, value_len: u32) {
        self.arena.set_u64(record, HLC_AT, version.hlc);
        self.arena.set_u64(record, NODE_AT, version.node);
        self.arena.set_u64(record, VALUE_ADDRESS_AT, value_address);
        let lens = self.arena.u64_at(record, LENS_AT) & !u64::from(u32::MAX);
        self.arena
            .set_u64(record, LENS_AT, lens | u64::from(value_len));
    }

    /// Overwrites a record's version and value: in place when the new value fits where the
    /// old one is, else in fresh arena bytes (the old ones stay counted in `bytes`). Returns
    /// whether the record held a live value before.
    fn replace(&mut self, record: u64, version: Version, value: Option<&[u8]>) -> bool {
        let old_len = self.arena.u64_at(record, LENS_AT) as u32;
        let mut address = self.arena.u64_at(record, VALUE_ADDRESS_AT);
        let value_len = value_len(value);
        if let Some(value) = value {
            let fits = old_len != TOMBSTONE && value.len() <= old_len as usize;
            if !fits {
                address = self.arena.alloc(value.len());
            }
            self.arena
                .bytes_mut(address, value.len())
                .copy_from_slice(value);
        }
        self.write_fields(record, version, address, value_len);
        old_len != TOMBSTONE
    }

    /// Real bytes held (see the module invariants).
    pub fn bytes(&self) -> usize {
        self.arena.used_bytes() + self.map.len() * INDEX_BYTES_PER_ENTRY
    }

    /// Number of keys.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Entries with key `>= start`, in order.
    pub fn range_from(&self, start: &[u8]) -> Iter<'_> {
        Iter {
            table: self,
            inner: self.map.range(IndexKey::new(start)..),
        }
    }

    /// Every entry, in order.
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            table: self,
            inner: self.map.range(..),
        }
    }
}

/// The `value len` field for `value` (values below 4 GiB).
fn value_len(value: Option<&[u8]>) -> u32 {
    match value {
        None => TOMBSTONE,
        Some(value) => {
            assert!(value.len() < TOMBSTONE as usize, "values are below 4 GiB");
            value.len() as u32
        }
    }
}

/// The key stored in `record`.
fn record_key(arena: &Arena, record: u64) -> &[u8] {
    let key_len = (arena.u64_at(record, LENS_AT) >> 32) as usize;
    arena.bytes(record + KEY_AT as u64, key_len)
}

/// Writes a new record for `key` into `arena`; returns its address and its key's address.
fn write_record(
    arena: &mut Arena,
    key: &[u8],
    version: Version,
    value: Option<&[u8]>,
) -> (u64, u64) {
    let value_len = value_len(value);
    let record = arena.alloc(KEY_AT + key.len() + value.map_or(0, <[u8]>::len));
    let key_address = record + KEY_AT as u64;
    let value_address = key_address + key.len() as u64;
    arena.set_u64(record, HLC_AT, version.hlc);
    arena.set_u64(record, NODE_AT, version.node);
    arena.set_u64(record, VALUE_ADDRESS_AT, value_address);
    let lens = u64::from(value_len) | (key.len() as u64) << 32;
    arena.set_u64(record, LENS_AT, lens);
    arena.bytes_mut(key_address, key.len()).copy_from_slice(key);
    if let Some(value) = value {
        arena
            .bytes_mut(value_address, value.len())
            .copy_from_slice(value);
    }
    (record, key_address)
}

/// An in-order walk over the index.
pub struct Iter<'a> {
    table: &'a Memtable,
    inner: std::collections::btree_map::Range<'a, IndexKey, u64>,
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a [u8], Slot<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        let (key, &record) = self.inner.next()?;
        Some((key.bytes(), self.table.slot(record)))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    fn version(hlc: u64) -> Version {
        Version { hlc, node: 7 }
    }

    #[test]
    fn prefetch_is_only_a_hint() {
        let mut table = Memtable::default();
        table.prefetch(b"anything"); // an empty table
        let keys: Vec<Vec<u8>> = (0..1000u32).map(|i| format!("k{i}").into_bytes()).collect();
        for (i, key) in keys.iter().enumerate() {
            let value = (i % 3 != 0).then_some(&key[..]); // some tombstones
            table.insert(key, version(i as u64 + 1), value);
        }
        let before: Vec<_> = keys.iter().map(|key| table.get(key)).collect();
        for key in &keys {
            table.prefetch(key);
            table.prefetch(&[key.as_slice(), b"-absent"].concat());
        }
        table.prefetch(b"");
        let after: Vec<_> = keys.iter().map(|key| table.get(key)).collect();
        assert_eq!(before, after);
        assert_eq!(after[1].and_then(|slot| slot.value), Some(&b"k1"[..]));
        assert_eq!(after[3].map(|slot| slot.value), Some(None));
        assert_eq!(table.get(b"k1-absent"), None);
    }

    #[test]
    fn bytes_count_records_keys_values_and_replaced_values() {
        let mut table = Memtable::default();
        assert_eq!(table.bytes(), 0);
        table.insert(b"key", version(1), Some(b"0123456789"));
        let first = table.bytes();
        assert_eq!(
            first,
            (KEY_AT + 3 + 10).next_multiple_of(8) + INDEX_BYTES_PER_ENTRY
        );
        table.insert(b"key", version(2), Some(b"short"));
        assert_eq!(table.bytes(), first, "a shorter value is written in place");
        table.insert(b"key", version(3), Some(&[b'x'; 64]));
        assert_eq!(table.bytes(), first + 64, "a longer one takes fresh bytes");
        table.insert(b"key", version(4), None);
        assert_eq!(table.len(), 1);
        assert_eq!(
            table.get(b"key"),
            Some(Slot {
                version: version(4),
                value: None
            })
        );
    }

    #[test]
    fn insert_and_replace_at_report_the_previous_liveness() {
        let mut table = Memtable::default();
        assert_eq!(table.insert(b"a", version(1), None), None, "new key");
        assert_eq!(table.insert(b"a", version(2), Some(b"x")), Some(false));
        assert_eq!(table.insert(b"a", version(3), Some(b"y")), Some(true));
        let (record, slot) = table.find(b"a").expect("stored");
        assert_eq!(slot.value, Some(&b"y"[..]));
        let bytes = table.bytes();
        assert!(table.replace_at(record, version(4), Some(b"z")), "was live");
        assert_eq!(table.bytes(), bytes, "same record, `z` fits where `y` was");
        assert!(table.replace_at(record, version(5), None), "was live");
        assert!(
            !table.replace_at(record, version(6), None),
            "was a tombstone"
        );
        assert_eq!(table.find(b"a").map(|(r, _)| r), Some(record));
        assert_eq!(
            table.get(b"a"),
            Some(Slot {
                version: version(6),
                value: None
            })
        );
        assert_eq!(table.find(b"b"), None);
    }

    #[derive(Clone, Debug)]
    enum Op {
        Insert(Vec<u8>, u64, Option<Vec<u8>>),
        /// `find`, then `replace_at` the record if there is one.
        ReplaceAt(Vec<u8>, u64, Option<Vec<u8>>),
        Get(Vec<u8>),
        RangeFrom(Vec<u8>),
    }

    fn key() -> impl Strategy<Value = Vec<u8>> {
        // Short keys over a small alphabet: many collisions, shared prefixes, prefixes of
        // one another, and lengths around the 8-byte words `compare_keys` reads.
        proptest::collection::vec(0u8..3, 1..12)
    }

    fn op() -> impl Strategy<Value = Op> {
        let value = proptest::option::weighted(0.8, proptest::collection::vec(any::<u8>(), 0..40));
        prop_oneof![
            4 => (key(), any::<u64>(), value.clone()).prop_map(|(k, h, v)| Op::Insert(k, h, v)),
            2 => (key(), any::<u64>(), value).prop_map(|(k, h, v)| Op::ReplaceAt(k, h, v)),
            3 => key().prop_map(Op::Get),
            1 => key().prop_map(Op::RangeFrom),
        ]
    }

    type Model = BTreeMap<Vec<u8>, (Version, Option<Vec<u8>>)>;

    fn owned(slot: Slot<'_>) -> (Version, Option<Vec<u8>>) {
        (slot.version, slot.value.map(<[u8]>::to_vec))
    }

    fn check(table: &Memtable, model: &Model, op: Op) -> Result<(), TestCaseError> {
        match op {
            Op::Insert(..) | Op::ReplaceAt(..) => {}
            Op::Get(key) => prop_assert_eq!(table.get(&key).map(owned), model.get(&key).cloned()),
            Op::RangeFrom(start) => {
                let got: Vec<_> = table
                    .range_from(&start)
                    .map(|(k, slot)| (k.to_vec(), owned(slot)))
                    .collect();
                let want: Vec<_> = model
                    .range(start..)
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                prop_assert_eq!(got, want);
            }
        }
        Ok(())
    }

    /// Applies a write op to both and checks the previous liveness each reports.
    fn apply(table: &mut Memtable, model: &mut Model, op: &Op) -> Result<(), TestCaseError> {
        let was_live = |model: &Model, key: &Vec<u8>| model.get(key).map(|(_, v)| v.is_some());
        match op {
            Op::Insert(key, hlc, value) => {
                let before = table.insert(key, version(*hlc), value.as_deref());
                prop_assert_eq!(before, was_live(model, key));
                model.insert(key.clone(), (version(*hlc), value.clone()));
            }
            Op::ReplaceAt(key, hlc, value) => {
                let found = table.find(key).map(|(record, _)| record);
                prop_assert_eq!(found.is_some(), model.contains_key(key));
                if let Some(record) = found {
                    let before = table.replace_at(record, version(*hlc), value.as_deref());
                    prop_assert_eq!(Some(before), was_live(model, key));
                    model.insert(key.clone(), (version(*hlc), value.clone()));
                }
            }
            Op::Get(_) | Op::RangeFrom(_) => {}
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// The skiplist behaves like a `BTreeMap` for get, ordered iteration and range starts.
        #[test]
        fn matches_a_btreemap(ops in proptest::collection::vec(op(), 1..300)) {
            let mut table = Memtable::default();
            let mut model = Model::new();
            for op in ops {
                apply(&mut table, &mut model, &op)?;
                check(&table, &model, op)?;
            }
            prop_assert_eq!(table.len(), model.len());
            let all: Vec<_> = table.iter().map(|(k, s)| (k.to_vec(), owned(s))).collect();
            let want: Vec<_> = model.into_iter().collect();
            prop_assert_eq!(all, want);
        }
    }
}
