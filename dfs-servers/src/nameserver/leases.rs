//! The write leases writers present to the nameserver: a token alone opens nothing. At
//! open-write and publish the lease must carry the lockserver's signature, name the caller's
//! own key as its holder, cover the path and not have run out; a file under another key's
//! live lease is not unlinked, renamed or changed (`busy`) except by an admin; and a file has
//! one writer at a time whatever name it is opened by.

use dfs_proto::auth::{now_unix_ms, Principal, Verifier};
use dfs_proto::client::LockClient;
use dfs_proto::locks::Lease;
use dfs_proto::{ApiError, DfsPath, ErrorCode, FileId};
use std::collections::HashMap;
use std::sync::Mutex;

/// Checks the lease a writer presents with `token` for `path`. A cluster without a key
/// checks nothing (its tokens are trusted, as before keys).
pub fn check(
    verifier: &Verifier,
    who: &Principal,
    lease: Option<&Lease>,
    token: u64,
    path: &DfsPath,
) -> Result<(), ApiError> {
    let Some(key) = verifier.cluster_key() else {
        return Ok(());
    };
    let forbidden = |why: String| Err(ApiError::new(ErrorCode::Forbidden, why));
    let Some(lease) = lease else {
        return forbidden(format!(
            "writing {path} needs the signed lease of token {token}"
        ));
    };
    if lease.token != token {
        return forbidden(format!(
            "the lease presented is {}, not token {token}",
            lease.token
        ));
    }
    let signed = lease
        .signature
        .as_deref()
        .is_some_and(|sig| key.lease_signature_valid(&lease.claim(), sig));
    if !signed {
        return forbidden(format!(
            "lease {token} does not carry the lockserver's signature"
        ));
    }
    if lease.holder != who.holder() {
        return forbidden(format!("lease {token} is held by another key"));
    }
    if !lease.paths.contains(path) {
        return forbidden(format!("lease {token} does not cover {path}"));
    }
    if lease.expires_unix_ms <= now_unix_ms() {
        return Err(ApiError::new(
            ErrorCode::LeaseExpired,
            format!("lease {token} has run out"),
        ));
    }
    Ok(())
}

/// Who writes which file, as the leases presented at open-write and publish say: kept in
/// memory only (after a restart the nameserver learns again from the next open-write or
/// publish; until then nothing is refused as busy).
#[derive(Debug, Default)]
pub struct Writers {
    by_file: Mutex<HashMap<FileId, Writer>>,
}

#[derive(Debug, Clone)]
struct Writer {
    token: u64,
    holder: String,
    expires_unix_ms: u64,
}

/// Most files remembered; beyond it the oldest entries are dropped (a file then simply
/// is not refused as busy), so a client cannot grow the map without bound.
const MAX_WRITERS: usize = 100_000;

impl Writers {
    /// Records that `lease` writes file `id` (after a checked open-write or publish).
    pub fn record(&self, id: FileId, lease: &Lease) {
        let mut map = self.by_file.lock().unwrap_or_else(|p| p.into_inner());
        let now = now_unix_ms();
        if map.len() >= MAX_WRITERS {
            map.retain(|_, w| w.expires_unix_ms > now);
            if map.len() >= MAX_WRITERS {
                map.clear();
            }
        }
        map.insert(
            id,
            Writer {
                token: lease.token,
                holder: lease.holder.clone(),
                expires_unix_ms: lease.expires_unix_ms,
            },
        );
    }

    /// Refuses (`busy`) a change of file `id` by `who` while another key holds a live write
    /// lease on it; admins and the holder itself pass.
    pub async fn check_not_busy(
        &self,
        id: FileId,
        who: &Principal,
        locks: Option<&LockClient>,
    ) -> Result<(), ApiError> {
        if who.is_admin() || who.is_server() {
            return Ok(());
        }
        let holder = who.holder();
        match self.live_other(id, |w| w.holder == holder, locks).await {
            Some(token) => Err(ApiError::new(
                ErrorCode::Busy,
                format!("file {id} is being written under lease {token} by another key"),
            )),
            None => Ok(()),
        }
    }

    /// Refuses (`busy`) an open-write of file `id` under `token` while another lease writes
    /// it: the lockserver's leases are per path, so two names of one file (hard links), or a
    /// name and the file's name before a rename, would otherwise let two writers in at once.
    pub async fn check_sole_writer(
        &self,
        id: FileId,
        token: u64,
        locks: Option<&LockClient>,
    ) -> Result<(), ApiError> {
        match self.live_other(id, |w| w.token == token, locks).await {
            Some(other) => Err(ApiError::new(
                ErrorCode::Busy,
                format!("file {id} is being written under another lease ({other}), through another name"),
            )),
            None => Ok(()),
        }
    }

    /// The token of the live lease recorded for file `id`, unless `mine` says it is the
    /// caller's own. A recorded lease that looks live is confirmed with the lockserver (given
    /// back early, or broken, it no longer counts, and is forgotten).
    async fn live_other(
        &self,
        id: FileId,
        mine: impl Fn(&Writer) -> bool,
        locks: Option<&LockClient>,
    ) -> Option<u64> {
        let writer = {
            let map = self.by_file.lock().unwrap_or_else(|p| p.into_inner());
            map.get(&id).cloned()
        }?;
        if mine(&writer) || writer.expires_unix_ms <= now_unix_ms() {
            return None;
        }
        let live = match locks {
            Some(locks) => match locks.live(writer.token).await {
                Ok(lease) => lease.is_some(),
                // The lockserver cannot say: the lease presented is the best evidence.
                Err(_) => true,
            },
            None => true,
        };
        if !live {
            let mut map = self.by_file.lock().unwrap_or_else(|p| p.into_inner());
            if map.get(&id).is_some_and(|w| w.token == writer.token) {
                map.remove(&id);
            }
            return None;
        }
        Some(writer.token)
    }
}
