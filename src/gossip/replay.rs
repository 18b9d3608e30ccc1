//! Replay protection: a sliding window of recently seen sequence numbers per sender.
//!
//! Like IPsec (RFC 4303 §3.4.3) and WireGuard: each (sender node, sender shard) keeps the newest
//! epoch seen, the highest sequence number seen in it, and a bitmap of the [`WINDOW_BITS`]
//! sequence numbers just below it. A sequence number that is already marked, or
//! `WINDOW_BITS` or more below the highest, is rejected; so is any datagram from an epoch older than
//! the newest seen (a restarted sender starts a new epoch with a fresh window).
//!
//! **Invariants:** only feed headers that passed [`super::wire::open_in_place`] or
//! [`super::wire::open`] (so forged datagrams
//! cannot move a window); the table holds at most `senders_max` entries. When full, the sender
//! least recently heard from is evicted; a replay of *its* old datagrams would then be accepted
//! once, which is why `senders_max` should exceed `members × shards`.

use std::collections::HashMap;

use super::wire::{Header, NodeId, WireError};

/// 64-bit blocks in a window's ring bitmap (RFC 6479): 128 bytes per sender.
const BLOCKS: usize = 16;
/// Sequence numbers accepted below the highest seen. One block of the ring is always the
/// partially filled current one, so the usable width is `(BLOCKS - 1) · 64`. Sequence numbers are
/// per sender across all its destinations, so the window must cover every datagram a sender
/// emits while an earlier one to us is still in flight (~1,000 at 100k datagrams/s and 10 ms
/// of reordering).
pub const WINDOW_BITS: u64 = (BLOCKS as u64 - 1) * 64;

/// One sender's window: a ring of bitmap blocks indexed by `sequence / 64 mod BLOCKS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplayWindow {
    /// Highest sequence number accepted so far (meaningless while `empty`).
    highest: u64,
    blocks: [u64; BLOCKS],
    empty: bool,
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self::new()
    }
}

fn block_of(sequence: u64) -> usize {
    ((sequence / 64) % BLOCKS as u64) as usize
}

fn bit_of(sequence: u64) -> u64 {
    1u64 << (sequence % 64)
}

impl ReplayWindow {
    /// An empty window: the next sequence number is accepted whatever it is.
    pub const fn new() -> Self {
        Self {
            highest: 0,
            blocks: [0; BLOCKS],
            empty: true,
        }
    }

    /// Whether `sequence` would be accepted, without recording it.
    pub fn check(&self, sequence: u64) -> Result<(), ReplayVerdict> {
        if self.empty || sequence > self.highest {
            return Ok(());
        }
        if self.highest - sequence >= WINDOW_BITS {
            return Err(ReplayVerdict::TooOld);
        }
        if self.blocks[block_of(sequence)] & bit_of(sequence) != 0 {
            return Err(ReplayVerdict::Replayed);
        }
        Ok(())
    }

    /// Accepts and records `sequence`, or says why not.
    pub fn accept(&mut self, sequence: u64) -> Result<(), ReplayVerdict> {
        self.check(sequence)?;
        if self.empty {
            self.empty = false;
            self.highest = sequence;
        } else if sequence > self.highest {
            // Clear the blocks the window slides over (at most the whole ring).
            let blocks_ahead = (sequence / 64 - self.highest / 64).min(BLOCKS as u64);
            for step in 1..=blocks_ahead {
                // Wrapping keeps the block index right: 2^64 is a multiple of 64 · BLOCKS.
                self.blocks[block_of(self.highest.wrapping_add(step * 64))] = 0;
            }
            self.highest = sequence;
        }
        self.blocks[block_of(sequence)] |= bit_of(sequence);
        debug_assert!(self.blocks[block_of(self.highest)] & bit_of(self.highest) != 0);
        Ok(())
    }
}

/// Why a window rejected a sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplayVerdict {
    /// Already seen.
    Replayed,
    /// Behind the window.
    TooOld,
}

#[derive(Clone, Copy, Debug)]
struct SenderState {
    epoch: u64,
    window: ReplayWindow,
    /// Logical time of the last accept, for LRU eviction.
    last_used: u64,
}

/// The replay windows of all senders one receiving shard hears from.
#[derive(Debug)]
pub struct ReplayGuard {
    senders: HashMap<(NodeId, u16), SenderState>,
    senders_max: usize,
    /// Counts accepts; orders entries for eviction.
    clock: u64,
}

impl ReplayGuard {
    /// A guard that tracks at most `senders_max` (node, shard) pairs.
    pub fn new(senders_max: usize) -> Self {
        assert!(senders_max > 0, "replay guard needs room for one sender");
        Self {
            senders: HashMap::new(),
            senders_max,
            clock: 0,
        }
    }

    /// Number of senders tracked.
    pub fn len(&self) -> usize {
        self.senders.len()
    }

    /// Whether no sender is tracked.
    pub fn is_empty(&self) -> bool {
        self.senders.is_empty()
    }

