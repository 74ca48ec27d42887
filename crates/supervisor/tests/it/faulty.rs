//! `FaultyBackend`: a real backend wrapped to inject faults into segment uploads (the data
//! object of each store): a seeded fraction fails (transient), another panics, some are
//! delayed, the next few can be made to fail, and a gate can stall every upload until opened
//! (another gate stalls reads). It records the key of every data object stored, in the order
//! they were stored. This is the tests' only mock, for faults.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use libsql_wal_backend::{Backend, Error, ObjectReader, Result, SegmentKey};
use tokio::sync::watch;

/// What to inject, per data upload.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// Per mille of uploads that fail.
    pub fail_per_mille: u64,
    /// Per mille of uploads that panic.
    pub panic_per_mille: u64,
    /// Per mille of uploads delayed by `delay`.
    pub delay_per_mille: u64,
    /// The delay.
    pub delay: Duration,
}

/// A backend that injects `Faults` into data uploads.
#[derive(Debug)]
pub struct FaultyBackend<B> {
    inner: B,
    faults: Faults,
    /// xorshift state.
    rng: Mutex<u64>,
    /// False while uploads are stalled.
    open: watch::Sender<bool>,
    /// False while reads (get, list) are stalled.
    reads_open: watch::Sender<bool>,
    /// Data uploads stalled at the gate now.
    pub stalled_uploads: AtomicU64,
    /// Reads stalled at their gate now.
    pub stalled_reads: AtomicU64,
    /// Data uploads still to fail, whatever the dice say.
    fail_next: AtomicU64,
    /// (namespace, key) of every data object stored, in order.
    stored: Mutex<Vec<(String, SegmentKey)>>,
    /// The thread each stored data object was written from, by key.
    put_threads: Mutex<Vec<(SegmentKey, String)>>,
    /// Failures injected.
    pub failures: AtomicU64,
    /// Panics injected.
    pub panics: AtomicU64,
}

impl<B: Backend> FaultyBackend<B> {
    pub fn new(inner: B, faults: Faults, seed: u64) -> Self {
        FaultyBackend {
            inner,
            faults,
            rng: Mutex::new(seed | 1),
            open: watch::Sender::new(true),
            reads_open: watch::Sender::new(true),
            stalled_uploads: AtomicU64::new(0),
            stalled_reads: AtomicU64::new(0),
            fail_next: AtomicU64::new(0),
            stored: Mutex::new(Vec::new()),
            put_threads: Mutex::new(Vec::new()),
            failures: AtomicU64::new(0),
            panics: AtomicU64::new(0),
        }
    }

    /// Stalls (false) or resumes (true) every data upload.
    pub fn set_open(&self, open: bool) {
        self.open.send_replace(open);
    }

    /// Stalls (false) or resumes (true) every read.
    pub fn set_reads_open(&self, open: bool) {
        self.reads_open.send_replace(open);
    }

    /// Makes the next `count` data uploads fail.
    pub fn fail_next(&self, count: u64) {
        self.fail_next.store(count, Ordering::SeqCst);
    }

    /// Waits for the reads gate, counted in `stalled_reads` meanwhile.
    async fn before_read(&self) {
        let mut open = self.reads_open.subscribe();
        if !*open.borrow_and_update() {
            self.stalled_reads.fetch_add(1, Ordering::SeqCst);
            let _ = open.wait_for(|open| *open).await;
            self.stalled_reads.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Returns the (namespace, key) of every data object stored, in order.
    pub fn stored(&self) -> Vec<(String, SegmentKey)> {
        self.stored.lock().unwrap().clone()
    }

    fn roll(&self) -> u64 {
        let mut x = self.rng.lock().unwrap();
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x % 1000
    }

    /// Applies the faults to the upload of `key`; returns an error to report, or panics.
    async fn before_data_put(&self, key: &str) -> Result<()> {
        if !key.contains("/segments/") {
            return Ok(());
        }
        let mut open = self.open.subscribe();
        if !*open.borrow_and_update() {
            self.stalled_uploads.fetch_add(1, Ordering::SeqCst);
            let _ = open.wait_for(|open| *open).await;
            self.stalled_uploads.fetch_sub(1, Ordering::SeqCst);
        }
        let forced = self
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if forced {
            self.failures.fetch_add(1, Ordering::SeqCst);
            return Err(Error::transient(
                format!("storing {key}"),
                "injected failure",
            ));
        }
        let roll = self.roll();
        if roll < self.faults.delay_per_mille {
            tokio::time::sleep(self.faults.delay).await;
        }
        let roll = self.roll();
        if roll < self.faults.fail_per_mille {
            self.failures.fetch_add(1, Ordering::SeqCst);
            return Err(Error::transient(
                format!("storing {key}"),
                "injected failure",
            ));
        }
        if roll < self.faults.fail_per_mille + self.faults.panic_per_mille {
            self.panics.fetch_add(1, Ordering::SeqCst);
            panic!("injected panic while storing {key}");
        }
        Ok(())
    }

    fn record(&self, key: &str) {
        if let Some((generation, segment)) = key.split_once("/segments/") {
            let namespace = generation.split('/').next().unwrap_or(generation);
            let segment: SegmentKey = segment.parse().unwrap();
            let thread = std::thread::current().name().unwrap_or("").to_string();
            self.put_threads.lock().unwrap().push((segment, thread));
            self.stored
                .lock()
                .unwrap()
                .push((namespace.to_string(), segment));
        }
    }

    /// Returns, for every data object stored, its key and the name of the thread that stored
    /// it.
    pub fn put_threads(&self) -> Vec<(SegmentKey, String)> {
        self.put_threads.lock().unwrap().clone()
    }
}

impl<B: Backend> Backend for FaultyBackend<B> {
    type Config = B::Config;

    fn default_config(&self) -> &Self::Config {
        self.inner.default_config()
    }

    async fn put_file(&self, config: &Self::Config, key: &str, source: &Path) -> Result<()> {
        self.before_data_put(key).await?;
        self.inner.put_file(config, key, source).await?;
        self.record(key);
        Ok(())
    }

    async fn put_bytes(&self, config: &Self::Config, key: &str, bytes: Vec<u8>) -> Result<()> {
        self.before_data_put(key).await?;
        self.inner.put_bytes(config, key, bytes).await?;
        self.record(key);
        Ok(())
    }

    async fn put_bytes_if_absent(
        &self,
        config: &Self::Config,
        key: &str,
        bytes: Vec<u8>,
    ) -> Result<bool> {
        self.inner.put_bytes_if_absent(config, key, bytes).await
    }

    async fn get(&self, config: &Self::Config, key: &str) -> Result<ObjectReader> {
        self.before_read().await;
        self.inner.get(config, key).await
    }

    async fn list(
        &self,
        config: &Self::Config,
        prefix: &str,
        start_after: Option<&str>,
        max_keys: usize,
    ) -> Result<Vec<String>> {
        self.before_read().await;
        self.inner.list(config, prefix, start_after, max_keys).await
    }

    async fn list_children(&self, config: &Self::Config, prefix: &str) -> Result<Vec<String>> {
        self.before_read().await;
        self.inner.list_children(config, prefix).await
    }

    async fn stat(
        &self,
        config: &Self::Config,
        key: &str,
    ) -> Result<libsql_wal_backend::ObjectStat> {
        self.before_read().await;
        self.inner.stat(config, key).await
    }

    async fn delete(&self, config: &Self::Config, key: &str) -> Result<()> {
        self.inner.delete(config, key).await
    }
}
