//! Dense univariate polynomials over F_p (coefficients lowest degree first, no trailing zeros;
//! the zero polynomial is empty).
//!
//! Only what decoding needs: evaluation, products, division, gcd and arithmetic modulo a
//! monic polynomial (root finding). The hot paths (products and reduction modulo `f`)
//! accumulate unreduced 128-bit products and fold them every few rows, which is several times
//! cheaper than a full reduction per product. Where the CPU has AVX2, [`Modulus`] squares and
//! reduces four coefficients per vector instead (`polykernel`): 1.7–2.1× at degrees 20–40.

use super::field::{self, P};
use super::polykernel::WideModulus;

/// A polynomial; `coefficients[i]` multiplies z^i.
pub type Poly = Vec<u64>;

/// Drops trailing zero coefficients.
pub fn trim(poly: &mut Poly) {
    while poly.last() == Some(&0) {
        poly.pop();
    }
}

/// The degree, or `None` for the zero polynomial.
pub fn degree(poly: &[u64]) -> Option<usize> {
    debug_assert!(poly.last() != Some(&0), "untrimmed polynomial");
    poly.len().checked_sub(1)
}

/// `poly(z)` by Horner's rule.
pub fn eval(poly: &[u64], z: u64) -> u64 {
    // acc·z + c < 2^122 + 2^61: one reduction per coefficient.
    poly.iter().rev().fold(0, |acc, &c| {
        field::reduce128(acc as u128 * z as u128 + c as u128)
    })
}

/// `a · b`.
pub fn mul(a: &[u64], b: &[u64]) -> Poly {
    if a.is_empty() || b.is_empty() {
        return Vec::new();
    }
    let mut acc = vec![0u128; a.len() + b.len() - 1];
    for (row, &ai) in a.iter().enumerate() {
        for (slot, &bj) in acc[row..row + b.len()].iter_mut().zip(b) {
            *slot += ai as u128 * bj as u128;
        }
        if row % FOLD_ROWS == FOLD_ROWS - 1 {
            fold_all(&mut acc);
        }
    }
    let mut out: Poly = acc.into_iter().map(field::reduce128).collect();
    trim(&mut out);
    out
}

/// `a − b`.
pub fn sub(a: &[u64], b: &[u64]) -> Poly {
    let mut out = vec![0; a.len().max(b.len())];
    for (i, slot) in out.iter_mut().enumerate() {
        *slot = field::sub(
            a.get(i).copied().unwrap_or(0),
            b.get(i).copied().unwrap_or(0),
        );
    }
    trim(&mut out);
    out
}

/// `poly · scalar`.
pub fn scale(poly: &[u64], scalar: u64) -> Poly {
    let mut out: Poly = poly.iter().map(|&c| field::mul(c, scalar)).collect();
    trim(&mut out);
    out
}

/// Quotient and remainder of `a / b`; `b` must be non-zero.
pub fn div_rem(a: &[u64], b: &[u64]) -> (Poly, Poly) {
    let b_degree = degree(b).expect("division by the zero polynomial");
    if a.len() < b.len() {
        return (Vec::new(), a.to_vec());
    }
    // Divisors are mostly monic (root finding): skip the inversion (~70 dependent products).
    let lead_inverse = match b[b_degree] {
        1 => 1,
        lead => field::inv(lead),
    };
    // Unreduced 128-bit slots: each row adds `factor · (P − b_j)`, and only the next leading
    // coefficient is reduced before it is used (like `Modulus::reduce_into`).
    let negated: Vec<u64> = b[..b_degree].iter().map(|&c| field::neg(c)).collect();
    let mut acc: Vec<u128> = a.iter().map(|&c| c as u128).collect();
    let mut quotient = vec![0; a.len() - b_degree];
    for (row, shift) in (0..quotient.len()).rev().enumerate() {
        let top = field::reduce128(acc[shift + b_degree]);
        if top != 0 {
            let factor = field::mul(top, lead_inverse);
            quotient[shift] = factor;
            for (slot, &c) in acc[shift..shift + b_degree].iter_mut().zip(&negated) {
                *slot += factor as u128 * c as u128;
            }
        }
        if row % FOLD_ROWS == FOLD_ROWS - 1 {
            fold_all(&mut acc[..shift + b_degree]);
        }
    }
    let mut remainder: Poly = acc[..b_degree.min(acc.len())]
        .iter()
        .map(|&slot| field::reduce128(slot))
        .collect();
    trim(&mut remainder);
    trim(&mut quotient);
    (quotient, remainder)
}

