//! Blob capabilities at the fileserver: a client key reads or writes a blob only with the
//! capability the nameserver signed for it (at stat or open for reading, at open-write for
//! writing), so a key alone reaches no file's bytes; servers (repair copies, scrub) need none.
//! A repair copy is fetched only from a fileserver the nameserver has registered.

use super::routes::BlobKey;
use axum::http::HeaderMap;
use dfs_proto::auth::{now_unix_ms, BlobOp, Principal, Verifier, CAPABILITY_HEADER};
use dfs_proto::client::NameClient;
use dfs_proto::{ApiError, ErrorCode};

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

/// Whether a repair copy may be fetched from `source`: the base URL of a fileserver the
/// nameserver has registered, so that a fileserver never becomes a proxy to any URL. A
/// stand-alone server (no nameserver) checks nothing only in a cluster without a key.
pub async fn check_source(
    verifier: &Verifier,
    registry: Option<&NameClient>,
    source: &str,
) -> Result<(), ApiError> {
    let Some(names) = registry else {
        if verifier.cluster_key().is_none() {
            return Ok(());
        }
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "a stand-alone fileserver has no registry to check a copy's source against",
        ));
    };
    let cluster = names.cluster().await?;
    let wanted = source.trim_end_matches('/');
    if cluster
        .fileservers
        .iter()
        .any(|f| f.url.trim_end_matches('/') == wanted)
    {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::Forbidden,
            format!("{source} is not a registered fileserver"),
        ))
    }
}
