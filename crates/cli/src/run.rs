//! `libsql-wal run`: the server. It opens the storage (a directory, or S3), a WAL registry
//! over it and the HTTP server, prints a banner, and on SIGINT or SIGTERM stops gracefully
//! (requests finish, streams roll back, every namespace is sealed, made durable and
//! checkpointed); a second signal exits at once. With `--replicate-from` it is a read replica
//! of another `libsql-wal run`: its namespaces follow the primary's (`Server::follow`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use libsql_wal::{
    BucketCatchUp, CheckpointThreshold, PrimaryBucket, RegistryConfig, SwapStrategy, WalRegistry,
};
use libsql_wal_backend::{Backend, CompactionStrategy};
use libsql_wal_segment::StdIo;
use libsql_wal_server::{
    Durability, FollowedNamespaces, Limits, ReplicaConfig, Server, ServerConfig, Token, WalHost,
};
use libsql_wal_supervisor::{ActorStorage, MaintenanceConfig, StorageConfig};
use tracing::{error, info};

use crate::bucket::{open_backend, with_backend, Missing, OnBackend, OpenFailure, OpenedBackend};
use crate::settings::{
    init_logging, lock_data_dir, parse_duration, LogFormat, StorageArgs, StorageLocation,
};

/// When commits are synced to local disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SyncMode {
    /// At seal (the bucket is the durable copy): SQLite's synchronous=NORMAL.
    Normal,
    /// At every commit: SQLite's synchronous=FULL.
    Full,
}

/// How remote segments are compacted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Compaction {
    /// Size-tiered, 8 segments per merge.
    Tiered,
    /// Every segment twice the span of the next newer.
    Logarithmic,
}

