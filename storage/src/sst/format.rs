//! The SSTable footer (a `zerocopy` struct) and the index block codec.
//!
//! File layout: `data block* | bloom | index | footer`. The footer is the last
//! `FOOTER_BYTES` of the file; it carries the magic, the offsets and lengths of the bloom and
//! index blocks and an xxh3 over its own preceding bytes. Index entries are
//! `last_key_len:varint | last_key | offset:varint | len:varint`, followed by an xxh3 trailer.

use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::codec::{Reader, checksum, put_varint};

/// "STRLNG01" as a little-endian u64.
pub const MAGIC: u64 = u64::from_le_bytes(*b"STRLNG01");
/// On-disk format version.
pub const FORMAT_VERSION: u32 = 1;
/// Size of the footer.
pub const FOOTER_BYTES: usize = std::mem::size_of::<Footer>();

/// The fixed-size trailer of every table.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct Footer {
    /// Offset of the index block.
    pub index_offset: U64,
    /// Length of the index block including its trailer.
    pub index_len: U64,
    /// Offset of the bloom filter.
    pub bloom_offset: U64,
    /// Length of the bloom filter including its trailer.
    pub bloom_len: U64,
    /// Entries in the table.
    pub entry_count: U64,
    /// Largest `version.hlc` in the table.
    pub hlc_max: U64,
    /// `FORMAT_VERSION`.
    pub format_version: U32,
    /// Zero.
    pub reserved: U32,
    /// `MAGIC`.
    pub magic: U64,
    /// xxh3 of the footer bytes before this field.
    pub checksum: U64,
}

impl Footer {
    /// Serialises with the checksum filled in.
    pub fn seal(mut self) -> [u8; FOOTER_BYTES] {
        self.magic = U64::new(MAGIC);
        self.format_version = U32::new(FORMAT_VERSION);
        let sum = checksum(&self.as_bytes()[..FOOTER_BYTES - 8]);
        self.checksum = U64::new(sum);
        let mut out = [0u8; FOOTER_BYTES];
        out.copy_from_slice(self.as_bytes());
        out
    }

    /// Parses and verifies the last bytes of a file.
    pub fn open(file: &[u8]) -> Result<Footer, &'static str> {
        let (_, footer) =
            Footer::read_from_suffix(file).map_err(|_| "file shorter than a footer")?;
        if footer.magic.get() != MAGIC {
            return Err("bad magic (not a starling table)");
        }
        let bytes = footer.as_bytes();
        if footer.checksum.get() != checksum(&bytes[..FOOTER_BYTES - 8]) {
            return Err("footer checksum mismatch");
        }
        if footer.format_version.get() != FORMAT_VERSION {
            return Err("unknown table format version");
        }
        Ok(footer)
    }
}

/// Where a data block lives and the largest key in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockHandle {
    /// Largest key of the block.
    pub last_key: Vec<u8>,
    /// Offset in the file.
    pub offset: u64,
    /// Length including the checksum trailer.
    pub len: u64,
}

/// Appends one index entry.
pub fn put_index_entry(out: &mut Vec<u8>, handle: &BlockHandle) {
    put_varint(out, handle.last_key.len() as u64);
    out.extend_from_slice(&handle.last_key);
    put_varint(out, handle.offset);
    put_varint(out, handle.len);
}

/// Adds the checksum trailer to a finished index.
pub fn seal_index(out: &mut Vec<u8>) {
    let sum = checksum(out);
    out.extend_from_slice(&sum.to_le_bytes());
}

/// Verifies and decodes an index block.
pub fn parse_index(raw: &[u8]) -> Result<Vec<BlockHandle>, &'static str> {
    if raw.len() < 8 {
        return Err("index shorter than its trailer");
    }
    let (body, trailer) = raw.split_at(raw.len() - 8);
    let stored = u64::from_le_bytes(trailer.try_into().map_err(|_| "index trailer")?);
    if stored != checksum(body) {
        return Err("index checksum mismatch");
    }
    let mut reader = Reader::new(body);
    let mut handles = Vec::new();
    while !reader.is_empty() {
        let handle = (|| {
            let key_len = reader.varint_usize()?;
            let last_key = reader.bytes(key_len)?.to_vec();
            Some(BlockHandle {
                last_key,
                offset: reader.varint()?,
                len: reader.varint()?,
            })
        })()
        .ok_or("malformed index entry")?;
        handles.push(handle);
    }
    Ok(handles)
}
