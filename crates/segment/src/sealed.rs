//! Sealed segments: immutable, fully committed segment files with a page index after their
//! frames. Opening one validates every byte (header, every frame's running checksum and
//! frame_no, the commit at the end, and the index against the frames), so everything read later
//! comes from a file known to be whole.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::format::{
    check_page_buffer, read_header, FrameHeader, SegmentHeader, FRAME_HEADER_SIZE, FRAME_SIZE,
    SEGMENT_FRAME_UNORDERED,
};
use crate::index::PageIndex;
use crate::io::{FileExt, Io, OpenMode};
use crate::scan::{frame_offset, scan_frames};

/// One frame read back from a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The frame's header.
    pub header: FrameHeader,
    /// The page, `PAGE_SIZE` bytes.
    pub page: Box<[u8]>,
}

/// An immutable segment whose frames are all committed.
#[derive(Debug)]
pub struct SealedSegment<F> {
    /// Where the segment lives.
    path: PathBuf,
    /// The open file.
    file: Arc<F>,
    /// The final header.
    header: SegmentHeader,
    /// page_no -> byte offset of the page's newest frame.
    index: PageIndex,
}

impl<F: FileExt> SealedSegment<F> {
    pub(crate) fn from_parts(
        path: PathBuf,
        file: Arc<F>,
        header: SegmentHeader,
        index: PageIndex,
    ) -> Self {
        SealedSegment {
            path,
            file,
            header,
            index,
        }
    }

    /// Opens and fully validates the sealed segment at `path`.
    ///
    /// Any damage is reported as `Corrupt` (or `BadMagic` / `UnsupportedVersion`) naming the
    /// file and the offset of the damaged structure. A segment that is not sealed is refused with
    /// `InvalidState` (recover it with `CurrentSegment::recover`).
    #[tracing::instrument(skip(io), level = "debug")]
    pub fn open<I: Io<File = F>>(io: &I, path: &Path) -> Result<Self> {
        let file = io
            .open(path, OpenMode::Read)
            .map_err(|e| Error::io(path, e))?;
        Self::from_file(file, path)
    }

    /// Validates the sealed segment in `file`; `path` names it in errors.
    pub fn from_file(file: F, path: &Path) -> Result<Self> {
        let header = read_header(&file, path)?;
        if !header.is_sealed() {
            return Err(Error::invalid_state(
                path,
                "segment is not sealed: recover it as the current segment",
            ));
        }
        let corrupt = |offset: u64, what: String| Err(Error::corrupt(path, offset, what));
        let frames_end = header
            .frame_count
            .checked_mul(FRAME_SIZE as u64)
            .and_then(|n| n.checked_add(frame_offset(0)));
        if frames_end != Some(header.index_offset) {
            return corrupt(
                0,
                format!(
                    "header says {} frames but the index starts at {}",
                    header.frame_count, header.index_offset
                ),
            );
        }
        if header.index_size > PageIndex::max_encoded_len(header.frame_count) {
            return corrupt(
                0,
                format!(
                    "header says the index of {} frames is {} bytes, more than such an index can be",
                    header.frame_count, header.index_size
                ),
            );
        }
        let len = file.size().map_err(|e| Error::io(path, e))?;
        if header.index_offset.checked_add(header.index_size) != Some(len) {
            return corrupt(
                0,
                format!(
                    "file is {len} bytes, header says index ends at {}",
                    header.index_offset.saturating_add(header.index_size)
                ),
            );
        }
        let scan = scan_frames(&file, path, &header, header.index_offset)?;
        if let Some(stop) = scan.stop {
            return corrupt(stop.offset, stop.what);
        }
        if scan.committed != scan.frames.len() {
            return corrupt(
                frame_offset(scan.frames.len().saturating_sub(1)),
                "the last frame of a sealed segment is not a commit frame".into(),
            );
        }
        let last_frame_no = scan.frames.last().map(|f| f.frame_no);
        if scan.frames.is_empty()
            || last_frame_no != Some(header.last_committed_frame_no)
            || scan.size_after != header.size_after
        {
            return corrupt(
                0,
                format!(
                    "header says last commit is frame {} with {} pages, frames end at {:?} with {}",
                    header.last_committed_frame_no,
                    header.size_after,
                    last_frame_no,
                    scan.size_after
                ),
            );
        }
        let mut blob = vec![0; header.index_size as usize];
        file.read_exact_at(&mut blob, header.index_offset)
            .map_err(|e| Error::io(path, e))?;
        // The index is rebuilt from the frames and compared byte for byte with the stored one:
        // bytes from disk are never parsed as an fst.
        let mut newest: HashMap<u32, u64> = HashMap::new();
        for (position, frame) in scan.frames.iter().enumerate() {
            newest.insert(frame.page_no, frame_offset(position));
        }
        let mut entries: Vec<(u32, u64)> = newest.into_iter().collect();
        entries.sort_unstable();
        let index = PageIndex::build(&entries, path)?;
        index.check_matches(&blob, path, header.index_offset)?;
        Ok(SealedSegment {
            path: path.to_path_buf(),
            file: Arc::new(file),
            header,
            index,
        })
    }

