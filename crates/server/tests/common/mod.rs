//! Helpers of the end-to-end HTTP tests: a server running in this process on loopback port 0
//! over a fs (or S3) bucket in a temporary directory, a blocking HTTP client (hyper, driven by
//! the test's own tokio runtime), Hrana JSON builders and readers, and a tiny OpenMetrics
//! parser.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use libsql_wal::{RegistryConfig, WalRegistry};
use libsql_wal_backend::{Backend, FsBackend};
use libsql_wal_segment::StdIo;
use libsql_wal_server::{Durability, Server, ServerConfig, StopSummary, WalHost};
use libsql_wal_supervisor::{ActorStorage, StorageConfig};
use serde_json::{json, Value};
use tempfile::TempDir;

/// How long any one HTTP exchange may take before the test fails.
const HTTP_DEADLINE: Duration = Duration::from_secs(60);

/// How long a test polls for something that happens in the background.
pub const POLL_DEADLINE: Duration = Duration::from_secs(30);

/// The tokio runtime a test owns: the storage's async calls, `FsBackend::new`, HTTP calls.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime for the test")
}

/// The settings every test starts from: loopback port 0 for both APIs, few SQL threads.
pub fn base_config() -> ServerConfig {
    ServerConfig {
        user_addr: "127.0.0.1:0".parse().expect("a socket address"),
        admin_addr: Some("127.0.0.1:0".parse().expect("a socket address")),
        sql_threads: 4,
        shutdown_grace: Duration::from_secs(5),
        ..ServerConfig::default()
    }
}

/// Builds the host of a server over `backend`: storage, registry, `WalHost` on `data_dir`.
pub fn host_over<B: Backend>(
    backend: B,
    data_dir: &Path,
    scratch_dir: &Path,
    runtime: &tokio::runtime::Runtime,
) -> Arc<WalHost<B>> {
    host_over_with(
        backend,
        data_dir,
        scratch_dir,
        runtime,
        RegistryConfig::default(),
    )
}

/// `host_over`, with the registry's settings.
pub fn host_over_with<B: Backend>(
    backend: B,
    data_dir: &Path,
    scratch_dir: &Path,
    runtime: &tokio::runtime::Runtime,
    registry: RegistryConfig,
) -> Arc<WalHost<B>> {
    let storage = ActorStorage::start(
        backend,
        StorageConfig {
            scratch_dir: scratch_dir.to_path_buf(),
            ..StorageConfig::default()
        },
    )
    .expect("start the storage pipeline");
    let registry = Arc::new(WalRegistry::new(StdIo, storage, registry));
    Arc::new(
        WalHost::new(
            data_dir,
            registry,
            runtime.handle().clone(),
            Durability::Normal,
        )
        .expect("a WalHost"),
    )
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The `content-type` header ("" if none).
    pub content_type: String,
    /// The body.
    pub body: Vec<u8>,
}

impl Reply {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON (the test fails, showing the body, if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "the body of a {} reply is not JSON ({e}): {}",
                self.status,
                self.text()
            )
        })
    }

    /// Fails the test unless the status is `status`.
    pub fn expect_status(&self, status: u16, what: &str) -> &Self {
        assert_eq!(
            self.status,
            status,
            "{what}: status {} with body {}",
            self.status,
            self.text()
        );
        self
    }

    /// Fails the test unless the content type is exactly `content_type` (parameters ignored).
    pub fn expect_content_type(&self, content_type: &str, what: &str) -> &Self {
        let essence = self
            .content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        assert_eq!(
            essence,
            content_type,
            "{what}: content-type {:?}, body {}",
            self.content_type,
            self.text()
        );
        self
    }
}

