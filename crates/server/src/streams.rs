//! Hrana streams: each one is an SQLite connection of one namespace, tied to its client by
//! batons. A baton is single use: `stream_id || seq || HMAC-SHA256(stream_id || seq)` with a
//! key drawn at start, in standard base64 without padding; every accepted request advances
//! `seq`, so the answer always carries a fresh baton and a replayed one is refused. A stream
//! left idle expires (its connection is dropped, rolling back an open transaction); its marker
//! stays a while so that its client hears "expired" rather than "invalid".

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine;
use hmac::{KeyInit, Mac};
use libsql_wal_backend::NamespaceName;
use tracing::debug;

use crate::sql::SqlStore;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// An open SQLite connection, whatever WAL it runs on.
pub trait DbConn: Send {
    /// The connection.
    fn sql(&self) -> &libsql_sys::rusqlite::Connection;
}

impl<W: libsql_sys::wal::Wal + Send> DbConn for libsql_sys::Connection<W> {
    fn sql(&self) -> &libsql_sys::rusqlite::Connection {
        self
    }
}

/// A stream taken out of the table by the request running on it.
pub struct Stream {
    /// Its id.
    pub id: u64,
    /// Its namespace.
    pub namespace: NamespaceName,
    /// Its connection.
    pub conn: Box<dyn DbConn>,
    /// Its stored SQL texts.
    pub store: SqlStore,
}

enum Slot {
    /// Waiting for the request with baton sequence `seq`.
    Available {
        stream: Box<Stream>,
        seq: u64,
        released: Instant,
    },
    /// A request is running on it.
    Acquired { namespace: NamespaceName },
    /// Expired at `at`; kept so its client learns it.
    Expired { at: Instant },
}

/// Why a baton was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatonError {
    /// It does not decode or its HMAC does not match.
    #[error("Received an invalid baton")]
    Invalid,
    /// It was used already, or a request is running with it.
    #[error("Received a baton that has already been used")]
    Reused,
    /// Its stream expired.
    #[error("The stream has expired due to inactivity")]
    Expired,
    /// Its stream was closed.
    #[error("Stream for this baton was closed")]
    Closed,
    /// Its stream belongs to another namespace than the request names.
    #[error("The baton belongs to a stream of another namespace")]
    OtherNamespace,
}

/// Why a new stream could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamLimit {
    /// The namespace has its maximum of open streams.
    #[error("namespace {namespace} has {max} open streams, the most it may have; close some (or wait for idle ones to expire)")]
    Namespace {
        /// The namespace.
        namespace: NamespaceName,
        /// The limit.
        max: usize,
    },
    /// The server has its maximum of open streams.
    #[error("the server has {max} open streams, the most it may have")]
    Server {
        /// The limit.
        max: usize,
    },
}

struct Table {
    slots: HashMap<u64, Slot>,
    /// Streams dropped by a request (a replayed baton), for the expiry thread to drop.
    dropped: Vec<Stream>,
    /// One-off connections (v1 requests) running per namespace.
    holds: HashMap<NamespaceName, usize>,
    /// Open (available or acquired) streams per namespace.
    per_namespace: HashMap<NamespaceName, usize>,
    open: usize,
}

/// Every stream of the server.
pub struct Streams {
    key: [u8; 32],
    table: Mutex<Table>,
    /// An idle stream expires after this long.
    pub expiry: Duration,
    /// An expired stream's marker is kept this long.
    pub expired_kept: Duration,
    max_per_namespace: usize,
    max_total: usize,
}

/// A reservation for a stream being opened (its connection is opening): dropped unused, it
/// gives its place back.
pub struct Reservation<'a> {
    streams: &'a Streams,
    namespace: Option<NamespaceName>,
}

impl Reservation<'_> {
    /// Registers a stream on `conn`, taken by the request that opened it (`release` gives
    /// its first baton).
    pub fn register_acquired(mut self, conn: Box<dyn DbConn>) -> Stream {
        let namespace = self.namespace.take().expect("a reservation registers once");
        let mut table = self.streams.lock();
        let id = loop {
            let id = random_u64();
            if !table.slots.contains_key(&id) {
                break id;
            }
        };
        table.slots.insert(
            id,
            Slot::Acquired {
                namespace: namespace.clone(),
            },
        );
        Stream {
            id,
            namespace,
            conn,
            store: SqlStore::default(),
        }
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if let Some(namespace) = self.namespace.take() {
            self.streams.lock().release_place(&namespace);
        }
    }
}

