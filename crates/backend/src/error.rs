//! The error type of the backend crate. Every backend maps its own failures (file system, S3
//! SDK) into it, so callers decide on one thing: retry (`Transient`), give up (`Fatal`), or
//! restore from elsewhere (`Corrupt`, `NotFound`).

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A boxed error from a backend's own stack.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything a backend or a `Storage` can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The object does not exist.
    #[error("object not found: {key}")]
    NotFound {
        /// The full object key (or path).
        key: String,
    },
    /// The object exists but its bytes are not valid.
    #[error("corrupt object {key}: {what}")]
    Corrupt {
        /// The full object key (or path).
        key: String,
        /// What was wrong.
        what: String,
    },
    /// The operation failed in a way that may succeed if retried (network, throttling, a full
    /// disk that may be freed).
    #[error("transient failure while {context}: {source}")]
    Transient {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: BoxError,
    },
    /// The operation cannot succeed as configured (bad credentials, missing bucket, invalid
    /// configuration).
    #[error("fatal failure while {context}: {source}")]
    Fatal {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: BoxError,
    },
    /// A namespace name that cannot be used in object keys.
    #[error("invalid namespace name {name:?}: {why}")]
    InvalidNamespace {
        /// The name given.
        name: String,
        /// Why it is refused.
        why: &'static str,
    },
    /// An object key or prefix that is not relative, `/`-separated, of non-empty components
    /// other than `.` and `..`, free of NUL and backslash: it could escape the backend's root or
    /// name one object two ways.
    #[error("invalid object key {key:?}: {why}")]
    InvalidKey {
        /// The key or prefix given.
        key: String,
        /// Why it is refused.
        why: &'static str,
    },
    /// The storage is shutting down and takes no new work.
    #[error("storage is shut down")]
    ShutDown,
    /// A writer of a generation that is no longer the newest: another writer took the
    /// namespace over (created generation `newer`), and this one must stop writing it.
    #[error("{generation} is fenced off: generation {newer} took the namespace over")]
    Fenced {
        /// The generation written to, as `{namespace} generation {number}`.
        generation: String,
        /// The newer generation's number (the new owner's writer epoch).
        newer: u64,
    },
}

impl Error {
    /// Returns a `Transient` error.
    pub fn transient(context: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::Transient {
            context: context.into(),
            source: source.into(),
        }
    }

    /// Returns a `Fatal` error.
    pub fn fatal(context: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::Fatal {
            context: context.into(),
            source: source.into(),
        }
    }

    /// Returns a `Corrupt` error for `key`.
    pub fn corrupt(key: impl Into<String>, what: impl Into<String>) -> Self {
        Error::Corrupt {
            key: key.into(),
            what: what.into(),
        }
    }

    /// Returns true if retrying the operation may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Transient { .. })
    }

    /// Maps an error of the segment crate met while handling object `key`: corruption stays
    /// corruption (naming the key), I/O failures are transient, misuse is fatal.
    pub fn from_segment(key: &str, error: libsql_wal_segment::Error) -> Self {
        if error.is_corruption() {
            Error::corrupt(key, error.to_string())
        } else if matches!(error, libsql_wal_segment::Error::Io { .. }) {
            Error::transient(format!("handling {key}"), error)
        } else {
            Error::fatal(format!("handling {key}"), error)
        }
    }
}
