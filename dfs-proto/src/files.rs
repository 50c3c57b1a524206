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

/// Query of `GET /v1/blobs`: one bounded page in (file_id, version) order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlobListQuery {
    /// With `after_version`: blobs strictly after (after_file_id, after_version), the
    /// previous page's `next_after`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_file_id: Option<FileId>,
    /// See `after_file_id`; both or neither.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_version: Option<Version>,
    /// Page size; the server caps it (default and most: 10,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// Where the next page of a blob listing starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobCursor {
    /// The last file id of the page.
    pub file_id: FileId,
    /// The last version of the page.
    pub version: Version,
}

/// Reply of `GET /v1/blobs`: one page of what this fileserver stores.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BlobList {
    /// Stored versions, in (file_id, version) order.
    pub blobs: Vec<BlobInfo>,
    /// Set when more follow: ask again with `after_file_id`/`after_version` from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_after: Option<BlobCursor>,
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

/// What a fileserver found when it re-read one of its blobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlobState {
    /// Stored, with the length and checksum it was stored with.
    Good,
    /// Not stored (never, deleted, or its file vanished from disk).
    Missing,
    /// Its content differs from its recorded length or checksum; the server removed it.
    Corrupt,
}

/// Reply of `POST /v1/blobs/{file_id}/{version}/verify`. Always 200 with a state (never a 404
/// for a missing blob), so that a fileserver without this endpoint (404 `no such endpoint`) is
/// never mistaken for one that lost the blob.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobCheck {
    /// What was found.
    pub state: BlobState,
    /// The blob as recorded (size and checksum it should have), unless `missing`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recorded: Option<BlobInfo>,
    /// The length and checksum of the bytes actually read now (unless `missing`), so the
    /// nameserver's scrub compares its own checksum with what is on the disk, not only with
    /// what the fileserver recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub computed: Option<BlobInfo>,
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
    /// fsync/fdatasync calls issued on blobs and their directories (absent from older
    /// servers: 0), so a benchmark can count the durable steps per file.
    #[serde(default)]
    pub fsyncs: u64,
}
