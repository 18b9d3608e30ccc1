//! The glommio runtime: one pinned executor per core, cross-shard channels, sockets and files.
//!
//! [`serve`] is the entry point of `starling serve`: it runs the start-up [`checks`], pins the
//! data dir's [`layout`], then starts one executor per shard, pinned to a CPU the process may use
//! ([`placement`]). Each shard opens its engine in
//! `data_dir/shard-<i>/`, joins the channel mesh, binds the client port (SO_REUSEPORT, so the
//! kernel spreads connections over shards) and, on shard 0, the admin port. SIGINT/SIGTERM set
//! a flag every shard watches: it stops accepting, lets running batches finish (their writes are
//! durable before they are answered), waits for the other shards (which may still forward to
//! it), and closes its engine. A second signal exits at once.
//!
//! **Architecture invariant:** nothing here is shared between shards except [`NodeState`]
//! (atomics), the metrics (atomics) and the channel mesh; engines, clocks and connections are
//! shard-local.

pub mod checks;
pub mod cluster;
pub mod cluster_metrics;
pub mod conn;
pub mod exec;
pub mod info;
pub mod keys;
pub mod keyspace;
pub mod layout;
pub mod limit;
pub mod ops;
pub mod placement;
pub mod router;
pub mod session;
pub mod shard;
pub mod transfer;

/// The storage engine this runtime drives (one instance per shard).
pub use starling_storage as storage;

use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use glommio::LocalExecutorPoolBuilder;
use glommio::channels::channel_mesh::MeshBuilder;
use glommio::net::TcpListener;

use crate::api::admin::{self, Response};
use crate::api::metrics::{NodeMetrics, render_prometheus};
use crate::config::{Config, Durability};
use crate::runtime::ops::Message;
use crate::runtime::router::Router;
use crate::runtime::shard::{Shard, ShardParts};

/// Capacity of each directed channel of the mesh (messages, each a batch of ops).
const MESH_CHANNEL_CAPACITY: usize = 1024;
/// How often shards look at shared flags while starting and stopping.
const POLL_INTERVAL: Duration = Duration::from_millis(5);
/// How often a running shard looks at the stop flag (the signal handler only sets a flag).
const STOP_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// State shared by all shards of the node.
pub struct NodeState {
    /// Set by SIGINT/SIGTERM (or a failed shard): stop.
    pub stop: Arc<AtomicBool>,
    /// Node-wide connection limit.
    pub connections: limit::ConnectionLimit,
    /// Shards whose engine opened.
    pub ready: AtomicUsize,
    /// A shard failed to start.
    pub failed: AtomicBool,
    /// Shards that finished their clients' requests during shutdown.
    pub drained: AtomicUsize,
    /// Next client connection id.
    pub next_connection_id: AtomicU64,
}

impl NodeState {
    fn new(max_connections: usize) -> Self {
        NodeState {
            stop: Arc::new(AtomicBool::new(false)),
            connections: limit::ConnectionLimit::new(max_connections),
            ready: AtomicUsize::new(0),
            failed: AtomicBool::new(false),
            drained: AtomicUsize::new(0),
            next_connection_id: AtomicU64::new(1),
        }
    }
}

