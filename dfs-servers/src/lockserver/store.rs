//! Durable lockserver state in redb: the fencing-token reservation, and the leases saved at a
//! clean stop.
//!
//! Grants, renewals and releases live in memory and cost no fsync. What must survive a crash
//! is kept here, each change committed with `Durability::Immediate` before anything relies
//! on it:
//! - the token reservation: every token below [`Snapshot::next_token`] may have been handed
//!   out and none above it has, so tokens are reserved a block at a time (one fsync per
//!   block) and a restart continues above the block, burning what was left of it;
//! - the longest TTL this run may have granted, which is how long a restart after a crash
//!   grants no new lease (holders re-establish theirs meanwhile, see `table`);
//! - at a clean stop, every lease with the exact counter, so a clean restart needs no grace;
//! - the boot and the id of the current run, which tell whether its lease journal (written
//!   without fsync, see `journal`) can be trusted after a kill.
//!
//! Schema 2; a store of schema 1 (every lease saved at every change, no schema key) opens as
//! a clean stop, so an upgrade keeps its leases. The store can sit on the real file
//! ([`Store::open`]) or on any [`redb::StorageBackend`] ([`Store::with_backend`]), which is
//! how the power-loss tests run it on [`crate::common::crash_backend::CrashBackend`].

use crate::common::fsyncs::{create_counted, Counter, CountingBackend};
use dfs_proto::locks::LockserverStats;
use dfs_proto::DfsPath;
use redb::{Database, ReadableDatabase, ReadableTable, StorageBackend, TableDefinition};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// token -> JSON-encoded [`StoredLease`]; written only at a clean stop (schema 2).
const LEASES: TableDefinition<u64, &[u8]> = TableDefinition::new("leases");
/// Small named counters.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Key in [`META`]: no token at or above it was ever handed out.
const NEXT_TOKEN: &str = "next_token";
/// Key in [`META`]: the store's schema; absent in schema 1.
const SCHEMA: &str = "schema";
/// Key in [`META`]: 1 when [`LEASES`] holds every lease (a clean stop), 0 while running.
const CLEAN: &str = "clean";
/// Key in [`META`]: the longest TTL a lease may have been granted or renewed with since the
/// last clean stop.
const LONGEST_TTL: &str = "longest_ttl_ms";
/// Key in [`META`]: the boot (hashed boot id) the current run started in.
const BOOT: &str = "boot";
/// Key in [`META`]: the current run's random id, which its lease journal names.
const RUN: &str = "run";
/// The schema this release writes.
pub const SCHEMA_VERSION: u64 = 2;
/// The first token ever given; 0 stays free to mean "no token" in other parts of DFS.
pub const FIRST_TOKEN: u64 = 1;

/// A storage failure; the server answers `internal` and the in-memory state is left unchanged.
#[derive(Debug, thiserror::Error)]
#[error("lock store: {0}")]
pub struct StoreError(String);

impl StoreError {
    pub(crate) fn from_any(err: impl std::fmt::Display) -> StoreError {
        StoreError(err.to_string())
    }
}

/// A lease as saved on disk; the deadline is wall-clock so it means something after a restart.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredLease {
    /// The session holding it.
    pub client: String,
    /// The key holding it (`Principal::holder`); empty for leases saved before holders were
    /// recorded, which any key of the session may then renew or release.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub holder: String,
    /// The exact paths it locks.
    pub paths: Vec<DfsPath>,
    /// Its length, used again by every renewal.
    pub ttl_ms: u64,
    /// When it runs out, in milliseconds since the Unix epoch.
    pub deadline_unix_ms: u64,
    /// Set by the sweep once the lease ran out while the server was up: a restart must keep
    /// it expired (only its lock-delay is left) instead of giving it the restart grace that
    /// is meant for holders who could not renew while the server was down.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub expired: bool,
}

