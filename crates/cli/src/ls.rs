//! `libsql-wal ls [NS]`: the namespaces of a bucket (generation, durable frame_no, segments,
//! bytes, oldest and newest restorable point), or one namespace's generations and segments.
//! Reads only: listings, generation records, and one `HEAD` per object for its size.

use std::collections::HashMap;
use std::process::ExitCode;

use clap::Args;
use libsql_wal_backend::{
    segment_object, strictly_contains, Backend, GenerationKind, NamespaceName,
};
use serde::Serialize;

use crate::bucket::OnBackend;
use crate::history::{
    object_lens, objects_of, part_of, read_history, selected_namespaces, History, Point,
};
use crate::output::{bytes_text, failed, print_json, time_text, Table};
use crate::settings::{BucketArgs, StorageLocation};

/// `libsql-wal ls`'s flags.
#[derive(Debug, Args)]
pub struct LsArgs {
    /// Show this namespace's generations and segments (default: every namespace).
    namespace: Option<NamespaceName>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// The bucket.
    #[command(flatten)]
    bucket: BucketArgs,
}

/// Runs `ls`.
pub fn ls(args: LsArgs) -> ExitCode {
    args.bucket.run(Ls {
        namespace: args.namespace,
        json: args.json,
    })
}

struct Ls {
    namespace: Option<NamespaceName>,
    json: bool,
}

/// One namespace, as `ls` shows it.
#[derive(Debug, Serialize)]
struct NamespaceSummary {
    namespace: String,
    /// `live`, `deleted` (its newest generation is a deletion mark) or `empty`.
    state: &'static str,
    generation: Option<u64>,
    durable_frame_no: u64,
    segments: usize,
    bytes: u64,
    oldest: Option<Point>,
    newest: Option<Point>,
}

/// One generation, as `ls NS` shows it.
#[derive(Debug, Serialize)]
struct GenerationRow {
    number: u64,
    /// `log` or `deleted`.
    kind: &'static str,
    created: String,
    log_id: Option<String>,
    start_frame_no: Option<u64>,
    /// `generation:frame_no` of the point it continues from.
    parent: Option<String>,
    segments: usize,
    /// Whether the current history reads it.
    in_history: bool,
}

/// One stored segment, as `ls NS` shows it.
#[derive(Debug, Serialize)]
struct SegmentRow {
    generation: u64,
    key: String,
    start_frame_no: u64,
    end_frame_no: u64,
    sealed_at: String,
    bytes: u64,
    /// Other stored segments of its generation whose frames it holds (a compacted segment
    /// covers the segments it was made from, until retention deletes them).
    covers: usize,
    compacted: bool,
}

#[derive(Debug, Serialize)]
struct NamespaceDetail {
    #[serde(flatten)]
    summary: NamespaceSummary,
    generations: Vec<GenerationRow>,
    segments: Vec<SegmentRow>,
}

impl OnBackend for Ls {
    fn run<B: Backend>(
        self,
        backend: B,
        _: &StorageLocation,
        runtime: tokio::runtime::Runtime,
    ) -> ExitCode {
        let outcome = runtime.block_on(async {
            match &self.namespace {
                Some(namespace) => detail(&backend, namespace).await.map(Err),
                None => {
                    let mut summaries = Vec::new();
                    for namespace in selected_namespaces(&backend, None).await? {
                        let history = read_history(&backend, &namespace).await?;
                        let lens = object_lens(&backend, history.objects()).await?;
                        summaries.push(summarize(&namespace, &history, lens.iter().sum()));
                    }
                    Ok(Ok(summaries))
                }
            }
        });
        match outcome {
            Err(e) => failed(e),
            Ok(Ok(summaries)) if self.json => print_json(&summaries),
            Ok(Ok(summaries)) => {
                let mut table = Table::new(&[
                    "NAMESPACE",
                    "STATE",
                    "GENERATION",
                    "DURABLE",
                    "SEGMENTS",
                    "SIZE",
                    "OLDEST POINT",
                    "NEWEST POINT",
                ]);
                for s in &summaries {
                    table.row(summary_cells(s));
                }
                table.print();
                ExitCode::SUCCESS
            }
            Ok(Err(detail)) if detail.generations.is_empty() => failed(format!(
                "the bucket holds no namespace {}",
                detail.summary.namespace
            )),
            Ok(Err(detail)) if self.json => print_json(&detail),
            Ok(Err(detail)) => {
                print_detail(&detail);
                ExitCode::SUCCESS
            }
        }
    }
}

fn point_text(point: Option<&Point>) -> String {
    point.map_or_else(|| "-".into(), |p| format!("{} @ {}", p.frame_no, p.time))
}

fn summary_cells(s: &NamespaceSummary) -> Vec<String> {
    vec![
        s.namespace.clone(),
        s.state.into(),
        s.generation.map_or_else(|| "-".into(), |g| g.to_string()),
        s.durable_frame_no.to_string(),
        s.segments.to_string(),
        bytes_text(s.bytes),
        point_text(s.oldest.as_ref()),
        point_text(s.newest.as_ref()),
    ]
}

