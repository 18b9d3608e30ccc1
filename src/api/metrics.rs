//! Node metrics: per-shard counters and latency histograms, and their Prometheus text rendering.
//!
//! Each shard writes only its own [`ShardMetrics`] (relaxed atomics, uncontended, so the hot path
//! pays a few uncontended increments per command); the admin port reads all of them. Storage
//! statistics are not kept here: the runtime collects them from each shard's engine per scrape and
//! passes them to [`render_prometheus`] as [`StorageSample`]s.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use crate::api::command::{COMMAND_COUNT, COMMANDS, CommandKind};

/// Upper bounds of the latency histogram buckets, in microseconds (+Inf is implicit).
pub const LATENCY_BUCKETS_US: [u64; 12] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
];
const BUCKET_COUNT: usize = LATENCY_BUCKETS_US.len() + 1;

/// Upper bounds of the buckets of [`LatencySample`] and [`AtomicHistogram`] in microseconds
/// (finer than [`LATENCY_BUCKETS_US`] at the low end: a fdatasync or a hop between shards
/// takes tens to hundreds of microseconds).
pub use starling_storage::LATENCY_BOUNDS_US as FINE_BUCKETS_US;

/// A latency distribution at scrape time: non-cumulative counts per bucket of
/// [`FINE_BUCKETS_US`] (the last one unbounded) and the sum.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct LatencySample {
    /// Count per bucket.
    pub buckets: Vec<u64>,
    /// Sum in microseconds.
    pub sum_us: u64,
}

impl LatencySample {
    /// Latencies recorded.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// Mean in microseconds (0 when empty).
    pub fn mean_us(&self) -> u64 {
        self.sum_us.checked_div(self.count()).unwrap_or(0)
    }

    /// Adds another sample (e.g. another shard's) bucket by bucket.
    pub fn merge(&mut self, other: &LatencySample) {
        if self.buckets.len() < other.buckets.len() {
            self.buckets.resize(other.buckets.len(), 0);
        }
        for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
            *mine += theirs;
        }
        self.sum_us += other.sum_us;
    }
}

impl From<&starling_storage::LatencyHistogram> for LatencySample {
    fn from(histogram: &starling_storage::LatencyHistogram) -> Self {
        LatencySample {
            buckets: histogram.buckets.to_vec(),
            sum_us: histogram.sum_us,
        }
    }
}

/// A latency histogram over [`FINE_BUCKETS_US`] that one shard writes (relaxed atomics) and
/// the admin port reads.
#[derive(Default)]
pub struct AtomicHistogram {
    buckets: [AtomicU64; FINE_BUCKETS_US.len() + 1],
    sum_us: AtomicU64,
}

impl AtomicHistogram {
    /// Records one latency.
    pub fn record(&self, latency: Duration) {
        let (bucket, micros) = starling_storage::LatencyHistogram::bucket_of(latency);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(micros, Ordering::Relaxed);
    }

    /// The counts now.
    pub fn sample(&self) -> LatencySample {
        LatencySample {
            buckets: self
                .buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
            sum_us: self.sum_us.load(Ordering::Relaxed),
        }
    }
}

/// Per-command counters of one shard.
#[derive(Default)]
pub struct CommandMetrics {
    /// Commands executed.
    pub calls: AtomicU64,
    /// Commands answered with an error.
    pub errors: AtomicU64,
    /// Sum of latencies in microseconds.
    pub latency_us_sum: AtomicU64,
    /// Non-cumulative bucket counts (the last bucket is +Inf).
    pub latency_buckets: [AtomicU64; BUCKET_COUNT],
}

