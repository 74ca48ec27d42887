//! `StorageConfig`: the knobs of the actor pipeline, with defaults an operator can start from.

use std::path::PathBuf;
use std::time::Duration;

use libsql_wal_scheduler::SchedulerConfig;

use crate::maintenance::MaintenanceConfig;

/// Settings of an `ActorStorage`.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// Upload workers: at most this many uploads run at once, across all namespaces.
    pub max_in_flight: usize,
    /// Segments of one namespace that may wait to become durable. When that many wait,
    /// `store` waits for one of them to be durable: the writer feels a backend that falls
    /// behind, and memory stays bounded.
    pub max_enqueued_segments: usize,
    /// How each namespace's scheduler merges and retries.
    pub scheduler: SchedulerConfig,
    /// Consecutive failed uploads after which a namespace is reported unhealthy (it keeps its
    /// segments and keeps retrying).
    pub unhealthy_after_failures: u32,
    /// Jobs whose frames take at most this many bytes are compacted in memory; larger ones go
    /// through a file in `scratch_dir`.
    pub in_memory_upload_bytes: u64,
    /// Where large compacted uploads (and each maintenance pass) write their local files. A
    /// server should set it under its own data directory. It is created mode 0700; an existing
    /// one must be a directory (not a symlink) owned by this process's user, and is made 0700
    /// if it lets anyone else in; another user's directory is refused. Several storages and
    /// processes may share it: each names its files by an id of its own and removes only
    /// those.
    pub scratch_dir: PathBuf,
    /// How often the supervisor checks that every scheduler is alive.
    pub supervision_interval: Duration,
    /// How long a graceful shutdown waits for the queues to drain before it stops anyway.
    pub shutdown_timeout: Duration,
    /// Capacity of the supervisor's mailbox: `store` calls beyond it wait to be taken. The real
    /// bound is higher: actix's `send` on a full mailbox still enqueues its message (and then
    /// waits), so the mailbox holds at most this many plus one `StoreSegment` per waiting
    /// `store`, which is at most `max_enqueued_segments` per namespace (each holds a place).
    pub mailbox_capacity: usize,
    /// Periodic compaction and retention of every namespace in the backend; `None` runs none
    /// (`ActorStorage::run_maintenance` still runs a pass on demand).
    pub maintenance: Option<MaintenanceConfig>,
}

impl Default for StorageConfig {
    /// 8 workers, 32 waiting segments per namespace, unhealthy after 3 failures in a row,
    /// jobs up to 16 MiB compacted in memory, scratch files in a directory of this user under
    /// the system's temp directory (`$TMPDIR/libsql-wal-uploads-{uid}`: two users never share
    /// it; a server should still set its own), no periodic maintenance.
    fn default() -> Self {
        StorageConfig {
            max_in_flight: 8,
            max_enqueued_segments: 32,
            scheduler: SchedulerConfig::default(),
            unhealthy_after_failures: 3,
            in_memory_upload_bytes: 16 << 20,
            scratch_dir: crate::scratch::default_dir(),
            supervision_interval: Duration::from_millis(100),
            shutdown_timeout: Duration::from_secs(60),
            mailbox_capacity: 1024,
            maintenance: None,
        }
    }
}
