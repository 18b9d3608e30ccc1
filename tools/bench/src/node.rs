//! The `node` suite: a Starling node against Debian's `redis-server` under the same
//! `redis-benchmark` load (`-t set,get -P 16 -c 50 -n 1000000 -r 100000 -d 100` by default).
//!
//! Both servers run on loopback, one after the other, each on a fresh data dir under `target/`
//! (Starling needs O_DIRECT, which tmpfs lacks). Starling runs all shards with durable group
//! commit (a SET is answered after fdatasync); Redis runs with `appendonly yes` and
//! `appendfsync everysec` (a SET is answered before any fsync), so the comparison favours Redis
//! on durability. Needs `apt-get install -y redis-server redis-tools` (and `taskset`).
//!
//! CPUs: by default redis-benchmark runs on the last CPU this process may use and both servers
//! on the others (`taskset`), as server benchmarks on one machine should: otherwise the load
//! generator takes cores from the server it measures, and a server spread over every core
//! (Starling's shards; Redis uses one) loses that contest whatever its requests cost. Starling's
//! shards follow the CPUs it is given. `--client-cpus none` shares every CPU instead.
//!
//! The SET and GET tests run as two redis-benchmark runs in that order (what `-t set,get`
//! does), so that each server's CPU time per request can be read from `/proc` around each.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use starling::runtime::placement::{allowed_cpus, parse_cpu_list};

/// Options of the `node` suite.
#[derive(clap::Args)]
pub struct Args {
    /// Print one JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also measure this system (only `redis` is supported).
    #[arg(long, value_parser = ["redis"])]
    pub compare: Option<String>,
    /// The `starling` binary [default: next to this executable].
    #[arg(long)]
    pub starling_bin: Option<PathBuf>,
    /// Shards of the Starling node [default: all CPUs].
    #[arg(long)]
    pub shards: Option<usize>,
    /// Total requests per test (redis-benchmark -n).
    #[arg(long, default_value_t = 1_000_000)]
    pub requests: u64,
    /// Parallel connections (redis-benchmark -c).
    #[arg(long, default_value_t = 50)]
    pub clients: u32,
    /// Pipeline depth (redis-benchmark -P).
    #[arg(long, default_value_t = 16)]
    pub pipeline: u32,
    /// Key space size (redis-benchmark -r).
    #[arg(long, default_value_t = 100_000)]
    pub keyspace: u64,
    /// Value size in bytes (redis-benchmark -d).
    #[arg(long, default_value_t = 100)]
    pub value_bytes: u32,
    /// Repeat the measurement this many times, alternating Starling and Redis with fresh
    /// servers each round, and report each figure's median (and the rps range): on a shared
    /// machine one run moves by ±10 %.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=99))]
    pub rounds: u32,
    /// Directory for the servers' data [default: target/bench-node].
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// CPUs for redis-benchmark (a list such as `3` or `2-3`); both servers get the other CPUs
    /// this process may use, so the load generator does not take cores from the server it
    /// measures (Starling's shards follow: one per server CPU). `auto`: the last allowed CPU
    /// when there are at least two; `none`: servers and redis-benchmark share every CPU.
    #[arg(long, default_value = "auto")]
    pub client_cpus: String,
}

/// Which CPUs the load generator and the servers run on.
#[derive(Clone, Debug, PartialEq, Eq)]
struct CpuSplit {
    client: Vec<usize>,
    servers: Vec<usize>,
}

/// The split `--client-cpus` asks for among the `allowed` CPUs (`None`: no pinning).
fn cpu_split(spec: &str, allowed: &[usize]) -> anyhow::Result<Option<CpuSplit>> {
    let client = match spec {
        "none" => return Ok(None),
        "auto" if allowed.len() < 2 => return Ok(None),
        "auto" => vec![allowed[allowed.len() - 1]],
        list => parse_cpu_list(list).with_context(|| {
            format!("--client-cpus {list:?} is not a CPU list such as 3 or 2-3")
        })?,
    };
    if let Some(cpu) = client.iter().find(|cpu| !allowed.contains(cpu)) {
        bail!("--client-cpus: CPU {cpu} is not one this process may use ({allowed:?})");
    }
    let servers: Vec<usize> = allowed
        .iter()
        .copied()
        .filter(|cpu| !client.contains(cpu))
        .collect();
    ensure!(
        !servers.is_empty(),
        "--client-cpus leaves no CPU for the servers (allowed: {allowed:?})"
    );
    Ok(Some(CpuSplit { client, servers }))
}

