//! The nameserver's HTTP surface: exactly the routes `dfs_proto::client::NameClient` calls,
//! plus `GET /` (the text map). Handlers validate, then run one store transaction on the
//! blocking pool and reply only after it committed.

use super::leases;
use super::namespace::{self, Garbage};
use super::placement;
use super::store::Node;
use super::store::Read;
use super::{now_ns, State};
use crate::common::limits::{limit_body, BodyLimits};
use crate::common::policy::Need::{self, Admin, Server, Write};
use crate::common::{api_fallbacks, needs, ApiJson, ApiQuery, Caller};
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::{Json, Router};
use dfs_proto::auth::{now_unix_ms, BlobOp, Principal};
use dfs_proto::names::*;
use dfs_proto::path::validate_name;
use dfs_proto::{ApiError, DfsPath, ErrorCode, FileId};
use std::sync::Arc;

/// Largest request body accepted; metadata requests are tiny.
pub const MAX_BODY: usize = 256 * 1024;
/// Most under-replicated files named in `GET /v1/cluster` and `GET /`; the count has all.
pub const MAX_UNDER_LISTED: usize = 1000;
/// Default and largest page of a listing.
pub const MAX_PAGE: u32 = 1000;

type S = axum::extract::State<Arc<State>>;

/// The router over shared state.
pub fn router(state: Arc<State>) -> Router {
    // Every route declares the right it needs (common::policy); /healthz is open.
    let router = Router::new()
        .route("/healthz", get(healthz))
        .route("/", needs(Need::Read, get(text_map)))
        .route("/v1/cluster", needs(Need::Read, get(cluster)))
        .route("/v1/stats", needs(Need::Read, get(stats)))
        .route("/v1/meta/stat", needs(Need::Read, get(stat)))
        .route("/v1/meta/stat-id", needs(Need::Read, get(stat_id)))
        .route("/v1/meta/list", needs(Need::Read, get(list)))
        .route("/v1/meta/mkdir", needs(Write, post(mkdir)))
        .route("/v1/meta/rmdir", needs(Write, post(rmdir)))
        .route("/v1/meta/create", needs(Write, post(create)))
        .route("/v1/meta/unlink", needs(Write, post(unlink)))
        .route("/v1/meta/rename", needs(Write, post(rename)))
        .route("/v1/meta/setattr", needs(Write, post(setattr)))
        .route("/v1/meta/xattr", needs(Need::Read, get(get_xattr)))
        .route("/v1/meta/xattr/set", needs(Write, post(set_xattr)))
        .route("/v1/meta/xattr/remove", needs(Write, post(remove_xattr)))
        .route("/v1/meta/symlink", needs(Write, post(symlink)))
        .route("/v1/meta/mknod", needs(Write, post(mknod)))
        .route("/v1/meta/link", needs(Write, post(link)))
        .route("/v1/meta/open-write", needs(Write, post(open_write)))
        .route("/v1/meta/publish", needs(Write, post(publish)))
        .route("/v1/fileservers/register", needs(Server, post(register)))
        .route("/v1/fileservers/heartbeat", needs(Server, post(heartbeat)))
        .route("/v1/dirs/replication", needs(Admin, post(dir_replication)))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(
            BodyLimits::new(MAX_BODY, state.config.body_deadline_ms),
            limit_body,
        ))
        .with_state(state);
    api_fallbacks(router)
}

/// Runs store work that may wait for a commit's fsync (see [`crate::common::run_blocking`]).
pub(crate) async fn blocking<T: Send + 'static>(
    state: &Arc<State>,
    f: impl FnOnce(&State) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let state = state.clone();
    crate::common::run_blocking(move || f(&state)).await
}

/// How long a blob capability the nameserver gives is good for. Checked when a transfer
/// starts, not while it runs; a client holding an entry longer asks again (stat, or a
/// repeated open-write).
pub const CAPABILITY_TTL_MS: u64 = 10 * 60 * 1000;

