//! The user API: Hrana over HTTP as sqld serves it (`/v2/pipeline`, `/v3/pipeline`,
//! `/v3/cursor`, `/v1/execute`, `/v1/batch`, `/dev/{ns}/v{2,3}/pipeline`), and the probes
//! (`/health`, `/version`, `/v1`, `/v2`, `/v3`). Requests name their namespace by header,
//! host or path; their SQL runs on the SQL threads.

use std::sync::Arc;
use std::time::Instant;

use actix_web::http::StatusCode;
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use base64::Engine;
use futures::future::{FutureExt, LocalBoxFuture};
use libsql_wal_backend::NamespaceName;
use serde::de::DeserializeOwned;

use crate::forward::{self, Answer};
use crate::proto::{
    CursorEntry, CursorHead, CursorRequest, PipelineRequest, PipelineResponse, StreamRequest,
    StreamResponse, StreamResult, V1BatchRequest, V1ExecuteRequest,
};
use crate::sql::{self, ProtocolError, SqlStore, Version};
use crate::streams::{BatonError, Stream};
use crate::State;

/// An HTTP answer that is not a pipeline result: a status and a body.
pub(crate) struct Failure {
    status: StatusCode,
    body: FailureBody,
}

enum FailureBody {
    /// `text/plain`, as sqld answers protocol errors.
    Text(String),
    /// `application/json` `{"error", "message", "code"}`: sqld's generic error shape with the
    /// keys Hrana clients read.
    Json { message: String, code: String },
}

impl Failure {
    /// The code of a JSON failure.
    pub(crate) fn code(&self) -> Option<&str> {
        match &self.body {
            FailureBody::Json { code, .. } => Some(code),
            FailureBody::Text(_) => None,
        }
    }

    pub(crate) fn text(status: StatusCode, message: impl Into<String>) -> Self {
        Failure {
            status,
            body: FailureBody::Text(message.into()),
        }
    }

    pub(crate) fn json(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Failure {
            status,
            body: FailureBody::Json {
                message: message.into(),
                code: code.to_string(),
            },
        }
    }

    pub(crate) fn response(self) -> HttpResponse {
        match self.body {
            FailureBody::Text(text) => HttpResponse::build(self.status)
                .content_type("text/plain")
                .body(text),
            FailureBody::Json { message, code } => HttpResponse::build(self.status)
                .content_type("application/json")
                .json(serde_json::json!({"error": message, "message": message, "code": code})),
        }
    }

    fn status(&self) -> StatusCode {
        self.status
    }
}

impl From<crate::error::Error> for Failure {
    fn from(e: crate::error::Error) -> Self {
        use crate::error::Error as E;
        match &e {
            E::NamespaceNotFound(_) => {
                Failure::json(StatusCode::NOT_FOUND, "NAMESPACE_NOT_FOUND", e.to_string())
            }
            E::NamespaceExists(_) => {
                Failure::json(StatusCode::BAD_REQUEST, "NAMESPACE_EXISTS", e.to_string())
            }
            E::InvalidNamespace { .. } => {
                Failure::json(StatusCode::BAD_REQUEST, "INVALID_NAMESPACE", e.to_string())
            }
            E::Wal {
                source: libsql_wal::Error::Busy { .. } | libsql_wal::Error::ClaimConflict { .. },
                ..
            } => Failure::json(StatusCode::CONFLICT, "NAMESPACE_BUSY", e.to_string()),
            E::Wal {
                source: libsql_wal::Error::NothingToRestore { .. },
                ..
            } => Failure::json(StatusCode::NOT_FOUND, "NOTHING_TO_RESTORE", e.to_string()),
            E::Wal {
                source: libsql_wal::Error::Unsupported { .. },
                ..
            } => Failure::json(StatusCode::BAD_REQUEST, "UNSUPPORTED", e.to_string()),
            E::Wal {
                source: libsql_wal::Error::RegistryShutDown { .. },
                ..
            } => Failure::json(
                StatusCode::SERVICE_UNAVAILABLE,
                "SHUTTING_DOWN",
                e.to_string(),
            ),
            E::Wal {
                source: libsql_wal::Error::DurableTimeout { .. },
                ..
            }
            | E::Storage { .. }
            | E::StorageStopped { .. } => Failure::json(
                StatusCode::SERVICE_UNAVAILABLE,
                "STORAGE_UNAVAILABLE",
                e.to_string(),
            ),
            E::NamespaceBusy { .. } => {
                Failure::json(StatusCode::CONFLICT, "NAMESPACE_BUSY", e.to_string())
            }
            E::Overloaded { .. } => Failure::json(
                StatusCode::SERVICE_UNAVAILABLE,
                "SERVER_OVERLOADED",
                e.to_string(),
            ),
            E::PoolStopped => Failure::json(
                StatusCode::SERVICE_UNAVAILABLE,
                "SHUTTING_DOWN",
                e.to_string(),
            ),
            _ => {
                tracing::error!(error = %e, "request failed");
                Failure::json(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "INTERNAL_ERROR",
                    e.to_string(),
                )
            }
        }
    }
}

