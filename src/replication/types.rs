//! The entry and version types replication moves around, and the peer/address types of the
//! sans-IO core.
//!
//! `Entry` and `Version` are `starling_storage`'s types (re-exported here so the protocol code
//! names one path); see `storage/src/types.rs` for their invariants (LWW order by `(hlc, node)`).

pub use starling_storage::{Entry, Version};

/// Node identifier, unique in a cluster (the same value the gossip layer uses).
pub type NodeId = u64;

/// Where a replication message goes: one shard (gossip socket) of one node. The runtime turns it
/// into `address_of(node) : gossip_base_port + shard`.
#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Peer {
    /// The node.
    pub node: NodeId,
    /// The shard (core index) on that node.
    pub shard: u16,
}

/// What the replicator needs to know about a live member: its ring position and shard count.
///
/// **Invariant:** a peer view handed to the replicator is sorted by `(ring, node)` and does not
/// contain the local node (see [`PeerInfo::new`] and [`sort_view`]).
#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerInfo {
    /// Position on the dissemination ring: a hash of the node id (see [`ring_position`]).
    pub ring: u32,
    /// The node.
    pub node: NodeId,
    /// How many shards the node runs (it advertises this in membership).
    pub shards: u16,
}

impl PeerInfo {
    /// A peer with its ring position derived from its id.
    pub fn new(node: NodeId, shards: u16) -> PeerInfo {
        assert!(shards > 0, "a node runs at least one shard");
        PeerInfo {
            ring: ring_position(node),
            node,
            shards,
        }
    }

    /// The shard of this peer that owns `partition` (`partition % shards`).
    pub fn owner_shard(&self, partition: u16) -> u16 {
        partition % self.shards
    }
}

/// Ring position of a node: the top 32 bits of `xxh3_64(node id)`.
pub fn ring_position(node: NodeId) -> u32 {
    (xxhash_rust::xxh3::xxh3_64(&node.to_le_bytes()) >> 32) as u32
}

/// Sorts a peer view into the order the replicator requires and removes `me` and duplicates.
pub fn sort_view(view: &mut Vec<PeerInfo>, me: NodeId) {
    view.retain(|peer| peer.node != me);
    view.sort_unstable();
    view.dedup_by_key(|peer| peer.node);
}

/// Partition of a key: `xxh3_64(key) % partitions` (DESIGN §3).
pub fn partition_of(key: &[u8], partitions: u16) -> u16 {
    assert!(partitions > 0, "a cluster has at least one partition");
    (xxhash_rust::xxh3::xxh3_64(key) % u64::from(partitions)) as u16
}

/// Anti-entropy element of an entry: `xxh3_64(key ‖ hlc ‖ node)` (little-endian integers).
pub fn element_of(key: &[u8], version: Version) -> u64 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(key);
    hasher.update(&version.hlc.to_le_bytes());
    hasher.update(&version.node.to_le_bytes());
    hasher.digest()
}
