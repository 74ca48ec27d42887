//! Chains of stored segments: which segments, applied oldest first, rebuild a namespace's
//! database as of the end of one of them. Restore plans with `plan_chain`; compaction groups the
//! chain to the newest segment; retention keeps every chain inside its window buildable.
//!
//! A chain starts at frame 1, ends exactly at the target frame, and each segment in it starts at
//! or before the frame after the previous one's end and ends after it. Overlaps are fine: a
//! compacted segment holds the newest version of each page over its whole range, so applying it
//! after an older segment it overlaps leaves every page as of its own end.

use std::cmp::Reverse;

use crate::key::SegmentKey;

/// Frames that no stored segment covers, found while planning a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no stored segment holds frames {first}..={last} (needed to reach frame {target})")]
pub struct MissingFrames {
    /// First frame of the gap.
    pub first: u64,
    /// Last frame of the gap.
    pub last: u64,
    /// The end frame the chain was planned for.
    pub target: u64,
    /// The narrowest stored segment that covers the whole gap but ends after the target, if
    /// there is one: the frames were deleted by retention because that segment holds them,
    /// rather than lost.
    pub covered_by: Option<SegmentKey>,
}

/// Returns the shortest chain of `keys`, oldest first, that starts at frame 1 and ends exactly
/// at `end_frame_no`. At each step back it takes the segment reaching furthest back (the widest
/// compacted one), which gives a shortest chain.
pub fn plan_chain(
    keys: &[SegmentKey],
    end_frame_no: u64,
) -> Result<Vec<SegmentKey>, MissingFrames> {
    plan_chain_after(keys, 0, end_frame_no)
}

/// Returns the shortest chain of `keys`, oldest first, that brings a database as of
/// `after_frame_no` (of the same log) to `end_frame_no`: it covers every frame after
/// `after_frame_no` up to `end_frame_no`, and its first segment may start earlier (a compacted
/// segment reaching back over frames the database already has holds, for each of its pages, a
/// version at least as new as the database's). `after_frame_no` 0 plans from scratch.
///
/// O(n log n) in the number of keys: they are sorted by end once, and each step back is a
/// binary search into the suffix minima of their starts.
pub fn plan_chain_after(
    keys: &[SegmentKey],
    after_frame_no: u64,
    end_frame_no: u64,
) -> Result<Vec<SegmentKey>, MissingFrames> {
    // Usable keys (ending at or before the target) by increasing end; ties keep input order, so
    // that of equally good steps the first listed wins.
    let mut usable: Vec<(usize, &SegmentKey)> = keys
        .iter()
        .enumerate()
        .filter(|(_, k)| k.end_frame_no <= end_frame_no)
        .collect();
    usable.sort_by_key(|&(i, k)| (k.end_frame_no, i));
    // best[i]: among usable[i..], the key reaching furthest back (lowest start, then highest
    // end, then first listed). Every step takes the best key ending at or after the frame it
    // needs, which is the first step's rule too: no usable key ends after the target.
    let mut best: Vec<(usize, &SegmentKey)> = usable.clone();
    for i in (0..best.len().saturating_sub(1)).rev() {
        let rank = |(i, k): (usize, &SegmentKey)| (k.start_frame_no, Reverse(k.end_frame_no), i);
        if rank(best[i + 1]) < rank(best[i]) {
            best[i] = best[i + 1];
        }
    }
    let mut chain = Vec::new();
    let mut need = end_frame_no;
    while need > after_frame_no {
        let at = usable.partition_point(|(_, k)| k.end_frame_no < need);
        match best.get(at) {
            Some(&(_, &key)) if key.start_frame_no <= need => {
                chain.push(key);
                need = key.start_frame_no.saturating_sub(1);
            }
            _ => {
                let first = at
                    .checked_sub(1)
                    .map_or(1, |below| usable[below].1.end_frame_no + 1)
                    .max(after_frame_no + 1);
                let covered_by = keys
                    .iter()
                    .filter(|k| k.start_frame_no <= first && k.end_frame_no >= need)
                    .min_by_key(|k| k.end_frame_no - k.start_frame_no)
                    .copied();
                return Err(MissingFrames {
                    first,
                    last: need,
                    target: end_frame_no,
                    covered_by,
                });
            }
        }
    }
    chain.reverse();
    Ok(chain)
}

/// Returns the keys no other key strictly contains (of several with the same range, the one
/// sealed first), in frame order: the segments that hold the most history.
///
/// O(n log n): one sort by (start, end descending, timestamp), then one sweep that keeps the
/// furthest end of the keys starting earlier.
pub fn maximal_segments(keys: &[SegmentKey]) -> Vec<SegmentKey> {
    let mut sorted = keys.to_vec();
    sorted.sort_unstable_by_key(|k| (k.start_frame_no, Reverse(k.end_frame_no), k.timestamp_ms));
    let mut maximal = Vec::new();
    // The furthest end of every key starting before the current group's start.
    let mut reach_before: Option<u64> = None;
    for group in sorted.chunk_by(|a, b| a.start_frame_no == b.start_frame_no) {
        // The group's first key has its furthest end and, for that end, its first timestamp:
        // it contains every other key of the group strictly, unless it has the same range
        // and timestamp (a copy, dropped below).
        let head = group[0];
        let contained_from_before = reach_before.is_some_and(|end| end >= head.end_frame_no);
        if !contained_from_before {
            maximal.push(head);
        }
        reach_before = reach_before.max(Some(head.end_frame_no));
    }
    maximal.sort_unstable_by_key(|k| (k.start_frame_no, k.end_frame_no, k.timestamp_ms));
    maximal
}

