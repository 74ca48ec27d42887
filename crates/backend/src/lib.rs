//! `libsql-wal-backend`: where segments live durably.
//!
//! - `Backend`: the small core an object store provides (put, get, list, delete), with the fs
//!   backend (the embedded default) and the S3 backend (feature `s3`).
//! - `BackendExt`: the segment operations built once on that core for every backend: store a
//!   compacted segment, find one by frame or time, fetch and verify its index and data, list.
//! - `SegmentKey`: how stored segments are named and ordered.
//! - `plan_chain`, `compact`, `apply_retention`: which segments rebuild a point in time, remote
//!   compaction of runs of segments (tiered or logarithmic), and retention of old ones.
//! - `Storage`: what the WAL asks of durable storage, and `NoStorage`, which keeps everything
//!   local.
//! - `conformance` (feature `conformance`): the test suite every backend must pass;
//!   `S3TestServer` (feature `test-server`, which enables `conformance` too): a real S3 server
//!   on loopback to run it against. Neither is in a default build.
//!
//! Remote layout, under each backend's root: `{namespace}/segments/{key}` (compacted data) and
//! `{namespace}/indexes/{key}` (its page index).

mod backend;
mod chain;
mod compaction;
#[cfg(feature = "conformance")]
pub mod conformance;
mod error;
mod ext;
mod fs;
mod key;
mod namespace;
mod retention;
#[cfg(feature = "s3")]
mod s3;
mod storage;
#[cfg(feature = "test-server")]
mod test_server;

pub use backend::{validate_key, validate_prefix, Backend, ObjectReader};
pub use chain::{maximal_segments, plan_chain, plan_chain_after, strictly_contains, MissingFrames};
pub use compaction::{
    compact, plan_compaction, CompactedGroup, CompactionReport, CompactionStrategy,
};
pub use error::{BoxError, Error, Result};
pub use ext::{
    BackendExt, FetchedPages, FetchedSegment, FindSegment, NamespaceMeta, SegmentData,
    SegmentFrames,
};
pub use fs::{FsBackend, FsConfig};
pub use key::{InvalidSegmentKey, SegmentKey, SEGMENT_KEY_LEN};
pub use namespace::{NamespaceName, MAX_NAMESPACE_LEN};
pub use retention::{apply_retention, plan_retention, RetentionReport, ORPHAN_INDEX_GRACE};
#[cfg(feature = "s3")]
pub use s3::{S3Backend, S3Config, S3Options, SecretKey};
pub use storage::{NoStorage, OnStored, Storage};
#[cfg(feature = "test-server")]
pub use test_server::{test_server_options, S3TestServer, TestServerOptions, TEST_BUCKET};
