//! From two sketches to the two set differences (RECONCILE.md §4–§6).
//!
//! Input: the ratios `f_i = χ_A(i) / χ_B(i)` at the consecutive sample points `i = 1..=m` and
//! `δ = |A| − |B|`. The last [`HOLD_BACK`] points are kept out of the reconstruction and used to
//! verify it. Steps, all O(m²) except root finding:
//! 1. rational interpolation through the first `m' = m − HOLD_BACK` ratios, one point at a
//!    time ([`Interpolator`]: the lightest (N, D) with N(i) = f_i·D(i)), so a range extended
//!    after a failed attempt only pays for its new points;
//! 2. normalisation: D scaled to monic; N must then be monic too, deg N − deg D = δ and
//!    deg D ≤ b, where a + b = m' − 1 and a − b = δ;
//! 3. checks: equal to the held-back ratios, each polynomial split into distinct non-zero
//!    linear factors (z^(p−1) ≡ 1 mod the polynomial), and coprime (no root on both sides);
//! 4. roots by splitting on the smooth part of p − 1 (below), reusing the powers computed for
//!    the check in step 3; Cantor–Zassenhaus only for the rare leftover factor of degree ≥ 3.
//!
//! Root finding. p − 1 = 2 · 3² · 5² · 7 · 11 · 13 · 31 · 41 · 61 · 151 · 331 · 1321, so with
//! K = 2 · 3² · 5² = 450 and E = (p − 1)/K, `w = z^E mod f` maps every root r to a K-th root
//! of unity γ^a(r). The chain `y_j = w^(K/Q_j)` (Q_j = q_1⋯q_j over the stages 2, 3, 3, 5, 5)
//! costs a few products, y_0 = z^(p−1) ≡ 1 is the split check, and y_j tells a(r) mod Q_j. Stage
//! j splits each part by gcds with `y_j − ζ` over the q_j candidates ζ, so one exponentiation
//! (a 52-bit exponent, its first log2(2n) squarings free) sorts the roots into 450 classes:
//! singletons fall out, pairs go to the quadratic formula. Plain Cantor–Zassenhaus instead pays 60 squarings per level of its
//! recursion with a fresh random shift each time, about three times as many in all (figures
//! in the `reconcile` module docs).
//!
//! **Invariant:** `decode` either returns the true differences or an error. A wrong pair passes
//! only when the rational function through the first m' points also matches the held-back point
//! (probability ≈ (d_A + d_B)/p, heuristically for hash-random elements, so below 2^−54 for
//! m ≤ 128) *and* both polynomials split completely into distinct roots (≈ 1/k! for a wrong
//! polynomial of degree k) that are all valid elements; the session adds membership checks on
//! top (each root of Q must be one of our elements: ≈ n/p ≤ 2^−29 per root for n < 2^32). One
//! held-back point is therefore enough; each one more would cost 8 bytes per decoded range.

use super::element::FIRST_ELEMENT;
use super::field::{self, P};
use super::poly::{self, Modulus, Poly};

/// Sample points held back from the reconstruction for verification.
pub const HOLD_BACK: usize = 1;

/// Why a decode was refused. Every variant means "send more points or split the range".
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer points than the size difference alone requires.
    #[error("{points} points cannot hold a size difference of {delta}")]
    TooFewPoints {
        /// Points available.
        points: usize,
        /// |A| − |B|.
        delta: i64,
    },
    /// More points than a decode accepts.
    #[error("{points} points exceed the decode limit of {max}")]
    TooManyPoints {
        /// Points given.
        points: usize,
        /// The limit.
        max: usize,
    },
    /// Rational reconstruction found no pair of the required degrees.
    #[error("no rational function of the expected degrees fits the points")]
    Reconstruction,
    /// The reconstruction disagrees with a held-back point.
    #[error("the reconstruction disagrees with held-back point {point}")]
    Verification {
        /// The sample point that disagreed.
        point: u64,
    },
    /// A polynomial does not split into distinct linear factors over F_p.
    #[error("a difference polynomial has repeated or non-linear factors")]
    NotSplit,
    /// A root is not a valid element (it lies among the sample points).
    #[error("a root {root} is not a valid element")]
    InvalidRoot {
        /// The offending root.
        root: u64,
    },
    /// Root finding did not separate the roots within its attempt budget.
    #[error("root finding gave up")]
    RootFinding,
}

