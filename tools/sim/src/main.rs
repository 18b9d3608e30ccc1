//! `starling-sim`: parses flags, runs one simulation, prints the report.

use std::path::PathBuf;

use clap::Parser;

use starling::replication::AntiEntropyMode;
use starling::replication::dissemination::DisseminationConfig;
use starling_sim::{Report, SimConfig, SnapshotPlan, resume, run, run_saving};

/// The flags a snapshot fixes: given with --resume, they are refused instead of ignored.
const RUN_FLAGS: [&str; 29] = [
    "nodes",
    "seed",
    "loss",
    "duplicate",
    "latency_ms",
    "writes",
    "write_interval_ms",
    "value_bytes",
    "key_bytes",
    "ack_peers",
    "partition_at",
    "heal_at",
    "crash_rate",
    "duration",
    "settle",
    "tick_ms",
    "sync_interval_ms",
    "partitions",
    "write_linger_ms",
    "linger_ms",
    "ack_linger_ms",
    "retransmit_ms",
    "bulk_threshold",
    "fanout",
    "membership",
    "kill",
    "kill_at",
    "anti_entropy",
    "seeds",
];

/// mimalloc instead of glibc malloc: a large run frees and allocates datagram bodies and queue
/// entries millions of times per simulated second, and glibc's `_int_malloc`/`_int_free` took
/// ~15 % of an N = 10,000 run.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Simulates N Starling nodes' replication (dissemination, anti-entropy, acks) on a virtual
/// clock with a lossy, reordering, partitionable network. The same seed replays the same run.
#[derive(Parser, Debug)]
#[command(name = "starling-sim", version)]
struct Args {
    /// Number of nodes.
    #[arg(long, default_value_t = 100)]
    nodes: u32,
    /// Seed of the run's single RNG.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Datagram loss probability (0..1).
    #[arg(long, default_value_t = 0.01)]
    loss: f64,
    /// Datagram duplication probability (0..1).
    #[arg(long, default_value_t = 0.001)]
    duplicate: f64,
    /// Mean one-way latency in ms (half fixed, half exponential jitter: reordering).
    #[arg(long, default_value_t = 20.0)]
    latency_ms: f64,
    /// Client writes (one every --write-interval-ms from t = 1 s, at random live nodes).
    #[arg(long, default_value_t = 100)]
    writes: u32,
    /// Spacing of writes in ms.
    #[arg(long, default_value_t = 50)]
    write_interval_ms: u64,
    /// Value size of a write in bytes.
    #[arg(long, default_value_t = 100)]
    value_bytes: usize,
    /// Key size of a write in bytes (>= 5).
    #[arg(long, default_value_t = 16)]
    key_bytes: usize,
    /// Acknowledge writes after k peers are durable (0 = ack = local).
    #[arg(long, default_value_t = 0)]
    ack_peers: usize,
    /// Split the cluster in two halves at this simulated time (ms).
    #[arg(long)]
    partition_at: Option<u64>,
    /// Heal the partition at this simulated time (ms).
    #[arg(long)]
    heal_at: Option<u64>,
    /// Crash probability per node per simulated second (restart after 2–20 s).
    #[arg(long, default_value_t = 0.0)]
    crash_rate: f64,
    /// Faults happen before this simulated time (ms); then all heal and restart.
    #[arg(long, default_value_t = 30_000)]
    duration: u64,
    /// After --duration, wait at most this long (ms) for every write to reach every node.
    #[arg(long, default_value_t = 120_000)]
    settle: u64,
    /// Gossip tick in ms.
    #[arg(long, default_value_t = 200)]
    tick_ms: u64,
    /// Anti-entropy interval per partition in ms.
    #[arg(long, default_value_t = 10_000)]
    sync_interval_ms: u64,
    /// Partitions (production uses 256; fewer keep large runs small).
    #[arg(long, default_value_t = 16)]
    partitions: u16,
    /// How long fresh writes wait to share a batch (ms).
    #[arg(long, default_value_t = DisseminationConfig::default().write_linger_ms)]
    write_linger_ms: u64,
    /// How long a batch straight from its writer waits for others to share a datagram (ms).
    #[arg(long, default_value_t = DisseminationConfig::default().linger_ms)]
    linger_ms: u64,
    /// How long hop acks for one parent may wait to share a datagram (ms).
    #[arg(long, default_value_t = DisseminationConfig::default().ack_linger_ms)]
    ack_linger_ms: u64,
    /// Repeat an unacked rumor after this long (ms).
    #[arg(long, default_value_t = DisseminationConfig::default().retransmit_after_ms)]
    retransmit_ms: u64,
    /// A peer partition this many entries ahead starts a bulk catch-up.
    #[arg(long, default_value_t = starling::replication::Config::default().bulk_threshold)]
    bulk_threshold: u64,
    /// Dissemination fanout per tick.
    #[arg(long, default_value_t = 4)]
    fanout: usize,
    /// Run the real SWIM/Lifeguard membership on every node (memory ~120·N² bytes: 12 GB at
    /// N = 10,000); "auto" turns it on for N <= 2,000.
    #[arg(long, default_value = "auto")]
    membership: String,
    /// Kill this many random nodes at --kill-at (until --duration) to measure detection.
    #[arg(long, default_value_t = 0)]
    kill: u32,
    /// When to kill them (ms).
    #[arg(long, default_value_t = 5_000)]
    kill_at: u64,
    /// Anti-entropy after unequal digests: "cpisync" sessions (sketches built per session),
    /// "cpisync-kept" (a ~256 KiB sketch per partition per node, the node default: small
    /// runs only) or "elements" lists.
    #[arg(long, default_value = "cpisync")]
    anti_entropy: String,
    /// Run this many consecutive seeds starting at --seed (one line per run).
    #[arg(long, default_value_t = 1)]
    seeds: u64,
    /// Exit with status 1 if any run lost an acknowledged write or did not converge (the
    /// failing seeds are printed, so each can be replayed alone).
    #[arg(long)]
    check: bool,
    /// Print one JSON object instead of the human summary.
    #[arg(long)]
    json: bool,
    /// Print a progress line to stderr every this many simulated ms (0: never).
    #[arg(long, default_value_t = 0)]
    progress_ms: u64,
    /// Save the run to this file every --snapshot-every-ms simulated (each snapshot replaces
    /// the previous one atomically), so a long run can be resumed with --resume.
    #[arg(long)]
    snapshot: Option<PathBuf>,
    /// Simulated ms between snapshots.
    #[arg(long, default_value_t = 60_000)]
    snapshot_every_ms: u64,
    /// Continue the run saved in this file (written by this same build); the run's flags come
    /// from the snapshot (giving one is an error); --progress-ms, --snapshot,
    /// --snapshot-every-ms, --json and --check apply.
    #[arg(long, conflicts_with_all = RUN_FLAGS)]
    resume: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.snapshot_every_ms > 0,
        "--snapshot-every-ms must be above 0"
    );
    let plan = args.snapshot.clone().map(|path| SnapshotPlan {
        path,
        every_ms: args.snapshot_every_ms,
    });
    if let Some(path) = &args.resume {
        let report = resume(path, args.progress_ms, plan.as_ref())?;
        print_report(&report, args.json)?;
        if args.check && (report.lost_acked_writes > 0 || !report.converged) {
            eprintln!("starling-sim: the resumed run lost an acked write or did not converge");
            std::process::exit(1);
        }
        return Ok(());
    }
    anyhow::ensure!(
        plan.is_none() || args.seeds <= 1,
        "--snapshot saves one run: it cannot be combined with --seeds"
    );
    anyhow::ensure!(
        args.nodes >= 2,
        "--nodes must be at least 2, got {}",
        args.nodes
    );
    anyhow::ensure!(
        (0.0..1.0).contains(&args.loss),
        "--loss must be in [0, 1), got {}",
        args.loss
    );
    anyhow::ensure!(
        args.key_bytes >= 5,
        "--key-bytes must be at least 5, got {}",
        args.key_bytes
    );
    anyhow::ensure!(args.fanout >= 1, "--fanout must be at least 1");
    let membership = match args.membership.as_str() {
        "on" => true,
        "off" => false,
        "auto" => args.nodes <= 2_000,
        other => anyhow::bail!("--membership must be on, off or auto, got {other:?}"),
    };
    let anti_entropy = match args.anti_entropy.as_str() {
        "cpisync" => AntiEntropyMode::Cpisync,
        "cpisync-kept" => AntiEntropyMode::CpisyncKept,
        "elements" => AntiEntropyMode::ElementList,
        other => {
            anyhow::bail!("--anti-entropy must be cpisync, cpisync-kept or elements, got {other:?}")
        }
    };
    let config = SimConfig {
        nodes: args.nodes,
        seed: args.seed,
        loss: args.loss,
        duplicate: args.duplicate,
        latency_ms: args.latency_ms,
        writes: args.writes,
        write_interval_ms: args.write_interval_ms,
        key_bytes: args.key_bytes,
        value_bytes: args.value_bytes,
        ack_peers: args.ack_peers,
        ack_timeout_ms: 5_000,
        partition_at_ms: args.partition_at,
        heal_at_ms: args.heal_at,
        crash_rate: args.crash_rate,
        duration_ms: args.duration,
        settle_ms: args.settle,
        tick_ms: args.tick_ms,
        sync_interval_ms: args.sync_interval_ms,
        partitions: args.partitions,
        fanout: args.fanout,
        write_linger_ms: args.write_linger_ms,
        linger_ms: args.linger_ms,
        ack_linger_ms: args.ack_linger_ms,
        retransmit_after_ms: args.retransmit_ms,
        bulk_threshold: args.bulk_threshold,
        membership,
        kill: args.kill,
        kill_at_ms: args.kill_at,
        anti_entropy,
        progress_ms: args.progress_ms,
    };
    let mut failed = Vec::new();
    for seed in args.seed..args.seed.saturating_add(args.seeds.max(1)) {
        let config = SimConfig {
            seed,
            ..config.clone()
        };
        let report = match &plan {
            Some(plan) => run_saving(&config, plan)?,
            None => run(&config),
        };
        print_report(&report, args.json)?;
        if report.lost_acked_writes > 0 || !report.converged {
            failed.push(seed);
        }
    }
    if args.check && !failed.is_empty() {
        eprintln!(
            "starling-sim: {} of {} runs lost an acked write or did not converge; replay with \
             --seed S --seeds 1 for S in {failed:?}",
            failed.len(),
            args.seeds.max(1),
        );
        std::process::exit(1);
    }
    Ok(())
}

fn print_report(report: &Report, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(report)?);
    } else {
        println!("{}", report.human());
    }
    Ok(())
}
