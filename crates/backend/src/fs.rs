//! The fs backend, the embedded default: objects are files under a root directory, with the same
//! layout as in a bucket. Writes are atomic: the bytes go to a temporary file under
//! `{root}/.tmp`, are fsynced, renamed into place, and the directory is fsynced (with the parent
//! of every directory created for it, up to the first that existed), so a crash leaves either
//! the whole object or none (and at most a stray temporary file, removed by the
//! next backend started on the root once it is `STALE_TMP_AGE` old).
//!
//! Keys map to paths one to one (`validate_key` refuses every other key), and `list` matches
//! keys by string prefix across directories, as S3 does.
//!
//! Several backends may share a root at once (a server and a maintenance command, or several
//! storages in one process): each names its temporary files after its own random id, and a
//! starting backend removes only temporary files nobody wrote to for `STALE_TMP_AGE`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use libsql_wal_segment::create_dir_all_durably;
use tokio::io::AsyncWriteExt;
use tracing::{debug, instrument};

use crate::backend::{validate_key, validate_prefix, Backend, ObjectReader, ObjectStat};
use crate::error::{Error, Result};

/// Directory under the root that holds files being written.
const TMP_DIR: &str = ".tmp";

/// A temporary file nobody wrote to for this long was left by a crash (a live writer's file
/// changes as it writes, and a write takes far less).
const STALE_TMP_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

/// What an object is written from.
enum Content<'a> {
    /// Bytes in memory.
    Bytes(Vec<u8>),
    /// The content of a file.
    File(&'a Path),
}

/// Where the fs backend keeps objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsConfig {
    /// The root directory.
    pub root: PathBuf,
}

/// Objects as files under a root directory.
#[derive(Debug)]
pub struct FsBackend {
    /// The default root.
    config: FsConfig,
    /// This backend's id: its temporary files are `{id}-{n}`, unique among every backend
    /// sharing the root.
    id: uuid::Uuid,
    /// Makes temporary file names unique within this backend.
    next_tmp: AtomicU64,
}

/// Removes the files of `dir` nobody modified for `STALE_TMP_AGE`.
async fn remove_stale_files(dir: &Path) -> Result<()> {
    let mut entries = tokio::fs::read_dir(dir)
        .await
        .map_err(|e| local("cleaning", dir, e))?;
    while let Some(entry) = entries
        .next_entry()
        .await
        .map_err(|e| local("cleaning", dir, e))?
    {
        let path = entry.path();
        let modified = match entry.metadata().await.and_then(|m| m.modified()) {
            Ok(modified) => modified,
            // Published or removed by its writer meanwhile.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(local("cleaning", &path, e)),
        };
        if modified.elapsed().is_ok_and(|age| age >= STALE_TMP_AGE) {
            match tokio::fs::remove_file(&path).await {
                Ok(()) => debug!(path = %path.display(), "removed a stale temporary file"),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(local("cleaning", &path, e)),
            }
        }
    }
    Ok(())
}

fn local(context: impl std::fmt::Display, path: &Path, e: std::io::Error) -> Error {
    Error::transient(format!("{context} {}", path.display()), e)
}

async fn sync_dir(dir: &Path) -> Result<()> {
    let handle = tokio::fs::File::open(dir)
        .await
        .map_err(|e| local("opening directory", dir, e))?;
    handle
        .sync_all()
        .await
        .map_err(|e| local("syncing directory", dir, e))
}

/// Creates `dir` and its missing ancestors durably (`create_dir_all_durably`: the parent of each
/// directory created is fsynced, up to the first that existed), on tokio's blocking pool.
async fn create_dir_all_synced(dir: &Path) -> Result<()> {
    let owned = dir.to_path_buf();
    tokio::task::spawn_blocking(move || create_dir_all_durably(&owned))
        .await
        .map_err(|e| Error::transient(format!("creating {}", dir.display()), e))?
        .map(drop)
        .map_err(|e| local("creating", dir, e))
}

