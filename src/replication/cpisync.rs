//! Anti-entropy through CPISync sessions of [`crate::reconcile`]: the step after an unequal
//! digest, with a cost that grows with the *difference* instead of the partition size.
//!
//! Flow: A's `SYNC_DIGEST` reaches B; if the digests differ, B starts an `Initiator` session and
//! A answers as `Responder` (kind [`RECONCILE`]). Both run against the partition's
//! [`PartitionIndex`] (sketch + element → key index). With `keep` (the node default) an index
//! is built once per partition and then kept in step by [`Sessions::observe`] on every durable
//! entry; without it (large simulations) the index is built when a session of its partition
//! starts and dropped when the last one ends, so memory is spent only on differing partitions.
//! Before a session the index digest is compared with the store digest; a mismatch (GC, lost
//! data, a write the replicator never saw) rebuilds it. When a side's session yields an outcome
//! it ships the entries the peer lacks as `SYNC_ENTRIES` (the current version of each key).
//!
//! **Invariants:** at most [`SESSIONS_MAX`] sessions per role; a session that stays silent for
//! [`SESSION_TIMEOUTS_MAX`] timeouts is dropped (the next round retries); a reconcile message
//! larger than a datagram body is dropped and counted, never sent.

use std::collections::BTreeMap;

use crate::reconcile::{Initiator, Message, Outcome, PartitionSketch, Responder};

use super::anti_entropy;
use super::sketches::PartitionIndex;
use super::store::Store;
use super::types::{Entry, Peer, partition_of};
use super::wire::BODY_BYTES_MAX;

/// Datagram kind of reconcile session messages (first kind of the reconciliation range).
pub const RECONCILE: u8 = 0x80;
/// Concurrent sessions per role; further opens are refused until one ends.
pub const SESSIONS_MAX: usize = 16;
/// Quiet time after which a session resends (ms).
pub const SESSION_RESEND_MS: u64 = 200;
/// Resends before a session is abandoned.
pub const SESSION_TIMEOUTS_MAX: u32 = 10;

/// Counters of CPISync anti-entropy.
#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CpisyncStats {
    /// Sessions started as initiator.
    pub sessions_started: u64,
    /// Sessions accepted as responder.
    pub sessions_accepted: u64,
    /// Sessions that produced an outcome.
    pub sessions_finished: u64,
    /// Sessions abandoned after too many timeouts or refused because of the session limit.
    pub sessions_abandoned: u64,
    /// Reconcile messages that did not decode.
    pub decode_errors: u64,
    /// Reconcile messages larger than a datagram body (dropped).
    pub oversize: u64,
    /// Partition indexes built from the store (first use, or digest mismatch).
    pub index_builds: u64,
    /// Indexes rebuilt because their digest no longer matched the store.
    pub index_rebuilds: u64,
}

/// What a session step asks the caller to do.
#[derive(Debug, Default)]
pub struct Step {
    /// Reconcile bodies to send (kind [`RECONCILE`]) to the session's peer.
    pub bodies: Vec<Vec<u8>>,
    /// Entries the peer lacks, to ship as `SYNC_ENTRIES` of `partition`.
    pub ship: Vec<Entry>,
    /// The partition of the session.
    pub partition: u16,
}

/// The two session kinds behind one interface (boxed: an initiator is large).
#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
enum Machine {
    Initiator(Box<Initiator>),
    Responder(Box<Responder>),
}

impl Machine {
    fn handle(&mut self, message: &Message, live: &PartitionSketch) -> Vec<Message> {
        match self {
            Machine::Initiator(initiator) => initiator.handle(message, live),
            Machine::Responder(responder) => responder.handle(message, live),
        }
    }

    fn on_timeout(&mut self, live: &PartitionSketch) -> Vec<Message> {
        match self {
            Machine::Initiator(initiator) => initiator.on_timeout(live),
            Machine::Responder(responder) => responder.on_timeout(),
        }
    }

    fn outcome(&self) -> Option<&Outcome> {
        match self {
            Machine::Initiator(initiator) => initiator.outcome(),
            Machine::Responder(responder) => responder.outcome(),
        }
    }

    fn is_done(&self) -> bool {
        match self {
            Machine::Initiator(initiator) => initiator.is_done(),
            Machine::Responder(responder) => responder.is_done(),
        }
    }
}

