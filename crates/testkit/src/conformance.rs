//! The conformance suite every backend must pass: `pub async fn`s that take a backend and a
//! scratch directory, build real compacted segments with the segment crate, and assert the
//! contract of `Backend` and `BackendExt`. Each backend's tests call every one of them (the fs
//! backend in a temp dir, the S3 backend against a real S3 server over loopback).
//!
//! A failed check panics with a message saying what the backend did.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::DateTime;
use libsql_wal_segment::format::PAGE_SIZE;
use libsql_wal_segment::{merge, CurrentSegment, SealedSegment, StdIo};

use libsql_wal_backend::{
    generation_object, index_object, indexes_prefix, segment_object, segments_prefix, Backend,
    BackendExt, Error, FindSegment, Generation, NamespaceName, SegmentData, SegmentKey,
};

/// A compacted segment written to a local file, ready to store.
#[derive(Debug)]
pub struct TestSegment {
    /// Its key.
    pub key: SegmentKey,
    /// The compacted data file.
    pub data: PathBuf,
    /// The encoded page index.
    pub index: Vec<u8>,
}

/// The log id of every test segment.
pub const TEST_LOG_ID: uuid::Uuid = uuid::Uuid::from_u128(0x5eed);

/// Generation 1 of namespace `name`, holding the test segments' log.
pub fn test_generation(name: &str) -> Generation {
    Generation {
        namespace: name.parse().expect("test namespace names are valid"),
        number: 1,
        log_id: TEST_LOG_ID,
    }
}

fn namespace(name: &str) -> Generation {
    test_generation(name)
}

/// Returns the page written for `page_no` in the frame `frame_no`: its bytes name both.
pub fn test_page(page_no: u32, frame_no: u64) -> Vec<u8> {
    let mut page = vec![0; PAGE_SIZE];
    for (i, chunk) in page.chunks_exact_mut(12).enumerate() {
        chunk[..4].copy_from_slice(&page_no.to_le_bytes());
        chunk[4..12].copy_from_slice(&(frame_no ^ i as u64).to_le_bytes());
    }
    page
}

/// Writes sealed segments covering frames `start..=end`, one transaction per frame, frame
/// `f` writing page `(f % pages) + 1`, split into `parts` segments sealed at `timestamp_ms`.
/// The files are named `sealed-{first}-{last}-{timestamp_ms}` in `dir`.
pub fn sealed_segments(
    dir: &Path,
    start: u64,
    end: u64,
    pages: u32,
    parts: u64,
    timestamp_ms: u64,
) -> Vec<SealedSegment<std::fs::File>> {
    let log_id = TEST_LOG_ID;
    let per_part = (end - start + 1).div_ceil(parts);
    let mut sealed = Vec::new();
    let mut first = start;
    while first <= end {
        let last = (first + per_part - 1).min(end);
        let path = dir.join(format!("sealed-{first}-{last}-{timestamp_ms}"));
        let _ = std::fs::remove_file(&path);
        let segment =
            CurrentSegment::create(&StdIo, &path, first, log_id).expect("create a test segment");
        for frame_no in first..=last {
            let page_no = (frame_no % u64::from(pages)) as u32 + 1;
            segment
                .insert_frames([(page_no, &test_page(page_no, frame_no)[..])], Some(pages))
                .expect("append to a test segment");
        }
        let at = DateTime::from_timestamp_millis(timestamp_ms as i64).unwrap_or_default();
        sealed.push(
            segment
                .seal(at)
                .expect("seal a test segment")
                .expect("test segments have frames"),
        );
        first = last + 1;
    }
    sealed
}

/// Builds a compacted segment of frames `start..=end` (merged from `parts` sealed segments)
/// whose key carries `timestamp_ms`.
pub fn make_segment(
    dir: &Path,
    start: u64,
    end: u64,
    pages: u32,
    parts: u64,
    timestamp_ms: u64,
) -> TestSegment {
    let sealed = sealed_segments(dir, start, end, pages, parts, timestamp_ms);
    let refs: Vec<_> = sealed.iter().collect();
    let data = dir.join(format!("compacted-{start}-{end}-{timestamp_ms}"));
    let file = std::fs::File::create(&data).expect("create a compacted file");
    let compacted = merge(&refs, std::io::BufWriter::new(file)).expect("merge test segments");
    TestSegment {
        key: SegmentKey::from(&compacted.header),
        data,
        index: compacted.index.encode(),
    }
}

async fn store<B: Backend>(backend: &B, ns: &Generation, segment: &TestSegment) {
    backend
        .store_segment(
            backend.default_config(),
            ns,
            segment.key,
            SegmentData::File(&segment.data),
            segment.index.clone(),
        )
        .await
        .unwrap_or_else(|e| panic!("storing {} failed: {e}", segment.key));
}

