//! `LibsqlWalManager`: the `WalManager` SQLite (through libsql-sys) asks for a WAL whenever a
//! connection opens a database; it hands out `LibsqlWal`s over the registry's shared logs.

use std::ffi::{c_int, CStr};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use libsql_sys::wal::{Result as WalResult, Sqlite3Db, Sqlite3File, Vfs, WalManager};
use libsql_wal_backend::Storage;
use libsql_wal_segment::Io;

use crate::error::Error;
use crate::registry::WalRegistry;
use crate::shared::segment_dir;
use crate::wal::LibsqlWal;

/// Opens `LibsqlWal`s for SQLite. Cheap to clone: every connection gets a clone.
pub struct LibsqlWalManager<I: Io, S: Storage<File = I::File>> {
    /// The shared logs.
    registry: Arc<WalRegistry<I, S>>,
}

impl<I: Io, S: Storage<File = I::File>> Clone for LibsqlWalManager<I, S> {
    fn clone(&self) -> Self {
        LibsqlWalManager {
            registry: self.registry.clone(),
        }
    }
}

impl<I: Io, S: Storage<File = I::File>> LibsqlWalManager<I, S> {
    /// Returns a manager over `registry`.
    pub fn new(registry: Arc<WalRegistry<I, S>>) -> Self {
        LibsqlWalManager { registry }
    }

    /// Returns the registry.
    pub fn registry(&self) -> &Arc<WalRegistry<I, S>> {
        &self.registry
    }
}

fn path_of(db_path: &CStr) -> &Path {
    Path::new(std::ffi::OsStr::from_bytes(db_path.to_bytes()))
}

impl<I: Io, S: Storage<File = I::File>> WalManager for LibsqlWalManager<I, S> {
    type Wal = LibsqlWal<I, S>;

    fn use_shared_memory(&self) -> bool {
        false
    }

    fn open(
        &self,
        _vfs: &mut Vfs,
        _file: &mut Sqlite3File,
        _no_shm_mode: c_int,
        _max_log_size: i64,
        db_path: &CStr,
    ) -> WalResult<Self::Wal> {
        let shared = self
            .registry
            .open_connection(path_of(db_path))
            .map_err(Error::into_sqlite)?;
        Ok(LibsqlWal::new(shared))
    }

    fn close(
        &self,
        _wal: &mut Self::Wal,
        _db: &mut Sqlite3Db,
        _sync_flags: c_int,
        _scratch: Option<&mut [u8]>,
    ) -> WalResult<()> {
        // The log outlives connections; the registry's shutdown seals and checkpoints it.
        Ok(())
    }

    fn destroy_log(&self, _vfs: &mut Vfs, _db_path: &CStr) -> WalResult<()> {
        // Leaving WAL mode is not supported: the segments are the database's history.
        Ok(())
    }

    fn log_exists(&self, _vfs: &mut Vfs, db_path: &CStr) -> WalResult<bool> {
        let dir = segment_dir(path_of(db_path));
        Ok(std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some()))
    }

    fn destroy(self)
    where
        Self: Sized,
    {
    }
}
