//! The JSON shapes of Hrana over HTTP (versions 2 and 3) and of the v1 endpoints, as sqld
//! reads and writes them: pipeline requests and responses, stream requests, statements,
//! values, results, batches and their conditions, cursor entries, errors.
//!
//! Values follow the reference exactly: integers are decimal strings, floats JSON numbers,
//! blobs standard base64 (emitted without padding, accepted with or without).

use base64::Engine;
use serde::{Deserialize, Serialize};

/// `POST /v{2,3}/pipeline`.
#[derive(Debug, Deserialize)]
pub struct PipelineRequest {
    /// The stream to continue; absent or null opens a new one.
    #[serde(default)]
    pub baton: Option<String>,
    /// The requests, executed in order.
    pub requests: Vec<StreamRequest>,
}

/// The answer to a pipeline: one result per request, in order.
#[derive(Debug, Serialize)]
pub struct PipelineResponse {
    /// The baton for the next request on this stream; null once the stream is closed.
    pub baton: Option<String>,
    /// Where to send the next request (always null: this server).
    pub base_url: Option<String>,
    /// One per request.
    pub results: Vec<StreamResult>,
}

/// One request on a stream.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamRequest {
    /// Closes the stream.
    Close,
    /// Runs one statement.
    Execute {
        /// The statement.
        stmt: Stmt,
    },
    /// Runs a batch.
    Batch {
        /// The batch.
        batch: Batch,
    },
    /// Runs several `;`-separated statements, ignoring rows.
    Sequence {
        /// The SQL text.
        #[serde(default)]
        sql: Option<String>,
        /// Or a stored SQL text.
        #[serde(default)]
        sql_id: Option<i32>,
    },
    /// Describes a statement.
    Describe {
        /// The SQL text.
        #[serde(default)]
        sql: Option<String>,
        /// Or a stored SQL text.
        #[serde(default)]
        sql_id: Option<i32>,
    },
    /// Stores an SQL text on the stream under `sql_id`.
    StoreSql {
        /// The id.
        sql_id: i32,
        /// The SQL text.
        sql: String,
    },
    /// Forgets a stored SQL text.
    CloseSql {
        /// The id.
        sql_id: i32,
    },
    /// Hrana 3: whether the connection is in autocommit mode.
    GetAutocommit,
}

/// The result of one stream request.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamResult {
    /// It succeeded.
    Ok {
        /// What it answered.
        response: StreamResponse,
    },
    /// It failed.
    Error {
        /// Why.
        error: Error,
    },
}

/// The answer to one stream request.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamResponse {
    /// To `close`.
    Close,
    /// To `execute`.
    Execute {
        /// The statement's result.
        result: StmtResult,
    },
    /// To `batch`.
    Batch {
        /// The batch's result.
        result: BatchResult,
    },
    /// To `sequence`.
    Sequence,
    /// To `describe`.
    Describe {
        /// The description.
        result: DescribeResult,
    },
    /// To `store_sql`.
    StoreSql,
    /// To `close_sql`.
    CloseSql,
    /// To `get_autocommit`.
    GetAutocommit {
        /// Whether the connection is outside a transaction.
        is_autocommit: bool,
    },
}

/// A statement with its arguments.
#[derive(Debug, Clone, Deserialize)]
pub struct Stmt {
    /// The SQL text, or
    #[serde(default)]
    pub sql: Option<String>,
    /// the id of a stored SQL text.
    #[serde(default)]
    pub sql_id: Option<i32>,
    /// Positional arguments.
    #[serde(default)]
    pub args: Vec<Value>,
    /// Named arguments.
    #[serde(default)]
    pub named_args: Vec<NamedArg>,
    /// Whether rows are returned (default true).
    #[serde(default)]
    pub want_rows: Option<bool>,
}

/// A named argument.
#[derive(Debug, Clone, Deserialize)]
pub struct NamedArg {
    /// Its name, with or without the `:`/`@`/`$` prefix.
    pub name: String,
    /// Its value.
    pub value: Value,
}

/// A batch of steps, each run if its condition holds.
#[derive(Debug, Clone, Deserialize)]
pub struct Batch {
    /// The steps.
    pub steps: Vec<BatchStep>,
}

/// One step of a batch.
#[derive(Debug, Clone, Deserialize)]
pub struct BatchStep {
    /// Runs the step only if it holds (none: always).
    #[serde(default)]
    pub condition: Option<BatchCond>,
    /// The statement.
    pub stmt: Stmt,
}

