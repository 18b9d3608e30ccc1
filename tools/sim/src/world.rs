//! The simulated world: nodes (replicator + in-memory store), the event loop, fault injection
//! and the measurements.

use std::collections::BTreeMap;
use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use starling::replication::dissemination::DisseminationConfig;
use starling::replication::types::sort_view;
use starling::replication::wire::{DATAGRAM_OVERHEAD_BYTES, entry_len, kind};
use starling::replication::{
    Ack, Action, AntiEntropyMode, Config, Context, Entry, MemStore, Peer, PeerInfo, Replicator,
    Store, Version,
};

use crate::members::{Kill, MemberNode};
use crate::network::{Network, NetworkConfig};
use crate::queue::Queue;
use crate::report::{Report, quantile};
use crate::snapshot::{self, SnapshotError, SnapshotPlan};

/// Everything a run depends on (with the seed, the whole run).
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq)]
pub struct SimConfig {
    /// Number of nodes.
    pub nodes: u32,
    /// Seed of the one RNG.
    pub seed: u64,
    /// Datagram loss probability.
    pub loss: f64,
    /// Datagram duplication probability.
    pub duplicate: f64,
    /// Mean one-way latency (ms).
    pub latency_ms: f64,
    /// Client writes, one every `write_interval_ms` from t = 1 s, each at a random live node.
    pub writes: u32,
    /// Spacing of writes (ms).
    pub write_interval_ms: u64,
    /// Key size of a write (>= 5).
    pub key_bytes: usize,
    /// Value size of a write.
    pub value_bytes: usize,
    /// 0: `ack = local`; k: `ack = peers:k`.
    pub ack_peers: usize,
    /// Timeout of `peers:k` acks (ms).
    pub ack_timeout_ms: u64,
    /// Split the cluster in two halves at this time (ms).
    pub partition_at_ms: Option<u64>,
    /// Heal the partition at this time (ms); the end of faults heals it anyway.
    pub heal_at_ms: Option<u64>,
    /// Crash probability per node per simulated second (restart after 2–20 s).
    pub crash_rate: f64,
    /// Faults (crashes, partitions) happen before this time (ms); then everything is healed
    /// and restarted, and the run continues until every write is everywhere or `settle_ms`
    /// more have passed.
    pub duration_ms: u64,
    /// Longest time after `duration_ms` to wait for convergence (ms).
    pub settle_ms: u64,
    /// Gossip tick (ms).
    pub tick_ms: u64,
    /// Anti-entropy interval per partition (ms).
    pub sync_interval_ms: u64,
    /// Partitions (fewer than production's 256 keeps a 10,000-node run small).
    pub partitions: u16,
    /// Dissemination fanout.
    pub fanout: usize,
    /// How long fresh writes wait to share a batch (ms).
    pub write_linger_ms: u64,
    /// How long a batch straight from its writer waits to share a datagram (ms).
    pub linger_ms: u64,
    /// How long hop acks for one parent may wait to share a datagram (ms).
    pub ack_linger_ms: u64,
    /// Unacked sends are repeated after this long (ms).
    pub retransmit_after_ms: u64,
    /// Entries a peer's partition must be ahead for a bulk catch-up.
    pub bulk_threshold: u64,
    /// Run the real SWIM/Lifeguard membership on every node (memory ~120·N² bytes: 12 GB at
    /// N = 10,000); without it every node uses one shared view of all nodes.
    pub membership: bool,
    /// Nodes killed (crashed until the end of faults) at `kill_at_ms`, to measure detection.
    pub kill: u32,
    /// When to kill them (ms).
    pub kill_at_ms: u64,
    /// How anti-entropy finds differences (CPISync sessions or element lists).
    pub anti_entropy: AntiEntropyMode,
    /// Print a progress line to stderr every this many simulated ms (0: never). Only output
    /// changes; the run is the same.
    pub progress_ms: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            nodes: 100,
            seed: 1,
            loss: 0.01,
            duplicate: 0.001,
            latency_ms: 20.0,
            writes: 100,
            write_interval_ms: 50,
            key_bytes: 16,
            value_bytes: 100,
            ack_peers: 0,
            ack_timeout_ms: 5_000,
            partition_at_ms: None,
            heal_at_ms: None,
            crash_rate: 0.0,
            duration_ms: 30_000,
            settle_ms: 120_000,
            tick_ms: 200,
            sync_interval_ms: 10_000,
            partitions: 16,
            fanout: 4,
            write_linger_ms: DisseminationConfig::default().write_linger_ms,
            linger_ms: DisseminationConfig::default().linger_ms,
            ack_linger_ms: DisseminationConfig::default().ack_linger_ms,
            retransmit_after_ms: DisseminationConfig::default().retransmit_after_ms,
            bulk_threshold: Config::default().bulk_threshold,
            membership: false,
            kill: 0,
            kill_at_ms: 5_000,
            anti_entropy: AntiEntropyMode::Cpisync,
            progress_ms: 0,
        }
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) enum Event {
    Tick {
        node: u32,
        epoch: u32,
    },
    /// The replicator's lingering rumors and acks are due (`Replicator::next_deadline_ms`).
    Flush {
        node: u32,
        epoch: u32,
        at_ms: u64,
    },
    MemberTimer {
        node: u32,
        epoch: u32,
        at_ms: u64,
    },
    Kill,
    Deliver {
        from: u32,
        to: u32,
        kind: u8,
        body: Vec<u8>,
    },
    Fetched {
        node: u32,
        epoch: u32,
        token: u64,
        entries: Vec<Entry>,
    },
    Pulled {
        node: u32,
        epoch: u32,
        token: u64,
        entries: Vec<Entry>,
        more: bool,
    },
    Write {
        index: u32,
    },
    Crash {
        node: u32,
    },
    Restart {
        node: u32,
    },
    Partition,
    Heal,
    EndFaults,
}

