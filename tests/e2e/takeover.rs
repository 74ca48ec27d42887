//! A tenant moving between machines through storage alone (the fs backend): a namespace opened
//! with no local files restores itself from storage before SQLite sees it; a machine whose
//! database file is behind storage catches up from the newer segments only; a restore cut short
//! is started over on the next open; a slow restore holds up no other namespace's open. Each
//! machine is its own directory, `ActorStorage` and
//! registry over one shared bucket.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use libsql_sys::Connection;
use libsql_wal::{
    LibsqlWal, LibsqlWalManager, RegistryConfig, RestoreOptions, RestoreTarget, WalRegistry,
};
use libsql_wal_backend::{ForkPoint, FsBackend, NamespaceName, Storage as _};
use libsql_wal_segment::StdIo;
use libsql_wal_supervisor::{ActorStorage, StorageConfig};
use libsql_wal_tests::{connect_native, eventually, integrity_check};

use crate::hooked::{Call, Hook, HookedBackend};

type File = std::fs::File;
type Storage = ActorStorage<FsBackend, File>;
type Registry = WalRegistry<StdIo, Storage>;
type HookedRegistry = WalRegistry<StdIo, ActorStorage<HookedBackend<FsBackend>, File>>;

pub(crate) fn namespace() -> NamespaceName {
    "tenant".parse().unwrap()
}

/// A shared bucket and a runtime for test-side backend calls; machines live in subdirectories.
pub(crate) struct World {
    pub(crate) runtime: tokio::runtime::Runtime,
    pub(crate) work: tempfile::TempDir,
}

impl World {
    pub(crate) fn new() -> Self {
        World {
            runtime: tokio::runtime::Runtime::new().unwrap(),
            work: tempfile::tempdir().unwrap(),
        }
    }

    pub(crate) fn bucket(&self) -> PathBuf {
        self.work.path().join("bucket")
    }

    /// A registry over the shared bucket whose backend calls `hook` sees first, with its
    /// scratch files under `root`.
    fn hooked_registry(&self, root: &Path, hook: Hook) -> Arc<HookedRegistry> {
        let fs = self
            .runtime
            .block_on(FsBackend::new(self.bucket()))
            .unwrap();
        let storage = ActorStorage::<_, File>::start(
            HookedBackend::new(fs, hook),
            StorageConfig {
                scratch_dir: root.join("scratch"),
                ..StorageConfig::default()
            },
        )
        .unwrap();
        Arc::new(WalRegistry::new(StdIo, storage, RegistryConfig::default()))
    }

    /// Starts machine `name` (its files under `{work}/{name}`).
    pub(crate) fn machine(&self, name: &str) -> Machine {
        Machine::start(&self.runtime, &self.bucket(), &self.work.path().join(name))
    }
}

/// One machine: its own files, storage pipeline and registry over the shared bucket.
pub(crate) struct Machine {
    pub(crate) registry: Arc<Registry>,
    pub(crate) db_path: PathBuf,
}

impl Machine {
    pub(crate) fn start(runtime: &tokio::runtime::Runtime, bucket: &Path, root: &Path) -> Self {
        Self::start_with(runtime, bucket, root, RegistryConfig::default())
    }

    fn start_with(
        runtime: &tokio::runtime::Runtime,
        bucket: &Path,
        root: &Path,
        config: RegistryConfig,
    ) -> Self {
        let backend = runtime.block_on(FsBackend::new(bucket)).unwrap();
        let storage = Storage::start(
            backend,
            StorageConfig {
                scratch_dir: root.join("scratch"),
                ..StorageConfig::default()
            },
        )
        .unwrap();
        let registry = Arc::new(WalRegistry::new(StdIo, storage, config));
        let db_dir = root.join("tenant");
        std::fs::create_dir_all(&db_dir).unwrap();
        Machine {
            registry,
            db_path: db_dir.join("data"),
        }
    }

    pub(crate) fn connect(&self) -> Connection<LibsqlWal<StdIo, Storage>> {
        Connection::open(
            &self.db_path,
            libsql_sys::rusqlite::OpenFlags::default(),
            LibsqlWalManager::new(self.registry.clone()),
            0,
            None,
        )
        .unwrap()
    }

