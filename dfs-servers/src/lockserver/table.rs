//! The lease table: who holds which path, until when, and the fencing counter.
//!
//! All decisions happen here, synchronously, under one mutex; every change is committed to the
//! [`Store`] before the in-memory table changes and before the caller replies. Deadlines are
//! [`Instant`]s in memory (immune to wall-clock jumps) and wall-clock milliseconds on disk (the
//! only clock that means anything after a restart).

use super::config::Config;
use super::store::{Batch, Snapshot, Store, StoreError, StoredLease};
use dfs_proto::locks::{AcquireRequest, Lease, LeaseList};
use dfs_proto::{ApiError, DfsPath, ErrorCode};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Most paths one acquire may name; a rename needs two, nothing sane needs hundreds.
pub const MAX_PATHS: usize = 256;
/// A page of `GET /v1/locks` ends once its paths total this many bytes.
pub const PAGE_PATH_BYTES: usize = 1 << 20;
/// Default and largest number of leases on one page of `GET /v1/locks`.
pub const MAX_PAGE: usize = 1000;
/// Longest client (session) name, in bytes.
pub const MAX_CLIENT_BYTES: usize = 256;

/// One lease in memory; kept after its deadline until the lock-delay has passed too.
#[derive(Clone, Debug)]
struct Held {
    client: String,
    /// The key that took it (empty: any, see [`StoredLease::holder`]).
    holder: String,
    paths: Vec<DfsPath>,
    ttl: Duration,
    deadline: Instant,
    /// The store knows it ran out (see [`StoredLease::expired`]).
    expired_on_disk: bool,
}

impl Held {
    fn live(&self, now: Instant) -> bool {
        now < self.deadline
    }

    /// Whether `holder` is the key that holds it.
    fn held_by(&self, holder: &str) -> bool {
        self.holder.is_empty() || self.holder == holder
    }

    fn same_paths(&self, paths: &BTreeSet<&DfsPath>) -> bool {
        self.paths.len() == paths.len() && self.paths.iter().all(|p| paths.contains(p))
    }
}

/// The lockserver's state: leases, the path index and the counter, backed by the store.
#[derive(Debug)]
pub struct LockTable {
    /// `None` once closed at shutdown, so the database file is released even if a stray
    /// request still holds the table.
    store: Option<Store>,
    default_ttl: Duration,
    max_ttl: Duration,
    lock_delay: Duration,
    /// The next token to give. Advanced before the commit that uses it, so a failed commit
    /// burns a token instead of ever giving one twice.
    next_token: u64,
    leases: BTreeMap<u64, Held>,
    by_path: HashMap<DfsPath, u64>,
    /// Leases held per client (live or in their lock-delay), for `max_leases_per_client`.
    per_client: HashMap<String, usize>,
    limits: Limits,
}

/// The size bounds of the table (from [`Config`]), so no client can grow it without limit.
#[derive(Clone, Copy, Debug)]
struct Limits {
    per_client: usize,
    total: usize,
    paths: usize,
    path_bytes: usize,
}

fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn busy(message: String) -> ApiError {
    ApiError::new(ErrorCode::Busy, message)
}

fn expired(token: u64, client: &str) -> ApiError {
    ApiError::new(
        ErrorCode::LeaseExpired,
        format!("no live lease {token} held by client {client:?}"),
    )
}

fn store_failed(err: StoreError) -> ApiError {
    tracing::error!(%err, "lock store write failed");
    ApiError::internal(err.to_string())
}

/// Refuses a renew or release of a live lease by a key other than the one holding it: the
/// session name alone is public (`GET /v1/locks`).
fn check_holder(token: u64, held: &Held, holder: &str) -> Result<(), ApiError> {
    if held.held_by(holder) {
        return Ok(());
    }
    Err(ApiError::new(
        ErrorCode::Forbidden,
        format!("lease {token} is held by another key"),
    ))
}

/// Refuses client names that are empty, huge or would garble a log line.
fn check_client(client: &str) -> Result<(), ApiError> {
    if client.is_empty() {
        return Err(ApiError::bad_request("client must not be empty"));
    }
    if client.len() > MAX_CLIENT_BYTES {
        return Err(ApiError::bad_request(format!(
            "client is longer than {MAX_CLIENT_BYTES} bytes"
        )));
    }
    if client.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "client must not contain control characters",
        ));
    }
    Ok(())
}

