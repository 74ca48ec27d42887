//! `NamespaceScheduler`: the upload queue of one namespace, as an actor.
//!
//! Invariants:
//! - Segments become durable strictly in frame order: a job always starts at the oldest segment
//!   not yet stored, and the next job is asked for only when the previous one ended.
//! - At most one upload of the namespace is in flight.
//! - Nothing is dropped: a failed job is retried (exponential backoff with jitter, capped) with
//!   the same segments, for as long as it takes; a segment leaves the queue only when a stored
//!   job covered it.
//! - Consecutive waiting segments with the same destination are merged into one job, up to
//!   `max_upload_frames` and `max_upload_bytes`, so a namespace that writes faster than the
//!   backend accepts costs fewer PUTs.
//!
//! The scheduler owns no worker and no callback: its owner (the supervisor) runs jobs, keeps
//! every segment until it is durable, and rebuilds a fresh scheduler from that record if this
//! one stops. Its state is therefore only a cache of the owner's, in a form that makes jobs.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, AsyncContext, Context, Handler, Message, MessageResult, Recipient};
use libsql_wal_backend::NamespaceName;
use libsql_wal_segment::FileExt;
use tracing::{debug, warn};

use crate::config::SchedulerConfig;
use crate::messages::{
    DurableUpTo, ForceShutdown, QueueSegment, RequestUpload, UploadDone, UploadJob, UploadOutcome,
};

/// Where a job's segments go (a backend's config): jobs merge only segments with equal ones.
pub trait Destination: Clone + PartialEq + Send + Sync + Unpin + 'static {}

impl<C: Clone + PartialEq + Send + Sync + Unpin + 'static> Destination for C {}

/// Returns the delay before retry number `failures` (1 for the first): `initial * 2^(n-1)`
/// capped at `max`, then a uniformly random part of it between half and all, so namespaces
/// that failed together do not retry together.
pub fn retry_delay(config: &SchedulerConfig, failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(31);
    let full = config
        .retry_initial
        .saturating_mul(1 << doublings)
        .min(config.retry_max);
    // A failed random source only loses the jitter.
    let random = getrandom::u64().unwrap_or(u64::MAX);
    let fraction = 0.5 + (random as f64 / u64::MAX as f64) / 2.0;
    full.mul_f64(fraction)
}

/// What a scheduler holds, for tests and diagnostics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerSnapshot {
    /// Segments not yet stored (including those of the job in flight).
    pub queued: usize,
    /// The job in flight, if any.
    pub in_flight: Option<u64>,
    /// The highest frame_no the scheduler knows durable.
    pub durable_frame_no: u64,
    /// Failures since the last stored job.
    pub consecutive_failures: u32,
}

/// Asks a scheduler for its `SchedulerSnapshot`.
#[derive(Debug, Clone, Copy)]
pub struct GetSnapshot;

impl Message for GetSnapshot {
    type Result = SchedulerSnapshot;
}

/// The upload queue of one namespace.
pub struct NamespaceScheduler<F: FileExt, C: Destination> {
    /// The namespace.
    namespace: NamespaceName,
    /// Job size and retry policy.
    config: SchedulerConfig,
    /// Segments not yet stored, in frame order.
    queue: VecDeque<QueueSegment<F, C>>,
    /// The highest frame_no known durable; only moves forward.
    durable_frame_no: u64,
    /// The job asked for and not ended.
    in_flight: Option<u64>,
    /// Set while a retry waits for its delay.
    retry_pending: bool,
    /// Failures since the last stored job.
    consecutive_failures: u32,
    /// Who runs jobs.
    workers: Recipient<RequestUpload<F, C>>,
    /// Job ids, shared by every scheduler of a storage.
    job_ids: Arc<AtomicU64>,
}

impl<F, C> NamespaceScheduler<F, C>
where
    F: FileExt,
    C: Destination,
{
    /// Returns a scheduler for `namespace`, durable up to `durable_frame_no`, that asks
    /// `workers` to run its jobs.
    pub fn new(
        namespace: NamespaceName,
        config: SchedulerConfig,
        durable_frame_no: u64,
        workers: Recipient<RequestUpload<F, C>>,
        job_ids: Arc<AtomicU64>,
    ) -> Self {
        NamespaceScheduler {
            namespace,
            config,
            queue: VecDeque::new(),
            durable_frame_no,
            in_flight: None,
            retry_pending: false,
            consecutive_failures: 0,
            workers,
            job_ids,
        }
    }

    /// Asks for a worker for the next job, unless one is in flight or a retry is waiting.
    fn schedule(&mut self, ctx: &mut Context<Self>) {
        if self.in_flight.is_some() || self.retry_pending {
            return;
        }
        let Some(job) = self.next_job() else { return };
        debug!(
            namespace = %self.namespace,
            job = job.id,
            segments = job.segments.len(),
            start = job.start_frame_no(),
            end = job.end_frame_no(),
            "upload requested"
        );
        self.in_flight = Some(job.id);
        // At most one request per namespace is outstanding, so the owner's queue of requests
        // is bounded by the number of namespaces: `do_send` cannot grow it without bound.
        self.workers.do_send(RequestUpload {
            namespace: self.namespace.clone(),
            job,
            reply_to: ctx.address().recipient(),
        });
    }

    /// Builds the job for the oldest waiting segments: consecutive ones with the same
    /// destination, within the size caps (the first one always goes).
    fn next_job(&self) -> Option<UploadJob<F, C>> {
        let first = self.queue.front()?;
        let mut job = UploadJob {
            id: self.job_ids.fetch_add(1, Ordering::Relaxed),
            segments: vec![first.segment.clone()],
            config_override: first.config_override.clone(),
            oldest_arrival: first.arrival,
        };
        job.extend(
            &self.config,
            self.queue.iter().map(|q| (&q.segment, &q.config_override)),
        );
        Some(job)
    }

    /// Moves the durable frame_no forward to `frame_no` and drops the segments it covers.
    fn advance_durable(&mut self, frame_no: u64) {
        self.durable_frame_no = self.durable_frame_no.max(frame_no);
        while self
            .queue
            .front()
            .is_some_and(|q| q.segment.last_committed_frame_no() <= self.durable_frame_no)
        {
            self.queue.pop_front();
        }
    }

    fn snapshot(&self) -> SchedulerSnapshot {
        SchedulerSnapshot {
            queued: self.queue.len(),
            in_flight: self.in_flight,
            durable_frame_no: self.durable_frame_no,
            consecutive_failures: self.consecutive_failures,
        }
    }
}