impl From<BatonError> for Failure {
    fn from(e: BatonError) -> Self {
        match e {
            BatonError::Expired => {
                Failure::json(StatusCode::BAD_REQUEST, "STREAM_EXPIRED", e.to_string())
            }
            other => Failure::text(StatusCode::BAD_REQUEST, other.to_string()),
        }
    }
}

impl From<ProtocolError> for Failure {
    fn from(e: ProtocolError) -> Self {
        Failure::text(StatusCode::BAD_REQUEST, e.0)
    }
}

/// Checks the user API's bearer token (constant time), if one is set.
pub(crate) fn authorize(state: &State, req: &HttpRequest, admin: bool) -> Result<(), Failure> {
    let expected = if admin {
        &state.config.admin_token
    } else {
        &state.config.auth_token
    };
    let Some(expected) = expected else {
        return Ok(());
    };
    let given = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if expected.matches(given) {
        Ok(())
    } else {
        Err(Failure::json(
            StatusCode::UNAUTHORIZED,
            "AUTH_FAILED",
            "Unauthorized: a valid `Authorization: Bearer <token>` header is required",
        ))
    }
}

/// Parses a namespace name, naming what is wrong with a bad one.
pub(crate) fn parse_namespace(name: &str) -> Result<NamespaceName, Failure> {
    name.parse().map_err(|e: libsql_wal_backend::Error| {
        Failure::from(crate::error::Error::InvalidNamespace {
            name: name.to_string(),
            why: e.to_string(),
        })
    })
}

/// Picks the namespace of a request in sqld's order: the `/dev/{ns}` path, `x-namespace-bin`
/// (base64), `x-namespace`, the Host's first label (not for an IP address or a host without a
/// dot), else the default namespace.
fn namespace_of(
    state: &State,
    req: &HttpRequest,
    from_path: Option<&str>,
) -> Result<NamespaceName, Failure> {
    if let Some(name) = from_path {
        return parse_namespace(name);
    }
    let headers = req.headers();
    if let Some(value) = headers.get("x-namespace-bin") {
        let bytes = value
            .to_str()
            .ok()
            .and_then(|v| {
                base64::engine::general_purpose::STANDARD_NO_PAD
                    .decode(v.trim_end_matches('='))
                    .ok()
            })
            .ok_or_else(|| {
                Failure::json(
                    StatusCode::BAD_REQUEST,
                    "INVALID_NAMESPACE",
                    "the x-namespace-bin header is not base64",
                )
            })?;
        let name = String::from_utf8(bytes).map_err(|_| {
            Failure::json(
                StatusCode::BAD_REQUEST,
                "INVALID_NAMESPACE",
                "the x-namespace-bin header is not UTF-8",
            )
        })?;
        return parse_namespace(&name);
    }
    if let Some(value) = headers.get("x-namespace") {
        let name = value.to_str().map_err(|_| {
            Failure::json(
                StatusCode::BAD_REQUEST,
                "INVALID_NAMESPACE",
                "the x-namespace header is not text",
            )
        })?;
        return parse_namespace(name);
    }
    if state.config.namespace_from_host {
        if let Some(host) = headers
            .get(actix_web::http::header::HOST)
            .and_then(|h| h.to_str().ok())
        {
            if let Some(label) = subdomain(host) {
                return parse_namespace(label);
            }
        }
    }
    Ok(state.config.default_namespace.clone())
}

