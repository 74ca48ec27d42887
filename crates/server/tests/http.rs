//! End-to-end tests of `libsql-wal-server` over real HTTP: each test starts a server in this
//! process on 127.0.0.1 port 0, over a bucket in a temporary directory, and talks to it with
//! hyper as a client would: Hrana 2 and 3 pipelines, batons, the cursor, the v1 endpoints,
//! error codes, namespaces and their routing, the admin API, auth, limits, metrics, graceful
//! shutdown (restoring every namespace from the bucket alone) and idle close.

mod common;
mod replication;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use libsql_wal::{restore, Footer, RestoreOptions, RestoreReport, RestoreTarget, FOOTER_SIZE};
use libsql_wal_backend::{Backend, FsBackend, NamespaceName};
use libsql_wal_server::{Error, Limits, Server, Token};
use libsql_wal_supervisor::{ActorStorage, StorageConfig};
use libsql_wal_testkit::S3TestServer;
use serde_json::{json, Value};

const V2: &str = "/v2/pipeline";
const V3: &str = "/v3/pipeline";

/// A way to reach a namespace: what it is called, the route, and the headers it sends.
type Route<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>);

// ---------------------------------------------------------------------------------------------
// 1. Every stream request type

#[test]
fn execute_binds_every_argument_form_and_round_trips_every_value_type_on_v2_and_v3() {
    let server = TestServer::start();
    for route in [V2, V3] {
        let mut stream = server.stream(route, &[]);
        let results = stream.send_and_close(vec![
            execute_stmt(json!({
                "sql": "SELECT ?, ?, ?, ?, ?, ?",
                "args": [int(i64::MAX), int(i64::MIN), float(1.5), text("héllo ✓"),
                         blob_base64("AAEC/w=="), sql_null()],
            })),
            execute_stmt(json!({
                "sql": "SELECT ?2, ?1, ?2",
                "args": [text("first"), text("second")],
            })),
            execute_stmt(json!({
                "sql": "SELECT :a, @b, $c",
                "named_args": [
                    {"name": ":a", "value": int(1)},
                    {"name": "@b", "value": text("two")},
                    {"name": "$c", "value": float(3.25)},
                ],
            })),
            execute_stmt(json!({
                "sql": "SELECT :a, @b, $c",
                "named_args": [
                    {"name": "c", "value": int(30)},
                    {"name": "a", "value": int(10)},
                    {"name": "b", "value": int(20)},
                ],
            })),
            execute_stmt(json!({"sql": "SELECT 1 AS one, 2 AS two", "want_rows": false})),
            execute_stmt(json!({
                "sql": "SELECT length(?), length(?), hex(?), ?",
                "args": [blob_base64("AAE="), blob_base64("AAE"), blob_base64("/w"),
                         blob_base64("AAE")],
            })),
        ]);
        for result in &results {
            assert_full_stmt_result(ok_result(result, route));
        }

        let values = ok_result(&results[0], "positional");
        assert_eq!(
            rows(values),
            vec![vec![
                json!({"type": "integer", "value": "9223372036854775807"}),
                json!({"type": "integer", "value": "-9223372036854775808"}),
                json!({"type": "float", "value": 1.5}),
                json!({"type": "text", "value": "héllo ✓"}),
                json!({"type": "blob", "base64": "AAEC/w"}),
                json!({"type": "null"}),
            ]],
            "{route}: every value type comes back as sent (blobs unpadded)"
        );
        assert_eq!(values["cols"].as_array().map(Vec::len), Some(6));

        assert_eq!(
            rows(ok_result(&results[1], "?NNN")),
            vec![vec![text("second"), text("first"), text("second")]],
            "{route}: ?NNN takes positional argument NNN"
        );
        assert_eq!(
            rows(ok_result(&results[2], "named with prefix")),
            vec![vec![int(1), text("two"), float(3.25)]],
            "{route}: named arguments by their full name"
        );
        assert_eq!(
            rows(ok_result(&results[3], "named without prefix")),
            vec![vec![int(10), int(20), int(30)]],
            "{route}: named arguments by their bare name, in any order"
        );

        let no_rows = ok_result(&results[4], "want_rows false");
        assert_eq!(rows(no_rows), Vec::<Vec<Value>>::new(), "{route}: no rows");
        assert_eq!(
            no_rows["cols"],
            json!([{"name": "one", "decltype": null}, {"name": "two", "decltype": null}]),
            "{route}: columns are still described"
        );

        assert_eq!(
            rows(ok_result(&results[5], "blobs")),
            vec![vec![
                int(2),
                int(2),
                text("FF"),
                json!({"type": "blob", "base64": "AAE"})
            ]],
            "{route}: blobs are taken with and without padding"
        );

        // Through a table with declared types: decltypes, affected rows, the last rowid.
        let table = format!("typed_{}", &route[2..3]);
        let mut stream = server.stream(route, &[]);
        let results = stream.send_and_close(vec![
            execute(&format!(
                "CREATE TABLE {table}(id INTEGER PRIMARY KEY, i INTEGER, r REAL, t TEXT, b BLOB)"
            )),
            execute_stmt(json!({
                "sql": format!("INSERT INTO {table}(i, r, t, b) VALUES (?, ?, ?, ?), (?, ?, ?, ?)"),
                "args": [int(i64::MAX), float(-0.5), text(""), blob_base64(""),
                         int(-1), float(1e300), text("x"), sql_null()],
            })),
            execute(&format!("SELECT id, i, r, t, b FROM {table} ORDER BY id")),
        ]);
        let insert = ok_result(&results[1], "insert");
        assert_full_stmt_result(insert);
        assert_eq!(insert["affected_row_count"], 2, "{insert}");
        assert_eq!(insert["last_insert_rowid"], "2", "a string: {insert}");
        let select = ok_result(&results[2], "select");
        assert_full_stmt_result(select);
        assert_eq!(select["affected_row_count"], 0, "{select}");
        assert_eq!(
            select["cols"],
            json!([
                {"name": "id", "decltype": "INTEGER"},
                {"name": "i", "decltype": "INTEGER"},
                {"name": "r", "decltype": "REAL"},
                {"name": "t", "decltype": "TEXT"},
                {"name": "b", "decltype": "BLOB"},
            ])
        );
        assert_eq!(
            rows(select),
            vec![
                vec![
                    int(1),
                    int(i64::MAX),
                    float(-0.5),
                    text(""),
                    json!({"type": "blob", "base64": ""})
                ],
                vec![int(2), int(-1), float(1e300), text("x"), sql_null()],
            ]
        );
    }
}

#[test]
fn batch_conditions_ok_error_not_and_or_hold_and_is_autocommit_is_v3_only() {
    let server = TestServer::start();
    // Step i selects i, so a result shows which step it is.
    let step = |i: u32, condition: Option<Value>| {
        let mut step = json!({"stmt": {"sql": format!("SELECT {i}")}});
        if let Some(condition) = condition {
            step["condition"] = condition;
        }
        step
    };
    let ok = |s: u32| json!({"type": "ok", "step": s});
    let err = |s: u32| json!({"type": "error", "step": s});
    let not = |c: Value| json!({"type": "not", "cond": c});
    let and = |c: Vec<Value>| json!({"type": "and", "conds": c});
    let or = |c: Vec<Value>| json!({"type": "or", "conds": c});
    let steps = vec![
        step(0, None),
        json!({"stmt": {"sql": "SELECT * FROM no_such_table"}}),
        step(2, Some(ok(0))),
        step(3, Some(err(1))),
        step(4, Some(ok(1))),
        step(5, Some(err(0))),
        step(6, Some(not(ok(1)))),
        step(7, Some(not(ok(0)))),
        step(8, Some(and(vec![ok(0), err(1)]))),
        step(9, Some(and(vec![ok(0), ok(1)]))),
        step(10, Some(or(vec![ok(1), err(1)]))),
        step(11, Some(or(vec![ok(1), err(0)]))),
        // A skipped step neither succeeded nor failed.
        step(12, Some(ok(4))),
        step(13, Some(not(err(4)))),
        step(14, Some(and(vec![]))),
        step(15, Some(or(vec![]))),
    ];
    let ran = [
        true, false, true, true, false, false, true, false, true, false, true, false, false, true,
        true, false,
    ];
    for route in [V2, V3] {
        let mut stream = server.stream(route, &[]);
        let results = stream.send_and_close(vec![json!({
            "type": "batch", "batch": {"steps": steps.clone()}
        })]);
        let result = ok_result(&results[0], "batch");
        let step_results = result["step_results"].as_array().expect("step_results");
        let step_errors = result["step_errors"].as_array().expect("step_errors");
        assert_eq!(step_results.len(), steps.len(), "{result}");
        assert_eq!(step_errors.len(), steps.len(), "{result}");
        for (i, ran) in ran.iter().enumerate() {
            if i == 1 {
                assert!(
                    step_results[1].is_null(),
                    "{route}: step 1 failed: {result}"
                );
                let error = &step_errors[1];
                assert!(
                    error["code"].is_string()
                        && error["message"]
                            .as_str()
                            .is_some_and(|m| m.contains("no such table")),
                    "{route}: {error}"
                );
                continue;
            }
            assert!(step_errors[i].is_null(), "{route}: step {i}: {result}");
            if *ran {
                assert_full_stmt_result(&step_results[i]);
                assert_eq!(scalar_i64(&step_results[i]), i as i64, "{route}: step {i}");
            } else {
                assert!(
                    step_results[i].is_null(),
                    "{route}: step {i} is skipped: {result}"
                );
            }
        }
    }

    // is_autocommit on v3: true outside a transaction, false inside.
    let mut stream = server.stream(V3, &[]);
    let autocommit = json!({"type": "is_autocommit"});
    let results = stream.send_and_close(vec![json!({"type": "batch", "batch": {"steps": [
        step(0, Some(autocommit.clone())),
        {"stmt": {"sql": "BEGIN"}},
        step(2, Some(autocommit.clone())),
        step(3, Some(not(autocommit.clone()))),
        {"stmt": {"sql": "COMMIT"}},
        step(5, Some(and(vec![autocommit.clone(), ok(4)]))),
    ]}})]);
    let result = ok_result(&results[0], "is_autocommit batch");
    let ran: Vec<bool> = result["step_results"]
        .as_array()
        .expect("step_results")
        .iter()
        .map(|r| !r.is_null())
        .collect();
    assert_eq!(ran, vec![true, true, false, true, true, true], "{result}");

    // On v2 it is a protocol error: the whole request fails, 400 text/plain.
    let mut stream = server.stream(V2, &[]);
    let reply = stream.send_raw(vec![json!({"type": "batch", "batch": {"steps": [
        step(0, Some(autocommit.clone())),
    ]}})]);
    reply
        .expect_status(400, "is_autocommit on v2")
        .expect_content_type("text/plain", "is_autocommit on v2");
    assert!(!reply.text().is_empty(), "the body says why");

    // A condition on a later step is a protocol error on both versions.
    for route in [V2, V3] {
        let mut stream = server.stream(route, &[]);
        let reply = stream.send_raw(vec![json!({"type": "batch", "batch": {"steps": [
            step(0, Some(ok(0))),
        ]}})]);
        reply
            .expect_status(400, "a condition on its own step")
            .expect_content_type("text/plain", "a bad condition");
    }
}

