//! The oracle runner on scripts of its own, so a clone without `../shared` still tests it: it
//! splits like SQLite, finds attached files, replaces `random()`, and passes scripts that
//! attach databases, use savepoints and checkpoint, print paths, write pages of another size and
//! draw on SQLite's own random generator. One test in its own binary: the runner
//! changes the working directory.

// Tests unwrap freely: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use libsql_wal_tests::oracle::{attached_files, check_script, split_statements};

#[test]
fn the_oracle_runner_splits_compares_and_passes_its_own_scripts() {
    let statements = split_statements(
        "CREATE TABLE a(x); -- c;\nCREATE TRIGGER t AFTER INSERT ON a BEGIN SELECT 1; SELECT 2; END;\nSELECT 'a;b'; SELECT 1",
    );
    assert_eq!(statements.len(), 4, "{statements:?}");
    assert!(statements[1].ends_with("END;"));
    assert_eq!(
        attached_files(&split_statements(
            "ATTACH 'x.db' AS x; ATTACH DATABASE \"y.db\" AS y; ATTACH ':memory:' AS m; attach test.db as t;"
        )),
        ["x.db", "y.db", "test.db"]
    );

    let scripts = [
        "CREATE TABLE t(a INTEGER PRIMARY KEY, b BLOB);
         INSERT INTO t(b) VALUES (randomblob(5000)), (randomblob(10));
         SELECT a, hex(b) FROM t;
         SELECT random();
         BEGIN; INSERT INTO t(b) VALUES (zeroblob(9000)); SAVEPOINT s;
         DELETE FROM t; ROLLBACK TO s; RELEASE s; COMMIT;
         SELECT count(*) FROM t;
         PRAGMA wal_checkpoint;
         SELECT no_such_function();",
        "ATTACH 'aux.db' AS aux;
         CREATE TABLE aux.u(x);
         INSERT INTO aux.u VALUES (1), (2), (3);
         CREATE TABLE main.v(y);
         INSERT INTO v SELECT x * 2 FROM aux.u;
         SELECT * FROM v JOIN aux.u ON y = x * 2;
         PRAGMA integrity_check;",
        // Absolute paths of each run's own directory.
        "CREATE TABLE t(a); PRAGMA database_list;",
        // Backfilled frames stay counted until the next writer restarts the log.
        "CREATE TABLE t(a); INSERT INTO t VALUES (1);
         PRAGMA wal_checkpoint; PRAGMA wal_checkpoint;
         INSERT INTO t VALUES (2); PRAGMA wal_checkpoint; PRAGMA wal_checkpoint(TRUNCATE);
         PRAGMA wal_checkpoint;",
        // A database of 1024-byte pages, written by VACUUM INTO.
        "CREATE TABLE t(a); INSERT INTO t VALUES (zeroblob(5000));
         PRAGMA page_size = 1024; VACUUM INTO 'small-pages.db';",
        // Clashing column names get suffixes from SQLite's own random generator.
        "CREATE TABLE c AS SELECT 1 AS x, 2 AS x, 3 AS x, 4 AS x, 5 AS x, 6 AS x;
         SELECT sql FROM sqlite_schema WHERE name = 'c';",
    ];
    for (i, script) in scripts.iter().enumerate() {
        let work = tempfile::tempdir().unwrap();
        check_script(script, work.path()).unwrap_or_else(|why| panic!("script {i}: {why}"));
    }
}
