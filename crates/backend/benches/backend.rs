//! `cargo xtask bench backend`: stores then fetches a 64 MiB segment through the fs backend and
//! through the S3 backend (a real S3 server, s3s-fs, over loopback), against a plain durable
//! file copy (copy, then fsync) of the same bytes in the same run. For S3 it also reports the
//! peak resident memory above baseline of a fresh process that only uploads the 64 MiB segment
//! (the server stays in this process, so the child's figure is the client's alone).
//! Prints `backend-bench ...` summary lines.

// Benches unwrap freely: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use libsql_wal_backend::{Backend, BackendExt, FsBackend, SegmentData};
use libsql_wal_testkit::conformance::{make_segment, TestSegment};

/// Frames in the benchmark segment: 16,384 frames of 4 KiB, about 64 MiB.
const FRAMES: u64 = 16_384;
/// Timed rounds; the median is reported.
const ROUNDS: usize = 3;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn mb_per_s(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / elapsed.as_secs_f64()
}

/// Reads a `kB` field of /proc/self/status.
fn status_kb(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Resets the peak resident set size (VmHWM) to the current one.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn durable_copy(source: &Path, dest: &Path) -> Duration {
    let started = Instant::now();
    std::fs::copy(source, dest).unwrap();
    std::fs::File::open(dest).unwrap().sync_all().unwrap();
    let elapsed = started.elapsed();
    std::fs::remove_file(dest).unwrap();
    elapsed
}

async fn store_and_fetch<B: Backend>(
    backend: &B,
    segment: &TestSegment,
    scratch: &Path,
) -> (Duration, Duration) {
    let ns = libsql_wal_backend::Generation {
        namespace: "bench".parse().unwrap(),
        number: 1,
        log_id: uuid::Uuid::from_u128(1),
    };
    let config = backend.default_config();
    let started = Instant::now();
    backend
        .store_segment(
            config,
            &ns,
            segment.key,
            SegmentData::File(&segment.data),
            segment.index.clone(),
        )
        .await
        .unwrap();
    let store = started.elapsed();
    let dest = scratch.join("fetched");
    let started = Instant::now();
    backend
        .fetch_segment_data(config, &ns, segment.key, &dest)
        .await
        .unwrap();
    let fetch = started.elapsed();
    std::fs::remove_file(&dest).unwrap();
    (store, fetch)
}

async fn bench<B: Backend>(name: &str, backend: &B, segment: &TestSegment, scratch: &Path) {
    let bytes = std::fs::metadata(&segment.data).unwrap().len();
    let (mut stores, mut fetches, mut copies) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        copies.push(durable_copy(&segment.data, &scratch.join("copy")));
        let (store, fetch) = store_and_fetch(backend, segment, scratch).await;
        stores.push(store);
        fetches.push(fetch);
    }
    let store = mb_per_s(bytes, median(stores));
    let fetch = mb_per_s(bytes, median(fetches));
    let copy = mb_per_s(bytes, median(copies));
    println!(
        "backend-bench {name} store_mb_s={store:.0} fetch_mb_s={fetch:.0} copy_mb_s={copy:.0} store_ratio={:.2} fetch_ratio={:.2}",
        store / copy,
        fetch / copy
    );
}

/// Returns the two-thread runtime both processes run on.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Set in the child process that measures the memory of one upload: `endpoint|file`.
const CHILD_UPLOAD: &str = "BACKEND_BENCH_CHILD_UPLOAD";

/// The child: uploads one file to the S3 server at the endpoint and prints its peak resident
/// memory above the baseline it had once the client was ready.
fn child_upload(spec: &str) {
    let (endpoint, data) = spec.split_once('|').unwrap();
    let runtime = runtime();
    runtime.block_on(async {
        let s3 = libsql_wal_backend::S3Backend::new(libsql_wal_testkit::test_server_options(
            endpoint, "memory",
        ))
        .await
        .unwrap();
        let baseline_kb = status_kb("VmRSS:");
        reset_peak_rss();
        s3.put_file(
            s3.default_config(),
            "memory/segments/upload",
            Path::new(data),
        )
        .await
        .unwrap();
        let peak_kb = status_kb("VmHWM:");
        let upload_mb = std::fs::metadata(data).unwrap().len() as f64 / 1048576.0;
        println!(
            "backend-bench s3-memory upload_mb={upload_mb:.0} peak_rss_above_baseline_mb={:.1}",
            peak_kb.saturating_sub(baseline_kb) as f64 / 1024.0
        );
    });
}

fn main() {
    if let Ok(spec) = std::env::var(CHILD_UPLOAD) {
        return child_upload(&spec);
    }
    let runtime = runtime();
    runtime.block_on(async {
        let scratch = tempfile::tempdir().unwrap();
        let segment = make_segment(scratch.path(), 1, FRAMES, FRAMES as u32, 1, 1);

        let root = tempfile::tempdir().unwrap();
        let fs = FsBackend::new(root.path()).await.unwrap();
        bench("fs", &fs, &segment, scratch.path()).await;

        let server = libsql_wal_testkit::S3TestServer::start().await.unwrap();
        let s3 = server.backend("bench").await.unwrap();
        bench("s3", &s3, &segment, scratch.path()).await;

        let output = std::process::Command::new(std::env::current_exe().unwrap())
            .env(
                CHILD_UPLOAD,
                format!("{}|{}", server.endpoint(), segment.data.display()),
            )
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "the upload child failed: {output:?}"
        );
        print!("{}", String::from_utf8_lossy(&output.stdout));
    });
}
