//! `cargo xtask bench server`: 64 concurrent HTTP clients over 100 namespaces, keep-alive,
//! Hrana v2 pipelines of 80% point reads and 20% single-row write transactions, against the
//! server on this WAL (fs storage) and the same server with SQLite's own WAL
//! (`Sqlite3WalManager`), alternating rounds in the same run (`LIBSQL_WAL_BENCH_SECONDS`,
//! default 30, per side). Prints
//! `server-bench wal=<ours|native> req_per_s=<x> p50_ms=<a> p99_ms=<b> ratio=<ours/native>`.
//!
//! Then the memory of idle namespaces: 10,000 namespaces (`LIBSQL_WAL_BENCH_NAMESPACES`)
//! created and written once over HTTP, then left to the idle close; prints
//! `server-bench memory namespaces=<n> rss_mb=<m> per_namespace_kib=<k>` (RSS above the
//! process's before the namespaces, once they are idle) with the peak while they were open.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use libsql_sys::wal::Sqlite3WalManager;
use libsql_wal::{RegistryConfig, WalRegistry};
use libsql_wal_backend::{FsBackend, NamespaceName};
use libsql_wal_segment::StdIo;
use libsql_wal_server::{Durability, Host, NamespaceInfo, Server, ServerConfig, WalHost};
use libsql_wal_supervisor::{ActorStorage, NamespaceMetrics, StorageConfig, StorageMetrics};

type BenchResult<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const CLIENTS: usize = 64;
const NAMESPACES: usize = 100;
const ROWS: u64 = 1_000;

/// The same server on SQLite's own WAL: `{root}/{ns}/data`, one connection per stream.
struct NativeHost {
    root: PathBuf,
}

impl NativeHost {
    fn dir(&self, ns: &NamespaceName) -> PathBuf {
        self.root.join(ns.as_str())
    }
}

/// The error of what SQLite's own WAL cannot do.
fn unsupported(ns: &NamespaceName, what: &str) -> libsql_wal_server::Error {
    libsql_wal_server::Error::Wal {
        namespace: ns.clone(),
        source: libsql_wal::Error::Unsupported {
            namespace: ns.clone(),
            what: what.to_string(),
        },
    }
}

impl Host for NativeHost {
    fn exists(&self, ns: &NamespaceName) -> bool {
        self.dir(ns).is_dir()
    }

    fn connect(
        &self,
        ns: &NamespaceName,
    ) -> libsql_wal_server::Result<Box<dyn libsql_wal_server::DbConn>> {
        let conn = libsql_sys::Connection::open(
            self.dir(ns).join("data"),
            libsql_sys::rusqlite::OpenFlags::default(),
            Sqlite3WalManager::new(),
            1000,
            None,
        )
        .and_then(|c| {
            c.busy_timeout(Duration::from_secs(5))?;
            c.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL")?;
            Ok(c)
        })
        .map_err(|source| libsql_wal_server::Error::Connect {
            namespace: ns.clone(),
            source,
        })?;
        Ok(Box::new(conn))
    }

    fn create(&self, ns: &NamespaceName) -> libsql_wal_server::Result<()> {
        std::fs::create_dir_all(self.dir(ns)).map_err(|source| libsql_wal_server::Error::Io {
            path: self.dir(ns),
            source,
        })
    }

    fn delete(&self, ns: &NamespaceName, _keep_backup: bool) -> libsql_wal_server::Result<()> {
        std::fs::remove_dir_all(self.dir(ns)).map_err(|source| libsql_wal_server::Error::Io {
            path: self.dir(ns),
            source,
        })
    }

    fn rewind(
        &self,
        ns: &NamespaceName,
        _: libsql_wal::RestoreTarget,
    ) -> libsql_wal_server::Result<libsql_wal::Rewound> {
        Err(unsupported(
            ns,
            "a rewind on SQLite's own WAL (it keeps no history)",
        ))
    }

