//! A replica's catch-up from its primary's bucket (`PrimaryBucket`): when the primary's log no
//! longer holds the frames after the replica's position (they were checkpointed away), or the
//! replica has nothing yet, the frames come from storage instead of a full image from the
//! primary, which would read and send every page of the database.
//!
//! A catch-up restores, into a scratch file of its own, the pages that changed after the
//! replica's position in the primary's log (every page, from nothing) as of the newest point the
//! bucket holds of that log, checking every frame as a restore does; then applies them to the
//! replica's log as one step (`StepInjector`), so the replica's readers see the state before
//! or the stored point, never between. Stored frames are durable: every later incarnation of
//! the primary's log has them, so the replica goes on following from that point. The bucket is
//! only read.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use libsql_wal_backend::{GenerationKind, NamespaceName, Storage};
use libsql_wal_segment::format::PAGE_SIZE;
use libsql_wal_segment::FileExt;
use tracing::{info, warn};

use crate::error::{Error, Result};
use crate::replication::{LogIdentity, StepHeader, StepInjector};
use crate::restore::{restore_changes, Restored};

/// Prefix of the scratch files catch-ups restore into.
const SCRATCH_PREFIX: &str = ".catch-up-";

/// Why a catch-up failed; nothing of it was applied.
#[derive(Debug, thiserror::Error)]
pub enum CatchUpError {
    /// Reading the primary's bucket (or planning or checking what it holds) failed.
    #[error("reading the primary's bucket: {0}")]
    Bucket(Error),
    /// The replica's side failed: its scratch file or its log.
    #[error("the replica's log: {0}")]
    Local(Error),
    /// The caller said to stop.
    #[error("stopped")]
    Stopped,
}

/// A primary's bucket, which a replica reads to catch up (see the module docs).
pub trait PrimaryBucket: Send + Sync + fmt::Debug {
    /// Applies to `injector` (which was given the primary's hello) what the bucket holds of
    /// the log `identity` after frame `after`, as one step; returns that step, or `None` when
    /// the bucket holds nothing newer of that log. `stopped` is asked between segments and
    /// pages: once it says true the catch-up rolls back and ends.
    fn catch_up(
        &self,
        namespace: &NamespaceName,
        identity: &LogIdentity,
        after: u64,
        injector: &mut dyn StepInjector,
        stopped: &(dyn Fn() -> bool + Sync),
    ) -> std::result::Result<Option<StepHeader>, CatchUpError>;
}

/// The primary's bucket over its storage, read only.
pub struct BucketCatchUp<S: Storage> {
    storage: S,
    scratch_dir: PathBuf,
}

impl<S: Storage> fmt::Debug for BucketCatchUp<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BucketCatchUp")
            .field("scratch_dir", &self.scratch_dir)
            .finish_non_exhaustive()
    }
}

impl<S: Storage> BucketCatchUp<S> {
    /// Reads the primary's bucket through `storage`, restoring into files under
    /// `scratch_dir` (made if missing, readable by this user only, as are the files: they hold
    /// a tenant's pages; the files a catch-up cut short left there are removed).
    pub fn new(storage: S, scratch_dir: &Path) -> Result<Self> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(scratch_dir)
            .map_err(Error::io(scratch_dir))?;
        std::fs::set_permissions(scratch_dir, std::fs::Permissions::from_mode(0o700))
            .map_err(Error::io(scratch_dir))?;
        let entries = std::fs::read_dir(scratch_dir).map_err(Error::io(scratch_dir))?;
        for entry in entries {
            let entry = entry.map_err(Error::io(scratch_dir))?;
            if entry
                .file_name()
                .to_str()
                .is_some_and(|name| name.starts_with(SCRATCH_PREFIX))
            {
                let path = entry.path();
                std::fs::remove_file(&path).map_err(Error::io(&path))?;
            }
        }
        Ok(BucketCatchUp {
            storage,
            scratch_dir: scratch_dir.to_path_buf(),
        })
    }

    /// Restores the changes after `after` into `scratch`; returns them with the frame_no they
    /// are after (0 when from nothing), or `None` when the bucket holds nothing newer of the
    /// log. A catch-up from a point the bucket no longer holds the frames after (retention
    /// removed them) starts from nothing.
    fn restore(
        &self,
        namespace: &NamespaceName,
        identity: &LogIdentity,
        after: u64,
        scratch: (&Path, &std::fs::File),
        stopped: &(dyn Fn() -> bool + Sync),
    ) -> Result<Option<(Restored, u64)>> {
        let lineage = futures::executor::block_on(self.storage.lineage(namespace, None)).map_err(
            |source| Error::Storage {
                namespace: namespace.clone(),
                source,
            },
        )?;
        let stored_log = lineage.get(identity.generation).and_then(|g| match g.kind {
            GenerationKind::Log { log_id, .. } => Some(log_id),
            _ => None,
        });
        if stored_log != Some(identity.log_id) {
            info!(%namespace, generation = identity.generation, log_id = %identity.log_id, "the primary's bucket holds no such generation of this log");
            return Ok(None);
        }
        let log = (identity.generation, identity.log_id);
        match restore_changes(
            &self.storage,
            namespace,
            &lineage,
            log,
            after,
            scratch,
            stopped,
        ) {
            Err(Error::MissingFrames { source, .. }) if after > 0 => {
                warn!(%namespace, after, gap = %source, "the bucket no longer holds every frame after the replica's position; catching up from nothing");
                scratch.1.set_len(0).map_err(Error::io(scratch.0))?;
                Ok(
                    restore_changes(&self.storage, namespace, &lineage, log, 0, scratch, stopped)?
                        .filter(|r| r.report.end_frame_no > after)
                        .map(|r| (r, 0)),
                )
            }
            Ok(restored) => Ok(restored
                .filter(|r| r.report.end_frame_no > after)
                .map(|r| (r, after))),
            Err(e) => Err(e),
        }
    }
}

