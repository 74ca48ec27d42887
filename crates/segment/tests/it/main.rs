//! End-to-end tests of the segment crate, one test binary: formats round trip, crash recovery,
//! corruption detection, injected I/O faults, and property tests against a model.

// Tests unwrap freely: a panic is the failure report. (`allow-unwrap-in-tests` covers only
// `#[test]` functions, not the helpers they share.)
#![allow(clippy::unwrap_used)]

mod common;
mod corruption;
mod faults;
mod model;
mod recovery;
mod round_trip;
