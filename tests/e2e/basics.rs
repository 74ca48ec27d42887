//! A database written and read through SQLite on this WAL: commits, reads from other
//! connections, sealing, checkpointing, and reopening after a restart.

use libsql_wal::{CheckpointThreshold, RegistryConfig, SwapStrategy};
use libsql_wal_tests::{count, eventually, integrity_check, segment_files, TestDb};

fn small_segments() -> RegistryConfig {
    RegistryConfig {
        swap: SwapStrategy {
            max_frames: 20,
            ..SwapStrategy::default()
        },
        ..RegistryConfig::default()
    }
}

#[test]
fn rows_written_on_one_connection_are_read_on_another() {
    let db = TestDb::new(RegistryConfig::default());
    let writer = db.connect("ns");
    writer
        .execute("CREATE TABLE t(a INTEGER PRIMARY KEY, b TEXT)", ())
        .unwrap();
    for i in 0..100 {
        writer
            .execute("INSERT INTO t(b) VALUES (?1)", [format!("row {i}")])
            .unwrap();
    }
    let reader = db.connect("ns");
    assert_eq!(count(&reader), 100);
    let b: String = reader
        .query_row("SELECT b FROM t WHERE a = 42", (), |r| r.get(0))
        .unwrap();
    assert_eq!(b, "row 41");
}

#[test]
fn a_database_survives_seals_checkpoints_and_a_restart() {
    let db = TestDb::new(small_segments());
    {
        let conn = db.connect("ns");
        conn.execute("CREATE TABLE t(a INTEGER PRIMARY KEY, b BLOB)", ())
            .unwrap();
        for i in 0..200 {
            conn.execute(
                "INSERT INTO t(b) VALUES (randomblob(?1))",
                [100 + (i % 7) * 900],
            )
            .unwrap();
        }
        let shared = db.registry().get(&"ns".parse().unwrap()).unwrap();
        assert!(
            shared.sealed_segment_count() > 0 || shared.checkpointed_frame_no() > 0,
            "small segments were sealed"
        );
        assert_eq!(count(&conn), 200);
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .unwrap();
        assert_eq!(
            shared.sealed_segment_count(),
            0,
            "everything was checkpointed"
        );
        assert_eq!(count(&conn), 200);
        for _ in 0..50 {
            conn.execute("INSERT INTO t(b) VALUES (x'00')", ()).unwrap();
        }
    }
    let (_dir, root) = db.into_root();
    let reopened = TestDb::reopen(&root, small_segments());
    let conn = reopened.connect("ns");
    assert_eq!(count(&conn), 250);
    let ok = integrity_check(&conn);
    assert_eq!(ok, "ok");
}

#[test]
fn the_background_checkpointer_copies_sealed_segments_once_no_reader_needs_them() {
    let db = TestDb::new(RegistryConfig {
        checkpoint_after: CheckpointThreshold::EVERY_SEAL,
        ..small_segments()
    });
    let conn = db.connect("ns");
    conn.execute("CREATE TABLE t(a INTEGER PRIMARY KEY, b BLOB)", ())
        .unwrap();
    let reader = db.connect("ns");
    reader.execute_batch("BEGIN").unwrap();
    assert_eq!(count(&reader), 0);
    for _ in 0..100 {
        conn.execute("INSERT INTO t(b) VALUES (randomblob(3000))", ())
            .unwrap();
    }
    let shared = db.registry().get(&"ns".parse().unwrap()).unwrap();
    assert!(shared.sealed_segment_count() > 0);
    // The reader's snapshot holds the checkpoint back.
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert!(
        shared.sealed_segment_count() > 0,
        "a reader still needs them"
    );
    assert_eq!(count(&reader), 0);
    reader.execute_batch("COMMIT").unwrap();
    assert!(
        eventually(|| shared.sealed_segment_count() == 0),
        "the checkpointer copied every sealed segment"
    );
    assert!(shared.checkpointed_frame_no() > 0);
    assert_eq!(count(&reader), 100);
}

