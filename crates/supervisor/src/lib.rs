//! `libsql-wal-supervisor`: the durable-storage pipeline of libsql-wal, as actors.
//!
//! - `ActorStorage`: the `Storage` a server plugs into the WAL. It starts an actix system on a
//!   thread of its own, so it works from any thread and inside any tokio runtime.
//! - `Supervisor`: routes each namespace's sealed segments to its `NamespaceScheduler`
//!   (started on first use, restarted if it stops), owns the `max_in_flight` upload workers and
//!   hands them out fairly, keeps every segment until it is durable, and answers `Metrics`.
//! - `Maintenance`: the optional periodic compaction and retention of every stored namespace
//!   (in the default place and in every override segments were stored with), started by the
//!   supervisor (`StorageConfig::maintenance`); `ActorStorage::run_maintenance` runs one pass
//!   on demand.
//!
//! Guarantees: per namespace, segments become durable in frame order, each once, with at most
//! one upload in flight; a failed or panicking upload is retried, never dropped; every queue
//! is bounded (`store` waits when a namespace has `max_enqueued_segments` not yet durable).
//! Graceful shutdown drains every queue; force shutdown stops at once, and the WAL's next start
//! sends again what was not acknowledged.

mod config;
mod error;
mod maintenance;
mod messages;
mod scratch;
mod storage;
mod supervisor;
mod upload;

pub use config::StorageConfig;
pub use error::{Error, Result};
pub use libsql_wal_scheduler::{ForceShutdown, GetSnapshot, NamespaceScheduler, SchedulerConfig};
pub use maintenance::{
    maintenance_pass, Maintenance, MaintenanceConfig, MaintenanceMetrics, MaintenanceReport,
};
pub use messages::{
    DurableFrameNo, Metrics, NamespaceMetrics, SchedulerOf, Shutdown, StorageMetrics, StoreSegment,
};
pub use storage::ActorStorage;
pub use supervisor::Supervisor;
