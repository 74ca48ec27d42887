//! The admin API, on its own listener with its own token: create, delete, list and describe
//! namespaces, checkpoint or seal one now, Prometheus metrics (`GET /metrics`), and a small
//! status page (`GET /`) that refreshes itself.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use serde::Deserialize;

use libsql_wal::RestoreTarget;
use libsql_wal_backend::NamespaceName;

use crate::namespaces::NamespaceInfo;
use crate::user::{authorize, parse_namespace, timed, Api, Failure};
use crate::State;

#[derive(Debug, Default, Deserialize)]
struct DeleteRequest {
    #[serde(default)]
    keep_backup: bool,
}

async fn create(state: Arc<State>, req: HttpRequest, body: Bytes) -> Result<HttpResponse, Failure> {
    authorize(&state, &req, true)?;
    let namespace = path_namespace(&req)?;
    if !body.is_empty() {
        // sqld takes options here; none is needed by this server, but the body must be JSON.
        serde_json::from_slice::<serde_json::Value>(&body).map_err(|e| {
            Failure::json(
                StatusCode::BAD_REQUEST,
                "INVALID_REQUEST",
                format!("the body is not JSON: {e}"),
            )
        })?;
    }
    let host = state.host.clone();
    state
        .admin_pool
        .run(move || host.create(&namespace))
        .await??;
    Ok(HttpResponse::Ok().finish())
}

async fn delete(state: Arc<State>, req: HttpRequest, body: Bytes) -> Result<HttpResponse, Failure> {
    authorize(&state, &req, true)?;
    let namespace = path_namespace(&req)?;
    let options: DeleteRequest = if body.is_empty() {
        DeleteRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            Failure::json(
                StatusCode::BAD_REQUEST,
                "INVALID_REQUEST",
                format!("the body is not a delete request: {e}"),
            )
        })?
    };
    if !state.host.exists(&namespace) {
        return Err(crate::error::Error::NamespaceNotFound(namespace).into());
    }
    let Some(idle) = state.streams.take_namespace(&namespace) else {
        return Err(Failure::json(
            StatusCode::CONFLICT,
            "NAMESPACE_BUSY",
            "a request is running on the namespace; try again",
        ));
    };
    let host = state.host.clone();
    state
        .admin_pool
        .run(move || {
            // Their connections roll back and close here, before the log closes.
            drop(idle);
            host.delete(&namespace, options.keep_backup)
        })
        .await??;
    Ok(HttpResponse::Ok().finish())
}

/// The point a rewind goes back to: `at` (RFC 3339), or `frame_no`, or `generation` (with
/// `frame_no`, else its end).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RewindRequest {
    at: Option<String>,
    frame_no: Option<u64>,
    generation: Option<u64>,
}

impl RewindRequest {
    fn target(&self) -> Result<RestoreTarget, String> {
        match (&self.at, self.frame_no, self.generation) {
            (Some(at), None, None) => {
                let time = chrono::DateTime::parse_from_rfc3339(at)
                    .map_err(|e| format!("at {at:?} is not an RFC 3339 time: {e}"))?;
                let ms = u64::try_from(time.timestamp_millis())
                    .map_err(|_| format!("at {at:?} is before 1970"))?;
                Ok(RestoreTarget::TimestampMs(ms))
            }
            (None, Some(frame_no), None) => Ok(RestoreTarget::FrameNo(frame_no)),
            (None, frame_no, Some(generation)) => Ok(RestoreTarget::InGeneration {
                generation,
                frame_no: frame_no.unwrap_or(u64::MAX),
            }),
            (None, None, None) => Err("give the point: at, frame_no, or generation".to_string()),
            _ => Err("at goes alone: give at, or frame_no and/or generation".to_string()),
        }
    }
}

async fn rewind(state: Arc<State>, req: HttpRequest, body: Bytes) -> Result<HttpResponse, Failure> {
    authorize(&state, &req, true)?;
    let namespace = path_namespace(&req)?;
    let bad = |message: String| Failure::json(StatusCode::BAD_REQUEST, "INVALID_REQUEST", message);
    let request: RewindRequest = serde_json::from_slice(&body)
        .map_err(|e| bad(format!("the body is not a rewind request: {e}")))?;
    let target = request.target().map_err(bad)?;
    if !state.host.exists(&namespace) {
        return Err(crate::error::Error::NamespaceNotFound(namespace).into());
    }
    let Some(idle) = state.streams.take_namespace(&namespace) else {
        return Err(Failure::json(
            StatusCode::CONFLICT,
            "NAMESPACE_BUSY",
            "a request is running on the namespace; try again",
        ));
    };
    let host = state.host.clone();
    let rewound = state
        .admin_pool
        .run(move || {
            // Their connections roll back and close here, before the log closes.
            drop(idle);
            host.rewind(&namespace, target)
        })
        .await??;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "generation": rewound.generation,
        "parent": {
            "generation": rewound.parent.generation,
            "frame_no": rewound.parent.frame_no,
        },
        "frame_no": rewound.restored.end_frame_no,
        "timestamp_ms": rewound.restored.timestamp_ms,
        "pages": rewound.restored.db_pages,
        "objects_fetched": rewound.restored.objects_fetched,
        "bytes_downloaded": rewound.restored.bytes_downloaded,
    })))
}

