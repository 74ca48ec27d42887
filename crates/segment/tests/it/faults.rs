//! Injected I/O faults (the crate's `FaultyIo`): a failed or short write and a failed fsync
//! surface as errors, the segment keeps serving its last good commit, and reopening the file
//! recovers exactly the commits that were acknowledged.

use crate::common::{commit, page, try_commit};
use chrono::Utc;
use libsql_wal_segment::fault::{FaultyIo, WriteFault};
use libsql_wal_segment::format::PAGE_SIZE;
use libsql_wal_segment::{
    open_segment, CurrentSegment, FileExt, OpenedSegment, SealedSegment, StdIo,
};
use uuid::Uuid;

/// Arms one fault on an `Io`'s plan.
type ArmFault = fn(&FaultyIo<StdIo>);

fn faulty() -> FaultyIo<StdIo> {
    FaultyIo::new(StdIo)
}

fn assert_page<F: FileExt>(segment: &CurrentSegment<F>, page_no: u32, frame_no: u64) {
    let mut buf = vec![0; PAGE_SIZE];
    assert!(segment.read_page(page_no, u64::MAX, &mut buf).unwrap());
    assert_eq!(buf, page(page_no, frame_no), "page {page_no}");
}

#[test]
fn a_failed_write_is_an_error_and_the_segment_keeps_its_last_commit() {
    for fault in [WriteFault::Fail, WriteFault::Short] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seg");
        let io = faulty();
        let segment = CurrentSegment::create(&io, &path, 1, Uuid::new_v4()).unwrap();
        commit(&segment, &[1, 2], 2);
        io.plan().fault_write(0, fault);
        let err = try_commit(&segment, &[2, 3, 4], 10).unwrap_err();
        assert!(err.to_string().contains("injected fault"), "{err}");
        assert_eq!(segment.last_committed_frame_no(), 2);
        assert!(!segment.in_transaction());
        assert_page(&segment, 2, 2);
        assert_eq!(segment.find_frame(3, u64::MAX), None);
        drop(segment);

        // What reached the disk (nothing, or a torn prefix) is dropped by recovery.
        let (segment, report) = CurrentSegment::recover(&io, &path).unwrap();
        assert_eq!(report.last_committed_frame_no, 2, "{fault:?}");
        assert_eq!(report.truncated_bytes > 0, fault == WriteFault::Short);
        assert_page(&segment, 2, 2);
        assert_eq!(commit(&segment, &[3], 3), 3);
    }
}

#[test]
fn the_commit_after_a_short_write_overwrites_the_torn_frames() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("seg");
    let io = faulty();
    let segment = CurrentSegment::create(&io, &path, 1, Uuid::new_v4()).unwrap();
    commit(&segment, &[1], 1);
    io.plan().fault_write(0, WriteFault::Short);
    try_commit(&segment, &[5, 6, 7, 8], 10).unwrap_err();
    commit(&segment, &[2], 2);
    drop(segment);
    let (segment, report) = CurrentSegment::recover(&io, &path).unwrap();
    assert_eq!(report.last_committed_frame_no, 2);
    assert_page(&segment, 1, 1);
    assert_page(&segment, 2, 2);
    assert_eq!(segment.find_frame(5, u64::MAX), None);
}

#[test]
fn a_failed_fsync_is_an_error_and_loses_nothing_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("seg");
    let io = faulty();
    let segment = CurrentSegment::create(&io, &path, 1, Uuid::new_v4()).unwrap();
    commit(&segment, &[1, 2], 2);
    io.plan().fail_sync(0);
    let err = segment.sync().unwrap_err();
    assert!(err.to_string().contains("fsync failed"), "{err}");
    assert_page(&segment, 1, 1);
    segment.sync().unwrap();
    drop(segment);
    let (_, report) = CurrentSegment::recover(&io, &path).unwrap();
    assert_eq!(report.last_committed_frame_no, 2);
}

