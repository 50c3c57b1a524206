//! Access to the cluster: the nameserver, the lockserver (found through `GET /v1/cluster`),
//! and fileservers (downloads fail over across locations, uploads go to all targets at once).

use crate::write::Content;
use dfs_proto::auth::Credential;
use dfs_proto::client::{http_client, FileClient, LockClient, NameClient};
use dfs_proto::names::{Entry, EntryKind, FileserverRef};
use dfs_proto::{ApiError, Checksum, DfsPath, ErrorCode, FileId, ServerId, Version};
use std::path::Path;
use std::time::Duration;
use tokio::sync::OnceCell;

/// What a publish announces after the uploads: who holds the blob, and its size and
/// checksum as every one of them received it.
#[derive(Debug)]
pub struct Stored {
    /// Fileservers that stored the blob durably.
    pub servers: Vec<ServerId>,
    /// Bytes stored.
    pub size: u64,
    /// CRC-32C of the stored bytes (computed by the fileservers, checked by the uploader).
    pub checksum: Checksum,
}

/// How long to wait before asking the nameserver again for a file whose version just
/// vanished from every location (`attempt` counts the previous retries), or `None` when it
/// is time to give up. A newer version's publish is committed before the old version's blobs
/// are deleted, so a short pause finds it; the pauses add up to 750 ms.
pub fn pause_before_asking_again(attempt: u32) -> Option<Duration> {
    (attempt < 4).then(|| Duration::from_millis(50 << attempt))
}

/// Clients of every server, sharing one connection pool.
#[derive(Debug)]
pub struct Remote {
    /// The nameserver.
    pub names: NameClient,
    /// Any fileserver.
    pub files: FileClient,
    lock: OnceCell<LockClient>,
    http: reqwest::Client,
    credential: Option<Credential>,
}

/// Capacity of the cluster as `statfs` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    /// Total bytes usable for file content (raw capacity / replication).
    pub total: u64,
    /// Free bytes usable for file content.
    pub free: u64,
}

impl Remote {
    /// Clients for the cluster whose nameserver is at `nameserver`.
    pub fn new(nameserver: &str) -> Remote {
        Remote::with_http(nameserver, http_client())
    }

    /// Clients sharing `http`, e.g. one that trusts the cluster's CA
    /// ([`dfs_proto::tls::TlsConfig::http_client`]).
    pub fn with_http(nameserver: &str, http: reqwest::Client) -> Remote {
        Remote {
            names: NameClient::with_http(nameserver, http.clone()),
            files: FileClient::with_http(http.clone()),
            lock: OnceCell::new(),
            http,
            credential: None,
        }
    }

    /// The same clients sending `credential` (a client key's) with every request to every
    /// server; without one, only servers run with `--insecure` answer.
    pub fn with_credential(mut self, credential: Credential) -> Remote {
        self.names = self.names.with_credential(credential.clone());
        self.files = self.files.with_credential(credential.clone());
        if let Some(lock) = self.lock.take() {
            let _ = self.lock.set(lock.with_credential(credential.clone()));
        }
        self.credential = Some(credential);
        self
    }

    /// Uses a known lockserver instead of asking the nameserver (tests, fixed setups).
    pub fn with_lockserver(nameserver: &str, lockserver: &str) -> Remote {
        Remote::new(nameserver).fixed_lockserver(lockserver)
    }

    /// This remote, using the lockserver at `url` instead of asking the nameserver.
    pub fn fixed_lockserver(self, url: &str) -> Remote {
        let _ = self.lock.set(LockClient::with_http(url, self.http.clone()));
        self
    }

    /// The lockserver client, learning its URL from the nameserver on first use.
    pub async fn locks(&self) -> Result<&LockClient, ApiError> {
        self.lock
            .get_or_try_init(|| async {
                let info = self.names.cluster().await?;
                let url = info.lockserver.ok_or_else(|| {
                    ApiError::unavailable("the nameserver does not know a lockserver")
                })?;
                let locks = LockClient::with_http(&url, self.http.clone());
                Ok(match &self.credential {
                    Some(credential) => locks.with_credential(credential.clone()),
                    None => locks,
                })
            })
            .await
    }

