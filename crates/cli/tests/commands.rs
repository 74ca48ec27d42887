//! The operator commands end to end: the real `libsql-wal` binary run on a bucket a server's
//! storage pipeline filled (the fs backend, and S3 served by s3s-fs over loopback), its
//! tables, its `--json` (parsed), its exit codes, and what it restores, finds and deletes.

// Tests unwrap freely: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use libsql_sys::Connection;
use libsql_wal::{
    LibsqlWal, LibsqlWalManager, RegistryConfig, RestoreOptions, RestoreTarget, WalRegistry,
};
use libsql_wal_backend::{Backend, FsBackend};
use libsql_wal_segment::StdIo;
use libsql_wal_supervisor::{ActorStorage, StorageConfig};
use libsql_wal_testkit::{S3TestServer, ACCESS_KEY, SECRET_KEY, TEST_BUCKET};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_libsql-wal");

/// What a run of the binary did.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", self.stdout, self.stderr))
    }

    fn ok(self) -> Self {
        assert_eq!(self.code, 0, "{self:?}");
        self
    }
}

/// Where the binary finds the bucket: `--data-dir`, or the S3 flags.
#[derive(Debug, Clone)]
enum Bucket {
    Fs { data_dir: PathBuf },
    S3 { endpoint: String, prefix: String },
}

impl Bucket {
    fn flags(&self) -> Vec<String> {
        match self {
            Bucket::Fs { data_dir } => vec!["--data-dir".into(), data_dir.display().to_string()],
            Bucket::S3 { endpoint, prefix } => vec![
                "--storage".into(),
                format!("s3://{TEST_BUCKET}/{prefix}"),
                "--s3-endpoint".into(),
                endpoint.clone(),
                "--s3-region".into(),
                "us-east-1".into(),
            ],
        }
    }
}

/// How long one command may run before the test gives up on it.
const COMMAND_DEADLINE: Duration = Duration::from_secs(300);

