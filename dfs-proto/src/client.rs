//! Typed async HTTP clients for the three servers, shared by servers, the mount and the tests.

use crate::auth::Credential;
use crate::checksum::ChecksumWriter;
use crate::error::{ApiError, ErrorCode};
use crate::files::{BlobCheck, BlobInfo, BlobList, BlobListQuery, FetchRequest, FileserverStats};
use crate::locks::{
    AcquireRequest, BreakRequest, Lease, LeaseList, LeaseListQuery, LeaseRequest, LockserverStats,
};
use crate::names::*;
use crate::transfer;
use crate::{Checksum, DfsPath, FileId, Version, CHECKSUM_HEADER};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::Path;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Chunk size for streamed uploads: large enough that per-chunk overhead vanishes.
pub const STREAM_CHUNK: usize = 1 << 20;

/// Bytes of a download gathered before one write to the local file.
const DOWNLOAD_WRITE: usize = 1 << 20;

/// How long a request may stay silent before it fails: a frozen or partitioned server must
/// turn into an error (EIO at the mount), never a hang. A small JSON request must complete
/// within it; a blob transfer must make progress within it (see [`Timeouts`]).
pub const READ_TIMEOUT: Duration = Duration::from_secs(20);

/// How long the reply to an upload may take once its whole body was sent: the fileserver
/// fsyncs the blob before it answers, which for gigabytes takes a while.
pub const REPLY_AFTER_BODY: Duration = Duration::from_secs(60);

/// How long a server-side copy (`fetch`) or check (`verify`) of a whole blob may take: the
/// fileserver answers only when it is done.
pub const WHOLE_BLOB_OP: Duration = Duration::from_secs(30 * 60);

/// A pooled HTTP client tuned for DFS: TCP_NODELAY (small requests take ~0.2 ms instead of
/// ~40 ms), keep-alive, no proxies, bounded connect time; `https://` URLs are checked against
/// the process's default trust ([`crate::tls::TlsConfig::install_default`], else the web
/// roots).
///
/// It sets no read timeout: reqwest's counts from when a request is sent, so it would cut off
/// any upload that streams longer than the timeout. Each call bounds its own silence instead
/// (a total timeout for small JSON requests, progress watchdogs for blob transfers).
pub fn http_client() -> reqwest::Client {
    match crate::tls::process_default() {
        Ok(tls) => http_client_with(&tls),
        // Only the web roots can fail here, and they are compiled in: a client that speaks
        // plain HTTP is still useful, and any https request then fails with its own error.
        Err(_) => builder()
            .build()
            .expect("a reqwest client without TLS always builds"),
    }
}

/// [`http_client`] trusting what `tls` trusts (a cluster CA, see [`crate::tls::TlsConfig`]).
pub fn http_client_with(tls: &rustls::ClientConfig) -> reqwest::Client {
    builder()
        .tls_backend_preconfigured(tls.clone())
        .build()
        .expect("a reqwest client with a ready rustls config and no proxy always builds")
}

fn builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .tcp_nodelay(true)
        .no_proxy()
        .pool_max_idle_per_host(64)
        .pool_idle_timeout(Duration::from_secs(30))
        .connect_timeout(Duration::from_secs(3))
}

/// Time limits of blob transfers. A transfer fails on silence, never on length: an upload
/// fails only when no body chunk was taken for `stall` (or no reply came within
/// `reply_after_body` after the whole body was sent), a download only when no bytes arrived
/// for `stall`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Longest silence while a body streams, and longest wait for the reply to a small request.
    pub stall: Duration,
    /// Longest wait for an upload's reply once its whole body was sent.
    pub reply_after_body: Duration,
    /// Longest wait for a server-side copy or check of a whole blob (`fetch`, `verify`).
    pub whole_blob: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            stall: READ_TIMEOUT,
            reply_after_body: REPLY_AFTER_BODY,
            whole_blob: WHOLE_BLOB_OP,
        }
    }
}

/// Turns a reply into `T`, or into the `ApiError` the server sent.
async fn decode<T: DeserializeOwned>(reply: reqwest::Response) -> Result<T, ApiError> {
    let reply = check(reply).await?;
    reply.json::<T>().await.map_err(ApiError::from)
}

