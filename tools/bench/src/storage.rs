//! The `storage` suite: the same workloads on starling-storage and on fjall 3.
//!
//! Each engine runs in its own child process (this binary re-invoked with `--engine`), so RSS
//! and page-cache effects of one engine do not leak into the other. The parent collects the
//! children's JSON lines and prints either a table (engine side by side, with the ratio) or the
//! lines themselves (`--json`). Keys are 16 B (hex of a u64), values 100 B of pseudo-random
//! bytes; both engines keep their write-ahead log on without an fsync per write, except in
//! `fillsync` (64 concurrent writers, each awaiting durability).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::time::Instant;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use rand::{Rng, SeedableRng, rngs::SmallRng};
use serde::{Deserialize, Serialize};

/// Options of the `storage` suite.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Print one JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Entries per fill workload (and operations per read workload).
    #[arg(long, default_value_t = 1_000_000)]
    pub num: u64,
    /// Operations of `fillsync` (capped at `--num`).
    #[arg(long, default_value_t = 50_000)]
    pub sync_ops: u64,
    /// Concurrent writers in `fillsync`.
    #[arg(long, default_value_t = 64)]
    pub sync_writers: u64,
    /// Which engine to run: `both` runs each in a child process.
    #[arg(long, default_value = "both", value_parser = ["both", "starling", "fjall"])]
    pub engine: String,
    /// starling's `Options::table_mapped_bytes_max` in MiB (table pages kept mapped).
    #[arg(long, default_value_t = 64)]
    pub table_mapped_mib: usize,
    /// Scratch directory on a real (O_DIRECT-capable) filesystem; emptied before and after.
    #[arg(long, default_value = "target/starling-bench-storage")]
    pub dir: PathBuf,
}

/// One measured row.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Row {
    suite: String,
    workload: String,
    engine: String,
    ops_per_sec: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    write_amp: Option<f64>,
    rss_mib: u64,
    /// Anonymous (heap) part of `rss_mib`.
    #[serde(default)]
    rss_anon_mib: u64,
    /// File-backed part of `rss_mib` (mapped tables, binary).
    #[serde(default)]
    rss_file_mib: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    writes_per_sync: Option<f64>,
}

const WORKLOADS: [&str; 7] = [
    "fillseq",
    "fillrandom",
    "overwrite",
    "readrandom",
    "readmissing",
    "scanprefix",
    "fillsync",
];
const VALUE_BYTES: usize = 100;
const SCAN_LIMIT: usize = 100;
const PREFIX_BYTES: usize = 4;

/// Runs the suite.
pub fn run(args: &Args) -> anyhow::Result<()> {
    if args.num == 0 {
        bail!("--num must be at least 1");
    }
    match args.engine.as_str() {
        "starling" => emit(&starling::run_all(args)?),
        "fjall" => emit(&fjall_engine::run_all(args)?),
        _ => {
            let mut rows = run_child(args, "starling")?;
            rows.extend(run_child(args, "fjall")?);
            if args.json {
                emit(&rows)
            } else {
                print_table(&rows);
                Ok(())
            }
        }
    }
}

fn emit(rows: &[Row]) -> anyhow::Result<()> {
    for row in rows {
        println!("{}", serde_json::to_string(row)?);
    }
    Ok(())
}

fn run_child(args: &Args, engine: &str) -> anyhow::Result<Vec<Row>> {
    let exe = std::env::current_exe().context("locating starling-bench")?;
    let output = Command::new(exe)
        .args(["storage", "--engine", engine, "--num"])
        .arg(args.num.to_string())
        .arg("--sync-ops")
        .arg(args.sync_ops.to_string())
        .arg("--sync-writers")
        .arg(args.sync_writers.to_string())
        .arg("--table-mapped-mib")
        .arg(args.table_mapped_mib.to_string())
        .arg("--dir")
        .arg(args.dir.join(engine))
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running the {engine} child"))?;
    if !output.status.success() {
        bail!("the {engine} benchmark child failed ({})", output.status);
    }
    let stdout = String::from_utf8(output.stdout).context("child output is not UTF-8")?;
    stdout
        .lines()
        .map(|line| {
            serde_json::from_str(line).with_context(|| format!("parsing child line {line:?}"))
        })
        .collect()
}