/// The polynomial divided by its leading coefficient (zero stays zero).
pub fn monic(poly: &[u64]) -> Poly {
    match poly.last() {
        None => Vec::new(),
        Some(&lead) => scale(poly, field::inv(lead)),
    }
}

/// The monic greatest common divisor.
///
/// Euclid on remainders only, each step cross-multiplied (`lead(y)·x − lead(x)·z^s·y`) so no
/// step inverts: one inversion at the end instead of one per division.
pub fn gcd(a: &[u64], b: &[u64]) -> Poly {
    let (mut x, mut y) = (a.to_vec(), b.to_vec());
    trim(&mut x);
    trim(&mut y);
    gcd_scaled_in_place(&mut x, &mut y);
    monic(&x)
}

/// `x ← x mod y` up to a non-zero scalar, each step cross-multiplied
/// (`lead(y)·x − lead(x)·z^s·y`) so that nothing is inverted.
fn reduce_cross_multiplied(x: &mut Poly, y: &[u64]) {
    let y_lead = y[y.len() - 1];
    while x.len() >= y.len() {
        let shift = x.len() - y.len();
        let minus_x_lead = field::neg(x[x.len() - 1]) as u128;
        for slot in &mut x[..shift] {
            *slot = field::mul(*slot, y_lead);
        }
        // Both products in one 128-bit sum (< 2^123), reduced once.
        for (slot, &c) in x[shift..].iter_mut().zip(y) {
            *slot = field::reduce128(*slot as u128 * y_lead as u128 + minus_x_lead * c as u128);
        }
        debug_assert_eq!(x.last(), Some(&0));
        trim(x);
    }
}

/// A greatest common divisor of two trimmed polynomials up to a non-zero scalar (no
/// inversion: [`gcd`] before its final normalisation), in their own buffers: the result is
/// left in `x` (`y` is consumed), so callers can reuse both buffers.
pub fn gcd_scaled_in_place(x: &mut Poly, y: &mut Poly) {
    debug_assert!(
        x.last() != Some(&0) && y.last() != Some(&0),
        "untrimmed polynomial"
    );
    if x.len() < y.len() {
        std::mem::swap(x, y);
    }
    while !y.is_empty() {
        reduce_cross_multiplied(x, y);
        std::mem::swap(x, y);
    }
}

/// `Π (z − root)`.
pub fn from_roots(roots: &[u64]) -> Poly {
    let mut out = vec![1];
    for &root in roots {
        out.push(0);
        for i in (1..out.len()).rev() {
            out[i] = field::sub(out[i - 1], field::mul(root, out[i]));
        }
        out[0] = field::mul(out[0], field::neg(root));
    }
    out
}

/// Rows accumulated before every 128-bit accumulator is folded back below 2^62
/// (each row adds one product below 2^122 per slot, so 32 rows stay below 2^127).
const FOLD_ROWS: usize = 32;

fn fold_all(acc: &mut [u128]) {
    for slot in acc {
        *slot = ((*slot as u64 & P) as u128) + (*slot >> 61);
    }
}

/// Arithmetic modulo a fixed monic polynomial `f` of degree n ≥ 1, with reusable buffers.
///
/// A product is accumulated row by row in unreduced 128-bit slots; its high half is then
/// reduced once per coefficient and folded back through a table of `z^(n+k) mod f`. The rows of
/// that fold are independent (unlike schoolbook reduction, where each step waits for the
/// previous one's leading coefficient), so they pipeline.
pub struct Modulus {
    /// `P − f[j]` for j < n: `z^n ≡ Σ negated[j] z^j`.
    negated: Vec<u64>,
    /// Row k (n coefficients, k < n − 1) holds `z^(n+k) mod f`.
    table: Vec<u64>,
    /// The reduced high half of a product (coefficients n..2n − 1).
    high: Vec<u64>,
    /// Unreduced product coefficients.
    scratch: Vec<u128>,
    /// The AVX2 path (`polykernel`), when the CPU has it and n is large enough to pay.
    wide: Option<WideModulus>,
}

