//! Running Hrana requests on one SQLite connection: statements with their arguments bound as
//! sqld binds them, batches and their conditions, sequences, descriptions, stored SQL; and
//! SQLite's errors mapped to Hrana's codes. Everything here blocks: it runs on the server's
//! SQL threads, never on an executor thread.

use std::collections::HashMap;
use std::time::Instant;

use libsql_sys::rusqlite::{self, types::ValueRef, ErrorCode, StatementStatus};

use crate::proto::{
    Batch, BatchCond, BatchResult, Col, DescribeParam, DescribeResult, Error, Stmt, StmtResult,
    Value,
};

/// A request that breaks the protocol (not a failed statement): the whole HTTP request fails
/// with 400 and the stream is dropped, as sqld does.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct ProtocolError(pub String);

/// The Hrana version of the route a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// `/v1/...` and `/v2/pipeline`.
    V2,
    /// `/v3/pipeline` and `/v3/cursor`.
    V3,
}

/// Limits applied while running requests.
#[derive(Debug, Clone, Copy)]
pub struct RunLimits {
    /// SQL texts one stream may store.
    pub max_stored_sql: usize,
    /// Bytes of one stored SQL text.
    pub max_stored_sql_bytes: usize,
}

/// What a stream keeps between requests besides its connection: its stored SQL texts.
#[derive(Debug, Default)]
pub struct SqlStore {
    texts: HashMap<i32, String>,
}

impl SqlStore {
    /// Stores `sql` under `id`: reusing an id is a protocol error, too many or too large a
    /// Hrana error.
    pub fn store(
        &mut self,
        id: i32,
        sql: String,
        limits: &RunLimits,
    ) -> Result<Result<(), Error>, ProtocolError> {
        if self.texts.contains_key(&id) {
            return Err(ProtocolError(format!("SQL text {id} is already stored")));
        }
        if self.texts.len() >= limits.max_stored_sql {
            return Ok(Err(Error::new(
                "SQL_STORE_TOO_MANY",
                format!(
                    "a stream may store at most {} SQL texts",
                    limits.max_stored_sql
                ),
            )));
        }
        if sql.len() > limits.max_stored_sql_bytes {
            return Ok(Err(Error::new(
                "SQL_STORE_TOO_LARGE",
                format!(
                    "a stored SQL text may take at most {} bytes; this one takes {}",
                    limits.max_stored_sql_bytes,
                    sql.len()
                ),
            )));
        }
        self.texts.insert(id, sql);
        Ok(Ok(()))
    }

    /// Forgets `id` (an unknown id is not an error).
    pub fn close(&mut self, id: i32) {
        self.texts.remove(&id);
    }

    /// Returns the SQL of a request that names it by text or by id: exactly one must be given,
    /// and the id must be stored.
    pub fn resolve<'a>(
        &'a self,
        sql: Option<&'a str>,
        sql_id: Option<i32>,
    ) -> Result<&'a str, ProtocolError> {
        match (sql, sql_id) {
            (Some(sql), None) => Ok(sql),
            (None, Some(id)) => self
                .texts
                .get(&id)
                .map(String::as_str)
                .ok_or_else(|| ProtocolError(format!("SQL text {id} is not stored"))),
            (Some(_), Some(_)) => Err(ProtocolError(
                "a statement gives both sql and sql_id".to_string(),
            )),
            (None, None) => Err(ProtocolError(
                "a statement gives neither sql nor sql_id".to_string(),
            )),
        }
    }
}

/// Counts rows across the statements of one response, against `max_response_rows`.
#[derive(Debug)]
pub struct ResponseBudget {
    rows_left: usize,
    max_rows: usize,
    bytes_left: usize,
    max_bytes: usize,
}

impl ResponseBudget {
    /// A budget of `max_rows` rows taking about `max_bytes` bytes of JSON.
    pub fn new(max_rows: usize, max_bytes: usize) -> Self {
        ResponseBudget {
            rows_left: max_rows,
            max_rows,
            bytes_left: max_bytes,
            max_bytes,
        }
    }