async fn infos(
    state: &Arc<State>,
) -> Result<(Vec<NamespaceInfo>, libsql_wal_supervisor::StorageMetrics), Failure> {
    let host = state.host.clone();
    Ok(state
        .admin_pool
        .run(move || {
            let storage = host.storage_metrics()?;
            let by_name: std::collections::HashMap<&str, &libsql_wal_supervisor::NamespaceMetrics> =
                storage
                    .namespaces
                    .iter()
                    .map(|m| (m.namespace.as_str(), m))
                    .collect();
            let mut infos = Vec::new();
            for namespace in host.list()? {
                match host.info(&namespace, by_name.get(namespace.as_str()).copied()) {
                    Ok(info) => infos.push(info),
                    // Deleted meanwhile.
                    Err(crate::error::Error::NamespaceNotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            drop(by_name);
            Ok::<_, crate::error::Error>((infos, storage))
        })
        .await??)
}

async fn list(state: Arc<State>, req: HttpRequest, _: ()) -> Result<HttpResponse, Failure> {
    authorize(&state, &req, true)?;
    let (infos, _) = infos(&state).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "namespaces": infos })))
}

async fn get(state: Arc<State>, req: HttpRequest, _: ()) -> Result<HttpResponse, Failure> {
    authorize(&state, &req, true)?;
    let namespace = path_namespace(&req)?;
    let host = state.host.clone();
    let info = state
        .admin_pool
        .run(move || {
            let storage = host.storage_metrics()?;
            host.info(&namespace, storage.namespace(&namespace))
        })
        .await??;
    Ok(HttpResponse::Ok().json(info))
}

async fn checkpoint(state: Arc<State>, req: HttpRequest, _: ()) -> Result<HttpResponse, Failure> {
    authorize(&state, &req, true)?;
    let namespace = path_namespace(&req)?;
    let host = state.host.clone();
    let segments = state
        .admin_pool
        .run(move || host.checkpoint(&namespace))
        .await??;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "checkpointed_segments": segments })))
}

async fn seal(state: Arc<State>, req: HttpRequest, _: ()) -> Result<HttpResponse, Failure> {
    authorize(&state, &req, true)?;
    let namespace = path_namespace(&req)?;
    let host = state.host.clone();
    let sealed = state
        .admin_pool
        .run(move || host.seal(&namespace))
        .await??;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "sealed": sealed })))
}

async fn metrics(state: Arc<State>, req: HttpRequest, _: ()) -> Result<HttpResponse, Failure> {
    authorize(&state, &req, true)?;
    let (infos, storage) = infos(&state).await?;
    let for_render = state.clone();
    let open_streams = state.streams.open(None);
    let text = state
        .admin_pool
        .run(move || {
            let replicas = for_render.replication_statuses();
            let forwards = for_render.forward_outcomes();
            for_render
                .metrics
                .render(open_streams, &infos, &storage, &replicas, &forwards)
        })
        .await?;
    Ok(HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(text))
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

async fn status_page(state: Arc<State>, req: HttpRequest, _: ()) -> Result<HttpResponse, Failure> {
    authorize(&state, &req, true)?;
    let (infos, storage) = infos(&state).await?;
    let mut rows = String::new();
    for info in &infos {
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            escape(&info.name),
            if info.open { "open" } else { "closed" },
            info.last_committed_frame_no,
            info.durable_frame_no,
            info.durable_lag_frames,
            info.sealed_segments,
            info.local_bytes,
            escape(&info.health),
        ));
    }
    let bytes_sent: u64 = storage.namespaces.iter().map(|n| n.bytes_sent).sum();
    let page = format!(
        r#"<!doctype html>
<html><head><meta charset="utf-8"><meta http-equiv="refresh" content="5"><title>libsql-wal</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}td:first-child,th:first-child{{text-align:left}}</style>
</head><body>
<h1>libsql-wal</h1>
<p>{} namespaces, {} open streams. Storage: {} uploads in flight, {} waiting, {} segments queued, {} retries, {} bytes uploaded since start{}.</p>
<table><tr><th>namespace</th><th>log</th><th>frames</th><th>durable</th><th>lag (frames)</th><th>sealed segments</th><th>local bytes</th><th>health</th></tr>
{}</table>
<p>Refreshes every 5 s. Metrics: <a href="/metrics">/metrics</a>.</p>
</body></html>
"#,
        infos.len(),
        state.streams.open(None),
        storage.uploads_in_flight,
        storage.uploads_waiting,
        storage.queued_segments(),
        storage.retries,
        bytes_sent,
        if storage.accepting {
            ""
        } else {
            "; shutting down"
        },
        rows
    );
    Ok(HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(page))
}

/// The namespace a route's path names.
fn path_namespace(req: &HttpRequest) -> Result<NamespaceName, Failure> {
    parse_namespace(req.match_info().query("namespace"))
}

/// Adds the admin API's routes.
pub(crate) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/v1/namespaces/{namespace}/create",
        web::post().to(timed(Api::Admin, "admin:create", create)),
    )
    .route(
        "/v1/namespaces/{namespace}",
        web::delete().to(timed(Api::Admin, "admin:delete", delete)),
    )
    .route(
        "/v1/namespaces/{namespace}",
        web::get().to(timed(Api::Admin, "admin:get", get)),
    )
    .route(
        "/v1/namespaces",
        web::get().to(timed(Api::Admin, "admin:list", list)),
    )
    .route(
        "/v1/namespaces/{namespace}/checkpoint",
        web::post().to(timed(Api::Admin, "admin:checkpoint", checkpoint)),
    )
    .route(
        "/v1/namespaces/{namespace}/rewind",
        web::post().to(timed(Api::Admin, "admin:rewind", rewind)),
    )
    .route(
        "/v1/namespaces/{namespace}/seal",
        web::post().to(timed(Api::Admin, "admin:seal", seal)),
    )
    .route(
        "/metrics",
        web::get().to(timed(Api::Admin, "admin:metrics", metrics)),
    )
    .route(
        "/",
        web::get().to(timed(Api::Admin, "admin:status", status_page)),
    );
}
