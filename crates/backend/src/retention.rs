//! Retention: deletes a namespace's stored segments that are older than the retention window and
//! whose frames a verified compacted segment still holds, so the bucket stops growing while
//! every point inside the window stays exactly restorable.
//!
//! Rules, so that no restore inside the window loses a segment it needs:
//! - a segment is deleted only if it was sealed before the window opened (`now - window`), and
//! - some segment strictly containing it ends at or before the first point inside the window,
//!   and is maximal among those (contained in no other of them, so never deleted itself); that
//!   segment is verified (index and every frame) before anything it covers is deleted.
//!
//! Then every chain to a point inside the window can use the covering segment instead of what
//! was deleted. Points before the window become coarser: a restore there lands on the newest
//! end of a surviving segment at or before the target. A crash part way leaves segments that
//! are still covered, so the bucket restores at every step.
//!
//! Retention also sweeps orphan indexes: a store writes the index object first and the data
//! second, so a crash between the two leaves an index no listing shows and nothing deletes. An
//! index whose data does not exist is deleted once both its key's timestamp and the time the
//! object itself was written (`Backend::stat`) are older than `ORPHAN_INDEX_GRACE`; the
//! data is checked once more just before. The object's own age keeps the sweep off an upload
//! in flight, which stores its data right after its index, even when its key is old (a
//! compaction of old history, run by another machine or an operator's command while this
//! retention runs).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tracing::{debug, info};

use crate::backend::Backend;
use crate::chain::{covering_segment, maximal_segments};
use crate::error::{Error, Result};
use crate::ext::{index_object, list_index_keys, segment_object, BackendExt};
use crate::generation::Generation;
use crate::key::SegmentKey;

/// What `apply_retention` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Segments deleted (data and index), oldest first.
    pub deleted: Vec<SegmentKey>,
    /// Compacted segments verified because they cover what was deleted.
    pub verified: Vec<SegmentKey>,
    /// Orphan index objects deleted (their data never stored, their key's timestamp and the
    /// object's write time older than `ORPHAN_INDEX_GRACE`), oldest first.
    pub orphan_indexes: Vec<SegmentKey>,
}

/// How old (by its key's timestamp and by the time it was written) an index without data must
/// be before retention deletes it: far longer than any store takes between its index and its
/// data, and than the clocks of the machines and the bucket disagree.
pub const ORPHAN_INDEX_GRACE: Duration = Duration::from_secs(3600);

/// Deletes the segments of `generation` that retention allows (see the module docs), with the
/// window open from `now_ms - window` (milliseconds since the Unix epoch).
#[tracing::instrument(skip(backend, config), fields(%generation))]
pub async fn apply_retention<B: Backend>(
    backend: &B,
    config: &B::Config,
    generation: &Generation,
    window: Duration,
    now_ms: u64,
) -> Result<RetentionReport> {
    let keys = backend.list_segments(config, generation, u64::MAX).await?;
    let plan = plan_retention(&keys, window, now_ms);
    let mut report = RetentionReport::default();
    for &cover in plan.values().collect::<std::collections::BTreeSet<_>>() {
        backend.verify_segment(config, generation, cover).await?;
        report.verified.push(cover);
    }
    let mut deleted: Vec<SegmentKey> = plan.keys().copied().collect();
    deleted.sort_by_key(|k| (k.start_frame_no, k.end_frame_no, k.timestamp_ms));
    backend
        .delete_segments(config, generation, &deleted)
        .await?;
    report.deleted = deleted;
    report.orphan_indexes = sweep_orphan_indexes(backend, config, generation, now_ms).await?;
    info!(
        deleted = report.deleted.len(),
        verified = report.verified.len(),
        orphan_indexes = report.orphan_indexes.len(),
        "retention applied"
    );
    Ok(report)
}

/// Deletes the index objects of `generation` whose data does not exist and whose key's
/// timestamp and own write time are older than `ORPHAN_INDEX_GRACE` before `now_ms`; returns
/// their keys, oldest first. Indexes are listed before data, so a store that completes in between keeps its index.
async fn sweep_orphan_indexes<B: Backend>(
    backend: &B,
    config: &B::Config,
    generation: &Generation,
    now_ms: u64,
) -> Result<Vec<SegmentKey>> {
    let grace_ms = u64::try_from(ORPHAN_INDEX_GRACE.as_millis()).unwrap_or(u64::MAX);
    let expired_before = now_ms.saturating_sub(grace_ms);
    let indexes = list_index_keys(backend, config, generation).await?;
    let data: HashSet<SegmentKey> = backend
        .list_segments(config, generation, u64::MAX)
        .await?
        .into_iter()
        .collect();
    let mut orphans: Vec<SegmentKey> = indexes
        .into_iter()
        .filter(|k| !data.contains(k) && k.timestamp_ms < expired_before)
        .collect();
    orphans.sort_by_key(|k| (k.start_frame_no, k.end_frame_no, k.timestamp_ms));
    let mut deleted = Vec::with_capacity(orphans.len());
    for key in orphans {
        // Written recently whatever its key says: an upload of old frames may be in flight.
        match backend.stat(config, &index_object(generation, &key)).await {
            Ok(stat) if stat.modified_ms < expired_before => {}
            Ok(_) | Err(Error::NotFound { .. }) => continue,
            Err(e) => return Err(e),
        }
        // The data may have arrived since it was listed: then the index is not an orphan.
        match backend.get(config, &segment_object(generation, &key)).await {
            Err(Error::NotFound { .. }) => {}
            Ok(_) => continue,
            Err(e) => return Err(e),
        }
        backend
            .delete(config, &index_object(generation, &key))
            .await?;
        debug!(%key, "orphan index deleted");
        deleted.push(key);
    }
    Ok(deleted)
}

