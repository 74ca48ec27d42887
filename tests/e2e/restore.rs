//! Restore from durable storage alone, at points in time, over the fs backend and over S3
//! (s3s-fs on loopback): a seeded workload runs on libsql-wal (with `ActorStorage`) and on
//! native SQLite side by side; at many moments the namespace seals, the segment becomes durable,
//! and (frame_no, time, a checkpointed copy of the native database) is recorded. Every point is
//! then restored by frame_no and by time on a fresh storage and compared page by page; again
//! after remote compaction; again after retention (exact inside the window, coarser outside).
//! Bad objects (a flipped byte, a deleted object) fail with an error naming them and leave no
//! file behind; a compaction or retention cut short (an injected failure) leaves the bucket
//! restorable.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use libsql_sys::Connection;
use libsql_wal::{
    restore, LibsqlWal, LibsqlWalManager, RegistryConfig, RestoreOptions, RestoreReport,
    RestoreTarget, SharedWal, SwapStrategy, WalRegistry,
};
use libsql_wal_backend::{
    apply_retention, compact, Backend, CompactionReport, CompactionStrategy, FsBackend,
    NamespaceName, RetentionReport,
};
use libsql_wal_segment::StdIo;
use libsql_wal_supervisor::{ActorStorage, StorageConfig};
use libsql_wal_testkit::S3TestServer;
use libsql_wal_tests::oracle::{compare_pages, run_statement};
use libsql_wal_tests::{connect_native, Rng};

use crate::hooked::{Call, HookedBackend};

type File = std::fs::File;

/// One recorded moment.
#[derive(Debug, Clone)]
struct Point {
    end_frame_no: u64,
    timestamp_ms: u64,
    /// A checkpointed copy of the native database at that moment.
    copy: PathBuf,
}

fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn namespace() -> NamespaceName {
    "tenant".parse().unwrap()
}

fn storage_config(dir: &Path) -> StorageConfig {
    StorageConfig {
        scratch_dir: dir.join("scratch"),
        ..StorageConfig::default()
    }
}

fn hex_blob(rng: &mut Rng, len: usize) -> String {
    let bytes: String = (0..len)
        .map(|_| format!("{:02x}", rng.next_u64() as u8))
        .collect();
    format!("x'{bytes}'")
}

/// The next statement of the seeded workload.
fn statement(rng: &mut Rng) -> String {
    match rng.below(10) {
        0..=4 => {
            let len = [20, 500, 3000, 7000][rng.below(4) as usize];
            format!(
                "INSERT INTO t(v, w) VALUES ({}, 'w{}')",
                hex_blob(rng, len),
                rng.below(500)
            )
        }
        5..=6 => {
            let len = 50 + rng.below(1500) as usize;
            format!(
                "UPDATE t SET v = {}, w = 'u{}' WHERE id % 5 = {}",
                hex_blob(rng, len),
                rng.below(100),
                rng.below(5)
            )
        }
        7 => format!("DELETE FROM t WHERE id % 9 = {}", rng.below(9)),
        8 => format!(
            "CREATE TABLE IF NOT EXISTS t{n}(a INTEGER PRIMARY KEY, b TEXT); INSERT INTO t{n}(b) VALUES ('{n}')",
            n = rng.below(4)
        ),
        _ => "VACUUM".into(),
    }
}

