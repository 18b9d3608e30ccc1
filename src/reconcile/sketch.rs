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
use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};

/// Bits of the position that choose a leaf.
pub const LEAF_BITS: u32 = 7;
/// Leaves per partition.
pub const LEAF_COUNT: usize = 1 << LEAF_BITS;
/// Sample points kept per leaf: the most points any single range can be sent with.
pub const LEAF_POINTS: usize = 128;

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

/// Hasher for elements, which are already uniform hashes: one multiply spreads the (always
/// zero) top bits that hashbrown uses for its control bytes.
#[derive(Default, Clone, Copy)]
pub struct ElementHasher(u64);

impl Hasher for ElementHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 ^ byte as u64).wrapping_mul(0x100_0000_01B3);
        }
    }
    fn write_u64(&mut self, value: u64) {
        self.0 = value.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// A set of elements hashed with [`ElementHasher`].
pub type ElementSet = HashSet<u64, BuildHasherDefault<ElementHasher>>;

/// The sketch of one partition's set of elements, kept incrementally.
pub struct PartitionSketch {
    numerators: Vec<u64>,
    denominators: Vec<u64>,
    elements: Vec<ElementSet>,
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
            elements: (0..LEAF_COUNT).map(|_| ElementSet::default()).collect(),
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
        self.elements.iter().all(HashSet::is_empty)
    }

    /// Whether the set holds `element`.
    pub fn contains(&self, element: u64) -> bool {
        element::is_element(element) && self.elements[leaf_of(element)].contains(&element)
    }

    /// The elements of one leaf.
    pub fn leaf_elements(&self, leaf: usize) -> &ElementSet {
        &self.elements[leaf]
    }

    /// Adds elements (each must satisfy `element::is_element`); returns how many were new.
    pub fn insert_batch(&mut self, elements: &[u64]) -> usize {
        let sets = &mut self.elements;
        self.sorted.clear();
        self.sorted.extend(elements.iter().copied().filter(|&x| {
            assert!(element::is_element(x), "{x} is not an element");
            sets[leaf_of(x)].insert(x)
        }));
        let added = self.sorted.len();
        self.apply_sorted(true);
        added
    }

    /// Removes elements; returns how many were present.
    pub fn remove_batch(&mut self, elements: &[u64]) -> usize {
        let sets = &mut self.elements;
        self.sorted.clear();
        self.sorted.extend(
            elements
                .iter()
                .copied()
                .filter(|&x| element::is_element(x) && sets[leaf_of(x)].remove(&x)),
        );
        let removed = self.sorted.len();
        self.apply_sorted(false);
        removed
    }

    /// Counting-sorts `self.sorted` by leaf, then runs the kernel once per touched leaf.
    fn apply_sorted(&mut self, insert: bool) {
        let batch = std::mem::take(&mut self.sorted);
        let mut by_leaf = vec![0u64; batch.len()];
        self.leaf_starts.fill(0);
        for &x in &batch {
            self.leaf_starts[leaf_of(x) + 1] += 1;
        }
        for leaf in 0..LEAF_COUNT {
            self.leaf_starts[leaf + 1] += self.leaf_starts[leaf];
        }
        let mut next = self.leaf_starts.clone();
        for &x in &batch {
            let slot = &mut next[leaf_of(x)];
            by_leaf[*slot] = x;
            *slot += 1;
        }
        let vectors = if insert {
            &mut self.numerators
        } else {
            &mut self.denominators
        };
        for leaf in 0..LEAF_COUNT {
            let (start, end) = (self.leaf_starts[leaf], self.leaf_starts[leaf + 1]);
            if start < end {
                let values = &mut vectors[leaf * LEAF_POINTS..(leaf + 1) * LEAF_POINTS];
                self.kernel
                    .multiply_linear_factors(values, sample_points(), &by_leaf[start..end]);
            }
        }
        self.sorted = batch;
    }

    /// A frozen copy of `χ_leaf(z)` for every leaf and point (one batched inversion), which a
    /// session works from so that concurrent updates cannot mix two states of the set.
    pub fn snapshot(&self) -> Snapshot {
        let mut inverses = self.denominators.clone();
        field::batch_invert(&mut inverses);
        let values = self
            .numerators
            .iter()
            .zip(&inverses)
            .map(|(&n, &d)| field::mul(n, d))
            .collect();
        Snapshot {
            values,
            counts: self.elements.iter().map(|set| set.len() as u64).collect(),
        }
    }
}

/// `χ_leaf` at every sample point for every leaf, and the leaf sizes, at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    values: Vec<u64>,
    counts: Vec<u64>,
}

impl Snapshot {
    /// `χ` of the leaves `leaves` (a range) at the points `first..first + out.len()`
    /// (1-based), multiplied into `out`; returns the number of elements in those leaves.
    pub fn range_values(
        &self,
        leaves: std::ops::Range<usize>,
        first: usize,
        out: &mut [u64],
    ) -> u64 {
        assert!(leaves.end <= LEAF_COUNT && first >= 1 && first - 1 + out.len() <= LEAF_POINTS);
        for leaf in leaves.clone() {
            let row = &self.values[leaf * LEAF_POINTS + first - 1..][..out.len()];
            for (slot, &value) in out.iter_mut().zip(row) {
                *slot = field::mul(*slot, value);
            }
        }
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
            for point in [1usize, 2, 77, LEAF_POINTS] {
                let mut value = [1];
                let count = snapshot.range_values(0..LEAF_COUNT, point, &mut value);
                prop_assert_eq!(count, present.len() as u64);
                prop_assert_eq!(value[0], chi(&present, point as u64));
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
            .range_values(leaf_of(x)..leaf_of(x) + 1, 3, &mut value);
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
