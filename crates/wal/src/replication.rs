//! Replication, both sides of it: the steps a primary's log serves (`ReplicationSource`) and
//! the `Injector` that applies them to a replica's own log.
//!
//! **A step** is a consistent image of every page changed since frame_no `after` as of one
//! committed snapshot of the primary (`StepHeader::frame_no`): the pages of the log's frames
//! above `after` when the log still holds all of them, else every page of the database (a
//! *full image*; always for `after` = 0). Several commits collapse into one step, so a replica
//! never shows a state between two of them that the primary did not commit as a whole. While a
//! step is read its snapshot is registered as a reader (no checkpoint copies past it, so the
//! pages read from the database file are the snapshot's) and it counts as a connection on the
//! log, so the log is not closed under it (an idle close answers `Busy`): a log opened next over
//! the same files could otherwise checkpoint newer pages into the database file mid-step.
//!
//! **A replica** applies each step as one write transaction of its own log (its frames have its
//! own numbers): readers see a step whole or not at all. Where it stands in the primary's log is
//! kept in its position record, `{db}-replica` (`ReplicaPosition`): the primary log it follows
//! and `applied`, a step boundary its durable state is at or past. Applying a step again from an
//! earlier boundary is harmless (it sets pages to their newest version as of the snapshot), so
//! resuming from `applied` is exact, and `applied` is advanced only after the replica's log is
//! synced, at most once a second.
//!
//! **Incarnations.** A primary that crashed may come back with fewer commits than it served
//! (commits not yet synced are lost), and a replica holding them would be past a history that no
//! longer exists. Each open of a log has an incarnation id; a log closed cleanly (everything
//! committed sealed and synced) leaves a marker in its segment directory, and the next open
//! takes its incarnation over, removing the marker first. A replica whose primary's incarnation
//! changed, or whose primary is now another log, asks for a full image, which sets every page.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use libsql_wal_backend::Storage;
use libsql_wal_segment::format::PAGE_SIZE;
use libsql_wal_segment::{CurrentSegment, FileExt, Io, OpenMode};
use tracing::{debug, info, warn};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::shared::{next_writer_id, SharedWal, Snapshot};

/// Which history a primary's log is, as a replica needs to know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogIdentity {
    /// The log's id.
    pub log_id: Uuid,
    /// Its generation in storage (0 without remote storage).
    pub generation: u64,
    /// This open of the log and those it continues after clean closes (see the module docs).
    pub incarnation: Uuid,
}

/// What a primary says of a namespace's log to a replica about to follow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    /// Which history it is.
    pub identity: LogIdentity,
    /// The newest committed frame_no.
    pub last_committed_frame_no: u64,
    /// The newest frame_no durable in storage.
    pub durable_frame_no: u64,
}

/// What a step is, sent before its pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepHeader {
    /// The primary's frame_no the step brings a replica to.
    pub frame_no: u64,
    /// The database size in pages at that frame_no.
    pub db_size: u32,
    /// The primary's durable frame_no when the step was taken.
    pub durable_frame_no: u64,
    /// How many pages follow.
    pub pages: u32,
    /// True when the step holds every page of the database.
    pub full_image: bool,
}

/// The pages of one step, read one at a time (so a step of any size costs one page of memory).
pub trait StepPages: Send {
    /// What the step is.
    fn header(&self) -> StepHeader;
    /// Reads the next page into `page` (`PAGE_SIZE` bytes) and returns its number; `None` after
    /// the last.
    fn next_page(&mut self, page: &mut [u8]) -> Result<Option<u32>>;
}

