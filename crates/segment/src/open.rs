//! Opening a segment file whose state is not known in advance (at start-up, when the WAL lists
//! its directory): sealed files are validated, an unsealed one is recovered.

use std::path::Path;

use crate::current::{CurrentSegment, RecoveryReport};
use crate::error::{Error, Result};
use crate::format::read_header;
use crate::io::{Io, OpenMode};
use crate::sealed::SealedSegment;

/// A segment file opened by `open_segment`.
#[derive(Debug)]
pub enum OpenedSegment<F> {
    /// The file was sealed and is whole.
    Sealed(SealedSegment<F>),
    /// The file was not sealed; it was recovered to its last commit.
    Current(CurrentSegment<F>, RecoveryReport),
}

/// Opens the segment at `path`: validates it if sealed, recovers it otherwise.
pub fn open_segment<I: Io>(io: &I, path: &Path) -> Result<OpenedSegment<I::File>> {
    let file = io
        .open(path, OpenMode::Read)
        .map_err(|e| Error::io(path, e))?;
    if read_header(&file, path)?.is_sealed() {
        Ok(OpenedSegment::Sealed(SealedSegment::from_file(file, path)?))
    } else {
        drop(file);
        let (segment, report) = CurrentSegment::recover(io, path)?;
        Ok(OpenedSegment::Current(segment, report))
    }
}
