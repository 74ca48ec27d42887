//! `libsql-wal compact` and `libsql-wal retain`: the bucket maintenance a server runs on its
//! own (`--maintenance-interval`), run once by hand on one namespace or all, on each one's
//! newest generation (older ones are frozen: a newer generation may continue from any point of
//! them); `retain` also drops whole dead generations older than the window. `--dry-run` prints what the real run would write and delete (objects, bytes, PUT and
//! DELETE requests), planned on the same listing rules, and changes nothing.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};
use libsql_wal_backend::{
    apply_retention, compact, dead_generations, drop_dead_generations, now_ms, plan_compaction_of,
    plan_retention, Backend, BackendExt, CompactionStrategy, Generation, NamespaceName, SegmentKey,
};
use serde::Serialize;

use crate::bucket::OnBackend;
use crate::history::{object_lens, objects_of, selected_namespaces};
use crate::output::{bytes_text, failed, print_json, progress_bar, unless_problems};
use crate::settings::{parse_duration, BucketArgs, StorageLocation};

/// Which namespaces a maintenance command works on.
#[derive(Debug, Args)]
pub struct Selection {
    /// The namespace.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    namespace: Option<NamespaceName>,
    /// Every namespace of the bucket.
    #[arg(long)]
    all: bool,
    /// Print what would be written and deleted; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// The bucket.
    #[command(flatten)]
    bucket: BucketArgs,
}

/// How segments are compacted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Strategy {
    /// Size-tiered, 8 segments per merge.
    Tiered,
    /// Every segment twice the span of the next newer.
    Logarithmic,
}

/// `libsql-wal compact`'s flags.
#[derive(Debug, Args)]
pub struct CompactArgs {
    /// What to compact.
    #[command(flatten)]
    selection: Selection,
    /// How to group segments.
    #[arg(long, value_enum, default_value = "tiered")]
    strategy: Strategy,
}

/// `libsql-wal retain`'s flags.
#[derive(Debug, Args)]
pub struct RetainArgs {
    /// What to prune.
    #[command(flatten)]
    selection: Selection,
    /// Keep every restore point this far back (`7d`, `12h`, ...); older segments that a
    /// compacted one covers are deleted.
    #[arg(long, value_parser = parse_duration)]
    keep_for: Duration,
    /// Keep at least this many of the newest restore points, however old.
    #[arg(long, default_value_t = 0)]
    keep_points: usize,
}

