//! The libSQL footer: 32 bytes written after the last page of a checkpointed database file, so
//! the file itself records up to which frame of which log it holds. SQLite ignores it: it reads
//! the database size from page 1's header.
//!
//! Layout (little-endian): magic `u64` | version `u32` | CRC32 of the rest `u32` |
//! replication index `u64` (last frame_no copied in) | ... log id, 16 bytes, spans the end.

use std::io;

use libsql_wal_segment::format::PAGE_SIZE;
use libsql_wal_segment::FileExt;
use uuid::Uuid;

/// Magic number of the footer ("LIBSQLFT").
pub const FOOTER_MAGIC: u64 = u64::from_le_bytes(*b"LIBSQLFT");
/// Version of the footer format.
pub const FOOTER_VERSION: u32 = 1;
/// Size of the footer.
pub const FOOTER_SIZE: usize = 40;

/// What a checkpointed database file records about its log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footer {
    /// The last frame_no copied into the file.
    pub replication_index: u64,
    /// The log the frames came from.
    pub log_id: Uuid,
}

impl Footer {
    /// Returns the footer's bytes.
    pub fn encode(&self) -> [u8; FOOTER_SIZE] {
        let mut buf = [0; FOOTER_SIZE];
        buf[0..8].copy_from_slice(&FOOTER_MAGIC.to_le_bytes());
        buf[8..12].copy_from_slice(&FOOTER_VERSION.to_le_bytes());
        buf[16..24].copy_from_slice(&self.replication_index.to_le_bytes());
        buf[24..40].copy_from_slice(self.log_id.as_bytes());
        let crc = crc(&buf);
        buf[12..16].copy_from_slice(&crc.to_le_bytes());
        buf
    }

    /// Decodes a footer; `None` if the bytes are not a valid footer of this version.
    pub fn decode(buf: &[u8]) -> Option<Self> {
        if buf.len() != FOOTER_SIZE {
            return None;
        }
        let word = |at: usize| {
            let mut bytes = [0; 4];
            bytes.copy_from_slice(&buf[at..at + 4]);
            u32::from_le_bytes(bytes)
        };
        let mut magic = [0; 8];
        magic.copy_from_slice(&buf[0..8]);
        if u64::from_le_bytes(magic) != FOOTER_MAGIC
            || word(8) != FOOTER_VERSION
            || word(12) != crc(buf)
        {
            return None;
        }
        let mut index = [0; 8];
        index.copy_from_slice(&buf[16..24]);
        let mut log_id = [0; 16];
        log_id.copy_from_slice(&buf[24..40]);
        Some(Footer {
            replication_index: u64::from_le_bytes(index),
            log_id: Uuid::from_bytes(log_id),
        })
    }
}

/// CRC32 of the footer without its checksum field.
fn crc(buf: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&buf[0..12]);
    hasher.update(&buf[16..]);
    hasher.finalize()
}

/// Ends a database file of `pages` pages with `footer`: drops what follows the pages (pages past
/// the database size, an old footer), then writes the footer after the last page. The caller
/// syncs. The checkpointer and restore both finish a database file with it.
pub(crate) fn write_after_pages<F: FileExt>(db: &F, pages: u32, footer: &Footer) -> io::Result<()> {
    let pages_end = u64::from(pages) * PAGE_SIZE as u64;
    db.set_len(pages_end + FOOTER_SIZE as u64)?;
    db.write_all_at(&footer.encode(), pages_end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn footer_round_trips_and_rejects_damage() {
        let footer = Footer {
            replication_index: 12345,
            log_id: Uuid::from_u128(99),
        };
        let bytes = footer.encode();
        assert_eq!(Footer::decode(&bytes), Some(footer));
        for byte in 0..FOOTER_SIZE {
            let mut damaged = bytes;
            damaged[byte] ^= 4;
            assert_eq!(Footer::decode(&damaged), None, "byte {byte}");
        }
        assert_eq!(Footer::decode(&bytes[..10]), None);
    }
}
