//! Fuzz target: arbitrary bytes fed to every decoder of the segment crate (sealed open, crash
//! recovery, compacted stream, page index), once as they are and once with their checksums
//! recomputed so mutations reach the structural checks. Any panic is a bug.

#![no_main]

mod checksums;
mod mem;

use std::path::Path;
use std::sync::RwLock;

use checksums::fix_compacted_checksums;
use libfuzzer_sys::fuzz_target;
use libsql_wal_segment::format::PAGE_SIZE;
use libsql_wal_segment::{CompactedReader, CurrentSegment, PageIndex, SealedSegment};
use mem::{fix_segment_checksums, MemFile};

fn exercise(segment_bytes: Vec<u8>, compacted_bytes: &[u8], index_bytes: &[u8]) {
    let path = Path::new("fuzz");
    let mut page = vec![0; PAGE_SIZE];
    let file = MemFile(RwLock::new(segment_bytes.clone()));
    if let Ok(sealed) = SealedSegment::from_file(file, path) {
        for page_no in 1..8 {
            let _ = sealed.read_page(page_no, &mut page);
        }
        for frame in sealed.frames() {
            if frame.is_err() {
                break;
            }
        }
        let _ = libsql_wal_segment::merge(&[&sealed], Vec::new());
    }
    let file = MemFile(RwLock::new(segment_bytes));
    if let Ok((current, _)) = CurrentSegment::recover_file(file, path) {
        for page_no in 1..8 {
            let _ = current.read_page(page_no, u64::MAX, &mut page);
        }
        let _ = current.insert_frames([(1, &page[..])], Some(1));
        let _ = current.seal(chrono_now());
    }
    if let Ok(mut reader) = CompactedReader::new(compacted_bytes, path) {
        while let Ok(Some(_)) = reader.next_frame(&mut page) {}
    }
    if let Ok(index) = PageIndex::decode(index_bytes, path, 0) {
        let _ = index.get(1);
        let _ = index.entries();
    }
}

fn chrono_now() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(1_700_000_000_000).unwrap_or_default()
}

/// Replaces libfuzzer-sys's abort-on-any-panic hook: panics raised inside the fst crate are
/// contained by `PageIndex::decode` (and reported as corruption), so they must not abort. Any
/// other panic still aborts, and a contained one that escaped would abort when it unwinds out of
/// the target.
fn contain_fst_panics() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let in_fst = info.location().is_some_and(|l| l.file().contains("/fst-"));
        if !in_fst {
            default_hook(info);
            std::process::abort();
        }
    }));
}

fuzz_target!(init: contain_fst_panics(), |data: &[u8]| {
    exercise(data.to_vec(), data, data);
    let mut segment = data.to_vec();
    fix_segment_checksums(&mut segment);
    let mut compacted = data.to_vec();
    fix_compacted_checksums(&mut compacted);
    let mut index = data.to_vec();
    if index.len() >= 4 {
        let at = index.len() - 4;
        let crc = crc32fast::hash(&index[..at]);
        index[at..].copy_from_slice(&crc.to_le_bytes());
    }
    exercise(segment, &compacted, &index);
});