/// `0,2,3`: a CPU list as `taskset -c` takes it.
fn cpu_list(cpus: &[usize]) -> String {
    cpus.iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// A command for `program`, started through `taskset -c` when `cpus` is given.
fn pinned_command(program: impl AsRef<std::ffi::OsStr>, cpus: Option<&[usize]>) -> Command {
    match cpus {
        Some(cpus) => {
            let mut command = Command::new("taskset");
            command.arg("-c").arg(cpu_list(cpus)).arg(program);
            command
        }
        None => Command::new(program),
    }
}

/// One measured test.
#[derive(Clone, Debug, serde::Serialize)]
struct Measurement {
    suite: &'static str,
    target: &'static str,
    test: String,
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// The server's CPU time (user + system, all its threads) per request during the test, in
    /// µs: what a request costs the server, which the throughput alone hides when the server
    /// and redis-benchmark share the cores.
    #[serde(skip_serializing_if = "Option::is_none")]
    server_cpu_us: Option<f64>,
    /// The CPUs the server was pinned to (`None`: it shared every CPU with redis-benchmark).
    #[serde(skip_serializing_if = "Option::is_none")]
    server_cpus: Option<String>,
    /// With `--rounds` > 1: how many, and the lowest and highest rps (the figures above are
    /// medians).
    #[serde(skip_serializing_if = "Option::is_none", flatten)]
    spread: Option<Spread>,
}

/// The spread of a figure measured over several rounds.
#[derive(Clone, Debug, serde::Serialize)]
struct Spread {
    rounds: usize,
    rps_min: f64,
    rps_max: f64,
}

/// What the node's own metrics said about its WAL after one run (all shards summed): the
/// group writes and fdatasyncs a durable SET waits for. GET writes nothing, so these are the
/// SET test's.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
struct WalStats {
    suite: &'static str,
    target: &'static str,
    test: &'static str,
    /// fdatasyncs of the WAL.
    syncs: u64,
    /// SET batches (one per connection read and shard) made durable per fdatasync.
    batches_per_sync: f64,
    /// Mean fdatasync time, submission to completion.
    sync_mean_ms: f64,
    /// Upper bound of the histogram bucket holding the median fdatasync.
    sync_p50_ms: f64,
    /// Upper bound of the bucket holding the 99th percentile.
    sync_p99_ms: f64,
    /// Mean time of one group's `O_DIRECT` write.
    write_mean_ms: f64,
}

/// Reads [`WalStats`] from a `/metrics` page.
fn wal_stats(metrics: &str) -> anyhow::Result<WalStats> {
    let total = |name: &str| samples(metrics, name).map(|(_, v)| v).sum::<f64>();
    let mut buckets: Vec<(f64, f64)> = Vec::new();
    for (labels, count) in samples(metrics, "starling_storage_wal_sync_seconds_bucket") {
        let bound = labels
            .split_once("le=\"")
            .and_then(|(_, rest)| rest.strip_suffix('"'))
            .map(|le| {
                if le == "+Inf" {
                    Ok(f64::INFINITY)
                } else {
                    le.parse()
                }
            })
            .context("a bucket without le")??;
        match buckets.iter_mut().find(|(b, _)| *b == bound) {
            Some((_, sum)) => *sum += count,
            None => buckets.push((bound, count)),
        }
    }
    buckets.sort_by(|x, y| x.0.total_cmp(&y.0));
    let syncs = total("starling_storage_wal_sync_seconds_count");
    ensure!(syncs > 0.0, "the node timed no WAL fdatasync");
    let quantile = |q: f64| {
        buckets
            .iter()
            .find(|(_, cumulative)| *cumulative >= q * syncs)
            .map_or(f64::NAN, |(bound, _)| bound * 1e3)
    };
    let writes = total("starling_storage_wal_write_seconds_count");
    Ok(WalStats {
        suite: "node",
        target: "starling",
        test: "WAL",
        syncs: syncs as u64,
        batches_per_sync: total("starling_storage_writes_synced_total")
            / total("starling_storage_syncs_total").max(1.0),
        sync_mean_ms: total("starling_storage_wal_sync_seconds_sum") / syncs * 1e3,
        sync_p50_ms: quantile(0.5),
        sync_p99_ms: quantile(0.99),
        write_mean_ms: total("starling_storage_wal_write_seconds_sum") / writes.max(1.0) * 1e3,
    })
}

/// The samples of metric `name` in a `/metrics` page: (labels, value) per label set.
fn samples<'a>(metrics: &'a str, name: &'a str) -> impl Iterator<Item = (&'a str, f64)> + 'a {
    metrics.lines().filter_map(move |line| {
        let rest = line.strip_prefix(name)?.strip_prefix('{')?;
        let (labels, value) = rest.split_once("} ")?;
        Some((labels, value.trim().parse::<f64>().ok()?))
    })
}