/// A blocking HTTP/1 client on the test's runtime. It keeps no idle connection, so a server
/// stopping never waits for one of its connections.
pub struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Http {
    /// A client whose connections run on `runtime`.
    pub fn new(runtime: &tokio::runtime::Runtime) -> Self {
        let _inside = runtime.enter();
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build_http();
        Http { client }
    }

    /// Sends one request and reads the whole answer.
    pub fn send(
        &self,
        runtime: &tokio::runtime::Runtime,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Reply {
        let mut builder = hyper::Request::builder().method(method).uri(url);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder
            .body(Full::new(Bytes::from(body)))
            .expect("a well-formed HTTP request");
        let client = self.client.clone();
        let what = format!("{method} {url}");
        runtime.block_on(async move {
            let exchange = async {
                let response = client
                    .request(request)
                    .await
                    .unwrap_or_else(|e| panic!("{what}: the request failed: {e}"));
                let status = response.status().as_u16();
                let content_type = response
                    .headers()
                    .get(hyper::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                let body = response
                    .into_body()
                    .collect()
                    .await
                    .unwrap_or_else(|e| panic!("{what}: reading the body failed: {e}"))
                    .to_bytes()
                    .to_vec();
                Reply {
                    status,
                    content_type,
                    body,
                }
            };
            tokio::time::timeout(HTTP_DEADLINE, exchange)
                .await
                .unwrap_or_else(|_| panic!("{what}: no answer within {HTTP_DEADLINE:?}"))
        })
    }
}

/// A server running in this test, with its own directories (`data`, `bucket`, `scratch`
/// under one temporary directory), its runtime and a client. Stopped when dropped.
pub struct TestServer {
    server: Option<Server>,
    http: Http,
    /// The user API's address.
    pub user: SocketAddr,
    /// The admin API's address.
    pub admin: Option<SocketAddr>,
    /// Headers sent with every user request (a token, say).
    pub user_headers: Vec<(String, String)>,
    /// Headers sent with every admin request.
    pub admin_headers: Vec<(String, String)>,
    /// The runtime: the storage's calls and the HTTP client run on it.
    pub runtime: tokio::runtime::Runtime,
    /// Everything on disk.
    pub dir: TempDir,
    /// A read replica's server (its registry has `RegistryConfig::replica`).
    pub replica: bool,
    /// Changes the base settings at each `restart`.
    pub reconfigure: fn(&mut ServerConfig),
}

impl TestServer {
    /// A server with the base settings over a fs bucket.
    pub fn start() -> Self {
        Self::start_with(|_| {})
    }

    /// A server with the base settings changed by `configure`, over a fs bucket.
    pub fn start_with(configure: impl FnOnce(&mut ServerConfig)) -> Self {
        let runtime = runtime();
        let dir = tempfile::tempdir().expect("a temporary directory");
        let backend = runtime
            .block_on(FsBackend::new(dir.path().join("bucket")))
            .expect("a fs backend");
        Self::start_on(backend, runtime, dir, configure)
    }

    /// A server over `backend`.
    pub fn start_on<B: Backend>(
        backend: B,
        runtime: tokio::runtime::Runtime,
        dir: TempDir,
        configure: impl FnOnce(&mut ServerConfig),
    ) -> Self {
        let host = host_over(
            backend,
            &dir.path().join("data"),
            &dir.path().join("scratch"),
            &runtime,
        );
        let mut config = base_config();
        configure(&mut config);
        let server = Server::start(config, host).expect("the server starts");
        let http = Http::new(&runtime);
        TestServer {
            user: server.user_addr(),
            admin: server.admin_addr(),
            server: Some(server),
            http,
            user_headers: Vec::new(),
            admin_headers: Vec::new(),
            runtime,
            dir,
            replica: false,
            reconfigure: |_| {},
        }
    }

    /// A read replica's server over a fs bucket of its own; it follows nothing until
    /// `server().follow(...)`.
    pub fn start_replica() -> Self {
        Self::start_replica_with(|_| {})
    }

    /// `start_replica` with the base settings changed by `configure` (at each restart too).
    pub fn start_replica_with(configure: fn(&mut ServerConfig)) -> Self {
        let mut server = Self::start();
        server.replica = true;
        server.reconfigure = configure;
        server.restart();
        server
    }

    /// Stops the server and starts it again over the same directories and addresses (a fs
    /// bucket under its directory), with the base settings (changed by `reconfigure`).
    pub fn restart(&mut self) {
        if self.server.is_some() {
            self.stop();
        }
        let backend = self
            .runtime
            .block_on(FsBackend::new(self.bucket_dir()))
            .expect("a fs backend");
        let host = host_over_with(
            backend,
            &self.data_dir(),
            &self.dir.path().join("scratch"),
            &self.runtime,
            RegistryConfig {
                replica: self.replica,
                ..RegistryConfig::default()
            },
        );
        let mut config = base_config();
        (self.reconfigure)(&mut config);
        config.user_addr = self.user;
        config.admin_addr = self.admin;
        self.server = Some(Server::start(config, host).expect("the server starts again"));
    }

    /// The running server.
    pub fn server(&self) -> &Server {
        self.server.as_ref().expect("the server is running")
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The fs bucket's directory.
    pub fn bucket_dir(&self) -> PathBuf {
        self.dir.path().join("bucket")
    }

    /// The database file of `namespace`.
    pub fn db_file(&self, namespace: &str) -> PathBuf {
        self.data_dir()
            .join("namespaces")
            .join(namespace)
            .join("data")
    }

    /// Stops the server and returns its summary.
    pub fn stop(&mut self) -> StopSummary {
        self.server.take().expect("the server is running").stop()
    }

    /// Sends a request to `addr` with `headers` on top of `base`.
    fn send_to(
        &self,
        addr: SocketAddr,
        base: &[(String, String)],
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Reply {
        let mut all: Vec<(&str, &str)> =
            base.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        all.extend_from_slice(headers);
        self.http.send(
            &self.runtime,
            method,
            &format!("http://{addr}{path}"),
            &all,
            body,
        )
    }

    /// A request to the user API.
    pub fn user_request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Reply {
        self.send_to(self.user, &self.user_headers, method, path, headers, body)
    }

    /// A JSON POST to the user API.
    pub fn post(&self, path: &str, headers: &[(&str, &str)], body: &Value) -> Reply {
        let mut all = vec![("content-type", "application/json")];
        all.extend_from_slice(headers);
        self.user_request("POST", path, &all, body.to_string().into_bytes())
    }

    /// A request to the admin API.
    pub fn admin_request(&self, method: &str, path: &str, body: Option<&Value>) -> Reply {
        let admin = self.admin.expect("the server has an admin API");
        let (headers, body): (Vec<(&str, &str)>, Vec<u8>) = match body {
            Some(body) => (
                vec![("content-type", "application/json")],
                body.to_string().into_bytes(),
            ),
            None => (Vec::new(), Vec::new()),
        };
        self.send_to(admin, &self.admin_headers, method, path, &headers, body)
    }

    /// Creates `namespace` through the admin API (it must answer 200).
    pub fn create_namespace(&self, namespace: &str) {
        self.admin_request(
            "POST",
            &format!("/v1/namespaces/{namespace}/create"),
            Some(&json!({})),
        )
        .expect_status(200, &format!("creating namespace {namespace}"));
    }

    /// `GET /v1/namespaces/{namespace}` (it must answer 200).
    pub fn namespace_info(&self, namespace: &str) -> Value {
        let reply = self.admin_request("GET", &format!("/v1/namespaces/{namespace}"), None);
        reply.expect_status(200, &format!("describing namespace {namespace}"));
        reply.json()
    }

    /// Names listed by `GET /v1/namespaces`.
    pub fn namespace_names(&self) -> Vec<String> {
        let reply = self.admin_request("GET", "/v1/namespaces", None);
        reply.expect_status(200, "listing namespaces");
        reply.json()["namespaces"]
            .as_array()
            .expect("`namespaces` is an array")
            .iter()
            .map(|n| {
                n["name"]
                    .as_str()
                    .expect("each namespace has a name")
                    .to_string()
            })
            .collect()
    }

    /// `GET /metrics`, parsed.
    pub fn metrics(&self) -> Metrics {
        let reply = self.admin_request("GET", "/metrics", None);
        reply.expect_status(200, "GET /metrics");
        assert!(
            reply
                .content_type
                .starts_with("application/openmetrics-text"),
            "metrics content-type {:?}",
            reply.content_type
        );
        Metrics::parse(&reply.text())
    }

    /// A new stream (no baton yet) on `route` (`/v2/pipeline`, `/v3/pipeline`,
    /// `/dev/ns/v2/pipeline`...) with `headers`.
    pub fn stream(&self, route: &str, headers: &[(&str, &str)]) -> Stream<'_> {
        Stream {
            server: self,
            route: route.to_string(),
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            baton: None,
            batons: Vec::new(),
        }
    }

    /// Runs `sql` on a fresh stream of `route` (closing it) and returns the statement's result.
    pub fn query(&self, route: &str, headers: &[(&str, &str)], sql: &str) -> Value {
        let results = self
            .stream(route, headers)
            .send_and_close(vec![execute(sql)]);
        ok_result(&results[0], "execute").clone()
    }

    /// Runs `sql`, which must yield one integer, on a fresh `/v2/pipeline` stream.
    pub fn count(&self, headers: &[(&str, &str)], sql: &str) -> i64 {
        scalar_i64(&self.query("/v2/pipeline", headers, sql))
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop();
        }
    }
}

/// A Hrana stream seen from the client: it carries the baton from one request to the next.
pub struct Stream<'a> {
    server: &'a TestServer,
    /// The pipeline route.
    pub route: String,
    headers: Vec<(String, String)>,
    /// The baton for the next request (`None`: a new stream, or closed).
    pub baton: Option<String>,
    /// Every baton received, in order.
    pub batons: Vec<String>,
}

impl Stream<'_> {
    /// Sends a pipeline with the current baton; returns the raw reply (the baton is kept only
    /// from a 200).
    pub fn send_raw(&mut self, requests: Vec<Value>) -> Reply {
        let body = json!({ "baton": self.baton, "requests": requests });
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let reply = self.server.post(&self.route, &headers, &body);
        if reply.status == 200 {
            let json = reply.json();
            self.baton = json["baton"].as_str().map(str::to_string);
            if let Some(baton) = &self.baton {
                self.batons.push(baton.clone());
            }
        }
        reply
    }

    /// Sends a pipeline, which must answer 200 with one result per request, and returns the
    /// results.
    pub fn send(&mut self, requests: Vec<Value>) -> Vec<Value> {
        let count = requests.len();
        let kinds: Vec<String> = requests
            .iter()
            .map(|r| r["type"].as_str().unwrap_or("").to_string())
            .collect();
        let reply = self.send_raw(requests);
        reply.expect_status(200, &format!("pipeline on {}", self.route));
        reply.expect_content_type("application/json", "pipeline");
        let json = reply.json();
        assert!(
            json.get("base_url").is_some_and(Value::is_null),
            "base_url is present and null: {json}"
        );
        let results = json["results"]
            .as_array()
            .unwrap_or_else(|| panic!("`results` is an array: {json}"))
            .clone();
        assert_eq!(results.len(), count, "one result per request: {json}");
        for (result, kind) in results.iter().zip(&kinds) {
            if result["type"] == "ok" {
                assert_eq!(
                    result["response"]["type"],
                    kind.as_str(),
                    "a response has its request's type: {result}"
                );
            }
        }
        results
    }

    /// Sends `requests` followed by `close`; the stream is closed afterwards (baton null).
    pub fn send_and_close(&mut self, mut requests: Vec<Value>) -> Vec<Value> {
        requests.push(json!({"type": "close"}));
        let mut results = self.send(requests);
        assert!(
            self.baton.is_none(),
            "the baton is null after close: {:?}",
            self.baton
        );
        let close = results.pop().expect("the close result");
        assert_eq!(close, json!({"type": "ok", "response": {"type": "close"}}));
        results
    }

    /// Runs one statement on the stream (kept open) and returns its result.
    pub fn execute(&mut self, sql: &str) -> Value {
        let results = self.send(vec![execute(sql)]);
        ok_result(&results[0], sql).clone()
    }
}

