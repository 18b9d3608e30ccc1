//! SWIM membership and failure detection with the Lifeguard extensions, as a sans-IO state
//! machine in the style of quinn-proto.
//!
//! Papers: Das, Gupta, Motivala, "SWIM" (DSN 2002); Dadgar, Phillips, Currey, "Lifeguard:
//! Local Health Awareness for More Accurate Failure Detection" (2018). The message flow follows
//! HashiCorp memberlist where the papers leave choices open.
//!
//! # Driving it
//! Feed [`Membership::handle_datagram`] (bodies of membership kinds, after
//! [`crate::gossip::wire::open`] and the replay check) and [`Membership::handle_timeout`] when
//! [`Membership::poll_timeout`] has passed; after each call drain [`Membership::poll_transmit`]
//! (seal and send) and [`Membership::poll_event`]. Other modules carry membership updates in
//! their own datagrams with [`Membership::piggyback`] / [`Membership::absorb`].
//!
//! # Protocol
//! Every probe interval the node pings the next member of a shuffled round-robin list. No ack
//! within the probe timeout → it asks `indirect_checks` random members to ping the target
//! (ping-req; a relay that gets no answer returns a nack) and retries the direct ping once. No
//! ack by the end of the interval → the target becomes Suspect (and is sent the suspicion at
//! once, so a live one refutes quickly). A suspect is declared Dead when its suspicion timeout
//! expires, unless it refutes by gossiping Alive with a higher incarnation. Updates
//! (Alive/Suspect/Dead/Left with incarnation) ride on every datagram, each retransmitted
//! λ·ceil(log10(N+1)) times; a separate gossip round sends queued updates to `gossip_fanout`
//! members every gossip interval. Join = push-pull of full state with the seeds (retried until
//! a member is known, then once more with another member); push-pull repeats periodically.
//!
//! Two additions to SWIM, both found necessary by the 10 %-loss tests: relays keep forwarding
//! a late ack after they nacked (a slow target is not a dead one), and before a suspicion
//! timer declares death the node pings the suspect eight times, carrying the suspicion. A live
//! suspect answers with its newer Alive record (any stale accusation about itself makes it
//! re-announce), which repairs the case where the refutation rumor died out before reaching
//! this node. Cost: two probe intervals more for detection, eight datagrams per deciding node.
//!
//! Lifeguard: the local health multiplier (awareness score 0..awareness_max) rises on failed
//! probes with missing nacks and on refuting a suspicion about ourselves, falls on successful
//! direct probes, and multiplies the probe interval and timeouts, so a node that is itself slow
//! or lossy probes less eagerly instead of accusing healthy members. The suspicion timeout
//! starts at β·floor and shrinks to floor = max(floor_min, α·max(1, log10 N)·probe_interval)
//! as independent members confirm the suspicion.
//!
//! # Defaults (see [`Config::default`]) and why
//! Goal: a crashed node is Dead at every live node within 5 s at N = 10,000 and 1 % loss, and
//! no healthy node is declared dead in an hour at 10 % loss.
//! - probe interval 200 ms, probe timeout 100 ms (LAN RTTs are ≪ 100 ms), k = 5 relays plus one
//!   direct retry. A healthy target is falsely suspected only if the ping or ack is lost
//!   (1 − 0.9² = 0.19 at 10 % loss), the retry too (0.19), and all five 4-hop relay paths
//!   (1 − 0.9⁴ = 0.34 each): p ≈ 0.19 · 0.19 · 0.34⁵ ≈ 1.6·10⁻⁴ per probe.
//!   Why 5 and not memberlist's 3 (p ≈ 1.5·10⁻³): every false suspicion costs two rumors to
//!   all N nodes (the suspicion and its refutation), N · 5 · p a second. At N = 10,000 and 10 %
//!   loss k = 3 made ~75 a second, far more than the piggyback capacity (then ~12 updates on
//!   each of ~30 datagrams a node sends per second) can retransmit λ·log N times each; each rumor
//!   then got ~2 sends per node, missed ~10 % of the nodes (e^−f for f sends), and the nodes
//!   that had the suspicion but not the refutation went to their final check: `starling-sim`
//!   counted 9,164 false deaths (1,302 nodes) in 20 s. k = 5 makes ~8 a second; the two extra
//!   relays cost 4 datagrams per probe whose first ping failed (19 % of probes at 10 % loss,
//!   2 % at 1 %).
//! - Up to 32 updates per datagram (as many as fit the body; memberlist fills its packets too):
//!   with k = 5 and 12 per datagram the queues at N = 10,000 and 10 % loss still grew by ~25
//!   updates a second per node (mean 854 queued after 30 s simulated), so rumors were still cut
//!   short; with 32 they stay at a mean of ~16 (`starling-sim --nodes 10000 --membership on
//!   --loss 0.1`, seed 1, 10–30 s). Quiet clusters send the same datagrams as before.
//! - α = 2, β = 4, floor ≥ 2 s: at N = 10,000 the floor is max(2 s, 2·4·0.2 s) = 2 s and the
//!   ceiling 8 s. A crashed node is probed by ~1 member per interval, so k = 3 independent
//!   suspicions arrive within ~1 s and the timeout drops to the floor: first suspicion ≈ 0.2–0.6
//!   s, Dead ≈ 2.6–3 s at the first nodes (floor + a final check of two probe intervals), and the
//!   Dead rumor reaches all nodes in ≈ log₄ N + ln N / 3 ≈ 10 gossip rounds at most (in practice
//!   ≈ 0.6 s). Measured with `starling-sim --membership on --loss 0.01 --kill 5`: every live
//!   node saw each crash within 3.7 s at N = 2,000 (k = 5, eight final pings), 3.4 s at
//!   N = 10,000 (`--kill 1`; k = 5, three final pings).
//!   A false suspicion normally has a single origin, so it runs on the 8 s ceiling while the
//!   refutation spreads as fast as the suspicion did; before declaring death the suspecting
//!   node pings the suspect more times (eight since N = 10,000 runs; see
//!   `FINAL_CHECK_PINGS` in `apply.rs`) carrying the suspicion. With a 1 s floor and two
//!   final pings the simulator saw 66 false deaths in 1 h at 10 % loss (N = 200); with these
//!   values, 0 in 1 h at 10 % loss for seeds 1–3.
//! - λ = 4 (memberlist's value): 20 transmissions per update at N = 10,000.
//! - push-pull every 30 s, scaled by ceil(log2 N − 5) + 1 above 32 members (memberlist's rule),
//!   so large clusters do not spend their bandwidth on full-state exchange.
//!
//! # Limits and memory
//! Members ≤ `members_max`; every queue is bounded (`broadcast_queue_max`,
//! `transmit_queue_max`, `event_queue_max`, `relays_max`, `seeds_max`) and overflow is counted
//! in [`Stats`]. Per member: a 64-byte slot, 8–16 bytes of id index (an open-addressing table
//! of slot numbers, see `index.rs`), 8–16 bytes in the probe order: ≈ 80–96 bytes (a table
//! loaded with [`Membership::insert_known_members`] is sized exactly), plus ≈ 100 bytes per
//! queued update (a 56-byte packed record, its order entry and index entry; at most
//! `broadcast_queue_max`) and ≈ 150 bytes while it is suspected. A simulator running all N
//! memberships of an N = 10,000 cluster in one process therefore needs ≈ 8 GB for the tables
//! and, once lossy traffic fills the queues, up to ≈ 8 GB more for them.

