//! The namespaces a server hosts: each one a database file `{data}/namespaces/{ns}/data` on
//! this WAL, whose log goes to durable storage through `ActorStorage`. `Host` is what the
//! HTTP side asks of them (open a connection, create, delete, describe, close when idle);
//! `WalHost` is it over a `WalRegistry`. Every method blocks: call them on the SQL threads.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use dashmap::{DashMap, DashSet};
use libsql_sys::rusqlite::OpenFlags;
use libsql_wal::{
    LibsqlWalManager, ReplicationSource, RestoreOptions, RestoreTarget, Rewound, StepInjector,
    WalRegistry,
};
use libsql_wal_backend::{Backend, BackendExt, NamespaceName, Storage};
use libsql_wal_segment::StdIo;
use libsql_wal_supervisor::{ActorStorage, NamespaceMetrics, StorageMetrics};
use tracing::{info, warn};

use crate::error::{Error, Result};
use crate::streams::DbConn;

/// How long SQLite retries a statement that found the database busy.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The durable storage of a server.
pub type ServerStorage<B> = ActorStorage<B, std::fs::File>;

/// What one namespace is and does now.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NamespaceInfo {
    /// Its name.
    pub name: String,
    /// Whether its log is open (it closes when idle and opens on demand).
    pub open: bool,
    /// The newest committed frame_no (0 when closed or empty).
    pub last_committed_frame_no: u64,
    /// The newest frame_no durable in storage.
    pub durable_frame_no: u64,
    /// Frames committed and not yet durable.
    pub durable_lag_frames: u64,
    /// The newest frame_no copied into the database file.
    pub checkpointed_frame_no: u64,
    /// Sealed segments on local disk.
    pub sealed_segments: usize,
    /// Sealed segments storage has not taken yet.
    pub pending_segments: usize,
    /// Segments queued in storage, not yet durable.
    pub queued_segments: usize,
    /// Seals that failed and were retried.
    pub seal_failures: u64,
    /// Commits since the log opened.
    pub commits: u64,
    /// Seals since the log opened.
    pub seals: u64,
    /// Checkpoints (that copied at least one segment) since the log opened.
    pub checkpoints: u64,
    /// Segments storage made durable since the server started.
    pub segments_stored: u64,
    /// Bytes storage uploaded (data and index) since the server started.
    pub bytes_uploaded: u64,
    /// Failed uploads (each one retried) since the server started.
    pub upload_retries: u64,
    /// How long the oldest segment not yet durable has waited, in milliseconds.
    pub durable_lag_ms: u64,
    /// Bytes on local disk: the database file and its segments.
    pub local_bytes: u64,
    /// "ok", or what is wrong (a poisoned log, failing uploads).
    pub health: String,
}

