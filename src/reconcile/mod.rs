//! Set reconciliation (CPISync over the prime field 2^61 − 1): pure, sans-IO code.
//!
//! Two replicas holding sets of 61-bit elements (one per entry, a hash of key ‖ version) find
//! both differences while sending about 8–12 bytes per difference, and one short message when
//! the sets are equal. The mathematics and its costs are in `shared/RECONCILE.md`; this module
//! follows it. Pieces, bottom up:
//! - [`field`]: arithmetic mod p = 2^61 − 1 (the scalar reference);
//! - [`kernel`]: batched sketch updates (scalar, AVX2, AVX-512F; chosen at run time);
//! - [`element`]: entry → element, never equal to a sample point;
//! - [`sketch`]: [`PartitionSketch`], 256 leaves × 64 points of numerator/denominator,
//!   updated incrementally; coarser ranges are products of leaves; per-leaf element sets
//!   that find the elements ending in a fingerprint without a scan;
//! - [`poly`] and [`decode`]: incremental rational interpolation, verification, roots sorted
//!   by the smooth part of p − 1; `polykernel`: the AVX2 squaring modulo a polynomial that
//!   root finding spends its time in;
//! - [`wire`]: the messages, each at most [`MESSAGE_BYTES_MAX`] bytes, validated on decode;
//! - [`session`]: [`Initiator`] and [`Responder`], the interactive protocol.
//!
//! **Architecture invariant:** nothing here does I/O, reads a clock or uses global randomness;
//! the caller moves bytes and decides timeouts (quinn-proto style).
//!
//! **Never a wrong set:** a decode is accepted only if it matches a held-back point, both
//! polynomials split into distinct roots that are valid elements, and (on the responder) every
//! root of Q is one of our elements in that range and no root of P is. A wrong reconstruction
//! survives the held-back point with probability ≈ (d_A + d_B)/p ≤ 2^−54 per attempt, and
//! each of the later checks multiplies that by far less than one (see [`decode`]).
//! The initiator's `to_ship` comes from short fingerprints and may contain a few extra
//! elements (at most 1/16 expected per decoded range, never fewer). Element collisions (two entries, one element) happen with
//! probability ≈ n²/2^62 per partition (2·10^−5 at n = 10^7); see [`element`].
//!
//! Anchors (RECONCILE.md §9): minisketch (PinSketch over GF(2^64)) sends 8 B per difference
//! but decodes d = 1,000 in ≈ 219 ms in one piece; negentropy sends ≈ 1.38 KB per difference.
//!
//! Measured (`starling-bench reconcile`, 10^6 elements, thread CPU of both sides, AMD EPYC
//! Zen 3, 2 cores, AVX2, no AVX-512): bytes d = 10: 259, 100: 1,972, 1,000: 12,874, 10,000:
//! 116,602 (11.7 B per difference); CPU d = 1,000: 2.6–2.9 ms, d = 10,000: 29–31 ms when the
//! host runs at full speed, up to ~1.9× that in its slow windows (see ARCHITECTURE.md). Root
//! finding (the AVX2 squaring modulo a polynomial, then splitting) is about half of it at
//! d = 1,000 and three quarters at d = 10,000. Kernel (`starling-bench field`, m = 128, batch
//! 64): scalar ≈ 500 ns, AVX2 ≈ 27 ns per element (finite differences).

pub mod decode;
pub mod element;
pub mod field;
pub mod kernel;
pub mod poly;
mod polykernel;
pub mod session;
pub mod sketch;
pub mod wire;

pub use element::{element_from_hash, element_of, is_element, version_bytes};
pub use kernel::Kernel;
pub use session::{Initiator, Outcome, Responder, SessionError};
pub use sketch::PartitionSketch;
pub use wire::{MESSAGE_BYTES_MAX, Message, WireError};
