//! Injected I/O faults (the segment crate's `FaultyIo`, a mock used only to inject faults): a
//! failed write, a short write or a failed fsync reaches SQLite as an I/O error, the database
//! stays consistent and usable (after a failed fsync, once the log is opened again from disk),
//! and the next open recovers every commit that succeeded.

use std::sync::Arc;

use libsql_sys::rusqlite::ErrorCode;
use libsql_sys::Connection;
use libsql_wal::{CheckpointThreshold, LibsqlWal, LibsqlWalManager, RegistryConfig, WalRegistry};
use libsql_wal_backend::NoStorage;
use libsql_wal_segment::fault::{FaultyFile, FaultyIo, WriteFault};
use libsql_wal_segment::StdIo;
use libsql_wal_tests::{count, eventually, integrity_check, TestDb};

type FaultyStorage = NoStorage<FaultyFile<std::fs::File>>;
type FaultyConn = Connection<LibsqlWal<FaultyIo<StdIo>, FaultyStorage>>;

/// Arms one fault on a plan.
type ArmFault = fn(&libsql_wal_segment::fault::FaultPlan);

#[test]
fn io_faults_reach_sqlite_as_errors_and_lose_no_committed_row() {
    let (_dir, root) = TestDb::new(RegistryConfig::default()).into_root();
    let db_dir = root.join("faults");
    std::fs::create_dir_all(&db_dir).unwrap();
    let io = FaultyIo::new(StdIo);
    let plan = io.plan().clone();
    let registry = Arc::new(WalRegistry::new(
        io,
        FaultyStorage::default(),
        RegistryConfig::default(),
    ));
    let manager = LibsqlWalManager::new(registry);
    let connect = || -> FaultyConn {
        let conn = Connection::open(
            db_dir.join("data"),
            libsql_sys::rusqlite::OpenFlags::default(),
            manager.clone(),
            0,
            None,
        )
        .unwrap();
        conn.execute_batch("PRAGMA synchronous=FULL").unwrap();
        conn
    };
    let mut conn = connect();
    conn.execute_batch("CREATE TABLE t(a INTEGER PRIMARY KEY, b BLOB);")
        .unwrap();
    let mut committed = 0;
    let faults: [(&str, ArmFault); 3] = [
        ("failed write", |p| p.fault_write(0, WriteFault::Fail)),
        ("short write", |p| p.fault_write(0, WriteFault::Short)),
        ("failed fsync", |p| p.fail_sync(0)),
    ];
    for (name, arm) in faults {
        for _ in 0..5 {
            conn.execute("INSERT INTO t(b) VALUES (randomblob(5000))", ())
                .unwrap();
            committed += 1;
        }
        arm(&plan);
        let err = conn
            .execute("INSERT INTO t(b) VALUES (randomblob(5000))", ())
            .unwrap_err();
        let code = err.sqlite_error_code();
        assert_eq!(code, Some(ErrorCode::SystemIoFailure), "{name}: {err}");
        assert_eq!(
            count(&conn),
            committed,
            "{name}: the failed commit is not there"
        );
        if name == "failed fsync" {
            // A failed fsync poisons the log: no writes until it is opened again from disk,
            // which the next connection does once this one closed.
            let err = conn
                .execute("INSERT INTO t(b) VALUES (x'01')", ())
                .unwrap_err();
            assert_eq!(err.sqlite_error_code(), Some(ErrorCode::SystemIoFailure));
            drop(conn);
            conn = connect();
            assert_eq!(count(&conn), committed, "{name}: reopened from disk");
        }
        conn.execute("INSERT INTO t(b) VALUES (x'01')", ()).unwrap();
        committed += 1;
    }
    drop(conn);

    let reopened = TestDb::reopen(&root, RegistryConfig::default());
    let conn = reopened.connect("faults");
    let rows: i64 = conn
        .query_row("SELECT count(*) FROM t", (), |r| r.get(0))
        .unwrap();
    assert_eq!(rows, committed);
    let ok = integrity_check(&conn);
    assert_eq!(ok, "ok");
}

/// A registry on `FaultyIo` over `root`, and a connection maker for namespace `faults`.
struct FaultyMachine {
    plan: Arc<libsql_wal_segment::fault::FaultPlan>,
    manager: LibsqlWalManager<FaultyIo<StdIo>, FaultyStorage>,
    db_path: std::path::PathBuf,
}