/// Runs a seeded workload on libsql-wal over `backend` and on native SQLite, recording `points`
/// moments under `work`. Shuts the registry down at the end (the tail becomes durable).
fn record_history<B: Backend>(backend: B, work: &Path, seed: u64, points: usize) -> Vec<Point> {
    let storage = ActorStorage::<B, File>::start(backend, storage_config(work)).unwrap();
    let registry = Arc::new(WalRegistry::new(
        StdIo,
        storage,
        RegistryConfig {
            // Only the test seals, so every stored segment ends at a recorded point.
            swap: SwapStrategy {
                max_frames: u64::MAX,
                max_bytes: u64::MAX,
                max_age: Duration::from_secs(3600),
            },
            ..RegistryConfig::default()
        },
    ));
    let db_dir = work.join("tenant");
    std::fs::create_dir_all(&db_dir).unwrap();
    let conn: Connection<LibsqlWal<StdIo, ActorStorage<B, File>>> = Connection::open(
        db_dir.join("data"),
        libsql_sys::rusqlite::OpenFlags::default(),
        LibsqlWalManager::new(registry.clone()),
        0,
        None,
    )
    .unwrap();
    let native_path = work.join("native");
    let native = connect_native(&native_path);
    let both = |sql: &str| {
        let ours = run_statement(&conn, sql);
        let theirs = run_statement(&native, sql);
        assert_eq!(ours, theirs, "{sql}");
    };
    both("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB, w TEXT)");
    both("CREATE INDEX t_w ON t(w)");
    let shared: Arc<SharedWal<StdIo, ActorStorage<B, File>>> = registry.get(&namespace()).unwrap();
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut recorded = Vec::new();
    for point in 0..points {
        for _ in 0..1 + rng.below(6) {
            both(&statement(&mut rng));
        }
        assert!(shared.seal_now().unwrap());
        let end = shared.last_committed_frame_no();
        let started = Instant::now();
        while shared.durable_frame_no() < end {
            assert!(started.elapsed() < Duration::from_secs(60), "durable");
            std::thread::sleep(Duration::from_millis(2));
        }
        // Sealed at or before this time; the next seal is strictly after it.
        std::thread::sleep(Duration::from_millis(3));
        let timestamp_ms = now_ms();
        std::thread::sleep(Duration::from_millis(3));
        native
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .unwrap();
        let copy = work.join(format!("point-{point}"));
        std::fs::copy(&native_path, &copy).unwrap();
        recorded.push(Point {
            end_frame_no: end,
            timestamp_ms,
            copy,
        });
    }
    drop(conn);
    registry.shutdown().unwrap();
    recorded
}

/// Restores `target` from a fresh storage over `backend` into `dest`.
fn restore_from<B: Backend>(
    backend: B,
    work: &Path,
    target: RestoreTarget,
    dest: &Path,
) -> libsql_wal::Result<RestoreReport> {
    let storage = ActorStorage::<B, File>::start(backend, storage_config(work)).unwrap();
    restore(
        &storage,
        &namespace(),
        target,
        dest,
        &RestoreOptions::default(),
        None,
    )
}

/// Restores every point by frame_no and by time and compares each with its copy.
fn assert_every_point_restores<B: Backend>(
    make_backend: &dyn Fn() -> B,
    work: &Path,
    points: &[Point],
    label: &str,
) {
    let dir = work.join(format!("restored-{label}"));
    std::fs::create_dir_all(&dir).unwrap();
    for (i, point) in points.iter().enumerate() {
        for (kind, target) in [
            ("frame", RestoreTarget::FrameNo(point.end_frame_no)),
            ("time", RestoreTarget::TimestampMs(point.timestamp_ms)),
        ] {
            let dest = dir.join(format!("{i}-{kind}"));
            let report = restore_from(make_backend(), work, target, &dest)
                .unwrap_or_else(|e| panic!("{label}: point {i} by {kind}: {e}"));
            assert_eq!(
                report.end_frame_no, point.end_frame_no,
                "{label} {i} {kind}"
            );
            compare_pages(&dest, &point.copy)
                .unwrap_or_else(|why| panic!("{label}: point {i} by {kind}: {why}"));
        }
    }
    let dest = dir.join("latest");
    let latest = restore_from(make_backend(), work, RestoreTarget::Latest, &dest).unwrap();
    let last = points.last().unwrap();
    assert_eq!(latest.end_frame_no, last.end_frame_no);
    compare_pages(&dest, &last.copy).unwrap();
    let conn = connect_native(&dest);
    assert_eq!(libsql_wal_tests::integrity_check(&conn), "ok");
}

/// Compacts the namespace on `backend` with `strategy`.
fn compact_on<B: Backend>(
    runtime: &tokio::runtime::Runtime,
    backend: &B,
    strategy: CompactionStrategy,
    work: &Path,
) -> libsql_wal_backend::Result<CompactionReport> {
    let generation = runtime.block_on(libsql_wal_tests::newest_generation(backend, &namespace()));
    runtime.block_on(compact(
        backend,
        backend.default_config(),
        &generation,
        strategy,
        &work.join("compaction"),
        |_, _| {},
    ))
}

/// Applies retention to the namespace on `backend`, the window opening `window` before `now`.
fn retain_on<B: Backend>(
    runtime: &tokio::runtime::Runtime,
    backend: &B,
    window: Duration,
    now: u64,
) -> libsql_wal_backend::Result<RetentionReport> {
    let generation = runtime.block_on(libsql_wal_tests::newest_generation(backend, &namespace()));
    runtime.block_on(apply_retention(
        backend,
        backend.default_config(),
        &generation,
        window,
        now,
    ))
}

