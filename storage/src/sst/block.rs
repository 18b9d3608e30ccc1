//! Data blocks: ~4 KiB of sorted entries with prefix-compressed keys and restart points.
//!
//! Layout: `entry* | restart_offset:u32* | restart_count:u32 | xxh3:u64`. An entry is
//! `shared:varint | unshared:varint | value_tag:varint | hlc:u64 | node:u64 | key_suffix | value`
//! where `value_tag` is 0 for a tombstone and `len + 1` otherwise. Every `RESTART_INTERVAL`-th
//! entry stores its whole key (`shared = 0`) so a lookup binary-searches the restarts and then
//! scans at most one interval. The trailing checksum covers everything before it.

use std::cmp::Ordering;

use crate::codec::{Reader, checksum, compare_keys, put_varint};
use crate::types::Version;

/// Entries between two full keys.
pub const RESTART_INTERVAL: usize = 16;
/// Bytes of the checksum trailer.
pub const TRAILER_BYTES: usize = 8;

/// One decoded entry borrowing its value from the block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockEntry<'a> {
    /// The full key (owned: keys are prefix compressed).
    pub key: Vec<u8>,
    /// The version.
    pub version: Version,
    /// The value, `None` for a tombstone.
    pub value: Option<&'a [u8]>,
}

/// Builds one block.
#[derive(Debug, Default)]
pub struct BlockBuilder {
    buf: Vec<u8>,
    restarts: Vec<u32>,
    last_key: Vec<u8>,
    count: usize,
}

impl BlockBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends an entry; keys must arrive in strictly increasing order.
    pub fn add(&mut self, key: &[u8], version: Version, value: Option<&[u8]>) {
        assert!(
            self.count == 0 || key > self.last_key.as_slice(),
            "block keys must be strictly increasing"
        );
        let shared = if self.count.is_multiple_of(RESTART_INTERVAL) {
            self.restarts.push(self.buf.len() as u32);
            0
        } else {
            common_prefix(&self.last_key, key)
        };
        put_varint(&mut self.buf, shared as u64);
        put_varint(&mut self.buf, (key.len() - shared) as u64);
        put_varint(&mut self.buf, value.map_or(0, |v| v.len() as u64 + 1));
        self.buf.extend_from_slice(&version.hlc.to_le_bytes());
        self.buf.extend_from_slice(&version.node.to_le_bytes());
        self.buf.extend_from_slice(&key[shared..]);
        if let Some(value) = value {
            self.buf.extend_from_slice(value);
        }
        self.last_key.clear();
        self.last_key.extend_from_slice(key);
        self.count += 1;
    }

    /// Bytes the finished block would take.
    pub fn estimated_bytes(&self) -> usize {
        self.buf.len() + 4 * self.restarts.len() + 4 + TRAILER_BYTES
    }

    /// Number of entries added.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True before the first `add`.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The last key added.
    pub fn last_key(&self) -> &[u8] {
        &self.last_key
    }

    /// Appends the finished block (with trailer) to `out` and resets the builder.
    pub fn finish_into(&mut self, out: &mut Vec<u8>) {
        assert!(self.count > 0, "an empty block is never written");
        let start = out.len();
        out.extend_from_slice(&self.buf);
        for restart in &self.restarts {
            out.extend_from_slice(&restart.to_le_bytes());
        }
        out.extend_from_slice(&(self.restarts.len() as u32).to_le_bytes());
        let sum = checksum(&out[start..]);
        out.extend_from_slice(&sum.to_le_bytes());
        self.buf.clear();
        self.restarts.clear();
        self.count = 0;
    }
}

fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// A verified, parsed block (without its trailer).
#[derive(Clone, Debug)]
pub struct Block<'a> {
    entries: &'a [u8],
    restarts: &'a [u8],
}