/// The first label of `host` (without its port), unless it is an IP address or has no dot.
fn subdomain(host: &str) -> Option<&str> {
    let name = if host.starts_with('[') {
        return None;
    } else {
        host.rsplit_once(':').map_or(host, |(name, port)| {
            if port.chars().all(|c| c.is_ascii_digit()) {
                name
            } else {
                host
            }
        })
    };
    if name.parse::<std::net::IpAddr>().is_ok() {
        return None;
    }
    let (first, rest) = name.split_once('.')?;
    if first.is_empty() || rest.is_empty() {
        return None;
    }
    Some(first)
}

fn parse_body<T: DeserializeOwned>(body: &Bytes) -> Result<T, Failure> {
    serde_json::from_slice(body).map_err(|e| {
        Failure::text(
            StatusCode::BAD_REQUEST,
            format!("the request body is not a valid Hrana request: {e}"),
        )
    })
}

/// Resolves and checks a request's namespace: it must exist.
fn existing_namespace(
    state: &State,
    req: &HttpRequest,
    from_path: Option<&str>,
) -> Result<NamespaceName, Failure> {
    let namespace = namespace_of(state, req, from_path)?;
    if !state.host.exists(&namespace) {
        return Err(crate::error::Error::NamespaceNotFound(namespace).into());
    }
    Ok(namespace)
}

/// Takes the stream of `baton`, or opens a new one.
async fn take_stream(
    state: &Arc<State>,
    namespace: &NamespaceName,
    baton: Option<&str>,
) -> Result<Stream, Failure> {
    if let Some(baton) = baton {
        return Ok(state.streams.acquire(baton, namespace)?);
    }
    let reservation = state.streams.reserve(namespace).map_err(|e| {
        Failure::json(
            StatusCode::SERVICE_UNAVAILABLE,
            "TOO_MANY_STREAMS",
            e.to_string(),
        )
    })?;
    let host = state.host.clone();
    let ns = namespace.clone();
    let conn = state.pool.run(move || host.connect(&ns)).await??;
    // Registered as taken: the request runs on it now.
    Ok(reservation.register_acquired(conn))
}

