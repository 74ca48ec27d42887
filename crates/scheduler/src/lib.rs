//! `libsql-wal-scheduler`: the per-namespace upload scheduler of libsql-wal.
//!
//! A `NamespaceScheduler` (an actix actor) keeps one namespace's sealed segments in frame order,
//! merges the waiting ones into one `UploadJob`, asks its owner for an upload worker with one
//! `RequestUpload` at a time, and retries failed jobs with backoff. The owner (the supervisor
//! crate) runs the jobs, keeps every segment until it is durable, and restarts a scheduler that
//! stops. Messages are nouns: `QueueSegment`, `RequestUpload`, `UploadDone`, `ForceShutdown`.

mod messages;
mod scheduler;

pub use messages::{
    ForceShutdown, QueueSegment, RequestUpload, UploadDone, UploadJob, UploadOutcome,
};
pub use scheduler::{
    retry_delay, Destination, GetSnapshot, NamespaceScheduler, SchedulerConfig, SchedulerSnapshot,
};
