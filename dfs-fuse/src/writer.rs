//! One file being written on this mount: its lease, its dirty file, and publishing.
//!
//! All write handles of one inode share one [`WriteState`]. Writes go to the dirty file;
//! the first flush (close) after changes checksums it, uploads it to every target in
//! parallel and publishes it as a new version. Until publish succeeded, close fails and the
//! dirty file stays in the cache's `dirty/` directory.

use crate::cache::{Cache, DirtyMeta};
use crate::leases::{HeldLease, Leases};
use crate::remote::Remote;
use crate::view::Copy;
use dfs_proto::names::{Entry, FileserverRef, OpenWriteRequest, PublishRequest};
use dfs_proto::{version_for, ApiError, Checksum, DfsPath, ErrorCode, FileId, Version};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Mutable state of a write, behind an async mutex so a publish sees no concurrent write.
#[derive(Debug)]
pub struct WriteInner {
    /// The lease, or `None` after it was given back early at close (re-taken on next write).
    pub lease: Option<Arc<HeldLease>>,
    /// Upload targets from the last open-write.
    pub targets: Vec<FileserverRef>,
    /// The version the dirty file is based on (the last one we published, or the opened one).
    pub base_version: Version,
    /// The low bits of the last version built (from [`Leases::next_seq`]).
    pub seq: u64,
    /// Changes not yet published.
    pub changed: bool,
    /// A version we published whose content equals the dirty file (if unchanged since).
    pub published: Option<Version>,
    /// An mtime set by utimens while writing, sent with the next publish.
    pub mtime_ns: Option<i64>,
    /// The entry after the last publish, for attributes.
    pub last_entry: Option<Entry>,
    /// The last publish failed and nothing changed since: the close that tried it already
    /// returned the error, so release must not publish that content behind the user's back,
    /// and a new open must not build on it.
    pub failed: bool,
}

impl WriteInner {
    /// Records a local change (write, truncate): there is something new to publish.
    pub fn mark_changed(&mut self) {
        self.changed = true;
        self.failed = false;
    }
}

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
    /// Permission bits, for attributes.
    pub mode: u32,
    /// The lock-protected part.
    pub inner: tokio::sync::Mutex<WriteInner>,
}

/// Maps a server error at publish time to what close(2) returns.
pub fn publish_errno(err: &ApiError) -> i32 {
    match err.code {
        // NotFound: the file was removed on another mount while written here (the publish
        // follows the file, not its name, so only a removal loses its target).
        ErrorCode::Stale | ErrorCode::Fenced | ErrorCode::NotFound => libc::ESTALE,
        ErrorCode::NoSpace => libc::ENOSPC,
        _ => libc::EIO,
    }
}

/// Files up to this size are read into memory once at close and sent from there to every
/// replica: one read instead of one streamed read per replica, which is most of the
/// client-side cost of publishing a small file.
pub const SMALL_FILE: u64 = 256 << 10;

/// What a publish uploads: small content in memory, large content streamed from its file.
#[derive(Debug)]
pub enum Content {
    /// The whole content (at most [`SMALL_FILE`] bytes) and its checksum.
    Small(bytes::Bytes, Checksum),
    /// A file too large to hold, with its size. Its checksum is taken while it streams to
    /// the fileservers (no pass of its own over the file before the upload).
    File(PathBuf, u64),
}

impl Content {
    /// Reads a dirty file in one trip to the blocking pool: whole when small, else only
    /// its size.
    pub async fn read(path: &Path) -> Result<Content, ApiError> {
        let owned = path.to_path_buf();
        Ok(
            tokio::task::spawn_blocking(move || Content::read_blocking(owned))
                .await
                .map_err(|e| ApiError::internal(format!("reading task failed: {e}")))??,
        )
    }

