//! The `field` suite: cost of inserting elements into a sketch of m = 128 points, per kernel.
//!
//! For each kernel this CPU can run it reports (a) the raw kernel: ns per element multiplied
//! into one 128-point vector in batches, and mulmods per second; (b) `PartitionSketch::
//! insert_batch` end to end (element-set bookkeeping, counting sort by leaf, kernel per leaf),
//! whose leaves keep [`LEAF_POINTS`] points.

use starling::reconcile::kernel::Kernel;
use starling::reconcile::sketch::LEAF_POINTS;
use starling::reconcile::{PartitionSketch, element_from_hash};

/// Points of the kernel measurement (the m).
const M: usize = 128;

/// The sample points `1..=M`.
fn points() -> Vec<u64> {
    (1..=M as u64).collect()
}

/// Options of the `field` suite.
#[derive(clap::Args)]
pub struct Args {
    /// Print one JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Elements inserted per measurement.
    #[arg(long, default_value_t = 2_000_000)]
    pub elements: usize,
    /// Elements per kernel call (the batch the kernel keeps values in registers across).
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
}

/// Runs the suite.
pub fn run(args: &Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.batch >= 1 && args.elements >= args.batch,
        "need elements ≥ batch ≥ 1"
    );
    let cpu = cpu_model();
    if !args.json {
        println!(
            "CPU: {cpu}; kernels available: {:?}",
            Kernel::available()
                .iter()
                .map(|k| k.name())
                .collect::<Vec<_>>()
        );
        println!(
            "avx512: {}",
            if Kernel::Avx512.is_available() {
                "present"
            } else {
                "absent on this CPU: not measured"
            }
        );
        println!(
            "{:<8} {:>5} {:>16} {:>16} {:>22}",
            "kernel",
            "m",
            "ns/insert(kern)",
            "mulmod/s",
            format!("ns/insert(part. m={LEAF_POINTS})")
        );
    }
    let elements: Vec<u64> = (0..args.elements as u64)
        .map(|i| element_from_hash(i.wrapping_mul(0x9E37_79B9_7F4A_7C15)))
        .collect();
    let mut scalar_ns = None;
    for kernel in Kernel::available() {
        let kernel_ns = time_kernel(kernel, &elements, args.batch);
        let partition_ns = time_partition(kernel, &elements);
        let mulmods_per_second = M as f64 * 1e9 / kernel_ns;
        let speedup = scalar_ns.get_or_insert(kernel_ns).to_owned() / kernel_ns;
        if args.json {
            let line = serde_json::json!({
                "suite": "field", "kernel": kernel.name(), "m": M, "ns_per_insert": round2(kernel_ns),
                "mulmod_per_sec": mulmods_per_second, "batch": args.batch,
                "partition_ns_per_insert": round2(partition_ns), "partition_m": LEAF_POINTS, "speedup_vs_scalar": round2(speedup), "cpu": cpu,
            });
            println!("{line}");
        } else {
            println!(
                "{:<8} {:>5} {:>16.1} {:>16.3e} {:>22.1}   ({speedup:.2}× scalar)",
                kernel.name(),
                M,
                kernel_ns,
                mulmods_per_second,
                partition_ns
            );
        }
    }
    Ok(())
}

/// ns per element multiplied into one m-point vector, batch by batch.
fn time_kernel(kernel: Kernel, elements: &[u64], batch: usize) -> f64 {
    let mut values = vec![1u64; M];
    let points = points();
    let warm = elements.len().min(batch * 64);
    for chunk in elements[..warm].chunks(batch) {
        kernel.multiply_linear_factors(&mut values, &points, chunk);
    }
    let start = thread_cpu_time();
    for chunk in elements.chunks(batch) {
        kernel.multiply_linear_factors(&mut values, &points, chunk);
    }
    let ns = (thread_cpu_time() - start).as_nanos() as f64 / elements.len() as f64;
    std::hint::black_box(&values);
    ns
}

/// ns per element of `PartitionSketch::insert_batch` in batches of 4,096 (e.g. a storage flush).
fn time_partition(kernel: Kernel, elements: &[u64]) -> f64 {
    let mut sketch = PartitionSketch::with_kernel(kernel);
    let start = thread_cpu_time();
    for chunk in elements.chunks(4096) {
        sketch.insert_batch(chunk);
    }
    let ns = (thread_cpu_time() - start).as_nanos() as f64 / elements.len() as f64;
    std::hint::black_box(sketch.len());
    ns
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The CPU model name, for the record.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".to_string())
}

/// CPU time consumed by the calling thread. The benchmark machine is shared, so wall-clock
/// time would count time spent waiting for a core; thread CPU time does not.
pub fn thread_cpu_time() -> std::time::Duration {
    let mut spec = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `spec` is a valid, writable timespec and CLOCK_THREAD_CPUTIME_ID is always
    // supported on Linux; the call writes only into `spec`.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut spec) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    std::time::Duration::new(spec.tv_sec as u64, spec.tv_nsec as u32)
}
