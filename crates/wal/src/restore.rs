//! Restore: rebuilds a namespace's database file from durable storage alone, as of the newest
//! point, a frame_no, or a time, on a machine that never saw the database.
//!
//! Steps: list the stored segments; pick the end point (`RestoreTarget`); plan the shortest chain
//! of segments from frame 1 to it (`plan_chain`: compacted segments, overlapping, included);
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

use futures::stream::{self, StreamExt, TryStreamExt};
use libsql_wal_backend::{plan_chain_after, FetchedPages, NamespaceName, SegmentKey, Storage};
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
}

impl std::fmt::Display for RestoreTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RestoreTarget::Latest => write!(f, "latest"),
            RestoreTarget::FrameNo(n) => write!(f, "frame {n}"),
            RestoreTarget::TimestampMs(t) => write!(f, "time {t} ms"),
        }
    }
}

/// How a restore runs.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// Segments downloaded at once (at least 1).
    pub concurrency: usize,
}

impl Default for RestoreOptions {
    /// Eight downloads at once.
    fn default() -> Self {
        RestoreOptions { concurrency: 8 }
    }
}

/// What a restore did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreReport {
    /// The last frame_no in the restored database.
    pub end_frame_no: u64,
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
    };
    let db = std::fs::File::create_new(&building).map_err(Restore::<S>::io_err(&building))?;
    let result = futures::executor::block_on(restore.run(target, None, &db)).and_then(|report| {
        drop(db);
        // A hard link never replaces: a file that appeared at `dest` meanwhile stays.
        std::fs::hard_link(&building, dest).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => exists(),
            _ => Restore::<S>::io_err(dest)(e),
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
pub(crate) fn restore_in_place<S: Storage>(
    storage: &S,
    namespace: &NamespaceName,
    db_path: &Path,
    base: Option<Base>,
    marker: &Path,
) -> Result<Option<RestoreReport>> {
    let restore = Restore {
        storage,
        namespace,
        config: None,
        options: &RestoreOptions::default(),
        building: db_path,
        marker: Some(marker),
    };
    let io = Restore::<S>::io_err(db_path);
    let db = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(db_path)
        .map_err(&io)?;
    match futures::executor::block_on(restore.run(RestoreTarget::Latest, base, &db)) {
        Ok(report) => {
            if let Err(e) = std::fs::remove_file(marker) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    return Err(Restore::<S>::io_err(marker)(e));
                }
            }
            sync_parent(marker)?;
            Ok(Some(report))
        }
        Err(Error::NothingToRestore { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Makes a rename or removal in `path`'s directory durable (not every platform can open a
/// directory; there it is skipped).
fn sync_parent(path: &Path) -> Result<()> {
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
}

impl<S: Storage> Restore<'_, S> {
    fn storage_err(&self) -> impl Fn(libsql_wal_backend::Error) -> Error + '_ {
        |source| Error::Storage {
            namespace: self.namespace.clone(),
            source,
        }
    }

    /// Returns the error for a stored object of this namespace that is not what it should be.
    fn corrupt(&self, object: String, what: String) -> Error {
        Error::Storage {
            namespace: self.namespace.clone(),
            source: libsql_wal_backend::Error::corrupt(object, what),
        }
    }

    fn io_err(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
        move |source| Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// Writes the pages of the chain from `base` (or from scratch) to `target` into `db`, then
    /// its footer, and syncs it. Lists and plans again when an object of the plan was deleted
    /// meanwhile (see the module docs).
    async fn run(
        &self,
        target: RestoreTarget,
        base: Option<Base>,
        db: &std::fs::File,
    ) -> Result<RestoreReport> {
        let mut keys = self.list().await?;
        let mut replans = 0;
        loop {
            match self.run_on(&keys, target, base, db).await {
                Err(Error::Storage {
                    source: source @ libsql_wal_backend::Error::NotFound { .. },
                    ..
                }) if replans < MAX_REPLANS => {
                    let listed = self.list().await?;
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

    /// Lists the namespace's stored segments.
    async fn list(&self) -> Result<Vec<SegmentKey>> {
        self.storage
            .list_segments(self.namespace, u64::MAX, self.config)
            .await
            .map_err(self.storage_err())
    }

    /// One attempt of `run`, on the listing `keys`.
    async fn run_on(
        &self,
        keys: &[SegmentKey],
        target: RestoreTarget,
        base: Option<Base>,
        db: &std::fs::File,
    ) -> Result<RestoreReport> {
        let after = base.map_or(0, |b| b.after_frame_no);
        let chain = self.plan(keys, target, after)?;
        let newest = *chain.last().ok_or_else(|| self.nothing(target))?;
        info!(
            end_frame_no = newest.end_frame_no,
            chain = chain.len(),
            "restore planned"
        );

        // Indexes of the whole chain, in chain order (oldest first).
        let indexes: Vec<PageIndex> = stream::iter(chain.iter())
            .map(|&key| async move {
                self.storage
                    .fetch_index(self.namespace, key, self.config)
                    .await
            })
            .buffered(self.options.concurrency.max(1))
            .try_collect()
            .await
            .map_err(self.storage_err())?;
        if let Some(marker) = self.marker {
            std::fs::File::create(marker)
                .and_then(|m| m.sync_all())
                .map_err(Self::io_err(marker))?;
            sync_parent(marker)?;
        }
        if base.is_none() {
            // From scratch: what the file held goes (a database restored in place, or an earlier
            // attempt's pages), now that storage is known to hold a point to restore; in place,
            // the marker says the file is not to be trusted until the restore ends.
            db.set_len(0).map_err(Self::io_err(self.building))?;
        }
        // The newest segment holds the newest version of every page it indexes, and its header
        // gives the database size: all its pages go in (those past the size are cut at the end).
        let last = chain.len() - 1;
        let newest_pages = indexes[last].entries();
        let newest_fetched = self
            .fetch(db, newest, &indexes[last], &newest_pages)
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
        let data_fetched = 1 + older.len();
        let mut downloads = stream::iter(older)
            .map(|i| {
                let (key, index, owned) = (chain[i], &indexes[i], &owned[i]);
                let log_id = header.log_id;
                async move {
                    let fetched = self.fetch(db, key, index, owned).await?;
                    if fetched.header.log_id != log_id {
                        return Err(self.corrupt(
                            format!("{}/segments/{key}", self.namespace),
                            format!(
                                "belongs to log {}, the newest segment to log {log_id}",
                                fetched.header.log_id
                            ),
                        ));
                    }
                    Ok((i, fetched))
                }
            })
            .buffer_unordered(self.options.concurrency.max(1));
        let mut done = 1;
        while let Some(fetched) = downloads.next().await {
            let (i, fetched) = fetched?;
            bytes_downloaded += fetched.bytes;
            done += 1;
            info!(done, total = data_fetched, key = %chain[i], "segment restored");
        }
        drop(downloads);
        let footer = Footer {
            replication_index: header.end_frame_no,
            log_id: header.log_id,
        };
        let io = Self::io_err(self.building);
        write_after_pages(db, db_pages, &footer).map_err(&io)?;
        db.sync_all().map_err(&io)?;
        let report = RestoreReport {
            end_frame_no: header.end_frame_no,
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
        Ok(report)
    }

    fn nothing(&self, target: RestoreTarget) -> Error {
        Error::NothingToRestore {
            namespace: self.namespace.clone(),
            target: target.to_string(),
        }
    }

    /// Chooses the end point and the chain to it. When frames before the end are gone because
    /// retention deleted them (a longer compacted segment still holds them), steps back to the
    /// newest end before them.
    fn plan(
        &self,
        keys: &[SegmentKey],
        target: RestoreTarget,
        after: u64,
    ) -> Result<Vec<SegmentKey>> {
        let mut end = match target {
            RestoreTarget::Latest => keys.iter().map(|k| k.end_frame_no).max(),
            RestoreTarget::FrameNo(n) => keys
                .iter()
                .map(|k| k.end_frame_no)
                .filter(|&end| end <= n)
                .max(),
            RestoreTarget::TimestampMs(t) => keys
                .iter()
                .filter(|k| k.timestamp_ms <= t)
                .map(|k| k.end_frame_no)
                .max(),
        }
        .filter(|&end| end > after)
        .ok_or_else(|| self.nothing(target))?;
        loop {
            match plan_chain_after(keys, after, end) {
                Ok(chain) => return Ok(chain),
                Err(gap) if gap.covered_by.is_some() => {
                    warn!(%gap, "frames were removed by retention; restoring an earlier point");
                    end = keys
                        .iter()
                        .map(|k| k.end_frame_no)
                        .filter(|&e| e < gap.first && e > after)
                        .max()
                        .ok_or_else(|| self.nothing(target))?;
                }
                Err(gap) => {
                    return Err(Error::MissingFrames {
                        namespace: self.namespace.clone(),
                        source: gap,
                    })
                }
            }
        }
    }

    /// Streams the data of `key` into the database file, writing the pages of `pages`; every
    /// frame is verified and `index` checked against the frames.
    async fn fetch(
        &self,
        db: &std::fs::File,
        key: SegmentKey,
        index: &PageIndex,
        pages: &[(u32, u64)],
    ) -> Result<FetchedPages> {
        let fetched = self
            .storage
            .fetch_pages_into(self.namespace, key, index, pages, db, self.config)
            .await
            .map_err(self.storage_err())?;
        debug!(%key, pages = pages.len(), "segment data written");
        Ok(fetched)
    }
}
