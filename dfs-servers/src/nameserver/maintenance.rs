//! Background work: restoring the replication factor, and deleting blobs nothing references.
//!
//! Repair copies the current version of an under-replicated file to another live fileserver
//! (`FileClient::fetch`), trying each live holder as the source until one gives a good copy,
//! and records the new holder only if that version is still current. GC deletes a blob (f, v)
//! when file f is gone or v is older than f's current version; a blob with v newer than
//! current (an upload in flight, or one whose publish never came) is deleted only after GC has
//! seen it unpublished for `orphan_after_ms`. A blob of the current version that a server
//! holds but the namespace does not list (a copy whose publish reply was lost, a server back
//! from the dead) is adopted when its checksum and size match; a holder whose listing lacks
//! the current version is asked directly and, when it confirms the copy is gone or corrupt,
//! stops counting as a holder (see [`super::holders`]).

use super::holders;
use super::namespace::{self, Garbage};
use super::placement;
use super::registry::Live;
use super::routes::blocking;
use super::store::{Node, Read};
use super::State;
use dfs_proto::files::{BlobInfo, FetchRequest};
use dfs_proto::names::EntryKind;
use dfs_proto::{ApiError, Checksum, DfsPath, ErrorCode, FileId, ServerId, Version};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::JoinHandle;

/// A file whose current version has too few live copies.
#[derive(Clone, Debug)]
pub struct Under {
    /// The file's id.
    pub id: FileId,
    /// Its path now.
    pub path: DfsPath,
    /// Its node.
    pub node: Node,
    /// Live holders of the current version.
    pub live_copies: u32,
    /// Copies its directory wants.
    pub wanted: u32,
}

/// How long after a registration the inventory of that fileserver (its GC pass) starts: the
/// server registers before it serves, and several registrations in a row share one pass.
pub const INVENTORY_DELAY: Duration = Duration::from_millis(200);

/// Starts the repair, GC and prompt-delete tasks; `run` aborts them at shutdown. The GC task
/// also takes the inventory of each fileserver named on `inventory` (one that registered).
pub fn spawn(
    state: Arc<State>,
    garbage: UnboundedReceiver<Vec<Garbage>>,
    mut inventory: UnboundedReceiver<ServerId>,
) -> Vec<JoinHandle<()>> {
    let repair = {
        let state = state.clone();
        tokio::spawn(async move {
            let every = Duration::from_millis(state.config.repair_interval_ms);
            loop {
                tokio::time::sleep(every).await;
                if let Err(err) = repair_once(&state).await {
                    tracing::warn!(%err, "repair pass failed");
                }
            }
        })
    };
    let gc = {
        let state = state.clone();
        tokio::spawn(async move {
            let every = Duration::from_millis(state.config.gc_interval_ms);
            let mut next = tokio::time::Instant::now() + every;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(next) => {
                        if let Err(err) = gc_once(&state).await {
                            tracing::warn!(%err, "gc pass failed");
                        }
                        next = tokio::time::Instant::now() + every;
                    }
                    Some(first) = inventory.recv() => {
                        tokio::time::sleep(INVENTORY_DELAY).await;
                        let mut ids = vec![first];
                        while let Ok(more) = inventory.try_recv() {
                            if !ids.contains(&more) {
                                ids.push(more);
                            }
                        }
                        for id in ids {
                            let Some(server) = state.registry.get(&id) else {
                                continue;
                            };
                            if let Err(err) = gc_server(&state, &server).await {
                                tracing::warn!(%err, %id, "inventory after registration failed");
                            }
                        }
                    }
                }
            }
        })
    };
    let prompt = tokio::spawn(delete_promptly(state, garbage));
    vec![repair, gc, prompt]
}

/// How long the namespace must be quiet (no new garbage) before prompt deletes start.
///
/// A burst of unlinks (`rm -rf`, a build's clean step) then is not slowed by a blob delete
/// (one fsync on a fileserver) racing each of its commits for the same disk; the deletes
/// follow right after the burst. Nothing depends on them being immediate: a blob nothing
/// references is invisible, and the periodic GC pass catches any delete that is lost. With
/// 100 ms (run 4) a script that unlinks in rounds with short pauses between them (the bench's
/// W8) had each round's deletes land on the next round; a second of quiet is still prompt.
pub const DELETE_QUIET: Duration = Duration::from_secs(1);

/// Longest a garbage blob waits for the namespace to be quiet before it is deleted anyway.
pub const DELETE_MAX_DELAY: Duration = Duration::from_secs(5);

/// Waits for garbage, then for [`DELETE_QUIET`] without more (at most [`DELETE_MAX_DELAY`]);
/// returns everything collected, or `None` once the namespace side is gone.
async fn next_garbage(rx: &mut UnboundedReceiver<Vec<Garbage>>) -> Option<Vec<Garbage>> {
    let mut all = rx.recv().await?;
    let deadline = tokio::time::Instant::now() + DELETE_MAX_DELAY;
    loop {
        let wait =
            DELETE_QUIET.min(deadline.saturating_duration_since(tokio::time::Instant::now()));
        match tokio::time::timeout(wait, rx.recv()).await {
            Ok(Some(more)) => all.extend(more),
            Ok(None) | Err(_) => return Some(all),
        }
        if tokio::time::Instant::now() >= deadline {
            return Some(all);
        }
    }
}

