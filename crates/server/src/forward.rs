//! Writes a read replica forwards to its primary (`ReplicaConfig::forward_writes`), and what
//! the primary adds to its answer for them.
//!
//! **On the replica** a request that starts a stream (no baton) or needs none (`/v1/*`) is
//! sent whole to the primary, its stream here closed, when one of its statements may write or
//! does not prepare here (the replica's schema may be behind the primary's: a write judged on
//! it could be a no-op here that the primary would have made), judged before any runs
//! (`may_write`); else it runs here, and is still sent if refused read-only (a result with
//! `SQLITE_READONLY`, as `BEGIN IMMEDIATE` is: the replica's log takes no write, so nothing
//! it ran had an effect). The primary's answer goes back to the client once the
//! replica has applied the primary's commits up to it (read your writes; waited for at most
//! `READ_YOUR_WRITES_WAIT`, then answered anyway). A stream that went to the primary stays
//! there: its batons reach the client as the primary's with the prefix `p.` (never in the
//! replica's own batons, which are base64), and a request carrying one is forwarded whole.
//! A stream that began on the replica stays on the replica, so a write after its first
//! request is refused read-only: a transaction that writes is forwarded when its first request
//! writes (`BEGIN IMMEDIATE`, or the write itself).
//!
//! A forward that never reached the primary (it cannot be connected to) answers 503
//! `PRIMARY_UNAVAILABLE`; one whose answer was lost answers 502 `PRIMARY_ANSWER_LOST`, whose
//! message says the write may have been applied.
//!
//! **On the primary** a request with the header `x-libsql-wal-forwarded` is answered with its
//! namespace's last committed frame_no after it, in `x-libsql-wal-frame-no`, and the log that
//! frame_no is of (`{log_id}/{generation}/{incarnation}`, as a hello names it) in
//! `x-libsql-wal-log`: the replica waits until it has applied that frame_no *of that log*, so
//! a primary that started a new log in between (a rewind, a crash) is not taken for one whose
//! numbers the replica already passed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder};
use http_body_util::{BodyExt, Full};
use libsql_wal::LogIdentity;
use libsql_wal_backend::NamespaceName;
use tracing::warn;

use crate::proto::{Batch, BatchResult, CursorEntry, StreamRequest, StreamResponse, StreamResult};
use crate::replica::Shared;
use crate::user::Failure;
use crate::State;

/// The header a replica marks a forwarded request with.
pub(crate) const FORWARDED: &str = "x-libsql-wal-forwarded";
/// The header of the primary's answer to a forwarded request: its last committed frame_no.
pub(crate) const FRAME_NO: &str = "x-libsql-wal-frame-no";
/// The header of the primary's answer to a forwarded request: the log `FRAME_NO` is of.
pub(crate) const LOG: &str = "x-libsql-wal-log";
/// What marks a baton of a stream on the primary.
const PRIMARY_BATON: &str = "p.";
/// How long a forwarded request may take on the primary, answer included.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a forwarded answer waits for the replica to apply the primary's commits up to it.
pub(crate) const READ_YOUR_WRITES_WAIT: Duration = Duration::from_secs(5);

/// The code of the replica's refusal of a write.
const READ_ONLY: &str = "SQLITE_READONLY";

/// A replica's way to its primary's user API.
#[derive(Clone)]
pub(crate) struct Forwarder {
    pub(crate) shared: Arc<Shared>,
    pub(crate) runtime: tokio::runtime::Handle,
}

/// Which kind of answer a forwarded request gets: where its baton is.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Answer {
    /// A JSON object with `baton` and `base_url` (a pipeline).
    Pipeline,
    /// Lines of JSON, the first with `baton` and `base_url` (a cursor).
    Cursor,
    /// No stream (`/v1/*`).
    Stateless,
}

/// The primary's answer to a forwarded request.
struct Forwarded {
    status: StatusCode,
    content_type: Option<String>,
    body: Bytes,
    /// Whether the replica applied the primary's commits up to the answer before it went back.
    read_back: bool,
}

