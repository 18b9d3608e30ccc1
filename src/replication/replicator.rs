//! The per-shard replication state machine: dissemination, anti-entropy and write acks.
//!
//! Sans-IO in the quinn-proto manner: the runtime (or the simulator) calls [`Replicator::tick`],
//! [`Replicator::write`], [`Replicator::receive`], [`Replicator::applied`] and
//! [`Replicator::fetched`] with the current time, then drains [`Replicator::actions`] and
//! performs them (send a datagram body, apply a batch to storage, pull entries over a transfer
//! stream, answer a client). Nothing in here reads a clock, a socket or the OS RNG; the only
//! randomness is a `Xoshiro256PlusPlus` seeded by the caller.
//!
//! Path of a client `SET` (after the runtime's local group commit): [`Replicator::write`] →
//! `write_linger_ms` later ([`Replicator::flush`]): packed into a batch, the whole ring split
//! among `fanout` children (`Dissemination`) → `Action::Send` (RUMOR) → a child's
//! [`Replicator::receive`] → `Action::Apply` of the newer entries → [`Replicator::applied`]
//! (durable) → RUMOR_ACK to the parent and the child holds the batch for its own arc.
//!
//! **Lingering.** The broadcast tree is the same for every batch (see `dissemination`), so a
//! node talks to the same few peers over and over. Sends wait in per-peer outboxes and leave
//! together in one datagram: a batch that came straight from its writer waits up to
//! `linger_ms` (the writer's first hops are where the streams of all writers merge), deeper
//! hops pass on at once the groups they received together, and hop acks for one parent wait
//! up to `ack_linger_ms` and leave as one RUMOR_ACK. This costs ~`linger_ms` of latency per
//! write, not per hop, and at 20 writes a second cuts the datagrams per update ~3-fold
//! (figures: `starling-sim`). The caller must call [`Replicator::flush`] by
//! [`Replicator::next_deadline_ms`] (the runtime checks every 10 ms, the simulator schedules
//! an event).
//!
//! **Invariants:** an entry is handed to storage only if it is newer than the stored version
//! at receive time (storage re-checks); a hop ack is sent only after the batch is durable;
//! every emitted body is at most [`BODY_BYTES_MAX`] bytes.

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use super::anti_entropy;
use super::cpisync;
use super::dissemination::{Dissemination, DisseminationConfig};
use super::store::Store;
use super::types::{Entry, NodeId, Peer, PeerInfo, partition_of, ring_position};
use super::wire::{
    BODY_BYTES_MAX, DELEGATION_ENTRIES_MAX, DELEGATION_HEADER_BYTES, DecodeError, Delegation,
    Message, Payload, WireEntry, rumor_len,
};

/// Largest inline entry in a rumor: one delegation with one entry must fit a body.
pub const RUMOR_ENTRY_BYTES_MAX: usize = BODY_BYTES_MAX - 1 - DELEGATION_HEADER_BYTES;
/// Delegations in one RUMOR body at most (its count is one byte).
const RUMOR_DELEGATIONS_MAX: usize = u8::MAX as usize;
/// Batch ids in one RUMOR_ACK body at most (2-byte count + 8 bytes each, within the body).
const RUMOR_ACK_BATCHES_MAX: usize = (BODY_BYTES_MAX - 2) / 8;

/// Configuration of one shard's replicator.
#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Partitions in the cluster (`P`, DESIGN §3).
    pub partitions: u16,
    /// Shards of this node (`S`).
    pub shards: u16,
    /// This shard's index (`0..S`).
    pub shard: u16,
    /// Anti-entropy: every partition syncs with one random peer this often.
    pub sync_interval_ms: u64,
    /// Dissemination tuning.
    pub dissemination: DisseminationConfig,
    /// How partitions with unequal digests find their difference.
    pub anti_entropy: AntiEntropyMode,
    /// A peer's partition holding this many entries more than ours means we are new or were
    /// away long: instead of reconciling, pull everything this shard owns from that peer over
    /// the transfer stream ([`Action::Pull`], page by page). Symmetrically, a peer this far
    /// behind is sent our digest so that it pulls.
    pub bulk_threshold: u64,
}

/// How anti-entropy finds the difference once two digests differ.
///
/// Memory per node: `CpisyncKept` holds one ~256 KiB sketch (plus an element → key index of
/// about key length + 60 bytes per entry) per owned partition, ~64 MiB for 256 partitions;
/// `Cpisync` holds sketches only while a session of their partition runs; `ElementList` none.
#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum AntiEntropyMode {
    /// CPISync sessions of `crate::reconcile` (bytes grow with the difference) against one
    /// sketch per partition kept in step with every durable entry (the node default).
    #[default]
    CpisyncKept,
    /// CPISync sessions against sketches built from the store when a session starts and
    /// dropped when it ends: same bytes, memory only for differing partitions, a store scan
    /// per session (for simulations with thousands of nodes).
    Cpisync,
    /// The responder lists all its elements (cost grows with the partition size).
    ElementList,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            partitions: 256,
            shards: 1,
            shard: 0,
            sync_interval_ms: 30_000,
            dissemination: DisseminationConfig::default(),
            anti_entropy: AntiEntropyMode::default(),
            bulk_threshold: 2_048,
        }
    }
}

