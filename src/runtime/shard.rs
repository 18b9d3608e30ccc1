//! One shard: its storage engine, its hybrid logical clock, and its end of the channel mesh.
//!
//! A connection hands a batch of key operations split by owner to [`Shard::execute`]: the
//! local part runs on this shard, the others travel as one [`Message::Request`] per owning shard
//! and come back as one [`Message::Response`]. **Invariants:** only the owning shard assigns a
//! version to a key (its HLC is seeded with its engine's `hlc_max`, so versions of a key only
//! grow, also across restarts); a `Done` is reported only after the engine's group commit is
//! durable; the receiving loop of the mesh never awaits a send (it spawns), so two shards
//! answering each other cannot deadlock on full channels. A request of reads only is answered
//! in the receiving loop itself (`try_send`; a task only if the channel is full), saving a task
//! and a scheduling round per forwarded read batch.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use glommio::channels::channel_mesh::{Receivers, Senders};
use glommio::{GlommioError, ResourceType};

use crate::api::metrics::{NodeMetrics, ShardMetrics, StorageSample};
use crate::config::Config;
use crate::gossip::membership::Member;
use crate::replication::hlc::{Hlc, wall_clock_ms};
use crate::runtime::NodeState;
use crate::runtime::cluster::ClusterShard;
use crate::runtime::ops::{Message, Op, OpResult};
use crate::runtime::router::Router;
use crate::runtime::storage::{Engine, Entry, Limits, Stats, Version};

/// A shard's state, shared by its connection tasks (`Rc`: never leaves its executor).
pub struct Shard {
    /// This shard's index, `0..shards`.
    pub index: usize,
    /// Key → shard mapping.
    pub router: Router,
    /// The node id written into every version.
    pub node_id: u64,
    /// The node configuration.
    pub config: Arc<Config>,
    /// All shards' metrics.
    pub metrics: Arc<NodeMetrics>,
    /// State shared by all shards (stop flag, connection limit).
    pub node: Arc<NodeState>,
    /// When the node started.
    pub started: Instant,
    /// Connections executing a batch right now (shutdown waits for 0).
    pub busy: Cell<usize>,
    /// Set when the shard stops taking new requests.
    pub closing: Cell<bool>,
    engine: RefCell<Option<Rc<Engine>>>,
    limits: Limits,
    hlc: Cell<Hlc>,
    senders: Option<Senders<Message>>,
    pending: RefCell<HashMap<u64, Rc<ReplySlot>>>,
    next_request_id: Cell<u64>,
    cluster: RefCell<Option<Rc<ClusterShard>>>,
}

/// What [`Shard::new`] needs.
pub struct ShardParts {
    /// Shard index.
    pub index: usize,
    /// Router.
    pub router: Router,
    /// Node id.
    pub node_id: u64,
    /// Configuration.
    pub config: Arc<Config>,
    /// Metrics.
    pub metrics: Arc<NodeMetrics>,
    /// Shared node state.
    pub node: Arc<NodeState>,
    /// The opened engine.
    pub engine: Engine,
    /// The engine's limits.
    pub limits: Limits,
    /// This shard's senders (`None` with one shard).
    pub senders: Option<Senders<Message>>,
}

impl Shard {
    /// Assembles a shard around an opened engine.
    pub fn new(parts: ShardParts) -> Rc<Shard> {
        assert!(parts.index < parts.router.shards());
        let hlc = Hlc::new(parts.engine.hlc_max());
        Rc::new(Shard {
            index: parts.index,
            router: parts.router,
            node_id: parts.node_id,
            config: parts.config,
            metrics: parts.metrics,
            node: parts.node,
            started: Instant::now(),
            busy: Cell::new(0),
            closing: Cell::new(false),
            engine: RefCell::new(Some(Rc::new(parts.engine))),
            limits: parts.limits,
            hlc: Cell::new(hlc),
            senders: parts.senders,
            pending: RefCell::new(HashMap::new()),
            next_request_id: Cell::new(1),
            cluster: RefCell::new(None),
        })
    }

    /// This shard's metrics.
    pub fn shard_metrics(&self) -> &ShardMetrics {
        &self.metrics.shards[self.index]
    }

    /// Number of shards of the node.
    pub fn shards(&self) -> usize {
        self.router.shards()
    }

    fn engine(&self) -> Option<Rc<Engine>> {
        self.engine.borrow().clone()
    }

    /// The engine, while the shard is not shutting down (clustering reads and applies with it).
    pub fn engine_handle(&self) -> Option<Rc<Engine>> {
        self.engine()
    }

    /// Hooks clustering into this shard: local writes are handed to it after their commit.
    pub fn set_cluster(&self, cluster: Rc<ClusterShard>) {
        *self.cluster.borrow_mut() = Some(cluster);
    }