/// Counters of one shard.
#[derive(Default)]
pub struct ShardMetrics {
    /// Indexed by [`CommandKind`].
    pub commands: [CommandMetrics; COMMAND_COUNT],
    /// Commands whose name is not in the table.
    pub commands_unknown: AtomicU64,
    /// Open client connections.
    pub connections_current: AtomicI64,
    /// Accepted client connections since start.
    pub connections_total: AtomicU64,
    /// Connections refused because `max_connections` was reached.
    pub connections_rejected: AtomicU64,
    /// Connections closed because of a protocol error.
    pub protocol_errors: AtomicU64,
    /// Bytes read from clients.
    pub bytes_read: AtomicU64,
    /// Bytes written to clients.
    pub bytes_written: AtomicU64,
    /// Key-level operations sent to other shards.
    pub ops_forwarded: AtomicU64,
    /// Key-level operations executed for other shards.
    pub ops_served_remote: AtomicU64,
    /// Round trips of requests forwarded to other shards: from the send to the answer's
    /// arrival (the hop there, the owner's work, e.g. its group commit, and the hop back).
    pub forward_latency: AtomicHistogram,
}

impl ShardMetrics {
    /// Records one executed command and its latency.
    pub fn record(&self, kind: CommandKind, latency: Duration, failed: bool) {
        let command = &self.commands[kind as usize];
        command.calls.fetch_add(1, Ordering::Relaxed);
        if failed {
            command.errors.fetch_add(1, Ordering::Relaxed);
        }
        let micros = latency.as_micros().min(u128::from(u64::MAX)) as u64;
        command.latency_us_sum.fetch_add(micros, Ordering::Relaxed);
        let bucket = LATENCY_BUCKETS_US
            .iter()
            .position(|&bound| micros <= bound)
            .unwrap_or(BUCKET_COUNT - 1);
        command.latency_buckets[bucket].fetch_add(1, Ordering::Relaxed);
    }

    /// Total commands executed by this shard.
    pub fn commands_total(&self) -> u64 {
        self.commands
            .iter()
            .map(|c| c.calls.load(Ordering::Relaxed))
            .sum()
    }
}

/// All shards' metrics.
pub struct NodeMetrics {
    /// Indexed by shard.
    pub shards: Vec<ShardMetrics>,
}

impl NodeMetrics {
    /// Metrics for `shards` shards, all zero.
    pub fn new(shards: usize) -> Self {
        assert!(shards > 0);
        NodeMetrics {
            shards: (0..shards).map(|_| ShardMetrics::default()).collect(),
        }
    }

    /// Open connections over all shards.
    pub fn connections_current(&self) -> i64 {
        self.shards
            .iter()
            .map(|s| s.connections_current.load(Ordering::Relaxed))
            .sum()
    }

    /// Sum of one counter over all shards.
    pub fn sum(&self, counter: impl Fn(&ShardMetrics) -> &AtomicU64) -> u64 {
        self.shards
            .iter()
            .map(|s| counter(s).load(Ordering::Relaxed))
            .sum()
    }
}

/// Storage statistics of one shard at scrape time.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct StorageSample {
    /// Live (non-tombstone) keys.
    pub live_keys: u64,
    /// Key and value bytes applied by users.
    pub bytes_user: u64,
    /// Bytes written to the WAL.
    pub bytes_written_wal: u64,
    /// Bytes written by memtable flushes.
    pub bytes_written_flush: u64,
    /// Bytes written by compactions.
    pub bytes_written_compaction: u64,
    /// Bytes written per user byte.
    pub write_amplification: f64,
    /// Bytes in the memtable.
    pub memtable_bytes: u64,
    /// fdatasync calls.
    pub syncs: u64,
    /// Writes made durable by those syncs.
    pub writes_synced: u64,
    /// Entries not written because they were not newer.
    pub duplicates_skipped: u64,
    /// Memtable flushes.
    pub flushes: u64,
    /// Compactions.
    pub compactions: u64,
    /// Per level: (files, bytes).
    pub levels: Vec<(u64, u64)>,
    /// WAL group writes, submission to completion.
    pub wal_write_latency: LatencySample,
    /// WAL fdatasyncs, submission to completion.
    pub wal_sync_latency: LatencySample,
}

fn metric_header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Renders everything in the Prometheus text exposition format (version 0.0.4).
pub fn render_prometheus(metrics: &NodeMetrics, storage: &[StorageSample]) -> String {
    let mut out = String::with_capacity(16 * 1024);
    render_commands(&mut out, metrics);
    render_connections(&mut out, metrics);
    render_storage(&mut out, storage);
    render_latencies(&mut out, metrics, storage);
    out
}

