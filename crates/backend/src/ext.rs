//! `BackendExt`: the segment and generation operations every backend gets from its `Backend`
//! core. The remote layout is decided here and in `generation`, and only there:
//!
//! - `{namespace}/generations/{number:020}/generation`: a generation's record (see
//!   `generation`), created with a conditional write.
//! - `{namespace}/generations/{number:020}/segments/{key}`: a compacted segment's data, and
//!   `.../indexes/{key}` its page index. The index is written before the data and deleted after
//!   it, so a listed segment always has its index; the data object is the commit point of a
//!   store. Every segment's header names the generation's log: one of another log is corrupt.
//!
//! Everything read is verified: indexes are decoded and checked, data is checked frame by frame
//! as it streams (`CompactedDecoder`), and the header must match the key it was stored under.
//! A bad object is `Error::Corrupt` naming its key. Nothing read is trusted to size memory: an
//! index object is read no further than the longest index its key's frames allow, and counts
//! from a header reserve at most `MAX_PREALLOCATED_ENTRIES` entries up front.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use libsql_wal_segment::format::{
    check_page_buffer, untrusted_capacity, CompactedHeader, FrameHeader, COMPACTED_HEADER_SIZE,
    FRAME_HEADER_SIZE, FRAME_SIZE, PAGE_SIZE,
};
use libsql_wal_segment::{CompactedDecoder, FileExt, PageIndex};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tracing::{debug, warn};

use crate::backend::{Backend, ObjectReader};
use crate::error::{Error, Result};
use crate::generation::{
    generation_object, generations_prefix, parse_generation_number, Generation, GenerationRecord,
    Lineage,
};
use crate::key::SegmentKey;
use crate::namespace::NamespaceName;

/// Keys listed per `list` call.
const LIST_PAGE: usize = 1000;

/// The keys under a prefix, a page of `LIST_PAGE` at a time, each page listed after the last
/// key of the one before; the listing ends at the first page shorter than asked.
struct KeyPages {
    prefix: String,
    after: Option<String>,
    ended: bool,
}

impl KeyPages {
    /// The keys under `prefix` that sort after `after` (after nothing when `None`).
    fn new(prefix: String, after: Option<String>) -> Self {
        KeyPages {
            prefix,
            after,
            ended: false,
        }
    }

    /// Returns the next page, or `None` once the listing ended.
    async fn next<B: Backend + ?Sized>(
        &mut self,
        backend: &B,
        config: &B::Config,
    ) -> Result<Option<Vec<String>>> {
        if self.ended {
            return Ok(None);
        }
        let page = backend
            .list(config, &self.prefix, self.after.as_deref(), LIST_PAGE)
            .await?;
        self.ended = page.len() < LIST_PAGE;
        if let Some(last) = page.last() {
            self.after = Some(last.clone());
        }
        Ok((!page.is_empty()).then_some(page))
    }
}

/// Reads object `object` whole, refusing (as `Corrupt`, `too_long` saying why) one longer than
/// `limit` bytes: it is read no further than one byte past the limit, and the buffer grows only
/// as bytes really arrive.
async fn read_bounded<B: Backend + ?Sized>(
    backend: &B,
    config: &B::Config,
    object: &str,
    limit: u64,
    too_long: impl FnOnce() -> String,
) -> Result<Vec<u8>> {
    let reader = backend.get(config, object).await?;
    let mut bytes = Vec::new();
    reader
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| Error::transient(format!("reading {object}"), e))?;
    if bytes.len() as u64 > limit {
        return Err(Error::corrupt(object, too_long()));
    }
    Ok(bytes)
}

/// What `find_segment` looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FindSegment {
    /// The newest-ending segment whose last frame is at or before this frame_no (the widest of
    /// those). A restore to frame n starts from it. One `list` call.
    EndingAtOrBefore(u64),
    /// The segment that contains this frame_no (the narrowest, if compacted segments overlap
    /// it), or else the newest that ends before it. Lists from the newest segment down to it.
    Containing(u64),
    /// The newest segment sealed at or before this time (milliseconds since the Unix epoch),
    /// never one sealed after it. Lists from the newest segment down to it.
    SealedAtOrBefore(u64),
}

/// The data of a compacted segment to store.
#[derive(Debug)]
pub enum SegmentData<'a> {
    /// In a file, streamed from disk.
    File(&'a Path),
    /// In memory.
    Bytes(Vec<u8>),
}

/// What a backend knows about a generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NamespaceMeta {
    /// The highest frame_no stored (0 when nothing is).
    pub durable_frame_no: u64,
}

