//! Injected I/O faults (the segment crate's `FaultyIo`, a mock used only to inject faults): a
//! failed write, a short write or a failed fsync reaches SQLite as an I/O error, the database
//! stays consistent and usable, and the next open recovers every commit that succeeded.

use std::sync::Arc;

use libsql_sys::rusqlite::ErrorCode;
use libsql_sys::Connection;
use libsql_wal::{LibsqlWal, LibsqlWalManager, RegistryConfig, WalRegistry};
use libsql_wal_backend::NoStorage;
use libsql_wal_segment::fault::{FaultyFile, FaultyIo, WriteFault};
use libsql_wal_segment::StdIo;
use libsql_wal_tests::{count, integrity_check, TestDb};

type FaultyStorage = NoStorage<FaultyFile<std::fs::File>>;
type FaultyConn = Connection<LibsqlWal<FaultyIo<StdIo>, FaultyStorage>>;

/// Arms one fault on a plan.
type ArmFault = fn(&libsql_wal_segment::fault::FaultPlan);

#[test]
fn io_faults_reach_sqlite_as_errors_and_lose_no_committed_row() {
    let (_dir, root) = TestDb::new(RegistryConfig::default()).into_root();
    let db_dir = root.join("faults");
    std::fs::create_dir_all(&db_dir).unwrap();
    let io = FaultyIo::new(StdIo);
    let plan = io.plan().clone();
    let registry = Arc::new(WalRegistry::new(
        io,
        FaultyStorage::default(),
        RegistryConfig::default(),
    ));
    let conn: FaultyConn = Connection::open(
        db_dir.join("data"),
        libsql_sys::rusqlite::OpenFlags::default(),
        LibsqlWalManager::new(registry),
        0,
        None,
    )
    .unwrap();
    conn.execute_batch("PRAGMA synchronous=FULL; CREATE TABLE t(a INTEGER PRIMARY KEY, b BLOB);")
        .unwrap();
    let mut committed = 0;
    let faults: [(&str, ArmFault); 3] = [
        ("failed write", |p| p.fault_write(0, WriteFault::Fail)),
        ("short write", |p| p.fault_write(0, WriteFault::Short)),
        ("failed fsync", |p| p.fail_sync(0)),
    ];
    for (name, arm) in faults {
        for _ in 0..5 {
            conn.execute("INSERT INTO t(b) VALUES (randomblob(5000))", ())
                .unwrap();
            committed += 1;
        }
        arm(&plan);
        let err = conn
            .execute("INSERT INTO t(b) VALUES (randomblob(5000))", ())
            .unwrap_err();
        let code = err.sqlite_error_code();
        assert_eq!(code, Some(ErrorCode::SystemIoFailure), "{name}: {err}");
        assert_eq!(
            count(&conn),
            committed,
            "{name}: the failed commit is not there"
        );
        conn.execute("INSERT INTO t(b) VALUES (x'01')", ()).unwrap();
        committed += 1;
    }
    drop(conn);

    let reopened = TestDb::reopen(&root, RegistryConfig::default());
    let conn = reopened.connect("faults");
    let rows: i64 = conn
        .query_row("SELECT count(*) FROM t", (), |r| r.get(0))
        .unwrap();
    assert_eq!(rows, committed);
    let ok = integrity_check(&conn);
    assert_eq!(ok, "ok");
}
