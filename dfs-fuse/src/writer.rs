//! One file being written on this mount: its dirty file, its handles, and its write session.
//!
//! All write handles of one inode share one [`WriteState`]. Writes go to the dirty file;
//! the first flush (close) after changes publishes it through the inode's
//! [`dfs_client::write::WriteSession`] (the protocol lives in `dfs-client`; the dirty file is
//! the session's [`LocalCopy`]). Until publish succeeded, close fails and the dirty file
//! stays in the cache's `dirty/` directory.

use crate::cache::{Cache, DirtyMeta};
use crate::view::Copy;
use dfs_client::leases::{HeldLease, Leases};
use dfs_client::remote::Remote;
use dfs_client::write::LocalCopy;
pub use dfs_client::write::{publish_errno, WriteSession as WriteInner};
use dfs_proto::{ApiError, DfsPath, FileId, Version};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;

/// A file open for writing on this mount.
#[derive(Debug)]
pub struct WriteState {
    /// Kernel inode number.
    pub ino: u64,
    /// Nameserver file id.
    pub file_id: FileId,
    /// Sidecar data of the dirty file (path and token at open).
    pub meta: DirtyMeta,
    /// The dirty file.
    pub data_path: PathBuf,
    /// The dirty file, open read-write, shared by every handle of this inode.
    pub file: Arc<File>,
    /// Write handles still open.
    pub handles: AtomicUsize,
    /// Set when the file was unlinked here: nothing is published any more.
    pub unlinked: AtomicBool,
    /// Names the file has (hard links), for attributes; a link or an unlink here updates it.
    pub nlink: std::sync::atomic::AtomicU64,
    /// Permission bits, for attributes (a chmod while writing updates them).
    pub mode: AtomicU32,
    /// Owner's uid, for attributes (a chown while writing updates it).
    pub uid: AtomicU32,
    /// Owner's gid.
    pub gid: AtomicU32,
    /// Access time as the nameserver last recorded it (utimensat while writing sets it).
    pub atime_ns: AtomicI64,
    /// Change time of the last metadata change the nameserver recorded; a local content
    /// change (the dirty file's mtime) is newer and shown instead.
    pub ctime_ns: AtomicI64,
    /// The lock-protected part.
    pub inner: tokio::sync::Mutex<WriteInner>,
}

impl WriteState {
    /// The dirty file as the inode's view (see [`crate::view`]) for descriptors that open
    /// while it is written: what they read once the write is wound up.
    pub fn base_copy(&self) -> Copy {
        self.copy_as(self.meta.base_version)
    }

    /// The dirty file as the view of `version` (published, or unknown after a failure).
    pub fn copy_as(&self, version: Version) -> Copy {
        let mtime_ns = self
            .file
            .metadata()
            .ok()
            .and_then(|m| m.modified().ok())
            .map_or(0, crate::attr::ns_of);
        Copy {
            file: self.file.clone(),
            version,
            mode: self.mode(),
            mtime_ns,
            owner: self.owner(),
        }
    }

    /// Permission bits as last set.
    pub fn mode(&self) -> u32 {
        self.mode.load(Ordering::Acquire)
    }

    /// Owner as last set.
    pub fn owner(&self) -> crate::attr::Owner {
        crate::attr::Owner {
            uid: self.uid.load(Ordering::Acquire),
            gid: self.gid.load(Ordering::Acquire),
        }
    }

    /// Takes the mode, owner and times the nameserver now records (after a chmod, chown or
    /// utimensat while the file is written here).
    pub fn set_meta(&self, entry: &dfs_proto::names::Entry) {
        self.mode.store(entry.mode, Ordering::Release);
        self.uid.store(entry.uid, Ordering::Release);
        self.gid.store(entry.gid, Ordering::Release);
        let atime = entry.atime_ns.unwrap_or(entry.mtime_ns);
        self.atime_ns.store(atime, Ordering::Release);
        let ctime = entry.ctime_ns.unwrap_or(entry.mtime_ns);
        self.ctime_ns.store(ctime, Ordering::Release);
    }

    /// The content changed here (write, truncate): ctime moves now, as on a local disk;
    /// the publish at close records its own.
    pub fn note_change(&self) {
        let now = crate::attr::ns_of(std::time::SystemTime::now());
        self.ctime_ns.fetch_max(now, Ordering::AcqRel);
    }

    /// Stored access time and change time, for attributes while writing.
    pub fn times(&self) -> (i64, i64) {
        (
            self.atime_ns.load(Ordering::Acquire),
            self.ctime_ns.load(Ordering::Acquire),
        )
    }

    /// Size and mtime of the dirty file, for attributes while writing.
    pub fn local_size(&self) -> u64 {
        self.file.metadata().map(|m| m.len()).unwrap_or(0)
    }

    /// Ensures this write holds a lease (re-taking one given back early at close), and that
    /// nobody published in between. Call with `inner` locked.
    pub async fn ensure_lease(
        &self,
        inner: &mut WriteInner,
        path: &DfsPath,
        leases: &Leases,
        remote: &Remote,
    ) -> Result<Arc<HeldLease>, ApiError> {
        inner.ensure_lease(self.file_id, path, leases, remote).await
    }

    /// Publishes the dirty file if it changed (and was not unlinked here). Call with
    /// `inner` locked.
    pub async fn publish(
        &self,
        inner: &mut WriteInner,
        path: &DfsPath,
        leases: &Leases,
        remote: &Remote,
        cache: &Cache,
    ) -> Result<(), ApiError> {
        if !inner.changed || self.unlinked.load(Ordering::Acquire) {
            return Ok(());
        }
        if let Err(err) = std::fs::metadata(&self.data_path) {
            if err.kind() == std::io::ErrorKind::NotFound {
                // Someone removed the cache directory (or this file in it) while it was open:
                // the changes are gone with it. Say so, rather than a bare i/o error.
                tracing::error!(
                    %path,
                    dirty = %self.data_path.display(),
                    "the local copy of this file was deleted from the cache directory while \
                     open; its unpublished changes are lost and close fails with EIO"
                );
                return Err(ApiError::internal(format!(
                    "local copy {} was deleted while open",
                    self.data_path.display()
                )));
            }
        }
        let dirty = DirtyCopy { ws: self, cache };
        inner
            .publish(self.file_id, path, &dirty, leases, remote)
            .await
    }
}

/// The dirty file of a write as the [`LocalCopy`] its session publishes: a failure is
/// recorded in the dirty file's record for whoever recovers it.
struct DirtyCopy<'a> {
    ws: &'a WriteState,
    cache: &'a Cache,
}

impl LocalCopy for DirtyCopy<'_> {
    fn path(&self) -> &Path {
        &self.ws.data_path
    }

    fn publish_failed(&self, path: &DfsPath, err: &ApiError) {
        tracing::error!(%path, %err, dirty = %self.ws.data_path.display(), "publish failed; local changes kept");
        self.cache.note_dirty_error(&self.ws.meta, &err.to_string());
    }
}
