//! Clustering on a shard: the glommio shell around the sans-IO gossip membership and the
//! replicator. It owns the shard's UDP socket (`gossip_port + shard`), its TCP transfer port
//! (same number), the clocks and the tasks; the protocol decisions are all in `gossip/` and
//! `replication/`.
//!
//! Per shard: a receive task (open + replay check + dispatch of every datagram), a tick task
//! (membership timers on shard 0, replicator ticks, GC horizon, heartbeat), a send task (drains
//! a bounded queue of sealed datagrams) and the transfer server. Shard 0 runs [`Membership`];
//! whenever members change (and every second, so a late-starting shard catches up) it sends
//! the member list to the other shards over the channel mesh ([`Shard::broadcast_members`]).
//!
//! Path of a client `SET` in a cluster: `Shard::run_ops` → local group commit →
//! [`ClusterShard::replicate`] → `Replicator::write` → next tick: RUMOR datagrams → a peer's
//! receive task → `Action::Apply` → engine apply (version-aware) → `Replicator::applied` →
//! RUMOR_ACK back, which completes `ack = peers:k` writes.
//!
//! **Invariants:** no `RefCell` borrow is held across an `.await`; datagrams are dispatched
//! only after their MAC, cluster id and sequence window checked out; every queue is bounded.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::net::{SocketAddr, ToSocketAddrs as _};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use glommio::channels::local_channel::{self, LocalSender};
use glommio::net::{TcpListener, UdpSocket};
use rand::rngs::SmallRng;
use rand::{Rng as _, SeedableRng as _};

use crate::config::{AckMode, Config};
use crate::gossip::membership::{self, LocalNode, Member, MemberState, Membership};
use crate::gossip::replay::ReplayGuard;
use crate::gossip::wire::{DATAGRAM_BYTES_MAX, Kind, KindRange, Opener, Sealer};
use crate::replication::dissemination::DisseminationConfig;
use crate::replication::gc;
use crate::replication::hlc::wall_clock_ms;
use crate::replication::types::{partition_of, sort_view};
use crate::replication::{self as repl, Ack, Action, Context, PeerInfo, Replicator};
use crate::runtime::cluster_metrics::{ClusterMetrics, Faults, Rejection};
use crate::runtime::keys::{ClusterKeys, cluster_id_of};
use crate::runtime::ops::OpResult;
use crate::runtime::shard::Shard;
use crate::runtime::storage::{Engine, Entry, Version};
use crate::runtime::transfer::{self, TransferAuth};

/// Datagrams waiting to be sent per shard; more are dropped (and counted).
const SEND_QUEUE_MAX: usize = 8_192;
/// Senders (node, shard) whose replay windows a shard keeps.
const REPLAY_SENDERS_MAX: usize = 4_096;
/// Granularity of the tick task.
const TICK_STEP: Duration = Duration::from_millis(10);
/// How often shard 0 re-sends the member list and the GC horizon / heartbeat are refreshed.
const HOUSEKEEPING_MS: u64 = 1_000;
/// Name of the heartbeat file in the data dir (unix ms of the last contact with the cluster).
pub const HEARTBEAT_FILE: &str = "cluster-heartbeat";
/// File in the data dir holding the last gossip epoch this node used.
pub const EPOCH_FILE: &str = "gossip-epoch";

/// Node-wide cluster settings, resolved once before the shards start.
pub struct ClusterSettings {
    /// Cluster id (hash of the name).
    pub cluster_id: u64,
    /// Keys.
    pub keys: ClusterKeys,
    /// Bind address of shard 0 (shard `i`: port + `i`).
    pub bind: SocketAddr,
    /// Address peers reach shard 0 at.
    pub advertise: SocketAddr,
    /// Seeds (shard-0 gossip addresses).
    pub seeds: Vec<SocketAddr>,
    /// Membership tuning.
    pub membership: membership::Config,
    /// Replication tuning (shard fields are set per shard).
    pub replication: repl::Config,
    /// Write acknowledgement.
    pub ack: AckMode,
    /// `ack = peers:k` timeout.
    pub ack_timeout_ms: u64,
    /// Replicator tick.
    pub tick_ms: u64,
    /// Tombstone grace period.
    pub gc_grace_ms: u64,
    /// Grows across restarts: unix ms at start.
    pub epoch: u64,
    /// Partitions of the cluster.
    pub partitions: u16,
    /// Shards of this node.
    pub shards: u16,
    /// Counters.
    pub metrics: Arc<ClusterMetrics>,
    /// Fault injection.
    pub faults: Arc<Faults>,
    /// The heartbeat file.
    pub heartbeat_path: PathBuf,
    /// Monotonic origin of protocol time.
    pub started: Instant,
}

