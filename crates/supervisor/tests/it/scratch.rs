//! The upload scratch directory: files named per storage instance (two storages, or two
//! processes, sharing one directory never touch each other's files), from ids rather than the
//! namespace's name (so the longest valid name fits), created new and owner-only in a private
//! directory, never through a planted symlink.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::Ordering;

use libsql_wal_backend::{Backend, BackendExt, CompactionStrategy, MAX_NAMESPACE_LEN};
use libsql_wal_supervisor::{ActorStorage, MaintenanceConfig, StorageConfig};

use crate::faulty::Faults;
use crate::support::*;

/// Returns the names in `dir`, sorted, but for the storages' lock files (`{instance}.lock`,
/// held while each storage runs).
fn scratch_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| !name.ends_with(".lock"))
        .collect();
    names.sort();
    names
}

/// Returns the permission bits of `path` (not following a symlink).
fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
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
        &generation_of(&namespace),
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

#[test]
fn the_scratch_directory_is_made_private_and_upload_files_are_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let scratch = dir.path().join("not-yet").join("scratch");
    let storage = storage(
        &dir.path().join("bucket"),
        dir.path(),
        Faults::default(),
        through_files(&scratch),
    );
    assert_eq!(mode(&scratch), 0o700, "a new scratch directory is private");
    storage.backend().set_open(false);
    let acks = Acks::default();
    let segment = segments(&dir.path().join("local"), "private", 1, 2).remove(0);
    store(&storage, &ns("private"), &segment, &acks);
    wait_stalled(&storage, 1);
    let files = scratch_files(&scratch);
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(mode(&scratch.join(&files[0])), 0o600, "{}", files[0]);
    storage.backend().set_open(true);
    wait_until("the segment is durable", || acks.get() == [2]);
}

#[test]
fn an_existing_scratch_directory_of_ours_is_made_private() {
    let dir = tempfile::tempdir().unwrap();
    let scratch = dir.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    std::fs::set_permissions(&scratch, std::fs::Permissions::from_mode(0o777)).unwrap();
    let _storage = storage(
        &dir.path().join("bucket"),
        dir.path(),
        Faults::default(),
        config(&scratch),
    );
    assert_eq!(mode(&scratch), 0o700);
}

#[test]
fn a_scratch_directory_that_is_a_symlink_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let scratch = dir.path().join("scratch");
    std::os::unix::fs::symlink(&elsewhere, &scratch).unwrap();
    let fs = on_tokio(libsql_wal_backend::FsBackend::new(
        dir.path().join("bucket"),
    ))
    .unwrap();
    let started: Result<ActorStorage<_, std::fs::File>, _> =
        ActorStorage::start(fs, config(&scratch));
    let error = started
        .err()
        .expect("a symlinked scratch directory is refused");
    assert!(
        error.to_string().contains(&scratch.display().to_string()),
        "the error names the directory: {error}"
    );
}

#[test]
fn a_symlink_planted_at_an_upload_file_path_is_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let scratch = dir.path().join("scratch");
    let storage = storage(
        &dir.path().join("bucket"),
        dir.path(),
        Faults::default(),
        through_files(&scratch),
    );
    let victim = dir.path().join("victim");
    std::fs::write(&victim, b"not yours").unwrap();
    storage.backend().set_open(false);
    let acks = Acks::default();
    let segment = segments(&dir.path().join("local"), "planted", 1, 2).remove(0);
    store(&storage, &ns("planted"), &segment, &acks);
    wait_stalled(&storage, 1);
    // The file of the job in flight shows how the next jobs' files are named:
    // `{prefix}-{job}.{extension}`.
    let files = scratch_files(&scratch);
    assert_eq!(files.len(), 1, "{files:?}");
    let (prefix, rest) = files[0].rsplit_once('-').unwrap();
    let (job, extension) = rest.split_once('.').unwrap();
    let job: u64 = job.parse().unwrap();
    let planted: Vec<_> = (job + 1..=job + 5)
        .map(|next| scratch.join(format!("{prefix}-{next}.{extension}")))
        .collect();
    for link in &planted {
        std::os::unix::fs::symlink(&victim, link).unwrap();
    }
    // The upload in flight fails: its retries are the next jobs, at the planted paths.
    storage.backend().fail_next(1);
    storage.backend().set_open(true);
    wait_until("the segment is durable", || acks.get() == [2]);
    assert!(
        std::fs::read(&victim).unwrap() == b"not yours",
        "the symlinks' target is untouched"
    );
    for link in &planted {
        assert!(
            std::fs::symlink_metadata(link).unwrap().is_symlink(),
            "{} is left alone",
            link.display()
        );
    }
    let metrics = futures::executor::block_on(storage.metrics()).unwrap();
    assert!(
        metrics.retries > 1,
        "the planted paths were refused: {metrics:?}"
    );
}

#[test]
fn the_default_scratch_directory_is_per_user() {
    let probe = tempfile::tempdir().unwrap();
    let uid = std::fs::metadata(probe.path()).unwrap().uid();
    assert_eq!(
        StorageConfig::default().scratch_dir,
        std::env::temp_dir().join(format!("libsql-wal-uploads-{uid}"))
    );
}