    /// Returns the segment's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Makes the segment's bytes durable (fsync), for a segment whose seal is written.
    pub fn sync(&self) -> Result<()> {
        self.file.sync_data().map_err(|e| Error::io(&self.path, e))
    }

    /// Writes the seal `CurrentSegment::seal_in_memory` left to its caller: the page index
    /// after the frames, the file cut right after it, then the sealed header; then fsyncs
    /// once. Returns the index's encoded size. Writing the same bytes again does no harm, but
    /// a failed fsync is no evidence of what the disk holds: callers treat it as the end of
    /// this log (see `CurrentSegment::seal` for what a crash at any point leaves).
    #[tracing::instrument(skip(self), fields(path = %self.path.display()), level = "debug")]
    pub fn persist(&self) -> Result<u64> {
        let index_bytes = self.index.encode();
        let index_size = index_bytes.len() as u64;
        let index_offset = self.header.index_offset;
        let io_err = |e| Error::io(&self.path, e);
        self.file
            .write_all_at(&index_bytes, index_offset)
            .map_err(io_err)?;
        self.file
            .set_len(index_offset + index_size)
            .map_err(io_err)?;
        let header = SegmentHeader {
            index_size,
            ..self.header
        };
        self.file
            .write_all_at(&header.encode(), 0)
            .map_err(io_err)?;
        self.file.sync_data().map_err(io_err)?;
        Ok(index_size)
    }

    /// Returns the segment with `index_size` in its header (what `persist` wrote).
    pub(crate) fn with_index_size(mut self, index_size: u64) -> Self {
        self.header.index_size = index_size;
        self
    }

    /// Returns the segment's header.
    pub fn header(&self) -> &SegmentHeader {
        &self.header
    }

    /// Returns the page index.
    pub fn index(&self) -> &PageIndex {
        &self.index
    }

    /// Returns the frame_no of the first frame.
    pub fn start_frame_no(&self) -> u64 {
        self.header.start_frame_no
    }

    /// Returns the frame_no of the last frame (a commit frame).
    pub fn last_committed_frame_no(&self) -> u64 {
        self.header.last_committed_frame_no
    }

    /// Returns the database size in pages after the segment's last commit.
    pub fn size_after(&self) -> u32 {
        self.header.size_after
    }

    /// Returns the number of frames.
    pub fn frame_count(&self) -> u64 {
        self.header.frame_count
    }

