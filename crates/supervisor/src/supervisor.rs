//! `Supervisor`: routes sealed segments to per-namespace schedulers, owns the upload workers,
//! keeps the record of every segment not yet durable, and restarts schedulers.
//!
//! Invariants:
//! - Nothing is lost: a segment stays in the namespace's record (with its callback and its place
//!   in the bounded queue) until a stored upload covers it. A scheduler is only a cache of that
//!   record: when one stops unexpectedly (a panic, a stray `ForceShutdown`), the supervisor
//!   notices (at the next message for it, or at the supervision tick), starts a fresh one and
//!   queues the record again, in order.
//! - Order: per namespace, durability advances only through stored uploads that start at the
//!   oldest segment not yet durable, and at most one upload per namespace runs at a time (the
//!   supervisor holds a namespace's next job while its previous one runs, even across a
//!   restart).
//! - Fairness: at most `max_in_flight` uploads run. Waiting jobs get a worker in the order their
//!   oldest segment arrived, except that a namespace whose upload just ended queues behind every
//!   segment that arrived before that: each namespace gets a turn, so one namespace with a
//!   backlog cannot starve the others.
//!
//! - Merging: a job that waited for a worker leaves with the namespace's segments that arrived
//!   meanwhile (consecutive, same destination, within the scheduler's caps): the busier the
//!   workers, the fewer the uploads and PUTs.
//! - Nothing twice: what the backend already holds (its durable frame_no, asked at
//!   `DurableFrameNo`) is folded into the namespace's record whenever the answer comes, even
//!   after segments arrived: the segments it covers are durable at once and never uploaded.
//!
//! The upload itself runs as a future on the supervisor's thread (the compaction on tokio's
//! blocking pool); a panic inside it is caught and counted, and the job is retried.