/// The two differences: roots of the numerator (in A, not in B) and of the denominator.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Difference {
    /// Elements of A \ B (A's sketch is the numerator).
    pub only_in_numerator: Vec<u64>,
    /// Elements of B \ A.
    pub only_in_denominator: Vec<u64>,
}

/// Decodes the differences from `ratios[i] = χ_A(i + 1) / χ_B(i + 1)` and `δ = |A| − |B|`.
pub fn decode(ratios: &[u64], delta: i64) -> Result<Difference, DecodeError> {
    decode_with(&mut Interpolator::new(delta), ratios)
}

/// [`decode`] continuing `interpolator`, which must have absorbed a prefix of the same ratios
/// for the same δ (it is started over otherwise): only the new points cost.
pub fn decode_with(
    interpolator: &mut Interpolator,
    ratios: &[u64],
) -> Result<Difference, DecodeError> {
    let (numerator, denominator) = reconstruct_with(interpolator, ratios)?;
    let only_in_numerator = split_roots(&numerator)?;
    let only_in_denominator = split_roots(&denominator)?;
    // Coprime P and Q: a common root would be an element on both sides (checked on the roots,
    // far cheaper than a gcd of the two polynomials).
    let mut numerator_roots = only_in_numerator.clone();
    numerator_roots.sort_unstable();
    if only_in_denominator
        .iter()
        .any(|root| numerator_roots.binary_search(root).is_ok())
    {
        return Err(DecodeError::Reconstruction);
    }
    Ok(Difference {
        only_in_numerator,
        only_in_denominator,
    })
}

/// Steps 1–3 without root finding: the monic numerator and denominator, verified at the
/// held-back points (whether they are coprime is checked by [`decode`], on their roots).
pub fn reconstruct(ratios: &[u64], delta: i64) -> Result<(Poly, Poly), DecodeError> {
    reconstruct_with(&mut Interpolator::new(delta), ratios)
}

fn reconstruct_with(
    interpolator: &mut Interpolator,
    ratios: &[u64],
) -> Result<(Poly, Poly), DecodeError> {
    let delta = interpolator.delta();
    if ratios.len() > MAX_POINTS {
        return Err(DecodeError::TooManyPoints {
            points: ratios.len(),
            max: MAX_POINTS,
        });
    }
    let too_few = DecodeError::TooFewPoints {
        points: ratios.len(),
        delta,
    };
    let fitted = ratios
        .len()
        .checked_sub(HOLD_BACK)
        .filter(|&n| n >= 1)
        .ok_or(too_few)?;
    if delta.unsigned_abs() > fitted as u64 - 1 {
        return Err(too_few);
    }
    if interpolator.points() > fitted {
        *interpolator = Interpolator::new(delta);
    }
    for &ratio in &ratios[interpolator.points()..fitted] {
        interpolator.push(ratio);
    }
    // a + b = m' − 1 and a − b ≡ δ; deg P ≤ a, deg Q ≤ b.
    let numerator_max = ((fitted as i64 - 1 + delta) / 2) as usize;
    let denominator_max = fitted - 1 - numerator_max;
    let (remainder, cofactor) = interpolator.candidate();
    let (numerator, denominator) = normalise(remainder, cofactor, denominator_max, delta)?;
    for (i, &ratio) in ratios.iter().enumerate().skip(fitted) {
        let point = i as u64 + 1;
        if poly::eval(&numerator, point) != field::mul(ratio, poly::eval(&denominator, point)) {
            return Err(DecodeError::Verification { point });
        }
    }
    Ok((numerator, denominator))
}

/// Incremental rational interpolation: absorbs the ratios at z = 1, 2, … one at a time and
/// keeps a basis of every (N, D) with N(z) = ratio·D(z) at the points so far (the iterative
/// interpolation of Fitzpatrick and Kötter). A point costs O(degree), with no inversion, so an
/// extension of a range that failed to decode continues where the attempt stopped instead of
/// interpolating and running Euclid again over every point.
///
/// Weights: w(N, D) = max(deg N, deg D + δ). Each point raises the weight of exactly one basis
/// vector by one (the other is combined with it and keeps its weight), so the two weights sum
/// to δ + points; the true (P, Q) has weight d_A and, while d_A + d_B < points, is the unique
/// lightest vector up to a scalar.
#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Debug)]
pub struct Interpolator {
    delta: i64,
    points: usize,
    numerators: [Poly; 2],
    denominators: [Poly; 2],
}

impl Interpolator {
    /// An empty interpolation for size difference δ = |A| − |B|.
    pub fn new(delta: i64) -> Self {
        Interpolator {
            delta,
            points: 0,
            numerators: [vec![1], Vec::new()],
            denominators: [Vec::new(), vec![1]],
        }
    }

