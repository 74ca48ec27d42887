//! `ActorStorage`: the `Storage` a server plugs into the WAL, backed by the supervisor and its
//! namespace schedulers running on a thread of their own.
//!
//! Threads and backpressure: `store` is called on SQLite's commit path (the WAL drives it with
//! a blocking executor) when a segment is sealed. It first takes a place in the namespace's
//! queue (`max_enqueued_segments` places, freed as segments become durable) and waits while
//! there is none: a backend that falls behind slows that namespace's writers instead of growing
//! memory. It then queues the segment in the supervisor's mailbox without waiting for the
//! supervisor to take it (a full mailbox does make it wait). A tokio server must therefore run SQLite work with `spawn_blocking`, never on an
//! executor thread. The actors run on the storage's own actix system thread, backend reads
//! (restores' fetches, listings) and on-demand maintenance on a small runtime of its own, so
//! `ActorStorage` works from any thread and inside any tokio runtime, and needs none.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use actix::dev::SendError;
use actix::{Actor, Addr, MailboxError};
use dashmap::DashMap;
use libsql_wal_backend::{
    Backend, BackendExt, Error as BackendError, FetchedPages, FindSegment, Generation,
    GenerationRecord, Lineage, NamespaceName, OnStored, Result, SegmentKey, Storage,
};
use libsql_wal_scheduler::ForceShutdown;
use libsql_wal_segment::{FileExt, PageIndex, SealedSegment};
use tokio::sync::Semaphore;
use tracing::{info, warn};

use crate::config::StorageConfig;
use crate::maintenance::{maintenance_pass, MaintenanceConfig, MaintenanceReport, Places};
use crate::messages::{DurableFrameNo, Forget, Metrics, Shutdown, StorageMetrics, StoreSegment};
use crate::scratch::Scratch;
use crate::supervisor::Supervisor;

/// Durable storage through the actor pipeline.
pub struct ActorStorage<B: Backend, F: FileExt> {
    /// The supervisor.
    supervisor: Addr<Supervisor<B, F>>,
    /// The backend, for reads (which need no actor).
    backend: Arc<B>,
    /// The runtime backend reads and on-demand maintenance run on: threads of their own, so
    /// that verifying and decoding what a restore downloads never holds up the actors (the
    /// storage thread runs them all). Shut down in the background when the storage drops.
    reads: Option<tokio::runtime::Runtime>,
    /// The storage thread's actix system.
    system: actix::System,
    /// The storage thread, joined when the storage is dropped.
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Each namespace's places in its queue.
    places: DashMap<NamespaceName, Arc<Semaphore>>,
    /// Settings.
    config: StorageConfig,
    /// This storage's files in the scratch directory (shared with the supervisor).
    scratch: Arc<Scratch>,
    /// Every place segments were stored to (filled by the supervisor), for maintenance.
    written_places: Arc<Places<B::Config>>,
}

/// Maps a failed send to the supervisor: it only fails once the storage stopped.
fn stopped(_: MailboxError) -> BackendError {
    BackendError::ShutDown
}

impl<B: Backend, F: FileExt> ActorStorage<B, F> {
    /// Starts the pipeline for `backend` on a new thread (`libsql-wal-storage`) running an
    /// actix system.
    pub fn start(backend: B, config: StorageConfig) -> crate::Result<Self> {
        let scratch = Arc::new(Scratch::open(&config.scratch_dir)?);
        let written_places = Arc::new(Places::new(backend.default_config().clone()));
        let backend = Arc::new(backend);
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let for_thread = (
            backend.clone(),
            config.clone(),
            scratch.clone(),
            written_places.clone(),
        );
        // Two threads: reads are mostly waiting on the backend; the CPU they need (checksums,
        // index decoding, and maintenance's compaction) must not take both cores from SQLite,
        // nor run on the actors' thread.
        let reads = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("libsql-wal-reads")
            .enable_all()
            .build()
            .map_err(|source| crate::Error::StartThread { source })?;
        let reads_handle = reads.handle().clone();
        // On the error paths below the runtime goes without blocking (`start` may be called
        // from async code, where dropping a runtime panics).
        let give_up = |reads: tokio::runtime::Runtime| reads.shutdown_background();
        let thread = std::thread::Builder::new()
            .name("libsql-wal-storage".into())
            .spawn(move || {
                let (backend, config, scratch, places) = for_thread;
                let system = actix::System::new();
                let capacity = config.mailbox_capacity;
                let started = system.block_on(async move {
                    // Bounded on purpose: `store` callers wait here once the supervisor is
                    // this far behind, on top of each namespace's own bound.
                    let supervisor = Supervisor::create(move |ctx| {
                        ctx.set_mailbox_capacity(capacity);
                        Supervisor::new(backend, config, scratch, places, reads_handle)
                    });
                    (supervisor, actix::System::current())
                });
                if started_tx.send(started).is_ok() {
                    if let Err(e) = system.run() {
                        warn!(error = %e, "the storage system ended with an error");
                    }
                }
            });
        let thread = match thread {
            Ok(thread) => thread,
            Err(source) => {
                give_up(reads);
                return Err(crate::Error::StartThread { source });
            }
        };
        let Ok((supervisor, system)) = started_rx.recv() else {
            give_up(reads);
            return Err(crate::Error::StartAborted);
        };
        info!(
            max_in_flight = config.max_in_flight,
            max_enqueued_segments = config.max_enqueued_segments,
            "storage started"
        );
        Ok(ActorStorage {
            supervisor,
            backend,
            reads: Some(reads),
            system,
            thread: Mutex::new(Some(thread)),
            places: DashMap::new(),
            config,
            scratch,
            written_places,
        })
    }

