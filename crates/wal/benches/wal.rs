//! `cargo xtask bench wal`: random inserts and random reads through SQLite on this WAL and on
//! SQLite's own WAL in the same process, alternating rounds, at `synchronous=NORMAL` and `FULL`.
//! Both connections ask for SQLite's default auto-checkpoint (1,000 frames): SQLite's WAL
//! checkpoints from the commit path; this WAL leaves it to its swap strategy (default 10,000
//! frames) and its background checkpointer, which run during the measurement. Prints
//! `wal-bench ...` summary lines, with the first and last round of each side.
//!
//! `seal-heavy`: 200 namespaces x 10 transactions of 64 rows of 4,000-byte blobs, with a seal
//! after every transaction and without, in the same run; `ratio=<with / without>`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use libsql_sys::wal::{Sqlite3WalManager, Wal, WalManager};
use libsql_sys::Connection;
use libsql_wal::{LibsqlWalManager, RegistryConfig, WalRegistry};
use libsql_wal_backend::NoStorage;
use libsql_wal_segment::StdIo;

/// Insert transactions per round; 10 rounds make the 20,000 inserts per side the reads run on.
const INSERTS_PER_ROUND: usize = 2_000;
/// Rounds of inserts.
const INSERT_ROUNDS: usize = 10;
/// Read transactions per round.
const READS_PER_ROUND: usize = 5_000;
/// Rounds of reads.
const READ_ROUNDS: usize = 6;

type BenchResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

fn open<M: WalManager>(path: &Path, manager: M, sync: &str) -> BenchResult<Connection<M::Wal>> {
    let conn = Connection::open(
        path,
        libsql_sys::rusqlite::OpenFlags::default(),
        manager,
        1000,
        None,
    )?;
    conn.execute_batch(&format!(
        "PRAGMA synchronous={sync};
         CREATE TABLE IF NOT EXISTS t1(a INTEGER PRIMARY KEY, b BLOB, c BLOB, d BLOB);
         CREATE INDEX IF NOT EXISTS t1b ON t1(b);
         CREATE INDEX IF NOT EXISTS t1c ON t1(c);"
    ))?;
    Ok(conn)
}

/// Releases the unused pages of both connections' page caches before a round. libsql-ffi builds
/// SQLite with `SQLITE_ENABLE_MEMORY_MANAGEMENT`, so all connections of the process share one
/// page-cache group: pages one connection keeps are pages the other cannot cache. Without
/// this, whichever side last ran a large write transaction keeps the whole group and the other
/// side reads nearly every page from disk (measured: 0 cache hits for the starved side). Both
/// sides are treated alike.
fn release_caches<A: Wal, B: Wal>(a: &Connection<A>, b: &Connection<B>) -> BenchResult {
    a.execute_batch("PRAGMA shrink_memory")?;
    b.execute_batch("PRAGMA shrink_memory")?;
    Ok(())
}

fn insert_round<W: Wal>(conn: &Connection<W>) -> BenchResult<Duration> {
    let started = Instant::now();
    for _ in 0..INSERTS_PER_ROUND {
        conn.execute_batch(
            "BEGIN;
             REPLACE INTO t1 VALUES(abs(random() % 5000000), randomblob(16), randomblob(16), randomblob(400));
             REPLACE INTO t1 VALUES(abs(random() % 5000000), randomblob(16), randomblob(16), randomblob(400));
             REPLACE INTO t1 VALUES(abs(random() % 5000000), randomblob(16), randomblob(16), randomblob(400));
             COMMIT;",
        )?;
    }
    Ok(started.elapsed())
}

fn read_round<W: Wal>(conn: &Connection<W>) -> BenchResult<Duration> {
    let started = Instant::now();
    let mut stmt =
        conn.prepare_cached("SELECT * FROM t1 WHERE a > abs(random() % 5000000) LIMIT 10")?;
    for _ in 0..READS_PER_ROUND {
        conn.execute_batch("BEGIN")?;
        for _ in 0..3 {
            let mut rows = stmt.query(())?;
            while rows.next()?.is_some() {}
        }
        conn.execute_batch("COMMIT")?;
    }
    Ok(started.elapsed())
}

