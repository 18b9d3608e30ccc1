//! Corruption tests: flipped bytes in the WAL tail (dropped and counted), the WAL middle, an
//! SST block and the manifest (`Error::Corruption` naming file and offset, never served).

use std::path::{Path, PathBuf};

use starling_storage::{Engine, Error};

use crate::common::{put, run, small_options, tempdir};

fn flip(path: &Path, offset: u64) {
    let mut data = std::fs::read(path).expect("read file");
    data[usize::try_from(offset).expect("offset")] ^= 0x5a;
    std::fs::write(path, data).expect("write file");
}

fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    found.sort();
    found
}

/// The WAL segment holding data (the newest non-empty one).
fn written_wal(dir: &Path) -> (PathBuf, usize) {
    files(dir, ".log")
        .into_iter()
        .rev()
        .find_map(|p| {
            let data = std::fs::read(&p).expect("read wal");
            let end = data.iter().rposition(|b| *b != 0)? + 1;
            Some((p, end))
        })
        .expect("a WAL segment with data")
}

/// Writes `batches` single-entry batches (1 KiB values) with sync acks, then closes.
fn write_batches(path: &Path, batches: u64) {
    let path = path.to_path_buf();
    run(move || async move {
        let engine = Engine::open(small_options(&path)).await.expect("open");
        for i in 0..batches {
            engine
                .apply(vec![put(
                    format!("key{i:03}").as_bytes(),
                    &[7u8; 1024],
                    i + 1,
                )])
                .await
                .expect("apply");
        }
        engine.close().await.expect("close");
    });
}

#[test]
fn torn_wal_tail_is_dropped_logged_and_counted() {
    let dir = tempdir();
    write_batches(dir.path(), 10);
    let (wal, end) = written_wal(dir.path());
    flip(&wal, (end - 100) as u64);
    let path = dir.path().to_path_buf();
    run(move || async move {
        let engine = Engine::open(small_options(&path))
            .await
            .expect("a torn tail is not an error");
        assert_eq!(engine.stats().wal_tail_records_dropped, 1);
        assert!(engine.get(b"key008").expect("get").is_some());
        assert_eq!(
            engine.get(b"key009").expect("get"),
            None,
            "the torn record is not served"
        );
        engine
            .apply(vec![put(b"after", b"v", 100)])
            .await
            .expect("usable");
        engine.close().await.expect("close");
        let engine = Engine::open(small_options(&path))
            .await
            .expect("second open after truncation");
        assert_eq!(engine.stats().wal_tail_records_dropped, 0);
        assert!(engine.get(b"after").expect("get").is_some());
        engine.close().await.expect("close");
    });
}

#[test]
fn damaged_wal_middle_is_corruption() {
    let dir = tempdir();
    write_batches(dir.path(), 10);
    let (wal, _) = written_wal(dir.path());
    flip(&wal, 40);
    let path = dir.path().to_path_buf();
    let err = run(move || async move {
        Engine::open(small_options(&path))
            .await
            .expect_err("corrupt WAL")
    });
    match err {
        Error::Corruption { file, offset, .. } => {
            assert_eq!(file, wal);
            assert_eq!(offset, 0, "the first record is the damaged one");
        }
        other => panic!("expected corruption, got {other}"),
    }
}

#[test]
fn damaged_sst_block_is_corruption_and_never_served() {
    let dir = tempdir();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let engine = Engine::open(small_options(&path)).await.expect("open");
        let batch = (0..200u64)
            .map(|i| put(format!("key{i:03}").as_bytes(), &[3u8; 100], i + 1))
            .collect();
        engine.apply(batch).await.expect("apply");
        engine.flush().await.expect("flush");
        engine.close().await.expect("close");
    });
    let tables = files(dir.path(), ".sst");
    assert_eq!(tables.len(), 1);
    flip(&tables[0], 200);
    let path = dir.path().to_path_buf();
    let table = tables[0].clone();
    run(move || async move {
        let engine = Engine::open(small_options(&path))
            .await
            .expect("open verifies footer/index/bloom only");
        let err = engine.get(b"key000").expect_err("first block is damaged");
        assert!(
            matches!(&err, Error::Corruption { file, offset: 0, .. } if *file == table),
            "{err}"
        );
        assert!(
            engine.scan(b"key", None, 1000).is_err(),
            "a scan through the block fails too"
        );
        assert!(
            engine
                .get(b"key199")
                .expect("a later block is intact")
                .is_some()
        );
        engine.close().await.expect("close");
    });
}

#[test]
fn damaged_manifest_is_corruption() {
    let dir = tempdir();
    write_batches(dir.path(), 3);
    let manifest = dir.path().join("MANIFEST");
    flip(&manifest, 5);
    let path = dir.path().to_path_buf();
    let err = run(move || async move {
        Engine::open(small_options(&path))
            .await
            .expect_err("corrupt manifest")
    });
    assert!(
        matches!(&err, Error::Corruption { file, offset: 0, .. } if *file == manifest),
        "{err}"
    );
}
