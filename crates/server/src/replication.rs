//! The primary's side of replication over HTTP, on the user API (and its token):
//!
//! - `GET /replication/v1/namespaces`: `{"namespaces": [...]}`, for replicas that follow all.
//! - `GET /replication/v1/namespaces/{ns}/hello`: the log's identity and position (`HelloBody`).
//! - `GET /replication/v1/namespaces/{ns}/steps?after=N&log_id=L&incarnation=I`: an endless
//!   `application/octet-stream` of steps (`libsql_wal::ReplicationSource`) from frame_no `N`
//!   of log `L` in incarnation `I`; 409 `LOG_CHANGED` when the log is no longer that one (the
//!   replica says hello again). With `&full_image=false` (a replica that reads the primary's
//!   bucket), a step that would be a full image is not sent: a *not held* head (no pages)
//!   says so and ends the stream, and the replica catches up from the bucket. When nothing is committed for `HEARTBEAT`, a heartbeat step
//!   (no pages) says where the primary is; the stream ends when the log is closed or the server
//!   stops.
//!
//! The wire form of a step (little-endian): a 48-byte header (`StepHead`), then `pages` times
//! `page_no: u32` and the 4096-byte page, then the CRC32 of those page records. Pages are
//! read from the log one at a time and sent in chunks through a channel of `CHUNKS_IN_FLIGHT`
//! chunks: a slow replica holds at most that much of the primary's memory, and one that reads
//! nothing for `STALLED_AFTER` is cut off (its snapshot would hold back checkpoints).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::http::StatusCode;
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use libsql_wal::{FullImages, ReplicationSource, StepHeader, StepPages};
use libsql_wal_backend::NamespaceName;
use libsql_wal_segment::format::PAGE_SIZE;
use tracing::{debug, warn};
use uuid::Uuid;

use crate::user::{authorize, Failure};
use crate::State;

/// Magic number of a step header ("LWRS").
pub(crate) const STEP_MAGIC: u32 = u32::from_le_bytes(*b"LWRS");
/// Version of the step wire form.
pub(crate) const STEP_VERSION: u32 = 1;
/// Bytes of a step header.
pub(crate) const STEP_HEAD_SIZE: usize = 48;
/// Bytes of one page record: page_no and page.
pub(crate) const PAGE_RECORD_SIZE: usize = 4 + PAGE_SIZE;
/// Step flag: the step holds every page of the database.
const FLAG_FULL_IMAGE: u32 = 1;
/// Step flag: a heartbeat, with no pages; it only says where the primary is.
const FLAG_HEARTBEAT: u32 = 2;
/// Step flag: no pages, and the end of the stream: the log no longer holds the frames after
/// the replica's position, and the replica asked for no full image.
const FLAG_NOT_HELD: u32 = 4;
/// With nothing committed for this long, a heartbeat goes out.
pub(crate) const HEARTBEAT: Duration = Duration::from_secs(5);
/// Chunks of a step in flight to one replica, at most.
const CHUNKS_IN_FLIGHT: usize = 8;
/// Bytes of one chunk, about.
const CHUNK_BYTES: usize = 64 << 10;
/// A replica that takes no chunk for this long is cut off.
const STALLED_AFTER: Duration = Duration::from_secs(30);

/// A step's header as it travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StepHead {
    /// The step (for a head with no pages: the primary's last commit).
    pub step: StepHeader,
    /// A step to apply, or a head with no pages.
    pub kind: HeadKind,
    /// When the primary sent it (milliseconds since the Unix epoch).
    pub sent_at_ms: u64,
}

/// What a head is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeadKind {
    /// A step, its pages follow.
    Step,
    /// A heartbeat (`FLAG_HEARTBEAT`): no pages; it only says where the primary is.
    Heartbeat,
    /// The frames after the replica's position are no longer in the log (`FLAG_NOT_HELD`): no
    /// pages, and the stream ends.
    NotHeld,
}

