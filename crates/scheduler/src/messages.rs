//! The messages a `NamespaceScheduler` takes, and the one it sends to whoever owns the upload
//! workers (the supervisor).
//!
//! Flow: the supervisor queues segments (`QueueSegment`); the scheduler asks for a worker with
//! one `RequestUpload` at a time; the supervisor runs the job and answers `UploadDone`. When the
//! supervisor learns from the backend that more is durable than it knew, it says so
//! (`DurableUpTo`), and the scheduler drops what that covers.

use std::sync::Arc;

use actix::{Message, Recipient};
use libsql_wal_backend::NamespaceName;
use libsql_wal_segment::format::FRAME_SIZE;
use libsql_wal_segment::{FileExt, SealedSegment};

use crate::config::SchedulerConfig;

/// A sealed segment for the scheduler's queue. Segments arrive in frame order.
#[derive(Debug)]
pub struct QueueSegment<F, C> {
    /// The segment.
    pub segment: Arc<SealedSegment<F>>,
    /// Where it goes, if not to the backend's default place.
    pub config_override: Option<C>,
    /// When it reached the supervisor (a ticket, increasing across all namespaces); orders
    /// namespaces waiting for an upload worker.
    pub arrival: u64,
}

impl<F: 'static, C: 'static> Message for QueueSegment<F, C> {
    type Result = ();
}

/// Consecutive segments of one namespace to turn into one stored segment.
#[derive(Debug)]
pub struct UploadJob<F, C> {
    /// Identifies the job in `UploadDone`; unique within a storage.
    pub id: u64,
    /// The segments, oldest first, each starting right after the previous one.
    pub segments: Vec<Arc<SealedSegment<F>>>,
    /// Where they go, if not to the backend's default place.
    pub config_override: Option<C>,
    /// Arrival ticket of the oldest segment.
    pub oldest_arrival: u64,
}

impl<F: FileExt, C> UploadJob<F, C> {
    /// Returns the first frame_no of the job.
    pub fn start_frame_no(&self) -> u64 {
        self.segments.first().map_or(0, |s| s.start_frame_no())
    }

    /// Returns the last frame_no of the job: the namespace is durable up to it once the job is
    /// done.
    pub fn end_frame_no(&self) -> u64 {
        self.segments
            .last()
            .map_or(0, |s| s.last_committed_frame_no())
    }

    /// Appends the segments of `candidates` (oldest first, each with its destination) that
    /// continue the job: the next frames, the same destination, within `config`'s caps.
    /// Candidates the job already covers are skipped; the first that does not continue it ends
    /// the extension.
    pub fn extend<'a>(
        &mut self,
        config: &SchedulerConfig,
        candidates: impl IntoIterator<Item = (&'a Arc<SealedSegment<F>>, &'a Option<C>)>,
    ) where
        F: 'a,
        C: PartialEq + 'a,
    {
        let mut frames: u64 = self.segments.iter().map(|s| s.frame_count()).sum();
        for (segment, destination) in candidates {
            let end = self.end_frame_no();
            if segment.last_committed_frame_no() <= end {
                continue;
            }
            let total = frames + segment.frame_count();
            let fits = total <= config.max_upload_frames
                && total * FRAME_SIZE as u64 <= config.max_upload_bytes;
            if !fits || segment.start_frame_no() != end + 1 || *destination != self.config_override
            {
                break;
            }
            self.segments.push(segment.clone());
            frames = total;
        }
    }

    /// Returns the bytes of frames the job reads (before compaction keeps the newest versions).
    pub fn frame_bytes(&self) -> u64 {
        self.segments
            .iter()
            .map(|s| s.frame_count() * FRAME_SIZE as u64)
            .sum()
    }
}

/// How an upload ended, as the scheduler needs to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadOutcome {
    /// Stored: the namespace is durable up to this frame_no.
    Stored {
        /// The job's last frame_no.
        end_frame_no: u64,
    },
    /// Failed (an error, or a panic inside the upload); the job is retried.
    Failed {
        /// What went wrong, for logs.
        error: String,
    },
}

/// Tells a scheduler that an upload of its namespace ended. It may be a job of an earlier
/// incarnation of the scheduler (before a restart): a stored job still advances durability.
#[derive(Debug)]
pub struct UploadDone {
    /// The job.
    pub job: u64,
    /// How it ended.
    pub outcome: UploadOutcome,
}

impl Message for UploadDone {
    type Result = ();
}

/// Tells a scheduler that its namespace is durable up to `frame_no`, learnt other than by one
/// of its jobs (the backend already held those frames): the segments it covers leave the queue
/// without an upload.
#[derive(Debug, Clone, Copy)]
pub struct DurableUpTo {
    /// The namespace's durable frame_no.
    pub frame_no: u64,
}

impl Message for DurableUpTo {
    type Result = ();
}

/// Asks for an upload worker to run `job`. The answer is an `UploadDone` to `reply_to`.
#[derive(Debug)]
pub struct RequestUpload<F, C> {
    /// The namespace.
    pub namespace: NamespaceName,
    /// The work.
    pub job: UploadJob<F, C>,
    /// Where the outcome goes.
    pub reply_to: Recipient<UploadDone>,
}

impl<F: 'static, C: 'static> Message for RequestUpload<F, C> {
    type Result = ();
}

/// Stops the receiver at once. Sent to a scheduler, it drops its queue (its owner still holds
/// every segment it did not report stored); sent to the supervisor, it stops the whole storage
/// without waiting for uploads (the next start re-sends what was not acknowledged).
#[derive(Debug, Clone, Copy)]
pub struct ForceShutdown;

impl Message for ForceShutdown {
    type Result = ();
}
