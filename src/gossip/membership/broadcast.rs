//! The queue of member updates awaiting (re)transmission, piggybacked on outgoing datagrams.
//!
//! One entry per member (a newer update replaces an older one). Entries are served
//! fewest-transmissions-first, newest first among equals (like memberlist's
//! `TransmitLimitedQueue`), and dropped after the retransmit limit λ·ceil(log10(N+1)).
//! **Invariant:** `order` and `entries` always hold the same members; length ≤ `capacity`.

use std::collections::BTreeMap;

use super::codec::{Update, update_bytes};
use super::index::IdHasherBuilder;
use crate::gossip::wire::NodeId;

/// (transmissions so far, reverse insertion number): smaller is served first.
type Priority = (u32, u64);

#[derive(Debug)]
pub(super) struct BroadcastQueue {
    /// Serving order, with what `take` needs to choose (member, encoded size) so that
    /// scanning it touches no other memory.
    order: BTreeMap<Priority, (NodeId, u8)>,
    entries: hashbrown::HashMap<NodeId, (Priority, Update), IdHasherBuilder>,
    inserted: u64,
    capacity: usize,
    /// Reused by `take` (one call per datagram sent: no allocation for the choice).
    chosen: Vec<(Priority, NodeId)>,
    /// Updates evicted because the queue was full.
    pub(super) dropped: u64,
}

impl BroadcastQueue {
    pub(super) fn new(capacity: usize, hash_key: u64) -> Self {
        assert!(capacity > 0, "broadcast queue needs capacity");
        Self {
            order: BTreeMap::new(),
            entries: hashbrown::HashMap::with_hasher(IdHasherBuilder::new(hash_key)),
            inserted: 0,
            capacity,
            chosen: Vec::new(),
            dropped: 0,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Queues `update`, replacing any queued update about the same member.
    pub(super) fn push(&mut self, update: Update) {
        let node = update.member.id;
        self.inserted += 1;
        let priority = (0, u64::MAX - self.inserted);
        if let Some((old, _)) = self.entries.insert(node, (priority, update)) {
            self.order.remove(&old);
        }
        let size = u8::try_from(update_bytes(&update)).unwrap_or(u8::MAX);
        self.order.insert(priority, (node, size));
        if self.entries.len() > self.capacity {
            self.evict_last();
        }
        debug_assert_eq!(self.order.len(), self.entries.len());
    }

    fn evict_last(&mut self) {
        if let Some((_, (node, _))) = self.order.pop_last() {
            self.entries.remove(&node);
            self.dropped += 1;
        }
    }

    /// Takes up to `count_max` updates whose encodings fit in `bytes_max`, counting one
    /// transmission for each and retiring those that reached `transmit_limit`.
    pub(super) fn take(
        &mut self,
        count_max: usize,
        bytes_max: usize,
        transmit_limit: u32,
    ) -> Vec<Update> {
        let mut chosen = std::mem::take(&mut self.chosen);
        chosen.clear();
        let mut bytes_left = bytes_max;
        // Look a little past the first misfit, but never scan the whole queue.
        let scan_max = count_max.saturating_mul(2).max(8);
        for (priority, &(node, size)) in self.order.iter().take(scan_max) {
            if chosen.len() >= count_max {
                break;
            }
            let size = usize::from(size);
            if size <= bytes_left {
                bytes_left -= size;
                chosen.push((*priority, node));
            }
        }
        let mut updates = Vec::with_capacity(chosen.len());
        for &(priority, node) in &chosen {
            let Some((_, size)) = self.order.remove(&priority) else {
                continue;
            };
            let transmissions = priority.0 + 1;
            if transmissions < transmit_limit {
                let next = (transmissions, priority.1);
                self.order.insert(next, (node, size));
                if let Some(entry) = self.entries.get_mut(&node) {
                    entry.0 = next;
                    updates.push(entry.1);
                }
            } else if let Some((_, update)) = self.entries.remove(&node) {
                updates.push(update);
            }
        }
        self.chosen = chosen;
        debug_assert_eq!(self.order.len(), self.entries.len());
        updates
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::gossip::membership::member::{Member, MemberState};

    fn update(id: NodeId, incarnation: u32) -> Update {
        let member = Member {
            id,
            addr: SocketAddr::from(([127, 0, 0, 1], 1)),
            shards: 1,
            partitions: 1,
            incarnation,
            state: MemberState::Alive,
        };
        Update { member, origin: 0 }
    }

    #[test]
    fn retransmits_up_to_limit_fewest_first() {
        let mut queue = BroadcastQueue::new(10, 1);
        queue.push(update(1, 0));
        queue.push(update(2, 0));
        let first = queue.take(1, 1_000, 2);
        assert_eq!(first[0].member.id, 2, "newest first among equals");
        let second = queue.take(1, 1_000, 2);
        assert_eq!(second[0].member.id, 1, "then the one sent fewer times");
        assert_eq!(queue.take(10, 1_000, 2).len(), 2);
        assert!(queue.is_empty(), "each sent twice, then retired");
    }

    #[test]
    fn replaces_per_member_and_is_bounded() {
        let mut queue = BroadcastQueue::new(2, 1);
        queue.push(update(1, 0));
        queue.push(update(1, 5));
        assert_eq!(queue.len(), 1);
        let taken = queue.take(5, 1_000, 9);
        assert_eq!(taken[0].member.incarnation, 5);
        queue.push(update(2, 0));
        queue.push(update(3, 0));
        assert_eq!(queue.len(), 2);
        assert_eq!(queue.dropped, 1, "the most-sent update (1) was evicted");
        assert!(
            queue.take(5, 25, 9).is_empty(),
            "26-byte updates do not fit in 25 bytes"
        );
    }
}