/// Deletes blobs shortly after a publish, unlink or rename made them garbage (best effort).
async fn delete_promptly(state: Arc<State>, mut rx: UnboundedReceiver<Vec<Garbage>>) {
    while let Some(batch) = next_garbage(&mut rx).await {
        for g in batch {
            let Some(url) = state.registry.live_url(&g.server) else {
                continue;
            };
            if let Err(err) = state.files.delete(&url, g.file_id, g.version).await {
                tracing::debug!(%err, server = %g.server, file = g.file_id, "prompt delete failed");
            }
        }
    }
}

/// Every file with content whose current version has fewer live holders than its directory's
/// replication factor.
pub fn under_replicated(s: &State) -> Result<Vec<Under>, ApiError> {
    let default = s.config.replication;
    s.store.read(|r| {
        let map = r.dirmap()?;
        let overrides = placement::has_overrides(&map);
        // Factor per parent directory id, so each directory's path is walked once per scan.
        let mut per_dir: HashMap<FileId, u32> = HashMap::new();
        let mut out = Vec::new();
        for (id, node) in r.all_nodes()? {
            if node.kind != EntryKind::File || node.size == 0 || node.version == 0 {
                continue;
            }
            let live = node
                .servers
                .iter()
                .filter(|srv| s.registry.is_alive(srv))
                .count() as u32;
            let wanted = if !overrides {
                default
            } else if let Some(w) = per_dir.get(&node.parent) {
                *w
            } else {
                let dir = match r.node(node.parent)? {
                    Some(parent) => namespace::path_of(r, node.parent, &parent)?,
                    None => DfsPath::root(),
                };
                let w = placement::replication_for(&map, &dir, default);
                per_dir.insert(node.parent, w);
                w
            };
            if live < wanted {
                let path = namespace::path_of(r, id, &node)?;
                out.push(Under {
                    id,
                    path,
                    node,
                    live_copies: live,
                    wanted,
                });
            }
        }
        Ok(out)
    })
}

/// One repair pass: copy each under-replicated file to live non-holders, from whichever live
/// holder has a good copy (each is tried in turn; one proven to have lost or corrupted its
/// copy stops counting as a holder).
pub async fn repair_once(state: &Arc<State>) -> Result<(), ApiError> {
    let under = blocking(state, under_replicated).await?;
    if under.is_empty() {
        return Ok(());
    }
    let live = state.registry.live();
    for u in under {
        let mut sources: Vec<(ServerId, String)> = u
            .node
            .servers
            .iter()
            .filter_map(|h| state.registry.live_url(h).map(|url| (h.clone(), url)))
            .collect();
        if sources.is_empty() {
            continue; // no live copy to copy from: wait for a holder to come back
        }
        let mut missing = u.wanted.saturating_sub(u.live_copies);
        for target in live.iter().filter(|l| !u.node.servers.contains(&l.id)) {
            if missing == 0 || sources.is_empty() {
                break;
            }
            if copy_to(state, &u, target, &mut sources).await? {
                missing -= 1;
            }
        }
    }
    Ok(())
}

/// Copies `u`'s current version to `target` from the first of `sources` that has a good copy;
/// sources proven bad are dropped (from `sources` and as holders). Whether a copy landed.
async fn copy_to(
    state: &Arc<State>,
    u: &Under,
    target: &Live,
    sources: &mut Vec<(ServerId, String)>,
) -> Result<bool, ApiError> {
    let (id, version) = (u.id, u.node.version);
    let mut i = 0;
    while i < sources.len() {
        let (source_id, source_url) = sources[i].clone();
        let req = FetchRequest {
            source: source_url.clone(),
            checksum: u.node.checksum,
        };
        match state.files.fetch(&target.url, id, version, &req).await {
            Ok(info) if info.checksum == u.node.checksum && info.size == u.node.size => {
                let server = target.id.clone();
                if blocking(state, move |s| holders::add(s, id, version, &server)).await? {
                    tracing::info!(path = %u.path, from = %source_id, to = %target.id, "re-replicated");
                    return Ok(true);
                }
                return Ok(false);
            }
            Ok(info) => {
                tracing::warn!(path = %u.path, to = %target.id, ?info, "repair copy differs");
                return Ok(false);
            }
            Err(err) if err.code == ErrorCode::AlreadyExists => {
                tracing::warn!(%err, path = %u.path, to = %target.id, "target holds other content");
                return Ok(false);
            }
            Err(err) if matches!(err.code, ErrorCode::NotFound | ErrorCode::ChecksumMismatch) => {
                // The source served nothing or bad bytes: check it directly before anything
                // is concluded, then try the next holder.
                tracing::warn!(%err, path = %u.path, from = %source_id, "repair source failed");
                let check = holders::verify_and_drop(
                    state,
                    &source_id,
                    &source_url,
                    id,
                    version,
                    u.node.size,
                    u.node.checksum,
                )
                .await?;
                if check == holders::Check::Bad {
                    sources.remove(i);
                    continue;
                }
            }
            Err(err) => {
                tracing::warn!(%err, path = %u.path, from = %source_id, to = %target.id, "repair copy failed");
            }
        }
        i += 1;
    }
    Ok(false)
}

