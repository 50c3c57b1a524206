//! Who may touch a blob: the capability check on `GET`/`HEAD`/`PUT`, and the registered
//! fileservers a copy may fetch from.
//!
//! A client key alone reads or writes no blob: the nameserver hands out a capability for one
//! (file id, version) and operation, and the fileserver checks it here when the request
//! starts (a long transfer is never cut off by its expiry). Servers (repair, scrub, GC) need
//! none; an insecure fileserver checks nothing.

use super::routes::BlobKey;
use axum::http::HeaderMap;
use dfs_proto::auth::{now_unix_ms, BlobOp, Principal, Verifier, CAPABILITY_HEADER};
use dfs_proto::client::NameClient;
use dfs_proto::{version_block, ApiError, ErrorCode};
use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// `Ok` when `who` may do `op` on blob `key`: a server, an insecure fileserver, or a client
/// presenting a capability the nameserver signed for exactly this blob and operation.
///
/// A write capability names the first version of its lease's token ([`version_block`]): one
/// open-write covers every publish of the lease.
pub fn check_blob(
    verifier: &Verifier,
    who: &Principal,
    headers: &HeaderMap,
    key: BlobKey,
    op: BlobOp,
) -> Result<(), ApiError> {
    let Some(cluster_key) = verifier.cluster_key() else {
        return Ok(());
    };
    if who.is_server() {
        return Ok(());
    }
    let Some(capability) = headers.get(CAPABILITY_HEADER) else {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            format!(
                "blob {}/{} needs a capability ({CAPABILITY_HEADER}) from the nameserver",
                key.file_id, key.version
            ),
        ));
    };
    let capability = capability
        .to_str()
        .map_err(|_| ApiError::new(ErrorCode::Forbidden, "malformed blob capability"))?;
    let version = match op {
        BlobOp::Read => key.version,
        BlobOp::Write => version_block(key.version),
    };
    cluster_key.check_capability(capability, key.file_id, version, op, now_unix_ms())
}

/// Least time between two refreshes of the registered list caused by misses, so a caller
/// naming unknown URLs cannot turn each request into a call to the nameserver.
pub const REFRESH_MIN_INTERVAL: Duration = Duration::from_secs(1);

/// The base URLs of the cluster's registered fileservers, asked of the nameserver
/// (server-authenticated) and cached; refreshed when a copy names a URL not in it.
#[derive(Debug)]
pub struct Peers {
    names: Option<NameClient>,
    known: Mutex<(HashSet<String>, Option<Instant>)>,
    insecure: bool,
}

impl Peers {
    /// Peers learned from `names` (none: no nameserver configured). An `insecure` fileserver
    /// without a nameserver fetches from anywhere, as it accepts anything anyway.
    pub fn new(names: Option<NameClient>, insecure: bool) -> Peers {
        Peers {
            names,
            known: Mutex::new((HashSet::new(), None)),
            insecure,
        }
    }

    /// `Ok` when `source` is the base URL of a registered fileserver, else a 403.
    pub async fn check_source(&self, source: &str) -> Result<(), ApiError> {
        let wanted = source.trim_end_matches('/');
        let Some(names) = &self.names else {
            return if self.insecure {
                Ok(())
            } else {
                Err(refused(wanted))
            };
        };
        if self.lock().0.contains(wanted) {
            return Ok(());
        }
        let due = self
            .lock()
            .1
            .is_none_or(|last| last.elapsed() >= REFRESH_MIN_INTERVAL);
        if !due {
            return Err(refused(wanted));
        }
        self.lock().1 = Some(Instant::now());
        let info = names.cluster().await.map_err(|err| {
            ApiError::unavailable(format!("cannot ask the nameserver for fileservers: {err}"))
        })?;
        let urls: HashSet<String> = info
            .fileservers
            .into_iter()
            .map(|f| f.url.trim_end_matches('/').to_owned())
            .collect();
        let found = urls.contains(wanted);
        self.lock().0 = urls;
        if found {
            Ok(())
        } else {
            Err(refused(wanted))
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (HashSet<String>, Option<Instant>)> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn refused(source: &str) -> ApiError {
    ApiError::new(
        ErrorCode::Forbidden,
        format!("{source} is not a registered fileserver of this cluster"),
    )
}