mod apply;
mod broadcast;
pub mod codec;
mod config;
mod index;
mod member;
mod suspicion;
mod timers;

#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, VecDeque};
use std::net::SocketAddr;

use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;

use self::broadcast::BroadcastQueue;
use self::codec::{DecodeError, Message, Update, decode_section, encode_section};
pub use self::config::Config;
use self::index::{IdHasherBuilder, IdIndex};
pub use self::member::{LocalNode, Member, MemberEvent, MemberState, Transmit};
use self::suspicion::Suspicion;
use crate::gossip::wire::{BODY_BYTES_MAX, Kind, NodeId};

/// Counters for metrics. All monotonic.
#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Direct probes started.
    pub probes_sent: u64,
    /// Probes that ended without any ack (target suspected).
    pub probes_failed: u64,
    /// Ping-reqs sent.
    pub indirect_probes_sent: u64,
    /// Suspicions started here (ours or learned).
    pub suspicions_started: u64,
    /// Members declared dead by our own suspicion timer.
    pub deaths_declared: u64,
    /// Times we refuted a suspicion (or death) about ourselves.
    pub refutations: u64,
    /// Membership bodies that failed to decode.
    pub decode_errors: u64,
    /// Datagrams dropped because the transmit queue was full.
    pub transmits_dropped: u64,
    /// Events dropped because nobody drained them.
    pub events_dropped: u64,
    /// Updates about new members ignored because `members_max` was reached.
    pub members_rejected: u64,
    /// Ping-reqs ignored because `relays_max` relays were in flight.
    pub relays_rejected: u64,
    /// Updates evicted from a full broadcast queue.
    pub broadcasts_dropped: u64,
}

