//! Round trips through every format: a current segment sealed and reopened, its frames iterated,
//! compacted and streamed back, and `open_segment` on both kinds of file.

use crate::common::{commit, io, page, write_segment, Tx};
use chrono::Utc;
use libsql_wal_segment::format::{FRAME_SIZE, PAGE_SIZE};
use libsql_wal_segment::{
    merge, merge_compacted, open_segment, CompactedReader, CompactedSegment, CurrentSegment,
    LocalCompacted, OpenedSegment, PageIndex, SealedSegment,
};
use uuid::Uuid;

fn txs() -> Vec<Tx> {
    vec![
        Tx {
            pages: vec![1, 2, 3],
            size_after: 3,
        },
        Tx {
            pages: vec![2],
            size_after: 3,
        },
        Tx {
            pages: vec![4, 1],
            size_after: 4,
        },
    ]
}

#[test]
fn a_seal_in_memory_serves_reads_and_leaves_the_file_unsealed_until_persisted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("seg");
    let current = write_segment(&io(), &path, 10, Uuid::new_v4(), &txs());
    let sealed = current.seal_in_memory(Utc::now()).unwrap().unwrap();
    assert!(current.is_sealed(), "no frame goes in after it");
    let mut buf = vec![0; PAGE_SIZE];
    assert!(sealed.read_page(2, &mut buf).unwrap());
    assert_eq!(buf, page(2, 13), "the newest version of page 2 (frame 13)");
    // Nothing written: the file is the unsealed segment, every commit in it.
    match open_segment(&io(), &path).unwrap() {
        OpenedSegment::Current(_, report) => assert_eq!(report.last_committed_frame_no, 15),
        other => panic!("expected the unsealed segment, got {other:?}"),
    }
    let index_size = sealed.persist().unwrap();
    let reopened = SealedSegment::open(&io(), &path).unwrap();
    assert_eq!(reopened.header().index_size, index_size);
    assert_eq!(reopened.index().entries(), sealed.index().entries());
    assert_eq!(
        reopened.last_committed_frame_no(),
        sealed.last_committed_frame_no()
    );
    assert_eq!(sealed.persist().unwrap(), index_size, "persisting again");
    SealedSegment::open(&io(), &path).unwrap();
}

#[test]
fn a_sealed_segment_reopens_with_the_same_pages_and_frames() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("seg");
    let log_id = Uuid::new_v4();
    let current = write_segment(&io(), &path, 10, log_id, &txs());
    assert_eq!(current.last_committed_frame_no(), 15);
    let sealed = current.seal(Utc::now()).unwrap().unwrap();
    assert!(current.is_sealed());
    assert!(current
        .insert_frames([(1, &page(1, 0)[..])], Some(1))
        .is_err());

    let reopened = SealedSegment::open(&io(), &path).unwrap();
    assert_eq!(reopened.header(), sealed.header());
    assert_eq!(reopened.start_frame_no(), 10);
    assert_eq!(reopened.last_committed_frame_no(), 15);
    assert_eq!(reopened.size_after(), 4);
    assert_eq!(reopened.frame_count(), 6);
    assert_eq!(reopened.header().log_id, log_id);
    let mut buf = vec![0; PAGE_SIZE];
    for (page_no, frame_no) in [(1, 15), (2, 13), (3, 12), (4, 14)] {
        assert!(reopened.read_page(page_no, &mut buf).unwrap());
        assert_eq!(buf, page(page_no, frame_no), "page {page_no}");
    }
    assert!(!reopened.read_page(5, &mut buf).unwrap());

    let frames: Vec<_> = reopened.frames().map(Result::unwrap).collect();
    let summary: Vec<_> = frames
        .iter()
        .map(|f| (f.header.frame_no, f.header.page_no, f.header.size_after))
        .collect();
    assert_eq!(
        summary,
        [
            (10, 1, 0),
            (11, 2, 0),
            (12, 3, 3),
            (13, 2, 3),
            (14, 4, 0),
            (15, 1, 4)
        ]
    );
    for f in &frames {
        assert_eq!(&f.page[..], &page(f.header.page_no, f.header.frame_no)[..]);
    }
}

