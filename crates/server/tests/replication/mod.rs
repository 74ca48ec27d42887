//! Read replicas over HTTP: a replica server following a primary server in this process, both
//! on loopback with their own directories and buckets, written and read through Hrana.

use std::time::{Duration, Instant};

use crate::common::{error_code, scalar_i64, TestServer, POLL_DEADLINE};
use libsql_wal_server::{FollowStatus, FollowedNamespaces, ReplicaConfig};
use serde_json::json;

const V2: &str = "/v2/pipeline";

fn ns(name: &str) -> [(&str, &str); 1] {
    [("x-namespace", name)]
}

/// Makes `replica` follow `primary`.
fn follow(replica: &TestServer, primary: &TestServer, namespaces: FollowedNamespaces) {
    follow_with(replica, primary, namespaces, false);
}

/// Makes `replica` follow `primary`, forwarding writes to it if `forward_writes`.
fn follow_with(
    replica: &TestServer,
    primary: &TestServer,
    namespaces: FollowedNamespaces,
    forward_writes: bool,
) {
    follow_url(
        replica,
        &format!("http://{}", primary.user),
        namespaces,
        forward_writes,
    );
}

/// Makes `replica` follow the primary at `url`.
fn follow_url(
    replica: &TestServer,
    url: &str,
    namespaces: FollowedNamespaces,
    forward_writes: bool,
) {
    replica
        .server()
        .follow(ReplicaConfig {
            primary: url.to_string(),
            auth_token: None,
            namespaces,
            discover_every: Duration::from_millis(100),
            forward_writes,
            primary_bucket: None,
        })
        .expect("the replica follows");
}

/// Makes `replica` follow `primary`, reading the primary's (fs) bucket to catch up.
fn follow_reading_bucket(
    replica: &TestServer,
    primary: &TestServer,
    namespaces: FollowedNamespaces,
) {
    let backend = replica
        .runtime
        .block_on(libsql_wal_backend::FsBackend::new(primary.bucket_dir()))
        .expect("the primary's bucket");
    let storage = libsql_wal_supervisor::ActorStorage::<_, std::fs::File>::start(
        backend,
        libsql_wal_supervisor::StorageConfig {
            scratch_dir: replica.dir.path().join("primary-bucket-scratch"),
            ..libsql_wal_supervisor::StorageConfig::default()
        },
    )
    .expect("a storage over the primary's bucket");
    let bucket = libsql_wal::BucketCatchUp::new(storage, &replica.dir.path().join("catch-up"))
        .expect("a catch-up over the primary's bucket");
    replica
        .server()
        .follow(ReplicaConfig {
            primary: format!("http://{}", primary.user),
            auth_token: None,
            namespaces,
            discover_every: Duration::from_millis(100),
            forward_writes: false,
            primary_bucket: Some(std::sync::Arc::new(bucket)),
        })
        .expect("the replica follows");
}

/// What `FaultyProxy` does to the requests it passes on.
#[derive(Debug, Default)]
struct Faults {
    /// A namespace to take out of listings, and from how many listings more.
    lacking: Option<(String, u32)>,
    /// Requests whose path ends with this wait while it is set.
    hold: Option<&'static str>,
    /// How many requests have waited so.
    held: usize,
}

/// Injects faults: a proxy in front of a primary's user API that passes everything on, but
/// can take one namespace out of the primary's next few listings while the primary still has
/// it, and hold requests to some route (a replica's stream from the primary that is slow to
/// come back, a forwarded write the primary is slow to answer).
struct FaultyProxy {
    /// Runs the proxy; dropped with it.
    _runtime: tokio::runtime::Runtime,
    url: String,
    faults: std::sync::Arc<std::sync::Mutex<Faults>>,
}

