//! Remote maintenance: compaction and retention of every namespace in every place the storage
//! writes to (the backend's default config and each override a segment was stored with, kept
//! in `Places`), as one pass (`maintenance_pass`, run on demand by
//! `ActorStorage::run_maintenance`) and as the optional `Maintenance` actor the supervisor
//! starts when `StorageConfig::maintenance` is set, which runs a pass, waits `interval`, and
//! runs the next.
//!
//! A pass compacts each namespace with the configured strategy, then (with a retention window)
//! deletes what retention allows: the newest generation's segments a verified compacted segment
//! covers, and whole dead generations (`drop_dead_generations`: branches no restore inside the
//! window reaches). Both are safe to cut short at any point and to run beside uploads and
//! beside another machine's pass: compaction stores new segments and deletes nothing; retention
//! deletes nothing a restore inside the window needs. One namespace failing is logged and
//! counted, and the pass goes on with the next.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use actix::{Actor, ActorFutureExt, AsyncContext, Context, Handler, Message, WrapFuture};
use libsql_wal_backend::{
    apply_retention, compact, drop_dead_generations, now_ms, Backend, BackendExt,
    CompactionStrategy, NamespaceName,
};
use tracing::{info, warn};

use crate::scratch::Scratch;

/// What a maintenance pass does, and how often the `Maintenance` actor runs one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaintenanceConfig {
    /// Time from the end of one periodic pass to the start of the next.
    pub interval: Duration,
    /// How segments are grouped for compaction.
    pub strategy: CompactionStrategy,
    /// Segments sealed longer ago than this may be deleted once a verified compacted segment
    /// covers them; `None` keeps every segment.
    pub retention: Option<Duration>,
}

impl Default for MaintenanceConfig {
    /// A pass every hour, the default compaction strategy, no retention.
    fn default() -> Self {
        MaintenanceConfig {
            interval: Duration::from_secs(3600),
            strategy: CompactionStrategy::default(),
            retention: None,
        }
    }
}

/// The places (backend configs) a storage has written to: the default one first, then each
/// override in the order it was first used. Kept for the storage's life, not per namespace:
/// a place still holds data after its namespaces closed, and maintenance must keep visiting
/// it. Its size is the number of distinct places, which the server chooses.
#[derive(Debug)]
pub(crate) struct Places<C> {
    places: Mutex<Vec<C>>,
}

impl<C: Clone + PartialEq> Places<C> {
    /// Returns the places, knowing only `default`.
    pub(crate) fn new(default: C) -> Self {
        Places {
            places: Mutex::new(vec![default]),
        }
    }

    /// Adds `place` if it is new.
    pub(crate) fn add(&self, place: &C) {
        let mut places = self.places.lock().unwrap_or_else(PoisonError::into_inner);
        if !places.contains(place) {
            places.push(place.clone());
        }
    }

    /// Returns every place, the default first.
    pub(crate) fn all(&self) -> Vec<C> {
        self.places
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// What one maintenance pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MaintenanceReport {
    /// Places (backend configs) visited.
    pub places: usize,
    /// Namespaces visited, over all places (a namespace in two places counts twice).
    pub namespaces: usize,
    /// Compacted segments stored.
    pub compacted_segments: usize,
    /// Segments deleted by retention.
    pub deleted_segments: usize,
    /// Dead generations dropped whole by retention (`drop_dead_generations`).
    pub dropped_generations: usize,
    /// Namespaces whose compaction or retention failed, with the error.
    pub failures: Vec<(NamespaceName, String)>,
    /// Places whose namespaces could not be listed (the place and the error); the pass went on
    /// with the next place.
    pub unlisted_places: Vec<String>,
}

/// The periodic actor's counters, shared with the supervisor's `Metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MaintenanceMetrics {
    /// True while the periodic actor runs.
    pub running: bool,
    /// Periodic passes finished.
    pub passes: u64,
    /// Namespace and place failures over all passes (a panic counts as one).
    pub failures: u64,
    /// The last pass.
    pub last: Option<MaintenanceReport>,
}

/// Runs one maintenance pass over every namespace of every place in `places` (configs of
/// `backend`), with scratch files under `scratch_dir` (which should be the pass's own: two
/// passes sharing one may clash).
#[tracing::instrument(skip_all, fields(strategy = ?config.strategy, retention = ?config.retention))]
pub async fn maintenance_pass<B: Backend>(
    backend: &B,
    places: &[B::Config],
    config: &MaintenanceConfig,
    scratch_dir: &std::path::Path,
) -> libsql_wal_backend::Result<MaintenanceReport> {
    let mut report = MaintenanceReport {
        places: places.len(),
        ..MaintenanceReport::default()
    };
    for place in places {
        let namespaces = match backend.list_namespaces(place).await {
            Ok(namespaces) => namespaces,
            Err(e) => {
                warn!(?place, error = %e, "maintenance cannot list a place's namespaces");
                report.unlisted_places.push(format!("{place:?}: {e}"));
                continue;
            }
        };
        report.namespaces += namespaces.len();
        let total = namespaces.len();
        for (done, namespace) in namespaces.into_iter().enumerate() {
            match maintain_namespace(backend, place, &namespace, config, scratch_dir).await {
                Ok(done) => {
                    report.compacted_segments += done.compacted_segments;
                    report.deleted_segments += done.deleted_segments;
                    report.dropped_generations += done.dropped_generations;
                }
                Err(e) => {
                    warn!(%namespace, ?place, error = %e, "maintenance of a namespace failed");
                    report.failures.push((namespace, e.to_string()));
                }
            }
            info!(?place, done = done + 1, total, "maintenance progress");
        }
    }
    Ok(report)
}

