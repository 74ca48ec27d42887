//! The pipeline's guarantees: order and completeness across many namespaces, faults,
//! backpressure, fairness, supervision and shutdown.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use libsql_wal_backend::{Backend, BackendExt, FsBackend, Storage};
use libsql_wal_supervisor::{ForceShutdown, GetSnapshot, SchedulerOf, StorageConfig};

use crate::faulty::Faults;
use crate::support::*;

#[test]
fn every_segment_of_a_thousand_namespaces_is_stored_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Arc::new(storage(
        &dir.path().join("bucket"),
        dir.path(),
        Faults::default(),
        config(&dir.path().join("scratch")),
    ));
    let names: Vec<String> = (0..1000).map(|i| format!("ns-{i:04}")).collect();
    let per_namespace = 3;
    let all: Vec<Vec<Segment>> = names
        .iter()
        .map(|n| segments(&dir.path().join("local"), n, per_namespace, 2))
        .collect();
    let acks: Vec<Acks> = names.iter().map(|_| Acks::default()).collect();
    // Four writers; each namespace belongs to one writer (as to one SQLite connection), and
    // each writer interleaves its namespaces in a seeded random order.
    std::thread::scope(|s| {
        for writer in 0..4 {
            let (storage, names, all, acks) = (&storage, &names, &all, &acks);
            s.spawn(move || {
                let mine: Vec<usize> = (writer..names.len()).step_by(4).collect();
                let mut next = vec![0; names.len()];
                let mut rng = 0x9e37_79b9_7f4a_7c15_u64 ^ writer as u64;
                let mut left = mine.len() * per_namespace as usize;
                while left > 0 {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let i = mine[(rng % mine.len() as u64) as usize];
                    if next[i] == per_namespace as usize {
                        continue;
                    }
                    store(storage, &ns(&names[i]), &all[i][next[i]], &acks[i]);
                    next[i] += 1;
                    left -= 1;
                }
            });
        }
    });
    let end = per_namespace * 2;
    wait_until("every namespace is durable", || {
        acks.iter().all(|a| a.get().len() == per_namespace as usize)
    });
    for (name, acks) in names.iter().zip(&acks) {
        let seen = acks.get();
        assert!(
            seen.windows(2).all(|w| w[0] <= w[1]),
            "{name}: durable frame_no went back: {seen:?}"
        );
        assert_eq!(seen.last(), Some(&end), "{name}");
    }
    let ends: Vec<(String, u64)> = names.iter().map(|n| (n.clone(), end)).collect();
    assert_stored_in_order_once(&storage.backend().stored(), &ends);
    let metrics = futures::executor::block_on(storage.metrics()).unwrap();
    assert_eq!(metrics.namespaces.len(), 1000);
    for n in &metrics.namespaces {
        assert_eq!(n.durable_frame_no, end, "{}", n.namespace);
        assert_eq!(n.queue_depth, 0);
        assert_eq!(n.segments_stored, per_namespace);
    }
    let backend_durable = on_tokio(storage.backend().meta(
        storage.backend().default_config(),
        &generation_of(&ns("ns-0999")),
    ))
    .unwrap();
    assert_eq!(backend_durable.durable_frame_no, end);
}

#[test]
fn failures_delays_and_panics_in_the_backend_still_store_everything_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Faults {
        fail_per_mille: 250,
        panic_per_mille: 100,
        delay_per_mille: 200,
        delay: Duration::from_millis(3),
    };
    let storage = storage(
        &dir.path().join("bucket"),
        dir.path(),
        faults,
        config(&dir.path().join("scratch")),
    );
    let names: Vec<String> = (0..20).map(|i| format!("f-{i}")).collect();
    let mut acks = Vec::new();
    for name in &names {
        let a = Acks::default();
        for segment in segments(&dir.path().join("local"), name, 10, 3) {
            store(&storage, &ns(name), &segment, &a);
        }
        acks.push(a);
    }
    wait_until("every namespace is durable", || {
        acks.iter().all(|a| a.get().len() == 10)
    });
    let ends: Vec<(String, u64)> = names.iter().map(|n| (n.clone(), 30)).collect();
    assert_stored_in_order_once(&storage.backend().stored(), &ends);
    let metrics = futures::executor::block_on(storage.metrics()).unwrap();
    let injected_failures = storage.backend().failures.load(Ordering::SeqCst);
    let injected_panics = storage.backend().panics.load(Ordering::SeqCst);
    assert!(
        injected_failures > 0 && injected_panics > 0,
        "faults were injected"
    );
    assert_eq!(metrics.panics, injected_panics);
    assert_eq!(metrics.retries, injected_failures + injected_panics);
    assert!(metrics
        .namespaces
        .iter()
        .all(|n| n.healthy && n.queue_depth == 0));
}