/// Runs a pipeline's requests on `stream`; returns the results and whether it was closed.
fn run_requests(
    state: &State,
    stream: &mut Stream,
    requests: Vec<StreamRequest>,
    version: Version,
) -> Result<(Vec<StreamResult>, bool), ProtocolError> {
    let limits = state.config.limits;
    let run_limits = limits.run_limits();
    let mut budget = limits.response_budget();
    let mut results = Vec::with_capacity(requests.len());
    let mut closed = false;
    for request in requests {
        if closed {
            results.push(StreamResult::Error {
                error: crate::proto::Error::new(
                    "STREAM_CLOSED",
                    "the stream was closed by an earlier request",
                ),
            });
            continue;
        }
        let conn = stream.conn.sql();
        let guard = state.watchdog.arm(conn, limits.statement_timeout);
        let outcome: Result<StreamResponse, crate::proto::Error> = match request {
            StreamRequest::Close => {
                closed = true;
                Ok(StreamResponse::Close)
            }
            StreamRequest::Execute { stmt } => {
                let sql = stream.store.resolve(stmt.sql.as_deref(), stmt.sql_id)?;
                sql::execute_stmt(conn, &stmt, sql, &mut budget)
                    .map(|result| StreamResponse::Execute { result })
            }
            StreamRequest::Batch { batch } => {
                sql::check_batch(&batch, version)?;
                let result = sql::execute_batch(conn, &batch, &stream.store, &mut budget)?;
                Ok(StreamResponse::Batch { result })
            }
            StreamRequest::Sequence { sql, sql_id } => {
                let sql = stream.store.resolve(sql.as_deref(), sql_id)?;
                sql::execute_sequence(conn, sql).map(|()| StreamResponse::Sequence)
            }
            StreamRequest::Describe { sql, sql_id } => {
                let sql = stream.store.resolve(sql.as_deref(), sql_id)?;
                sql::describe(conn, sql).map(|result| StreamResponse::Describe { result })
            }
            StreamRequest::StoreSql { sql_id, sql } => stream
                .store
                .store(sql_id, sql, &run_limits)?
                .map(|()| StreamResponse::StoreSql),
            StreamRequest::CloseSql { sql_id } => {
                stream.store.close(sql_id);
                Ok(StreamResponse::CloseSql)
            }
            StreamRequest::GetAutocommit => match version {
                Version::V3 => Ok(StreamResponse::GetAutocommit {
                    is_autocommit: conn.is_autocommit(),
                }),
                Version::V2 => {
                    return Err(ProtocolError(
                        "get_autocommit needs Hrana 3 (/v3/pipeline)".to_string(),
                    ))
                }
            },
        };
        let fired = guard.fired();
        drop(guard);
        results.push(match outcome {
            Ok(response) => StreamResult::Ok { response },
            Err(error) => {
                let error = interrupted(error, fired, &limits);
                state.metrics.hrana_error(&error.code);
                StreamResult::Error { error }
            }
        });
        if let StreamResult::Ok {
            response: StreamResponse::Batch { result },
        } = results.last().expect("just pushed")
        {
            for error in result.step_errors.iter().flatten() {
                state.metrics.hrana_error(&error.code);
            }
        }
    }
    Ok((results, closed))
}

/// Says why a statement the watchdog interrupted failed; any other error is left as it is.
fn interrupted(
    error: crate::proto::Error,
    fired: bool,
    limits: &crate::Limits,
) -> crate::proto::Error {
    if !fired || error.code != "SQLITE_INTERRUPT" {
        return error;
    }
    crate::proto::Error::new(
        "SQLITE_INTERRUPT",
        format!(
            "the statement ran longer than the server's limit of {} ms and was interrupted",
            limits.statement_timeout.as_millis()
        ),
    )
}

/// Removes a taken stream's slot when dropped armed.
struct SlotGuard<'a> {
    streams: &'a crate::streams::Streams,
    id: u64,
    armed: bool,
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.streams.remove(self.id);
        }
    }
}

/// Runs `job` on `stream` on an SQL thread. A protocol error drops the stream (its connection
/// goes on the SQL thread, rolling back an open transaction); otherwise the stream comes back
/// unless `job` closed it.
async fn on_stream<T: Send + 'static>(
    state: &Arc<State>,
    stream: Stream,
    job: impl FnOnce(&State, &mut Stream) -> Result<(T, bool), ProtocolError> + Send + 'static,
) -> Result<(T, Option<String>), Failure> {
    let id = stream.id;
    let for_job = state.clone();
    // If this future is dropped before the stream comes back (a client gone, a timeout), the
    // stream's slot is removed: its place is not held forever. The stream itself is dropped
    // on the SQL thread when its job ends.
    let mut slot = SlotGuard {
        streams: &state.streams,
        id,
        armed: true,
    };
    let ran = state
        .pool
        .run(move || {
            let mut stream = stream;
            let outcome = job(&for_job, &mut stream);
            match outcome {
                Ok((value, false)) => Ok((value, Some(stream))),
                Ok((value, true)) => Ok((value, None)),
                Err(e) => Err(e),
            }
        })
        .await;
    slot.armed = false;
    match ran {
        Ok(Ok((value, Some(stream)))) => {
            state.host.touch(&stream.namespace);
            Ok((value, Some(state.streams.release(stream))))
        }
        Ok(Ok((value, None))) => {
            state.streams.remove(id);
            Ok((value, None))
        }
        Ok(Err(protocol)) => {
            state.streams.remove(id);
            Err(protocol.into())
        }
        Err(e) => {
            state.streams.remove(id);
            Err(e.into())
        }
    }
}