/// `libsql-wal run`'s flags.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Where namespaces (and, by default, the bucket) live.
    #[arg(long, env = "LIBSQL_WAL_DATA_DIR", default_value = "libsql-wal-data")]
    data_dir: PathBuf,
    /// Durable storage.
    #[command(flatten)]
    storage: StorageArgs,
    /// Where the user API (Hrana over HTTP) listens.
    #[arg(long, env = "LIBSQL_WAL_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Where the admin API listens.
    #[arg(
        long,
        env = "LIBSQL_WAL_ADMIN_LISTEN",
        default_value = "127.0.0.1:9090"
    )]
    admin_listen: SocketAddr,
    /// Serve no admin API.
    #[arg(long, env = "LIBSQL_WAL_NO_ADMIN")]
    no_admin: bool,
    /// The user API's bearer token (prefer the environment variable or a file: flags show in
    /// process listings).
    #[arg(long, env = "LIBSQL_WAL_AUTH_TOKEN", hide_env_values = true, value_parser = parse_token)]
    auth_token: Option<Token>,
    /// A file holding the user API's bearer token.
    #[arg(
        long,
        env = "LIBSQL_WAL_AUTH_TOKEN_FILE",
        conflicts_with = "auth_token"
    )]
    auth_token_file: Option<PathBuf>,
    /// The admin API's bearer token.
    #[arg(long, env = "LIBSQL_WAL_ADMIN_AUTH_TOKEN", hide_env_values = true, value_parser = parse_token)]
    admin_auth_token: Option<Token>,
    /// A file holding the admin API's bearer token.
    #[arg(
        long,
        env = "LIBSQL_WAL_ADMIN_AUTH_TOKEN_FILE",
        conflicts_with = "admin_auth_token"
    )]
    admin_auth_token_file: Option<PathBuf>,
    /// Serve the user API without a token on a non-loopback address (the admin API never
    /// listens off loopback without its token).
    #[arg(long, env = "LIBSQL_WAL_ALLOW_UNAUTHENTICATED")]
    allow_unauthenticated: bool,
    /// Never take a request's namespace from its Host header (`tenant.example.com`): for a
    /// server reached by a dotted name of its own.
    #[arg(long, env = "LIBSQL_WAL_NO_HOST_NAMESPACES")]
    no_host_namespaces: bool,
    /// When commits are synced to local disk.
    #[arg(long, env = "LIBSQL_WAL_SYNC", value_enum, default_value = "normal")]
    sync: SyncMode,
    /// Seal a segment (and ship it) once it holds this many frames.
    #[arg(long, env = "LIBSQL_WAL_SEGMENT_MAX_FRAMES", default_value_t = SwapStrategy::default().max_frames)]
    segment_max_frames: u64,
    /// Seal a segment once its frames take this many bytes.
    #[arg(long, env = "LIBSQL_WAL_SEGMENT_MAX_BYTES", default_value_t = SwapStrategy::default().max_bytes)]
    segment_max_bytes: u64,
    /// Seal a segment once its first commit is this old (bounds what a lost disk loses).
    #[arg(long, env = "LIBSQL_WAL_SEGMENT_MAX_AGE", default_value = "5m", value_parser = parse_duration)]
    segment_max_age: Duration,
    /// Copy a namespace's sealed segments into its database file once those that may go
    /// (durable, unread) hold this many frames (or reach --checkpoint-after-segments).
    #[arg(long, env = "LIBSQL_WAL_CHECKPOINT_AFTER_FRAMES", default_value_t = CheckpointThreshold::default().frames)]
    checkpoint_after_frames: u64,
    /// Copy a namespace's sealed segments into its database file once this many may go (or
    /// they reach --checkpoint-after-frames).
    #[arg(long, env = "LIBSQL_WAL_CHECKPOINT_AFTER_SEGMENTS", default_value_t = CheckpointThreshold::default().segments)]
    checkpoint_after_segments: usize,
    /// Uploads running at once, across namespaces.
    #[arg(long, env = "LIBSQL_WAL_UPLOAD_CONCURRENCY", default_value_t = StorageConfig::default().max_in_flight)]
    upload_concurrency: usize,
    /// Sealed segments of one namespace that may wait to be durable before writers wait.
    #[arg(long, env = "LIBSQL_WAL_QUEUE_DEPTH", default_value_t = StorageConfig::default().max_enqueued_segments)]
    queue_depth: usize,
    /// Compact (and, with --retention, prune) the bucket this often; off when not given.
    #[arg(long, env = "LIBSQL_WAL_MAINTENANCE_INTERVAL", value_parser = parse_duration)]
    maintenance_interval: Option<Duration>,
    /// How segments are compacted by maintenance.
    #[arg(
        long,
        env = "LIBSQL_WAL_COMPACTION",
        value_enum,
        default_value = "tiered"
    )]
    compaction: Compaction,
    /// Keep restore points this far back (older segments covered by a compacted one go);
    /// every point is kept when not given.
    #[arg(long, env = "LIBSQL_WAL_RETENTION", value_parser = parse_duration, requires = "maintenance_interval")]
    retention: Option<Duration>,
    /// Close a namespace unused this long (it reopens on demand); 0 never closes one.
    #[arg(long, env = "LIBSQL_WAL_IDLE_NAMESPACE_TIMEOUT", default_value = "5m", value_parser = parse_duration)]
    idle_namespace_timeout: Duration,
    /// Threads running SQL.
    #[arg(long, env = "LIBSQL_WAL_SQL_THREADS", default_value_t = ServerConfig::default().sql_threads)]
    sql_threads: usize,
    /// Time one request may run before it is interrupted.
    #[arg(long, env = "LIBSQL_WAL_STATEMENT_TIMEOUT", default_value = "30s", value_parser = parse_statement_timeout)]
    statement_timeout: Duration,
    /// Largest request body, in bytes.
    #[arg(long, env = "LIBSQL_WAL_MAX_BODY_BYTES", default_value_t = Limits::default().max_body_bytes)]
    max_body_bytes: usize,
    /// How long shutdown waits for storage to make every namespace durable.
    #[arg(long, env = "LIBSQL_WAL_SHUTDOWN_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    shutdown_timeout: Duration,
    /// Run as a read replica of the primary whose user API is at this URL
    /// (`http://host:port`): the namespaces follow the primary's and serve reads; writes are
    /// refused with SQLITE_READONLY (see --forward-writes). The replica's own log goes to its own storage (by default
    /// the bucket under its data directory): never the primary's bucket (see
    /// --primary-storage, which reads it).
    #[arg(long, env = "LIBSQL_WAL_REPLICATE_FROM")]
    replicate_from: Option<String>,
    /// With --replicate-from: the namespaces to follow, comma-separated.
    #[arg(
        long,
        env = "LIBSQL_WAL_REPLICATE_NAMESPACES",
        value_delimiter = ',',
        requires = "replicate_from",
        conflicts_with = "all"
    )]
    namespaces: Vec<String>,
    /// With --replicate-from: follow every namespace of the primary, new ones too.
    #[arg(long, env = "LIBSQL_WAL_REPLICATE_ALL", requires = "replicate_from")]
    all: bool,
    /// With --replicate-from: the primary's user API token.
    #[arg(long, env = "LIBSQL_WAL_PRIMARY_AUTH_TOKEN", hide_env_values = true, value_parser = parse_token, requires = "replicate_from")]
    primary_auth_token: Option<Token>,
    /// With --replicate-from: send writes to the primary and answer them once the replica has
    /// applied them (read your writes), rather than refuse them. A stream goes to the
    /// primary when its first request writes; one that began with reads stays here, and a
    /// write later in it is refused. With --primary-auth-token, the replica's own
    /// --auth-token is required: it is then what lets a client write.
    #[arg(long, env = "LIBSQL_WAL_FORWARD_WRITES", requires = "replicate_from")]
    forward_writes: bool,
    /// With --replicate-from: the primary's bucket (a directory, or `s3://bucket/prefix`
    /// with --s3-endpoint and --s3-region), read only: a namespace with nothing here yet, or
    /// one behind what the primary's log still holds, catches up from it rather than take a
    /// full image from the primary. Never the replica's own --storage.
    #[arg(long, env = "LIBSQL_WAL_PRIMARY_STORAGE", requires = "replicate_from")]
    primary_storage: Option<String>,
    /// Log line format (the level comes from RUST_LOG, default info).
    #[arg(
        long,
        env = "LIBSQL_WAL_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    log_format: LogFormat,
}

