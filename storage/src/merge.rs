//! Merges sorted sources into one sorted stream with one entry per key: the largest version.
//!
//! Sources are few (memtables + L0 tables + one table per deeper level), so the smallest head
//! is found by a linear scan rather than a heap.

use crate::error::Result;
use crate::memtable::Item;

/// A sorted source of entries.
pub type Source<'a> = Box<dyn Iterator<Item = Result<Item>> + 'a>;

/// The merged stream.
pub struct Merge<'a> {
    sources: Vec<Source<'a>>,
    heads: Vec<Option<Item>>,
    started: bool,
    failed: bool,
}

impl<'a> Merge<'a> {
    /// Merges `sources` (each sorted by key, one entry per key).
    pub fn new(sources: Vec<Source<'a>>) -> Self {
        let heads = sources.iter().map(|_| None).collect();
        Merge {
            sources,
            heads,
            started: false,
            failed: false,
        }
    }

    fn advance(&mut self, index: usize) -> Result<()> {
        self.heads[index] = self.sources[index].next().transpose()?;
        Ok(())
    }

    fn step(&mut self) -> Result<Option<Item>> {
        if !self.started {
            self.started = true;
            for index in 0..self.sources.len() {
                self.advance(index)?;
            }
        }
        let mut best: Option<usize> = None;
        for (index, head) in self.heads.iter().enumerate() {
            let Some((key, version, _)) = head else {
                continue;
            };
            best = match best {
                None => Some(index),
                Some(b) => {
                    let (best_key, best_version, _) =
                        self.heads[b].as_ref().expect("best has a head");
                    if key < best_key || (key == best_key && version > best_version) {
                        Some(index)
                    } else {
                        Some(b)
                    }
                }
            };
        }
        let Some(best) = best else { return Ok(None) };
        let item = self.heads[best].take().expect("best has a head");
        self.advance(best)?;
        for index in 0..self.heads.len() {
            while self.heads[index]
                .as_ref()
                .is_some_and(|(k, _, _)| *k == item.0)
            {
                self.advance(index)?;
            }
        }
        Ok(Some(item))
    }
}

impl Iterator for Merge<'_> {
    type Item = Result<Item>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let step = self.step();
        fuse(&mut self.failed, step)
    }
}

/// Turns one step of a fallible iterator into its `next`: after the first error the iterator
/// is finished (`failed` is set), so a corrupt source is reported once and never read past.
pub(crate) fn fuse(failed: &mut bool, step: Result<Option<Item>>) -> Option<Result<Item>> {
    match step {
        Ok(item) => item.map(Ok),
        Err(e) => {
            *failed = true;
            Some(Err(e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Version;

    fn source(items: &[(&str, u64)]) -> Source<'static> {
        let items: Vec<Result<Item>> = items
            .iter()
            .map(|(k, hlc)| Ok((k.as_bytes().to_vec(), Version { hlc: *hlc, node: 0 }, None)))
            .collect();
        Box::new(items.into_iter())
    }

    #[test]
    fn newest_version_wins_and_keys_stay_sorted() {
        let merged: Vec<(Vec<u8>, u64)> = Merge::new(vec![
            source(&[("a", 1), ("c", 5)]),
            source(&[("a", 3), ("b", 1), ("c", 2)]),
        ])
        .map(|item| item.map(|(k, v, _)| (k, v.hlc)))
        .collect::<Result<_>>()
        .expect("no errors");
        assert_eq!(
            merged,
            vec![(b"a".to_vec(), 3), (b"b".to_vec(), 1), (b"c".to_vec(), 5)]
        );
    }
}