    /// Points absorbed so far (the next one is z = points + 1).
    pub fn points(&self) -> usize {
        self.points
    }

    /// The size difference this interpolation is for.
    pub fn delta(&self) -> i64 {
        self.delta
    }

    fn weight(&self, j: usize) -> i64 {
        // A zero part has degree −∞ (a basis vector never has both parts zero).
        let degree = |poly: &Poly, shift: i64| match poly.len() {
            0 => i64::MIN / 2,
            len => len as i64 - 1 + shift,
        };
        degree(&self.numerators[j], 0).max(degree(&self.denominators[j], self.delta))
    }

    /// Absorbs the ratio at the next point.
    pub fn push(&mut self, ratio: u64) {
        self.points += 1;
        let z = self.points as u64;
        let minus_ratio = field::neg(ratio) as u128;
        let [n0, d0, n1, d1] = eval_at_point(
            [
                &self.numerators[0],
                &self.denominators[0],
                &self.numerators[1],
                &self.denominators[1],
            ],
            z,
        );
        let errors = [(n0, d0), (n1, d1)].map(|(numerator, denominator)| {
            field::reduce128(numerator as u128 + minus_ratio * denominator as u128)
        });
        let pivot = match errors {
            [0, 0] => return,
            [0, _] => 1,
            [_, 0] => 0,
            _ if self.weight(1) < self.weight(0) => 1,
            _ => 0,
        };
        let other = 1 - pivot;
        if errors[other] != 0 {
            // other ← e_pivot·other − e_other·pivot: zero at z, weight unchanged.
            let (keep, minus_take) = (errors[pivot], field::neg(errors[other]));
            for [first, second] in [&mut self.numerators, &mut self.denominators] {
                let (target, source) = if other == 0 {
                    (first, &*second)
                } else {
                    (second, &*first)
                };
                combine_in_place(target, keep, minus_take, source);
            }
        }
        // pivot ← (z − point)·pivot: zero at z, weight + 1.
        for polys in [&mut self.numerators, &mut self.denominators] {
            times_linear_in_place(&mut polys[pivot], z);
        }
    }

    /// The lightest basis vector (N, D): the reconstruction, if the difference fits.
    pub fn candidate(&self) -> (&Poly, &Poly) {
        let j = usize::from(self.weight(1) < self.weight(0));
        (&self.numerators[j], &self.denominators[j])
    }
}

/// The four polynomials at a sample point z ≤ [`MAX_POINTS`], each congruent mod p and below
/// 2^62 (not canonical). With acc < 2^62 and z < 2^8, acc·z + c < 2^71, and one fold brings it
/// back below 2^61 + 2^10. The four Horner chains run interleaved, so their latencies overlap;
/// a shorter polynomial's missing top coefficients are zeros.
fn eval_at_point(polys: [&[u64]; 4], z: u64) -> [u64; 4] {
    debug_assert!(z <= MAX_POINTS as u64);
    let len = polys.iter().map(|poly| poly.len()).max().unwrap_or(0);
    let mut acc = [0u64; 4];
    for k in (0..len).rev() {
        for (acc, poly) in acc.iter_mut().zip(&polys) {
            let c = poly.get(k).copied().unwrap_or(0);
            let x = *acc as u128 * z as u128 + c as u128;
            *acc = (x as u64 & P) + (x >> 61) as u64;
        }
    }
    acc
}

/// `target ← keep·target + minus_take·source`, trimmed.
fn combine_in_place(target: &mut Poly, keep: u64, minus_take: u64, source: &[u64]) {
    if target.len() < source.len() {
        target.resize(source.len(), 0);
    }
    let (keep, minus_take) = (keep as u128, minus_take as u128);
    for (i, slot) in target.iter_mut().enumerate() {
        let taken = source.get(i).map_or(0, |&c| minus_take * c as u128);
        *slot = field::reduce128(*slot as u128 * keep + taken);
    }
    poly::trim(target);
}

/// `poly ← (z − point)·poly` in place.
fn times_linear_in_place(poly: &mut Poly, point: u64) {
    if poly.is_empty() {
        return;
    }
    let minus_point = field::neg(point) as u128;
    poly.push(0);
    for i in (1..poly.len()).rev() {
        poly[i] = field::reduce128(poly[i - 1] as u128 + minus_point * poly[i] as u128);
    }
    poly[0] = field::reduce128(minus_point * poly[0] as u128);
}

