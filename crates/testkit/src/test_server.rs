//! `S3TestServer`: a real S3 server for tests and benchmarks: s3s-fs serving a temporary
//! directory over HTTP on `127.0.0.1:<random port>`, in-process, with SigV4 authentication.
//! Stops when dropped. Built with the `test-server` feature only.
//!
//! `TestServerOptions` make it behave like S3-compatible servers that are not AWS (short
//! listing pages) or inject faults (failing or stalled multipart parts); with the default options
//! it is s3s-fs unchanged.

use std::future::Future;
use std::pin::Pin;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::dto::{
    AbortMultipartUploadInput, AbortMultipartUploadOutput, CompleteMultipartUploadInput,
    CompleteMultipartUploadOutput, CopyObjectInput, CopyObjectOutput, CreateBucketInput,
    CreateBucketOutput, CreateMultipartUploadInput, CreateMultipartUploadOutput, DeleteBucketInput,
    DeleteBucketOutput, DeleteObjectInput, DeleteObjectOutput, DeleteObjectsInput,
    DeleteObjectsOutput, GetBucketLocationInput, GetBucketLocationOutput, GetObjectInput,
    GetObjectOutput, HeadBucketInput, HeadBucketOutput, HeadObjectInput, HeadObjectOutput,
    ListBucketsInput, ListBucketsOutput, ListObjectsInput, ListObjectsOutput, ListObjectsV2Input,
    ListObjectsV2Output, ListPartsInput, ListPartsOutput, PutObjectInput, PutObjectOutput,
    UploadPartCopyInput, UploadPartCopyOutput, UploadPartInput, UploadPartOutput,
};
use s3s::service::S3ServiceBuilder;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result, S3};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use libsql_wal_backend::{Error, Result, S3Backend, S3Options};

/// The access key the server accepts.
pub const ACCESS_KEY: &str = "libsql-wal-test";
/// The secret key the server accepts.
pub const SECRET_KEY: &str = "libsql-wal-test-secret";
/// The one bucket the server starts with.
pub const TEST_BUCKET: &str = "segments";

/// How the test server departs from plain s3s-fs. The default departs in nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TestServerOptions {
    /// Answers ListObjectsV2 with at most this many keys per page, whatever the client asks
    /// for (`IsTruncated` stays true while keys remain), as S3 allows and several
    /// S3-compatible servers do.
    pub list_page_cap: Option<i32>,
    /// UploadPart of this part number and of every later one fails with `InvalidRequest` (a
    /// client error the SDK does not retry).
    pub fail_parts_from: Option<i32>,
    /// UploadPart of this part number and of every later one never answers.
    pub stall_parts_from: Option<i32>,
    /// The first this many conditional PutObject requests fail with 409
    /// `ConditionalRequestConflict`, as S3 answers one that races another conditional write
    /// of the key.
    pub conflicting_conditional_puts: u32,
}

/// A response future of the `S3` trait (the shape `async_trait` gives its methods).
type Answer<'f, T> = Pin<Box<dyn Future<Output = S3Result<S3Response<T>>> + Send + 'f>>;

/// s3s-fs, changed as `TestServerOptions` say. Delegates every operation s3s-fs implements.
struct TestS3 {
    /// The server doing the work.
    fs: s3s_fs::FileSystem,
    /// Held across a conditional `PutObject`: s3s-fs checks `If-None-Match` and then writes,
    /// so two at once could both create the object; S3 decides them atomically.
    conditional_puts: tokio::sync::Mutex<()>,
    /// Conditional PutObject requests still to answer with a 409 conflict.
    conflicts_left: std::sync::atomic::AtomicU32,
    /// What to change.
    options: TestServerOptions,
}

impl S3 for TestS3 {
    fn list_objects_v2<'s, 'f>(
        &'s self,
        mut req: S3Request<ListObjectsV2Input>,
    ) -> Answer<'f, ListObjectsV2Output>
    where
        's: 'f,
        Self: 'f,
    {
        if let Some(cap) = self.options.list_page_cap {
            // S3's default page is 1,000 keys.
            let asked = req.input.max_keys.unwrap_or(1000);
            req.input.max_keys = Some(asked.min(cap));
        }
        self.fs.list_objects_v2(req)
    }

    fn upload_part<'s, 'f>(
        &'s self,
        req: S3Request<UploadPartInput>,
    ) -> Answer<'f, UploadPartOutput>
    where
        's: 'f,
        Self: 'f,
    {
        let part = req.input.part_number;
        let from = |first: Option<i32>| first.is_some_and(|first| part >= first);
        let stall = from(self.options.stall_parts_from);
        let fail = from(self.options.fail_parts_from);
        Box::pin(async move {
            if stall {
                std::future::pending::<()>().await;
            }
            if fail {
                return Err(S3Error::with_message(
                    S3ErrorCode::InvalidRequest,
                    format!("part {part} refused by the test server"),
                ));
            }
            self.fs.upload_part(req).await
        })
    }