/// Parses `--statement-timeout`: from 1 ms to 1 day.
fn parse_statement_timeout(text: &str) -> Result<Duration, String> {
    let limit = parse_duration(text)?;
    if limit.is_zero() || limit > Duration::from_secs(86_400) {
        return Err(format!("{text:?}: a statement timeout is from 1ms to 1d"));
    }
    Ok(limit)
}

/// Parses a token flag into a `Token`, whose `Debug` shows nothing of it.
fn parse_token(text: &str) -> Result<Token, String> {
    Token::new(text).map_err(|e| e.to_string())
}

fn read_token(
    value: Option<&Token>,
    file: Option<&PathBuf>,
    flag: &str,
) -> Result<Option<Token>, String> {
    let text = match (value, file) {
        (Some(token), _) => return Ok(Some(token.clone())),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|e| format!("{flag}-file {}: {e}", path.display()))?
            .trim()
            .to_string(),
        (None, None) => return Ok(None),
    };
    Token::new(text)
        .map(Some)
        .map_err(|e| format!("{flag}: {e}"))
}

/// How the banner's curl line sends the token without printing it.
fn token_hint(value: Option<&Token>, file: Option<&PathBuf>) -> Option<String> {
    if value.is_some() {
        if std::env::var_os("LIBSQL_WAL_AUTH_TOKEN").is_some() {
            return Some("-H \"Authorization: Bearer $LIBSQL_WAL_AUTH_TOKEN\" ".into());
        }
        return Some("-H 'Authorization: Bearer <your token>' ".into());
    }
    file.map(|path| format!("-H \"Authorization: Bearer $(cat {})\" ", path.display()))
}