/// The most points a decode accepts (sessions send at most [`super::sketch::LEAF_POINTS`]).
const MAX_POINTS: usize = 128;

/// Scales (r, t) so both are monic and checks the degrees against δ.
fn normalise(
    remainder: &[u64],
    cofactor: &[u64],
    denominator_max: usize,
    delta: i64,
) -> Result<(Poly, Poly), DecodeError> {
    let (Some(numerator_degree), Some(denominator_degree)) =
        (poly::degree(remainder), poly::degree(cofactor))
    else {
        return Err(DecodeError::Reconstruction);
    };
    if denominator_degree > denominator_max
        || numerator_degree as i64 - denominator_degree as i64 != delta
    {
        return Err(DecodeError::Reconstruction);
    }
    let lead_inverse = field::inv(cofactor[denominator_degree]);
    let numerator = poly::scale(remainder, lead_inverse);
    // Both true polynomials are monic, so a non-monic numerator is a wrong reconstruction.
    if numerator.last() != Some(&1) {
        return Err(DecodeError::Reconstruction);
    }
    Ok((numerator, poly::scale(cofactor, lead_inverse)))
}

/// The distinct roots of a monic polynomial that must split into distinct linear factors
/// whose roots are valid elements; an error otherwise.
pub fn split_roots(f: &[u64]) -> Result<Vec<u64>, DecodeError> {
    let n = poly::degree(f).ok_or(DecodeError::Reconstruction)?;
    let mut roots = Vec::with_capacity(n);
    match n {
        0 => {}
        1 => roots.push(field::neg(f[0])),
        _ => split_by_classes(f, &power_chain(f)?, &mut roots)?,
    }
    if let Some(&root) = roots.iter().find(|&&root| root < FIRST_ELEMENT) {
        return Err(DecodeError::InvalidRoot { root });
    }
    if roots.len() != n {
        return Err(DecodeError::RootFinding);
    }
    Ok(roots)
}

/// `[y_1, …, y_t]` with `y_t = w = z^E mod f` and `y_(j−1) = y_j^(q_j)`, after checking
/// `y_0 = z^(p−1) ≡ 1 (mod f)`: f splits into distinct non-zero linear factors.
fn power_chain(f: &[u64]) -> Result<Vec<Poly>, DecodeError> {
    let mut modulus = Modulus::new(f);
    let mut ys = vec![modulus.pow_z(SMOOTH_COFACTOR)];
    for &q in STAGES[1..].iter().rev() {
        let mut next = ys[0].clone();
        modulus.pow_small(&mut next, q);
        ys.insert(0, next);
    }
    let mut check = ys[0].clone();
    modulus.pow_small(&mut check, STAGES[0]);
    let is_one = check
        .iter()
        .enumerate()
        .all(|(i, &c)| c == u64::from(i == 0));
    if is_one {
        Ok(ys)
    } else {
        Err(DecodeError::NotSplit)
    }
}

/// Sorts the roots of f (which splits) into classes stage by stage; parts of degree ≤ 2 are
/// solved as they appear, bigger leftovers by Cantor–Zassenhaus. Each stage makes every factor
/// it finds monic with one batched inversion.
fn split_by_classes(f: &[u64], ys: &[Poly], roots: &mut Vec<u64>) -> Result<(), DecodeError> {
    let mut rng = SplitMix(f.iter().fold(0x5EED, |acc, &c| acc.rotate_left(7) ^ c));
    let mut parts = vec![(f.to_vec(), 0usize)];
    let mut modulus_so_far = 1; // Q_{j−1}
    let mut scratch = (Vec::new(), Vec::new());
    for (&q, y) in STAGES.iter().zip(ys) {
        let mut y = y.clone();
        poly::trim(&mut y);
        let mut next_parts = Vec::with_capacity(parts.len() * 2);
        let mut cofactors = Vec::new();
        for (part, class) in parts {
            if part.len() <= 3 {
                roots_of(&part, &mut rng, roots)?; // degree ≤ 2: directly, no exponentiation
                continue;
            }
            let classes = Classes {
                class,
                modulus_so_far,
                q,
            };
            classes.split(part, &y, &mut next_parts, &mut cofactors, &mut scratch);
        }
        make_monic(&mut next_parts);
        // Cofactors by division now that their divisors are monic: no inversion each (and
        // a monic part over a monic factor is monic).
        for Cofactor { slot, factor, part } in cofactors {
            let (cofactor, remainder) = poly::div_rem(&part, &next_parts[factor].0);
            debug_assert!(remainder.is_empty());
            next_parts[slot].0 = cofactor;
        }
        parts = next_parts;
        modulus_so_far *= q as usize;
    }
    for (part, _) in parts {
        roots_of(&part, &mut rng, roots)?;
    }
    Ok(())
}

