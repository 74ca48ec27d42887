//! `libsql-wal inspect FILE`: what a local segment file (current or sealed) or a downloaded
//! object (compacted segment data, or a page index) holds: its header's fields, each frame
//! (position, offset, page, frame_no, whether it commits, whether its checksum checks out),
//! its index, and every problem found, named by offset. Exit code 1 when a problem was found.
//! Reads the file only; works on files a live server holds open.

use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use libsql_wal_segment::format::{
    CompactedHeader, FrameHeader, SegmentHeader, COMPACTED_HEADER_SIZE, COMPACTED_MAGIC,
    FRAME_SIZE, SEGMENT_FRAME_UNORDERED, SEGMENT_HEADER_SIZE, SEGMENT_MAGIC,
};
use libsql_wal_segment::{CompactedDecoder, PageIndex};
use serde::Serialize;

use crate::output::{failed, print_json, time_text, unless_problems, Table};

/// `libsql-wal inspect`'s flags.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The file: a segment (`{data_dir}/{ns}/data-segments/*.seg`) or a downloaded object.
    file: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// One frame.
#[derive(Debug, Serialize)]
struct FrameRow {
    position: u64,
    offset: u64,
    page_no: u32,
    frame_no: u64,
    /// The database size in pages after the transaction it commits (segments only).
    commits: Option<u32>,
    checksum_ok: bool,
}

