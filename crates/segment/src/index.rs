//! The page index: an fst map from page_no (4 big-endian bytes, so keys sort by page) to the byte
//! offset of the newest frame of that page, wrapped in a checksummed envelope.
//!
//! Layout: magic `u64` | version `u32` | reserved `u32` | fst length `u64` | fst bytes | CRC32 of
//! everything before it. Sealed segments store it after their frames; compacted segments carry it
//! as a separate byte string (the backend stores it as its own object).
//!
//! In memory an index is its sorted entries (lookups by binary search); the fst is built only
//! when the index is encoded. Building an fst costs far more than the lookups it would save
//! (the fst crate allocates and fills about a megabyte per build), and a seal on the commit
//! path builds an index but leaves its encoding to the background.

use std::path::Path;

use fst::{Map, MapBuilder, Streamer};

use crate::error::{Error, Result};

/// Magic number of a page index ("LSQLWIDX").
pub const INDEX_MAGIC: u64 = u64::from_le_bytes(*b"LSQLWIDX");
/// Format version of page indexes written by this build.
pub const INDEX_VERSION: u32 = 1;
/// Bytes before the fst: magic, version, reserved, fst length.
const INDEX_PREFIX_SIZE: usize = 24;
/// Bytes after the fst: the CRC32.
const INDEX_SUFFIX_SIZE: usize = 4;

/// Upper bound of the fst bytes one page adds. A 4-byte key adds at most 4 transitions and 4
/// nodes to the automaton; a transition costs at most 17 bytes (input byte, 8-byte output,
/// 8-byte address delta), a node at most 11 (state, sizes and count bytes, 8-byte final output),
/// and a node of more than 32 transitions a 256-byte lookup table, which at least 33 of those
/// transitions share: 4 * 17 + 4 * 11 + 4 * 256 / 33 < 144.
const MAX_FST_BYTES_PER_PAGE: u64 = 144;
/// Upper bound of the fst bytes that do not depend on the pages: its header (version, type),
/// footer (length, root address, checksum) and root node.
const MAX_FST_FIXED_BYTES: u64 = 64;

/// A validated, immutable map from page_no to frame offset.
#[derive(Clone)]
pub struct PageIndex {
    /// `(page_no, offset)` by strictly increasing page_no (each page_no non-zero).
    entries: Vec<(u32, u64)>,
}

impl std::fmt::Debug for PageIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PageIndex")
            .field("pages", &self.entries.len())
            .finish()
    }
}

impl PageIndex {
    /// Builds an index from `(page_no, offset)` pairs sorted by strictly increasing page_no.
    /// `path` names the segment the index is for, in errors.
    /// Page 0 is refused too (pages are numbered from 1).
    pub fn build(entries: &[(u32, u64)], path: &Path) -> Result<Self> {
        let mut previous = 0;
        for &(page_no, _) in entries {
            if page_no <= previous {
                return Err(Error::invalid_state(
                    path,
                    format!("cannot index page {page_no} after page {previous}"),
                ));
            }
            previous = page_no;
        }
        Ok(PageIndex {
            entries: entries.to_vec(),
        })
    }

    /// Returns the fst of the index: keys are big-endian page numbers.
    fn fst_bytes(&self) -> Vec<u8> {
        let mut builder = MapBuilder::memory();
        for &(page_no, offset) in &self.entries {
            // `build` checked the order: an fst insert cannot fail.
            if builder.insert(page_no.to_be_bytes(), offset).is_err() {
                unreachable!("page index entries are sorted and unique");
            }
        }
        match builder.into_inner() {
            Ok(bytes) => bytes,
            // Writing to memory cannot fail.
            Err(e) => unreachable!("an in-memory fst build failed: {e}"),
        }
    }

    /// Returns the offset of the newest frame of `page_no`, if the index holds the page.
    pub fn get(&self, page_no: u32) -> Option<u64> {
        self.entries
            .binary_search_by_key(&page_no, |&(page, _)| page)
            .ok()
            .map(|at| self.entries[at].1)
    }

    /// Returns the number of pages in the index.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Returns true if the index holds no page.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Returns every `(page_no, offset)` pair in increasing page order.
    pub fn entries(&self) -> Vec<(u32, u64)> {
        self.entries.clone()
    }

    /// Returns an upper bound of the length of `encode()`'s output for an index of `pages`
    /// pages (saturating): a stored index longer than that for the pages it can hold is corrupt,
    /// and reading one stops there.
    pub fn max_encoded_len(pages: u64) -> u64 {
        pages
            .saturating_mul(MAX_FST_BYTES_PER_PAGE)
            .saturating_add(MAX_FST_FIXED_BYTES + (INDEX_PREFIX_SIZE + INDEX_SUFFIX_SIZE) as u64)
    }

