//! `LibsqlWal`: one SQLite connection's handle on its namespace's `SharedWal`, implementing
//! libsql-sys's virtual WAL (`libsql_sys::wal::Wal`).
//!
//! Transactions as SQLite expects them: a read transaction pins a snapshot; a write transaction
//! takes the namespace's write lock (FIFO, bounded wait, then SQLITE_BUSY) and fails with
//! SQLITE_BUSY_SNAPSHOT if its snapshot is no longer the latest commit. The writer sees its own
//! uncommitted frames; everyone else sees frames up to their snapshot.
//!
//! Frame handles: SQLite asks `find_frame` whether a page is in the log and then passes the
//! returned handle to `read_frame`. The handle is the page number itself (non-zero); the
//! location found is kept for the `read_frame` that follows, which otherwise looks the page up
//! again in the same view.
//!
//! Checkpoints: SQLite's auto-checkpoint never fires (the wal hook reports no frames); the
//! swap strategy seals and the background checkpointer copies. An explicit `PRAGMA
//! wal_checkpoint` seals what is committed (PASSIVE only if the write lock is free) and
//! checkpoints what no reader needs, reporting like SQLite's WAL.
//!
//! Durability (`PRAGMA synchronous`): FULL fsyncs the segment at every commit (the seal before
//! it first, if that is not synced yet), so a power cut loses nothing committed; NORMAL leaves
//! the fsync to the seal, which is synced off the writer's path (before storage or a checkpoint
//! takes the segment, and before the next seal at the latest), so a power cut may lose the
//! commits of the newest sealed segment and of the current one (the database stays
//! consistent: recovery ends the log at the last whole commit); OFF adds no fsync of its own.

use std::num::NonZeroU32;
use std::sync::Arc;

use libsql_sys::ffi;
use libsql_sys::wal::{
    BusyHandler, CheckpointCallback, CheckpointMode, PageHeaders, Result as WalResult, Sqlite3Db,
    UndoHandler, Wal,
};
use libsql_wal_backend::Storage;
use libsql_wal_segment::format::{FRAME_SIZE, PAGE_SIZE};
use libsql_wal_segment::Io;

use crate::error::Error;
use crate::shared::{next_writer_id, SharedWal, Snapshot};

/// Returns the SQLite error for a segment error in this namespace.
fn segment_error(
    namespace: &libsql_wal_backend::NamespaceName,
    source: libsql_wal_segment::Error,
) -> libsql_sys::wal::Error {
    Error::Segment {
        namespace: namespace.clone(),
        source,
    }
    .into_sqlite()
}

/// One connection's WAL.
pub struct LibsqlWal<I: Io, S: Storage<File = I::File>> {
    /// The namespace's log.
    shared: Arc<SharedWal<I, S>>,
    /// This connection's id in the writer queue.
    id: u64,
    /// The snapshot of the read transaction in progress.
    read: Option<Snapshot<I::File>>,
    /// The last committed frame_no this connection saw, to tell SQLite when its page cache is
    /// stale.
    last_seen_frame_no: Option<u64>,
    /// True while this connection holds the write lock.
    writing: bool,
    /// Frames written by the transaction in progress.
    tx_frames: usize,
    /// The page `find_frame` located last, and where: `read_frame` follows right after.
    last_located: Option<(u32, Location<I::File>)>,
}

impl<I: Io, S: Storage<File = I::File>> LibsqlWal<I, S> {
    /// Returns a connection's handle on `shared`, which counted it (`SharedWal::attach`).
    pub(crate) fn new(shared: Arc<SharedWal<I, S>>) -> Self {
        LibsqlWal {
            shared,
            id: next_writer_id(),
            read: None,
            last_seen_frame_no: None,
            writing: false,
            tx_frames: 0,
            last_located: None,
        }
    }

    /// Returns the shared log.
    pub fn shared(&self) -> &Arc<SharedWal<I, S>> {
        &self.shared
    }

    fn no_read_txn() -> libsql_sys::wal::Error {
        libsql_sys::wal::Error::new(ffi::SQLITE_MISUSE)
    }

