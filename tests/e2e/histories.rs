//! A property test of a namespace's history in the bucket (generations, fencing, rewinds,
//! deletes): random interleavings of two writer slots, each a machine of its own over one fs
//! bucket, that write, take the namespace over (a fresh machine restores it and claims a
//! generation), rewind it to a point some writer acknowledged, restart, and delete it (with or
//! without backups). A model records every acknowledged point (generation, frame_no, rows).
//! After every step: a restore of latest gives the newest history's last acknowledged state
//! (or nothing, after a delete), every acknowledged point restores by its generation to exactly
//! the rows its writer had then, a writer whose acknowledgement came back was the newest
//! generation's, and a machine fenced off acknowledges nothing more.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::time::{Duration, Instant};

use libsql_sys::Connection;
use libsql_wal::{LibsqlWal, RestoreOptions, RestoreTarget};
use libsql_wal_backend::{Backend, BackendExt, FsBackend};
use libsql_wal_segment::StdIo;
use libsql_wal_supervisor::ActorStorage;
use libsql_wal_tests::connect_native;
use proptest::prelude::*;

use crate::takeover::{namespace, Machine, World};

type Conn = Connection<LibsqlWal<StdIo, ActorStorage<FsBackend, std::fs::File>>>;

/// A database's rows, as (id, hash of its blob), in id order; empty without the table.
type Rows = Vec<(i64, u64)>;

/// One step of an interleaving; slots are 0 and 1.
#[derive(Debug, Clone)]
enum Step {
    /// The slot's writer inserts this many rows and waits until they are durable or it is
    /// fenced off.
    Write(usize, i64),
    /// A fresh machine in the slot opens the namespace (restoring it), claiming a generation.
    Takeover(usize),
    /// The slot's machine rewinds the namespace to an acknowledged point (picked by index).
    Rewind(usize, usize),
    /// The slot's machine stops and starts again over its own files.
    Restart(usize),
    /// Every machine stops and the namespace is deleted from the bucket (keeping backups if
    /// true).
    Delete(bool),
    /// Retention with a window of 0 drops every dead generation.
    Maintain,
}

fn step() -> impl Strategy<Value = Step> {
    let slot = 0usize..2;
    prop_oneof![
        5 => (slot.clone(), 1i64..6).prop_map(|(s, n)| Step::Write(s, n)),
        2 => slot.clone().prop_map(Step::Takeover),
        2 => (slot.clone(), 0usize..64).prop_map(|(s, p)| Step::Rewind(s, p)),
        1 => slot.prop_map(Step::Restart),
        1 => any::<bool>().prop_map(Step::Delete),
        1 => Just(Step::Maintain),
    ]
}

/// A point some writer acknowledged: a restore of `frame_no` in `generation` gives `rows`.
#[derive(Debug, Clone)]
struct Point {
    generation: u64,
    frame_no: u64,
    rows: Rows,
}

/// A machine in a slot, and its connection while it has one.
struct Slot {
    machine: Machine,
    conn: Option<Conn>,
    /// Set once its writer learnt it was fenced off: it acknowledges nothing more.
    fenced: bool,
}

/// The world, the machines, and the model.
struct Run {
    world: World,
    /// A machine that never opens the namespace: restores and deletes go through its storage.
    checker: Machine,
    slots: [Option<Slot>; 2],
    machines_started: usize,
    next_id: i64,
    /// Acknowledged points of the namespace since its last delete (rewinds pick among them).
    points: Vec<Point>,
    /// Points of generations a delete with backups kept: restorable by number.
    backups: Vec<Point>,
    /// What a restore of latest gives (`None`: nothing to restore).
    latest: Option<Rows>,
    /// The rows of a fenced writer's last commit: its upload was stored before it learnt of
    /// the fence, so a takeover through a generation that stored nothing may take it in.
    stragglers: Vec<Rows>,
}

