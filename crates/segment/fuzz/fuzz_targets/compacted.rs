//! Fuzz target: arbitrary bytes read as compacted data (the frame stream a backend downloads),
//! through the sans-IO `CompactedDecoder` (fed one frame's worth at a time, as the backends do)
//! and through `CompactedReader` (over a reader that returns short reads), once as they are and
//! once with their checksums recomputed so mutations reach the structural checks.
//!
//! Asserts: no panic; every frame either accepts is verified here again, independently (running
//! checksum, increasing pages inside the database, frame_no in the header's range, the last
//! flag on the last frame only, no commit size); both accept the same frames and agree on the
//! outcome; a stream accepted to its end holds exactly the frames its header announces.

#![no_main]

mod checksums;

use std::io::Read;

use checksums::fix_compacted_checksums;
use libfuzzer_sys::fuzz_target;
use libsql_wal_segment::format::{
    running_checksum, CompactedHeader, FrameHeader, COMPACTED_HEADER_SIZE, FRAME_LAST, FRAME_SIZE,
    PAGE_SIZE,
};
use libsql_wal_segment::{CompactedDecoder, CompactedReader};

/// How a stream ended.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// The header was refused (or the data is shorter than one).
    BadHeader,
    /// Every announced frame was accepted and nothing followed.
    Complete,
    /// A frame, a short tail or trailing bytes were refused after the accepted frames.
    Refused,
}

/// Checks a frame the decoder accepted, independently of it: `previous` is the checksum of
/// the frame before (or the header's seed), `previous_page` its page (0 before the first),
/// `position` its place in the stream (from 0).
fn verify_accepted(
    header: &CompactedHeader,
    frame: &[u8],
    accepted: &FrameHeader,
    previous: u32,
    previous_page: u32,
    position: u32,
) {
    assert_eq!(frame.len(), FRAME_SIZE, "an accepted frame is whole");
    assert_eq!(
        FrameHeader::decode(frame),
        *accepted,
        "the header returned is the frame's"
    );
    assert_eq!(
        running_checksum(previous, &frame[4..]),
        accepted.checksum,
        "an accepted frame continues the checksum chain"
    );
    assert!(
        position < header.frame_count,
        "no more frames than the header announces"
    );
    assert!(accepted.page_no > previous_page, "pages increase");
    assert!(
        accepted.page_no <= header.size_after,
        "pages are inside the database"
    );
    assert!(
        (header.start_frame_no..=header.end_frame_no).contains(&accepted.frame_no),
        "frame_no inside the header's range"
    );
    let last = position + 1 == header.frame_count;
    assert_eq!(
        accepted.flags,
        if last { FRAME_LAST } else { 0 },
        "the last flag"
    );
    assert_eq!(
        accepted.size_after, 0,
        "compacted frames carry no commit size"
    );
}

/// Runs the decoder over `data`; returns the frames it accepted and how the stream ended.
fn decode(data: &[u8]) -> (Vec<FrameHeader>, Outcome) {
    let Some((encoded, mut rest)) = data.split_first_chunk::<COMPACTED_HEADER_SIZE>() else {
        return (Vec::new(), Outcome::BadHeader);
    };
    let Ok(mut decoder) = CompactedDecoder::new(encoded, "fuzz") else {
        return (Vec::new(), Outcome::BadHeader);
    };
    let header = *decoder.header();
    let mut previous = CompactedHeader::checksum_seed(encoded);
    let mut previous_page = 0;
    let mut accepted = Vec::new();
    loop {
        if decoder.is_complete() {
            let outcome = if rest.is_empty() {
                let expected = COMPACTED_HEADER_SIZE as u64
                    + u64::from(header.frame_count) * FRAME_SIZE as u64;
                assert_eq!(
                    data.len() as u64,
                    expected,
                    "a complete stream is exactly its frames"
                );
                Outcome::Complete
            } else {
                assert!(decoder.trailing_bytes().is_corruption());
                Outcome::Refused
            };
            return (accepted, outcome);
        }
        let (frame, tail) = rest.split_at(rest.len().min(FRAME_SIZE));
        rest = tail;
        match decoder.decode_frame(frame) {
            Ok(frame_header) => {
                verify_accepted(
                    &header,
                    frame,
                    &frame_header,
                    previous,
                    previous_page,
                    accepted.len() as u32,
                );
                previous = frame_header.checksum;
                previous_page = frame_header.page_no;
                accepted.push(frame_header);
                assert_eq!(
                    decoder.next_offset(),
                    (COMPACTED_HEADER_SIZE + accepted.len() * FRAME_SIZE) as u64
                );
            }
            Err(e) => {
                assert!(e.is_corruption(), "bad bytes are corruption: {e}");
                return (accepted, Outcome::Refused);
            }
        }
    }
}

/// A reader that returns at most `step` bytes per call, so `CompactedReader` must assemble
/// frames from short reads as it would from a socket.
struct ShortReads<'a> {
    data: &'a [u8],
    step: usize,
}

impl Read for ShortReads<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.step).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// Runs the reader over `data`; returns the frames it accepted and how the stream ended.
fn read(data: &[u8], step: usize) -> (Vec<FrameHeader>, Outcome) {
    let Ok(mut reader) = CompactedReader::new(ShortReads { data, step }, "fuzz") else {
        return (Vec::new(), Outcome::BadHeader);
    };
    let mut page = vec![0; PAGE_SIZE];
    let mut accepted = Vec::new();
    loop {
        match reader.next_frame(&mut page) {
            Ok(Some(frame_header)) => accepted.push(frame_header),
            Ok(None) => return (accepted, Outcome::Complete),
            Err(e) => {
                assert!(e.is_corruption(), "bad bytes are corruption: {e}");
                return (accepted, Outcome::Refused);
            }
        }
    }
}

fn check(data: &[u8]) {
    let decoded = decode(data);
    // 1 to 8192 bytes per read, chosen by the input.
    let step = 1 + usize::from(data.last().copied().unwrap_or(0)) * 32;
    let read = read(data, step);
    assert_eq!(decoded, read, "the decoder and the reader agree");
}

fuzz_target!(|data: &[u8]| {
    check(data);
    let mut fixed = data.to_vec();
    fix_compacted_checksums(&mut fixed);
    check(&fixed);
});
