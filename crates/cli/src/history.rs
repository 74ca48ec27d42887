//! A namespace's history as the bucket holds it, read for `ls` and `verify`: its generations,
//! and for each generation of the current history (the newest one and the parents it
//! continues) its stored segments and the points a restore can land on.

use futures::{StreamExt, TryStreamExt};
use libsql_wal_backend::{
    index_object, plan_chain_after, segment_object, Backend, BackendExt, Generation,
    GenerationKind, GenerationRecord, Lineage, MissingFrames, NamespaceName, SegmentKey,
};
use serde::Serialize;

use crate::output::time_text;

/// One generation of the current history.
#[derive(Debug, Clone)]
pub struct Part {
    /// The generation.
    pub generation: Generation,
    /// Its first frame_no.
    pub start_frame_no: u64,
    /// Its last frame that belongs to the history (the point the next generation continues
    /// from); `None` for the newest, all of which does.
    pub until: Option<u64>,
    /// Its stored segments ending at or before `until`, newest-ending first.
    pub keys: Vec<SegmentKey>,
}

/// What the bucket holds of a namespace.
#[derive(Debug, Clone)]
pub struct History {
    /// Every generation, oldest first.
    pub lineage: Lineage,
    /// The current history, newest generation first; empty when the namespace has no
    /// generation or its newest marks it deleted.
    pub parts: Vec<Part>,
}

/// A point a restore can land on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Point {
    /// The generation it is in.
    pub generation: u64,
    /// The last frame_no of the database there.
    pub frame_no: u64,
    /// When the segment ending there was sealed (milliseconds since the Unix epoch).
    pub timestamp_ms: u64,
    /// The same, as RFC 3339.
    pub time: String,
}

impl Point {
    fn new(generation: u64, key: &SegmentKey) -> Self {
        Point {
            generation,
            frame_no: key.end_frame_no,
            timestamp_ms: key.timestamp_ms,
            time: time_text(key.timestamp_ms),
        }
    }
}

/// `HEAD` requests in flight at once.
const STATS_AT_ONCE: usize = 16;

/// The namespaces a command works on: the one named, or every one of the bucket.
pub async fn selected_namespaces<B: Backend>(
    backend: &B,
    named: Option<&NamespaceName>,
) -> libsql_wal_backend::Result<Vec<NamespaceName>> {
    match named {
        Some(namespace) => Ok(vec![namespace.clone()]),
        None => backend.list_namespaces(backend.default_config()).await,
    }
}

/// The data and index objects of `generation`'s segments `keys`.
pub fn objects_of<'a>(
    generation: &'a Generation,
    keys: &'a [SegmentKey],
) -> impl Iterator<Item = String> + 'a {
    keys.iter().flat_map(move |key| {
        [
            segment_object(generation, key),
            index_object(generation, key),
        ]
    })
}

/// The length of each of `objects`, in order, several `HEAD`s at once. An object deleted
/// since it was listed (retention or compaction beside a live server) counts 0.
pub async fn object_lens<B: Backend>(
    backend: &B,
    objects: Vec<String>,
) -> libsql_wal_backend::Result<Vec<u64>> {
    let config = backend.default_config();
    futures::stream::iter(objects)
        .map(|object| async move {
            match backend.stat(config, &object).await {
                Ok(stat) => Ok(stat.len),
                Err(libsql_wal_backend::Error::NotFound { .. }) => Ok(0),
                Err(e) => Err(e),
            }
        })
        .buffered(STATS_AT_ONCE)
        .try_collect()
        .await
}

/// Reads `namespace`'s generations and the stored segments of its current history.
pub async fn read_history<B: Backend>(
    backend: &B,
    namespace: &NamespaceName,
) -> libsql_wal_backend::Result<History> {
    let lineage = backend.lineage(backend.default_config(), namespace).await?;
    history_of(backend, namespace, lineage).await
}