/// One member as stored: its record and when its state last changed.
#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Copy, Debug)]
struct Slot {
    member: Member,
    since_ms: u64,
}

/// The probe in flight.
#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Copy, Debug)]
struct Probe {
    target: NodeId,
    addr: SocketAddr,
    sequence: u32,
    ack_deadline_ms: u64,
    indirect_sent: bool,
    nacks_expected: u32,
    nacks_received: u32,
}

/// An indirect probe we run for another member.
#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Copy, Debug)]
struct Relay {
    sequence: u32,
    requester: SocketAddr,
    requester_sequence: u32,
    /// When to nack if the target has not answered (Lifeguard).
    deadline_ms: u64,
    /// Whether the nack went out; the relay still forwards a late ack until `expiry_ms`.
    nacked: bool,
    /// When the requester's probe is over for sure: forget the relay.
    expiry_ms: u64,
}

/// The membership state machine of one node (run by shard 0).
#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
#[derive(Debug)]
pub struct Membership {
    config: Config,
    me: LocalNode,
    incarnation: u32,
    rng: Xoshiro256PlusPlus,
    slots: Vec<Slot>,
    index: IdIndex,
    /// Slots whose state is Alive or Suspect.
    live_count: usize,
    probe_order: Vec<NodeId>,
    probe_cursor: usize,
    probe: Option<Probe>,
    sequence_next: u32,
    /// Lifeguard awareness score, `0..config.awareness_max`; timeouts scale by score + 1.
    awareness: u32,
    #[cfg_attr(feature = "snapshot", serde(with = "index::suspicions_serde"))]
    suspicions: hashbrown::HashMap<NodeId, Suspicion, IdHasherBuilder>,
    suspicion_deadlines: BTreeSet<(u64, NodeId)>,
    relays: VecDeque<Relay>,
    broadcasts: BroadcastQueue,
    transmits: VecDeque<Transmit>,
    events: VecDeque<MemberEvent>,
    /// (state change time, member) of Dead/Left members, oldest first, for forgetting them.
    reap_queue: VecDeque<(u64, NodeId)>,
    seeds: Vec<SocketAddr>,
    next_probe_ms: u64,
    next_gossip_ms: u64,
    next_push_pull_ms: u64,
    next_join_ms: Option<u64>,
    leave_started_ms: Option<u64>,
    stats: Stats,
}

impl Membership {
    /// A node that knows only itself. `seed` makes every random choice reproducible.
    ///
    /// # Panics
    /// If `config` fails [`Config::validate`].
    pub fn new(me: LocalNode, config: Config, seed: u64, now: u64) -> Self {
        if let Err(problem) = config.validate() {
            panic!("invalid membership config: {problem}");
        }
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let hash_key = index::key_from_seed(seed);
        // Random phases keep nodes that start together from probing in lockstep.
        let probe_phase = rand::Rng::random_range(&mut rng, 0..config.probe_interval_ms);
        let gossip_phase = rand::Rng::random_range(&mut rng, 0..config.gossip_interval_ms);
        let push_pull_phase = rand::Rng::random_range(&mut rng, 0..config.push_pull_interval_ms);
        let mut membership = Self {
            broadcasts: BroadcastQueue::new(config.broadcast_queue_max, hash_key),
            next_probe_ms: now + probe_phase,
            next_gossip_ms: now + gossip_phase,
            next_push_pull_ms: now + config.push_pull_interval_ms / 2 + push_pull_phase,
            config,
            me,
            incarnation: 0,
            rng,
            slots: Vec::new(),
            index: IdIndex::new(hash_key),
            live_count: 0,
            probe_order: Vec::new(),
            probe_cursor: 0,
            probe: None,
            sequence_next: 0,
            awareness: 0,
            suspicions: hashbrown::HashMap::with_hasher(IdHasherBuilder::new(hash_key)),
            suspicion_deadlines: BTreeSet::new(),
            relays: VecDeque::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            reap_queue: VecDeque::new(),
            seeds: Vec::new(),
            next_join_ms: None,
            leave_started_ms: None,
            stats: Stats::default(),
        };
        membership.broadcast_self();
        membership
    }

    /// Starts joining through `seeds` (addresses of any members' shard 0 gossip ports):
    /// a push-pull state exchange with each, retried every `join_retry_ms` until a member is
    /// known. Our own address is skipped, so every node may be given the same seed list.
    pub fn join(&mut self, seeds: &[SocketAddr], now: u64) {
        self.seeds = seeds
            .iter()
            .copied()
            .filter(|seed| *seed != self.me.addr)
            .take(self.config.seeds_max)
            .collect();
        self.seeds.dedup();
        if self.seeds.is_empty() {
            return;
        }
        self.send_join(now);
    }

