//! The publish half of a write: one file's write session (its lease, upload targets, base
//! version and publish counter) and publishing its local copy as a new version.
//!
//! The session never owns the bytes: it reaches the local copy of the file through the
//! [`LocalCopy`] trait (the mount's dirty file in its cache, a [`crate::File`]'s spool
//! file), so the protocol knows nothing of who keeps the content. A publish checksums the
//! copy, uploads it to every target in parallel (asking the nameserver for replacements of
//! targets that failed), and publishes it at the nameserver with retries; until that
//! succeeded the caller keeps its copy.

use crate::leases::{HeldLease, Leases};
use crate::remote::{Remote, Stored};
use dfs_proto::names::{Entry, FileserverRef, OpenWriteRequest, OpenWriteResponse, PublishRequest};
use dfs_proto::{version_for, ApiError, Checksum, DfsPath, ErrorCode, FileId, ServerId, Version};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The local copy a write session publishes: where its bytes are, and who hears the outcome.
///
/// Implemented by the mount's cache (a dirty file) and by the library's spool file, so that
/// `dfs-client` never depends on who keeps the content.
pub trait LocalCopy: Send + Sync {
    /// The file holding the complete content to upload (read whole at each publish).
    fn path(&self) -> &Path;

    /// A publish of this copy failed; the copy is kept. The default only logs.
    fn publish_failed(&self, path: &DfsPath, err: &ApiError) {
        tracing::error!(%path, %err, copy = %self.path().display(), "publish failed; local changes kept");
    }

    /// This copy's content was published as `entry` (its `version` is now current).
    fn published(&self, _entry: &Entry) {}
}

/// Maps a server error at publish time to what close(2) returns on the mount.
pub fn publish_errno(err: &ApiError) -> i32 {
    match err.code {
        // NotFound: the file was removed on another mount while written here (the publish
        // follows the file, not its name, so only a removal loses its target).
        ErrorCode::Stale | ErrorCode::Fenced | ErrorCode::NotFound => libc::ESTALE,
        ErrorCode::NoSpace => libc::ENOSPC,
        _ => libc::EIO,
    }
}