#[test]
fn sequence_describe_and_stored_sql_work_and_an_unknown_sql_id_is_400() {
    let server = TestServer::start();
    for route in [V2, V3] {
        let table = format!("s{}", &route[2..3]);
        let mut stream = server.stream(route, &[]);
        let results = stream.send(vec![
            json!({"type": "sequence", "sql": format!(
                "CREATE TABLE {table}(a INTEGER, b TEXT); INSERT INTO {table} VALUES (1, 'x'); \
                 INSERT INTO {table} VALUES (2, 'y');"
            )}),
            execute(&format!("SELECT count(*) FROM {table}")),
            // A sequence stops at its first error.
            json!({"type": "sequence", "sql": format!(
                "INSERT INTO {table} VALUES (3, 'z'); INSERT INTO nope VALUES (1); \
                 INSERT INTO {table} VALUES (4, 'w');"
            )}),
            execute(&format!("SELECT count(*) FROM {table}")),
            json!({"type": "describe", "sql": format!("SELECT a, ? AS q FROM {table} WHERE b = :name")}),
            json!({"type": "describe", "sql": format!("INSERT INTO {table} VALUES (?1, $v)")}),
            json!({"type": "describe", "sql": "EXPLAIN SELECT 1"}),
        ]);
        assert_eq!(
            results[0],
            json!({"type": "ok", "response": {"type": "sequence"}})
        );
        assert_eq!(scalar_i64(ok_result(&results[1], "count")), 2);
        let error = error_of(&results[2], "failing sequence");
        assert!(
            error["message"]
                .as_str()
                .is_some_and(|m| m.contains("no such table")),
            "{error}"
        );
        assert_eq!(
            scalar_i64(ok_result(&results[3], "count")),
            3,
            "{route}: the sequence ran up to its error"
        );
        assert_eq!(
            *ok_result(&results[4], "describe select"),
            json!({
                "params": [{"name": null}, {"name": ":name"}],
                "cols": [{"name": "a", "decltype": "INTEGER"}, {"name": "q", "decltype": null}],
                "is_explain": false,
                "is_readonly": true,
            })
        );
        let insert = ok_result(&results[5], "describe insert");
        assert_eq!(insert["params"], json!([{"name": "?1"}, {"name": "$v"}]));
        assert_eq!(insert["cols"], json!([]));
        assert_eq!(insert["is_readonly"], false);
        assert_eq!(insert["is_explain"], false);
        assert_eq!(
            ok_result(&results[6], "describe explain")["is_explain"],
            true
        );

        // Stored SQL: by id in execute, batch, sequence and describe; it lasts across requests.
        let results = stream.send(vec![
            json!({"type": "store_sql", "sql_id": 7,
                   "sql": format!("SELECT count(*) FROM {table} WHERE a > ?")}),
            json!({"type": "store_sql", "sql_id": 8,
                   "sql": format!("INSERT INTO {table} VALUES (?, 'stored')")}),
            json!({"type": "store_sql", "sql_id": 9,
                   "sql": format!("INSERT INTO {table} VALUES (100, 'q'); INSERT INTO {table} VALUES (101, 'q')")}),
            execute_stmt(json!({"sql_id": 8, "args": [int(50)]})),
            execute_stmt(json!({"sql_id": 7, "args": [int(0)]})),
            json!({"type": "batch", "batch": {"steps": [
                {"stmt": {"sql_id": 7, "args": [int(2)]}},
                {"stmt": {"sql_id": 8, "args": [int(60)]}, "condition": {"type": "ok", "step": 0}},
            ]}}),
            json!({"type": "sequence", "sql_id": 9}),
            json!({"type": "describe", "sql_id": 7}),
            json!({"type": "close_sql", "sql_id": 8}),
            // Closing an id that is not stored is not an error.
            json!({"type": "close_sql", "sql_id": 12345}),
        ]);
        for i in [0, 1, 2] {
            assert_eq!(
                results[i],
                json!({"type": "ok", "response": {"type": "store_sql"}})
            );
        }
        assert_eq!(
            ok_result(&results[3], "stored insert")["affected_row_count"],
            1
        );
        assert_eq!(scalar_i64(ok_result(&results[4], "stored select")), 4);
        let batch = ok_result(&results[5], "stored batch");
        assert_eq!(scalar_i64(&batch["step_results"][0]), 2, "{batch}");
        assert_eq!(batch["step_results"][1]["affected_row_count"], 1, "{batch}");
        assert_eq!(
            results[6],
            json!({"type": "ok", "response": {"type": "sequence"}})
        );
        assert_eq!(
            ok_result(&results[7], "stored describe")["params"],
            json!([{"name": null}])
        );
        for i in [8, 9] {
            assert_eq!(
                results[i],
                json!({"type": "ok", "response": {"type": "close_sql"}})
            );
        }
        let results = stream.send(vec![execute_stmt(json!({"sql_id": 7, "args": [int(0)]}))]);
        assert_eq!(
            scalar_i64(ok_result(&results[0], "stored in an earlier request")),
            7
        );
        // A closed id is unknown: a protocol error, 400 text/plain.
        let reply = stream.send_raw(vec![execute_stmt(json!({"sql_id": 8, "args": [int(1)]}))]);
        reply
            .expect_status(400, "a closed sql_id")
            .expect_content_type("text/plain", "a closed sql_id");

        // Unknown on a new stream, in execute, batch, sequence and describe.
        for request in [
            execute_stmt(json!({"sql_id": 1})),
            json!({"type": "batch", "batch": {"steps": [{"stmt": {"sql_id": 1}}]}}),
            json!({"type": "sequence", "sql_id": 1}),
            json!({"type": "describe", "sql_id": 1}),
        ] {
            let reply = server.stream(route, &[]).send_raw(vec![request.clone()]);
            reply
                .expect_status(400, &format!("unknown sql_id in {request}"))
                .expect_content_type("text/plain", "unknown sql_id");
        }
        // Both sql and sql_id, and reusing an id, are protocol errors too.
        let reply = server
            .stream(route, &[])
            .send_raw(vec![execute_stmt(json!({"sql": "SELECT 1", "sql_id": 1}))]);
        reply.expect_status(400, "both sql and sql_id");
        let reply = server.stream(route, &[]).send_raw(vec![
            json!({"type": "store_sql", "sql_id": 1, "sql": "SELECT 1"}),
            json!({"type": "store_sql", "sql_id": 1, "sql": "SELECT 2"}),
        ]);
        reply.expect_status(400, "a stored id reused");
    }
}

#[test]
fn close_nulls_the_baton_and_get_autocommit_answers_on_v3_only() {
    let server = TestServer::start();
    let autocommit = |result: &Value| {
        assert_eq!(result["type"], "ok", "{result}");
        assert_eq!(result["response"]["type"], "get_autocommit", "{result}");
        result["response"]["is_autocommit"]
            .as_bool()
            .unwrap_or_else(|| panic!("is_autocommit is a bool: {result}"))
    };
    let mut stream = server.stream(V3, &[]);
    let results = stream.send(vec![json!({"type": "get_autocommit"})]);
    assert!(autocommit(&results[0]), "a new stream is in autocommit");
    let results = stream.send(vec![execute("BEGIN"), json!({"type": "get_autocommit"})]);
    assert!(!autocommit(&results[1]), "inside a transaction");
    let results = stream.send(vec![execute("ROLLBACK"), json!({"type": "get_autocommit"})]);
    assert!(autocommit(&results[1]), "after ROLLBACK");
    let last = stream.baton.clone().expect("an open stream has a baton");
    let results = stream.send(vec![json!({"type": "close"})]);
    assert_eq!(
        results[0],
        json!({"type": "ok", "response": {"type": "close"}})
    );
    assert_eq!(stream.baton, None, "the baton is null once closed");
    // The closed stream is gone.
    stream.baton = Some(last);
    stream
        .send_raw(vec![execute("SELECT 1")])
        .expect_status(400, "a baton of a closed stream")
        .expect_content_type("text/plain", "a baton of a closed stream");

    // On v2, get_autocommit fails the whole request.
    let mut stream = server.stream(V2, &[]);
    let reply = stream.send_raw(vec![execute("SELECT 1"), json!({"type": "get_autocommit"})]);
    reply
        .expect_status(400, "get_autocommit on v2")
        .expect_content_type("text/plain", "get_autocommit on v2");
    // And on v2 a close answers like on v3.
    let results = server
        .stream(V2, &[])
        .send(vec![execute("SELECT 1"), json!({"type": "close"})]);
    assert_eq!(
        results[1],
        json!({"type": "ok", "response": {"type": "close"}})
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Batons

#[test]
fn a_stream_keeps_its_transaction_across_requests_and_its_batons_are_single_use() {
    let server = TestServer::start();
    server.query(V2, &[], "CREATE TABLE t(x INTEGER)");
    let mut writer = server.stream(V2, &[]);
    writer.execute("BEGIN");
    writer.execute("INSERT INTO t VALUES (1)");
    assert_eq!(
        server.count(&[], "SELECT count(*) FROM t"),
        0,
        "another stream does not see an uncommitted insert"
    );
    let results = writer.send(vec![execute("SELECT count(*) FROM t")]);
    assert_eq!(
        scalar_i64(ok_result(&results[0], "own insert")),
        1,
        "the stream sees its own insert: it is the same transaction"
    );
    // An error result does not end the stream, and still rotates the baton.
    let results = writer.send(vec![execute("SELECT * FROM nope")]);
    error_of(&results[0], "a failing statement");
    writer.execute("INSERT INTO t VALUES (2)");
    writer.execute("COMMIT");
    assert_eq!(
        server.count(&[], "SELECT count(*) FROM t"),
        2,
        "committed: visible"
    );
    let distinct: HashSet<&String> = writer.batons.iter().collect();
    assert_eq!(writer.batons.len(), 6, "one baton per response");
    assert_eq!(
        distinct.len(),
        writer.batons.len(),
        "every response carries a new baton: {:?}",
        writer.batons
    );
    for baton in &writer.batons {
        let bytes = unb64(baton);
        assert_eq!(bytes.len(), 48, "a baton is 48 bytes in unpadded base64");
    }

    // Replaying an old baton.
    let current = writer.baton.clone().expect("open");
    writer.baton = Some(writer.batons[0].clone());
    let reply = writer.send_raw(vec![execute("SELECT 1")]);
    reply
        .expect_status(400, "a replayed baton")
        .expect_content_type("text/plain", "a replayed baton");
    assert_eq!(reply.text(), "Received a baton that has already been used");
    // The replay dropped the stream (as sqld does): its current baton is refused too.
    writer.baton = Some(current);
    writer
        .send_raw(vec![execute("SELECT 1")])
        .expect_status(400, "the current baton after a replay")
        .expect_content_type("text/plain", "after a replay");

    // Garbage and forged batons.
    let mut victim = server.stream(V2, &[]);
    victim.execute("SELECT 1");
    let genuine = victim.baton.clone().expect("open");
    let mut forged_seq = unb64(&genuine);
    forged_seq[12] ^= 0x01;
    let mut forged_mac = unb64(&genuine);
    forged_mac[40] ^= 0x80;
    let mut short = unb64(&genuine);
    short.truncate(40);
    for bad in [
        "garbage".to_string(),
        "!!!!".to_string(),
        String::new(),
        b64(&forged_seq),
        b64(&forged_mac),
        b64(&short),
    ] {
        let mut stream = server.stream(V2, &[]);
        stream.baton = Some(bad.clone());
        let reply = stream.send_raw(vec![execute("SELECT 1")]);
        reply
            .expect_status(400, &format!("baton {bad:?}"))
            .expect_content_type("text/plain", "a bad baton");
        assert_eq!(reply.text(), "Received an invalid baton", "baton {bad:?}");
    }
    // Forgeries do not touch the genuine stream.
    victim.execute("SELECT 2");
    victim.send_and_close(vec![]);

    // A protocol error drops the stream, rolling its transaction back.
    let mut doomed = server.stream(V3, &[]);
    doomed.execute("BEGIN");
    doomed.execute("INSERT INTO t VALUES (3)");
    let last = doomed.baton.clone();
    doomed
        .send_raw(vec![execute_stmt(json!({"sql_id": 404}))])
        .expect_status(400, "an unknown sql_id");
    doomed.baton = last;
    doomed
        .send_raw(vec![execute("COMMIT")])
        .expect_status(400, "the stream of a protocol error is gone");
    server.query(V2, &[], "INSERT INTO t VALUES (4)");
    assert_eq!(
        server.count(&[], "SELECT group_concat(x) = '1,2,4' FROM t"),
        1,
        "the dropped stream's insert was rolled back, and its write lock released"
    );
}

#[test]
fn an_idle_stream_expires_with_stream_expired_and_its_transaction_is_rolled_back() {
    let server = TestServer::start_with(|c| c.stream_expiry = Duration::from_millis(300));
    server.query(V2, &[], "CREATE TABLE t(x INTEGER)");
    let mut stream = server.stream(V2, &[]);
    stream.execute("BEGIN");
    stream.execute("INSERT INTO t VALUES (1), (2), (3)");
    std::thread::sleep(Duration::from_millis(1500));
    // The expiry runs in the background: wait (generously) until no stream is open.
    poll("the idle stream expires", || {
        let open = server.metrics().value("libsql_wal_open_streams", &[]);
        (open == Some(0.0)).then_some(())
    });
    let reply = stream.send_raw(vec![execute("COMMIT")]);
    reply
        .expect_status(400, "an expired stream")
        .expect_content_type("application/json", "an expired stream");
    let body = reply.json();
    assert_eq!(body["code"], "STREAM_EXPIRED", "{body}");
    assert!(body["message"].is_string(), "{body}");
    assert_eq!(
        server.count(&[], "SELECT count(*) FROM t"),
        0,
        "the expired transaction was rolled back"
    );
    // Its write lock is gone too: another stream writes at once.
    server.query(V2, &[], "INSERT INTO t VALUES (9)");
    assert_eq!(server.count(&[], "SELECT count(*) FROM t"), 1);
}

// ---------------------------------------------------------------------------------------------
// 3. Cursor

fn cursor_lines(reply: &Reply) -> Vec<Value> {
    reply
        .expect_status(200, "cursor")
        .expect_content_type("text/plain", "cursor");
    let text = reply.text();
    assert!(
        text.ends_with('\n'),
        "every line ends with a newline: {text:?}"
    );
    text.lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("a cursor line is not JSON ({e}): {line:?}"))
        })
        .collect()
}

