//! The messages the `Supervisor` takes from `ActorStorage` (and from anyone holding its
//! address), and the observable snapshot `Metrics` answers with.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use crate::maintenance::MaintenanceMetrics;

use actix::{Addr, Message};
use libsql_wal_backend::{Generation, NamespaceName, OnStored, Result};
use libsql_wal_scheduler::{Destination, NamespaceScheduler};
use libsql_wal_segment::{FileExt, SealedSegment};
use tokio::sync::OwnedSemaphorePermit;

/// A sealed segment of `generation` to make durable, in frame order after the ones stored
/// before it. Answered once the segment is in the namespace's queue.
pub struct StoreSegment<F, C> {
    /// The generation (of one namespace) the segment belongs to.
    pub generation: Generation,
    /// The segment.
    pub segment: Arc<SealedSegment<F>>,
    /// Where it goes, if not to the backend's default place.
    pub config_override: Option<C>,
    /// Called with what became of the segment (durable, or fenced off).
    pub on_stored: OnStored,
    /// The segment's place in the namespace's bounded queue, released when it is durable.
    pub permit: OwnedSemaphorePermit,
}

impl<F: 'static, C: 'static> Message for StoreSegment<F, C> {
    type Result = Result<()>;
}

/// Forgets a namespace its owner closed: its entry, its scheduler and what the supervisor
/// learnt of it go, unless a segment of it is still not durable (then nothing changes).
/// Answers whether it was forgotten.
#[derive(Debug, Clone)]
pub struct Forget {
    /// The namespace.
    pub namespace: NamespaceName,
}

impl Message for Forget {
    type Result = bool;
}

/// Asks for the highest durable frame_no of a generation: from the supervisor's record when it
/// has one, else from the backend.
#[derive(Debug, Clone)]
pub struct DurableFrameNo<C> {
    /// The generation.
    pub generation: Generation,
    /// Where to ask, if not the backend's default place.
    pub config_override: Option<C>,
}

impl<C: 'static> Message for DurableFrameNo<C> {
    type Result = Result<u64>;
}

/// Graceful shutdown: stop taking segments, drain every queue, then stop. Answered when done,
/// or when `timeout` passed (the rest is abandoned, as in `ForceShutdown`): `Ok(())` if
/// everything drained, else the number of segments left behind.
#[derive(Debug, Clone, Copy)]
pub struct Shutdown {
    /// How long to wait for the queues to drain.
    pub timeout: Duration,
}

impl Message for Shutdown {
    type Result = std::result::Result<(), usize>;
}

/// Asks for the address of a namespace's scheduler, if it has one (for diagnostics: an
/// operator or a test can stop it with `ForceShutdown`, and the supervisor restarts it).
#[derive(Debug, Clone)]
pub struct SchedulerOf<F, C> {
    /// The namespace.
    pub namespace: NamespaceName,
    /// The scheduler's types.
    types: PhantomData<fn() -> (F, C)>,
}

impl<F, C> SchedulerOf<F, C> {
    /// Asks for the scheduler of `namespace`.
    pub fn new(namespace: NamespaceName) -> Self {
        SchedulerOf {
            namespace,
            types: PhantomData,
        }
    }
}

impl<F: FileExt, C: Destination> Message for SchedulerOf<F, C> {
    type Result = Option<Addr<NamespaceScheduler<F, C>>>;
}

/// Asks for the `StorageMetrics` snapshot.
#[derive(Debug, Clone, Copy)]
pub struct Metrics;

impl Message for Metrics {
    type Result = StorageMetrics;
}

/// What the storage pipeline is doing, as a snapshot.
#[derive(Debug, Clone, Default)]
pub struct StorageMetrics {
    /// One entry per namespace the supervisor knows, in name order.
    pub namespaces: Vec<NamespaceMetrics>,
    /// Uploads running now.
    pub uploads_in_flight: usize,
    /// Upload requests waiting for a worker.
    pub uploads_waiting: usize,
    /// Schedulers restarted after they stopped unexpectedly, in all.
    pub restarts: u64,
    /// Uploads that panicked, in all.
    pub panics: u64,
    /// Failed uploads (each one retried), in all.
    pub retries: u64,
    /// Callbacks (`on_stored`) that panicked, in all.
    pub callback_panics: u64,
    /// Periodic maintenance passes (all zero when it is off).
    pub maintenance: MaintenanceMetrics,
    /// False once shutdown began: new segments are refused.
    pub accepting: bool,
}

impl StorageMetrics {
    /// Returns the entry of `namespace`.
    pub fn namespace(&self, namespace: &NamespaceName) -> Option<&NamespaceMetrics> {
        self.namespaces.iter().find(|n| &n.namespace == namespace)
    }

    /// Returns the segments waiting to be durable, over all namespaces.
    pub fn queued_segments(&self) -> usize {
        self.namespaces.iter().map(|n| n.queue_depth).sum()
    }
}

/// What one namespace's part of the pipeline is doing.
#[derive(Debug, Clone, PartialEq)]
pub struct NamespaceMetrics {
    /// The namespace.
    pub namespace: NamespaceName,
    /// Segments taken and not yet durable.
    pub queue_depth: usize,
    /// True while an upload of the namespace runs.
    pub in_flight: bool,
    /// The highest durable frame_no.
    pub durable_frame_no: u64,
    /// Frames taken and not yet durable.
    pub durable_lag_frames: u64,
    /// How long the oldest segment not yet durable has waited.
    pub durable_lag: Duration,
    /// Stored uploads.
    pub uploads: u64,
    /// Stored uploads that carried more than one segment.
    pub merged_uploads: u64,
    /// Segments made durable.
    pub segments_stored: u64,
    /// Failed uploads (each one retried).
    pub retries: u64,
    /// Uploads that panicked.
    pub panics: u64,
    /// Bytes stored (data and index).
    pub bytes_sent: u64,
    /// Times the namespace's scheduler was restarted.
    pub restarts: u64,
    /// False after `unhealthy_after_failures` failed uploads in a row, until one succeeds.
    pub healthy: bool,
    /// The last upload error, while unhealthy.
    pub last_error: Option<String>,
}
