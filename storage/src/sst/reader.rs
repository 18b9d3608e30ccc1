//! Reads a table through `memmap2`: the page cache is the block cache.
//!
//! `open` verifies the footer, index and bloom checksums; each data block is verified on its
//! first use (a bit per block remembers it), so a damaged block is reported as
//! [`Error::Corruption`] with the file and block offset and never served. Each block read
//! marks the fault-around windows it maps, so the engine's `Residency` budget bounds the
//! table bytes mapped into the process.

use std::cell::Cell;
use std::cmp::Ordering;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use memmap2::Mmap;

use super::block::{Block, BlockError, BlockPos, TRAILER_BYTES, verify};
use super::bloom::Bloom;
use super::format::{BlockHandle, FOOTER_BYTES, Footer, parse_index};
use super::residency::{Residency, WINDOW_BYTES};
use super::writer::{TableMeta, table_path};
use crate::codec::compare_keys;
use crate::error::{Error, Result};
use crate::memtable::Item;
use crate::types::Version;

/// An open, immutable table.
pub struct Table {
    path: PathBuf,
    meta: TableMeta,
    mmap: Mmap,
    index: Vec<BlockHandle>,
    bloom: (usize, usize),
    verified: Vec<Cell<u64>>,
    residency: Rc<Residency>,
    /// One bit per fault-around window of the mapping: touched since the last release.
    windows: Vec<Cell<u64>>,
    /// Windows from the one holding the bloom filter's first byte to the end (kept mapped).
    tail_windows: usize,
}

/// The windows of the mapping spanned by `[offset, offset + len)` (`len > 0`), numbered from
/// the window holding the mapping's first byte.
fn window_span(base: usize, offset: usize, len: usize) -> std::ops::RangeInclusive<usize> {
    let first = base / WINDOW_BYTES;
    ((base + offset) / WINDOW_BYTES - first)..=((base + offset + len - 1) / WINDOW_BYTES - first)
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("path", &self.path)
            .field("meta", &self.meta)
            .finish()
    }
}

impl Table {
    /// Maps `<number>.sst` in `dir`, verifies its footer, index and bloom filter, and puts
    /// it under `residency`'s budget.
    pub fn open(dir: &Path, meta: TableMeta, residency: &Rc<Residency>) -> Result<Rc<Table>> {
        let path = table_path(dir, meta.number);
        let file = std::fs::File::open(&path)
            .map_err(|e| Error::io(format!("opening table {}", path.display()), e))?;
        let mmap = map(&file).map_err(|e| Error::io(format!("mapping {}", path.display()), e))?;
        let corrupt = |offset: u64, detail: &str| Error::Corruption {
            file: path.clone(),
            offset,
            detail: detail.to_string(),
        };
        let footer_at = (mmap.len().saturating_sub(FOOTER_BYTES)) as u64;
        let footer = Footer::open(&mmap).map_err(|d| corrupt(footer_at, d))?;
        let index_range = range(
            footer.index_offset.get(),
            footer.index_len.get(),
            mmap.len(),
        )
        .ok_or_else(|| corrupt(footer_at, "index range outside the file"))?;
        let index = parse_index(&mmap[index_range.0..index_range.1])
            .map_err(|d| corrupt(index_range.0 as u64, d))?;
        let bloom = range(
            footer.bloom_offset.get(),
            footer.bloom_len.get(),
            mmap.len(),
        )
        .ok_or_else(|| corrupt(footer_at, "bloom range outside the file"))?;
        Bloom::open(&mmap[bloom.0..bloom.1])
            .ok_or_else(|| corrupt(bloom.0 as u64, "bloom filter checksum mismatch"))?;
        for handle in &index {
            range(handle.offset, handle.len, bloom.0)
                .ok_or_else(|| corrupt(index_range.0 as u64, "block handle outside the data"))?;
        }
        let verified = (0..index.len().div_ceil(64))
            .map(|_| Cell::new(0))
            .collect();
        let base = mmap.as_ptr() as usize;
        let all = window_span(base, 0, mmap.len());
        let tail = window_span(base, bloom.0, mmap.len() - bloom.0);
        let windows: Vec<Cell<u64>> = (0..(all.end() + 1).div_ceil(64))
            .map(|_| Cell::new(0))
            .collect();
        let tail_windows = tail.clone().count();
        residency.add_tail(tail_windows);
        let table = Rc::new(Table {
            path,
            meta,
            mmap,
            index,
            bloom,
            verified,
            residency: Rc::clone(residency),
            windows,
            tail_windows,
        });
        table.mark_tail();
        residency.register(&table);
        Ok(table)
    }

    /// Sets the tail windows' bits (counted once, in `tail_windows`).
    fn mark_tail(&self) {
        let base = self.mmap.as_ptr() as usize;
        for window in window_span(base, self.bloom.0, self.mmap.len() - self.bloom.0) {
            let word = &self.windows[window / 64];
            word.set(word.get() | 1 << (window % 64));
        }
    }

    /// Counts the data windows `[offset, offset + len)` maps that were not mapped yet.
    fn mark(&self, offset: usize, len: usize) {
        for window in window_span(self.mmap.as_ptr() as usize, offset, len) {
            let (word, bit) = (&self.windows[window / 64], 1u64 << (window % 64));
            if word.get() & bit == 0 {
                self.residency.touched();
                word.set(word.get() | bit);
            }
        }
    }

