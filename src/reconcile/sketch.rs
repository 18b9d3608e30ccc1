//! The per-partition hierarchical sketch (RECONCILE.md §3).
//!
//! A partition's hash range is cut into [`LEAF_COUNT`] leaves by the top [`LEAF_BITS`] bits of
//! an element's position. Each leaf keeps a numerator and a denominator vector over the sample
//! points `1..=LEAF_POINTS`: inserting x multiplies the numerator by `(z − x)`, removing x
//! multiplies the denominator, so the hot path never inverts. A coarser range is the pointwise
//! product of its leaves, so a failed decode splits the range without rescanning the set.
//! Ranges finer than a leaf (needed only when one leaf alone differs by more than a sketch can
//! decode) are computed from the leaf's element set.
//!
//! **Invariants:** `numerator[l] / denominator[l]` at point z equals `Π_{x ∈ leaf l} (z − x)`;
//! `elements[l]` is exactly the set of elements of leaf l (inserting a present element or
//! removing an absent one is a no-op, so the sketch is always of a set, never a multiset).

use super::element::{self, POSITION_BITS};
use super::field;
use super::kernel::Kernel;

/// Bits of the position that choose a leaf.
pub const LEAF_BITS: u32 = 8;
/// Leaves per partition.
pub const LEAF_COUNT: usize = 1 << LEAF_BITS;
/// Sample points kept per leaf: the most points any single range can be sent with.
pub const LEAF_POINTS: usize = 64;

/// The sample points `1..=LEAF_POINTS`.
pub fn sample_points() -> &'static [u64; LEAF_POINTS] {
    static POINTS: [u64; LEAF_POINTS] = {
        let mut points = [0; LEAF_POINTS];
        let mut i = 0;
        while i < LEAF_POINTS {
            points[i] = i as u64 + 1;
            i += 1;
        }
        points
    };
    &POINTS
}

/// The leaf of an element.
pub fn leaf_of(element: u64) -> usize {
    (element::position(element) >> (POSITION_BITS - LEAF_BITS)) as usize
}

/// Low bits of an element that its place in a [`LeafSet`] depends on: a fingerprint of at
/// least this many low bits finds its elements by lookup instead of a scan of the range.
pub const LOOKUP_BITS: u32 = 16;

const LOOKUP_MASK: u64 = (1 << LOOKUP_BITS) - 1;

/// The hash of an element in a [`LeafSet`]. Elements are uniform, so one odd multiply spreads
/// the low bits over the word (hashbrown takes its control byte from the top bits).
fn lookup_hash(element: u64) -> u64 {
    (element & LOOKUP_MASK).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// The elements of one leaf.
///
/// A hash set whose hash depends only on an element's low [`LOOKUP_BITS`] bits, so that the
/// elements ending in a given fingerprint are found in O(1) ([`LeafSet::matching`]): the
/// initiator of a session resolves the responder's fingerprints without scanning its ranges.
/// Elements agreeing in those bits share a probe sequence: ≈ n²/2^17 pairs in a leaf of n
/// elements, a few per lookup even for 10^5 elements in one leaf.
#[derive(Clone, Debug, Default)]
pub struct LeafSet {
    table: hashbrown::HashTable<u64>,
}

/// A snapshot holds the elements, sorted; their order in the table never leaks (sessions sort
/// what they ship and multiply the rest commutatively), so a rebuilt table behaves the same.
#[cfg(feature = "snapshot")]
impl serde::Serialize for LeafSet {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut elements: Vec<u64> = self.iter().collect();
        elements.sort_unstable();
        serializer.collect_seq(elements)
    }
}

#[cfg(feature = "snapshot")]
impl<'de> serde::Deserialize<'de> for LeafSet {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let elements = Vec::<u64>::deserialize(deserializer)?;
        let mut set = LeafSet::default();
        for element in elements {
            set.insert(element);
        }
        Ok(set)
    }
}

