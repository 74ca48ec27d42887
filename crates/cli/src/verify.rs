//! `libsql-wal verify [NS | --all]`: downloads every stored segment of each namespace's current
//! history and checks it end to end (its index decodes, every frame's checksum, the index
//! points at exactly those frames, the data belongs to its generation's log), and that the
//! chain of each generation is continuous from its start to its newest point (a parent's, to
//! the point its child continues from), and that no segment's data is missing beside its index.
//! Every problem names the object (and, where the data says, the offset); a namespace that
//! cannot be read is a problem too, and the others are verified all the same. Exit code 0 when
//! clean, 1 when a problem was found. Reads only.

use std::process::ExitCode;

use clap::Args;
use libsql_wal_backend::{
    generations_prefix, index_object, list_index_keys, now_ms, segment_object, segments_prefix,
    Backend, BackendExt, NamespaceName, ORPHAN_INDEX_GRACE,
};
use serde::Serialize;

use crate::bucket::OnBackend;
use crate::history::{read_history, selected_namespaces};
use crate::output::{failed, print_json, progress_bar, unless_problems};
use crate::settings::{BucketArgs, StorageLocation};

/// `libsql-wal verify`'s flags.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The namespace to verify.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    namespace: Option<NamespaceName>,
    /// Verify every namespace of the bucket.
    #[arg(long)]
    all: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// The bucket.
    #[command(flatten)]
    bucket: BucketArgs,
}

/// Runs `verify`.
pub fn verify(args: VerifyArgs) -> ExitCode {
    args.bucket.run(Verify {
        namespace: args.namespace,
        json: args.json,
    })
}

struct Verify {
    namespace: Option<NamespaceName>,
    json: bool,
}

/// One problem found.
#[derive(Debug, Serialize)]
struct Problem {
    namespace: String,
    /// The object (or the generation's prefix, for a gap) it is in.
    object: String,
    what: String,
}

/// What `verify` found in one namespace.
#[derive(Debug, Serialize)]
struct Verified {
    namespace: String,
    generations: usize,
    segments: usize,
    frames_checked: u64,
}

#[derive(Debug, Serialize)]
struct VerifyOutput {
    namespaces: Vec<Verified>,
    problems: Vec<Problem>,
}

impl OnBackend for Verify {
    fn run<B: Backend>(
        self,
        backend: B,
        _: &StorageLocation,
        runtime: tokio::runtime::Runtime,
    ) -> ExitCode {
        let outcome = runtime.block_on(async {
            let namespaces = selected_namespaces(&backend, self.namespace.as_ref()).await?;
            let mut output = VerifyOutput {
                namespaces: Vec::new(),
                problems: Vec::new(),
            };
            for namespace in namespaces {
                verify_namespace(&backend, &namespace, &mut output).await;
            }
            Ok::<_, libsql_wal_backend::Error>(output)
        });
        let output = match outcome {
            Ok(output) => output,
            Err(e) => return failed(e),
        };
        let clean = output.problems.is_empty();
        if self.json {
            return unless_problems(clean, print_json(&output));
        }
        for v in &output.namespaces {
            println!(
                "{}: {} generations, {} segments, {} frames checked",
                v.namespace, v.generations, v.segments, v.frames_checked
            );
        }
        for p in &output.problems {
            println!("PROBLEM {} {}: {}", p.namespace, p.object, p.what);
        }
        if clean {
            println!("ok: no problem found");
        } else {
            println!("{} problems found", output.problems.len());
        }
        unless_problems(clean, ExitCode::SUCCESS)
    }
}