/// Maps a server error at publish time to what `File::close` returns: the same choices as
/// [`publish_errno`] in the vocabulary of `std::io`, with the [`ApiError`] kept inside.
pub fn publish_io_error(err: ApiError) -> std::io::Error {
    use std::io::ErrorKind as K;
    let kind = match err.code {
        ErrorCode::Stale | ErrorCode::Fenced | ErrorCode::NotFound => K::StaleNetworkFileHandle,
        ErrorCode::NoSpace => K::StorageFull,
        _ => K::Other,
    };
    std::io::Error::new(kind, err)
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
    /// Reads a local copy in one trip to the blocking pool: whole when small, else only
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

/// The protocol state of one file being written: lease, targets, base version, counters.
///
/// Callers keep it behind their own lock (the mount: one per inode, shared by its write
/// handles; a [`crate::File`]: owned) so that a publish sees no concurrent write.
#[derive(Debug)]
pub struct WriteSession {
    /// The lease, or `None` after it was given back early at close (re-taken on next write).
    pub lease: Option<Arc<HeldLease>>,
    /// Upload targets from the last open-write.
    pub targets: Vec<FileserverRef>,
    /// The version the local copy is based on (the last one we published, or the opened one).
    pub base_version: Version,
    /// The low bits of the last version built (from [`Leases::next_seq`]).
    pub seq: u64,
    /// Changes not yet published.
    pub changed: bool,
    /// A version we published whose content equals the local copy (if unchanged since).
    pub published: Option<Version>,
    /// An mtime set while writing, sent with the next publish.
    pub mtime_ns: Option<i64>,
    /// The entry after the last publish, for attributes.
    pub last_entry: Option<Entry>,
    /// The last publish failed and nothing changed since: the close that tried it already
    /// returned the error, so release must not publish that content behind the user's back,
    /// and a new open must not build on it.
    pub failed: bool,
    /// The capability to upload this lease's versions, from the last open-write (`None` in
    /// a cluster without a key).
    pub write_cap: Option<IssuedCap>,
}

/// A capability the nameserver gave, and when: one older than [`CAP_REFRESH`] is asked for
/// again before it is used, since the nameserver's expire after ten minutes.
#[derive(Debug, Clone)]
pub struct IssuedCap {
    /// The capability as sent.
    pub value: String,
    /// When it was received.
    pub at: std::time::Instant,
}

impl IssuedCap {
    /// A capability just received.
    pub fn new(value: String) -> IssuedCap {
        IssuedCap {
            value,
            at: std::time::Instant::now(),
        }
    }
}

/// Age at which a write capability is renewed before an upload: half the nameserver's
/// lifetime, so that it cannot expire between the check and the upload's start.
pub const CAP_REFRESH: Duration = Duration::from_secs(5 * 60);

impl WriteSession {
    /// A session for a file just opened for writing under `lease`, at the version, with the
    /// targets and capability that open-write answered; `changed` when opening already
    /// changed it (truncate).
    pub fn new(lease: Arc<HeldLease>, opened: OpenWriteResponse, changed: bool) -> WriteSession {
        WriteSession {
            lease: Some(lease),
            targets: opened.targets,
            write_cap: opened.write_cap.map(IssuedCap::new),
            base_version: opened.entry.version,
            seq: 0,
            changed,
            published: None,
            mtime_ns: None,
            last_entry: None,
            failed: false,
        }
    }

    /// A session holding no lease yet, for content an earlier process closed on top of
    /// `base_version`: its publish takes the lease and checks that nobody published since.
    pub fn unleased(base_version: Version) -> WriteSession {
        WriteSession {
            lease: None,
            targets: Vec::new(),
            write_cap: None,
            base_version,
            seq: 0,
            changed: true,
            published: None,
            mtime_ns: None,
            last_entry: None,
            failed: false,
        }
    }

    /// Records a local change (write, truncate): there is something new to publish.
    pub fn mark_changed(&mut self) {
        self.changed = true;
        self.failed = false;
    }

    /// Whether the lease was lost (renewal failed past its expiry): writes must fail.
    pub fn lease_lost(&self) -> bool {
        self.lease.as_ref().is_some_and(|l| l.is_lost())
    }

    /// Ensures this write holds a lease (re-taking one given back early at close), and that
    /// nobody published in between: file `file_id` must still be at our base version.
    pub async fn ensure_lease(
        &mut self,
        file_id: FileId,
        path: &DfsPath,
        leases: &Leases,
        remote: &Remote,
    ) -> Result<Arc<HeldLease>, ApiError> {
        if let Some(lease) = &self.lease {
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
            .open_write(&reopen(path, &lease, Vec::new()))
            .await;
        let opened = match opened {
            Ok(o) => o,
            Err(err) => {
                lease.release(leases).await;
                return Err(err);
            }
        };
        if opened.entry.id != file_id || opened.entry.version != self.base_version {
            lease.release(leases).await;
            return Err(ApiError::new(
                ErrorCode::Stale,
                format!("{path} changed since this file was opened"),
            ));
        }
        self.targets = opened.targets;
        self.write_cap = opened.write_cap.map(IssuedCap::new);
        self.lease = Some(lease.clone());
        Ok(lease)
    }

    /// The write capability to upload with, asked for again (a repeated open-write under
    /// the same token: no commit at the nameserver) when it is older than [`CAP_REFRESH`].
    async fn fresh_write_cap(
        &mut self,
        file_id: FileId,
        path: &DfsPath,
        lease: &HeldLease,
        remote: &Remote,
    ) -> Result<Option<String>, ApiError> {
        match &self.write_cap {
            None => return Ok(None),
            Some(cap) if cap.at.elapsed() < CAP_REFRESH => return Ok(Some(cap.value.clone())),
            Some(_) => {}
        }
        let opened = remote
            .names
            .open_write(&reopen(path, lease, Vec::new()))
            .await?;
        if opened.entry.id != file_id {
            return Err(ApiError::new(
                ErrorCode::Stale,
                format!("{path} is another file than the one opened"),
            ));
        }
        self.write_cap = opened.write_cap.map(IssuedCap::new);
        Ok(self.write_cap.as_ref().map(|c| c.value.clone()))
    }

    /// Publishes `local` as the new content of file `file_id` if it changed; on failure
    /// records it (`failed`) and tells `local`, which keeps the copy.
    pub async fn publish(
        &mut self,
        file_id: FileId,
        path: &DfsPath,
        local: &dyn LocalCopy,
        leases: &Leases,
        remote: &Remote,
    ) -> Result<(), ApiError> {
        if !self.changed {
            return Ok(());
        }
        let result = self
            .publish_once(file_id, path, local.path(), leases, remote)
            .await;
        self.failed = result.is_err();
        match &result {
            Err(err) => local.publish_failed(path, err),
            Ok(()) => {
                if let Some(entry) = &self.last_entry {
                    local.published(entry);
                }
            }
        }
        result
    }

    async fn publish_once(
        &mut self,
        file_id: FileId,
        path: &DfsPath,
        data: &Path,
        leases: &Leases,
        remote: &Remote,
    ) -> Result<(), ApiError> {
        let mut lease = self.ensure_lease(file_id, path, leases, remote).await?;
        let content = Content::read(data).await?;
        self.seq = match leases.next_seq(lease.token) {
            Some(seq) => seq,
            None => {
                // This token's versions are used up: give it back and take a new one (the
                // re-take checks that nobody published in between).
                tracing::info!(%path, token = lease.token, "publish counter of this lease used up; taking a new lease");
                if let Some(old) = self.lease.take() {
                    old.release(leases).await;
                }
                lease = self.ensure_lease(file_id, path, leases, remote).await?;
                leases.next_seq(lease.token).ok_or_else(|| {
                    ApiError::unavailable("the lockserver handed back a used-up lease")
                })?
            }
        };
        let version = version_for(lease.token, self.seq);
        let (servers, size, checksum) = if content.size() > 0 {
            let cap = self.fresh_write_cap(file_id, path, &lease, remote).await?;
            let stored = self
                .upload_replicated(file_id, path, &lease, version, &content, cap, remote)
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
            file_id,
            base_version: self.base_version,
            version,
            token: lease.token,
            lease: Some(lease.signed()),
            size,
            checksum,
            servers,
            mtime_ns: self.mtime_ns,
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
        self.base_version = version;
        self.changed = false;
        self.published = Some(version);
        self.mtime_ns = None;
        self.last_entry = Some(entry);
        Ok(())
    }

    /// Uploads `content` to every target; when some fail, asks the nameserver (open-write
    /// again, same token, the failed servers excluded) for replacements and uploads there,
    /// until as many servers hold it as the targets asked for or no new target is offered.
    /// A nameserver that ignores `exclude` offers the same targets: one round, then stop.
    /// What is still missing then is for the nameserver to judge at publish (it knows the
    /// minimum the operator allows).
    #[allow(clippy::too_many_arguments)]
    async fn upload_replicated(
        &mut self,
        file_id: FileId,
        path: &DfsPath,
        lease: &HeldLease,
        version: Version,
        content: &Content,
        cap: Option<String>,
        remote: &Remote,
    ) -> Result<Stored, ApiError> {
        let wanted = self.targets.len();
        let mut failed: Vec<ServerId> = Vec::new();
        let mut stored: Option<Stored> = None;
        let mut first_err: Option<ApiError> = None;
        let mut round = self.targets.clone();
        loop {
            match remote
                .upload_all(&round, file_id, version, content, cap.as_deref())
                .await
            {
                Ok(got) => {
                    failed.extend(
                        round
                            .iter()
                            .filter(|t| !got.servers.contains(&t.id))
                            .map(|t| t.id.clone()),
                    );
                    match &mut stored {
                        None => stored = Some(got),
                        Some(s) if s.size == got.size && s.checksum == got.checksum => {
                            s.servers.extend(got.servers)
                        }
                        Some(s) => {
                            return Err(ApiError::new(
                                ErrorCode::ChecksumMismatch,
                                format!(
                                    "replicas received different content ({} bytes {} and {} bytes {}): the file changed during the upload",
                                    s.size, s.checksum, got.size, got.checksum
                                ),
                            ))
                        }
                    }
                }
                Err(err) if err.code == ErrorCode::ChecksumMismatch => return Err(err),
                Err(err) => {
                    // Nothing of this round stored: every server of it is to be replaced.
                    failed.extend(round.iter().map(|t| t.id.clone()));
                    first_err.get_or_insert(err);
                }
            }
            let held = stored.as_ref().map_or(0, |s| s.servers.len());
            if held >= wanted || failed.is_empty() {
                break;
            }
            round = match self
                .replacements(path, lease, &failed, stored.as_ref(), remote)
                .await
            {
                Some(fresh) => fresh,
                None => break,
            };
            tracing::info!(%path, failed = ?failed, replacements = ?round.iter().map(|t| &t.id).collect::<Vec<_>>(), "uploading to replacement fileservers");
        }
        match stored {
            Some(s) => {
                if s.servers.len() < wanted {
                    tracing::warn!(%path, copies = s.servers.len(), wanted, "fewer copies than the targets asked for; the nameserver decides whether that is enough");
                }
                Ok(s)
            }
            None => Err(first_err.unwrap_or_else(|| {
                ApiError::unavailable(format!(
                    "no fileserver stored {path} (tried {})",
                    failed.join(", ")
                ))
            })),
        }
    }

    /// New targets for a write whose uploads to `failed` did not succeed: those of a repeated
    /// open-write (same token, no create, `exclude` = `failed`) that neither hold the blob
    /// nor failed already; `None` when there are none.
    async fn replacements(
        &self,
        path: &DfsPath,
        lease: &HeldLease,
        failed: &[ServerId],
        stored: Option<&Stored>,
        remote: &Remote,
    ) -> Option<Vec<FileserverRef>> {
        let reply = remote
            .names
            .open_write(&reopen(path, lease, failed.to_vec()))
            .await;
        let opened = match reply {
            Ok(opened) => opened,
            Err(err) => {
                tracing::warn!(%path, %err, "cannot ask for replacement fileservers");
                return None;
            }
        };
        let fresh: Vec<FileserverRef> = opened
            .targets
            .into_iter()
            .filter(|t| !failed.contains(&t.id))
            .filter(|t| stored.is_none_or(|s| !s.servers.contains(&t.id)))
            .collect();
        (!fresh.is_empty()).then_some(fresh)
    }
}

/// A repeated open-write of an existing file under `lease`: no create, and `exclude` as the
/// targets not to offer. It commits nothing when nothing changed (same token, no map change),
/// and answers fresh targets and a fresh write capability.
fn reopen(path: &DfsPath, lease: &HeldLease, exclude: Vec<ServerId>) -> OpenWriteRequest {
    OpenWriteRequest {
        path: path.clone(),
        token: lease.token,
        create: None,
        exclusive: false,
        exclude,
        owner: None,
        lease: Some(lease.signed()),
    }
}
