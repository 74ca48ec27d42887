//! A flipped bit anywhere in a sealed segment (header, frame, index) or in compacted data, or a
//! truncated stream, is reported as corruption naming the file and the offset of the damaged
//! structure: never a panic, never a silent success.

use std::path::Path;

use crate::common::{io, write_segment, Tx};
use chrono::Utc;
use libsql_wal_segment::format::{
    CompactedHeader, FrameHeader, COMPACTED_HEADER_SIZE, FRAME_SIZE, PAGE_SIZE, SEGMENT_HEADER_SIZE,
};
use libsql_wal_segment::{merge, CompactedReader, Error, PageIndex, SealedSegment};
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
            pages: vec![3, 1],
            size_after: 3,
        },
    ]
}

fn corruption_offset(err: &Error) -> u64 {
    match err {
        Error::Corrupt { offset, .. }
        | Error::BadMagic { offset, .. }
        | Error::UnsupportedVersion { offset, .. } => *offset,
        other => panic!("not a corruption error: {other}"),
    }
}

/// `txs()` written from frame 1 and sealed, in `dir`.
fn sealed_of_txs(dir: &Path) -> SealedSegment<std::fs::File> {
    write_segment(&io(), &dir.join("seg"), 1, Uuid::new_v4(), &txs())
        .seal(Utc::now())
        .unwrap()
        .unwrap()
}

#[test]
fn a_flipped_bit_anywhere_in_a_sealed_segment_names_the_file_and_the_damaged_structure() {
    let dir = tempfile::tempdir().unwrap();
    let sealed = sealed_of_txs(dir.path());
    let index_offset = sealed.header().index_offset as usize;
    let bytes = std::fs::read(sealed.path()).unwrap();
    let path = dir.path().join("damaged");
    for byte in 0..bytes.len() {
        let mut damaged = bytes.clone();
        damaged[byte] ^= 1 << (byte % 8);
        std::fs::write(&path, &damaged).unwrap();
        let err = SealedSegment::open(&io(), &path).unwrap_err();
        assert!(err.to_string().contains(&*path.to_string_lossy()), "{err}");
        let expected = if byte < SEGMENT_HEADER_SIZE {
            0
        } else if byte < index_offset {
            let frame = (byte - SEGMENT_HEADER_SIZE) / FRAME_SIZE;
            SEGMENT_HEADER_SIZE + frame * FRAME_SIZE
        } else {
            index_offset
        };
        assert_eq!(
            corruption_offset(&err),
            expected as u64,
            "byte {byte}: {err}"
        );
    }
}

#[test]
fn a_sealed_segment_with_missing_or_extra_bytes_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let sealed = sealed_of_txs(dir.path());
    let bytes = std::fs::read(sealed.path()).unwrap();
    let path = dir.path().join("damaged");
    for len in [0, 10, SEGMENT_HEADER_SIZE, bytes.len() - 1] {
        std::fs::write(&path, &bytes[..len]).unwrap();
        let err = SealedSegment::open(&io(), &path).unwrap_err();
        assert!(err.is_corruption(), "len {len}: {err}");
    }
    let mut longer = bytes.clone();
    longer.push(0);
    std::fs::write(&path, &longer).unwrap();
    assert!(SealedSegment::open(&io(), &path)
        .unwrap_err()
        .is_corruption());
}

fn read_all(data: &[u8], name: &str) -> Result<usize, Error> {
    let mut reader = CompactedReader::new(data, name)?;
    let mut page = vec![0; PAGE_SIZE];
    let mut frames = 0;
    while reader.next_frame(&mut page)?.is_some() {
        frames += 1;
    }
    Ok(frames)
}

#[test]
fn a_flipped_bit_or_a_cut_anywhere_in_compacted_data_names_the_object_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let sealed = sealed_of_txs(dir.path());
    let mut data = Vec::new();
    merge(&[&sealed], &mut data).unwrap();
    assert_eq!(read_all(&data, "ns/segments/key").unwrap(), 3);
    for byte in 0..data.len() {
        let mut damaged = data.clone();
        damaged[byte] ^= 1 << (byte % 8);
        let err = read_all(&damaged, "ns/segments/key").unwrap_err();
        assert!(err.to_string().contains("ns/segments/key"), "{err}");
        let expected = if byte < COMPACTED_HEADER_SIZE {
            0
        } else {
            let frame = (byte - COMPACTED_HEADER_SIZE) / FRAME_SIZE;
            COMPACTED_HEADER_SIZE + frame * FRAME_SIZE
        };
        assert_eq!(
            corruption_offset(&err),
            expected as u64,
            "byte {byte}: {err}"
        );
    }
    for len in (0..data.len()).step_by(97) {
        let err = read_all(&data[..len], "cut").unwrap_err();
        assert!(err.is_corruption(), "len {len}: {err}");
    }
    let mut longer = data.clone();
    longer.push(0);
    let err = read_all(&longer, "long").unwrap_err();
    assert_eq!(corruption_offset(&err), data.len() as u64);
    assert!(SealedSegment::open(&io(), Path::new("/nonexistent")).is_err());
}

