//! The WAL on the actor pipeline: a libSQL database written through `LibsqlWalManager` with
//! `ActorStorage` over the fs backend and over S3 (s3s-fs on loopback). Segments seal, upload,
//! become durable, get checkpointed into the database file and deleted locally; what the bucket
//! holds covers every frame.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use libsql_sys::Connection;
use libsql_wal::{
    CheckpointThreshold, LibsqlWal, LibsqlWalManager, RegistryConfig, SharedWal, SwapStrategy,
    WalRegistry,
};
use libsql_wal_backend::{Backend, BackendExt, FsBackend, Storage};
use libsql_wal_segment::StdIo;
use libsql_wal_supervisor::{ActorStorage, StorageConfig};
use libsql_wal_testkit::S3TestServer;
use libsql_wal_tests::{count, integrity_check, segment_files};

use crate::hooked::{Call, Hook, HookedBackend};

type File = std::fs::File;

fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "timed out waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Uploads held back until released, as by a bucket that stopped answering them (a test
/// double that only injects the stall, see `hooked`).
struct StalledUploads {
    /// Lets every held upload through.
    release: Arc<AtomicBool>,
    /// Uploads that reached the hook.
    started: Arc<AtomicUsize>,
}

impl StalledUploads {
    /// Returns the hook holding back every upload whose key starts with `prefix` ("" for all).
    fn hook(prefix: &'static str) -> (Hook, Self) {
        let stalled = StalledUploads {
            release: Arc::new(AtomicBool::new(false)),
            started: Arc::new(AtomicUsize::new(0)),
        };
        let (release, started) = (stalled.release.clone(), stalled.started.clone());
        let hook: Hook = Arc::new(move |call, key| {
            let held = call == Call::Put && key.starts_with(prefix);
            let (release, started) = (release.clone(), started.clone());
            Box::pin(async move {
                if held {
                    started.fetch_add(1, Ordering::SeqCst);
                    while !release.load(Ordering::SeqCst) {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
                Ok(())
            })
        });
        (hook, stalled)
    }

    fn release(&self) {
        self.release.store(true, Ordering::SeqCst);
    }

    fn started(&self) -> usize {
        self.started.load(Ordering::SeqCst)
    }
}

/// Starts `ActorStorage` over a fresh fs bucket under `work` whose uploads of keys starting
/// with `prefix` are held back (`StalledUploads`), with `config` and its scratch files there.
fn storage_with_stalled_uploads(
    runtime: &tokio::runtime::Runtime,
    work: &Path,
    prefix: &'static str,
    config: StorageConfig,
) -> (ActorStorage<HookedBackend<FsBackend>, File>, StalledUploads) {
    let fs = runtime
        .block_on(FsBackend::new(&work.join("bucket")))
        .unwrap();
    let (hook, stalled) = StalledUploads::hook(prefix);
    let storage = ActorStorage::start(
        HookedBackend::new(fs, hook),
        StorageConfig {
            scratch_dir: work.join("scratch"),
            ..config
        },
    )
    .unwrap();
    (storage, stalled)
}

/// Opens a connection to the database `{dir}/data` through `manager`, creating `dir`.
fn connect_in<S: Storage<File = File>>(
    manager: &LibsqlWalManager<StdIo, S>,
    dir: &Path,
) -> Connection<LibsqlWal<StdIo, S>> {
    std::fs::create_dir_all(dir).unwrap();
    Connection::open(
        dir.join("data"),
        libsql_sys::rusqlite::OpenFlags::default(),
        manager.clone(),
        0,
        None,
    )
    .unwrap()
}

/// Writes through the WAL on `backend`, checks the pipeline end to end, and returns the
/// backend for inspection.
fn seal_upload_checkpoint_and_delete<B: Backend>(backend: B, runtime: &tokio::runtime::Runtime) {
    let dir = tempfile::tempdir().unwrap();
    let storage = ActorStorage::<B, File>::start(
        backend,
        StorageConfig {
            scratch_dir: dir.path().join("scratch"),
            ..StorageConfig::default()
        },
    )
    .unwrap();
    let registry = Arc::new(WalRegistry::new(
        StdIo,
        storage,
        RegistryConfig {
            swap: SwapStrategy {
                max_frames: 40,
                ..SwapStrategy::default()
            },
            checkpoint_after: CheckpointThreshold::EVERY_SEAL,
            ..RegistryConfig::default()
        },
    ));
    let db_dir = dir.path().join("tenant");
    std::fs::create_dir_all(&db_dir).unwrap();
    let db_path = db_dir.join("data");
    let conn: Connection<LibsqlWal<StdIo, ActorStorage<B, File>>> = Connection::open(
        &db_path,
        libsql_sys::rusqlite::OpenFlags::default(),
        LibsqlWalManager::new(registry.clone()),
        0,
        None,
    )
    .unwrap();
    conn.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
        .unwrap();
    for i in 0..300 {
        conn.execute("INSERT INTO t VALUES (?1, randomblob(3000))", [i])
            .unwrap();
    }
    let shared: Arc<SharedWal<StdIo, ActorStorage<B, File>>> =
        registry.get(&"tenant".parse().unwrap()).unwrap();
    assert!(shared.durable_frame_no() <= shared.last_committed_frame_no());
    wait_until(
        "sealed segments are durable, checkpointed and deleted",
        || {
            shared.sealed_segment_count() == 0
                && shared.durable_frame_no() > 0
                && shared.checkpointed_frame_no() == shared.durable_frame_no()
        },
    );
    assert_eq!(
        segment_files(&db_path),
        1,
        "only the current segment is left locally"
    );
    let durable = shared.durable_frame_no();
    let keys = runtime
        .block_on(
            registry
                .storage()
                .list_segments(shared.generation(), u64::MAX, None),
        )
        .unwrap();
    let mut covered: Vec<(u64, u64)> = keys
        .iter()
        .map(|k| (k.start_frame_no, k.end_frame_no))
        .collect();
    covered.sort();
    assert_eq!(covered.first().map(|c| c.0), Some(1), "{covered:?}");
    assert!(
        covered.windows(2).all(|w| w[1].0 == w[0].1 + 1),
        "{covered:?}"
    );
    assert_eq!(covered.last().map(|c| c.1), Some(durable));
    let metrics = runtime.block_on(registry.storage().metrics()).unwrap();
    let tenant = metrics.namespace(&"tenant".parse().unwrap()).unwrap();
    assert_eq!(tenant.durable_frame_no, durable);
    assert!(tenant.healthy);
    assert_eq!(count(&conn), 300);
    assert_eq!(integrity_check(&conn), "ok");

    // Shutdown seals the tail, waits until it is durable, and checkpoints it.
    let last = shared.last_committed_frame_no();
    drop(conn);
    registry.shutdown().unwrap();
    assert_eq!(shared.durable_frame_no(), last);
    assert_eq!(shared.checkpointed_frame_no(), last);
    let stored_end = runtime
        .block_on(
            registry
                .storage()
                .durable_frame_no(shared.generation(), None),
        )
        .unwrap();
    assert_eq!(stored_end, last);
}

#[test]
fn wal_on_actor_storage_over_fs_uploads_checkpoints_and_deletes_segments() {
    let runtime = tokio_runtime();
    let bucket = tempfile::tempdir().unwrap();
    let backend = runtime.block_on(FsBackend::new(bucket.path())).unwrap();
    seal_upload_checkpoint_and_delete(backend, &runtime);
}

#[test]
fn wal_on_actor_storage_over_s3_uploads_checkpoints_and_deletes_segments() {
    let runtime = tokio_runtime();
    let server = runtime.block_on(S3TestServer::start()).unwrap();
    let backend = runtime.block_on(server.backend("wal")).unwrap();
    seal_upload_checkpoint_and_delete(backend, &runtime);
    let listed = runtime
        .block_on(async {
            let backend = server.backend("wal").await.unwrap();
            backend.list_namespaces(backend.default_config()).await
        })
        .unwrap();
    assert_eq!(listed, vec!["tenant".parse().unwrap()]);
}

#[test]
fn a_namespace_whose_queue_is_full_holds_up_no_other_namespace_age_seal() {
    let runtime = tokio_runtime();
    let work = tempfile::tempdir().unwrap();
    // Uploads of namespace `stuck` wait until released (a bucket that stopped answering it).
    let (storage, stalled) = storage_with_stalled_uploads(
        &runtime,
        work.path(),
        "stuck/",
        StorageConfig {
            // One segment of a namespace waiting to be durable fills its queue.
            max_enqueued_segments: 1,
            ..StorageConfig::default()
        },
    );
    let registry = Arc::new(WalRegistry::new(
        StdIo,
        storage,
        RegistryConfig {
            swap: SwapStrategy {
                max_age: Duration::from_millis(100),
                ..SwapStrategy::default()
            },
            age_check_interval: Duration::from_millis(20),
            shutdown_timeout: Duration::from_secs(60),
            ..RegistryConfig::default()
        },
    ));
    let manager = LibsqlWalManager::new(registry.clone());
    let connect = |name: &str| connect_in(&manager, &work.path().join(name));
    let stuck = connect("stuck");
    stuck
        .execute_batch("CREATE TABLE t(a); INSERT INTO t VALUES (1);")
        .unwrap();
    // Its first age seal is uploading (held), its second one finds the queue full.
    wait_until("the first upload of `stuck` started", || {
        stalled.started() > 0
    });
    stuck.execute("INSERT INTO t VALUES (2)", ()).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // A third age seal while the second one's hand-over still waits for room.
    stuck.execute("INSERT INTO t VALUES (3)", ()).unwrap();
    std::thread::sleep(Duration::from_millis(300));

    // Another namespace still seals by age and becomes durable.
    let free = connect("free");
    free.execute_batch("CREATE TABLE t(a); INSERT INTO t VALUES (1);")
        .unwrap();
    let shared = registry.get(&"free".parse().unwrap()).unwrap();
    let end = shared.last_committed_frame_no();
    wait_until("`free` sealed by age and durable", || {
        shared.durable_frame_no() >= end
    });

    stalled.release();
    drop((stuck, free, shared));
    registry.shutdown().unwrap();
    runtime.block_on(registry.storage().shutdown());
}

#[test]
fn a_segment_storage_refuses_after_store_returned_is_known_to_the_wal_and_sent_again() {
    let runtime = tokio_runtime();
    let work = tempfile::tempdir().unwrap();
    let bucket = work.path().join("bucket");
    // Uploads wait until released, so the first segment keeps the storage from draining.
    let (storage, stalled) = storage_with_stalled_uploads(
        &runtime,
        work.path(),
        "",
        StorageConfig {
            shutdown_timeout: Duration::from_secs(60),
            ..StorageConfig::default()
        },
    );
    let registry = Arc::new(WalRegistry::new(
        StdIo,
        storage,
        RegistryConfig {
            shutdown_timeout: Duration::from_secs(2),
            ..RegistryConfig::default()
        },
    ));
    let db_dir = work.path().join("tenant");
    let conn = connect_in(&LibsqlWalManager::new(registry.clone()), &db_dir);
    conn.execute_batch("CREATE TABLE t(a); INSERT INTO t VALUES (1);")
        .unwrap();
    let shared = registry.get(&"tenant".parse().unwrap()).unwrap();
    assert!(shared.seal_now().unwrap());
    wait_until("the first upload started", || stalled.started() > 0);

    std::thread::scope(|s| {
        // Storage begins to shut down: it drains (held by the upload) and refuses new segments.
        let stopping = s.spawn(|| runtime.block_on(registry.storage().shutdown()));
        wait_until("storage stops accepting", || {
            !runtime
                .block_on(registry.storage().metrics())
                .unwrap()
                .accepting
        });
        conn.execute("INSERT INTO t VALUES (2)", ()).unwrap();
        assert!(
            shared.seal_now().unwrap(),
            "store returns before the refusal"
        );
        wait_until("the WAL learnt of the refusal", || {
            shared.pending_segments() == 1
        });
        stalled.release();
        stopping.join().unwrap();
    });
    let end = shared.last_committed_frame_no();
    assert!(
        shared.durable_frame_no() < end,
        "the refused segment is not durable"
    );
    drop((conn, shared));
    assert!(
        registry.shutdown().is_err(),
        "shutdown says what is not durable"
    );

    // The next start hands the refused segment over again: every frame becomes durable.
    let storage = ActorStorage::<_, File>::start(
        runtime.block_on(FsBackend::new(&bucket)).unwrap(),
        StorageConfig {
            scratch_dir: work.path().join("scratch"),
            ..StorageConfig::default()
        },
    )
    .unwrap();
    let registry = Arc::new(WalRegistry::new(StdIo, storage, RegistryConfig::default()));
    let conn = connect_in(&LibsqlWalManager::new(registry.clone()), &db_dir);
    assert_eq!(count(&conn), 2);
    let shared = registry.get(&"tenant".parse().unwrap()).unwrap();
    wait_until("everything durable", || shared.durable_frame_no() >= end);
    drop((conn, shared));
    registry.shutdown().unwrap();
}

/// Returns the file descriptors this process has open.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn ten_thousand_namespaces_opened_and_closed_leave_no_state_and_no_file_open() {
    let runtime = tokio_runtime();
    let work = tempfile::tempdir().unwrap();
    let fs = runtime
        .block_on(FsBackend::new(&work.path().join("bucket")))
        .unwrap();
    let storage = ActorStorage::<_, File>::start(
        fs,
        StorageConfig {
            scratch_dir: work.path().join("scratch"),
            ..StorageConfig::default()
        },
    )
    .unwrap();
    let registry = Arc::new(WalRegistry::new(StdIo, storage, RegistryConfig::default()));
    let manager = LibsqlWalManager::new(registry.clone());
    let fds_before = open_fds();
    for i in 0..10_000 {
        let name = format!("tenant-{i}");
        let conn = connect_in(&manager, &work.path().join("data").join(&name));
        if i % 10 == 0 {
            // Some write, seal, upload and checkpoint before they close.
            conn.execute_batch("CREATE TABLE t(a); INSERT INTO t VALUES (1);")
                .unwrap();
        } else {
            conn.query_row("SELECT count(*) FROM sqlite_schema", (), |r| {
                r.get::<_, i64>(0)
            })
            .unwrap();
        }
        let namespace = name.parse().unwrap();
        let shared = registry.get(&namespace).expect("the namespace is open");
        assert_eq!(shared.connections(), 1, "{name}");
        drop(shared);
        let busy = registry.close(&namespace).unwrap_err();
        assert!(matches!(busy, libsql_wal::Error::Busy { .. }), "{busy}");
        drop(conn);
        registry.close(&namespace).unwrap();
        assert!(registry.get(&namespace).is_none());
    }
    assert!(
        open_fds() <= fds_before + 16,
        "{} file descriptors open, {fds_before} before",
        open_fds()
    );
    let metrics = runtime.block_on(registry.storage().metrics()).unwrap();
    assert!(
        metrics.namespaces.is_empty(),
        "{} namespaces still in storage",
        metrics.namespaces.len()
    );
    // A closed namespace opens again on demand, with what it had.
    let conn = connect_in(&manager, &work.path().join("data/tenant-0"));
    assert_eq!(count(&conn), 1);
    drop(conn);
    registry.shutdown().unwrap();
    runtime.block_on(registry.storage().shutdown());
}

#[test]
fn shutdown_during_a_bucket_outage_ends_at_its_deadline() {
    let runtime = tokio_runtime();
    let work = tempfile::tempdir().unwrap();
    // The bucket stops answering uploads.
    let (storage, stalled) = storage_with_stalled_uploads(
        &runtime,
        work.path(),
        "",
        StorageConfig {
            // One segment waiting to be durable fills a namespace's queue.
            max_enqueued_segments: 1,
            ..StorageConfig::default()
        },
    );
    let registry = Arc::new(WalRegistry::new(
        StdIo,
        storage,
        RegistryConfig {
            shutdown_timeout: Duration::from_millis(500),
            ..RegistryConfig::default()
        },
    ));
    let manager = LibsqlWalManager::new(registry.clone());
    for name in ["a", "b", "c"] {
        let conn = connect_in(&manager, &work.path().join(name));
        conn.execute_batch("CREATE TABLE t(a); INSERT INTO t VALUES (1);")
            .unwrap();
        // The first segment fills the queue; the shutdown's seal makes a second one.
        let shared = registry.get(&name.parse().unwrap()).unwrap();
        assert!(shared.seal_now().unwrap());
        conn.execute("INSERT INTO t VALUES (2)", ()).unwrap();
    }
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let stopping = registry.clone();
    std::thread::spawn(move || {
        let _ = done_tx.send(stopping.shutdown());
    });
    let outcome = done_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("shutdown ends at its deadline");
    assert!(
        matches!(outcome, Err(libsql_wal::Error::DurableTimeout { .. })),
        "{outcome:?}"
    );
    stalled.release();
    runtime.block_on(registry.storage().shutdown());
}