impl FaultyMachine {
    fn start(root: &std::path::Path) -> Self {
        Self::start_with(root, RegistryConfig::default())
    }

    fn start_with(root: &std::path::Path, config: RegistryConfig) -> Self {
        let db_dir = root.join("faults");
        std::fs::create_dir_all(&db_dir).unwrap();
        let io = FaultyIo::new(StdIo);
        let plan = io.plan().clone();
        let registry = Arc::new(WalRegistry::new(io, FaultyStorage::default(), config));
        FaultyMachine {
            plan,
            manager: LibsqlWalManager::new(registry),
            db_path: db_dir.join("data"),
        }
    }

    fn connect(&self) -> FaultyConn {
        self.try_connect().unwrap()
    }

    /// The open log of namespace `faults`.
    fn shared(&self) -> Arc<libsql_wal::SharedWal<FaultyIo<StdIo>, FaultyStorage>> {
        self.manager
            .registry()
            .get(&"faults".parse().unwrap())
            .unwrap()
    }

    /// Opens a connection; its error if the log cannot be opened.
    fn try_connect(&self) -> libsql_sys::rusqlite::Result<FaultyConn> {
        Connection::open(
            &self.db_path,
            libsql_sys::rusqlite::OpenFlags::default(),
            self.manager.clone(),
            0,
            None,
        )
    }
}

/// Inserts `rows` rows of 3,000-byte blobs into table `t`.
fn insert_blobs<W: libsql_sys::wal::Wal>(conn: &Connection<W>, rows: usize) {
    for _ in 0..rows {
        conn.execute("INSERT INTO t(b) VALUES (randomblob(3000))", ())
            .unwrap();
    }
}

/// Returns the start frame_no of every segment file of namespace `faults` under `root`.
fn segment_starts(root: &std::path::Path) -> Vec<u64> {
    let mut starts: Vec<u64> = std::fs::read_dir(root.join("faults/data-segments"))
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".seg")?.parse().ok()
        })
        .collect();
    starts.sort_unstable();
    starts
}

#[test]
fn a_failed_commit_that_could_not_be_taken_back_never_comes_back_when_the_log_opens_again() {
    let (_dir, root) = TestDb::new(RegistryConfig::default()).into_root();
    let machine = FaultyMachine::start(&root);
    let conn = machine.connect();
    conn.execute_batch("PRAGMA synchronous=FULL; CREATE TABLE t(a INTEGER PRIMARY KEY, b BLOB);")
        .unwrap();
    insert_blobs(&conn, 5);
    // The commit's fsync fails, then so does the cut that takes it back: SQLite reports the
    // commit as failed, and its frames are still in the segment file.
    machine.plan.fail_sync(0);
    machine.plan.fail_set_len(0);
    let err = conn
        .execute("INSERT INTO t(b) VALUES (randomblob(3000))", ())
        .unwrap_err();
    assert_eq!(err.sqlite_error_code(), Some(ErrorCode::SystemIoFailure));
    assert_eq!(count(&conn), 5);
    drop(conn);

    // Opening the log again from disk, in this process, while the cut still fails: refused.
    machine.plan.fail_set_len(0);
    let refused = machine.try_connect();
    assert_eq!(
        refused.err().and_then(|e| e.sqlite_error_code()),
        Some(ErrorCode::SystemIoFailure),
        "the log opened over the failed commit"
    );
    // Then the cut succeeds: the failed commit is not there, and writes go on.
    let conn = machine.connect();
    assert_eq!(count(&conn), 5, "the failed commit came back");
    conn.execute("INSERT INTO t(b) VALUES (x'01')", ()).unwrap();
    drop(conn);
    drop(machine);

    let reopened = TestDb::reopen(&root, RegistryConfig::default());
    let conn = reopened.connect("faults");
    assert_eq!(count(&conn), 6);
    assert_eq!(integrity_check(&conn), "ok");
}