impl Table {
    fn release_place(&mut self, namespace: &NamespaceName) {
        self.open = self.open.saturating_sub(1);
        if let Some(n) = self.per_namespace.get_mut(namespace) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_namespace.remove(namespace);
            }
        }
    }
}

fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    // The OS's random source failing is a broken machine; a baton then is still unique
    // (time-based) and its HMAC key is what makes it unguessable.
    if getrandom::fill(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        return nanos;
    }
    u64::from_le_bytes(bytes)
}

impl Streams {
    /// An empty table; fails if the OS has no random source for the baton key.
    pub fn new(
        expiry: Duration,
        max_per_namespace: usize,
        max_total: usize,
    ) -> Result<Self, getrandom::Error> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key)?;
        Ok(Streams {
            key,
            table: Mutex::new(Table {
                slots: HashMap::new(),
                dropped: Vec::new(),
                holds: HashMap::new(),
                per_namespace: HashMap::new(),
                open: 0,
            }),
            expiry,
            expired_kept: Duration::from_secs(300),
            max_per_namespace,
            max_total,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn mac(&self, payload: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes a key of any size");
        mac.update(payload);
        mac
    }

    fn baton(&self, id: u64, seq: u64) -> String {
        let mut bytes = Vec::with_capacity(48);
        bytes.extend_from_slice(&id.to_be_bytes());
        bytes.extend_from_slice(&seq.to_be_bytes());
        let tag = self.mac(&bytes).finalize().into_bytes();
        bytes.extend_from_slice(&tag);
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes)
    }

    fn decode(&self, baton: &str) -> Result<(u64, u64), BatonError> {
        let bytes = crate::proto::decode_base64(baton).map_err(|_| BatonError::Invalid)?;
        if bytes.len() != 48 {
            return Err(BatonError::Invalid);
        }
        self.mac(&bytes[..16])
            .verify_slice(&bytes[16..])
            .map_err(|_| BatonError::Invalid)?;
        let id = u64::from_be_bytes(bytes[..8].try_into().map_err(|_| BatonError::Invalid)?);
        let seq = u64::from_be_bytes(bytes[8..16].try_into().map_err(|_| BatonError::Invalid)?);
        Ok((id, seq))
    }

    /// Reserves a place for a new stream of `namespace`, within the limits.
    pub fn reserve(&self, namespace: &NamespaceName) -> Result<Reservation<'_>, StreamLimit> {
        let mut table = self.lock();
        if table.open >= self.max_total {
            return Err(StreamLimit::Server {
                max: self.max_total,
            });
        }
        let count = table.per_namespace.entry(namespace.clone()).or_insert(0);
        if *count >= self.max_per_namespace {
            return Err(StreamLimit::Namespace {
                namespace: namespace.clone(),
                max: self.max_per_namespace,
            });
        }
        *count += 1;
        table.open += 1;
        Ok(Reservation {
            streams: self,
            namespace: Some(namespace.clone()),
        })
    }

    /// Takes the stream of `baton` for a request on `namespace`.
    pub fn acquire(&self, baton: &str, namespace: &NamespaceName) -> Result<Stream, BatonError> {
        let (id, seq) = self.decode(baton)?;
        let mut table = self.lock();
        let slot = table.slots.remove(&id).ok_or(BatonError::Closed)?;
        match slot {
            Slot::Available {
                stream,
                seq: expected,
                released,
            } => {
                if stream.namespace != *namespace {
                    table.slots.insert(
                        id,
                        Slot::Available {
                            stream,
                            seq: expected,
                            released,
                        },
                    );
                    return Err(BatonError::OtherNamespace);
                }
                if expected != seq {
                    // A replayed baton: the stream is dropped, as sqld does, by the expiry
                    // thread (its rollback is file work, not for an executor thread).
                    let namespace = stream.namespace.clone();
                    table.release_place(&namespace);
                    table.dropped.push(*stream);
                    return Err(BatonError::Reused);
                }
                table.slots.insert(
                    id,
                    Slot::Acquired {
                        namespace: stream.namespace.clone(),
                    },
                );
                Ok(*stream)
            }
            acquired @ Slot::Acquired { .. } => {
                table.slots.insert(id, acquired);
                Err(BatonError::Reused)
            }
            expired @ Slot::Expired { .. } => {
                table.slots.insert(id, expired);
                Err(BatonError::Expired)
            }
        }
    }

    /// Puts a stream back after its request; returns the baton for the next one.
    pub fn release(&self, stream: Stream) -> String {
        let id = stream.id;
        let seq = random_u64();
        self.lock().slots.insert(
            id,
            Slot::Available {
                stream: Box::new(stream),
                seq,
                released: Instant::now(),
            },
        );
        self.baton(id, seq)
    }

    /// Forgets a stream whose request closed it, or failed it (its connection is dropped by
    /// the caller, off the table's lock).
    pub fn remove(&self, id: u64) {
        let mut table = self.lock();
        if let Some(Slot::Acquired { namespace }) = table.slots.remove(&id) {
            table.release_place(&namespace);
        }
    }

    /// Expires streams idle for longer than `expiry` and forgets markers older than
    /// `expired_kept`; returns the expired streams, for the caller to drop (rolling back
    /// their transactions) off the lock.
    pub fn expire(&self, now: Instant) -> Vec<Stream> {
        let mut table = self.lock();
        let mut expired = std::mem::take(&mut table.dropped);
        let mut released = Vec::new();
        table.slots.retain(|_, slot| match slot {
            Slot::Expired { at } => now.duration_since(*at) < self.expired_kept,
            _ => true,
        });
        for slot in table.slots.values_mut() {
            if let Slot::Available { released: at, .. } = slot {
                if now.duration_since(*at) >= self.expiry {
                    if let Slot::Available { stream, .. } =
                        std::mem::replace(slot, Slot::Expired { at: now })
                    {
                        released.push(stream.namespace.clone());
                        expired.push(*stream);
                    }
                }
            }
        }
        for namespace in &released {
            table.release_place(namespace);
        }
        if !expired.is_empty() {
            debug!(count = expired.len(), "idle streams expired");
        }
        expired
    }

    /// Removes every idle stream of `namespace` (it is being deleted) and returns them; `None`
    /// (and nothing removed) while a request runs on one of its streams or opens one.
    pub fn take_namespace(&self, namespace: &NamespaceName) -> Option<Vec<Stream>> {
        let mut table = self.lock();
        let ids: Vec<u64> = table
            .slots
            .iter()
            .filter_map(|(id, slot)| match slot {
                Slot::Available { stream, .. } if stream.namespace == *namespace => Some(*id),
                _ => None,
            })
            .collect();
        // Every place taken that is not an idle stream is a request running on a stream, or
        // one opening its connection; a one-off connection counts too.
        let places = table.per_namespace.get(namespace).copied().unwrap_or(0);
        if places > ids.len() || table.holds.contains_key(namespace) {
            return None;
        }
        let mut taken = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(Slot::Available { stream, .. }) = table.slots.remove(&id) {
                table.release_place(namespace);
                taken.push(*stream);
            }
        }
        Some(taken)
    }

    /// Counts a one-off connection on `namespace` until `unhold`.
    pub fn hold(&self, namespace: &NamespaceName) {
        *self.lock().holds.entry(namespace.clone()).or_insert(0) += 1;
    }

    /// Ends a `hold` of `namespace`.
    pub fn unhold(&self, namespace: &NamespaceName) {
        let mut table = self.lock();
        if let Some(n) = table.holds.get_mut(namespace) {
            *n -= 1;
            if *n == 0 {
                table.holds.remove(namespace);
            }
        }
    }

    /// Removes every stream (the server is stopping) and returns the idle ones.
    pub fn take_all(&self) -> Vec<Stream> {
        let mut table = self.lock();
        let slots = std::mem::take(&mut table.slots);
        let mut idle = std::mem::take(&mut table.dropped);
        table.per_namespace.clear();
        table.open = 0;
        idle.extend(slots.into_values().filter_map(|slot| match slot {
            Slot::Available { stream, .. } => Some(*stream),
            _ => None,
        }));
        idle
    }

    /// Open streams (idle or running a request), in all and for `namespace`.
    pub fn open(&self, namespace: Option<&NamespaceName>) -> usize {
        let table = self.lock();
        match namespace {
            Some(ns) => table.per_namespace.get(ns).copied().unwrap_or(0),
            None => table.open,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Memory(libsql_sys::rusqlite::Connection);

    impl DbConn for Memory {
        fn sql(&self) -> &libsql_sys::rusqlite::Connection {
            &self.0
        }
    }

    fn stream(streams: &Streams, ns: &NamespaceName) -> String {
        let reservation = streams.reserve(ns).expect("a place");
        let stream = reservation.register_acquired(Box::new(Memory(
            libsql_sys::rusqlite::Connection::open_in_memory().expect("open"),
        )));
        streams.release(stream)
    }

    #[test]
    fn a_baton_is_single_use_and_cannot_be_forged() {
        let streams = Streams::new(Duration::from_secs(10), 10, 10).expect("key");
        let ns: NamespaceName = "a".parse().expect("name");
        let first = stream(&streams, &ns);
        let taken = streams.acquire(&first, &ns).expect("first use");
        assert_eq!(
            streams.acquire(&first, &ns).err(),
            Some(BatonError::Reused),
            "while running"
        );
        let second = streams.release(taken);
        assert_ne!(first, second, "rotated");
        assert_eq!(
            streams.acquire(&first, &ns).err(),
            Some(BatonError::Reused),
            "replayed"
        );
        assert_eq!(
            streams.acquire(&second, &ns).err(),
            Some(BatonError::Closed),
            "a replay drops the stream"
        );
        assert_eq!(streams.open(None), 0);

        let third = stream(&streams, &ns);
        let mut forged = crate::proto::decode_base64(&third).expect("base64");
        forged[9] ^= 1;
        let forged = base64::engine::general_purpose::STANDARD_NO_PAD.encode(forged);
        assert_eq!(
            streams.acquire(&forged, &ns).err(),
            Some(BatonError::Invalid)
        );
        assert_eq!(
            streams.acquire("nonsense", &ns).err(),
            Some(BatonError::Invalid)
        );
        let other: NamespaceName = "b".parse().expect("name");
        assert_eq!(
            streams.acquire(&third, &other).err(),
            Some(BatonError::OtherNamespace)
        );
        assert!(
            streams.acquire(&third, &ns).is_ok(),
            "still usable by its own"
        );
    }

    #[test]
    fn a_namespace_with_a_running_request_or_one_off_connection_gives_up_no_stream() {
        let streams = Streams::new(Duration::from_secs(10), 10, 10).expect("key");
        let a: NamespaceName = "a".parse().expect("name");
        let baton = stream(&streams, &a);
        let running = streams.acquire(&stream(&streams, &a), &a).expect("taken");
        assert!(streams.take_namespace(&a).is_none(), "a request runs");
        streams.remove(running.id);
        streams.hold(&a);
        assert!(streams.take_namespace(&a).is_none(), "a v1 connection runs");
        streams.unhold(&a);
        let taken = streams.take_namespace(&a).expect("nothing runs");
        assert_eq!(taken.len(), 1);
        assert_eq!(streams.acquire(&baton, &a).err(), Some(BatonError::Closed));
    }

    #[test]
    fn idle_streams_expire_and_say_so_and_limits_hold() {
        let streams = Streams::new(Duration::from_millis(0), 2, 3).expect("key");
        let a: NamespaceName = "a".parse().expect("name");
        let b: NamespaceName = "b".parse().expect("name");
        let baton = stream(&streams, &a);
        let _second = stream(&streams, &a);
        assert!(matches!(
            streams.reserve(&a),
            Err(StreamLimit::Namespace { .. })
        ));
        let _third = stream(&streams, &b);
        assert!(matches!(
            streams.reserve(&b),
            Err(StreamLimit::Server { .. })
        ));
        let expired = streams.expire(Instant::now());
        assert_eq!(expired.len(), 3);
        assert_eq!(streams.open(None), 0);
        assert_eq!(streams.acquire(&baton, &a).err(), Some(BatonError::Expired));
        drop(streams.reserve(&a).expect("places are back"));
        assert_eq!(
            streams.open(None),
            0,
            "an unused reservation gives its place back"
        );
    }
}
