//! Nameserver wire types: the namespace, open-for-write/publish, and the fileserver registry.

use crate::{Checksum, DfsPath, FileId, ServerId, Version};
use serde::{Deserialize, Serialize};

/// What an entry is: the POSIX file types, all namespace entries; only files have content.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// A regular file whose content lives on fileservers.
    File,
    /// A directory; its content is the entries below it.
    Dir,
    /// A symbolic link; its target is in [`Entry::target`], no blob.
    Symlink,
    /// A named pipe: the kernel of the mount that opens it does the piping.
    Fifo,
    /// A UNIX socket's name (binding and connecting stay local to one kernel).
    Socket,
    /// A character device node ([`Entry::rdev`]).
    CharDevice,
    /// A block device node ([`Entry::rdev`]).
    BlockDevice,
}

impl EntryKind {
    /// Whether entries of this kind have content on fileservers (only regular files).
    pub fn has_content(self) -> bool {
        self == EntryKind::File
    }

    /// The `S_IFMT` bits of this kind, for `st_mode`.
    pub fn type_bits(self) -> u32 {
        match self {
            EntryKind::File => 0o100000,
            EntryKind::Dir => 0o040000,
            EntryKind::Symlink => 0o120000,
            EntryKind::Fifo => 0o010000,
            EntryKind::Socket => 0o140000,
            EntryKind::CharDevice => 0o020000,
            EntryKind::BlockDevice => 0o060000,
        }
    }

    /// The special kind named by a mode's `S_IFMT` bits (`mknod`); `None` for regular files,
    /// directories and symlinks, which have their own requests.
    pub fn special_of_mode(mode: u32) -> Option<EntryKind> {
        match mode & 0o170000 {
            0o010000 => Some(EntryKind::Fifo),
            0o140000 => Some(EntryKind::Socket),
            0o020000 => Some(EntryKind::CharDevice),
            0o060000 => Some(EntryKind::BlockDevice),
            _ => None,
        }
    }
}

/// One file or directory as the nameserver records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Stable identity (survives rename); the mount uses it as the inode number.
    pub id: FileId,
    /// Full path at the time of the reply.
    pub path: DfsPath,
    /// File or directory.
    pub kind: EntryKind,
    /// Size in bytes of the current version (0 for directories).
    pub size: u64,
    /// Permission bits (`0o644`), without the file-type bits.
    pub mode: u32,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// The current content version; 0 means empty content with no blob.
    pub version: Version,
    /// Checksum of the current version's bytes.
    pub checksum: Checksum,
    /// Fileservers that hold the current version durably.
    #[serde(default)]
    pub servers: Vec<ServerId>,
    /// Base URLs of those fileservers that are alive, resolved at reply time (stat, open,
    /// publish); empty in listings. Try them in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub locations: Vec<String>,
    /// Owner's user id (servers older than owners send none: root).
    #[serde(default)]
    pub uid: u32,
    /// Owner's group id.
    #[serde(default)]
    pub gid: u32,
    /// Last access time, ns since the epoch (older servers: absent, shown as mtime).
    #[serde(default)]
    pub atime_ns: Option<i64>,
    /// Last metadata or content change, ns since the epoch (older servers: absent).
    #[serde(default)]
    pub ctime_ns: Option<i64>,
    /// Link count: 2 + subdirectories for a directory, 1 otherwise.
    #[serde(default = "one")]
    pub nlink: u64,
    /// A symlink's target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Device number of a device node.
    #[serde(default)]
    pub rdev: u64,
    /// A capability to read this version from the fileservers in `locations` (sent in
    /// [`crate::auth::CAPABILITY_HEADER`]); given with `locations`, and only by a cluster
    /// with a key. Short-lived: a client that holds an entry longer asks again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_cap: Option<String>,
}

fn one() -> u64 {
    1
}

/// The caller a mount creates or changes an entry for: servers trust it as NFS trusts
/// AUTH_SYS credentials (the client key says who may talk to the cluster, this says which
/// local user a change is for).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// User id (the FUSE request's fsuid).
    pub uid: u32,
    /// Group id (the FUSE request's fsgid).
    pub gid: u32,
}

/// Query for endpoints addressed by one path (`GET /v1/meta/stat?path=/a`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PathQuery {
    /// The path the request is about.
    pub path: DfsPath,
}

/// Query of `GET /v1/meta/stat-id?id=N`: a file by its id, wherever (and by whichever of its
/// names) it is now.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IdQuery {
    /// The file's id.
    pub id: FileId,
}