/// Starling's rps over Redis's for one test, per round: the two run back to back in a round,
/// so drift of the machine between rounds (±10 % here) cancels in each ratio.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
struct RoundRatios {
    suite: &'static str,
    target: &'static str,
    test: String,
    rounds: usize,
    ratio_median: f64,
    ratio_min: f64,
    ratio_max: f64,
}

/// The per-round ratios of every test measured on both servers.
fn paired_ratios(rounds: &[Vec<Measurement>]) -> Vec<RoundRatios> {
    let mut per_test: Vec<(String, Vec<f64>)> = Vec::new();
    for round in rounds {
        for starling in round.iter().filter(|m| m.target == "starling") {
            let Some(redis) = round
                .iter()
                .find(|m| m.target == "redis" && m.test == starling.test && m.rps > 0.0)
            else {
                continue;
            };
            let ratio = starling.rps / redis.rps;
            match per_test.iter_mut().find(|(test, _)| *test == starling.test) {
                Some((_, ratios)) => ratios.push(ratio),
                None => per_test.push((starling.test.clone(), vec![ratio])),
            }
        }
    }
    per_test
        .into_iter()
        .map(|(test, ratios)| {
            let (ratio_min, ratio_max) = range(&ratios);
            RoundRatios {
                suite: "node",
                target: "starling/redis",
                test,
                rounds: ratios.len(),
                ratio_min,
                ratio_max,
                ratio_median: median(ratios),
            }
        })
        .collect()
}

/// Field-wise medians of the rounds' [`WalStats`].
fn summarize_wal(rounds: &[WalStats]) -> Option<WalStats> {
    let first = rounds.first()?;
    let figure = |pick: fn(&WalStats) -> f64| median(rounds.iter().map(pick).collect());
    Some(WalStats {
        syncs: figure(|w| w.syncs as f64) as u64,
        batches_per_sync: figure(|w| w.batches_per_sync),
        sync_mean_ms: figure(|w| w.sync_mean_ms),
        sync_p50_ms: figure(|w| w.sync_p50_ms),
        sync_p99_ms: figure(|w| w.sync_p99_ms),
        write_mean_ms: figure(|w| w.write_mean_ms),
        ..first.clone()
    })
}

