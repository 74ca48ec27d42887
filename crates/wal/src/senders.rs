//! The threads that hand sealed segments to storage off the writer's path, shared by every log
//! of the process: a pool of at most `MAX_SENDERS` threads, started as work arrives and
//! stopped after `IDLE` without any, so a seal costs its writer a queue push, not a thread.
//!
//! A job may wait a long time (on one namespace's full storage queue, during a bucket outage):
//! jobs past the threads busy wait in the queue, which holds at most one job per namespace (a
//! log queues one only while it has none queued or running).

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tracing::{error, warn};

/// At most this many threads at once: each may wait on one namespace's full queue, and an
/// outage of the bucket must not turn thousands of namespaces into thousands of threads.
const MAX_SENDERS: usize = 64;

/// A thread with no work this long stops.
const IDLE: Duration = Duration::from_secs(10);

/// A job: hands one log's unsent segments to storage.
pub(crate) type Job = Box<dyn FnOnce() + Send>;

struct Queue {
    jobs: VecDeque<Job>,
    threads: usize,
    idle: usize,
}

static QUEUE: Mutex<Queue> = Mutex::new(Queue {
    jobs: VecDeque::new(),
    threads: 0,
    idle: 0,
});
static WORK: Condvar = Condvar::new();

fn queue() -> MutexGuard<'static, Queue> {
    QUEUE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs `job` on a sender thread: an idle one, else a new one while there are fewer than
/// `MAX_SENDERS`, else the first to finish its job. Fails, dropping the job, only when no
/// thread runs and none can be started.
pub(crate) fn send(job: Job) -> std::io::Result<()> {
    let mut q = queue();
    q.jobs.push_back(job);
    if q.jobs.len() <= q.idle {
        WORK.notify_one();
        return Ok(());
    }
    if q.threads >= MAX_SENDERS {
        return Ok(());
    }
    match std::thread::Builder::new()
        .name("libsql-wal-send".into())
        .spawn(work)
    {
        Ok(_) => {
            q.threads += 1;
            Ok(())
        }
        Err(e) if q.threads == 0 => {
            q.jobs.pop_back();
            Err(e)
        }
        Err(e) => {
            warn!(error = %e, threads = q.threads, "cannot start another sender thread; the job waits for a busy one");
            Ok(())
        }
    }
}

/// A sender thread: runs queued jobs until it has waited `IDLE` with none.
fn work() {
    let mut q = queue();
    loop {
        if let Some(job) = q.jobs.pop_front() {
            drop(q);
            if catch_unwind(AssertUnwindSafe(job)).is_err() {
                error!("a job handing segments to storage panicked");
            }
            q = queue();
            continue;
        }
        q.idle += 1;
        let (guard, waited) = WORK
            .wait_timeout(q, IDLE)
            .unwrap_or_else(PoisonError::into_inner);
        q = guard;
        q.idle -= 1;
        if waited.timed_out() && q.jobs.is_empty() {
            q.threads -= 1;
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{mpsc, Arc};

    use super::*;

    #[test]
    fn every_job_runs_also_past_the_threads_a_waiting_job_holds() {
        let ran = Arc::new(AtomicUsize::new(0));
        let (done, finished) = mpsc::channel();
        for _ in 0..500 {
            let ran = ran.clone();
            let done = done.clone();
            send(Box::new(move || {
                ran.fetch_add(1, Ordering::SeqCst);
                done.send(()).unwrap();
            }))
            .unwrap();
        }
        for _ in 0..500 {
            finished.recv_timeout(Duration::from_secs(60)).unwrap();
        }
        assert_eq!(ran.load(Ordering::SeqCst), 500);
        // Jobs that wait hold their threads; the ones past the bound wait in the queue.
        let (release, gate) = mpsc::channel::<()>();
        let gate = Arc::new(Mutex::new(gate));
        for _ in 0..MAX_SENDERS + 10 {
            let gate = gate.clone();
            let done = done.clone();
            send(Box::new(move || {
                let _ = gate.lock().unwrap().recv();
                done.send(()).unwrap();
            }))
            .unwrap();
        }
        for _ in 0..MAX_SENDERS + 10 {
            release.send(()).unwrap();
        }
        for _ in 0..MAX_SENDERS + 10 {
            finished.recv_timeout(Duration::from_secs(60)).unwrap();
        }
    }

    #[test]
    fn a_job_that_panics_leaves_its_thread_working() {
        send(Box::new(|| panic!("injected"))).unwrap();
        let (done, finished) = mpsc::channel();
        send(Box::new(move || done.send(()).unwrap())).unwrap();
        finished.recv_timeout(Duration::from_secs(60)).unwrap();
    }
}
