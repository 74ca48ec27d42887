//! A read replica's side of replication: a `Follower` follows namespaces of a primary over
//! its HTTP transport (`replication`), applying each step with the namespace's `Injector`.
//!
//! Per namespace, one task: hello, then a stream of steps from where the replica is
//! (`StepInjector::resume_from`); each step is applied as one transaction (readers never see
//! half of one) after its checksum is checked. The stream is read ahead of the step being
//! applied (at most `PIECES_AHEAD` pieces of `READ_AHEAD_PIECE`); a step of up to `MERGE_BYTES` is
//! read whole before the replica's writer lock is taken, then applied on a blocking thread
//! together with the whole steps read ahead behind it, as one transaction
//! (`StepInjector::extend`): a replica behind takes what queued up for it with one commit. A
//! stop waits for such an apply to end. A larger step is applied as its pages come. Any error rolls the step back at once (the
//! replica's writer lock is not held through the backoff), an error of the replica's own log
//! drops its injector (the next session opens the log again), and the task reconnects with
//! backoff (500 ms doubling to 30 s; at once when the primary's log changed, after 100 ms when
//! the primary ended the stream).
//! A stream that brings nothing, not even a heartbeat, for three heartbeats is given up as dead.
//! With `FollowedNamespaces::All` the primary's namespaces are listed every `discover_every`:
//! new ones are followed. One followed that `DELETE_AFTER_LISTINGS` listings in a row lack is
//! asked after by its hello, and only when the primary answers that it has no such namespace
//! (404 `NAMESPACE_NOT_FOUND`) is it no longer followed and deleted here too (its local files;
//! the replica's own storage objects are kept): a listing cut short, or one taken while the
//! namespace was briefly away, deletes nothing. A namespace deleted on the primary while the
//! replica was not running is not known to have been followed, and is left alone. `statuses`
//! says where each one is (lag in frames and milliseconds, steps applied, reconnects), for
//! metrics.
//!
//! **From the primary's bucket** (`ReplicaConfig::primary_bucket`): a replica that can read
//! it asks for steps without full images. When it has nothing yet, or the primary answers that
//! its log no longer holds the frames after the replica's position (a *not held* head), it
//! catches up from the bucket (`PrimaryBucket::catch_up`: the stored changes after its
//! position, as one step) and follows from there. Should the bucket hold nothing newer, fail,
//! or `BUCKET_ROUNDS` catch-ups in a row still leave the replica behind what the primary holds,
//! the next stream allows a full image from the primary.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use dashmap::DashMap;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use libsql_wal::{CatchUpError, PrimaryBucket, StepInjector};
use libsql_wal_backend::NamespaceName;
use tracing::{info, warn};

use crate::error::{Error, Result};
use crate::forward::{Forwarder, LogPosition};
use crate::namespaces::Host;
use crate::replication::{
    now_ms, HeadKind, HelloBody, StepHead, HEARTBEAT, PAGE_RECORD_SIZE, STEP_HEAD_SIZE,
};
use crate::{Limits, Token};

/// Which namespaces a replica follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FollowedNamespaces {
    /// These.
    Listed(Vec<NamespaceName>),
    /// Every namespace of the primary, new ones included.
    All,
}

/// Settings of a replica.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    /// The primary's user API: `http://host:port`.
    pub primary: String,
    /// The primary's user API token, if it has one.
    pub auth_token: Option<Token>,
    /// What to follow.
    pub namespaces: FollowedNamespaces,
    /// How often the primary's namespaces are listed (`FollowedNamespaces::All`).
    pub discover_every: Duration,
    /// Send writes to the primary, answering once they are applied here (`forward`), rather
    /// than refuse them.
    pub forward_writes: bool,
    /// The primary's bucket, read to catch up rather than take full images from the primary
    /// (see the module docs).
    pub primary_bucket: Option<Arc<dyn PrimaryBucket>>,
}

impl ReplicaConfig {
    /// Refuses a replica that would forward writes with the primary's token while it has no
    /// token of its own (`has_own_token`): anyone who reached it could write to the primary.
    pub fn check_credentials(&self, has_own_token: bool) -> Result<()> {
        if self.forward_writes && self.auth_token.is_some() && !has_own_token {
            return Err(Error::Config(
                "a replica that forwards writes with the primary's token (--forward-writes with --primary-auth-token) needs --auth-token (or --auth-token-file), a token of its own: without one, anyone who reaches it could write to the primary".into(),
            ));
        }
        Ok(())
    }
}

/// Where a replica's namespace stands.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct FollowStatus {
    /// The namespace.
    pub namespace: String,
    /// True while a stream from the primary is open.
    pub connected: bool,
    /// The primary's frame_no the replica is at.
    pub applied_frame_no: u64,
    /// The primary's newest commit the replica knows of.
    pub primary_frame_no: u64,
    /// Frames the replica is behind the primary, as far as it knows.
    pub lag_frames: u64,
    /// Milliseconds from the primary taking the last step applied to the replica committing
    /// it (across machines this includes their clocks' difference).
    pub lag_ms: u64,
    /// Steps applied.
    pub steps_applied: u64,
    /// Steps that were full images (from the primary).
    pub full_images: u64,
    /// Catch-ups from the primary's bucket.
    pub bucket_catch_ups: u64,
    /// Catch-ups from the primary's bucket that failed reading it.
    pub bucket_catch_up_failures: u64,
    /// Streams opened again after the first.
    pub reconnects: u64,
    /// The last error, if the last stream ended with one.
    pub last_error: Option<String>,
}

/// What the namespace tasks (and forwarded writes) share.
pub(crate) struct Shared {
    host: Arc<dyn Host>,
    pub(crate) client: Client<HttpConnector, Full<Bytes>>,
    /// The primary's user API, `http://host:port`.
    pub(crate) base: String,
    /// The `Authorization` header for the primary.
    pub(crate) authorization: Option<String>,
    statuses: DashMap<NamespaceName, FollowStatus>,
    /// Per followed namespace, where in the primary's history the replica is (None before its
    /// first hello), for read-your-writes.
    applied: DashMap<NamespaceName, tokio::sync::watch::Sender<Option<LogPosition>>>,
    /// One permit per write being forwarded to the primary.
    pub(crate) forwards: tokio::sync::Semaphore,
    /// The largest answer of the primary to a forwarded write taken (it is held whole).
    pub(crate) max_forwarded_answer_bytes: usize,
    /// The primary's bucket, if this replica reads it.
    bucket: Option<Arc<dyn PrimaryBucket>>,
    /// One permit per catch-up from the bucket running: each takes a blocking thread, a scratch
    /// file up to the database's size, and downloads.
    catch_ups: tokio::sync::Semaphore,
    /// Forwarded writes by outcome (`Forwarder::send`).
    forward_outcomes: Mutex<std::collections::BTreeMap<&'static str, u64>>,
}

impl Shared {
    /// Counts a forwarded write that ended in `outcome`.
    pub(crate) fn count_forward(&self, outcome: &'static str) {
        *lock(&self.forward_outcomes).entry(outcome).or_default() += 1;
    }

