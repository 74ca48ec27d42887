//! The SQLite oracle: runs a script from SQLite's own test suite once on SQLite's WAL
//! (`Sqlite3WalManager`) and once on this WAL, and requires the same output for every statement
//! and the same final database pages (see `../shared/fixtures/sqlite-oracle/README.md`).
//!
//! - Statements are split where SQLite's `sqlite3_complete` says a statement ends, each is
//!   prepared and stepped on its own, and its rows (or its error) are rendered as text.
//! - `random()` and `randomblob(N)` are replaced by functions over one seeded generator per run,
//!   the same seed for both runs; SQLite's own generator is reseeded before every statement.
//! - Files named by `ATTACH` are opened with the run's WAL manager first, so both runs attach
//!   a database of their own kind. Paths are relative to the run's working directory, so a
//!   script must run in a process of its own (the `oracle` binary runs each in a child).
//! - Each run works in a directory of its own; where an output names it (`PRAGMA
//!   database_list` prints absolute paths), it reads `{dir}` on both sides.
//! - After the script, both runs checkpoint everything (this WAL: seal, checkpoint, shut down)
//!   and every database file is compared page by page, page 1's 100-byte header and the libSQL
//!   footer excepted.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use libsql_sys::rusqlite::functions::FunctionFlags;
use libsql_sys::rusqlite::types::{Value, ValueRef};
use libsql_sys::wal::{Sqlite3WalManager, Wal, WalManager};
use libsql_sys::Connection;
use libsql_wal::{LibsqlWalManager, RegistryConfig, WalRegistry};
use libsql_wal_backend::{NamespaceName, NoStorage};
use libsql_wal_segment::StdIo;

use crate::Rng;

/// Seed of the generator behind `random()` and `randomblob()`, the same for both runs.
const RANDOM_SEED: u64 = 0x05EE_D0F0_AC1E;

/// Returns true if `sql` holds one or more complete statements (SQLite's own test).
#[allow(unsafe_code)]
fn is_complete(sql: &str) -> bool {
    let Ok(c_sql) = CString::new(sql) else {
        return false;
    };
    // SAFETY: sqlite3_complete only reads the NUL-terminated string, which outlives the call.
    unsafe { libsql_sys::ffi::sqlite3_complete(c_sql.as_ptr()) != 0 }
}

/// Seeds SQLite's own random generator, which picks for example the suffixes of clashing column
/// names in `CREATE TABLE ... AS SELECT`. Reseeded before every statement: the two runs share
/// one process, and SQLite's WAL draws from the generator (for its salts) where this one does
/// not, so one seed per run would still leave them apart.
#[allow(unsafe_code)]
fn seed_sqlite_prng() {
    // SAFETY: SQLITE_TESTCTRL_PRNG_SEED takes an int and a database handle, which may be null;
    // it only sets the seed and resets the generator.
    unsafe {
        libsql_sys::ffi::sqlite3_test_control(
            libsql_sys::ffi::SQLITE_TESTCTRL_PRNG_SEED,
            RANDOM_SEED as std::ffi::c_int,
            std::ptr::null_mut::<libsql_sys::ffi::sqlite3>(),
        );
    }
}

/// Splits a script into statements the way SQLite's shell does.
pub fn split_statements(script: &str) -> Vec<String> {
    let mut statements = Vec::new();
    let mut start = 0;
    for (at, _) in script.match_indices(';') {
        let candidate = &script[start..=at];
        if is_complete(candidate) {
            statements.push(candidate.trim().to_string());
            start = at + 1;
        }
    }
    let rest = script[start..].trim();
    if !rest.is_empty() {
        statements.push(rest.to_string());
    }
    statements
}

/// Returns the file names a script attaches, as written (quotes removed).
pub fn attached_files(statements: &[String]) -> Vec<String> {
    let mut files = Vec::new();
    for statement in statements {
        let mut words = statement.split_whitespace();
        if !words
            .next()
            .is_some_and(|w| w.eq_ignore_ascii_case("attach"))
        {
            continue;
        }
        let mut name = words.next().unwrap_or_default();
        if name.eq_ignore_ascii_case("database") {
            name = words.next().unwrap_or_default();
        }
        let name = name.trim_matches(|c| c == '\'' || c == '"' || c == '`');
        if !name.is_empty()
            && !name.starts_with(':')
            && !name.contains('/')
            && !files.iter().any(|f| f == name)
        {
            files.push(name.to_string());
        }
    }
    files
}

