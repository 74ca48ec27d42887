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
//! - Each file or directory is held by a guard that removes it when the work is done, or when
//!   the work is dropped (a panic, a force shutdown).
//! - What a crashed process left behind is swept by the next instance to open the directory:
//!   every instance holds an exclusive `flock` on `{instance}.lock` for its life (the kernel
//!   drops it when the process dies, however it dies). At open, an instance removes every
//!   `{id}-...` entry of each `{id}.lock` it can lock itself, then that lock file; a live
//!   instance's lock cannot be taken, so its files are never touched. The lock file is locked
//!   under a temporary name (`{instance}.locking`) and renamed into place, so no `.lock` file
//!   is ever seen unlocked while its instance lives.

use std::fs::{DirBuilder, File, OpenOptions, Permissions};
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
    /// `{instance}.lock`, locked for this instance's life: its files are not swept.
    lock: PathBuf,
    /// The open lock file: the lock goes when it is closed.
    _lock_file: File,
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
        let instance = uuid::Uuid::new_v4().simple().to_string();
        let (lock, lock_file) = take_lock(dir, &instance).map_err(io_error)?;
        sweep_dead_instances(dir, &instance);
        Ok(Scratch {
            dir: dir.to_path_buf(),
            instance,
            passes: AtomicU64::new(0),
            lock,
            _lock_file: lock_file,
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
        let file = create_private_file(&path)?;
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

impl Drop for Scratch {
    fn drop(&mut self) {
        // Every file of this instance went with its guard; the lock goes with the file.
        if let Err(e) = std::fs::remove_file(&self.lock) {
            warn!(path = %self.lock.display(), error = %e, "cannot remove a scratch lock file");
        }
    }
}

/// Creates the file `path`, which must not exist, owner-only, without following a symlink.
fn create_private_file(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
}

/// Creates `{instance}.lock` in `dir`, locked (exclusive `flock`): made new and locked under a
/// temporary name, then renamed into place. Returns its path and the open file.
fn take_lock(dir: &Path, instance: &str) -> std::io::Result<(PathBuf, File)> {
    let locking = dir.join(format!("{instance}.locking"));
    let file = create_private_file(&locking)?;
    let locked = rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive)
        .map_err(std::io::Error::from)
        .and_then(|()| std::fs::rename(&locking, dir.join(format!("{instance}.lock"))));
    if let Err(e) = locked {
        let _ = std::fs::remove_file(&locking);
        return Err(e);
    }
    Ok((dir.join(format!("{instance}.lock")), file))
}

/// Removes what instances that are gone left in `dir`: for each lock file (`{id}.lock`, or a
/// `{id}.locking` left before its rename) that can be locked, every `{id}-...` entry, then the
/// lock file. Leaves `ours`, live instances and every name not of this form alone. Best
/// effort: what cannot be removed is logged and left for the next sweep.
fn sweep_dead_instances(dir: &Path, ours: &str) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            warn!(path = %dir.display(), error = %e, "cannot list the scratch directory to sweep it");
            return;
        }
    };
    let names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    for name in &names {
        let Some(id) = name
            .strip_suffix(".lock")
            .or_else(|| name.strip_suffix(".locking"))
            .filter(|id| *id != ours && is_instance_id(id))
        else {
            continue;
        };
        let lock_path = dir.join(name);
        if name.ends_with(".locking") && is_recent(&lock_path) {
            // Maybe an instance starting now, between creating its lock file and locking it.
            continue;
        }
        let lock = OpenOptions::new()
            .read(true)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&lock_path);
        let held_by_us = lock.and_then(|file| {
            rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive)
                .map(|()| file)
                .map_err(std::io::Error::from)
        });
        // Locked by a live instance (or unreadable): not ours to sweep.
        let Ok(_held) = held_by_us else { continue };
        let prefix = format!("{id}-");
        let mut removed = 0;
        for leftover in names.iter().filter(|n| n.starts_with(&prefix)) {
            let path = dir.join(leftover);
            let outcome = match std::fs::symlink_metadata(&path) {
                Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(&path),
                Ok(_) => std::fs::remove_file(&path),
                Err(e) => Err(e),
            };
            match outcome {
                Ok(()) => removed += 1,
                Err(e) => {
                    warn!(path = %path.display(), error = %e, "cannot remove what a stopped instance left in the scratch directory")
                }
            }
        }
        if let Err(e) = std::fs::remove_file(&lock_path) {
            warn!(path = %lock_path.display(), error = %e, "cannot remove a stopped instance's scratch lock file");
        }
        info!(path = %dir.display(), instance = id, removed, "swept the scratch files of a storage instance that is gone");
    }
}

/// True if the file at `path` was modified within the last minute (or its time is unknown).
fn is_recent(path: &Path) -> bool {
    std::fs::symlink_metadata(path)
        .and_then(|meta| meta.modified())
        .ok()
        .and_then(|modified| modified.elapsed().ok())
        .is_none_or(|age| age < std::time::Duration::from_secs(60))
}

/// True if `name` is an instance id as `Scratch::open` makes them (a uuid's 32 hex digits).
fn is_instance_id(name: &str) -> bool {
    name.len() == 32 && name.bytes().all(|b| b.is_ascii_hexdigit())
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

    /// Returns the names in `dir`, sorted.
    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    /// Returns the file name of `path`.
    fn name_of(path: &Path) -> String {
        path.file_name().unwrap().to_str().unwrap().to_string()
    }

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
    fn what_a_stopped_instance_left_is_swept_and_a_live_ones_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let scratch_dir = dir.path().join("scratch");
        let live = Scratch::open(&scratch_dir).unwrap();
        let (_file, live_upload) = live.create_upload_file(1).unwrap();
        let live_pass = live.create_maintenance_dir().unwrap();
        // What a killed process leaves: its lock file (the kernel dropped the lock), an upload,
        // a maintenance directory with a file in it, and a lock file it had not renamed yet.
        let dead = "0123456789abcdef0123456789abcdef";
        let dead_before_rename = "fedcba9876543210fedcba9876543210";
        std::fs::write(scratch_dir.join(format!("{dead}.lock")), b"").unwrap();
        std::fs::write(scratch_dir.join(format!("{dead}-3.upload")), b"data").unwrap();
        let dead_pass = scratch_dir.join(format!("{dead}-maintenance-0"));
        std::fs::create_dir(&dead_pass).unwrap();
        std::fs::write(dead_pass.join("chain"), b"data").unwrap();
        let locking = scratch_dir.join(format!("{dead_before_rename}.locking"));
        std::fs::write(&locking, b"").unwrap();
        File::options()
            .write(true)
            .open(&locking)
            .unwrap()
            .set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(120))
            .unwrap();
        // One made a moment ago may be an instance starting: left alone.
        let starting = format!("{}.locking", "ab".repeat(16));
        std::fs::write(scratch_dir.join(&starting), b"").unwrap();
        std::fs::write(scratch_dir.join("operator-notes.txt"), b"mine").unwrap();

        let next = Scratch::open(&scratch_dir).unwrap();
        let left = names_in(&scratch_dir);
        let mut expected = vec![
            format!("{}.lock", live.instance),
            format!("{}.lock", next.instance),
            name_of(live_upload.path()),
            name_of(live_pass.path()),
            "operator-notes.txt".to_string(),
            starting.clone(),
        ];
        expected.sort();
        assert_eq!(left, expected);
        std::fs::remove_file(scratch_dir.join(&starting)).unwrap();

        drop((live_upload, live_pass, live, next));
        assert_eq!(
            names_in(&scratch_dir),
            ["operator-notes.txt"],
            "a clean stop leaves nothing"
        );
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
