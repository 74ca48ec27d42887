//! Helpers shared by the segment crate's end-to-end tests: recognisable page contents and
//! segments built from a list of transactions.

use std::path::Path;

use libsql_wal_segment::format::PAGE_SIZE;
use libsql_wal_segment::{CurrentSegment, FileExt, Io, Result, StdIo};
use uuid::Uuid;

/// Returns a page whose bytes identify `page_no` and `version`.
pub fn page(page_no: u32, version: u64) -> Vec<u8> {
    let mut page = vec![0; PAGE_SIZE];
    for (i, chunk) in page.chunks_exact_mut(16).enumerate() {
        chunk[..4].copy_from_slice(&page_no.to_le_bytes());
        chunk[4..12].copy_from_slice(&version.to_le_bytes());
        chunk[12..16].copy_from_slice(&(i as u32).to_le_bytes());
    }
    page
}

/// One write transaction: the pages it writes (each page's content is `page(p, frame_no)`), and
/// the database size after it.
pub struct Tx {
    pub pages: Vec<u32>,
    pub size_after: u32,
}

/// Creates a segment at `path` starting at `start_frame_no` and commits `txs` into it.
pub fn write_segment<I: Io>(
    io: &I,
    path: &Path,
    start_frame_no: u64,
    log_id: Uuid,
    txs: &[Tx],
) -> CurrentSegment<I::File> {
    let segment = CurrentSegment::create(io, path, start_frame_no, log_id).unwrap();
    for tx in txs {
        commit(&segment, &tx.pages, tx.size_after);
    }
    segment
}

/// Commits one transaction writing `pages`; each page's content names the frame_no it gets.
pub fn commit<F: FileExt>(segment: &CurrentSegment<F>, pages: &[u32], size_after: u32) -> u64 {
    try_commit(segment, pages, size_after).unwrap()
}

/// Like `commit`, returning the segment's error.
pub fn try_commit<F: FileExt>(
    segment: &CurrentSegment<F>,
    pages: &[u32],
    size_after: u32,
) -> Result<u64> {
    let first = segment.last_committed_frame_no() + 1;
    let contents: Vec<Vec<u8>> = pages
        .iter()
        .enumerate()
        .map(|(i, &p)| page(p, first + i as u64))
        .collect();
    segment.insert_frames(
        pages
            .iter()
            .copied()
            .zip(contents.iter().map(Vec::as_slice)),
        Some(size_after),
    )
}

/// Returns the std `Io`.
pub fn io() -> StdIo {
    StdIo
}