/// What `delete_namespace` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeletedNamespace {
    /// The generation that marks the namespace deleted (kept by a full delete too).
    pub mark: Option<u64>,
    /// Objects deleted.
    pub objects_deleted: u64,
}

/// Generation records `lineage` reads at once.
const RECORD_READS: usize = 8;

/// Longest generation record read (a record is well under 1 KiB).
const MAX_RECORD_LEN: u64 = 64 << 10;

/// What `fetch_pages_into` read.
#[derive(Debug, Clone, Copy)]
pub struct FetchedPages {
    /// The verified header of the data.
    pub header: CompactedHeader,
    /// Bytes of data read.
    pub bytes: u64,
}

/// A segment fetched to a local file and verified.
#[derive(Debug, Clone)]
pub struct FetchedSegment {
    /// The header of the data.
    pub header: CompactedHeader,
    /// The page index rebuilt from the frames that were verified.
    pub index: PageIndex,
    /// Where the data is.
    pub path: PathBuf,
}

/// The frames of a stored segment, verified one by one as they are read.
pub struct SegmentFrames {
    /// The object body.
    reader: ObjectReader,
    /// Verifies frames and knows the header.
    decoder: CompactedDecoder,
    /// Full key of the object, for errors.
    object: String,
    /// Reused frame buffer.
    buf: Vec<u8>,
}

impl std::fmt::Debug for SegmentFrames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentFrames")
            .field("object", &self.object)
            .field("header", self.decoder.header())
            .finish()
    }
}

/// Reads until `buf` is full or the reader ends; returns the bytes read.
async fn read_full(
    reader: &mut (impl AsyncRead + Unpin + ?Sized),
    buf: &mut [u8],
) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]).await? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

impl SegmentFrames {
    async fn open(mut reader: ObjectReader, object: String, key: SegmentKey) -> Result<Self> {
        let mut encoded = [0; COMPACTED_HEADER_SIZE];
        let n = read_full(&mut reader, &mut encoded)
            .await
            .map_err(|e| Error::transient(format!("reading {object}"), e))?;
        if n < COMPACTED_HEADER_SIZE {
            return Err(Error::corrupt(
                &object,
                format!("truncated: {n} bytes, a header needs {COMPACTED_HEADER_SIZE}"),
            ));
        }
        let decoder = CompactedDecoder::new(&encoded, &object)
            .map_err(|e| Error::from_segment(&object, e))?;
        if SegmentKey::from(decoder.header()) != key {
            return Err(Error::corrupt(
                &object,
                format!(
                    "header covers frames {}..={} sealed at {}, not what the key says",
                    decoder.header().start_frame_no,
                    decoder.header().end_frame_no,
                    decoder.header().timestamp_ms
                ),
            ));
        }
        Ok(SegmentFrames {
            reader,
            decoder,
            object,
            buf: vec![0; FRAME_SIZE],
        })
    }

    /// Returns the verified header.
    pub fn header(&self) -> &CompactedHeader {
        self.decoder.header()
    }

    /// Returns the byte offset in the data of the next frame.
    pub fn next_offset(&self) -> u64 {
        self.decoder.next_offset()
    }

    /// Reads and verifies the next frame, copying its page into `page` (`PAGE_SIZE` bytes).
    /// Returns `None` after the last frame, once it checked that nothing follows.
    pub async fn next_frame(&mut self, page: &mut [u8]) -> Result<Option<FrameHeader>> {
        check_page_buffer(page, Path::new(&self.object))
            .map_err(|e| Error::from_segment(&self.object, e))?;
        let frame = self.next_raw_frame().await?;
        if frame.is_some() {
            page.copy_from_slice(&self.buf[FRAME_HEADER_SIZE..]);
        }
        Ok(frame)
    }

    /// Reads and verifies the next frame into the internal buffer.
    async fn next_raw_frame(&mut self) -> Result<Option<FrameHeader>> {
        let object = &self.object;
        let io_err = |e| Error::transient(format!("reading {object}"), e);
        if self.decoder.is_complete() {
            let mut extra = [0; 1];
            return match read_full(&mut self.reader, &mut extra)
                .await
                .map_err(io_err)?
            {
                0 => Ok(None),
                _ => Err(Error::from_segment(object, self.decoder.trailing_bytes())),
            };
        }
        let n = read_full(&mut self.reader, &mut self.buf)
            .await
            .map_err(io_err)?;
        self.decoder
            .decode_frame(&self.buf[..n])
            .map(Some)
            .map_err(|e| Error::from_segment(object, e))
    }
}