#[test]
fn a_failed_seal_poisons_the_log_until_it_is_opened_again_and_reuses_no_frame_number() {
    let (_dir, root) = TestDb::new(RegistryConfig::default()).into_root();
    let machine = FaultyMachine::start(&root);
    let conn = machine.connect();
    conn.execute_batch("CREATE TABLE t(a INTEGER PRIMARY KEY, b BLOB);")
        .unwrap();
    insert_blobs(&conn, 5);
    // A seal makes the next segment (its header is the first write) and seals in memory; the
    // checkpoint then writes the seal, first its index: that write fails.
    machine.plan.fault_write(1, WriteFault::Fail);
    let err = conn.execute_batch("PRAGMA wal_checkpoint").unwrap_err();
    assert_eq!(err.sqlite_error_code(), Some(ErrorCode::SystemIoFailure));
    // The seal was made in memory; writing it failed: the next segment stays, empty, and the
    // sealed one is still unsealed on disk (the next open seals it).
    assert_eq!(segment_starts(&root), vec![1, 17]);
    // No writes until the log is opened again; reads go on.
    let err = conn
        .execute("INSERT INTO t(b) VALUES (x'01')", ())
        .unwrap_err();
    assert_eq!(err.sqlite_error_code(), Some(ErrorCode::SystemIoFailure));
    assert_eq!(count(&conn), 5);
    drop(conn);

    // Every connection closed: the next one opens the log again from disk and writes.
    let conn = machine.connect();
    assert_eq!(count(&conn), 5);
    insert_blobs(&conn, 3);
    // A crash (nothing shut down), then a fresh start writes on.
    drop(conn);
    drop(machine);
    let machine = FaultyMachine::start(&root);
    let conn = machine.connect();
    conn.execute("INSERT INTO t(b) VALUES (x'02')", ()).unwrap();
    drop(conn);
    drop(machine);

    let reopened = TestDb::reopen(&root, RegistryConfig::default());
    let conn = reopened.connect("faults");
    assert_eq!(count(&conn), 9);
    assert_eq!(integrity_check(&conn), "ok");
}

#[test]
fn an_empty_segment_out_of_place_is_repaired_and_one_holding_frames_is_refused() {
    let (_dir, root) = TestDb::new(RegistryConfig::default()).into_root();
    let db = TestDb::reopen(&root, RegistryConfig::default());
    let conn = db.connect("faults");
    conn.execute_batch("CREATE TABLE t(a INTEGER PRIMARY KEY, b BLOB);")
        .unwrap();
    insert_blobs(&conn, 4);
    let log_id = db
        .registry()
        .get(&"faults".parse().unwrap())
        .unwrap()
        .log_id();
    drop(conn);
    drop(db);
    // A crash left an empty segment whose start is inside the current one's frames (what a seal
    // that failed used to leave).
    let dir = root.join("faults/data-segments");
    assert_eq!(segment_starts(&root), vec![1]);
    let stray = dir.join(format!("{:020}.seg", 3));
    libsql_wal_segment::CurrentSegment::create(&StdIo, &stray, 3, log_id).unwrap();

    let db = TestDb::reopen(&root, RegistryConfig::default());
    let conn = db.connect("faults");
    assert_eq!(count(&conn), 4);
    conn.execute("INSERT INTO t(b) VALUES (x'01')", ()).unwrap();
    let shared = db.registry().get(&"faults".parse().unwrap()).unwrap();
    let last = shared.last_committed_frame_no();
    drop(shared);
    drop(conn);
    drop(db);
    assert!(
        segment_starts(&root).iter().all(|&s| s != 3),
        "the stray segment is gone: {:?}",
        segment_starts(&root)
    );

    // Out of place after a sealed segment, holding a commit: refused, naming the file. (After a
    // seal that was never written, frames of the next segment past a gap are what a power cut
    // leaves, and are dropped: see the power cut test below.)
    let db = TestDb::reopen(&root, RegistryConfig::default());
    let conn = db.connect("faults");
    assert_eq!(count(&conn), 5);
    drop(conn);
    // Everything checkpointed into the database file: only an empty segment is left.
    db.registry().shutdown().unwrap();
    drop(db);
    for start in segment_starts(&root) {
        std::fs::remove_file(dir.join(format!("{start:020}.seg"))).unwrap();
    }
    sealed_segment(&dir, last + 1, log_id);
    let misplaced = dir.join(format!("{:020}.seg", last + 9));
    let segment =
        libsql_wal_segment::CurrentSegment::create(&StdIo, &misplaced, last + 9, log_id).unwrap();
    segment
        .insert_frames(vec![(1, &[0u8; 4096][..])], Some(1))
        .unwrap();
    segment.sync().unwrap();
    drop(segment);
    let registry = WalRegistry::new(StdIo, NoStorage::default(), RegistryConfig::default());
    let err = match registry.open(&root.join("faults/data")) {
        Ok(_) => panic!("a log with a gap opened"),
        Err(e) => e,
    };
    assert!(
        matches!(err, libsql_wal::Error::Discontiguous { start_frame_no, .. } if start_frame_no == last + 9),
        "{err}"
    );
    assert!(
        err.to_string().contains(&misplaced.display().to_string()),
        "{err}"
    );
}

