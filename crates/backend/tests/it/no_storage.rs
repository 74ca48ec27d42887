//! `NoStorage`: takes segments, reports nothing durable, finds nothing.

use std::sync::Arc;

use chrono::Utc;
use libsql_wal_backend::{Error, FindSegment, Generation, NoStorage, SegmentKey, Storage};
use libsql_wal_segment::{CurrentSegment, StdIo};

#[tokio::test]
async fn no_storage_keeps_everything_local_and_reports_nothing_durable() {
    let dir = tempfile::tempdir().unwrap();
    let segment =
        CurrentSegment::create(&StdIo, &dir.path().join("seg"), 1, Default::default()).unwrap();
    segment
        .insert_frames([(1, &vec![0; 4096][..])], Some(1))
        .unwrap();
    let sealed = Arc::new(segment.seal(Utc::now()).unwrap().unwrap());
    let storage = NoStorage::<std::fs::File>::default();
    let ns = Generation {
        namespace: "local".parse().unwrap(),
        number: 1,
        log_id: Default::default(),
    };
    let called = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = called.clone();
    storage
        .store(
            &ns,
            sealed.clone(),
            None,
            Box::new(move |_| flag.store(true, std::sync::atomic::Ordering::SeqCst)),
        )
        .await
        .unwrap();
    assert!(
        !called.load(std::sync::atomic::Ordering::SeqCst),
        "nothing is ever durable"
    );
    assert!(sealed.path().exists(), "the segment stays on disk");
    assert_eq!(storage.durable_frame_no(&ns, None).await.unwrap(), 0);
    let find = storage
        .find_segment(&ns, FindSegment::Containing(1), None)
        .await
        .unwrap();
    assert_eq!(find, None);
    assert!(storage
        .list_segments(&ns, u64::MAX, None)
        .await
        .unwrap()
        .is_empty());
    let key = SegmentKey {
        start_frame_no: 1,
        end_frame_no: 1,
        timestamp_ms: 0,
    };
    let err = storage.fetch_index(&ns, key, None).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    storage.shutdown().await;
}