/// Passes a 2xx reply through and turns anything else into the `ApiError` it carries.
async fn check(reply: reqwest::Response) -> Result<reqwest::Response, ApiError> {
    let status = reply.status();
    if status.is_success() {
        return Ok(reply);
    }
    let body = reply.bytes().await.unwrap_or_default();
    match serde_json::from_slice::<ApiError>(&body) {
        Ok(err) => Err(err),
        Err(_) => Err(ApiError::new(
            ErrorCode::from_http_status(status.as_u16()),
            format!("HTTP {status}: {}", String::from_utf8_lossy(&body)),
        )),
    }
}

fn base(url: &str) -> String {
    url.trim_end_matches('/').to_owned()
}

/// A JSON API at one base URL: the shared plumbing of [`NameClient`] and [`LockClient`].
#[derive(Clone, Debug)]
struct JsonEndpoint {
    http: reqwest::Client,
    base: String,
    credential: Option<Credential>,
}

/// Adds the `Authorization` header when a credential is set: every request but `/healthz`
/// needs one on a server that is not `--insecure`.
fn authorize(
    req: reqwest::RequestBuilder,
    credential: Option<&Credential>,
) -> reqwest::RequestBuilder {
    match credential {
        Some(credential) => req.header(reqwest::header::AUTHORIZATION, credential.header_value()),
        None => req,
    }
}

impl JsonEndpoint {
    fn new(url: &str, http: reqwest::Client) -> JsonEndpoint {
        JsonEndpoint {
            http,
            base: base(url),
            credential: None,
        }
    }

    async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        route: &str,
        body: &B,
    ) -> Result<T, ApiError> {
        let request = self.http.post(format!("{}{route}", self.base));
        let reply = authorize(request, self.credential.as_ref())
            .timeout(READ_TIMEOUT)
            .json(body)
            .send()
            .await?;
        decode(reply).await
    }

    async fn get<Q: Serialize, T: DeserializeOwned>(
        &self,
        route: &str,
        query: &Q,
    ) -> Result<T, ApiError> {
        let request = self.http.get(format!("{}{route}", self.base));
        let reply = authorize(request, self.credential.as_ref())
            .timeout(READ_TIMEOUT)
            .query(query)
            .send()
            .await?;
        decode(reply).await
    }
}

/// Client of the nameserver: the namespace, open/publish, and the cluster map.
#[derive(Clone, Debug)]
pub struct NameClient {
    api: JsonEndpoint,
}

impl NameClient {
    /// A client for the nameserver at `url` (e.g. `http://127.0.0.1:7000`).
    pub fn new(url: &str) -> NameClient {
        NameClient::with_http(url, http_client())
    }

    /// Shares an existing connection pool.
    pub fn with_http(url: &str, http: reqwest::Client) -> NameClient {
        NameClient {
            api: JsonEndpoint::new(url, http),
        }
    }

    /// The same client sending `credential` with every request (a client key's, or the
    /// servers' own).
    pub fn with_credential(mut self, credential: Credential) -> NameClient {
        self.api.credential = Some(credential);
        self
    }

    /// The nameserver's base URL.
    pub fn url(&self) -> &str {
        &self.api.base
    }

    /// Metadata of one path, with live locations of its current version.
    pub async fn stat(&self, path: &DfsPath) -> Result<Entry, ApiError> {
        self.api
            .get("/v1/meta/stat", &PathQuery { path: path.clone() })
            .await
    }

    /// The file with id `id`, at one of its names (a mount that lost track of a hard-linked
    /// file's name finds it again).
    pub async fn stat_id(&self, id: FileId) -> Result<Entry, ApiError> {
        self.api.get("/v1/meta/stat-id", &IdQuery { id }).await
    }

    /// One page of a directory listing.
    pub async fn list_page(&self, query: &ListQuery) -> Result<ListResponse, ApiError> {
        self.api.get("/v1/meta/list", query).await
    }

    /// A whole directory listing, following pages.
    pub async fn list(&self, path: &DfsPath) -> Result<Vec<Entry>, ApiError> {
        Ok(self.list_with_xattrs(path).await?.0)
    }

