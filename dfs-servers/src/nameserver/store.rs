//! The nameserver's durable state in redb, behind a small typed interface.
//!
//! Layout (one redb file, `nameserver.redb` in the data directory):
//! - `nodes`: node id -> JSON [`Node`] (files and directories; the root is id 1).
//! - `children`: (parent id, name) -> child id, so listing a directory is one range scan and a
//!   path lookup is one point lookup per component. Renaming a directory tree moves one key.
//! - `meta`: counters (`next_id`), so ids are never reused, even across restarts, and the
//!   store's `schema_version` (absent in stores written before versions existed: version 1;
//!   see [`SCHEMA_VERSION`] and the `upgrade` module).
//! - `fileservers`: server id -> JSON [`FileserverRecord`].
//! - `dirmap`: directory path -> JSON [`DirRecord`] (the placement map: the servers of a
//!   directory prefix and its replication factor; older stores hold a bare list of server ids,
//!   which still reads).
//! - `xattrs`: (node id, attribute name) -> value bytes, so a listing is one range scan and
//!   removing a node removes its attributes in the same transaction. A store written before
//!   extended attributes simply gets the empty table.
//!
//! Every change is committed with the default (immediate) durability before the caller
//! replies; concurrent changes share a transaction and its commit (group commit, see
//! [`Store::write`]), each with an undo log so a refused change leaves the others intact. The store sits on the real file ([`Store::open`]) or
//! on any [`redb::StorageBackend`] ([`Store::with_backend`]), which is how the power-loss tests
//! run it on [`crate::common::crash_backend::CrashBackend`].

use crate::common::fsyncs::{create_counted, Counter, CountingBackend};
use dfs_proto::names::{EntryKind, NameserverStats};
use dfs_proto::{ApiError, Checksum, DfsPath, FileId, ServerId, Version};
use redb::{
    Database, ReadOnlyTable, ReadableDatabase, ReadableTable, StorageBackend, Table,
    TableDefinition, WriteTransaction,
};
use serde::{Deserialize, Serialize};
use std::fmt::Display;
use std::ops::Bound;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

const NODES: TableDefinition<u64, &[u8]> = TableDefinition::new("nodes");
const CHILDREN: TableDefinition<(u64, &str), u64> = TableDefinition::new("children");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const FILESERVERS: TableDefinition<&str, &[u8]> = TableDefinition::new("fileservers");
const DIRMAP: TableDefinition<&str, &[u8]> = TableDefinition::new("dirmap");
const XATTRS: TableDefinition<(u64, &str), &[u8]> = TableDefinition::new("xattrs");

/// The root directory's id; fixed so the mount can treat it as inode 1.
pub const ROOT_ID: FileId = 1;
const NEXT_ID: &str = "next_id";
/// Key of the schema version in `meta`.
pub(crate) const SCHEMA_KEY: &str = "schema_version";
/// The schema this code writes. 1: no version key, nodes without owners or times beyond
/// mtime. 2: nodes carry uid/gid, atime/ctime, the subdirectory count, special-file kinds
/// (symlink target, rdev).
pub const SCHEMA_VERSION: u64 = 2;

/// One file or directory as stored; its path is derived from the parent chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// Containing directory (0 for the root).
    pub parent: FileId,
    /// Name inside the parent (empty for the root).
    pub name: String,
    /// File or directory.
    pub kind: EntryKind,
    /// Size of the current version.
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// Modification time, ns since the epoch.
    pub mtime_ns: i64,
    /// Current content version (0 = empty, no blob).
    pub version: Version,
    /// Checksum of the current version.
    pub checksum: Checksum,
    /// Fileservers holding the current version durably.
    pub servers: Vec<ServerId>,
    /// Highest fencing token seen for this file (open-write or publish).
    pub token: u64,
    /// Owner's user id (stores of schema 1 had none: their files belong to root).
    #[serde(default)]
    pub uid: u32,
    /// Owner's group id.
    #[serde(default)]
    pub gid: u32,
    /// Last access time, ns since the epoch (updated only as the mount's atime rule asks).
    #[serde(default)]
    pub atime_ns: i64,
    /// Last change of metadata or content, ns since the epoch.
    #[serde(default)]
    pub ctime_ns: i64,
    /// Directories directly inside this one, kept so `st_nlink` is 2 + subdirs without a scan.
    #[serde(default)]
    pub subdirs: u64,
    /// A symlink's target, as given (not resolved, may dangle).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Device number of a character or block device node.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rdev: u64,
    /// The file's other names (hard links) as (directory, name); `parent`/`name` is one
    /// more. Kept in the node so that a link, an unlink or a rename of one name is one
    /// node write, and the last name's removal is where the content becomes garbage.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<(FileId, String)>,
}

