//! The engine: the foreground API (apply/get/scan) over memtable + tables, and the background
//! tasks (WAL writer, flush, compaction) it spawns on its glommio executor.
//!
//! **Invariants:** one engine per executor and data dir; all state sits in `RefCell`s borrowed
//! only between awaits (never across one); versions only grow per key (a write lands only if
//! newer), so newer layers (memtable, immutable memtable, L0 newest first, L1..) always hold the
//! newest version and a lookup stops at the first hit.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::path::PathBuf;
use std::rc::Rc;

use glommio::{Latency, Shares, TaskQueueHandle};

use crate::codec::compare_keys;
use crate::counters::{Counters, add};
use crate::error::{Error, Result};
use crate::manifest::{LEVELS, Manifest};
use crate::memtable::{Item, Memtable, Record, Slot};
use crate::merge::{Merge, Source};
use crate::notify::Notify;
use crate::sst::bloom;
use crate::sst::reader::Table;
use crate::types::{Applied, Condition, Durability, Entry, LevelStats, Options, Stats, Version};
use crate::wal::record::encode_batch;
use crate::wal::writer::{LAZY_CHUNK_BYTES, WalShared};

/// In `Durability::None`, `apply` waits for the WAL writer once this much is queued: a few
/// 1 MiB chunks keep the disk busy; more would only be heap (the writer copies a group once
/// more into its DMA buffers).
const WAL_PENDING_BYTES_MAX: usize = 8 << 20;

/// Mutable engine state.
pub(crate) struct State {
    pub(crate) mem: Memtable,
    pub(crate) imm: Option<Rc<Memtable>>,
    /// WAL segment that started when `imm` froze (the flush edit's `log_number`).
    pub(crate) imm_log_number: u64,
    pub(crate) imm_live_keys: u64,
    pub(crate) flushing: bool,
    pub(crate) flush_error: Option<Error>,
    pub(crate) compacting: bool,
    pub(crate) compaction_failed: bool,
    /// Per level; L0 newest first, deeper levels sorted by smallest key.
    pub(crate) levels: Vec<Vec<Rc<Table>>>,
    pub(crate) next_file: u64,
}

/// Shared by the `Engine` handle and its background tasks.
pub(crate) struct Inner {
    pub(crate) options: Options,
    pub(crate) dir: PathBuf,
    pub(crate) state: RefCell<State>,
    pub(crate) wal: Rc<WalShared>,
    pub(crate) counters: Rc<Counters>,
    pub(crate) manifest: RefCell<Manifest>,
    /// Signalled when a flush or compaction finishes (backpressure, `flush`, `compact`).
    pub(crate) changed: Notify,
    /// Signalled when a flush may be due.
    pub(crate) flush_work: Notify,
    /// Signalled when compaction may be due.
    pub(crate) bg_work: Notify,
    pub(crate) gc_horizon: Cell<u64>,
    pub(crate) hlc_max: Cell<u64>,
    pub(crate) live_keys: Cell<u64>,
    pub(crate) closed: Cell<bool>,
    pub(crate) next_wal_segment: Cell<u64>,
    pub(crate) compaction_queue: TaskQueueHandle,
    /// The budget of table bytes mapped into the process.
    pub(crate) residency: Rc<crate::sst::residency::Residency>,
    pub(crate) _lock: std::fs::File,
}

