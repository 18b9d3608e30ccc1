//! Model tests of the replicator: small clusters driven synchronously, with loss and dead
//! members, checked against "every live member ends with every write".

use std::collections::VecDeque;

use super::replicator::{Ack, Action, AntiEntropyMode, Config, Context, Replicator};
use super::store::{MemStore, Store};
use super::types::{Entry, Peer, PeerInfo, Version, sort_view};
use super::wire::{Message, kind};

const PARTITIONS: u16 = 8;
/// Entries per pull page in these tests (small, so a catch-up takes several pages).
const PULL_PAGE: usize = 300;

struct Node {
    replicator: Replicator,
    store: MemStore,
    view: Vec<PeerInfo>,
    up: bool,
}

/// A synchronous cluster: a FIFO of datagrams, a drop predicate, immediate apply and fetch.
struct Cluster {
    nodes: Vec<Node>,
    queue: VecDeque<(u64, Peer, u8, Vec<u8>)>,
    now_ms: u64,
    sent: u64,
    /// Datagrams handed to the network, per message kind.
    sent_by_kind: std::collections::BTreeMap<u8, u64>,
    drop_every: u64,
    fetches: u64,
    /// Pull pages served.
    pulls: u64,
    acked: Vec<u64>,
    timed_out: Vec<u64>,
}

fn config() -> Config {
    Config {
        partitions: PARTITIONS,
        sync_interval_ms: 1_000_000,
        ..Config::default()
    }
}

/// `config()` without lingering: every send leaves during the call that makes it.
fn unlingered() -> Config {
    let mut config = config();
    config.dissemination.write_linger_ms = 0;
    config.dissemination.linger_ms = 0;
    config.dissemination.ack_linger_ms = 0;
    config
}

impl Cluster {
    fn new(size: u64, config: &Config) -> Cluster {
        let all: Vec<PeerInfo> = (0..size).map(|node| PeerInfo::new(node, 1)).collect();
        let nodes = (0..size)
            .map(|node| {
                let mut view = all.clone();
                sort_view(&mut view, node);
                Node {
                    replicator: Replicator::new(config.clone(), node, node + 1),
                    store: MemStore::new(PARTITIONS),
                    view,
                    up: true,
                }
            })
            .collect();
        let queue = VecDeque::new();
        Cluster {
            nodes,
            queue,
            now_ms: 0,
            sent: 0,
            sent_by_kind: Default::default(),
            drop_every: 0,
            fetches: 0,
            pulls: 0,
            acked: vec![],
            timed_out: vec![],
        }
    }

    fn write(&mut self, node: usize, key: &[u8], value: Vec<u8>, ack: Ack) -> Entry {
        let version = Version {
            hlc: (self.now_ms + 1) << 16,
            node: node as u64,
        };
        let entry = Entry {
            key: key.to_vec(),
            value: Some(value),
            version,
        };
        let target = &mut self.nodes[node];
        target.store.apply(std::slice::from_ref(&entry));
        target.replicator.write(self.now_ms, entry.clone(), ack);
        entry
    }

    fn drain(&mut self, node: usize) {
        let actions: Vec<Action> = self.nodes[node].replicator.actions().collect();
        for action in actions {
            self.perform(node, action);
        }
    }

    fn perform(&mut self, node: usize, action: Action) {
        let now_ms = self.now_ms;
        match action {
            Action::Send { to, kind, body } => {
                self.sent += 1;
                *self.sent_by_kind.entry(kind).or_default() += 1;
                // A multiplicative hash of the send counter: pseudo-random, reproducible drops.
                let dropped = self.drop_every != 0
                    && (self.sent.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32)
                        .is_multiple_of(self.drop_every);
                if !dropped {
                    self.queue.push_back((node as u64, to, kind, body));
                }
            }
            Action::Apply { token, entries } => {
                let target = &mut self.nodes[node];
                let newer = target.store.apply(&entries);
                let context = Context {
                    store: &target.store,
                    view: &target.view,
                };
                target.replicator.applied(now_ms, token, &newer, context);
                self.drain(node);
            }
            Action::Fetch { token, from, keys } => {
                self.fetches += 1;
                let source = &self.nodes[from.node as usize].store;
                let entries = keys.iter().filter_map(|key| source.entry(key)).collect();
                let target = &mut self.nodes[node];
                let context = Context {
                    store: &target.store,
                    view: &target.view,
                };
                target.replicator.fetched(now_ms, token, entries, context);
                self.drain(node);
            }
            Action::Pull { token, from, after } => {
                self.pulls += 1;
                let source = &self.nodes[from.node as usize].store;
                let (entries, more) = source.entries_page(after.as_deref(), &|_| true, PULL_PAGE);
                let target = &mut self.nodes[node];
                let context = Context {
                    store: &target.store,
                    view: &target.view,
                };
                target
                    .replicator
                    .pulled(now_ms, token, entries, more, context);
                self.drain(node);
            }
            Action::Acked { write_id } => self.acked.push(write_id),
            Action::AckTimeout { write_id, .. } => self.timed_out.push(write_id),
        }
    }