impl Forwarder {
    /// Sends `body` to `path` of the primary for `namespace`; returns its answer (as
    /// `Forwarded::response` makes it) once the replica has applied the primary's commits up
    /// to it (or `READ_YOUR_WRITES_WAIT` passed).
    pub(crate) async fn send(
        &self,
        namespace: &NamespaceName,
        path: &'static str,
        body: Bytes,
        answer: Answer,
    ) -> Result<HttpResponse, Failure> {
        let shared = self.shared.clone();
        let on = namespace.clone();
        let sent = Arc::new(AtomicBool::new(false));
        let sending = sent.clone();
        // Counted in the task: a client that leaves does not stop the write.
        let ran = self
            .runtime
            .spawn(async move {
                let forwarded = forward(&shared, &on, path, body, &sending).await;
                shared.count_forward(outcome(&forwarded));
                forwarded
            })
            .await;
        let forwarded = ran.unwrap_or_else(|_| {
            warn!(%namespace, "a forwarded request was cut short: the replica is stopping");
            let cut_short = Err(if sent.load(Ordering::SeqCst) {
                Failure::json(
                    StatusCode::BAD_GATEWAY,
                    "PRIMARY_ANSWER_LOST",
                    "the replica stopped after sending the request to the primary: the write may or may not have been applied",
                )
            } else {
                Failure::json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "PRIMARY_UNAVAILABLE",
                    "the replica is stopping: the write was not sent to the primary",
                )
            });
            self.shared.count_forward(outcome(&cut_short));
            cut_short
        });
        Ok(forwarded?.response(answer))
    }
}

/// The outcome a forwarded write is counted under (`Follower::forward_outcomes`).
fn outcome(forwarded: &Result<Forwarded, Failure>) -> &'static str {
    match forwarded {
        Ok(f) if f.read_back => "read_back",
        Ok(f) if f.status.is_success() => "not_read_back",
        Ok(_) => "primary_refused",
        Err(failure) => match failure.code() {
            Some("SERVER_OVERLOADED") => "SERVER_OVERLOADED",
            Some("PRIMARY_UNAVAILABLE") => "PRIMARY_UNAVAILABLE",
            Some("PRIMARY_ANSWER_LOST") => "PRIMARY_ANSWER_LOST",
            _ => "other",
        },
    }
}

#[tracing::instrument(skip(shared, body), fields(namespace = %namespace, bytes = body.len()))]
async fn forward(
    shared: &Shared,
    namespace: &NamespaceName,
    path: &'static str,
    body: Bytes,
    sent: &AtomicBool,
) -> Result<Forwarded, Failure> {
    let _permit = shared.forwards.try_acquire().map_err(|_| {
        Failure::json(
            StatusCode::SERVICE_UNAVAILABLE,
            "SERVER_OVERLOADED",
            "too many writes are being forwarded to the primary at once: the write was not sent; try again",
        )
    })?;
    let mut request = hyper::Request::post(format!("{}{path}", shared.base))
        .header("x-namespace", namespace.as_str())
        .header(FORWARDED, "1")
        .header(hyper::header::CONTENT_TYPE, "application/json");
    if let Some(auth) = &shared.authorization {
        request = request.header(hyper::header::AUTHORIZATION, auth);
    }
    let request = request.body(Full::new(body)).map_err(|e| {
        Failure::json(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_ERROR",
            format!("cannot build the request to the primary: {e}"),
        )
    })?;
    let lost = |why: String| {
        warn!(%why, "a forwarded request's answer was lost");
        Failure::json(
            StatusCode::BAD_GATEWAY,
            "PRIMARY_ANSWER_LOST",
            format!("the request was sent to the primary but its answer was lost ({why}): the write may or may not have been applied"),
        )
    };
    sent.store(true, Ordering::SeqCst);
    let response = match tokio::time::timeout(FORWARD_TIMEOUT, shared.client.request(request)).await
    {
        Err(_) => return Err(lost(format!("no answer in {FORWARD_TIMEOUT:?}"))),
        Ok(Err(e)) if e.is_connect() => {
            warn!(error = %e, "cannot reach the primary to forward a write");
            return Err(Failure::json(
                StatusCode::SERVICE_UNAVAILABLE,
                "PRIMARY_UNAVAILABLE",
                format!(
                    "cannot reach the primary at {} to forward the write: {e}",
                    shared.base
                ),
            ));
        }
        Ok(Err(e)) => return Err(lost(e.to_string())),
        Ok(Ok(response)) => response,
    };
    let status = StatusCode::from_u16(response.status().as_u16())
        .map_err(|e| lost(format!("a bad status: {e}")))?;
    let content_type = response
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let position = LogPosition::from_headers(response.headers());
    let max = shared.max_forwarded_answer_bytes;
    let limited = http_body_util::Limited::new(response.into_body(), max);
    let body = match tokio::time::timeout(FORWARD_TIMEOUT, limited.collect()).await {
        Err(_) => return Err(lost(format!("its body did not end in {FORWARD_TIMEOUT:?}"))),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(lost(format!("it is larger than {max} bytes")))
        }
        Ok(Err(e)) => return Err(lost(e.to_string())),
        Ok(Ok(body)) => body.to_bytes(),
    };
    let read_back = match position {
        Some(position) => {
            let applied = shared
                .wait_applied(namespace, position, READ_YOUR_WRITES_WAIT)
                .await;
            if !applied {
                warn!(
                    frame_no = position.frame_no,
                    "the replica did not apply the primary's commits up to a forwarded write in {READ_YOUR_WRITES_WAIT:?}; answering anyway"
                );
            }
            applied
        }
        None => {
            if status.is_success() {
                warn!("the primary's answer to a forwarded write did not say where its log is; answering without waiting");
            }
            false
        }
    };
    Ok(Forwarded {
        status,
        content_type,
        body,
        read_back,
    })
}