/// Returns the segments retention deletes, each with the maximal segment that covers it.
///
/// O(n log n) in the number of keys: the covers are found once (`maximal_segments`), and each
/// expired key's cover by binary search among them.
pub fn plan_retention(
    keys: &[SegmentKey],
    window: Duration,
    now_ms: u64,
) -> HashMap<SegmentKey, SegmentKey> {
    let opened_ms = window_opened_ms(window, now_ms);
    // The first restorable point inside the window; with none, the newest point stays exact.
    let Some(floor) = keys
        .iter()
        .filter(|k| k.timestamp_ms >= opened_ms)
        .map(|k| k.end_frame_no)
        .min()
        .or_else(|| keys.iter().map(|k| k.end_frame_no).max())
    else {
        return HashMap::new();
    };
    let before_floor: Vec<SegmentKey> = keys
        .iter()
        .filter(|k| k.end_frame_no <= floor)
        .copied()
        .collect();
    let covers = maximal_segments(&before_floor);
    let mut plan = HashMap::new();
    for key in keys.iter().filter(|k| k.timestamp_ms < opened_ms) {
        if let Some(cover) = covering_segment(&covers, key) {
            debug!(%key, %cover, "expired and covered");
            plan.insert(*key, cover);
        }
    }
    plan
}

/// Returns when a retention window of `window` ending at `now_ms` opened (milliseconds since
/// the Unix epoch; 0 for a window reaching back past it).
pub(crate) fn window_opened_ms(window: Duration, now_ms: u64) -> u64 {
    now_ms.saturating_sub(u64::try_from(window.as_millis()).unwrap_or(u64::MAX))
}

/// Returns the wall-clock time in milliseconds since the Unix epoch, as retention windows and
/// generation records take it (0 for a clock set before 1970).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::chain::strictly_contains;
    use crate::chain::tests::{overlapping_key_sets, reference_maximal_segments};

    /// The quadratic planner this module had before the binary search: the reference the new
    /// one must agree with on every input.
    fn reference_plan_retention(
        keys: &[SegmentKey],
        window: Duration,
        now_ms: u64,
    ) -> HashMap<SegmentKey, SegmentKey> {
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        let opened_ms = now_ms.saturating_sub(window_ms);
        let Some(floor) = keys
            .iter()
            .filter(|k| k.timestamp_ms >= opened_ms)
            .map(|k| k.end_frame_no)
            .min()
            .or_else(|| keys.iter().map(|k| k.end_frame_no).max())
        else {
            return HashMap::new();
        };
        let before_floor: Vec<SegmentKey> = keys
            .iter()
            .filter(|k| k.end_frame_no <= floor)
            .copied()
            .collect();
        let covers = reference_maximal_segments(&before_floor);
        let mut plan = HashMap::new();
        for key in keys.iter().filter(|k| k.timestamp_ms < opened_ms) {
            if let Some(cover) = covers.iter().find(|c| strictly_contains(c, key)) {
                plan.insert(*key, *cover);
            }
        }
        plan
    }

    proptest! {
        /// On any set of overlapping keys and any window, retention plans exactly what the
        /// quadratic reference plans.
        #[test]
        fn sorted_retention_agrees_with_the_quadratic_reference(
            keys in overlapping_key_sets(),
            window_ms in 0u64..8,
            now_ms in 0u64..10,
        ) {
            let window = Duration::from_millis(window_ms);
            prop_assert_eq!(
                plan_retention(&keys, window, now_ms),
                reference_plan_retention(&keys, window, now_ms)
            );
        }
    }

    fn key(start: u64, end: u64, timestamp_ms: u64) -> SegmentKey {
        SegmentKey {
            start_frame_no: start,
            end_frame_no: end,
            timestamp_ms,
        }
    }

    #[test]
    fn only_expired_segments_covered_by_a_compacted_one_ending_before_the_window_go() {
        // Ten segments sealed at t = 10, 20, ..., 100; compacted 1..=50 and 1..=100.
        let mut keys: Vec<SegmentKey> = (0..10)
            .map(|i| key(i * 10 + 1, i * 10 + 10, i * 10 + 10))
            .collect();
        keys.push(key(1, 50, 50));
        // Window opens at 65: points inside it end at 70, 80, ..., 100.
        let plan = plan_retention(&keys, Duration::from_millis(35), 100);
        let mut deleted: Vec<SegmentKey> = plan.keys().copied().collect();
        deleted.sort();
        deleted.reverse();
        assert_eq!(deleted, (0..5).map(|i| keys[i]).collect::<Vec<_>>());
        assert!(plan.values().all(|c| *c == key(1, 50, 50)));

        // A compacted segment reaching into the window covers nothing yet (the restore to
        // frame 70 could not use it), and does not stop 1..=50 from covering.
        keys.push(key(1, 100, 100));
        let again = plan_retention(&keys, Duration::from_millis(35), 100);
        assert_eq!(again, plan);

        // Once the whole history is past the window, the newest point still stays.
        let plan = plan_retention(&keys, Duration::from_millis(1), 1000);
        assert!(plan.values().all(|c| *c == key(1, 100, 100)));
        assert!(plan.contains_key(&key(91, 100, 100)));
        assert!(plan.contains_key(&key(1, 50, 50)));
        assert!(!plan.contains_key(&key(1, 100, 100)));
    }
}