/// Runs `libsql-wal {args} {bucket flags}` with `stdin` as its input (not a terminal).
fn cli_with_input(args: &[&str], bucket: Option<&Bucket>, stdin: &str) -> Run {
    let mut command = Command::new(BIN);
    command.args(args);
    if let Some(bucket) = bucket {
        command.args(bucket.flags());
    }
    let mut child = command
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read while waiting (a full pipe would stall the command), and give up on a command
    // that does not end: a regression that makes one hang fails the test instead.
    let drain = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            let _ = pipe.read_to_end(&mut text);
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    // A command that ends before reading its input (a usage error, a refusal) closes the
    // pipe: that is its answer, not the test's failure.
    if let Err(e) = child.stdin.take().unwrap().write_all(stdin.as_bytes()) {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            let _ = child.kill();
            let _ = child.wait();
            panic!("writing stdin: {e}");
        }
    }
    let deadline = Instant::now() + COMMAND_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("libsql-wal {args:?} did not end in {COMMAND_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Run {
        code: status.code().unwrap_or(-1),
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

fn cli(args: &[&str], bucket: Option<&Bucket>) -> Run {
    cli_with_input(args, bucket, "")
}

type Storage<B> = ActorStorage<B, std::fs::File>;

/// A server's data directory and storage pipeline, laid out as `libsql-wal run` lays them out
/// (`{data_dir}/namespaces/{ns}/data`, the fs bucket in `{data_dir}/bucket`), written through
/// the library.
struct Server<B: Backend> {
    registry: Arc<WalRegistry<StdIo, Storage<B>>>,
    data_dir: PathBuf,
}

impl<B: Backend> Server<B> {
    fn start(backend: B, data_dir: &Path) -> Self {
        let storage = Storage::start(
            backend,
            StorageConfig {
                scratch_dir: data_dir.join("scratch"),
                ..StorageConfig::default()
            },
        )
        .unwrap();
        Server {
            registry: Arc::new(WalRegistry::new(StdIo, storage, RegistryConfig::default())),
            data_dir: data_dir.to_path_buf(),
        }
    }

    fn db_path(&self, ns: &str) -> PathBuf {
        let dir = self.data_dir.join("namespaces").join(ns);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("data")
    }

    fn connect(&self, ns: &str) -> Connection<LibsqlWal<StdIo, Storage<B>>> {
        Connection::open(
            self.db_path(ns),
            libsql_sys::rusqlite::OpenFlags::default(),
            LibsqlWalManager::new(self.registry.clone()),
            0,
            None,
        )
        .unwrap()
    }

    /// Seals what `ns` committed and waits until it is durable; returns its frame_no.
    fn make_durable(&self, ns: &str) -> u64 {
        let shared = self.registry.get(&ns.parse().unwrap()).unwrap();
        shared.seal_now().unwrap();
        let end = shared.last_committed_frame_no();
        let started = Instant::now();
        while shared.durable_frame_no() < end {
            assert!(started.elapsed() < Duration::from_secs(60), "durable");
            std::thread::sleep(Duration::from_millis(2));
        }
        end
    }

    /// Makes `ns` durable, checkpoints it and copies its database file to `to`: the image a
    /// restore at that point must give, byte for byte (footer included). Returns the point.
    fn snapshot(&self, ns: &str, to: &Path) -> u64 {
        let end = self.make_durable(ns);
        let shared = self.registry.get(&ns.parse().unwrap()).unwrap();
        shared.checkpoint().unwrap();
        assert_eq!(shared.checkpointed_frame_no(), end);
        std::fs::copy(self.db_path(ns), to).unwrap();
        end
    }

    fn stop(self) {
        self.registry.shutdown().unwrap();
    }
}

/// Inserts `rows` rows (with blobs big enough for overflow pages) from id `first`.
fn insert<W: libsql_sys::wal::Wal>(conn: &Connection<W>, first: i64, rows: i64) {
    conn.execute_batch("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v BLOB)")
        .unwrap();
    for id in first..first + rows {
        conn.execute(
            "INSERT INTO t VALUES (?1, randomblob(1000 + ?1 % 5000))",
            [id],
        )
        .unwrap();
    }
}

/// The time now as RFC 3339, with a few milliseconds on either side of it.
fn now_rfc3339() -> String {
    std::thread::sleep(Duration::from_millis(5));
    let text = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    std::thread::sleep(Duration::from_millis(5));
    text
}

fn assert_same_file(a: &Path, b: &Path) {
    let (a_bytes, b_bytes) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    assert_eq!(
        a_bytes.len(),
        b_bytes.len(),
        "{} vs {}",
        a.display(),
        b.display()
    );
    assert!(
        a_bytes == b_bytes,
        "{} and {} differ",
        a.display(),
        b.display()
    );
}

/// Opens `path` with plain SQLite (no libSQL WAL) and runs `PRAGMA integrity_check`.
fn integrity_check(path: &Path) -> String {
    let conn = libsql_sys::rusqlite::Connection::open(path).unwrap();
    conn.query_row("PRAGMA integrity_check", (), |r| r.get(0))
        .unwrap()
}

/// Two points of `tenant` in the bucket: the images at each, the time between them.
struct Points {
    first: (u64, PathBuf),
    between: String,
    second: (u64, PathBuf),
}

fn two_points<B: Backend>(server: &Server<B>, work: &Path) -> Points {
    let conn = server.connect("tenant");
    insert(&conn, 0, 60);
    let first_image = work.join("first.db");
    let first = server.snapshot("tenant", &first_image);
    let between = now_rfc3339();
    insert(&conn, 60, 40);
    conn.execute("DELETE FROM t WHERE id % 7 = 0", ()).unwrap();
    let second_image = work.join("second.db");
    let second = server.snapshot("tenant", &second_image);
    Points {
        first: (first, first_image),
        between,
        second: (second, second_image),
    }
}

/// `ls`, `restore` (latest, at a frame, at a time, a dry run, over an existing file) and a
/// clean `verify`, on `bucket`.
fn list_restore_and_verify(bucket: &Bucket, points: &Points, work: &Path) {
    std::fs::create_dir_all(work).unwrap();
    let listed = cli(&["ls", "--json"], Some(bucket)).ok().json();
    let tenant = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["namespace"] == "tenant")
        .unwrap_or_else(|| panic!("tenant listed: {listed}"));
    assert_eq!(tenant["state"], "live");
    assert_eq!(tenant["generation"], 1);
    assert_eq!(tenant["durable_frame_no"], points.second.0);
    assert_eq!(tenant["newest"]["frame_no"], points.second.0);
    assert!(tenant["oldest"]["frame_no"].as_u64().unwrap() <= points.first.0);
    assert!(tenant["segments"].as_u64().unwrap() >= 2);
    assert!(tenant["bytes"].as_u64().unwrap() > 100_000, "{tenant}");
    let table = cli(&["ls"], Some(bucket)).ok();
    assert!(table.stdout.starts_with("NAMESPACE"), "{}", table.stdout);
    assert!(table.stdout.contains("tenant"), "{}", table.stdout);

    let detail = cli(&["ls", "tenant", "--json"], Some(bucket)).ok().json();
    assert_eq!(detail["generations"][0]["number"], 1);
    assert_eq!(detail["generations"][0]["in_history"], true);
    let segments = detail["segments"].as_array().unwrap();
    assert_eq!(segments.len() as u64, tenant["segments"].as_u64().unwrap());
    assert!(segments
        .iter()
        .any(|s| s["end_frame_no"] == points.first.0 && s["bytes"].as_u64().unwrap() > 0));
    let table = cli(&["ls", "tenant"], Some(bucket)).ok();
    assert!(table.stdout.contains("GENERATION"), "{}", table.stdout);

    // Latest, at the first point's frame, and at a time between the points.
    let latest = work.join("latest.db");
    let run = cli(
        &["restore", "tenant", latest.to_str().unwrap(), "--json"],
        Some(bucket),
    )
    .ok();
    let report = run.json();
    assert_eq!(report["end_frame_no"], points.second.0);
    assert!(report["objects_fetched"].as_u64().unwrap() >= 2);
    assert!(
        !run.stderr.contains('\u{2588}') && !run.stderr.contains("ETA"),
        "no progress bar off a terminal: {}",
        run.stderr
    );
    assert_same_file(&latest, &points.second.1);
    assert_eq!(integrity_check(&latest), "ok");
    let at_frame = work.join("at-frame.db");
    let frame = points.first.0.to_string();
    cli(
        &[
            "restore",
            "tenant",
            at_frame.to_str().unwrap(),
            "--frame",
            &frame,
        ],
        Some(bucket),
    )
    .ok();
    assert_same_file(&at_frame, &points.first.1);
    let at_time = work.join("at-time.db");
    let run = cli(
        &[
            "restore",
            "tenant",
            at_time.to_str().unwrap(),
            "--at",
            &points.between,
        ],
        Some(bucket),
    )
    .ok();
    assert!(
        run.stdout.starts_with("restored tenant at frame"),
        "{}",
        run.stdout
    );
    assert_same_file(&at_time, &points.first.1);

    // A dry run fetches nothing and writes no file; an existing file is refused.
    let planned = work.join("planned.db");
    let plan = cli(
        &[
            "restore",
            "tenant",
            planned.to_str().unwrap(),
            "--dry-run",
            "--json",
        ],
        Some(bucket),
    )
    .ok()
    .json();
    assert_eq!(plan["end_frame_no"], points.second.0);
    assert_eq!(
        plan["objects"].as_u64().unwrap(),
        2 * plan["segments"].as_array().unwrap().len() as u64
    );
    assert!(plan["bytes"].as_u64().unwrap() > 0);
    assert!(!planned.exists());
    let refused = cli(
        &["restore", "tenant", latest.to_str().unwrap()],
        Some(bucket),
    );
    assert_eq!(refused.code, 2, "{refused:?}");
    assert!(refused.stderr.contains("exists"), "{}", refused.stderr);

    let verified = cli(&["verify", "--all", "--json"], Some(bucket))
        .ok()
        .json();
    assert_eq!(
        verified["problems"].as_array().unwrap().len(),
        0,
        "{verified}"
    );
    assert!(
        verified["namespaces"][0]["frames_checked"]
            .as_u64()
            .unwrap()
            > 0
    );
}

