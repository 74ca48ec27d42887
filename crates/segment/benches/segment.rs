//! `cargo xtask bench segment`: append throughput of the current segment against plain
//! sequential `write_all` of the same pages in the same run, plus seal time and sealed-page
//! lookup time. Prints `segment-bench ...` summary lines.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::Utc;
use libsql_wal_segment::format::PAGE_SIZE;
use libsql_wal_segment::{CurrentSegment, SealedSegment, StdIo};
use uuid::Uuid;

/// Pages appended per append measurement: 64 MiB.
const APPEND_FRAMES: usize = 16 * 1024;
/// Measurement rounds; the median is reported.
const ROUNDS: usize = 7;
/// Frames in the segment the seal and lookup cases use.
const SEAL_FRAMES: usize = 10_000;
/// Random page lookups timed.
const LOOKUPS: usize = 200_000;

type BenchResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn mb_per_s(bytes: usize, elapsed: Duration) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / elapsed.as_secs_f64()
}

/// A small deterministic random source (xorshift64*), so runs are comparable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn pages(count: usize) -> Vec<Vec<u8>> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    (0..count)
        .map(|_| (0..PAGE_SIZE).map(|_| rng.next() as u8).collect())
        .collect()
}

fn append_ours(dir: &Path, pool: &[Vec<u8>], tx_frames: usize) -> BenchResult<Duration> {
    let path = dir.join("ours");
    let segment = CurrentSegment::create(&StdIo, &path, 1, Uuid::new_v4())?;
    let started = Instant::now();
    for tx in 0..APPEND_FRAMES / tx_frames {
        let frames = (0..tx_frames).map(|i| {
            let n = tx * tx_frames + i;
            (n as u32 % 50_000 + 1, &pool[n % pool.len()][..])
        });
        segment.insert_frames(frames, Some(50_000))?;
    }
    let elapsed = started.elapsed();
    drop(segment);
    std::fs::remove_file(&path)?;
    Ok(elapsed)
}

fn append_raw(dir: &Path, pool: &[Vec<u8>], tx_frames: usize) -> BenchResult<Duration> {
    let path = dir.join("raw");
    let mut file = File::create(&path)?;
    let mut buf = Vec::with_capacity(tx_frames * PAGE_SIZE);
    let started = Instant::now();
    for tx in 0..APPEND_FRAMES / tx_frames {
        buf.clear();
        for i in 0..tx_frames {
            buf.extend_from_slice(&pool[(tx * tx_frames + i) % pool.len()]);
        }
        file.write_all(&buf)?;
    }
    let elapsed = started.elapsed();
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(elapsed)
}

fn bench_append(dir: &Path, pool: &[Vec<u8>]) -> BenchResult {
    for tx_frames in [1, 10, 100] {
        // One warm-up round of each, not counted: it faults in the buffers and the page cache.
        append_raw(dir, pool, tx_frames)?;
        append_ours(dir, pool, tx_frames)?;
        let mut ours = Vec::new();
        let mut raw = Vec::new();
        for _ in 0..ROUNDS {
            ours.push(append_ours(dir, pool, tx_frames)?);
            raw.push(append_raw(dir, pool, tx_frames)?);
        }
        let bytes = APPEND_FRAMES * PAGE_SIZE;
        let ours = mb_per_s(bytes, median(ours));
        let raw = mb_per_s(bytes, median(raw));
        println!(
            "segment-bench append tx_frames={tx_frames} ours_mb_s={ours:.0} raw_mb_s={raw:.0} ratio={:.2}",
            ours / raw
        );
    }
    Ok(())
}

fn bench_seal_and_lookup(dir: &Path, pool: &[Vec<u8>]) -> BenchResult {
    let distinct_pages = SEAL_FRAMES as u32 / 2;
    let mut seal_times = Vec::new();
    let mut sealed = None;
    for round in 0..3 {
        let path = dir.join(format!("seal-{round}"));
        let segment = CurrentSegment::create(&StdIo, &path, 1, Uuid::new_v4())?;
        for chunk in 0..SEAL_FRAMES / 100 {
            let frames = (0..100).map(|i| {
                let n = chunk * 100 + i;
                (n as u32 % distinct_pages + 1, &pool[n % pool.len()][..])
            });
            segment.insert_frames(frames, Some(distinct_pages))?;
        }
        // Flush the frames first so the figure is the seal's own work: index, header, fsyncs.
        segment.sync()?;
        let started = Instant::now();
        let segment = segment
            .seal(Utc::now())?
            .ok_or("the segment has committed frames")?;
        seal_times.push(started.elapsed());
        sealed = Some(segment);
    }
    println!(
        "segment-bench seal frames={SEAL_FRAMES} ms={:.2}",
        median(seal_times).as_secs_f64() * 1000.0
    );

    let sealed = sealed.ok_or("sealed above")?;
    let sealed = SealedSegment::open(&StdIo, sealed.path())?;
    let mut rng = Rng(42);
    let page_nos: Vec<u32> = (0..LOOKUPS)
        .map(|_| (rng.next() % u64::from(distinct_pages)) as u32 + 1)
        .collect();
    let mut buf = vec![0; PAGE_SIZE];
    let mut samples = Vec::new();
    for _ in 0..ROUNDS {
        let started = Instant::now();
        for &page_no in &page_nos {
            if !sealed.read_page(page_no, &mut buf)? {
                return Err(format!("page {page_no} missing from the sealed segment").into());
            }
        }
        samples.push(started.elapsed());
    }
    println!(
        "segment-bench lookup ns_per_page={:.0}",
        median(samples).as_nanos() as f64 / LOOKUPS as f64
    );
    Ok(())
}

fn main() -> BenchResult {
    // `cargo bench` passes `--bench`; this harness takes no options.
    let dir = tempfile::tempdir()?;
    let pool = pages(256);
    bench_append(dir.path(), &pool)?;
    bench_seal_and_lookup(dir.path(), &pool)?;
    Ok(())
}
