//! Batched sketch-update kernels: `values[i] *= Π_{x ∈ batch} (points[i] − x)` in F_p.
//!
//! The hot loop of every sketch insert (RECONCILE.md §8). AVX2 and AVX-512F only multiply
//! 32×32→64 bits per lane, so one 61×61-bit product is four such multiplies plus folds with
//! 2^61 ≡ 1 (mod p): about twenty vector instructions. On the development CPU (AMD EPYC, Zen 1:
//! one vector multiplier, 256-bit ops split in two) the kernels are bound by that count.
//!
//! **Finite differences (AVX2, consecutive points).** The sample points are consecutive
//! integers (1..=128, or a run of them), and along consecutive z a degree-D polynomial has
//! `Δ^k Q(z + 1) = Δ^k Q(z) + Δ^{k+1} Q(z)` with `Δ^D` constant (D! when monic). So each of
//! the four lanes takes a group of eight elements (32 per pass; a last pass takes up to 40),
//! seeds its table Δ^0..Δ^7 of `Q(z) = Π_group (z − x)` at the first point (36 products, in
//! the falling-factorial basis), and walks the points with one product `acc[z] *= Δ^0` and eight
//! additions: one product per point per eight elements instead of eight. Entries are folded
//! every second point (bounds at `fd_walk`); per-lane accumulators (4 KiB for 128 points, in
//! L1) are multiplied together and into `values` once per call, not per pass. A short last
//! pass uses lanes of lower degree. Measured with `starling-bench field` on that CPU at
//! m = 128 and 64 elements per call: 52–66 ns per element, against 117–131 for the quad
//! kernel below and ~600 for scalar.
//!
//! **Other points, tiny batches.** Lanes run across the points and the batch is the outer
//! loop, so each block of values stays in registers for the whole batch. At points below 256
//! the AVX2 kernel multiplies four factors at once: each quad of elements is expanded to
//! z⁴ + c3 z³ + c2 z² + c1 z + c0, whose terms are cheap because every power of z fits 32 bits.
//! Its operands split at bit 31 and fold with 2^62 ≡ 2, which needs fewer shifts than a split
//! at bit 32; the finite-difference path splits at bit 32 and takes the high halves with a
//! shuffle instead.
//!
//! **Invariant:** every kernel returns exactly what [`Kernel::Scalar`] returns (canonical
//! values); the property tests check this against u128 arithmetic, edge values included.
//! IFMA (52-bit multiplies) is deliberately not used: it needs a field below 2^52, where
//! element collisions become likely (see the module docs of `reconcile`).

use super::field::{self, P};

/// A sketch-update kernel. [`Kernel::best`] picks the fastest one the CPU supports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// Portable reference: one u128 multiply and a Mersenne fold per product.
    Scalar,
    /// 4 points per 256-bit vector (x86-64 with AVX2).
    Avx2,
    /// 8 points per 512-bit vector (x86-64 with AVX-512F).
    Avx512,
}

impl Kernel {
    /// Every kernel, fastest last.
    pub const ALL: [Kernel; 3] = [Kernel::Scalar, Kernel::Avx2, Kernel::Avx512];

    /// Whether this CPU can run the kernel (checked at run time).
    pub fn is_available(self) -> bool {
        match self {
            Kernel::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => std::arch::is_x86_feature_detected!("avx2"),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The kernels this CPU can run.
    pub fn available() -> Vec<Kernel> {
        Kernel::ALL
            .into_iter()
            .filter(|kernel| kernel.is_available())
            .collect()
    }

    /// The fastest kernel this CPU can run.
    pub fn best() -> Kernel {
        Kernel::available().pop().unwrap_or(Kernel::Scalar)
    }

    /// A short lower-case name (`scalar`, `avx2`, `avx512`).
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Scalar => "scalar",
            Kernel::Avx2 => "avx2",
            Kernel::Avx512 => "avx512",
        }
    }

    /// Multiplies `values[i]` by `Π_{x ∈ xs} (points[i] − x)` for every i.
    ///
    /// All inputs must be canonical (`< P`) and `values.len() == points.len()`.
    /// Panics if the kernel is not available on this CPU.
    pub fn multiply_linear_factors(self, values: &mut [u64], points: &[u64], xs: &[u64]) {
        assert_eq!(values.len(), points.len(), "one value per sample point");
        debug_assert!(xs.iter().chain(points.iter()).all(|&x| x < P));
        assert!(
            self.is_available(),
            "kernel {} is not available on this CPU",
            self.name()
        );
        match self {
            Kernel::Scalar => scalar(values, points, xs),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => x86::avx2(values, points, xs),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => x86::avx512(values, points, xs),
            #[cfg(not(target_arch = "x86_64"))]
            _ => scalar(values, points, xs),
        }
    }

    /// `values[i] ← values[i] · factors[i]` for every i (both canonical; the result too): the
    /// products of leaf sketches over a range. AVX-512 CPUs run the AVX2 loop (it is not
    /// the hot path that `multiply_linear_factors` is). Panics if the kernel is not available.
    pub fn multiply_pointwise(self, values: &mut [u64], factors: &[u64]) {
        assert_eq!(values.len(), factors.len(), "one factor per value");
        debug_assert!(values.iter().chain(factors).all(|&x| x < P));
        assert!(
            self.is_available(),
            "kernel {} is not available on this CPU",
            self.name()
        );
        match self {
            Kernel::Scalar => scalar_pointwise(values, factors),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 | Kernel::Avx512 => x86::avx2_pointwise(values, factors),
            #[cfg(not(target_arch = "x86_64"))]
            _ => scalar_pointwise(values, factors),
        }
    }
}

fn scalar_pointwise(values: &mut [u64], factors: &[u64]) {
    for (value, &factor) in values.iter_mut().zip(factors) {
        *value = field::mul(*value, factor);
    }
}

