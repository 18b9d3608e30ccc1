//! Blocked bloom filter (~10 bits per key, 7 probes inside one 64-byte cache line).
//!
//! Layout: `bits | probes:u8 | xxh3:u64`. One xxh3 hash of the key is computed per lookup and
//! reused across every table (`hash_key`), so a miss costs one cache line per table.

use crate::codec::checksum;

/// Bits per key the builder allocates.
pub const BITS_PER_KEY: usize = 10;
/// Probes per key (≈ ln 2 × bits per key).
pub const PROBES: u8 = 7;
const LINE_BITS: u64 = 512;
const LINE_BYTES: usize = 64;

/// The hash a filter is probed with.
pub fn hash_key(key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key)
}

fn line_of(hash: u64, lines: usize) -> usize {
    (((hash & 0xffff_ffff) * lines as u64) >> 32) as usize
}

fn probe_bits(hash: u64, probes: u8) -> impl Iterator<Item = u64> {
    let mut h = (hash >> 32) as u32;
    let delta = h.rotate_right(17);
    (0..probes).map(move |_| {
        let bit = u64::from(h) % LINE_BITS;
        h = h.wrapping_add(delta);
        bit
    })
}

/// Builds a filter from key hashes.
pub fn build(hashes: &[u64]) -> Vec<u8> {
    let lines = (hashes.len() * BITS_PER_KEY)
        .div_ceil(LINE_BITS as usize)
        .max(1);
    let mut out = vec![0u8; lines * LINE_BYTES];
    for &hash in hashes {
        let line = line_of(hash, lines) * LINE_BYTES;
        for bit in probe_bits(hash, PROBES) {
            out[line + (bit / 8) as usize] |= 1 << (bit % 8);
        }
    }
    out.push(PROBES);
    let sum = checksum(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    out
}

/// A verified filter borrowed from a table.
#[derive(Clone, Copy, Debug)]
pub struct Bloom<'a> {
    bits: &'a [u8],
    probes: u8,
}

impl<'a> Bloom<'a> {
    /// Verifies the trailer and parses; `None` if the bytes are damaged.
    pub fn open(raw: &'a [u8]) -> Option<Self> {
        if raw.len() < LINE_BYTES + 9 {
            return None;
        }
        let (body, trailer) = raw.split_at(raw.len() - 8);
        if u64::from_le_bytes(trailer.try_into().ok()?) != checksum(body) {
            return None;
        }
        let (bits, probes) = body.split_at(body.len() - 1);
        if bits.len() % LINE_BYTES != 0 || probes[0] == 0 {
            return None;
        }
        Some(Bloom {
            bits,
            probes: probes[0],
        })
    }

    /// A view of a filter that `open` verified before (no checksum pass).
    pub fn from_verified(raw: &'a [u8]) -> Self {
        let body = &raw[..raw.len() - 8];
        let (bits, probes) = body.split_at(body.len() - 1);
        Bloom {
            bits,
            probes: probes[0],
        }
    }

    /// False only if the key was certainly not added.
    pub fn may_contain(&self, hash: u64) -> bool {
        let lines = self.bits.len() / LINE_BYTES;
        let line = &self.bits[line_of(hash, lines) * LINE_BYTES..][..LINE_BYTES];
        probe_bits(hash, self.probes).all(|bit| line[(bit / 8) as usize] & (1 << (bit % 8)) != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_false_negatives_and_few_false_positives() {
        let hashes: Vec<u64> = (0..10_000u32).map(|i| hash_key(&i.to_le_bytes())).collect();
        let raw = build(&hashes);
        let bloom = Bloom::open(&raw).expect("fresh filter verifies");
        assert!(hashes.iter().all(|h| bloom.may_contain(*h)));
        let false_positives = (10_000..110_000u32)
            .filter(|i| bloom.may_contain(hash_key(&i.to_le_bytes())))
            .count();
        // ~1% expected at 10 bits/key; 3% leaves room for the blocked layout.
        assert!(false_positives < 3_000, "{false_positives} false positives");
    }

    #[test]
    fn damaged_filter_is_rejected() {
        let mut raw = build(&[1, 2, 3]);
        raw[5] ^= 1;
        assert!(Bloom::open(&raw).is_none());
    }
}
