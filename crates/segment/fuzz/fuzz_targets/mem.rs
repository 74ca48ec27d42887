//! An in-memory `FileExt` for the fuzz targets, and the checksum fix-up of segment files (see
//! `checksums` for the parts shared with compacted data).

use std::io;
use std::sync::RwLock;

use libsql_wal_segment::format::SEGMENT_HEADER_SIZE;
use libsql_wal_segment::FileExt;

use crate::checksums::{fix_crc, fix_frames};

/// A file held in memory.
pub struct MemFile(pub RwLock<Vec<u8>>);

impl FileExt for MemFile {
    fn size(&self) -> io::Result<u64> {
        Ok(self
            .0
            .read()
            .map_err(|_| io::Error::other("poisoned"))?
            .len() as u64)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut data = self.0.write().map_err(|_| io::Error::other("poisoned"))?;
        data.resize(len as usize, 0);
        Ok(())
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut data = self.0.write().map_err(|_| io::Error::other("poisoned"))?;
        let end = offset as usize + buf.len();
        if data.len() < end {
            data.resize(end, 0);
        }
        data[offset as usize..end].copy_from_slice(buf);
        Ok(())
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let data = self.0.read().map_err(|_| io::Error::other("poisoned"))?;
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::UnexpectedEof)?;
        let end = start
            .checked_add(buf.len())
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        if end > data.len() {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.copy_from_slice(&data[start..end]);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        Ok(())
    }
}

/// Recomputes every checksum of `data` read as a segment file: header CRC, frame chain, and the
/// CRC of an index envelope found where the header says.
pub fn fix_segment_checksums(data: &mut [u8]) {
    if data.len() < SEGMENT_HEADER_SIZE {
        return;
    }
    fix_crc(&mut data[..SEGMENT_HEADER_SIZE]);
    let salt = u32::from_le_bytes([data[64], data[65], data[66], data[67]]);
    let mut index = [0; 16];
    index.copy_from_slice(&data[48..64]);
    let index_offset = u64::from_le_bytes(index[..8].try_into().unwrap_or([0; 8])) as usize;
    let index_size = u64::from_le_bytes(index[8..].try_into().unwrap_or([0; 8])) as usize;
    let frames_end = if index_offset > SEGMENT_HEADER_SIZE && index_offset <= data.len() {
        index_offset
    } else {
        data.len()
    };
    fix_frames(&mut data[..frames_end], SEGMENT_HEADER_SIZE, salt);
    if let Some(end) = index_offset.checked_add(index_size) {
        if index_offset >= SEGMENT_HEADER_SIZE && end <= data.len() {
            fix_crc(&mut data[index_offset..end]);
        }
    }
}