    fn list(&self) -> libsql_wal_server::Result<Vec<NamespaceName>> {
        Ok(Vec::new())
    }

    fn info(
        &self,
        ns: &NamespaceName,
        _: Option<&NamespaceMetrics>,
    ) -> libsql_wal_server::Result<NamespaceInfo> {
        Err(libsql_wal_server::Error::NamespaceNotFound(ns.clone()))
    }

    fn storage_metrics(&self) -> libsql_wal_server::Result<StorageMetrics> {
        Ok(StorageMetrics::default())
    }

    fn checkpoint(&self, _: &NamespaceName) -> libsql_wal_server::Result<usize> {
        Ok(0)
    }

    fn seal(&self, _: &NamespaceName) -> libsql_wal_server::Result<bool> {
        Ok(false)
    }

    fn touch(&self, _: &NamespaceName) {}

    fn close_idle(&self, _: Duration) -> usize {
        0
    }

    fn replication_source(
        &self,
        ns: &NamespaceName,
    ) -> libsql_wal_server::Result<Arc<dyn libsql_wal::ReplicationSource>> {
        Err(unsupported(ns, "replication"))
    }

    fn injector(
        &self,
        ns: &NamespaceName,
    ) -> libsql_wal_server::Result<Box<dyn libsql_wal::StepInjector>> {
        Err(unsupported(ns, "replication"))
    }

    fn shutdown(&self) -> libsql_wal_server::Result<()> {
        Ok(())
    }
}

type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
>;

fn client() -> Client {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_max_idle_per_host(CLIENTS * 2)
        .build_http()
}

async fn post(
    client: &Client,
    url: &str,
    namespace: Option<&str>,
    body: String,
) -> BenchResult<Vec<u8>> {
    let mut request = hyper::Request::post(url).header("content-type", "application/json");
    if let Some(ns) = namespace {
        request = request.header("x-namespace", ns);
    }
    let response = client
        .request(request.body(Full::new(Bytes::from(body)))?)
        .await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes().to_vec();
    if !status.is_success() {
        return Err(format!("{url}: HTTP {status}: {}", String::from_utf8_lossy(&body)).into());
    }
    Ok(body)
}

fn execute(sql: &str, args: &[serde_json::Value]) -> String {
    serde_json::json!({"requests": [
        {"type": "execute", "stmt": {"sql": sql, "args": args}},
        {"type": "close"}
    ]})
    .to_string()
}

fn check_ok(body: &[u8]) -> BenchResult {
    let value: serde_json::Value = serde_json::from_slice(body)?;
    let first = &value["results"][0];
    if first["type"] != "ok" {
        return Err(format!("a request failed: {first}").into());
    }
    Ok(())
}

fn ns_name(i: usize) -> String {
    format!("bench-{i}")
}

/// Creates the namespaces and fills each with `ROWS` rows.
async fn prepare(client: &Client, user: &str, admin: Option<&str>, host: &dyn Host) -> BenchResult {
    for i in 0..NAMESPACES {
        let name = ns_name(i);
        match admin {
            Some(admin) => {
                post(
                    client,
                    &format!("{admin}/v1/namespaces/{name}/create"),
                    None,
                    "{}".into(),
                )
                .await?;
            }
            None => host.create(&name.parse()?)?,
        }
        let fill = serde_json::json!({"requests": [
            {"type": "sequence", "sql": format!(
                "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB);
                 WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {ROWS})
                 INSERT INTO t(v) SELECT randomblob(100) FROM n;")},
            {"type": "close"}
        ]});
        check_ok(
            &post(
                client,
                &format!("{user}/v2/pipeline"),
                Some(&name),
                fill.to_string(),
            )
            .await?,
        )?;
    }
    Ok(())
}

/// Runs the mixed load for `duration`; returns the latencies in microseconds.
async fn load(client: &Client, user: &str, duration: Duration, seed: u64) -> BenchResult<Vec<u32>> {
    let stop = Arc::new(AtomicBool::new(false));
    let url = format!("{user}/v2/pipeline");
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let (client, url, stop) = (client.clone(), url.clone(), stop.clone());
        let mut state = seed ^ ((c as u64 + 1) * 0x9E37_79B9_7F4A_7C15);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let ns = ns_name((state % NAMESPACES as u64) as usize);
                let id = (state >> 20) % ROWS + 1;
                let body = if (state >> 40) % 5 == 0 {
                    execute(
                        "UPDATE t SET v = randomblob(100) WHERE id = ?",
                        &[serde_json::json!({"type": "integer", "value": id.to_string()})],
                    )
                } else {
                    execute(
                        "SELECT v FROM t WHERE id = ?",
                        &[serde_json::json!({"type": "integer", "value": id.to_string()})],
                    )
                };
                let started = Instant::now();
                let answer = post(&client, &url, Some(&ns), body).await?;
                check_ok(&answer)?;
                latencies.push(started.elapsed().as_micros().min(u32::MAX as u128) as u32);
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(latencies)
        }));
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await??);
    }
    Ok(all)
}

