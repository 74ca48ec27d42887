//! The WAL on the actor pipeline: a libSQL database written through `LibsqlWalManager` with
//! `ActorStorage` over the fs backend and over S3 (s3s-fs on loopback). Segments seal, upload,
//! become durable, get checkpointed into the database file and deleted locally; what the bucket
//! holds covers every frame.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use libsql_sys::Connection;
use libsql_wal::{
    LibsqlWal, LibsqlWalManager, RegistryConfig, SharedWal, SwapStrategy, WalRegistry,
};
use libsql_wal_backend::{Backend, BackendExt, FsBackend, S3TestServer, Storage};
use libsql_wal_segment::StdIo;
use libsql_wal_supervisor::{ActorStorage, StorageConfig};
use libsql_wal_tests::{count, integrity_check};

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

/// Returns the segment files of the database at `db_path`.
fn local_segments(db_path: &Path) -> usize {
    let mut dir = db_path.as_os_str().to_os_string();
    dir.push("-segments");
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".seg")
        })
        .count()
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
        local_segments(&db_path),
        1,
        "only the current segment is left locally"
    );
    let durable = shared.durable_frame_no();
    let keys = runtime
        .block_on(
            registry
                .storage()
                .list_segments(&"tenant".parse().unwrap(), u64::MAX, None),
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
                .durable_frame_no(&"tenant".parse().unwrap(), None),
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