impl LockTable {
    /// Loads the saved state; every saved lease lives at least `restart_grace` from now, so
    /// holders that could not renew while the server was down can, and dead ones still expire.
    pub fn open(store: Store, config: &Config) -> Result<LockTable, StoreError> {
        let Snapshot { next_token, leases } = store.load()?;
        let now = Instant::now();
        let now_wall = unix_ms(SystemTime::now());
        let grace = config.restart_grace();
        let mut table = LockTable {
            store: Some(store),
            default_ttl: config.ttl(),
            max_ttl: Duration::from_millis(config.max_ttl_ms),
            lock_delay: config.lock_delay(),
            next_token,
            leases: BTreeMap::new(),
            by_path: HashMap::new(),
            per_client: HashMap::new(),
            limits: Limits {
                per_client: config.max_leases_per_client,
                total: config.max_leases,
                paths: config.max_paths_per_lease.min(MAX_PATHS),
                path_bytes: config.max_lease_path_bytes,
            },
        };
        // Oldest first, so if two saved leases ever named one path the newer grant wins.
        for (token, saved) in leases {
            let deadline = if saved.expired {
                // It ran out while the server was up: it stays expired, with only what is
                // left of its lock-delay (no renewal can bring it back).
                let ago = Duration::from_millis(now_wall.saturating_sub(saved.deadline_unix_ms));
                now.checked_sub(ago).unwrap_or(now)
            } else {
                let left = Duration::from_millis(saved.deadline_unix_ms.saturating_sub(now_wall));
                now + left.max(grace)
            };
            let held = Held {
                client: saved.client,
                holder: saved.holder,
                paths: saved.paths,
                ttl: Duration::from_millis(saved.ttl_ms),
                deadline,
                expired_on_disk: saved.expired,
            };
            for path in &held.paths {
                if let Some(old) = table.by_path.insert(path.clone(), token) {
                    tracing::warn!(old, token, %path, "two saved leases on one path; keeping the newer");
                    table.forget(old);
                    table.by_path.insert(path.clone(), token);
                }
            }
            *table.per_client.entry(held.client.clone()).or_default() += 1;
            table.leases.insert(token, held);
        }
        tracing::info!(
            leases = table.leases.len(),
            next_token = table.next_token,
            "lease table loaded"
        );
        Ok(table)
    }

    /// The store's fsync and commit counters (zeros once closed), for `GET /v1/stats`.
    pub fn store_counters(&self) -> super::store::StoreCounters {
        self.store.as_ref().map(Store::counters).unwrap_or_default()
    }

    /// Releases the database; later calls answer `unavailable`.
    pub fn close(&mut self) {
        self.store = None;
    }

    fn commit(&self, batch: &Batch) -> Result<(), ApiError> {
        let store = self
            .store
            .as_ref()
            .ok_or_else(|| ApiError::unavailable("the lockserver is shutting down"))?;
        store.apply(batch).map_err(store_failed)
    }

