//! `cargo xtask bench storage`: drives `ActorStorage` with many namespaces, each case in a
//! fresh child process (so its peak resident memory is its own), and prints per case
//! `storage-bench <case> namespaces=<n> segments=<m> seg_per_s=<x> mb_s=<y> p50_ms=<a>
//! p99_ms=<b> puts_per_segment=<c> peak_rss_mb=<d>`; latency runs from the `store` call to the
//! segment's durable callback.
//!
//! - `null`: 1,000 namespaces x 20 small segments to a backend that stores nothing: the
//!   pipeline's own cost (compaction included). Segments are made beforehand, in waves of 5 per
//!   namespace (to stay under the open-file limit); only the waves are timed. Each wave also goes,
//!   in the same process, through the shape the actors replace: one bounded tokio channel into
//!   one task that compacts each segment (on the blocking pool) and stores it to the same null
//!   backend, as a plain async storage loop would; the line ends with
//!   `channel_seg_per_s=<x> ratio=<ours / channel>` (the waves alternate which goes first).
//! - `fs`: 200 namespaces x 10 segments of 256 KiB to the fs backend, with
//!   `fs_ratio=<mb_s / plain copy mb_s>`: the copy is `copy` + `fsync` of the same segment
//!   files into a directory on the same file system, in the same run.
//! - `s3`: the same to S3 (s3s-fs in this process, over loopback), with
//!   `requests_per_segment=<every PUT, GET and LIST the backend was sent, per segment>` and
//!   `fence_lists_per_segment=<the fencing checks' LISTs, per segment>` (one per upload).
//! - `slow`: 10 namespaces whose writers make segments ten times faster than a throttled
//!   backend takes uploads (one upload at a time, 20 ms each); run once, then twice as long, to
//!   show merging (`puts_per_segment`, counting index and data PUTs) and flat memory.
//!
//! Segment files are made under /dev/shm when it exists, so making them costs little and
//! reading them is not what is measured.

// Benches unwrap freely: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libsql_wal_backend::{
    Backend, BackendExt, FsBackend, NamespaceName, ObjectReader, OnStored, Result, SegmentData,
    SegmentKey, Storage,
};
use libsql_wal_segment::format::FRAME_SIZE;
use libsql_wal_segment::{merge, SealedSegment};
use libsql_wal_supervisor::{ActorStorage, StorageConfig};
use libsql_wal_testkit::conformance::sealed_segments;
use libsql_wal_testkit::S3TestServer;

type Segment = Arc<SealedSegment<std::fs::File>>;

/// Set in a child process: the case it runs.
const CASE_VAR: &str = "STORAGE_BENCH_CASE";

/// A backend that stores nothing, optionally taking one upload at a time with a delay, and
/// counts PUTs.
#[derive(Debug)]
struct CountingBackend {
    config: (),
    puts: AtomicU64,
    /// Held during a throttled upload: one at a time.
    throttle: Option<(tokio::sync::Mutex<()>, Duration)>,
}

impl CountingBackend {
    fn new(throttle: Option<Duration>) -> Self {
        CountingBackend {
            config: (),
            puts: AtomicU64::new(0),
            throttle: throttle.map(|d| (tokio::sync::Mutex::new(()), d)),
        }
    }

    async fn put(&self, key: &str) {
        self.puts.fetch_add(1, Ordering::Relaxed);
        if let Some((one_at_a_time, delay)) = &self.throttle {
            if key.contains("/segments/") {
                let _held = one_at_a_time.lock().await;
                tokio::time::sleep(*delay).await;
            }
        }
    }
}

impl Backend for CountingBackend {
    type Config = ();

    fn default_config(&self) -> &() {
        &self.config
    }

    async fn put_file(&self, _: &(), key: &str, _: &Path) -> Result<()> {
        self.put(key).await;
        Ok(())
    }

    async fn put_bytes(&self, _: &(), key: &str, _: Vec<u8>) -> Result<()> {
        self.put(key).await;
        Ok(())
    }

    async fn put_bytes_if_absent(&self, _: &(), key: &str, _: Vec<u8>) -> Result<bool> {
        self.put(key).await;
        Ok(true)
    }

    async fn get(&self, _: &(), key: &str) -> Result<ObjectReader> {
        Err(libsql_wal_backend::Error::NotFound { key: key.into() })
    }

    async fn list(&self, _: &(), _: &str, _: Option<&str>, _: usize) -> Result<Vec<String>> {
        Ok(Vec::new())
    }

    async fn stat(&self, _: &(), key: &str) -> Result<libsql_wal_backend::ObjectStat> {
        Err(libsql_wal_backend::Error::NotFound { key: key.into() })
    }