#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct Node {
    replicator: Replicator,
    store: MemStore,
    pub(crate) up: bool,
    pub(crate) epoch: u32,
    pub(crate) members: Option<MemberNode>,
    /// The earliest Flush event scheduled for this epoch.
    flush_at_ms: Option<u64>,
}

/// The view a node replicates over: its membership's, or the shared one.
fn view_of<'a>(members: Option<&'a MemberNode>, shared: &'a [PeerInfo]) -> &'a [PeerInfo] {
    members.map_or(shared, |members| &members.view)
}

#[derive(serde::Serialize, serde::Deserialize, Default)]
pub(crate) struct Counters {
    pub(crate) bytes_membership: u64,
    /// Datagram bytes (with header and MAC) by message kind.
    pub(crate) bytes_by_kind: BTreeMap<u8, u64>,
    pub(crate) false_positives: u64,
    /// Distinct live nodes that some node declared dead.
    pub(crate) falsely_dead: std::collections::BTreeSet<u32>,
    bytes_dissemination: u64,
    bytes_dissemination_body: u64,
    bytes_sync: u64,
    pull_bytes: u64,
    crashes: u64,
    events: u64,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Write {
    version: Version,
    at_ms: u64,
    acked: bool,
    last_receipt_ms: u64,
    holders: u32,
    /// Receipts at nodes that never crash in this run (what convergence is measured on).
    stable_holders: u32,
    stable_last_receipt_ms: u64,
}

/// The world of one run.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct World {
    pub(crate) config: SimConfig,
    pub(crate) rng: Xoshiro256PlusPlus,
    pub(crate) queue: Queue<Event>,
    network: Network,
    pub(crate) nodes: Vec<Node>,
    view: Vec<PeerInfo>,
    writes: Vec<Write>,
    now_us: u64,
    faults_over: bool,
    writes_missing: u64,
    pub(crate) counters: Counters,
    pub(crate) kills: Vec<Kill>,
    pub(crate) crash_counts: Vec<u32>,
    detection: (u64, u64),
    /// Nodes that never crash in this run.
    stable: Vec<bool>,
    kill_victims: Vec<u32>,
    pub(crate) partition_seen: bool,
    /// Wall seconds spent by the processes this run was resumed from (progress lines only).
    wall_before_s: f64,
}

/// Runs one simulation and reports what it measured.
pub fn run(config: &SimConfig) -> Report {
    let mut world = World::new(config.clone());
    world.schedule_initial();
    let Ok(()) = world.run_loop(None) else {
        unreachable!("a run without snapshots does no I/O")
    };
    world.report()
}

