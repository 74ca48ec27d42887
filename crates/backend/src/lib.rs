//! `libsql-wal-backend`: where segments live durably.
//!
//! - `Backend`: the small core an object store provides (put, get, list, delete), with the fs
//!   backend (the embedded default) and the S3 backend (feature `s3`).
//! - `BackendExt`: the segment operations built once on that core for every backend: store a
//!   compacted segment, find one by frame or time, fetch and verify its index and data, list.
//! - `SegmentKey`: how stored segments are named and ordered.
//! - `Storage`: what the WAL asks of durable storage, and `NoStorage`, which keeps everything
//!   local.
//! - `conformance`: the test suite every backend must pass; `S3TestServer` (feature
//!   `test-server`): a real S3 server on loopback to run it against.
//!
//! Remote layout, under each backend's root: `{namespace}/segments/{key}` (compacted data) and
//! `{namespace}/indexes/{key}` (its page index).

mod backend;
pub mod conformance;
mod error;
mod ext;
mod fs;
mod key;
mod namespace;
#[cfg(feature = "s3")]
mod s3;
mod storage;
#[cfg(feature = "test-server")]
mod test_server;

pub use backend::{Backend, ObjectReader};
pub use error::{BoxError, Error, Result};
pub use ext::{BackendExt, FetchedSegment, FindSegment, NamespaceMeta, SegmentFrames};
pub use fs::{FsBackend, FsConfig};
pub use key::{InvalidSegmentKey, SegmentKey, SEGMENT_KEY_LEN};
pub use namespace::{NamespaceName, MAX_NAMESPACE_LEN};
#[cfg(feature = "s3")]
pub use s3::{S3Backend, S3Config, S3Options};
pub use storage::{NoStorage, OnStored, Storage};
#[cfg(feature = "test-server")]
pub use test_server::{test_server_options, S3TestServer, TEST_BUCKET};
