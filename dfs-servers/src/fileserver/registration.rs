//! Registration with the nameserver and heartbeats, retried forever with backoff.
//!
//! The fileserver serves whether or not the nameserver is reachable; this task only keeps the
//! nameserver informed. A heartbeat answered with `known: false` (the nameserver lost or
//! dropped us) leads to a fresh registration.

use super::store::BlobStore;
use dfs_proto::client::NameClient;
use dfs_proto::names::{HeartbeatRequest, RegisterRequest};
use dfs_proto::{DfsPath, ServerId};
use std::sync::Arc;
use std::time::Duration;

/// What this fileserver tells the nameserver about itself.
#[derive(Clone, Debug)]
pub struct Identity {
    /// Stable id from the data directory.
    pub id: ServerId,
    /// The secret the nameserver binds the id to (from the data directory too).
    pub secret: String,
    /// Advertised base URL.
    pub url: String,
    /// Directories it asks for.
    pub dirs: Vec<DfsPath>,
}

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

fn next_backoff(current: Duration) -> Duration {
    (current * 2).min(BACKOFF_MAX)
}

async fn space(store: &Arc<BlobStore>) -> (u64, u64) {
    let store = store.clone();
    match tokio::task::spawn_blocking(move || store.space()).await {
        Ok(Ok(space)) => (space.capacity, space.free),
        _ => (0, 0),
    }
}

/// Registers, then heartbeats at the interval the nameserver asks for, forever.
pub async fn keep_registered(names: NameClient, me: Identity, store: Arc<BlobStore>) {
    let mut backoff = BACKOFF_MIN;
    let mut failures = 0u64;
    loop {
        let (capacity_bytes, free_bytes) = space(&store).await;
        let req = RegisterRequest {
            id: me.id.clone(),
            url: me.url.clone(),
            capacity_bytes,
            free_bytes,
            dirs: me.dirs.clone(),
            secret: Some(me.secret.clone()),
        };
        let reply = match names.register(&req).await {
            Ok(reply) => reply,
            Err(err) => {
                failures += 1;
                // Log the first failure and then rarely, so a long outage does not flood logs.
                if failures == 1 || failures.is_power_of_two() {
                    tracing::warn!(nameserver = names.url(), %err, failures, "registration failed; retrying");
                }
                tokio::time::sleep(backoff).await;
                backoff = next_backoff(backoff);
                continue;
            }
        };
        tracing::info!(nameserver = names.url(), id = %me.id, url = %me.url, "registered");
        failures = 0;
        backoff = BACKOFF_MIN;
        let interval = Duration::from_millis(reply.heartbeat_interval_ms.clamp(20, 60_000));
        loop {
            tokio::time::sleep(interval).await;
            let (_, free_bytes) = space(&store).await;
            match names
                .heartbeat(&HeartbeatRequest {
                    id: me.id.clone(),
                    free_bytes,
                    secret: Some(me.secret.clone()),
                })
                .await
            {
                Ok(reply) if reply.known => {
                    failures = 0;
                    backoff = BACKOFF_MIN;
                }
                Ok(_) => {
                    tracing::info!("nameserver does not know this fileserver; registering again");
                    break;
                }
                Err(err) => {
                    failures += 1;
                    if failures == 1 || failures.is_power_of_two() {
                        tracing::warn!(%err, failures, "heartbeat failed; retrying");
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = next_backoff(backoff);
                }
            }
        }
    }
}