fn rows_of<W: libsql_sys::wal::Wal>(conn: &Connection<W>) -> Rows {
    let has_table: bool = conn
        .query_row(
            "SELECT count(*) > 0 FROM sqlite_master WHERE name = 't'",
            (),
            |r| r.get(0),
        )
        .unwrap();
    if !has_table {
        return Vec::new();
    }
    let mut stmt = conn.prepare("SELECT id, v FROM t ORDER BY id").unwrap();
    let rows = stmt
        .query_map((), |row| {
            let blob: Vec<u8> = row.get(1)?;
            let mut hasher = DefaultHasher::new();
            blob.hash(&mut hasher);
            Ok((row.get(0)?, hasher.finish()))
        })
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    rows
}

fn ids(rows: &Rows) -> Vec<i64> {
    rows.iter().map(|r| r.0).collect()
}

/// Inserts `count` rows from id `first` in one transaction; fails if the log refuses writes.
fn insert(conn: &Conn, first: i64, count: i64) -> Result<(), libsql_sys::rusqlite::Error> {
    conn.execute_batch("BEGIN; CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v BLOB)")?;
    for id in first..first + count {
        let inserted = conn.execute(
            "INSERT INTO t VALUES (?1, randomblob(2000 + ?1 % 3000))",
            [id],
        );
        if let Err(e) = inserted {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(e);
        }
    }
    conn.execute_batch("COMMIT")
}

impl Run {
    fn new() -> Self {
        let world = World::new();
        let checker = world.machine("checker");
        Run {
            world,
            checker,
            slots: [None, None],
            machines_started: 0,
            next_id: 0,
            points: Vec::new(),
            backups: Vec::new(),
            latest: None,
            stragglers: Vec::new(),
        }
    }

    /// Starts a machine in a directory of its own.
    fn fresh_machine(&mut self) -> Machine {
        self.machines_started += 1;
        self.world
            .machine(&format!("machine-{}", self.machines_started))
    }

    /// The newest generation's number in the bucket.
    fn newest_generation(&self) -> Option<u64> {
        let backend = self.checker.registry.storage().backend();
        self.world
            .runtime
            .block_on(backend.newest_generation(backend.default_config(), &namespace()))
            .unwrap()
            .map(|r| r.number)
    }

    /// Stops the slot's machine, if any (a fenced one may fail to: its tail is not durable).
    fn clear(&mut self, slot: usize) {
        if let Some(old) = self.slots[slot].take() {
            drop(old.conn);
            let _ = old.machine.registry.shutdown();
        }
    }

    fn apply(&mut self, step: &Step) {
        match *step {
            Step::Write(slot, count) => self.write(slot, count),
            Step::Takeover(slot) => self.takeover(slot),
            Step::Rewind(slot, pick) => self.rewind(slot, pick),
            Step::Restart(slot) => self.restart(slot),
            Step::Delete(keep_backups) => self.delete(keep_backups),
            Step::Maintain => self.maintain(),
        }
    }