#[test]
fn a_seal_that_fails_at_any_write_or_fsync_leaves_a_recoverable_segment() {
    // A seal writes the index, writes the header, fsyncs once.
    let faults: [(&str, ArmFault); 4] = [
        ("index write", |io| {
            io.plan().fault_write(0, WriteFault::Fail)
        }),
        ("short index write", |io| {
            io.plan().fault_write(0, WriteFault::Short)
        }),
        ("header write", |io| {
            io.plan().fault_write(1, WriteFault::Fail)
        }),
        ("fsync", |io| io.plan().fail_sync(0)),
    ];
    for (name, arm) in faults {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seg");
        let io = faulty();
        let segment = CurrentSegment::create(&io, &path, 1, Uuid::new_v4()).unwrap();
        commit(&segment, &[1, 2, 3], 3);
        commit(&segment, &[2], 3);
        arm(&io);
        assert!(segment.seal(Utc::now()).is_err(), "{name}");
        assert!(!segment.is_sealed(), "{name}");
        assert_page(&segment, 2, 4);

        // Whatever the file holds now opens to every commit: unsealed, or sealed and whole.
        match open_segment(&io, &path).unwrap() {
            OpenedSegment::Current(recovered, report) => {
                assert_eq!(report.last_committed_frame_no, 4, "{name}");
                assert_eq!(recovered.committed_len(), segment.committed_len(), "{name}");
            }
            OpenedSegment::Sealed(sealed) => {
                assert_eq!(
                    name, "fsync",
                    "only the fsync fails after the whole seal is written"
                );
                assert_eq!(sealed.last_committed_frame_no(), 4);
            }
            other => panic!("{name}: {other:?}"),
        }
        // Retrying the seal on the live segment succeeds and yields a whole sealed file.
        let sealed = segment.seal(Utc::now()).unwrap().unwrap();
        let reopened = SealedSegment::open(&io, sealed.path()).unwrap();
        assert_eq!(reopened.last_committed_frame_no(), 4, "{name}");
    }
}

#[test]
fn a_sealed_header_over_a_torn_index_is_recovered_as_a_current_segment() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("seg");
    let io = faulty();
    let segment = CurrentSegment::create(&io, &path, 1, Uuid::new_v4()).unwrap();
    commit(&segment, &[1, 2, 3], 3);
    commit(&segment, &[2], 3);
    let sealed = segment.seal(Utc::now()).unwrap().unwrap();
    let index_offset = sealed.header().index_offset;
    drop((sealed, segment));
    // The one fsync of the seal never returned: the header reached the disk, the index did not.
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &[0; 64], index_offset).unwrap();
    drop(file);
    // Reported, nothing written: the caller judges whether a seal can have been cut short there.
    let before = std::fs::read(&path).unwrap();
    assert!(matches!(
        open_segment(&io, &path).unwrap(),
        OpenedSegment::TornSeal(e) if e.is_corruption()
    ));
    assert_eq!(std::fs::read(&path).unwrap(), before);
    let (recovered, report) = CurrentSegment::recover_torn_seal(&io, &path).unwrap();
    assert_eq!(report.last_committed_frame_no, 4);
    // It takes commits again and seals into a whole segment; the stale sealed header is gone.
    commit(&recovered, &[4], 4);
    drop(recovered);
    let (again, report) = CurrentSegment::recover(&io, &path).unwrap();
    assert_eq!(report.last_committed_frame_no, 5);
    let resealed = again.seal(Utc::now()).unwrap().unwrap();
    assert_eq!(
        SealedSegment::open(&io, resealed.path())
            .unwrap()
            .last_committed_frame_no(),
        5
    );
}

#[test]
fn a_failed_creation_leaves_no_segment_behind() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("seg");
    let io = faulty();
    io.plan().fault_write(0, WriteFault::Short);
    assert!(CurrentSegment::create(&io, &path, 1, Uuid::new_v4()).is_err());
    assert!(!path.exists());
    io.plan().fail_sync(0);
    assert!(CurrentSegment::create(&io, &path, 1, Uuid::new_v4()).is_err());
    assert!(!path.exists());
    let segment = CurrentSegment::create(&io, &path, 1, Uuid::new_v4()).unwrap();
    assert_eq!(commit(&segment, &[1], 1), 1);
}

#[test]
fn a_commit_whose_fsync_failed_can_be_taken_back_in_memory_and_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("seg");
    let io = faulty();
    let segment = CurrentSegment::create(&io, &path, 1, Uuid::new_v4()).unwrap();
    commit(&segment, &[1, 2], 2);
    commit(&segment, &[2, 3], 3);
    io.plan().fail_sync(0);
    assert!(segment.sync().is_err());
    segment.undo_last_commit().unwrap();
    assert_eq!(segment.last_committed_frame_no(), 2);
    assert_eq!(segment.size_after(), 2);
    assert_page(&segment, 2, 2);
    assert_eq!(segment.find_frame(3, u64::MAX), None);
    assert!(
        segment.undo_last_commit().is_err(),
        "only one commit can be taken back"
    );
    assert_eq!(commit(&segment, &[4], 4), 3);
    drop(segment);
    let (segment, report) = CurrentSegment::recover(&io, &path).unwrap();
    assert_eq!(report.last_committed_frame_no, 3);
    assert_page(&segment, 4, 3);
    assert_page(&segment, 2, 2);
}