/// Degrees from which the AVX2 path is used. Its time per square over the scalar path's,
/// alternated in one process on AMD EPYC Zen 3: n = 4 1.02, 5 0.98, 6 0.84, 8 0.66, 20 ≈ 0.5,
/// 40 ≈ 0.45.
pub const WIDE_MIN_DEGREE: usize = 6;

impl Modulus {
    /// Prepares reduction modulo the monic `f` (O(n²) for the table), on the AVX2 path when
    /// the CPU has it and `f` has degree ≥ [`WIDE_MIN_DEGREE`].
    pub fn new(f: &[u64]) -> Self {
        let wide = WideModulus::is_available() && f.len() > WIDE_MIN_DEGREE;
        Self::with_path(f, wide)
    }

    /// Prepares reduction modulo the monic `f`, on the AVX2 path if `wide` (which needs AVX2
    /// and degree ≥ 2) or else the scalar one; both give the same results.
    pub fn with_path(f: &[u64], wide: bool) -> Self {
        let n = degree(f).expect("modulus must be non-zero");
        assert!(n >= 1 && f[n] == 1, "modulus must be monic of degree ≥ 1");
        let negated: Vec<u64> = f[..n].iter().map(|&c| field::neg(c)).collect();
        let mut table = Vec::with_capacity(n * (n - 1));
        let mut power = negated.clone(); // z^n mod f
        for _ in 0..n - 1 {
            table.extend_from_slice(&power);
            // z^(n+k+1) = z · z^(n+k): shift up and fold the top through z^n.
            let top = power[n - 1] as u128;
            for j in (0..n).rev() {
                let below = if j == 0 { 0 } else { power[j - 1] };
                power[j] = field::reduce128(below as u128 + top * negated[j] as u128);
            }
        }
        // `power` is now z^(2n−1) mod f, which a square times z needs on the AVX2 path.
        let wide = wide.then(|| WideModulus::new(&table, &power, n));
        // The scalar path's buffers (the AVX2 path has its own).
        let scalar_len = if wide.is_some() { 0 } else { n };
        Modulus {
            negated,
            table,
            high: vec![0; scalar_len.saturating_sub(1)],
            scratch: vec![0; (2 * scalar_len).saturating_sub(1)],
            wide,
        }
    }

    /// Whether this CPU can run the AVX2 path (`with_path(f, true)`).
    pub fn wide_available() -> bool {
        WideModulus::is_available()
    }

    /// The degree n of the modulus.
    pub fn degree(&self) -> usize {
        self.negated.len()
    }

    /// `a² mod f`, where `a` has exactly n coefficients (zeros allowed).
    pub fn square(&mut self, a: &mut [u64]) {
        let n = self.degree();
        debug_assert_eq!(a.len(), n);
        if let Some(wide) = &mut self.wide {
            wide.square(a, false);
            return;
        }
        let acc = &mut self.scratch[..2 * n - 1];
        acc.fill(0);
        for i in 0..n {
            let ai = a[i] as u128;
            acc[2 * i] += ai * ai;
            // < 2^62, so each product is < 2^123. Doubled as u64: a u128 operand with a
            // possibly non-zero high half would cost LLVM two more multiplies per product.
            let doubled = (2 * a[i]) as u128;
            for (slot, &aj) in acc[2 * i + 1..i + n].iter_mut().zip(&a[i + 1..]) {
                *slot += doubled * aj as u128;
            }
            if i % 16 == 15 {
                fold_all(acc);
            }
        }
        self.reduce_into(a);
    }

