//! Elements: what an entry contributes to its partition's set (RECONCILE.md §2).
//!
//! `element = FIRST_ELEMENT + xxh3_64(key ‖ version) mod (P − FIRST_ELEMENT)`, so an element is
//! never one of the sample points `1..=SAMPLE_POINTS_MAX` (nor 0) and every sketch value is
//! non-zero and invertible.
//!
//! **Collisions.** Elements are (close to) uniform over P − FIRST_ELEMENT ≈ 2^61 values, so n
//! elements contain a colliding pair with probability ≈ n²/(2·2^61): 2.2·10^−5 for n = 10^7 in
//! one partition (and 2·10^−9 at 10^5). A collision makes two entries look like one to the
//! sketch; anti-entropy then never ships one of them, which a periodic full digest catches.
//!
//! **Position.** Elements are ordered by `position = element − FIRST_ELEMENT`, a 61-bit value
//! whose top bits select the leaf (and finer sub-ranges) of the hierarchical sketch.

use super::field::P;
use xxhash_rust::xxh3::Xxh3;

/// The largest number of sample points any sketch uses; points are `1..=SAMPLE_POINTS_MAX`.
pub const SAMPLE_POINTS_MAX: u64 = 4096;

/// The smallest element value.
pub const FIRST_ELEMENT: u64 = SAMPLE_POINTS_MAX + 1;

/// Number of distinct element values.
pub const ELEMENT_SPACE: u64 = P - FIRST_ELEMENT;

/// Bits of [`position`]; the top bits choose leaves.
pub const POSITION_BITS: u32 = 61;

/// Maps a 64-bit hash to an element.
pub fn element_from_hash(hash: u64) -> u64 {
    FIRST_ELEMENT + hash % ELEMENT_SPACE
}

/// The element of an entry: `xxh3_64(key ‖ version)` mapped into the field.
///
/// `version` is the caller's byte encoding of the entry version (replication uses
/// [`version_bytes`]); the hash is streamed so no concatenation is allocated.
pub fn element_of(key: &[u8], version: &[u8]) -> u64 {
    let mut hasher = Xxh3::new();
    hasher.update(key);
    hasher.update(version);
    element_from_hash(hasher.digest())
}

/// The canonical 16-byte encoding of a version `(hlc, node)`: both big-endian.
pub fn version_bytes(hlc: u64, node: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&hlc.to_be_bytes());
    out[8..].copy_from_slice(&node.to_be_bytes());
    out
}

/// Whether `value` can be an element.
pub fn is_element(value: u64) -> bool {
    (FIRST_ELEMENT..P).contains(&value)
}

/// The element's 61-bit position in the hash range (used for leaves and ranges).
pub fn position(element: u64) -> u64 {
    debug_assert!(is_element(element));
    element - FIRST_ELEMENT
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]
        #[test]
        fn elements_avoid_sample_points(hash in any::<u64>()) {
            let element = element_from_hash(hash);
            prop_assert!(is_element(element));
            prop_assert!(element > SAMPLE_POINTS_MAX);
            prop_assert!(position(element) < 1 << POSITION_BITS);
        }

        #[test]
        fn streaming_equals_concatenation(key in proptest::collection::vec(any::<u8>(), 0..40), hlc in any::<u64>(), node in any::<u64>()) {
            let version = version_bytes(hlc, node);
            let mut joined = key.clone();
            joined.extend_from_slice(&version);
            prop_assert_eq!(element_of(&key, &version), element_from_hash(xxhash_rust::xxh3::xxh3_64(&joined)));
        }
    }

    #[test]
    fn extremes() {
        assert_eq!(element_from_hash(0), FIRST_ELEMENT);
        assert!(is_element(element_from_hash(u64::MAX)));
        assert!(!is_element(P));
        assert!(!is_element(1));
    }
}
