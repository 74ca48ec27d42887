//! The work of an upload worker: turn one job's sealed segments into the storage format (one
//! compacted segment holding the newest version of each page, plus its fst index) and store it
//! with `BackendExt`. Small jobs are compacted in memory, large ones through a scratch file
//! (named from the storage instance and the job id, see `Scratch`) that is removed afterwards,
//! or when the upload is dropped.
//!
//! Compaction reads files and checks checksums, so it runs on tokio's blocking pool, never on
//! the actor thread. A panic anywhere in here is caught by the caller (`run_job`) and reported
//! as a failed upload.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;
use libsql_wal_backend::{
    Backend, BackendExt, Error as BackendError, Generation, SegmentData, SegmentKey,
};
use libsql_wal_segment::{merge, FileExt, SealedSegment};
use tracing::{debug, warn};

use crate::scratch::{Scratch, ScratchFile};

/// What a stored job produced.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UploadReport {
    /// Bytes sent: data and index.
    pub bytes: u64,
    /// A newer generation of the namespace, found after the store: this one is fenced off and
    /// the upload is not acknowledged.
    pub fenced_by: Option<u64>,
}

/// Why a job did not store.
#[derive(Debug)]
pub(crate) struct UploadFailure {
    /// What went wrong.
    pub error: String,
    /// True if the upload panicked (a bug in a backend or below).
    pub panicked: bool,
}

/// Everything a worker needs for one job.
pub(crate) struct UploadTask<B: Backend, F> {
    /// Where the segment goes.
    pub backend: Arc<B>,
    /// Which backend place (the default or the namespace's override).
    pub config: B::Config,
    /// The generation the segments belong to.
    pub generation: Generation,
    /// Consecutive sealed segments, oldest first.
    pub segments: Vec<Arc<SealedSegment<F>>>,
    /// Jobs with at most this many bytes of frames are compacted in memory.
    pub in_memory_bytes: u64,
    /// Where larger jobs are compacted.
    pub scratch: Arc<Scratch>,
    /// The job id, for the scratch file's name.
    pub job: u64,
}

/// Where a job's compacted data is.
enum Compacted {
    /// In memory.
    Bytes(Vec<u8>),
    /// In a scratch file.
    File(ScratchFile),
}

/// Runs one job, turning a panic into a failure.
pub(crate) async fn run_job<B: Backend, F: FileExt>(
    task: UploadTask<B, F>,
) -> Result<UploadReport, UploadFailure> {
    match AssertUnwindSafe(upload(task)).catch_unwind().await {
        Ok(Ok(report)) => Ok(report),
        Ok(Err(e)) => Err(UploadFailure {
            error: e.to_string(),
            panicked: false,
        }),
        Err(panic) => Err(UploadFailure {
            error: format!("upload panicked: {}", panic_message(&*panic)),
            panicked: true,
        }),
    }
}

/// Returns the message of a panic payload.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string panic".into())
}

#[tracing::instrument(skip_all, fields(generation = %task.generation, job = task.job, segments = task.segments.len()))]
async fn upload<B: Backend, F: FileExt>(
    task: UploadTask<B, F>,
) -> Result<UploadReport, BackendError> {
    let frame_bytes: u64 = task
        .segments
        .iter()
        .map(|s| s.frame_count() * libsql_wal_segment::format::FRAME_SIZE as u64)
        .sum();
    let in_memory = frame_bytes <= task.in_memory_bytes;
    let (segments, scratch, job) = (task.segments.clone(), task.scratch.clone(), task.job);
    let compacted = tokio::task::spawn_blocking(move || {
        let refs: Vec<&SealedSegment<F>> = segments.iter().map(|s| &**s).collect();
        let segment_error =
            |e| BackendError::from_segment(&refs[0].path().display().to_string(), e);
        if in_memory {
            let mut data = Vec::with_capacity(frame_bytes as usize + 4096);
            let compacted = merge(&refs, &mut data).map_err(segment_error)?;
            Ok((compacted, Compacted::Bytes(data)))
        } else {
            let (file, guard) = scratch.create_upload_file(job).map_err(|e| {
                let path = scratch.upload_path(job);
                BackendError::transient(format!("creating the scratch file {}", path.display()), e)
            })?;
            // A failed merge drops the guard, which removes the file.
            let compacted = merge(&refs, std::io::BufWriter::with_capacity(1 << 20, file))
                .map_err(segment_error)?;
            Ok((compacted, Compacted::File(guard)))
        }
    })
    .await;
    let (compacted, data) = match compacted {
        Ok(result) => result?,
        Err(join) if join.is_panic() => {
            std::panic::resume_unwind(join.into_panic());
        }
        Err(join) => return Err(BackendError::transient("compacting an upload", join)),
    };
    if compacted.header.log_id != task.generation.log_id {
        return Err(BackendError::fatal(
            format!("uploading to {}", task.generation),
            format!(
                "the segments belong to log {}, the generation's log is {}",
                compacted.header.log_id, task.generation.log_id
            ),
        ));
    }
    let key = SegmentKey::from(&compacted.header);
    let index = compacted.index.encode();
    let bytes = compacted.data_len + index.len() as u64;
    let mut file = None;
    let data = match data {
        Compacted::Bytes(bytes) => SegmentData::Bytes(bytes),
        Compacted::File(guard) => SegmentData::File(file.insert(guard).path()),
    };
    let stored = task
        .backend
        .store_segment(&task.config, &task.generation, key, data, index)
        .await;
    if let Some(file) = file {
        file.remove().await;
    }
    stored?;
    // The fencing check, before anything is acknowledged: one listing of one key. A writer
    // that took the namespace over created its generation before it read what this one had
    // stored, so everything this check lets through is part of the new owner's history.
    let mut fenced_by = task
        .backend
        .newer_generation(
            &task.config,
            &task.generation.namespace,
            task.generation.number,
        )
        .await?;
    if let Some(newer) = fenced_by {
        // Fenced off: the error names the owner now, the newest generation, which may be newer
        // still than the first one found after this one (one more listing and record read, on
        // the uploads of a fenced writer only).
        let newest = task
            .backend
            .newest_generation(&task.config, &task.generation.namespace)
            .await;
        fenced_by = Some(match newest {
            Ok(Some(record)) => record.number.max(newer),
            Ok(None) => newer,
            Err(e) => {
                warn!(namespace = %task.generation.namespace, error = %e, "cannot read the newest generation; naming the first newer one");
                newer
            }
        });
    }
    debug!(%key, bytes, ?fenced_by, "upload stored");
    Ok(UploadReport { bytes, fenced_by })
}