impl LeafSet {
    /// Adds `element`; false if it was present.
    pub fn insert(&mut self, element: u64) -> bool {
        match self
            .table
            .entry(lookup_hash(element), |&x| x == element, |&x| lookup_hash(x))
        {
            hashbrown::hash_table::Entry::Occupied(_) => false,
            hashbrown::hash_table::Entry::Vacant(slot) => {
                slot.insert(element);
                true
            }
        }
    }

    /// Removes `element`; false if it was absent.
    pub fn remove(&mut self, element: u64) -> bool {
        self.table
            .find_entry(lookup_hash(element), |&x| x == element)
            .map(hashbrown::hash_table::OccupiedEntry::remove)
            .is_ok()
    }

    /// Whether `element` is present.
    pub fn contains(&self, element: u64) -> bool {
        self.table
            .find(lookup_hash(element), |&x| x == element)
            .is_some()
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether the leaf is empty.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// The elements, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.table.iter().copied()
    }

    /// The elements whose low `width` bits equal `fingerprint` (`width ≥ LOOKUP_BITS`).
    pub fn matching(&self, fingerprint: u64, width: u32) -> impl Iterator<Item = u64> + '_ {
        assert!(
            (LOOKUP_BITS..=64).contains(&width),
            "fingerprint too narrow"
        );
        let mask = u64::MAX >> (64 - width);
        self.table
            .iter_hash(lookup_hash(fingerprint))
            .copied()
            .filter(move |&x| x & mask == fingerprint)
    }
}

/// The sketch of one partition's set of elements, kept incrementally.
#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
pub struct PartitionSketch {
    numerators: Vec<u64>,
    denominators: Vec<u64>,
    elements: Vec<LeafSet>,
    // Not in a snapshot: a resumed run picks this CPU's best (every kernel gives the same sums).
    #[cfg_attr(feature = "snapshot", serde(skip, default = "Kernel::best"))]
    kernel: Kernel,
    sorted: Vec<u64>,
    leaf_starts: Vec<usize>,
}

impl Default for PartitionSketch {
    fn default() -> Self {
        Self::new()
    }
}

impl PartitionSketch {
    /// An empty sketch using the fastest kernel of this CPU.
    pub fn new() -> Self {
        Self::with_kernel(Kernel::best())
    }

    /// An empty sketch using the given kernel (which must be available).
    pub fn with_kernel(kernel: Kernel) -> Self {
        assert!(
            kernel.is_available(),
            "kernel {} is not available",
            kernel.name()
        );
        PartitionSketch {
            numerators: vec![1; LEAF_COUNT * LEAF_POINTS],
            denominators: vec![1; LEAF_COUNT * LEAF_POINTS],
            elements: (0..LEAF_COUNT).map(|_| LeafSet::default()).collect(),
            kernel,
            sorted: Vec::new(),
            leaf_starts: vec![0; LEAF_COUNT + 1],
        }
    }

    /// The kernel used for updates.
    pub fn kernel(&self) -> Kernel {
        self.kernel
    }

    /// Number of elements in the set.
    pub fn len(&self) -> u64 {
        self.elements.iter().map(|set| set.len() as u64).sum()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.elements.iter().all(LeafSet::is_empty)
    }

    /// Whether the set holds `element`.
    pub fn contains(&self, element: u64) -> bool {
        element::is_element(element) && self.elements[leaf_of(element)].contains(element)
    }

    /// The elements of one leaf.
    pub fn leaf_elements(&self, leaf: usize) -> &LeafSet {
        &self.elements[leaf]
    }

    /// Adds elements (each must satisfy `element::is_element`); returns how many were new.
    pub fn insert_batch(&mut self, elements: &[u64]) -> usize {
        for &x in elements {
            assert!(element::is_element(x), "{x} is not an element");
        }
        self.apply(elements, true)
    }

    /// Removes elements; returns how many were present.
    pub fn remove_batch(&mut self, elements: &[u64]) -> usize {
        self.apply(elements, false)
    }