async fn pipeline(
    state: Arc<State>,
    req: HttpRequest,
    body: Bytes,
    version: Version,
    from_path: Option<String>,
) -> Result<HttpResponse, Failure> {
    authorize(&state, &req, false)?;
    let namespace = existing_namespace(&state, &req, from_path.as_deref())?;
    let request: PipelineRequest = parse_body(&body)?;
    let path = match version {
        Version::V2 => "/v2/pipeline",
        Version::V3 => "/v3/pipeline",
    };
    let forwarder = state.forwarder();
    if let (Some(forwarder), Some(baton)) = (
        &forwarder,
        request.baton.as_deref().and_then(forward::primary_baton),
    ) {
        let body = forward::with_baton(&body, baton)?;
        return forwarder
            .send(&namespace, path, body, Answer::Pipeline)
            .await;
    }
    state.pool.admits()?;
    let forwardable = forwarder.is_some() && request.baton.is_none();
    let forwarded = forward::is_forwarded(&req);
    let stream = take_stream(&state, &namespace, request.baton.as_deref()).await?;
    let requests = request.requests;
    // None: the request goes to the primary, and its stream here is closed.
    let (ran, baton) = on_stream(&state, stream, move |state, stream| {
        if forwardable && forward::pipeline_may_write(stream.conn.sql(), &requests) {
            return Ok((None, true));
        }
        let (results, closed) = run_requests(state, stream, requests, version)?;
        if forwardable && forward::refused_pipeline(&results) {
            return Ok((None, true));
        }
        let position = forwarded
            .then(|| forward::last_commit(state, &stream.namespace))
            .flatten();
        Ok((Some((results, position)), closed))
    })
    .await?;
    match (ran, forwarder) {
        (Some((results, position)), _) => Ok(forward::with_position(HttpResponse::Ok(), position)
            .json(PipelineResponse {
                baton,
                base_url: None,
                results,
            })),
        (None, forwarder) => to_primary(forwarder, &namespace, path, body, Answer::Pipeline).await,
    }
}

/// Sends a request judged (`forward`) to go to the primary there.
async fn to_primary(
    forwarder: Option<forward::Forwarder>,
    namespace: &NamespaceName,
    path: &'static str,
    body: Bytes,
    answer: Answer,
) -> Result<HttpResponse, Failure> {
    match forwarder {
        Some(forwarder) => forwarder.send(namespace, path, body, answer).await,
        None => Err(Failure::json(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_ERROR",
            "a request was judged to go to a primary this server does not forward to",
        )),
    }
}