    /// Waits until `namespace` is at or past `position` (its frame_no, in its log), for at
    /// most `within`; false if it was not (or is not followed).
    pub(crate) async fn wait_applied(
        &self,
        namespace: &NamespaceName,
        position: LogPosition,
        within: Duration,
    ) -> bool {
        let Some(mut applied) = self.applied.get(namespace).map(|watch| watch.subscribe()) else {
            return false;
        };
        let reached = tokio::time::timeout(
            within,
            applied.wait_for(|at| {
                at.is_some_and(|at| {
                    at.identity == position.identity && at.frame_no >= position.frame_no
                })
            }),
        )
        .await
        .is_ok_and(|waited| waited.is_ok());
        reached
    }
}

/// A running replica: follows namespaces of a primary into a `Host`.
pub struct Follower {
    runtime: Option<tokio::runtime::Runtime>,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    shared: Arc<Shared>,
    forward_writes: bool,
}

/// A namespace followed with `FollowedNamespaces::All`: its task, and how to stop it alone.
struct Followed {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Followed {
    /// Stops the task and waits for it (it rolls back and records its position).
    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Deletes `namespace`, which the primary no longer has, here too (keeping the replica's
/// storage objects); false if it failed (a connection is open on it), to try again later.
fn delete_here(shared: &Shared, namespace: &NamespaceName) -> bool {
    match tokio::task::block_in_place(|| shared.host.delete(namespace, true)) {
        Ok(()) => {
            info!(%namespace, "the primary no longer has this namespace: deleted here");
            true
        }
        Err(Error::NamespaceNotFound(_)) => true,
        Err(e) => {
            warn!(%namespace, error = %e, "the primary no longer has this namespace, but deleting it here failed; trying again at the next listing");
            false
        }
    }
}

/// The largest answer of the primary to a forwarded write a replica with `limits` takes: what a
/// primary with the same `max_response_bytes` may answer, every byte of text escaped in JSON
/// (`\u0000`, six bytes), and a MiB for the rest. Past it the write may have been applied and
/// the answer is dropped (`PRIMARY_ANSWER_LOST`).
pub(crate) fn forwarded_answer_limit(limits: &Limits) -> usize {
    limits
        .max_response_bytes
        .saturating_mul(6)
        .saturating_add(1 << 20)
}

/// `future`'s output, or None if `stop` says to stop first.
async fn unless_stopped<T>(
    stop: &mut tokio::sync::watch::Receiver<bool>,
    future: impl std::future::Future<Output = T>,
) -> Option<T> {
    if *stop.borrow_and_update() {
        return None;
    }
    tokio::select! {
        out = future => Some(out),
        _ = stop.changed() => None,
    }
}

/// How many listings in a row must lack a followed namespace before the primary is asked
/// whether it still has it.
const DELETE_AFTER_LISTINGS: u32 = 2;

/// What following every namespace (`FollowedNamespaces::All`) remembers between listings:
/// the followed namespaces the last listings lacked, and how many in a row each.
#[derive(Debug, Default)]
struct Absences {
    counts: HashMap<NamespaceName, u32>,
}

impl Absences {
    /// Takes a listing of the primary; returns the followed namespaces that
    /// `DELETE_AFTER_LISTINGS` listings in a row (this one the last) have lacked.
    fn listed<'a>(
        &mut self,
        followed: impl Iterator<Item = &'a NamespaceName>,
        listed: &HashSet<NamespaceName>,
    ) -> Vec<NamespaceName> {
        let mut absent = HashMap::new();
        for namespace in followed.filter(|n| !listed.contains(*n)) {
            let count = self.counts.get(namespace).copied().unwrap_or(0) + 1;
            absent.insert(namespace.clone(), count);
        }
        self.counts = absent;
        let mut long_absent: Vec<_> = self
            .counts
            .iter()
            .filter(|(_, count)| **count >= DELETE_AFTER_LISTINGS)
            .map(|(namespace, _)| namespace.clone())
            .collect();
        long_absent.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        long_absent
    }

    /// Forgets that `namespace` was absent: the primary said it has it.
    fn forget(&mut self, namespace: &NamespaceName) {
        self.counts.remove(namespace);
    }
}

/// No data (not even a heartbeat) for this long ends a stream.
const READ_TIMEOUT: Duration = Duration::from_secs(HEARTBEAT.as_secs() * 3);
/// How long connecting to the primary may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The first backoff after an error.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// The longest backoff.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The pause before following again after the primary ended a stream (its log closed, or it
/// is stopping).
const AFTER_END: Duration = Duration::from_millis(100);

/// Checks `primary` is `http://host[:port]` and returns it without a trailing slash.
fn primary_base(primary: &str) -> Result<String> {
    let uri: hyper::Uri = primary
        .parse()
        .map_err(|e| Error::Config(format!("--replicate-from {primary:?} is not a URL: {e}")))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(Error::Config(format!(
                "--replicate-from {primary:?}: https is not supported; reach the primary over http (a private network, or a TLS-terminating proxy beside the replica)"
            )))
        }
        _ => {
            return Err(Error::Config(format!(
                "--replicate-from {primary:?} must start with http://"
            )))
        }
    }
    if uri.host().is_none() || !uri.path().trim_end_matches('/').is_empty() || uri.query().is_some()
    {
        return Err(Error::Config(format!(
            "--replicate-from {primary:?} must be http://host[:port], with no path"
        )));
    }
    Ok(primary.trim_end_matches('/').to_string())
}

