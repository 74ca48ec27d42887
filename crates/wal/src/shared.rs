//! `SharedWal`: the log of one namespace, shared by every connection to it.
//!
//! It owns the current segment and the sealed segments not yet checkpointed, publishes each
//! commit as an immutable `Snapshot` that read transactions pin, serialises writers through a
//! FIFO queue, seals the current segment when the swap strategy says so (handing the sealed one
//! to `Storage`), and checkpoints sealed segments into the database file. When it opens with
//! storage that keeps remote copies, a namespace with no local log takes its database from
//! storage first, and a database file behind storage catches up (`CatchUp`).
//!
//! Invariants:
//! - A snapshot never changes: readers keep exactly the view they began with, across seals and
//!   checkpoints (a checkpoint waits for every reader older than what it copies).
//! - Segments are handed to storage in frame order, each exactly once.
//! - A segment leaves the local disk only after it is in the database file, and (when storage
//!   keeps remote copies) after it is durable.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError, RwLock, Weak};
use std::time::{Duration, Instant};

use libsql_wal_backend::{
    FindSegment, ForkPoint, Generation, GenerationKind, GenerationRecord, Lineage, NamespaceName,
    Storage, Stored,
};
use libsql_wal_segment::format::PAGE_SIZE;
use libsql_wal_segment::{
    newest_versions, CurrentSegment, FileExt, Io, OpenMode, PageIndex, SealedSegment,
};
use tracing::{debug, info, warn};
use uuid::Uuid;

use crate::checkpointer::{CheckpointJob, Checkpointer};
use crate::error::{Error, Result};
use crate::footer::{write_after_pages, Footer, FOOTER_SIZE};
use crate::restore::{restore_in_place, Base, RestoreTarget};

/// When to seal the current segment. Any threshold reached seals it, after a commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SwapStrategy {
    /// Committed frames in the current segment.
    pub max_frames: u64,
    /// Bytes of committed frames in the current segment.
    pub max_bytes: u64,
    /// Age of the current segment's first commit.
    pub max_age: Duration,
}

impl Default for SwapStrategy {
    /// 10,000 frames (about 40 MiB) or 5 minutes.
    fn default() -> Self {
        SwapStrategy {
            max_frames: 10_000,
            max_bytes: 64 << 20,
            max_age: Duration::from_secs(300),
        }
    }
}

/// When the background checkpointer copies sealed segments into the database file: once the
/// segments it may copy (durable, no reader on them) hold this many frames, or are this many
/// segments, whichever comes first. Like SQLite's auto-checkpoint (1,000 pages), it spares the
/// database file a write and two fsyncs per seal when seals are small and frequent (age
/// seals, `seal_now` marks); the segment count bounds the files and indexes a read may visit.
/// Shutdown, `close`, `PRAGMA wal_checkpoint` and `SharedWal::checkpoint` copy everything
/// whatever the threshold. Each sealed segment keeps its file open and its index in memory
/// until copied: a namespace below the threshold holds up to `segments - 1` of them (and those
/// not yet durable) until it is closed (the server closes idle namespaces).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointThreshold {
    /// Frames in the segments that may be copied.
    pub frames: u64,
    /// Segments that may be copied.
    pub segments: usize,
}

impl CheckpointThreshold {
    /// Checkpoints after every seal (what may be copied is copied as soon as it may).
    pub const EVERY_SEAL: CheckpointThreshold = CheckpointThreshold {
        frames: 0,
        segments: 0,
    };

    /// Whether segments holding `frames` frames in all, `segments` of them, are due.
    fn is_reached(&self, frames: u64, segments: usize) -> bool {
        segments > 0 && (frames >= self.frames || segments >= self.segments)
    }
}

impl Default for CheckpointThreshold {
    /// 1,000 frames (SQLite's auto-checkpoint) or 16 segments.
    fn default() -> Self {
        CheckpointThreshold {
            frames: 1_000,
            segments: 16,
        }
    }
}

/// An immutable view of a namespace's log as of one commit.
pub(crate) struct Snapshot<F> {
    /// The segment being appended to when the snapshot was taken.
    pub current: Arc<CurrentSegment<F>>,
    /// Sealed segments not yet checkpointed, oldest first.
    pub sealed: Arc<Vec<Arc<SealedSegment<F>>>>,
    /// The last committed frame_no the snapshot sees.
    pub last_committed_frame_no: u64,
    /// Database size in pages as of that commit; 0 while the log holds no frame, and then
    /// `begin_read` takes it from the database file's header (the file is the whole truth; its
    /// size would count the footer as a page).
    pub db_size: u32,
}

impl<F> Clone for Snapshot<F> {
    fn clone(&self) -> Self {
        Snapshot {
            current: self.current.clone(),
            sealed: self.sealed.clone(),
            last_committed_frame_no: self.last_committed_frame_no,
            db_size: self.db_size,
        }
    }
}

/// What a log did since it opened, for metrics.
#[derive(Debug, Default)]
struct Activity {
    commits: AtomicU64,
    seals: AtomicU64,
    checkpoints: AtomicU64,
}

/// Connections on a log, and whether it was closed.
#[derive(Debug, Default)]
struct Lifecycle {
    /// Connections open on it.
    connections: usize,
    /// Set by `WalRegistry::close`.
    closed: bool,
}

/// The FIFO queue of connections waiting to write.
#[derive(Debug, Default)]
struct WriterQueue {
    /// Connection holding the write lock.
    holder: Option<u64>,
    /// Connections waiting, in arrival order.
    waiting: VecDeque<u64>,
}

/// The log of one namespace.
pub struct SharedWal<I: Io, S: Storage<File = I::File>> {
    /// The namespace.
    namespace: NamespaceName,
    /// File system access.
    io: Arc<I>,
    /// Durable storage.
    storage: Arc<S>,
    /// The database file.
    db_path: PathBuf,
    /// Directory of the segment files.
    dir: PathBuf,
    /// The log's identity.
    log_id: Uuid,
    /// The generation this log writes in storage (number 0 when storage keeps no remote
    /// copies: there are no generations then).
    generation: Generation,
    /// Set when storage found a newer generation of the namespace: its number. The log then
    /// takes no writes (`Error::Fenced`); reads go on.
    fenced: OnceLock<u64>,
    /// When to seal.
    swap: SwapStrategy,
    /// The latest snapshot.
    state: RwLock<Snapshot<I::File>>,
    /// When the current segment got its first commit.
    current_since: Mutex<Option<Instant>>,
    /// Writers.
    writers: Mutex<WriterQueue>,
    /// Wakes waiting writers.
    writer_released: Condvar,
    /// How long a writer waits for the lock before SQLite gets SQLITE_BUSY.
    writer_timeout: Duration,
    /// Snapshot frame_no -> number of open read transactions at it.
    readers: Mutex<BTreeMap<u64, usize>>,
    /// Highest frame_no durable in storage.
    durable_frame_no: Arc<AtomicU64>,
    /// Highest frame_no copied into the database file.
    checkpointed_frame_no: AtomicU64,
    /// Frames checkpointed since the log last restarted: SQLite's WAL keeps counting them as in
    /// the log (backfilled) until the next writer finds every frame backfilled and restarts the
    /// log, and `PRAGMA wal_checkpoint` reports them so.
    backfilled_frames: AtomicU64,
    /// Serialises checkpoints.
    checkpointing: Mutex<()>,
    /// When background checkpoints copy.
    checkpoint_after: CheckpointThreshold,
    /// The database file, opened on first use.
    db_file: OnceLock<I::File>,
    /// Runs checkpoints in the background.
    checkpointer: Arc<Checkpointer>,
    /// Set while a checkpoint of this namespace is queued.
    checkpoint_queued: AtomicBool,
    /// This log, for queueing itself on the checkpointer.
    this: Weak<Self>,
    /// Set when a seal failed part way: why. The log then takes no writes, seals or
    /// checkpoints (see `Error::Poisoned`).
    poisoned: OnceLock<String>,
    /// A commit SQLite was told failed is still in the current segment's file (taking it back
    /// cut it from memory, but the cut of the file failed): the file is cut before the log is
    /// opened again from it.
    commit_left_in_file: AtomicBool,
    /// Set by `retire`: the registry forgot this log; it hands nothing more to storage.
    retired: AtomicBool,
    /// Seals that failed after a commit (the commit stood; the seal is retried).
    seal_failures: AtomicU64,
    /// Commits, seals and checkpoints (that copied at least one segment) since it opened.
    activity: Activity,
    /// Sealed segments storage has not taken yet, oldest first: a segment `store` refused is
    /// handed over again, before any newer one, at the next seal or age check.
    unsent: Mutex<VecDeque<Arc<SealedSegment<I::File>>>>,
    /// The newest sealed segment while its seal is in memory only (`persist_seal` writes and
    /// syncs it): at most one, since a seal first persists the one before it.
    /// With it, the segment after it, which is told once that seal is durable.
    unsynced_seal: Mutex<Option<UnwrittenSeal<I::File>>>,
    /// An empty file at `{dir}/next.spare`, made off the writer's path (`make_spare`), that the
    /// next seal renames into the next segment: creating a file can cost a seal more than all
    /// the rest of it (the file system allocates an inode).
    spare: Mutex<Option<I::File>>,
    /// Where this log makes its spare: `{dir}/{random id}.spare`, a name of its own, so that
    /// a log being retired over the same directory never swaps the file under it.
    spare_path: PathBuf,
    /// Set while a thread of `send_unsent_in_background` runs.
    sending_in_background: AtomicBool,
    /// Held by whoever hands `unsent` to storage, across the waits: one sender at a time.
    sending: Mutex<()>,
    /// Connections open on this log, and whether it was closed (`WalRegistry::close`): a closed
    /// log takes no new connection.
    lifecycle: Mutex<Lifecycle>,
    /// A read replica's log: only an `Injector` writes it.
    replica: bool,
    /// The last committed frame_no, for replicators waiting on new commits.
    commits: tokio::sync::watch::Sender<u64>,
    /// This open of the log: a new id each time the log is opened.
    incarnation: Uuid,
    /// Segments storage took and then gave up on (their `OnStored` dropped uncalled, see
    /// `StoreReceipt`), to go back into `unsent`. Its own lock, never held while waiting: the
    /// storage's thread takes it.
    refused: Mutex<Vec<Arc<SealedSegment<I::File>>>>,
}

/// A seal made in memory and not written yet, and the segment that follows it.
type UnwrittenSeal<F> = (Arc<SealedSegment<F>>, Arc<CurrentSegment<F>>);