/// Returns the error for a stored index that does not point at the frames of its data.
fn index_mismatch(generation: &Generation, key: &SegmentKey) -> Error {
    Error::corrupt(
        index_object(generation, key),
        "the index does not point at the frames of the segment's data",
    )
}

/// Largest run of consecutive pages `fetch_pages_into` writes with one call.
const PAGE_RUN_BYTES: usize = 4 << 20;
/// `fetch_pages_into` syncs the file after each this many bytes it wrote, so a large restore
/// keeps a bounded amount of dirty page cache (other tenants share that memory) and the
/// caller's final sync has little left to do.
const SYNC_EVERY_BYTES: usize = 32 << 20;

/// Consecutive pages waiting to be written into a database file. A full run is written on
/// tokio's blocking pool while the next one fills, so reading and verifying frames overlaps the
/// writes; at most one write is in flight.
struct PageRun {
    db: Arc<std::fs::File>,
    /// The object the pages come from, for errors.
    object: Arc<str>,
    /// The page number of the run's first page.
    first: u32,
    pages: Vec<u8>,
    /// The write in flight; gives its buffer back.
    writing: Option<tokio::task::JoinHandle<(Vec<u8>, Result<()>)>>,
    /// Bytes written since the last sync.
    unsynced: usize,
}

impl PageRun {
    fn new(db: std::fs::File, object: &str) -> Self {
        PageRun {
            db: Arc::new(db),
            object: object.into(),
            first: 0,
            pages: Vec::with_capacity(PAGE_RUN_BYTES),
            writing: None,
            unsynced: 0,
        }
    }

    /// Adds `page`, the image of `page_no`, writing the run first if `page_no` does not extend
    /// it or it is full.
    async fn push(&mut self, page_no: u32, page: &[u8]) -> Result<()> {
        let next = u64::from(self.first) + (self.pages.len() / PAGE_SIZE) as u64;
        if !self.pages.is_empty()
            && (u64::from(page_no) != next || self.pages.len() >= PAGE_RUN_BYTES)
        {
            self.flush().await?;
        }
        if self.pages.is_empty() {
            self.first = page_no;
        }
        self.pages.extend_from_slice(page);
        Ok(())
    }

    /// Waits for the write in flight; returns its buffer, emptied.
    async fn written(&mut self) -> Result<Vec<u8>> {
        let Some(writing) = self.writing.take() else {
            return Ok(Vec::with_capacity(PAGE_RUN_BYTES));
        };
        let (mut buffer, result) = writing.await.map_err(|e| {
            Error::transient(
                format!("writing pages of {} into the database", self.object),
                e,
            )
        })?;
        result?;
        buffer.clear();
        Ok(buffer)
    }

    /// Starts writing the run at its place in the database file, after the previous write.
    async fn flush(&mut self) -> Result<()> {
        if self.pages.is_empty() {
            return Ok(());
        }
        let next_buffer = self.written().await?;
        let pages = std::mem::replace(&mut self.pages, next_buffer);
        self.unsynced += pages.len();
        let sync = self.unsynced >= SYNC_EVERY_BYTES;
        if sync {
            self.unsynced = 0;
        }
        let (db, object, first) = (self.db.clone(), self.object.clone(), self.first);
        self.writing = Some(tokio::task::spawn_blocking(move || {
            let at = u64::from(first.saturating_sub(1)) * PAGE_SIZE as u64;
            let result = db
                .write_all_at(&pages, at)
                .and_then(|()| if sync { db.sync_data() } else { Ok(()) })
                .map_err(|e| {
                    Error::transient(
                        format!("writing pages {first}.. of {object} into the database"),
                        e,
                    )
                });
            (pages, result)
        }));
        Ok(())
    }

    /// Writes what is left and waits until every write is done.
    async fn finish(mut self) -> Result<()> {
        self.flush().await?;
        self.written().await.map(drop)
    }
}

/// Longest index object read, whatever its key says, so a crafted key cannot make a reader
/// buffer hundreds of GiB. The bound per page of `PageIndex::max_encoded_len` is a worst case
/// (sparse pages, arbitrary offsets): the index of compacted data, whose offsets are regular,
/// takes well under a byte per page (2 million consecutive pages: under 10 KiB), so no real
/// index comes near this.
const MAX_INDEX_OBJECT_LEN: u64 = 1 << 30;