#[test]
fn ls_restore_and_verify_on_the_fs_backend() {
    on_fs(ls_restore_and_verify_live_and_stopped);
}

#[test]
fn ls_restore_and_verify_on_s3() {
    on_s3(ls_restore_and_verify_live_and_stopped);
}

/// Two points, then `list_restore_and_verify` beside the live server and with none running.
fn ls_restore_and_verify_live_and_stopped<B: Backend>(
    server: Server<B>,
    bucket: &Bucket,
    work: &Path,
) {
    let points = two_points(&server, work);
    list_restore_and_verify(bucket, &points, &work.join("live"));
    server.stop();
    list_restore_and_verify(bucket, &points, &work.join("stopped"));
}

/// The fs bucket's file of object `key`.
fn object_file(data_dir: &Path, key: &str) -> PathBuf {
    data_dir.join("bucket").join(key)
}

#[test]
fn verify_names_a_flipped_byte_a_missing_object_and_a_gap() {
    let work = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (server, bucket) = fs_server(&runtime, work.path());
    let data_dir = work.path().join("data");
    let conn = server.connect("tenant");
    for round in 0..3 {
        insert(&conn, round * 20, 20);
        server.make_durable("tenant");
    }
    drop(conn);
    server.stop();
    let clean = cli(&["verify", "tenant"], Some(&bucket)).ok();
    assert!(
        clean.stdout.contains("ok: no problem found"),
        "{}",
        clean.stdout
    );
    let detail = cli(&["ls", "tenant", "--json"], Some(&bucket)).ok().json();
    let keys: Vec<String> = detail["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["key"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(keys.len(), 3, "{detail}");
    let generation = "tenant/generations/00000000000000000001";
    let data = |key: &str| format!("{generation}/segments/{key}");
    let index = |key: &str| format!("{generation}/indexes/{key}");

    // A flipped byte in the frames of the middle segment.
    let middle = object_file(&data_dir, &data(&keys[1]));
    let original = std::fs::read(&middle).unwrap();
    let mut flipped = original.clone();
    flipped[200] ^= 0x40;
    std::fs::write(&middle, &flipped).unwrap();
    let run = cli(&["verify", "tenant"], Some(&bucket));
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains(&data(&keys[1])), "{}", run.stdout);
    assert!(run.stdout.contains("offset"), "{}", run.stdout);
    let problems = cli(&["verify", "tenant", "--json"], Some(&bucket)).json();
    assert_eq!(
        problems["problems"].as_array().unwrap().len(),
        1,
        "{problems}"
    );
    std::fs::write(&middle, &original).unwrap();

    // A missing index.
    let newest_index = object_file(&data_dir, &index(&keys[0]));
    let saved = std::fs::read(&newest_index).unwrap();
    std::fs::remove_file(&newest_index).unwrap();
    let run = cli(&["verify", "tenant"], Some(&bucket));
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains(&index(&keys[0])), "{}", run.stdout);
    std::fs::write(&newest_index, saved).unwrap();

    // The newest segment's data is gone and its index was written hours ago (not an upload
    // in flight): no gap shows it, the index does.
    let newest_data = object_file(&data_dir, &data(&keys[0]));
    let saved = std::fs::read(&newest_data).unwrap();
    std::fs::remove_file(&newest_data).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&newest_index)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - Duration::from_secs(3 * 3600))
        .unwrap();
    let run = cli(&["verify", "tenant"], Some(&bucket));
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout.contains(&data(&keys[0])) && run.stdout.contains("missing"),
        "{}",
        run.stdout
    );
    std::fs::write(&newest_data, saved).unwrap();

    // A gap: the middle segment's data is gone.
    std::fs::remove_file(&middle).unwrap();
    let run = cli(&["verify", "tenant"], Some(&bucket));
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout.contains(&format!("{generation}/segments/"))
            && run.stdout.contains("not continuous"),
        "{}",
        run.stdout
    );
}