    /// Returns where `page_no` is in this connection's view: in the snapshot's current segment
    /// (up to its frame, or any frame for the writer), then in its sealed segments newest first.
    fn locate(&self, page_no: u32) -> Option<Location<I::File>> {
        let read = self.read.as_ref()?;
        let max = if self.writing {
            u64::MAX
        } else {
            read.last_committed_frame_no
        };
        if let Some(position) = read.current.locate_frame(page_no, max) {
            return Some(Location::Current(position));
        }
        read.sealed
            .iter()
            .rev()
            .find(|s| s.index().get(page_no).is_some())
            .map(|s| Location::Sealed(s.clone()))
    }
}

/// Where a page was found.
enum Location<F> {
    /// In the snapshot's current segment, at this position.
    Current(libsql_wal_segment::FramePosition),
    /// In this sealed segment (its newest version).
    Sealed(Arc<libsql_wal_segment::SealedSegment<F>>),
}

impl<I: Io, S: Storage<File = I::File>> Drop for LibsqlWal<I, S> {
    fn drop(&mut self) {
        self.end_read_txn();
        if self.writing {
            self.shared.snapshot().current.rollback();
            self.shared.release_writer(self.id);
        }
        self.shared.detach();
    }
}

impl<I: Io, S: Storage<File = I::File>> Wal for LibsqlWal<I, S> {
    fn limit(&mut self, _size: i64) {}

    fn begin_read_txn(&mut self) -> WalResult<bool> {
        self.end_read_txn();
        let snapshot = self.shared.begin_read();
        let changed = self.last_seen_frame_no != Some(snapshot.last_committed_frame_no);
        self.last_seen_frame_no = Some(snapshot.last_committed_frame_no);
        self.read = Some(snapshot);
        Ok(changed)
    }

    fn end_read_txn(&mut self) {
        self.last_located = None;
        if let Some(read) = self.read.take() {
            self.shared.remove_reader(read.last_committed_frame_no);
        }
    }

    fn find_frame(&mut self, page_no: NonZeroU32) -> WalResult<Option<NonZeroU32>> {
        self.last_located = self
            .locate(page_no.get())
            .map(|location| (page_no.get(), location));
        Ok(self.last_located.as_ref().map(|_| page_no))
    }

    fn read_frame(&mut self, frame_no: NonZeroU32, buffer: &mut [u8]) -> WalResult<()> {
        let page_no = frame_no.get();
        let location = match self.last_located.take() {
            Some((located, location)) if located == page_no => Some(location),
            _ => self.locate(page_no),
        };
        let namespace = self.shared.namespace();
        match location {
            Some(Location::Current(position)) => {
                let read = self.read.as_ref().ok_or_else(Self::no_read_txn)?;
                read.current
                    .read_located(position, buffer)
                    .map_err(|e| segment_error(namespace, e))
            }
            Some(Location::Sealed(segment)) => segment
                .read_page(page_no, buffer)
                .map_err(|e| segment_error(namespace, e))
                .map(drop),
            None => Err(libsql_sys::wal::Error::new(ffi::SQLITE_IOERR_READ)),
        }
    }

    fn read_frame_raw(&mut self, _frame_no: NonZeroU32, _buffer: &mut [u8]) -> WalResult<()> {
        Err(Error::Unsupported {
            namespace: self.shared.namespace().clone(),
            what: "reading raw frames".into(),
        }
        .into_sqlite())
    }

    fn db_size(&self) -> u32 {
        self.read.as_ref().map_or(0, |r| r.db_size)
    }