/// Runs the suite.
pub fn run(args: &Args) -> anyhow::Result<()> {
    require_tool("redis-benchmark")?;
    if args.compare.is_some() {
        require_tool("redis-server")?;
    }
    let work_dir = args
        .work_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("target/bench-node"));
    std::fs::create_dir_all(&work_dir).with_context(|| format!("create {}", work_dir.display()))?;
    let allowed = allowed_cpus().context("read this process's CPU affinity from /proc")?;
    let split = cpu_split(&args.client_cpus, &allowed)?;
    if split.is_some() {
        require_tool("taskset")?;
    }
    let mut rounds = Vec::new();
    let mut wal_rounds = Vec::new();
    for _ in 0..args.rounds {
        let work = tempfile::tempdir_in(&work_dir).context("create a run directory")?;
        let (mut round, wal) = measure_starling(args, work.path(), split.as_ref())?;
        wal_rounds.extend(wal);
        if args.compare.is_some() {
            round.extend(measure_redis(args, work.path(), split.as_ref())?);
        }
        rounds.push(round);
    }
    let ratios = paired_ratios(&rounds);
    let results = summarize(rounds);
    let wal = summarize_wal(&wal_rounds);
    if args.json {
        for result in &results {
            println!("{}", serde_json::to_string(result)?);
        }
        if let Some(wal) = &wal {
            println!("{}", serde_json::to_string(wal)?);
        }
        for ratio in &ratios {
            println!("{}", serde_json::to_string(ratio)?);
        }
    } else {
        match &split {
            Some(split) => println!(
                "CPUs: servers on {}, redis-benchmark on {} (--client-cpus none to share them)",
                cpu_list(&split.servers),
                cpu_list(&split.client)
            ),
            None => println!(
                "CPUs: servers and redis-benchmark share CPUs {}",
                cpu_list(&allowed)
            ),
        }
        print_table(args, &results);
        if args.rounds > 1 {
            for ratio in &ratios {
                println!(
                    "{} Starling/Redis per round (both measured in the same round): median \
                     {:.2}x, range {:.2}–{:.2}x over {} rounds",
                    ratio.test, ratio.ratio_median, ratio.ratio_min, ratio.ratio_max, ratio.rounds
                );
            }
        }
        if let Some(wal) = &wal {
            println!(
                "starling WAL during the run (all shards{}): {} fdatasyncs, {:.1} SET batches each; \
                 fdatasync mean {:.2} ms, p50 ≤ {} ms, p99 ≤ {} ms; group write mean {:.2} ms",
                if args.rounds > 1 {
                    ", medians of the rounds"
                } else {
                    ""
                },
                wal.syncs,
                wal.batches_per_sync,
                wal.sync_mean_ms,
                wal.sync_p50_ms,
                wal.sync_p99_ms,
                wal.write_mean_ms
            );
        }
    }
    Ok(())
}

fn require_tool(name: &str) -> anyhow::Result<()> {
    let found = Command::new(name)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    ensure!(
        found,
        "{name} not found: install it with `apt-get install -y redis-server redis-tools`"
    );
    Ok(())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn starling_bin(args: &Args) -> anyhow::Result<PathBuf> {
    if let Some(path) = &args.starling_bin {
        return Ok(path.clone());
    }
    let exe = std::env::current_exe().context("locate this executable")?;
    let sibling = exe.with_file_name("starling");
    ensure!(
        sibling.exists(),
        "{} not found: build it with `cargo build --release -p starling` or pass --starling-bin",
        sibling.display()
    );
    Ok(sibling)
}

/// A server process that is stopped with SIGTERM on drop.
struct Server {
    child: Child,
    name: &'static str,
    stopped: bool,
}

impl Server {
    fn wait_ready(&mut self, port: u16) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                bail!("{} exited during start-up with {status}", self.name);
            }
            if TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port))).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!(
            "{} did not start listening on port {port} within 30 s",
            self.name
        )
    }

    fn stop(&mut self) {
        if std::mem::replace(&mut self.stopped, true) {
            return;
        }
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The node's SET and GET figures, and its WAL figures from `/metrics` (`None`, with a warning,
/// if they could not be read: they explain the figures but are not the measurement).
fn measure_starling(
    args: &Args,
    work: &Path,
    split: Option<&CpuSplit>,
) -> anyhow::Result<(Vec<Measurement>, Option<WalStats>)> {
    let (port, admin_port) = (free_port()?, free_port()?);
    let data = work.join("starling");
    let mut command = pinned_command(starling_bin(args)?, split.map(|s| &s.servers[..]));
    command
        .arg("serve")
        .arg("--data-dir")
        .arg(&data)
        .arg("--client-addr")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--admin-addr")
        .arg(format!("127.0.0.1:{admin_port}"))
        .arg("--log")
        .arg("warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(work.join("starling.log"))?);
    if let Some(shards) = args.shards {
        command.arg("--shards").arg(shards.to_string());
    }
    let mut server = Server {
        child: command.spawn().context("start starling")?,
        name: "starling",
        stopped: false,
    };
    server.wait_ready(port)?;
    let results = redis_benchmark(args, port, "starling", server.child.id(), split)?;
    let admin: SocketAddr = ([127, 0, 0, 1], admin_port).into();
    let wal = starling::api::admin::get(admin, "/metrics")
        .map_err(anyhow::Error::from)
        .and_then(|(_, page)| wal_stats(&page));
    server.stop();
    let wal = wal
        .inspect_err(|e| eprintln!("warning: no WAL figures from the node's /metrics: {e:#}"))
        .ok();
    Ok((results, wal))
}

fn measure_redis(
    args: &Args,
    work: &Path,
    split: Option<&CpuSplit>,
) -> anyhow::Result<Vec<Measurement>> {
    let port = free_port()?;
    let data = work.join("redis");
    std::fs::create_dir_all(&data)?;
    let child = pinned_command("redis-server", split.map(|s| &s.servers[..]))
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--appendonly",
            "yes",
        ])
        .args([
            "--appendfsync",
            "everysec",
            "--save",
            "",
            "--daemonize",
            "no",
            "--protected-mode",
            "no",
        ])
        .arg("--dir")
        .arg(&data)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start redis-server")?;
    let mut server = Server {
        child,
        name: "redis-server",
        stopped: false,
    };
    server.wait_ready(port)?;
    let results = redis_benchmark(args, port, "redis", server.child.id(), split);
    server.stop();
    results
}

