//! `WalRegistry`: one `SharedWal` per namespace, however many connections share it. Opening is
//! race-free (the first opener recovers the log while later ones wait for it), and a namespace
//! is resolved from the database path SQLite opens, by default from the name of the directory
//! holding the database file (`{root}/{namespace}/{file}`).
//!
//! One namespace, one database file: a namespace open for one file refuses another
//! (`Error::PathConflict`), so two files (an ATTACHed file beside a tenant's database, or the
//! same directory name under two roots) never share a log. A file to ATTACH goes where
//! `namespace_of` gives it a namespace of its own (for `namespace_from_directory`, a directory
//! of its own).
//!
//! A log poisoned by a failed seal (`Error::Poisoned`) is opened again from disk by the first
//! `open` after every connection to it closed.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use dashmap::DashMap;
use libsql_wal_backend::{ForkPoint, GenerationKind, GenerationRecord, NamespaceName, Storage};
use libsql_wal_segment::Io;
use tracing::{info, warn};

use crate::checkpointer::Checkpointer;
use crate::error::{Error, Result};
use crate::footer::{write_after_pages, Footer};
use crate::replication::Injector;
use crate::restore::{restore, sync_parent, RestoreOptions, RestoreReport, RestoreTarget};
use crate::shared::{segment_dir, CheckpointThreshold, LogSettings, SharedWal, SwapStrategy};

/// Returns the namespace of the database at `db_path` laid out as `{root}/{namespace}/{file}`:
/// the name of its directory. The default `RegistryConfig::namespace_of`.
pub fn namespace_from_directory(db_path: &Path) -> Result<NamespaceName> {
    let bad = |why: String| Error::NamespaceFromPath {
        path: db_path.to_path_buf(),
        why,
    };
    let dir = db_path.parent().and_then(Path::file_name).ok_or_else(|| {
        bad("the database file is not in a directory named after its namespace".into())
    })?;
    let dir = dir.to_str().ok_or_else(|| {
        bad(format!(
            "the directory name {:?} is not UTF-8, and a namespace name must be",
            dir.to_string_lossy()
        ))
    })?;
    dir.parse()
        .map_err(|e: libsql_wal_backend::Error| bad(e.to_string()))
}

/// The age check: every `interval`, seals the current segment of each open namespace whose
/// first commit is older than its `max_age`. Ends when the registry is dropped.
fn seal_old_segments<I: Io, S: Storage<File = I::File>>(
    wals: &std::sync::Weak<DashMap<NamespaceName, Arc<SharedWal<I, S>>>>,
    stopped: &std::sync::mpsc::Receiver<()>,
    interval: Duration,
) {
    while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
        let Some(wals) = wals.upgrade() else { return };
        let open: Vec<_> = wals.iter().map(|e| e.value().clone()).collect();
        drop(wals);
        for shared in open {
            if let Err(e) = shared.seal_if_too_old() {
                warn!(namespace = %shared.namespace(), error = %e, "sealing an old segment failed");
            }
        }
    }
}

/// Settings of a registry.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// When to seal segments, unless a namespace overrides it.
    pub swap: SwapStrategy,
    /// Per-namespace swap strategies.
    pub swap_overrides: Vec<(NamespaceName, SwapStrategy)>,
    /// How long a writer waits for the write lock before SQLite gets SQLITE_BUSY.
    pub writer_timeout: Duration,
    /// How long shutdown waits for segments to become durable.
    pub shutdown_timeout: Duration,
    /// Derives the namespace from the path of a database file SQLite opens.
    pub namespace_of: fn(&Path) -> Result<NamespaceName>,
    /// Background checkpoint threads: at most this many namespaces checkpoint at once.
    pub checkpoint_threads: usize,
    /// How often open namespaces are checked for a current segment older than `max_age`.
    pub age_check_interval: Duration,
    /// Whether opening a namespace may claim it in storage: restore it, take it over from the
    /// writer before, or start a generation of its own (true for a server). An operator's tool
    /// beside the server that owns its namespaces sets false: such an open then fails with
    /// `Error::WouldClaim`, and only a log that goes on where it left off opens.
    pub may_claim: bool,
    /// When the background checkpointer copies sealed segments into database files.
    pub checkpoint_after: CheckpointThreshold,
    /// The logs are read replicas: SQLite connections may read but not write them
    /// (`Error::ReadOnlyReplica`, SQLITE_READONLY); only an `Injector` writes, applying what
    /// the primary committed.
    pub replica: bool,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            swap: SwapStrategy::default(),
            swap_overrides: Vec::new(),
            writer_timeout: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(30),
            namespace_of: namespace_from_directory,
            checkpoint_threads: 2,
            age_check_interval: Duration::from_secs(1),
            may_claim: true,
            checkpoint_after: CheckpointThreshold::default(),
            replica: false,
        }
    }
}

