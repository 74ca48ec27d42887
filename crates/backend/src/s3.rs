//! The S3 backend (feature `s3`), on aws-sdk-s3: objects under a bucket and a prefix.
//!
//! - Credentials and region come from the standard AWS chain (environment, profile, process,
//!   instance metadata) unless given in `S3Options`.
//! - An explicit endpoint switches to path-style addressing, for S3-compatible servers (MinIO,
//!   R2, s3s).
//! - Files above `multipart_threshold` are uploaded in parts of `part_size`, up to
//!   `PARTS_IN_FLIGHT` (4) at once, each part streamed from the file: a segment is never held in
//!   memory whole. A multipart upload that fails is aborted, and so is one whose future is
//!   dropped mid-way (from a task spawned on the tokio runtime), so no parts linger.
//!
//!   An abort can still be lost (the process killed mid-upload, the abort itself failing, no
//!   runtime left): parts of an incomplete upload are invisible to listings but billed. Set a
//!   lifecycle rule on the bucket that removes them, for example with
//!   `aws s3api put-bucket-lifecycle-configuration --bucket BUCKET --lifecycle-configuration`:
//!
//!   ```json
//!   {"Rules": [{"ID": "abort-incomplete-multipart-uploads", "Status": "Enabled",
//!               "Filter": {"Prefix": ""},
//!               "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}}]}
//!   ```
//! - Timeouts and retries are the SDK's, set from `S3Options`; failures that survive the SDK's
//!   retries are classified `Transient` (network, throttling, 5xx) or `Fatal` (everything else).
//! - Secrets stay out of logs and errors: the secret key is a `SecretKey` (redacted `Debug`, no
//!   `Display`), an endpoint's userinfo (`http://user:pass@host`) is shown as `<redacted>`, and
//!   both are scrubbed from the SDK's error messages.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use tracing::{debug, instrument, warn};

use crate::backend::{validate_key, validate_prefix, Backend, ObjectReader, ObjectStat};
use crate::error::{Error, Result};

/// The most keys S3 returns per ListObjectsV2 call.
const MAX_LIST_PAGE: usize = 1000;

/// The most parts S3 takes in one multipart upload.
const MAX_PARTS: u64 = 10_000;

/// Parts of one multipart upload sent at once: several streams fill a link to S3 better than
/// one, and the bound keeps one large segment from taking every connection and file handle
/// (other namespaces upload too). Each part streams from the file: memory stays small.
const PARTS_IN_FLIGHT: usize = 4;

/// Times a conditional create answered 409 `ConditionalRequestConflict` (another conditional
/// write of the key in flight) is sent again, 40 ms, 80 ms, ... apart, before it fails.
const CONDITIONAL_CONFLICT_RETRIES: u32 = 5;

/// One part of a multipart upload: a range of the source file.
#[derive(Debug, Clone, Copy)]
struct Part {
    /// Its number, from 1.
    number: i32,
    /// Where it starts in the file.
    offset: u64,
    /// Its length.
    len: u64,
}

/// A multipart upload begun and not yet completed. Dropped without `completed` (a failure, or
/// the upload future dropped mid-way), it aborts the upload: inline in `abort`, else from
/// `Drop` on a task spawned on the current tokio runtime, if there is one. An upload left
/// behind anyway (no runtime, the process killed, the abort failing) is for the bucket's
/// `AbortIncompleteMultipartUpload` lifecycle rule (see the module docs).
struct PendingUpload {
    /// The client to abort with.
    client: Client,
    /// The bucket.
    bucket: String,
    /// The full object key.
    object: String,
    /// The upload; `None` once completed or aborted.
    upload_id: Option<String>,
    /// Secrets to keep out of the warning if the abort fails.
    redactions: Redactions,
}

impl PendingUpload {
    /// The upload completed: nothing to abort.
    fn completed(mut self) {
        self.upload_id = None;
    }

