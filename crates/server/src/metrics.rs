//! The server's Prometheus metrics (prometheus-client, OpenMetrics text at the admin API's
//! `GET /metrics`): HTTP requests by route and status with latency histograms, Hrana errors
//! by code, open streams, and, filled at each scrape, per-namespace log and storage figures
//! and the storage pipeline's totals. Per-namespace labels are bounded: the first
//! `max_namespace_labels` namespaces in name order get their own, the rest are summed under
//! `namespace="_other"`.

use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, PoisonError};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::namespaces::NamespaceInfo;
use crate::replica::FollowStatus;
use libsql_wal_supervisor::StorageMetrics;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteStatus {
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabel {
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NamespaceLabel {
    namespace: String,
}

/// Gauges per namespace, refilled at every scrape.
#[derive(Default)]
struct PerNamespace {
    frames: Family<NamespaceLabel, Gauge>,
    durable_frame_no: Family<NamespaceLabel, Gauge>,
    durable_lag_frames: Family<NamespaceLabel, Gauge>,
    durable_lag_seconds: Family<NamespaceLabel, Gauge<f64, AtomicU64>>,
    checkpointed_frame_no: Family<NamespaceLabel, Gauge>,
    sealed_segments: Family<NamespaceLabel, Gauge>,
    seal_failures: Family<NamespaceLabel, Gauge>,
    queued_segments: Family<NamespaceLabel, Gauge>,
    segments_stored: Family<NamespaceLabel, Gauge>,
    bytes_uploaded: Family<NamespaceLabel, Gauge>,
    upload_retries: Family<NamespaceLabel, Gauge>,
    healthy: Family<NamespaceLabel, Gauge>,
    local_bytes: Family<NamespaceLabel, Gauge>,
    commits: Family<NamespaceLabel, Gauge>,
    seals: Family<NamespaceLabel, Gauge>,
    checkpoints: Family<NamespaceLabel, Gauge>,
    replica_connected: Family<NamespaceLabel, Gauge>,
    replica_lag_frames: Family<NamespaceLabel, Gauge>,
    replica_lag_ms: Family<NamespaceLabel, Gauge>,
    replica_steps_applied: Family<NamespaceLabel, Gauge>,
    replica_full_images: Family<NamespaceLabel, Gauge>,
    replica_bucket_catch_ups: Family<NamespaceLabel, Gauge>,
    replica_bucket_catch_up_failures: Family<NamespaceLabel, Gauge>,
    replica_reconnects: Family<NamespaceLabel, Gauge>,
}

/// The server's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<RouteStatus, Counter>,
    latency: Family<RouteLabel, Histogram>,
    hrana_errors: Family<CodeLabel, Counter>,
    open_streams: Gauge,
    namespaces: Gauge,
    uploads_in_flight: Gauge,
    uploads_waiting: Gauge,
    storage_retries: Gauge,
    scheduler_restarts: Gauge,
    per_namespace: PerNamespace,
    replica_forwarded_writes: Family<OutcomeLabel, Gauge>,
    max_namespace_labels: usize,
    scrape: Mutex<()>,
}

impl Metrics {
    /// Registers every metric; at most `max_namespace_labels` namespaces get labels of their
    /// own.
    pub fn new(max_namespace_labels: usize) -> Self {
        let mut registry = Registry::with_prefix("libsql_wal");
        let requests = Family::<RouteStatus, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route and status",
            requests.clone(),
        );
        let latency = Family::<RouteLabel, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.000_25, 2.0, 16))) as fn() -> Histogram,
        );
        registry.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request, by route",
            latency.clone(),
        );
        let hrana_errors = Family::<CodeLabel, Counter>::default();
        registry.register(
            "hrana_errors",
            "Hrana request errors by code",
            hrana_errors.clone(),
        );
        let gauge = |registry: &mut Registry, name: &str, help: &str| {
            let g = Gauge::default();
            registry.register(name, help, g.clone());
            g
        };
        let open_streams = gauge(&mut registry, "open_streams", "Open Hrana streams");
        let namespaces = gauge(&mut registry, "namespaces", "Namespaces hosted");
        let uploads_in_flight = gauge(&mut registry, "uploads_in_flight", "Uploads running now");
        let uploads_waiting = gauge(
            &mut registry,
            "uploads_waiting",
            "Upload requests waiting for a worker",
        );
        let storage_retries = gauge(
            &mut registry,
            "storage_retries",
            "Failed uploads, each retried, since start",
        );
        let scheduler_restarts = gauge(
            &mut registry,
            "storage_scheduler_restarts",
            "Namespace schedulers restarted since start",
        );
        let per_namespace = PerNamespace::default();
        let families: [(&str, &str, &Family<NamespaceLabel, Gauge>); 23] = [
            (
                "replica_connected",
                "On a read replica: 1 while a stream from the primary is open",
                &per_namespace.replica_connected,
            ),
            (
                "replica_lag_frames",
                "On a read replica: frames behind the primary, as far as it knows",
                &per_namespace.replica_lag_frames,
            ),
            (
                "replica_lag_milliseconds",
                "On a read replica: from the primary taking the last step applied to its commit here",
                &per_namespace.replica_lag_ms,
            ),
            (
                "replica_steps_applied",
                "On a read replica: steps applied since it started following",
                &per_namespace.replica_steps_applied,
            ),
            (
                "replica_full_images",
                "On a read replica: steps that were full images",
                &per_namespace.replica_full_images,
            ),
            (
                "replica_bucket_catch_ups",
                "On a read replica: catch-ups from the primary's bucket instead of a full image",
                &per_namespace.replica_bucket_catch_ups,
            ),
            (
                "replica_bucket_catch_up_failures",
                "On a read replica: catch-ups that failed reading the primary's bucket",
                &per_namespace.replica_bucket_catch_up_failures,
            ),
            (
                "replica_reconnects",
                "On a read replica: streams from the primary opened again",
                &per_namespace.replica_reconnects,
            ),
            (
                "namespace_commits",
                "Commits since the namespace's log opened",
                &per_namespace.commits,
            ),
            (
                "namespace_seals",
                "Seals since the namespace's log opened",
                &per_namespace.seals,
            ),
            (
                "namespace_checkpoints",
                "Checkpoints since the namespace's log opened",
                &per_namespace.checkpoints,
            ),
            (
                "namespace_frames",
                "Newest committed frame_no",
                &per_namespace.frames,
            ),
            (
                "namespace_durable_frame_no",
                "Newest frame_no durable in storage",
                &per_namespace.durable_frame_no,
            ),
            (
                "namespace_durable_lag_frames",
                "Frames committed and not yet durable",
                &per_namespace.durable_lag_frames,
            ),
            (
                "namespace_checkpointed_frame_no",
                "Newest frame_no copied into the database file",
                &per_namespace.checkpointed_frame_no,
            ),
            (
                "namespace_sealed_segments",
                "Sealed segments on local disk",
                &per_namespace.sealed_segments,
            ),
            (
                "namespace_seal_failures",
                "Seals that failed and were retried",
                &per_namespace.seal_failures,
            ),
            (
                "namespace_queued_segments",
                "Segments queued in storage, not yet durable",
                &per_namespace.queued_segments,
            ),
            (
                "namespace_segments_stored",
                "Segments made durable since start",
                &per_namespace.segments_stored,
            ),
            (
                "namespace_bytes_uploaded",
                "Bytes stored since start (data and index)",
                &per_namespace.bytes_uploaded,
            ),
            (
                "namespace_upload_retries",
                "Failed uploads since start",
                &per_namespace.upload_retries,
            ),
            (
                "namespace_healthy",
                "1 if the namespace's log and uploads are healthy",
                &per_namespace.healthy,
            ),
            (
                "namespace_local_bytes",
                "Bytes on local disk (database file and segments)",
                &per_namespace.local_bytes,
            ),
        ];
        for (name, help, family) in families {
            registry.register(name, help, family.clone());
        }
        registry.register(
            "namespace_durable_lag_seconds",
            "How long the oldest segment not yet durable has waited",
            per_namespace.durable_lag_seconds.clone(),
        );
        let replica_forwarded_writes = Family::<OutcomeLabel, Gauge>::default();
        registry.register(
            "replica_forwarded_writes",
            "On a read replica: writes forwarded to the primary since start, by outcome (read_back, not_read_back, or the refusal's code)",
            replica_forwarded_writes.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            hrana_errors,
            open_streams,
            namespaces,
            uploads_in_flight,
            uploads_waiting,
            storage_retries,
            scheduler_restarts,
            per_namespace,
            replica_forwarded_writes,
            max_namespace_labels,
            scrape: Mutex::new(()),
        }
    }

    /// Counts a request on `route` answered with `status` after `seconds`.
    pub fn request(&self, route: &str, status: u16, seconds: f64) {
        self.requests
            .get_or_create(&RouteStatus {
                route: route.to_string(),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabel {
                route: route.to_string(),
            })
            .observe(seconds);
    }

    /// Counts a Hrana error with `code`.
    pub fn hrana_error(&self, code: &str) {
        self.hrana_errors
            .get_or_create(&CodeLabel {
                code: code.to_string(),
            })
            .inc();
    }

    /// Renders every metric, with the per-namespace and storage figures of now (and on a
    /// replica, where it follows and its forwarded writes by outcome).
    pub fn render(
        &self,
        open_streams: usize,
        infos: &[NamespaceInfo],
        storage: &StorageMetrics,
        replicas: &[FollowStatus],
        forwards: &[(String, u64)],
    ) -> String {
        let _one_scrape = self.scrape.lock().unwrap_or_else(PoisonError::into_inner);
        self.open_streams.set(open_streams as i64);
        self.namespaces.set(infos.len() as i64);
        self.uploads_in_flight.set(storage.uploads_in_flight as i64);
        self.uploads_waiting.set(storage.uploads_waiting as i64);
        self.storage_retries.set(storage.retries as i64);
        self.scheduler_restarts.set(storage.restarts as i64);
        let p = &self.per_namespace;
        for family in [
            &p.frames,
            &p.durable_frame_no,
            &p.durable_lag_frames,
            &p.checkpointed_frame_no,
            &p.sealed_segments,
            &p.seal_failures,
            &p.queued_segments,
            &p.segments_stored,
            &p.bytes_uploaded,
            &p.upload_retries,
            &p.healthy,
            &p.local_bytes,
            &p.commits,
            &p.seals,
            &p.checkpoints,
            &p.replica_connected,
            &p.replica_lag_frames,
            &p.replica_lag_ms,
            &p.replica_steps_applied,
            &p.replica_full_images,
            &p.replica_bucket_catch_ups,
            &p.replica_bucket_catch_up_failures,
            &p.replica_reconnects,
        ] {
            family.clear();
        }
        self.replica_forwarded_writes.clear();
        for (outcome, n) in forwards {
            self.replica_forwarded_writes
                .get_or_create(&OutcomeLabel {
                    outcome: outcome.clone(),
                })
                .set(*n as i64);
        }
        for (i, status) in replicas.iter().enumerate() {
            let label = NamespaceLabel {
                namespace: if i < self.max_namespace_labels {
                    status.namespace.clone()
                } else {
                    "_other".to_string()
                },
            };
            let add = |family: &Family<NamespaceLabel, Gauge>, value: u64| {
                family.get_or_create(&label).inc_by(value as i64);
            };
            add(&p.replica_connected, u64::from(status.connected));
            add(&p.replica_lag_frames, status.lag_frames);
            add(&p.replica_steps_applied, status.steps_applied);
            add(&p.replica_full_images, status.full_images);
            add(&p.replica_bucket_catch_ups, status.bucket_catch_ups);
            add(
                &p.replica_bucket_catch_up_failures,
                status.bucket_catch_up_failures,
            );
            add(&p.replica_reconnects, status.reconnects);
            let lag = p.replica_lag_ms.get_or_create(&label);
            lag.set(lag.get().max(status.lag_ms as i64));
        }
        p.durable_lag_seconds.clear();
        for (i, info) in infos.iter().enumerate() {
            let label = NamespaceLabel {
                namespace: if i < self.max_namespace_labels {
                    info.name.clone()
                } else {
                    "_other".to_string()
                },
            };
            let add = |family: &Family<NamespaceLabel, Gauge>, value: u64| {
                family.get_or_create(&label).inc_by(value as i64);
            };
            add(&p.frames, info.last_committed_frame_no);
            add(&p.durable_frame_no, info.durable_frame_no);
            add(&p.durable_lag_frames, info.durable_lag_frames);
            add(&p.checkpointed_frame_no, info.checkpointed_frame_no);
            add(&p.sealed_segments, info.sealed_segments as u64);
            add(&p.seal_failures, info.seal_failures);
            add(&p.queued_segments, info.queued_segments as u64);
            add(&p.healthy, u64::from(info.health == "ok"));
            add(&p.local_bytes, info.local_bytes);
            add(&p.commits, info.commits);
            add(&p.seals, info.seals);
            add(&p.checkpoints, info.checkpoints);
            add(&p.segments_stored, info.segments_stored);
            add(&p.bytes_uploaded, info.bytes_uploaded);
            add(&p.upload_retries, info.upload_retries);
            let lag = p.durable_lag_seconds.get_or_create(&label);
            lag.set(lag.get().max(info.durable_lag_ms as f64 / 1000.0));
        }
        let mut text = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::error!(error = %e, "encoding the metrics failed");
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &str, frames: u64) -> NamespaceInfo {
        NamespaceInfo {
            name: name.into(),
            open: true,
            last_committed_frame_no: frames,
            durable_frame_no: frames / 2,
            durable_lag_frames: frames - frames / 2,
            checkpointed_frame_no: 0,
            sealed_segments: 1,
            pending_segments: 0,
            queued_segments: 0,
            seal_failures: 0,
            commits: frames,
            seals: 1,
            checkpoints: 0,
            segments_stored: 1,
            bytes_uploaded: 100,
            upload_retries: 0,
            durable_lag_ms: 0,
            local_bytes: 4096,
            health: "ok".into(),
        }
    }

    #[test]
    fn namespaces_past_the_label_cap_are_summed_under_other() {
        let metrics = Metrics::new(1);
        metrics.request("/v2/pipeline", 200, 0.001);
        metrics.hrana_error("SQLITE_CONSTRAINT");
        let text = metrics.render(
            3,
            &[info("a", 10), info("b", 20), info("c", 30)],
            &StorageMetrics::default(),
            &[],
            &[("read_back".to_string(), 2)],
        );
        assert!(
            text.contains(r#"libsql_wal_namespace_frames{namespace="a"} 10"#),
            "{text}"
        );
        assert!(
            text.contains(r#"libsql_wal_namespace_frames{namespace="_other"} 50"#),
            "{text}"
        );
        assert!(!text.contains(r#"namespace="b""#), "{text}");
        assert!(
            text.contains(r#"libsql_wal_namespace_commits{namespace="_other"} 50"#),
            "{text}"
        );
        assert!(text.contains("libsql_wal_open_streams 3"), "{text}");
        assert!(
            text.contains(r#"libsql_wal_hrana_errors_total{code="SQLITE_CONSTRAINT"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"libsql_wal_http_requests_total{route="/v2/pipeline",status="200"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"libsql_wal_replica_forwarded_writes{outcome="read_back"} 2"#),
            "{text}"
        );
        let again = metrics.render(0, &[info("a", 11)], &StorageMetrics::default(), &[], &[]);
        assert!(
            !again.contains("_other"),
            "a scrape shows only what is there now: {again}"
        );
    }
}