    fn read_blocking(path: PathBuf) -> std::io::Result<Content> {
        let mut file = File::open(&path)?;
        let size = file.metadata()?.len();
        if size <= SMALL_FILE {
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes)?;
            // Re-checked from the bytes read: the file may have grown since the stat.
            if bytes.len() as u64 <= SMALL_FILE {
                let checksum = Checksum::of(&bytes);
                return Ok(Content::Small(bytes.into(), checksum));
            }
        }
        Ok(Content::File(path, size))
    }

    /// Bytes to upload.
    pub fn size(&self) -> u64 {
        match self {
            Content::Small(bytes, _) => bytes.len() as u64,
            Content::File(_, size) => *size,
        }
    }
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
            mode: self.mode,
            mtime_ns,
        }
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
        if let Some(lease) = &inner.lease {
            if lease.is_lost() {
                return Err(ApiError::new(
                    ErrorCode::LeaseExpired,
                    format!("the write lease on {path} was lost"),
                ));
            }
            return Ok(lease.clone());
        }
        let lease = Arc::new(leases.acquire(path).await?);
        let opened = remote
            .names
            .open_write(&OpenWriteRequest {
                path: path.clone(),
                token: lease.token,
                create: None,
                exclusive: false,
                exclude: Vec::new(),
            })
            .await;
        let opened = match opened {
            Ok(o) => o,
            Err(err) => {
                lease.release(leases).await;
                return Err(err);
            }
        };
        if opened.entry.id != self.file_id || opened.entry.version != inner.base_version {
            lease.release(leases).await;
            return Err(ApiError::new(
                ErrorCode::Stale,
                format!("{path} changed since this file was opened"),
            ));
        }
        inner.targets = opened.targets;
        inner.lease = Some(lease.clone());
        Ok(lease)
    }

    /// Publishes the dirty file if it changed. Call with `inner` locked.
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
        let result = self.publish_once(inner, path, leases, remote).await;
        inner.failed = result.is_err();
        if let Err(err) = &result {
            tracing::error!(%path, %err, dirty = %self.data_path.display(), "publish failed; local changes kept");
            cache.note_dirty_error(&self.meta, &err.to_string());
        }
        result
    }

    async fn publish_once(
        &self,
        inner: &mut WriteInner,
        path: &DfsPath,
        leases: &Leases,
        remote: &Remote,
    ) -> Result<(), ApiError> {
        let mut lease = self.ensure_lease(inner, path, leases, remote).await?;
        let content = Content::read(&self.data_path).await?;
        inner.seq = match leases.next_seq(lease.token) {
            Some(seq) => seq,
            None => {
                // This token's versions are used up: give it back and take a new one (the
                // re-take checks that nobody published in between).
                tracing::info!(%path, token = lease.token, "publish counter of this lease used up; taking a new lease");
                if let Some(old) = inner.lease.take() {
                    old.release(leases).await;
                }
                lease = self.ensure_lease(inner, path, leases, remote).await?;
                leases.next_seq(lease.token).ok_or_else(|| {
                    ApiError::unavailable("the lockserver handed back a used-up lease")
                })?
            }
        };
        let version = version_for(lease.token, inner.seq);
        let (servers, size, checksum) = if content.size() > 0 {
            let stored = remote
                .upload_all(&inner.targets, self.file_id, version, &content)
                .await?;
            (stored.servers, stored.size, stored.checksum)
        } else {
            (Vec::new(), 0, Checksum::of(&[]))
        };
        if lease.is_lost() {
            return Err(ApiError::new(
                ErrorCode::LeaseExpired,
                "the write lease was lost during the upload",
            ));
        }
        let req = PublishRequest {
            path: path.clone(),
            file_id: self.file_id,
            base_version: inner.base_version,
            version,
            token: lease.token,
            size,
            checksum,
            servers,
            mtime_ns: inner.mtime_ns,
        };
        // A publish is idempotent for the same version: retry transient failures.
        let mut attempt = 0;
        let entry = loop {
            match remote.names.publish(&req).await {
                Ok(entry) => break entry,
                Err(err) if err.code.is_retryable() && attempt < 3 => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
                }
                Err(err) => return Err(err),
            }
        };
        tracing::debug!(%path, size, version, "published");
        inner.base_version = version;
        inner.changed = false;
        inner.published = Some(version);
        inner.mtime_ns = None;
        inner.last_entry = Some(entry);
        Ok(())
    }
}