    /// This shard's clustering state, if the node is in a cluster.
    pub fn cluster(&self) -> Option<Rc<ClusterShard>> {
        self.cluster.borrow().clone()
    }

    /// Takes a replicated version into the clock, so later local writes order after it.
    pub fn observe_hlc(&self, hlc: u64) {
        let mut clock = self.hlc.get();
        clock.observe(hlc);
        self.hlc.set(clock);
    }

    /// Sends shard 0's member list to every other shard (dropped for a shard whose channel is
    /// full: the list is re-sent every second).
    pub fn broadcast_members(&self, members: &[Member]) {
        let Some(senders) = &self.senders else {
            return;
        };
        for target in (0..self.shards()).filter(|target| *target != self.index) {
            let _ = senders.try_send_to(target, Message::Members(members.to_vec()));
        }
    }

    /// Takes the engine out for closing; later operations fail with "shutting down".
    pub fn take_engine(&self) -> Option<Rc<Engine>> {
        self.engine.borrow_mut().take()
    }

    /// Runs `per_shard[i]` on shard `i` (here or over the mesh) and returns the results in the
    /// same shape. Remote requests are sent first so all shards work at once.
    pub async fn execute(self: &Rc<Self>, per_shard: Vec<Vec<Op>>) -> Vec<Vec<OpResult>> {
        assert_eq!(per_shard.len(), self.shards());
        let mut local = None;
        let mut waiting = Vec::new();
        for (target, ops) in per_shard.into_iter().enumerate() {
            if ops.is_empty() {
                continue;
            }
            if target == self.index {
                local = Some(ops);
            } else {
                let count = ops.len();
                waiting.push((target, count, self.forward(target, ops).await));
            }
        }
        let mut results: Vec<Vec<OpResult>> = (0..self.shards()).map(|_| Vec::new()).collect();
        if let Some(ops) = local {
            results[self.index] = self.run_ops(ops).await;
        }
        for (target, count, reply) in waiting {
            let answer = match reply {
                Some(reply) => reply.await,
                None => vec![
                    OpResult::Error(format!(
                        "ERR shard {target} is unavailable (shutting down)"
                    ));
                    count
                ],
            };
            assert_eq!(
                answer.len(),
                count,
                "shard {target} answered {} of {count} ops",
                answer.len()
            );
            results[target] = answer;
        }
        results
    }

    /// Sends ops to `target`; `None` if the mesh is closed.
    async fn forward(&self, target: usize, ops: Vec<Op>) -> Option<ReplyFuture> {
        let senders = self.senders.as_ref()?;
        let id = self.next_request_id.get();
        self.next_request_id.set(id + 1);
        let slot = Rc::new(ReplySlot {
            results: RefCell::default(),
            waker: RefCell::default(),
            sent: Instant::now(),
        });
        self.pending.borrow_mut().insert(id, slot.clone());
        self.shard_metrics()
            .ops_forwarded
            .fetch_add(ops.len() as u64, std::sync::atomic::Ordering::Relaxed);
        let message = Message::Request {
            from: self.index,
            id,
            ops,
        };
        if senders.send_to(target, message).await.is_err() {
            self.pending.borrow_mut().remove(&id);
            return None;
        }
        Some(ReplyFuture(slot))
    }

    /// Serves the mesh: requests from other shards run here, responses complete waiting batches.
    pub fn spawn_mesh_receivers(self: &Rc<Self>, mut receivers: Receivers<Message>) {
        for (_peer, receiver) in receivers.streams() {
            let shard = self.clone();
            glommio::spawn_local(async move {
                while let Some(message) = receiver.recv().await {
                    shard.on_message(message);
                }
            })
            .detach();
        }
    }

    fn on_message(self: &Rc<Self>, message: Message) {
        match message {
            Message::Request { from, id, ops } => {
                self.shard_metrics()
                    .ops_served_remote
                    .fetch_add(ops.len() as u64, std::sync::atomic::Ordering::Relaxed);
                if let Some(results) = self.run_reads(&ops) {
                    self.answer_now(from, id, results);
                    return;
                }
                let shard = self.clone();
                glommio::spawn_local(async move {
                    let results = shard.run_ops(ops).await;
                    if let Some(senders) = &shard.senders
                        && senders
                            .send_to(from, Message::Response { id, results })
                            .await
                            .is_err()
                    {
                        tracing::warn!(
                            shard = shard.index,
                            to = from,
                            "could not answer a forwarded request (mesh closed)"
                        );
                    }
                })
                .detach();
            }
            Message::Members(members) => {
                if let Some(cluster) = self.cluster() {
                    cluster.on_members(members);
                }
            }
            Message::Response { id, results } => {
                let slot = self.pending.borrow_mut().remove(&id);
                match slot {
                    Some(slot) => {
                        self.shard_metrics()
                            .forward_latency
                            .record(slot.sent.elapsed());
                        slot.complete(results);
                    }
                    None => {
                        tracing::error!(shard = self.index, id, "response for an unknown request");
                    }
                }
            }
        }
    }