/// Everything the store holds, read once at start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// No token at or above it was ever handed out.
    pub next_token: u64,
    /// Leases saved at a clean stop, by token.
    pub leases: BTreeMap<u64, StoredLease>,
    /// Whether `leases` is every lease there was: the last run stopped cleanly (or was a
    /// schema-1 release, which saved every change). Otherwise the leases died with the
    /// process and holders must re-establish them.
    pub clean: bool,
    /// The longest TTL a lease of the last run may have had (0: none recorded).
    pub longest_ttl_ms: u64,
    /// The boot the last run started in (0: none recorded).
    pub boot: u64,
    /// The last run's id (0: none recorded).
    pub run: u64,
}

/// The lockserver's redb database.
#[derive(Debug)]
pub struct Store {
    db: Database,
    counters: StoreCounters,
}

/// The store's durable-work counters; a clone reads them without the lease table's lock.
#[derive(Clone, Debug, Default)]
pub struct StoreCounters {
    /// fsyncs redb issued on the store file (counted by its backend).
    pub fsyncs: Counter,
    /// Durable commits (token reservations, run starts, clean stops).
    pub commits: Counter,
}

impl StoreCounters {
    /// The counters for `GET /v1/stats`.
    pub fn stats(&self) -> LockserverStats {
        LockserverStats {
            fsyncs: self.fsyncs.get(),
            commits: self.commits.get(),
        }
    }
}