fn print_detail(detail: &NamespaceDetail) {
    let s = &detail.summary;
    println!(
        "namespace {}: {}, generation {}, durable frame {}, {} segments, {}",
        s.namespace,
        s.state,
        s.generation.map_or_else(|| "-".into(), |g| g.to_string()),
        s.durable_frame_no,
        s.segments,
        bytes_text(s.bytes)
    );
    println!(
        "restorable: oldest {}, newest {}",
        point_text(s.oldest.as_ref()),
        point_text(s.newest.as_ref())
    );
    println!();
    let mut table = Table::new(&[
        "GENERATION",
        "KIND",
        "CREATED",
        "LOG ID",
        "START",
        "PARENT",
        "SEGMENTS",
        "IN HISTORY",
    ]);
    for g in &detail.generations {
        table.row(vec![
            g.number.to_string(),
            g.kind.into(),
            g.created.clone(),
            g.log_id.clone().unwrap_or_else(|| "-".into()),
            g.start_frame_no
                .map_or_else(|| "-".into(), |s| s.to_string()),
            g.parent.clone().unwrap_or_else(|| "-".into()),
            g.segments.to_string(),
            if g.in_history { "yes" } else { "no" }.into(),
        ]);
    }
    table.print();
    println!();
    let mut table = Table::new(&[
        "GENERATION",
        "FRAMES",
        "SEALED AT",
        "SIZE",
        "COMPACTED",
        "KEY",
    ]);
    for seg in &detail.segments {
        table.row(vec![
            seg.generation.to_string(),
            format!("{}..={}", seg.start_frame_no, seg.end_frame_no),
            seg.sealed_at.clone(),
            bytes_text(seg.bytes),
            if seg.compacted {
                format!("yes (covers {})", seg.covers)
            } else {
                "no".into()
            },
            seg.key.clone(),
        ]);
    }
    table.print();
}

/// The summary of one namespace: its history's points, and `bytes`, what its objects take.
fn summarize(namespace: &NamespaceName, history: &History, bytes: u64) -> NamespaceSummary {
    let (generation, state) = match history.newest() {
        None => (None, "empty"),
        Some((number, true)) => (Some(number), "deleted"),
        Some((number, false)) => (Some(number), "live"),
    };
    NamespaceSummary {
        namespace: namespace.to_string(),
        state,
        generation,
        durable_frame_no: history.durable_frame_no(),
        segments: history.segment_count(),
        bytes,
        oldest: history.oldest_point(),
        newest: history.newest_point(),
    }
}

/// One namespace in detail: every generation, and every stored segment of each. Each
/// generation is listed once (the history's listing of one that ends it is reused) and each
/// object sized once.
async fn detail<B: Backend>(
    backend: &B,
    namespace: &NamespaceName,
) -> libsql_wal_backend::Result<NamespaceDetail> {
    let history = read_history(backend, namespace).await?;
    let mut listed = Vec::with_capacity(history.lineage.records.len());
    for record in history.lineage.records.iter().rev() {
        let whole = history
            .parts
            .iter()
            .find(|p| p.generation.number == record.number && p.until.is_none());
        let part = match whole {
            Some(part) => Some(part.clone()),
            None => part_of(backend, namespace, record, None).await?,
        };
        listed.push((record, part));
    }
    let objects: Vec<String> = listed
        .iter()
        .filter_map(|(_, part)| part.as_ref())
        .flat_map(|part| objects_of(&part.generation, &part.keys))
        .collect();
    let sizes = object_lens(backend, objects.clone()).await?;
    let lens: HashMap<String, u64> = objects.into_iter().zip(sizes).collect();
    let len = |object: &String| lens.get(object).copied().unwrap_or(0);
    // A parent's segments in the history are among its whole listing.
    let bytes = history.objects().iter().map(len).sum();
    let summary = summarize(namespace, &history, bytes);
    let mut generations = Vec::new();
    let mut segments = Vec::new();
    for (record, part) in listed {
        let in_history = history
            .parts
            .iter()
            .any(|p| p.generation.number == record.number);
        let (log_id, start_frame_no, parent) = match record.kind {
            GenerationKind::Log {
                log_id,
                start_frame_no,
                parent,
                ..
            } => (
                Some(log_id.to_string()),
                Some(start_frame_no),
                parent.map(|p| format!("{}:{}", p.generation, p.frame_no)),
            ),
            GenerationKind::Deleted => (None, None, None),
        };
        generations.push(GenerationRow {
            number: record.number,
            kind: if log_id.is_some() { "log" } else { "deleted" },
            created: time_text(record.created_ms),
            log_id,
            start_frame_no,
            parent,
            segments: part.as_ref().map_or(0, |p| p.keys.len()),
            in_history,
        });
        let Some(part) = part else { continue };
        for key in &part.keys {
            let covers = part
                .keys
                .iter()
                .filter(|other| strictly_contains(key, other))
                .count();
            segments.push(SegmentRow {
                generation: record.number,
                key: key.to_string(),
                start_frame_no: key.start_frame_no,
                end_frame_no: key.end_frame_no,
                sealed_at: time_text(key.timestamp_ms),
                bytes: len(&segment_object(&part.generation, key)),
                covers,
                compacted: covers > 0,
            });
        }
    }
    Ok(NamespaceDetail {
        summary,
        generations,
        segments,
    })
}