    async fn list_children(&self, _: &(), _: &str) -> Result<Vec<String>> {
        Ok(Vec::new())
    }

    async fn delete(&self, _: &(), _: &str) -> Result<()> {
        Ok(())
    }
}

/// Reads a `kB` field of /proc/self/status, in MiB.
fn status_mb(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<f64>()
                .ok()
        })
        .unwrap_or(0.0)
        / 1024.0
}

fn scratch_root() -> tempfile::TempDir {
    if Path::new("/dev/shm").is_dir() {
        tempfile::tempdir_in("/dev/shm").unwrap()
    } else {
        tempfile::tempdir().unwrap()
    }
}

/// Makes `count` segments of `frames` frames from frame `first`, each frame a different page
/// (so compaction keeps every byte and the bytes sent are the bytes made).
fn make_segments(dir: &Path, name: &str, first: u64, count: u64, frames: u64) -> Vec<Segment> {
    let dir = dir.join(format!("{name}-{first}"));
    std::fs::create_dir_all(&dir).unwrap();
    let pages = u32::try_from(frames).unwrap();
    sealed_segments(
        &dir,
        first,
        first + count * frames - 1,
        pages,
        count,
        1_700_000_000_000,
    )
    .into_iter()
    .map(Arc::new)
    .collect()
}

/// Latencies (store call to durable callback) and the time the last callback ran.
#[derive(Default)]
struct Timings {
    latencies: Vec<Duration>,
    last_durable: Option<Instant>,
}

/// Returns an on-stored callback that records the latency from now and counts one more done.
fn record_latency(done: &Arc<AtomicU64>, timings: &Arc<Mutex<Timings>>) -> OnStored {
    let (done, timings) = (done.clone(), timings.clone());
    let called = Instant::now();
    Box::new(move |_| {
        let now = Instant::now();
        let mut t = timings.lock().unwrap();
        t.latencies.push(now - called);
        t.last_durable = Some(now);
        done.fetch_add(1, Ordering::SeqCst);
    })
}

/// Generation 1 of `namespace`, the one `segment`'s log writes.
fn generation_of(
    namespace: &NamespaceName,
    segment: &SealedSegment<std::fs::File>,
) -> libsql_wal_backend::Generation {
    libsql_wal_backend::Generation {
        namespace: namespace.clone(),
        number: 1,
        log_id: segment.header().log_id,
    }
}

/// A backend that counts every request it forwards: all of them, and the fencing checks
/// (listings under a namespace's `generations/`).
#[derive(Debug)]
struct RequestCounting<B> {
    inner: B,
    requests: AtomicU64,
    fence_lists: AtomicU64,
}

impl<B: Backend> Backend for RequestCounting<B> {
    type Config = B::Config;

    fn default_config(&self) -> &B::Config {
        self.inner.default_config()
    }

    async fn put_file(&self, config: &B::Config, key: &str, source: &Path) -> Result<()> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.inner.put_file(config, key, source).await
    }

    async fn put_bytes(&self, config: &B::Config, key: &str, bytes: Vec<u8>) -> Result<()> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.inner.put_bytes(config, key, bytes).await
    }

    async fn put_bytes_if_absent(
        &self,
        config: &B::Config,
        key: &str,
        bytes: Vec<u8>,
    ) -> Result<bool> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.inner.put_bytes_if_absent(config, key, bytes).await
    }

    async fn get(&self, config: &B::Config, key: &str) -> Result<ObjectReader> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.inner.get(config, key).await
    }

    async fn list(
        &self,
        config: &B::Config,
        prefix: &str,
        start_after: Option<&str>,
        max_keys: usize,
    ) -> Result<Vec<String>> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if prefix.ends_with("/generations/") {
            self.fence_lists.fetch_add(1, Ordering::Relaxed);
        }
        self.inner.list(config, prefix, start_after, max_keys).await
    }

    async fn list_children(&self, config: &B::Config, prefix: &str) -> Result<Vec<String>> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.inner.list_children(config, prefix).await
    }

    async fn stat(&self, config: &B::Config, key: &str) -> Result<libsql_wal_backend::ObjectStat> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.inner.stat(config, key).await
    }

    async fn delete(&self, config: &B::Config, key: &str) -> Result<()> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.inner.delete(config, key).await
    }
}

