//! End-to-end tests of the actor pipeline: `ActorStorage` over real backends (the fs backend,
//! and S3 through s3s-fs on loopback), with real sealed segment files. The only double is
//! `FaultyBackend`, which wraps a real backend to inject failures, delays, panics and stalls.

// Tests unwrap freely: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod faulty;
mod maintenance;
mod pipeline;
mod scratch;
mod support;