/// What `inspect` found.
#[derive(Debug, Serialize)]
struct Inspected {
    file: PathBuf,
    /// `segment` (local, current or sealed), `compacted` (stored segment data) or `index`.
    kind: &'static str,
    /// The header's fields, by name.
    header: Vec<(&'static str, String)>,
    frames: Vec<FrameRow>,
    /// The index's entries: (page_no, offset of the page's frame).
    index: Option<Vec<(u32, u64)>>,
    problems: Vec<String>,
    /// What is worth knowing but not a problem.
    notes: Vec<String>,
}

/// Runs `inspect`.
pub fn inspect(args: InspectArgs) -> ExitCode {
    let inspected = match inspect_file(&args.file) {
        Ok(inspected) => inspected,
        Err(e) => return failed(e),
    };
    let clean = inspected.problems.is_empty();
    if args.json {
        return unless_problems(clean, print_json(&inspected));
    }
    println!("{}: {}", inspected.file.display(), inspected.kind);
    for (name, value) in &inspected.header {
        println!("  {name}: {value}");
    }
    if !inspected.frames.is_empty() {
        println!();
        let mut table = Table::new(&["POSITION", "OFFSET", "PAGE", "FRAME", "COMMITS", "CHECKSUM"]);
        for f in &inspected.frames {
            table.row(vec![
                f.position.to_string(),
                f.offset.to_string(),
                f.page_no.to_string(),
                f.frame_no.to_string(),
                f.commits
                    .map_or_else(String::new, |size| format!("yes ({size} pages)")),
                if f.checksum_ok { "ok" } else { "BAD" }.into(),
            ]);
        }
        table.print();
    }
    if let Some(index) = &inspected.index {
        println!();
        println!("index: {} pages", index.len());
    }
    for n in &inspected.notes {
        println!("note: {n}");
    }
    for p in &inspected.problems {
        println!("PROBLEM {p}");
    }
    unless_problems(clean, ExitCode::SUCCESS)
}

/// Reads `path` and says what it is. Errors are for files that cannot be read at all, or are
/// none of the kinds this knows.
fn inspect_file(path: &Path) -> Result<Inspected, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let len = file
        .metadata()
        .map_err(|e| format!("{}: {e}", path.display()))?
        .len();
    let mut magic = [0; 8];
    file.read_exact_at(&mut magic, 0).map_err(|e| {
        format!(
            "{}: too short to be a segment or an index ({e})",
            path.display()
        )
    })?;
    let mut out = Inspected {
        file: path.to_path_buf(),
        kind: "segment",
        header: Vec::new(),
        frames: Vec::new(),
        index: None,
        problems: Vec::new(),
        notes: Vec::new(),
    };
    let read = |at: u64, buf: &mut [u8]| {
        file.read_exact_at(buf, at)
            .map_err(|e| format!("{}: reading at offset {at}: {e}", path.display()))
    };
    match u64::from_le_bytes(magic) {
        SEGMENT_MAGIC => {
            let mut buf = [0; SEGMENT_HEADER_SIZE];
            read(0, &mut buf)?;
            let header = SegmentHeader::decode(&buf, path).map_err(|e| e.to_string())?;
            out.header = segment_fields(&header);
            let end = if header.is_sealed() {
                header.index_offset.min(len)
            } else {
                len
            };
            let unordered = header.flags & SEGMENT_FRAME_UNORDERED != 0;
            let mut previous = header.salt;
            let mut frame = vec![0; FRAME_SIZE];
            let mut offset = SEGMENT_HEADER_SIZE as u64;
            // Frames of a current segment past its last commit that do not check out: what a
            // crash leaves of a transaction not committed (recovery drops them), not damage.
            let mut findings = Vec::new();
            while offset + FRAME_SIZE as u64 <= end {
                read(offset, &mut frame)?;
                if !header.is_sealed() && frame.iter().all(|&b| b == 0) {
                    // Space made ahead for frames not written yet.
                    break;
                }
                let decoded = FrameHeader::decode(&frame);
                let checksum_ok = FrameHeader::decode_verified(previous, &frame).is_some();
                if !checksum_ok {
                    findings.push((
                        out.frames.len(),
                        format!(
                            "offset {offset}: frame checksum mismatch (frame_no {}, page {})",
                            decoded.frame_no, decoded.page_no
                        ),
                    ));
                }
                let expected = match out.frames.last() {
                    Some(last) => last.frame_no.saturating_add(1),
                    None => header.start_frame_no,
                };
                if (!unordered && decoded.frame_no != expected)
                    || (unordered && decoded.frame_no < expected)
                {
                    findings.push((
                        out.frames.len(),
                        format!(
                            "offset {offset}: frame_no {} where {expected} was expected",
                            decoded.frame_no
                        ),
                    ));
                }
                out.frames.push(FrameRow {
                    position: out.frames.len() as u64,
                    offset,
                    page_no: decoded.page_no,
                    frame_no: decoded.frame_no,
                    commits: decoded.is_commit().then_some(decoded.size_after),
                    checksum_ok,
                });
                previous = decoded.checksum;
                offset += FRAME_SIZE as u64;
            }
            // Recovery keeps the frames up to the last commit before the first bad frame. Bad
            // frames with no good commit after them are a transaction a crash cut short; a
            // good commit after one is committed data damaged.
            let first_bad = findings.first().map_or(out.frames.len(), |(at, _)| *at);
            let committed = out.frames[..first_bad]
                .iter()
                .rposition(|f| f.commits.is_some())
                .map_or(0, |last| last + 1);
            let torn_tail = !out.frames[first_bad..]
                .iter()
                .any(|f| f.commits.is_some() && f.checksum_ok);
            for (_, finding) in findings {
                if header.is_sealed() || !torn_tail {
                    out.problems.push(finding);
                } else {
                    out.notes.push(format!(
                        "{finding}: after the last commit, a transaction a crash cut short (recovery drops it)"
                    ));
                }
            }
            if header.is_sealed() {
                check_sealed_header(&header, &out.frames, &mut out.problems);
                let size = usize::try_from(header.index_size).unwrap_or(usize::MAX);
                if header.index_offset.saturating_add(header.index_size) > len {
                    out.problems.push(format!(
                        "offset {}: the index ({} bytes) runs past the end of the file ({len} bytes)",
                        header.index_offset, header.index_size
                    ));
                } else {
                    let mut blob = vec![0; size];
                    read(header.index_offset, &mut blob)?;
                    check_index(&blob, path, header.index_offset, &mut out);
                }
            } else if out.frames.len() > committed {
                out.header.push((
                    "uncommitted frames",
                    format!(
                        "{} (a transaction in progress, or cut short)",
                        out.frames.len() - committed
                    ),
                ));
            }
        }
        COMPACTED_MAGIC => {
            out.kind = "compacted";
            let mut buf = [0; COMPACTED_HEADER_SIZE];
            read(0, &mut buf)?;
            let mut decoder = CompactedDecoder::new(&buf, path).map_err(|e| e.to_string())?;
            out.header = compacted_fields(decoder.header());
            let mut frame = vec![0; FRAME_SIZE];
            let mut offset = COMPACTED_HEADER_SIZE as u64;
            while !decoder.is_complete() {
                let available = len.saturating_sub(offset);
                if available < FRAME_SIZE as u64 {
                    out.problems.push(
                        decoder
                            .truncated(usize::try_from(available).unwrap_or(0))
                            .to_string(),
                    );
                    break;
                }
                read(offset, &mut frame)?;
                let decoded = FrameHeader::decode(&frame);
                let checked = decoder.decode_frame(&frame);
                out.frames.push(FrameRow {
                    position: out.frames.len() as u64,
                    offset,
                    page_no: decoded.page_no,
                    frame_no: decoded.frame_no,
                    commits: None,
                    checksum_ok: checked.is_ok(),
                });
                if let Err(e) = checked {
                    // The chain of checksums is broken: what follows cannot be checked.
                    out.problems.push(e.to_string());
                    break;
                }
                offset += FRAME_SIZE as u64;
            }
            if decoder.is_complete() && offset < len {
                out.problems.push(decoder.trailing_bytes().to_string());
            }
        }
        _ => {
            out.kind = "index";
            let blob = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let index = PageIndex::decode(&blob, path, 0).map_err(|e| {
                format!(
                    "{} is not a segment, compacted segment data or a page index: {e}",
                    path.display()
                )
            })?;
            out.header = vec![("pages", index.len().to_string())];
            out.index = Some(index.entries());
        }
    }
    Ok(out)
}

