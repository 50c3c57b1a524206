//! The lease table: who holds which path, until when, and the fencing counter.
//!
//! All decisions happen here, synchronously, under one mutex. Leases live in memory: a grant,
//! renewal or release costs no fsync. Only the token reservation (a block at a time) and the
//! longest TTL granted are committed to the [`Store`], before a token of a new block or a
//! longer lease is handed out; every lease is saved at a clean stop.
//!
//! A lockserver killed while its machine stays up loses nothing: every change is also appended
//! to the lease [`Journal`] (a write, no fsync) before it is answered, and a restart in the same
//! boot replays it. After a power loss or a reboot the leases are gone, so the table
//! *recovers*: for the longest TTL the last run
//! may have granted plus the lock-delay it grants no new lease, while every holder that is
//! still alive re-establishes its lease by renewing with the signed lease it holds. Past that
//! period any lease not re-established has run out and its lock-delay has passed, so granting
//! its paths again is as safe as it was before the crash. Deadlines are [`Instant`]s in memory
//! (immune to wall-clock jumps) and wall-clock milliseconds on disk and in signed leases.

use super::config::Config;
use super::journal::{self, Journal};
use super::store::{Snapshot, Store, StoreError, StoredLease};
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
/// Tokens reserved by one durable commit; a crash burns what is left of a block.
pub const TOKEN_BLOCK: u64 = 1024;

/// One lease in memory; kept after its deadline until the lock-delay has passed too.
#[derive(Clone, Debug)]
struct Held {
    client: String,
    /// The key that took it (empty: any, see [`StoredLease::holder`]).
    holder: String,
    paths: Vec<DfsPath>,
    ttl: Duration,
    deadline: Instant,
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
    /// Where every change is appended before it is answered (none in tests of power loss).
    journal: Option<Journal>,
    default_ttl: Duration,
    max_ttl: Duration,
    lock_delay: Duration,
    /// The next token to give.
    next_token: u64,
    /// Tokens below it are reserved on disk; the next grant at or above it reserves a block.
    reserved: u64,
    /// The longest TTL recorded on disk: a crash is followed by this much recovery (plus the
    /// lock-delay), so no lease may last longer before the record says so.
    longest_ttl: Duration,
    /// Set after a crash, until holders had the time to re-establish their leases.
    recovery: Option<Recovery>,
    leases: BTreeMap<u64, Held>,
    by_path: HashMap<DfsPath, u64>,
    /// Leases held per client (live or in their lock-delay), for `max_leases_per_client`.
    per_client: HashMap<String, usize>,
    limits: Limits,
}

/// The period after a crash in which no lease is granted and holders re-establish theirs.
#[derive(Clone, Copy, Debug)]
struct Recovery {
    /// When new grants may start again.
    until: Instant,
    /// Every token the crashed run handed out is below it; only those can be re-established.
    tokens_below: u64,
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

fn recovering(left: Duration) -> ApiError {
    ApiError::unavailable(format!(
        "the lockserver restarted after a crash and is waiting for holders to re-establish \
         their leases; new leases in {} ms",
        millis(left)
    ))
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
    /// Loads the saved state and starts a run (one durable commit that reserves the first
    /// token block). After a clean stop every saved lease lives at least `restart_grace` from
    /// now, so holders that could not renew while the server was down can, and dead ones
    /// still expire; after a crash the table recovers (see the module docs).
    pub fn open(store: Store, config: &Config) -> Result<LockTable, StoreError> {
        LockTable::open_with_journal(store, config, None)
    }

    /// [`LockTable::open`], with the lease journal in `journal_dir`: a run killed in this boot
    /// is continued from its journal, with no recovery.
    pub fn open_with_journal(
        store: Store,
        config: &Config,
        journal_dir: Option<&std::path::Path>,
    ) -> Result<LockTable, StoreError> {
        let Snapshot {
            next_token,
            mut leases,
            mut clean,
            longest_ttl_ms,
            boot,
            run,
        } = store.load()?;
        let this_boot = journal_dir.and_then(|_| journal::boot_id());
        if !clean && run != 0 && this_boot == Some(boot) {
            if let Some(replayed) = journal_dir.and_then(|dir| journal::replay(dir, run)) {
                tracing::info!(
                    leases = replayed.len(),
                    "killed in this boot: leases taken from the journal"
                );
                leases = replayed;
                clean = true;
            }
        }
        let now = Instant::now();
        let now_wall = unix_ms(SystemTime::now());
        let grace = config.restart_grace();
        let lock_delay = config.lock_delay();
        let recovery = (!clean).then(|| {
            // A store that never recorded its longest TTL may have granted the longest allowed.
            let longest = match longest_ttl_ms {
                0 => config.max_ttl_ms,
                ms => ms,
            };
            Recovery {
                until: now + Duration::from_millis(longest) + lock_delay,
                tokens_below: next_token,
            }
        });
        let mut table = LockTable {
            store: Some(store),
            journal: None,
            default_ttl: config.ttl(),
            max_ttl: Duration::from_millis(config.max_ttl_ms),
            lock_delay,
            next_token,
            reserved: next_token,
            longest_ttl: config.ttl(),
            recovery,
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
        if recovery.is_some() {
            // Leases of the crashed run may come back with their TTL, up to the recorded one.
            table.longest_ttl = table.longest_ttl.max(Duration::from_millis(longest_ttl_ms));
        }
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
            };
            // A crash before its next renewal must recover for as long as it may still live.
            let lives = held.deadline.saturating_duration_since(now);
            table.longest_ttl = table.longest_ttl.max(held.ttl).max(lives);
            table.insert(token, held);
        }
        table.reserved = table.next_token.saturating_add(TOKEN_BLOCK);
        let new_run = rand::random::<u64>().max(1);
        if let Some(store) = &table.store {
            store.begin_run(
                table.reserved,
                millis(table.longest_ttl),
                this_boot.unwrap_or(0),
                new_run,
            )?;
        }
        if let Some(dir) = journal_dir {
            let start = table.stored_all(now);
            table.journal =
                Some(Journal::create(dir, new_run, &start).map_err(StoreError::from_any)?);
        }
        tracing::info!(
            leases = table.leases.len(),
            next_token = table.next_token,
            recovering_ms = recovery.map(|r| millis(r.until - now)),
            "lease table loaded"
        );
        Ok(table)
    }