/// Scales every part to a monic polynomial with one inversion (Montgomery's trick).
fn make_monic(parts: &mut [(Poly, usize)]) {
    let mut leads: Vec<u64> = parts.iter().map(|(part, _)| part[part.len() - 1]).collect();
    field::batch_invert(&mut leads);
    for ((part, _), inverse) in parts.iter_mut().zip(leads) {
        if inverse != 1 {
            for c in part.iter_mut() {
                *c = field::mul(*c, inverse);
            }
        }
    }
}

/// The prime factors of K = 450 in the order the stages split by them (the Legendre
/// character first).
const STAGES: [u32; 5] = [2, 3, 3, 5, 5];

/// K, the smooth part of p − 1 the roots are sorted by.
const SMOOTH_ORDER: usize = 450;

/// E = (p − 1)/K.
const SMOOTH_COFACTOR: u64 = (P - 1) / SMOOTH_ORDER as u64;

/// γ = 17^E, a primitive K-th root of unity in F_p (checked by a test).
const GAMMA: u64 = 336_073_833_114_344_291;

/// γ^e for e mod K (the K powers are computed once per process).
fn root_of_unity(e: usize) -> u64 {
    static POWERS: std::sync::OnceLock<Vec<u64>> = std::sync::OnceLock::new();
    let powers = POWERS.get_or_init(|| {
        std::iter::successors(Some(1), |&power| Some(field::mul(power, GAMMA)))
            .take(SMOOTH_ORDER)
            .collect()
    });
    powers[e % SMOOTH_ORDER]
}

/// A part's factor found as the cofactor of another: `part / out[factor]` goes to `out[slot]`
/// once the stage's factors are monic.
struct Cofactor {
    slot: usize,
    factor: usize,
    part: Poly,
}

/// One stage's split of one part: its roots r all have a(r) ≡ `class` (mod
/// `modulus_so_far` = Q_(j−1)), and y_j = γ^(a·K/Q_j) tells a(r) mod Q_j = Q_(j−1)·q.
struct Classes {
    class: usize,
    modulus_so_far: usize,
    q: u32,
}

impl Classes {
    /// Pushes to `out` the factors of the monic `part` (degree ≥ 3) by class mod Q_j, each up to
    /// a scalar (the caller makes them monic). `y` must be trimmed; `scratch` holds gcd buffers.
    ///
    /// Every factor is a gcd with the whole part, so no factor needs dividing out (a division
    /// would need a monic, hence inverted, divisor); the candidates stop once the factors found
    /// account for every root.
    fn split(
        &self,
        part: Poly,
        y: &[u64],
        out: &mut Vec<(Poly, usize)>,
        cofactors: &mut Vec<Cofactor>,
        scratch: &mut (Poly, Poly),
    ) {
        let stage_modulus = self.modulus_so_far * self.q as usize; // Q_j
        let part_degree = part.len() - 1;
        let reduced = poly::div_rem(y, &part).1;
        let first_out = out.len();
        let mut degree_found = 0;
        for i in 0..self.q as usize {
            let candidate = self.class + self.modulus_so_far * i;
            if i + 1 == self.q as usize && out.len() == first_out + 1 {
                // The last class holds the cofactor of the one factor found: a division is
                // cheaper than a gcd with the whole part. It waits until the stage has made
                // the factor monic; a monic placeholder holds its place meanwhile.
                cofactors.push(Cofactor {
                    slot: out.len(),
                    factor: first_out,
                    part,
                });
                out.push((vec![1], candidate));
                return;
            }
            let zeta = root_of_unity(candidate * (SMOOTH_ORDER / stage_modulus));
            let (x, rest) = scratch;
            x.clear();
            x.extend_from_slice(&part);
            rest.clear();
            rest.extend_from_slice(&reduced);
            rest.resize(rest.len().max(1), 0);
            rest[0] = field::sub(rest[0], zeta);
            poly::trim(rest);
            poly::gcd_scaled_in_place(x, rest);
            let degree = x.len().saturating_sub(1);
            if degree == part_degree {
                out.truncate(first_out); // every root in one class: keep the monic part itself
                out.push((part, candidate));
                return;
            }
            if degree > 0 {
                out.push((x.clone(), candidate));
                degree_found += degree;
                if degree_found == part_degree {
                    return;
                }
            }
        }
        // Only when f does not split into distinct roots, which the y_0 check excludes; the
        // caller's root count check reports it.
        debug_assert!(false, "classes found {degree_found} of {part_degree} roots");
    }
}

