//! Property tests against a model: random write transactions (with savepoint rollbacks, whole
//! rollbacks and seals between them) are applied to real segment files and to a `BTreeMap`
//! history; every page read at every snapshot, every sealed segment's pages, and the merge of
//! every run of consecutive sealed segments must equal what the model says.

use std::collections::BTreeMap;

use chrono::Utc;
use libsql_wal_segment::format::PAGE_SIZE;
use libsql_wal_segment::{merge, CompactedReader, CurrentSegment, SealedSegment};
use proptest::prelude::*;
use uuid::Uuid;

use crate::common::{io, page};

const MAX_PAGE: u32 = 24;

/// One write transaction of the random workload.
#[derive(Debug, Clone)]
struct TxPlan {
    /// Pages written before the savepoint.
    first: Vec<u32>,
    /// Pages written after it and then rolled back to it (if any).
    undone: Vec<u32>,
    /// Pages written after the savepoint rollback.
    last: Vec<u32>,
    /// `Some(size_after)` commits; `None` rolls the whole transaction back.
    commit: Option<u32>,
    /// Seal the segment after this transaction.
    seal_after: bool,
}

fn pages(min: usize) -> impl Strategy<Value = Vec<u32>> {
    prop::collection::vec(1..=MAX_PAGE, min..6)
}

fn tx_plan() -> impl Strategy<Value = TxPlan> {
    (
        pages(1),
        pages(0),
        pages(0),
        prop::option::weighted(0.85, 1..=MAX_PAGE + 2),
        prop::bool::weighted(0.25),
    )
        .prop_map(|(first, undone, last, commit, seal_after)| TxPlan {
            first,
            undone,
            last,
            commit,
            seal_after,
        })
}

/// The model: every committed frame, in order.
#[derive(Debug, Default)]
struct History {
    /// (frame_no, page_no) of every committed frame.
    frames: Vec<(u64, u32)>,
    /// (last frame_no, size_after) of every commit.
    commits: Vec<(u64, u32)>,
}

impl History {
    /// The newest frame of `page_no` at or below `snapshot`, according to the model.
    fn newest(&self, page_no: u32, snapshot: u64) -> Option<u64> {
        self.frames
            .iter()
            .rev()
            .find(|&&(f, p)| p == page_no && f <= snapshot)
            .map(|&(f, _)| f)
    }

    /// The newest version of each page written in `start..=end` that is inside the database
    /// after `end`.
    fn newest_in(&self, start: u64, end: u64) -> BTreeMap<u32, u64> {
        let size_after = self
            .commits
            .iter()
            .find(|&&(f, _)| f == end)
            .map_or(0, |&(_, s)| s);
        let mut newest = BTreeMap::new();
        for &(f, p) in &self.frames {
            if (start..=end).contains(&f) && p <= size_after {
                newest.insert(p, f);
            }
        }
        newest
    }
}

