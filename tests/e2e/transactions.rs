//! Transactions as SQLite expects them on this WAL: snapshot reads, one writer at a time with
//! waiting writers served in order, SQLITE_BUSY_SNAPSHOT for stale writers, savepoints and
//! rollbacks, and readers keeping their snapshot across seals and checkpoints.

use std::sync::mpsc;
use std::time::Duration;

use libsql_sys::rusqlite::ErrorCode;
use libsql_wal::{RegistryConfig, SwapStrategy};
use libsql_wal_tests::{count, LocalWal, TestDb};

type Conn = libsql_sys::Connection<LocalWal>;

fn setup(config: RegistryConfig) -> (TestDb, Conn) {
    let db = TestDb::new(config);
    let conn = db.connect("tx");
    conn.execute("CREATE TABLE t(a INTEGER PRIMARY KEY, b BLOB)", ())
        .unwrap();
    (db, conn)
}

#[test]
fn readers_at_different_snapshots_see_exactly_what_was_committed_before_they_began() {
    let (db, writer) = setup(RegistryConfig::default());
    let first = db.connect("tx");
    first.execute_batch("BEGIN").unwrap();
    assert_eq!(count(&first), 0);
    writer.execute("INSERT INTO t(b) VALUES (1)", ()).unwrap();
    let second = db.connect("tx");
    second.execute_batch("BEGIN").unwrap();
    assert_eq!(count(&second), 1);
    writer.execute("INSERT INTO t(b) VALUES (2)", ()).unwrap();
    assert_eq!(count(&first), 0, "the first reader keeps its snapshot");
    assert_eq!(count(&second), 1, "the second reader keeps its snapshot");
    assert_eq!(count(&db.connect("tx")), 2);
    first.execute_batch("COMMIT").unwrap();
    assert_eq!(count(&first), 2, "a new transaction sees the latest commit");
}

#[test]
fn a_second_writer_waits_for_the_first_and_then_proceeds() {
    let (db, first) = setup(RegistryConfig::default());
    first
        .execute_batch("BEGIN IMMEDIATE; INSERT INTO t(b) VALUES ('first');")
        .unwrap();
    let second = db.connect("tx");
    let (started, started_rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        started.send(()).unwrap();
        second
            .execute("INSERT INTO t(b) VALUES ('second')", ())
            .unwrap();
        second
    });
    started_rx.recv().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(!waiter.is_finished(), "the second writer waits");
    first.execute_batch("COMMIT").unwrap();
    let second = waiter.join().unwrap();
    let order: Vec<String> = second
        .prepare("SELECT b FROM t ORDER BY a")
        .unwrap()
        .query_map((), |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(order, ["first", "second"]);
}

#[test]
fn a_writer_that_waits_too_long_gets_busy() {
    let (db, first) = setup(RegistryConfig {
        writer_timeout: Duration::from_millis(50),
        ..RegistryConfig::default()
    });
    first.execute_batch("BEGIN IMMEDIATE").unwrap();
    let second = db.connect("tx");
    let err = second
        .execute("INSERT INTO t(b) VALUES (1)", ())
        .unwrap_err();
    assert_eq!(
        err.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy),
        "{err}"
    );
    first.execute_batch("COMMIT").unwrap();
    second.execute("INSERT INTO t(b) VALUES (1)", ()).unwrap();
}

#[test]
fn a_reader_whose_snapshot_is_stale_cannot_write() {
    let (db, writer) = setup(RegistryConfig::default());
    let reader = db.connect("tx");
    reader.execute_batch("BEGIN").unwrap();
    assert_eq!(count(&reader), 0);
    writer.execute("INSERT INTO t(b) VALUES (1)", ()).unwrap();
    let err = reader
        .execute("INSERT INTO t(b) VALUES (2)", ())
        .unwrap_err();
    assert_eq!(
        err.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy),
        "{err}"
    );
    reader.execute_batch("ROLLBACK").unwrap();
    reader.execute("INSERT INTO t(b) VALUES (2)", ()).unwrap();
    assert_eq!(count(&writer), 2);
}

#[test]
fn rollbacks_and_nested_savepoints_undo_exactly_their_writes() {
    let (db, conn) = setup(RegistryConfig::default());
    conn.execute_batch(
        "BEGIN;
         INSERT INTO t VALUES (1, 'one');
         SAVEPOINT a;
         INSERT INTO t VALUES (2, 'two');
         SAVEPOINT b;
         INSERT INTO t VALUES (3, zeroblob(20000));
         ROLLBACK TO b;
         ROLLBACK TO a;
         INSERT INTO t VALUES (4, 'four');
         RELEASE a;
         COMMIT;",
    )
    .unwrap();
    let rows: Vec<i64> = conn
        .prepare("SELECT a FROM t ORDER BY a")
        .unwrap()
        .query_map((), |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(rows, [1, 4]);
    conn.execute_batch(
        "BEGIN; DELETE FROM t; INSERT INTO t VALUES (9, zeroblob(50000)); ROLLBACK;",
    )
    .unwrap();
    assert_eq!(count(&conn), 2);
    assert_eq!(count(&db.connect("tx")), 2);
}

#[test]
fn a_reader_keeps_its_snapshot_across_a_seal_and_a_checkpoint() {
    let (db, writer) = setup(RegistryConfig {
        swap: SwapStrategy {
            max_frames: 10,
            ..SwapStrategy::default()
        },
        ..RegistryConfig::default()
    });
    writer
        .execute("INSERT INTO t(b) VALUES (zeroblob(10000))", ())
        .unwrap();
    let reader = db.connect("tx");
    reader.execute_batch("BEGIN").unwrap();
    let before: (i64, i64) = reader
        .query_row("SELECT count(*), sum(length(b)) FROM t", (), |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    for _ in 0..100 {
        writer
            .execute("INSERT INTO t(b) VALUES (randomblob(3000))", ())
            .unwrap();
    }
    writer.execute("UPDATE t SET b = x'00'", ()).unwrap();
    writer
        .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .unwrap();
    let shared = db.registry().get(&"tx".parse().unwrap()).unwrap();
    assert!(
        shared.sealed_segment_count() > 0,
        "segments the reader may need are not checkpointed"
    );
    let during: (i64, i64) = reader
        .query_row("SELECT count(*), sum(length(b)) FROM t", (), |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(during, before);
    reader.execute_batch("COMMIT").unwrap();
    shared.checkpoint().unwrap();
    assert_eq!(shared.sealed_segment_count(), 0);
    assert_eq!(count(&reader), 101);
}