/// Why a block failed to parse.
#[derive(Debug, PartialEq, Eq)]
pub struct BlockError(pub &'static str);

impl<'a> Block<'a> {
    /// Verifies the checksum trailer of `raw` and parses the restart array.
    pub fn open(raw: &'a [u8]) -> Result<Self, BlockError> {
        verify(raw)?;
        Self::open_verified(&raw[..raw.len() - TRAILER_BYTES])
    }

    /// Parses a block whose checksum was already verified (`body` excludes the trailer).
    pub fn open_verified(body: &'a [u8]) -> Result<Self, BlockError> {
        if body.len() < 4 {
            return Err(BlockError("block shorter than its restart count"));
        }
        let count_at = body.len() - 4;
        let count = u32::from_le_bytes(
            body[count_at..]
                .try_into()
                .map_err(|_| BlockError("count"))?,
        );
        let restarts_len = (count as usize)
            .checked_mul(4)
            .filter(|len| *len <= count_at && count > 0)
            .ok_or(BlockError("restart array out of bounds"))?;
        let restarts_at = count_at - restarts_len;
        Ok(Block {
            entries: &body[..restarts_at],
            restarts: &body[restarts_at..count_at],
        })
    }

    fn restart(&self, index: usize) -> Result<usize, BlockError> {
        let bytes = self
            .restarts
            .get(index * 4..index * 4 + 4)
            .ok_or(BlockError("restart index"))?;
        let offset = u32::from_le_bytes(bytes.try_into().map_err(|_| BlockError("restart"))?);
        Ok(offset as usize)
    }

    fn restart_count(&self) -> usize {
        self.restarts.len() / 4
    }

    fn cursor_at(&self, offset: usize) -> Result<Cursor<'a>, BlockError> {
        let entries = self
            .entries
            .get(offset..)
            .ok_or(BlockError("restart offset"))?;
        Ok(Cursor {
            reader: Reader::new(entries),
            key: Vec::new(),
            version: Version::default(),
            value: None,
        })
    }

    /// The full key stored at restart `index`, borrowed from the block (no allocation).
    fn restart_key(&self, index: usize) -> Result<&'a [u8], BlockError> {
        let mut reader = Reader::new(
            self.entries
                .get(self.restart(index)?..)
                .ok_or(BlockError("restart offset"))?,
        );
        let malformed = || BlockError("malformed restart entry");
        let shared = reader.varint_usize().ok_or_else(malformed)?;
        let unshared = reader.varint_usize().ok_or_else(malformed)?;
        reader.varint().ok_or_else(malformed)?;
        reader.bytes(16).ok_or_else(malformed)?;
        if shared != 0 {
            return Err(malformed());
        }
        reader.bytes(unshared).ok_or_else(malformed)
    }

    /// A cursor positioned just before the first entry with key `>= target`'s restart run.
    fn cursor_near(&self, target: &[u8]) -> Result<Cursor<'a>, BlockError> {
        // Binary search for the last restart whose full key is < target.
        let (mut low, mut high) = (0usize, self.restart_count());
        while high - low > 1 {
            let mid = (low + high) / 2;
            if compare_keys(self.restart_key(mid)?, target) == Ordering::Less {
                low = mid;
            } else {
                high = mid;
            }
        }
        self.cursor_at(self.restart(low)?)
    }

    /// An iterator over all entries in order.
    pub fn iter(&self) -> BlockIter<'a> {
        BlockIter {
            cursor: Cursor {
                reader: Reader::new(self.entries),
                key: Vec::new(),
                version: Version::default(),
                value: None,
            },
            pending: false,
            failed: false,
        }
    }

    /// An iterator starting at the first entry with key `>= target`.
    pub fn seek(&self, target: &[u8]) -> Result<BlockIter<'a>, BlockError> {
        let mut cursor = self.cursor_near(target)?;
        while cursor.advance()? {
            if cursor.key.as_slice() >= target {
                return Ok(BlockIter {
                    cursor,
                    pending: true,
                    failed: false,
                });
            }
        }
        Ok(BlockIter {
            cursor,
            pending: false,
            failed: false,
        })
    }

    /// Finds `key` and hands the entry to `found` without allocating.
    pub fn find<R>(
        &self,
        key: &[u8],
        found: impl FnOnce(&[u8], Version, Option<&'a [u8]>) -> R,
    ) -> Result<Option<R>, BlockError> {
        let mut cursor = self.cursor_near(key)?;
        while cursor.advance()? {
            match compare_keys(&cursor.key, key) {
                Ordering::Less => {}
                Ordering::Equal => {
                    return Ok(Some(found(&cursor.key, cursor.version, cursor.value)));
                }
                Ordering::Greater => return Ok(None),
            }
        }
        Ok(None)
    }

    /// The entry with exactly `key`, if present.
    pub fn get(&self, key: &[u8]) -> Result<Option<BlockEntry<'a>>, BlockError> {
        self.find(key, |key, version, value| BlockEntry {
            key: key.to_vec(),
            version,
            value,
        })
    }
}