/// Returns the first of `covers` (as `maximal_segments` returns them: in frame order, none
/// containing another) that strictly contains `key`, by binary search: starts and ends of such
/// covers both increase, so the only candidate is the first ending at or after `key` ends.
pub(crate) fn covering_segment(covers: &[SegmentKey], key: &SegmentKey) -> Option<SegmentKey> {
    let at = covers.partition_point(|c| c.end_frame_no < key.end_frame_no);
    covers
        .get(at)
        .filter(|c| strictly_contains(c, key))
        .copied()
}

/// Returns true if `outer` covers every frame of `inner` and more, or the same frames but was
/// sealed earlier (of two copies of one range, the first stays).
pub fn strictly_contains(outer: &SegmentKey, inner: &SegmentKey) -> bool {
    let covers =
        outer.start_frame_no <= inner.start_frame_no && inner.end_frame_no <= outer.end_frame_no;
    let same_range =
        outer.start_frame_no == inner.start_frame_no && outer.end_frame_no == inner.end_frame_no;
    covers && (!same_range || outer.timestamp_ms < inner.timestamp_ms)
}

#[cfg(test)]
pub(crate) mod tests {
    use proptest::prelude::*;

    use super::*;

    fn key(start: u64, end: u64) -> SegmentKey {
        SegmentKey {
            start_frame_no: start,
            end_frame_no: end,
            timestamp_ms: end,
        }
    }

    /// The quadratic planner this module had before sorting: the reference the sorted one must
    /// agree with on every input.
    fn reference_plan_chain_after(
        keys: &[SegmentKey],
        after_frame_no: u64,
        end_frame_no: u64,
    ) -> Result<Vec<SegmentKey>, MissingFrames> {
        let usable: Vec<&SegmentKey> = keys
            .iter()
            .filter(|k| k.end_frame_no <= end_frame_no)
            .collect();
        let mut chain = Vec::new();
        let mut need = end_frame_no;
        while need > after_frame_no {
            let step = usable
                .iter()
                .filter(|k| {
                    k.start_frame_no <= need
                        && k.end_frame_no >= need
                        && (!chain.is_empty() || k.end_frame_no == end_frame_no)
                })
                .min_by_key(|k| (k.start_frame_no, Reverse(k.end_frame_no)));
            match step {
                Some(&&key) => {
                    chain.push(key);
                    need = key.start_frame_no - 1;
                }
                None => {
                    let first = usable
                        .iter()
                        .map(|k| k.end_frame_no)
                        .filter(|&end| end < need)
                        .max()
                        .map_or(1, |end| end + 1)
                        .max(after_frame_no + 1);
                    let covered_by = keys
                        .iter()
                        .filter(|k| k.start_frame_no <= first && k.end_frame_no >= need)
                        .min_by_key(|k| k.end_frame_no - k.start_frame_no)
                        .copied();
                    return Err(MissingFrames {
                        first,
                        last: need,
                        target: end_frame_no,
                        covered_by,
                    });
                }
            }
        }
        chain.reverse();
        Ok(chain)
    }

    /// The quadratic `maximal_segments` this module had before sorting.
    pub(crate) fn reference_maximal_segments(keys: &[SegmentKey]) -> Vec<SegmentKey> {
        let mut maximal: Vec<SegmentKey> = keys
            .iter()
            .filter(|k| !keys.iter().any(|other| strictly_contains(other, k)))
            .copied()
            .collect();
        maximal.sort_by_key(|k| (k.start_frame_no, k.end_frame_no, k.timestamp_ms));
        maximal.dedup_by_key(|k| (k.start_frame_no, k.end_frame_no));
        maximal
    }

    /// Random keys of a namespace: originals and compacted (overlapping) ones, some of the
    /// same range sealed at different or equal times, as listed from a bucket.
    pub(crate) fn overlapping_key_sets() -> impl Strategy<Value = Vec<SegmentKey>> {
        prop::collection::vec((1u64..120, 0u64..40, 0u64..6), 0..60).prop_map(|keys| {
            keys.into_iter()
                .map(|(start, len, timestamp_ms)| SegmentKey {
                    start_frame_no: start,
                    end_frame_no: start + len,
                    timestamp_ms,
                })
                .collect()
        })
    }

    /// Originals of 10 frames, two compacted ones overlapping them, and a newer original.
    fn overlapping_keys() -> [SegmentKey; 6] {
        [
            key(1, 10),
            key(11, 20),
            key(21, 30),
            key(1, 20),
            key(15, 30),
            key(31, 40),
        ]
    }