/// What a maintenance command did (or would do) to one namespace.
#[derive(Debug, Default, Serialize)]
struct Maintained {
    namespace: String,
    generation: Option<u64>,
    /// Segments written (compacted ones), each with the segments it replaces in restores.
    written: Vec<Written>,
    /// Segments deleted.
    deleted: Vec<String>,
    /// Compact: bytes written (data and index), or in a dry run the bytes of the sources (data
    /// and index: the merged segment is no larger). Retain: the bytes deleted (data and index),
    /// sized from the listing before the deletions.
    bytes: u64,
    put_requests: usize,
    delete_requests: usize,
    /// Retain: the compacted segments verified (downloaded) because they cover what goes.
    verified: Vec<String>,
    /// Retain: index objects without data that were deleted (uploads that never finished);
    /// a dry run does not predict them.
    orphan_indexes: Vec<String>,
    /// Retain: the dead generations dropped whole (branches no restore inside the window
    /// reaches; see `drop_dead_generations`).
    dropped_generations: Vec<u64>,
    /// Why nothing was done, if so.
    skipped: Option<String>,
    /// What failed, if the command failed on this namespace (the others go on).
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct Written {
    key: String,
    sources: Vec<String>,
}

#[derive(Debug, Serialize)]
struct MaintainOutput {
    command: &'static str,
    dry_run: bool,
    namespaces: Vec<Maintained>,
}

/// What a maintenance command does to one generation.
#[derive(Debug, Clone, Copy)]
enum Job {
    Compact(CompactionStrategy),
    Retain {
        keep_for: Duration,
        keep_points: usize,
    },
}

/// Runs `compact`.
pub fn compact_command(args: CompactArgs) -> ExitCode {
    let strategy = match args.strategy {
        Strategy::Tiered => CompactionStrategy::default(),
        Strategy::Logarithmic => CompactionStrategy::Logarithmic,
    };
    start(args.selection, Job::Compact(strategy))
}

/// Runs `retain`.
pub fn retain_command(args: RetainArgs) -> ExitCode {
    start(
        args.selection,
        Job::Retain {
            keep_for: args.keep_for,
            keep_points: args.keep_points,
        },
    )
}

fn start(selection: Selection, job: Job) -> ExitCode {
    selection.bucket.run(Maintain {
        namespace: selection.namespace,
        dry_run: selection.dry_run,
        json: selection.json,
        job,
    })
}

struct Maintain {
    namespace: Option<NamespaceName>,
    dry_run: bool,
    json: bool,
    job: Job,
}

impl OnBackend for Maintain {
    fn run<B: Backend>(
        self,
        backend: B,
        _: &StorageLocation,
        runtime: tokio::runtime::Runtime,
    ) -> ExitCode {
        let scratch = match tempfile::tempdir() {
            Ok(dir) => dir,
            Err(e) => return failed(format!("cannot make a scratch directory: {e}")),
        };
        let now = now_ms();
        let outcome = runtime.block_on(async {
            let namespaces = selected_namespaces(&backend, self.namespace.as_ref()).await?;
            let mut done = Vec::with_capacity(namespaces.len());
            for namespace in namespaces {
                let mut maintained = Maintained {
                    namespace: namespace.to_string(),
                    ..Maintained::default()
                };
                if let Err(e) = self
                    .maintain_namespace(&backend, &namespace, now, scratch.path(), &mut maintained)
                    .await
                {
                    maintained.error = Some(e.to_string());
                }
                done.push(maintained);
            }
            Ok::<_, libsql_wal_backend::Error>(done)
        });
        let namespaces = match outcome {
            Ok(namespaces) => namespaces,
            Err(e) => return failed(e),
        };
        let output = MaintainOutput {
            command: match self.job {
                Job::Compact(_) => "compact",
                Job::Retain { .. } => "retain",
            },
            dry_run: self.dry_run,
            namespaces,
        };
        let printed = if self.json {
            print_json(&output)
        } else {
            self.print(&output);
            ExitCode::SUCCESS
        };
        let clean = output.namespaces.iter().all(|m| m.error.is_none());
        unless_problems(clean, printed)
    }
}

impl Maintain {
    /// Prints what was done (or would be) to each namespace.
    fn print(&self, output: &MaintainOutput) {
        for m in &output.namespaces {
            if let Some(e) = &m.error {
                println!("{}: FAILED: {e}", m.namespace);
                continue;
            }
            if let Some(why) = &m.skipped {
                println!("{}: skipped: {why}", m.namespace);
                continue;
            }
            match (self.job, self.dry_run) {
                (Job::Compact(_), dry_run) => println!(
                    "{}: {} {} compacted segments ({}{}{}; {} PUT requests)",
                    m.namespace,
                    if dry_run { "would write" } else { "wrote" },
                    m.written.len(),
                    if dry_run { "from " } else { "" },
                    bytes_text(m.bytes),
                    if dry_run { " of sources" } else { "" },
                    m.put_requests
                ),
                (Job::Retain { .. }, dry_run) => println!(
                    "{}: {}delete {} segments ({}; {} DELETE requests), verifying {} compacted segments first{}",
                    m.namespace,
                    if dry_run { "would " } else { "" },
                    m.deleted.len(),
                    bytes_text(m.bytes),
                    m.delete_requests,
                    m.verified.len(),
                    if m.orphan_indexes.is_empty() {
                        String::new()
                    } else {
                        format!("; {} orphan indexes deleted", m.orphan_indexes.len())
                    }
                ),
            }
            if !m.dropped_generations.is_empty() {
                let numbers: Vec<String> = m
                    .dropped_generations
                    .iter()
                    .map(ToString::to_string)
                    .collect();
                println!(
                    "  {} dead generations {}",
                    if self.dry_run {
                        "would drop"
                    } else {
                        "dropped"
                    },
                    numbers.join(", ")
                );
            }
            for w in &m.written {
                println!("  {} <- {}", w.key, w.sources.join(", "));
            }
            for d in &m.deleted {
                println!("  - {d}");
            }
        }
    }