    /// A whole directory listing, following pages, with the names of the entries that have
    /// extended attributes.
    pub async fn list_with_xattrs(
        &self,
        path: &DfsPath,
    ) -> Result<(Vec<Entry>, Vec<String>), ApiError> {
        let mut all = Vec::new();
        let mut marked = Vec::new();
        let mut after = None;
        loop {
            let page = self
                .list_page(&ListQuery {
                    path: path.clone(),
                    after,
                    limit: None,
                })
                .await?;
            all.extend(page.entries);
            marked.extend(page.with_xattrs);
            match page.next_after {
                Some(next) => after = Some(next),
                None => return Ok((all, marked)),
            }
        }
    }

    /// Creates a directory.
    pub async fn mkdir(&self, path: &DfsPath, mode: Option<u32>) -> Result<Entry, ApiError> {
        self.api
            .post(
                "/v1/meta/mkdir",
                &MkdirRequest {
                    path: path.clone(),
                    mode,
                    owner: None,
                },
            )
            .await
    }

    /// Creates a directory with every option (an owner, for a mount creating it for a user).
    pub async fn mkdir_with(&self, req: &MkdirRequest) -> Result<Entry, ApiError> {
        self.api.post("/v1/meta/mkdir", req).await
    }

    /// Creates a symbolic link (a namespace entry with its target, no content).
    pub async fn symlink(&self, req: &SymlinkRequest) -> Result<Entry, ApiError> {
        self.api.post("/v1/meta/symlink", req).await
    }

    /// Gives an existing file one more name (a hard link).
    pub async fn link(&self, req: &LinkRequest) -> Result<Entry, ApiError> {
        self.api.post("/v1/meta/link", req).await
    }

    /// Creates a FIFO, socket or device node.
    pub async fn mknod(&self, req: &MknodRequest) -> Result<Entry, ApiError> {
        self.api.post("/v1/meta/mknod", req).await
    }

    /// Removes an empty directory.
    pub async fn rmdir(&self, path: &DfsPath) -> Result<(), ApiError> {
        self.api
            .post::<_, serde_json::Value>("/v1/meta/rmdir", &PathRequest { path: path.clone() })
            .await
            .map(drop)
    }

    /// Creates an empty file (or returns the existing one unless `exclusive`).
    pub async fn create(&self, req: &CreateRequest) -> Result<Entry, ApiError> {
        self.api.post("/v1/meta/create", req).await
    }

    /// Removes a file.
    pub async fn unlink(&self, path: &DfsPath) -> Result<UnlinkResponse, ApiError> {
        self.api
            .post("/v1/meta/unlink", &PathRequest { path: path.clone() })
            .await
    }

    /// Renames a file or directory atomically.
    pub async fn rename(&self, req: &RenameRequest) -> Result<Entry, ApiError> {
        self.api.post("/v1/meta/rename", req).await
    }

    /// Changes mode, owner and/or times.
    pub async fn setattr(&self, req: &SetAttrRequest) -> Result<Entry, ApiError> {
        self.api.post("/v1/meta/setattr", req).await
    }

    /// The names of a path's extended attributes, sorted.
    pub async fn list_xattr(&self, path: &DfsPath) -> Result<Vec<String>, ApiError> {
        let reply: XattrReply = self
            .api
            .get(
                "/v1/meta/xattr",
                &XattrQuery {
                    path: path.clone(),
                    name: None,
                },
            )
            .await?;
        Ok(reply.names.unwrap_or_default())
    }

    /// One extended attribute's value; `no_data` when the path has no such attribute.
    pub async fn get_xattr(&self, path: &DfsPath, name: &str) -> Result<Vec<u8>, ApiError> {
        let reply: XattrReply = self
            .api
            .get(
                "/v1/meta/xattr",
                &XattrQuery {
                    path: path.clone(),
                    name: Some(name.to_owned()),
                },
            )
            .await?;
        reply
            .value
            .map(|v| v.0)
            .ok_or_else(|| ApiError::internal("xattr reply without a value"))
    }

    /// Sets an extended attribute (see [`SetXattrRequest`] for create/replace).
    pub async fn set_xattr(&self, req: &SetXattrRequest) -> Result<(), ApiError> {
        self.api
            .post::<_, serde_json::Value>("/v1/meta/xattr/set", req)
            .await
            .map(drop)
    }

    /// Removes an extended attribute.
    pub async fn remove_xattr(&self, path: &DfsPath, name: &str) -> Result<(), ApiError> {
        self.api
            .post::<_, serde_json::Value>(
                "/v1/meta/xattr/remove",
                &RemoveXattrRequest {
                    path: path.clone(),
                    name: name.to_owned(),
                },
            )
            .await
            .map(drop)
    }