/// A server on a fresh fs bucket under `work`, and how the binary finds it.
fn fs_server(runtime: &tokio::runtime::Runtime, work: &Path) -> (Server<FsBackend>, Bucket) {
    let data_dir = work.join("data");
    let backend = runtime
        .block_on(FsBackend::new(data_dir.join("bucket")))
        .unwrap();
    (Server::start(backend, &data_dir), Bucket::Fs { data_dir })
}

/// Runs `case` on a server over a fresh fs bucket in a directory of its own.
fn on_fs(case: fn(Server<FsBackend>, &Bucket, &Path)) {
    let work = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (server, bucket) = fs_server(&runtime, work.path());
    case(server, &bucket, work.path());
}

/// Runs `case` on a server over a fresh S3 bucket (s3s-fs over loopback).
fn on_s3(case: fn(Server<libsql_wal_backend::S3Backend>, &Bucket, &Path)) {
    let work = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let s3 = runtime.block_on(S3TestServer::start()).unwrap();
    let backend = runtime.block_on(s3.backend("cli")).unwrap();
    let bucket = Bucket::S3 {
        endpoint: s3.endpoint().to_string(),
        prefix: "cli".into(),
    };
    case(
        Server::start(backend, &work.path().join("data")),
        &bucket,
        work.path(),
    );
}

#[test]
fn compact_and_retain_dry_runs_match_what_the_real_runs_do_on_fs() {
    on_fs(compact_and_retain);
}

#[test]
fn compact_and_retain_dry_runs_match_what_the_real_runs_do_on_s3() {
    on_s3(compact_and_retain);
}

