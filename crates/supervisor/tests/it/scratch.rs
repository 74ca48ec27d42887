//! The upload scratch directory: files named per storage instance (two storages, or two
//! processes, sharing one directory never touch each other's files), from ids rather than the
//! namespace's name (so the longest valid name fits), created new and owner-only in a private
//! directory, never through a planted symlink.

use std::path::Path;
use std::sync::atomic::Ordering;

use libsql_wal_backend::{Backend, BackendExt, CompactionStrategy, MAX_NAMESPACE_LEN};
use libsql_wal_supervisor::{MaintenanceConfig, StorageConfig};

use crate::faulty::Faults;
use crate::support::*;

/// Returns the names in `dir`, sorted.
fn scratch_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// A test configuration in which every upload goes through a scratch file.
fn through_files(scratch: &Path) -> StorageConfig {
    StorageConfig {
        in_memory_upload_bytes: 0,
        ..config(scratch)
    }
}

/// Waits until `storage` has `count` data uploads stalled at its backend's gate: their
/// compaction is done and their scratch files are written.
fn wait_stalled(storage: &TestStorage, count: u64) {
    wait_until("uploads stall at the gate", || {
        storage.backend().stalled_uploads.load(Ordering::SeqCst) == count
    });
}

#[test]
fn two_storages_sharing_a_scratch_directory_keep_their_own_upload_files() {
    let dir = tempfile::tempdir().unwrap();
    let scratch = dir.path().join("scratch");
    let local = dir.path().join("local");
    let first = storage(
        &dir.path().join("bucket-1"),
        dir.path(),
        Faults::default(),
        through_files(&scratch),
    );
    let second = storage(
        &dir.path().join("bucket-2"),
        dir.path(),
        Faults::default(),
        through_files(&scratch),
    );
    // The same namespace and the same job ids (each storage counts from 1), different data.
    let namespace = ns("shared");
    let (first_segments, second_segments) =
        (segments(&local, "a", 1, 3), segments(&local, "b", 2, 2));
    let (first_acks, second_acks) = (Acks::default(), Acks::default());
    first.backend().set_open(false);
    second.backend().set_open(false);
    store(&first, &namespace, &first_segments[0], &first_acks);
    wait_stalled(&first, 1);
    for segment in &second_segments {
        store(&second, &namespace, segment, &second_acks);
    }
    wait_stalled(&second, 1);
    let both = scratch_files(&scratch);
    assert_eq!(both.len(), 2, "one scratch file per storage: {both:?}");

    second.backend().set_open(true);
    wait_until("the second storage is durable", || {
        second_acks.get().len() == 2
    });
    let left = scratch_files(&scratch);
    assert_eq!(
        left.len(),
        1,
        "the second storage removed its own file only: {left:?}"
    );
    first.backend().set_open(true);
    wait_until("the first storage is durable", || first_acks.get() == [3]);
    let metrics = futures::executor::block_on(first.metrics()).unwrap();
    assert_eq!(metrics.retries, 0, "the first upload's file was intact");
    assert_stored_in_order_once(&first.backend().stored(), &[("shared".to_string(), 3)]);
    assert_stored_in_order_once(&second.backend().stored(), &[("shared".to_string(), 4)]);
    // What the first storage sent is its own data.
    let backend = first.backend();
    let key = backend.stored()[0].1;
    let fetched = on_tokio(backend.fetch_segment_data(
        backend.default_config(),
        &namespace,
        key,
        &dir.path().join("fetched"),
    ))
    .unwrap();
    assert_eq!(
        (fetched.header.start_frame_no, fetched.header.end_frame_no),
        (1, 3)
    );
    assert!(scratch_files(&scratch).is_empty());
}

#[test]
fn a_namespace_of_the_longest_valid_name_uploads_through_a_scratch_file() {
    let dir = tempfile::tempdir().unwrap();
    let scratch = dir.path().join("scratch");
    let storage = storage(
        &dir.path().join("bucket"),
        dir.path(),
        Faults::default(),
        through_files(&scratch),
    );
    let name = "n".repeat(MAX_NAMESPACE_LEN);
    let namespace = ns(&name);
    let acks = Acks::default();
    for segment in segments(&dir.path().join("local"), "long", 3, 2) {
        store(&storage, &namespace, &segment, &acks);
    }
    wait_until("the uploads are durable or one failed", || {
        acks.get().len() == 3
            || futures::executor::block_on(storage.metrics())
                .unwrap()
                .retries
                > 0
    });
    let metrics = futures::executor::block_on(storage.metrics()).unwrap();
    let entry = metrics.namespace(&namespace).unwrap();
    assert_eq!(entry.retries, 0, "no upload failed: {entry:?}");
    assert_eq!(acks.get().last(), Some(&6));
    assert_stored_in_order_once(&storage.backend().stored(), &[(name, 6)]);
    assert!(scratch_files(&scratch).is_empty());
}

#[test]
fn a_maintenance_pass_works_in_a_directory_of_its_own_and_removes_it() {
    let dir = tempfile::tempdir().unwrap();
    let scratch = dir.path().join("scratch");
    let storage = storage(
        &dir.path().join("bucket"),
        dir.path(),
        Faults::default(),
        config(&scratch),
    );
    let acks = Acks::default();
    for (i, segment) in segments(&dir.path().join("local"), "kept", 4, 2)
        .iter()
        .enumerate()
    {
        store(&storage, &ns("kept"), segment, &acks);
        wait_until("the segment is durable", || acks.get().len() == i + 1);
    }
    let report = on_tokio(storage.run_maintenance(&MaintenanceConfig {
        strategy: CompactionStrategy::Tiered { fan_in: 2 },
        ..MaintenanceConfig::default()
    }))
    .unwrap();
    assert!(report.compacted_segments > 0, "{report:?}");
    assert!(
        scratch_files(&scratch).is_empty(),
        "the pass left {:?}",
        scratch_files(&scratch)
    );
}