#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
struct Session {
    machine: Machine,
    initiator: bool,
    partition: u16,
    quiet_since_ms: u64,
    timeouts: u32,
    shipped: bool,
}

/// All CPISync sessions of one shard, keyed by (peer, session id), and the partition indexes
/// they run against.
#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
pub struct Sessions {
    sessions: BTreeMap<(Peer, u64), Session>,
    indexes: BTreeMap<u16, Box<PartitionIndex>>,
    keep: bool,
    initiated: usize,
    /// Counters.
    pub stats: CpisyncStats,
}

impl Sessions {
    /// No sessions yet; `keep` keeps each partition's index between sessions (and in step).
    pub fn new(keep: bool) -> Sessions {
        Sessions {
            sessions: BTreeMap::new(),
            indexes: BTreeMap::new(),
            keep,
            initiated: 0,
            stats: CpisyncStats::default(),
        }
    }

    /// A durable entry of `partitions` partitions: updates its partition's index, if any.
    pub fn observe(&mut self, partitions: u16, entry: &Entry) {
        if self.indexes.is_empty() {
            return;
        }
        if let Some(index) = self.indexes.get_mut(&partition_of(&entry.key, partitions)) {
            index.observe(entry);
        }
    }

    /// Whether `partition` has an index that wants [`Sessions::observe`] calls.
    pub fn tracks(&self, partition: u16) -> bool {
        self.indexes.contains_key(&partition)
    }

    /// Partition indexes held (each ~256 KiB plus its entries).
    pub fn indexes(&self) -> usize {
        self.indexes.len()
    }

    /// Builds the index of `partition`, or rebuilds it if its digest drifted from the store.
    fn ensure_index(&mut self, partition: u16, store: &dyn Store) {
        let stored = anti_entropy::digest(store, partition);
        match self.indexes.get(&partition) {
            Some(index) if index.digest() == stored => return,
            Some(_) => self.stats.index_rebuilds += 1,
            None => {}
        }
        self.stats.index_builds += 1;
        let index = PartitionIndex::build(store, partition);
        debug_assert_eq!(index.digest(), stored);
        self.indexes.insert(partition, index);
    }

    /// Starts a session as initiator with `peer` for `partition`.
    pub fn start(
        &mut self,
        now_ms: u64,
        peer: Peer,
        session_id: u64,
        partition: u16,
        store: &dyn Store,
    ) -> Step {
        if self.initiated >= SESSIONS_MAX || self.sessions.contains_key(&(peer, session_id)) {
            self.stats.sessions_abandoned += 1;
            return Step::default();
        }
        self.ensure_index(partition, store);
        let Some(index) = self.indexes.get(&partition) else {
            return Step::default();
        };
        let (initiator, messages) =
            Initiator::start(session_id, u32::from(partition), index.sketch());
        self.stats.sessions_started += 1;
        self.initiated += 1;
        let session = Session {
            machine: Machine::Initiator(Box::new(initiator)),
            initiator: true,
            partition,
            quiet_since_ms: now_ms,
            timeouts: 0,
            shipped: false,
        };
        self.sessions.insert((peer, session_id), session);
        self.finish_step(peer, session_id, messages, store)
    }

    /// A reconcile body from `from`; `owned` says which partitions this shard owns.
    pub fn receive(
        &mut self,
        now_ms: u64,
        from: Peer,
        body: &[u8],
        owned: &dyn Fn(u16) -> bool,
        store: &dyn Store,
    ) -> Step {
        let Ok(message) = Message::decode(body) else {
            self.stats.decode_errors += 1;
            return Step::default();
        };
        let key = (from, message.session_id());
        let Ok(partition) = u16::try_from(message.partition()) else {
            return Step::default();
        };
        if !owned(partition) {
            self.stats.decode_errors += 1;
            return Step::default();
        }
        if !self.sessions.contains_key(&key) {
            if !message.is_open() {
                return Step::default(); // a late message of a finished session
            }
            return self.accept(now_ms, key, partition, &message, store);
        }
        let (Some(session), Some(index)) =
            (self.sessions.get_mut(&key), self.indexes.get(&partition))
        else {
            return Step::default();
        };
        if session.partition != partition {
            self.stats.decode_errors += 1;
            return Step::default();
        }
        session.quiet_since_ms = now_ms;
        session.timeouts = 0;
        let messages = session.machine.handle(&message, index.sketch());
        self.finish_step(from, key.1, messages, store)
    }

