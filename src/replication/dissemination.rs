//! Dissemination state of one shard: batches it holds and must pass on, sends awaiting a hop
//! ack, and recently seen delegations.
//!
//! Loss repair is hop by hop: a child acks each batch once it is durable; a send without an ack
//! is repeated at the next ticks, at most `attempts_max` times, after which the child is
//! skipped and its arc handed to another member of it (bounded by `redelegations_max` per
//! batch). What still slips through (partitions, crashes of whole subtrees) anti-entropy
//! repairs.
//!
//! **Invariants:** every outstanding send belongs to a held batch; a batch is dropped only
//! when it has no arc left to cover and no outstanding send; all maps that are iterated are
//! ordered, so a seeded run is deterministic.

use std::collections::{BTreeMap, HashMap};

use rand::Rng;
use rand::rngs::SmallRng;

use super::ring::{members_on_arc, split};
use super::types::{NodeId, Peer, PeerInfo, partition_of};
use super::wire::{Arc, Delegation, WireEntry};

/// Tuning of dissemination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DisseminationConfig {
    /// Children a holder sends to per tick (at most; fewer when its arc has fewer members).
    pub fanout: usize,
    /// Sends of one delegation to one child before the child is given up.
    pub attempts_max: u32,
    /// Children given up per batch before the rest is left to anti-entropy.
    pub redelegations_max: u32,
    /// A send is repeated when no ack came within this long (checked at ticks).
    pub retransmit_after_ms: u64,
    /// How long a received delegation is remembered to recognise retransmissions.
    pub seen_ttl_ms: u64,
    /// Most batches held at once; further received batches are acked but not passed on.
    pub held_batches_max: usize,
}

impl Default for DisseminationConfig {
    fn default() -> Self {
        DisseminationConfig {
            fanout: 4,
            attempts_max: 4,
            redelegations_max: 8,
            retransmit_after_ms: 150,
            seen_ttl_ms: 60_000,
            held_batches_max: 4_096,
        }
    }
}

/// A batch this shard must still pass on.
#[derive(Clone, Debug)]
struct Held {
    entries: Vec<WireEntry>,
    arcs: Vec<Arc>,
    skip: Vec<NodeId>,
    redelegations: u32,
}

/// A send waiting for its hop ack.
#[derive(Clone, Debug)]
struct Outstanding {
    to: Peer,
    delegation: Delegation,
    attempts: u32,
    sent_at_ms: u64,
}

/// Counters of dissemination, for metrics and the simulator.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DisseminationStats {
    /// Delegations sent for the first time.
    pub delegations_sent: u64,
    /// Delegations sent again because no ack came.
    pub retransmits: u64,
    /// Children given up and their arcs handed on.
    pub redelegations: u64,
    /// Received delegations that were retransmissions of one already handled.
    pub duplicate_delegations: u64,
    /// Batches not passed on because the held-batch limit was reached.
    pub batches_dropped_full: u64,
}

/// Dissemination state of one shard.
#[derive(Debug)]
pub struct Dissemination {
    config: DisseminationConfig,
    partitions: u16,
    held: BTreeMap<u64, Held>,
    outstanding: Vec<Outstanding>,
    seen: HashMap<(u64, u32), u64>,
    seen_swept_at_ms: u64,
    /// Counters.
    pub stats: DisseminationStats,
}

