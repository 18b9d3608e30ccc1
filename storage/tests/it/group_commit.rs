//! Group commit: concurrent writers share fdatasyncs.

use std::rc::Rc;

use starling_storage::Engine;

use crate::common::{put, run, small_options, tempdir};

#[test]
fn concurrent_writers_share_syncs() {
    let dir = tempdir();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let engine = Rc::new(Engine::open(small_options(&path)).await.expect("open"));
        let tasks: Vec<_> = (0..64u64)
            .map(|writer| {
                let engine = Rc::clone(&engine);
                glommio::spawn_local(async move {
                    for i in 0..10u64 {
                        let key = format!("w{writer:02}-{i}");
                        engine
                            .apply(vec![put(key.as_bytes(), b"value", i + 1)])
                            .await
                            .expect("apply");
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await;
        }
        let stats = engine.stats();
        assert_eq!(stats.writes_synced, 640, "{stats:?}");
        let per_sync = stats.writes_synced as f64 / stats.syncs as f64;
        assert!(
            per_sync > 1.0,
            "writes per fdatasync {per_sync} ({stats:?})"
        );
        assert_eq!(engine.live_keys(), 640);
        let engine = Rc::try_unwrap(engine).expect("tasks finished");
        engine.close().await.expect("close");
    });
}
