//! The conformance suite against the S3 backend, through the real aws-sdk-s3 client, talking to
//! a real S3 server (s3s-fs) over loopback HTTP; and what is special to S3: multipart uploads,
//! prefixes, and errors from a server that is gone.

use std::sync::Arc;

use libsql_wal_backend::{Backend, BackendExt, Error, S3Backend};
use libsql_wal_testkit::{conformance, S3TestServer, TestServerOptions};

async fn backend(prefix: &str) -> (S3Backend, S3TestServer, tempfile::TempDir) {
    let server = S3TestServer::start().await.unwrap();
    let backend = server.backend(prefix).await.unwrap();
    (backend, server, tempfile::tempdir().unwrap())
}

#[tokio::test]
async fn s3_stores_and_lists_many_segments_for_many_namespaces() {
    let (backend, _server, scratch) = backend("").await;
    conformance::store_and_list_many_segments_for_many_namespaces(&backend, scratch.path()).await;
}

#[tokio::test]
async fn s3_stores_and_lists_under_a_prefix() {
    let (backend, _server, scratch) = backend("tenants/eu").await;
    conformance::store_and_list_many_segments_for_many_namespaces(&backend, scratch.path()).await;
}

#[tokio::test]
async fn s3_finds_segments_by_frame_and_timestamp() {
    let (backend, _server, scratch) = backend("p").await;
    conformance::find_by_frame_and_timestamp_with_overlapping_segments(&backend, scratch.path())
        .await;
}

#[tokio::test]
async fn s3_fetches_and_verifies() {
    let (backend, _server, scratch) = backend("p").await;
    conformance::fetch_and_verify(&backend, scratch.path()).await;
}

#[tokio::test]
async fn s3_reports_a_flipped_byte_as_corruption() {
    let (backend, _server, scratch) = backend("p").await;
    conformance::a_flipped_byte_is_reported_as_corruption_naming_the_key(&backend, scratch.path())
        .await;
}

#[tokio::test]
async fn s3_reports_crafted_headers_and_oversized_indexes_as_corruption() {
    let (backend, _server, scratch) = backend("p").await;
    conformance::crafted_headers_and_oversized_indexes_are_corrupt(&backend, scratch.path()).await;
}

#[tokio::test]
async fn s3_retention_sweeps_old_orphan_indexes() {
    let (backend, _server, scratch) = backend("p").await;
    conformance::retention_sweeps_old_orphan_indexes(&backend, scratch.path()).await;
}

