//! Refusals with clear errors: tmpfs data dirs, limits named in errors, closed engines.

use starling_storage::{Engine, Error, Limits, Options};

use crate::common::{put, run, small_options, tempdir};

#[test]
fn tmpfs_data_dir_is_refused() {
    let Ok(shm) = tempfile::tempdir_in("/dev/shm") else {
        panic!("/dev/shm (tmpfs) is needed for this test");
    };
    let path = shm.path().to_path_buf();
    let err =
        run(move || async move { Engine::open(Options::new(&path)).await.expect_err("tmpfs") });
    assert!(matches!(&err, Error::NoDirectIo { .. }), "{err}");
    assert!(err.to_string().contains("O_DIRECT"), "{err}");
}

#[test]
fn every_limit_is_named_in_its_error() {
    let dir = tempdir();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let mut options = small_options(&path);
        options.limits = Limits {
            key_bytes_max: 4,
            value_bytes_max: 8,
            batch_entries_max: 2,
            batch_bytes_max: 16,
        };
        let engine = Engine::open(options).await.expect("open");
        let cases = [
            (vec![put(b"12345", b"", 1)], "key_bytes_max"),
            (vec![put(b"k", b"123456789", 1)], "value_bytes_max"),
            (
                vec![put(b"a", b"", 1), put(b"b", b"", 1), put(b"c", b"", 1)],
                "batch_entries_max",
            ),
            (
                vec![put(b"a", b"12345678", 1), put(b"b", b"12345678", 1)],
                "batch_bytes_max",
            ),
        ];
        for (batch, name) in cases {
            let err = engine.apply(batch).await.expect_err(name);
            assert!(
                matches!(err, Error::LimitExceeded { limit, .. } if limit == name),
                "{err}"
            );
            assert!(err.to_string().contains(name));
        }
        assert_eq!(
            engine.stats().bytes_user,
            0,
            "refused batches write nothing"
        );
        engine.close().await.expect("close");
    });
}