impl Store {
    /// Opens (or creates) the store file `path`.
    ///
    /// A new store is built under a temporary name, synced, and renamed into place: redb
    /// refuses a half-created file, so a power loss during the very first start must leave
    /// either no store or a whole one.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        if !path.exists() {
            create_atomically(path)?;
        }
        let fsyncs = Counter::default();
        let db = create_counted(path, fsyncs.clone()).map_err(StoreError::from_any)?;
        Store::init(db, fsyncs)
    }

    /// Opens (or creates) the store on `backend`; tests pass a power-loss simulator here.
    pub fn with_backend(backend: impl StorageBackend) -> Result<Store, StoreError> {
        let fsyncs = Counter::default();
        let db = redb::Builder::new()
            .create_with_backend(CountingBackend::new(backend, fsyncs.clone()))
            .map_err(StoreError::from_any)?;
        Store::init(db, fsyncs)
    }

    /// A handle on the store's fsync and commit counts.
    pub fn counters(&self) -> StoreCounters {
        self.counters.clone()
    }

    /// Creates the tables and the counter in the first transaction, so a fresh store and a
    /// reopened one look the same.
    fn init(db: Database, fsyncs: Counter) -> Result<Store, StoreError> {
        let txn = db.begin_write().map_err(StoreError::from_any)?;
        {
            txn.open_table(LEASES).map_err(StoreError::from_any)?;
            let mut meta = txn.open_table(META).map_err(StoreError::from_any)?;
            let present = meta
                .get(NEXT_TOKEN)
                .map_err(StoreError::from_any)?
                .is_some();
            if !present {
                // A new store has no leases to lose: it starts as a clean stop of schema 2.
                for (key, value) in [
                    (NEXT_TOKEN, FIRST_TOKEN),
                    (SCHEMA, SCHEMA_VERSION),
                    (CLEAN, 1),
                ] {
                    meta.insert(key, value).map_err(StoreError::from_any)?;
                }
            }
        }
        txn.commit().map_err(StoreError::from_any)?;
        Ok(Store {
            db,
            counters: StoreCounters {
                fsyncs,
                commits: Counter::default(),
            },
        })
    }

    /// Reads the counter, the saved leases and whether the last run stopped cleanly.
    ///
    /// The counter returned is also raised above any saved token, so even a store edited by hand
    /// can never make a token repeat.
    pub fn load(&self) -> Result<Snapshot, StoreError> {
        let txn = self.db.begin_read().map_err(StoreError::from_any)?;
        let meta = txn.open_table(META).map_err(StoreError::from_any)?;
        let get = |key: &str| -> Result<Option<u64>, StoreError> {
            Ok(meta
                .get(key)
                .map_err(StoreError::from_any)?
                .map(|v| v.value()))
        };
        let mut next_token = get(NEXT_TOKEN)?.unwrap_or(FIRST_TOKEN);
        let schema = get(SCHEMA)?.unwrap_or(1);
        if schema > SCHEMA_VERSION {
            return Err(StoreError(format!(
                "the store has schema {schema}; this release reads up to {SCHEMA_VERSION}"
            )));
        }
        let clean = schema == 1 || get(CLEAN)? == Some(1);
        let longest_ttl_ms = get(LONGEST_TTL)?.unwrap_or(0);
        let boot = get(BOOT)?.unwrap_or(0);
        let run = get(RUN)?.unwrap_or(0);
        let table = txn.open_table(LEASES).map_err(StoreError::from_any)?;
        let mut leases = BTreeMap::new();
        for item in table.iter().map_err(StoreError::from_any)? {
            let (token, bytes) = item.map_err(StoreError::from_any)?;
            let lease: StoredLease =
                serde_json::from_slice(bytes.value()).map_err(StoreError::from_any)?;
            next_token = next_token.max(token.value().saturating_add(1));
            leases.insert(token.value(), lease);
        }
        Ok(Snapshot {
            next_token,
            leases,
            clean,
            longest_ttl_ms,
            boot,
            run,
        })
    }

    /// Starts run `run` in boot `boot`: tokens below `reserved` may be handed out, leases live
    /// in memory from now on (the saved ones are cleared and the store marked not clean), and
    /// a lease may last `longest_ttl_ms`. Writes schema 2, which is the upgrade from schema 1.
    pub fn begin_run(
        &self,
        reserved: u64,
        longest_ttl_ms: u64,
        boot: u64,
        run: u64,
    ) -> Result<(), StoreError> {
        self.commit(|txn| {
            txn.delete_table(LEASES).map_err(StoreError::from_any)?;
            txn.open_table(LEASES).map_err(StoreError::from_any)?;
            let mut meta = txn.open_table(META).map_err(StoreError::from_any)?;
            for (key, value) in [
                (SCHEMA, SCHEMA_VERSION),
                (CLEAN, 0),
                (NEXT_TOKEN, reserved),
                (LONGEST_TTL, longest_ttl_ms),
                (BOOT, boot),
                (RUN, run),
            ] {
                meta.insert(key, value).map_err(StoreError::from_any)?;
            }
            Ok(())
        })
    }

    /// Moves the reservation up to `reserved` and the longest TTL to `longest_ttl_ms`; returns
    /// only once both are on stable storage.
    pub fn reserve(&self, reserved: u64, longest_ttl_ms: u64) -> Result<(), StoreError> {
        self.commit(|txn| {
            let mut meta = txn.open_table(META).map_err(StoreError::from_any)?;
            meta.insert(NEXT_TOKEN, reserved)
                .map_err(StoreError::from_any)?;
            meta.insert(LONGEST_TTL, longest_ttl_ms)
                .map_err(StoreError::from_any)?;
            Ok(())
        })
    }

    /// Saves every lease and the exact counter at a clean stop, so the next start knows all
    /// leases and needs no recovery period.
    pub fn save_clean(
        &self,
        next_token: u64,
        leases: &BTreeMap<u64, StoredLease>,
    ) -> Result<(), StoreError> {
        self.commit(|txn| {
            let mut table = txn.open_table(LEASES).map_err(StoreError::from_any)?;
            for (token, lease) in leases {
                let bytes = serde_json::to_vec(lease).map_err(StoreError::from_any)?;
                table
                    .insert(*token, bytes.as_slice())
                    .map_err(StoreError::from_any)?;
            }
            let mut meta = txn.open_table(META).map_err(StoreError::from_any)?;
            meta.insert(NEXT_TOKEN, next_token)
                .map_err(StoreError::from_any)?;
            meta.insert(CLEAN, 1).map_err(StoreError::from_any)?;
            Ok(())
        })
    }

    /// Runs `change` in one write transaction and commits it durably.
    fn commit(
        &self,
        change: impl FnOnce(&redb::WriteTransaction) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(StoreError::from_any)?;
        change(&txn)?;
        txn.commit().map_err(StoreError::from_any)?;
        self.counters.commits.bump();
        Ok(())
    }
}

