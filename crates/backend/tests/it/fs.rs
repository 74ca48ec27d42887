//! The conformance suite against the fs backend in a temporary directory, and what is special
//! to it: atomic writes that leave no temporary file behind.

use std::sync::Arc;

use libsql_wal_backend::{Backend, FsBackend};
use libsql_wal_testkit::conformance;

async fn backend() -> (FsBackend, tempfile::TempDir, tempfile::TempDir) {
    let root = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    (FsBackend::new(root.path()).await.unwrap(), root, scratch)
}

#[tokio::test]
async fn fs_stores_and_lists_many_segments_for_many_namespaces() {
    let (backend, _root, scratch) = backend().await;
    conformance::store_and_list_many_segments_for_many_namespaces(&backend, scratch.path()).await;
}

#[tokio::test]
async fn fs_finds_segments_by_frame_and_timestamp() {
    let (backend, _root, scratch) = backend().await;
    conformance::find_by_frame_and_timestamp_with_overlapping_segments(&backend, scratch.path())
        .await;
}

#[tokio::test]
async fn fs_fetches_and_verifies() {
    let (backend, _root, scratch) = backend().await;
    conformance::fetch_and_verify(&backend, scratch.path()).await;
}

#[tokio::test]
async fn fs_reports_a_flipped_byte_as_corruption() {
    let (backend, _root, scratch) = backend().await;
    conformance::a_flipped_byte_is_reported_as_corruption_naming_the_key(&backend, scratch.path())
        .await;
}

#[tokio::test]
async fn fs_reports_crafted_headers_and_oversized_indexes_as_corruption() {
    let (backend, _root, scratch) = backend().await;
    conformance::crafted_headers_and_oversized_indexes_are_corrupt(&backend, scratch.path()).await;
}

#[tokio::test]
async fn fs_retention_sweeps_old_orphan_indexes() {
    let (backend, _root, scratch) = backend().await;
    conformance::retention_sweeps_old_orphan_indexes(&backend, scratch.path()).await;
}

#[tokio::test]
async fn fs_reports_missing_objects_as_not_found() {
    let (backend, _root, scratch) = backend().await;
    conformance::missing_objects_are_not_found(&backend, scratch.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fs_takes_concurrent_stores() {
    let (backend, _root, scratch) = backend().await;
    conformance::concurrent_stores_from_many_tasks(Arc::new(backend), scratch.path()).await;
}

#[tokio::test]
async fn fs_round_trips_a_large_segment() {
    let (backend, _root, scratch) = backend().await;
    conformance::a_large_segment_round_trips(&backend, scratch.path(), 3000).await;
}

#[tokio::test]
async fn fs_deletes_and_lists_again() {
    let (backend, _root, scratch) = backend().await;
    conformance::delete_and_list_again(&backend, scratch.path()).await;
}

#[tokio::test]
async fn fs_leaves_no_temporary_file_and_cleans_stale_ones_at_start() {
    let (backend, root, scratch) = backend().await;
    conformance::delete_and_list_again(&backend, scratch.path()).await;
    let tmp = root.path().join(".tmp");
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
    // One temporary file left by a crash two hours ago, one another live backend is writing.
    std::fs::write(tmp.join("left-by-a-crash"), b"partial").unwrap();
    std::fs::File::options()
        .write(true)
        .open(tmp.join("left-by-a-crash"))
        .unwrap()
        .set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(7200))
        .unwrap();
    std::fs::write(tmp.join("being-written"), b"partial").unwrap();
    let backend = FsBackend::new(root.path()).await.unwrap();
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["being-written"], "only the stale file is removed");
    let names = backend
        .list_children(backend.default_config(), "")
        .await
        .unwrap();
    assert!(
        names.is_empty(),
        "the temporary directory is not a namespace, and a namespace whose objects were all \
         deleted is listed no more: {names:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fs_backends_sharing_a_root_write_at_once_without_clashing() {
    let root = tempfile::tempdir().unwrap();
    let first = Arc::new(FsBackend::new(root.path()).await.unwrap());
    let second = Arc::new(FsBackend::new(root.path()).await.unwrap());
    let writers: Vec<_> = [first.clone(), second.clone()]
        .into_iter()
        .enumerate()
        .map(|(w, backend)| {
            tokio::spawn(async move {
                for i in 0..100 {
                    let bytes = format!("writer {w} object {i}").repeat(50).into_bytes();
                    backend
                        .put_bytes(backend.default_config(), &format!("ns/{w}-{i}"), bytes)
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    for w in 0..2 {
        for i in 0..100 {
            let stored = std::fs::read(root.path().join(format!("ns/{w}-{i}"))).unwrap();
            assert_eq!(
                stored,
                format!("writer {w} object {i}").repeat(50).into_bytes(),
                "object {w}-{i}"
            );
        }
    }
}

#[tokio::test]
async fn fs_lists_keys_by_any_prefix() {
    let (backend, _root, _scratch) = backend().await;
    conformance::list_matches_keys_by_any_prefix(&backend).await;
}

#[tokio::test]
async fn fs_refuses_keys_that_escape_or_alias_the_root() {
    let outer = tempfile::tempdir().unwrap();
    let root = outer.path().join("root");
    let backend = FsBackend::new(&root).await.unwrap();
    let scratch = tempfile::tempdir().unwrap();
    conformance::invalid_keys_are_refused(&backend, scratch.path()).await;
    let err = backend
        .put_bytes(backend.default_config(), ".tmp/x", b"data".to_vec())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, libsql_wal_backend::Error::InvalidKey { key, .. } if key == ".tmp/x"),
        "the directory of files being written is not for objects: {err}"
    );
    let beside: Vec<_> = std::fs::read_dir(outer.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(beside, ["root"], "nothing was written beside the root");
}

#[tokio::test]
async fn fs_conditional_writes_create_once() {
    let (backend, _root, _scratch) = backend().await;
    conformance::conditional_writes_create_once(Arc::new(backend)).await;
}

#[tokio::test]
async fn fs_keeps_generations_and_deletes_namespaces() {
    let (backend, _root, scratch) = backend().await;
    conformance::generations_and_namespace_deletion(&backend, scratch.path()).await;
}
