//! Helpers: sealed segments on disk, a storage over a faulty fs backend with quick retries, and
//! callbacks that record what they were told.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libsql_wal_backend::{
    Backend, FsBackend, Generation, NamespaceName, OnStored, Storage, Stored,
};
use libsql_wal_segment::SealedSegment;
use libsql_wal_supervisor::{ActorStorage, SchedulerConfig, StorageConfig};
use libsql_wal_testkit::conformance::{sealed_segments, TEST_LOG_ID};

use crate::faulty::{Faults, FaultyBackend};

pub type Segment = Arc<SealedSegment<std::fs::File>>;
pub type TestStorage = ActorStorage<FaultyBackend<FsBackend>, std::fs::File>;

pub fn ns(name: &str) -> NamespaceName {
    name.parse().unwrap()
}

/// Generation 1 of `namespace`: the one the test segments' log writes.
pub fn generation_of(namespace: &NamespaceName) -> Generation {
    Generation {
        namespace: namespace.clone(),
        number: 1,
        log_id: TEST_LOG_ID,
    }
}

/// Returns `count` consecutive sealed segments of `frames` frames each, from frame 1, in their
/// own directory under `dir`.
pub fn segments(dir: &Path, name: &str, count: u64, frames: u64) -> Vec<Segment> {
    let dir = dir.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    sealed_segments(&dir, 1, count * frames, 8, count, 1_700_000_000_000)
        .into_iter()
        .map(Arc::new)
        .collect()
}

/// A configuration for tests: quick retries and supervision, scratch files under `scratch`.
pub fn config(scratch: &Path) -> StorageConfig {
    StorageConfig {
        scheduler: SchedulerConfig {
            retry_initial: Duration::from_millis(1),
            retry_max: Duration::from_millis(20),
            ..SchedulerConfig::default()
        },
        scratch_dir: scratch.to_path_buf(),
        supervision_interval: Duration::from_millis(20),
        shutdown_timeout: Duration::from_secs(30),
        ..StorageConfig::default()
    }
}

/// Starts a storage over a fs backend rooted at `root`, with `faults`.
pub fn storage(root: &Path, scratch: &Path, faults: Faults, config: StorageConfig) -> TestStorage {
    let _ = scratch;
    let fs = on_tokio(FsBackend::new(root)).unwrap();
    ActorStorage::start(FaultyBackend::new(fs, faults, 42), config).unwrap()
}

/// Runs `future` on a fresh tokio runtime (backend calls made by the test itself need one).
pub fn on_tokio<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

/// What the on-stored callbacks of a namespace were told, in call order.
#[derive(Clone, Default)]
pub struct Acks(pub Arc<Mutex<Vec<Stored>>>);

impl Acks {
    pub fn callback(&self) -> OnStored {
        let acks = self.0.clone();
        Box::new(move |stored| acks.lock().unwrap().push(stored))
    }

    /// The durable frame_nos reported (a segment fenced off fails the test).
    pub fn get(&self) -> Vec<u64> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|stored| match stored {
                Stored::Durable(frame_no) => *frame_no,
                Stored::Fenced { newer } => panic!("fenced off by generation {newer}"),
            })
            .collect()
    }
}

/// Stores `segment` from this thread, as the WAL does on its commit path.
pub fn store<B: Backend>(
    storage: &ActorStorage<B, std::fs::File>,
    namespace: &NamespaceName,
    segment: &Segment,
    acks: &Acks,
) {
    store_to(storage, namespace, segment, None, acks);
}

/// Stores `segment` to `config_override` (the backend's default place if `None`).
pub fn store_to<B: Backend>(
    storage: &ActorStorage<B, std::fs::File>,
    namespace: &NamespaceName,
    segment: &Segment,
    config_override: Option<B::Config>,
    acks: &Acks,
) {
    let generation = generation_of(namespace);
    // The generation's record, as the WAL creates it before its first segment (a second call
    // finds it there; the conditional write alone, so a test holding reads does not hold it).
    let record = libsql_wal_backend::GenerationRecord {
        number: generation.number,
        created_ms: 1_700_000_000_000,
        kind: libsql_wal_backend::GenerationKind::Log {
            log_id: generation.log_id,
            start_frame_no: 1,
            parent: None,
            rewound: false,
        },
    };
    let place = config_override
        .clone()
        .unwrap_or_else(|| storage.backend().default_config().clone());
    on_tokio(storage.backend().put_bytes_if_absent(
        &place,
        &libsql_wal_backend::generation_object(namespace, generation.number),
        record.encode(),
    ))
    .unwrap();
    futures::executor::block_on(storage.store(
        &generation,
        segment.clone(),
        config_override,
        acks.callback(),
    ))
    .unwrap();
}

/// Waits until `done` holds, for at most 60 s.
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "timed out waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Checks that the stored keys of each namespace, in store order, cover frames 1..=end once,
/// in increasing order.
pub fn assert_stored_in_order_once(
    stored: &[(String, libsql_wal_backend::SegmentKey)],
    ends: &[(String, u64)],
) {
    for (name, end) in ends {
        let keys: Vec<_> = stored
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, k)| *k)
            .collect();
        let mut next = 1;
        for key in &keys {
            assert_eq!(
                key.start_frame_no, next,
                "{name}: stored {key} when frame {next} was next (keys {keys:?})"
            );
            next = key.end_frame_no + 1;
        }
        assert_eq!(next, end + 1, "{name}: stored up to {} of {end}", next - 1);
    }
}