    fn accept(
        &mut self,
        now_ms: u64,
        key: (Peer, u64),
        partition: u16,
        open: &Message,
        store: &dyn Store,
    ) -> Step {
        let responders = self.sessions.len() - self.initiated;
        if responders >= SESSIONS_MAX {
            self.stats.sessions_abandoned += 1;
            return Step::default();
        }
        self.ensure_index(partition, store);
        let Some(index) = self.indexes.get(&partition) else {
            return Step::default();
        };
        let Ok((responder, messages)) = Responder::accept(open, index.sketch()) else {
            self.drop_unused_index(partition);
            return Step::default();
        };
        self.stats.sessions_accepted += 1;
        let session = Session {
            machine: Machine::Responder(Box::new(responder)),
            initiator: false,
            partition,
            quiet_since_ms: now_ms,
            timeouts: 0,
            shipped: false,
        };
        self.sessions.insert(key, session);
        self.finish_step(key.0, key.1, messages, store)
    }

    /// Resends for quiet sessions; abandons sessions quiet for too long.
    pub fn tick(&mut self, now_ms: u64) -> Vec<(Peer, Vec<u8>)> {
        let mut out = Vec::new();
        let mut abandoned = Vec::new();
        for (&(peer, id), session) in &mut self.sessions {
            if now_ms < session.quiet_since_ms + SESSION_RESEND_MS {
                continue;
            }
            session.timeouts += 1;
            session.quiet_since_ms = now_ms;
            let Some(index) = self.indexes.get(&session.partition) else {
                abandoned.push((peer, id));
                continue;
            };
            if session.timeouts > SESSION_TIMEOUTS_MAX {
                abandoned.push((peer, id));
                continue;
            }
            for message in session.machine.on_timeout(index.sketch()) {
                out.push((peer, message.encode()));
            }
        }
        for key in abandoned {
            self.stats.sessions_abandoned += 1;
            self.remove(key);
        }
        let before = out.len();
        out.retain(|(_, body)| body.len() <= BODY_BYTES_MAX);
        self.stats.oversize += (before - out.len()) as u64;
        out
    }

    /// Number of sessions in progress.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether no session is in progress.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    fn remove(&mut self, key: (Peer, u64)) {
        let Some(session) = self.sessions.remove(&key) else {
            return;
        };
        if session.initiator {
            self.initiated -= 1;
        }
        self.drop_unused_index(session.partition);
    }

    /// Without `keep`, an index lives only while a session of its partition does.
    fn drop_unused_index(&mut self, partition: u16) {
        if !self.keep && !self.sessions.values().any(|s| s.partition == partition) {
            self.indexes.remove(&partition);
        }
    }

    /// Encodes replies, ships entries once the outcome is known, drops finished sessions.
    fn finish_step(
        &mut self,
        peer: Peer,
        id: u64,
        messages: Vec<Message>,
        store: &dyn Store,
    ) -> Step {
        let mut step = Step::default();
        for message in messages {
            let body = message.encode();
            if body.len() > BODY_BYTES_MAX {
                self.stats.oversize += 1;
                continue;
            }
            step.bodies.push(body);
        }
        let Some(session) = self.sessions.get_mut(&(peer, id)) else {
            return step;
        };
        step.partition = session.partition;
        if let (Some(outcome), false, Some(index)) = (
            session.machine.outcome(),
            session.shipped,
            self.indexes.get(&session.partition),
        ) {
            session.shipped = true;
            self.stats.sessions_finished += 1;
            step.ship = ship_list(outcome, index, store);
        }
        if session.machine.is_done() {
            self.remove((peer, id));
        }
        step
    }
}

/// The current entries behind the outcome's elements to ship (a key updated since ships its
/// newer version; an element no longer indexed is skipped, the next round covers it).
fn ship_list(outcome: &Outcome, index: &PartitionIndex, store: &dyn Store) -> Vec<Entry> {
    outcome
        .to_ship
        .iter()
        .filter_map(|&element| index.key_of(element))
        .filter_map(|key| store.entry(key))
        .collect()
}