/// A per-core LSM storage engine (one per glommio executor; not `Send`).
pub struct Engine {
    pub(crate) inner: Rc<Inner>,
    pub(crate) wal_task: Option<glommio::Task<()>>,
    pub(crate) flush_task: Option<glommio::Task<()>>,
    pub(crate) compaction_task: Option<glommio::Task<()>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

enum Step {
    Done(Applied, Option<u64>),
    WaitForFlush,
    ConditionFailed,
}

/// The stored version of a key and whether it is live.
type Stored = Option<(Version, bool)>;

/// What `try_apply` decided for one entry.
struct Decision {
    newer: bool,
    /// The key had a live value before this batch.
    was_live: bool,
    /// The key's record in the active memtable when the decision looked it up (not for a key
    /// decided from `seen`): the write goes there without a second lookup.
    record: Option<Record>,
}

/// Hashes a batch's keys for `try_apply`'s `seen` map with one xxh3 call per key, a fraction
/// of SipHash's cost on short keys (the map never holds keys from outside the batch's caller,
/// which is already trusted with the node's memory, so no DoS-resistant hash is needed).
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0 = xxhash_rust::xxh3::xxh3_64_with_seed(bytes, self.0);
    }

    /// The length prefix `[u8]` hashes first: a seed for the bytes' hash, not a hash call.
    fn write_usize(&mut self, len: usize) {
        self.0 ^= len as u64;
    }
}

/// The keys decided so far in one batch: their newest version and liveness.
type Seen<'a> = HashMap<&'a [u8], (Version, bool), BuildHasherDefault<KeyHasher>>;

/// The tables that may hold `key`, newest first: every L0 table, then at most one per level.
fn candidate_tables<'a>(
    state: &'a State,
    key: &'a [u8],
) -> impl Iterator<Item = &'a Rc<Table>> + 'a {
    let deeper = state.levels[1..].iter().filter_map(move |level| {
        let index = level
            .partition_point(|t| compare_keys(&t.meta().largest, key) == std::cmp::Ordering::Less);
        level.get(index)
    });
    state.levels[0].iter().chain(deeper)
}

impl Inner {
    /// The newest stored entry for `key`, tombstones included.
    pub(crate) fn lookup(&self, state: &State, key: &[u8]) -> Result<Option<Entry>> {
        self.read(state, key, |version, value| Entry {
            key: key.to_vec(),
            value: value.map(<[u8]>::to_vec),
            version,
        })
    }

    /// `found(version, value)` of the newest stored version of `key` (a tombstone's value is
    /// `None`), borrowing the value where it lies.
    pub(crate) fn read<R>(
        &self,
        state: &State,
        key: &[u8],
        found: impl FnOnce(Version, Option<&[u8]>) -> R,
    ) -> Result<Option<R>> {
        if let Some(slot) = state.mem.get(key) {
            return Ok(Some(found(slot.version, slot.value)));
        }
        if let Some(slot) = state.imm.as_ref().and_then(|imm| imm.get(key)) {
            return Ok(Some(found(slot.version, slot.value)));
        }
        let hash = bloom::hash_key(key);
        // The value borrows the table only inside `find`'s callback: call `found` there.
        let mut found = Some(found);
        for table in candidate_tables(state, key) {
            let result = table.find(key, hash, |_, version, value| {
                found.take().map(|found| found(version, value))
            })?;
            if let Some(result) = result {
                return Ok(result);
            }
        }
        Ok(None)
    }

    /// The stored version of `key` and whether it is live, without copying the value, and its
    /// record if the active memtable holds it.
    fn stored(&self, state: &State, key: &[u8]) -> Result<(Stored, Option<Record>)> {
        let from_mem = |slot: Slot<'_>| (slot.version, slot.value.is_some());
        if let Some((record, slot)) = state.mem.find(key) {
            return Ok((Some(from_mem(slot)), Some(record)));
        }
        Ok((self.stored_below(state, key)?, None))
    }

