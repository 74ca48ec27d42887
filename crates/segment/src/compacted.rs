//! Compacted segments, the storage format sent to backends: a `CompactedHeader`, then the newest
//! version of each page once, in increasing page order, each frame chained to the previous one by
//! its running checksum, the last one flagged `FRAME_LAST`. The page index travels beside the data
//! as its own byte string (see `index`).
//!
//! `merge` writes one from N consecutive sealed segments; `CompactedReader` streams one back,
//! verifying every frame as it goes, so a backend download can be checked without holding it in
//! memory.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::format::{
    check_page_buffer, untrusted_capacity, CompactedHeader, FrameHeader, COMPACTED_HEADER_SIZE,
    FRAME_HEADER_SIZE, FRAME_LAST, FRAME_SIZE, PAGE_SIZE,
};
use crate::index::PageIndex;
use crate::io::FileExt;
use crate::sealed::SealedSegment;

/// What `merge` wrote.
#[derive(Debug, Clone)]
pub struct CompactedSegment {
    /// The header at the start of the data.
    pub header: CompactedHeader,
    /// page_no -> byte offset of its frame in the data.
    pub index: PageIndex,
    /// Number of data bytes written.
    pub data_len: u64,
}

/// Returns the byte offset of the `i`th frame of compacted data.
fn compacted_frame_offset(i: usize) -> u64 {
    (COMPACTED_HEADER_SIZE + i * FRAME_SIZE) as u64
}

/// Merges consecutive sealed segments (oldest first; each must start right after the previous
/// one's last frame, all of the same log) into one compacted segment written to `out`: the newest
/// version of every page that is inside the database after the last segment. Every frame copied
/// is checked against its checksum on the way.
///
/// Uploads (one or more segments queued for a namespace) and remote compaction both use it.
#[tracing::instrument(skip_all, fields(segments = segments.len()), level = "debug")]
pub fn merge<F: FileExt>(
    segments: &[&SealedSegment<F>],
    out: impl Write,
) -> Result<CompactedSegment> {
    let (Some(first), Some(last)) = (segments.first(), segments.last()) else {
        return Err(Error::invalid_state("<merge>", "no segment to merge"));
    };
    for pair in segments.windows(2) {
        let (previous, next) = (pair[0], pair[1]);
        if previous.header().log_id != next.header().log_id {
            return Err(Error::invalid_state(
                next.path(),
                format!(
                    "belongs to log {}, {} to log {}",
                    next.header().log_id,
                    previous.path().display(),
                    previous.header().log_id
                ),
            ));
        }
        if previous.last_committed_frame_no().checked_add(1) != Some(next.start_frame_no()) {
            return Err(Error::NotConsecutive {
                previous: previous.path().to_path_buf(),
                previous_end: previous.last_committed_frame_no(),
                next: next.path().to_path_buf(),
                next_start: next.start_frame_no(),
            });
        }
    }
    let size_after = last.size_after();
    let indexes: Vec<&PageIndex> = segments.iter().map(|s| s.index()).collect();
    let newest = newest_versions(&indexes, size_after);
    let header = CompactedHeader {
        log_id: first.header().log_id,
        start_frame_no: first.start_frame_no(),
        end_frame_no: last.last_committed_frame_no(),
        size_after,
        frame_count: 0,
        timestamp_ms: last.header().sealed_at_ms,
    };
    write_compacted(
        header,
        newest,
        last.path(),
        out,
        |segment, offset, frame| {
            let source = segments[segment];
            Ok((source.read_verified_frame(offset, frame)?, source.path()))
        },
    )
}

/// Returns, for every page at or below `size_after` that `indexes` (oldest first, consecutive)
/// hold, where its newest version is: page_no -> (position in `indexes`, offset of the frame).
/// Merges, restores and compaction all write each page once, from there.
pub fn newest_versions(indexes: &[&PageIndex], size_after: u32) -> HashMap<u32, (usize, u64)> {
    let mut newest = HashMap::new();
    // Newest first, so the first version seen of a page is the newest.
    for (i, index) in indexes.iter().enumerate().rev() {
        for (page_no, offset) in index.entries() {
            if page_no <= size_after {
                newest.entry(page_no).or_insert((i, offset));
            }
        }
    }
    newest
}

