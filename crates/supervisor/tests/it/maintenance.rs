//! Remote maintenance through `ActorStorage`: a pass on demand compacts every namespace and
//! applies retention, keeps every chain restorable, and reports a namespace it cannot compact
//! without stopping; the periodic actor the supervisor starts does the same by itself; both
//! visit every place the storage has written to (the default one and every override); with a
//! retention window a pass drops whole dead generations.

use std::path::Path;
use std::time::Duration;

use libsql_wal_backend::{
    now_ms, plan_chain, Backend, BackendExt, CompactionStrategy, FsConfig, GenerationKind,
    GenerationRecord, SegmentKey, Storage,
};
use libsql_wal_supervisor::{MaintenanceConfig, StorageConfig};

use crate::faulty::Faults;
use crate::support::*;

/// Frames per stored segment.
const FRAMES: u64 = 4;

/// Stores `count` segments of `name`, each durable before the next, so each is its own object.
fn store_one_by_one(storage: &TestStorage, local: &Path, name: &str, count: u64) {
    store_one_by_one_to(storage, local, name, count, None);
}

/// Likewise, to `config_override`.
fn store_one_by_one_to(
    storage: &TestStorage,
    local: &Path,
    name: &str,
    count: u64,
    config_override: Option<FsConfig>,
) {
    let acks = Acks::default();
    for (i, segment) in segments(local, name, count, FRAMES).iter().enumerate() {
        store_to(storage, &ns(name), segment, config_override.clone(), &acks);
        wait_until("the segment is durable", || acks.get().len() == i + 1);
    }
}

/// Starts a storage over a fs backend in `dir/bucket`.
fn fs_storage(dir: &Path, config: StorageConfig) -> TestStorage {
    storage(&dir.join("bucket"), dir, Faults::default(), config)
}

/// The stored segments of `name`, listed through the storage's own backend (a second
/// `FsBackend` on the same root would clear its temporary files from under it).
fn stored_keys(storage: &TestStorage, name: &str) -> Vec<SegmentKey> {
    stored_keys_in(storage, storage.backend().default_config(), name)
}

/// Likewise, in `config`'s place.
fn stored_keys_in(storage: &TestStorage, config: &FsConfig, name: &str) -> Vec<SegmentKey> {
    on_tokio(
        storage
            .backend()
            .list_segments(config, &generation_of(&ns(name)), u64::MAX),
    )
    .unwrap()
}

/// Checks that the chain to frame `end` of `name` plans and every segment in it verifies;
/// returns its length.
fn assert_restorable(storage: &TestStorage, name: &str, end: u64) -> usize {
    let keys = stored_keys(storage, name);
    let chain = plan_chain(&keys, end).unwrap_or_else(|gap| panic!("{name}: {gap}"));
    let backend = storage.backend();
    for key in &chain {
        on_tokio(backend.verify_segment(backend.default_config(), &generation_of(&ns(name)), *key))
            .unwrap_or_else(|e| panic!("{name}: {key}: {e}"));
    }
    chain.len()
}

#[test]
fn a_pass_compacts_every_namespace_applies_retention_and_reports_a_broken_one() {
    let dir = tempfile::tempdir().unwrap();
    let storage = fs_storage(dir.path(), config(&dir.path().join("scratch")));
    let local = dir.path().join("local");
    for name in ["alpha", "beta", "broken"] {
        store_one_by_one(&storage, &local, name, 8);
    }
    assert_eq!(assert_restorable(&storage, "alpha", 8 * FRAMES), 8);
    // One data object of `broken` damaged behind the pipeline's back.
    let victim = stored_keys(&storage, "broken")[3];
    let path = dir.path().join(format!(
        "bucket/broken/generations/00000000000000000001/segments/{victim}"
    ));
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    std::fs::write(&path, bytes).unwrap();

    let report = on_tokio(storage.run_maintenance(&MaintenanceConfig {
        strategy: CompactionStrategy::Tiered { fan_in: 2 },
        retention: Some(Duration::ZERO),
        ..MaintenanceConfig::default()
    }))
    .unwrap();
    assert_eq!(report.namespaces, 3, "{report:?}");
    assert_eq!(report.failures.len(), 1, "{report:?}");
    assert_eq!(report.failures[0].0, ns("broken"));
    assert!(
        report.failures[0].1.contains(&victim.to_string()),
        "the failure names the damaged object: {report:?}"
    );
    assert!(report.compacted_segments >= 2, "{report:?}");
    assert!(report.deleted_segments > 0, "{report:?}");
    for name in ["alpha", "beta"] {
        let chain = assert_restorable(&storage, name, 8 * FRAMES);
        assert!(chain < 8, "{name}: chain of {chain} after compaction");
        assert!(
            stored_keys(&storage, name).len() < 8,
            "{name}: retention deleted covered segments"
        );
    }
    // The broken namespace lost nothing to the failed pass.
    assert_eq!(stored_keys(&storage, "broken").len(), 8);
    futures::executor::block_on(storage.shutdown());
}