#[test]
fn store_waits_at_the_configured_depth_while_the_backend_is_stalled() {
    let dir = tempfile::tempdir().unwrap();
    let config = StorageConfig {
        max_enqueued_segments: 4,
        ..config(&dir.path().join("scratch"))
    };
    let storage = Arc::new(storage(
        &dir.path().join("bucket"),
        dir.path(),
        Faults::default(),
        config,
    ));
    storage.backend().set_open(false);
    let namespace = ns("stalled");
    let all = segments(&dir.path().join("local"), "stalled", 10, 2);
    let taken = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let acks = Acks::default();
    let writer = {
        let (storage, namespace, taken, acks) = (
            storage.clone(),
            namespace.clone(),
            taken.clone(),
            acks.clone(),
        );
        std::thread::spawn(move || {
            for segment in &all {
                store(&*storage, &namespace, segment, &acks);
                taken.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    wait_until("four segments are taken", || {
        taken.load(Ordering::SeqCst) == 4
    });
    // The writer stays blocked on the fifth while nothing becomes durable.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        taken.load(Ordering::SeqCst),
        4,
        "store must wait at depth 4"
    );
    let metrics = futures::executor::block_on(storage.metrics()).unwrap();
    let stalled = metrics.namespace(&namespace).unwrap();
    assert_eq!(stalled.queue_depth, 4);
    assert_eq!(stalled.durable_lag_frames, 8);
    assert!(acks.get().is_empty());

    storage.backend().set_open(true);
    writer.join().unwrap();
    wait_until("everything is durable", || acks.get().len() == 10);
    assert_eq!(acks.get().last(), Some(&20));
}

#[test]
fn a_job_waiting_for_a_worker_takes_the_segments_that_arrive_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let config = StorageConfig {
        max_in_flight: 1,
        ..config(&dir.path().join("scratch"))
    };
    let storage = storage(
        &dir.path().join("bucket"),
        dir.path(),
        Faults::default(),
        config,
    );
    storage.backend().set_open(false);
    let local = dir.path().join("local");
    // `busy` holds the only worker, stalled; `waiting` asks for one with its first segment,
    // then four more arrive.
    let busy = segments(&local, "busy", 1, 2);
    let waiting = segments(&local, "waiting", 5, 2);
    let (busy_acks, waiting_acks) = (Acks::default(), Acks::default());
    store(&storage, &ns("busy"), &busy[0], &busy_acks);
    wait_until("the busy namespace's upload runs", || {
        futures::executor::block_on(storage.metrics())
            .unwrap()
            .uploads_in_flight
            == 1
    });
    for segment in &waiting {
        store(&storage, &ns("waiting"), segment, &waiting_acks);
    }
    storage.backend().set_open(true);
    wait_until("everything is durable", || waiting_acks.get().len() == 5);
    let metrics = futures::executor::block_on(storage.metrics()).unwrap();
    let waited = metrics.namespace(&ns("waiting")).unwrap();
    assert_eq!(
        (waited.uploads, waited.merged_uploads),
        (1, 1),
        "one upload carried all five segments: {waited:?}"
    );
    assert_eq!(waiting_acks.get(), [10; 5]);
    assert_eq!(busy_acks.get(), [2]);
}

#[test]
fn cold_namespaces_wait_behind_one_upload_of_a_hot_backlog_not_the_whole_backlog() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(&dir.path().join("scratch"));
    // One worker: the hot namespace's segments are all older than the cold ones, so only the
    // turn rule lets the cold ones in.
    config.max_in_flight = 1;
    config.max_enqueued_segments = 1000;
    // One segment per upload, so the backlog cannot be merged away.
    config.scheduler.max_upload_frames = 2;
    // Every store takes a while, so the hot namespace's next request is always waiting when
    // the worker frees: the order is the supervisor's choice, not a race.
    let storage = storage(
        &dir.path().join("bucket"),
        dir.path(),
        Faults {
            delay_per_mille: 1000,
            delay: Duration::from_millis(5),
            ..Faults::default()
        },
        config,
    );
    let local = dir.path().join("local");
    let backlog_len = 200;
    let cold_count = 40;
    let backlog = segments(&local, "hot", backlog_len, 2);
    let colds: Vec<(String, Segment)> = (0..cold_count)
        .map(|i| {
            let name = format!("cold-{i:02}");
            let segment = segments(&local, &name, 1, 2).remove(0);
            (name, segment)
        })
        .collect();
    let hot_acks = Acks::default();
    storage.backend().set_open(false);
    for segment in &backlog {
        store(&storage, &ns("hot"), segment, &hot_acks);
    }
    wait_until("the hot namespace's first upload is stalled", || {
        storage.backend().stalled_uploads.load(Ordering::SeqCst) == 1
    });
    let cold_acks = Acks::default();
    for (name, segment) in &colds {
        store(&storage, &ns(name), segment, &cold_acks);
    }
    wait_until("every cold namespace waits for the worker", || {
        futures::executor::block_on(storage.metrics())
            .unwrap()
            .uploads_waiting
            == cold_count
    });
    storage.backend().set_open(true);
    wait_until("everything is durable", || {
        hot_acks.get().len() == backlog_len as usize && cold_acks.get().len() == cold_count
    });
    // Each cold upload's wait, in uploads done before it: of the hot namespace, and in all.
    let stored = storage.backend().stored();
    let waits: Vec<(usize, usize)> = stored
        .iter()
        .enumerate()
        .filter(|(_, (n, _))| n.starts_with("cold-"))
        .map(|(position, _)| {
            let hot = stored[..position]
                .iter()
                .filter(|(n, _)| n == "hot")
                .count();
            (hot, position)
        })
        .collect();
    assert_eq!(waits.len(), cold_count);
    for (hot, position) in &waits {
        assert!(
            *hot <= 1 && *position <= cold_count,
            "a cold namespace waited behind {hot} of the {backlog_len} hot uploads \
             ({position} uploads in all; (hot, all) per cold one: {waits:?})"
        );
    }
}

#[test]
fn segments_covered_by_a_durable_frame_no_learnt_later_are_not_uploaded_again() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path().join("bucket");
    let scratch = dir.path().join("scratch");
    let namespace = ns("revisited");
    let all = segments(&dir.path().join("local"), "revisited", 5, 2);
    // A first life made frames 1..=6 durable.
    {
        let storage = storage(&bucket, dir.path(), Faults::default(), config(&scratch));
        let acks = Acks::default();
        for segment in &all[..3] {
            store(&storage, &namespace, segment, &acks);
        }
        wait_until("the first life is durable", || acks.get().len() == 3);
        futures::executor::block_on(storage.shutdown());
    }
    // The next one: its only worker is busy with another namespace, and the backend is slow to
    // answer the durable frame_no, which the WAL asks for while it sends its segments again.
    let storage = storage(
        &bucket,
        dir.path(),
        Faults::default(),
        StorageConfig {
            max_in_flight: 1,
            ..config(&scratch)
        },
    );
    storage.backend().set_open(false);
    let busy = segments(&dir.path().join("local"), "busy", 1, 2).remove(0);
    store(&storage, &ns("busy"), &busy, &Acks::default());
    wait_until("the busy namespace holds the worker", || {
        storage.backend().stalled_uploads.load(Ordering::SeqCst) == 1
    });
    storage.backend().set_reads_open(false);
    let acks = Acks::default();
    std::thread::scope(|s| {
        let asked = s.spawn(|| {
            futures::executor::block_on(storage.durable_frame_no(&generation_of(&namespace), None))
                .unwrap()
        });
        wait_until("the supervisor asks the backend", || {
            storage.backend().stalled_reads.load(Ordering::SeqCst) == 1
        });
        for segment in &all {
            store(&storage, &namespace, segment, &acks);
        }
        wait_until("the segments are taken", || {
            futures::executor::block_on(storage.metrics())
                .unwrap()
                .namespace(&namespace)
                .is_some_and(|n| n.queue_depth == 5)
        });
        storage.backend().set_reads_open(true);
        assert_eq!(asked.join().unwrap(), 6);
    });
    assert_eq!(
        acks.get(),
        [6, 6, 6],
        "the segments the backend already holds are durable at once"
    );
    storage.backend().set_open(true);
    wait_until("everything is durable", || acks.get().len() == 5);
    assert_eq!(acks.get().last(), Some(&10));
    let puts: Vec<_> = storage
        .backend()
        .stored()
        .into_iter()
        .filter(|(n, _)| n == "revisited")
        .map(|(_, key)| key)
        .collect();
    assert!(
        puts.iter().all(|k| k.start_frame_no > 6),
        "nothing at or below frame 6 is stored again: {puts:?}"
    );
    assert_eq!(puts.first().map(|k| k.start_frame_no), Some(7));
    assert_eq!(puts.last().map(|k| k.end_frame_no), Some(10));
}

