//! Signed leases at the nameserver: a writer proves its lease at open-write and publish, and
//! the files under a live lease are protected from other keys' unlink, rename and setattr.
//!
//! The lockserver signs each lease (token, holder key, session, wall-clock end, paths); the
//! nameserver checks that signature, that the holder is the caller's key, that the file is
//! one of the lease's paths and that it has not run out. So a guessed, borrowed or huge
//! token fences nobody. What the nameserver learns at open-write (holder and end, per file)
//! stays in memory only: after a restart it knows no lease until the next open-write.

use super::State;
use dfs_proto::auth::{now_unix_ms, Principal};
use dfs_proto::client::LockClient;
use dfs_proto::locks::{LeaseListQuery, LeaseProof};
use dfs_proto::{ApiError, DfsPath, ErrorCode, FileId};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// Most files whose lease is remembered; beyond it the oldest-ending are dropped (a dropped
/// record only means unlink/rename of that file is not held back).
pub const MAX_REMEMBERED: usize = 100_000;

/// How long the nameserver waits for the lockserver to confirm a lease is still held.
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(2);

/// A lease the nameserver saw presented for a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Remembered {
    /// Its token.
    pub token: u64,
    /// The key name holding it.
    pub holder: String,
    /// Its signed end, Unix ms.
    pub expires_unix_ms: u64,
}

/// The leases presented at open-write, by file: who may change a file right now.
#[derive(Debug, Default)]
pub struct LiveLeases {
    by_file: Mutex<HashMap<FileId, Remembered>>,
}

impl LiveLeases {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<FileId, Remembered>> {
        self.by_file.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records the lease a writer of `id` proved (a higher token replaces a lower one).
    pub fn remember(&self, id: FileId, lease: Remembered) {
        let mut map = self.lock();
        if map.get(&id).is_some_and(|old| old.token > lease.token) {
            return;
        }
        if map.len() >= MAX_REMEMBERED {
            let now = now_unix_ms();
            map.retain(|_, l| l.expires_unix_ms > now);
            if map.len() >= MAX_REMEMBERED {
                if let Some(oldest) = map.iter().min_by_key(|(_, l)| l.expires_unix_ms) {
                    let oldest = *oldest.0;
                    map.remove(&oldest);
                }
            }
        }
        map.insert(id, lease);
    }

    /// The live lease remembered for `id`, if any (an expired one is forgotten).
    pub fn live(&self, id: FileId) -> Option<Remembered> {
        let mut map = self.lock();
        match map.get(&id) {
            Some(l) if l.expires_unix_ms > now_unix_ms() => Some(l.clone()),
            Some(_) => {
                map.remove(&id);
                None
            }
            None => None,
        }
    }

    /// Forgets `id`'s lease if it is still `token` (the lockserver no longer has it).
    pub fn forget(&self, id: FileId, token: u64) {
        let mut map = self.lock();
        if map.get(&id).is_some_and(|l| l.token == token) {
            map.remove(&id);
        }
    }
}

impl State {
    /// Checks the lease a writer presents for `path` with `token`; returns what to remember
    /// (`None` on an insecure nameserver, which checks nothing).
    ///
    /// No lease, a signature that does not verify (another token, path list or holder), or
    /// another key's lease: `forbidden`. A lease not covering `path`: `forbidden`. A lease
    /// past its end: `lease_expired`.
    pub fn check_lease(
        &self,
        who: &Principal,
        path: &DfsPath,
        token: u64,
        proof: Option<&LeaseProof>,
    ) -> Result<Option<Remembered>, ApiError> {
        let Some(key) = self.verifier.cluster_key() else {
            return Ok(None);
        };
        let forbidden = |why: String| Err(ApiError::new(ErrorCode::Forbidden, why));
        let Some(proof) = proof else {
            return forbidden(format!(
                "writing {path} needs the signed lease from the lockserver (field `lease`)"
            ));
        };
        if !key.lease_signature_valid(&proof.claim(token), &proof.signature) {
            return forbidden(format!(
                "lease {token} is not a lease the lockserver signed (forged or altered)"
            ));
        }
        if proof.holder != who.name() {
            return forbidden(format!(
                "lease {token} is held by key {:?}, not by {:?}",
                proof.holder,
                who.name()
            ));
        }
        if !proof.paths.contains(path) {
            return forbidden(format!("lease {token} does not cover {path}"));
        }
        if proof.expires_unix_ms <= now_unix_ms() {
            return Err(ApiError::new(
                ErrorCode::LeaseExpired,
                format!("lease {token} has run out; renew it"),
            ));
        }
        Ok(Some(Remembered {
            token,
            holder: proof.holder.clone(),
            expires_unix_ms: proof.expires_unix_ms,
        }))
    }

    /// `busy` (423, EBUSY) when `path` names a file under another key's live lease: its
    /// unlink, rename or attribute change would pull it from under a writer. Admin keys and
    /// the holder pass. A remembered lease is confirmed with the lockserver (it may have
    /// been released early or broken); when the lockserver cannot tell, the file stays busy
    /// until the lease's signed end.
    pub async fn check_not_leased(&self, who: &Principal, path: &DfsPath) -> Result<(), ApiError> {
        if self.verifier.cluster_key().is_none() || who.is_admin() {
            return Ok(());
        }
        let Ok((id, _)) = self.store.read(|r| super::namespace::resolve(r, path)) else {
            return Ok(());
        };
        let Some(lease) = self.leases.live(id) else {
            return Ok(());
        };
        if lease.holder == who.name() {
            return Ok(());
        }
        if !self.lockserver_holds(lease.token).await.unwrap_or(true) {
            self.leases.forget(id, lease.token);
            return Ok(());
        }
        Err(ApiError::new(
            ErrorCode::Busy,
            format!(
                "{path} is being written under key {:?}'s lease {}; try again later",
                lease.holder, lease.token
            ),
        ))
    }

    /// Whether the lockserver still holds lease `token`; `None` when it cannot be asked.
    async fn lockserver_holds(&self, token: u64) -> Option<bool> {
        let url = self.config.lockserver.as_deref()?;
        let key = self.verifier.cluster_key()?;
        let locks =
            LockClient::with_http(url, self.http.clone()).with_credential(key.server_credential());
        let query = LeaseListQuery {
            after: Some(token.checked_sub(1)?),
            limit: Some(1),
        };
        let page = tokio::time::timeout(CONFIRM_TIMEOUT, locks.list_page(&query))
            .await
            .ok()?
            .ok()?;
        Some(page.leases.first().is_some_and(|l| l.token == token))
    }
}