/// Why the node could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A start-up check failed.
    #[error(transparent)]
    Check(#[from] checks::CheckError),
    /// The data dir's layout does not fit.
    #[error(transparent)]
    Layout(#[from] layout::LayoutError),
    /// The signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signal(std::io::Error),
    /// The executors could not be started.
    #[error("cannot start the shard executors: {0}")]
    Executors(String),
    /// A shard failed.
    #[error("{0}")]
    Shard(String),
    /// The `[cluster]` settings cannot be used, or the node must resync first.
    #[error("{0}")]
    Cluster(String),
}

/// Everything a shard's executor needs, cloned into each.
#[derive(Clone)]
struct ShardContext {
    config: Arc<Config>,
    node: Arc<NodeState>,
    metrics: Arc<NodeMetrics>,
    mesh: MeshBuilder<Message, glommio::channels::channel_mesh::Full>,
    router: Router,
    node_id: u64,
    cluster: Option<Arc<cluster::ClusterSettings>>,
}

/// Runs a node until SIGINT/SIGTERM; returns after a graceful shutdown.
pub fn serve(config: Config) -> Result<(), ServeError> {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let shards = config.shard_count(cpus);
    checks::check_kernel()?;
    checks::check_memlock(shards)?;
    checks::check_data_dir(&config.data_dir)?;
    checks::check_port("client", config.client_addr, "--client-addr")?;
    checks::check_port("admin", config.admin_addr, "--admin-addr")?;
    let layout = layout::open_or_create(&config.data_dir, config.partitions, shards)?;
    let cluster = match config.cluster.enabled {
        true => {
            cluster::check_rejoin(&config).map_err(ServeError::Cluster)?;
            let settings = cluster::ClusterSettings::from_config(&config, shards)
                .map_err(|e| ServeError::Cluster(format!("[cluster]: {e}")))?;
            Some(Arc::new(settings))
        }
        false => None,
    };
    let node = Arc::new(NodeState::new(config.max_connections));
    install_signal_handlers(&node.stop)?;
    tracing::info!(shards, partitions = config.partitions, node_id = %layout.node_id, data_dir = %config.data_dir.display(), "starting");
    let context = ShardContext {
        config: Arc::new(config),
        metrics: Arc::new(NodeMetrics::new(shards)),
        mesh: MeshBuilder::full(shards, MESH_CHANNEL_CAPACITY),
        router: Router::new(layout.partitions, shards),
        node_id: layout.node_id(),
        node,
        cluster,
    };
    let placement = placement::placement(shards, cpus);
    let handles = LocalExecutorPoolBuilder::new(placement)
        .name("starling-shard")
        .io_memory(context.config.io_memory_bytes)
        .on_all_shards(move || run_shard(context))
        .map_err(|e| ServeError::Executors(e.to_string()))?;
    let mut first_error = None;
    for result in handles.join_all() {
        let error = match result {
            Ok(Ok(())) => continue,
            Ok(Err(message)) => message,
            Err(error) => format!("a shard executor failed: {error}"),
        };
        first_error.get_or_insert(error);
    }
    match first_error {
        Some(error) => Err(ServeError::Shard(error)),
        None => {
            tracing::info!("stopped");
            Ok(())
        }
    }
}

fn install_signal_handlers(stop: &Arc<AtomicBool>) -> Result<(), ServeError> {
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // The second signal, with the flag already set, exits at once.
        signal_hook::flag::register_conditional_shutdown(signal, 130, stop.clone())
            .map_err(ServeError::Signal)?;
        signal_hook::flag::register(signal, stop.clone()).map_err(ServeError::Signal)?;
    }
    Ok(())
}

/// Polls `condition` until it holds or `timeout` passes; returns whether it holds.
async fn wait_until(mut condition: impl FnMut() -> bool, timeout: Duration) -> bool {
    let deadline = Instant::now().checked_add(timeout);
    while !condition() {
        if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            return false;
        }
        glommio::timer::sleep(POLL_INTERVAL).await;
    }
    true
}

/// Resolves once the stop flag is set (checked every [`STOP_POLL_INTERVAL`]).
async fn stopped(node: &NodeState) {
    while !node.stop.load(Ordering::Relaxed) {
        glommio::timer::sleep(STOP_POLL_INTERVAL).await;
    }
}

async fn run_shard(context: ShardContext) -> Result<(), String> {
    let (senders, receivers) = context
        .mesh
        .clone()
        .join()
        .await
        .map_err(|e| format!("cannot join the shard channel mesh: {e}"))?;
    let index = senders.peer_id();
    let shards = context.router.shards();
    let node = context.node.clone();
    let engine = match open_engine(&context.config, index).await {
        Ok(engine) => engine,
        Err(error) => {
            node.failed.store(true, Ordering::SeqCst);
            return Err(error);
        }
    };
    node.ready.fetch_add(1, Ordering::SeqCst);
    wait_until(
        || node.ready.load(Ordering::SeqCst) == shards || node.failed.load(Ordering::SeqCst),
        Duration::MAX,
    )
    .await;
    let limits = storage::Limits::default();
    let shard = Shard::new(ShardParts {
        index,
        router: context.router,
        node_id: context.node_id,
        config: context.config.clone(),
        metrics: context.metrics.clone(),
        node: node.clone(),
        engine,
        limits,
        senders: (shards > 1).then_some(senders),
    });
    shard.spawn_mesh_receivers(receivers);
    if let Some(settings) = context.cluster.clone()
        && let Err(error) = cluster::ClusterShard::start(&shard, settings)
    {
        node.failed.store(true, Ordering::SeqCst);
        node.stop.store(true, Ordering::SeqCst);
        shut_down(&shard).await;
        return Err(error);
    }
    let result = if node.failed.load(Ordering::SeqCst) {
        Ok(())
    } else {
        serve_clients(&shard).await
    };
    if result.is_err() {
        node.failed.store(true, Ordering::SeqCst);
        node.stop.store(true, Ordering::SeqCst);
    }
    shut_down(&shard).await;
    result
}

async fn open_engine(config: &Config, index: usize) -> Result<storage::Engine, String> {
    let dir = config.data_dir.join(format!("shard-{index}"));
    let mut options = storage::Options::new(&dir);
    options.durability = match config.durability {
        Durability::Sync => storage::Durability::Sync,
        Durability::None => storage::Durability::None,
    };
    storage::Engine::open(options).await.map_err(|e| {
        format!(
            "shard {index}: cannot open storage in {}: {e}",
            dir.display()
        )
    })
}

