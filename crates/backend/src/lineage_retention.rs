//! Retention of whole generations: drops the dead branches of a namespace's history once
//! they are older than the retention window, so that takeovers, rewinds and fresh logs over an
//! old prefix do not leave every superseded generation in the bucket forever.
//!
//! A generation is dead when no restore inside the window can reach it:
//! - it is not in the history (itself and its parents, see `Lineage::history`) of the newest
//!   generation, nor of any generation that was the newest at some moment inside the window
//!   (created inside it, or superseded inside it), nor of one that holds a segment sealed inside
//!   the window (a fenced writer's last upload lands after it was superseded);
//! - it was superseded (the next generation was created) before the window opened, by records
//!   whose times run forward (a later record created before it says the clocks of the
//!   machines disagree: it is kept); and
//! - it is newer than the namespace's newest deletion mark: generations older than a mark are
//!   the backups `delete_namespace(keep_backups)` promised to keep, and only a full delete
//!   removes them.
//!
//! Restores by time and of latest follow the newest generation's history only, so they never
//! read a dead generation. A drop deletes the generation's segment data, then every other
//! object under its directory (indexes), and keeps its record (one small object): a machine
//! still holding that generation's files is then still told it was superseded when it opens
//! (without the record its log would look like a new history and take the namespace over), and
//! a fenced writer's upload that lands after the drop is found and dropped by a later pass. A
//! restore of a dropped generation by its number gets only what its parents still hold: the
//! point it forked from, or nothing. A drop cut short is finished by the next pass. Before each
//! generation's deletes the newest record is read again: a claim or a deletion mark made
//! meanwhile stops the pass.
//!
//! One race is left open: a rewind to a point of a dead generation that restored that point
//! before a drop began and claims its new generation after the drop read the newest record
//! leaves a history whose parent's frames are gone; its restores fail with `MissingFrames`
//! naming what is missing. Rewinds to points older than the window should not run beside
//! maintenance.

use std::collections::HashSet;
use std::time::Duration;

use tracing::{debug, info, warn};

use crate::backend::Backend;
use crate::error::Result;
use crate::ext::{segments_prefix, BackendExt};
use crate::generation::{generation_object, GenerationKind, Lineage};
use crate::namespace::NamespaceName;
use crate::retention::window_opened_ms;

/// Returns the numbers of the generations of `lineage` that are dead with the window open from
/// `now_ms - window` (see the module docs), oldest first, treating the generations of
/// `sealed_inside_window` as holding a segment sealed inside it. Drops nothing (returns an
/// empty list) when the newest generation is a deletion mark or a history names a record the
/// lineage does not hold.
pub fn plan_dead_generations(
    namespace: &NamespaceName,
    lineage: &Lineage,
    window: Duration,
    now_ms: u64,
    sealed_inside_window: &HashSet<u64>,
) -> Vec<u64> {
    let records = &lineage.records;
    let Some(newest) = records.last() else {
        return Vec::new();
    };
    if newest.kind == GenerationKind::Deleted {
        return Vec::new();
    }
    let opened_ms = window_opened_ms(window, now_ms);
    // The current incarnation: everything after the newest deletion mark.
    let first = records
        .iter()
        .rposition(|r| r.kind == GenerationKind::Deleted)
        .map_or(0, |mark| mark + 1);
    let incarnation = &records[first..];
    let mut kept = HashSet::new();
    for (i, record) in incarnation.iter().enumerate() {
        let superseded_ms = incarnation.get(i + 1).map(|next| next.created_ms);
        let live_inside_window = superseded_ms.is_none_or(|ms| ms >= opened_ms);
        let clocks_disagree = incarnation[i + 1..]
            .iter()
            .any(|later| later.created_ms < record.created_ms);
        if !live_inside_window && !clocks_disagree && !sealed_inside_window.contains(&record.number)
        {
            continue;
        }
        match lineage.history(namespace, record.number, None) {
            Ok(history) => kept.extend(history.iter().map(|(r, _)| r.number)),
            Err(e) => {
                warn!(%namespace, error = %e, "a history does not hold together; no generation is dropped");
                return Vec::new();
            }
        }
    }
    incarnation
        .iter()
        .filter(|r| matches!(r.kind, GenerationKind::Log { .. }) && !kept.contains(&r.number))
        .map(|r| r.number)
        .collect()
}

