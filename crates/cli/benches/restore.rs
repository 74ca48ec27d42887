//! `cargo xtask bench restore`: a namespace with about 256 MiB of history in 200 stored segments
//! (a 128 MiB database whose every page was written twice), restored latest from the fs backend
//! and from S3 (s3s-fs in this process, over loopback), before and after remote compaction
//! (tiered, 8 per merge). Prints per case
//! `restore-bench <fs|s3> compacted=<yes|no> db_mb=<n> objects=<k> restore_mb_s=<x>
//! copy_mb_s=<y> ratio=<x/y>`, where copy is `std::fs::copy` plus fsync of a file of the
//! restored size on the same file system, in the same run. Each side is the median of three
//! runs, alternating.
//!
//! Then, after compaction, the same restore by the `libsql-wal restore` binary (a process
//! started per run, its storage pipeline included) against the library call on the same
//! bucket, alternating (each side first in turn), the median of four each:
//! `restore-bench cli backend=<fs|s3> db_mb=<n> cli_s=<x> library_s=<y> ratio=<y/x>`.
//!
//! Targets: compacted fs ratio >= 0.5; objects fetched after compaction <= 1/10 of before; cli
//! ratio >= 0.95 (the command adds nothing measurable).

// Benches unwrap freely: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use libsql_wal::{restore, RestoreOptions, RestoreReport, RestoreTarget};
use libsql_wal_backend::{
    compact, Backend, BackendExt, CompactionStrategy, FsBackend, Generation, GenerationKind,
    GenerationRecord, NamespaceName, SegmentData, SegmentKey,
};
use libsql_wal_segment::merge;
use libsql_wal_supervisor::{ActorStorage, StorageConfig};
use libsql_wal_testkit::conformance::{sealed_segments, TEST_LOG_ID};
use libsql_wal_testkit::{S3TestServer, ACCESS_KEY, SECRET_KEY, TEST_BUCKET};

/// Pages of the database: 128 MiB.
const PAGES: u32 = 32 * 1024;
/// Frames of history: every page twice, 256 MiB.
const FRAMES: u64 = 2 * PAGES as u64;
/// Stored segments before compaction.
const SEGMENTS: u64 = 200;

fn namespace() -> NamespaceName {
    "bench".parse().unwrap()
}

/// The generation the history is stored in (its log is the test segments').
fn generation() -> Generation {
    Generation {
        namespace: namespace(),
        number: 1,
        log_id: TEST_LOG_ID,
    }
}

/// Stores the history: 200 segments, each merged and stored the way the upload workers do.
fn store_history<B: Backend>(backend: &B, runtime: &tokio::runtime::Runtime, work: &Path) {
    let local = work.join("local");
    std::fs::create_dir_all(&local).unwrap();
    let record = GenerationRecord {
        number: 1,
        created_ms: 1_700_000_000_000,
        kind: GenerationKind::Log {
            log_id: TEST_LOG_ID,
            start_frame_no: 1,
            parent: None,
            rewound: false,
        },
    };
    runtime
        .block_on(backend.create_generation(backend.default_config(), &namespace(), &record))
        .unwrap();
    let per_segment = FRAMES / SEGMENTS;
    let mut first = 1;
    for i in 0..SEGMENTS {
        let last = if i + 1 == SEGMENTS {
            FRAMES
        } else {
            first + per_segment - 1
        };
        let sealed = sealed_segments(&local, first, last, PAGES, 1, 1_700_000_000_000 + i);
        let mut data = Vec::new();
        let compacted = merge(&[&sealed[0]], &mut data).unwrap();
        runtime
            .block_on(backend.store_segment(
                backend.default_config(),
                &generation(),
                SegmentKey::from(&compacted.header),
                SegmentData::Bytes(data),
                compacted.index.encode(),
            ))
            .unwrap();
        std::fs::remove_file(sealed[0].path()).unwrap();
        first = last + 1;
    }
}

/// MB/s of copying a file of `bytes` bytes on the file system of `work`, fsync included.
fn copy_mb_s(work: &Path, bytes: u64) -> f64 {
    let source = work.join("copy-source");
    let chunk = vec![0x5a_u8; 1 << 20];
    {
        use std::io::Write;
        let mut file = std::fs::File::create(&source).unwrap();
        let mut left = bytes;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            file.write_all(&chunk[..n]).unwrap();
            left -= n as u64;
        }
        file.sync_all().unwrap();
    }
    let dest = work.join("copy-dest");
    let started = Instant::now();
    std::fs::copy(&source, &dest).unwrap();
    std::fs::File::open(&dest).unwrap().sync_all().unwrap();
    let elapsed = started.elapsed();
    std::fs::remove_file(&source).unwrap();
    std::fs::remove_file(&dest).unwrap();
    mb(bytes) / elapsed.as_secs_f64()
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// The storage pipeline the library call restores through, its scratch files under `work`.
fn start_storage<B: Backend>(backend: B, work: &Path) -> ActorStorage<B, std::fs::File> {
    ActorStorage::start(
        backend,
        StorageConfig {
            scratch_dir: work.join("scratch"),
            ..StorageConfig::default()
        },
    )
    .unwrap()
}

/// The library call: restores latest into `dest`.
fn restore_latest<B: Backend>(
    storage: &ActorStorage<B, std::fs::File>,
    dest: &Path,
) -> RestoreReport {
    restore(
        storage,
        &namespace(),
        RestoreTarget::Latest,
        dest,
        &RestoreOptions::default(),
        None,
    )
    .unwrap()
}

