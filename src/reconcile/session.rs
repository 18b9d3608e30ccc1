//! The interactive reconciliation session: a sans-IO state machine (RECONCILE.md §7).
//!
//! The initiator opens with its size and χ of the whole range at [`OPEN_POINTS`] points (the
//! digest). The responder drives everything after that: it asks for sketches of ranges
//! ([`Message::Request`]), decodes each range, and splits a range or asks for more points when
//! a decode fails. The initiator only answers requests from a snapshot of its sketch.
//!
//! Range planning. Ranges form a tree over the hash range (see [`NodeId`]). A failed range is
//! either extended (more points of the same range: nothing sent before is wasted) or split into
//! 2^s children. Splitting reuses what was sent: the last child's values are the parent's
//! divided by its siblings' (χ is multiplicative over disjoint ranges), so only 2^s − 1 children
//! are requested. How many points and pieces to ask for comes from an estimate of the
//! difference density: after the first failure the responder probes the left spine of the tree
//! (one range per level), which yields ranges of every size from 1/2 to 1/256 of the set, and
//! decoded ranges give the density. A split plans its pieces for [`PIECE_POINTS`] points so root
//! finding stays cheap (its cost grows with the square of a piece's difference).
//!
//! Results. The responder learns both differences exactly (roots of P and Q). The initiator
//! learns which of its elements the responder lacks from fingerprints (Resolve messages), the
//! low bits of each element (bit-packed), sized per range so that at most 1/16 false match is expected
//! per range: it may ship a few entries the responder already has, never misses one.
//!
//! Loss, duplication, reordering: every message is idempotent. The responder tracks what it
//! asked for and has not received and re-asks on [`Responder::on_timeout`]; `Finish` (which
//! carries the number of resolves) is resent until `FinishAck`; an initiator missing resolves
//! answers a repeated `Finish` (or its own timeout) with `Missing`, and the responder resends
//! those. The initiator resends `Open` until it hears back.

use super::decode::{self, HOLD_BACK};
use super::element::{self, POSITION_BITS};
use super::field;
use super::sketch::{
    LEAF_BITS, LEAF_POINTS, LOOKUP_BITS, PartitionSketch, Snapshot, leaf_of, sample_points,
};
use super::wire::{self, LEVEL_MAX, Message, NodeId, RequestItem, ResolveItem, SketchItem};
use std::collections::{BTreeMap, BTreeSet};

/// Points of the whole range sent with `Open`: sets differing by up to 13 reconcile in one
/// round trip.
pub const OPEN_POINTS: usize = 16;

/// Points a split plans each piece for (≈ 38 expected differences). Root finding grows with
/// the square of a piece's difference, while smaller pieces spend more points on held-back
/// points and margins; and a piece needs room below [`LEAF_POINTS`] to be extended when its
/// difference was underestimated (d = 10,000 over 10^6 elements: 44 → 116.6 KB, 62 ms; pieces
/// planned for 64 points fail at the leaves and are split again: 139 KB, 73 ms).
pub const PIECE_POINTS: usize = 44;

/// A range is cut into pieces only when it is at most this many times the part of the hash
/// range already decoded (whose differences the density estimate rests on).
const RISK_FACTOR: f64 = 1e9;

/// Share of the hash range a node covers.
fn fraction_of(id: NodeId) -> f64 {
    (-(id.level as f64)).exp2()
}

/// Most levels one split descends (2^8 children; each child costs a node and its points).
const SPLIT_SHIFT_MAX: u32 = 8;

/// Levels one density probe descends (see `Responder::probe`).
const PROBE_LEVELS: u32 = 3;

/// Bound on ranges tracked by one responder session.
const NODES_MAX: usize = 1 << 16;

/// Ranges that keep their interpolation between attempts (each up to ~4 KiB at 64 points,
/// plus 512 B of ratios): bounds a session's memory whatever the peer sends.
const INTERPOLATORS_MAX: usize = 1024;

/// Decoded differences needed before their density is trusted over failure lower bounds.
const DENSITY_SAMPLES_MIN: u64 = 4;

/// What a finished session found.
#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The two sets were identical.
    pub equal: bool,
    /// Elements we hold that the peer lacks: ship these entries.
    pub to_ship: Vec<u64>,
    /// Elements the peer holds that we lack, where known (responder side). The peer ships them
    /// without being asked.
    pub to_request: Vec<u64>,
    /// Every range was reconciled; if false, retry later.
    pub complete: bool,
}

/// Why a session could not start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// A responder can only be created from an `Open` message.
    #[error("a session starts with an Open message")]
    NotOpen,
}

/// The leaves `node` covers (one leaf for a range below a leaf).
fn leaves_of(node: NodeId) -> std::ops::Range<usize> {
    if node.level as u32 <= LEAF_BITS {
        let shift = LEAF_BITS - node.level as u32;
        (node.index << shift) as usize..((node.index + 1) << shift) as usize
    } else {
        let leaf = (node.index >> (node.level as u32 - LEAF_BITS)) as usize;
        leaf..leaf + 1
    }
}

/// The elements of `node` in the live sketch.
fn elements_in(node: NodeId, live: &PartitionSketch) -> impl Iterator<Item = u64> + '_ {
    leaves_of(node)
        .flat_map(|leaf| live.leaf_elements(leaf).iter())
        .filter(move |&x| node.level as u32 <= LEAF_BITS || node_contains(node, x))
}

/// Leading bits of a fingerprint of `width` bits in `node` that name the element's leaf within
/// the node (log2 of its leaves; the rest are the element's low bits), or 0 when the width has
/// no room for them beside the spare bits. Same width, same false-match rate (a fingerprint is
/// compared with one leaf's elements only), but the initiator looks each one up in one leaf
/// instead of in every leaf of the range.
fn leaf_bits(node: NodeId, width: u32) -> u32 {
    let bits = leaves_of(node).len().trailing_zeros();
    if width >= bits + FINGERPRINT_SPARE_BITS {
        bits
    } else {
        0
    }
}

/// The fingerprint of `x` (an element in `node`) at `width` bits: see [`leaf_bits`].
fn fingerprint(node: NodeId, width: u32, x: u64) -> u64 {
    debug_assert!(node_contains(node, x));
    let prefix = leaf_bits(node, width);
    let low_width = width - prefix;
    let low = x & (u64::MAX >> (64 - low_width));
    if prefix == 0 {
        return low;
    }
    let offset = (leaf_of(x) - leaves_of(node).start) as u64;
    offset << low_width | low
}