impl ClusterSettings {
    /// Resolves the `[cluster]` section for a node with `shards` shards.
    pub fn from_config(config: &Config, shards: usize) -> Result<ClusterSettings, String> {
        let cluster = &config.cluster;
        let keys = match &cluster.key_file {
            Some(path) => ClusterKeys::from_file(path).map_err(|e| e.to_string())?,
            None => ClusterKeys::derived(&cluster.cluster_id),
        }
        .with_encryption(cluster.encrypt);
        let partitions = u16::try_from(config.partitions)
            .map_err(|_| format!("partitions = {} exceeds 65535", config.partitions))?;
        let shards = u16::try_from(shards).map_err(|_| "too many shards".to_string())?;
        let last_port = u32::from(cluster.gossip_addr.port()) + u32::from(shards) - 1;
        if cluster.gossip_addr.port() == 0 || last_port > u32::from(u16::MAX) {
            return Err(format!(
                "gossip_addr {}: needs ports {}..={last_port} (one per shard), a fixed port below {}",
                cluster.gossip_addr,
                cluster.gossip_addr.port(),
                u32::from(u16::MAX) + 1 - u32::from(shards)
            ));
        }
        let advertise = cluster.advertise_addr();
        let seeds = resolve_seeds(&cluster.join, advertise);
        let membership = membership::Config {
            probe_interval_ms: cluster.probe_interval_ms,
            probe_timeout_ms: cluster.probe_timeout_ms,
            gossip_interval_ms: cluster.gossip_interval_ms,
            gossip_fanout: cluster.fanout,
            join_retry_ms: cluster.probe_interval_ms.max(200),
            ..membership::Config::default()
        };
        membership.validate()?;
        let replication = repl::Config {
            partitions,
            shards,
            shard: 0,
            sync_interval_ms: cluster.sync_interval_ms,
            dissemination: DisseminationConfig {
                fanout: cluster.fanout,
                linger_ms: cluster.rumor_linger_ms,
                ack_linger_ms: cluster.ack_linger_ms,
                // An ack may linger, then needs a round trip (and a group commit) to arrive.
                retransmit_after_ms: (cluster.gossip_interval_ms * 3)
                    .max(cluster.ack_linger_ms + 140),
                ..DisseminationConfig::default()
            },
            anti_entropy: match cluster.anti_entropy.as_str() {
                "cpisync" => repl::replicator::AntiEntropyMode::CpisyncKept,
                _ => repl::replicator::AntiEntropyMode::ElementList,
            },
            bulk_threshold: cluster.bulk_threshold,
        };
        Ok(ClusterSettings {
            cluster_id: cluster_id_of(&cluster.cluster_id),
            keys,
            bind: cluster.gossip_addr,
            advertise,
            seeds,
            membership,
            replication,
            ack: cluster.ack_mode(),
            ack_timeout_ms: cluster.ack_timeout_ms,
            tick_ms: cluster.gossip_interval_ms,
            gc_grace_ms: cluster.gc_grace_secs.saturating_mul(1000),
            epoch: next_epoch(&config.data_dir.join(EPOCH_FILE), wall_clock_ms())?,
            partitions,
            shards,
            metrics: Arc::new(ClusterMetrics::new(usize::from(shards))),
            faults: Arc::new(Faults::new(cluster.fault_injection)),
            heartbeat_path: config.data_dir.join(HEARTBEAT_FILE),
            started: Instant::now(),
        })
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64 + 1
    }
}

/// This start's gossip epoch: the wall clock in ms, but always above the last epoch recorded
/// in `path`, which is then updated durably. Peers take a restarted sequence as a replay unless
/// the epoch grew, and with `encrypt` a repeated (epoch, sequence) would repeat an AEAD nonce:
/// so a clock set back (or a machine without a hardware clock) must not bring an epoch back.
fn next_epoch(path: &Path, wall_ms: u64) -> Result<u64, String> {
    let last = match std::fs::read_to_string(path) {
        Ok(text) => text.trim().parse::<u64>().map_err(|_| {
            format!(
                "{}: not a gossip epoch ({text:?}); remove it to start anew",
                path.display()
            )
        })?,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => 0,
        Err(error) => return Err(format!("reading {}: {error}", path.display())),
    };
    let epoch = wall_ms.max(last + 1);
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::File::create(path)?;
        std::io::Write::write_all(&mut file, epoch.to_string().as_bytes())?;
        file.sync_all()
    };
    write().map_err(|error| format!("writing {}: {error}", path.display()))?;
    Ok(epoch)
}

fn resolve_seeds(join: &[String], advertise: SocketAddr) -> Vec<SocketAddr> {
    let mut seeds = Vec::new();
    for seed in join {
        match seed.to_socket_addrs() {
            Ok(addrs) => seeds.extend(addrs.filter(|addr| *addr != advertise).take(1)),
            Err(error) => tracing::warn!(%seed, %error, "cannot resolve seed; skipping it"),
        }
    }
    seeds
}

