//! Which fileservers hold a file's current version: adding a holder after a copy landed, and
//! dropping one that is proven not to hold it (blob gone, or corrupt).
//!
//! A holder is only ever dropped after the fileserver itself said so in answer to a direct
//! `POST /v1/blobs/{id}/{version}/verify`; a blob listing alone is never proof, because a
//! listing taken before an upload finished (and was published) lacks a good copy.

use super::routes::blocking;
use super::store::Read;
use super::State;
use dfs_proto::files::{BlobCheck, BlobState};
use dfs_proto::{ApiError, FileId, ServerId, Version};
use std::sync::Arc;

/// Records `server` as a holder of (id, version) if that version is still current.
pub fn add(s: &State, id: FileId, version: Version, server: &ServerId) -> Result<bool, ApiError> {
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

/// Removes `server` from the holders of (id, version) if that version is still current.
pub fn remove(
    s: &State,
    id: FileId,
    version: Version,
    server: &ServerId,
) -> Result<bool, ApiError> {
    s.store.write(|t| {
        let Some(mut node) = t.node(id)? else {
            return Ok(false);
        };
        if node.version != version || !node.servers.contains(server) {
            return Ok(false);
        }
        node.servers.retain(|h| h != server);
        t.put_node(id, &node)?;
        Ok(true)
    })
}

/// What a direct check of one holder's copy showed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// It has the blob, with the expected size and checksum.
    Good,
    /// It does not have it, or had a corrupt copy (which it removed).
    Bad,
    /// No answer (unreachable, overloaded): nothing is concluded.
    Unknown,
}

/// Asks `url` (server `id`) to verify its copy of (file, version) against `size`/`checksum`;
/// when it is proven missing or different, drops the server as a holder. Returns the check.
pub async fn verify_and_drop(
    state: &Arc<State>,
    server: &ServerId,
    url: &str,
    file: FileId,
    version: Version,
    size: u64,
    checksum: dfs_proto::Checksum,
) -> Result<Check, ApiError> {
    let mut other_content = false;
    let check = match state.files.verify(url, file, version).await {
        Ok(BlobCheck {
            state: BlobState::Good,
            recorded: Some(info),
            computed,
        }) if info.size == size
            && info.checksum == checksum
            // An older fileserver does not report what it read; its `good` is taken as is.
            && computed.as_ref().is_none_or(|c| c.size == size && c.checksum == checksum) =>
        {
            Check::Good
        }
        Ok(found) => {
            // A `good` blob with other content (stored under this key by someone else) stays
            // on the server unless deleted, and would block the repair copy to it.
            other_content = found.state == BlobState::Good;
            tracing::warn!(%server, file, version, ?found, "holder lost its copy");
            Check::Bad
        }
        Err(err) => {
            tracing::debug!(%server, file, version, %err, "cannot verify a holder's copy");
            Check::Unknown
        }
    };
    if check == Check::Bad {
        let sid = server.clone();
        if blocking(state, move |s| remove(s, file, version, &sid)).await? {
            tracing::warn!(%server, file, version, "no longer counted as a holder");
            if other_content {
                if let Err(err) = state.files.delete(url, file, version).await {
                    tracing::warn!(%server, file, version, %err, "cannot delete a wrong copy");
                }
            }
        }
    }
    Ok(check)
}
