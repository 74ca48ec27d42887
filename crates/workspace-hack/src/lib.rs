//! The workspace hack: one feature resolution for every build of the workspace.
//!
//! Cargo (resolver 2) resolves the features of dependencies for the packages a command
//! selects. `cargo test --workspace` unifies them over every member, but
//! `cargo test -p libsql-wal`, `cargo bench -p <pkg>` or `cargo run -p <pkg>` see only that
//! package (and its dev-dependencies), so crates such as tokio, hyper, mio, tracing or syn get
//! a smaller feature set and are compiled a second time. Every member depends on this crate,
//! and this crate depends on each third-party crate whose features differ between some
//! `-p <member>` selection and `--workspace`, with exactly the features the workspace build
//! enables (`default-features = false` and the full list). Then every `-p` selection is a
//! subset of the workspace build with identical features per crate, and reuses its artifacts.
//! It has no code and is never published. (This is what `cargo hakari` generates; here it is
//! kept by hand.)
//!
//! `[dependencies]` pins target (normal) units; `[build-dependencies]` pins host units (build
//! scripts, proc-macros and what they depend on), which resolver 2 resolves separately. The
//! feature resolver counts those build-dependencies even though this crate has no build
//! script, so they are never compiled for it. A crate the lockfile holds in two semver-incompatible
//! versions gets one entry per version, renamed `<name>-<major>` (`<name>-0-<minor>`), with
//! `package = "<name>"`.
//!
//! # Updating
//!
//! After a change to any member's dependencies or features (or `cargo update`), compare, for
//! each member `P`, the `(crate, version, features)` of every node in
//!
//! ```text
//! cargo tree -p P                  --target x86_64-unknown-linux-gnu -e normal,build,dev -f '{p}|{f}'
//! cargo tree --workspace           --target x86_64-unknown-linux-gnu -e normal,build,dev -f '{p}|{f}'
//! ```
//!
//! telling host nodes (under a `[build-dependencies]` header, `(proc-macro)`, or below either)
//! from target nodes. (Also `-e normal,build -p libsql-wal-cli` for `cargo run`.) For every
//! third-party crate whose features differ, put the `--workspace` feature list here, under
//! `[dependencies]` for a target node or `[build-dependencies]` for a host node, with
//! `version = "<major.minor>"` of the lockfile's version; then compare again (a pinned crate
//! pulls its own dependencies into more selections) until no third-party crate differs. A
//! pinned crate the workspace no longer uses with those features is removed. A workspace
//! member cannot be pinned here (it would be a cycle): members must not have features that
//! only some selections enable (test helpers live in `libsql-wal-testkit`, a dev-dependency,
//! for that reason).