use std::collections::{hash_map, BTreeMap, HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use actix::fut::wrap_future;
use actix::{
    Actor, ActorContext, ActorFutureExt, Addr, AsyncContext, Context, Handler, MessageResult,
    ResponseActFuture, ResponseFuture,
};
use libsql_wal_backend::{
    Backend, BackendExt, Error as BackendError, Generation, NamespaceName, OnStored, Stored,
};
use libsql_wal_scheduler::{
    Destination, DurableUpTo, ForceShutdown, NamespaceScheduler, QueueSegment, RequestUpload,
    UploadDone, UploadJob, UploadOutcome,
};
use libsql_wal_segment::{FileExt, SealedSegment};
use tokio::sync::{oneshot, OwnedSemaphorePermit};
use tracing::{debug, error, info, warn};

use crate::config::StorageConfig;
use crate::maintenance::{Maintenance, MaintenanceMetrics, Places};
use crate::messages::{
    DurableFrameNo, Forget, Metrics, NamespaceMetrics, SchedulerOf, Shutdown, StorageMetrics,
    StoreSegment,
};
use crate::scratch::Scratch;
use crate::upload::{panic_message, run_job, UploadFailure, UploadReport, UploadTask};

/// A segment taken and not yet durable.
struct Pending<F, C> {
    /// The segment.
    segment: Arc<SealedSegment<F>>,
    /// Where it goes.
    config_override: Option<C>,
    /// Called when it is durable (more than one if the same segment was handed over again).
    on_stored: Vec<OnStored>,
    /// Its places in the namespace's bounded queue.
    permits: Vec<OwnedSemaphorePermit>,
    /// Its arrival ticket.
    arrival: u64,
    /// When it arrived.
    arrived_at: Instant,
}

/// Counters of one namespace; they survive scheduler restarts.
#[derive(Debug, Default, Clone)]
struct NamespaceStats {
    uploads: u64,
    merged_uploads: u64,
    segments_stored: u64,
    retries: u64,
    panics: u64,
    bytes_sent: u64,
    restarts: u64,
    consecutive_failures: u32,
    last_error: Option<String>,
}

/// What the supervisor keeps per namespace.
struct NamespaceEntry<F: FileExt, C: Destination> {
    /// The generation being written (one at a time per namespace: a new one replaces the
    /// entry once every segment of the old one is durable).
    generation: Generation,
    /// Set once an upload found a newer generation: the number of it. Nothing of this
    /// generation is acknowledged any more.
    fenced: Option<u64>,
    /// The scheduler running now.
    scheduler: Addr<NamespaceScheduler<F, C>>,
    /// Segments not yet durable, in frame order.
    unacked: VecDeque<Pending<F, C>>,
    /// The highest durable frame_no; only moves forward.
    durable_frame_no: u64,
    /// True once `durable_frame_no` includes what the backend held (asked at `DurableFrameNo`,
    /// before or after the entry was made); until then it counts only this storage's uploads.
    backend_known: bool,
    /// The destination of the namespace's last segment (an override is in `Places`).
    place: Option<C>,
    /// Ticket when the namespace's last upload ended: its next job queues behind it.
    last_turn: u64,
    /// The job of this namespace running now.
    running: Option<u64>,
    /// Counters.
    stats: NamespaceStats,
}

/// A job waiting for a worker.
struct WaitingJob<F: FileExt, C: Destination> {
    namespace: NamespaceName,
    job: UploadJob<F, C>,
}

/// The supervisor actor.
pub struct Supervisor<B: Backend, F: FileExt> {
    /// Where segments go.
    backend: Arc<B>,
    /// Settings.
    config: StorageConfig,
    /// This storage's files in the scratch directory.
    scratch: Arc<Scratch>,
    /// Every place segments were stored to, for maintenance.
    places: Arc<Places<B::Config>>,
    /// Every namespace that handed over a segment (or was watched).
    namespaces: HashMap<NamespaceName, NamespaceEntry<F, B::Config>>,
    /// Durable frame_nos asked of the backend for generations not in `namespaces` yet.
    known_durable: HashMap<Generation, u64>,
    /// Arrival tickets, increasing.
    ticket: u64,
    /// Job ids, shared with the schedulers.
    job_ids: Arc<AtomicU64>,
    /// Uploads running now.
    busy: usize,
    /// Jobs waiting for a worker, by (priority ticket, job id).
    waiting: BTreeMap<(u64, u64), WaitingJob<F, B::Config>>,
    /// False once shutdown began: new segments are refused.
    accepting: bool,
    /// Answered when every queue is drained.
    drained: Vec<oneshot::Sender<Result<(), usize>>>,
    /// Restarts of all namespaces, kept after a namespace is dropped.
    callback_panics: u64,
    /// Where periodic maintenance passes run.
    reads: tokio::runtime::Handle,
    /// The periodic maintenance actor, when configured.
    maintenance: Option<Addr<Maintenance<B>>>,
    /// What it did, for `Metrics`.
    maintenance_metrics: Arc<Mutex<MaintenanceMetrics>>,
}

impl<B: Backend, F: FileExt> Supervisor<B, F> {
    /// Returns a supervisor storing to `backend`, with its local files in `scratch`, recording
    /// in `places` every override a segment is stored with; periodic maintenance passes run on
    /// `reads`, off the actors' thread.
    pub(crate) fn new(
        backend: Arc<B>,
        config: StorageConfig,
        scratch: Arc<Scratch>,
        places: Arc<Places<B::Config>>,
        reads: tokio::runtime::Handle,
    ) -> Self {
        Supervisor {
            reads,
            backend,
            config,
            scratch,
            places,
            namespaces: HashMap::new(),
            known_durable: HashMap::new(),
            ticket: 0,
            job_ids: Arc::new(AtomicU64::new(1)),
            busy: 0,
            waiting: BTreeMap::new(),
            accepting: true,
            drained: Vec::new(),
            callback_panics: 0,
            maintenance: None,
            maintenance_metrics: Arc::default(),
        }
    }

    /// Returns the entry of `generation`'s namespace, creating it (and its scheduler) on first
    /// use, or replacing the entry of an older generation once nothing of it is in flight.
    /// Fails if the namespace's entry is of another generation that still has segments in
    /// flight.
    fn entry(
        &mut self,
        generation: &Generation,
        ctx: &mut Context<Self>,
    ) -> Result<&mut NamespaceEntry<F, B::Config>, BackendError> {
        let namespace = &generation.namespace;
        if let Some(entry) = self.namespaces.get(namespace) {
            if &entry.generation != generation {
                let waiting = self.waiting.values().any(|w| &w.namespace == namespace);
                if entry.fenced.is_none()
                    && (!entry.unacked.is_empty() || entry.running.is_some() || waiting)
                {
                    return Err(BackendError::fatal(
                        format!("queueing a segment of {generation}"),
                        format!(
                            "{} still has segments in flight (a log is closed before its \
                             namespace starts another)",
                            entry.generation
                        ),
                    ));
                }
                if let Some(old) = self.namespaces.remove(namespace) {
                    old.scheduler.do_send(ForceShutdown);
                    self.waiting.retain(|_, w| &w.namespace != namespace);
                    debug!(old = %old.generation, new = %generation, "namespace moved to a new generation");
                }
            }
        }
        self.ensure_alive(namespace, ctx);
        Ok(match self.namespaces.entry(namespace.clone()) {
            hash_map::Entry::Occupied(entry) => entry.into_mut(),
            hash_map::Entry::Vacant(vacant) => {
                let known = self.known_durable.remove(generation);
                let durable_frame_no = known.unwrap_or(0);
                let scheduler = start_scheduler(
                    &self.config,
                    &self.job_ids,
                    namespace,
                    durable_frame_no,
                    ctx,
                );
                debug!(%generation, durable_frame_no, "scheduler started");
                vacant.insert(NamespaceEntry {
                    generation: generation.clone(),
                    fenced: None,
                    scheduler,
                    unacked: VecDeque::new(),
                    durable_frame_no,
                    backend_known: known.is_some(),
                    place: None,
                    last_turn: 0,
                    running: None,
                    stats: NamespaceStats::default(),
                })
            }
        })
    }

    /// Restarts the scheduler of `namespace` if it stopped, rebuilding its queue from the
    /// record.
    fn ensure_alive(&mut self, namespace: &NamespaceName, ctx: &mut Context<Self>) {
        let Some(entry) = self.namespaces.get(namespace) else {
            return;
        };
        if entry.scheduler.connected() || !self.accepting || entry.fenced.is_some() {
            return;
        }
        let scheduler = start_scheduler(
            &self.config,
            &self.job_ids,
            namespace,
            entry.durable_frame_no,
            ctx,
        );
        // Its old jobs waiting for a worker are dropped: the new scheduler asks again.
        self.waiting.retain(|_, w| &w.namespace != namespace);
        let Some(entry) = self.namespaces.get_mut(namespace) else {
            return;
        };
        entry.stats.restarts += 1;
        warn!(
            %namespace,
            queued = entry.unacked.len(),
            restarts = entry.stats.restarts,
            "scheduler stopped unexpectedly: restarted from the record"
        );
        for pending in &entry.unacked {
            scheduler.do_send(QueueSegment {
                segment: pending.segment.clone(),
                config_override: pending.config_override.clone(),
                arrival: pending.arrival,
            });
        }
        entry.scheduler = scheduler;
    }

    /// Starts waiting jobs while workers are free, oldest turn first, one per namespace.
    fn dispatch(&mut self, ctx: &mut Context<Self>) {
        while self.busy < self.config.max_in_flight {
            let next = self
                .waiting
                .iter()
                .find(|(_, w)| {
                    self.namespaces
                        .get(&w.namespace)
                        .is_some_and(|e| e.running.is_none())
                })
                .map(|(k, _)| *k);
            let Some(key) = next else { return };
            let Some(WaitingJob { namespace, mut job }) = self.waiting.remove(&key) else {
                return;
            };
            let Some(entry) = self.namespaces.get_mut(&namespace) else {
                continue;
            };
            // Segments made durable since the job was asked for (by a job of an earlier
            // scheduler) need no second upload.
            let durable = entry.durable_frame_no;
            job.segments
                .retain(|s| s.last_committed_frame_no() > durable);
            if job.segments.is_empty() {
                entry.scheduler.do_send(UploadDone {
                    job: job.id,
                    outcome: UploadOutcome::Stored {
                        end_frame_no: durable,
                    },
                });
                continue;
            }
            // Segments that arrived while the job waited for a worker go with it: fewer PUTs,
            // and fewer uploads to prepare.
            job.extend(
                &self.config.scheduler,
                entry
                    .unacked
                    .iter()
                    .map(|p| (&p.segment, &p.config_override)),
            );
            entry.running = Some(job.id);
            self.busy += 1;
            self.spawn_upload(namespace, job, ctx);
        }
    }

    /// Runs `job` on a worker; its outcome comes back to `upload_ended`.
    fn spawn_upload(
        &mut self,
        namespace: NamespaceName,
        job: UploadJob<F, B::Config>,
        ctx: &mut Context<Self>,
    ) {
        let config = job
            .config_override
            .clone()
            .unwrap_or_else(|| self.backend.default_config().clone());
        let segment_count = job.segments.len();
        let end_frame_no = job.end_frame_no();
        let id = job.id;
        let Some(generation) = self
            .namespaces
            .get(&namespace)
            .map(|e| e.generation.clone())
        else {
            return;
        };
        let task = UploadTask {
            backend: self.backend.clone(),
            config,
            generation,
            segments: job.segments,
            in_memory_bytes: self.config.in_memory_upload_bytes,
            scratch: self.scratch.clone(),
            job: id,
        };
        ctx.spawn(
            wrap_future::<_, Self>(run_job(task)).map(move |outcome, this, ctx| {
                this.upload_ended(namespace, id, segment_count, end_frame_no, outcome, ctx);
            }),
        );
    }

    /// Records the outcome of a job, advances durability, tells the namespace's scheduler, and
    /// hands the worker to the next job.
    fn upload_ended(
        &mut self,
        namespace: NamespaceName,
        job: u64,
        segment_count: usize,
        end_frame_no: u64,
        outcome: Result<UploadReport, UploadFailure>,
        ctx: &mut Context<Self>,
    ) {
        self.busy = self.busy.saturating_sub(1);
        self.ticket += 1;
        let ticket = self.ticket;
        let unhealthy_after = self.config.unhealthy_after_failures;
        let mut callback_panics = 0;
        if let Some(entry) = self.namespaces.get_mut(&namespace) {
            entry.running = None;
            entry.last_turn = ticket;
            let outcome = match outcome {
                Ok(UploadReport {
                    fenced_by: Some(newer),
                    ..
                }) => {
                    error!(
                        generation = %entry.generation,
                        newer,
                        "fenced off: generation {newer} took the namespace over; nothing more of this generation is acknowledged"
                    );
                    entry.fenced = Some(newer);
                    entry.stats.last_error = Some(format!("fenced off by generation {newer}"));
                    callback_panics = fence(entry, newer);
                    entry.scheduler.do_send(ForceShutdown);
                    self.waiting.retain(|_, w| w.namespace != namespace);
                    UploadOutcome::Failed {
                        error: format!("fenced off by generation {newer}"),
                    }
                }
                Ok(report) => {
                    let stats = &mut entry.stats;
                    stats.uploads += 1;
                    stats.merged_uploads += u64::from(segment_count > 1);
                    stats.bytes_sent += report.bytes;
                    stats.consecutive_failures = 0;
                    stats.last_error = None;
                    callback_panics = advance_durable(entry, end_frame_no);
                    UploadOutcome::Stored {
                        end_frame_no: entry.durable_frame_no,
                    }
                }
                Err(failure) => {
                    let stats = &mut entry.stats;
                    stats.retries += 1;
                    stats.panics += u64::from(failure.panicked);
                    stats.consecutive_failures += 1;
                    if stats.consecutive_failures == unhealthy_after {
                        error!(
                            %namespace,
                            failures = stats.consecutive_failures,
                            error = %failure.error,
                            "namespace unhealthy: uploads keep failing (segments are kept and retried)"
                        );
                    }
                    stats.last_error = Some(failure.error.clone());
                    UploadOutcome::Failed {
                        error: failure.error,
                    }
                }
            };
            entry.scheduler.do_send(UploadDone { job, outcome });
        }
        self.callback_panics += callback_panics;
        self.ensure_alive(&namespace, ctx);
        self.check_drained(ctx);
        self.dispatch(ctx);
    }

    /// Returns the segments not yet durable, over all namespaces.
    fn unacked_count(&self) -> usize {
        self.namespaces.values().map(|e| e.unacked.len()).sum()
    }

    /// Answers graceful shutdowns once everything is durable, then stops the storage.
    fn check_drained(&mut self, ctx: &mut Context<Self>) {
        if self.accepting || self.drained.is_empty() {
            return;
        }
        if self.unacked_count() > 0 || self.busy > 0 {
            return;
        }
        info!("storage drained: every segment is durable");
        for waiter in self.drained.drain(..) {
            let _ = waiter.send(Ok(()));
        }
        self.stop_all(ctx);
    }

    /// Stops every scheduler and this actor, dropping what is not durable (its callbacks are
    /// never called; the WAL sends those segments again at its next start).
    fn stop_all(&mut self, ctx: &mut Context<Self>) {
        self.accepting = false;
        for entry in self.namespaces.values() {
            entry.scheduler.do_send(ForceShutdown);
        }
        let left = self.unacked_count();
        for waiter in self.drained.drain(..) {
            let _ = waiter.send(Err(left));
        }
        self.namespaces.clear();
        self.waiting.clear();
        ctx.stop();
    }

    fn metrics(&self) -> StorageMetrics {
        let unhealthy_after = self.config.unhealthy_after_failures;
        let mut namespaces: Vec<NamespaceMetrics> = self
            .namespaces
            .iter()
            .map(|(namespace, entry)| {
                let stats = &entry.stats;
                let last_taken = entry.unacked.back().map_or(entry.durable_frame_no, |p| {
                    p.segment.last_committed_frame_no()
                });
                let healthy = stats.consecutive_failures < unhealthy_after;
                NamespaceMetrics {
                    namespace: namespace.clone(),
                    queue_depth: entry.unacked.len(),
                    in_flight: entry.running.is_some(),
                    durable_frame_no: entry.durable_frame_no,
                    durable_lag_frames: last_taken.saturating_sub(entry.durable_frame_no),
                    durable_lag: entry
                        .unacked
                        .front()
                        .map(|p| p.arrived_at.elapsed())
                        .unwrap_or_default(),
                    uploads: stats.uploads,
                    merged_uploads: stats.merged_uploads,
                    segments_stored: stats.segments_stored,
                    retries: stats.retries,
                    panics: stats.panics,
                    bytes_sent: stats.bytes_sent,
                    restarts: stats.restarts,
                    healthy,
                    last_error: if healthy {
                        None
                    } else {
                        stats.last_error.clone()
                    },
                }
            })
            .collect();
        namespaces.sort_by(|a, b| a.namespace.cmp(&b.namespace));
        StorageMetrics {
            accepting: self.accepting,
            restarts: namespaces.iter().map(|n| n.restarts).sum(),
            panics: namespaces.iter().map(|n| n.panics).sum(),
            retries: namespaces.iter().map(|n| n.retries).sum(),
            namespaces,
            uploads_in_flight: self.busy,
            uploads_waiting: self.waiting.len(),
            callback_panics: self.callback_panics,
            maintenance: MaintenanceMetrics {
                running: self.maintenance.as_ref().is_some_and(Addr::connected),
                ..self
                    .maintenance_metrics
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone()
            },
        }
    }
}

/// Starts a scheduler for `namespace` durable up to `durable_frame_no`, asking `ctx`'s actor
/// for workers.
fn start_scheduler<B: Backend, F: FileExt>(
    config: &StorageConfig,
    job_ids: &Arc<AtomicU64>,
    namespace: &NamespaceName,
    durable_frame_no: u64,
    ctx: &mut Context<Supervisor<B, F>>,
) -> Addr<NamespaceScheduler<F, B::Config>> {
    let scheduler = NamespaceScheduler::new(
        namespace.clone(),
        config.scheduler.clone(),
        durable_frame_no,
        ctx.address().recipient(),
        job_ids.clone(),
    );
    // Its messages are bounded elsewhere: at most `max_enqueued_segments` segments per
    // namespace (the permits), one upload outcome at a time, and a `DurableUpTo` per backend
    // answer (asked once per entry, more only for `DurableFrameNo` calls racing the first), so
    // this capacity only sizes the channel's buffer.
    let capacity = config.max_enqueued_segments + 4;
    NamespaceScheduler::create(move |sctx| {
        sctx.set_mailbox_capacity(capacity);
        scheduler
    })
}

/// Marks everything up to `end_frame_no` durable: publishes it, calls the callbacks and frees
/// the queue places of the segments it covers. Returns how many callbacks panicked.
fn advance_durable<F: FileExt, C: Destination>(
    entry: &mut NamespaceEntry<F, C>,
    end_frame_no: u64,
) -> u64 {
    if end_frame_no <= entry.durable_frame_no {
        return 0;
    }
    entry.durable_frame_no = end_frame_no;
    let mut panics = 0;
    while entry
        .unacked
        .front()
        .is_some_and(|p| p.segment.last_committed_frame_no() <= end_frame_no)
    {
        let Some(pending) = entry.unacked.pop_front() else {
            break;
        };
        entry.stats.segments_stored += 1;
        panics += call_back(pending.on_stored, Stored::Durable(end_frame_no));
        drop(pending.permits);
    }
    panics
}

/// Tells every segment not yet durable that its generation is fenced off by `newer`, and frees
/// their queue places. Returns how many callbacks panicked.
fn fence<F: FileExt, C: Destination>(entry: &mut NamespaceEntry<F, C>, newer: u64) -> u64 {
    let mut panics = 0;
    for pending in entry.unacked.drain(..) {
        panics += call_back(pending.on_stored, Stored::Fenced { newer });
        drop(pending.permits);
    }
    panics
}

/// Calls on-stored callbacks, containing their panics. Returns how many panicked.
fn call_back(callbacks: Vec<OnStored>, stored: Stored) -> u64 {
    let mut panics = 0;
    for callback in callbacks {
        if let Err(panic) = std::panic::catch_unwind(AssertUnwindSafe(|| callback(stored))) {
            error!(panic = %panic_message(&*panic), "an on-stored callback panicked");
            panics += 1;
        }
    }
    panics
}

impl<B: Backend, F: FileExt> Actor for Supervisor<B, F> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if let Some(config) = self.config.maintenance.clone() {
            info!(interval = ?config.interval, "periodic maintenance on");
            self.maintenance = Some(
                Maintenance::new(
                    self.backend.clone(),
                    config,
                    self.scratch.clone(),
                    self.places.clone(),
                    self.maintenance_metrics.clone(),
                    self.reads.clone(),
                )
                .start(),
            );
        }
        ctx.run_interval(self.config.supervision_interval, |this, ctx| {
            let namespaces: Vec<NamespaceName> = this.namespaces.keys().cloned().collect();
            for namespace in namespaces {
                this.ensure_alive(&namespace, ctx);
            }
            this.dispatch(ctx);
        });
    }
}