impl FaultyProxy {
    fn start(primary: &TestServer) -> Self {
        use http_body_util::{BodyExt, Full};
        use hyper_util::rt::{TokioExecutor, TokioIo};
        type Body = http_body_util::combinators::BoxBody<bytes::Bytes, hyper::Error>;
        let runtime = crate::common::runtime();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("an address"));
        let faults = std::sync::Arc::new(std::sync::Mutex::new(Faults::default()));
        let primary = primary.user;
        let client = {
            let _entered = runtime.enter();
            hyper_util::client::legacy::Client::builder(TokioExecutor::new())
                .build_http::<Full<bytes::Bytes>>()
        };
        let state = faults.clone();
        runtime.spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let (client, state) = (client.clone(), state.clone());
                let service = hyper::service::service_fn(
                    move |request: hyper::Request<hyper::body::Incoming>| {
                        let (client, state) = (client.clone(), state.clone());
                        async move {
                            let (parts, body) = request.into_parts();
                            let body = body.collect().await?.to_bytes();
                            let path = parts.uri.path();
                            let holds =
                                |faults: &Faults| faults.hold.is_some_and(|h| path.ends_with(h));
                            if holds(&state.lock().expect("not poisoned")) {
                                state.lock().expect("not poisoned").held += 1;
                                while holds(&state.lock().expect("not poisoned")) {
                                    tokio::time::sleep(Duration::from_millis(10)).await;
                                }
                            }
                            let path_and_query =
                                parts.uri.path_and_query().map_or("/", |p| p.as_str());
                            let mut onward = hyper::Request::builder()
                                .method(parts.method.clone())
                                .uri(format!("http://{primary}{path_and_query}"));
                            for (name, value) in &parts.headers {
                                onward = onward.header(name, value);
                            }
                            let onward = onward.body(Full::new(body)).expect("a request");
                            let answer = client.request(onward).await.expect("the primary answers");
                            let taken_out = {
                                let mut faults = state.lock().expect("not poisoned");
                                match &mut faults.lacking {
                                    Some((name, left))
                                        if *left > 0 && path == "/replication/v1/namespaces" =>
                                    {
                                        *left -= 1;
                                        Some(name.clone())
                                    }
                                    _ => None,
                                }
                            };
                            let Some(taken_out) = taken_out else {
                                return Ok::<_, hyper::Error>(
                                    answer.map(|b| -> Body { b.boxed() }),
                                );
                            };
                            let (parts, body) = answer.into_parts();
                            let mut listed: serde_json::Value =
                                serde_json::from_slice(&body.collect().await?.to_bytes())
                                    .expect("a listing");
                            listed["namespaces"]
                                .as_array_mut()
                                .expect("a list")
                                .retain(|n| n != &json!(taken_out));
                            let body = Full::new(bytes::Bytes::from(listed.to_string()))
                                .map_err(|never| match never {})
                                .boxed();
                            let mut answer = hyper::Response::new(body);
                            *answer.status_mut() = parts.status;
                            answer.headers_mut().insert(
                                hyper::header::CONTENT_TYPE,
                                hyper::header::HeaderValue::from_static("application/json"),
                            );
                            Ok(answer)
                        }
                    },
                );
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(socket), service),
                );
            }
        });
        FaultyProxy {
            _runtime: runtime,
            url,
            faults,
        }
    }

    fn faults(&self) -> std::sync::MutexGuard<'_, Faults> {
        self.faults.lock().expect("not poisoned")
    }

    /// Takes `namespace` out of the next `listings` listings; returns at once.
    fn lack(&self, namespace: &str, listings: u32) {
        self.faults().lacking = Some((namespace.to_string(), listings));
    }

    /// Waits until every listing asked for by `lack` was answered.
    fn wait_answered(&self) {
        let deadline = Instant::now() + POLL_DEADLINE;
        while self
            .faults()
            .lacking
            .as_ref()
            .is_some_and(|(_, left)| *left > 0)
        {
            assert!(Instant::now() < deadline, "the replica stopped listing");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn status_of(replica: &TestServer, namespace: &str) -> Option<FollowStatus> {
    replica
        .server()
        .replication_statuses()
        .into_iter()
        .find(|s| s.namespace == namespace)
}

/// Waits until `replica` has applied everything `primary` committed in `namespace`.
fn wait_caught_up(replica: &TestServer, primary: &TestServer, namespace: &str) -> FollowStatus {
    let deadline = Instant::now() + POLL_DEADLINE;
    loop {
        let committed = primary.namespace_info(namespace)["last_committed_frame_no"]
            .as_u64()
            .expect("a frame_no");
        let status = status_of(replica, namespace);
        if let Some(status) = &status {
            if status.applied_frame_no == committed && committed > 0 {
                return status.clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "{namespace}: the replica did not catch up with frame {committed}: {status:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What a namespace holds, in one row: rows, their sum, their bytes, the counter.
fn summary(server: &TestServer, namespace: &str) -> serde_json::Value {
    let result = server.query(
        V2,
        &ns(namespace),
        "SELECT count(*), total(a), total(length(b)), (SELECT k FROM counter) FROM t",
    );
    result["rows"][0].clone()
}

fn write(primary: &TestServer, namespace: &str, k: i64) {
    primary.stream(V2, &ns(namespace)).send_and_close(vec![
        json!({"type": "execute", "stmt": {"sql": "BEGIN"}}),
        json!({"type": "execute", "stmt": {"sql": format!("INSERT INTO t(a, b) VALUES ({k}, randomblob({}))", 1000 + k % 5 * 1500)}}),
        json!({"type": "execute", "stmt": {"sql": format!("UPDATE counter SET k = {k}")}}),
        json!({"type": "execute", "stmt": {"sql": "COMMIT"}}),
    ]);
}

/// Follows only the namespace `default`.
fn only_default() -> FollowedNamespaces {
    FollowedNamespaces::Listed(vec!["default".parse().expect("a name")])
}

/// Creates `names` on `primary`, each with the schema.
fn make_namespaces(primary: &TestServer, names: &[&str]) {
    for name in names {
        primary.create_namespace(name);
        make_schema(primary, name);
    }
}

fn make_schema(primary: &TestServer, namespace: &str) {
    primary.query(
        V2,
        &ns(namespace),
        "CREATE TABLE t(a INTEGER PRIMARY KEY, b BLOB)",
    );
    primary.query(V2, &ns(namespace), "CREATE TABLE counter(k INTEGER)");
    primary.query(V2, &ns(namespace), "INSERT INTO counter VALUES (0)");
}

/// Asserts that what the replica shows of `namespace` is a state the primary committed.
fn assert_committed_state(replica: &TestServer, namespace: &str) {
    let tables = scalar_i64(&replica.query(
        V2,
        &ns(namespace),
        "SELECT count(*) FROM sqlite_master WHERE name IN ('t', 'counter')",
    ));
    if tables < 2 {
        return;
    }
    let row = summary(replica, namespace);
    let (rows, counter) = (&row[0]["value"], &row[3]["value"]);
    assert_eq!(rows, counter, "{namespace}: a state between commits: {row}");
}

#[test]
fn a_replica_follows_every_namespace_over_http_serves_reads_and_refuses_writes() {
    let primary = TestServer::start();
    let replica = TestServer::start_replica();
    make_namespaces(&primary, &["a", "b"]);
    follow(&replica, &primary, FollowedNamespaces::All);
    for k in 1..=40 {
        for name in ["a", "b"] {
            write(&primary, name, k);
        }
        if k % 8 == 0 {
            for name in ["a", "b"] {
                assert_committed_state(&replica, name);
            }
        }
    }
    // A namespace made after the replica started is found and followed too.
    primary.create_namespace("c");
    make_schema(&primary, "c");
    write(&primary, "c", 1);
    for name in ["a", "b", "c"] {
        let status = wait_caught_up(&replica, &primary, name);
        assert!(status.connected && status.steps_applied >= 1, "{status:?}");
        assert_eq!(status.lag_frames, 0, "{status:?}");
        assert_eq!(summary(&replica, name), summary(&primary, name), "{name}");
    }
    // Writes on the replica are refused, read-only, and change nothing.
    let results = replica.stream(V2, &ns("a")).send(vec![
        json!({"type": "execute", "stmt": {"sql": "INSERT INTO t(a, b) VALUES (1000, x'00')"}}),
    ]);
    assert_eq!(
        error_code(&results[0], "a write on a replica"),
        "SQLITE_READONLY"
    );
    assert_eq!(summary(&replica, "a"), summary(&primary, "a"));
    // A namespace deleted on the primary is no longer followed, and is deleted here too.
    primary
        .admin_request(
            "DELETE",
            "/v1/namespaces/b",
            Some(&json!({"keep_backup": false})),
        )
        .expect_status(200, "delete b");
    let deadline = Instant::now() + POLL_DEADLINE;
    while replica.namespace_names().contains(&"b".to_string()) || status_of(&replica, "b").is_some()
    {
        assert!(
            Instant::now() < deadline,
            "the replica still has b: {:?}",
            status_of(&replica, "b")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    replica
        .stream(V2, &ns("b"))
        .send_raw(vec![
            json!({"type": "execute", "stmt": {"sql": "SELECT 1"}}),
        ])
        .expect_status(404, "a namespace the primary deleted, on the replica");
    // Its metrics say where it is.
    let metrics = replica.metrics();
    assert_eq!(
        metrics.value("libsql_wal_replica_lag_frames", &[("namespace", "a")]),
        Some(0.0)
    );
    assert!(metrics
        .value("libsql_wal_replica_steps_applied", &[("namespace", "a")])
        .is_some_and(|v| v >= 1.0));
}

#[test]
fn a_namespace_some_listings_lack_is_kept_and_followed_while_the_primary_still_has_it() {
    let primary = TestServer::start();
    let replica = TestServer::start_replica();
    make_namespaces(&primary, &["a", "b"]);
    let proxy = FaultyProxy::start(&primary);
    follow_url(&replica, &proxy.url, FollowedNamespaces::All, false);
    for k in 1..=20 {
        write(&primary, "b", k);
        wait_caught_up(&replica, &primary, "b");
    }
    let before = wait_caught_up(&replica, &primary, "b");
    // Three listings in a row lack b (one cut short, say); its hello says the primary has it.
    proxy.lack("b", 3);
    proxy.wait_answered();
    write(&primary, "b", 21);
    let after = wait_caught_up(&replica, &primary, "b");
    assert!(replica.namespace_names().contains(&"b".to_string()));
    assert!(
        after.steps_applied > before.steps_applied && after.full_images == before.full_images,
        "b was followed again from nothing: before {before:?}, after {after:?}"
    );
    assert_eq!(summary(&replica, "b"), summary(&primary, "b"));
}

#[test]
fn a_replica_goes_on_across_a_primary_restart_and_its_own_restart() {
    let mut primary = TestServer::start();
    let mut replica = TestServer::start_replica();
    make_schema(&primary, "default");
    for k in 1..=10 {
        write(&primary, "default", k);
    }
    follow(&replica, &primary, only_default());
    let first = wait_caught_up(&replica, &primary, "default");
    assert_eq!(first.full_images, 1, "{first:?}");

    // The primary stops cleanly and starts again on the same address: the replica
    // reconnects and resumes where it was, without a full image.
    primary.restart();
    for k in 11..=20 {
        write(&primary, "default", k);
    }
    let after_primary = wait_caught_up(&replica, &primary, "default");
    assert!(after_primary.reconnects >= 1, "{after_primary:?}");
    assert_eq!(after_primary.full_images, 1, "{after_primary:?}");
    assert_eq!(summary(&replica, "default"), summary(&primary, "default"));

    // The replica restarts: it resumes from its recorded position.
    replica.restart();
    assert_eq!(summary(&replica, "default"), summary(&primary, "default"));
    follow(&replica, &primary, only_default());
    for k in 21..=30 {
        write(&primary, "default", k);
    }
    let after_replica = wait_caught_up(&replica, &primary, "default");
    assert_eq!(after_replica.full_images, 0, "{after_replica:?}");
    assert_eq!(summary(&replica, "default"), summary(&primary, "default"));
}

#[test]
fn a_replica_follows_through_idle_closes_of_the_namespace_on_both_sides() {
    fn idle_soon(config: &mut libsql_wal_server::ServerConfig) {
        config.idle_namespace_timeout = Some(Duration::from_millis(200));
    }
    let primary = TestServer::start_with(idle_soon);
    let replica = TestServer::start_replica_with(idle_soon);
    make_schema(&primary, "default");
    follow(&replica, &primary, only_default());
    for round in 0..4 {
        for k in round * 5 + 1..=round * 5 + 5 {
            write(&primary, "default", k);
        }
        wait_caught_up(&replica, &primary, "default");
        assert_eq!(summary(&replica, "default"), summary(&primary, "default"));
        // Long enough for several idle checks on both sides.
        std::thread::sleep(Duration::from_millis(700));
    }
    let status = wait_caught_up(&replica, &primary, "default");
    // The primary's log was closed while idle and opened again: the replica resumed each
    // time in the same incarnation.
    assert!(status.reconnects >= 3, "{status:?}");
    assert_eq!(status.full_images, 1, "{status:?}");
    assert_eq!(summary(&replica, "default"), summary(&primary, "default"));
}

#[test]
fn a_write_forwarded_after_the_primary_rewound_is_answered_once_the_replica_has_it_from_the_new_log(
) {
    let primary = TestServer::start();
    let replica = TestServer::start_replica();
    let rows = |server: &TestServer| server.count(&ns("default"), "SELECT count(*) FROM t");
    make_schema(&primary, "default");
    write(&primary, "default", 1);
    let point = crate::frame_no(
        &crate::seal_and_wait_durable(&primary, "default"),
        "durable_frame_no",
    );
    for k in 2..=30 {
        write(&primary, "default", k);
    }
    crate::seal_and_wait_durable(&primary, "default");
    let proxy = FaultyProxy::start(&primary);
    follow_url(&replica, &proxy.url, only_default(), true);
    let before = wait_caught_up(&replica, &primary, "default");
    // The primary goes back to the point, in a new log whose frame_nos are below the ones the
    // replica is at; the replica's stream of the new log is slow to come.
    proxy.faults().hold = Some("/steps");
    primary
        .admin_request(
            "POST",
            "/v1/namespaces/default/rewind",
            Some(&json!({"frame_no": point})),
        )
        .expect_status(200, "rewind");
    assert_eq!(rows(&primary), 1);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            std::thread::sleep(Duration::from_millis(500));
            proxy.faults().hold = None;
        });
        let results = replica
            .stream(V2, &ns("default"))
            .send_and_close(vec![json!(
                {"type": "execute", "stmt": {"sql": "INSERT INTO t(a, b) VALUES (1000, x'01')"}}
            )]);
        assert_eq!(results[0]["type"], "ok", "{results:?}");
        let committed = primary.namespace_info("default")["last_committed_frame_no"]
            .as_u64()
            .expect("a frame_no");
        assert!(
            committed < before.applied_frame_no,
            "{committed} {before:?}"
        );
        // Read back at once: the answer waited for the new log, not for a frame_no of the old.
        assert_eq!(rows(&replica), 2);
        assert_eq!(
            replica.count(&ns("default"), "SELECT count(*) FROM t WHERE a = 1000"),
            1
        );
    });
}

#[test]
fn forwarded_writes_are_bounded_in_number_and_in_the_size_of_the_answers_held() {
    fn small(config: &mut libsql_wal_server::ServerConfig) {
        config.limits.max_waiting_requests = 1;
        config.limits.max_response_bytes = 4096;
    }
    let primary = TestServer::start();
    let replica = TestServer::start_replica_with(small);
    make_schema(&primary, "default");
    let proxy = FaultyProxy::start(&primary);
    follow_url(&replica, &proxy.url, only_default(), true);
    wait_caught_up(&replica, &primary, "default");
    let insert = |k: i64| json!({"type": "execute", "stmt": {"sql": format!("INSERT INTO t(a, b) VALUES ({k}, x'01')")}});
    // One write in flight (the primary is slow to answer it): a second is refused, not sent.
    proxy.faults().hold = Some("/v2/pipeline");
    std::thread::scope(|scope| {
        let first = scope.spawn(|| {
            replica
                .stream(V2, &ns("default"))
                .send_and_close(vec![insert(1)])
        });
        let deadline = Instant::now() + POLL_DEADLINE;
        while proxy.faults().held == 0 {
            assert!(
                Instant::now() < deadline,
                "the first write never reached the primary"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let refused = replica.stream(V2, &ns("default")).send_raw(vec![insert(2)]);
        refused.expect_status(503, "a second forwarded write");
        assert_eq!(
            refused.json()["code"],
            "SERVER_OVERLOADED",
            "{}",
            refused.text()
        );
        assert!(
            refused.text().contains("forwarded to the primary"),
            "refused as a forward, not by the SQL pool: {}",
            refused.text()
        );
        proxy.faults().hold = None;
        let results = first.join().expect("the first write");
        assert_eq!(results[0]["type"], "ok", "{results:?}");
    });
    assert_eq!(
        primary.count(&ns("default"), "SELECT count(*) FROM t"),
        1,
        "the refused write was not sent"
    );
    // An answer larger than the replica holds: the write was applied, the client is told it
    // may have been.
    let reply = replica.stream(V2, &ns("default")).send_raw(vec![json!(
        {"type": "execute", "stmt": {"sql": "INSERT INTO t(a, b) VALUES (3, randomblob(600000)) RETURNING hex(b)"}}
    )]);
    reply.expect_status(502, "a forwarded write whose answer is too large");
    assert_eq!(
        reply.json()["code"],
        "PRIMARY_ANSWER_LOST",
        "{}",
        reply.text()
    );
    let limit = 4096 * 6 + (1 << 20);
    assert!(
        reply.text().contains(&format!("larger than {limit} bytes")),
        "{}",
        reply.text()
    );
    assert_eq!(primary.count(&ns("default"), "SELECT count(*) FROM t"), 2);
    // The metrics count each outcome.
    let metrics = replica.metrics();
    for (outcome, n) in [
        ("read_back", 1.0),
        ("SERVER_OVERLOADED", 1.0),
        ("PRIMARY_ANSWER_LOST", 1.0),
    ] {
        assert_eq!(
            metrics.value(
                "libsql_wal_replica_forwarded_writes",
                &[("outcome", outcome)]
            ),
            Some(n),
            "{outcome}"
        );
    }
}

#[test]
fn a_replica_without_a_token_does_not_forward_writes_with_the_primarys() {
    let replica = TestServer::start_replica();
    let err = replica
        .server()
        .follow(ReplicaConfig {
            primary: "http://127.0.0.1:1".into(),
            auth_token: Some(libsql_wal_server::Token::new("primary-token").expect("a token")),
            namespaces: FollowedNamespaces::All,
            discover_every: Duration::from_secs(10),
            forward_writes: true,
            primary_bucket: None,
        })
        .expect_err("refused");
    assert!(err.to_string().contains("token of its own"), "{err}");
}

#[test]
fn a_replica_that_forwards_writes_answers_them_once_it_can_read_them_back() {
    let mut primary = TestServer::start();
    let replica = TestServer::start_replica();
    make_schema(&primary, "default");
    follow_with(&replica, &primary, only_default(), true);
    wait_caught_up(&replica, &primary, "default");
    let rows = |server: &TestServer| server.count(&ns("default"), "SELECT count(*) FROM t");

    // A write sent to the replica is run on the primary, and read back on the replica at once.
    for k in 1..=20 {
        let results = replica.stream(V2, &ns("default")).send_and_close(vec![json!(
            {"type": "execute", "stmt": {"sql": format!("INSERT INTO t(a, b) VALUES ({k}, x'01')")}}
        )]);
        assert_eq!(results[0]["type"], "ok", "{results:?}");
        assert_eq!(rows(&replica), k, "read back at once on the replica");
    }
    assert_eq!(rows(&primary), 20);
    // Also while the replica's stream from the primary is down: the primary restarted, and
    // the replica reconnects after its pause; the answer waits for it.
    primary.restart();
    // A table the replica does not have yet: the write is judged on the primary, not refused
    // here as naming no table.
    primary.query(V2, &ns("default"), "CREATE TABLE newer(x)");
    let results = replica
        .stream(V2, &ns("default"))
        .send_and_close(vec![json!(
            {"type": "execute", "stmt": {"sql": "INSERT INTO newer VALUES (1)"}}
        )]);
    assert_eq!(results[0]["type"], "ok", "{results:?}");
    assert_eq!(
        replica.count(&ns("default"), "SELECT count(*) FROM newer"),
        1
    );
    let results = replica
        .stream(V2, &ns("default"))
        .send_and_close(vec![json!(
            {"type": "execute", "stmt": {"sql": "DELETE FROM t WHERE a = 20"}}
        )]);
    assert_eq!(results[0]["type"], "ok", "{results:?}");
    assert_eq!(rows(&replica), 19, "read back at once after a reconnect");
    replica
        .stream(V2, &ns("default"))
        .send_and_close(vec![json!(
            {"type": "execute", "stmt": {"sql": "INSERT INTO t(a, b) VALUES (20, x'01')"}}
        )]);
    assert_eq!(rows(&replica), 20);

    // A transaction whose first request writes goes to the primary whole, on the primary's
    // batons; the replica sees it once it commits.
    let mut tx = replica.stream(V2, &ns("default"));
    tx.execute("BEGIN IMMEDIATE");
    assert!(
        tx.baton.as_deref().is_some_and(|b| b.starts_with("p.")),
        "the baton of a stream on the primary: {:?}",
        tx.baton
    );
    tx.execute("INSERT INTO t(a, b) VALUES (100, x'02')");
    tx.execute("UPDATE counter SET k = 100");
    assert_eq!(
        scalar_i64(&tx.execute("SELECT count(*) FROM t")),
        21,
        "the stream reads its own uncommitted write on the primary"
    );
    assert_eq!(rows(&replica), 20, "not committed yet");
    tx.send_and_close(vec![json!({"type": "execute", "stmt": {"sql": "COMMIT"}})]);
    assert_eq!(rows(&replica), 21);
    assert_eq!(summary(&replica, "default"), summary(&primary, "default"));

    // A cursor (Hrana 3) that writes, then closed on its stream, and the stateless /v1 API.
    let cursor = replica.post(
        "/v3/cursor",
        &ns("default"),
        &json!({"baton": null, "batch": {"steps": [
            {"stmt": {"sql": "INSERT INTO t(a, b) VALUES (200, x'03')"}},
            {"stmt": {"sql": "SELECT count(*) FROM t"}},
        ]}}),
    );
    cursor.expect_status(200, "a forwarded cursor");
    let text = cursor.text();
    let head: serde_json::Value =
        serde_json::from_str(text.lines().next().expect("a head line")).expect("a JSON head");
    let baton = head["baton"].as_str().expect("a baton").to_string();
    assert!(baton.starts_with("p."), "{head}");
    assert!(!text.contains("step_error"), "{text}");
    let mut closing = replica.stream(V2, &ns("default"));
    closing.baton = Some(baton);
    closing.send_and_close(vec![]);
    assert_eq!(rows(&replica), 22);
    replica
        .post(
            "/v1/execute",
            &ns("default"),
            &json!({"stmt": {"sql": "INSERT INTO t(a, b) VALUES (300, x'04')"}}),
        )
        .expect_status(200, "a forwarded /v1/execute");
    assert_eq!(rows(&replica), 23);
    let batch = replica.post(
        "/v1/batch",
        &ns("default"),
        &json!({"batch": {"steps": [{"stmt": {"sql": "INSERT INTO t(a, b) VALUES (301, x'05')"}}]}}),
    );
    batch.expect_status(200, "a forwarded /v1/batch");
    assert_eq!(
        batch.json()["result"]["step_errors"],
        json!([null]),
        "{}",
        batch.text()
    );
    assert_eq!(rows(&replica), 24);

    // Reads are the replica's own; a stream that began with a read stays here, and a write
    // later in it is refused.
    let mut local = replica.stream(V2, &ns("default"));
    assert_eq!(scalar_i64(&local.execute("SELECT count(*) FROM t")), 24);
    assert!(
        local.baton.as_deref().is_some_and(|b| !b.starts_with("p.")),
        "{:?}",
        local.baton
    );
    let results = local.send(vec![
        json!({"type": "execute", "stmt": {"sql": "INSERT INTO t(a, b) VALUES (400, x'06')"}}),
    ]);
    assert_eq!(
        error_code(&results[0], "a write after a read"),
        "SQLITE_READONLY"
    );
    local.send_and_close(vec![]);
    assert_eq!(rows(&primary), 24);

    // With the primary gone, a forwarded write is refused as unavailable, and nothing changes.
    primary.stop();
    let refused = replica.stream(V2, &ns("default")).send_raw(vec![
        json!({"type": "execute", "stmt": {"sql": "INSERT INTO t(a, b) VALUES (500, x'07')"}}),
        json!({"type": "close"}),
    ]);
    refused.expect_status(503, "a write with the primary down");
    assert_eq!(
        refused.json()["code"],
        "PRIMARY_UNAVAILABLE",
        "{}",
        refused.text()
    );
    assert_eq!(rows(&replica), 24);
}

/// Seals `namespace` on `primary`, waits until it is durable, and checkpoints until the log no
/// longer holds its sealed frames (they are then only in the database file and the bucket).
fn checkpoint_away(primary: &TestServer, namespace: &str) {
    let durable = crate::frame_no(
        &crate::seal_and_wait_durable(primary, namespace),
        "durable_frame_no",
    );
    crate::common::poll(&format!("{namespace} checkpoints"), || {
        primary
            .admin_request(
                "POST",
                &format!("/v1/namespaces/{namespace}/checkpoint"),
                None,
            )
            .expect_status(200, "checkpoint");
        let info = primary.namespace_info(namespace);
        (crate::frame_no(&info, "checkpointed_frame_no") >= durable).then_some(())
    });
}

#[test]
fn a_replica_that_reads_the_primarys_bucket_catches_up_from_it_instead_of_taking_full_images() {
    let primary = TestServer::start();
    let mut replica = TestServer::start_replica();
    let both = || {
        FollowedNamespaces::Listed(vec![
            "default".parse().expect("a name"),
            "fresh".parse().expect("a name"),
        ])
    };
    make_schema(&primary, "default");
    for k in 1..=30 {
        write(&primary, "default", k);
    }
    // The primary's log no longer holds these frames: without the bucket, a full image.
    checkpoint_away(&primary, "default");
    // Nothing of this one is in the bucket yet: a full image from the primary.
    make_namespaces(&primary, &["fresh"]);
    write(&primary, "fresh", 1);
    follow_reading_bucket(&replica, &primary, both());
    let first = wait_caught_up(&replica, &primary, "default");
    assert_eq!(
        (first.bucket_catch_ups, first.full_images),
        (1, 0),
        "{first:?}"
    );
    assert_eq!(summary(&replica, "default"), summary(&primary, "default"));
    let fresh = wait_caught_up(&replica, &primary, "fresh");
    assert_eq!(
        (fresh.bucket_catch_ups, fresh.full_images),
        (0, 1),
        "{fresh:?}"
    );
    assert_eq!(summary(&replica, "fresh"), summary(&primary, "fresh"));

    // From there it follows the primary's steps.
    for k in 31..=40 {
        write(&primary, "default", k);
    }
    let following = wait_caught_up(&replica, &primary, "default");
    assert!(
        following.steps_applied >= 1
            && (following.bucket_catch_ups, following.full_images) == (1, 0),
        "{following:?}"
    );

    // Down while the primary checkpoints away what it misses; the newest commits are only in
    // the primary's log: the bucket, then the primary, bring it back.
    replica.restart();
    for k in 41..=80 {
        write(&primary, "default", k);
    }
    checkpoint_away(&primary, "default");
    for k in 81..=85 {
        write(&primary, "default", k);
    }
    follow_reading_bucket(&replica, &primary, both());
    let back = wait_caught_up(&replica, &primary, "default");
    assert!(
        back.steps_applied >= 1 && (back.bucket_catch_ups, back.full_images) == (1, 0),
        "{back:?}"
    );
    assert_eq!(summary(&replica, "default"), summary(&primary, "default"));
    assert_eq!(
        replica.query(V2, &ns("default"), "PRAGMA integrity_check")["rows"][0][0]["value"],
        "ok"
    );
    let metrics = replica.metrics();
    assert_eq!(
        metrics.value(
            "libsql_wal_replica_bucket_catch_ups",
            &[("namespace", "default")]
        ),
        Some(1.0)
    );
    // Its scratch files are gone.
    let scratch: Vec<_> = std::fs::read_dir(replica.dir.path().join("catch-up"))
        .expect("the catch-up directory")
        .collect();
    assert!(scratch.is_empty(), "{scratch:?}");
}

/// Injects faults: a primary's bucket that cannot be read (every catch-up fails reading it).
#[derive(Debug, Default)]
struct UnreadableBucket {
    tries: std::sync::atomic::AtomicU64,
}

impl libsql_wal::PrimaryBucket for UnreadableBucket {
    fn catch_up(
        &self,
        namespace: &libsql_wal_backend::NamespaceName,
        _: &libsql_wal::LogIdentity,
        _: u64,
        _: &mut dyn libsql_wal::StepInjector,
        _: &(dyn Fn() -> bool + Sync),
    ) -> Result<Option<libsql_wal::StepHeader>, libsql_wal::CatchUpError> {
        self.tries.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Err(libsql_wal::CatchUpError::Bucket(
            libsql_wal::Error::Replication {
                namespace: namespace.clone(),
                why: "injected: the bucket cannot be read".into(),
            },
        ))
    }
}

#[test]
fn a_replica_whose_primary_bucket_cannot_be_read_takes_a_full_image_after_six_failures() {
    let primary = TestServer::start();
    let replica = TestServer::start_replica();
    make_schema(&primary, "default");
    write(&primary, "default", 1);
    let bucket = std::sync::Arc::new(UnreadableBucket::default());
    replica
        .server()
        .follow(ReplicaConfig {
            primary: format!("http://{}", primary.user),
            auth_token: None,
            namespaces: only_default(),
            discover_every: Duration::from_millis(100),
            forward_writes: false,
            primary_bucket: Some(bucket.clone()),
        })
        .expect("the replica follows");
    // Six failures, each after the stream backoff (0.5 s doubling): about 31 s.
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        let status = status_of(&replica, "default");
        if let Some(status) = status.as_ref().filter(|s| s.full_images == 1) {
            break status.clone();
        }
        assert!(Instant::now() < deadline, "no full image: {status:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.bucket_catch_up_failures, 6, "{status:?}");
    assert_eq!(bucket.tries.load(std::sync::atomic::Ordering::SeqCst), 6);
    let caught_up = wait_caught_up(&replica, &primary, "default");
    assert_eq!(summary(&replica, "default"), summary(&primary, "default"));
    assert_eq!(caught_up.bucket_catch_ups, 0, "{caught_up:?}");
    assert_eq!(
        replica.metrics().value(
            "libsql_wal_replica_bucket_catch_up_failures",
            &[("namespace", "default")]
        ),
        Some(6.0)
    );
}