    /// Aborts the upload and waits for the answer. Dropped meanwhile, `Drop` aborts again.
    async fn abort(mut self) {
        if let Some(upload_id) = &self.upload_id {
            abort_upload(
                &self.client,
                &self.bucket,
                &self.object,
                upload_id,
                &self.redactions,
            )
            .await;
            self.upload_id = None;
        }
    }
}

impl Drop for PendingUpload {
    fn drop(&mut self) {
        let Some(upload_id) = self.upload_id.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let client = self.client.clone();
                let bucket = std::mem::take(&mut self.bucket);
                let object = std::mem::take(&mut self.object);
                let redactions = self.redactions.clone();
                runtime.spawn(async move {
                    abort_upload(&client, &bucket, &object, &upload_id, &redactions).await;
                });
            }
            Err(_) => warn!(
                object = %self.object,
                upload_id,
                "multipart upload dropped outside a tokio runtime: not aborted"
            ),
        }
    }
}

/// Aborts a multipart upload; a failure is logged (the bucket's lifecycle rule is the backstop).
async fn abort_upload(
    client: &Client,
    bucket: &str,
    object: &str,
    upload_id: &str,
    redactions: &Redactions,
) {
    match client
        .abort_multipart_upload()
        .bucket(bucket)
        .key(object)
        .upload_id(upload_id)
        .send()
        .await
    {
        Ok(_) => debug!(object, upload_id, "multipart upload aborted"),
        Err(e) => {
            let error = redactions.scrub(aws_sdk_s3::error::DisplayErrorContext(&e).to_string());
            warn!(object, upload_id, error, "cannot abort multipart upload");
        }
    }
}

/// Where the S3 backend puts objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Config {
    /// The bucket.
    pub bucket: String,
    /// Prepended to every key, with a `/`, unless empty.
    pub prefix: String,
}

/// What replaces a secret wherever it would be shown.
const REDACTED: &str = "<redacted>";

/// An S3 secret access key. Its `Debug` shows `SecretKey(<redacted>)` and it has no `Display`,
/// so it does not end up in a log or an error by accident; `expose` gives the key to the SDK.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKey(String);

impl SecretKey {
    /// Returns the secret itself, for the SDK's credentials.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for SecretKey {
    fn from(secret: String) -> Self {
        SecretKey(secret)
    }
}

impl From<&str> for SecretKey {
    fn from(secret: &str) -> Self {
        SecretKey(secret.to_string())
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({REDACTED})")
    }
}

/// Splits `endpoint` at its userinfo (`user:pass` in `http://user:pass@host`): returns the
/// userinfo, if any, and the endpoint with it replaced by `<redacted>`, fit to show.
fn redact_endpoint(endpoint: &str) -> (Option<&str>, String) {
    let authority_at = endpoint.find("://").map_or(0, |at| at + 3);
    let rest = &endpoint[authority_at..];
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    match authority.rfind('@') {
        Some(at) => (
            Some(&authority[..at]),
            format!("{}{REDACTED}{}", &endpoint[..authority_at], &rest[at..]),
        ),
        None => (None, endpoint.to_string()),
    }
}

/// The secrets of a backend's options, scrubbed from every message it shows.
#[derive(Clone)]
struct Redactions(Arc<[String]>);

impl Redactions {
    /// Returns the secrets in `options`: the secret key, the endpoint's userinfo and the
    /// password in it, each also percent-decoded (`p%40ss` is also scrubbed as `p@ss`).
    fn of(options: &S3Options) -> Self {
        let mut secrets = Vec::new();
        if let Some((_, secret)) = &options.credentials {
            secrets.push(secret.expose().to_string());
        }
        if let Some(userinfo) = options
            .endpoint
            .as_deref()
            .and_then(|e| redact_endpoint(e).0)
        {
            let mut add = |secret: &str| {
                // As written and as decoded: a client library may show either.
                secrets.push(secret.to_string());
                let decoded = percent_encoding::percent_decode_str(secret).decode_utf8_lossy();
                if decoded != secret {
                    secrets.push(decoded.into_owned());
                }
            };
            add(userinfo);
            if let Some((_, password)) = userinfo.split_once(':') {
                add(password);
            }
        }
        // Longest first, so a secret containing another is replaced whole.
        secrets.retain(|s| !s.is_empty());
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Redactions(secrets.into())
    }

