//! Sketch-based anti-entropy between replicators: convergence of diverged partitions over a
//! lossy, duplicating in-memory channel, and byte accounting (a round costs bytes in
//! proportion to the difference; equal partitions cost one digest).

use std::collections::{BTreeMap, VecDeque};

use super::anti_entropy;
use super::cpisync::RECONCILE;
use super::replicator::{Ack, Action, AntiEntropyMode, Config, Context, Replicator};
use super::store::{MemStore, Store};
use super::types::{Entry, Peer, PeerInfo, Version, sort_view};
use super::wire::{BODY_BYTES_MAX, kind};

struct Replica {
    replicator: Replicator,
    store: MemStore,
    view: Vec<PeerInfo>,
}

/// Replicas joined by a channel that drops every `drop_every`-th and duplicates every
/// `dup_every`-th datagram (pseudo-randomly but reproducibly), counting bytes per kind.
struct Net {
    replicas: Vec<Replica>,
    queue: VecDeque<(usize, Peer, u8, Vec<u8>)>,
    now_ms: u64,
    sent: u64,
    drop_every: u64,
    dup_every: u64,
    bytes: BTreeMap<u8, u64>,
    messages: BTreeMap<u8, u64>,
}

fn config(partitions: u16, mode: AntiEntropyMode) -> Config {
    Config {
        partitions,
        sync_interval_ms: 1_000,
        anti_entropy: mode,
        // Reconciliation is under test here, however large the difference.
        bulk_threshold: u64::MAX,
        ..Config::default()
    }
}

fn entry(key: &str, hlc: u64, node: u64, value: Option<&str>) -> Entry {
    Entry {
        key: key.as_bytes().to_vec(),
        value: value.map(|v| v.as_bytes().to_vec()),
        version: Version { hlc, node },
    }
}

fn hit(counter: u64, every: u64, salt: u64) -> bool {
    every != 0 && ((counter ^ salt).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40).is_multiple_of(every)
}

impl Net {
    fn new(size: usize, config: &Config) -> Net {
        let all: Vec<PeerInfo> = (0..size as u64).map(|n| PeerInfo::new(n, 1)).collect();
        let replicas = (0..size as u64)
            .map(|node| {
                let mut view = all.clone();
                sort_view(&mut view, node);
                Replica {
                    replicator: Replicator::new(config.clone(), node, 7 + node),
                    store: MemStore::new(config.partitions),
                    view,
                }
            })
            .collect();
        Net {
            replicas,
            queue: VecDeque::new(),
            now_ms: 0,
            sent: 0,
            drop_every: 0,
            dup_every: 0,
            bytes: BTreeMap::new(),
            messages: BTreeMap::new(),
        }
    }

    /// A local client write: durable in the store, then handed to the replicator.
    fn write(&mut self, node: usize, entry: Entry) {
        let replica = &mut self.replicas[node];
        replica.store.apply(std::slice::from_ref(&entry));
        replica.replicator.write(self.now_ms, entry, Ack::Local);
    }

    fn drain(&mut self, node: usize) {
        let actions: Vec<Action> = self.replicas[node].replicator.actions().collect();
        for action in actions {
            match action {
                Action::Send { to, kind, body } => {
                    assert!(
                        body.len() <= BODY_BYTES_MAX,
                        "oversize body of kind {kind:#x}"
                    );
                    self.sent += 1;
                    *self.bytes.entry(kind).or_default() += body.len() as u64;
                    *self.messages.entry(kind).or_default() += 1;
                    if hit(self.sent, self.drop_every, 0) {
                        continue;
                    }
                    if hit(self.sent, self.dup_every, 0x5555) {
                        self.queue.push_back((node, to, kind, body.clone()));
                    }
                    self.queue.push_back((node, to, kind, body));
                }
                Action::Apply { token, entries } => {
                    let replica = &mut self.replicas[node];
                    let newer = replica.store.apply(&entries);
                    let context = Context {
                        store: &replica.store,
                        view: &replica.view,
                    };
                    replica
                        .replicator
                        .applied(self.now_ms, token, &newer, context);
                    self.drain(node);
                }
                Action::Fetch { .. } => panic!("small values never need a fetch"),
                Action::Pull { .. } => panic!("bulk catch-up is off in these tests"),
                Action::Acked { .. } | Action::AckTimeout { .. } => {}
            }
        }
    }

