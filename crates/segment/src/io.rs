//! The file-system abstraction every segment goes through: `Io` opens and manages files and
//! supplies time and randomness, `FileExt` does positional reads and writes on one file.
//!
//! `StdIo` is the real implementation. Tests inject faults by wrapping it (see `fault`); the WAL
//! and the backends take an `Io` so the same code runs on both.

use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// Positional I/O on one open file. Every call is independent of any cursor, so one file can be
/// shared between a writer and many readers without locking.
pub trait FileExt: Send + Sync + 'static {
    /// Returns the current length of the file in bytes.
    fn size(&self) -> io::Result<u64>;
    /// Truncates or extends the file to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Writes all of `buf` at `offset`. On error, any prefix of `buf` may have been written.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Writes all of `bufs`, back to back, at `offset`. On error, any prefix may have been
    /// written. The default gathers them into one buffer and calls `write_all_at`.
    fn write_all_vectored_at(&self, bufs: &mut [IoSlice<'_>], offset: u64) -> io::Result<()> {
        let mut joined = Vec::with_capacity(bufs.iter().map(|b| b.len()).sum());
        for buf in bufs.iter() {
            joined.extend_from_slice(buf);
        }
        self.write_all_at(&joined, offset)
    }
    /// Fills `buf` from `offset`; fails with `UnexpectedEof` when the file is too short.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Flushes the file's data (and the metadata needed to read it back) to stable storage.
    fn sync_data(&self) -> io::Result<()>;
}

/// Buffers passed to one `pwritev` call; Linux's `IOV_MAX` is 1024.
const MAX_IOVECS: usize = 1024;

impl FileExt for File {
    fn size(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        File::set_len(self, len)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::write_all_at(self, buf, offset)
    }

    fn write_all_vectored_at(
        &self,
        mut bufs: &mut [IoSlice<'_>],
        mut offset: u64,
    ) -> io::Result<()> {
        // Positional writev: the frames of a transaction go to the kernel straight from the
        // caller's pages, without first being copied into one buffer.
        while !bufs.is_empty() {
            let batch = bufs.len().min(MAX_IOVECS);
            let written = rustix::io::pwritev(self, &bufs[..batch], offset)?;
            if written == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            offset += written as u64;
            IoSlice::advance_slices(&mut bufs, written);
        }
        Ok(())
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(self, buf, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        File::sync_data(self)
    }
}

/// How `Io::open` opens a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// An existing file, read only.
    Read,
    /// An existing file, read and write.
    ReadWrite,
    /// A new file, read and write; fails if the path exists.
    CreateNew,
}

/// The file system, clock and randomness a segment uses.
pub trait Io: Send + Sync + 'static {
    /// The type of an open file.
    type File: FileExt;

    /// Creates `dir` and its parents if missing, durably: the parent of every directory it
    /// created is synced, up to the first that existed.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Opens `path` in `mode`.
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Self::File>;
    /// Creates an anonymous temporary file in `dir` that disappears when dropped.
    fn tempfile(&self, dir: &Path) -> io::Result<Self::File>;
    /// Renames `from` to `to`, replacing `to` atomically.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Renames `from` to `to` unless `to` exists: then fails with `AlreadyExists`, changing
    /// nothing.
    fn rename_no_replace(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes the file at `path`.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Makes the entries of `dir` (creations, renames, removals) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Returns the current time.
    fn now(&self) -> DateTime<Utc>;
    /// Returns a new random UUID (a log id).
    fn uuid(&self) -> Uuid;
    /// Returns a random 32-bit value (a checksum salt).
    fn random_u32(&self) -> u32;
}

/// Creates `dir` and its missing parents, then syncs the parent of each directory it created,
/// up to the first ancestor that existed, so that a crash cannot lose a directory whose files
/// were synced (the caller syncs `dir` itself once it wrote in it). Returns the directories that
/// were missing, shallowest first. A directory another writer creates meanwhile counts as
/// missing: its parent is synced all the same, since the caller's files will depend on it.
///
/// Fails if `dir` or one of its ancestors exists but is not a directory.
pub fn create_dir_all_durably(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut missing = Vec::new();
    let mut at = dir;
    while !at.as_os_str().is_empty() && !at.try_exists()? {
        missing.push(at.to_path_buf());
        match at.parent() {
            Some(parent) => at = parent,
            None => break,
        }
    }
    missing.reverse();
    for created in &missing {
        match std::fs::create_dir(created) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && created.is_dir() => {}
            Err(e) => return Err(e),
        }
    }
    if !dir.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::NotADirectory,
            format!("{} exists and is not a directory", dir.display()),
        ));
    }
    for created in &missing {
        let parent = match created.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        File::open(parent)?.sync_all()?;
    }
    Ok(missing)
}

/// The real file system, clock and random source.
#[derive(Debug, Clone, Copy, Default)]
pub struct StdIo;

impl Io for StdIo {
    type File = File;

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        create_dir_all_durably(dir).map(drop)
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<File> {
        let mut options = OpenOptions::new();
        match mode {
            OpenMode::Read => options.read(true),
            OpenMode::ReadWrite => options.read(true).write(true),
            OpenMode::CreateNew => options.read(true).write(true).create_new(true),
        };
        options.open(path)
    }

    fn tempfile(&self, dir: &Path) -> io::Result<File> {
        tempfile::tempfile_in(dir)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn rename_no_replace(&self, from: &Path, to: &Path) -> io::Result<()> {
        let cwd = rustix::fs::CWD;
        match rustix::fs::renameat_with(cwd, from, cwd, to, rustix::fs::RenameFlags::NOREPLACE) {
            Ok(()) => Ok(()),
            // A file system or kernel without RENAME_NOREPLACE: a hard link never replaces
            // either.
            Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS) => {
                std::fs::hard_link(from, to)?;
                std::fs::remove_file(from)
            }
            Err(e) => Err(e.into()),
        }
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    fn uuid(&self) -> Uuid {
        Uuid::new_v4()
    }

    fn random_u32(&self) -> u32 {
        // The salt only has to differ between segments; if the OS random source fails we fall
        // back to the clock rather than refusing to write.
        getrandom::u32().unwrap_or_else(|_| Utc::now().timestamp_subsec_nanos())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_dir_all_durably_makes_every_missing_level_and_reports_them_shallowest_first() {
        let tmp = tempfile::tempdir().expect("temporary directory");
        let root = tmp.path();
        let deep = root.join("a/b/c");
        let created = create_dir_all_durably(&deep).expect("created");
        assert_eq!(created, [root.join("a"), root.join("a/b"), deep.clone()]);
        assert!(deep.is_dir());
        assert_eq!(
            create_dir_all_durably(&deep).expect("an existing directory is fine"),
            Vec::<PathBuf>::new()
        );
        let beside = root.join("a/x/y");
        assert_eq!(
            create_dir_all_durably(&beside).expect("created"),
            [root.join("a/x"), beside.clone()],
            "only up to the first directory that existed"
        );
        std::fs::write(root.join("file"), b"x").expect("file");
        assert!(create_dir_all_durably(&root.join("file/d")).is_err());
        assert!(
            create_dir_all_durably(&root.join("file")).is_err(),
            "a file is not a directory"
        );
    }
}