impl Follower {
    /// Starts following the namespaces `config` names into `host`.
    /// `limits` bound the writes forwarded to the primary: at most `max_waiting_requests` at
    /// once, each counted from its sending to its answer (past it, `SERVER_OVERLOADED`), each
    /// answer at most `forwarded_answer_limit`.
    pub fn start(config: ReplicaConfig, host: Arc<dyn Host>, limits: &Limits) -> Result<Self> {
        let base = primary_base(&config.primary)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("libsql-wal-replica")
            .on_thread_start(crate::sched::latency_sensitive)
            .enable_all()
            .build()
            .map_err(|source| Error::Start {
                what: "the replica's runtime",
                source,
            })?;
        let client = {
            let _entered = runtime.enter();
            let mut connector = HttpConnector::new();
            connector.set_nodelay(true);
            connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
            Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector)
        };
        let forward_writes = config.forward_writes;
        let shared = Arc::new(Shared {
            host,
            client,
            base,
            authorization: config.auth_token.map(|t| format!("Bearer {}", t.0)),
            statuses: DashMap::new(),
            applied: DashMap::new(),
            forwards: tokio::sync::Semaphore::new(
                limits
                    .max_waiting_requests
                    .clamp(1, tokio::sync::Semaphore::MAX_PERMITS),
            ),
            max_forwarded_answer_bytes: forwarded_answer_limit(limits),
            forward_outcomes: Mutex::default(),
            bucket: config.primary_bucket,
            catch_ups: tokio::sync::Semaphore::new(CATCH_UPS_AT_ONCE),
        });
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut tasks = Vec::new();
        match config.namespaces {
            FollowedNamespaces::Listed(list) => {
                for namespace in list {
                    tasks.push(runtime.spawn(follow(shared.clone(), namespace, stopped.clone())));
                }
            }
            FollowedNamespaces::All => {
                let shared = shared.clone();
                let every = config.discover_every.max(Duration::from_millis(100));
                let spawner = runtime.handle().clone();
                let mut stop = stopped.clone();
                tasks.push(runtime.spawn(async move {
                    let mut followed: HashMap<NamespaceName, Followed> = HashMap::new();
                    let mut absences = Absences::default();
                    // No longer followed, not yet deleted here (a connection was open).
                    let mut undeleted: HashSet<NamespaceName> = HashSet::new();
                    'discovery: loop {
                        let Some(listing) =
                            unless_stopped(&mut stop, list_namespaces(&shared)).await
                        else {
                            break;
                        };
                        match listing {
                            Ok(list) => {
                                let listed: HashSet<_> = list.into_iter().collect();
                                for namespace in absences.listed(followed.keys(), &listed) {
                                    let Some(has) =
                                        unless_stopped(&mut stop, primary_has(&shared, &namespace))
                                            .await
                                    else {
                                        break 'discovery;
                                    };
                                    match has {
                                        Some(false) => {}
                                        Some(true) => {
                                            absences.forget(&namespace);
                                            continue;
                                        }
                                        None => continue,
                                    }
                                    if let Some(task) = followed.remove(&namespace) {
                                        task.stop().await;
                                        shared.statuses.remove(&namespace);
                                        shared.applied.remove(&namespace);
                                        undeleted.insert(namespace);
                                    }
                                }
                                undeleted
                                    .retain(|n| !listed.contains(n) && !delete_here(&shared, n));
                                for namespace in listed {
                                    if let Entry::Vacant(slot) = followed.entry(namespace) {
                                        let (stop, stopped) = tokio::sync::watch::channel(false);
                                        let task = spawner.spawn(follow(
                                            shared.clone(),
                                            slot.key().clone(),
                                            stopped,
                                        ));
                                        slot.insert(Followed { stop, task });
                                    }
                                }
                            }
                            Err(e) => warn!(error = %e, "cannot list the primary's namespaces"),
                        }
                        tokio::select! {
                            () = tokio::time::sleep(every) => {}
                            _ = stop.changed() => break,
                        }
                    }
                    for (_, task) in followed {
                        task.stop().await;
                    }
                }));
            }
        }
        Ok(Follower {
            runtime: Some(runtime),
            stop,
            tasks: Mutex::new(tasks),
            shared,
            forward_writes,
        })
    }

    /// The way to forward writes to the primary, if this replica forwards them.
    pub(crate) fn forwarder(&self) -> Option<Forwarder> {
        let runtime = self.runtime.as_ref()?;
        self.forward_writes.then(|| Forwarder {
            shared: self.shared.clone(),
            runtime: runtime.handle().clone(),
        })
    }

    /// Where each followed namespace stands, in name order.
    pub fn statuses(&self) -> Vec<FollowStatus> {
        let mut out: Vec<_> = self
            .shared
            .statuses
            .iter()
            .map(|e| e.value().clone())
            .collect();
        out.sort_by(|a, b| a.namespace.cmp(&b.namespace));
        out
    }

    /// Forwarded writes by outcome, in outcome order: `read_back` (answered once applied
    /// here), `not_read_back` (a success answered without: the wait ran out, or the primary
    /// named no position), `primary_refused` (the primary's answer is not a success), the code
    /// of the replica's refusal (`SERVER_OVERLOADED`, `PRIMARY_UNAVAILABLE`,
    /// `PRIMARY_ANSWER_LOST`), or `other`.
    pub fn forward_outcomes(&self) -> Vec<(String, u64)> {
        lock(&self.shared.forward_outcomes)
            .iter()
            .map(|(outcome, n)| (outcome.to_string(), *n))
            .collect()
    }

    /// Stops following: each task rolls back a step in progress and records where it is.
    /// Blocks: call it from a plain thread.
    pub fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(runtime) = self.runtime.take() {
            let tasks = std::mem::take(&mut *lock(&self.tasks));
            runtime.block_on(async {
                for task in tasks {
                    let _ = task.await;
                }
            });
            runtime.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// GETs `path` of the primary; returns its answer, whatever its status.
async fn request(
    shared: &Shared,
    path: &str,
) -> std::result::Result<hyper::Response<hyper::body::Incoming>, String> {
    let mut request = hyper::Request::get(format!("{}{path}", shared.base));
    if let Some(auth) = &shared.authorization {
        request = request.header(hyper::header::AUTHORIZATION, auth);
    }
    let request = request
        .body(Full::new(Bytes::new()))
        .map_err(|e| format!("cannot build a request for {path}: {e}"))?;
    let response = tokio::time::timeout(READ_TIMEOUT, shared.client.request(request))
        .await
        .map_err(|_| format!("the primary did not answer {path} in {READ_TIMEOUT:?}"))?
        .map_err(|e| format!("cannot reach the primary at {}: {e}", shared.base))?;
    Ok(response)
}

/// Reads what the primary said in an answer that is not a success, for an error.
async fn failure_body(response: hyper::Response<hyper::body::Incoming>) -> String {
    tokio::time::timeout(READ_TIMEOUT, response.into_body().collect())
        .await
        .ok()
        .and_then(|b| b.ok())
        .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
        .unwrap_or_default()
}

/// GETs `path` of the primary; returns the response, or an error naming the status and what
/// the primary said.
async fn get(
    shared: &Shared,
    path: &str,
) -> std::result::Result<hyper::Response<hyper::body::Incoming>, String> {
    let response = request(shared, path).await?;
    if response.status().is_success() {
        return Ok(response);
    }
    let status = response.status();
    let body = failure_body(response).await;
    Err(format!("the primary answered {path} with {status}: {body}"))
}

/// The path of `namespace`'s hello on the primary.
fn hello_path(namespace: &NamespaceName) -> String {
    format!("/replication/v1/namespaces/{namespace}/hello")
}

/// Whether the primary has `namespace`, as its hello says: `None` when it could not tell
/// (unreachable, or an answer that is neither the hello nor its `NAMESPACE_NOT_FOUND`).
async fn primary_has(shared: &Shared, namespace: &NamespaceName) -> Option<bool> {
    #[derive(serde::Deserialize)]
    struct Refusal {
        code: String,
    }
    let response = match request(shared, &hello_path(namespace)).await {
        Ok(response) => response,
        Err(e) => {
            warn!(%namespace, error = %e, "the primary's listings lack this namespace, and asking it whether it has it failed");
            return None;
        }
    };
    let status = response.status();
    if status.is_success() {
        return Some(true);
    }
    let body = failure_body(response).await;
    let not_found = status == hyper::StatusCode::NOT_FOUND
        && serde_json::from_str::<Refusal>(&body).is_ok_and(|r| r.code == "NAMESPACE_NOT_FOUND");
    if !not_found {
        warn!(%namespace, %status, body, "the primary's listings lack this namespace, and its hello does not say whether it has it");
        return None;
    }
    Some(false)
}

/// GETs `path` and decodes its JSON body.
async fn get_json<T: serde::de::DeserializeOwned>(
    shared: &Shared,
    path: &str,
) -> std::result::Result<T, String> {
    let response = get(shared, path).await?;
    let body = tokio::time::timeout(READ_TIMEOUT, response.into_body().collect())
        .await
        .map_err(|_| format!("the primary's answer to {path} did not end"))?
        .map_err(|e| format!("reading the primary's answer to {path}: {e}"))?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|e| format!("the primary's answer to {path}: {e}"))
}

