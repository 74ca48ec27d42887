//! Replication through the WAL's own parts: steps served by a primary's log
//! (`ReplicationSource`) applied by an `Injector` to a replica's log, both real registries over
//! real files, with SQLite reading the replica. The transport (HTTP) is tested in the server.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use libsql_wal::{
    CheckpointThreshold, FullImages, Injector, RegistryConfig, ReplicationSource, StepInjector,
    SwapStrategy,
};
use libsql_wal_segment::format::PAGE_SIZE;
use libsql_wal_tests::{integrity_check, TestDb};

/// Small segments and eager checkpoints: steps then come from the current segment, sealed
/// segments and the database file.
fn busy_config() -> RegistryConfig {
    RegistryConfig {
        swap: SwapStrategy {
            max_frames: 24,
            ..SwapStrategy::default()
        },
        checkpoint_after: CheckpointThreshold {
            frames: 1,
            segments: 1,
        },
        ..RegistryConfig::default()
    }
}

/// Applies one step from `primary` to `injector`, if there is one; returns the primary's
/// frame_no the replica is at, and whether the step was a full image.
fn pump(primary: &dyn ReplicationSource, injector: &mut dyn StepInjector) -> (u64, bool) {
    let after = injector.resume_from(&primary.hello());
    let Some(mut step) = primary.step_after(after, FullImages::Allowed).unwrap() else {
        return (after, false);
    };
    let header = step.header();
    injector.begin(&header).unwrap();
    let mut page = vec![0; PAGE_SIZE];
    let mut pages = 0;
    while let Some(page_no) = step.next_page(&mut page).unwrap() {
        injector.page(page_no, &page).unwrap();
        pages += 1;
    }
    assert_eq!(pages, header.pages, "a step yields the pages it announced");
    (injector.commit().unwrap(), header.full_image)
}

/// Every page of a log's newest snapshot, and the database size.
fn image(log: &dyn ReplicationSource) -> Vec<(u32, Vec<u8>)> {
    let Some(mut step) = log.step_after(0, FullImages::Allowed).unwrap() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut page = vec![0; PAGE_SIZE];
    while let Some(page_no) = step.next_page(&mut page).unwrap() {
        out.push((page_no, page.clone()));
    }
    assert_eq!(out.len(), step.header().db_size as usize);
    out
}

/// Transaction `k` of the workload: a row of its own, a blob that spills pages, and the
/// counter row set to `k`. A state a commit made has rows 1..=k and counter k.
fn write_tx<W: libsql_sys::wal::Wal>(conn: &libsql_sys::Connection<W>, k: i64) {
    conn.execute_batch("BEGIN").unwrap();
    conn.execute(
        "INSERT INTO t(a, b) VALUES (?1, randomblob(1500 + ?1 % 7 * 500))",
        [k],
    )
    .unwrap();
    conn.execute("UPDATE counter SET k = ?1", [k]).unwrap();
    conn.execute_batch("COMMIT").unwrap();
}

/// One transaction: a replica never shows the tables without the counter's row.
const SCHEMA: &str = "BEGIN; CREATE TABLE t(a INTEGER PRIMARY KEY, b BLOB); CREATE TABLE counter(k INTEGER); INSERT INTO counter VALUES (0); COMMIT;";