    /// The store's fsync and commit counters (zeros once closed), for `GET /v1/stats`.
    pub fn store_counters(&self) -> super::store::StoreCounters {
        self.store.as_ref().map(Store::counters).unwrap_or_default()
    }

    /// Saves every lease (a clean stop: the next start needs no recovery) and releases the
    /// database; later calls answer `unavailable`.
    pub fn close(&mut self) {
        let Some(store) = self.store.take() else {
            return;
        };
        let leases = self.stored_all(Instant::now());
        self.journal = None;
        match store.save_clean(self.next_token, &leases) {
            Ok(()) => tracing::info!(leases = leases.len(), "leases saved at a clean stop"),
            Err(err) => {
                tracing::warn!(%err, "saving the leases failed; the next start recovers as after a crash")
            }
        }
    }

    /// Makes sure the store covers `token` and a lease of `ttl` before either is handed out:
    /// reserves the next block of tokens, or records a longer TTL, in one durable commit.
    fn ensure_durable(&mut self, token: u64, ttl: Duration) -> Result<(), ApiError> {
        if token < self.reserved && ttl <= self.longest_ttl {
            return Ok(());
        }
        let store = self
            .store
            .as_ref()
            .ok_or_else(|| ApiError::unavailable("the lockserver is shutting down"))?;
        let reserved = if token < self.reserved {
            self.reserved
        } else {
            token.saturating_add(TOKEN_BLOCK)
        };
        let longest = self.longest_ttl.max(ttl);
        store
            .reserve(reserved, millis(longest))
            .map_err(store_failed)?;
        self.reserved = reserved;
        self.longest_ttl = longest;
        Ok(())
    }

    /// The time left of the recovery after a crash, ending it once it has passed.
    fn recovery_left(&mut self, now: Instant) -> Option<Duration> {
        let recovery = self.recovery?;
        if now < recovery.until {
            return Some(recovery.until - now);
        }
        tracing::info!("recovery after the crash is over; granting new leases");
        self.recovery = None;
        None
    }

