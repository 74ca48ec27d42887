//! Owns the bytes: the layouts of the segment header, the frame header, the compacted-segment
//! header, and the running checksum that chains frames. Everything is little-endian, and every
//! header starts with a magic number and a format version and ends with a CRC32 of itself.
//!
//! Segment file:    `SegmentHeader` (128 bytes) | frame* | page index (once sealed)
//! Frame:           `FrameHeader` (24 bytes) | page (4096 bytes)
//! Compacted data:  `CompactedHeader` (80 bytes) | frame* (the last one flagged `FRAME_LAST`)
//!
//! A frame's checksum is CRC32 over the frame's bytes after the checksum field, continued from
//! the previous frame's checksum; the first frame continues from the segment's salt (segment) or
//! the header's own CRC (compacted data), so a frame cannot be moved to another segment unnoticed.
//!
//! `read_header` reads a segment file's header through `FileExt`: the current, sealed and
//! start-up code all open files with it, so none of them depends on another for it.

use std::path::Path;

use uuid::Uuid;

use crate::error::{Error, Result};
use crate::io::FileExt;

/// Size of a database page. libsql-wal only handles 4 KiB pages.
pub const PAGE_SIZE: usize = 4096;
/// Size of a frame header.
pub const FRAME_HEADER_SIZE: usize = 24;
/// Size of a frame: header plus page.
pub const FRAME_SIZE: usize = FRAME_HEADER_SIZE + PAGE_SIZE;

/// Magic number of a segment file ("LSQLWSEG").
pub const SEGMENT_MAGIC: u64 = u64::from_le_bytes(*b"LSQLWSEG");
/// Format version of segment files written by this build.
pub const SEGMENT_VERSION: u32 = 1;
/// Size of the segment header; frames start right after it.
pub const SEGMENT_HEADER_SIZE: usize = 128;

/// Magic number of a compacted segment ("LSQLWCMP").
pub const COMPACTED_MAGIC: u64 = u64::from_le_bytes(*b"LSQLWCMP");
/// Format version of compacted segments written by this build.
pub const COMPACTED_VERSION: u32 = 1;
/// Size of the compacted-segment header; frames start right after it.
pub const COMPACTED_HEADER_SIZE: usize = 80;

/// Segment flag: the segment is sealed; its header and index are final.
pub const SEGMENT_SEALED: u32 = 1;
/// Segment flag: frame numbers increase but may skip (frames were injected from a compacted
/// segment); without it, frame `i` must have frame_no `start_frame_no + i`.
pub const SEGMENT_FRAME_UNORDERED: u32 = 2;
/// Segment flag, on a segment not sealed yet: the seal of the segment before it is durable
/// (`CurrentSegment::mark_after_durable_seal`). Recovery then takes damage to that segment for
/// what it is, corruption, and not for a seal a power cut left unwritten.
pub const SEGMENT_AFTER_DURABLE_SEAL: u32 = 4;
const SEGMENT_KNOWN_FLAGS: u32 =
    SEGMENT_SEALED | SEGMENT_FRAME_UNORDERED | SEGMENT_AFTER_DURABLE_SEAL;

/// Frame flag, in compacted data only: this is the last frame.
pub const FRAME_LAST: u32 = 1;

/// Most entries reserved up front for a count read from untrusted bytes (a header on disk or
/// from the network): a vector sized by such a count starts at most this big and grows as the
/// entries really arrive, so a header claiming billions of frames costs nothing until they do.
pub const MAX_PREALLOCATED_ENTRIES: usize = 64 * 1024;

/// Returns the capacity to reserve for `count` entries announced by untrusted bytes: `count`,
/// at most `MAX_PREALLOCATED_ENTRIES`.
pub fn untrusted_capacity(count: u64) -> usize {
    usize::try_from(count).map_or(MAX_PREALLOCATED_ENTRIES, |n| {
        n.min(MAX_PREALLOCATED_ENTRIES)
    })
}

fn le_u32(buf: &[u8], at: usize) -> u32 {
    let mut bytes = [0; 4];
    bytes.copy_from_slice(&buf[at..at + 4]);
    u32::from_le_bytes(bytes)
}

fn le_u64(buf: &[u8], at: usize) -> u64 {
    let mut bytes = [0; 8];
    bytes.copy_from_slice(&buf[at..at + 8]);
    u64::from_le_bytes(bytes)
}

fn uuid_at(buf: &[u8], at: usize) -> Uuid {
    let mut bytes = [0; 16];
    bytes.copy_from_slice(&buf[at..at + 16]);
    Uuid::from_bytes(bytes)
}