    /// Answers a request made only of reads at once, without a task: reads never wait, so the
    /// answer can leave in the same poll that received the request. `None` if `ops` holds
    /// anything else (or the engine is gone).
    fn run_reads(&self, ops: &[Op]) -> Option<Vec<OpResult>> {
        if !ops
            .iter()
            .all(|op| matches!(op, Op::Get(_) | Op::Exists(_)))
        {
            return None;
        }
        let engine = self.engine()?;
        engine.prefetch(ops.iter().filter_map(Op::key));
        ops.iter().map(|op| read(&engine, op)).collect()
    }

    /// Sends a response without awaiting; only a full channel defers it to a task (the mesh
    /// receiver must never await a send).
    fn answer_now(self: &Rc<Self>, to: usize, id: u64, results: Vec<OpResult>) {
        let Some(senders) = &self.senders else {
            return;
        };
        match senders.try_send_to(to, Message::Response { id, results }) {
            Ok(()) => {}
            Err(GlommioError::WouldBlock(ResourceType::Channel(message))) => {
                let shard = self.clone();
                glommio::spawn_local(async move {
                    if let Some(senders) = &shard.senders
                        && senders.send_to(to, message).await.is_err()
                    {
                        tracing::warn!(
                            shard = shard.index,
                            to,
                            "could not answer a forwarded request (mesh closed)"
                        );
                    }
                })
                .detach();
            }
            Err(_) => {
                tracing::warn!(
                    shard = self.index,
                    to,
                    "could not answer a forwarded request (mesh closed)"
                );
            }
        }
    }

    fn next_version(&self, wall_ms: u64) -> Version {
        let mut hlc = self.hlc.get();
        let version = Version {
            hlc: hlc.tick(wall_ms),
            node: self.node_id,
        };
        self.hlc.set(hlc);
        version
    }

    /// Executes ops for keys this shard owns. Puts and deletes are grouped into as few engine
    /// applies (group commits) as the batch limits allow.
    pub async fn run_ops(&self, ops: Vec<Op>) -> Vec<OpResult> {
        let Some(engine) = self.engine() else {
            return vec![OpResult::Error("ERR shard is shutting down".into()); ops.len()];
        };
        engine.prefetch(ops.iter().filter_map(Op::key));
        let wall_ms = wall_clock_ms();
        let mut results = Vec::with_capacity(ops.len());
        let cluster = self.cluster();
        let mut writes = WriteGroup {
            keep: cluster.is_some(),
            ..WriteGroup::default()
        };
        let mut deleted: HashSet<Vec<u8>> = HashSet::new();
        for op in ops {
            if let Some(result) = read(&engine, &op) {
                results.push(result);
                continue;
            }
            let result = match op {
                Op::Get(_) | Op::Exists(_) => unreachable!("answered by `read` above"),
                Op::Put(key, value) => {
                    writes.push(
                        Entry {
                            key,
                            value: Some(value),
                            version: self.next_version(wall_ms),
                        },
                        results.len(),
                    );
                    OpResult::Done
                }
                Op::Del(key) => match live(&engine, &key) {
                    OpResult::Bool(true) if deleted.insert(key.clone()) => {
                        writes.push(
                            Entry {
                                key,
                                value: None,
                                version: self.next_version(wall_ms),
                            },
                            results.len(),
                        );
                        OpResult::Bool(true)
                    }
                    OpResult::Bool(_) => OpResult::Bool(false),
                    error => error,
                },
                Op::PutIf(key, value, condition) => {
                    // Conditional writes see every earlier write of this batch.
                    writes.apply(&engine, &self.limits, &mut results).await;
                    let entry = Entry {
                        key,
                        value: Some(value),
                        version: self.next_version(wall_clock_ms()),
                    };
                    let kept = writes.keep.then(|| entry.clone());
                    match engine.apply_if(entry, condition).await {
                        Ok(written) => {
                            if let (true, Some(entry)) = (written, kept) {
                                writes.written.push((results.len(), entry));
                            }
                            OpResult::Bool(written)
                        }
                        Err(error) => OpResult::Error(format!("ERR {error}")),
                    }
                }
                Op::Scan {
                    prefix,
                    after,
                    limit,
                } => match engine.scan(&prefix, after.as_deref(), limit) {
                    Ok(entries) => OpResult::Keys(entries.into_iter().map(|e| e.key).collect()),
                    Err(error) => OpResult::Error(format!("ERR {error}")),
                },
                Op::Stats => OpResult::Stats(Box::new(sample(&engine.stats(), engine.live_keys()))),
            };
            results.push(result);
        }
        writes.apply(&engine, &self.limits, &mut results).await;
        if let Some(cluster) = cluster
            && !writes.written.is_empty()
        {
            cluster
                .replicate(std::mem::take(&mut writes.written), &mut results)
                .await;
        }
        results
    }
}

