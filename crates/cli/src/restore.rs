//! `libsql-wal restore NS OUT.db [--at TIME | --frame N | --generation G]`: rebuilds a
//! namespace's database from the bucket alone into a new file, with a progress bar on a
//! terminal; `--dry-run` prints the plan (the point, the segments, their objects and bytes) and
//! fetches nothing but listings. Reads only: a live server's bucket is not disturbed.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use clap::Args;
use libsql_wal::{plan_restore, restore, RestoreOptions, RestoreProgress, RestoreTarget};
use libsql_wal_backend::{index_object, segment_object, Backend, NamespaceName};
use libsql_wal_supervisor::{ActorStorage, StorageConfig};
use serde::Serialize;

use crate::bucket::OnBackend;
use crate::output::{
    bytes_text, failed, parse_time, print_json, progress_bar, time_text, usage, Table,
};
use crate::settings::{BucketArgs, StorageLocation};

/// `libsql-wal restore`'s flags.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The namespace.
    namespace: NamespaceName,
    /// The database file to write; it must not exist.
    out: PathBuf,
    /// Restore the state after the newest segment sealed at or before this time (RFC 3339).
    #[arg(long, conflicts_with_all = ["frame", "generation"], value_parser = parse_time)]
    at: Option<u64>,
    /// Restore the state at the newest stored point at or before this frame_no.
    #[arg(long)]
    frame: Option<u64>,
    /// Restore from this generation's history (its end, or `--frame` in it), even if it is no
    /// longer the newest.
    #[arg(long)]
    generation: Option<u64>,
    /// Print what would be fetched, and fetch nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Segments downloaded at once.
    #[arg(long, default_value_t = RestoreOptions::default().concurrency)]
    concurrency: usize,
    /// The bucket.
    #[command(flatten)]
    bucket: BucketArgs,
}

/// Runs `restore`.
pub fn restore_command(args: RestoreArgs) -> ExitCode {
    let target = match (args.at, args.frame, args.generation) {
        (Some(at), _, _) => RestoreTarget::TimestampMs(at),
        (None, frame, Some(generation)) => RestoreTarget::InGeneration {
            generation,
            frame_no: frame.unwrap_or(u64::MAX),
        },
        (None, Some(frame), None) => RestoreTarget::FrameNo(frame),
        (None, None, None) => RestoreTarget::Latest,
    };
    if !args.dry_run && args.out.exists() {
        return usage(format!(
            "{} exists: a restore writes a new file only",
            args.out.display()
        ));
    }
    args.bucket.clone().run(Restore { target, args })
}

struct Restore {
    target: RestoreTarget,
    args: RestoreArgs,
}

/// What `--dry-run` prints.
#[derive(Debug, Serialize)]
struct PlanOutput {
    namespace: String,
    target: String,
    end_frame_no: u64,
    timestamp_ms: u64,
    time: String,
    segments: Vec<PlannedSegment>,
    /// Objects a restore fetches at most: each segment's index and data.
    objects: usize,
    /// Their bytes.
    bytes: u64,
}

#[derive(Debug, Serialize)]
struct PlannedSegment {
    generation: u64,
    key: String,
    start_frame_no: u64,
    end_frame_no: u64,
    bytes: u64,
}

/// What a restore prints when done.
#[derive(Debug, Serialize)]
struct RestoreOutput {
    namespace: String,
    target: String,
    out: PathBuf,
    end_frame_no: u64,
    timestamp_ms: u64,
    time: String,
    pages: u32,
    bytes: u64,
    segments_in_chain: usize,
    objects_fetched: usize,
    bytes_downloaded: u64,
    seconds: f64,
}