/// Body for endpoints addressed by one path (rmdir, unlink).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathRequest {
    /// The path the request is about.
    pub path: DfsPath,
}

/// Answer of `POST /v1/meta/unlink`: which file the name referred to when it was removed, so
/// a mount that knew another file under that name (renamed on another mount meanwhile)
/// stops only the write of the file really removed.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct UnlinkResponse {
    /// Id of the removed file (absent from servers older than this field).
    #[serde(default)]
    pub id: Option<FileId>,
    /// Names the file still has (hard links); 0 when it is gone with this name.
    #[serde(default)]
    pub nlink: u64,
    /// One of the names it still has, when it has any: where a mount that knew the file by
    /// the removed name finds it now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining: Option<DfsPath>,
}

/// Query of `GET /v1/meta/list`: one page of a directory, in name order.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ListQuery {
    /// The directory to list.
    pub path: DfsPath,
    /// Return names strictly after this one (the previous page's `next_after`).
    #[serde(default)]
    pub after: Option<String>,
    /// Page size; the server caps it (default 1000).
    #[serde(default)]
    pub limit: Option<u32>,
}

/// One page of a directory listing.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ListResponse {
    /// Entries of this page, sorted by name.
    pub entries: Vec<Entry>,
    /// Present when more entries follow: pass it as `after` to get the next page.
    pub next_after: Option<String>,
    /// Names of this page's entries that have extended attributes, so that a mount can
    /// answer attribute lookups of the others (`ls -l` asks for `security.selinux` of every
    /// file) without a request each. Absent from servers older than this field.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub with_xattrs: Vec<String>,
}

/// Body of `POST /v1/meta/mkdir`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MkdirRequest {
    /// Directory to create; its parent must exist.
    pub path: DfsPath,
    /// Permission bits; default `0o755`.
    #[serde(default)]
    pub mode: Option<u32>,
    /// Owner of the new directory (default root); the group becomes the parent's when the
    /// parent has setgid, and the new directory inherits setgid then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
}

/// Body of `POST /v1/meta/create`: a new empty file.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    /// File to create; its parent must exist.
    pub path: DfsPath,
    /// Permission bits; default `0o644`.
    #[serde(default)]
    pub mode: Option<u32>,
    /// Fail with `already_exists` when the path exists (O_EXCL); otherwise return the entry.
    #[serde(default)]
    pub exclusive: bool,
    /// Owner of a new file (default root; the parent's group under setgid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
}

/// Body of `POST /v1/meta/symlink`: a symbolic link, stored as a namespace entry.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SymlinkRequest {
    /// The link to create; its parent must exist and the name must be free.
    pub path: DfsPath,
    /// What the link points at, stored as given (1 to 4095 bytes, no NUL).
    pub target: String,
    /// Owner of the link (default root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
}

/// Body of `POST /v1/meta/link`: one more name for an existing file (link(2)).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkRequest {
    /// The existing file (not a directory).
    pub path: DfsPath,
    /// The new name; its parent must exist and the name must be free.
    pub new_path: DfsPath,
}

/// Body of `POST /v1/meta/mknod`: a FIFO, socket or device node.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MknodRequest {
    /// The node to create; its parent must exist and the name must be free.
    pub path: DfsPath,
    /// fifo, socket, char_device or block_device.
    pub kind: EntryKind,
    /// Permission bits.
    pub mode: u32,
    /// Device number (devices only).
    #[serde(default)]
    pub rdev: u64,
    /// Owner of the node (default root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
}

/// Body of `POST /v1/meta/rename`: atomic, for files and directories.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenameRequest {
    /// Existing source path.
    pub from: DfsPath,
    /// Destination; an existing file is replaced, an existing empty directory is replaced by a
    /// directory, as POSIX rename does.
    pub to: DfsPath,
    /// Fail with `already_exists` instead of replacing (RENAME_NOREPLACE).
    #[serde(default)]
    pub no_replace: bool,
    /// Swap the two names atomically (RENAME_EXCHANGE): both must exist; `not_found`
    /// otherwise. Excludes `no_replace`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exchange: bool,
}

