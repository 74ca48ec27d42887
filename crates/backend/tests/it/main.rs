//! End-to-end tests of the backend crate: the conformance suite against the fs backend and
//! against the S3 backend talking to a real S3 server (s3s-fs) over loopback HTTP, plus
//! `NoStorage`; and that test helpers stay out of the library.

// Tests unwrap freely: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod features;
mod fs;
mod no_storage;
mod s3;