    /// Like `stored`, below the active memtable.
    fn stored_below(&self, state: &State, key: &[u8]) -> Result<Stored> {
        let from_mem = |slot: Slot<'_>| (slot.version, slot.value.is_some());
        if let Some(slot) = state.imm.as_ref().and_then(|imm| imm.get(key)) {
            return Ok(Some(from_mem(slot)));
        }
        let hash = bloom::hash_key(key);
        for table in candidate_tables(state, key) {
            if let Some(found) =
                table.find(key, hash, |_, version, value| (version, value.is_some()))?
            {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// Decides, inserts and logs one batch without awaiting. On `Done` the batch was consumed.
    fn try_apply(&self, batch: &mut Vec<Entry>, condition: Option<Condition>) -> Result<Step> {
        if self.closed.get() {
            return Err(Error::Closed);
        }
        let mut state = self.state.borrow_mut();
        if state.mem.bytes() >= self.options.memtable_bytes_max {
            if state.imm.is_some() {
                return Ok(Step::WaitForFlush);
            }
            self.freeze(&mut state);
        }
        // Decide every entry first so a read error leaves nothing half-applied. Within a batch
        // a later entry for the same key is compared with the earlier one (`seen`).
        let mut seen = Seen::default();
        let mut decisions = Vec::with_capacity(batch.len());
        for entry in batch.iter() {
            let (stored, record) = match seen.get(entry.key.as_slice()) {
                Some(known) => (Some(*known), None),
                None => self.stored(&state, &entry.key)?,
            };
            if let Some(condition) = condition {
                let live = stored.is_some_and(|(_, live)| live);
                if live != (condition == Condition::Present) {
                    return Ok(Step::ConditionFailed);
                }
            }
            let newer = stored.is_none_or(|(version, _)| entry.version > version);
            if newer && batch.len() > 1 {
                seen.insert(&entry.key, (entry.version, entry.value.is_some()));
            }
            decisions.push(Decision {
                newer,
                was_live: stored.is_some_and(|(_, live)| live),
                record,
            });
        }
        drop(seen);
        let ticket = self.insert_decided(&mut state, std::mem::take(batch), &decisions);
        Ok(Step::Done(
            Applied {
                applied: decisions.iter().map(|d| d.newer).collect(),
            },
            ticket,
        ))
    }

    /// Logs the entries decided newer as one WAL record, moves them into the memtable, and
    /// returns the WAL ticket.
    fn insert_decided(
        &self,
        state: &mut State,
        batch: Vec<Entry>,
        decisions: &[Decision],
    ) -> Option<u64> {
        let applied = decisions.iter().filter(|d| d.newer).count();
        add(
            &self.counters.duplicates_skipped,
            (batch.len() - applied) as u64,
        );
        if applied == 0 {
            return None;
        }
        let ticket = {
            let mut queue = self.wal.queue.borrow_mut();
            let newer = batch
                .iter()
                .zip(decisions)
                .filter_map(|(e, d)| d.newer.then_some(e));
            queue.append_with(|buffer| encode_batch(buffer, newer, applied))
        };
        self.wal.work.notify_all();
        // Liveness before each entry: an earlier entry of the batch for the same key may have
        // changed it, and the memtable (the newest layer) then holds that entry; a key it
        // does not hold keeps the liveness decided from the layers below.
        for (entry, decision) in batch.into_iter().zip(decisions) {
            if !decision.newer {
                continue;
            }
            let value = entry.value.as_deref();
            let before = match decision.record {
                Some(record) => state.mem.replace_at(record, entry.version, value),
                None => state
                    .mem
                    .insert(&entry.key, entry.version, value)
                    .unwrap_or(decision.was_live),
            };
            self.account_write(before, &entry);
        }
        Some(ticket)
    }

    /// Updates live keys, user bytes and the hlc high-water mark for one written entry.
    fn account_write(&self, was_live: bool, entry: &Entry) {
        let count = self.live_keys.get();
        self.live_keys.set(match (was_live, entry.value.is_some()) {
            (false, true) => count + 1,
            (true, false) => count - 1,
            _ => count,
        });
        add(&self.counters.bytes_user, entry.user_bytes() as u64);
        self.hlc_max.set(self.hlc_max.get().max(entry.version.hlc));
    }

    /// Applies a batch replayed from the WAL at open (no logging).
    pub(crate) fn replay_batch(&self, batch: Vec<Entry>) -> Result<()> {
        let mut state = self.state.borrow_mut();
        for entry in batch {
            let (stored, _) = self.stored(&state, &entry.key)?;
            if stored.is_some_and(|(version, _)| entry.version <= version) {
                continue;
            }
            self.account_write(stored.is_some_and(|(_, live)| live), &entry);
            state
                .mem
                .insert(&entry.key, entry.version, entry.value.as_deref());
        }
        Ok(())
    }

    /// Turns the memtable into the immutable one, rolls the WAL, starts the flush.
    fn freeze(&self, state: &mut State) {
        assert!(state.imm.is_none(), "at most one immutable memtable");
        let segment = self.next_wal_segment.get();
        self.next_wal_segment.set(segment + 1);
        self.wal.queue.borrow_mut().roll_to(segment);
        self.wal.work.notify_all();
        state.imm = Some(Rc::new(std::mem::take(&mut state.mem)));
        state.imm_log_number = segment;
        state.imm_live_keys = self.live_keys.get();
        self.start_flush(state);
    }

    /// Wakes the flush task (never spawns here: glommio runs a spawned task eagerly, which
    /// would re-enter the `RefCell` borrow the caller holds).
    fn start_flush(&self, _state: &mut State) {
        self.flush_work.notify_all();
    }

    /// Sorted sources over everything stored, each starting at `start`. Memtables are
    /// iterated in place (borrowing `state`); tables through owned iterators.
    fn sources<'a>(&self, state: &'a State, start: &[u8]) -> Vec<Source<'a>> {
        let borrowed = |mem: &'a Memtable, start: &[u8]| -> Source<'a> {
            Box::new(
                mem.range_from(start)
                    .map(|(k, v)| Ok((k.to_vec(), v.version, v.value.map(<[u8]>::to_vec)))),
            )
        };
        let mut sources = vec![borrowed(&state.mem, start)];
        if let Some(imm) = &state.imm {
            sources.push(borrowed(imm, start));
        }
        sources.extend(table_sources(state, start));
        sources
    }

    /// Like `sources`, but owning everything (memtables are copied), for `entries`.
    fn owned_sources(&self, state: &State) -> Vec<Source<'static>> {
        let copied = |mem: &Memtable| -> Source<'static> {
            let items: Vec<Result<Item>> = mem
                .iter()
                .map(|(k, v)| Ok((k.to_vec(), v.version, v.value.map(<[u8]>::to_vec))))
                .collect();
            Box::new(items.into_iter())
        };
        let mut sources = vec![copied(&state.mem)];
        if let Some(imm) = &state.imm {
            sources.push(copied(imm));
        }
        sources.extend(table_sources(state, &[]));
        sources
    }
}