/// A log a replica can follow.
pub trait ReplicationSource: Send + Sync {
    /// Which history the log is and where it stands.
    fn hello(&self) -> Hello;
    /// A receiver of the last committed frame_no, woken at each commit and when the log is
    /// closed (`is_gone` then says so).
    fn commits(&self) -> tokio::sync::watch::Receiver<u64>;
    /// True once the log is closed: nothing more comes from it, and a follower asks again (the
    /// namespace may have been reopened as a new log).
    fn is_gone(&self) -> bool;
    /// The step that brings a replica at `after` to the newest commit; `None` when nothing was
    /// committed since `after`. A replica past the newest commit is refused: its history is not
    /// this one. When the step would be a full image and `full_images` refuses it, the answer
    /// is `Error::NotHeld` (a replica that can read the primary's bucket catches up from it).
    fn step_after(&self, after: u64, full_images: FullImages)
        -> Result<Option<Box<dyn StepPages>>>;
}

/// Whether a step may be a full image (see `ReplicationSource::step_after`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FullImages {
    /// A full image when the log no longer holds the frames asked for.
    Allowed,
    /// `Error::NotHeld` instead.
    Refused,
}

/// One step being read from a primary's log; its snapshot stays registered as a reader, and
/// the step attached to the log as a connection, until it is dropped.
struct Step<I: Io, S: Storage<File = I::File>> {
    shared: Arc<SharedWal<I, S>>,
    snapshot: Snapshot<I::File>,
    header: StepHeader,
    pages: std::vec::IntoIter<u32>,
}

impl<I: Io, S: Storage<File = I::File>> Step<I, S> {
    /// Reads `page_no` as of the snapshot: from the log (current segment up to the snapshot,
    /// then the sealed segments newest first), else from the database file.
    fn read_page(&self, page_no: u32, page: &mut [u8]) -> Result<()> {
        let namespace = self.shared.namespace();
        let seg_err = Error::segment(namespace);
        let snapshot = &self.snapshot;
        if snapshot
            .current
            .read_page(page_no, snapshot.last_committed_frame_no, page)
            .map_err(&seg_err)?
        {
            return Ok(());
        }
        for sealed in snapshot.sealed.iter().rev() {
            if sealed.read_page(page_no, page).map_err(&seg_err)? {
                return Ok(());
            }
        }
        let db_path = self.shared.db_path();
        let file = self.shared.db_file().map_err(Error::io(db_path))?;
        file.read_exact_at(page, u64::from(page_no - 1) * PAGE_SIZE as u64)
            .map_err(Error::io(db_path))
    }
}

impl<I: Io, S: Storage<File = I::File>> Drop for Step<I, S> {
    fn drop(&mut self) {
        self.shared
            .remove_reader(self.snapshot.last_committed_frame_no);
        self.shared.detach();
    }
}

impl<I: Io, S: Storage<File = I::File>> StepPages for Step<I, S> {
    fn header(&self) -> StepHeader {
        self.header
    }

    fn next_page(&mut self, page: &mut [u8]) -> Result<Option<u32>> {
        let Some(page_no) = self.pages.next() else {
            return Ok(None);
        };
        self.read_page(page_no, page)?;
        Ok(Some(page_no))
    }
}

impl<I: Io, S: Storage<File = I::File>> ReplicationSource for SharedWal<I, S> {
    fn hello(&self) -> Hello {
        Hello {
            identity: self.identity(),
            last_committed_frame_no: self.last_committed_frame_no(),
            durable_frame_no: self.durable_frame_no(),
        }
    }

    fn commits(&self) -> tokio::sync::watch::Receiver<u64> {
        self.subscribe_commits()
    }

    fn is_gone(&self) -> bool {
        self.is_retired()
    }

