//! `Storage`: everything the WAL asks of durable storage, and `NoStorage`, which keeps
//! everything local.
//!
//! The WAL never sees a backend or an actor: it hands sealed segments to a `Storage` and learns,
//! through the on-stored callback, up to which frame its log is durable. A server plugs in the
//! actor pipeline (`ActorStorage`), `NoStorage`, or its own.
//!
//! Threads: `store` is called on SQLite's commit path when a segment is sealed, from a plain
//! thread (the WAL drives the future with a blocking executor). It may wait: that wait is the
//! backpressure a full queue puts on a writer. A tokio server must therefore run SQLite work
//! with `spawn_blocking` (never on an executor thread), and an implementation must not need the
//! caller's runtime to make progress.

use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;

use libsql_wal_segment::{FileExt, PageIndex, SealedSegment};

use crate::error::{Error, Result};
use crate::ext::{FetchedPages, FindSegment};
use crate::generation::{Generation, GenerationRecord, Lineage};
use crate::key::SegmentKey;
use crate::namespace::NamespaceName;

/// What became of a segment handed to `Storage::store`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// It is durable, and so is every segment of its generation before it: the generation is
    /// durable up to this frame_no.
    Durable(u64),
    /// Its generation is no longer the newest: generation `newer` took the namespace over, and
    /// the segment is not acknowledged (it may or may not be in the bucket, under its own
    /// generation, where no restore of the newer history reads it).
    Fenced {
        /// The newer generation's number.
        newer: u64,
    },
}

/// Called once with what became of a stored segment (see `Stored`). It runs on the storage's
/// own thread: it must be quick and not block.
///
/// A storage that gives up on a segment after `store` returned (it refused it, it shut down
/// with the segment not durable, its actor stopped) drops the callback without calling it:
/// that is how the caller learns of every refusal, and it hands the segment over again. (A
/// storage that keeps no remote copies, `keeps_remote_copies` false, never calls it.)
pub type OnStored = Box<dyn FnOnce(Stored) + Send + 'static>;