#[test]
fn the_periodic_actor_compacts_by_itself_and_reports_its_passes() {
    let dir = tempfile::tempdir().unwrap();
    let storage = fs_storage(
        dir.path(),
        StorageConfig {
            maintenance: Some(MaintenanceConfig {
                interval: Duration::from_millis(20),
                strategy: CompactionStrategy::Tiered { fan_in: 2 },
                retention: None,
            }),
            ..config(&dir.path().join("scratch"))
        },
    );
    store_one_by_one(&storage, &dir.path().join("local"), "alpha", 6);
    wait_until("a compacted segment spans the whole history", || {
        stored_keys(&storage, "alpha")
            .iter()
            .any(|k| k.start_frame_no == 1 && k.end_frame_no >= 4 * FRAMES)
    });
    let metrics = on_tokio(storage.metrics()).unwrap();
    assert!(metrics.maintenance.running, "{metrics:?}");
    assert!(metrics.maintenance.passes >= 1, "{metrics:?}");
    assert_eq!(metrics.maintenance.failures, 0, "{metrics:?}");
    assert!(assert_restorable(&storage, "alpha", 6 * FRAMES) < 6);
    // Without a retention window nothing is deleted.
    assert!(stored_keys(&storage, "alpha").len() > 6);
    // Uploads run on the actors' thread; compaction on the read runtime, never beside them.
    let threads = storage.backend().put_threads();
    let compacted: Vec<_> = threads
        .iter()
        .filter(|(key, _)| key.end_frame_no - key.start_frame_no + 1 > FRAMES)
        .collect();
    assert!(!compacted.is_empty(), "{threads:?}");
    for (key, thread) in compacted {
        assert_eq!(
            thread, "libsql-wal-reads",
            "compacted segment {key} stored from {thread}"
        );
    }
    futures::executor::block_on(storage.shutdown());
}

#[test]
fn maintenance_visits_the_default_place_and_every_override_the_storage_wrote_to() {
    let dir = tempfile::tempdir().unwrap();
    let tenant = FsConfig {
        root: dir.path().join("tenant-bucket"),
    };
    let storage = fs_storage(dir.path(), config(&dir.path().join("scratch")));
    let local = dir.path().join("local");
    store_one_by_one(&storage, &local, "alpha", 6);
    store_one_by_one_to(&storage, &local, "beta", 6, Some(tenant.clone()));
    assert_eq!(stored_keys_in(&storage, &tenant, "beta").len(), 6);

    let report = on_tokio(storage.run_maintenance(&MaintenanceConfig {
        strategy: CompactionStrategy::Tiered { fan_in: 2 },
        retention: None,
        ..MaintenanceConfig::default()
    }))
    .unwrap();
    assert_eq!(report.namespaces, 2, "{report:?}");
    assert!(report.failures.is_empty(), "{report:?}");
    let spans_history = |keys: Vec<SegmentKey>| {
        keys.iter()
            .any(|k| k.start_frame_no == 1 && k.end_frame_no >= 4 * FRAMES)
    };
    assert!(
        spans_history(stored_keys(&storage, "alpha")),
        "alpha compacted"
    );
    assert!(
        spans_history(stored_keys_in(&storage, &tenant, "beta")),
        "beta compacted in its own bucket"
    );
    futures::executor::block_on(storage.shutdown());
}

#[test]
fn a_pass_with_retention_drops_a_generation_superseded_before_the_window_and_keeps_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let storage = fs_storage(dir.path(), config(&dir.path().join("scratch")));
    let local = dir.path().join("local");
    store_one_by_one(&storage, &local, "gamma", 3);
    let backend = storage.backend();
    let place = backend.default_config();
    // A fresh log over the prefix took the namespace over: generation 1 is a dead branch.
    let newer = GenerationRecord {
        number: 2,
        created_ms: now_ms(),
        kind: GenerationKind::Log {
            log_id: uuid::Uuid::new_v4(),
            start_frame_no: 1,
            parent: None,
            rewound: false,
        },
    };
    assert!(on_tokio(backend.create_generation(place, &ns("gamma"), &newer)).unwrap());
    std::thread::sleep(Duration::from_millis(5));

    // Without retention, and with a window that opened before the takeover, it stays.
    let keep_all = MaintenanceConfig {
        retention: None,
        ..MaintenanceConfig::default()
    };
    let report = on_tokio(storage.run_maintenance(&keep_all)).unwrap();
    assert_eq!(report.dropped_generations, 0, "{report:?}");
    let wide = MaintenanceConfig {
        retention: Some(Duration::from_secs(3600)),
        ..MaintenanceConfig::default()
    };
    let report = on_tokio(storage.run_maintenance(&wide)).unwrap();
    assert_eq!(report.dropped_generations, 0, "{report:?}");
    assert_eq!(stored_keys(&storage, "gamma").len(), 3);

    let report = on_tokio(storage.run_maintenance(&MaintenanceConfig {
        retention: Some(Duration::ZERO),
        ..MaintenanceConfig::default()
    }))
    .unwrap();
    assert_eq!(report.dropped_generations, 1, "{report:?}");
    assert!(report.failures.is_empty(), "{report:?}");
    let lineage = on_tokio(backend.lineage(place, &ns("gamma"))).unwrap();
    assert_eq!(lineage.records.len(), 2, "records stay");
    assert_eq!(lineage.records[1], newer);
    let left: Vec<_> = std::fs::read_dir(
        dir.path()
            .join("bucket/gamma/generations/00000000000000000001"),
    )
    .unwrap()
    .map(|entry| entry.unwrap().file_name())
    .collect();
    assert_eq!(
        left,
        ["generation"],
        "nothing of generation 1 but its record is left"
    );
    // Dropped once: the next pass has nothing to drop.
    let report = on_tokio(storage.run_maintenance(&MaintenanceConfig {
        retention: Some(Duration::ZERO),
        ..MaintenanceConfig::default()
    }))
    .unwrap();
    assert_eq!(report.dropped_generations, 0, "{report:?}");
    futures::executor::block_on(storage.shutdown());
}