/// What the HTTP side asks of the namespaces.
pub trait Host: Send + Sync + 'static {
    /// Whether `namespace` exists (and is not being deleted).
    fn exists(&self, namespace: &NamespaceName) -> bool;
    /// Opens a connection on `namespace` (which exists).
    fn connect(&self, namespace: &NamespaceName) -> Result<Box<dyn DbConn>>;
    /// Creates `namespace`: fails with `NamespaceExists` if it exists. A bucket that holds
    /// history of that name restores it.
    fn create(&self, namespace: &NamespaceName) -> Result<()>;
    /// Closes `namespace` (no connection may be open on it), removes its files and, unless
    /// `keep_backup`, its objects in storage.
    fn delete(&self, namespace: &NamespaceName, keep_backup: bool) -> Result<()>;
    /// Rewinds `namespace` (no connection may be open on it) to `target` in its stored history:
    /// its writes go on from that point in a new generation (`WalRegistry::rewind`).
    fn rewind(&self, namespace: &NamespaceName, target: RestoreTarget) -> Result<Rewound>;
    /// Every namespace, in name order.
    fn list(&self) -> Result<Vec<NamespaceName>>;
    /// What `namespace` is doing.
    /// What `namespace` is doing; `storage` is its entry in `storage_metrics`, if it has one.
    fn info(
        &self,
        namespace: &NamespaceName,
        storage: Option<&NamespaceMetrics>,
    ) -> Result<NamespaceInfo>;
    /// What the storage pipeline is doing.
    fn storage_metrics(&self) -> Result<StorageMetrics>;
    /// Checkpoints `namespace` now; returns the segments copied into the database file. An
    /// unknown namespace is `NamespaceNotFound`.
    fn checkpoint(&self, namespace: &NamespaceName) -> Result<usize>;
    /// Seals `namespace`'s current segment now; false if a writer held the lock. An unknown
    /// namespace is `NamespaceNotFound`.
    fn seal(&self, namespace: &NamespaceName) -> Result<bool>;
    /// Notes that `namespace` was used now (for the idle close).
    fn touch(&self, namespace: &NamespaceName);
    /// Closes the namespaces unused for `idle` with no connection open; returns how many.
    fn close_idle(&self, idle: Duration) -> usize;
    /// Shuts the registry down (seal, durable, checkpoint), then the storage; returns the
    /// namespaces that did not shut down cleanly.
    fn shutdown(&self) -> Result<()>;
    /// The log of `namespace` (which exists, and is opened), as a primary serves it to
    /// replicas.
    fn replication_source(&self, namespace: &NamespaceName) -> Result<Arc<dyn ReplicationSource>>;
    /// An injector on the log of `namespace`, which is made (empty) if it does not exist: a
    /// replica applies its primary's steps with it.
    fn injector(&self, namespace: &NamespaceName) -> Result<Box<dyn StepInjector>>;
}

/// When a commit is synced to local disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// At seal: a crash may lose the newest commits not yet sealed (the bucket holds what was
    /// sealed and uploaded). SQLite's `synchronous=NORMAL`.
    Normal,
    /// At every commit. SQLite's `synchronous=FULL`.
    Full,
}

impl Durability {
    fn pragma(self) -> &'static str {
        match self {
            Durability::Normal => "PRAGMA synchronous=NORMAL",
            Durability::Full => "PRAGMA synchronous=FULL",
        }
    }
}

/// The namespaces of a server on a `WalRegistry` over `ActorStorage<B>`.
pub struct WalHost<B: Backend> {
    root: PathBuf,
    durability: Durability,
    manager: LibsqlWalManager<StdIo, ServerStorage<B>>,
    runtime: tokio::runtime::Handle,
    last_used: DashMap<NamespaceName, Instant>,
    /// Namespaces being deleted: nothing opens them meanwhile.
    deleting: DashSet<NamespaceName>,
    /// Namespaces being created: they do not exist for requests until the create is done.
    creating: DashSet<NamespaceName>,
    /// Per namespace, held shared while something opens it (a connection, a seal, a
    /// checkpoint, a create) and exclusively while a delete marks it: nothing opens a
    /// namespace once its delete began, and a delete waits for opens in progress.
    gates: DashMap<NamespaceName, Arc<RwLock<()>>>,
}

impl<B: Backend> WalHost<B> {
    /// Hosts the namespaces under `{data_dir}/namespaces` on `registry`, their connections
    /// syncing commits as `durability` says; `runtime` runs the storage's async calls from the
    /// SQL threads.
    pub fn new(
        data_dir: &Path,
        registry: Arc<WalRegistry<StdIo, ServerStorage<B>>>,
        runtime: tokio::runtime::Handle,
        durability: Durability,
    ) -> Result<Self> {
        let root = data_dir.join("namespaces");
        std::fs::create_dir_all(&root).map_err(|source| Error::Io {
            path: root.clone(),
            source,
        })?;
        Ok(WalHost {
            root,
            durability,
            manager: LibsqlWalManager::new(registry),
            runtime,
            last_used: DashMap::new(),
            deleting: DashSet::new(),
            creating: DashSet::new(),
            gates: DashMap::new(),
        })
    }

    /// Runs `f` with `namespace`'s gate; the gate is forgotten once nobody holds it, so the
    /// map holds only namespaces something is opening or deleting now.
    fn with_gate<T>(&self, namespace: &NamespaceName, f: impl FnOnce(&RwLock<()>) -> T) -> T {
        let gate = self.gates.entry(namespace.clone()).or_default().clone();
        let out = f(&gate);
        drop(gate);
        // Under the map's lock: nobody can take a clone between the count and the removal.
        self.gates
            .remove_if(namespace, |_, gate| Arc::strong_count(gate) == 1);
        out
    }