async fn list_namespaces(shared: &Shared) -> std::result::Result<Vec<NamespaceName>, String> {
    #[derive(serde::Deserialize)]
    struct Listed {
        namespaces: Vec<String>,
    }
    let listed: Listed = get_json(shared, "/replication/v1/namespaces").await?;
    listed
        .namespaces
        .iter()
        .map(|n| {
            n.parse()
                .map_err(|e| format!("the primary listed namespace {n:?}: {e}"))
        })
        .collect()
}

/// Follows one namespace until told to stop.
#[tracing::instrument(skip(shared, stop), fields(namespace = %namespace))]
async fn follow(
    shared: Arc<Shared>,
    namespace: NamespaceName,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    shared
        .applied
        .entry(namespace.clone())
        .or_insert_with(|| tokio::sync::watch::channel(None).0);
    shared.statuses.insert(
        namespace.clone(),
        FollowStatus {
            namespace: namespace.to_string(),
            ..FollowStatus::default()
        },
    );
    let mut injector: Option<Box<dyn StepInjector>> = None;
    let mut catch_up = CatchUp::default();
    let mut failures = 0u32;
    let mut sessions = 0u64;
    while !*stop.borrow() {
        if sessions > 0 {
            if let Some(mut status) = shared.statuses.get_mut(&namespace) {
                status.reconnects += 1;
            }
        }
        sessions += 1;
        let stopped = stop.clone();
        let ended = tokio::select! {
            ended = session(&shared, &namespace, &mut injector, &mut catch_up, &stopped) => ended,
            _ = stop.changed() => break,
        };
        // A step cut short holds the replica's writer lock: give it back before waiting.
        match (&ended, injector.as_mut()) {
            (Err(Failed::Replica(_)), Some(_)) => {
                let dropped = injector.take();
                tokio::task::block_in_place(|| drop(dropped));
            }
            (_, Some(open)) => tokio::task::block_in_place(|| open.rollback()),
            (_, None) => {}
        }
        let backoff = match ended {
            Ok(()) => {
                failures = 0;
                AFTER_END
            }
            Err(Failed::LogChanged) => Duration::ZERO,
            Err(Failed::NotHeld) => {
                catch_up.due = true;
                Duration::ZERO
            }
            Err(Failed::Other(e) | Failed::Replica(e)) => {
                warn!(error = %e, "following the primary failed; trying again");
                failures = failures.saturating_add(1);
                if let Some(mut status) = shared.statuses.get_mut(&namespace) {
                    status.last_error = Some(e);
                }
                (FIRST_BACKOFF * 2u32.saturating_pow(failures.saturating_sub(1).min(6)))
                    .min(MAX_BACKOFF)
            }
        };
        if let Some(mut status) = shared.statuses.get_mut(&namespace) {
            status.connected = false;
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => break,
        }
    }
    if let Some(mut injector) = injector {
        tokio::task::block_in_place(|| {
            injector.rollback();
            if let Err(e) = injector.flush() {
                warn!(error = %e, "cannot record the replica's position; it resumes from the one recorded before");
            }
        });
    }
}

/// Catch-ups from the primary's bucket in a row, with no step from the primary between them,
/// after which a full image from the primary is allowed.
const BUCKET_ROUNDS: u32 = 3;

/// Catch-ups in a row that failed reading the bucket (each followed by the backoff of a
/// failed stream: about 30 s in all), after which a full image from the primary is allowed.
const BUCKET_FAILURES: u32 = 6;
/// Catch-ups from the bucket running at once, across namespaces.
const CATCH_UPS_AT_ONCE: usize = 2;

/// What a namespace's task knows of catching up from the primary's bucket.
#[derive(Debug, Default)]
struct CatchUp {
    /// The primary said its log no longer holds the frames the replica needs (or the last
    /// catch-up failed): catch up first.
    due: bool,
    /// Catch-ups since the last step from the primary.
    rounds: u32,
    /// Catch-ups in a row that failed reading the bucket.
    failures: u32,
}

/// What a catch-up from the bucket came to.
enum CaughtUp {
    /// The replica is at this frame_no of the primary's log.
    To(u64),
    /// The bucket holds nothing newer of the log: a full image from the primary it is.
    Nothing,
    /// The replica is stopping.
    Stopped,
}

impl CatchUp {
    /// Whether the next stream may bring a full image from the primary.
    fn full_image_allowed(&self) -> bool {
        self.rounds >= BUCKET_ROUNDS || self.failures >= BUCKET_FAILURES
    }

    /// Catches `namespace`, at `after` in the log `identity`, up from the primary's bucket (if
    /// this replica reads one), one catch-up at a time per `CATCH_UPS_AT_ONCE`. A failure
    /// leaves it due (tried again by the next session).
    async fn catch_up_from_bucket(
        &mut self,
        shared: &Shared,
        namespace: &NamespaceName,
        identity: &libsql_wal::LogIdentity,
        after: u64,
        injector: &mut dyn StepInjector,
        stop: &tokio::sync::watch::Receiver<bool>,
    ) -> std::result::Result<CaughtUp, Failed> {
        let Some(bucket) = &shared.bucket else {
            return Ok(CaughtUp::Nothing);
        };
        let _permit = shared
            .catch_ups
            .acquire()
            .await
            .map_err(|_| Failed::Other("the replica is stopping".into()))?;
        let stopped = || *stop.borrow();
        let caught_up = tokio::task::block_in_place(|| {
            bucket.catch_up(namespace, identity, after, injector, &stopped)
        });
        match caught_up {
            Ok(Some(step)) => {
                self.due = false;
                self.rounds += 1;
                self.failures = 0;
                update(shared, namespace, |s| {
                    s.applied_frame_no = step.frame_no;
                    s.primary_frame_no = s.primary_frame_no.max(step.frame_no);
                    s.bucket_catch_ups += 1;
                    s.last_error = None;
                });
                Ok(CaughtUp::To(step.frame_no))
            }
            Ok(None) => {
                info!(after, "the primary's bucket holds nothing newer of its log; taking a full image from the primary");
                self.due = false;
                Ok(CaughtUp::Nothing)
            }
            Err(CatchUpError::Stopped) => Ok(CaughtUp::Stopped),
            Err(CatchUpError::Local(e)) => Err(Failed::Replica(format!(
                "cannot apply a catch-up from the primary's bucket: {e}"
            ))),
            Err(CatchUpError::Bucket(e)) => {
                self.failures += 1;
                update(shared, namespace, |s| s.bucket_catch_up_failures += 1);
                Err(Failed::Other(format!(
                    "cannot catch up from the primary's bucket (a full image from the primary after {BUCKET_FAILURES} failures in a row): {e}"
                )))
            }
        }
    }
}