/// How a client write is acknowledged.
#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Ack {
    /// After the local group commit (the runtime answers; the replicator only disseminates).
    Local,
    /// After `peers` peers report the entry durable, or [`Action::AckTimeout`] after
    /// `timeout_ms` (the write itself is kept either way).
    Peers {
        /// Caller's id for the write, echoed in the resulting action.
        write_id: u64,
        /// Peers that must report the entry durable.
        peers: usize,
        /// How long to wait.
        timeout_ms: u64,
    },
}

/// What the caller must do.
#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send a replication body (kind in 0x40..=0x7F) to a peer's shard.
    Send {
        /// Destination.
        to: Peer,
        /// Message kind for the datagram header.
        kind: u8,
        /// The body, at most [`BODY_BYTES_MAX`] bytes.
        body: Vec<u8>,
    },
    /// Apply these entries version-aware and durably, then call [`Replicator::applied`].
    Apply {
        /// Echo in `applied`.
        token: u64,
        /// The entries (all were newer than the stored versions when emitted).
        entries: Vec<Entry>,
    },
    /// Pull these keys' current entries from `from` over a transfer stream, then call
    /// [`Replicator::fetched`] (with whatever arrived; an empty list on failure).
    Fetch {
        /// Echo in `fetched`.
        token: u64,
        /// The peer that announced them.
        from: Peer,
        /// Keys to pull.
        keys: Vec<Vec<u8>>,
    },
    /// Bulk catch-up: pull one page of every stored entry (tombstones included) of the
    /// partitions this shard owns from `from`, in key order strictly after `after`, over the
    /// transfer stream; then call [`Replicator::pulled`] (an empty page, no more, on failure).
    Pull {
        /// Echo in `pulled`.
        token: u64,
        /// The peer shard to pull from.
        from: Peer,
        /// Resume after this key.
        after: Option<Vec<u8>>,
    },
    /// An `Ack::Peers` write reached its peer count.
    Acked {
        /// The write.
        write_id: u64,
    },
    /// An `Ack::Peers` write timed out (it stays written and keeps replicating).
    AckTimeout {
        /// The write.
        write_id: u64,
        /// How many peers had acked.
        acked_peers: usize,
    },
}

/// Storage and membership as the replicator sees them during one call.
#[derive(Copy, Clone)]
pub struct Context<'a> {
    /// The shard's storage (reads only).
    pub store: &'a dyn Store,
    /// Live peers, sorted by `(ring, node)` (see `types::sort_view`). It may contain this
    /// node, which is ignored (so one shared view can serve every node of a simulation).
    pub view: &'a [PeerInfo],
}

/// Counters for metrics and the simulator.
#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Received entries handed to storage because they were newer.
    pub entries_applied: u64,
    /// Received entries that were not newer: no disk write.
    pub entries_duplicate: u64,
    /// Received entries of partitions this shard does not own (stale routing).
    pub entries_misrouted: u64,
    /// Entries too large to announce in a datagram (left to bulk resync).
    pub entries_too_large: u64,
    /// Fetch actions emitted.
    pub fetches: u64,
    /// Anti-entropy rounds started.
    pub sync_rounds: u64,
    /// Digest requests answered "equal".
    pub sync_equal: u64,
    /// Entries shipped by anti-entropy.
    pub sync_entries_sent: u64,
    /// `Ack::Peers` writes acked.
    pub writes_acked: u64,
    /// `Ack::Peers` writes timed out.
    pub writes_timed_out: u64,
    /// Bulk catch-ups started (this shard was far behind a peer).
    pub catch_ups: u64,
    /// Digests sent back to a peer far behind us, so that it pulls.
    pub catch_up_offers: u64,
    /// Pull pages received.
    pub pull_pages: u64,
    /// Entries received in pull pages (only the newer ones are applied).
    pub pull_entries: u64,
}

/// Items for one peer and when they must leave.
#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
#[derive(Debug)]
struct Outbox<T = Delegation> {
    due_ms: u64,
    items: Vec<T>,
}

#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
#[derive(Debug)]
struct LocalWrite {
    entry: Entry,
    ack: Ack,
}

#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
#[derive(Debug)]
struct Wait {
    write_id: u64,
    batch: u64,
    peers: usize,
    acked: Vec<NodeId>,
    deadline_ms: u64,
}

#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
#[derive(Debug)]
enum Purpose {
    Rumor {
        from: Peer,
        delegations: Vec<Delegation>,
    },
    Sync,
    /// A page of a bulk catch-up (its newer entries are counted).
    CatchUp,
}