impl<B: Backend, F: FileExt> Handler<StoreSegment<F, B::Config>> for Supervisor<B, F> {
    type Result = libsql_wal_backend::Result<()>;

    #[tracing::instrument(skip_all, fields(generation = %msg.generation, start = msg.segment.start_frame_no(), end = msg.segment.last_committed_frame_no()))]
    fn handle(&mut self, msg: StoreSegment<F, B::Config>, ctx: &mut Context<Self>) -> Self::Result {
        if !self.accepting {
            // `store` does not wait for this answer: say it here too.
            warn!(generation = %msg.generation, end = msg.segment.last_committed_frame_no(), "segment refused: storage is shutting down (its on-stored callback is dropped uncalled, which tells the WAL)");
            return Err(BackendError::ShutDown);
        }
        self.ticket += 1;
        let arrival = self.ticket;
        let places = self.places.clone();
        let entry = match self.entry(&msg.generation, ctx) {
            Ok(entry) => entry,
            Err(e) => {
                error!(error = %e, "segment refused");
                return Err(e);
            }
        };
        if let Some(newer) = entry.fenced {
            self.callback_panics += call_back(vec![msg.on_stored], Stored::Fenced { newer });
            return Err(BackendError::Fenced {
                generation: msg.generation.to_string(),
                newer,
            });
        }
        // Checked only when the namespace's destination changes, not at every segment.
        if entry.place != msg.config_override {
            if let Some(place) = &msg.config_override {
                places.add(place);
            }
            entry.place = msg.config_override.clone();
        }
        let (start, end) = (
            msg.segment.start_frame_no(),
            msg.segment.last_committed_frame_no(),
        );
        if end <= entry.durable_frame_no {
            // Already durable (the WAL re-sends what it did not hear about before a restart).
            let durable = entry.durable_frame_no;
            self.callback_panics += call_back(vec![msg.on_stored], Stored::Durable(durable));
            return Ok(());
        }
        if let Some(same) = entry.unacked.iter_mut().find(|p| {
            p.segment.start_frame_no() == start && p.segment.last_committed_frame_no() == end
        }) {
            same.on_stored.push(msg.on_stored);
            same.permits.push(msg.permit);
            return Ok(());
        }
        if let Some(last) = entry.unacked.back() {
            let last_end = last.segment.last_committed_frame_no();
            if start <= last_end {
                error!(generation = %msg.generation, start, end, last_end, "segment refused: it overlaps the queued one (a bug in the caller)");
                return Err(BackendError::fatal(
                    format!("queueing a segment of {}", msg.generation),
                    format!(
                        "segment {start}..={end} overlaps the queued segment ending at {last_end}"
                    ),
                ));
            }
        }
        entry.scheduler.do_send(QueueSegment {
            segment: msg.segment.clone(),
            config_override: msg.config_override.clone(),
            arrival,
        });
        entry.unacked.push_back(Pending {
            segment: msg.segment,
            config_override: msg.config_override,
            on_stored: vec![msg.on_stored],
            permits: vec![msg.permit],
            arrival,
            arrived_at: Instant::now(),
        });
        Ok(())
    }
}