/// Why a stream ended.
enum Failed {
    /// The primary's log is not the one the hello named: say hello again now.
    LogChanged,
    /// The primary's log no longer holds the frames after the replica's position: catch up
    /// from the bucket, then follow again now.
    NotHeld,
    /// The replica's own log failed: its injector is dropped, and opened again next time.
    Replica(String),
    /// Anything else: try again after a backoff.
    Other(String),
}

impl From<String> for Failed {
    fn from(e: String) -> Self {
        Failed::Other(e)
    }
}

/// Bytes of steps, about, applied as one transaction of the replica's log. A step up to this
/// size is read whole before the replica's write lock is taken, and the whole steps read ahead
/// behind it (those that queued up while the replica applied the one before) join its
/// transaction: a replica behind catches up with one commit rather than one per step. A larger
/// step is applied as its pages come.
const MERGE_BYTES: usize = 512 << 10;
/// Bytes of one piece of the stream read ahead, at most.
const READ_AHEAD_PIECE: usize = 64 << 10;
/// Pieces of the stream read ahead of the step being applied, at most: a namespace's stream
/// holds at most this many pieces read ahead, and a step of up to `MERGE_BYTES` being read.
const PIECES_AHEAD: usize = 8;

/// What the read-ahead task passes on.
enum ReadAhead {
    /// Bytes of the stream, at most `READ_AHEAD_PIECE`.
    Data(Bytes),
    /// The primary ended the stream.
    End,
    /// Reading it failed: why.
    Failed(String),
}

/// The primary's stream of steps: its bytes, read ahead by a task of their own (so that what
/// the primary sends while a step is applied is here for the next), and the bytes not taken yet.
struct StepStream {
    pieces: tokio::sync::mpsc::Receiver<ReadAhead>,
    /// Reads the body into `pieces`; stopped with the stream.
    reader: tokio::task::JoinHandle<()>,
    buf: BytesMut,
    /// How the body ended, once it has: `Ok` at its end, or why reading it failed.
    ended: Option<std::result::Result<(), String>>,
}

/// Reads `body` into `pieces` until it ends or fails (said as the last piece), or the stream
/// is dropped. READ_TIMEOUT with nothing from the primary is a failure.
async fn read_ahead(mut body: hyper::body::Incoming, pieces: tokio::sync::mpsc::Sender<ReadAhead>) {
    loop {
        let mut data = match tokio::time::timeout(READ_TIMEOUT, body.frame()).await {
            Err(_) => {
                let why = format!("nothing came from the primary for {READ_TIMEOUT:?}");
                let _ = pieces.send(ReadAhead::Failed(why)).await;
                return;
            }
            Ok(None) => {
                let _ = pieces.send(ReadAhead::End).await;
                return;
            }
            Ok(Some(Err(e))) => {
                let why = format!("reading the primary's stream: {e}");
                let _ = pieces.send(ReadAhead::Failed(why)).await;
                return;
            }
            Ok(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => data,
                Err(_) => continue,
            },
        };
        while !data.is_empty() {
            let piece = data.split_to(data.len().min(READ_AHEAD_PIECE));
            if pieces.send(ReadAhead::Data(piece)).await.is_err() {
                return;
            }
        }
    }
}

impl Drop for StepStream {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl StepStream {
    fn new(body: hyper::body::Incoming) -> Self {
        let (tx, pieces) = tokio::sync::mpsc::channel(PIECES_AHEAD);
        Self::over(pieces, tokio::spawn(read_ahead(body, tx)))
    }

    /// A stream of the pieces `reader` reads into `pieces`.
    fn over(
        pieces: tokio::sync::mpsc::Receiver<ReadAhead>,
        reader: tokio::task::JoinHandle<()>,
    ) -> Self {
        StepStream {
            pieces,
            reader,
            buf: BytesMut::new(),
            ended: None,
        }
    }

    /// Takes one piece into the buffer (`None`: the reader went away without saying why).
    fn take(&mut self, piece: Option<ReadAhead>) {
        match piece {
            Some(ReadAhead::Data(data)) => self.buf.extend_from_slice(&data),
            Some(ReadAhead::End) => self.ended = Some(Ok(())),
            Some(ReadAhead::Failed(why)) => self.ended = Some(Err(why)),
            None => {
                self.ended = Some(Err(
                    "the replica stopped reading the primary's stream".into()
                ))
            }
        }
    }

    /// Reads until the buffer holds `n` bytes; false at the end of the stream.
    async fn fill(&mut self, n: usize) -> std::result::Result<bool, String> {
        while self.buf.len() < n {
            if let Some(ended) = &self.ended {
                return ended.clone().map(|()| false);
            }
            let piece = self.pieces.recv().await;
            self.take(piece);
        }
        Ok(true)
    }

    /// Takes the pieces read ahead already, without waiting, until the buffer holds
    /// `MERGE_BYTES`.
    fn take_ready(&mut self) {
        use tokio::sync::mpsc::error::TryRecvError;
        while self.ended.is_none() && self.buf.len() < MERGE_BYTES {
            match self.pieces.try_recv() {
                Ok(piece) => self.take(Some(piece)),
                Err(TryRecvError::Empty) => return,
                Err(TryRecvError::Disconnected) => self.take(None),
            }
        }
    }

    /// The head of the whole step at `at` in the buffer, and its size there (head, pages and
    /// checksum), if a whole step with a good head and checksum is there (a bad one is not
    /// merged: it comes first next time, and fails there).
    fn buffered_step(&self, at: usize) -> Option<(StepHead, usize)> {
        let rest = self.buf.get(at..).filter(|r| r.len() >= STEP_HEAD_SIZE)?;
        let head = StepHead::decode(&rest[..STEP_HEAD_SIZE]).ok()?;
        let size = step_size(&head);
        if head.kind != HeadKind::Step || rest.len() < size {
            return None;
        }
        checksum_ok(&rest[STEP_HEAD_SIZE..size]).then_some((head, size))
    }

