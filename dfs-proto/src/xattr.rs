//! Extended attributes: the namespaces DFS stores, the limits, and the wire form of a value.
//!
//! Shared by the nameserver (which enforces the limits) and the mount (which answers the
//! kernel with the same errors before a request leaves the machine).

use crate::{ApiError, ErrorCode};
use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest attribute name, prefix included (Linux's `XATTR_NAME_MAX`, as on ext4).
pub const MAX_NAME: usize = 255;
/// Largest value (Linux's `XATTR_SIZE_MAX`, ext4 with `ea_inode`).
pub const MAX_VALUE: usize = 64 * 1024;
/// Most bytes of names and values together on one inode: keeps one inode's attributes a
/// small, bounded part of the nameserver's store (ext4 allows one block without `ea_inode`).
pub const MAX_TOTAL: usize = 256 * 1024;
/// Most bytes of the name list of one inode, each name with its NUL (Linux's
/// `XATTR_LIST_MAX`): `listxattr` can always return the whole list.
pub const MAX_LIST: usize = 64 * 1024;

/// The namespaces a name may start with; anything else is refused with `not_supported`.
/// `system.*` (POSIX ACLs) is not stored: see docs/SEMANTICS.md.
pub const NAMESPACES: [&str; 3] = ["user.", "trusted.", "security."];

/// Checks an attribute name: `not_supported` outside [`NAMESPACES`], `out_of_range` over
/// [`MAX_NAME`] bytes (the kernel's ERANGE), `bad_request` for an empty suffix or a NUL.
pub fn validate_name(name: &str) -> Result<(), ApiError> {
    if name.len() > MAX_NAME {
        return Err(ApiError::new(
            ErrorCode::OutOfRange,
            format!("attribute name is {} bytes, at most {MAX_NAME}", name.len()),
        ));
    }
    let Some(prefix) = NAMESPACES.iter().find(|p| name.starts_with(**p)) else {
        return Err(ApiError::new(
            ErrorCode::NotSupported,
            format!(
                "attribute namespace of {name:?} is not supported (user., trusted., security.)"
            ),
        ));
    };
    if name.len() == prefix.len() || name.contains('\0') {
        return Err(ApiError::bad_request(format!(
            "attribute name {name:?} is empty after its namespace or holds a NUL"
        )));
    }
    Ok(())
}

/// Whether `name` is in the `trusted.` namespace, which only root may read or write.
pub fn is_trusted(name: &str) -> bool {
    name.starts_with("trusted.")
}

/// What a set does when the attribute exists or not (`setxattr(2)` flags).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SetMode {
    /// Create or replace (flags 0).
    #[default]
    Any,
    /// `XATTR_CREATE`: fail with `already_exists` when the attribute exists.
    Create,
    /// `XATTR_REPLACE`: fail with `no_data` when it does not.
    Replace,
}

impl SetMode {
    /// Decodes `setxattr(2)` flags; `None` for unknown bits or both flags at once.
    pub fn from_flags(flags: i32) -> Option<SetMode> {
        match flags {
            0 => Some(SetMode::Any),
            libc::XATTR_CREATE => Some(SetMode::Create),
            libc::XATTR_REPLACE => Some(SetMode::Replace),
            _ => None,
        }
    }
}

/// An attribute value: arbitrary bytes, base64 (standard alphabet, padded) on the wire so
/// that JSON can carry them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct XattrValue(pub Vec<u8>);

impl Serialize for XattrValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for XattrValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map(XattrValue)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_like_linux() {
        assert!(validate_name("user.a").is_ok());
        assert!(validate_name("trusted.x").is_ok());
        assert!(validate_name("security.selinux").is_ok());
        assert_eq!(
            validate_name("system.posix_acl_access").unwrap_err().code,
            ErrorCode::NotSupported
        );
        assert_eq!(
            validate_name("foo.bar").unwrap_err().code,
            ErrorCode::NotSupported
        );
        assert_eq!(
            validate_name("user.").unwrap_err().code,
            ErrorCode::BadRequest
        );
        let long = format!("user.{}", "a".repeat(MAX_NAME));
        assert_eq!(
            validate_name(&long).unwrap_err().code,
            ErrorCode::OutOfRange
        );
    }

    #[test]
    fn values_travel_as_base64() {
        let v = XattrValue(vec![0, 1, 2, 255]);
        let json = serde_json::to_string(&v).unwrap();
        assert_eq!(json, "\"AAEC/w==\"");
        assert_eq!(serde_json::from_str::<XattrValue>(&json).unwrap(), v);
        assert!(serde_json::from_str::<XattrValue>("\"not base64!\"").is_err());
        assert_eq!(
            SetMode::from_flags(libc::XATTR_CREATE),
            Some(SetMode::Create)
        );
        assert_eq!(SetMode::from_flags(3), None);
    }
}