/// One iterator per L0 table and one concatenating iterator per deeper level.
fn table_sources(state: &State, start: &[u8]) -> Vec<Source<'static>> {
    let mut sources: Vec<Source<'static>> = Vec::new();
    for table in &state.levels[0] {
        if table.meta().largest.as_slice() >= start {
            sources.push(Box::new(table.iter_from(start)));
        }
    }
    for level in &state.levels[1..] {
        let first = level.partition_point(|t| t.meta().largest.as_slice() < start);
        if first < level.len() {
            sources.push(Box::new(LevelIter {
                tables: level[first..].to_vec(),
                next: 0,
                current: None,
                start: start.to_vec(),
            }));
        }
    }
    sources
}

/// Concatenates the (non-overlapping, sorted) tables of one level, opening each lazily.
struct LevelIter {
    tables: Vec<Rc<Table>>,
    next: usize,
    current: Option<crate::sst::reader::TableIter>,
    start: Vec<u8>,
}

impl Iterator for LevelIter {
    type Item = Result<Item>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(item) = self.current.as_mut().and_then(Iterator::next) {
                return Some(item);
            }
            let table = self.tables.get(self.next)?;
            self.next += 1;
            self.current = Some(table.iter_from(&self.start));
        }
    }
}

impl Engine {
    /// Applies a batch: each entry is written only if its version is newer than the stored one.
    ///
    /// Entries are in the memtable (visible to `get`) before the first await; with
    /// `Durability::Sync` the future resolves after the group commit holding them is durable.
    pub async fn apply(&self, batch: Vec<Entry>) -> Result<Applied> {
        self.inner.options.limits.check_batch(&batch)?;
        let applied = self.apply_inner(batch, None).await?;
        Ok(applied.unwrap_or_default())
    }

