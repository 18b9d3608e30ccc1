//! Dissemination state of one shard: batches it holds and must pass on, sends awaiting a hop
//! ack, and recently seen delegations.
//!
//! The broadcast tree is *canonical*: the writer splits the whole ring (in its view) into
//! `fanout` parts by member count from ring position 0, and every holder hands each part of
//! its arc to the part's **first** live member, never a random one. For a given view the
//! tree below the writer's first hop is therefore the same for every batch, whoever wrote it,
//! so a node always receives from the same parent and sends to the same children. That is
//! what lets the replicator linger briefly and put several batches into one datagram per
//! child, and one ack datagram per parent (Plumtree's stable eager-push tree, built from the
//! ring instead of learned). A dead or silent first member is skipped after `attempts_max`
//! sends, exactly as before; views that differ between nodes only make the tree less stable,
//! never incomplete (each holder covers its whole arc in its own view).
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

use super::ring::{members_on_arc, split};
use super::types::{NodeId, Peer, PeerInfo, partition_of};
use super::wire::{Arc, Delegation, WireEntry};

/// Tuning of dissemination.
#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DisseminationConfig {
    /// Children a holder sends to per tick (at most; fewer when its arc has fewer members).
    pub fanout: usize,
    /// Sends of one delegation to one child before the child is given up.
    pub attempts_max: u32,
    /// Children given up per batch before the rest is left to anti-entropy.
    pub redelegations_max: u32,
    /// A send is repeated when no ack came within this long after it left (the replicator
    /// calls for it by its deadline): more than `ack_linger_ms` plus a round trip.
    pub retransmit_after_ms: u64,
    /// How long fresh local writes wait to share a batch.
    pub write_linger_ms: u64,
    /// How long a batch received straight from its writer waits for other writers' batches
    /// to the same child. These first hops are where the streams of all writers merge (the
    /// tree below is shared, see the module docs); deeper hops pass groups on as they came.
    pub linger_ms: u64,
    /// How long hop acks for one parent may wait to share a datagram.
    pub ack_linger_ms: u64,
    /// How long a received delegation is remembered to recognise retransmissions.
    pub seen_ttl_ms: u64,
    /// Most batches held at once; further received batches are acked but not passed on.
    pub held_batches_max: usize,
    /// Split a received batch's arc at once instead of at the next tick: each hop then costs
    /// one network delay instead of up to a tick (only the kept part waits for ticks).
    pub forward_on_receipt: bool,
}

impl Default for DisseminationConfig {
    fn default() -> Self {
        DisseminationConfig {
            fanout: 4,
            attempts_max: 4,
            redelegations_max: 8,
            retransmit_after_ms: 260,
            write_linger_ms: 10,
            linger_ms: 150,
            ack_linger_ms: 120,
            seen_ttl_ms: 60_000,
            held_batches_max: 4_096,
            forward_on_receipt: true,
        }
    }
}

/// A batch this shard must still pass on.
#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Debug)]
struct Held {
    entries: Vec<WireEntry>,
    /// Arcs still to cover.
    arcs: Vec<Arc>,
    /// This node wrote the batch and has not split the whole ring yet.
    own: bool,
    /// The node that wrote every entry, if one did. It sits somewhere in the canonical tree
    /// and has the batch already: a part that is just the writer is not sent to. (Leaving it
    /// out of the split instead would shift every boundary of its arcs, and with them the
    /// tree below: the writer's own batch reaches it only when it heads a larger part.)
    writer: Option<NodeId>,
    skip: Vec<NodeId>,
    redelegations: u32,
}

/// A send waiting for its hop ack.
#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Debug)]
struct Outstanding {
    to: Peer,
    delegation: Delegation,
    attempts: u32,
    sent_at_ms: u64,
}