/// Body of `POST /v1/meta/setattr`: metadata only; size changes go through publish.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetAttrRequest {
    /// The file or directory to change.
    pub path: DfsPath,
    /// New permission bits.
    #[serde(default)]
    pub mode: Option<u32>,
    /// New modification time in nanoseconds since the epoch.
    #[serde(default)]
    pub mtime_ns: Option<i64>,
    /// New access time in nanoseconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub atime_ns: Option<i64>,
    /// New owner (only root may change it; the mount checks, see `caller`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// New group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    /// Clear setuid, and setgid when group-executable (a write by a non-owner, as POSIX asks;
    /// sent by the mount, which knows who writes).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub kill_suid: bool,
    /// A read's access time (relatime on the mount): `atime_ns` is stored and ctime stays,
    /// since an access is no change; a utimensat of atime alone leaves this false and moves
    /// ctime.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub access: bool,
}

/// Body of `POST /v1/meta/open-write`: a lease holder announces itself before writing.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenWriteRequest {
    /// File to write.
    pub path: DfsPath,
    /// The fencing token of the caller's lease on `path`; remembered as the file's highest.
    pub token: u64,
    /// Create the file with these permission bits when it does not exist (O_CREAT).
    #[serde(default)]
    pub create: Option<u32>,
    /// With `create`: fail when the file already exists (O_EXCL).
    #[serde(default)]
    pub exclusive: bool,
    /// Fileservers not to name as targets (an upload to them just failed): a writer whose
    /// target died calls open-write again with the same token and the failed servers here,
    /// and gets live replacements. Repeating an open-write is idempotent and, without
    /// `create`, commits nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<ServerId>,
    /// With `create`: the owner of a new file (default root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
    /// The lease `token` names, as the lockserver signed it: in a cluster with a key the
    /// nameserver checks its signature, holder, path and expiry, so a token alone (forged,
    /// or another key's) opens nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<crate::locks::Lease>,
}

/// Reply of open-write: what to write on top of, and where to upload.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OpenWriteResponse {
    /// The file as it is now; its `version` is the base of the next publish.
    pub entry: Entry,
    /// Fileservers the next version must be uploaded to (all of them, in parallel).
    pub targets: Vec<FileserverRef>,
    /// A capability to upload the versions of this file that the request's token may
    /// publish (`version_for(token, _)`), sent in [`crate::auth::CAPABILITY_HEADER`];
    /// given only by a cluster with a key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_cap: Option<String>,
}

/// A fileserver as a client addresses it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileserverRef {
    /// Its stable name.
    pub id: ServerId,
    /// Its base URL, e.g. `http://127.0.0.1:7101`.
    pub url: String,
}

/// Body of `POST /v1/meta/publish`: makes an uploaded version current, atomically.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishRequest {
    /// The file being published.
    pub path: DfsPath,
    /// Its id as returned by open-write; guards against the path having been replaced.
    pub file_id: FileId,
    /// The version the writer started from; refused with `stale` when no longer current.
    pub base_version: Version,
    /// The new version (see [`crate::version_for`]); a retry with the same value is a no-op.
    pub version: Version,
    /// The writer's fencing token; refused with `fenced` when lower than the file's highest.
    pub token: u64,
    /// Length of the new content.
    pub size: u64,
    /// Checksum of the new content.
    pub checksum: Checksum,
    /// Fileservers that acknowledged the upload durably. Empty only when `size` is 0.
    pub servers: Vec<ServerId>,
    /// Modification time to record; default: now.
    #[serde(default)]
    pub mtime_ns: Option<i64>,
    /// The signed lease `token` names (checked as at open-write).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<crate::locks::Lease>,
}

/// Body of `POST /v1/fileservers/register`, sent by a fileserver at start.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// The fileserver's stable name.
    pub id: ServerId,
    /// Its base URL as clients should reach it.
    pub url: String,
    /// Total bytes of its data disk.
    pub capacity_bytes: u64,
    /// Free bytes of its data disk.
    pub free_bytes: u64,
    /// Directories it asks to serve (the original design's static map); may be empty.
    #[serde(default)]
    pub dirs: Vec<DfsPath>,
    /// The random secret kept in its data directory next to its id: the nameserver binds the
    /// id to it at the first registration and refuses the id with any other secret, so no
    /// one else can take over the id (docs/security.md, Fileserver identity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// Reply to register: how often to heartbeat, and where the lockserver is.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RegisterResponse {
    /// Send a heartbeat this often.
    pub heartbeat_interval_ms: u64,
    /// The lockserver's URL, when the nameserver knows one.
    pub lockserver: Option<String>,
}

/// Body of `POST /v1/fileservers/heartbeat`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatRequest {
    /// The fileserver's stable name.
    pub id: ServerId,
    /// Free bytes of its data disk.
    pub free_bytes: u64,
    /// The same secret as at registration; a heartbeat with another one is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// Reply to a heartbeat.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HeartbeatResponse {
    /// False when the nameserver does not know this fileserver: register again.
    pub known: bool,
}

