//! Which partition and which shard own a key (DESIGN §3).
//!
//! `partition = xxh3_64(key) % P`; shard `i` of `S` owns the partitions with `partition % S == i`.
//! **Invariant:** the mapping depends only on the key, `P` and `S`, so every shard of every node
//! with the same `P` and `S` agrees on it; `P` and `S` are pinned by the data dir's layout file.

/// Maps keys to partitions and shards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Router {
    partitions: u32,
    shards: usize,
}

impl Router {
    /// A router for `partitions` partitions over `shards` shards.
    pub fn new(partitions: u32, shards: usize) -> Self {
        assert!(
            partitions > 0 && shards > 0,
            "partitions and shards must be positive"
        );
        assert!(
            shards as u64 <= u64::from(partitions),
            "more shards than partitions"
        );
        Router { partitions, shards }
    }

    /// The partition of `key`.
    pub fn partition(&self, key: &[u8]) -> u32 {
        (xxhash_rust::xxh3::xxh3_64(key) % u64::from(self.partitions)) as u32
    }

    /// The shard that owns `key`.
    pub fn shard(&self, key: &[u8]) -> usize {
        let shard = self.partition(key) as usize % self.shards;
        debug_assert!(shard < self.shards);
        shard
    }

    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.shards
    }

    /// Number of partitions.
    pub fn partitions(&self) -> u32 {
        self.partitions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_is_partition_mod_shards_and_spreads_keys() {
        let router = Router::new(256, 3);
        let mut per_shard = [0usize; 3];
        for i in 0..3000u32 {
            let key = format!("key:{i}");
            let partition = router.partition(key.as_bytes());
            assert!(partition < 256);
            assert_eq!(router.shard(key.as_bytes()), partition as usize % 3);
            per_shard[router.shard(key.as_bytes())] += 1;
        }
        assert!(
            per_shard.iter().all(|&n| n > 800),
            "uneven spread {per_shard:?}"
        );
    }

    #[test]
    fn partition_is_xxh3_mod_p() {
        let router = Router::new(256, 1);
        assert_eq!(
            u64::from(router.partition(b"abc")),
            xxhash_rust::xxh3::xxh3_64(b"abc") % 256
        );
    }
}