    /// Takes `row` out of the budget (its size as the JSON it becomes, about).
    fn take(&mut self, row: &[Value]) -> Result<(), Error> {
        if self.rows_left == 0 {
            return Err(Error::new(
                "RESPONSE_TOO_LARGE",
                format!("a response may carry at most {} rows", self.max_rows),
            ));
        }
        let bytes: usize = row.iter().map(json_size).sum();
        if bytes > self.bytes_left {
            return Err(Error::new(
                "RESPONSE_TOO_LARGE",
                format!(
                    "a response may carry at most {} bytes of values",
                    self.max_bytes
                ),
            ));
        }
        self.rows_left -= 1;
        self.bytes_left -= bytes;
        Ok(())
    }
}

/// About the bytes `value` takes in a JSON response.
fn json_size(value: &Value) -> usize {
    const ENVELOPE: usize = 32;
    ENVELOPE
        + match value {
            Value::Null => 0,
            Value::Integer(_) | Value::Float(_) => 24,
            Value::Text(s) => s.len(),
            Value::Blob(b) => b.len().div_ceil(3) * 4,
        }
}

/// Maps a SQLite error to Hrana's error: SQLite's primary code names, as sqld reports them.
pub fn sqlite_error(e: &rusqlite::Error) -> Error {
    match e {
        rusqlite::Error::SqliteFailure(failure, message) => {
            let code = match failure.code {
                ErrorCode::InternalMalfunction => "SQLITE_INTERNAL",
                ErrorCode::PermissionDenied => "SQLITE_PERM",
                ErrorCode::OperationAborted => "SQLITE_ABORT",
                ErrorCode::DatabaseBusy => "SQLITE_BUSY",
                ErrorCode::DatabaseLocked => "SQLITE_LOCKED",
                ErrorCode::OutOfMemory => "SQLITE_NOMEM",
                ErrorCode::ReadOnly => "SQLITE_READONLY",
                ErrorCode::OperationInterrupted => "SQLITE_INTERRUPT",
                ErrorCode::SystemIoFailure => "SQLITE_IOERR",
                ErrorCode::DatabaseCorrupt => "SQLITE_CORRUPT",
                ErrorCode::NotFound => "SQLITE_NOTFOUND",
                ErrorCode::DiskFull => "SQLITE_FULL",
                ErrorCode::CannotOpen => "SQLITE_CANTOPEN",
                ErrorCode::FileLockingProtocolFailed => "SQLITE_PROTOCOL",
                ErrorCode::SchemaChanged => "SQLITE_SCHEMA",
                ErrorCode::TooBig => "SQLITE_TOOBIG",
                ErrorCode::ConstraintViolation => "SQLITE_CONSTRAINT",
                ErrorCode::TypeMismatch => "SQLITE_MISMATCH",
                ErrorCode::ApiMisuse => "SQLITE_MISUSE",
                ErrorCode::NoLargeFileSupport => "SQLITE_NOLFS",
                ErrorCode::AuthorizationForStatementDenied => "SQLITE_AUTH",
                ErrorCode::ParameterOutOfRange => "SQLITE_RANGE",
                ErrorCode::NotADatabase => "SQLITE_NOTADB",
                _ => "SQLITE_UNKNOWN",
            };
            let message = message.clone().unwrap_or_else(|| failure.to_string());
            Error::new(code, format!("SQLite error: {message}"))
        }
        rusqlite::Error::SqlInputError { msg, offset, .. } => Error::new(
            "SQL_INPUT_ERROR",
            format!("SQL input error: {msg} (at offset {offset})"),
        ),
        rusqlite::Error::InvalidParameterCount(given, expected) => Error::new(
            "ARGS_INVALID",
            format!("{given} arguments were given for {expected} parameters"),
        ),
        other => Error::new("SQLITE_UNKNOWN", format!("SQLite error: {other}")),
    }
}

