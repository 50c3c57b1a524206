//! The directory -> fileserver-set map: which fileservers a new version is uploaded to.
//!
//! A fileserver may name directories at registration (the original static map). Otherwise a
//! file goes to the set of the longest mapped prefix of its directory; the first write in an
//! empty cluster maps `/` to the `replication` emptiest live fileservers. Dead members are
//! replaced by live non-members at write time (not in the map: they may come back), so a write
//! still gets `replication` copies whenever enough fileservers are alive.
//!
//! The replication factor is per directory too: the longest prefix with a factor set wins,
//! else the cluster default (`Config::replication`). It is looked up separately from the
//! servers, so `/big` may ask for 3 copies while its files still go first to the servers
//! mapped at `/`.

use super::registry::Live;
use super::store::{DirRecord, FileserverRecord, Read, WriteTables};
use dfs_proto::names::{FileserverRef, RegisterRequest};
use dfs_proto::{ApiError, DfsPath, ServerId};

/// Largest replication factor a directory may ask for.
pub const MAX_REPLICATION: u32 = 64;

/// The servers that place files in `dir`: those of the longest prefix that names servers.
pub fn mapping_for(
    map: &[(DfsPath, DirRecord)],
    dir: &DfsPath,
) -> Option<(DfsPath, Vec<ServerId>)> {
    map.iter()
        .filter(|(prefix, rec)| !rec.servers.is_empty() && dir.starts_with(prefix))
        .max_by_key(|(prefix, _)| prefix.as_str().len())
        .map(|(prefix, rec)| (prefix.clone(), rec.servers.clone()))
}

/// Copies wanted for files in `dir`: the factor of the longest prefix that sets one, else
/// `default`.
pub fn replication_for(map: &[(DfsPath, DirRecord)], dir: &DfsPath, default: u32) -> u32 {
    map.iter()
        .filter_map(|(prefix, rec)| rec.replication.map(|r| (prefix, r)))
        .filter(|(prefix, _)| dir.starts_with(prefix))
        .max_by_key(|(prefix, _)| prefix.as_str().len())
        .map(|(_, r)| r)
        .unwrap_or(default)
}

/// Whether any directory overrides the cluster's replication factor (lets scans skip the
/// per-file path walk when none does).
pub fn has_overrides(map: &[(DfsPath, DirRecord)]) -> bool {
    map.iter().any(|(_, rec)| rec.replication.is_some())
}

/// Sets (`Some`) or clears (`None`) the replication factor of directory prefix `dir`.
pub fn set_replication(
    t: &mut WriteTables<'_>,
    dir: &DfsPath,
    replication: Option<u32>,
) -> Result<DirRecord, ApiError> {
    if let Some(r) = replication {
        if r == 0 || r > MAX_REPLICATION {
            return Err(ApiError::bad_request(format!(
                "replication must be 1-{MAX_REPLICATION}, got {r}"
            )));
        }
    }
    let mut record = t
        .dirmap()?
        .into_iter()
        .find(|(p, _)| p == dir)
        .map(|(_, rec)| rec)
        .unwrap_or_default();
    record.replication = replication;
    t.put_dirmap(dir, &record)?;
    Ok(record)
}

/// Where the next version goes, and the `/` mapping to store first when placement creates or
/// widens it.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Fileservers to upload to.
    pub targets: Vec<FileserverRef>,
    /// New record for `/`, when it must be written.
    pub root_update: Option<DirRecord>,
}

/// Where the next version of `path` must be uploaded: the live members of its directory's set,
/// topped up with the emptiest other live fileservers until the directory's replication factor
/// is reached. `live` is sorted emptiest first. Creates or widens the `/` mapping when it is
/// missing or smaller than the cluster's `default` factor (the nameserver owns that mapping).
pub fn targets(
    t: &mut WriteTables<'_>,
    live: &[Live],
    path: &DfsPath,
    default: u32,
) -> Result<Vec<FileserverRef>, ApiError> {
    let plan = plan(&t.dirmap()?, live, path, default);
    if let Some(record) = &plan.root_update {
        t.put_dirmap(&DfsPath::root(), record)?;
    }
    Ok(plan.targets)
}

/// [`targets`] without the write: what placement decides over `map`.
pub fn plan(map: &[(DfsPath, DirRecord)], live: &[Live], path: &DfsPath, default: u32) -> Plan {
    let mut root_update = None;
    let dir = path.parent();
    let replication = replication_for(map, &dir, default) as usize;
    let default = default as usize;
    let root_record = |set: Vec<ServerId>| DirRecord {
        servers: set,
        replication: map
            .iter()
            .find(|(p, _)| p.is_root())
            .and_then(|(_, rec)| rec.replication),
    };
    let set = match mapping_for(map, &dir) {
        Some((prefix, mut set)) => {
            if prefix.is_root() && set.len() < default {
                let before = set.len();
                for l in live {
                    if set.len() >= default {
                        break;
                    }
                    if !set.contains(&l.id) {
                        set.push(l.id.clone());
                    }
                }
                if set.len() != before {
                    root_update = Some(root_record(set.clone()));
                }
            }
            set
        }
        None => {
            let set: Vec<ServerId> = live.iter().take(default).map(|l| l.id.clone()).collect();
            if !set.is_empty() {
                root_update = Some(root_record(set.clone()));
            }
            set
        }
    };
    Plan {
        targets: pick(&set, live, replication),
        root_update,
    }
}