impl<F, C> Actor for NamespaceScheduler<F, C>
where
    F: FileExt,
    C: Destination,
{
    type Context = Context<Self>;
}

impl<F, C> Handler<QueueSegment<F, C>> for NamespaceScheduler<F, C>
where
    F: FileExt,
    C: Destination,
{
    type Result = ();

    fn handle(&mut self, msg: QueueSegment<F, C>, ctx: &mut Context<Self>) {
        let (start, end) = (
            msg.segment.start_frame_no(),
            msg.segment.last_committed_frame_no(),
        );
        if end <= self.durable_frame_no {
            return;
        }
        if let Some(last) = self.queue.back() {
            if start <= last.segment.last_committed_frame_no() {
                // Already queued (the owner re-sends its record after a restart).
                return;
            }
        }
        self.queue.push_back(msg);
        self.schedule(ctx);
    }
}

impl<F, C> Handler<DurableUpTo> for NamespaceScheduler<F, C>
where
    F: FileExt,
    C: Destination,
{
    type Result = ();

    fn handle(&mut self, msg: DurableUpTo, _: &mut Context<Self>) {
        // A job in flight keeps going: the owner trims it before it runs, and its outcome
        // still ends it.
        self.advance_durable(msg.frame_no);
    }
}

impl<F, C> Handler<UploadDone> for NamespaceScheduler<F, C>
where
    F: FileExt,
    C: Destination,
{
    type Result = ();

    fn handle(&mut self, msg: UploadDone, ctx: &mut Context<Self>) {
        let ours = self.in_flight == Some(msg.job);
        match msg.outcome {
            UploadOutcome::Stored { end_frame_no } => {
                self.advance_durable(end_frame_no);
                if ours {
                    self.in_flight = None;
                    self.consecutive_failures = 0;
                }
            }
            UploadOutcome::Failed { error } if ours => {
                self.in_flight = None;
                self.consecutive_failures += 1;
                let delay = retry_delay(&self.config, self.consecutive_failures);
                warn!(
                    namespace = %self.namespace,
                    job = msg.job,
                    attempt = self.consecutive_failures,
                    retry_in_ms = delay.as_millis() as u64,
                    %error,
                    "upload failed"
                );
                self.retry_pending = true;
                ctx.run_later(delay, |this, ctx| {
                    this.retry_pending = false;
                    this.schedule(ctx);
                });
            }
            // A failed job of an earlier incarnation: ours covers the same segments.
            UploadOutcome::Failed { .. } => {}
        }
        self.schedule(ctx);
    }
}

impl<F, C> Handler<GetSnapshot> for NamespaceScheduler<F, C>
where
    F: FileExt,
    C: Destination,
{
    type Result = MessageResult<GetSnapshot>;

    fn handle(&mut self, _: GetSnapshot, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.snapshot())
    }
}

impl<F, C> Handler<ForceShutdown> for NamespaceScheduler<F, C>
where
    F: FileExt,
    C: Destination,
{
    type Result = ();

    fn handle(&mut self, _: ForceShutdown, ctx: &mut Context<Self>) {
        debug!(namespace = %self.namespace, queued = self.queue.len(), "scheduler stopped");
        actix::ActorContext::stop(ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_doubles_from_the_initial_delay_up_to_the_cap_with_jitter() {
        let config = SchedulerConfig {
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_secs(2),
            ..SchedulerConfig::default()
        };
        for (failures, full_ms) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (5, 1600),
            (6, 2000),
            (60, 2000),
        ] {
            let delay = retry_delay(&config, failures).as_millis() as u64;
            assert!(
                (full_ms / 2..=full_ms).contains(&delay),
                "retry {failures}: {delay} ms not within [{}, {full_ms}]",
                full_ms / 2
            );
        }
    }
}
