//! Opening a segment file whose state is not known in advance (at start-up, when the WAL lists
//! its directory): sealed files are validated, an unsealed one is recovered; a sealed one that
//! does not validate and an empty one are reported for the caller to judge.

use std::path::Path;

use crate::current::{end_of_nonzero_bytes, CurrentSegment, RecoveryReport};
use crate::error::{Error, Result};
use crate::format::{read_header, SEGMENT_HEADER_SIZE};
use crate::io::{FileExt, Io, OpenMode};
use crate::sealed::SealedSegment;

/// A segment file opened by `open_segment`.
#[derive(Debug)]
pub enum OpenedSegment<F> {
    /// The file was sealed and is whole.
    Sealed(SealedSegment<F>),
    /// The file was not sealed; it was recovered to its last commit.
    Current(CurrentSegment<F>, RecoveryReport),
    /// The file holds nothing: it is shorter than a header, or every byte of it is zero.
    /// What `CurrentSegment::create_unsynced` leaves when a crash comes before the header is
    /// durable: the segment never held a durable frame. The caller decides whether that is
    /// possible where the file is (only the newest segment of a log can be so).
    Unwritten,
    /// The header says sealed but the file does not validate (the error says where). Nothing
    /// was written. A seal cut short leaves this (see `CurrentSegment::seal`), but only on the
    /// segment sealed last, which no frame follows; anywhere else it is corruption. The caller
    /// decides, and recovers a seal cut short with `CurrentSegment::recover_torn_seal`.
    TornSeal(Error),
}

/// Opens the segment at `path`: validates it if sealed, recovers it otherwise.
pub fn open_segment<I: Io>(io: &I, path: &Path) -> Result<OpenedSegment<I::File>> {
    let file = io
        .open(path, OpenMode::Read)
        .map_err(|e| Error::io(path, e))?;
    if holds_no_header(&file, path)? {
        return Ok(OpenedSegment::Unwritten);
    }
    if read_header(&file, path)?.is_sealed() {
        match SealedSegment::from_file(file, path) {
            Ok(sealed) => Ok(OpenedSegment::Sealed(sealed)),
            Err(e) if e.is_corruption() => Ok(OpenedSegment::TornSeal(e)),
            Err(e) => Err(e),
        }
    } else {
        drop(file);
        let (segment, report) = CurrentSegment::recover(io, path)?;
        Ok(OpenedSegment::Current(segment, report))
    }
}

/// Returns true if `file` is shorter than a segment header (no frame can follow a header that
/// was never whole) or every byte of it is zero. A zeroed header with bytes after it is not
/// taken for an unwritten segment: the frames may be durable, and reading it fails instead.
fn holds_no_header<F: FileExt>(file: &F, path: &Path) -> Result<bool> {
    let len = file.size().map_err(|e| Error::io(path, e))?;
    if len < SEGMENT_HEADER_SIZE as u64 {
        return Ok(true);
    }
    let mut header = [0; SEGMENT_HEADER_SIZE];
    file.read_exact_at(&mut header, 0)
        .map_err(|e| Error::io(path, e))?;
    if header.iter().any(|&b| b != 0) {
        return Ok(false);
    }
    let header_end = SEGMENT_HEADER_SIZE as u64;
    Ok(end_of_nonzero_bytes(file, path, header_end, len)? == header_end)
}