fn compact_and_retain<B: Backend>(server: Server<B>, bucket: &Bucket, work: &Path) {
    let conn = server.connect("tenant");
    for round in 0..10 {
        insert(&conn, round * 10, 10);
        server.make_durable("tenant");
    }
    let image = work.join("image.db");
    server.snapshot("tenant", &image);
    drop(conn);
    server.stop();
    let bucket = Some(bucket);
    let sources = |run: &Value| -> Vec<Value> {
        run["namespaces"][0]["written"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["sources"].clone())
            .collect()
    };
    let stored = || cli(&["ls", "tenant", "--json"], bucket).ok().json()["segments"].clone();
    let before = stored();
    assert_eq!(before.as_array().unwrap().len(), 10);
    let planned = cli(&["compact", "tenant", "--dry-run", "--json"], bucket)
        .ok()
        .json();
    assert!(!sources(&planned).is_empty(), "{planned}");
    assert_eq!(stored(), before, "a dry run writes nothing");
    let done = cli(&["compact", "tenant", "--json"], bucket).ok().json();
    assert_eq!(sources(&done), sources(&planned));
    assert_eq!(
        done["namespaces"][0]["put_requests"],
        planned["namespaces"][0]["put_requests"]
    );

    let deleted = |run: &Value| run["namespaces"][0]["deleted"].clone();
    let planned = cli(
        &[
            "retain",
            "tenant",
            "--keep-for",
            "0s",
            "--dry-run",
            "--json",
        ],
        bucket,
    )
    .ok()
    .json();
    assert!(
        !deleted(&planned).as_array().unwrap().is_empty(),
        "{planned}"
    );
    let kept = cli(
        &[
            "retain",
            "tenant",
            "--keep-for",
            "0s",
            "--keep-points",
            "100",
            "--dry-run",
            "--json",
        ],
        bucket,
    )
    .ok()
    .json();
    assert!(deleted(&kept).as_array().unwrap().is_empty(), "{kept}");
    let before = stored();
    let done = cli(&["retain", "tenant", "--keep-for", "0s", "--json"], bucket)
        .ok()
        .json();
    assert_eq!(deleted(&done), deleted(&planned));
    assert_eq!(
        stored().as_array().unwrap().len(),
        before.as_array().unwrap().len() - deleted(&done).as_array().unwrap().len()
    );
    assert_eq!(
        done["namespaces"][0]["delete_requests"],
        planned["namespaces"][0]["delete_requests"]
    );

    // What is left is whole and restores to the same database.
    cli(&["verify", "tenant"], bucket).ok();
    let restored = work.join("restored.db");
    cli(&["restore", "tenant", restored.to_str().unwrap()], bucket).ok();
    assert_same_file(&restored, &image);
}

#[test]
fn retain_drops_a_dead_generation_its_dry_run_names_and_latest_restores_as_before() {
    on_fs(retain_dead_generation);
}