    /// Returns `text` with every secret replaced by `<redacted>`.
    fn scrub(&self, mut text: String) -> String {
        for secret in self.0.iter() {
            if text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), REDACTED);
            }
        }
        text
    }
}

/// How to reach S3 and how to upload. Its `Debug` shows no secret.
#[derive(Clone)]
pub struct S3Options {
    /// The default bucket and prefix.
    pub config: S3Config,
    /// An S3-compatible endpoint (`http://127.0.0.1:9000`); path-style addressing is used with
    /// it. `None` means AWS.
    pub endpoint: Option<String>,
    /// The region; `None` takes it from the environment, or `us-east-1` with an endpoint.
    pub region: Option<String>,
    /// Access key id and secret; `None` uses the standard AWS credential chain.
    pub credentials: Option<(String, SecretKey)>,
    /// Files larger than this are uploaded in parts.
    pub multipart_threshold: u64,
    /// Size of each part (S3's minimum is 5 MiB, except for the last part).
    pub part_size: u64,
    /// Time limit of one attempt of one request.
    pub attempt_timeout: Duration,
    /// Time limit to open a connection.
    pub connect_timeout: Duration,
    /// Attempts per request, the first included, before the SDK gives up.
    pub max_attempts: u32,
}

impl S3Options {
    /// Returns options with defaults for `bucket` and `prefix`: 16 MiB multipart threshold, 8 MiB
    /// parts, 60 s per attempt, 5 s to connect, 3 attempts.
    pub fn new(bucket: impl Into<String>, prefix: impl Into<String>) -> Self {
        S3Options {
            config: S3Config {
                bucket: bucket.into(),
                prefix: prefix.into(),
            },
            endpoint: None,
            region: None,
            credentials: None,
            multipart_threshold: 16 << 20,
            part_size: 8 << 20,
            attempt_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(5),
            max_attempts: 3,
        }
    }
}

impl fmt::Debug for S3Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Options")
            .field("config", &self.config)
            .field(
                "endpoint",
                &self.endpoint.as_deref().map(|e| redact_endpoint(e).1),
            )
            .field("region", &self.region)
            .field("credentials", &self.credentials)
            .field("multipart_threshold", &self.multipart_threshold)
            .field("part_size", &self.part_size)
            .field("attempt_timeout", &self.attempt_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_attempts", &self.max_attempts)
            .finish()
    }
}

/// Objects in an S3 bucket. Its `Debug` shows no secret.
pub struct S3Backend {
    /// The SDK client.
    client: Client,
    /// The default bucket and prefix.
    config: S3Config,
    /// The endpoint, userinfo redacted, to show.
    endpoint: Option<String>,
    /// Files larger than this are uploaded in parts.
    multipart_threshold: u64,
    /// Size of each part.
    part_size: u64,
    /// Secrets to scrub from error messages.
    redactions: Redactions,
}

impl fmt::Debug for S3Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the client: its configuration holds the endpoint as given.
        f.debug_struct("S3Backend")
            .field("config", &self.config)
            .field("endpoint", &self.endpoint)
            .field("multipart_threshold", &self.multipart_threshold)
            .field("part_size", &self.part_size)
            .finish_non_exhaustive()
    }
}

