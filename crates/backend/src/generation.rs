//! Generations: which log wrote which objects of a namespace, and which log may write it now.
//!
//! A namespace's history in the bucket is a sequence of numbered generations. Each one is a
//! record object, `{ns}/generations/{number:020}/generation`, created with a conditional write
//! (`Backend::put_bytes_if_absent`), so that of two writers claiming the next number exactly one
//! wins. A generation is either a log (its id, its first frame_no, and the point of an older
//! generation it continues from, if any) or a deletion mark. Its segments live under its own
//! directory, `{ns}/generations/{number:020}/segments/` and `.../indexes/`, so no two logs ever
//! share an object, and nothing a writer of one generation does can touch another's.
//!
//! The newest generation is the namespace's current history: restores follow it (and its
//! parents, each up to the point the next one continues from), and the one writer that created
//! it owns it. A writer whose generation is no longer the newest has been fenced off.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::namespace::NamespaceName;

/// Digits of a generation number in object keys (zero-padded, so keys sort by number).
pub const GENERATION_DIGITS: usize = 20;

/// One log of a namespace in the bucket: where its segments go.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Generation {
    /// The namespace.
    pub namespace: NamespaceName,
    /// The generation's number (the writer epoch: higher is newer).
    pub number: u64,
    /// The log whose segments it holds (every segment header names it).
    pub log_id: Uuid,
}

impl fmt::Display for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} generation {}", self.namespace, self.number)
    }
}

impl Generation {
    /// Returns the directory of the generation's objects, ending with `/`.
    pub fn prefix(&self) -> String {
        generation_prefix(&self.namespace, self.number)
    }
}

/// The point of an older generation a log continues from: its frames up to `frame_no` are the
/// start of this log's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForkPoint {
    /// The older generation's number.
    pub generation: u64,
    /// Its last frame that belongs to this history.
    pub frame_no: u64,
}

/// What a generation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GenerationKind {
    /// A log.
    Log {
        /// The log's id.
        log_id: Uuid,
        /// Its first frame_no (the parent's point + 1, or the first frame of a new log).
        start_frame_no: u64,
        /// The point it continues from (`None`: a history of its own).
        parent: Option<ForkPoint>,
        /// Started by a rewind: its history holds the parent's frames up to `parent` exactly,
        /// however far the parent went on. A takeover's point instead is what it restored, and
        /// its history also holds whatever the writer before acknowledged until the claim
        /// fenced it off (a takeover that stored nothing is walked through to its parent's
        /// end); a rewind's never grows past the point chosen.
        rewound: bool,
    },
    /// The namespace was deleted: nothing older is part of its current history (the older
    /// generations are kept as backups, restorable by number).
    Deleted,
}

/// A generation's record, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenerationRecord {
    /// The generation's number.
    pub number: u64,
    /// When it was created (milliseconds since the Unix epoch).
    pub created_ms: u64,
    /// What it is.
    pub kind: GenerationKind,
}

/// The stored form of a record (JSON, for people reading a bucket too).
#[derive(Serialize, Deserialize)]
struct StoredRecord {
    version: u32,
    generation: u64,
    created_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    log_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    start_frame_no: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    parent: Option<ForkPoint>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    rewound: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    deleted: bool,
}

/// Version of the stored record format.
const RECORD_VERSION: u32 = 1;

impl GenerationRecord {
    /// Returns the log of this generation of `namespace`, if it is one.
    pub fn log(&self, namespace: &NamespaceName) -> Option<Generation> {
        match self.kind {
            GenerationKind::Log { log_id, .. } => Some(Generation {
                namespace: namespace.clone(),
                number: self.number,
                log_id,
            }),
            GenerationKind::Deleted => None,
        }
    }

