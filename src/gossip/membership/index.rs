//! Id lookups for the member table: an open-addressing id → slot index, and a seeded hasher
//! for the per-member maps (broadcast queue, suspicions).
//!
//! Why not `HashMap<NodeId, usize>`: every update a node receives costs one lookup, and in a
//! large cluster (the simulator runs 10,000 memberships in one process) the table is cold in
//! cache whenever a datagram arrives. The std map pays a SipHash, a control-byte group and a
//! 16-byte bucket before the slot itself can be read; this index pays one 4-byte probe (load
//! ≤ 1/2 keeps probe runs short) and then the slot, which the caller reads anyway, and takes
//! 8–16 bytes per member instead of ~28.
//!
//! Hashing: a folded 64×64→128-bit multiply of the id xor a per-node key derived from the
//! membership seed. Ids come only from authenticated datagrams, so flooding attacks need the
//! cluster key; the per-node key still keeps one crafted id set from colliding everywhere.

use std::hash::{BuildHasher, Hasher};

use super::Slot;
use crate::gossip::wire::NodeId;

/// A record the index can find by its node id.
pub(super) trait Keyed {
    fn key(&self) -> NodeId;
}

impl Keyed for Slot {
    fn key(&self) -> NodeId {
        self.member.id
    }
}

/// Marks an empty index entry.
const EMPTY: u32 = u32::MAX;

/// Odd constant of the multiplicative hash (2^64 / golden ratio).
const MULTIPLIER: u64 = 0x9E37_79B9_7F4A_7C15;

/// Folded multiply of `id ^ key`: both halves of the product mixed, so low and high bits are
/// usable as bucket numbers.
fn fold_hash(id: u64, key: u64) -> u64 {
    let product = u128::from(id ^ key) * u128::from(MULTIPLIER);
    (product as u64) ^ ((product >> 64) as u64)
}