    /// Registers a writer's fencing token and returns the base version and upload targets.
    pub async fn open_write(&self, req: &OpenWriteRequest) -> Result<OpenWriteResponse, ApiError> {
        self.api.post("/v1/meta/open-write", req).await
    }

    /// Makes an uploaded version current.
    pub async fn publish(&self, req: &PublishRequest) -> Result<Entry, ApiError> {
        self.api.post("/v1/meta/publish", req).await
    }

    /// The fileservers, the directory map and under-replicated files.
    pub async fn cluster(&self) -> Result<ClusterInfo, ApiError> {
        self.api.get("/v1/cluster", &()).await
    }

    /// Sets (`Some`) or clears (`None`) the replication factor of a directory prefix.
    pub async fn set_dir_replication(
        &self,
        dir: &DfsPath,
        replication: Option<u32>,
    ) -> Result<DirMapping, ApiError> {
        self.api
            .post(
                "/v1/dirs/replication",
                &DirReplicationRequest {
                    dir: dir.clone(),
                    replication,
                },
            )
            .await
    }

    /// Announces a fileserver.
    pub async fn register(&self, req: &RegisterRequest) -> Result<RegisterResponse, ApiError> {
        self.api.post("/v1/fileservers/register", req).await
    }

    /// Keeps a fileserver marked alive.
    pub async fn heartbeat(&self, req: &HeartbeatRequest) -> Result<HeartbeatResponse, ApiError> {
        self.api.post("/v1/fileservers/heartbeat", req).await
    }

    /// Durable-work counters (fsyncs, commits, changes) since the nameserver started.
    pub async fn stats(&self) -> Result<NameserverStats, ApiError> {
        self.api.get("/v1/stats", &()).await
    }

    /// Answers when the nameserver is up.
    pub async fn healthz(&self) -> Result<(), ApiError> {
        health(&self.api.http, &self.api.base).await
    }
}

async fn health(http: &reqwest::Client, base: &str) -> Result<(), ApiError> {
    check(
        http.get(format!("{base}/healthz"))
            .timeout(READ_TIMEOUT)
            .send()
            .await?,
    )
    .await
    .map(drop)
}

/// Client of the lockserver.
#[derive(Clone, Debug)]
pub struct LockClient {
    api: JsonEndpoint,
}

impl LockClient {
    /// A client for the lockserver at `url`.
    pub fn new(url: &str) -> LockClient {
        LockClient::with_http(url, http_client())
    }

    /// Shares an existing connection pool.
    pub fn with_http(url: &str, http: reqwest::Client) -> LockClient {
        LockClient {
            api: JsonEndpoint::new(url, http),
        }
    }

    /// The same client sending `credential` with every request (a client key's, or the
    /// servers' own).
    pub fn with_credential(mut self, credential: Credential) -> LockClient {
        self.api.credential = Some(credential);
        self
    }

    /// The lockserver's base URL.
    pub fn url(&self) -> &str {
        &self.api.base
    }

    /// Takes exclusive leases on all of `req.paths` or none (`busy`).
    pub async fn acquire(&self, req: &AcquireRequest) -> Result<Lease, ApiError> {
        self.api.post("/v1/locks/acquire", req).await
    }

    /// Extends a lease by its TTL.
    pub async fn renew(&self, token: u64, client: &str) -> Result<Lease, ApiError> {
        self.api
            .post(
                "/v1/locks/renew",
                &LeaseRequest {
                    token,
                    client: client.to_owned(),
                    lease: None,
                },
            )
            .await
    }

    /// Extends `lease` by its TTL, sending the signed lease along, so a lockserver that lost
    /// its leases in a crash takes it back during its recovery period.
    pub async fn renew_lease(&self, lease: &Lease) -> Result<Lease, ApiError> {
        self.api
            .post(
                "/v1/locks/renew",
                &LeaseRequest {
                    token: lease.token,
                    client: lease.client.clone(),
                    lease: Some(lease.clone()),
                },
            )
            .await
    }