#[test]
fn a_scheduler_that_stops_is_restarted_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let storage = storage(
        &dir.path().join("bucket"),
        dir.path(),
        Faults::default(),
        config(&dir.path().join("scratch")),
    );
    let namespace = ns("restarted");
    let all = segments(&dir.path().join("local"), "restarted", 6, 2);
    let acks = Acks::default();
    storage.backend().set_open(false);
    for segment in &all[..3] {
        store(&storage, &namespace, segment, &acks);
    }
    let scheduler = futures::executor::block_on(
        storage
            .supervisor()
            .send(SchedulerOf::new(namespace.clone())),
    )
    .unwrap()
    .unwrap();
    futures::executor::block_on(scheduler.send(ForceShutdown)).unwrap();
    wait_until("the supervisor restarted the scheduler", || {
        futures::executor::block_on(storage.metrics())
            .unwrap()
            .namespace(&namespace)
            .is_some_and(|n| n.restarts == 1)
    });
    let fresh = futures::executor::block_on(
        storage
            .supervisor()
            .send(SchedulerOf::new(namespace.clone())),
    )
    .unwrap()
    .unwrap();
    let snapshot = futures::executor::block_on(fresh.send(GetSnapshot)).unwrap();
    assert_eq!(snapshot.queued, 3, "the new scheduler got the record back");
    for segment in &all[3..] {
        store(&storage, &namespace, segment, &acks);
    }
    storage.backend().set_open(true);
    wait_until("everything is durable", || acks.get().len() == 6);
    assert_stored_in_order_once(
        &storage.backend().stored(),
        &[("restarted".to_string(), 12)],
    );
}