/// Stores `segments` (per namespace, in order) through `storage` from 4 writer threads; returns
/// when every segment is durable.
fn drive<B: Backend>(
    storage: &ActorStorage<B, std::fs::File>,
    work: &[(NamespaceName, Vec<Segment>)],
    timings: &Arc<Mutex<Timings>>,
) -> Duration {
    drive_with(work, timings, &|namespace, segment, on_stored| {
        let generation = generation_of(namespace, &segment);
        futures::executor::block_on(storage.store(&generation, segment, None, on_stored)).unwrap();
    })
}

/// Stores `segments` (per namespace, in order) with `store` from 4 writer threads, each owning
/// a share of the namespaces and going round-robin over them; returns when every segment is
/// durable.
fn drive_with(
    work: &[(NamespaceName, Vec<Segment>)],
    timings: &Arc<Mutex<Timings>>,
    store: &(dyn Fn(&NamespaceName, Segment, OnStored) + Sync),
) -> Duration {
    let total: usize = work.iter().map(|(_, s)| s.len()).sum();
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let writers = 4;
    std::thread::scope(|scope| {
        for writer in 0..writers {
            let (done, timings) = (done.clone(), timings.clone());
            scope.spawn(move || {
                let mine: Vec<&(NamespaceName, Vec<Segment>)> =
                    work.iter().skip(writer).step_by(writers).collect();
                let rounds = mine.iter().map(|(_, s)| s.len()).max().unwrap_or(0);
                for round in 0..rounds {
                    for (namespace, segments) in &mine {
                        let Some(segment) = segments.get(round) else {
                            continue;
                        };
                        store(namespace, segment.clone(), record_latency(&done, &timings));
                    }
                }
            });
        }
    });
    elapsed_until_all_durable(&done, total, timings, started)
}

/// What a writer hands to the channel loop.
type Sent = (NamespaceName, Segment, OnStored);

/// The shape the actors replace: one task takes segments from a channel, in arrival order,
/// compacts each on the blocking pool, stores it and calls back; one upload at a time.
async fn channel_loop(
    backend: Arc<CountingBackend>,
    mut segments: tokio::sync::mpsc::Receiver<Sent>,
) {
    while let Some((namespace, segment, on_stored)) = segments.recv().await {
        let end = segment.last_committed_frame_no();
        let generation = generation_of(&namespace, &segment);
        let (compacted, data) = tokio::task::spawn_blocking(move || {
            let mut data =
                Vec::with_capacity((segment.frame_count() * FRAME_SIZE as u64) as usize + 4096);
            let compacted = merge(&[&*segment], &mut data).unwrap();
            (compacted, data)
        })
        .await
        .unwrap();
        let key = SegmentKey::from(&compacted.header);
        backend
            .store_segment(
                &(),
                &generation,
                key,
                SegmentData::Bytes(data),
                compacted.index.encode(),
            )
            .await
            .unwrap();
        on_stored(libsql_wal_backend::Stored::Durable(end));
    }
}

/// Waits until `total` callbacks ran; returns the time from `started` to the last of them.
fn elapsed_until_all_durable(
    done: &AtomicU64,
    total: usize,
    timings: &Mutex<Timings>,
    started: Instant,
) -> Duration {
    while done.load(Ordering::SeqCst) < total as u64 {
        std::thread::sleep(Duration::from_micros(200));
    }
    let last = timings
        .lock()
        .unwrap()
        .last_durable
        .unwrap_or_else(Instant::now);
    last - started
}

