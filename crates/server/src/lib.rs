//! `libsql-wal-server`: a multi-tenant libSQL server on libsql-wal, as a library a bigger
//! server can embed.
//!
//! - The user API speaks Hrana over HTTP as sqld serves it (`user`), so unmodified libSQL
//!   clients work: `@libsql/client` (`/v2/pipeline`), the Rust and Python `libsql` crates
//!   (`/v3/pipeline`, `/v3/cursor`), and the v1 endpoints.
//! - A request names its namespace by header, host or `/dev/{ns}` path; each namespace is a
//!   database on this WAL (`namespaces`), its log shipped to durable storage by the actor
//!   pipeline (`ActorStorage`).
//! - A stream is one SQLite connection, tied to its client by single-use HMAC batons
//!   (`streams`); an idle one expires after 10 s and rolls back.
//! - SQL runs on a fixed pool of plain threads (`pool`), never on an executor thread; a
//!   watchdog interrupts statements past their time limit (`watchdog`).
//! - The admin API (`admin`) has its own listener and token: namespaces, checkpoint, seal,
//!   Prometheus metrics (`metrics`), a status page.
//!
//! - Replication (`replication`, on the user API): a primary serves each namespace's commits
//!   as steps; a read replica (`Server::follow`, `replica`) follows them into its own logs,
//!   and refuses writes or forwards them to the primary (`forward`).
//!
//! `Server::start` binds both listeners and runs the HTTP side on a thread of its own;
//! `Server::stop` stops accepting, lets in-flight requests finish (bounded), rolls back open
//! streams, and shuts the namespaces and the storage down.

mod admin;
mod error;
mod forward;
mod metrics;
mod namespaces;
mod pool;
mod proto;
mod replica;
mod replication;
mod sched;
mod sql;
mod streams;
#[cfg(test)]
mod test_log;
mod user;
mod watchdog;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

use libsql_wal_backend::NamespaceName;
use subtle::ConstantTimeEq;
use tracing::{info, warn};

pub use error::{Error, Result};
pub use namespaces::{Durability, Host, NamespaceInfo, ServerStorage, WalHost};
pub use replica::{FollowStatus, FollowedNamespaces, ReplicaConfig};
pub use streams::DbConn;

/// A bearer token. Its `Debug` never shows it.
#[derive(Clone)]
pub struct Token(String);

impl Token {
    /// Wraps `token`; an empty one is refused.
    pub fn new(token: impl Into<String>) -> Result<Self> {
        let token = token.into();
        if token.is_empty() {
            return Err(Error::Config("an auth token must not be empty".into()));
        }
        Ok(Token(token))
    }

    /// Whether `given` is this token: their SHA-256 digests are compared in constant time, so
    /// neither the token nor its length shows in the time taken.
    pub fn matches(&self, given: &str) -> bool {
        use sha2::Digest;
        let expected = sha2::Sha256::digest(self.0.as_bytes());
        let given = sha2::Sha256::digest(given.as_bytes());
        expected.as_slice().ct_eq(given.as_slice()).into()
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Limits on what one client can make the server do.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Bytes of one request body (larger: 413).
    pub max_body_bytes: usize,
    /// Open streams per namespace.
    pub max_streams_per_namespace: usize,
    /// Open streams in all.
    pub max_streams: usize,
    /// SQL texts one stream may store.
    pub max_stored_sql: usize,
    /// Bytes of one stored SQL text.
    pub max_stored_sql_bytes: usize,
    /// Rows one response may carry.
    pub max_response_rows: usize,
    /// Bytes of values one response may carry (about, as JSON): past either bound a read
    /// fails with `RESPONSE_TOO_LARGE`, so no response holds the server's memory.
    pub max_response_bytes: usize,
    /// Time one request of a pipeline may run before it is interrupted.
    pub statement_timeout: Duration,
    /// Requests that may wait for an SQL thread; past it they are answered 503
    /// `SERVER_OVERLOADED` (each waiting request holds its body in memory). On a replica that
    /// forwards writes, also the writes that may be on their way to the primary at once (each
    /// holds the primary's answer, up to six times `max_response_bytes`, until the replica has
    /// applied it).
    pub max_waiting_requests: usize,
}

impl Default for Limits {
    /// 10 MiB bodies, 128 streams per namespace and 4,096 in all, 50 stored SQL texts of at
    /// most 64 KiB per stream, 100,000 rows or 64 MiB of values per response, 30 s per statement, 1,024 requests
    /// waiting for an SQL thread.
    fn default() -> Self {
        Limits {
            max_body_bytes: 10 << 20,
            max_streams_per_namespace: 128,
            max_streams: 4096,
            max_stored_sql: 50,
            max_stored_sql_bytes: 64 << 10,
            max_response_rows: 100_000,
            max_response_bytes: 64 << 20,
            statement_timeout: Duration::from_secs(30),
            max_waiting_requests: 1024,
        }
    }
}

impl Limits {
    /// The budget of one response: `max_response_rows` rows, `max_response_bytes` bytes.
    fn response_budget(&self) -> sql::ResponseBudget {
        sql::ResponseBudget::new(self.max_response_rows, self.max_response_bytes)
    }