/// Asserts that the replica shows a state the primary committed: rows 1..=k, counter k.
fn assert_committed_state<W: libsql_sys::wal::Wal>(conn: &libsql_sys::Connection<W>) -> i64 {
    let (k, rows, max): (i64, i64, Option<i64>) = conn
        .query_row(
            "SELECT (SELECT k FROM counter), count(*), max(a) FROM t",
            (),
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!((rows, max.unwrap_or(0)), (k, k), "a state between commits");
    k
}

#[test]
fn a_replica_converges_page_for_page_under_concurrent_writes_on_many_namespaces() {
    const NAMESPACES: usize = 4;
    const TRANSACTIONS: i64 = 150;
    let primary = TestDb::new(busy_config());
    let replica = TestDb::new(busy_config());
    std::thread::scope(|s| {
        for n in 0..NAMESPACES {
            let ns = format!("ns{n}");
            let (primary, replica) = (&primary, &replica);
            let done = Arc::new(AtomicBool::new(false));
            let writer_done = done.clone();
            let writer_ns = ns.clone();
            s.spawn(move || {
                let conn = primary.connect(&writer_ns);
                conn.execute_batch(SCHEMA).unwrap();
                for k in 1..=TRANSACTIONS {
                    write_tx(&conn, k);
                }
                writer_done.store(true, Ordering::SeqCst);
            });
            s.spawn(move || {
                let source = loop {
                    if let Ok(log) = primary.registry().open(&primary.db_path(&ns)) {
                        break log;
                    }
                };
                let reader = replica.connect(&ns);
                let log = replica.registry().open(&replica.db_path(&ns)).unwrap();
                let mut injector = Injector::open(log).unwrap();
                let mut full_images = 0;
                let mut shown = 0;
                loop {
                    let finished = done.load(Ordering::SeqCst);
                    let (at, full) = pump(&*source, &mut injector);
                    full_images += usize::from(full);
                    if at > 0
                        && reader
                            .query_row(
                                "SELECT count(*) FROM sqlite_master WHERE name = 'counter'",
                                (),
                                |r| r.get::<_, i64>(0),
                            )
                            .unwrap()
                            == 1
                    {
                        let k = assert_committed_state(&reader);
                        assert!(k >= shown, "the replica went back from {shown} to {k}");
                        shown = k;
                    }
                    if finished && at == source.hello().last_committed_frame_no {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                assert_eq!(shown, TRANSACTIONS);
                assert_eq!(integrity_check(&reader), "ok");
                let replica_log = replica.registry().open(&replica.db_path(&ns)).unwrap();
                assert!(
                    image(&*source) == image(&*replica_log),
                    "{ns}: the replica's pages differ from the primary's"
                );
                assert!(full_images >= 1, "the first step is a full image");
            });
        }
    });
}

#[test]
fn a_replica_far_behind_a_checkpointed_primary_takes_a_full_image_and_converges() {
    let primary = TestDb::new(busy_config());
    let replica = TestDb::new(RegistryConfig::default());
    let conn = primary.connect("a");
    conn.execute_batch(SCHEMA).unwrap();
    write_tx(&conn, 1);
    let source = primary.registry().open(&primary.db_path("a")).unwrap();
    let log = replica.registry().open(&replica.db_path("a")).unwrap();
    let mut injector = Injector::open(log.clone()).unwrap();
    let (at, full) = pump(&*source, &mut injector);
    assert!(full && at > 0);
    // Incremental while the log still holds what the replica lacks.
    write_tx(&conn, 2);
    let (_, full) = pump(&*source, &mut injector);
    assert!(
        !full,
        "a replica the log still covers gets the changed pages only"
    );
    // Then the primary seals, checkpoints and deletes everything past the replica.
    for k in 3..=60 {
        write_tx(&conn, k);
    }
    assert!(libsql_wal_tests::eventually(|| {
        let _ = source.checkpoint();
        source.checkpointed_frame_no() > at + 50
    }));
    let (_, full) = pump(&*source, &mut injector);
    assert!(full, "frames checkpointed away come as a full image");
    let reader = replica.connect("a");
    assert_eq!(assert_committed_state(&reader), 60);
    assert!(image(&*source) == image(&*log));
}

#[test]
fn a_replica_resumes_after_its_restart_and_after_a_clean_primary_restart_but_not_after_a_primary_crash(
) {
    let primary = TestDb::new(RegistryConfig::default());
    let (_replica_dir, replica_root) = TestDb::new(RegistryConfig::default()).into_root();
    let conn = primary.connect("a");
    conn.execute_batch(SCHEMA).unwrap();
    for k in 1..=5 {
        write_tx(&conn, k);
    }
    let source = primary.registry().open(&primary.db_path("a")).unwrap();
    let at = {
        let replica = TestDb::reopen(&replica_root, RegistryConfig::default());
        let log = replica.registry().open(&replica.db_path("a")).unwrap();
        let mut injector = Injector::open(log).unwrap();
        let (at, full) = pump(&*source, &mut injector);
        assert!(full);
        drop(injector);
        replica.registry().shutdown().unwrap();
        at
    };
    write_tx(&conn, 6);
    // The replica restarted: it resumes from where it was.
    let replica = TestDb::reopen(&replica_root, RegistryConfig::default());
    let log = replica.registry().open(&replica.db_path("a")).unwrap();
    let mut injector = Injector::open(log.clone()).unwrap();
    assert_eq!(injector.resume_from(&source.hello()), at);
    let (at, full) = pump(&*source, &mut injector);
    assert!(!full);
    injector.flush().unwrap();

    // The primary closed cleanly and opened again: same incarnation, the replica resumes.
    drop(conn);
    drop(source);
    primary.registry().close(&"a".parse().unwrap()).unwrap();
    let conn = primary.connect("a");
    write_tx(&conn, 7);
    let source = primary.registry().open(&primary.db_path("a")).unwrap();
    assert_eq!(injector.resume_from(&source.hello()), at);
    let (at, full) = pump(&*source, &mut injector);
    assert!(!full);

    // The primary crashed (its registry dropped without a shutdown) and recovered: the
    // replica cannot know which of its frames the primary still has, and takes a full image.
    write_tx(&conn, 8);
    let _ = pump(&*source, &mut injector);
    drop(conn);
    drop(source);
    let (primary_dir, primary_root) = primary.into_root();
    let primary = TestDb::reopen(&primary_root, RegistryConfig::default());
    let conn = primary.connect("a");
    write_tx(&conn, 9);
    let source = primary.registry().open(&primary.db_path("a")).unwrap();
    assert_eq!(injector.resume_from(&source.hello()), 0);
    let (now, full) = pump(&*source, &mut injector);
    assert!(full && now > at);
    let reader = replica.connect("a");
    assert_eq!(assert_committed_state(&reader), 9);
    assert!(image(&*source) == image(&*log));
    drop(primary_dir);
}

#[test]
fn a_step_cut_short_leaves_the_replica_at_the_step_before() {
    let primary = TestDb::new(RegistryConfig::default());
    let (_replica_dir, replica_root) = TestDb::new(RegistryConfig::default()).into_root();
    let conn = primary.connect("a");
    conn.execute_batch(SCHEMA).unwrap();
    for k in 1..=3 {
        write_tx(&conn, k);
    }
    let source = primary.registry().open(&primary.db_path("a")).unwrap();
    {
        let replica = TestDb::reopen(&replica_root, RegistryConfig::default());
        let log = replica.registry().open(&replica.db_path("a")).unwrap();
        let mut injector = Injector::open(log).unwrap();
        pump(&*source, &mut injector);
        for k in 4..=40 {
            write_tx(&conn, k);
        }
        // A step begun, half its pages written, then the replica process dies.
        let after = injector.resume_from(&source.hello());
        let mut step = source
            .step_after(after, FullImages::Allowed)
            .unwrap()
            .unwrap();
        injector.begin(&step.header()).unwrap();
        let mut page = vec![0; PAGE_SIZE];
        for _ in 0..step.header().pages / 2 {
            let page_no = step.next_page(&mut page).unwrap().unwrap();
            injector.page(page_no, &page).unwrap();
        }
        let reader = replica.connect("a");
        assert_eq!(
            assert_committed_state(&reader),
            3,
            "readers never see half a step"
        );
        drop(reader);
        std::mem::forget(injector);
        drop(replica);
    }
    let replica = TestDb::reopen(&replica_root, RegistryConfig::default());
    let reader = replica.connect("a");
    assert_eq!(assert_committed_state(&reader), 3);
    let log = replica.registry().open(&replica.db_path("a")).unwrap();
    let mut injector = Injector::open(log.clone()).unwrap();
    pump(&*source, &mut injector);
    assert_eq!(assert_committed_state(&reader), 40);
    assert!(image(&*source) == image(&*log));
}

#[test]
fn a_primary_that_is_a_new_log_is_followed_into_its_history_without_mixing_the_old_one() {
    let primary = TestDb::new(RegistryConfig::default());
    let replica = TestDb::new(RegistryConfig::default());
    let conn = primary.connect("a");
    conn.execute_batch(SCHEMA).unwrap();
    for k in 1..=80 {
        write_tx(&conn, k);
    }
    let source = primary.registry().open(&primary.db_path("a")).unwrap();
    let log = replica.registry().open(&replica.db_path("a")).unwrap();
    let mut injector = Injector::open(log.clone()).unwrap();
    pump(&*source, &mut injector);
    // The namespace is made again from nothing: a new log, a smaller database.
    drop(conn);
    drop(source);
    primary.registry().close(&"a".parse().unwrap()).unwrap();
    let db = primary.db_path("a");
    std::fs::remove_file(&db).unwrap();
    let mut segments = db.as_os_str().to_owned();
    segments.push("-segments");
    std::fs::remove_dir_all(std::path::PathBuf::from(segments)).unwrap();
    let conn = primary.connect("a");
    conn.execute_batch(SCHEMA).unwrap();
    write_tx(&conn, 1);
    let source = primary.registry().open(&primary.db_path("a")).unwrap();
    assert_eq!(injector.resume_from(&source.hello()), 0);
    let (_, full) = pump(&*source, &mut injector);
    assert!(full);
    let reader = replica.connect("a");
    assert_eq!(assert_committed_state(&reader), 1);
    assert_eq!(integrity_check(&reader), "ok");
    assert!(
        image(&*source) == image(&*log),
        "the old history's pages are gone"
    );
}

#[test]
fn a_replica_past_the_primarys_last_commit_is_refused() {
    let primary = TestDb::new(RegistryConfig::default());
    let conn = primary.connect("a");
    conn.execute_batch(SCHEMA).unwrap();
    let source = primary.registry().open(&primary.db_path("a")).unwrap();
    let end = source.hello().last_committed_frame_no;
    let err = source
        .step_after(end + 5, FullImages::Allowed)
        .err()
        .expect("refused");
    assert!(
        err.to_string().contains("past this log's last commit"),
        "{err}"
    );
    assert!(source
        .step_after(end, FullImages::Allowed)
        .unwrap()
        .is_none());
}

#[test]
fn sql_writes_on_a_replica_log_are_refused_read_only_and_reads_see_the_injected_steps() {
    let primary = TestDb::new(RegistryConfig::default());
    let replica = TestDb::new(RegistryConfig {
        replica: true,
        ..RegistryConfig::default()
    });
    let conn = primary.connect("a");
    conn.execute_batch(SCHEMA).unwrap();
    write_tx(&conn, 1);
    let source = primary.registry().open(&primary.db_path("a")).unwrap();
    let log = replica.registry().open(&replica.db_path("a")).unwrap();
    let mut injector = Injector::open(log).unwrap();
    pump(&*source, &mut injector);
    let reader = replica.connect("a");
    assert_eq!(assert_committed_state(&reader), 1);
    let err = reader
        .execute("INSERT INTO t(a, b) VALUES (99, x'00')", ())
        .expect_err("a replica takes no SQL writes");
    assert_eq!(
        err.sqlite_error_code(),
        Some(libsql_sys::rusqlite::ErrorCode::ReadOnly),
        "{err}"
    );
    write_tx(&conn, 2);
    pump(&*source, &mut injector);
    assert_eq!(assert_committed_state(&reader), 2);
}

#[test]
fn a_log_is_not_closed_under_a_step_being_read_or_an_injector_following() {
    let primary = TestDb::new(RegistryConfig::default());
    let replica = TestDb::new(RegistryConfig::default());
    let ns: libsql_wal_backend::NamespaceName = "a".parse().unwrap();
    let conn = primary.connect("a");
    conn.execute_batch(SCHEMA).unwrap();
    write_tx(&conn, 1);
    drop(conn);
    let source = primary.registry().open(&primary.db_path("a")).unwrap();
    let step = source.step_after(0, FullImages::Allowed).unwrap().unwrap();
    // A log opened next over the same files could checkpoint newer pages into the database
    // file the step still reads.
    let busy = primary.registry().close(&ns).unwrap_err();
    assert!(matches!(busy, libsql_wal::Error::Busy { .. }), "{busy}");
    drop(step);
    primary.registry().close(&ns).unwrap();
    assert!(
        matches!(
            source.step_after(0, FullImages::Allowed),
            Err(libsql_wal::Error::Closed { .. })
        ),
        "a closed log serves no steps"
    );
    let source = primary.registry().open(&primary.db_path("a")).unwrap();

    let mut injector = replica.registry().injector(&replica.db_path("a")).unwrap();
    pump(&*source, &mut injector);
    let busy = replica.registry().close(&ns).unwrap_err();
    assert!(matches!(busy, libsql_wal::Error::Busy { .. }), "{busy}");
    // Still following.
    let conn = primary.connect("a");
    write_tx(&conn, 2);
    pump(&*source, &mut injector);
    assert_eq!(assert_committed_state(&replica.connect("a")), 2);
    drop(injector);
    replica.registry().close(&ns).unwrap();
    let log = replica.registry().get(&ns);
    assert!(log.is_none(), "closed once the injector is gone");
}

/// Seals `log`, waits until storage holds everything committed, and checkpoints until the log
/// no longer holds its sealed frames.
fn make_durable_and_checkpoint<S: libsql_wal_backend::Storage<File = std::fs::File>>(
    log: &libsql_wal::SharedWal<libsql_wal_segment::StdIo, S>,
) {
    log.seal_now().unwrap();
    let end = log.last_committed_frame_no();
    assert!(libsql_wal_tests::eventually(
        || log.durable_frame_no() >= end
    ));
    assert!(libsql_wal_tests::eventually(|| {
        let _ = log.checkpoint();
        log.checkpointed_frame_no() >= end
    }));
}

#[test]
fn a_replica_catches_up_from_the_primarys_bucket_with_only_the_changed_pages_and_converges() {
    use libsql_wal::{BucketCatchUp, LibsqlWalManager, PrimaryBucket, WalRegistry};
    use libsql_wal_supervisor::{ActorStorage, StorageConfig};
    let work = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let storage_over = |scratch: &str| {
        let backend = runtime
            .block_on(libsql_wal_backend::FsBackend::new(
                work.path().join("bucket"),
            ))
            .unwrap();
        ActorStorage::<_, std::fs::File>::start(
            backend,
            StorageConfig {
                scratch_dir: work.path().join(scratch),
                ..StorageConfig::default()
            },
        )
        .unwrap()
    };
    let registry = Arc::new(WalRegistry::new(
        libsql_wal_segment::StdIo,
        storage_over("primary-scratch"),
        busy_config(),
    ));
    let db_dir = work.path().join("tenant");
    std::fs::create_dir_all(&db_dir).unwrap();
    let conn = libsql_sys::Connection::open(
        db_dir.join("data"),
        libsql_sys::rusqlite::OpenFlags::default(),
        LibsqlWalManager::new(registry.clone()),
        0,
        None,
    )
    .unwrap();
    conn.execute_batch(SCHEMA).unwrap();
    for k in 1..=40 {
        write_tx(&conn, k);
    }
    let source = registry.open(&db_dir.join("data")).unwrap();
    make_durable_and_checkpoint(&source);

    // A scratch file a catch-up cut short by a crash left goes when the next one starts.
    let scratch_dir = work.path().join("catch-up");
    std::fs::create_dir_all(&scratch_dir).unwrap();
    std::fs::write(scratch_dir.join(".catch-up-left-by-a-crash"), b"pages").unwrap();
    let bucket = BucketCatchUp::new(storage_over("replica-scratch"), &scratch_dir).unwrap();
    let namespace = source.namespace().clone();
    let identity = source.hello().identity;
    let scratch_files = || std::fs::read_dir(&scratch_dir).unwrap().count();
    assert_eq!(scratch_files(), 0);
    let never = || false;
    let catch_up = |injector: &mut dyn StepInjector, after| {
        bucket
            .catch_up(&namespace, &identity, after, injector, &never)
            .unwrap()
    };
    let replica = TestDb::new(RegistryConfig::default());
    let log = replica.registry().open(&replica.db_path("tenant")).unwrap();
    let mut injector = Injector::open(log.clone()).unwrap();

    // Nothing yet, and the log holds only the newest frames: not held, unless a full image.
    assert_eq!(injector.resume_from(&source.hello()), 0);
    assert!(matches!(
        source.step_after(0, FullImages::Refused),
        Err(libsql_wal::Error::NotHeld { after: 0, .. })
    ));
    // A replica that stops meanwhile applies nothing, and leaves no scratch file.
    assert!(matches!(
        bucket.catch_up(&namespace, &identity, 0, &mut injector, &|| true),
        Err(libsql_wal::CatchUpError::Stopped)
    ));
    assert!(image(&*log).is_empty());
    assert_eq!(scratch_files(), 0);
    let first = catch_up(&mut injector, 0).expect("the bucket holds the log");
    assert!(
        first.full_image && first.pages == first.db_size,
        "{first:?}"
    );
    assert_eq!(first.frame_no, source.durable_frame_no());
    assert!(
        image(&*source) == image(&*log),
        "from nothing, page for page"
    );
    assert!(matches!(
        source.step_after(first.frame_no, FullImages::Refused),
        Ok(None)
    ));

    // The database grows, then shrinks (rows deleted, VACUUM), all checkpointed away.
    for k in 41..=60 {
        write_tx(&conn, k);
    }
    conn.execute_batch(
        "DELETE FROM t WHERE a > 20 AND a <= 60 AND a % 2 = 0; UPDATE counter SET k = 40",
    )
    .unwrap();
    make_durable_and_checkpoint(&source);
    assert_eq!(injector.resume_from(&source.hello()), first.frame_no);
    assert!(matches!(
        source.step_after(first.frame_no, FullImages::Refused),
        Err(libsql_wal::Error::NotHeld { .. })
    ));
    let second = catch_up(&mut injector, first.frame_no).expect("newer frames in the bucket");
    assert!(
        !second.full_image && second.pages < second.db_size,
        "only the changed pages: {second:?}"
    );
    assert!(
        image(&*source) == image(&*log),
        "after the changes, page for page"
    );
    conn.execute_batch("VACUUM").unwrap();
    make_durable_and_checkpoint(&source);
    let third = catch_up(&mut injector, second.frame_no).expect("the VACUUM in the bucket");
    assert!(third.db_size < second.db_size, "{second:?} then {third:?}");
    assert!(
        image(&*source) == image(&*log),
        "after a VACUUM, page for page"
    );
    assert!(catch_up(&mut injector, third.frame_no).is_none());

    // From nothing over pages it has (as after the primary's incarnation changed): every
    // page is set again.
    let again = catch_up(&mut injector, 0).expect("the bucket holds the log");
    assert!(
        again.full_image && again.frame_no == third.frame_no,
        "{again:?}"
    );
    assert!(image(&*source) == image(&*log));
    assert_eq!(scratch_files(), 0);

    // Commits the bucket does not hold yet come from the primary's log.
    write_tx(&conn, 61);
    let (at, full) = pump(&*source, &mut injector);
    assert!(!full && at == source.last_committed_frame_no());
    let reader = replica.connect("tenant");
    assert_eq!(integrity_check(&reader), "ok");
    let rows: i64 = reader
        .query_row("SELECT count(*) FROM t", (), |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 60 - 20 + 1);
    assert!(image(&*source) == image(&*log));
    // Another log's history is not in this bucket.
    let other = libsql_wal::LogIdentity {
        log_id: uuid::Uuid::new_v4(),
        ..identity
    };
    assert!(bucket
        .catch_up(&namespace, &other, 0, &mut injector, &never)
        .unwrap()
        .is_none());
    drop(conn);
    drop(reader);
    drop(injector);
    registry.shutdown().unwrap();
}

/// The header and pages of the step after `after`, read whole (its snapshot then let go).
fn read_step(
    primary: &dyn ReplicationSource,
    after: u64,
) -> (libsql_wal::StepHeader, Vec<(u32, Vec<u8>)>) {
    let mut step = primary
        .step_after(after, FullImages::Allowed)
        .unwrap()
        .expect("a step");
    let mut pages = Vec::new();
    let mut page = vec![0; PAGE_SIZE];
    while let Some(page_no) = step.next_page(&mut page).unwrap() {
        pages.push((page_no, page.clone()));
    }
    (step.header(), pages)
}

#[test]
fn steps_merged_into_one_commit_show_only_the_last_ones_state_and_only_once_committed() {
    let primary = TestDb::new(RegistryConfig::default());
    let replica = TestDb::new(RegistryConfig::default());
    let conn = primary.connect("a");
    conn.execute_batch(SCHEMA).unwrap();
    for k in 1..=3 {
        write_tx(&conn, k);
    }
    let source = primary.registry().open(&primary.db_path("a")).unwrap();
    let log = replica.registry().open(&replica.db_path("a")).unwrap();
    let mut injector = Injector::open(log.clone()).unwrap();
    pump(&*source, &mut injector);
    let reader = replica.connect("a");
    assert_eq!(assert_committed_state(&reader), 3);
    let mut steps = Vec::new();
    let mut after = injector.resume_from(&source.hello());
    for (from, to) in [(4, 10), (11, 20)] {
        for k in from..=to {
            write_tx(&conn, k);
        }
        let step = read_step(&*source, after);
        after = step.0.frame_no;
        steps.push(step);
    }
    let (first, rest) = steps.split_first().unwrap();
    injector.begin(&first.0).unwrap();
    for (page_no, page) in &first.1 {
        injector.page(*page_no, page).unwrap();
    }
    for (header, pages) in rest {
        injector.extend(header).unwrap();
        for (page_no, page) in pages {
            injector.page(*page_no, page).unwrap();
        }
    }
    assert_eq!(
        assert_committed_state(&reader),
        3,
        "nothing of merged steps shows before their commit"
    );
    assert_eq!(injector.commit().unwrap(), after);
    assert_eq!(assert_committed_state(&reader), 20);
    assert_eq!(integrity_check(&reader), "ok");
    assert!(image(&*source) == image(&*log));
    // A step that does not follow the one begun is refused.
    write_tx(&conn, 21);
    let (header, _) = read_step(&*source, after);
    injector.begin(&header).unwrap();
    let err = injector
        .extend(&libsql_wal::StepHeader {
            frame_no: after,
            ..header
        })
        .unwrap_err();
    assert!(err.to_string().contains("after the one to frame"), "{err}");
    injector.rollback();
    assert_eq!(assert_committed_state(&reader), 20);
}