    /// Atomic check-and-write of one entry: `Ok(false)` if `condition` does not hold on the live
    /// state or the version is not newer (nothing written).
    pub async fn apply_if(&self, entry: Entry, condition: Condition) -> Result<bool> {
        self.inner.options.limits.check_entry(&entry)?;
        Ok(self
            .apply_inner(vec![entry], Some(condition))
            .await?
            .is_some_and(|applied| applied.count() == 1))
    }

    /// `None` if the condition failed.
    async fn apply_inner(
        &self,
        mut batch: Vec<Entry>,
        condition: Option<Condition>,
    ) -> Result<Option<Applied>> {
        let inner = &self.inner;
        let (applied, ticket) = loop {
            match inner.try_apply(&mut batch, condition)? {
                Step::Done(applied, ticket) => break (applied, ticket),
                Step::ConditionFailed => return Ok(None),
                Step::WaitForFlush => self.wait_for_flush().await?,
            }
        };
        if let Some(ticket) = ticket {
            self.wait_for_wal(ticket).await?;
        }
        Ok(Some(applied))
    }

    /// Waits until the immutable memtable is flushed. After a failed flush it retries once
    /// and reports the retry's error, so writes stall (not fail) only while the disk is full.
    async fn wait_for_flush(&self) -> Result<()> {
        let inner = &self.inner;
        {
            let mut state = inner.state.borrow_mut();
            state.flush_error = None;
            inner.start_flush(&mut state);
        }
        inner
            .changed
            .wait_for(|| {
                let state = inner.state.borrow();
                (state.imm.is_none() || state.flush_error.is_some() || inner.closed.get())
                    .then_some(())
            })
            .await;
        if let Some(error) = &inner.state.borrow().flush_error {
            return Err(error.duplicate());
        }
        if inner.closed.get() {
            return Err(Error::Closed);
        }
        Ok(())
    }

    async fn wait_for_wal(&self, ticket: u64) -> Result<()> {
        let wal = &self.inner.wal;
        match self.inner.options.durability {
            Durability::Sync => {
                wal.progress
                    .wait_for(|| wal.queue.borrow().outcome(ticket))
                    .await
            }
            Durability::None => {
                let (open, pending) = {
                    let queue = wal.queue.borrow();
                    (queue.open_bytes(), queue.pending_bytes())
                };
                if open >= LAZY_CHUNK_BYTES {
                    // A foreground loop that never awaits would starve the WAL writer and
                    // the flush task: hand them the executor once per chunk.
                    futures_lite::future::yield_now().await;
                }
                if pending >= WAL_PENDING_BYTES_MAX {
                    wal.progress
                        .wait_for(|| {
                            (wal.queue.borrow().pending_bytes() < WAL_PENDING_BYTES_MAX)
                                .then_some(())
                        })
                        .await;
                }
                Ok(())
            }
        }
    }

    /// The stored entry for `key`, tombstones included.
    pub fn get(&self, key: &[u8]) -> Result<Option<Entry>> {
        let state = self.inner.state.borrow();
        self.inner.lookup(&state, key)
    }

