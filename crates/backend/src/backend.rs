//! The `Backend` trait: the few object-store primitives a durable store must provide. Everything
//! about segments (layout, keys, verification) is built on top of it once, in `ext`, so a new
//! backend only implements these.
//!
//! Keys are relative to the backend's root (a directory, or a bucket and prefix chosen by the
//! backend's config), use `/` as separator, and are built only by this crate.

use std::fmt;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;

use tokio::io::AsyncRead;

use crate::error::Result;

/// The body of an object being read.
pub type ObjectReader = Pin<Box<dyn AsyncRead + Send>>;

/// An object store.
///
/// Contract, for every implementation:
/// - `put_file` and `put_bytes` either write the whole object or fail leaving no object (or the
///   previous one) under the key: a reader never sees part of an object.
/// - `get` of a missing object fails with `Error::NotFound`.
/// - `list` returns keys in lexicographic byte order.
/// - `delete` of a missing object is `Ok`.
/// - Failures that may pass on retry are `Error::Transient`; misconfiguration is `Error::Fatal`.
///
/// `Config` selects where objects go (a root directory, a bucket and prefix); equal configs
/// mean the same place. The backend has a
/// default one; callers may pass another per namespace (a tenant in its own bucket).
pub trait Backend: Send + Sync + fmt::Debug + 'static {
    /// Where objects are stored.
    type Config: Clone + fmt::Debug + PartialEq + Send + Sync + Unpin + 'static;

    /// Returns the configuration used when no override is given.
    fn default_config(&self) -> &Self::Config;

    /// Stores the content of the file at `source` as object `key`, streaming it (a large file is
    /// never held in memory whole).
    fn put_file(
        &self,
        config: &Self::Config,
        key: &str,
        source: &Path,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Stores `bytes` as object `key`.
    fn put_bytes(
        &self,
        config: &Self::Config,
        key: &str,
        bytes: Vec<u8>,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Opens object `key` for reading.
    fn get(
        &self,
        config: &Self::Config,
        key: &str,
    ) -> impl Future<Output = Result<ObjectReader>> + Send;

    /// Returns up to `max_keys` keys that start with `prefix` and sort after `start_after`
    /// (after nothing when `None`), in order.
    fn list(
        &self,
        config: &Self::Config,
        prefix: &str,
        start_after: Option<&str>,
        max_keys: usize,
    ) -> impl Future<Output = Result<Vec<String>>> + Send;

    /// Returns the names of the directories directly under `prefix` (which ends with `/` or is
    /// empty for the root), in order.
    fn list_children(
        &self,
        config: &Self::Config,
        prefix: &str,
    ) -> impl Future<Output = Result<Vec<String>>> + Send;

    /// Deletes object `key`; a missing object is not an error.
    fn delete(&self, config: &Self::Config, key: &str) -> impl Future<Output = Result<()>> + Send;
}
