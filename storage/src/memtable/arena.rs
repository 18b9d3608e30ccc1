//! The memtable's arena: bump allocation in large anonymous mappings.
//!
//! Every byte of a memtable (skiplist nodes, keys, values) lives in chunks of `CHUNK_BYTES`
//! mapped with `mmap(MAP_ANONYMOUS)`. So `used_bytes` is the memtable's real memory (no
//! allocator headers, no per-entry `Vec`s, no fragmentation), untouched chunk tails cost no RSS,
//! and dropping a memtable returns all of it to the OS at once (no `malloc_trim` needed).
//!
//! **Invariant:** an address (`chunk << 32 | offset`) handed out by `alloc` stays valid and
//! its bytes stay where they are until the arena is dropped: chunks are never moved or freed.

use memmap2::MmapMut;

/// Size of one chunk; larger allocations (never needed within the hard limits) get their own.
pub const CHUNK_BYTES: usize = 4 << 20;
/// Every allocation starts at a multiple of this.
const ALIGN: usize = 8;

/// A bump allocator over anonymous mappings.
#[derive(Default)]
pub struct Arena {
    chunks: Vec<MmapMut>,
    /// Bytes handed out from the last chunk.
    offset: usize,
    /// Bytes handed out plus the tails left unused when a chunk was full.
    used: usize,
}

impl std::fmt::Debug for Arena {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Arena")
            .field("chunks", &self.chunks.len())
            .field("used", &self.used)
            .finish()
    }
}

fn split(address: u64) -> (usize, usize) {
    (
        (address >> 32) as usize,
        (address & u64::from(u32::MAX)) as usize,
    )
}

impl Arena {
    /// Allocates `len` zeroed bytes (8-aligned) and returns their address.
    ///
    /// # Panics
    /// If the kernel refuses a new mapping (out of memory), like a failed `Vec` allocation.
    pub fn alloc(&mut self, len: usize) -> u64 {
        let padded = len.next_multiple_of(ALIGN);
        let fits = self
            .chunks
            .last()
            .is_some_and(|chunk| self.offset + padded <= chunk.len());
        if !fits {
            if let Some(chunk) = self.chunks.last() {
                self.used += chunk.len() - self.offset;
            }
            let size = padded.max(CHUNK_BYTES);
            let chunk = MmapMut::map_anon(size).unwrap_or_else(|e| {
                panic!("memtable arena: mapping {size} bytes failed (out of memory?): {e}")
            });
            self.chunks.push(chunk);
            self.offset = 0;
        }
        let chunk = self.chunks.len() - 1;
        let address = ((chunk as u64) << 32) | self.offset as u64;
        self.offset += padded;
        self.used += padded;
        assert!(
            self.offset <= u32::MAX as usize,
            "chunk offsets fit in 32 bits"
        );
        address
    }

    /// Bytes allocated so far, including chunk tails skipped as too small: the arena's share
    /// of RSS once written.
    pub fn used_bytes(&self) -> usize {
        self.used
    }

    /// The `len` bytes at `address`.
    pub fn bytes(&self, address: u64, len: usize) -> &[u8] {
        let (chunk, offset) = split(address);
        &self.chunks[chunk][offset..offset + len]
    }

    /// The `len` bytes at `address`, writable.
    pub fn bytes_mut(&mut self, address: u64, len: usize) -> &mut [u8] {
        let (chunk, offset) = split(address);
        &mut self.chunks[chunk][offset..offset + len]
    }

    /// The little-endian u64 at `address + at`.
    pub fn u64_at(&self, address: u64, at: usize) -> u64 {
        let mut word = [0u8; 8];
        word.copy_from_slice(self.bytes(address + at as u64, 8));
        u64::from_le_bytes(word)
    }

    /// Stores `value` little-endian at `address + at`.
    pub fn set_u64(&mut self, address: u64, at: usize, value: u64) {
        self.bytes_mut(address + at as u64, 8)
            .copy_from_slice(&value.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocations_are_aligned_disjoint_and_stable_across_chunks() {
        let mut arena = Arena::default();
        let small = arena.alloc(3);
        arena.bytes_mut(small, 3).copy_from_slice(b"abc");
        let big = arena.alloc(CHUNK_BYTES - 4);
        let huge = arena.alloc(CHUNK_BYTES + 1);
        let after = arena.alloc(16);
        assert_eq!(arena.bytes(small, 3), b"abc");
        for address in [small, big, huge, after] {
            assert_eq!(address % 8, 0);
        }
        assert_ne!(split(small).0, split(big).0, "did not fit: a new chunk");
        assert_ne!(
            split(huge).0,
            split(after).0,
            "an oversized chunk holds one allocation"
        );
        arena.set_u64(after, 8, 0x0102_0304_0506_0708);
        assert_eq!(arena.u64_at(after, 8), 0x0102_0304_0506_0708);
        // Chunk 0 whole (8 used + its skipped tail), chunk 1 whole (big, padded to CHUNK),
        // chunk 2 holds only `huge` (CHUNK + 8), chunk 3 has 16.
        assert_eq!(arena.used_bytes(), 3 * CHUNK_BYTES + 8 + 16);
    }
}