#[test]
fn a_seal_failing_after_a_commit_leaves_the_commit_standing_and_is_tried_again() {
    let (_dir, root) = TestDb::new(RegistryConfig::default()).into_root();
    let config = RegistryConfig {
        swap: libsql_wal::SwapStrategy {
            max_frames: 1,
            ..Default::default()
        },
        checkpoint_after: CheckpointThreshold::EVERY_SEAL,
        ..RegistryConfig::default()
    };
    let machine = FaultyMachine::start_with(&root, config);
    let conn = machine.connect();
    conn.execute_batch("PRAGMA synchronous=NORMAL; CREATE TABLE t(a INTEGER PRIMARY KEY, b BLOB);")
        .unwrap();
    let shared = machine.shared();
    // The background checkpoint of the first seal syncs the database file: let it be done.
    assert!(
        eventually(|| shared.sealed_segment_count() == 0),
        "checkpointed"
    );
    // Synchronous NORMAL: the commit writes its frames (one write) and syncs nothing; the next
    // write is the next segment's header, and it fails: the seal cannot start.
    machine.plan.fault_write(1, WriteFault::Fail);
    conn.execute("INSERT INTO t(b) VALUES (x'01')", ())
        .expect("a commit whose seal failed still succeeds");
    assert_eq!(shared.seal_failures(), 1);
    assert_eq!(shared.poisoned(), None, "nothing was half sealed");
    assert_eq!(count(&conn), 1);
    // The next commit seals both.
    conn.execute("INSERT INTO t(b) VALUES (x'02')", ()).unwrap();
    assert_eq!(shared.seal_failures(), 1);
    assert_eq!(
        segment_starts(&root).last().copied(),
        Some(shared.last_committed_frame_no() + 1),
        "the current segment was sealed"
    );
    drop(shared);
    drop(conn);
    machine.manager.registry().shutdown().unwrap();

    let reopened = TestDb::reopen(&root, RegistryConfig::default());
    let conn = reopened.connect("faults");
    assert_eq!(count(&conn), 2);
    assert_eq!(integrity_check(&conn), "ok");
}

#[test]
fn two_database_files_never_share_a_log_and_no_log_opens_after_shutdown() {
    let (_dir, root) = TestDb::new(RegistryConfig::default()).into_root();
    let db = TestDb::reopen(&root, RegistryConfig::default());
    let conn = db.connect("tenant");
    conn.execute_batch("CREATE TABLE t(a);").unwrap();
    let other = root.join("tenant/other.db");
    let err = match db.registry().open(&other) {
        Ok(_) => panic!("a second file of namespace tenant shares its log"),
        Err(e) => e,
    };
    assert!(
        matches!(&err, libsql_wal::Error::PathConflict { other_path, .. } if *other_path == other),
        "{err}"
    );
    // Through SQLite: the second file cannot be opened on this WAL.
    let refused = Connection::open(
        &other,
        libsql_sys::rusqlite::OpenFlags::default(),
        LibsqlWalManager::new(db.registry().clone()),
        0,
        None,
    )
    .and_then(|c| c.execute_batch("CREATE TABLE u(b)").map(|()| c));
    assert!(
        refused.is_err(),
        "the second file was opened on the first one's log"
    );
    // The same path through another spelling is the same file.
    let spelled = root.join("tenant/../tenant/data");
    assert!(db.registry().open(&spelled).is_ok());
    drop(conn);

    db.registry().shutdown().unwrap();
    let err = match db.registry().open(&root.join("tenant/data")) {
        Ok(_) => panic!("a log opened after shutdown"),
        Err(e) => e,
    };
    assert!(
        matches!(err, libsql_wal::Error::RegistryShutDown { .. }),
        "{err}"
    );
}