    #[test]
    fn the_widest_segments_make_the_shortest_chain() {
        let keys = overlapping_keys();
        assert_eq!(plan_chain(&keys, 30), Ok(vec![key(1, 20), key(15, 30)]));
        assert_eq!(
            plan_chain(&keys, 40),
            Ok(vec![key(1, 20), key(15, 30), key(31, 40)])
        );
        assert_eq!(plan_chain(&keys, 10), Ok(vec![key(1, 10)]));
        // No segment ends at 25.
        assert!(plan_chain(&keys, 25).is_err());
    }

    #[test]
    fn a_chain_after_a_frame_covers_only_what_follows_it() {
        let keys = overlapping_keys();
        assert_eq!(plan_chain_after(&keys, 30, 40), Ok(vec![key(31, 40)]));
        assert_eq!(
            plan_chain_after(&keys, 12, 40),
            Ok(vec![key(1, 20), key(15, 30), key(31, 40)])
        );
        assert_eq!(plan_chain_after(&keys, 20, 30), Ok(vec![key(15, 30)]));
        assert_eq!(plan_chain_after(&keys, 30, 30), Ok(vec![]));
        let gap = plan_chain_after(&[key(1, 10), key(21, 30)], 12, 30).unwrap_err();
        assert_eq!((gap.first, gap.last), (13, 20));
    }

    #[test]
    fn a_gap_names_the_missing_frames_and_what_still_covers_them() {
        let keys = [key(1, 10), key(21, 30)];
        let gap = plan_chain(&keys, 30).unwrap_err();
        assert_eq!((gap.first, gap.last, gap.covered_by), (11, 20, None));
        assert!(gap.to_string().contains("11..=20"), "{gap}");
        let keys = [key(1, 40), key(21, 30)];
        let gap = plan_chain(&keys, 30).unwrap_err();
        assert_eq!((gap.first, gap.last), (1, 20));
        assert_eq!(gap.covered_by, Some(key(1, 40)));
    }

    #[test]
    fn maximal_segments_keep_the_first_copy_of_a_range() {
        let mut twice = key(1, 10);
        twice.timestamp_ms = 99;
        let keys = [key(1, 10), twice, key(3, 5), key(11, 20), key(1, 20)];
        assert_eq!(maximal_segments(&keys), vec![key(1, 20)]);
        assert_eq!(maximal_segments(&keys[..3]), vec![key(1, 10)]);
    }

    proptest! {
        /// On any set of overlapping keys, the sorted planner and `maximal_segments` return
        /// exactly what the quadratic reference returns: the same chain, or the same gap.
        #[test]
        fn sorted_planning_agrees_with_the_quadratic_reference(
            keys in overlapping_key_sets(),
            targets in prop::collection::vec((0u64..170, 0u64..170), 1..8),
        ) {
            let mut ends: Vec<u64> = keys.iter().map(|k| k.end_frame_no).collect();
            ends.extend(targets.iter().map(|&(end, _)| end));
            for (i, &end) in ends.iter().enumerate() {
                let after = targets[i % targets.len()].1 % (end + 1);
                prop_assert_eq!(
                    plan_chain_after(&keys, after, end),
                    reference_plan_chain_after(&keys, after, end),
                    "after {} end {}", after, end
                );
                prop_assert_eq!(plan_chain(&keys, end), reference_plan_chain_after(&keys, 0, end));
            }
            prop_assert_eq!(maximal_segments(&keys), reference_maximal_segments(&keys));
        }

        /// Any set of consecutive segments plus random merges of runs of them: the planned chain
        /// starts at 1, ends at the target, joins up, and is no longer than the plain one.
        #[test]
        fn planned_chains_join_up_and_are_shortest(
            lens in prop::collection::vec(1u64..20, 1..30),
            merges in prop::collection::vec((0usize..30, 1usize..10), 0..10),
            target in 0usize..30,
        ) {
            let mut base = Vec::new();
            let mut start = 1;
            for len in &lens {
                base.push(key(start, start + len - 1));
                start += len;
            }
            let mut keys = base.clone();
            for (from, n) in merges {
                if from < base.len() {
                    let to = (from + n).min(base.len() - 1);
                    keys.push(key(base[from].start_frame_no, base[to].end_frame_no));
                }
            }
            let target = base[target.min(base.len() - 1)].end_frame_no;
            let chain = plan_chain(&keys, target).unwrap();
            prop_assert_eq!(chain[0].start_frame_no, 1);
            prop_assert_eq!(chain[chain.len() - 1].end_frame_no, target);
            for pair in chain.windows(2) {
                prop_assert!(pair[1].start_frame_no <= pair[0].end_frame_no + 1);
                prop_assert!(pair[1].end_frame_no > pair[0].end_frame_no);
            }
            let plain = base.iter().filter(|k| k.end_frame_no <= target).count();
            prop_assert!(chain.len() <= plain);
        }
    }
}