    /// Leaves gracefully: gossips Left about ourselves for `leave_propagate_ms`, then goes
    /// quiet ([`Membership::poll_timeout`] returns `None`). Probing stops at once.
    pub fn leave(&mut self, now: u64) {
        if self.leave_started_ms.is_some() {
            return;
        }
        self.leave_started_ms = Some(now);
        self.probe = None;
        self.next_join_ms = None;
        let update = Update {
            member: self.local(),
            origin: 0,
        };
        self.broadcasts.push(update);
        let targets = self.random_members(self.config.gossip_fanout * 2, |member| {
            member.state.is_live()
        });
        for index in targets {
            let to = self.slots[index].member.addr;
            self.send_gossip(to);
        }
    }

    /// Learns `members` as if their Alive records had arrived by push-pull, but without
    /// queuing rumors or events: for simulators and tests that start from a converged cluster.
    /// Records about ourselves, non-Alive records and records beyond `members_max` are skipped.
    pub fn insert_known_members(&mut self, members: &[Member], now: u64) {
        // Exact sizes: a simulator holds thousands of these tables at once.
        let wanted = (self.slots.len() + members.len()).min(self.config.members_max);
        self.slots
            .reserve_exact(wanted.saturating_sub(self.slots.len()));
        self.index.reserve(wanted, &self.slots);
        for member in members {
            let known = self.index.get(member.id, &self.slots).is_some();
            let fits = self.slots.len() < self.config.members_max;
            if member.id == self.me.id || member.state != MemberState::Alive || known || !fits {
                continue;
            }
            self.index.insert(member.id, self.slots.len(), &self.slots);
            self.slots.push(Slot {
                member: *member,
                since_ms: now,
            });
            self.live_count += 1;
        }
        // A fresh shuffled round covers the new members.
        self.probe_cursor = self.probe_order.len();
        debug_assert_eq!(self.index.len(), self.slots.len());
    }

    /// Whether `leave` was called and its propagation time is over.
    pub fn has_left(&self) -> bool {
        self.leave_started_ms.is_some() && self.leave_done(self.next_gossip_ms)
    }

    fn leave_done(&self, now: u64) -> bool {
        self.leave_started_ms
            .is_some_and(|started| now >= started + self.config.leave_propagate_ms)
    }

    /// Handles the body of a membership datagram from `from` (the UDP source address).
    /// `kind` comes from the authenticated header. Malformed bodies are counted and rejected.
    pub fn handle_datagram(
        &mut self,
        from: SocketAddr,
        kind: Kind,
        body: &[u8],
        now: u64,
    ) -> Result<(), DecodeError> {
        let message = match Message::decode(kind, body) {
            Ok(message) => message,
            Err(error) => {
                self.stats.decode_errors += 1;
                return Err(error);
            }
        };
        if self.leave_started_ms.is_some() {
            return Ok(());
        }
        self.handle_message(from, message, now);
        Ok(())
    }

    /// Appends an update section of at most `space_bytes` bytes (nothing if `space_bytes` is 0)
    /// for another module's datagram; the receiver passes it to [`Membership::absorb`].
    pub fn piggyback(&mut self, space_bytes: usize, out: &mut Vec<u8>) {
        if space_bytes == 0 {
            return;
        }
        let updates = self.take_updates(space_bytes - 1);
        let start = out.len();
        encode_section(&updates, out);
        debug_assert!(out.len() - start <= space_bytes);
    }

    /// Applies an update section produced by [`Membership::piggyback`] on another node.
    pub fn absorb(&mut self, section: &[u8], now: u64) -> Result<(), DecodeError> {
        let updates = match decode_section(section) {
            Ok(updates) => updates,
            Err(error) => {
                self.stats.decode_errors += 1;
                return Err(error);
            }
        };
        if self.leave_started_ms.is_none() {
            self.apply_updates(&updates, now);
        }
        Ok(())
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next membership change.
    pub fn poll_event(&mut self) -> Option<MemberEvent> {
        self.events.pop_front()
    }

    /// All known members except ourselves, in every state (Dead and Left ones until forgotten).
    pub fn members(&self) -> impl Iterator<Item = &Member> + '_ {
        self.slots.iter().map(|slot| &slot.member)
    }