    /// Runs `open` unless `namespace` is gone or being deleted (then `NamespaceNotFound`).
    fn while_open<T>(
        &self,
        namespace: &NamespaceName,
        open: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        self.with_gate(namespace, |gate| {
            let _opening = gate.read().unwrap_or_else(PoisonError::into_inner);
            if !self.exists(namespace) {
                return Err(Error::NamespaceNotFound(namespace.clone()));
            }
            open()
        })
    }

    /// Runs `work` on the log of `namespace` (opening it), which must exist.
    fn on_log<T>(
        &self,
        namespace: &NamespaceName,
        work: impl FnOnce(&libsql_wal::SharedWal<StdIo, ServerStorage<B>>) -> libsql_wal::Result<T>,
    ) -> Result<T> {
        self.while_open(namespace, || {
            work(&*self.log(namespace)?).map_err(|source| Error::Wal {
                namespace: namespace.clone(),
                source,
            })
        })
    }

    /// Returns the open log of `namespace`, opening it.
    fn log(
        &self,
        namespace: &NamespaceName,
    ) -> Result<Arc<libsql_wal::SharedWal<StdIo, ServerStorage<B>>>> {
        self.touch(namespace);
        self.registry()
            .open(&self.db_path(namespace))
            .map_err(|source| Error::Wal {
                namespace: namespace.clone(),
                source,
            })
    }

    /// Opens a connection; only `create` may make the database file (`create_file`).
    fn open_connection(
        &self,
        namespace: &NamespaceName,
        create_file: bool,
    ) -> Result<Box<dyn DbConn>> {
        self.touch(namespace);
        let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI;
        if create_file {
            flags |= OpenFlags::SQLITE_OPEN_CREATE;
        }
        let conn = libsql_sys::Connection::open(
            self.db_path(namespace),
            flags,
            self.manager.clone(),
            // SQLite never checkpoints on its own: sealing and checkpointing are the WAL's.
            0,
            None,
        )
        .map_err(|e| Error::Connect {
            namespace: namespace.clone(),
            source: e,
        })?;
        // An autocommit write whose snapshot went stale is retried by SQLite from a new one
        // (the WAL itself queues writers fairly).
        conn.busy_timeout(BUSY_TIMEOUT)
            .and_then(|()| conn.execute_batch(self.durability.pragma()))
            .map_err(|e| Error::Connect {
                namespace: namespace.clone(),
                source: e,
            })?;
        Ok(Box::new(conn))
    }

    /// Makes a new namespace's directory, opens its log (restoring what the bucket holds of
    /// the name) and makes its database file; on failure removes what it made, unless the
    /// log could not be closed (then the namespace stays, to be deleted).
    fn create_files(&self, namespace: &NamespaceName) -> Result<()> {
        let dir = self.dir(namespace);
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(Error::NamespaceExists(namespace.clone()))
            }
            Err(source) => return Err(Error::Io { path: dir, source }),
        }
        let made = self
            .log(namespace)
            .and_then(|_| self.open_connection(namespace, true));
        if let Err(e) = made {
            if let Err(close) = self.registry().close(namespace) {
                warn!(%namespace, error = %close, "a failed create left its log open; delete the namespace");
                return Err(e);
            }
            if let Err(remove) = std::fs::remove_dir_all(&dir) {
                warn!(%namespace, error = %remove, "a failed create left its directory");
            }
            return Err(e);
        }
        info!(%namespace, "namespace created");
        Ok(())
    }

    /// Makes a replica's namespace: its directory and an empty database file (no SQL
    /// connection: a replica's log takes no writes from SQLite), unless it exists.
    fn create_replica_files(&self, namespace: &NamespaceName) -> Result<()> {
        let dir = self.dir(namespace);
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::Io { path, source }
        };
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
            Err(e) => return Err(io_err(&dir)(e)),
        }
        let db = self.db_path(namespace);
        std::fs::File::create_new(&db)
            .and_then(|f| f.sync_all())
            .map_err(io_err(&db))?;
        for synced in [&dir, &self.root] {
            std::fs::File::open(synced)
                .and_then(|d| d.sync_all())
                .map_err(io_err(synced))?;
        }
        info!(%namespace, "replica namespace created");
        Ok(())
    }

    fn registry(&self) -> &Arc<WalRegistry<StdIo, ServerStorage<B>>> {
        self.manager.registry()
    }

    fn dir(&self, namespace: &NamespaceName) -> PathBuf {
        self.root.join(namespace.as_str())
    }

    fn db_path(&self, namespace: &NamespaceName) -> PathBuf {
        self.dir(namespace).join("data")
    }

    fn local_bytes(&self, namespace: &NamespaceName) -> u64 {
        let mut total = 0;
        let db = self.db_path(namespace);
        total += std::fs::metadata(&db).map_or(0, |m| m.len());
        let mut segments = db.into_os_string();
        segments.push("-segments");
        if let Ok(entries) = std::fs::read_dir(PathBuf::from(segments)) {
            for entry in entries.flatten() {
                total += entry.metadata().map_or(0, |m| m.len());
            }
        }
        total
    }
}

