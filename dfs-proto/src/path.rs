//! The validated DFS path: parsed once at the edge, trusted everywhere after.

use crate::error::{ApiError, ErrorCode};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Longest path accepted, in bytes (Linux `PATH_MAX`).
pub const MAX_PATH_BYTES: usize = 4096;
/// Longest single component accepted, in bytes (Linux `NAME_MAX`).
pub const MAX_NAME_BYTES: usize = 255;

/// An absolute, normalised path inside the DFS namespace, such as `/` or `/src/main.rs`.
///
/// Holding one proves the text is UTF-8, absolute, free of empty, `.` and `..` components, NUL
/// and control characters, and within the Linux length limits. Servers never build an on-disk
/// name from it; it is a key, not a filename.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DfsPath(String);

impl DfsPath {
    /// The root directory `/`.
    pub fn root() -> DfsPath {
        DfsPath("/".to_owned())
    }

    /// Validates `text`. A single trailing slash is accepted (`/a/` is `/a`); repeated slashes
    /// are not, so one path has one spelling.
    pub fn parse(text: &str) -> Result<DfsPath, ApiError> {
        if text.is_empty() {
            return Err(invalid("path is empty"));
        }
        if text.len() > MAX_PATH_BYTES {
            return Err(ApiError::new(
                ErrorCode::NameTooLong,
                format!("path is longer than {MAX_PATH_BYTES} bytes"),
            ));
        }
        let Some(rest) = text.strip_prefix('/') else {
            return Err(invalid("path must be absolute (start with '/')"));
        };
        if rest.is_empty() {
            return Ok(DfsPath::root());
        }
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let mut path = String::with_capacity(text.len());
        for name in rest.split('/') {
            validate_name(name)?;
            path.push('/');
            path.push_str(name);
        }
        Ok(DfsPath(path))
    }

    /// The path as text, always starting with `/`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is `/`.
    pub fn is_root(&self) -> bool {
        self.0 == "/"
    }

    /// The containing directory; the root is its own parent.
    pub fn parent(&self) -> DfsPath {
        match self.0.rfind('/') {
            Some(0) | None => DfsPath::root(),
            Some(i) => DfsPath(self.0[..i].to_owned()),
        }
    }

    /// The last component; empty for the root.
    pub fn name(&self) -> &str {
        match self.0.rfind('/') {
            Some(i) => &self.0[i + 1..],
            None => "",
        }
    }

    /// The path of `name` inside this directory, validating `name`.
    pub fn join(&self, name: &str) -> Result<DfsPath, ApiError> {
        validate_name(name)?;
        let joined = if self.is_root() {
            format!("/{name}")
        } else {
            format!("{}/{name}", self.0)
        };
        if joined.len() > MAX_PATH_BYTES {
            return Err(ApiError::new(
                ErrorCode::NameTooLong,
                format!("path is longer than {MAX_PATH_BYTES} bytes"),
            ));
        }
        Ok(DfsPath(joined))
    }

    /// The components in order; none for the root.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/').filter(|c| !c.is_empty())
    }

    /// Whether `self` is `ancestor` or lies below it, comparing whole components.
    pub fn starts_with(&self, ancestor: &DfsPath) -> bool {
        if ancestor.is_root() {
            return true;
        }
        self.0 == ancestor.0
            || (self.0.starts_with(&ancestor.0) && self.0.as_bytes()[ancestor.0.len()] == b'/')
    }

    /// `self` with the leading `from` replaced by `to`; `None` when `self` is not under `from`.
    pub fn rebase(&self, from: &DfsPath, to: &DfsPath) -> Option<DfsPath> {
        if !self.starts_with(from) {
            return None;
        }
        let tail = if from.is_root() {
            &self.0[..]
        } else {
            &self.0[from.0.len()..]
        };
        if tail.is_empty() || tail == "/" {
            return Some(to.clone());
        }
        if to.is_root() {
            Some(DfsPath(tail.to_owned()))
        } else {
            Some(DfsPath(format!("{}{tail}", to.0)))
        }
    }
}

/// Checks one path component (a file or directory name).
pub fn validate_name(name: &str) -> Result<(), ApiError> {
    if name.is_empty() {
        return Err(invalid("path has an empty component (repeated '/')"));
    }
    if name == "." || name == ".." {
        return Err(invalid("path components '.' and '..' are not allowed"));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(ApiError::new(
            ErrorCode::NameTooLong,
            format!("a path component is longer than {MAX_NAME_BYTES} bytes"),
        ));
    }
    if name.contains('/') {
        return Err(invalid("a name must not contain '/'"));
    }
    if name.chars().any(|c| c.is_control()) {
        return Err(invalid("path contains NUL or a control character"));
    }
    Ok(())
}

fn invalid(message: &str) -> ApiError {
    ApiError::new(ErrorCode::InvalidPath, message)
}

