//! Leveled compaction: what to compact (pure functions over table metadata) and the merge that
//! does it (run on the low-priority task queue, yielding often so foreground latency stays flat).
//!
//! L0 holds flushed tables that may overlap; L1.. hold non-overlapping tables sorted by key. L0
//! is merged into L1 once it has `l0_compaction_trigger` tables; level `i >= 1` spills one
//! table into `i + 1` once it exceeds `l1_bytes_target * multiplier^(i-1)`. Only when no deeper
//! level holds any table is the output the *bottom*, where tombstones older than the gc horizon
//! are dropped (nothing older can be hiding below them).

use crate::manifest::LEVELS;
use crate::sst::writer::TableMeta;
use crate::types::Options;

/// A chosen compaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pick {
    /// Input table numbers.
    pub inputs: Vec<u64>,
    /// Level the outputs go to.
    pub output_level: usize,
    /// True if no table exists below `output_level` (tombstones may be dropped).
    pub bottom: bool,
}

fn overlaps(meta: &TableMeta, smallest: &[u8], largest: &[u8]) -> bool {
    meta.largest.as_slice() >= smallest && meta.smallest.as_slice() <= largest
}

fn key_range<'a>(tables: impl Iterator<Item = &'a TableMeta>) -> Option<(&'a [u8], &'a [u8])> {
    tables.fold(None, |range, t| match range {
        None => Some((t.smallest.as_slice(), t.largest.as_slice())),
        Some((lo, hi)) => Some((lo.min(t.smallest.as_slice()), hi.max(t.largest.as_slice()))),
    })
}

fn is_bottom(levels: &[Vec<TableMeta>], output_level: usize, inputs: &[u64]) -> bool {
    levels
        .iter()
        .skip(output_level + 1)
        .all(|level| level.iter().all(|t| inputs.contains(&t.number)))
}

/// Target bytes of `level` (>= 1).
pub fn level_target(options: &Options, level: usize) -> u64 {
    let exponent = u32::try_from(level.saturating_sub(1)).unwrap_or(u32::MAX);
    options
        .l1_bytes_target
        .saturating_mul(options.level_size_multiplier.saturating_pow(exponent))
}

/// The most urgent compaction, if any is due.
pub fn pick(levels: &[Vec<TableMeta>], options: &Options) -> Option<Pick> {
    if levels[0].len() >= options.l0_compaction_trigger {
        let (lo, hi) = key_range(levels[0].iter())?;
        let mut inputs: Vec<u64> = levels[0].iter().map(|t| t.number).collect();
        inputs.extend(
            levels[1]
                .iter()
                .filter(|t| overlaps(t, lo, hi))
                .map(|t| t.number),
        );
        let bottom = is_bottom(levels, 1, &inputs);
        return Some(Pick {
            inputs,
            output_level: 1,
            bottom,
        });
    }
    for level in 1..LEVELS - 1 {
        let bytes: u64 = levels[level].iter().map(|t| t.size).sum();
        if bytes <= level_target(options, level) {
            continue;
        }
        // The table with the fewest overlapping bytes below is cheapest to push down.
        let victim = levels[level].iter().min_by_key(|t| {
            levels[level + 1]
                .iter()
                .filter(|below| overlaps(below, &t.smallest, &t.largest))
                .map(|below| below.size)
                .sum::<u64>()
        })?;
        let mut inputs = vec![victim.number];
        inputs.extend(
            levels[level + 1]
                .iter()
                .filter(|t| overlaps(t, &victim.smallest, &victim.largest))
                .map(|t| t.number),
        );
        let bottom = is_bottom(levels, level + 1, &inputs);
        return Some(Pick {
            inputs,
            output_level: level + 1,
            bottom,
        });
    }
    None
}

/// Every table into one level (the deepest non-empty one, at least L1).
pub fn pick_all(levels: &[Vec<TableMeta>]) -> Option<Pick> {
    let inputs: Vec<u64> = levels.iter().flatten().map(|t| t.number).collect();
    if inputs.is_empty() {
        return None;
    }
    let output_level = levels
        .iter()
        .rposition(|l| !l.is_empty())
        .unwrap_or(1)
        .max(1);
    Some(Pick {
        inputs,
        output_level,
        bottom: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(number: u64, lo: &str, hi: &str, size: u64) -> TableMeta {
        TableMeta {
            number,
            size,
            smallest: lo.as_bytes().to_vec(),
            largest: hi.as_bytes().to_vec(),
            entries: 1,
            hlc_max: 0,
        }
    }

    #[test]
    fn l0_trigger_pulls_in_overlapping_l1_only() {
        let options = Options::new("/unused");
        let mut levels = vec![Vec::new(); LEVELS];
        levels[0] = (1..=4).map(|n| meta(n, "b", "d", 10)).collect();
        levels[1] = vec![meta(10, "a", "a", 10), meta(11, "c", "e", 10)];
        let pick = pick(&levels, &options).expect("L0 is full");
        assert_eq!(pick.inputs, vec![1, 2, 3, 4, 11]);
        assert_eq!(pick.output_level, 1);
        assert!(!pick.bottom || levels[2..].iter().all(Vec::is_empty));
        levels[0].pop();
        assert_eq!(super::pick(&levels, &options), None);
    }

    #[test]
    fn deeper_tables_keep_tombstones() {
        let mut levels = vec![Vec::new(); LEVELS];
        levels[0] = vec![meta(1, "a", "b", 1)];
        levels[3] = vec![meta(2, "a", "b", 1)];
        assert!(!is_bottom(&levels, 1, &[1]));
        assert!(is_bottom(&levels, 1, &[1, 2]));
    }
}