/// Refuses to start a node that was away longer than `gc_grace` (deleted keys could come back),
/// unless `--resync` was given, in which case its shard data is removed so it refills from the
/// cluster. Reads the heartbeat file shard 0 refreshes while running.
pub fn check_rejoin(config: &Config) -> Result<(), String> {
    let path = config.data_dir.join(HEARTBEAT_FILE);
    let last_active_ms = std::fs::read_to_string(&path)
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok());
    let gc_grace_ms = config.cluster.gc_grace_secs.saturating_mul(1000);
    let decision = gc::rejoin_decision(last_active_ms, wall_clock_ms(), gc_grace_ms);
    match decision {
        gc::Rejoin::MustResync { .. } if config.cluster.resync => {
            tracing::warn!(
                "{}; --resync given: removing local shard data",
                decision.describe()
            );
            wipe_shards(&config.data_dir)?;
            let _ = std::fs::remove_file(&path);
            Ok(())
        }
        gc::Rejoin::MustResync { .. } => Err(format!(
            "{} (or start with --resync to do that automatically)",
            decision.describe()
        )),
        _ => {
            tracing::info!("{}", decision.describe());
            Ok(())
        }
    }
}

fn wipe_shards(data_dir: &Path) -> Result<(), String> {
    let entries = std::fs::read_dir(data_dir)
        .map_err(|e| format!("cannot list {}: {e}", data_dir.display()))?;
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with("shard-") {
            std::fs::remove_dir_all(entry.path())
                .map_err(|e| format!("cannot remove {}: {e}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// A one-shot result slot for a waiting `ack = peers:k` write.
#[derive(Default)]
struct AckSlot {
    outcome: Cell<Option<Result<(), usize>>>,
    waker: RefCell<Option<Waker>>,
}

impl AckSlot {
    fn complete(&self, outcome: Result<(), usize>) {
        self.outcome.set(Some(outcome));
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
    }
}

struct AckWait(Rc<AckSlot>);

impl Future for AckWait {
    type Output = Result<(), usize>;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        match self.0.outcome.take() {
            Some(outcome) => Poll::Ready(outcome),
            None => {
                *self.0.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

/// The replicator's read view of a shard's engine. Partition scans read the whole engine
/// once per call into a per-partition index (the engine is ordered by key, not partition).
struct EngineStore<'a> {
    engine: &'a Engine,
    partitions: u16,
    by_partition: RefCell<Option<Vec<Vec<repl::Entry>>>>,
}

impl repl::Store for EngineStore<'_> {
    fn version(&self, key: &[u8]) -> Option<repl::Version> {
        let entry = self.engine.get(key).ok().flatten()?;
        Some(to_repl_version(entry.version))
    }

    fn entry(&self, key: &[u8]) -> Option<repl::Entry> {
        self.engine.get(key).ok().flatten().map(to_repl)
    }

    fn for_each_in_partition(&self, partition: u16, visit: &mut dyn FnMut(&repl::Entry)) {
        let mut index = self.by_partition.borrow_mut();
        let index = index.get_or_insert_with(|| {
            let mut index = vec![Vec::new(); usize::from(self.partitions)];
            let Ok(entries) = self.engine.entries() else {
                return index;
            };
            for entry in entries.flatten() {
                let partition = partition_of(&entry.key, self.partitions);
                index[usize::from(partition)].push(to_repl(entry));
            }
            index
        });
        if let Some(entries) = index.get(usize::from(partition)) {
            entries.iter().for_each(visit);
        }
    }
}

fn to_repl_version(version: Version) -> repl::Version {
    repl::Version {
        hlc: version.hlc,
        node: version.node,
    }
}

fn to_repl(entry: Entry) -> repl::Entry {
    repl::Entry {
        key: entry.key,
        value: entry.value,
        version: to_repl_version(entry.version),
    }
}

fn to_storage(entry: repl::Entry) -> Entry {
    Entry {
        key: entry.key,
        value: entry.value,
        version: Version {
            hlc: entry.version.hlc,
            node: entry.version.node,
        },
    }
}

/// One shard's clustering state (lives in its executor: `Rc`, never shared).
pub struct ClusterShard {
    index: u16,
    node_id: u64,
    settings: Arc<ClusterSettings>,
    shard: Weak<Shard>,
    opener: Opener,
    sealer: RefCell<Sealer>,
    replay: RefCell<ReplayGuard>,
    outbox: LocalSender<(SocketAddr, Vec<u8>)>,
    membership: Option<RefCell<Membership>>,
    members: RefCell<Vec<Member>>,
    addrs: RefCell<HashMap<u64, SocketAddr>>,
    view: RefCell<Vec<PeerInfo>>,
    replicator: RefCell<Replicator>,
    acks: RefCell<HashMap<u64, Rc<AckSlot>>>,
    write_id_next: Cell<u64>,
    rng: RefCell<SmallRng>,
    transfer: Rc<TransferAuth>,
}

/// A UDP socket bound to `addr` without SO_REUSEPORT (which glommio's `UdpSocket::bind` sets):
/// a second process on the same gossip port is refused with "address in use" instead of
/// silently splitting the port's datagrams with the first.
fn bind_exclusive_udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    // As glommio's own bind, minus `set_reuse_port`.
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.bind(&addr.into())?;
    Ok(UdpSocket::from(socket))
}

impl ClusterShard {
    /// Binds shard `shard.index`'s UDP and TCP ports, starts its tasks and hooks it into the
    /// shard. Shard 0 also starts membership and joins the seeds.
    pub fn start(shard: &Rc<Shard>, settings: Arc<ClusterSettings>) -> Result<(), String> {
        let index = u16::try_from(shard.index).map_err(|_| "shard index".to_string())?;
        let addr = SocketAddr::new(settings.bind.ip(), settings.bind.port() + index);
        let socket = bind_exclusive_udp(addr)
            .map_err(|e| format!("shard {index}: cannot bind gossip UDP {addr}: {e}"))?;
        let listener = TcpListener::bind(addr)
            .map_err(|e| format!("shard {index}: cannot bind transfer TCP {addr}: {e}"))?;
        let (outbox, queue) = local_channel::new_bounded(SEND_QUEUE_MAX);
        let node_id = shard.node_id;
        let now = settings.now_ms();
        let membership = (index == 0).then(|| {
            let me = LocalNode {
                id: node_id,
                addr: settings.advertise,
                shards: settings.shards,
                partitions: u32::from(settings.partitions),
            };
            let mut membership = Membership::new(me, settings.membership.clone(), node_id, now);
            if !settings.seeds.is_empty() {
                membership.join(&settings.seeds, now);
            }
            RefCell::new(membership)
        });
        let replication = repl::Config {
            shard: index,
            ..settings.replication.clone()
        };
        let keyring = settings.keys.keyring();
        let cluster = Rc::new(ClusterShard {
            index,
            node_id,
            opener: Opener {
                cluster_id: settings.cluster_id,
                keyring: keyring.clone(),
            },
            sealer: RefCell::new(Sealer::new(
                settings.cluster_id,
                node_id,
                index,
                settings.epoch,
                keyring,
            )),
            replay: RefCell::new(ReplayGuard::new(REPLAY_SENDERS_MAX)),
            outbox,
            membership,
            members: RefCell::new(Vec::new()),
            addrs: RefCell::new(HashMap::new()),
            view: RefCell::new(Vec::new()),
            replicator: RefCell::new(Replicator::new(
                replication,
                node_id,
                node_id ^ u64::from(index) << 48,
            )),
            acks: RefCell::new(HashMap::new()),
            write_id_next: Cell::new(1),
            rng: RefCell::new(SmallRng::seed_from_u64(
                node_id.rotate_left(u32::from(index)),
            )),
            transfer: Rc::new(TransferAuth {
                cluster_id: settings.cluster_id,
                keys: settings.keys.clone(),
            }),
            shard: Rc::downgrade(shard),
            settings,
        });
        shard.set_cluster(cluster.clone());
        cluster.spawn_tasks(shard, Rc::new(socket), listener, queue);
        if index == 0 {
            tracing::info!(gossip = %cluster.settings.advertise, seeds = ?cluster.settings.seeds, "cluster gossip started");
        }
        Ok(())
    }

    fn spawn_tasks(
        self: &Rc<Self>,
        shard: &Rc<Shard>,
        socket: Rc<UdpSocket>,
        listener: TcpListener,
        queue: local_channel::LocalReceiver<(SocketAddr, Vec<u8>)>,
    ) {
        let node = shard.node.clone();
        let until_stopped = move |task: Pin<Box<dyn Future<Output = ()>>>| {
            let node = node.clone();
            glommio::spawn_local(futures_lite::future::or(task, async move {
                super::stopped(&node).await;
            }))
            .detach();
        };
        let (this, receive_socket) = (self.clone(), socket.clone());
        until_stopped(Box::pin(
            async move { this.receive_loop(&receive_socket).await },
        ));
        let this = self.clone();
        until_stopped(Box::pin(async move { this.tick_loop().await }));
        let this = self.clone();
        until_stopped(Box::pin(async move {
            while let Some((to, datagram)) = queue.recv().await {
                if socket.send_to(&datagram, to).await.is_err() {
                    this.settings
                        .metrics
                        .send_failures
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
        let weak = Rc::downgrade(shard);
        let metrics = self.settings.metrics.clone();
        until_stopped(Box::pin(transfer::serve(
            listener,
            move || weak.upgrade().and_then(|shard| shard.engine_handle()),
            self.transfer.clone(),
            move |bytes| {
                metrics
                    .transfer_bytes_sent
                    .fetch_add(bytes, Ordering::Relaxed);
            },
        )));
    }

    async fn receive_loop(self: &Rc<Self>, socket: &UdpSocket) {
        let mut buffer = vec![0u8; DATAGRAM_BYTES_MAX + 1];
        loop {
            match socket.recv_from(&mut buffer).await {
                Ok((len, from)) => self.on_datagram(from, &mut buffer[..len]),
                Err(error) => {
                    tracing::debug!(shard = self.index, %error, "gossip receive failed");
                    glommio::timer::sleep(TICK_STEP).await;
                }
            }
        }
    }

    async fn tick_loop(self: &Rc<Self>) {
        let mut replication_due = 0;
        let mut housekeeping_due = 0;
        loop {
            glommio::timer::sleep(TICK_STEP).await;
            let now = self.settings.now_ms();
            self.membership_timers(now);
            // Lingering rumors and acks leave within one step of their deadline.
            let flush_due =
                (self.replicator.borrow().next_deadline_ms()).is_some_and(|due| due <= now);
            if flush_due && now < replication_due {
                self.drive(|replicator, context| replicator.flush(now, context));
                self.perform(now);
            }
            if now >= replication_due {
                replication_due = now + self.settings.tick_ms;
                self.drive(|replicator, context| replicator.tick(now, context));
                self.perform(now);
                let replicator = self.replicator.borrow();
                let stats = &replicator.dissemination().stats;
                self.settings.metrics.shards[usize::from(self.index)]
                    .store(replicator.stats(), stats);
            }
            if now >= housekeeping_due {
                housekeeping_due = now + HOUSEKEEPING_MS;
                self.housekeeping();
            }
        }
    }

    fn housekeeping(self: &Rc<Self>) {
        let wall = wall_clock_ms();
        if let Some(engine) = self.engine() {
            engine.set_gc_horizon(gc::gc_horizon_hlc(wall, self.settings.gc_grace_ms));
        }
        if self.membership.is_some() {
            self.reconnect(self.settings.now_ms());
            self.publish_members();
            // In contact with the cluster (or alone): refresh the heartbeat.
            if let Err(error) = std::fs::write(&self.settings.heartbeat_path, wall.to_string()) {
                tracing::warn!(%error, "cannot write the cluster heartbeat file");
            }
        }
    }

    /// Shard 0: a push-pull with (up to three) members we consider dead, and with the seeds
    /// when nobody is alive. After a healed partition both sides may hold the other dead and
    /// their rumors about it may be spent; the full-state exchange lets each side hear that it
    /// is considered dead and refute (as memberlist/Serf's reconnect of failed members does).
    fn reconnect(self: &Rc<Self>, now: u64) {
        let Some(membership) = &self.membership else {
            return;
        };
        let mut targets: Vec<SocketAddr> = {
            let membership = membership.borrow();
            let mut dead: Vec<SocketAddr> = membership
                .members()
                .filter(|member| member.state == MemberState::Dead)
                .map(|member| member.addr)
                .collect();
            if dead.len() > 3 {
                let start = self.rng.borrow_mut().random_range(0..dead.len());
                dead.rotate_left(start);
                dead.truncate(3);
            }
            dead
        };
        if membership.borrow().live_count() == 0 {
            targets.extend(self.settings.seeds.iter().copied());
        }
        if targets.is_empty() {
            return;
        }
        membership.borrow_mut().join(&targets, now);
        self.drain_membership(now);
    }

    fn engine(&self) -> Option<Rc<Engine>> {
        self.shard.upgrade().and_then(|shard| shard.engine_handle())
    }

    /// Runs `step` with the replicator and a context over this shard's engine and view.
    fn drive(&self, step: impl FnOnce(&mut Replicator, Context<'_>)) {
        let Some(engine) = self.engine() else {
            return;
        };
        let store = EngineStore {
            engine: &engine,
            partitions: self.settings.partitions,
            by_partition: RefCell::new(None),
        };
        let view = self.view.borrow();
        let mut replicator = self.replicator.borrow_mut();
        step(
            &mut replicator,
            Context {
                store: &store,
                view: &view,
            },
        );
    }

    fn on_datagram(self: &Rc<Self>, from: SocketAddr, datagram: &mut [u8]) {
        let metrics = &self.settings.metrics;
        let bytes = datagram.len();
        // Decrypts in place when `[cluster] encrypt` is on.
        let (header, body) = match self.opener.open_in_place(datagram) {
            Ok(opened) => opened,
            Err(error) => {
                metrics.reject(Rejection::of(&error));
                tracing::debug!(%from, %error, "datagram dropped");
                return;
            }
        };
        if let Err(error) = self.replay.borrow_mut().accept(&header) {
            metrics.reject(Rejection::of(&error));
            return;
        }
        let sender = header.sender.get();
        if self.settings.faults.is_blocked(sender) {
            metrics.reject(Rejection::Fault);
            return;
        }
        let kind = header.kind();
        metrics.received(kind.0, bytes);
        let sender_shard = header.shard.get();
        if let Some(base) = from.port().checked_sub(sender_shard) {
            self.addrs
                .borrow_mut()
                .entry(sender)
                .or_insert(SocketAddr::new(from.ip(), base));
        }
        let now = self.settings.now_ms();
        let decoded = match (kind.range(), &self.membership) {
            (KindRange::Membership, Some(membership)) => {
                let result = membership
                    .borrow_mut()
                    .handle_datagram(from, kind, body, now);
                self.drain_membership(now);
                result.is_ok()
            }
            // Reconciliation sessions (0x80–0x9F) belong to the replicator's anti-entropy.
            (KindRange::Replication | KindRange::Reconciliation, _) => {
                let peer = repl::types::Peer {
                    node: sender,
                    shard: sender_shard,
                };
                let mut result = Ok(());
                self.drive(|replicator, context| {
                    result = replicator.receive(now, peer, kind.0, body, context);
                });
                self.perform(now);
                result.is_ok()
            }
            _ => false,
        };
        if !decoded {
            metrics.decode_failures.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn membership_timers(self: &Rc<Self>, now: u64) {
        let Some(membership) = &self.membership else {
            return;
        };
        let due = membership
            .borrow()
            .poll_timeout()
            .is_some_and(|at| at <= now);
        if due {
            membership.borrow_mut().handle_timeout(now);
        }
        self.drain_membership(now);
    }

    /// Seals and queues membership transmits; applies member events.
    fn drain_membership(self: &Rc<Self>, now: u64) {
        let Some(membership) = &self.membership else {
            return;
        };
        let mut changed = false;
        loop {
            let transmit = membership.borrow_mut().poll_transmit();
            let Some(transmit) = transmit else { break };
            let node = self.node_at(transmit.to);
            self.queue(node, transmit.to, transmit.kind, &transmit.body);
        }
        loop {
            let event = membership.borrow_mut().poll_event();
            let Some(event) = event else { break };
            let member = event.member();
            tracing::info!(node = %format!("{:016x}", member.id), addr = %member.addr, state = ?member.state, "member {}", event_name(&event));
            changed = true;
        }
        let _ = now;
        if changed {
            self.publish_members();
        }
    }

    fn node_at(&self, addr: SocketAddr) -> Option<u64> {
        self.addrs
            .borrow()
            .iter()
            .find(|(_, base)| **base == addr)
            .map(|(node, _)| *node)
    }

    /// Shard 0: takes the current member list into this shard's view and sends it to the others.
    fn publish_members(self: &Rc<Self>) {
        let Some(membership) = &self.membership else {
            return;
        };
        let members: Vec<Member> = membership.borrow().members().copied().collect();
        let mut by_state = [0u64; 4];
        for member in &members {
            by_state[member.state as usize] += 1;
        }
        for (gauge, count) in self.settings.metrics.members.iter().zip(by_state) {
            gauge.store(count, Ordering::Relaxed);
        }
        if let Some(shard) = self.shard.upgrade() {
            shard.broadcast_members(&members);
        }
        self.on_members(members);
    }

    /// A new member list (from shard 0).
    pub fn on_members(&self, members: Vec<Member>) {
        let mut view: Vec<PeerInfo> = members
            .iter()
            .filter(|member| member.state.is_live())
            .map(|member| PeerInfo::new(member.id, member.shards.max(1)))
            .collect();
        sort_view(&mut view, self.node_id);
        {
            let mut addrs = self.addrs.borrow_mut();
            for member in &members {
                addrs.insert(member.id, member.addr);
            }
        }
        *self.view.borrow_mut() = view;
        *self.members.borrow_mut() = members;
    }

    /// Seals `body` and queues it for `to` (dropped if `node` is blocked or by the drop rate).
    fn queue(&self, node: Option<u64>, to: SocketAddr, kind: Kind, body: &[u8]) {
        let faults = &self.settings.faults;
        let metrics = &self.settings.metrics;
        let random = self.rng.borrow_mut().random_range(0..1_000_000);
        if node.is_some_and(|node| faults.is_blocked(node)) || faults.drop_now(random) {
            metrics.reject(Rejection::Fault);
            return;
        }
        let mut datagram = Vec::with_capacity(DATAGRAM_BYTES_MAX);
        if let Err(error) = self.sealer.borrow_mut().seal(kind, body, &mut datagram) {
            tracing::error!(%error, ?kind, "cannot seal a datagram (a bug in its producer)");
            metrics.send_failures.fetch_add(1, Ordering::Relaxed);
            return;
        }
        metrics.sent(kind.0, datagram.len());
        if self.outbox.try_send((to, datagram)).is_err() {
            metrics.send_failures.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn peer_addr(&self, peer: repl::types::Peer) -> Option<SocketAddr> {
        let base = *self.addrs.borrow().get(&peer.node)?;
        let port = base.port().checked_add(peer.shard)?;
        Some(SocketAddr::new(base.ip(), port))
    }

    /// Performs the replicator's pending actions.
    fn perform(self: &Rc<Self>, now: u64) {
        let actions: Vec<Action> = self.replicator.borrow_mut().actions().collect();
        for action in actions {
            match action {
                Action::Send { to, kind, body } => match self.peer_addr(to) {
                    Some(addr) => self.queue(Some(to.node), addr, Kind(kind), &body),
                    None => {
                        self.settings
                            .metrics
                            .send_failures
                            .fetch_add(1, Ordering::Relaxed);
                    }
                },
                Action::Apply { token, entries } => self.spawn_apply(token, entries),
                Action::Fetch { token, from, keys } => self.spawn_fetch(token, from, keys),
                Action::Pull { token, from, after } => self.spawn_pull(token, from, after),
                Action::Acked { write_id } => self.complete_ack(write_id, Ok(())),
                Action::AckTimeout {
                    write_id,
                    acked_peers,
                } => self.complete_ack(write_id, Err(acked_peers)),
            }
        }
        let _ = now;
    }

    fn complete_ack(&self, write_id: u64, outcome: Result<(), usize>) {
        if let Some(slot) = self.acks.borrow_mut().remove(&write_id) {
            slot.complete(outcome);
        }
    }

    fn spawn_apply(self: &Rc<Self>, token: u64, entries: Vec<repl::Entry>) {
        let this = self.clone();
        glommio::spawn_local(async move {
            let (Some(shard), Some(engine)) = (this.shard.upgrade(), this.engine()) else {
                return;
            };
            let batch: Vec<Entry> = entries.into_iter().map(to_storage).collect();
            if let Some(hlc) = batch.iter().map(|entry| entry.version.hlc).max() {
                shard.observe_hlc(hlc);
            }
            match engine.apply(batch).await {
                Ok(applied) => {
                    let now = this.settings.now_ms();
                    this.drive(|replicator, context| {
                        replicator.applied(now, token, &applied.applied, context);
                    });
                    this.perform(now);
                }
                Err(error) => {
                    tracing::warn!(shard = this.index, %error, "applying replicated entries failed");
                }
            }
        })
        .detach();
    }

    fn spawn_fetch(self: &Rc<Self>, token: u64, from: repl::types::Peer, keys: Vec<Vec<u8>>) {
        let this = self.clone();
        glommio::spawn_local(async move {
            let metrics = &this.settings.metrics;
            let entries = match this.peer_addr(from) {
                Some(_) if this.settings.faults.is_blocked(from.node) => Vec::new(),
                Some(addr) => match transfer::fetch(addr, &keys, &this.transfer).await {
                    Ok((entries, bytes)) => {
                        metrics
                            .transfer_bytes_received
                            .fetch_add(bytes, Ordering::Relaxed);
                        entries
                    }
                    Err(error) => {
                        tracing::debug!(%addr, %error, "fetch failed");
                        metrics.transfer_failures.fetch_add(1, Ordering::Relaxed);
                        Vec::new()
                    }
                },
                None => Vec::new(),
            };
            let now = this.settings.now_ms();
            let entries = entries.into_iter().map(to_repl).collect();
            this.drive(|replicator, context| replicator.fetched(now, token, entries, context));
            this.perform(now);
        })
        .detach();
    }

    fn spawn_pull(self: &Rc<Self>, token: u64, from: repl::types::Peer, after: Option<Vec<u8>>) {
        let this = self.clone();
        glommio::spawn_local(async move {
            let metrics = &this.settings.metrics;
            if after.is_none() {
                tracing::info!(shard = this.index, peer = from.node, peer_shard = from.shard,
                    "far behind a peer: bulk catch-up over the transfer stream");
            }
            let request = transfer::PullRequest {
                partitions: this.settings.partitions,
                shards: this.settings.shards,
                shard: this.index,
                after,
            };
            let (entries, more) = match this.peer_addr(from) {
                Some(_) if this.settings.faults.is_blocked(from.node) => (Vec::new(), false),
                Some(addr) => match transfer::pull(addr, &request, &this.transfer).await {
                    Ok((entries, more, bytes)) => {
                        metrics
                            .transfer_bytes_received
                            .fetch_add(bytes, Ordering::Relaxed);
                        (entries, more)
                    }
                    Err(error) => {
                        tracing::info!(%addr, %error, "bulk catch-up page failed; anti-entropy retries");
                        metrics.transfer_failures.fetch_add(1, Ordering::Relaxed);
                        (Vec::new(), false)
                    }
                },
                None => (Vec::new(), false),
            };
            let now = this.settings.now_ms();
            let entries = entries.into_iter().map(to_repl).collect();
            this.drive(|replicator, context| {
                replicator.pulled(now, token, entries, more, context);
            });
            this.perform(now);
        })
        .detach();
    }

    /// Local writes that are durable here (`(result index, entry)`): disseminate them, and with
    /// `ack = peers:k` wait until `k` peers hold them or the timeout turns the answer into a
    /// `NOACK` error (the write stays and keeps replicating).
    pub async fn replicate(&self, written: Vec<(usize, Entry)>, results: &mut [OpResult]) {
        let now = self.settings.now_ms();
        let AckMode::Peers(peers) = self.settings.ack else {
            let mut replicator = self.replicator.borrow_mut();
            for (_, entry) in written {
                replicator.write(now, to_repl(entry), Ack::Local);
            }
            return;
        };
        let timeout_ms = self.settings.ack_timeout_ms;
        let mut waits = Vec::with_capacity(written.len());
        {
            let mut replicator = self.replicator.borrow_mut();
            for (index, entry) in written {
                let write_id = self.write_id_next.get();
                self.write_id_next.set(write_id + 1);
                let slot = Rc::new(AckSlot::default());
                self.acks.borrow_mut().insert(write_id, slot.clone());
                let ack = Ack::Peers {
                    write_id,
                    peers,
                    timeout_ms,
                };
                replicator.write(now, to_repl(entry), ack);
                waits.push((index, slot));
            }
        }
        for (index, slot) in waits {
            if let Err(acked) = AckWait(slot).await {
                results[index] = OpResult::Error(format!(
                    "NOACK only {acked} of {peers} peers acknowledged within {timeout_ms} ms \
                     (the write is kept locally and will replicate)"
                ));
            }
        }
    }

    /// The member list as JSON (shard 0's view, this node first).
    pub fn members_json(&self) -> serde_json::Value {
        let local = self
            .membership
            .as_ref()
            .map(|membership| membership.borrow().local());
        let members = self.members.borrow();
        let rows: Vec<serde_json::Value> = local
            .iter()
            .chain(members.iter())
            .map(|member| {
                serde_json::json!({
                    "id": format!("{:016x}", member.id),
                    "addr": member.addr.to_string(),
                    "state": state_name(member.state),
                    "incarnation": member.incarnation,
                    "shards": member.shards,
                    "self": member.id == self.node_id,
                })
            })
            .collect();
        serde_json::json!({
            "node": format!("{:016x}", self.node_id),
            "cluster_id": format!("{:016x}", self.settings.cluster_id),
            "members": rows,
        })
    }

    /// Node-wide cluster counters.
    pub fn metrics(&self) -> &ClusterMetrics {
        &self.settings.metrics
    }

    /// Fault switches.
    pub fn faults(&self) -> &Faults {
        &self.settings.faults
    }

    /// Graceful leave (shard 0): tells the members this node is going away.
    pub fn leave(self: &Rc<Self>) {
        if let Some(membership) = &self.membership {
            let now = self.settings.now_ms();
            membership.borrow_mut().leave(now);
            self.drain_membership(now);
        }
    }
}

fn state_name(state: MemberState) -> &'static str {
    match state {
        MemberState::Alive => "alive",
        MemberState::Suspect => "suspect",
        MemberState::Dead => "dead",
        MemberState::Left => "left",
    }
}

fn event_name(event: &membership::MemberEvent) -> &'static str {
    use membership::MemberEvent as E;
    match event {
        E::Joined(_) => "joined",
        E::Updated(_) => "updated",
        E::Suspected(_) => "suspected",
        E::Recovered(_) => "recovered",
        E::Died(_) => "died",
        E::Left(_) => "left",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gossip_epoch_only_grows_even_when_the_clock_goes_back() {
        let dir = crate::test_tempdir();
        let path = dir.path().join(EPOCH_FILE);
        assert_eq!(next_epoch(&path, 1_000), Ok(1_000));
        assert_eq!(next_epoch(&path, 5_000), Ok(5_000));
        // The clock went back (or stands still): the epoch still grows.
        assert_eq!(next_epoch(&path, 4_000), Ok(5_001));
        assert_eq!(next_epoch(&path, 5_001), Ok(5_002));
        std::fs::write(&path, "garbage").expect("write");
        let error = next_epoch(&path, 9_000).expect_err("corrupt file");
        assert!(error.contains("not a gossip epoch"), "{error}");
    }
}
