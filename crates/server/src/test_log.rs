//! Test helpers: a real log (`StdIo`, no storage) in a temporary directory, with an injector
//! on it, for the tests of both sides of replication.

use std::sync::Arc;

use libsql_wal::{Injector, RegistryConfig, SharedWal, WalRegistry};
use libsql_wal_backend::NoStorage;
use libsql_wal_segment::StdIo;

pub(crate) type TestStorage = NoStorage<std::fs::File>;
pub(crate) type TestRegistry = WalRegistry<StdIo, TestStorage>;
pub(crate) type TestLog = Arc<SharedWal<StdIo, TestStorage>>;

/// The log of namespace `ns` under `dir` (a replica's if `replica`), and an injector on it.
pub(crate) fn log_in(
    dir: &std::path::Path,
    replica: bool,
) -> (TestRegistry, TestLog, Injector<StdIo, TestStorage>) {
    let registry = WalRegistry::new(
        StdIo,
        TestStorage::default(),
        RegistryConfig {
            replica,
            ..RegistryConfig::default()
        },
    );
    std::fs::create_dir(dir.join("ns")).unwrap();
    let db = dir.join("ns").join("data");
    let log = registry.open(&db).unwrap();
    let injector = registry.injector(&db).unwrap();
    (registry, log, injector)
}