/// Restores latest into `work` and prints the line; returns the objects fetched.
fn restore_case<B: Backend>(
    name: &str,
    compacted: bool,
    backend: B,
    work: &Path,
    baseline_objects: Option<usize>,
) -> usize {
    let storage = start_storage(backend, work);
    let dest = work.join(format!("restored-{name}-{compacted}"));
    // Both sides are short and noisy on a shared machine: each is the median of three runs,
    // alternating.
    let (mut restores, mut copies) = (Vec::new(), Vec::new());
    let (mut report, mut bytes) = (None, 0);
    for _ in 0..3 {
        let started = Instant::now();
        report = Some(restore_latest(&storage, &dest));
        let elapsed = started.elapsed().max(Duration::from_micros(1));
        bytes = std::fs::metadata(&dest).unwrap().len();
        std::fs::remove_file(&dest).unwrap();
        restores.push(mb(bytes) / elapsed.as_secs_f64());
        copies.push(copy_mb_s(work, bytes));
    }
    let report = report.unwrap();
    let median = |values: &mut Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values[1]
    };
    let (restore_mb_s, copy) = (median(&mut restores), median(&mut copies));
    let reduction = baseline_objects
        .map(|before| {
            format!(
                " objects_vs_uncompacted={:.3}",
                report.objects_fetched as f64 / before as f64
            )
        })
        .unwrap_or_default();
    println!(
        "restore-bench {name} compacted={} db_mb={:.0} objects={} restore_mb_s={restore_mb_s:.1} copy_mb_s={copy:.1} ratio={:.2}{reduction}",
        if compacted { "yes" } else { "no" },
        mb(bytes),
        report.objects_fetched,
        restore_mb_s / copy,
    );
    report.objects_fetched
}

/// Restores latest with the binary (`libsql-wal restore bench OUT {flags}`) and with the library
/// call, alternating, and prints the `cli` line.
fn cli_case<B: Backend>(name: &str, backend: B, flags: &[String], work: &Path) {
    let storage = start_storage(backend, work);
    let dest = work.join(format!("restored-cli-{name}"));
    let (mut cli, mut library) = (Vec::new(), Vec::new());
    let mut bytes = 0;
    // Alternating, each side first in turn: neither always gets the caches the other warmed.
    for run in 0..4 {
        for side in [run % 2, 1 - run % 2] {
            let started = Instant::now();
            if side == 0 {
                restore_latest(&storage, &dest);
                library.push(started.elapsed().as_secs_f64());
            } else {
                let status = Command::new(env!("CARGO_BIN_EXE_libsql-wal"))
                    .arg("restore")
                    .arg(namespace().as_str())
                    .arg(&dest)
                    .args(flags)
                    .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
                    .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
                    .env("AWS_EC2_METADATA_DISABLED", "true")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .unwrap();
                assert!(status.success(), "libsql-wal restore: {status}");
                cli.push(started.elapsed().as_secs_f64());
            }
            let len = std::fs::metadata(&dest).unwrap().len();
            assert!(
                bytes == 0 || len == bytes,
                "both sides restore the same file"
            );
            bytes = len;
            std::fs::remove_file(&dest).unwrap();
        }
    }
    let median = |values: &mut Vec<f64>| {
        values.sort_by(f64::total_cmp);
        (values[1] + values[2]) / 2.0
    };
    let (cli_s, library_s) = (median(&mut cli), median(&mut library));
    println!(
        "restore-bench cli backend={name} db_mb={:.0} cli_s={cli_s:.3} library_s={library_s:.3} ratio={:.2}",
        mb(bytes),
        library_s / cli_s,
    );
}

/// Stores the history on `make()`, restores it, compacts, restores again, then restores with
/// the binary (on the bucket `flags` name) against the library.
fn run<B: Backend>(
    name: &str,
    make: &dyn Fn() -> B,
    flags: &[String],
    runtime: &tokio::runtime::Runtime,
    work: &Path,
) {
    let backend = make();
    store_history(&backend, runtime, work);
    let before = restore_case(name, false, make(), work, None);
    let report = runtime
        .block_on(compact(
            &backend,
            backend.default_config(),
            &generation(),
            CompactionStrategy::default(),
            &work.join("compaction"),
            |_, _| {},
        ))
        .unwrap();
    assert!(report.chain_after < report.chain_before, "{report:?}");
    restore_case(name, true, make(), work, Some(before));
    cli_case(name, make(), flags, work);
}

fn main() {
    // `cargo bench` passes `--bench`; a case name on the command line runs only that case.
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wanted = |case: &str| only.is_empty() || only.iter().any(|o| o == case);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if wanted("fs") {
        let work = tempfile::tempdir().unwrap();
        let bucket = work.path().join("bucket");
        let handle = runtime.handle().clone();
        let flags = vec!["--storage".to_string(), bucket.display().to_string()];
        let make = move || handle.block_on(FsBackend::new(&bucket)).unwrap();
        run("fs", &make, &flags, &runtime, work.path());
    }
    if wanted("s3") {
        let work = tempfile::tempdir().unwrap();
        let server = runtime.block_on(S3TestServer::start()).unwrap();
        let handle = runtime.handle().clone();
        let make = || handle.block_on(server.backend("restore")).unwrap();
        let flags: Vec<String> = [
            "--storage",
            &format!("s3://{TEST_BUCKET}/restore"),
            "--s3-endpoint",
            server.endpoint(),
            "--s3-region",
            "us-east-1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        run("s3", &make, &flags, &runtime, work.path());
    }
}