    /// Reads the newest version of `page_no` in this segment into `page` (`PAGE_SIZE` bytes).
    /// Returns false if the segment does not hold the page.
    #[tracing::instrument(level = "trace", skip_all, fields(path = %self.path.display()))]
    pub fn read_page(&self, page_no: u32, page: &mut [u8]) -> Result<bool> {
        check_page_buffer(page, &self.path)?;
        let Some(offset) = self.index.get(page_no) else {
            return Ok(false);
        };
        self.file
            .read_exact_at(page, offset + FRAME_HEADER_SIZE as u64)
            .map_err(|e| Error::io(&self.path, e))?;
        Ok(true)
    }

    /// Reads the whole frame at byte `offset` (as found in the index) into `frame`
    /// (`FRAME_SIZE` bytes) and checks its checksum against the previous frame's, so a frame
    /// read on its own is verified too. Returns its header.
    pub(crate) fn read_verified_frame(&self, offset: u64, frame: &mut [u8]) -> Result<FrameHeader> {
        let previous = if offset == frame_offset(0) {
            self.header.salt
        } else {
            let mut checksum = [0; 4];
            self.file
                .read_exact_at(&mut checksum, offset - FRAME_SIZE as u64)
                .map_err(|e| Error::io(&self.path, e))?;
            u32::from_le_bytes(checksum)
        };
        self.file
            .read_exact_at(frame, offset)
            .map_err(|e| Error::io(&self.path, e))?;
        FrameHeader::decode_verified(previous, frame)
            .ok_or_else(|| Error::corrupt(&self.path, offset, "frame checksum mismatch"))
    }

    /// Returns the pages whose newest version in this segment has a frame_no above `after`,
    /// in page order: what a replica at `after` lacks of this segment. A frame's frame_no
    /// follows from its place in the segment (checked at open), so nothing is read from disk
    /// and a frame header damaged since cannot hide a page. In a segment whose frame numbers
    /// may skip (`SEGMENT_FRAME_UNORDERED`) place says nothing, so every page is counted in: a
    /// page sent that a replica has is harmless, one missed is not.
    pub fn pages_written_after(&self, after: u64) -> Vec<u32> {
        if self.last_committed_frame_no() <= after {
            return Vec::new();
        }
        let unordered = self.header.flags & SEGMENT_FRAME_UNORDERED != 0;
        let frame_no_at =
            |offset: u64| self.start_frame_no() + (offset - frame_offset(0)) / FRAME_SIZE as u64;
        self.index
            .entries()
            .into_iter()
            .filter(|&(_, offset)| unordered || frame_no_at(offset) > after)
            .map(|(page_no, _)| page_no)
            .collect()
    }

    /// Returns an iterator over every frame of the segment, in log order.
    pub fn frames(&self) -> Frames<'_, F> {
        Frames {
            segment: self,
            position: 0,
            previous: self.header.salt,
        }
    }
}

/// Iterator over the frames of a sealed segment, each checked against the running checksum.
#[derive(Debug)]
pub struct Frames<'a, F> {
    /// The segment being read.
    segment: &'a SealedSegment<F>,
    /// Position of the next frame.
    position: usize,
    /// Checksum of the previous frame.
    previous: u32,
}

impl<F: FileExt> Iterator for Frames<'_, F> {
    type Item = Result<Frame>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.position as u64 >= self.segment.header.frame_count {
            return None;
        }
        let offset = frame_offset(self.position);
        let mut buf = vec![0; FRAME_SIZE];
        if let Err(e) = self.segment.file.read_exact_at(&mut buf, offset) {
            self.position = usize::MAX;
            return Some(Err(Error::io(&self.segment.path, e)));
        }
        let Some(header) = FrameHeader::decode_verified(self.previous, &buf) else {
            self.position = usize::MAX;
            return Some(Err(Error::corrupt(
                &self.segment.path,
                offset,
                "frame checksum mismatch",
            )));
        };
        self.previous = header.checksum;
        self.position += 1;
        buf.drain(..FRAME_HEADER_SIZE);
        Some(Ok(Frame {
            header,
            page: buf.into_boxed_slice(),
        }))
    }
}