    /// Unmaps the data region from the process (the pages stay in the page cache) and
    /// returns how many data windows were marked.
    pub(crate) fn release_data(&self) -> usize {
        let marked: usize = self
            .windows
            .iter()
            .map(|w| w.get().count_ones() as usize)
            .sum();
        let base = self.mmap.as_ptr() as usize;
        let page = page_bytes();
        // Up to the page holding the bloom filter's first byte; tails stay mapped.
        let data_len = ((base + self.bloom.0) & !(page - 1)) - base;
        if data_len > 0 {
            // SAFETY: the mapping is a read-only MAP_SHARED view of a table file that is never
            // written again, so MADV_DONTNEED only drops page-table entries: the next access
            // maps the very same file bytes back (from the page cache or the disk). Borrowed
            // slices into the range keep reading identical contents; nothing is zero-filled
            // (that happens only to private and anonymous mappings).
            #[allow(unsafe_code)]
            let advised = unsafe {
                self.mmap
                    .unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, 0, data_len)
            };
            if let Err(error) = advised {
                tracing::debug!(%error, path = %self.path.display(), "MADV_DONTNEED failed");
            }
        }
        for word in &self.windows {
            word.set(0);
        }
        self.mark_tail();
        marked - self.tail_windows
    }

    /// The manifest's description of this table.
    pub fn meta(&self) -> &TableMeta {
        &self.meta
    }

    fn bloom(&self) -> Bloom<'_> {
        // Verified in `open`; parsing again is cheap (no checksum) via the unchecked path.
        Bloom::from_verified(&self.mmap[self.bloom.0..self.bloom.1])
    }

    /// The verified block `index`.
    fn block(&self, index: usize) -> Result<Block<'_>> {
        let handle = &self.index[index];
        let start = handle.offset as usize;
        self.mark(start, handle.len as usize);
        let raw = &self.mmap[start..start + handle.len as usize];
        let (word, bit) = (&self.verified[index / 64], 1u64 << (index % 64));
        let corrupt = |detail: &str| Error::Corruption {
            file: self.path.clone(),
            offset: handle.offset,
            detail: detail.to_string(),
        };
        if word.get() & bit == 0 {
            verify(raw).map_err(|e| corrupt(e.0))?;
            word.set(word.get() | bit);
        }
        Block::open_verified(&raw[..raw.len() - TRAILER_BYTES]).map_err(|e| corrupt(e.0))
    }

    fn corrupt_block(&self, index: usize, detail: &str) -> Error {
        Error::Corruption {
            file: self.path.clone(),
            offset: self.index[index].offset,
            detail: detail.to_string(),
        }
    }

    /// The first block whose last key is `>= key`.
    fn block_for(&self, key: &[u8]) -> usize {
        self.index
            .partition_point(|h| compare_keys(&h.last_key, key) == Ordering::Less)
    }

    /// Looks `key` up (`hash` is `bloom::hash_key(key)`) and maps the entry without copying.
    pub fn find<R>(
        &self,
        key: &[u8],
        hash: u64,
        found: impl FnOnce(&[u8], Version, Option<&[u8]>) -> R,
    ) -> Result<Option<R>> {
        if compare_keys(key, &self.meta.smallest) == Ordering::Less
            || compare_keys(key, &self.meta.largest) == Ordering::Greater
        {
            return Ok(None);
        }
        if !self.bloom().may_contain(hash) {
            return Ok(None);
        }
        let index = self.block_for(key);
        if index >= self.index.len() {
            return Ok(None);
        }
        let block = self.block(index)?;
        block
            .find(key, found)
            .map_err(|e| self.corrupt_block(index, e.0))
    }

    /// An iterator over entries with key `>= start` (all entries for an empty `start`).
    pub fn iter_from(self: &Rc<Self>, start: &[u8]) -> TableIter {
        let block = self.block_for(start);
        TableIter {
            table: Rc::clone(self),
            block,
            pos: None,
            seek: Some(start.to_vec()),
            failed: false,
        }
    }
}

impl Drop for Table {
    fn drop(&mut self) {
        let marked: usize = self
            .windows
            .iter()
            .map(|w| w.get().count_ones() as usize)
            .sum();
        self.residency
            .forget(marked - self.tail_windows, self.tail_windows);
    }
}

/// The kernel's page size.
#[allow(unsafe_code)]
fn page_bytes() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).unwrap_or(4096).max(1)
}

#[allow(unsafe_code)]
fn map(file: &std::fs::File) -> std::io::Result<Mmap> {
    // SAFETY: tables are immutable once their manifest edit is written: the engine never opens
    // them for writing again and only unlinks them, which keeps existing mappings valid.
    unsafe { Mmap::map(file) }
}

fn range(offset: u64, len: u64, limit: usize) -> Option<(usize, usize)> {
    let start = usize::try_from(offset).ok()?;
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    (end <= limit && start < end).then_some((start, end))
}

/// An owned iterator over a table: decodes one entry per step (no block-sized buffers).
pub struct TableIter {
    table: Rc<Table>,
    block: usize,
    pos: Option<BlockPos>,
    seek: Option<Vec<u8>>,
    failed: bool,
}

impl TableIter {
    fn step(&mut self) -> Result<Option<Item>> {
        while self.block < self.table.index.len() {
            let block = self.table.block(self.block)?;
            let corrupt = |e: BlockError| self.table.corrupt_block(self.block, e.0);
            let mut pos = match (self.pos.take(), self.seek.take()) {
                (Some(pos), _) => pos,
                (None, Some(target)) => block.seek_pos(&target).map_err(corrupt)?,
                (None, None) => BlockPos::default(),
            };
            if let Some((version, value)) = block.next_at(&mut pos).map_err(corrupt)? {
                let item = (pos.key().to_vec(), version, value.map(<[u8]>::to_vec));
                self.pos = Some(pos);
                return Ok(Some(item));
            }
            self.block += 1;
        }
        Ok(None)
    }
}

impl Iterator for TableIter {
    type Item = Result<Item>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let step = self.step();
        crate::merge::fuse(&mut self.failed, step)
    }
}