/// Prefix of the file a rewind restores into, beside the database file.
const REWINDING_PREFIX: &str = ".rewinding-";

/// Removes the files rewinds of the database at `db_path` left behind (a crash during one);
/// the caller holds the namespace's opening lock.
fn remove_rewind_leftovers(db_path: &Path) {
    let Some(dir) = db_path.parent() else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry
            .file_name()
            .to_str()
            .is_some_and(|name| name.starts_with(REWINDING_PREFIX))
        {
            if let Err(e) = std::fs::remove_file(entry.path()) {
                warn!(path = %entry.path().display(), error = %e, "cannot remove a file a rewind left");
            }
        }
    }
}

/// What `WalRegistry::rewind` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewound {
    /// The restore of the point rewound to.
    pub restored: RestoreReport,
    /// The generation claimed: the namespace's writes go on in it.
    pub generation: u64,
    /// The point it continues from.
    pub parent: ForkPoint,
}

/// The logs of every open namespace.
pub struct WalRegistry<I: Io, S: Storage<File = I::File>> {
    /// File system access.
    io: Arc<I>,
    /// Durable storage.
    storage: Arc<S>,
    /// Settings.
    config: RegistryConfig,
    /// Open logs (shared with the age-check thread).
    wals: Arc<DashMap<NamespaceName, Arc<SharedWal<I, S>>>>,
    /// Namespaces being opened: whoever holds the lock opens, the others wait for it.
    opening: DashMap<NamespaceName, Arc<Mutex<()>>>,
    /// The age-check thread and the channel that stops it (it sees the channel close): both
    /// go when the registry is dropped, which waits for the thread.
    age_check: Option<(std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>)>,
    /// Background checkpoints for every namespace.
    checkpointer: Arc<Checkpointer>,
    /// Set by `shutdown`: no namespace opens after it.
    shut_down: AtomicBool,
}

/// Returns `path` with every symbolic link and `.`/`..` resolved, or as it is if it cannot be
/// (it does not exist).
fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

impl<I: Io, S: Storage<File = I::File>> WalRegistry<I, S> {
    /// Returns an empty registry.
    pub fn new(io: I, storage: S, config: RegistryConfig) -> Self {
        let wals = Arc::new(DashMap::new());
        let (stop, stopped) = std::sync::mpsc::channel();
        let watched = Arc::downgrade(&wals);
        let interval = config.age_check_interval;
        let age_check = match std::thread::Builder::new()
            .name("libsql-wal-age-check".into())
            .spawn(move || seal_old_segments(&watched, &stopped, interval))
        {
            Ok(thread) => Some((stop, thread)),
            Err(e) => {
                warn!(error = %e, "cannot start the age check: segments seal by size only");
                None
            }
        };
        WalRegistry {
            io: Arc::new(io),
            storage: Arc::new(storage),
            checkpointer: Arc::new(Checkpointer::start(config.checkpoint_threads)),
            config,
            wals,
            opening: DashMap::new(),
            age_check,
            shut_down: AtomicBool::new(false),
        }
    }

    /// Returns the storage.
    pub fn storage(&self) -> &Arc<S> {
        &self.storage
    }