impl HeadKind {
    /// The wire form of a head of this kind with no pages (the head, then the CRC32 of no
    /// pages) saying where the primary is, as `hello` says.
    fn without_pages(self, hello: &libsql_wal::Hello) -> Vec<u8> {
        let head = StepHead {
            step: StepHeader {
                frame_no: hello.last_committed_frame_no,
                durable_frame_no: hello.durable_frame_no,
                db_size: 0,
                pages: 0,
                full_image: false,
            },
            kind: self,
            sent_at_ms: now_ms(),
        };
        let mut out = head.encode().to_vec();
        out.extend_from_slice(&crc32fast::hash(&[]).to_le_bytes());
        out
    }
}

impl StepHead {
    pub(crate) fn encode(&self) -> [u8; STEP_HEAD_SIZE] {
        let mut buf = [0; STEP_HEAD_SIZE];
        let flags = if self.step.full_image {
            FLAG_FULL_IMAGE
        } else {
            0
        } | match self.kind {
            HeadKind::Step => 0,
            HeadKind::Heartbeat => FLAG_HEARTBEAT,
            HeadKind::NotHeld => FLAG_NOT_HELD,
        };
        buf[0..4].copy_from_slice(&STEP_MAGIC.to_le_bytes());
        buf[4..8].copy_from_slice(&STEP_VERSION.to_le_bytes());
        buf[8..16].copy_from_slice(&self.step.frame_no.to_le_bytes());
        buf[16..24].copy_from_slice(&self.step.durable_frame_no.to_le_bytes());
        buf[24..28].copy_from_slice(&self.step.db_size.to_le_bytes());
        buf[28..32].copy_from_slice(&self.step.pages.to_le_bytes());
        buf[32..36].copy_from_slice(&flags.to_le_bytes());
        buf[36..44].copy_from_slice(&self.sent_at_ms.to_le_bytes());
        let crc = crc32fast::hash(&buf[..44]);
        buf[44..48].copy_from_slice(&crc.to_le_bytes());
        buf
    }

    /// Decodes a header; the error says what is wrong with it.
    pub(crate) fn decode(buf: &[u8]) -> Result<Self, String> {
        if buf.len() != STEP_HEAD_SIZE {
            return Err(format!("a step header of {} bytes", buf.len()));
        }
        let u32_at = |at: usize| {
            let mut b = [0; 4];
            b.copy_from_slice(&buf[at..at + 4]);
            u32::from_le_bytes(b)
        };
        let u64_at = |at: usize| {
            let mut b = [0; 8];
            b.copy_from_slice(&buf[at..at + 8]);
            u64::from_le_bytes(b)
        };
        if u32_at(0) != STEP_MAGIC {
            return Err("a step header with a bad magic number".into());
        }
        if u32_at(4) != STEP_VERSION {
            return Err(format!("a step of wire version {}", u32_at(4)));
        }
        if u32_at(44) != crc32fast::hash(&buf[..44]) {
            return Err("a step header with a bad checksum".into());
        }
        let flags = u32_at(32);
        Ok(StepHead {
            step: StepHeader {
                frame_no: u64_at(8),
                durable_frame_no: u64_at(16),
                db_size: u32_at(24),
                pages: u32_at(28),
                full_image: flags & FLAG_FULL_IMAGE != 0,
            },
            kind: if flags & FLAG_NOT_HELD != 0 {
                HeadKind::NotHeld
            } else if flags & FLAG_HEARTBEAT != 0 {
                HeadKind::Heartbeat
            } else {
                HeadKind::Step
            },
            sent_at_ms: u64_at(36),
        })
    }
}

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The body of a hello.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct HelloBody {
    pub log_id: String,
    pub generation: u64,
    pub incarnation: String,
    pub last_committed_frame_no: u64,
    pub durable_frame_no: u64,
}

impl From<libsql_wal::Hello> for HelloBody {
    fn from(h: libsql_wal::Hello) -> Self {
        HelloBody {
            log_id: h.identity.log_id.to_string(),
            generation: h.identity.generation,
            incarnation: h.identity.incarnation.to_string(),
            last_committed_frame_no: h.last_committed_frame_no,
            durable_frame_no: h.durable_frame_no,
        }
    }
}

