//! `Scratch`: the local files of one storage instance in the scratch directory (compacted
//! uploads too large for memory, and each maintenance pass's working directory).
//!
//! The directory may be shared by every storage of a process and every process of a host, so:
//! - Every name this instance makes starts with its own random id (a uuid), followed by ids
//!   only (the job id, the pass number), never a namespace's name: names are unique per
//!   instance and short whatever the namespace (a valid name may be 255 bytes, `NAME_MAX`).
//! - Files are created new (`O_CREAT | O_EXCL`): an existing file is never truncated or
//!   written through.
//! - This instance removes only what it created: each file or directory is held by a guard
//!   that removes it when the work is done, or when the work is dropped (a panic, a force
//!   shutdown). What a crashed process left behind is left to the operator; no other instance
//!   can tell it from a live one's.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use tracing::warn;

/// The scratch directory, as one storage instance uses it.
#[derive(Debug)]
pub(crate) struct Scratch {
    /// The directory.
    dir: PathBuf,
    /// This instance's id: the start of every name it makes.
    instance: String,
    /// Maintenance passes started, for their directories' names.
    passes: AtomicU64,
}

impl Scratch {
    /// Returns the scratch directory `dir` for a new instance, creating the directory.
    pub(crate) fn open(dir: &Path) -> crate::Result<Self> {
        std::fs::create_dir_all(dir).map_err(|source| crate::Error::ScratchDir {
            path: dir.to_path_buf(),
            source,
        })?;
        Ok(Scratch {
            dir: dir.to_path_buf(),
            instance: uuid::Uuid::new_v4().simple().to_string(),
            passes: AtomicU64::new(0),
        })
    }

    /// Returns the path of job `job`'s compacted upload: `{instance}-{job}.upload`.
    pub(crate) fn upload_path(&self, job: u64) -> PathBuf {
        self.dir.join(format!("{}-{job}.upload", self.instance))
    }

    /// Creates the file for job `job`'s compacted upload (it must not exist), and returns it
    /// with the guard that removes it.
    pub(crate) fn create_upload_file(&self, job: u64) -> std::io::Result<(File, ScratchFile)> {
        let path = self.upload_path(job);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        Ok((file, ScratchFile { path, armed: true }))
    }

    /// Creates a new working directory for a maintenance pass,
    /// `{instance}-maintenance-{pass}`, and returns the guard that removes it.
    pub(crate) fn create_maintenance_dir(&self) -> std::io::Result<ScratchDir> {
        let pass = self.passes.fetch_add(1, Ordering::Relaxed);
        let path = self
            .dir
            .join(format!("{}-maintenance-{pass}", self.instance));
        // `create_dir`, not `create_dir_all`: an existing directory is an error, not reused.
        std::fs::create_dir(&path)?;
        Ok(ScratchDir { path, armed: true })
    }
}

/// A scratch file this instance created: removed by `remove`, or when dropped.
#[derive(Debug)]
pub(crate) struct ScratchFile {
    path: PathBuf,
    /// False once removed.
    armed: bool,
}

impl ScratchFile {
    /// Returns the file's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the file (off the async thread).
    pub(crate) async fn remove(mut self) {
        self.armed = false;
        if let Err(e) = tokio::fs::remove_file(&self.path).await {
            warn!(path = %self.path.display(), error = %e, "cannot remove a scratch file");
        }
    }
}

impl Drop for ScratchFile {
    fn drop(&mut self) {
        // Only when the work was dropped or failed before `remove`: one unlink.
        if self.armed {
            if let Err(e) = std::fs::remove_file(&self.path) {
                warn!(path = %self.path.display(), error = %e, "cannot remove a scratch file");
            }
        }
    }
}

/// A scratch directory this instance created: removed with its contents by `remove`, or when
/// dropped.
#[derive(Debug)]
pub(crate) struct ScratchDir {
    path: PathBuf,
    /// False once removed.
    armed: bool,
}

impl ScratchDir {
    /// Returns the directory's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the directory and what is in it (off the async thread).
    pub(crate) async fn remove(mut self) {
        self.armed = false;
        if let Err(e) = tokio::fs::remove_dir_all(&self.path).await {
            warn!(path = %self.path.display(), error = %e, "cannot remove a scratch directory");
        }
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        // Only when the pass was dropped before `remove` (the storage stopped mid-pass).
        if self.armed {
            if let Err(e) = std::fs::remove_dir_all(&self.path) {
                warn!(path = %self.path.display(), error = %e, "cannot remove a scratch directory");
            }
        }
    }
}