/// A key for [`fold_hash`] derived from a seed without touching the membership's RNG (its
/// draws are part of the protocol's reproducible behaviour).
pub(super) fn key_from_seed(seed: u64) -> u64 {
    // SplitMix64 finaliser.
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Id → position in a record vector (the member slots, the queued updates). Ids are not
/// stored: a probe compares against the record.
#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
#[derive(Debug)]
pub(super) struct IdIndex {
    /// Slot numbers or `EMPTY`; length a power of two, at least twice `len`.
    table: Vec<u32>,
    len: usize,
    key: u64,
}

impl IdIndex {
    pub(super) fn new(key: u64) -> Self {
        Self {
            table: vec![EMPTY; 8],
            len: 0,
            key,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    fn home(&self, id: NodeId) -> usize {
        fold_hash(id, self.key) as usize & (self.table.len() - 1)
    }

    /// Table position holding `id`, if present.
    fn position<T: Keyed>(&self, id: NodeId, slots: &[T]) -> Option<usize> {
        let mask = self.table.len() - 1;
        let mut at = self.home(id);
        loop {
            let entry = self.table[at];
            if entry == EMPTY {
                return None;
            }
            if slots[entry as usize].key() == id {
                return Some(at);
            }
            at = (at + 1) & mask;
        }
    }

    /// The entry at `id`'s home position (a slot number, maybe another id's, or `u32::MAX`):
    /// a hint for warming caches, no answer.
    pub(super) fn first_probe(&self, id: NodeId) -> u32 {
        self.table[self.home(id)]
    }

    /// The slot of `id`.
    pub(super) fn get<T: Keyed>(&self, id: NodeId, slots: &[T]) -> Option<usize> {
        self.position(id, slots).map(|at| self.table[at] as usize)
    }

    /// Records that `id` (absent so far) lives in `slot`. `slots` is the table before the
    /// insertion or after it; only the other members' ids are read.
    pub(super) fn insert<T: Keyed>(&mut self, id: NodeId, slot: usize, slots: &[T]) {
        debug_assert!(self.position(id, slots).is_none(), "id {id} indexed twice");
        if (self.len + 1) * 2 > self.table.len() {
            self.grow(slots);
        }
        let slot = u32::try_from(slot).unwrap_or(EMPTY);
        assert!(slot != EMPTY, "member table beyond u32::MAX - 1 slots");
        let mask = self.table.len() - 1;
        let mut at = self.home(id);
        while self.table[at] != EMPTY {
            at = (at + 1) & mask;
        }
        self.table[at] = slot;
        self.len += 1;
    }

    /// Points `id` (present) at a new slot, after a slot moved.
    pub(super) fn repoint(&mut self, id: NodeId, old_slot: usize, new_slot: usize) {
        let mask = self.table.len() - 1;
        let mut at = self.home(id);
        // The slot vector already moved, so match on the old slot number, not the id.
        loop {
            let entry = self.table[at];
            if entry == EMPTY {
                debug_assert!(false, "id {id} not indexed");
                return;
            }
            if entry as usize == old_slot {
                self.table[at] = u32::try_from(new_slot).unwrap_or(EMPTY);
                return;
            }
            at = (at + 1) & mask;
        }
    }

    /// Forgets `id`; `slots` must still hold it. Backward-shift deletion keeps every other
    /// id reachable from its home position without tombstones.
    pub(super) fn remove<T: Keyed>(&mut self, id: NodeId, slots: &[T]) {
        let Some(mut hole) = self.position(id, slots) else {
            return;
        };
        let mask = self.table.len() - 1;
        let mut next = hole;
        loop {
            next = (next + 1) & mask;
            let entry = self.table[next];
            if entry == EMPTY {
                break;
            }
            let home = self.home(slots[entry as usize].key());
            // Move `entry` into the hole unless its home lies cyclically in (hole, next].
            let distance_home = next.wrapping_sub(home) & mask;
            let distance_hole = next.wrapping_sub(hole) & mask;
            if distance_home >= distance_hole {
                self.table[hole] = entry;
                hole = next;
            }
        }
        self.table[hole] = EMPTY;
        self.len -= 1;
    }

    fn grow<T: Keyed>(&mut self, slots: &[T]) {
        let doubled = vec![EMPTY; self.table.len() * 2];
        let old = std::mem::replace(&mut self.table, doubled);
        let mask = self.table.len() - 1;
        for entry in old.into_iter().filter(|&entry| entry != EMPTY) {
            let mut at = self.home(slots[entry as usize].key());
            while self.table[at] != EMPTY {
                at = (at + 1) & mask;
            }
            self.table[at] = entry;
        }
    }

    /// Sizes the table for `members` ids at once (no growth steps while bulk-loading).
    pub(super) fn reserve<T: Keyed>(&mut self, members: usize, slots: &[T]) {
        while members * 2 > self.table.len() {
            self.grow(slots);
        }
    }

    /// Bytes held, for the memory figures.
    #[cfg(test)]
    pub(super) fn bytes(&self) -> usize {
        self.table.capacity() * size_of::<u32>()
    }
}

/// `BuildHasher` for maps keyed by `NodeId`, with the same seeded fold hash.
#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Copy, Debug)]
pub(super) struct IdHasherBuilder {
    key: u64,
}

impl IdHasherBuilder {
    pub(super) fn new(key: u64) -> Self {
        Self { key }
    }
}

/// serde for a map keyed by `NodeId` with this hasher (the simulator's snapshots): its hash key
/// and its entries sorted by id. Nothing iterates these maps, so the rebuilt table's layout does
/// not matter for determinism.
#[cfg(feature = "snapshot")]
pub(super) mod suspicions_serde {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::IdHasherBuilder;
    use crate::gossip::wire::NodeId;

    type Map<V> = hashbrown::HashMap<NodeId, V, IdHasherBuilder>;

    pub(in crate::gossip::membership) fn serialize<V: Serialize, S: Serializer>(
        map: &Map<V>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let mut entries: Vec<(NodeId, &V)> = map.iter().map(|(id, value)| (*id, value)).collect();
        entries.sort_unstable_by_key(|(id, _)| *id);
        (map.hasher(), entries).serialize(serializer)
    }

    pub(in crate::gossip::membership) fn deserialize<'de, V, D>(
        deserializer: D,
    ) -> Result<Map<V>, D::Error>
    where
        V: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        let (hasher, entries): (IdHasherBuilder, Vec<(NodeId, V)>) =
            Deserialize::deserialize(deserializer)?;
        let mut map = Map::with_capacity_and_hasher(entries.len(), hasher);
        map.extend(entries);
        Ok(map)
    }
}

/// Hashes one `u64` (other inputs are folded in eight bytes at a time).
#[derive(Clone, Copy, Debug)]
pub(super) struct IdHasher {
    key: u64,
    state: u64,
}

impl BuildHasher for IdHasherBuilder {
    type Hasher = IdHasher;

    fn build_hasher(&self) -> IdHasher {
        IdHasher {
            key: self.key,
            state: 0,
        }
    }
}

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.state
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.state = fold_hash(self.state ^ value, self.key);
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::gossip::membership::member::{Member, MemberState};

    fn slot(id: NodeId) -> Slot {
        Slot {
            member: Member {
                id,
                addr: SocketAddr::from(([10, 0, 0, 1], 1)),
                shards: 1,
                partitions: 1,
                incarnation: 0,
                state: MemberState::Alive,
            },
            since_ms: 0,
        }
    }

    /// Mirrors `Membership`'s use: push + insert, swap_remove + remove/repoint.
    #[test]
    fn finds_every_id_through_inserts_and_swap_removes() {
        // A tiny key space with a fixed key forces long probe runs and wrap-around.
        let mut index = IdIndex::new(7);
        let mut slots: Vec<Slot> = Vec::new();
        let mut rng = 0x1234_5678_u64;
        for step in 0..4_000u64 {
            rng = key_from_seed(rng);
            let id = rng % 300;
            match index.get(id, &slots) {
                None => {
                    index.insert(id, slots.len(), &slots);
                    slots.push(slot(id));
                }
                Some(at) if step % 3 != 0 => assert_eq!(slots[at].member.id, id),
                Some(at) => {
                    index.remove(id, &slots);
                    slots.swap_remove(at);
                    if let Some(moved) = slots.get(at) {
                        index.repoint(moved.member.id, slots.len(), at);
                    }
                }
            }
            assert_eq!(index.len(), slots.len());
        }
        for (at, slot) in slots.iter().enumerate() {
            assert_eq!(index.get(slot.member.id, &slots), Some(at));
        }
        let present: Vec<NodeId> = slots.iter().map(|slot| slot.member.id).collect();
        for id in (0..300).filter(|id| !present.contains(id)) {
            assert_eq!(index.get(id, &slots), None, "id {id} was removed");
        }
        assert!(index.table.len() >= 2 * index.len());
    }

    #[test]
    fn hasher_is_keyed_and_spreads_sequential_ids() {
        let builder = IdHasherBuilder::new(key_from_seed(1));
        let other = IdHasherBuilder::new(key_from_seed(2));
        assert_ne!(builder.hash_one(5u64), other.hash_one(5u64));
        // Sequential ids land in distinct buckets of a small table most of the time.
        let buckets: std::collections::BTreeSet<u64> =
            (0..64u64).map(|id| builder.hash_one(id) & 127).collect();
        assert!(buckets.len() > 40, "{} distinct buckets", buckets.len());
    }
}