impl<B: Backend, F: FileExt> Handler<RequestUpload<F, B::Config>> for Supervisor<B, F> {
    type Result = ();

    fn handle(&mut self, msg: RequestUpload<F, B::Config>, ctx: &mut Context<Self>) {
        let Some(entry) = self.namespaces.get(&msg.namespace) else {
            return;
        };
        let priority = msg.job.oldest_arrival.max(entry.last_turn);
        self.waiting.insert(
            (priority, msg.job.id),
            WaitingJob {
                namespace: msg.namespace,
                job: msg.job,
            },
        );
        self.dispatch(ctx);
    }
}

impl<B: Backend, F: FileExt> Handler<DurableFrameNo<B::Config>> for Supervisor<B, F> {
    type Result = ResponseActFuture<Self, libsql_wal_backend::Result<u64>>;

    fn handle(&mut self, msg: DurableFrameNo<B::Config>, _: &mut Context<Self>) -> Self::Result {
        let entry = self
            .namespaces
            .get(&msg.generation.namespace)
            .filter(|e| e.generation == msg.generation);
        let known = match entry {
            Some(entry) => entry.backend_known.then_some(entry.durable_frame_no),
            None => self.known_durable.get(&msg.generation).copied(),
        };
        if let Some(durable) = known {
            return Box::pin(actix::fut::ready(Ok(durable)));
        }
        let backend = self.backend.clone();
        let generation = msg.generation.clone();
        let config = msg
            .config_override
            .unwrap_or_else(|| backend.default_config().clone());
        let ask = async move { backend.meta(&config, &generation).await };
        Box::pin(wrap_future::<_, Self>(ask).map(move |meta, this, _| {
            let durable = meta?.durable_frame_no;
            let entry = this
                .namespaces
                .get_mut(&msg.generation.namespace)
                .filter(|e| e.generation == msg.generation);
            match entry {
                // Segments arrived while the backend was asked (or before): what it holds
                // needs no upload. Folded in like a stored upload: callbacks, queue places and
                // the scheduler's queue; a job waiting for a worker is trimmed at dispatch.
                Some(entry) => {
                    entry.backend_known = true;
                    this.callback_panics += advance_durable(entry, durable);
                    entry.scheduler.do_send(DurableUpTo {
                        frame_no: entry.durable_frame_no,
                    });
                    Ok(entry.durable_frame_no)
                }
                None => {
                    this.known_durable.insert(msg.generation, durable);
                    Ok(durable)
                }
            }
        }))
    }
}