    /// Runs (or plans) the job on `namespace`'s newest generation.
    async fn maintain_namespace<B: Backend>(
        &self,
        backend: &B,
        namespace: &NamespaceName,
        now: u64,
        scratch: &std::path::Path,
        out: &mut Maintained,
    ) -> libsql_wal_backend::Result<()> {
        let config = backend.default_config();
        let newest = backend.newest_generation(config, namespace).await?;
        let Some(generation) = newest.and_then(|r| r.log(namespace)) else {
            out.skipped = Some("the bucket holds no live generation of it".into());
            return Ok(());
        };
        out.generation = Some(generation.number);
        let keys = backend.list_segments(config, &generation, u64::MAX).await?;
        match self.job {
            Job::Compact(strategy) if self.dry_run => {
                let (_, groups) = plan_compaction_of(&generation, &keys, strategy)?;
                for group in groups {
                    let Some(key) = SegmentKey::merging(&group) else {
                        continue;
                    };
                    out.bytes += stored_bytes(backend, &generation, &group).await?;
                    out.put_requests += 2;
                    out.written.push(Written {
                        key: key.to_string(),
                        sources: group.iter().map(ToString::to_string).collect(),
                    });
                }
            }
            Job::Compact(strategy) => {
                let bar = progress_bar(0, "groups");
                let report = compact(
                    backend,
                    config,
                    &generation,
                    strategy,
                    scratch,
                    |done, of| {
                        bar.set_length(of as u64);
                        bar.set_position(done as u64);
                    },
                )
                .await;
                bar.finish_and_clear();
                for group in report?.groups {
                    out.bytes += group.bytes;
                    out.put_requests += 2;
                    out.written.push(Written {
                        key: group.key.to_string(),
                        sources: group.sources.iter().map(ToString::to_string).collect(),
                    });
                }
            }
            Job::Retain {
                keep_for,
                keep_points,
            } => {
                // A writer that took the namespace over may continue from any point of this
                // generation: retention leaves it alone then, as the server's maintenance does.
                if let Some(newer) = backend
                    .newer_generation(config, namespace, generation.number)
                    .await?
                {
                    out.skipped = Some(format!(
                        "generation {newer} took the namespace over; generation {} is kept whole",
                        generation.number
                    ));
                    return Ok(());
                }
                let window = retention_window(&keys, keep_for, keep_points, now);
                let plan = plan_retention(&keys, window, now);
                let mut planned: Vec<SegmentKey> = plan.keys().copied().collect();
                planned.sort_by_key(|k| (k.start_frame_no, k.end_frame_no, k.timestamp_ms));
                // Sized before they go.
                out.bytes = stored_bytes(backend, &generation, &planned).await?;
                let deleted = if self.dry_run {
                    let mut covers: Vec<SegmentKey> = plan.values().copied().collect();
                    covers.sort_by_key(|k| (k.start_frame_no, k.end_frame_no, k.timestamp_ms));
                    covers.dedup();
                    out.verified = covers.iter().map(ToString::to_string).collect();
                    planned
                } else {
                    let report = apply_retention(backend, config, &generation, window, now).await?;
                    out.verified = report.verified.iter().map(ToString::to_string).collect();
                    out.orphan_indexes = report
                        .orphan_indexes
                        .iter()
                        .map(ToString::to_string)
                        .collect();
                    report.deleted
                };
                out.delete_requests = 2 * deleted.len() + out.orphan_indexes.len();
                out.deleted = deleted.iter().map(ToString::to_string).collect();
                out.dropped_generations = if self.dry_run {
                    dead_generations(backend, config, namespace, window, now).await?
                } else {
                    drop_dead_generations(backend, config, namespace, window, now).await?
                };
            }
        }
        Ok(())
    }
}

/// The retention window: `keep_for`, widened so that the `keep_points` newest restore points
/// (segment ends: a compacted segment and the newest of its sources end at one point) stay
/// inside it.
fn retention_window(
    keys: &[SegmentKey],
    keep_for: Duration,
    keep_points: usize,
    now: u64,
) -> Duration {
    let mut by_end: Vec<&SegmentKey> = keys.iter().collect();
    // Of the segments ending at one point, the one sealed first: the window must reach it.
    by_end.sort_by_key(|k| (std::cmp::Reverse(k.end_frame_no), k.timestamp_ms));
    by_end.dedup_by_key(|k| k.end_frame_no);
    match keep_points.checked_sub(1).and_then(|i| by_end.get(i)) {
        Some(oldest_kept) => keep_for.max(Duration::from_millis(
            now.saturating_sub(oldest_kept.timestamp_ms),
        )),
        None if keep_points > 0 => Duration::from_millis(now),
        None => keep_for,
    }
}

/// The summed length of the data and index objects of `keys`.
async fn stored_bytes<B: Backend>(
    backend: &B,
    generation: &Generation,
    keys: &[SegmentKey],
) -> libsql_wal_backend::Result<u64> {
    let lens = object_lens(backend, objects_of(generation, keys).collect()).await?;
    Ok(lens.iter().sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(end: u64, timestamp_ms: u64) -> SegmentKey {
        SegmentKey {
            start_frame_no: end,
            end_frame_no: end,
            timestamp_ms,
        }
    }

    #[test]
    fn keep_points_widens_the_window_to_the_oldest_point_kept() {
        let keys = [key(3, 300), key(2, 200), key(1, 100)];
        let day = Duration::from_secs(86_400);
        assert_eq!(retention_window(&keys, day, 0, 1_000), day);
        let short = Duration::from_millis(10);
        assert_eq!(
            retention_window(&keys, short, 2, 1_000),
            Duration::from_millis(800)
        );
        assert_eq!(
            retention_window(&keys, short, 5, 1_000),
            Duration::from_millis(1_000),
            "more points asked for than stored: keep everything"
        );
        // A compacted segment ending at point 3 (sealed later than its source): still two
        // points back is point 2.
        let compacted = SegmentKey {
            start_frame_no: 1,
            end_frame_no: 3,
            timestamp_ms: 350,
        };
        let with_compacted = [compacted, key(3, 300), key(2, 200), key(1, 100)];
        assert_eq!(
            retention_window(&with_compacted, short, 2, 1_000),
            Duration::from_millis(800)
        );
    }
}