/// Durable storage as the WAL sees it.
pub trait Storage: Send + Sync + 'static {
    /// The file type of the segments the WAL hands over.
    type File: FileExt;
    /// A per-namespace override of where segments go (the backend's config).
    type Config: Clone + Send + Sync + 'static;

    /// Takes a sealed segment of `generation` (the writer's own: see `create_generation`) to
    /// make durable, in frame order after the ones stored before it; `on_stored` is called when
    /// it is. Returns once the segment is queued, which may wait while the namespace's queue is
    /// full (backpressure). Before it acknowledges an upload, the storage checks that no newer
    /// generation exists; if one does, the segment and every later one of the generation are
    /// `Stored::Fenced`, and `store` fails with `Error::Fenced`.
    fn store(
        &self,
        generation: &Generation,
        segment: Arc<SealedSegment<Self::File>>,
        config_override: Option<Self::Config>,
        on_stored: OnStored,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Returns true if stored segments become durable somewhere else (so the WAL checkpoints a
    /// segment only once it is durable), false if nothing leaves the machine (the WAL then
    /// checkpoints by its local policy).
    fn keeps_remote_copies(&self) -> bool;

    /// Returns the highest frame_no of `generation` known to be durable (0 if none).
    fn durable_frame_no(
        &self,
        generation: &Generation,
        config_override: Option<&Self::Config>,
    ) -> impl Future<Output = Result<u64>> + Send;

    /// Returns every generation of `namespace`, oldest first (`BackendExt::lineage`).
    fn lineage(
        &self,
        namespace: &NamespaceName,
        config_override: Option<&Self::Config>,
    ) -> impl Future<Output = Result<Lineage>> + Send;

    /// Creates generation `record` of `namespace` if its number is free: returns false when
    /// another writer took it first (`BackendExt::create_generation`). The writer that creates
    /// a generation owns it until a newer one is created.
    fn create_generation(
        &self,
        namespace: &NamespaceName,
        record: &GenerationRecord,
        config_override: Option<&Self::Config>,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Finds a stored segment of `generation`.
    fn find_segment(
        &self,
        generation: &Generation,
        find: FindSegment,
        config_override: Option<&Self::Config>,
    ) -> impl Future<Output = Result<Option<SegmentKey>>> + Send;

    /// Fetches and verifies a stored segment's page index.
    fn fetch_index(
        &self,
        generation: &Generation,
        key: SegmentKey,
        config_override: Option<&Self::Config>,
    ) -> impl Future<Output = Result<PageIndex>> + Send;

    /// Streams a stored segment's data into a database file, verifying it against its stored
    /// `index` and writing the pages of `wanted` (see `BackendExt::fetch_pages_into`).
    fn fetch_pages_into(
        &self,
        generation: &Generation,
        key: SegmentKey,
        index: &PageIndex,
        wanted: &[(u32, u64)],
        db: &std::fs::File,
        config_override: Option<&Self::Config>,
    ) -> impl Future<Output = Result<FetchedPages>> + Send;

    /// Lists the stored segments of `generation` ending at or before `until_frame_no`, newest
    /// first.
    fn list_segments(
        &self,
        generation: &Generation,
        until_frame_no: u64,
        config_override: Option<&Self::Config>,
    ) -> impl Future<Output = Result<Vec<SegmentKey>>> + Send;

    /// Stops taking segments and finishes or abandons the work in flight, as the implementation
    /// documents.
    fn shutdown(&self) -> impl Future<Output = ()> + Send;

    /// Forgets what it keeps of `namespace`, which its owner closed (every segment handed over
    /// is durable and no more come until it opens again): nothing per namespace lives forever.
    /// Returns false if something of it is still in flight, and then keeps it. The default
    /// keeps nothing per namespace.
    fn forget(&self, namespace: &NamespaceName) -> impl Future<Output = bool> + Send {
        let _ = namespace;
        async { true }
    }
}

/// Storage that stores nothing: segments stay local, nothing is ever reported durable, and
/// nothing can be fetched. The WAL then checkpoints by its local policy.
#[derive(Debug)]
pub struct NoStorage<F> {
    /// The file type of the segments it is handed.
    file: PhantomData<fn() -> F>,
}

impl<F> Default for NoStorage<F> {
    fn default() -> Self {
        NoStorage { file: PhantomData }
    }
}

fn nothing_stored(generation: &Generation, key: SegmentKey, what: &str) -> Error {
    Error::NotFound {
        key: format!(
            "{}{what}/{key} (no storage is configured)",
            generation.prefix()
        ),
    }
}

impl<F: FileExt> Storage for NoStorage<F> {
    type File = F;
    type Config = ();

    async fn store(
        &self,
        _generation: &Generation,
        _segment: Arc<SealedSegment<F>>,
        _config_override: Option<()>,
        _on_stored: OnStored,
    ) -> Result<()> {
        Ok(())
    }

    fn keeps_remote_copies(&self) -> bool {
        false
    }

    async fn durable_frame_no(&self, _: &Generation, _: Option<&()>) -> Result<u64> {
        Ok(0)
    }

    async fn lineage(&self, _: &NamespaceName, _: Option<&()>) -> Result<Lineage> {
        Ok(Lineage::default())
    }

    async fn create_generation(
        &self,
        _: &NamespaceName,
        _: &GenerationRecord,
        _: Option<&()>,
    ) -> Result<bool> {
        Ok(true)
    }

    async fn find_segment(
        &self,
        _: &Generation,
        _: FindSegment,
        _: Option<&()>,
    ) -> Result<Option<SegmentKey>> {
        Ok(None)
    }

    async fn fetch_index(
        &self,
        generation: &Generation,
        key: SegmentKey,
        _: Option<&()>,
    ) -> Result<PageIndex> {
        Err(nothing_stored(generation, key, "indexes"))
    }

    async fn fetch_pages_into(
        &self,
        generation: &Generation,
        key: SegmentKey,
        _: &PageIndex,
        _: &[(u32, u64)],
        _: &std::fs::File,
        _: Option<&()>,
    ) -> Result<FetchedPages> {
        Err(nothing_stored(generation, key, "segments"))
    }

    async fn list_segments(
        &self,
        _: &Generation,
        _: u64,
        _: Option<&()>,
    ) -> Result<Vec<SegmentKey>> {
        Ok(Vec::new())
    }

    async fn shutdown(&self) {}
}