    /// Seals what is committed and waits until it is durable.
    fn make_durable(&self) {
        let shared = self.registry.get(&namespace()).unwrap();
        shared.seal_now().unwrap();
        let end = shared.last_committed_frame_no();
        let started = Instant::now();
        while shared.durable_frame_no() < end {
            assert!(started.elapsed() < Duration::from_secs(60), "durable");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    pub(crate) fn stop(self) {
        self.registry.shutdown().unwrap();
    }
}

/// Inserts `rows` rows of blobs large enough to need overflow pages, starting at id `first`.
fn insert<W: libsql_sys::wal::Wal>(conn: &Connection<W>, first: i64, rows: i64) {
    conn.execute_batch("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v BLOB)")
        .unwrap();
    for id in first..first + rows {
        conn.execute(
            "INSERT INTO t VALUES (?1, randomblob(3000 + ?1 % 2000))",
            [id],
        )
        .unwrap();
    }
}

/// Every row, for comparing databases.
fn rows<W: libsql_sys::wal::Wal>(conn: &Connection<W>) -> Vec<(i64, Vec<u8>)> {
    let mut stmt = conn.prepare("SELECT id, v FROM t ORDER BY id").unwrap();
    let rows = stmt
        .query_map((), |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    rows
}

#[test]
fn a_tenant_moves_between_machines_through_storage_and_catches_up() {
    let world = World::new();

    // Machine A writes, some of it durable before shutdown, the rest made durable by it.
    let a = world.machine("a");
    let conn = a.connect();
    insert(&conn, 0, 300);
    a.make_durable();
    conn.execute("DELETE FROM t WHERE id % 7 = 0", ()).unwrap();
    insert(&conn, 300, 100);
    let on_a = rows(&conn);
    drop(conn);
    a.stop();

    // Machine B has no local files: opening the namespace restores it first.
    let b = world.machine("b");
    let conn = b.connect();
    assert_eq!(rows(&conn), on_a, "B sees what A committed");
    assert_eq!(integrity_check(&conn), "ok");
    // B goes on writing after the restored point, in the same log.
    insert(&conn, 1000, 150);
    conn.execute("UPDATE t SET v = randomblob(100) WHERE id < 50", ())
        .unwrap();
    let on_b = rows(&conn);
    b.make_durable();
    drop(conn);
    b.stop();

    // A's database file is behind storage: reopening catches up from B's segments only.
    let stored_before = objects_listed(&world.runtime, &world.bucket());
    let a = world.machine("a");
    let conn = a.connect();
    assert_eq!(rows(&conn), on_b, "A caught up with what B committed");
    assert_eq!(integrity_check(&conn), "ok");
    insert(&conn, 2000, 10);
    let latest = rows(&conn);
    a.make_durable();
    drop(conn);
    a.stop();
    assert!(objects_listed(&world.runtime, &world.bucket()) > stored_before);

    // A restore cut short (its marker left behind, the file half written) starts over.
    let c = world.machine("c");
    std::fs::write(&c.db_path, vec![0xAB; 4096 * 3]).unwrap();
    let segments = PathBuf::from(format!("{}-segments", c.db_path.display()));
    std::fs::create_dir_all(&segments).unwrap();
    std::fs::write(segments.join("restoring"), b"").unwrap();
    let conn = c.connect();
    assert_eq!(rows(&conn), latest, "C restored from scratch");
    assert_eq!(integrity_check(&conn), "ok");
    assert!(
        !segments.join("restoring").exists(),
        "the marker is removed"
    );
    drop(conn);
    c.stop();
}

/// Stored segments of the tenant.
fn objects_listed(runtime: &tokio::runtime::Runtime, bucket: &Path) -> usize {
    runtime.block_on(async {
        let backend = FsBackend::new(bucket).await.unwrap();
        libsql_wal_tests::stored_segments(&backend, &namespace())
            .await
            .len()
    })
}

#[test]
fn a_new_namespace_with_nothing_stored_opens_empty() {
    let world = World::new();
    let machine = world.machine("a");
    let conn = machine.connect();
    insert(&conn, 0, 5);
    assert_eq!(rows(&conn).len(), 5);
    drop(conn);
    machine.stop();
}

#[test]
fn a_slow_restore_does_not_hold_up_opening_other_namespaces() {
    let world = World::new();
    // Listing the namespace `slow` (its restore on open) waits until released.
    let release = Arc::new(AtomicBool::new(false));
    let slow_listing = Arc::new(AtomicBool::new(false));
    let hook: Hook = {
        let (release, slow_listing) = (release.clone(), slow_listing.clone());
        Arc::new(move |call, key| {
            let slow = call == Call::List && key.starts_with("slow/");
            let (release, slow_listing) = (release.clone(), slow_listing.clone());
            Box::pin(async move {
                if slow {
                    slow_listing.store(true, Ordering::SeqCst);
                    while !release.load(Ordering::SeqCst) {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
                Ok(())
            })
        })
    };
    let registry = world.hooked_registry(world.work.path(), hook);
    let connect = |name: &str| {
        let dir = world.work.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let conn = Connection::open(
            dir.join("data"),
            libsql_sys::rusqlite::OpenFlags::default(),
            LibsqlWalManager::new(registry.clone()),
            0,
            None,
        )
        .unwrap();
        insert(&conn, 0, 2);
        rows(&conn).len()
    };
    std::thread::scope(|s| {
        let slow = s.spawn(|| connect("slow"));
        let started = Instant::now();
        while !slow_listing.load(Ordering::SeqCst) {
            assert!(started.elapsed() < Duration::from_secs(30), "slow open");
            std::thread::sleep(Duration::from_millis(2));
        }
        // Enough namespaces that some share a map shard with `slow`.
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let connect = &connect;
        s.spawn(move || {
            for i in 0..64 {
                assert_eq!(connect(&format!("fast-{i:02}")), 2);
            }
            done_tx.send(()).unwrap();
        });
        let opened = done_rx.recv_timeout(Duration::from_secs(60));
        let slow_still_open = !slow.is_finished();
        release.store(true, Ordering::SeqCst);
        assert!(opened.is_ok(), "other namespaces waited for the slow one");
        assert!(slow_still_open, "the slow open was still restoring");
        assert_eq!(slow.join().unwrap(), 2);
    });
    registry.shutdown().unwrap();
}

#[test]
fn a_machine_whose_generation_was_taken_over_refuses_to_open_its_local_tail() {
    let world = World::new();

    // A makes part of its writes durable, then stops without a shutdown: a committed tail
    // stays in its local log only.
    let a = world.machine("a");
    let conn = a.connect();
    insert(&conn, 0, 50);
    a.make_durable();
    insert(&conn, 50, 20);
    let local_end = a
        .registry
        .get(&namespace())
        .unwrap()
        .last_committed_frame_no();
    let db_path = a.db_path.clone();
    drop(conn);
    drop(a);

    // B takes over from storage and writes less than A's tail: by frame numbers alone, A's
    // longer log would look ahead of storage (the fork this test guards against).
    let b = world.machine("b");
    let conn = b.connect();
    insert(&conn, 1000, 1);
    b.make_durable();
    let on_b = rows(&conn);
    let durable = b.registry.get(&namespace()).unwrap().durable_frame_no();
    assert!(durable < local_end, "{durable} < {local_end}");
    drop(conn);
    b.stop();

    // A comes back: its log was superseded, so it refuses, naming both generations.
    let a = world.machine("a");
    let err = a.registry.open(&db_path).err().expect("A must not open");
    match &err {
        libsql_wal::Error::Superseded {
            local_generation,
            local_frame_no,
            newest_generation,
            ..
        } => assert_eq!(
            (*local_generation, *local_frame_no, *newest_generation),
            (1, local_end, 2)
        ),
        other => panic!("unexpected error {other}"),
    }
    assert!(
        err.to_string().contains("move the local files away"),
        "{err}"
    );
    // A restore of latest is B's view, with nothing of A's tail.
    let d = world.machine("d");
    assert_eq!(rows(&d.connect()), on_b);
}

#[test]
fn a_new_log_over_an_old_history_starts_a_generation_that_restores_follow() {
    let world = World::new();
    let a = world.machine("a");
    let conn = a.connect();
    insert(&conn, 0, 300);
    a.make_durable();
    drop(conn);
    a.stop();

    // C's database was made by stock SQLite (no libSQL footer): a history of its own.
    let c = world.machine("c");
    {
        let native = connect_native(&c.db_path);
        native
            .execute_batch(
                "PRAGMA journal_mode=WAL; CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB); \
                 WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 20) \
                 INSERT INTO t SELECT x, randomblob(500) FROM n;",
            )
            .unwrap();
    }
    let conn = c.connect();
    insert(&conn, 5000, 5);
    let on_c = rows(&conn);
    assert_eq!(on_c.len(), 25);
    c.make_durable();
    let shared = c.registry.get(&namespace()).unwrap();
    assert_eq!(shared.generation().number, 2, "a generation of its own");
    assert_eq!(shared.durable_frame_no(), shared.last_committed_frame_no());
    drop(conn);
    c.stop();
    let stored = world.runtime.block_on(async {
        let backend = FsBackend::new(world.bucket()).await.unwrap();
        libsql_wal_tests::stored_segments(&backend, &namespace()).await
    });
    assert!(
        stored.iter().any(|(generation, _)| *generation == 2),
        "C's frames were uploaded: {stored:?}"
    );

    // A machine with nothing local restores C's database, not A's.
    let d = world.machine("d");
    let conn = d.connect();
    assert_eq!(rows(&conn), on_c);
    assert_eq!(integrity_check(&conn), "ok");
}

#[test]
fn a_log_kept_without_storage_is_whole_in_storage_once_storage_is_added() {
    // Without storage first: a log partly checkpointed (the file's footer past frame 0, the
    // newest frames in segments), or a log over a file stock SQLite made (pages in no log).
    // The first open with storage may fail at its claim, after the log went into the file and
    // the base commit was made: the next open starts over from there.
    for (from_stock_sqlite, claim_fails_first) in [(false, false), (true, false), (false, true)] {
        let world = World::new();
        let root = world.work.path().join("a");
        {
            let local = libsql_wal_tests::TestDb::reopen(&root, RegistryConfig::default());
            if from_stock_sqlite {
                std::fs::create_dir_all(root.join("tenant")).unwrap();
                connect_native(&local.db_path("tenant"))
                    .execute_batch(
                        "PRAGMA journal_mode=WAL; CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB); \
                         WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 50) \
                         INSERT INTO t SELECT x + 10000, randomblob(3000) FROM n;",
                    )
                    .unwrap();
            }
            let conn = local.connect("tenant");
            insert(&conn, 0, 100);
            if !from_stock_sqlite {
                let shared = local.registry().get(&namespace()).unwrap();
                shared.seal_now().unwrap();
                shared.checkpoint().unwrap();
                assert!(shared.checkpointed_frame_no() > 0);
            }
            insert(&conn, 100, 20);
            assert!(libsql_wal_tests::segment_files(&local.db_path("tenant")) > 0);
        }

        if claim_fails_first {
            let failed = Arc::new(AtomicBool::new(false));
            let hook: Hook = Arc::new(move |call, _key| {
                let fail = call == Call::Create && !failed.swap(true, Ordering::SeqCst);
                Box::pin(async move {
                    if fail {
                        return Err(libsql_wal_backend::Error::transient(
                            "creating a generation",
                            "injected",
                        ));
                    }
                    Ok(())
                })
            });
            let registry = world.hooked_registry(&root, hook);
            let err = registry
                .open(&root.join("tenant/data"))
                .err()
                .expect("the claim fails");
            assert!(err.to_string().contains("injected"), "{err}");
            drop(registry);
        }

        // The same files, now with storage: what is stored restores the whole database.
        let a = world.machine("a");
        let conn = a.connect();
        insert(&conn, 5000, 5);
        let on_a = rows(&conn);
        assert_eq!(on_a.len(), if from_stock_sqlite { 175 } else { 125 });
        a.make_durable();
        drop(conn);
        a.stop();
        let d = world.machine("d");
        let conn = d.connect();
        assert_eq!(
            rows(&conn),
            on_a,
            "from stock SQLite: {from_stock_sqlite}, claim failed first: {claim_fails_first}"
        );
        assert_eq!(integrity_check(&conn), "ok");
    }
}

#[test]
fn a_registry_that_may_not_claim_refuses_every_open_that_would_and_writes_nothing() {
    let world = World::new();
    let a = world.machine("a");
    let conn = a.connect();
    insert(&conn, 0, 20);
    a.make_durable();
    drop(conn);
    let a_db = a.db_path.clone();
    a.stop();
    std::fs::copy(&a_db, world.work.path().join("a-before")).unwrap();
    let may_not = || RegistryConfig {
        may_claim: false,
        ..RegistryConfig::default()
    };
    let generations = || {
        world.runtime.block_on(async {
            use libsql_wal_backend::{Backend, BackendExt};
            let backend = FsBackend::new(world.bucket()).await.unwrap();
            backend
                .lineage(backend.default_config(), &namespace())
                .await
                .unwrap()
                .records
                .len()
        })
    };

    // Nothing local: the open would restore the namespace and take it over.
    let b = Machine::start_with(
        &world.runtime,
        &world.bucket(),
        &world.work.path().join("b"),
        may_not(),
    );
    let err = b.registry.open(&b.db_path).err().expect("refused");
    assert!(matches!(err, libsql_wal::Error::WouldClaim { .. }), "{err}");
    assert!(!b.db_path.exists(), "nothing was restored");
    // A database of its own: the open would start a new generation.
    connect_native(&b.db_path)
        .execute_batch("CREATE TABLE own(x)")
        .unwrap();
    let err = b.registry.open(&b.db_path).err().expect("refused");
    assert!(matches!(err, libsql_wal::Error::WouldClaim { .. }), "{err}");
    assert_eq!(generations(), 1, "no generation was claimed");

    // A's own files go on where they left off, and may be written.
    let copy = Machine::start_with(
        &world.runtime,
        &world.bucket(),
        &world.work.path().join("a"),
        may_not(),
    );
    let conn = copy.connect();
    insert(&conn, 20, 1);
    assert_eq!(rows(&conn).len(), 21);
    copy.make_durable();
    drop(conn);
    copy.stop();
    assert_eq!(generations(), 1);

    // A copy of A's database from before that write is behind storage: the open would bring
    // it up from storage (and, as a copy, take the namespace over).
    let behind = world.work.path().join("behind");
    std::fs::create_dir_all(behind.join("tenant")).unwrap();
    std::fs::copy(
        world.work.path().join("a-before"),
        behind.join("tenant/data"),
    )
    .unwrap();
    let stale = Machine::start_with(&world.runtime, &world.bucket(), &behind, may_not());
    let before = std::fs::read(&stale.db_path).unwrap();
    let err = stale.registry.open(&stale.db_path).err().expect("refused");
    assert!(matches!(err, libsql_wal::Error::WouldClaim { .. }), "{err}");
    assert!(
        std::fs::read(&stale.db_path).unwrap() == before,
        "the copy is as it was"
    );
    assert_eq!(generations(), 1);
}

#[test]
fn a_takeover_fences_off_the_writer_still_running() {
    let world = World::new();
    let a = world.machine("a");
    let conn_a = a.connect();
    insert(&conn_a, 0, 100);
    a.make_durable();

    // B takes over while A still runs.
    let b = world.machine("b");
    let conn_b = b.connect();
    insert(&conn_b, 1000, 50);
    b.make_durable();
    let on_b = rows(&conn_b);

    // A writes on, unaware; its next upload finds B's generation and stops acknowledging.
    insert(&conn_a, 100, 10);
    let shared_a = a.registry.get(&namespace()).unwrap();
    shared_a.seal_now().unwrap();
    let started = Instant::now();
    while shared_a.fenced().is_none() {
        assert!(started.elapsed() < Duration::from_secs(60), "A is fenced");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(shared_a.fenced(), Some(2));
    let durable_a = shared_a.durable_frame_no();
    assert!(durable_a < shared_a.last_committed_frame_no());
    let err = conn_a
        .execute("INSERT INTO t VALUES (99999, x'00')", ())
        .unwrap_err();
    assert!(
        err.to_string().contains("readonly") || err.to_string().contains("read-only"),
        "{err}"
    );
    assert_eq!(rows(&conn_a).len(), 110, "reads go on");

    // Nothing of A's fenced writes is in a restore of latest.
    let d = world.machine("d");
    assert_eq!(rows(&d.connect()), on_b);
    drop(conn_b);
    b.stop();
    drop(conn_a);
    assert!(
        a.registry.shutdown().is_err(),
        "A's tail never became durable"
    );
}

#[test]
fn a_one_page_database_keeps_its_header_settings_when_storage_holds_nothing() {
    let world = World::new();
    let a = world.machine("a");
    // A database made by stock SQLite with settings but no table: one page, no footer.
    {
        let native = connect_native(&a.db_path);
        native
            .execute_batch("PRAGMA user_version = 7; PRAGMA application_id = 42;")
            .unwrap();
    }
    assert_eq!(std::fs::metadata(&a.db_path).unwrap().len(), 4096);
    let conn = a.connect();
    let settings: (i64, i64) = conn
        .query_row(
            "SELECT * FROM pragma_user_version, pragma_application_id",
            (),
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(
        settings,
        (7, 42),
        "opening over an empty bucket kept page 1"
    );
    drop(conn);
    a.stop();
}

#[test]
fn a_takeover_keeps_what_the_writer_before_acknowledged_while_it_restored() {
    let world = World::new();
    let a = world.machine("a");
    let conn_a = a.connect();
    insert(&conn_a, 0, 100);
    a.make_durable();

    // B's claim of its generation waits, after B restored, until A stored and acknowledged
    // more: nothing fenced A yet, so those frames are durable as far as A's clients know.
    let (reached, go) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let hook: Hook = {
        let (reached, go) = (reached.clone(), go.clone());
        Arc::new(move |call, key| {
            let held = call == Call::Create && key.starts_with("tenant/generations/");
            let (reached, go) = (reached.clone(), go.clone());
            Box::pin(async move {
                if held && !reached.swap(true, Ordering::SeqCst) {
                    while !go.load(Ordering::SeqCst) {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
                Ok(())
            })
        })
    };
    let root_b = world.work.path().join("b");
    let registry_b = world.hooked_registry(&root_b, hook);
    std::fs::create_dir_all(root_b.join("tenant")).unwrap();
    let on_b = std::thread::scope(|s| {
        let b = s.spawn(|| {
            let conn = Connection::open(
                root_b.join("tenant/data"),
                libsql_sys::rusqlite::OpenFlags::default(),
                LibsqlWalManager::new(registry_b.clone()),
                0,
                None,
            )
            .unwrap();
            rows(&conn)
        });
        let started = Instant::now();
        while !reached.load(Ordering::SeqCst) {
            assert!(started.elapsed() < Duration::from_secs(60), "B claims");
            std::thread::sleep(Duration::from_millis(2));
        }
        insert(&conn_a, 100, 20);
        a.make_durable();
        go.store(true, Ordering::SeqCst);
        b.join().unwrap()
    });
    let on_a = rows(&conn_a);
    assert_eq!(on_a.len(), 120);
    assert_eq!(
        on_b.len(),
        120,
        "B's history holds every frame A acknowledged"
    );
    assert_eq!(on_b, on_a);
    let generation = registry_b.get(&namespace()).unwrap().generation().number;
    assert_eq!(generation, 3, "the generation claimed first is left behind");
    let d = world.machine("d");
    assert_eq!(rows(&d.connect()), on_a);
    drop(conn_a);
    registry_b.shutdown().unwrap();
    let _ = a.registry.shutdown();
}

#[test]
fn a_checkpointed_file_of_a_deleted_namespace_does_not_come_back() {
    for keep_backups in [true, false] {
        let world = World::new();
        let a = world.machine("a");
        let conn = a.connect();
        insert(&conn, 0, 30);
        drop(conn);
        let db_path = a.db_path.clone();
        a.stop();
        // Deleted elsewhere: a deletion mark ends the namespace's history (with a full delete,
        // the older generations' records go too).
        world.runtime.block_on(async {
            use libsql_wal_backend::{Backend, BackendExt};
            let backend = FsBackend::new(world.bucket()).await.unwrap();
            backend
                .delete_namespace(backend.default_config(), &namespace(), keep_backups, 1)
                .await
                .unwrap();
        });
        let a = world.machine("a");
        let err = a.registry.open(&db_path).err().expect("A must not open");
        assert!(
            matches!(
                err,
                libsql_wal::Error::Superseded {
                    newest_generation: 2,
                    ..
                }
            ),
            "keep_backups {keep_backups}: {err}"
        );
    }
}

#[test]
fn a_takeover_cut_short_after_its_claim_loses_nothing_to_the_next_one() {
    use libsql_wal_backend::{Backend, BackendExt, ForkPoint, GenerationKind, GenerationRecord};
    let world = World::new();
    let a = world.machine("a");
    let conn = a.connect();
    insert(&conn, 0, 50);
    a.make_durable();
    let first_point = a.registry.get(&namespace()).unwrap().durable_frame_no();
    insert(&conn, 50, 50);
    a.make_durable();
    let on_a = rows(&conn);
    // B restored up to `first_point`, claimed generation 2, and died before it listed what A
    // stored meanwhile: an empty generation continuing from that point.
    world.runtime.block_on(async {
        let backend = FsBackend::new(world.bucket()).await.unwrap();
        let record = GenerationRecord {
            number: 2,
            created_ms: 1,
            kind: GenerationKind::Log {
                log_id: uuid::Uuid::from_u128(0xb),
                start_frame_no: first_point + 1,
                parent: Some(ForkPoint {
                    generation: 1,
                    frame_no: first_point,
                }),
                rewound: false,
            },
        };
        assert!(backend
            .create_generation(backend.default_config(), &namespace(), &record)
            .await
            .unwrap());
    });
    // C takes over next: it walks back through the empty generation to what A acknowledged.
    let c = world.machine("c");
    let on_c = rows(&c.connect());
    assert_eq!(on_c.len(), on_a.len(), "C holds every row A acknowledged");
    assert_eq!(on_c, on_a);
    drop(conn);
    let _ = a.registry.shutdown();
}

/// Restores `target` of the tenant from `machine`'s storage into a new file under `dir` and
/// returns its rows.
fn restored_rows(machine: &Machine, target: RestoreTarget, dir: &Path) -> Vec<(i64, Vec<u8>)> {
    let dest = dir.join(format!("restored-{}", uuid::Uuid::new_v4()));
    libsql_wal::restore(
        &**machine.registry.storage(),
        &namespace(),
        target,
        &dest,
        &RestoreOptions::default(),
        None,
    )
    .unwrap();
    let conn = connect_native(&dest);
    assert_eq!(integrity_check(&conn), "ok");
    rows(&conn)
}

#[test]
fn a_rewind_branches_the_history_at_its_point_and_fences_off_the_writer_still_running() {
    let world = World::new();
    let a = world.machine("a");
    let conn_a = a.connect();
    insert(&conn_a, 0, 60);
    a.make_durable();
    let shared_a = a.registry.get(&namespace()).unwrap();
    let point = shared_a.durable_frame_no();
    let at_point = rows(&conn_a);
    insert(&conn_a, 60, 40);
    conn_a.execute("DELETE FROM t WHERE id < 10", ()).unwrap();
    a.make_durable();
    let on_a = rows(&conn_a);
    let durable_a = shared_a.durable_frame_no();

    // An operator on machine B rewinds the tenant to the point while A still runs.
    let b = world.machine("b");
    let rewound = b
        .registry
        .rewind(
            &b.db_path,
            RestoreTarget::FrameNo(point),
            &RestoreOptions::default(),
        )
        .unwrap();
    assert_eq!(rewound.restored.end_frame_no, point);
    assert_eq!(
        rewound.parent,
        ForkPoint {
            generation: 1,
            frame_no: point
        }
    );
    assert_eq!(rewound.generation, 2);
    let conn_b = b.connect();
    assert_eq!(rows(&conn_b), at_point, "B is at the point");
    insert(&conn_b, 1000, 20);
    b.make_durable();
    let on_b = rows(&conn_b);

    // A's next upload finds the new generation: it stops acknowledging.
    insert(&conn_a, 100, 5);
    shared_a.seal_now().unwrap();
    assert!(eventually(|| shared_a.fenced().is_some()), "A is fenced");
    assert_eq!(shared_a.fenced(), Some(2));
    assert_eq!(
        shared_a.durable_frame_no(),
        durable_a,
        "nothing more is acknowledged"
    );

    // Latest follows the branch; the history left behind restores by its number, up to what
    // A acknowledged (its fenced upload may be stored after that: it learns of the fence once
    // the upload is stored).
    let work = world.work.path();
    assert_eq!(restored_rows(&b, RestoreTarget::Latest, work), on_b);
    let old = restored_rows(
        &b,
        RestoreTarget::InGeneration {
            generation: 1,
            frame_no: durable_a,
        },
        work,
    );
    assert!(
        old == on_a,
        "{:?} != {:?}",
        old.iter().map(|r| r.0).collect::<Vec<_>>(),
        on_a.iter().map(|r| r.0).collect::<Vec<_>>()
    );
    // B's log goes on in the branch across a restart.
    drop(conn_b);
    b.stop();
    let b = world.machine("b");
    let conn_b = b.connect();
    assert_eq!(rows(&conn_b), on_b);
    insert(&conn_b, 2000, 3);
    b.make_durable();
    assert_eq!(
        b.registry.get(&namespace()).unwrap().generation().number,
        2,
        "no generation of its own at the restart"
    );
    let latest = rows(&conn_b);
    drop(conn_b);
    b.stop();
    assert_eq!(
        restored_rows(&world.machine("c"), RestoreTarget::Latest, work),
        latest
    );
    drop(conn_a);
    assert!(a.registry.shutdown().is_err(), "A's tail is not durable");
}

#[test]
fn a_rewind_of_a_namespace_in_use_or_to_no_stored_point_changes_nothing() {
    let world = World::new();
    // Closing waits this long for durability: a close that waits for frames that can never
    // become durable fails soon.
    let a = Machine::start_with(
        &world.runtime,
        &world.bucket(),
        &world.work.path().join("a"),
        RegistryConfig {
            shutdown_timeout: Duration::from_secs(3),
            ..RegistryConfig::default()
        },
    );
    let conn = a.connect();
    insert(&conn, 0, 30);
    a.make_durable();
    let point = a.registry.get(&namespace()).unwrap().durable_frame_no();
    let at_point = rows(&conn);
    insert(&conn, 30, 30);
    a.make_durable();
    let latest = rows(&conn);
    let generations = || {
        world
            .runtime
            .block_on(a.registry.storage().lineage(&namespace(), None))
            .unwrap()
            .records
            .len()
    };

    // A connection is open: the rewind refuses and the log goes on.
    let err = a
        .registry
        .rewind(
            &a.db_path,
            RestoreTarget::FrameNo(point),
            &RestoreOptions::default(),
        )
        .unwrap_err();
    assert!(matches!(err, libsql_wal::Error::Busy { .. }), "{err}");
    assert_eq!(rows(&conn), latest);
    insert(&conn, 60, 1);
    let latest = rows(&conn);
    drop(conn);

    // Nothing is stored at or before frame 1: the rewind fails before it claims anything.
    let err = a
        .registry
        .rewind(
            &a.db_path,
            RestoreTarget::FrameNo(1),
            &RestoreOptions::default(),
        )
        .unwrap_err();
    assert!(
        matches!(err, libsql_wal::Error::NothingToRestore { .. }),
        "{err}"
    );
    assert_eq!(generations(), 1);
    assert_eq!(rows(&a.connect()), latest, "the database is as it was");

    // Closed, the namespace rewinds in place; its writes go on from the point.
    let rewound = a
        .registry
        .rewind(
            &a.db_path,
            RestoreTarget::FrameNo(point),
            &RestoreOptions::default(),
        )
        .unwrap();
    assert_eq!(rewound.generation, 2);
    assert_eq!(generations(), 2);
    let conn = a.connect();
    assert_eq!(rows(&conn), at_point);
    assert_eq!(integrity_check(&conn), "ok");
    // Nothing written since: the point is all the new generation holds, and it is durable.
    drop(conn);
    a.registry.close(&namespace()).unwrap();
    let conn = a.connect();
    insert(&conn, 500, 2);
    let on_branch = rows(&conn);
    a.make_durable();
    drop(conn);
    let db_dir = a.db_path.parent().unwrap().to_path_buf();
    a.stop();
    assert_eq!(
        restored_rows(
            &world.machine("c"),
            RestoreTarget::Latest,
            world.work.path()
        ),
        on_branch
    );
    assert!(
        !std::fs::read_dir(&db_dir).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with('.')),
        "no temporary file is left"
    );
}

#[test]
fn a_rewind_of_a_log_not_open_since_a_crash_keeps_its_unsent_frames_in_the_history_left_behind() {
    let world = World::new();
    let a = world.machine("a");
    let conn = a.connect();
    insert(&conn, 0, 20);
    a.make_durable();
    let point = a.registry.get(&namespace()).unwrap().durable_frame_no();
    // Committed, but only in the local log: the machine stops without a shutdown.
    insert(&conn, 20, 15);
    let on_a = rows(&conn);
    drop(conn);
    drop(a);

    let a = world.machine("a");
    let rewound = a
        .registry
        .rewind(
            &a.db_path,
            RestoreTarget::FrameNo(point),
            &RestoreOptions::default(),
        )
        .unwrap();
    assert_eq!(rewound.parent.frame_no, point);
    assert_eq!(rows(&a.connect()).len(), 20, "at the point");
    // The rewind opened the log first, so its tail reached the bucket before it went.
    assert_eq!(
        restored_rows(
            &a,
            RestoreTarget::InGeneration {
                generation: rewound.parent.generation,
                frame_no: u64::MAX,
            },
            world.work.path(),
        ),
        on_a
    );
    a.stop();
}