impl HelloBody {
    /// The hello this body says; the error names the field that is not a log id.
    pub(crate) fn to_hello(&self) -> Result<libsql_wal::Hello, String> {
        let id = |field: &str, value: &str| {
            value
                .parse::<Uuid>()
                .map_err(|e| format!("the hello's {field} {value:?} is not an id: {e}"))
        };
        Ok(libsql_wal::Hello {
            identity: libsql_wal::LogIdentity {
                log_id: id("log_id", &self.log_id)?,
                generation: self.generation,
                incarnation: id("incarnation", &self.incarnation)?,
            },
            last_committed_frame_no: self.last_committed_frame_no,
            durable_frame_no: self.durable_frame_no,
        })
    }
}

/// The query of a steps request.
#[derive(Debug, serde::Deserialize)]
struct StepsQuery {
    after: u64,
    log_id: String,
    incarnation: String,
    /// False: a step that would be a full image is answered with a not-held head.
    #[serde(default)]
    full_image: Option<bool>,
}

pub(crate) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/replication/v1/namespaces", web::get().to(namespaces))
        .route(
            "/replication/v1/namespaces/{namespace}/hello",
            web::get().to(hello),
        )
        .route(
            "/replication/v1/namespaces/{namespace}/steps",
            web::get().to(steps),
        );
}

fn namespace(raw: &str) -> Result<NamespaceName, Failure> {
    raw.parse().map_err(|e: libsql_wal_backend::Error| {
        Failure::json(StatusCode::BAD_REQUEST, "INVALID_NAMESPACE", e.to_string())
    })
}

/// Opens the log of `namespace` on a blocking thread.
async fn source(
    state: &web::Data<Arc<State>>,
    namespace: NamespaceName,
) -> Result<Arc<dyn ReplicationSource>, Failure> {
    let host = state.host.clone();
    web::block(move || host.replication_source(&namespace))
        .await
        .map_err(|e| {
            Failure::json(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL_ERROR",
                e.to_string(),
            )
        })?
        .map_err(Failure::from)
}

async fn namespaces(state: web::Data<Arc<State>>, req: HttpRequest) -> HttpResponse {
    if let Err(f) = authorize(&state, &req, false) {
        return f.response();
    }
    let host = state.host.clone();
    match web::block(move || host.list()).await {
        Ok(Ok(list)) => HttpResponse::Ok().json(serde_json::json!({
            "namespaces": list.iter().map(|n| n.as_str()).collect::<Vec<_>>()
        })),
        Ok(Err(e)) => Failure::from(e).response(),
        Err(e) => Failure::json(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_ERROR",
            e.to_string(),
        )
        .response(),
    }
}

#[tracing::instrument(skip(state, req))]
async fn hello(
    state: web::Data<Arc<State>>,
    req: HttpRequest,
    path: web::Path<String>,
) -> HttpResponse {
    let answer = async {
        authorize(&state, &req, false)?;
        let log = source(&state, namespace(&path)?).await?;
        Ok::<_, Failure>(HttpResponse::Ok().json(HelloBody::from(log.hello())))
    };
    answer.await.unwrap_or_else(Failure::response)
}

#[tracing::instrument(skip(state, req, query))]
async fn steps(
    state: web::Data<Arc<State>>,
    req: HttpRequest,
    path: web::Path<String>,
    query: web::Query<StepsQuery>,
) -> HttpResponse {
    let answer = async {
        authorize(&state, &req, false)?;
        let namespace = namespace(&path)?;
        let log = source(&state, namespace.clone()).await?;
        let identity = log.hello().identity;
        if identity.log_id.to_string() != query.log_id
            || identity.incarnation.to_string() != query.incarnation
        {
            return Err(Failure::json(
                StatusCode::CONFLICT,
                "LOG_CHANGED",
                format!(
                    "namespace {namespace} is now log {} (incarnation {}): say hello again",
                    identity.log_id, identity.incarnation
                ),
            ));
        }
        let (tx, rx) =
            tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(CHUNKS_IN_FLIGHT);
        let stopping = state.stopping.subscribe();
        let full_images = match query.full_image {
            Some(false) => FullImages::Refused,
            _ => FullImages::Allowed,
        };
        actix_web::rt::spawn(follow(
            log,
            namespace,
            query.after,
            full_images,
            tx,
            stopping,
        ));
        let body = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|chunk| (chunk, rx))
        });
        Ok(HttpResponse::Ok()
            .content_type("application/octet-stream")
            .streaming(body))
    };
    answer.await.unwrap_or_else(Failure::response)
}