#[test]
fn the_background_checkpointer_waits_for_its_threshold_of_frames_or_segments() {
    for threshold in [
        CheckpointThreshold {
            frames: 1_000,
            segments: 4,
        },
        CheckpointThreshold {
            frames: 100,
            segments: 16,
        },
    ] {
        let db = TestDb::new(RegistryConfig {
            checkpoint_after: threshold,
            ..RegistryConfig::default()
        });
        let conn = db.connect("ns");
        conn.execute("CREATE TABLE t(a INTEGER PRIMARY KEY, b BLOB)", ())
            .unwrap();
        let shared = db.registry().get(&"ns".parse().unwrap()).unwrap();
        // Seal after every two rows of 20,000 bytes (a few frames each) until the sealed
        // segments reach the threshold; before that, nothing is copied.
        let mut seals = 0;
        loop {
            for _ in 0..2 {
                conn.execute("INSERT INTO t(b) VALUES (randomblob(20000))", ())
                    .unwrap();
            }
            assert!(shared.seal_now().unwrap());
            seals += 1;
            // The log starts at frame 1: every frame so far is in the sealed segments.
            let frames = shared.last_committed_frame_no();
            if frames >= threshold.frames || seals >= threshold.segments {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
            assert_eq!(
                shared.checkpointed_frame_no(),
                0,
                "{threshold:?}: below the threshold after {seals} seals of {frames} frames"
            );
            assert_eq!(shared.sealed_segment_count(), seals);
        }
        let last = shared.last_committed_frame_no();
        assert!(
            eventually(|| shared.checkpointed_frame_no() == last),
            "{threshold:?}: reached after {seals} seals of {last} frames"
        );
        assert_eq!(shared.sealed_segment_count(), 0);
        assert!(seals > 1, "{threshold:?}: the first seal reached it");
        assert_eq!(count(&conn), 2 * seals as i64);
    }
}

#[test]
fn a_fully_checkpointed_database_reopens_with_its_size_from_the_header_not_the_footer() {
    let db = TestDb::new(small_segments());
    let pages: i64 = {
        let conn = db.connect("ns");
        conn.execute_batch(
            "CREATE TABLE t(a INTEGER PRIMARY KEY, b BLOB);
             INSERT INTO t(b) VALUES (randomblob(20000)), (randomblob(300));",
        )
        .unwrap();
        conn.query_row("PRAGMA page_count", (), |r| r.get(0))
            .unwrap()
    };
    db.registry().shutdown().unwrap();
    let (_dir, root) = db.into_root();
    let len = std::fs::metadata(root.join("ns/data")).unwrap().len();
    assert_eq!(len, pages as u64 * 4096 + libsql_wal::FOOTER_SIZE as u64);

    let reopened = TestDb::reopen(&root, small_segments());
    let conn = reopened.connect("ns");
    let after: i64 = conn
        .query_row("PRAGMA page_count", (), |r| r.get(0))
        .unwrap();
    assert_eq!(after, pages, "the footer is not a page");
    conn.execute("INSERT INTO t(b) VALUES (randomblob(9000))", ())
        .unwrap();
    assert_eq!(count(&conn), 3);
    let ok = integrity_check(&conn);
    assert_eq!(ok, "ok");
}

#[test]
fn sqlite_auto_checkpoint_leaves_sealing_to_the_swap_strategy() {
    let db = TestDb::new(RegistryConfig::default());
    let conn = db.connect_with_auto_checkpoint("ns", 50);
    conn.execute("CREATE TABLE t(a INTEGER PRIMARY KEY, b BLOB)", ())
        .unwrap();
    for _ in 0..40 {
        conn.execute("INSERT INTO t(b) VALUES (randomblob(5000))", ())
            .unwrap();
    }
    let shared = db.registry().get(&"ns".parse().unwrap()).unwrap();
    assert!(shared.last_committed_frame_no() > 50);
    assert_eq!(shared.sealed_segment_count(), 0, "nothing was sealed");
    assert_eq!(
        shared.checkpointed_frame_no(),
        0,
        "nothing was checkpointed"
    );
    conn.execute_batch("PRAGMA wal_checkpoint").unwrap();
    assert_eq!(
        shared.checkpointed_frame_no(),
        shared.last_committed_frame_no(),
        "an explicit checkpoint seals and copies everything"
    );
    assert_eq!(count(&conn), 40);
}

#[test]
fn an_idle_namespace_seals_its_current_segment_once_it_is_old_enough() {
    let db = TestDb::new(RegistryConfig {
        swap: SwapStrategy {
            max_age: std::time::Duration::from_millis(50),
            ..SwapStrategy::default()
        },
        age_check_interval: std::time::Duration::from_millis(20),
        checkpoint_after: CheckpointThreshold::EVERY_SEAL,
        ..RegistryConfig::default()
    });
    let conn = db.connect("ns");
    conn.execute("CREATE TABLE t(a)", ()).unwrap();
    let shared = db.registry().get(&"ns".parse().unwrap()).unwrap();
    let last = shared.last_committed_frame_no();
    assert!(
        eventually(|| shared.checkpointed_frame_no() == last),
        "the idle segment was sealed and checkpointed"
    );
}

#[test]
fn leaving_wal_mode_and_coming_back_keeps_every_row() {
    let db = TestDb::new(RegistryConfig::default());
    {
        let conn = db.connect("ns");
        conn.execute_batch(
            "CREATE TABLE t(a INTEGER PRIMARY KEY, b BLOB);
             INSERT INTO t(b) VALUES (randomblob(9000));",
        )
        .unwrap();
        let mode: String = conn
            .query_row("PRAGMA journal_mode = DELETE", (), |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "delete");
        conn.execute_batch(
            "INSERT INTO t(b) VALUES (randomblob(30000));
             INSERT INTO t(b) VALUES (randomblob(30000));",
        )
        .unwrap();
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", (), |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        conn.execute("INSERT INTO t(b) VALUES (randomblob(100))", ())
            .unwrap();
        assert_eq!(count(&conn), 4);
        let ok = integrity_check(&conn);
        assert_eq!(ok, "ok");
    }
    db.registry().shutdown().unwrap();
    let (_dir, root) = db.into_root();
    let conn = TestDb::reopen(&root, RegistryConfig::default()).connect("ns");
    assert_eq!(count(&conn), 4);
    let ok = integrity_check(&conn);
    assert_eq!(ok, "ok");
}

#[test]
fn a_dropped_registry_leaves_nothing_running_on_its_files() {
    let (_dir, root) = TestDb::new(RegistryConfig::default()).into_root();
    for round in 0..3 {
        let db = TestDb::reopen(&root, RegistryConfig::default());
        let conn = db.connect("ns");
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS t(a INTEGER PRIMARY KEY, b BLOB);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000)
             INSERT INTO t(b) SELECT randomblob(4000) FROM n;",
        )
        .unwrap();
        let shared = db.registry().get(&"ns".parse().unwrap()).unwrap();
        assert!(shared.seal_now().unwrap(), "sealed");
        drop(shared);
        drop(conn);
        // The seal queued a background checkpoint of about 8 MiB: dropping the registry waits
        // for it, so the next registry (or process) finds the files at rest.
        drop(db);
        // Segment files only: the spare file a seal may have left is none.
        let files = segment_files(&root.join("ns/data"));
        assert_eq!(
            files, 1,
            "round {round}: only the new current segment is left"
        );
    }
    let db = TestDb::reopen(&root, RegistryConfig::default());
    let conn = db.connect("ns");
    assert_eq!(count(&conn), 6000);
    assert_eq!(integrity_check(&conn), "ok");
}
