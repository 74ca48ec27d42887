//! The background checkpointer: a fixed pool of threads that checkpoint namespaces when asked,
//! so at most `threads` namespaces copy segments into their database files at once, however
//! many are open. A namespace asks when a segment becomes durable, when it seals a segment
//! that storage will never make durable (local policy), and when its oldest reader ends; the
//! job copies only once the namespace's `CheckpointThreshold` is reached.
//!
//! The queue holds each namespace at most once (the namespace dedupes its own requests), so it
//! is bounded by the number of open namespaces.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;

/// Work the checkpointer runs.
pub(crate) trait CheckpointJob: Send + Sync {
    /// Checkpoints what can be checkpointed now; reports its own errors.
    fn run_checkpoint(&self);
}

/// Jobs waiting and whether the pool is stopping.
#[derive(Default)]
struct Queue {
    /// Namespaces waiting for a checkpoint, oldest request first.
    jobs: VecDeque<Arc<dyn CheckpointJob>>,
    /// Set by `stop`: workers finish the queue, then exit.
    stopping: bool,
}

/// State shared with the workers.
#[derive(Default)]
struct Shared {
    /// The queue.
    queue: Mutex<Queue>,
    /// Wakes workers when a job arrives or the pool stops.
    wake: Condvar,
}

/// A pool of checkpoint threads.
pub(crate) struct Checkpointer {
    /// Queue and signal.
    shared: Arc<Shared>,
    /// The worker threads, joined by `stop`.
    workers: Mutex<Vec<JoinHandle<()>>>,
}

impl Checkpointer {
    /// Starts `threads` workers (at least one).
    pub(crate) fn start(threads: usize) -> Self {
        let shared = Arc::new(Shared::default());
        let workers = (0..threads.max(1))
            .map(|i| {
                let shared = shared.clone();
                std::thread::Builder::new()
                    .name(format!("libsql-wal-checkpoint-{i}"))
                    .spawn(move || work(&shared))
            })
            .filter_map(|spawned| match spawned {
                Ok(handle) => Some(handle),
                Err(e) => {
                    tracing::error!(error = %e, "cannot start a checkpoint thread");
                    None
                }
            })
            .collect();
        Checkpointer {
            shared,
            workers: Mutex::new(workers),
        }
    }

    /// Queues `job`.
    pub(crate) fn enqueue(&self, job: Arc<dyn CheckpointJob>) {
        let mut queue = self
            .shared
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if !queue.stopping {
            queue.jobs.push_back(job);
            self.shared.wake.notify_one();
        }
    }

    /// Runs what is queued, then stops the workers and waits for them.
    pub(crate) fn stop(&self) {
        self.shared
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .stopping = true;
        self.shared.wake.notify_all();
        let workers =
            std::mem::take(&mut *self.workers.lock().unwrap_or_else(PoisonError::into_inner));
        let this_thread = std::thread::current().id();
        for worker in workers {
            // The last handle can be dropped by a worker itself (finishing a namespace's last
            // job): it exits on its own once the queue is empty; joining itself would deadlock.
            if worker.thread().id() == this_thread {
                continue;
            }
            if worker.join().is_err() {
                tracing::error!("a checkpoint thread panicked");
            }
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn work(shared: &Shared) {
    loop {
        let job = {
            let mut queue = shared.queue.lock().unwrap_or_else(PoisonError::into_inner);
            loop {
                if let Some(job) = queue.jobs.pop_front() {
                    break job;
                }
                if queue.stopping {
                    return;
                }
                queue = shared
                    .wake
                    .wait(queue)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        };
        job.run_checkpoint();
    }
}