    #[tracing::instrument(skip(self), fields(namespace = %self.namespace()))]
    fn step_after(
        &self,
        after: u64,
        full_images: FullImages,
    ) -> Result<Option<Box<dyn StepPages>>> {
        let closed = || Error::Closed {
            namespace: self.namespace().clone(),
        };
        let shared = self.this().ok_or_else(closed)?;
        if !shared.attach() {
            return Err(closed());
        }
        // Detached by the step's drop from here on.
        let snapshot = self.begin_read();
        let step = Step {
            shared,
            header: StepHeader {
                frame_no: snapshot.last_committed_frame_no,
                db_size: snapshot.db_size,
                durable_frame_no: self.durable_frame_no(),
                pages: 0,
                full_image: false,
            },
            snapshot,
            pages: Vec::new().into_iter(),
        };
        let end = step.snapshot.last_committed_frame_no;
        if after > end {
            return Err(self.replication_error(format!(
                "the replica is at frame {after}, past this log's last commit {end}"
            )));
        }
        if after == end {
            return Ok(None);
        }
        let snapshot = &step.snapshot;
        let oldest_in_log = snapshot
            .sealed
            .first()
            .map_or(snapshot.current.start_frame_no(), |s| s.start_frame_no());
        let db_size = snapshot.db_size;
        let held = after > 0 && after + 1 >= oldest_in_log;
        if !held && full_images == FullImages::Refused {
            return Err(Error::NotHeld {
                namespace: self.namespace().clone(),
                after,
                oldest_held: oldest_in_log,
            });
        }
        let (pages, full_image) = if !held {
            ((1..=db_size).collect::<Vec<_>>(), true)
        } else {
            let mut changed = BTreeSet::new();
            for sealed in snapshot.sealed.iter() {
                changed.extend(sealed.pages_written_after(after));
            }
            changed.extend(snapshot.current.pages_written_between(after, end));
            let pages = changed.into_iter().take_while(|&p| p <= db_size).collect();
            (pages, false)
        };
        let pages_len = u32::try_from(pages.len())
            .map_err(|_| self.replication_error("a step of more than 2^32 pages"))?;
        debug!(
            after,
            end,
            pages = pages_len,
            full_image,
            "replication step"
        );
        let mut step = step;
        step.header.pages = pages_len;
        step.header.full_image = full_image;
        step.pages = pages.into_iter();
        Ok(Some(Box::new(step)))
    }
}

/// Where a replica stands in its primary's log, as its position record keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaPosition {
    /// The primary's log.
    pub identity: LogIdentity,
    /// A step boundary of it that the replica's durable state is at or past.
    pub applied: u64,
}

/// Magic number of a position record slot ("LSWREPL1").
const POSITION_MAGIC: u64 = u64::from_le_bytes(*b"LSWREPL1");
/// Bytes of one slot: magic, sequence, log id, incarnation, generation, applied, CRC32.
const POSITION_SLOT: usize = 8 + 8 + 16 + 16 + 8 + 8 + 4;

/// The position record `{db}-replica`: two checksummed slots written in turn (each write
/// fsynced), so a write torn by a crash leaves the other one; the valid slot with the higher
/// sequence is the position.
struct PositionRecord<F> {
    path: PathBuf,
    file: F,
    /// Sequence of the last slot written.
    sequence: u64,
}

impl<F: FileExt> PositionRecord<F> {
    /// Opens (creating it, durably) the record of the database at `db_path`; returns it with
    /// the position it holds, if any.
    fn open<I: Io<File = F>>(io: &I, db_path: &Path) -> Result<(Self, Option<ReplicaPosition>)> {
        let mut path = db_path.as_os_str().to_owned();
        path.push("-replica");
        let path = PathBuf::from(path);
        let file = match io.open(&path, OpenMode::ReadWrite) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let file = io
                    .open(&path, OpenMode::CreateNew)
                    .map_err(Error::io(&path))?;
                file.sync_data().map_err(Error::io(&path))?;
                if let Some(dir) = path.parent() {
                    io.sync_dir(dir).map_err(Error::io(dir))?;
                }
                file
            }
            Err(e) => return Err(Error::io(&path)(e)),
        };
        let mut best: Option<(u64, ReplicaPosition)> = None;
        for slot in 0..2u64 {
            let mut buf = [0; POSITION_SLOT];
            if file
                .read_exact_at(&mut buf, slot * POSITION_SLOT as u64)
                .is_err()
            {
                continue;
            }
            if let Some((sequence, position)) = decode_position(&buf) {
                if best.is_none_or(|(s, _)| sequence > s) {
                    best = Some((sequence, position));
                }
            }
        }
        let sequence = best.map_or(0, |(s, _)| s);
        Ok((
            PositionRecord {
                path,
                file,
                sequence,
            },
            best.map(|(_, p)| p),
        ))
    }

    /// Writes `position` over the older slot and fsyncs it.
    fn write(&mut self, position: &ReplicaPosition) -> Result<()> {
        let sequence = self.sequence + 1;
        let buf = encode_position(sequence, position);
        self.file
            .write_all_at(&buf, (sequence % 2) * POSITION_SLOT as u64)
            .and_then(|()| self.file.sync_data())
            .map_err(Error::io(&self.path))?;
        self.sequence = sequence;
        Ok(())
    }
}

