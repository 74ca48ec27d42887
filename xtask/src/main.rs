//! `cargo xtask`: developer tasks.
//!
//! - `cargo xtask ci`: formatting check, clippy with `-D warnings`, then the test command.
//! - `cargo xtask bench <name>`: runs one benchmark and prints its summary lines.

#[cfg(test)]
mod tidy;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};

/// The test command of the README and `.ci/run`.
const TEST_COMMAND: &[&str] = &["test", "--workspace", "--release"];

/// A benchmark `cargo xtask bench` knows: its name, and the cargo arguments that run it.
struct Bench {
    /// Name on the command line; summary lines start with `{name}-bench`.
    name: &'static str,
    /// Arguments to `cargo`.
    cargo_args: &'static [&'static str],
}

const BENCHES: &[Bench] = &[
    Bench {
        name: "segment",
        cargo_args: &["bench", "-p", "libsql-wal-segment", "--bench", "segment"],
    },
    Bench {
        name: "backend",
        cargo_args: &["bench", "-p", "libsql-wal-backend", "--bench", "backend"],
    },
    Bench {
        name: "planning",
        cargo_args: &["bench", "-p", "libsql-wal-backend", "--bench", "planning"],
    },
    Bench {
        name: "storage",
        cargo_args: &["bench", "-p", "libsql-wal-supervisor", "--bench", "storage"],
    },
    Bench {
        name: "wal",
        cargo_args: &["bench", "-p", "libsql-wal", "--bench", "wal"],
    },
    Bench {
        name: "restore",
        cargo_args: &["bench", "-p", "libsql-wal-cli", "--bench", "restore"],
    },
    Bench {
        name: "server",
        cargo_args: &["bench", "-p", "libsql-wal-server", "--bench", "server"],
    },
    Bench {
        name: "replication",
        cargo_args: &["bench", "-p", "libsql-wal-server", "--bench", "replication"],
    },
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["ci"] => ci(),
        ["bench", name] => bench(name),
        _ => Err(usage()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

fn usage() -> String {
    let names: Vec<_> = BENCHES.iter().map(|b| b.name).collect();
    format!(
        "usage: cargo xtask ci | cargo xtask bench <{}>",
        names.join("|")
    )
}

/// Returns the workspace root (the parent of this crate's directory).
fn project_root() -> PathBuf {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map(PathBuf::from)
        .unwrap_or(manifest_dir)
}

fn cargo(args: &[&str]) -> Result<(), String> {
    eprintln!("xtask: cargo {}", args.join(" "));
    let status = Command::new(env!("CARGO"))
        .args(args)
        .current_dir(project_root())
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("cargo {} failed: {status}", args.join(" ")))
    }
}

fn ci() -> Result<(), String> {
    cargo(&["fmt", "--all", "--", "--check"])?;
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    cargo(TEST_COMMAND)
}

fn bench(name: &str) -> Result<(), String> {
    let bench = BENCHES
        .iter()
        .find(|b| b.name == name)
        .ok_or_else(|| format!("unknown benchmark {name:?}; {}", usage()))?;
    eprintln!("xtask: cargo {}", bench.cargo_args.join(" "));
    let mut child = Command::new(env!("CARGO"))
        .args(bench.cargo_args)
        .current_dir(project_root())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    let prefix = format!("{name}-bench ");
    let mut summary = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines() {
            let line = line.map_err(|e| format!("cannot read benchmark output: {e}"))?;
            eprintln!("{line}");
            if line.starts_with(&prefix) {
                summary.push(line);
            }
        }
    }
    let status = child
        .wait()
        .map_err(|e| format!("cannot wait for cargo: {e}"))?;
    if !status.success() {
        return Err(format!("benchmark {name} failed: {status}"));
    }
    if summary.is_empty() {
        return Err(format!("benchmark {name} printed no `{prefix}` line"));
    }
    println!("summary:");
    for line in summary {
        println!("{line}");
    }
    Ok(())
}