    fn write(&mut self, slot: usize, count: i64) {
        let first = self.next_id;
        self.next_id += count;
        let newest = self.newest_generation();
        let Some(Slot {
            machine,
            conn: Some(conn),
            fenced,
        }) = &mut self.slots[slot]
        else {
            return;
        };
        let shared = machine.registry.get(&namespace()).unwrap();
        if insert(conn, first, count).is_err() {
            assert!(shared.fenced().is_some(), "only a fenced writer refuses");
            *fenced = true;
            return;
        }
        let end = shared.last_committed_frame_no();
        shared.seal_now().unwrap();
        let started = Instant::now();
        while shared.durable_frame_no() < end && shared.fenced().is_none() {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "durable or fenced"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        if shared.durable_frame_no() >= end {
            let generation = shared.generation().number;
            assert!(!*fenced, "a fenced writer acknowledged frame {end}");
            assert_eq!(
                Some(generation),
                newest,
                "only the newest generation's writer acknowledges"
            );
            let rows = rows_of(conn);
            self.latest = Some(rows.clone());
            self.points.push(Point {
                generation,
                frame_no: end,
                rows,
            });
        } else {
            assert_eq!(
                shared.fenced(),
                newest,
                "fenced off by the newest generation"
            );
            *fenced = true;
            self.stragglers.push(rows_of(conn));
        }
    }

    fn takeover(&mut self, slot: usize) {
        self.clear(slot);
        let before = self.newest_generation();
        let machine = self.fresh_machine();
        self.adopt(slot, machine, before);
    }

    /// Puts `machine`, which restores the namespace as it opens (it has no files, or files of
    /// a superseded generation), in `slot`, checking what it restored and that it claimed a
    /// generation newer than `before`.
    fn adopt(&mut self, slot: usize, machine: Machine, before: Option<u64>) {
        let conn = machine.connect();
        // The log opens at the first read.
        let rows = rows_of(&conn);
        let shared = machine.registry.get(&namespace()).unwrap();
        let expected = self.latest.clone().unwrap_or_default();
        if rows != expected && self.stragglers.contains(&rows) {
            // The history walked through a takeover that stored nothing to the fenced
            // writer's end: its frames, after everything acknowledged.
            assert!(
                ids(&expected).iter().all(|id| ids(&rows).contains(id)),
                "a takeover keeps every acknowledged row"
            );
            self.latest = Some(rows.clone());
        }
        let expected = self.latest.clone().unwrap_or_default();
        assert_eq!(ids(&rows), ids(&expected), "a takeover restores latest");
        assert_eq!(rows, expected);
        let generation = shared.generation().number;
        assert!(
            before.is_none_or(|b| generation > b),
            "a takeover claims a newer generation"
        );
        if self.latest.is_some() {
            self.points.push(Point {
                generation,
                frame_no: shared.last_committed_frame_no(),
                rows,
            });
        }
        self.slots[slot] = Some(Slot {
            machine,
            conn: Some(conn),
            fenced: false,
        });
    }

    fn rewind(&mut self, slot: usize, pick: usize) {
        if self.points.is_empty() {
            return;
        }
        let point = self.points[pick % self.points.len()].clone();
        let target = RestoreTarget::InGeneration {
            generation: point.generation,
            frame_no: point.frame_no,
        };
        let before = self.newest_generation();
        let attempt = match &mut self.slots[slot] {
            Some(s) if !s.fenced => {
                drop(s.conn.take());
                let rewound = s.machine.registry.rewind(
                    &s.machine.db_path,
                    target,
                    &RestoreOptions::default(),
                );
                match rewound {
                    Ok(rewound) => Some(rewound),
                    // A machine of a superseded generation with frames it never stored: it
                    // learns of the fence as it hands its log over, and the rewind changes
                    // nothing (its files must be moved away first).
                    Err(
                        e @ (libsql_wal::Error::Fenced { .. }
                        | libsql_wal::Error::Superseded { .. }),
                    ) => {
                        assert_ne!(
                            s.machine
                                .registry
                                .get(&namespace())
                                .map(|shared| shared.generation().number),
                            before,
                            "only a superseded log refuses: {e}"
                        );
                        assert_eq!(self.newest_generation(), before, "{e}");
                        None
                    }
                    Err(e) => panic!("rewind to {point:?}: {e}"),
                }
            }
            _ => None,
        };
        let rewound = match attempt {
            Some(rewound) => rewound,
            None => {
                // A fenced machine cannot hand its log over: a fresh one rewinds instead.
                self.clear(slot);
                let machine = self.fresh_machine();
                let rewound = machine
                    .registry
                    .rewind(&machine.db_path, target, &RestoreOptions::default())
                    .unwrap_or_else(|e| panic!("rewind to {point:?}: {e}"));
                self.slots[slot] = Some(Slot {
                    machine,
                    conn: None,
                    fenced: false,
                });
                rewound
            }
        };
        let Some(s) = &mut self.slots[slot] else {
            unreachable!("the slot was just filled");
        };
        assert_eq!(rewound.restored.end_frame_no, point.frame_no);
        assert!(before.is_none_or(|b| rewound.generation > b));
        let conn = s.machine.connect();
        assert_eq!(
            rows_of(&conn),
            point.rows,
            "the rewound database is the point"
        );
        s.conn = Some(conn);
        self.latest = Some(point.rows.clone());
        self.points.push(Point {
            generation: rewound.generation,
            frame_no: point.frame_no,
            rows: point.rows,
        });
    }

    fn restart(&mut self, slot: usize) {
        let newest = self.newest_generation();
        let Some(s) = self.slots[slot].take() else {
            return;
        };
        let generation = s
            .machine
            .registry
            .get(&namespace())
            .map(|shared| shared.generation().number);
        let dir = s
            .machine
            .db_path
            .parent()
            .and_then(Path::parent)
            .unwrap()
            .to_path_buf();
        if s.fenced || generation != newest {
            // A machine of a superseded generation (fenced or not yet told): at its restart
            // its files are either refused (frames it never stored, or a history that ended)
            // or replaced by a restore of the newest history, never taken for a new one.
            drop(s.conn);
            let _ = s.machine.registry.shutdown();
            let machine = Machine::start(&self.world.runtime, &self.world.bucket(), &dir);
            match machine.registry.open(&machine.db_path) {
                Ok(_) => self.adopt(slot, machine, newest),
                Err(libsql_wal::Error::Superseded { .. }) => {
                    assert_eq!(
                        self.newest_generation(),
                        newest,
                        "a refused open claims nothing"
                    );
                    let _ = machine.registry.shutdown();
                }
                Err(e) => panic!("restart of a superseded machine: {e}"),
            }
            return;
        }
        drop(s.conn);
        s.machine.stop();
        let machine = Machine::start(&self.world.runtime, &self.world.bucket(), &dir);
        let conn = machine.connect();
        let expected = self.latest.clone().unwrap_or_default();
        assert_eq!(rows_of(&conn), expected, "a restart loses nothing");
        let shared = machine.registry.get(&namespace()).unwrap();
        assert_eq!(
            Some(shared.generation().number),
            generation,
            "a restart goes on in its generation"
        );
        self.slots[slot] = Some(Slot {
            machine,
            conn: Some(conn),
            fenced: false,
        });
    }

    fn maintain(&mut self) {
        let backend = self.checker.registry.storage().backend();
        let dropped = self
            .world
            .runtime
            .block_on(libsql_wal_backend::drop_dead_generations(
                &**backend,
                backend.default_config(),
                &namespace(),
                Duration::ZERO,
                libsql_wal_backend::now_ms() + 1,
            ))
            .unwrap();
        assert!(
            !dropped.contains(&self.newest_generation().unwrap_or(0)),
            "the newest generation stays"
        );
        // What is left of a history through a dropped generation restores coarser: its points
        // leave the model.
        let lineage = self
            .world
            .runtime
            .block_on(backend.lineage(backend.default_config(), &namespace()))
            .unwrap();
        let reads_dropped = |p: &Point| {
            lineage
                .history(&namespace(), p.generation, None)
                .unwrap()
                .iter()
                .any(|(r, _)| dropped.contains(&r.number))
        };
        self.points.retain(|p| !reads_dropped(p));
        self.backups.retain(|p| !reads_dropped(p));
    }

    fn delete(&mut self, keep_backups: bool) {
        self.clear(0);
        self.clear(1);
        let backend = self.checker.registry.storage().backend();
        self.world
            .runtime
            .block_on(backend.delete_namespace(
                backend.default_config(),
                &namespace(),
                keep_backups,
                libsql_wal_backend::now_ms(),
            ))
            .unwrap();
        if keep_backups {
            self.backups.append(&mut self.points);
        } else {
            self.points.clear();
            self.backups.clear();
        }
        self.latest = None;
    }

    /// Restores `target` through the checker's storage; `None` when there is nothing to.
    fn restore(&self, target: RestoreTarget) -> Option<Rows> {
        let dest = self
            .world
            .work
            .path()
            .join(format!("restored-{}", uuid::Uuid::new_v4()));
        match libsql_wal::restore(
            &**self.checker.registry.storage(),
            &namespace(),
            target,
            &dest,
            &RestoreOptions::default(),
            None,
        ) {
            Ok(_) => {}
            Err(libsql_wal::Error::NothingToRestore { .. }) => return None,
            Err(e) => panic!("restore of {target}: {e}"),
        }
        let rows = rows_of(&connect_native(&dest));
        std::fs::remove_file(&dest).unwrap();
        Some(rows)
    }

    /// What every step must leave true.
    fn check(&self, step: &Step) {
        // An empty database and nothing to restore are the same rows: a machine that opened
        // the namespace empty made page 1 (SQLite's WAL mode) durable at its shutdown.
        let latest = self.restore(RestoreTarget::Latest).unwrap_or_default();
        let expected = self.latest.clone().unwrap_or_default();
        assert_eq!(ids(&latest), ids(&expected), "latest after {step:?}");
        assert_eq!(latest, expected, "latest after {step:?}");
        for point in self.points.iter().chain(&self.backups) {
            let restored = self.restore(RestoreTarget::InGeneration {
                generation: point.generation,
                frame_no: point.frame_no,
            });
            let restored = restored.unwrap_or_default();
            assert_eq!(
                ids(&restored),
                ids(&point.rows),
                "{} at {} after {step:?}",
                point.generation,
                point.frame_no
            );
            assert_eq!(restored, point.rows, "after {step:?}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 48,
        max_shrink_iters: 32,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Every interleaving of writes, takeovers, rewinds, restarts and deletes leaves each
    /// acknowledged point restorable exactly, latest on the newest history, and exactly one
    /// writer acknowledging.
    #[test]
    fn every_acknowledged_point_of_every_generation_restores_exactly(
        steps in prop::collection::vec(step(), 6..14)
    ) {
        run_steps(&steps);
    }
}

/// Runs `steps`, checking after each one.
fn run_steps(steps: &[Step]) {
    let mut run = Run::new();
    for step in steps {
        run.apply(step);
        run.check(step);
    }
    for slot in 0..2 {
        run.clear(slot);
    }
    run.checker.stop();
}

/// Found by the property test: a takeover after a rewind that stored nothing yet walked through
/// the rewind's generation to its parent's end, bringing the dead branch back.
#[test]
fn a_takeover_after_a_rewind_that_stored_nothing_keeps_the_rewound_point() {
    run_steps(&[
        Step::Takeover(0),
        Step::Write(0, 1),
        Step::Write(0, 1),
        Step::Rewind(0, 0),
        Step::Takeover(0),
        Step::Write(0, 1),
    ]);
}

/// Found by the property test: a writer fenced off by two generations named the first newer
/// one, not the newest, as the owner.
#[test]
fn a_writer_fenced_off_by_two_takeovers_names_the_newest_generation() {
    run_steps(&[
        Step::Takeover(1),
        Step::Takeover(0),
        Step::Write(0, 1),
        Step::Takeover(0),
        Step::Write(0, 1),
        Step::Write(1, 1),
    ]);
}

/// A fenced writer's last upload, stored after the takeover claimed, is in the history only
/// when the takeover stored nothing and the next one walks through it; never mixed with
/// another writer's frames.
#[test]
fn a_takeover_through_one_that_stored_nothing_may_take_in_the_fenced_writers_last_upload() {
    run_steps(&[
        Step::Takeover(1),
        Step::Write(1, 1),
        Step::Takeover(0),
        Step::Write(1, 1),
        Step::Takeover(0),
        Step::Write(0, 1),
    ]);
}

/// Found by the property test: a takeover that claimed again (the writer before stored more
/// while it restored) gave both claims one log id, and at its restart the open took the
/// generation left behind for its own and claimed yet another.
#[test]
fn a_takeover_that_claimed_twice_goes_on_in_its_generation_across_a_restart() {
    run_steps(&[
        Step::Takeover(0),
        Step::Restart(0),
        Step::Takeover(1),
        Step::Write(0, 1),
        Step::Takeover(0),
        Step::Restart(0),
    ]);
}

/// Found by review, caught by the property test once it maintained: a drop that deleted the
/// record of a dead generation let a machine still holding that generation's files open them
/// as a new history and take the namespace over at its restart.
#[test]
fn a_machine_of_a_dropped_generation_is_told_it_was_superseded_at_its_restart() {
    run_steps(&[
        Step::Takeover(1),
        Step::Takeover(0),
        Step::Write(1, 1),
        Step::Maintain,
        Step::Rewind(0, 0),
        Step::Restart(1),
    ]);
}
