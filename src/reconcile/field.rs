//! Scalar arithmetic in the prime field F_p, p = 2^61 − 1 (RECONCILE.md §2).
//!
//! Why this prime: a product of two reduced values is below 2^122 and reduces with two shifts
//! and adds (2^61 ≡ 1), and 61-bit elements make collisions negligible for 10^7 entries.
//! **Invariant:** every value passed in or returned is canonical, i.e. in `0..P`. This file is
//! the reference the SIMD kernels in `kernel` are tested against.

/// The field modulus, the Mersenne prime 2^61 − 1.
pub const P: u64 = (1 << 61) - 1;

/// Reduces any 128-bit value (a product, or a sum of up to 64 products) to `0..P`.
#[inline(always)]
pub fn reduce128(x: u128) -> u64 {
    // 2^61 ≡ 1 (mod P): fold the high part onto the low part twice.
    let folded = (x as u64 & P) as u128 + (x >> 61);
    let once = (folded as u64 & P) + (folded >> 61) as u64;
    if once >= P { once - P } else { once }
}

/// Reduces a 64-bit value to `0..P`.
#[inline(always)]
pub fn reduce64(x: u64) -> u64 {
    let folded = (x & P) + (x >> 61);
    if folded >= P { folded - P } else { folded }
}

/// `a + b mod P`.
#[inline(always)]
pub fn add(a: u64, b: u64) -> u64 {
    debug_assert!(a < P && b < P);
    let sum = a + b;
    if sum >= P { sum - P } else { sum }
}

/// `a − b mod P`.
#[inline(always)]
pub fn sub(a: u64, b: u64) -> u64 {
    debug_assert!(a < P && b < P);
    if a >= b { a - b } else { a + P - b }
}

/// `−a mod P`.
#[inline(always)]
pub fn neg(a: u64) -> u64 {
    debug_assert!(a < P);
    if a == 0 { 0 } else { P - a }
}

/// `a · b mod P`.
#[inline(always)]
pub fn mul(a: u64, b: u64) -> u64 {
    debug_assert!(a < P && b < P);
    reduce128(a as u128 * b as u128)
}

/// `base^exponent mod P` by square and multiply.
pub fn pow(base: u64, mut exponent: u64) -> u64 {
    let mut result = 1;
    let mut square = base;
    while exponent > 0 {
        if exponent & 1 == 1 {
            result = mul(result, square);
        }
        square = mul(square, square);
        exponent >>= 1;
    }
    result
}

/// `a · b` folded twice but not made canonical, for chains of dependent products (inversion,
/// square roots) that canonicalise once at the end: skipping the final comparison shortens
/// each step's latency. Operands and result are at most P + 2: the product is below
/// 2^122 + 2^64, its first fold below 2^62 + 4, its second at most P + 2.
#[inline(always)]
fn mul_lazy(a: u64, b: u64) -> u64 {
    debug_assert!(a <= P + 2 && b <= P + 2);
    let x = a as u128 * b as u128;
    let folded = (x as u64 & P) as u128 + (x >> 61);
    (folded as u64 & P) + (folded >> 61) as u64
}

/// `x^(2^k)` of a lazily reduced x (≤ P + 2), lazily reduced: k squarings.
fn square_times(mut x: u64, k: u32) -> u64 {
    for _ in 0..k {
        x = mul_lazy(x, x);
    }
    x
}

/// `x^(2^k)`, canonical: k squarings (a square root is `x^(2^59)`, as p ≡ 3 mod 4).
pub fn pow2k(x: u64, k: u32) -> u64 {
    debug_assert!(x < P);
    reduce64(square_times(x, k))
}

