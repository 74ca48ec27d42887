//! `libsql-wal-segment` owns every byte libsql-wal writes to disk: the segment file (a header,
//! frames chained by running CRC32 checksums, and once sealed an fst page index), the compacted
//! segment sent to object storage, crash recovery of the segment being written, and the `Io`
//! abstraction all file access goes through.
//!
//! Layers, lowest first: `format` and `index` (bytes), `scan` (validating frames in a file),
//! `current` / `sealed` / `compacted` (the three kinds of segment), `open` (start-up).
//!
//! Bad bytes never panic: every decoder returns `Error::Corrupt` (or `BadMagic`,
//! `UnsupportedVersion`) naming the file and the offset of the bad structure.

mod compacted;
mod current;
mod error;
pub mod fault;
pub mod format;
mod index;
mod io;
mod open;
mod scan;
mod sealed;

pub use compacted::{
    merge, merge_compacted, newest_versions, CompactedDecoder, CompactedReader, CompactedSegment,
    LocalCompacted,
};
pub use current::{CurrentSegment, FramePosition, RecoveryReport};
pub use error::{Error, Result};
pub use index::PageIndex;
pub use io::{create_dir_all_durably, FileExt, Io, OpenMode, StdIo};
pub use open::{open_segment, OpenedSegment};
pub use sealed::{Frame, Frames, SealedSegment};
