//! Everything the DFS parts say to each other: wire types, error codes, validated paths, clients.
//!
//! Servers, the mount and the tests all depend on this crate so that a request has exactly one
//! definition and an error has exactly one HTTP status and one errno.

pub mod auth;
pub mod checksum;
pub mod client;
pub mod error;
pub mod files;
pub mod locks;
pub mod mountinfo;
pub mod names;
pub mod path;
pub mod tls;
mod transfer;
pub mod xattr;

pub use checksum::Checksum;
pub use error::{ApiError, ErrorCode};
pub use path::DfsPath;

/// Identifies a file or directory for its whole life, across renames.
pub type FileId = u64;

/// Identifies one immutable content version of a file; 0 is the empty content with no blob.
///
/// Writers build it as `fencing_token << 20 | publish_seq`, so versions are unique cluster-wide,
/// grow with the fencing token, and a retried publish reuses the same number (idempotent).
pub type Version = u64;

/// A fileserver's stable name, chosen by the fileserver once and kept in its data directory.
pub type ServerId = String;

/// The version a writer holding `token` uses for its `seq`-th publish under that lease.
pub fn version_for(token: u64, seq: u64) -> Version {
    (token << 20) | (seq & 0xF_FFFF)
}

/// The fencing token a version was built from (the inverse of [`version_for`]): what a
/// write capability names, since the writer picks the version's low bits itself.
pub fn token_of(version: Version) -> u64 {
    version >> 20
}

/// Header carrying the content checksum of an uploaded blob (see [`Checksum`]).
pub const CHECKSUM_HEADER: &str = "x-dfs-checksum";