/// Returns the most bytes the index object of `key` can hold: an index of as many pages as the
/// key covers frames (a compacted segment holds one frame per page, at most one per frame of
/// its range, and at most 2^32 - 1 of them), at most `MAX_INDEX_OBJECT_LEN`.
fn max_index_len(key: &SegmentKey) -> u64 {
    let frames = key
        .end_frame_no
        .saturating_sub(key.start_frame_no)
        .saturating_add(1)
        .min(u64::from(u32::MAX));
    PageIndex::max_encoded_len(frames).min(MAX_INDEX_OBJECT_LEN)
}

/// Returns the key of a segment's data object.
pub fn segment_object(generation: &Generation, key: &SegmentKey) -> String {
    format!("{}segments/{key}", generation.prefix())
}

/// Returns the key of a segment's index object.
pub fn index_object(generation: &Generation, key: &SegmentKey) -> String {
    format!("{}indexes/{key}", generation.prefix())
}

/// Returns the prefix of a generation's data objects.
pub fn segments_prefix(generation: &Generation) -> String {
    format!("{}segments/", generation.prefix())
}

/// Returns the prefix of a generation's index objects.
pub fn indexes_prefix(generation: &Generation) -> String {
    format!("{}indexes/", generation.prefix())
}

/// Parses a listed object key under `prefix` into a segment key.
fn parse_listed(prefix: &str, object: &str) -> Result<SegmentKey> {
    object
        .strip_prefix(prefix)
        .unwrap_or(object)
        .parse()
        .map_err(|e: crate::key::InvalidSegmentKey| Error::corrupt(object, e.to_string()))
}

/// Returns the keys of `generation`'s index objects, in listing order (newest-ending first),
/// whether or not their data exists. An object under the index prefix whose name is not a key
/// is skipped with a warning: it is not ours to judge or delete.
pub async fn list_index_keys<B: Backend + ?Sized>(
    backend: &B,
    config: &B::Config,
    generation: &Generation,
) -> Result<Vec<SegmentKey>> {
    let prefix = indexes_prefix(generation);
    let mut pages = KeyPages::new(prefix.clone(), None);
    let mut keys = Vec::new();
    while let Some(page) = pages.next(backend, config).await? {
        for object in &page {
            match parse_listed(&prefix, object) {
                Ok(key) => keys.push(key),
                Err(e) => {
                    warn!(object, error = %e, "skipping an index object that is not a segment key")
                }
            }
        }
    }
    Ok(keys)
}

/// Segment operations, available on every `Backend`.
pub trait BackendExt: Backend {
    /// Stores a compacted segment of `generation` under `key`: `data` is the compacted data (as
    /// `merge` wrote it, in a file or in memory), `index` its encoded page index. The index is
    /// stored first, then the data; the segment exists once the data does.
    fn store_segment(
        &self,
        config: &Self::Config,
        generation: &Generation,
        key: SegmentKey,
        data: SegmentData<'_>,
        index: Vec<u8>,
    ) -> impl Future<Output = Result<()>> + Send {
        async move {
            self.put_bytes(config, &index_object(generation, &key), index)
                .await?;
            let object = segment_object(generation, &key);
            match data {
                SegmentData::File(path) => self.put_file(config, &object, path).await?,
                SegmentData::Bytes(bytes) => self.put_bytes(config, &object, bytes).await?,
            }
            debug!(%generation, %key, "segment stored");
            Ok(())
        }
    }

    /// Returns the keys of `generation`'s segments that end at or before `until_frame_no`,
    /// newest-ending first.
    fn list_segments(
        &self,
        config: &Self::Config,
        generation: &Generation,
        until_frame_no: u64,
    ) -> impl Future<Output = Result<Vec<SegmentKey>>> + Send {
        async move {
            let prefix = segments_prefix(generation);
            let after = format!(
                "{prefix}{}",
                SegmentKey::list_after_for_end_at_most(until_frame_no)
            );
            let mut pages = KeyPages::new(prefix.clone(), Some(after));
            let mut keys = Vec::new();
            while let Some(page) = pages.next(self, config).await? {
                for object in &page {
                    keys.push(parse_listed(&prefix, object)?);
                }
            }
            Ok(keys)
        }
    }