/// Fails with `InvalidState` naming `path` unless `page` is exactly one page long.
pub fn check_page_buffer(page: &[u8], path: &Path) -> Result<()> {
    if page.len() == PAGE_SIZE {
        Ok(())
    } else {
        Err(Error::invalid_state(
            path,
            format!("page buffer is {} bytes, pages are {PAGE_SIZE}", page.len()),
        ))
    }
}

/// Returns the CRC32 of `bytes` continued from `previous`.
pub fn running_checksum(previous: u32, bytes: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new_with_initial(previous);
    hasher.update(bytes);
    hasher.finalize()
}

/// Validates the magic, version and trailing CRC32 shared by every header of this crate.
pub(crate) fn check_envelope(
    buf: &[u8],
    magic: u64,
    version: u32,
    path: &Path,
    offset: u64,
) -> Result<()> {
    let found = le_u64(buf, 0);
    if found != magic {
        return Err(Error::BadMagic {
            path: path.into(),
            offset,
            expected: magic,
            found,
        });
    }
    let found = le_u32(buf, 8);
    if found != version {
        return Err(Error::UnsupportedVersion {
            path: path.into(),
            offset,
            found,
            supported: version,
        });
    }
    let crc_at = buf.len() - 4;
    if crc32fast::hash(&buf[..crc_at]) != le_u32(buf, crc_at) {
        return Err(Error::corrupt(path, offset, "header checksum mismatch"));
    }
    Ok(())
}

/// Writes the magic and version at the start of `buf` and the CRC32 at its end.
fn seal_envelope(buf: &mut [u8], magic: u64, version: u32) {
    buf[0..8].copy_from_slice(&magic.to_le_bytes());
    buf[8..12].copy_from_slice(&version.to_le_bytes());
    let crc_at = buf.len() - 4;
    let crc = crc32fast::hash(&buf[..crc_at]);
    buf[crc_at..].copy_from_slice(&crc.to_le_bytes());
}

/// The header at the start of every segment file.
///
/// While a segment is current only the fields fixed at creation are meaningful (the frames are the
/// truth, and recovery rebuilds the rest from them); sealing writes the final values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// `SEGMENT_SEALED`, `SEGMENT_FRAME_UNORDERED`.
    pub flags: u32,
    /// frame_no of the first frame of the segment.
    pub start_frame_no: u64,
    /// frame_no of the last committed frame (sealed segments only).
    pub last_committed_frame_no: u64,
    /// Number of frames in the segment (sealed segments only).
    pub frame_count: u64,
    /// Size of the database in pages after the segment's last commit (sealed segments only).
    pub size_after: u32,
    /// Page size in bytes; always `PAGE_SIZE`.
    pub page_size: u32,
    /// Byte offset of the page index in the file (sealed segments only).
    pub index_offset: u64,
    /// Byte size of the page index (sealed segments only).
    pub index_size: u64,
    /// Seed of the frames' running checksum, random per segment.
    pub salt: u32,
    /// Identity of the log (the database history) this segment belongs to.
    pub log_id: Uuid,
    /// When the segment was sealed, in milliseconds since the Unix epoch; 0 while current.
    pub sealed_at_ms: u64,
}

impl SegmentHeader {
    /// Returns true if the `SEGMENT_SEALED` flag is set.
    pub fn is_sealed(&self) -> bool {
        self.flags & SEGMENT_SEALED != 0
    }

    /// Returns the header's bytes.
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_SIZE] {
        let mut buf = [0; SEGMENT_HEADER_SIZE];
        buf[12..16].copy_from_slice(&self.flags.to_le_bytes());
        buf[16..24].copy_from_slice(&self.start_frame_no.to_le_bytes());
        buf[24..32].copy_from_slice(&self.last_committed_frame_no.to_le_bytes());
        buf[32..40].copy_from_slice(&self.frame_count.to_le_bytes());
        buf[40..44].copy_from_slice(&self.size_after.to_le_bytes());
        buf[44..48].copy_from_slice(&self.page_size.to_le_bytes());
        buf[48..56].copy_from_slice(&self.index_offset.to_le_bytes());
        buf[56..64].copy_from_slice(&self.index_size.to_le_bytes());
        buf[64..68].copy_from_slice(&self.salt.to_le_bytes());
        buf[72..88].copy_from_slice(self.log_id.as_bytes());
        buf[88..96].copy_from_slice(&self.sealed_at_ms.to_le_bytes());
        seal_envelope(&mut buf, SEGMENT_MAGIC, SEGMENT_VERSION);
        buf
    }

    /// Decodes and validates a header read from the start of `path`.
    pub fn decode(buf: &[u8; SEGMENT_HEADER_SIZE], path: &Path) -> Result<Self> {
        check_envelope(buf, SEGMENT_MAGIC, SEGMENT_VERSION, path, 0)?;
        let header = SegmentHeader {
            flags: le_u32(buf, 12),
            start_frame_no: le_u64(buf, 16),
            last_committed_frame_no: le_u64(buf, 24),
            frame_count: le_u64(buf, 32),
            size_after: le_u32(buf, 40),
            page_size: le_u32(buf, 44),
            index_offset: le_u64(buf, 48),
            index_size: le_u64(buf, 56),
            salt: le_u32(buf, 64),
            log_id: uuid_at(buf, 72),
            sealed_at_ms: le_u64(buf, 88),
        };
        let bad = |what: String| Err(Error::corrupt(path, 0, what));
        if header.flags & !SEGMENT_KNOWN_FLAGS != 0 {
            return bad(format!("unknown segment flags {:#x}", header.flags));
        }
        if header.page_size as usize != PAGE_SIZE {
            return bad(format!("unsupported page size {}", header.page_size));
        }
        if header.start_frame_no == 0 {
            return bad("start_frame_no is 0 (frames are numbered from 1)".into());
        }
        Ok(header)
    }
}