fn encode_position(sequence: u64, position: &ReplicaPosition) -> [u8; POSITION_SLOT] {
    let mut buf = [0; POSITION_SLOT];
    buf[0..8].copy_from_slice(&POSITION_MAGIC.to_le_bytes());
    buf[8..16].copy_from_slice(&sequence.to_le_bytes());
    buf[16..32].copy_from_slice(position.identity.log_id.as_bytes());
    buf[32..48].copy_from_slice(position.identity.incarnation.as_bytes());
    buf[48..56].copy_from_slice(&position.identity.generation.to_le_bytes());
    buf[56..64].copy_from_slice(&position.applied.to_le_bytes());
    let crc = crc32fast::hash(&buf[..64]);
    buf[64..68].copy_from_slice(&crc.to_le_bytes());
    buf
}

/// Decodes a slot; `None` unless its magic and CRC are right.
fn decode_position(buf: &[u8; POSITION_SLOT]) -> Option<(u64, ReplicaPosition)> {
    let u64_at = |at: usize| {
        let mut bytes = [0; 8];
        bytes.copy_from_slice(&buf[at..at + 8]);
        u64::from_le_bytes(bytes)
    };
    let uuid_at = |at: usize| {
        let mut bytes = [0; 16];
        bytes.copy_from_slice(&buf[at..at + 16]);
        Uuid::from_bytes(bytes)
    };
    let mut crc = [0; 4];
    crc.copy_from_slice(&buf[64..68]);
    if u64_at(0) != POSITION_MAGIC || u32::from_le_bytes(crc) != crc32fast::hash(&buf[..64]) {
        return None;
    }
    Some((
        u64_at(8),
        ReplicaPosition {
            identity: LogIdentity {
                log_id: uuid_at(16),
                incarnation: uuid_at(32),
                generation: u64_at(48),
            },
            applied: u64_at(56),
        },
    ))
}

/// Applies steps to a replica's log (see the module docs).
pub trait StepInjector: Send {
    /// Where the replica stands (`None` before its first step).
    fn position(&self) -> Option<ReplicaPosition>;
    /// Takes the primary's `hello` and returns the frame_no to follow from: the replica's
    /// position in that log, or 0 (a full image) when the log or its incarnation is not the
    /// one the replica followed.
    fn resume_from(&mut self, hello: &Hello) -> u64;
    /// Starts applying `step` (of the log `resume_from` was given): takes the replica log's
    /// write lock, held until `commit` or `rollback`.
    fn begin(&mut self, step: &StepHeader) -> Result<()>;
    /// Continues the step begun with `step`, the one the primary sent after it: the two
    /// commit as one transaction of the replica's log, at `step`'s frame_no (a page of both
    /// is written as `step` has it). A replica behind applies the steps queued up for it with
    /// one commit.
    fn extend(&mut self, step: &StepHeader) -> Result<()>;
    /// Adds a page of the step begun.
    fn page(&mut self, page_no: u32, page: &[u8]) -> Result<()>;
    /// Commits the step begun, as one transaction of the replica's log; returns the primary's
    /// frame_no the replica is now at.
    fn commit(&mut self) -> Result<u64>;
    /// Drops what the step begun wrote, and releases the write lock.
    fn rollback(&mut self);
    /// Syncs the replica's log and records the position it is at.
    fn flush(&mut self) -> Result<()>;
}

