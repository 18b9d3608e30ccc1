//! Criterion benches for set reconciliation: the sketch-update kernels and decoding.
// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use starling::reconcile::decode;
use starling::reconcile::kernel::Kernel;
use starling::reconcile::{PartitionSketch, element_from_hash};
use starling::reconcile::{field, poly};
use std::hint::black_box;

fn elements(n: usize, seed: u64) -> Vec<u64> {
    (0..n as u64)
        .map(|i| element_from_hash((i + seed).wrapping_mul(0x9E37_79B9_7F4A_7C15)))
        .collect()
}

fn kernels(c: &mut Criterion) {
    let mut group = c.benchmark_group("kernel_m128_batch64");
    let batch = elements(64, 1);
    let points: Vec<u64> = (1..=128).collect();
    group.throughput(Throughput::Elements(batch.len() as u64));
    for kernel in Kernel::available() {
        let mut values = vec![1u64; points.len()];
        group.bench_function(kernel.name(), |bench| {
            bench.iter(|| {
                kernel.multiply_linear_factors(&mut values, &points, black_box(&batch));
            });
        });
    }
    group.finish();

    let mut group = c.benchmark_group("partition_insert_batch4096");
    let batch = elements(4096, 2);
    group.throughput(Throughput::Elements(batch.len() as u64));
    for kernel in Kernel::available() {
        group.bench_function(kernel.name(), |bench| {
            bench.iter_batched_ref(
                || PartitionSketch::with_kernel(kernel),
                |sketch| sketch.insert_batch(black_box(&batch)),
                criterion::BatchSize::LargeInput,
            );
        });
    }
    group.finish();
}

/// Ratios χ_A/χ_B at points 1..=m for disjoint difference sets.
fn ratios(only_a: &[u64], only_b: &[u64], m: usize) -> Vec<u64> {
    let chi = |set: &[u64], z: u64| {
        set.iter()
            .fold(1, |acc, &x| field::mul(acc, field::sub(z, x)))
    };
    let mut denominators: Vec<u64> = (1..=m as u64).map(|z| chi(only_b, z)).collect();
    field::batch_invert(&mut denominators);
    (1..=m as u64)
        .zip(denominators)
        .map(|(z, inverse)| field::mul(chi(only_a, z), inverse))
        .collect()
}

fn decoding(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode_piece");
    group.sample_size(20);
    for d in [16usize, 64, 120] {
        let (only_a, only_b) = (elements(d / 2, 10), elements(d - d / 2, 1_000_000));
        let m = d + 1 + decode::HOLD_BACK;
        let input = ratios(&only_a, &only_b, m);
        let delta = only_a.len() as i64 - only_b.len() as i64;
        group.bench_with_input(BenchmarkId::new("decode", d), &input, |bench, input| {
            bench.iter(|| decode::decode(black_box(input), delta).expect("decodes"));
        });
        group.bench_with_input(
            BenchmarkId::new("reconstruct_only", d),
            &input,
            |bench, input| {
                bench.iter(|| decode::reconstruct(black_box(input), delta).expect("reconstructs"));
            },
        );
    }
    // Root finding alone, and the modular squaring it is made of, at typical piece degrees (d = 1,000: ~15; d = 10,000: ~40).
    for n in [15, 40] {
        let f = poly::from_roots(&elements(n, 7));
        group.bench_function(format!("split_roots_n{n}"), |bench| {
            bench.iter(|| decode::split_roots(black_box(&f)).expect("splits"));
        });
    }
    // Both paths of the modular square side by side (the AVX2 one where the CPU has it).
    let wide_available = poly::Modulus::wide_available();
    for n in [4, 8, 15, 20, 40] {
        let f = poly::from_roots(&elements(n, 7));
        for (path, wide) in [("scalar", false), ("avx2", true)] {
            if wide && !wide_available {
                continue;
            }
            let mut modulus = poly::Modulus::with_path(&f, wide);
            let mut a: Vec<u64> = elements(n, 99);
            group.bench_function(format!("modular_square_n{n}/{path}"), |bench| {
                bench.iter(|| modulus.square(black_box(&mut a)));
            });
        }
    }
    // A failing attempt (too few points) costs interpolation + Euclid only.
    let (only_a, only_b) = (elements(60, 10), elements(60, 1_000_000));
    let input = ratios(&only_a, &only_b, 80);
    group.bench_function("failed_attempt_m80", |bench| {
        bench.iter(|| decode::decode(black_box(&input), 0).is_err());
    });
    group.finish();
}

criterion_group!(benches, kernels, decoding);
criterion_main!(benches);