/// Returns the generations of `namespace` that are dead (see the module docs) with the window
/// open from `now_ms - window` and still hold objects besides their record, oldest first: one
/// lineage read, and a segment listing per dead generation per plan (plus a prefix listing
/// for one without segments).
#[tracing::instrument(skip(backend, config))]
pub async fn dead_generations<B: Backend>(
    backend: &B,
    config: &B::Config,
    namespace: &NamespaceName,
    window: Duration,
    now_ms: u64,
) -> Result<Vec<u64>> {
    let lineage = backend.lineage(config, namespace).await?;
    dead_in(backend, config, namespace, &lineage, window, now_ms).await
}

/// `dead_generations` on `lineage`, just read.
async fn dead_in<B: Backend>(
    backend: &B,
    config: &B::Config,
    namespace: &NamespaceName,
    lineage: &Lineage,
    window: Duration,
    now_ms: u64,
) -> Result<Vec<u64>> {
    let opened_ms = window_opened_ms(window, now_ms);
    let mut sealed_inside_window = HashSet::new();
    // Generations found holding stored segments (each plan lists its dead generations again).
    let mut with_segments = HashSet::new();
    let dead = loop {
        let dead = plan_dead_generations(namespace, lineage, window, now_ms, &sealed_inside_window);
        let mut grew = false;
        for &number in &dead {
            let Some(generation) = lineage.get(number).and_then(|r| r.log(namespace)) else {
                continue;
            };
            let keys = backend.list_segments(config, &generation, u64::MAX).await?;
            if keys.iter().any(|k| k.timestamp_ms >= opened_ms) {
                debug!(%generation, "a dead branch holds a segment sealed inside the window; kept");
                sealed_inside_window.insert(number);
                grew = true;
            } else if !keys.is_empty() {
                with_segments.insert(number);
            }
        }
        // Keeping one keeps its parents too: plan again.
        if !grew {
            break dead;
        }
    };
    let mut holding = Vec::with_capacity(dead.len());
    for number in dead {
        let Some(generation) = lineage.get(number).and_then(|r| r.log(namespace)) else {
            continue;
        };
        if !with_segments.contains(&number) {
            // Indexes whose data never arrived, or a drop cut short between the two.
            let record = generation_object(namespace, number);
            let listed = backend.list(config, &generation.prefix(), None, 2).await?;
            if listed.iter().all(|object| *object == record) {
                continue;
            }
        }
        holding.push(number);
    }
    Ok(holding)
}

