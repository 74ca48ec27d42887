//! A database written and read through SQLite on this WAL: commits, reads from other
//! connections, sealing, checkpointing, and reopening after a restart.

use libsql_wal::{RegistryConfig, SwapStrategy};
use libsql_wal_tests::TestDb;

fn small_segments() -> RegistryConfig {
    RegistryConfig {
        swap: SwapStrategy {
            max_frames: 20,
            ..SwapStrategy::default()
        },
        ..RegistryConfig::default()
    }
}

fn count(conn: &libsql_sys::Connection<libsql_wal_tests::LocalWal>) -> i64 {
    conn.query_row("SELECT count(*) FROM t", (), |r| r.get(0))
        .unwrap()
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
            shared.sealed_segment_count() > 0,
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
    let ok: String = conn
        .query_row("PRAGMA integrity_check", (), |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
}
