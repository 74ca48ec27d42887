//! Restore: rebuilds a namespace's database file from durable storage alone, as of the newest
//! point, a frame_no, or a time, on a machine that never saw the database.
//!
//! Steps: read the namespace's generations and follow the newest one's history (each parent
//! generation up to the point the next continues from: nothing of a dead branch is read); list
//! each generation's stored segments; pick the end point (`RestoreTarget`); plan the shortest
//! chain of segments from frame 1 to it, generation by generation (`plan_chain`: compacted
//! segments, overlapping, included);
//! fetch the chain's indexes, then stream the newest segment's data into the file (its header
//! gives the database size); give each other page to the newest segment that holds it; stream
//! only the segments that still own a page, several at once, each writing its own pages
//! straight into the file as its frames arrive (no download files); then cut the file to the
//! database size, write the libSQL footer (the end frame_no and the log id), fsync once, and
//! rename into place. Every frame is checked against its checksum on the way in and each index
//! against the frames it points at.
//!
//! Precision: storage holds one object per upload (several seals may merge into one), holding
//! the newest version of each page over its frames, so the points a restore can land on are the
//! ends of stored segments: a frame_no target gives the state at the newest segment end at or
//! before it, a time target the state after the newest segment sealed at or before it. After
//! retention deleted old segments, targets before its window land on the newest end at or before
//! them that can still be built.
//!
//! Nothing half-written is ever at the destination: the file is built beside it under a
//! temporary name of its own (created new) and linked into place at the end, which fails rather than replace a file that appeared
//! meanwhile; on any error the temporary files are removed.
//!
//! Racing retention or compaction elsewhere: an object of the plan that is gone when fetched
//! (`NotFound`: deleted after the listing) makes the restore list and plan again, up to
//! `MAX_REPLANS` times, as long as the new listing differs from the one planned on; the pages
//! written so far are written again by the new plan.

use std::path::Path;
use std::sync::Arc;

use futures::stream::{self, StreamExt, TryStreamExt};
use libsql_wal_backend::{
    plan_chain_after, FetchedPages, Generation, GenerationKind, Lineage, NamespaceName, SegmentKey,
    Storage,
};
use libsql_wal_segment::{newest_versions, PageIndex};
use tracing::{debug, info, warn};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::footer::{write_after_pages, Footer};

/// Times a restore lists and plans again after an object of its plan was deleted meanwhile.
const MAX_REPLANS: usize = 3;

/// The point in time a restore rebuilds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreTarget {
    /// The newest durable state.
    Latest,
    /// The state at the newest stored segment end at or before this frame_no.
    FrameNo(u64),
    /// The state after the newest segment sealed at or before this time (milliseconds since the
    /// Unix epoch).
    TimestampMs(u64),
    /// The state at the newest stored segment end at or before `frame_no` in the history that
    /// ends in generation `generation` (an older branch, restorable by number; `u64::MAX` for
    /// its end).
    InGeneration {
        /// The generation's number.
        generation: u64,
        /// The frame_no.
        frame_no: u64,
    },
}

impl std::fmt::Display for RestoreTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RestoreTarget::Latest => write!(f, "latest"),
            RestoreTarget::FrameNo(n) => write!(f, "frame {n}"),
            RestoreTarget::TimestampMs(t) => write!(f, "time {t} ms"),
            RestoreTarget::InGeneration {
                generation,
                frame_no: u64::MAX,
            } => write!(f, "generation {generation}"),
            RestoreTarget::InGeneration {
                generation,
                frame_no,
            } => write!(f, "frame {frame_no} of generation {generation}"),
        }
    }
}

/// Where a restore is: reported after each segment whose pages it wrote (see
/// `RestoreOptions::progress`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestoreProgress {
    /// Segments whose pages are written.
    pub segments_done: usize,
    /// Segments whose data the restore fetches (those of the chain that own a page).
    pub segments_total: usize,
    /// Bytes of segment data downloaded so far.
    pub bytes_done: u64,
}

/// Called with a restore's progress (from the thread that runs the restore).
pub type OnRestoreProgress = Arc<dyn Fn(RestoreProgress) + Send + Sync>;