/// Drops the dead generations of `namespace` (see the module docs) with the window open from
/// `now_ms - window`: deletes every object of theirs but their record; returns their numbers,
/// oldest first. Before each generation the newest record is read again: a generation created
/// since the lineage was read (a takeover, a rewind, a deletion mark) stops the pass.
#[tracing::instrument(skip(backend, config))]
pub async fn drop_dead_generations<B: Backend>(
    backend: &B,
    config: &B::Config,
    namespace: &NamespaceName,
    window: Duration,
    now_ms: u64,
) -> Result<Vec<u64>> {
    let lineage = backend.lineage(config, namespace).await?;
    let planned = dead_in(backend, config, namespace, &lineage, window, now_ms).await?;
    let newest = lineage.newest().map(|r| r.number);
    let mut dropped = Vec::new();
    for number in planned {
        let Some(generation) = lineage.get(number).and_then(|r| r.log(namespace)) else {
            continue;
        };
        let now_newest = backend
            .newest_generation(config, namespace)
            .await?
            .map(|r| r.number);
        if now_newest != newest {
            info!(%namespace, ?newest, ?now_newest, "a generation was created during the drop; the rest waits for the next pass");
            break;
        }
        let data = backend
            .delete_under(config, &segments_prefix(&generation), None)
            .await?;
        let record = generation_object(namespace, number);
        let rest = backend
            .delete_under(config, &generation.prefix(), Some(&record))
            .await?;
        info!(%generation, objects = data + rest, "dead generation dropped; its record stays");
        dropped.push(number);
    }
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;
    use crate::generation::{ForkPoint, GenerationRecord};

    fn ns() -> NamespaceName {
        "tenant".parse().unwrap()
    }

    fn log(number: u64, created_ms: u64, parent: Option<(u64, u64)>) -> GenerationRecord {
        GenerationRecord {
            number,
            created_ms,
            kind: GenerationKind::Log {
                log_id: Uuid::from_u128(u128::from(number)),
                start_frame_no: parent.map_or(1, |(_, f)| f + 1),
                parent: parent.map(|(generation, frame_no)| ForkPoint {
                    generation,
                    frame_no,
                }),
                rewound: false,
            },
        }
    }

    fn deleted(number: u64, created_ms: u64) -> GenerationRecord {
        GenerationRecord {
            number,
            created_ms,
            kind: GenerationKind::Deleted,
        }
    }

    fn plan(records: Vec<GenerationRecord>, window_ms: u64, now_ms: u64) -> Vec<u64> {
        plan_dead_generations(
            &ns(),
            &Lineage { records },
            Duration::from_millis(window_ms),
            now_ms,
            &HashSet::new(),
        )
    }

    #[test]
    fn branches_left_before_the_window_go_and_the_current_history_stays() {
        // 1 -> 2 (rewound to a point of 1) -> 3 (a fresh log) -> 4 (rewound to a point of 2).
        let records = vec![
            log(1, 10, None),
            log(2, 20, Some((1, 5))),
            log(3, 30, None),
            log(4, 40, Some((2, 9))),
        ];
        // The window opens at 45: 3 was superseded before it; 4's history is 4, 2, 1.
        assert_eq!(plan(records.clone(), 55, 100), vec![3]);
        // The window opens at 35: 3 was live inside it and stays.
        assert_eq!(plan(records.clone(), 65, 100), Vec::<u64>::new());
        // A window that opens after everything still keeps the current history.
        assert_eq!(plan(records, 1, 100), vec![3]);
    }

    #[test]
    fn a_branch_a_kept_generation_continues_from_stays() {
        // 1 -> 2 (fresh) -> 3 (rewound to a point of 1, superseded at 40) -> 4 (fresh).
        let records = vec![
            log(1, 10, None),
            log(2, 20, None),
            log(3, 30, Some((1, 5))),
            log(4, 40, None),
        ];
        // Window opens at 35: 3 was live inside it, and so is its parent 1; 2 goes.
        assert_eq!(plan(records.clone(), 65, 100), vec![2]);
        // A segment of 2 sealed inside the window (a fenced writer's last upload) keeps it.
        let kept = plan_dead_generations(
            &ns(),
            &Lineage {
                records: records.clone(),
            },
            Duration::from_millis(65),
            100,
            &HashSet::from([2]),
        );
        assert_eq!(kept, Vec::<u64>::new());
        // Window opens at 50: 1, 2 and 3 go.
        assert_eq!(plan(records, 50, 100), vec![1, 2, 3]);
    }

    #[test]
    fn backups_before_a_deletion_mark_and_a_deleted_namespace_are_kept() {
        let records = vec![
            log(1, 10, None),
            deleted(2, 20),
            log(3, 30, None),
            log(4, 40, None),
        ];
        assert_eq!(plan(records.clone(), 1, 100), vec![3]);
        let mut gone = records;
        gone.push(deleted(5, 50));
        assert_eq!(plan(gone, 1, 100), Vec::<u64>::new());
    }

    #[test]
    fn a_later_record_created_before_says_the_clocks_disagree_and_keeps_it() {
        // 2's writer's clock is behind: its record says 5, before 1's.
        let records = vec![log(1, 10, None), log(2, 5, None), log(3, 40, None)];
        assert_eq!(plan(records, 1, 100), vec![2]);
    }

    #[test]
    fn a_history_missing_a_record_drops_nothing() {
        // The newest continues from 2, whose record is gone.
        let records = vec![log(1, 10, None), log(3, 30, None), log(4, 40, Some((2, 5)))];
        assert_eq!(plan(records, 1, 100), Vec::<u64>::new());
    }
}