/// Replaces `random()` and `randomblob(N)` on `conn` with the seeded generator `state`.
fn install_random<W: Wal>(conn: &Connection<W>, state: &Arc<Mutex<Rng>>) -> Result<(), String> {
    let next = |rng: &Mutex<Rng>| {
        rng.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .next_u64()
    };
    let s = state.clone();
    conn.create_scalar_function("random", 0, FunctionFlags::SQLITE_UTF8, move |_| {
        Ok(next(&s) as i64)
    })
    .map_err(|e| format!("cannot replace random(): {e}"))?;
    let s = state.clone();
    conn.create_scalar_function("randomblob", 1, FunctionFlags::SQLITE_UTF8, move |ctx| {
        let n: i64 = ctx.get::<Option<i64>>(0)?.unwrap_or(1);
        let n = n.clamp(1, 1 << 30) as usize;
        Ok((0..n).map(|_| next(&s) as u8).collect::<Vec<u8>>())
    })
    .map_err(|e| format!("cannot replace randomblob(): {e}"))
}

/// Runs one statement, rendering its rows or its error as text.
pub fn run_statement<W: Wal>(conn: &Connection<W>, sql: &str) -> String {
    seed_sqlite_prng();
    let mut stmt = match conn.prepare(sql) {
        Ok(stmt) => stmt,
        Err(e) => return format!("error: {e}"),
    };
    let columns = stmt.column_count();
    let mut rows = match stmt.query(()) {
        Ok(rows) => rows,
        Err(e) => return format!("error: {e}"),
    };
    let mut out = String::new();
    loop {
        match rows.next() {
            Ok(Some(row)) => {
                for i in 0..columns {
                    // Text that is not UTF-8 (scripts switch encodings) is shown lossily.
                    match row.get_ref(i) {
                        Ok(ValueRef::Text(bytes)) => {
                            out.push_str(&format!("Text({:?})|", String::from_utf8_lossy(bytes)))
                        }
                        Ok(value) => out.push_str(&format!("{:?}|", Value::from(value))),
                        Err(e) => out.push_str(&format!("error: {e}|")),
                    }
                }
                out.push('\n');
            }
            Ok(None) => return out,
            Err(e) => return format!("{out}error: {e}"),
        }
    }
}

/// Runs the statements on a connection of `manager` in `dir`, returns each one's output.
fn run<M: WalManager + Clone>(
    manager: M,
    dir: &Path,
    statements: &[String],
) -> Result<Vec<String>, String> {
    std::env::set_current_dir(dir).map_err(|e| format!("cannot enter {}: {e}", dir.display()))?;
    for file in attached_files(statements) {
        let conn = Connection::open(
            dir.join(&file),
            Default::default(),
            manager.clone(),
            0,
            None,
        )
        .map_err(|e| format!("cannot create the attached file {file}: {e}"))?;
        drop(conn);
    }
    let conn = Connection::open(dir.join("main.db"), Default::default(), manager, 0, None)
        .map_err(|e| format!("cannot open main.db: {e}"))?;
    let random = Arc::new(Mutex::new(Rng(RANDOM_SEED)));
    install_random(&conn, &random)?;
    Ok(statements.iter().map(|s| run_statement(&conn, s)).collect())
}

/// Derives a namespace from a database file's name, so every file in the working directory
/// has a log of its own.
fn namespace_from_file_name(path: &Path) -> libsql_wal::Result<NamespaceName> {
    let name: String = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("f{name}")
        .parse()
        .map_err(
            |e: libsql_wal_backend::Error| libsql_wal::Error::NamespaceFromPath {
                path: path.to_path_buf(),
                why: e.to_string(),
            },
        )
}

