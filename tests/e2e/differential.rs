//! The differential test: a seeded random SQL workload (schema changes, inserts, updates,
//! deletes, indexes, blobs large enough for overflow pages, savepoints, rollbacks, VACUUM, two
//! connections with snapshot reads) runs on this WAL and on SQLite's own WAL; every statement
//! must give the same result, and after a full checkpoint both database files must hold the
//! same pages (page 1's 100-byte header excepted).

use std::path::Path;

use libsql_wal::{RegistryConfig, SwapStrategy};
use libsql_wal_tests::oracle::{compare_pages, run_statement};
use libsql_wal_tests::{connect_native, Rng, TestDb};

/// A blob literal of `len` bytes from the generator.
fn blob(rng: &mut Rng, len: usize) -> String {
    let bytes: String = (0..len)
        .map(|_| format!("{:02x}", rng.next_u64() as u8))
        .collect();
    format!("x'{bytes}'")
}

/// One step of the workload: which connection runs which SQL.
struct Step {
    conn: usize,
    sql: String,
}

/// Generates the workload of `seed`.
fn workload(seed: u64, steps: usize) -> Vec<Step> {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut out = vec![
        Step {
            conn: 0,
            sql: "CREATE TABLE t0(a INTEGER PRIMARY KEY, b BLOB, c TEXT)".into(),
        },
        Step {
            conn: 0,
            sql: "CREATE TABLE t1(a INTEGER PRIMARY KEY, b BLOB, c TEXT)".into(),
        },
    ];
    // Connection 1 sometimes holds a read transaction open across connection 0's writes.
    let mut reader_open = false;
    let mut in_tx = false;
    let mut savepoints = 0;
    for _ in 0..steps {
        let table = format!("t{}", rng.below(2));
        let sql = match rng.below(20) {
            0..=5 => {
                let len = [10, 300, 3000, 9000][rng.below(4) as usize];
                format!(
                    "INSERT INTO {table}(b, c) VALUES ({}, 'v{}')",
                    blob(&mut rng, len),
                    rng.below(1000)
                )
            }
            6..=7 => {
                let len = 50 + rng.below(2000) as usize;
                format!(
                    "UPDATE {table} SET b = {}, c = 'u{}' WHERE a % 7 = {}",
                    blob(&mut rng, len),
                    rng.below(100),
                    rng.below(7)
                )
            }
            8 => format!("DELETE FROM {table} WHERE a % 5 = {}", rng.below(5)),
            9 if !in_tx => {
                in_tx = true;
                "BEGIN".into()
            }
            10 if in_tx && savepoints < 3 => {
                savepoints += 1;
                format!("SAVEPOINT s{savepoints}")
            }
            11 if savepoints > 0 => format!("ROLLBACK TO s{savepoints}"),
            12 if savepoints > 0 => {
                savepoints -= 1;
                format!("RELEASE s{}", savepoints + 1)
            }
            13 if in_tx => {
                in_tx = false;
                savepoints = 0;
                if rng.below(3) == 0 {
                    "ROLLBACK"
                } else {
                    "COMMIT"
                }
                .into()
            }
            14 => format!(
                "CREATE INDEX IF NOT EXISTS i{}_{} ON {table}(c)",
                rng.below(2),
                rng.below(3)
            ),
            15 if !in_tx && !reader_open && rng.below(4) == 0 => "VACUUM".into(),
            16 => {
                // A read on connection 1, in or out of its own read transaction.
                out.push(Step {
                    conn: 1,
                    sql: format!("SELECT count(*), sum(length(b)), max(c) FROM {table}"),
                });
                continue;
            }
            17 if !reader_open && !in_tx => {
                reader_open = true;
                out.push(Step {
                    conn: 1,
                    sql: "BEGIN".into(),
                });
                format!("SELECT count(*) FROM {table}")
            }
            18 if reader_open => {
                reader_open = false;
                out.push(Step {
                    conn: 1,
                    sql: "COMMIT".into(),
                });
                continue;
            }
            _ => format!("SELECT a, length(b), c FROM {table} ORDER BY a DESC LIMIT 5"),
        };
        let conn = if sql.starts_with("SELECT count(*) FROM") {
            1
        } else {
            0
        };
        out.push(Step { conn, sql });
    }
    if in_tx {
        out.push(Step {
            conn: 0,
            sql: "COMMIT".into(),
        });
    }
    if reader_open {
        out.push(Step {
            conn: 1,
            sql: "COMMIT".into(),
        });
    }
    out
}

/// Compares two database files page by page, ignoring page 1's header and anything after the
/// last page of `native` (our footer).
fn assert_same_pages(ours: &Path, native: &Path, seed: u64) {
    let ours_len = std::fs::metadata(ours).unwrap().len() as usize;
    let native_len = std::fs::metadata(native).unwrap().len() as usize;
    assert!(
        native_len % 4096 == 0 && ours_len >= native_len,
        "seed {seed}: sizes {ours_len} (ours) vs {native_len} (native)"
    );
    assert_eq!(
        ours_len - native_len,
        libsql_wal::FOOTER_SIZE,
        "seed {seed}: ours is the native size plus the footer"
    );
    compare_pages(ours, native).unwrap_or_else(|why| panic!("seed {seed}: {why}"));
}

fn run_seed(seed: u64) {
    let steps = workload(seed, 250);
    let db = TestDb::new(RegistryConfig {
        swap: SwapStrategy {
            max_frames: 1 + seed % 50,
            ..SwapStrategy::default()
        },
        ..RegistryConfig::default()
    });
    let native_dir = tempfile::tempdir().unwrap();
    let native_path = native_dir.path().join("data");
    {
        let ours = [db.connect("diff"), db.connect("diff")];
        let native = [connect_native(&native_path), connect_native(&native_path)];
        for (i, step) in steps.iter().enumerate() {
            let a = run_statement(&ours[step.conn], &step.sql);
            let b = run_statement(&native[step.conn], &step.sql);
            assert_eq!(a, b, "seed {seed}, step {i}: {}", step.sql);
        }
        native[0]
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .unwrap();
    }
    db.registry().shutdown().unwrap();
    assert_same_pages(&db.db_path("diff"), &native_path, seed);
}

#[test]
fn random_workloads_give_the_same_results_and_pages_as_sqlite_wal() {
    let seeds: u64 = std::env::var("DIFF_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(24);
    for seed in 1..=seeds {
        run_seed(seed);
    }
}
