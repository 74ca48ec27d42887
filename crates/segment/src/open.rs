//! Opening a segment file whose state is not known in advance (at start-up, when the WAL lists
//! its directory): sealed files are validated, an unsealed one is recovered, and so is a sealed
//! one that does not validate (a seal cut short, see `CurrentSegment::seal`).

use std::path::Path;

use crate::current::{CurrentSegment, RecoveryReport};
use crate::error::{Error, Result};
use crate::format::{read_header, SEGMENT_HEADER_SIZE};
use crate::io::{FileExt, Io, OpenMode};
use crate::sealed::SealedSegment;
use tracing::warn;

/// A segment file opened by `open_segment`.
#[derive(Debug)]
pub enum OpenedSegment<F> {
    /// The file was sealed and is whole.
    Sealed(SealedSegment<F>),
    /// The file was not sealed; it was recovered to its last commit.
    Current(CurrentSegment<F>, RecoveryReport),
    /// The file holds no header: it is shorter than one, or the header's bytes are all zero.
    /// What `CurrentSegment::create_unsynced` leaves when a crash comes before the header is
    /// durable: the segment never held a durable frame. The caller decides whether that is
    /// possible where the file is (only the newest segment of a log can be so).
    Unwritten,
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
            // A seal cut short (its one fsync never returned) can leave a sealed header over a
            // partial index or partial frames: what it holds is recovered like a current one.
            Err(e) if e.is_corruption() => {
                warn!(path = %path.display(), error = %e, "a sealed segment does not validate; recovering its frames as a current segment");
                let (segment, report) = CurrentSegment::recover_torn_seal(io, path)?;
                Ok(OpenedSegment::Current(segment, report))
            }
            Err(e) => Err(e),
        }
    } else {
        drop(file);
        let (segment, report) = CurrentSegment::recover(io, path)?;
        Ok(OpenedSegment::Current(segment, report))
    }
}

/// Returns true if `file` is shorter than a segment header or its header bytes are all zero.
fn holds_no_header<F: FileExt>(file: &F, path: &Path) -> Result<bool> {
    let len = file.size().map_err(|e| Error::io(path, e))?;
    if len < SEGMENT_HEADER_SIZE as u64 {
        return Ok(true);
    }
    let mut header = [0; SEGMENT_HEADER_SIZE];
    file.read_exact_at(&mut header, 0)
        .map_err(|e| Error::io(path, e))?;
    Ok(header.iter().all(|&b| b == 0))
}