    /// Finds a segment of `generation` (see `FindSegment`).
    fn find_segment(
        &self,
        config: &Self::Config,
        generation: &Generation,
        find: FindSegment,
    ) -> impl Future<Output = Result<Option<SegmentKey>>> + Send {
        async move {
            let prefix = segments_prefix(generation);
            if let FindSegment::EndingAtOrBefore(frame_no) = find {
                let after = format!(
                    "{prefix}{}",
                    SegmentKey::list_after_for_end_at_most(frame_no)
                );
                let page = self.list(config, &prefix, Some(&after), 1).await?;
                return page.first().map(|o| parse_listed(&prefix, o)).transpose();
            }
            // Walk from the newest segment down.
            let mut pages = KeyPages::new(prefix.clone(), None);
            let mut containing = None;
            while let Some(page) = pages.next(self, config).await? {
                for object in &page {
                    let key = parse_listed(&prefix, object)?;
                    match find {
                        FindSegment::SealedAtOrBefore(t) if key.timestamp_ms <= t => {
                            return Ok(Some(key))
                        }
                        FindSegment::Containing(n) if key.includes(n) => containing = Some(key),
                        FindSegment::Containing(n) if key.end_frame_no < n => {
                            return Ok(containing.or(Some(key)))
                        }
                        _ => {}
                    }
                }
            }
            Ok(containing)
        }
    }

    /// Fetches and verifies the page index of a segment.
    fn fetch_index(
        &self,
        config: &Self::Config,
        generation: &Generation,
        key: SegmentKey,
    ) -> impl Future<Output = Result<PageIndex>> + Send {
        async move {
            let object = index_object(generation, &key);
            let limit = max_index_len(&key);
            let bytes = read_bounded(self, config, &object, limit, || {
                format!(
                    "index is longer than {limit} bytes, the most an index of a segment of {} \
                     frames may take",
                    key.end_frame_no
                        .saturating_sub(key.start_frame_no)
                        .saturating_add(1)
                )
            })
            .await?;
            PageIndex::decode(&bytes, Path::new(&object), 0)
                .map_err(|e| Error::from_segment(&object, e))
        }
    }

    /// Opens the data of a segment as a stream of verified frames.
    fn fetch_segment_frames(
        &self,
        config: &Self::Config,
        generation: &Generation,
        key: SegmentKey,
    ) -> impl Future<Output = Result<SegmentFrames>> + Send {
        async move {
            let object = segment_object(generation, &key);
            let reader = self.get(config, &object).await?;
            let frames = SegmentFrames::open(reader, object, key).await?;
            if frames.header().log_id != generation.log_id {
                return Err(Error::corrupt(
                    &frames.object,
                    format!(
                        "belongs to log {}, not to {generation}'s log {}",
                        frames.header().log_id,
                        generation.log_id
                    ),
                ));
            }
            Ok(frames)
        }
    }

    /// Verifies a stored segment end to end: its index decodes, every frame of its data checks
    /// out, and the index points at exactly those frames. Returns the data's header.
    fn verify_segment(
        &self,
        config: &Self::Config,
        generation: &Generation,
        key: SegmentKey,
    ) -> impl Future<Output = Result<CompactedHeader>> + Send {
        async move {
            let index = self.fetch_index(config, generation, key).await?;
            let mut frames = self.fetch_segment_frames(config, generation, key).await?;
            let mut entries =
                Vec::with_capacity(untrusted_capacity(frames.header().frame_count.into()));
            loop {
                let offset = frames.next_offset();
                match frames.next_raw_frame().await? {
                    Some(frame) => entries.push((frame.page_no, offset)),
                    None => break,
                }
            }
            if index.entries() != entries {
                return Err(index_mismatch(generation, &key));
            }
            Ok(*frames.header())
        }
    }