/// Runs redis-benchmark's SET test, then its GET test (as `-t set,get` would, in that order),
/// each as its own run so that the server's CPU time can be read around it.
fn redis_benchmark(
    args: &Args,
    port: u16,
    target: &'static str,
    pid: u32,
    split: Option<&CpuSplit>,
) -> anyhow::Result<Vec<Measurement>> {
    let mut measurements = Vec::new();
    for test in ["set", "get"] {
        let cpu_before = process_cpu_seconds(pid)?;
        let output = pinned_command("redis-benchmark", split.map(|s| &s.client[..]))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-t",
                test,
                "--csv",
            ])
            .args([
                "-P",
                &args.pipeline.to_string(),
                "-c",
                &args.clients.to_string(),
            ])
            .args([
                "-n",
                &args.requests.to_string(),
                "-r",
                &args.keyspace.to_string(),
                "-d",
                &args.value_bytes.to_string(),
            ])
            .output()
            .context("run redis-benchmark")?;
        let cpu = process_cpu_seconds(pid)? - cpu_before;
        ensure!(
            output.status.success(),
            "redis-benchmark -t {test} against {target} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let mut parsed = parse_csv(&String::from_utf8_lossy(&output.stdout), target)?;
        ensure!(
            parsed.len() == 1,
            "redis-benchmark -t {test} printed {} results for {target}, expected one",
            parsed.len()
        );
        parsed[0].server_cpu_us = Some(cpu * 1e6 / args.requests.max(1) as f64);
        parsed[0].server_cpus = split.map(|split| cpu_list(&split.servers));
        measurements.append(&mut parsed);
    }
    Ok(measurements)
}

/// CPU time (user + system, every thread) that process `pid` has used so far, in seconds.
fn process_cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    Ok(cpu_ticks(&stat)? as f64 / clock_ticks_per_second())
}

