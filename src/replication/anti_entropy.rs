//! Anti-entropy of one partition between two replicas, as pure functions over a [`Store`].
//!
//! The exchange (initiator A, responder B):
//! 1. A → B `SyncDigest` (count and element sum). Equal digests end the round: one message.
//! 2. B → A `SyncElements` pages: B's elements, ascending, cut into hash ranges that each fit a
//!    datagram. Each page stands alone, so a lost page only skips its range this round.
//! 3. For each page A ships the entries B lacks (`SyncEntries`) and asks for the ones it lacks
//!    (`SyncNeed`); B answers a need with `SyncEntries`.
//!
//! With `AntiEntropyMode::Cpisync` (the default) steps 2–3 are replaced by a CPISync session
//! (`super::cpisync`) whose cost grows with the difference; the element list here remains as
//! `AntiEntropyMode::ElementList`, whose cost grows with the partition size.

use super::store::Store;
use super::types::{Entry, element_of};
use super::wire::{BODY_BYTES_MAX, Digest, Message, WireEntry};

/// Elements one `SyncElements` / `SyncNeed` body holds (2 + 8 + 8 + 2 header bytes).
pub const ELEMENTS_PER_PAGE: usize = (BODY_BYTES_MAX - 20) / 8;

/// Digest of a partition.
pub fn digest(store: &dyn Store, partition: u16) -> Digest {
    let mut digest = Digest::default();
    store.for_each_in_partition(partition, &mut |entry| {
        digest.count += 1;
        digest.sum = digest
            .sum
            .wrapping_add(element_of(&entry.key, entry.version));
    });
    digest
}

/// The sorted elements of a partition.
pub fn elements(store: &dyn Store, partition: u16) -> Vec<u64> {
    let mut elements = Vec::new();
    store.for_each_in_partition(partition, &mut |entry| {
        elements.push(element_of(&entry.key, entry.version));
    });
    elements.sort_unstable();
    elements
}

/// Step 2: the responder's element pages of `partition`.
pub fn element_pages(store: &dyn Store, partition: u16) -> Vec<Message> {
    let all = elements(store, partition);
    if all.is_empty() {
        return vec![Message::SyncElements {
            partition,
            lo: 0,
            hi: 0,
            elements: Vec::new(),
        }];
    }
    let chunks: Vec<&[u64]> = all.chunks(ELEMENTS_PER_PAGE).collect();
    let mut pages = Vec::with_capacity(chunks.len());
    for (index, chunk) in chunks.iter().enumerate() {
        let lo = if index == 0 { 0 } else { chunk[0] };
        let hi = chunks.get(index + 1).map_or(0, |next| next[0]);
        pages.push(Message::SyncElements {
            partition,
            lo,
            hi,
            elements: chunk.to_vec(),
        });
    }
    pages
}

/// Step 3: for one page, the local entries the peer lacks and the elements we lack.
pub fn compare_page(
    store: &dyn Store,
    partition: u16,
    lo: u64,
    hi: u64,
    theirs: &[u64],
) -> (Vec<Entry>, Vec<u64>) {
    let in_page = |element: u64| element >= lo && (hi == 0 || element < hi);
    let mut ours = Vec::new();
    store.for_each_in_partition(partition, &mut |entry| {
        let element = element_of(&entry.key, entry.version);
        if in_page(element) && theirs.binary_search(&element).is_err() {
            ours.push(entry.clone());
        }
    });
    let mine = elements(store, partition);
    let need = theirs
        .iter()
        .copied()
        .filter(|&element| in_page(element) && mine.binary_search(&element).is_err())
        .collect();
    (ours, need)
}

/// Entries of `partition` whose elements are in `wanted`.
pub fn entries_for(store: &dyn Store, partition: u16, wanted: &[u64]) -> Vec<Entry> {
    let mut sorted = wanted.to_vec();
    sorted.sort_unstable();
    let mut found = Vec::new();
    store.for_each_in_partition(partition, &mut |entry| {
        if sorted
            .binary_search(&element_of(&entry.key, entry.version))
            .is_ok()
        {
            found.push(entry.clone());
        }
    });
    found
}

/// Packs entries into `SyncEntries` bodies of at most [`BODY_BYTES_MAX`] bytes; values that do
/// not fit inline are announced.
pub fn entry_messages(partition: u16, entries: &[Entry], inline_bytes_max: usize) -> Vec<Message> {
    let mut messages = Vec::new();
    let mut current: Vec<WireEntry> = Vec::new();
    let mut bytes = 4;
    for entry in entries {
        let wire = WireEntry::from_entry(entry, inline_bytes_max);
        let len = wire.encoded_len();
        if len + 4 > BODY_BYTES_MAX {
            continue; // a key too large even to announce: left to bulk resync
        }
        if bytes + len > BODY_BYTES_MAX {
            messages.push(Message::SyncEntries {
                partition,
                entries: std::mem::take(&mut current),
            });
            bytes = 4;
        }
        bytes += len;
        current.push(wire);
    }
    if !current.is_empty() {
        messages.push(Message::SyncEntries {
            partition,
            entries: current,
        });
    }
    messages
}

/// Packs elements into `SyncNeed` bodies.
pub fn need_messages(partition: u16, need: &[u64]) -> Vec<Message> {
    need.chunks(ELEMENTS_PER_PAGE)
        .map(|chunk| Message::SyncNeed {
            partition,
            elements: chunk.to_vec(),
        })
        .collect()
}
