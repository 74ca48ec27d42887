//! The current segment: the one appendable segment of a log. It appends the frames of write
//! transactions, keeps an in-memory index of every version of every page so readers at older
//! snapshots keep their view, recovers after a crash, and seals itself into a `SealedSegment`.
//!
//! Concurrency: one writer (the caller serialises write transactions) and any number of readers
//! share a `CurrentSegment` through `&self`. Readers only ever read committed frames at or below
//! their snapshot, which are never rewritten, so page reads happen outside the lock. Whatever
//! changes the frames holds `appending`; an append computes its checksums and writes its frames
//! holding only that, and takes the state lock for the index update alone, so a reader never
//! waits for a writer's I/O (nor for a writer preempted in the middle of it).
//!
//! Failure: a failed write or fsync is returned to the caller and leaves the in-memory state at
//! the last good frame; the frames of the failed call are not part of the segment, and the next
//! write goes to the same place. On disk, recovery keeps exactly the frames up to the last
//! complete commit frame.

use std::io::IoSlice;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use chrono::{DateTime, Utc};
use rustc_hash::FxHashMap;
use tracing::{debug, info, warn};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::format::{
    check_page_buffer, read_header, FrameHeader, SegmentHeader, FRAME_HEADER_SIZE, FRAME_SIZE,
    PAGE_SIZE, SEGMENT_AFTER_DURABLE_SEAL, SEGMENT_SEALED,
};
use crate::index::PageIndex;
use crate::io::{FileExt, Io, OpenMode};
use crate::scan::{frame_offset, scan_frames, FrameMeta};
use crate::sealed::SealedSegment;

/// What `CurrentSegment::recover` found and repaired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoveryReport {
    /// frame_no of the last commit kept (`start_frame_no - 1` when none was).
    pub last_committed_frame_no: u64,
    /// Frames that were kept.
    pub kept_frames: u64,
    /// Frame slots dropped after the last commit: uncommitted frames, a torn frame, garbage.
    pub dropped_frames: u64,
    /// Bytes cut off the end of the file.
    pub truncated_bytes: u64,
}

/// Granularity of `CurrentSegment::preallocate`: 1 MiB.
const PREALLOCATION_STEP: u64 = 1 << 20;

/// Marks a frame that is the oldest version of its page in the segment.
const NO_VERSION: u32 = u32::MAX;

/// The mutable part of a current segment, behind its lock.
///
/// The versions of a page form a chain from its newest frame back through `previous_version`.
/// A reader at the latest snapshot finds its version in one step; a reader far behind a page
/// that is written at every commit walks one step per newer version.
#[derive(Debug)]
struct State {
    /// Every frame written, committed or not, in file order.
    frames: Vec<FrameMeta>,
    /// For each frame, the position of the previous version of its page, or `NO_VERSION`.
    previous_version: Vec<u32>,
    /// page_no -> position of its newest version (committed or not).
    newest: FxHashMap<u32, u32>,
    /// Number of leading frames that are committed.
    committed: usize,
    /// Database size in pages after the last commit.
    size_after: u32,
    /// `committed` and `size_after` before the last commit, for `undo_last_commit`.
    before_last_commit: Option<(usize, u32)>,
    /// End of the bytes of the file known to be written (frames, or zeros from `preallocate`).
    written_end: u64,
    /// Set once the segment is sealed; no frame may be appended after.
    sealed: bool,
}

impl State {
    fn from_frames(frames: Vec<FrameMeta>, committed: usize, size_after: u32) -> Self {
        let mut state = State {
            frames: Vec::with_capacity(frames.len()),
            previous_version: Vec::with_capacity(frames.len()),
            newest: FxHashMap::default(),
            committed,
            size_after,
            before_last_commit: None,
            written_end: 0,
            sealed: false,
        };
        for frame in frames {
            state.push(frame);
        }
        state.written_end = frame_offset(state.frames.len());
        state
    }

    /// Appends a frame to the in-memory state. Positions fit in a `u32`: `insert_frames` refuses
    /// to grow a segment past that.
    fn push(&mut self, frame: FrameMeta) {
        let position = self.frames.len() as u32;
        let previous = self.newest.insert(frame.page_no, position);
        self.previous_version.push(previous.unwrap_or(NO_VERSION));
        self.frames.push(frame);
    }

    /// Drops every frame from `position` on from the in-memory state.
    fn truncate(&mut self, position: usize) {
        while self.frames.len() > position {
            let (Some(frame), Some(previous)) = (self.frames.pop(), self.previous_version.pop())
            else {
                break;
            };
            if previous == NO_VERSION {
                self.newest.remove(&frame.page_no);
            } else {
                self.newest.insert(frame.page_no, previous);
            }
        }
    }