/// Generation 1, a rewind to a point of it (2), writes in 2, then a second rewind to the same
/// point of 1 (3): 2 is a dead branch, superseded before a window of 0 s opens.
fn retain_dead_generation(server: Server<FsBackend>, bucket: &Bucket, work: &Path) {
    let conn = server.connect("tenant");
    insert(&conn, 0, 10);
    let point = server.make_durable("tenant");
    insert(&conn, 10, 10);
    server.make_durable("tenant");
    drop(conn);
    let db = server.db_path("tenant");
    let options = RestoreOptions::default();
    let rewound = server
        .registry
        .rewind(&db, RestoreTarget::FrameNo(point), &options)
        .unwrap();
    assert_eq!(rewound.generation, 2);
    let conn = server.connect("tenant");
    insert(&conn, 100, 5);
    server.make_durable("tenant");
    drop(conn);
    let target = RestoreTarget::InGeneration {
        generation: 1,
        frame_no: point,
    };
    assert_eq!(
        server
            .registry
            .rewind(&db, target, &options)
            .unwrap()
            .generation,
        3
    );
    let conn = server.connect("tenant");
    insert(&conn, 200, 5);
    let image = work.join("image.db");
    server.snapshot("tenant", &image);
    drop(conn);
    server.stop();
    let bucket = Some(bucket);
    let numbers = || -> Vec<Value> {
        let listed = cli(&["ls", "tenant", "--json"], bucket).ok().json();
        listed["generations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["number"].clone())
            .collect()
    };
    assert_eq!(numbers(), [3, 2, 1].map(Value::from), "newest first");

    let wide = cli(&["retain", "tenant", "--keep-for", "1h", "--json"], bucket)
        .ok()
        .json();
    assert_eq!(
        wide["namespaces"][0]["dropped_generations"],
        Value::from(Vec::<u64>::new()),
        "{wide}"
    );
    let planned = cli(
        &["retain", "tenant", "--keep-for", "0s", "--dry-run"],
        bucket,
    )
    .ok();
    assert!(
        planned.stdout.contains("would drop dead generations 2"),
        "{planned:?}"
    );
    assert_eq!(
        numbers(),
        [3, 2, 1].map(Value::from),
        "a dry run drops nothing"
    );
    let done = cli(&["retain", "tenant", "--keep-for", "0s", "--json"], bucket)
        .ok()
        .json();
    assert_eq!(
        done["namespaces"][0]["dropped_generations"],
        Value::from(vec![2]),
        "{done}"
    );
    assert_eq!(numbers(), [3, 2, 1].map(Value::from), "records stay");
    let again = cli(&["retain", "tenant", "--keep-for", "0s", "--json"], bucket)
        .ok()
        .json();
    assert_eq!(
        again["namespaces"][0]["dropped_generations"],
        Value::from(Vec::<u64>::new()),
        "{again}"
    );

    // The current history restores as before; of the dropped branch only its fork point is
    // left.
    cli(&["verify", "tenant"], bucket).ok();
    let restored = work.join("restored.db");
    cli(&["restore", "tenant", restored.to_str().unwrap()], bucket).ok();
    assert_same_file(&restored, &image);
    let dropped = cli(
        &[
            "restore",
            "tenant",
            work.join("dropped.db").to_str().unwrap(),
            "--generation",
            "2",
        ],
        bucket,
    );
    assert_eq!(dropped.code, 0, "{dropped:?}");
    let conn = libsql_sys::rusqlite::Connection::open(work.join("dropped.db")).unwrap();
    let mut stmt = conn.prepare("SELECT id FROM t ORDER BY id").unwrap();
    let ids: Vec<i64> = stmt
        .query_map((), |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        ids,
        (0..10).collect::<Vec<i64>>(),
        "the point generation 2 forked from"
    );
}

#[test]
fn delete_asks_then_ls_shows_the_namespace_deleted_on_fs() {
    on_fs(delete_then_ls);
}

#[test]
fn delete_asks_then_ls_shows_the_namespace_deleted_on_s3() {
    on_s3(delete_then_ls);
}

fn delete_then_ls<B: Backend>(server: Server<B>, bucket: &Bucket, work: &Path) {
    for ns in ["gone", "kept"] {
        let conn = server.connect(ns);
        insert(&conn, 0, 10);
        server.make_durable(ns);
    }
    server.stop();
    let bucket = Some(bucket);
    let typo = cli(&["delete", "gnoe", "--yes"], bucket);
    assert_eq!(typo.code, 1, "{typo:?}");
    assert!(typo.stderr.contains("no namespace gnoe"), "{}", typo.stderr);
    let unknown = cli(&["ls", "gnoe"], bucket);
    assert_eq!(unknown.code, 1, "{unknown:?}");
    let unknown = cli(&["verify", "gnoe"], bucket);
    assert_eq!(unknown.code, 1, "{unknown:?}");
    let refused = cli(&["delete", "gone"], bucket);
    assert_eq!(refused.code, 2, "no terminal, no --yes: {refused:?}");
    assert!(refused.stderr.contains("--yes"), "{}", refused.stderr);
    let done = cli(&["delete", "gone", "--yes", "--json"], bucket)
        .ok()
        .json();
    assert!(done["objects_deleted"].as_u64().unwrap() >= 3, "{done}");
    cli(&["delete", "kept", "--yes", "--keep-backup"], bucket).ok();

    let listed = cli(&["ls", "--json"], bucket).ok().json();
    let state = |ns: &str| {
        listed
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["namespace"] == ns)
            .map(|n| (n["state"].clone(), n["segments"].clone()))
    };
    assert_eq!(
        state("gone"),
        Some((Value::from("deleted"), Value::from(0))),
        "{listed}"
    );
    assert_eq!(
        state("kept"),
        Some((Value::from("deleted"), Value::from(0)))
    );
    let nothing = cli(
        &["restore", "kept", work.join("x.db").to_str().unwrap()],
        bucket,
    );
    assert_eq!(nothing.code, 1, "{nothing:?}");
    let backup = work.join("backup.db");
    cli(
        &[
            "restore",
            "kept",
            backup.to_str().unwrap(),
            "--generation",
            "1",
        ],
        bucket,
    )
    .ok();
    assert_eq!(integrity_check(&backup), "ok");
    let rows: i64 = libsql_sys::rusqlite::Connection::open(&backup)
        .unwrap()
        .query_row("SELECT count(*) FROM t", (), |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 10);
}