impl<B: Backend, F: FileExt> Handler<SchedulerOf<F, B::Config>> for Supervisor<B, F> {
    type Result = Option<Addr<NamespaceScheduler<F, B::Config>>>;

    fn handle(&mut self, msg: SchedulerOf<F, B::Config>, _: &mut Context<Self>) -> Self::Result {
        self.namespaces
            .get(&msg.namespace)
            .map(|e| e.scheduler.clone())
    }
}

impl<B: Backend, F: FileExt> Handler<Metrics> for Supervisor<B, F> {
    type Result = MessageResult<Metrics>;

    fn handle(&mut self, _: Metrics, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.metrics())
    }
}

impl<B: Backend, F: FileExt> Handler<Shutdown> for Supervisor<B, F> {
    type Result = ResponseFuture<Result<(), usize>>;

    fn handle(&mut self, msg: Shutdown, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.drained.push(tx);
        if self.accepting {
            self.accepting = false;
            info!(
                segments = self.unacked_count(),
                namespaces = self.namespaces.len(),
                "storage shutting down: draining every queue"
            );
            ctx.run_interval(std::time::Duration::from_secs(1), |this, _| {
                info!(
                    segments = this.unacked_count(),
                    uploads_in_flight = this.busy,
                    "storage draining"
                );
            });
            ctx.run_later(msg.timeout, |this, ctx| {
                warn!(
                    segments = this.unacked_count(),
                    "storage shutdown timed out: stopping with segments not durable"
                );
                this.stop_all(ctx);
            });
        }
        self.check_drained(ctx);
        Box::pin(async move { rx.await.unwrap_or(Err(0)) })
    }
}

impl<B: Backend, F: FileExt> Handler<Forget> for Supervisor<B, F> {
    type Result = bool;

    #[tracing::instrument(skip_all, fields(namespace = %msg.namespace))]
    fn handle(&mut self, msg: Forget, _: &mut Context<Self>) -> bool {
        self.known_durable
            .retain(|generation, _| generation.namespace != msg.namespace);
        let Some(entry) = self.namespaces.get(&msg.namespace) else {
            return true;
        };
        let waiting = self.waiting.values().any(|w| w.namespace == msg.namespace);
        if !entry.unacked.is_empty() || entry.running.is_some() || waiting {
            debug!("not forgotten: segments of it are not durable yet");
            return false;
        }
        if let Some(entry) = self.namespaces.remove(&msg.namespace) {
            entry.scheduler.do_send(ForceShutdown);
        }
        debug!("namespace forgotten");
        true
    }
}

impl<B: Backend, F: FileExt> Handler<ForceShutdown> for Supervisor<B, F> {
    type Result = ();

    fn handle(&mut self, _: ForceShutdown, ctx: &mut Context<Self>) {
        warn!(
            segments = self.unacked_count(),
            "storage force shutdown: segments not durable are left to the next start"
        );
        self.stop_all(ctx);
    }
}
