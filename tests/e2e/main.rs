//! End-to-end tests: SQLite through libsql-sys on libsql-wal.

// Tests unwrap freely: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod basics;
mod crash;
mod differential;
mod faults;
mod histories;
mod hooked;
mod replication;
mod restore;
mod storage;
mod takeover;
mod transactions;