/// `a^−1 mod P` by Fermat, `a^(P−2)` with `P − 2 = 2^61 − 3 = (2^59 − 1)·4 + 1`, through an
/// addition chain of `a^(2^k − 1)` (62 squarings, 10 multiplications, against 60 + 59 for
/// plain square-and-multiply). `a` must be non-zero.
pub fn inv(a: u64) -> u64 {
    assert!(a != 0 && a < P, "inverse of {a} does not exist in F_p");
    // ones(k) = a^(2^k − 1); ones(j + k) = ones(j)^(2^k) · ones(k). Lazily reduced throughout.
    let ones2 = mul_lazy(square_times(a, 1), a);
    let ones3 = mul_lazy(square_times(ones2, 1), a);
    let ones6 = mul_lazy(square_times(ones3, 3), ones3);
    let ones8 = mul_lazy(square_times(ones6, 2), ones2);
    let ones12 = mul_lazy(square_times(ones6, 6), ones6);
    let ones24 = mul_lazy(square_times(ones12, 12), ones12);
    let ones48 = mul_lazy(square_times(ones24, 24), ones24);
    let ones56 = mul_lazy(square_times(ones48, 8), ones8);
    let ones59 = mul_lazy(square_times(ones56, 3), ones3);
    reduce64(mul_lazy(square_times(ones59, 2), a))
}

/// Inverts every value in place with Montgomery's trick: one inversion and 3(n − 1)
/// multiplications for the whole slice. Every value must be non-zero.
pub fn batch_invert(values: &mut [u64]) {
    if values.is_empty() {
        return;
    }
    // prefix[i] = values[0] · … · values[i]
    let mut prefix = Vec::with_capacity(values.len());
    let mut running = 1;
    for &value in values.iter() {
        assert!(value != 0, "batch_invert: zero has no inverse");
        running = mul(running, value);
        prefix.push(running);
    }
    let mut inverse_running = inv(running);
    for i in (1..values.len()).rev() {
        let inverse = mul(inverse_running, prefix[i - 1]);
        inverse_running = mul(inverse_running, values[i]);
        values[i] = inverse;
    }
    values[0] = inverse_running;
}

/// Whether `a` is a canonical field value.
#[inline(always)]
pub fn is_canonical(a: u64) -> bool {
    a < P
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn reference_mul(a: u64, b: u64) -> u64 {
        ((a as u128 * b as u128) % P as u128) as u64
    }

    fn edge_or_any() -> impl Strategy<Value = u64> {
        prop_oneof![
            Just(0u64),
            Just(1u64),
            Just(P - 1),
            Just(P - 2),
            Just(2u64),
            0..P
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn mul_matches_u128(a in edge_or_any(), b in edge_or_any()) {
            prop_assert_eq!(mul(a, b), reference_mul(a, b));
        }

        #[test]
        fn add_sub_match_u128(a in edge_or_any(), b in edge_or_any()) {
            prop_assert_eq!(add(a, b) as u128, (a as u128 + b as u128) % P as u128);
            prop_assert_eq!(sub(a, b) as u128, (a as u128 + P as u128 - b as u128) % P as u128);
            prop_assert_eq!(add(neg(a), a), 0);
        }

        #[test]
        fn repeated_squares_match_u128(x in edge_or_any(), k in 0u32..70) {
            let expected = (0..k).fold(x, |acc, _| reference_mul(acc, acc));
            prop_assert_eq!(pow2k(x, k), expected);
        }

        #[test]
        fn inverse_is_inverse(a in 1..P) {
            prop_assert_eq!(mul(a, inv(a)), 1);
            prop_assert_eq!(inv(a), pow(a, P - 2));
        }

        #[test]
        fn batch_invert_matches_single(values in proptest::collection::vec(1..P, 0..40)) {
            let mut inverted = values.clone();
            batch_invert(&mut inverted);
            for (value, inverse) in values.iter().zip(&inverted) {
                prop_assert_eq!(*inverse, inv(*value));
            }
        }

        #[test]
        fn reduce64_is_mod(x in any::<u64>()) {
            prop_assert_eq!(reduce64(x), x % P);
        }
    }

    #[test]
    fn edges() {
        assert_eq!(mul(P - 1, P - 1), 1);
        assert_eq!(inv(1), 1);
        assert_eq!(inv(P - 1), P - 1);
        assert_eq!(reduce128(P as u128 * P as u128), 0);
        assert_eq!(pow(3, P - 1), 1);
    }
}
