//! INFO: the server, clients, stats, keyspace and storage sections, in Redis' `field:value`
//! format, and the same facts as JSON for the admin port's `/info`.

use std::fmt::Write as _;
use std::rc::Rc;
use std::sync::atomic::Ordering;

use crate::api::metrics::{LatencySample, StorageSample};
use crate::api::resp;
use crate::runtime::keyspace::storage_samples;
use crate::runtime::shard::Shard;

const SECTIONS: [&str; 5] = ["server", "clients", "stats", "keyspace", "storage"];

/// INFO [section ...].
pub async fn info(shard: &Rc<Shard>, argv: &[&[u8]], out: &mut Vec<u8>) {
    let wanted: Vec<String> = argv[1..]
        .iter()
        .map(|a| String::from_utf8_lossy(a).to_lowercase())
        .collect();
    let all = wanted.is_empty()
        || wanted
            .iter()
            .any(|w| matches!(w.as_str(), "all" | "default" | "everything"));
    let samples = match storage_samples(shard).await {
        Ok(samples) => samples,
        Err(error) => return resp::error(out, &error),
    };
    let mut text = String::new();
    for section in SECTIONS
        .iter()
        .filter(|s| all || wanted.iter().any(|w| w == *s))
    {
        if !text.is_empty() {
            text.push_str("\r\n");
        }
        render_section(shard, section, &samples, &mut text);
    }
    resp::bulk(out, text.as_bytes());
}

fn render_section(shard: &Shard, section: &str, samples: &[StorageSample], text: &mut String) {
    let metrics = &shard.metrics;
    let title = section[..1].to_uppercase() + &section[1..];
    let _ = write!(text, "# {title}\r\n");
    let mut field = |name: &str, value: &dyn std::fmt::Display| {
        let _ = write!(text, "{name}:{value}\r\n");
    };
    match section {
        "server" => {
            field("redis_version", &"7.0.0");
            field("starling_version", &env!("CARGO_PKG_VERSION"));
            field("redis_mode", &"standalone");
            field("os", &std::env::consts::OS);
            field("process_id", &std::process::id());
            field("tcp_port", &shard.config.client_addr.port());
            field("uptime_in_seconds", &shard.started.elapsed().as_secs());
            field("node_id", &format_args!("{:016x}", shard.node_id));
            field("shards", &shard.shards());
            field("partitions", &shard.router.partitions());
        }
        "clients" => {
            field("connected_clients", &metrics.connections_current());
            field("maxclients", &shard.config.max_connections);
        }
        "stats" => {
            field(
                "total_connections_received",
                &metrics.sum(|s| &s.connections_total),
            );
            field(
                "total_commands_processed",
                &metrics
                    .shards
                    .iter()
                    .map(crate::api::metrics::ShardMetrics::commands_total)
                    .sum::<u64>(),
            );
            field(
                "rejected_connections",
                &metrics.sum(|s| &s.connections_rejected),
            );
            field("total_net_input_bytes", &metrics.sum(|s| &s.bytes_read));
            field("total_net_output_bytes", &metrics.sum(|s| &s.bytes_written));
            field("ops_forwarded", &metrics.sum(|s| &s.ops_forwarded));
        }
        "keyspace" => {
            let keys: u64 = samples.iter().map(|s| s.live_keys).sum();
            if keys > 0 {
                field("db0", &format_args!("keys={keys},expires=0,avg_ttl=0"));
            }
        }
        "storage" => {
            let total = |f: fn(&StorageSample) -> u64| samples.iter().map(f).sum::<u64>();
            let user = total(|s| s.bytes_user);
            let written =
                total(|s| s.bytes_written_wal + s.bytes_written_flush + s.bytes_written_compaction);
            field("bytes_user", &user);
            field("bytes_written_wal", &total(|s| s.bytes_written_wal));
            field("bytes_written_flush", &total(|s| s.bytes_written_flush));
            field(
                "bytes_written_compaction",
                &total(|s| s.bytes_written_compaction),
            );
            field(
                "write_amplification",
                &format_args!(
                    "{:.3}",
                    if user == 0 {
                        0.0
                    } else {
                        written as f64 / user as f64
                    }
                ),
            );
            field("memtable_bytes", &total(|s| s.memtable_bytes));
            field("syncs", &total(|s| s.syncs));
            field("writes_synced", &total(|s| s.writes_synced));
            let merged = |f: fn(&StorageSample) -> &LatencySample| {
                samples.iter().fold(LatencySample::default(), |mut all, s| {
                    all.merge(f(s));
                    all
                })
            };
            field(
                "wal_write_avg_us",
                &merged(|s| &s.wal_write_latency).mean_us(),
            );
            field(
                "wal_sync_avg_us",
                &merged(|s| &s.wal_sync_latency).mean_us(),
            );
            field("duplicates_skipped", &total(|s| s.duplicates_skipped));
            field("flushes", &total(|s| s.flushes));
            field("compactions", &total(|s| s.compactions));
        }
        _ => unreachable!("unknown INFO section {section}"),
    }
}

/// The admin port's `/info` document.
pub fn info_json(shard: &Shard, samples: &[StorageSample]) -> serde_json::Value {
    let metrics = &shard.metrics;
    serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "node_id": format!("{:016x}", shard.node_id),
        "process_id": std::process::id(),
        "uptime_seconds": shard.started.elapsed().as_secs(),
        "client_addr": shard.config.client_addr.to_string(),
        "admin_addr": shard.config.admin_addr.to_string(),
        "data_dir": shard.config.data_dir.display().to_string(),
        "shards": shard.shards(),
        "partitions": shard.router.partitions(),
        "durability": shard.config.durability,
        "connections": metrics.connections_current(),
        "commands_total": metrics.shards.iter().map(crate::api::metrics::ShardMetrics::commands_total).sum::<u64>(),
        "connections_total": metrics.sum(|s| &s.connections_total),
        "live_keys": samples.iter().map(|s| s.live_keys).sum::<u64>(),
        "storage": samples,
        "stopping": shard.node.stop.load(Ordering::Relaxed),
    })
}
