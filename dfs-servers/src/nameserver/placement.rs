//! The directory -> fileserver-set map: which fileservers a new version is uploaded to.
//!
//! A fileserver may name directories at registration (the original static map). Otherwise a
//! file goes to the set of the longest mapped prefix of its directory; the first write in an
//! empty cluster maps `/` to the `replication` emptiest live fileservers. Dead members are
//! replaced by live non-members at write time (not in the map: they may come back), so a write
//! still gets `replication` copies whenever enough fileservers are alive.

use super::registry::Live;
use super::store::{Read, WriteTables};
use dfs_proto::names::FileserverRef;
use dfs_proto::{ApiError, DfsPath, ServerId};

/// The mapping that places files in `dir`: the longest mapped prefix.
pub fn mapping_for(
    map: &[(DfsPath, Vec<ServerId>)],
    dir: &DfsPath,
) -> Option<(DfsPath, Vec<ServerId>)> {
    map.iter()
        .filter(|(prefix, _)| dir.starts_with(prefix))
        .max_by_key(|(prefix, _)| prefix.as_str().len())
        .cloned()
}

/// Where the next version of `path` must be uploaded: the live members of its directory's set,
/// topped up with the emptiest other live fileservers until `replication` are reached.
/// `live` is sorted emptiest first. Creates or widens the `/` mapping when it is missing or
/// smaller than `replication` (the nameserver owns that mapping).
pub fn targets(
    t: &mut WriteTables<'_>,
    live: &[Live],
    path: &DfsPath,
    replication: usize,
) -> Result<Vec<FileserverRef>, ApiError> {
    let map = t.dirmap()?;
    let set = match mapping_for(&map, &path.parent()) {
        Some((prefix, mut set)) => {
            if prefix.is_root() && set.len() < replication {
                let before = set.len();
                for l in live {
                    if set.len() >= replication {
                        break;
                    }
                    if !set.contains(&l.id) {
                        set.push(l.id.clone());
                    }
                }
                if set.len() != before {
                    t.put_dirmap(&prefix, &set)?;
                }
            }
            set
        }
        None => {
            let set: Vec<ServerId> = live
                .iter()
                .take(replication)
                .map(|l| l.id.clone())
                .collect();
            if !set.is_empty() {
                t.put_dirmap(&DfsPath::root(), &set)?;
            }
            set
        }
    };
    Ok(pick(&set, live, replication))
}

/// Live members of `set` (in set order), then live non-members, until `replication`.
pub fn pick(set: &[ServerId], live: &[Live], replication: usize) -> Vec<FileserverRef> {
    let mut out: Vec<FileserverRef> = set
        .iter()
        .filter_map(|id| live.iter().find(|l| &l.id == id))
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
        if let Some((_, set)) = map.iter().find(|(p, _)| p == dir) {
            let set: Vec<ServerId> = set.iter().filter(|s| *s != id).cloned().collect();
            t.put_dirmap(dir, &set)?;
        }
    }
    for dir in new_dirs {
        let mut set = map
            .iter()
            .find(|(p, _)| p == dir)
            .map(|(_, s)| s.clone())
            .unwrap_or_default();
        if !set.iter().any(|s| s == id) {
            set.push(id.to_owned());
            t.put_dirmap(dir, &set)?;
        }
    }
    Ok(())
}
