//! Crash recovery of the current segment: a file cut at any byte, a half-written index from a
//! seal that did not finish, or damaged frames, always comes back as exactly the last fully
//! written commit, and the segment accepts new commits afterwards.

use std::path::Path;

use crate::common::{commit, io, page, write_segment, Tx};
use chrono::Utc;
use libsql_wal_segment::format::{FRAME_SIZE, PAGE_SIZE, SEGMENT_HEADER_SIZE};
use libsql_wal_segment::{CurrentSegment, SealedSegment};
use uuid::Uuid;

const H: usize = SEGMENT_HEADER_SIZE;
const F: usize = FRAME_SIZE;

/// Frames 1-3 (commit), 4-5 (commit), 6 (commit).
fn txs() -> Vec<Tx> {
    vec![
        Tx {
            pages: vec![1, 2, 3],
            size_after: 3,
        },
        Tx {
            pages: vec![2, 5],
            size_after: 5,
        },
        Tx {
            pages: vec![4],
            size_after: 5,
        },
    ]
}

/// The newest frame_no of each page after the transactions that end at `last_frame_no`.
fn expected_pages(last_frame_no: u64) -> Vec<(u32, u64)> {
    let history = [(1, 1), (2, 2), (3, 3), (2, 4), (5, 5), (4, 6)];
    let mut newest = std::collections::BTreeMap::new();
    for (page_no, frame_no) in history {
        if frame_no <= last_frame_no {
            newest.insert(page_no, frame_no);
        }
    }
    newest.into_iter().collect()
}

fn assert_holds_exactly(segment: &CurrentSegment<std::fs::File>, last_frame_no: u64) {
    assert_eq!(segment.last_committed_frame_no(), last_frame_no);
    let mut buf = vec![0; PAGE_SIZE];
    let expected = expected_pages(last_frame_no);
    for page_no in 1..=6 {
        let found = segment.read_page(page_no, u64::MAX, &mut buf).unwrap();
        match expected.iter().find(|(p, _)| *p == page_no) {
            Some(&(_, frame_no)) => {
                assert!(found, "page {page_no} missing at {last_frame_no}");
                assert_eq!(buf, page(page_no, frame_no));
            }
            None => assert!(!found, "page {page_no} present at {last_frame_no}"),
        }
    }
}

#[test]
fn a_segment_cut_at_any_byte_of_its_last_two_frames_recovers_to_the_last_complete_commit() {
    let dir = tempfile::tempdir().unwrap();
    let original = dir.path().join("original");
    write_segment(&io(), &original, 1, Uuid::new_v4(), &txs());
    let bytes = std::fs::read(&original).unwrap();
    assert_eq!(bytes.len(), H + 6 * F);
    let path = dir.path().join("cut");
    for cut in H + 4 * F..=H + 6 * F {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let (segment, report) = CurrentSegment::recover(&io(), &path).unwrap();
        let (last, kept) = match cut {
            c if c < H + 5 * F => (3, 3),
            c if c < H + 6 * F => (5, 5),
            _ => (6, 6),
        };
        let kept_end = H + kept * F;
        assert_eq!(report.last_committed_frame_no, last, "cut at {cut}");
        assert_eq!(report.kept_frames, kept as u64);
        assert_eq!(report.truncated_bytes, (cut - kept_end) as u64);
        assert_eq!(report.dropped_frames, (cut - kept_end).div_ceil(F) as u64);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), kept_end as u64);
        assert_holds_exactly(&segment, last);
    }
}

#[test]
fn a_recovered_segment_takes_new_commits_and_seals() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("seg");
    write_segment(&io(), &path, 1, Uuid::new_v4(), &txs());
    let len = std::fs::metadata(&path).unwrap().len();
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(len - 100).unwrap();
    drop(file);

    let (segment, report) = CurrentSegment::recover(&io(), &path).unwrap();
    assert_eq!(report.last_committed_frame_no, 5);
    assert_eq!(commit(&segment, &[6], 6), 6);
    let sealed = segment.seal(Utc::now()).unwrap().unwrap();
    let reopened = SealedSegment::open(&io(), sealed.path()).unwrap();
    assert_eq!(reopened.last_committed_frame_no(), 6);
    assert_eq!(reopened.size_after(), 6);
}