#[test]
fn inspect_reads_local_segments_and_stored_objects_and_finds_damage() {
    let work = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (server, bucket) = fs_server(&runtime, work.path());
    let data_dir = work.path().join("data");
    let conn = server.connect("tenant");
    insert(&conn, 0, 10);
    // A reader holds the sealed segment back from the checkpoint (and its deletion).
    let reader = server.connect("tenant");
    reader.execute_batch("BEGIN").unwrap();
    assert_eq!(
        reader
            .query_row("SELECT count(*) FROM t", (), |r| r.get::<_, i64>(0))
            .unwrap(),
        10
    );
    insert(&conn, 10, 5);
    server.make_durable("tenant");
    insert(&conn, 15, 3);
    let segments_dir = data_dir.join("namespaces/tenant/data-segments");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&segments_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    files.sort();
    assert!(files.len() >= 2, "{files:?}");
    let sealed = files[files.len() - 2].clone();
    let inspected = cli(&["inspect", sealed.to_str().unwrap(), "--json"], None)
        .ok()
        .json();
    assert_eq!(
        inspected["problems"].as_array().unwrap().len(),
        0,
        "{inspected}"
    );
    assert!(inspected["header"]
        .as_array()
        .unwrap()
        .iter()
        .any(|field| field[0] == "state" && field[1] == "sealed"));
    assert!(!inspected["index"].as_array().unwrap().is_empty());
    let current = files.last().unwrap().clone();
    let inspected = cli(&["inspect", current.to_str().unwrap(), "--json"], None)
        .ok()
        .json();
    assert_eq!(inspected["kind"], "segment");
    let frames = inspected["frames"].as_array().unwrap();
    assert!(!frames.is_empty());
    assert!(frames.iter().all(|f| f["checksum_ok"] == true));
    assert!(frames.last().unwrap()["commits"].as_u64().unwrap() > 0);
    assert!(inspected["header"]
        .as_array()
        .unwrap()
        .iter()
        .any(|field| field[0] == "state" && field[1] == "current"));
    drop(reader);
    drop(conn);
    server.stop();

    let detail = cli(&["ls", "tenant", "--json"], Some(&bucket)).ok().json();
    let key = detail["segments"][0]["key"].as_str().unwrap().to_string();
    let generation = "tenant/generations/00000000000000000001";
    let object = object_file(&data_dir, &format!("{generation}/segments/{key}"));
    let run = cli(&["inspect", object.to_str().unwrap()], None).ok();
    assert!(run.stdout.contains("compacted"), "{}", run.stdout);
    assert!(run.stdout.contains("end_frame_no"), "{}", run.stdout);
    let index = object_file(&data_dir, &format!("{generation}/indexes/{key}"));
    let run = cli(&["inspect", index.to_str().unwrap(), "--json"], None).ok();
    assert_eq!(run.json()["kind"], "index");

    let mut bytes = std::fs::read(&object).unwrap();
    bytes[200] ^= 1;
    let damaged = work.path().join("damaged");
    std::fs::write(&damaged, bytes).unwrap();
    let run = cli(&["inspect", damaged.to_str().unwrap()], None);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("checksum"), "{}", run.stdout);
    let run = cli(
        &["inspect", work.path().join("none").to_str().unwrap()],
        None,
    );
    assert_eq!(run.code, 1, "{run:?}");
}