    fn begin_write_txn(&mut self) -> WalResult<()> {
        self.last_located = None;
        let Some(read) = self.read.as_ref() else {
            return Err(Self::no_read_txn());
        };
        let seen = read.last_committed_frame_no;
        if self.shared.is_replica() {
            return Err(Error::ReadOnlyReplica {
                namespace: self.shared.namespace().clone(),
            }
            .into_sqlite());
        }
        self.shared
            .acquire_writer(self.id)
            .map_err(Error::into_sqlite)?;
        let latest = self.shared.snapshot();
        if latest.last_committed_frame_no != seen {
            self.shared.release_writer(self.id);
            return Err(Error::Busy {
                namespace: self.shared.namespace().clone(),
                why: "another connection committed since this transaction began",
                stale_snapshot: true,
            }
            .into_sqlite());
        }
        // Same commit, but the segment may have been sealed since: write to the new one.
        self.read = Some(latest);
        self.writing = true;
        self.tx_frames = 0;
        Ok(())
    }

    fn end_write_txn(&mut self) -> WalResult<()> {
        if self.writing {
            if let Some(read) = &self.read {
                read.current.rollback();
            }
            self.writing = false;
            self.shared.release_writer(self.id);
        }
        Ok(())
    }

    fn undo<U: UndoHandler>(&mut self, handler: Option<&mut U>) -> WalResult<()> {
        self.last_located = None;
        let Some(read) = &self.read else {
            return Ok(());
        };
        let pages = read.current.rollback();
        self.tx_frames = 0;
        if let Some(handler) = handler {
            for page_no in pages {
                handler.handle_undo(page_no)?;
            }
        }
        Ok(())
    }

    fn savepoint(&mut self, rollback_data: &mut [u32]) {
        if let Some(read) = &self.read {
            let frame_no = read.current.last_written_frame_no();
            rollback_data[0] = frame_no as u32;
            rollback_data[1] = (frame_no >> 32) as u32;
        }
    }

    fn savepoint_undo(&mut self, rollback_data: &mut [u32]) -> WalResult<()> {
        self.last_located = None;
        let Some(read) = &self.read else {
            return Err(Self::no_read_txn());
        };
        let frame_no = u64::from(rollback_data[0]) | (u64::from(rollback_data[1]) << 32);
        read.current
            .rollback_to(frame_no.max(read.current.last_committed_frame_no()))
            .map_err(|e| segment_error(self.shared.namespace(), e))
    }

    fn frame_count(&self, _locked: i32) -> WalResult<u32> {
        Ok(self.frames_in_wal())
    }

    fn insert_frames(
        &mut self,
        page_size: std::ffi::c_int,
        page_headers: &mut PageHeaders,
        size_after: u32,
        is_commit: bool,
        sync_flags: std::ffi::c_int,
    ) -> WalResult<usize> {
        self.last_located = None;
        let namespace = self.shared.namespace().clone();
        if page_size as usize != PAGE_SIZE {
            return Err(Error::Unsupported {
                namespace,
                what: format!("page size {page_size} (only {PAGE_SIZE} is supported)"),
            }
            .into_sqlite());
        }
        let Some(read) = self.read.clone().filter(|_| self.writing) else {
            return Err(Self::no_read_txn());
        };
        if self.tx_frames == 0 {
            self.shared.restart_log();
        }
        let pages: Vec<(u32, &[u8])> = page_headers.iter().collect();
        let count = pages.len();
        // WAL_SYNC_FLAGS: non-zero when `PRAGMA synchronous` is FULL or EXTRA.
        let sync_at_commit = sync_flags & 0x03 != 0;
        if is_commit && sync_at_commit {
            // Commits that overwrite written zeros make `fdatasync` cheaper than appends.
            read.current
                .preallocate(((count + 1) * FRAME_SIZE) as u64)
                .map_err(|e| segment_error(&namespace, e))?;
        }
        read.current
            .insert_frames(pages, is_commit.then_some(size_after))
            .map_err(|e| segment_error(&namespace, e))?;
        self.tx_frames += count;
        if !is_commit {
            return Ok(0);
        }
        if sync_at_commit {
            // The seal before this segment first (with the directory holding this segment's
            // name): a synced commit must never follow frames a power cut can take.
            let synced = self
                .shared
                .persist_seal()
                .and_then(|()| read.current.sync().map_err(Error::segment(&namespace)));
            if let Err(e) = synced {
                // SQLite will report the commit as failed: take it back, so that neither this
                // process nor recovery after a crash ever shows it. After a failed fsync the
                // page cache is no evidence of what the disk holds (the error is reported once):
                // no more writes until the log is opened again from disk.
                let why = match read.current.undo_last_commit() {
                    Ok(()) => format!("a commit's fsync failed ({e}); the commit was taken back"),
                    Err(undo) => {
                        // Its frames may still be in the file: cut before anything reads it.
                        self.shared.commit_left_in_file();
                        format!(
                            "a commit's fsync failed ({e}), and taking the commit back failed ({undo})"
                        )
                    }
                };
                self.shared.poison(why);
                return Err(e.into_sqlite());
            }
        }
        let snapshot = self.shared.publish_commit(&read.current);
        self.shared.move_reader(
            read.last_committed_frame_no,
            snapshot.last_committed_frame_no,
        );
        self.last_seen_frame_no = Some(snapshot.last_committed_frame_no);
        self.read = Some(snapshot);
        Ok(std::mem::take(&mut self.tx_frames))
    }

