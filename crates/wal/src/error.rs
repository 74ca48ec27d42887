//! The error type of the WAL crate, and how each error is reported to SQLite (as a result code)
//! when it crosses the virtual WAL boundary.

use std::path::PathBuf;

use libsql_sys::ffi;
use libsql_wal_backend::NamespaceName;

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything the WAL can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A segment operation failed.
    #[error("namespace {namespace}: {source}")]
    Segment {
        /// The namespace whose log it is.
        namespace: NamespaceName,
        /// What the segment crate reported.
        source: libsql_wal_segment::Error,
    },
    /// Durable storage failed.
    #[error("namespace {namespace}: storage: {source}")]
    Storage {
        /// The namespace.
        namespace: NamespaceName,
        /// What the storage reported.
        source: libsql_wal_backend::Error,
    },
    /// A database path from which no namespace can be derived.
    #[error("cannot derive a namespace from database path {path}: {why}")]
    NamespaceFromPath {
        /// The path SQLite opened.
        path: PathBuf,
        /// Why it does not name a namespace.
        why: String,
    },
    /// A file-system call failed outside a segment (the database file, the segment directory).
    #[error("i/o error on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// Another writer holds the namespace's write lock, or a newer commit makes this
    /// connection's snapshot stale.
    #[error("namespace {namespace} is busy: {why}")]
    Busy {
        /// The namespace.
        namespace: NamespaceName,
        /// Why.
        why: &'static str,
        /// True when the connection's snapshot is stale (SQLITE_BUSY_SNAPSHOT).
        stale_snapshot: bool,
    },
    /// A write on a read replica: writes go to its primary.
    #[error("namespace {namespace} is a read replica: writes go to its primary")]
    ReadOnlyReplica {
        /// The namespace.
        namespace: NamespaceName,
    },
    /// A replication step could not be served or applied.
    #[error("namespace {namespace}: replication: {why}")]
    Replication {
        /// The namespace.
        namespace: NamespaceName,
        /// What is wrong.
        why: String,
    },
    /// A replica asked for the frames after `after` without a full image, and the log no
    /// longer holds them all (they were checkpointed away): it catches up from storage first.
    #[error("namespace {namespace}: the log no longer holds the frames after {after} (its oldest is {oldest_held}); catch up from storage, or take a full image")]
    NotHeld {
        /// The namespace.
        namespace: NamespaceName,
        /// The frame_no the replica is at.
        after: u64,
        /// The oldest frame_no the log holds.
        oldest_held: u64,
    },
    /// Work the caller asked to stop (a replica's catch-up, when the replica stops) ended
    /// before it was done; nothing of it was applied.
    #[error("namespace {namespace}: stopped before it was done")]
    Stopped {
        /// The namespace.
        namespace: NamespaceName,
    },
    /// The log was closed (idle, deleted, shut down) before it could be used; opening the
    /// namespace again gives its new log.
    #[error("namespace {namespace}: its log was closed; open it again")]
    Closed {
        /// The namespace.
        namespace: NamespaceName,
    },
    /// SQLite asked for something this WAL does not support.
    #[error("namespace {namespace}: unsupported: {what}")]
    Unsupported {
        /// The namespace.
        namespace: NamespaceName,
        /// What was asked.
        what: String,
    },
    /// Waiting for segments to become durable took too long.
    #[error("namespace {namespace}: gave up after {waited_ms} ms waiting for frame {frame_no} to be durable (durable: {durable_frame_no})")]
    DurableTimeout {
        /// The namespace.
        namespace: NamespaceName,
        /// The frame that had to become durable.
        frame_no: u64,
        /// The durable frame_no when giving up.
        durable_frame_no: u64,
        /// How long it waited.
        waited_ms: u64,
    },
    /// A restore's destination already exists; a restore never overwrites a file.
    #[error("restore destination {path} already exists")]
    DestinationExists {
        /// The destination.
        path: PathBuf,
    },
    /// Storage holds no point to restore at or before the target.
    #[error("namespace {namespace}: nothing stored to restore at or before {target}")]
    NothingToRestore {
        /// The namespace.
        namespace: NamespaceName,
        /// The target asked for.
        target: String,
    },
    /// The namespace's local log ends before what storage holds: another machine wrote it
    /// since. Remove the local files to take storage's state (it is restored on open), or
    /// restore elsewhere and reconcile.
    #[error(
        "namespace {namespace}: the local log ends at frame {local_frame_no} but storage holds frames up to {durable_frame_no}, written elsewhere since; remove the local files to take storage's state"
    )]
    BehindStorage {
        /// The namespace.
        namespace: NamespaceName,
        /// The last committed frame of the local log.
        local_frame_no: u64,
        /// The last frame in storage.
        durable_frame_no: u64,
    },
    /// Another writer took the namespace over: storage holds a generation newer than this
    /// log's. The log takes no writes (reads go on); the new owner's generation is `newer`.
    #[error("namespace {namespace}: read-only: generation {generation} written here was fenced off by generation {newer}, which took the namespace over")]
    Fenced {
        /// The namespace.
        namespace: NamespaceName,
        /// This log's generation.
        generation: u64,
        /// The newer generation (the new owner's writer epoch).
        newer: u64,
    },
    /// The local log belongs to a generation that a newer one replaced (another machine took
    /// the namespace over) and holds frames the newer history may not have: it is not opened,
    /// so that two histories are never mixed. Move the local files away to take the newest
    /// history from storage (restore the local files elsewhere to look at what only they hold).
    #[error("namespace {namespace}: the local log (generation {local_generation}, up to frame {local_frame_no}) was superseded by generation {newest_generation} in storage; move the local files away to take the newest history")]
    Superseded {
        /// The namespace.
        namespace: NamespaceName,
        /// The local log's generation (0 when it had none yet).
        local_generation: u64,
        /// The last frame the local log holds.
        local_frame_no: u64,
        /// The newest generation in storage.
        newest_generation: u64,
    },
    /// Opening the namespace would claim it in storage (restore it, take it over from the
    /// writer before, or start a generation of its own), and the registry may not
    /// (`RegistryConfig::may_claim` is false: an operator's tool beside the server that owns it).
    #[error("namespace {namespace}: opening it would {what}, and this registry opens only logs that go on where they left off")]
    WouldClaim {
        /// The namespace.
        namespace: NamespaceName,
        /// What the open would do.
        what: &'static str,
    },
    /// The local database and storage hold different logs of one namespace, so the local one
    /// cannot catch up from storage.
    #[error(
        "namespace {namespace}: the local database is of log {local}, storage holds log {stored}"
    )]
    OtherLog {
        /// The namespace.
        namespace: NamespaceName,
        /// The local database's log.
        local: uuid::Uuid,
        /// The log in storage.
        stored: uuid::Uuid,
    },
    /// A seal of the namespace's current segment failed part way (an fsync or a write of the
    /// index or header), or a commit's fsync failed: the segment file's state is unknown, so the
    /// log takes no more writes until it is opened again from disk, where recovery decides what
    /// the file holds. Reads go on. Committed frames are not lost: they are in the segment file.
    #[error("namespace {namespace}: the log takes no writes since a seal failed ({why}); close every connection so that it is opened again from disk")]
    Poisoned {
        /// The namespace.
        namespace: NamespaceName,
        /// The failure.
        why: String,
    },
    /// The segment files of a namespace do not follow each other (a segment starts elsewhere
    /// than right after the previous one ends) and the one out of place holds frames.
    #[error("namespace {namespace}: segment {path} starts at frame {start_frame_no}, but the log before it ends at frame {previous_end}")]
    Discontiguous {
        /// The namespace.
        namespace: NamespaceName,
        /// The segment out of place.
        path: PathBuf,
        /// Its first frame.
        start_frame_no: u64,
        /// The last frame before it (the previous segment's, or the database file's).
        previous_end: u64,
    },
    /// A segment file holds no header although later segments follow it: it lost what a crash
    /// can only take from the newest one.
    #[error("namespace {namespace}: segment {path} holds no header, but later segments follow it")]
    UnwrittenSegment {
        /// The namespace.
        namespace: NamespaceName,
        /// The segment file.
        path: PathBuf,
    },
    /// A namespace open for one database file was asked for another: two files never share a
    /// log.
    #[error("namespace {namespace} is open for {open_path}, not for {other_path}: a database file needs a namespace of its own")]
    PathConflict {
        /// The namespace.
        namespace: NamespaceName,
        /// The file its log is open for.
        open_path: PathBuf,
        /// The other file.
        other_path: PathBuf,
    },
    /// The registry was shut down: it opens no namespace any more.
    #[error("cannot open {path}: the WAL registry is shut down")]
    RegistryShutDown {
        /// The database file asked for.
        path: PathBuf,
    },
    /// Another writer claimed the generation number a rewind was claiming.
    #[error("namespace {namespace}: generation {generation} was claimed by another writer during the rewind; nothing changed here, try again")]
    ClaimConflict {
        /// The namespace.
        namespace: NamespaceName,
        /// The generation number claimed meanwhile.
        generation: u64,
    },
    /// Frames between frame 1 and the restore's end point are in no stored segment.
    #[error("namespace {namespace}: cannot restore: {source}")]
    MissingFrames {
        /// The namespace.
        namespace: NamespaceName,
        /// The gap.
        source: libsql_wal_backend::MissingFrames,
    },
}

