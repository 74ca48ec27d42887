//! End-to-end tests of the segment crate, one test binary: formats round trip, crash recovery,
//! corruption detection, injected I/O faults, and property tests against a model.

mod common;
mod corruption;
mod faults;
mod model;
mod recovery;
mod round_trip;