impl TryFrom<String> for DfsPath {
    type Error = ApiError;
    fn try_from(text: String) -> Result<DfsPath, ApiError> {
        DfsPath::parse(&text)
    }
}

impl From<DfsPath> for String {
    fn from(path: DfsPath) -> String {
        path.0
    }
}

impl std::str::FromStr for DfsPath {
    type Err = ApiError;
    fn from_str(text: &str) -> Result<DfsPath, ApiError> {
        DfsPath::parse(text)
    }
}

impl fmt::Display for DfsPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for DfsPath {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_normal_paths() {
        assert_eq!(DfsPath::parse("/").unwrap(), DfsPath::root());
        assert_eq!(DfsPath::parse("/a/b.txt").unwrap().as_str(), "/a/b.txt");
        assert_eq!(DfsPath::parse("/a/").unwrap().as_str(), "/a");
        assert_eq!(DfsPath::parse("/ünï cødé").unwrap().name(), "ünï cødé");
        assert_eq!(DfsPath::parse("/...").unwrap().name(), "...");
    }

    #[test]
    fn rejects_bad_paths() {
        for bad in [
            "", "a", "a/b", "//", "/a//b", "/.", "/..", "/a/../b", "/a/./b", "/a\0b", "/a\nb",
            "/a\u{7f}",
        ] {
            let err = DfsPath::parse(bad).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidPath, "{bad:?}");
        }
        let long_name = format!("/{}", "x".repeat(256));
        assert_eq!(
            DfsPath::parse(&long_name).unwrap_err().code,
            ErrorCode::NameTooLong
        );
        let long_path = "/abc".repeat(1025);
        assert_eq!(
            DfsPath::parse(&long_path).unwrap_err().code,
            ErrorCode::NameTooLong
        );
        assert!(DfsPath::parse(&format!("/{}", "x".repeat(255))).is_ok());
    }

    #[test]
    fn parent_name_join_rebase() {
        let p = DfsPath::parse("/a/b/c").unwrap();
        assert_eq!(p.parent().as_str(), "/a/b");
        assert_eq!(p.name(), "c");
        assert_eq!(DfsPath::parse("/a").unwrap().parent(), DfsPath::root());
        assert_eq!(DfsPath::root().join("x").unwrap().as_str(), "/x");
        assert!(DfsPath::root().join("..").is_err());
        assert!(DfsPath::root().join("a/b").is_err());
        let from = DfsPath::parse("/a").unwrap();
        let to = DfsPath::parse("/z/y").unwrap();
        assert_eq!(p.rebase(&from, &to).unwrap().as_str(), "/z/y/b/c");
        assert!(DfsPath::parse("/ab").unwrap().rebase(&from, &to).is_none());
        assert!(p.starts_with(&from));
        assert!(!DfsPath::parse("/ab").unwrap().starts_with(&from));
    }

    #[test]
    fn serde_validates() {
        assert!(serde_json::from_str::<DfsPath>(r#""/a/../etc""#).is_err());
        let p: DfsPath = serde_json::from_str(r#""/a/b""#).unwrap();
        assert_eq!(serde_json::to_string(&p).unwrap(), r#""/a/b""#);
    }

    fn name_strategy() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9._ -]{1,20}".prop_filter("not . or ..", |s| s != "." && s != "..")
    }

    proptest! {
        #[test]
        fn valid_paths_round_trip(names in proptest::collection::vec(name_strategy(), 0..8)) {
            let text = format!("/{}", names.join("/"));
            let path = DfsPath::parse(&text).unwrap();
            prop_assert_eq!(path.as_str(), text.as_str());
            prop_assert_eq!(path.components().count(), names.len());
            let again = DfsPath::parse(path.as_str()).unwrap();
            prop_assert_eq!(again, path.clone());
            if let Some(last) = names.last() {
                prop_assert_eq!(path.name(), last.as_str());
                prop_assert_eq!(path.parent().join(last).unwrap(), path);
            }
        }

        #[test]
        fn arbitrary_text_never_panics_and_accepted_paths_are_clean(text in any::<String>()) {
            if let Ok(path) = DfsPath::parse(&text) {
                prop_assert!(path.as_str().starts_with('/'));
                prop_assert!(path.as_str().len() <= MAX_PATH_BYTES);
                for c in path.components() {
                    prop_assert!(c != "." && c != "..");
                    prop_assert!(!c.is_empty() && c.len() <= MAX_NAME_BYTES);
                    prop_assert!(!c.chars().any(|ch| ch.is_control()));
                }
            }
        }

        #[test]
        fn dot_dot_anywhere_is_rejected(
            before in proptest::collection::vec(name_strategy(), 0..4),
            after in proptest::collection::vec(name_strategy(), 0..4),
        ) {
            let mut names = before.clone();
            names.push("..".to_owned());
            names.extend(after);
            let text = format!("/{}", names.join("/"));
            prop_assert!(DfsPath::parse(&text).is_err());
        }
    }
}