    fn forget(&mut self, token: u64) {
        if let Some(held) = self.leases.remove(&token) {
            if let Some(n) = self.per_client.get_mut(&held.client) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.per_client.remove(&held.client);
                }
            }
            for path in &held.paths {
                if self.by_path.get(path) == Some(&token) {
                    self.by_path.remove(path);
                }
            }
        }
    }

    fn stored(&self, held: &Held, now: Instant) -> StoredLease {
        let wall = unix_ms(SystemTime::now());
        let deadline_unix_ms = if held.live(now) {
            wall.saturating_add(millis(held.deadline - now))
        } else {
            wall.saturating_sub(millis(now - held.deadline))
        };
        StoredLease {
            client: held.client.clone(),
            holder: held.holder.clone(),
            paths: held.paths.clone(),
            ttl_ms: millis(held.ttl),
            deadline_unix_ms,
            expired: !held.live(now),
        }
    }

    fn reply(token: u64, held: &Held, now: Instant) -> Lease {
        let expires_in_ms = millis(held.deadline.saturating_duration_since(now));
        Lease {
            token,
            client: held.client.clone(),
            paths: held.paths.clone(),
            ttl_ms: millis(held.ttl),
            expires_in_ms,
            holder: held.holder.clone(),
            expires_unix_ms: unix_ms(SystemTime::now()).saturating_add(expires_in_ms),
            signature: None,
        }
    }

    fn ttl_for(&self, asked: Option<u64>) -> Result<Duration, ApiError> {
        match asked {
            None => Ok(self.default_ttl),
            Some(0) => Err(ApiError::bad_request("ttl_ms must be greater than 0")),
            Some(ms) => Ok(Duration::from_millis(ms).min(self.max_ttl)),
        }
    }

    /// Grants all of `req.paths` to `req.client` or none of them.
    ///
    /// The same client asking again for the same path set gets its existing lease back with
    /// a fresh deadline (a retried acquire whose reply was lost must not deadlock its sender).
    pub fn acquire(&mut self, req: &AcquireRequest, holder: &str) -> Result<Lease, ApiError> {
        check_client(&req.client)?;
        if req.paths.is_empty() {
            return Err(ApiError::bad_request("paths must not be empty"));
        }
        self.check_size(req)?;
        let wanted: BTreeSet<&DfsPath> = req.paths.iter().collect();
        if wanted.len() != req.paths.len() {
            return Err(ApiError::bad_request("paths must not repeat"));
        }
        let ttl = self.ttl_for(req.ttl_ms)?;
        let now = Instant::now();

        let mut stale = BTreeSet::new();
        let mut mine = None;
        for path in &req.paths {
            let Some(&token) = self.by_path.get(path) else {
                continue;
            };
            let Some(held) = self.leases.get(&token) else {
                continue;
            };
            if held.live(now) {
                if held.client == req.client && held.holder == holder && held.same_paths(&wanted) {
                    mine = Some(token);
                    continue;
                }
                return Err(busy(format!(
                    "{path} is locked by client {:?} (lease {token})",
                    held.client
                )));
            }
            let free_at = held.deadline + self.lock_delay;
            if now < free_at {
                return Err(busy(format!(
                    "{path} was held by an expired lease; free in {} ms",
                    millis(free_at - now)
                )));
            }
            stale.insert(token);
        }

        if let Some(token) = mine {
            // Same client, same set, still live: every path maps to this lease.
            let mut held = self.leases[&token].clone();
            held.ttl = ttl;
            held.deadline = now + ttl;
            self.commit(&Batch {
                put: vec![(token, self.stored(&held, now))],
                ..Batch::default()
            })?;
            let lease = Self::reply(token, &held, now);
            self.leases.insert(token, held);
            return Ok(lease);
        }

        self.check_room(&req.client)?;
        let token = self.next_token;
        self.next_token = token
            .checked_add(1)
            .ok_or_else(|| ApiError::internal("fencing counter exhausted"))?;
        let held = Held {
            client: req.client.clone(),
            holder: holder.to_owned(),
            paths: req.paths.clone(),
            ttl,
            deadline: now + ttl,
            expired_on_disk: false,
        };
        self.commit(&Batch {
            next_token: Some(self.next_token),
            put: vec![(token, self.stored(&held, now))],
            delete: stale.iter().copied().collect(),
        })?;
        for old in stale {
            self.forget(old);
        }
        for path in &held.paths {
            self.by_path.insert(path.clone(), token);
        }
        *self.per_client.entry(held.client.clone()).or_default() += 1;
        let lease = Self::reply(token, &held, now);
        self.leases.insert(token, held);
        tracing::debug!(token, client = %req.client, "lease granted");
        Ok(lease)
    }

    /// Refuses a lease naming too many paths or too many path bytes, before anything else:
    /// `payload_too_large`, because waiting will not help (a full table is `busy`).
    fn check_size(&self, req: &AcquireRequest) -> Result<(), ApiError> {
        let paths = self.limits.paths;
        if req.paths.len() > paths {
            return Err(ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!("at most {paths} paths per lease"),
            ));
        }
        let bytes: usize = req.paths.iter().map(|p| p.as_str().len()).sum();
        if bytes > self.limits.path_bytes {
            return Err(ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!(
                    "the paths of one lease may total at most {} bytes, these total {bytes}",
                    self.limits.path_bytes
                ),
            ));
        }
        Ok(())
    }

    /// Refuses a new lease when `client` already holds its share, or the table is full.
    fn check_room(&self, client: &str) -> Result<(), ApiError> {
        let held = self.per_client.get(client).copied().unwrap_or(0);
        if held >= self.limits.per_client {
            return Err(busy(format!(
                "client {client:?} already holds {held} leases (the most one client may hold)"
            )));
        }
        if self.leases.len() >= self.limits.total {
            tracing::warn!(leases = self.leases.len(), "lease table full");
            return Err(busy(format!(
                "the lockserver holds {} leases, its limit",
                self.leases.len()
            )));
        }
        Ok(())
    }

    /// Extends a live lease by its TTL; anything else is `lease_expired` and changes nothing.
    pub fn renew(&mut self, token: u64, client: &str, holder: &str) -> Result<Lease, ApiError> {
        check_client(client)?;
        let now = Instant::now();
        let mut held = match self.leases.get(&token) {
            Some(held) if held.client == client && held.live(now) => held.clone(),
            _ => return Err(expired(token, client)),
        };
        check_holder(token, &held, holder)?;
        held.deadline = now + held.ttl;
        self.commit(&Batch {
            put: vec![(token, self.stored(&held, now))],
            ..Batch::default()
        })?;
        let lease = Self::reply(token, &held, now);
        self.leases.insert(token, held);
        Ok(lease)
    }

    /// Gives a live lease back; its paths are free at once. A wrong token or client, or an
    /// expired lease, is `lease_expired` and changes nothing.
    pub fn release(&mut self, token: u64, client: &str, holder: &str) -> Result<(), ApiError> {
        check_client(client)?;
        let now = Instant::now();
        match self.leases.get(&token) {
            Some(held) if held.client == client && held.live(now) => {
                check_holder(token, held, holder)?
            }
            _ => return Err(expired(token, client)),
        }
        self.commit(&Batch {
            delete: vec![token],
            ..Batch::default()
        })?;
        self.forget(token);
        tracing::debug!(token, client, "lease released");
        Ok(())
    }

    /// Ends a lease at once, whoever holds it (an admin's `dfs locks break`): its paths are
    /// free, its holder's next renew or publish fails, and the next grant on them takes a
    /// higher token, which fences anything the old holder still sends. Names the lease by
    /// `token`, or by one of its `path`s; answers the lease as it was.
    pub fn break_lease(
        &mut self,
        token: Option<u64>,
        path: Option<&DfsPath>,
    ) -> Result<Lease, ApiError> {
        let token = match (token, path) {
            (Some(token), None) => token,
            (None, Some(path)) => *self
                .by_path
                .get(path)
                .ok_or_else(|| ApiError::not_found(format!("no lease on {path}")))?,
            _ => {
                return Err(ApiError::bad_request(
                    "name the lease by exactly one of token and path",
                ))
            }
        };
        let now = Instant::now();
        let held = match self.leases.get(&token) {
            Some(held) if held.live(now) => held.clone(),
            _ => return Err(ApiError::not_found(format!("no live lease {token}"))),
        };
        self.commit(&Batch {
            delete: vec![token],
            ..Batch::default()
        })?;
        self.forget(token);
        tracing::warn!(token, client = %held.client, holder = %held.holder, "lease broken");
        Ok(Self::reply(token, &held, now))
    }

    /// One page of live leases with tokens after `after`: at most `limit` leases and about
    /// [`PAGE_PATH_BYTES`] of paths, so the answer stays small however big the table is.
    pub fn list(&self, after: Option<u64>, limit: usize) -> LeaseList {
        let now = Instant::now();
        let start = after.map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded);
        let mut leases = Vec::new();
        let mut bytes = 0usize;
        let mut next_after = None;
        let live = self
            .leases
            .range((start, std::ops::Bound::Unbounded))
            .filter(|(_, held)| held.live(now));
        for (token, held) in live {
            if leases.len() >= limit.max(1) || (bytes >= PAGE_PATH_BYTES && !leases.is_empty()) {
                next_after = leases.last().map(|l: &Lease| l.token);
                break;
            }
            bytes += held.paths.iter().map(|p| p.as_str().len()).sum::<usize>();
            leases.push(Self::reply(*token, held, now));
        }
        LeaseList {
            leases,
            next_token: self.next_token,
            next_after,
        }
    }

    /// Forgets leases whose lock-delay has passed, on disk too, so a restart does not bring
    /// back leases that were already dead before it; and marks on disk the leases that ran
    /// out but are still inside their lock-delay, so that a restart keeps them expired
    /// instead of granting them the restart grace (one write per lease that runs out).
    /// Returns how many leases were forgotten.
    pub fn sweep(&mut self) -> Result<usize, ApiError> {
        let now = Instant::now();
        let dead: Vec<u64> = self
            .leases
            .iter()
            .filter(|(_, held)| now >= held.deadline + self.lock_delay)
            .map(|(token, _)| *token)
            .collect();
        let ran_out: Vec<u64> = self
            .leases
            .iter()
            .filter(|(token, held)| {
                !held.live(now) && !held.expired_on_disk && !dead.contains(token)
            })
            .map(|(token, _)| *token)
            .collect();
        if dead.is_empty() && ran_out.is_empty() {
            return Ok(0);
        }
        let put = ran_out
            .iter()
            .filter_map(|token| {
                self.leases
                    .get(token)
                    .map(|h| (*token, self.stored(h, now)))
            })
            .collect();
        self.commit(&Batch {
            delete: dead.clone(),
            put,
            ..Batch::default()
        })?;
        for token in &ran_out {
            if let Some(held) = self.leases.get_mut(token) {
                held.expired_on_disk = true;
            }
        }
        for token in &dead {
            self.forget(*token);
        }
        Ok(dead.len())
    }
}