    fn deliver_all(&mut self) {
        while let Some((from, to, kind, body)) = self.queue.pop_front() {
            let node = to.node as usize;
            let replica = &mut self.replicas[node];
            let context = Context {
                store: &replica.store,
                view: &replica.view,
            };
            let from = Peer {
                node: from as u64,
                shard: 0,
            };
            let result = replica
                .replicator
                .receive(self.now_ms, from, kind, &body, context);
            assert!(result.is_ok(), "well-formed bodies decode: {result:?}");
            self.drain(node);
        }
    }

    fn tick(&mut self, node: usize) {
        let replica = &mut self.replicas[node];
        let context = Context {
            store: &replica.store,
            view: &replica.view,
        };
        replica.replicator.tick(self.now_ms, context);
        self.drain(node);
    }

    fn step_all(&mut self, ms: u64) {
        self.now_ms += ms;
        for node in 0..self.replicas.len() {
            self.tick(node);
        }
        self.deliver_all();
    }

    fn converged(&self, partitions: u16) -> bool {
        (0..partitions).all(|p| {
            let first = anti_entropy::digest(&self.replicas[0].store, p);
            self.replicas
                .iter()
                .all(|r| anti_entropy::digest(&r.store, p) == first)
        })
    }

    fn reset_counters(&mut self) {
        self.bytes.clear();
        self.messages.clear();
    }

    fn bytes_of(&self, kind: u8) -> u64 {
        self.bytes.get(&kind).copied().unwrap_or(0)
    }

    fn messages_total(&self) -> u64 {
        self.messages.values().sum()
    }
}

fn entries_of(store: &MemStore, partitions: u16) -> Vec<Entry> {
    let mut all = Vec::new();
    for p in 0..partitions {
        store.for_each_in_partition(p, &mut |e| all.push(e.clone()));
    }
    all
}

/// Three replicas with missing entries on every side, newer versions and tombstones converge
/// over a channel that loses 1/6 and duplicates 1/5 of the datagrams, with local writes during
/// the run; with kept sketches the incremental indexes never drift from the stores.
fn lossy_convergence(mode: AntiEntropyMode) {
    const PARTITIONS: u16 = 4;
    let mut net = Net::new(3, &config(PARTITIONS, mode));
    net.drop_every = 6;
    net.dup_every = 5;
    for i in 0..300u64 {
        let key = format!("key{i}");
        for node in 0..3u64 {
            // Every replica misses some keys; the others hold different versions.
            if (i + node).is_multiple_of(4) {
                continue;
            }
            let hlc = 10 + (i * 7 + node * 3) % 5;
            let value = if (i + node).is_multiple_of(9) {
                None // a tombstone
            } else {
                Some("value")
            };
            let e = entry(&key, hlc, node, value);
            net.replicas[node as usize].store.apply(&[e]);
        }
    }
    assert!(!net.converged(PARTITIONS));
    let mut rounds = 0;
    while !net.converged(PARTITIONS) || rounds < 30 {
        if rounds == 10 {
            // Local writes once the indexes exist: they must be observed, not rebuilt.
            net.write(0, entry("key5", 1_000, 0, Some("new")));
            net.write(2, entry("fresh", 1_000, 2, None));
        }
        net.step_all(100);
        rounds += 1;
        assert!(rounds < 600, "no convergence in 60 s simulated");
    }
    let first = entries_of(&net.replicas[0].store, PARTITIONS);
    assert_eq!(first.len(), 301);
    for replica in &net.replicas {
        assert_eq!(entries_of(&replica.store, PARTITIONS), first);
        let stats = replica.replicator.cpisync_stats();
        assert!(stats.sessions_finished > 0);
        assert_eq!(stats.oversize, 0);
        if mode == AntiEntropyMode::CpisyncKept {
            assert_eq!(stats.index_rebuilds, 0, "observe keeps indexes in step");
            assert_eq!(replica.replicator.sketches_held(), usize::from(PARTITIONS));
        }
    }
    assert!(net.bytes_of(RECONCILE) > 0);
    let newest = entries_of(&net.replicas[1].store, PARTITIONS);
    let key5 = newest.iter().find(|e| e.key == b"key5");
    assert_eq!(key5.map(|e| e.version.hlc), Some(1_000));
}

#[test]
fn kept_sketches_converge_over_a_lossy_duplicating_channel() {
    lossy_convergence(AntiEntropyMode::CpisyncKept);
}

