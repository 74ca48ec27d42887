//! `libsql-wal`: the command-line front of libsql-wal. `libsql-wal run` serves libSQL
//! clients (Hrana over HTTP) from many namespaces on this WAL, with durable storage on a
//! directory (the default, under the data directory) or S3. The operator commands (`ls`,
//! `restore`, `verify`, `compact`, `retain`, `delete`, `inspect`, `shell`) work on the same
//! storage flags, with no server running or beside a live one. Every flag can also be given as
//! a `LIBSQL_WAL_*` environment variable. Exit codes: 0 ok, 1 a problem was found (or the
//! command failed), 2 usage or configuration error.

mod bucket;
mod delete;
mod history;
mod inspect;
mod ls;
mod maintain;
mod output;
mod restore;
mod run;
mod settings;
mod shell;
mod verify;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// libsql-wal: a multi-tenant libSQL server whose write-ahead log is shipped to object
/// storage, so any database restores anywhere, at any point in time, from the bucket alone.
#[derive(Debug, Parser)]
#[command(name = "libsql-wal", version, about, long_about = None)]
struct Cli {
    /// What to do.
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve libSQL clients (Hrana over HTTP) from many namespaces.
    Run(Box<run::RunArgs>),
    /// List the namespaces of the bucket, or one namespace's generations and segments.
    Ls(ls::LsArgs),
    /// Rebuild a namespace's database from the bucket into a new file.
    Restore(restore::RestoreArgs),
    /// Download and check every stored segment of one namespace or all.
    Verify(verify::VerifyArgs),
    /// Compact the stored segments of one namespace or all.
    Compact(maintain::CompactArgs),
    /// Delete old stored segments that a compacted one covers.
    Retain(maintain::RetainArgs),
    /// Delete a namespace from the bucket (or mark it deleted, keeping backups).
    Delete(delete::DeleteArgs),
    /// Show what a segment file or a downloaded object holds.
    Inspect(inspect::InspectArgs),
    /// An SQL prompt on a namespace of a local data directory.
    Shell(shell::ShellArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Run(_)) {
        settings::init_logging(settings::LogFormat::Text, "warn");
    }
    match cli.command {
        Command::Run(args) => run::run(*args),
        Command::Ls(args) => ls::ls(args),
        Command::Restore(args) => restore::restore_command(args),
        Command::Verify(args) => verify::verify(args),
        Command::Compact(args) => maintain::compact_command(args),
        Command::Retain(args) => maintain::retain_command(args),
        Command::Delete(args) => delete::delete(args),
        Command::Inspect(args) => inspect::inspect(args),
        Command::Shell(args) => shell::shell(args),
    }
}