/// The whole story on one backend: history, restore, compaction, restore, retention, restore.
fn point_in_time<B: Backend>(
    make_backend: &dyn Fn() -> B,
    runtime: &tokio::runtime::Runtime,
    strategy: CompactionStrategy,
    seed: u64,
) {
    let work = tempfile::tempdir().unwrap();
    let points = record_history(make_backend(), work.path(), seed, 14);
    assert_every_point_restores(make_backend, work.path(), &points, "plain");

    let backend = make_backend();
    let report = compact_on(runtime, &backend, strategy, work.path()).unwrap();
    assert!(
        !report.groups.is_empty() && report.chain_after < report.chain_before,
        "{report:?}"
    );
    assert_every_point_restores(make_backend, work.path(), &points, "compacted");
    let latest = restore_from(
        make_backend(),
        work.path(),
        RestoreTarget::Latest,
        &work.path().join("latest-compacted"),
    )
    .unwrap();
    assert_eq!(latest.chain_len, report.chain_after);

    // The window opens just after the point where the first compacted segment ends, so that
    // segment covers what came before: those go, every point after it stays exact.
    let first_end = report.groups[0].key.end_frame_no;
    let inside = 1 + points
        .iter()
        .position(|p| p.end_frame_no == first_end)
        .unwrap();
    assert!(inside < points.len(), "{report:?}");
    let now = now_ms();
    let window = Duration::from_millis(now - points[inside - 1].timestamp_ms - 1);
    let retention = retain_on(runtime, &backend, window, now).unwrap();
    assert!(!retention.deleted.is_empty(), "{retention:?}");
    assert_every_point_restores(make_backend, work.path(), &points[inside..], "retained");
    // Before the window a restore is coarser: it lands on a recorded point at or before the
    // target, or says nothing is left there.
    let dir = work.path().join("before-window");
    std::fs::create_dir_all(&dir).unwrap();
    for (i, point) in points[..inside].iter().enumerate() {
        let dest = dir.join(format!("{i}"));
        match restore_from(
            make_backend(),
            work.path(),
            RestoreTarget::FrameNo(point.end_frame_no),
            &dest,
        ) {
            Ok(report) => {
                assert!(report.end_frame_no <= point.end_frame_no);
                let landed = points
                    .iter()
                    .find(|p| p.end_frame_no == report.end_frame_no)
                    .unwrap();
                compare_pages(&dest, &landed.copy).unwrap();
            }
            Err(libsql_wal::Error::NothingToRestore { .. }) => assert!(!dest.exists()),
            Err(e) => panic!("point {i} before the window: {e}"),
        }
    }
}

#[test]
fn every_recorded_point_restores_exactly_from_fs_through_compaction_and_retention() {
    let runtime = tokio_runtime();
    let bucket = tempfile::tempdir().unwrap();
    let path = bucket.path().to_path_buf();
    let handle = runtime.handle().clone();
    let make = move || handle.block_on(FsBackend::new(&path)).unwrap();
    point_in_time(&make, &runtime, CompactionStrategy::Tiered { fan_in: 3 }, 7);
}

#[test]
fn every_recorded_point_restores_exactly_from_s3_through_compaction_and_retention() {
    let runtime = tokio_runtime();
    let server = runtime.block_on(S3TestServer::start()).unwrap();
    let handle = runtime.handle().clone();
    let make = || handle.block_on(server.backend("pitr")).unwrap();
    point_in_time(&make, &runtime, CompactionStrategy::Logarithmic, 11);
}

