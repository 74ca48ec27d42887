//! `Scratch`: the local files of one storage instance in the scratch directory (compacted
//! uploads too large for memory, and each maintenance pass's working directory).
//!
//! The directory may be shared by every storage of a process and every process of a host, so:
//! - Every name this instance makes starts with its own random id (a uuid), followed by ids
//!   only (the job id, the pass number), never a namespace's name: names are unique per
//!   instance and short whatever the namespace (a valid name may be 255 bytes, `NAME_MAX`).
//! - The directory is private: created mode 0700. An existing one must be a real directory (not
//!   a symlink) owned by this process's user; if its mode lets anyone else in, it is made 0700
//!   (it is ours: nobody else had a say). A directory of another user, world-writable or not,
//!   is refused: its owner could read, replace or plant files in it. Its parents are the
//!   operator's choice and are not checked (a server puts it under its own data directory).
//! - Files are created new, owner-only and without following a symlink
//!   (`O_CREAT | O_EXCL | O_NOFOLLOW`, mode 0600): an existing file or a planted link is never
//!   truncated, written through or followed; the job fails and is retried under a new job id.
//!   Maintenance directories are created new, mode 0700.
//! - This instance removes only what it created: each file or directory is held by a guard
//!   that removes it when the work is done, or when the work is dropped (a panic, a force
//!   shutdown). What a crashed process left behind is left to the operator; no other instance
//!   can tell it from a live one's.

use std::fs::{DirBuilder, File, Permissions};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use tracing::{info, warn};

/// Mode of the scratch directory and of each maintenance directory.
const DIR_MODE: u32 = 0o700;
/// Mode of a scratch file.
const FILE_MODE: u32 = 0o600;

/// Returns the default scratch directory: `{temp dir}/libsql-wal-uploads-{uid}`, one per user.
pub(crate) fn default_dir() -> PathBuf {
    std::env::temp_dir().join(format!(
        "libsql-wal-uploads-{}",
        rustix::process::geteuid().as_raw()
    ))
}

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
    /// Returns the scratch directory `dir` for a new instance: creates it (and its parents) if
    /// it does not exist, else checks that it is a directory of ours and makes it private.
    pub(crate) fn open(dir: &Path) -> crate::Result<Self> {
        let io_error = |source| crate::Error::ScratchDir {
            path: dir.to_path_buf(),
            source,
        };
        if let Some(parent) = dir.parent() {
            DirBuilder::new()
                .recursive(true)
                .mode(DIR_MODE)
                .create(parent)
                .map_err(io_error)?;
        }
        match DirBuilder::new().mode(DIR_MODE).create(dir) {
            // The umask may have taken bits away; the check below puts the mode right.
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_error(e)),
        }
        check_dir(dir, rustix::process::geteuid().as_raw())?;
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
            .mode(FILE_MODE)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
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
        // Not recursive: an existing directory (or a link) is an error, not reused.
        DirBuilder::new().mode(DIR_MODE).create(&path)?;
        Ok(ScratchDir { path, armed: true })
    }
}

/// Checks that `dir` is a directory (not a symlink) owned by `uid`, and makes it mode 0700 if
/// it lets anyone else in.
fn check_dir(dir: &Path, uid: u32) -> crate::Result<()> {
    let refuse = |why: String| crate::Error::ScratchDirRefused {
        path: dir.to_path_buf(),
        why,
    };
    let io_error = |source| crate::Error::ScratchDir {
        path: dir.to_path_buf(),
        source,
    };
    let meta = std::fs::symlink_metadata(dir).map_err(io_error)?;
    if meta.file_type().is_symlink() {
        return Err(refuse(
            "it is a symbolic link; name the directory itself".into(),
        ));
    }
    if !meta.is_dir() {
        return Err(refuse("it is not a directory".into()));
    }
    if meta.uid() != uid {
        return Err(refuse(format!(
            "it belongs to uid {}, not to this process's uid {uid}",
            meta.uid()
        )));
    }
    let mode = meta.mode() & 0o7777;
    if mode != DIR_MODE {
        std::fs::set_permissions(dir, Permissions::from_mode(DIR_MODE)).map_err(io_error)?;
        if mode & 0o077 != 0 {
            info!(path = %dir.display(), mode = %format!("{mode:o}"), "scratch directory made private (0700)");
        }
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn our_uid() -> u32 {
        rustix::process::geteuid().as_raw()
    }

    #[test]
    fn a_directory_of_another_user_is_refused_whatever_its_mode() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [0o700, 0o777] {
            std::fs::set_permissions(dir.path(), Permissions::from_mode(mode)).unwrap();
            let refused = check_dir(dir.path(), our_uid().wrapping_add(1));
            assert!(
                matches!(refused, Err(crate::Error::ScratchDirRefused { .. })),
                "mode {mode:o}: {refused:?}"
            );
        }
    }

    #[test]
    fn a_file_where_the_directory_should_be_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, b"").unwrap();
        let refused = Scratch::open(&file);
        assert!(
            matches!(refused, Err(crate::Error::ScratchDirRefused { .. })),
            "{refused:?}"
        );
    }

    #[test]
    fn an_upload_file_is_created_new_and_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let scratch = Scratch::open(&dir.path().join("scratch")).unwrap();
        let (_file, guard) = scratch.create_upload_file(7).unwrap();
        let meta = std::fs::symlink_metadata(guard.path()).unwrap();
        assert_eq!(meta.mode() & 0o7777, FILE_MODE);
        let again = scratch.create_upload_file(7);
        assert_eq!(
            again.err().map(|e| e.kind()),
            Some(std::io::ErrorKind::AlreadyExists),
            "an existing file is not opened again"
        );
        drop(guard);
        assert!(!scratch.upload_path(7).exists(), "the guard removed it");
    }

    #[test]
    fn a_symlink_at_an_upload_file_path_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let scratch = Scratch::open(&dir.path().join("scratch")).unwrap();
        let target = dir.path().join("target");
        std::os::unix::fs::symlink(&target, scratch.upload_path(1)).unwrap();
        assert!(scratch.create_upload_file(1).is_err());
        assert!(!target.exists(), "the link's target was not created");
        assert!(
            std::fs::symlink_metadata(scratch.upload_path(1))
                .unwrap()
                .is_symlink(),
            "the link is left alone"
        );
    }
}