/// Reads and validates the header at the start of the segment file `file` at `path`. A file
/// shorter than a header is corruption, not an I/O error.
pub(crate) fn read_header<F: FileExt>(file: &F, path: &Path) -> Result<SegmentHeader> {
    let mut buf = [0; SEGMENT_HEADER_SIZE];
    file.read_exact_at(&mut buf, 0).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            Error::corrupt(path, 0, "file is shorter than a segment header")
        } else {
            Error::io(path, e)
        }
    })?;
    SegmentHeader::decode(&buf, path)
}

/// The header of one frame, in a segment or in compacted data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Running checksum (see the module docs).
    pub checksum: u32,
    /// Database page this frame holds a version of (1-based).
    pub page_no: u32,
    /// In a segment: database size in pages after the transaction this frame commits, 0 when the
    /// frame is not the last of its transaction. In compacted data: always 0.
    pub size_after: u32,
    /// `FRAME_LAST` in compacted data; 0 in a segment.
    pub flags: u32,
    /// Position of this frame in the log.
    pub frame_no: u64,
}

impl FrameHeader {
    /// Returns true if this frame commits a transaction.
    pub fn is_commit(&self) -> bool {
        self.size_after != 0
    }

    /// Returns the header's bytes, with the checksum computed over the header fields and `page`
    /// continued from `previous`, and the checksum.
    pub fn encode(&self, previous: u32, page: &[u8]) -> ([u8; FRAME_HEADER_SIZE], u32) {
        let mut header = [0; FRAME_HEADER_SIZE];
        header[4..8].copy_from_slice(&self.page_no.to_le_bytes());
        header[8..12].copy_from_slice(&self.size_after.to_le_bytes());
        header[12..16].copy_from_slice(&self.flags.to_le_bytes());
        header[16..24].copy_from_slice(&self.frame_no.to_le_bytes());
        let mut hasher = crc32fast::Hasher::new_with_initial(previous);
        hasher.update(&header[4..]);
        hasher.update(page);
        let checksum = hasher.finalize();
        header[0..4].copy_from_slice(&checksum.to_le_bytes());
        (header, checksum)
    }

    /// Writes the header into the first `FRAME_HEADER_SIZE` bytes of `frame` (header and page),
    /// with the checksum continued from `previous`. Returns the checksum.
    pub fn write_with_checksum(&self, previous: u32, frame: &mut [u8]) -> u32 {
        let (header, page) = frame.split_at_mut(FRAME_HEADER_SIZE);
        let (encoded, checksum) = self.encode(previous, page);
        header.copy_from_slice(&encoded);
        checksum
    }

    /// Decodes the header at the start of `frame` without checking anything.
    pub fn decode(frame: &[u8]) -> Self {
        FrameHeader {
            checksum: le_u32(frame, 0),
            page_no: le_u32(frame, 4),
            size_after: le_u32(frame, 8),
            flags: le_u32(frame, 12),
            frame_no: le_u64(frame, 16),
        }
    }

    /// Decodes the frame in `frame` (header and page) and checks its checksum against the chain
    /// continued from `previous`. Returns `None` if the checksum does not match.
    pub fn decode_verified(previous: u32, frame: &[u8]) -> Option<Self> {
        let header = Self::decode(frame);
        (running_checksum(previous, &frame[4..]) == header.checksum).then_some(header)
    }
}

/// The header of a compacted segment: the storage format sent to backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactedHeader {
    /// Identity of the log the frames come from.
    pub log_id: Uuid,
    /// First frame_no covered by this compacted segment.
    pub start_frame_no: u64,
    /// Last frame_no covered (a commit frame of the original log).
    pub end_frame_no: u64,
    /// Database size in pages after `end_frame_no`.
    pub size_after: u32,
    /// Number of frames that follow (one per page, newest version).
    pub frame_count: u32,
    /// When the newest source segment was sealed, in milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
}