    fn deliver_all(&mut self) {
        while let Some((from, to, kind, body)) = self.queue.pop_front() {
            let target = &mut self.nodes[to.node as usize];
            if !target.up {
                continue;
            }
            let context = Context {
                store: &target.store,
                view: &target.view,
            };
            let peer = Peer {
                node: from,
                shard: 0,
            };
            target
                .replicator
                .receive(self.now_ms, peer, kind, &body, context)
                .expect("valid body");
            self.drain(to.node as usize);
        }
    }

    /// One 200 ms gossip round: lingering sends leave, every node ticks, all is delivered.
    fn round(&mut self) {
        self.now_ms += 200;
        self.flush_due();
        for node in 0..self.nodes.len() {
            if self.nodes[node].up {
                let target = &mut self.nodes[node];
                let context = Context {
                    store: &target.store,
                    view: &target.view,
                };
                target.replicator.tick(self.now_ms, context);
                self.drain(node);
            }
        }
        self.deliver_all();
    }

    /// Advances the clock by `ms` without a tick: what is due is flushed and delivered
    /// (instantly: a zero-latency network).
    fn advance(&mut self, ms: u64) {
        self.now_ms += ms;
        self.flush_due();
        self.deliver_all();
    }

    /// Calls `flush` on every live node whose deadline has come.
    fn flush_due(&mut self) {
        for node in 0..self.nodes.len() {
            let target = &mut self.nodes[node];
            let due = target.replicator.next_deadline_ms();
            if target.up && due.is_some_and(|due| due <= self.now_ms) {
                let context = Context {
                    store: &target.store,
                    view: &target.view,
                };
                target.replicator.flush(self.now_ms, context);
                self.drain(node);
            }
        }
    }

    fn holders(&self, entry: &Entry) -> usize {
        self.nodes
            .iter()
            .filter(|node| node.up && node.store.entry(&entry.key).as_ref() == Some(entry))
            .count()
    }

    fn live(&self) -> usize {
        self.nodes.iter().filter(|node| node.up).count()
    }
}

#[test]
fn a_write_reaches_everyone_once_without_loss() {
    let mut cluster = Cluster::new(40, &config());
    let entry = cluster.write(3, b"k", vec![7; 50], Ack::Local);
    let mut rounds = 0;
    while cluster.holders(&entry) < 40 {
        cluster.round();
        rounds += 1;
        assert!(rounds <= 6, "not spread after {rounds} rounds");
    }
    // Each member received the batch exactly once: no duplicate work anywhere.
    let duplicates: u64 = cluster
        .nodes
        .iter()
        .map(|n| n.replicator.stats().entries_duplicate)
        .sum();
    let applied: u64 = cluster
        .nodes
        .iter()
        .map(|n| n.replicator.stats().entries_applied)
        .sum();
    assert_eq!((applied, duplicates), (39, 0));
    for _ in 0..3 {
        cluster.round();
    }
    assert!(
        cluster
            .nodes
            .iter()
            .all(|n| n.replicator.dissemination().held_len() == 0)
    );
}

#[test]
fn loss_is_repaired_by_retransmission_and_anti_entropy() {
    let mut cluster = Cluster::new(
        60,
        &Config {
            sync_interval_ms: 2_000,
            ..config()
        },
    );
    cluster.drop_every = 5;
    let entries: Vec<Entry> = (0..10)
        .map(|i| {
            cluster.write(
                i,
                format!("key{i}").as_bytes(),
                vec![i as u8; 30],
                Ack::Local,
            )
        })
        .collect();
    for _ in 0..12 {
        cluster.round();
    }
    // 20% loss: retransmissions alone deliver nearly everything within a dozen rounds ...
    let delivered: usize = entries.iter().map(|entry| cluster.holders(entry)).sum();
    assert!(delivered >= 590, "delivered {delivered} of 600");
    let retransmits: u64 = cluster
        .nodes
        .iter()
        .map(|n| n.replicator.dissemination().stats.retransmits)
        .sum();
    assert!(retransmits > 0);
    // ... and anti-entropy the rest.
    for _ in 0..60 {
        cluster.round();
    }
    for entry in &entries {
        assert_eq!(cluster.holders(entry), 60);
    }
}

