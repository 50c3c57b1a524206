//! Fileserver wire types: immutable blobs keyed by (file id, version).

use crate::{Checksum, FileId, Version};
use serde::{Deserialize, Serialize};

/// One stored version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobInfo {
    /// The file it belongs to.
    pub file_id: FileId,
    /// The version it is.
    pub version: Version,
    /// Its length.
    pub size: u64,
    /// Its checksum, verified on upload.
    pub checksum: Checksum,
}

/// Reply of `GET /v1/blobs`: everything this fileserver stores.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BlobList {
    /// All stored versions.
    pub blobs: Vec<BlobInfo>,
}

/// Body of `POST /v1/blobs/{file_id}/{version}/fetch`: copy a version from another fileserver
/// (used by the nameserver to restore the replication factor).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchRequest {
    /// Base URL of a fileserver that holds the version.
    pub source: String,
    /// Expected checksum; the copy is refused when it differs.
    pub checksum: Checksum,
}

/// Reply of `GET /v1/stats`: counters that prove what was (not) transferred.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileserverStats {
    /// HTTP requests served.
    pub requests: u64,
    /// Blob uploads completed.
    pub uploads: u64,
    /// Blob downloads started (GET of a blob).
    pub downloads: u64,
    /// Body bytes received in uploads.
    pub bytes_in: u64,
    /// Body bytes sent in downloads.
    pub bytes_out: u64,
}