/// Runs one simulation, saving it as `plan` says (see [`crate::snapshot`]).
pub fn run_saving(config: &SimConfig, plan: &SnapshotPlan) -> Result<Report, SnapshotError> {
    snapshot::prepare(&plan.path)?;
    let mut world = World::new(config.clone());
    world.schedule_initial();
    world.run_loop(Some(plan))?;
    Ok(world.report())
}

/// Continues the run saved in `path` to its end; `progress_ms` replaces the saved progress
/// interval and `plan` says where to keep saving. The report is the one the uninterrupted run
/// would have printed.
pub fn resume(
    path: &Path,
    progress_ms: u64,
    plan: Option<&SnapshotPlan>,
) -> Result<Report, SnapshotError> {
    if let Some(plan) = plan {
        snapshot::prepare(&plan.path)?;
    }
    let mut world = snapshot::load(path)?;
    world.config.progress_ms = progress_ms;
    world.run_loop(plan)?;
    Ok(world.report())
}

impl World {
    fn new(config: SimConfig) -> World {
        assert!(config.nodes >= 2, "a simulation needs at least two nodes");
        assert!(config.key_bytes >= 5, "keys carry a 5-byte write index");
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(config.seed);
        let network = Network::new(NetworkConfig {
            loss: config.loss,
            duplicate: config.duplicate,
            latency_ms: config.latency_ms,
        });
        let mut view: Vec<PeerInfo> = (0..config.nodes)
            .map(|node| PeerInfo::new(u64::from(node), 1))
            .collect();
        sort_view(&mut view, u64::MAX);
        let config_nodes = config.nodes as usize;
        let nodes = (0..config.nodes)
            .map(|node| Node {
                replicator: new_replicator(&config, node, rng.random()),
                store: MemStore::new(config.partitions),
                up: true,
                epoch: 0,
                members: None,
                flush_at_ms: None,
            })
            .collect();
        World {
            config,
            rng,
            queue: Queue::default(),
            network,
            nodes,
            view,
            writes: Vec::new(),
            now_us: 0,
            faults_over: false,
            writes_missing: 0,
            counters: Counters::default(),
            kills: Vec::new(),
            crash_counts: vec![0; config_nodes],
            detection: (0, 0),
            stable: vec![true; config_nodes],
            kill_victims: Vec::new(),
            partition_seen: false,
            wall_before_s: 0.0,
        }
    }

    pub(crate) fn now_ms(&self) -> u64 {
        self.now_us / 1_000
    }

    fn schedule_initial(&mut self) {
        let tick_us = self.config.tick_ms * 1_000;
        for node in 0..self.config.nodes {
            let phase = self.rng.random_range(0..tick_us);
            self.queue.push(phase, Event::Tick { node, epoch: 0 });
        }
        for index in 0..self.config.writes {
            let at_ms = 1_000 + u64::from(index) * self.config.write_interval_ms;
            self.queue.push(at_ms * 1_000, Event::Write { index });
        }
        if let Some(at_ms) = self.config.partition_at_ms {
            self.queue.push(at_ms * 1_000, Event::Partition);
        }
        if let Some(at_ms) = self.config.heal_at_ms {
            self.queue.push(at_ms * 1_000, Event::Heal);
        }
        self.schedule_crashes();
        if self.config.kill > 0 {
            while (self.kill_victims.len() as u32) < self.config.kill.min(self.config.nodes - 1) {
                let node = self.rng.random_range(0..self.config.nodes);
                if !self.kill_victims.contains(&node) {
                    self.kill_victims.push(node);
                    self.stable[node as usize] = false;
                }
            }
            self.queue.push(self.config.kill_at_ms * 1_000, Event::Kill);
        }
        for node in 0..self.config.nodes {
            self.start_membership(node, false);
        }
        self.queue
            .push(self.config.duration_ms * 1_000, Event::EndFaults);
    }