fn percentile_ms(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[at]) / 1000.0
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}

struct Ours {
    server: Server,
    host: Arc<WalHost<FsBackend>>,
}

fn start_ours(
    dir: &Path,
    runtime: &tokio::runtime::Runtime,
    idle: Option<Duration>,
) -> BenchResult<Ours> {
    let backend = runtime.block_on(FsBackend::new(dir.join("bucket")))?;
    let storage = ActorStorage::start(
        backend,
        StorageConfig {
            scratch_dir: dir.join("scratch"),
            ..StorageConfig::default()
        },
    )?;
    let registry = Arc::new(WalRegistry::new(StdIo, storage, RegistryConfig::default()));
    let host = Arc::new(WalHost::new(
        dir,
        registry,
        runtime.handle().clone(),
        Durability::Normal,
    )?);
    let server = Server::start(
        ServerConfig {
            user_addr: "127.0.0.1:0".parse()?,
            admin_addr: Some("127.0.0.1:0".parse()?),
            idle_namespace_timeout: idle,
            ..ServerConfig::default()
        },
        host.clone(),
    )?;
    Ok(Ours { server, host })
}

fn throughput(runtime: &tokio::runtime::Runtime, seconds: u64) -> BenchResult {
    let dir = tempfile::tempdir()?;
    let ours = start_ours(&dir.path().join("ours"), runtime, None)?;
    let native_root = dir.path().join("native");
    std::fs::create_dir_all(&native_root)?;
    let native_host = Arc::new(NativeHost { root: native_root });
    let native = Server::start(
        ServerConfig {
            user_addr: "127.0.0.1:0".parse()?,
            admin_addr: None,
            idle_namespace_timeout: None,
            ..ServerConfig::default()
        },
        native_host.clone(),
    )?;
    let client = client();
    let ours_url = format!("http://{}", ours.server.user_addr());
    let ours_admin = format!("http://{}", ours.server.admin_addr().ok_or("no admin API")?);
    let native_url = format!("http://{}", native.user_addr());
    runtime.block_on(prepare(&client, &ours_url, Some(&ours_admin), &*ours.host))?;
    runtime.block_on(prepare(&client, &native_url, None, &*native_host))?;
    // Warm both up, then alternate rounds so that drift in the machine hits both alike.
    let rounds = 4u64;
    let round = Duration::from_secs(seconds).div_f64(rounds as f64);
    runtime.block_on(load(&client, &ours_url, Duration::from_secs(2), 1))?;
    runtime.block_on(load(&client, &native_url, Duration::from_secs(2), 1))?;
    let (mut ours_lat, mut native_lat) = (Vec::new(), Vec::new());
    for r in 0..rounds {
        ours_lat.extend(runtime.block_on(load(&client, &ours_url, round, r + 10))?);
        native_lat.extend(runtime.block_on(load(&client, &native_url, round, r + 10))?);
    }
    let total = round.as_secs_f64() * rounds as f64;
    let ours_rate = ours_lat.len() as f64 / total;
    let native_rate = native_lat.len() as f64 / total;
    let ratio = ours_rate / native_rate;
    for (name, lat, rate) in [
        ("ours", &mut ours_lat, ours_rate),
        ("native", &mut native_lat, native_rate),
    ] {
        lat.sort_unstable();
        println!(
            "server-bench wal={name} req_per_s={rate:.0} p50_ms={:.2} p99_ms={:.2} ratio={ratio:.2}",
            percentile_ms(lat, 0.5),
            percentile_ms(lat, 0.99)
        );
    }
    let summary = ours.server.stop();
    if let Some(e) = summary.error {
        return Err(format!("our server stopped with an error: {e}").into());
    }
    native.stop();
    Ok(())
}

