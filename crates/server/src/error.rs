//! The server's errors: namespaces, storage, start-up and shutdown, each naming what failed.

use std::path::PathBuf;

use libsql_wal_backend::NamespaceName;

/// A server error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The namespace does not exist.
    #[error("Namespace `{0}` doesn't exist")]
    NamespaceNotFound(NamespaceName),
    /// The namespace exists already.
    #[error("Namespace `{0}` already exists")]
    NamespaceExists(NamespaceName),
    /// The namespace cannot do that now.
    #[error("namespace {namespace} is busy: {why}")]
    NamespaceBusy {
        /// The namespace.
        namespace: NamespaceName,
        /// Why.
        why: &'static str,
    },
    /// Too many requests wait for an SQL thread: the client should retry later.
    #[error("the server is overloaded: {waiting} requests wait for an SQL thread; retry later")]
    Overloaded {
        /// Requests waiting.
        waiting: usize,
        /// Threads free (none, or the pool is stopping).
        threads: usize,
    },
    /// A job on an SQL thread panicked (a bug; the server goes on).
    #[error("a request's job panicked on an SQL thread")]
    JobPanicked,
    /// A namespace name that `NamespaceName` refuses.
    #[error("invalid namespace name {name:?}: {why}")]
    InvalidNamespace {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        why: String,
    },
    /// Opening an SQLite connection failed.
    #[error("cannot open a connection on namespace {namespace}: {source}")]
    Connect {
        /// The namespace.
        namespace: NamespaceName,
        /// SQLite's error.
        #[source]
        source: libsql_sys::rusqlite::Error,
    },
    /// The WAL failed.
    #[error("namespace {namespace}: {source}")]
    Wal {
        /// The namespace.
        namespace: NamespaceName,
        /// The WAL's error.
        #[source]
        source: libsql_wal::Error,
    },
    /// A storage call failed.
    #[error("storage of namespace {namespace}: {source}")]
    Storage {
        /// The namespace.
        namespace: NamespaceName,
        /// The backend's error.
        #[source]
        source: libsql_wal_backend::Error,
    },
    /// The storage pipeline stopped.
    #[error("the storage pipeline stopped: {source}")]
    StorageStopped {
        /// The error.
        #[source]
        source: libsql_wal_backend::Error,
    },
    /// A file operation failed.
    #[error("i/o error on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Binding a listener failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A configuration that cannot work.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Starting a thread or runtime failed.
    #[error("cannot start {what}: {source}")]
    Start {
        /// What was starting.
        what: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The SQL threads stopped (the server is shutting down) or one panicked.
    #[error("the SQL threads stopped")]
    PoolStopped,
    /// The registry's shutdown failed for at least one namespace.
    #[error("shutting the namespaces down: {source}")]
    Shutdown {
        /// The first error.
        #[source]
        source: libsql_wal::Error,
    },
}

/// A server result.
pub type Result<T> = std::result::Result<T, Error>;
