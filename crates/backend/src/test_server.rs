//! `S3TestServer`: a real S3 server for tests and benchmarks: s3s-fs serving a temporary
//! directory over HTTP on `127.0.0.1:<random port>`, in-process, with SigV4 authentication.
//! Stops when dropped. Built with the `test-server` feature only.

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::s3::{S3Backend, S3Options};

/// The access key the server accepts.
const ACCESS_KEY: &str = "libsql-wal-test";
/// The secret key the server accepts.
const SECRET_KEY: &str = "libsql-wal-test-secret";
/// The one bucket the server starts with.
pub const TEST_BUCKET: &str = "segments";

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
        let local = |what: &str, e: std::io::Error| {
            Error::fatal(format!("starting the test S3 server: {what}"), e)
        };
        let dir = tempfile::tempdir().map_err(|e| local("temporary directory", e))?;
        std::fs::create_dir(dir.path().join(TEST_BUCKET)).map_err(|e| local("bucket", e))?;
        let fs = s3s_fs::FileSystem::new(dir.path()).map_err(|e| {
            Error::fatal("starting the test S3 server: file system", format!("{e:?}"))
        })?;
        let mut builder = S3ServiceBuilder::new(fs);
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