/// Cantor–Zassenhaus: `legendre` = (z + c)^((p−1)/2) mod f for some c; gcd(f, legendre − 1)
/// holds the roots r with r + c a non-zero square.
fn split_with(
    f: &[u64],
    legendre: Vec<u64>,
    rng: &mut SplitMix,
    roots: &mut Vec<u64>,
) -> Result<(), DecodeError> {
    let mut legendre = legendre;
    for _attempt in 0..ROOT_ATTEMPTS_MAX {
        let mut shifted = legendre;
        poly::trim(&mut shifted);
        let minus_one = poly::sub(&shifted, &[1]);
        let g = poly::gcd(f, &minus_one);
        let g_degree = poly::degree(&g).unwrap_or(0);
        if g_degree > 0 && g_degree < f.len() - 1 {
            let (cofactor, remainder) = poly::div_rem(f, &g);
            debug_assert!(remainder.is_empty());
            roots_of(&g, rng, roots)?;
            return roots_of(&cofactor, rng, roots);
        }
        legendre = Modulus::new(f).pow_all_ones(rng.next_field(), 60);
    }
    Err(DecodeError::RootFinding)
}

/// Retries of a random shift before root finding gives up (each succeeds with p ≈ 1/2 or better).
const ROOT_ATTEMPTS_MAX: usize = 64;

fn roots_of(f: &[u64], rng: &mut SplitMix, roots: &mut Vec<u64>) -> Result<(), DecodeError> {
    match f.len() {
        0 | 1 => Ok(()),
        2 => {
            roots.push(field::neg(f[0]));
            Ok(())
        }
        3 => quadratic_roots(f, roots),
        _ => {
            let legendre = Modulus::new(f).pow_all_ones(rng.next_field(), 60);
            split_with(f, legendre, rng, roots)
        }
    }
}

/// Both roots of a monic quadratic that splits: (−b ± √(b² − 4c))/2. Much cheaper than a
/// Cantor–Zassenhaus step (which fails half the time at degree 2): p ≡ 3 (mod 4), so
/// √x = x^((p+1)/4) = x^(2^59), 59 scalar squarings.
fn quadratic_roots(f: &[u64], roots: &mut Vec<u64>) -> Result<(), DecodeError> {
    debug_assert!(f.len() == 3 && f[2] == 1, "monic quadratic expected");
    let (c, b) = (f[0], f[1]);
    let discriminant = field::sub(field::mul(b, b), field::mul(4, c));
    let root = field::pow2k(discriminant, 59);
    if field::mul(root, root) != discriminant || root == 0 {
        // Not two distinct roots in F_p; cannot happen after the z^p ≡ z check.
        return Err(DecodeError::RootFinding);
    }
    let half = 1u64 << 60; // 2^−1 mod p, since 2 · 2^60 = 2^61 ≡ 1
    let minus_b = field::neg(b);
    roots.push(field::mul(field::add(minus_b, root), half));
    roots.push(field::mul(field::sub(minus_b, root), half));
    Ok(())
}

/// A tiny deterministic generator (SplitMix64) so decoding is pure and reproducible.
struct SplitMix(u64);