/// Writes a sealed segment of frames `start..start + 4` and returns its path and index offset.
fn sealed_segment(
    dir: &std::path::Path,
    start: u64,
    log_id: uuid::Uuid,
) -> (std::path::PathBuf, u64) {
    let path = dir.join(format!("{start:020}.seg"));
    let segment = libsql_wal_segment::CurrentSegment::create(&StdIo, &path, start, log_id).unwrap();
    for page in 1..=4u32 {
        segment
            .insert_frames(vec![(page, &[page as u8; 4096][..])], Some(4))
            .unwrap();
    }
    let sealed = segment
        .seal(libsql_wal_segment::Io::now(&StdIo))
        .unwrap()
        .unwrap();
    (path, sealed.header().index_offset)
}

#[test]
fn only_the_last_seal_can_have_been_cut_short_anywhere_else_a_bad_segment_refuses_the_open() {
    let (_dir, root) = TestDb::new(RegistryConfig::default()).into_root();
    let db_path = root.join("faults/data");
    let dir = root.join("faults/data-segments");
    std::fs::create_dir_all(&dir).unwrap();
    let log_id = uuid::Uuid::new_v4();
    let open = || {
        WalRegistry::new(StdIo, NoStorage::default(), RegistryConfig::default())
            .open(&db_path)
            .map(|s| s.last_committed_frame_no())
    };

    // A damaged frame in a sealed segment that frames follow: refused, the file untouched.
    let (first, _) = sealed_segment(&dir, 1, log_id);
    let (second, index_offset) = sealed_segment(&dir, 5, log_id);
    let mut bytes = std::fs::read(&first).unwrap();
    bytes[200] ^= 0x40;
    std::fs::write(&first, &bytes).unwrap();
    let err = match open() {
        Ok(end) => panic!("opened at {end} over a damaged segment"),
        Err(e) => e,
    };
    assert!(
        err.to_string().contains(&first.display().to_string()),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&first).unwrap(),
        bytes,
        "nothing was rewritten"
    );
    bytes[200] ^= 0x40;
    std::fs::write(&first, &bytes).unwrap();

    // The newest seal cut short (its index never reached the disk), the next segment empty:
    // its frames are recovered and the log goes on after them.
    let next = dir.join(format!("{:020}.seg", 9));
    libsql_wal_segment::CurrentSegment::create_unsynced(&StdIo, &next, 9, log_id).unwrap();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&second)
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &[0; 64], index_offset).unwrap();
    drop(file);
    assert_eq!(open().unwrap(), 8);
}

/// Writes an unsealed segment of frames `start..start + frames`, each a commit, as a log whose
/// commits were never synced (or whose seal was never written) leaves it; returns its path.
fn current_segment(
    dir: &std::path::Path,
    start: u64,
    frames: u32,
    log_id: uuid::Uuid,
) -> std::path::PathBuf {
    let path = dir.join(format!("{start:020}.seg"));
    let segment = libsql_wal_segment::CurrentSegment::create(&StdIo, &path, start, log_id).unwrap();
    for page in 1..=frames {
        segment
            .insert_frames(vec![(page, &[0x80 | page as u8; 4096][..])], Some(4))
            .unwrap();
    }
    path
}

/// Zeroes `len` bytes of the file at `path` from `offset`, as a power cut that lost them does.
fn zero(path: &std::path::Path, offset: u64, len: usize) {
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &vec![0; len], offset).unwrap();
}