/// A condition on earlier steps of a batch.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BatchCond {
    /// Step `step` succeeded.
    Ok {
        /// An earlier step.
        step: u32,
    },
    /// Step `step` failed.
    Error {
        /// An earlier step.
        step: u32,
    },
    /// The condition does not hold.
    Not {
        /// The condition.
        cond: Box<BatchCond>,
    },
    /// All hold.
    And {
        /// The conditions.
        conds: Vec<BatchCond>,
    },
    /// One holds.
    Or {
        /// The conditions.
        conds: Vec<BatchCond>,
    },
    /// Hrana 3: the connection is in autocommit mode.
    IsAutocommit,
}

/// The result of a batch: per step, a result or an error (both null for a skipped step).
#[derive(Debug, Serialize)]
pub struct BatchResult {
    /// Per step.
    pub step_results: Vec<Option<StmtResult>>,
    /// Per step.
    pub step_errors: Vec<Option<Error>>,
}

/// A column of a result.
#[derive(Debug, Clone, Serialize)]
pub struct Col {
    /// Its name.
    pub name: Option<String>,
    /// Its declared type.
    pub decltype: Option<String>,
}

/// The result of a statement; every key is always present (clients require them).
#[derive(Debug, Serialize)]
pub struct StmtResult {
    /// The columns.
    pub cols: Vec<Col>,
    /// The rows (empty when rows were not wanted).
    pub rows: Vec<Vec<Value>>,
    /// Rows changed by an INSERT, UPDATE or DELETE.
    pub affected_row_count: u64,
    /// The rowid of the last insert, as a decimal string.
    #[serde(with = "option_i64_string")]
    pub last_insert_rowid: Option<i64>,
    /// Unused by clients; always null.
    pub replication_index: Option<String>,
    /// Rows SQLite stepped through.
    pub rows_read: u64,
    /// Rows written.
    pub rows_written: u64,
    /// Time spent running the statement.
    pub query_duration_ms: f64,
}

/// A parameter of a described statement.
#[derive(Debug, Serialize)]
pub struct DescribeParam {
    /// Its name, if it has one.
    pub name: Option<String>,
}

/// The description of a statement.
#[derive(Debug, Serialize)]
pub struct DescribeResult {
    /// Its parameters.
    pub params: Vec<DescribeParam>,
    /// Its columns.
    pub cols: Vec<Col>,
    /// Whether it is an EXPLAIN.
    pub is_explain: bool,
    /// Whether it only reads.
    pub is_readonly: bool,
}

/// A Hrana error: a message and a code (clients require both keys).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Error {
    /// What went wrong.
    pub message: String,
    /// A machine-readable code (`SQLITE_CONSTRAINT`, `SQL_PARSE_ERROR`, ...).
    pub code: String,
}

impl Error {
    /// Returns an error with `code` and `message`.
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Error {
            message: message.into(),
            code: code.to_string(),
        }
    }
}

/// A value, as Hrana writes it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// A 64-bit integer.
    Integer(i64),
    /// A float.
    Float(f64),
    /// Text.
    Text(String),
    /// A blob.
    Blob(Vec<u8>),
}

/// The wire form of a value.
#[derive(Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireValue {
    Null,
    Integer { value: String },
    Float { value: f64 },
    Text { value: String },
    Blob { base64: String },
}

impl Serialize for Value {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let wire = match self {
            Value::Null => WireValue::Null,
            Value::Integer(i) => WireValue::Integer {
                value: i.to_string(),
            },
            Value::Float(f) => WireValue::Float { value: *f },
            Value::Text(s) => WireValue::Text { value: s.clone() },
            Value::Blob(b) => WireValue::Blob {
                base64: base64::engine::general_purpose::STANDARD_NO_PAD.encode(b),
            },
        };
        wire.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        Ok(match WireValue::deserialize(deserializer)? {
            WireValue::Null => Value::Null,
            WireValue::Integer { value } => Value::Integer(value.parse().map_err(|_| {
                D::Error::custom(format!("integer value {value:?} is not a 64-bit integer"))
            })?),
            WireValue::Float { value } => Value::Float(value),
            WireValue::Text { value } => Value::Text(value),
            WireValue::Blob { base64 } => {
                Value::Blob(decode_base64(&base64).map_err(|e| {
                    D::Error::custom(format!("blob value is not valid base64: {e}"))
                })?)
            }
        })
    }
}

