//! `SegmentKey`: the name of a stored segment, and the one place where key strings are built and
//! parsed. `{u64::MAX - end_frame_no:020}-{start_frame_no:020}-{timestamp_ms:020}`, so that keys
//! in lexicographic order (the order object stores list in) go from the newest-ending segment to
//! the oldest, and among segments ending at the same frame, from the widest (lowest start) first.

use std::fmt;
use std::str::FromStr;

use libsql_wal_segment::format::CompactedHeader;

/// Length of a key string: three 20-digit numbers and two dashes.
pub const SEGMENT_KEY_LEN: usize = 62;

/// Identifies a stored segment by the frames it covers and when it was sealed.
///
/// `Ord` is the order of the key strings: descending `end_frame_no`, then ascending
/// `start_frame_no`, then ascending timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SegmentKey {
    /// First frame_no covered.
    pub start_frame_no: u64,
    /// Last frame_no covered (a commit frame).
    pub end_frame_no: u64,
    /// When the newest frames of the segment were sealed, in milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
}

impl SegmentKey {
    /// Returns true if the segment covers `frame_no`.
    pub fn includes(&self, frame_no: u64) -> bool {
        (self.start_frame_no..=self.end_frame_no).contains(&frame_no)
    }

    /// Returns the string to list after (`start-after`) so that the first key listed is the
    /// newest-ending segment whose `end_frame_no <= frame_no`, the widest of those first.
    pub fn list_after_for_end_at_most(frame_no: u64) -> String {
        // Every key of a segment ending at `frame_no` starts with this prefix followed by '-',
        // so it sorts after the bare prefix; keys ending later sort before it.
        format!("{:020}", u64::MAX - frame_no)
    }
}

impl SegmentKey {
    /// The key of the segment that merges `sources` (a run of the chain, oldest first): from
    /// the first's start to the last's end, sealed when the last was, as `merge` makes its
    /// header. `None` for no sources.
    pub fn merging(sources: &[SegmentKey]) -> Option<SegmentKey> {
        let (first, last) = (sources.first()?, sources.last()?);
        Some(SegmentKey {
            start_frame_no: first.start_frame_no,
            end_frame_no: last.end_frame_no,
            timestamp_ms: last.timestamp_ms,
        })
    }
}

impl From<&CompactedHeader> for SegmentKey {
    fn from(header: &CompactedHeader) -> Self {
        SegmentKey {
            start_frame_no: header.start_frame_no,
            end_frame_no: header.end_frame_no,
            timestamp_ms: header.timestamp_ms,
        }
    }
}

impl fmt::Display for SegmentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:020}-{:020}-{:020}",
            u64::MAX - self.end_frame_no,
            self.start_frame_no,
            self.timestamp_ms
        )
    }
}

impl PartialOrd for SegmentKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for SegmentKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other
            .end_frame_no
            .cmp(&self.end_frame_no)
            .then(self.start_frame_no.cmp(&other.start_frame_no))
            .then(self.timestamp_ms.cmp(&other.timestamp_ms))
    }
}

/// Why a string is not a segment key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid segment key {key:?}: {why}")]
pub struct InvalidSegmentKey {
    /// The string that was parsed.
    pub key: String,
    /// What is wrong with it.
    pub why: &'static str,
}

impl FromStr for SegmentKey {
    type Err = InvalidSegmentKey;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = |why| InvalidSegmentKey {
            key: s.chars().take(100).collect(),
            why,
        };
        if s.len() != SEGMENT_KEY_LEN {
            return Err(invalid("wrong length"));
        }
        let mut parts = s.split('-');
        let mut number = || -> Result<u64, InvalidSegmentKey> {
            let part = parts.next().ok_or_else(|| invalid("missing part"))?;
            if part.len() != 20 || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid("each part must be 20 digits"));
            }
            part.parse().map_err(|_| invalid("number out of range"))
        };
        let end_frame_no = u64::MAX - number()?;
        let start_frame_no = number()?;
        let timestamp_ms = number()?;
        if start_frame_no == 0 || start_frame_no > end_frame_no {
            return Err(invalid("start_frame_no must be in 1..=end_frame_no"));
        }
        Ok(SegmentKey {
            start_frame_no,
            end_frame_no,
            timestamp_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn key() -> impl Strategy<Value = SegmentKey> {
        (1..u64::MAX, 0..u64::MAX, any::<u64>()).prop_map(|(start, len, timestamp_ms)| SegmentKey {
            start_frame_no: start,
            end_frame_no: start.saturating_add(len),
            timestamp_ms,
        })
    }

    proptest! {
        #[test]
        fn display_and_from_str_round_trip(key in key()) {
            let text = key.to_string();
            prop_assert_eq!(text.len(), SEGMENT_KEY_LEN);
            prop_assert_eq!(text.parse::<SegmentKey>().unwrap(), key);
        }

        #[test]
        fn ord_is_the_order_of_the_key_strings(a in key(), b in key()) {
            prop_assert_eq!(a.cmp(&b), a.to_string().cmp(&b.to_string()));
        }

        /// Keys stand for a namespace's segments, originals and compacted (overlapping) ones;
        /// listing after `list_after_for_end_at_most(n)` in string order must yield first the
        /// segment a brute-force search picks: greatest end <= n, then lowest start.
        #[test]
        fn list_after_finds_the_newest_segment_ending_at_or_before_n(
            segments in prop::collection::vec((1u64..200, 0u64..50, 0u64..1000), 1..40),
            n in 0u64..260,
        ) {
            let keys: Vec<SegmentKey> = segments
                .iter()
                .map(|&(start, len, timestamp_ms)| SegmentKey {
                    start_frame_no: start,
                    end_frame_no: start + len,
                    timestamp_ms,
                })
                .collect();
            let mut listed: Vec<String> = keys.iter().map(ToString::to_string).collect();
            listed.sort();
            let after = SegmentKey::list_after_for_end_at_most(n);
            let found = listed
                .iter()
                .find(|k| **k > after)
                .map(|k| k.parse::<SegmentKey>().unwrap());
            let expected = keys
                .iter()
                .filter(|k| k.end_frame_no <= n)
                .min_by_key(|k| (std::cmp::Reverse(k.end_frame_no), k.start_frame_no, k.timestamp_ms))
                .copied();
            prop_assert_eq!(found, expected);
        }
    }

    #[test]
    fn malformed_keys_are_refused_with_a_reason() {
        for bad in [
            "",
            "abc",
            "18446744073709551605-00000000000000000001-0000000000000000000x",
            "18446744073709551605-00000000000000000000-00000000000000000001",
            "18446744073709551614-00000000000000000005-00000000000000000001",
            "18446744073709551605+00000000000000000001-00000000000000000001",
        ] {
            let err = bad.parse::<SegmentKey>().unwrap_err();
            assert!(err.to_string().contains("invalid segment key"), "{err}");
        }
        let ok: SegmentKey = "18446744073709551605-00000000000000000001-00000000000000000007"
            .parse()
            .unwrap();
        assert_eq!(
            ok,
            SegmentKey {
                start_frame_no: 1,
                end_frame_no: 10,
                timestamp_ms: 7
            }
        );
    }
}