#[test]
fn graceful_shutdown_drains_every_queue() {
    let dir = tempfile::tempdir().unwrap();
    let storage = storage(
        &dir.path().join("bucket"),
        dir.path(),
        Faults {
            delay_per_mille: 1000,
            delay: Duration::from_millis(5),
            ..Faults::default()
        },
        config(&dir.path().join("scratch")),
    );
    let acks = Acks::default();
    for i in 0..10 {
        for segment in segments(&dir.path().join("local"), &format!("g-{i}"), 4, 2) {
            store(&storage, &ns(&format!("g-{i}")), &segment, &acks);
        }
    }
    futures::executor::block_on(storage.shutdown());
    assert_eq!(
        acks.get().len(),
        40,
        "every segment was durable before shutdown ended"
    );
    let ends: Vec<(String, u64)> = (0..10).map(|i| (format!("g-{i}"), 8)).collect();
    assert_stored_in_order_once(&storage.backend().stored(), &ends);
    let refused = futures::executor::block_on(storage.store(
        &generation_of(&ns("late")),
        segments(&dir.path().join("local"), "late", 1, 2).remove(0),
        None,
        Box::new(|_| {}),
    ));
    assert!(refused.is_err(), "a stopped storage takes no segment");
}

#[test]
fn force_shutdown_returns_promptly_and_a_restart_resends_what_was_left() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path().join("bucket");
    let scratch = dir.path().join("scratch");
    let namespace = ns("forced");
    let all = segments(&dir.path().join("local"), "forced", 5, 2);
    {
        let storage = storage(&bucket, dir.path(), Faults::default(), config(&scratch));
        let acks = Acks::default();
        store(&storage, &namespace, &all[0], &acks);
        wait_until("the first segment is durable", || acks.get() == [2]);
        storage.backend().set_open(false);
        for segment in &all[1..] {
            store(&storage, &namespace, segment, &acks);
        }
        let started = std::time::Instant::now();
        futures::executor::block_on(storage.force_shutdown());
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(acks.get(), [2], "nothing else became durable");
    }
    // The next start: the WAL asks for the durable frame_no and re-sends what is newer.
    let storage = storage(&bucket, dir.path(), Faults::default(), config(&scratch));
    let durable =
        futures::executor::block_on(storage.durable_frame_no(&generation_of(&namespace), None))
            .unwrap();
    assert_eq!(durable, 2);
    let acks = Acks::default();
    for segment in all.iter().filter(|s| s.last_committed_frame_no() > durable) {
        store(&storage, &namespace, segment, &acks);
    }
    wait_until("the rest is durable", || acks.get().len() == 4);
    assert_eq!(acks.get().last(), Some(&10));
    let fs = on_tokio(FsBackend::new(&bucket)).unwrap();
    let keys =
        on_tokio(fs.list_segments(fs.default_config(), &generation_of(&namespace), u64::MAX))
            .unwrap();
    let mut covered: Vec<(u64, u64)> = keys
        .iter()
        .map(|k| (k.start_frame_no, k.end_frame_no))
        .collect();
    covered.sort();
    assert_eq!(covered.first().map(|c| c.0), Some(1));
    assert!(
        covered.windows(2).all(|w| w[1].0 == w[0].1 + 1),
        "{covered:?}"
    );
    assert_eq!(covered.last().map(|c| c.1), Some(10));
}