/// Checks a sealed segment's header against its frames.
fn check_sealed_header(header: &SegmentHeader, frames: &[FrameRow], problems: &mut Vec<String>) {
    let last = frames.last();
    let checks = [
        ("frame_count", header.frame_count, frames.len() as u64),
        (
            "last_committed_frame_no",
            header.last_committed_frame_no,
            last.map_or(0, |f| f.frame_no),
        ),
        (
            "size_after",
            u64::from(header.size_after),
            u64::from(last.and_then(|f| f.commits).unwrap_or(0)),
        ),
    ];
    for (field, in_header, in_frames) in checks {
        if in_header != in_frames {
            problems.push(format!(
                "offset 0: the header's {field} is {in_header}, the frames say {in_frames}"
            ));
        }
    }
}

/// Decodes a sealed segment's index and checks that it maps each page of the frames to the
/// page's newest frame, and nothing else.
fn check_index(blob: &[u8], path: &Path, at: u64, out: &mut Inspected) {
    match PageIndex::decode(blob, path, at) {
        Ok(index) => {
            let mut newest = std::collections::BTreeMap::new();
            for f in &out.frames {
                newest.insert(f.page_no, f.offset);
            }
            let entries = index.entries();
            let expected: Vec<(u32, u64)> = newest.into_iter().collect();
            if entries != expected {
                let differs = entries
                    .iter()
                    .zip(&expected)
                    .find(|(a, b)| a != b)
                    .map_or_else(
                        || {
                            format!(
                                "it holds {} pages, the frames {}",
                                entries.len(),
                                expected.len()
                            )
                        },
                        |(got, want)| {
                            format!(
                                "it maps page {} to offset {}, where the newest frame of page {} is at {}",
                                got.0, got.1, want.0, want.1
                            )
                        },
                    );
                out.problems.push(format!(
                    "offset {at}: the index does not match the frames: {differs}"
                ));
            }
            out.index = Some(entries);
        }
        Err(e) => out.problems.push(e.to_string()),
    }
}

fn segment_fields(h: &SegmentHeader) -> Vec<(&'static str, String)> {
    vec![
        (
            "state",
            if h.is_sealed() { "sealed" } else { "current" }.into(),
        ),
        ("flags", format!("{:#x}", h.flags)),
        ("log_id", h.log_id.to_string()),
        ("start_frame_no", h.start_frame_no.to_string()),
        (
            "last_committed_frame_no",
            h.last_committed_frame_no.to_string(),
        ),
        ("frame_count", h.frame_count.to_string()),
        ("size_after", h.size_after.to_string()),
        ("page_size", h.page_size.to_string()),
        ("index_offset", h.index_offset.to_string()),
        ("index_size", h.index_size.to_string()),
        ("salt", format!("{:#010x}", h.salt)),
        (
            "sealed_at",
            if h.sealed_at_ms == 0 {
                "-".into()
            } else {
                time_text(h.sealed_at_ms)
            },
        ),
    ]
}

fn compacted_fields(h: &CompactedHeader) -> Vec<(&'static str, String)> {
    vec![
        ("log_id", h.log_id.to_string()),
        ("start_frame_no", h.start_frame_no.to_string()),
        ("end_frame_no", h.end_frame_no.to_string()),
        ("size_after", h.size_after.to_string()),
        ("frame_count", h.frame_count.to_string()),
        ("sealed_at", time_text(h.timestamp_ms)),
    ]
}
