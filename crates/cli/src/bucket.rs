//! Opening the durable storage the flags name, for `run` and the operator commands alike: a
//! directory (the fs backend) or S3. The backend trait is generic (not object-safe), so a
//! command is handed the backend through `OnBackend`, once per backend type.

use std::path::Path;
use std::process::ExitCode;

use libsql_wal_backend::{Backend, FsBackend, S3Backend, S3Options};

use crate::output::USAGE;
use crate::settings::{BucketArgs, StorageArgs, StorageLocation};

/// A command that runs on whichever backend the storage flags name.
pub trait OnBackend {
    /// Runs on `backend` (at `location`), with `runtime` for its futures.
    fn run<B: Backend>(
        self,
        backend: B,
        location: &StorageLocation,
        runtime: tokio::runtime::Runtime,
    ) -> ExitCode;
}

/// Whether a directory bucket that does not exist yet is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// Made (the server, which fills it).
    Create,
    /// A configuration error (the operator commands, which read it: a wrong path must not look
    /// like an empty bucket).
    Refuse,
    /// A configuration error, and a directory that exists is opened only to read: nothing is
    /// made or removed in it (`FsBackend::reading`: a primary's bucket a replica reads).
    ReadOnly,
}

/// Opens the storage `storage` names (the default: `{data_dir}/bucket`) and runs `job` on it.
/// A bad flag, or a directory bucket that is missing when `missing` refuses it, exits 2; a
/// bucket that cannot be reached exits 1.
pub fn with_backend<J: OnBackend>(
    storage: &StorageArgs,
    data_dir: &Path,
    missing: Missing,
    job: J,
) -> ExitCode {
    let location = match storage.location(data_dir) {
        Ok(location) => location,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(USAGE);
        }
    };
    let runtime = match io_runtime() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match open_backend(&location, storage, missing, &runtime) {
        Ok(OpenedBackend::Fs(backend)) => job.run(backend, &location, runtime),
        Ok(OpenedBackend::S3(backend)) => job.run(backend, &location, runtime),
        Err(e) => {
            eprintln!("error: {}", e.message);
            e.code
        }
    }
}

/// The runtime a backend's futures run on.
pub fn io_runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("libsql-wal-io")
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the I/O runtime: {e}"))
}

/// A backend opened, of the kind its location names.
pub enum OpenedBackend {
    /// A directory.
    Fs(FsBackend),
    /// S3.
    S3(S3Backend),
}

/// Why a backend could not be opened, and the exit code that says so.
#[derive(Debug)]
pub struct OpenFailure {
    /// `USAGE` for a configuration error, else a failure.
    pub code: ExitCode,
    /// What is wrong.
    pub message: String,
}

/// Opens the backend at `location` (S3 with the endpoint and region of `storage`) on
/// `runtime`; a directory bucket that is missing when `missing` refuses it is a usage error.
pub fn open_backend(
    location: &StorageLocation,
    storage: &StorageArgs,
    missing: Missing,
    runtime: &tokio::runtime::Runtime,
) -> Result<OpenedBackend, OpenFailure> {
    let failure = |message: String| OpenFailure {
        code: ExitCode::FAILURE,
        message,
    };
    match location {
        StorageLocation::Fs(path) => {
            if missing != Missing::Create && !path.is_dir() {
                let hint = match missing {
                    Missing::Refuse => {
                        " (set --storage, or --data-dir to the server's data directory)"
                    }
                    _ => "",
                };
                return Err(OpenFailure {
                    code: ExitCode::from(USAGE),
                    message: format!("there is no bucket directory at {}{hint}", path.display()),
                });
            }
            let opened = runtime.block_on(async {
                match missing {
                    Missing::ReadOnly => FsBackend::reading(path.clone()).await,
                    _ => FsBackend::new(path.clone()).await,
                }
            });
            opened.map(OpenedBackend::Fs).map_err(|e| {
                failure(format!(
                    "cannot open the storage directory {}: {e}",
                    path.display()
                ))
            })
        }
        StorageLocation::S3 { bucket, prefix } => {
            let mut options = S3Options::new(bucket.clone(), prefix.clone());
            options.endpoint = storage.s3_endpoint.clone();
            options.region = storage.s3_region.clone();
            runtime
                .block_on(S3Backend::new(options))
                .map(OpenedBackend::S3)
                .map_err(|e| failure(format!("cannot reach the S3 storage {location}: {e}")))
        }
    }
}

impl BucketArgs {
    /// Runs `job` on the bucket these flags name, which must exist (see `with_backend`).
    pub fn run<J: OnBackend>(&self, job: J) -> ExitCode {
        with_backend(&self.storage, &self.data_dir, Missing::Refuse, job)
    }
}