/// The answer to a read (`GET`, `EXISTS`); `None` for any other op.
fn read(engine: &Engine, op: &Op) -> Option<OpResult> {
    Some(match op {
        // The value only: no copy of the key, nothing for a tombstone.
        Op::Get(key) => match engine.read(key, |_, value| value.map(<[u8]>::to_vec)) {
            Ok(value) => OpResult::Value(value.flatten()),
            Err(error) => OpResult::Error(format!("ERR {error}")),
        },
        Op::Exists(key) => live(engine, key),
        _ => return None,
    })
}

fn live(engine: &Engine, key: &[u8]) -> OpResult {
    match engine.read(key, |_, value| value.is_some()) {
        Ok(live) => OpResult::Bool(live == Some(true)),
        Err(error) => OpResult::Error(format!("ERR {error}")),
    }
}

/// Converts engine statistics into the metrics' sample type.
fn sample(stats: &Stats, live_keys: u64) -> StorageSample {
    StorageSample {
        live_keys,
        bytes_user: stats.bytes_user,
        bytes_written_wal: stats.bytes_written_wal,
        bytes_written_flush: stats.bytes_written_flush,
        bytes_written_compaction: stats.bytes_written_compaction,
        write_amplification: stats.write_amplification,
        memtable_bytes: stats.memtable_bytes,
        syncs: stats.syncs,
        writes_synced: stats.writes_synced,
        duplicates_skipped: stats.duplicates_skipped,
        flushes: stats.flushes,
        compactions: stats.compactions,
        levels: stats
            .levels
            .iter()
            .map(|l| (l.files as u64, l.bytes))
            .collect(),
        wal_write_latency: (&stats.wal_write_latency).into(),
        wal_sync_latency: (&stats.wal_sync_latency).into(),
    }
}

/// Writes collected from one batch, with the index of the result each one answers.
#[derive(Default)]
struct WriteGroup {
    entries: Vec<Entry>,
    result_indexes: Vec<usize>,
    /// Keep copies of durable writes in `written` (for replication).
    keep: bool,
    /// Durable writes and the index of the result each answers.
    written: Vec<(usize, Entry)>,
}

impl WriteGroup {
    fn push(&mut self, entry: Entry, result_index: usize) {
        self.entries.push(entry);
        self.result_indexes.push(result_index);
    }

    /// Applies everything collected (in chunks within the engine's batch limits) and turns the
    /// answers of failed chunks into errors. Returns when all of it is durable.
    async fn apply(&mut self, engine: &Engine, limits: &Limits, results: &mut [OpResult]) {
        let mut entries = std::mem::take(&mut self.entries).into_iter().peekable();
        let mut indexes = std::mem::take(&mut self.result_indexes).into_iter();
        while entries.peek().is_some() {
            let mut chunk = Vec::new();
            let mut chunk_bytes = 0;
            while let Some(entry) = entries.next_if(|e| {
                let bytes = e.key.len() + e.value.as_ref().map_or(0, Vec::len);
                chunk.is_empty()
                    || (chunk.len() < limits.batch_entries_max
                        && chunk_bytes + bytes <= limits.batch_bytes_max)
            }) {
                chunk_bytes += entry.key.len() + entry.value.as_ref().map_or(0, Vec::len);
                chunk.push(entry);
            }
            let chunk_indexes: Vec<usize> = indexes.by_ref().take(chunk.len()).collect();
            let kept = self.keep.then(|| chunk.clone());
            match engine.apply(chunk).await {
                Ok(_) => {
                    if let Some(kept) = kept {
                        self.written.extend(chunk_indexes.into_iter().zip(kept));
                    }
                }
                Err(error) => {
                    for index in chunk_indexes {
                        results[index] = OpResult::Error(format!("ERR write failed: {error}"));
                    }
                }
            }
        }
    }
}

/// Where a forwarded request's answer lands (single-threaded: shard-local only).
struct ReplySlot {
    results: RefCell<Option<Vec<OpResult>>>,
    waker: RefCell<Option<Waker>>,
    /// When the request left (for the forward round-trip histogram).
    sent: Instant,
}

impl ReplySlot {
    fn complete(&self, results: Vec<OpResult>) {
        *self.results.borrow_mut() = Some(results);
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
    }
}

/// Resolves when the owning shard has answered.
struct ReplyFuture(Rc<ReplySlot>);

impl Future for ReplyFuture {
    type Output = Vec<OpResult>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(results) = self.0.results.borrow_mut().take() {
            return Poll::Ready(results);
        }
        *self.0.waker.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }
}
