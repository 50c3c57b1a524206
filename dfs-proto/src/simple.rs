//! A whole-file client over the full write protocol (lease, fence, replicate, publish), for
//! tools, tests and benchmarks that do not go through the mount.

use crate::client::{FileClient, LockClient, NameClient};
use crate::error::{ApiError, ErrorCode};
use crate::locks::AcquireRequest;
use crate::names::{Entry, OpenWriteRequest, PublishRequest};
use crate::{version_for, Checksum, DfsPath, ServerId};

/// How many times a write asks for replacements of targets whose upload failed.
pub const REPLACEMENT_ROUNDS: usize = 2;

/// Writes and reads whole files the way the mount does, one request sequence per call.
///
/// Each call is one attempt; callers decide how to retry (a retried `write_file` takes a new
/// lease and publishes a new version, so the last acknowledged write wins).
#[derive(Clone, Debug)]
pub struct SimpleClient {
    names: NameClient,
    locks: LockClient,
    files: FileClient,
    session: String,
}

impl SimpleClient {
    /// Connects to the nameserver at `nameserver` and learns the lockserver from it.
    /// `session` names this client at the lockserver (one per writer).
    pub async fn connect(nameserver: &str, session: &str) -> Result<SimpleClient, ApiError> {
        let http = crate::client::http_client();
        let names = NameClient::with_http(nameserver, http.clone());
        let cluster = names.cluster().await?;
        let lock_url = cluster
            .lockserver
            .ok_or_else(|| ApiError::unavailable("the nameserver knows no lockserver"))?;
        Ok(SimpleClient {
            locks: LockClient::with_http(&lock_url, http.clone()),
            files: FileClient::with_http(http),
            names,
            session: session.to_owned(),
        })
    }

    /// The nameserver client underneath.
    pub fn names(&self) -> &NameClient {
        &self.names
    }

    /// The lockserver client underneath.
    pub fn locks(&self) -> &LockClient {
        &self.locks
    }

    /// The fileserver client underneath.
    pub fn files(&self) -> &FileClient {
        &self.files
    }

    /// This client's lockserver session name.
    pub fn session(&self) -> &str {
        &self.session
    }

    /// Replaces (or creates) `path` with `bytes`: lease, open-write, upload to every target in
    /// parallel, publish, release. Returns the published entry once it is durable.
    pub async fn write_file(&self, path: &DfsPath, bytes: &[u8]) -> Result<Entry, ApiError> {
        let lease = self
            .locks
            .acquire(&AcquireRequest {
                paths: vec![path.clone()],
                client: self.session.clone(),
                ttl_ms: None,
            })
            .await?;
        let result = self.write_under_lease(path, bytes, lease.token).await;
        let _ = self.locks.release(lease.token, &self.session).await;
        result
    }

    /// The write protocol for a caller that already holds the lease with `token`.
    ///
    /// Uploads to every target in parallel; when some fail, asks open-write again (same token,
    /// `exclude` = every server that failed so far) for replacements and uploads to those, up
    /// to [`REPLACEMENT_ROUNDS`] times, then publishes with every server that acknowledged.
    /// The nameserver refuses the publish (`unavailable`) when that is fewer copies than it
    /// requires.
    pub async fn write_under_lease(
        &self,
        path: &DfsPath,
        bytes: &[u8],
        token: u64,
    ) -> Result<Entry, ApiError> {
        let open = |exclude: Vec<ServerId>, create: Option<u32>| OpenWriteRequest {
            path: path.clone(),
            token,
            create,
            exclusive: false,
            exclude,
        };
        let opened = self
            .names
            .open_write(&open(Vec::new(), Some(0o644)))
            .await?;
        let base = opened.entry;
        let version = version_for(token, 1);
        let checksum = Checksum::of(bytes);
        let mut servers: Vec<ServerId> = Vec::new();
        if !bytes.is_empty() {
            if opened.targets.is_empty() {
                return Err(ApiError::new(ErrorCode::NoSpace, "no live fileserver"));
            }
            let mut failed: Vec<ServerId> = Vec::new();
            let mut last_err = None;
            let mut targets = opened.targets;
            for round in 0..=REPLACEMENT_ROUNDS {
                let uploads = targets
                    .iter()
                    .filter(|t| !servers.contains(&t.id) && !failed.contains(&t.id))
                    .map(|target| {
                        let body = bytes.to_vec();
                        async move {
                            let result = self
                                .files
                                .upload_bytes(&target.url, base.id, version, body)
                                .await;
                            (target.id.clone(), result)
                        }
                    });
                let mut new_failures = false;
                for (id, result) in futures_util::future::join_all(uploads).await {
                    match result {
                        Ok(_) => servers.push(id),
                        Err(err) => {
                            failed.push(id);
                            last_err = Some(err);
                            new_failures = true;
                        }
                    }
                }
                if !new_failures || round == REPLACEMENT_ROUNDS {
                    break;
                }
                targets = self
                    .names
                    .open_write(&open(failed.clone(), None))
                    .await?
                    .targets;
            }
            if servers.is_empty() {
                return Err(last_err.unwrap_or_else(|| ApiError::unavailable("upload failed")));
            }
        }
        self.names
            .publish(&PublishRequest {
                path: path.clone(),
                file_id: base.id,
                base_version: base.version,
                version,
                token,
                size: bytes.len() as u64,
                checksum,
                servers,
                mtime_ns: None,
            })
            .await
    }

    /// Reads the current version of `path`, trying each location and checking the checksum.
    pub async fn read_file(&self, path: &DfsPath) -> Result<(Entry, Vec<u8>), ApiError> {
        let entry = self.names.stat(path).await?;
        if entry.size == 0 {
            return Ok((entry, Vec::new()));
        }
        let mut last_err = ApiError::unavailable(format!("no live copy of {path}"));
        for location in &entry.locations {
            match self
                .files
                .download_bytes(location, entry.id, entry.version)
                .await
            {
                Ok(bytes) if Checksum::of(&bytes) == entry.checksum => return Ok((entry, bytes)),
                Ok(_) => {
                    last_err = ApiError::new(
                        ErrorCode::ChecksumMismatch,
                        format!("copy of {path} on {location} is corrupt"),
                    )
                }
                Err(err) => last_err = err,
            }
        }
        Err(last_err)
    }
}