/// How a restore runs.
#[derive(Clone)]
pub struct RestoreOptions {
    /// Segments downloaded at once (at least 1).
    pub concurrency: usize,
    /// Told after each segment written, if set.
    pub progress: Option<OnRestoreProgress>,
}

impl std::fmt::Debug for RestoreOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestoreOptions")
            .field("concurrency", &self.concurrency)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

impl Default for RestoreOptions {
    /// Eight downloads at once, no progress reports.
    fn default() -> Self {
        RestoreOptions {
            concurrency: 8,
            progress: None,
        }
    }
}

/// What a restore of a target would fetch (see `plan_restore`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestorePlan {
    /// The last frame_no the restored database would hold.
    pub end_frame_no: u64,
    /// When the segment ending there was sealed (milliseconds since the Unix epoch).
    pub timestamp_ms: u64,
    /// The chain of segments, oldest first, each with its generation: the restore fetches
    /// each one's index, and the data of those that still own a page.
    pub segments: Vec<(Generation, SegmentKey)>,
}

/// What a restore did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreReport {
    /// The last frame_no in the restored database.
    pub end_frame_no: u64,
    /// The generation that frame is in (its number).
    pub generation: u64,
    /// When the segment ending there was sealed (milliseconds since the Unix epoch).
    pub timestamp_ms: u64,
    /// Pages in the restored database.
    pub db_pages: u32,
    /// Segments in the chain.
    pub chain_len: usize,
    /// Objects fetched: indexes and data.
    pub objects_fetched: usize,
    /// Segment data objects fetched (the others owned no page still in the database).
    pub data_fetched: usize,
    /// Bytes of segment data downloaded.
    pub bytes_downloaded: u64,
}

/// Restores `namespace` as of `target` from `storage` into a new database file at `dest`, which
/// must not exist. Blocks until done (the storage's futures are driven here): from a tokio
/// runtime, call it inside `spawn_blocking`.
#[tracing::instrument(skip(storage, options, config_override), fields(%namespace, %target, dest = %dest.display()))]
pub fn restore<S: Storage>(
    storage: &S,
    namespace: &NamespaceName,
    target: RestoreTarget,
    dest: &Path,
    options: &RestoreOptions,
    config_override: Option<&S::Config>,
) -> Result<RestoreReport> {
    let exists = || Error::DestinationExists {
        path: dest.to_path_buf(),
    };
    if dest.exists() {
        return Err(exists());
    }
    // A name of its own (a restore cut short leaves one behind, in no one's way), short whatever
    // the destination's name is.
    let building = dest.with_file_name(format!(".restoring-{}", Uuid::new_v4()));
    let restore = Restore {
        storage,
        namespace,
        config: config_override,
        options,
        building: &building,
        marker: None,
        stopped: None,
    };
    let db = std::fs::File::create_new(&building).map_err(Error::io(&building))?;
    let result = futures::executor::block_on(restore.run(target, None, &db, None)).and_then(|Restored { report, .. }| {
        drop(db);
        // A hard link never replaces: a file that appeared at `dest` meanwhile stays.
        std::fs::hard_link(&building, dest).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => exists(),
            _ => Error::io(dest)(e),
        })?;
        if let Err(e) = std::fs::remove_file(&building) {
            // The restore is whole at `dest`; only a second name of it is left.
            warn!(path = %building.display(), error = %e, "cannot remove the restore's temporary name");
        }
        sync_parent(dest)?;
        Ok(report)
    });
    if result.is_err() {
        if let Err(e) = std::fs::remove_file(&building) {
            if e.kind() != std::io::ErrorKind::NotFound {
                warn!(path = %building.display(), error = %e, "cannot remove a partial restore");
            }
        }
    }
    result
}

/// Plans a restore of `namespace` as of `target` without fetching anything but listings and
/// generation records: the point it would land on and the chain of segments it would read.
/// Blocks like `restore`.
#[tracing::instrument(skip(storage, config_override), fields(%namespace, %target))]
pub fn plan_restore<S: Storage>(
    storage: &S,
    namespace: &NamespaceName,
    target: RestoreTarget,
    config_override: Option<&S::Config>,
) -> Result<RestorePlan> {
    let options = RestoreOptions::default();
    let restore = Restore {
        storage,
        namespace,
        config: config_override,
        options: &options,
        building: Path::new(""),
        marker: None,
        stopped: None,
    };
    futures::executor::block_on(async {
        let parts = restore.list(target, None).await?;
        let segments = restore.plan(&parts, target, 0)?;
        let Some(&(_, newest)) = segments.last().as_ref() else {
            return Err(restore.nothing(target));
        };
        Ok(RestorePlan {
            end_frame_no: newest.end_frame_no,
            timestamp_ms: newest.timestamp_ms,
            segments,
        })
    })
}

