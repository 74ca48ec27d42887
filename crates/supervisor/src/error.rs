//! The error type of the supervisor crate: what can go wrong starting the pipeline. Storage
//! operations report `libsql_wal_backend::Error`, as the `Storage` trait says.

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Failures of the supervisor crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The storage thread could not be started.
    #[error("cannot start the storage thread: {source}")]
    StartThread {
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The storage thread ended before it handed out the supervisor.
    #[error("the storage thread stopped while starting")]
    StartAborted,
    /// The scratch directory for uploads cannot be created.
    #[error("cannot create the upload scratch directory {path}: {source}")]
    ScratchDir {
        /// The directory.
        path: std::path::PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
}