fn print_table(rows: &[Row]) {
    let mut by_workload: BTreeMap<usize, (Option<&Row>, Option<&Row>)> = BTreeMap::new();
    for row in rows {
        let order = WORKLOADS
            .iter()
            .position(|w| *w == row.workload)
            .unwrap_or(usize::MAX);
        let slot = by_workload.entry(order).or_default();
        if row.engine == "starling" {
            slot.0 = Some(row);
        } else {
            slot.1 = Some(row);
        }
    }
    println!(
        "{:<12} {:>14} {:>14} {:>8} {:>9} {:>9} {:>9} {:>11} {:>9} {:>10}",
        "workload",
        "starling op/s",
        "fjall op/s",
        "ratio",
        "WA st",
        "WA fj",
        "RSS st",
        "anon+file",
        "RSS fj",
        "wr/fsync"
    );
    let fmt_opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
    for (starling, fjall) in by_workload.values() {
        let name = starling.or(*fjall).map_or("?", |r| r.workload.as_str());
        let ops = |r: Option<&Row>| r.map_or(0.0, |r| r.ops_per_sec);
        let ratio = if ops(*fjall) > 0.0 {
            ops(*starling) / ops(*fjall)
        } else {
            0.0
        };
        println!(
            "{:<12} {:>14.0} {:>14.0} {:>7.2}x {:>9} {:>9} {:>8}M {:>11} {:>8}M {:>10}",
            name,
            ops(*starling),
            ops(*fjall),
            ratio,
            fmt_opt(starling.and_then(|r| r.write_amp)),
            fmt_opt(fjall.and_then(|r| r.write_amp)),
            starling.map_or(0, |r| r.rss_mib),
            starling.map_or("-".to_string(), |r| format!(
                "{}+{}",
                r.rss_anon_mib, r.rss_file_mib
            )),
            fjall.map_or(0, |r| r.rss_mib),
            fmt_opt(starling.and_then(|r| r.writes_per_sync)),
        );
    }
}

/// The 16-byte key of index `i` (fixed-width hex keeps byte order = numeric order).
fn key(i: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    let hex = format!("{i:016x}");
    out.copy_from_slice(hex.as_bytes());
    out
}

/// A bijection on u64 that scatters sequential indexes (odd multiplier: invertible mod 2^64).
fn scatter(i: u64) -> u64 {
    i.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

fn value(rng: &mut SmallRng) -> Vec<u8> {
    let mut value = vec![0u8; VALUE_BYTES];
    rng.fill(&mut value[..]);
    value
}

/// A `/proc/self/status` field in MiB (`VmRSS`, `RssAnon`, `RssFile`).
fn status_mib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kib| kib / 1024)
}

/// Bytes this process caused to be written to storage (`/proc/self/io`).
fn io_write_bytes() -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn progress(workload: &str, engine: &str, total: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    let style = ProgressStyle::with_template("{prefix:>22} [{bar:30}] {pos}/{len} {per_sec}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_prefix(format!("{engine} {workload}"));
    bar
}

fn fresh_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}

fn row(workload: &str, engine: &str, ops: u64, started: Instant) -> Row {
    Row {
        suite: "storage".into(),
        workload: workload.into(),
        engine: engine.into(),
        ops_per_sec: ops as f64 / started.elapsed().as_secs_f64().max(1e-9),
        write_amp: None,
        rss_mib: status_mib("VmRSS"),
        rss_anon_mib: status_mib("RssAnon"),
        rss_file_mib: status_mib("RssFile"),
        writes_per_sync: None,
    }
}

mod starling {
    //! The starling-storage side, inside one glommio executor.

    use super::*;
    use starling_storage::{Durability, Engine, Entry, Options, Version};

    const ENGINE: &str = "starling";

