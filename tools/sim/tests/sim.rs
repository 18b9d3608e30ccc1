//! End-to-end simulator tests: determinism, convergence under loss, and no lost acked write
//! under partitions and crashes.

use starling_sim::{SimConfig, run};

fn small() -> SimConfig {
    SimConfig {
        nodes: 40,
        writes: 20,
        duration_ms: 8_000,
        settle_ms: 60_000,
        ..SimConfig::default()
    }
}

#[test]
fn same_seed_same_run_other_seed_other_run() {
    let config = SimConfig {
        loss: 0.05,
        crash_rate: 0.01,
        ..small()
    };
    let first = serde_json::to_string(&run(&config)).expect("json");
    let second = serde_json::to_string(&run(&config)).expect("json");
    assert_eq!(first, second);
    let other = serde_json::to_string(&run(&SimConfig { seed: 2, ..config })).expect("json");
    assert_ne!(first, other);
}

#[test]
fn converges_under_loss_in_few_rounds() {
    let report = run(&SimConfig {
        loss: 0.01,
        ..small()
    });
    assert!(report.converged, "{report:?}");
    assert_eq!(report.lost_acked_writes, 0);
    assert!(report.converge_rounds_p99 <= 8, "{report:?}");
    // The tree delivers each update about once: duplicates stay a small fraction.
    assert!(report.duplicates < 40 * 20 / 10, "{report:?}");
}

#[test]
fn partitions_and_crashes_lose_no_acked_write() {
    for seed in 1..=4 {
        let config = SimConfig {
            seed,
            loss: 0.05,
            ack_peers: 2,
            crash_rate: 0.02,
            partition_at_ms: Some(1_500),
            heal_at_ms: Some(6_000),
            sync_interval_ms: 2_000,
            ..small()
        };
        let report = run(&config);
        assert!(report.converged, "seed {seed}: {report:?}");
        assert_eq!(report.lost_acked_writes, 0, "seed {seed}");
        assert!(report.writes_acked > 0, "seed {seed}: {report:?}");
    }
}

#[test]
fn membership_detects_kills_without_false_positives() {
    let config = SimConfig {
        nodes: 60,
        membership: true,
        kill: 3,
        kill_at_ms: 2_000,
        ..small()
    };
    let report = run(&config);
    assert_eq!(report.undetected, 0, "{report:?}");
    assert!(
        report.detect_ms_max > 0 && report.detect_ms_max < 5_000,
        "{report:?}"
    );
    assert_eq!(report.false_positives, 0, "{report:?}");
    assert!(report.membership_bytes_per_node_per_s > 0.0);
    assert!(
        report.converged && report.lost_acked_writes == 0,
        "{report:?}"
    );
}