/// A Hrana integer value.
pub fn int(value: i64) -> Value {
    json!({"type": "integer", "value": value.to_string()})
}

/// A Hrana float value.
pub fn float(value: f64) -> Value {
    json!({"type": "float", "value": value})
}

/// A Hrana text value.
pub fn text(value: &str) -> Value {
    json!({"type": "text", "value": value})
}

/// A Hrana blob value given as base64 text (as a client would send it).
pub fn blob_base64(base64: &str) -> Value {
    json!({"type": "blob", "base64": base64})
}

/// A Hrana null.
pub fn sql_null() -> Value {
    json!({"type": "null"})
}

/// Standard base64 without padding.
pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes)
}

/// Decodes standard base64 without padding.
pub fn unb64(text: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(text)
        .unwrap_or_else(|e| panic!("{text:?} is not unpadded standard base64: {e}"))
}

/// A statement without arguments.
pub fn stmt(sql: &str) -> Value {
    json!({"sql": sql})
}

/// An `execute` request of `sql`.
pub fn execute(sql: &str) -> Value {
    json!({"type": "execute", "stmt": stmt(sql)})
}

/// An `execute` request of `stmt`.
pub fn execute_stmt(stmt: Value) -> Value {
    json!({"type": "execute", "stmt": stmt})
}