/// Why a stream of steps ended.
#[derive(Debug)]
enum Ended {
    /// The replica went away or stopped reading.
    Replica,
    /// The log failed or refused.
    Log(libsql_wal::Error),
}

/// Serves steps of `log` from `after` into `tx` until the replica goes or the log closes (or,
/// when `full_images` are refused, the log no longer holds what the replica needs).
async fn follow(
    log: Arc<dyn ReplicationSource>,
    namespace: NamespaceName,
    mut after: u64,
    full_images: FullImages,
    tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) {
    let mut commits = log.commits();
    loop {
        if *stopping.borrow_and_update() {
            return;
        }
        if log.is_gone() {
            debug!(%namespace, "the log closed; the replica says hello again");
            return;
        }
        let last = *commits.borrow_and_update();
        if last > after {
            let sent = serve_step(&log, after, full_images, &tx, &mut stopping).await;
            match sent {
                Ok(frame_no) => after = frame_no,
                Err(Ended::Replica) => return,
                Err(Ended::Log(libsql_wal::Error::NotHeld { oldest_held, .. })) => {
                    debug!(%namespace, after, oldest_held, "the replica is told to catch up from the bucket");
                    let head = HeadKind::NotHeld.without_pages(&log.hello());
                    let _ = send(&tx, head, &mut stopping).await;
                    return;
                }
                Err(Ended::Log(libsql_wal::Error::Closed { .. })) => {
                    debug!(%namespace, "the log closed; the replica says hello again");
                    return;
                }
                Err(Ended::Log(e)) => {
                    warn!(%namespace, error = %e, "cannot serve a replication step");
                    // Waited for (bounded) behind the chunks queued: a replica that sees the
                    // error backs off, where a clean end would have it reconnect at once.
                    let error = Err(std::io::Error::other(e.to_string()));
                    let _ = actix_web::rt::time::timeout(STALLED_AFTER, tx.send(error)).await;
                    return;
                }
            }
            continue;
        }
        tokio::select! {
            changed = commits.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = stopping.changed() => return,
            () = actix_web::rt::time::sleep(HEARTBEAT) => {
                let head = HeadKind::Heartbeat.without_pages(&log.hello());
                if send(&tx, head, &mut stopping).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Sends the step after `after` of `log`, if there is one; returns the frame_no the replica is
/// then at. Its pages are read on blocking threads, never on this HTTP worker, which serves
/// other replicas' streams too: reading a step waits for the segment locks the primary's
/// writers hold, and one writer preempted while holding one must not stall every stream. A
/// blocking thread queues the chunks while the replica's channel has room (all of a step, most
/// often, in one hand-off); a chunk that finds it full is sent from here, so a stalled replica
/// holds no thread, and stopping ends a step mid-way.
async fn serve_step(
    log: &Arc<dyn ReplicationSource>,
    after: u64,
    full_images: FullImages,
    tx: &tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    stopping: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<u64, Ended> {
    let (step_log, queue) = (log.clone(), tx.clone());
    let first = web::block(move || {
        crate::sched::latency_sensitive();
        let Some(step) = step_log
            .step_after(after, full_images)
            .map_err(Ended::Log)?
        else {
            return Ok(None);
        };
        let mut encoder = StepEncoder::new(step);
        let unsent = encoder.queue_chunks(&queue)?;
        Ok(Some((encoder, unsent)))
    })
    .await
    .map_err(|_| Ended::Replica)??;
    let Some((mut encoder, mut unsent)) = first else {
        return Ok(after);
    };
    let frame_no = encoder.frame_no;
    loop {
        if let Some(chunk) = unsent {
            send(tx, chunk, stopping).await?;
        }
        if encoder.step.is_none() {
            return Ok(frame_no);
        }
        if *stopping.borrow() {
            return Err(Ended::Replica);
        }
        let queue = tx.clone();
        let (back, next) = web::block(move || {
            crate::sched::latency_sensitive();
            let next = encoder.queue_chunks(&queue);
            (encoder, next)
        })
        .await
        .map_err(|_| Ended::Replica)?;
        encoder = back;
        unsent = next?;
    }
}

/// A step being turned into its wire form, a chunk at a time (`next_chunk`, on a blocking
/// thread: reading pages may wait for the log's locks), so that a large step is never whole in
/// memory and the chunks are sent from the stream's task. The step (its snapshot, registered
/// as a reader) is dropped as soon as its last page is read.
struct StepEncoder {
    step: Option<Box<dyn StepPages>>,
    /// The frame_no the step brings the replica to.
    frame_no: u64,
    /// The step's head, until the first chunk carries it.
    head: Option<[u8; STEP_HEAD_SIZE]>,
    crc: crc32fast::Hasher,
}

impl StepEncoder {
    fn new(step: Box<dyn StepPages>) -> Self {
        let header = step.header();
        let head = StepHead {
            step: header,
            kind: HeadKind::Step,
            sent_at_ms: now_ms(),
        };
        StepEncoder {
            step: Some(step),
            frame_no: header.frame_no,
            head: Some(head.encode()),
            crc: crc32fast::Hasher::new(),
        }
    }

    /// Queues up to `CHUNKS_IN_FLIGHT` chunks into `queue` while it has room, until the step's
    /// last (so that one hand-off never holds its thread for a whole large step); returns the
    /// chunk that found it full, if one did.
    fn queue_chunks(
        &mut self,
        queue: &tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    ) -> Result<Option<Vec<u8>>, Ended> {
        use tokio::sync::mpsc::error::TrySendError;
        for _ in 0..CHUNKS_IN_FLIGHT {
            let Some(chunk) = self.next_chunk()? else {
                break;
            };
            match queue.try_reserve() {
                Ok(room) => room.send(Ok(Bytes::from(chunk))),
                Err(TrySendError::Full(())) => return Ok(Some(chunk)),
                Err(TrySendError::Closed(())) => return Err(Ended::Replica),
            }
        }
        Ok(None)
    }

    /// The next chunk of about `CHUNK_BYTES`; the last ends with the pages' CRC32. None once
    /// the last was returned.
    fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, Ended> {
        let Some(step) = self.step.as_mut() else {
            return Ok(None);
        };
        let mut chunk = Vec::with_capacity(CHUNK_BYTES + PAGE_RECORD_SIZE);
        if let Some(head) = self.head.take() {
            chunk.extend_from_slice(&head);
        }
        let mut page = vec![0; PAGE_SIZE];
        while chunk.len() < CHUNK_BYTES {
            let Some(page_no) = step.next_page(&mut page).map_err(Ended::Log)? else {
                self.step = None;
                chunk.extend_from_slice(&self.crc.clone().finalize().to_le_bytes());
                return Ok(Some(chunk));
            };
            let start = chunk.len();
            chunk.extend_from_slice(&page_no.to_le_bytes());
            chunk.extend_from_slice(&page);
            self.crc.update(&chunk[start..]);
        }
        Ok(Some(chunk))
    }
}

/// Sends one chunk from the stream's task, waiting while the replica's channel is full for at
/// most `STALLED_AFTER`, and not past the server stopping.
async fn send(
    tx: &tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    chunk: Vec<u8>,
    stopping: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<(), Ended> {
    tokio::select! {
        sent = actix_web::rt::time::timeout(STALLED_AFTER, tx.send(Ok(Bytes::from(chunk)))) => match sent {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Ended::Replica),
            Err(_) => {
                warn!("a replica read nothing for {STALLED_AFTER:?}: its stream is cut");
                Err(Ended::Replica)
            }
        },
        _ = stopping.changed() => Err(Ended::Replica),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_head_round_trips_and_a_flipped_bit_is_refused() {
        let head = StepHead {
            step: StepHeader {
                frame_no: 77,
                durable_frame_no: 60,
                db_size: 12,
                pages: 3,
                full_image: true,
            },
            kind: HeadKind::NotHeld,
            sent_at_ms: 1_700_000_000_000,
        };
        let mut buf = head.encode();
        assert_eq!(StepHead::decode(&buf), Ok(head));
        buf[9] ^= 1;
        assert!(StepHead::decode(&buf).unwrap_err().contains("checksum"));
    }

    /// A log of `pages` pages (page n filled with n), written through an injector.
    /// The registry is returned with the log: dropped, it would retire the log.
    fn log_of(
        dir: &std::path::Path,
        pages: u32,
    ) -> (crate::test_log::TestRegistry, crate::test_log::TestLog) {
        use libsql_wal::StepInjector;
        let (registry, log, mut injector) = crate::test_log::log_in(dir, false);
        let identity = log.hello().identity;
        injector.resume_from(&libsql_wal::Hello {
            identity,
            last_committed_frame_no: 1,
            durable_frame_no: 0,
        });
        injector
            .begin(&StepHeader {
                frame_no: 1,
                durable_frame_no: 0,
                db_size: pages,
                pages,
                full_image: true,
            })
            .unwrap();
        for page_no in 1..=pages {
            injector.page(page_no, &[page_no as u8; PAGE_SIZE]).unwrap();
        }
        injector.commit().unwrap();
        (registry, log)
    }

    #[test]
    fn chunks_are_queued_while_the_channel_has_room_and_make_the_step_on_the_wire() {
        let dir = tempfile::tempdir().unwrap();
        let (_registry, log) = log_of(dir.path(), 40);
        let step = || StepEncoder::new(log.step_after(0, FullImages::Allowed).unwrap().unwrap());
        // Room for one chunk: the second is handed back, to be sent when there is room.
        let (tx, mut rx) = tokio::sync::mpsc::channel(1);
        let mut encoder = step();
        let unsent = encoder.queue_chunks(&tx).unwrap();
        assert!(unsent.is_some() && encoder.step.is_some());
        assert!(rx.try_recv().is_ok());
        // The replica went away: the next hand-off says so.
        drop(rx);
        assert!(matches!(encoder.queue_chunks(&tx), Err(Ended::Replica)));
        // Room for every chunk: the whole step goes in one hand-off, in its wire form.
        let (tx, mut rx) = tokio::sync::mpsc::channel(CHUNKS_IN_FLIGHT);
        let mut encoder = step();
        assert!(encoder.queue_chunks(&tx).unwrap().is_none());
        assert!(encoder.step.is_none(), "the step's snapshot is let go");
        let mut wire = Vec::new();
        while let Ok(chunk) = rx.try_recv() {
            wire.extend_from_slice(&chunk.unwrap());
        }
        let head = StepHead::decode(&wire[..STEP_HEAD_SIZE]).unwrap();
        assert_eq!(
            (head.step.pages, head.step.db_size, head.step.full_image),
            (40, 40, true)
        );
        let records = &wire[STEP_HEAD_SIZE..wire.len() - 4];
        assert_eq!(records.len(), 40 * PAGE_RECORD_SIZE);
        assert_eq!(
            wire[wire.len() - 4..],
            crc32fast::hash(records).to_le_bytes()
        );
        for (i, record) in records.chunks_exact(PAGE_RECORD_SIZE).enumerate() {
            let page_no = i as u32 + 1;
            assert_eq!(record[..4], page_no.to_le_bytes());
            assert!(record[4..].iter().all(|&b| b == page_no as u8));
        }
    }
}