impl State {
    /// The wire form of `node` at `path` with where to read it: the live holders and, in a
    /// cluster with a key, a capability to read its current version from them.
    fn located(&self, path: &DfsPath, id: FileId, node: &Node, locations: Vec<String>) -> Entry {
        let mut entry = namespace::entry(path, id, node, locations);
        if let Some(key) = self.verifier.cluster_key() {
            if entry.kind == EntryKind::File && entry.version > 0 {
                let expires = now_unix_ms() + CAPABILITY_TTL_MS;
                entry.read_cap = Some(key.capability(id, entry.version, BlobOp::Read, expires));
            }
        }
        entry
    }

    /// In a cluster with a key, a capability to upload the versions of file `id` that a
    /// writer holding `token` may publish.
    fn write_cap(&self, id: FileId, token: u64) -> Option<String> {
        let key = self.verifier.cluster_key()?;
        let expires = now_unix_ms() + CAPABILITY_TTL_MS;
        Some(key.capability(id, token, BlobOp::Write, expires))
    }

    /// Remembers the writer of file `id` from a checked open-write's lease.
    fn record_writer(&self, id: FileId, req: &OpenWriteRequest) {
        if let Some(lease) = &req.lease {
            self.writers.record(id, lease);
        }
    }

    /// URLs of the live fileservers among `servers`, in order.
    pub fn locations(&self, servers: &[String]) -> Vec<String> {
        servers
            .iter()
            .filter_map(|s| self.registry.live_url(s))
            .collect()
    }

    fn discard(&self, garbage: Vec<Garbage>) {
        if !garbage.is_empty() {
            let _ = self.garbage.send(garbage);
        }
    }
}