/// Stores segments of several namespaces; listing, meta and the namespace list see them all.
pub async fn store_and_list_many_segments_for_many_namespaces<B: Backend>(
    backend: &B,
    scratch: &Path,
) {
    let config = backend.default_config();
    let names = ["alpha", "beta", "gamma"];
    for (n, name) in names.iter().enumerate() {
        let ns = namespace(name);
        for i in 0..5u64 {
            let start = i * 10 + 1;
            let segment = make_segment(scratch, start, start + 9, 7, 1, 1000 + i + n as u64);
            store(backend, &ns, &segment).await;
        }
    }
    let listed = backend
        .list_namespaces(config)
        .await
        .expect("list namespaces");
    let listed: Vec<_> = listed.iter().map(NamespaceName::as_str).collect();
    assert_eq!(listed, names, "list_namespaces");
    for name in names {
        let ns = namespace(name);
        let keys = backend
            .list_segments(config, &ns, u64::MAX)
            .await
            .expect("list segments");
        let ends: Vec<_> = keys.iter().map(|k| k.end_frame_no).collect();
        assert_eq!(ends, [50, 40, 30, 20, 10], "{name}: newest-ending first");
        let keys = backend
            .list_segments(config, &ns, 35)
            .await
            .expect("list segments");
        let ends: Vec<_> = keys.iter().map(|k| k.end_frame_no).collect();
        assert_eq!(ends, [30, 20, 10], "{name}: up to frame 35");
        let meta = backend.meta(config, &ns).await.expect("meta");
        assert_eq!(meta.durable_frame_no, 50, "{name}: durable frame_no");
    }
    let meta = backend
        .meta(config, &namespace("nobody"))
        .await
        .expect("meta of an empty namespace");
    assert_eq!(meta.durable_frame_no, 0);
}

/// Finds segments by frame and by time among original and overlapping compacted segments.
pub async fn find_by_frame_and_timestamp_with_overlapping_segments<B: Backend>(
    backend: &B,
    scratch: &Path,
) {
    let config = backend.default_config();
    let ns = namespace("find");
    let a = make_segment(scratch, 1, 10, 5, 1, 100);
    let b = make_segment(scratch, 11, 20, 5, 1, 200);
    let c = make_segment(scratch, 21, 30, 5, 1, 300);
    let ab = make_segment(scratch, 1, 20, 5, 2, 200);
    for segment in [&a, &b, &c, &ab] {
        store(backend, &ns, segment).await;
    }
    let cases = [
        (FindSegment::EndingAtOrBefore(30), Some(c.key)),
        (FindSegment::EndingAtOrBefore(29), Some(ab.key)),
        (FindSegment::EndingAtOrBefore(20), Some(ab.key)),
        (FindSegment::EndingAtOrBefore(19), Some(a.key)),
        (FindSegment::EndingAtOrBefore(9), None),
        (FindSegment::EndingAtOrBefore(u64::MAX), Some(c.key)),
        (FindSegment::Containing(15), Some(b.key)),
        (FindSegment::Containing(5), Some(a.key)),
        (FindSegment::Containing(25), Some(c.key)),
        (FindSegment::Containing(31), Some(c.key)),
        (FindSegment::Containing(0), None),
        (FindSegment::SealedAtOrBefore(250), Some(ab.key)),
        (FindSegment::SealedAtOrBefore(300), Some(c.key)),
        (FindSegment::SealedAtOrBefore(100), Some(a.key)),
        (FindSegment::SealedAtOrBefore(99), None),
    ];
    for (find, expected) in cases {
        let found = backend
            .find_segment(config, &ns, find)
            .await
            .expect("find a segment");
        assert_eq!(found, expected, "{find:?}");
    }
}