    /// `a · b mod f`, where `a` and `b` have exactly n coefficients; the result replaces `a`.
    pub fn mul(&mut self, a: &mut [u64], b: &[u64]) {
        let n = self.degree();
        debug_assert!(a.len() == n && b.len() == n);
        if let Some(wide) = &mut self.wide {
            wide.mul(a, b);
            return;
        }
        let acc = &mut self.scratch[..2 * n - 1];
        acc.fill(0);
        for (row, &ai) in a.iter().enumerate() {
            for (slot, &bj) in acc[row..row + n].iter_mut().zip(b) {
                *slot += ai as u128 * bj as u128;
            }
            if row % FOLD_ROWS == FOLD_ROWS - 1 {
                fold_all(acc);
            }
        }
        self.reduce_into(a);
    }

    /// Reduces the product in `scratch` (degree ≤ 2n − 2) modulo f into `out`.
    fn reduce_into(&mut self, out: &mut [u64]) {
        let n = self.degree();
        let (low, high) = self.scratch[..2 * n - 1].split_at_mut(n);
        for (slot, &value) in self.high.iter_mut().zip(high.iter()) {
            *slot = field::reduce128(value);
        }
        fold_all(low);
        for (k, (&top, row)) in self.high.iter().zip(self.table.chunks_exact(n)).enumerate() {
            let top = top as u128;
            for (slot, &c) in low.iter_mut().zip(row) {
                *slot += top * c as u128;
            }
            if k % FOLD_ROWS == FOLD_ROWS - 1 {
                fold_all(low);
            }
        }
        for (slot, &value) in out.iter_mut().zip(low.iter()) {
            *slot = field::reduce128(value);
        }
    }

    /// `a^q mod f` for a small exponent q ≥ 1, in place (left-to-right square and multiply).
    pub fn pow_small(&mut self, a: &mut [u64], q: u32) {
        assert!(q >= 1, "exponent must be positive");
        let base = a.to_vec();
        for bit in (0..31 - q.leading_zeros()).rev() {
            self.square(a);
            if q >> bit & 1 == 1 {
                self.mul(a, &base);
            }
        }
    }

    /// `z^e mod f` for e ≥ 1, with n coefficients (square and multiply by z, from the top bit).
    pub fn pow_z(&mut self, e: u64) -> Vec<u64> {
        assert!(e >= 1, "exponent must be positive");
        // z^v mod f for v ≤ 2n − 2 is free (a monomial or a row of the table): start from the
        // longest prefix of e's bits that small, which saves log2(2n) squarings.
        let bits = 64 - e.leading_zeros();
        let largest_free = 2 * self.degree() as u64 - 1;
        let mut prefix_bits = 1;
        while prefix_bits < bits && e >> (bits - prefix_bits - 1) < largest_free {
            prefix_bits += 1;
        }
        let mut result = self.power_of_z((e >> (bits - prefix_bits)) as usize);
        for bit in (0..bits - prefix_bits).rev() {
            self.square_times_z(&mut result, e >> bit & 1 == 1);
        }
        result
    }

    /// `a² mod f`, times z if `times_z`, where `a` has exactly n coefficients.
    pub fn square_times_z(&mut self, a: &mut [u64], times_z: bool) {
        match &mut self.wide {
            Some(wide) => wide.square(a, times_z),
            None => {
                self.square(a);
                if times_z {
                    self.mul_linear(a, 0);
                }
            }
        }
    }

    /// `z^v mod f` for 1 ≤ v ≤ max(2n − 2, 1), with n coefficients.
    fn power_of_z(&self, v: usize) -> Vec<u64> {
        let n = self.degree();
        debug_assert!(v >= 1 && v <= (2 * n - 2).max(1));
        if v < n {
            let mut monomial = vec![0; n];
            monomial[v] = 1;
            monomial
        } else if v == n {
            self.negated.clone()
        } else {
            self.table[(v - n) * n..][..n].to_vec()
        }
    }

    /// `a · (z + c) mod f`, where `a` has exactly n coefficients.
    pub fn mul_linear(&self, a: &mut [u64], c: u64) {
        let n = self.degree();
        debug_assert_eq!(a.len(), n);
        let top = a[n - 1];
        let mut below = 0;
        for (slot, &negated) in a.iter_mut().zip(&self.negated) {
            let current = *slot;
            let value = below as u128 + current as u128 * c as u128 + top as u128 * negated as u128;
            *slot = field::reduce128(value);
            below = current;
        }
    }