/// utime + stime, in clock ticks, from the text of `/proc/<pid>/stat`.
fn cpu_ticks(stat: &str) -> anyhow::Result<u64> {
    // Field 2, the command name, may hold spaces and ')': the rest follows the last ')'.
    let (_, rest) = stat
        .rsplit_once(')')
        .context("no command name in /proc/<pid>/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `fields[0]` is field 3 (the state); utime and stime are fields 14 and 15.
    let field = |number: usize| {
        fields
            .get(number - 3)
            .and_then(|value| value.parse::<u64>().ok())
            .with_context(|| format!("no field {number} in /proc/<pid>/stat"))
    };
    Ok(field(14)? + field(15)?)
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    #[allow(unsafe_code)]
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// Parses `redis-benchmark --csv` (Redis 7: a header row naming the columns).
fn parse_csv(text: &str, target: &'static str) -> anyhow::Result<Vec<Measurement>> {
    let rows: Vec<Vec<String>> = text
        .lines()
        .filter(|line| line.starts_with('"'))
        .map(|line| {
            line.split(',')
                .map(|field| field.trim_matches('"').to_string())
                .collect()
        })
        .collect();
    let Some((header, rows)) = rows.split_first() else {
        bail!("no CSV output from redis-benchmark");
    };
    let column = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .with_context(|| format!("no {name} column in {header:?}"))
    };
    let (rps, p50, p99) = (
        column("rps")?,
        column("p50_latency_ms")?,
        column("p99_latency_ms")?,
    );
    rows.iter()
        .map(|row| {
            let number = |i: usize| {
                row.get(i)
                    .and_then(|v| v.parse::<f64>().ok())
                    .with_context(|| format!("bad CSV row {row:?}"))
            };
            Ok(Measurement {
                suite: "node",
                target,
                test: row[0].clone(),
                rps: number(rps)?,
                p50_ms: number(p50)?,
                p99_ms: number(p99)?,
                server_cpu_us: None,
                server_cpus: None,
                spread: None,
            })
        })
        .collect()
}

/// One measurement per (target, test), in first-seen order: each figure the median over the
/// rounds (the mean of the middle two for an even count), with the rps range when there were
/// several.
fn summarize(rounds: Vec<Vec<Measurement>>) -> Vec<Measurement> {
    let count = rounds.len();
    let mut groups: Vec<Vec<Measurement>> = Vec::new();
    for measurement in rounds.into_iter().flatten() {
        match groups.iter_mut().find(|group| {
            group[0].target == measurement.target && group[0].test == measurement.test
        }) {
            Some(group) => group.push(measurement),
            None => groups.push(vec![measurement]),
        }
    }
    groups
        .into_iter()
        .map(|group| {
            let figure = |pick: fn(&Measurement) -> f64| median(group.iter().map(pick).collect());
            let (rps_min, rps_max) = range(&group.iter().map(|m| m.rps).collect::<Vec<_>>());
            Measurement {
                suite: "node",
                target: group[0].target,
                test: group[0].test.clone(),
                rps: figure(|m| m.rps),
                p50_ms: figure(|m| m.p50_ms),
                p99_ms: figure(|m| m.p99_ms),
                server_cpu_us: group
                    .iter()
                    .map(|m| m.server_cpu_us)
                    .collect::<Option<Vec<f64>>>()
                    .map(median),
                server_cpus: group[0].server_cpus.clone(),
                spread: (count > 1).then_some(Spread {
                    rounds: group.len(),
                    rps_min,
                    rps_max,
                }),
            }
        })
        .collect()
}

/// The lowest and highest value (∞ and −∞ for none).
fn range(values: &[f64]) -> (f64, f64) {
    values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(low, high), &v| {
            (low.min(v), high.max(v))
        })
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        len if len % 2 == 1 => values[len / 2],
        len => (values[len / 2 - 1] + values[len / 2]) / 2.0,
    }
}