#[test]
fn a_power_cut_after_a_seal_not_yet_synced_ends_the_log_at_its_last_whole_commit() {
    use libsql_wal_segment::format::{FRAME_SIZE, SEGMENT_HEADER_SIZE};
    let log_id = uuid::Uuid::new_v4();
    // What a power cut can leave after a seal (written and synced in the background, not
    // yet) and commits in the next segment (synchronous=NORMAL: never synced either): the seal
    // never written, or its index lost, and maybe frames of both segments.
    let cases: [(&str, bool, bool, u64); 5] = [
        ("the index lost, every frame kept", true, false, 7),
        (
            "the index and the sealed segment's last frame lost",
            true,
            true,
            3,
        ),
        ("the seal never written, every frame kept", false, false, 7),
        (
            "the seal never written, the last frame lost",
            false,
            true,
            3,
        ),
        (
            "the seal never written, the file's header lost",
            false,
            false,
            0,
        ),
    ];
    for (case, seal_written, lose_last_frame, end) in cases {
        let (_dir, root) = TestDb::new(RegistryConfig::default()).into_root();
        let db_path = root.join("faults/data");
        let dir = root.join("faults/data-segments");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(&db_path, b"").unwrap();
        let sealed = if seal_written {
            let (sealed, index_offset) = sealed_segment(&dir, 1, log_id);
            zero(&sealed, index_offset, 64);
            sealed
        } else {
            current_segment(&dir, 1, 4, log_id)
        };
        current_segment(&dir, 5, 3, log_id);
        if lose_last_frame {
            zero(
                &sealed,
                (SEGMENT_HEADER_SIZE + 3 * FRAME_SIZE) as u64,
                FRAME_SIZE,
            );
        }
        if end == 0 {
            zero(&sealed, 0, SEGMENT_HEADER_SIZE);
        }
        let registry = WalRegistry::new(StdIo, NoStorage::default(), RegistryConfig::default());
        let shared = registry
            .open(&db_path)
            .unwrap_or_else(|e| panic!("{case}: the open refused: {e}"));
        assert_eq!(shared.last_committed_frame_no(), end, "{case}");
        drop(shared);
        registry.shutdown().unwrap();
        // The log goes on from there: what it shows is a prefix of what was committed.
        let reopened = TestDb::reopen(&root, RegistryConfig::default());
        let shared = reopened
            .registry()
            .open(&db_path)
            .unwrap_or_else(|e| panic!("{case}: the second open refused: {e}"));
        assert_eq!(shared.last_committed_frame_no(), end, "{case}: reopened");
    }
}

#[test]
fn a_damaged_seal_before_a_segment_that_says_it_was_durable_refuses_the_open() {
    let log_id = uuid::Uuid::new_v4();
    let (_dir, root) = TestDb::new(RegistryConfig::default()).into_root();
    let db_path = root.join("faults/data");
    let dir = root.join("faults/data-segments");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(&db_path, b"").unwrap();
    let (sealed, index_offset) = sealed_segment(&dir, 1, log_id);
    let newest = current_segment(&dir, 5, 3, log_id);
    // The newest segment was told the seal before it is durable; that seal's index is then
    // damaged: corruption, not a power cut's debris, and the newest's frames are kept.
    libsql_wal_segment::CurrentSegment::recover(&StdIo, &newest)
        .unwrap()
        .0
        .mark_after_durable_seal()
        .unwrap();
    zero(&sealed, index_offset, 64);
    let before = std::fs::read(&newest).unwrap();
    let registry = WalRegistry::new(StdIo, NoStorage::default(), RegistryConfig::default());
    let err = match registry.open(&db_path) {
        Ok(shared) => panic!("opened at {}", shared.last_committed_frame_no()),
        Err(e) => e,
    };
    assert!(
        err.to_string().contains(&sealed.display().to_string()),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&newest).unwrap(),
        before,
        "the newest is left as it was"
    );
}

/// The footer at the end of the database file: the frame_no it says the file holds.
fn footer_frame_no(db_path: &std::path::Path) -> Option<u64> {
    let bytes = std::fs::read(db_path).unwrap();
    let tail = bytes.len().checked_sub(libsql_wal::FOOTER_SIZE)?;
    (tail % 4096 == 0)
        .then(|| libsql_wal::Footer::decode(&bytes[tail..]))
        .flatten()
        .map(|f| f.replication_index)
}