    /// Returns the open log of `namespace` for a connection to `db_path`, or `None` if it must
    /// be opened: it is not open, or it is poisoned (and then, if `reopen` — the caller holds
    /// the namespace's opener lock — and no connection uses it any more, it is forgotten).
    fn open_log(
        &self,
        namespace: &NamespaceName,
        db_path: &Path,
        reopen: bool,
    ) -> Result<Option<Arc<SharedWal<I, S>>>> {
        let Some(shared) = self.wals.get(namespace).map(|s| s.clone()) else {
            return Ok(None);
        };
        if shared.db_path() != db_path && canonical(shared.db_path()) != canonical(db_path) {
            return Err(Error::PathConflict {
                namespace: namespace.clone(),
                open_path: shared.db_path().to_path_buf(),
                other_path: db_path.to_path_buf(),
            });
        }
        if shared.is_closed() || (shared.poisoned().is_some() && !reopen) {
            // Being closed: the caller waits for the closer on the opener lock.
            return Ok(None);
        }
        // `close` marks it closed only if no connection is attached, atomically with `attach`:
        // no connection can join it after this.
        if shared.poisoned().is_some() && shared.close() {
            if let Err(e) = shared.take_back_failed_commit() {
                // Opening it from the file now would bring the failed commit back.
                shared.reopen();
                return Err(e);
            }
            warn!(%namespace, "opening a poisoned log again from disk");
            shared.retire();
            self.wals
                .remove_if(namespace, |_, s| Arc::ptr_eq(s, &shared));
            return Ok(None);
        }
        Ok(Some(shared))
    }

    /// Returns the log of the database at `db_path`, opening (and recovering) it on first use.
    /// Fails with `PathConflict` if the namespace is open for another file, and with
    /// `RegistryShutDown` after `shutdown`.
    pub fn open(&self, db_path: &Path) -> Result<Arc<SharedWal<I, S>>> {
        if self.shut_down.load(Ordering::SeqCst) {
            return Err(Error::RegistryShutDown {
                path: db_path.to_path_buf(),
            });
        }
        let namespace = (self.config.namespace_of)(db_path)?;
        if let Some(shared) = self.open_log(&namespace, db_path, false)? {
            return Ok(shared);
        }
        let swap = self
            .config
            .swap_overrides
            .iter()
            .find(|(ns, _)| *ns == namespace)
            .map_or(self.config.swap, |(_, swap)| *swap);
        // One opener per namespace, holding only that namespace's lock: opening may recover
        // segments or restore from storage, and must not hold up other namespaces (a map
        // shard's lock would).
        loop {
            let opening = self.opening.entry(namespace.clone()).or_default().clone();
            let _opener = opening.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(shared) = self.open_log(&namespace, db_path, true)? {
                return Ok(shared);
            }
            let current = self
                .opening
                .get(&namespace)
                .is_some_and(|lock| Arc::ptr_eq(&lock, &opening));
            if !current {
                // The opener before us failed and dropped this lock: queue on the new one.
                continue;
            }
            remove_rewind_leftovers(db_path);
            let opened = SharedWal::open(
                namespace.clone(),
                self.io.clone(),
                self.storage.clone(),
                db_path,
                LogSettings {
                    swap,
                    writer_timeout: self.config.writer_timeout,
                    may_claim: self.config.may_claim,
                    checkpoint_after: self.config.checkpoint_after,
                    replica: self.config.replica,
                },
                self.checkpointer.clone(),
            );
            if let Ok(shared) = &opened {
                self.wals.insert(namespace.clone(), shared.clone());
            }
            self.opening
                .remove_if(&namespace, |_, lock| Arc::ptr_eq(lock, &opening));
            return opened;
        }
    }

    /// Closes `namespace`: seals it, waits (at most `shutdown_timeout`) until storage made
    /// everything durable, checkpoints it, and forgets it, here and in storage (its actor, its
    /// queue), so that nothing of it stays in memory or holds a file open. It opens again on
    /// demand. Fails with `Busy` while a connection is open on it (nothing changes then); a
    /// namespace that is not open is closed already.
    pub fn close(&self, namespace: &NamespaceName) -> Result<()> {
        self.while_opening(namespace, || self.close_while_opening(namespace))
    }