fn tx_per_s(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

fn report(kind: &str, sync: &str, per_round: usize, ours: &[Duration], native: &[Duration]) {
    let total = |d: &[Duration]| tx_per_s(per_round * d.len(), d.iter().sum());
    let (ours_rate, native_rate) = (total(ours), total(native));
    println!(
        "wal-bench {kind} sync={sync} ours={ours_rate:.0} native={native_rate:.0} ratio={:.2} ours_first_round={:.0} ours_last_round={:.0} native_first_round={:.0} native_last_round={:.0}",
        ours_rate / native_rate,
        tx_per_s(per_round, ours[0]),
        tx_per_s(per_round, ours[ours.len() - 1]),
        tx_per_s(per_round, native[0]),
        tx_per_s(per_round, native[native.len() - 1]),
    );
}

fn bench(sync: &str) -> BenchResult {
    let dir = tempfile::tempdir()?;
    let ours_dir = dir.path().join("bench");
    std::fs::create_dir_all(&ours_dir)?;
    let registry = Arc::new(WalRegistry::new(
        StdIo,
        NoStorage::<std::fs::File>::default(),
        RegistryConfig::default(),
    ));
    let ours = open(
        &ours_dir.join("data"),
        LibsqlWalManager::new(registry.clone()),
        sync,
    )?;
    let native = open(&dir.path().join("native"), Sqlite3WalManager::new(), sync)?;

    // Each side's round starts with both page caches released (see `release_caches`), and the
    // order alternates.
    let (mut ours_inserts, mut native_inserts) = (Vec::new(), Vec::new());
    for round in 0..INSERT_ROUNDS {
        for side in [round % 2, 1 - round % 2] {
            release_caches(&ours, &native)?;
            if side == 0 {
                ours_inserts.push(insert_round(&ours)?);
            } else {
                native_inserts.push(insert_round(&native)?);
            }
        }
    }
    report(
        "inserts",
        sync,
        INSERTS_PER_ROUND,
        &ours_inserts,
        &native_inserts,
    );

    let (mut ours_reads, mut native_reads) = (Vec::new(), Vec::new());
    for round in 0..READ_ROUNDS {
        for side in [round % 2, 1 - round % 2] {
            release_caches(&ours, &native)?;
            if side == 0 {
                ours_reads.push(read_round(&ours)?);
            } else {
                native_reads.push(read_round(&native)?);
            }
        }
    }
    report("reads", sync, READS_PER_ROUND, &ours_reads, &native_reads);
    drop(ours);
    registry.shutdown()?;
    Ok(())
}

/// Namespaces of the seal-heavy case.
const SEAL_HEAVY_NAMESPACES: usize = 200;
/// Transactions per namespace in the seal-heavy case.
const SEAL_HEAVY_TRANSACTIONS: usize = 10;
/// Rows of 4,000-byte blobs per transaction in the seal-heavy case.
const SEAL_HEAVY_ROWS: usize = 64;

/// A connection of the seal-heavy case and its namespace's log.
type SealHeavyNamespace = (
    Connection<libsql_wal::LibsqlWal<StdIo, NoStorage<std::fs::File>>>,
    Arc<libsql_wal::SharedWal<StdIo, NoStorage<std::fs::File>>>,
);

/// One side of the seal-heavy case: a registry over its own directory and a connection per
/// namespace.
struct SealHeavySide {
    registry: Arc<WalRegistry<StdIo, NoStorage<std::fs::File>>>,
    conns: Vec<SealHeavyNamespace>,
    elapsed: Duration,
    /// Of `elapsed`, the time spent in `seal_now`.
    sealing: Duration,
}

impl SealHeavySide {
    fn open(root: &Path) -> BenchResult<Self> {
        let registry = Arc::new(WalRegistry::new(
            StdIo,
            NoStorage::<std::fs::File>::default(),
            RegistryConfig::default(),
        ));
        let mut conns = Vec::with_capacity(SEAL_HEAVY_NAMESPACES);
        for ns in 0..SEAL_HEAVY_NAMESPACES {
            let dir = root.join(format!("ns-{ns}"));
            std::fs::create_dir_all(&dir)?;
            let conn = Connection::open(
                dir.join("data"),
                libsql_sys::rusqlite::OpenFlags::default(),
                LibsqlWalManager::new(registry.clone()),
                0,
                None,
            )?;
            conn.execute_batch(
                "PRAGMA synchronous=NORMAL; CREATE TABLE IF NOT EXISTS t(a INTEGER PRIMARY KEY, b BLOB);",
            )?;
            let shared = registry
                .get(&format!("ns-{ns}").parse()?)
                .ok_or("the namespace is not open")?;
            conns.push((conn, shared));
        }
        Ok(SealHeavySide {
            registry,
            conns,
            elapsed: Duration::ZERO,
            sealing: Duration::ZERO,
        })
    }

    /// Runs one transaction on every namespace, sealing after each one if `seal`.
    fn round(&mut self, seal: bool) -> BenchResult {
        let started = Instant::now();
        for (conn, shared) in &self.conns {
            conn.execute_batch("BEGIN")?;
            for _ in 0..SEAL_HEAVY_ROWS {
                conn.execute("INSERT INTO t(b) VALUES (randomblob(4000))", ())?;
            }
            conn.execute_batch("COMMIT")?;
            if seal {
                let sealing = Instant::now();
                if !shared.seal_now()? {
                    return Err("a seal found the write lock taken".into());
                }
                self.sealing += sealing.elapsed();
            }
        }
        self.elapsed += started.elapsed();
        Ok(())
    }
}

/// The seal-heavy case: the same transactions with a seal after each one (the shape of
/// point-in-time marks with `seal_now`, and of age seals across many quiet tenants) and without
/// (the default swap strategy never fires here), alternating rounds, synchronous=NORMAL.
fn seal_heavy() -> BenchResult {
    let dir = tempfile::tempdir()?;
    let mut with = SealHeavySide::open(&dir.path().join("with"))?;
    let mut without = SealHeavySide::open(&dir.path().join("without"))?;
    for round in 0..SEAL_HEAVY_TRANSACTIONS {
        if round % 2 == 0 {
            with.round(true)?;
            without.round(false)?;
        } else {
            without.round(false)?;
            with.round(true)?;
        }
    }
    let transactions = SEAL_HEAVY_NAMESPACES * SEAL_HEAVY_TRANSACTIONS;
    let (with_rate, without_rate) = (
        tx_per_s(transactions, with.elapsed),
        tx_per_s(transactions, without.elapsed),
    );
    println!(
        "wal-bench seal-heavy sync=NORMAL namespaces={SEAL_HEAVY_NAMESPACES} transactions={transactions} rows_per_tx={SEAL_HEAVY_ROWS} with_seals_tx_s={with_rate:.0} without_tx_s={without_rate:.0} with_seals_s={:.2} of_which_sealing_s={:.2} without_s={:.2} ratio={:.2}",
        with.elapsed.as_secs_f64(),
        with.sealing.as_secs_f64(),
        without.elapsed.as_secs_f64(),
        with_rate / without_rate,
    );
    for side in [with, without] {
        drop(side.conns);
        side.registry.shutdown()?;
    }
    Ok(())
}

/// Runs every case, or only those named on the command line (`inserts-reads`, `seal-heavy`).
fn main() -> BenchResult {
    let asked: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wanted = |case: &str| asked.is_empty() || asked.iter().any(|a| a == case);
    if wanted("inserts-reads") {
        bench("NORMAL")?;
        bench("FULL")?;
    }
    if wanted("seal-heavy") {
        seal_heavy()?;
    }
    Ok(())
}