/// The fine-grained histograms: WAL writes and syncs per shard, forwarded round trips.
fn render_latencies(out: &mut String, metrics: &NodeMetrics, storage: &[StorageSample]) {
    let families: [(&str, &str, Vec<LatencySample>); 3] = [
        (
            "starling_storage_wal_write_seconds",
            "WAL group writes (O_DIRECT), submission to completion as the WAL writer sees it.",
            storage
                .iter()
                .map(|s| s.wal_write_latency.clone())
                .collect(),
        ),
        (
            "starling_storage_wal_sync_seconds",
            "WAL fdatasyncs, submission to completion as the WAL writer sees it.",
            storage.iter().map(|s| s.wal_sync_latency.clone()).collect(),
        ),
        (
            "starling_forward_seconds",
            "Requests forwarded to another shard: send to the answer's arrival.",
            metrics
                .shards
                .iter()
                .map(|s| s.forward_latency.sample())
                .collect(),
        ),
    ];
    for (name, help, samples) in families {
        metric_header(out, name, "histogram", help);
        for (shard, sample) in samples.iter().enumerate() {
            write_histogram(
                out,
                name,
                &format!("shard=\"{shard}\""),
                &FINE_BUCKETS_US,
                sample.buckets.iter().copied(),
                sample.sum_us,
            );
        }
    }
}

/// One label set of a histogram: cumulative `_bucket` lines over `bounds_us` (+Inf last) from
/// non-cumulative `counts`, then `_sum` (seconds) and `_count`.
fn write_histogram(
    out: &mut String,
    name: &str,
    labels: &str,
    bounds_us: &[u64],
    counts: impl Iterator<Item = u64>,
    sum_us: u64,
) {
    let mut cumulative = 0;
    for (i, count) in counts.enumerate() {
        cumulative += count;
        let bound = bounds_us
            .get(i)
            .map_or_else(|| "+Inf".to_string(), |us| format!("{}", *us as f64 / 1e6));
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
    }
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", sum_us as f64 / 1e6);
    let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
}

fn render_commands(out: &mut String, metrics: &NodeMetrics) {
    metric_header(
        out,
        "starling_commands_total",
        "counter",
        "Commands executed, per shard and command.",
    );
    for_each_command(metrics, |shard, name, c| {
        let _ = writeln!(
            out,
            "starling_commands_total{{shard=\"{shard}\",command=\"{name}\"}} {}",
            c.calls.load(Ordering::Relaxed)
        );
    });
    metric_header(
        out,
        "starling_command_errors_total",
        "counter",
        "Commands answered with an error.",
    );
    for_each_command(metrics, |shard, name, c| {
        let _ = writeln!(
            out,
            "starling_command_errors_total{{shard=\"{shard}\",command=\"{name}\"}} {}",
            c.errors.load(Ordering::Relaxed)
        );
    });
    metric_header(
        out,
        "starling_command_duration_seconds",
        "histogram",
        "Time from parsing a request batch to its reply.",
    );
    for_each_command(metrics, |shard, name, c| {
        write_histogram(
            out,
            "starling_command_duration_seconds",
            &format!("shard=\"{shard}\",command=\"{name}\""),
            &LATENCY_BUCKETS_US,
            c.latency_buckets.iter().map(|b| b.load(Ordering::Relaxed)),
            c.latency_us_sum.load(Ordering::Relaxed),
        );
    });
    counter_per_shard(
        out,
        metrics,
        "starling_commands_unknown_total",
        "Commands not in the command table.",
        |s| &s.commands_unknown,
    );
}

/// Calls `f` for every (shard, command) pair that was used at least once (keeps the page small).
fn for_each_command(metrics: &NodeMetrics, mut f: impl FnMut(usize, &str, &CommandMetrics)) {
    for (shard, shard_metrics) in metrics.shards.iter().enumerate() {
        for (spec, command) in COMMANDS.iter().zip(&shard_metrics.commands) {
            if command.calls.load(Ordering::Relaxed) > 0 {
                f(shard, spec.name, command);
            }
        }
    }
}