    fn checkpoint(
        &mut self,
        _db: &mut Sqlite3Db,
        mode: CheckpointMode,
        _busy_handler: Option<&mut dyn BusyHandler>,
        _sync_flags: u32,
        _buf: &mut [u8],
        _checkpoint_cb: Option<&mut dyn CheckpointCallback>,
        in_wal: Option<&mut i32>,
        backfilled: Option<&mut i32>,
    ) -> WalResult<()> {
        // Seal what is committed so all of it can be copied in: PASSIVE only if the write lock
        // is free right now, the other modes wait for it like a writer.
        if !self.writing {
            let locked = if mode == CheckpointMode::Passive {
                self.shared.try_acquire_writer(self.id)
            } else {
                self.shared
                    .acquire_writer(self.id)
                    .map_err(Error::into_sqlite)?;
                true
            };
            if locked {
                let sealed = self
                    .shared
                    .seal_current()
                    .and_then(|()| self.shared.send_unsent());
                self.shared.release_writer(self.id);
                sealed.map_err(Error::into_sqlite)?;
            }
        }
        self.shared.checkpoint().map_err(Error::into_sqlite)?;
        let after = self.frames_in_wal();
        // Reported as SQLite's WAL does: frames in the log and frames copied back, which stay
        // counted until the next writer restarts the log; a truncating checkpoint that copied
        // everything leaves an empty log.
        let (log, copied) = if mode == CheckpointMode::Truncate && after == 0 {
            self.shared.forget_backfilled();
            (0, 0)
        } else {
            let backfilled = self.shared.backfilled_frames();
            (backfilled + u64::from(after), backfilled)
        };
        if let Some(in_wal) = in_wal {
            *in_wal = i32::try_from(log).unwrap_or(i32::MAX);
        }
        if let Some(backfilled) = backfilled {
            *backfilled = i32::try_from(copied).unwrap_or(i32::MAX);
        }
        if mode >= CheckpointMode::Full && after > 0 {
            // Readers still need frames that could not be copied.
            return Err(libsql_sys::wal::Error::new(ffi::SQLITE_BUSY));
        }
        Ok(())
    }

    fn exclusive_mode(&mut self, _op: std::ffi::c_int) -> WalResult<()> {
        Ok(())
    }

    fn uses_heap_memory(&self) -> bool {
        false
    }

    fn set_db(&mut self, _db: &mut Sqlite3Db) {}

    fn callback(&self) -> i32 {
        // SQLite's auto-checkpoint would seal a segment every N frames from the commit path;
        // the swap strategy and the background checkpointer decide that instead, so the wal
        // hook never reports frames.
        0
    }

    fn frames_in_wal(&self) -> u32 {
        let snapshot = self.shared.snapshot();
        let sealed: u64 = snapshot.sealed.iter().map(|s| s.frame_count()).sum();
        u32::try_from(sealed + snapshot.current.committed_frame_count()).unwrap_or(u32::MAX)
    }
}
