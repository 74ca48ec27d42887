//! `SchedulerConfig`: how a scheduler sizes its jobs and retries failed ones. The lowest layer
//! of the crate: the messages (which build jobs within these caps) and the scheduler (which
//! retries on this policy) both use it, and it uses neither.

use std::time::Duration;

/// How a scheduler makes and retries jobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// Frames (counted in the sealed segments, before compaction) one job may carry. A single
    /// segment larger than this still goes, alone.
    pub max_upload_frames: u64,
    /// Bytes of frames one job may carry, likewise.
    pub max_upload_bytes: u64,
    /// Delay before the first retry of a failed job.
    pub retry_initial: Duration,
    /// Longest delay between retries.
    pub retry_max: Duration,
}

impl Default for SchedulerConfig {
    /// Jobs up to 100,000 frames or 256 MiB; retries from 100 ms doubling up to 30 s.
    fn default() -> Self {
        SchedulerConfig {
            max_upload_frames: 100_000,
            max_upload_bytes: 256 << 20,
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_secs(30),
        }
    }
}
