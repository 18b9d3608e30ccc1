//! The queue of member updates awaiting (re)transmission, piggybacked on outgoing datagrams.
//!
//! One entry per member (a newer update replaces an older one). Entries are served
//! fewest-transmissions-first, newest first among equals (like memberlist's
//! `TransmitLimitedQueue`), and dropped after the retransmit limit λ·ceil(log10(N+1)).
//! **Invariant:** `order` has one entry per record in `records`, whose value is that record's
//! position; `index` finds every record by member id; length ≤ `capacity`.
//!
//! Layout: a full queue holds `broadcast_queue_max` (8,192) entries, and a simulator holds
//! one queue per node of a 10,000-node cluster, so records are packed (56 bytes) in one
//! vector, the order map carries only priorities and positions, and the id index is the
//! member table's open-addressing one: ≈ 100 bytes per entry instead of ≈ 220 with a map of
//! whole updates.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use super::codec::{Update, update_bytes};
use super::index::{IdIndex, Keyed};
use super::member::{Member, MemberState};
use crate::gossip::wire::NodeId;

/// (transmissions so far, reverse insertion number) packed as `transmissions << 48 | reverse`:
/// smaller is served first. Transmissions saturate at 2^16 − 1 (the limit is λ·log10 N).
type Priority = u64;

const REVERSE_BITS: u32 = 48;
const REVERSE_MASK: u64 = (1 << REVERSE_BITS) - 1;

fn priority(transmissions: u32, reverse: u64) -> Priority {
    (u64::from(transmissions.min(u32::from(u16::MAX))) << REVERSE_BITS) | (reverse & REVERSE_MASK)
}

fn transmissions(priority: Priority) -> u32 {
    (priority >> REVERSE_BITS) as u32
}

/// A queued update, 56 bytes: the wire fields of the update (an IPv6 address keeps no flow
/// info or scope id, which the encoding drops anyway) and its priority. A simulator holds
/// 10,000 queues of up to `broadcast_queue_max` entries; `Update` would take 64 + 16.
#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Copy, Debug)]
struct Queued {
    id: NodeId,
    origin: NodeId,
    priority: Priority,
    incarnation: u32,
    partitions: u32,
    ip: [u8; 16],
    port: u16,
    shards: u16,
    state: MemberState,
    ipv6: bool,
}

impl Keyed for Queued {
    fn key(&self) -> NodeId {
        self.id
    }
}

impl Queued {
    fn new(update: &Update, priority: Priority) -> Self {
        let member = &update.member;
        let (ip, ipv6) = match member.addr.ip() {
            IpAddr::V4(ip) => (ip.to_ipv6_mapped().octets(), false),
            IpAddr::V6(ip) => (ip.octets(), true),
        };
        Self {
            id: member.id,
            origin: update.origin,
            priority,
            incarnation: member.incarnation,
            partitions: member.partitions,
            ip,
            port: member.addr.port(),
            shards: member.shards,
            state: member.state,
            ipv6,
        }
    }

    fn update(&self) -> Update {
        let ip = Ipv6Addr::from(self.ip);
        let ip = match ip.to_ipv4_mapped() {
            Some(v4) if !self.ipv6 => IpAddr::V4(v4),
            _ => IpAddr::V6(ip),
        };
        let member = Member {
            id: self.id,
            addr: SocketAddr::new(ip, self.port),
            shards: self.shards,
            partitions: self.partitions,
            incarnation: self.incarnation,
            state: self.state,
        };
        Update {
            member,
            origin: self.origin,
        }
    }
}

/// The `order` value of the record at `at`.
fn order_value(at: usize, record: &Queued) -> u32 {
    let size = update_bytes(&record.update()).min(0xFF) as u32;
    ((at as u32) << 8) | size
}

fn position(value: u32) -> usize {
    (value >> 8) as usize
}

/// Serving order, queued records (one per member) and an id index over them.
#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
#[derive(Debug)]
pub(super) struct BroadcastQueue {
    /// Priority → (position in `records` << 8 | encoded size): scanning it touches only the
    /// records chosen.
    order: BTreeMap<Priority, u32>,
    records: Vec<Queued>,
    index: IdIndex,
    inserted: u64,
    capacity: usize,
    /// Reused by `take` (one call per datagram sent: no allocation for the choice).
    chosen: Vec<(Priority, u32)>,
    /// Updates evicted because the queue was full.
    pub(super) dropped: u64,
}

