//! Uploads that were never published: when GC first saw each, so that it deletes one only after
//! it stayed unpublished for `orphan_after_ms`.
//!
//! Kept in memory on the nameserver (not as blob ages reported by the fileservers): no clock of
//! another machine is trusted, and a nameserver restart only restarts the clocks, which makes
//! deletes later, never earlier; a writer whose publish waits for the nameserver to come back
//! has the whole `orphan_after_ms` once it is back.

use dfs_proto::{FileId, ServerId, Version};
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// When GC first saw each unpublished blob (server, file, version), to delete it once it stayed
/// unpublished for `orphan_after_ms`.
#[derive(Debug, Default)]
pub struct Orphans {
    seen: Mutex<HashMap<(ServerId, FileId, Version), Instant>>,
}

impl Orphans {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(ServerId, FileId, Version), Instant>> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the blob has been seen unpublished for at least `after` (first sight counts
    /// from now).
    pub fn expired(&self, key: (ServerId, FileId, Version), now: Instant, after: Duration) -> bool {
        let first = *self.lock().entry(key).or_insert(now);
        now.duration_since(first) >= after
    }

    /// Forgets blobs of `server` not in `still`: published, deleted or gone.
    pub fn keep_only(&self, server: &ServerId, still: &HashSet<(FileId, Version)>) {
        self.lock()
            .retain(|(s, f, v), _| s != server || still.contains(&(*f, *v)));
    }

    /// How many unpublished blobs are being timed.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
