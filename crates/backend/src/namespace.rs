//! `NamespaceName`: the name of a database in a multi-tenant server, validated once so it can be
//! used as a path component and an object-key component everywhere.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use crate::error::Error;

/// Longest accepted namespace name, in bytes.
pub const MAX_NAMESPACE_LEN: usize = 255;

/// A validated namespace name: 1 to 255 bytes of ASCII letters, digits, `-`, `_` and `.`, not
/// starting with `.`. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NamespaceName(Arc<str>);

impl NamespaceName {
    /// Returns the name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for NamespaceName {
    type Err = Error;

    fn from_str(name: &str) -> Result<Self, Error> {
        let invalid = |why| Error::InvalidNamespace {
            name: name.chars().take(MAX_NAMESPACE_LEN + 1).collect(),
            why,
        };
        if name.is_empty() || name.len() > MAX_NAMESPACE_LEN {
            return Err(invalid("must be 1 to 255 bytes long"));
        }
        if name.starts_with('.') {
            return Err(invalid("must not start with '.'"));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(invalid(
                "only ASCII letters, digits, '-', '_' and '.' are allowed",
            ));
        }
        Ok(NamespaceName(name.into()))
    }
}

impl fmt::Display for NamespaceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_are_safe_in_paths_and_keys_are_accepted() {
        for ok in ["a", "tenant-42", "db_1.prod", &"x".repeat(255)] {
            assert_eq!(ok.parse::<NamespaceName>().unwrap().as_str(), ok);
        }
    }

    #[test]
    fn names_that_could_escape_a_directory_are_refused() {
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "a/b",
            "a\\b",
            "a b",
            "é",
            &"x".repeat(256),
        ] {
            let err = bad.parse::<NamespaceName>().unwrap_err();
            assert!(err.to_string().contains("invalid namespace name"), "{err}");
        }
    }
}