/// Classifies an SDK error: what may pass on retry is transient. Its message is scrubbed of
/// `redactions`.
fn sdk_error<E, R>(redactions: &Redactions, context: String, error: SdkError<E, R>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: fmt::Debug + Send + Sync + 'static,
    SdkError<E, R>: std::error::Error,
{
    let transient = match &error {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(service) => matches!(
            service.err().code(),
            Some(
                "SlowDown"
                    | "ConditionalRequestConflict"
                    | "InternalError"
                    | "ServiceUnavailable"
                    | "RequestTimeout"
                    | "Throttling"
                    | "ThrottlingException"
            )
        ),
        _ => false,
    };
    let message = match error.code() {
        Some(code) => format!("{code}: {}", error.message().unwrap_or("no message")),
        None => aws_sdk_s3::error::DisplayErrorContext(&error).to_string(),
    };
    let message = redactions.scrub(message);
    if transient {
        Error::transient(context, message)
    } else {
        Error::fatal(context, message)
    }
}

impl S3Backend {
    /// Connects to S3 as `options` say. Does not check that the bucket exists.
    pub async fn new(options: S3Options) -> Result<Self> {
        if options.part_size < 5 << 20 {
            return Err(Error::fatal(
                "configuring the S3 backend",
                format!(
                    "part_size {} is below S3's 5 MiB minimum",
                    options.part_size
                ),
            ));
        }
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .timeout_config(
                TimeoutConfig::builder()
                    .operation_attempt_timeout(options.attempt_timeout)
                    .connect_timeout(options.connect_timeout)
                    .build(),
            )
            .retry_config(RetryConfig::standard().with_max_attempts(options.max_attempts));
        if let Some(region) = options.region.clone() {
            loader = loader.region(Region::new(region));
        }
        if let Some((key_id, secret)) = options.credentials.clone() {
            loader = loader.credentials_provider(Credentials::new(
                key_id,
                secret.expose(),
                None,
                None,
                "libsql-wal",
            ));
        }
        let sdk_config = loader.load().await;
        let mut builder = aws_sdk_s3::config::Builder::from(&sdk_config);
        if let Some(endpoint) = &options.endpoint {
            builder = builder.endpoint_url(endpoint).force_path_style(true);
            if sdk_config.region().is_none() {
                builder = builder.region(Region::new("us-east-1"));
            }
        }
        Ok(S3Backend {
            client: Client::from_conf(builder.build()),
            redactions: Redactions::of(&options),
            endpoint: options.endpoint.as_deref().map(|e| redact_endpoint(e).1),
            config: options.config,
            multipart_threshold: options.multipart_threshold,
            part_size: options.part_size,
        })
    }

    fn object_key(config: &S3Config, key: &str) -> String {
        if config.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", config.prefix.trim_end_matches('/'))
        }
    }

    /// Strips the config's prefix from a listed key.
    fn relative_key(config: &S3Config, object: &str) -> String {
        if config.prefix.is_empty() {
            object.to_string()
        } else {
            let prefix = format!("{}/", config.prefix.trim_end_matches('/'));
            object.strip_prefix(&prefix).unwrap_or(object).to_string()
        }
    }

    async fn put_multipart(
        &self,
        config: &S3Config,
        object: &str,
        source: &Path,
        len: u64,
    ) -> Result<()> {
        let context = || format!("uploading s3://{}/{object}", config.bucket);
        let parts = len.div_ceil(self.part_size);
        if parts > MAX_PARTS {
            return Err(Error::fatal(
                context(),
                format!(
                    "{len} bytes in parts of {} need {parts} parts, S3 allows {MAX_PARTS}: \
                     raise part_size",
                    self.part_size
                ),
            ));
        }
        let upload = self
            .client
            .create_multipart_upload()
            .bucket(&config.bucket)
            .key(object)
            .send()
            .await
            .map_err(|e| sdk_error(&self.redactions, context(), e))?;
        let upload_id = upload
            .upload_id()
            .ok_or_else(|| Error::fatal(context(), "no upload id in the response"))?;
        let pending = PendingUpload {
            client: self.client.clone(),
            bucket: config.bucket.clone(),
            object: object.to_string(),
            upload_id: Some(upload_id.to_string()),
            redactions: self.redactions.clone(),
        };
        match self
            .upload_parts(config, object, source, len, parts, upload_id)
            .await
        {
            Ok(()) => {
                pending.completed();
                Ok(())
            }
            Err(e) => {
                pending.abort().await;
                Err(e)
            }
        }
    }

    /// Uploads the `parts` parts of `source`, `PARTS_IN_FLIGHT` at a time, and completes the
    /// upload.
    async fn upload_parts(
        &self,
        config: &S3Config,
        object: &str,
        source: &Path,
        len: u64,
        parts: u64,
        upload_id: &str,
    ) -> Result<()> {
        use futures::stream::{StreamExt, TryStreamExt};
        let context = || format!("uploading s3://{}/{object}", config.bucket);
        // Built up front: each future reads its own range of the file once polled.
        let uploads: Vec<_> = (0..parts)
            .map(|i| {
                let offset = i * self.part_size;
                let part = Part {
                    // At most `MAX_PARTS`, checked by the caller.
                    number: i32::try_from(i + 1).unwrap_or(i32::MAX),
                    offset,
                    len: self.part_size.min(len - offset),
                };
                self.upload_part(config, object, source, upload_id, part)
            })
            .collect();
        let completed: Vec<CompletedPart> = futures::stream::iter(uploads)
            .buffered(PARTS_IN_FLIGHT)
            .try_collect()
            .await?;
        self.client
            .complete_multipart_upload()
            .bucket(&config.bucket)
            .key(object)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(completed))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| sdk_error(&self.redactions, context(), e))?;
        Ok(())
    }

    /// Uploads `part` of `source`, streamed from the file.
    async fn upload_part(
        &self,
        config: &S3Config,
        object: &str,
        source: &Path,
        upload_id: &str,
        part: Part,
    ) -> Result<CompletedPart> {
        let Part {
            number: part_number,
            offset,
            len: part_len,
        } = part;
        let body = ByteStream::read_from()
            .path(source)
            .offset(offset)
            .length(Length::Exact(part_len))
            .build()
            .await
            .map_err(|e| Error::transient(format!("reading {}", source.display()), e))?;
        let uploaded = self
            .client
            .upload_part()
            .bucket(&config.bucket)
            .key(object)
            .upload_id(upload_id)
            .part_number(part_number)
            .body(body)
            .send()
            .await
            .map_err(|e| {
                sdk_error(
                    &self.redactions,
                    format!("uploading s3://{}/{object}", config.bucket),
                    e,
                )
            })?;
        debug!(object, part_number, part_len, "part uploaded");
        Ok(CompletedPart::builder()
            .part_number(part_number)
            .set_e_tag(uploaded.e_tag().map(str::to_string))
            .build())
    }
}