#[test]
fn cursor_answers_ndjson_with_a_baton_then_step_entries_and_step_errors() {
    let server = TestServer::start();
    server.query(V3, &[], "CREATE TABLE c(a INTEGER, b TEXT)");
    server.query(V3, &[], "INSERT INTO c VALUES (1, 'x'), (2, 'y'), (3, 'z')");
    let body = json!({"baton": null, "batch": {"steps": [
        {"stmt": {"sql": "SELECT a, b FROM c ORDER BY a"}},
        {"stmt": {"sql": "SELECT * FROM no_such_table"}},
        {"stmt": {"sql": "INSERT INTO c VALUES (?, 'w')", "args": [int(4)]},
         "condition": {"type": "error", "step": 1}},
        {"stmt": {"sql": "SELECT 'skipped'"}, "condition": {"type": "ok", "step": 1}},
    ]}});
    let reply = server.post("/v3/cursor", &[], &body);
    let lines = cursor_lines(&reply);
    let head = &lines[0];
    let baton = head["baton"]
        .as_str()
        .unwrap_or_else(|| panic!("the first line carries the baton: {head}"))
        .to_string();
    assert!(head.get("base_url").is_some_and(Value::is_null), "{head}");
    assert_eq!(
        lines[1],
        json!({"type": "step_begin", "step": 0, "cols": [
            {"name": "a", "decltype": "INTEGER"}, {"name": "b", "decltype": "TEXT"}]})
    );
    assert_eq!(
        lines[2..5].to_vec(),
        vec![
            json!({"type": "row", "row": [int(1), text("x")]}),
            json!({"type": "row", "row": [int(2), text("y")]}),
            json!({"type": "row", "row": [int(3), text("z")]}),
        ]
    );
    assert_eq!(lines[5]["type"], "step_end", "{}", lines[5]);
    assert_eq!(lines[5]["affected_row_count"], 0, "{}", lines[5]);
    assert_eq!(lines[6]["type"], "step_error", "{}", lines[6]);
    assert_eq!(lines[6]["step"], 1, "{}", lines[6]);
    assert!(
        lines[6]["error"]["code"].is_string()
            && lines[6]["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("no such table")),
        "{}",
        lines[6]
    );
    assert_eq!(
        lines[7],
        json!({"type": "step_begin", "step": 2, "cols": []})
    );
    assert_eq!(
        lines[8],
        json!({"type": "step_end", "affected_row_count": 1, "last_insert_rowid": 4}),
        "step_end carries last_insert_rowid as a number"
    );
    assert_eq!(lines.len(), 9, "the skipped step has no entries: {lines:?}");

    // The stream goes on with the cursor's baton, on the cursor and on the pipeline.
    let reply = server.post(
        "/v3/cursor",
        &[],
        &json!({"baton": baton, "batch": {"steps": [{"stmt": {"sql": "SELECT count(*) FROM c"}}]}}),
    );
    let lines = cursor_lines(&reply);
    let next = lines[0]["baton"].as_str().expect("a new baton").to_string();
    assert_ne!(next, baton, "the cursor rotates the baton");
    assert_eq!(lines[2], json!({"type": "row", "row": [int(4)]}));
    let mut stream = server.stream(V3, &[]);
    stream.baton = Some(next);
    let results = stream.send_and_close(vec![execute("SELECT count(*) FROM c")]);
    assert_eq!(scalar_i64(ok_result(&results[0], "after the cursor")), 4);
}

// ---------------------------------------------------------------------------------------------
// 4. v1

#[test]
fn v1_execute_and_batch_answer_result_objects_and_bad_sql_is_400_with_message_and_code() {
    let server = TestServer::start();
    let reply = server.post(
        "/v1/execute",
        &[],
        &json!({"stmt": {"sql": "CREATE TABLE v(a INTEGER)"}}),
    );
    reply
        .expect_status(200, "v1 create")
        .expect_content_type("application/json", "v1");
    assert_full_stmt_result(&reply.json()["result"]);
    let reply = server.post(
        "/v1/execute",
        &[],
        &json!({"stmt": {"sql": "INSERT INTO v VALUES (?), (?)", "args": [int(5), int(6)]}}),
    );
    reply.expect_status(200, "v1 insert");
    let body = reply.json();
    assert_eq!(
        body.as_object()
            .map(|o| o.keys().cloned().collect::<Vec<_>>()),
        Some(vec!["result".to_string()]),
        "{body}"
    );
    assert_eq!(body["result"]["affected_row_count"], 2, "{body}");

    let reply = server.post(
        "/v1/batch",
        &[],
        &json!({"batch": {"steps": [
            {"stmt": {"sql": "SELECT a FROM v ORDER BY a"}},
            {"stmt": {"sql": "SELECT * FROM nope"}},
            {"stmt": {"sql": "SELECT 2"}, "condition": {"type": "error", "step": 1}},
            {"stmt": {"sql": "SELECT 3"}, "condition": {"type": "ok", "step": 1}},
        ]}}),
    );
    reply.expect_status(200, "v1 batch");
    let result = &reply.json()["result"];
    assert_eq!(
        rows(&result["step_results"][0]),
        vec![vec![int(5)], vec![int(6)]]
    );
    assert!(result["step_results"][1].is_null(), "{result}");
    assert!(result["step_errors"][1]["code"].is_string(), "{result}");
    assert_eq!(scalar_i64(&result["step_results"][2]), 2);
    assert!(result["step_results"][3].is_null(), "{result}");
    assert_eq!(
        result["step_errors"],
        json!([null, result["step_errors"][1], null, null])
    );

    for sql in [
        "SELEC 1",
        "SELECT * FROM nope",
        "INSERT INTO v VALUES (1, 2)",
    ] {
        let reply = server.post("/v1/execute", &[], &json!({"stmt": {"sql": sql}}));
        reply
            .expect_status(400, &format!("v1 {sql}"))
            .expect_content_type("application/json", sql);
        let body = reply.json();
        assert!(
            body["message"].is_string() && body["code"].is_string(),
            "{sql}: {body}"
        );
        assert!(body.get("result").is_none(), "{body}");
    }
    // v1 is stateless: nothing failed above was written.
    assert_eq!(server.count(&[], "SELECT count(*) FROM v"), 2);
}

// ---------------------------------------------------------------------------------------------
// 5. Errors and codes

#[test]
fn statement_errors_carry_hrana_codes_and_a_bad_body_is_400_text() {
    let server = TestServer::start();
    for route in [V2, V3] {
        let table = format!("u{}", &route[2..3]);
        let mut stream = server.stream(route, &[]);
        let results = stream.send(vec![
            execute(&format!(
                "CREATE TABLE {table}(id INTEGER PRIMARY KEY, n TEXT UNIQUE)"
            )),
            execute(&format!("INSERT INTO {table} VALUES (1, 'a')")),
            execute(&format!("INSERT INTO {table} VALUES (1, 'b')")),
            execute(&format!("INSERT INTO {table} VALUES (2, 'a')")),
            execute("SELEC 1"),
            execute("SELECT 1; SELECT 2"),
            execute(""),
            execute("  -- only a comment\n"),
            execute_stmt(json!({"sql": "SELECT ?"})),
            execute_stmt(
                json!({"sql": "SELECT :a", "named_args": [{"name": "b", "value": int(1)}]}),
            ),
            execute_stmt(json!({"sql": "SELECT ?", "args": [int(1), int(2)]})),
            execute_stmt(json!({"sql": "SELECT ?, :a", "args": [int(1)],
                                "named_args": [{"name": "a", "value": int(1)}]})),
            execute("SELECT 'still working'"),
        ]);
        let expected = [
            (2, "SQLITE_CONSTRAINT"),
            (3, "SQLITE_CONSTRAINT"),
            (4, "SQL_INPUT_ERROR"),
            (5, "SQL_MANY_STATEMENTS"),
            (6, "SQL_NO_STATEMENT"),
            (7, "SQL_NO_STATEMENT"),
            (8, "ARGS_INVALID"),
            (9, "ARGS_INVALID"),
            (10, "ARGS_INVALID"),
            (11, "ARGS_BOTH_POSITIONAL_AND_NAMED"),
        ];
        for (i, code) in expected {
            assert_eq!(
                error_code(&results[i], &format!("{route} request {i}")),
                code,
                "{route}: request {i}: {}",
                results[i]
            );
        }
        assert!(
            error_of(&results[2], "primary key")["message"]
                .as_str()
                .is_some_and(|m| m.contains("UNIQUE") || m.contains("PRIMARY KEY")),
            "{}",
            results[2]
        );
        assert!(
            error_of(&results[3], "unique")["message"]
                .as_str()
                .is_some_and(|m| m.contains("UNIQUE")),
            "{}",
            results[3]
        );
        assert_eq!(
            rows(ok_result(&results[12], "after the errors")),
            vec![vec![text("still working")]]
        );
        assert!(
            stream.baton.is_some(),
            "error results leave the stream open"
        );
        stream.send_and_close(vec![]);

        for body in [
            "{not json".to_string(),
            "[]".to_string(),
            r#"{"requests": 5}"#.to_string(),
            r#"{"requests": [{"type": "no_such_request"}]}"#.to_string(),
            r#"{"requests": [{"type": "execute", "stmt": {"sql": "SELECT ?", "args": [{"type": "integer", "value": "1.5"}]}}]}"#.to_string(),
            r#"{"requests": [{"type": "execute", "stmt": {"sql": "SELECT ?", "args": [{"type": "blob", "base64": "!!"}]}}]}"#.to_string(),
            String::new(),
        ] {
            let reply = server.user_request(
                "POST",
                route,
                &[("content-type", "application/json")],
                body.clone().into_bytes(),
            );
            reply
                .expect_status(400, &format!("body {body:?}"))
                .expect_content_type("text/plain", &format!("body {body:?}"));
            assert!(!reply.text().is_empty(), "the body says why: {body:?}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 6. Namespaces

fn table_names(server: &TestServer, route: &str, headers: &[(&str, &str)]) -> Vec<String> {
    let result = server.query(
        route,
        headers,
        "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name",
    );
    rows(&result)
        .into_iter()
        .map(|row| {
            row[0]["value"]
                .as_str()
                .expect("a table name is text")
                .to_string()
        })
        .collect()
}

#[test]
fn each_routing_method_reaches_its_own_namespace_and_never_another() {
    let server = TestServer::start();
    server.create_namespace("a");
    server.create_namespace("b");
    let again = server.admin_request("POST", "/v1/namespaces/a/create", Some(&json!({})));
    again
        .expect_status(400, "creating a namespace twice")
        .expect_content_type("application/json", "creating twice");
    assert!(again.json()["error"].is_string(), "{}", again.text());

    server.query(V2, &[("x-namespace", "a")], "CREATE TABLE only_a(x)");
    server.query(V2, &[("x-namespace", "b")], "CREATE TABLE only_b(x)");
    server.query(V2, &[], "CREATE TABLE only_default(x)");

    let port = server.user.port().to_string();
    for ns in ["a", "b"] {
        let expected = vec![format!("only_{ns}")];
        let host = format!("{ns}.localhost");
        let host_port = format!("{ns}.localhost:{port}");
        let bin = b64(ns.as_bytes());
        let dev_v2 = format!("/dev/{ns}/v2/pipeline");
        let dev_v3 = format!("/dev/{ns}/v3/pipeline");
        let routes: Vec<Route<'_>> = vec![
            ("x-namespace v2", V2, vec![("x-namespace", ns)]),
            ("x-namespace v3", V3, vec![("x-namespace", ns)]),
            (
                "x-namespace-bin",
                V2,
                vec![("x-namespace-bin", bin.as_str())],
            ),
            (
                "x-namespace-bin v3",
                V3,
                vec![("x-namespace-bin", bin.as_str())],
            ),
            ("host", V2, vec![("host", host.as_str())]),
            ("host with port", V3, vec![("host", host_port.as_str())]),
            ("/dev v2", dev_v2.as_str(), vec![]),
            ("/dev v3", dev_v3.as_str(), vec![]),
        ];
        for (how, route, headers) in routes {
            assert_eq!(
                table_names(&server, route, &headers),
                expected,
                "namespace {ns} by {how}"
            );
        }
        // The cursor and v1 route by header too.
        let reply = server.post(
            "/v3/cursor",
            &[("x-namespace", ns)],
            &json!({"batch": {"steps": [{"stmt": {"sql": format!("SELECT count(*) FROM only_{ns}")}}]}}),
        );
        assert_eq!(
            cursor_lines(&reply)[2],
            json!({"type": "row", "row": [int(0)]})
        );
        server
            .post(
                "/v1/execute",
                &[("host", host.as_str())],
                &json!({"stmt": {"sql": format!("SELECT count(*) FROM only_{ns}")}}),
            )
            .expect_status(200, &format!("v1 on {ns} by host"));
    }
    // Without a namespace, a host that is an IP address or has no dot: the default.
    let ip_host = format!("127.0.0.1:{port}");
    let localhost_port = format!("localhost:{port}");
    for headers in [
        vec![],
        vec![("host", ip_host.as_str())],
        vec![("host", "localhost")],
        vec![("host", localhost_port.as_str())],
    ] {
        assert_eq!(
            table_names(&server, V2, &headers),
            vec!["only_default".to_string()],
            "headers {headers:?} go to the default namespace"
        );
    }
    // The order: the path, then x-namespace-bin, then x-namespace, then the host.
    let bin_b = b64(b"b");
    assert_eq!(
        table_names(
            &server,
            V2,
            &[("x-namespace-bin", bin_b.as_str()), ("x-namespace", "a")]
        ),
        vec!["only_b".to_string()]
    );
    assert_eq!(
        table_names(
            &server,
            V2,
            &[("x-namespace", "a"), ("host", "b.localhost")]
        ),
        vec!["only_a".to_string()]
    );
    assert_eq!(
        table_names(&server, "/dev/b/v2/pipeline", &[("x-namespace", "a")]),
        vec!["only_b".to_string()]
    );

    // A baton of a stream of `a` does not work on `b`.
    let mut stream = server.stream(V2, &[("x-namespace", "a")]);
    stream.execute("SELECT 1");
    let baton = stream.baton.clone();
    let mut other = server.stream(V2, &[("x-namespace", "b")]);
    other.baton = baton;
    other
        .send_raw(vec![execute("SELECT count(*) FROM only_a")])
        .expect_status(400, "a baton of another namespace");
    stream.send_and_close(vec![]);

    // Unknown namespaces: 404 JSON with an error.
    let unknown_bin = b64(b"nope");
    for (route, headers) in [
        (V2, vec![("x-namespace", "nope")]),
        (V3, vec![("x-namespace-bin", unknown_bin.as_str())]),
        (V2, vec![("host", "nope.localhost")]),
        ("/dev/nope/v2/pipeline", vec![]),
        ("/dev/nope/v3/pipeline", vec![]),
    ] {
        let reply = server
            .stream(route, &headers)
            .send_raw(vec![execute("SELECT 1")]);
        reply
            .expect_status(404, &format!("unknown namespace {route} {headers:?}"))
            .expect_content_type("application/json", "unknown namespace");
        assert!(reply.json()["error"].is_string(), "{}", reply.text());
    }
    // Invalid names: 400.
    let not_utf8 = b64(&[0xff, 0xfe]);
    for (route, headers) in [
        (V2, vec![("x-namespace", "bad name")]),
        (V2, vec![("x-namespace", ".hidden")]),
        (V2, vec![("x-namespace", "")]),
        (V2, vec![("x-namespace-bin", "%%%")]),
        (V2, vec![("x-namespace-bin", not_utf8.as_str())]),
        ("/dev/.hidden/v2/pipeline", vec![]),
        ("/dev/bad%20name/v3/pipeline", vec![]),
    ] {
        server
            .stream(route, &headers)
            .send_raw(vec![execute("SELECT 1")])
            .expect_status(400, &format!("invalid namespace {route} {headers:?}"));
    }
    server
        .admin_request("POST", "/v1/namespaces/bad%20name/create", Some(&json!({})))
        .expect_status(400, "creating an invalid namespace");
    server
        .admin_request("POST", "/v1/namespaces/c/create", None)
        .expect_status(200, "creating with no body");
    let reply = server.user_request(
        "POST",
        "/v1/namespaces/e/create",
        &[("content-type", "application/json")],
        b"{not json".to_vec(),
    );
    assert_eq!(reply.status, 404, "the admin API is not on the user port");
    let admin = server.admin.expect("admin");
    let reply = Http::new(&server.runtime).send(
        &server.runtime,
        "POST",
        &format!("http://{admin}/v1/namespaces/e/create"),
        &[("content-type", "application/json")],
        b"{not json".to_vec(),
    );
    assert_eq!(
        reply.status,
        400,
        "a create body must be JSON: {}",
        reply.text()
    );
}

// ---------------------------------------------------------------------------------------------
// 7. Admin API

fn frame_no(info: &Value, key: &str) -> u64 {
    info[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is a number: {info}"))
}

/// Seals `namespace` and waits until everything committed is durable.
fn seal_and_wait_durable(server: &TestServer, namespace: &str) -> Value {
    let reply = server.admin_request("POST", &format!("/v1/namespaces/{namespace}/seal"), None);
    reply
        .expect_status(200, "seal")
        .expect_content_type("application/json", "seal");
    assert!(reply.json()["sealed"].is_boolean(), "{}", reply.text());
    poll(&format!("{namespace} becomes durable"), || {
        let info = server.namespace_info(namespace);
        let committed = frame_no(&info, "last_committed_frame_no");
        (committed > 0 && frame_no(&info, "durable_frame_no") >= committed).then_some(info)
    })
}

#[test]
fn admin_api_lists_describes_seals_checkpoints_and_deletes_namespaces() {
    let server = TestServer::start();
    server.create_namespace("kept-ns");
    server.create_namespace("gone-ns");
    for ns in ["kept-ns", "gone-ns"] {
        server.query(
            V2,
            &[("x-namespace", ns)],
            "CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB)",
        );
    }
    let mut names = server.namespace_names();
    names.sort();
    assert_eq!(names, vec!["default", "gone-ns", "kept-ns"]);

    let info = server.namespace_info("kept-ns");
    for key in [
        "name",
        "open",
        "last_committed_frame_no",
        "durable_frame_no",
        "durable_lag_frames",
        "checkpointed_frame_no",
        "sealed_segments",
        "pending_segments",
        "queued_segments",
        "seal_failures",
        "local_bytes",
        "health",
    ] {
        assert!(info.get(key).is_some(), "{key} is missing from {info}");
    }
    assert_eq!(info["name"], "kept-ns");
    assert_eq!(info["open"], true, "{info}");
    assert_eq!(info["health"], "ok", "{info}");
    let before = frame_no(&info, "last_committed_frame_no");
    assert!(before > 0, "the CREATE TABLE committed frames: {info}");
    for ns in ["kept-ns", "gone-ns"] {
        for _ in 0..3 {
            server.query(
                V2,
                &[("x-namespace", ns)],
                "INSERT INTO t(b) SELECT randomblob(1000) FROM (SELECT 1 UNION ALL SELECT 2)",
            );
        }
    }
    let info = server.namespace_info("kept-ns");
    let after = frame_no(&info, "last_committed_frame_no");
    assert!(after > before, "{before} then {after}: writes add frames");
    assert!(frame_no(&info, "local_bytes") > 0, "{info}");

    let info = seal_and_wait_durable(&server, "kept-ns");
    assert_eq!(frame_no(&info, "durable_lag_frames"), 0, "{info}");
    poll("kept-ns checkpoints", || {
        let reply = server.admin_request("POST", "/v1/namespaces/kept-ns/checkpoint", None);
        reply
            .expect_status(200, "checkpoint")
            .expect_content_type("application/json", "checkpoint");
        assert!(
            reply.json()["checkpointed_segments"].is_u64(),
            "{}",
            reply.text()
        );
        let info = server.namespace_info("kept-ns");
        (frame_no(&info, "checkpointed_frame_no") >= after).then_some(())
    });
    seal_and_wait_durable(&server, "gone-ns");
    for what in ["seal", "checkpoint"] {
        server
            .admin_request("POST", &format!("/v1/namespaces/nope/{what}"), None)
            .expect_status(404, &format!("{what} of an unknown namespace"));
    }
    server
        .admin_request("GET", "/v1/namespaces/nope", None)
        .expect_status(404, "describing an unknown namespace");

    let kept_objects = files_under(&server.bucket_dir().join("kept-ns"));
    let gone_objects = files_under(&server.bucket_dir().join("gone-ns"));
    assert!(
        !kept_objects.is_empty(),
        "kept-ns has objects in the bucket"
    );
    assert!(
        !gone_objects.is_empty(),
        "gone-ns has objects in the bucket"
    );

    // The status page lists them.
    let page = server.admin_request("GET", "/", None);
    page.expect_status(200, "status page")
        .expect_content_type("text/html", "status page");
    let html = page.text();
    for ns in ["default", "kept-ns", "gone-ns"] {
        assert!(html.contains(&format!("<td>{ns}</td>")), "{ns} in {html}");
    }

    // Delete without keeping the backup: gone everywhere, an idle stream on it too.
    let mut idle = server.stream(V2, &[("x-namespace", "gone-ns")]);
    idle.execute("BEGIN");
    idle.execute("INSERT INTO t(b) VALUES (NULL)");
    let reply = server.admin_request(
        "DELETE",
        "/v1/namespaces/gone-ns",
        Some(&json!({"keep_backup": false})),
    );
    reply.expect_status(200, "delete gone-ns");
    server
        .stream(V2, &[("x-namespace", "gone-ns")])
        .send_raw(vec![execute("SELECT 1")])
        .expect_status(404, "a deleted namespace");
    assert!(!server.namespace_names().contains(&"gone-ns".to_string()));
    let gone_left = files_under(&server.bucket_dir().join("gone-ns"));
    assert_eq!(
        gone_left.len(),
        1,
        "only the deletion mark of gone-ns stays: {gone_left:?}"
    );
    assert!(std::fs::read_to_string(&gone_left[0])
        .unwrap()
        .contains("\"deleted\": true"));
    assert!(!server
        .data_dir()
        .join("namespaces")
        .join("gone-ns")
        .exists());
    idle.send_raw(vec![execute("COMMIT")])
        .expect_status(404, "a stream of a deleted namespace");
    assert_eq!(
        server.metrics().value("libsql_wal_open_streams", &[]),
        Some(0.0),
        "the deleted namespace's stream is gone"
    );

    // Delete keeping the backup: its objects stay.
    let reply = server.admin_request(
        "DELETE",
        "/v1/namespaces/kept-ns",
        Some(&json!({"keep_backup": true})),
    );
    reply.expect_status(200, "delete kept-ns");
    server
        .stream(V2, &[("x-namespace", "kept-ns")])
        .send_raw(vec![execute("SELECT 1")])
        .expect_status(404, "a deleted namespace");
    assert_eq!(server.namespace_names(), vec!["default".to_string()]);
    let mut left = files_under(&server.bucket_dir().join("kept-ns"));
    let mut expected = kept_objects.clone();
    // And a deletion mark: the next generation, which ends the namespace's history.
    let mark = server
        .bucket_dir()
        .join("kept-ns/generations/00000000000000000002/generation");
    expected.push(mark.clone());
    left.sort();
    expected.sort();
    assert_eq!(left, expected, "the objects of kept-ns stay");
    assert!(std::fs::read_to_string(&mark)
        .unwrap()
        .contains("\"deleted\": true"));
    for ns in ["gone-ns", "nope"] {
        server
            .admin_request("DELETE", &format!("/v1/namespaces/{ns}"), None)
            .expect_status(404, &format!("deleting {ns} (not there)"));
    }
    let html = server.admin_request("GET", "/", None).text();
    assert!(!html.contains("<td>gone-ns</td>"), "{html}");
    assert!(!html.contains("<td>kept-ns</td>"), "{html}");

    // Created again, a namespace whose backup was kept starts empty: its old generations stay
    // in the bucket (restorable by number), but the deletion mark ends its history.
    server.create_namespace("kept-ns");
    assert_eq!(
        table_names(&server, V2, &[("x-namespace", "kept-ns")]),
        Vec::<String>::new(),
        "kept-ns starts empty"
    );
    assert!(server
        .bucket_dir()
        .join("kept-ns/generations/00000000000000000001/generation")
        .exists());
    server.create_namespace("gone-ns");
    assert_eq!(
        table_names(&server, V2, &[("x-namespace", "gone-ns")]),
        Vec::<String>::new(),
        "gone-ns starts empty"
    );
}

// ---------------------------------------------------------------------------------------------
// 8. Auth

#[test]
fn tokens_guard_the_user_and_admin_apis_but_not_health() {
    let mut server = TestServer::start_with(|c| {
        c.auth_token = Some(Token::new("s3cret").expect("a token"));
        c.admin_token = Some(Token::new("adm1n").expect("a token"));
    });
    let pipeline = json!({"requests": [execute("SELECT 1"), {"type": "close"}]});
    let cursor = json!({"batch": {"steps": [{"stmt": {"sql": "SELECT 1"}}]}});
    let v1 = json!({"stmt": {"sql": "SELECT 1"}});
    for (path, body) in [
        (V2, &pipeline),
        (V3, &pipeline),
        ("/dev/default/v2/pipeline", &pipeline),
        ("/v3/cursor", &cursor),
        ("/v1/execute", &v1),
    ] {
        for (headers, status) in [
            (vec![], 401),
            (vec![("authorization", "Bearer wrong")], 401),
            (vec![("authorization", "Bearer adm1n")], 401),
            (vec![("authorization", "s3cret")], 401),
            (vec![("authorization", "Bearer s3cret")], 200),
        ] {
            let reply = server.post(path, &headers, body);
            reply.expect_status(status, &format!("{path} with {headers:?}"));
            if status == 401 {
                reply.expect_content_type("application/json", "401");
                assert!(reply.json()["error"].is_string(), "{}", reply.text());
            }
        }
    }
    for path in ["/v1/namespaces", "/metrics", "/", "/v1/namespaces/default"] {
        for (token, status) in [
            (None, 401),
            (Some("Bearer wrong"), 401),
            (Some("Bearer s3cret"), 401),
            (Some("Bearer adm1n"), 200),
        ] {
            server.admin_headers = token
                .map(|t| vec![("authorization".to_string(), t.to_string())])
                .unwrap_or_default();
            server
                .admin_request("GET", path, None)
                .expect_status(status, &format!("admin {path} with {token:?}"));
        }
    }
    server.admin_headers.clear();
    let reply = server.admin_request("POST", "/v1/namespaces/x/create", Some(&json!({})));
    reply.expect_status(401, "create without the admin token");
    server
        .user_request("GET", "/health", &[], Vec::new())
        .expect_status(200, "/health needs no token");
    let summary = server.stop();
    assert!(summary.error.is_none(), "{summary:?}");
    assert_eq!(
        summary.namespaces, 1,
        "nothing was created without the token"
    );
}

#[test]
fn a_non_loopback_address_without_a_token_is_a_config_error_unless_allowed() {
    let runtime = runtime();
    let attempt = |configure: &dyn Fn(&mut libsql_wal_server::ServerConfig)| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let backend = runtime
            .block_on(FsBackend::new(dir.path().join("bucket")))
            .expect("a fs backend");
        let host = host_over(
            backend,
            &dir.path().join("data"),
            &dir.path().join("scratch"),
            &runtime,
        );
        let mut config = base_config();
        configure(&mut config);
        let started = Server::start(config, host);
        (started, dir)
    };
    let any: std::net::SocketAddr = "0.0.0.0:0".parse().expect("an address");
    for (what, configure) in [
        (
            "user API on 0.0.0.0 without a token",
            Box::new(|c: &mut libsql_wal_server::ServerConfig| c.user_addr = any)
                as Box<dyn Fn(&mut libsql_wal_server::ServerConfig)>,
        ),
        (
            "admin API on 0.0.0.0 without an admin token",
            Box::new(|c: &mut libsql_wal_server::ServerConfig| c.admin_addr = Some(any)),
        ),
        (
            "user API on 0.0.0.0 with only an admin token",
            Box::new(|c: &mut libsql_wal_server::ServerConfig| {
                c.user_addr = any;
                c.admin_token = Some(Token::new("adm1n").expect("a token"));
            }),
        ),
        (
            // allow_unauthenticated is for the user API only.
            "admin API on 0.0.0.0 without an admin token, allow_unauthenticated",
            Box::new(|c: &mut libsql_wal_server::ServerConfig| {
                c.admin_addr = Some(any);
                c.allow_unauthenticated = true;
            }),
        ),
    ] {
        match attempt(&*configure) {
            (Err(Error::Config(message)), _) => {
                assert!(!message.is_empty(), "{what}")
            }
            (Err(other), _) => panic!("{what}: not a config error: {other}"),
            (Ok(server), _) => {
                server.stop();
                panic!("{what}: the server started");
            }
        }
    }
    assert!(
        matches!(Token::new(""), Err(Error::Config(_))),
        "an empty token is refused"
    );
    for (what, configure) in [
        (
            "allow_unauthenticated (admin API on loopback)",
            Box::new(|c: &mut libsql_wal_server::ServerConfig| {
                c.user_addr = any;
                c.allow_unauthenticated = true;
            }) as Box<dyn Fn(&mut libsql_wal_server::ServerConfig)>,
        ),
        (
            "tokens on both",
            Box::new(|c: &mut libsql_wal_server::ServerConfig| {
                c.user_addr = any;
                c.admin_addr = Some(any);
                c.auth_token = Some(Token::new("u").expect("a token"));
                c.admin_token = Some(Token::new("a").expect("a token"));
            }),
        ),
    ] {
        let (started, _dir) = attempt(&*configure);
        let server = started.unwrap_or_else(|e| panic!("{what}: {e}"));
        let port = server.user_addr().port();
        let reply = Http::new(&runtime).send(
            &runtime,
            "GET",
            &format!("http://127.0.0.1:{port}/health"),
            &[],
            Vec::new(),
        );
        assert_eq!(reply.status, 200, "{what}: /health");
        let summary = server.stop();
        assert!(summary.error.is_none(), "{what}: {summary:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// 9. Limits

#[test]
fn a_body_over_max_body_bytes_is_413() {
    let server = TestServer::start_with(|c| {
        c.limits = Limits {
            max_body_bytes: 1024,
            ..Limits::default()
        }
    });
    let small = json!({"requests": [execute(&format!("SELECT '{}'", "x".repeat(200)))]});
    server
        .post(V2, &[], &small)
        .expect_status(200, "a small body");
    let big = json!({"requests": [execute(&format!("SELECT '{}'", "x".repeat(4000)))]});
    for route in [V2, V3, "/v1/execute", "/v3/cursor"] {
        server
            .post(route, &[], &big)
            .expect_status(413, &format!("a big body on {route}"));
    }
    server
        .post(V2, &[], &small)
        .expect_status(200, "the server goes on");
}

#[test]
fn more_streams_than_the_namespace_or_server_limit_is_503_too_many_streams() {
    let server = TestServer::start_with(|c| {
        c.limits = Limits {
            max_streams_per_namespace: 2,
            max_streams: 3,
            ..Limits::default()
        }
    });
    server.create_namespace("other");
    let mut first = server.stream(V2, &[]);
    first.execute("SELECT 1");
    let mut second = server.stream(V3, &[]);
    second.execute("SELECT 2");
    let reply = server.stream(V2, &[]).send_raw(vec![execute("SELECT 3")]);
    reply
        .expect_status(503, "a third stream")
        .expect_content_type("application/json", "a third stream");
    assert_eq!(reply.json()["code"], "TOO_MANY_STREAMS", "{}", reply.text());
    let reply = server.post(
        "/v3/cursor",
        &[],
        &json!({"batch": {"steps": [{"stmt": {"sql": "SELECT 1"}}]}}),
    );
    reply.expect_status(503, "a third stream by the cursor");
    // The open streams go on, and the limit is per namespace.
    first.execute("SELECT 4");
    let mut elsewhere = server.stream(V2, &[("x-namespace", "other")]);
    elsewhere.execute("SELECT 5");
    // Three streams are open: the server's limit.
    let reply = server
        .stream(V2, &[("x-namespace", "other")])
        .send_raw(vec![execute("SELECT 1")]);
    reply
        .expect_status(503, "a fourth stream on the server")
        .expect_content_type("application/json", "a fourth stream");
    assert_eq!(reply.json()["code"], "TOO_MANY_STREAMS", "{}", reply.text());
    // A one-off v1 request needs no stream.
    server
        .post("/v1/execute", &[], &json!({"stmt": {"sql": "SELECT 1"}}))
        .expect_status(200, "v1 at the stream limit");
    elsewhere.send_and_close(vec![]);
    // A closed stream gives its place back.
    first.send_and_close(vec![]);
    let mut third = server.stream(V2, &[]);
    third.execute("SELECT 6");
    third.send_and_close(vec![]);
    second.send_and_close(vec![]);
}

#[test]
fn a_response_over_max_response_rows_is_a_response_too_large_error() {
    let server = TestServer::start_with(|c| {
        c.limits = Limits {
            max_response_rows: 5,
            ..Limits::default()
        }
    });
    let rows_sql = |n: u32| {
        format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {n}) SELECT i FROM n"
        )
    };
    let mut stream = server.stream(V3, &[]);
    let results = stream.send(vec![execute(&rows_sql(10))]);
    assert_eq!(error_code(&results[0], "10 rows"), "RESPONSE_TOO_LARGE");
    let results = stream.send(vec![execute(&rows_sql(5))]);
    assert_eq!(rows(ok_result(&results[0], "5 rows")).len(), 5);
    let results = stream.send(vec![execute_stmt(
        json!({"sql": rows_sql(10), "want_rows": false}),
    )]);
    ok_result(&results[0], "10 rows not wanted");
    // The budget is per response: two steps of 3 rows do not fit.
    let results = stream.send(vec![json!({"type": "batch", "batch": {"steps": [
        {"stmt": {"sql": rows_sql(3)}},
        {"stmt": {"sql": rows_sql(3)}},
    ]}})]);
    let batch = ok_result(&results[0], "batch");
    assert_eq!(rows(&batch["step_results"][0]).len(), 3, "{batch}");
    assert_eq!(
        batch["step_errors"][1]["code"], "RESPONSE_TOO_LARGE",
        "{batch}"
    );
    // The next response has its own budget.
    let results = stream.send(vec![execute(&rows_sql(3))]);
    assert_eq!(rows(ok_result(&results[0], "3 rows")).len(), 3);
    stream.send_and_close(vec![]);
}

#[test]
fn stored_sql_beyond_its_limits_is_sql_store_too_many_or_too_large() {
    let server = TestServer::start_with(|c| {
        c.limits = Limits {
            max_stored_sql: 2,
            max_stored_sql_bytes: 64,
            ..Limits::default()
        }
    });
    let mut stream = server.stream(V2, &[]);
    let results = stream.send(vec![
        json!({"type": "store_sql", "sql_id": 1, "sql": "SELECT 1"}),
        json!({"type": "store_sql", "sql_id": 2, "sql": format!("SELECT '{}'", "x".repeat(100))}),
        json!({"type": "store_sql", "sql_id": 3, "sql": "SELECT 3"}),
        json!({"type": "store_sql", "sql_id": 4, "sql": "SELECT 4"}),
        execute_stmt(json!({"sql_id": 3})),
    ]);
    ok_result(&results[0], "the first text");
    assert_eq!(error_code(&results[1], "too large"), "SQL_STORE_TOO_LARGE");
    ok_result(&results[2], "the second text");
    assert_eq!(error_code(&results[3], "too many"), "SQL_STORE_TOO_MANY");
    assert_eq!(scalar_i64(ok_result(&results[4], "a stored text")), 3);
    // Closing one makes room.
    let results = stream.send(vec![
        json!({"type": "close_sql", "sql_id": 1}),
        json!({"type": "store_sql", "sql_id": 4, "sql": "SELECT 4"}),
        execute_stmt(json!({"sql_id": 4})),
    ]);
    assert_eq!(scalar_i64(ok_result(&results[2], "room made")), 4);
    stream.send_and_close(vec![]);
}

#[test]
fn a_statement_past_statement_timeout_is_interrupted_and_the_stream_goes_on() {
    let server = TestServer::start_with(|c| {
        c.limits = Limits {
            statement_timeout: Duration::from_millis(200),
            ..Limits::default()
        }
    });
    let endless =
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n";
    for route in [V2, V3] {
        let mut stream = server.stream(route, &[]);
        stream.execute("SELECT 1");
        let results = stream.send(vec![execute(endless)]);
        let error = error_of(&results[0], "an endless statement");
        assert_eq!(error["code"], "SQLITE_INTERRUPT", "{error}");
        assert!(stream.baton.is_some(), "the stream stays open");
        let results = stream.send(vec![execute("SELECT 42")]);
        assert_eq!(
            scalar_i64(ok_result(&results[0], "after the interrupt")),
            42
        );
        stream.send_and_close(vec![]);
    }
    // Inside a transaction, on the cursor, and on the v1 endpoints too.
    let mut stream = server.stream(V3, &[]);
    stream.execute("CREATE TABLE IF NOT EXISTS w(x)");
    stream.execute("BEGIN");
    stream.execute("INSERT INTO w VALUES (1)");
    let results = stream.send(vec![execute(endless)]);
    assert_eq!(
        error_code(&results[0], "endless in a transaction"),
        "SQLITE_INTERRUPT"
    );
    stream.execute("INSERT INTO w VALUES (2)");
    stream.send_and_close(vec![execute("COMMIT")]);
    assert_eq!(server.count(&[], "SELECT count(*) FROM w"), 2);
    let reply = server.post(
        "/v3/cursor",
        &[],
        &json!({"batch": {"steps": [{"stmt": {"sql": endless}}, {"stmt": {"sql": "SELECT 1"}}]}}),
    );
    let lines = cursor_lines(&reply);
    let error = lines
        .iter()
        .find(|l| l["type"] == "step_error")
        .unwrap_or_else(|| panic!("a step error: {lines:?}"));
    assert_eq!(error["step"], 0, "{error}");
    assert_eq!(error["error"]["code"], "SQLITE_INTERRUPT", "{error}");
    let mut rest = server.stream(V3, &[]);
    rest.baton = lines[0]["baton"].as_str().map(str::to_string);
    rest.send_and_close(vec![]);
    let reply = server.post("/v1/execute", &[], &json!({"stmt": {"sql": endless}}));
    reply.expect_status(400, "an endless v1 statement");
    assert_eq!(reply.json()["code"], "SQLITE_INTERRUPT", "{}", reply.text());
    let reply = server.post(
        "/v1/batch",
        &[],
        &json!({"batch": {"steps": [{"stmt": {"sql": endless}}]}}),
    );
    reply.expect_status(200, "an endless v1 batch");
    assert_eq!(
        reply.json()["result"]["step_errors"][0]["code"],
        "SQLITE_INTERRUPT",
        "{}",
        reply.text()
    );
    assert_eq!(server.count(&[], "SELECT 7"), 7, "the server goes on");
}

// ---------------------------------------------------------------------------------------------
// 10. Metrics

#[test]
fn metrics_count_requests_errors_and_namespace_frames_in_openmetrics_text() {
    let server = TestServer::start();
    let sent = 6;
    server.query(V2, &[], "CREATE TABLE m(id INTEGER PRIMARY KEY)");
    for i in 1..sent {
        server.query(V2, &[], &format!("INSERT INTO m VALUES ({i})"));
    }
    let results = server
        .stream(V2, &[])
        .send_and_close(vec![execute("INSERT INTO m VALUES (1)")]);
    assert_eq!(error_code(&results[0], "duplicate"), "SQLITE_CONSTRAINT");
    server
        .user_request("POST", V2, &[], b"{bad".to_vec())
        .expect_status(400, "a bad body");

    let metrics = server.metrics();
    let requests = metrics
        .value(
            "libsql_wal_http_requests_total",
            &[("route", "/v2/pipeline"), ("status", "200")],
        )
        .expect("a count of /v2/pipeline 200s");
    assert!(
        requests >= f64::from(sent + 1),
        "{requests} requests counted, {} sent",
        sent + 1
    );
    let bad = metrics
        .value(
            "libsql_wal_http_requests_total",
            &[("route", "/v2/pipeline"), ("status", "400")],
        )
        .expect("a count of /v2/pipeline 400s");
    assert!(bad >= 1.0, "{bad}");
    assert_eq!(
        metrics
            .types
            .get("libsql_wal_http_requests")
            .map(String::as_str),
        Some("counter")
    );
    let latencies = metrics
        .value(
            "libsql_wal_http_request_duration_seconds_count",
            &[("route", "/v2/pipeline")],
        )
        .expect("a latency histogram of /v2/pipeline");
    assert!(latencies >= f64::from(sent + 2), "{latencies}");
    let constraint = metrics
        .value(
            "libsql_wal_hrana_errors_total",
            &[("code", "SQLITE_CONSTRAINT")],
        )
        .expect("a count of SQLITE_CONSTRAINT errors");
    assert!(constraint >= 1.0, "{constraint}");
    let frames = metrics
        .value("libsql_wal_namespace_frames", &[("namespace", "default")])
        .expect("the frames of default");
    assert!(frames > 0.0, "{frames}");
    assert_eq!(metrics.value("libsql_wal_namespaces", &[]), Some(1.0));
    assert_eq!(metrics.value("libsql_wal_open_streams", &[]), Some(0.0));

    // A stream left open shows, and counters only grow.
    let mut open = server.stream(V2, &[]);
    open.execute("SELECT 1");
    let again = server.metrics();
    assert_eq!(again.value("libsql_wal_open_streams", &[]), Some(1.0));
    let more = again
        .value(
            "libsql_wal_http_requests_total",
            &[("route", "/v2/pipeline"), ("status", "200")],
        )
        .expect("a count");
    assert!(more > requests, "{requests} then {more}");
    open.send_and_close(vec![]);
}

// ---------------------------------------------------------------------------------------------
// 11. Graceful shutdown and durability

/// Restores `namespace` from `backend` alone into a new file under `work`.
fn restore_alone<B: Backend>(backend: B, namespace: &str, work: &Path) -> (PathBuf, RestoreReport) {
    std::fs::create_dir_all(work).expect("a work directory");
    let storage = ActorStorage::<B, std::fs::File>::start(
        backend,
        StorageConfig {
            scratch_dir: work.join("scratch"),
            ..StorageConfig::default()
        },
    )
    .expect("a storage for the restore");
    let dest = work.join(format!("restored-{namespace}"));
    let name: NamespaceName = namespace.parse().expect("a namespace name");
    let report = restore(
        &storage,
        &name,
        RestoreTarget::Latest,
        &dest,
        &RestoreOptions::default(),
        None,
    )
    .unwrap_or_else(|e| panic!("restoring {namespace}: {e}"));
    (dest, report)
}

/// Fails the test unless the restored file holds exactly the pages of the local file, and
/// both end with a footer at the restore's end frame.
fn assert_same_pages(restored: &Path, local: &Path, report: &RestoreReport) {
    let restored_bytes = std::fs::read(restored).expect("read the restored file");
    let local_bytes = std::fs::read(local).expect("read the local database file");
    let page_size = match u16::from_be_bytes([local_bytes[16], local_bytes[17]]) {
        1 => 65536,
        n => usize::from(n),
    };
    let pages_of = |bytes: &[u8], what: &str| -> usize {
        let tail = bytes.len() % page_size;
        assert!(
            tail == 0 || tail == FOOTER_SIZE,
            "{what}: {} bytes is not pages plus a footer",
            bytes.len()
        );
        bytes.len() - tail
    };
    let restored_pages = pages_of(&restored_bytes, "restored");
    let local_pages = pages_of(&local_bytes, "local");
    assert_eq!(
        restored_pages / page_size,
        local_pages / page_size,
        "pages in the restored file and in the local one"
    );
    assert_eq!(
        restored_pages / page_size,
        report.db_pages as usize,
        "the report's page count"
    );
    assert!(
        report.db_pages > 10 && report.chain_len > 1,
        "the workload spans pages and segments: {report:?}"
    );
    for (i, (a, b)) in restored_bytes[..restored_pages]
        .chunks(page_size)
        .zip(local_bytes[..local_pages].chunks(page_size))
        .enumerate()
    {
        assert!(a == b, "page {} differs", i + 1);
    }
    let restored_footer = Footer::decode(&restored_bytes[restored_pages..])
        .expect("the restored file ends with a footer");
    assert_eq!(restored_footer.replication_index, report.end_frame_no);
    let local_footer = Footer::decode(&local_bytes[local_pages..])
        .expect("the local file, checkpointed at shutdown, ends with a footer");
    assert_eq!(
        local_footer, restored_footer,
        "the local file holds the same frames of the same log"
    );
}

/// Opens a copy of `db` with plain SQLite and returns (rows of t, uncommitted rows,
/// integrity check).
fn inspect(db: &Path, work: &Path) -> (i64, i64, String) {
    let copy = work.join(format!(
        "inspect-{}",
        db.file_name().and_then(|n| n.to_str()).unwrap_or("db")
    ));
    std::fs::copy(db, &copy).expect("copy the database file");
    let conn = libsql_sys::rusqlite::Connection::open(&copy).expect("open with plain SQLite");
    let count = |sql: &str| -> i64 {
        conn.query_row(sql, [], |r| r.get(0))
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    };
    let rows = count("SELECT count(*) FROM t");
    let uncommitted = count("SELECT count(*) FROM t WHERE v = 'uncommitted'");
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check");
    (rows, uncommitted, integrity)
}

/// Writes the workload into `namespace`: autocommit inserts, explicit transactions across
/// requests, a rolled-back one, a seal in the middle. Returns the committed rows.
fn write_workload(server: &TestServer, namespace: &str) -> i64 {
    let headers = [("x-namespace", namespace)];
    server.query(
        V2,
        &headers,
        "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT, b BLOB)",
    );
    let mut committed = 0;
    for k in 0..8 {
        let results = server
            .stream(V2, &headers)
            .send_and_close(vec![execute_stmt(json!({
                "sql": "INSERT INTO t(v, b) VALUES (?, randomblob(?))",
                "args": [text(&format!("auto-{k}")), int(300 + 700 * k)],
            }))]);
        ok_result(&results[0], "autocommit insert");
        committed += 1;
    }
    seal_and_wait_durable(server, namespace);
    for tx in 0..3 {
        let mut stream = server.stream(V3, &headers);
        stream.execute("BEGIN");
        for part in 0..2 {
            let results = stream.send(vec![json!({"type": "batch", "batch": {"steps": [
                {"stmt": {"sql": "INSERT INTO t(v, b) VALUES (?, randomblob(2000))",
                          "args": [text(&format!("tx-{tx}-{part}-a"))]}},
                {"stmt": {"sql": "INSERT INTO t(v, b) VALUES (?, randomblob(5000))",
                          "args": [text(&format!("tx-{tx}-{part}-b"))]},
                 "condition": {"type": "ok", "step": 0}},
            ]}})]);
            let batch = ok_result(&results[0], "insert in a transaction");
            assert!(
                batch["step_errors"]
                    .as_array()
                    .is_some_and(|e| e.iter().all(Value::is_null)),
                "{batch}"
            );
            committed += 2;
        }
        stream.send_and_close(vec![execute("COMMIT")]);
    }
    let mut stream = server.stream(V2, &headers);
    stream.execute("BEGIN");
    stream.execute("INSERT INTO t(v) VALUES ('rolled back'), ('rolled back')");
    stream.send_and_close(vec![execute("ROLLBACK")]);
    server.query(
        V2,
        &headers,
        "UPDATE t SET b = randomblob(100) WHERE id % 3 = 0",
    );
    committed
}

#[test]
fn graceful_stop_rolls_back_open_streams_and_every_namespace_restores_from_the_bucket_alone() {
    let mut server = TestServer::start();
    let namespaces = ["default", "tenant-1", "tenant-2"];
    for ns in &namespaces[1..] {
        server.create_namespace(ns);
    }
    let mut committed = Vec::new();
    for ns in namespaces {
        committed.push(write_workload(&server, ns));
    }
    // One stream with an open transaction that never commits.
    let mut open = server.stream(V2, &[("x-namespace", "tenant-1")]);
    open.execute("BEGIN");
    open.execute(
        "INSERT INTO t(v, b) VALUES ('uncommitted', randomblob(3000)), ('uncommitted', NULL)",
    );
    assert!(open.baton.is_some(), "the transaction's stream stays open");
    // The client side forgets it; the server keeps the stream until it stops.
    drop(open);
    assert_eq!(
        server.count(&[("x-namespace", "tenant-1")], "SELECT count(*) FROM t"),
        committed[1],
        "the open transaction is not visible"
    );

    let summary = server.stop();
    assert_eq!(summary.streams_rolled_back, 1, "{summary:?}");
    assert!(summary.error.is_none(), "{summary:?}");
    assert_eq!(summary.namespaces, namespaces.len(), "{summary:?}");

    let work = tempfile::tempdir().expect("a temporary directory");
    for (ns, committed) in namespaces.iter().zip(committed) {
        let backend = server
            .runtime
            .block_on(FsBackend::new(server.bucket_dir()))
            .expect("a fs backend over the same bucket");
        let (restored, report) = restore_alone(backend, ns, &work.path().join(ns));
        let local = server.db_file(ns);
        assert_same_pages(&restored, &local, &report);
        let (rows, uncommitted, integrity) = inspect(&restored, work.path());
        assert_eq!(rows, committed, "{ns}: the committed rows are restored");
        assert_eq!(uncommitted, 0, "{ns}: uncommitted rows are not");
        assert_eq!(integrity, "ok", "{ns}");
        let (local_rows, local_uncommitted, _) = inspect(&local, work.path());
        assert_eq!(
            (local_rows, local_uncommitted),
            (committed, 0),
            "{ns}: the local file"
        );
    }
}

#[test]
fn a_server_on_s3_ships_every_commit_and_its_bucket_restores_alone() {
    let runtime = runtime();
    let s3 = runtime
        .block_on(S3TestServer::start())
        .expect("an S3 test server");
    let backend = runtime
        .block_on(s3.backend("server"))
        .expect("an S3 backend");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut server = TestServer::start_on(backend, runtime, dir, |_| {});
    let committed = write_workload(&server, "default");
    let summary = server.stop();
    assert!(summary.error.is_none(), "{summary:?}");
    assert_eq!(summary.streams_rolled_back, 0, "{summary:?}");
    let backend = server
        .runtime
        .block_on(s3.backend("server"))
        .expect("an S3 backend");
    let work = tempfile::tempdir().expect("a temporary directory");
    let (restored, report) = restore_alone(backend, "default", work.path());
    assert_same_pages(&restored, &server.db_file("default"), &report);
    let (rows, _, integrity) = inspect(&restored, work.path());
    assert_eq!(rows, committed);
    assert_eq!(integrity, "ok");
}

// ---------------------------------------------------------------------------------------------
// 12. Idle close

#[test]
fn an_idle_namespace_closes_and_reopens_on_demand_with_its_data() {
    let server = TestServer::start_with(|c| {
        c.idle_namespace_timeout = Some(Duration::from_millis(300));
    });
    server.create_namespace("sleepy");
    let headers = [("x-namespace", "sleepy")];
    server.query(V2, &headers, "CREATE TABLE t(x INTEGER)");
    server.query(V2, &headers, "INSERT INTO t VALUES (1), (2), (3)");
    assert_eq!(server.namespace_info("sleepy")["open"], true);
    let info = poll("sleepy closes when idle", || {
        let info = server.namespace_info("sleepy");
        (info["open"] == false).then_some(info)
    });
    assert_eq!(info["health"], "ok", "{info}");
    assert!(frame_no(&info, "local_bytes") > 0, "its file stays: {info}");
    assert!(
        server.namespace_names().contains(&"sleepy".to_string()),
        "a closed namespace is still listed"
    );

    // A stream kept open holds it open.
    let mut stream = server.stream(V2, &headers);
    let results = stream.send(vec![execute("SELECT count(*) FROM t")]);
    assert_eq!(scalar_i64(ok_result(&results[0], "reopened")), 3);
    assert_eq!(server.namespace_info("sleepy")["open"], true);
    stream.execute("INSERT INTO t VALUES (4)");
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(
        server.namespace_info("sleepy")["open"],
        true,
        "a namespace with an open stream is not closed"
    );
    stream.send_and_close(vec![]);
    poll("sleepy closes again", || {
        (server.namespace_info("sleepy")["open"] == false).then_some(())
    });
    assert_eq!(
        server.count(&headers, "SELECT count(*) FROM t"),
        4,
        "reopened with all its data"
    );
}

// ---------------------------------------------------------------------------------------------
// Probes and what real clients send

#[test]
fn probes_answer_and_client_quirks_are_taken_as_sqld_takes_them() {
    let server = TestServer::start();
    let get = |path: &str| server.user_request("GET", path, &[], Vec::new());
    let health = get("/health");
    health.expect_status(200, "/health");
    assert!(health.body.is_empty(), "{}", health.text());
    let version = get("/version");
    version.expect_status(200, "/version");
    assert!(!version.text().is_empty());
    get("/v1").expect_status(200, "/v1");
    for path in ["/v2", "/v3"] {
        let reply = get(path);
        reply.expect_status(200, path);
        assert_eq!(reply.text(), "Hello, this is HTTP API v2 (Hrana over HTTP)");
    }
    // hrana-client probes /v3-protobuf and falls back to v2 JSON on a 404.
    get("/v3-protobuf").expect_status(404, "/v3-protobuf");
    get("/no/such/route").expect_status(404, "an unknown route");

    let body = json!({"requests": [execute("SELECT 1"), {"type": "close"}]})
        .to_string()
        .into_bytes();
    // The Rust client sends no content-type and `Bearer ` with an empty token; the Python
    // client `Bearer None`; the TS client omits the baton on the first request.
    for headers in [
        vec![],
        vec![("authorization", "Bearer ")],
        vec![("authorization", "Bearer None")],
        vec![("x-libsql-client-version", "libsql-remote-0.9.0")],
    ] {
        for route in [V2, V3] {
            let reply = server.user_request("POST", route, &headers, body.clone());
            reply
                .expect_status(200, &format!("{route} with {headers:?}"))
                .expect_content_type("application/json", "pipeline");
            assert_eq!(reply.json()["results"][0]["type"], "ok", "{}", reply.text());
        }
    }
    // Integers beyond i64 are refused as a protocol error.
    server
        .post(
            V2,
            &[],
            &json!({"requests": [execute_stmt(json!({"sql": "SELECT ?",
                "args": [{"type": "integer", "value": "9223372036854775808"}]}))]}),
        )
        .expect_status(400, "an integer beyond i64");
    // A padded x-namespace-bin is taken too.
    assert_eq!(
        server.count(&[("x-namespace-bin", "ZGVmYXVsdA==")], "SELECT 5"),
        5,
        "x-namespace-bin with padding"
    );
}

#[test]
fn a_write_returning_more_rows_than_the_budget_succeeds_because_it_commits() {
    let server = TestServer::start_with(|c| {
        c.limits = Limits {
            max_response_rows: 5,
            ..Limits::default()
        }
    });
    let mut stream = server.stream(V2, &[]);
    stream.execute("CREATE TABLE r(a INTEGER PRIMARY KEY)");
    let sql = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10) \
               INSERT INTO r SELECT i FROM n RETURNING a";
    let results = stream.send(vec![execute(sql)]);
    // Stopping it at the budget would report a failure for rows that commit anyway (and a
    // client's retry would insert them twice).
    let result = ok_result(&results[0], "INSERT ... RETURNING past the row budget");
    assert_eq!(rows(result).len(), 10, "{result}");
    assert_eq!(result["affected_row_count"], 10, "{result}");
    stream.send_and_close(vec![]);
    assert_eq!(server.count(&[], "SELECT count(*) FROM r"), 10);
}

#[test]
fn admin_rewind_takes_a_namespace_back_to_a_point_and_its_writes_go_on_from_there() {
    let mut server = TestServer::start();
    server.create_namespace("rw");
    let ns = [("x-namespace", "rw")];
    server.query(V2, &ns, "CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB)");
    server.query(
        V2,
        &ns,
        "INSERT INTO t VALUES (1, randomblob(5000)), (2, NULL)",
    );
    let point = frame_no(&seal_and_wait_durable(&server, "rw"), "durable_frame_no");
    server.query(V2, &ns, "INSERT INTO t VALUES (3, NULL), (4, NULL)");
    server.query(V2, &ns, "DELETE FROM t WHERE id = 1");
    seal_and_wait_durable(&server, "rw");
    let rewind =
        |body: Value| server.admin_request("POST", "/v1/namespaces/rw/rewind", Some(&body));

    // Requests that name no point, or one storage does not hold, change nothing.
    for body in [
        json!({}),
        json!({"at": "yesterday"}),
        json!({"at": "2026-01-01T00:00:00Z", "frame_no": 3}),
        json!({"frame": 3}),
    ] {
        rewind(body.clone()).expect_status(400, &format!("rewind {body}"));
    }
    rewind(json!({"frame_no": 0})).expect_status(404, "a point before anything stored");
    server
        .admin_request(
            "POST",
            "/v1/namespaces/nope/rewind",
            Some(&json!({"frame_no": 1})),
        )
        .expect_status(404, "an unknown namespace");
    assert_eq!(server.count(&ns, "SELECT count(*) FROM t"), 3);

    // An idle stream inside a transaction is rolled back and closed, as by a delete.
    let mut idle = server.stream(V2, &ns);
    idle.execute("BEGIN");
    idle.execute("INSERT INTO t VALUES (5, NULL)");
    let reply = rewind(json!({"frame_no": point}));
    reply
        .expect_status(200, "rewind")
        .expect_content_type("application/json", "rewind");
    let rewound = reply.json();
    assert_eq!(rewound["frame_no"], point, "{rewound}");
    assert_eq!(rewound["generation"], 2, "{rewound}");
    assert_eq!(
        rewound["parent"],
        json!({"generation": 1, "frame_no": point}),
        "{rewound}"
    );
    assert_eq!(
        server.count(&ns, "SELECT count(*) FROM t WHERE id IN (1, 2)"),
        2,
        "the point's rows"
    );
    assert_eq!(server.count(&ns, "SELECT count(*) FROM t"), 2);
    server.query(V2, &ns, "INSERT INTO t VALUES (10, randomblob(60000))");
    seal_and_wait_durable(&server, "rw");
    assert_eq!(server.count(&ns, "SELECT count(*) FROM t"), 3);
    drop(idle);

    // The bucket alone restores the branch: the point's rows and what came after it.
    server.stop();
    let backend = server
        .runtime
        .block_on(FsBackend::new(server.bucket_dir()))
        .unwrap();
    let (restored, report) = restore_alone(backend, "rw", &server.dir.path().join("check"));
    assert_same_pages(&restored, &server.db_file("rw"), &report);
    let conn = libsql_sys::rusqlite::Connection::open(&restored).unwrap();
    let ids: String = conn
        .query_row("SELECT group_concat(id) FROM t", (), |r| r.get(0))
        .unwrap();
    assert_eq!(ids, "1,2,10");
}

#[test]
fn a_delete_refused_while_a_request_runs_leaves_the_namespaces_idle_streams_alone() {
    // The idle stream must outlive the long query, which takes seconds on a busy machine.
    let server = TestServer::start_with(|c| c.stream_expiry = Duration::from_secs(300));
    server.create_namespace("busy");
    let headers = [("x-namespace", "busy")];
    let mut idle = server.stream(V2, &headers);
    idle.execute("CREATE TABLE t(a)");
    idle.execute("BEGIN");
    idle.execute("INSERT INTO t VALUES (1)");
    let running = std::sync::atomic::AtomicBool::new(true);
    std::thread::scope(|scope| {
        let long = scope.spawn(|| {
            let mut stream = server.stream(V2, &headers);
            // Runs for seconds: the delete below finds a request running on the namespace.
            let results = stream.send_and_close(vec![execute(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 30000000) \
                 SELECT count(*) FROM n",
            )]);
            running.store(false, std::sync::atomic::Ordering::SeqCst);
            ok_result(&results[0], "the long query").clone()
        });
        poll("the long query's stream is open", || {
            let open = server.metrics().value("libsql_wal_open_streams", &[]);
            (open >= Some(2.0)).then_some(())
        });
        let refused = poll("a delete refused while the long query runs", || {
            let reply = server.admin_request("DELETE", "/v1/namespaces/busy", None);
            match reply.status {
                409 => Some(reply),
                200 => panic!("the namespace was deleted while a request ran on it"),
                _ if running.load(std::sync::atomic::Ordering::SeqCst) => None,
                _ => panic!("the long query ended before any delete was refused"),
            }
        });
        assert_eq!(
            refused.json()["code"],
            "NAMESPACE_BUSY",
            "{}",
            refused.text()
        );
        long.join().expect("the long query's thread");
    });
    // The idle stream still has its transaction.
    idle.execute("INSERT INTO t VALUES (2)");
    idle.execute("COMMIT");
    idle.send_and_close(vec![]);
    assert_eq!(server.count(&headers, "SELECT count(*) FROM t"), 2);
}