    fn run_limits(&self) -> sql::RunLimits {
        sql::RunLimits {
            max_stored_sql: self.max_stored_sql,
            max_stored_sql_bytes: self.max_stored_sql_bytes,
        }
    }
}

/// Settings of a server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where the user API listens.
    pub user_addr: SocketAddr,
    /// Where the admin API listens (`None`: no admin API).
    pub admin_addr: Option<SocketAddr>,
    /// The user API's bearer token (`None`: no auth, loopback only unless
    /// `allow_unauthenticated`).
    pub auth_token: Option<Token>,
    /// The admin API's bearer token (`None`: the admin API listens on loopback only, whatever
    /// `allow_unauthenticated` says).
    pub admin_token: Option<Token>,
    /// Serve the user API without a token on a non-loopback address.
    pub allow_unauthenticated: bool,
    /// Take a request's namespace from the Host header's first label (`tenant.example.com`)
    /// when no header names one. A server reached by a dotted name of its own
    /// (`db.internal`) should turn it off, or every request names namespace `db`.
    pub namespace_from_host: bool,
    /// The namespace of requests that name none.
    pub default_namespace: NamespaceName,
    /// Limits.
    pub limits: Limits,
    /// An idle stream expires after this long (sqld: 10 s).
    pub stream_expiry: Duration,
    /// A namespace unused this long, with no stream open, is closed (sealed, made durable,
    /// checkpointed, forgotten) and reopens on demand; `None`: never.
    pub idle_namespace_timeout: Option<Duration>,
    /// SQL threads.
    pub sql_threads: usize,
    /// How long `stop` waits for in-flight requests.
    pub shutdown_grace: Duration,
    /// Namespaces with labels of their own in the metrics (the rest are summed).
    pub max_namespace_labels: usize,
}

impl Default for ServerConfig {
    /// User API on 127.0.0.1:8080, admin API on 127.0.0.1:9090, no tokens, namespace
    /// `default`, the default limits, 10 s stream expiry, idle namespaces closed after 5
    /// minutes, 32 SQL threads, 10 s grace at shutdown, 100 namespace labels, namespaces
    /// from the Host header.
    fn default() -> Self {
        ServerConfig {
            user_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_addr: Some(SocketAddr::from(([127, 0, 0, 1], 9090))),
            auth_token: None,
            admin_token: None,
            allow_unauthenticated: false,
            namespace_from_host: true,
            default_namespace: "default".parse().expect("a valid name"),
            limits: Limits::default(),
            stream_expiry: Duration::from_secs(10),
            idle_namespace_timeout: Some(Duration::from_secs(300)),
            sql_threads: 32,
            shutdown_grace: Duration::from_secs(10),
            max_namespace_labels: 100,
        }
    }
}

/// What the handlers share.
pub(crate) struct State {
    config: ServerConfig,
    host: Arc<dyn Host>,
    streams: streams::Streams,
    pool: pool::SqlPool,
    /// The admin API's own threads: it answers while every SQL thread is busy.
    admin_pool: pool::SqlPool,
    watchdog: watchdog::Watchdog,
    metrics: metrics::Metrics,
    /// On a read replica: what follows the primary (`Server::follow`).
    follower: std::sync::Mutex<Option<replica::Follower>>,
    /// Set when the server stops: replication streams (endless responses) end, so that
    /// stopping does not wait out the grace period for them.
    stopping: tokio::sync::watch::Sender<bool>,
}

impl State {
    /// Where each namespace a replica follows stands.
    fn replication_statuses(&self) -> Vec<FollowStatus> {
        self.follower
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .map_or_else(Vec::new, replica::Follower::statuses)
    }

    /// On a replica: its forwarded writes by outcome.
    fn forward_outcomes(&self) -> Vec<(String, u64)> {
        self.follower
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .map_or_else(Vec::new, replica::Follower::forward_outcomes)
    }

    /// On a replica that forwards writes: the way to its primary.
    fn forwarder(&self) -> Option<forward::Forwarder> {
        self.follower
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .and_then(replica::Follower::forwarder)
    }
}

/// What `Server::stop` did.
#[derive(Debug, Clone)]
pub struct StopSummary {
    /// Open streams rolled back.
    pub streams_rolled_back: usize,
    /// Namespaces hosted at the end.
    pub namespaces: usize,
    /// How long stopping took.
    pub took: Duration,
    /// The shutdown's error, if one namespace did not shut down cleanly (what is not
    /// durable stays on local disk and is sent at the next start).
    pub error: Option<String>,
}