/// Returns the database files in `dir` (not WAL, journal or segment files), sorted.
fn database_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .filter(|p| {
                    let name = p.to_string_lossy();
                    !name.ends_with("-wal")
                        && !name.ends_with("-shm")
                        && !name.ends_with("-journal")
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// Returns the page size a database file's header gives (4096 for a file too short to have
/// one).
fn page_size_of(bytes: &[u8]) -> usize {
    match bytes.get(16..18) {
        Some(&[1, 0]) => 65536,
        Some(&[hi, lo]) if u16::from_be_bytes([hi, lo]) >= 512 => {
            usize::from(u16::from_be_bytes([hi, lo]))
        }
        _ => 4096,
    }
}

/// Compares two database files page by page, at the page size SQLite's file gives, ignoring
/// page 1's 100-byte header and the libSQL footer after the last page of `ours`.
pub fn compare_pages(ours: &Path, native: &Path) -> Result<(), String> {
    let ours_bytes = std::fs::read(ours).map_err(|e| format!("{}: {e}", ours.display()))?;
    let native_bytes = std::fs::read(native).map_err(|e| format!("{}: {e}", native.display()))?;
    let page_size = page_size_of(&native_bytes);
    let page_bytes = native_bytes.len() - native_bytes.len() % page_size;
    let ours_pages = if ours_bytes.len() % page_size == libsql_wal::FOOTER_SIZE {
        ours_bytes.len() - libsql_wal::FOOTER_SIZE
    } else {
        ours_bytes.len()
    };
    let name = native
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if ours_pages != page_bytes {
        return Err(format!(
            "{name}: {ours_pages} bytes of pages here, {page_bytes} on SQLite's WAL (pages of {page_size} bytes)"
        ));
    }
    for (i, (a, b)) in ours_bytes[..ours_pages]
        .chunks(page_size)
        .zip(native_bytes[..page_bytes].chunks(page_size))
        .enumerate()
    {
        let skip = if i == 0 { 100 } else { 0 };
        if a.get(skip..) != b.get(skip..) {
            return Err(format!("{name}: page {} differs", i + 1));
        }
    }
    Ok(())
}

/// Replaces the run's working directory in every output with `{dir}`: the two runs work in
/// different directories, and statements such as `PRAGMA database_list` print absolute paths.
fn with_dir_named(outputs: Vec<String>, dir: &Path) -> Vec<String> {
    let dir = dir.to_string_lossy();
    outputs
        .into_iter()
        .map(|out| out.replace(dir.as_ref(), "{dir}"))
        .collect()
}

/// Runs `script` on both WALs under `work` (a fresh directory) and compares.
pub fn check_script(script: &str, work: &Path) -> Result<(), String> {
    let statements = split_statements(script);
    let native_dir = work.join("native");
    let ours_dir = work.join("ours");
    for dir in [&native_dir, &ours_dir] {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let native = run(Sqlite3WalManager::new(), &native_dir, &statements)?;
    let native = with_dir_named(native, &native_dir);
    let registry = Arc::new(WalRegistry::new(
        StdIo,
        NoStorage::<std::fs::File>::default(),
        RegistryConfig {
            namespace_of: namespace_from_file_name,
            ..RegistryConfig::default()
        },
    ));
    let ours = run(
        LibsqlWalManager::new(registry.clone()),
        &ours_dir,
        &statements,
    )?;
    registry
        .shutdown()
        .map_err(|e| format!("shutting this WAL down: {e}"))?;
    let ours = with_dir_named(ours, &ours_dir);
    for (i, (a, b)) in ours.iter().zip(&native).enumerate() {
        if a != b {
            return Err(format!(
                "statement {} differs: {}\n  here:   {}\n  SQLite: {}",
                i + 1,
                statements[i].chars().take(200).collect::<String>(),
                a.chars().take(300).collect::<String>(),
                b.chars().take(300).collect::<String>()
            ));
        }
    }
    let native_files = database_files(&native_dir);
    let ours_files = database_files(&ours_dir);
    let names = |files: &[PathBuf]| -> Vec<String> {
        files
            .iter()
            .filter_map(|f| f.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect()
    };
    if names(&native_files) != names(&ours_files) {
        return Err(format!(
            "database files differ: {:?} here, {:?} on SQLite's WAL",
            names(&ours_files),
            names(&native_files)
        ));
    }
    for (ours, native) in ours_files.iter().zip(&native_files) {
        compare_pages(ours, native)?;
    }
    Ok(())
}