    /// `(z + c)^(2^bits − 1) mod f`, with n coefficients. With bits = 60 this is
    /// `(z + c)^((p − 1)/2)`, the Legendre-symbol map of Cantor–Zassenhaus.
    pub fn pow_all_ones(&mut self, c: u64, bits: u32) -> Vec<u64> {
        let n = self.degree();
        let mut result = vec![0; n];
        // Start from (z + c) mod f (when n = 1, z ≡ −f_0).
        if n == 1 {
            result[0] = field::add(self.negated[0], c);
        } else {
            result[0] = c;
            result[1] = 1;
        }
        for _ in 1..bits {
            self.square(&mut result);
            self.mul_linear(&mut result, c);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn coefficients(max_len: usize) -> impl Strategy<Value = Poly> {
        proptest::collection::vec(
            prop_oneof![Just(0u64), Just(1u64), Just(P - 1), 0..P],
            0..max_len,
        )
        .prop_map(|mut poly| {
            trim(&mut poly);
            poly
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn division_reconstructs(a in coefficients(40), b in coefficients(20)) {
            prop_assume!(!b.is_empty());
            let (quotient, remainder) = div_rem(&a, &b);
            let back = sub(&mul(&quotient, &b), &scale(&remainder, P - 1));
            prop_assert_eq!(back, a);
            prop_assert!(remainder.len() < b.len());
        }

        #[test]
        fn modular_square_and_linear(f_low in proptest::collection::vec(0..P, 1..70), seed in 0..P, c in 0..P) {
            let mut f = f_low.clone();
            f.push(1);
            let n = f_low.len();
            let a: Vec<u64> = (0..n as u64).map(|i| field::mul(seed, i + 7)).collect();
            let mut modulus = Modulus::new(&f);
            let mut squared = a.clone();
            modulus.square(&mut squared);
            let mut trimmed_a = a.clone();
            trim(&mut trimmed_a);
            let (_, mut expected) = div_rem(&mul(&trimmed_a, &trimmed_a), &f);
            expected.resize(n, 0);
            prop_assert_eq!(&squared, &expected);
            let mut linear = a.clone();
            modulus.mul_linear(&mut linear, c);
            let (_, mut expected) = div_rem(&mul(&trimmed_a, &[c, 1]), &f);
            expected.resize(n, 0);
            prop_assert_eq!(linear, expected);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        /// gcd(Π(z − a)·Π(z − c), Π(z − b)·Π(z − c)) = Π(z − c) for disjoint root sets, with
        /// random non-monic scalings.
        #[test]
        fn gcd_finds_the_common_roots(roots in proptest::collection::hash_set(0..P, 0..30),
                                      split in 0usize..30, common in 0usize..30,
                                      s1 in 1..P, s2 in 1..P) {
            let roots: Vec<u64> = roots.into_iter().collect();
            let common = common.min(roots.len());
            let split = common + (split % (roots.len() - common + 1));
            let (shared, rest) = roots.split_at(common);
            let (only_a, only_b) = rest.split_at(split - common);
            let a = scale(&mul(&from_roots(only_a), &from_roots(shared)), s1);
            let b = scale(&mul(&from_roots(only_b), &from_roots(shared)), s2);
            prop_assert_eq!(gcd(&a, &b), from_roots(shared));
        }
    }

    #[test]
    fn gcd_of_products() {
        let a = from_roots(&[5, 9, 11]);
        let b = from_roots(&[9, 11, 100]);
        assert_eq!(gcd(&a, &b), from_roots(&[9, 11]));
        assert_eq!(eval(&a, 9), 0);
        assert_eq!(
            eval(&a, P - 1),
            field::mul(field::mul(P - 6, P - 10), P - 12)
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn modular_products_and_powers(f_low in proptest::collection::vec(0..P, 1..40),
                                       seed_a in 0..P, seed_b in 0..P, q in 1u32..12,
                                       e in prop_oneof![1u64..5000, 1u64..=u64::MAX]) {
            let mut f = f_low.clone();
            f.push(1);
            let n = f_low.len();
            let reduce = |x: &[u64]| {
                let mut x = x.to_vec();
                trim(&mut x);
                let mut r = div_rem(&x, &f).1;
                r.resize(n, 0);
                r
            };
            let a: Vec<u64> = (0..n as u64).map(|i| field::mul(seed_a, i + 3)).collect();
            let b: Vec<u64> = (0..n as u64).map(|i| field::mul(seed_b, i * i + 1)).collect();
            let mut modulus = Modulus::new(&f);
            let mut product = a.clone();
            modulus.mul(&mut product, &b);
            prop_assert_eq!(&product, &reduce(&mul(&reduce(&a), &reduce(&b))));
            let mut power = a.clone();
            modulus.pow_small(&mut power, q);
            let mut expected = vec![1];
            for _ in 0..q {
                expected = reduce(&mul(&expected, &a));
            }
            prop_assert_eq!(&power, &reduce(&expected));
            let mut expected = vec![1];
            let mut square = reduce(&[0, 1]);
            let mut rest = e;
            while rest > 0 {
                if rest & 1 == 1 {
                    expected = reduce(&mul(&expected, &square));
                }
                square = reduce(&mul(&square, &square));
                rest >>= 1;
            }
            prop_assert_eq!(modulus.pow_z(e), reduce(&expected));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]
        /// The AVX2 path gives exactly the scalar path's squares, products and powers, for
        /// every degree around the vector width and edge-valued operands and moduli.
        #[test]
        fn wide_path_matches_scalar(f_low in proptest::collection::vec(
                                        prop_oneof![Just(0u64), Just(1u64), Just(P - 1), 0..P], 2..45),
                                    a in proptest::collection::vec(
                                        prop_oneof![Just(0u64), Just(1u64), Just(P - 1), 0..P], 45),
                                    b in proptest::collection::vec(0..P, 45),
                                    e in 1u64..=u64::MAX) {
            if !WideModulus::is_available() {
                return Ok(()); // nothing to compare on this CPU
            }
            let mut f = f_low.clone();
            f.push(1);
            let n = f_low.len();
            let mut wide = Modulus::with_path(&f, true);
            let mut scalar = Modulus::with_path(&f, false);
            let (mut x, mut y) = (a[..n].to_vec(), a[..n].to_vec());
            for _ in 0..3 {
                wide.square(&mut x);
                scalar.square(&mut y);
                prop_assert_eq!(&x, &y);
            }
            wide.mul(&mut x, &b[..n]);
            scalar.mul(&mut y, &b[..n]);
            prop_assert_eq!(&x, &y);
            wide.square_times_z(&mut x, true);
            scalar.square_times_z(&mut y, true);
            prop_assert_eq!(&x, &y);
            prop_assert_eq!(wide.pow_z(e), scalar.pow_z(e));
        }
    }

    #[test]
    fn wide_square_of_all_maximal_coefficients() {
        if !WideModulus::is_available() {
            return;
        }
        // Every operand and table entry P − 1: the largest partial sums the bounds allow.
        for n in 2..40 {
            let mut f = vec![P - 1; n];
            f.push(1);
            let (mut x, mut y) = (vec![P - 1; n], vec![P - 1; n]);
            Modulus::with_path(&f, true).square(&mut x);
            Modulus::with_path(&f, false).square(&mut y);
            assert_eq!(x, y, "n = {n}");
        }
    }

    #[test]
    fn power_matches_square_and_multiply() {
        let f = from_roots(&[3, 1 << 40, P - 5, 77]);
        let mut modulus = Modulus::new(&f);
        let got = modulus.pow_all_ones(12345, 5); // (z + c)^31
        let mut expected = vec![1];
        for _ in 0..31 {
            expected = div_rem(&mul(&expected, &[12345, 1]), &f).1;
        }
        expected.resize(4, 0);
        assert_eq!(got, expected);
    }
}
