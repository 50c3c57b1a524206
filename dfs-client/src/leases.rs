//! Write leases: one lockserver lease per file being written, renewed in the background.
//!
//! A lease is taken under this client's session name (one per mount or program), so the
//! lockserver can tell our leases from another client's. When renewal fails past the lease's
//! expiry (or the lockserver says it is gone) the lease is marked lost and every write and
//! close under it fails (EIO on the mount, an error on a [`crate::File`]).

use crate::remote::Remote;
use dfs_proto::locks::{AcquireRequest, Lease};
use dfs_proto::{ApiError, DfsPath, ErrorCode};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// How often a busy lease is retried while waiting (`lock_wait`).
const BUSY_RETRY: Duration = Duration::from_millis(100);
/// Longest wait for a lockserver that restarted after a crash to grant leases again (its
/// recovery lasts the longest TTL it granted plus the lock-delay: 11 s by default).
const RECOVERY_WAIT: Duration = Duration::from_secs(60);
/// Longest wait for the lockserver to take a lease back.
const RELEASE_WAIT: Duration = Duration::from_secs(2);

/// A held lease. Dropping it stops renewal; call [`HeldLease::release`] to give it back.
#[derive(Debug)]
pub struct HeldLease {
    /// The fencing token (also the lease's name).
    pub token: u64,
    /// The path it covers.
    pub path: DfsPath,
    /// The lease as the lockserver last signed it (at the grant, then at each renewal):
    /// what open-write and publish present to the nameserver.
    signed: Arc<std::sync::Mutex<Lease>>,
    lost: Arc<AtomicBool>,
    renewer: JoinHandle<()>,
}

impl HeldLease {
    /// The lease as last signed, to present with `token` to the nameserver.
    pub fn signed(&self) -> Lease {
        self.signed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether renewal failed: writes and close must fail.
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Acquire)
    }

    /// Stops renewing and gives the lease back (best effort: an unreachable lockserver lets
    /// it expire by itself).
    pub async fn release(&self, leases: &Leases) {
        self.renewer.abort();
        let give_back = async {
            let locks = leases.remote.locks().await?;
            locks.release(self.token, &leases.session).await
        };
        // Bounded: a frozen lockserver must not hold up close or release (the kernel waits
        // for our reply); the lease then simply expires.
        match tokio::time::timeout(RELEASE_WAIT, give_back).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                tracing::debug!(token = self.token, %err, "lease release failed; it will expire")
            }
            Err(_) => tracing::debug!(
                token = self.token,
                "lease release timed out; it will expire"
            ),
        }
    }
}

impl Drop for HeldLease {
    fn drop(&mut self) {
        self.renewer.abort();
    }
}

/// Takes and renews leases for one client (a mount, or a [`crate::Client`]).
#[derive(Debug)]
pub struct Leases {
    remote: Arc<Remote>,
    session: String,
    lock_wait: Duration,
    /// Publishes made under each recent token: the low bits of versions.
    seqs: Mutex<BTreeMap<u64, u64>>,
}

/// Publishes one token can carry: versions are `token << 20 | seq` with `seq` in 1..2^20.
pub const SEQ_LIMIT: u64 = 0xF_FFFF;

/// Tokens whose publish counts are remembered. Tokens only grow, and a token comes back to
/// this mount only while its lease is still live (a release that did not get through), so
/// the oldest of this many are long given back.
const KEPT_TOKENS: usize = 4096;

impl Leases {
    /// A lease manager for this client; `session` names it at the lockserver.
    pub fn new(remote: Arc<Remote>, session: String, lock_wait: Duration) -> Leases {
        Leases {
            remote,
            session,
            lock_wait,
            seqs: Mutex::new(BTreeMap::new()),
        }
    }

    /// The next publish sequence number under `token`, never 0, or `None` once the token
    /// carried [`SEQ_LIMIT`] publishes: a counter that wrapped would build a version that is
    /// not newer than the current one (a spurious ESTALE), so the writer takes a new token.
    /// Counted per token, not per write: the lockserver hands a session its still-live lease
    /// back (same token) after a release that did not get through, and a second write under
    /// that token must not reuse a version the first one already uploaded.
    pub fn next_seq(&self, token: u64) -> Option<u64> {
        let mut seqs = self.seqs.lock().unwrap_or_else(|e| e.into_inner());
        let seq = seqs.entry(token).or_insert(0);
        if *seq >= SEQ_LIMIT {
            return None;
        }
        *seq += 1;
        let next = *seq;
        while seqs.len() > KEPT_TOKENS {
            seqs.pop_first();
        }
        Some(next)
    }