    /// Applies the whole steps at the front of the buffer, `head`'s (already read) first, as
    /// one transaction: read, their checksums checked, then one hand-off to a blocking thread.
    /// Returns the steps applied and the primary's frame_no the replica is then at.
    async fn apply_buffered(
        &mut self,
        head: StepHead,
        slot: &mut Option<Box<dyn StepInjector>>,
    ) -> std::result::Result<(Vec<StepHead>, u64), Failed> {
        let rest = step_size(&head) - STEP_HEAD_SIZE;
        if !self.fill(rest).await? {
            return Err(ended_inside_step());
        }
        if !checksum_ok(&self.buf[..rest]) {
            return Err(bad_checksum(&head).into());
        }
        let mut steps = vec![(head, 0, rest)];
        let mut end = rest;
        self.take_ready();
        while end < MERGE_BYTES {
            let Some((next, size)) = self.buffered_step(end) else {
                break;
            };
            steps.push((next, end + STEP_HEAD_SIZE, end + size));
            end += size;
        }
        let taken = self.buf.split_to(end).freeze();
        let Some(mut injector) = slot.take() else {
            return Err(Failed::Other("no injector".into()));
        };
        let heads = steps.iter().map(|(head, ..)| *head).collect();
        let task = tokio::task::spawn_blocking(move || {
            let at = apply_steps(&mut *injector, &steps, &taken);
            (injector, at)
        });
        let applying = Applying {
            slot,
            task,
            joined: false,
        };
        Ok((heads, applying.finish().await?))
    }

    /// Applies the step `head` (its head already read) as its pages come.
    async fn apply_streamed(
        &mut self,
        head: StepHead,
        injector: &mut dyn StepInjector,
    ) -> std::result::Result<u64, Failed> {
        tokio::task::block_in_place(|| injector.begin(&head.step))
            .map_err(|e| Failed::Replica(format!("cannot begin a step: {e}")))?;
        let mut crc = crc32fast::Hasher::new();
        for _ in 0..head.step.pages {
            if !self.fill(PAGE_RECORD_SIZE).await? {
                return Err(ended_inside_step());
            }
            let record = self.buf.split_to(PAGE_RECORD_SIZE);
            crc.update(&record);
            // Memory, and a write of the page cache every few dozen pages: not worth a hand-off.
            injector
                .page(page_no(&record), &record[4..])
                .map_err(|e| Failed::Replica(format!("cannot apply a step's page: {e}")))?;
        }
        if !self.fill(4).await? {
            return Err(ended_inside_step());
        }
        if self.buf.split_to(4)[..] != crc.finalize().to_le_bytes() {
            return Err(bad_checksum(&head).into());
        }
        tokio::task::block_in_place(|| injector.commit())
            .map_err(|e| Failed::Replica(format!("cannot commit a step: {e}")))
    }
}

/// A blocking apply of steps, holding the injector taken from `slot`: it gives back the
/// injector and the frame_no the replica is then at. Dropped before it was waited for (the
/// session cancelled: the replica is stopping), it waits for the apply, so that the injector is
/// back in its slot to be rolled back and to record its position before the follow task ends.
struct Applying<'a> {
    slot: &'a mut Option<Box<dyn StepInjector>>,
    task: tokio::task::JoinHandle<(Box<dyn StepInjector>, std::result::Result<u64, Failed>)>,
    /// Set once the apply was waited for.
    joined: bool,
}

impl Applying<'_> {
    /// Waits for the apply and puts the injector back; returns the frame_no the replica is at.
    async fn finish(mut self) -> std::result::Result<u64, Failed> {
        let joined = (&mut self.task).await;
        self.joined = true;
        let (injector, at) =
            joined.map_err(|e| Failed::Replica(format!("applying a step failed: {e}")))?;
        *self.slot = Some(injector);
        at
    }
}

impl Drop for Applying<'_> {
    fn drop(&mut self) {
        use tokio::runtime::{Handle, RuntimeFlavor};
        if self.joined {
            return;
        }
        // Waiting would stall (and `block_in_place` panic on) a current-thread runtime: there
        // the injector is dropped with the apply instead, which rolls back and records its
        // position itself.
        if Handle::try_current().is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::CurrentThread) {
            return;
        }
        let joined = tokio::task::block_in_place(|| futures::executor::block_on(&mut self.task));
        if let Ok((injector, _)) = joined {
            *self.slot = Some(injector);
        }
    }
}

/// Applies `steps` (each with where its page records are in `bytes`) as one transaction. A
/// step that does not follow the one before is the primary's error, not the replica's log's.
fn apply_steps(
    injector: &mut dyn StepInjector,
    steps: &[(StepHead, usize, usize)],
    bytes: &[u8],
) -> std::result::Result<u64, Failed> {
    for (i, (head, from, to)) in steps.iter().enumerate() {
        if i == 0 {
            injector
                .begin(&head.step)
                .map_err(|e| Failed::Replica(format!("cannot begin a step: {e}")))?;
        } else {
            injector
                .extend(&head.step)
                .map_err(|e| Failed::Other(format!("cannot merge a step: {e}")))?;
        }
        for record in bytes[*from..to - 4].chunks_exact(PAGE_RECORD_SIZE) {
            injector
                .page(page_no(record), &record[4..])
                .map_err(|e| Failed::Replica(format!("cannot apply a step's page: {e}")))?;
        }
    }
    injector
        .commit()
        .map_err(|e| Failed::Replica(format!("cannot commit a step: {e}")))
}

/// Bytes of a step on the wire: head, page records, checksum.
fn step_size(head: &StepHead) -> usize {
    STEP_HEAD_SIZE + head.step.pages as usize * PAGE_RECORD_SIZE + 4
}

/// Whether `records` (a step's page records, then their CRC32) hold the checksum of the records.
fn checksum_ok(records: &[u8]) -> bool {
    let (pages, crc) = records.split_at(records.len() - 4);
    crc32fast::hash(pages).to_le_bytes() == crc
}

/// The page number of a page record.
fn page_no(record: &[u8]) -> u32 {
    let mut page_no = [0; 4];
    page_no.copy_from_slice(&record[..4]);
    u32::from_le_bytes(page_no)
}

fn bad_checksum(head: &StepHead) -> String {
    format!(
        "the step to frame {} came with a bad checksum",
        head.step.frame_no
    )
}

fn ended_inside_step() -> Failed {
    Failed::Other("the primary's stream ended inside a step".into())
}