/// The last bulk catch-up (how much it brought is `Replicator::catch_up_applied`, which
/// its final page's apply may still raise after it ended).
#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
#[derive(Debug)]
struct LastCatchUp {
    from: NodeId,
    ended_ms: u64,
}

/// Sync intervals to wait before pulling again from a peer whose last catch-up brought fewer
/// than `bulk_threshold` newer entries.
pub const USELESS_CATCH_UP_BACKOFF: u64 = 10;

#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
#[derive(Debug)]
struct Pending {
    purpose: Purpose,
    inline: Vec<Entry>,
    /// Copies of the entries in the `Apply` whose partition index wants to observe them.
    observed: Vec<Entry>,
}

/// One shard's replication state machine.
#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
pub struct Replicator {
    config: Config,
    me: NodeId,
    rng: Xoshiro256PlusPlus,
    dissemination: Dissemination,
    fresh: Vec<LocalWrite>,
    /// When `fresh` must be turned into batches (`write_linger_ms` after the first write).
    fresh_due_ms: Option<u64>,
    /// Delegations per child, waiting to share a datagram.
    outbox: BTreeMap<Peer, Outbox>,
    /// Hop acks per parent, waiting to share a datagram.
    acks_out: BTreeMap<Peer, Outbox<u64>>,
    waits: Vec<Wait>,
    /// Pull pages in flight (token → peer shard) of the current bulk catch-up.
    pulls: BTreeMap<u64, Peer>,
    /// When the last bulk catch-up ended (another waits a sync interval).
    last_catch_up: Option<LastCatchUp>,
    /// Newer entries applied by the current (or last) catch-up.
    catch_up_applied: u64,
    pending: BTreeMap<u64, Pending>,
    token_next: u64,
    owned: Vec<u16>,
    sync_cursor: usize,
    sync_credit: u64,
    last_tick_ms: Option<u64>,
    actions: Vec<Action>,
    sessions: cpisync::Sessions,
    stats: Stats,
}