    pub fn run_all(args: &Args) -> anyhow::Result<Vec<Row>> {
        let args = args.clone();
        glommio::LocalExecutorBuilder::default()
            .name("bench-storage")
            .spawn(move || async move { run_in_executor(&args).await })
            .map_err(|e| anyhow::anyhow!("starting the glommio executor: {e}"))?
            .join()
            .map_err(|e| anyhow::anyhow!("the executor thread failed: {e}"))?
    }

    fn entry(i: u64, hlc: u64, rng: &mut SmallRng) -> Entry {
        Entry {
            key: key(i).to_vec(),
            value: Some(value(rng)),
            version: Version { hlc, node: 1 },
        }
    }

    async fn open(args: &Args, dir: &Path, durability: Durability) -> anyhow::Result<Engine> {
        fresh_dir(dir)?;
        let mut options = Options::new(dir);
        options.durability = durability;
        options.table_mapped_bytes_max = args.table_mapped_mib << 20;
        Ok(Engine::open(options).await?)
    }

    async fn fill(
        engine: &Engine,
        args: &Args,
        workload: &str,
        order: impl Fn(u64) -> u64,
        hlc_base: u64,
    ) -> anyhow::Result<Row> {
        let mut rng = SmallRng::seed_from_u64(hlc_base + 1);
        let bar = progress(workload, ENGINE, args.num);
        let started = Instant::now();
        for i in 0..args.num {
            engine
                .apply(vec![entry(order(i), hlc_base + i + 1, &mut rng)])
                .await?;
            if i % 4096 == 0 {
                bar.set_position(i);
            }
        }
        bar.finish_and_clear();
        Ok(row(workload, ENGINE, args.num, started))
    }

    async fn run_in_executor(args: &Args) -> anyhow::Result<Vec<Row>> {
        let mut rows = Vec::new();
        let dir = args.dir.join("seq");
        let engine = open(args, &dir, Durability::None).await?;
        rows.push(fill(&engine, args, "fillseq", |i| i, 0).await?);
        engine.close().await?;
        fresh_dir(&dir)?;

        let dir = args.dir.join("random");
        let engine = open(args, &dir, Durability::None).await?;
        let mut fill_row = fill(&engine, args, "fillrandom", scatter, 0).await?;
        fill_row.write_amp = Some(engine.stats().write_amplification);
        rows.push(fill_row);
        let mut overwrite = fill(
            &engine,
            args,
            "overwrite",
            |i| scatter(i.wrapping_mul(7) % args.num),
            args.num,
        )
        .await?;
        overwrite.write_amp = Some(engine.stats().write_amplification);
        rows.push(overwrite);
        rows.push(reads(&engine, args, "readrandom", 0).await?);
        rows.push(reads(&engine, args, "readmissing", args.num).await?);
        rows.push(scans(&engine, args).await?);
        engine.close().await?;
        fresh_dir(&dir)?;

        rows.push(fillsync(args).await?);
        std::fs::remove_dir_all(&args.dir).ok();
        Ok(rows)
    }

    /// Reads never await, so the loops yield to the executor (when their time slice is up)
    /// like a server's request loop does: background flush and compaction then get their
    /// scheduled share, as fjall's background threads do during its read phases.
    async fn reads(
        engine: &Engine,
        args: &Args,
        workload: &str,
        offset: u64,
    ) -> anyhow::Result<Row> {
        let mut rng = SmallRng::seed_from_u64(7 + offset);
        let bar = progress(workload, ENGINE, args.num);
        let started = Instant::now();
        let mut found = 0u64;
        for i in 0..args.num {
            let index = offset + rng.random_range(0..args.num);
            found += u64::from(engine.get(&key(scatter(index)))?.is_some());
            if i % 256 == 0 {
                glommio::yield_if_needed().await;
            }
            if i % 4096 == 0 {
                bar.set_position(i);
            }
        }
        bar.finish_and_clear();
        let expected = if offset == 0 { args.num } else { 0 };
        if found != expected {
            bail!(
                "{workload}: found {found} of {} keys, expected {expected}",
                args.num
            );
        }
        Ok(row(workload, ENGINE, args.num, started))
    }

