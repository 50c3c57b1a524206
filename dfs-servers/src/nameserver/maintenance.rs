//! Background work: restoring the replication factor, and deleting blobs nothing references.
//!
//! Repair copies the current version of an under-replicated file from a live holder to another
//! live fileserver (`FileClient::fetch`) and records the new holder only if that version is
//! still current. GC deletes a blob (f, v) when file f is gone or v is older than f's current
//! version; versions grow with the fencing token, so a current writer's upload (v > current) is
//! never touched. A blob of the current version that a server holds but the namespace does not
//! list (a copy whose publish reply was lost, a server back from the dead) is adopted when its
//! checksum and size match.

use super::namespace::{self, Garbage};
use super::placement;
use super::routes::blocking;
use super::store::{Node, Read};
use super::State;
use dfs_proto::files::FetchRequest;
use dfs_proto::names::EntryKind;
use dfs_proto::{ApiError, DfsPath, FileId, ServerId, Version};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
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

/// Starts the repair, GC and prompt-delete tasks; `run` aborts them at shutdown.
pub fn spawn(state: Arc<State>, garbage: UnboundedReceiver<Vec<Garbage>>) -> Vec<JoinHandle<()>> {
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
            loop {
                tokio::time::sleep(every).await;
                if let Err(err) = gc_once(&state).await {
                    tracing::warn!(%err, "gc pass failed");
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

/// Records `server` as a holder of (id, version) if that version is still current.
fn add_holder(
    s: &State,
    id: FileId,
    version: Version,
    server: &ServerId,
) -> Result<bool, ApiError> {
    s.store.write(|t| {
        let Some(mut node) = t.node(id)? else {
            return Ok(false);
        };
        if node.version != version || node.servers.contains(server) {
            return Ok(false);
        }
        node.servers.push(server.clone());
        t.put_node(id, &node)?;
        Ok(true)
    })
}

/// One repair pass: copy each under-replicated file to live non-holders.
pub async fn repair_once(state: &Arc<State>) -> Result<(), ApiError> {
    let under = blocking(state, under_replicated).await?;
    if under.is_empty() {
        return Ok(());
    }
    let live = state.registry.live();
    for u in under {
        let holders: Vec<String> = state.locations(&u.node.servers);
        let Some(source) = holders.first().cloned() else {
            continue; // no live copy to copy from: wait for a holder to come back
        };
        let mut missing = u.wanted.saturating_sub(u.live_copies);
        for target in live.iter().filter(|l| !u.node.servers.contains(&l.id)) {
            if missing == 0 {
                break;
            }
            let req = FetchRequest {
                source: source.clone(),
                checksum: u.node.checksum,
            };
            match state
                .files
                .fetch(&target.url, u.id, u.node.version, &req)
                .await
            {
                Ok(info) if info.checksum == u.node.checksum && info.size == u.node.size => {
                    let (id, version, server) = (u.id, u.node.version, target.id.clone());
                    if blocking(state, move |s| add_holder(s, id, version, &server)).await? {
                        tracing::info!(path = %u.path, to = %target.id, "re-replicated");
                        missing -= 1;
                    }
                }
                Ok(info) => {
                    tracing::warn!(path = %u.path, to = %target.id, ?info, "repair copy differs");
                }
                Err(err) => {
                    tracing::warn!(%err, path = %u.path, to = %target.id, "repair copy failed");
                }
            }
        }
    }
    Ok(())
}

/// What GC decided about one blob.
enum Verdict {
    Keep,
    Delete,
    Adopt,
}

/// One GC pass over every live fileserver.
pub async fn gc_once(state: &Arc<State>) -> Result<(), ApiError> {
    for server in state.registry.live() {
        let blobs = match state.files.list(&server.url).await {
            Ok(list) => list.blobs,
            Err(err) => {
                tracing::debug!(%err, server = %server.id, "gc cannot list blobs");
                continue;
            }
        };
        if blobs.is_empty() {
            continue;
        }
        let sid = server.id.clone();
        let verdicts = blocking(state, move |s| {
            s.store.read(|r| {
                let mut out = Vec::with_capacity(blobs.len());
                for b in blobs {
                    let verdict = match r.node(b.file_id)? {
                        None => Verdict::Delete,
                        Some(node) if node.kind != EntryKind::File => Verdict::Delete,
                        Some(node) if b.version < node.version => Verdict::Delete,
                        Some(node)
                            if b.version == node.version
                                && !node.servers.contains(&sid)
                                && b.checksum == node.checksum
                                && b.size == node.size
                                && node.size > 0 =>
                        {
                            Verdict::Adopt
                        }
                        Some(_) => Verdict::Keep,
                    };
                    out.push((b, verdict));
                }
                Ok(out)
            })
        })
        .await?;
        for (blob, verdict) in verdicts {
            match verdict {
                Verdict::Keep => {}
                Verdict::Delete => {
                    match state
                        .files
                        .delete(&server.url, blob.file_id, blob.version)
                        .await
                    {
                        Ok(()) => {
                            tracing::debug!(server = %server.id, file = blob.file_id, version = blob.version, "gc deleted")
                        }
                        Err(err) => tracing::debug!(%err, server = %server.id, "gc delete failed"),
                    }
                }
                Verdict::Adopt => {
                    let (id, version, sid) = (blob.file_id, blob.version, server.id.clone());
                    blocking(state, move |s| add_holder(s, id, version, &sid)).await?;
                }
            }
        }
    }
    Ok(())
}