async fn cursor(state: Arc<State>, req: HttpRequest, body: Bytes) -> Result<HttpResponse, Failure> {
    authorize(&state, &req, false)?;
    let namespace = existing_namespace(&state, &req, None)?;
    let request: CursorRequest = parse_body(&body)?;
    sql::check_batch(&request.batch, Version::V3)?;
    let forwarder = state.forwarder();
    if let (Some(forwarder), Some(baton)) = (
        &forwarder,
        request.baton.as_deref().and_then(forward::primary_baton),
    ) {
        let body = forward::with_baton(&body, baton)?;
        return forwarder
            .send(&namespace, "/v3/cursor", body, Answer::Cursor)
            .await;
    }
    state.pool.admits()?;
    let forwardable = forwarder.is_some() && request.baton.is_none();
    let forwarded = forward::is_forwarded(&req);
    let stream = take_stream(&state, &namespace, request.baton.as_deref()).await?;
    let batch = request.batch;
    // None: the request goes to the primary, and its stream here is closed.
    let (ran, baton) = on_stream(&state, stream, move |state, stream| {
        if forwardable && forward::batch_may_write(stream.conn.sql(), &batch) {
            return Ok((None, true));
        }
        let limits = state.config.limits;
        let mut budget = limits.response_budget();
        let mut entries = Vec::new();
        let mut outcomes: Vec<Option<bool>> = Vec::with_capacity(batch.steps.len());
        let conn = stream.conn.sql();
        for (i, step) in batch.steps.iter().enumerate() {
            let run = step
                .condition
                .as_ref()
                .is_none_or(|c| sql::holds(c, &outcomes, conn));
            if !run {
                outcomes.push(None);
                continue;
            }
            let sql_text = stream
                .store
                .resolve(step.stmt.sql.as_deref(), step.stmt.sql_id)?;
            let guard = state.watchdog.arm(conn, limits.statement_timeout);
            let result = sql::execute_stmt(conn, &step.stmt, sql_text, &mut budget);
            let fired = guard.fired();
            drop(guard);
            match result {
                Ok(result) => {
                    outcomes.push(Some(true));
                    entries.push(CursorEntry::StepBegin {
                        step: i as u32,
                        cols: result.cols,
                    });
                    for row in result.rows {
                        entries.push(CursorEntry::Row { row });
                    }
                    entries.push(CursorEntry::StepEnd {
                        affected_row_count: result.affected_row_count,
                        last_insert_rowid: result.last_insert_rowid,
                    });
                }
                Err(error) => {
                    let error = interrupted(error, fired, &limits);
                    state.metrics.hrana_error(&error.code);
                    outcomes.push(Some(false));
                    entries.push(CursorEntry::StepError {
                        step: i as u32,
                        error,
                    });
                }
            }
        }
        if forwardable && forward::refused_cursor(&entries) {
            return Ok((None, true));
        }
        let position = forwarded
            .then(|| forward::last_commit(state, &stream.namespace))
            .flatten();
        Ok((Some((entries, position)), false))
    })
    .await?;
    let Some((entries, position)) = ran else {
        return to_primary(forwarder, &namespace, "/v3/cursor", body, Answer::Cursor).await;
    };
    let mut body = serde_json::to_string(&CursorHead {
        baton,
        base_url: None,
    })
    .map_err(internal)?;
    body.push('\n');
    for entry in entries {
        body.push_str(&serde_json::to_string(&entry).map_err(internal)?);
        body.push('\n');
    }
    Ok(forward::with_position(HttpResponse::Ok(), position)
        .content_type("text/plain")
        .body(body))
}

fn internal(e: serde_json::Error) -> Failure {
    Failure::json(
        StatusCode::INTERNAL_SERVER_ERROR,
        "INTERNAL_ERROR",
        e.to_string(),
    )
}

/// A one-off connection for the stateless v1 endpoints.
async fn one_off<T: Send + 'static>(
    state: &Arc<State>,
    namespace: NamespaceName,
    job: impl FnOnce(&State, &libsql_sys::rusqlite::Connection) -> T + Send + 'static,
) -> Result<T, Failure> {
    // The connection is counted on its namespace while it lives (not against the stream
    // limits): a delete sees it and answers 409 rather than close the namespace under it.
    // The count goes with the job, which runs to its end even if this future is dropped.
    let held = OneOff::hold(state, namespace);
    let for_job = state.clone();
    Ok(state
        .pool
        .run(move || {
            let conn = for_job.host.connect(&held.namespace)?;
            let out = job(&for_job, conn.sql());
            drop(conn);
            drop(held);
            Ok::<_, crate::error::Error>(out)
        })
        .await??)
}

/// A one-off connection's count on its namespace (`Streams::hold`), ended when dropped.
struct OneOff {
    state: Arc<State>,
    namespace: NamespaceName,
}

impl OneOff {
    fn hold(state: &Arc<State>, namespace: NamespaceName) -> Self {
        state.streams.hold(&namespace);
        OneOff {
            state: state.clone(),
            namespace,
        }
    }
}

impl Drop for OneOff {
    fn drop(&mut self) {
        self.state.streams.unhold(&self.namespace);
    }
}