    async fn scans(engine: &Engine, args: &Args) -> anyhow::Result<Row> {
        let ops = (args.num / 10).max(1);
        let mut rng = SmallRng::seed_from_u64(11);
        let bar = progress("scanprefix", ENGINE, ops);
        let started = Instant::now();
        for i in 0..ops {
            let probe = key(scatter(rng.random_range(0..args.num)));
            let hits = engine.scan(&probe[..PREFIX_BYTES], None, SCAN_LIMIT)?;
            if hits.is_empty() {
                bail!("scanprefix: no key under an existing prefix");
            }
            if i % 64 == 0 {
                glommio::yield_if_needed().await;
            }
            if i % 1024 == 0 {
                bar.set_position(i);
            }
        }
        bar.finish_and_clear();
        Ok(row("scanprefix", ENGINE, ops, started))
    }

    async fn fillsync(args: &Args) -> anyhow::Result<Row> {
        let dir = args.dir.join("sync");
        let engine = Rc::new(open(args, &dir, Durability::Sync).await?);
        let ops = args.sync_ops.min(args.num);
        let writers = args.sync_writers.max(1);
        let bar = progress("fillsync", ENGINE, ops);
        let started = Instant::now();
        let tasks: Vec<_> = (0..writers)
            .map(|writer| {
                let engine = Rc::clone(&engine);
                let bar = bar.clone();
                glommio::spawn_local(async move {
                    let mut rng = SmallRng::seed_from_u64(writer);
                    let mut i = writer;
                    while i < ops {
                        engine
                            .apply(vec![entry(scatter(i), i + 1, &mut rng)])
                            .await?;
                        bar.inc(1);
                        i += writers;
                    }
                    anyhow::Ok(())
                })
            })
            .collect();
        for task in tasks {
            task.await?;
        }
        bar.finish_and_clear();
        let mut result = row("fillsync", ENGINE, ops, started);
        let stats = engine.stats();
        result.writes_per_sync = Some(stats.writes_synced as f64 / stats.syncs.max(1) as f64);
        Rc::try_unwrap(engine)
            .map_err(|_| anyhow::anyhow!("fillsync writers still hold the engine"))?
            .close()
            .await?;
        Ok(result)
    }
}

mod fjall_engine {
    //! The fjall side (its journal on; no fsync per write except in `fillsync`).

    use super::*;
    use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

    const ENGINE: &str = "fjall";

    fn open(dir: &Path) -> anyhow::Result<(Database, Keyspace)> {
        fresh_dir(dir)?;
        let db = Database::builder(dir).open()?;
        let keyspace = db.keyspace("bench", KeyspaceCreateOptions::default)?;
        Ok((db, keyspace))
    }

    fn fill(
        keyspace: &Keyspace,
        args: &Args,
        workload: &str,
        order: impl Fn(u64) -> u64,
    ) -> anyhow::Result<Row> {
        let mut rng = SmallRng::seed_from_u64(1);
        let bar = progress(workload, ENGINE, args.num);
        let started = Instant::now();
        for i in 0..args.num {
            keyspace.insert(key(order(i)), value(&mut rng))?;
            if i % 4096 == 0 {
                bar.set_position(i);
            }
        }
        bar.finish_and_clear();
        Ok(row(workload, ENGINE, args.num, started))
    }

