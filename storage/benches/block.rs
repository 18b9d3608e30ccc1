//! Data block encode, verify+decode, and point lookup (16 B keys, 100 B values, ~4 KiB blocks).
// criterion's macros generate undocumented public functions.
#![allow(missing_docs)]

use criterion::{Criterion, Throughput, black_box, criterion_group, criterion_main};
use starling_storage::Version;
use starling_storage::sst::block::{Block, BlockBuilder};

fn keys() -> Vec<[u8; 16]> {
    (0..32u64)
        .map(|i| {
            let mut key = [0u8; 16];
            key[..8].copy_from_slice(b"user:000");
            key[8..].copy_from_slice(&(i * 7919).to_be_bytes());
            key
        })
        .collect()
}

fn encode(keys: &[[u8; 16]], value: &[u8]) -> Vec<u8> {
    let mut builder = BlockBuilder::new();
    for (i, key) in keys.iter().enumerate() {
        builder.add(
            key,
            Version {
                hlc: i as u64,
                node: 1,
            },
            Some(value),
        );
    }
    let mut out = Vec::with_capacity(4096);
    builder.finish_into(&mut out);
    out
}

fn bench(c: &mut Criterion) {
    let keys = keys();
    let value = [0x5au8; 100];
    let raw = encode(&keys, &value);
    let mut group = c.benchmark_group("block");
    group.throughput(Throughput::Elements(keys.len() as u64));
    group.bench_function("encode_32x116B", |b| {
        b.iter(|| encode(black_box(&keys), black_box(&value)));
    });
    group.bench_function("verify_and_decode_all", |b| {
        b.iter(|| {
            let block = Block::open(black_box(&raw)).expect("valid block");
            block.iter().filter(Result::is_ok).count()
        });
    });
    group.throughput(Throughput::Elements(1));
    group.bench_function("get_verified", |b| {
        let block = Block::open(&raw).expect("valid block");
        let mut i = 0;
        b.iter(|| {
            i = (i + 13) % keys.len();
            block.get(black_box(&keys[i])).expect("decodes").is_some()
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