#[test]
fn shell_runs_statements_through_the_wal_and_refuses_a_data_directory_in_use() {
    let work = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (server, bucket) = fs_server(&runtime, work.path());
    let data_dir = work.path().join("data");
    let conn = server.connect("tenant");
    insert(&conn, 0, 5);
    drop(conn);
    server.stop();
    let run = cli_with_input(
        &["shell", "tenant"],
        Some(&bucket),
        ".tables\nINSERT INTO t VALUES (100, 'x');\nSELECT count(*) AS n\n  FROM t;\n.schema t\n.quit\n",
    )
    .ok();
    assert!(run.stdout.contains("name\nt\n"), "{}", run.stdout);
    assert!(run.stdout.contains("1 rows changed"), "{}", run.stdout);
    assert!(run.stdout.contains("n\n6\n"), "{}", run.stdout);
    assert!(run.stdout.contains("CREATE TABLE t"), "{}", run.stdout);
    // The write went through the WAL to the bucket.
    let restored = work.path().join("restored.db");
    cli(
        &["restore", "tenant", restored.to_str().unwrap()],
        Some(&bucket),
    )
    .ok();
    let rows: i64 = libsql_sys::rusqlite::Connection::open(&restored)
        .unwrap()
        .query_row("SELECT count(*) FROM t", (), |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 6);

    let failing = cli_with_input(&["shell", "tenant"], Some(&bucket), "SELECT * FROM nope;\n");
    assert_eq!(failing.code, 1, "{failing:?}");
    assert!(failing.stderr.contains("nope"), "{}", failing.stderr);
    let missing = cli(&["shell", "other"], Some(&bucket));
    assert_eq!(missing.code, 2, "{missing:?}");
    // A namespace whose files the directory does not hold (an empty database): opening it
    // would restore it from the bucket, and take it over from wherever it is served.
    let other = data_dir.join("namespaces/other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("data"), b"").unwrap();
    let claim = cli_with_input(&["shell", "other"], Some(&bucket), ".quit\n");
    assert_eq!(claim.code, 1, "{claim:?}");
    assert!(
        claim.stderr.contains("restore it from storage"),
        "{}",
        claim.stderr
    );

    // A server (here: this process) holding the data directory keeps the shell out.
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(data_dir.join("libsql-wal.lock"))
        .unwrap();
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).unwrap();
    let busy = cli_with_input(&["shell", "tenant"], Some(&bucket), ".quit\n");
    assert_eq!(busy.code, 1, "{busy:?}");
    assert!(
        busy.stderr.contains("another libsql-wal process"),
        "{}",
        busy.stderr
    );
}

#[test]
fn bad_flags_and_missing_buckets_are_usage_errors_that_name_what_is_wrong() {
    let work = tempfile::tempdir().unwrap();
    let run = cli(&["ls", "--storage", "gs://bucket"], None);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("unknown scheme"), "{}", run.stderr);
    let missing = work.path().join("nowhere");
    let run = cli(&["ls", "--data-dir", missing.to_str().unwrap()], None);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("no bucket directory"), "{}", run.stderr);
    let run = cli(&["restore", "bad/name", "out.db"], None);
    assert_eq!(run.code, 2, "{run:?}");
    let run = cli(&["restore", "ns", "out.db", "--at", "yesterday"], None);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("RFC 3339"), "{}", run.stderr);
    let run = cli(&["verify"], None);
    assert_eq!(run.code, 2, "a namespace or --all: {run:?}");
    let run = cli(
        &[
            "ls",
            "--storage",
            "s3://bucket",
            "--s3-endpoint",
            "http://user:hunter2@127.0.0.1:1",
        ],
        None,
    );
    assert_ne!(run.code, 0, "{run:?}");
    assert!(!run.stderr.contains("hunter2"), "{}", run.stderr);
    // A replica of a primary that is not there, with `flags`.
    let data_dir = work.path().join("replica");
    let replica_with = |flags: &[&str]| {
        let mut args = vec![
            "run",
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--replicate-from",
            "http://127.0.0.1:1",
            "--namespaces",
            "a",
        ];
        args.extend_from_slice(flags);
        cli(&args, None)
    };
    // One that would write to its primary with the primary's token for anyone.
    let run = replica_with(&[
        "--forward-writes",
        "--primary-auth-token",
        "primary-secret-token",
    ]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("needs --auth-token"), "{}", run.stderr);
    assert!(
        !run.stderr.contains("primary-secret-token"),
        "{}",
        run.stderr
    );
    assert!(
        !data_dir.exists(),
        "nothing is made before the flags are checked"
    );
    // One given its own bucket as its primary's, or a primary bucket that is not there.
    let own = data_dir.join("bucket");
    let run = replica_with(&["--primary-storage", own.to_str().unwrap()]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("own storage"), "{}", run.stderr);
    let nowhere = work.path().join("nowhere");
    let run = replica_with(&["--primary-storage", nowhere.to_str().unwrap()]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("no bucket directory"), "{}", run.stderr);
    let run = cli(&["run", "--primary-storage", "/tmp"], None);
    assert_eq!(
        run.code, 2,
        "--primary-storage needs --replicate-from: {run:?}"
    );
}