/// Runs the server until a signal; returns the process's exit code.
pub fn run(args: RunArgs) -> ExitCode {
    init_logging(args.log_format, "info");
    let replica = match replica_config(&args) {
        Ok(replica) => replica,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = std::fs::create_dir_all(&args.data_dir) {
        eprintln!(
            "error: cannot create the data directory {}: {e}",
            args.data_dir.display()
        );
        return ExitCode::FAILURE;
    }
    let lock = match lock_data_dir(&args.data_dir) {
        Ok(lock) => lock,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = with_backend(
        &args.storage,
        &args.data_dir,
        Missing::Create,
        Serve {
            args: &args,
            replica,
        },
    );
    drop(lock);
    code
}

/// The server, on whichever backend the flags name.
struct Serve<'a> {
    args: &'a RunArgs,
    /// With --replicate-from: what to follow.
    replica: Option<ReplicaConfig>,
}

/// What --replicate-from, --namespaces and --all ask for; the error names the flag.
fn replica_config(args: &RunArgs) -> Result<Option<ReplicaConfig>, String> {
    let Some(primary) = &args.replicate_from else {
        return Ok(None);
    };
    let namespaces = if args.all {
        FollowedNamespaces::All
    } else if args.namespaces.is_empty() {
        return Err("--replicate-from needs --namespaces a,b,... or --all".into());
    } else {
        let mut listed = Vec::with_capacity(args.namespaces.len());
        for name in &args.namespaces {
            listed.push(
                name.trim()
                    .parse()
                    .map_err(|e| format!("--namespaces: {name:?}: {e}"))?,
            );
        }
        FollowedNamespaces::Listed(listed)
    };
    let config = ReplicaConfig {
        primary: primary.clone(),
        auth_token: args.primary_auth_token.clone(),
        namespaces,
        discover_every: Duration::from_secs(10),
        forward_writes: args.forward_writes,
        primary_bucket: None,
    };
    config
        .check_credentials(args.auth_token.is_some() || args.auth_token_file.is_some())
        .map_err(|e| e.to_string())?;
    Ok(Some(config))
}

impl OnBackend for Serve<'_> {
    fn run<B: Backend>(
        self,
        backend: B,
        location: &StorageLocation,
        runtime: tokio::runtime::Runtime,
    ) -> ExitCode {
        serve(backend, self.args, self.replica, location, runtime)
    }
}

/// Opens the primary's bucket `--primary-storage` names, read only, for catch-ups; `None`
/// without the flag. The error is the exit code and what is wrong.
fn primary_bucket(
    args: &RunArgs,
    own: &StorageLocation,
    runtime: &tokio::runtime::Runtime,
) -> Result<Option<Arc<dyn PrimaryBucket>>, OpenFailure> {
    let Some(url) = &args.primary_storage else {
        return Ok(None);
    };
    let usage = |message: String| OpenFailure {
        code: ExitCode::from(2),
        message,
    };
    let flags = StorageArgs {
        storage: Some(url.clone()),
        ..args.storage.clone()
    };
    let location = flags
        .location(&args.data_dir)
        .map_err(|e| usage(format!("--primary-storage: {e}")))?;
    let same = match (&location, own) {
        (StorageLocation::Fs(a), StorageLocation::Fs(b)) => {
            a == b
                || a.canonicalize()
                    .ok()
                    .is_some_and(|a| b.canonicalize().ok() == Some(a))
        }
        (a, b) => a == b,
    };
    if same {
        return Err(usage(format!(
            "--primary-storage {location} is this replica's own storage: the replica's log goes to a bucket of its own, and reads the primary's"
        )));
    }
    let dir = args.data_dir.join("primary-bucket");
    let opened =
        open_backend(&location, &flags, Missing::ReadOnly, runtime).map_err(|e| OpenFailure {
            message: format!("--primary-storage: {}", e.message),
            ..e
        })?;
    match opened {
        OpenedBackend::Fs(backend) => catch_up_over(backend, &dir),
        OpenedBackend::S3(backend) => catch_up_over(backend, &dir),
    }
    .map(Some)
    .map_err(|message| OpenFailure {
        code: ExitCode::FAILURE,
        message: format!("--primary-storage {location}: {message}"),
    })
}

