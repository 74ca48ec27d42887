//! The error type of the segment crate: every variant names the file (or stream) it is about,
//! and corruption names the byte offset where the bad bytes were found.

use std::path::PathBuf;

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while writing or reading segments.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The operating system failed an I/O call on `path`.
    #[error("i/o error on {path}: {source}")]
    Io {
        /// The file the call was made on.
        path: PathBuf,
        /// The error the operating system returned.
        source: std::io::Error,
    },
    /// Bytes at `offset` of `path` are not what the format says they must be.
    #[error("corrupt data in {path} at offset {offset}: {what}")]
    Corrupt {
        /// The file (or stream name) holding the bad bytes.
        path: PathBuf,
        /// Byte offset of the structure that failed validation.
        offset: u64,
        /// What was wrong.
        what: String,
    },
    /// The magic number at `offset` of `path` does not name the expected structure.
    #[error("bad magic in {path} at offset {offset}: expected {expected:#x}, found {found:#x}")]
    BadMagic {
        /// The file (or stream name).
        path: PathBuf,
        /// Byte offset of the magic number.
        offset: u64,
        /// The magic number of the expected structure.
        expected: u64,
        /// The magic number found.
        found: u64,
    },
    /// The structure at `offset` of `path` has a format version this build cannot read.
    #[error("unsupported format version {found} in {path} at offset {offset} (this build reads version {supported})")]
    UnsupportedVersion {
        /// The file (or stream name).
        path: PathBuf,
        /// Byte offset of the structure.
        offset: u64,
        /// The version found.
        found: u32,
        /// The version this build reads and writes.
        supported: u32,
    },
    /// An operation was asked of a segment in a state that does not allow it.
    #[error("invalid operation on segment {path}: {what}")]
    InvalidState {
        /// The segment file.
        path: PathBuf,
        /// What was asked and why it cannot be done.
        what: String,
    },
    /// Segments given to a merge leave a gap, go backwards, or (sealed segments) overlap.
    #[error("segments to merge are not consecutive: {previous} ends at frame {previous_end}, {next} starts at frame {next_start}")]
    NotConsecutive {
        /// The earlier segment.
        previous: PathBuf,
        /// Its last frame_no.
        previous_end: u64,
        /// The later segment.
        next: PathBuf,
        /// Its first frame_no.
        next_start: u64,
    },
}

impl Error {
    /// Returns an `Io` error for `path`.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// Returns a `Corrupt` error for `path` at `offset`.
    pub(crate) fn corrupt(path: impl Into<PathBuf>, offset: u64, what: impl Into<String>) -> Self {
        Error::Corrupt {
            path: path.into(),
            offset,
            what: what.into(),
        }
    }

    /// Returns an `InvalidState` error for `path`.
    pub(crate) fn invalid_state(path: impl Into<PathBuf>, what: impl Into<String>) -> Self {
        Error::InvalidState {
            path: path.into(),
            what: what.into(),
        }
    }

    /// Returns true when the error says stored bytes are bad (as opposed to an I/O failure or a
    /// misuse): the caller should not retry, the data must be restored from elsewhere.
    pub fn is_corruption(&self) -> bool {
        matches!(
            self,
            Error::Corrupt { .. } | Error::BadMagic { .. } | Error::UnsupportedVersion { .. }
        )
    }
}