/// Binds the client (and on shard 0 the admin) port and serves until the stop flag is set.
async fn serve_clients(shard: &Rc<Shard>) -> Result<(), String> {
    let config = &shard.config;
    let listener = TcpListener::bind(config.client_addr).map_err(|e| {
        format!(
            "shard {}: cannot listen on {}: {e}",
            shard.index, config.client_addr
        )
    })?;
    let admin_listener =
        match shard.index {
            0 => Some(TcpListener::bind(config.admin_addr).map_err(|e| {
                format!("cannot listen on admin address {}: {e}", config.admin_addr)
            })?),
            _ => None,
        };
    if shard.index == 0 {
        tracing::info!(client = %config.client_addr, admin = %config.admin_addr, shards = shard.shards(), "ready");
    }
    let admin = async {
        match admin_listener {
            Some(listener) => {
                let handler_shard = shard.clone();
                let handler = move |path: String| {
                    let shard = handler_shard.clone();
                    async move { admin_response(&shard, &path).await }
                };
                admin::serve(listener, handler, std::future::pending::<()>()).await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    let serving = futures_lite::future::or(conn::accept_loop(shard.clone(), listener), admin);
    futures_lite::future::or(serving, stopped(&shard.node)).await;
    Ok(())
}

/// Stops taking requests, lets running batches finish, waits for the other shards, closes.
async fn shut_down(shard: &Rc<Shard>) {
    let timeout = Duration::from_secs(shard.config.shutdown_timeout_secs);
    shard.closing.set(true);
    if let Some(cluster) = shard.cluster() {
        cluster.leave();
    }
    if !wait_until(|| shard.busy.get() == 0, timeout).await {
        tracing::warn!(
            shard = shard.index,
            busy = shard.busy.get(),
            "requests still running at the shutdown timeout"
        );
    }
    let node = &shard.node;
    node.drained.fetch_add(1, Ordering::SeqCst);
    // Other shards may still forward requests here until they have drained too.
    wait_until(
        || node.drained.load(Ordering::SeqCst) == shard.shards(),
        timeout,
    )
    .await;
    let Some(engine) = shard.take_engine() else {
        return;
    };
    match Rc::try_unwrap(engine) {
        Ok(engine) => match engine.close().await {
            Ok(()) => tracing::info!(shard = shard.index, "storage closed"),
            Err(error) => tracing::error!(shard = shard.index, %error, "closing storage failed"),
        },
        Err(_) => tracing::warn!(
            shard = shard.index,
            "storage still in use at shutdown; its WAL covers every acknowledged write"
        ),
    }
}

/// Answers one admin request.
async fn admin_response(shard: &Rc<Shard>, path: &str) -> Response {
    match path {
        "/health" if shard.node.stop.load(Ordering::Relaxed) => Response::text(503, "stopping"),
        "/health" => Response::text(200, "ok"),
        "/metrics" => match keyspace::storage_samples(shard).await {
            Ok(samples) => {
                let mut text = render_prometheus(&shard.metrics, &samples);
                if let Some(cluster) = shard.cluster() {
                    text.push_str(&cluster.metrics().render());
                }
                Response::ok("text/plain; version=0.0.4; charset=utf-8", text)
            }
            Err(error) => Response::text(503, &error),
        },
        "/info" => match keyspace::storage_samples(shard).await {
            Ok(samples) => Response::ok(
                "application/json",
                format!("{:#}\n", info::info_json(shard, &samples)),
            ),
            Err(error) => Response::text(503, &error),
        },
        "/members" => match shard.cluster() {
            Some(cluster) => Response::ok(
                "application/json",
                format!("{:#}\n", cluster.members_json()),
            ),
            None => Response::text(
                404,
                "clustering is off (set [cluster] enabled, --join or --gossip-addr)",
            ),
        },
        target if target.starts_with("POST /faults") => faults_response(shard, target),
        "/" => Response::text(200, "starling admin: /metrics /health /info /members"),
        _ => Response::text(404, "not found: try /metrics, /health or /info"),
    }
}

/// `POST /faults?drop=<rate>&block=<hex ids>`: only with `fault_injection = true`.
fn faults_response(shard: &Rc<Shard>, target: &str) -> Response {
    let Some(cluster) = shard.cluster() else {
        return Response::text(404, "clustering is off");
    };
    if !cluster.faults().enabled {
        return Response::text(
            403,
            "fault injection is off ([cluster] fault_injection = true)",
        );
    }
    let query = target.split_once('?').map_or("", |(_, query)| query);
    match cluster_metrics::Faults::parse_query(query) {
        Ok((drop_rate, blocked)) => {
            let message = format!("drop={drop_rate} blocked={}", blocked.len());
            cluster.faults().set(drop_rate, blocked);
            Response::text(200, &message)
        }
        Err(message) => Response::text(400, &message),
    }
}
