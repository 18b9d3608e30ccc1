//! `starling-bench`: measures Starling side by side with its anchors.
//!
//! Each suite lives in its own module with an `Args` (clap) and a `run`; every suite prints a
//! human table by default and one JSON object per line with `--json`.

mod field;
mod node;
mod reconcile;
mod storage;

use clap::{Parser, Subcommand};

/// The node's allocator (mimalloc, see `src/main.rs`), so that what the suites time in-process
/// (storage engine, reconciliation sessions) runs as it does in `starling serve`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Benchmarks Starling next to the systems it is measured against.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    suite: Suite,
}

#[derive(Subcommand)]
enum Suite {
    /// starling-storage against fjall: fill, overwrite, reads, scans, group commit.
    Storage(storage::Args),
    /// Set reconciliation: bytes, rounds and decode time against naive exchange and minisketch.
    Reconcile(reconcile::Args),
    /// Prime-field sketch kernels: ns per insert and mulmods per second.
    Field(field::Args),
    /// A Starling node against redis-server under redis-benchmark.
    Node(node::Args),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().suite {
        Suite::Storage(args) => storage::run(&args),
        Suite::Reconcile(args) => reconcile::run(&args),
        Suite::Field(args) => field::run(&args),
        Suite::Node(args) => node::run(&args),
    }
}