    /// Returns the index in its checksummed envelope.
    pub fn encode(&self) -> Vec<u8> {
        let fst = self.fst_bytes();
        let mut buf = Vec::with_capacity(INDEX_PREFIX_SIZE + fst.len() + INDEX_SUFFIX_SIZE);
        buf.extend_from_slice(&INDEX_MAGIC.to_le_bytes());
        buf.extend_from_slice(&INDEX_VERSION.to_le_bytes());
        buf.extend_from_slice(&0u32.to_le_bytes());
        buf.extend_from_slice(&(fst.len() as u64).to_le_bytes());
        buf.extend_from_slice(&fst);
        let crc = crc32fast::hash(&buf);
        buf.extend_from_slice(&crc.to_le_bytes());
        buf
    }

    /// Decodes and validates an index read from `path` at `offset`: envelope, checksum, fst
    /// structure, that every key is a non-zero 4-byte page number, and that the fst is exactly the
    /// one `build` makes for its entries.
    ///
    /// The fst crate does not promise to reject malformed bytes without panicking (the fuzzer
    /// found such inputs behind a valid checksum), so reading the entries is done under
    /// `catch_unwind` and a panic there is reported as `Corrupt`. Once the bytes are known to be
    /// exactly what `build` produces, every later lookup runs on a well-formed fst.
    pub fn decode(blob: &[u8], path: &Path, offset: u64) -> Result<Self> {
        let bad = |what: String| Error::corrupt(path, offset, what);
        let fst = Self::check_envelope(blob, path, offset)?;
        let entries = std::panic::catch_unwind(|| Self::read_entries(fst))
            .map_err(|_| bad("page index is not a valid fst (its decoder panicked)".into()))?
            .map_err(bad)?;
        let index = Self::build(&entries, path)?;
        if index.fst_bytes() != fst {
            return Err(bad("page index is not in canonical form".into()));
        }
        Ok(index)
    }

    /// Decodes the index in `blob` if it is exactly the canonical encoding of `self` (the
    /// index rebuilt from the data it describes); otherwise returns the decoding error, or
    /// `Corrupt` if `blob` is a valid index of other pages. Never parses an fst from `blob`
    /// when it matches.
    pub fn check_matches(&self, blob: &[u8], path: &Path, offset: u64) -> Result<()> {
        if blob == self.encode() {
            return Ok(());
        }
        Self::decode(blob, path, offset)?;
        Err(Error::corrupt(
            path,
            offset,
            "page index does not match the frames it indexes",
        ))
    }