/// Pages an injector writes with one call.
const INJECT_BATCH: usize = 64;
/// How often, at most, an injector syncs its log to advance the position record.
const POSITION_EVERY: Duration = Duration::from_secs(1);

/// The replica side: applies steps to the replica's own log. It counts as a connection on the
/// log for as long as it lives, so the log is not closed (idle, or by an operator) while it
/// follows a primary.
pub struct Injector<I: Io, S: Storage<File = I::File>> {
    shared: Arc<SharedWal<I, S>>,
    /// The position record; shared with the background flush.
    record: Arc<Mutex<PositionRecord<I::File>>>,
    /// The position the record held when opened.
    recorded: Option<ReplicaPosition>,
    /// The log being followed (from the last `resume_from`).
    following: Option<LogIdentity>,
    /// The primary's frame_no of the last step committed in the log followed.
    committed: Option<u64>,
    /// When the record last advanced (or a background flush was started).
    recorded_at: Instant,
    /// Set while a background flush runs.
    flushing: Arc<AtomicBool>,
    /// Writer-queue id.
    writer: u64,
    /// The step being applied, and the segment it writes to.
    step: Option<(StepHeader, Arc<CurrentSegment<I::File>>)>,
    /// Pages of the step not written yet, each once.
    pending: Vec<(u32, Vec<u8>)>,
}

impl<I: Io, S: Storage<File = I::File>> Injector<I, S> {
    /// Opens the injector of a replica's log, reading its position record; makes the
    /// database file (empty) if there is none, as a replica's first connection would. Fails
    /// with `Closed` if the log was closed meanwhile (`WalRegistry::injector` opens it again).
    pub fn open(shared: Arc<SharedWal<I, S>>) -> Result<Self> {
        if !shared.attach() {
            return Err(Error::Closed {
                namespace: shared.namespace().clone(),
            });
        }
        Self::open_attached(shared.clone()).inspect_err(|_| shared.detach())
    }