    pub fn run_all(args: &Args) -> anyhow::Result<Vec<Row>> {
        let mut rows = Vec::new();
        {
            let (_db, keyspace) = open(&args.dir.join("seq"))?;
            rows.push(fill(&keyspace, args, "fillseq", |i| i)?);
        }
        fresh_dir(&args.dir.join("seq"))?;
        let (db, keyspace) = open(&args.dir.join("random"))?;
        // Write amplification from the kernel's count of bytes this process sent to storage.
        let written_before = io_write_bytes();
        let user_bytes = |entries: u64| (entries * (16 + VALUE_BYTES as u64)) as f64;
        let mut fill_row = fill(&keyspace, args, "fillrandom", scatter)?;
        fill_row.write_amp =
            Some((io_write_bytes() - written_before) as f64 / user_bytes(args.num));
        rows.push(fill_row);
        let mut overwrite = fill(&keyspace, args, "overwrite", |i| {
            scatter(i.wrapping_mul(7) % args.num)
        })?;
        db.persist(PersistMode::SyncAll)?;
        overwrite.write_amp =
            Some((io_write_bytes() - written_before) as f64 / user_bytes(2 * args.num));
        rows.push(overwrite);
        rows.push(reads(&keyspace, args, "readrandom", 0)?);
        rows.push(reads(&keyspace, args, "readmissing", args.num)?);
        rows.push(scans(&keyspace, args)?);
        drop(keyspace);
        drop(db);
        fresh_dir(&args.dir.join("random"))?;
        rows.push(fillsync(args)?);
        std::fs::remove_dir_all(&args.dir).ok();
        Ok(rows)
    }

    fn reads(keyspace: &Keyspace, args: &Args, workload: &str, offset: u64) -> anyhow::Result<Row> {
        let mut rng = SmallRng::seed_from_u64(7 + offset);
        let bar = progress(workload, ENGINE, args.num);
        let started = Instant::now();
        let mut found = 0u64;
        for i in 0..args.num {
            let index = offset + rng.random_range(0..args.num);
            found += u64::from(keyspace.get(key(scatter(index)))?.is_some());
            if i % 4096 == 0 {
                bar.set_position(i);
            }
        }
        bar.finish_and_clear();
        let expected = if offset == 0 { args.num } else { 0 };
        if found != expected {
            bail!(
                "{workload}: fjall found {found} of {} keys, expected {expected}",
                args.num
            );
        }
        Ok(row(workload, ENGINE, args.num, started))
    }

    fn scans(keyspace: &Keyspace, args: &Args) -> anyhow::Result<Row> {
        let ops = (args.num / 10).max(1);
        let mut rng = SmallRng::seed_from_u64(11);
        let bar = progress("scanprefix", ENGINE, ops);
        let started = Instant::now();
        for i in 0..ops {
            let probe = key(scatter(rng.random_range(0..args.num)));
            let mut hits = 0;
            for item in keyspace.prefix(&probe[..PREFIX_BYTES]).take(SCAN_LIMIT) {
                item.into_inner()?;
                hits += 1;
            }
            if hits == 0 {
                bail!("scanprefix: fjall found no key under an existing prefix");
            }
            if i % 1024 == 0 {
                bar.set_position(i);
            }
        }
        bar.finish_and_clear();
        Ok(row("scanprefix", ENGINE, ops, started))
    }

    /// `sync_writers` threads, each inserting and then `persist(SyncData)` per write.
    fn fillsync(args: &Args) -> anyhow::Result<Row> {
        let (db, keyspace) = open(&args.dir.join("sync"))?;
        let ops = args.sync_ops.min(args.num);
        let writers = args.sync_writers.max(1);
        let bar = progress("fillsync", ENGINE, ops);
        let started = Instant::now();
        std::thread::scope(|scope| -> anyhow::Result<()> {
            let handles: Vec<_> = (0..writers)
                .map(|writer| {
                    let (db, keyspace, bar) = (db.clone(), keyspace.clone(), bar.clone());
                    scope.spawn(move || -> anyhow::Result<()> {
                        let mut rng = SmallRng::seed_from_u64(writer);
                        let mut i = writer;
                        while i < ops {
                            keyspace.insert(key(scatter(i)), value(&mut rng))?;
                            db.persist(PersistMode::SyncData)?;
                            bar.inc(1);
                            i += writers;
                        }
                        Ok(())
                    })
                })
                .collect();
            for handle in handles {
                handle
                    .join()
                    .map_err(|_| anyhow::anyhow!("a fillsync writer panicked"))??;
            }
            Ok(())
        })?;
        bar.finish_and_clear();
        Ok(row("fillsync", ENGINE, ops, started))
    }
}
