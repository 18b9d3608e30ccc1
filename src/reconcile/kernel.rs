//! Batched sketch-update kernels: `values[i] *= Π_{x ∈ batch} (points[i] − x)` in F_p.
//!
//! The hot loop of every sketch insert (RECONCILE.md §8). Lanes run across the sample points
//! and the batch of elements is the outer loop, so each block of values stays in registers for
//! the whole batch. AVX2 and AVX-512F only multiply 32×32→64 bits per lane, so one 61×61-bit
//! product is four such multiplies, folded with 2^64 ≡ 8 and 2^61 ≡ 1 (mod p). At the sample
//! points (all below 256) the AVX2 kernel multiplies four factors at once: the batch is taken
//! in quads, each expanded to z⁴ + c3 z³ + c2 z² + c1 z + c0, whose terms are cheap because
//! every power of z fits 32 bits.
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
mod x86 {
    //! The x86-64 vector kernels. Each public function checks the CPU feature before it
    //! enters `unsafe`; the `#[target_feature]` bodies only use register intrinsics plus
    //! unaligned loads and stores inside the bounds of the slices.

    use super::{P, scalar};
    use std::arch::x86_64::*;

    /// Points per block kept in registers across the batch (4 vectors).
    const VECTORS_PER_BLOCK: usize = 4;

    pub(super) fn avx2(values: &mut [u64], points: &[u64], xs: &[u64]) {
        assert!(std::arch::is_x86_feature_detected!("avx2"));
        let body = values.len() / 4 * 4;
        let (body_values, body_points) = (&mut values[..body], &points[..body]);
        // Tiny points (the sample points 1..=128 always are): four factors per product.
        let tiny = body_points.iter().all(|&z| z < TINY_POINT_LIMIT);
        let quads = if tiny { xs.len() / 4 * 4 } else { 0 };
        // SAFETY: AVX2 is present (asserted above) and `body <= values.len() == points.len()`.
        #[allow(unsafe_code)]
        unsafe {
            if quads > 0 {
                let coefficients: Vec<[u64; 4]> =
                    xs[..quads].chunks_exact(4).map(quad_coefficients).collect();
                avx2_quads(body_values, body_points, &coefficients);
            }
            let rest = &xs[quads..];
            if tiny || body_points.iter().all(|&z| z < SMALL_POINT_LIMIT) {
                avx2_body::<true>(body_values, body_points, rest);
            } else {
                avx2_body::<false>(body_values, body_points, rest);
            }
        }
        scalar(&mut values[body..], &points[body..], xs);
    }

    /// Points below this have z⁴ < 2^32, so `avx2_quads` can multiply by 32-bit powers of z.
    const TINY_POINT_LIMIT: u64 = 1 << 8;

    /// `[c0, c1, c2, c3]` with `(z − a)(z − b)(z − c)(z − d) = z⁴ + c3 z³ + c2 z² + c1 z + c0`,
    /// canonical.
    fn quad_coefficients(quad: &[u64]) -> [u64; 4] {
        // Multiply out one factor at a time: coefficients[k] of z^k, leading 1 implicit.
        let mut c = [0u64; 5];
        c[0] = 1;
        for (degree, &x) in quad.iter().enumerate() {
            let minus_x = super::field::neg(x);
            for k in (0..=degree + 1).rev() {
                let shifted = if k == 0 { 0 } else { c[k - 1] };
                c[k] = super::field::add(shifted, super::field::mul(c[k], minus_x));
            }
        }
        debug_assert_eq!(c[4], 1);
        [c[0], c[1], c[2], c[3]]
    }