/// Counters of dissemination, for metrics and the simulator.
#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
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
#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
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

    /// Takes on a batch this node wrote: every other member must get `entries`.
    pub fn originate(&mut self, batch: u64, entries: Vec<WireEntry>) {
        if entries.is_empty() {
            return;
        }
        if self.held.len() >= self.config.held_batches_max {
            self.stats.batches_dropped_full += 1;
            return;
        }
        let held = Held {
            entries,
            arcs: Vec::new(),
            own: true,
            writer: None,
            skip: Vec::new(),
            redelegations: 0,
        };
        self.held.insert(batch, held);
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
        let writer = entries[0].version.node;
        let writer = (entries.iter().all(|entry| entry.version.node == writer)).then_some(writer);
        let held = Held {
            entries,
            arcs: vec![arc],
            own: false,
            writer,
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

    /// When the earliest unacked send is due for a retransmission (or to be given up).
    pub fn next_retransmit_ms(&self) -> Option<u64> {
        let after_ms = self.config.retransmit_after_ms;
        self.outstanding
            .iter()
            .map(|send| send.sent_at_ms + after_ms)
            .min()
    }

    /// One tick: retransmits or gives up unacked sends, splits every held arc among children,
    /// and returns the delegations to send now.
    /// `me` is this node (the view may contain it; it is never a child).
    pub fn tick(&mut self, now_ms: u64, view: &[PeerInfo], me: NodeId) -> Vec<(Peer, Delegation)> {
        let position = super::types::ring_position(me);
        let mut sends = self.retransmit(now_ms);
        let batches: Vec<u64> = self.held.keys().copied().collect();
        let context = Delegate { view, me, position };
        for batch in batches {
            self.delegate(now_ms, batch, context, &mut sends);
        }
        let outstanding = &self.outstanding;
        self.held.retain(|batch, held| {
            held.own
                || !held.arcs.is_empty()
                || outstanding
                    .iter()
                    .any(|send| send.delegation.batch == *batch)
        });
        self.sweep_seen(now_ms);
        sends
    }

    /// Splits the arcs of `batch` now (see `forward_on_receipt`); returns the sends, which
    /// the caller puts on the wire at `send_at_ms` (now, or later if they linger): their
    /// retransmission is timed from then.
    pub fn forward_now(
        &mut self,
        send_at_ms: u64,
        batch: u64,
        view: &[PeerInfo],
        me: NodeId,
    ) -> Vec<(Peer, Delegation)> {
        let position = super::types::ring_position(me);
        let mut sends = Vec::new();
        let context = Delegate { view, me, position };
        self.delegate(send_at_ms, batch, context, &mut sends);
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
        sends: &mut Vec<(Peer, Delegation)>,
    ) {
        let Some(held) = self.held.get_mut(&batch) else {
            return;
        };
        let view = context.view;
        let fanout = self.config.fanout;
        let mut kept = Vec::new();
        let mut children = Vec::new();
        let mut arcs = std::mem::take(&mut held.arcs);
        if std::mem::take(&mut held.own) {
            // Our own write: the canonical split of the whole ring, ourselves included. A part
            // we head ourselves is covered like a received one, at once.
            let members = members_on_arc(view, Arc::FULL, &held.skip);
            for part in split(view, Arc::FULL, &members, fanout) {
                let first = view[part.members[0]];
                if first.node == context.me {
                    arcs.push(part.arc);
                } else {
                    children.push((first, part.arc));
                }
            }
        }
        for arc in arcs {
            // Members sharing our ring position (a 32-bit hash: it happens) are on neither
            // side below: each gets just that position, which it does not split further.
            let here = Arc {
                lo: context.position,
                hi: context.position.wrapping_add(1),
            };
            if arc != here && arc.contains(context.position) {
                for index in members_on_arc(view, here, &held.skip) {
                    let peer = view[index];
                    if peer.node != context.me && Some(peer.node) != held.writer {
                        children.push((peer, here));
                    }
                }
            }
            // Our own position splits the arc in two; a child's arc must not contain us, or
            // it would send the batch straight back. (As the first member of a canonical
            // part, the side before us is empty.)
            let sides: Vec<(Arc, Vec<usize>)> = arcs_without(arc, context.position)
                .into_iter()
                .map(|side| {
                    let members = members_on_arc(view, side, &held.skip);
                    let members = members.into_iter().filter(|&i| view[i].node != context.me);
                    (side, members.collect::<Vec<_>>())
                })
                .filter(|(_, members)| !members.is_empty())
                .collect();
            let shares = shares(
                &sides.iter().map(|(_, m)| m.len()).collect::<Vec<_>>(),
                fanout,
            );
            for ((side, members), share) in sides.into_iter().zip(shares) {
                if share == 0 {
                    kept.push(side);
                    continue;
                }
                for part in split(view, side, &members, share) {
                    // The first member, not a random one: the same child for every batch.
                    let first = view[part.members[0]];
                    if part.members.len() == 1 && Some(first.node) == held.writer {
                        continue;
                    }
                    children.push((first, part.arc));
                }
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
    me: NodeId,
    position: u32,
}

/// `arc` without the single ring position `position`: one or two arcs (none if the arc was
/// just that position).
pub fn arcs_without(arc: Arc, position: u32) -> Vec<Arc> {
    if !arc.contains(position) {
        return vec![arc];
    }
    let mut sides = Vec::with_capacity(2);
    if position.wrapping_add(1) != arc.hi {
        sides.push(Arc {
            lo: position.wrapping_add(1),
            hi: arc.hi,
        });
    }
    if arc.lo != position {
        sides.push(Arc {
            lo: arc.lo,
            hi: position,
        });
    }
    sides
}

/// Children per side: proportional to the members, at least one per side while the fanout
/// allows (a side with share 0 waits for the next tick).
fn shares(members: &[usize], fanout: usize) -> Vec<usize> {
    let total: usize = members.iter().sum();
    if total <= fanout {
        return members.to_vec();
    }
    let mut shares: Vec<usize> = members
        .iter()
        .map(|&count| ((count * fanout + total / 2) / total).clamp(1, fanout))
        .collect();
    while shares.iter().sum::<usize>() > fanout {
        let largest = (0..shares.len()).max_by_key(|&i| shares[i]).unwrap_or(0);
        shares[largest] -= 1;
    }
    shares
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Spreads one batch written by `origin` over `view` without loss; returns each node's
    /// parent. Panics if a node receives the batch twice.
    fn tree(view: &[PeerInfo], origin: NodeId) -> BTreeMap<NodeId, NodeId> {
        use super::super::types::Version;
        use super::super::wire::Payload;
        let config = DisseminationConfig::default();
        let entry = WireEntry {
            key: b"key".to_vec(),
            version: Version {
                hlc: 1 << 16,
                node: origin,
            },
            payload: Payload::Value(vec![7; 20]),
        };
        let mut writer = Dissemination::new(config.clone(), 8);
        writer.originate(42, vec![entry]);
        let mut queue: std::collections::VecDeque<(NodeId, Peer, Delegation)> =
            (writer.forward_now(0, 42, view, origin).into_iter())
                .map(|(to, delegation)| (origin, to, delegation))
                .collect();
        let mut parents = BTreeMap::new();
        while let Some((from, to, delegation)) = queue.pop_front() {
            assert!(
                parents.insert(to.node, from).is_none(),
                "{} got it twice",
                to.node
            );
            let mut holder = Dissemination::new(config.clone(), 8);
            holder.hold(delegation.batch, delegation.arc, delegation.entries);
            let sends = holder.forward_now(0, delegation.batch, view, to.node);
            queue.extend(sends.into_iter().map(|(next, d)| (to.node, next, d)));
        }
        parents
    }

    #[test]
    fn the_tree_is_the_same_for_every_writer() {
        let nodes: Vec<u64> = (0..300).map(|i| i * 7_919 + 13).collect();
        let mut view: Vec<PeerInfo> = nodes.iter().map(|&n| PeerInfo::new(n, 1)).collect();
        super::super::types::sort_view(&mut view, u64::MAX);
        let trees: Vec<_> = [nodes[0], nodes[150], nodes[299]]
            .into_iter()
            .map(|origin| (origin, tree(&view, origin)))
            .collect();
        for (origin, parents) in &trees {
            // Everyone but the writer, exactly once (checked in `tree`); the writer only if
            // it heads a part of more than itself.
            for node in &nodes {
                assert!(
                    parents.contains_key(node) || node == origin,
                    "{node} missed"
                );
            }
        }
        // Only the writer's own first hops differ: every other edge is shared by every
        // batch, which is what lingering needs.
        for (a, b) in [(0, 1), (0, 2), (1, 2)] {
            let (pa, pb) = (&trees[a].1, &trees[b].1);
            let same = pa
                .iter()
                .filter(|(node, parent)| pb.get(node) == Some(parent))
                .count();
            assert!(
                same + 12 >= nodes.len(),
                "only {same} of {} parents shared",
                nodes.len()
            );
        }
    }

    #[test]
    fn members_sharing_a_ring_position_are_reached() {
        // Two node ids whose 32-bit ring positions collide (birthday search).
        let mut seen = std::collections::HashMap::new();
        let (a, b) = (1u64..)
            .find_map(|node| {
                let position = super::super::types::ring_position(node);
                seen.insert(position, node).map(|other| (other, node))
            })
            .expect("a collision exists");
        let mut nodes: Vec<u64> = (0..60).map(|i| 1_000_000_007 * (i + 1)).collect();
        nodes.extend([a, b]);
        let mut view: Vec<PeerInfo> = nodes.iter().map(|&n| PeerInfo::new(n, 1)).collect();
        super::super::types::sort_view(&mut view, u64::MAX);
        for origin in [a, b, nodes[0], nodes[30]] {
            let parents = tree(&view, origin);
            for node in &nodes {
                assert!(
                    parents.contains_key(node) || *node == origin,
                    "{node} missed"
                );
            }
        }
    }

    #[test]
    fn shares_respect_fanout_and_sizes() {
        assert_eq!(shares(&[2, 1], 4), vec![2, 1]);
        assert_eq!(shares(&[100, 1], 4), vec![3, 1]);
        assert_eq!(shares(&[50, 50], 4), vec![2, 2]);
        assert_eq!(shares(&[10], 4), vec![4]);
        assert_eq!(shares(&[5, 5], 1), vec![1, 0]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn arcs_without_removes_exactly_one_position(lo in any::<u32>(), hi in any::<u32>(), position in any::<u32>(), probe in any::<u32>()) {
            let arc = Arc { lo, hi };
            let sides = arcs_without(arc, position);
            let covered = sides.iter().filter(|side| side.contains(probe)).count();
            let expected = usize::from(arc.contains(probe) && probe != position);
            prop_assert_eq!(covered, expected);
            for probe in [position.wrapping_sub(1), position, position.wrapping_add(1)] {
                let covered = sides.iter().filter(|side| side.contains(probe)).count();
                prop_assert_eq!(covered, usize::from(arc.contains(probe) && probe != position));
            }
        }
    }
}