    /// Gives a lease back.
    pub async fn release(&self, token: u64, client: &str) -> Result<(), ApiError> {
        self.api
            .post::<_, serde_json::Value>(
                "/v1/locks/release",
                &LeaseRequest {
                    token,
                    client: client.to_owned(),
                    lease: None,
                },
            )
            .await
            .map(drop)
    }

    /// Ends a lease whoever holds it (admin keys only): by token or by one of its paths.
    pub async fn break_lease(&self, req: &BreakRequest) -> Result<Lease, ApiError> {
        self.api.post("/v1/locks/break", req).await
    }

    /// The live lease with this token, if any (one small page of the listing).
    pub async fn live(&self, token: u64) -> Result<Option<Lease>, ApiError> {
        let page = self
            .list_page(&LeaseListQuery {
                after: token.checked_sub(1),
                limit: Some(1),
            })
            .await?;
        match page.leases.into_iter().find(|l| l.token == token) {
            Some(lease) => Ok(Some(lease)),
            // Its holder may not have re-established it yet: the lockserver cannot say.
            None if page.recovering_ms.is_some() => Err(ApiError::unavailable(format!(
                "the lockserver is recovering its leases after a restart; lease {token} may still be held"
            ))),
            None => Ok(None),
        }
    }

    /// One page of live leases (the server bounds its size).
    pub async fn list_page(&self, query: &LeaseListQuery) -> Result<LeaseList, ApiError> {
        self.api.get("/v1/locks", query).await
    }

    /// Every live lease, following pages; `next_token` is the last page's.
    pub async fn list(&self) -> Result<LeaseList, ApiError> {
        let mut query = LeaseListQuery::default();
        let mut all = Vec::new();
        loop {
            let page = self.list_page(&query).await?;
            all.extend(page.leases);
            match page.next_after {
                // A server that does not move forward would loop for ever: stop instead.
                Some(next) if query.after.is_none_or(|a| next > a) => query.after = Some(next),
                _ => {
                    return Ok(LeaseList {
                        leases: all,
                        next_token: page.next_token,
                        next_after: None,
                        recovering_ms: page.recovering_ms,
                    })
                }
            }
        }
    }

    /// Durable-work counters (fsyncs, commits) since the lockserver started.
    pub async fn stats(&self) -> Result<LockserverStats, ApiError> {
        self.api.get("/v1/stats", &()).await
    }

    /// Answers when the lockserver is up.
    pub async fn healthz(&self) -> Result<(), ApiError> {
        health(&self.api.http, &self.api.base).await
    }
}

/// Client of any fileserver; the URL is given per call because a file lives on several.
#[derive(Clone, Debug)]
pub struct FileClient {
    http: reqwest::Client,
    timeouts: Timeouts,
    credential: Option<Credential>,
    /// Bytes of local files sent by [`FileClient::upload_file`], over all copies of this
    /// client: what a progress display of a long upload reads.
    uploaded: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Blob capability sent with every request (see [`FileClient::with_capability`]).
    capability: Option<String>,
}

impl Default for FileClient {
    fn default() -> Self {
        FileClient::new()
    }
}

fn blob_url(server: &str, file_id: FileId, version: Version) -> String {
    format!("{}/v1/blobs/{file_id}/{version}", base(server))
}

impl FileClient {
    /// A client with its own connection pool.
    pub fn new() -> FileClient {
        FileClient::with_http(http_client())
    }

    /// Shares an existing connection pool.
    pub fn with_http(http: reqwest::Client) -> FileClient {
        FileClient {
            http,
            timeouts: Timeouts::default(),
            credential: None,
            uploaded: Default::default(),
            capability: None,
        }
    }

    /// The same client sending `credential` with every request.
    pub fn with_credential(mut self, credential: Credential) -> FileClient {
        self.credential = Some(credential);
        self
    }

    /// A request to `url` carrying this client's credential (and capability, if any).
    fn request(&self, method: reqwest::Method, url: String) -> reqwest::RequestBuilder {
        let req = authorize(self.http.request(method, url), self.credential.as_ref());
        match &self.capability {
            Some(cap) => req.header(crate::auth::CAPABILITY_HEADER, cap),
            None => req,
        }
    }