impl Node {
    /// `st_nlink` of a non-directory: every name it has.
    pub fn names(&self) -> u64 {
        1 + self.links.len() as u64
    }

    /// Whether (`parent`, `name`) is this node's name (`parent`/`name`, or one of `links`).
    pub fn is_named(&self, parent: FileId, name: &str) -> bool {
        (self.parent == parent && self.name == name)
            || self.links.iter().any(|(p, n)| *p == parent && n == name)
    }

    /// Moves the name (`from_parent`, `from_name`) to (`to_parent`, `to_name`): the main
    /// name or the link that it is.
    pub fn rename_name(
        &mut self,
        (from_parent, from_name): (FileId, &str),
        (to_parent, to_name): (FileId, &str),
    ) {
        if self.parent == from_parent && self.name == from_name {
            self.parent = to_parent;
            self.name = to_name.to_owned();
        } else if let Some(link) = self
            .links
            .iter_mut()
            .find(|(p, n)| *p == from_parent && n == from_name)
        {
            *link = (to_parent, to_name.to_owned());
        }
    }

    /// Drops the name (`parent`, `name`); false when it was the last one (the file goes).
    pub fn drop_name(&mut self, parent: FileId, name: &str) -> bool {
        if self.links.is_empty() {
            return false;
        }
        if self.parent == parent && self.name == name {
            let (p, n) = self.links.remove(0);
            self.parent = p;
            self.name = n;
        } else {
            self.links.retain(|(p, n)| !(*p == parent && n == name));
        }
        true
    }
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl Node {
    /// A fresh node with no content.
    pub fn new(parent: FileId, name: &str, kind: EntryKind, mode: u32, mtime_ns: i64) -> Node {
        Node {
            parent,
            name: name.to_owned(),
            kind,
            size: 0,
            mode,
            mtime_ns,
            version: 0,
            checksum: Checksum::of(&[]),
            servers: Vec::new(),
            token: 0,
            uid: 0,
            gid: 0,
            atime_ns: mtime_ns,
            ctime_ns: mtime_ns,
            subdirs: 0,
            target: None,
            rdev: 0,
            links: Vec::new(),
        }
    }

    /// Sets the owner (builder style, for creation).
    pub fn owned_by(mut self, uid: u32, gid: u32) -> Node {
        self.uid = uid;
        self.gid = gid;
        self
    }
}

/// A registered fileserver as stored (liveness lives in memory).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileserverRecord {
    /// Base URL clients use.
    pub url: String,
    /// Total bytes of its data disk.
    pub capacity_bytes: u64,
    /// Free bytes at registration or last heartbeat.
    pub free_bytes: u64,
    /// Directories it asked to serve.
    pub dirs: Vec<DfsPath>,
    /// SHA-256 of the identity secret it registered with first; registrations and heartbeats
    /// of this id with another secret are refused. Absent in records of older releases: the
    /// first registration with a secret sets it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_hash: Option<String>,
}

/// One directory prefix of the placement map.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DirRecord {
    /// Fileservers that store files under it (empty: the servers come from a shorter prefix).
    pub servers: Vec<ServerId>,
    /// Copies wanted for files under it (none: a shorter prefix or the cluster default).
    pub replication: Option<u32>,
}

impl DirRecord {
    /// Whether the record says nothing, so it can be removed from the map.
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty() && self.replication.is_none()
    }
}

impl<'de> Deserialize<'de> for DirRecord {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        /// Stores written before per-directory replication hold a bare server list.
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Stored {
            Record {
                servers: Vec<ServerId>,
                #[serde(default)]
                replication: Option<u32>,
            },
            Servers(Vec<ServerId>),
        }
        Ok(match Stored::deserialize(d)? {
            Stored::Record {
                servers,
                replication,
            } => DirRecord {
                servers,
                replication,
            },
            Stored::Servers(servers) => DirRecord {
                servers,
                replication: None,
            },
        })
    }
}