    /// Streams the data of a segment into a database file: verifies every frame, checks that
    /// `index` (the segment's stored index) points at exactly those frames, and writes the pages
    /// of `wanted` (entries of `index`, `(page_no, offset)` in increasing page order) into `db`
    /// at their place, a run of consecutive pages with one write. Nothing else touches the disk:
    /// no download file, no fsync (the caller syncs `db` once it holds every page).
    ///
    /// Writes run on tokio's blocking pool, overlapping the reads. On error `db` may hold some of
    /// the pages: the caller discards it.
    fn fetch_pages_into(
        &self,
        config: &Self::Config,
        generation: &Generation,
        key: SegmentKey,
        index: &PageIndex,
        wanted: &[(u32, u64)],
        db: &std::fs::File,
    ) -> impl Future<Output = Result<FetchedPages>> + Send {
        async move {
            let mut frames = self.fetch_segment_frames(config, generation, key).await?;
            let mut expected = index.entries().into_iter();
            let mut wanted = wanted.iter().copied().peekable();
            let db = db.try_clone().map_err(|e| {
                Error::transient("sharing the database file pages are written into", e)
            })?;
            let mut run = PageRun::new(db, &frames.object);
            loop {
                let offset = frames.next_offset();
                let Some(frame) = frames.next_raw_frame().await? else {
                    break;
                };
                if expected.next() != Some((frame.page_no, offset)) {
                    return Err(index_mismatch(generation, &key));
                }
                if wanted.next_if_eq(&(frame.page_no, offset)).is_some() {
                    run.push(frame.page_no, &frames.buf[FRAME_HEADER_SIZE..])
                        .await?;
                }
            }
            if expected.next().is_some() {
                return Err(index_mismatch(generation, &key));
            }
            if let Some((page_no, _)) = wanted.next() {
                return Err(Error::corrupt(
                    index_object(generation, &key),
                    format!("page {page_no} was asked for but the data holds no such frame"),
                ));
            }
            run.finish().await?;
            Ok(FetchedPages {
                header: *frames.header(),
                bytes: frames.next_offset(),
            })
        }
    }