/// Prepares the one statement of `sql`: none is `SQL_NO_STATEMENT`, several
/// `SQL_MANY_STATEMENTS`.
fn prepare_one<'c>(
    conn: &'c rusqlite::Connection,
    sql: &str,
) -> Result<rusqlite::Statement<'c>, Error> {
    let mut statements = rusqlite::Batch::new(conn, sql);
    let first = match statements.next() {
        Ok(Some(first)) => first,
        Ok(None) => {
            return Err(Error::new(
                "SQL_NO_STATEMENT",
                "the SQL text holds no statement",
            ))
        }
        Err(e) => return Err(sqlite_error(&e)),
    };
    // Whatever follows that is not blank or a comment (even one that does not prepare) is a
    // second statement.
    if !matches!(statements.next(), Ok(None)) {
        return Err(Error::new(
            "SQL_MANY_STATEMENTS",
            "the SQL text holds more than one statement; use a batch or a sequence",
        ));
    }
    Ok(first)
}

fn to_sql_value(value: &Value) -> rusqlite::types::Value {
    match value {
        Value::Null => rusqlite::types::Value::Null,
        Value::Integer(i) => rusqlite::types::Value::Integer(*i),
        Value::Float(f) => rusqlite::types::Value::Real(*f),
        Value::Text(s) => rusqlite::types::Value::Text(s.clone()),
        Value::Blob(b) => rusqlite::types::Value::Blob(b.clone()),
    }
}

fn from_sql_value(value: ValueRef<'_>) -> Value {
    match value {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Integer(i),
        ValueRef::Real(f) => Value::Float(f),
        ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
    }
}

/// Binds `stmt`'s arguments as sqld does: `?NNN` takes positional argument NNN, `:x`/`@x`/`$x`
/// the named argument of that name (with or without its prefix), a nameless `?` the positional
/// argument at its index. A named parameter with no named arguments given takes the positional
/// argument at its index, as SQLite numbers it.
fn bind(statement: &mut rusqlite::Statement<'_>, stmt: &Stmt) -> Result<(), Error> {
    if !stmt.args.is_empty() && !stmt.named_args.is_empty() {
        return Err(Error::new(
            "ARGS_BOTH_POSITIONAL_AND_NAMED",
            "a statement takes positional or named arguments, not both",
        ));
    }
    let count = statement.parameter_count();
    if stmt.args.len() > count {
        return Err(Error::new(
            "ARGS_INVALID",
            format!(
                "{} positional arguments were given for {count} parameters",
                stmt.args.len()
            ),
        ));
    }
    for index in 1..=count {
        let name = statement.parameter_name(index).map(str::to_string);
        let value = match name.as_deref() {
            Some(name) if name.starts_with('?') => {
                let position: usize = name[1..].parse().map_err(|_| {
                    Error::new("ARGS_INVALID", format!("parameter {name} is not a number"))
                })?;
                stmt.args.get(position.wrapping_sub(1))
            }
            Some(name) if !stmt.named_args.is_empty() => {
                let bare = &name[1..];
                stmt.named_args
                    .iter()
                    .find(|a| a.name == name)
                    .or_else(|| stmt.named_args.iter().find(|a| a.name == bare))
                    .map(|a| &a.value)
            }
            _ => stmt.args.get(index - 1),
        };
        let Some(value) = value else {
            let shown = name.unwrap_or_else(|| format!("?{index}"));
            return Err(Error::new(
                "ARGS_INVALID",
                format!("value for parameter {shown} not found"),
            ));
        };
        statement
            .raw_bind_parameter(index, to_sql_value(value))
            .map_err(|e| sqlite_error(&e))?;
    }
    Ok(())
}

fn columns(statement: &rusqlite::Statement<'_>) -> Vec<Col> {
    statement
        .columns()
        .iter()
        .map(|c| Col {
            name: Some(c.name().to_string()),
            decltype: c.decl_type().map(str::to_string),
        })
        .collect()
}