impl OnBackend for Restore {
    fn run<B: Backend>(
        self,
        backend: B,
        _: &StorageLocation,
        runtime: tokio::runtime::Runtime,
    ) -> ExitCode {
        // The storage pipeline's scratch files (none for a restore) go to a directory of
        // this run's own, never into a live server's.
        let scratch = match tempfile::tempdir() {
            Ok(dir) => dir,
            Err(e) => return failed(format!("cannot make a scratch directory: {e}")),
        };
        let storage = match ActorStorage::<B, std::fs::File>::start(
            backend,
            StorageConfig {
                scratch_dir: scratch.path().join("scratch"),
                ..StorageConfig::default()
            },
        ) {
            Ok(storage) => storage,
            Err(e) => return failed(format!("cannot start the storage pipeline: {e}")),
        };
        if self.args.dry_run {
            return self.dry_run(&storage, &runtime);
        }
        let bar = progress_bar(0, "segments");
        let progress = {
            let bar = bar.clone();
            let started = Instant::now();
            Arc::new(move |p: RestoreProgress| {
                bar.set_length(p.segments_total as u64);
                bar.set_position(p.segments_done as u64);
                let seconds = started.elapsed().as_secs_f64().max(1e-3);
                bar.set_message(format!(
                    "{} at {}/s",
                    bytes_text(p.bytes_done),
                    bytes_text((p.bytes_done as f64 / seconds) as u64)
                ));
            })
        };
        let options = RestoreOptions {
            concurrency: self.args.concurrency.max(1),
            progress: Some(progress),
        };
        if !self.args.json {
            eprintln!(
                "restoring {} ({}) into {}",
                self.args.namespace,
                self.target,
                self.args.out.display()
            );
        }
        let started = Instant::now();
        let report = restore(
            &storage,
            &self.args.namespace,
            self.target,
            &self.args.out,
            &options,
            None,
        );
        bar.finish_and_clear();
        let report = match report {
            Ok(report) => report,
            Err(e) => return failed(e),
        };
        let output = RestoreOutput {
            namespace: self.args.namespace.to_string(),
            target: self.target.to_string(),
            out: self.args.out.clone(),
            end_frame_no: report.end_frame_no,
            timestamp_ms: report.timestamp_ms,
            time: time_text(report.timestamp_ms),
            pages: report.db_pages,
            bytes: std::fs::metadata(&self.args.out).map_or(0, |m| m.len()),
            segments_in_chain: report.chain_len,
            objects_fetched: report.objects_fetched,
            bytes_downloaded: report.bytes_downloaded,
            seconds: started.elapsed().as_secs_f64(),
        };
        if self.args.json {
            return print_json(&output);
        }
        println!(
            "restored {} at frame {} (sealed {}) into {}: {} pages, {}; {} segments in the chain, {} objects fetched ({}), in {:.2} s",
            output.namespace,
            output.end_frame_no,
            output.time,
            output.out.display(),
            output.pages,
            bytes_text(output.bytes),
            output.segments_in_chain,
            output.objects_fetched,
            bytes_text(output.bytes_downloaded),
            output.seconds
        );
        ExitCode::SUCCESS
    }
}

impl Restore {
    fn dry_run<B: Backend>(
        &self,
        storage: &ActorStorage<B, std::fs::File>,
        runtime: &tokio::runtime::Runtime,
    ) -> ExitCode {
        let plan = match plan_restore(storage, &self.args.namespace, self.target, None) {
            Ok(plan) => plan,
            Err(e) => return failed(e),
        };
        let backend = storage.backend();
        let config = backend.default_config();
        let sized = runtime.block_on(async {
            let mut segments = Vec::with_capacity(plan.segments.len());
            for (generation, key) in &plan.segments {
                let data = backend
                    .stat(config, &segment_object(generation, key))
                    .await?;
                let index = backend.stat(config, &index_object(generation, key)).await?;
                segments.push(PlannedSegment {
                    generation: generation.number,
                    key: key.to_string(),
                    start_frame_no: key.start_frame_no,
                    end_frame_no: key.end_frame_no,
                    bytes: data.len + index.len,
                });
            }
            Ok::<_, libsql_wal_backend::Error>(segments)
        });
        let segments = match sized {
            Ok(segments) => segments,
            Err(e) => return failed(e),
        };
        let output = PlanOutput {
            namespace: self.args.namespace.to_string(),
            target: self.target.to_string(),
            end_frame_no: plan.end_frame_no,
            timestamp_ms: plan.timestamp_ms,
            time: time_text(plan.timestamp_ms),
            objects: 2 * segments.len(),
            bytes: segments.iter().map(|s| s.bytes).sum(),
            segments,
        };
        if self.args.json {
            return print_json(&output);
        }
        println!(
            "would restore {} at frame {} (sealed {}): {} segments, at most {} objects, {}",
            output.namespace,
            output.end_frame_no,
            output.time,
            output.segments.len(),
            output.objects,
            bytes_text(output.bytes)
        );
        let mut table = Table::new(&["GENERATION", "FRAMES", "SIZE", "KEY"]);
        for s in &output.segments {
            table.row(vec![
                s.generation.to_string(),
                format!("{}..={}", s.start_frame_no, s.end_frame_no),
                bytes_text(s.bytes),
                s.key.clone(),
            ]);
        }
        table.print();
        ExitCode::SUCCESS
    }
}