/// Our elements in `node` whose fingerprints are among `item.fingerprints`.
fn resolve(item: &ResolveItem, live: &PartitionSketch) -> Vec<u64> {
    let (node, width) = (item.node, item.width as u32);
    let prefix = leaf_bits(node, width);
    let low_width = width - prefix;
    let leaves = leaves_of(node);
    // The leaves a fingerprint can be in: the one it names, or the whole range. A peer's
    // fingerprint naming a leaf outside the range names none.
    let leaves_named = |fingerprint: u64| {
        if prefix == 0 {
            return leaves.clone();
        }
        let leaf = leaves
            .start
            .saturating_add((fingerprint >> low_width) as usize);
        if leaf < leaves.end {
            leaf..leaf + 1
        } else {
            0..0
        }
    };
    if low_width >= LOOKUP_BITS {
        // Wide fingerprints: look each one up in its leaves.
        let low_mask = u64::MAX >> (64 - low_width);
        return item
            .fingerprints
            .iter()
            .flat_map(|&fingerprint| {
                leaves_named(fingerprint).flat_map(move |leaf| {
                    live.leaf_elements(leaf)
                        .matching(fingerprint & low_mask, low_width)
                })
            })
            .filter(|&x| node_contains(node, x))
            .collect();
    }
    // Narrow fingerprints come only for small ranges: scan the leaves they name.
    let mut wanted = item.fingerprints.clone();
    wanted.sort_unstable();
    wanted.dedup();
    let scanned: BTreeSet<usize> = wanted.iter().flat_map(|&f| leaves_named(f)).collect();
    scanned
        .into_iter()
        .flat_map(|leaf| live.leaf_elements(leaf).iter())
        .filter(|&x| node_contains(node, x))
        .filter(|&x| wanted.binary_search(&fingerprint(node, width, x)).is_ok())
        .collect()
}

/// Our size and χ of `node` at points `first..first + len`: from the snapshot down to leaves,
/// from the live element set below leaves.
fn local_values(
    node: NodeId,
    first: usize,
    len: usize,
    snapshot: &Snapshot,
    live: &PartitionSketch,
) -> (u64, Vec<u64>) {
    assert!(node.is_valid() && first >= 1 && first - 1 + len <= LEAF_POINTS);
    let mut values = vec![1; len];
    if node.level as u32 <= LEAF_BITS {
        let count = snapshot.range_values(live.kernel(), leaves_of(node), first, &mut values);
        (count, values)
    } else {
        let elements: Vec<u64> = elements_in(node, live).collect();
        live.kernel().multiply_linear_factors(
            &mut values,
            &sample_points()[first - 1..first - 1 + len],
            &elements,
        );
        (elements.len() as u64, values)
    }
}

fn node_contains(node: NodeId, x: u64) -> bool {
    element::is_element(x)
        && element::position(x) >> (POSITION_BITS - node.level as u32) == node.index
}

// ---------------------------------------------------------------------------------------------
// Initiator

/// Resolve messages one session may announce; a `Finish` claiming more is ignored.
const RESOLVES_MAX: u32 = 4096;

/// Sequence numbers listed in one `Missing` message.
const MISSING_PER_MESSAGE_MAX: usize = 300;

/// The side that opens a session and answers sketch requests.
#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
pub struct Initiator {
    session: u64,
    partition: u32,
    snapshot: Snapshot,
    open: Message,
    heard_back: bool,
    resolves: BTreeMap<u32, Vec<ResolveItem>>,
    finish: Option<(u32, bool, bool)>,
    outcome: Option<Outcome>,
}

impl Initiator {
    /// Starts a session for `partition`; returns it and the `Open` to send.
    pub fn start(
        session: u64,
        partition: u32,
        local: &PartitionSketch,
    ) -> (Initiator, Vec<Message>) {
        let snapshot = local.snapshot();
        let mut values = vec![1; OPEN_POINTS];
        let count = snapshot.range_values(local.kernel(), 0..1 << LEAF_BITS, 1, &mut values);
        let open = Message::Open {
            session,
            partition,
            count,
            values,
        };
        let initiator = Initiator {
            session,
            partition,
            snapshot,
            open: open.clone(),
            heard_back: false,
            resolves: BTreeMap::new(),
            finish: None,
            outcome: None,
        };
        (initiator, vec![open])
    }

    /// Handles one message from the responder; returns the messages to send back.
    pub fn handle(&mut self, message: &Message, live: &PartitionSketch) -> Vec<Message> {
        if message.session_id() != self.session || message.partition() != self.partition {
            return Vec::new();
        }
        let (session, partition) = (self.session, self.partition);
        match message {
            Message::Request { items, .. } => {
                self.heard_back = true;
                let sketches = items
                    .iter()
                    .flat_map(|item| self.answer(item, live))
                    .collect();
                wire::pack(sketches)
                    .into_iter()
                    .map(|items| Message::Sketches {
                        session,
                        partition,
                        items,
                    })
                    .collect()
            }
            Message::Resolve {
                sequence, items, ..
            } => {
                self.heard_back = true;
                if self.outcome.is_none() && *sequence < RESOLVES_MAX {
                    self.resolves
                        .entry(*sequence)
                        .or_insert_with(|| items.clone());
                }
                // Without a Finish yet, nothing to say: resolves are acknowledged by FinishAck.
                if self.finish.is_some() {
                    self.try_finish(live)
                } else {
                    Vec::new()
                }
            }
            Message::Finish {
                resolves,
                equal,
                complete,
                ..
            } if *resolves <= RESOLVES_MAX => {
                self.heard_back = true;
                // A repeated Finish means the responder timed out: say what is missing. The
                // first one may simply have overtaken resolves still in flight.
                let repeated = self.finish.is_some();
                self.finish.get_or_insert((*resolves, *equal, *complete));
                let out = self.try_finish(live);
                let finished = out.iter().any(|m| matches!(m, Message::FinishAck { .. }));
                if repeated || finished {
                    out
                } else {
                    Vec::new()
                }
            }
            _ => Vec::new(),
        }
    }

    /// The sketches a request item names (one per range of its span).
    fn answer(&self, item: &RequestItem, live: &PartitionSketch) -> Vec<SketchItem> {
        let (first, len) = (item.first as usize, (item.end - item.first) as usize);
        (0..item.span as u64)
            .map(|offset| {
                let node = NodeId {
                    level: item.node.level,
                    index: item.node.index + offset,
                };
                let (count, values) = local_values(node, first, len, &self.snapshot, live);
                SketchItem {
                    node,
                    count,
                    first: item.first,
                    values,
                }
            })
            .collect()
    }

    /// After `Finish`: the missing resolves, or (all there) the outcome and a `FinishAck`.
    fn try_finish(&mut self, live: &PartitionSketch) -> Vec<Message> {
        let Some((resolves, equal, complete)) = self.finish else {
            return Vec::new();
        };
        let (session, partition) = (self.session, self.partition);
        if self.outcome.is_none() {
            let missing: Vec<u32> = (0..resolves)
                .filter(|sequence| !self.resolves.contains_key(sequence))
                .take(MISSING_PER_MESSAGE_MAX)
                .collect();
            if !missing.is_empty() {
                return vec![Message::Missing {
                    session,
                    partition,
                    sequences: missing,
                }];
            }
            let mut to_ship: Vec<u64> = self
                .resolves
                .values()
                .flatten()
                .flat_map(|item| resolve(item, live))
                .collect();
            to_ship.sort_unstable();
            to_ship.dedup();
            self.outcome = Some(Outcome {
                equal,
                to_ship,
                to_request: Vec::new(),
                complete,
            });
        }
        vec![Message::FinishAck { session, partition }]
    }

