//! Anti-entropy through CPISync sessions of [`crate::reconcile`]: the step after an unequal
//! digest, with a cost that grows with the *difference* instead of the partition size.
//!
//! Flow: A's `SYNC_DIGEST` reaches B; if the digests differ, B starts an `Initiator` session and
//! A answers as `Responder` (kind [`RECONCILE`]). Each side builds a sketch of the partition
//! from its store when its session starts and drops it when the session ends, so memory is
//! spent only on partitions that actually differ (a sketch is ~256 KiB; production may later
//! keep them incrementally). When a side's session yields an outcome it ships the entries the
//! peer lacks as `SYNC_ENTRIES`; the element → key index built with the sketch turns elements
//! into entries (the current version is shipped; newer is fine).
//!
//! **Invariants:** at most [`SESSIONS_MAX`] sessions per role; a session that stays silent for
//! [`SESSION_TIMEOUTS_MAX`] timeouts is dropped (the next round retries); a reconcile message
//! larger than a datagram body is dropped and counted, never sent.

use std::collections::{BTreeMap, HashMap};

use crate::reconcile::{self, Initiator, Message, Outcome, PartitionSketch, Responder};

use super::store::Store;
use super::types::{Entry, Peer};
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

/// The two session kinds behind one interface.
trait Machine {
    fn handle(&mut self, message: &Message, live: &PartitionSketch) -> Vec<Message>;
    fn on_timeout(&mut self) -> Vec<Message>;
    fn outcome(&self) -> Option<&Outcome>;
    fn is_done(&self) -> bool;
}

impl Machine for Initiator {
    fn handle(&mut self, message: &Message, live: &PartitionSketch) -> Vec<Message> {
        Initiator::handle(self, message, live)
    }
    fn on_timeout(&mut self) -> Vec<Message> {
        Initiator::on_timeout(self)
    }
    fn outcome(&self) -> Option<&Outcome> {
        Initiator::outcome(self)
    }
    fn is_done(&self) -> bool {
        Initiator::is_done(self)
    }
}

impl Machine for Responder {
    fn handle(&mut self, message: &Message, live: &PartitionSketch) -> Vec<Message> {
        Responder::handle(self, message, live)
    }
    fn on_timeout(&mut self) -> Vec<Message> {
        Responder::on_timeout(self)
    }
    fn outcome(&self) -> Option<&Outcome> {
        Responder::outcome(self)
    }
    fn is_done(&self) -> bool {
        Responder::is_done(self)
    }
}

struct Session {
    machine: Box<dyn Machine>,
    initiator: bool,
    partition: u16,
    sketch: Box<PartitionSketch>,
    keys: HashMap<u64, Vec<u8>>,
    quiet_since_ms: u64,
    timeouts: u32,
    shipped: bool,
}

/// Sketch and element → key index of one partition, built from the store.
fn build(store: &dyn Store, partition: u16) -> (Box<PartitionSketch>, HashMap<u64, Vec<u8>>) {
    let mut keys = HashMap::new();
    let mut elements = Vec::new();
    store.for_each_in_partition(partition, &mut |entry| {
        let version = reconcile::version_bytes(entry.version.hlc, entry.version.node);
        let element = reconcile::element_of(&entry.key, &version);
        elements.push(element);
        keys.insert(element, entry.key.clone());
    });
    let mut sketch = Box::new(PartitionSketch::new());
    sketch.insert_batch(&elements);
    (sketch, keys)
}

/// All CPISync sessions of one shard, keyed by (peer, session id).
#[derive(Default)]
pub struct Sessions {
    sessions: BTreeMap<(Peer, u64), Session>,
    initiated: usize,
    /// Counters.
    pub stats: CpisyncStats,
}

impl Sessions {
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
        let (sketch, keys) = build(store, partition);
        let (initiator, messages) = Initiator::start(session_id, u32::from(partition), &sketch);
        self.stats.sessions_started += 1;
        self.initiated += 1;
        let session = Session {
            machine: Box::new(initiator),
            initiator: true,
            partition,
            sketch,
            keys,
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
            let responders = self.sessions.len() - self.initiated;
            if responders >= SESSIONS_MAX {
                self.stats.sessions_abandoned += 1;
                return Step::default();
            }
            let (sketch, keys) = build(store, partition);
            let Ok((responder, messages)) = Responder::accept(&message, &sketch) else {
                return Step::default();
            };
            self.stats.sessions_accepted += 1;
            let session = Session {
                machine: Box::new(responder),
                initiator: false,
                partition,
                sketch,
                keys,
                quiet_since_ms: now_ms,
                timeouts: 0,
                shipped: false,
            };
            self.sessions.insert(key, session);
            return self.finish_step(from, key.1, messages, store);
        }
        let Some(session) = self.sessions.get_mut(&key) else {
            return Step::default();
        };
        session.quiet_since_ms = now_ms;
        session.timeouts = 0;
        let messages = session.machine.handle(&message, &session.sketch);
        self.finish_step(from, key.1, messages, store)
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
            if session.timeouts > SESSION_TIMEOUTS_MAX {
                abandoned.push((peer, id));
                continue;
            }
            for message in session.machine.on_timeout() {
                out.push((peer, message.encode()));
            }
        }
        for key in abandoned {
            self.stats.sessions_abandoned += 1;
            self.remove(key);
        }
        out.retain(|(_, body)| body.len() <= BODY_BYTES_MAX);
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
        if let Some(session) = self.sessions.remove(&key)
            && session.initiator
        {
            self.initiated -= 1;
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
        if let (Some(outcome), false) = (session.machine.outcome(), session.shipped) {
            session.shipped = true;
            self.stats.sessions_finished += 1;
            step.ship = outcome
                .to_ship
                .iter()
                .filter_map(|element| session.keys.get(element))
                .filter_map(|key| store.entry(key))
                .collect();
        }
        if session.machine.is_done() {
            self.remove((peer, id));
        }
        step
    }
}
