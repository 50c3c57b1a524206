//! Blob capabilities at the fileserver: a client key reads or writes a blob only with the
//! capability the nameserver signed for it (at stat or open for reading, at open-write for
//! writing), so a key alone reaches no file's bytes; servers (repair copies, scrub) need none.
//! A repair copy is fetched only from a fileserver the nameserver has registered ([`Sources`]).

use super::routes::BlobKey;
use axum::http::HeaderMap;
use dfs_proto::auth::{now_unix_ms, BlobOp, Principal, Verifier, CAPABILITY_HEADER};
use dfs_proto::client::NameClient;
use dfs_proto::{ApiError, ErrorCode};
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// Whether `caller` may do `op` on blob `key`: always in a cluster without a key and for
/// servers; else only with a valid, unexpired capability for exactly this blob (`403`).
pub fn check(
    verifier: &Verifier,
    caller: &Principal,
    headers: &HeaderMap,
    key: BlobKey,
    op: BlobOp,
) -> Result<(), ApiError> {
    let Some(cluster) = verifier.cluster_key() else {
        return Ok(());
    };
    if caller.is_server() {
        return Ok(());
    }
    let capability = headers
        .get(CAPABILITY_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::Forbidden,
                format!(
                    "blob {}/{} needs a capability from the nameserver in {CAPABILITY_HEADER}",
                    key.file_id, key.version
                ),
            )
        })?;
    cluster.check_capability(capability, key.file_id, key.version, op, now_unix_ms())
}

/// How long the list of registered fileservers is trusted before a copy asks again, so a
/// fileserver the nameserver no longer lists stops being a source soon.
pub const SOURCES_MAX_AGE: Duration = Duration::from_secs(60);

/// Least time between two refreshes of the list on a miss, so repeated copies from an
/// unregistered URL do not turn into a stream of requests to the nameserver.
pub const SOURCES_MIN_REFRESH: Duration = Duration::from_secs(1);

/// The base URLs of the registered fileservers, the only places a repair copy is fetched
/// from, so that a fileserver never becomes a proxy to any URL. Asked of the nameserver
/// (server-authenticated) and kept: a copy from a known URL costs no request; an unknown URL
/// refreshes the list once (a fileserver registered since) before it is refused.
#[derive(Debug)]
pub struct Sources {
    /// The nameserver (`None`: a stand-alone server).
    registry: Option<NameClient>,
    known: tokio::sync::Mutex<Known>,
}

/// The list as last fetched.
#[derive(Debug, Default)]
struct Known {
    urls: HashSet<String>,
    fetched: Option<Instant>,
}

fn base(url: &str) -> &str {
    url.trim_end_matches('/')
}

impl Sources {
    /// The sources the nameserver behind `registry` lists; `None` for a stand-alone server.
    pub fn new(registry: Option<NameClient>) -> Sources {
        Sources {
            registry,
            known: tokio::sync::Mutex::new(Known::default()),
        }
    }

    /// Whether a repair copy may be fetched from `source`: a registered fileserver's base
    /// URL. A stand-alone server checks nothing only in a cluster without a key.
    pub async fn check(&self, verifier: &Verifier, source: &str) -> Result<(), ApiError> {
        let Some(names) = &self.registry else {
            if verifier.cluster_key().is_none() {
                return Ok(());
            }
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                "a stand-alone fileserver has no registry to check a copy's source against",
            ));
        };
        let wanted = base(source);
        // One refresh at a time: copies waiting behind it then see the new list.
        let mut known = self.known.lock().await;
        let age = known.fetched.map(|at| at.elapsed());
        let fresh = age.is_some_and(|age| age < SOURCES_MAX_AGE);
        if fresh && known.urls.contains(wanted) {
            return Ok(());
        }
        if age.is_none_or(|age| age >= SOURCES_MIN_REFRESH) {
            let cluster = names.cluster().await?;
            known.urls = cluster
                .fileservers
                .iter()
                .map(|f| base(&f.url).to_owned())
                .collect();
            known.fetched = Some(Instant::now());
        }
        if known.urls.contains(wanted) {
            Ok(())
        } else {
            Err(ApiError::new(
                ErrorCode::Forbidden,
                format!("{source} is not a registered fileserver"),
            ))
        }
    }
}