/// Runs one statement; `sql` is its text, resolved by the caller.
pub fn execute_stmt(
    conn: &rusqlite::Connection,
    stmt: &Stmt,
    sql: &str,
    budget: &mut ResponseBudget,
) -> Result<StmtResult, Error> {
    let started = Instant::now();
    let mut statement = prepare_one(conn, sql)?;
    bind(&mut statement, stmt)?;
    let cols = columns(&statement);
    let want_rows = stmt.want_rows.unwrap_or(true);
    let column_count = cols.len();
    let mut rows: Vec<Vec<Value>> = Vec::new();
    // A write (`INSERT ... RETURNING`) has changed the database by its first row: stopping
    // it part way would report a failure for what may commit. Only reads are held to the
    // budget.
    let budgeted = statement.readonly();
    {
        let mut cursor = statement.raw_query();
        while let Some(row) = cursor.next().map_err(|e| sqlite_error(&e))? {
            if want_rows {
                let mut values = Vec::with_capacity(column_count);
                for i in 0..column_count {
                    values.push(from_sql_value(
                        row.get_ref(i).map_err(|e| sqlite_error(&e))?,
                    ));
                }
                if budgeted {
                    budget.take(&values)?;
                }
                rows.push(values);
            }
        }
    }
    let affected_row_count = if statement.readonly() {
        0
    } else {
        conn.changes()
    };
    Ok(StmtResult {
        cols,
        rows,
        affected_row_count,
        last_insert_rowid: Some(conn.last_insert_rowid()),
        replication_index: None,
        rows_read: statement.get_status(StatementStatus::RowsRead).max(0) as u64,
        rows_written: statement.get_status(StatementStatus::RowsWritten).max(0) as u64,
        query_duration_ms: started.elapsed().as_secs_f64() * 1000.0,
    })
}

/// Checks that every condition of `batch` names an earlier step and uses only what `version`
/// has.
pub fn check_batch(batch: &Batch, version: Version) -> Result<(), ProtocolError> {
    fn check(cond: &BatchCond, step: usize, version: Version) -> Result<(), ProtocolError> {
        match cond {
            BatchCond::Ok { step: s } | BatchCond::Error { step: s } => {
                if *s as usize >= step {
                    return Err(ProtocolError(
                        "Invalid reference to step in a batch condition".to_string(),
                    ));
                }
                Ok(())
            }
            BatchCond::Not { cond } => check(cond, step, version),
            BatchCond::And { conds } | BatchCond::Or { conds } => {
                conds.iter().try_for_each(|c| check(c, step, version))
            }
            BatchCond::IsAutocommit => match version {
                Version::V3 => Ok(()),
                Version::V2 => Err(ProtocolError(
                    "the is_autocommit condition needs Hrana 3 (/v3/pipeline)".to_string(),
                )),
            },
        }
    }
    for (i, step) in batch.steps.iter().enumerate() {
        if let Some(cond) = &step.condition {
            check(cond, i, version)?;
        }
    }
    Ok(())
}

/// Whether step outcomes so far satisfy `cond` (checked by `check_batch`).
pub fn holds(cond: &BatchCond, outcomes: &[Option<bool>], conn: &rusqlite::Connection) -> bool {
    match cond {
        BatchCond::Ok { step } => outcomes.get(*step as usize) == Some(&Some(true)),
        BatchCond::Error { step } => outcomes.get(*step as usize) == Some(&Some(false)),
        BatchCond::Not { cond } => !holds(cond, outcomes, conn),
        BatchCond::And { conds } => conds.iter().all(|c| holds(c, outcomes, conn)),
        BatchCond::Or { conds } => conds.iter().any(|c| holds(c, outcomes, conn)),
        BatchCond::IsAutocommit => conn.is_autocommit(),
    }
}