/// The reference kernel. The inner loop runs over independent points so products pipeline.
fn scalar(values: &mut [u64], points: &[u64], xs: &[u64]) {
    for &x in xs {
        for (value, &point) in values.iter_mut().zip(points) {
            *value = field::mul(*value, field::sub(point, x));
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) mod x86 {
    //! The x86-64 vector kernels. Each public function checks the CPU feature before it
    //! enters `unsafe`; the `#[target_feature]` bodies only use register intrinsics plus
    //! unaligned loads and stores inside the bounds of the slices or of `[u64; 4]` arrays
    //! (`load4`, `store4`), and aligned loads of the
    //! 32-byte-aligned broadcast coefficients (`Quad`).

    use super::{P, scalar};
    use std::arch::x86_64::*;

    /// [`super::Kernel::multiply_pointwise`] with AVX2: four products per vector.
    pub(super) fn avx2_pointwise(values: &mut [u64], factors: &[u64]) {
        assert!(std::arch::is_x86_feature_detected!("avx2"));
        // SAFETY: AVX2 is present (asserted above).
        #[allow(unsafe_code)]
        unsafe {
            pointwise_body(values, factors);
        }
    }

    #[target_feature(enable = "avx2")]
    fn pointwise_body(values: &mut [u64], factors: &[u64]) {
        let mut value_blocks = values.chunks_exact_mut(4);
        let mut factor_blocks = factors.chunks_exact(4);
        for (block, factor) in (&mut value_blocks).zip(&mut factor_blocks) {
            let block: &mut [u64; 4] = block.try_into().expect("blocks of four");
            let factor: &[u64; 4] = factor.try_into().expect("blocks of four");
            store4(
                block,
                canonical4(mulmod4_split32(load4(block), load4(factor))),
            );
        }
        super::scalar_pointwise(value_blocks.into_remainder(), factor_blocks.remainder());
    }

    /// Points per block kept in registers across the batch (4 vectors).
    const VECTORS_PER_BLOCK: usize = 4;

    pub(super) fn avx2(values: &mut [u64], points: &[u64], xs: &[u64]) {
        assert!(std::arch::is_x86_feature_detected!("avx2"));
        if fits_differences(points, xs) {
            for (values, points) in values.chunks_mut(FD_CHUNK).zip(points.chunks(FD_CHUNK)) {
                // SAFETY: AVX2 is present (asserted above).
                #[allow(unsafe_code)]
                unsafe {
                    differences(values, points[0], xs);
                }
            }
            return;
        }
        let body = values.len() / 4 * 4;
        let (body_values, body_points) = (&mut values[..body], &points[..body]);
        // Tiny points (the sample points 1..=128 always are): four factors per product.
        let tiny = body > 0 && body_points.iter().all(|&z| z < TINY_POINT_LIMIT);
        let quads = if tiny { xs.len() / 4 * 4 } else { 0 };
        for chunk in xs[..quads].chunks(4 * QUADS_PER_CHUNK) {
            // On the stack: no allocation per call (a sketch calls this once per touched leaf).
            let mut coefficients = [Quad::default(); QUADS_PER_CHUNK];
            for (slot, quad) in coefficients.iter_mut().zip(chunk.chunks_exact(4)) {
                *slot = Quad::new(quad);
            }
            let used = &coefficients[..chunk.len() / 4];
            // SAFETY: AVX2 is present (asserted above); the slices have equal lengths.
            #[allow(unsafe_code)]
            unsafe {
                avx2_quads(body_values, body_points, used);
            }
        }
        let rest = &xs[quads..];
        // SAFETY: AVX2 is present (asserted above) and `body <= values.len() == points.len()`.
        #[allow(unsafe_code)]
        unsafe {
            avx2_body(body_values, body_points, rest);
        }
        scalar(&mut values[body..], &points[body..], xs);
    }

    /// Elements per lane in a full finite-difference pass: the degree of each lane's product.
    const FD_DEGREE: usize = 8;

    /// Elements per full pass: one group of `FD_DEGREE` in each of the four lanes.
    const FD_PASS: usize = 4 * FD_DEGREE;

    /// Largest lane degree: a remainder of up to 8 elements joins the last full pass (one walk
    /// of degree ≤ 10 instead of two walks), which the ~32-element calls of a partition insert
    /// often need. Degree 10 for every pass measured no faster than 8 (register pressure).
    const FD_MAX_DEGREE: usize = FD_DEGREE + 2;

    /// Points per accumulator chunk (a leaf has 128): 4 KiB of lane accumulators, kept in L1.
    const FD_CHUNK: usize = 128;

    /// Below these, seeding the difference tables and combining the lanes costs more than the
    /// quad and body kernels. Measured (Zen 1): at 32 points a batch of 4 costs 99 ns per
    /// element by quads and 103 by differences, a batch of 8 80 and 63; at 16 points
    /// differences win from a batch of 4.
    const FD_MIN_POINTS: usize = 16;
    const FD_MIN_ELEMENTS: usize = 8;

    /// Whether the finite-difference kernel applies: enough consecutive points and elements.
    fn fits_differences(points: &[u64], xs: &[u64]) -> bool {
        // Canonical points are below P, so `w[0] + 1` cannot overflow.
        points.len() >= FD_MIN_POINTS
            && xs.len() >= FD_MIN_ELEMENTS
            && points.windows(2).all(|w| w[1] == w[0] + 1)
    }

    /// An unaligned load of four lanes.
    #[target_feature(enable = "avx2")]
    pub(in crate::reconcile) fn load4(lanes: &[u64; 4]) -> __m256i {
        // SAFETY: `lanes` is 32 readable bytes; the load has no alignment requirement.
        #[allow(unsafe_code)]
        unsafe {
            _mm256_loadu_si256(lanes.as_ptr().cast())
        }
    }

    /// An unaligned store of four lanes.
    #[target_feature(enable = "avx2")]
    pub(in crate::reconcile) fn store4(lanes: &mut [u64; 4], vector: __m256i) {
        // SAFETY: `lanes` is 32 writable bytes; the store has no alignment requirement.
        #[allow(unsafe_code)]
        unsafe {
            _mm256_storeu_si256(lanes.as_mut_ptr().cast(), vector);
        }
    }

    /// `(x mod 2^61) + (x >> 61)`: congruent to any lane x, and at most `P + 7`.
    #[target_feature(enable = "avx2")]
    pub(in crate::reconcile) fn fold4(x: __m256i) -> __m256i {
        let p = _mm256_set1_epi64x(P as i64);
        _mm256_add_epi64(_mm256_and_si256(x, p), _mm256_srli_epi64::<61>(x))
    }

    /// `values[i] *= Π_{x ∈ xs} (z0 + i − x)` by finite differences (module docs), for up to
    /// `FD_CHUNK` consecutive points starting at `z0`.
    #[target_feature(enable = "avx2")]
    fn differences(values: &mut [u64], z0: u64, xs: &[u64]) {
        debug_assert!(!values.is_empty() && values.len() <= FD_CHUNK && !xs.is_empty());
        // acc[i] lane g: the product of lane g's polynomials at point z0 + i (≤ P + 7).
        let mut acc = [_mm256_setzero_si256(); FD_CHUNK];
        let acc = &mut acc[..values.len()];
        let mut passes = xs.len() / FD_PASS;
        let remainder = xs.len() % FD_PASS;
        if passes > 0 && remainder <= 4 * (FD_MAX_DEGREE - FD_DEGREE) {
            passes -= 1; // the last full pass takes the remainder
        }
        let (full, last) = xs.split_at(passes * FD_PASS);
        for (pass, group) in full.chunks(FD_PASS).chain([last]).enumerate() {
            let first = pass == 0;
            // A short last pass uses lower-degree lanes: its walk costs less per point.
            match group.len().div_ceil(4) {
                0 => {}
                1 => fd_pass::<1>(acc, z0, group, first),
                2 => fd_pass::<2>(acc, z0, group, first),
                3 => fd_pass::<3>(acc, z0, group, first),
                4 => fd_pass::<4>(acc, z0, group, first),
                5 => fd_pass::<5>(acc, z0, group, first),
                6 => fd_pass::<6>(acc, z0, group, first),
                7 => fd_pass::<7>(acc, z0, group, first),
                8 => fd_pass::<8>(acc, z0, group, first),
                9 => fd_pass::<9>(acc, z0, group, first),
                _ => fd_pass::<FD_MAX_DEGREE>(acc, z0, group, first),
            }
        }
        combine_lanes(values, acc);
    }

    /// One pass: lane g takes the elements `group[4j + g]`, seeds its table, walks the points.
    #[target_feature(enable = "avx2")]
    fn fd_pass<const D: usize>(acc: &mut [__m256i], z0: u64, group: &[u64], first: bool) {
        debug_assert!(D <= FD_MAX_DEGREE && group.len() <= 4 * D);
        let (table, top) = fd_seed::<D>(z0, group);
        if first {
            fd_walk::<D, true>(acc, table, top);
        } else {
            fd_walk::<D, false>(acc, table, top);
        }
    }

    /// Δ^0..Δ^{D−1} at z0 of each lane's polynomial `Q_g(z) = Π_j (z − x_{g,j})`, lazily
    /// reduced (≤ P + 7), and the constant Δ^D exactly (D! for a lane of D elements, else 0).
    ///
    /// Builds `Q_g(z0 + t) = Π_j (t + y_j)`, `y_j = z0 − x_j`, in the falling-factorial basis
    /// `t^(k) = t(t − 1)…(t − k + 1)`, where `Δ^k Q(z0) = k!·a_k`. Since `t·t^(k) = t^(k+1) +
    /// k·t^(k)`, multiplying by `(s·t + y)` maps `a_k` to `s·a_{k−1} + (s·k + y)·a_k`: D(D + 1)/2
    /// products in independent chains (sampling D + 1 points and differencing them took 63
    /// products in serial chains and twice the time). A missing element (short pass) is the
    /// factor 1: s = 0, y = 1.
    #[target_feature(enable = "avx2")]
    fn fd_seed<const D: usize>(z0: u64, group: &[u64]) -> ([__m256i; D], __m256i) {
        let mut y = [[1u64; 4]; D];
        let mut s = [[0u64; 4]; D];
        for (i, &x) in group.iter().enumerate() {
            y[i / 4][i % 4] = super::field::sub(z0, x);
            s[i / 4][i % 4] = u64::MAX;
        }
        let mut a = [_mm256_setzero_si256(); FD_MAX_DEGREE + 1];
        a[0] = _mm256_set1_epi64x(1);
        for j in 0..D {
            let (y, s) = (load4(&y[j]), load4(&s[j]));
            // Degree ≤ j so far: the new top is s·a_j, then downwards so a_{k−1} is still old.
            a[j + 1] = _mm256_and_si256(a[j], s);
            for k in (0..=j).rev() {
                // a_k ≤ P + 7 and y + k ≤ P + 8 (k < D ≤ 10): valid operands; sum < 2^63.
                let factor = _mm256_add_epi64(y, _mm256_and_si256(_mm256_set1_epi64x(k as i64), s));
                let product = mulmod4_split32(a[k], factor);
                let carried = if k > 0 {
                    _mm256_and_si256(a[k - 1], s)
                } else {
                    _mm256_setzero_si256()
                };
                a[k] = fold4(_mm256_add_epi64(product, carried));
            }
        }
        let mut table = [_mm256_setzero_si256(); D];
        let mut factorial = 1u64;
        for (k, entry) in table.iter_mut().enumerate() {
            factorial *= k.max(1) as u64;
            *entry = if k < 2 {
                a[k]
            } else {
                mulmod4_split32(a[k], _mm256_set1_epi64x(factorial as i64))
            };
        }
        // a_D is exactly 1 (D elements) or 0 (fewer): the mask keeps D! or 0, both canonical.
        let top_mask = _mm256_cmpeq_epi64(a[D], _mm256_set1_epi64x(1));
        let top = _mm256_and_si256(top_mask, _mm256_set1_epi64x((factorial * D as u64) as i64));
        (table, top)
    }

    /// Walks the points: `acc[i] *= Δ^0`, then `Δ^k += Δ^{k+1}` for every k.
    ///
    /// Bounds (at most `FD_CHUNK` = 128 points): Δ^D ≤ 10! < 2^22 is exact, so Δ^{D−1} only
    /// grows from ≤ P + 7 to below 2^61 + 2^29 and is never folded. The other entries are
    /// folded to ≤ P + 7 every second point: one point later they are below 2(2^61 + 2^29) <
    /// 2^63, a valid `mulmod4_split32` factor; two points later below 4(2^61 + 2^29) < 2^64
    /// (Δ^k + 2Δ^{k+1} + Δ^{k+2}). The first pass stores Δ^0 (folded) instead of multiplying.
    #[target_feature(enable = "avx2")]
    fn fd_walk<const D: usize, const FIRST: bool>(
        acc: &mut [__m256i],
        mut table: [__m256i; D],
        top: __m256i,
    ) {
        debug_assert!(acc.len() <= FD_CHUNK);
        let step = |slot: &mut __m256i, table: &mut [__m256i; D]| {
            *slot = if FIRST {
                fold4(table[0])
            } else {
                mulmod4_split32(*slot, table[0])
            };
            for k in 0..D - 1 {
                table[k] = _mm256_add_epi64(table[k], table[k + 1]);
            }
            table[D - 1] = _mm256_add_epi64(table[D - 1], top);
        };
        let mut pairs = acc.chunks_exact_mut(2);
        for pair in &mut pairs {
            step(&mut pair[0], &mut table);
            step(&mut pair[1], &mut table);
            for entry in &mut table[..D - 1] {
                *entry = fold4(*entry);
            }
        }
        // An odd last point: its update is never used, so no fold.
        for slot in pairs.into_remainder() {
            step(slot, &mut table);
        }
    }

    /// `values[i] *= Π_g acc[i][g]`, canonical. Blocks of four points are transposed in two
    /// halves (`unpack` within 128-bit halves, one cross-half permute per two products), so a
    /// point costs one vector product of lanes plus one into its value; two blocks at a time,
    /// as their product chains are independent and hide each other's latency.
    #[target_feature(enable = "avx2")]
    fn combine_lanes(values: &mut [u64], acc: &[__m256i]) {
        debug_assert_eq!(values.len(), acc.len());
        let mut value_pairs = values.chunks_exact_mut(8);
        let mut acc_pairs = acc.chunks_exact(8);
        for (block, a) in (&mut value_pairs).zip(&mut acc_pairs) {
            let (low, high) = (lane_products(&a[..4]), lane_products(&a[4..]));
            let (low_values, high_values) = block.split_at_mut(4);
            multiply_into(low_values, low);
            multiply_into(high_values, high);
        }
        let (values, acc) = (value_pairs.into_remainder(), acc_pairs.remainder());
        let mut value_blocks = values.chunks_exact_mut(4);
        let mut acc_blocks = acc.chunks_exact(4);
        for (block, a) in (&mut value_blocks).zip(&mut acc_blocks) {
            multiply_into(block, lane_products(a));
        }
        for (value, a) in value_blocks
            .into_remainder()
            .iter_mut()
            .zip(acc_blocks.remainder())
        {
            let mut lanes = [0u64; 4];
            store4(&mut lanes, *a);
            *value = lanes.iter().fold(*value, |product, &lane| {
                super::field::mul(product, super::field::reduce64(lane))
            });
        }
    }

    /// For four points' lane vectors, the vector of the four points' lane products.
    #[target_feature(enable = "avx2")]
    fn lane_products(a: &[__m256i]) -> __m256i {
        // Lanes (point, group): pair products (i, 01), (i+1, 01), (i, 23), (i+1, 23), …
        let first = mulmod4_split32(
            _mm256_unpacklo_epi64(a[0], a[1]),
            _mm256_unpackhi_epi64(a[0], a[1]),
        );
        let second = mulmod4_split32(
            _mm256_unpacklo_epi64(a[2], a[3]),
            _mm256_unpackhi_epi64(a[2], a[3]),
        );
        mulmod4_split32(
            _mm256_permute2x128_si256::<0x20>(first, second),
            _mm256_permute2x128_si256::<0x31>(first, second),
        )
    }

    /// `block[i] = block[i] · products[i]`, canonical.
    #[target_feature(enable = "avx2")]
    fn multiply_into(block: &mut [u64], products: __m256i) {
        let block: &mut [u64; 4] = block.try_into().expect("blocks of four");
        store4(block, canonical4(mulmod4_split32(products, load4(block))));
    }

    /// Points below this have z⁴ < 2^32, so `avx2_quads` can multiply by 32-bit powers of z.
    const TINY_POINT_LIMIT: u64 = 1 << 8;

    /// Quads whose coefficients are expanded at a time (3.5 KiB of stack, zeroed per chunk).
    const QUADS_PER_CHUNK: usize = 16;

    const LOW30: u64 = (1 << 30) - 1;
    const LOW31: u64 = (1 << 31) - 1;

    /// `[c0, c1, c2, c3]` with `(z − a)(z − b)(z − c)(z − d) = z⁴ + c3 z³ + c2 z² + c1 z + c0`,
    /// each lazily reduced: congruent to the exact coefficient and below `P + 33`.
    ///
    /// Two quadratics `z² + p1 z + p0`, then their product; the sums of products are reduced
    /// once, as u128. Six 64×64 multiplies with short dependency chains: the expansion is
    /// about a twentieth of the AVX2 kernel's time, against a sixth for the step-by-step form.
    pub(super) fn quad_coefficients(quad: &[u64]) -> [u64; 4] {
        debug_assert!(quad.len() == 4 && quad.iter().all(|&x| x < P));
        let wide = |x: u64, y: u64| x as u128 * y as u128;
        let (a, b, c, d) = (quad[0], quad[1], quad[2], quad[3]);
        // −(a + b) ≡ 2P − a − b, in 1..=2P: below 2^62.
        let (p1, q1) = (2 * P - a - b, 2 * P - c - d);
        let (p0, q0) = (fold128(wide(a, b)), fold128(wide(c, d)));
        let c3 = fold128((p1 + q1) as u128);
        let c2 = fold128(wide(p1, q1) + (p0 + q0) as u128);
        let c1 = fold128(wide(p1, q0) + wide(p0, q1));
        let c0 = fold128(wide(p0, q0));
        [c0, c1, c2, c3]
    }

    /// A value below 2^127 reduced to `0..P + 33` (congruent mod P, not canonical).
    fn fold128(x: u128) -> u64 {
        let once = (x as u64 & P) as u128 + (x >> 61); // < 2^61 + 2^66
        (once as u64 & P) + (once >> 61) as u64
    }

    /// One quad's coefficients, split at bit 31 (`c = high·2^31 + low`) and broadcast to all
    /// four lanes, so the kernel reads them as aligned vectors.
    #[derive(Clone, Copy, Default)]
    #[repr(C, align(32))]
    struct Quad {
        c0: [u64; 4],
        low: [[u64; 4]; 3],
        high: [[u64; 4]; 3],
    }

    impl Quad {
        fn new(quad: &[u64]) -> Quad {
            let c = quad_coefficients(quad);
            let low = |k: usize| [c[k] & LOW31; 4];
            let high = |k: usize| [c[k] >> 31; 4];
            Quad {
                c0: [c[0]; 4],
                low: [low(1), low(2), low(3)],
                high: [high(1), high(2), high(3)],
            }
        }
    }

    /// An aligned load of one broadcast coefficient.
    #[target_feature(enable = "avx2")]
    fn load(lanes: &[u64; 4]) -> __m256i {
        // SAFETY: `lanes` is 32 bytes inside a `#[repr(align(32))]` `Quad`.
        #[allow(unsafe_code)]
        unsafe {
            _mm256_load_si256(lanes.as_ptr().cast())
        }
    }

    /// `values[i] *= Π_quads (z_i⁴ + c3 z_i³ + c2 z_i² + c1 z_i + c0)` for tiny points.
    ///
    /// Four linear factors cost one full product plus three 61×32-bit products (a coefficient
    /// half times a power of z below 2^32: two 32×32 multiplies each, summed before one cheap
    /// fold), instead of four full products. Blocks of vectors stay in registers across the
    /// batch, as in `avx2_body` (measured faster than streaming every vector through L1 per
    /// quad). Bounds (z < 2^8, c_k < P + 33 so low_k < 2^31, high_k ≤ 2^30): the low sum is
    /// below 2^61 + 2^57, the high sum below 2^56, and the factor below 2^63, as
    /// `mulmod4_split31` needs.
    // Indexing by vector number keeps the block in named registers; iterators hide that.
    #[allow(clippy::needless_range_loop)]
    #[target_feature(enable = "avx2")]
    fn avx2_quads(values: &mut [u64], points: &[u64], quads: &[Quad]) {
        debug_assert!(values.len().is_multiple_of(4) && values.len() == points.len());
        debug_assert!(points.iter().all(|&z| z < TINY_POINT_LIMIT));
        let low30 = _mm256_set1_epi64x(LOW30 as i64);
        let mut start = 0;
        while start < values.len() {
            let vectors = ((values.len() - start) / 4).min(VECTORS_PER_BLOCK);
            let mut acc = [_mm256_setzero_si256(); VECTORS_PER_BLOCK];
            // powers[v] = [z, z², z³, z⁴], each below 2^32.
            let mut powers = [[_mm256_setzero_si256(); 4]; VECTORS_PER_BLOCK];
            for v in 0..vectors {
                let offset = start + 4 * v;
                // SAFETY: offset + 4 <= len for both slices (vectors counts whole vectors left).
                #[allow(unsafe_code)]
                unsafe {
                    acc[v] = _mm256_loadu_si256(values.as_ptr().add(offset).cast());
                    powers[v][0] = _mm256_loadu_si256(points.as_ptr().add(offset).cast());
                }
                for k in 1..4 {
                    powers[v][k] = _mm256_mul_epu32(powers[v][k - 1], powers[v][0]);
                }
            }
            for quad in quads {
                for v in 0..VECTORS_PER_BLOCK {
                    let z = &powers[v];
                    let mut low = _mm256_add_epi64(load(&quad.c0), z[3]);
                    let mut high = _mm256_setzero_si256();
                    for k in 0..3 {
                        low = _mm256_add_epi64(low, _mm256_mul_epu32(load(&quad.low[k]), z[k]));
                        high = _mm256_add_epi64(high, _mm256_mul_epu32(load(&quad.high[k]), z[k]));
                    }
                    // high·2^31 ≡ (high mod 2^30)·2^31 + (high >> 30), since 2^61 ≡ 1.
                    let shifted = _mm256_add_epi64(
                        _mm256_slli_epi64::<31>(_mm256_and_si256(high, low30)),
                        _mm256_srli_epi64::<30>(high),
                    );
                    acc[v] = mulmod4_split31(acc[v], _mm256_add_epi64(low, shifted));
                }
            }
            for v in 0..vectors {
                let offset = start + 4 * v;
                let canonical = canonical4(acc[v]);
                // SAFETY: as for the loads above.
                #[allow(unsafe_code)]
                unsafe {
                    _mm256_storeu_si256(values.as_mut_ptr().add(offset).cast(), canonical);
                }
            }
            start += 4 * vectors;
        }
    }

    /// `a · f mod P` for four lanes with `a ≤ P + 7` and `f < 2^63` (an unreduced factor);
    /// the result is in `0..=P + 7`.
    ///
    /// Both operands are split at bit 31 (`a = a1·2^31 + a0`), so `a1·f1·2^62 ≡ 2·a1·f1` is a
    /// doubling instead of a shift, and the factor needs no fold before it is multiplied.
    /// Bounds: a0, f0 < 2^31, a1 ≤ 2^30, f1 < 2^32; a0f0 < 2^62, 2·a1f1 < 2^63, the middle
    /// sum < 2^63 + 2^61 folds to < 2^61 + 2^34, so the total stays below 2^64.
    #[target_feature(enable = "avx2")]
    pub(super) fn mulmod4_split31(a: __m256i, f: __m256i) -> __m256i {
        let low30 = _mm256_set1_epi64x(LOW30 as i64);
        let low31 = _mm256_set1_epi64x(LOW31 as i64);
        let p = _mm256_set1_epi64x(P as i64);
        let (a0, a1) = (_mm256_and_si256(a, low31), _mm256_srli_epi64::<31>(a));
        let (f0, f1) = (_mm256_and_si256(f, low31), _mm256_srli_epi64::<31>(f));
        let low_low = _mm256_mul_epu32(a0, f0);
        let middle = _mm256_add_epi64(_mm256_mul_epu32(a0, f1), _mm256_mul_epu32(a1, f0));
        let high_high = _mm256_mul_epu32(a1, f1);
        // middle·2^31 ≡ (middle mod 2^30)·2^31 + (middle >> 30).
        let middle_term = _mm256_add_epi64(
            _mm256_srli_epi64::<30>(middle),
            _mm256_slli_epi64::<31>(_mm256_and_si256(middle, low30)),
        );
        let sum = _mm256_add_epi64(
            _mm256_add_epi64(low_low, _mm256_add_epi64(high_high, high_high)),
            middle_term,
        );
        _mm256_add_epi64(_mm256_and_si256(sum, p), _mm256_srli_epi64::<61>(sum))
    }

    /// `a · f mod P` like `mulmod4_split31` (same bounds: `a ≤ P + 7`, `f < 2^63`, result
    /// `≤ P + 7`), split at bit 32 so the high halves come from a shuffle (two pipes on Zen 1)
    /// instead of a shift (one pipe); in the finite-difference walk it measured as fast as
    /// `mulmod4_split31`, within noise.
    ///
    /// Bounds: a_hi ≤ 2^29, f_hi < 2^31; low·low < 2^64 folds to ≤ P + 7; the middle sum
    /// < 2^63 + 2^61 splits at bit 29 (`2^32·2^29 ≡ 1`) into < 2^35 and < 2^61; 8·high·high
    /// < 2^63 (`2^64 ≡ 8`); the total stays below 2^64.
    #[target_feature(enable = "avx2")]
    pub(super) fn mulmod4_split32(a: __m256i, f: __m256i) -> __m256i {
        let low29 = _mm256_set1_epi64x((1 << 29) - 1);
        let p = _mm256_set1_epi64x(P as i64);
        // Dwords [1, 1, 3, 3] of each half: the high 32 bits land in the low half of each lane.
        let (a_hi, f_hi) = (
            _mm256_shuffle_epi32::<0xF5>(a),
            _mm256_shuffle_epi32::<0xF5>(f),
        );
        let low_low = _mm256_mul_epu32(a, f);
        let middle = _mm256_add_epi64(_mm256_mul_epu32(a, f_hi), _mm256_mul_epu32(a_hi, f));
        let high_high = _mm256_mul_epu32(a_hi, f_hi);
        let low_term = _mm256_add_epi64(
            _mm256_and_si256(low_low, p),
            _mm256_srli_epi64::<61>(low_low),
        );
        let middle_term = _mm256_add_epi64(
            _mm256_srli_epi64::<29>(middle),
            _mm256_slli_epi64::<32>(_mm256_and_si256(middle, low29)),
        );
        let sum = _mm256_add_epi64(
            _mm256_add_epi64(low_term, middle_term),
            _mm256_slli_epi64::<3>(high_high),
        );
        _mm256_add_epi64(_mm256_and_si256(sum, p), _mm256_srli_epi64::<61>(sum))
    }

    /// `mulmod4_split31` (`split32 == false`) or `mulmod4_split32` on plain lanes, for the
    /// tests (which need AVX2 to call them).
    #[cfg(test)]
    pub(super) fn mulmod4_lanes(a: [u64; 4], f: [u64; 4], split32: bool) -> [u64; 4] {
        assert!(std::arch::is_x86_feature_detected!("avx2"));
        let mut out = [0u64; 4];
        // SAFETY: AVX2 is present (asserted above); the loads and the store cover exactly the
        // three 32-byte arrays.
        #[allow(unsafe_code)]
        unsafe {
            let (a, f) = (
                _mm256_loadu_si256(a.as_ptr().cast()),
                _mm256_loadu_si256(f.as_ptr().cast()),
            );
            let product = if split32 {
                mulmod4_split32(a, f)
            } else {
                mulmod4_split31(a, f)
            };
            _mm256_storeu_si256(out.as_mut_ptr().cast(), product);
        }
        out
    }

    pub(super) fn avx512(values: &mut [u64], points: &[u64], xs: &[u64]) {
        assert!(std::arch::is_x86_feature_detected!("avx512f"));
        let body = values.len() / 8 * 8;
        // SAFETY: AVX-512F is present (asserted above) and `body <= values.len() == points.len()`.
        #[allow(unsafe_code)]
        unsafe {
            avx512_body(&mut values[..body], &points[..body], xs);
        }
        scalar(&mut values[body..], &points[body..], xs);
    }

    /// Maps a lazily reduced lane (≤ P + 7) to `0..P`.
    #[target_feature(enable = "avx2")]
    pub(in crate::reconcile) fn canonical4(a: __m256i) -> __m256i {
        let too_big = _mm256_cmpgt_epi64(a, _mm256_set1_epi64x(P as i64 - 1));
        _mm256_sub_epi64(a, _mm256_and_si256(too_big, _mm256_set1_epi64x(P as i64)))
    }

    // Indexing by vector number keeps the block in named registers; iterators hide that.
    #[allow(clippy::needless_range_loop)]
    #[target_feature(enable = "avx2")]
    fn avx2_body(values: &mut [u64], points: &[u64], xs: &[u64]) {
        debug_assert!(values.len().is_multiple_of(4) && values.len() == points.len());
        let mut start = 0;
        while start < values.len() {
            let vectors = ((values.len() - start) / 4).min(VECTORS_PER_BLOCK);
            let mut acc = [_mm256_setzero_si256(); VECTORS_PER_BLOCK];
            let mut z = [_mm256_setzero_si256(); VECTORS_PER_BLOCK];
            for v in 0..vectors {
                let offset = start + 4 * v;
                // SAFETY: offset + 4 <= len for both slices (vectors counts whole vectors left).
                #[allow(unsafe_code)]
                unsafe {
                    acc[v] = _mm256_loadu_si256(values.as_ptr().add(offset).cast());
                    z[v] = _mm256_loadu_si256(points.as_ptr().add(offset).cast());
                }
            }
            for &x in xs {
                let minus_x = _mm256_set1_epi64x((P - x) as i64);
                for v in 0..VECTORS_PER_BLOCK {
                    // z + (P − x) < 2P < 2^63 is a valid unreduced factor as it is.
                    let factor = _mm256_add_epi64(z[v], minus_x);
                    acc[v] = mulmod4_split31(acc[v], factor);
                }
            }
            for v in 0..vectors {
                acc[v] = canonical4(acc[v]);
            }
            for v in 0..vectors {
                let offset = start + 4 * v;
                // SAFETY: as for the loads above.
                #[allow(unsafe_code)]
                unsafe {
                    _mm256_storeu_si256(values.as_mut_ptr().add(offset).cast(), acc[v]);
                }
            }
            start += 4 * vectors;
        }
    }

    /// `a · b mod P` for eight canonical lanes; the result is canonical.
    #[target_feature(enable = "avx512f")]
    fn mulmod8(a: __m512i, b: __m512i) -> __m512i {
        let p = _mm512_set1_epi64(P as i64);
        let low29 = _mm512_set1_epi64((1 << 29) - 1);
        let a_hi = _mm512_srli_epi64::<32>(a);
        let b_hi = _mm512_srli_epi64::<32>(b);
        let low_low = _mm512_mul_epu32(a, b);
        let middle = _mm512_add_epi64(_mm512_mul_epu32(a, b_hi), _mm512_mul_epu32(a_hi, b));
        let high_high = _mm512_mul_epu32(a_hi, b_hi);
        let high_term = _mm512_slli_epi64::<3>(high_high);
        let middle_term = _mm512_add_epi64(
            _mm512_srli_epi64::<29>(middle),
            _mm512_slli_epi64::<32>(_mm512_and_si512(middle, low29)),
        );
        let low_term = _mm512_add_epi64(
            _mm512_and_si512(low_low, p),
            _mm512_srli_epi64::<61>(low_low),
        );
        let sum = _mm512_add_epi64(_mm512_add_epi64(high_term, middle_term), low_term);
        let folded = _mm512_add_epi64(_mm512_and_si512(sum, p), _mm512_srli_epi64::<61>(sum));
        let too_big = _mm512_cmpge_epu64_mask(folded, p);
        _mm512_mask_sub_epi64(folded, too_big, folded, p)
    }

    #[target_feature(enable = "avx512f")]
    fn factor8(z: __m512i, minus_x: __m512i) -> __m512i {
        let p = _mm512_set1_epi64(P as i64);
        let sum = _mm512_add_epi64(z, minus_x);
        let too_big = _mm512_cmpge_epu64_mask(sum, p);
        _mm512_mask_sub_epi64(sum, too_big, sum, p)
    }

    #[allow(clippy::needless_range_loop)]
    #[target_feature(enable = "avx512f")]
    fn avx512_body(values: &mut [u64], points: &[u64], xs: &[u64]) {
        debug_assert!(values.len().is_multiple_of(8) && values.len() == points.len());
        let mut start = 0;
        while start < values.len() {
            let vectors = ((values.len() - start) / 8).min(VECTORS_PER_BLOCK);
            let mut acc = [_mm512_setzero_si512(); VECTORS_PER_BLOCK];
            let mut z = [_mm512_setzero_si512(); VECTORS_PER_BLOCK];
            for v in 0..vectors {
                let offset = start + 8 * v;
                // SAFETY: offset + 8 <= len for both slices.
                #[allow(unsafe_code)]
                unsafe {
                    acc[v] = _mm512_loadu_si512(values.as_ptr().add(offset).cast());
                    z[v] = _mm512_loadu_si512(points.as_ptr().add(offset).cast());
                }
            }
            for &x in xs {
                let minus_x = _mm512_set1_epi64((P - x) as i64);
                for v in 0..VECTORS_PER_BLOCK {
                    acc[v] = mulmod8(acc[v], factor8(z[v], minus_x));
                }
            }
            for v in 0..vectors {
                let offset = start + 8 * v;
                // SAFETY: as for the loads above.
                #[allow(unsafe_code)]
                unsafe {
                    _mm512_storeu_si512(values.as_mut_ptr().add(offset).cast(), acc[v]);
                }
            }
            start += 8 * vectors;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn reference(values: &[u64], points: &[u64], xs: &[u64]) -> Vec<u64> {
        let modulus = P as u128;
        values
            .iter()
            .zip(points)
            .map(|(&value, &point)| {
                xs.iter().fold(value as u128, |acc, &x| {
                    acc * ((point as u128 + modulus - x as u128) % modulus) % modulus
                }) as u64
            })
            .collect()
    }

    fn edge_or_any() -> impl Strategy<Value = u64> {
        prop_oneof![
            Just(0u64),
            Just(1u64),
            Just(P - 1),
            Just(P - 2),
            Just(1u64 << 32),
            0..P
        ]
    }

    fn case() -> impl Strategy<Value = (Vec<u64>, Vec<u64>, Vec<u64>)> {
        (0usize..70).prop_flat_map(|len| {
            (
                proptest::collection::vec(edge_or_any(), len),
                proptest::collection::vec(edge_or_any(), len),
                proptest::collection::vec(edge_or_any(), 0..20),
            )
        })
    }

    fn check(kernel: Kernel, (values, points, xs): (Vec<u64>, Vec<u64>, Vec<u64>)) {
        let mut got = values.clone();
        kernel.multiply_linear_factors(&mut got, &points, &xs);
        assert_eq!(
            got,
            reference(&values, &points, &xs),
            "kernel {}",
            kernel.name()
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]
        #[test]
        fn scalar_matches_u128(input in case()) {
            check(Kernel::Scalar, input);
        }

        #[test]
        fn pointwise_products_match_u128(values in proptest::collection::vec(edge_or_any(), 0..70),
                                         seed in any::<u64>()) {
            let factors: Vec<u64> = values.iter().map(|&v| (v ^ seed) % P).collect();
            let expected: Vec<u64> = values
                .iter()
                .zip(&factors)
                .map(|(&v, &f)| (v as u128 * f as u128 % P as u128) as u64)
                .collect();
            for kernel in Kernel::available() {
                let mut got = values.clone();
                kernel.multiply_pointwise(&mut got, &factors);
                prop_assert_eq!(&got, &expected, "kernel {}", kernel.name());
            }
        }

        #[test]
        fn avx2_matches_u128(input in case()) {
            // Runs only where the CPU has AVX2; elsewhere the kernel cannot be selected.
            if Kernel::Avx2.is_available() {
                check(Kernel::Avx2, input);
            }
        }

        #[test]
        fn small_points_match_u128(values in proptest::collection::vec(edge_or_any(), 0..70),
                                   xs in proptest::collection::vec(edge_or_any(), 0..20)) {
            // Sample points below 2^32 take the lazily reduced AVX2 path.
            let points: Vec<u64> = (0..values.len() as u64)
                .map(|i| [0, 1, (1 << 32) - 1, i + 1][i as usize % 4])
                .collect();
            for kernel in Kernel::available() {
                check(kernel, (values.clone(), points.clone(), xs.clone()));
            }
        }

        #[test]
        fn avx512_matches_u128(input in case()) {
            // Runs only where the CPU has AVX-512F (the development machine has not).
            if Kernel::Avx512.is_available() {
                check(Kernel::Avx512, input);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// The sample points themselves (1..=128, and up to 255): the four-factor AVX2 path,
        /// with every batch remainder 0..3 after the quads.
        #[test]
        fn tiny_points_match_u128(values in proptest::collection::vec(edge_or_any(), 0..140),
                                  first in 1u64..128,
                                  xs in proptest::collection::vec(edge_or_any(), 0..23)) {
            let points: Vec<u64> = (0..values.len() as u64).map(|i| (first + i) % 256).collect();
            for kernel in Kernel::available() {
                check(kernel, (values.clone(), points.clone(), xs.clone()));
            }
        }
    }

    /// Largest lazily reduced accumulator and factor both split products accept.
    const ACC_MAX: u64 = P + 7;
    const FACTOR_MAX: u64 = (1 << 63) - 1;

    fn acc_lane() -> impl Strategy<Value = u64> {
        prop_oneof![
            Just(0),
            Just(1),
            Just(P - 1),
            Just(P),
            Just(ACC_MAX),
            Just(1 << 61),
            0..=ACC_MAX
        ]
    }

    fn factor_lane() -> impl Strategy<Value = u64> {
        prop_oneof![
            Just(0),
            Just(1),
            Just(P),
            Just(FACTOR_MAX),
            Just(1 << 62),
            0..=FACTOR_MAX
        ]
    }

    #[cfg(target_arch = "x86_64")]
    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// Both split products are exact mod P and stay lazily reduced (≤ P + 7) over their
        /// whole input range, including the bounds the quad and finite-difference kernels
        /// rely on.
        #[test]
        fn split_products_match_u128(a in proptest::array::uniform4(acc_lane()),
                                     f in proptest::array::uniform4(factor_lane())) {
            if Kernel::Avx2.is_available() {
                for split32 in [false, true] {
                    let got = x86::mulmod4_lanes(a, f, split32);
                    for lane in 0..4 {
                        let want = (a[lane] as u128 * f[lane] as u128 % P as u128) as u64;
                        prop_assert!(got[lane] <= ACC_MAX, "lane {lane} not lazily reduced");
                        prop_assert_eq!(got[lane] % P, want, "lane {}", lane);
                    }
                }
            }
        }

        /// A quad's expansion is Π (z − x) at any z, and every coefficient is below P + 33
        /// (the bound the 31-bit split of the coefficients assumes).
        #[test]
        fn quad_coefficients_expand_the_product(quad in proptest::array::uniform4(edge_or_any()),
                                                z in edge_or_any()) {
            let c = x86::quad_coefficients(&quad);
            prop_assert!(c.iter().all(|&k| k < P + 33));
            let c = c.map(field::reduce64);
            let z2 = field::mul(z, z);
            let z3 = field::mul(z2, z);
            let expanded = [field::mul(z2, z2), field::mul(c[3], z3), field::mul(c[2], z2),
                            field::mul(c[1], z), c[0]]
                .into_iter()
                .fold(0, field::add);
            let product = quad.iter().fold(1, |acc, &x| field::mul(acc, field::sub(z, x)));
            prop_assert_eq!(expanded, product);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        /// Batches longer than one chunk of expanded quads (64 elements), every remainder.
        #[test]
        fn long_batches_match_u128(values in proptest::collection::vec(edge_or_any(), 0..24),
                                   xs in proptest::collection::vec(edge_or_any(), 60..150)) {
            let points: Vec<u64> = (1..=values.len() as u64).collect();
            for kernel in Kernel::available() {
                check(kernel, (values.clone(), points.clone(), xs.clone()));
            }
        }
    }

    /// Whether the AVX2 kernel can run here; says so when a test has to skip it.
    fn avx2_or_skip(test: &str) -> bool {
        let available = Kernel::Avx2.is_available();
        if !available {
            eprintln!("{test}: skipped, this CPU has no AVX2");
        }
        available
    }

    /// A deterministic stream of canonical values with edge values mixed in.
    fn edgy_values(count: usize, seed: u64) -> Vec<u64> {
        let mut state = seed;
        (0..count)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                match state >> 60 {
                    0 => 0,
                    1 => 1,
                    2 => P - 1,
                    3 => (state >> 32) % 130, // on or next to a sample point
                    _ => (state >> 3) % P,
                }
            })
            .collect()
    }

    /// Every batch size 0..200 at the sample points 1..=128: full finite-difference passes,
    /// short last passes of every degree, and the small batches that take the quad kernel.
    #[test]
    fn avx2_every_batch_size_matches_u128() {
        if !avx2_or_skip("avx2_every_batch_size_matches_u128") {
            return;
        }
        let points: Vec<u64> = (1..=128).collect();
        for len in 0..200 {
            let values = edgy_values(points.len(), len as u64);
            let xs = edgy_values(len, 1000 + len as u64);
            check(Kernel::Avx2, (values, points.clone(), xs));
        }
    }

    /// Every consecutive run of the sample points (start 1..=128, every length), as sessions
    /// ask for, with a batch of two full passes and a short one.
    #[test]
    fn avx2_consecutive_sub_slices_match_u128() {
        if !avx2_or_skip("avx2_consecutive_sub_slices_match_u128") {
            return;
        }
        let xs = edgy_values(75, 7);
        let all: Vec<u64> = (1..=128).collect();
        for start in 0..all.len() {
            for end in start + 1..=all.len() {
                let points = all[start..end].to_vec();
                let values = edgy_values(points.len(), (start * 131 + end) as u64);
                check(Kernel::Avx2, (values, points, xs.clone()));
            }
        }
    }

    /// Consecutive points anywhere in the field (near P, more than one accumulator chunk)
    /// and points that are not consecutive (which must fall back) stay exact.
    #[test]
    fn avx2_other_point_runs_match_u128() {
        if !avx2_or_skip("avx2_other_point_runs_match_u128") {
            return;
        }
        let xs = edgy_values(45, 9);
        let near_p: Vec<u64> = (P - 140..P).collect();
        let long: Vec<u64> = (1..=300).collect();
        let mut gap: Vec<u64> = (1..=128).collect();
        gap[64] = 200;
        let reversed: Vec<u64> = (1..=128).rev().collect();
        for points in [near_p, long, gap, reversed, vec![5; 40]] {
            let values = edgy_values(points.len(), 3);
            check(Kernel::Avx2, (values, points, xs.clone()));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Random consecutive runs and batches with edge values, every kernel.
        #[test]
        fn consecutive_runs_match_u128(first in prop_oneof![1u64..=128, Just(P - 200), 0..P - 200],
                                       values in proptest::collection::vec(edge_or_any(), 0..150),
                                       xs in proptest::collection::vec(edge_or_any(), 0..100)) {
            let points: Vec<u64> = (first..first + values.len() as u64).collect();
            for kernel in Kernel::available() {
                check(kernel, (values.clone(), points.clone(), xs.clone()));
            }
        }
    }

    #[test]
    fn worst_case_lanes() {
        // Every lane at p − 1 times factors of p − 1 exercises the largest intermediate sums.
        let len = 37;
        let values = vec![P - 1; len];
        let points = vec![P - 1; len];
        let xs = vec![0, 1, P - 1, P - 2, 1 << 60, P - 1, P - 1, P - 1, 0];
        for kernel in Kernel::available() {
            check(kernel, (values.clone(), points.clone(), xs.clone()));
            check(
                kernel,
                (values.clone(), vec![(1 << 32) - 1; len], xs.clone()),
            );
            // Tiny points at their maximum, where z⁴ and the coefficient products are largest.
            check(kernel, (values.clone(), vec![255; len], xs.clone()));
        }
    }

    #[test]
    fn best_is_available() {
        assert!(Kernel::best().is_available());
        assert!(Kernel::available().contains(&Kernel::Scalar));
    }
}
