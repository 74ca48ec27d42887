//! Crash recovery: a child process (this test binary, re-run in writer mode) commits rows in a
//! loop and reports each acknowledged commit; the parent kills it with SIGKILL at a random
//! moment, reopens the database, and checks that every acknowledged row is there and that
//! `PRAGMA integrity_check` is ok. Many rounds, under `synchronous=FULL` and `NORMAL` (a
//! killed process loses nothing the kernel already has, so NORMAL must keep everything too).

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use libsql_wal::{RegistryConfig, SwapStrategy};
use libsql_wal_tests::{integrity_check, TestDb};

/// Set in the child: `{root}|{synchronous}`.
const CHILD_ENV: &str = "LIBSQL_WAL_CRASH_CHILD";

fn config() -> RegistryConfig {
    RegistryConfig {
        swap: SwapStrategy {
            max_frames: 40,
            ..SwapStrategy::default()
        },
        ..RegistryConfig::default()
    }
}

/// The child's work: insert rows after the last one, printing `ack {id}` after each commit.
#[test]
fn crash_child_writer() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (root, sync) = spec.split_once('|').unwrap();
    let db = TestDb::reopen(Path::new(root), config());
    let conn = db.connect("crash");
    conn.execute_batch(&format!(
        "PRAGMA synchronous={sync}; CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, b BLOB);"
    ))
    .unwrap();
    let mut next: i64 = conn
        .query_row("SELECT coalesce(max(id), 0) + 1 FROM t", (), |r| r.get(0))
        .unwrap();
    let mut out = std::io::stdout().lock();
    loop {
        conn.execute(
            "INSERT INTO t VALUES (?1, randomblob(?2))",
            (next, 100 + (next % 13) * 700),
        )
        .unwrap();
        writeln!(out, "ack {next}").unwrap();
        out.flush().unwrap();
        next += 1;
    }
}

/// Runs the child until about `run_for` and its first acknowledged commit, kills it, and
/// returns the last id it acknowledged and what it printed on stderr.
fn run_and_kill(root: &Path, sync: &str, run_for: Duration) -> (i64, String) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash::crash_child_writer",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, format!("{}|{sync}", root.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let started = Instant::now();
    let mut last = 0;
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        if let Some(id) = line.strip_prefix("ack ") {
            last = id.parse().unwrap();
        }
        // Killed only once it acknowledged a commit this round: a child slow to start (a
        // loaded machine) used to be killed on the test harness's first line, before any.
        if last > 0 && started.elapsed() >= run_for {
            child.kill().unwrap();
            break;
        }
    }
    let mut stderr = String::new();
    if let Some(mut err) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut err, &mut stderr);
    }
    child.wait().unwrap();
    (last, stderr)
}

fn check(root: &Path, acknowledged: i64, round: usize, sync: &str) {
    let db = TestDb::reopen(root, config());
    let conn = db.connect("crash");
    let (count, max): (i64, i64) = conn
        .query_row("SELECT count(*), coalesce(max(id), 0) FROM t", (), |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert!(
        max >= acknowledged,
        "{sync} round {round}: acknowledged {acknowledged}, only {max} survived"
    );
    assert_eq!(count, max, "{sync} round {round}: ids are contiguous");
    let ok = integrity_check(&conn);
    assert_eq!(ok, "ok", "{sync} round {round}");
}

fn crash_rounds(sync: &str) {
    let (_dir, root) = TestDb::new(config()).into_root();
    let mut seed: u64 = 0x2545_F491 ^ sync.len() as u64;
    let mut previous = 0;
    for round in 0..12 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let run_for = Duration::from_millis(30 + seed % 170);
        let (acknowledged, stderr) = run_and_kill(&root, sync, run_for);
        assert!(
            acknowledged > previous,
            "{sync} round {round}: the writer made no progress ({acknowledged}); it said: {stderr}"
        );
        previous = acknowledged;
        check(&root, acknowledged, round, sync);
    }
}

#[test]
fn every_acknowledged_commit_survives_sigkill_under_full() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    crash_rounds("FULL");
}

#[test]
fn every_acknowledged_commit_survives_sigkill_under_normal() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    crash_rounds("NORMAL");
}