/// Runs a batch (checked by `check_batch`): each step whose condition holds.
pub fn execute_batch(
    conn: &rusqlite::Connection,
    batch: &Batch,
    store: &SqlStore,
    budget: &mut ResponseBudget,
) -> Result<BatchResult, ProtocolError> {
    let mut outcomes: Vec<Option<bool>> = Vec::with_capacity(batch.steps.len());
    let mut step_results = Vec::with_capacity(batch.steps.len());
    let mut step_errors = Vec::with_capacity(batch.steps.len());
    for step in &batch.steps {
        let run = step
            .condition
            .as_ref()
            .is_none_or(|c| holds(c, &outcomes, conn));
        if !run {
            outcomes.push(None);
            step_results.push(None);
            step_errors.push(None);
            continue;
        }
        let sql = store.resolve(step.stmt.sql.as_deref(), step.stmt.sql_id)?;
        match execute_stmt(conn, &step.stmt, sql, budget) {
            Ok(result) => {
                outcomes.push(Some(true));
                step_results.push(Some(result));
                step_errors.push(None);
            }
            Err(error) => {
                outcomes.push(Some(false));
                step_results.push(None);
                step_errors.push(Some(error));
            }
        }
    }
    Ok(BatchResult {
        step_results,
        step_errors,
    })
}

/// Runs the `;`-separated statements of `sql` in order, ignoring rows; stops at the first
/// error.
pub fn execute_sequence(conn: &rusqlite::Connection, sql: &str) -> Result<(), Error> {
    let mut statements = rusqlite::Batch::new(conn, sql);
    while let Some(mut statement) = statements.next().map_err(|e| sqlite_error(&e))? {
        let mut rows = statement.raw_query();
        while rows.next().map_err(|e| sqlite_error(&e))?.is_some() {}
    }
    Ok(())
}