    /// Adds a lease to the table and its indexes.
    fn insert(&mut self, token: u64, held: Held) {
        for path in &held.paths {
            if let Some(old) = self.by_path.insert(path.clone(), token) {
                if old != token {
                    tracing::warn!(old, token, %path, "two leases on one path; keeping the newer");
                    self.forget(old);
                    self.by_path.insert(path.clone(), token);
                }
            }
        }
        *self.per_client.entry(held.client.clone()).or_default() += 1;
        self.leases.insert(token, held);
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

    /// Every lease as it is saved.
    fn stored_all(&self, now: Instant) -> BTreeMap<u64, StoredLease> {
        stored_all(&self.leases, now)
    }

    /// Journals lease `token` as `held`, then holds it; answers it as the holder sees it.
    fn put(&mut self, token: u64, held: Held, now: Instant) -> Result<Lease, ApiError> {
        self.log(|journal| journal.put(token, &stored(&held, now)))?;
        let lease = Self::reply(token, &held, now);
        match self.leases.get_mut(&token) {
            // The same lease with a new deadline (or TTL): its paths and client are unchanged.
            Some(existing) => *existing = held,
            None => self.insert(token, held),
        }
        Ok(lease)
    }

    /// Journals that lease `token` is gone, then forgets it.
    fn remove(&mut self, token: u64) -> Result<(), ApiError> {
        self.log(|journal| journal.delete(token))?;
        self.forget(token);
        Ok(())
    }

    /// Appends one change to the journal (compacting it first when it is long); a change that
    /// cannot be journaled is refused and not applied.
    fn log(
        &mut self,
        entry: impl FnOnce(&mut Journal) -> std::io::Result<()>,
    ) -> Result<(), ApiError> {
        let Some(journal) = self.journal.as_mut() else {
            return Ok(());
        };
        let leases = &self.leases;
        journal
            .compact_if_long(|| stored_all(leases, Instant::now()))
            .and_then(|()| entry(journal))
            .map_err(|err| {
                tracing::error!(%err, "lease journal write failed");
                ApiError::internal(format!("lease journal: {err}"))
            })
    }
}

/// Every lease of `leases` as it is saved.
fn stored_all(leases: &BTreeMap<u64, Held>, now: Instant) -> BTreeMap<u64, StoredLease> {
    leases
        .iter()
        .map(|(token, held)| (*token, stored(held, now)))
        .collect()
}

/// `held` as it is saved: wall-clock deadline, and whether it has run out.
fn stored(held: &Held, now: Instant) -> StoredLease {
    {
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
}

impl LockTable {
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
            self.ensure_durable(0, ttl)?;
            let mut held = self.leases[&token].clone();
            held.ttl = ttl;
            held.deadline = now + ttl;
            return self.put(token, held, now);
        }

        if let Some(left) = self.recovery_left(now) {
            return Err(recovering(left));
        }
        self.check_room(&req.client)?;
        let token = self.next_token;
        let next = token
            .checked_add(1)
            .ok_or_else(|| ApiError::internal("fencing counter exhausted"))?;
        self.ensure_durable(token, ttl)?;
        for old in stale {
            self.remove(old)?;
        }
        let held = Held {
            client: req.client.clone(),
            holder: holder.to_owned(),
            paths: req.paths.clone(),
            ttl,
            deadline: now + ttl,
        };
        let lease = self.put(token, held, now)?;
        self.next_token = next;
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
    ///
    /// While the table recovers from a crash, a lease it does not know is re-established from
    /// `claim`, the signed lease its holder presents (the caller has checked the signature).
    pub fn renew(
        &mut self,
        token: u64,
        client: &str,
        holder: &str,
        claim: Option<&Lease>,
    ) -> Result<Lease, ApiError> {
        check_client(client)?;
        let now = Instant::now();
        let known = self.leases.get(&token);
        if !known.is_some_and(|held| held.client == client && held.live(now)) {
            if let (None, Some(claim)) = (known, claim) {
                if self.recovery_left(now).is_some() {
                    return self.reestablish(claim, client, holder, now);
                }
            }
            return Err(expired(token, client));
        }
        let mut held = self.leases[&token].clone();
        check_holder(token, &held, holder)?;
        held.deadline = now + held.ttl;
        self.put(token, held, now)
    }

    /// Takes back a lease the crashed run granted, from its holder's signed copy. Two claims
    /// on one path cannot both be current: the lockserver granted the higher token after the
    /// lower one ended, so the higher one wins.
    fn reestablish(
        &mut self,
        claim: &Lease,
        client: &str,
        holder: &str,
        now: Instant,
    ) -> Result<Lease, ApiError> {
        let token = claim.token;
        let below = self.recovery.map_or(0, |r| r.tokens_below);
        let live_on_wall_clock = claim.expires_unix_ms > unix_ms(SystemTime::now());
        if claim.client != client
            || claim.holder != holder
            || token >= below
            || claim.paths.is_empty()
            || !live_on_wall_clock
        {
            return Err(expired(token, client));
        }
        self.check_size(&AcquireRequest {
            paths: claim.paths.clone(),
            client: client.to_owned(),
            ttl_ms: None,
        })?;
        let mut beaten = BTreeSet::new();
        for path in &claim.paths {
            match self.by_path.get(path) {
                Some(&other) if other > token => return Err(expired(token, client)),
                Some(&other) => {
                    beaten.insert(other);
                }
                None => {}
            }
        }
        self.check_room(client)?;
        let ttl = self.ttl_for(Some(claim.ttl_ms.max(1)))?;
        self.ensure_durable(0, ttl)?;
        for other in beaten {
            tracing::warn!(
                other,
                token,
                "a newer lease re-established over an older one"
            );
            self.remove(other)?;
        }
        let held = Held {
            client: client.to_owned(),
            holder: holder.to_owned(),
            paths: claim.paths.clone(),
            ttl,
            deadline: now + ttl,
        };
        let lease = self.put(token, held, now)?;
        tracing::info!(token, client, "lease re-established after the crash");
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
        self.remove(token)?;
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
        self.remove(token)?;
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
            recovering_ms: self
                .recovery
                .filter(|r| now < r.until)
                .map(|r| millis(r.until - now)),
        }
    }

    /// Forgets leases whose lock-delay has passed. Returns how many.
    pub fn sweep(&mut self) -> Result<usize, ApiError> {
        let now = Instant::now();
        let dead: Vec<u64> = self
            .leases
            .iter()
            .filter(|(_, held)| now >= held.deadline + self.lock_delay)
            .map(|(token, _)| *token)
            .collect();
        for token in &dead {
            self.remove(*token)?;
        }
        self.recovery_left(now);
        Ok(dead.len())
    }
}