/// Returns the entries of `dir` with UTF-8 names (no other name can be a key), and their
/// types; a missing directory has none.
async fn dir_entries(dir: &Path) -> Result<Vec<(String, std::fs::FileType)>> {
    let mut entries = match tokio::fs::read_dir(dir).await {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(local("listing", dir, e)),
    };
    let mut out = Vec::new();
    while let Some(entry) = entries
        .next_entry()
        .await
        .map_err(|e| local("listing", dir, e))?
    {
        let kind = entry
            .file_type()
            .await
            .map_err(|e| local("listing", dir, e))?;
        if let Ok(name) = entry.file_name().into_string() {
            out.push((name, kind));
        }
    }
    Ok(out)
}

impl FsBackend {
    /// Returns a backend rooted at `root`, creating it if needed and removing temporary files
    /// that a crash left behind (those untouched for `STALE_TMP_AGE`).
    pub async fn new(root: impl Into<PathBuf>) -> Result<Self> {
        let config = FsConfig { root: root.into() };
        let tmp = config.root.join(TMP_DIR);
        tokio::fs::create_dir_all(&tmp)
            .await
            .map_err(|e| Error::fatal(format!("creating {}", tmp.display()), e))?;
        remove_stale_files(&tmp).await?;
        Ok(Self::at(config))
    }

    fn at(config: FsConfig) -> Self {
        FsBackend {
            config,
            id: uuid::Uuid::new_v4(),
            next_tmp: AtomicU64::new(0),
        }
    }

    /// Returns a backend over the existing bucket directory `root` for a process that only
    /// reads it (a replica reading its primary's bucket): unlike `new`, it creates nothing and
    /// removes none of the writer's temporary files.
    pub async fn reading(root: impl Into<PathBuf>) -> Result<Self> {
        let config = FsConfig { root: root.into() };
        let metadata = tokio::fs::metadata(&config.root)
            .await
            .map_err(|e| Error::fatal(format!("opening {}", config.root.display()), e))?;
        if !metadata.is_dir() {
            return Err(Error::fatal(
                format!("opening {}", config.root.display()),
                std::io::Error::other("not a directory"),
            ));
        }
        Ok(Self::at(config))
    }

    /// Returns the path of object `key`, once `key` is checked: valid for every backend, and
    /// not under the directory of files being written.
    fn path(config: &FsConfig, key: &str) -> Result<PathBuf> {
        validate_key(key)?;
        if key.split('/').next() == Some(TMP_DIR) {
            return Err(Error::InvalidKey {
                key: key.to_string(),
                why: "is under the fs backend's directory of files being written",
            });
        }
        Ok(config.root.join(key))
    }