/// Exactly `replication` targets when that many are alive: live members of `set` first (in
/// set order; a set larger than the factor gives only its first live members), then live
/// non-members, emptiest first.
pub fn pick(set: &[ServerId], live: &[Live], replication: usize) -> Vec<FileserverRef> {
    let mut out: Vec<FileserverRef> = set
        .iter()
        .filter_map(|id| live.iter().find(|l| &l.id == id))
        .take(replication)
        .map(|l| FileserverRef {
            id: l.id.clone(),
            url: l.url.clone(),
        })
        .collect();
    for l in live {
        if out.len() >= replication {
            break;
        }
        if !out.iter().any(|r| r.id == l.id) {
            out.push(FileserverRef {
                id: l.id.clone(),
                url: l.url.clone(),
            });
        }
    }
    out
}

/// Applies a registration's `dirs` to the map: adds `id` to each named directory and removes it
/// from directories it named before but no longer does.
pub fn apply_registration(
    t: &mut WriteTables<'_>,
    id: &str,
    old_dirs: &[DfsPath],
    new_dirs: &[DfsPath],
) -> Result<(), ApiError> {
    let map = t.dirmap()?;
    for dir in old_dirs.iter().filter(|d| !new_dirs.contains(d)) {
        if let Some((_, rec)) = map.iter().find(|(p, _)| p == dir) {
            let mut rec = rec.clone();
            rec.servers.retain(|s| s != id);
            t.put_dirmap(dir, &rec)?;
        }
    }
    for dir in new_dirs {
        let mut rec = map
            .iter()
            .find(|(p, _)| p == dir)
            .map(|(_, rec)| rec.clone())
            .unwrap_or_default();
        if !rec.servers.iter().any(|s| s == id) {
            rec.servers.push(id.to_owned());
            t.put_dirmap(dir, &rec)?;
        }
    }
    Ok(())
}

/// The secret hash to keep for fileserver `id`, given the one on record and the secret sent.
///
/// An id is bound to the first secret it registers with; afterwards only that secret may
/// register or heartbeat it, so no one can move a fileserver's id (and the files placed on
/// it) to another URL. A record without a hash (an older release, or a test double that
/// sends none) adopts the first secret it sees.
pub fn bind_identity(
    id: &str,
    recorded: Option<&str>,
    sent: Option<&str>,
) -> Result<Option<String>, ApiError> {
    let sent_hash = sent.map(dfs_proto::auth::secret_digest);
    match (recorded, sent_hash) {
        (None, sent_hash) => Ok(sent_hash),
        (Some(recorded), Some(sent)) if recorded == sent => Ok(Some(sent)),
        (Some(_), _) => {
            tracing::warn!(%id, "refused a fileserver presenting another server's id");
            Err(ApiError::new(
                dfs_proto::ErrorCode::Forbidden,
                format!(
                    "fileserver id {id} is bound to another server's secret; a new server \
                     needs a new data directory (and so a new id)"
                ),
            ))
        }
    }
}

/// A fileserver's registration as one change: its record, and its `dirs` applied to the map.
pub fn register(t: &mut WriteTables<'_>, req: &RegisterRequest) -> Result<(), ApiError> {
    let url = req.url.trim_end_matches('/').to_owned();
    let old = t.fileserver(&req.id)?;
    let secret_hash = bind_identity(
        &req.id,
        old.as_ref().and_then(|o| o.secret_hash.as_deref()),
        req.secret.as_deref(),
    )?;
    let old_dirs = old.map(|o| o.dirs).unwrap_or_default();
    let mut dirs: Vec<DfsPath> = Vec::new();
    for d in &req.dirs {
        if !dirs.contains(d) {
            dirs.push(d.clone());
        }
    }
    t.put_fileserver(
        &req.id,
        &FileserverRecord {
            url,
            capacity_bytes: req.capacity_bytes,
            free_bytes: req.free_bytes,
            dirs: dirs.clone(),
            secret_hash,
        },
    )?;
    apply_registration(t, &req.id, &old_dirs, &dirs)
}

#[cfg(test)]
mod identity_tests {
    use super::bind_identity;
    use dfs_proto::auth::secret_digest;
    use dfs_proto::ErrorCode;

    #[test]
    fn an_id_is_bound_to_the_first_secret_it_shows() {
        // New id, or a record from before identities: the sent secret is adopted.
        assert_eq!(
            bind_identity("fs", None, Some("s1")).unwrap(),
            Some(secret_digest("s1"))
        );
        assert_eq!(bind_identity("fs", None, None).unwrap(), None);
        // Bound: only the same secret passes.
        let bound = secret_digest("s1");
        assert_eq!(
            bind_identity("fs", Some(&bound), Some("s1")).unwrap(),
            Some(bound.clone())
        );
        for other in [Some("s2"), None] {
            let err = bind_identity("fs", Some(&bound), other).unwrap_err();
            assert_eq!(err.code, ErrorCode::Forbidden);
        }
    }
}
