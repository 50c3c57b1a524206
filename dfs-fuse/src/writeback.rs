//! `-o writeback`: what happens to a file after its close returned 0 but before it is
//! published, including after the mount (or its machine) died in between.
//!
//! A close on a writeback mount stages the file: its content and a record marked pending are
//! made durable in the cache (`Cache::stage_dirty`), and the publish follows at release, in the
//! background, holding the lease. This module publishes, at the next start, what an earlier
//! run staged (`publish_pending`); which failures are retried is the client library's rule
//! (`dfs_client::writeback`), shared with its own writeback.

use crate::cache::{Cache, DirtyMeta};
use crate::writer::WriteInner;
use dfs_client::leases::Leases;
use dfs_client::remote::Remote;
use dfs_client::write::LocalCopy;
use dfs_client::writeback::publish_retrying;
use dfs_proto::{ApiError, DfsPath};
use std::path::{Path, PathBuf};

/// The files an earlier run closed on a writeback mount and did not get to publish.
pub fn pending(cache: &Cache) -> Vec<(PathBuf, DirtyMeta)> {
    cache
        .leftover_dirty()
        .into_iter()
        .filter_map(|(data, meta)| meta.filter(|m| m.pending).map(|m| (data, m)))
        .collect()
}

/// A staged file of an earlier run, as the content a write session publishes.
struct Staged {
    data: PathBuf,
}

impl LocalCopy for Staged {
    fn path(&self) -> &Path {
        &self.data
    }
}

/// Publishes every file of `pending`, one after another, each on top of the version it was
/// written on: a file someone else changed since (or that is gone) is a conflict, kept in the
/// cache's `dirty/` with the error and no longer pending. Transient failures are retried.
pub async fn publish_pending(
    leases: &Leases,
    remote: &Remote,
    cache: &Cache,
    pending: Vec<(PathBuf, DirtyMeta)>,
) {
    let total = pending.len();
    for (done, (data, meta)) in pending.into_iter().enumerate() {
        tracing::info!(path = %meta.path, "writeback: publishing a file closed before the last stop ({} of {total})", done + 1);
        match publish_one(leases, remote, &data, &meta).await {
            Ok(version) => {
                if let Err(err) = cache.promote_dirty(&meta, version) {
                    tracing::warn!(%err, "could not keep the published file in the cache");
                    cache.discard_dirty(&meta);
                }
                tracing::info!(path = %meta.path, version, "writeback: published");
            }
            Err(err) => {
                tracing::error!(path = %meta.path, %err, file = %data.display(), "writeback: a file closed before the last stop cannot be published; kept");
                cache.unstage_dirty(&meta, &err.to_string());
            }
        }
    }
}

async fn publish_one(
    leases: &Leases,
    remote: &Remote,
    data: &Path,
    meta: &DirtyMeta,
) -> Result<dfs_proto::Version, ApiError> {
    let path = DfsPath::parse(&meta.path)?;
    let mut session = WriteInner::unleased(meta.base_version);
    let copy = Staged {
        data: data.to_owned(),
    };
    let result = publish_retrying(&mut session, meta.file_id, &path, &copy, leases, remote).await;
    if let Some(lease) = session.lease.take() {
        lease.release(leases).await;
    }
    result?;
    session
        .published
        .ok_or_else(|| ApiError::internal("a publish that succeeded named no version"))
}