#[test]
fn the_current_segment_serves_every_snapshot_before_and_after_sealing() {
    let dir = tempfile::tempdir().unwrap();
    let current = write_segment(&io(), &dir.path().join("seg"), 1, Uuid::new_v4(), &txs());
    let mut buf = vec![0; PAGE_SIZE];
    let expect = |segment: &CurrentSegment<_>, buf: &mut Vec<u8>, page_no, snapshot, frame| {
        let found = segment.read_page(page_no, snapshot, buf).unwrap();
        match frame {
            Some(frame_no) => {
                assert!(found, "page {page_no} at {snapshot}");
                assert_eq!(
                    *buf,
                    page(page_no, frame_no),
                    "page {page_no} at {snapshot}"
                );
                assert_eq!(segment.find_frame(page_no, snapshot), Some(frame_no));
                let position = segment.locate_frame(page_no, snapshot).unwrap();
                buf.fill(0);
                segment.read_located(position, buf).unwrap();
                assert_eq!(
                    *buf,
                    page(page_no, frame_no),
                    "located {page_no} at {snapshot}"
                );
            }
            None => {
                assert!(!found, "page {page_no} at {snapshot}");
                assert_eq!(segment.locate_frame(page_no, snapshot), None);
            }
        }
    };
    for round in 0..2 {
        expect(&current, &mut buf, 1, 3, Some(1));
        expect(&current, &mut buf, 1, 6, Some(6));
        expect(&current, &mut buf, 2, 3, Some(2));
        expect(&current, &mut buf, 2, 4, Some(4));
        expect(&current, &mut buf, 4, 4, None);
        expect(&current, &mut buf, 4, 5, Some(5));
        if round == 0 {
            current.seal(Utc::now()).unwrap();
        }
    }
    current.read_frame(4, &mut buf).unwrap();
    assert_eq!(buf, page(2, 4));
}

#[test]
fn uncommitted_frames_are_visible_to_the_writer_only_until_rolled_back() {
    let dir = tempfile::tempdir().unwrap();
    let current = write_segment(&io(), &dir.path().join("seg"), 1, Uuid::new_v4(), &txs());
    let p = page(9, 99);
    current
        .insert_frames([(2, &p[..]), (7, &p[..])], None)
        .unwrap();
    assert!(current.in_transaction());
    let savepoint = current.insert_frames([(8, &p[..])], None).unwrap() - 1;
    current.insert_frames([(9, &p[..])], None).unwrap();
    assert_eq!(current.find_frame(2, u64::MAX), Some(7));
    assert_eq!(
        current.find_frame(2, 6),
        Some(4),
        "a reader keeps its snapshot"
    );
    assert!(
        current.seal(Utc::now()).is_err(),
        "no seal inside a transaction"
    );
    assert!(
        current.rollback_to(5).is_err(),
        "committed frames cannot be rolled back"
    );

    current.rollback_to(savepoint).unwrap();
    assert_eq!(current.find_frame(8, u64::MAX), None);
    assert_eq!(current.find_frame(9, u64::MAX), None);
    assert_eq!(current.find_frame(7, u64::MAX), Some(8));
    assert_eq!(
        current.rollback(),
        [2, 7],
        "the pages of the dropped frames"
    );
    assert!(!current.in_transaction());
    assert_eq!(current.find_frame(2, u64::MAX), Some(4));
    assert_eq!(current.find_frame(7, u64::MAX), None);

    let frame_no = commit(&current, &[7], 7);
    assert_eq!(
        frame_no, 7,
        "the next transaction reuses the rolled-back frame numbers"
    );
    let sealed = current.seal(Utc::now()).unwrap().unwrap();
    let reopened = SealedSegment::open(&io(), sealed.path()).unwrap();
    assert_eq!(reopened.last_committed_frame_no(), 7);
    let mut buf = vec![0; PAGE_SIZE];
    assert!(reopened.read_page(7, &mut buf).unwrap());
    assert_eq!(buf, page(7, 7));
}

#[test]
fn sealing_an_empty_segment_returns_none_and_keeps_it_current() {
    let dir = tempfile::tempdir().unwrap();
    let current = write_segment(&io(), &dir.path().join("seg"), 5, Uuid::new_v4(), &[]);
    assert_eq!(current.last_committed_frame_no(), 4);
    assert!(current.seal(Utc::now()).unwrap().is_none());
    assert!(!current.is_sealed());
    assert_eq!(commit(&current, &[1], 1), 5);
}