/// The `result` of an ok response of `kind` (the test fails on an error result).
pub fn ok_result<'a>(result: &'a Value, what: &str) -> &'a Value {
    assert_eq!(result["type"], "ok", "{what}: {result}");
    &result["response"]["result"]
}

/// The `error` of an error result.
pub fn error_of<'a>(result: &'a Value, what: &str) -> &'a Value {
    assert_eq!(result["type"], "error", "{what}: {result}");
    let error = &result["error"];
    assert!(
        error["message"].is_string() && error["code"].is_string(),
        "{what}: an error has a message and a code: {result}"
    );
    error
}

/// The code of an error result.
pub fn error_code(result: &Value, what: &str) -> String {
    error_of(result, what)["code"]
        .as_str()
        .expect("a code")
        .to_string()
}

/// The rows of a statement result.
pub fn rows(result: &Value) -> Vec<Vec<Value>> {
    result["rows"]
        .as_array()
        .unwrap_or_else(|| panic!("`rows` is an array: {result}"))
        .iter()
        .map(|row| {
            row.as_array()
                .unwrap_or_else(|| panic!("a row is an array: {result}"))
                .clone()
        })
        .collect()
}

/// The integer a Hrana integer value holds.
pub fn as_i64(value: &Value) -> i64 {
    assert_eq!(value["type"], "integer", "an integer value: {value}");
    value["value"]
        .as_str()
        .unwrap_or_else(|| panic!("an integer is a string: {value}"))
        .parse()
        .unwrap_or_else(|e| panic!("{value} is not an i64: {e}"))
}

