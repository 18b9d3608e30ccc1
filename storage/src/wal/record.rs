//! WAL record codec (sans-IO): `len:u32 | xxh3:u64 | kind:u8 | payload`.
//!
//! `len` is the payload length; the checksum covers `kind | payload`. A `Batch` payload is
//! `count:varint` then per entry `key_len:varint | key | value_tag:varint | value | hlc:u64 |
//! node:u64` (`value_tag` 0 = tombstone, else `len + 1`). A zero `len` marks the unwritten
//! (zero-filled, preallocated) end of a segment.

use crate::codec::{Reader, checksum, put_varint};
use crate::types::{Entry, Version};

/// Header bytes before the payload.
pub const HEADER_BYTES: usize = 13;
/// Record kind of an applied batch.
pub const KIND_BATCH: u8 = 1;

/// Encodes entries into a batch record appended to `out`.
pub fn encode_batch<'a>(out: &mut Vec<u8>, entries: impl Iterator<Item = &'a Entry>, count: usize) {
    let start = out.len();
    out.extend_from_slice(&[0u8; HEADER_BYTES]);
    out[start + 12] = KIND_BATCH;
    put_varint(out, count as u64);
    let mut encoded = 0;
    for entry in entries {
        encoded += 1;
        put_varint(out, entry.key.len() as u64);
        out.extend_from_slice(&entry.key);
        match &entry.value {
            None => put_varint(out, 0),
            Some(value) => {
                put_varint(out, value.len() as u64 + 1);
                out.extend_from_slice(value);
            }
        }
        out.extend_from_slice(&entry.version.hlc.to_le_bytes());
        out.extend_from_slice(&entry.version.node.to_le_bytes());
    }
    assert_eq!(encoded, count, "count must match the entries");
    let payload_len = out.len() - start - HEADER_BYTES;
    let len = u32::try_from(payload_len).unwrap_or(u32::MAX);
    assert!(
        payload_len < u32::MAX as usize,
        "batch limits keep records under 4 GiB"
    );
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    let sum = checksum(&out[start + 12..]);
    out[start + 4..start + 12].copy_from_slice(&sum.to_le_bytes());
}

/// What parsing at an offset found.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// A valid record: its kind, payload, and total length.
    Record {
        /// The record kind.
        kind: u8,
        /// The payload.
        payload: &'a [u8],
        /// Header plus payload.
        total: usize,
    },
    /// Zero header or fewer than a header's bytes left: the end of the written log.
    End,
    /// A header or checksum that does not verify.
    Bad,
}

/// Parses the record starting at `data[0]`.
pub fn parse(data: &[u8]) -> Parsed<'_> {
    if data.len() < HEADER_BYTES || data[..HEADER_BYTES].iter().all(|b| *b == 0) {
        return Parsed::End;
    }
    let len = u32::from_le_bytes([data[0], data[1], data[2], data[3]]) as usize;
    let kind = data[12];
    let Some(end) = HEADER_BYTES
        .checked_add(len)
        .filter(|end| *end <= data.len())
    else {
        return Parsed::Bad;
    };
    let mut stored = [0u8; 8];
    stored.copy_from_slice(&data[4..12]);
    if kind != KIND_BATCH || len == 0 || u64::from_le_bytes(stored) != checksum(&data[12..end]) {
        return Parsed::Bad;
    }
    Parsed::Record {
        kind,
        payload: &data[HEADER_BYTES..end],
        total: end,
    }
}

/// Decodes a verified batch payload; `None` if malformed (a checksummed record that does not
/// decode is corruption, not a torn write).
pub fn decode_batch(payload: &[u8]) -> Option<Vec<Entry>> {
    let mut reader = Reader::new(payload);
    let count = reader.varint_usize()?;
    let mut entries = Vec::with_capacity(count.min(65_536));
    for _ in 0..count {
        let key_len = reader.varint_usize()?;
        let key = reader.bytes(key_len)?.to_vec();
        let value = match reader.varint()? {
            0 => None,
            len => Some(reader.bytes(usize::try_from(len - 1).ok()?)?.to_vec()),
        };
        let version = Version {
            hlc: reader.u64()?,
            node: reader.u64()?,
        };
        entries.push(Entry {
            key,
            value,
            version,
        });
    }
    reader.is_empty().then_some(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &[u8], value: Option<&[u8]>, hlc: u64) -> Entry {
        Entry {
            key: key.to_vec(),
            value: value.map(<[u8]>::to_vec),
            version: Version { hlc, node: 1 },
        }
    }

    #[test]
    fn record_round_trips_and_detects_flips() {
        let batch = vec![entry(b"a", Some(b"1"), 5), entry(b"bb", None, 6)];
        let mut out = Vec::new();
        encode_batch(&mut out, batch.iter(), batch.len());
        let Parsed::Record { payload, total, .. } = parse(&out) else {
            panic!("valid record did not parse");
        };
        assert_eq!(total, out.len());
        assert_eq!(decode_batch(payload), Some(batch));
        for i in 0..out.len() {
            let mut flipped = out.clone();
            flipped[i] ^= 0x10;
            assert!(
                !matches!(parse(&flipped), Parsed::Record { .. }),
                "flip at {i} undetected"
            );
        }
        assert_eq!(parse(&[0u8; 64]), Parsed::End);
    }
}