    fn open_attached(shared: Arc<SharedWal<I, S>>) -> Result<Self> {
        let db_path = shared.db_path();
        match shared.io().open(db_path, OpenMode::CreateNew) {
            Ok(file) => {
                file.sync_data().map_err(Error::io(db_path))?;
                if let Some(dir) = db_path.parent() {
                    shared.io().sync_dir(dir).map_err(Error::io(dir))?;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io(db_path)(e)),
        }
        let (record, recorded) = PositionRecord::open(shared.io(), shared.db_path())?;
        Ok(Injector {
            shared,
            record: Arc::new(Mutex::new(record)),
            recorded,
            following: None,
            committed: None,
            recorded_at: Instant::now(),
            flushing: Arc::new(AtomicBool::new(false)),
            writer: next_writer_id(),
            step: None,
            pending: Vec::new(),
        })
    }

    /// Writes the pending pages, all but the last (kept for the commit frame) unless `all`.
    fn write_pending(&mut self, all: bool) -> Result<()> {
        let Some((_, current)) = &self.step else {
            return Err(self.shared.replication_error("no step begun"));
        };
        let keep = usize::from(!all);
        if self.pending.len() <= keep {
            return Ok(());
        }
        let rest = self.pending.split_off(self.pending.len() - keep);
        let pages = std::mem::replace(&mut self.pending, rest);
        current
            .insert_frames(pages.iter().map(|(p, b)| (*p, b.as_slice())), None)
            .map_err(Error::segment(self.shared.namespace()))?;
        Ok(())
    }

    fn commit_step(&mut self) -> Result<u64> {
        let Some((header, current)) = self.step.clone() else {
            return Err(self.shared.replication_error("no step begun"));
        };
        let namespace = self.shared.namespace().clone();
        if let Some((page_no, page)) = self.pending.pop() {
            self.write_pending(true)?;
            current
                .insert_frames([(page_no, page.as_slice())], Some(header.db_size.max(1)))
                .map_err(Error::segment(&namespace))?;
            self.shared.publish_commit(&current);
        }
        self.release();
        self.committed = Some(header.frame_no);
        if self.recorded_at.elapsed() >= POSITION_EVERY {
            self.flush_in_background();
        }
        Ok(header.frame_no)
    }

    /// Starts a flush on a background thread (its fsyncs would hold up the next steps),
    /// unless one runs.
    fn flush_in_background(&mut self) {
        let (Some(identity), Some(applied)) = (self.following, self.committed) else {
            return;
        };
        if self.flushing.swap(true, Ordering::SeqCst) {
            return;
        }
        self.recorded_at = Instant::now();
        let position = ReplicaPosition { identity, applied };
        let (shared, record, flushing) = (
            self.shared.clone(),
            self.record.clone(),
            self.flushing.clone(),
        );
        let queued = crate::senders::send(Box::new(move || {
            if let Err(e) = record_durably(&shared, &record, &position) {
                warn!(namespace = %shared.namespace(), error = %e, "cannot record a replica's position; it resumes from the one recorded before");
            }
            flushing.store(false, Ordering::SeqCst);
        }));
        if let Err(e) = queued {
            debug!(error = %e, "no thread for a background flush; the next commit tries again");
            self.flushing.store(false, Ordering::SeqCst);
        }
    }

    fn release(&mut self) {
        self.pending.clear();
        if let Some((_, current)) = self.step.take() {
            current.rollback();
            self.shared.release_writer(self.writer);
        }
    }
}

impl<I: Io, S: Storage<File = I::File>> Drop for Injector<I, S> {
    fn drop(&mut self) {
        self.release();
        if let Err(e) = self.flush() {
            warn!(namespace = %self.shared.namespace(), error = %e, "cannot record a replica's position; it resumes from the one recorded before");
        }
        self.shared.detach();
    }
}

impl<I: Io, S: Storage<File = I::File>> StepInjector for Injector<I, S> {
    fn position(&self) -> Option<ReplicaPosition> {
        match (self.following, self.committed) {
            (Some(identity), Some(applied)) => Some(ReplicaPosition { identity, applied }),
            _ => self.recorded,
        }
    }

    fn resume_from(&mut self, hello: &Hello) -> u64 {
        let position = self.position();
        self.following = Some(hello.identity);
        match position {
            Some(p)
                if p.identity == hello.identity && p.applied <= hello.last_committed_frame_no =>
            {
                p.applied
            }
            Some(p) => {
                info!(namespace = %self.shared.namespace(), was = %p.identity.log_id, now = %hello.identity.log_id, "the primary's log is not the one this replica followed (or it restarted after a crash): taking a full image");
                self.committed = None;
                self.recorded = None;
                0
            }
            None => 0,
        }
    }

    #[tracing::instrument(skip(self), fields(namespace = %self.shared.namespace()))]
    fn begin(&mut self, step: &StepHeader) -> Result<()> {
        if self.following.is_none() {
            return Err(self
                .shared
                .replication_error("a step before the primary's hello"));
        }
        self.release();
        self.shared.acquire_writer(self.writer)?;
        let current = self.shared.snapshot().current;
        self.shared.restart_log();
        self.step = Some((*step, current));
        Ok(())
    }

    fn extend(&mut self, step: &StepHeader) -> Result<()> {
        let Some((begun, _)) = self.step.as_mut() else {
            return Err(self.shared.replication_error("no step begun to extend"));
        };
        if step.frame_no <= begun.frame_no {
            let message = format!(
                "a step to frame {} after the one to frame {}",
                step.frame_no, begun.frame_no
            );
            return Err(self.shared.replication_error(message));
        }
        *begun = *step;
        Ok(())
    }