/// The one integer of a one-row one-column result.
pub fn scalar_i64(result: &Value) -> i64 {
    let rows = rows(result);
    assert_eq!(rows.len(), 1, "one row: {result}");
    assert_eq!(rows[0].len(), 1, "one column: {result}");
    as_i64(&rows[0][0])
}

/// The keys every StmtResult carries.
pub const STMT_RESULT_KEYS: [&str; 8] = [
    "cols",
    "rows",
    "affected_row_count",
    "last_insert_rowid",
    "replication_index",
    "rows_read",
    "rows_written",
    "query_duration_ms",
];

/// Fails the test unless `result` has every StmtResult key, with the right JSON types.
pub fn assert_full_stmt_result(result: &Value) {
    for key in STMT_RESULT_KEYS {
        assert!(result.get(key).is_some(), "{key} is missing from {result}");
    }
    assert!(result["cols"].is_array(), "{result}");
    assert!(result["rows"].is_array(), "{result}");
    assert!(result["affected_row_count"].is_u64(), "{result}");
    assert!(
        result["last_insert_rowid"].is_string() || result["last_insert_rowid"].is_null(),
        "{result}"
    );
    assert!(result["rows_read"].is_u64(), "{result}");
    assert!(result["rows_written"].is_u64(), "{result}");
    assert!(result["query_duration_ms"].is_number(), "{result}");
}