    /// Validates the envelope around an fst and returns the fst bytes.
    fn check_envelope<'a>(blob: &'a [u8], path: &Path, offset: u64) -> Result<&'a [u8]> {
        let bad = |what: String| Error::corrupt(path, offset, what);
        if blob.len() < INDEX_PREFIX_SIZE + INDEX_SUFFIX_SIZE {
            return Err(bad(format!(
                "page index is {} bytes, too short",
                blob.len()
            )));
        }
        let mut magic = [0; 8];
        magic.copy_from_slice(&blob[0..8]);
        let magic = u64::from_le_bytes(magic);
        if magic != INDEX_MAGIC {
            return Err(Error::BadMagic {
                path: path.into(),
                offset,
                expected: INDEX_MAGIC,
                found: magic,
            });
        }
        let mut word = [0; 4];
        word.copy_from_slice(&blob[8..12]);
        let version = u32::from_le_bytes(word);
        if version != INDEX_VERSION {
            return Err(Error::UnsupportedVersion {
                path: path.into(),
                offset,
                found: version,
                supported: INDEX_VERSION,
            });
        }
        let crc_at = blob.len() - INDEX_SUFFIX_SIZE;
        word.copy_from_slice(&blob[crc_at..]);
        if crc32fast::hash(&blob[..crc_at]) != u32::from_le_bytes(word) {
            return Err(bad("page index checksum mismatch".into()));
        }
        let mut len = [0; 8];
        len.copy_from_slice(&blob[16..24]);
        let fst_len = u64::from_le_bytes(len);
        if fst_len != (crc_at - INDEX_PREFIX_SIZE) as u64 {
            return Err(bad(format!(
                "page index says its fst is {fst_len} bytes, envelope holds {}",
                crc_at - INDEX_PREFIX_SIZE
            )));
        }
        Ok(&blob[INDEX_PREFIX_SIZE..crc_at])
    }

    /// Reads every entry of an untrusted fst. May panic inside the fst crate on malformed bytes.
    fn read_entries(fst: &[u8]) -> Result<Vec<(u32, u64)>, String> {
        let map = Map::new(fst).map_err(|e| format!("page index is not a valid fst: {e}"))?;
        let mut entries = Vec::new();
        let mut stream = map.stream();
        while let Some((key, offset)) = stream.next() {
            let page: [u8; 4] = key
                .try_into()
                .map_err(|_| format!("page index holds an invalid page key {key:?}"))?;
            let page_no = u32::from_be_bytes(page);
            if page_no == 0 {
                return Err("page index holds page 0".into());
            }
            if entries.len() >= map.len() {
                return Err(format!(
                    "page index holds more than the {} pages it says",
                    map.len()
                ));
            }
            entries.push((page_no, offset));
        }
        if entries.len() != map.len() {
            return Err(format!(
                "page index says it holds {} pages, holds {}",
                map.len(),
                entries.len()
            ));
        }
        Ok(entries)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Any set of pages with any offsets (large outputs make the largest fst) encodes
        /// within the bound a stored index is read with.
        #[test]
        fn an_encoded_index_fits_its_bound(
            pages in prop::collection::btree_map(1u32.., any::<u64>(), 0..600),
            dense in 0u32..3000,
            step in 1u64..1 << 40,
        ) {
            let sparse: Vec<(u32, u64)> = pages.into_iter().collect();
            let dense: Vec<(u32, u64)> =
                (1..=dense).map(|p| (p, u64::from(p).wrapping_mul(step))).collect();
            for entries in [sparse, dense] {
                let index = PageIndex::build(&entries, Path::new("x")).unwrap();
                let bound = PageIndex::max_encoded_len(entries.len() as u64);
                let len = index.encode().len() as u64;
                prop_assert!(len <= bound, "{len} > {bound}");
            }
        }
    }

    #[test]
    fn page_index_round_trips() {
        let entries = vec![(1, 128), (2, 4248), (70_000, 9_999_999)];
        let index = PageIndex::build(&entries, Path::new("x")).unwrap();
        let blob = index.encode();
        let decoded = PageIndex::decode(&blob, Path::new("x"), 0).unwrap();
        assert_eq!(decoded.entries(), entries);
        assert_eq!(decoded.get(2), Some(4248));
        assert_eq!(decoded.get(3), None);
    }

    #[test]
    fn every_flipped_bit_of_a_page_index_is_reported_as_corruption_at_its_offset() {
        let entries: Vec<_> = (1..200u32).map(|p| (p * 3, u64::from(p) * 4120)).collect();
        let blob = PageIndex::build(&entries, Path::new("x")).unwrap().encode();
        for bit in 0..blob.len() * 8 {
            let mut bytes = blob.clone();
            bytes[bit / 8] ^= 1 << (bit % 8);
            let err = PageIndex::decode(&bytes, Path::new("idx"), 777).unwrap_err();
            assert!(err.is_corruption(), "bit {bit}: {err}");
            assert!(err.to_string().contains("idx at offset 777"), "{err}");
        }
    }

    #[test]
    fn a_malformed_fst_behind_a_valid_checksum_is_corruption_not_a_panic() {
        // Found by the fuzzer: the fst crate panics while streaming this fst.
        let mut blob = vec![
            76, 83, 81, 76, 87, 73, 68, 88, 1, 0, 0, 0, 0, 0, 0, 0, 55, 0, 0, 0, 0, 0, 0, 0, 3, 0,
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 24, 16, 0, 0, 0, 0, 2, 1, 18, 2, 0, 192, 0,
            192, 80, 1, 17, 0, 137, 2, 0, 0, 0, 0, 0, 0, 0, 34, 0, 0, 0, 0, 0, 0, 0, 127, 194, 177,
            35, 239, 169, 178, 197,
        ];
        let crc_at = blob.len() - 4;
        let crc = crc32fast::hash(&blob[..crc_at]);
        blob[crc_at..].copy_from_slice(&crc.to_le_bytes());
        let err = PageIndex::decode(&blob, Path::new("idx"), 9).unwrap_err();
        assert!(err.is_corruption(), "{err}");
        assert!(err.to_string().contains("idx at offset 9"), "{err}");
    }

    #[test]
    fn a_valid_index_of_other_pages_does_not_match() {
        let ours = PageIndex::build(&[(1, 128)], Path::new("x")).unwrap();
        let other = PageIndex::build(&[(2, 128)], Path::new("x")).unwrap();
        ours.check_matches(&ours.encode(), Path::new("x"), 0)
            .unwrap();
        let err = ours
            .check_matches(&other.encode(), Path::new("x"), 5)
            .unwrap_err();
        assert!(err.to_string().contains("does not match"), "{err}");
    }

    #[test]
    fn unsorted_entries_are_refused() {
        let err = PageIndex::build(&[(5, 0), (4, 0)], Path::new("x")).unwrap_err();
        assert!(matches!(err, Error::InvalidState { .. }), "{err}");
    }
}