    fn schedule_crashes(&mut self) {
        if self.config.crash_rate <= 0.0 {
            return;
        }
        let duration_s = self.config.duration_ms as f64 / 1_000.0;
        for node in 0..self.config.nodes {
            let mut at_s = exponential(&mut self.rng, self.config.crash_rate);
            while at_s < duration_s {
                let down_s = 2.0 + 18.0 * self.rng.random::<f64>();
                let back_s = (at_s + down_s).min(duration_s);
                self.stable[node as usize] = false;
                self.queue.push((at_s * 1e6) as u64, Event::Crash { node });
                self.queue
                    .push((back_s * 1e6) as u64, Event::Restart { node });
                at_s = back_s + exponential(&mut self.rng, self.config.crash_rate);
            }
        }
    }

    fn run_loop(&mut self, plan: Option<&SnapshotPlan>) -> Result<(), SnapshotError> {
        let end_us = (self.config.duration_ms + self.config.settle_ms) * 1_000;
        let mut started = std::time::Instant::now();
        let progress_us = self.config.progress_ms.saturating_mul(1_000);
        // The first multiple after the last event handled (a resumed run printed up to it).
        let mut next_progress_us = next_multiple(self.now_us, progress_us);
        let snapshot_us = plan.map_or(0, |plan| plan.every_ms.saturating_mul(1_000));
        // A resumed run starts just after its snapshot: the next one is a full interval away.
        let mut next_snapshot_us = next_multiple(self.queue.peek_at().unwrap_or(0), snapshot_us);
        while let Some(at_us) = self.queue.peek_at() {
            if at_us > end_us {
                break;
            }
            if let Some(plan) = plan.filter(|_| snapshot_us > 0 && at_us >= next_snapshot_us) {
                self.wall_before_s += started.elapsed().as_secs_f64();
                started = std::time::Instant::now();
                snapshot::save(self, &plan.path)?;
                next_snapshot_us = next_multiple(at_us, snapshot_us);
            }
            let Some((at_us, event)) = self.queue.pop() else {
                break;
            };
            if progress_us > 0 && at_us >= next_progress_us {
                self.print_progress(next_progress_us, started);
                next_progress_us += progress_us;
            }
            self.now_us = at_us;
            self.counters.events += 1;
            self.handle(event);
            let all_written = self.writes.len() == self.config.writes as usize;
            if self.faults_over && all_written && self.writes_missing == 0 {
                break;
            }
        }
        Ok(())
    }