impl<B: Backend> Host for WalHost<B> {
    fn exists(&self, namespace: &NamespaceName) -> bool {
        !self.deleting.contains(namespace)
            && !self.creating.contains(namespace)
            && self.dir(namespace).is_dir()
    }

    #[tracing::instrument(skip(self), fields(namespace = %namespace))]
    fn connect(&self, namespace: &NamespaceName) -> Result<Box<dyn DbConn>> {
        self.while_open(namespace, || self.open_connection(namespace, false))
    }

    #[tracing::instrument(skip(self), fields(namespace = %namespace))]
    fn create(&self, namespace: &NamespaceName) -> Result<()> {
        self.with_gate(namespace, |gate| {
            let _opening = gate.read().unwrap_or_else(PoisonError::into_inner);
            if self.deleting.contains(namespace) {
                return Err(Error::NamespaceBusy {
                    namespace: namespace.clone(),
                    why: "it is being deleted",
                });
            }
            if !self.creating.insert(namespace.clone()) {
                return Err(Error::NamespaceBusy {
                    namespace: namespace.clone(),
                    why: "it is being created",
                });
            }
            let created = self.create_files(namespace);
            self.creating.remove(namespace);
            created
        })
    }

    #[tracing::instrument(skip(self), fields(namespace = %namespace))]
    fn delete(&self, namespace: &NamespaceName, keep_backup: bool) -> Result<()> {
        // Waits for opens in progress; none starts after this.
        self.with_gate(namespace, |gate| {
            let _deleting = gate.write().unwrap_or_else(PoisonError::into_inner);
            if !self.exists(namespace) {
                return Err(Error::NamespaceNotFound(namespace.clone()));
            }
            self.deleting.insert(namespace.clone());
            Ok(())
        })?;
        let result = (|| {
            self.registry()
                .close(namespace)
                .map_err(|source| Error::Wal {
                    namespace: namespace.clone(),
                    source,
                })?;
            // Storage forgets what it knew of the namespace (its durable frame_no among it),
            // also when its log was not open: a namespace created again under this name
            // starts from nothing there.
            let storage = self.registry().storage().clone();
            let ns = namespace.clone();
            if !self
                .runtime
                .block_on(async move { storage.forget(&ns).await })
            {
                return Err(Error::NamespaceBusy {
                    namespace: namespace.clone(),
                    why: "storage still holds segments of it; try again",
                });
            }
            // The bucket first: a deletion mark ends the namespace's history before anything
            // is removed (with `keep_backup`, the older generations stay, restorable by
            // number), so a namespace created again under the name starts empty even after a
            // delete cut short; running the delete again finishes it.
            let backend = self.registry().storage().backend().clone();
            let ns = namespace.clone();
            let now_ms = libsql_wal_backend::now_ms();
            let deleted = self
                .runtime
                .block_on(async move {
                    backend
                        .delete_namespace(backend.default_config(), &ns, keep_backup, now_ms)
                        .await
                })
                .map_err(|source| Error::Storage {
                    namespace: namespace.clone(),
                    source,
                })?;
            info!(
                objects = deleted.objects_deleted,
                mark = ?deleted.mark,
                "namespace deleted from storage"
            );
            let dir = self.dir(namespace);
            std::fs::remove_dir_all(&dir).map_err(|source| Error::Io { path: dir, source })
        })();
        self.last_used.remove(namespace);
        self.deleting.remove(namespace);
        if result.is_ok() {
            info!(keep_backup, "namespace deleted");
        }
        result
    }

