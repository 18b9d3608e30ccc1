//! The `node` suite: a Starling node against Debian's `redis-server` under the same
//! `redis-benchmark` load (`-t set,get -P 16 -c 50 -n 1000000 -r 100000 -d 100` by default).
//!
//! Both servers run on loopback, one after the other, each on a fresh data dir under `target/`
//! (Starling needs O_DIRECT, which tmpfs lacks). Starling runs all shards with durable group
//! commit (a SET is answered after fdatasync); Redis runs with `appendonly yes` and
//! `appendfsync everysec` (a SET is answered before any fsync), so the comparison favours Redis
//! on durability. Needs `apt-get install -y redis-server redis-tools`.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};

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
    /// Directory for the servers' data [default: target/bench-node].
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
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
    let work = tempfile::tempdir_in(&work_dir).context("create a run directory")?;
    let mut results = measure_starling(args, work.path())?;
    if args.compare.is_some() {
        results.extend(measure_redis(args, work.path())?);
    }
    if args.json {
        for result in &results {
            println!("{}", serde_json::to_string(result)?);
        }
    } else {
        print_table(args, &results);
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

fn measure_starling(args: &Args, work: &Path) -> anyhow::Result<Vec<Measurement>> {
    let (port, admin_port) = (free_port()?, free_port()?);
    let data = work.join("starling");
    let mut command = Command::new(starling_bin(args)?);
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
    let results = redis_benchmark(args, port, "starling");
    server.stop();
    results
}

fn measure_redis(args: &Args, work: &Path) -> anyhow::Result<Vec<Measurement>> {
    let port = free_port()?;
    let data = work.join("redis");
    std::fs::create_dir_all(&data)?;
    let child = Command::new("redis-server")
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
    let results = redis_benchmark(args, port, "redis");
    server.stop();
    results
}

fn redis_benchmark(
    args: &Args,
    port: u16,
    target: &'static str,
) -> anyhow::Result<Vec<Measurement>> {
    let output = Command::new("redis-benchmark")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-t",
            "set,get",
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
    ensure!(
        output.status.success(),
        "redis-benchmark against {target} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let measurements = parse_csv(&String::from_utf8_lossy(&output.stdout), target)?;
    ensure!(
        measurements.len() == 2,
        "redis-benchmark printed {} results for {target}, expected SET and GET",
        measurements.len()
    );
    Ok(measurements)
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
            })
        })
        .collect()
}

fn print_table(args: &Args, results: &[Measurement]) {
    println!(
        "redis-benchmark -t set,get -P {} -c {} -n {} -r {} -d {} (loopback)",
        args.pipeline, args.clients, args.requests, args.keyspace, args.value_bytes
    );
    println!(
        "{:<6} {:<9} {:>12} {:>9} {:>9} {:>8}",
        "test", "target", "rps", "p50 ms", "p99 ms", "ratio"
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
        println!(
            "{:<6} {:<9} {:>12.0} {:>9.3} {:>9.3} {:>8}",
            result.test, result.target, result.rps, result.p50_ms, result.p99_ms, ratio
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