/// Counters only: no store access, so it answers even while a commit waits on the disk.
async fn stats(state: S) -> Json<NameserverStats> {
    Json(state.0.store.stats())
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

/// Runs inline on the async worker: a read transaction over redb's cached pages takes
/// microseconds, less than the hand-off to the blocking pool, and every open revalidates here.
async fn stat(state: S, ApiQuery(q): ApiQuery<PathQuery>) -> Result<Json<Entry>, ApiError> {
    let s = &state.0;
    let (id, node) = s.store.read(|r| namespace::resolve(r, &q.path))?;
    let locations = s.locations(&node.servers);
    Ok(Json(s.located(&q.path, id, &node, locations)))
}

async fn stat_id(state: S, ApiQuery(q): ApiQuery<IdQuery>) -> Result<Json<Entry>, ApiError> {
    let s = &state.0;
    let (node, path) = s.store.read(|r| namespace::resolve_id(r, q.id))?;
    let locations = s.locations(&node.servers);
    Ok(Json(s.located(&path, q.id, &node, locations)))
}

async fn list(state: S, ApiQuery(q): ApiQuery<ListQuery>) -> Result<Json<ListResponse>, ApiError> {
    if let Some(after) = q.after.as_deref().filter(|a| !a.is_empty()) {
        validate_name(after)?;
    }
    let limit = q.limit.unwrap_or(MAX_PAGE).clamp(1, MAX_PAGE) as usize;
    blocking(&state.0, move |s| {
        let after = q.after.as_deref().filter(|a| !a.is_empty());
        let (entries, next_after, with_xattrs) = s.store.read(|r| {
            let (entries, next) = namespace::list(r, &q.path, after, limit)?;
            let marked = super::xattr::marked(r, &entries)?;
            Ok((entries, next, marked))
        })?;
        Ok(Json(ListResponse {
            entries,
            next_after,
            with_xattrs,
        }))
    })
    .await
}

async fn mkdir(state: S, ApiJson(req): ApiJson<MkdirRequest>) -> Result<Json<Entry>, ApiError> {
    blocking(&state.0, move |s| {
        s.store
            .write(|t| namespace::mkdir(t, &req, now_ns()))
            .map(Json)
    })
    .await
}

async fn rmdir(
    state: S,
    ApiJson(req): ApiJson<PathRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    blocking(&state.0, move |s| {
        s.store
            .write(|t| namespace::rmdir(t, &req.path, now_ns()))?;
        Ok(Json(serde_json::json!({})))
    })
    .await
}

async fn create(state: S, ApiJson(req): ApiJson<CreateRequest>) -> Result<Json<Entry>, ApiError> {
    blocking(&state.0, move |s| {
        let mut entry = s.store.write(|t| namespace::create(t, &req, now_ns()))?;
        entry.locations = s.locations(&entry.servers);
        Ok(Json(entry))
    })
    .await
}

/// Refuses (`busy`) a change by `who` of the file at `path` while another key writes it.
async fn not_busy(state: &Arc<State>, who: &Principal, path: &DfsPath) -> Result<(), ApiError> {
    let Ok((id, node)) = state.store.read(|r| namespace::resolve(r, path)) else {
        return Ok(());
    };
    if node.kind != EntryKind::File {
        return Ok(());
    }
    state
        .writers
        .check_not_busy(id, who, state.locks.as_ref())
        .await
}

async fn unlink(
    state: S,
    Caller(who): Caller,
    ApiJson(req): ApiJson<PathRequest>,
) -> Result<Json<UnlinkResponse>, ApiError> {
    not_busy(&state.0, &who, &req.path).await?;
    blocking(&state.0, move |s| {
        let (reply, garbage) = s
            .store
            .write(|t| namespace::unlink(t, &req.path, now_ns()))?;
        s.discard(garbage);
        Ok(Json(reply))
    })
    .await
}

async fn rename(
    state: S,
    Caller(who): Caller,
    ApiJson(req): ApiJson<RenameRequest>,
) -> Result<Json<Entry>, ApiError> {
    not_busy(&state.0, &who, &req.from).await?;
    not_busy(&state.0, &who, &req.to).await?;
    blocking(&state.0, move |s| {
        let (entry, garbage) = s.store.write(|t| namespace::rename(t, &req, now_ns()))?;
        s.discard(garbage);
        Ok(Json(entry))
    })
    .await
}

async fn setattr(
    state: S,
    Caller(who): Caller,
    ApiJson(req): ApiJson<SetAttrRequest>,
) -> Result<Json<Entry>, ApiError> {
    // The root's mode and times decide who can do anything in the namespace (a chmod of `/`
    // to 0 locks every mount out): only an admin key changes them.
    if req.path.is_root() {
        who.require_admin()?;
    }
    not_busy(&state.0, &who, &req.path).await?;
    blocking(&state.0, move |s| {
        let (id, node) = s.store.write(|t| namespace::setattr(t, &req, now_ns()))?;
        let locations = s.locations(&node.servers);
        Ok(Json(s.located(&req.path, id, &node, locations)))
    })
    .await
}

/// Lists a path's attribute names, or reads one value (`name`): both bounded by the limits
/// of `dfs_proto::xattr`.
async fn get_xattr(
    state: S,
    ApiQuery(q): ApiQuery<XattrQuery>,
) -> Result<Json<XattrReply>, ApiError> {
    let s = &state.0;
    let reply = match &q.name {
        Some(name) => XattrReply {
            names: None,
            value: Some(dfs_proto::xattr::XattrValue(
                s.store.read(|r| super::xattr::get(r, &q.path, name))?,
            )),
        },
        None => XattrReply {
            names: Some(s.store.read(|r| super::xattr::list(r, &q.path))?),
            value: None,
        },
    };
    Ok(Json(reply))
}

async fn set_xattr(
    state: S,
    Caller(principal): Caller,
    ApiJson(req): ApiJson<SetXattrRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    principal.require_write()?;
    not_busy(&state.0, &principal, &req.path).await?;
    blocking(&state.0, move |s| {
        s.store.write(|t| super::xattr::set(t, &req))?;
        Ok(Json(serde_json::json!({})))
    })
    .await
}

async fn symlink(
    state: S,
    Caller(principal): Caller,
    ApiJson(req): ApiJson<SymlinkRequest>,
) -> Result<Json<Entry>, ApiError> {
    principal.require_write()?;
    blocking(&state.0, move |s| {
        s.store
            .write(|t| namespace::symlink(t, &req, now_ns()))
            .map(Json)
    })
    .await
}

async fn link(state: S, ApiJson(req): ApiJson<LinkRequest>) -> Result<Json<Entry>, ApiError> {
    blocking(&state.0, move |s| {
        s.store
            .write(|t| namespace::link(t, &req, now_ns()))
            .map(Json)
    })
    .await
}

async fn remove_xattr(
    state: S,
    Caller(principal): Caller,
    ApiJson(req): ApiJson<RemoveXattrRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    principal.require_write()?;
    not_busy(&state.0, &principal, &req.path).await?;
    blocking(&state.0, move |s| {
        s.store.write(|t| super::xattr::remove(t, &req))?;
        Ok(Json(serde_json::json!({})))
    })
    .await
}

async fn mknod(
    state: S,
    Caller(principal): Caller,
    ApiJson(req): ApiJson<MknodRequest>,
) -> Result<Json<Entry>, ApiError> {
    principal.require_write()?;
    blocking(&state.0, move |s| {
        s.store
            .write(|t| namespace::mknod(t, &req, now_ns()))
            .map(Json)
    })
    .await
}

/// How long a fileserver a writer excluded has to answer `GET /healthz` before it is marked
/// dead (until its next heartbeat).
pub const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(500);

/// Checks, in the background, the live fileservers a writer excluded (its upload to them
/// failed): one that does not answer within [`PROBE_TIMEOUT`] is marked dead at once instead
/// of after `heartbeat_timeout_ms`, so other writers stop getting it as a target and readers
/// stop getting it as a location. A heartbeat makes it alive again; a server that answers is
/// left alone (the writer's failure was its own).
fn probe_excluded(state: &Arc<State>, exclude: &[String]) {
    for id in exclude {
        let Some(url) = state.registry.live_url(id) else {
            continue;
        };
        let (registry, files, id) = (state.registry.clone(), state.files.clone(), id.clone());
        tokio::spawn(async move {
            let answered = tokio::time::timeout(PROBE_TIMEOUT, files.healthz(&url)).await;
            if !matches!(answered, Ok(Ok(()))) {
                tracing::warn!(%id, %url, "excluded fileserver does not answer; marked dead");
                registry.mark_dead(&id);
            }
        });
    }
}

/// Most fileservers one open-write may exclude.
pub const MAX_EXCLUDE: usize = 1000;

async fn open_write(
    state: S,
    Caller(who): Caller,
    ApiJson(req): ApiJson<OpenWriteRequest>,
) -> Result<Json<OpenWriteResponse>, ApiError> {
    leases::check(
        &state.0.verifier,
        &who,
        req.lease.as_ref(),
        req.token,
        &req.path,
    )?;
    if let Ok((id, _)) = state.0.store.read(|r| namespace::resolve(r, &req.path)) {
        let locks = state.0.locks.as_ref();
        state
            .0
            .writers
            .check_sole_writer(id, req.token, locks)
            .await?;
    }
    if req.exclude.len() > MAX_EXCLUDE {
        return Err(ApiError::bad_request(format!(
            "exclude names more than {MAX_EXCLUDE} fileservers"
        )));
    }
    if !req.exclude.is_empty() {
        probe_excluded(&state.0, &req.exclude);
    }
    blocking(&state.0, move |s| {
        // Servers the writer saw fail are skipped, so a dead target is replaced by another
        // live fileserver (when there is one).
        let live: Vec<_> = s
            .registry
            .live()
            .into_iter()
            .filter(|l| !req.exclude.contains(&l.id))
            .collect();
        let replication = s.config.replication;
        if let Some((id, node, targets)) = s
            .store
            .read(|r| namespace::open_write_unchanged(r, &req, &live, replication))?
        {
            // A repeated open-write (same token, no create, no map change): nothing to commit.
            s.record_writer(id, &req);
            let locations = s.locations(&node.servers);
            return Ok(Json(OpenWriteResponse {
                entry: s.located(&req.path, id, &node, locations),
                targets,
                write_cap: s.write_cap(id, req.token),
            }));
        }
        let (id, node, targets) = s.store.write(|t| {
            let (id, node) = namespace::open_write(t, &req, now_ns())?;
            let targets = placement::targets(t, &live, &req.path, replication)?;
            Ok((id, node, targets))
        })?;
        s.record_writer(id, &req);
        let locations = s.locations(&node.servers);
        Ok(Json(OpenWriteResponse {
            entry: s.located(&req.path, id, &node, locations),
            targets,
            write_cap: s.write_cap(id, req.token),
        }))
    })
    .await
}

async fn publish(
    state: S,
    Caller(who): Caller,
    ApiJson(req): ApiJson<PublishRequest>,
) -> Result<Json<Entry>, ApiError> {
    leases::check(
        &state.0.verifier,
        &who,
        req.lease.as_ref(),
        req.token,
        &req.path,
    )?;
    blocking(&state.0, move |s| {
        let (id, node, path, garbage) = s.store.write(|t| {
            let known: Vec<String> = t.fileservers()?.into_iter().map(|(id, _)| id).collect();
            // The file's directory now, not the one it was opened in: it may have moved.
            let (_, current) = namespace::resolve_id(t, req.file_id)?;
            // By default every copy the directory wants; a directory that wants fewer copies
            // than an explicit `min_replicas` lowers the minimum too, or none of its files
            // could ever be published.
            let wanted =
                placement::replication_for(&t.dirmap()?, &current.parent(), s.config.replication);
            let min = s.config.min_copies(wanted);
            namespace::publish(t, &req, min, |id| known.iter().any(|k| k == id), now_ns())
        })?;
        s.discard(garbage);
        if let Some(lease) = &req.lease {
            s.writers.record(id, lease);
        }
        let locations = s.locations(&node.servers);
        Ok(Json(s.located(&path, id, &node, locations)))
    })
    .await
}

/// A fileserver id is a short, printable name (it appears in `GET /` lines and logs).
fn validate_server_id(id: &str) -> Result<(), ApiError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "fileserver id must be 1-128 characters of [A-Za-z0-9._:-]",
        ))
    }
}

