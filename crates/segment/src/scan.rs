//! Reads the frames of a segment file in order and checks each one: its running checksum, its
//! frame_no, its page_no and flags. Shared by crash recovery (which stops at the first bad frame)
//! and by opening a sealed segment (where any bad frame is corruption).

use std::path::Path;

use crate::error::{Error, Result};
use crate::format::{
    FrameHeader, SegmentHeader, FRAME_SIZE, SEGMENT_FRAME_UNORDERED, SEGMENT_HEADER_SIZE,
};
use crate::io::FileExt;

/// Frames read per `pread` while scanning: 256 frames, about 1 MiB.
const SCAN_CHUNK_FRAMES: usize = 256;

/// What the segment keeps in memory about each frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameMeta {
    /// Position of the frame in the log.
    pub frame_no: u64,
    /// Page the frame holds.
    pub page_no: u32,
    /// The frame's running checksum (the seed of the next frame's).
    pub checksum: u32,
}

/// Why a scan stopped before the end of the range it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ScanStop {
    /// Byte offset of the frame that could not be accepted.
    pub offset: u64,
    /// What was wrong with it.
    pub what: String,
}

/// The result of scanning a segment's frames.
#[derive(Debug, Default)]
pub(crate) struct FrameScan {
    /// Every valid frame, in file order, up to the first invalid one.
    pub frames: Vec<FrameMeta>,
    /// Number of leading frames that end with a commit frame.
    pub committed: usize,
    /// Database size after the last commit (0 when nothing is committed).
    pub size_after: u32,
    /// Set when the scan met an invalid or incomplete frame before `end`.
    pub stop: Option<ScanStop>,
}

/// Returns the byte offset of the frame at `position`.
pub(crate) fn frame_offset(position: usize) -> u64 {
    (SEGMENT_HEADER_SIZE + position * FRAME_SIZE) as u64
}

/// Scans the frames of `file` between the end of the header and `end` (exclusive).
/// I/O errors fail the scan; invalid frames stop it (see `FrameScan::stop`).
pub(crate) fn scan_frames<F: FileExt>(
    file: &F,
    path: &Path,
    header: &SegmentHeader,
    end: u64,
) -> Result<FrameScan> {
    let unordered = header.flags & SEGMENT_FRAME_UNORDERED != 0;
    let mut scan = FrameScan::default();
    let mut previous = header.salt;
    let mut buf = vec![0; SCAN_CHUNK_FRAMES * FRAME_SIZE];
    let mut offset = SEGMENT_HEADER_SIZE as u64;
    loop {
        let complete = (end.saturating_sub(offset) / FRAME_SIZE as u64) as usize;
        let count = complete.min(SCAN_CHUNK_FRAMES);
        if count == 0 {
            if offset < end {
                scan.stop = Some(ScanStop {
                    offset,
                    what: format!("incomplete frame ({} bytes)", end - offset),
                });
            }
            return Ok(scan);
        }
        let chunk = &mut buf[..count * FRAME_SIZE];
        file.read_exact_at(chunk, offset)
            .map_err(|e| Error::io(path, e))?;
        for frame in chunk.chunks_exact(FRAME_SIZE) {
            let expected_frame_no = match scan.frames.last() {
                Some(last) => last.frame_no.checked_add(1),
                None => Some(header.start_frame_no),
            };
            let checked = match (
                FrameHeader::decode_verified(previous, frame),
                expected_frame_no,
            ) {
                (None, _) => Err("frame checksum mismatch".to_string()),
                (Some(_), None) => Err("frame numbers are exhausted".to_string()),
                (Some(h), Some(expected)) => check_frame(&h, expected, unordered).map(|()| h),
            };
            let h = match checked {
                Ok(h) => h,
                Err(what) => {
                    scan.stop = Some(ScanStop { offset, what });
                    return Ok(scan);
                }
            };
            scan.frames.push(FrameMeta {
                frame_no: h.frame_no,
                page_no: h.page_no,
                checksum: h.checksum,
            });
            if h.is_commit() {
                scan.committed = scan.frames.len();
                scan.size_after = h.size_after;
            }
            previous = h.checksum;
            offset += FRAME_SIZE as u64;
        }
    }
}

/// Checks a frame whose checksum is valid: its page, flags and frame_no (`expected` is the
/// frame_no that follows the previous frame).
fn check_frame(h: &FrameHeader, expected: u64, unordered: bool) -> Result<(), String> {
    if h.page_no == 0 {
        return Err("frame holds page 0".into());
    }
    if h.flags != 0 {
        return Err(format!("unknown frame flags {:#x}", h.flags));
    }
    if !unordered && h.frame_no != expected {
        return Err(format!(
            "frame_no {} where {expected} was expected",
            h.frame_no
        ));
    }
    if unordered && h.frame_no < expected {
        return Err(format!(
            "frame_no {} does not follow frame_no {}",
            h.frame_no,
            expected - 1
        ));
    }
    Ok(())
}