    /// Alive and Suspect members except ourselves.
    pub fn live_members(&self) -> impl Iterator<Item = &Member> + '_ {
        self.members().filter(|member| member.state.is_live())
    }

    /// Number of Alive and Suspect members except ourselves.
    pub fn live_count(&self) -> usize {
        self.live_count
    }

    /// One member by id.
    pub fn member(&self, id: NodeId) -> Option<&Member> {
        self.index
            .get(id, &self.slots)
            .map(|index| &self.slots[index].member)
    }

    /// Our own record (Alive, or Left after `leave`).
    pub fn local(&self) -> Member {
        let state = if self.leave_started_ms.is_some() {
            MemberState::Left
        } else {
            MemberState::Alive
        };
        Member::from_local(&self.me, self.incarnation, state)
    }

    /// Lifeguard awareness score (0 = healthy); timeouts are multiplied by score + 1.
    pub fn awareness(&self) -> u32 {
        self.awareness
    }

    /// Counters for metrics.
    pub fn stats(&self) -> Stats {
        Stats {
            broadcasts_dropped: self.broadcasts.dropped,
            ..self.stats.clone()
        }
    }

    /// Updates waiting for (re)transmission.
    pub fn updates_pending(&self) -> usize {
        self.broadcasts.len()
    }

    fn handle_message(&mut self, from: SocketAddr, message: Message, now: u64) {
        match message {
            Message::Ping {
                sequence,
                target,
                updates,
            } => {
                self.apply_updates(&updates, now);
                if target == self.me.id {
                    self.send_ack(from, sequence);
                }
            }
            Message::Ack { sequence, updates } => {
                self.apply_updates(&updates, now);
                self.on_ack(from, sequence);
            }
            Message::Nack { sequence, updates } => {
                self.apply_updates(&updates, now);
                self.on_nack(sequence);
            }
            Message::PingReq {
                sequence,
                target,
                target_addr,
                updates,
            } => {
                self.apply_updates(&updates, now);
                self.start_relay(from, sequence, target, target_addr, now);
            }
            Message::PushPull { flags, records } => {
                self.merge_remote_state(&records, now);
                if flags & codec::PUSH_PULL_REPLY_WANTED != 0 {
                    self.send_push_pull(from, 0);
                }
            }
            Message::Gossip { updates } => self.apply_updates(&updates, now),
        }
    }

    /// Timeouts scaled by the local health multiplier.
    fn scaled_ms(&self, base_ms: u64) -> u64 {
        base_ms * u64::from(self.awareness + 1)
    }

    fn adjust_awareness(&mut self, delta: i64) {
        let max = i64::from(self.config.awareness_max - 1);
        let next = (i64::from(self.awareness) + delta).clamp(0, max);
        self.awareness = u32::try_from(next).unwrap_or(0);
    }

    /// Nodes in the cluster as we see it, including us.
    fn cluster_size(&self) -> usize {
        self.live_count + 1
    }

    fn transmit_limit(&self) -> u32 {
        let scale = ((self.cluster_size() + 1) as f64).log10().ceil().max(1.0);
        (f64::from(self.config.retransmit_mult) * scale) as u32
    }

    fn take_updates(&mut self, bytes_max: usize) -> Vec<Update> {
        self.take_some_updates(self.config.updates_per_datagram_max, bytes_max)
    }

    /// At most `count` queued updates fitting in `bytes_max`, each counted as sent once.
    fn take_some_updates(&mut self, count: usize, bytes_max: usize) -> Vec<Update> {
        let limit = self.transmit_limit();
        self.broadcasts.take(count, bytes_max, limit)
    }

    fn next_sequence(&mut self) -> u32 {
        let sequence = self.sequence_next;
        self.sequence_next = self.sequence_next.wrapping_add(1);
        sequence
    }

    fn push_transmit(&mut self, to: SocketAddr, message: &Message) {
        let mut body = Vec::new();
        message.encode(&mut body);
        assert!(
            body.len() <= BODY_BYTES_MAX,
            "membership body of {} bytes",
            body.len()
        );
        if self.transmits.len() >= self.config.transmit_queue_max {
            self.stats.transmits_dropped += 1;
            return;
        }
        self.transmits.push_back(Transmit {
            to,
            kind: message.kind(),
            body,
        });
    }

    fn push_event(&mut self, event: MemberEvent) {
        if self.events.len() >= self.config.event_queue_max {
            self.events.pop_front();
            self.stats.events_dropped += 1;
        }
        self.events.push_back(event);
    }

    fn broadcast_self(&mut self) {
        let update = Update {
            member: self.local(),
            origin: 0,
        };
        self.broadcasts.push(update);
    }
}