impl BroadcastQueue {
    pub(super) fn new(capacity: usize, hash_key: u64) -> Self {
        assert!(
            capacity > 0 && capacity < 1 << 23,
            "broadcast queue capacity {capacity} outside 1..2^23"
        );
        Self {
            order: BTreeMap::new(),
            records: Vec::new(),
            index: IdIndex::new(hash_key),
            inserted: 0,
            capacity,
            chosen: Vec::new(),
            dropped: 0,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.records.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Queues `update`, replacing any queued update about the same member.
    pub(super) fn push(&mut self, update: Update) {
        let node = update.member.id;
        self.inserted += 1;
        let priority = priority(0, u64::MAX - self.inserted);
        let record = Queued::new(&update, priority);
        let at = match self.index.get(node, &self.records) {
            Some(at) => {
                self.order.remove(&self.records[at].priority);
                self.records[at] = record;
                at
            }
            None => {
                let at = self.records.len();
                self.index.insert(node, at, &self.records);
                self.reserve_one();
                self.records.push(record);
                at
            }
        };
        self.order.insert(priority, order_value(at, &record));
        if self.records.len() > self.capacity {
            self.evict_last();
        }
        debug_assert_eq!(self.order.len(), self.records.len());
    }

    /// Grows `records` by doubling, but never past `capacity + 1` (no slack in full queues).
    fn reserve_one(&mut self) {
        if self.records.len() == self.records.capacity() {
            let wanted = (self.records.capacity() * 2).max(4).min(self.capacity + 1);
            self.records
                .reserve_exact(wanted.saturating_sub(self.records.len()).max(1));
        }
    }

    fn evict_last(&mut self) {
        if let Some((_, value)) = self.order.pop_last() {
            self.remove_record(position(value));
            self.dropped += 1;
        }
    }

    /// Drops `records[at]` (already out of `order`), moving the last record into its place.
    fn remove_record(&mut self, at: usize) {
        self.index.remove(self.records[at].id, &self.records);
        self.records.swap_remove(at);
        if let Some(moved) = self.records.get(at) {
            self.index.repoint(moved.id, self.records.len(), at);
            let value = order_value(at, moved);
            self.order.insert(moved.priority, value);
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
        for (&priority, &value) in self.order.iter().take(scan_max) {
            if chosen.len() >= count_max {
                break;
            }
            let size = (value & 0xFF) as usize;
            if size <= bytes_left {
                bytes_left -= size;
                chosen.push((priority, value));
            }
        }
        let mut updates = Vec::with_capacity(chosen.len());
        // Records are addressed by priority, not position: retiring one moves another.
        for &(old, _) in &chosen {
            let Some(value) = self.order.remove(&old) else {
                continue;
            };
            let at = position(value);
            updates.push(self.records[at].update());
            let sent = transmissions(old) + 1;
            if sent < transmit_limit {
                let next = priority(sent, old);
                self.records[at].priority = next;
                self.order.insert(next, value);
            } else {
                self.remove_record(at);
            }
        }
        self.chosen = chosen;
        debug_assert_eq!(self.order.len(), self.records.len());
        updates
    }

    /// Bytes held, for the memory figures.
    #[cfg(test)]
    pub(super) fn bytes(&self) -> usize {
        self.records.capacity() * size_of::<Queued>() + self.index.bytes()
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

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

    /// The queue as first written (a `BTreeMap` order plus a map of whole updates): the
    /// reference the compact queue must match call for call, evictions included.
    #[derive(Default)]
    struct Reference {
        order: BTreeMap<(u32, u64), NodeId>,
        entries: std::collections::HashMap<NodeId, ((u32, u64), Update)>,
        inserted: u64,
    }

    impl Reference {
        fn push(&mut self, update: Update, capacity: usize) {
            let node = update.member.id;
            if let Some((priority, _)) = self.entries.remove(&node) {
                self.order.remove(&priority);
            }
            self.inserted += 1;
            let priority = (0, u64::MAX - self.inserted);
            self.order.insert(priority, node);
            self.entries.insert(node, (priority, update));
            if self.entries.len() > capacity
                && let Some((_, node)) = self.order.pop_last()
            {
                self.entries.remove(&node);
            }
        }

        fn take(&mut self, count_max: usize, bytes_max: usize, limit: u32) -> Vec<Update> {
            let mut chosen = Vec::new();
            let mut bytes_left = bytes_max;
            for (priority, node) in self.order.iter().take(count_max.saturating_mul(2).max(8)) {
                if chosen.len() >= count_max {
                    break;
                }
                let size = update_bytes(&self.entries[node].1);
                if size <= bytes_left {
                    bytes_left -= size;
                    chosen.push((*priority, *node));
                }
            }
            let mut updates = Vec::new();
            for (priority, node) in chosen {
                self.order.remove(&priority);
                let Some((_, update)) = self.entries.remove(&node) else {
                    continue;
                };
                updates.push(update);
                if priority.0 + 1 < limit {
                    let next = (priority.0 + 1, priority.1);
                    self.order.insert(next, node);
                    self.entries.insert(node, (next, update));
                }
            }
            updates
        }
    }

    #[test]
    fn full_queue_is_compact() {
        let capacity = 8_192;
        let mut queue = BroadcastQueue::new(capacity, 3);
        for id in 0..2 * capacity as u64 {
            queue.push(update(id, 0));
        }
        assert_eq!(queue.len(), capacity);
        assert!(size_of::<Queued>() <= 56, "{} bytes", size_of::<Queued>());
        let per_entry = queue.bytes() / capacity;
        assert!(per_entry <= 80, "{per_entry} bytes per queued update");
    }

    #[test]
    fn matches_the_reference_queue_under_random_use() {
        let capacity = 40;
        let mut queue = BroadcastQueue::new(capacity, 9);
        let mut reference = Reference::default();
        let mut rng = 0x5EED_u64;
        let mut next = || {
            rng = rng.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            rng >> 33
        };
        for step in 0..20_000 {
            if next() % 3 == 0 {
                let count = (next() % 13) as usize;
                let bytes = (next() % 400) as usize;
                let limit = 1 + (next() % 6) as u32;
                let got = queue.take(count, bytes, limit);
                assert_eq!(got, reference.take(count, bytes, limit), "step {step}");
            } else {
                let mut update = update(next() % 70, next() as u32 % 5);
                if next() % 4 == 0 {
                    update.member.state = MemberState::Suspect;
                    update.origin = next();
                }
                if next() % 5 == 0 {
                    update.member.addr = SocketAddr::from(([0xfe80, 0, 0, 0, 0, 0, 0, 1], 9));
                }
                queue.push(update);
                reference.push(update, capacity);
            }
            assert_eq!(queue.len(), reference.entries.len(), "step {step}");
        }
        assert!(queue.dropped > 0, "the run must exercise eviction");
    }
}