#[test]
fn a_seal_interrupted_before_its_header_was_written_recovers_every_frame() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("seg");
    let segment = write_segment(&io(), &path, 1, Uuid::new_v4(), &txs());
    let unsealed = std::fs::read(&path).unwrap();
    segment.seal(Utc::now()).unwrap().unwrap();
    let sealed = std::fs::read(&path).unwrap();
    // The crash left the index on disk after the frames, but the old header.
    let mut crashed = unsealed.clone();
    crashed.extend_from_slice(&sealed[unsealed.len()..]);
    std::fs::write(&path, &crashed).unwrap();

    let (segment, report) = CurrentSegment::recover(&io(), &path).unwrap();
    assert_eq!(report.kept_frames, 6);
    assert_eq!(
        report.truncated_bytes,
        (sealed.len() - unsealed.len()) as u64
    );
    assert_eq!(report.dropped_frames, 1);
    assert_holds_exactly(&segment, 6);
    assert!(segment.seal(Utc::now()).unwrap().is_some());
}

#[test]
fn a_damaged_frame_ends_recovery_at_the_commit_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let original = dir.path().join("original");
    write_segment(&io(), &original, 1, Uuid::new_v4(), &txs());
    let bytes = std::fs::read(&original).unwrap();
    let path = dir.path().join("damaged");
    for (frame, last) in [(0, 0), (2, 0), (3, 3), (4, 3), (5, 5)] {
        for at in [0, 5, 17, F - 1] {
            let mut damaged = bytes.clone();
            damaged[H + frame * F + at] ^= 0x40;
            std::fs::write(&path, &damaged).unwrap();
            let (segment, report) = CurrentSegment::recover(&io(), &path).unwrap();
            assert_eq!(
                report.last_committed_frame_no, last,
                "frame {frame} byte {at}"
            );
            assert_eq!(report.dropped_frames, 6 - last);
            assert_holds_exactly(&segment, last);
        }
    }
}

#[test]
fn a_damaged_header_is_corruption_not_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("seg");
    write_segment(&io(), &path, 1, Uuid::new_v4(), &txs());
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[20] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    let err = CurrentSegment::recover(&io(), &path).unwrap_err();
    assert!(err.is_corruption(), "{err}");
    std::fs::write(&path, &bytes[..50]).unwrap();
    let err = CurrentSegment::recover(&io(), &path).unwrap_err();
    assert!(
        err.to_string().contains("shorter than a segment header"),
        "{err}"
    );
    assert!(CurrentSegment::recover(&io(), Path::new("/nonexistent/seg")).is_err());
}

#[test]
fn preallocated_zeros_are_cut_off_by_recovery_and_seal_without_counting_as_dropped_frames() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("seg");
    let segment = write_segment(&io(), &path, 1, Uuid::new_v4(), &txs()[..1]);
    segment.preallocate(3 * F as u64).unwrap();
    let len = std::fs::metadata(&path).unwrap().len();
    assert_eq!(len, 1 << 20, "preallocated to the next MiB");
    // Commits overwrite the zeros without growing the file.
    commit(&segment, &[2, 5], 5);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), len);
    drop(segment);

    let (segment, report) = CurrentSegment::recover(&io(), &path).unwrap();
    assert_eq!(report.last_committed_frame_no, 5);
    assert_eq!(report.dropped_frames, 0, "zeros are not lost frames");
    assert_eq!(report.truncated_bytes, len - (H + 5 * F) as u64);
    assert_holds_exactly(&segment, 5);

    segment.preallocate(F as u64).unwrap();
    commit(&segment, &[4], 5);
    let sealed = segment.seal(Utc::now()).unwrap().unwrap();
    let reopened = SealedSegment::open(&io(), sealed.path()).unwrap();
    assert_eq!(reopened.last_committed_frame_no(), 6);
}