    /// Runs `work` holding `namespace`'s opening lock (so no open runs meanwhile), then forgets
    /// the lock. Only a lock still in the map counts: one its holder removed while this caller
    /// waited for it excludes nobody, and is given up for the map's.
    fn while_opening<T>(&self, namespace: &NamespaceName, work: impl FnOnce() -> T) -> T {
        loop {
            let opening = self.opening.entry(namespace.clone()).or_default().clone();
            let _opener = opening.lock().unwrap_or_else(PoisonError::into_inner);
            let current = self
                .opening
                .get(namespace)
                .is_some_and(|lock| Arc::ptr_eq(&lock, &opening));
            if !current {
                continue;
            }
            let done = work();
            self.opening
                .remove_if(namespace, |_, lock| Arc::ptr_eq(lock, &opening));
            return done;
        }
    }

    /// `close`, for a caller that holds the namespace's opening lock.
    fn close_while_opening(&self, namespace: &NamespaceName) -> Result<()> {
        let Some(shared) = self.get(namespace) else {
            return Ok(());
        };
        if !shared.close() {
            return Err(Error::Busy {
                namespace: namespace.clone(),
                why: "connections are open on it",
                stale_snapshot: false,
            });
        }
        let deadline = std::time::Instant::now() + self.config.shutdown_timeout;
        if let Err(e) = shared
            .seal_for_shutdown()
            .and_then(|()| shared.send_unsent())
            .and_then(|()| shared.finish_shutdown(deadline))
        {
            shared.reopen();
            return Err(e);
        }
        shared.retire();
        self.wals
            .remove_if(namespace, |_, s| Arc::ptr_eq(s, &shared));
        drop(shared);
        if !futures::executor::block_on(self.storage.forget(namespace)) {
            warn!(%namespace, "storage still holds segments of a closed namespace");
        }
        Ok(())
    }

    /// Rewinds the namespace of the database at `db_path` to an earlier point of its history,
    /// on purpose (point-in-time recovery in place): closes it (`Busy` while connections are
    /// open on it; it waits until everything the log holds is durable), restores `target` from
    /// storage beside the database file, claims a new generation in storage whose parent is
    /// that point (which fences off whoever writes the namespace, here or on another machine),
    /// and puts the restored file in place of the database, without the local log. The
    /// namespace opens again on demand and its writes go on in the new generation: restores of
    /// latest follow it, and the history left behind stays restorable by its generation number.
    ///
    /// A crash part way leaves the database as it was (before the claim) or a namespace whose
    /// next open restores the new generation's state (after it). Needs storage that keeps
    /// remote copies, and a registry that may claim (`RegistryConfig::may_claim`).
    #[tracing::instrument(skip(self, options), fields(db = %db_path.display(), %target))]
    pub fn rewind(
        &self,
        db_path: &Path,
        target: RestoreTarget,
        options: &RestoreOptions,
    ) -> Result<Rewound> {
        if self.shut_down.load(Ordering::SeqCst) {
            return Err(Error::RegistryShutDown {
                path: db_path.to_path_buf(),
            });
        }
        let namespace = (self.config.namespace_of)(db_path)?;
        if !self.storage.keeps_remote_copies() {
            return Err(Error::Unsupported {
                namespace,
                what: "a rewind without remote storage (there is no history to rewind to)"
                    .to_string(),
            });
        }
        if !self.config.may_claim {
            return Err(Error::WouldClaim {
                namespace,
                what: "claim a generation of its own to rewind it",
            });
        }
        // A local log this registry has not opened (since a restart, say) may hold frames that
        // storage does not: opened, it recovers them and hands them over, and the close below
        // waits until they are durable and copied into the database file.
        if self.get(&namespace).is_none() && segment_dir(db_path).exists() {
            self.open(db_path)?;
        }
        // Held throughout: nothing opens the namespace while its files are replaced.
        self.while_opening(&namespace, || {
            self.rewind_while_opening(&namespace, db_path, target, options)
        })
    }