impl<S: Storage> PrimaryBucket for BucketCatchUp<S> {
    #[tracing::instrument(skip(self, injector, stopped), fields(%namespace, log_id = %identity.log_id, generation = identity.generation))]
    fn catch_up(
        &self,
        namespace: &NamespaceName,
        identity: &LogIdentity,
        after: u64,
        injector: &mut dyn StepInjector,
        stopped: &(dyn Fn() -> bool + Sync),
    ) -> std::result::Result<Option<StepHeader>, CatchUpError> {
        let started = Instant::now();
        // Made new, readable by this user only (0600), removed when dropped.
        let scratch = tempfile::Builder::new()
            .prefix(SCRATCH_PREFIX)
            .tempfile_in(&self.scratch_dir)
            .map_err(|e| CatchUpError::Local(Error::io(&self.scratch_dir)(e)))?;
        let (path, file) = (scratch.path(), scratch.as_file());
        let restored = match self.restore(namespace, identity, after, (path, file), stopped) {
            Ok(Some(restored)) => restored,
            Ok(None) => return Ok(None),
            Err(Error::Stopped { .. }) => return Err(CatchUpError::Stopped),
            Err(e) => return Err(CatchUpError::Bucket(e)),
        };
        let (Restored { report, changed }, from) = restored;
        // From nothing every page goes in, holes (zeros) too, as in a full image: none of the
        // replica's pages from before may survive. (Changes always hold a page: SQLite
        // rewrites page 1 whenever the size changes; should they not, every page goes in.)
        let from_nothing = from == 0 || changed.is_empty();
        let count = if from_nothing {
            report.db_pages as usize
        } else {
            changed.len()
        };
        let pages: Box<dyn Iterator<Item = u32>> = if from_nothing {
            Box::new(1..=report.db_pages)
        } else {
            Box::new(changed.into_iter())
        };
        let header = StepHeader {
            frame_no: report.end_frame_no,
            db_size: report.db_pages,
            durable_frame_no: report.end_frame_no,
            // At most the database's size, a u32.
            pages: u32::try_from(count).map_err(|_| {
                CatchUpError::Bucket(Error::Replication {
                    namespace: namespace.clone(),
                    why: format!("a catch-up of {count} pages"),
                })
            })?,
            full_image: from_nothing,
        };
        injector.begin(&header).map_err(CatchUpError::Local)?;
        let applied = (|| {
            let mut page = vec![0; PAGE_SIZE];
            for (n, page_no) in pages.enumerate() {
                if n % 1024 == 0 && stopped() {
                    return Err(CatchUpError::Stopped);
                }
                let Some(before) = page_no.checked_sub(1) else {
                    return Err(CatchUpError::Bucket(Error::Replication {
                        namespace: namespace.clone(),
                        why: "the primary's bucket holds a page 0".into(),
                    }));
                };
                file.read_exact_at(&mut page, u64::from(before) * PAGE_SIZE as u64)
                    .map_err(|e| CatchUpError::Local(Error::io(path)(e)))?;
                injector.page(page_no, &page).map_err(CatchUpError::Local)?;
            }
            injector.commit().map_err(CatchUpError::Local)
        })();
        if let Err(e) = applied {
            injector.rollback();
            return Err(e);
        }
        info!(
            after,
            frame_no = header.frame_no,
            pages = header.pages,
            bytes_downloaded = report.bytes_downloaded,
            seconds = started.elapsed().as_secs_f64(),
            "caught up from the primary's bucket"
        );
        Ok(Some(header))
    }
}