/// A fileserver URL must be a plain http(s) base URL.
fn validate_url(url: &str) -> Result<(), ApiError> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| ApiError::bad_request(format!("bad fileserver url {url:?}: {e}")))?;
    let ok = matches!(parsed.scheme(), "http" | "https")
        && parsed.host_str().is_some()
        && parsed.query().is_none()
        && parsed.fragment().is_none()
        && url.len() <= 2048;
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "fileserver url must be an http(s) base url, got {url:?}"
        )))
    }
}

async fn register(
    state: S,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> Result<Json<RegisterResponse>, ApiError> {
    validate_server_id(&req.id)?;
    validate_url(&req.url)?;
    if req.dirs.len() > 1000 {
        return Err(ApiError::bad_request("too many dirs"));
    }
    let id = req.id.clone();
    let reply = blocking(&state.0, move |s| {
        let url = req.url.trim_end_matches('/').to_owned();
        s.store.write(|t| placement::register(t, &req))?;
        s.registry.seen(&req.id, &url, req.free_bytes);
        tracing::info!(id = %req.id, %url, "fileserver registered");
        Ok(Json(RegisterResponse {
            heartbeat_interval_ms: s.config.heartbeat_interval_ms,
            lockserver: s.config.lockserver.clone(),
        }))
    })
    .await?;
    // Inventory: a server that (re)starts may have lost blobs it is recorded as holding; the
    // GC task runs its pass over this server (listing, then a direct check of what the listing
    // lacks) shortly, instead of at the next periodic pass.
    let _ = state.0.inventory.send(id);
    Ok(reply)
}

async fn heartbeat(
    state: S,
    ApiJson(req): ApiJson<HeartbeatRequest>,
) -> Result<Json<HeartbeatResponse>, ApiError> {
    validate_server_id(&req.id)?;
    blocking(&state.0, move |s| {
        let record = s.store.read(|r| r.fileserver(&req.id))?;
        if let Some(record) = &record {
            // Only the server holding the id's secret keeps it alive. A record without a hash
            // adopts one at the next registration, not at a heartbeat.
            if record.secret_hash.is_some() {
                placement::bind_identity(
                    &req.id,
                    record.secret_hash.as_deref(),
                    req.secret.as_deref(),
                )?;
            }
        }
        let url = match s.registry.get(&req.id) {
            Some(live) => Some(live.url),
            None => record.map(|r| r.url),
        };
        match url {
            Some(url) => {
                s.registry.seen(&req.id, &url, req.free_bytes);
                Ok(Json(HeartbeatResponse { known: true }))
            }
            None => Ok(Json(HeartbeatResponse { known: false })),
        }
    })
    .await
}

/// The cluster view shared by `GET /` and `GET /v1/cluster`.
pub fn cluster_info(s: &State) -> Result<ClusterInfo, ApiError> {
    let (servers, map) = s.store.read(|r| Ok((r.fileservers()?, r.dirmap()?)))?;
    let fileservers = servers
        .into_iter()
        .map(|(id, rec)| {
            let live = s.registry.get(&id);
            let alive = s.registry.is_alive(&id);
            FileserverStatus {
                url: live.as_ref().map(|l| l.url.clone()).unwrap_or(rec.url),
                capacity_bytes: rec.capacity_bytes,
                free_bytes: live
                    .as_ref()
                    .map(|l| l.free_bytes)
                    .unwrap_or(rec.free_bytes),
                dirs: rec.dirs,
                alive,
                last_seen_ms_ago: live
                    .map(|l| u64::try_from(l.last_seen.elapsed().as_millis()).unwrap_or(u64::MAX))
                    .unwrap_or(u64::MAX),
                id,
            }
        })
        .collect();
    let all_under = super::maintenance::under_replicated(s)?;
    let under_replicated_count = all_under.len() as u64;
    let under_replicated = all_under
        .into_iter()
        .take(MAX_UNDER_LISTED)
        .map(|u| UnderReplicated {
            path: u.path,
            live_copies: u.live_copies,
            wanted: u.wanted,
        })
        .collect();
    Ok(ClusterInfo {
        lockserver: s.config.lockserver.clone(),
        replication: s.config.replication,
        fileservers,
        map: map
            .into_iter()
            .map(|(dir, rec)| DirMapping {
                dir,
                servers: rec.servers,
                replication: rec.replication,
            })
            .collect(),
        under_replicated,
        under_replicated_count,
    })
}

async fn cluster(state: S) -> Result<Json<ClusterInfo>, ApiError> {
    blocking(&state.0, |s| cluster_info(s).map(Json)).await
}

/// Sets or clears a directory prefix's replication factor; existing files follow through the
/// repair task (too few copies) and the under-replicated listing.
async fn dir_replication(
    state: S,
    ApiJson(req): ApiJson<DirReplicationRequest>,
) -> Result<Json<DirMapping>, ApiError> {
    blocking(&state.0, move |s| {
        let rec = s
            .store
            .write(|t| placement::set_replication(t, &req.dir, req.replication))?;
        tracing::info!(dir = %req.dir, replication = ?req.replication, "directory replication set");
        Ok(Json(DirMapping {
            dir: req.dir,
            servers: rec.servers,
            replication: rec.replication,
        }))
    })
    .await
}

/// The original design's map: `dir=server_url` per server of each mapped directory, then a
/// comment line per directory with its own replication factor and per under-replicated file.
async fn text_map(state: S) -> Result<String, ApiError> {
    blocking(&state.0, |s| {
        let info = cluster_info(s)?;
        let mut out = String::new();
        for m in &info.map {
            for id in &m.servers {
                let url = info
                    .fileservers
                    .iter()
                    .find(|f| &f.id == id)
                    .map(|f| f.url.as_str())
                    .unwrap_or(id.as_str());
                out.push_str(&format!("{}={url}\n", m.dir));
            }
        }
        for m in &info.map {
            if let Some(r) = m.replication {
                out.push_str(&format!("# replication {} {r}\n", m.dir));
            }
        }
        for u in &info.under_replicated {
            out.push_str(&format!(
                "# under-replicated {} {}/{}\n",
                u.path, u.live_copies, u.wanted
            ));
        }
        let listed = info.under_replicated.len() as u64;
        if info.under_replicated_count > listed {
            out.push_str(&format!(
                "# under-replicated: {} more not listed ({} in all)\n",
                info.under_replicated_count - listed,
                info.under_replicated_count
            ));
        }
        Ok(out)
    })
    .await
    .map_err(|e: ApiError| {
        if e.code == ErrorCode::Internal {
            tracing::error!(%e, "GET / failed");
        }
        e
    })
}