impl Dissemination {
    /// Empty state; `partitions` is the cluster's partition count (for routing to shards).
    pub fn new(config: DisseminationConfig, partitions: u16) -> Dissemination {
        assert!(
            config.fanout >= 1 && config.attempts_max >= 1,
            "fanout and attempts >= 1"
        );
        Dissemination {
            config,
            partitions,
            held: BTreeMap::new(),
            outstanding: Vec::new(),
            seen: HashMap::new(),
            seen_swept_at_ms: 0,
            stats: DisseminationStats::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &DisseminationConfig {
        &self.config
    }

    /// Records a received delegation; false when it is a retransmission seen before (the
    /// caller then only acks it).
    pub fn first_sight(&mut self, now_ms: u64, batch: u64, arc: Arc) -> bool {
        let fresh = self
            .seen
            .insert((batch, arc.lo), now_ms + self.config.seen_ttl_ms)
            .is_none();
        if !fresh {
            self.stats.duplicate_delegations += 1;
        }
        fresh
    }

    /// Takes on a batch: its members on `arc` (other than this node) must get `entries`.
    pub fn hold(&mut self, batch: u64, arc: Arc, entries: Vec<WireEntry>) {
        if entries.is_empty() {
            return;
        }
        if let Some(held) = self.held.get_mut(&batch) {
            if !held.arcs.contains(&arc) {
                held.arcs.push(arc);
            }
            return;
        }
        if self.held.len() >= self.config.held_batches_max {
            self.stats.batches_dropped_full += 1;
            return;
        }
        let held = Held {
            entries,
            arcs: vec![arc],
            skip: Vec::new(),
            redelegations: 0,
        };
        self.held.insert(batch, held);
    }

    /// A hop ack from `from` for `batches`.
    pub fn acked(&mut self, from: Peer, batches: &[u64]) {
        self.outstanding
            .retain(|send| !(send.to == from && batches.contains(&send.delegation.batch)));
    }

    /// Number of batches held.
    pub fn held_len(&self) -> usize {
        self.held.len()
    }

    /// Number of sends awaiting an ack.
    pub fn outstanding_len(&self) -> usize {
        self.outstanding.len()
    }

    /// One tick: retransmits or gives up unacked sends, splits every held arc among children,
    /// and returns the delegations to send now.
    /// `position` is this node's ring position.
    pub fn tick(
        &mut self,
        now_ms: u64,
        view: &[PeerInfo],
        position: u32,
        rng: &mut SmallRng,
    ) -> Vec<(Peer, Delegation)> {
        let mut sends = self.retransmit(now_ms);
        let batches: Vec<u64> = self.held.keys().copied().collect();
        let context = Delegate { view, position };
        for batch in batches {
            self.delegate(now_ms, batch, context, rng, &mut sends);
        }
        let outstanding = &self.outstanding;
        self.held.retain(|batch, held| {
            !held.arcs.is_empty()
                || outstanding
                    .iter()
                    .any(|send| send.delegation.batch == *batch)
        });
        self.sweep_seen(now_ms);
        sends
    }

    fn retransmit(&mut self, now_ms: u64) -> Vec<(Peer, Delegation)> {
        let mut sends = Vec::new();
        let mut given_up = Vec::new();
        for send in &mut self.outstanding {
            if now_ms < send.sent_at_ms + self.config.retransmit_after_ms {
                continue;
            }
            if send.attempts >= self.config.attempts_max {
                given_up.push((send.to, send.delegation.batch, send.delegation.arc));
                continue;
            }
            send.attempts += 1;
            send.sent_at_ms = now_ms;
            self.stats.retransmits += 1;
            sends.push((send.to, send.delegation.clone()));
        }
        for (to, batch, arc) in given_up {
            self.outstanding
                .retain(|send| !(send.to == to && send.delegation.batch == batch));
            self.give_up(to.node, batch, arc);
        }
        sends
    }

    /// A child never acked: hand its arc to another member of it (bounded).
    fn give_up(&mut self, child: NodeId, batch: u64, arc: Arc) {
        let Some(held) = self.held.get_mut(&batch) else {
            return;
        };
        if held.redelegations >= self.config.redelegations_max {
            return;
        }
        held.redelegations += 1;
        self.stats.redelegations += 1;
        if !held.skip.contains(&child) {
            held.skip.push(child);
        }
        if !held.arcs.contains(&arc) {
            held.arcs.push(arc);
        }
    }

    fn delegate(
        &mut self,
        now_ms: u64,
        batch: u64,
        context: Delegate<'_>,
        rng: &mut SmallRng,
        sends: &mut Vec<(Peer, Delegation)>,
    ) {
        let Some(held) = self.held.get_mut(&batch) else {
            return;
        };
        let view = context.view;
        let arcs = std::mem::take(&mut held.arcs);
        let mut kept = Vec::new();
        let mut children = Vec::new();
        for arc in arcs {
            let members = members_on_arc(view, arc, &held.skip);
            let fanout = self.config.fanout;
            let keep = members.len() > fanout;
            let parts = split(view, arc, &members, if keep { fanout + 1 } else { fanout });
            // Keep the part around our own position, so no child's arc contains us (a child
            // would otherwise send the batch back).
            let mine = parts
                .iter()
                .position(|part| part.arc.contains(context.position));
            let kept_index = if keep { Some(mine.unwrap_or(0)) } else { None };
            for (index, part) in parts.into_iter().enumerate() {
                if kept_index == Some(index) {
                    kept.push(part.arc);
                    continue;
                }
                let child = view[part.members[rng.random_range(0..part.members.len())]];
                let arc = if mine == Some(index) {
                    exclude(part.arc, context.position, child.ring)
                } else {
                    part.arc
                };
                children.push((child, arc));
            }
        }
        held.arcs = kept;
        let entries = held.entries.clone();
        for (child, arc) in children {
            for (shard, routed) in route(&entries, child, self.partitions) {
                let to = Peer {
                    node: child.node,
                    shard,
                };
                let delegation = Delegation {
                    batch,
                    arc,
                    entries: routed,
                };
                self.stats.delegations_sent += 1;
                let send = Outstanding {
                    to,
                    delegation: delegation.clone(),
                    attempts: 1,
                    sent_at_ms: now_ms,
                };
                self.outstanding.push(send);
                sends.push((to, delegation));
            }
        }
    }

    fn sweep_seen(&mut self, now_ms: u64) {
        // Sweeping is O(seen); doing it once per ttl keeps the per-tick cost flat.
        if now_ms < self.seen_swept_at_ms + self.config.seen_ttl_ms {
            return;
        }
        self.seen_swept_at_ms = now_ms;
        self.seen.retain(|_, expiry_ms| *expiry_ms > now_ms);
    }
}

/// What `delegate` needs besides the state: the view and our own ring position.
#[derive(Copy, Clone)]
struct Delegate<'a> {
    view: &'a [PeerInfo],
    position: u32,
}

/// The side of `arc` (which contains `position`) that holds `member`, without `position`.
fn exclude(arc: Arc, position: u32, member: u32) -> Arc {
    let offset = |x: u32| x.wrapping_sub(arc.lo);
    if offset(member) > offset(position) {
        Arc {
            lo: position.wrapping_add(1),
            hi: arc.hi,
        }
    } else {
        Arc {
            lo: arc.lo,
            hi: position,
        }
    }
}

/// Groups `entries` by the shard of `peer` that owns each entry's partition.
fn route(entries: &[WireEntry], peer: PeerInfo, partitions: u16) -> Vec<(u16, Vec<WireEntry>)> {
    if peer.shards == 1 {
        return vec![(0, entries.to_vec())];
    }
    let mut by_shard: BTreeMap<u16, Vec<WireEntry>> = BTreeMap::new();
    for entry in entries {
        let shard = peer.owner_shard(partition_of(&entry.key, partitions));
        by_shard.entry(shard).or_default().push(entry.clone());
    }
    by_shard.into_iter().collect()
}