/// Catch-ups from the primary's bucket over `backend`, with their scratch files under `dir`.
fn catch_up_over<B: Backend>(
    backend: B,
    dir: &std::path::Path,
) -> Result<Arc<dyn PrimaryBucket>, String> {
    let storage = ActorStorage::<B, std::fs::File>::start(
        backend,
        StorageConfig {
            scratch_dir: dir.join("scratch"),
            ..StorageConfig::default()
        },
    )
    .map_err(|e| format!("cannot start its storage pipeline: {e}"))?;
    let catch_up = BucketCatchUp::new(storage, &dir.join("catch-up")).map_err(|e| e.to_string())?;
    Ok(Arc::new(catch_up))
}

fn serve<B: Backend>(
    backend: B,
    args: &RunArgs,
    mut replica: Option<ReplicaConfig>,
    location: &StorageLocation,
    runtime: tokio::runtime::Runtime,
) -> ExitCode {
    if let Some(replica) = replica.as_mut() {
        match primary_bucket(args, location, &runtime) {
            Ok(bucket) => replica.primary_bucket = bucket,
            Err(e) => {
                eprintln!("error: {}", e.message);
                return e.code;
            }
        }
    }
    let auth_token = match read_token(
        args.auth_token.as_ref(),
        args.auth_token_file.as_ref(),
        "--auth-token",
    ) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let admin_token = match read_token(
        args.admin_auth_token.as_ref(),
        args.admin_auth_token_file.as_ref(),
        "--admin-auth-token",
    ) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let storage_config = StorageConfig {
        max_in_flight: args.upload_concurrency.max(1),
        max_enqueued_segments: args.queue_depth.max(1),
        scratch_dir: args.data_dir.join("scratch"),
        shutdown_timeout: args.shutdown_timeout,
        maintenance: args.maintenance_interval.map(|interval| MaintenanceConfig {
            interval,
            strategy: match args.compaction {
                Compaction::Tiered => CompactionStrategy::default(),
                Compaction::Logarithmic => CompactionStrategy::Logarithmic,
            },
            retention: args.retention,
        }),
        ..StorageConfig::default()
    };
    let storage = match ActorStorage::start(backend, storage_config) {
        Ok(storage) => storage,
        Err(e) => {
            eprintln!("error: cannot start the storage pipeline: {e}");
            return ExitCode::FAILURE;
        }
    };
    let registry = Arc::new(WalRegistry::new(
        StdIo,
        storage,
        RegistryConfig {
            swap: SwapStrategy {
                max_frames: args.segment_max_frames.max(1),
                max_bytes: args.segment_max_bytes.max(1),
                max_age: args.segment_max_age,
            },
            shutdown_timeout: args.shutdown_timeout,
            checkpoint_after: CheckpointThreshold {
                frames: args.checkpoint_after_frames,
                segments: args.checkpoint_after_segments,
            },
            replica: replica.is_some(),
            ..RegistryConfig::default()
        },
    ));
    let durability = match args.sync {
        SyncMode::Normal => Durability::Normal,
        SyncMode::Full => Durability::Full,
    };
    let host = match WalHost::new(
        &args.data_dir,
        registry,
        runtime.handle().clone(),
        durability,
    ) {
        Ok(host) => Arc::new(host),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let config = ServerConfig {
        user_addr: args.listen,
        admin_addr: (!args.no_admin).then_some(args.admin_listen),
        auth_token,
        admin_token,
        allow_unauthenticated: args.allow_unauthenticated,
        namespace_from_host: !args.no_host_namespaces,
        limits: Limits {
            max_body_bytes: args.max_body_bytes,
            statement_timeout: args.statement_timeout,
            ..Limits::default()
        },
        idle_namespace_timeout: (!args.idle_namespace_timeout.is_zero())
            .then_some(args.idle_namespace_timeout),
        sql_threads: args.sql_threads,
        ..ServerConfig::default()
    };
    let server = match Server::start(config, host) {
        Ok(server) => server,
        Err(e @ libsql_wal_server::Error::Config(_)) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let following = replica.as_ref().map(|r| {
        let what = match &r.namespaces {
            FollowedNamespaces::All => "every namespace".to_string(),
            FollowedNamespaces::Listed(list) => list
                .iter()
                .map(|n| n.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        };
        let writes = if r.forward_writes {
            "writes forwarded"
        } else {
            "read-only"
        };
        let catch_ups = match &args.primary_storage {
            Some(bucket) => format!("; catching up from {bucket}"),
            None => String::new(),
        };
        format!("{} ({what}; {writes}{catch_ups})", r.primary)
    });
    if let Some(replica) = replica {
        if let Err(e) = server.follow(replica) {
            eprintln!("error: {e}");
            drop(server.stop());
            return ExitCode::from(2);
        }
    }
    let user = format!("http://{}", server.user_addr());
    let hint =
        token_hint(args.auth_token.as_ref(), args.auth_token_file.as_ref()).unwrap_or_default();
    println!("libsql-wal {} serving", env!("CARGO_PKG_VERSION"));
    println!("  data:      {}", args.data_dir.display());
    println!("  bucket:    {location}");
    if let Some(following) = &following {
        println!("  replica of: {following}");
    }
    println!("  user API:  {user}  (namespace `default`; others by x-namespace header)");
    match server.admin_addr() {
        Some(admin) => {
            println!("  admin API: http://{admin}  (status page, /metrics, /v1/namespaces)")
        }
        None => println!("  admin API: off"),
    }
    println!(
        "  try:       curl -s {hint}{user}/v2/pipeline -d '{{\"requests\":[{{\"type\":\"execute\",\"stmt\":{{\"sql\":\"SELECT 1\"}}}},{{\"type\":\"close\"}}]}}'"
    );
    info!(user_api = %user, "serving");

    let signals = runtime.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        Ok::<_, std::io::Error>((
            signal(SignalKind::interrupt())?,
            signal(SignalKind::terminate())?,
        ))
    });
    let (mut interrupt, mut terminate) = match signals {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot listen for signals: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    });
    info!("stopping: finishing requests, rolling back open streams, sealing and shipping every namespace");
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let stopper = std::thread::spawn(move || {
        let _ = done_tx.send(server.stop());
    });
    let summary = runtime.block_on(async {
        tokio::select! {
            summary = done_rx => summary.ok(),
            _ = interrupt.recv() => None,
            _ = terminate.recv() => None,
        }
    });
    match summary {
        Some(summary) => {
            let _ = stopper.join();
            let took = summary.took.as_secs_f64();
            match summary.error {
                None => {
                    println!(
                        "libsql-wal stopped: {} namespaces sealed, durable and checkpointed, {} open streams rolled back, in {took:.1} s",
                        summary.namespaces, summary.streams_rolled_back
                    );
                    ExitCode::SUCCESS
                }
                Some(e) => {
                    error!(error = %e, "shutdown incomplete");
                    println!(
                        "libsql-wal stopped with an error after {took:.1} s: {e} (what is not durable stays on local disk and is sent at the next start)"
                    );
                    ExitCode::FAILURE
                }
            }
        }
        None => {
            println!("libsql-wal: second signal, exiting now (what is not durable stays on local disk and is sent at the next start)");
            std::process::exit(130);
        }
    }
}