impl Backend for S3Backend {
    type Config = S3Config;

    fn default_config(&self) -> &S3Config {
        &self.config
    }

    #[instrument(skip(self, config), fields(bucket = %config.bucket), level = "debug")]
    async fn put_file(&self, config: &S3Config, key: &str, source: &Path) -> Result<()> {
        validate_key(key)?;
        let object = Self::object_key(config, key);
        let len = tokio::fs::metadata(source)
            .await
            .map_err(|e| Error::fatal(format!("reading {}", source.display()), e))?
            .len();
        if len > self.multipart_threshold {
            return self.put_multipart(config, &object, source, len).await;
        }
        let body = ByteStream::from_path(source)
            .await
            .map_err(|e| Error::transient(format!("reading {}", source.display()), e))?;
        self.client
            .put_object()
            .bucket(&config.bucket)
            .key(&object)
            .body(body)
            .send()
            .await
            .map_err(|e| {
                sdk_error(
                    &self.redactions,
                    format!("uploading s3://{}/{object}", config.bucket),
                    e,
                )
            })?;
        Ok(())
    }

    #[instrument(skip(self, config, bytes), fields(bucket = %config.bucket, len = bytes.len()), level = "debug")]
    async fn put_bytes(&self, config: &S3Config, key: &str, bytes: Vec<u8>) -> Result<()> {
        validate_key(key)?;
        let object = Self::object_key(config, key);
        self.client
            .put_object()
            .bucket(&config.bucket)
            .key(&object)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| {
                sdk_error(
                    &self.redactions,
                    format!("uploading s3://{}/{object}", config.bucket),
                    e,
                )
            })?;
        Ok(())
    }

    #[instrument(skip(self, config, bytes), fields(bucket = %config.bucket, len = bytes.len()), level = "debug")]
    async fn put_bytes_if_absent(
        &self,
        config: &S3Config,
        key: &str,
        bytes: Vec<u8>,
    ) -> Result<bool> {
        validate_key(key)?;
        let object = Self::object_key(config, key);
        let mut conflicts = 0;
        loop {
            let sent = self
                .client
                .put_object()
                .bucket(&config.bucket)
                .key(&object)
                .if_none_match("*")
                .body(ByteStream::from(bytes.clone()))
                .send()
                .await;
            match sent {
                Ok(_) => return Ok(true),
                // 412: the object exists.
                Err(SdkError::ServiceError(e)) if e.raw().status().as_u16() == 412 => {
                    return Ok(false)
                }
                // 409 ConditionalRequestConflict: another conditional write of the key is in
                // flight. S3 says to retry: the retry learns which one won (412, or created).
                Err(SdkError::ServiceError(e))
                    if e.raw().status().as_u16() == 409
                        && conflicts < CONDITIONAL_CONFLICT_RETRIES =>
                {
                    conflicts += 1;
                    debug!(object, conflicts, "conditional write conflict; retrying");
                    tokio::time::sleep(Duration::from_millis(20 << conflicts)).await;
                }
                Err(e) => {
                    return Err(sdk_error(
                        &self.redactions,
                        format!("creating s3://{}/{object}", config.bucket),
                        e,
                    ))
                }
            }
        }
    }

    #[instrument(skip(self, config), fields(bucket = %config.bucket), level = "debug")]
    async fn get(&self, config: &S3Config, key: &str) -> Result<ObjectReader> {
        validate_key(key)?;
        let object = Self::object_key(config, key);
        match self
            .client
            .get_object()
            .bucket(&config.bucket)
            .key(&object)
            .send()
            .await
        {
            Ok(output) => Ok(Box::pin(output.body.into_async_read())),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => {
                Err(Error::NotFound {
                    key: key.to_string(),
                })
            }
            Err(e) => Err(sdk_error(
                &self.redactions,
                format!("downloading s3://{}/{object}", config.bucket),
                e,
            )),
        }
    }

    #[instrument(skip(self, config), fields(bucket = %config.bucket), level = "debug")]
    async fn stat(&self, config: &S3Config, key: &str) -> Result<ObjectStat> {
        validate_key(key)?;
        let object = Self::object_key(config, key);
        match self
            .client
            .head_object()
            .bucket(&config.bucket)
            .key(&object)
            .send()
            .await
        {
            Ok(output) => {
                let modified_ms = output
                    .last_modified()
                    .and_then(|t| t.to_millis().ok())
                    .map(|ms| u64::try_from(ms).unwrap_or(0))
                    .ok_or_else(|| Error::Corrupt {
                        key: object.clone(),
                        what: "the server sent no Last-Modified time for it".into(),
                    })?;
                let len = output
                    .content_length()
                    .and_then(|len| u64::try_from(len).ok())
                    .ok_or_else(|| Error::Corrupt {
                        key: object.clone(),
                        what: "the server sent no Content-Length for it".into(),
                    })?;
                Ok(ObjectStat { len, modified_ms })
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => {
                Err(Error::NotFound {
                    key: key.to_string(),
                })
            }
            Err(e) => Err(sdk_error(
                &self.redactions,
                format!("reading the metadata of s3://{}/{object}", config.bucket),
                e,
            )),
        }
    }

    #[instrument(skip(self, config), fields(bucket = %config.bucket), level = "debug")]
    async fn list(
        &self,
        config: &S3Config,
        prefix: &str,
        start_after: Option<&str>,
        max_keys: usize,
    ) -> Result<Vec<String>> {
        validate_prefix(prefix)?;
        let object_prefix = Self::object_key(config, prefix);
        let context = || format!("listing s3://{}/{object_prefix}", config.bucket);
        let start_after = start_after.map(|a| Self::object_key(config, a));
        let mut keys = Vec::new();
        // Where the previous page ended; `start_after` is only for the first page.
        let mut token: Option<String> = None;
        while keys.len() < max_keys {
            let want = (max_keys - keys.len()).min(MAX_LIST_PAGE);
            let request = self
                .client
                .list_objects_v2()
                .bucket(&config.bucket)
                .prefix(&object_prefix)
                .max_keys(i32::try_from(want).unwrap_or(1000));
            let request = match &token {
                Some(token) => request.continuation_token(token),
                None => request.set_start_after(start_after.clone()),
            };
            let output = request
                .send()
                .await
                .map_err(|e| sdk_error(&self.redactions, context(), e))?;
            keys.extend(
                output
                    .contents()
                    .iter()
                    .filter_map(|o| o.key())
                    .map(|o| Self::relative_key(config, o)),
            );
            // A page may hold fewer keys than asked for while more follow (S3 allows it, and
            // several S3-compatible servers cap pages): only `IsTruncated` says it is the last.
            if output.is_truncated() != Some(true) {
                break;
            }
            token = Some(
                output
                    .next_continuation_token()
                    .ok_or_else(|| {
                        Error::fatal(
                            context(),
                            "the server truncated the listing without a continuation token",
                        )
                    })?
                    .to_string(),
            );
        }
        keys.truncate(max_keys);
        Ok(keys)
    }

    #[instrument(skip(self, config), fields(bucket = %config.bucket), level = "debug")]
    async fn list_children(&self, config: &S3Config, prefix: &str) -> Result<Vec<String>> {
        validate_prefix(prefix)?;
        let object_prefix = if config.prefix.is_empty() && prefix.is_empty() {
            String::new()
        } else {
            format!(
                "{}/",
                Self::object_key(config, prefix).trim_end_matches('/')
            )
        };
        let mut names = Vec::new();
        let mut token = None;
        loop {
            let output = self
                .client
                .list_objects_v2()
                .bucket(&config.bucket)
                .prefix(&object_prefix)
                .delimiter("/")
                .set_continuation_token(token)
                .send()
                .await
                .map_err(|e| {
                    sdk_error(
                        &self.redactions,
                        format!("listing s3://{}/{object_prefix}", config.bucket),
                        e,
                    )
                })?;
            for common in output.common_prefixes() {
                if let Some(name) = common
                    .prefix()
                    .and_then(|p| p.strip_prefix(&object_prefix))
                    .map(|p| p.trim_end_matches('/'))
                {
                    names.push(name.to_string());
                }
            }
            token = output.next_continuation_token().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        names.sort_unstable();
        Ok(names)
    }

    #[instrument(skip(self, config), fields(bucket = %config.bucket), level = "debug")]
    async fn delete(&self, config: &S3Config, key: &str) -> Result<()> {
        validate_key(key)?;
        let object = Self::object_key(config, key);
        self.client
            .delete_object()
            .bucket(&config.bucket)
            .key(&object)
            .send()
            .await
            .map_err(|e| {
                sdk_error(
                    &self.redactions,
                    format!("deleting s3://{}/{object}", config.bucket),
                    e,
                )
            })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_percent_encoded_endpoint_password_is_scrubbed_in_both_forms() {
        let mut options = S3Options::new("bucket", "");
        options.endpoint = Some("http://oper%61tor:p%40ss%2Fword@127.0.0.1:9000".into());
        let redactions = Redactions::of(&options);
        let shown = redactions.scrub(
            "as written oper%61tor:p%40ss%2Fword, decoded operator:p@ss/word, alone p@ss/word"
                .to_string(),
        );
        for secret in ["p%40ss%2Fword", "p@ss/word", "operator:p@ss"] {
            assert!(!shown.contains(secret), "{secret} is shown: {shown}");
        }
        assert_eq!(shown.matches(REDACTED).count(), 3, "{shown}");
    }
}
