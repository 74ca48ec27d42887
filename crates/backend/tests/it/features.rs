//! Test helpers stay out of production builds: the conformance suite and the S3 test server
//! live in `libsql-wal-testkit`, which no member of the workspace depends on outside its
//! `[dev-dependencies]` (so no library or binary links them, and no library's features depend
//! on which tests are built).

/// Returns the lines of the `[section]` of a TOML file.
fn section<'a>(toml: &'a str, name: &str) -> Vec<&'a str> {
    let header = format!("[{name}]");
    toml.lines()
        .skip_while(|line| line.trim() != header)
        .skip(1)
        .take_while(|line| !line.starts_with('['))
        .filter(|line| !line.trim_start().starts_with('#'))
        .collect()
}

#[test]
fn no_member_depends_on_the_testkit_outside_its_dev_dependencies() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut manifests = vec![root.join("tests/Cargo.toml"), root.join("xtask/Cargo.toml")];
    for entry in std::fs::read_dir(root.join("crates")).unwrap() {
        let manifest = entry.unwrap().path().join("Cargo.toml");
        if manifest.exists() {
            manifests.push(manifest);
        }
    }
    assert!(manifests.len() >= 8, "{manifests:?}");
    let mut dev_users = 0;
    for manifest in &manifests {
        let text = std::fs::read_to_string(manifest).unwrap();
        for kind in ["dependencies", "build-dependencies"] {
            assert!(
                !section(&text, kind)
                    .iter()
                    .any(|line| line.starts_with("libsql-wal-testkit")),
                "{} has the testkit in [{kind}]",
                manifest.display()
            );
        }
        if section(&text, "dev-dependencies")
            .iter()
            .any(|line| line.starts_with("libsql-wal-testkit"))
        {
            dev_users += 1;
        }
    }
    assert!(dev_users >= 5, "the tests use the testkit: {dev_users}");
    let lib = std::fs::read_to_string(root.join("crates/backend/src/lib.rs")).unwrap();
    assert!(
        !lib.contains("mod conformance"),
        "the suite is not in the library"
    );
    assert!(
        !lib.contains("mod test_server"),
        "the test server is not in the library"
    );
}
