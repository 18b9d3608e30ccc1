//! Restart persistence and graceful shutdown: acknowledged writes survive SIGTERM and restart.

use redis::Commands as _;

use crate::support::{Node, NodeOptions, data_dir};

#[test]
fn writes_survive_a_graceful_restart() {
    let dir = data_dir();
    let data = dir.path().join("data");
    let node = Node::start(&data, &NodeOptions::default());
    let mut c = node.connection();
    let pairs: Vec<(String, String)> = (0..300)
        .map(|i| (format!("key:{i}"), format!("value:{i}")))
        .collect();
    let () = c.mset(&pairs).expect("MSET");
    let () = c.set("single", "x").expect("SET");
    let deleted: i64 = c.del("key:0").expect("DEL");
    assert_eq!(deleted, 1);
    drop(c);
    let status = node.stop();
    assert!(status.success(), "graceful shutdown exits 0, got {status}");

    let node = Node::start(&data, &NodeOptions::default());
    let mut c = node.connection();
    let size: i64 = redis::cmd("DBSIZE").query(&mut c).expect("DBSIZE");
    assert_eq!(size, 300);
    assert_eq!(
        c.get::<_, Option<String>>("key:0").expect("GET deleted"),
        None
    );
    assert_eq!(c.get::<_, String>("key:299").expect("GET"), "value:299");
    assert_eq!(c.get::<_, String>("single").expect("GET"), "x");
    // Versions keep growing across the restart: an overwrite after restart wins.
    let () = c.set("single", "y").expect("SET after restart");
    assert_eq!(c.get::<_, String>("single").expect("GET"), "y");
    let log = node.log_text();
    assert!(node.stop().success(), "{log}");
}

#[test]
fn repeated_graceful_shutdowns_exit_cleanly() {
    // A crash at exit (after every shard closed its storage) would show up as a signal here:
    // the allocator's process teardown once segfaulted in ~4 % of shutdowns.
    let dir = data_dir();
    let data = dir.path().join("data");
    for round in 0..8 {
        let node = Node::start(&data, &NodeOptions::default());
        let mut c = node.connection();
        let () = c.set(format!("round:{round}"), round).expect("SET");
        let kept: i64 = redis::cmd("DBSIZE").query(&mut c).expect("DBSIZE");
        assert_eq!(kept, round + 1, "every earlier round's write survived");
        drop(c);
        let status = node.stop();
        assert!(
            status.success(),
            "round {round}: shutdown exited with {status}"
        );
    }
}
