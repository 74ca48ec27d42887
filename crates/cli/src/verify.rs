//! `libsql-wal verify [NS | --all]`: downloads every stored segment of each namespace's current
//! history and checks it end to end (its index decodes, every frame's checksum, the index
//! points at exactly those frames, the data belongs to its generation's log), and that the
//! chain of each generation is continuous from its start to its newest point. Every problem
//! names the object (and, where the data says, the offset). Exit code 0 when clean, 1 when a
//! problem was found. Reads only.

use std::process::ExitCode;

use clap::Args;
use libsql_wal_backend::{
    generations_prefix, plan_chain_after, segment_object, segments_prefix, Backend, BackendExt,
    NamespaceName,
};
use serde::Serialize;

use crate::bucket::{with_backend, Missing, OnBackend};
use crate::history::read_history;
use crate::output::{failed, print_json, progress_bar, usage, PROBLEMS};
use crate::settings::{BucketArgs, StorageLocation};

/// `libsql-wal verify`'s flags.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The namespace to verify.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    namespace: Option<String>,
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
    let namespace = match args.namespace.as_deref().map(str::parse::<NamespaceName>) {
        Some(Err(e)) => return usage(e),
        Some(Ok(ns)) => Some(ns),
        None => None,
    };
    with_backend(
        &args.bucket.storage,
        &args.bucket.data_dir,
        Missing::Refuse,
        Verify {
            namespace,
            json: args.json,
        },
    )
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
            let namespaces = match &self.namespace {
                Some(ns) => vec![ns.clone()],
                None => backend.list_namespaces(backend.default_config()).await?,
            };
            let mut output = VerifyOutput {
                namespaces: Vec::new(),
                problems: Vec::new(),
            };
            for namespace in namespaces {
                verify_namespace(&backend, &namespace, &mut output).await?;
            }
            Ok::<_, libsql_wal_backend::Error>(output)
        });
        let output = match outcome {
            Ok(output) => output,
            Err(e) => return failed(e),
        };
        let clean = output.problems.is_empty();
        if self.json {
            let printed = print_json(&output);
            return if clean {
                printed
            } else {
                ExitCode::from(PROBLEMS)
            };
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
            ExitCode::SUCCESS
        } else {
            println!("{} problems found", output.problems.len());
            ExitCode::from(PROBLEMS)
        }
    }
}

/// Verifies every segment of `namespace`'s current history, and each generation's chain.
/// Problems with the data go to `output`; only failures to reach the bucket are errors.
async fn verify_namespace<B: Backend>(
    backend: &B,
    namespace: &NamespaceName,
    output: &mut VerifyOutput,
) -> libsql_wal_backend::Result<()> {
    let config = backend.default_config();
    let history = match read_history(backend, namespace).await {
        Ok(history) => history,
        Err(e) if !e.is_transient() => {
            output.problems.push(Problem {
                namespace: namespace.to_string(),
                object: generations_prefix(namespace),
                what: e.to_string(),
            });
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let mut verified = Verified {
        namespace: namespace.to_string(),
        generations: history.parts.len(),
        segments: history.segment_count(),
        frames_checked: 0,
    };
    let bar = progress_bar(verified.segments as u64, "segments");
    bar.set_message(namespace.to_string());
    let mut problem = |object: String, what: String| {
        output.problems.push(Problem {
            namespace: namespace.to_string(),
            object,
            what,
        })
    };
    for part in &history.parts {
        if let Some(newest) = part.keys.iter().map(|k| k.end_frame_no).max() {
            if let Err(gap) =
                plan_chain_after(&part.keys, part.start_frame_no.saturating_sub(1), newest)
            {
                problem(
                    segments_prefix(&part.generation),
                    format!(
                        "generation {} is not continuous from frame {}: {gap}",
                        part.generation.number, part.start_frame_no
                    ),
                );
            }
        }
        for key in &part.keys {
            match backend.verify_segment(config, &part.generation, *key).await {
                Ok(header) => verified.frames_checked += u64::from(header.frame_count),
                Err(e) if e.is_transient() => return Err(e),
                Err(e) => problem(segment_object(&part.generation, key), e.to_string()),
            }
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    output.namespaces.push(verified);
    Ok(())
}
