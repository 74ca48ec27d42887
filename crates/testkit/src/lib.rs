//! `libsql-wal-testkit`: what the tests and benchmarks of libsql-wal share, kept out of the
//! libraries so that no production build carries test helpers (they panic on failure) and no
//! `cargo test -p`/`cargo run -p` selection builds a library with other features than the
//! workspace's.
//!
//! - `conformance`: the suite every `Backend` must pass, and the test segments it stores.
//! - `S3TestServer`: a real S3 server (s3s over s3s-fs) on loopback, with options to shape it
//!   (`TestServerOptions`: a listing page cap) and `test_server_options` for an `S3Backend` on
//!   it.

pub mod conformance;
mod test_server;

pub use test_server::{
    test_server_options, S3TestServer, TestServerOptions, ACCESS_KEY, SECRET_KEY, TEST_BUCKET,
};