#[test]
fn a_compacted_segment_streams_back_the_newest_version_of_each_page() {
    let dir = tempfile::tempdir().unwrap();
    let log_id = Uuid::new_v4();
    let first = write_segment(&io(), &dir.path().join("a"), 1, log_id, &txs());
    let first = first.seal(Utc::now()).unwrap().unwrap();
    let second = write_segment(
        &io(),
        &dir.path().join("b"),
        7,
        log_id,
        &[
            Tx {
                pages: vec![3, 5],
                size_after: 5,
            },
            Tx {
                pages: vec![5],
                size_after: 4,
            },
        ],
    );
    let second = second.seal(Utc::now()).unwrap().unwrap();

    let mut data = Vec::new();
    let compacted = merge(&[&first, &second], &mut data).unwrap();
    assert_eq!(compacted.data_len, data.len() as u64);
    assert_eq!(compacted.header.start_frame_no, 1);
    assert_eq!(compacted.header.end_frame_no, 9);
    assert_eq!(compacted.header.size_after, 4);
    assert_eq!(compacted.header.log_id, log_id);
    assert_eq!(compacted.header.timestamp_ms, second.header().sealed_at_ms);

    let index_blob = compacted.index.encode();
    let index = PageIndex::decode(&index_blob, "idx".as_ref(), 0).unwrap();
    let mut reader = CompactedReader::new(&data[..], "data").unwrap();
    assert_eq!(*reader.header(), compacted.header);
    let mut buf = vec![0; PAGE_SIZE];
    let mut seen = Vec::new();
    while let Some(frame) = reader.next_frame(&mut buf).unwrap() {
        assert_eq!(buf, page(frame.page_no, frame.frame_no));
        seen.push((frame.page_no, frame.frame_no));
    }
    // Page 5 is beyond the final database size (4 pages) and is dropped.
    assert_eq!(seen, [(1, 6), (2, 4), (3, 7), (4, 5)]);
    let verified = CompactedReader::new(&data[..], "data")
        .unwrap()
        .verify_with_index(&index)
        .unwrap();
    assert_eq!(verified, compacted.header);

    let mut single = Vec::new();
    let one = merge(&[&second], &mut single).unwrap();
    assert_eq!(one.header.start_frame_no, 7);
    assert_eq!(
        one.data_len as usize,
        80 + FRAME_SIZE,
        "page 5 is past size_after"
    );
}

/// Three consecutive sealed segments that shrink the database in the last one.
fn three_segments(dir: &std::path::Path) -> Vec<SealedSegment<std::fs::File>> {
    let log_id = Uuid::new_v4();
    let mut start = 1;
    let mut sealed = Vec::new();
    for (i, txs) in [
        txs(),
        vec![Tx {
            pages: vec![2, 5, 6],
            size_after: 6,
        }],
        vec![Tx {
            pages: vec![3, 1],
            size_after: 5,
        }],
    ]
    .iter()
    .enumerate()
    {
        let current = write_segment(&io(), &dir.join(format!("s{i}")), start, log_id, txs);
        let segment = current.seal(Utc::now()).unwrap().unwrap();
        start = segment.last_committed_frame_no() + 1;
        sealed.push(segment);
    }
    sealed
}

/// Merges `segments` and writes the result to a file under `dir`.
fn compacted_file(
    dir: &std::path::Path,
    name: &str,
    segments: &[&SealedSegment<std::fs::File>],
) -> (CompactedSegment, std::fs::File, std::path::PathBuf) {
    let path = dir.join(name);
    let compacted = merge(segments, std::fs::File::create(&path).unwrap()).unwrap();
    (compacted, std::fs::File::open(&path).unwrap(), path)
}

/// The inputs of `merge_compacted` for compacted files made by `compacted_file`.
fn local_inputs<'a>(
    parts: impl Iterator<Item = &'a (CompactedSegment, std::fs::File, std::path::PathBuf)>,
) -> Vec<LocalCompacted<'a, std::fs::File>> {
    parts
        .map(|(compacted, file, path)| LocalCompacted {
            header: &compacted.header,
            index: &compacted.index,
            file,
            path,
        })
        .collect()
}

#[test]
fn merging_compacted_segments_equals_merging_their_sources() {
    let dir = tempfile::tempdir().unwrap();
    let sealed = three_segments(dir.path());
    let [a, b, c] = [&sealed[0], &sealed[1], &sealed[2]];
    let mut expected = Vec::new();
    let all = merge(&[a, b, c], &mut expected).unwrap();

    let inputs_of = |parts: &[(CompactedSegment, std::fs::File, std::path::PathBuf)]| {
        let mut merged = Vec::new();
        let result = merge_compacted(&local_inputs(parts.iter()), &mut merged).unwrap();
        (result, merged)
    };
    // Consecutive inputs.
    let singles = [
        compacted_file(dir.path(), "a", &[a]),
        compacted_file(dir.path(), "b", &[b]),
        compacted_file(dir.path(), "c", &[c]),
    ];
    let (result, merged) = inputs_of(&singles);
    assert_eq!(merged, expected);
    assert_eq!(result.header, all.header);
    assert_eq!(result.index.entries(), all.index.entries());
    // Overlapping inputs: a+b, then b+c.
    let overlapping = [
        compacted_file(dir.path(), "ab", &[a, b]),
        compacted_file(dir.path(), "bc", &[b, c]),
    ];
    let (result, merged) = inputs_of(&overlapping);
    assert_eq!(merged, expected);
    assert_eq!(result.header, all.header);

    // Out of order, or leaving a gap, is refused.
    let refused = |parts: &[&(CompactedSegment, std::fs::File, std::path::PathBuf)]| {
        merge_compacted(&local_inputs(parts.iter().copied()), Vec::new())
            .unwrap_err()
            .to_string()
    };
    assert!(refused(&[&singles[0], &singles[2]]).contains("not consecutive"));
    assert!(refused(&[&singles[1], &singles[0]]).contains("not consecutive"));
    assert!(refused(&[&overlapping[0], &singles[1]]).contains("not consecutive"));
}