/// What GC decided about one blob.
enum Verdict {
    Keep,
    Delete,
    Adopt,
    /// A version newer than current: an upload in flight, or one whose publish never came.
    Unpublished,
}

/// What one server's listing and the namespace say together.
struct ServerScan {
    verdicts: Vec<(BlobInfo, Verdict)>,
    /// (file, version, size, checksum) of current versions the namespace says the server
    /// holds but its listing lacks (or lists with other content).
    suspects: Vec<(FileId, Version, u64, Checksum)>,
}

fn scan(r: &impl Read, sid: &ServerId, blobs: Vec<BlobInfo>) -> Result<ServerScan, ApiError> {
    let listed: HashMap<(FileId, Version), (u64, Checksum)> = blobs
        .iter()
        .map(|b| ((b.file_id, b.version), (b.size, b.checksum)))
        .collect();
    let mut verdicts = Vec::with_capacity(blobs.len());
    for b in blobs {
        let verdict = match r.node(b.file_id)? {
            None => Verdict::Delete,
            Some(node) if node.kind != EntryKind::File => Verdict::Delete,
            Some(node) if b.version < node.version => Verdict::Delete,
            Some(node) if b.version > node.version => Verdict::Unpublished,
            Some(node)
                if !node.servers.contains(sid)
                    && b.checksum == node.checksum
                    && b.size == node.size
                    && node.size > 0 =>
            {
                Verdict::Adopt
            }
            Some(_) => Verdict::Keep,
        };
        verdicts.push((b, verdict));
    }
    let mut suspects = Vec::new();
    for (id, node) in r.all_nodes()? {
        if node.kind != EntryKind::File || node.version == 0 || !node.servers.contains(sid) {
            continue;
        }
        if listed.get(&(id, node.version)) != Some(&(node.size, node.checksum)) {
            suspects.push((id, node.version, node.size, node.checksum));
        }
    }
    Ok(ServerScan { verdicts, suspects })
}

/// One GC pass over every live fileserver: deletes blobs nothing references and uploads left
/// unpublished for `orphan_after_ms`, adopts unrecorded copies of current versions, and drops
/// holders whose copy is proven gone or corrupt (so repair restores it from a good one).
pub async fn gc_once(state: &Arc<State>) -> Result<(), ApiError> {
    for server in state.registry.live() {
        gc_server(state, &server).await?;
    }
    Ok(())
}

/// The GC pass over one fileserver; also run when a fileserver registers, so one that
/// restarted without some of its blobs is noticed at once rather than at the next pass.
pub async fn gc_server(state: &Arc<State>, server: &Live) -> Result<(), ApiError> {
    let orphan_after = Duration::from_millis(state.config.orphan_after_ms);
    let blobs = match state.files.list(&server.url).await {
        Ok(list) => list.blobs,
        Err(err) => {
            tracing::debug!(%err, server = %server.id, "gc cannot list blobs");
            return Ok(());
        }
    };
    let sid = server.id.clone();
    let scanned = blocking(state, move |s| s.store.read(|r| scan(r, &sid, blobs))).await?;
    let now = Instant::now();
    let mut unpublished = HashSet::new();
    for (blob, verdict) in scanned.verdicts {
        let delete = match verdict {
            Verdict::Keep => false,
            Verdict::Delete => true,
            Verdict::Unpublished => {
                unpublished.insert((blob.file_id, blob.version));
                let key = (server.id.clone(), blob.file_id, blob.version);
                state.orphans.expired(key, now, orphan_after)
            }
            Verdict::Adopt => {
                let (id, version, sid) = (blob.file_id, blob.version, server.id.clone());
                blocking(state, move |s| holders::add(s, id, version, &sid)).await?;
                false
            }
        };
        if delete {
            match state
                .files
                .delete(&server.url, blob.file_id, blob.version)
                .await
            {
                Ok(()) => {
                    unpublished.remove(&(blob.file_id, blob.version));
                    tracing::debug!(server = %server.id, file = blob.file_id, version = blob.version, "gc deleted")
                }
                Err(err) => tracing::debug!(%err, server = %server.id, "gc delete failed"),
            }
        }
    }
    state.orphans.keep_only(&server.id, &unpublished);
    for (file, version, size, checksum) in scanned.suspects {
        holders::verify_and_drop(
            state,
            &server.id,
            &server.url,
            file,
            version,
            size,
            checksum,
        )
        .await?;
    }
    Ok(())
}
