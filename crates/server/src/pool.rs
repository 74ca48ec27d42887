//! The SQL threads: a fixed pool of plain threads on which every SQLite call runs, so that a
//! statement waiting on SQLite's commit path (a full storage queue, a writer lock) never holds
//! an executor thread. A request waits for a free thread in arrival order: backpressure
//! reaches the client as latency.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Semaphore;

use crate::error::{Error, Result};

type Job = Box<dyn FnOnce() + Send>;

/// A fixed pool of threads running blocking jobs.
pub struct SqlPool {
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    free: Arc<Semaphore>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    /// Jobs waiting for a thread now, and the most that may.
    waiting: std::sync::atomic::AtomicUsize,
    max_waiting: usize,
}

/// Counts a job waiting for a thread while it lives.
struct Waiting<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl SqlPool {
    /// Starts `size` threads; at most `max_waiting` jobs wait for one (more are refused with
    /// `Overloaded`).
    pub fn new(size: usize, max_waiting: usize) -> Result<Self> {
        if size == 0 {
            return Err(Error::Config(
                "the SQL thread pool needs at least one thread".into(),
            ));
        }
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let mut threads = Vec::with_capacity(size);
        for i in 0..size {
            let rx = rx.clone();
            let thread = std::thread::Builder::new()
                .name(format!("libsql-wal-sql-{i}"))
                .spawn(move || loop {
                    let job = rx.lock().unwrap_or_else(PoisonError::into_inner).recv();
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                })
                .map_err(|source| Error::Start {
                    what: "an SQL thread",
                    source,
                })?;
            threads.push(thread);
        }
        Ok(SqlPool {
            jobs: Mutex::new(Some(tx)),
            free: Arc::new(Semaphore::new(size)),
            threads: Mutex::new(threads),
            waiting: std::sync::atomic::AtomicUsize::new(0),
            max_waiting,
        })
    }

    /// Fails with `Overloaded` if a job now would wait past the bound: checked before a
    /// request takes its stream, so that a refusal leaves the stream (and its transaction) as
    /// it was.
    pub fn admits(&self) -> Result<()> {
        let waiting = self.waiting.load(std::sync::atomic::Ordering::SeqCst);
        if waiting >= self.max_waiting {
            return Err(Error::Overloaded {
                waiting,
                threads: self.free.available_permits(),
            });
        }
        Ok(())
    }

    /// Runs `job` on a free thread (waiting for one) and returns what it returned; fails with
    /// `PoolStopped` if the pool stopped, `JobPanicked` if the job panicked.
    pub async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T> {
        let waiting = self
            .waiting
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let counted = Waiting(&self.waiting);
        if waiting >= self.max_waiting {
            return Err(Error::Overloaded {
                waiting,
                threads: self.free.available_permits(),
            });
        }
        let permit = self
            .free
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::PoolStopped)?;
        drop(counted);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _permit = permit;
            let result = std::panic::catch_unwind(AssertUnwindSafe(job));
            if result.is_err() {
                tracing::error!("a job on an SQL thread panicked");
            }
            let _ = tx.send(result);
        });
        {
            let jobs = self.jobs.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(jobs) = jobs.as_ref() else {
                return Err(Error::PoolStopped);
            };
            jobs.send(job).map_err(|_| Error::PoolStopped)?;
        }
        match rx.await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(_)) => Err(Error::JobPanicked),
            Err(_) => Err(Error::PoolStopped),
        }
    }

    /// Stops taking jobs and lets the threads finish what they took, waiting for them until
    /// `deadline`; returns how many were still running then (they end on their own).
    pub fn stop(&self, deadline: std::time::Instant) -> usize {
        self.close();
        let mut threads =
            std::mem::take(&mut *self.threads.lock().unwrap_or_else(PoisonError::into_inner));
        while !threads.is_empty() && std::time::Instant::now() < deadline {
            threads.retain(|t| !t.is_finished());
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        if !threads.is_empty() {
            tracing::warn!(
                threads = threads.len(),
                "SQL threads still running at the stop deadline are left to end on their own"
            );
        }
        threads.len()
    }

    fn close(&self) {
        self.free.close();
        self.jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }
}

impl Drop for SqlPool {
    /// The threads end once they finish what they took (nobody waits for them here).
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_run_off_the_executor_at_most_size_at_once_and_a_panic_is_an_error() {
        let pool = Arc::new(SqlPool::new(2, 100).expect("start"));
        let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut jobs = Vec::new();
        for _ in 0..8 {
            let (pool, running, most) = (pool.clone(), running.clone(), most.clone());
            jobs.push(tokio::spawn(async move {
                pool.run(move || {
                    let now = running.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                    most.fetch_max(now, std::sync::atomic::Ordering::SeqCst);
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    running.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                    std::thread::current().name().map(str::to_string)
                })
                .await
            }));
        }
        for job in jobs {
            let name = job.await.expect("join").expect("ran").expect("named");
            assert!(name.starts_with("libsql-wal-sql-"), "{name}");
        }
        assert!(most.load(std::sync::atomic::Ordering::SeqCst) <= 2);
        assert!(matches!(
            pool.run(|| panic!("boom")).await,
            Err(Error::JobPanicked)
        ));
        assert_eq!(pool.run(|| 7).await.expect("still running"), 7);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        assert_eq!(pool.stop(deadline), 0, "every thread ended");
        assert!(matches!(pool.run(|| 1).await, Err(Error::PoolStopped)));
    }
}