/// A running server.
pub struct Server {
    state: Arc<State>,
    user_addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    handles: Vec<actix_web::dev::ServerHandle>,
    http_thread: Option<std::thread::JoinHandle<()>>,
    background: Vec<(std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>)>,
}

fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}

fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr).map_err(|source| Error::Bind {
        addr: addr.to_string(),
        source,
    })
}

/// Runs `tick` every `every` on a thread of its own until the returned sender is dropped.
fn every(
    name: &str,
    every: Duration,
    mut tick: impl FnMut() + Send + 'static,
) -> Result<(std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>)> {
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every)
            {
                tick();
            }
        })
        .map_err(|source| Error::Start {
            what: "a server thread",
            source,
        })?;
    Ok((stop, thread))
}

impl Server {
    /// Binds the listeners and starts serving `host`'s namespaces; creates the default
    /// namespace if it does not exist.
    pub fn start(config: ServerConfig, host: Arc<dyn Host>) -> Result<Self> {
        if config.auth_token.is_none()
            && !is_loopback(&config.user_addr)
            && !config.allow_unauthenticated
        {
            return Err(Error::Config(format!(
                "the user API would listen on {} without an auth token; give --auth-token, listen on a loopback address, or pass --allow-unauthenticated",
                config.user_addr
            )));
        }
        if let Some(admin) = &config.admin_addr {
            if config.admin_token.is_none() && !is_loopback(admin) {
                return Err(Error::Config(format!(
                    "the admin API would listen on {admin} without an admin token; give --admin-auth-token or listen on a loopback address"
                )));
            }
        }
        let timeout = config.limits.statement_timeout;
        if timeout.is_zero() || timeout > Duration::from_secs(86_400) {
            return Err(Error::Config(format!(
                "a statement timeout of {timeout:?} is out of range (1 ms to 1 day)"
            )));
        }
        if config.limits.max_waiting_requests == 0 {
            return Err(Error::Config(
                "max_waiting_requests must be at least 1: with 0 every request is refused".into(),
            ));
        }
        if !host.exists(&config.default_namespace) {
            host.create(&config.default_namespace)?;
        }
        let user_listener = bind(config.user_addr)?;
        let admin_listener = config.admin_addr.map(bind).transpose()?;
        let user_addr = user_listener.local_addr().map_err(|source| Error::Bind {
            addr: config.user_addr.to_string(),
            source,
        })?;
        let admin_addr = admin_listener
            .as_ref()
            .map(|l| l.local_addr())
            .transpose()
            .map_err(|source| Error::Bind {
                addr: format!("{:?}", config.admin_addr),
                source,
            })?;
        let state = Arc::new(State {
            streams: streams::Streams::new(
                config.stream_expiry,
                config.limits.max_streams_per_namespace,
                config.limits.max_streams,
            )
            .map_err(|e| Error::Start {
                what: "the baton key (no random source)",
                source: std::io::Error::other(e.to_string()),
            })?,
            pool: pool::SqlPool::new(config.sql_threads, config.limits.max_waiting_requests)?,
            admin_pool: pool::SqlPool::new(2, config.limits.max_waiting_requests)?,
            watchdog: watchdog::Watchdog::start().map_err(|source| Error::Start {
                what: "the statement watchdog",
                source,
            })?,
            metrics: metrics::Metrics::new(config.max_namespace_labels),
            follower: std::sync::Mutex::new(None),
            stopping: tokio::sync::watch::Sender::new(false),
            host,
            config,
        });
        let (handles_tx, handles_rx) = std::sync::mpsc::channel();
        let for_http = state.clone();
        let http_thread = std::thread::Builder::new()
            .name("libsql-wal-http".into())
            .spawn(move || {
                let system = actix_web::rt::System::new();
                let started = system.block_on(async move {
                    let grace = for_http.config.shutdown_grace.as_secs().max(1);
                    let body_limit = for_http.config.limits.max_body_bytes;
                    let data = actix_web::web::Data::new(for_http.clone());
                    let user_data = data.clone();
                    let user = actix_web::HttpServer::new(move || {
                        sched::latency_sensitive();
                        actix_web::App::new()
                            .app_data(user_data.clone())
                            .app_data(actix_web::web::PayloadConfig::new(body_limit))
                            .configure(user::routes)
                            .configure(replication::routes)
                    })
                    .workers(2)
                    // Small answers and replication steps go out at once: with Nagle's
                    // algorithm each would wait for the peer's delayed ACK (about 40 ms).
                    .tcp_nodelay(true)
                    .disable_signals()
                    .shutdown_timeout(grace)
                    .listen(user_listener)?
                    .run();
                    let mut servers = vec![user];
                    if let Some(listener) = admin_listener {
                        let admin_data = data.clone();
                        let admin = actix_web::HttpServer::new(move || {
                            actix_web::App::new()
                                .app_data(admin_data.clone())
                                .app_data(actix_web::web::PayloadConfig::new(1 << 20))
                                .configure(admin::routes)
                        })
                        .workers(1)
                        .disable_signals()
                        .shutdown_timeout(grace)
                        .listen(listener)?
                        .run();
                        servers.push(admin);
                    }
                    Ok::<_, std::io::Error>(servers)
                });
                match started {
                    Ok(servers) => {
                        let _ = handles_tx
                            .send(Ok(servers.iter().map(|s| s.handle()).collect::<Vec<_>>()));
                        system.block_on(async move {
                            for result in futures::future::join_all(servers).await {
                                if let Err(e) = result {
                                    warn!(error = %e, "an HTTP server ended with an error");
                                }
                            }
                        });
                    }
                    Err(e) => {
                        let _ = handles_tx.send(Err(e));
                    }
                }
            })
            .map_err(|source| Error::Start {
                what: "the HTTP thread",
                source,
            })?;
        let handles = handles_rx
            .recv()
            .map_err(|_| Error::Start {
                what: "the HTTP servers",
                source: std::io::Error::other("the HTTP thread ended before serving"),
            })?
            .map_err(|source| Error::Start {
                what: "the HTTP servers",
                source,
            })?;
        let mut background = Vec::new();
        let for_expiry = state.clone();
        background.push(every(
            "libsql-wal-stream-expiry",
            Duration::from_millis(500),
            move || {
                // Dropping them here rolls back their transactions, off any executor.
                drop(for_expiry.streams.expire(Instant::now()));
            },
        )?);
        if let Some(idle) = state.config.idle_namespace_timeout {
            let for_idle = state.clone();
            let check = (idle / 4).clamp(Duration::from_millis(100), Duration::from_secs(30));
            background.push(every("libsql-wal-idle-close", check, move || {
                let closed = for_idle.host.close_idle(idle);
                if closed > 0 {
                    info!(closed, "idle namespaces closed");
                }
            })?);
        }
        info!(%user_addr, ?admin_addr, "server started");
        Ok(Server {
            state,
            user_addr,
            admin_addr,
            handles,
            http_thread: Some(http_thread),
            background,
        })
    }