impl SplitMix {
    fn next_field(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        field::reduce64(z ^ (z >> 31)) % P
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

    fn ratios(a: &[u64], b: &[u64], m: usize) -> Vec<u64> {
        let mut denominators: Vec<u64> = (1..=m as u64).map(|z| chi(b, z)).collect();
        field::batch_invert(&mut denominators);
        (1..=m as u64)
            .zip(denominators)
            .map(|(z, inverse)| field::mul(chi(a, z), inverse))
            .collect()
    }

    fn sorted(mut v: Vec<u64>) -> Vec<u64> {
        v.sort_unstable();
        v
    }

    fn elements(seeds: &[u64]) -> Vec<u64> {
        seeds.iter().map(|&s| element_from_hash(s)).collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn decodes_within_capacity(common in proptest::collection::vec(any::<u64>(), 0..30),
                                   only_a in proptest::collection::hash_set(any::<u64>(), 0..25),
                                   only_b in proptest::collection::hash_set(any::<u64>(), 0..25)) {
            let only_a: Vec<u64> = elements(&only_a.into_iter().collect::<Vec<_>>());
            let only_b: Vec<u64> = elements(&only_b.into_iter().collect::<Vec<_>>());
            prop_assume!(only_a.iter().all(|x| !only_b.contains(x)));
            let common = elements(&common);
            let a: Vec<u64> = common.iter().chain(&only_a).copied().collect();
            let b: Vec<u64> = common.iter().chain(&only_b).copied().collect();
            let m = only_a.len() + only_b.len() + 1 + HOLD_BACK;
            let got = decode(&ratios(&a, &b, m), a.len() as i64 - b.len() as i64);
            let got = got.map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(sorted(got.only_in_numerator), sorted(only_a));
            prop_assert_eq!(sorted(got.only_in_denominator), sorted(only_b));
        }

        #[test]
        fn never_wrong_beyond_capacity(only_a in proptest::collection::hash_set(any::<u64>(), 0..60),
                                       only_b in proptest::collection::hash_set(any::<u64>(), 0..60),
                                       m in 3usize..40) {
            let only_a = elements(&only_a.into_iter().collect::<Vec<_>>());
            let only_b = elements(&only_b.into_iter().collect::<Vec<_>>());
            prop_assume!(only_a.iter().all(|x| !only_b.contains(x)));
            match decode(&ratios(&only_a, &only_b, m), only_a.len() as i64 - only_b.len() as i64) {
                Ok(got) => {
                    prop_assert_eq!(sorted(got.only_in_numerator), sorted(only_a));
                    prop_assert_eq!(sorted(got.only_in_denominator), sorted(only_b));
                }
                Err(_) => prop_assert!(only_a.len() + only_b.len() + 1 + HOLD_BACK > m),
            }
        }
    }

    #[test]
    fn empty_difference() {
        let set = elements(&[1, 2, 3]);
        let got = decode(&ratios(&set, &set, 8), 0).expect("equal sets decode");
        assert!(got.only_in_numerator.is_empty() && got.only_in_denominator.is_empty());
    }

    #[test]
    fn garbage_is_refused() {
        let garbage: Vec<u64> = (0..40u64)
            .map(|i| field::reduce64(i.wrapping_mul(0x9E37_79B9_7F4A_7C15)))
            .collect();
        for delta in [-3, 0, 5] {
            assert!(decode(&garbage, delta).is_err());
        }
        assert!(matches!(
            decode(&[5], 0),
            Err(DecodeError::TooFewPoints { .. })
        ));
        assert!(matches!(
            decode(&[5; MAX_POINTS + 1], 0),
            Err(DecodeError::TooManyPoints { .. })
        ));
        // Two points hold one difference at most: |δ| = 2 cannot fit.
        assert!(matches!(
            decode(&[5, 6], 2),
            Err(DecodeError::TooFewPoints { .. })
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Every basis vector interpolates every point absorbed, and an interpolation continued
        /// after a failed attempt decodes exactly what a fresh one decodes.
        #[test]
        fn interpolation_continues_across_extensions(
            only_a in proptest::collection::hash_set(any::<u64>(), 0..20),
            only_b in proptest::collection::hash_set(any::<u64>(), 0..20),
            short in 2usize..40,
        ) {
            let only_a = elements(&only_a.into_iter().collect::<Vec<_>>());
            let only_b = elements(&only_b.into_iter().collect::<Vec<_>>());
            prop_assume!(only_a.iter().all(|x| !only_b.contains(x)));
            let m = only_a.len() + only_b.len() + 1 + HOLD_BACK;
            let all = ratios(&only_a, &only_b, m.max(short));
            let delta = only_a.len() as i64 - only_b.len() as i64;
            let mut interpolator = Interpolator::new(delta);
            let first = decode_with(&mut interpolator, &all[..short.min(all.len())]);
            for j in 0..2 {
                let (n, d) = (&interpolator.numerators[j], &interpolator.denominators[j]);
                for (i, &ratio) in all.iter().enumerate().take(interpolator.points()) {
                    let z = i as u64 + 1;
                    prop_assert_eq!(poly::eval(n, z), field::mul(ratio, poly::eval(d, z)));
                }
            }
            let continued = decode_with(&mut interpolator, &all);
            let fresh = decode(&all, delta);
            prop_assert_eq!(continued.clone(), fresh);
            let got = continued.map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(sorted(got.only_in_numerator), sorted(only_a));
            prop_assert_eq!(sorted(got.only_in_denominator), sorted(only_b));
            if first.is_ok() {
                prop_assert!(short >= m);
            }
        }
    }

    #[test]
    fn an_interpolation_ahead_of_the_ratios_starts_over() {
        let (a, b) = (elements(&[1, 2, 3]), elements(&[4]));
        let all = ratios(&a, &b, 12);
        let mut interpolator = Interpolator::new(2);
        assert!(decode_with(&mut interpolator, &all).is_ok());
        // Fewer ratios than already absorbed (a peer that contradicts itself): start over.
        let got = decode_with(&mut interpolator, &all[..7]).expect("still enough points");
        assert_eq!(sorted(got.only_in_numerator), sorted(a));
        assert_eq!(interpolator.points(), 6);
    }

    #[test]
    fn gamma_has_order_k() {
        assert_eq!(field::pow(17, SMOOTH_COFACTOR), GAMMA);
        assert_eq!(field::pow(GAMMA, SMOOTH_ORDER as u64), 1);
        for q in [2, 3, 5] {
            assert_ne!(field::pow(GAMMA, (SMOOTH_ORDER / q) as u64), 1);
        }
        assert_eq!(STAGES.iter().product::<u32>() as usize, SMOOTH_ORDER);
        assert_eq!((P - 1) % SMOOTH_ORDER as u64, 0);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Random roots of every degree up to 120, split exactly.
        #[test]
        fn split_roots_finds_every_root(seeds in proptest::collection::hash_set(any::<u64>(), 0..120)) {
            let roots = elements(&seeds.into_iter().collect::<Vec<_>>());
            let got = split_roots(&poly::from_roots(&roots));
            prop_assert_eq!(sorted(got.map_err(|e| TestCaseError::fail(e.to_string()))?), sorted(roots));
        }

        /// Roots r·u^K share r's class mod K, so no stage separates them: the leftover part
        /// goes to Cantor–Zassenhaus.
        #[test]
        fn roots_in_one_class_split(base in 1..P, us in proptest::collection::hash_set(2..P, 2..12),
                                    others in proptest::collection::hash_set(any::<u64>(), 0..20)) {
            let mut roots: Vec<u64> = std::iter::once(base)
                .chain(us.iter().map(|&u| field::mul(base, field::pow(u, SMOOTH_ORDER as u64))))
                .collect();
            roots.sort_unstable();
            roots.dedup();
            prop_assume!(roots.iter().all(|&r| r >= FIRST_ELEMENT));
            roots.extend(elements(&others.into_iter().collect::<Vec<_>>()));
            let mut unique = roots.clone();
            unique.sort_unstable();
            unique.dedup();
            prop_assume!(unique.len() == roots.len());
            let got = split_roots(&poly::from_roots(&roots));
            prop_assert_eq!(sorted(got.map_err(|e| TestCaseError::fail(e.to_string()))?), unique);
        }
    }

    #[test]
    fn zero_or_missing_roots_are_not_split() {
        let x = element_from_hash(5);
        assert_eq!(
            split_roots(&poly::from_roots(&[0, x, element_from_hash(6)])),
            Err(DecodeError::NotSplit)
        );
        // (z² + 1)(z − x): z² + 1 has no roots in F_p.
        let f = poly::mul(&[1, 0, 1], &poly::from_roots(&[x]));
        assert_eq!(split_roots(&f), Err(DecodeError::NotSplit));
    }

    #[test]
    fn quadratic_roots_are_exact() {
        let (x, y) = (element_from_hash(3), element_from_hash(4));
        let mut roots = Vec::new();
        quadratic_roots(&poly::from_roots(&[x, y]), &mut roots).expect("splits");
        assert_eq!(sorted(roots), sorted(vec![x, y]));
        // z² + 1 has no roots since −1 is not a square when p ≡ 3 (mod 4).
        assert_eq!(
            quadratic_roots(&[1, 0, 1], &mut Vec::new()),
            Err(DecodeError::RootFinding)
        );
    }

    #[test]
    fn repeated_root_is_not_split() {
        let x = element_from_hash(42);
        let f = poly::from_roots(&[x, x, element_from_hash(7)]);
        assert_eq!(split_roots(&f), Err(DecodeError::NotSplit));
        let irreducible_free = poly::from_roots(&[3]); // root 3 is a sample point, not an element
        assert_eq!(
            split_roots(&irreducible_free),
            Err(DecodeError::InvalidRoot { root: 3 })
        );
    }
}