#[test]
fn merge_refuses_segments_that_are_not_consecutive_or_of_another_log() {
    let dir = tempfile::tempdir().unwrap();
    let log_id = Uuid::new_v4();
    let tx = || {
        vec![Tx {
            pages: vec![1],
            size_after: 1,
        }]
    };
    let a = write_segment(&io(), &dir.path().join("a"), 1, log_id, &tx());
    let a = a.seal(Utc::now()).unwrap().unwrap();
    let gap = write_segment(&io(), &dir.path().join("gap"), 3, log_id, &tx());
    let gap = gap.seal(Utc::now()).unwrap().unwrap();
    let other = write_segment(&io(), &dir.path().join("other"), 2, Uuid::new_v4(), &tx());
    let other = other.seal(Utc::now()).unwrap().unwrap();
    let err = merge(&[&a, &gap], Vec::new()).unwrap_err();
    assert!(err.to_string().contains("not consecutive"), "{err}");
    let err = merge(&[&a, &other], Vec::new()).unwrap_err();
    assert!(err.to_string().contains("belongs to log"), "{err}");
    assert!(merge::<std::fs::File>(&[], Vec::new()).is_err());
}

#[test]
fn open_segment_validates_sealed_files_and_recovers_the_current_one() {
    let dir = tempfile::tempdir().unwrap();
    let log_id = Uuid::new_v4();
    let sealed_path = dir.path().join("sealed");
    write_segment(&io(), &sealed_path, 1, log_id, &txs())
        .seal(Utc::now())
        .unwrap();
    let current_path = dir.path().join("current");
    write_segment(&io(), &current_path, 7, log_id, &txs());

    match open_segment(&io(), &sealed_path).unwrap() {
        OpenedSegment::Sealed(s) => assert_eq!(s.last_committed_frame_no(), 6),
        other => panic!("expected a sealed segment, got {other:?}"),
    }
    match open_segment(&io(), &current_path).unwrap() {
        OpenedSegment::Current(s, report) => {
            assert_eq!(s.last_committed_frame_no(), 12);
            assert_eq!(report.kept_frames, 6);
            assert_eq!(report.dropped_frames, 0);
        }
        other => panic!("expected a current segment, got {other:?}"),
    }
    assert!(SealedSegment::open(&io(), &current_path).is_err());
    assert!(CurrentSegment::recover(&io(), &sealed_path).is_err());

    // What a crash leaves of a segment made without syncing: nothing, or a zeroed header.
    for (name, bytes) in [("short", vec![0; 10]), ("zeroed", vec![0; 4096])] {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        assert!(
            matches!(
                open_segment(&io(), &path).unwrap(),
                OpenedSegment::Unwritten
            ),
            "{name}"
        );
    }
    // A zeroed header with frames after it is not taken for an unwritten segment.
    let path = dir.path().join("zeroed-header");
    let mut bytes = vec![0; 8192];
    bytes[5000] = 1;
    std::fs::write(&path, bytes).unwrap();
    assert!(open_segment(&io(), &path).is_err());
    // A header that is not all zeros is not taken for an unwritten one.
    let path = dir.path().join("damaged");
    let mut bytes = vec![0; 4096];
    bytes[5] = 1;
    std::fs::write(&path, bytes).unwrap();
    assert!(open_segment(&io(), &path).is_err());
}

#[test]
fn an_unsynced_segment_is_created_new_with_a_valid_header() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("next");
    let log_id = Uuid::new_v4();
    let segment = CurrentSegment::create_unsynced(&io(), &path, 42, log_id).unwrap();
    assert_eq!(segment.start_frame_no(), 42);
    drop(segment);
    assert!(
        CurrentSegment::create_unsynced(&io(), &path, 42, log_id).is_err(),
        "an existing file is never replaced"
    );
    match open_segment(&io(), &path).unwrap() {
        OpenedSegment::Current(s, _) => assert_eq!(s.start_frame_no(), 42),
        other => panic!("expected a current segment, got {other:?}"),
    }
}
