//! `libsql-wal shell NS`: an interactive SQL prompt on a namespace of a local data directory,
//! through this WAL and the same bucket as `run` (writes are shipped like the server's), for an
//! operator without a client at hand. Statements end with `;`; dot commands: `.tables`,
//! `.schema [TABLE]`, `.help`, `.quit`. Reads statements from a pipe too (no prompt then).
//!
//! It takes the data directory's lock, so it never runs beside a server (or another shell) on
//! the same files, and it opens only namespaces that exist there: it never restores one from
//! the bucket (that would take the namespace over from wherever it is served).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use libsql_sys::rusqlite::types::ValueRef;
use libsql_sys::rusqlite::OpenFlags;
use libsql_wal::{LibsqlWalManager, RegistryConfig, WalRegistry};
use libsql_wal_backend::{Backend, NamespaceName};
use libsql_wal_segment::StdIo;
use libsql_wal_supervisor::{ActorStorage, StorageConfig};
use rustyline::error::ReadlineError;

use crate::bucket::OnBackend;
use crate::output::{failed, usage, Table};
use crate::settings::{lock_data_dir, BucketArgs, StorageLocation};

/// `libsql-wal shell`'s flags.
#[derive(Debug, Args)]
pub struct ShellArgs {
    /// The namespace (it must exist in the data directory).
    namespace: NamespaceName,
    /// The bucket (and the data directory the namespace is in).
    #[command(flatten)]
    bucket: BucketArgs,
}

/// Longest blob shown whole; longer ones are cut.
const BLOB_SHOWN: usize = 32;

/// Runs `shell`.
pub fn shell(args: ShellArgs) -> ExitCode {
    let namespace = args.namespace;
    let db_path = args
        .bucket
        .data_dir
        .join("namespaces")
        .join(namespace.as_str())
        .join("data");
    if !db_path.exists() {
        return usage(format!(
            "there is no namespace {namespace} in {} (no {})",
            args.bucket.data_dir.display(),
            db_path.display()
        ));
    }
    let lock = match lock_data_dir(&args.bucket.data_dir) {
        Ok(lock) => lock,
        Err(e) => return failed(e),
    };
    let code = args.bucket.run(Shell {
        namespace,
        db_path,
        data_dir: args.bucket.data_dir.clone(),
    });
    drop(lock);
    code
}

struct Shell {
    namespace: NamespaceName,
    db_path: PathBuf,
    data_dir: PathBuf,
}

impl OnBackend for Shell {
    fn run<B: Backend>(
        self,
        backend: B,
        _: &StorageLocation,
        _runtime: tokio::runtime::Runtime,
    ) -> ExitCode {
        let storage = match ActorStorage::<B, std::fs::File>::start(
            backend,
            StorageConfig {
                scratch_dir: self.data_dir.join("scratch"),
                ..StorageConfig::default()
            },
        ) {
            Ok(storage) => storage,
            Err(e) => return failed(format!("cannot start the storage pipeline: {e}")),
        };
        // Beside a server that owns the namespace elsewhere, the shell must never take it over:
        // only a log that goes on where it left off opens.
        let registry = Arc::new(WalRegistry::new(
            StdIo,
            storage,
            RegistryConfig {
                may_claim: false,
                ..RegistryConfig::default()
            },
        ));
        let conn = libsql_sys::Connection::open(
            &self.db_path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            LibsqlWalManager::new(registry.clone()),
            0,
            None,
        )
        .and_then(|conn| conn.execute_batch("PRAGMA synchronous=FULL").map(|()| conn))
        // A first read opens the log now: a namespace that cannot be opened says so at once.
        .and_then(|conn| {
            conn.query_row("PRAGMA schema_version", (), |r| r.get::<_, i64>(0))
                .map(|_| conn)
        });
        let conn = match conn {
            Ok(conn) => conn,
            Err(e) => return failed(format!("cannot open {}: {e}", self.namespace)),
        };
        let code = prompt(&conn, &self.namespace);
        drop(conn);
        match registry.shutdown() {
            Ok(()) => code,
            Err(e) => failed(format!(
                "shutting the log down: {e} (what is not durable stays on local disk and is sent at the next start)"
            )),
        }
    }
}

