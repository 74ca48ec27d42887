//! `libsql-wal-backend`: where segments live durably.
//!
//! - `Backend`: the small core an object store provides (put, get, list, delete), with the fs
//!   backend (the embedded default) and the S3 backend (feature `s3`).
//! - `BackendExt`: the segment operations built once on that core for every backend: store a
//!   compacted segment, find one by frame or time, fetch and verify its index and data, list.
//! - `SegmentKey`: how stored segments are named and ordered.
//! - `plan_chain`, `compact`, `apply_retention`: which segments rebuild a point in time, remote
//!   compaction of runs of segments (tiered or logarithmic), and retention of old ones.
//! - `drop_dead_generations`: retention of whole generations, the branches no restore inside
//!   the window reaches.
//! - `Storage`: what the WAL asks of durable storage, and `NoStorage`, which keeps everything
//!   local.
//! - `Generation`, `GenerationRecord`, `Lineage`: which log wrote which objects of a namespace,
//!   and which one may write it now (see `generation`).
//! - `segment_object`, `index_object`, `segments_prefix`, `indexes_prefix`,
//!   `generation_object`: the remote layout.
//!
//! The suite every backend must pass and a real S3 server to run it against are in the
//! `libsql-wal-testkit` crate (tests only).
//!
//! Remote layout, under each backend's root, per namespace:
//! `{namespace}/generations/{number:020}/generation` (the generation's record),
//! `{namespace}/generations/{number:020}/segments/{key}` (compacted data) and
//! `{namespace}/generations/{number:020}/indexes/{key}` (its page index).

mod backend;
mod chain;
mod compaction;
mod error;
mod ext;
mod fs;
mod generation;
mod key;
mod lineage_retention;
mod namespace;
mod retention;
#[cfg(feature = "s3")]
mod s3;
mod storage;

pub use backend::{validate_key, validate_prefix, Backend, ObjectReader, ObjectStat};
pub use chain::{maximal_segments, plan_chain, plan_chain_after, strictly_contains, MissingFrames};
pub use compaction::{
    compact, plan_compaction, plan_compaction_of, CompactedGroup, CompactionReport,
    CompactionStrategy,
};
pub use error::{BoxError, Error, Result};
pub use ext::{
    index_object, indexes_prefix, list_index_keys, segment_object, segments_prefix, BackendExt,
    DeletedNamespace, FetchedPages, FetchedSegment, FindSegment, NamespaceMeta, SegmentData,
    SegmentFrames,
};
pub use fs::{FsBackend, FsConfig};
pub use generation::{
    generation_object, generation_prefix, generations_prefix, ForkPoint, Generation,
    GenerationKind, GenerationRecord, Lineage,
};
pub use key::{InvalidSegmentKey, SegmentKey, SEGMENT_KEY_LEN};
pub use lineage_retention::{dead_generations, drop_dead_generations, plan_dead_generations};
pub use namespace::{NamespaceName, MAX_NAMESPACE_LEN};
pub use retention::{apply_retention, now_ms, plan_retention, RetentionReport, ORPHAN_INDEX_GRACE};
#[cfg(feature = "s3")]
pub use s3::{S3Backend, S3Config, S3Options, SecretKey};
pub use storage::{NoStorage, OnStored, Storage, Stored};