    /// Downloads the data of a segment to `dest`, verifying every frame on the way. The bytes go
    /// to a temporary sibling first, are fsynced, and renamed to `dest` only when all of them
    /// checked out: `dest` never holds a partial or unverified segment.
    fn fetch_segment_data(
        &self,
        config: &Self::Config,
        generation: &Generation,
        key: SegmentKey,
        dest: &Path,
    ) -> impl Future<Output = Result<FetchedSegment>> + Send {
        async move {
            let mut frames = self.fetch_segment_frames(config, generation, key).await?;
            let partial = dest.with_extension("partial");
            let result = download(&mut frames, &partial, dest).await;
            if result.is_err() {
                if let Err(e) = tokio::fs::remove_file(&partial).await {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        warn!(path = %partial.display(), error = %e, "cannot remove partial download");
                    }
                }
            }
            result
        }
    }

    /// Returns what the backend knows of `generation`: its durable frame_no is the end of its
    /// newest-ending segment.
    fn meta(
        &self,
        config: &Self::Config,
        generation: &Generation,
    ) -> impl Future<Output = Result<NamespaceMeta>> + Send {
        async move {
            let prefix = segments_prefix(generation);
            let page = self.list(config, &prefix, None, 1).await?;
            let durable_frame_no = match page.first() {
                Some(object) => parse_listed(&prefix, object)?.end_frame_no,
                None => 0,
            };
            Ok(NamespaceMeta { durable_frame_no })
        }
    }

    /// Returns every generation of `namespace`, oldest first: one listing, then one read per
    /// record (several at once). A directory under `generations/` whose name is not a number is
    /// skipped with a warning; one without a record (a delete cut short removed it last) is
    /// skipped too.
    fn lineage(
        &self,
        config: &Self::Config,
        namespace: &NamespaceName,
    ) -> impl Future<Output = Result<Lineage>> + Send {
        async move {
            let numbers = self.generation_numbers(config, namespace).await?;
            let fetched: Vec<Option<GenerationRecord>> = futures::stream::iter(numbers)
                .map(|number| self.fetch_generation_if_any(config, namespace, number))
                .buffered(RECORD_READS)
                .try_collect()
                .await?;
            Ok(Lineage {
                records: fetched.into_iter().flatten().collect(),
            })
        }
    }

    /// Returns the newest generation of `namespace` that has a record, reading records from
    /// the newest number down (usually one): what maintenance needs, without the whole lineage.
    fn newest_generation(
        &self,
        config: &Self::Config,
        namespace: &NamespaceName,
    ) -> impl Future<Output = Result<Option<GenerationRecord>>> + Send {
        async move {
            for number in self
                .generation_numbers(config, namespace)
                .await?
                .into_iter()
                .rev()
            {
                if let Some(record) = self
                    .fetch_generation_if_any(config, namespace, number)
                    .await?
                {
                    return Ok(Some(record));
                }
            }
            Ok(None)
        }
    }

    /// Returns the numbers of `namespace`'s generation directories, in order (one listing);
    /// a directory whose name is not a number is skipped with a warning.
    fn generation_numbers(
        &self,
        config: &Self::Config,
        namespace: &NamespaceName,
    ) -> impl Future<Output = Result<Vec<u64>>> + Send {
        async move {
            let names = self
                .list_children(config, &generations_prefix(namespace))
                .await?;
            Ok(names
                .into_iter()
                .filter_map(|name| {
                    let number = parse_generation_number(&name);
                    if number.is_none() {
                        warn!(%namespace, name, "skipping a directory that is not a generation");
                    }
                    number
                })
                .collect())
        }
    }

    /// `fetch_generation`, with `None` (and a warning) for a generation without a record.
    fn fetch_generation_if_any(
        &self,
        config: &Self::Config,
        namespace: &NamespaceName,
        number: u64,
    ) -> impl Future<Output = Result<Option<GenerationRecord>>> + Send {
        async move {
            match self.fetch_generation(config, namespace, number).await {
                Ok(record) => Ok(Some(record)),
                Err(Error::NotFound { key }) => {
                    warn!(%namespace, key, "skipping a generation without a record");
                    Ok(None)
                }
                Err(e) => Err(e),
            }
        }
    }

    /// Reads and checks generation `number`'s record.
    fn fetch_generation(
        &self,
        config: &Self::Config,
        namespace: &NamespaceName,
        number: u64,
    ) -> impl Future<Output = Result<GenerationRecord>> + Send {
        async move {
            let object = generation_object(namespace, number);
            let bytes = read_bounded(self, config, &object, MAX_RECORD_LEN, || {
                format!("longer than {MAX_RECORD_LEN} bytes")
            })
            .await?;
            GenerationRecord::decode(&object, number, &bytes)
        }
    }

    /// Creates a generation's record if no generation of that number exists: returns false when
    /// one does (another writer took the number first), and leaves it as it is.
    fn create_generation(
        &self,
        config: &Self::Config,
        namespace: &NamespaceName,
        record: &GenerationRecord,
    ) -> impl Future<Output = Result<bool>> + Send {
        async move {
            let object = generation_object(namespace, record.number);
            let mut created = self
                .put_bytes_if_absent(config, &object, record.encode())
                .await?;
            if !created {
                // A create whose answer was lost and that was sent again finds its own record:
                // it is ours all the same.
                created = match self
                    .fetch_generation(config, namespace, record.number)
                    .await
                {
                    Ok(stored) => stored == *record,
                    Err(Error::NotFound { .. }) => false,
                    Err(e) => return Err(e),
                };
            }
            debug!(%namespace, generation = record.number, created, "generation claimed");
            Ok(created)
        }
    }

    /// Returns the number of a generation of `namespace` newer than `number`, if one exists: one
    /// `list` call of one key. A writer of generation `number` that gets `Some` is fenced off.
    fn newer_generation(
        &self,
        config: &Self::Config,
        namespace: &NamespaceName,
        number: u64,
    ) -> impl Future<Output = Result<Option<u64>>> + Send {
        async move {
            let prefix = generations_prefix(namespace);
            // '~' sorts after every character of the keys under a generation's directory.
            let after = format!(
                "{}~",
                crate::generation::generation_prefix(namespace, number)
            );
            let page = self.list(config, &prefix, Some(&after), 1).await?;
            Ok(page.first().and_then(|object| {
                let rest = object.strip_prefix(&prefix)?;
                parse_generation_number(rest.split('/').next()?)
            }))
        }
    }

    /// Deletes every object of `namespace` (every generation, with their records), or, with
    /// `keep_backups`, marks it deleted: a new generation of kind `Deleted` ends its current
    /// history, so a namespace created again under the name starts empty, while the older
    /// generations stay restorable by number.
    ///
    /// A full delete first writes that mark too, then deletes every other object. The mark
    /// stays (one small object): generation numbers never go back, so a writer or maintenance
    /// pass still working on an old generation is fenced off and can never write into the
    /// generation a namespace created again under the name claims. A delete cut short (a
    /// crash, a bucket error) leaves a namespace that is already deleted as far as any restore
    /// or new writer is concerned, and running it again finishes it.
    fn delete_namespace(
        &self,
        config: &Self::Config,
        namespace: &NamespaceName,
        keep_backups: bool,
        now_ms: u64,
    ) -> impl Future<Output = Result<DeletedNamespace>> + Send {
        async move {
            let mut mark = None;
            let mut lineage = self.lineage(config, namespace).await?;
            loop {
                match lineage.newest() {
                    Some(r) if r.kind == crate::generation::GenerationKind::Deleted => {
                        mark = Some(r.number);
                        break;
                    }
                    None if !keep_backups => break,
                    _ => {}
                }
                let record = GenerationRecord {
                    number: lineage.next_number(),
                    created_ms: now_ms,
                    kind: crate::generation::GenerationKind::Deleted,
                };
                if self.create_generation(config, namespace, &record).await? {
                    mark = Some(record.number);
                    break;
                }
                // Another writer took the number: look again.
                lineage = self.lineage(config, namespace).await?;
            }
            let mut report = DeletedNamespace {
                mark,
                objects_deleted: 0,
            };
            if keep_backups {
                return Ok(report);
            }
            let mark_object = mark.map(|n| generation_object(namespace, n));
            // Nothing newer than the mark: a writer that created the namespace again meanwhile
            // keeps its generation.
            let prefix = generations_prefix(namespace);
            let after_mark = |object: &str| {
                let number = object
                    .strip_prefix(&prefix)
                    .and_then(|rest| rest.split('/').next())
                    .and_then(parse_generation_number);
                matches!((number, mark), (Some(n), Some(m)) if n > m)
            };
            let mut pages = KeyPages::new(format!("{namespace}/"), None);
            while let Some(page) = pages.next(self, config).await? {
                for object in &page {
                    if Some(object) != mark_object.as_ref() && !after_mark(object) {
                        self.delete(config, object).await?;
                        report.objects_deleted += 1;
                    }
                }
            }
            debug!(%namespace, objects = report.objects_deleted, "namespace deleted");
            Ok(report)
        }
    }

    /// Returns the namespaces that have objects in the backend, in order. Directories whose
    /// name is not a valid namespace are skipped with a warning.
    fn list_namespaces(
        &self,
        config: &Self::Config,
    ) -> impl Future<Output = Result<Vec<NamespaceName>>> + Send {
        async move {
            let mut namespaces = Vec::new();
            for name in self.list_children(config, "").await? {
                match name.parse() {
                    Ok(namespace) => namespaces.push(namespace),
                    Err(e) => {
                        warn!(name, error = %e, "skipping a directory that is not a namespace")
                    }
                }
            }
            Ok(namespaces)
        }
    }

    /// Deletes every object under `prefix` but `except`, a page at a time; returns how many it
    /// deleted.
    fn delete_under(
        &self,
        config: &Self::Config,
        prefix: &str,
        except: Option<&str>,
    ) -> impl Future<Output = Result<usize>> + Send {
        async move {
            let mut deleted = 0;
            let mut pages = KeyPages::new(prefix.to_string(), None);
            while let Some(page) = pages.next(self, config).await? {
                for object in page.iter().filter(|o| Some(o.as_str()) != except) {
                    self.delete(config, object).await?;
                    deleted += 1;
                }
            }
            Ok(deleted)
        }
    }

    /// Deletes segments of `generation`: each one's data, then its index. Deleting a segment
    /// that is not there is not an error.
    fn delete_segments(
        &self,
        config: &Self::Config,
        generation: &Generation,
        keys: &[SegmentKey],
    ) -> impl Future<Output = Result<()>> + Send {
        async move {
            for key in keys {
                self.delete(config, &segment_object(generation, key))
                    .await?;
                self.delete(config, &index_object(generation, key)).await?;
                debug!(%generation, %key, "segment deleted");
            }
            Ok(())
        }
    }
}