/// Fetches a stored segment's index, frames and data, and checks them against the source.
pub async fn fetch_and_verify<B: Backend>(backend: &B, scratch: &Path) {
    let config = backend.default_config();
    let ns = namespace("fetch");
    let segment = make_segment(scratch, 1, 300, 40, 3, 500);
    store(backend, &ns, &segment).await;

    let index = backend
        .fetch_index(config, &ns, segment.key)
        .await
        .expect("fetch index");
    assert_eq!(index.encode(), segment.index, "fetched index");

    let mut frames = backend
        .fetch_segment_frames(config, &ns, segment.key)
        .await
        .expect("fetch frames");
    assert_eq!(SegmentKey::from(frames.header()), segment.key);
    let mut page = vec![0; PAGE_SIZE];
    let mut seen = 0;
    let mut newest_pages = std::collections::BTreeMap::new();
    while let Some(frame) = frames.next_frame(&mut page).await.expect("next frame") {
        newest_pages.insert(frame.page_no, page.clone());
        assert_eq!(
            page,
            test_page(frame.page_no, frame.frame_no),
            "page {}",
            frame.page_no
        );
        assert!(
            frame.frame_no > 300 - 40,
            "only the newest version of each page"
        );
        seen += 1;
    }
    assert_eq!(seen, 40);

    // Every other page streamed into a database file, at its place; the rest untouched.
    let wanted: Vec<(u32, u64)> = index.entries().into_iter().step_by(2).collect();
    let db_path = scratch.join("pages.db");
    let db = std::fs::File::create(&db_path).expect("create a database file");
    let fetched = backend
        .fetch_pages_into(config, &ns, segment.key, &index, &wanted, &db)
        .await
        .expect("fetch pages into a database file");
    assert_eq!(SegmentKey::from(&fetched.header), segment.key);
    assert_eq!(
        fetched.bytes,
        std::fs::metadata(&segment.data).expect("source size").len()
    );
    let db_bytes = std::fs::read(&db_path).expect("read the database file");
    for (page_no, image) in &newest_pages {
        let at = (*page_no as usize - 1) * PAGE_SIZE;
        let written = db_bytes.get(at..at + PAGE_SIZE);
        if wanted.iter().any(|(p, _)| p == page_no) {
            assert_eq!(written, Some(&image[..]), "page {page_no} written");
        } else {
            assert!(
                written.is_none_or(|w| w.iter().all(|&b| b == 0)),
                "page {page_no} was not asked for"
            );
        }
    }
    // An index that is valid but not this data's is refused, naming the index.
    let other = make_segment(scratch, 1, 300, 30, 3, 501);
    let other_index = libsql_wal_segment::PageIndex::decode(&other.index, Path::new("other"), 0)
        .expect("decode the other index");
    let err = backend
        .fetch_pages_into(config, &ns, segment.key, &other_index, &[], &db)
        .await
        .expect_err("a wrong index must be refused");
    assert!(
        matches!(&err, Error::Corrupt { key, .. } if *key == index_object(&ns, &segment.key)),
        "{err:?}"
    );

    let dest = scratch.join("fetched");
    let fetched = backend
        .fetch_segment_data(config, &ns, segment.key, &dest)
        .await
        .expect("fetch data");
    assert_eq!(fetched.path, dest);
    assert_eq!(SegmentKey::from(&fetched.header), segment.key);
    assert_eq!(fetched.index.encode(), segment.index);
    let fetched_bytes = std::fs::read(&dest).expect("read the fetched file");
    let source_bytes = std::fs::read(&segment.data).expect("read the source file");
    assert!(
        fetched_bytes == source_bytes,
        "fetched data differs from what was stored"
    );
}

/// Replaces object `key` with its bytes, one of them flipped.
async fn flip_byte<B: Backend>(backend: &B, key: &str, at: usize) {
    use tokio::io::AsyncReadExt;
    let config = backend.default_config();
    let mut bytes = Vec::new();
    backend
        .get(config, key)
        .await
        .expect("read the object to damage")
        .read_to_end(&mut bytes)
        .await
        .expect("read the object to damage");
    let at = at.min(bytes.len() - 1);
    bytes[at] ^= 0x10;
    backend
        .put_bytes(config, key, bytes)
        .await
        .expect("write the damaged object");
}