    /// Returns the record's stored bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut stored = StoredRecord {
            version: RECORD_VERSION,
            generation: self.number,
            created_ms: self.created_ms,
            log_id: None,
            start_frame_no: None,
            parent: None,
            rewound: false,
            deleted: false,
        };
        match self.kind {
            GenerationKind::Log {
                log_id,
                start_frame_no,
                parent,
                rewound,
            } => {
                stored.log_id = Some(log_id.to_string());
                stored.start_frame_no = Some(start_frame_no);
                stored.parent = parent;
                stored.rewound = rewound;
            }
            GenerationKind::Deleted => stored.deleted = true,
        }
        let mut bytes = serde_json::to_vec_pretty(&stored).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }

    /// Decodes the record stored as `object`, which must be generation `number`'s.
    pub fn decode(object: &str, number: u64, bytes: &[u8]) -> Result<Self> {
        let corrupt = |what: String| Error::corrupt(object, what);
        let stored: StoredRecord = serde_json::from_slice(bytes)
            .map_err(|e| corrupt(format!("not a generation record: {e}")))?;
        if stored.version != RECORD_VERSION {
            return Err(corrupt(format!(
                "generation record version {} (this build reads {RECORD_VERSION})",
                stored.version
            )));
        }
        if stored.generation != number {
            return Err(corrupt(format!(
                "records generation {} under the key of generation {number}",
                stored.generation
            )));
        }
        let kind = if stored.deleted {
            GenerationKind::Deleted
        } else {
            let log_id = stored
                .log_id
                .ok_or_else(|| corrupt("a log generation without a log_id".into()))?;
            let log_id =
                Uuid::parse_str(&log_id).map_err(|e| corrupt(format!("log_id {log_id:?}: {e}")))?;
            let start_frame_no = stored
                .start_frame_no
                .ok_or_else(|| corrupt("a log generation without a start_frame_no".into()))?;
            if let Some(parent) = stored.parent {
                if parent.generation >= number || parent.frame_no + 1 != start_frame_no {
                    return Err(corrupt(format!(
                        "parent (generation {}, frame {}) cannot precede a generation {number} \
                         starting at frame {start_frame_no}",
                        parent.generation, parent.frame_no
                    )));
                }
            }
            if stored.rewound && stored.parent.is_none() {
                return Err(corrupt("a rewound generation without a parent".into()));
            }
            GenerationKind::Log {
                log_id,
                start_frame_no,
                parent: stored.parent,
                rewound: stored.rewound,
            }
        };
        Ok(GenerationRecord {
            number,
            created_ms: stored.created_ms,
            kind,
        })
    }
}

/// Returns the prefix of every generation of `namespace`.
pub fn generations_prefix(namespace: &NamespaceName) -> String {
    format!("{namespace}/generations/")
}

/// Returns the directory of generation `number` of `namespace`, ending with `/`.
pub fn generation_prefix(namespace: &NamespaceName, number: u64) -> String {
    format!(
        "{}{number:0width$}/",
        generations_prefix(namespace),
        width = GENERATION_DIGITS
    )
}

/// Returns the key of generation `number`'s record.
pub fn generation_object(namespace: &NamespaceName, number: u64) -> String {
    format!("{}generation", generation_prefix(namespace, number))
}

/// Parses a generation directory's name (`GENERATION_DIGITS` digits).
pub fn parse_generation_number(name: &str) -> Option<u64> {
    let name = name.strip_suffix('/').unwrap_or(name);
    if name.len() != GENERATION_DIGITS || !name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    name.parse().ok()
}

/// The generations of a namespace, oldest first, and what follows from them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lineage {
    /// Every generation record, by number.
    pub records: Vec<GenerationRecord>,
}

impl Lineage {
    /// Returns the newest generation, if any.
    pub fn newest(&self) -> Option<&GenerationRecord> {
        self.records.last()
    }

    /// Returns the number the next generation takes.
    pub fn next_number(&self) -> u64 {
        self.newest().map_or(1, |r| r.number + 1)
    }

    /// Returns generation `number`'s record.
    pub fn get(&self, number: u64) -> Option<&GenerationRecord> {
        self.records
            .binary_search_by_key(&number, |r| r.number)
            .ok()
            .map(|i| &self.records[i])
    }

    /// Returns the record of the generation of log `log_id`.
    pub fn of_log(&self, log_id: Uuid) -> Option<&GenerationRecord> {
        self.records
            .iter()
            .find(|r| matches!(r.kind, GenerationKind::Log { log_id: id, .. } if id == log_id))
    }

