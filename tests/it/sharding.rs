//! Cross-shard behaviour: keys spread over shards, multi-key commands split and gathered,
//! SCAN visits every shard exactly once.

use std::collections::BTreeSet;

use redis::Commands as _;

use crate::support::{Node, NodeOptions, data_dir, metric};

#[test]
fn mset_mget_del_and_scan_span_shards() {
    let dir = data_dir();
    let node = Node::start(
        &dir.path().join("data"),
        &NodeOptions {
            shards: 2,
            ..NodeOptions::default()
        },
    );
    let mut c = node.connection();
    let pairs: Vec<(String, String)> = (0..500)
        .map(|i| (format!("user:{i}"), format!("v{i}")))
        .collect();
    let () = c.mset(&pairs).expect("MSET");
    let () = c.set("zzz", "other").expect("SET");
    let keys: Vec<&String> = pairs.iter().map(|(k, _)| k).collect();
    let values: Vec<String> = c.mget(&keys).expect("MGET");
    assert_eq!(
        values,
        pairs.iter().map(|(_, v)| v.clone()).collect::<Vec<_>>()
    );

    // SCAN with a small COUNT: every key once, none twice.
    let mut seen = BTreeSet::new();
    let mut cursor = 0u64;
    let mut calls = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg("user:*")
            .arg("COUNT")
            .arg(37)
            .query(&mut c)
            .expect("SCAN");
        for key in batch {
            assert!(seen.insert(key.clone()), "{key} returned twice");
        }
        calls += 1;
        assert!(calls < 100, "SCAN does not terminate");
        if next == 0 {
            break;
        }
        cursor = next;
    }
    assert_eq!(seen.len(), 500);
    assert!(!seen.contains("zzz"));

    // Both shards hold keys: the metrics show ops forwarded from the shard a client landed on.
    let (_, metrics) = starling::api::admin::get(node.admin_addr(), "/metrics").expect("metrics");
    for shard in ["0", "1"] {
        let live = metrics
            .lines()
            .find(|l| l.starts_with(&format!("starling_storage_live_keys{{shard=\"{shard}\"}}")))
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .expect("live keys metric");
        assert!(live > 100.0, "shard {shard} holds only {live} keys");
        // Every shard synced its WAL (default durability) for the writes it owns.
        let shard_label = format!("shard=\"{shard}\"");
        assert!(
            metric(
                &node,
                "starling_storage_wal_sync_seconds_count",
                &shard_label
            ) > 0,
            "no WAL sync timed on shard {shard}"
        );
    }

    // The client's shard forwarded the other shard's keys and timed the round trips.
    assert!(
        metric(&node, "starling_forward_seconds_count", "") > 0,
        "no forwarded request timed"
    );

    let deleted: i64 = c.del(&keys[..250]).expect("DEL");
    assert_eq!(deleted, 250);
    let size: i64 = redis::cmd("DBSIZE").query(&mut c).expect("DBSIZE");
    assert_eq!(size, 251);
}