/// One hello and stream of steps; `Ok` when the primary ended it (its log closed).
async fn session(
    shared: &Shared,
    namespace: &NamespaceName,
    slot: &mut Option<Box<dyn StepInjector>>,
    catch_up: &mut CatchUp,
    stop: &tokio::sync::watch::Receiver<bool>,
) -> std::result::Result<(), Failed> {
    let hello: HelloBody = get_json(shared, &hello_path(namespace)).await?;
    let parsed = hello.to_hello()?;
    if slot.is_none() {
        let made = tokio::task::block_in_place(|| shared.host.injector(namespace))
            .map_err(|e| format!("cannot open the replica's log: {e}"))?;
        *slot = Some(made);
    }
    let Some(injector) = slot.as_mut() else {
        return Err(Failed::Other("no injector".into()));
    };
    let mut after = injector.resume_from(&parsed);
    // Where the replica is, in this log, before anything is applied: a catch-up below advances
    // it in this log, never in the one a forwarded write waits on from an earlier session.
    if let Some(watch) = shared.applied.get(namespace) {
        watch.send_replace(Some(LogPosition {
            identity: parsed.identity,
            frame_no: after,
        }));
    }
    let mut full_image = shared.bucket.is_none() || catch_up.full_image_allowed();
    if !full_image && (after == 0 || catch_up.due) {
        match catch_up
            .catch_up_from_bucket(
                shared,
                namespace,
                &parsed.identity,
                after,
                &mut **injector,
                stop,
            )
            .await?
        {
            CaughtUp::To(frame_no) => after = frame_no,
            CaughtUp::Nothing => full_image = true,
            CaughtUp::Stopped => return Ok(()),
        }
    }
    let path = format!(
        "/replication/v1/namespaces/{namespace}/steps?after={after}&log_id={}&incarnation={}{}",
        hello.log_id,
        hello.incarnation,
        if full_image { "" } else { "&full_image=false" }
    );
    let response = match get(shared, &path).await {
        Ok(response) => response,
        Err(e) if e.contains("LOG_CHANGED") => return Err(Failed::LogChanged),
        Err(e) => return Err(e.into()),
    };
    info!(after, "following the primary");
    update(shared, namespace, |s| {
        s.connected = true;
        s.applied_frame_no = after;
        s.primary_frame_no = s.primary_frame_no.max(parsed.last_committed_frame_no);
    });
    let mut stream = StepStream::new(response.into_body());
    loop {
        if !stream.fill(STEP_HEAD_SIZE).await? {
            return Ok(());
        }
        let head = StepHead::decode(&stream.buf[..STEP_HEAD_SIZE])?;
        stream.buf.advance(STEP_HEAD_SIZE);
        if head.kind == HeadKind::NotHeld {
            info!(
                after,
                primary_frame_no = head.step.frame_no,
                "the primary's log no longer holds the frames after this replica's position"
            );
            return Err(Failed::NotHeld);
        }
        if head.kind == HeadKind::Heartbeat {
            if !stream.fill(4).await? {
                return Ok(());
            }
            stream.buf.advance(4);
            update(shared, namespace, |s| {
                s.primary_frame_no = s.primary_frame_no.max(head.step.frame_no)
            });
            continue;
        }
        let (steps, at) = if step_size(&head) <= MERGE_BYTES {
            stream.apply_buffered(head, slot).await?
        } else {
            let Some(injector) = slot.as_deref_mut() else {
                return Err(Failed::Other("no injector".into()));
            };
            (vec![head], stream.apply_streamed(head, injector).await?)
        };
        catch_up.rounds = 0;
        catch_up.failures = 0;
        let sent_at_ms = steps.last().map_or(head.sent_at_ms, |last| last.sent_at_ms);
        let lag_ms = now_ms().saturating_sub(sent_at_ms);
        update(shared, namespace, |s| {
            s.applied_frame_no = at;
            s.primary_frame_no = s.primary_frame_no.max(at);
            s.lag_ms = lag_ms;
            s.steps_applied += steps.len() as u64;
            s.full_images += steps.iter().filter(|h| h.step.full_image).count() as u64;
            s.last_error = None;
        });
    }
}

/// Updates `namespace`'s status, then its lag in frames, and tells those waiting for it
/// where it is.
fn update(shared: &Shared, namespace: &NamespaceName, f: impl FnOnce(&mut FollowStatus)) {
    let applied = {
        let Some(mut status) = shared.statuses.get_mut(namespace) else {
            return;
        };
        f(&mut status);
        status.lag_frames = status
            .primary_frame_no
            .saturating_sub(status.applied_frame_no);
        status.applied_frame_no
    };
    if let Some(watch) = shared.applied.get(namespace) {
        watch.send_if_modified(|at| match at {
            Some(at) if at.frame_no != applied => {
                at.frame_no = applied;
                true
            }
            _ => false,
        });
    }
}

#[cfg(test)]
mod tests {
    use libsql_wal::StepHeader;
    use libsql_wal::{FullImages, Hello, LogIdentity, ReplicationSource};
    use libsql_wal_segment::format::PAGE_SIZE;

    use super::*;
    use crate::test_log::{log_in, TestLog, TestRegistry};

    /// The wire form of a step to `frame_no` of pages `(page_no, every byte)`.
    fn encoded_step(frame_no: u64, db_size: u32, pages: &[(u32, u8)]) -> Vec<u8> {
        let head = StepHead {
            step: StepHeader {
                frame_no,
                durable_frame_no: 0,
                db_size,
                pages: pages.len() as u32,
                full_image: false,
            },
            kind: HeadKind::Step,
            sent_at_ms: 0,
        };
        let mut records = Vec::new();
        for &(page_no, byte) in pages {
            records.extend_from_slice(&page_no.to_le_bytes());
            records.extend(std::iter::repeat_n(byte, PAGE_SIZE));
        }
        let mut out = head.encode().to_vec();
        out.extend_from_slice(&records);
        out.extend_from_slice(&crc32fast::hash(&records).to_le_bytes());
        out
    }

    /// The first byte of every page of `log`'s newest snapshot.
    fn image(log: &dyn ReplicationSource) -> Vec<(u32, u8)> {
        let mut step = log
            .step_after(0, FullImages::Allowed)
            .unwrap()
            .expect("a database");
        let mut page = vec![0; PAGE_SIZE];
        let mut out = Vec::new();
        while let Some(page_no) = step.next_page(&mut page).unwrap() {
            out.push((page_no, page[0]));
        }
        out
    }

    async fn next_head(stream: &mut StepStream) -> StepHead {
        assert!(stream.fill(STEP_HEAD_SIZE).await.unwrap());
        let head = StepHead::decode(&stream.buf[..STEP_HEAD_SIZE]).unwrap();
        stream.buf.advance(STEP_HEAD_SIZE);
        head
    }

    /// A replica's log (in `dir`), with its injector following a primary's log.
    fn replica_log(dir: &std::path::Path) -> (TestRegistry, TestLog, Box<dyn StepInjector>) {
        let (registry, log, injector) = log_in(dir, true);
        let mut injector: Box<dyn StepInjector> = Box::new(injector);
        let hello = Hello {
            identity: LogIdentity {
                log_id: uuid::Uuid::new_v4(),
                generation: 0,
                incarnation: uuid::Uuid::new_v4(),
            },
            last_committed_frame_no: 30,
            durable_frame_no: 0,
        };
        assert_eq!(injector.resume_from(&hello), 0);
        (registry, log, injector)
    }