    #[tracing::instrument(skip(self), fields(namespace = %namespace, %target))]
    fn rewind(&self, namespace: &NamespaceName, target: RestoreTarget) -> Result<Rewound> {
        // Waits for opens in progress; none starts until the rewind is done.
        self.with_gate(namespace, |gate| {
            let _rewinding = gate.write().unwrap_or_else(PoisonError::into_inner);
            if !self.exists(namespace) {
                return Err(Error::NamespaceNotFound(namespace.clone()));
            }
            self.registry()
                .rewind(&self.db_path(namespace), target, &RestoreOptions::default())
                .map_err(|source| Error::Wal {
                    namespace: namespace.clone(),
                    source,
                })
        })
    }

    fn list(&self) -> Result<Vec<NamespaceName>> {
        let mut names = Vec::new();
        let entries = std::fs::read_dir(&self.root).map_err(|source| Error::Io {
            path: self.root.clone(),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| Error::Io {
                path: self.root.clone(),
                source,
            })?;
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            match name.parse::<NamespaceName>() {
                Ok(ns) if entry.path().is_dir() && !self.deleting.contains(&ns) => names.push(ns),
                Ok(_) => {}
                Err(e) => warn!(name, error = %e, "skipping a directory that is not a namespace"),
            }
        }
        names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        Ok(names)
    }

    fn info(
        &self,
        namespace: &NamespaceName,
        stored: Option<&NamespaceMetrics>,
    ) -> Result<NamespaceInfo> {
        if !self.exists(namespace) {
            return Err(Error::NamespaceNotFound(namespace.clone()));
        }
        let shared = self.registry().get(namespace);
        let (commits, seals, checkpoints) = shared.as_ref().map_or((0, 0, 0), |s| s.activity());
        let last_committed_frame_no = shared.as_ref().map_or(0, |s| s.last_committed_frame_no());
        let durable_frame_no = shared
            .as_ref()
            .map(|s| s.durable_frame_no())
            .or(stored.map(|m| m.durable_frame_no))
            .unwrap_or(0);
        let mut problems = Vec::new();
        if let Some(why) = shared.as_ref().and_then(|s| s.poisoned()) {
            problems.push(format!("log poisoned: {why}"));
        }
        if let Some(newer) = shared.as_ref().and_then(|s| s.fenced()) {
            problems.push(format!(
                "read-only: fenced off by generation {newer}, which took the namespace over"
            ));
        }
        if let Some(m) = stored {
            if !m.healthy {
                problems.push(format!(
                    "uploads failing: {}",
                    m.last_error.as_deref().unwrap_or("unknown error")
                ));
            }
        }
        Ok(NamespaceInfo {
            name: namespace.as_str().to_string(),
            open: shared.is_some(),
            last_committed_frame_no,
            durable_frame_no,
            durable_lag_frames: last_committed_frame_no.saturating_sub(durable_frame_no),
            checkpointed_frame_no: shared.as_ref().map_or(0, |s| s.checkpointed_frame_no()),
            sealed_segments: shared.as_ref().map_or(0, |s| s.sealed_segment_count()),
            pending_segments: shared.as_ref().map_or(0, |s| s.pending_segments()),
            queued_segments: stored.map_or(0, |m| m.queue_depth),
            seal_failures: shared.as_ref().map_or(0, |s| s.seal_failures()),
            commits,
            seals,
            checkpoints,
            segments_stored: stored.map_or(0, |m| m.segments_stored),
            bytes_uploaded: stored.map_or(0, |m| m.bytes_sent),
            upload_retries: stored.map_or(0, |m| m.retries),
            durable_lag_ms: stored.map_or(0, |m| m.durable_lag.as_millis() as u64),
            local_bytes: self.local_bytes(namespace),
            health: if problems.is_empty() {
                "ok".to_string()
            } else {
                problems.join("; ")
            },
        })
    }