/// Reads statements until `.quit` or the end of input; returns 1 if one failed.
fn prompt<W: libsql_sys::wal::Wal>(
    conn: &libsql_sys::Connection<W>,
    namespace: &NamespaceName,
) -> ExitCode {
    let mut editor = match rustyline::DefaultEditor::new() {
        Ok(editor) => editor,
        Err(e) => return failed(format!("cannot read input: {e}")),
    };
    let mut failures = 0;
    let mut pending = String::new();
    loop {
        let prompt = if pending.is_empty() {
            format!("{namespace}> ")
        } else {
            "   ...> ".to_string()
        };
        let line = match editor.readline(&prompt) {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => {
                pending.clear();
                continue;
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => {
                eprintln!("error: {e}");
                failures += 1;
                break;
            }
        };
        let trimmed = line.trim();
        if pending.is_empty() && trimmed.starts_with('.') {
            let _ = editor.add_history_entry(trimmed);
            match dot_command(conn, trimmed) {
                Some(Ok(())) => {}
                Some(Err(e)) => {
                    eprintln!("error: {e}");
                    failures += 1;
                }
                None => break,
            }
            continue;
        }
        pending.push_str(&line);
        pending.push('\n');
        while let Some((statement, rest)) = split_statement(&pending) {
            let (statement, rest) = (statement.to_string(), rest.to_string());
            pending = rest;
            let _ = editor.add_history_entry(statement.trim());
            if let Err(e) = run_sql(conn, &statement) {
                eprintln!("error: {e}");
                failures += 1;
            }
        }
        if is_blank(&pending) {
            pending.clear();
        }
    }
    if !is_blank(&pending) {
        eprintln!(
            "error: the input ended inside a statement: {}",
            pending.trim()
        );
        failures += 1;
    }
    if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(crate::output::PROBLEMS)
    }
}

/// Runs a dot command; `None` for `.quit`.
fn dot_command<W: libsql_sys::wal::Wal>(
    conn: &libsql_sys::Connection<W>,
    command: &str,
) -> Option<Result<(), String>> {
    let mut words = command.split_whitespace();
    let result = match (words.next().unwrap_or(""), words.next()) {
        (".quit" | ".exit", _) => return None,
        (".tables", _) => run_sql(
            conn,
            "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
        ),
        (".schema", None) => run_sql(
            conn,
            "SELECT sql FROM sqlite_schema WHERE sql IS NOT NULL ORDER BY tbl_name, type DESC, name",
        ),
        (".schema", Some(table)) => conn
            .prepare(
                "SELECT sql FROM sqlite_schema WHERE sql IS NOT NULL AND tbl_name = ?1 ORDER BY type DESC, name",
            )
            .and_then(|mut stmt| print_rows(&mut stmt, [table]))
            .map_err(|e| e.to_string()),
        (".help", _) => {
            println!("statements end with ';'\n.tables          the tables\n.schema [TABLE]  the schema (of one table)\n.quit            leave");
            Ok(())
        }
        (other, _) => Err(format!("unknown command {other} (try .help)")),
    };
    Some(result)
}

/// Runs one statement, printing its rows if it returns some.
fn run_sql<W: libsql_sys::wal::Wal>(
    conn: &libsql_sys::Connection<W>,
    statement: &str,
) -> Result<(), String> {
    if is_blank(statement) {
        return Ok(());
    }
    let mut stmt = conn.prepare(statement).map_err(|e| e.to_string())?;
    if stmt.column_count() > 0 {
        print_rows(&mut stmt, []).map_err(|e| e.to_string())?;
    } else {
        let changed = stmt.execute([]).map_err(|e| e.to_string())?;
        if changed > 0 {
            println!("{changed} rows changed");
        }
    }
    Ok(())
}

/// A token of SQL, as far as telling where a statement ends needs: comments and whitespace
/// are skipped, a quoted string or name is one `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token<'a> {
    /// A keyword or a name.
    Word(&'a str),
    /// `;` (at this byte offset).
    Semicolon(usize),
    /// Anything else.
    Other,
}

/// The tokens of `sql`, in order.
fn tokens(sql: &str) -> Vec<Token<'_>> {
    let bytes = sql.as_bytes();
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80;
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let b = bytes[at];
        match b {
            b'\'' | b'"' | b'`' | b'[' => {
                let close = if b == b'[' { b']' } else { b };
                at += 1;
                while at < bytes.len() && bytes[at] != close {
                    at += 1;
                }
                out.push(Token::Other);
                at += 1;
            }
            b'-' if bytes.get(at + 1) == Some(&b'-') => {
                while at < bytes.len() && bytes[at] != b'\n' {
                    at += 1;
                }
            }
            b'/' if bytes.get(at + 1) == Some(&b'*') => {
                at += 2;
                while at < bytes.len() && !(bytes[at] == b'*' && bytes.get(at + 1) == Some(&b'/')) {
                    at += 1;
                }
                at += 2;
            }
            b';' => {
                out.push(Token::Semicolon(at));
                at += 1;
            }
            b if b.is_ascii_whitespace() => at += 1,
            b if word(b) => {
                let start = at;
                while at < bytes.len() && word(bytes[at]) {
                    at += 1;
                }
                out.push(Token::Word(&sql[start..at]));
            }
            _ => {
                out.push(Token::Other);
                at += 1;
            }
        }
    }
    out
}