#[test]
fn jobs_above_the_in_memory_limit_go_through_a_scratch_file_that_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let scratch = dir.path().join("scratch");
    let config = StorageConfig {
        in_memory_upload_bytes: 0,
        ..config(&scratch)
    };
    let storage = storage(
        &dir.path().join("bucket"),
        dir.path(),
        Faults::default(),
        config,
    );
    // Without the scratch directory the upload fails, naming the file it could not write: the
    // job really goes through a file. Once the directory is back the retries succeed.
    std::fs::remove_dir_all(&scratch).unwrap();
    let acks = Acks::default();
    for segment in segments(&dir.path().join("local"), "big", 4, 3) {
        store(&storage, &ns("big"), &segment, &acks);
    }
    wait_until("an upload fails on the missing scratch file", || {
        futures::executor::block_on(storage.metrics())
            .unwrap()
            .namespace(&ns("big"))
            .and_then(|n| n.last_error.clone())
            .is_some_and(|e| e.contains("scratch"))
    });
    assert!(acks.get().is_empty());
    std::fs::create_dir(&scratch).unwrap();
    wait_until("everything is durable", || acks.get().len() == 4);
    assert_stored_in_order_once(&storage.backend().stored(), &[("big".to_string(), 12)]);
    let fs = on_tokio(FsBackend::new(dir.path().join("bucket"))).unwrap();
    let key = storage.backend().stored()[0].1;
    let fetched = on_tokio(fs.fetch_segment_data(
        fs.default_config(),
        &generation_of(&ns("big")),
        key,
        &dir.path().join("fetched"),
    ))
    .unwrap();
    assert_eq!(fetched.header.start_frame_no, 1);
    let left: Vec<_> = std::fs::read_dir(&scratch)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        left.is_empty(),
        "scratch files are removed after the upload: {left:?}"
    );
}