    /// Calls `found` with the newest stored version of `key` and its value (`None`: a
    /// tombstone) without copying either, and returns what it returned (`None`: never stored).
    /// What a read path that needs only the value, or only liveness, uses instead of `get`.
    pub fn read<R>(
        &self,
        key: &[u8],
        found: impl FnOnce(Version, Option<&[u8]>) -> R,
    ) -> Result<Option<R>> {
        let state = self.inner.state.borrow();
        self.inner.read(&state, key, found)
    }

    /// Prefetches what reading or writing `keys` soon will touch in the active memtable, so
    /// that a batch's cache misses overlap (see `Memtable::prefetch`). A hint: it changes no
    /// result.
    pub fn prefetch<'k>(&self, keys: impl IntoIterator<Item = &'k [u8]>) {
        let state = self.inner.state.borrow();
        for key in keys {
            state.mem.prefetch(key);
        }
    }

    /// Live entries whose key starts with `prefix`, in key order, strictly after `after` when
    /// given, at most `limit` of them.
    pub fn scan(&self, prefix: &[u8], after: Option<&[u8]>, limit: usize) -> Result<Vec<Entry>> {
        let start = match after {
            Some(after) if after >= prefix => {
                let mut successor = after.to_vec();
                successor.push(0);
                successor
            }
            _ => prefix.to_vec(),
        };
        let state = self.inner.state.borrow();
        let mut out = Vec::new();
        for item in Merge::new(self.inner.sources(&state, &start)) {
            if out.len() >= limit {
                break;
            }
            let (key, version, value) = item?;
            if !key.starts_with(prefix) {
                break;
            }
            if let Some(value) = value {
                out.push(Entry {
                    key,
                    value: Some(value),
                    version,
                });
            }
        }
        Ok(out)
    }

    /// One page of stored entries, tombstones included, in key order strictly after `after`,
    /// of the keys `keep` accepts: at most `limit` entries and about `bytes_max` bytes (keys
    /// and values). Also returns whether the page was cut (more may follow: ask again after
    /// its last key). Reads the tables in place, so a page costs no copy of the memtable.
    pub fn entries_page(
        &self,
        after: Option<&[u8]>,
        keep: &dyn Fn(&[u8]) -> bool,
        limit: usize,
        bytes_max: usize,
    ) -> Result<(Vec<Entry>, bool)> {
        let start = after.map_or_else(Vec::new, |after| {
            let mut successor = after.to_vec();
            successor.push(0);
            successor
        });
        let state = self.inner.state.borrow();
        let mut out = Vec::new();
        let mut bytes = 0;
        for item in Merge::new(self.inner.sources(&state, &start)) {
            if out.len() >= limit.max(1) || bytes >= bytes_max {
                return Ok((out, true));
            }
            let (key, version, value) = item?;
            if !keep(&key) {
                continue;
            }
            bytes += key.len() + value.as_ref().map_or(0, Vec::len);
            out.push(Entry {
                key,
                value,
                version,
            });
        }
        Ok((out, false))
    }

    /// Every stored entry including tombstones, in key order (a snapshot taken now).
    pub fn entries(&self) -> Result<Box<dyn Iterator<Item = Result<Entry>> + '_>> {
        let state = self.inner.state.borrow();
        let merge = Merge::new(self.inner.owned_sources(&state));
        Ok(Box::new(merge.map(|item| {
            item.map(|(key, version, value)| Entry {
                key,
                value,
                version,
            })
        })))
    }

    /// Exact count of keys with a live value.
    pub fn live_keys(&self) -> u64 {
        self.inner.live_keys.get()
    }

    /// Largest `version.hlc` ever applied (recovered at open).
    pub fn hlc_max(&self) -> u64 {
        self.inner.hlc_max.get()
    }

    /// Tombstones with `version.hlc < hlc` may be dropped by compaction at the bottom level.
    pub fn set_gc_horizon(&self, hlc: u64) {
        self.inner.gc_horizon.set(hlc);
    }

    /// Counters and the shape of the tree.
    pub fn stats(&self) -> Stats {
        let inner = &self.inner;
        let counters = &inner.counters;
        let state = inner.state.borrow();
        let user = counters.bytes_user.get();
        let (wal, flush, compaction) = (
            counters.bytes_written_wal.get(),
            counters.bytes_written_flush.get(),
            counters.bytes_written_compaction.get(),
        );
        Stats {
            bytes_user: user,
            bytes_written_wal: wal,
            bytes_written_flush: flush,
            bytes_written_compaction: compaction,
            write_amplification: if user == 0 {
                0.0
            } else {
                (wal + flush + compaction) as f64 / user as f64
            },
            levels: state
                .levels
                .iter()
                .map(|level| LevelStats {
                    files: level.len(),
                    bytes: level.iter().map(|t| t.meta().size).sum(),
                })
                .collect(),
            memtable_bytes: (state.mem.bytes() + state.imm.as_ref().map_or(0, |m| m.bytes()))
                as u64,
            table_mapped_bytes: (inner.residency.mapped_windows()
                * crate::sst::residency::WINDOW_BYTES) as u64,
            table_mapped_releases: inner.residency.releases(),
            syncs: counters.syncs.get(),
            writes_synced: counters.writes_synced.get(),
            wal_write_latency: counters.wal_write_latency.borrow().clone(),
            wal_sync_latency: counters.wal_sync_latency.borrow().clone(),
            duplicates_skipped: counters.duplicates_skipped.get(),
            wal_tail_records_dropped: counters.wal_tail_records_dropped.get(),
            live_keys: inner.live_keys.get(),
            compactions: counters.compactions.get(),
            flushes: counters.flushes.get(),
        }
    }

    /// Writes the memtable to an L0 table and waits until it is in the manifest.
    pub async fn flush(&self) -> Result<()> {
        let inner = &self.inner;
        loop {
            {
                let mut state = inner.state.borrow_mut();
                if state.imm.is_none() {
                    if state.mem.is_empty() {
                        return Ok(());
                    }
                    inner.freeze(&mut state);
                    break;
                }
            }
            self.wait_for_flush().await?;
        }
        self.wait_for_flush().await
    }

    /// Compacts every table into one level (tests, admin); drops old tombstones.
    pub async fn compact(&self) -> Result<()> {
        crate::flush::compact_all(&self.inner).await
    }

    /// Drains and syncs the WAL, waits for running flushes and compactions, stops the tasks.
    pub async fn close(mut self) -> Result<()> {
        let inner = Rc::clone(&self.inner);
        inner.closed.set(true);
        inner
            .changed
            .wait_for(|| (!inner.state.borrow().flushing).then_some(()))
            .await;
        inner.flush_work.notify_all();
        if let Some(task) = self.flush_task.take() {
            task.await;
        }
        inner.wal.queue.borrow_mut().close();
        inner.wal.work.notify_all();
        if let Some(task) = self.wal_task.take() {
            task.await;
        }
        inner.bg_work.notify_all();
        if let Some(task) = self.compaction_task.take() {
            task.await;
        }
        Ok(())
    }

    /// Creates the low-priority compaction queue of this executor.
    pub(crate) fn compaction_queue(shares: usize) -> TaskQueueHandle {
        glommio::executor().create_task_queue(
            Shares::Static(shares),
            Latency::NotImportant,
            "starling-compaction",
        )
    }

    /// Levels as metadata (for picking compactions).
    pub(crate) fn level_metas(state: &State) -> Vec<Vec<crate::sst::writer::TableMeta>> {
        let mut metas: Vec<Vec<_>> = state
            .levels
            .iter()
            .map(|level| level.iter().map(|t| t.meta().clone()).collect())
            .collect();
        metas.resize(LEVELS, Vec::new());
        metas
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // Dropping without `close` cancels the tasks; nothing acknowledged is lost (the WAL
        // holds it), unacknowledged `Durability::None` writes may be.
        self.inner.closed.set(true);
    }
}
