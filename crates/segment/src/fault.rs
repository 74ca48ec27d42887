//! A fault-injecting `Io` for tests: wraps another `Io` and fails the Nth write, fsync or
//! `set_len`, or the next fsync of one file, or makes the Nth write short (a prefix lands on
//! disk, then the call fails), as a crash or a full disk would. Faults are armed on a shared
//! `FaultPlan` and fire once.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::io::{FileExt, Io, OpenMode};

/// How an armed write fault behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteFault {
    /// The write fails and nothing is written.
    Fail,
    /// Half of the buffer is written, then the write fails.
    Short,
}

/// The faults armed for every file opened through one `FaultyIo`, and the counts of calls made.
#[derive(Debug, Default)]
pub struct FaultPlan {
    /// Number of `write_all_at` calls made so far.
    writes: AtomicU64,
    /// Number of `sync_data` calls made so far.
    syncs: AtomicU64,
    /// The armed write fault: the write count at which it fires, and how.
    write_fault: Mutex<Option<(u64, WriteFault)>>,
    /// The armed fsync fault: the sync count at which it fires.
    sync_fault: Mutex<Option<u64>>,
    /// Number of `set_len` calls made so far.
    set_lens: AtomicU64,
    /// The armed `set_len` fault: the call count at which it fires.
    set_len_fault: Mutex<Option<u64>>,
    /// The file whose next `sync_data` fails, if one is armed.
    sync_fault_of: Mutex<Option<PathBuf>>,
}

impl FaultPlan {
    /// Returns the number of writes made so far.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::SeqCst)
    }

    /// Returns the number of fsyncs made so far.
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::SeqCst)
    }

    /// Arms `fault` on the `n`th write from now (0 = the next one).
    pub fn fault_write(&self, n: u64, fault: WriteFault) {
        let at = self.writes() + n;
        *self
            .write_fault
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some((at, fault));
    }

    /// Arms a failure of the `n`th fsync from now (0 = the next one).
    pub fn fail_sync(&self, n: u64) {
        arm(&self.syncs, &self.sync_fault, n);
    }

    /// Arms a failure of the next `sync_data` of the file opened at `path`.
    pub fn fail_next_sync_of(&self, path: &Path) {
        *self
            .sync_fault_of
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(path.to_path_buf());
    }

    /// Returns true while the fault `fail_next_sync_of` armed has not fired.
    pub fn sync_of_pending(&self) -> bool {
        self.sync_fault_of
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    /// Returns true, disarming it, if the next sync of the file at `path` must fail.
    fn on_sync_of(&self, path: &Path) -> bool {
        let mut armed = self
            .sync_fault_of
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if armed.as_deref() == Some(path) {
            *armed = None;
            true
        } else {
            false
        }
    }

    /// Arms a failure of the `n`th `set_len` (truncate or extend) from now (0 = the next one).
    pub fn fail_set_len(&self, n: u64) {
        arm(&self.set_lens, &self.set_len_fault, n);
    }

    /// Counts a `set_len` and returns true if it must fail.
    fn on_set_len(&self) -> bool {
        fires(&self.set_lens, &self.set_len_fault)
    }

    /// Counts a write and returns the fault to apply to it, if one is armed for it.
    fn on_write(&self) -> Option<WriteFault> {
        let count = self.writes.fetch_add(1, Ordering::SeqCst);
        let mut armed = self
            .write_fault
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match *armed {
            Some((at, fault)) if at == count => {
                *armed = None;
                Some(fault)
            }
            _ => None,
        }
    }

    /// Counts an fsync and returns true if it must fail.
    fn on_sync(&self) -> bool {
        fires(&self.syncs, &self.sync_fault)
    }
}

/// Arms `armed` for the `n`th call counted on `calls` from now (0 = the next one).
fn arm(calls: &AtomicU64, armed: &Mutex<Option<u64>>, n: u64) {
    let at = calls.load(Ordering::SeqCst) + n;
    *armed.lock().unwrap_or_else(PoisonError::into_inner) = Some(at);
}

/// Counts a call on `calls` and returns true, disarming it, if `armed` is set for this one.
fn fires(calls: &AtomicU64, armed: &Mutex<Option<u64>>) -> bool {
    let count = calls.fetch_add(1, Ordering::SeqCst);
    let mut armed = armed.lock().unwrap_or_else(PoisonError::into_inner);
    if *armed == Some(count) {
        *armed = None;
        true
    } else {
        false
    }
}

fn injected(what: &str) -> io::Error {
    io::Error::other(format!("injected fault: {what}"))
}

/// An `Io` whose files obey a shared `FaultPlan`.
#[derive(Debug, Clone)]
pub struct FaultyIo<I> {
    /// The real `Io` that does the work when no fault fires.
    inner: I,
    /// The plan shared by every file this `Io` opens.
    plan: Arc<FaultPlan>,
}

impl<I: Io> FaultyIo<I> {
    /// Wraps `inner` with an empty plan.
    pub fn new(inner: I) -> Self {
        FaultyIo {
            inner,
            plan: Arc::default(),
        }
    }

    /// Returns the plan, to arm faults and read counts.
    pub fn plan(&self) -> &Arc<FaultPlan> {
        &self.plan
    }
}

/// A file opened through `FaultyIo`.
#[derive(Debug)]
pub struct FaultyFile<F> {
    /// The real file.
    inner: F,
    /// The plan of the `FaultyIo` that opened it.
    plan: Arc<FaultPlan>,
    /// Where it was opened (an anonymous temporary file: its directory).
    path: PathBuf,
}

impl<F: FileExt> FileExt for FaultyFile<F> {
    fn size(&self) -> io::Result<u64> {
        self.inner.size()
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        if self.plan.on_set_len() {
            return Err(injected("set_len failed"));
        }
        self.inner.set_len(len)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        match self.plan.on_write() {
            None => self.inner.write_all_at(buf, offset),
            Some(WriteFault::Fail) => Err(injected("write failed")),
            Some(WriteFault::Short) => {
                self.inner.write_all_at(&buf[..buf.len() / 2], offset)?;
                Err(injected("short write"))
            }
        }
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.inner.read_exact_at(buf, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        if self.plan.on_sync() || self.plan.on_sync_of(&self.path) {
            return Err(injected("fsync failed"));
        }
        self.inner.sync_data()
    }
}

impl<I: Io> Io for FaultyIo<I> {
    type File = FaultyFile<I::File>;

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.inner.create_dir_all(dir)
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Self::File> {
        Ok(FaultyFile {
            inner: self.inner.open(path, mode)?,
            plan: self.plan.clone(),
            path: path.to_path_buf(),
        })
    }

    fn tempfile(&self, dir: &Path) -> io::Result<Self::File> {
        Ok(FaultyFile {
            inner: self.inner.tempfile(dir)?,
            plan: self.plan.clone(),
            path: dir.to_path_buf(),
        })
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)
    }

    fn rename_no_replace(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename_no_replace(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.inner.remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        if self.plan.on_sync() {
            return Err(injected("directory fsync failed"));
        }
        self.inner.sync_dir(dir)
    }

    fn now(&self) -> DateTime<Utc> {
        self.inner.now()
    }

    fn uuid(&self) -> Uuid {
        self.inner.uuid()
    }

    fn random_u32(&self) -> u32 {
        self.inner.random_u32()
    }
}
