//! Bloom filter build and probes (hits and misses) at 10 bits per key.
// criterion's macros generate undocumented public functions.
#![allow(missing_docs)]

use criterion::{Criterion, Throughput, black_box, criterion_group, criterion_main};
use starling_storage::sst::bloom::{Bloom, build, hash_key};

fn bench(c: &mut Criterion) {
    let hashes: Vec<u64> = (0..100_000u64)
        .map(|i| hash_key(&i.to_le_bytes()))
        .collect();
    let raw = build(&hashes);
    let bloom = Bloom::open(&raw).expect("valid filter");
    let mut group = c.benchmark_group("bloom");
    group.throughput(Throughput::Elements(hashes.len() as u64));
    group.bench_function("build_100k", |b| b.iter(|| build(black_box(&hashes))));
    group.throughput(Throughput::Elements(1));
    group.bench_function("hash_16B_key", |b| {
        b.iter(|| hash_key(black_box(b"user:0000123456")));
    });
    let mut i = 0usize;
    group.bench_function("probe_hit", |b| {
        b.iter(|| {
            i = (i + 7919) % hashes.len();
            bloom.may_contain(black_box(hashes[i]))
        });
    });
    let mut j = 0u64;
    group.bench_function("probe_miss", |b| {
        b.iter(|| {
            j += 1;
            bloom.may_contain(black_box(j.wrapping_mul(0x9e37_79b9_7f4a_7c15)))
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