#[test]
fn dead_children_are_skipped() {
    let mut cluster = Cluster::new(50, &config());
    for dead in [5, 17, 23, 31, 44] {
        cluster.nodes[dead].up = false;
    }
    let entry = cluster.write(0, b"k", vec![1; 10], Ack::Local);
    for _ in 0..25 {
        cluster.round();
    }
    assert_eq!(cluster.holders(&entry), cluster.live());
}

#[test]
fn duplicates_and_older_versions_cost_no_apply() {
    let mut cluster = Cluster::new(2, &unlingered());
    let entry = cluster.write(0, b"k", vec![1; 10], Ack::Local);
    cluster.now_ms += 200;
    let node = &mut cluster.nodes[0];
    node.replicator.tick(
        cluster.now_ms,
        Context {
            store: &node.store,
            view: &node.view,
        },
    );
    let rumor: Vec<(Peer, u8, Vec<u8>)> = node
        .replicator
        .actions()
        .filter_map(|action| match action {
            Action::Send { to, kind, body } => Some((to, kind, body)),
            _ => None,
        })
        .collect();
    assert_eq!(rumor.len(), 1);
    let (_, rumor_kind, body) = rumor[0].clone();
    assert_eq!(rumor_kind, kind::RUMOR);
    // Node 1 already has a newer version: the rumor is a duplicate, no Apply, but acked.
    let newer = Entry {
        version: Version {
            hlc: entry.version.hlc + 1,
            node: 1,
        },
        ..entry.clone()
    };
    let target = &mut cluster.nodes[1];
    target.store.apply(std::slice::from_ref(&newer));
    let from = Peer { node: 0, shard: 0 };
    for _ in 0..2 {
        let context = Context {
            store: &target.store,
            view: &target.view,
        };
        target
            .replicator
            .receive(cluster.now_ms, from, rumor_kind, &body, context)
            .expect("valid");
        let actions: Vec<Action> = target.replicator.actions().collect();
        assert!(actions.iter().all(|a| matches!(
            a,
            Action::Send {
                kind: kind::RUMOR_ACK,
                ..
            }
        )));
        assert_eq!(actions.len(), 1);
    }
    assert_eq!(target.replicator.stats().entries_duplicate, 1);
    assert_eq!(
        target
            .replicator
            .dissemination()
            .stats
            .duplicate_delegations,
        1
    );
    assert_eq!(target.store.entry(b"k"), Some(newer));
}

#[test]
fn peers_ack_and_timeout() {
    let mut cluster = Cluster::new(10, &config());
    cluster.write(
        0,
        b"a",
        vec![1],
        Ack::Peers {
            write_id: 11,
            peers: 3,
            timeout_ms: 2_000,
        },
    );
    for _ in 0..3 {
        cluster.round();
    }
    assert_eq!(cluster.acked, vec![11]);
    // Everyone else down: the write times out but stays written locally.
    for node in 1..10 {
        cluster.nodes[node].up = false;
    }
    cluster.write(
        0,
        b"b",
        vec![2],
        Ack::Peers {
            write_id: 12,
            peers: 1,
            timeout_ms: 1_000,
        },
    );
    for _ in 0..6 {
        cluster.round();
    }
    assert_eq!(cluster.timed_out, vec![12]);
    assert!(cluster.nodes[0].store.entry(b"b").is_some());
}

#[test]
fn large_values_are_announced_and_fetched() {
    let mut cluster = Cluster::new(12, &config());
    let entry = cluster.write(2, b"big", vec![9; 5_000], Ack::Local);
    for _ in 0..6 {
        cluster.round();
    }
    assert_eq!(cluster.holders(&entry), 12);
    assert_eq!(cluster.fetches, 11);
}