fn memory(runtime: &tokio::runtime::Runtime, namespaces: usize) -> BenchResult {
    let dir = tempfile::tempdir()?;
    let idle = Duration::from_secs(2);
    let ours = start_ours(dir.path(), runtime, Some(idle))?;
    let client = client();
    let user = format!("http://{}", ours.server.user_addr());
    let admin = format!("http://{}", ours.server.admin_addr().ok_or("no admin API")?);
    let before = rss_bytes();
    let mut peak = before;
    let batch = 500;
    for start in (0..namespaces).step_by(batch) {
        let end = (start + batch).min(namespaces);
        runtime.block_on(async {
            let mut tasks = Vec::new();
            for i in start..end {
                let (client, user, admin) = (client.clone(), user.clone(), admin.clone());
                tasks.push(tokio::spawn(async move {
                    let name = format!("idle-{i}");
                    post(
                        &client,
                        &format!("{admin}/v1/namespaces/{name}/create"),
                        None,
                        "{}".into(),
                    )
                    .await?;
                    let body = serde_json::json!({"requests": [
                        {"type": "sequence", "sql": "CREATE TABLE t(v); INSERT INTO t VALUES (1);"},
                        {"type": "close"}]});
                    check_ok(
                        &post(
                            &client,
                            &format!("{user}/v2/pipeline"),
                            Some(&name),
                            body.to_string(),
                        )
                        .await?,
                    )
                }));
            }
            for task in tasks {
                task.await??;
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        })?;
        peak = peak.max(rss_bytes());
    }
    // Wait for the idle close to take every namespace.
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let open = (0..namespaces)
            .filter(|i| {
                format!("idle-{i}")
                    .parse()
                    .ok()
                    .and_then(|ns| ours.host.info(&ns, None).ok())
                    .is_some_and(|info| info.open)
            })
            .count();
        if open == 0 || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let after = rss_bytes();
    let above = after.saturating_sub(before);
    println!(
        "server-bench memory namespaces={namespaces} rss_mb={:.1} per_namespace_kib={:.1} peak_open_rss_mb={:.1}",
        above as f64 / (1 << 20) as f64,
        above as f64 / 1024.0 / namespaces as f64,
        peak.saturating_sub(before) as f64 / (1 << 20) as f64
    );
    let summary = ours.server.stop();
    if let Some(e) = summary.error {
        return Err(format!("the server stopped with an error: {e}").into());
    }
    Ok(())
}

fn main() -> BenchResult {
    // `cargo bench` passes `--bench`; a name filters the cases (`throughput`, `memory`).
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wanted = |case: &str| filter.is_empty() || filter.iter().any(|f| case.contains(f.as_str()));
    let seconds = std::env::var("LIBSQL_WAL_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let namespaces = std::env::var("LIBSQL_WAL_BENCH_NAMESPACES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    if wanted("throughput") {
        throughput(&runtime, seconds)?;
    }
    if wanted("memory") {
        memory(&runtime, namespaces)?;
    }
    Ok(())
}
