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
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("libsql-wal-io")
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the I/O runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match &location {
        StorageLocation::Fs(path) => {
            if missing == Missing::Refuse && !path.is_dir() {
                eprintln!(
                    "error: there is no bucket directory at {} (set --storage, or --data-dir to the server's data directory)",
                    path.display()
                );
                return ExitCode::from(USAGE);
            }
            match runtime.block_on(FsBackend::new(path.clone())) {
                Ok(backend) => job.run(backend, &location, runtime),
                Err(e) => {
                    eprintln!(
                        "error: cannot open the storage directory {}: {e}",
                        path.display()
                    );
                    ExitCode::FAILURE
                }
            }
        }
        StorageLocation::S3 { bucket, prefix } => {
            let mut options = S3Options::new(bucket.clone(), prefix.clone());
            options.endpoint = storage.s3_endpoint.clone();
            options.region = storage.s3_region.clone();
            match runtime.block_on(S3Backend::new(options)) {
                Ok(backend) => job.run(backend, &location, runtime),
                Err(e) => {
                    eprintln!("error: cannot reach the S3 storage {location}: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

impl BucketArgs {
    /// Runs `job` on the bucket these flags name, which must exist (see `with_backend`).
    pub fn run<J: OnBackend>(&self, job: J) -> ExitCode {
        with_backend(&self.storage, &self.data_dir, Missing::Refuse, job)
    }
}
