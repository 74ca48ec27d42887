//! `cargo xtask bench replication`: a primary server taking single-row write transactions as
//! fast as it can on 10 namespaces (one writer each, on the primary's own connections), and a
//! replica server following them over loopback HTTP, both on this WAL over fs buckets, for
//! `LIBSQL_WAL_BENCH_SECONDS` (default 10). Prints
//! `replication-bench primary_tx_s=<x> replica_tx_s=<y> ratio=<y/x> lag_p50_ms=<a> lag_p99_ms=<b>`:
//! the replica's rate counts the primary's transactions it shows per second, until it shows
//! the last one; a transaction's lag runs from its commit on the primary to the replica
//! showing it (its applied frame_no, polled every millisecond).

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libsql_wal::{RegistryConfig, WalRegistry};
use libsql_wal_backend::{FsBackend, NamespaceName};
use libsql_wal_segment::StdIo;
use libsql_wal_server::{
    Durability, FollowedNamespaces, Host, ReplicaConfig, Server, ServerConfig, WalHost,
};
use libsql_wal_supervisor::{ActorStorage, StorageConfig};

type BenchResult<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const NAMESPACES: usize = 10;

/// One namespace's commits the replica does not show yet: (frame_no, committed at).
type Pending = Mutex<VecDeque<(u64, Instant)>>;

/// A server over a fs bucket under `dir`, a replica's if `replica`.
fn server(
    dir: &Path,
    runtime: &tokio::runtime::Runtime,
    replica: bool,
) -> BenchResult<(Server, Arc<dyn Host>)> {
    let backend = runtime.block_on(FsBackend::new(dir.join("bucket")))?;
    let storage = ActorStorage::start(
        backend,
        StorageConfig {
            scratch_dir: dir.join("scratch"),
            ..StorageConfig::default()
        },
    )?;
    let registry = Arc::new(WalRegistry::new(
        StdIo,
        storage,
        RegistryConfig {
            replica,
            ..RegistryConfig::default()
        },
    ));
    let host: Arc<dyn Host> = Arc::new(WalHost::new(
        &dir.join("data"),
        registry,
        runtime.handle().clone(),
        Durability::Normal,
    )?);
    let server = Server::start(
        ServerConfig {
            user_addr: "127.0.0.1:0".parse()?,
            admin_addr: None,
            ..ServerConfig::default()
        },
        host.clone(),
    )?;
    Ok((server, host))
}

/// The `q`-quantile of sorted `values`, in milliseconds.
fn quantile_ms(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let at = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[at].as_secs_f64() * 1000.0
}

fn main() -> BenchResult {
    let seconds: u64 = std::env::var("LIBSQL_WAL_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let dir = tempfile::tempdir()?;
    let (primary, primary_host) = server(&dir.path().join("primary"), &runtime, false)?;
    let (replica, _replica_host) = server(&dir.path().join("replica"), &runtime, true)?;
    let replica = Arc::new(replica);
    let names: Vec<NamespaceName> = (0..NAMESPACES)
        .map(|i| format!("bench-{i}").parse())
        .collect::<Result<_, _>>()?;
    for name in &names {
        primary_host.create(name)?;
        let conn = primary_host.connect(name)?;
        conn.sql()
            .execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")?;
    }
    replica.follow(ReplicaConfig {
        primary: format!("http://{}", primary.user_addr()),
        auth_token: None,
        namespaces: FollowedNamespaces::Listed(names.clone()),
        discover_every: Duration::from_secs(10),
        forward_writes: false,
        primary_bucket: None,
    })?;
    let pending: Arc<Vec<Pending>> = Arc::new((0..NAMESPACES).map(|_| Mutex::default()).collect());
    let lags = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let writers: Vec<_> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let (host, name, pending, stop) = (
                primary_host.clone(),
                name.clone(),
                pending.clone(),
                stop.clone(),
            );
            std::thread::spawn(move || -> BenchResult<u64> {
                let conn = host.connect(&name)?;
                let log = host.replication_source(&name)?;
                let mut count = 0;
                while !stop.load(Ordering::Relaxed) {
                    conn.sql()
                        .execute("INSERT INTO t(v) VALUES (randomblob(100))", ())?;
                    let frame_no = log.hello().last_committed_frame_no;
                    pending[i]
                        .lock()
                        .map_err(|_| "poisoned")?
                        .push_back((frame_no, Instant::now()));
                    count += 1;
                }
                Ok(count)
            })
        })
        .collect();
    // The sampler: a commit is shown once the replica's applied frame_no reaches it.
    let sampler = {
        let (pending, lags, names) = (pending.clone(), lags.clone(), names.clone());
        let replica = replica.clone();
        let statuses = move || replica.replication_statuses();
        let stop = stop.clone();
        std::thread::spawn(move || -> BenchResult<Instant> {
            loop {
                let statuses = statuses();
                let now = Instant::now();
                let mut empty = true;
                for (i, name) in names.iter().enumerate() {
                    let applied = statuses
                        .iter()
                        .find(|s| s.namespace == name.as_str())
                        .map_or(0, |s| s.applied_frame_no);
                    let mut queue = pending[i].lock().map_err(|_| "poisoned")?;
                    while queue.front().is_some_and(|&(f, _)| f <= applied) {
                        if let Some((_, at)) = queue.pop_front() {
                            lags.lock()
                                .map_err(|_| "poisoned")?
                                .push(now.duration_since(at));
                        }
                    }
                    empty &= queue.is_empty();
                }
                if stop.load(Ordering::Relaxed) && empty {
                    return Ok(now);
                }
                if started.elapsed() > Duration::from_secs(seconds * 10 + 60) {
                    return Err("the replica never caught up".into());
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    std::thread::sleep(Duration::from_secs(seconds));
    stop.store(true, Ordering::Relaxed);
    let written_by = Instant::now();
    let mut transactions = 0;
    for writer in writers {
        transactions += writer.join().map_err(|_| "a writer panicked")??;
    }
    let shown_by = sampler.join().map_err(|_| "the sampler panicked")??;
    let primary_s = written_by.duration_since(started).as_secs_f64();
    let replica_s = shown_by.duration_since(started).as_secs_f64();
    let mut lags = std::mem::take(&mut *lags.lock().map_err(|_| "poisoned")?);
    lags.sort_unstable();
    let (primary_tx_s, replica_tx_s) = (
        transactions as f64 / primary_s,
        transactions as f64 / replica_s,
    );
    println!(
        "replication-bench namespaces={NAMESPACES} seconds={seconds} transactions={transactions} primary_tx_s={primary_tx_s:.0} replica_tx_s={replica_tx_s:.0} ratio={:.2} lag_p50_ms={:.1} lag_p99_ms={:.1}",
        replica_tx_s / primary_tx_s,
        quantile_ms(&lags, 0.5),
        quantile_ms(&lags, 0.99),
    );
    if let Ok(replica) = Arc::try_unwrap(replica) {
        replica.stop();
    }
    primary.stop();
    Ok(())
}
