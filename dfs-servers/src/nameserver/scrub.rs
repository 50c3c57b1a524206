//! The background scrub: every `scrub_interval_ms`, each live holder of each file's current
//! version is asked to re-read its copy (`POST /v1/blobs/{id}/{v}/verify`), and the answer is
//! compared with the nameserver's own size and checksum. A copy that is missing or differs
//! stops counting as a holder (see [`super::holders::verify_and_drop`]), so the file shows as
//! under-replicated and the repair task copies it back from a good holder.
//!
//! Paced at `scrub_bytes_per_sec` (the bytes the fileservers read), so a scrub never takes
//! the disks from the clients; a file that changes meanwhile is simply checked at its new
//! version next time (a holder is only dropped while the version checked is still current).

use super::holders::{self, Check};
use super::routes::blocking;
use super::store::Read;
use super::State;
use dfs_proto::names::EntryKind;
use dfs_proto::{ApiError, Checksum, FileId, ServerId, Version};
use std::sync::Arc;
use std::time::Duration;

/// What one scrub pass found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Scrubbed {
    /// Copies found good.
    pub good: usize,
    /// Copies found missing or different (their holder was dropped).
    pub bad: usize,
    /// Copies that could not be checked (server unreachable or busy).
    pub unknown: usize,
}

/// One copy to check: (file, version, size, checksum, holder).
type Copy = (FileId, Version, u64, Checksum, ServerId);

/// Every stored copy of a current version, as the namespace records it.
fn copies(s: &State) -> Result<Vec<Copy>, ApiError> {
    s.store.read(|r| {
        let mut out = Vec::new();
        for (id, node) in r.all_nodes()? {
            if node.kind != EntryKind::File || node.version == 0 || node.size == 0 {
                continue;
            }
            for server in &node.servers {
                out.push((id, node.version, node.size, node.checksum, server.clone()));
            }
        }
        Ok(out)
    })
}

/// Runs scrub passes for ever, one every `scrub_interval_ms` (measured from the end of the
/// previous pass, so a slow pass never overlaps the next).
pub async fn run(state: Arc<State>) {
    let every = Duration::from_millis(state.config.scrub_interval_ms);
    loop {
        tokio::time::sleep(every).await;
        match scrub_once(&state).await {
            Ok(found) if found.bad > 0 => tracing::warn!(?found, "scrub pass found bad copies"),
            Ok(found) => tracing::debug!(?found, "scrub pass done"),
            Err(err) => tracing::warn!(%err, "scrub pass failed"),
        }
    }
}

/// One pass over every copy of every current version, paced at `scrub_bytes_per_sec`.
pub async fn scrub_once(state: &Arc<State>) -> Result<Scrubbed, ApiError> {
    let rate = state.config.scrub_bytes_per_sec.max(1);
    let mut found = Scrubbed::default();
    for (file, version, size, checksum, server) in blocking(state, copies).await? {
        // A dead server is not scrubbed: it does not count as a holder anyway, and the GC
        // pass after it registers again takes its inventory.
        let Some(url) = state.registry.live_url(&server) else {
            continue;
        };
        let started = tokio::time::Instant::now();
        let check =
            holders::verify_and_drop(state, &server, &url, file, version, size, checksum).await?;
        match check {
            Check::Good => found.good += 1,
            Check::Bad => found.bad += 1,
            Check::Unknown => found.unknown += 1,
        }
        // The fileserver read `size` bytes: wait until that fits the rate.
        let budget = Duration::from_secs_f64(size as f64 / rate as f64);
        tokio::time::sleep_until(started + budget).await;
    }
    Ok(found)
}