/// A compacted segment's data in a local file (fetched from a backend, verified on the way in),
/// with its header and page index: an input of `merge_compacted`.
#[derive(Debug, Clone, Copy)]
pub struct LocalCompacted<'a, F> {
    /// The data's header.
    pub header: &'a CompactedHeader,
    /// page_no -> offset of its frame in the data.
    pub index: &'a PageIndex,
    /// The data.
    pub file: &'a F,
    /// Where the data is, for errors.
    pub path: &'a Path,
}

/// Merges compacted segments (oldest first, all of one log, each starting at or before the
/// frame after the previous one's end and ending after it: consecutive or overlapping) into one
/// compacted segment written to `out`, holding the newest version of every page inside the
/// database after the last one. Remote compaction uses it.
///
/// Each frame read back is checked against the index (its page) and the input's header (its
/// frame_no); the running checksums were verified when the data was fetched.
#[tracing::instrument(skip_all, fields(segments = inputs.len()), level = "debug")]
pub fn merge_compacted<F: FileExt>(
    inputs: &[LocalCompacted<'_, F>],
    out: impl Write,
) -> Result<CompactedSegment> {
    let (Some(first), Some(last)) = (inputs.first(), inputs.last()) else {
        return Err(Error::invalid_state("<merge>", "no segment to merge"));
    };
    for pair in inputs.windows(2) {
        let (previous, next) = (&pair[0], &pair[1]);
        if previous.header.log_id != next.header.log_id {
            return Err(Error::invalid_state(
                next.path,
                format!(
                    "belongs to log {}, {} to log {}",
                    next.header.log_id,
                    previous.path.display(),
                    previous.header.log_id
                ),
            ));
        }
        let joins = next.header.start_frame_no <= previous.header.end_frame_no.saturating_add(1)
            && next.header.end_frame_no > previous.header.end_frame_no;
        if !joins {
            return Err(Error::NotConsecutive {
                previous: previous.path.to_path_buf(),
                previous_end: previous.header.end_frame_no,
                next: next.path.to_path_buf(),
                next_start: next.header.start_frame_no,
            });
        }
    }
    let size_after = last.header.size_after;
    let indexes: Vec<&PageIndex> = inputs.iter().map(|i| i.index).collect();
    let newest = newest_versions(&indexes, size_after);
    let header = CompactedHeader {
        log_id: first.header.log_id,
        start_frame_no: first.header.start_frame_no,
        end_frame_no: last.header.end_frame_no,
        size_after,
        frame_count: 0,
        timestamp_ms: last.header.timestamp_ms,
    };
    write_compacted(header, newest, last.path, out, |i, offset, frame| {
        let input = &inputs[i];
        input
            .file
            .read_exact_at(frame, offset)
            .map_err(|e| Error::io(input.path, e))?;
        let source = FrameHeader::decode(frame);
        let range = input.header.start_frame_no..=input.header.end_frame_no;
        if !range.contains(&source.frame_no) {
            return Err(Error::corrupt(
                input.path,
                offset,
                format!("frame_no {} outside {range:?}", source.frame_no),
            ));
        }
        Ok((source, input.path))
    })
}

/// Writes a compacted segment: `header` (its frame count filled in here), then for each page of
/// `newest` (page_no -> (source, offset)) in increasing page order the frame `read_frame` reads
/// (returning its header and the source's path, for errors), re-chained by running checksum.
fn write_compacted<'s>(
    mut header: CompactedHeader,
    newest: HashMap<u32, (usize, u64)>,
    name: &Path,
    mut out: impl Write,
    mut read_frame: impl FnMut(usize, u64, &mut [u8]) -> Result<(FrameHeader, &'s Path)>,
) -> Result<CompactedSegment> {
    let mut pages: Vec<(u32, (usize, u64))> = newest.into_iter().collect();
    pages.sort_unstable_by_key(|&(page_no, _)| page_no);
    header.frame_count = u32::try_from(pages.len())
        .map_err(|_| Error::invalid_state(name, "too many pages to compact"))?;
    let out_name = Path::new("<compacted output>");
    let encoded = header.encode();
    out.write_all(&encoded)
        .map_err(|e| Error::io(out_name, e))?;
    let mut previous = CompactedHeader::checksum_seed(&encoded);
    let mut entries = Vec::with_capacity(pages.len());
    let mut frame = vec![0; FRAME_SIZE];
    for (i, &(page_no, (source, offset))) in pages.iter().enumerate() {
        let (source_header, source_path) = read_frame(source, offset, &mut frame)?;
        if source_header.page_no != page_no {
            return Err(Error::corrupt(
                source_path,
                offset,
                format!(
                    "index says page {page_no}, frame holds page {}",
                    source_header.page_no
                ),
            ));
        }
        let frame_header = FrameHeader {
            checksum: 0,
            page_no,
            size_after: 0,
            flags: if i + 1 == pages.len() { FRAME_LAST } else { 0 },
            frame_no: source_header.frame_no,
        };
        previous = frame_header.write_with_checksum(previous, &mut frame);
        out.write_all(&frame).map_err(|e| Error::io(out_name, e))?;
        entries.push((page_no, compacted_frame_offset(i)));
    }
    out.flush().map_err(|e| Error::io(out_name, e))?;
    Ok(CompactedSegment {
        header,
        index: PageIndex::build(&entries, name)?,
        data_len: compacted_frame_offset(pages.len()),
    })
}

/// Verifies compacted data as it arrives, without doing any I/O itself (async readers in the
/// backends feed it, so does `CompactedReader`): the header, each frame's running checksum,
/// strictly increasing page numbers inside the database size, frame numbers inside the header's
/// range, and the `FRAME_LAST` flag on the last frame only.
#[derive(Debug, Clone)]
pub struct CompactedDecoder {
    /// Names the data in errors (a file path or an object key).
    name: PathBuf,
    /// The validated header.
    header: CompactedHeader,
    /// Checksum of the previous frame (or the header's seed).
    previous: u32,
    /// Frames decoded so far.
    frames_read: u32,
    /// Page of the previous frame (0 before the first).
    previous_page: u32,
}

impl CompactedDecoder {
    /// Validates the encoded header; `name` names the data in errors.
    pub fn new(encoded: &[u8; COMPACTED_HEADER_SIZE], name: impl Into<PathBuf>) -> Result<Self> {
        let name = name.into();
        let header = CompactedHeader::decode(encoded, &name)?;
        Ok(CompactedDecoder {
            name,
            header,
            previous: CompactedHeader::checksum_seed(encoded),
            frames_read: 0,
            previous_page: 0,
        })
    }

    /// Returns the validated header.
    pub fn header(&self) -> &CompactedHeader {
        &self.header
    }

    /// Returns the name used in errors.
    pub fn name(&self) -> &Path {
        &self.name
    }

    /// Returns the byte offset in the data of the next frame.
    pub fn next_offset(&self) -> u64 {
        compacted_frame_offset(self.frames_read as usize)
    }

    /// Returns true once every frame the header announces was decoded.
    pub fn is_complete(&self) -> bool {
        self.frames_read == self.header.frame_count
    }

    /// Returns the error for data that ended `available` bytes into the next frame.
    pub fn truncated(&self, available: usize) -> Error {
        Error::corrupt(
            &self.name,
            self.next_offset(),
            format!(
                "truncated: frame {} of {} needs {FRAME_SIZE} bytes, {available} remain",
                self.frames_read + 1,
                self.header.frame_count
            ),
        )
    }

    /// Returns the error for bytes found after the last frame.
    pub fn trailing_bytes(&self) -> Error {
        Error::corrupt(&self.name, self.next_offset(), "bytes after the last frame")
    }

    /// Verifies the next frame (`FRAME_SIZE` bytes: header and page) and returns its header.
    pub fn decode_frame(&mut self, frame: &[u8]) -> Result<FrameHeader> {
        let offset = self.next_offset();
        if self.is_complete() {
            return Err(self.trailing_bytes());
        }
        if frame.len() != FRAME_SIZE {
            return Err(self.truncated(frame.len()));
        }
        let bad = |what: String| Err(Error::corrupt(&self.name, offset, what));
        let Some(header) = FrameHeader::decode_verified(self.previous, frame) else {
            return bad("frame checksum mismatch".into());
        };
        let is_last = self.frames_read + 1 == self.header.frame_count;
        if header.flags != if is_last { FRAME_LAST } else { 0 } {
            return bad(format!(
                "frame flags {:#x} on frame {} of {}",
                header.flags,
                self.frames_read + 1,
                self.header.frame_count
            ));
        }
        if header.page_no <= self.previous_page {
            return bad(format!(
                "page {} follows page {}: pages must increase",
                header.page_no, self.previous_page
            ));
        }
        if header.page_no > self.header.size_after {
            return bad(format!(
                "page {} is beyond the database size {}",
                header.page_no, self.header.size_after
            ));
        }
        if !(self.header.start_frame_no..=self.header.end_frame_no).contains(&header.frame_no) {
            return bad(format!(
                "frame_no {} outside {}..={}",
                header.frame_no, self.header.start_frame_no, self.header.end_frame_no
            ));
        }
        if header.size_after != 0 {
            return bad("compacted frame carries a commit size".into());
        }
        self.previous = header.checksum;
        self.previous_page = header.page_no;
        self.frames_read += 1;
        Ok(header)
    }
}

/// Streams the frames of compacted data from any `Read`, verifying each with a
/// `CompactedDecoder`, and checks that nothing follows the last frame.
#[derive(Debug)]
pub struct CompactedReader<R> {
    /// The data being read.
    reader: R,
    /// Verifies what is read.
    decoder: CompactedDecoder,
    /// Reused frame buffer.
    buf: Vec<u8>,
}

impl<R: Read> CompactedReader<R> {
    /// Reads and validates the header; `name` names the data in errors.
    #[tracing::instrument(level = "trace", skip_all)]
    pub fn new(mut reader: R, name: impl Into<PathBuf>) -> Result<Self> {
        let name = name.into();
        let mut encoded = [0; COMPACTED_HEADER_SIZE];
        match read_full(&mut reader, &mut encoded) {
            Ok(n) if n == COMPACTED_HEADER_SIZE => {}
            Ok(n) => {
                return Err(Error::corrupt(
                    &name,
                    0,
                    format!("truncated: header needs {COMPACTED_HEADER_SIZE} bytes, {n} remain"),
                ))
            }
            Err(e) => return Err(Error::io(&name, e)),
        }
        Ok(CompactedReader {
            reader,
            decoder: CompactedDecoder::new(&encoded, name)?,
            buf: vec![0; FRAME_SIZE],
        })
    }

    /// Returns the validated header.
    pub fn header(&self) -> &CompactedHeader {
        self.decoder.header()
    }

    /// Returns the byte offset in the data of the next frame.
    pub fn next_offset(&self) -> u64 {
        self.decoder.next_offset()
    }

    /// Reads the next frame's page into `page` (`PAGE_SIZE` bytes) and returns its header, or
    /// `None` after the last frame (having checked that nothing follows it).
    pub fn next_frame(&mut self, page: &mut [u8]) -> Result<Option<FrameHeader>> {
        check_page_buffer(page, self.decoder.name())?;
        let io_err = |decoder: &CompactedDecoder, e| Error::io(decoder.name(), e);
        if self.decoder.is_complete() {
            let mut extra = [0; 1];
            return match read_full(&mut self.reader, &mut extra) {
                Ok(0) => Ok(None),
                Ok(_) => Err(self.decoder.trailing_bytes()),
                Err(e) => Err(io_err(&self.decoder, e)),
            };
        }
        let n = read_full(&mut self.reader, &mut self.buf).map_err(|e| io_err(&self.decoder, e))?;
        let header = self.decoder.decode_frame(&self.buf[..n])?;
        page.copy_from_slice(&self.buf[FRAME_HEADER_SIZE..]);
        Ok(Some(header))
    }

    /// Reads every frame, checking each and that `index` points at exactly those frames. Returns
    /// the header.
    pub fn verify_with_index(mut self, index: &PageIndex) -> Result<CompactedHeader> {
        let mut page = vec![0; PAGE_SIZE];
        // The count comes from the data: reserve a bounded amount, grow as frames arrive.
        let mut entries = Vec::with_capacity(untrusted_capacity(self.header().frame_count.into()));
        loop {
            let offset = self.next_offset();
            match self.next_frame(&mut page)? {
                Some(frame) => entries.push((frame.page_no, offset)),
                None => break,
            }
        }
        if index.entries() != entries {
            return Err(Error::corrupt(
                self.decoder.name(),
                0,
                "page index does not match the frames of the compacted segment",
            ));
        }
        Ok(*self.header())
    }
}

/// Reads until `buf` is full or the reader ends; returns the bytes read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}