impl Forwarded {
    /// The answer as the client gets it: the baton of a stream on the primary marked as one.
    fn response(self, answer: Answer) -> HttpResponse {
        let body = match answer {
            Answer::Stateless => self.body,
            _ if !self.status.is_success() => self.body,
            Answer::Pipeline => mark_baton(&self.body).unwrap_or(self.body),
            Answer::Cursor => {
                let split = self
                    .body
                    .iter()
                    .position(|&b| b == b'\n')
                    .unwrap_or(self.body.len());
                match mark_baton(&self.body[..split]) {
                    Some(head) => {
                        let mut body = head.to_vec();
                        body.extend_from_slice(&self.body[split..]);
                        Bytes::from(body)
                    }
                    None => self.body,
                }
            }
        };
        let mut response = HttpResponseBuilder::new(self.status);
        if let Some(content_type) = self.content_type {
            response.content_type(content_type);
        }
        response.body(body)
    }
}

/// `json` (an object with a `baton`) with its baton marked as the primary's and no
/// `base_url`; None if it is not such an object.
fn mark_baton(json: &[u8]) -> Option<Bytes> {
    let mut value: serde_json::Value = serde_json::from_slice(json).ok()?;
    let object = value.as_object_mut()?;
    if let Some(serde_json::Value::String(baton)) = object.get("baton") {
        let marked = format!("{PRIMARY_BATON}{baton}");
        object.insert("baton".into(), serde_json::Value::String(marked));
    }
    object.insert("base_url".into(), serde_json::Value::Null);
    serde_json::to_vec(&value).ok().map(Bytes::from)
}

/// The primary's baton inside `baton`, if it is one of a stream on the primary.
pub(crate) fn primary_baton(baton: &str) -> Option<&str> {
    baton.strip_prefix(PRIMARY_BATON)
}

/// `body` (a Hrana request) with its baton set to `baton`, the primary's own.
pub(crate) fn with_baton(body: &[u8], baton: &str) -> Result<Bytes, Failure> {
    let bad = |e: serde_json::Error| {
        Failure::text(
            StatusCode::BAD_REQUEST,
            format!("the request body is not a valid Hrana request: {e}"),
        )
    };
    let mut value: serde_json::Value = serde_json::from_slice(body).map_err(bad)?;
    let Some(object) = value.as_object_mut() else {
        return Err(Failure::text(
            StatusCode::BAD_REQUEST,
            "the request body is not a JSON object",
        ));
    };
    object.insert("baton".into(), serde_json::Value::String(baton.to_string()));
    serde_json::to_vec(&value).map(Bytes::from).map_err(bad)
}

/// Whether any of `sqls` may write, or does not prepare on `conn` (a statement of several,
/// one naming a table the replica does not have yet): judged on the primary.
pub(crate) fn may_write<'a>(
    conn: &libsql_sys::rusqlite::Connection,
    sqls: impl IntoIterator<Item = &'a str>,
) -> bool {
    sqls.into_iter()
        .any(|sql| conn.prepare(sql).map_or(true, |stmt| !stmt.readonly()))
}

/// Whether a pipeline's statements may write (`may_write`); a stored SQL text counts where
/// it is stored.
pub(crate) fn pipeline_may_write(
    conn: &libsql_sys::rusqlite::Connection,
    requests: &[StreamRequest],
) -> bool {
    requests.iter().any(|request| match request {
        StreamRequest::Execute { stmt } => may_write(conn, stmt.sql.as_deref()),
        StreamRequest::Batch { batch } => batch_may_write(conn, batch),
        StreamRequest::Sequence { sql, .. } => may_write(conn, sql.as_deref()),
        StreamRequest::StoreSql { sql, .. } => may_write(conn, [sql.as_str()]),
        _ => false,
    })
}