    fn print_progress(&self, at_us: u64, started: std::time::Instant) {
        let queued: Vec<usize> = self
            .nodes
            .iter()
            .filter_map(|node| node.members.as_ref())
            .map(MemberNode::updates_pending)
            .collect();
        eprintln!(
            "progress: {} s simulated, {:.0} s wall, {} events, {} false positives ({} nodes), \
             membership updates queued per node mean {:.0} max {}",
            at_us / 1_000_000,
            self.wall_before_s + started.elapsed().as_secs_f64(),
            self.counters.events,
            self.counters.false_positives,
            self.counters.falsely_dead.len(),
            queued.iter().sum::<usize>() as f64 / queued.len().max(1) as f64,
            queued.iter().max().unwrap_or(&0),
        );
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Tick { node, epoch } => self.on_tick(node, epoch),
            Event::Flush { node, epoch, at_ms } => self.on_flush(node, epoch, at_ms),
            Event::MemberTimer { node, epoch, at_ms } => self.on_member_timer(node, epoch, at_ms),
            Event::Kill => self.kill(),
            Event::Deliver {
                from,
                to,
                kind,
                body,
            } => self.on_deliver(from, to, kind, &body),
            Event::Fetched {
                node,
                epoch,
                token,
                entries,
            } => self.drive(node, epoch, |replicator, now_ms, context| {
                replicator.fetched(now_ms, token, entries, context);
            }),
            Event::Pulled {
                node,
                epoch,
                token,
                entries,
                more,
            } => self.drive(node, epoch, |replicator, now_ms, context| {
                replicator.pulled(now_ms, token, entries, more, context);
            }),
            Event::Write { index } => self.on_write(index),
            Event::Crash { node } => self.crash(node),
            Event::Restart { node } => self.restart(node),
            Event::Partition => {
                self.partition_seen = true;
                self.network.partition(self.config.nodes / 2);
            }
            Event::Heal => self.network.heal(),
            Event::EndFaults => {
                self.detection = self.detection_summary();
                self.faults_over = true;
                self.network.heal();
                for node in 0..self.config.nodes {
                    self.restart(node);
                }
            }
        }
    }

    fn on_tick(&mut self, node: u32, epoch: u32) {
        let target = &self.nodes[node as usize];
        if !target.up || target.epoch != epoch {
            return;
        }
        self.drive(node, epoch, |replicator, now_ms, context| {
            replicator.tick(now_ms, context);
        });
        let next_us = self.now_us + self.config.tick_ms * 1_000;
        self.queue.push(next_us, Event::Tick { node, epoch });
    }

    /// Runs `step` on `node`'s replicator if the node is up in `epoch`, then performs what
    /// it asked for.
    fn drive(
        &mut self,
        node: u32,
        epoch: u32,
        step: impl FnOnce(&mut Replicator, u64, Context<'_>),
    ) {
        let now_ms = self.now_ms();
        let target = &mut self.nodes[node as usize];
        if !target.up || target.epoch != epoch {
            return;
        }
        let view = view_of(target.members.as_ref(), &self.view);
        let context = Context {
            store: &target.store,
            view,
        };
        step(&mut target.replicator, now_ms, context);
        self.drain(node);
    }

    fn on_flush(&mut self, node: u32, epoch: u32, at_ms: u64) {
        let target = &mut self.nodes[node as usize];
        if target.flush_at_ms != Some(at_ms) {
            return;
        }
        target.flush_at_ms = None;
        self.drive(node, epoch, |replicator, now_ms, context| {
            replicator.flush(now_ms, context);
        });
    }

    fn on_deliver(&mut self, from: u32, to: u32, kind_byte: u8, body: &[u8]) {
        let now_ms = self.now_ms();
        let target = &mut self.nodes[to as usize];
        if !target.up {
            return;
        }
        if kind_byte < kind::FIRST {
            self.on_member_datagram(from, to, kind_byte, body);
            return;
        }
        let view = view_of(target.members.as_ref(), &self.view);
        let context = Context {
            store: &target.store,
            view,
        };
        let peer = Peer {
            node: u64::from(from),
            shard: 0,
        };
        let result = target
            .replicator
            .receive(now_ms, peer, kind_byte, body, context);
        assert!(
            result.is_ok(),
            "a body the replicator itself encoded failed to decode: {result:?}"
        );
        self.drain(to);
    }

    fn on_write(&mut self, index: u32) {
        let live: Vec<u32> = (0..self.config.nodes)
            .filter(|&n| self.nodes[n as usize].up)
            .collect();
        let now_ms = self.now_ms();
        if live.is_empty() {
            return;
        }
        let origin = live[self.rng.random_range(0..live.len())];
        let version = Version {
            hlc: now_ms << 16,
            node: u64::from(origin),
        };
        let entry = Entry {
            key: write_key(index, self.config.key_bytes),
            value: Some(vec![index as u8; self.config.value_bytes]),
            version,
        };
        self.writes.push(Write {
            version,
            at_ms: now_ms,
            acked: self.config.ack_peers == 0,
            last_receipt_ms: now_ms,
            holders: 0,
            stable_holders: 0,
            stable_last_receipt_ms: now_ms,
        });
        self.writes_missing += u64::from(self.config.nodes);
        self.nodes[origin as usize]
            .store
            .apply(std::slice::from_ref(&entry));
        self.record_receipt(index, version, origin);
        let ack = if self.config.ack_peers == 0 {
            Ack::Local
        } else {
            Ack::Peers {
                write_id: u64::from(index),
                peers: self.config.ack_peers,
                timeout_ms: self.config.ack_timeout_ms,
            }
        };
        self.nodes[origin as usize]
            .replicator
            .write(now_ms, entry, ack);
        self.drain(origin);
    }

    fn record_receipt(&mut self, index: u32, version: Version, node: u32) {
        let now_ms = self.now_ms();
        let Some(write) = self.writes.get_mut(index as usize) else {
            return;
        };
        if write.version == version {
            write.holders += 1;
            write.last_receipt_ms = now_ms;
            self.writes_missing -= 1;
            if self.stable[node as usize] {
                write.stable_holders += 1;
                write.stable_last_receipt_ms = now_ms;
            }
        }
    }

    fn crash(&mut self, node: u32) {
        let target = &mut self.nodes[node as usize];
        if target.up {
            target.up = false;
            target.epoch += 1;
            target.members = None;
            self.counters.crashes += 1;
            self.crash_counts[node as usize] += 1;
        }
    }

    /// Kills `config.kill` distinct random live nodes until the end of faults.
    fn kill(&mut self) {
        let now_ms = self.now_ms();
        for node in std::mem::take(&mut self.kill_victims) {
            if self.nodes[node as usize].up {
                self.crash(node);
                self.kills.push(Kill {
                    node,
                    at_ms: now_ms,
                    declared: Default::default(),
                });
            }
        }
    }

    /// Restarts a crashed node: its data survived (the store is durable), its protocol state
    /// did not.
    fn restart(&mut self, node: u32) {
        let seed = self.rng.random();
        let target = &mut self.nodes[node as usize];
        if target.up {
            return;
        }
        target.up = true;
        target.epoch += 1;
        target.flush_at_ms = None;
        target.replicator = new_replicator(&self.config, node, seed);
        let phase = self.rng.random_range(0..self.config.tick_ms * 1_000);
        let epoch = target.epoch;
        self.queue
            .push(self.now_us + phase, Event::Tick { node, epoch });
        self.start_membership(node, true);
    }

    fn drain(&mut self, node: u32) {
        let actions: Vec<Action> = self.nodes[node as usize].replicator.actions().collect();
        for action in actions {
            self.perform(node, action);
        }
        self.schedule_flush(node);
    }

    /// One Flush event per node at its replicator's next deadline (rounded up to whole ms).
    fn schedule_flush(&mut self, node: u32) {
        let target = &mut self.nodes[node as usize];
        let Some(due_ms) = target.replicator.next_deadline_ms() else {
            return;
        };
        if !target.up || target.flush_at_ms.is_some_and(|at| at <= due_ms) {
            return;
        }
        let at_ms = due_ms.max(self.now_us.div_ceil(1_000));
        target.flush_at_ms = Some(at_ms);
        let epoch = target.epoch;
        self.queue
            .push(at_ms * 1_000, Event::Flush { node, epoch, at_ms });
    }

    fn perform(&mut self, node: u32, action: Action) {
        match action {
            Action::Send {
                to,
                kind: kind_byte,
                body,
            } => self.send(node, to, kind_byte, body),
            Action::Apply { token, entries } => self.apply(node, token, &entries),
            Action::Fetch { token, from, keys } => self.fetch(node, token, from, &keys),
            Action::Pull { token, from, after } => self.pull(node, token, from, after.as_deref()),
            Action::Acked { write_id } => {
                if let Some(write) = self.writes.get_mut(write_id as usize) {
                    write.acked = true;
                }
            }
            Action::AckTimeout { .. } => {}
        }
    }

    fn send(&mut self, from: u32, to: Peer, kind_byte: u8, body: Vec<u8>) {
        let bytes = (body.len() + DATAGRAM_OVERHEAD_BYTES) as u64;
        if kind_byte == kind::RUMOR || kind_byte == kind::RUMOR_ACK {
            self.counters.bytes_dissemination += bytes;
            self.counters.bytes_dissemination_body += body.len() as u64;
        } else {
            self.counters.bytes_sync += bytes;
        }
        self.transmit(from, to.node as u32, kind_byte, body);
    }

    /// Puts one datagram on the network.
    pub(crate) fn transmit(&mut self, from: u32, to_node: u32, kind_byte: u8, mut body: Vec<u8>) {
        *self.counters.bytes_by_kind.entry(kind_byte).or_default() +=
            (body.len() + DATAGRAM_OVERHEAD_BYTES) as u64;
        let copies = self.network.transmit(&mut self.rng, from, to_node);
        let mut delays = copies.delays_us().iter().copied().peekable();
        while let Some(delay_us) = delays.next() {
            // The last copy takes the body; earlier ones (duplicates) clone it.
            let body = if delays.peek().is_some() {
                body.clone()
            } else {
                std::mem::take(&mut body)
            };
            let event = Event::Deliver {
                from,
                to: to_node,
                kind: kind_byte,
                body,
            };
            self.queue.push(self.now_us + delay_us, event);
        }
    }

    fn apply(&mut self, node: u32, token: u64, entries: &[Entry]) {
        let now_ms = self.now_ms();
        let target = &mut self.nodes[node as usize];
        let newer = target.store.apply(entries);
        let view = view_of(target.members.as_ref(), &self.view);
        let context = Context {
            store: &target.store,
            view,
        };
        target.replicator.applied(now_ms, token, &newer, context);
        for (entry, newer) in entries.iter().zip(&newer) {
            if let (true, Some(index)) = (*newer, write_index(&entry.key)) {
                self.record_receipt(index, entry.version, node);
            }
        }
        self.drain(node);
    }

    /// A transfer-stream pull: reliable, two one-way delays, fails across a partition or when
    /// the source is down.
    fn fetch(&mut self, node: u32, token: u64, from: Peer, keys: &[Vec<u8>]) {
        let source = from.node as u32;
        let reachable = self.nodes[source as usize].up && self.network.connected(node, source);
        let entries = if reachable {
            keys.iter()
                .filter_map(|key| self.nodes[source as usize].store.entry(key))
                .collect()
        } else {
            Vec::new()
        };
        let delay_us = self.network.delay_us(&mut self.rng) + self.network.delay_us(&mut self.rng);
        let epoch = self.nodes[node as usize].epoch;
        self.queue.push(
            self.now_us + delay_us,
            Event::Fetched {
                node,
                epoch,
                token,
                entries,
            },
        );
    }

    /// Serves one bulk-pull page from `from`'s store (every node has one shard here), after
    /// a round trip, counting its bytes as transfer bytes.
    fn pull(&mut self, node: u32, token: u64, from: Peer, after: Option<&[u8]>) {
        const PAGE_ENTRIES: usize = 4_096;
        let source = from.node as u32;
        let reachable = self.nodes[source as usize].up && self.network.connected(node, source);
        let (entries, more) = if reachable {
            (self.nodes[source as usize].store).entries_page(after, &|_| true, PAGE_ENTRIES)
        } else {
            (Vec::new(), false)
        };
        self.counters.pull_bytes += entries
            .iter()
            .map(|e| (e.key.len() + e.value.as_ref().map_or(0, Vec::len) + 24) as u64)
            .sum::<u64>();
        let delay_us = self.network.delay_us(&mut self.rng) + self.network.delay_us(&mut self.rng);
        let epoch = self.nodes[node as usize].epoch;
        let event = Event::Pulled {
            node,
            epoch,
            token,
            entries,
            more,
        };
        self.queue.push(self.now_us + delay_us, event);
    }

    fn report(&self) -> Report {
        let nodes = u64::from(self.config.nodes);
        let end_ms = self.now_ms();
        let stable = self.stable.iter().filter(|&&stable| stable).count() as u32;
        let mut converge_ms: Vec<u64> = self
            .writes
            .iter()
            .map(|w| {
                if w.stable_holders == stable {
                    w.stable_last_receipt_ms - w.at_ms
                } else {
                    end_ms - w.at_ms
                }
            })
            .collect();
        let mut converge_rounds: Vec<u64> = converge_ms
            .iter()
            .map(|ms| ms.div_ceil(self.config.tick_ms))
            .collect();
        let writes = self.writes.len().max(1) as f64;
        let per_update = |bytes: u64| bytes as f64 / nodes as f64 / writes;
        let entry_bytes = entry_len(self.config.key_bytes, self.config.value_bytes) as u64;
        let lost = self
            .writes
            .iter()
            .filter(|w| w.acked && u64::from(w.holders) < nodes)
            .count() as u64;
        let stats = self.nodes.iter().map(|n| n.replicator.stats());
        let duplicates = stats.map(|s| s.entries_duplicate).sum();
        let retransmits = self
            .nodes
            .iter()
            .map(|n| n.replicator.dissemination().stats.retransmits)
            .sum();
        let bytes = per_update(self.counters.bytes_dissemination);
        let body = per_update(self.counters.bytes_dissemination_body);
        Report {
            suite: "sim",
            nodes: self.config.nodes,
            seed: self.config.seed,
            loss: self.config.loss,
            converge_rounds_p99: quantile(&mut converge_rounds, 0.99),
            converge_ms_p99: quantile(&mut converge_ms, 0.99),
            bytes_per_node_per_update: round1(bytes),
            detect_ms_max: self.detection.0,
            false_positives: self.counters.false_positives,
            lost_acked_writes: lost,
            converged: self.writes_missing == 0,
            writes: self.writes.len() as u64,
            writes_acked: self.writes.iter().filter(|w| w.acked).count() as u64,
            converge_rounds_p50: quantile(&mut converge_rounds, 0.5),
            converge_rounds_max: quantile(&mut converge_rounds, 1.0),
            converge_ms_p50: quantile(&mut converge_ms, 0.5),
            converge_ms_max: quantile(&mut converge_ms, 1.0),
            body_bytes_per_node_per_update: round1(body),
            entry_bytes_with_header: entry_bytes,
            bytes_ratio: round2(bytes / entry_bytes as f64),
            body_bytes_ratio: round2(body / entry_bytes as f64),
            sync_bytes_per_node_per_s: round1(
                self.counters.bytes_sync as f64 / nodes as f64 / (end_ms.max(1) as f64 / 1_000.0),
            ),
            membership_bytes_per_node_per_s: round1(
                self.counters.bytes_membership as f64
                    / nodes as f64
                    / (end_ms.max(1) as f64 / 1_000.0),
            ),
            undetected: self.detection.1,
            false_positive_nodes: self.counters.falsely_dead.len() as u64,
            bytes_per_node_per_s_by_kind: self
                .counters
                .bytes_by_kind
                .iter()
                .map(|(kind, bytes)| {
                    let rate = *bytes as f64 / nodes as f64 / (end_ms.max(1) as f64 / 1_000.0);
                    (format!("{kind:#04x}"), round1(rate))
                })
                .collect(),
            sync_sessions: self
                .nodes
                .iter()
                .map(|n| n.replicator.cpisync_stats().sessions_finished)
                .sum(),
            sync_sessions_failed: self
                .nodes
                .iter()
                .map(|n| {
                    let stats = n.replicator.cpisync_stats();
                    stats.sessions_abandoned + stats.oversize
                })
                .sum(),
            duplicates,
            retransmits,
            catch_ups: self
                .nodes
                .iter()
                .map(|n| n.replicator.stats().catch_ups)
                .sum(),
            pull_bytes: self.counters.pull_bytes,
            crashes: self.counters.crashes,
            simulated_ms: end_ms,
            events: self.counters.events,
        }
    }
}