    /// The steps of `rewind` under the namespace's opening lock: close, remove the local log,
    /// restore, claim, put the file in place.
    fn rewind_while_opening(
        &self,
        namespace: &NamespaceName,
        db_path: &Path,
        target: RestoreTarget,
        options: &RestoreOptions,
    ) -> Result<Rewound> {
        self.close_while_opening(namespace)?;
        if !futures::executor::block_on(self.storage.forget(namespace)) {
            return Err(Error::Busy {
                namespace: namespace.clone(),
                why: "storage still holds segments of it",
                stale_snapshot: false,
            });
        }
        // Every frame of the local log is durable and in the database file now: the log goes
        // first, so that a crash from here on leaves a file whose next open goes on from it
        // (before the claim) or replaces it with the new generation's state (after).
        let segments = segment_dir(db_path);
        match std::fs::remove_dir_all(&segments) {
            Ok(()) => sync_parent(&segments)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&segments)(e)),
        }
        remove_rewind_leftovers(db_path);
        let building = db_path.with_file_name(format!("{REWINDING_PREFIX}{}", self.io.uuid()));
        let rewound = self.rewind_into(namespace, db_path, &building, target, options);
        if rewound.is_err() {
            if let Err(e) = std::fs::remove_file(&building) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    warn!(path = %building.display(), error = %e, "cannot remove a rewind's restored file");
                }
            }
        }
        rewound
    }

    /// The steps of `rewind` after the local log is gone: restore into `building`, claim, put
    /// the file in place.
    fn rewind_into(
        &self,
        namespace: &NamespaceName,
        db_path: &Path,
        building: &Path,
        target: RestoreTarget,
        options: &RestoreOptions,
    ) -> Result<Rewound> {
        let storage_err = |source| Error::Storage {
            namespace: namespace.clone(),
            source,
        };
        let restored = restore(&*self.storage, namespace, target, building, options, None)?;
        let parent = ForkPoint {
            generation: restored.generation,
            frame_no: restored.end_frame_no,
        };
        let lineage = futures::executor::block_on(self.storage.lineage(namespace, None))
            .map_err(storage_err)?;
        let log_id = self.io.uuid();
        let record = GenerationRecord {
            number: lineage.next_number(),
            created_ms: u64::try_from(self.io.now().timestamp_millis()).unwrap_or(0),
            kind: GenerationKind::Log {
                log_id,
                start_frame_no: parent.frame_no + 1,
                parent: Some(parent),
                rewound: true,
            },
        };
        let created =
            futures::executor::block_on(self.storage.create_generation(namespace, &record, None))
                .map_err(storage_err)?;
        if !created {
            return Err(Error::ClaimConflict {
                namespace: namespace.clone(),
                generation: record.number,
            });
        }
        // From here the new generation is the namespace's history. The restored file says it
        // is that generation's, so that its log goes on from it; a crash before it is in place
        // leaves the old file, of an older generation, which the next open replaces with the
        // new generation's state.
        let io = Error::io(building);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(building)
            .map_err(&io)?;
        let footer = Footer {
            replication_index: parent.frame_no,
            log_id,
        };
        write_after_pages(&file, restored.db_pages, &footer).map_err(&io)?;
        file.sync_all().map_err(&io)?;
        drop(file);
        std::fs::rename(building, db_path).map_err(Error::io(db_path))?;
        sync_parent(db_path)?;
        info!(%namespace, generation = record.number, ?parent, "rewound");
        Ok(Rewound {
            restored,
            generation: record.number,
            parent,
        })
    }

    /// `open` for a connection: returns the log with the connection counted on it, so that
    /// `close` never closes a log a connection is opening on.
    pub(crate) fn open_connection(&self, db_path: &Path) -> Result<Arc<SharedWal<I, S>>> {
        loop {
            let shared = self.open(db_path)?;
            if shared.attach() {
                return Ok(shared);
            }
            // Closed between `open` and here: the next `open` waits for the closer.
        }
    }

    /// Opens the injector of the replica database at `db_path` (see `Injector::open`), opening
    /// its log as `open` does; the injector keeps the log from being closed while it lives.
    pub fn injector(&self, db_path: &Path) -> Result<Injector<I, S>> {
        loop {
            match Injector::open(self.open(db_path)?) {
                // Closed between `open` and here: the next `open` waits for the closer.
                Err(Error::Closed { .. }) => continue,
                opened => return opened,
            }
        }
    }

    /// Returns the log of `namespace` if it is open.
    pub fn get(&self, namespace: &NamespaceName) -> Option<Arc<SharedWal<I, S>>> {
        self.wals.get(namespace).map(|s| s.clone())
    }

    /// Shuts every open namespace down and forgets it, then stops the background
    /// checkpointer: first seals every namespace, then hands their segments to storage from a
    /// thread of its own (a namespace whose queue stays full, in a bucket outage, holds up no
    /// deadline) while waiting for all of them to be durable against one deadline
    /// (`shutdown_timeout` from then, not per namespace), checkpointing each. Opens fail from
    /// the start of it. Returns the first error after trying them all; what did not become
    /// durable stays on local disk and is handed over at the next start.
    pub fn shutdown(&self) -> Result<()> {
        self.shut_down.store(true, Ordering::SeqCst);
        let mut first_error = None;
        let mut failed = |namespace: &NamespaceName, e: Error| {
            warn!(%namespace, error = %e, "namespace shutdown failed");
            first_error.get_or_insert(e);
        };
        let namespaces: Vec<_> = self.wals.iter().map(|e| e.key().clone()).collect();
        let mut sealed = Vec::with_capacity(namespaces.len());
        for namespace in namespaces {
            if let Some((_, shared)) = self.wals.remove(&namespace) {
                match shared.seal_for_shutdown() {
                    Ok(()) => sealed.push(shared),
                    Err(e) => failed(&namespace, e),
                }
            }
        }
        let deadline = std::time::Instant::now() + self.config.shutdown_timeout;
        let senders: Vec<_> = sealed.clone();
        let spawned = std::thread::Builder::new()
            .name("libsql-wal-shutdown-send".into())
            .spawn(move || {
                for shared in senders {
                    if let Err(e) = shared.send_unsent() {
                        warn!(namespace = %shared.namespace(), error = %e, "handing the last segments to storage failed");
                    }
                }
            });
        if let Err(e) = spawned {
            warn!(error = %e, "cannot start a thread to hand the last segments to storage; handing them over here");
            for shared in &sealed {
                if let Err(e) = shared.send_unsent() {
                    failed(shared.namespace(), e);
                }
            }
        }
        for shared in sealed {
            match shared.finish_shutdown(deadline) {
                // At rest: the next open continues its incarnation (replicas resume).
                Ok(()) => shared.retire(),
                Err(e) => failed(shared.namespace(), e),
            }
        }
        self.checkpointer.stop();
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Dropping a registry (without `shutdown`) leaves nothing of it running on the namespaces'
/// files: it waits for the age check and for the background checkpoints queued so far, so that
/// another registry (or process) opening the same files next finds them at rest.
impl<I: Io, S: Storage<File = I::File>> Drop for WalRegistry<I, S> {
    fn drop(&mut self) {
        if let Some((stop, thread)) = self.age_check.take() {
            drop(stop);
            if thread.join().is_err() {
                tracing::error!("the age-check thread panicked");
            }
        }
        // Writes each log's newest seal, and stops what runs in the background on its files:
        // a registry (or process) opened next over them finds them at rest.
        for entry in self.wals.iter() {
            entry.value().retire();
        }
        self.checkpointer.stop();
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::ffi::OsStrExt;

    use super::*;

    #[test]
    fn a_namespace_comes_from_the_directory_and_a_bad_one_says_what_is_wrong() {
        let ns = namespace_from_directory(Path::new("/data/tenant-1/data")).expect("a namespace");
        assert_eq!(ns.as_str(), "tenant-1");
        let err = namespace_from_directory(Path::new("data")).expect_err("no directory");
        assert!(err.to_string().contains("not in a directory"), "{err}");
        let bytes = b"/data/caf\xe9/data";
        let err = namespace_from_directory(Path::new(std::ffi::OsStr::from_bytes(bytes)))
            .expect_err("not UTF-8");
        assert!(err.to_string().contains("is not UTF-8"), "{err}");
    }
}