    /// Returns the supervisor's address.
    pub fn supervisor(&self) -> &Addr<Supervisor<B, F>> {
        &self.supervisor
    }

    /// Returns the backend.
    pub fn backend(&self) -> &Arc<B> {
        &self.backend
    }

    /// Returns what the pipeline is doing.
    pub async fn metrics(&self) -> Result<StorageMetrics> {
        self.supervisor.send(Metrics).await.map_err(stopped)
    }

    /// Runs one maintenance pass (compaction, then retention if `config` has a window) over
    /// every namespace in every place the storage has stored to (the backend's default config
    /// and each override), now, on the read runtime, and returns what it did.
    pub async fn run_maintenance(&self, config: &MaintenanceConfig) -> Result<MaintenanceReport> {
        let (backend, config, scratch) =
            (self.backend.clone(), config.clone(), self.scratch.clone());
        let places = self.written_places.all();
        self.on_read_runtime(async move {
            let work = scratch.create_maintenance_dir().map_err(|e| {
                BackendError::transient("creating a maintenance directory for scratch files", e)
            })?;
            let report = maintenance_pass(&*backend, &places, &config, work.path()).await;
            work.remove().await;
            report
        })
        .await
    }

    /// Stops at once: uploads in flight are abandoned and segments not yet durable are left to
    /// the WAL, which sends them again at its next start.
    pub async fn force_shutdown(&self) {
        // Fails only if the supervisor is already gone.
        let _ = self.supervisor.send(ForceShutdown).await;
        self.system.stop();
    }

    /// Runs a backend call on the read runtime.
    async fn on_read_runtime<T: Send + 'static>(
        &self,
        call: impl Future<Output = Result<T>> + Send + 'static,
    ) -> Result<T> {
        let Some(reads) = &self.reads else {
            return Err(BackendError::ShutDown);
        };
        reads
            .spawn(call)
            .await
            .map_err(|e| BackendError::fatal("running a backend call on the read runtime", e))?
    }

    fn config_or_default(&self, config_override: Option<&B::Config>) -> B::Config {
        config_override
            .cloned()
            .unwrap_or_else(|| self.backend.default_config().clone())
    }
}

impl<B: Backend, F: FileExt> Storage for ActorStorage<B, F> {
    type File = F;
    type Config = B::Config;