/// Turns any store error into `internal`, logging it: never caused by client input.
pub fn internal(err: impl Display) -> ApiError {
    tracing::error!(%err, "store error");
    ApiError::internal(format!("store error: {err}"))
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, ApiError> {
    serde_json::to_vec(value).map_err(internal)
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(internal)
}

/// The opened tables of one transaction, read-only or writable.
pub struct Tables<N, C, M, F, D, X> {
    nodes: N,
    children: C,
    meta: M,
    fileservers: F,
    dirmap: D,
    xattrs: X,
    /// What each write replaced, newest last, so a refused change can be taken back out of a
    /// transaction it shares with other changes (empty for read tables).
    undo: Vec<Undo>,
}

/// One write of a change, as what it replaced: `None` means the key was absent.
#[derive(Debug)]
enum Undo {
    Node(FileId, Option<Vec<u8>>),
    Child(FileId, String, Option<FileId>),
    Meta(String, Option<u64>),
    Fileserver(String, Option<Vec<u8>>),
    Dirmap(String, Option<Vec<u8>>),
    Xattr(FileId, String, Option<Vec<u8>>),
}

/// Tables of a write transaction.
pub type WriteTables<'t> = Tables<
    Table<'t, u64, &'static [u8]>,
    Table<'t, (u64, &'static str), u64>,
    Table<'t, &'static str, u64>,
    Table<'t, &'static str, &'static [u8]>,
    Table<'t, &'static str, &'static [u8]>,
    Table<'t, (u64, &'static str), &'static [u8]>,
>;

