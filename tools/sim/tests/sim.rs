//! End-to-end simulator tests: determinism, convergence under loss, and no lost acked write
//! under partitions and crashes; snapshots that resume to the same report.

use starling_sim::{SimConfig, SnapshotError, SnapshotPlan, resume, run, run_saving};

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

/// A run with membership, loss, crashes, a partition and `peers:1` acks: every kind of state
/// a snapshot must carry.
fn eventful() -> SimConfig {
    SimConfig {
        seed: 5,
        loss: 0.05,
        crash_rate: 0.01,
        partition_at_ms: Some(2_000),
        heal_at_ms: Some(5_000),
        ack_peers: 1,
        sync_interval_ms: 2_000,
        membership: true,
        ..small()
    }
}

#[test]
fn a_resumed_run_reports_what_the_uninterrupted_run_reports() {
    let config = eventful();
    let expected = serde_json::to_string(&run(&config)).expect("json");
    let dir = tempfile::tempdir().expect("tempdir");
    // Snapshots every 3 s leave the last one a few seconds before the end; every 4.5 s, one at
    // 4.5 s: both resume points are exercised (mid-partition, and after the faults).
    for every_ms in [3_000, 4_500] {
        let plan = SnapshotPlan {
            path: dir.path().join(format!("every-{every_ms}")),
            every_ms,
        };
        let saving =
            serde_json::to_string(&run_saving(&config, &plan).expect("save")).expect("json");
        assert_eq!(saving, expected, "saving must not change the run");
        let resumed =
            serde_json::to_string(&resume(&plan.path, 0, None).expect("resume")).expect("json");
        assert_eq!(resumed, expected, "resumed from every {every_ms} ms");
    }
    // A resumed run that keeps saving writes its own snapshots, which resume the same way.
    let first = SnapshotPlan {
        path: dir.path().join("chained"),
        every_ms: 2_000,
    };
    let chained = dir.path().join("chained-again");
    run_saving(
        &config,
        &SnapshotPlan {
            every_ms: 1_000,
            ..first.clone()
        },
    )
    .expect("save");
    std::fs::copy(&first.path, &chained).expect("copy");
    let again = SnapshotPlan {
        path: chained.clone(),
        every_ms: 2_000,
    };
    let resumed = resume(&chained, 0, Some(&again)).expect("resume and save");
    assert_eq!(serde_json::to_string(&resumed).expect("json"), expected);
}

#[test]
fn a_damaged_snapshot_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plan = SnapshotPlan {
        path: dir.path().join("run"),
        every_ms: 3_000,
    };
    run_saving(&small(), &plan).expect("save");
    let good = std::fs::read(&plan.path).expect("read");
    let damaged = dir.path().join("damaged");

    let mut flipped = good.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x40;
    std::fs::write(&damaged, &flipped).expect("write");
    let error = resume(&damaged, 0, None).expect_err("flipped bit");
    assert!(matches!(error, SnapshotError::Checksum { .. }), "{error}");

    std::fs::write(&damaged, &good[..good.len() - 100]).expect("write");
    let error = resume(&damaged, 0, None).expect_err("truncated");
    assert!(matches!(error, SnapshotError::Checksum { .. }), "{error}");

    std::fs::write(
        &damaged,
        b"not a snapshot, just some text that is long enough",
    )
    .expect("write");
    let error = resume(&damaged, 0, None).expect_err("other file");
    assert!(
        matches!(error, SnapshotError::NotSnapshot { .. }),
        "{error}"
    );
    assert!(
        error.to_string().contains("not a starling-sim snapshot"),
        "{error}"
    );

    let mut other_format = good.clone();
    other_format[8..12].copy_from_slice(&99u32.to_le_bytes());
    std::fs::write(&damaged, &other_format).expect("write");
    let error = resume(&damaged, 0, None).expect_err("other format");
    assert!(
        matches!(error, SnapshotError::Format { found: 99, .. }),
        "{error}"
    );

    // Another build: a different build id under a valid hash.
    let mut other_build = good.clone();
    other_build[12] ^= 1;
    let hashed = other_build.len() - 32;
    let hash = *blake3::hash(&other_build[..hashed]).as_bytes();
    other_build[hashed..].copy_from_slice(&hash);
    std::fs::write(&damaged, &other_build).expect("write");
    let error = resume(&damaged, 0, None).expect_err("other build");
    assert!(matches!(error, SnapshotError::OtherBuild { .. }), "{error}");

    let error = resume(&dir.path().join("missing"), 0, None).expect_err("missing");
    assert!(matches!(error, SnapshotError::Io { .. }), "{error}");
}