fn round1(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

/// The first multiple of `step` above `at` (0 when `step` is 0: never).
fn next_multiple(at: u64, step: u64) -> u64 {
    if step == 0 {
        return 0;
    }
    (at / step + 1).saturating_mul(step)
}

fn exponential(rng: &mut Xoshiro256PlusPlus, rate: f64) -> f64 {
    -(1.0 - rng.random::<f64>()).ln() / rate
}

fn new_replicator(config: &SimConfig, node: u32, seed: u64) -> Replicator {
    let replication = Config {
        partitions: config.partitions,
        shards: 1,
        shard: 0,
        sync_interval_ms: config.sync_interval_ms,
        anti_entropy: config.anti_entropy,
        bulk_threshold: config.bulk_threshold,
        dissemination: DisseminationConfig {
            fanout: config.fanout,
            write_linger_ms: config.write_linger_ms,
            linger_ms: config.linger_ms,
            ack_linger_ms: config.ack_linger_ms,
            retransmit_after_ms: config.retransmit_after_ms,
            ..DisseminationConfig::default()
        },
    };
    Replicator::new(replication, u64::from(node), seed)
}

/// Key of write `index`: `w` + index (big-endian) padded with dots.
fn write_key(index: u32, key_bytes: usize) -> Vec<u8> {
    let mut key = Vec::with_capacity(key_bytes);
    key.push(b'w');
    key.extend_from_slice(&index.to_be_bytes());
    key.resize(key_bytes, b'.');
    key
}

fn write_index(key: &[u8]) -> Option<u32> {
    let bytes: [u8; 4] = key.get(1..5)?.try_into().ok()?;
    (key[0] == b'w').then(|| u32::from_be_bytes(bytes))
}
