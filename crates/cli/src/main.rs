//! `libsql-wal`: the command-line front of libsql-wal. `libsql-wal run` serves libSQL
//! clients (Hrana over HTTP) from many namespaces on this WAL, with durable storage on a
//! directory (the default, under the data directory) or S3. Every flag can also be given as a
//! `LIBSQL_WAL_*` environment variable.

mod run;
mod settings;

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run::run(*args),
    }
}