    /// Returns a fresh temporary path under `config`'s root.
    async fn tmp_path(&self, config: &FsConfig) -> Result<PathBuf> {
        let dir = config.root.join(TMP_DIR);
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| local("creating", &dir, e))?;
        let n = self.next_tmp.fetch_add(1, Ordering::Relaxed);
        Ok(dir.join(format!("{}-{n}", self.id)))
    }

    /// Moves the finished temporary file `tmp` to object `key`, durably: replacing what was
    /// there, or, when `replace` is false, leaving an existing object as it is and returning
    /// false (a hard link never replaces).
    async fn publish(tmp: &Path, dest: &Path, replace: bool) -> Result<bool> {
        let dir = dest.parent().ok_or_else(|| {
            Error::fatal(
                "storing an object",
                format!("{} has no parent", dest.display()),
            )
        })?;
        // A delete removing the directory once it is empty can race this: then once more.
        for attempt in 0..2 {
            create_dir_all_synced(dir).await?;
            let placed = if replace {
                tokio::fs::rename(tmp, dest).await
            } else {
                tokio::fs::hard_link(tmp, dest).await
            };
            match placed {
                Ok(()) => break,
                Err(e) if !replace && e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let _ = tokio::fs::remove_file(tmp).await;
                    return Ok(false);
                }
                Err(e) if attempt == 0 && e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(local("placing", dest, e)),
            }
        }
        if !replace {
            tokio::fs::remove_file(tmp)
                .await
                .map_err(|e| local("removing", tmp, e))?;
        }
        sync_dir(dir).await?;
        Ok(true)
    }

    /// Writes `content` to a fresh temporary file, fsyncs it, then publishes it as `key` (see
    /// `publish` for `replace` and the result); removes the temporary file on failure.
    async fn put_content(
        &self,
        config: &FsConfig,
        key: &str,
        content: Content<'_>,
        replace: bool,
    ) -> Result<bool> {
        let dest = Self::path(config, key)?;
        let tmp = self.tmp_path(config).await?;
        let result = async {
            match content {
                Content::Bytes(bytes) => {
                    let mut file = tokio::fs::File::create(&tmp)
                        .await
                        .map_err(|e| local("creating", &tmp, e))?;
                    file.write_all(&bytes)
                        .await
                        .map_err(|e| local("writing", &tmp, e))?;
                    file.sync_all()
                        .await
                        .map_err(|e| local("syncing", &tmp, e))?;
                }
                Content::File(source) => {
                    tokio::fs::copy(source, &tmp).await.map_err(|e| {
                        if e.kind() == std::io::ErrorKind::NotFound {
                            Error::fatal(format!("reading {}", source.display()), e)
                        } else {
                            local("copying to", &tmp, e)
                        }
                    })?;
                    let file = tokio::fs::File::open(&tmp)
                        .await
                        .map_err(|e| local("opening", &tmp, e))?;
                    file.sync_all()
                        .await
                        .map_err(|e| local("syncing", &tmp, e))?;
                }
            }
            Self::publish(&tmp, &dest, replace).await
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        result
    }
}

impl Backend for FsBackend {
    type Config = FsConfig;

    fn default_config(&self) -> &FsConfig {
        &self.config
    }

    #[instrument(skip(self, config), fields(root = %config.root.display()), level = "debug")]
    async fn put_file(&self, config: &FsConfig, key: &str, source: &Path) -> Result<()> {
        self.put_content(config, key, Content::File(source), true)
            .await
            .map(drop)
    }

    #[instrument(skip(self, config, bytes), fields(root = %config.root.display(), len = bytes.len()), level = "debug")]
    async fn put_bytes(&self, config: &FsConfig, key: &str, bytes: Vec<u8>) -> Result<()> {
        self.put_content(config, key, Content::Bytes(bytes), true)
            .await
            .map(drop)
    }

    #[instrument(skip(self, config, bytes), fields(root = %config.root.display(), len = bytes.len()), level = "debug")]
    async fn put_bytes_if_absent(
        &self,
        config: &FsConfig,
        key: &str,
        bytes: Vec<u8>,
    ) -> Result<bool> {
        self.put_content(config, key, Content::Bytes(bytes), false)
            .await
    }

    #[instrument(skip(self, config), fields(root = %config.root.display()), level = "debug")]
    async fn get(&self, config: &FsConfig, key: &str) -> Result<ObjectReader> {
        let path = Self::path(config, key)?;
        match tokio::fs::File::open(&path).await {
            Ok(file) => Ok(Box::pin(tokio::io::BufReader::with_capacity(1 << 20, file))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::NotFound {
                key: key.to_string(),
            }),
            Err(e) => Err(local("opening", &path, e)),
        }
    }

