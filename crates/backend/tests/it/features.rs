//! What the crate's features put in the library: test helpers (`conformance`, full of
//! `expect`) are not in a default build, and the crate's own tests enable them through the
//! dev-dependency on itself (one feature resolution for the workspace).

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
fn the_conformance_suite_is_behind_a_feature_that_default_builds_leave_out() {
    let manifest =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")).unwrap();
    let features = section(&manifest, "features");
    let feature = |name: &str| {
        features
            .iter()
            .find(|line| line.split('=').next().map(str::trim) == Some(name))
            .map(|line| line.split_once('=').unwrap().1.trim().to_string())
    };
    assert_eq!(
        feature("conformance").as_deref(),
        Some("[]"),
        "{features:?}"
    );
    let mut default = vec!["default".to_string()];
    let mut seen = Vec::new();
    while let Some(name) = default.pop() {
        assert_ne!(name, "conformance", "a default build enables the suite");
        let Some(enables) = feature(&name) else {
            continue;
        };
        for enabled in enables.trim_matches(['[', ']']).split(',') {
            let enabled = enabled.trim().trim_matches('"');
            if !enabled.is_empty() && !seen.contains(&enabled.to_string()) {
                seen.push(enabled.to_string());
                default.push(enabled.to_string());
            }
        }
    }
    let own = section(&manifest, "dev-dependencies")
        .into_iter()
        .find(|line| line.starts_with("libsql-wal-backend"))
        .unwrap();
    assert!(own.contains("\"conformance\""), "{own}");

    let lib = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/lib.rs")).unwrap();
    let lines: Vec<&str> = lib.lines().collect();
    let at = lines
        .iter()
        .position(|line| line.trim() == "pub mod conformance;")
        .unwrap();
    assert_eq!(
        lines[at - 1].trim(),
        "#[cfg(feature = \"conformance\")]",
        "the module is compiled only with the feature"
    );
}