/// One fileserver in the cluster listing.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FileserverStatus {
    /// Its stable name.
    pub id: ServerId,
    /// Its base URL.
    pub url: String,
    /// Total bytes of its data disk.
    pub capacity_bytes: u64,
    /// Free bytes at the last heartbeat.
    pub free_bytes: u64,
    /// Directories it asked to serve.
    pub dirs: Vec<DfsPath>,
    /// Whether it heartbeated recently.
    pub alive: bool,
    /// Milliseconds since its last heartbeat.
    pub last_seen_ms_ago: u64,
}

/// One line of the directory -> fileserver map.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DirMapping {
    /// Directory prefix; the longest matching prefix places a file.
    pub dir: DfsPath,
    /// The fileservers that store files under it (empty when the line only sets a factor).
    pub servers: Vec<ServerId>,
    /// Copies wanted for files under it, when the directory overrides the cluster's factor
    /// (the longest prefix with a factor wins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication: Option<u32>,
}

/// Body of `POST /v1/dirs/replication`: how many copies files under a directory prefix want.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirReplicationRequest {
    /// The directory prefix (need not exist yet; it is a placement rule, like the map).
    pub dir: DfsPath,
    /// The factor (1-64); `null` removes the override so a shorter prefix or the cluster's
    /// default applies again. Required (write `null` to clear), so a forgotten field never
    /// clears a factor by accident.
    #[serde(deserialize_with = "Option::deserialize")]
    pub replication: Option<u32>,
}

/// A file whose current version has fewer live copies than the replication factor.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UnderReplicated {
    /// The file.
    pub path: DfsPath,
    /// Live fileservers holding its current version.
    pub live_copies: u32,
    /// Copies wanted (its directory's factor).
    pub wanted: u32,
}

/// Reply of `GET /v1/cluster`: the map, the fileservers and their health.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClusterInfo {
    /// Where clients take write leases.
    pub lockserver: Option<String>,
    /// Copies wanted per file by default; directories may override it (see `map`).
    pub replication: u32,
    /// Every registered fileserver.
    pub fileservers: Vec<FileserverStatus>,
    /// The directory -> fileserver map.
    pub map: Vec<DirMapping>,
    /// Files with too few live copies: the first 1000 (so the answer stays bounded when a
    /// dead fileserver leaves every file short); `under_replicated_count` has them all.
    pub under_replicated: Vec<UnderReplicated>,
    /// How many files have too few live copies in all.
    #[serde(default)]
    pub under_replicated_count: u64,
}

/// Query of `GET /v1/meta/xattr`: the names of a path's extended attributes, or one value.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct XattrQuery {
    /// The file or directory.
    pub path: DfsPath,
    /// The attribute to read; absent lists the names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Reply of `GET /v1/meta/xattr`: `names` for a listing, `value` for one attribute. Bounded:
/// a list holds at most [`crate::xattr::MAX_LIST`] bytes of names, a value at most
/// [`crate::xattr::MAX_VALUE`] bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct XattrReply {
    /// Every attribute name of the path, sorted (listing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub names: Option<Vec<String>>,
    /// The attribute's value (one attribute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<crate::xattr::XattrValue>,
}

/// Body of `POST /v1/meta/xattr/set`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetXattrRequest {
    /// The file or directory.
    pub path: DfsPath,
    /// Attribute name, with its namespace (`user.`, `trusted.` or `security.`).
    pub name: String,
    /// The new value, base64 on the wire.
    pub value: crate::xattr::XattrValue,
    /// Create or replace (default), only create (`XATTR_CREATE`) or only replace
    /// (`XATTR_REPLACE`).
    #[serde(default)]
    pub mode: crate::xattr::SetMode,
}

/// Body of `POST /v1/meta/xattr/remove`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoveXattrRequest {
    /// The file or directory.
    pub path: DfsPath,
    /// The attribute to remove; `no_data` when it does not exist.
    pub name: String,
}

/// Reply of the nameserver's `GET /v1/stats`: durable work since start, so a benchmark can
/// count fsyncs per created file and see how many changes shared one commit.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameserverStats {
    /// fsyncs the store issued (redb's `sync_data` calls on its file).
    pub fsyncs: u64,
    /// Durable store commits.
    pub commits: u64,
    /// Changes those commits carried (creates, publishes, ...); above `commits` when
    /// concurrent changes shared a commit (group commit).
    pub mutations: u64,
}