async fn v1_execute(
    state: Arc<State>,
    req: HttpRequest,
    body: Bytes,
) -> Result<HttpResponse, Failure> {
    authorize(&state, &req, false)?;
    let namespace = existing_namespace(&state, &req, None)?;
    let request: V1ExecuteRequest = parse_body(&body)?;
    let forwarded = forward::is_forwarded(&req);
    let forwarder = state.forwarder();
    let forwarding = forwarder.is_some();
    let on = namespace.clone();
    // None: the request goes to the primary.
    let ran = one_off(&state, namespace.clone(), move |state, conn| {
        if forwarding && forward::may_write(conn, request.stmt.sql.as_deref()) {
            return Ok(None);
        }
        let limits = state.config.limits;
        let sql = request
            .stmt
            .sql
            .clone()
            .ok_or_else(|| ProtocolError("a v1 statement needs sql".into()))?;
        let guard = state.watchdog.arm(conn, limits.statement_timeout);
        let result = sql::execute_stmt(conn, &request.stmt, &sql, &mut limits.response_budget());
        let fired = guard.fired();
        drop(guard);
        if forwarding && result.as_ref().is_err_and(forward::is_refusal) {
            return Ok(None);
        }
        let position = forwarded
            .then(|| forward::last_commit(state, &on))
            .flatten();
        Ok::<_, ProtocolError>(Some((
            result.map_err(|e| interrupted(e, fired, &limits)),
            position,
        )))
    })
    .await??;
    let Some((outcome, position)) = ran else {
        return to_primary(
            forwarder,
            &namespace,
            "/v1/execute",
            body,
            Answer::Stateless,
        )
        .await;
    };
    match outcome {
        Ok(result) => Ok(forward::with_position(HttpResponse::Ok(), position)
            .json(serde_json::json!({ "result": result }))),
        Err(error) => {
            state.metrics.hrana_error(&error.code);
            Ok(forward::with_position(HttpResponse::BadRequest(), position).json(error))
        }
    }
}

async fn v1_batch(
    state: Arc<State>,
    req: HttpRequest,
    body: Bytes,
) -> Result<HttpResponse, Failure> {
    authorize(&state, &req, false)?;
    let namespace = existing_namespace(&state, &req, None)?;
    let request: V1BatchRequest = parse_body(&body)?;
    sql::check_batch(&request.batch, Version::V2)?;
    let forwarded = forward::is_forwarded(&req);
    let forwarder = state.forwarder();
    let forwarding = forwarder.is_some();
    let on = namespace.clone();
    // None: the request goes to the primary.
    let ran = one_off(&state, namespace.clone(), move |state, conn| {
        if forwarding && forward::batch_may_write(conn, &request.batch) {
            return Ok::<_, ProtocolError>(None);
        }
        let limits = state.config.limits;
        let deadline = state.watchdog.arm(conn, limits.statement_timeout);
        let result = sql::execute_batch(
            conn,
            &request.batch,
            &SqlStore::default(),
            &mut limits.response_budget(),
        );
        drop(deadline);
        let result = result?;
        if forwarding && forward::refused_batch(&result) {
            return Ok(None);
        }
        let position = forwarded
            .then(|| forward::last_commit(state, &on))
            .flatten();
        Ok(Some((result, position)))
    })
    .await??;
    let Some((result, position)) = ran else {
        return to_primary(forwarder, &namespace, "/v1/batch", body, Answer::Stateless).await;
    };
    Ok(forward::with_position(HttpResponse::Ok(), position)
        .json(serde_json::json!({ "result": result })))
}

/// The API a route belongs to: on the user API a 400 is also a Hrana protocol error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Api {
    /// Hrana over HTTP.
    User,
    /// The admin API.
    Admin,
}

/// Makes `handler` (state, request, and the body or `()`) an actix handler: it answers the handler's failure
/// and counts the request on `route` in the metrics, by status and latency.
pub(crate) fn timed<F, Fut, T>(
    api: Api,
    route: &'static str,
    handler: F,
) -> impl Fn(web::Data<Arc<State>>, HttpRequest, T) -> LocalBoxFuture<'static, HttpResponse>
       + Clone
       + 'static