    #[tracing::instrument(skip_all, fields(generation = %generation, end = segment.last_committed_frame_no()))]
    async fn store(
        &self,
        generation: &Generation,
        segment: Arc<SealedSegment<F>>,
        config_override: Option<B::Config>,
        on_stored: OnStored,
    ) -> Result<()> {
        let places = self
            .places
            .entry(generation.namespace.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(self.config.max_enqueued_segments.max(1))))
            .clone();
        // Waits while the namespace has `max_enqueued_segments` segments not yet durable.
        let permit = places
            .acquire_owned()
            .await
            .map_err(|_| BackendError::ShutDown)?;
        let message = StoreSegment {
            generation: generation.clone(),
            segment,
            config_override,
            on_stored,
            permit,
        };
        // Queued without waiting for the supervisor to take it: `store` runs on SQLite's commit
        // path, and a round trip to the storage thread per seal is latency the writer need not
        // pay. Order holds: the WAL stores a namespace's segments one at a time, under its
        // writer lock, into one mailbox. A full mailbox still makes the caller wait. What the
        // supervisor refuses (it is shutting down, or the segment overlaps a queued one) it
        // logs, and the message goes with its `on_stored` uncalled: that tells the caller (see
        // `OnStored`).
        match self.supervisor.try_send(message) {
            Ok(()) => Ok(()),
            Err(SendError::Full(message)) => {
                self.supervisor.send(message).await.map_err(stopped)?
            }
            Err(SendError::Closed(_)) => Err(BackendError::ShutDown),
        }
    }

    fn keeps_remote_copies(&self) -> bool {
        true
    }

    async fn durable_frame_no(
        &self,
        generation: &Generation,
        config_override: Option<&B::Config>,
    ) -> Result<u64> {
        self.supervisor
            .send(DurableFrameNo {
                generation: generation.clone(),
                config_override: config_override.cloned(),
            })
            .await
            .map_err(stopped)?
    }

    async fn lineage(
        &self,
        namespace: &NamespaceName,
        config_override: Option<&B::Config>,
    ) -> Result<Lineage> {
        let (backend, namespace) = (self.backend.clone(), namespace.clone());
        let config = self.config_or_default(config_override);
        self.on_read_runtime(async move { backend.lineage(&config, &namespace).await })
            .await
    }

    async fn create_generation(
        &self,
        namespace: &NamespaceName,
        record: &GenerationRecord,
        config_override: Option<&B::Config>,
    ) -> Result<bool> {
        let (backend, namespace, record) = (self.backend.clone(), namespace.clone(), *record);
        let config = self.config_or_default(config_override);
        self.on_read_runtime(async move {
            backend
                .create_generation(&config, &namespace, &record)
                .await
        })
        .await
    }

    async fn find_segment(
        &self,
        generation: &Generation,
        find: FindSegment,
        config_override: Option<&B::Config>,
    ) -> Result<Option<SegmentKey>> {
        let (backend, generation) = (self.backend.clone(), generation.clone());
        let config = self.config_or_default(config_override);
        self.on_read_runtime(async move { backend.find_segment(&config, &generation, find).await })
            .await
    }

    async fn fetch_index(
        &self,
        generation: &Generation,
        key: SegmentKey,
        config_override: Option<&B::Config>,
    ) -> Result<PageIndex> {
        let (backend, generation) = (self.backend.clone(), generation.clone());
        let config = self.config_or_default(config_override);
        self.on_read_runtime(async move { backend.fetch_index(&config, &generation, key).await })
            .await
    }

    async fn fetch_pages_into(
        &self,
        generation: &Generation,
        key: SegmentKey,
        index: &PageIndex,
        wanted: &[(u32, u64)],
        db: &std::fs::File,
        config_override: Option<&B::Config>,
    ) -> Result<FetchedPages> {
        let (backend, generation) = (self.backend.clone(), generation.clone());
        let config = self.config_or_default(config_override);
        let (index, wanted) = (index.clone(), wanted.to_vec());
        let db = db
            .try_clone()
            .map_err(|e| BackendError::transient("sharing the database file being restored", e))?;
        self.on_read_runtime(async move {
            backend
                .fetch_pages_into(&config, &generation, key, &index, &wanted, &db)
                .await
        })
        .await
    }

    async fn list_segments(
        &self,
        generation: &Generation,
        until_frame_no: u64,
        config_override: Option<&B::Config>,
    ) -> Result<Vec<SegmentKey>> {
        let (backend, generation) = (self.backend.clone(), generation.clone());
        let config = self.config_or_default(config_override);
        self.on_read_runtime(async move {
            backend
                .list_segments(&config, &generation, until_frame_no)
                .await
        })
        .await
    }

    /// Graceful: stops taking segments, waits (at most `shutdown_timeout`) until every queue is
    /// drained, then stops the storage thread. What could not be made durable in time is left
    /// to the WAL's next start.
    async fn forget(&self, namespace: &NamespaceName) -> bool {
        let forgotten = self
            .supervisor
            .send(Forget {
                namespace: namespace.clone(),
            })
            .await
            .unwrap_or(false);
        if forgotten {
            // No segment of it is queued, so none holds a place in its queue.
            let max = self.config.max_enqueued_segments.max(1);
            self.places
                .remove_if(namespace, |_, places| places.available_permits() == max);
        }
        forgotten
    }

    async fn shutdown(&self) {
        let timeout = self.config.shutdown_timeout;
        match self.supervisor.send(Shutdown { timeout }).await {
            Ok(Ok(())) => info!("storage shut down: everything durable"),
            Ok(Err(left)) => warn!(
                segments = left,
                "storage shut down with segments not durable"
            ),
            Err(_) => {}
        }
        self.system.stop();
    }
}

impl<B: Backend, F: FileExt> Drop for ActorStorage<B, F> {
    fn drop(&mut self) {
        if let Some(reads) = self.reads.take() {
            // Allowed from any context, inside a tokio runtime too.
            reads.shutdown_background();
        }
        self.system.stop();
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(thread) = thread {
            if thread.thread().id() != std::thread::current().id() && thread.join().is_err() {
                warn!("the storage thread panicked");
            }
        }
    }
}