fn config(scratch: &Path) -> StorageConfig {
    StorageConfig {
        scratch_dir: scratch.join("uploads"),
        ..StorageConfig::default()
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

#[allow(clippy::too_many_arguments)]
fn report(
    case: &str,
    namespaces: usize,
    segments: usize,
    bytes: u64,
    elapsed: Duration,
    timings: &Mutex<Timings>,
    puts: u64,
    extra: &str,
) -> f64 {
    let mut latencies = std::mem::take(&mut timings.lock().unwrap().latencies);
    latencies.sort();
    let mb_s = bytes as f64 / (1024.0 * 1024.0) / elapsed.as_secs_f64();
    println!(
        "storage-bench {case} namespaces={namespaces} segments={segments} seg_per_s={:.0} mb_s={mb_s:.1} p50_ms={:.2} p99_ms={:.2} puts_per_segment={:.2} peak_rss_mb={:.1}{extra}",
        segments as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        puts as f64 / segments as f64,
        status_mb("VmHWM:"),
    );
    mb_s
}

fn segment_bytes(work: &[(NamespaceName, Vec<Segment>)]) -> u64 {
    work.iter()
        .flat_map(|(_, s)| s.iter())
        .map(|s| s.frame_count() * FRAME_SIZE as u64)
        .sum()
}

fn null_case() {
    let scratch = scratch_root();
    let backend = CountingBackend::new(None);
    let storage = ActorStorage::start(backend, config(scratch.path())).unwrap();
    // The peer: a channel into one task on a runtime of its own, to a null backend of its own.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let channel_backend = Arc::new(CountingBackend::new(None));
    // Bounded like the supervisor's mailbox (`mailbox_capacity`), so writers wait alike.
    let (channel, received) =
        tokio::sync::mpsc::channel::<Sent>(StorageConfig::default().mailbox_capacity);
    runtime.spawn(channel_loop(channel_backend.clone(), received));
    let names: Vec<NamespaceName> = (0..1000)
        .map(|i| format!("ns-{i:04}").parse().unwrap())
        .collect();
    let timings = Arc::new(Mutex::new(Timings::default()));
    let channel_timings = Arc::new(Mutex::new(Timings::default()));
    let (mut elapsed, mut channel_elapsed, mut segments, mut bytes) =
        (Duration::ZERO, Duration::ZERO, 0, 0);
    let frames = 2;
    let segments_dir = scratch.path().join("segments");
    for wave in 0..4u64 {
        let work: Vec<(NamespaceName, Vec<Segment>)> = names
            .iter()
            .map(|n| {
                let first = wave * 5 * frames + 1;
                (
                    n.clone(),
                    make_segments(&segments_dir, n.as_str(), first, 5, frames),
                )
            })
            .collect();
        segments += work.iter().map(|(_, s)| s.len()).sum::<usize>();
        bytes += segment_bytes(&work);
        let through_channel = |namespace: &NamespaceName, segment: Segment, on_stored| {
            futures::executor::block_on(channel.send((namespace.clone(), segment, on_stored)))
                .unwrap();
        };
        // Alternate which goes first, so neither always runs on a warmer machine.
        if wave % 2 == 0 {
            elapsed += drive(&storage, &work, &timings);
            channel_elapsed += drive_with(&work, &channel_timings, &through_channel);
        } else {
            channel_elapsed += drive_with(&work, &channel_timings, &through_channel);
            elapsed += drive(&storage, &work, &timings);
        }
        drop(work);
        std::fs::remove_dir_all(&segments_dir).unwrap();
    }
    let puts = storage.backend().puts.load(Ordering::Relaxed);
    let seg_per_s = segments as f64 / elapsed.as_secs_f64();
    let channel_seg_per_s = segments as f64 / channel_elapsed.as_secs_f64();
    report(
        "null",
        names.len(),
        segments,
        bytes,
        elapsed,
        &timings,
        puts,
        &format!(
            " channel_seg_per_s={channel_seg_per_s:.0} ratio={:.2}",
            seg_per_s / channel_seg_per_s
        ),
    );
}

/// 200 namespaces x 10 segments of 64 frames (256 KiB).
fn big_work(dir: &Path) -> Vec<(NamespaceName, Vec<Segment>)> {
    (0..200)
        .map(|i| {
            let name = format!("ns-{i:03}");
            let segments = make_segments(dir, &name, 1, 10, 64);
            (name.parse().unwrap(), segments)
        })
        .collect()
}

/// Copies every segment file into `dest` and fsyncs each copy; returns the time taken.
fn plain_copy(work: &[(NamespaceName, Vec<Segment>)], dest: &Path) -> Duration {
    std::fs::create_dir_all(dest).unwrap();
    let started = Instant::now();
    for (i, segment) in work.iter().flat_map(|(_, s)| s.iter()).enumerate() {
        let to = dest.join(i.to_string());
        std::fs::copy(segment.path(), &to).unwrap();
        std::fs::File::open(&to).unwrap().sync_all().unwrap();
    }
    started.elapsed()
}

fn fs_case() {
    let scratch = scratch_root();
    let disk = tempfile::tempdir_in(std::env::current_dir().unwrap()).unwrap();
    let work = big_work(scratch.path());
    let bytes = segment_bytes(&work);
    let copy = plain_copy(&work, &disk.path().join("copy"));
    let copy_mb_s = bytes as f64 / (1024.0 * 1024.0) / copy.as_secs_f64();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let backend = runtime
        .block_on(FsBackend::new(disk.path().join("bucket")))
        .unwrap();
    let storage = ActorStorage::start(backend, config(scratch.path())).unwrap();
    let timings = Arc::new(Mutex::new(Timings::default()));
    let elapsed = drive(&storage, &work, &timings);
    let segments = work.iter().map(|(_, s)| s.len()).sum();
    let puts = count_files(&disk.path().join("bucket")) as u64;
    let mb_s = bytes as f64 / (1024.0 * 1024.0) / elapsed.as_secs_f64();
    report(
        "fs",
        work.len(),
        segments,
        bytes,
        elapsed,
        &timings,
        puts,
        &format!(" copy_mb_s={copy_mb_s:.1} fs_ratio={:.2}", mb_s / copy_mb_s),
    );
}

/// Counts the objects (files) under `dir`, skipping the backend's temporary directory.
fn count_files(dir: &Path) -> usize {
    let mut count = 0;
    let mut stack: Vec<PathBuf> = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                if entry.file_name() != ".tmp" {
                    stack.push(entry.path());
                }
            } else {
                count += 1;
            }
        }
    }
    count
}