    /// Returns the position of the newest version of `page_no` at or below `max_frame_no`.
    fn visible(&self, page_no: u32, max_frame_no: u64) -> Option<usize> {
        let mut position = *self.newest.get(&page_no)?;
        loop {
            let frame = self.frames.get(position as usize)?;
            if frame.frame_no <= max_frame_no {
                return Some(position as usize);
            }
            position = *self.previous_version.get(position as usize)?;
        }
    }
}

/// Where a frame sits in a current segment's file, as `CurrentSegment::locate_frame` found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FramePosition(usize);

/// The appendable segment of a log.
#[derive(Debug)]
pub struct CurrentSegment<F> {
    /// Where the segment lives.
    path: PathBuf,
    /// The open file, shared with the `SealedSegment` this one turns into.
    file: Arc<F>,
    /// The header as written at creation.
    header: SegmentHeader,
    /// Frames and index.
    state: RwLock<State>,
    /// Held by whatever changes the frames or the file past them (appends, rollbacks, seals,
    /// cuts, preallocation), before `state`.
    appending: Mutex<()>,
}

impl<F: FileExt> CurrentSegment<F> {
    /// Creates an empty segment at `path` whose first frame will be `start_frame_no`.
    ///
    /// The header is written to a temporary sibling, fsynced, and renamed into place (then the
    /// directory is fsynced), so `path` either does not exist or holds a valid header.
    #[tracing::instrument(skip(io), level = "debug")]
    pub fn create<I: Io<File = F>>(
        io: &I,
        path: &Path,
        start_frame_no: u64,
        log_id: Uuid,
    ) -> Result<Self> {
        let header = Self::new_header(io, path, start_frame_no, log_id)?;
        let tmp = path.with_extension("creating");
        match io.remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&tmp, e)),
        }
        let file = io
            .open(&tmp, OpenMode::CreateNew)
            .map_err(|e| Error::io(&tmp, e))?;
        file.write_all_at(&header.encode(), 0)
            .map_err(|e| Error::io(&tmp, e))?;
        file.sync_data().map_err(|e| Error::io(&tmp, e))?;
        io.rename(&tmp, path).map_err(|e| Error::io(path, e))?;
        if let Some(dir) = path.parent() {
            io.sync_dir(dir).map_err(|e| Error::io(dir, e))?;
        }
        Ok(Self::empty(path, file, header))
    }

    /// Creates an empty segment at `path` like `create`, but syncs nothing: the file is created
    /// new (never replacing one) and its header written, that is all. For a segment made on the
    /// commit path, whose durability comes later: its header with its first fsync (`sync` at a
    /// commit, or `seal`), its name with the caller's sync of the directory. Until then a power
    /// loss may leave the file missing, shorter than a header or with a zeroed header, which
    /// `open_segment` reports as `OpenedSegment::Unwritten` (it held nothing durable).
    #[tracing::instrument(skip(io), level = "debug")]
    pub fn create_unsynced<I: Io<File = F>>(
        io: &I,
        path: &Path,
        start_frame_no: u64,
        log_id: Uuid,
    ) -> Result<Self> {
        let file = io
            .open(path, OpenMode::CreateNew)
            .map_err(|e| Error::io(path, e))?;
        Self::create_unsynced_in(io, file, path, start_frame_no, log_id)
    }

    /// `create_unsynced` over `file`, an empty file already at `path` (made ahead of need, off
    /// the commit path, and renamed there): writes its header, that is all.
    pub fn create_unsynced_in<I: Io<File = F>>(
        io: &I,
        file: F,
        path: &Path,
        start_frame_no: u64,
        log_id: Uuid,
    ) -> Result<Self> {
        let header = match Self::new_header(io, path, start_frame_no, log_id) {
            Ok(header) => header,
            Err(e) => {
                drop(file);
                let _ = io.remove_file(path);
                return Err(e);
            }
        };
        if let Err(e) = file.write_all_at(&header.encode(), 0) {
            // A file without its header must not stand in the way of the next try.
            drop(file);
            if let Err(removing) = io.remove_file(path) {
                warn!(path = %path.display(), error = %removing, "cannot remove a segment whose header could not be written");
            }
            return Err(Error::io(path, e));
        }
        Ok(Self::empty(path, file, header))
    }

    /// Returns the header of a new segment at `path` starting at `start_frame_no`.
    fn new_header<I: Io<File = F>>(
        io: &I,
        path: &Path,
        start_frame_no: u64,
        log_id: Uuid,
    ) -> Result<SegmentHeader> {
        if start_frame_no == 0 {
            return Err(Error::invalid_state(path, "frames are numbered from 1"));
        }
        Ok(SegmentHeader {
            flags: 0,
            start_frame_no,
            last_committed_frame_no: start_frame_no - 1,
            frame_count: 0,
            size_after: 0,
            page_size: PAGE_SIZE as u32,
            index_offset: 0,
            index_size: 0,
            salt: io.random_u32(),
            log_id,
            sealed_at_ms: 0,
        })
    }

    /// Returns a segment with no frame over `file`, whose header is `header`.
    fn empty(path: &Path, file: F, header: SegmentHeader) -> Self {
        CurrentSegment {
            path: path.to_path_buf(),
            file: Arc::new(file),
            header,
            state: RwLock::new(State::from_frames(Vec::new(), 0, 0)),
            appending: Mutex::new(()),
        }
    }

    /// Opens an unsealed segment after a crash or a clean stop: scans its frames, keeps every
    /// frame up to the last complete commit frame, truncates the rest of the file (a torn frame,
    /// uncommitted frames, a half-written index) and rebuilds the in-memory index.
    ///
    /// Fails with `Corrupt` if the header is damaged, and with `InvalidState` if the segment is
    /// sealed (open it with `SealedSegment::open`).
    #[tracing::instrument(skip(io), level = "debug")]
    pub fn recover<I: Io<File = F>>(io: &I, path: &Path) -> Result<(Self, RecoveryReport)> {
        let file = io
            .open(path, OpenMode::ReadWrite)
            .map_err(|e| Error::io(path, e))?;
        Self::recover_file(file, path)
    }

    /// Opens a segment whose header says `SEALED` but which does not validate (a seal cut
    /// short): puts back the header it had before the seal (same start, salt and log), synced,
    /// then recovers it as `recover` does. The stale sealed header must go before any frame is
    /// appended: it describes frames that appending overwrites.
    pub fn recover_torn_seal<I: Io<File = F>>(
        io: &I,
        path: &Path,
    ) -> Result<(Self, RecoveryReport)> {
        let file = io
            .open(path, OpenMode::ReadWrite)
            .map_err(|e| Error::io(path, e))?;
        let sealed = read_header(&file, path)?;
        let unsealed = SegmentHeader {
            flags: sealed.flags & !SEGMENT_SEALED,
            last_committed_frame_no: sealed.start_frame_no - 1,
            frame_count: 0,
            size_after: 0,
            index_offset: 0,
            index_size: 0,
            sealed_at_ms: 0,
            ..sealed
        };
        file.write_all_at(&unsealed.encode(), 0)
            .and_then(|()| file.sync_data())
            .map_err(|e| Error::io(path, e))?;
        Self::recover_file(file, path)
    }

    /// Recovers the unsealed segment in `file` (opened for reading and writing), as `recover`
    /// does; `path` names it in errors.
    pub fn recover_file(file: F, path: &Path) -> Result<(Self, RecoveryReport)> {
        let header = read_header(&file, path)?;
        if header.is_sealed() {
            return Err(Error::invalid_state(
                path,
                "segment is sealed: open it as a sealed segment",
            ));
        }
        let len = file.size().map_err(|e| Error::io(path, e))?;
        let mut scan = scan_frames(&file, path, &header, len)?;
        scan.frames.truncate(scan.committed);
        let kept_end = frame_offset(scan.committed);
        // Zeros at the end are preallocated space, not lost frames.
        let data_end = end_of_nonzero_bytes(&file, path, kept_end, len)?;
        let report = RecoveryReport {
            last_committed_frame_no: scan
                .frames
                .last()
                .map_or(header.start_frame_no - 1, |f| f.frame_no),
            kept_frames: scan.committed as u64,
            dropped_frames: (data_end - kept_end).div_ceil(FRAME_SIZE as u64),
            truncated_bytes: len - kept_end,
        };
        if report.dropped_frames > 0 {
            let reason = scan.stop.as_ref().map_or("uncommitted frames", |s| &s.what);
            warn!(
                path = %path.display(),
                dropped_frames = report.dropped_frames,
                truncated_bytes = report.truncated_bytes,
                reason,
                "recovery dropped frames after the last commit"
            );
        }
        if report.truncated_bytes > 0 {
            file.set_len(kept_end).map_err(|e| Error::io(path, e))?;
            file.sync_data().map_err(|e| Error::io(path, e))?;
        }
        info!(path = %path.display(), kept_frames = report.kept_frames, "segment recovered");
        let segment = CurrentSegment {
            path: path.to_path_buf(),
            file: Arc::new(file),
            header,
            state: RwLock::new(State::from_frames(
                scan.frames,
                scan.committed,
                scan.size_after,
            )),
            appending: Mutex::new(()),
        };
        Ok((segment, report))
    }

    fn read_state(&self) -> RwLockReadGuard<'_, State> {
        // A panic while holding the lock leaves the state at the last consistent point: every
        // mutation is done after the I/O it depends on succeeded.
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_state(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn appending(&self) -> MutexGuard<'_, ()> {
        self.appending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Returns the segment's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Returns the header as written at creation.
    pub fn header(&self) -> &SegmentHeader {
        &self.header
    }

    /// Returns the id of the log this segment belongs to.
    pub fn log_id(&self) -> Uuid {
        self.header.log_id
    }

    /// Returns the frame_no of the first frame of the segment.
    pub fn start_frame_no(&self) -> u64 {
        self.header.start_frame_no
    }

    /// Returns the frame_no of the last committed frame, or `start_frame_no - 1` if none is.
    pub fn last_committed_frame_no(&self) -> u64 {
        let state = self.read_state();
        last_committed(&self.header, &state)
    }

    /// Returns the frame_no of the last frame written, committed or not (`start_frame_no - 1`
    /// when the segment is empty): a savepoint of the transaction in progress.
    pub fn last_written_frame_no(&self) -> u64 {
        self.read_state()
            .frames
            .last()
            .map_or(self.header.start_frame_no - 1, |f| f.frame_no)
    }

    /// Returns the database size in pages after the last commit (0 if nothing is committed).
    pub fn size_after(&self) -> u32 {
        self.read_state().size_after
    }

    /// Returns the number of committed frames.
    pub fn committed_frame_count(&self) -> u64 {
        self.read_state().committed as u64
    }

    /// Returns the pages of the committed frames numbered above `after` and at most
    /// `max_frame_no`, each once, in page order: what a replica at `after` lacks of this
    /// segment, as of a snapshot at `max_frame_no`.
    pub fn pages_written_between(&self, after: u64, max_frame_no: u64) -> Vec<u32> {
        let state = self.read_state();
        let committed = &state.frames[..state.committed];
        let from = committed.partition_point(|f| f.frame_no <= after);
        let mut pages: Vec<u32> = committed[from..]
            .iter()
            .take_while(|f| f.frame_no <= max_frame_no)
            .map(|f| f.page_no)
            .collect();
        pages.sort_unstable();
        pages.dedup();
        pages
    }

    /// Returns the number of bytes the committed frames take in the file (header included).
    pub fn committed_len(&self) -> u64 {
        frame_offset(self.read_state().committed)
    }

    /// Returns true once `seal` succeeded.
    pub fn is_sealed(&self) -> bool {
        self.read_state().sealed
    }

    /// Returns true while frames written since the last commit are pending.
    pub fn in_transaction(&self) -> bool {
        let state = self.read_state();
        state.frames.len() > state.committed
    }

    /// Appends one frame per `(page_no, page)` of a write transaction. With `commit =
    /// Some(size_after)` the last frame commits the transaction, with the database then
    /// `size_after` pages long. Returns the frame_no of the last frame written.
    ///
    /// The frames are written with one positional vectored write, without fsync (see `sync`). On error
    /// nothing of this call is part of the segment.
    #[tracing::instrument(level = "trace", skip_all, fields(path = %self.path.display()))]
    pub fn insert_frames<'a>(
        &self,
        pages: impl IntoIterator<Item = (u32, &'a [u8])>,
        commit: Option<u32>,
    ) -> Result<u64> {
        let _appending = self.appending();
        let (first, first_frame_no, mut previous) = {
            let state = self.read_state();
            if state.sealed {
                return Err(Error::invalid_state(
                    &self.path,
                    "cannot append to a sealed segment",
                ));
            }
            let last = state.frames.last();
            (
                state.frames.len(),
                last.map_or(Some(self.header.start_frame_no), |f| {
                    f.frame_no.checked_add(1)
                }),
                last.map_or(self.header.salt, |f| f.checksum),
            )
        };
        let pages: Vec<(u32, &[u8])> = pages.into_iter().collect();
        for &(page_no, page) in &pages {
            if page.len() != PAGE_SIZE {
                return Err(Error::invalid_state(
                    &self.path,
                    format!(
                        "page {page_no} is {} bytes, pages are {PAGE_SIZE}",
                        page.len()
                    ),
                ));
            }
            if page_no == 0 {
                return Err(Error::invalid_state(&self.path, "page numbers start at 1"));
            }
        }
        if pages.is_empty() {
            return Err(Error::invalid_state(&self.path, "no frame to append"));
        }
        let Some(first_frame_no) =
            first_frame_no.filter(|first| first.checked_add(pages.len() as u64).is_some())
        else {
            return Err(Error::invalid_state(
                &self.path,
                "frame numbers are exhausted",
            ));
        };
        if first + pages.len() > NO_VERSION as usize {
            return Err(Error::invalid_state(
                &self.path,
                "segment cannot hold more frames",
            ));
        }
        let mut metas = Vec::with_capacity(pages.len());
        let mut headers = Vec::with_capacity(pages.len());
        for (i, &(page_no, page)) in pages.iter().enumerate() {
            let frame_no = first_frame_no + i as u64;
            let header = FrameHeader {
                checksum: 0,
                page_no,
                size_after: if i + 1 == pages.len() {
                    commit.unwrap_or(0)
                } else {
                    0
                },
                flags: 0,
                frame_no,
            };
            let (encoded, checksum) = header.encode(previous, page);
            previous = checksum;
            headers.push(encoded);
            metas.push(FrameMeta {
                frame_no,
                page_no,
                checksum,
            });
        }
        let mut slices: Vec<IoSlice<'_>> = headers
            .iter()
            .zip(&pages)
            .flat_map(|(header, &(_, page))| [IoSlice::new(header), IoSlice::new(page)])
            .collect();
        self.file
            .write_all_vectored_at(&mut slices, frame_offset(first))
            .map_err(|e| Error::io(&self.path, e))?;
        let mut state = self.write_state();
        for meta in metas {
            state.push(meta);
        }
        state.written_end = state.written_end.max(frame_offset(state.frames.len()));
        if let Some(size_after) = commit {
            state.before_last_commit = Some((state.committed, state.size_after));
            state.committed = state.frames.len();
            state.size_after = size_after;
        }
        Ok(first_frame_no + pages.len() as u64 - 1)
    }

    /// Drops the frames written after `frame_no` by the transaction in progress (a savepoint
    /// rollback). `frame_no` must not be below the last committed frame.
    #[tracing::instrument(level = "trace", skip_all, fields(path = %self.path.display()))]
    pub fn rollback_to(&self, frame_no: u64) -> Result<()> {
        let _appending = self.appending();
        let mut state = self.write_state();
        let committed = last_committed(&self.header, &state);
        if frame_no < committed {
            return Err(Error::invalid_state(
                &self.path,
                format!("cannot roll back to frame {frame_no}: frame {committed} is committed"),
            ));
        }
        let keep = state.frames.partition_point(|f| f.frame_no <= frame_no);
        state.truncate(keep);
        Ok(())
    }

    /// Takes back the last commit, for a commit that failed after its frames were written (its
    /// fsync failed) and that nobody was told about: drops its frames from memory and cuts them
    /// off the file (and syncs the cut), so neither readers nor recovery see them. Only the last commit can be
    /// taken back, and only while no frame follows it.
    pub fn undo_last_commit(&self) -> Result<()> {
        let _appending = self.appending();
        let mut state = self.write_state();
        let Some((committed, size_after)) = state.before_last_commit.take() else {
            return Err(Error::invalid_state(&self.path, "no commit to take back"));
        };
        if state.sealed || state.frames.len() != state.committed {
            return Err(Error::invalid_state(
                &self.path,
                "the last commit can only be taken back before anything follows it",
            ));
        }
        state.truncate(committed);
        state.committed = committed;
        state.size_after = size_after;
        state.written_end = frame_offset(committed);
        drop(state);
        // Synced: a crash after the caller reported the commit as failed must not bring it back.
        self.cut_after_committed_appending()
    }

    /// Cuts the file right after the committed frames and syncs the cut: what
    /// `undo_last_commit` does on disk, to be tried again when it failed there (else the frames
    /// taken back from memory are still in the file, and the next recovery finds them).
    /// Fails with `InvalidState` once sealed or while a transaction is in progress.
    pub fn cut_after_committed(&self) -> Result<()> {
        let _appending = self.appending();
        self.cut_after_committed_appending()
    }

    /// `cut_after_committed`, with `appending` held.
    fn cut_after_committed_appending(&self) -> Result<()> {
        let state = self.read_state();
        if state.sealed || state.frames.len() != state.committed {
            return Err(Error::invalid_state(
                &self.path,
                "only an unsealed segment with no transaction in progress can be cut",
            ));
        }
        self.file
            .set_len(frame_offset(state.committed))
            .and_then(|()| self.file.sync_data())
            .map_err(|e| Error::io(&self.path, e))
    }

    /// Makes sure the file holds written bytes (zeros) for at least `ahead` bytes after the
    /// frames written so far, extending it in steps of `PREALLOCATION_STEP`. A commit whose
    /// frames overwrite such bytes does not change the file's size or block map, so its
    /// `fdatasync` has no metadata to write: worth it when every commit is synced.
    ///
    /// Recovery and sealing cut the zeros off again; recovery does not count them as dropped.
    pub fn preallocate(&self, ahead: u64) -> Result<()> {
        let _appending = self.appending();
        let (frames_end, written_end) = {
            let state = self.read_state();
            if state.sealed {
                return Ok(());
            }
            (frame_offset(state.frames.len()), state.written_end)
        };
        let wanted = frames_end + ahead;
        if written_end >= wanted {
            return Ok(());
        }
        let start = written_end.max(frames_end);
        let end = wanted.next_multiple_of(PREALLOCATION_STEP);
        let zeros = vec![0; PREALLOCATION_STEP.min(end - start) as usize];
        let mut at = start;
        while at < end {
            let len = (end - at).min(zeros.len() as u64) as usize;
            self.file
                .write_all_at(&zeros[..len], at)
                .map_err(|e| Error::io(&self.path, e))?;
            at += len as u64;
        }
        self.write_state().written_end = end;
        Ok(())
    }

    /// Drops every frame of the transaction in progress; returns the pages those frames held,
    /// in the order they were written (the caller evicts them from its page cache).
    pub fn rollback(&self) -> Vec<u32> {
        let _appending = self.appending();
        let mut state = self.write_state();
        let committed = state.committed;
        let pages = state.frames[committed..]
            .iter()
            .map(|f| f.page_no)
            .collect();
        state.truncate(committed);
        pages
    }

    /// Records in the segment's header that the seal of the segment before it is durable
    /// (`SEGMENT_AFTER_DURABLE_SEAL`). Not synced: written only once that seal is durable, the
    /// mark can reach the disk no earlier, and it is synced with this segment's next fsync (a
    /// `synchronous=FULL` commit, or its own seal) if the kernel does not write it back before.
    /// Once sealed, the sealed header replaces it.
    pub fn mark_after_durable_seal(&self) -> Result<()> {
        // A seal writes the sealed header over this one: not both at once.
        let _appending = self.appending();
        if self.read_state().sealed {
            return Ok(());
        }
        let header = SegmentHeader {
            flags: self.header.flags | SEGMENT_AFTER_DURABLE_SEAL,
            ..self.header
        };
        self.file
            .write_all_at(&header.encode(), 0)
            .map_err(|e| Error::io(&self.path, e))
    }

    /// Returns true if the header on disk, as recovery read it, says the seal of the segment
    /// before is durable (see `mark_after_durable_seal`).
    pub fn follows_durable_seal(&self) -> bool {
        self.header.flags & SEGMENT_AFTER_DURABLE_SEAL != 0
    }

    /// Makes every written frame durable (fsync).
    #[tracing::instrument(level = "trace", skip_all, fields(path = %self.path.display()))]
    pub fn sync(&self) -> Result<()> {
        self.file.sync_data().map_err(|e| Error::io(&self.path, e))
    }

    /// Returns the frame_no of the newest version of `page_no` at or below `max_frame_no`, if this
    /// segment holds one. A reader passes its snapshot; the writer may pass `u64::MAX` to see its
    /// own uncommitted frames.
    pub fn find_frame(&self, page_no: u32, max_frame_no: u64) -> Option<u64> {
        let state = self.read_state();
        let position = state.visible(page_no, max_frame_no)?;
        Some(state.frames[position].frame_no)
    }

    /// Like `find_frame`, but returns where the frame sits in the file, for `read_located`
    /// to read it without looking it up again.
    pub fn locate_frame(&self, page_no: u32, max_frame_no: u64) -> Option<FramePosition> {
        self.read_state()
            .visible(page_no, max_frame_no)
            .map(FramePosition)
    }

    /// Reads the page of the frame `locate_frame` returned into `page` (`PAGE_SIZE` bytes).
    /// A committed frame stays where it is for the segment's life; an uncommitted one only until
    /// its transaction is rolled back, so the writer must locate again after a rollback.
    pub fn read_located(&self, position: FramePosition, page: &mut [u8]) -> Result<()> {
        self.read_page_at(position.0, page)
    }

    /// Reads the page of frame `frame_no` into `page` (`PAGE_SIZE` bytes).
    pub fn read_frame(&self, frame_no: u64, page: &mut [u8]) -> Result<()> {
        let position = {
            let state = self.read_state();
            let position = state.frames.partition_point(|f| f.frame_no < frame_no);
            match state.frames.get(position) {
                Some(f) if f.frame_no == frame_no => position,
                _ => {
                    return Err(Error::invalid_state(
                        &self.path,
                        format!("segment holds no frame {frame_no}"),
                    ))
                }
            }
        };
        self.read_page_at(position, page)
    }

    /// Reads the newest version of `page_no` at or below `max_frame_no` into `page`. Returns
    /// false if this segment holds no such version.
    #[tracing::instrument(level = "trace", skip_all, fields(path = %self.path.display()))]
    pub fn read_page(&self, page_no: u32, max_frame_no: u64, page: &mut [u8]) -> Result<bool> {
        let Some(position) = self.read_state().visible(page_no, max_frame_no) else {
            return Ok(false);
        };
        self.read_page_at(position, page)?;
        Ok(true)
    }

    fn read_page_at(&self, position: usize, page: &mut [u8]) -> Result<()> {
        check_page_buffer(page, &self.path)?;
        let offset = frame_offset(position) + FRAME_HEADER_SIZE as u64;
        self.file
            .read_exact_at(page, offset)
            .map_err(|e| Error::io(&self.path, e))
    }

    /// Seals the segment: writes the page index after the committed frames and the final header
    /// with `SEALED`, then fsyncs once. Returns `None`, and leaves the segment current, when it
    /// holds no committed frame.
    ///
    /// Fails with `InvalidState` while a transaction is in progress. A crash before the fsync
    /// returns may leave any part of what was written: the unsealed segment (recovery drops the
    /// partial index), the sealed one, or a `SEALED` header over a partial index or partial
    /// frames, which does not validate: `open_segment` reports it as `TornSeal`, and
    /// `recover_torn_seal` recovers it to its last whole commit (nothing after the last fsync
    /// was promised).
    #[tracing::instrument(skip(self), fields(path = %self.path.display()), level = "debug")]
    pub fn seal(&self, now: DateTime<Utc>) -> Result<Option<SealedSegment<F>>> {
        let _appending = self.appending();
        // Readers go on while the seal is written: nothing changes the frames meanwhile.
        let Some(sealed) = self.sealed_view(&self.read_state(), now)? else {
            return Ok(None);
        };
        let index_size = sealed.persist()?;
        self.write_state().sealed = true;
        Ok(Some(sealed.with_index_size(index_size)))
    }

    /// Seals the segment in memory only: no more frames go into it, and the returned segment
    /// serves reads; nothing is written. The caller writes the seal (`SealedSegment::persist`)
    /// before anything relies on the file being sealed. Until then the file on disk is this
    /// segment unsealed (recovery reads its frames, and seals it), and a power cut can take
    /// whatever was never synced. Returns `None` when the segment holds no committed frame.
    ///
    /// The in-memory header's `index_size` is 0 until persisted (only the file's matters).
    pub fn seal_in_memory(&self, now: DateTime<Utc>) -> Result<Option<SealedSegment<F>>> {
        let _appending = self.appending();
        let mut state = self.write_state();
        let sealed = self.sealed_view(&state, now)?;
        if sealed.is_some() {
            state.sealed = true;
        }
        Ok(sealed)
    }

    /// Returns the segment as a seal now would make it (header and index; `index_size` 0),
    /// writing nothing; `None` when it holds no committed frame. Fails with `InvalidState`
    /// once sealed or while a transaction is in progress.
    fn sealed_view(&self, state: &State, now: DateTime<Utc>) -> Result<Option<SealedSegment<F>>> {
        if state.sealed {
            return Err(Error::invalid_state(
                &self.path,
                "segment is already sealed",
            ));
        }
        if state.frames.len() > state.committed {
            return Err(Error::invalid_state(
                &self.path,
                "cannot seal while a transaction is in progress",
            ));
        }
        if state.committed == 0 {
            return Ok(None);
        }
        let mut entries: Vec<(u32, u64)> = state
            .newest
            .iter()
            .map(|(&page_no, &position)| (page_no, frame_offset(position as usize)))
            .collect();
        entries.sort_unstable();
        let index = PageIndex::build(&entries, &self.path)?;
        let header = SegmentHeader {
            flags: self.header.flags | SEGMENT_SEALED,
            last_committed_frame_no: last_committed(&self.header, state),
            frame_count: state.committed as u64,
            size_after: state.size_after,
            index_offset: frame_offset(state.committed),
            index_size: 0,
            sealed_at_ms: u64::try_from(now.timestamp_millis()).unwrap_or(0),
            ..self.header
        };
        debug!(
            frames = header.frame_count,
            pages = index.len(),
            last_committed_frame_no = header.last_committed_frame_no,
            "segment sealed"
        );
        Ok(Some(SealedSegment::from_parts(
            self.path.clone(),
            self.file.clone(),
            header,
            index,
        )))
    }
}