    fn abort_multipart_upload<'s, 'f>(
        &'s self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> Answer<'f, AbortMultipartUploadOutput>
    where
        's: 'f,
        Self: 'f,
    {
        self.fs.abort_multipart_upload(req)
    }

    fn complete_multipart_upload<'s, 'f>(
        &'s self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> Answer<'f, CompleteMultipartUploadOutput>
    where
        's: 'f,
        Self: 'f,
    {
        self.fs.complete_multipart_upload(req)
    }

    fn copy_object<'s, 'f>(
        &'s self,
        req: S3Request<CopyObjectInput>,
    ) -> Answer<'f, CopyObjectOutput>
    where
        's: 'f,
        Self: 'f,
    {
        self.fs.copy_object(req)
    }

    fn create_bucket<'s, 'f>(
        &'s self,
        req: S3Request<CreateBucketInput>,
    ) -> Answer<'f, CreateBucketOutput>
    where
        's: 'f,
        Self: 'f,
    {
        self.fs.create_bucket(req)
    }

    fn create_multipart_upload<'s, 'f>(
        &'s self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> Answer<'f, CreateMultipartUploadOutput>
    where
        's: 'f,
        Self: 'f,
    {
        self.fs.create_multipart_upload(req)
    }

    fn delete_bucket<'s, 'f>(
        &'s self,
        req: S3Request<DeleteBucketInput>,
    ) -> Answer<'f, DeleteBucketOutput>
    where
        's: 'f,
        Self: 'f,
    {
        self.fs.delete_bucket(req)
    }

    fn delete_object<'s, 'f>(
        &'s self,
        req: S3Request<DeleteObjectInput>,
    ) -> Answer<'f, DeleteObjectOutput>
    where
        's: 'f,
        Self: 'f,
    {
        self.fs.delete_object(req)
    }

    fn delete_objects<'s, 'f>(
        &'s self,
        req: S3Request<DeleteObjectsInput>,
    ) -> Answer<'f, DeleteObjectsOutput>
    where
        's: 'f,
        Self: 'f,
    {
        self.fs.delete_objects(req)
    }

    fn get_bucket_location<'s, 'f>(
        &'s self,
        req: S3Request<GetBucketLocationInput>,
    ) -> Answer<'f, GetBucketLocationOutput>
    where
        's: 'f,
        Self: 'f,
    {
        self.fs.get_bucket_location(req)
    }

    fn get_object<'s, 'f>(&'s self, req: S3Request<GetObjectInput>) -> Answer<'f, GetObjectOutput>
    where
        's: 'f,
        Self: 'f,
    {
        self.fs.get_object(req)
    }

    fn head_bucket<'s, 'f>(
        &'s self,
        req: S3Request<HeadBucketInput>,
    ) -> Answer<'f, HeadBucketOutput>
    where
        's: 'f,
        Self: 'f,
    {
        self.fs.head_bucket(req)
    }

    fn head_object<'s, 'f>(
        &'s self,
        req: S3Request<HeadObjectInput>,
    ) -> Answer<'f, HeadObjectOutput>
    where
        's: 'f,
        Self: 'f,
    {
        self.fs.head_object(req)
    }

    fn list_buckets<'s, 'f>(
        &'s self,
        req: S3Request<ListBucketsInput>,
    ) -> Answer<'f, ListBucketsOutput>
    where
        's: 'f,
        Self: 'f,
    {
        self.fs.list_buckets(req)
    }

    fn list_objects<'s, 'f>(
        &'s self,
        req: S3Request<ListObjectsInput>,
    ) -> Answer<'f, ListObjectsOutput>
    where
        's: 'f,
        Self: 'f,
    {
        self.fs.list_objects(req)
    }

    fn list_parts<'s, 'f>(&'s self, req: S3Request<ListPartsInput>) -> Answer<'f, ListPartsOutput>
    where
        's: 'f,
        Self: 'f,
    {
        self.fs.list_parts(req)
    }

    fn put_object<'s, 'f>(&'s self, req: S3Request<PutObjectInput>) -> Answer<'f, PutObjectOutput>
    where
        's: 'f,
        Self: 'f,
    {
        if req.input.if_none_match.is_none() && req.input.if_match.is_none() {
            return self.fs.put_object(req);
        }
        Box::pin(async move {
            let _one_at_a_time = self.conditional_puts.lock().await;
            let conflict = self
                .conflicts_left
                .fetch_update(
                    std::sync::atomic::Ordering::SeqCst,
                    std::sync::atomic::Ordering::SeqCst,
                    |left| left.checked_sub(1),
                )
                .is_ok();
            if conflict {
                let mut error = S3Error::with_message(
                    S3ErrorCode::Custom("ConditionalRequestConflict".into()),
                    "a conflicting conditional operation is in progress",
                );
                error.set_status_code(hyper::StatusCode::CONFLICT);
                return Err(error);
            }
            self.fs.put_object(req).await
        })
    }

    fn upload_part_copy<'s, 'f>(
        &'s self,
        req: S3Request<UploadPartCopyInput>,
    ) -> Answer<'f, UploadPartCopyOutput>
    where
        's: 'f,
        Self: 'f,
    {
        self.fs.upload_part_copy(req)
    }
}

/// An s3s-fs server on loopback.
pub struct S3TestServer {
    /// `http://127.0.0.1:<port>`.
    endpoint: String,
    /// The accept loop.
    task: JoinHandle<()>,
    /// Where the server keeps the buckets.
    dir: tempfile::TempDir,
}

impl S3TestServer {
    /// Starts a server with one empty bucket, `TEST_BUCKET`, on the current tokio runtime.
    pub async fn start() -> Result<Self> {
        Self::start_with(TestServerOptions::default()).await
    }

    /// Starts a server like `start`, departing from plain s3s-fs as `options` say.
    pub async fn start_with(options: TestServerOptions) -> Result<Self> {
        let local = |what: &str, e: std::io::Error| {
            Error::fatal(format!("starting the test S3 server: {what}"), e)
        };
        let dir = tempfile::tempdir().map_err(|e| local("temporary directory", e))?;
        std::fs::create_dir(dir.path().join(TEST_BUCKET)).map_err(|e| local("bucket", e))?;
        let fs = s3s_fs::FileSystem::new(dir.path()).map_err(|e| {
            Error::fatal("starting the test S3 server: file system", format!("{e:?}"))
        })?;
        let mut builder = S3ServiceBuilder::new(TestS3 {
            fs,
            options,
            conditional_puts: tokio::sync::Mutex::new(()),
            conflicts_left: options.conflicting_conditional_puts.into(),
        });
        builder.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let service = builder.build();
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| local("bind", e))?;
        let endpoint = format!(
            "http://{}",
            listener.local_addr().map_err(|e| local("address", e))?
        );
        let task = tokio::spawn(async move {
            let http = ConnBuilder::new(TokioExecutor::new());
            while let Ok((socket, _)) = listener.accept().await {
                let connection = http
                    .serve_connection(TokioIo::new(socket), service.clone())
                    .into_owned();
                tokio::spawn(async move {
                    let _ = connection.await;
                });
            }
        });
        Ok(S3TestServer {
            endpoint,
            task,
            dir,
        })
    }

    /// Returns options for a backend on this server under `prefix`.
    pub fn options(&self, prefix: &str) -> S3Options {
        test_server_options(&self.endpoint, prefix)
    }

    /// Returns a backend on this server under `prefix`.
    pub async fn backend(&self, prefix: &str) -> Result<S3Backend> {
        S3Backend::new(self.options(prefix)).await
    }

    /// Returns the endpoint.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Returns the directory holding the server's buckets.
    pub fn root(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Returns the names of the files the server keeps for multipart uploads that were neither
    /// completed nor aborted (upload records, parts, metadata), in order: empty when every
    /// upload finished one way or the other.
    pub fn unfinished_multipart_files(&self) -> Result<Vec<String>> {
        let root = self.dir.path();
        let local = |e| Error::fatal(format!("listing {}", root.display()), e);
        let mut names = Vec::new();
        for entry in std::fs::read_dir(root).map_err(local)? {
            let name = entry.map_err(local)?.file_name();
            // s3s-fs names them `.upload-{id}.json`, `.upload_id-{id}.part-{n}` and
            // `.bucket-{b}.object-{k}.upload-{id}.metadata.json`.
            if let Some(name) = name.to_str().filter(|n| n.contains(".upload")) {
                names.push(name.to_string());
            }
        }
        names.sort_unstable();
        Ok(names)
    }
}

/// Returns options for a backend on the test server at `endpoint`, under `prefix`.
pub fn test_server_options(endpoint: &str, prefix: &str) -> S3Options {
    let mut options = S3Options::new(TEST_BUCKET, prefix);
    options.endpoint = Some(endpoint.to_string());
    options.region = Some("us-east-1".into());
    options.credentials = Some((ACCESS_KEY.into(), SECRET_KEY.into()));
    options
}

impl Drop for S3TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