fn print_table(args: &Args, results: &[Measurement]) {
    println!(
        "redis-benchmark -t set,get -P {} -c {} -n {} -r {} -d {} (loopback)",
        args.pipeline, args.clients, args.requests, args.keyspace, args.value_bytes
    );
    if args.rounds > 1 {
        println!(
            "medians of {} rounds (Starling and Redis alternated)",
            args.rounds
        );
    }
    println!(
        "{:<6} {:<9} {:>12} {:>9} {:>9} {:>8} {:>11}  {}",
        "test",
        "target",
        "rps",
        "p50 ms",
        "p99 ms",
        "ratio",
        "cpu µs/req",
        if args.rounds > 1 { "rps range" } else { "" }
    );
    for result in results {
        let redis = results
            .iter()
            .find(|r| r.target == "redis" && r.test == result.test);
        let ratio = match (result.target, redis) {
            ("starling", Some(redis)) if redis.rps > 0.0 => {
                format!("{:.2}x", result.rps / redis.rps)
            }
            _ => String::new(),
        };
        let range = result.spread.as_ref().map_or(String::new(), |spread| {
            format!("{:.0}–{:.0}", spread.rps_min, spread.rps_max)
        });
        let cpu = result
            .server_cpu_us
            .map_or(String::new(), |us| format!("{us:.2}"));
        println!(
            "{:<6} {:<9} {:>12.0} {:>9.3} {:>9.3} {:>8} {cpu:>11}  {range}",
            result.test, result.target, result.rps, result.p50_ms, result.p99_ms, ratio
        );
    }
    println!("cpu µs/req: the server's CPU time per request (all its threads, user + system)");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wal_figures_sum_the_shards_histograms() {
        let page = "\
# TYPE starling_storage_wal_sync_seconds histogram
starling_storage_wal_sync_seconds_bucket{shard=\"0\",le=\"0.00025\"} 10
starling_storage_wal_sync_seconds_bucket{shard=\"0\",le=\"0.0005\"} 60
starling_storage_wal_sync_seconds_bucket{shard=\"0\",le=\"0.001\"} 99
starling_storage_wal_sync_seconds_bucket{shard=\"0\",le=\"+Inf\"} 100
starling_storage_wal_sync_seconds_sum{shard=\"0\"} 0.05
starling_storage_wal_sync_seconds_count{shard=\"0\"} 100
starling_storage_wal_sync_seconds_bucket{shard=\"1\",le=\"0.00025\"} 0
starling_storage_wal_sync_seconds_bucket{shard=\"1\",le=\"0.0005\"} 0
starling_storage_wal_sync_seconds_bucket{shard=\"1\",le=\"0.001\"} 99
starling_storage_wal_sync_seconds_bucket{shard=\"1\",le=\"+Inf\"} 100
starling_storage_wal_sync_seconds_sum{shard=\"1\"} 0.09
starling_storage_wal_sync_seconds_count{shard=\"1\"} 100
starling_storage_wal_write_seconds_sum{shard=\"0\"} 0.02
starling_storage_wal_write_seconds_count{shard=\"0\"} 100
starling_storage_wal_write_seconds_sum{shard=\"1\"} 0.02
starling_storage_wal_write_seconds_count{shard=\"1\"} 100
starling_storage_syncs_total{shard=\"0\"} 100
starling_storage_syncs_total{shard=\"1\"} 100
starling_storage_writes_synced_total{shard=\"0\"} 900
starling_storage_writes_synced_total{shard=\"1\"} 700
";
        let wal = wal_stats(page).expect("figures");
        assert_eq!(wal.syncs, 200);
        assert_eq!(wal.batches_per_sync, 8.0);
        assert!((wal.sync_mean_ms - 0.7).abs() < 1e-9, "{wal:?}");
        // 60 of 200 syncs are ≤ 0.5 ms, 198 ≤ 1 ms: the median and p99 are in the 1 ms bucket.
        assert_eq!((wal.sync_p50_ms, wal.sync_p99_ms), (1.0, 1.0));
        assert!((wal.write_mean_ms - 0.2).abs() < 1e-9);
        assert!(wal_stats("starling_commands_total{shard=\"0\"} 1\n").is_err());
        let summary = summarize_wal(&[wal.clone(), wal.clone()]).expect("one summary");
        assert_eq!(summary, wal);
        assert!(summarize_wal(&[]).is_none());
    }

    #[test]
    fn ratios_pair_the_servers_of_each_round() {
        let rounds = vec![
            vec![
                measurement("starling", "SET", 90.0, 1.0),
                measurement("redis", "SET", 100.0, 1.0),
                measurement("starling", "GET", 50.0, 1.0),
            ],
            vec![
                measurement("starling", "SET", 120.0, 1.0),
                measurement("redis", "SET", 100.0, 1.0),
            ],
            vec![
                measurement("starling", "SET", 60.0, 1.0),
                measurement("redis", "SET", 50.0, 1.0),
            ],
        ];
        let ratios = paired_ratios(&rounds);
        assert_eq!(ratios.len(), 1, "GET had no Redis figure to pair with");
        let set = &ratios[0];
        assert_eq!((set.test.as_str(), set.rounds), ("SET", 3));
        assert_eq!(
            (set.ratio_min, set.ratio_median, set.ratio_max),
            (0.9, 1.2, 1.2)
        );
        assert!(paired_ratios(&[]).is_empty());
    }

    #[test]
    fn parses_redis_benchmark_csv() {
        let text = "\"test\",\"rps\",\"avg_latency_ms\",\"min_latency_ms\",\"p50_latency_ms\",\"p95_latency_ms\",\"p99_latency_ms\",\"max_latency_ms\"\n\
                    \"SET\",\"250000.00\",\"2.9\",\"0.5\",\"2.8\",\"4.0\",\"5.5\",\"9.0\"\n\
                    \"GET\",\"350000.00\",\"2.0\",\"0.4\",\"1.9\",\"3.0\",\"4.1\",\"8.0\"\n";
        let parsed = parse_csv(text, "redis").expect("valid csv");
        assert_eq!(parsed.len(), 2);
        assert_eq!(
            (parsed[0].test.as_str(), parsed[0].rps, parsed[0].p99_ms),
            ("SET", 250_000.0, 5.5)
        );
        assert_eq!((parsed[1].test.as_str(), parsed[1].p50_ms), ("GET", 1.9));
        let json = serde_json::to_string(&parsed[1]).expect("json");
        assert_eq!(
            json,
            r#"{"suite":"node","target":"redis","test":"GET","rps":350000.0,"p50_ms":1.9,"p99_ms":4.1}"#
        );
    }

    #[test]
    fn cpu_ticks_read_past_a_command_name_with_spaces_and_parentheses() {
        let stat = "4242 (my (odd) server) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                    250 31 0 0 20 0 12 0 777 1000000 200 18446744073709551615";
        assert_eq!(cpu_ticks(stat).expect("valid"), 281);
        assert!(cpu_ticks("4242 (truncated) S 1 2").is_err());
        assert!(cpu_ticks("no name").is_err());
        let own = process_cpu_seconds(std::process::id()).expect("own stat");
        assert!(own >= 0.0);
    }

    #[test]
    fn the_load_generator_gets_its_own_cpus() {
        let split = |spec: &str, allowed: &[usize]| cpu_split(spec, allowed);
        assert_eq!(
            split("auto", &[0, 1, 2, 3]).expect("valid"),
            Some(CpuSplit {
                client: vec![3],
                servers: vec![0, 1, 2]
            })
        );
        assert_eq!(split("auto", &[5]).expect("valid"), None);
        assert_eq!(split("none", &[0, 1]).expect("valid"), None);
        assert_eq!(
            split("0-1", &[0, 1, 2]).expect("valid"),
            Some(CpuSplit {
                client: vec![0, 1],
                servers: vec![2]
            })
        );
        for bad in ["0-1", "7", "x"] {
            assert!(split(bad, &[0, 1]).is_err(), "{bad}");
        }
        assert_eq!(cpu_list(&[0, 2, 3]), "0,2,3");
    }

    fn measurement(target: &'static str, test: &str, rps: f64, p99_ms: f64) -> Measurement {
        Measurement {
            suite: "node",
            target,
            test: test.to_string(),
            rps,
            p50_ms: 1.0,
            p99_ms,
            server_cpu_us: Some(p99_ms / 2.0),
            server_cpus: None,
            spread: None,
        }
    }

    #[test]
    fn rounds_summarize_to_medians_with_the_rps_range() {
        let rounds = [(100.0, 9.0), (300.0, 7.0), (200.0, 8.0)]
            .into_iter()
            .map(|(rps, p99)| {
                vec![
                    measurement("starling", "SET", rps, p99),
                    measurement("redis", "SET", rps * 2.0, p99),
                ]
            })
            .collect();
        let summary = summarize(rounds);
        assert_eq!(summary.len(), 2);
        let starling = &summary[0];
        assert_eq!(
            (starling.target, starling.rps, starling.p99_ms),
            ("starling", 200.0, 8.0)
        );
        assert_eq!(summary[1].rps, 400.0);
        assert_eq!(starling.server_cpu_us, Some(4.0));
        let json = serde_json::to_string(starling).expect("json");
        assert!(
            json.ends_with(r#""rounds":3,"rps_min":100.0,"rps_max":300.0}"#),
            "{json}"
        );
        // One round: the figures as measured and the issue's JSON shape, unchanged.
        let single = summarize(vec![vec![measurement("redis", "GET", 5.0, 1.5)]]);
        assert_eq!(single[0].rps, 5.0);
        assert!(
            !serde_json::to_string(&single[0])
                .expect("json")
                .contains("rounds")
        );
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
    }
}
