//! `oracle`: runs every `*.test` script of a directory through `libsql_wal_tests::oracle`, each
//! in a child process of its own (scripts change the working directory, and one that hangs or
//! crashes must not take the run down), two at a time, with a time limit per script.
//!
//! `oracle <dir>`: any failing script fails the run. Prints a line per failure and a closing
//! `oracle: N passed, M failed` line.
//! `oracle --one <script> <work dir>`: the child's job.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

/// Longest a script may run.
const SCRIPT_TIME_LIMIT: Duration = Duration::from_secs(120);
/// Scripts run at once.
const PARALLEL: usize = 2;

fn child(script: &Path, work: &Path) -> ExitCode {
    let text = match std::fs::read(script) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) => {
            println!("cannot read {}: {e}", script.display());
            return ExitCode::FAILURE;
        }
    };
    match libsql_wal_tests::oracle::check_script(&text, work) {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            println!("{why}");
            ExitCode::FAILURE
        }
    }
}

struct Running {
    name: String,
    child: Child,
    started: Instant,
    work: tempfile::TempDir,
}

fn finish(running: Running, timed_out: bool) -> (String, Result<(), String>) {
    let Running {
        name,
        mut child,
        work,
        ..
    } = running;
    if timed_out {
        let _ = child.kill();
    }
    let output = child.wait_with_output();
    drop(work);
    let result = match output {
        _ if timed_out => Err(format!("no result within {SCRIPT_TIME_LIMIT:?}")),
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout).trim(),
            if out.status.code().is_none() {
                " (killed by a signal)"
            } else {
                ""
            }
        )),
        Err(e) => Err(format!("cannot wait for the child: {e}")),
    };
    (name, result)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, script, work] = &args[..] {
        if flag == "--one" {
            return child(Path::new(script), Path::new(work));
        }
    }
    let [dir] = &args[..] else {
        eprintln!("usage: oracle <dir>");
        return ExitCode::FAILURE;
    };
    let dir = PathBuf::from(dir);
    let mut scripts: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "test"))
            .collect(),
        Err(e) => {
            eprintln!("oracle: cannot read {}: {e}", dir.display());
            return ExitCode::FAILURE;
        }
    };
    scripts.sort();
    if scripts.is_empty() {
        eprintln!("oracle: no *.test script in {}", dir.display());
        return ExitCode::FAILURE;
    }
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("oracle: cannot find this program: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut queue = scripts.into_iter();
    let mut running: Vec<Running> = Vec::new();
    let mut results = Vec::new();
    loop {
        while running.len() < PARALLEL {
            let Some(script) = queue.next() else { break };
            let name = script
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let spawned = tempfile::tempdir().and_then(|work| {
                Command::new(&exe)
                    .arg("--one")
                    .arg(&script)
                    .arg(work.path())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .spawn()
                    .map(|child| (work, child))
            });
            match spawned {
                Ok((work, child)) => running.push(Running {
                    name,
                    child,
                    started: Instant::now(),
                    work,
                }),
                Err(e) => results.push((name, Err(format!("cannot start: {e}")))),
            }
        }
        if running.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
        let mut i = 0;
        while i < running.len() {
            let done = matches!(running[i].child.try_wait(), Ok(Some(_)));
            let timed_out = running[i].started.elapsed() > SCRIPT_TIME_LIMIT;
            if done || timed_out {
                results.push(finish(running.swap_remove(i), timed_out && !done));
            } else {
                i += 1;
            }
        }
    }
    results.sort_by(|a, b| a.0.cmp(&b.0));
    let mut failed = 0;
    for (name, result) in &results {
        if let Err(why) = result {
            failed += 1;
            println!("oracle: {name} FAILS: {why}");
        }
    }
    println!("oracle: {} passed, {failed} failed", results.len() - failed);
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