    /// The same client (same connections) sending `capability` with its requests: a
    /// client key reads or writes a blob only with the capability the nameserver gave for
    /// it ([`crate::names::Entry::read_cap`], [`crate::names::OpenWriteResponse::write_cap`]).
    /// `None` sends none (servers, and clusters without a key, need none).
    pub fn with_capability(&self, capability: Option<String>) -> FileClient {
        FileClient {
            capability,
            ..self.clone()
        }
    }

    /// The same client with other silence limits (tests shrink them).
    pub fn with_timeouts(mut self, timeouts: Timeouts) -> FileClient {
        self.timeouts = timeouts;
        self
    }

    /// The silence limits in use.
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// Bytes of local files this client (and its clones) has sent so far, every replica's
    /// stream counted: progress of a long upload, as a counter to poll.
    pub fn uploaded_bytes(&self) -> u64 {
        self.uploaded.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Uploads a body of exactly `size` bytes as (file_id, version); returns once durable.
    /// The server refuses (and stores nothing) when the body's CRC-32C is not `checksum`.
    ///
    /// Meant for bodies held in memory: the whole request, reply included, must finish
    /// within `reply_after_body`. Stream large bodies with [`FileClient::upload_stream`],
    /// which fails only on silence.
    pub async fn upload(
        &self,
        server: &str,
        file_id: FileId,
        version: Version,
        checksum: Checksum,
        size: u64,
        body: reqwest::Body,
    ) -> Result<BlobInfo, ApiError> {
        let request = self
            .put_request(server, file_id, version, Some(checksum), size)
            .timeout(self.timeouts.reply_after_body)
            .body(body);
        decode(request.send().await?).await
    }

    fn put_request(
        &self,
        server: &str,
        file_id: FileId,
        version: Version,
        checksum: Option<Checksum>,
        size: u64,
    ) -> reqwest::RequestBuilder {
        let mut req = self
            .request(reqwest::Method::PUT, blob_url(server, file_id, version))
            .header(reqwest::header::CONTENT_LENGTH, size);
        if let Some(sum) = checksum {
            req = req.header(CHECKSUM_HEADER, sum.to_string());
        }
        req
    }

    /// Uploads a streamed body of exactly `size` bytes. No total deadline: it fails only when
    /// the stream yields no chunk that the connection takes for `stall`, or the reply does not
    /// come within `reply_after_body` after the last chunk (`unavailable`, retryable).
    pub async fn upload_stream<S, E>(
        &self,
        server: &str,
        file_id: FileId,
        version: Version,
        checksum: Option<Checksum>,
        size: u64,
        body: S,
    ) -> Result<BlobInfo, ApiError>
    where
        S: futures_util::Stream<Item = Result<bytes::Bytes, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    {
        let progress = transfer::Progress::new();
        let watched = transfer::Watched::new(body, progress.clone());
        let request = self
            .put_request(server, file_id, version, checksum, size)
            .body(reqwest::Body::wrap_stream(watched));
        let t = self.timeouts;
        transfer::watch(
            async move { decode(request.send().await?).await },
            &progress,
            t.stall,
            t.reply_after_body,
        )
        .await
    }

    /// Uploads a local file, streamed in large chunks, checksumming the bytes as they go
    /// out instead of in a pass of its own: the server computes the CRC-32C of what it
    /// received and this call fails with `checksum_mismatch` unless the two agree. Returns
    /// what the server stored (size and checksum), to publish. Fails on silence only (see
    /// [`FileClient::upload_stream`]), however long the file.
    pub async fn upload_file(
        &self,
        server: &str,
        file_id: FileId,
        version: Version,
        local: &Path,
    ) -> Result<BlobInfo, ApiError> {
        let file = std::fs::File::open(local)?;
        let size = file.metadata()?.len();
        let sent = std::sync::Arc::new(std::sync::Mutex::new((ChecksumWriter::default(), 0u64)));
        let stream = read_ahead(file, sent.clone(), self.uploaded.clone());
        let stored = self
            .upload_stream(server, file_id, version, None, size, stream)
            .await?;
        let (sum, len) = {
            let t = sent.lock().unwrap_or_else(|p| p.into_inner());
            (t.0.finish(), t.1)
        };
        if stored.checksum != sum || stored.size != len {
            return Err(ApiError::new(
                ErrorCode::ChecksumMismatch,
                format!(
                    "sent {len} bytes with checksum {sum}, {server} stored {} bytes with {}",
                    stored.size, stored.checksum
                ),
            ));
        }
        Ok(stored)
    }

    /// Uploads bytes held in memory (small files, tests).
    pub async fn upload_bytes(
        &self,
        server: &str,
        file_id: FileId,
        version: Version,
        bytes: Vec<u8>,
    ) -> Result<BlobInfo, ApiError> {
        let checksum = Checksum::of(&bytes);
        let size = bytes.len() as u64;
        self.upload(server, file_id, version, checksum, size, bytes.into())
            .await
    }

    /// Starts a download; the caller streams the body (optionally a `Range`). The reply's
    /// headers must come within `stall`; the body is the caller's to bound (reads of it have
    /// no deadline of their own).
    pub async fn get(
        &self,
        server: &str,
        file_id: FileId,
        version: Version,
        range: Option<(u64, Option<u64>)>,
    ) -> Result<reqwest::Response, ApiError> {
        let mut req = self.request(reqwest::Method::GET, blob_url(server, file_id, version));
        if let Some((start, end)) = range {
            let value = match end {
                Some(end) => format!("bytes={start}-{end}"),
                None => format!("bytes={start}-"),
            };
            req = req.header(reqwest::header::RANGE, value);
        }
        let stall = self.timeouts.stall;
        let reply = tokio::time::timeout(stall, req.send())
            .await
            .map_err(|_| {
                ApiError::new(
                    ErrorCode::Unavailable,
                    format!("no reply from {server} within {stall:?}"),
                )
            })??;
        check(reply).await
    }

    /// Streams a whole version into `dest`, verifying length and checksum on the way. Fails
    /// when nothing arrives for `stall`, however long the whole download takes.
    pub async fn download_to(
        &self,
        server: &str,
        file_id: FileId,
        version: Version,
        expected: Checksum,
        expected_size: u64,
        dest: &mut tokio::fs::File,
    ) -> Result<u64, ApiError> {
        let reply = self.get(server, file_id, version, None).await?;
        let mut body = reply.bytes_stream();
        let mut sum = ChecksumWriter::default();
        let mut written = 0u64;
        // The body arrives in chunks of a few KiB, and every write to a tokio file is a trip
        // to the blocking pool: gather them into large writes.
        let mut pending = Vec::with_capacity(DOWNLOAD_WRITE);
        while let Some(chunk) = transfer::next_chunk(&mut body, self.timeouts.stall).await {
            let chunk = chunk?;
            sum.update(&chunk);
            written += chunk.len() as u64;
            pending.extend_from_slice(&chunk);
            if pending.len() >= DOWNLOAD_WRITE {
                dest.write_all(&pending).await?;
                pending.clear();
            }
        }
        if !pending.is_empty() {
            dest.write_all(&pending).await?;
        }
        dest.flush().await?;
        if written != expected_size || sum.finish() != expected {
            return Err(ApiError::new(
                ErrorCode::ChecksumMismatch,
                format!(
                    "downloaded {written} bytes with checksum {}, expected {expected_size} bytes with {expected}",
                    sum.finish()
                ),
            ));
        }
        Ok(written)
    }

    /// A whole version in memory (small files, tests); fails on `stall` of silence.
    pub async fn download_bytes(
        &self,
        server: &str,
        file_id: FileId,
        version: Version,
    ) -> Result<Vec<u8>, ApiError> {
        let reply = self.get(server, file_id, version, None).await?;
        let mut body = reply.bytes_stream();
        let mut all = Vec::new();
        while let Some(chunk) = transfer::next_chunk(&mut body, self.timeouts.stall).await {
            all.extend_from_slice(&chunk?);
        }
        Ok(all)
    }

    /// Deletes a version no longer referenced.
    pub async fn delete(
        &self,
        server: &str,
        file_id: FileId,
        version: Version,
    ) -> Result<(), ApiError> {
        let reply = self
            .request(reqwest::Method::DELETE, blob_url(server, file_id, version))
            .timeout(self.timeouts.stall)
            .send()
            .await?;
        check(reply).await.map(drop)
    }

    /// Asks `server` to copy a version from another fileserver; it answers when the whole
    /// copy is durable, so this waits up to `whole_blob`.
    pub async fn fetch(
        &self,
        server: &str,
        file_id: FileId,
        version: Version,
        req: &FetchRequest,
    ) -> Result<BlobInfo, ApiError> {
        let reply = self
            .request(
                reqwest::Method::POST,
                format!("{}/fetch", blob_url(server, file_id, version)),
            )
            .timeout(self.timeouts.whole_blob)
            .json(req)
            .send()
            .await?;
        decode(reply).await
    }

    /// Asks `server` to re-read (file_id, version) and check it against its recorded length
    /// and checksum (a corrupt copy is removed by the server); waits up to `whole_blob`. An
    /// error means nothing is known (unreachable, or a server without this endpoint).
    pub async fn verify(
        &self,
        server: &str,
        file_id: FileId,
        version: Version,
    ) -> Result<BlobCheck, ApiError> {
        let reply = self
            .request(
                reqwest::Method::POST,
                format!("{}/verify", blob_url(server, file_id, version)),
            )
            .timeout(self.timeouts.whole_blob)
            .send()
            .await?;
        decode(reply).await
    }

    /// One page of what `server` stores (the server bounds its size).
    pub async fn list_page(
        &self,
        server: &str,
        query: &BlobListQuery,
    ) -> Result<BlobList, ApiError> {
        let reply = self
            .request(reqwest::Method::GET, format!("{}/v1/blobs", base(server)))
            .query(query)
            .timeout(self.timeouts.stall)
            .send()
            .await?;
        decode(reply).await
    }

    /// Everything `server` stores, following pages.
    pub async fn list(&self, server: &str) -> Result<BlobList, ApiError> {
        let mut query = BlobListQuery::default();
        let mut blobs = Vec::new();
        loop {
            let page = self.list_page(server, &query).await?;
            blobs.extend(page.blobs);
            let last = query.after_file_id.zip(query.after_version);
            match page.next_after {
                // A server that does not move forward would loop for ever: stop instead.
                Some(next) if last.is_none_or(|l| (next.file_id, next.version) > l) => {
                    query.after_file_id = Some(next.file_id);
                    query.after_version = Some(next.version);
                }
                _ => {
                    return Ok(BlobList {
                        blobs,
                        next_after: None,
                    })
                }
            }
        }
    }

    /// Transfer counters of `server`.
    pub async fn stats(&self, server: &str) -> Result<FileserverStats, ApiError> {
        let reply = self
            .request(reqwest::Method::GET, format!("{}/v1/stats", base(server)))
            .timeout(self.timeouts.stall)
            .send()
            .await?;
        decode(reply).await
    }

    /// Answers when `server` is up.
    pub async fn healthz(&self, server: &str) -> Result<(), ApiError> {
        health(&self.http, &base(server)).await
    }
}

/// Chunks of read-ahead [`read_ahead`] keeps between the disk and the connection.
const READ_AHEAD: usize = 4;

/// The content of `file` as a stream of [`STREAM_CHUNK`]-byte chunks, read on a thread of
/// its own up to [`READ_AHEAD`] chunks ahead of the connection, so that reading the disk and
/// sending overlap instead of taking turns; each chunk is checksummed and counted into
/// `tally` (and `uploaded`) as it is read. The thread ends when the file does or when the
/// stream is dropped (a failed upload).
fn read_ahead(
    mut file: std::fs::File,
    tally: std::sync::Arc<std::sync::Mutex<(ChecksumWriter, u64)>>,
    uploaded: std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> {
    use std::io::Read;
    let (tx, rx) = tokio::sync::mpsc::channel(READ_AHEAD);
    tokio::task::spawn_blocking(move || loop {
        // read_to_end into reserved capacity: no zeroing of each chunk before the read.
        let mut chunk = Vec::with_capacity(STREAM_CHUNK);
        if let Err(err) = (&mut file)
            .take(STREAM_CHUNK as u64)
            .read_to_end(&mut chunk)
        {
            let _ = tx.blocking_send(Err(err));
            return;
        }
        let filled = chunk.len();
        if filled == 0 {
            return;
        }
        {
            let mut t = tally.lock().unwrap_or_else(|p| p.into_inner());
            t.0.update(&chunk);
            t.1 += filled as u64;
        }
        uploaded.fetch_add(filled as u64, std::sync::atomic::Ordering::Relaxed);
        if tx.blocking_send(Ok(bytes::Bytes::from(chunk))).is_err() {
            return;
        }
    });
    futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    })
}