#[tokio::test]
async fn s3_reports_missing_objects_as_not_found() {
    let (backend, _server, scratch) = backend("p").await;
    conformance::missing_objects_are_not_found(&backend, scratch.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_takes_concurrent_stores() {
    let (backend, _server, scratch) = backend("p").await;
    conformance::concurrent_stores_from_many_tasks(Arc::new(backend), scratch.path()).await;
}

#[tokio::test]
async fn s3_uploads_a_large_segment_in_parts() {
    let server = S3TestServer::start().await.unwrap();
    let mut options = server.options("p");
    options.multipart_threshold = 6 << 20;
    options.part_size = 5 << 20;
    let backend = S3Backend::new(options).await.unwrap();
    let scratch = tempfile::tempdir().unwrap();
    // 3,000 frames of 4 KiB: about 12 MiB, three parts.
    conformance::a_large_segment_round_trips(&backend, scratch.path(), 3000).await;
}

#[tokio::test]
async fn s3_deletes_and_lists_again() {
    let (backend, _server, scratch) = backend("p").await;
    conformance::delete_and_list_again(&backend, scratch.path()).await;
}

fn backend_config(backend: &S3Backend) -> &libsql_wal_backend::S3Config {
    Backend::default_config(backend)
}

#[tokio::test]
async fn s3_errors_name_the_bucket_and_say_whether_to_retry() {
    let (backend, server, _scratch) = backend("p").await;
    let ns = conformance::test_generation("x");
    let mut wrong = backend_config(&backend).clone();
    wrong.bucket = "no-such-bucket".into();
    let err = backend.meta(&wrong, &ns).await.unwrap_err();
    assert!(matches!(err, Error::Fatal { .. }), "{err}");
    assert!(err.to_string().contains("no-such-bucket"), "{err}");

    let endpoint = server.endpoint().to_string();
    drop(server);
    let mut options = S3TestServer::start().await.unwrap().options("p");
    options.endpoint = Some(endpoint);
    options.max_attempts = 1;
    let gone = S3Backend::new(options).await.unwrap();
    let err = gone.meta(backend_config(&gone), &ns).await.unwrap_err();
    assert!(
        err.is_transient(),
        "a server that is gone is worth retrying: {err}"
    );
}

#[tokio::test]
async fn s3_lists_keys_by_any_prefix() {
    let (backend, _server, _scratch) = backend("p").await;
    conformance::list_matches_keys_by_any_prefix(&backend).await;
}

#[tokio::test]
async fn s3_refuses_keys_that_escape_or_alias_the_root() {
    let (backend, _server, scratch) = backend("p").await;
    conformance::invalid_keys_are_refused(&backend, scratch.path()).await;
}

#[tokio::test]
async fn s3_lists_every_key_from_a_server_that_caps_pages() {
    use futures::stream::{StreamExt, TryStreamExt};
    let server = S3TestServer::start_with(TestServerOptions {
        list_page_cap: Some(100),
        ..TestServerOptions::default()
    })
    .await
    .unwrap();
    let backend = server.backend("p").await.unwrap();
    let config = backend_config(&backend);
    let keys: Vec<String> = (0..1234).map(|i| format!("ns/objects/{i:05}")).collect();
    futures::stream::iter(&keys)
        .map(|key| backend.put_bytes(config, key, key.clone().into_bytes()))
        .buffer_unordered(16)
        .try_collect::<()>()
        .await
        .unwrap();
    // Listed keys as a range of `keys`, so a failure reads short.
    let list = |start_after: Option<&'static str>, max_keys| {
        let backend = &backend;
        let keys = &keys;
        async move {
            let listed = backend
                .list(config, "ns/objects/", start_after, max_keys)
                .await
                .unwrap();
            let first = listed
                .first()
                .and_then(|k| keys.iter().position(|o| o == k));
            let first = first.unwrap_or(0);
            assert_eq!(
                listed,
                keys[first..first + listed.len()],
                "not a run of keys in order"
            );
            first..first + listed.len()
        }
    };
    assert_eq!(list(None, 5000).await, 0..1234, "every key, in order");
    assert_eq!(list(None, 1500).await, 0..1234);
    assert_eq!(list(None, 1000).await, 0..1000, "max_keys is honoured");
    assert_eq!(list(None, 150).await, 0..150, "max_keys inside a page");
    assert_eq!(
        list(Some("ns/objects/00099"), 5000).await,
        100..1234,
        "after a page boundary"
    );
    assert_eq!(
        list(Some("ns/objects/00500"), 1100).await,
        501..1234,
        "after a key inside a page"
    );
    assert_eq!(
        list(Some("ns/objects/00500"), 250).await,
        501..751,
        "after a key, max_keys across pages"
    );
    assert_eq!(list(Some("ns/objects/01233"), 10).await.len(), 0);
}

/// A 12 MiB file in 5 MiB parts: three parts.
async fn multipart_backend(
    server: &S3TestServer,
) -> (S3Backend, tempfile::TempDir, std::path::PathBuf) {
    let mut options = server.options("p");
    options.multipart_threshold = 6 << 20;
    options.part_size = 5 << 20;
    options.max_attempts = 1;
    let backend = S3Backend::new(options).await.unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let source = scratch.path().join("big");
    std::fs::write(&source, vec![7u8; 12 << 20]).unwrap();
    (backend, scratch, source)
}

#[tokio::test]
async fn s3_aborts_a_multipart_upload_whose_part_fails() {
    let server = S3TestServer::start_with(TestServerOptions {
        fail_parts_from: Some(2),
        ..TestServerOptions::default()
    })
    .await
    .unwrap();
    let (backend, _scratch, source) = multipart_backend(&server).await;
    let config = backend_config(&backend);
    let err = backend
        .put_file(config, "ns/big", &source)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("ns/big"), "{err}");
    assert_eq!(
        server.unfinished_multipart_files().unwrap(),
        Vec::<String>::new(),
        "the upload was aborted"
    );
    let err = backend.get(config, "ns/big").await.map(drop).unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_aborts_a_multipart_upload_dropped_midway() {
    let server = S3TestServer::start_with(TestServerOptions {
        stall_parts_from: Some(2),
        ..TestServerOptions::default()
    })
    .await
    .unwrap();
    let (backend, _scratch, source) = multipart_backend(&server).await;
    let backend = Arc::new(backend);
    let upload = {
        let backend = backend.clone();
        tokio::spawn(async move {
            backend
                .put_file(backend_config(&backend), "ns/big", &source)
                .await
        })
    };
    // Wait until part 1 is stored (part 2 never answers), then drop the upload.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !server
        .unfinished_multipart_files()
        .unwrap()
        .iter()
        .any(|name| name.ends_with(".part-1"))
    {
        assert!(std::time::Instant::now() < deadline, "part 1 never arrived");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    upload.abort();
    assert!(upload.await.unwrap_err().is_cancelled());
    // The abort is sent in the background.
    loop {
        let left = server.unfinished_multipart_files().unwrap();
        if left.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the dropped upload was not aborted: {left:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn s3_options_backend_and_errors_never_show_secrets() {
    const SECRET: &str = "wJalrXUtnFEMI-the-secret";
    const ENDPOINT_PASSWORD: &str = "endpoint-hunter2";
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let mut options = libsql_wal_backend::S3Options::new("bucket", "p");
    options.endpoint = Some(format!(
        "http://operator:{ENDPOINT_PASSWORD}@127.0.0.1:{port}"
    ));
    options.region = Some("us-east-1".into());
    options.credentials = Some(("AKIDEXAMPLE".into(), SECRET.into()));
    options.max_attempts = 1;
    let mut shown = vec![format!("{options:?}"), format!("{:?}", options.clone())];
    let backend = S3Backend::new(options).await.unwrap();
    shown.push(format!("{backend:?}"));
    let config = backend_config(&backend);
    let ns = conformance::test_generation("x");
    let scratch = tempfile::tempdir().unwrap();
    let source = scratch.path().join("object");
    std::fs::write(&source, b"data").unwrap();
    let errors = [
        backend
            .put_bytes(config, "ns/a", b"data".to_vec())
            .await
            .unwrap_err(),
        backend.put_file(config, "ns/a", &source).await.unwrap_err(),
        backend.get(config, "ns/a").await.map(drop).unwrap_err(),
        backend.list(config, "ns/", None, 10).await.unwrap_err(),
        backend.list_children(config, "").await.unwrap_err(),
        backend.delete(config, "ns/a").await.unwrap_err(),
        backend
            .put_bytes_if_absent(config, "ns/b", b"data".to_vec())
            .await
            .unwrap_err(),
        backend.meta(config, &ns).await.unwrap_err(),
    ];
    for err in &errors {
        assert!(err.is_transient(), "a closed port is worth retrying: {err}");
        shown.push(format!("{err}"));
        shown.push(format!("{err:?}"));
        let mut source = std::error::Error::source(err);
        while let Some(e) = source {
            shown.push(format!("{e} {e:?}"));
            source = e.source();
        }
    }
    for text in &shown {
        assert!(!text.contains(SECRET), "the secret key is shown: {text}");
        assert!(
            !text.contains(ENDPOINT_PASSWORD),
            "the endpoint's password is shown: {text}"
        );
    }
    assert!(
        shown.iter().any(|t| t.contains(&port.to_string())),
        "the endpoint's host and port are still shown: {shown:?}"
    );
}

#[tokio::test]
async fn s3_conditional_writes_create_once() {
    let (backend, _server, _scratch) = backend("p").await;
    conformance::conditional_writes_create_once(Arc::new(backend)).await;
}

#[tokio::test]
async fn s3_keeps_generations_and_deletes_namespaces() {
    let (backend, _server, scratch) = backend("p").await;
    conformance::generations_and_namespace_deletion(&backend, scratch.path()).await;
}

#[tokio::test]
async fn s3_conditional_creates_retry_a_conflict_and_give_up_naming_it() {
    // A backend on a server that answers the first `conflicts` conditional writes with 409.
    let conflicting = |conflicts| async move {
        let server = S3TestServer::start_with(TestServerOptions {
            conflicting_conditional_puts: conflicts,
            ..TestServerOptions::default()
        })
        .await
        .unwrap();
        let backend = server.backend("p").await.unwrap();
        (server, backend)
    };
    // Two conflicts, then the server decides: the create goes through.
    let (_server, backend) = conflicting(2).await;
    let config = backend_config(&backend);
    assert!(backend
        .put_bytes_if_absent(config, "ns/claim", b"one".to_vec())
        .await
        .expect("retried past the conflicts"));
    assert!(!backend
        .put_bytes_if_absent(config, "ns/claim", b"two".to_vec())
        .await
        .unwrap());
    // Conflicts that never end fail, naming the object.
    let (_server, backend) = conflicting(100).await;
    let config = backend_config(&backend);
    let err = backend
        .put_bytes_if_absent(config, "ns/claim", b"one".to_vec())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("ns/claim"), "{err}");
}
