//! What the commands share: where durable storage is (`--data-dir`, `--storage`, `--s3-*`),
//! durations as operators write them (`250ms`, `10s`, `5m`, `2h`, `7d`), and logging
//! (`--log-format`, `RUST_LOG`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, ValueEnum};

/// Where durable storage is.
#[derive(Debug, Clone, Args)]
pub struct StorageArgs {
    /// Durable storage: a directory (`file:///path` or a plain path), or `s3://bucket/prefix`.
    /// Default: the directory `bucket` under the data directory.
    #[arg(long, env = "LIBSQL_WAL_STORAGE")]
    pub storage: Option<String>,
    /// An S3-compatible endpoint (for example `http://127.0.0.1:9000`); AWS when not given.
    /// Credentials come from the standard AWS chain (environment, profile, instance role).
    #[arg(long, env = "LIBSQL_WAL_S3_ENDPOINT", hide_env_values = true)]
    pub s3_endpoint: Option<String>,
    /// The S3 region (default: from the AWS environment, or `us-east-1` with an endpoint).
    #[arg(long, env = "LIBSQL_WAL_S3_REGION")]
    pub s3_region: Option<String>,
}

/// The bucket an operator command works on, named by the same flags as `run`'s.
#[derive(Debug, Clone, Args)]
pub struct BucketArgs {
    /// The data directory of the server whose bucket this is (its `bucket` directory is the
    /// default storage).
    #[arg(long, env = "LIBSQL_WAL_DATA_DIR", default_value = "libsql-wal-data")]
    pub data_dir: PathBuf,
    /// Durable storage.
    #[command(flatten)]
    pub storage: StorageArgs,
}

/// Where durable storage is, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageLocation {
    /// A directory.
    Fs(PathBuf),
    /// An S3 bucket and key prefix.
    S3 {
        /// The bucket.
        bucket: String,
        /// The prefix (may be empty).
        prefix: String,
    },
}

impl std::fmt::Display for StorageLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StorageLocation::Fs(path) => write!(f, "{}", path.display()),
            StorageLocation::S3 { bucket, prefix } if prefix.is_empty() => {
                write!(f, "s3://{bucket}")
            }
            StorageLocation::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

impl StorageArgs {
    /// Parses `--storage`, defaulting to `{data_dir}/bucket`.
    pub fn location(&self, data_dir: &Path) -> Result<StorageLocation, String> {
        let Some(storage) = self.storage.as_deref() else {
            return Ok(StorageLocation::Fs(data_dir.join("bucket")));
        };
        if let Some(rest) = storage.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(format!(
                    "--storage {storage}: the S3 URL names no bucket (s3://bucket/prefix)"
                ));
            }
            return Ok(StorageLocation::S3 {
                bucket: bucket.to_string(),
                prefix: prefix.trim_matches('/').to_string(),
            });
        }
        if let Some(path) = storage.strip_prefix("file://") {
            if path.is_empty() {
                return Err(format!(
                    "--storage {storage}: the file URL names no directory"
                ));
            }
            return Ok(StorageLocation::Fs(PathBuf::from(path)));
        }
        if storage.contains("://") {
            return Err(format!(
                "--storage {storage}: unknown scheme; use s3://bucket/prefix or a directory"
            ));
        }
        if storage.is_empty() {
            return Err("--storage is empty".to_string());
        }
        Ok(StorageLocation::Fs(PathBuf::from(storage)))
    }
}

/// Parses a duration: a number with a unit (`ms`, `s`, `m`, `h`, `d`), or seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (like 250ms, 10s, 5m, 2h, 7d)"))?;
    let seconds = |factor: u64| {
        n.checked_mul(factor)
            .map(Duration::from_secs)
            .ok_or_else(|| format!("{text:?} is too long a duration"))
    };
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "" | "s" => seconds(1),
        "m" => seconds(60),
        "h" => seconds(3600),
        "d" => seconds(86_400),
        _ => Err(format!(
            "{text:?}: unknown unit {unit:?} (use ms, s, m, h or d)"
        )),
    }
}

/// The data directory's lock, held while a server or a shell uses it (released when dropped,
/// or when the process ends however it ends).
#[derive(Debug)]
pub struct DataDirLock {
    _file: std::fs::File,
}

/// Takes the lock of the data directory `dir` (the file `libsql-wal.lock` in it): two processes
/// writing one namespace's files would corrupt them.
pub fn lock_data_dir(dir: &Path) -> Result<DataDirLock, String> {
    let path = dir.join("libsql-wal.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("cannot open the lock file {}: {e}", path.display()))?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(DataDirLock { _file: file }),
        Err(rustix::io::Errno::WOULDBLOCK) => Err(format!(
            "another libsql-wal process (a server or a shell) is using the data directory {}",
            dir.display()
        )),
        Err(e) => Err(format!("cannot lock {}: {e}", path.display())),
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Starts logging to stderr, filtered by `RUST_LOG` (default `default_level`: `info` for the
/// server, `warn` for the operator commands, whose output is their tables).
pub fn init_logging(format: LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn storage(value: Option<&str>) -> StorageArgs {
        StorageArgs {
            storage: value.map(str::to_string),
            s3_endpoint: None,
            s3_region: None,
        }
    }

    #[test]
    fn storage_urls_parse_and_a_bad_one_says_what_is_wrong() {
        let data = Path::new("/d");
        assert_eq!(
            storage(None).location(data),
            Ok(StorageLocation::Fs(PathBuf::from("/d/bucket")))
        );
        assert_eq!(
            storage(Some("s3://b/p/q/")).location(data),
            Ok(StorageLocation::S3 {
                bucket: "b".into(),
                prefix: "p/q".into()
            })
        );
        assert_eq!(
            storage(Some("file:///x")).location(data),
            Ok(StorageLocation::Fs(PathBuf::from("/x")))
        );
        assert_eq!(
            storage(Some("rel/dir")).location(data),
            Ok(StorageLocation::Fs(PathBuf::from("rel/dir")))
        );
        assert!(storage(Some("s3://"))
            .location(data)
            .unwrap_err()
            .contains("no bucket"));
        assert!(storage(Some("gs://b"))
            .location(data)
            .unwrap_err()
            .contains("unknown scheme"));
    }

    #[test]
    fn durations_read_as_operators_write_them() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        assert!(parse_duration("5 weeks").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
    }
}