fn s3_case() {
    let scratch = scratch_root();
    let work = big_work(scratch.path());
    let bytes = segment_bytes(&work);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(S3TestServer::start()).unwrap();
    let backend = RequestCounting {
        inner: runtime.block_on(server.backend("bench")).unwrap(),
        requests: AtomicU64::new(0),
        fence_lists: AtomicU64::new(0),
    };
    let storage = ActorStorage::start(backend, config(scratch.path())).unwrap();
    let timings = Arc::new(Mutex::new(Timings::default()));
    let elapsed = drive(&storage, &work, &timings);
    let segments: usize = work.iter().map(|(_, s)| s.len()).sum();
    let puts = count_files(&server.root().join(libsql_wal_testkit::TEST_BUCKET)) as u64;
    let counted = storage.backend();
    let per_segment = |n: &AtomicU64| n.load(Ordering::Relaxed) as f64 / segments as f64;
    report(
        "s3",
        work.len(),
        segments,
        bytes,
        elapsed,
        &timings,
        puts,
        &format!(
            " requests_per_segment={:.2} fence_lists_per_segment={:.2}",
            per_segment(&counted.requests),
            per_segment(&counted.fence_lists)
        ),
    );
}

/// 10 namespaces; the writer makes one segment every 2 ms (500/s), the backend takes one
/// upload every 20 ms (50/s). `length` multiplies the number of segments. Segments are made as
/// the writer goes and dropped once handed over (as the WAL does), so the peak memory is the
/// pipeline's.
fn slow_case(length: u64) {
    let scratch = scratch_root();
    let per_namespace = 100 * length;
    let frames = 2;
    let names: Vec<NamespaceName> = (0..10)
        .map(|i| format!("ns-{i}").parse().unwrap())
        .collect();
    let backend = CountingBackend::new(Some(Duration::from_millis(20)));
    let storage = ActorStorage::start(backend, config(scratch.path())).unwrap();
    let timings = Arc::new(Mutex::new(Timings::default()));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut next_at = started;
    for round in 0..per_namespace {
        for namespace in &names {
            let segment = make_segments(
                scratch.path(),
                namespace.as_str(),
                round * frames + 1,
                1,
                frames,
            )
            .remove(0);
            next_at += Duration::from_millis(2);
            if let Some(wait) = next_at.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let on_stored = record_latency(&done, &timings);
            let generation = generation_of(namespace, &segment);
            futures::executor::block_on(storage.store(&generation, segment, None, on_stored))
                .unwrap();
        }
    }
    let segments = (per_namespace * names.len() as u64) as usize;
    let elapsed = elapsed_until_all_durable(&done, segments, &timings, started);
    let bytes = segments as u64 * frames * FRAME_SIZE as u64;
    let puts = storage.backend().puts.load(Ordering::Relaxed);
    report(
        "slow",
        names.len(),
        segments,
        bytes,
        elapsed,
        &timings,
        puts,
        &format!(" run={length}x"),
    );
}

fn main() {
    if let Ok(case) = std::env::var(CASE_VAR) {
        match case.as_str() {
            "null" => null_case(),
            "fs" => fs_case(),
            "s3" => s3_case(),
            "slow-1" => slow_case(1),
            "slow-2" => slow_case(2),
            other => panic!("unknown case {other}"),
        }
        return;
    }
    // `cargo bench` passes `--bench`; a case name on the command line runs only that case.
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    for case in ["null", "fs", "s3", "slow-1", "slow-2"] {
        if !only.is_empty() && !only.iter().any(|o| case.starts_with(o.as_str())) {
            continue;
        }
        let output = std::process::Command::new(std::env::current_exe().unwrap())
            .env(CASE_VAR, case)
            .stderr(std::process::Stdio::inherit())
            .output()
            .unwrap();
        assert!(output.status.success(), "case {case} failed: {output:?}");
        print!("{}", String::from_utf8_lossy(&output.stdout));
    }
}
