//! A real S3 server for tests: s3s-fs serving a temporary directory over HTTP on
//! `127.0.0.1:<random port>`, in-process, with SigV4 authentication. Stops when dropped.

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use libsql_wal_backend::{S3Backend, S3Options};
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

const ACCESS_KEY: &str = "libsql-wal-test";
const SECRET_KEY: &str = "libsql-wal-test-secret";
pub const BUCKET: &str = "segments";

/// An s3s-fs server on loopback.
pub struct S3TestServer {
    /// `http://127.0.0.1:<port>`.
    endpoint: String,
    /// The accept loop.
    task: JoinHandle<()>,
    /// Where the server keeps the buckets.
    _dir: tempfile::TempDir,
}

impl S3TestServer {
    /// Starts a server with one empty bucket, `BUCKET`.
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(BUCKET)).unwrap();
        let fs = s3s_fs::FileSystem::new(dir.path()).unwrap();
        let mut builder = S3ServiceBuilder::new(fs);
        builder.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let service = builder.build();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
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
        S3TestServer {
            endpoint,
            task,
            _dir: dir,
        }
    }

    /// Returns options for a backend on this server under `prefix`.
    pub fn options(&self, prefix: &str) -> S3Options {
        options_for(&self.endpoint, prefix)
    }

    /// Returns a backend on this server under `prefix`.
    pub async fn backend(&self, prefix: &str) -> S3Backend {
        S3Backend::new(self.options(prefix)).await.unwrap()
    }

    /// Returns the endpoint.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }
}

/// Returns options for a backend on the test server at `endpoint`, under `prefix`.
pub fn options_for(endpoint: &str, prefix: &str) -> S3Options {
    let mut options = S3Options::new(BUCKET, prefix);
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
