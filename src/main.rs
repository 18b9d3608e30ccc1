//! The `starling` binary: parses the command line and calls into the library.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc instead of glibc malloc: the request path allocates small buffers per command, and
/// glibc's `malloc_consolidate` showed up at ~15% of a shard's CPU under redis-benchmark.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Starling: a leaderless, replicated metadata store that speaks the Redis protocol.
///
/// `starling serve` with no arguments runs a node with data in ./starling-data, clients on
/// 127.0.0.1:7379 (try `redis-cli -p 7379`) and the admin HTTP port on 127.0.0.1:7380.
#[derive(Parser)]
#[command(version, about, long_about)]
struct Cli {
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, global = true, env = "STARLING_LOG_JSON")]
    log_json: bool,
    /// Log filter, e.g. `info` or `starling=debug` (RUST_LOG syntax).
    #[arg(long, global = true, env = "STARLING_LOG", default_value = "info")]
    log: String,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node (the default). Flags override `STARLING_*` variables, which override the
    /// config file, which overrides the built-in defaults.
    Serve(Box<starling::config::Overrides>),
    /// Print a running node's state (JSON) from its admin port.
    Status {
        /// The node's admin address.
        #[arg(long, env = "STARLING_ADMIN_ADDR", default_value = "127.0.0.1:7380")]
        admin_addr: SocketAddr,
    },
    /// List the cluster members a running node knows, with their states.
    Members {
        /// The node's admin address.
        #[arg(long, env = "STARLING_ADMIN_ADDR", default_value = "127.0.0.1:7380")]
        admin_addr: SocketAddr,
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a new random cluster key line (`<id> <hex>`) for a key file; append it to the
    /// file on every node to rotate keys.
    Keygen {
        /// Key id (0..=255).
        #[arg(long, default_value_t = 1)]
        id: u8,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_json, &cli.log);
    let result = match cli
        .command
        .unwrap_or_else(|| Command::Serve(Box::default()))
    {
        Command::Serve(overrides) => serve(&overrides),
        Command::Status { admin_addr } => status(admin_addr),
        Command::Members { admin_addr, json } => members(admin_addr, json),
        Command::Keygen { id } => starling::runtime::keys::keygen_line(id)
            .map(|line| println!("{line}"))
            .map_err(|e| anyhow::anyhow!("cannot read /dev/urandom: {e}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(overrides: &starling::config::Overrides) -> anyhow::Result<()> {
    let config = starling::config::Config::resolve(overrides)?;
    starling::runtime::serve(config)?;
    Ok(())
}

fn status(admin_addr: SocketAddr) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let (code, body) = starling::api::admin::get(admin_addr, "/info").with_context(|| {
        format!("cannot reach the admin port at {admin_addr}: is the node running? (--admin-addr)")
    })?;
    anyhow::ensure!(
        code == 200,
        "the node at {admin_addr} answered {code}: {body}"
    );
    print!("{body}");
    Ok(())
}

fn members(admin_addr: SocketAddr, json: bool) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let (code, body) = starling::api::admin::get(admin_addr, "/members").with_context(|| {
        format!("cannot reach the admin port at {admin_addr}: is the node running? (--admin-addr)")
    })?;
    anyhow::ensure!(
        code == 200,
        "the node at {admin_addr} answered {code}: {body}"
    );
    if json {
        print!("{body}");
        return Ok(());
    }
    let value: serde_json::Value =
        serde_json::from_str(&body).context("the node's /members answer is not JSON")?;
    println!(
        "{:<18} {:<22} {:<8} {:>11} {:>6}",
        "ID", "GOSSIP", "STATE", "INCARNATION", "SHARDS"
    );
    for member in value["members"].as_array().into_iter().flatten() {
        let marker = if member["self"].as_bool() == Some(true) {
            " (self)"
        } else {
            ""
        };
        println!(
            "{:<18} {:<22} {:<8} {:>11} {:>6}{marker}",
            member["id"].as_str().unwrap_or("?"),
            member["addr"].as_str().unwrap_or("?"),
            member["state"].as_str().unwrap_or("?"),
            member["incarnation"],
            member["shards"],
        );
    }
    Ok(())
}

fn init_logging(json: bool, filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