fn counter_per_shard(
    out: &mut String,
    metrics: &NodeMetrics,
    name: &str,
    help: &str,
    counter: impl Fn(&ShardMetrics) -> &AtomicU64,
) {
    metric_header(out, name, "counter", help);
    for (shard, shard_metrics) in metrics.shards.iter().enumerate() {
        let _ = writeln!(
            out,
            "{name}{{shard=\"{shard}\"}} {}",
            counter(shard_metrics).load(Ordering::Relaxed)
        );
    }
}

fn render_connections(out: &mut String, metrics: &NodeMetrics) {
    metric_header(
        out,
        "starling_connections",
        "gauge",
        "Open client connections.",
    );
    for (shard, s) in metrics.shards.iter().enumerate() {
        let _ = writeln!(
            out,
            "starling_connections{{shard=\"{shard}\"}} {}",
            s.connections_current.load(Ordering::Relaxed)
        );
    }
    counter_per_shard(
        out,
        metrics,
        "starling_connections_total",
        "Accepted client connections.",
        |s| &s.connections_total,
    );
    counter_per_shard(
        out,
        metrics,
        "starling_connections_rejected_total",
        "Connections refused at max_connections.",
        |s| &s.connections_rejected,
    );
    counter_per_shard(
        out,
        metrics,
        "starling_protocol_errors_total",
        "Connections closed on malformed input.",
        |s| &s.protocol_errors,
    );
    counter_per_shard(
        out,
        metrics,
        "starling_client_bytes_read_total",
        "Bytes read from clients.",
        |s| &s.bytes_read,
    );
    counter_per_shard(
        out,
        metrics,
        "starling_client_bytes_written_total",
        "Bytes written to clients.",
        |s| &s.bytes_written,
    );
    counter_per_shard(
        out,
        metrics,
        "starling_ops_forwarded_total",
        "Key operations sent to their owning shard.",
        |s| &s.ops_forwarded,
    );
    counter_per_shard(
        out,
        metrics,
        "starling_ops_served_remote_total",
        "Key operations executed for another shard.",
        |s| &s.ops_served_remote,
    );
}