    /// Accepts an authenticated header's (sender, shard, epoch, sequence) or rejects it as a
    /// replay. Call only after [`super::wire::open`] succeeded.
    pub fn accept(&mut self, header: &Header) -> Result<(), WireError> {
        let sender = header.sender.get();
        let epoch = header.epoch.get();
        let sequence = header.sequence.get();
        let key = (sender, header.shard.get());
        self.clock += 1;
        let clock = self.clock;
        if !self.senders.contains_key(&key) && self.senders.len() >= self.senders_max {
            self.evict_least_recent();
        }
        let state = self.senders.entry(key).or_insert(SenderState {
            epoch,
            window: ReplayWindow::new(),
            last_used: clock,
        });
        if epoch < state.epoch {
            return Err(WireError::TooOld {
                sender,
                epoch,
                sequence,
            });
        }
        if epoch > state.epoch {
            // A restarted sender: its old epoch's datagrams are now all too old.
            state.epoch = epoch;
            state.window = ReplayWindow::new();
        }
        let verdict = state.window.accept(sequence);
        state.last_used = clock;
        debug_assert!(self.senders.len() <= self.senders_max);
        match verdict {
            Ok(()) => Ok(()),
            Err(ReplayVerdict::Replayed) => Err(WireError::Replayed { sender, sequence }),
            Err(ReplayVerdict::TooOld) => Err(WireError::TooOld {
                sender,
                epoch,
                sequence,
            }),
        }
    }

    fn evict_least_recent(&mut self) {
        // O(senders) but only on a miss with a full table, which bounded membership makes rare.
        let oldest = self
            .senders
            .iter()
            .min_by_key(|(_, state)| state.last_used)
            .map(|(key, _)| *key);
        if let Some(key) = oldest {
            self.senders.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use proptest::prelude::*;
    use zerocopy::byteorder::little_endian::{U16, U64};

    use super::*;
    use crate::gossip::wire::{MAGIC, PROTOCOL_VERSION};

    /// The model: a sequence is accepted iff never seen and not `WINDOW_BITS` or more below the
    /// highest accepted so far.
    fn model_accept(seen: &mut HashSet<u64>, highest: &mut Option<u64>, sequence: u64) -> bool {
        if seen.contains(&sequence) {
            return false;
        }
        if let Some(high) = *highest
            && sequence < high
            && high - sequence >= WINDOW_BITS
        {
            return false;
        }
        seen.insert(sequence);
        *highest = Some(highest.map_or(sequence, |high| high.max(sequence)));
        true
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn window_matches_hashset_model(
            start in 0u64..1_000,
            steps in proptest::collection::vec((0u64..2_500, any::<bool>()), 1..400),
        ) {
            let mut window = ReplayWindow::new();
            let mut seen = HashSet::new();
            let mut highest = None;
            let mut cursor = start;
            for (delta, forward) in steps {
                // Walk around a cursor so sequences repeat, jump ahead and fall behind.
                cursor = if forward { cursor + delta } else { cursor.saturating_sub(delta) };
                let expected = model_accept(&mut seen, &mut highest, cursor);
                prop_assert_eq!(window.accept(cursor).is_ok(), expected, "sequence {}", cursor);
            }
        }
    }

    #[test]
    fn window_edges() {
        let mut window = ReplayWindow::new();
        assert_eq!(window.accept(1_000), Ok(()));
        assert_eq!(window.accept(1_000), Err(ReplayVerdict::Replayed));
        assert_eq!(window.accept(1_000 - WINDOW_BITS + 1), Ok(()));
        assert_eq!(
            window.accept(1_000 - WINDOW_BITS),
            Err(ReplayVerdict::TooOld)
        );
        assert_eq!(
            window.accept(1_000 + WINDOW_BITS + 64),
            Ok(()),
            "slides past the whole ring"
        );
        assert_eq!(window.accept(1_001), Err(ReplayVerdict::TooOld));
        assert_eq!(
            window.accept(1_064 + 1),
            Ok(()),
            "inside the moved window, never seen"
        );
        assert_eq!(window.accept(u64::MAX), Ok(()));
        assert_eq!(window.accept(u64::MAX), Err(ReplayVerdict::Replayed));
    }

    fn header(sender: u64, shard: u16, epoch: u64, sequence: u64) -> Header {
        Header {
            magic: MAGIC,
            version: PROTOCOL_VERSION,
            kind: 1,
            key_id: 0,
            flags: 0,
            shard: U16::new(shard),
            body_len: U16::new(0),
            epoch: U64::new(epoch),
            cluster_id: U64::new(7),
            sender: U64::new(sender),
            sequence: U64::new(sequence),
        }
    }

    #[test]
    fn guard_separates_senders_and_epochs() {
        let mut guard = ReplayGuard::new(4);
        assert!(guard.accept(&header(1, 0, 5, 0)).is_ok());
        assert!(
            guard.accept(&header(1, 1, 5, 0)).is_ok(),
            "other shard, own window"
        );
        assert!(
            guard.accept(&header(2, 0, 5, 0)).is_ok(),
            "other sender, own window"
        );
        assert!(matches!(
            guard.accept(&header(1, 0, 5, 0)),
            Err(WireError::Replayed { .. })
        ));
        assert!(
            guard.accept(&header(1, 0, 6, 0)).is_ok(),
            "new epoch restarts sequences"
        );
        assert!(matches!(
            guard.accept(&header(1, 0, 5, 9)),
            Err(WireError::TooOld { .. })
        ));
    }

    #[test]
    fn guard_is_bounded_and_evicts_least_recent() {
        let mut guard = ReplayGuard::new(2);
        assert!(guard.accept(&header(1, 0, 0, 0)).is_ok());
        assert!(guard.accept(&header(2, 0, 0, 0)).is_ok());
        assert!(guard.accept(&header(1, 0, 0, 1)).is_ok());
        assert!(guard.accept(&header(3, 0, 0, 0)).is_ok());
        assert_eq!(guard.len(), 2);
        // Sender 1 was used more recently than 2, so 2 was evicted and 1 still rejects replays.
        assert!(matches!(
            guard.accept(&header(1, 0, 0, 1)),
            Err(WireError::Replayed { .. })
        ));
    }
}
