//! Key-level operations: what a connection asks of the shard that owns a key, and the answers.
//!
//! These are the messages of the cross-shard channel mesh, so they own their bytes (`Send`).

use crate::api::metrics::StorageSample;
use crate::runtime::storage::Condition;

/// One operation on the owning shard.
#[derive(Debug)]
pub enum Op {
    /// The live value of a key.
    Get(Vec<u8>),
    /// Whether a key is live.
    Exists(Vec<u8>),
    /// Write a value (grouped with the other puts of the batch into one durable apply).
    Put(Vec<u8>, Vec<u8>),
    /// Write a value if the key is absent or present (SET NX / XX).
    PutIf(Vec<u8>, Vec<u8>, Condition),
    /// Delete a key (a tombstone); answers whether it was live.
    Del(Vec<u8>),
    /// Live keys with a prefix, in order, strictly after a key.
    Scan {
        /// Key prefix.
        prefix: Vec<u8>,
        /// Resume point.
        after: Option<Vec<u8>>,
        /// Most keys to return.
        limit: usize,
    },
    /// The shard's storage statistics.
    Stats,
}

impl Op {
    /// The one key this op reads or writes (`None` for scans and stats).
    pub fn key(&self) -> Option<&[u8]> {
        match self {
            Op::Get(key)
            | Op::Exists(key)
            | Op::Put(key, _)
            | Op::PutIf(key, _, _)
            | Op::Del(key) => Some(key),
            Op::Scan { .. } | Op::Stats => None,
        }
    }
}

/// The answer to one [`Op`].
#[derive(Debug, Clone, PartialEq)]
pub enum OpResult {
    /// For `Get`.
    Value(Option<Vec<u8>>),
    /// For `Exists`, `Del`, `PutIf`.
    Bool(bool),
    /// For `Put` (durable).
    Done,
    /// For `Scan`.
    Keys(Vec<Vec<u8>>),
    /// For `Stats`.
    Stats(Box<StorageSample>),
    /// The operation failed; the message goes to the client.
    Error(String),
}

/// A message on the channel mesh between shards.
#[derive(Debug)]
pub enum Message {
    /// Execute `ops` and answer `from` with `id`.
    Request {
        /// Shard to answer.
        from: usize,
        /// Request id, unique on the sender.
        id: u64,
        /// Operations, all for keys the receiver owns.
        ops: Vec<Op>,
    },
    /// Shard 0's member list (clustering), for the other shards' replicators.
    Members(Vec<crate::gossip::membership::Member>),
    /// The answers to request `id`, in order.
    Response {
        /// Request id.
        id: u64,
        /// One result per op.
        results: Vec<OpResult>,
    },
}