/// Splits the first complete statement off `sql` at its `;`, as SQLite's `sqlite3_complete`
/// would: not inside quotes or comments, and for `CREATE TRIGGER` only at the `;` after the
/// `END` that follows its body's last `;`. `None` while no statement is complete.
fn split_statement(sql: &str) -> Option<(&str, &str)> {
    let mut words: Vec<&str> = Vec::new();
    // The two tokens before the current one.
    let (mut before, mut last) = (None, None);
    for token in tokens(sql) {
        match token {
            Token::Semicolon(at) => {
                let trigger = words
                    .first()
                    .is_some_and(|w| w.eq_ignore_ascii_case("CREATE"))
                    && words
                        .iter()
                        .skip(1)
                        .take(2)
                        .any(|w| w.eq_ignore_ascii_case("TRIGGER"));
                let body_ended = matches!(last, Some(Token::Word(w)) if w.eq_ignore_ascii_case("END"))
                    && matches!(before, Some(Token::Semicolon(_)));
                if words.is_empty() || !trigger || body_ended {
                    return Some((&sql[..at], &sql[at + 1..]));
                }
            }
            Token::Word(w) if words.len() < 4 => words.push(w),
            _ => {}
        }
        (before, last) = (last, Some(token));
    }
    None
}

/// Returns true if `sql` holds nothing but whitespace and comments.
fn is_blank(sql: &str) -> bool {
    tokens(sql).is_empty()
}

/// Prints the rows of `stmt` as a table.
fn print_rows<P: libsql_sys::rusqlite::Params>(
    stmt: &mut libsql_sys::rusqlite::Statement<'_>,
    params: P,
) -> libsql_sys::rusqlite::Result<()> {
    let names: Vec<String> = stmt
        .column_names()
        .into_iter()
        .map(str::to_string)
        .collect();
    let columns = names.len();
    let mut table = Table::new(&names);
    let mut rows = stmt.query(params)?;
    while let Some(row) = rows.next()? {
        let mut cells = Vec::with_capacity(columns);
        for i in 0..columns {
            cells.push(value_text(row.get_ref(i)?));
        }
        table.row(cells);
    }
    table.print();
    Ok(())
}

fn value_text(value: ValueRef<'_>) -> String {
    match value {
        ValueRef::Null => "NULL".into(),
        ValueRef::Integer(i) => i.to_string(),
        ValueRef::Real(r) => r.to_string(),
        ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
        ValueRef::Blob(b) => {
            let hex: String = b
                .iter()
                .take(BLOB_SHOWN)
                .map(|byte| format!("{byte:02x}"))
                .collect();
            if b.len() > BLOB_SHOWN {
                format!("x'{hex}...' ({} bytes)", b.len())
            } else {
                format!("x'{hex}'")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_split_at_semicolons_outside_quotes_comments_and_trigger_bodies() {
        assert_eq!(
            split_statement("SELECT 1; SELECT 2;"),
            Some(("SELECT 1", " SELECT 2;"))
        );
        assert_eq!(
            split_statement("INSERT INTO t VALUES ('a;b'); x"),
            Some(("INSERT INTO t VALUES ('a;b')", " x"))
        );
        assert_eq!(split_statement("SELECT 1"), None);
        assert_eq!(split_statement("SELECT 1 -- ; not yet\n"), None);
        assert_eq!(
            split_statement("SELECT /* ; */ 1;"),
            Some(("SELECT /* ; */ 1", ""))
        );
        let trigger = "-- audit\nCREATE TEMP TRIGGER tr AFTER INSERT ON t BEGIN \
                       UPDATE u SET n = CASE WHEN n > 0 THEN n + 1 ELSE 1 END; \
                       DELETE FROM v; ";
        assert_eq!(split_statement(trigger), None, "CASE's END ends no trigger");
        let whole = format!("{trigger}END; SELECT 2;");
        assert_eq!(
            split_statement(&whole),
            Some((&whole[..trigger.len() + 3], " SELECT 2;"))
        );
        assert!(is_blank(" -- done\n /* and */ "));
        assert!(!is_blank(" x -- done"));
    }
}