    /// A stream of `bytes`, then its end.
    async fn stream_of(bytes: Vec<u8>) -> StepStream {
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        tx.send(ReadAhead::Data(Bytes::from(bytes))).await.unwrap();
        tx.send(ReadAhead::End).await.unwrap();
        StepStream::over(rx, tokio::spawn(async {}))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn steps_read_ahead_are_applied_as_one_transaction_and_a_bad_one_is_not_merged() {
        let dir = tempfile::tempdir().unwrap();
        let (_registry, log, injector) = replica_log(dir.path());
        let mut bytes = encoded_step(10, 2, &[(1, 0xA1), (2, 0xA2)]);
        bytes.extend(encoded_step(20, 3, &[(2, 0xB2), (3, 0xB3)]));
        let mut bad = encoded_step(30, 3, &[(1, 0xC1)]);
        let last = bad.len() - 1;
        bad[last] ^= 1;
        bytes.extend(bad);
        let mut stream = stream_of(bytes).await;
        let mut slot = Some(injector);
        let head = next_head(&mut stream).await;
        let Ok((steps, at)) = stream.apply_buffered(head, &mut slot).await else {
            panic!("two whole steps with good checksums are applied");
        };
        assert_eq!(
            steps.iter().map(|h| h.step.frame_no).collect::<Vec<_>>(),
            [10, 20]
        );
        assert_eq!(at, 20);
        // One commit, page 2 once, as the later step has it.
        assert_eq!(log.hello().last_committed_frame_no, 3);
        assert_eq!(image(&*log), [(1, 0xA1), (2, 0xB2), (3, 0xB3)]);
        let head = next_head(&mut stream).await;
        match stream.apply_buffered(head, &mut slot).await {
            Err(Failed::Other(e)) => assert!(e.contains("bad checksum"), "{e}"),
            _ => panic!("the step with a bad checksum fails"),
        }
        assert_eq!(
            log.hello().last_committed_frame_no,
            3,
            "nothing of it applied"
        );
    }

    #[test]
    fn only_a_plain_http_base_url_names_a_primary() {
        assert_eq!(
            primary_base("http://127.0.0.1:8080/").unwrap(),
            "http://127.0.0.1:8080"
        );
        assert!(primary_base("https://db.example.com")
            .unwrap_err()
            .to_string()
            .contains("https is not supported"));
        assert!(primary_base("http://h:1/v2").is_err());
        assert!(primary_base("127.0.0.1:8080").is_err());
    }

    fn names(list: &[&str]) -> Vec<NamespaceName> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn a_followed_namespace_is_asked_after_only_once_enough_listings_in_a_row_lack_it() {
        let followed = names(&["a", "b", "c"]);
        let mut absences = Absences::default();
        let listed = |absences: &mut Absences, list: &[&str]| {
            let listing: HashSet<_> = names(list).into_iter().collect();
            absences.listed(followed.iter(), &listing)
        };
        assert!(listed(&mut absences, &["a", "c"]).is_empty());
        // b listed again in between: its count starts over; c's goes on.
        assert!(listed(&mut absences, &["a", "b"]).is_empty());
        assert_eq!(listed(&mut absences, &["a"]), names(&["c"]));
        assert_eq!(listed(&mut absences, &["a"]), names(&["b", "c"]));
        // The primary said it has b: b waits for as many listings again.
        absences.forget(&names(&["b"])[0]);
        assert_eq!(listed(&mut absences, &["a"]), names(&["c"]));
        assert_eq!(listed(&mut absences, &["a"]), names(&["b", "c"]));
        // A namespace no longer followed is no longer counted.
        assert!(absences
            .listed(names(&["a"]).iter(), &HashSet::new())
            .is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_image_merged_with_a_shrinking_step_leaves_the_later_size_and_pages() {
        let dir = tempfile::tempdir().unwrap();
        let (_registry, log, injector) = replica_log(dir.path());
        let mut full = encoded_step(10, 3, &[(1, 0xA1), (2, 0xA2), (3, 0xA3)]);
        // The full image's flag, and its head's checksum again.
        let mut head = StepHead::decode(&full[..STEP_HEAD_SIZE]).unwrap();
        head.step.full_image = true;
        full[..STEP_HEAD_SIZE].copy_from_slice(&head.encode());
        let mut bytes = full;
        bytes.extend(encoded_step(20, 2, &[(1, 0xB1)]));
        let mut stream = stream_of(bytes).await;
        let mut slot = Some(injector);
        let head = next_head(&mut stream).await;
        let Ok((steps, at)) = stream.apply_buffered(head, &mut slot).await else {
            panic!("both steps are applied");
        };
        assert_eq!(
            steps
                .iter()
                .map(|h| (h.step.frame_no, h.step.full_image))
                .collect::<Vec<_>>(),
            [(10, true), (20, false)]
        );
        assert_eq!(at, 20);
        assert_eq!(
            image(&*log),
            [(1, 0xB1), (2, 0xA2)],
            "the later step's size, its page 1, the full image's page 2"
        );
    }

    /// Fault injection: an injector whose `begin` says it was called, then waits to be let go.
    struct HeldInjector {
        inner: Box<dyn StepInjector>,
        begun: tokio::sync::mpsc::UnboundedSender<()>,
        go: std::sync::mpsc::Receiver<()>,
    }

    impl StepInjector for HeldInjector {
        fn position(&self) -> Option<libsql_wal::ReplicaPosition> {
            self.inner.position()
        }
        fn resume_from(&mut self, hello: &Hello) -> u64 {
            self.inner.resume_from(hello)
        }
        fn begin(&mut self, step: &StepHeader) -> libsql_wal::Result<()> {
            let _ = self.begun.send(());
            let _ = self.go.recv();
            self.inner.begin(step)
        }
        fn extend(&mut self, step: &StepHeader) -> libsql_wal::Result<()> {
            self.inner.extend(step)
        }
        fn page(&mut self, page_no: u32, page: &[u8]) -> libsql_wal::Result<()> {
            self.inner.page(page_no, page)
        }
        fn commit(&mut self) -> libsql_wal::Result<u64> {
            self.inner.commit()
        }
        fn rollback(&mut self) {
            self.inner.rollback()
        }
        fn flush(&mut self) -> libsql_wal::Result<()> {
            self.inner.flush()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_step_applying_when_the_replica_stops_ends_with_its_injector_back_in_its_slot() {
        let dir = tempfile::tempdir().unwrap();
        let (_registry, log, inner) = replica_log(dir.path());
        let (begun_tx, mut begun) = tokio::sync::mpsc::unbounded_channel();
        let (go, go_rx) = std::sync::mpsc::channel();
        let mut slot: Option<Box<dyn StepInjector>> = Some(Box::new(HeldInjector {
            inner,
            begun: begun_tx,
            go: go_rx,
        }));
        let mut stream = stream_of(encoded_step(10, 1, &[(1, 0xA1)])).await;
        let head = next_head(&mut stream).await;
        let mut apply = Box::pin(stream.apply_buffered(head, &mut slot));
        tokio::select! {
            _ = &mut apply => panic!("the apply waits in begin"),
            _ = begun.recv() => {}
        }
        // The replica stops: the session, and this apply with it, is dropped mid-way.
        go.send(()).unwrap();
        drop(apply);
        let Some(injector) = slot.as_mut() else {
            panic!("the injector is back in its slot, to be rolled back and flushed");
        };
        assert_eq!(
            injector.position().map(|p| p.applied),
            Some(10),
            "the apply ran to its end"
        );
        assert_eq!(log.hello().last_committed_frame_no, 1);
    }
}