#[test]
fn anti_entropy_repairs_divergence() {
    for mode in [
        AntiEntropyMode::CpisyncKept,
        AntiEntropyMode::Cpisync,
        AntiEntropyMode::ElementList,
    ] {
        anti_entropy_repairs_divergence_with(mode);
    }
}

fn anti_entropy_repairs_divergence_with(mode: AntiEntropyMode) {
    let mut cluster = Cluster::new(
        3,
        &Config {
            sync_interval_ms: 400,
            anti_entropy: mode,
            ..config()
        },
    );
    // Written behind the replicator's back: only anti-entropy can spread these.
    let mut entries = Vec::new();
    for i in 0..300u64 {
        let entry = Entry {
            key: format!("key{i}").into_bytes(),
            value: if i % 10 == 0 { None } else { Some(vec![1; 20]) },
            version: Version {
                hlc: i + 1,
                node: i % 3,
            },
        };
        cluster.nodes[(i % 3) as usize]
            .store
            .apply(std::slice::from_ref(&entry));
        entries.push(entry);
    }
    // A stale version on node 1 must be replaced, not duplicated.
    let stale = Entry {
        version: Version { hlc: 0, node: 9 },
        ..entries[0].clone()
    };
    cluster.nodes[1].store.apply(std::slice::from_ref(&stale));
    for _ in 0..40 {
        cluster.round();
    }
    for entry in &entries {
        assert_eq!(cluster.holders(entry), 3, "{:?}", entry.key);
    }
    assert!(cluster.nodes.iter().all(|n| n.store.len() == 300));
    let equal: u64 = cluster
        .nodes
        .iter()
        .map(|n| n.replicator.stats().sync_equal)
        .sum();
    assert!(
        equal > 0,
        "converged partitions answer a digest with one message"
    );
    let finished: u64 = cluster
        .nodes
        .iter()
        .map(|n| n.replicator.cpisync_stats().sessions_finished)
        .sum();
    assert_eq!(finished > 0, mode != AntiEntropyMode::ElementList);
}

#[test]
fn malformed_bodies_change_nothing() {
    let mut cluster = Cluster::new(2, &config());
    let node = &mut cluster.nodes[1];
    let context = Context {
        store: &node.store,
        view: &node.view,
    };
    let from = Peer { node: 0, shard: 0 };
    assert!(
        node.replicator
            .receive(0, from, kind::RUMOR, &[1, 2, 3], context)
            .is_err()
    );
    assert!(
        node.replicator
            .receive(0, from, 0x7F, &[], context)
            .is_err()
    );
    assert_eq!(node.replicator.actions().count(), 0);
}

#[test]
fn entries_go_to_the_owner_shard_of_each_peer() {
    // Node 0 has one shard; node 1 has four: each partition lands on partition % 4.
    let sharded = Config {
        partitions: PARTITIONS,
        shards: 4,
        sync_interval_ms: 1_000_000,
        ..Config::default()
    };
    let mut origin = Replicator::new(unlingered(), 0, 1);
    let mut store = MemStore::new(PARTITIONS);
    let view = vec![PeerInfo::new(1, 4)];
    for i in 0..32u64 {
        let entry = Entry {
            key: format!("k{i}").into_bytes(),
            value: Some(vec![1]),
            version: Version { hlc: 1, node: 0 },
        };
        store.apply(std::slice::from_ref(&entry));
        origin.write(0, entry, Ack::Local);
    }
    origin.tick(
        200,
        Context {
            store: &store,
            view: &view,
        },
    );
    let mut shards_seen = Vec::new();
    for action in origin.actions() {
        let Action::Send { to, kind, body } = action else {
            continue;
        };
        let Ok(Message::Rumor(delegations)) = Message::decode(kind, &body) else {
            panic!("rumor")
        };
        let mut shard = Replicator::new(
            Config {
                shard: to.shard,
                ..sharded.clone()
            },
            1,
            2,
        );
        let empty = MemStore::new(PARTITIONS);
        let context = Context {
            store: &empty,
            view: &[],
        };
        shard
            .receive(200, Peer { node: 0, shard: 0 }, kind, &body, context)
            .expect("valid");
        assert_eq!(shard.stats().entries_misrouted, 0);
        assert!(
            delegations
                .iter()
                .flat_map(|d| &d.entries)
                .all(|e| shard.owns(super::types::partition_of(&e.key, PARTITIONS)))
        );
        shards_seen.push(to.shard);
    }
    shards_seen.sort_unstable();
    assert_eq!(shards_seen, vec![0, 1, 2, 3]);
}

