//! End-to-end behaviour of the API: versions, scans, flush, compaction, reopen.

use starling_storage::{Condition, Engine, Error};

use crate::common::{delete, put, run, small_options, tempdir};

#[test]
fn versions_decide_and_survive_flush_compact_and_reopen() {
    let dir = tempdir();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let engine = Engine::open(small_options(&path)).await.expect("open");
        let applied = engine
            .apply(vec![
                put(b"a", b"1", 10),
                put(b"b", b"2", 10),
                put(b"a", b"0", 5),
            ])
            .await
            .expect("apply");
        assert_eq!(applied.applied, vec![true, true, false]);
        assert_eq!(engine.stats().duplicates_skipped, 1);
        engine.flush().await.expect("flush");
        assert_eq!(engine.stats().levels[0].files, 1);
        let applied = engine
            .apply(vec![delete(b"b", 11), put(b"c", b"3", 12)])
            .await
            .expect("apply");
        assert_eq!(applied.count(), 2);
        assert_eq!(engine.live_keys(), 2);
        let scanned: Vec<Vec<u8>> = engine
            .scan(b"", None, 10)
            .expect("scan")
            .into_iter()
            .map(|e| e.key)
            .collect();
        assert_eq!(scanned, vec![b"a".to_vec(), b"c".to_vec()]);
        engine.flush().await.expect("flush");
        engine.compact().await.expect("compact");
        assert_eq!(engine.stats().levels[0].files, 0);
        assert_eq!(
            engine
                .get(b"b")
                .expect("get")
                .expect("tombstone kept")
                .value,
            None
        );
        engine.close().await.expect("close");

        let engine = Engine::open(small_options(&path)).await.expect("reopen");
        assert_eq!(
            engine.get(b"a").expect("get").expect("a").value.as_deref(),
            Some(&b"1"[..])
        );
        assert_eq!(engine.get(b"c").expect("get").expect("c").version.hlc, 12);
        assert_eq!(engine.live_keys(), 2);
        assert_eq!(engine.hlc_max(), 12);
        engine.set_gc_horizon(100);
        engine.compact().await.expect("compact");
        assert_eq!(
            engine.get(b"b").expect("get"),
            None,
            "old tombstone dropped at the bottom"
        );
        let all: Vec<_> = engine
            .entries()
            .expect("entries")
            .collect::<Result<_, _>>()
            .expect("iterate");
        assert_eq!(all.len(), 2);
        engine.close().await.expect("close");
    });
}

#[test]
fn many_writes_flush_in_background_and_read_back() {
    let dir = tempdir();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let mut options = small_options(&path);
        options.durability = starling_storage::Durability::None;
        let engine = Engine::open(options.clone()).await.expect("open");
        for round in 0..20u64 {
            let batch = (0..200u64)
                .map(|i| {
                    put(
                        format!("key{:05}", (i * 7919 + round) % 3000).as_bytes(),
                        &[round as u8; 100],
                        round * 1000 + i + 1,
                    )
                })
                .collect();
            engine.apply(batch).await.expect("apply");
        }
        let stats = engine.stats();
        assert!(stats.flushes > 0, "{stats:?}");
        let scanned = engine.scan(b"key", None, usize::MAX).expect("scan");
        assert_eq!(scanned.len() as u64, engine.live_keys());
        assert!(scanned.windows(2).all(|w| w[0].key < w[1].key));
        engine.close().await.expect("close");
        let engine = Engine::open(options).await.expect("reopen");
        let again = engine.scan(b"key", None, usize::MAX).expect("scan");
        assert_eq!(again, scanned);
        engine.close().await.expect("close");
    });
}

#[test]
fn conditions_and_second_engine_and_limits() {
    let dir = tempdir();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let mut options = small_options(&path);
        options.limits.key_bytes_max = 8;
        let engine = Engine::open(options.clone()).await.expect("open");
        assert!(
            engine
                .apply_if(put(b"k", b"v", 1), Condition::Absent)
                .await
                .expect("nx")
        );
        assert!(
            !engine
                .apply_if(put(b"k", b"w", 2), Condition::Absent)
                .await
                .expect("nx again")
        );
        assert!(
            engine
                .apply_if(put(b"k", b"w", 3), Condition::Present)
                .await
                .expect("xx")
        );
        assert!(
            !engine
                .apply_if(put(b"z", b"w", 3), Condition::Present)
                .await
                .expect("xx absent")
        );
        let err = engine
            .apply(vec![put(b"123456789", b"v", 4)])
            .await
            .expect_err("too long");
        assert!(
            matches!(
                err,
                Error::LimitExceeded {
                    limit: "key_bytes_max",
                    max: 8,
                    actual: 9
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("key_bytes_max"));
        let second = Engine::open(options.clone()).await.expect_err("locked");
        assert!(matches!(second, Error::Locked { .. }), "{second}");
        engine.close().await.expect("close");
        options.limits.key_bytes_max = 5000;
        let invalid = Engine::open(options).await.expect_err("raised limit");
        assert!(
            matches!(invalid, Error::InvalidOptions(ref m) if m.contains("key_bytes_max")),
            "{invalid}"
        );
    });
}

#[test]
fn a_wal_record_larger_than_one_dma_write_survives_reopen() {
    let dir = tempdir();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let mut options = small_options(&path);
        options.memtable_bytes_max = 64 << 20;
        let engine = Engine::open(options.clone()).await.expect("open");
        engine
            .apply(vec![put(b"small", b"x", 1)])
            .await
            .expect("unaligned tail first");
        // 12 one-MiB values: one 12 MiB record, written as more than one 8 MiB DMA write.
        let batch = (0..12u8)
            .map(|i| put(&[b'v', i], &vec![i; 1 << 20], 2))
            .collect();
        engine.apply(batch).await.expect("apply");
        engine
            .apply(vec![put(b"z", b"after", 3)])
            .await
            .expect("apply after");
        engine.close().await.expect("close");
        let engine = Engine::open(options).await.expect("reopen replays the WAL");
        for i in 0..12u8 {
            let entry = engine.get(&[b'v', i]).expect("get").expect("present");
            assert_eq!(entry.value, Some(vec![i; 1 << 20]));
        }
        assert_eq!(
            engine.get(b"z").expect("get").expect("z").value.as_deref(),
            Some(&b"after"[..])
        );
        assert_eq!(engine.live_keys(), 14);
        engine.close().await.expect("close");
    });
}