/// What a database file holds before a restore writes into it in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Base {
    /// The last frame_no in the file.
    pub after_frame_no: u64,
    /// The log those frames came from.
    pub log_id: Uuid,
}

/// Brings the database file at `db_path` to the newest stored point, in place: from scratch
/// when `base` is `None` (the file is emptied first), else by applying only the segments after
/// `base`. Returns `None` when storage holds nothing newer.
///
/// The file is written in place because SQLite already holds it open. `marker` is created
/// before the first page is written and removed once the file is complete and synced: while it
/// exists the file's content is not to be trusted, and the caller starts over from scratch.
/// `lineage` is the namespace's lineage, as the caller just read it; `target` is
/// `RestoreTarget::Latest` but for a takeover that found its parent grew after its restore.
pub(crate) fn restore_in_place<S: Storage>(
    storage: &S,
    namespace: &NamespaceName,
    db_path: &Path,
    base: Option<Base>,
    marker: &Path,
    lineage: &Lineage,
    target: RestoreTarget,
) -> Result<Option<RestoreReport>> {
    let restore = Restore {
        storage,
        namespace,
        config: None,
        options: &RestoreOptions::default(),
        building: db_path,
        marker: Some(marker),
        stopped: None,
    };
    let io = Error::io(db_path);
    let db = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(db_path)
        .map_err(&io)?;
    match futures::executor::block_on(restore.run(target, base, &db, Some(lineage.clone()))) {
        Ok(Restored { report, .. }) => {
            if let Err(e) = std::fs::remove_file(marker) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    return Err(Error::io(marker)(e));
                }
            }
            sync_parent(marker)?;
            Ok(Some(report))
        }
        Err(Error::NothingToRestore { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes into `scratch` (an empty file) the pages that changed after frame `after` of the log
/// `log_id` in the history ending in generation `generation`, as of that history's newest
/// stored point (from scratch when `after` is 0), without the footer's sync mattering: the file
/// is read back, not kept. Returns what was restored and the pages written, ascending; `None`
/// when storage holds nothing after `after`. `lineage` is the namespace's, as just read.
pub(crate) fn restore_changes<S: Storage>(
    storage: &S,
    namespace: &NamespaceName,
    lineage: &Lineage,
    (generation, log_id): (u64, Uuid),
    after: u64,
    scratch: (&Path, &std::fs::File),
    stopped: &(dyn Fn() -> bool + Sync),
) -> Result<Option<Restored>> {
    let options = RestoreOptions::default();
    let restore = Restore {
        storage,
        namespace,
        config: None,
        options: &options,
        building: scratch.0,
        marker: None,
        stopped: Some(stopped),
    };
    let target = RestoreTarget::InGeneration {
        generation,
        frame_no: u64::MAX,
    };
    let base = (after > 0).then_some(Base {
        after_frame_no: after,
        log_id,
    });
    match futures::executor::block_on(restore.run(target, base, scratch.1, Some(lineage.clone()))) {
        Ok(restored) => Ok(Some(restored)),
        Err(Error::NothingToRestore { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// What `Restore::run` did, and the pages it wrote (ascending, within the database's size).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Restored {
    pub report: RestoreReport,
    pub changed: Vec<u32>,
}

/// Makes a rename or removal in `path`'s directory durable (not every platform can open a
/// directory; there it is skipped).
pub(crate) fn sync_parent(path: &Path) -> Result<()> {
    if let Some(parent) = path.parent() {
        if let Ok(dir) = std::fs::File::open(parent) {
            dir.sync_all().map_err(|source| Error::Io {
                path: parent.to_path_buf(),
                source,
            })?;
        }
    }
    Ok(())
}

/// One generation of the history a restore follows, with its stored segments.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Part {
    /// The generation.
    generation: Generation,
    /// Its first frame_no.
    start_frame_no: u64,
    /// Its last frame that belongs to the history (`u64::MAX`: all of it).
    until: u64,
    /// Its stored segments ending at or before `until`, newest-ending first.
    keys: Vec<SegmentKey>,
}

/// One restore in progress.
struct Restore<'a, S: Storage> {
    storage: &'a S,
    namespace: &'a NamespaceName,
    config: Option<&'a S::Config>,
    options: &'a RestoreOptions,
    /// The file being built.
    building: &'a Path,
    /// Created before the first write when restoring in place (see `restore_in_place`).
    marker: Option<&'a Path>,
    /// Asked between segments: true ends the restore with `Error::Stopped`.
    stopped: Option<&'a (dyn Fn() -> bool + Sync)>,
}

impl<S: Storage> Restore<'_, S> {
    fn storage_err(&self) -> impl Fn(libsql_wal_backend::Error) -> Error + '_ {
        |source| Error::Storage {
            namespace: self.namespace.clone(),
            source,
        }
    }

    /// Writes the pages of the chain from `base` (or from scratch) to `target` into `db`, then
    /// its footer, and syncs it. Lists and plans again when an object of the plan was deleted
    /// meanwhile (see the module docs). The first plan is made on `lineage` when the caller
    /// just read it.
    async fn run(
        &self,
        target: RestoreTarget,
        base: Option<Base>,
        db: &std::fs::File,
        lineage: Option<Lineage>,
    ) -> Result<Restored> {
        let mut keys = self.list(target, lineage).await?;
        let mut replans = 0;
        loop {
            match self.run_on(&keys, target, base, db).await {
                Err(Error::Storage {
                    source: source @ libsql_wal_backend::Error::NotFound { .. },
                    ..
                }) if replans < MAX_REPLANS => {
                    let listed = self.list(target, None).await?;
                    if listed == keys {
                        return Err(Error::Storage {
                            namespace: self.namespace.clone(),
                            source,
                        });
                    }
                    replans += 1;
                    warn!(error = %source, replans, "an object of the plan was deleted meanwhile; planning again");
                    keys = listed;
                }
                outcome => return outcome,
            }
        }
    }

    /// Lists the history `target` is in, newest generation first, with each generation's
    /// stored segments: the newest generation's history, or the one of the generation named.
    /// A namespace whose newest generation marks it deleted has nothing to restore.
    /// `lineage` is the namespace's lineage when the caller just read it (else it is read).
    async fn list(&self, target: RestoreTarget, lineage: Option<Lineage>) -> Result<Vec<Part>> {
        let lineage = match lineage {
            Some(lineage) => lineage,
            None => self
                .storage
                .lineage(self.namespace, self.config)
                .await
                .map_err(self.storage_err())?,
        };
        let number = match target {
            RestoreTarget::InGeneration { generation, .. } => generation,
            _ => match lineage.newest() {
                Some(newest) => newest.number,
                None => return Ok(Vec::new()),
            },
        };
        let history = lineage
            .history(self.namespace, number, None)
            .map_err(self.storage_err())?;
        let mut parts = Vec::with_capacity(history.len());
        for (record, until) in history {
            let GenerationKind::Log {
                log_id,
                start_frame_no,
                ..
            } = record.kind
            else {
                break;
            };
            let generation = Generation {
                namespace: self.namespace.clone(),
                number: record.number,
                log_id,
            };
            let until = until.unwrap_or(u64::MAX);
            let keys = self
                .storage
                .list_segments(&generation, until, self.config)
                .await
                .map_err(self.storage_err())?;
            parts.push(Part {
                generation,
                start_frame_no,
                until,
                keys,
            });
        }
        Ok(parts)
    }

    /// One attempt of `run`, on the listing `keys`.
    async fn run_on(
        &self,
        keys: &[Part],
        target: RestoreTarget,
        base: Option<Base>,
        db: &std::fs::File,
    ) -> Result<Restored> {
        let after = base.map_or(0, |b| b.after_frame_no);
        let chain = self.plan(keys, target, after)?;
        let newest = chain.last().cloned().ok_or_else(|| self.nothing(target))?;
        info!(
            generation = newest.0.number,
            end_frame_no = newest.1.end_frame_no,
            chain = chain.len(),
            "restore planned"
        );

        // Indexes of the whole chain, in chain order (oldest first).
        let indexes: Vec<PageIndex> = stream::iter(chain.iter())
            .map(|(generation, key)| async move {
                self.storage
                    .fetch_index(generation, *key, self.config)
                    .await
            })
            .buffered(self.options.concurrency.max(1))
            .try_collect()
            .await
            .map_err(self.storage_err())?;
        if let Some(marker) = self.marker {
            std::fs::File::create(marker)
                .and_then(|m| m.sync_all())
                .map_err(Error::io(marker))?;
            sync_parent(marker)?;
        }
        if base.is_none() {
            // From scratch: what the file held goes (a database restored in place, or an earlier
            // attempt's pages), now that storage is known to hold a point to restore; in place,
            // the marker says the file is not to be trusted until the restore ends.
            db.set_len(0).map_err(Error::io(self.building))?;
        }
        // The newest segment holds the newest version of every page it indexes, and its header
        // gives the database size: all its pages go in (those past the size are cut at the end).
        let last = chain.len() - 1;
        let newest_pages = indexes[last].entries();
        self.check_stopped()?;
        let newest_fetched = self
            .fetch(db, &newest, &indexes[last], &newest_pages)
            .await?;
        let header = newest_fetched.header;
        if let Some(base) = base.filter(|b| b.log_id != header.log_id) {
            return Err(Error::OtherLog {
                namespace: self.namespace.clone(),
                local: base.log_id,
                stored: header.log_id,
            });
        }
        let db_pages = header.size_after;
        let mut bytes_downloaded = newest_fetched.bytes;

        // Every other page goes to the newest segment that holds it: (page_no, offset) per
        // segment.
        let index_refs: Vec<&PageIndex> = indexes.iter().collect();
        let mut owned: Vec<Vec<(u32, u64)>> = vec![Vec::new(); chain.len()];
        for (page_no, (i, offset)) in newest_versions(&index_refs, db_pages) {
            if i != last {
                owned[i].push((page_no, offset));
            }
        }
        for pages in &mut owned {
            pages.sort_unstable();
        }
        // The older segments that still own a page, newest first. Their pages are disjoint, so
        // they are written in whatever order the downloads end.
        let older: Vec<usize> = (0..last).rev().filter(|&i| !owned[i].is_empty()).collect();
        let mut changed: Vec<u32> = newest_pages
            .iter()
            .map(|&(page_no, _)| page_no)
            .filter(|&page_no| page_no <= db_pages)
            .chain(owned.iter().flatten().map(|&(page_no, _)| page_no))
            .collect();
        changed.sort_unstable();
        let data_fetched = 1 + older.len();
        let report_progress = |segments_done, bytes_done| {
            if let Some(progress) = &self.options.progress {
                progress(RestoreProgress {
                    segments_done,
                    segments_total: data_fetched,
                    bytes_done,
                });
            }
        };
        report_progress(1, bytes_downloaded);
        let mut downloads = stream::iter(older)
            .map(|i| {
                let (at, index, owned) = (&chain[i], &indexes[i], &owned[i]);
                async move {
                    // The backend checks that the segment belongs to its generation's log.
                    let fetched = self.fetch(db, at, index, owned).await?;
                    Ok((i, fetched))
                }
            })
            .buffer_unordered(self.options.concurrency.max(1));
        let mut done = 1;
        while let Some(fetched) = downloads.next().await {
            self.check_stopped()?;
            let (i, fetched) = fetched?;
            bytes_downloaded += fetched.bytes;
            done += 1;
            report_progress(done, bytes_downloaded);
            info!(done, total = data_fetched, generation = chain[i].0.number, key = %chain[i].1, "segment restored");
        }
        drop(downloads);
        let footer = Footer {
            replication_index: header.end_frame_no,
            log_id: header.log_id,
        };
        let io = Error::io(self.building);
        write_after_pages(db, db_pages, &footer).map_err(&io)?;
        db.sync_all().map_err(&io)?;
        let report = RestoreReport {
            end_frame_no: header.end_frame_no,
            generation: newest.0.number,
            timestamp_ms: header.timestamp_ms,
            db_pages,
            chain_len: chain.len(),
            objects_fetched: indexes.len() + data_fetched,
            data_fetched,
            bytes_downloaded,
        };
        info!(
            end_frame_no = report.end_frame_no,
            pages = report.db_pages,
            objects = report.objects_fetched,
            "restore done"
        );
        Ok(Restored { report, changed })
    }

    /// `Error::Stopped` once the caller says to stop.
    fn check_stopped(&self) -> Result<()> {
        match self.stopped {
            Some(stopped) if stopped() => Err(Error::Stopped {
                namespace: self.namespace.clone(),
            }),
            _ => Ok(()),
        }
    }

    fn nothing(&self, target: RestoreTarget) -> Error {
        Error::NothingToRestore {
            namespace: self.namespace.clone(),
            target: target.to_string(),
        }
    }

    /// Chooses the end point and the chain to it, oldest segment first, across the history's
    /// generations. When frames before the end are gone because retention deleted them (a
    /// longer compacted segment still holds them), steps back to the newest end before them.
    /// A catch-up (`after` > 0) stays within the newest generation of the plan.
    fn plan(
        &self,
        parts: &[Part],
        target: RestoreTarget,
        after: u64,
    ) -> Result<Vec<(Generation, SegmentKey)>> {
        // The generation the end point is in, and the end point: the newest part that has one.
        let wanted = |part: &Part, key: &SegmentKey| match target {
            RestoreTarget::Latest => true,
            RestoreTarget::FrameNo(n) => key.end_frame_no <= n,
            RestoreTarget::TimestampMs(t) => key.timestamp_ms <= t,
            RestoreTarget::InGeneration { frame_no, .. } => key.end_frame_no <= frame_no,
        } && key.end_frame_no <= part.until;
        let (at, mut end) = parts
            .iter()
            .enumerate()
            .find_map(|(i, part)| {
                let end = part
                    .keys
                    .iter()
                    .filter(|k| wanted(part, k))
                    .map(|k| k.end_frame_no)
                    .max()?;
                Some((i, end))
            })
            .filter(|&(_, end)| end > after)
            .ok_or_else(|| self.nothing(target))?;
        // Steps back to an earlier end in the end's generation while retention removed frames
        // before it.
        'plan: loop {
            let mut chain = Vec::new();
            // From the end back: the end's generation from its start (or from `after`), then
            // each older one from its start up to the point the next continues from.
            for (i, part) in parts.iter().enumerate().skip(at) {
                if i > at && after > 0 {
                    break;
                }
                let (first, last) = if i == at {
                    (part.start_frame_no.max(after + 1), end)
                } else {
                    (part.start_frame_no, part.until)
                };
                if last < first {
                    // A generation that continued from its parent's very point: nothing of its
                    // own.
                    continue;
                }
                match plan_chain_after(&part.keys, first - 1, last) {
                    Ok(keys) => chain.extend(
                        keys.into_iter()
                            .rev()
                            .map(|key| (part.generation.clone(), key)),
                    ),
                    Err(gap) if i == at && gap.covered_by.is_some() => {
                        warn!(%gap, "frames were removed by retention; restoring an earlier point");
                        end = part
                            .keys
                            .iter()
                            .map(|k| k.end_frame_no)
                            .filter(|&e| e < gap.first && e > after && e >= first)
                            .max()
                            .ok_or_else(|| self.nothing(target))?;
                        continue 'plan;
                    }
                    Err(gap) => {
                        return Err(Error::MissingFrames {
                            namespace: self.namespace.clone(),
                            source: gap,
                        })
                    }
                }
            }
            chain.reverse();
            return Ok(chain);
        }
    }

    /// Streams the data of `key` into the database file, writing the pages of `pages`; every
    /// frame is verified and `index` checked against the frames.
    async fn fetch(
        &self,
        db: &std::fs::File,
        (generation, key): &(Generation, SegmentKey),
        index: &PageIndex,
        pages: &[(u32, u64)],
    ) -> Result<FetchedPages> {
        let key = *key;
        let fetched = self
            .storage
            .fetch_pages_into(generation, key, index, pages, db, self.config)
            .await
            .map_err(self.storage_err())?;
        debug!(%key, pages = pages.len(), "segment data written");
        Ok(fetched)
    }
}
