//! The error type of the supervisor crate: what can go wrong starting the pipeline. Storage
//! operations report `libsql_wal_backend::Error`, as the `Storage` trait says.

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Failures of the supervisor crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The storage thread, or the runtime its reads run on, could not be started.
    #[error("cannot start the storage thread or its read runtime: {source}")]
    StartThread {
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The storage thread ended before it handed out the supervisor.
    #[error("the storage thread stopped while starting")]
    StartAborted,
    /// The scratch directory for uploads cannot be created, checked or made private.
    #[error("cannot prepare the upload scratch directory {path}: {source}")]
    ScratchDir {
        /// The directory.
        path: std::path::PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The scratch directory exists but is not safe to use (see `StorageConfig::scratch_dir`).
    #[error("refusing the upload scratch directory {path}: {why}")]
    ScratchDirRefused {
        /// The directory.
        path: std::path::PathBuf,
        /// What is wrong with it.
        why: String,
    },
}