/// Checks the xxh3 trailer of a raw block.
pub fn verify(raw: &[u8]) -> Result<(), BlockError> {
    if raw.len() < TRAILER_BYTES + 4 {
        return Err(BlockError("block shorter than its trailer"));
    }
    let (body, trailer) = raw.split_at(raw.len() - TRAILER_BYTES);
    let stored = u64::from_le_bytes(trailer.try_into().map_err(|_| BlockError("trailer"))?);
    if stored != checksum(body) {
        return Err(BlockError("block checksum mismatch"));
    }
    Ok(())
}

/// Decodes entries in place: the key lives in one reused buffer.
#[derive(Clone, Debug)]
struct Cursor<'a> {
    reader: Reader<'a>,
    key: Vec<u8>,
    version: Version,
    value: Option<&'a [u8]>,
}

impl Cursor<'_> {
    /// Moves to the next entry; `Ok(false)` at the end of the block.
    fn advance(&mut self) -> Result<bool, BlockError> {
        if self.reader.is_empty() {
            return Ok(false);
        }
        self.decode().ok_or(BlockError("malformed block entry"))?;
        Ok(true)
    }

    fn decode(&mut self) -> Option<()> {
        let shared = self.reader.varint_usize()?;
        let unshared = self.reader.varint_usize()?;
        let tag = self.reader.varint()?;
        let hlc = self.reader.u64()?;
        let node = self.reader.u64()?;
        if shared > self.key.len() {
            return None;
        }
        let suffix = self.reader.bytes(unshared)?;
        self.key.truncate(shared);
        self.key.extend_from_slice(suffix);
        self.version = Version { hlc, node };
        self.value = match tag {
            0 => None,
            len => Some(self.reader.bytes(usize::try_from(len - 1).ok()?)?),
        };
        Some(())
    }
}

/// Iterates a block's entries, yielding an error (once) on malformed bytes.
#[derive(Clone, Debug)]
pub struct BlockIter<'a> {
    cursor: Cursor<'a>,
    /// The cursor already holds an entry not yet returned (after `seek`).
    pending: bool,
    failed: bool,
}

impl<'a> Iterator for BlockIter<'a> {
    type Item = Result<BlockEntry<'a>, BlockError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        if !std::mem::take(&mut self.pending) {
            match self.cursor.advance() {
                Ok(true) => {}
                Ok(false) => return None,
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
        }
        Some(Ok(BlockEntry {
            key: self.cursor.key.clone(),
            version: self.cursor.version,
            value: self.cursor.value,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(keys: &[Vec<u8>]) -> Vec<u8> {
        let mut builder = BlockBuilder::new();
        for (i, key) in keys.iter().enumerate() {
            let value = (i % 3 != 0).then_some(key.as_slice());
            builder.add(
                key,
                Version {
                    hlc: i as u64,
                    node: 7,
                },
                value,
            );
        }
        let mut out = Vec::new();
        builder.finish_into(&mut out);
        out
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        #[test]
        fn block_round_trips(keys in proptest::collection::btree_set(proptest::collection::vec(0u8..4, 1..12), 1..80)) {
            let keys: Vec<Vec<u8>> = keys.into_iter().collect();
            let raw = build(&keys);
            let block = Block::open(&raw).map_err(|e| proptest::test_runner::TestCaseError::fail(e.0))?;
            let decoded: Vec<Vec<u8>> = block.iter().map(|e| e.map(|e| e.key)).collect::<Result<_, _>>().map_err(|e| proptest::test_runner::TestCaseError::fail(e.0))?;
            proptest::prop_assert_eq!(&decoded, &keys);
            for (i, key) in keys.iter().enumerate() {
                let found = block.get(key).map_err(|e| proptest::test_runner::TestCaseError::fail(e.0))?;
                let found = found.ok_or_else(|| proptest::test_runner::TestCaseError::fail("missing"))?;
                proptest::prop_assert_eq!(found.version.hlc, i as u64);
                proptest::prop_assert_eq!(found.value.is_none(), i % 3 == 0);
            }
            let mut absent = keys[keys.len() - 1].clone();
            absent.push(9);
            proptest::prop_assert!(block.get(&absent).map_err(|e| proptest::test_runner::TestCaseError::fail(e.0))?.is_none());
        }
    }

    #[test]
    fn flipped_byte_fails_the_checksum() {
        let mut raw = build(&[b"a".to_vec(), b"b".to_vec()]);
        raw[3] ^= 0x40;
        assert!(Block::open(&raw).is_err());
    }
}