/// Creates an initialised, empty store at `path` via temp file, fsync, rename, fsync dir.
fn create_atomically(path: &Path) -> Result<(), StoreError> {
    let tmp = path.with_extension("redb.creating");
    match std::fs::remove_file(&tmp) {
        Ok(()) => tracing::warn!(path = %tmp.display(), "removed a store left half-created"),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(StoreError::from_any(err)),
    }
    {
        let db = redb::Builder::new()
            .create(&tmp)
            .map_err(StoreError::from_any)?;
        Store::init(db, Counter::default())?;
    }
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(StoreError::from_any)?;
    std::fs::rename(&tmp, path).map_err(StoreError::from_any)?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(StoreError::from_any)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(client: &str, path: &str) -> StoredLease {
        StoredLease {
            client: client.into(),
            holder: String::new(),
            paths: vec![DfsPath::parse(path).unwrap()],
            ttl_ms: 1000,
            deadline_unix_ms: 42,
            expired: false,
        }
    }

    #[test]
    fn reservations_clean_stops_and_runs_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("locks.redb");
        {
            let store = Store::open(&file).unwrap();
            let fresh = store.load().unwrap();
            assert_eq!(fresh.next_token, FIRST_TOKEN);
            store.begin_run(1025, 1000, 5, 6).unwrap();
            store.reserve(2049, 5000).unwrap();
        }
        let store = Store::open(&file).unwrap();
        let crashed = store.load().unwrap();
        assert_eq!((crashed.next_token, crashed.clean), (2049, false));
        assert_eq!(crashed.longest_ttl_ms, 5000);
        assert_eq!((crashed.boot, crashed.run), (5, 6));
        let saved = BTreeMap::from([(1500, lease("b", "/y"))]);
        store.save_clean(1501, &saved).unwrap();
        drop(store);
        let store = Store::open(&file).unwrap();
        let clean = store.load().unwrap();
        assert_eq!((clean.next_token, clean.clean), (1501, true));
        assert_eq!(clean.leases, saved);
        // The next run clears the saved leases: from now on they live in memory.
        store.begin_run(3000, 1000, 5, 7).unwrap();
        let running = store.load().unwrap();
        assert!(running.leases.is_empty() && !running.clean);
    }

    #[test]
    fn a_schema_1_store_opens_as_a_clean_stop_with_its_leases() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("locks.redb");
        {
            // What the previous release wrote: the counter and every lease, no schema key.
            let db = redb::Database::create(&file).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut meta = txn.open_table(META).unwrap();
                meta.insert(NEXT_TOKEN, 8).unwrap();
                let mut table = txn.open_table(LEASES).unwrap();
                let bytes = serde_json::to_vec(&lease("a", "/x")).unwrap();
                table.insert(7, bytes.as_slice()).unwrap();
            }
            txn.commit().unwrap();
        }
        let store = Store::open(&file).unwrap();
        let snap = store.load().unwrap();
        assert!(snap.clean);
        assert_eq!(snap.next_token, 8);
        assert_eq!(snap.leases[&7], lease("a", "/x"));
    }

    #[test]
    fn a_store_from_a_newer_release_is_refused() {
        let store = Store::with_backend(redb::backends::InMemoryBackend::new()).unwrap();
        store
            .commit(|txn| {
                let mut meta = txn.open_table(META).map_err(StoreError::from_any)?;
                meta.insert(SCHEMA, SCHEMA_VERSION + 1)
                    .map_err(StoreError::from_any)?;
                Ok(())
            })
            .unwrap();
        assert!(store.load().is_err());
    }

    #[test]
    fn a_half_created_store_is_discarded() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("locks.redb");
        // What a power loss during the first start leaves: a zero-filled temp file.
        std::fs::write(file.with_extension("redb.creating"), vec![0u8; 8192]).unwrap();
        let store = Store::open(&file).unwrap();
        assert_eq!(
            store.load().unwrap(),
            Snapshot {
                next_token: FIRST_TOKEN,
                clean: true,
                ..Snapshot::default()
            }
        );
        assert!(!file.with_extension("redb.creating").exists());
    }

    #[test]
    fn counter_is_never_below_a_saved_token() {
        let store = Store::with_backend(redb::backends::InMemoryBackend::new()).unwrap();
        store
            .save_clean(3, &BTreeMap::from([(9, lease("a", "/x"))]))
            .unwrap();
        assert_eq!(store.load().unwrap().next_token, 10);
    }
}