    fn storage_metrics(&self) -> Result<StorageMetrics> {
        let storage = self.registry().storage().clone();
        self.runtime
            .block_on(async move { storage.metrics().await })
            .map_err(|source| Error::StorageStopped { source })
    }

    fn checkpoint(&self, namespace: &NamespaceName) -> Result<usize> {
        self.on_log(namespace, |log| log.checkpoint())
    }

    fn seal(&self, namespace: &NamespaceName) -> Result<bool> {
        self.on_log(namespace, |log| log.seal_now())
    }

    fn touch(&self, namespace: &NamespaceName) {
        self.last_used.insert(namespace.clone(), Instant::now());
    }

    fn close_idle(&self, idle: Duration) -> usize {
        let now = Instant::now();
        let due: Vec<NamespaceName> = self
            .last_used
            .iter()
            .filter(|e| now.duration_since(*e.value()) >= idle)
            .map(|e| e.key().clone())
            .collect();
        if due.is_empty() {
            return 0;
        }
        // Namespaces whose uploads fail or wait: closing one would wait for durability (up to
        // the shutdown timeout) while holding up its own opens.
        let stalled: std::collections::HashSet<String> = match self.storage_metrics() {
            Ok(metrics) => metrics
                .namespaces
                .iter()
                .filter(|m| !m.healthy || m.queue_depth > 0)
                .map(|m| m.namespace.as_str().to_string())
                .collect(),
            Err(e) => {
                warn!(error = %e, "no storage metrics: no idle namespace is closed now");
                return 0;
            }
        };
        let mut closed = 0;
        for namespace in due {
            if self.deleting.contains(&namespace) || stalled.contains(namespace.as_str()) {
                continue;
            }
            // Closing waits until storage made the log durable: a namespace whose sealed
            // segments storage has not taken or not made durable yet (a bucket outage, a full
            // queue) stays open instead of holding up its own opens and the other
            // namespaces' idle close.
            let behind = self
                .registry()
                .get(&namespace)
                .is_some_and(|log| log.pending_segments() > 0 || log.sealed_segment_count() > 0);
            if behind && self.registry().storage().keeps_remote_copies() {
                continue;
            }
            match self.registry().close(&namespace) {
                Ok(()) => {
                    // Used again meanwhile: it is open again and stays in the map.
                    self.last_used
                        .remove_if(&namespace, |_, at| now.duration_since(*at) >= idle);
                    closed += 1;
                }
                Err(libsql_wal::Error::Busy { .. }) => {}
                Err(e) => warn!(%namespace, error = %e, "closing an idle namespace failed"),
            }
        }
        closed
    }

    fn replication_source(&self, namespace: &NamespaceName) -> Result<Arc<dyn ReplicationSource>> {
        let log = self.while_open(namespace, || self.log(namespace))?;
        Ok(log)
    }

    #[tracing::instrument(skip(self), fields(namespace = %namespace))]
    fn injector(&self, namespace: &NamespaceName) -> Result<Box<dyn StepInjector>> {
        if !self.exists(namespace) {
            self.with_gate(namespace, |gate| {
                let _opening = gate.read().unwrap_or_else(PoisonError::into_inner);
                self.create_replica_files(namespace)
            })?;
        }
        let injector = self.while_open(namespace, || {
            self.registry()
                .injector(&self.db_path(namespace))
                .map_err(|source| Error::Wal {
                    namespace: namespace.clone(),
                    source,
                })
        })?;
        Ok(Box::new(injector))
    }

    fn shutdown(&self) -> Result<()> {
        let registry = self.registry().clone();
        let wal = registry.shutdown();
        let storage = registry.storage().clone();
        self.runtime
            .block_on(async move { storage.shutdown().await });
        wal.map_err(|source| Error::Shutdown { source })
    }
}