where
    F: Fn(Arc<State>, HttpRequest, T) -> Fut + Clone + 'static,
    Fut: std::future::Future<Output = Result<HttpResponse, Failure>> + 'static,
    T: actix_web::FromRequest + 'static,
{
    move |state: web::Data<Arc<State>>, req: HttpRequest, body: T| {
        let handler = handler.clone();
        async move {
            let started = Instant::now();
            let state = state.get_ref().clone();
            let response = match handler(state.clone(), req, body).await {
                Ok(response) => response,
                Err(failure) => {
                    if api == Api::User && failure.status() == StatusCode::BAD_REQUEST {
                        state.metrics.hrana_error("PROTOCOL_ERROR");
                    }
                    failure.response()
                }
            };
            state.metrics.request(
                route,
                response.status().as_u16(),
                started.elapsed().as_secs_f64(),
            );
            response
        }
        .boxed_local()
    }
}

/// `/dev/{namespace}/v{version}/pipeline`: the namespace and the Hrana version from the path.
async fn dev_pipeline(
    state: Arc<State>,
    req: HttpRequest,
    body: Bytes,
) -> Result<HttpResponse, Failure> {
    let namespace = req.match_info().query("namespace").to_string();
    let version = match req.match_info().query("version") {
        "2" => Version::V2,
        "3" => Version::V3,
        other => {
            return Err(Failure::text(
                StatusCode::NOT_FOUND,
                format!("no Hrana version {other}"),
            ))
        }
    };
    pipeline(state, req, body, version, Some(namespace)).await
}

/// Adds the user API's routes.
pub(crate) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/v2/pipeline",
        web::post().to(timed(Api::User, "/v2/pipeline", |s, r, b| {
            pipeline(s, r, b, Version::V2, None)
        })),
    )
    .route(
        "/v3/pipeline",
        web::post().to(timed(Api::User, "/v3/pipeline", |s, r, b| {
            pipeline(s, r, b, Version::V3, None)
        })),
    )
    .route(
        "/v3/cursor",
        web::post().to(timed(Api::User, "/v3/cursor", cursor)),
    )
    .route(
        "/dev/{namespace}/v{version}/pipeline",
        web::post().to(timed(Api::User, "/dev/{namespace}/pipeline", dev_pipeline)),
    )
    .route(
        "/v1/execute",
        web::post().to(timed(Api::User, "/v1/execute", v1_execute)),
    )
    .route(
        "/v1/batch",
        web::post().to(timed(Api::User, "/v1/batch", v1_batch)),
    )
    .route(
        "/health",
        web::get().to(|| async { HttpResponse::Ok().finish() }),
    )
    .route(
        "/version",
        web::get().to(|| async {
            HttpResponse::Ok()
                .content_type("text/plain")
                .body(format!("libsql-wal {}", env!("CARGO_PKG_VERSION")))
        }),
    )
    .route(
        "/v1",
        web::get().to(|| async {
            HttpResponse::Ok()
                .content_type("text/plain")
                .body("This is libsql-wal HTTP API v1")
        }),
    )
    .route("/v2", web::get().to(hello))
    .route("/v3", web::get().to(hello));
}

async fn hello() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain")
        .body("Hello, this is HTTP API v2 (Hrana over HTTP)")
}

#[cfg(test)]
mod tests {
    use super::subdomain;

    #[test]
    fn only_a_dotted_host_name_names_a_namespace() {
        assert_eq!(subdomain("tenant.localhost:8080"), Some("tenant"));
        assert_eq!(subdomain("tenant.example.com"), Some("tenant"));
        assert_eq!(subdomain("localhost:8080"), None);
        assert_eq!(subdomain("127.0.0.1:8080"), None);
        assert_eq!(subdomain("127.0.0.1"), None);
        assert_eq!(subdomain("[::1]:8080"), None);
        assert_eq!(subdomain(".example.com"), None);
    }
}