    /// Messages to resend after a timeout.
    pub fn on_timeout(&mut self, live: &PartitionSketch) -> Vec<Message> {
        if !self.heard_back {
            vec![self.open.clone()]
        } else if self.finish.is_some() && self.outcome.is_none() {
            self.try_finish(live)
        } else {
            Vec::new()
        }
    }

    /// The result, once the session has finished.
    pub fn outcome(&self) -> Option<&Outcome> {
        self.outcome.as_ref()
    }

    /// Whether the session has finished (it still answers a repeated `Finish`).
    pub fn is_done(&self) -> bool {
        self.outcome.is_some()
    }
}

// ---------------------------------------------------------------------------------------------
// Responder

#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Active,
    Solved,
    Split,
    Unresolved,
}

/// The last child of a split: its first `points` values are the parent's over the siblings'.
#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Debug)]
struct Derivation {
    parent: NodeId,
    siblings: Vec<NodeId>,
    points: usize,
}

#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Debug)]
struct NodeState {
    count: Option<u64>,
    theirs: Vec<u64>,
    known: u128,
    wanted: u128,
    status: Status,
    tried_points: usize,
    derive: Option<Derivation>,
    parked: bool,
    probe_end: bool,
    /// The interpolation of the points tried so far, continued when the range is extended.
    interpolator: Option<Box<decode::Interpolator>>,
    /// Their values over ours at the points tried so far, kept with `interpolator` for ranges
    /// down to a leaf (empty otherwise).
    ratios: Vec<u64>,
}

impl NodeState {
    fn new() -> Self {
        NodeState {
            count: None,
            theirs: vec![0; LEAF_POINTS],
            known: 0,
            wanted: 0,
            status: Status::Active,
            tried_points: 0,
            derive: None,
            parked: false,
            probe_end: false,
            interpolator: None,
            ratios: Vec::new(),
        }
    }

    /// Length of the known prefix of points 1, 2, ….
    fn prefix(&self) -> usize {
        self.known.trailing_ones() as usize
    }

    fn missing(&self) -> u128 {
        self.wanted & !self.known
    }
}

/// Bits for points `first..=last` (1-based).
fn bits(first: usize, last: usize) -> u128 {
    debug_assert!(first >= 1 && last <= LEAF_POINTS);
    if last < first {
        return 0;
    }
    let upper = if last == 128 {
        u128::MAX
    } else {
        (1u128 << last) - 1
    };
    upper & !((1u128 << (first - 1)) - 1)
}

/// Bits per fingerprint so that the initiator expects at most 1/16 false match in a range of
/// `count` elements holding `roots` fingerprinted ones: ⌈log2(count · roots)⌉ + 4.
///
/// Ranges of at least [`SCAN_ELEMENTS_MAX`] elements get at least [`LOOKUP_BITS`] bits, which the
/// initiator looks up instead of scanning the range.
fn fingerprint_width(count: u64, roots: usize) -> u8 {
    let candidates = count.saturating_mul(roots as u64).max(1);
    let mut bits = 64 - candidates.leading_zeros() + FINGERPRINT_SPARE_BITS;
    if count >= SCAN_ELEMENTS_MAX {
        bits = bits.max(LOOKUP_BITS);
    }
    bits.clamp(8, 64) as u8
}

/// Range size from which fingerprints are at least [`LOOKUP_BITS`] wide, so the initiator looks
/// them up instead of scanning the range (≈ 3 bits more per fingerprint, microseconds less).
const SCAN_ELEMENTS_MAX: u64 = 1 << 10;

/// Spare bits in a fingerprint: expected false matches per range ≤ 2^−4 (a false match only
/// ships an entry the peer already has).
const FINGERPRINT_SPARE_BITS: u32 = 4;

/// Points first asked for a range expected to hold `expected` differences: the mean, half a
/// Poisson standard deviation, and what decoding needs beyond the differences (the held-back
/// point and one more, as deg P + deg Q ≤ m' − 1). About a third of ranges then need an
/// extension, which costs a round trip and a few points but wastes nothing sent before; asking
/// for a full deviation more would waste ≈ √E points on most ranges.
fn points_for(expected: f64) -> usize {
    (expected + 0.5 * expected.sqrt()).ceil() as usize + HOLD_BACK + 1
}

/// The side that accepts a session, decodes and decides how to split.
#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
pub struct Responder {
    session: u64,
    partition: u32,
    snapshot: Snapshot,
    nodes: BTreeMap<NodeId, NodeState>,
    /// Ranges whose values changed since they were last tried: only these can derive or
    /// decode now (a round of a large session brings values for hundreds of ranges, a few
    /// per message, and a scan of every range per message cost 8 % of its CPU).
    ready: BTreeSet<NodeId>,
    /// For each range, the ranges derived from it (as parent or sibling), woken when its
    /// values change.
    waiters: BTreeMap<NodeId, Vec<NodeId>>,
    requests: Vec<RequestItem>,
    /// Sketch items asked for and not yet received: new requests wait until this is zero, so
    /// each round's requests travel together (fewer, fuller messages both ways).
    awaiting: usize,
    /// Ranges holding an [`decode::Interpolator`] (at most [`INTERPOLATORS_MAX`]).
    interpolators: usize,
    solved_differences: u64,
    solved_fraction: f64,
    failed_density_max: f64,
    probe_leaf_sent: bool,
    to_ship: Vec<u64>,
    to_request: Vec<u64>,
    fingerprints: Vec<ResolveItem>,
    /// Every resolve sent, by sequence, kept to answer `Missing`.
    resolves_sent: BTreeMap<u32, Message>,
    finish: Option<Message>,
    finish_acked: bool,
    outcome: Option<Outcome>,
}

impl Responder {
    /// Accepts the `Open` of a new session.
    pub fn accept(
        open: &Message,
        live: &PartitionSketch,
    ) -> Result<(Responder, Vec<Message>), SessionError> {
        let Message::Open {
            session,
            partition,
            count,
            values,
        } = open
        else {
            return Err(SessionError::NotOpen);
        };
        let mut root = NodeState::new();
        root.count = Some(*count);
        root.theirs[..values.len()].copy_from_slice(values);
        root.known = bits(1, values.len());
        root.probe_end = true;
        let mut responder = Responder {
            session: *session,
            partition: *partition,
            snapshot: live.snapshot(),
            nodes: BTreeMap::from([(NodeId::ROOT, root)]),
            ready: BTreeSet::from([NodeId::ROOT]),
            waiters: BTreeMap::new(),
            requests: Vec::new(),
            awaiting: 0,
            interpolators: 0,
            solved_differences: 0,
            solved_fraction: 0.0,
            failed_density_max: 0.0,
            probe_leaf_sent: false,
            to_ship: Vec::new(),
            to_request: Vec::new(),
            fingerprints: Vec::new(),
            resolves_sent: BTreeMap::new(),
            finish: None,
            finish_acked: false,
            outcome: None,
        };
        let out = responder.progress(live);
        Ok((responder, out))
    }