impl<B: Backend + ?Sized> BackendExt for B {}

/// Streams verified frames into `partial`, then renames it to `dest`.
async fn download(
    frames: &mut SegmentFrames,
    partial: &Path,
    dest: &Path,
) -> Result<FetchedSegment> {
    let local = |e| Error::transient(format!("writing {}", partial.display()), e);
    let file = tokio::fs::File::create(partial).await.map_err(local)?;
    let mut out = tokio::io::BufWriter::with_capacity(1 << 20, file);
    out.write_all(&frames.header().encode())
        .await
        .map_err(local)?;
    let mut entries = Vec::with_capacity(untrusted_capacity(frames.header().frame_count.into()));
    loop {
        let offset = frames.next_offset();
        match frames.next_raw_frame().await? {
            Some(frame) => {
                entries.push((frame.page_no, offset));
                out.write_all(&frames.buf).await.map_err(local)?;
            }
            None => break,
        }
    }
    out.flush().await.map_err(local)?;
    let file = out.into_inner();
    file.sync_all().await.map_err(local)?;
    drop(file);
    tokio::fs::rename(partial, dest).await.map_err(local)?;
    let index =
        PageIndex::build(&entries, dest).map_err(|e| Error::from_segment(&frames.object, e))?;
    Ok(FetchedSegment {
        header: *frames.header(),
        index,
        path: dest.to_path_buf(),
    })
}