/// Describes the one statement of `sql`.
pub fn describe(conn: &rusqlite::Connection, sql: &str) -> Result<DescribeResult, Error> {
    let statement = prepare_one(conn, sql)?;
    let params = (1..=statement.parameter_count())
        .map(|i| DescribeParam {
            name: statement.parameter_name(i).map(str::to_string),
        })
        .collect();
    Ok(DescribeResult {
        params,
        cols: columns(&statement),
        is_explain: statement.is_explain() != 0,
        is_readonly: statement.readonly(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::NamedArg;

    fn conn() -> rusqlite::Connection {
        rusqlite::Connection::open_in_memory().expect("open")
    }

    fn stmt(sql: &str, args: Vec<Value>) -> Stmt {
        Stmt {
            sql: Some(sql.into()),
            sql_id: None,
            args,
            named_args: vec![],
            want_rows: None,
        }
    }

    fn run(conn: &rusqlite::Connection, stmt: &Stmt) -> Result<StmtResult, Error> {
        let sql = stmt.sql.clone().expect("sql");
        execute_stmt(conn, stmt, &sql, &mut ResponseBudget::new(1000, usize::MAX))
    }

    #[test]
    fn arguments_bind_by_position_number_and_name_as_sqld_binds_them() {
        let conn = conn();
        let result = run(
            &conn,
            &stmt(
                "SELECT ?, ?3, ?2",
                vec![
                    Value::Integer(1),
                    Value::Text("b".into()),
                    Value::Float(2.5),
                ],
            ),
        )
        .expect("positional");
        assert_eq!(
            result.rows,
            vec![vec![
                Value::Integer(1),
                Value::Float(2.5),
                Value::Text("b".into())
            ]]
        );
        let mut named = stmt("SELECT :a, @b, $c", vec![]);
        named.named_args = vec![
            NamedArg {
                name: ":a".into(),
                value: Value::Integer(1),
            },
            NamedArg {
                name: "b".into(),
                value: Value::Null,
            },
            NamedArg {
                name: "c".into(),
                value: Value::Blob(vec![1]),
            },
        ];
        let result = run(&conn, &named).expect("named");
        assert_eq!(
            result.rows,
            vec![vec![Value::Integer(1), Value::Null, Value::Blob(vec![1])]]
        );
        let err = run(&conn, &stmt("SELECT ?, ?", vec![Value::Null])).expect_err("missing");
        assert_eq!(err.code, "ARGS_INVALID");
        let err =
            run(&conn, &stmt("SELECT ?", vec![Value::Null, Value::Null])).expect_err("too many");
        assert_eq!(err.code, "ARGS_INVALID");
        let mut both = stmt("SELECT :a", vec![Value::Null]);
        both.named_args = named.named_args.clone();
        assert_eq!(
            run(&conn, &both).expect_err("both").code,
            "ARGS_BOTH_POSITIONAL_AND_NAMED"
        );
    }

    #[test]
    fn one_statement_exactly_and_errors_carry_sqlite_codes() {
        let conn = conn();
        assert_eq!(
            run(&conn, &stmt("SELECT 1; SELECT 2", vec![]))
                .unwrap_err()
                .code,
            "SQL_MANY_STATEMENTS"
        );
        assert_eq!(
            run(&conn, &stmt("  -- nothing\n", vec![]))
                .unwrap_err()
                .code,
            "SQL_NO_STATEMENT"
        );
        assert!(run(&conn, &stmt("SELECT 1;  -- trailing\n", vec![])).is_ok());
        run(
            &conn,
            &stmt("CREATE TABLE t(a INTEGER PRIMARY KEY)", vec![]),
        )
        .expect("create");
        let inserted = run(&conn, &stmt("INSERT INTO t VALUES (7)", vec![])).expect("insert");
        assert_eq!(inserted.affected_row_count, 1);
        assert_eq!(inserted.last_insert_rowid, Some(7));
        let err = run(&conn, &stmt("INSERT INTO t VALUES (7)", vec![])).unwrap_err();
        assert_eq!(err.code, "SQLITE_CONSTRAINT");
        assert!(err.message.contains("UNIQUE"), "{}", err.message);
        let err = run(&conn, &stmt("SELEC 1", vec![])).unwrap_err();
        assert!(
            err.code == "SQL_INPUT_ERROR" || err.code == "SQLITE_UNKNOWN",
            "{err:?}"
        );
        let selected = run(&conn, &stmt("SELECT a FROM t", vec![])).expect("select");
        assert_eq!(selected.affected_row_count, 0, "a read changes nothing");
        assert_eq!(selected.cols[0].decltype.as_deref(), Some("INTEGER"));
    }

    #[test]
    fn batch_conditions_see_earlier_steps_and_refuse_later_ones() {
        let conn = conn();
        let batch: Batch = serde_json::from_str(
            r#"{"steps":[
                {"stmt":{"sql":"SELECT 1"}},
                {"stmt":{"sql":"SELECT nope"}},
                {"condition":{"type":"ok","step":0},"stmt":{"sql":"SELECT 2"}},
                {"condition":{"type":"ok","step":1},"stmt":{"sql":"SELECT 3"}},
                {"condition":{"type":"and","conds":[{"type":"error","step":1},{"type":"not","cond":{"type":"ok","step":3}}]},"stmt":{"sql":"SELECT 4"}},
                {"condition":{"type":"or","conds":[{"type":"ok","step":3},{"type":"is_autocommit"}]},"stmt":{"sql":"SELECT 5"}}
            ]}"#,
        )
        .expect("parse");
        check_batch(&batch, Version::V3).expect("valid on v3");
        assert!(
            check_batch(&batch, Version::V2).is_err(),
            "is_autocommit is v3"
        );
        let result = execute_batch(
            &conn,
            &batch,
            &SqlStore::default(),
            &mut ResponseBudget::new(100, usize::MAX),
        )
        .expect("run");
        let ran: Vec<bool> = result.step_results.iter().map(Option::is_some).collect();
        assert_eq!(ran, vec![true, false, true, false, true, true]);
        assert!(result.step_errors[1].is_some());
        assert!(result.step_errors[3].is_none(), "skipped: both null");
        let forward: Batch = serde_json::from_str(
            r#"{"steps":[{"condition":{"type":"ok","step":0},"stmt":{"sql":"SELECT 1"}}]}"#,
        )
        .expect("parse");
        assert!(check_batch(&forward, Version::V3).is_err());
    }

    #[test]
    fn stored_sql_has_limits_and_names_what_is_missing() {
        let limits = RunLimits {
            max_stored_sql: 1,
            max_stored_sql_bytes: 8,
        };
        let mut store = SqlStore::default();
        assert_eq!(store.store(1, "SELECT 1".into(), &limits), Ok(Ok(())));
        assert!(
            store.store(1, "SELECT 1".into(), &limits).is_err(),
            "reused id"
        );
        assert_eq!(
            store
                .store(2, "SELECT 2".into(), &limits)
                .expect("hrana")
                .unwrap_err()
                .code,
            "SQL_STORE_TOO_MANY"
        );
        store.close(1);
        store.close(99);
        assert_eq!(
            store
                .store(2, "SELECT 22".into(), &limits)
                .expect("hrana")
                .unwrap_err()
                .code,
            "SQL_STORE_TOO_LARGE"
        );
        assert!(store.resolve(None, Some(5)).is_err());
        assert!(store.resolve(Some("x"), Some(5)).is_err());
        assert!(store.resolve(None, None).is_err());
    }

    #[test]
    fn a_response_carries_at_most_its_row_budget() {
        let conn = conn();
        let sql = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20) SELECT i FROM n";
        let err = execute_stmt(
            &conn,
            &stmt(sql, vec![]),
            sql,
            &mut ResponseBudget::new(5, usize::MAX),
        )
        .expect_err("too many rows");
        assert_eq!(err.code, "RESPONSE_TOO_LARGE");
        let mut no_rows = stmt(sql, vec![]);
        no_rows.want_rows = Some(false);
        let result = execute_stmt(
            &conn,
            &no_rows,
            sql,
            &mut ResponseBudget::new(5, usize::MAX),
        )
        .expect("no rows");
        assert!(result.rows.is_empty());
        let blobs = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20) SELECT randomblob(3000) FROM n";
        let err = execute_stmt(
            &conn,
            &stmt(blobs, vec![]),
            blobs,
            &mut ResponseBudget::new(100, 20_000),
        )
        .expect_err("too many bytes");
        assert_eq!(err.code, "RESPONSE_TOO_LARGE");
        assert!(err.message.contains("bytes"), "{}", err.message);
        let fits = execute_stmt(
            &conn,
            &stmt(blobs, vec![]),
            blobs,
            &mut ResponseBudget::new(100, 200_000),
        )
        .expect("fits");
        assert_eq!(fits.rows.len(), 20);
        assert!(result.rows.is_empty());
    }

    #[test]
    fn a_sequence_runs_until_its_first_error_and_describe_names_parameters() {
        let conn = conn();
        let err = execute_sequence(
            &conn,
            "CREATE TABLE s(a); INSERT INTO s VALUES (1); INSERT INTO nope VALUES (2); INSERT INTO s VALUES (3);",
        )
        .expect_err("stops");
        assert!(err.message.contains("no such table"), "{}", err.message);
        let count: i64 = conn
            .query_row("SELECT count(*) FROM s", [], |r| r.get(0))
            .expect("count");
        assert_eq!(count, 1);
        let description = describe(&conn, "SELECT a, ? FROM s WHERE a = :x").expect("describe");
        let names: Vec<_> = description.params.iter().map(|p| p.name.clone()).collect();
        assert_eq!(names, vec![None, Some(":x".to_string())]);
        assert_eq!(description.cols.len(), 2);
        assert!(description.is_readonly);
        assert!(!description.is_explain);
    }
}
