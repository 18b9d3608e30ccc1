//! Splitting a ring arc among the members a node knows: the routing step of dissemination.
//!
//! A batch travels as a *delegation*: "you have it now; pass it to every member on this arc".
//! Each tick the holder splits the members on its remaining arc into up to `fanout + 1`
//! contiguous parts of near-equal size, hands each of `fanout` parts to one random member of
//! that part, and keeps one part for its next tick. The informed set grows about
//! `(fanout + 1)`-fold per tick, and each member receives the batch once per loss-free path
//! (Chord-style broadcast, El-Ansary et al., "Efficient broadcast in structured P2P
//! networks", 2003, with the binomial "keep a part" twist).
//!
//! **Invariants:** the parts returned by [`split`] are disjoint and their union is the input
//! arc; every part contains at least one member of the view; members with the same ring
//! position always land in the same part (so no member is dropped at a boundary).

use super::types::{NodeId, PeerInfo};
use super::wire::Arc;

/// One part of a split: its arc and the view indices of the members on it.
#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    /// The part's arc (a sub-arc of the split arc).
    pub arc: Arc,
    /// Indices into the view of the members on it, in ring order.
    pub members: Vec<usize>,
}

/// View indices of the members on `arc`, in ring order starting at `arc.lo`, without `skip`.
/// (Callers put their own node id in `skip` when the view may contain it.)
pub fn members_on_arc(view: &[PeerInfo], arc: Arc, skip: &[NodeId]) -> Vec<usize> {
    if view.is_empty() {
        return Vec::new();
    }
    let lower_bound = |position: u32| view.partition_point(|peer| peer.ring < position);
    let start = lower_bound(arc.lo);
    let count = if arc.lo == arc.hi {
        view.len()
    } else if arc.lo < arc.hi {
        lower_bound(arc.hi) - start
    } else {
        view.len() - start + lower_bound(arc.hi)
    };
    (0..count)
        .map(|offset| (start + offset) % view.len())
        .filter(|&index| !skip.contains(&view[index].node))
        .collect()
}

/// Splits the members on `arc` into at most `parts_max` contiguous parts of near-equal size.
pub fn split(view: &[PeerInfo], arc: Arc, members: &[usize], parts_max: usize) -> Vec<Part> {
    assert!(parts_max >= 1, "a split has at least one part");
    if members.is_empty() {
        return Vec::new();
    }
    let parts = parts_max.min(members.len());
    let ring = |slot: usize| view[members[slot]].ring;
    // Part starts (as slots into `members`), moved forward past members that share the ring
    // position of their predecessor: an arc boundary cannot separate equal positions.
    let mut starts: Vec<usize> = vec![0];
    for part in 1..parts {
        let mut start = (part * members.len()).div_ceil(parts);
        while start < members.len() && ring(start) == ring(start - 1) {
            start += 1;
        }
        if start < members.len() && start > starts[starts.len() - 1] {
            starts.push(start);
        }
    }
    let mut result = Vec::with_capacity(starts.len());
    for (index, &start) in starts.iter().enumerate() {
        let end = starts.get(index + 1).copied().unwrap_or(members.len());
        let lo = if index == 0 { arc.lo } else { ring(start) };
        let hi = if end == members.len() {
            arc.hi
        } else {
            ring(end)
        };
        result.push(Part {
            arc: Arc { lo, hi },
            members: members[start..end].to_vec(),
        });
    }
    debug_assert_eq!(
        result.iter().map(|part| part.members.len()).sum::<usize>(),
        members.len()
    );
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::types::sort_view;
    use proptest::prelude::*;

    fn view_of(nodes: &[u64]) -> Vec<PeerInfo> {
        let mut view: Vec<PeerInfo> = nodes.iter().map(|&node| PeerInfo::new(node, 1)).collect();
        sort_view(&mut view, u64::MAX);
        view
    }

    #[test]
    fn full_ring_lists_every_member_once() {
        let view = view_of(&(0..50).collect::<Vec<_>>());
        let members = members_on_arc(&view, Arc { lo: 7, hi: 7 }, &[]);
        let mut sorted = members.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        let skipped = members_on_arc(&view, Arc { lo: 7, hi: 7 }, &[view[3].node]);
        assert_eq!(skipped.len(), 49);
    }

    #[test]
    fn equal_positions_stay_in_one_part() {
        let mut view = vec![
            PeerInfo {
                ring: 10,
                node: 1,
                shards: 1,
            },
            PeerInfo {
                ring: 10,
                node: 2,
                shards: 1,
            },
            PeerInfo {
                ring: 10,
                node: 3,
                shards: 1,
            },
            PeerInfo {
                ring: 20,
                node: 4,
                shards: 1,
            },
        ];
        view.sort_unstable();
        let arc = Arc { lo: 0, hi: 0 };
        let members = members_on_arc(&view, arc, &[]);
        let parts = split(&view, arc, &members, 4);
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].members, vec![0, 1, 2]);
        assert_eq!(parts[1].arc, Arc { lo: 20, hi: 0 });
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn parts_partition_the_arc(
            nodes in proptest::collection::vec(any::<u64>(), 0..60),
            lo in any::<u32>(), hi in any::<u32>(), parts_max in 1usize..6,
        ) {
            let view = view_of(&nodes);
            let arc = Arc { lo, hi };
            let members = members_on_arc(&view, arc, &[]);
            for &index in &members {
                prop_assert!(arc.contains(view[index].ring));
            }
            let outside = view.iter().filter(|peer| !arc.contains(peer.ring)).count();
            prop_assert_eq!(members.len() + outside, view.len());
            let parts = split(&view, arc, &members, parts_max);
            prop_assert!(parts.len() <= parts_max);
            let mut covered = 0;
            for part in &parts {
                prop_assert!(!part.members.is_empty());
                for &index in &part.members {
                    prop_assert!(part.arc.contains(view[index].ring));
                    // Each member lies in exactly one part.
                    let holders = parts.iter().filter(|p| p.arc.contains(view[index].ring)).count();
                    prop_assert_eq!(holders, 1);
                }
                // Members of the split on this part's arc are exactly the part's members.
                let on_part = members_on_arc(&view, part.arc, &[]);
                prop_assert_eq!(&on_part, &part.members);
                covered += part.members.len();
            }
            prop_assert_eq!(covered, members.len());
        }
    }
}