    fn page(&mut self, page_no: u32, page: &[u8]) -> Result<()> {
        if page_no == 0 || page.len() != PAGE_SIZE {
            return Err(self
                .shared
                .replication_error(format!("a step's page {page_no} of {} bytes", page.len())));
        }
        // A page of steps applied as one, still pending: the later step's version replaces it.
        if let Some((_, pending)) = self.pending.iter_mut().find(|(p, _)| *p == page_no) {
            pending.copy_from_slice(page);
            return Ok(());
        }
        self.pending.push((page_no, page.to_vec()));
        if self.pending.len() > INJECT_BATCH {
            self.write_pending(false)?;
        }
        Ok(())
    }

    fn commit(&mut self) -> Result<u64> {
        let committed = self.commit_step();
        if committed.is_err() {
            self.release();
        }
        committed
    }

    fn rollback(&mut self) {
        self.release();
    }

    fn flush(&mut self) -> Result<()> {
        let (Some(identity), Some(applied)) = (self.following, self.committed) else {
            return Ok(());
        };
        let position = ReplicaPosition { identity, applied };
        record_durably(&self.shared, &self.record, &position)?;
        self.recorded_at = Instant::now();
        Ok(())
    }
}

/// Makes everything the replica's log committed so far durable, then records `position` (a
/// step the log committed): the record must never say more than the disk holds. The current
/// segment is taken first: a seal meanwhile leaves it the newest unsynced seal, which
/// `persist_seal` then writes.
fn record_durably<I: Io, S: Storage<File = I::File>>(
    shared: &SharedWal<I, S>,
    record: &Mutex<PositionRecord<I::File>>,
    position: &ReplicaPosition,
) -> Result<()> {
    let current = shared.snapshot().current;
    shared.persist_seal()?;
    current.sync().map_err(Error::segment(shared.namespace()))?;
    record
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .write(position)
}

/// Name of the marker a log closed cleanly leaves in its segment directory.
const CLEAN_CLOSE: &str = "clean-close";
/// Bytes of the marker: log id, incarnation, last committed frame_no, CRC32.
const CLEAN_CLOSE_SIZE: usize = 16 + 16 + 8 + 4;

/// Leaves the marker of a clean close in `dir`: the log `log_id`, in `incarnation`, closed with
/// everything up to `last_committed_frame_no` durable on disk.
pub(crate) fn mark_clean_close<I: Io>(
    io: &I,
    dir: &Path,
    log_id: Uuid,
    incarnation: Uuid,
    last_committed_frame_no: u64,
) -> std::io::Result<()> {
    let path = dir.join(CLEAN_CLOSE);
    match io.remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut buf = [0; CLEAN_CLOSE_SIZE];
    buf[0..16].copy_from_slice(log_id.as_bytes());
    buf[16..32].copy_from_slice(incarnation.as_bytes());
    buf[32..40].copy_from_slice(&last_committed_frame_no.to_le_bytes());
    let crc = crc32fast::hash(&buf[..40]);
    buf[40..44].copy_from_slice(&crc.to_le_bytes());
    let file = io.open(&path, OpenMode::CreateNew)?;
    file.write_all_at(&buf, 0)?;
    file.sync_data()?;
    io.sync_dir(dir)
}

/// Returns the incarnation an opening log continues: the one of the clean-close marker in
/// `dir` if it names `log_id` at `last_committed_frame_no`, else a new one. The marker is
/// removed durably first: a crash of this open must not leave it for the next.
pub(crate) fn take_clean_close<I: Io>(
    io: &I,
    dir: &Path,
    log_id: Uuid,
    last_committed_frame_no: u64,
) -> Result<Uuid> {
    let path = dir.join(CLEAN_CLOSE);
    let mut buf = [0; CLEAN_CLOSE_SIZE];
    let read = match io.open(&path, OpenMode::Read) {
        Ok(file) => file.read_exact_at(&mut buf, 0).is_ok(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(io.uuid()),
        Err(e) => return Err(Error::io(&path)(e)),
    };
    io.remove_file(&path).map_err(Error::io(&path))?;
    io.sync_dir(dir).map_err(Error::io(dir))?;
    let mut crc = [0; 4];
    crc.copy_from_slice(&buf[40..44]);
    let mut end = [0; 8];
    end.copy_from_slice(&buf[32..40]);
    let valid = read && u32::from_le_bytes(crc) == crc32fast::hash(&buf[..40]);
    let mut id = [0; 16];
    id.copy_from_slice(&buf[0..16]);
    if valid && Uuid::from_bytes(id) == log_id && u64::from_le_bytes(end) == last_committed_frame_no
    {
        let mut incarnation = [0; 16];
        incarnation.copy_from_slice(&buf[16..32]);
        return Ok(Uuid::from_bytes(incarnation));
    }
    Ok(io.uuid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_position_slot_round_trips_and_a_flipped_byte_voids_it() {
        let position = ReplicaPosition {
            identity: LogIdentity {
                log_id: Uuid::from_u128(7),
                generation: 3,
                incarnation: Uuid::from_u128(9),
            },
            applied: 1234,
        };
        let mut buf = encode_position(5, &position);
        assert_eq!(decode_position(&buf), Some((5, position)));
        buf[60] ^= 1;
        assert_eq!(decode_position(&buf), None);
    }

    #[test]
    fn the_position_record_keeps_the_newest_slot_when_the_other_is_torn() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("data");
        let io = libsql_wal_segment::StdIo;
        let at = |applied| ReplicaPosition {
            identity: LogIdentity {
                log_id: Uuid::from_u128(1),
                generation: 1,
                incarnation: Uuid::from_u128(2),
            },
            applied,
        };
        let (mut record, found) = PositionRecord::open(&io, &db).expect("open");
        assert_eq!(found, None);
        record.write(&at(10)).expect("write");
        record.write(&at(20)).expect("write");
        drop(record);
        let (record, found) = PositionRecord::open(&io, &db).expect("reopen");
        assert_eq!(found, Some(at(20)));
        // A torn write of the next slot (the one holding 10) leaves 20.
        let torn = encode_position(record.sequence + 1, &at(30));
        record
            .file
            .write_all_at(
                &torn[..20],
                ((record.sequence + 1) % 2) * POSITION_SLOT as u64,
            )
            .expect("torn write");
        drop(record);
        let (_, found) = PositionRecord::open(&io, &db).expect("reopen");
        assert_eq!(found, Some(at(20)));
    }

    #[test]
    fn a_clean_close_marker_is_taken_once_and_only_for_its_log_and_end() {
        let dir = tempfile::tempdir().expect("tempdir");
        let io = libsql_wal_segment::StdIo;
        let (log, incarnation) = (Uuid::from_u128(1), Uuid::from_u128(2));
        mark_clean_close(&io, dir.path(), log, incarnation, 40).expect("mark");
        assert_eq!(
            take_clean_close(&io, dir.path(), log, 40).expect("take"),
            incarnation
        );
        assert_ne!(
            take_clean_close(&io, dir.path(), log, 40).expect("take again"),
            incarnation,
            "a marker is taken once"
        );
        mark_clean_close(&io, dir.path(), log, incarnation, 40).expect("mark");
        assert_ne!(
            take_clean_close(&io, dir.path(), log, 39).expect("take"),
            incarnation,
            "a log that recovered to another end is a new incarnation"
        );
        mark_clean_close(&io, dir.path(), log, incarnation, 40).expect("mark");
        assert_ne!(
            take_clean_close(&io, dir.path(), Uuid::from_u128(3), 40).expect("take"),
            incarnation
        );
    }
}