/// Five writes at five nodes within 40 ms, spread with and without lingering: the same
/// delegations, each applied once, but lingering puts several into one datagram per child
/// and several acks into one datagram per parent (the canonical tree gives them the same
/// child and parent).
#[test]
fn lingering_shares_datagrams_between_batches() {
    let run = |config: Config| {
        let mut cluster = Cluster::new(30, &config);
        let mut entries = Vec::new();
        for writer in 0..5 {
            let key = format!("key{writer}");
            entries.push(cluster.write(writer * 6, key.as_bytes(), vec![1; 40], Ack::Local));
            cluster.advance(10);
        }
        for _ in 0..100 {
            cluster.advance(10);
        }
        for entry in &entries {
            assert_eq!(cluster.holders(entry), 30, "not everywhere: {entry:?}");
        }
        let applied: u64 = (cluster.nodes.iter())
            .map(|n| n.replicator.stats().entries_applied)
            .sum();
        assert_eq!(applied, 5 * 29, "each node applies each write once");
        // A writer that heads a part of the canonical tree gets its own batch back once.
        for (node, target) in cluster.nodes.iter().enumerate() {
            let duplicates = target.replicator.stats().entries_duplicate;
            let writer = node % 6 == 0 && node < 30;
            assert!(
                duplicates <= u64::from(writer),
                "node {node}: {duplicates} duplicates"
            );
        }
        let delegations: u64 = (cluster.nodes.iter())
            .map(|n| n.replicator.dissemination().stats.delegations_sent)
            .sum();
        let rumors = cluster.sent_by_kind[&kind::RUMOR];
        let acks = cluster.sent_by_kind[&kind::RUMOR_ACK];
        (delegations, rumors, acks)
    };
    let (delegations, rumors, acks) = run(config());
    let (eager_delegations, eager_rumors, eager_acks) = run(unlingered());
    // Without lingering every delegation is its own datagram and is acked by its own.
    assert_eq!(
        (eager_rumors, eager_acks),
        (eager_delegations, eager_delegations)
    );
    assert!(
        rumors * 10 < delegations * 8 && acks * 2 < delegations,
        "lingering shared too little: {delegations} delegations in {rumors} rumors, {acks} acks"
    );
}

/// A node that is empty while its peers hold 3,000 entries is far behind in every
/// partition: it pulls everything over (simulated) transfer pages instead of reconciling,
/// and ends with exactly its peers' data.
#[test]
fn a_far_behind_node_catches_up_by_bulk_pull() {
    let config = Config {
        sync_interval_ms: 1_000,
        bulk_threshold: 100,
        ..config()
    };
    let mut cluster = Cluster::new(3, &config);
    let entries: Vec<Entry> = (0..3_000u64)
        .map(|i| Entry {
            key: format!("key{i:05}").into_bytes(),
            value: (i % 10 != 0).then(|| vec![i as u8; 20]),
            version: Version {
                hlc: (i + 1) << 16,
                node: 0,
            },
        })
        .collect();
    for node in [0, 1] {
        cluster.nodes[node].store.apply(&entries);
    }
    for _ in 0..15 {
        cluster.round();
    }
    for entry in &entries {
        assert_eq!(
            cluster.nodes[2].store.entry(&entry.key).as_ref(),
            Some(entry)
        );
    }
    let late = cluster.nodes[2].replicator.stats();
    assert!(late.catch_ups >= 1, "no catch-up: {late:?}");
    // 3,000 entries in pages of 300, at most a couple of catch-ups' worth.
    assert!(
        late.pull_pages >= 10 && cluster.pulls <= 40,
        "{late:?}, {} pulls",
        cluster.pulls
    );
    assert_eq!(late.entries_applied, 3_000);
}