/// A byte flipped in a stored object, behind the segment layer's back, is reported as
/// `Corrupt` naming the object; the download destination is left untouched.
pub async fn a_flipped_byte_is_reported_as_corruption_naming_the_key<B: Backend>(
    backend: &B,
    scratch: &Path,
) {
    let config = backend.default_config();
    let ns = namespace("corrupt");
    let segment = make_segment(scratch, 1, 50, 20, 1, 700);
    for at in [0, 100, 5_000, usize::MAX] {
        store(backend, &ns, &segment).await;
        let data_key = segment_object(&ns, &segment.key);
        flip_byte(backend, &data_key, at).await;
        let dest = scratch.join(format!("damaged-{at}"));
        let err = backend
            .fetch_segment_data(config, &ns, segment.key, &dest)
            .await
            .expect_err("a damaged segment must not fetch");
        match &err {
            Error::Corrupt { key, .. } => assert_eq!(key, &data_key),
            other => panic!("expected Corrupt, got {other}"),
        }
        assert!(!dest.exists(), "nothing is left at the destination");
        assert!(
            !dest.with_extension("partial").exists(),
            "no partial file is left"
        );

        let index_key = index_object(&ns, &segment.key);
        flip_byte(backend, &index_key, at).await;
        match backend.fetch_index(config, &ns, segment.key).await {
            Err(Error::Corrupt { key, .. }) => assert_eq!(key, index_key),
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }
}

/// A data object whose header claims billions of frames, and an index object longer than any
/// index of its key's frames can be, are `Corrupt` naming the object: nothing is reserved for
/// what a header claims, and an index is read no further than its bound.
pub async fn crafted_headers_and_oversized_indexes_are_corrupt<B: Backend>(
    backend: &B,
    scratch: &Path,
) {
    use libsql_wal_segment::format::{CompactedHeader, FrameHeader, COMPACTED_HEADER_SIZE};
    use libsql_wal_segment::PageIndex;

    let config = backend.default_config();
    let ns = namespace("crafted");
    let header = CompactedHeader {
        log_id: TEST_LOG_ID,
        start_frame_no: 1,
        end_frame_no: 1 << 40,
        size_after: u32::MAX,
        frame_count: u32::MAX,
        timestamp_ms: 900,
    };
    let encoded = header.encode();
    let mut frame = vec![0; libsql_wal_segment::format::FRAME_SIZE];
    FrameHeader {
        checksum: 0,
        page_no: 1,
        size_after: 0,
        flags: 0,
        frame_no: 1,
    }
    .write_with_checksum(CompactedHeader::checksum_seed(&encoded), &mut frame);
    let mut data = encoded.to_vec();
    data.extend_from_slice(&frame);
    let key = SegmentKey::from(&header);
    let index = PageIndex::build(&[(1, COMPACTED_HEADER_SIZE as u64)], Path::new("crafted"))
        .expect("a one-page index")
        .encode();
    backend
        .store_segment(config, &ns, key, SegmentData::Bytes(data), index)
        .await
        .expect("store the crafted segment");
    let data_key = segment_object(&ns, &key);
    let dest = scratch.join("crafted");
    match backend.fetch_segment_data(config, &ns, key, &dest).await {
        Err(Error::Corrupt { key, what }) => {
            assert_eq!(key, data_key);
            assert!(what.contains("truncated"), "{what}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert!(!dest.exists(), "nothing is left at the destination");
    match backend.verify_segment(config, &ns, key).await {
        Err(Error::Corrupt { key, .. }) => assert_eq!(key, data_key),
        other => panic!("expected Corrupt, got {other:?}"),
    }

    // Four frames: an index of at most four pages, a few hundred bytes.
    let segment = make_segment(scratch, 1, 4, 2, 1, 901);
    store(backend, &ns, &segment).await;
    backend
        .fetch_index(config, &ns, segment.key)
        .await
        .expect("the real index is within its bound");
    let index_key = index_object(&ns, &segment.key);
    let mut oversized = segment.index.clone();
    oversized.resize(64 << 10, 0);
    backend
        .put_bytes(config, &index_key, oversized)
        .await
        .expect("replace the index");
    match backend.fetch_index(config, &ns, segment.key).await {
        Err(Error::Corrupt { key, what }) => {
            assert_eq!(key, index_key);
            assert!(what.contains("longer than"), "{what}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

/// Retention deletes an index object whose data was never stored once its key's timestamp and
/// its own write time are older than `ORPHAN_INDEX_GRACE`, counts it in its report, and leaves
/// alone a younger orphan, an orphan of an old key written recently (an upload of old frames,
/// such as a compaction, that may be in flight), and every index whose data exists.
pub async fn retention_sweeps_old_orphan_indexes<B: Backend>(backend: &B, scratch: &Path) {
    let config = backend.default_config();
    let ns = namespace("orphans");
    let grace_ms = libsql_wal_backend::ORPHAN_INDEX_GRACE.as_millis() as u64;
    // Two grace periods from now: every object written below is older than the grace then.
    let written_ms = libsql_wal_backend::now_ms();
    let now_ms = written_ms + 2 * grace_ms;
    let old = make_segment(scratch, 1, 10, 4, 1, 1_000);
    store(backend, &ns, &old).await;
    // Its key is older than the grace already now (a segment sealed long ago).
    let orphan = make_segment(scratch, 11, 20, 4, 1, written_ms - grace_ms - 1);
    let young = make_segment(scratch, 21, 30, 4, 1, now_ms - grace_ms / 2);
    for segment in [&orphan, &young] {
        backend
            .put_bytes(
                config,
                &index_object(&ns, &segment.key),
                segment.index.clone(),
            )
            .await
            .expect("store an index without its data");
    }
    let window = std::time::Duration::from_millis(now_ms);
    // Now, both orphans' objects were written a moment ago: the old key's upload may be in
    // flight, its data about to follow.
    let in_flight = libsql_wal_backend::apply_retention(backend, config, &ns, window, written_ms)
        .await
        .expect("retention while the upload may be in flight");
    assert!(in_flight.orphan_indexes.is_empty(), "{in_flight:?}");
    let report = libsql_wal_backend::apply_retention(backend, config, &ns, window, now_ms)
        .await
        .expect("retention");
    assert_eq!(report.orphan_indexes, [orphan.key], "{report:?}");
    assert!(report.deleted.is_empty(), "{report:?}");
    match backend.get(config, &index_object(&ns, &orphan.key)).await {
        Err(Error::NotFound { .. }) => {}
        other => panic!(
            "the old orphan index must be gone, got {:?}",
            other.map(|_| ())
        ),
    }
    for kept in [&old, &young] {
        backend
            .get(config, &index_object(&ns, &kept.key))
            .await
            .unwrap_or_else(|e| panic!("index of {} must stay: {e}", kept.key));
    }
    backend
        .verify_segment(config, &ns, old.key)
        .await
        .expect("the stored segment is whole");
    let again = libsql_wal_backend::apply_retention(backend, config, &ns, window, now_ms)
        .await
        .expect("retention again");
    assert!(again.orphan_indexes.is_empty(), "{again:?}");
}

/// Missing objects are `NotFound`; deleting them is fine.
pub async fn missing_objects_are_not_found<B: Backend>(backend: &B, scratch: &Path) {
    let config = backend.default_config();
    let ns = namespace("missing");
    let key = SegmentKey {
        start_frame_no: 1,
        end_frame_no: 9,
        timestamp_ms: 1,
    };
    let err = backend
        .fetch_index(config, &ns, key)
        .await
        .expect_err("no index");
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    let dest = scratch.join("never");
    let err = backend
        .fetch_segment_data(config, &ns, key, &dest)
        .await
        .expect_err("no data");
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    assert!(!dest.exists());
    let err = backend
        .stat(config, &index_object(&ns, &key))
        .await
        .expect_err("no index to date");
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    backend
        .delete_segments(config, &ns, &[key])
        .await
        .expect("deleting a missing segment is fine");
    let found = backend
        .find_segment(config, &ns, FindSegment::Containing(5))
        .await
        .expect("find in an empty namespace");
    assert_eq!(found, None);
}

/// Many tasks store at once; every segment is there afterwards.
pub async fn concurrent_stores_from_many_tasks<B: Backend>(backend: Arc<B>, scratch: &Path) {
    let mut tasks = Vec::new();
    for t in 0..8u64 {
        let backend = backend.clone();
        let dir = scratch.join(format!("task-{t}"));
        std::fs::create_dir_all(&dir).expect("create a task dir");
        tasks.push(tokio::spawn(async move {
            let ns = namespace(&format!("concurrent-{}", t % 2));
            for i in 0..4u64 {
                let start = (t * 4 + i) * 10 + 1;
                let segment = make_segment(&dir, start, start + 9, 3, 1, start);
                store(&*backend, &ns, &segment).await;
            }
        }));
    }
    for task in tasks {
        task.await.expect("a storing task panicked");
    }
    let config = backend.default_config();
    let mut total = 0;
    for ns in ["concurrent-0", "concurrent-1"] {
        let keys = backend
            .list_segments(config, &namespace(ns), u64::MAX)
            .await
            .expect("list");
        assert_eq!(keys.len(), 16, "{ns}");
        total += keys.len();
    }
    assert_eq!(total, 32);
}

/// A segment of `frames` frames (big enough to go multipart on S3 with a small threshold)
/// stores and fetches back whole.
pub async fn a_large_segment_round_trips<B: Backend>(backend: &B, scratch: &Path, frames: u64) {
    let config = backend.default_config();
    let ns = namespace("large");
    let segment = make_segment(scratch, 1, frames, frames as u32, 1, 900);
    store(backend, &ns, &segment).await;
    let dest = scratch.join("large-fetched");
    let fetched = backend
        .fetch_segment_data(config, &ns, segment.key, &dest)
        .await
        .expect("fetch a large segment");
    assert_eq!(u64::from(fetched.header.frame_count), frames);
    let same = std::fs::read(&dest).expect("read") == std::fs::read(&segment.data).expect("read");
    assert!(same, "the large segment came back different");
}

/// Deleted segments are gone from listings and fetches; the others stay.
pub async fn delete_and_list_again<B: Backend>(backend: &B, scratch: &Path) {
    let config = backend.default_config();
    let ns = namespace("delete");
    let segments: Vec<_> = (0..4u64)
        .map(|i| make_segment(scratch, i * 10 + 1, i * 10 + 10, 4, 1, 10 + i))
        .collect();
    for segment in &segments {
        store(backend, &ns, segment).await;
    }
    backend
        .delete_segments(config, &ns, &[segments[0].key, segments[2].key])
        .await
        .expect("delete");
    let keys = backend
        .list_segments(config, &ns, u64::MAX)
        .await
        .expect("list");
    assert_eq!(keys, [segments[3].key, segments[1].key]);
    let err = backend
        .fetch_index(config, &ns, segments[0].key)
        .await
        .expect_err("deleted");
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    backend
        .delete_segments(config, &ns, &[segments[0].key])
        .await
        .expect("deleting twice is fine");
    let all: Vec<_> = segments.iter().map(|s| s.key).collect();
    backend
        .delete_segments(config, &ns, &all)
        .await
        .expect("delete the rest");
    for prefix in [segments_prefix(&ns), indexes_prefix(&ns)] {
        let left = backend
            .list(config, &prefix, None, 10)
            .await
            .expect("list raw objects");
        assert!(left.is_empty(), "objects left under {prefix}: {left:?}");
    }
}

/// `list` matches keys by any string prefix, as S3 does, not by directory: a prefix that ends
/// in the middle of a component (`ns/segments/0000`, `ns/seg`) matches every key starting with
/// it, in order, with `start_after` and `max_keys` applied to the whole match.
pub async fn list_matches_keys_by_any_prefix<B: Backend>(backend: &B) {
    let config = backend.default_config();
    let keys = [
        "prefix/indexes/00001-a",
        "prefix/segments-old/00001-a",
        "prefix/segments/00001-a",
        "prefix/segments/00002-b",
        "prefix/segments/0001x",
        "prefix/segments/deep/00003-c",
        "prefixed/x",
    ];
    for key in keys {
        backend
            .put_bytes(config, key, key.as_bytes().to_vec())
            .await
            .unwrap_or_else(|e| panic!("storing {key} failed: {e}"));
    }
    let starting = |prefix: &str| -> Vec<&str> {
        keys.iter()
            .copied()
            .filter(|k| k.starts_with(prefix))
            .collect()
    };
    for prefix in [
        "prefix/segments/0000",
        "prefix/segments/000",
        "prefix/segments/",
        "prefix/seg",
        "prefix/",
        "prefix",
        "pre",
        "prefix/segments/00001-a",
        "prefix/nothing",
    ] {
        let listed = backend
            .list(config, prefix, None, 100)
            .await
            .unwrap_or_else(|e| panic!("listing {prefix:?} failed: {e}"));
        assert_eq!(listed, starting(prefix), "list({prefix:?})");
    }
    let listed = backend
        .list(config, "prefix/seg", Some("prefix/segments/00001-a"), 2)
        .await
        .expect("list after a key");
    assert_eq!(
        listed,
        ["prefix/segments/00002-b", "prefix/segments/0001x"],
        "list(\"prefix/seg\") after a key, two keys"
    );
    let listed = backend
        .list(
            config,
            "prefix/segments/000",
            Some("prefix/segments/00001"),
            100,
        )
        .await
        .expect("list after a partial key");
    assert_eq!(
        listed,
        [
            "prefix/segments/00001-a",
            "prefix/segments/00002-b",
            "prefix/segments/0001x"
        ],
        "start_after need not be a key"
    );
}

/// Keys and prefixes that could escape the backend's root or name one object two ways
/// (`..`, `.`, absolute, empty components, NUL, backslash) are refused by every `Backend`
/// method with `Error::InvalidKey` naming them, before anything is touched; good ones pass.
pub async fn invalid_keys_are_refused<B: Backend>(backend: &B, scratch: &Path) {
    let config = backend.default_config();
    let source = scratch.join("object");
    std::fs::write(&source, b"data").expect("write a source file");
    let bad_keys = [
        "",
        ".",
        "..",
        "../escape",
        "ns/../../escape",
        "ns/..",
        "/absolute",
        "ns//double",
        "ns/./dot",
        "./dot",
        "ns/trailing/",
        "ns/nul\0byte",
        "ns\\..\\escape",
    ];
    let refused = |what: &str, key: &str, result: Result<(), Error>| match result {
        Err(Error::InvalidKey { key: named, .. }) => assert_eq!(named, key, "{what}"),
        Err(other) => panic!("{what} {key:?}: expected InvalidKey, got {other}"),
        Ok(()) => panic!("{what} {key:?} was accepted"),
    };
    for key in bad_keys {
        refused(
            "put_bytes",
            key,
            backend.put_bytes(config, key, b"data".to_vec()).await,
        );
        refused(
            "put_file",
            key,
            backend.put_file(config, key, &source).await,
        );
        refused("get", key, backend.get(config, key).await.map(drop));
        refused("delete", key, backend.delete(config, key).await);
    }
    let bad_prefixes = [
        "..",
        "../",
        "ns/../",
        "ns/../x",
        "/absolute",
        "ns//",
        "./",
        "ns/./x",
        "ns/nul\0",
        "ns\\x",
    ];
    for prefix in bad_prefixes {
        refused(
            "list",
            prefix,
            backend.list(config, prefix, None, 10).await.map(drop),
        );
        refused(
            "list_children",
            prefix,
            backend.list_children(config, prefix).await.map(drop),
        );
    }
    let err = backend
        .put_bytes(config, "ns/../../escape", Vec::new())
        .await
        .expect_err("refused");
    assert!(
        err.to_string().contains("ns/../../escape"),
        "the error names the key: {err}"
    );
    // Good keys and prefixes, including a prefix ending in a partial component.
    backend
        .put_bytes(config, "ns/..dots-in-a-name./x.y", b"data".to_vec())
        .await
        .expect("dots inside a component are fine");
    for prefix in ["", "ns", "ns/", "ns/..dots", "ns/..dots-in-a-name./"] {
        backend
            .list(config, prefix, None, 10)
            .await
            .unwrap_or_else(|e| panic!("list({prefix:?}) refused: {e}"));
    }
    for prefix in ["", "ns/", "ns"] {
        backend
            .list_children(config, prefix)
            .await
            .unwrap_or_else(|e| panic!("list_children({prefix:?}) refused: {e}"));
    }
}

/// The conditional write: of many tasks creating one key at once exactly one gets `true`, the
/// object holds that task's bytes, and a later `put_bytes_if_absent` leaves it as it is.
pub async fn conditional_writes_create_once<B: Backend>(backend: Arc<B>) {
    let key = "conditional/claim";
    let tasks: Vec<_> = (0..8u8)
        .map(|t| {
            let backend = backend.clone();
            tokio::spawn(async move {
                let created = backend
                    .put_bytes_if_absent(backend.default_config(), key, vec![t; 100])
                    .await
                    .expect("put_bytes_if_absent");
                (t, created)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        let (t, created) = task.await.expect("task");
        if created {
            winners.push(t);
        }
    }
    assert_eq!(winners.len(), 1, "exactly one creator wins: {winners:?}");
    let read = read_object(&*backend, key).await;
    assert_eq!(read, vec![winners[0]; 100], "the winner's bytes are stored");
    assert!(!backend
        .put_bytes_if_absent(backend.default_config(), key, b"later".to_vec())
        .await
        .expect("put_bytes_if_absent over an object"));
    assert_eq!(read_object(&*backend, key).await, vec![winners[0]; 100]);
    let stat = backend
        .stat(backend.default_config(), key)
        .await
        .expect("stat");
    assert_eq!(stat.len, 100, "stat gives the object's length");
    let now = libsql_wal_backend::now_ms();
    assert!(
        stat.modified_ms + 3_600_000 > now && stat.modified_ms < now + 3_600_000,
        "written about now: {} vs {now}",
        stat.modified_ms
    );
}

async fn read_object<B: Backend + ?Sized>(backend: &B, key: &str) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut reader = backend
        .get(backend.default_config(), key)
        .await
        .expect("get");
    let mut bytes = Vec::new();
    reader.read_to_end(&mut bytes).await.expect("read");
    bytes
}

/// Generations: a number is claimed once, the lineage lists them in order, `newer_generation`
/// sees a newer one (and only a newer one), segments of two generations never mix, and
/// `delete_namespace` with and without backups.
pub async fn generations_and_namespace_deletion<B: Backend>(backend: &B, scratch: &Path) {
    use libsql_wal_backend::{ForkPoint, GenerationKind, GenerationRecord};
    let config = backend.default_config();
    let first = test_generation("lives");
    let ns = first.namespace.clone();
    let record = |number, parent: Option<ForkPoint>| GenerationRecord {
        number,
        created_ms: 1000 + number,
        kind: GenerationKind::Log {
            log_id: TEST_LOG_ID,
            start_frame_no: parent.map_or(1, |p| p.frame_no + 1),
            parent,
            rewound: false,
        },
    };
    assert!(backend
        .lineage(config, &ns)
        .await
        .expect("a backend call of the generations contract")
        .records
        .is_empty());
    assert!(backend
        .create_generation(config, &ns, &record(1, None))
        .await
        .expect("a backend call of the generations contract"));
    let other_log = GenerationRecord {
        kind: GenerationKind::Log {
            log_id: uuid::Uuid::from_u128(0x07e7),
            start_frame_no: 1,
            parent: None,
            rewound: false,
        },
        ..record(1, None)
    };
    assert!(
        !backend
            .create_generation(config, &ns, &other_log)
            .await
            .expect("a backend call of the generations contract"),
        "a generation number is claimed once"
    );
    assert!(
        backend
            .create_generation(config, &ns, &record(1, None))
            .await
            .expect("a backend call of the generations contract"),
        "a create sent again (its answer lost) finds its own record"
    );
    store(backend, &first, &make_segment(scratch, 1, 10, 4, 1, 1000)).await;
    assert_eq!(
        backend
            .newer_generation(config, &ns, 1)
            .await
            .expect("a backend call of the generations contract"),
        None
    );
    let fork = ForkPoint {
        generation: 1,
        frame_no: 10,
    };
    assert!(backend
        .create_generation(config, &ns, &record(2, Some(fork)))
        .await
        .expect("a backend call of the generations contract"));
    assert_eq!(
        backend
            .newer_generation(config, &ns, 1)
            .await
            .expect("a backend call of the generations contract"),
        Some(2)
    );
    assert_eq!(
        backend
            .newer_generation(config, &ns, 2)
            .await
            .expect("a backend call of the generations contract"),
        None
    );
    let second = Generation {
        number: 2,
        ..first.clone()
    };
    store(backend, &second, &make_segment(scratch, 11, 20, 4, 1, 2000)).await;
    assert_eq!(
        backend
            .meta(config, &first)
            .await
            .expect("a backend call of the generations contract")
            .durable_frame_no,
        10
    );
    assert_eq!(
        backend
            .meta(config, &second)
            .await
            .expect("a backend call of the generations contract")
            .durable_frame_no,
        20
    );
    let lineage = backend
        .lineage(config, &ns)
        .await
        .expect("a backend call of the generations contract");
    assert_eq!(
        lineage.records,
        vec![record(1, None), record(2, Some(fork))]
    );

    // Keeping backups: a deletion mark, and the generations stay.
    let kept = backend
        .delete_namespace(config, &ns, true, 3000)
        .await
        .expect("a backend call of the generations contract");
    assert_eq!(kept.mark, Some(3));
    let lineage = backend
        .lineage(config, &ns)
        .await
        .expect("a backend call of the generations contract");
    assert_eq!(
        lineage
            .newest()
            .expect("a backend call of the generations contract")
            .kind,
        GenerationKind::Deleted
    );
    assert_eq!(
        backend
            .meta(config, &second)
            .await
            .expect("a backend call of the generations contract")
            .durable_frame_no,
        20
    );
    // Deleting everything: only the deletion mark is left, so numbers never go back.
    let deleted = backend
        .delete_namespace(config, &ns, false, 4000)
        .await
        .expect("a backend call of the generations contract");
    assert_eq!(deleted.mark, Some(3), "the existing mark is reused");
    assert!(deleted.objects_deleted >= 6, "{deleted:?}");
    assert_eq!(
        backend
            .list(config, &format!("{ns}/"), None, 10)
            .await
            .expect("a backend call of the generations contract"),
        vec![generation_object(&ns, 3)]
    );
    let lineage = backend
        .lineage(config, &ns)
        .await
        .expect("a backend call of the generations contract");
    assert_eq!(lineage.records.len(), 1);
    assert_eq!(
        lineage.next_number(),
        4,
        "a new writer takes a newer number"
    );
    assert_eq!(
        backend
            .newer_generation(config, &ns, 1)
            .await
            .expect("a backend call of the generations contract"),
        Some(3),
        "a writer of an old generation is fenced off"
    );
    // Objects of a generation newer than the mark (as a writer claiming the namespace again
    // while a delete runs stores them) are not the delete's to remove.
    let newer = Generation {
        number: 4,
        ..first.clone()
    };
    store(backend, &newer, &make_segment(scratch, 1, 10, 4, 1, 5000)).await;
    let again = backend
        .delete_namespace(config, &ns, false, 6000)
        .await
        .expect("a backend call of the generations contract");
    assert_eq!((again.mark, again.objects_deleted), (Some(3), 0));
    assert_eq!(
        backend
            .meta(config, &newer)
            .await
            .expect("a backend call of the generations contract")
            .durable_frame_no,
        10
    );
}