#[test]
fn per_session_sketches_converge_and_are_dropped() {
    lossy_convergence(AntiEntropyMode::Cpisync);
    let mut net = Net::new(2, &config(2, AntiEntropyMode::Cpisync));
    net.replicas[0].store.apply(&[entry("a", 1, 0, Some("x"))]);
    for _ in 0..20 {
        net.step_all(100);
    }
    assert!(net.converged(2));
    for replica in &net.replicas {
        assert_eq!(
            replica.replicator.sketches_held(),
            0,
            "no session, no sketch"
        );
    }
}

/// Two replicas sharing `common` entries of one partition, then diverged by `d` differences
/// (a third only on A, a third only on B, a third newer on A); returns the bytes of one
/// anti-entropy round started by A: (digest + reconcile bytes, shipped entry bytes).
fn one_round(common: u64, d: u64) -> (u64, u64, u64) {
    let mut net = Net::new(2, &config(1, AntiEntropyMode::CpisyncKept));
    let shared: Vec<Entry> = (0..common)
        .map(|i| entry(&format!("common{i:05}"), 5, 9, Some("0123456789")))
        .collect();
    for replica in &mut net.replicas {
        replica.store.apply(&shared);
    }
    for i in 0..d {
        let (node, e) = match i % 3 {
            0 => (0, entry(&format!("onlya{i}"), 7, 0, Some("0123456789"))),
            1 => (1, entry(&format!("onlyb{i}"), 7, 1, None)),
            _ => (
                0,
                entry(&format!("common{i:05}"), 8, 0, Some("newer-value")),
            ),
        };
        net.replicas[node].store.apply(&[e]);
    }
    // Only A ticks, once per sync interval: exactly one round of the single partition.
    net.tick(0);
    net.now_ms += 1_000;
    net.tick(0);
    net.deliver_all();
    assert!(net.converged(1), "one loss-free round repairs d = {d}");
    let sync = net.bytes_of(kind::SYNC_DIGEST) + net.bytes_of(RECONCILE);
    let entries = net.bytes_of(kind::SYNC_ENTRIES);
    let messages = net.messages_total();
    // A second round finds equal digests: one short message, nothing else.
    net.reset_counters();
    net.now_ms += 1_000;
    net.tick(0);
    net.deliver_all();
    assert_eq!(net.messages_total(), 1);
    assert!(net.bytes_of(kind::SYNC_DIGEST) > 0 && net.bytes_of(kind::SYNC_DIGEST) < 40);
    assert_eq!(net.replicas[1].replicator.stats().sync_equal, 1);
    (sync, entries, messages)
}

#[test]
fn round_bytes_grow_with_the_difference_not_the_partition() {
    let mut per_difference = Vec::new();
    for d in [3, 30, 300] {
        let (sync, entries, messages) = one_round(10_000, d);
        assert!(
            sync <= 40 * d + 2_000,
            "d = {d}: {sync} sync bytes over 10,000 common entries"
        );
        assert!(entries > 0 && messages > 2);
        per_difference.push((d, sync, entries));
    }
    // Element lists would cost 8 bytes per *entry* (80,000 here); sketches stay far below.
    let (_, sync_300, _) = per_difference[2];
    assert!(sync_300 < 80_000 / 4, "{per_difference:?}");
    println!("(d, sync bytes, entry bytes): {per_difference:?}");
}

#[test]
fn equal_partitions_cost_one_digest() {
    let mut net = Net::new(2, &config(1, AntiEntropyMode::CpisyncKept));
    let shared: Vec<Entry> = (0..1_000)
        .map(|i| entry(&format!("k{i}"), 3, 1, Some("v")))
        .collect();
    for replica in &mut net.replicas {
        replica.store.apply(&shared);
    }
    for _ in 0..5 {
        net.step_all(1_000);
    }
    let rounds: u64 = net
        .replicas
        .iter()
        .map(|r| r.replicator.stats().sync_rounds)
        .sum();
    assert!(rounds >= 8);
    assert_eq!(net.messages.get(&kind::SYNC_DIGEST), Some(&rounds));
    assert_eq!(net.messages_total(), rounds, "one message per round");
    for replica in &net.replicas {
        assert_eq!(
            replica.replicator.sketches_held(),
            0,
            "no session, no sketch yet"
        );
    }
}
