//! The checksum fix-up that lets mutated inputs get past the CRCs and reach the decoders'
//! structural checks: header CRCs and the running checksums that chain frames.

use libsql_wal_segment::format::{
    FrameHeader, COMPACTED_HEADER_SIZE, FRAME_HEADER_SIZE, FRAME_SIZE,
};

/// Recomputes the CRC32 in the last 4 bytes of `buf` over the bytes before it.
pub fn fix_crc(buf: &mut [u8]) {
    if buf.len() >= 4 {
        let at = buf.len() - 4;
        let crc = crc32fast::hash(&buf[..at]);
        buf[at..].copy_from_slice(&crc.to_le_bytes());
    }
}

/// Re-chains the running checksums of the whole frames of `data` from `start`, continued from
/// `previous`.
pub fn fix_frames(data: &mut [u8], start: usize, mut previous: u32) {
    let mut offset = start;
    while offset + FRAME_SIZE <= data.len() {
        let frame = &mut data[offset..offset + FRAME_SIZE];
        let header = FrameHeader::decode(frame);
        let (encoded, checksum) = header.encode(previous, &frame[FRAME_HEADER_SIZE..]);
        frame[..FRAME_HEADER_SIZE].copy_from_slice(&encoded);
        previous = checksum;
        offset += FRAME_SIZE;
    }
}

/// Recomputes every checksum of `data` read as compacted data.
pub fn fix_compacted_checksums(data: &mut [u8]) {
    if data.len() < COMPACTED_HEADER_SIZE {
        return;
    }
    fix_crc(&mut data[..COMPACTED_HEADER_SIZE]);
    let seed = u32::from_le_bytes([data[76], data[77], data[78], data[79]]);
    fix_frames(data, COMPACTED_HEADER_SIZE, seed);
}