#[test]
fn a_checkpoint_whose_page_sync_fails_leaves_the_footer_as_it_was() {
    // The next open deletes every segment the footer says the file holds: a footer that could
    // reach the disk before its pages would take them with it.
    let (_dir, root) = TestDb::new(RegistryConfig::default()).into_root();
    let machine = FaultyMachine::start_with(
        &root,
        RegistryConfig {
            checkpoint_after: CheckpointThreshold::EVERY_SEAL,
            ..RegistryConfig::default()
        },
    );
    let conn = machine.connect();
    conn.execute_batch("CREATE TABLE t(a INTEGER PRIMARY KEY, b BLOB);")
        .unwrap();
    insert_blobs(&conn, 5);
    conn.execute_batch("PRAGMA wal_checkpoint").unwrap();
    let shared = machine.shared();
    assert!(eventually(|| shared.sealed_segment_count() == 0));
    let before = footer_frame_no(&machine.db_path);
    assert!(before.is_some_and(|f| f > 0), "checkpointed: {before:?}");
    insert_blobs(&conn, 5);
    // The seal's background checkpoint copies the pages; their sync fails.
    machine.plan.fail_next_sync_of(&machine.db_path);
    shared.seal_now().unwrap();
    assert!(eventually(|| !machine.plan.sync_of_pending()));
    // The pages may have been written over the old footer (the database grew): then there is
    // none. Never one that says the file holds the new frames.
    let after = footer_frame_no(&machine.db_path);
    assert!(
        after.unwrap_or(0) <= before.unwrap_or(0),
        "the footer waits for its pages to be durable: {after:?} after {before:?}"
    );
    assert_eq!(shared.sealed_segment_count(), 1, "the segment stays");
    drop(conn);
    drop(shared);
    drop(machine);
    let reopened = TestDb::reopen(&root, RegistryConfig::default());
    let conn = reopened.connect("faults");
    assert_eq!(count(&conn), 10);
    assert_eq!(integrity_check(&conn), "ok");
}

#[test]
fn a_checkpoint_cut_short_after_the_database_grew_over_its_footer_reopens() {
    // A checkpoint that grows the database writes pages over the old footer before it writes
    // the new one: a crash in between leaves a file of whole pages and no footer, while the
    // log it was copying still starts after frame 1.
    let log_id = uuid::Uuid::new_v4();
    let (_dir, root) = TestDb::new(RegistryConfig::default()).into_root();
    let db_path = root.join("faults/data");
    let dir = root.join("faults/data-segments");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(&db_path, vec![0; 4 * 4096]).unwrap();
    sealed_segment(&dir, 5, log_id);
    let registry = WalRegistry::new(StdIo, NoStorage::default(), RegistryConfig::default());
    let shared = registry
        .open(&db_path)
        .unwrap_or_else(|e| panic!("the open refused: {e}"));
    assert_eq!(shared.last_committed_frame_no(), 8);
}

#[test]
fn a_seal_whose_background_sync_fails_poisons_the_log_and_every_commit_stands() {
    let (_dir, root) = TestDb::new(RegistryConfig::default()).into_root();
    let machine = FaultyMachine::start(&root);
    let conn = machine.connect();
    conn.execute_batch("PRAGMA synchronous=NORMAL; CREATE TABLE t(a INTEGER PRIMARY KEY, b BLOB);")
        .unwrap();
    insert_blobs(&conn, 5);
    let shared = machine.shared();
    // The seal itself syncs nothing; the first fsync after it is the seal's own, in the
    // background, and it fails.
    machine.plan.fail_sync(0);
    assert!(shared.seal_now().unwrap(), "sealed");
    assert!(
        eventually(|| shared.poisoned().is_some()),
        "the failed sync poisons the log"
    );
    let err = conn
        .execute("INSERT INTO t(b) VALUES (x'01')", ())
        .unwrap_err();
    assert_eq!(err.sqlite_error_code(), Some(ErrorCode::SystemIoFailure));
    assert_eq!(count(&conn), 5);
    drop(shared);
    drop(conn);
    // Opened again from disk: every commit is there, and writes go on.
    let conn = machine.connect();
    assert_eq!(count(&conn), 5);
    conn.execute("INSERT INTO t(b) VALUES (x'02')", ()).unwrap();
    drop(conn);
    drop(machine);
    let reopened = TestDb::reopen(&root, RegistryConfig::default());
    let conn = reopened.connect("faults");
    assert_eq!(count(&conn), 6);
    assert_eq!(integrity_check(&conn), "ok");
}
