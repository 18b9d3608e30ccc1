//! Start-up checks and the admin port: refused shard-count changes, ports in use, /metrics,
//! /health, /info and `starling status`.

use std::process::Command;

use crate::support::{Node, NodeOptions, data_dir};

#[test]
fn a_different_shard_count_is_refused_clearly() {
    let dir = data_dir();
    let data = dir.path().join("data");
    let node = Node::start(
        &data,
        &NodeOptions {
            shards: 2,
            ..NodeOptions::default()
        },
    );
    assert!(node.stop().success());
    let error = Node::try_start(
        &data,
        &NodeOptions {
            shards: 1,
            ..NodeOptions::default()
        },
    )
    .err()
    .expect("refused");
    assert!(
        error.contains("created with 2 shards") && error.contains("--shards 2"),
        "{error}"
    );
}

#[test]
fn a_port_in_use_is_reported() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let dir = data_dir();
    let options = NodeOptions {
        client_port: Some(port),
        ..NodeOptions::default()
    };
    let error = Node::try_start(&dir.path().join("data"), &options)
        .err()
        .expect("refused");
    assert!(
        error.contains("is in use") && error.contains("--client-addr"),
        "{error}"
    );
}

#[test]
fn admin_endpoints_and_status_command() {
    let dir = data_dir();
    let node = Node::start(&dir.path().join("data"), &NodeOptions::default());
    let mut c = node.connection();
    let () = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query(&mut c)
        .expect("SET");
    let _: Option<String> = redis::cmd("GET").arg("k").query(&mut c).expect("GET");

    let (code, body) = starling::api::admin::get(node.admin_addr(), "/health").expect("health");
    assert_eq!((code, body.trim()), (200, "ok"));
    let (code, metrics) =
        starling::api::admin::get(node.admin_addr(), "/metrics").expect("metrics");
    assert_eq!(code, 200);
    for needle in [
        "starling_commands_total{shard=",
        "command=\"set\"",
        "starling_command_duration_seconds_bucket{",
        "starling_connections{shard=\"0\"}",
        "starling_storage_bytes_written_wal_total{shard=\"1\"}",
        "starling_storage_write_amplification{shard=\"0\"}",
        "starling_storage_wal_sync_seconds_bucket{shard=\"0\",le=\"0.000025\"}",
        "starling_storage_wal_write_seconds_count{shard=\"1\"}",
        "starling_forward_seconds_bucket{shard=\"1\",le=\"+Inf\"}",
    ] {
        assert!(metrics.contains(needle), "missing {needle} in\n{metrics}");
    }
    let (code, _) = starling::api::admin::get(node.admin_addr(), "/nope").expect("404");
    assert_eq!(code, 404);

    let output = Command::new(env!("CARGO_BIN_EXE_starling"))
        .args(["status", "--admin-addr", &node.admin_addr().to_string()])
        .output()
        .expect("run starling status");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let info: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("status prints JSON");
    assert_eq!(info["shards"], 2);
    assert_eq!(info["live_keys"], 1);
}

#[test]
fn help_and_bad_config_are_clear() {
    let output = Command::new(env!("CARGO_BIN_EXE_starling"))
        .args(["serve", "--help"])
        .output()
        .expect("run");
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(
        help.contains("--data-dir") && help.contains("STARLING_DATA_DIR"),
        "{help}"
    );
    let dir = data_dir();
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "no_such_key = 1\n").expect("write");
    let output = Command::new(env!("CARGO_BIN_EXE_starling"))
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .expect("run");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("no_such_key"));
}

/// Shards are pinned inside the CPU set the node was started with (taskset here; a cgroup
/// cpuset in a container), not over every online CPU of the machine.
#[test]
fn shards_are_pinned_to_cpus_the_node_may_use() {
    let allowed = starling::runtime::placement::allowed_cpus().expect("an affinity mask");
    // The highest allowed CPU: a placement that ignores the mask pins its first shard to the
    // machine's first CPU. (On a one-CPU machine both are the same and this shows nothing.)
    let cpu = *allowed.last().expect("at least one CPU");
    let dir = data_dir();
    let node = Node::start(
        &dir.path().join("data"),
        &NodeOptions {
            shards: 1,
            launcher: vec!["taskset".into(), "-c".into(), cpu.to_string()],
            ..NodeOptions::default()
        },
    );
    let mut shard_masks = Vec::new();
    let tasks = std::fs::read_dir(format!("/proc/{}/task", node.pid())).expect("task list");
    for task in tasks {
        let path = task.expect("task entry").path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if comm.starts_with("starling-shard") {
            let status = std::fs::read_to_string(path.join("status")).expect("task status");
            let mask =
                starling::runtime::placement::allowed_cpus_in(&status).expect("Cpus_allowed_list");
            shard_masks.push(mask);
        }
    }
    // The executor and its helper thread, both named after the shard.
    assert!(
        !shard_masks.is_empty() && shard_masks.iter().all(|mask| *mask == [cpu]),
        "shard threads allowed on {shard_masks:?}, the node on CPU {cpu} only"
    );
    assert!(node.stop().success());
}