fn last_committed(header: &SegmentHeader, state: &State) -> u64 {
    match state.committed.checked_sub(1) {
        Some(last) => state.frames[last].frame_no,
        None => header.start_frame_no - 1,
    }
}

/// Returns the offset just past the last non-zero byte of `file` in `from..len` (`from` if
/// they are all zeros).
pub(crate) fn end_of_nonzero_bytes<F: FileExt>(
    file: &F,
    path: &Path,
    from: u64,
    len: u64,
) -> Result<u64> {
    let mut end = from;
    let mut buf = vec![0; PREALLOCATION_STEP.min(len.saturating_sub(from)) as usize];
    let mut at = from;
    while at < len {
        let chunk = &mut buf[..(len - at).min(PREALLOCATION_STEP) as usize];
        file.read_exact_at(chunk, at)
            .map_err(|e| Error::io(path, e))?;
        if let Some(last) = chunk.iter().rposition(|&b| b != 0) {
            end = at + last as u64 + 1;
        }
        at += chunk.len() as u64;
    }
    Ok(end)
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc::{channel, Receiver, Sender};

    use super::*;
    use crate::io::StdIo;

    /// A file whose next write, once armed, says it started and waits to be let go.
    struct GatedFile {
        file: std::fs::File,
        gate: Mutex<Option<(Sender<()>, Receiver<()>)>>,
    }

    impl GatedFile {
        fn pass(&self) {
            let gate = self.gate.lock().expect("gate").take();
            if let Some((started, go)) = gate {
                started.send(()).expect("the test waits");
                go.recv().expect("the test lets the write go");
            }
        }
    }

    impl FileExt for GatedFile {
        fn size(&self) -> std::io::Result<u64> {
            self.file.size()
        }
        fn set_len(&self, len: u64) -> std::io::Result<()> {
            FileExt::set_len(&self.file, len)
        }
        fn write_all_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
            self.pass();
            FileExt::write_all_at(&self.file, buf, offset)
        }
        fn write_all_vectored_at(
            &self,
            bufs: &mut [IoSlice<'_>],
            offset: u64,
        ) -> std::io::Result<()> {
            self.pass();
            self.file.write_all_vectored_at(bufs, offset)
        }
        fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
            FileExt::read_exact_at(&self.file, buf, offset)
        }
        fn sync_data(&self) -> std::io::Result<()> {
            self.file.sync_data()
        }
    }

    /// Runs `write` on a segment holding one commit (page 1, all ones) whose next write waits
    /// at a gate, and checks that readers take the state lock and read the committed page
    /// while it waits.
    fn readers_go_on_during(write: impl FnOnce(&CurrentSegment<GatedFile>) + Send) {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("1.seg");
        let first = vec![1; PAGE_SIZE];
        let segment = CurrentSegment::create(&StdIo, &path, 1, Uuid::new_v4()).expect("created");
        segment
            .insert_frames([(1, &first[..])], Some(1))
            .expect("committed");
        drop(segment);
        let (started_tx, started) = channel();
        let (go, go_rx) = channel();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .expect("opened");
        let gated = GatedFile {
            file,
            gate: Mutex::new(Some((started_tx, go_rx))),
        };
        let (segment, _) = CurrentSegment::recover_file(gated, &path).expect("recovered");
        std::thread::scope(|s| {
            // Dropped with a failed assertion, which lets the writer go.
            let go = go;
            let writer = s.spawn(|| write(&segment));
            started.recv().expect("the write started");
            assert!(
                segment.state.try_read().is_ok(),
                "the state is not locked while the write waits"
            );
            let mut page = vec![0; PAGE_SIZE];
            assert!(segment.read_page(1, 1, &mut page).expect("read"));
            assert_eq!(page, first);
            assert_eq!(segment.last_committed_frame_no(), 1);
            go.send(()).expect("the writer waits");
            writer.join().expect("writer");
        });
    }

    #[test]
    fn readers_do_not_wait_for_the_write_of_an_append() {
        readers_go_on_during(|segment| {
            let second = vec![2; PAGE_SIZE];
            let end = segment
                .insert_frames([(1, &second[..])], Some(1))
                .expect("appended");
            assert_eq!(end, 2);
            let mut page = vec![0; PAGE_SIZE];
            assert!(segment.read_page(1, 2, &mut page).expect("read"));
            assert_eq!(page, second);
        });
    }

    #[test]
    fn readers_do_not_wait_for_the_zeros_of_a_preallocation() {
        readers_go_on_during(|segment| {
            segment
                .preallocate(PREALLOCATION_STEP)
                .expect("preallocated");
            assert!(segment.read_state().written_end >= PREALLOCATION_STEP);
        });
    }
}