    /// Handles one message from the initiator; returns the messages to send.
    pub fn handle(&mut self, message: &Message, live: &PartitionSketch) -> Vec<Message> {
        if message.session_id() != self.session || message.partition() != self.partition {
            return Vec::new();
        }
        match message {
            Message::Sketches { items, .. } => {
                items.iter().for_each(|item| self.store(item));
                self.awaiting = self.awaiting.saturating_sub(items.len());
                self.progress(live)
            }
            Message::Missing { sequences, .. } => {
                let mut out: Vec<Message> = sequences
                    .iter()
                    .filter_map(|sequence| self.resolves_sent.get(sequence).cloned())
                    .collect();
                out.extend(self.finish.clone());
                out
            }
            Message::FinishAck { .. } => {
                self.finish_acked = self.finish.is_some();
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    fn store(&mut self, item: &SketchItem) {
        let Some(node) = self.nodes.get_mut(&item.node) else {
            return;
        };
        let first = item.first as usize;
        if node.count.is_some_and(|count| count != item.count) {
            node.status = Status::Unresolved; // the peer contradicts itself
            return;
        }
        let point_known = |point: usize| node.known >> (point - 1) & 1 == 1;
        // A repeated point must repeat its value: a kept interpolation has absorbed it.
        let contradicts = item.values.iter().enumerate().any(|(offset, &value)| {
            point_known(first + offset) && node.theirs[first - 1 + offset] != value
        });
        if contradicts {
            node.status = Status::Unresolved;
            return;
        }
        node.count = Some(item.count);
        for (offset, &value) in item.values.iter().enumerate() {
            node.theirs[first - 1 + offset] = value;
        }
        node.known |= bits(first, first - 1 + item.values.len());
        self.changed(item.node);
    }

    /// `id`'s values changed: it and the ranges derived from it may make progress.
    fn changed(&mut self, id: NodeId) {
        self.ready.insert(id);
        if let Some(waiters) = self.waiters.get(&id) {
            self.ready.extend(waiters.iter().copied());
        }
    }

    /// Derives, decodes and plans until nothing changes; returns the messages to send.
    fn progress(&mut self, live: &PartitionSketch) -> Vec<Message> {
        loop {
            let mut changed = false;
            while let Some(id) = self.ready.pop_first() {
                if self
                    .nodes
                    .get(&id)
                    .is_some_and(|n| n.status == Status::Active)
                {
                    changed |= self.try_derive(id);
                    changed |= self.try_decode(id, live);
                }
            }
            if !changed && !self.in_flight() && self.nodes.values().any(|n| n.parked) {
                let parked: Vec<NodeId> = self
                    .nodes
                    .iter()
                    .filter(|(_, n)| n.parked)
                    .map(|(id, _)| *id)
                    .collect();
                // Plan the smallest ranges first: the density estimate sharpens with every
                // decoded range, so a large range is cut only once the estimate is good.
                let smallest = parked.iter().map(|id| fraction_of(*id)).fold(1.0, f64::min);
                let limit = if self.estimate_known() {
                    (RISK_FACTOR * self.solved_fraction).max(smallest)
                } else {
                    1.0
                };
                for id in parked.into_iter().filter(|id| fraction_of(*id) <= limit) {
                    self.plan(id, true);
                }
                changed = true;
            }
            if !changed {
                break;
            }
        }
        self.outgoing()
    }

    fn in_flight(&self) -> bool {
        self.nodes
            .values()
            .any(|n| n.status != Status::Unresolved && (n.missing() != 0 || n.derive.is_some()))
    }

    fn try_derive(&mut self, id: NodeId) -> bool {
        let Some(derivation) = self.nodes.get(&id).and_then(|n| n.derive.clone()) else {
            return false;
        };
        let points = derivation.points;
        let ready = |node: Option<&NodeState>| {
            node.is_some_and(|n| n.count.is_some() && n.prefix() >= points)
        };
        if !ready(self.nodes.get(&derivation.parent))
            || !derivation.siblings.iter().all(|s| ready(self.nodes.get(s)))
        {
            return false;
        }
        let parent = &self.nodes[&derivation.parent];
        let mut count = parent.count;
        let mut products = vec![1; points];
        for sibling in &derivation.siblings {
            let sibling = &self.nodes[sibling];
            count = count.and_then(|c| c.checked_sub(sibling.count.unwrap_or(0)));
            for (product, &value) in products.iter_mut().zip(&sibling.theirs) {
                *product = field::mul(*product, value);
            }
        }
        let derived: Option<Vec<u64>> =
            (count.is_some() && products.iter().all(|&p| p != 0)).then(|| {
                field::batch_invert(&mut products);
                parent
                    .theirs
                    .iter()
                    .zip(&products)
                    .map(|(&value, &inverse)| field::mul(value, inverse))
                    .collect()
            });
        let node = self.nodes.get_mut(&id).expect("active node exists");
        node.derive = None;
        match derived {
            Some(values) => {
                node.theirs[..points].copy_from_slice(&values);
                node.known |= bits(1, points);
                node.count = count;
                self.changed(id);
            }
            None => node.status = Status::Unresolved, // inconsistent counts or a zero value: a faulty peer
        }
        true
    }

    fn try_decode(&mut self, id: NodeId, live: &PartitionSketch) -> bool {
        let node = &self.nodes[&id];
        let m = node.prefix();
        let Some(count_theirs) = node.count else {
            return false;
        };
        if node.status != Status::Active
            || node.derive.is_some()
            || node.missing() != 0
            || m == 0
            || m <= node.tried_points
        {
            return false;
        }
        // An extension computes only its new points: the ratios of the points already tried
        // are kept with the interpolation (see below).
        let done = node.ratios.len();
        let (count_ours, mut inverses) = local_values(id, done + 1, m - done, &self.snapshot, live);
        field::batch_invert(&mut inverses);
        let node = self.nodes.get_mut(&id).expect("node exists");
        let mut ratios = std::mem::take(&mut node.ratios);
        ratios.extend(
            node.theirs[done..m]
                .iter()
                .zip(&inverses)
                .map(|(&t, &i)| field::mul(t, i)),
        );
        let delta = count_theirs as i128 - count_ours as i128;
        let solved = if delta == 0 && ratios.iter().all(|&ratio| ratio == 1) {
            Some(decode::Difference::default())
        } else {
            let delta = i64::try_from(delta).unwrap_or(i64::MAX);
            let kept = node.interpolator.take();
            self.interpolators -= usize::from(kept.is_some());
            let mut interpolator = match kept {
                Some(kept) if kept.delta() == delta => kept,
                _ => Box::new(decode::Interpolator::new(delta)),
            };
            let decoded = decode::decode_with(&mut interpolator, &ratios);
            // Kept for an extension (a few KiB each, so the number kept is bounded).
            if decoded.is_err() && self.interpolators < INTERPOLATORS_MAX {
                let node = self.nodes.get_mut(&id).expect("node exists");
                node.interpolator = Some(interpolator);
                // Only down to a leaf: those values come from the snapshot and never change,
                // while finer ranges are recomputed from the live set on every attempt.
                if id.level as u32 <= LEAF_BITS {
                    node.ratios = ratios;
                }
                self.interpolators += 1;
            }
            decoded
                .ok()
                .filter(|difference| self.plausible(id, difference, live))
        };
        self.nodes.get_mut(&id).expect("node exists").tried_points = m;
        match solved {
            Some(difference) => self.record(id, difference),
            None => self.plan(id, false),
        }
        true
    }

    /// Roots of Q must be our elements in the range; roots of P must be absent and in range.
    fn plausible(
        &self,
        id: NodeId,
        difference: &decode::Difference,
        live: &PartitionSketch,
    ) -> bool {
        difference
            .only_in_denominator
            .iter()
            .all(|&x| node_contains(id, x) && live.contains(x))
            && difference
                .only_in_numerator
                .iter()
                .all(|&x| node_contains(id, x) && !live.contains(x))
    }

    fn record(&mut self, id: NodeId, difference: decode::Difference) {
        let node = self.nodes.get_mut(&id).expect("node exists");
        node.status = Status::Solved;
        node.parked = false;
        let found = difference.only_in_numerator.len() + difference.only_in_denominator.len();
        self.solved_differences += found as u64;
        self.solved_fraction += (-(id.level as f64)).exp2();
        if !difference.only_in_numerator.is_empty() {
            let roots = difference.only_in_numerator.len();
            let width = fingerprint_width(node.count.unwrap_or(u64::MAX), roots);
            let fingerprints = difference
                .only_in_numerator
                .iter()
                .map(|&x| fingerprint(id, width as u32, x))
                .collect();
            self.fingerprints.push(ResolveItem {
                node: id,
                width,
                fingerprints,
            });
        }
        self.to_request.extend(difference.only_in_numerator);
        self.to_ship.extend(difference.only_in_denominator);
    }

    fn estimate_known(&self) -> bool {
        self.solved_differences >= DENSITY_SAMPLES_MIN
    }

    /// Differences per whole range, estimated from decoded ranges and failures.
    fn density(&self) -> f64 {
        if self.solved_differences >= DENSITY_SAMPLES_MIN {
            // Failures are not mixed in: the largest failure lower bound is a maximum over many
            // noisy ranges and would inflate the estimate (and the bytes sent).
            // One standard deviation below the Poisson count: underestimates cost an extension
            // (a few points), overestimates cost points that are never needed.
            let solved = self.solved_differences as f64;
            (solved - solved.sqrt()).max(1.0) / self.solved_fraction
        } else {
            2.0 * self.failed_density_max
        }
    }

    /// Decides what to do with a range whose decode failed: extend, split, park or give up.
    fn plan(&mut self, id: NodeId, unpark: bool) {
        let node = self.nodes.get_mut(&id).expect("node exists");
        node.parked = false;
        let m = node.prefix();
        let lower_bound = m.saturating_sub(HOLD_BACK) as f64;
        let fraction = (-(id.level as f64)).exp2();
        self.failed_density_max = self.failed_density_max.max(lower_bound / fraction);
        let estimate_known = self.estimate_known();
        if estimate_known && !unpark && fraction > RISK_FACTOR * self.solved_fraction {
            self.nodes.get_mut(&id).expect("node exists").parked = true;
            return;
        }
        let probe_end =
            std::mem::take(&mut self.nodes.get_mut(&id).expect("node exists").probe_end);
        if !estimate_known && !unpark {
            if probe_end && (id.level as u32) < LEAF_BITS {
                return self.probe(id, m.min(OPEN_POINTS));
            }
            if probe_end && !self.probe_leaf_sent {
                self.probe_leaf_sent = true;
                return self.extend(id, LEAF_POINTS); // the probe leaf: measure the density here
            }
            self.nodes.get_mut(&id).expect("node exists").parked = true;
            return;
        }
        let expected = (self.density() * fraction).max(lower_bound + 1.0);
        let needed = points_for(expected);

        // Extending wastes nothing sent before; below a leaf, splitting also costs a rescan of
        // the leaf's elements.
        if needed <= LEAF_POINTS.max(m + 1) && m < LEAF_POINTS {
            return self.extend(id, needed.min(LEAF_POINTS));
        }
        if id.level >= LEVEL_MAX || self.nodes.len() >= NODES_MAX {
            self.nodes.get_mut(&id).expect("node exists").status = Status::Unresolved;
            return;
        }
        let mut shift = 1;
        while points_for(expected / (1u64 << shift) as f64) > PIECE_POINTS
            && shift < SPLIT_SHIFT_MAX
        {
            shift += 1;
        }
        if (id.level as u32) < LEAF_BITS {
            shift = shift.min(LEAF_BITS - id.level as u32);
        }
        shift = shift.min(LEVEL_MAX as u32 - id.level as u32);
        let child_points = points_for(expected / (1u64 << shift) as f64).min(LEAF_POINTS);
        self.split(id, shift, child_points);
    }

    /// A failure with no density estimate yet: request the left spine [`PROBE_LEVELS`] levels
    /// down from `from`, so that ranges of 1/2, 1/4, 1/8 of it arrive in one round trip (the
    /// right siblings by division, so nothing sent is wasted). The deepest left range is the
    /// next probe end, down to a leaf.
    fn probe(&mut self, from: NodeId, points: usize) {
        let depth = PROBE_LEVELS.min(LEAF_BITS - from.level as u32);
        let mut parent = from;
        for step in 1..=depth {
            self.split(parent, 1, points);
            let left = NodeId {
                level: parent.level + 1,
                index: parent.index << 1,
            };
            let node = self.nodes.get_mut(&left).expect("just created");
            if step < depth {
                node.status = Status::Split;
            } else {
                node.probe_end = true;
            }
            parent = left;
        }
    }

    fn extend(&mut self, id: NodeId, points: usize) {
        let node = self.nodes.get_mut(&id).expect("node exists");
        let m = node.prefix();
        let points = points.clamp(m + 1, LEAF_POINTS);
        if m >= LEAF_POINTS {
            node.status = Status::Unresolved;
            return;
        }
        node.wanted |= bits(m + 1, points);
        self.requests.push(RequestItem {
            node: id,
            span: 1,
            first: (m + 1) as u8,
            end: (points + 1) as u8,
        });
    }

    /// Replaces `id` by its 2^shift children, each wanted at `points` points.
    fn split(&mut self, id: NodeId, shift: u32, points: usize) {
        if let Some(node) = self.nodes.get_mut(&id) {
            self.interpolators -= usize::from(node.interpolator.take().is_some());
            node.ratios = Vec::new();
        }
        let known = self.nodes[&id]
            .prefix()
            .max(self.nodes[&id].wanted.trailing_ones() as usize);
        self.nodes.get_mut(&id).expect("node exists").status = Status::Split;
        let level = id.level + shift as u8;
        let children: Vec<NodeId> = (0..1u64 << shift)
            .map(|i| NodeId {
                level,
                index: id.index << shift | i,
            })
            .collect();
        let derivable = level as u32 <= LEAF_BITS && known >= 1;
        let derived_points = if derivable { known.min(points) } else { 0 };
        let (last, others) = children.split_last().expect("at least two children");
        for &child in others {
            let mut state = NodeState::new();
            state.wanted = bits(1, points);
            self.nodes.insert(child, state);
        }
        // The siblings are consecutive at one level: one item names up to REQUEST_SPAN_MAX.
        for run in others.chunks(wire::REQUEST_SPAN_MAX as usize) {
            self.requests.push(RequestItem {
                node: run[0],
                span: run.len() as u16,
                first: 1,
                end: (points + 1) as u8,
            });
        }
        let mut state = NodeState::new();
        if derivable {
            state.derive = Some(Derivation {
                parent: id,
                siblings: others.to_vec(),
                points: derived_points,
            });
            for &source in std::iter::once(&id).chain(others) {
                self.waiters.entry(source).or_default().push(*last);
            }
        }
        if points > derived_points {
            state.wanted = bits(derived_points + 1, points);
            self.requests.push(RequestItem {
                node: *last,
                span: 1,
                first: (derived_points + 1) as u8,
                end: (points + 1) as u8,
            });
        }
        self.nodes.insert(*last, state);
    }

    /// New requests and resolves, and `Finish` once every range is settled.
    fn outgoing(&mut self) -> Vec<Message> {
        let (session, partition) = (self.session, self.partition);
        let requests = if self.awaiting == 0 {
            std::mem::take(&mut self.requests)
        } else {
            Vec::new()
        };
        self.awaiting += requests.iter().map(|r| r.span as usize).sum::<usize>();
        let mut out = self.request_messages(requests);
        let settled = self.nodes.values().all(|n| n.status != Status::Active);
        // Resolves wait for the end: packed together they fill whole messages (one header per
        // ~1,300 bytes instead of one per round), and the initiator acts on them only at
        // `Finish` anyway.
        let fingerprints = if settled {
            std::mem::take(&mut self.fingerprints)
        } else {
            Vec::new()
        };
        for items in wire::pack(fingerprints) {
            let message = Message::Resolve {
                session,
                partition,
                sequence: self.resolves_sent.len() as u32,
                items,
            };
            self.resolves_sent
                .insert(self.resolves_sent.len() as u32, message.clone());
            out.push(message);
        }
        if settled && self.finish.is_none() {
            let complete = self.nodes.values().all(|n| n.status != Status::Unresolved);
            let root = &self.nodes[&NodeId::ROOT];
            let equal = root.status == Status::Solved && self.solved_differences == 0;
            self.to_ship.sort_unstable();
            self.to_request.sort_unstable();
            self.outcome = Some(Outcome {
                equal,
                to_ship: self.to_ship.clone(),
                to_request: self.to_request.clone(),
                complete,
            });
            let finish = Message::Finish {
                session,
                partition,
                resolves: self.resolves_sent.len() as u32,
                equal,
                complete,
            };
            self.finish = Some(finish.clone());
            out.push(finish);
        }
        out
    }

    /// Request items packed into as few messages as fit.
    fn request_messages(&self, items: Vec<RequestItem>) -> Vec<Message> {
        wire::pack(items)
            .into_iter()
            .map(|items| Message::Request {
                session: self.session,
                partition: self.partition,
                items,
            })
            .collect()
    }

    /// Messages to resend after a timeout: outstanding requests, unacknowledged resolves and
    /// the `Finish` until it is acknowledged.
    pub fn on_timeout(&mut self) -> Vec<Message> {
        if self.finish_acked {
            return Vec::new();
        }
        let mut items = Vec::new();
        for (&id, node) in &self.nodes {
            let missing = node.missing();
            if missing != 0 && node.status != Status::Unresolved {
                let first = missing.trailing_zeros() as usize + 1;
                let last = 128 - missing.leading_zeros() as usize;
                items.push(RequestItem {
                    node: id,
                    span: 1,
                    first: first as u8,
                    end: (last + 1) as u8,
                });
            }
        }
        // Everything wanted and not known is asked for again, held-back requests included.
        self.requests.clear();
        self.awaiting = items.len();
        let mut out = self.request_messages(items);
        out.extend(self.finish.clone());
        out
    }

    /// The result, once every range is settled (the session may still resend `Finish`).
    pub fn outcome(&self) -> Option<&Outcome> {
        self.outcome.as_ref()
    }

    /// Whether the initiator acknowledged the end: nothing more to send.
    pub fn is_done(&self) -> bool {
        self.finish_acked
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::element::element_from_hash;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};
    use std::collections::HashSet;

    /// A channel that loses, duplicates and reorders datagrams.
    struct Channel {
        rng: SmallRng,
        loss: f64,
        duplication: f64,
        in_flight: Vec<Vec<u8>>,
        bytes: usize,
        by_kind: [usize; 5],
        values: usize,
    }

    impl Channel {
        fn send(&mut self, messages: Vec<Message>) {
            for message in messages {
                let bytes = message.encode();
                assert!(bytes.len() <= wire::MESSAGE_BYTES_MAX);
                self.bytes += bytes.len();
                let kind = match &message {
                    Message::Open { .. } => 0,
                    Message::Request { .. } => 1,
                    Message::Sketches { items, .. } => {
                        self.values += items.iter().map(|i| i.values.len()).sum::<usize>();
                        2
                    }
                    Message::Resolve { .. } => 3,
                    _ => 4,
                };
                self.by_kind[kind] += bytes.len();
                if self.rng.random_bool(self.loss) {
                    continue;
                }
                if self.rng.random_bool(self.duplication) {
                    self.in_flight.push(bytes.clone());
                }
                self.in_flight.push(bytes);
            }
        }

        fn drain(&mut self) -> Vec<Message> {
            let mut all = std::mem::take(&mut self.in_flight);
            // Reorder (on the lossy channel): a random permutation of what is in flight.
            if self.loss > 0.0 {
                for i in (1..all.len()).rev() {
                    all.swap(i, self.rng.random_range(0..=i));
                }
            }
            all.iter()
                .map(|bytes| Message::decode(bytes).expect("own encoding decodes"))
                .collect()
        }
    }

    struct Run {
        initiator: Outcome,
        responder: Outcome,
        bytes: usize,
        rounds: usize,
    }

    fn reconcile(a: &[u64], b: &[u64], loss: f64, duplication: f64, seed: u64) -> Run {
        let (sketch_a, sketch_b) = (sketch_of(a), sketch_of(b));
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut to_b = Channel {
            rng: SmallRng::seed_from_u64(rng.random()),
            loss,
            duplication,
            in_flight: Vec::new(),
            bytes: 0,
            by_kind: [0; 5],
            values: 0,
        };
        let mut to_a = Channel {
            rng: SmallRng::seed_from_u64(rng.random()),
            loss,
            duplication,
            in_flight: Vec::new(),
            bytes: 0,
            by_kind: [0; 5],
            values: 0,
        };
        let (mut initiator, open) = Initiator::start(9, 3, &sketch_a);
        to_b.send(open);
        let mut responder: Option<Responder> = None;
        let mut rounds = 0;
        for _step in 0..2_000 {
            if initiator.is_done() && responder.as_ref().is_some_and(Responder::is_done) {
                break;
            }
            rounds += usize::from(!initiator.is_done());
            for message in to_b.drain() {
                match responder.as_mut() {
                    Some(responder) => to_a.send(responder.handle(&message, &sketch_b)),
                    None => {
                        let (created, out) = Responder::accept(&message, &sketch_b)
                            .expect("first message is an Open");
                        responder = Some(created);
                        to_a.send(out);
                    }
                }
            }
            for message in to_a.drain() {
                to_b.send(initiator.handle(&message, &sketch_a));
            }
            if to_a.in_flight.is_empty() && to_b.in_flight.is_empty() {
                to_b.send(initiator.on_timeout(&sketch_a));
                if let Some(responder) = responder.as_mut() {
                    to_a.send(responder.on_timeout());
                }
            }
        }
        let responder = responder.expect("the open got through");
        assert!(
            initiator.is_done() && responder.is_done(),
            "session did not finish (seed {seed})"
        );
        if std::env::var_os("RECONCILE_REPORT").is_some() {
            let kinds: Vec<usize> = (0..5).map(|k| to_a.by_kind[k] + to_b.by_kind[k]).collect();
            println!(
                "  open/request/sketch/resolve/other bytes {kinds:?}, sketch values {}",
                to_a.values
            );
        }
        Run {
            bytes: to_a.bytes + to_b.bytes,
            rounds,
            initiator: initiator.outcome().cloned().expect("done"),
            responder: responder.outcome().cloned().expect("done"),
        }
    }

    /// The initiator's `Open` for set `a` (session 5, partition 0) and the responder that
    /// accepted it with set `b`, plus `b`'s sketch.
    fn accepted(a: &[u64], b: &[u64]) -> (Message, Responder, PartitionSketch) {
        let sketch_b = sketch_of(b);
        let (_, mut open) = Initiator::start(5, 0, &sketch_of(a));
        let open = open.remove(0);
        let (responder, _) = Responder::accept(&open, &sketch_b).expect("an Open");
        (open, responder, sketch_b)
    }

    fn sketch_of(elements: &[u64]) -> PartitionSketch {
        let mut sketch = PartitionSketch::new();
        sketch.insert_batch(elements);
        sketch
    }

    fn sets(common: usize, only_a: usize, only_b: usize, seed: u64) -> (Vec<u64>, Vec<u64>) {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut unique = HashSet::new();
        let mut fresh = |n: usize| -> Vec<u64> {
            let mut out = Vec::with_capacity(n);
            while out.len() < n {
                let x = element_from_hash(rng.random());
                if unique.insert(x) {
                    out.push(x);
                }
            }
            out
        };
        let (common, only_a, only_b) = (fresh(common), fresh(only_a), fresh(only_b));
        let a = common.iter().chain(&only_a).copied().collect();
        let b = common.iter().chain(&only_b).copied().collect();
        (a, b)
    }

    fn sorted_difference(x: &[u64], y: &[u64]) -> Vec<u64> {
        let y: HashSet<u64> = y.iter().copied().collect();
        let mut out: Vec<u64> = x.iter().copied().filter(|v| !y.contains(v)).collect();
        out.sort_unstable();
        out
    }

    fn check(a: &[u64], b: &[u64], run: &Run) {
        let (a_minus_b, b_minus_a) = (sorted_difference(a, b), sorted_difference(b, a));
        assert!(run.responder.complete && run.initiator.complete);
        assert_eq!(run.responder.to_ship, b_minus_a, "responder ships B \\ A");
        assert_eq!(
            run.responder.to_request, a_minus_b,
            "responder lacks A \\ B"
        );
        // Fingerprints may add an element B already has, never miss one of A \ B.
        let shipped: HashSet<u64> = run.initiator.to_ship.iter().copied().collect();
        assert!(a_minus_b.iter().all(|x| shipped.contains(x)));
        let a_set: HashSet<u64> = a.iter().copied().collect();
        assert!(run.initiator.to_ship.iter().all(|x| a_set.contains(x)));
        assert_eq!(
            run.initiator.equal,
            a_minus_b.is_empty() && b_minus_a.is_empty()
        );
    }

    #[test]
    fn identical_sets_take_one_round_trip() {
        let (a, b) = sets(5_000, 0, 0, 1);
        let (sketch_a, sketch_b) = (sketch_of(&a), sketch_of(&b));
        let (_initiator, open) = Initiator::start(1, 1, &sketch_a);
        let (responder, reply) = Responder::accept(&open[0], &sketch_b).expect("open");
        assert!(matches!(
            reply.as_slice(),
            [Message::Finish {
                equal: true,
                complete: true,
                resolves: 0,
                ..
            }]
        ));
        assert!(open[0].encode().len() < 200);
        assert!(
            responder
                .outcome()
                .is_some_and(|o| o.equal && o.to_ship.is_empty())
        );
    }

    #[test]
    fn empty_and_one_sided() {
        for (common, only_a, only_b) in [
            (0, 0, 0),
            (0, 50, 0),
            (0, 0, 50),
            (100, 0, 0),
            (300, 7, 0),
            (0, 400, 0),
        ] {
            let (a, b) = sets(common, only_a, only_b, 7);
            check(&a, &b, &reconcile(&a, &b, 0.0, 0.0, 3));
        }
    }

    #[test]
    fn differences_on_both_sides_lossless() {
        for (i, (common, only_a, only_b)) in [
            (1_000, 5, 5),
            (2_000, 60, 40),
            (10_000, 300, 250),
            (20_000, 1_500, 0),
        ]
        .into_iter()
        .enumerate()
        {
            let (a, b) = sets(common, only_a, only_b, 100 + i as u64);
            check(&a, &b, &reconcile(&a, &b, 0.0, 0.0, i as u64));
        }
    }

    #[test]
    fn lossy_duplicating_reordering_channel() {
        for seed in 0..6 {
            let (a, b) = sets(3_000, 40 * seed as usize, 25, 200 + seed);
            check(&a, &b, &reconcile(&a, &b, 0.2, 0.2, seed));
        }
    }

    #[test]
    fn large_difference_splits_below_leaves() {
        // ~70 differences per leaf: leaves fail at full capacity and are cut by rescanning.
        let (a, b) = sets(2_000, 9_000, 9_000, 5);
        check(&a, &b, &reconcile(&a, &b, 0.0, 0.0, 5));
    }

    #[test]
    fn a_split_wider_than_one_request_item_names_every_sibling_once() {
        let (a, b) = sets(2_000, 0, 0, 13);
        let (_, mut responder, _) = accepted(&a, &b);
        assert!(responder.requests.is_empty());
        // White box: cut the (decoded) root straight into its 2^LEAF_BITS leaves.
        responder.split(NodeId::ROOT, LEAF_BITS, 10);
        let mut next = 0;
        for item in &responder.requests {
            assert_eq!((item.node.level as u32, item.node.index), (LEAF_BITS, next));
            assert!(item.span >= 1 && item.span <= wire::REQUEST_SPAN_MAX);
            assert_eq!((item.first, item.end), (1, 11));
            next += u64::from(item.span);
        }
        assert!(
            responder.requests.len() > 1,
            "one item cannot name 255 siblings"
        );
        // Every sibling but the last is asked for once; the last is derived by division.
        assert_eq!(next, (1 << LEAF_BITS) - 1);
        let last = NodeId {
            level: LEAF_BITS as u8,
            index: next,
        };
        assert!(responder.nodes[&last].derive.is_some());
        let waited_on = responder
            .waiters
            .values()
            .filter(|w| w.contains(&last))
            .count();
        assert_eq!(
            waited_on,
            1 << LEAF_BITS,
            "the parent and all 255 siblings wake it"
        );
        for message in responder.request_messages(responder.requests.clone()) {
            assert_eq!(Message::decode(&message.encode()), Ok(message));
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4))]
        #[test]
        fn random_sets_reconcile(common in 0usize..100_000, only_a in 0usize..10_000, only_b in 0usize..10_000,
                                 seed in proptest::prelude::any::<u64>()) {
            let (a, b) = sets(common, only_a, only_b, seed);
            check(&a, &b, &reconcile(&a, &b, 0.05, 0.05, seed));
        }

        #[test]
        fn small_random_sets_reconcile(common in 0usize..3_000, only_a in 0usize..200, only_b in 0usize..200,
                                       seed in proptest::prelude::any::<u64>()) {
            let (a, b) = sets(common, only_a, only_b, seed);
            check(&a, &b, &reconcile(&a, &b, 0.1, 0.1, seed));
        }
    }

    /// Bytes and rounds per difference; run with `--ignored --nocapture` when tuning.
    #[test]
    #[ignore = "a report, not a check"]
    fn bytes_report() {
        let n: usize = std::env::var("RECONCILE_REPORT_N")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(30_000);
        for d in [10usize, 20, 50, 100, 300, 1_000, 3_000, 10_000] {
            let (a, b) = sets(n - d.div_ceil(2), d.div_ceil(2), d / 2, d as u64);
            let run = reconcile(&a, &b, 0.0, 0.0, 1);
            check(&a, &b, &run);
            let target = 12.0 * d as f64 + 1024.0;
            println!(
                "d={d} bytes={} per_diff={:.2} rounds={} target={target}",
                run.bytes,
                run.bytes as f64 / d as f64,
                run.rounds
            );
        }
    }

    #[test]
    fn foreign_messages_are_ignored() {
        let (a, _) = sets(100, 3, 0, 11);
        let sketch = sketch_of(&a);
        let (mut initiator, _) = Initiator::start(1, 1, &sketch);
        let foreign = Message::Finish {
            session: 2,
            partition: 1,
            resolves: 0,
            equal: true,
            complete: true,
        };
        assert!(initiator.handle(&foreign, &sketch).is_empty());
        assert!(!initiator.is_done());
        assert_eq!(
            Responder::accept(&foreign, &sketch).err(),
            Some(SessionError::NotOpen)
        );
    }

    #[test]
    fn a_repeated_point_with_another_value_is_a_contradiction() {
        let (a, b) = sets(1_000, 40, 0, 12);
        let (open, mut responder, sketch_b) = accepted(&a, &b);
        let Message::Open { count, values, .. } = &open else {
            unreachable!("start sends an Open")
        };
        let mut changed = values.clone();
        changed[3] = field::add(changed[3], 1);
        let item = |values: Vec<u64>| SketchItem {
            node: NodeId::ROOT,
            count: *count,
            first: 1,
            values,
        };
        let message = |values| Message::Sketches {
            session: 5,
            partition: 0,
            items: vec![item(values)],
        };
        // The same values again (a duplicate) change nothing; another value does.
        responder.handle(&message(values.clone()), &sketch_b);
        assert_ne!(responder.nodes[&NodeId::ROOT].status, Status::Unresolved);
        responder.handle(&message(changed), &sketch_b);
        assert_eq!(responder.nodes[&NodeId::ROOT].status, Status::Unresolved);
    }

    /// Leaf-naming fingerprints find exactly the wanted elements (plus rare false matches) by
    /// lookup and by scan, in ranges of one leaf and of many, and a fingerprint naming a leaf
    /// outside its range finds nothing.
    #[test]
    fn fingerprints_name_their_leaf() {
        let (elements, _) = sets(20_000, 0, 0, 5);
        let sketch = sketch_of(&elements);
        let nodes = [
            NodeId::ROOT,
            NodeId { level: 3, index: 5 },
            NodeId {
                level: LEAF_BITS as u8,
                index: 77,
            },
            NodeId {
                level: LEAF_BITS as u8 + 2,
                index: 77 << 2 | 1,
            },
        ];
        for node in nodes {
            let inside: Vec<u64> = elements_in(node, &sketch).collect();
            assert!(inside.len() >= 8, "{node:?} holds {}", inside.len());
            let wanted: Vec<u64> = inside.iter().copied().step_by(inside.len() / 7).collect();
            for width in [10, 16, 24, 40, 64] {
                let item = ResolveItem {
                    node,
                    width,
                    fingerprints: wanted
                        .iter()
                        .map(|&x| fingerprint(node, width as u32, x))
                        .collect(),
                };
                let found: HashSet<u64> = resolve(&item, &sketch).into_iter().collect();
                assert!(
                    wanted.iter().all(|x| found.contains(x)),
                    "{node:?} width {width}"
                );
                assert!(found.iter().all(|&x| node_contains(node, x)));
                if width >= 40 {
                    assert_eq!(found.len(), wanted.len(), "{node:?} width {width}");
                }
            }
            if leaf_bits(node, 24) > 0 {
                // A forged fingerprint wider than its width names a leaf past the range.
                let item = ResolveItem {
                    node,
                    width: 24,
                    fingerprints: vec![u64::MAX],
                };
                assert!(resolve(&item, &sketch).is_empty());
            }
        }
    }
}
