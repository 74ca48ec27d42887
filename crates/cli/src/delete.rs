//! `libsql-wal delete NS [--keep-backup]`: deletes a namespace from the bucket (every object of
//! every generation), or with `--keep-backup` only marks it deleted (a later create under the
//! name starts empty, and the old generations stay restorable by number). Asks first on a
//! terminal; elsewhere it needs `--yes`. A server still writing the namespace is fenced off by
//! the mark at its next upload.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use clap::Args;
use libsql_wal_backend::{now_ms, Backend, BackendExt, NamespaceName};
use serde::Serialize;

use crate::bucket::OnBackend;
use crate::history::history_of;
use crate::output::{failed, print_json, usage};
use crate::settings::{BucketArgs, StorageLocation};

/// `libsql-wal delete`'s flags.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// The namespace.
    namespace: NamespaceName,
    /// Only mark the namespace deleted; keep its objects as backups.
    #[arg(long)]
    keep_backup: bool,
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    yes: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// The bucket.
    #[command(flatten)]
    bucket: BucketArgs,
}

/// Runs `delete`.
pub fn delete(args: DeleteArgs) -> ExitCode {
    if !args.yes && !std::io::stdin().is_terminal() {
        return usage(format!(
            "deleting {} needs --yes when not run on a terminal",
            args.namespace
        ));
    }
    args.bucket.clone().run(Delete { args })
}

struct Delete {
    args: DeleteArgs,
}

#[derive(Debug, Serialize)]
struct DeleteOutput {
    namespace: String,
    kept_backup: bool,
    /// The generation that marks it deleted.
    mark: Option<u64>,
    objects_deleted: u64,
}

impl OnBackend for Delete {
    fn run<B: Backend>(
        self,
        backend: B,
        location: &StorageLocation,
        runtime: tokio::runtime::Runtime,
    ) -> ExitCode {
        let namespace = &self.args.namespace;
        let lineage = match runtime.block_on(backend.lineage(backend.default_config(), namespace)) {
            Ok(lineage) => lineage,
            Err(e) => return failed(e),
        };
        if lineage.records.is_empty() {
            // A typo must not pass for a deletion (nor leave a deletion mark behind); objects
            // without a generation record (a delete cut short elsewhere) are still deleted.
            let prefix = format!("{}/", namespace);
            match runtime.block_on(backend.list(backend.default_config(), &prefix, None, 1)) {
                Ok(objects) if objects.is_empty() => {
                    return failed(format!(
                        "the bucket {location} holds no namespace {}",
                        namespace
                    ))
                }
                Ok(_) => {}
                Err(e) => return failed(e),
            }
        }
        if !self.args.yes {
            // Only the question needs the history's segments.
            let history = match runtime.block_on(history_of(&backend, namespace, lineage)) {
                Ok(history) => history,
                Err(e) => return failed(e),
            };
            let what = if self.args.keep_backup {
                "mark it deleted, keeping its objects as backups"
            } else {
                "delete every object of it"
            };
            eprint!(
                "{} in {location} has {} generations and {} segments in its history; {what}? [y/N] ",
                namespace,
                history.lineage.records.len(),
                history.segment_count()
            );
            let _ = std::io::stderr().flush();
            let mut answer = String::new();
            if std::io::stdin().lock().read_line(&mut answer).is_err()
                || !matches!(answer.trim(), "y" | "Y" | "yes")
            {
                eprintln!("nothing deleted");
                return ExitCode::from(crate::output::PROBLEMS);
            }
        }
        let deleted = runtime.block_on(backend.delete_namespace(
            backend.default_config(),
            namespace,
            self.args.keep_backup,
            now_ms(),
        ));
        let deleted = match deleted {
            Ok(deleted) => deleted,
            Err(e) => return failed(e),
        };
        let output = DeleteOutput {
            namespace: namespace.to_string(),
            kept_backup: self.args.keep_backup,
            mark: deleted.mark,
            objects_deleted: deleted.objects_deleted,
        };
        if self.args.json {
            return print_json(&output);
        }
        match (output.mark, output.kept_backup) {
            (Some(mark), true) => println!(
                "{} marked deleted (generation {mark}); its objects are kept as backups",
                output.namespace
            ),
            (mark, _) => println!(
                "{} deleted: {} objects{}",
                output.namespace,
                output.objects_deleted,
                mark.map_or_else(String::new, |m| format!(
                    " (the deletion mark, generation {m}, stays)"
                ))
            ),
        }
        ExitCode::SUCCESS
    }
}
