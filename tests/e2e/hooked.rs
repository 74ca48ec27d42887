//! `HookedBackend`: a real backend with a hook that runs before every call and may fail it or
//! hold it back. A test double used only to inject faults (a process killed part way, a slow
//! bucket); the calls themselves go to the real backend.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use libsql_wal_backend::{Backend, ObjectReader, Result};

/// Which backend call the hook is asked about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    Put,
    /// A conditional create (`put_bytes_if_absent`: generation records).
    Create,
    Get,
    List,
    Delete,
}

/// Runs before a call to `key` (the prefix, for a listing); an error fails the call.
pub type Hook =
    Arc<dyn Fn(Call, &str) -> Pin<Box<dyn Future<Output = Result<()>> + Send>> + Send + Sync>;

pub struct HookedBackend<B> {
    inner: B,
    hook: Hook,
}

impl<B: std::fmt::Debug> std::fmt::Debug for HookedBackend<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HookedBackend")
            .field("inner", &self.inner)
            .finish()
    }
}

impl<B> HookedBackend<B> {
    pub fn new(inner: B, hook: Hook) -> Self {
        HookedBackend { inner, hook }
    }
}

impl<B: Backend> Backend for HookedBackend<B> {
    type Config = B::Config;

    fn default_config(&self) -> &B::Config {
        self.inner.default_config()
    }

    async fn put_file(&self, config: &B::Config, key: &str, source: &Path) -> Result<()> {
        (self.hook)(Call::Put, key).await?;
        self.inner.put_file(config, key, source).await
    }

    async fn put_bytes(&self, config: &B::Config, key: &str, bytes: Vec<u8>) -> Result<()> {
        (self.hook)(Call::Put, key).await?;
        self.inner.put_bytes(config, key, bytes).await
    }

    async fn put_bytes_if_absent(
        &self,
        config: &B::Config,
        key: &str,
        bytes: Vec<u8>,
    ) -> Result<bool> {
        (self.hook)(Call::Create, key).await?;
        self.inner.put_bytes_if_absent(config, key, bytes).await
    }

    async fn get(&self, config: &B::Config, key: &str) -> Result<ObjectReader> {
        (self.hook)(Call::Get, key).await?;
        self.inner.get(config, key).await
    }

    async fn list(
        &self,
        config: &B::Config,
        prefix: &str,
        start_after: Option<&str>,
        max_keys: usize,
    ) -> Result<Vec<String>> {
        (self.hook)(Call::List, prefix).await?;
        self.inner.list(config, prefix, start_after, max_keys).await
    }

    async fn list_children(&self, config: &B::Config, prefix: &str) -> Result<Vec<String>> {
        (self.hook)(Call::List, prefix).await?;
        self.inner.list_children(config, prefix).await
    }

    async fn stat(&self, config: &B::Config, key: &str) -> Result<libsql_wal_backend::ObjectStat> {
        (self.hook)(Call::Get, key).await?;
        self.inner.stat(config, key).await
    }

    async fn delete(&self, config: &B::Config, key: &str) -> Result<()> {
        (self.hook)(Call::Delete, key).await?;
        self.inner.delete(config, key).await
    }
}