fn render_storage(out: &mut String, storage: &[StorageSample]) {
    type Field = (
        &'static str,
        &'static str,
        &'static str,
        fn(&StorageSample) -> f64,
    );
    const FIELDS: &[Field] = &[
        ("starling_storage_live_keys", "gauge", "Live keys.", |s| {
            s.live_keys as f64
        }),
        (
            "starling_storage_bytes_user_total",
            "counter",
            "Key and value bytes applied.",
            |s| s.bytes_user as f64,
        ),
        (
            "starling_storage_bytes_written_wal_total",
            "counter",
            "Bytes written to the WAL.",
            |s| s.bytes_written_wal as f64,
        ),
        (
            "starling_storage_bytes_written_flush_total",
            "counter",
            "Bytes written by memtable flushes.",
            |s| s.bytes_written_flush as f64,
        ),
        (
            "starling_storage_bytes_written_compaction_total",
            "counter",
            "Bytes written by compaction.",
            |s| s.bytes_written_compaction as f64,
        ),
        (
            "starling_storage_write_amplification",
            "gauge",
            "Bytes written per user byte.",
            |s| s.write_amplification,
        ),
        (
            "starling_storage_memtable_bytes",
            "gauge",
            "Bytes in the memtable.",
            |s| s.memtable_bytes as f64,
        ),
        (
            "starling_storage_syncs_total",
            "counter",
            "fdatasync calls (group commits).",
            |s| s.syncs as f64,
        ),
        (
            "starling_storage_writes_synced_total",
            "counter",
            "Writes made durable by group commits.",
            |s| s.writes_synced as f64,
        ),
        (
            "starling_storage_duplicates_skipped_total",
            "counter",
            "Entries not written because not newer.",
            |s| s.duplicates_skipped as f64,
        ),
        (
            "starling_storage_flushes_total",
            "counter",
            "Memtable flushes.",
            |s| s.flushes as f64,
        ),
        (
            "starling_storage_compactions_total",
            "counter",
            "Compactions.",
            |s| s.compactions as f64,
        ),
    ];
    for (name, kind, help, value) in FIELDS {
        metric_header(out, name, kind, help);
        for (shard, sample) in storage.iter().enumerate() {
            let _ = writeln!(out, "{name}{{shard=\"{shard}\"}} {}", value(sample));
        }
    }
    metric_header(
        out,
        "starling_storage_level_files",
        "gauge",
        "SSTable files per level.",
    );
    for (shard, sample) in storage.iter().enumerate() {
        for (level, (files, _)) in sample.levels.iter().enumerate() {
            let _ = writeln!(
                out,
                "starling_storage_level_files{{shard=\"{shard}\",level=\"{level}\"}} {files}"
            );
        }
    }
    metric_header(
        out,
        "starling_storage_level_bytes",
        "gauge",
        "SSTable bytes per level.",
    );
    for (shard, sample) in storage.iter().enumerate() {
        for (level, (_, bytes)) in sample.levels.iter().enumerate() {
            let _ = writeln!(
                out,
                "starling_storage_level_bytes{{shard=\"{shard}\",level=\"{level}\"}} {bytes}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative_and_counts_match() {
        let metrics = NodeMetrics::new(2);
        metrics.shards[1].record(CommandKind::Get, Duration::from_micros(90), false);
        metrics.shards[1].record(CommandKind::Get, Duration::from_millis(3), false);
        metrics.shards[1].record(CommandKind::Get, Duration::from_secs(5), true);
        metrics.shards[0]
            .forward_latency
            .record(Duration::from_micros(25));
        metrics.shards[0]
            .forward_latency
            .record(Duration::from_micros(400));
        let mut syncs = starling_storage::LatencyHistogram::default();
        syncs.record(Duration::from_micros(900));
        syncs.record(Duration::from_secs(2));
        let storage = vec![StorageSample {
            live_keys: 7,
            write_amplification: 1.5,
            levels: vec![(2, 100)],
            wal_sync_latency: (&syncs).into(),
            ..StorageSample::default()
        }];
        let text = render_prometheus(&metrics, &storage);
        assert!(
            text.contains("starling_commands_total{shard=\"1\",command=\"get\"} 3"),
            "{text}"
        );
        assert!(text.contains("starling_command_errors_total{shard=\"1\",command=\"get\"} 1"));
        assert!(text.contains(
            "starling_command_duration_seconds_bucket{shard=\"1\",command=\"get\",le=\"0.0001\"} 1"
        ));
        assert!(text.contains(
            "starling_command_duration_seconds_bucket{shard=\"1\",command=\"get\",le=\"0.005\"} 2"
        ));
        assert!(text.contains(
            "starling_command_duration_seconds_bucket{shard=\"1\",command=\"get\",le=\"+Inf\"} 3"
        ));
        assert!(text.contains("starling_storage_live_keys{shard=\"0\"} 7"));
        assert!(text.contains("starling_storage_write_amplification{shard=\"0\"} 1.5"));
        assert!(text.contains("starling_storage_level_files{shard=\"0\",level=\"0\"} 2"));
        for needle in [
            "starling_forward_seconds_bucket{shard=\"0\",le=\"0.000025\"} 1",
            "starling_forward_seconds_bucket{shard=\"0\",le=\"0.00025\"} 1",
            "starling_forward_seconds_bucket{shard=\"0\",le=\"0.0005\"} 2",
            "starling_forward_seconds_count{shard=\"0\"} 2",
            "starling_forward_seconds_sum{shard=\"0\"} 0.000425",
            "starling_forward_seconds_count{shard=\"1\"} 0",
            "starling_storage_wal_sync_seconds_bucket{shard=\"0\",le=\"0.0005\"} 0",
            "starling_storage_wal_sync_seconds_bucket{shard=\"0\",le=\"0.001\"} 1",
            "starling_storage_wal_sync_seconds_bucket{shard=\"0\",le=\"1\"} 1",
            "starling_storage_wal_sync_seconds_bucket{shard=\"0\",le=\"+Inf\"} 2",
            "starling_storage_wal_write_seconds_count{shard=\"0\"} 0",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
        assert!(
            !text.contains("command=\"set\""),
            "unused commands are left out"
        );
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert_eq!(line.split(' ').count(), 2, "malformed sample line {line:?}");
        }
    }
}