fn write(
    segment: &CurrentSegment<std::fs::File>,
    next: &mut u64,
    pages: &[u32],
    commit: Option<u32>,
) {
    if pages.is_empty() {
        return;
    }
    let contents: Vec<_> = (0..pages.len())
        .map(|i| page(pages[i], *next + i as u64))
        .collect();
    let last = segment
        .insert_frames(
            pages
                .iter()
                .copied()
                .zip(contents.iter().map(Vec::as_slice)),
            commit,
        )
        .unwrap();
    assert_eq!(last, *next + pages.len() as u64 - 1);
    *next = last + 1;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn segments_agree_with_a_model_at_every_snapshot(plans in prop::collection::vec(tx_plan(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let log_id = Uuid::new_v4();
        let mut history = History::default();
        let mut segments: Vec<CurrentSegment<std::fs::File>> = Vec::new();
        let mut sealed: Vec<SealedSegment<std::fs::File>> = Vec::new();
        let new_segment = |n: usize, start: u64| {
            CurrentSegment::create(&io(), &dir.path().join(format!("seg-{n}")), start, log_id).unwrap()
        };
        segments.push(new_segment(0, 1));
        let mut next = 1;
        for plan in &plans {
            let current = segments.last().unwrap();
            let committed = current.last_committed_frame_no();
            write(current, &mut next, &plan.first, None);
            let savepoint = next - 1;
            write(current, &mut next, &plan.undone, None);
            current.rollback_to(savepoint).unwrap();
            next = savepoint + 1;
            match plan.commit {
                Some(size_after) => {
                    if plan.last.is_empty() {
                        // Commit with one more frame so the commit marker has a frame.
                        write(current, &mut next, &[plan.first[0]], Some(size_after));
                    } else {
                        write(current, &mut next, &plan.last, Some(size_after));
                    }
                    let mut frame_no = committed;
                    let all = plan.first.iter().chain(if plan.last.is_empty() { &plan.first[..1] } else { &plan.last[..] });
                    for &p in all {
                        frame_no += 1;
                        history.frames.push((frame_no, p));
                    }
                    history.commits.push((frame_no, size_after));
                    prop_assert_eq!(current.last_committed_frame_no(), frame_no);
                }
                None => {
                    write(current, &mut next, &plan.last, None);
                    current.rollback();
                    next = committed + 1;
                }
            }
            if plan.seal_after {
                if let Some(s) = current.seal(Utc::now()).unwrap() {
                    sealed.push(s);
                    let start = current.last_committed_frame_no() + 1;
                    segments.push(new_segment(segments.len(), start));
                }
            }
        }

        // Every page at every snapshot, read through the segment objects newest first.
        let mut buf = vec![0; PAGE_SIZE];
        for &(snapshot, _) in &history.commits {
            for page_no in 1..=MAX_PAGE {
                let mut found = None;
                for segment in segments.iter().rev() {
                    if segment.start_frame_no() > snapshot {
                        continue;
                    }
                    if segment.read_page(page_no, snapshot, &mut buf).unwrap() {
                        found = segment.find_frame(page_no, snapshot);
                        prop_assert_eq!(&buf, &page(page_no, found.unwrap()));
                        break;
                    }
                }
                prop_assert_eq!(found, history.newest(page_no, snapshot), "page {} at {}", page_no, snapshot);
            }
        }

        // Sealed segments, reopened from disk, hold the newest version of their range.
        let reopened: Vec<_> = sealed.iter().map(|s| SealedSegment::open(&io(), s.path()).unwrap()).collect();
        for segment in &reopened {
            for page_no in 1..=MAX_PAGE {
                let expected = history
                    .newest(page_no, segment.last_committed_frame_no())
                    .filter(|&f| f >= segment.start_frame_no());
                let found = segment.read_page(page_no, &mut buf).unwrap();
                prop_assert_eq!(found, expected.is_some());
                if let Some(frame_no) = expected {
                    prop_assert_eq!(&buf, &page(page_no, frame_no));
                }
            }
        }

        // Merging any run of consecutive sealed segments yields the model's newest versions.
        for i in 0..reopened.len() {
            for j in i..reopened.len() {
                let run: Vec<_> = reopened[i..=j].iter().collect();
                let mut data = Vec::new();
                let compacted = merge(&run, &mut data).unwrap();
                let mut reader = CompactedReader::new(&data[..], "merged").unwrap();
                let mut merged = BTreeMap::new();
                while let Some(frame) = reader.next_frame(&mut buf).unwrap() {
                    prop_assert_eq!(&buf, &page(frame.page_no, frame.frame_no));
                    merged.insert(frame.page_no, frame.frame_no);
                }
                let (start, end) = (run[0].start_frame_no(), run[run.len() - 1].last_committed_frame_no());
                prop_assert_eq!(&merged, &history.newest_in(start, end));
                CompactedReader::new(&data[..], "merged").unwrap().verify_with_index(&compacted.index).unwrap();
            }
        }
    }
}