/// The peer that is far ahead answers a digest with its own, and that makes the node behind
/// pull (instead of the two starting a reconciliation that would decode thousands).
#[test]
fn a_peer_far_ahead_offers_its_digest_and_the_node_behind_pulls() {
    let config = Config {
        bulk_threshold: 10,
        ..unlingered()
    };
    let mut ahead_store = MemStore::new(PARTITIONS);
    for i in 0..400u64 {
        ahead_store.apply(&[Entry {
            key: format!("k{i}").into_bytes(),
            value: Some(vec![1]),
            version: Version { hlc: 1, node: 0 },
        }]);
    }
    let behind_store = MemStore::new(PARTITIONS);
    let mut ahead = Replicator::new(config.clone(), 0, 1);
    let mut behind = Replicator::new(config, 1, 2);
    let view_of = |node| vec![PeerInfo::new(node, 1)];
    let (ahead_view, behind_view) = (view_of(1), view_of(0));
    // The empty node starts a round: its digest says 0 entries.
    let digest = super::anti_entropy::digest(&behind_store, 0);
    let body = Message::SyncDigest {
        partition: 0,
        digest,
    };
    let (peer_behind, peer_ahead) = (Peer { node: 1, shard: 0 }, Peer { node: 0, shard: 0 });
    let context = Context {
        store: &ahead_store,
        view: &ahead_view,
    };
    (ahead.receive(0, peer_behind, body.kind(), &body.to_bytes(), context)).expect("valid");
    let replies: Vec<Action> = ahead.actions().collect();
    assert_eq!(ahead.stats().catch_up_offers, 1);
    let [Action::Send { kind, body, .. }] = replies.as_slice() else {
        panic!("one reply expected: {replies:?}");
    };
    assert_eq!(*kind, super::wire::kind::SYNC_DIGEST);
    let context = Context {
        store: &behind_store,
        view: &behind_view,
    };
    (behind.receive(0, peer_ahead, *kind, body, context)).expect("valid");
    let actions: Vec<Action> = behind.actions().collect();
    assert!(
        matches!(actions.as_slice(), [Action::Pull { from, after: None, .. }] if *from == peer_ahead),
        "{actions:?}"
    );
    assert_eq!(behind.stats().catch_ups, 1);
}

/// A catch-up that brought (almost) nothing is not repeated every interval: counts can stay
/// apart for reasons a pull does not fix, and each pull reads a whole shard.
#[test]
fn a_useless_catch_up_backs_off_and_a_useful_one_does_not() {
    use super::replicator::USELESS_CATCH_UP_BACKOFF;
    let config = Config {
        bulk_threshold: 10,
        sync_interval_ms: 1_000,
        ..unlingered()
    };
    let store = MemStore::new(PARTITIONS);
    let view = vec![PeerInfo::new(0, 1)];
    let ahead = Peer { node: 0, shard: 0 };
    let far_ahead = Message::SyncDigest {
        partition: 0,
        digest: super::wire::Digest { count: 400, sum: 1 },
    };
    let pulls = |replicator: &mut Replicator, now_ms: u64| -> Vec<u64> {
        let context = Context {
            store: &store,
            view: &view,
        };
        let body = far_ahead.to_bytes();
        (replicator.receive(now_ms, ahead, far_ahead.kind(), &body, context)).expect("valid");
        (replicator.actions())
            .filter_map(|action| match action {
                Action::Pull { token, .. } => Some(token),
                _ => None,
            })
            .collect()
    };
    let mut behind = Replicator::new(config, 1, 2);
    let context = Context {
        store: &store,
        view: &view,
    };
    // First catch-up: the peer serves nothing new.
    let tokens = pulls(&mut behind, 0);
    assert_eq!(tokens.len(), 1);
    behind.pulled(10, tokens[0], Vec::new(), false, context);
    assert!(
        pulls(&mut behind, 2_000).is_empty(),
        "retried after 2 intervals"
    );
    let later = 10 + USELESS_CATCH_UP_BACKOFF * 1_000;
    let tokens = pulls(&mut behind, later);
    assert_eq!(tokens.len(), 1, "not retried after the back-off");
    // This one brings 20 newer entries: the next may come one interval later.
    let entries: Vec<Entry> = (0..20u64)
        .map(|i| Entry {
            key: format!("n{i}").into_bytes(),
            value: Some(vec![1]),
            version: Version { hlc: 5, node: 0 },
        })
        .collect();
    behind.pulled(later, tokens[0], entries, false, context);
    let applies: Vec<(u64, usize)> = (behind.actions())
        .filter_map(|action| match action {
            Action::Apply { token, entries } => Some((token, entries.len())),
            _ => None,
        })
        .collect();
    let owned = applies.iter().map(|(_, n)| n).sum::<usize>();
    assert!(owned >= 10, "{applies:?}");
    for (token, count) in applies {
        behind.applied(later, token, &vec![true; count], context);
    }
    assert_eq!(pulls(&mut behind, later + 1_500).len(), 1);
}