    /// Counting-sorts the batch by leaf, then per touched leaf updates the element set (a
    /// leaf at a time, so its table stays in cache) and runs the kernel on the elements that
    /// changed it. Returns how many did.
    fn apply(&mut self, elements: &[u64], insert: bool) -> usize {
        let mut by_leaf = std::mem::take(&mut self.sorted);
        by_leaf.clear();
        by_leaf.resize(elements.len(), 0);
        self.leaf_starts.fill(0);
        let valid = || elements.iter().copied().filter(|&x| element::is_element(x));
        for x in valid() {
            self.leaf_starts[leaf_of(x) + 1] += 1;
        }
        for leaf in 0..LEAF_COUNT {
            self.leaf_starts[leaf + 1] += self.leaf_starts[leaf];
        }
        let mut next = self.leaf_starts.clone();
        for x in valid() {
            let slot = &mut next[leaf_of(x)];
            by_leaf[*slot] = x;
            *slot += 1;
        }
        let vectors = if insert {
            &mut self.numerators
        } else {
            &mut self.denominators
        };
        let mut changed_total = 0;
        for leaf in 0..LEAF_COUNT {
            let (start, end) = (self.leaf_starts[leaf], self.leaf_starts[leaf + 1]);
            let set = &mut self.elements[leaf];
            // Keep, in place, the elements that change the set (duplicates and absent removals
            // are no-ops, so the sketch stays a sketch of a set).
            let mut kept = start;
            for i in start..end {
                let x = by_leaf[i];
                let changed = if insert { set.insert(x) } else { set.remove(x) };
                if changed {
                    by_leaf[kept] = x;
                    kept += 1;
                }
            }
            if kept > start {
                let values = &mut vectors[leaf * LEAF_POINTS..(leaf + 1) * LEAF_POINTS];
                self.kernel
                    .multiply_linear_factors(values, sample_points(), &by_leaf[start..kept]);
            }
            changed_total += kept - start;
        }
        self.sorted = by_leaf;
        changed_total
    }

    /// A frozen copy of every leaf's numerator and denominator, which a session works from so
    /// that concurrent updates cannot mix two states of the set. Nothing is inverted here: a
    /// session reads a small part of the snapshot (16 points of the whole range when the sets
    /// are equal), so each read inverts only the products it returns.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            numerators: self.numerators.clone(),
            denominators: self.denominators.clone(),
            counts: self.elements.iter().map(|set| set.len() as u64).collect(),
        }
    }
}

/// Every leaf's numerator and denominator at every sample point, and the leaf sizes, at one
/// moment.
#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    numerators: Vec<u64>,
    denominators: Vec<u64>,
    counts: Vec<u64>,
}

impl Snapshot {
    /// `χ` of the leaves `leaves` (a range) at the points `first..first + out.len()`
    /// (1-based), multiplied into `out`; returns the number of elements in those leaves.
    /// One batched inversion of the range's denominator products; the products over leaves
    /// run on `kernel` (which must be available).
    pub fn range_values(
        &self,
        kernel: Kernel,
        leaves: std::ops::Range<usize>,
        first: usize,
        out: &mut [u64],
    ) -> u64 {
        assert!(leaves.end <= LEAF_COUNT && first >= 1 && first - 1 + out.len() <= LEAF_POINTS);
        let mut numerator = vec![1; out.len()];
        let mut denominator = vec![1; out.len()];
        for leaf in leaves.clone() {
            let offset = leaf * LEAF_POINTS + first - 1;
            kernel.multiply_pointwise(&mut numerator, &self.numerators[offset..][..out.len()]);
            kernel.multiply_pointwise(&mut denominator, &self.denominators[offset..][..out.len()]);
        }
        // Non-zero: every factor is z − x with z a sample point and x an element, never equal.
        field::batch_invert(&mut denominator);
        kernel.multiply_pointwise(&mut numerator, &denominator);
        kernel.multiply_pointwise(out, &numerator);
        self.counts[leaves].iter().sum()
    }

