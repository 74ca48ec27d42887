//! The `Backend` trait: the few object-store primitives a durable store must provide. Everything
//! about segments (layout, keys, verification) is built on top of it once, in `ext`, so a new
//! backend only implements these.
//!
//! Keys are relative to the backend's root (a directory, or a bucket and prefix chosen by the
//! backend's config), use `/` as separator, and are built only by this crate. Every backend
//! checks the keys and prefixes it is given with `validate_key` and `validate_prefix`, so that
//! no key escapes its root or names one object two ways, whatever the backend.

use std::fmt;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;

use tokio::io::AsyncRead;

use crate::error::{Error, Result};

/// Checks that `key` can name an object in every backend: relative, made of `/`-separated
/// components that are non-empty and neither `.` nor `..`, without NUL or backslash. Returns
/// `Error::InvalidKey` naming the key and what is wrong with it otherwise.
pub fn validate_key(key: &str) -> Result<()> {
    validate(key, false)
}

/// Checks a prefix of keys (`list`, `list_children`): as `validate_key`, except that it may be
/// empty and may end with `/` (its last component empty) or in the middle of a component.
pub fn validate_prefix(prefix: &str) -> Result<()> {
    validate(prefix, true)
}

/// Checks a key, or a prefix of keys when `prefix`.
fn validate(key: &str, prefix: bool) -> Result<()> {
    let invalid = |why| {
        Err(Error::InvalidKey {
            key: key.to_string(),
            why,
        })
    };
    if key.is_empty() {
        return if prefix { Ok(()) } else { invalid("is empty") };
    }
    if key.contains('\0') {
        return invalid("contains a NUL byte");
    }
    if key.contains('\\') {
        return invalid("contains a backslash");
    }
    if key.starts_with('/') {
        return invalid("is absolute");
    }
    let mut components = key.split('/').peekable();
    while let Some(component) = components.next() {
        let last = components.peek().is_none();
        match component {
            "" if prefix && last => {}
            "" => return invalid("has an empty component"),
            "." | ".." => return invalid("has a '.' or '..' component"),
            _ => {}
        }
    }
    Ok(())
}

/// The body of an object being read.
pub type ObjectReader = Pin<Box<dyn AsyncRead + Send>>;

/// What `Backend::stat` knows of an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectStat {
    /// Its length in bytes.
    pub len: u64,
    /// When it was last written, in milliseconds since the Unix epoch by the backend's clock
    /// (S3's `Last-Modified`, a file's mtime).
    pub modified_ms: u64,
}

/// An object store.
///
/// Contract, for every implementation:
/// - `put_file` and `put_bytes` either write the whole object or fail leaving no object (or the
///   previous one) under the key: a reader never sees part of an object.
/// - `get` of a missing object fails with `Error::NotFound`.
/// - `list` returns keys in lexicographic byte order.
/// - `delete` of a missing object is `Ok`.
/// - `put_bytes_if_absent` is a conditional write: of two callers creating one key, exactly one
///   gets `true`, and an existing object is never replaced (fs: a hard link, which never
///   replaces; S3: `If-None-Match: *`). Generations and fencing rest on it.
/// - Failures that may pass on retry are `Error::Transient`; misconfiguration is `Error::Fatal`.
/// - A key refused by `validate_key`, or a prefix refused by `validate_prefix`, fails with
///   `Error::InvalidKey` before anything is read or written. `start_after` is only compared
///   with keys, never used as a path: any string is fine.
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

    /// Stores `bytes` as object `key` only if no object has that key: returns `true` if this
    /// call created it, `false` if an object was already there (which is left as it was).
    fn put_bytes_if_absent(
        &self,
        config: &Self::Config,
        key: &str,
        bytes: Vec<u8>,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Opens object `key` for reading.
    fn get(
        &self,
        config: &Self::Config,
        key: &str,
    ) -> impl Future<Output = Result<ObjectReader>> + Send;

    /// Returns up to `max_keys` keys that start with `prefix` and sort after `start_after`
    /// (after nothing when `None`), in order. `prefix` is a string prefix, as in S3, not a
    /// directory: `ns/segments/0000` matches `ns/segments/00001-...`, and `ns/` every key below
    /// `ns`, however deep.
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

    /// Returns object `key`'s length and when it was last written (see `ObjectStat`);
    /// `NotFound` if it does not exist. One request (S3: `HeadObject`).
    fn stat(
        &self,
        config: &Self::Config,
        key: &str,
    ) -> impl Future<Output = Result<ObjectStat>> + Send;

    /// Deletes object `key`; a missing object is not an error.
    fn delete(&self, config: &Self::Config, key: &str) -> impl Future<Output = Result<()>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_prefixes_are_relative_paths_of_plain_components() {
        for key in [
            "a",
            "ns/segments/0001-2-3",
            "ns/.hidden/x",
            "a/..b/c.",
            "a b/ü",
        ] {
            assert!(validate_key(key).is_ok(), "{key:?}");
            assert!(validate_prefix(key).is_ok(), "{key:?} as a prefix");
        }
        for prefix in ["", "ns/", "ns/segments/", "ns/seg"] {
            assert!(validate_prefix(prefix).is_ok(), "{prefix:?}");
        }
        for (key, why) in [
            ("", "is empty"),
            ("ns/", "has an empty component"),
            ("a//b", "has an empty component"),
            ("/a", "is absolute"),
            ("a/../b", "has a '.' or '..' component"),
            ("./a", "has a '.' or '..' component"),
            ("a\0b", "contains a NUL byte"),
            ("a\\b", "contains a backslash"),
        ] {
            match validate_key(key) {
                Err(Error::InvalidKey {
                    key: named,
                    why: said,
                }) => {
                    assert_eq!((named.as_str(), said), (key, why))
                }
                other => panic!("{key:?}: {other:?}"),
            }
        }
        for prefix in ["a//", "/", "..", "a/.", "a/../", "\\"] {
            assert!(validate_prefix(prefix).is_err(), "{prefix:?}");
        }
    }
}
