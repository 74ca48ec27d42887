//! Writes the seed corpus of the `decode` target: a sealed segment, an unsealed segment with a
//! torn tail, compacted data and a page index, all valid, so the fuzzer starts from real inputs.
//! Usage: `cargo run --bin seed -- corpus/decode`.

use std::path::PathBuf;

use libsql_wal_segment::{merge, CurrentSegment, StdIo};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(std::env::args().nth(1).ok_or("usage: seed <corpus dir>")?);
    std::fs::create_dir_all(&out)?;
    let dir = tempfile::tempdir()?;
    let log_id = Default::default();
    let page = |n: u8| vec![n; 4096];

    let current_path = dir.path().join("current");
    let current = CurrentSegment::create(&StdIo, &current_path, 1, log_id)?;
    current.insert_frames([(1, &page(1)[..]), (2, &page(2)[..])], Some(2))?;
    current.insert_frames([(2, &page(3)[..])], Some(3))?;
    current.insert_frames([(3, &page(4)[..])], None)?;
    let mut torn = std::fs::read(&current_path)?;
    torn.truncate(torn.len() - 100);
    std::fs::write(out.join("unsealed-torn"), &torn)?;

    current.rollback();
    let sealed = current
        .seal(chrono::DateTime::from_timestamp_millis(1_700_000_000_000).unwrap_or_default())?
        .ok_or("segment has commits")?;
    std::fs::write(out.join("sealed"), std::fs::read(&current_path)?)?;

    let mut data = Vec::new();
    let compacted = merge(&[&sealed], &mut data)?;
    std::fs::write(out.join("compacted"), &data)?;
    std::fs::write(out.join("index"), compacted.index.encode())?;
    Ok(())
}