    /// Total number of elements.
    pub fn len(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Whether the snapshot is of an empty set.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::element::element_from_hash;
    use proptest::prelude::*;

    fn chi(set: &[u64], point: u64) -> u64 {
        set.iter()
            .fold(1, |acc, &x| field::mul(acc, field::sub(point, x)))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]
        #[test]
        fn snapshot_matches_direct_product(seeds in proptest::collection::vec(any::<u64>(), 0..300),
                                           removed in 0usize..100) {
            let elements: Vec<u64> = seeds.iter().map(|&s| element_from_hash(s)).collect();
            let mut sketch = PartitionSketch::new();
            sketch.insert_batch(&elements);
            let removed = removed.min(elements.len());
            prop_assert!(sketch.remove_batch(&elements[..removed]) <= removed);
            let mut present: Vec<u64> = elements[removed..].to_vec();
            present.sort_unstable();
            present.dedup();
            present.retain(|x| !elements[..removed].contains(x));
            prop_assert_eq!(sketch.len(), present.len() as u64);
            let snapshot = sketch.snapshot();
            for point in [1usize, 2, LEAF_POINTS / 2 + 1, LEAF_POINTS] {
                let mut value = [1];
                let count = snapshot.range_values(Kernel::best(), 0..LEAF_COUNT, point, &mut value);
                prop_assert_eq!(count, present.len() as u64);
                prop_assert_eq!(value[0], chi(&present, point as u64));
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        /// LeafSet against a HashSet model; `matching` finds exactly the elements with the
        /// fingerprint. Elements share their low bits often here (drawn from a small pool of
        /// low halves), so colliding probe sequences are exercised.
        #[test]
        fn leaf_set_matches_model(ops in proptest::collection::vec((any::<bool>(), 0u64..64, 0u64..4), 0..400),
                                  width in LOOKUP_BITS..=64) {
            let mut set = LeafSet::default();
            let mut model = std::collections::HashSet::new();
            let element = |high: u64, low: u64| element_from_hash(high << 32 | low);
            for &(insert, high, low) in &ops {
                let x = element(high, low);
                if insert {
                    prop_assert_eq!(set.insert(x), model.insert(x));
                } else {
                    prop_assert_eq!(set.remove(x), model.remove(&x));
                }
                prop_assert_eq!(set.len(), model.len());
            }
            let mut all: Vec<u64> = set.iter().collect();
            all.sort_unstable();
            let mut expected: Vec<u64> = model.iter().copied().collect();
            expected.sort_unstable();
            prop_assert_eq!(all, expected);
            let mask = u64::MAX >> (64 - width);
            for &x in model.iter().take(20) {
                let mut got: Vec<u64> = set.matching(x & mask, width).collect();
                got.sort_unstable();
                let mut want: Vec<u64> = model.iter().copied().filter(|y| y & mask == x & mask).collect();
                want.sort_unstable();
                prop_assert_eq!(got, want);
                prop_assert!(set.contains(x));
            }
        }
    }

    #[test]
    fn duplicates_and_absent_removals_are_ignored() {
        let x = element_from_hash(99);
        let mut sketch = PartitionSketch::with_kernel(Kernel::Scalar);
        assert_eq!(sketch.insert_batch(&[x, x]), 1);
        assert_eq!(sketch.remove_batch(&[element_from_hash(5)]), 0);
        assert!(sketch.contains(x));
        let mut value = [1];
        sketch
            .snapshot()
            .range_values(Kernel::best(), leaf_of(x)..leaf_of(x) + 1, 3, &mut value);
        assert_eq!(value[0], field::sub(3, x));
        assert_eq!(sketch.remove_batch(&[x]), 1);
        assert!(sketch.is_empty());
    }

    #[test]
    fn kernels_agree_on_a_batch() {
        let elements: Vec<u64> = (0..500u64)
            .map(|s| element_from_hash(s.wrapping_mul(0x1234_5678_9ABC)))
            .collect();
        let snapshots: Vec<Snapshot> = Kernel::available()
            .into_iter()
            .map(|kernel| {
                let mut sketch = PartitionSketch::with_kernel(kernel);
                sketch.insert_batch(&elements);
                sketch.remove_batch(&elements[..50]);
                sketch.snapshot()
            })
            .collect();
        assert!(snapshots.windows(2).all(|pair| pair[0] == pair[1]));
    }
}