/// Pages a checkpoint writes with one call, at most (1 MiB).
const CHECKPOINT_RUN_PAGES: usize = 256;

/// Gives each connection, and each seal no connection makes (`seal_now`, the age check,
/// shutdown), an id of its own in the writer queue.
static NEXT_WRITER_ID: AtomicU64 = AtomicU64::new(1);

/// How the registry opens a log (from `RegistryConfig`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct LogSettings {
    /// When to seal segments.
    pub swap: SwapStrategy,
    /// How long a writer waits for the write lock.
    pub writer_timeout: Duration,
    /// Whether the open may claim the namespace in storage (`RegistryConfig::may_claim`).
    pub may_claim: bool,
    /// When background checkpoints copy (`RegistryConfig::checkpoint_after`).
    pub checkpoint_after: CheckpointThreshold,
    /// Whether SQLite connections may write (`RegistryConfig::replica`).
    pub replica: bool,
}

/// Returns a writer-queue id nobody else has.
pub(crate) fn next_writer_id() -> u64 {
    NEXT_WRITER_ID.fetch_add(1, Ordering::Relaxed)
}

/// Removes one read mark at `frame_no`; returns true if it was the last one there.
fn release_mark(readers: &mut BTreeMap<u64, usize>, frame_no: u64) -> bool {
    match readers.get_mut(&frame_no) {
        Some(count) if *count > 1 => {
            *count -= 1;
            false
        }
        Some(_) => {
            readers.remove(&frame_no);
            true
        }
        None => false,
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Digits in a segment file name: `{start_frame_no:020}.seg`.
const SEGMENT_NAME_DIGITS: usize = 20;

/// Returns the path of the segment starting at `start_frame_no` in `dir`.
fn segment_path(dir: &Path, start_frame_no: u64) -> PathBuf {
    dir.join(format!(
        "{start_frame_no:0width$}.seg",
        width = SEGMENT_NAME_DIGITS
    ))
}

/// Returns the start frame_no a segment file name (as `segment_path` builds it) names, or
/// `None` for any other name: exactly 20 ASCII digits, then `.seg`.
fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != SEGMENT_NAME_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

impl<I: Io, S: Storage<File = I::File>> SharedWal<I, S> {
    /// Opens the log of `namespace` for the database at `db_path`: recovers the segments in its
    /// segment directory, re-sends to storage every sealed segment that is not durable yet, and
    /// starts a current segment if there is none.
    #[tracing::instrument(skip(io, storage, settings, checkpointer), fields(namespace = %namespace))]
    pub(crate) fn open(
        namespace: NamespaceName,
        io: Arc<I>,
        storage: Arc<S>,
        db_path: &Path,
        settings: LogSettings,
        checkpointer: Arc<Checkpointer>,
    ) -> Result<Arc<Self>> {
        let LogSettings {
            swap,
            writer_timeout,
            may_claim,
            checkpoint_after,
            replica,
        } = settings;
        let seg_err = Error::segment(&namespace);
        let dir = segment_dir(db_path);
        io.create_dir_all(&dir).map_err(Error::io(&dir))?;
        let mut starts = Vec::new();
        // Spare files of the logs before this one (see `SharedWal::spare`).
        let mut old_spares = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(Error::io(&dir))? {
            let entry = entry.map_err(Error::io(&dir))?;
            let name = entry.file_name();
            match name.to_str().and_then(parse_segment_file_name) {
                Some(start) => starts.push(start),
                None if name.to_string_lossy().ends_with(SPARE_SUFFIX) => {
                    old_spares.push(entry.path());
                }
                None if name.to_string_lossy().ends_with(".seg") => {
                    warn!(path = %entry.path().display(), "ignoring a file whose name is not a segment name ({{20 digits}}.seg)");
                }
                None => {}
            }
        }
        starts.sort_unstable();
        let mut footer = read_footer(&*io, db_path)?;
        let mut sealed = Vec::new();
        let mut current = None;
        let mut checkpointed = footer.map_or(0, |f| f.replication_index);
        // A seal cut short can only be the last seal: of the newest segment, or of the one
        // before it when the newest (made just before that seal) is not sealed. Nothing in the
        // newest was synced then (`persist_seal` syncs a seal before any commit after it), so a
        // power cut may have taken frames of both.
        // A newest segment that says the seal before it is durable rules that out: damage to
        // the one before is corruption then, and refuses the open.
        // Each segment opened (and, if not sealed, recovered) once.
        let opened: Vec<_> = starts
            .iter()
            .map(|&start| libsql_wal_segment::open_segment(&*io, &segment_path(&dir, start)))
            .collect();
        let newest_after_unwritten_seal = opened.len() >= 2
            && match opened.last() {
                Some(Ok(libsql_wal_segment::OpenedSegment::Unwritten)) => true,
                Some(Ok(libsql_wal_segment::OpenedSegment::Current(segment, _))) => {
                    !segment.follows_durable_seal()
                }
                _ => false,
            };
        // Set when the seal before the newest segment was cut short or never written: frames of
        // the newest that no longer follow it are dropped (they were never synced).
        let mut torn_before_newest = false;
        // The start of the segment before the newest when it was removed as never written: the
        // log ended before it.
        let mut unwritten_start = None;
        for (i, (&start, opened)) in starts.iter().zip(opened).enumerate() {
            let path = segment_path(&dir, start);
            let opened = match opened {
                // Sealed in memory, then a power cut before its first fsync: its header may be
                // lost with frames after it. None of them, nor any of the newest's, were synced.
                Err(e)
                    if e.is_corruption()
                        && i + 2 == starts.len()
                        && newest_after_unwritten_seal =>
                {
                    warn!(path = %path.display(), error = %e, "a segment whose header a power cut took, before an unsealed newest one: treated as never written");
                    libsql_wal_segment::OpenedSegment::Unwritten
                }
                opened => opened.map_err(seg_err)?,
            };
            let opened = match opened {
                libsql_wal_segment::OpenedSegment::TornSeal(e) => {
                    let sealed_last = i + 1 == starts.len()
                        || (i + 2 == starts.len() && newest_after_unwritten_seal);
                    if !sealed_last {
                        // Synced frames follow it: not a seal cut short, a damaged segment.
                        return Err(seg_err(e));
                    }
                    torn_before_newest = i + 2 == starts.len();
                    warn!(path = %path.display(), error = %e, "a seal was cut short; recovering the segment's frames");
                    let (segment, report) =
                        CurrentSegment::recover_torn_seal(&*io, &path).map_err(seg_err)?;
                    libsql_wal_segment::OpenedSegment::Current(segment, report)
                }
                opened => opened,
            };
            match opened {
                libsql_wal_segment::OpenedSegment::TornSeal(e) => return Err(seg_err(e)),
                libsql_wal_segment::OpenedSegment::Sealed(segment) => {
                    if segment.last_committed_frame_no() <= checkpointed {
                        // Copied into the database file before a crash: only the deletion was lost.
                        io.remove_file(&path).map_err(Error::io(&path))?;
                        continue;
                    }
                    sealed.push(Arc::new(segment));
                }
                libsql_wal_segment::OpenedSegment::Unwritten if i + 1 == starts.len() => {
                    // The newest segment, made on the commit path, lost its header to a crash
                    // before anything in it was durable.
                    warn!(path = %path.display(), "removing a segment that holds no header");
                    io.remove_file(&path).map_err(Error::io(&path))?;
                }
                libsql_wal_segment::OpenedSegment::Unwritten
                    if i + 2 == starts.len() && newest_after_unwritten_seal =>
                {
                    // Sealed in memory, then a power cut before its first fsync: none of its
                    // frames, nor any of the newest's, were ever synced.
                    warn!(path = %path.display(), "removing a segment whose header a power cut took, before an unsealed newest one");
                    io.remove_file(&path).map_err(Error::io(&path))?;
                    torn_before_newest = true;
                    unwritten_start = Some(start);
                }
                libsql_wal_segment::OpenedSegment::Unwritten => {
                    return Err(Error::UnwrittenSegment {
                        namespace: namespace.clone(),
                        path,
                    });
                }
                libsql_wal_segment::OpenedSegment::Current(segment, report) => {
                    if report.dropped_frames > 0 {
                        warn!(path = %path.display(), dropped_frames = report.dropped_frames, "recovered the current segment");
                    }
                    // A seal made in memory only, the process gone before it was written.
                    torn_before_newest |= i + 2 == starts.len() && newest_after_unwritten_seal;
                    if i + 1 == starts.len() {
                        current = Some(segment);
                    } else if segment.last_committed_frame_no() <= checkpointed {
                        // All of it is in the database file already.
                        remove_segment(&*io, segment)?;
                    } else if let Some(s) = segment.seal(io.now()).map_err(seg_err)? {
                        sealed.push(Arc::new(s));
                    } else {
                        drop(segment);
                        io.remove_file(&path).map_err(Error::io(&path))?;
                    }
                }
            }
        }
        let mut previous_end = footer.map(|f| f.replication_index);
        for segment in &sealed {
            check_follows(
                &namespace,
                segment.path(),
                segment.header().start_frame_no,
                previous_end,
            )?;
            previous_end = Some(segment.last_committed_frame_no());
        }
        // What the newest must follow: the log's end, or where a segment never written began.
        let previous_end = unwritten_start
            .map(|start: u64| start.saturating_sub(1))
            .or(previous_end);
        if let Some(segment) = &current {
            if let Err(e) = check_follows(
                &namespace,
                segment.path(),
                segment.start_frame_no(),
                previous_end,
            ) {
                // Frames a power cut took from the segment before leave a gap; a segment that
                // starts inside the log's frames is never that.
                let after_lost_frames = torn_before_newest
                    && previous_end.is_some_and(|end| segment.start_frame_no() > end + 1);
                if segment.committed_frame_count() > 0 && !after_lost_frames {
                    return Err(e);
                }
                // An empty current segment out of place (left by a seal that failed) holds
                // nothing; one after a seal a power cut tore holds frames that were never
                // synced and that no longer follow the log. A new one starts where it ends.
                warn!(error = %e, frames = segment.committed_frame_count(), "removing a current segment out of place");
                if let Some(out_of_place) = current.take() {
                    remove_segment(&*io, out_of_place)?;
                }
            }
        }
        if let Some(newest) = sealed.last() {
            // The process before may have stopped before syncing its newest seal: synced now,
            // so that the only seal a power cut can tear stays this log's newest.
            newest.sync().map_err(seg_err)?;
            io.sync_dir(&dir).map_err(Error::io(&dir))?;
        }
        let storage_err = |source| Error::Storage {
            namespace: namespace.clone(),
            source,
        };
        let mut durable_frame_no = 0;
        let local_log_id = sealed
            .first()
            .map(|s| s.header().log_id)
            .or_else(|| current.as_ref().map(|c| c.log_id()))
            .or(footer.map(|f| f.log_id));
        let mut generation = None;
        if storage.keeps_remote_copies() {
            // The current segment goes on after the sealed ones.
            let local_log_end = current
                .as_ref()
                .filter(|c| c.committed_frame_count() > 0)
                .map(|c| c.last_committed_frame_no())
                .or_else(|| sealed.last().map(|s| s.last_committed_frame_no()));
            let lineage = futures::executor::block_on(storage.lineage(&namespace, None))
                .map_err(storage_err)?;
            let ours = local_log_id.and_then(|id| lineage.of_log(id).copied());
            let newest = lineage.newest().copied();
            let marker = dir.join(RESTORE_MARKER);
            // Fails the open, before anything is written, when it would claim the namespace
            // (`what` it would do) and may not.
            let may_it = |what| {
                if may_claim {
                    Ok(())
                } else {
                    Err(Error::WouldClaim {
                        namespace: namespace.clone(),
                        what,
                    })
                }
            };
            // Restores the database file in place from storage, up to `target`.
            let restore_to = |target| {
                restore_in_place(
                    &*storage, &namespace, db_path, None, &marker, &lineage, target,
                )
            };
            // Frames before a generation's start are its parent's, durable before it existed.
            let durable_before_ours = ours.map_or(0, |r| match r.kind {
                GenerationKind::Log { start_frame_no, .. } => start_frame_no.saturating_sub(1),
                GenerationKind::Deleted => 0,
            });
            let claim = match (ours.and_then(|r| r.log(&namespace)), newest) {
                (Some(ours), Some(newest)) if ours.number == newest.number => {
                    let durable =
                        futures::executor::block_on(storage.durable_frame_no(&ours, None))
                            .map_err(storage_err)?;
                    let catch_up = CatchUp {
                        namespace: &namespace,
                        db_path,
                        dir: &dir,
                        footer,
                        local_log_end,
                        durable_frame_no: durable,
                        lineage: &lineage,
                        may_claim,
                    };
                    if catch_up.run(&*storage)? {
                        // A copy of the database that was behind its own log: whoever made it
                        // may still write that log, so this writer starts one of its own.
                        Claim::TakeOver
                    } else {
                        // A generation with nothing stored yet (a takeover or a rewind that
                        // wrote nothing) still holds its start's point.
                        durable_frame_no = durable.max(durable_before_ours);
                        Claim::Continue(ours)
                    }
                }
                (Some(ours), Some(newest)) => {
                    if let Some(local_frame_no) = local_log_end {
                        return Err(Error::Superseded {
                            namespace: namespace.clone(),
                            local_generation: ours.number,
                            local_frame_no,
                            newest_generation: newest.number,
                        });
                    }
                    // A checkpointed file of an older generation: all of it was durable before
                    // the newer generation took over (a fenced writer never checkpoints past
                    // what it had acknowledged), so the newest history holds it.
                    info!(
                        local = ours.number,
                        newest = newest.number,
                        "the local database is of an older generation: restoring the newest"
                    );
                    may_it("restore the newest generation over an older one's database")?;
                    let restored = restore_to(RestoreTarget::Latest)?;
                    if restored.is_none() {
                        // The newest history holds nothing (the namespace was deleted, or a new
                        // history stored nothing yet): the file is of a history that ended, and
                        // must neither come back nor be mixed into the new one.
                        return Err(Error::Superseded {
                            namespace: namespace.clone(),
                            local_generation: ours.number,
                            local_frame_no: checkpointed,
                            newest_generation: newest.number,
                        });
                    }
                    Claim::TakeOver
                }
                (_, newest) => {
                    // A restore cut short (its marker left) is started over from scratch:
                    // the file's content is not to be trusted.
                    let local_has_data = !marker.exists()
                        && (local_log_end.is_some()
                            || footer.is_some()
                            || !holds_no_schema(db_path)?);
                    if local_has_data {
                        if let Some(newest) = newest.filter(|n| n.kind == GenerationKind::Deleted) {
                            // Files of a namespace deleted since (its records are gone with a
                            // full delete): they must not come back as a new history.
                            return Err(Error::Superseded {
                                namespace: namespace.clone(),
                                local_generation: 0,
                                local_frame_no: local_log_end.unwrap_or(checkpointed),
                                newest_generation: newest.number,
                            });
                        }
                        may_it("start a generation of its own in storage")?;
                        if let Some(newest) = newest {
                            warn!(newest = newest.number, "a new log over a namespace with history in storage: it starts a generation of its own, which restores follow");
                        }
                        Claim::NewHistory
                    } else {
                        may_it("restore it from storage")?;
                        match restore_to(RestoreTarget::Latest)? {
                            Some(_) => Claim::TakeOver,
                            None => Claim::NewHistory,
                        }
                    }
                }
            };
            generation = Some(match claim {
                Claim::Continue(ours) => ours,
                Claim::TakeOver | Claim::NewHistory => {
                    let mut parent = if matches!(claim, Claim::TakeOver) {
                        // The log starts after the restored point, under a log id of its own.
                        if let Some(empty) = current.take() {
                            remove_segment(&*io, empty)?;
                        }
                        footer = read_footer(&*io, db_path)?;
                        checkpointed = footer.map_or(0, |f| f.replication_index);
                        // Every restored frame is durable: in the generations it came from.
                        durable_frame_no = checkpointed;
                        newest.map(|newest| ForkPoint {
                            generation: newest.number,
                            frame_no: checkpointed,
                        })
                    } else {
                        None
                    };
                    let mut log_id = match (&claim, local_log_id) {
                        (Claim::NewHistory, Some(id)) => id,
                        _ => io.uuid(),
                    };
                    if matches!(claim, Claim::NewHistory) {
                        // A local log storage never had (kept without storage, or over a bucket
                        // that lost it): its first frames may be checkpointed already, and the
                        // file may hold pages of no log at all (made by stock SQLite). All of
                        // it goes into the file first, then into the base commit below.
                        if let Some(folded) = fold_into_database(
                            &namespace,
                            &*io,
                            db_path,
                            std::mem::take(&mut sealed),
                            current.take(),
                            log_id,
                        )? {
                            footer = Some(folded);
                            checkpointed = folded.replication_index;
                        }
                        // The database's pages are in no log storage holds (imported, made by
                        // stock SQLite, or checkpointed without storage): they become the new
                        // history's first commit, so a restore rebuilds the whole file.
                        current = base_snapshot(
                            &namespace,
                            &*io,
                            db_path,
                            current.take(),
                            checkpointed + 1,
                            log_id,
                            footer.is_some(),
                        )?;
                    }
                    let mut number = lineage.next_number();
                    let record = loop {
                        let start_frame_no = sealed
                            .first()
                            .map(|s| s.header().start_frame_no)
                            .or_else(|| current.as_ref().map(|c| c.start_frame_no()))
                            .unwrap_or(checkpointed + 1);
                        let record = GenerationRecord {
                            number,
                            created_ms: u64::try_from(io.now().timestamp_millis()).unwrap_or(0),
                            kind: GenerationKind::Log {
                                log_id,
                                start_frame_no,
                                parent,
                                rewound: false,
                            },
                        };
                        let created = futures::executor::block_on(
                            storage.create_generation(&namespace, &record, None),
                        )
                        .map_err(storage_err)?;
                        if !created {
                            return Err(Error::Superseded {
                                namespace: namespace.clone(),
                                local_generation: 0,
                                local_frame_no: local_log_end.unwrap_or(checkpointed),
                                newest_generation: record.number,
                            });
                        }
                        // The claim fences the writer before off from now on, but until it
                        // existed that writer could store and acknowledge frames past the point
                        // restored: the parent's end, listed now that nothing more of it can be
                        // acknowledged, is what the new history must start from.
                        let Some(fork) = parent else { break record };
                        let Some(grown) = grown_past_fork(&*storage, &lineage, &namespace, fork)?
                        else {
                            break record;
                        };
                        warn!(
                            parent = grown.generation,
                            restored = fork.frame_no,
                            end = grown.frame_no,
                            "the writer before stored more while this one restored: restoring again up to it"
                        );
                        restore_to(RestoreTarget::InGeneration {
                            generation: grown.generation,
                            frame_no: grown.frame_no,
                        })?;
                        footer = read_footer(&*io, db_path)?;
                        checkpointed = footer.map_or(0, |f| f.replication_index);
                        durable_frame_no = checkpointed;
                        parent = Some(ForkPoint {
                            generation: grown.generation,
                            frame_no: checkpointed,
                        });
                        // The generation just claimed stays behind, empty: no restore reads it.
                        // The next claim is a log of its own (an open finds its generation by
                        // its log id).
                        number += 1;
                        log_id = io.uuid();
                    };
                    info!(generation = record.number, ?parent, "new generation");
                    Generation {
                        namespace: namespace.clone(),
                        number: record.number,
                        log_id,
                    }
                }
            });
        }
        let log_id = generation
            .as_ref()
            .map(|g| g.log_id)
            .or(local_log_id)
            .unwrap_or_else(|| io.uuid());
        let generation = generation.unwrap_or_else(|| Generation {
            namespace: namespace.clone(),
            number: 0,
            log_id,
        });
        let last_sealed = sealed
            .last()
            .map(|s| (s.last_committed_frame_no(), s.size_after()));
        let current = match current {
            Some(current) => current,
            None => {
                let start = last_sealed.map_or(checkpointed, |(end, _)| end) + 1;
                let path = segment_path(&dir, start);
                CurrentSegment::create(&*io, &path, start, log_id).map_err(seg_err)?
            }
        };
        if !sealed.is_empty() {
            // The newest seal is durable (synced above): the segment after it says so, like
            // one after a seal `persist_seal` wrote.
            current.mark_after_durable_seal().map_err(seg_err)?;
        }
        let (last_committed_frame_no, db_size) = if current.committed_frame_count() > 0 {
            (current.last_committed_frame_no(), current.size_after())
        } else if let Some((end, size)) = last_sealed {
            (end, size)
        } else {
            // Nothing in the log: read transactions take the size from the file's header.
            (checkpointed, 0)
        };
        info!(
            last_committed_frame_no,
            sealed = sealed.len(),
            durable_frame_no,
            checkpointed,
            "namespace log opened"
        );
        let spare_path = dir.join(format!("{}{SPARE_SUFFIX}", io.uuid().simple()));
        let incarnation =
            crate::replication::take_clean_close(&*io, &dir, log_id, last_committed_frame_no)?;
        let shared = Arc::new_cyclic(|this| SharedWal {
            namespace,
            io,
            storage,
            db_path: db_path.to_path_buf(),
            dir,
            log_id,
            generation,
            fenced: OnceLock::new(),
            swap,
            state: RwLock::new(Snapshot {
                current: Arc::new(current),
                sealed: Arc::new(sealed.clone()),
                last_committed_frame_no,
                db_size,
            }),
            current_since: Mutex::new(None),
            writers: Mutex::default(),
            writer_released: Condvar::new(),
            writer_timeout,
            readers: Mutex::default(),
            durable_frame_no: Arc::new(AtomicU64::new(durable_frame_no)),
            checkpointed_frame_no: AtomicU64::new(checkpointed),
            backfilled_frames: AtomicU64::new(0),
            checkpointing: Mutex::new(()),
            checkpoint_after,
            db_file: OnceLock::new(),
            checkpointer,
            checkpoint_queued: AtomicBool::new(false),
            this: this.clone(),
            poisoned: OnceLock::new(),
            commit_left_in_file: AtomicBool::new(false),
            unsynced_seal: Mutex::new(None),
            spare: Mutex::new(None),
            spare_path,
            retired: AtomicBool::new(false),
            seal_failures: AtomicU64::new(0),
            activity: Activity::default(),
            unsent: Mutex::default(),
            sending_in_background: AtomicBool::new(false),
            sending: Mutex::new(()),
            lifecycle: Mutex::default(),
            replica,
            commits: tokio::sync::watch::Sender::new(last_committed_frame_no),
            incarnation,
            refused: Mutex::default(),
        });
        lock(&shared.unsent).extend(
            sealed
                .into_iter()
                .filter(|s| s.last_committed_frame_no() > durable_frame_no),
        );
        shared.send_unsent()?;
        shared.request_checkpoint();
        shared.adopt_spare(old_spares);
        Ok(shared)
    }

    /// Returns the namespace.
    pub fn namespace(&self) -> &NamespaceName {
        &self.namespace
    }

    /// Returns the database file the log is for.
    pub fn db_path(&self) -> &Path {
        &self.db_path
    }

    /// Returns the log id.
    pub fn log_id(&self) -> Uuid {
        self.log_id
    }

    /// Returns the last committed frame_no.
    pub fn last_committed_frame_no(&self) -> u64 {
        self.snapshot().last_committed_frame_no
    }

    /// Returns the highest frame_no storage reported durable.
    pub fn durable_frame_no(&self) -> u64 {
        self.durable_frame_no.load(Ordering::SeqCst)
    }

    /// Returns the highest frame_no copied into the database file.
    pub fn checkpointed_frame_no(&self) -> u64 {
        self.checkpointed_frame_no.load(Ordering::SeqCst)
    }

    /// Returns the frames checkpointed since the log last restarted (see `restart_log`).
    pub(crate) fn backfilled_frames(&self) -> u64 {
        self.backfilled_frames.load(Ordering::SeqCst)
    }

    /// Restarts the log's frame count, as SQLite's WAL does when a writer begins with every
    /// frame backfilled: called by a write transaction before its first frame, it forgets the
    /// backfilled frames if the log holds no other frame.
    pub(crate) fn restart_log(&self) {
        let snapshot = self.snapshot();
        if snapshot.sealed.is_empty() && snapshot.current.committed_frame_count() == 0 {
            self.backfilled_frames.store(0, Ordering::SeqCst);
        }
    }

    /// Forgets the backfilled frames (a truncating checkpoint that emptied the log).
    pub(crate) fn forget_backfilled(&self) {
        self.backfilled_frames.store(0, Ordering::SeqCst);
    }

    /// Returns why the log takes no more writes, if a seal failed part way.
    pub fn poisoned(&self) -> Option<&str> {
        self.poisoned.get().map(String::as_str)
    }

    /// Returns the number of connections open on this log.
    pub fn connections(&self) -> usize {
        lock(&self.lifecycle).connections
    }

    /// Counts a connection opening on this log; false (counting nothing) if the log was closed.
    pub(crate) fn attach(&self) -> bool {
        let mut lifecycle = lock(&self.lifecycle);
        if lifecycle.closed {
            return false;
        }
        lifecycle.connections += 1;
        true
    }

    /// Counts a connection closed (`LibsqlWal`'s drop).
    pub(crate) fn detach(&self) {
        let mut lifecycle = lock(&self.lifecycle);
        lifecycle.connections = lifecycle.connections.saturating_sub(1);
    }

    /// Marks the log closed if no connection is open on it; returns whether it did.
    pub(crate) fn close(&self) -> bool {
        let mut lifecycle = lock(&self.lifecycle);
        if lifecycle.connections > 0 {
            return false;
        }
        lifecycle.closed = true;
        true
    }

    /// Takes a log marked closed back (its close failed part way).
    pub(crate) fn reopen(&self) {
        lock(&self.lifecycle).closed = false;
    }

    /// Returns true if the log was marked closed.
    pub(crate) fn is_closed(&self) -> bool {
        lock(&self.lifecycle).closed
    }

    /// Returns the sealed segments storage has not taken, or took and gave up on: they are
    /// handed over again at the next seal or age check.
    pub fn pending_segments(&self) -> usize {
        lock(&self.refused).len() + lock(&self.unsent).len()
    }

    /// Returns how many seals failed after a commit (each commit stood; its seal was retried).
    pub fn seal_failures(&self) -> u64 {
        self.seal_failures.load(Ordering::SeqCst)
    }

    /// Returns the commits, seals and checkpoints of this log since it opened: (commits,
    /// seals, checkpoints).
    pub fn activity(&self) -> (u64, u64, u64) {
        (
            self.activity.commits.load(Ordering::Relaxed),
            self.activity.seals.load(Ordering::Relaxed),
            self.activity.checkpoints.load(Ordering::Relaxed),
        )
    }

    /// Which history this log is, for replicas (see `replication`).
    pub(crate) fn identity(&self) -> crate::replication::LogIdentity {
        crate::replication::LogIdentity {
            log_id: self.log_id,
            generation: self.generation.number,
            incarnation: self.incarnation,
        }
    }

    /// A receiver of the last committed frame_no, woken at each commit and at retirement.
    pub(crate) fn subscribe_commits(&self) -> tokio::sync::watch::Receiver<u64> {
        self.commits.subscribe()
    }

    /// True for a read replica's log (`RegistryConfig::replica`).
    pub fn is_replica(&self) -> bool {
        self.replica
    }

    /// True once the registry forgot this log (`retire`).
    pub(crate) fn is_retired(&self) -> bool {
        self.retired.load(Ordering::SeqCst)
    }

    /// This log, shared, unless it is being dropped.
    pub(crate) fn this(&self) -> Option<Arc<Self>> {
        self.this.upgrade()
    }

    /// The file-system access of this log.
    pub(crate) fn io(&self) -> &I {
        &self.io
    }

    /// A replication error of this namespace.
    pub(crate) fn replication_error(&self, why: impl Into<String>) -> Error {
        Error::Replication {
            namespace: self.namespace.clone(),
            why: why.into(),
        }
    }

    /// Returns the generation this log writes (number 0 without remote storage).
    pub fn generation(&self) -> &Generation {
        &self.generation
    }

    /// Returns the number of the generation that fenced this log off, if one did.
    pub fn fenced(&self) -> Option<u64> {
        self.fenced.get().copied()
    }

    /// Fails with `Fenced` or `Poisoned` if the log takes no more writes.
    fn check_writable(&self) -> Result<()> {
        if let Some(newer) = self.fenced() {
            return Err(Error::Fenced {
                namespace: self.namespace.clone(),
                generation: self.generation.number,
                newer,
            });
        }
        match self.poisoned() {
            Some(why) => Err(Error::Poisoned {
                namespace: self.namespace.clone(),
                why: why.to_string(),
            }),
            None => Ok(()),
        }
    }

    /// Ends this log's work on its files once the registry has forgotten it (closed, or
    /// poisoned and about to be opened again from disk): waits for a checkpoint running on it
    /// and makes every later seal and checkpoint of it do nothing (a background checkpoint may
    /// still be queued), so that nothing of it runs alongside the log opened next over the same
    /// files.
    pub(crate) fn retire(&self) {
        // Taken first: no spare is made once retired (`make_spare` checks under this lock).
        let spare = lock(&self.spare);
        // The log opened next over these files does not know the newest seal is unsynced.
        if self.poisoned().is_none() {
            if let Err(e) = self.persist_seal() {
                warn!(namespace = %self.namespace, error = %e, "cannot sync the newest seal of a log being retired");
            }
        }
        self.retired.store(true, Ordering::SeqCst);
        // Replicators waiting on commits learn that none will come.
        self.commits.send_modify(|_| {});
        drop(spare);
        let _running = lock(&self.checkpointing);
        let _ = self
            .poisoned
            .set("the namespace was closed; it opens again on demand".to_string());
        self.mark_clean_close();
    }

    /// After `retire`: when everything committed is sealed and synced and no writer is
    /// mid-commit, leaves the marker that lets the next open continue this incarnation (see
    /// `replication`), so replicas resume instead of taking a full image.
    fn mark_clean_close(&self) {
        let id = next_writer_id();
        if !self.try_acquire_writer(id) {
            return;
        }
        let clean = lock(&self.unsynced_seal).is_none()
            && self.snapshot().current.committed_frame_count() == 0
            && !self.snapshot().current.in_transaction();
        if clean {
            if let Err(e) = crate::replication::mark_clean_close(
                &*self.io,
                &self.dir,
                self.log_id,
                self.incarnation,
                self.last_committed_frame_no(),
            ) {
                warn!(namespace = %self.namespace, error = %e, "cannot mark a clean close; replicas take a full image after the next open");
            }
        }
        self.release_writer(id);
    }

    /// Records that the current segment's file still holds a commit that failed (see
    /// `take_back_failed_commit`).
    pub(crate) fn commit_left_in_file(&self) {
        self.commit_left_in_file.store(true, Ordering::SeqCst);
    }

    /// Cuts a failed commit left in the current segment's file (`commit_left_in_file`) off it,
    /// synced; does nothing if there is none. The registry calls it before opening the log
    /// again from disk, which would otherwise find the commit and show it: it fails (and the
    /// log stays poisoned and in place) as long as the cut does.
    pub(crate) fn take_back_failed_commit(&self) -> Result<()> {
        if !self.commit_left_in_file.load(Ordering::SeqCst) {
            return Ok(());
        }
        self.snapshot()
            .current
            .cut_after_committed()
            .map_err(Error::segment(&self.namespace))?;
        self.commit_left_in_file.store(false, Ordering::SeqCst);
        info!(namespace = %self.namespace, "a failed commit left in the log's file was cut off it");
        Ok(())
    }

    /// Marks the log as taking no more writes, seals or checkpoints, for `why`.
    pub(crate) fn poison(&self, why: String) {
        tracing::error!(namespace = %self.namespace, %why, "the log takes no more writes until it is opened again");
        let _ = self.poisoned.set(why);
    }

    /// Returns the number of sealed segments waiting to be checkpointed.
    pub fn sealed_segment_count(&self) -> usize {
        self.snapshot().sealed.len()
    }

    /// Returns the latest snapshot.
    pub(crate) fn snapshot(&self) -> Snapshot<I::File> {
        self.state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Begins a read transaction: takes the latest snapshot and registers it, atomically with
    /// respect to checkpoints, which keep everything a registered reader may read.
    pub(crate) fn begin_read(&self) -> Snapshot<I::File> {
        let mut snapshot = {
            let mut readers = lock(&self.readers);
            let snapshot = self.snapshot();
            *readers.entry(snapshot.last_committed_frame_no).or_default() += 1;
            snapshot
        };
        if snapshot.db_size == 0 {
            snapshot.db_size = self.db_size_from_file();
        }
        snapshot
    }

    /// Returns the database size in pages recorded in page 1's header of the database file,
    /// bounded by the pages the file holds; 0 if the file has no header (SQLite then measures
    /// the file itself).
    fn db_size_from_file(&self) -> u32 {
        let Ok(file) = self.db_file() else {
            return 0;
        };
        let mut size = [0; 4];
        match (file.size(), file.read_exact_at(&mut size, 28)) {
            (Ok(len), Ok(())) => u32::from_be_bytes(size).min((len / PAGE_SIZE as u64) as u32),
            _ => 0,
        }
    }

    /// Returns the database file, opened on first use and kept for header reads and
    /// checkpoints.
    pub(crate) fn db_file(&self) -> std::io::Result<&I::File> {
        if let Some(file) = self.db_file.get() {
            return Ok(file);
        }
        let file = self.io.open(&self.db_path, OpenMode::ReadWrite)?;
        Ok(self.db_file.get_or_init(|| file))
    }

    /// Moves a registered read transaction from `from` to `to` (the writer's own snapshot after
    /// it commits).
    pub(crate) fn move_reader(&self, from: u64, to: u64) {
        let mut readers = lock(&self.readers);
        *readers.entry(to).or_default() += 1;
        release_mark(&mut readers, from);
    }

    /// Ends a read transaction registered at `frame_no`. When it was the last at the oldest
    /// snapshot, segments it held back may now be checkpointed.
    pub(crate) fn remove_reader(&self, frame_no: u64) {
        let mut readers = lock(&self.readers);
        let oldest = readers.keys().next() == Some(&frame_no);
        if !release_mark(&mut readers, frame_no) || !oldest {
            return;
        }
        drop(readers);
        let has_sealed = !self
            .state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .sealed
            .is_empty();
        if has_sealed {
            self.request_checkpoint();
        }
    }

    /// Queues a background checkpoint of this namespace unless one is already queued.
    pub fn request_checkpoint(&self) {
        if !self.checkpoint_queued.swap(true, Ordering::SeqCst) {
            if let Some(this) = self.this.upgrade() {
                self.checkpointer.enqueue(this);
            }
        }
    }

    /// Waits, in arrival order, for the write lock for connection `id`, for at most the writer
    /// timeout; then fails with `Busy`.
    pub(crate) fn acquire_writer(&self, id: u64) -> Result<()> {
        self.check_writable()?;
        let deadline = Instant::now() + self.writer_timeout;
        let mut queue = lock(&self.writers);
        if queue.holder == Some(id) {
            return Ok(());
        }
        queue.waiting.push_back(id);
        loop {
            if queue.holder.is_none() && queue.waiting.front() == Some(&id) {
                queue.waiting.pop_front();
                queue.holder = Some(id);
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                queue.waiting.retain(|&w| w != id);
                self.writer_released.notify_all();
                return Err(Error::Busy {
                    namespace: self.namespace.clone(),
                    why: "timed out waiting for the write lock",
                    stale_snapshot: false,
                });
            }
            queue = self
                .writer_released
                .wait_timeout(queue, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Takes the write lock for connection `id` only if nobody holds it or waits for it.
    pub(crate) fn try_acquire_writer(&self, id: u64) -> bool {
        let mut queue = lock(&self.writers);
        if queue.holder.is_none() && queue.waiting.is_empty() {
            queue.holder = Some(id);
            true
        } else {
            queue.holder == Some(id)
        }
    }

    /// Releases the write lock held by connection `id`.
    pub(crate) fn release_writer(&self, id: u64) {
        let mut queue = lock(&self.writers);
        if queue.holder == Some(id) {
            queue.holder = None;
            self.writer_released.notify_all();
        }
    }

    /// Publishes the commit just written to `current` by the lock holder, then seals the
    /// segment if the swap strategy says so. Returns the new snapshot.
    ///
    /// The commit point is the publication: nothing after it fails the commit. A seal that
    /// fails is logged and counted (`seal_failures`), and the next commit or age check tries
    /// again (unless the failure poisoned the log).
    pub(crate) fn publish_commit(
        &self,
        current: &Arc<CurrentSegment<I::File>>,
    ) -> Snapshot<I::File> {
        {
            let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
            state.last_committed_frame_no = current.last_committed_frame_no();
            state.db_size = current.size_after();
        }
        self.commits.send_replace(current.last_committed_frame_no());
        self.activity.commits.fetch_add(1, Ordering::Relaxed);
        let since = *lock(&self.current_since).get_or_insert_with(Instant::now);
        let frames = current.committed_frame_count();
        if frames >= self.swap.max_frames
            || current.committed_len() >= self.swap.max_bytes
            || since.elapsed() >= self.swap.max_age
        {
            if let Err(e) = self.seal_current().and_then(|()| self.hand_over_seal()) {
                self.seal_failures.fetch_add(1, Ordering::SeqCst);
                warn!(namespace = %self.namespace, error = %e, "sealing after a commit failed; the commit stands and the seal is tried again later");
            }
        }
        self.snapshot()
    }

    /// Seals the current segment if its first commit is older than the swap strategy's
    /// `max_age` and no connection holds or waits for the write lock (an idle namespace still
    /// seals, so its commits reach storage), then hands what storage has not taken yet to it
    /// from a thread of its own. Called periodically by the registry's age check, which must
    /// never wait: one namespace whose queue is full does not hold up the others' age seals.
    pub(crate) fn seal_if_too_old(&self) -> Result<()> {
        if self.poisoned().is_some() {
            return Ok(());
        }
        let due =
            lock(&self.current_since).is_some_and(|since| since.elapsed() >= self.swap.max_age);
        let id = next_writer_id();
        if due && self.try_acquire_writer(id) {
            let sealed = self.seal_current();
            self.release_writer(id);
            sealed?;
        }
        self.send_unsent_in_background();
        Ok(())
    }

    /// Queues a job on the sender threads (`senders`) that hands the unsent segments to
    /// storage, unless there are none or a job (or a writer) is at it already. The job may
    /// wait on a full queue; nobody waits for it.
    fn send_unsent_in_background(&self) {
        let pending = !lock(&self.unsent).is_empty() || !lock(&self.refused).is_empty();
        if !pending || self.sending_in_background.swap(true, Ordering::SeqCst) {
            return;
        }
        let Some(this) = self.this.upgrade() else {
            self.sending_in_background.store(false, Ordering::SeqCst);
            return;
        };
        let queued = crate::senders::send(Box::new(move || {
            loop {
                // A panic must not leave the flag set: no job would ever be queued again.
                let sent =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| this.send_unsent()));
                this.sending_in_background.store(false, Ordering::SeqCst);
                let sent = sent.unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                if let Err(e) = sent {
                    warn!(namespace = %this.namespace, error = %e, "handing sealed segments to storage failed; tried again at the next age check");
                    break;
                }
                // A seal made while this thread was finishing saw it running and left its
                // segment to it: take it, unless another thread did or nothing can go.
                let stopped = this.retired.load(Ordering::SeqCst) || this.fenced().is_some();
                if stopped
                    || lock(&this.unsent).is_empty()
                    || this.sending_in_background.swap(true, Ordering::SeqCst)
                {
                    break;
                }
            }
            this.make_spare();
        }));
        if let Err(e) = queued {
            warn!(namespace = %self.namespace, error = %e, "cannot start a thread to hand sealed segments to storage; the next age check tries again");
            self.sending_in_background.store(false, Ordering::SeqCst);
        }
    }

    /// Seals the current segment now, if it holds commits and no connection holds or waits for
    /// the write lock; returns false, sealing nothing, when one does. Every seal ends a stored
    /// segment, so this marks a point a restore can land on exactly. The seal is synced and
    /// handed to storage from a thread of its own, unless storage is behind (see
    /// `hand_over_seal`).
    pub fn seal_now(&self) -> Result<bool> {
        let id = next_writer_id();
        if !self.try_acquire_writer(id) {
            return Ok(false);
        }
        let sealed = self.seal_current().and_then(|()| self.hand_over_seal());
        self.release_writer(id);
        sealed.map(|()| true)
    }

    /// After a seal on the write path: syncs it and hands it to storage from a thread of its
    /// own (`send_unsent_in_background`) when it is the only segment waiting, so that neither
    /// the seal's fsync nor the hand-over is paid by the writer. When older segments still
    /// wait (storage is behind), hands over here instead, waiting on storage's full queue:
    /// that is the backpressure that keeps the log's backlog bounded.
    fn hand_over_seal(&self) -> Result<()> {
        let backlog = lock(&self.unsent).len() + lock(&self.refused).len();
        if backlog > 1 {
            return self.send_unsent();
        }
        self.send_unsent_in_background();
        Ok(())
    }

    /// Makes the newest seal durable if it is not yet (see `unsynced_seal`): writes it (index and
    /// sealed header) and fsyncs the segment, then the segment directory (which holds the next
    /// segment's name), then marks the next segment as after a durable seal (unsynced). Called before the next seal, before storage or a checkpoint takes the
    /// segment, before a commit is synced (`PRAGMA synchronous=FULL`), and at shutdown: so a
    /// power cut can tear only the newest seal, and only while nothing after it was synced
    /// either.
    ///
    /// A failed fsync is not retried (the page cache is no evidence of what the disk holds
    /// after one): the log is poisoned, the seal stays unwritten, and every later call fails
    /// with `Poisoned` until the log is opened again from disk.
    pub(crate) fn persist_seal(&self) -> Result<()> {
        let mut unsynced = lock(&self.unsynced_seal);
        let Some((sealed, next)) = unsynced.as_ref() else {
            return Ok(());
        };
        if let Some(why) = self.poisoned() {
            // A seal that could not be written stays unwritten: nothing after it may be synced
            // (a FULL commit would be confirmed and then lost to a power cut).
            return Err(Error::Poisoned {
                namespace: self.namespace.clone(),
                why: why.to_string(),
            });
        }
        if let Err(e) = sealed.persist() {
            self.poison(format!(
                "writing the seal of {}: {e}",
                sealed.path().display()
            ));
            return Err(Error::segment(&self.namespace)(e));
        }
        if let Err(e) = self.io.sync_dir(&self.dir) {
            self.poison(format!(
                "syncing the segment directory {}: {e}",
                self.dir.display()
            ));
            return Err(Error::Io {
                path: self.dir.clone(),
                source: e,
            });
        }
        // The segment after it says so on disk: damage to this one is corruption from now on.
        if let Err(e) = next.mark_after_durable_seal() {
            self.poison(format!(
                "marking {} as after a durable seal: {e}",
                next.path().display()
            ));
            return Err(Error::segment(&self.namespace)(e));
        }
        *unsynced = None;
        Ok(())
    }

    /// Seals the current segment (the caller holds the write lock, or no writer can run), starts
    /// a new one after it, and queues the sealed one for storage (`send_unsent` hands it over).
    /// Does nothing if the current segment holds no commit.
    ///
    /// The seal is made in memory only (`CurrentSegment::seal_in_memory`): `persist_seal`
    /// writes and syncs it, off the writer's path, first thing at the next seal at the latest.
    ///
    /// Failure: if the seal before cannot be synced, the log is poisoned. If the next segment
    /// cannot be created, nothing changed and the seal can be tried again. If the seal itself
    /// fails, the next segment's file is removed and the log is poisoned.
    /// If storage refuses the sealed segment, it is kept and handed over again before any newer
    /// one (`send_unsent`).
    pub(crate) fn seal_current(&self) -> Result<()> {
        let seg_err = Error::segment(&self.namespace);
        self.check_writable()?;
        let current = self.snapshot().current;
        if current.committed_frame_count() == 0 || current.in_transaction() {
            return Ok(());
        }
        // At most one seal unsynced: a power cut can only tear the newest.
        self.persist_seal()?;
        let next_start = current.last_committed_frame_no() + 1;
        let next_path = segment_path(&self.dir, next_start);
        // Unsynced: the seal's directory sync (`persist_seal`) makes its name durable, its first
        // fsync its header (see `CurrentSegment::create_unsynced`).
        let next = self.next_segment(&next_path, next_start).map_err(seg_err)?;
        let sealed = match current.seal_in_memory(self.io.now()) {
            Ok(Some(sealed)) => sealed,
            outcome => {
                // The next segment must not outlive a seal that did not happen: it would start
                // inside the frames of this one, which goes on (or is recovered) as current.
                drop(next);
                if let Err(e) = self.io.remove_file(&next_path) {
                    warn!(path = %next_path.display(), error = %e, "cannot remove the next segment after a failed seal; the next open repairs it");
                }
                return match outcome {
                    Ok(_) => Ok(()),
                    Err(e) => {
                        self.poison(format!("sealing {}: {e}", current.path().display()));
                        Err(seg_err(e))
                    }
                };
            }
        };
        let sealed = Arc::new(sealed);
        let next = Arc::new(next);
        // Recorded before anyone can see it: a checkpoint must find it to write it first.
        *lock(&self.unsynced_seal) = Some((sealed.clone(), next.clone()));
        {
            let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
            let mut list = Vec::with_capacity(state.sealed.len() + 1);
            list.extend(state.sealed.iter().cloned());
            list.push(sealed.clone());
            state.sealed = Arc::new(list);
            state.current = next;
        }
        *lock(&self.current_since) = None;
        self.activity.seals.fetch_add(1, Ordering::Relaxed);
        debug!(
            namespace = %self.namespace,
            end = sealed.last_committed_frame_no(),
            "segment sealed"
        );
        lock(&self.unsent).push_back(sealed);
        if !self.storage.keeps_remote_copies() {
            self.request_checkpoint();
        }
        Ok(())
    }

    /// Creates the segment that follows a seal, at `path`: the spare file renamed there if
    /// there is one (`make_spare`), else a new file.
    fn next_segment(
        &self,
        path: &Path,
        start_frame_no: u64,
    ) -> libsql_wal_segment::Result<CurrentSegment<I::File>> {
        if let Some(file) = lock(&self.spare).take() {
            let spare = &self.spare_path;
            match self.io.rename_no_replace(spare, path) {
                Ok(()) => {
                    return CurrentSegment::create_unsynced_in(
                        &*self.io,
                        file,
                        path,
                        start_frame_no,
                        self.log_id,
                    );
                }
                Err(e) => {
                    warn!(path = %spare.display(), error = %e, "cannot rename the spare segment file; creating the next segment instead");
                }
            }
        }
        CurrentSegment::create_unsynced(&*self.io, path, start_frame_no, self.log_id)
    }

    /// Takes an empty spare file a log before this one left as this log's own (renamed), for its
    /// first seal, and removes the others: an open makes no file. A log that never sealed
    /// leaves none, and its first seal makes its next segment itself.
    fn adopt_spare(&self, old_spares: Vec<PathBuf>) {
        let mut spare = lock(&self.spare);
        for old in old_spares {
            if spare.is_none() && self.io.rename_no_replace(&old, &self.spare_path).is_ok() {
                match self.io.open(&self.spare_path, OpenMode::ReadWrite) {
                    Ok(file) if file.size().is_ok_and(|len| len == 0) => {
                        *spare = Some(file);
                        continue;
                    }
                    _ => {
                        if let Err(e) = self.io.remove_file(&self.spare_path) {
                            warn!(path = %self.spare_path.display(), error = %e, "cannot remove an old spare segment file");
                        }
                        continue;
                    }
                }
            }
            if let Err(e) = self.io.remove_file(&old) {
                warn!(path = %old.display(), error = %e, "cannot remove an old spare segment file");
            }
        }
    }

    /// Makes the spare file the next seal takes (`next_segment`), unless there is one or the
    /// log takes no more seals. Off the writer's path: the thread that hands seals to storage
    /// calls it. Failing costs nothing but the next seal's time.
    fn make_spare(&self) {
        let mut spare = lock(&self.spare);
        if spare.is_some() || self.retired.load(Ordering::SeqCst) || self.poisoned().is_some() {
            return;
        }
        let path = &self.spare_path;
        match self.io.remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                debug!(path = %path.display(), error = %e, "cannot remove an old spare segment file");
                return;
            }
        }
        match self.io.open(path, OpenMode::CreateNew) {
            Ok(file) => *spare = Some(file),
            Err(e) => {
                debug!(path = %path.display(), error = %e, "cannot make a spare segment file")
            }
        }
    }

    /// Hands the sealed segments storage has not taken yet to it, oldest first; the callback
    /// records the durable frame_no. Stops at the first refusal, keeping it and every newer
    /// segment for the next try, so storage always receives the segments in frame order.
    /// May wait while storage's queue for the namespace is full (backpressure).
    pub(crate) fn send_unsent(&self) -> Result<()> {
        // One sender at a time keeps the order; `unsent` itself is only locked for moments, so
        // a seal never waits behind a sender that waits on storage.
        let _sender = lock(&self.sending);
        if self.retired.load(Ordering::SeqCst) {
            // Forgotten by the registry: the log opened next over the same files sends what
            // is on disk.
            return Ok(());
        }
        {
            let mut unsent = lock(&self.unsent);
            // What storage gave up on goes back, in frame order, before anything newer.
            let durable = self.durable_frame_no();
            let mut refused = std::mem::take(&mut *lock(&self.refused));
            refused.retain(|s| {
                s.last_committed_frame_no() > durable
                    && !unsent
                        .iter()
                        .any(|u| u.start_frame_no() == s.start_frame_no())
            });
            if !refused.is_empty() {
                warn!(namespace = %self.namespace, segments = refused.len(), "storage gave up on sealed segments; handing them over again");
                refused.extend(unsent.drain(..));
                refused.sort_by_key(|s| s.start_frame_no());
                unsent.extend(refused);
            }
        }
        loop {
            if self.retired.load(Ordering::SeqCst) || self.fenced().is_some() {
                return Ok(());
            }
            let Some(segment) = lock(&self.unsent).front().cloned() else {
                return Ok(());
            };
            // Storage reads the segment's file, and counts it durable: it must be on disk.
            self.persist_seal()?;
            let receipt = StoreReceipt {
                log: self.this.clone(),
                // Storage that keeps no remote copies never reports anything durable.
                segment: self.storage.keeps_remote_copies().then(|| segment.clone()),
            };
            let on_stored = Box::new(move |stored: Stored| receipt.stored(stored));
            futures::executor::block_on(self.storage.store(
                &self.generation,
                segment,
                None,
                on_stored,
            ))
            .map_err(|source| Error::Storage {
                namespace: self.namespace.clone(),
                source,
            })?;
            lock(&self.unsent).pop_front();
        }
    }

    /// Copies into the database file every sealed segment that may go: durable (when storage
    /// keeps remote copies), and older than every open read transaction. Writes the newest
    /// version of each page once, truncates to the database size, writes the footer, fsyncs,
    /// then forgets and deletes those segment files. Returns how many segments it checkpointed.
    pub fn checkpoint(&self) -> Result<usize> {
        self.checkpoint_when(CheckpointThreshold::EVERY_SEAL)
    }

    /// `checkpoint`, once the segments that may go reach `threshold`; else copies nothing.
    #[tracing::instrument(skip(self), fields(namespace = %self.namespace))]
    fn checkpoint_when(&self, threshold: CheckpointThreshold) -> Result<usize> {
        let _one_at_a_time = lock(&self.checkpointing);
        if self.poisoned().is_some() {
            // Opened again from disk, the log checkpoints what recovery finds there.
            return Ok(0);
        }
        // A segment is copied and deleted only once its seal is on disk: a power cut then
        // never tears a seal the database file already holds.
        self.persist_seal()?;
        // Readers registered later see a snapshot at least as new as this one.
        let (oldest_reader, snapshot) = {
            let readers = lock(&self.readers);
            let oldest = readers.keys().next().copied().unwrap_or(u64::MAX);
            (oldest, self.snapshot())
        };
        let durable_limit = if self.storage.keeps_remote_copies() {
            self.durable_frame_no()
        } else {
            u64::MAX
        };
        let eligible: Vec<_> = snapshot
            .sealed
            .iter()
            .take_while(|s| {
                let end = s.last_committed_frame_no();
                end <= durable_limit && end <= oldest_reader
            })
            .cloned()
            .collect();
        let frames: u64 = eligible.iter().map(|s| s.frame_count()).sum();
        if !threshold.is_reached(frames, eligible.len()) {
            return Ok(0);
        }
        let Some(last) = eligible.last() else {
            return Ok(0);
        };
        let end_frame_no = last.last_committed_frame_no();
        let db = self.db_file().map_err(Error::io(&self.db_path))?;
        let pages = copy_into_database(&self.namespace, &self.db_path, db, &eligible, self.log_id)?;
        self.checkpointed_frame_no
            .fetch_max(end_frame_no, Ordering::SeqCst);
        self.backfilled_frames.fetch_add(frames, Ordering::SeqCst);
        {
            let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
            let remaining: Vec<_> = state.sealed.iter().skip(eligible.len()).cloned().collect();
            state.sealed = Arc::new(remaining);
            if state.sealed.is_empty() && state.current.committed_frame_count() == 0 {
                // Everything is in the file now, which is then the truth about its size too.
                state.db_size = 0;
            }
        }
        for segment in &eligible {
            if let Err(e) = self.io.remove_file(segment.path()) {
                warn!(path = %segment.path().display(), error = %e, "cannot delete a checkpointed segment");
            }
        }
        info!(
            segments = eligible.len(),
            end_frame_no, pages, "checkpointed"
        );
        self.activity.checkpoints.fetch_add(1, Ordering::Relaxed);
        Ok(eligible.len())
    }

    /// Seals the current segment (taking the write lock like any writer), waits (at most
    /// `timeout`) until storage made everything durable if it keeps remote copies, and
    /// checkpoints everything no reader needs. A poisoned log fails with `Poisoned`: what it
    /// holds is recovered at the next open.
    pub fn shutdown(&self, timeout: Duration) -> Result<()> {
        self.seal_for_shutdown()?;
        self.send_unsent()?;
        self.finish_shutdown(Instant::now() + timeout)
    }

    /// The first step of `shutdown`: seals the current segment under the write lock (queued
    /// for storage; `send_unsent` hands it over).
    pub(crate) fn seal_for_shutdown(&self) -> Result<()> {
        let id = next_writer_id();
        self.acquire_writer(id)?;
        let sealed = self.seal_current().and_then(|()| self.persist_seal());
        self.release_writer(id);
        sealed
    }

    /// The second half of `shutdown`: waits until `deadline` for storage to make everything
    /// durable (if it keeps remote copies), then checkpoints everything no reader needs.
    pub(crate) fn finish_shutdown(&self, deadline: Instant) -> Result<()> {
        let target = self.last_committed_frame_no();
        if self.storage.keeps_remote_copies() {
            let started = Instant::now();
            while self.durable_frame_no() < target {
                if let Some(newer) = self.fenced() {
                    // Nothing more of this log becomes durable: no point in waiting.
                    return Err(Error::Fenced {
                        namespace: self.namespace.clone(),
                        generation: self.generation.number,
                        newer,
                    });
                }
                if Instant::now() >= deadline {
                    return Err(Error::DurableTimeout {
                        namespace: self.namespace.clone(),
                        frame_no: target,
                        durable_frame_no: self.durable_frame_no(),
                        waited_ms: started.elapsed().as_millis() as u64,
                    });
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        self.checkpoint()?;
        Ok(())
    }
}

/// The WAL's side of one segment handed to storage, held by its `OnStored` callback: called,
/// it records the durable frame_no; dropped uncalled (storage gave up on the segment), it puts
/// the segment back for the next hand-over, so no refusal goes unnoticed.
struct StoreReceipt<I: Io, S: Storage<File = I::File>> {
    /// The log the segment belongs to.
    log: Weak<SharedWal<I, S>>,
    /// The segment, until storage reports it durable.
    segment: Option<Arc<SealedSegment<I::File>>>,
}

impl<I: Io, S: Storage<File = I::File>> StoreReceipt<I, S> {
    /// Storage made the log durable up to a frame_no, or found the log fenced off.
    fn stored(mut self, stored: Stored) {
        self.segment = None;
        let Some(shared) = self.log.upgrade() else {
            return;
        };
        match stored {
            Stored::Durable(frame_no) => {
                shared
                    .durable_frame_no
                    .fetch_max(frame_no, Ordering::SeqCst);
                shared.request_checkpoint();
            }
            Stored::Fenced { newer } => {
                if shared.fenced.set(newer).is_ok() {
                    tracing::error!(generation = %shared.generation, newer, "fenced off: generation {newer} took the namespace over; the log takes no more writes");
                }
            }
        }
    }
}

impl<I: Io, S: Storage<File = I::File>> Drop for StoreReceipt<I, S> {
    fn drop(&mut self) {
        let (Some(segment), Some(shared)) = (self.segment.take(), self.log.upgrade()) else {
            return;
        };
        warn!(namespace = %shared.namespace, end = segment.last_committed_frame_no(), "storage gave up on a sealed segment; it is handed over again");
        lock(&shared.refused).push(segment);
    }
}

impl<I: Io, S: Storage<File = I::File>> CheckpointJob for SharedWal<I, S> {
    fn run_checkpoint(&self) {
        self.checkpoint_queued.store(false, Ordering::SeqCst);
        if let Err(e) = self.checkpoint_when(self.checkpoint_after) {
            warn!(namespace = %self.namespace, error = %e, "background checkpoint failed");
        }
    }
}

/// Copies the newest version of every page in `segments` (the log's oldest segments, in order)
/// into the database file `db` and syncs it, then writes the footer saying the file holds log
/// `log_id` up to the last segment's end and syncs it again. Returns the number of pages
/// written.
///
/// The footer goes only after the pages are durable: the next open deletes every segment the
/// footer says the file holds, and a footer on disk before its pages would take those pages
/// with them.
fn copy_into_database<F: FileExt>(
    namespace: &NamespaceName,
    db_path: &Path,
    db: &F,
    segments: &[Arc<SealedSegment<F>>],
    log_id: Uuid,
) -> Result<usize> {
    let Some(last) = segments.last() else {
        return Ok(0);
    };
    let size_after = last.size_after();
    let end_frame_no = last.last_committed_frame_no();
    let io_err = Error::io(db_path);
    let seg_err = Error::segment(namespace);
    // The newest version of every page, in page order: runs of consecutive pages go to the
    // file with one write each.
    let indexes: Vec<&PageIndex> = segments.iter().map(|s| s.index()).collect();
    let mut pages: Vec<(u32, usize)> = newest_versions(&indexes, size_after)
        .into_iter()
        .map(|(page_no, (segment, _))| (page_no, segment))
        .collect();
    pages.sort_unstable();
    let mut run: Vec<u8> = Vec::with_capacity(CHECKPOINT_RUN_PAGES * PAGE_SIZE);
    let mut run_start = 0;
    for (i, &(page_no, segment)) in pages.iter().enumerate() {
        if run.is_empty() {
            run_start = page_no;
        }
        let at = run.len();
        run.resize(at + PAGE_SIZE, 0);
        segments[segment]
            .read_page(page_no, &mut run[at..])
            .map_err(seg_err)?;
        let run_ends = pages
            .get(i + 1)
            .is_none_or(|&(next, _)| next != page_no + 1)
            || run.len() >= CHECKPOINT_RUN_PAGES * PAGE_SIZE;
        if run_ends {
            db.write_all_at(&run, u64::from(run_start - 1) * PAGE_SIZE as u64)
                .map_err(io_err)?;
            run.clear();
        }
    }
    db.sync_data().map_err(io_err)?;
    let footer = Footer {
        replication_index: end_frame_no,
        log_id,
    };
    write_after_pages(db, size_after, &footer).map_err(io_err)?;
    db.sync_data().map_err(io_err)?;
    Ok(pages.len())
}

/// Returns the directory of the segment files of the database at `db_path`:
/// `{db_path}-segments/` (not `-wal`, which is SQLite's own WAL file name).
pub(crate) fn segment_dir(db_path: &Path) -> PathBuf {
    let mut name = db_path.as_os_str().to_os_string();
    name.push("-segments");
    PathBuf::from(name)
}

/// Fails with `Discontiguous` unless a segment starting at `start_frame_no` follows a log that
/// ends at `previous_end` (`None`: nothing is known before it, and any start follows).
fn check_follows(
    namespace: &NamespaceName,
    path: &Path,
    start_frame_no: u64,
    previous_end: Option<u64>,
) -> Result<()> {
    match previous_end {
        Some(end) if start_frame_no != end + 1 => Err(Error::Discontiguous {
            namespace: namespace.clone(),
            path: path.to_path_buf(),
            start_frame_no,
            previous_end: end,
        }),
        _ => Ok(()),
    }
}

/// Name of the file, in the segment directory, that marks a database file being restored in
/// place: while it exists the file's content is not to be trusted.
const RESTORE_MARKER: &str = "restoring";

/// The end of a spare file's name in the segment directory (see `SharedWal::spare`): not a
/// segment name, so a listing of segments never sees it. The open takes one a log before this
/// one left (`adopt_spare`) and removes the others.
const SPARE_SUFFIX: &str = ".spare";

/// What `SharedWal::open` knows, once it recovered the local segments, to decide whether the
/// database must come from storage.
///
/// A namespace with no local log and an empty database file takes its database from storage (a
/// new machine taking over a tenant); a database file with no local log that storage is ahead of
/// catches up by applying only the newer segments; a restore cut short is started over from
/// scratch. A namespace with a local log (a segment holding a committed frame) is left to it:
/// its frames are newer than or the same as what storage holds, and go to storage again if they
/// are not durable yet. If storage is ahead of that log, another machine wrote the namespace
/// after this one last did, and the two histories may differ: the open fails with
/// `BehindStorage` rather than guess which to keep.
struct CatchUp<'a> {
    namespace: &'a NamespaceName,
    db_path: &'a Path,
    /// The segment directory (where the restore marker lives).
    dir: &'a Path,
    /// The database file's footer.
    footer: Option<FooterInfo>,
    /// The last committed frame of the local log, if it holds any.
    local_log_end: Option<u64>,
    /// The highest frame_no storage holds.
    durable_frame_no: u64,
    /// The namespace's generations, as the open read them.
    lineage: &'a Lineage,
    /// Whether the open may write the file from storage (`RegistryConfig::may_claim`).
    may_claim: bool,
}

impl CatchUp<'_> {
    /// Restores or catches the database file up from `storage` if it must; returns true if it
    /// wrote the file.
    fn run<S: Storage>(&self, storage: &S) -> Result<bool> {
        let (namespace, durable) = (self.namespace, self.durable_frame_no);
        let marker = self.dir.join(RESTORE_MARKER);
        let base = if marker.exists() {
            warn!(%namespace, "a restore of this database was cut short; restoring it from scratch");
            None
        } else if let Some(local_frame_no) = self.local_log_end {
            if durable > local_frame_no {
                return Err(Error::BehindStorage {
                    namespace: namespace.clone(),
                    local_frame_no,
                    durable_frame_no: durable,
                });
            }
            return Ok(false);
        } else if let Some(footer) = self.footer {
            if durable <= footer.replication_index {
                return Ok(false);
            }
            info!(%namespace, local = footer.replication_index, durable, "catching up from storage");
            Some(Base {
                after_frame_no: footer.replication_index,
                log_id: footer.log_id,
            })
        } else if holds_no_schema(self.db_path)? {
            None
        } else {
            // A database this log never checkpointed (no footer): it starts a new log.
            return Ok(false);
        };
        // With nothing stored there is nothing to restore (and nothing is written).
        if !self.may_claim && (base.is_some() || durable > 0 || marker.exists()) {
            return Err(Error::WouldClaim {
                namespace: namespace.clone(),
                what: if marker.exists() {
                    "start over a restore of it that was cut short"
                } else {
                    "restore the database from storage, which is ahead of it"
                },
            });
        }
        let Some(report) = restore_in_place(
            storage,
            namespace,
            self.db_path,
            base,
            &marker,
            self.lineage,
            RestoreTarget::Latest,
        )?
        else {
            return Ok(false);
        };
        info!(
            %namespace,
            end_frame_no = report.end_frame_no,
            pages = report.db_pages,
            objects = report.objects_fetched,
            "database restored from storage"
        );
        Ok(true)
    }
}

/// Returns true if the database file at `db_path` is missing, empty, or the single page SQLite
/// writes when it creates a database (switching it to WAL mode): page 1 with an empty schema
/// table. Such a file holds nothing a restore could lose.
fn holds_no_schema(db_path: &Path) -> Result<bool> {
    use std::io::Read;
    // One byte past a page tells a one-page file from a longer one: no more is read.
    let mut bytes = Vec::with_capacity(PAGE_SIZE + 1);
    match std::fs::File::open(db_path) {
        Ok(file) => {
            file.take(PAGE_SIZE as u64 + 1)
                .read_to_end(&mut bytes)
                .map_err(Error::io(db_path))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(true),
        Err(e) => return Err(Error::io(db_path)(e)),
    }
    if bytes.len() > PAGE_SIZE {
        return Ok(false);
    }
    // Page 1: the 100-byte file header, then the schema table's b-tree page header: type 13 (a
    // table leaf) and its cell count (bytes 3..5 of that header).
    Ok(bytes.is_empty()
        || (bytes.len() == PAGE_SIZE && bytes[100] == 13 && bytes[103] == 0 && bytes[104] == 0))
}

/// Returns where the history a takeover continues from (`fork`) really ends, if past the fork:
/// the end of the first generation back from `fork` that holds segments of its own, when its
/// writer stored frames past the point the history takes from it. Generations claimed by a
/// takeover that then stored nothing (it failed or crashed before it relisted) are walked
/// through, so what their claim did not see is not lost either; a generation a rewind started
/// is not (its point is exact: its parent's frames past it are a dead branch). One listing per
/// generation walked.
fn grown_past_fork<S: Storage>(
    storage: &S,
    lineage: &Lineage,
    namespace: &NamespaceName,
    fork: ForkPoint,
) -> Result<Option<ForkPoint>> {
    let mut at = fork;
    loop {
        let Some(record) = lineage.get(at.generation) else {
            return Ok(None);
        };
        let GenerationKind::Log {
            log_id,
            parent,
            rewound,
            ..
        } = record.kind
        else {
            return Ok(None);
        };
        let generation = Generation {
            namespace: namespace.clone(),
            number: record.number,
            log_id,
        };
        let end = futures::executor::block_on(storage.find_segment(
            &generation,
            FindSegment::EndingAtOrBefore(u64::MAX),
            None,
        ))
        .map_err(|source| Error::Storage {
            namespace: namespace.clone(),
            source,
        })?
        .map(|k| k.end_frame_no);
        match (end, parent) {
            // A rewind's point is exact: what its parent holds past it is a dead branch.
            (None, Some(parent)) if !rewound => at = parent,
            (Some(end), _) if end > at.frame_no => {
                return Ok(Some(ForkPoint {
                    generation: at.generation,
                    frame_no: end,
                }))
            }
            _ => return Ok(None),
        }
    }
}

/// Checkpoints a whole local log, `sealed` then `current` (sealed first), into the database
/// file at `db_path` and removes its segment files. Returns the footer the file then ends with;
/// `None` (and the file untouched) when the log holds no frame.
fn fold_into_database<I: Io>(
    namespace: &NamespaceName,
    io: &I,
    db_path: &Path,
    mut sealed: Vec<Arc<SealedSegment<I::File>>>,
    current: Option<CurrentSegment<I::File>>,
    log_id: Uuid,
) -> Result<Option<FooterInfo>> {
    if let Some(current) = current {
        match current.seal(io.now()).map_err(Error::segment(namespace))? {
            Some(segment) => sealed.push(Arc::new(segment)),
            None => remove_segment(io, current)?,
        }
    }
    let Some(end) = sealed.last().map(|s| s.last_committed_frame_no()) else {
        return Ok(None);
    };
    let db = io
        .open(db_path, OpenMode::ReadWrite)
        .map_err(Error::io(db_path))?;
    let pages = copy_into_database(namespace, db_path, &db, &sealed, log_id)?;
    for segment in &sealed {
        io.remove_file(segment.path())
            .map_err(Error::io(segment.path()))?;
    }
    info!(
        segments = sealed.len(),
        end_frame_no = end,
        pages,
        "a local log storage never had went into the database file"
    );
    Ok(Some(FooterInfo {
        replication_index: end,
        log_id,
    }))
}

/// Closes `segment` and removes its file.
fn remove_segment<I: Io>(io: &I, segment: CurrentSegment<I::File>) -> Result<()> {
    let path = segment.path().to_path_buf();
    drop(segment);
    io.remove_file(&path).map_err(Error::io(&path))
}

/// Writes every page of the database file at `db_path` (its `FOOTER_SIZE` footer excluded when
/// `has_footer`) as one committed transaction at the start of the current segment, which is
/// created at `start_frame_no` for `log_id` if `current` is not already that (an empty current
/// segment of another start or log is removed). Returns the current segment; `None` (and
/// `current` as it was) when the file holds no page.
fn base_snapshot<I: Io>(
    namespace: &NamespaceName,
    io: &I,
    db_path: &Path,
    current: Option<CurrentSegment<I::File>>,
    start_frame_no: u64,
    log_id: Uuid,
    has_footer: bool,
) -> Result<Option<CurrentSegment<I::File>>> {
    use std::io::Read;
    let seg_err = Error::segment(namespace);
    let len = match std::fs::metadata(db_path) {
        Ok(meta) => meta.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(Error::io(db_path)(e)),
    };
    let len = if has_footer {
        len.saturating_sub(FOOTER_SIZE as u64)
    } else {
        len
    };
    let pages = u32::try_from(len / PAGE_SIZE as u64).unwrap_or(u32::MAX);
    if pages == 0 {
        return Ok(current);
    }
    let segment = match current {
        Some(c) if c.log_id() == log_id && c.start_frame_no() == start_frame_no => c,
        other => {
            if let Some(other) = other {
                remove_segment(io, other)?;
            }
            CurrentSegment::create(
                io,
                &segment_path(&segment_dir(db_path), start_frame_no),
                start_frame_no,
                log_id,
            )
            .map_err(seg_err)?
        }
    };
    let mut file = std::fs::File::open(db_path).map_err(Error::io(db_path))?;
    const CHUNK: u32 = 256;
    let mut buf = vec![0; CHUNK as usize * PAGE_SIZE];
    let mut page_no = 1;
    while page_no <= pages {
        let n = CHUNK.min(pages - page_no + 1);
        let bytes = &mut buf[..n as usize * PAGE_SIZE];
        file.read_exact(bytes).map_err(Error::io(db_path))?;
        let last = page_no + n - 1;
        let frames = bytes
            .chunks_exact(PAGE_SIZE)
            .zip(page_no..)
            .map(|(page, no)| (no, page));
        segment
            .insert_frames(frames, (last == pages).then_some(pages))
            .map_err(seg_err)?;
        page_no = last + 1;
    }
    segment.sync().map_err(seg_err)?;
    info!(
        pages,
        start_frame_no, "the database's pages start the new history"
    );
    Ok(Some(segment))
}

/// What an open with remote storage does with the namespace's history in the bucket.
enum Claim {
    /// The local log is of the newest generation: it goes on writing it.
    Continue(Generation),
    /// The database was restored from the newest history: a new generation continues from
    /// its end, fencing off whoever wrote before.
    TakeOver,
    /// A log that no generation knows (a new database, or one made elsewhere): a generation of
    /// its own, with no parent; restores follow it from now on.
    NewHistory,
}

/// What `read_footer` found at the end of a checkpointed database file.
#[derive(Debug, Clone, Copy)]
struct FooterInfo {
    /// The last frame_no copied into the file.
    replication_index: u64,
    /// The log the frames came from.
    log_id: Uuid,
}

/// Reads the footer of a checkpointed database file, if the file ends with a valid one.
fn read_footer<I: Io>(io: &I, db_path: &Path) -> Result<Option<FooterInfo>> {
    let file = match io.open(db_path, OpenMode::Read) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(Error::Io {
                path: db_path.to_path_buf(),
                source,
            })
        }
    };
    let io_err = Error::io(db_path);
    let len = file.size().map_err(io_err)?;
    if len % PAGE_SIZE as u64 != FOOTER_SIZE as u64 {
        return Ok(None);
    }
    let mut buf = [0; FOOTER_SIZE];
    file.read_exact_at(&mut buf, len - FOOTER_SIZE as u64)
        .map_err(io_err)?;
    Ok(Footer::decode(&buf).map(|footer| FooterInfo {
        replication_index: footer.replication_index,
        log_id: footer.log_id,
    }))
}
