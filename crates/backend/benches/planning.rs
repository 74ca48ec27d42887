//! `cargo xtask bench planning`: chain, maximal-segment, compaction and retention planning over
//! 100,000 segment keys (a long run of small segments, with compacted segments covering runs of
//! 8, 64, 512, ... of them, as tiered compaction leaves a bucket), against sorting the same keys
//! (`sort_unstable` of a clone) in the same run. Criterion reports each; the summary lines
//! `planning-bench keys=100000 <function>_ms=.. sort_ms=.. ratio=..` give the median of
//! `ROUNDS` timed runs of each against the median of as many sorts.

// Benches unwrap freely: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::Criterion;
use libsql_wal_backend::{
    maximal_segments, plan_chain, plan_chain_after, plan_compaction, plan_retention,
    CompactionStrategy, SegmentKey,
};

/// Keys planned over.
const KEYS: usize = 100_000;
/// Frames per original segment.
const FRAMES_PER_SEGMENT: u64 = 10;
/// Originals per compacted segment of the first tier; each tier above merges as many of the
/// one below.
const FAN_IN: u64 = 8;
/// Timed runs per function for the summary line; the median is reported.
const ROUNDS: usize = 11;

/// Returns the original segment `i` (from 0), sealed a second after the previous one.
fn original(i: u64) -> SegmentKey {
    SegmentKey {
        start_frame_no: i * FRAMES_PER_SEGMENT + 1,
        end_frame_no: (i + 1) * FRAMES_PER_SEGMENT,
        timestamp_ms: 1_700_000_000_000 + i * 1000,
    }
}

/// Returns `KEYS` keys: originals, and after every `FAN_IN^t`-th one a compacted segment
/// covering the last `FAN_IN^t` (sealed with the newest), in an order shuffled with a fixed
/// seed. Planning takes keys in any order; a listing's order is already sorted, which would let
/// the sort it is compared with finish in one pass.
fn bucket_keys() -> Vec<SegmentKey> {
    let mut keys = Vec::with_capacity(KEYS);
    let mut i = 0;
    'fill: loop {
        let newest = original(i);
        keys.push(newest);
        let mut run = FAN_IN;
        while (i + 1) % run == 0 {
            if keys.len() == KEYS {
                break 'fill;
            }
            keys.push(SegmentKey {
                start_frame_no: original(i + 1 - run).start_frame_no,
                ..newest
            });
            run *= FAN_IN;
        }
        if keys.len() == KEYS {
            break;
        }
        i += 1;
    }
    // Fisher-Yates with a 64-bit LCG: the same order every run.
    let mut state: u64 = 0x5eed;
    for at in (1..keys.len()).rev() {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        keys.swap(at, (state >> 33) as usize % (at + 1));
    }
    keys
}

/// Returns the median time of `ROUNDS` runs of `f`.
fn median_ms<T>(mut f: impl FnMut() -> T) -> f64 {
    let mut samples: Vec<Duration> = (0..ROUNDS)
        .map(|_| {
            let started = Instant::now();
            black_box(f());
            started.elapsed()
        })
        .collect();
    samples.sort();
    samples[ROUNDS / 2].as_secs_f64() * 1000.0
}

fn main() {
    let keys = bucket_keys();
    assert_eq!(keys.len(), KEYS);
    let newest = keys.iter().map(|k| k.end_frame_no).max().unwrap();
    let middle = newest / 2;
    // A namespace never compacted: a chain of KEYS small segments.
    let chain: Vec<SegmentKey> = (0..KEYS as u64).map(original).collect();
    // The window holds the newest tenth of the history.
    let now_ms = keys.iter().map(|k| k.timestamp_ms).max().unwrap();
    let window = Duration::from_secs(KEYS as u64 / 10);
    let tiered = CompactionStrategy::Tiered { fan_in: 8 };

    let mut criterion = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    let mut group = criterion.benchmark_group("planning");
    group.bench_function("sort", |b| {
        b.iter(|| {
            let mut sorted = keys.clone();
            sorted.sort_unstable();
            sorted
        })
    });
    group.bench_function("plan_chain", |b| b.iter(|| plan_chain(&keys, newest)));
    group.bench_function("plan_chain_after", |b| {
        b.iter(|| plan_chain_after(&keys, middle, newest))
    });
    group.bench_function("maximal_segments", |b| b.iter(|| maximal_segments(&keys)));
    group.bench_function("plan_compaction_tiered", |b| {
        b.iter(|| plan_compaction(&chain, tiered))
    });
    group.bench_function("plan_compaction_logarithmic", |b| {
        b.iter(|| plan_compaction(&chain, CompactionStrategy::Logarithmic))
    });
    group.bench_function("plan_retention", |b| {
        b.iter(|| plan_retention(&keys, window, now_ms))
    });
    group.finish();
    criterion.final_summary();

    // Sanity: the plans are what this key set implies, so the timings are of real work.
    let full = plan_chain(&keys, newest).unwrap();
    assert!(
        full.len() < 64,
        "compacted tiers make a short chain: {}",
        full.len()
    );
    assert!(!plan_retention(&keys, window, now_ms).is_empty());

    let sort_ms = median_ms(|| {
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        sorted
    });
    let timed: [(&str, f64); 6] = [
        ("plan_chain", median_ms(|| plan_chain(&keys, newest))),
        (
            "plan_chain_after",
            median_ms(|| plan_chain_after(&keys, middle, newest)),
        ),
        ("maximal_segments", median_ms(|| maximal_segments(&keys))),
        (
            "plan_compaction_tiered",
            median_ms(|| plan_compaction(&chain, tiered)),
        ),
        (
            "plan_compaction_logarithmic",
            median_ms(|| plan_compaction(&chain, CompactionStrategy::Logarithmic)),
        ),
        (
            "plan_retention",
            median_ms(|| plan_retention(&keys, window, now_ms)),
        ),
    ];
    for (name, ms) in timed {
        println!(
            "planning-bench keys={KEYS} {name}_ms={ms:.3} sort_ms={sort_ms:.3} ratio={:.2}",
            ms / sort_ms
        );
    }
}
