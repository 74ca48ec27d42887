//! `libsql-wal`: a write-ahead log for libSQL built on segments, plugged into SQLite through
//! libsql-sys's virtual WAL API.
//!
//! - `LibsqlWalManager` is given to `libsql_sys::Connection::open`; every connection gets a
//!   `LibsqlWal` over its namespace's `SharedWal`.
//! - `WalRegistry` holds one `SharedWal` per namespace.
//! - `SharedWal` appends commits to the current segment, seals it by `SwapStrategy`, hands
//!   sealed segments to a `libsql_wal_backend::Storage`, and checkpoints them into the database
//!   file (followed by the libSQL `Footer`).
//! - `restore` rebuilds a namespace's database from durable storage alone, at any stored point;
//!   `plan_restore` says what it would fetch.
//!
//! - `replication` serves a log's commits to replicas as steps (`ReplicationSource`) and
//!   applies them to a replica's own log (`Injector`); `catch_up` brings a replica far behind
//!   up from its primary's bucket (`PrimaryBucket`) rather than a full image.
//!
//! Layers, lowest first: `footer`, `checkpointer` -> `shared` -> `wal` -> `registry` ->
//! `manager`. The checkpointer runs `SharedWal`s through a small trait it defines.

mod catch_up;
mod checkpointer;
mod error;
mod footer;
mod manager;
mod registry;
mod replication;
mod restore;
mod senders;
mod shared;
mod wal;

pub use catch_up::{BucketCatchUp, CatchUpError, PrimaryBucket};
pub use error::{Error, Result};
pub use footer::{Footer, FOOTER_SIZE};
pub use manager::LibsqlWalManager;
pub use registry::{namespace_from_directory, RegistryConfig, Rewound, WalRegistry};
pub use replication::{
    FullImages, Hello, Injector, LogIdentity, ReplicaPosition, ReplicationSource, StepHeader,
    StepInjector, StepPages,
};
pub use restore::{
    plan_restore, restore, OnRestoreProgress, RestoreOptions, RestorePlan, RestoreProgress,
    RestoreReport, RestoreTarget,
};
pub use shared::{CheckpointThreshold, SharedWal, SwapStrategy};
pub use wal::LibsqlWal;