impl Replicator {
    /// A replicator for shard `config.shard` of node `me`, with its RNG seeded by `seed`.
    pub fn new(config: Config, me: NodeId, seed: u64) -> Replicator {
        assert!(
            config.partitions > 0 && config.shards > 0,
            "partitions and shards >= 1"
        );
        assert!(config.shard < config.shards, "shard index out of range");
        assert!(
            config.sync_interval_ms > 0,
            "sync interval must be positive"
        );
        let owned = (0..config.partitions)
            .filter(|p| p % config.shards == config.shard)
            .collect();
        let dissemination = Dissemination::new(config.dissemination.clone(), config.partitions);
        let keep_sketches = config.anti_entropy == AntiEntropyMode::CpisyncKept;
        Replicator {
            config,
            me,
            rng: Xoshiro256PlusPlus::seed_from_u64(seed),
            dissemination,
            fresh: Vec::new(),
            fresh_due_ms: None,
            outbox: BTreeMap::new(),
            acks_out: BTreeMap::new(),
            waits: Vec::new(),
            pulls: BTreeMap::new(),
            last_catch_up: None,
            catch_up_applied: 0,
            pending: BTreeMap::new(),
            token_next: 0,
            owned,
            sync_cursor: 0,
            sync_credit: 0,
            last_tick_ms: None,
            actions: Vec::new(),
            sessions: cpisync::Sessions::new(keep_sketches),
            stats: Stats::default(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Dissemination state (counters, held batches).
    pub fn dissemination(&self) -> &Dissemination {
        &self.dissemination
    }

    /// The actions produced so far, in order; the caller performs them.
    pub fn actions(&mut self) -> std::vec::Drain<'_, Action> {
        self.actions.drain(..)
    }

    /// Whether this shard owns `partition`.
    pub fn owns(&self, partition: u16) -> bool {
        partition % self.config.shards == self.config.shard
    }

    /// A client write that is already durable locally: disseminated from
    /// [`Replicator::flush`] `write_linger_ms` later (or the next tick, if sooner).
    pub fn write(&mut self, now_ms: u64, entry: Entry, ack: Ack) {
        assert!(
            self.owns(partition_of(&entry.key, self.config.partitions)),
            "write on wrong shard"
        );
        if let Ack::Peers { peers, .. } = ack {
            assert!(peers >= 1, "ack = peers:k needs k >= 1");
        }
        self.sessions.observe(self.config.partitions, &entry);
        self.fresh.push(LocalWrite { entry, ack });
        let due_ms = now_ms + self.config.dissemination.write_linger_ms;
        self.fresh_due_ms = Some(self.fresh_due_ms.map_or(due_ms, |due| due.min(due_ms)));
    }

    /// When [`Replicator::flush`] must be called next (`None`: nothing is waiting).
    pub fn next_deadline_ms(&self) -> Option<u64> {
        let outboxes = self.outbox.values().map(|o| o.due_ms);
        let acks = self.acks_out.values().map(|o| o.due_ms);
        let retransmit = self.dissemination.next_retransmit_ms();
        (self.fresh_due_ms.into_iter().chain(retransmit))
            .chain(outboxes)
            .chain(acks)
            .min()
    }

    /// Sends what has lingered long enough: fresh writes become batches split among the
    /// first children, unacked sends are repeated (without lingering again: they are late
    /// already), and due outboxes and acks leave as datagrams.
    pub fn flush(&mut self, now_ms: u64, context: Context<'_>) {
        if self.fresh_due_ms.is_some_and(|due| due <= now_ms) {
            for batch in self.start_batches(now_ms) {
                let sends = self
                    .dissemination
                    .forward_now(now_ms, batch, context.view, self.me);
                self.queue_rumors(now_ms, 0, sends);
            }
        }
        if (self.dissemination.next_retransmit_ms()).is_some_and(|due| due <= now_ms) {
            let sends = self.dissemination.tick(now_ms, context.view, self.me);
            self.queue_rumors(now_ms, 0, sends);
        }
        self.send_due(now_ms);
    }

    /// The periodic step: new batches, forwarding, retransmits, ack timeouts, anti-entropy.
    pub fn tick(&mut self, now_ms: u64, context: Context<'_>) {
        self.start_batches(now_ms);
        let sends = self.dissemination.tick(now_ms, context.view, self.me);
        self.queue_rumors(now_ms, 0, sends);
        self.send_due(now_ms);
        self.expire_waits(now_ms);
        for (peer, body) in self.sessions.tick(now_ms) {
            self.actions.push(Action::Send {
                to: peer,
                kind: cpisync::RECONCILE,
                body,
            });
        }
        self.anti_entropy_tick(now_ms, context);
    }

    /// Turns the fresh writes into batches this node originates; returns their ids.
    fn start_batches(&mut self, now_ms: u64) -> Vec<u64> {
        self.fresh_due_ms = None;
        let mut started = Vec::new();
        let mut shared: Vec<WireEntry> = Vec::new();
        let mut shared_bytes = 0;
        for write in std::mem::take(&mut self.fresh) {
            let wire = WireEntry::from_entry(&write.entry, RUMOR_ENTRY_BYTES_MAX);
            let len = wire.encoded_len();
            if len > RUMOR_ENTRY_BYTES_MAX {
                self.stats.entries_too_large += 1;
                continue;
            }
            if let Ack::Peers {
                write_id,
                peers,
                timeout_ms,
            } = write.ack
            {
                // Its own batch, so a batch ack means exactly this write.
                let batch = self.rng.random::<u64>();
                self.dissemination.originate(batch, vec![wire]);
                started.push(batch);
                let deadline_ms = now_ms + timeout_ms;
                self.waits.push(Wait {
                    write_id,
                    batch,
                    peers,
                    acked: Vec::new(),
                    deadline_ms,
                });
                continue;
            }
            if shared_bytes + len > RUMOR_ENTRY_BYTES_MAX || shared.len() == DELEGATION_ENTRIES_MAX
            {
                let batch = self.rng.random::<u64>();
                self.dissemination
                    .originate(batch, std::mem::take(&mut shared));
                started.push(batch);
                shared_bytes = 0;
            }
            shared_bytes += len;
            shared.push(wire);
        }
        if !shared.is_empty() {
            let batch = self.rng.random::<u64>();
            self.dissemination.originate(batch, shared);
            started.push(batch);
        }
        started
    }

    /// Puts delegations into their children's outboxes, to leave within `linger_ms`; an
    /// outbox that fills a datagram becomes due at once.
    fn queue_rumors(&mut self, now_ms: u64, linger_ms: u64, sends: Vec<(Peer, Delegation)>) {
        for (to, delegation) in sends {
            let outbox = self.outbox.entry(to).or_insert_with(|| Outbox {
                due_ms: now_ms + linger_ms,
                items: Vec::new(),
            });
            outbox.due_ms = outbox.due_ms.min(now_ms + linger_ms);
            outbox.items.push(delegation);
            let bytes = rumor_len(&outbox.items);
            if bytes >= BODY_BYTES_MAX || outbox.items.len() >= RUMOR_DELEGATIONS_MAX {
                outbox.due_ms = now_ms;
            }
        }
    }

    /// Queues hop acks for `to` (they leave with its other acks, `ack_linger_ms` at most).
    fn queue_acks(&mut self, now_ms: u64, to: Peer, batches: Vec<u64>) {
        let linger_ms = self.config.dissemination.ack_linger_ms;
        let outbox = self.acks_out.entry(to).or_insert_with(|| Outbox {
            due_ms: now_ms + linger_ms,
            items: Vec::new(),
        });
        for batch in batches {
            if !outbox.items.contains(&batch) {
                outbox.items.push(batch);
            }
        }
        if outbox.items.len() >= RUMOR_ACK_BATCHES_MAX {
            outbox.due_ms = now_ms;
        }
    }

    /// Sends every outbox and ack list that is due.
    fn send_due(&mut self, now_ms: u64) {
        for (to, delegations) in take_due(&mut self.outbox, now_ms) {
            self.pack_rumors(to, delegations);
        }
        for (to, batches) in take_due(&mut self.acks_out, now_ms) {
            for batches in batches.chunks(RUMOR_ACK_BATCHES_MAX) {
                self.send(to, &Message::RumorAck(batches.to_vec()));
            }
        }
    }

    /// Packs delegations for one destination into as few RUMOR bodies as fit.
    fn pack_rumors(&mut self, to: Peer, delegations: Vec<Delegation>) {
        let mut batch = Vec::new();
        let mut bytes = 1;
        for delegation in delegations {
            let full = delegation.encoded_len();
            let same_arc = batch
                .last()
                .is_some_and(|d: &Delegation| d.arc == delegation.arc);
            let mut len = if same_arc { full - 8 } else { full };
            if !batch.is_empty()
                && (bytes + len > BODY_BYTES_MAX || batch.len() == RUMOR_DELEGATIONS_MAX)
            {
                self.send(to, &Message::Rumor(std::mem::take(&mut batch)));
                (bytes, len) = (1, full);
            }
            bytes += len;
            batch.push(delegation);
        }
        if !batch.is_empty() {
            self.send(to, &Message::Rumor(batch));
        }
    }

    fn send(&mut self, to: Peer, message: &Message) {
        let body = message.to_bytes();
        assert!(
            body.len() <= BODY_BYTES_MAX,
            "body of {} bytes exceeds the budget",
            body.len()
        );
        self.actions.push(Action::Send {
            to,
            kind: message.kind(),
            body,
        });
    }

    fn expire_waits(&mut self, now_ms: u64) {
        let (expired, waiting): (Vec<Wait>, Vec<Wait>) = std::mem::take(&mut self.waits)
            .into_iter()
            .partition(|w| w.deadline_ms <= now_ms);
        self.waits = waiting;
        for wait in expired {
            self.stats.writes_timed_out += 1;
            let acked_peers = wait.acked.len();
            self.actions.push(Action::AckTimeout {
                write_id: wait.write_id,
                acked_peers,
            });
        }
    }

    fn anti_entropy_tick(&mut self, now_ms: u64, context: Context<'_>) {
        let elapsed_ms = now_ms.saturating_sub(self.last_tick_ms.unwrap_or(now_ms));
        self.last_tick_ms = Some(now_ms);
        // Spread the partitions' rounds evenly over the interval instead of bursting.
        self.sync_credit += elapsed_ms * self.owned.len() as u64;
        let rounds_max = self.owned.len() as u64 * self.config.sync_interval_ms;
        self.sync_credit = self.sync_credit.min(rounds_max);
        while self.sync_credit >= self.config.sync_interval_ms && !context.view.is_empty() {
            self.sync_credit -= self.config.sync_interval_ms;
            let partition = self.owned[self.sync_cursor % self.owned.len()];
            self.sync_cursor += 1;
            let Some(peer) = self.random_peer(context.view) else {
                break;
            };
            let to = Peer {
                node: peer.node,
                shard: peer.owner_shard(partition),
            };
            let digest = anti_entropy::digest(context.store, partition);
            self.stats.sync_rounds += 1;
            self.send(to, &Message::SyncDigest { partition, digest });
        }
    }

    /// A uniformly random peer of the view other than this node.
    fn random_peer(&mut self, view: &[PeerInfo]) -> Option<PeerInfo> {
        let me = (ring_position(self.me), self.me);
        let index = view.partition_point(|peer| (peer.ring, peer.node) < me);
        let contains_me = view.get(index).is_some_and(|peer| peer.node == self.me);
        let others = view.len() - usize::from(contains_me);
        if others == 0 {
            return None;
        }
        // Rejection sampling: at most a few draws, since `me` is at most one of the entries.
        loop {
            let peer = view[self.rng.random_range(0..view.len())];
            if peer.node != self.me {
                return Some(peer);
            }
        }
    }

    /// A replication body from `from`; malformed bodies are rejected (count them) and change
    /// nothing.
    pub fn receive(
        &mut self,
        now_ms: u64,
        from: Peer,
        kind: u8,
        body: &[u8],
        context: Context<'_>,
    ) -> Result<(), DecodeError> {
        if kind == cpisync::RECONCILE {
            let (partitions, shards, shard) = (
                self.config.partitions,
                self.config.shards,
                self.config.shard,
            );
            let owned = |partition: u16| partition < partitions && partition % shards == shard;
            let step = self
                .sessions
                .receive(now_ms, from, body, &owned, context.store);
            self.perform_step(from, step);
            return Ok(());
        }
        match Message::decode(kind, body)? {
            Message::Rumor(delegations) => self.on_rumor(now_ms, from, delegations, context),
            Message::RumorAck(batches) => self.on_rumor_ack(from, &batches),
            Message::SyncDigest { partition, digest } => {
                if !self.owned_or_count(partition) {
                    return Ok(());
                }
                let ours = anti_entropy::digest(context.store, partition);
                let threshold = self.config.bulk_threshold;
                if ours == digest {
                    self.stats.sync_equal += 1;
                } else if digest.count > ours.count.saturating_add(threshold) {
                    self.start_catch_up(now_ms, from.node, context.view);
                } else if ours.count > digest.count.saturating_add(threshold) {
                    // Far behind us: our digest makes it pull (it never answers in kind).
                    self.stats.catch_up_offers += 1;
                    let reply = Message::SyncDigest {
                        partition,
                        digest: ours,
                    };
                    self.send(from, &reply);
                } else if self.pulls.is_empty() {
                    self.find_difference(now_ms, from, partition, context.store);
                }
            }
            Message::SyncElements {
                partition,
                lo,
                hi,
                elements,
            } => {
                if self.owned_or_count(partition) {
                    let store = context.store;
                    let (ours, need) =
                        anti_entropy::compare_page(store, partition, lo, hi, &elements);
                    self.ship(from, partition, &ours);
                    for message in anti_entropy::need_messages(partition, &need) {
                        self.send(from, &message);
                    }
                }
            }
            Message::SyncNeed {
                partition,
                elements,
            } => {
                if self.owned_or_count(partition) {
                    let entries = anti_entropy::entries_for(context.store, partition, &elements);
                    self.ship(from, partition, &entries);
                }
            }
            Message::SyncEntries { partition, entries } => {
                if self.owned_or_count(partition) {
                    self.on_sync_entries(now_ms, from, entries, context);
                }
            }
        }
        Ok(())
    }

    /// Starts pulling everything this shard owns from `node`'s shards that hold any of it,
    /// unless a catch-up runs or the last one ended less than a sync interval ago, or less
    /// than [`USELESS_CATCH_UP_BACKOFF`] intervals ago if it was from the same peer and
    /// brought fewer than `bulk_threshold` newer entries: counts can stay apart for reasons a
    /// pull does not fix (say, tombstones one side has collected and the other not yet), and
    /// pulling a whole shard every interval for them would be a traffic storm.
    fn start_catch_up(&mut self, now_ms: u64, node: NodeId, view: &[PeerInfo]) {
        if let Some(last) = &self.last_catch_up {
            let useless = last.from == node && self.catch_up_applied < self.config.bulk_threshold;
            let intervals = if useless { USELESS_CATCH_UP_BACKOFF } else { 1 };
            if now_ms < last.ended_ms + intervals * self.config.sync_interval_ms {
                return;
            }
        }
        let Some(peer) = view.iter().find(|peer| peer.node == node) else {
            return;
        };
        if !self.pulls.is_empty() {
            return;
        }
        self.stats.catch_ups += 1;
        self.catch_up_applied = 0;
        let (partitions, shards, shard) = (
            self.config.partitions,
            self.config.shards,
            self.config.shard,
        );
        for peer_shard in 0..peer.shards {
            let holds_ours =
                (0..partitions).any(|p| p % shards == shard && peer.owner_shard(p) == peer_shard);
            if holds_ours {
                let from = Peer {
                    node,
                    shard: peer_shard,
                };
                self.request_page(from, None);
            }
        }
    }

    fn request_page(&mut self, from: Peer, after: Option<Vec<u8>>) {
        let token = self.token_next;
        self.token_next += 1;
        self.pulls.insert(token, from);
        self.actions.push(Action::Pull { token, from, after });
    }

    /// A page of an [`Action::Pull`] arrived (`more`: ask for the next one). The newer
    /// entries are applied like fetched ones; the next page is asked for at once, so at most
    /// two pages per peer shard are held.
    pub fn pulled(
        &mut self,
        now_ms: u64,
        token: u64,
        entries: Vec<Entry>,
        more: bool,
        context: Context<'_>,
    ) {
        let Some(from) = self.pulls.remove(&token) else {
            return;
        };
        self.stats.pull_pages += 1;
        self.stats.pull_entries += entries.len() as u64;
        match entries.last() {
            Some(last) if more => self.request_page(from, Some(last.key.clone())),
            _ if self.pulls.is_empty() => {
                self.last_catch_up = Some(LastCatchUp {
                    from: from.node,
                    ended_ms: now_ms,
                });
            }
            _ => {}
        }
        let token = self.token_next;
        self.token_next += 1;
        let pending = Pending {
            purpose: Purpose::CatchUp,
            inline: Vec::new(),
            observed: Vec::new(),
        };
        self.pending.insert(token, pending);
        self.fetched(now_ms, token, entries, context);
    }

    /// Digests differ: run a CPISync session (we initiate) or list our elements.
    fn find_difference(&mut self, now_ms: u64, peer: Peer, partition: u16, store: &dyn Store) {
        match self.config.anti_entropy {
            AntiEntropyMode::CpisyncKept | AntiEntropyMode::Cpisync => {
                let session_id = self.rng.random::<u64>();
                let step = self
                    .sessions
                    .start(now_ms, peer, session_id, partition, store);
                self.perform_step(peer, step);
            }
            AntiEntropyMode::ElementList => {
                for page in anti_entropy::element_pages(store, partition) {
                    self.send(peer, &page);
                }
            }
        }
    }

    fn perform_step(&mut self, peer: Peer, step: cpisync::Step) {
        for body in step.bodies {
            debug_assert!(body.len() <= BODY_BYTES_MAX);
            self.actions.push(Action::Send {
                to: peer,
                kind: cpisync::RECONCILE,
                body,
            });
        }
        if !step.ship.is_empty() {
            self.ship(peer, step.partition, &step.ship);
        }
    }

    /// Counters of CPISync anti-entropy.
    pub fn cpisync_stats(&self) -> &cpisync::CpisyncStats {
        &self.sessions.stats
    }

    /// Partition sketches held now (each ~256 KiB plus its element → key index).
    pub fn sketches_held(&self) -> usize {
        self.sessions.indexes()
    }

    fn owned_or_count(&mut self, partition: u16) -> bool {
        let owned = partition < self.config.partitions && self.owns(partition);
        if !owned {
            self.stats.entries_misrouted += 1;
        }
        owned
    }

    fn ship(&mut self, to: Peer, partition: u16, entries: &[Entry]) {
        self.stats.sync_entries_sent += entries.len() as u64;
        for message in anti_entropy::entry_messages(partition, entries, RUMOR_ENTRY_BYTES_MAX) {
            self.send(to, &message);
        }
    }

    fn on_rumor_ack(&mut self, from: Peer, batches: &[u64]) {
        self.dissemination.acked(from, batches);
        let mut index = 0;
        while index < self.waits.len() {
            let wait = &mut self.waits[index];
            if batches.contains(&wait.batch) && !wait.acked.contains(&from.node) {
                wait.acked.push(from.node);
            }
            if wait.acked.len() >= wait.peers {
                let write_id = wait.write_id;
                self.waits.swap_remove(index);
                self.stats.writes_acked += 1;
                self.actions.push(Action::Acked { write_id });
            } else {
                index += 1;
            }
        }
    }

    fn on_rumor(
        &mut self,
        now_ms: u64,
        from: Peer,
        delegations: Vec<Delegation>,
        context: Context<'_>,
    ) {
        let mut ack_now = Vec::new();
        let mut fresh = Vec::new();
        for mut delegation in delegations {
            if !self
                .dissemination
                .first_sight(now_ms, delegation.batch, delegation.arc)
            {
                // A retransmission: ack unless the first copy is still being made durable.
                if !self.batch_pending(delegation.batch) {
                    ack_now.push(delegation.batch);
                }
                continue;
            }
            let partitions = self.config.partitions;
            let before = delegation.entries.len();
            delegation
                .entries
                .retain(|e| self.owns(partition_of(&e.key, partitions)));
            self.stats.entries_misrouted += (before - delegation.entries.len()) as u64;
            fresh.push(delegation);
        }
        if !ack_now.is_empty() {
            self.queue_acks(now_ms, from, ack_now);
            self.send_due(now_ms);
        }
        if fresh.is_empty() {
            return;
        }
        let entries: Vec<WireEntry> = fresh
            .iter()
            .flat_map(|d| d.entries.iter().cloned())
            .collect();
        self.absorb(
            now_ms,
            from,
            Purpose::Rumor {
                from,
                delegations: fresh,
            },
            entries,
            context,
        );
    }

    fn batch_pending(&self, batch: u64) -> bool {
        self.pending.values().any(|pending| match &pending.purpose {
            Purpose::Rumor { delegations, .. } => delegations.iter().any(|d| d.batch == batch),
            Purpose::Sync | Purpose::CatchUp => false,
        })
    }

    fn on_sync_entries(
        &mut self,
        now_ms: u64,
        from: Peer,
        entries: Vec<WireEntry>,
        context: Context<'_>,
    ) {
        self.absorb(now_ms, from, Purpose::Sync, entries, context);
    }

    /// Splits received entries into duplicates, inline newer ones and announced newer ones,
    /// then applies (after fetching, if needed) or finishes at once.
    fn absorb(
        &mut self,
        now_ms: u64,
        from: Peer,
        purpose: Purpose,
        entries: Vec<WireEntry>,
        context: Context<'_>,
    ) {
        let mut inline = Vec::new();
        let mut fetch = Vec::new();
        for wire in entries {
            let newer = context
                .store
                .version(&wire.key)
                .is_none_or(|stored| stored < wire.version);
            if !newer {
                self.stats.entries_duplicate += 1;
                continue;
            }
            match wire.to_entry() {
                Some(entry) => inline.push(entry),
                None => fetch.push(wire.key),
            }
        }
        if inline.is_empty() && fetch.is_empty() {
            self.finish(now_ms, purpose, context);
            return;
        }
        let token = self.token_next;
        self.token_next += 1;
        if fetch.is_empty() {
            let observed = self.to_observe(&inline);
            self.actions.push(Action::Apply {
                token,
                entries: inline,
            });
            self.pending.insert(
                token,
                Pending {
                    purpose,
                    inline: Vec::new(),
                    observed,
                },
            );
        } else {
            self.stats.fetches += 1;
            self.actions.push(Action::Fetch {
                token,
                from,
                keys: fetch,
            });
            self.pending.insert(
                token,
                Pending {
                    purpose,
                    inline,
                    observed: Vec::new(),
                },
            );
        }
    }

    /// The result of an [`Action::Fetch`]: the entries that arrived (possibly none).
    pub fn fetched(&mut self, now_ms: u64, token: u64, entries: Vec<Entry>, context: Context<'_>) {
        let Some(mut pending) = self.pending.remove(&token) else {
            return;
        };
        for entry in entries {
            let newer = context
                .store
                .version(&entry.key)
                .is_none_or(|stored| stored < entry.version);
            let owned = self.owns(partition_of(&entry.key, self.config.partitions));
            if newer && owned {
                pending.inline.push(entry);
            }
        }
        if pending.inline.is_empty() {
            self.finish(now_ms, pending.purpose, context);
            return;
        }
        let entries = std::mem::take(&mut pending.inline);
        pending.observed = self.to_observe(&entries);
        self.actions.push(Action::Apply { token, entries });
        self.pending.insert(token, pending);
    }

    /// The result of an [`Action::Apply`], once durable: per entry, whether it was newer.
    pub fn applied(&mut self, now_ms: u64, token: u64, newer: &[bool], context: Context<'_>) {
        let Some(pending) = self.pending.remove(&token) else {
            return;
        };
        if !pending.observed.is_empty() {
            debug_assert_eq!(pending.observed.len(), newer.len());
            for (entry, _) in pending.observed.iter().zip(newer).filter(|(_, n)| **n) {
                self.sessions.observe(self.config.partitions, entry);
            }
        }
        let written = newer.iter().filter(|&&newer| newer).count() as u64;
        self.stats.entries_applied += written;
        if matches!(pending.purpose, Purpose::CatchUp) {
            self.catch_up_applied += written;
        }
        self.stats.entries_duplicate += newer.len() as u64 - written;
        self.finish(now_ms, pending.purpose, context);
    }

    /// Copies of `entries` for [`Replicator::applied`] to feed the partition indexes, or none
    /// if no index tracks their partitions (all entries of an `Apply` or none, to zip).
    fn to_observe(&self, entries: &[Entry]) -> Vec<Entry> {
        let partitions = self.config.partitions;
        let tracked = entries
            .iter()
            .any(|entry| self.sessions.tracks(partition_of(&entry.key, partitions)));
        if tracked {
            entries.to_vec()
        } else {
            Vec::new()
        }
    }

    /// Durable: ack the parent and take on the batches for their arcs.
    fn finish(&mut self, now_ms: u64, purpose: Purpose, context: Context<'_>) {
        let Purpose::Rumor { from, delegations } = purpose else {
            return;
        };
        let batches: Vec<u64> = delegations.iter().map(|d| d.batch).collect();
        self.queue_acks(now_ms, from, batches);
        for mut delegation in delegations {
            // Pass on only what this shard holds at least as new (a failed fetch is not).
            delegation.entries.retain(|wire| {
                context
                    .store
                    .version(&wire.key)
                    .is_some_and(|stored| stored >= wire.version)
            });
            let batch = delegation.batch;
            // Straight from its writer: wait for other writers' batches to merge with.
            let from_writer =
                (delegation.entries.first()).is_some_and(|entry| entry.version.node == from.node);
            let linger_ms = if from_writer {
                self.config.dissemination.linger_ms
            } else {
                0
            };
            self.dissemination
                .hold(batch, delegation.arc, delegation.entries);
            if self.config.dissemination.forward_on_receipt {
                let (view, me) = (context.view, self.me);
                let send_at_ms = now_ms + linger_ms;
                let sends = self.dissemination.forward_now(send_at_ms, batch, view, me);
                self.queue_rumors(now_ms, linger_ms, sends);
            }
        }
        self.send_due(now_ms);
    }
}

/// Removes and returns the outboxes due at `now_ms`, in peer order.
fn take_due<T>(outboxes: &mut BTreeMap<Peer, Outbox<T>>, now_ms: u64) -> Vec<(Peer, Vec<T>)> {
    let due: Vec<Peer> = (outboxes.iter())
        .filter(|(_, outbox)| outbox.due_ms <= now_ms)
        .map(|(peer, _)| *peer)
        .collect();
    due.into_iter()
        .filter_map(|peer| Some((peer, outboxes.remove(&peer)?.items)))
        .collect()
}

/// Whether a payload is announced-only (used by callers that serve fetches).
pub fn is_announced(wire: &WireEntry) -> bool {
    matches!(wire.payload, Payload::Announced { .. })
}