impl Error {
    /// Returns the SQLite result code that reports this error.
    pub fn sqlite_code(&self) -> i32 {
        match self {
            Error::Segment { source, .. } if source.is_corruption() => ffi::SQLITE_CORRUPT,
            Error::Segment { .. } | Error::Io { .. } | Error::Storage { .. } => ffi::SQLITE_IOERR,
            Error::Busy {
                stale_snapshot: true,
                ..
            } => ffi::SQLITE_BUSY_SNAPSHOT,
            Error::Busy { .. } => ffi::SQLITE_BUSY,
            Error::NamespaceFromPath { .. } => ffi::SQLITE_CANTOPEN,
            Error::Unsupported { .. } => ffi::SQLITE_MISUSE,
            Error::Replication { .. } | Error::NotHeld { .. } | Error::Stopped { .. } => {
                ffi::SQLITE_IOERR
            }
            Error::ReadOnlyReplica { .. } => ffi::SQLITE_READONLY,
            Error::DurableTimeout { .. } => ffi::SQLITE_IOERR,
            Error::DestinationExists { .. } => ffi::SQLITE_CANTOPEN,
            Error::NothingToRestore { .. } | Error::MissingFrames { .. } => ffi::SQLITE_IOERR,
            Error::OtherLog { .. }
            | Error::BehindStorage { .. }
            | Error::Superseded { .. }
            | Error::WouldClaim { .. } => ffi::SQLITE_CANTOPEN,
            Error::ClaimConflict { .. } => ffi::SQLITE_BUSY,
            Error::Fenced { .. } => ffi::SQLITE_READONLY,
            Error::Poisoned { .. } | Error::Closed { .. } => ffi::SQLITE_IOERR,
            Error::PathConflict { .. } | Error::RegistryShutDown { .. } => ffi::SQLITE_CANTOPEN,
            Error::Discontiguous { .. } | Error::UnwrittenSegment { .. } => ffi::SQLITE_CORRUPT,
        }
    }

    /// Returns the conversion of an I/O error met on `path` into `Error::Io`.
    pub(crate) fn io(path: &std::path::Path) -> impl Fn(std::io::Error) -> Error + Copy + '_ {
        move |source| Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// Returns the conversion of an error of `namespace`'s segments into `Error::Segment`.
    pub(crate) fn segment(
        namespace: &NamespaceName,
    ) -> impl Fn(libsql_wal_segment::Error) -> Error + Copy + '_ {
        move |source| Error::Segment {
            namespace: namespace.clone(),
            source,
        }
    }

    /// Converts into the error type of the virtual WAL API, logging what it hides.
    pub(crate) fn into_sqlite(self) -> libsql_sys::wal::Error {
        tracing::warn!(error = %self, "reporting a WAL error to SQLite");
        libsql_sys::wal::Error::new(self.sqlite_code())
    }
}