/// Decodes standard base64 with or without `=` padding.
pub fn decode_base64(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    base64::engine::general_purpose::STANDARD_NO_PAD.decode(text.trim_end_matches('='))
}

/// `last_insert_rowid` as a decimal string or null.
mod option_i64_string {
    use serde::Serializer;

    pub fn serialize<S: Serializer>(value: &Option<i64>, serializer: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(v) => serializer.serialize_str(&v.to_string()),
            None => serializer.serialize_none(),
        }
    }
}

/// `POST /v3/cursor`.
#[derive(Debug, Deserialize)]
pub struct CursorRequest {
    /// The stream to continue; absent or null opens a new one.
    #[serde(default)]
    pub baton: Option<String>,
    /// The batch whose rows are streamed.
    pub batch: Batch,
}

/// The first line of a cursor response.
#[derive(Debug, Serialize)]
pub struct CursorHead {
    /// The baton for the next request on this stream.
    pub baton: Option<String>,
    /// Always null.
    pub base_url: Option<String>,
}

/// One line of a cursor response after the first.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CursorEntry {
    /// A step starts.
    StepBegin {
        /// Its index.
        step: u32,
        /// Its columns.
        cols: Vec<Col>,
    },
    /// A row of the current step.
    Row {
        /// The values.
        row: Vec<Value>,
    },
    /// The current step ended (`last_insert_rowid` as a number, as sqld sends it).
    StepEnd {
        /// Rows changed.
        affected_row_count: u64,
        /// The rowid of the last insert.
        last_insert_rowid: Option<i64>,
    },
    /// A step failed.
    StepError {
        /// Its index.
        step: u32,
        /// Why.
        error: Error,
    },
}

/// `POST /v1/execute`.
#[derive(Debug, Deserialize)]
pub struct V1ExecuteRequest {
    /// The statement.
    pub stmt: Stmt,
}

/// `POST /v1/batch`.
#[derive(Debug, Deserialize)]
pub struct V1BatchRequest {
    /// The batch.
    pub batch: Batch,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_take_and_give_the_reference_forms() {
        let values: Vec<Value> = serde_json::from_str(
            r#"[{"type":"null"},{"type":"integer","value":"9223372036854775807"},
                {"type":"float","value":1.5},{"type":"text","value":"é"},
                {"type":"blob","base64":"AAEC"},{"type":"blob","base64":"AA=="}]"#,
        )
        .expect("parse");
        assert_eq!(
            values,
            vec![
                Value::Null,
                Value::Integer(i64::MAX),
                Value::Float(1.5),
                Value::Text("é".into()),
                Value::Blob(vec![0, 1, 2]),
                Value::Blob(vec![0]),
            ]
        );
        let text = serde_json::to_string(&values).expect("serialize");
        assert_eq!(
            text,
            r#"[{"type":"null"},{"type":"integer","value":"9223372036854775807"},{"type":"float","value":1.5},{"type":"text","value":"é"},{"type":"blob","base64":"AAEC"},{"type":"blob","base64":"AA"}]"#
        );
    }

    #[test]
    fn a_bad_integer_or_blob_says_what_is_wrong() {
        let err = serde_json::from_str::<Value>(r#"{"type":"integer","value":"1.5"}"#)
            .expect_err("not an integer");
        assert!(err.to_string().contains("not a 64-bit integer"), "{err}");
        let err = serde_json::from_str::<Value>(r#"{"type":"blob","base64":"!!"}"#)
            .expect_err("not base64");
        assert!(err.to_string().contains("not valid base64"), "{err}");
    }

    #[test]
    fn a_statement_result_always_carries_every_key() {
        let result = StmtResult {
            cols: vec![],
            rows: vec![],
            affected_row_count: 0,
            last_insert_rowid: None,
            replication_index: None,
            rows_read: 0,
            rows_written: 0,
            query_duration_ms: 0.0,
        };
        let json: serde_json::Value = serde_json::to_value(&result).expect("serialize");
        for key in [
            "cols",
            "rows",
            "affected_row_count",
            "last_insert_rowid",
            "replication_index",
            "rows_read",
            "rows_written",
            "query_duration_ms",
        ] {
            assert!(json.get(key).is_some(), "{key} is missing from {json}");
        }
    }
}