    /// `values[i] *= Π_quads (z_i⁴ + c3 z_i³ + c2 z_i² + c1 z_i + c0)` for tiny points.
    ///
    /// Four linear factors cost one full product plus three 61×32-bit products (a coefficient
    /// times a power of z below 2^32: two 32×32 multiplies each, summed before one cheap fold),
    /// instead of four full products: about half the instructions per element. Blocks of
    /// vectors stay in registers across the batch, as in `avx2_body` (measured faster than
    /// streaming every vector through L1 per quad).
    // Indexing by vector number keeps the block in named registers; iterators hide that.
    #[allow(clippy::needless_range_loop)]
    #[target_feature(enable = "avx2")]
    fn avx2_quads(values: &mut [u64], points: &[u64], coefficients: &[[u64; 4]]) {
        debug_assert!(values.len().is_multiple_of(4) && values.len() == points.len());
        debug_assert!(points.iter().all(|&z| z < TINY_POINT_LIMIT));
        let p = _mm256_set1_epi64x(P as i64);
        let low29 = _mm256_set1_epi64x((1 << 29) - 1);
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
            for &[c0, c1, c2, c3] in coefficients {
                let c0 = _mm256_set1_epi64x(c0 as i64);
                let lows = [c1, c2, c3].map(|c| _mm256_set1_epi64x((c & 0xFFFF_FFFF) as i64));
                let highs = [c1, c2, c3].map(|c| _mm256_set1_epi64x((c >> 32) as i64));
                for v in 0..VECTORS_PER_BLOCK {
                    // c_k·z^k = lo_k·z^k + hi_k·z^k·2^32; lo products < 2^56, hi < 2^53.
                    let mut low = _mm256_add_epi64(c0, powers[v][3]); // < 2^61 + 2^32
                    let mut high = _mm256_setzero_si256();
                    for k in 0..3 {
                        low = _mm256_add_epi64(low, _mm256_mul_epu32(lows[k], powers[v][k]));
                        high = _mm256_add_epi64(high, _mm256_mul_epu32(highs[k], powers[v][k]));
                    }
                    // low < 2^62; high < 2^55 and high·2^32 ≡ (high mod 2^29)·2^32 + high >> 29.
                    let shifted = _mm256_add_epi64(
                        _mm256_slli_epi64::<32>(_mm256_and_si256(high, low29)),
                        _mm256_srli_epi64::<29>(high),
                    );
                    let sum = _mm256_add_epi64(low, shifted); // < 2^63
                    let factor =
                        _mm256_add_epi64(_mm256_and_si256(sum, p), _mm256_srli_epi64::<61>(sum));
                    acc[v] = mulmod4_lazy(acc[v], factor); // factor ≤ P + 3
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

    /// Points below this let the AVX2 kernel use `z + (P − x)` unreduced as the factor.
    const SMALL_POINT_LIMIT: u64 = 1 << 32;

    /// `a · b mod P` for four lanes, lazily reduced: inputs may exceed P slightly
    /// (a ≤ P + 7, b ≤ P + 2^32), the result is in `0..=P + 3`. Bounds: a_hi, b_hi ≤ 2^29 + 1,
    /// so the folded sum stays below 2^63 and the final fold adds at most 3.
    #[target_feature(enable = "avx2")]
    fn mulmod4_lazy(a: __m256i, b: __m256i) -> __m256i {
        let p = _mm256_set1_epi64x(P as i64);
        let low29 = _mm256_set1_epi64x((1 << 29) - 1);
        let a_hi = _mm256_srli_epi64::<32>(a);
        let b_hi = _mm256_srli_epi64::<32>(b);
        let low_low = _mm256_mul_epu32(a, b);
        let middle = _mm256_add_epi64(_mm256_mul_epu32(a, b_hi), _mm256_mul_epu32(a_hi, b));
        let high_high = _mm256_mul_epu32(a_hi, b_hi);
        let high_term = _mm256_slli_epi64::<3>(high_high);
        let middle_term = _mm256_add_epi64(
            _mm256_srli_epi64::<29>(middle),
            _mm256_slli_epi64::<32>(_mm256_and_si256(middle, low29)),
        );
        let low_term = _mm256_add_epi64(
            _mm256_and_si256(low_low, p),
            _mm256_srli_epi64::<61>(low_low),
        );
        let sum = _mm256_add_epi64(_mm256_add_epi64(high_term, middle_term), low_term);
        _mm256_add_epi64(_mm256_and_si256(sum, p), _mm256_srli_epi64::<61>(sum))
    }

    /// Maps a lazily reduced lane (≤ P + 3) to `0..P`.
    #[target_feature(enable = "avx2")]
    fn canonical4(a: __m256i) -> __m256i {
        let too_big = _mm256_cmpgt_epi64(a, _mm256_set1_epi64x(P as i64 - 1));
        _mm256_sub_epi64(a, _mm256_and_si256(too_big, _mm256_set1_epi64x(P as i64)))
    }

    /// `z + (P − x)` reduced to `0..P`; `minus_x` holds `P − x` in every lane.
    #[target_feature(enable = "avx2")]
    fn factor4(z: __m256i, minus_x: __m256i) -> __m256i {
        let sum = _mm256_add_epi64(z, minus_x);
        let too_big = _mm256_cmpgt_epi64(sum, _mm256_set1_epi64x(P as i64 - 1));
        _mm256_sub_epi64(sum, _mm256_and_si256(too_big, _mm256_set1_epi64x(P as i64)))
    }

    // Indexing by vector number keeps the block in named registers; iterators hide that.
    #[allow(clippy::needless_range_loop)]
    #[target_feature(enable = "avx2")]
    fn avx2_body<const SMALL_POINTS: bool>(values: &mut [u64], points: &[u64], xs: &[u64]) {
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
                    // Small points: z + (P − x) ≤ P + 2^32 is a valid lazy factor as it is.
                    let factor = if SMALL_POINTS {
                        _mm256_add_epi64(z[v], minus_x)
                    } else {
                        factor4(z[v], minus_x)
                    };
                    acc[v] = mulmod4_lazy(acc[v], factor);
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