    #[instrument(skip(self, config), fields(root = %config.root.display()), level = "debug")]
    async fn stat(&self, config: &FsConfig, key: &str) -> Result<ObjectStat> {
        let path = Self::path(config, key)?;
        let meta = match tokio::fs::metadata(&path).await {
            Ok(meta) if meta.is_file() => meta,
            Ok(_) => {
                return Err(Error::NotFound {
                    key: key.to_string(),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotFound {
                    key: key.to_string(),
                })
            }
            Err(e) => return Err(local("reading the metadata of", &path, e)),
        };
        let modified = meta
            .modified()
            .map_err(|e| local("reading the modification time of", &path, e))?;
        Ok(ObjectStat {
            len: meta.len(),
            // Before the epoch: a clock set wrong when it was written; as old as can be.
            modified_ms: modified
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        })
    }

    #[instrument(skip(self, config), fields(root = %config.root.display()), level = "debug")]
    async fn list(
        &self,
        config: &FsConfig,
        prefix: &str,
        start_after: Option<&str>,
        max_keys: usize,
    ) -> Result<Vec<String>> {
        validate_prefix(prefix)?;
        // Keys match by string prefix, as in S3: walk the directory the prefix names up to its
        // last `/`, and below it only the directories whose keys can start with the prefix
        // and sort after `start_after`.
        let dir_part = prefix.rfind('/').map_or("", |at| &prefix[..=at]);
        let mut keys = Vec::new();
        let mut dirs = vec![dir_part.to_string()];
        while let Some(dir) = dirs.pop() {
            for (name, kind) in dir_entries(&config.root.join(&dir)).await? {
                if dir.is_empty() && name == TMP_DIR {
                    continue;
                }
                let key = format!("{dir}{name}");
                if kind.is_dir() {
                    let below = key + "/";
                    let may_match = below.starts_with(prefix) || prefix.starts_with(&below);
                    // Every key below sorts after `below`, and before `start_after` when
                    // `below` does and is not a prefix of it.
                    let may_follow = start_after
                        .is_none_or(|after| below.as_str() > after || after.starts_with(&below));
                    if may_match && may_follow {
                        dirs.push(below);
                    }
                } else if kind.is_file()
                    && key.starts_with(prefix)
                    && start_after.is_none_or(|after| key.as_str() > after)
                {
                    keys.push(key);
                }
            }
        }
        keys.sort_unstable();
        keys.truncate(max_keys);
        debug!(count = keys.len(), "listed");
        Ok(keys)
    }

    #[instrument(skip(self, config), fields(root = %config.root.display()), level = "debug")]
    async fn list_children(&self, config: &FsConfig, prefix: &str) -> Result<Vec<String>> {
        validate_prefix(prefix)?;
        let mut names: Vec<String> = dir_entries(&config.root.join(prefix))
            .await?
            .into_iter()
            .filter(|(name, kind)| kind.is_dir() && name != TMP_DIR)
            .map(|(name, _)| name)
            .collect();
        names.sort_unstable();
        Ok(names)
    }

    #[instrument(skip(self, config), fields(root = %config.root.display()), level = "debug")]
    async fn delete(&self, config: &FsConfig, key: &str) -> Result<()> {
        let path = Self::path(config, key)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(local("deleting", &path, e)),
        }
        // Directories left empty go too (a deleted namespace is listed no more); the first
        // that is not empty, or that a writer just filled, stays.
        let mut dir = path.parent();
        while let Some(d) = dir.filter(|d| *d != config.root) {
            if tokio::fs::remove_dir(d).await.is_err() {
                break;
            }
            dir = d.parent();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn publishing_under_a_file_fails_naming_the_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let backend = FsBackend::new(tmp.path()).await.unwrap();
        let config = backend.default_config();
        backend
            .put_bytes(config, "ns/file", b"x".to_vec())
            .await
            .unwrap();
        let err = backend
            .put_bytes(config, "ns/file/z", b"y".to_vec())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("ns/file"), "{err}");
        assert_eq!(std::fs::read(tmp.path().join("ns/file")).unwrap(), b"x");
    }

    #[tokio::test]
    async fn publishing_creates_the_object_directories() {
        let tmp = tempfile::tempdir().unwrap();
        let backend = FsBackend::new(tmp.path()).await.unwrap();
        backend
            .put_bytes(
                backend.default_config(),
                "ns/segments/key",
                b"data".to_vec(),
            )
            .await
            .unwrap();
        assert_eq!(
            std::fs::read(tmp.path().join("ns/segments/key")).unwrap(),
            b"data"
        );
    }
}
