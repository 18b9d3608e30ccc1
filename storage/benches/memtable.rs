//! Memtable point lookups in pipelined batches of 16, as redis-benchmark's `-P 16` GETs reach
//! a shard: 100,000 entries (16 B keys, 100 B values) visited in a scattered order, each batch
//! looked up as is and after `Memtable::prefetch` of all its keys. A lookup is dominated by
//! cache misses into the hash table and the arena, not by instructions; prefetching a batch
//! first lets those misses overlap.
// criterion's macros generate undocumented public functions.
#![allow(missing_docs)]

use criterion::{Criterion, Throughput, black_box, criterion_group, criterion_main};
use starling_storage::Version;
use starling_storage::benching::Memtable;

const KEYS: u64 = 100_000;
const BATCH: usize = 16;

fn bench(c: &mut Criterion) {
    let mut table = Memtable::default();
    let value = [0x5a_u8; 100];
    for i in 0..KEYS {
        let version = Version {
            hlc: i + 1,
            node: 1,
        };
        table.insert(format!("key:{i:012}").as_bytes(), version, Some(&value));
    }
    // A stride coprime with KEYS: consecutive batches share no cache lines, and the whole set
    // (~23 MB of arena) is revisited only every 6,250 batches.
    let order: Vec<Vec<u8>> = (0..KEYS)
        .map(|i| format!("key:{:012}", (i * 40_009) % KEYS).into_bytes())
        .collect();
    let batches: Vec<&[Vec<u8>]> = order.chunks_exact(BATCH).collect();
    let lookup = |batch: &[Vec<u8>]| {
        batch
            .iter()
            .filter_map(|key| table.get(black_box(key)))
            .map(|slot| slot.version.hlc + slot.value.map_or(0, |v| u64::from(v[50])))
            .sum::<u64>()
    };
    let mut group = c.benchmark_group("memtable");
    group.throughput(Throughput::Elements(BATCH as u64));
    let mut next = 0usize;
    group.bench_function("get_batch16", |b| {
        b.iter(|| {
            next = (next + 1) % batches.len();
            lookup(batches[next])
        });
    });
    group.bench_function("prefetch_then_get_batch16", |b| {
        b.iter(|| {
            next = (next + 1) % batches.len();
            for key in batches[next] {
                table.prefetch(key);
            }
            lookup(batches[next])
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