impl CompactedHeader {
    /// Returns the header's bytes.
    pub fn encode(&self) -> [u8; COMPACTED_HEADER_SIZE] {
        let mut buf = [0; COMPACTED_HEADER_SIZE];
        buf[16..32].copy_from_slice(self.log_id.as_bytes());
        buf[32..40].copy_from_slice(&self.start_frame_no.to_le_bytes());
        buf[40..48].copy_from_slice(&self.end_frame_no.to_le_bytes());
        buf[48..52].copy_from_slice(&self.size_after.to_le_bytes());
        buf[52..56].copy_from_slice(&self.frame_count.to_le_bytes());
        buf[56..64].copy_from_slice(&self.timestamp_ms.to_le_bytes());
        seal_envelope(&mut buf, COMPACTED_MAGIC, COMPACTED_VERSION);
        buf
    }

    /// Returns the CRC32 stored at the end of an encoded header: the seed of the frames' chain.
    pub fn checksum_seed(encoded: &[u8; COMPACTED_HEADER_SIZE]) -> u32 {
        le_u32(encoded, COMPACTED_HEADER_SIZE - 4)
    }

    /// Decodes and validates a header read from the start of `path`.
    pub fn decode(buf: &[u8; COMPACTED_HEADER_SIZE], path: &Path) -> Result<Self> {
        check_envelope(buf, COMPACTED_MAGIC, COMPACTED_VERSION, path, 0)?;
        let header = CompactedHeader {
            log_id: uuid_at(buf, 16),
            start_frame_no: le_u64(buf, 32),
            end_frame_no: le_u64(buf, 40),
            size_after: le_u32(buf, 48),
            frame_count: le_u32(buf, 52),
            timestamp_ms: le_u64(buf, 56),
        };
        let bad = |what: String| Err(Error::corrupt(path, 0, what));
        if header.start_frame_no == 0 || header.start_frame_no > header.end_frame_no {
            return bad(format!(
                "invalid frame range {}..={}",
                header.start_frame_no, header.end_frame_no
            ));
        }
        if u64::from(header.frame_count) > header.end_frame_no - header.start_frame_no + 1 {
            return bad(format!(
                "{} frames cannot come from frame range {}..={}",
                header.frame_count, header.start_frame_no, header.end_frame_no
            ));
        }
        Ok(header)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_segment_header() -> SegmentHeader {
        SegmentHeader {
            flags: SEGMENT_SEALED,
            start_frame_no: 42,
            last_committed_frame_no: 99,
            frame_count: 58,
            size_after: 1234,
            page_size: PAGE_SIZE as u32,
            index_offset: 7_000,
            index_size: 321,
            salt: 0xdead_beef,
            log_id: Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef),
            sealed_at_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn segment_header_round_trips() {
        let header = sample_segment_header();
        let decoded = SegmentHeader::decode(&header.encode(), Path::new("s")).unwrap();
        assert_eq!(decoded, header);
    }

    #[test]
    fn compacted_header_round_trips() {
        let header = CompactedHeader {
            log_id: Uuid::from_u128(7),
            start_frame_no: 1,
            end_frame_no: 500,
            size_after: 77,
            frame_count: 77,
            timestamp_ms: 123,
        };
        let decoded = CompactedHeader::decode(&header.encode(), Path::new("c")).unwrap();
        assert_eq!(decoded, header);
    }

    #[test]
    fn every_flipped_bit_of_a_segment_header_is_reported_as_corruption_at_offset_zero() {
        let encoded = sample_segment_header().encode();
        for bit in 0..SEGMENT_HEADER_SIZE * 8 {
            let mut bytes = encoded;
            bytes[bit / 8] ^= 1 << (bit % 8);
            let err = SegmentHeader::decode(&bytes, Path::new("seg-file")).unwrap_err();
            assert!(err.is_corruption(), "bit {bit}: {err}");
            assert!(err.to_string().contains("seg-file at offset 0"), "{err}");
        }
    }

    #[test]
    fn frame_header_round_trips_and_detects_a_changed_page() {
        let mut frame = vec![7u8; FRAME_SIZE];
        let header = FrameHeader {
            checksum: 0,
            page_no: 3,
            size_after: 10,
            flags: 0,
            frame_no: 17,
        };
        let checksum = header.write_with_checksum(99, &mut frame);
        let decoded = FrameHeader::decode_verified(99, &frame).unwrap();
        assert_eq!(decoded, FrameHeader { checksum, ..header });
        assert!(FrameHeader::decode_verified(98, &frame).is_none());
        frame[FRAME_SIZE - 1] ^= 1;
        assert!(FrameHeader::decode_verified(99, &frame).is_none());
    }
}