/// Returns the files of the fs bucket under `dir` whose path contains `part`, sorted.
fn objects(bucket: &Path, part: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![bucket.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.to_string_lossy().contains(part) {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// The object's key: its path under the bucket.
fn key_of(bucket: &Path, object: &Path) -> String {
    object
        .strip_prefix(bucket)
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

#[test]
fn a_bad_or_missing_object_fails_the_restore_naming_it_and_leaves_nothing() {
    let runtime = tokio_runtime();
    let bucket = tempfile::tempdir().unwrap();
    let make = || runtime.block_on(FsBackend::new(bucket.path())).unwrap();
    let work = tempfile::tempdir().unwrap();
    let points = record_history(make(), work.path(), 3, 6);
    let out = tempfile::tempdir().unwrap();
    let attempt = |name: &str| {
        let dest = out.path().join(name);
        let err = restore_from(make(), work.path(), RestoreTarget::Latest, &dest).unwrap_err();
        assert!(!dest.exists());
        let left: Vec<_> = std::fs::read_dir(out.path()).unwrap().collect();
        assert!(left.is_empty(), "files left behind: {left:?}");
        err.to_string()
    };
    let data = objects(bucket.path(), "/segments/");
    let indexes = objects(bucket.path(), "/indexes/");
    assert_eq!(data.len(), points.len());
    // Every index is read: a flipped byte in any fails the restore, naming it.
    for object in &indexes {
        let original = std::fs::read(object).unwrap();
        let mut flipped = original.clone();
        flipped[original.len() / 2] ^= 0x40;
        std::fs::write(object, &flipped).unwrap();
        let err = attempt("flipped-index");
        assert!(err.contains(&key_of(bucket.path(), object)), "{err}");
        std::fs::write(object, &original).unwrap();
    }
    // Data is read only for segments that still own a page: a flipped byte in one of those
    // fails the restore naming it; one that is not read changes nothing.
    let mut failed = 0;
    for object in &data {
        let original = std::fs::read(object).unwrap();
        let mut flipped = original.clone();
        flipped[200] ^= 0x40;
        std::fs::write(object, &flipped).unwrap();
        let dest = out.path().join("flipped-data");
        match restore_from(make(), work.path(), RestoreTarget::Latest, &dest) {
            Ok(_) => {
                compare_pages(&dest, &points[points.len() - 1].copy).unwrap();
                std::fs::remove_file(&dest).unwrap();
            }
            Err(err) => {
                let err = err.to_string();
                assert!(err.contains(&key_of(bucket.path(), object)), "{err}");
                assert!(std::fs::read_dir(out.path()).unwrap().next().is_none());
                failed += 1;
            }
        }
        std::fs::write(object, &original).unwrap();
    }
    assert!(
        failed >= 2,
        "the newest segment and at least one more are read"
    );
    // Sorted by key: newest-ending first; one in the middle of the chain.
    let (middle_data, middle_index) = (&data[2], &indexes[2]);

    let index = std::fs::read(middle_index).unwrap();
    std::fs::remove_file(middle_index).unwrap();
    let err = attempt("no-index");
    assert!(err.contains(&key_of(bucket.path(), middle_index)), "{err}");
    std::fs::write(middle_index, &index).unwrap();

    let original = std::fs::read(middle_data).unwrap();
    std::fs::remove_file(middle_data).unwrap();
    let err = attempt("no-data");
    let key: libsql_wal_backend::SegmentKey = middle_data
        .file_name()
        .unwrap()
        .to_string_lossy()
        .parse()
        .unwrap();
    assert!(
        err.contains(&format!("{}..={}", key.start_frame_no, key.end_frame_no)),
        "{err}"
    );
    std::fs::write(middle_data, &original).unwrap();

    // Put back, everything restores again.
    let dest = out.path().join("whole");
    restore_from(make(), work.path(), RestoreTarget::Latest, &dest).unwrap();
    compare_pages(&dest, &points[points.len() - 1].copy).unwrap();
}

/// `inner`, with every `put_*` and `delete` from the `fail_at`th on (counting from 1) failing:
/// a process killed part way.
fn failing_from<B: Backend>(inner: B, fail_at: usize) -> HookedBackend<B> {
    let calls = Arc::new(AtomicUsize::new(0));
    HookedBackend::new(
        inner,
        Arc::new(move |call, _| {
            let counted = matches!(call, Call::Put | Call::Delete);
            let fail = counted && calls.fetch_add(1, Ordering::SeqCst) + 1 >= fail_at;
            Box::pin(async move {
                if fail {
                    return Err(libsql_wal_backend::Error::transient(
                        "an injected failure",
                        "killed",
                    ));
                }
                Ok(())
            })
        }),
    )
}

#[test]
fn compaction_or_retention_cut_short_leaves_the_bucket_restorable() {
    let runtime = tokio_runtime();
    let bucket = tempfile::tempdir().unwrap();
    let make = || runtime.block_on(FsBackend::new(bucket.path())).unwrap();
    let work = tempfile::tempdir().unwrap();
    let points = record_history(make(), work.path(), 5, 12);
    let failing = |fail_at| failing_from(make(), fail_at);
    // Killed after the first merged index went up, before its data: an orphan index.
    let backend = failing(2);
    let err = compact_on(
        &runtime,
        &backend,
        CompactionStrategy::Tiered { fan_in: 2 },
        work.path(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("injected"), "{err}");
    assert_every_point_restores(&make, work.path(), &points, "cut-compaction");

    // A whole compaction, then retention killed after three deletes (one segment's data and
    // index, then the next one's data only).
    let backend = make();
    compact_on(
        &runtime,
        &backend,
        CompactionStrategy::Tiered { fan_in: 2 },
        work.path(),
    )
    .unwrap();
    let backend = failing(4);
    let now = now_ms();
    let inside = 6;
    let window = Duration::from_millis(now - points[inside - 1].timestamp_ms - 1);
    let err = retain_on(&runtime, &backend, window, now).unwrap_err();
    assert!(err.to_string().contains("injected"), "{err}");
    assert_every_point_restores(&make, work.path(), &points[inside..], "cut-retention");
    // Finishing the job later works too.
    let backend = make();
    retain_on(&runtime, &backend, window, now).unwrap();
    assert_every_point_restores(&make, work.path(), &points[inside..], "retention-finished");
}

#[test]
fn a_restore_racing_retention_plans_again_when_an_object_of_its_plan_is_gone() {
    let runtime = tokio_runtime();
    let bucket = tempfile::tempdir().unwrap();
    let make = || runtime.block_on(FsBackend::new(bucket.path())).unwrap();
    let work = tempfile::tempdir().unwrap();
    let points = record_history(make(), work.path(), 13, 9);
    let report = compact_on(
        &runtime,
        &make(),
        CompactionStrategy::Tiered { fan_in: 3 },
        work.path(),
    )
    .unwrap();
    let compacted: Vec<String> = report.groups.iter().map(|g| g.key.to_string()).collect();
    assert!(!compacted.is_empty(), "{report:?}");
    // Planned on a listing that holds the compacted segments; the first one fetched goes (data
    // and index) before its fetch lands, as retention or compaction elsewhere would do it.
    let root = bucket.path().to_path_buf();
    let removed = Arc::new(std::sync::Mutex::new(None::<String>));
    let hooked = {
        let removed = removed.clone();
        HookedBackend::new(
            make(),
            Arc::new(move |call, key| {
                if call == Call::Get {
                    let mut removed = removed.lock().unwrap();
                    let name = key.rsplit('/').next().unwrap_or_default().to_string();
                    if removed.is_none() && compacted.contains(&name) {
                        for kind in ["segments", "indexes"] {
                            let generation = key.split('/').take(3).collect::<Vec<_>>().join("/");
                            std::fs::remove_file(root.join(format!("{generation}/{kind}/{name}")))
                                .unwrap();
                        }
                        *removed = Some(name);
                    }
                }
                Box::pin(async { Ok(()) })
            }),
        )
    };
    let dest = work.path().join("raced");
    let restored = restore_from(hooked, work.path(), RestoreTarget::Latest, &dest)
        .expect("the restore planned again on what is left");
    assert!(removed.lock().unwrap().is_some(), "the race happened");
    let last = points.last().unwrap();
    assert_eq!(restored.end_frame_no, last.end_frame_no);
    compare_pages(&dest, &last.copy).unwrap();
}

#[test]
fn a_restore_never_replaces_a_file_that_appears_at_its_destination_meanwhile() {
    let runtime = tokio_runtime();
    let bucket = tempfile::tempdir().unwrap();
    let make = || runtime.block_on(FsBackend::new(bucket.path())).unwrap();
    let work = tempfile::tempdir().unwrap();
    record_history(make(), work.path(), 17, 3);
    let dest = work.path().join("taken");
    let hooked = {
        let dest = dest.clone();
        HookedBackend::new(
            make(),
            Arc::new(move |call, _| {
                if call == Call::Get && !dest.exists() {
                    std::fs::write(&dest, b"somebody else's file").unwrap();
                }
                Box::pin(async { Ok(()) })
            }),
        )
    };
    let err = restore_from(hooked, work.path(), RestoreTarget::Latest, &dest).unwrap_err();
    assert!(
        matches!(err, libsql_wal::Error::DestinationExists { .. }),
        "{err}"
    );
    assert_eq!(std::fs::read(&dest).unwrap(), b"somebody else's file");
    let left: Vec<_> = std::fs::read_dir(work.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("restoring"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