/// What maintenance did to one namespace.
#[derive(Debug, Default)]
struct NamespaceMaintained {
    compacted_segments: usize,
    deleted_segments: usize,
    dropped_generations: usize,
}

/// Compacts the newest generation of `namespace` in `place`, then applies retention to it and
/// drops the dead generations older than the window (`drop_dead_generations`).
async fn maintain_namespace<B: Backend>(
    backend: &B,
    place: &B::Config,
    namespace: &NamespaceName,
    config: &MaintenanceConfig,
    scratch_dir: &std::path::Path,
) -> libsql_wal_backend::Result<NamespaceMaintained> {
    // Only the newest generation is written to; older ones are frozen (a newer generation may
    // continue from any point of them, which a compaction could merge away).
    let newest = backend.newest_generation(place, namespace).await?;
    let Some(generation) = newest.and_then(|r| r.log(namespace)) else {
        return Ok(NamespaceMaintained::default());
    };
    let compaction = compact(
        backend,
        place,
        &generation,
        config.strategy,
        scratch_dir,
        |_, _| {},
    )
    .await?;
    // A writer that took the namespace over meanwhile may continue from any point of this
    // generation: retention leaves it alone from then on.
    let superseded = backend
        .newer_generation(place, namespace, generation.number)
        .await?
        .is_some();
    let mut done = NamespaceMaintained {
        compacted_segments: compaction.groups.len(),
        ..NamespaceMaintained::default()
    };
    if let Some(window) = config.retention {
        let now = now_ms();
        if !superseded {
            done.deleted_segments = apply_retention(backend, place, &generation, window, now)
                .await?
                .deleted
                .len();
        }
        done.dropped_generations = drop_dead_generations(backend, place, namespace, window, now)
            .await?
            .len();
    }
    Ok(done)
}

/// The periodic maintenance actor. Passes never overlap: the next is scheduled when one ends.
pub struct Maintenance<B: Backend> {
    backend: Arc<B>,
    config: MaintenanceConfig,
    /// Where each pass gets its own working directory.
    scratch: Arc<Scratch>,
    /// Where each pass goes.
    places: Arc<Places<B::Config>>,
    metrics: Arc<Mutex<MaintenanceMetrics>>,
    /// Where passes run: compaction decodes, verifies and writes segments, CPU and file work
    /// that must not hold up the uploads on the actors' thread.
    runtime: tokio::runtime::Handle,
    /// The pass running now, aborted if the actor goes (the storage stops): no pass goes on
    /// writing and deleting in the bucket after it.
    running: Option<tokio::task::AbortHandle>,
}

impl<B: Backend> Drop for Maintenance<B> {
    fn drop(&mut self) {
        if let Some(pass) = self.running.take() {
            pass.abort();
        }
    }
}

impl<B: Backend> Maintenance<B> {
    /// Returns the actor; `metrics` is where it records its passes, run on `runtime`.
    pub(crate) fn new(
        backend: Arc<B>,
        config: MaintenanceConfig,
        scratch: Arc<Scratch>,
        places: Arc<Places<B::Config>>,
        metrics: Arc<Mutex<MaintenanceMetrics>>,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        Maintenance {
            backend,
            config,
            scratch,
            places,
            metrics,
            runtime,
            running: None,
        }
    }
}

/// Runs the next periodic pass.
#[derive(Message)]
#[rtype(result = "()")]
struct Pass;

impl<B: Backend> Actor for Maintenance<B> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.notify_later(Pass, self.config.interval);
    }
}

impl<B: Backend> Handler<Pass> for Maintenance<B> {
    type Result = ();

    #[tracing::instrument(skip_all)]
    fn handle(&mut self, _: Pass, ctx: &mut Context<Self>) {
        let (backend, config, scratch) = (
            self.backend.clone(),
            self.config.clone(),
            self.scratch.clone(),
        );
        let places = self.places.all();
        // The pass runs on the read runtime; the actor only waits for it. A panic in a pass (a
        // backend bug) is caught and counted: it must not take down the storage thread the
        // uploads run on. Its directory's guard removes the directory then.
        let pass = self.runtime.spawn(async move {
            let work = scratch.create_maintenance_dir().map_err(|e| {
                libsql_wal_backend::Error::transient(
                    "creating a maintenance directory for scratch files",
                    e,
                )
            })?;
            let report = maintenance_pass(&*backend, &places, &config, work.path()).await;
            work.remove().await;
            report
        });
        self.running = Some(pass.abort_handle());
        let metrics = self.metrics.clone();
        let interval = self.config.interval;
        // `wait`: no other message is handled until the pass ends, so passes never overlap.
        ctx.wait(pass.into_actor(self).map(move |outcome, _, ctx| {
            let mut metrics = metrics.lock().unwrap_or_else(PoisonError::into_inner);
            metrics.passes += 1;
            match outcome {
                Ok(Ok(report)) => {
                    info!(
                        places = report.places,
                        namespaces = report.namespaces,
                        compacted = report.compacted_segments,
                        deleted = report.deleted_segments,
                        dropped_generations = report.dropped_generations,
                        failures = report.failures.len(),
                        unlisted_places = report.unlisted_places.len(),
                        "maintenance pass done"
                    );
                    metrics.failures +=
                        (report.failures.len() + report.unlisted_places.len()) as u64;
                    metrics.last = Some(report);
                }
                Ok(Err(e)) => {
                    warn!(error = %e, "maintenance pass failed");
                    metrics.failures += 1;
                }
                Err(e) if e.is_panic() => {
                    warn!("maintenance pass panicked");
                    metrics.failures += 1;
                }
                Err(_) => {
                    warn!("maintenance pass cancelled: the storage is stopping");
                    metrics.failures += 1;
                }
            }
            ctx.notify_later(Pass, interval);
        }));
    }
}
