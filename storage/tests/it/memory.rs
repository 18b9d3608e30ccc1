//! Memory bounds: the memtable counts its real bytes, and the table pages mapped into the
//! process stay within `table_mapped_bytes_max` however much is read.

use rand::seq::SliceRandom;
use rand::{SeedableRng, rngs::SmallRng};
use starling_storage::{Durability, Engine, Entry, Version};

use crate::common::{run, small_options, tempdir};

const VALUE_BYTES: usize = 200;

fn entry(i: u32) -> Entry {
    Entry {
        key: format!("key-{i:08}").into_bytes(),
        value: Some(vec![(i % 251) as u8; VALUE_BYTES]),
        version: Version {
            hlc: u64::from(i) + 1,
            node: 1,
        },
    }
}

/// Resident bytes of this process's mappings of files under `dir` (from `/proc/self/smaps`).
fn mapped_rss_bytes_under(dir: &std::path::Path) -> u64 {
    let smaps = std::fs::read_to_string("/proc/self/smaps").expect("read smaps");
    let prefix = dir.to_string_lossy().into_owned();
    let mut inside = false;
    let mut total_kib = 0;
    for line in smaps.lines() {
        let is_header = line
            .split_whitespace()
            .next()
            .is_some_and(|first| first.contains('-') && !first.ends_with(':'));
        if is_header {
            inside = line.contains(&prefix);
        } else if inside && let Some(rest) = line.strip_prefix("Rss:") {
            total_kib += rest
                .split_whitespace()
                .next()
                .and_then(|kib| kib.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    total_kib * 1024
}

#[test]
fn mapped_table_pages_stay_within_the_budget() {
    let dir = tempdir();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let budget = 2 << 20;
        let mut options = small_options(&path);
        options.durability = Durability::None;
        options.memtable_bytes_max = 1 << 20;
        options.table_bytes_target = 2 << 20;
        options.table_mapped_bytes_max = budget;
        let engine = Engine::open(options).await.expect("open");
        let count = 80_000u32;
        for start in (0..count).step_by(500) {
            let batch = (start..start + 500).map(entry).collect();
            engine.apply(batch).await.expect("apply");
        }
        engine.flush().await.expect("flush");
        let table_bytes: u64 = engine.stats().levels.iter().map(|l| l.bytes).sum();
        assert!(
            table_bytes >= 6 * budget as u64,
            "{table_bytes}: too little to test"
        );
        let mut order: Vec<u32> = (0..count).collect();
        order.shuffle(&mut SmallRng::seed_from_u64(3));
        for i in order {
            let want = entry(i);
            let got = engine.get(&want.key).expect("get").expect("present");
            assert_eq!(got, want);
        }
        let scanned = engine.scan(b"key-", None, usize::MAX).expect("scan");
        assert_eq!(scanned.len(), count as usize);
        let stats = engine.stats();
        let mapped = mapped_rss_bytes_under(&path);
        assert!(stats.table_mapped_releases > 0);
        assert!(
            mapped <= stats.table_mapped_bytes,
            "{mapped} B mapped, counted {}",
            stats.table_mapped_bytes
        );
        assert!(stats.table_mapped_bytes <= budget as u64, "{stats:?}");
        engine.close().await.expect("close");
    });
}

#[test]
fn memtable_bytes_are_its_real_size() {
    let dir = tempdir();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let mut options = small_options(&path);
        options.durability = Durability::None;
        options.memtable_bytes_max = 64 << 20;
        let engine = Engine::open(options).await.expect("open");
        let count = 10_000u32;
        for start in (0..count).step_by(500) {
            let batch = (start..start + 500).map(entry).collect();
            engine.apply(batch).await.expect("apply");
        }
        // Per entry: a 32 B record header + key + value (8-aligned) in the arena, the B-tree's
        // 90 B and the hash table's 21 B; the untouched rest of the 4 MiB chunk is not counted.
        let record = (32 + 12 + VALUE_BYTES as u64).next_multiple_of(8);
        assert_eq!(
            engine.stats().memtable_bytes,
            u64::from(count) * (record + 90 + 21)
        );
        engine.close().await.expect("close");
    });
}