    /// Returns the history that ends in generation `number` at `frame_no` (or at its end when
    /// `None`), newest first: each generation with the last frame of it that belongs to the
    /// history (`None`: all of it). Fails naming the record that is missing or does not fit.
    pub fn history(
        &self,
        namespace: &NamespaceName,
        number: u64,
        frame_no: Option<u64>,
    ) -> Result<Vec<(GenerationRecord, Option<u64>)>> {
        let mut out = Vec::new();
        let (mut number, mut until) = (number, frame_no);
        loop {
            let record = *self.get(number).ok_or_else(|| Error::NotFound {
                key: generation_object(namespace, number),
            })?;
            let parent = match record.kind {
                GenerationKind::Log { parent, .. } => parent,
                GenerationKind::Deleted => None,
            };
            out.push((record, until));
            match parent {
                Some(parent) => {
                    number = parent.generation;
                    until = Some(parent.frame_no);
                }
                None => return Ok(out),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns() -> NamespaceName {
        "t".parse().unwrap()
    }

    #[test]
    fn records_round_trip_and_name_what_is_wrong() {
        let log = GenerationRecord {
            number: 3,
            created_ms: 1_700_000_000_000,
            kind: GenerationKind::Log {
                log_id: Uuid::from_u128(7),
                start_frame_no: 11,
                parent: Some(ForkPoint {
                    generation: 2,
                    frame_no: 10,
                }),
                rewound: false,
            },
        };
        let deleted = GenerationRecord {
            number: 4,
            created_ms: 5,
            kind: GenerationKind::Deleted,
        };
        for record in [log, deleted] {
            let bytes = record.encode();
            assert_eq!(
                GenerationRecord::decode("k", record.number, &bytes).unwrap(),
                record
            );
        }
        let err = GenerationRecord::decode("k", 9, &log.encode()).unwrap_err();
        assert!(err
            .to_string()
            .contains("generation 3 under the key of generation 9"));
        let err = GenerationRecord::decode("k", 3, b"{").unwrap_err();
        assert!(err.to_string().contains("corrupt object k"));
        let bad_parent = GenerationRecord {
            kind: GenerationKind::Log {
                log_id: Uuid::from_u128(7),
                start_frame_no: 12,
                parent: Some(ForkPoint {
                    generation: 2,
                    frame_no: 10,
                }),
                rewound: false,
            },
            ..log
        };
        assert!(GenerationRecord::decode("k", 3, &bad_parent.encode()).is_err());
    }

    #[test]
    fn keys_sort_by_number() {
        let a = generation_object(&ns(), 9);
        let b = generation_object(&ns(), 10);
        assert!(a < b);
        assert_eq!(a, "t/generations/00000000000000000009/generation");
        assert_eq!(parse_generation_number("00000000000000000010/"), Some(10));
        assert_eq!(parse_generation_number("10"), None);
    }

    #[test]
    fn a_history_walks_parents_up_to_their_fork_points() {
        let log = |number, start, parent| GenerationRecord {
            number,
            created_ms: number,
            kind: GenerationKind::Log {
                log_id: Uuid::from_u128(u128::from(number)),
                start_frame_no: start,
                parent,
                rewound: false,
            },
        };
        let fork = |generation, frame_no| {
            Some(ForkPoint {
                generation,
                frame_no,
            })
        };
        let lineage = Lineage {
            records: vec![
                log(1, 1, None),
                log(2, 31, fork(1, 30)),
                log(3, 21, fork(1, 20)),
            ],
        };
        let history = lineage.history(&ns(), 3, None).unwrap();
        let numbers: Vec<_> = history
            .iter()
            .map(|(r, until)| (r.number, *until))
            .collect();
        assert_eq!(numbers, vec![(3, None), (1, Some(20))]);
        assert_eq!(lineage.of_log(Uuid::from_u128(2)).unwrap().number, 2);
        assert_eq!(lineage.next_number(), 4);
        assert!(lineage.history(&ns(), 5, None).is_err());
    }
}