/// Tables of a read transaction.
pub type ReadTables = Tables<
    ReadOnlyTable<u64, &'static [u8]>,
    ReadOnlyTable<(u64, &'static str), u64>,
    ReadOnlyTable<&'static str, u64>,
    ReadOnlyTable<&'static str, &'static [u8]>,
    ReadOnlyTable<&'static str, &'static [u8]>,
    ReadOnlyTable<(u64, &'static str), &'static [u8]>,
>;

/// Reads shared by read and write transactions, so the namespace logic is written once.
pub trait Read {
    /// The node with this id.
    fn node(&self, id: FileId) -> Result<Option<Node>, ApiError>;
    /// The id of `name` in directory `parent`.
    fn child(&self, parent: FileId, name: &str) -> Result<Option<FileId>, ApiError>;
    /// Up to `limit` children of `parent` with names strictly after `after`, in name order.
    fn children(
        &self,
        parent: FileId,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, FileId)>, ApiError>;
    /// Every node (for the repair and GC scans).
    fn all_nodes(&self) -> Result<Vec<(FileId, Node)>, ApiError>;
    /// One registered fileserver.
    fn fileserver(&self, id: &str) -> Result<Option<FileserverRecord>, ApiError>;
    /// Every registered fileserver, by id.
    fn fileservers(&self) -> Result<Vec<(ServerId, FileserverRecord)>, ApiError>;
    /// The whole placement map, sorted by directory.
    fn dirmap(&self) -> Result<Vec<(DfsPath, DirRecord)>, ApiError>;
    /// The next id the counter will hand out (ids below it may have been used).
    fn id_counter(&self) -> Result<FileId, ApiError>;
    /// One extended attribute of node `id`.
    fn xattr(&self, id: FileId, name: &str) -> Result<Option<Vec<u8>>, ApiError>;
    /// Every extended attribute of node `id` with its value's length, in name order.
    fn xattr_sizes(&self, id: FileId) -> Result<Vec<(String, usize)>, ApiError>;
    /// Whether node `id` has any extended attribute (one lookup, for listings).
    fn has_xattrs(&self, id: FileId) -> Result<bool, ApiError>;
    /// The store's schema version (1 when the store predates versions).
    fn schema_version(&self) -> Result<u64, ApiError>;
}

impl<N, C, M, F, D, X> Read for Tables<N, C, M, F, D, X>
where
    N: ReadableTable<u64, &'static [u8]>,
    C: ReadableTable<(u64, &'static str), u64>,
    M: ReadableTable<&'static str, u64>,
    F: ReadableTable<&'static str, &'static [u8]>,
    D: ReadableTable<&'static str, &'static [u8]>,
    X: ReadableTable<(u64, &'static str), &'static [u8]>,
{
    fn node(&self, id: FileId) -> Result<Option<Node>, ApiError> {
        match self.nodes.get(id).map_err(internal)? {
            Some(bytes) => Ok(Some(decode(bytes.value())?)),
            None => Ok(None),
        }
    }

    fn child(&self, parent: FileId, name: &str) -> Result<Option<FileId>, ApiError> {
        Ok(self
            .children
            .get((parent, name))
            .map_err(internal)?
            .map(|v| v.value()))
    }

    fn children(
        &self,
        parent: FileId,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, FileId)>, ApiError> {
        let start = match after {
            Some(name) => Bound::Excluded((parent, name)),
            None => Bound::Included((parent, "")),
        };
        let end = Bound::Excluded((parent.saturating_add(1), ""));
        let mut out = Vec::new();
        for item in self.children.range((start, end)).map_err(internal)? {
            if out.len() >= limit {
                break;
            }
            let (key, value) = item.map_err(internal)?;
            out.push((key.value().1.to_owned(), value.value()));
        }
        Ok(out)
    }

    fn all_nodes(&self) -> Result<Vec<(FileId, Node)>, ApiError> {
        let mut out = Vec::new();
        for item in self.nodes.iter().map_err(internal)? {
            let (key, value) = item.map_err(internal)?;
            out.push((key.value(), decode(value.value())?));
        }
        Ok(out)
    }

    fn fileserver(&self, id: &str) -> Result<Option<FileserverRecord>, ApiError> {
        match self.fileservers.get(id).map_err(internal)? {
            Some(bytes) => Ok(Some(decode(bytes.value())?)),
            None => Ok(None),
        }
    }

    fn fileservers(&self) -> Result<Vec<(ServerId, FileserverRecord)>, ApiError> {
        let mut out = Vec::new();
        for item in self.fileservers.iter().map_err(internal)? {
            let (key, value) = item.map_err(internal)?;
            out.push((key.value().to_owned(), decode(value.value())?));
        }
        Ok(out)
    }

    fn dirmap(&self) -> Result<Vec<(DfsPath, DirRecord)>, ApiError> {
        let mut out = Vec::new();
        for item in self.dirmap.iter().map_err(internal)? {
            let (key, value) = item.map_err(internal)?;
            let dir = DfsPath::parse(key.value()).map_err(internal)?;
            out.push((dir, decode(value.value())?));
        }
        Ok(out)
    }

    fn id_counter(&self) -> Result<FileId, ApiError> {
        Ok(self
            .meta
            .get(NEXT_ID)
            .map_err(internal)?
            .map(|v| v.value())
            .unwrap_or(ROOT_ID + 1))
    }

    fn xattr(&self, id: FileId, name: &str) -> Result<Option<Vec<u8>>, ApiError> {
        Ok(self
            .xattrs
            .get((id, name))
            .map_err(internal)?
            .map(|v| v.value().to_vec()))
    }

    fn has_xattrs(&self, id: FileId) -> Result<bool, ApiError> {
        let range = (
            Bound::Included((id, "")),
            Bound::Excluded((id.saturating_add(1), "")),
        );
        Ok(self.xattrs.range(range).map_err(internal)?.next().is_some())
    }

    fn xattr_sizes(&self, id: FileId) -> Result<Vec<(String, usize)>, ApiError> {
        let mut out = Vec::new();
        let range = (
            Bound::Included((id, "")),
            Bound::Excluded((id.saturating_add(1), "")),
        );
        for item in self.xattrs.range(range).map_err(internal)? {
            let (key, value) = item.map_err(internal)?;
            out.push((key.value().1.to_owned(), value.value().len()));
        }
        Ok(out)
    }

    fn schema_version(&self) -> Result<u64, ApiError> {
        Ok(self
            .meta
            .get(SCHEMA_KEY)
            .map_err(internal)?
            .map(|v| v.value())
            .unwrap_or(1))
    }
}

/// Bytes of a value a write replaced, owned so the table can be written again.
fn owned(guard: Option<redb::AccessGuard<'_, &'static [u8]>>) -> Option<Vec<u8>> {
    guard.map(|g| g.value().to_vec())
}

impl WriteTables<'_> {
    /// Stores `node` under `id`.
    pub fn put_node(&mut self, id: FileId, node: &Node) -> Result<(), ApiError> {
        let bytes = encode(node)?;
        let old = owned(self.nodes.insert(id, bytes.as_slice()).map_err(internal)?);
        self.undo.push(Undo::Node(id, old));
        Ok(())
    }

    /// Removes the node `id` and its extended attributes (its directory entry is removed
    /// separately): whatever removes a node can never leave attributes behind.
    pub fn remove_node(&mut self, id: FileId) -> Result<(), ApiError> {
        let old = owned(self.nodes.remove(id).map_err(internal)?);
        self.undo.push(Undo::Node(id, old));
        self.remove_xattrs(id)
    }

    /// Sets one extended attribute of node `id`.
    pub fn put_xattr(&mut self, id: FileId, name: &str, value: &[u8]) -> Result<(), ApiError> {
        let old = owned(self.xattrs.insert((id, name), value).map_err(internal)?);
        self.undo.push(Undo::Xattr(id, name.to_owned(), old));
        Ok(())
    }

    /// Removes one extended attribute; whether it existed.
    pub fn remove_xattr(&mut self, id: FileId, name: &str) -> Result<bool, ApiError> {
        let old = owned(self.xattrs.remove((id, name)).map_err(internal)?);
        let existed = old.is_some();
        self.undo.push(Undo::Xattr(id, name.to_owned(), old));
        Ok(existed)
    }

    /// Removes every extended attribute of node `id`.
    pub fn remove_xattrs(&mut self, id: FileId) -> Result<(), ApiError> {
        // One by one, so each removal can be undone; a node has few attributes.
        for (name, _) in self.xattr_sizes(id)? {
            self.remove_xattr(id, &name)?;
        }
        Ok(())
    }

    /// Makes `name` in `parent` point at `id`.
    pub fn put_child(&mut self, parent: FileId, name: &str, id: FileId) -> Result<(), ApiError> {
        let old = self
            .children
            .insert((parent, name), id)
            .map_err(internal)?
            .map(|g| g.value());
        self.undo.push(Undo::Child(parent, name.to_owned(), old));
        Ok(())
    }

    /// Removes the directory entry `name` from `parent`.
    pub fn remove_child(&mut self, parent: FileId, name: &str) -> Result<(), ApiError> {
        let old = self
            .children
            .remove((parent, name))
            .map_err(internal)?
            .map(|g| g.value());
        self.undo.push(Undo::Child(parent, name.to_owned(), old));
        Ok(())
    }

    fn put_meta(&mut self, key: &str, value: u64) -> Result<(), ApiError> {
        let old = self
            .meta
            .insert(key, value)
            .map_err(internal)?
            .map(|g| g.value());
        self.undo.push(Undo::Meta(key.to_owned(), old));
        Ok(())
    }

    /// A new id from the durable counter; ids are never reused, so a blob of a deleted file
    /// can never be mistaken for a new file's.
    pub fn next_id(&mut self) -> Result<FileId, ApiError> {
        let next = self.id_counter()?;
        self.put_meta(NEXT_ID, next + 1)?;
        Ok(next)
    }

    /// Records the schema version the store is now in.
    pub fn set_schema_version(&mut self, version: u64) -> Result<(), ApiError> {
        self.put_meta(SCHEMA_KEY, version)
    }

    /// Puts back everything this change wrote, newest first, so a refused change leaves the
    /// shared transaction as the changes before it left it.
    fn undo_all(&mut self) -> Result<(), ApiError> {
        while let Some(undo) = self.undo.pop() {
            // Each arm writes the old value back (or removes a key that was absent); the
            // value a call returns is what this change wrote, which is being discarded.
            match undo {
                Undo::Node(id, Some(v)) => {
                    self.nodes.insert(id, v.as_slice()).map_err(internal)?;
                }
                Undo::Node(id, None) => {
                    self.nodes.remove(id).map_err(internal)?;
                }
                Undo::Child(parent, name, Some(id)) => {
                    self.children
                        .insert((parent, name.as_str()), id)
                        .map_err(internal)?;
                }
                Undo::Child(parent, name, None) => {
                    self.children
                        .remove((parent, name.as_str()))
                        .map_err(internal)?;
                }
                Undo::Meta(key, Some(v)) => {
                    self.meta.insert(key.as_str(), v).map_err(internal)?;
                }
                Undo::Meta(key, None) => {
                    self.meta.remove(key.as_str()).map_err(internal)?;
                }
                Undo::Fileserver(id, Some(v)) => {
                    self.fileservers
                        .insert(id.as_str(), v.as_slice())
                        .map_err(internal)?;
                }
                Undo::Fileserver(id, None) => {
                    self.fileservers.remove(id.as_str()).map_err(internal)?;
                }
                Undo::Dirmap(dir, Some(v)) => {
                    self.dirmap
                        .insert(dir.as_str(), v.as_slice())
                        .map_err(internal)?;
                }
                Undo::Dirmap(dir, None) => {
                    self.dirmap.remove(dir.as_str()).map_err(internal)?;
                }
                Undo::Xattr(id, name, Some(v)) => {
                    self.xattrs
                        .insert((id, name.as_str()), v.as_slice())
                        .map_err(internal)?;
                }
                Undo::Xattr(id, name, None) => {
                    self.xattrs.remove((id, name.as_str())).map_err(internal)?;
                }
            }
        }
        Ok(())
    }

    /// Every stored node as raw JSON, for the schema upgrade (which must see fields the
    /// current [`Node`] would fill with defaults).
    pub fn raw_nodes(&self) -> Result<Vec<(FileId, serde_json::Value)>, ApiError> {
        let mut out = Vec::new();
        for item in self.nodes.iter().map_err(internal)? {
            let (key, value) = item.map_err(internal)?;
            out.push((key.value(), decode(value.value())?));
        }
        Ok(out)
    }

    /// Stores a fileserver's registration.
    pub fn put_fileserver(&mut self, id: &str, record: &FileserverRecord) -> Result<(), ApiError> {
        let bytes = encode(record)?;
        let old = owned(
            self.fileservers
                .insert(id, bytes.as_slice())
                .map_err(internal)?,
        );
        self.undo.push(Undo::Fileserver(id.to_owned(), old));
        Ok(())
    }

    /// Sets (or, with an empty record, removes) one directory prefix of the map.
    pub fn put_dirmap(&mut self, dir: &DfsPath, record: &DirRecord) -> Result<(), ApiError> {
        let old = if record.is_empty() {
            owned(self.dirmap.remove(dir.as_str()).map_err(internal)?)
        } else {
            let bytes = encode(record)?;
            owned(
                self.dirmap
                    .insert(dir.as_str(), bytes.as_slice())
                    .map_err(internal)?,
            )
        };
        self.undo.push(Undo::Dirmap(dir.as_str().to_owned(), old));
        Ok(())
    }
}

/// The redb database of one nameserver.
pub struct Store {
    db: Database,
    /// The batch of changes being gathered into one commit (group commit, see [`Store::write`]).
    group: Mutex<Group>,
    /// Signalled whenever a batch's outcome is known or the committer's seat frees up.
    settled: Condvar,
    /// fsyncs redb issued on the store (counted by its backend).
    syncs: Counter,
    /// Durable commits.
    commits: Counter,
    /// Changes committed (above `commits` when changes share a commit).
    mutations: Counter,
}

impl Store {
    /// Opens (or creates) the store in `dir`, creating the tables and the root directory.
    ///
    /// A new store is built under a temporary name, synced, and renamed into place: redb
    /// refuses a half-created file, so a power loss during the very first start must leave
    /// either no store or a whole one. Retries for a few seconds while a previous instance in
    /// this process still holds the file (a restart in tests), then gives up.
    pub fn open(dir: &Path, now_ns: i64) -> anyhow::Result<Store> {
        std::fs::create_dir_all(dir)?;
        let file = dir.join(FILE_NAME);
        if !file.exists() {
            create_atomically(dir, &file, now_ns)?;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let syncs = Counter::default();
        let db = loop {
            match create_counted(&file, syncs.clone()) {
                Ok(db) => break db,
                Err(redb::DatabaseError::DatabaseAlreadyOpen) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(err) => {
                    return Err(anyhow::anyhow!("cannot open {}: {err}", file.display()));
                }
            }
        };
        Store::init(db, syncs, now_ns)
            .map_err(|e| anyhow::anyhow!("cannot initialise {}: {e}", file.display()))
    }

    /// Opens (or creates) the store on `backend`; tests pass a power-loss simulator here.
    pub fn with_backend(backend: impl StorageBackend, now_ns: i64) -> anyhow::Result<Store> {
        let syncs = Counter::default();
        let db = redb::Builder::new()
            .create_with_backend(CountingBackend::new(backend, syncs.clone()))
            .map_err(|e| anyhow::anyhow!("cannot open the store: {e}"))?;
        Store::init(db, syncs, now_ns)
            .map_err(|e| anyhow::anyhow!("cannot initialise the store: {e}"))
    }

    /// What the store did durably since it was opened, for `GET /v1/stats`.
    pub fn stats(&self) -> NameserverStats {
        NameserverStats {
            fsyncs: self.syncs.get(),
            commits: self.commits.get(),
            mutations: self.mutations.get(),
        }
    }

    /// Creates the tables and the root directory in the first transaction, so a fresh store
    /// and a reopened one look the same; upgrades an older schema in that same transaction
    /// (all or nothing), and refuses a store written by newer code, whose fields this code
    /// would silently drop on its next write.
    fn init(db: Database, syncs: Counter, now_ns: i64) -> Result<Store, ApiError> {
        let store = Store {
            db,
            group: Mutex::new(Group::default()),
            settled: Condvar::new(),
            syncs,
            commits: Counter::default(),
            mutations: Counter::default(),
        };
        store.write(|t| {
            if t.node(ROOT_ID)?.is_none() {
                t.put_node(ROOT_ID, &Node::new(0, "", EntryKind::Dir, 0o755, now_ns))?;
                t.set_schema_version(SCHEMA_VERSION)?;
                return Ok(());
            }
            let found = t.schema_version()?;
            if found > SCHEMA_VERSION {
                return Err(ApiError::new(
                    dfs_proto::ErrorCode::Unavailable,
                    format!(
                        "the store has schema version {found}, newer than the {SCHEMA_VERSION} \
                         this nameserver knows: run the release that wrote it (or newer)"
                    ),
                ));
            }
            if found < SCHEMA_VERSION {
                super::upgrade::upgrade(t, found)?;
                t.set_schema_version(SCHEMA_VERSION)?;
            }
            Ok(())
        })?;
        Ok(store)
    }

    /// Runs the change `f` and returns its result once the change is durable; a change that
    /// returns an error (or panics) leaves nothing behind.
    ///
    /// Group commit: concurrent changes share one redb write transaction and one commit, so
    /// one fsync makes all of them durable. The first change to arrive when no commit is in
    /// flight commits at once, alone; the changes that arrive while a commit waits for the
    /// disk are applied, one after another, to the next transaction, which the first of them
    /// to find the committer's seat free commits for all. Each change sees the ones before it
    /// (the same order a single writer would give), keeps its own result, and a refused one is
    /// taken back out by its undo log without touching the others. Every caller, refused ones
    /// included, answers only after its batch's commit, so no answer rests on state that a
    /// failed commit (or a power cut) then loses; a failed commit fails the whole batch.
    pub fn write<T>(
        &self,
        f: impl FnOnce(&mut WriteTables<'_>) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let mut group = self.lock_group();
        if group.open.is_none() {
            // While another batch commits this waits inside redb, holding the group's lock:
            // the changes arriving meanwhile queue on that lock and all join this batch.
            let txn = self.db.begin_write().map_err(internal)?;
            group.open = Some(Batch {
                txn,
                outcome: Arc::default(),
                changes: 0,
            });
        }
        let batch = group.open.as_mut().expect("a batch was just opened");
        let outcome = batch.outcome.clone();
        let result = match apply(&batch.txn, f) {
            Applied::Done(value) => {
                batch.changes += 1;
                Ok(value)
            }
            Applied::Refused(err) => Err(err),
            Applied::Broken(err) => {
                // The undo itself failed: the transaction may hold part of this change, so
                // none of the batch may be committed.
                let batch = group.open.take().expect("the batch is open");
                let _ = batch.txn.abort();
                let _ = batch.outcome.set(Err(err.message.clone()));
                self.settled.notify_all();
                return Err(err);
            }
        };
        if group.open.as_ref().is_some_and(|b| b.changes == 0) {
            // A refusal with nothing else in the batch: no one waits for it, and there is
            // nothing to commit.
            let batch = group.open.take().expect("the batch is open");
            let _ = batch.txn.abort();
            self.settled.notify_all();
            return result;
        }
        loop {
            if let Some(done) = outcome.get() {
                return match done {
                    Ok(()) => result,
                    Err(message) => Err(ApiError::internal(format!(
                        "store error: the commit failed: {message}"
                    ))),
                };
            }
            let ours_waits = group
                .open
                .as_ref()
                .is_some_and(|b| Arc::ptr_eq(&b.outcome, &outcome));
            if ours_waits && !group.committing {
                let batch = group.open.take().expect("our batch is open");
                group.committing = true;
                drop(group);
                let changes = batch.changes;
                let committed = batch.txn.commit().map_err(|err| {
                    tracing::error!(%err, "store commit failed");
                    err.to_string()
                });
                if committed.is_ok() {
                    self.commits.bump();
                    self.mutations.add(changes as u64);
                }
                group = self.lock_group();
                group.committing = false;
                let _ = batch.outcome.set(committed);
                self.settled.notify_all();
                continue;
            }
            group = self
                .settled
                .wait(group)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }

    fn lock_group(&self) -> MutexGuard<'_, Group> {
        // A change runs under catch_unwind, so a poisoned lock only means a thread died
        // between steps that leave the group consistent.
        self.group
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `f` on a consistent snapshot.
    pub fn read<T>(
        &self,
        f: impl FnOnce(&ReadTables) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let txn = self.db.begin_read().map_err(internal)?;
        let tables = Tables {
            nodes: txn.open_table(NODES).map_err(internal)?,
            children: txn.open_table(CHILDREN).map_err(internal)?,
            meta: txn.open_table(META).map_err(internal)?,
            fileservers: txn.open_table(FILESERVERS).map_err(internal)?,
            dirmap: txn.open_table(DIRMAP).map_err(internal)?,
            xattrs: txn.open_table(XATTRS).map_err(internal)?,
            undo: Vec::new(),
        };
        f(&tables)
    }
}

/// The changes gathered for one commit.
struct Batch {
    txn: WriteTransaction,
    /// Set once the batch committed (or failed); every member waits for it.
    outcome: Arc<OnceLock<Result<(), String>>>,
    /// Members whose change is in the transaction.
    changes: usize,
}

/// Group-commit state, under the store's lock.
#[derive(Default)]
struct Group {
    /// The batch new changes join; `None` until the next change opens one.
    open: Option<Batch>,
    /// Whether a batch is being committed (its committer left the lock for the fsync).
    committing: bool,
}

/// What applying one change to the shared transaction did.
enum Applied<T> {
    /// It is in the transaction.
    Done(T),
    /// It was refused (or panicked) and taken back out: the transaction is as before it.
    Refused(ApiError),
    /// It could not be taken back out: the transaction must not be committed.
    Broken(ApiError),
}

/// Runs one change on `txn`, undoing its writes when it fails or panics.
fn apply<T>(
    txn: &WriteTransaction,
    f: impl FnOnce(&mut WriteTables<'_>) -> Result<T, ApiError>,
) -> Applied<T> {
    let mut tables = match open_write(txn) {
        Ok(tables) => tables,
        Err(err) => return Applied::Broken(err),
    };
    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut tables)));
    let err = match ran {
        Ok(Ok(value)) => return Applied::Done(value),
        Ok(Err(err)) => err,
        Err(_) => {
            tracing::error!("a store change panicked; it was undone");
            ApiError::internal("store error: the change panicked")
        }
    };
    match tables.undo_all() {
        Ok(()) => Applied::Refused(err),
        Err(undo) => {
            tracing::error!(%undo, %err, "undoing a refused change failed; its batch is dropped");
            Applied::Broken(undo)
        }
    }
}

/// Name of the store file inside the data directory.
const FILE_NAME: &str = "nameserver.redb";

/// Creates an initialised store at `file` via temp file, fsync, rename, fsync of `dir`.
fn create_atomically(dir: &Path, file: &Path, now_ns: i64) -> anyhow::Result<()> {
    let tmp = file.with_extension("redb.creating");
    match std::fs::remove_file(&tmp) {
        Ok(()) => tracing::warn!(path = %tmp.display(), "removed a store left half-created"),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err.into()),
    }
    {
        let db = Database::create(&tmp)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", tmp.display()))?;
        Store::init(db, Counter::default(), now_ns)
            .map_err(|e| anyhow::anyhow!("cannot initialise {}: {e}", tmp.display()))?;
    }
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, file)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

fn open_write(txn: &WriteTransaction) -> Result<WriteTables<'_>, ApiError> {
    Ok(Tables {
        nodes: txn.open_table(NODES).map_err(internal)?,
        children: txn.open_table(CHILDREN).map_err(internal)?,
        meta: txn.open_table(META).map_err(internal)?,
        fileservers: txn.open_table(FILESERVERS).map_err(internal)?,
        dirmap: txn.open_table(DIRMAP).map_err(internal)?,
        xattrs: txn.open_table(XATTRS).map_err(internal)?,
        undo: Vec::new(),
    })
}