    /// Where the user API listens.
    pub fn user_addr(&self) -> SocketAddr {
        self.user_addr
    }

    /// Where the admin API listens.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// Makes this server a read replica of `config.primary`: its namespaces (on a host whose
    /// registry has `RegistryConfig::replica`) follow the primary's, and serve reads. Fails
    /// if it follows already.
    pub fn follow(&self, config: ReplicaConfig) -> Result<()> {
        let mut follower = self
            .state
            .follower
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if follower.is_some() {
            return Err(Error::Config(
                "this server follows a primary already".into(),
            ));
        }
        config.check_credentials(self.state.config.auth_token.is_some())?;
        *follower = Some(replica::Follower::start(
            config,
            self.state.host.clone(),
            &self.state.config.limits,
        )?);
        Ok(())
    }

    /// Where each namespace a replica follows stands (empty on a primary).
    pub fn replication_statuses(&self) -> Vec<FollowStatus> {
        self.state.replication_statuses()
    }

    /// Stops: no new connections, in-flight requests finish (at most `shutdown_grace`), open
    /// streams roll back, then the namespaces (seal, durable, checkpoint) and the storage shut
    /// down. It blocks: call it from a plain thread, not from an async task.
    pub fn stop(mut self) -> StopSummary {
        let started = Instant::now();
        self.state.stopping.send_replace(true);
        let handles = std::mem::take(&mut self.handles);
        futures::executor::block_on(futures::future::join_all(
            handles.iter().map(|h| h.stop(true)),
        ));
        if let Some(thread) = self.http_thread.take() {
            let _ = thread.join();
        }
        // After the requests in flight: a forwarded write waits for the follower to apply it.
        let follower = self
            .state
            .follower
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(follower) = follower {
            follower.stop();
        }
        let deadline = Instant::now() + self.state.config.shutdown_grace;
        for (stop, thread) in std::mem::take(&mut self.background) {
            drop(stop);
            // An idle close waiting on storage is left to end on its own at the deadline.
            while !thread.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let streams = self.state.streams.take_all();
        let streams_rolled_back = streams.len();
        drop(streams);
        self.state.pool.stop(deadline);
        self.state.admin_pool.stop(deadline);
        let namespaces = self.state.host.list().map_or(0, |l| l.len());
        let error = self.state.host.shutdown().err().map(|e| e.to_string());
        StopSummary {
            streams_rolled_back,
            namespaces,
            took: started.elapsed(),
            error,
        }
    }
}