    /// Marks `token`'s publishes as used up to `seq` (tests of the token change).
    #[doc(hidden)]
    pub fn set_seq(&self, token: u64, seq: u64) {
        let mut seqs = self.seqs.lock().unwrap_or_else(|e| e.into_inner());
        seqs.insert(token, seq);
    }

    /// A session name unique to this process: `dfs-client@host:pid:random`.
    pub fn session_name() -> String {
        Leases::session_name_for("dfs-client")
    }

    /// A session name unique to this process, naming the program (`dfs-fuse`, ...): host,
    /// pid and a random part, so `dfs locks` tells which client holds a lease.
    pub fn session_name_for(program: &str) -> String {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "host".into());
        format!(
            "{program}@{host}:{}:{:08x}",
            std::process::id(),
            rand::random::<u32>()
        )
    }

    /// This client's session name.
    pub fn session(&self) -> &str {
        &self.session
    }

    /// Takes the lease on `path`: `Busy` at once when another client holds it, or after
    /// waiting up to `lock_wait`. A lockserver recovering from a crash is waited for.
    pub async fn acquire(&self, path: &DfsPath) -> Result<HeldLease, ApiError> {
        let deadline = Instant::now() + self.lock_wait;
        let recovered_by = Instant::now() + RECOVERY_WAIT;
        let locks = self.remote.locks().await?;
        let lease = loop {
            let req = AcquireRequest {
                paths: vec![path.clone()],
                client: self.session.clone(),
                ttl_ms: None,
            };
            match locks.acquire(&req).await {
                Ok(lease) => break lease,
                Err(err) if err.code == ErrorCode::Busy && Instant::now() < deadline => {
                    tokio::time::sleep(BUSY_RETRY.min(deadline - Instant::now())).await;
                }
                Err(err) if err.code == ErrorCode::Unavailable && Instant::now() < recovered_by => {
                    // Only a lockserver that says it is recovering is waited for; one that
                    // cannot be reached fails the open as before.
                    let query = dfs_proto::locks::LeaseListQuery {
                        after: None,
                        limit: Some(1),
                    };
                    let Some(left) = locks
                        .list_page(&query)
                        .await
                        .ok()
                        .and_then(|l| l.recovering_ms)
                    else {
                        return Err(err);
                    };
                    tracing::info!(left, "the lockserver is recovering after a crash; waiting");
                    tokio::time::sleep(Duration::from_millis(left.clamp(10, 500))).await;
                }
                Err(err) => return Err(err),
            }
        };
        let lost = Arc::new(AtomicBool::new(false));
        let (token, ttl_ms, expires_in_ms) = (lease.token, lease.ttl_ms, lease.expires_in_ms);
        let signed = Arc::new(std::sync::Mutex::new(lease));
        let renewer = tokio::spawn(renew_loop(
            self.remote.clone(),
            token,
            Duration::from_millis(ttl_ms.max(30)),
            Instant::now() + Duration::from_millis(expires_in_ms),
            signed.clone(),
            lost.clone(),
        ));
        Ok(HeldLease {
            token,
            path: path.clone(),
            signed,
            lost,
            renewer,
        })
    }
}

/// Renews at ttl/3; on transient errors keeps trying until the lease would have expired.
async fn renew_loop(
    remote: Arc<Remote>,
    token: u64,
    ttl: Duration,
    mut expires: Instant,
    signed: Arc<std::sync::Mutex<Lease>>,
    lost: Arc<AtomicBool>,
) {
    let every = ttl / 3;
    loop {
        tokio::time::sleep(every).await;
        let last = signed.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let renew = async {
            let locks = remote.locks().await?;
            // The signed lease goes along: a lockserver that crashed takes it back from it.
            locks.renew_lease(&last).await
        };
        // A renewal that has not answered by the lease's expiry cannot save it: stop waiting
        // then, so the loss is noticed on time (a frozen lockserver answers nothing).
        let left = expires.saturating_duration_since(Instant::now());
        let result = match tokio::time::timeout(left, renew).await {
            Ok(result) => result,
            Err(_) => Err(ApiError::unavailable(
                "lease renewal did not answer in time",
            )),
        };
        match result {
            Ok(lease) => {
                expires = Instant::now() + Duration::from_millis(lease.expires_in_ms);
                *signed.lock().unwrap_or_else(|p| p.into_inner()) = lease;
            }
            Err(err) if err.code.is_retryable() && Instant::now() + every / 2 < expires => {
                tracing::warn!(token, %err, "lease renewal failed; retrying");
                tokio::time::sleep(every.min(Duration::from_millis(200)) / 2).await;
            }
            Err(err) => {
                tracing::error!(token, %err, "lease lost: writes and close will fail");
                lost.store(true, Ordering::Release);
                return;
            }
        }
    }
}