    /// Streams the current version of `path` into `dest` (created or truncated) and returns
    /// its entry, asking the nameserver again when that version vanished everywhere between
    /// the stat and the download (see [`pause_before_asking_again`]).
    pub async fn download_current(&self, path: &DfsPath, dest: &Path) -> Result<Entry, ApiError> {
        let mut attempt = 0;
        loop {
            let entry = self.names.stat(path).await?;
            if entry.kind == EntryKind::Dir {
                return Err(ApiError::new(
                    ErrorCode::IsDirectory,
                    format!("{path} is a directory"),
                ));
            }
            match self.download(&entry, dest).await {
                Ok(_) => return Ok(entry),
                Err(err) if err.code == ErrorCode::NotFound => {
                    let Some(pause) = pause_before_asking_again(attempt) else {
                        return Err(err);
                    };
                    attempt += 1;
                    tracing::debug!(%path, version = entry.version, %err, "version gone everywhere; asking again");
                    tokio::time::sleep(pause).await;
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// Streams the current version of `entry` into `dest` (created or truncated), trying
    /// each location in turn until one delivers the whole, checksum-verified content.
    ///
    /// An entry held so long that its read capability expired is asked for again (by path:
    /// used only when it is still the same file at the same version).
    pub async fn download(&self, entry: &Entry, dest: &Path) -> Result<u64, ApiError> {
        match self
            .download_with(entry, entry.read_cap.clone(), dest)
            .await
        {
            Err(err) if err.code == ErrorCode::Forbidden && entry.read_cap.is_some() => {
                let fresh = self.names.stat(&entry.path).await?;
                if fresh.id != entry.id || fresh.version != entry.version {
                    return Err(err);
                }
                self.download_with(entry, fresh.read_cap, dest).await
            }
            other => other,
        }
    }

    async fn download_with(
        &self,
        entry: &Entry,
        cap: Option<String>,
        dest: &Path,
    ) -> Result<u64, ApiError> {
        if entry.version == 0 || entry.size == 0 {
            tokio::fs::File::create(dest).await?;
            return Ok(0);
        }
        if entry.locations.is_empty() {
            return Err(ApiError::unavailable(format!(
                "no live fileserver holds {} version {}",
                entry.path, entry.version
            )));
        }
        let files = self.files.with_capability(cap);
        let mut last = None;
        for server in &entry.locations {
            let mut file = tokio::fs::File::create(dest).await?;
            match files
                .download_to(
                    server,
                    entry.id,
                    entry.version,
                    entry.checksum,
                    entry.size,
                    &mut file,
                )
                .await
            {
                // No fsync: a torn copy after a machine crash is dropped at the next start
                // (`cache_state`), and a cold open does not wait for the disk.
                Ok(n) => {
                    return Ok(n);
                }
                Err(err) => {
                    tracing::warn!(%server, path = %entry.path, %err, "download failed, trying the next location");
                    last = Some(err);
                }
            }
        }
        Err(last.unwrap_or_else(|| ApiError::unavailable("no location to download from")))
    }

    /// Uploads `content` as (id, version) to every target in parallel; returns the servers
    /// that stored it durably with what they stored, or the first error when none did.
    pub async fn upload_all(
        &self,
        targets: &[FileserverRef],
        id: FileId,
        version: Version,
        content: &Content,
        cap: Option<&str>,
    ) -> Result<Stored, ApiError> {
        if targets.is_empty() {
            return Err(ApiError::new(
                ErrorCode::NoSpace,
                "the nameserver gave no fileserver to upload to",
            ));
        }
        let files = &self.files.with_capability(cap.map(str::to_owned));
        let uploads = targets.iter().map(|t| async move {
            let res = match content {
                Content::Small(bytes, checksum) => {
                    let size = bytes.len() as u64;
                    files
                        .upload(&t.url, id, version, *checksum, size, bytes.clone().into())
                        .await
                }
                Content::File(local, _) => files.upload_file(&t.url, id, version, local).await,
            };
            (t, res)
        });
        let results = futures_util::future::join_all(uploads).await;
        let mut stored: Option<Stored> = None;
        let mut first_err = None;
        for (target, res) in results {
            match res {
                Ok(info) => match &mut stored {
                    None => {
                        stored = Some(Stored {
                            servers: vec![target.id.clone()],
                            size: info.size,
                            checksum: info.checksum,
                        })
                    }
                    Some(s) if s.size == info.size && s.checksum == info.checksum => {
                        s.servers.push(target.id.clone())
                    }
                    // Each replica read the file on its own: one that got other bytes means
                    // the file changed under the upload, and no version may be published.
                    Some(s) => {
                        return Err(ApiError::new(
                            ErrorCode::ChecksumMismatch,
                            format!(
                                "replicas received different content ({} bytes {} and {} bytes {}): the file changed during the upload",
                                s.size, s.checksum, info.size, info.checksum
                            ),
                        ))
                    }
                },
                Err(err) => {
                    tracing::warn!(server = %target.url, %err, "upload failed");
                    first_err.get_or_insert(err);
                }
            }
        }
        stored.ok_or_else(|| first_err.unwrap_or_else(|| ApiError::unavailable("upload failed")))
    }

    /// Capacity and free space of the live fileservers, divided by the replication factor.
    pub async fn capacity(&self) -> Result<Capacity, ApiError> {
        let info = self.names.cluster().await?;
        let replicas = u64::from(info.replication.max(1));
        let (total, free) =
            info.fileservers
                .iter()
                .filter(|f| f.alive)
                .fold((0u64, 0u64), |(t, f), s| {
                    (
                        t.saturating_add(s.capacity_bytes),
                        f.saturating_add(s.free_bytes),
                    )
                });
        Ok(Capacity {
            total: total / replicas,
            free: free / replicas,
        })
    }
}