/// Verifies every segment of `namespace`'s current history and each generation's chain, and
/// looks for indexes whose data is gone. Every problem, a failure to reach the bucket
/// included, goes to `output`: the other namespaces are verified all the same.
async fn verify_namespace<B: Backend>(
    backend: &B,
    namespace: &NamespaceName,
    output: &mut VerifyOutput,
) {
    let mut problems = Vec::new();
    let verified = check_namespace(backend, namespace, &mut problems).await;
    let mut problem = |object: String, what: String| {
        output.problems.push(Problem {
            namespace: namespace.to_string(),
            object,
            what,
        })
    };
    for (object, what) in problems {
        problem(object, what);
    }
    match verified {
        Ok(verified) => output.namespaces.push(verified),
        Err(e) => problem(
            format!("{namespace}/"),
            format!("could not be verified: {e}"),
        ),
    }
}

/// `verify_namespace`'s work: problems with the data go to `problems`; a failure to reach the
/// bucket ends it.
async fn check_namespace<B: Backend>(
    backend: &B,
    namespace: &NamespaceName,
    problems: &mut Vec<(String, String)>,
) -> libsql_wal_backend::Result<Verified> {
    let config = backend.default_config();
    let history = match read_history(backend, namespace).await {
        Ok(history) => history,
        Err(e) if !e.is_transient() => {
            problems.push((generations_prefix(namespace), e.to_string()));
            return Ok(Verified {
                namespace: namespace.to_string(),
                generations: 0,
                segments: 0,
                frames_checked: 0,
            });
        }
        Err(e) => return Err(e),
    };
    if history.lineage.records.is_empty() {
        problems.push((
            generations_prefix(namespace),
            "the bucket holds no generation of this namespace".into(),
        ));
    }
    let mut verified = Verified {
        namespace: namespace.to_string(),
        generations: history.parts.len(),
        segments: history.segment_count(),
        frames_checked: 0,
    };
    let bar = progress_bar(verified.segments as u64, "segments");
    bar.set_message(namespace.to_string());
    let now = now_ms();
    for part in &history.parts {
        // The newest generation up to its newest segment; a parent up to the point its child
        // continues from, which every restore of the child reads.
        let target = part
            .until
            .or_else(|| part.keys.iter().map(|k| k.end_frame_no).max());
        if let Some(target) = target.filter(|&t| t >= part.start_frame_no) {
            if let Some(gap) = part.missing_before(target) {
                problems.push((
                    segments_prefix(&part.generation),
                    format!(
                        "generation {} is not continuous from frame {} to frame {target}: {gap}",
                        part.generation.number, part.start_frame_no
                    ),
                ));
            }
        }
        for key in &part.keys {
            match backend.verify_segment(config, &part.generation, *key).await {
                Ok(header) => verified.frames_checked += u64::from(header.frame_count),
                Err(e) if e.is_transient() => return Err(e),
                Err(e) => problems.push((segment_object(&part.generation, key), e.to_string())),
            }
            bar.inc(1);
        }
        // An index without data: a store writes the index first and retention deletes the data
        // first, so an upload in flight, a deletion in flight or one cut short leave one too.
        // Only one older than retention's grace (as the bucket's clock tells) whose frames no
        // stored segment holds is data lost.
        for key in list_index_keys(backend, config, &part.generation).await? {
            let held = part.keys.iter().any(|k| {
                k.start_frame_no <= key.start_frame_no && key.end_frame_no <= k.end_frame_no
            });
            if held || part.until.is_some_and(|u| key.end_frame_no > u) {
                continue;
            }
            let index = index_object(&part.generation, &key);
            let written_ms = match backend.stat(config, &index).await {
                Ok(stat) => stat.modified_ms,
                Err(libsql_wal_backend::Error::NotFound { .. }) => continue,
                Err(e) => return Err(e),
            };
            let grace_ms = u64::try_from(ORPHAN_INDEX_GRACE.as_millis()).unwrap_or(u64::MAX);
            if written_ms.saturating_add(grace_ms) < now {
                problems.push((
                    segment_object(&part.generation, &key),
                    format!("missing: its index {index} is there, its data is not"),
                ));
            }
        }
    }
    bar.finish_and_clear();
    Ok(verified)
}
