//! Helpers for the end-to-end tests: a registry on `NoStorage` in a temporary directory, and
//! connections to its namespaces through libsql-sys, on this WAL or on SQLite's own.

pub mod oracle;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use libsql_sys::wal::{Sqlite3Wal, Sqlite3WalManager, Wal};
use libsql_sys::Connection;
use libsql_wal::{LibsqlWal, LibsqlWalManager, RegistryConfig, WalRegistry};
use libsql_wal_backend::NoStorage;
use libsql_wal_segment::StdIo;

/// The WAL type of a connection on this project's WAL with local-only storage.
pub type LocalWal = LibsqlWal<StdIo, NoStorage<std::fs::File>>;
/// A registry with local-only storage.
pub type LocalRegistry = WalRegistry<StdIo, NoStorage<std::fs::File>>;

/// A set of namespaces under a temporary root, served by one registry.
pub struct TestDb {
    /// The root directory; namespace `ns` lives in `{root}/ns/data`.
    root: PathBuf,
    /// Holds the root alive.
    _dir: Option<tempfile::TempDir>,
    /// The WAL manager handed to connections.
    manager: LibsqlWalManager<StdIo, NoStorage<std::fs::File>>,
}

impl TestDb {
    /// Returns a registry with `config` over a fresh temporary root.
    pub fn new(config: RegistryConfig) -> Self {
        let dir = tempfile::tempdir().expect("create a temporary root");
        let root = dir.path().to_path_buf();
        let mut db = Self::reopen(&root, config);
        db._dir = Some(dir);
        db
    }

    /// Returns a new registry (as after a restart) over an existing root.
    pub fn reopen(root: &Path, config: RegistryConfig) -> Self {
        let registry = WalRegistry::new(StdIo, NoStorage::default(), config);
        TestDb {
            root: root.to_path_buf(),
            _dir: None,
            manager: LibsqlWalManager::new(Arc::new(registry)),
        }
    }

    /// Takes the temporary directory out, so the root outlives this registry.
    pub fn into_root(mut self) -> (tempfile::TempDir, PathBuf) {
        let dir = self
            ._dir
            .take()
            .expect("only a TestDb from new() owns its root");
        (dir, self.root.clone())
    }

    /// Returns the path of namespace `ns`'s database file.
    pub fn db_path(&self, ns: &str) -> PathBuf {
        let dir = self.root.join(ns);
        std::fs::create_dir_all(&dir).expect("create the namespace directory");
        dir.join("data")
    }

    /// Opens a connection to namespace `ns` on this WAL, with SQLite's auto-checkpoint off.
    pub fn connect(&self, ns: &str) -> Connection<LocalWal> {
        self.connect_with_auto_checkpoint(ns, 0)
    }

    /// Opens a connection to namespace `ns` on this WAL; SQLite checkpoints when a commit
    /// leaves `auto_checkpoint` frames or more in the log (0: never).
    pub fn connect_with_auto_checkpoint(
        &self,
        ns: &str,
        auto_checkpoint: u32,
    ) -> Connection<LocalWal> {
        Connection::open(
            self.db_path(ns),
            libsql_sys::rusqlite::OpenFlags::default(),
            self.manager.clone(),
            auto_checkpoint,
            None,
        )
        .expect("open a connection on libsql-wal")
    }

    /// Returns the registry.
    pub fn registry(&self) -> &Arc<LocalRegistry> {
        self.manager.registry()
    }
}

/// A small deterministic random source (xorshift64*), so seeded workloads repeat exactly.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    /// Returns the next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Returns a value in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// Returns the number of segment files (`*.seg`) of the database at `db_path`: other files of
/// its segment directory (a spare, a restore marker) are not counted.
pub fn segment_files(db_path: &Path) -> usize {
    let mut dir = db_path.as_os_str().to_os_string();
    dir.push("-segments");
    std::fs::read_dir(dir)
        .expect("list the segment directory")
        .filter(|e| {
            e.as_ref()
                .expect("read a segment directory entry")
                .file_name()
                .to_string_lossy()
                .ends_with(".seg")
        })
        .count()
}

/// Returns the number of rows of table `t`, the table the end-to-end tests write.
pub fn count<W: Wal>(conn: &Connection<W>) -> i64 {
    conn.query_row("SELECT count(*) FROM t", (), |r| r.get(0))
        .expect("count the rows of t")
}

/// Returns what `PRAGMA integrity_check` says ("ok" for a sound database).
pub fn integrity_check<W: Wal>(conn: &Connection<W>) -> String {
    conn.query_row("PRAGMA integrity_check", (), |r| r.get(0))
        .expect("run PRAGMA integrity_check")
}

/// Opens a connection on SQLite's own WAL at `path`.
pub fn connect_native(path: &Path) -> Connection<Sqlite3Wal> {
    Connection::open(
        path,
        libsql_sys::rusqlite::OpenFlags::default(),
        Sqlite3WalManager::new(),
        0,
        None,
    )
    .expect("open a connection on SQLite's WAL")
}

/// Returns every stored segment of `namespace` on `backend`, over all its generations, as
/// (generation number, key), oldest generation first.
pub async fn stored_segments<B: libsql_wal_backend::Backend>(
    backend: &B,
    namespace: &libsql_wal_backend::NamespaceName,
) -> Vec<(u64, libsql_wal_backend::SegmentKey)> {
    use libsql_wal_backend::BackendExt;
    let config = backend.default_config();
    let lineage = backend
        .lineage(config, namespace)
        .await
        .expect("read the generations");
    let mut out = Vec::new();
    for record in &lineage.records {
        if let Some(generation) = record.log(namespace) {
            let keys = backend
                .list_segments(config, &generation, u64::MAX)
                .await
                .expect("list a generation's segments");
            out.extend(keys.into_iter().map(|k| (generation.number, k)));
        }
    }
    out
}

/// Polls `done` until it holds, for at most 60 s (a liveness bound, not a speed check: the
/// background work it waits for shares two cores with the whole test run).
pub fn eventually(mut done: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    done()
}

/// Returns the newest generation of `namespace` on `backend` (it must be a log).
pub async fn newest_generation<B: libsql_wal_backend::Backend>(
    backend: &B,
    namespace: &libsql_wal_backend::NamespaceName,
) -> libsql_wal_backend::Generation {
    use libsql_wal_backend::BackendExt;
    backend
        .lineage(backend.default_config(), namespace)
        .await
        .expect("read the generations")
        .newest()
        .and_then(|r| r.log(namespace))
        .expect("the namespace has a log generation")
}