/// Whether a batch's statements may write (`may_write`).
pub(crate) fn batch_may_write(conn: &libsql_sys::rusqlite::Connection, batch: &Batch) -> bool {
    may_write(
        conn,
        batch.steps.iter().filter_map(|s| s.stmt.sql.as_deref()),
    )
}

/// Whether `error` is the replica refusing a write.
pub(crate) fn is_refusal(error: &crate::proto::Error) -> bool {
    error.code == READ_ONLY
}

/// Whether a pipeline's results hold the replica's refusal of a write.
pub(crate) fn refused_pipeline(results: &[StreamResult]) -> bool {
    results.iter().any(|result| match result {
        StreamResult::Error { error } => is_refusal(error),
        StreamResult::Ok {
            response: StreamResponse::Batch { result },
        } => refused_batch(result),
        StreamResult::Ok { .. } => false,
    })
}

/// Whether a batch's results hold the replica's refusal of a write.
pub(crate) fn refused_batch(result: &BatchResult) -> bool {
    result.step_errors.iter().flatten().any(is_refusal)
}

/// Whether a cursor's entries hold the replica's refusal of a write.
pub(crate) fn refused_cursor(entries: &[CursorEntry]) -> bool {
    entries.iter().any(|entry| match entry {
        CursorEntry::StepError { error, .. } => is_refusal(error),
        _ => false,
    })
}

/// Whether `req` came from a replica forwarding it (the primary then answers its frame_no).
pub(crate) fn is_forwarded(req: &HttpRequest) -> bool {
    req.headers().contains_key(FORWARDED)
}

/// A point of a primary's history: a frame_no of one log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LogPosition {
    /// The log.
    pub(crate) identity: LogIdentity,
    /// The frame_no in it.
    pub(crate) frame_no: u64,
}

impl LogPosition {
    /// The position the primary's answer names in `FRAME_NO` and `LOG`; None if it names
    /// none, or not both whole.
    fn from_headers(headers: &hyper::HeaderMap) -> Option<Self> {
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let frame_no = text(FRAME_NO)?.parse().ok()?;
        let mut log = text(LOG)?.split('/');
        let identity = LogIdentity {
            log_id: log.next()?.parse().ok()?,
            generation: log.next()?.parse().ok()?,
            incarnation: log.next()?.parse().ok()?,
        };
        log.next()
            .is_none()
            .then_some(LogPosition { identity, frame_no })
    }
}

/// Where the log of `namespace` is, for the answer to a forwarded request. Blocks: call it on
/// an SQL thread.
pub(crate) fn last_commit(state: &State, namespace: &NamespaceName) -> Option<LogPosition> {
    match state.host.replication_source(namespace) {
        Ok(source) => {
            let hello = source.hello();
            Some(LogPosition {
                identity: hello.identity,
                frame_no: hello.last_committed_frame_no,
            })
        }
        Err(e) => {
            warn!(%namespace, error = %e, "cannot tell a forwarding replica the last commit");
            None
        }
    }
}

/// Adds the position headers to an answer, if there is a position to add.
pub(crate) fn with_position(
    mut response: HttpResponseBuilder,
    position: Option<LogPosition>,
) -> HttpResponseBuilder {
    if let Some(LogPosition { identity, frame_no }) = position {
        response.insert_header((FRAME_NO, frame_no.to_string()));
        response.insert_header((
            LOG,
            format!(
                "{}/{}/{}",
                identity.log_id, identity.generation, identity.incarnation
            ),
        ));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_primary_baton_is_marked_on_the_way_out_and_unmarked_on_the_way_in() {
        let out = mark_baton(br#"{"baton":"AbC-_","base_url":"http://p","results":[]}"#).unwrap();
        let out: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(out["baton"], "p.AbC-_");
        assert_eq!(out["base_url"], serde_json::Value::Null);
        assert_eq!(out["results"], serde_json::json!([]));
        let closed = mark_baton(br#"{"baton":null,"base_url":null,"results":[]}"#).unwrap();
        let closed: serde_json::Value = serde_json::from_slice(&closed).unwrap();
        assert_eq!(closed["baton"], serde_json::Value::Null);
        assert!(mark_baton(b"not json").is_none());

        assert_eq!(primary_baton("p.AbC-_"), Some("AbC-_"));
        assert_eq!(primary_baton("AbC-_"), None);
        let sent = with_baton(br#"{"baton":"p.AbC-_","requests":[]}"#, "AbC-_")
            .unwrap_or_else(|_| panic!("a Hrana body takes a baton"));
        let sent: serde_json::Value = serde_json::from_slice(&sent).unwrap();
        assert_eq!(sent["baton"], "AbC-_");
        assert!(with_baton(b"[1]", "x").is_err());
    }
}