/// Polls `check` until it returns `Some` (every 50 ms, for at most `POLL_DEADLINE`).
pub fn poll<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            started.elapsed() < POLL_DEADLINE,
            "{what}: not within {POLL_DEADLINE:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every file under `dir`, recursively (none if it does not exist).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_under(&path));
        } else {
            found.push(path);
        }
    }
    found
}

/// One sample of an OpenMetrics exposition.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The metric name (with its `_total`, `_bucket`... suffix).
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its value.
    pub value: f64,
}

/// A parsed OpenMetrics exposition.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// Every sample.
    pub samples: Vec<Sample>,
    /// The metric families named by `# TYPE` lines, with their types.
    pub types: BTreeMap<String, String>,
}

impl Metrics {
    /// Parses OpenMetrics text; fails the test on any line that is not well formed or on a
    /// missing `# EOF`.
    pub fn parse(text: &str) -> Self {
        let mut samples = Vec::new();
        let mut types = BTreeMap::new();
        let mut lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines.pop(),
            Some("# EOF"),
            "an exposition ends with # EOF:\n{text}"
        );
        for line in lines {
            if let Some(rest) = line.strip_prefix("# ") {
                let mut parts = rest.splitn(3, ' ');
                let kind = parts.next().unwrap_or("");
                let name = parts.next().unwrap_or("");
                assert!(
                    matches!(kind, "TYPE" | "HELP" | "UNIT") && !name.is_empty(),
                    "a bad comment line: {line:?}"
                );
                if kind == "TYPE" {
                    types.insert(name.to_string(), parts.next().unwrap_or("").to_string());
                }
                continue;
            }
            samples.push(Self::sample(line));
        }
        for sample in &samples {
            assert!(
                types
                    .keys()
                    .any(|family| sample.name.starts_with(family.as_str())),
                "sample {} belongs to no # TYPE family",
                sample.name
            );
        }
        Metrics { samples, types }
    }

    fn sample(line: &str) -> Sample {
        let bad = || format!("a bad sample line: {line:?}");
        let (name_and_labels, value) = match line.find('}') {
            Some(end) => (&line[..=end], line[end + 1..].trim()),
            None => line.split_once(' ').unwrap_or_else(|| panic!("{}", bad())),
        };
        // A value may be followed by a timestamp or an exemplar: take the first word.
        let value = value
            .split(' ')
            .next()
            .unwrap_or_else(|| panic!("{}", bad()));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("{}", bad())),
        };
        let (name, labels) = match name_and_labels.split_once('{') {
            Some((name, rest)) => {
                let inner = rest
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("{}", bad()));
                let mut labels = BTreeMap::new();
                for pair in split_labels(inner) {
                    let (key, quoted) = pair.split_once('=').unwrap_or_else(|| panic!("{}", bad()));
                    let unquoted = quoted
                        .strip_prefix('"')
                        .and_then(|q| q.strip_suffix('"'))
                        .unwrap_or_else(|| panic!("{}", bad()));
                    labels.insert(key.to_string(), unquoted.to_string());
                }
                (name.to_string(), labels)
            }
            None => (name_and_labels.trim().to_string(), BTreeMap::new()),
        };
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "{}",
            bad()
        );
        Sample {
            name,
            labels,
            value,
        }
    }

    /// The value of the sample named `name` with exactly `labels`, if there is one.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let wanted: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels == wanted)
            .map(|s| s.value)
    }
}

/// Splits `a="x",b="y,z"` at the commas outside quotes.
fn split_labels(inner: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in inner.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < inner.len() {
        parts.push(&inner[start..]);
    }
    parts
}