#[test]
fn compacted_data_whose_header_claims_billions_of_frames_is_corrupt_without_reserving_them() {
    // Valid header CRC, a range wide enough for u32::MAX frames, one real frame after it.
    let header = CompactedHeader {
        log_id: Uuid::new_v4(),
        start_frame_no: 1,
        end_frame_no: 1 << 40,
        size_after: u32::MAX,
        frame_count: u32::MAX,
        timestamp_ms: 1,
    };
    let encoded = header.encode();
    let mut frame = vec![0; FRAME_SIZE];
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
    let index = PageIndex::build(&[(1, COMPACTED_HEADER_SIZE as u64)], Path::new("x")).unwrap();
    // Reserving an entry per claimed frame (64 GiB) aborted the process before the fix.
    let err = CompactedReader::new(&data[..], "ns/segments/huge")
        .unwrap()
        .verify_with_index(&index)
        .unwrap_err();
    assert!(err.is_corruption(), "{err}");
    assert!(err.to_string().contains("ns/segments/huge"), "{err}");
    assert!(err.to_string().contains("truncated"), "{err}");
}

#[test]
fn a_sealed_header_claiming_an_index_larger_than_its_frames_allow_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let sealed = sealed_of_txs(dir.path());
    let mut header = *sealed.header();
    let mut bytes = std::fs::read(sealed.path()).unwrap();
    let bound = PageIndex::max_encoded_len(header.frame_count);
    // An index as long as the bound allows plus one, the file grown to match: only the bound
    // refuses it, before the index is read.
    header.index_size = bound + 1;
    bytes.resize((header.index_offset + header.index_size) as usize, 0);
    bytes[..SEGMENT_HEADER_SIZE].copy_from_slice(&header.encode());
    let path = dir.path().join("big-index");
    std::fs::write(&path, &bytes).unwrap();
    let err = SealedSegment::open(&io(), &path).unwrap_err();
    assert!(err.is_corruption(), "{err}");
    assert!(
        err.to_string().contains("more than such an index can be"),
        "{err}"
    );
}

#[test]
fn the_pages_written_after_a_frame_do_not_depend_on_frame_headers_damaged_after_open() {
    let dir = tempfile::tempdir().unwrap();
    // Newest versions: page 1 at frame 6, page 2 at frame 4, page 3 at frame 5.
    let sealed = sealed_of_txs(dir.path());
    assert_eq!(sealed.pages_written_after(0), vec![1, 2, 3]);
    assert_eq!(sealed.pages_written_after(3), vec![1, 2, 3]);
    assert_eq!(sealed.pages_written_after(4), vec![1, 3]);
    assert_eq!(sealed.pages_written_after(5), vec![1]);
    assert!(sealed.pages_written_after(6).is_empty());
    // Frame 4 (page 2) now claims frame_no 0, which no frame of the segment has, and frame 5
    // (page 3) claims frame_no 3, in the segment's range: the answers stay exact.
    let mut bytes = std::fs::read(sealed.path()).unwrap();
    for (position, claimed) in [(3, 0u64), (4, 3)] {
        let frame_no_at = SEGMENT_HEADER_SIZE + position * FRAME_SIZE + 16;
        let header = FrameHeader::decode(&bytes[frame_no_at - 16..]);
        assert_eq!(header.frame_no, position as u64 + 1);
        bytes[frame_no_at..frame_no_at + 8].copy_from_slice(&claimed.to_le_bytes());
    }
    std::fs::write(sealed.path(), &bytes).unwrap();
    assert_eq!(sealed.pages_written_after(3), vec![1, 2, 3]);
    assert_eq!(sealed.pages_written_after(4), vec![1, 3]);
    assert_eq!(sealed.pages_written_after(5), vec![1]);
}