/// The current history of `namespace`, whose generations `lineage` holds.
pub async fn history_of<B: Backend>(
    backend: &B,
    namespace: &NamespaceName,
    lineage: Lineage,
) -> libsql_wal_backend::Result<History> {
    let mut parts = Vec::new();
    if let Some(newest) = lineage.newest() {
        for (record, until) in lineage.history(namespace, newest.number, None)? {
            let Some(part) = part_of(backend, namespace, &record, until).await? else {
                break;
            };
            parts.push(part);
        }
    }
    Ok(History { lineage, parts })
}

/// The stored segments of generation `record` up to `until`; `None` for a deletion mark.
pub async fn part_of<B: Backend>(
    backend: &B,
    namespace: &NamespaceName,
    record: &GenerationRecord,
    until: Option<u64>,
) -> libsql_wal_backend::Result<Option<Part>> {
    let GenerationKind::Log { start_frame_no, .. } = record.kind else {
        return Ok(None);
    };
    let Some(generation) = record.log(namespace) else {
        return Ok(None);
    };
    let keys = backend
        .list_segments(
            backend.default_config(),
            &generation,
            until.unwrap_or(u64::MAX),
        )
        .await?;
    Ok(Some(Part {
        generation,
        start_frame_no,
        until,
        keys,
    }))
}

impl Part {
    /// The frames no chain of this generation's stored segments holds on the way from its
    /// start to `end`, if some are missing.
    pub fn missing_before(&self, end: u64) -> Option<MissingFrames> {
        plan_chain_after(&self.keys, self.start_frame_no.saturating_sub(1), end).err()
    }

    /// Returns true if a chain of this parent's stored segments reaches from its start to the
    /// point its child continues from (true for the newest generation, which has none).
    fn reaches_fork_point(&self) -> bool {
        match self.until {
            Some(until) if until >= self.start_frame_no => self.missing_before(until).is_none(),
            _ => true,
        }
    }

    /// The newest (or, with `oldest`, the oldest) segment end of this generation that a chain
    /// of its stored segments reaches from its start. Plans a chain per end tried: usually one.
    fn reachable_end(&self, oldest: bool) -> Option<Point> {
        let mut keys = self.keys.clone();
        keys.sort_by_key(|k| (k.end_frame_no, k.timestamp_ms));
        if !oldest {
            keys.reverse();
        }
        keys.iter()
            .find(|k| self.missing_before(k.end_frame_no).is_none())
            .map(|k| Point::new(self.generation.number, k))
    }
}

impl History {
    /// The newest generation's number and whether it marks the namespace deleted.
    pub fn newest(&self) -> Option<(u64, bool)> {
        self.lineage
            .newest()
            .map(|r| (r.number, r.kind == GenerationKind::Deleted))
    }

    /// The newest point a restore can land on: the newest segment end, newest generation
    /// first, that a chain of stored segments reaches from the generation's start, in a
    /// generation whose parents' chains each reach the point the next one continues from.
    pub fn newest_point(&self) -> Option<Point> {
        (0..self.parts.len()).find_map(|i| {
            let parents_whole = self.parts[i + 1..].iter().all(Part::reaches_fork_point);
            if parents_whole {
                self.parts[i].reachable_end(false)
            } else {
                None
            }
        })
    }

    /// The oldest point a restore can land on: the first segment end, oldest generation first,
    /// that a chain of stored segments reaches from the generation's start.
    pub fn oldest_point(&self) -> Option<Point> {
        self.parts
            .iter()
            .rev()
            .find_map(|part| part.reachable_end(true))
    }

    /// The highest frame_no stored in the history (restorable or not).
    pub fn durable_frame_no(&self) -> u64 {
        self.parts
            .iter()
            .find_map(|part| part.keys.iter().map(|k| k.end_frame_no).max())
            .unwrap_or(0)
    }

    /// The stored segments of the history.
    pub fn segment_count(&self) -> usize {
        self.parts.iter().map(|p| p.keys.len()).sum()
    }

    /// The data and index objects of the history's segments.
    pub fn objects(&self) -> Vec<String> {
        self.parts
            .iter()
            .flat_map(|part| objects_of(&part.generation, &part.keys))
            .collect()
    }
}
